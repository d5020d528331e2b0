"""Public import paths keep working: every exported name from its documented path, every dotted
path the README, docs/ or a docstring shows, and the pre-restructure module paths as aliases of
the very same module objects (so a monkeypatch or isinstance through either name agrees).

The package was folded into folders by concern (layouts, analysis, modules, plumbing;
kernels/fused, kernels/threeop); users' code and the DeepSpeed-style imports must not notice.
"""
import importlib
import re
from pathlib import Path

import pytest

import sparsecli
import sparsecli.kernels
from sparsecli.plumbing.module_aliases import MOVED

ROOT = Path(__file__).resolve().parents[1]

DEEPSPEED_CONFIGS = ("SparsityConfig", "DenseSparsityConfig", "FixedSparsityConfig", "VariableSparsityConfig",
                     "BigBirdSparsityConfig", "BSLongformerSparsityConfig", "LocalSlidingWindowSparsityConfig")
DEEPSPEED_MODULES = ("SparseSelfAttention", "BertSparseSelfAttention", "SparseAttentionUtils")
# DeepSpeed's SparseAttentionUtils API, called as static methods.
DEEPSPEED_UTILS = ("extend_position_embedding", "update_tokenizer_model_max_length",
                   "replace_model_self_attention_with_sparse_self_attention",
                   "replace_self_attention_layer_with_sparse_self_attention_layer", "pad_to_block_size",
                   "unpad_sequence_output")
# Paths the README named before the restructure, and the kernels' DeepSpeed names.
DOCUMENTED = ("sparsecli.layout_memory.layout_peak_bytes", "sparsecli.layout_file.load_layout",
              "sparsecli.analysis.analyze_config", "sparsecli.kernels.reference.blocksparse_attention_reference",
              "sparsecli.kernels.reference.blocksparse_attention_dense", "sparsecli.kernels.matmul.MatMul",
              "sparsecli.kernels.softmax.Softmax", "sparsecli.kernels.sparse_format.dense_to_sparse",
              "sparsecli.kernels.blocksparse_attention", "sparsecli.hf.SparseAttentionUtils",
              "sparsecli.attention.SparseSelfAttention", "sparsecli.bert.BertSparseSelfAttention",
              "sparsecli.flex_mask.to_block_mask", "sparsecli.to_block_mask")


def resolve(dotted: str):
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name is None or not ".".join(parts[:i]).startswith(e.name):
                raise  # a module that exists but fails to import inside is a failure, not a miss
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def _shown_paths() -> set[str]:
    """Every ``sparsecli.x.y`` and ``from sparsecli.x import y`` in README.md, docs/*.md and the
    package's own sources (docstrings and the alias table included)."""
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*.py"),
             *(ROOT / "sparsecli").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")]
    paths = set()
    for f in files:
        text = f.read_text(encoding="utf-8")
        paths |= set(re.findall(r"\bsparsecli(?:\.[A-Za-z_]\w*)+", text))
        for module, grouped, names in re.findall(r"from (sparsecli[\w.]*) import (?:\(([^)]*)\)|([\w, ]+))", text):
            for name in (grouped or names).split(","):
                if name.split():  # "x as y" imports x
                    paths.add(f"{module}.{name.split()[0]}")
    return paths


@pytest.mark.parametrize("package", [sparsecli, sparsecli.kernels], ids=lambda m: m.__name__)
def test_every_exported_name_imports(package):
    assert package.__all__
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        exec(f"from {package.__name__} import {name}", {})


def test_deepspeed_names_import_from_the_top_and_from_hf():
    import sparsecli.hf as hf

    for name in DEEPSPEED_CONFIGS + DEEPSPEED_MODULES:
        assert name in sparsecli.__all__
    assert hf.SparseAttentionUtils is sparsecli.SparseAttentionUtils
    assert hf.BertSparseSelfAttention is sparsecli.BertSparseSelfAttention
    for method in DEEPSPEED_UTILS:
        assert callable(getattr(hf.SparseAttentionUtils, method)), method
    from sparsecli.kernels import MatMul, Softmax, dense_to_sparse, sparse_to_dense  # noqa: F401


@pytest.mark.parametrize("dotted", DOCUMENTED)
def test_documented_paths_resolve(dotted):
    assert resolve(dotted) is not None


def test_every_path_the_docs_and_docstrings_show_resolves():
    shown = _shown_paths()
    assert "sparsecli.kernels.blocksparse_attention" in shown  # the scan finds what the README shows
    unresolved = []
    for dotted in sorted(shown):
        try:
            resolve(dotted)
        except (ImportError, AttributeError) as e:
            unresolved.append(f"{dotted} ({type(e).__name__}: {e})")
    assert not unresolved, "\n".join(unresolved)


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_module_path_is_the_new_module(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    parent, _, leaf = old.rpartition(".")
    assert getattr(importlib.import_module(parent), leaf, None) in (None, importlib.import_module(new))
    exec(f"import {old} as m", ns := {})
    assert ns["m"] is importlib.import_module(new)
