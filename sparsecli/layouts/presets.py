"""YAML presets: a ``sparsity:`` section (DeepSpeed's ``sparse_attention`` JSON keys) and a ``bench:`` sweep.

Loading never raises anything but ``ConfigError``, whose text is ``file: key: what to change``.
Missing sparsity keys take DeepSpeed's JSON-parser defaults, so a pasted ds_config block builds
the same layout DeepSpeed would (note: the parser's ``num_random_blocks`` default is 0, the
BigBird class default is 1).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from ..kernels.limits import HEAD_DIM_RULE, takes_head_dim
from ..plumbing.errors import UserError
from .registry import BOOL, COMPOSITIONS, INT, INT_LIST, KINDS, OPT_INT_LIST, PARAMS, REQUIRED, STR, kinds_using
from .spec import CompositeSpec, SparsitySpec

PROVIDERS = ("sparse", "sparse-nondet", "three-op", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-masked",
             "flex", "flex-flash", "fa4", "fa4-sparse", "fa4-sparse-det", "naive")
DTYPES = ("fp16", "bf16", "fp32")
PASSES = ("fwd", "bwd", "fwd+bwd")
TOP_KEYS = ("description", "seq_len", "seed", "sparsity", "bench")
BENCH_KEYS = ("seq_lens", "batch", "tokens", "head_dim", "dtypes", "passes", "providers", "causal")


class ConfigError(UserError):
    """A preset problem: ``path: key: message`` (key may be None for whole-file problems)."""

    def __init__(self, path, key, message):
        self.path, self.key, self.message = str(path), key, message
        super().__init__(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")


@dataclass(frozen=True)
class BenchSpec:
    seq_lens: tuple = (4096,)
    batch: int | None = None  # fixed batch, or ...
    tokens: int | None = 65536  # ... batch = max(1, tokens // seq)
    head_dims: tuple = (64,)
    dtypes: tuple = ("bf16",)
    passes: tuple = ("fwd",)
    providers: tuple = ("sparse", "flex", "sdpa-flash")
    causal: bool = False

    def batch_for(self, seq_len: int) -> int:
        return self.batch if self.batch is not None else max(1, self.tokens // seq_len)


@dataclass(frozen=True)
class Preset:
    name: str
    path: str
    description: str
    seq_len: int
    seed: int | None
    sparsity: SparsitySpec | CompositeSpec
    bench: BenchSpec


# -- finding presets ------------------------------------------------------------------------

def bundled_names() -> list[str]:
    files = resources.files("sparsecli.presets")
    return sorted(p.name[: -len(".yaml")] for p in files.iterdir() if p.name.endswith(".yaml"))


def read_preset_bytes(ref: str) -> tuple[str, str, bytes]:
    """Return (name, display path, raw bytes) for a file path or a bundled name (with or without .yaml)."""
    if not ref.strip():  # Path("") is ".", which would read as "is a directory"
        raise UserError("the preset name is empty; give a bundled preset name or a YAML path")
    path = Path(ref).expanduser()
    if path.is_dir():
        raise ConfigError(path, None, "is a directory; give a preset YAML file or a bundled preset name")
    if path.exists():  # a regular file, or e.g. /dev/null (read: it is empty)
        try:
            return path.stem, str(path), path.read_bytes()
        except OSError as e:
            raise ConfigError(path, None, f"cannot read the file ({e.strerror or e})") from None
    name = ref[: -len(".yaml")] if ref.endswith(".yaml") else ref
    if name in bundled_names():
        data = resources.files("sparsecli.presets").joinpath(name + ".yaml").read_bytes()
        return name, f"<bundled>/{name}.yaml", data
    hint = _did_you_mean(name, bundled_names())
    raise ConfigError(ref, None, f"no such file, and no bundled preset of that name{hint} "
                      f"(bundled: {', '.join(bundled_names())})")


def read_preset_text(ref: str) -> tuple[str, str, str]:
    """Return (name, display path, text); see ``read_preset_bytes``."""
    name, shown, data = read_preset_bytes(ref)
    try:
        return name, shown, data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(shown, None, f"not UTF-8 text (byte {e.start}); save the file as UTF-8") from None


def load_preset(ref: str) -> Preset:
    name, shown, text = read_preset_text(ref)
    try:
        data = _parse_yaml(shown, text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(shown, None, f"not valid YAML{where}: {problem}") from None
    return parse_preset(data, shown, name)


# libyaml's loader where PyYAML has it (several times faster: `sparsecli presets` parses every preset).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(path, text: str):
    """``yaml.safe_load``, refusing duplicate keys: one parse to nodes, checked, then constructed."""
    loader = _SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(path, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_duplicate_keys(path, root) -> None:
    """YAML keeps the last of two equal keys without a word; a preset must not (which one was meant?)."""
    def walk(node, where):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                here = f"{where}.{name}" if where else str(name)
                if name is not None and name in seen:
                    raise ConfigError(path, here, f"appears twice (lines {seen[name] + 1} and "
                                      f"{key.start_mark.line + 1}); keep one")
                if name is not None:
                    seen[name] = key.start_mark.line
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{where}[{i}]")

    walk(root, "")


# -- validation -----------------------------------------------------------------------------

def _did_you_mean(word, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_keys(path, section, data, allowed):
    for key in data:
        if key not in allowed:
            raise ConfigError(path, f"{section}{key}", f"unknown key{_did_you_mean(key, allowed)}; "
                              f"allowed: {', '.join(allowed)}")


def _typed(path, key, value, kind, choices=()):
    ok = {
        INT: isinstance(value, int) and not isinstance(value, bool),
        BOOL: isinstance(value, bool),
        STR: isinstance(value, str),
        INT_LIST: isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
        OPT_INT_LIST: value is None or (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)),
    }[kind]
    if not ok:
        raise ConfigError(path, key, f"expected {kind}, got {type(value).__name__} {value!r}")
    if choices and value not in choices:
        raise ConfigError(path, key, f"must be one of {', '.join(map(str, choices))}, got {value!r}"
                          f"{_did_you_mean(value, choices)}")
    return value


def _mapping(path, key, value):
    if not isinstance(value, dict):
        raise ConfigError(path, key, f"expected a mapping, got {type(value).__name__}")
    return value


def _sparsity(path, data, key="sparsity", inherited=None) -> SparsitySpec | CompositeSpec:
    """One sparsity section; ``inherited`` holds a composition's num_heads/block for its parts."""
    data = dict(_mapping(path, key, data))
    ops = [op for op in COMPOSITIONS if op in data]
    if ops:
        return _composite(path, data, key, ops, inherited or {})
    mode = data.pop("mode", "fixed")  # DeepSpeed's default mode
    _typed(path, f"{key}.mode", mode, STR, tuple(KINDS))
    for name, value in (inherited or {}).items():
        if name in data and data[name] != value:
            raise ConfigError(path, f"{key}.{name}", f"{data[name]!r} contradicts the {value!r} every part shares; "
                              "remove it here")
    given = frozenset(data) - {"num_heads"}
    data = {**(inherited or {}), **data}
    for name in data:  # before "num_heads: missing", which a misspelt num_head would otherwise cause
        if name not in PARAMS and name != "num_heads":
            raise ConfigError(path, f"{key}.{name}",
                              f"unknown key{_did_you_mean(name, ['mode', 'num_heads', *COMPOSITIONS, *PARAMS])}")
    if "num_heads" not in data:
        raise ConfigError(path, f"{key}.num_heads", "missing; set it to the model's attention heads per layer")
    num_heads = _typed(path, f"{key}.num_heads", data.pop("num_heads"), INT)
    kind = KINDS[mode]
    for name in data:
        if name not in kind.params:
            raise ConfigError(path, f"{key}.{name}", f"does not apply to mode '{mode}' (it is used by "
                              f"{', '.join(kinds_using(name))}); remove it")
    values = {}
    for name in kind.params:
        p = PARAMS[name]
        if name in data:
            values[name] = _typed(path, f"{key}.{name}", data[name], p.type, p.choices)
        else:
            default = kind.preset_default(name)
            if default is REQUIRED:
                raise ConfigError(path, f"{key}.{name}", f"missing; {mode} needs it ({p.help})")
            values[name] = default
    spec = SparsitySpec(mode, num_heads, values, given)
    try:
        spec.build()
    except (ValueError, NotImplementedError) as e:
        raise ConfigError(path, key, str(e)) from None
    return spec


def _composite(path, data, key, ops, inherited) -> CompositeSpec:
    if len(ops) > 1:
        raise ConfigError(path, key, "give either union: or intersection:, not both (nest one inside the other)")
    op = ops[0]
    allowed = (op, "num_heads", "block")
    for name in data:
        if name not in allowed:
            raise ConfigError(path, f"{key}.{name}", f"a {op} section takes only {', '.join(allowed)}; "
                              "put the other keys in its parts")
    shared = dict(inherited)
    for name in ("num_heads", "block"):
        if name in data:
            shared[name] = _typed(path, f"{key}.{name}", data[name], INT)
    items = data[op]
    if not isinstance(items, list) or len(items) < 2:
        raise ConfigError(path, f"{key}.{op}", "expected a list of at least two sparsity sections")
    parts = tuple(_sparsity(path, item, f"{key}.{op}[{i}]", shared) for i, item in enumerate(items))
    for name in ("num_heads", "block"):
        values = [getattr(p, name) for p in parts]
        if len(set(values)) > 1:
            raise ConfigError(path, f"{key}.{name}", f"the parts disagree ({', '.join(map(str, values))}); "
                              f"set {name} once, here, for every part")
    spec = CompositeSpec(op, parts[0].num_heads, parts)
    try:
        spec.build()
    except (ValueError, NotImplementedError) as e:
        raise ConfigError(path, key, str(e)) from None
    return spec


def _positive_int(path, key, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(path, key, f"expected one positive integer, got {value!r}")
    return value


def _positive_ints(path, key, value):
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise ConfigError(path, key, f"expected a positive integer or a list of them, got {value!r}")
    return tuple(items)


def _choices(path, key, value, allowed):
    items = value if isinstance(value, list) else [value]
    for v in items:
        if v not in allowed:
            raise ConfigError(path, key, f"unknown value {v!r}{_did_you_mean(v, allowed)}; use one of {', '.join(allowed)}")
    if not items:
        raise ConfigError(path, key, "must not be empty")
    return tuple(items)


def _bench(path, data, block) -> BenchSpec:
    data = _mapping(path, "bench", data or {})
    _check_keys(path, "bench.", data, BENCH_KEYS)
    kw = {}
    if "seq_lens" in data:
        kw["seq_lens"] = _positive_ints(path, "bench.seq_lens", data["seq_lens"])
        for s in kw["seq_lens"]:
            if s % block:
                raise ConfigError(path, "bench.seq_lens", f"{s} is not a multiple of the block size {block}")
    if "batch" in data and "tokens" in data:
        raise ConfigError(path, "bench.batch", "give either batch or tokens (batch = tokens // seq_len), not both")
    if "batch" in data:
        kw["batch"] = _positive_int(path, "bench.batch", data["batch"])
        kw["tokens"] = None
    if "tokens" in data:
        kw["tokens"] = _positive_int(path, "bench.tokens", data["tokens"])
    if "head_dim" in data:
        kw["head_dims"] = _positive_ints(path, "bench.head_dim", data["head_dim"])
        for d in kw["head_dims"]:
            if not takes_head_dim(d):
                raise ConfigError(path, "bench.head_dim", f"{d}: the kernels take head dims that are {HEAD_DIM_RULE}")
    for key, allowed in (("dtypes", DTYPES), ("passes", PASSES), ("providers", PROVIDERS)):
        if key in data:
            kw[key] = _choices(path, f"bench.{key}", data[key], allowed)
    if "causal" in data:
        kw["causal"] = _typed(path, "bench.causal", data["causal"], BOOL)
    return BenchSpec(**kw)


def parse_preset(data, path: str, name: str = "preset") -> Preset:
    if data is None:
        raise ConfigError(path, None, "the file is empty; a preset is a mapping with 'sparsity:' and 'bench:' sections")
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"the top level must be a mapping (key: value), got a {type(data).__name__}")
    _check_keys(path, "", data, TOP_KEYS)
    if "sparsity" not in data:
        raise ConfigError(path, "sparsity", "missing; add a 'sparsity:' section with mode and num_heads")
    sparsity = _sparsity(path, data["sparsity"])
    block = sparsity.block
    seq_len = data.get("seq_len", 4096)
    _positive_int(path, "seq_len", seq_len)
    if seq_len % block:
        raise ConfigError(path, "seq_len", f"{seq_len} is not a multiple of the block size {block}")
    seed = data.get("seed")
    if seed is not None:
        _typed(path, "seed", seed, INT)
    description = data.get("description", "")
    _typed(path, "description", description, STR)
    return Preset(name, path, description, seq_len, seed, sparsity, _bench(path, data.get("bench"), block))
