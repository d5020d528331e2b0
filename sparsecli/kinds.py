"""The six layout kinds and their DeepSpeed parameters, without importing torch.

The CLI (flags), presets (YAML keys) and reports all read this table, so a parameter is named,
typed and defaulted in exactly one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

INT, BOOL, STR, INT_LIST, OPT_INT_LIST = "int", "bool", "str", "list[int]", "list[int] | null"


@dataclass(frozen=True)
class Param:
    name: str  # DeepSpeed's argument and JSON key
    type: str
    json_default: object  # what DeepSpeed's JSON parser fills in when the key is missing
    help: str
    choices: tuple = ()


PARAMS = {
    p.name: p
    for p in (
        Param("block", INT, 16, "block size in tokens (layout cell = block x block)"),
        Param("different_layout_per_head", BOOL, False, "give each head its own layout"),
        Param("num_local_blocks", INT, 4, "blocks per local window (fixed)"),
        Param("num_global_blocks", INT, 1, "global blocks per window (fixed) or leading global blocks (bigbird)"),
        Param("attention", STR, "bidirectional", "unidirectional (causal) or bidirectional",
              ("unidirectional", "bidirectional")),
        Param("horizontal_global_attention", BOOL, False, "global blocks also attend to every block"),
        Param("num_different_global_patterns", INT, 1, "distinct global positions across heads (fixed)"),
        Param("num_random_blocks", INT, 0, "random blocks per row"),
        Param("local_window_blocks", INT_LIST, [4], "local window sizes; the last one repeats (variable)"),
        Param("global_block_indices", INT_LIST, [0], "global block indices (or range starts)"),
        Param("global_block_end_indices", OPT_INT_LIST, None, "exclusive ends of global ranges"),
        Param("num_sliding_window_blocks", INT, 3, "blocks in the sliding window"),
    )
}


@dataclass(frozen=True)
class Kind:
    mode: str  # DeepSpeed's JSON "mode" (local_sliding_window is ours: DeepSpeed has no mode for it)
    class_name: str
    module: str
    params: tuple[str, ...]
    summary: str

    def config_class(self):
        return getattr(import_module(self.module), self.class_name)

    def build(self, num_heads: int, values: dict):
        """Construct the config; ``values`` holds only the arguments to pass (others take class defaults)."""
        return self.config_class()(num_heads=num_heads, **values)


_COMMON = ("block", "different_layout_per_head")
KINDS = {
    k.mode: k
    for k in (
        Kind("dense", "DenseSparsityConfig", "sparsecli.layouts.dense", _COMMON, "every block (the dense baseline)"),
        Kind("fixed", "FixedSparsityConfig", "sparsecli.layouts.fixed",
             _COMMON + ("num_local_blocks", "num_global_blocks", "attention", "horizontal_global_attention",
                        "num_different_global_patterns"),
             "Sparse Transformer 'fixed': local windows + global summary blocks"),
        Kind("variable", "VariableSparsityConfig", "sparsecli.layouts.variable",
             _COMMON + ("num_random_blocks", "local_window_blocks", "global_block_indices",
                        "global_block_end_indices", "attention", "horizontal_global_attention"),
             "random + variable local windows + chosen global blocks"),
        Kind("bigbird", "BigBirdSparsityConfig", "sparsecli.layouts.bigbird",
             _COMMON + ("num_random_blocks", "num_sliding_window_blocks", "num_global_blocks", "attention"),
             "BigBird ITC: random + sliding window + leading global blocks"),
        Kind("bslongformer", "BSLongformerSparsityConfig", "sparsecli.layouts.longformer",
             _COMMON + ("num_sliding_window_blocks", "global_block_indices", "global_block_end_indices", "attention"),
             "block-sparse Longformer: sliding window + global rows/columns"),
        Kind("local_sliding_window", "LocalSlidingWindowSparsityConfig", "sparsecli.layouts.sliding_window",
             ("block", "num_sliding_window_blocks", "attention"),
             "purely local sliding window (unidirectional by default)"),
    )
}


def kinds_using(param: str) -> list[str]:
    return [k.mode for k in KINDS.values() if param in k.params]
