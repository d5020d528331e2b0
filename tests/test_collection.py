"""The suite collects on a Python that already has (and has imported) another ``tests`` package.

The issue-11 GPU run lost its whole test tier to that: collection failed with ImportError. The
rootdir ``conftest.py`` binds ``tests`` to this checkout; here a foreign ``tests`` package is put
on PYTHONPATH and imported at start-up (a sitecustomize, as an image's plugin might), with the
working directory off ``sys.path`` (``PYTHONSAFEPATH``, as under a ``pytest`` console script).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Modules that import helpers as tests.kernels.oracle / tests.interpreter, and a package-relative one.
TARGETS = ["tests/kernels/test_attention_args.py", "tests/test_attention_module.py", "tests/bench/test_compare.py"]


@pytest.fixture(scope="module")
def foreign_tests(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "tests").mkdir()
    (site / "tests" / "__init__.py").write_text('"""another project\'s tests"""\n')
    (site / "sitecustomize.py").write_text("import tests\n")
    return site


def collect(site, *args):
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONSAFEPATH="1")
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args,
                           *TARGETS], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("mode", ["prepend", "append", "importlib"])
def test_collects_despite_a_foreign_tests_package(foreign_tests, mode):
    run = collect(foreign_tests, f"--import-mode={mode}")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "error" not in run.stdout.splitlines()[-1]
    assert "tests/kernels/test_attention_args.py::" in run.stdout


def test_the_foreign_package_would_shadow_ours_without_the_rootdir_conftest(foreign_tests):
    # --confcutdir=tests skips the rootdir conftest: the scenario above then fails to collect.
    run = collect(foreign_tests, "--confcutdir=tests")
    assert run.returncode != 0 and "tests.conftest" in run.stdout + run.stderr
