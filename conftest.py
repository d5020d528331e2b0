"""Make ``tests`` this checkout's test package, whatever else the Python it runs on has.

The suite imports its helpers as ``tests.…`` (``tests.kernels.oracle``, ``tests.interpreter``).
A Python with another top-level ``tests`` package (many wheels ship one; an image's plugin or
sitecustomize may import it first) shadowed ours, and collection failed with ImportError in
every ``--import-mode`` (the issue-11 GPU run; ``tests/test_collection.py`` reproduces it).
pytest loads this rootdir conftest before any conftest or test module under ``tests/``, so the
package is bound here by path, without touching ``sys.path`` (which decides which ``sparsecli``
the run imports: an install, or a tree's folder of links in ``scripts/gpu_features.sh``).
"""
import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent / "tests"


def _is_ours(module) -> bool:
    return any(Path(p).resolve() == TESTS for p in getattr(module, "__path__", ()))


if not _is_ours(sys.modules.get("tests")):
    for name in [n for n in sys.modules if n == "tests" or n.startswith("tests.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location("tests", TESTS / "__init__.py",
                                                  submodule_search_locations=[str(TESTS)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tests"] = module
    spec.loader.exec_module(module)
