"""Package namespaces whose names resolve on first use.

``sparsecli``, ``sparsecli.kernels`` and ``sparsecli.distributed`` export names that live in
submodules importing torch or Triton; resolving them lazily (PEP 562) keeps ``import sparsecli``
and ``sparsecli --help`` light.
"""
from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str], extra: tuple[str, ...] = ()):
    """``(__all__, __getattr__, __dir__)`` for ``package``: each name in ``exports`` comes from the
    relative module it maps to, imported when the name is first looked up."""
    names = sorted(exports) + list(extra)

    def __getattr__(name):
        if name in exports:
            return getattr(import_module(exports[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return names

    return names, __getattr__, __dir__
