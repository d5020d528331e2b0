"""The layout kinds and their parameters, without importing torch.

The CLI (flags), presets (YAML keys) and reports all read this table, so a parameter is named,
typed and defaulted in exactly one place. DeepSpeed's six kinds keep its JSON keys and its JSON
parser's defaults; the newer kinds take their classes' defaults.
"""
from __future__ import annotations

import functools
import inspect
from collections import Counter
from dataclasses import dataclass
from importlib import import_module

INT, BOOL, STR, INT_LIST, OPT_INT_LIST = "int", "bool", "str", "list[int]", "list[int] | null"
REQUIRED = inspect.Parameter.empty  # a class default of "must be given" (document_lengths)


@dataclass(frozen=True)
class Param:
    name: str  # DeepSpeed's argument and JSON key (or ours, for the newer kinds)
    type: str
    json_default: object  # what DeepSpeed's JSON parser fills in when the key is missing
    help: str
    choices: tuple = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


PARAMS = {
    p.name: p
    for p in (
        Param("block", INT, 16, "block size in tokens (layout cell = block x block)"),
        Param("different_layout_per_head", BOOL, False, "give each head its own layout"),
        Param("num_local_blocks", INT, 4, "blocks per local window (fixed); band half-width + 1 (dilated)"),
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
        Param("num_window_blocks", INT, None, "blocks in the causal window, the query's own included"),
        Param("num_sink_blocks", INT, None, "leading blocks every query sees (attention sinks)"),
        Param("stride", INT, None, "every stride-th block before and after the query (dilated)"),
        Param("document_lengths", INT_LIST, None, "token lengths of the packed documents, in order"),
    )
}


@dataclass(frozen=True)
class Kind:
    mode: str  # DeepSpeed's JSON "mode" where it has one
    class_name: str
    module: str
    params: tuple[str, ...]
    summary: str
    json_parser: bool = True  # DeepSpeed's JSON parser knows this mode (and fills its defaults)
    required: tuple[str, ...] = ()  # parameters without a meaningful default

    def config_class(self):
        return getattr(import_module(self.module), self.class_name)

    def build(self, num_heads: int, values: dict):
        """Construct the config; ``values`` holds only the arguments to pass (others take class defaults)."""
        return self.config_class()(num_heads=num_heads, **values)

    def class_default(self, param: str):
        """The class's own default for ``param`` (``REQUIRED`` if it has none)."""
        if param in self.required:
            return REQUIRED
        return inspect.signature(self.config_class()).parameters[param].default

    def preset_default(self, param: str):
        """What a preset that leaves ``param`` out gets: DeepSpeed's JSON-parser default for its
        modes, the class default for the others."""
        return PARAMS[param].json_default if self.json_parser else self.class_default(param)


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
             "purely local sliding window (unidirectional by default)", json_parser=False),
        Kind("causal_sliding_window", "CausalSlidingWindowSparsityConfig", "sparsecli.layouts.causal_sliding_window",
             ("block", "num_window_blocks"), "causal sliding window (Mistral)", json_parser=False),
        Kind("streaming", "StreamingSparsityConfig", "sparsecli.layouts.streaming",
             ("block", "num_sink_blocks", "num_window_blocks"),
             "attention sinks + causal sliding window (StreamingLLM)", json_parser=False),
        Kind("dilated", "DilatedSparsityConfig", "sparsecli.layouts.dilated",
             ("block", "num_local_blocks", "stride", "attention"),
             "local band + every stride-th block (Sparse Transformer strided)", json_parser=False),
        Kind("document", "DocumentSparsityConfig", "sparsecli.layouts.document",
             ("block", "document_lengths", "attention"),
             "packed sequences: attention within each document", json_parser=False, required=("document_lengths",)),
    )
}
COMPOSITIONS = ("union", "intersection")  # preset sections that combine several sparsity sections


def kinds_using(param: str) -> list[str]:
    return [k.mode for k in KINDS.values() if param in k.params]


@functools.lru_cache(maxsize=None)  # Typer evaluates the CLI's annotations, and so this, on every run
def defaults_text(param: str) -> str:
    """Each kind's default for ``param``, for --help: "bigbird 1, variable 0" (one value if they agree)."""
    by_kind = {}
    for mode in kinds_using(param):
        d = KINDS[mode].class_default(param)
        by_kind[mode] = "required" if d is REQUIRED else _show(d)
    counts = Counter(by_kind.values())
    common, n = counts.most_common(1)[0]
    if n == len(by_kind):
        return common
    if n == 1:
        return ", ".join(f"{mode} {v}" for mode, v in by_kind.items())
    return f"{common}; " + ", ".join(f"{mode} {v}" for mode, v in by_kind.items() if v != common)


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "none"
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
