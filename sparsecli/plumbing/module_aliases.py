"""Module paths from before the package was folded into folders by concern, kept importable.

``import sparsecli.hf`` or ``from sparsecli.layout_file import load_layout`` (paths the README and
users' code name) get the module at its new home: the same module object, so a monkeypatch or
an ``isinstance`` through either name agrees. The finder sits at the end of ``sys.meta_path`` and
only answers for the names below, which no longer exist as files.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from importlib import import_module

MOVED = {
    "sparsecli.hf": "sparsecli.modules.hf",
    "sparsecli.attention": "sparsecli.modules.attention",
    "sparsecli.attention_backends": "sparsecli.modules.backends",
    "sparsecli.bert": "sparsecli.modules.bert",
    "sparsecli.flex_mask": "sparsecli.modules.flex_mask",
    "sparsecli.kinds": "sparsecli.layouts.registry",
    "sparsecli.sparsity_spec": "sparsecli.layouts.spec",
    "sparsecli.preset_loader": "sparsecli.layouts.presets",
    "sparsecli.layout_file": "sparsecli.layouts.files",
    "sparsecli.layout_memory": "sparsecli.layouts.memory",
    "sparsecli.reach": "sparsecli.analysis.reach",
    "sparsecli.plot": "sparsecli.analysis.plot",
    "sparsecli.errors": "sparsecli.plumbing.errors",
    "sparsecli.output_files": "sparsecli.plumbing.output_files",
    "sparsecli.kernels.matmul": "sparsecli.kernels.threeop.matmul",
    "sparsecli.kernels.softmax": "sparsecli.kernels.threeop.softmax",
    "sparsecli.kernels.sparse_format": "sparsecli.kernels.threeop.sparse_format",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self):
        self._own_specs = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = import_module(MOVED[spec.name])
        self._own_specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # The import system stamped the alias's spec on the real module: give it its own back.
        module.__spec__ = self._own_specs.pop(module.__spec__.name)


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
