"""``sparsecli bench --model CONFIG``: a transformers decoder with random weights, in bf16, on our
sparse attention, SDPA (dense causal) and FlexAttention (the same layout through ``to_block_mask``).

What it measures, per provider:

- ``train``: one forward+backward step (loss over every token, no gradient checkpointing) at each
  ``--seq``: median step time over a few steps, and peak memory of one step;
- ``decode``: tokens/s of greedy decoding at a context of ``--context`` tokens for
  ``--decode-batch`` sequences: ``eager-dynamic`` (a DynamicCache, eager steps: what ``generate``
  does by default), ``eager-static`` (a StaticCache, eager steps) and ``graph-static`` (the same
  step captured once in a CUDA graph and replayed, the argmax fed back on the GPU).

Every provider is checked first on a short input (``check_len`` tokens) against a float32 copy of
the model on the masked reference (``model_attention.register_masked``; dense causal SDPA for
the ``sdpa`` row): the prefill logits, decode steps through a static cache (eager, then CUDA-graph
replays) at the input's last positions. A row passes when its relative error is at most twice
the bf16 reference's own (the same reference run in bf16) plus 0.002; a row that fails is not timed
and says why. ``dense_vs_layout_rel_gap`` (the two float32 references apart) says how much larger
than the tolerance a wrong attention pattern's error would be. Bounds: the step's FLOPs (dense / sparse, linear layers included) and a decode
step's bytes (weights plus the keys and values read) give the speedup the layout allows.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..plumbing.errors import UserError
from .model_decode import decode_check, decode_row
from .model_measure import elapsed_ms, free_memory, peak_memory_gib, rel_error, why

PROVIDERS = ("sparse", "sdpa", "flex")
MODES = ("eager-dynamic", "eager-static", "graph-static")
BUNDLED = {"llama-8l-2048": "llama-8l-2048.json"}
SPARSE_NAME = "sparsecli-bench"
SCHEMA = "sparsecli-model-bench/1"


@dataclass
class ModelBench:
    """One planned ``bench --model`` run."""

    model: str  # bundled name or config.json path
    config: dict  # the config.json contents
    layout_spec: object  # SparsitySpec (heads = the model's query heads)
    layout_name: str
    seqs: tuple = (32768, 65536)
    batch: int = 1
    context: int = 32768
    decode_batch: int = 8
    decode_steps: int = 32
    providers: tuple = PROVIDERS
    modes: tuple = MODES
    check_len: int = 8192
    reps: int = 3
    device: str = "cuda"
    notes: list = field(default_factory=list)


def read_config(ref: str) -> tuple[str, dict]:
    """(name, config dict) of a bundled model name or a ``config.json`` path; errors are one line."""
    if ref in BUNDLED:
        text = resources.files("sparsecli.presets").joinpath("models", BUNDLED[ref]).read_text(encoding="utf-8")
        return ref, json.loads(text)
    path = Path(ref)
    if not path.is_file():
        raise UserError(f"--model {ref}: not a bundled model ({', '.join(BUNDLED)}) nor a config.json file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--model {ref}: cannot read it as a transformers config.json ({e})") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise UserError(f"--model {ref}: a transformers config.json needs a 'model_type' key")
    return path.stem, data


def plan(model: str, layout_ref: str | None, seqs, batch, context, decode_batch, providers, modes,
         check_len=8192, decode_steps=32) -> ModelBench:
    """Check the flags against the model and the layout before anything runs."""
    from ..layouts.presets import ConfigError, load_preset

    name, config = read_config(model)
    heads = config.get("num_attention_heads")
    if not isinstance(heads, int) or heads < 1:
        raise UserError(f"--model {model}: the config has no num_attention_heads")
    try:
        preset = load_preset(layout_ref or "causal_sliding_window")
    except ConfigError as e:
        raise UserError(str(e)) from None
    spec = preset.sparsity.override(num_heads=heads)
    block = spec.block
    for flag, values in (("--seq", seqs), ("--context", (context,))):
        for v in values:
            if v < 1 or v % block:
                raise UserError(f"{flag} {v}: model bench lengths are whole blocks of the layout's {block} tokens")
    if check_len % block:
        raise UserError(f"the check length {check_len} must be whole blocks of {block}")
    unknown = [p for p in providers if p not in PROVIDERS] + [m for m in modes if m not in MODES]
    if unknown:
        raise UserError(f"unknown {', '.join(unknown)}: providers are {', '.join(PROVIDERS)}; decode modes "
                        f"{', '.join(MODES)}")
    return ModelBench(name, config, spec, preset.name, tuple(seqs), batch, context, decode_batch, decode_steps,
                      tuple(providers), tuple(modes), check_len)


def run(bench: ModelBench, on_row=lambda row: None) -> dict:
    """Build the model, check every provider, time the rest; returns the results document."""
    import torch

    from ..modules.hf_decoder import register_attention
    from . import results as res
    from .model_attention import FLEX_NAME, register_flex, register_masked

    torch.manual_seed(0)
    model = _build_model(bench)
    spec = bench.layout_spec
    block = spec.block
    longest = max(*bench.seqs, bench.context + bench.decode_steps + 8, bench.check_len)
    longest = -(-longest // block) * block
    sparse = register_attention(SPARSE_NAME, spec.build(), max_seq_length=longest)
    layout = sparse.layout_for(None).layout
    register_masked(layout, block)
    register_flex(layout, block)
    impl = {"sparse": SPARSE_NAME, "sdpa": "sdpa", "flex": FLEX_NAME}
    base = {"model": bench.model, "layout": bench.layout_name, "block": block, "dtype": "bf16"}

    checks = _check_all(bench, model, impl, base, on_row)
    rows = list(checks.values())

    def measured(row_of) -> list:
        """One row per provider (each reported as it lands), with the same-run ratios between them."""
        group = []
        for p in bench.providers:
            group.append(row_of(p))
            on_row(group[-1])
        _ratios(group)
        return group

    for mode in bench.modes:  # decoding first: short, and no compiler in it
        rows += measured(lambda p: decode_row(bench, model, impl[p], p, mode, layout, block, checks[p], base))
    for seq in bench.seqs:
        rows += measured(lambda p: _train_row(bench, model, impl[p], p, seq, layout, block, checks[p], base))
    config = {"model": bench.model, "model_config": bench.config, "layout": bench.layout_name,
              "layout_values": {"mode": spec.mode, **spec.values}, "seqs": list(bench.seqs), "batch": bench.batch,
              "context": bench.context, "decode_batch": bench.decode_batch, "decode_steps": bench.decode_steps,
              "check_len": bench.check_len, "reps": bench.reps, "transformers": _transformers_version()}
    return {"schema": SCHEMA, "env": res.capture_env(), "config": config, "results": rows}


# -- the model and its checks ---------------------------------------------------------------------------


def _build_model(bench: ModelBench):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    data = dict(bench.config)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    config._attn_implementation = "sdpa"
    with torch.device(bench.device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model.eval()


def _check_all(bench, model, impl, base, on_row) -> dict:
    """{provider: check row}; the rows say ``ok`` or why a provider is not timed."""
    import torch

    from .model_attention import MASKED_NAME

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (1, bench.check_len), generator=g).to(bench.device)
    ref32 = copy.deepcopy(model).float()
    want = {}
    with torch.no_grad():
        for pattern, name in (("layout", MASKED_NAME), ("dense", "sdpa")):
            ref32.set_attn_implementation(name)
            want[pattern] = ref32(ids).logits.float()
        model.set_attn_implementation(MASKED_NAME)
        scale = rel_error(model(ids).logits.float(), want["layout"])  # bf16's own error on this input
    del ref32
    tol = 2 * scale + 2e-3
    gap = rel_error(want["dense"], want["layout"])  # how far apart the two patterns are: what a check can tell
    rows = {}
    for p in bench.providers:
        row = {**base, "case_id": f"{bench.model}/check/S{bench.check_len}/{p}", "kind": "check", "provider": p,
               "seq_len": bench.check_len, "batch": 1, "tolerance": tol, "bf16_reference_rel_err": scale,
               "dense_vs_layout_rel_gap": gap}
        ref = want["dense" if p == "sdpa" else "layout"]
        try:
            model.set_attn_implementation(impl[p])
            with torch.no_grad():
                errs = {"prefill": rel_error(model(ids).logits.float(), ref)}
                if p != "flex":
                    errs.update(decode_check(bench, model, ids, ref))
            graph = errs.pop("decode_graph", None), errs.pop("graph_error", None)
            worst = max(errs, key=errs.get)
            row.update({f"rel_err_{k}": v for k, v in errs.items()}, max_rel_err=errs[worst],
                       status="ok" if errs[worst] <= tol else "wrong",
                       reason=None if errs[worst] <= tol else f"{worst}: relative error {errs[worst]:.3g} > {tol:.3g}")
            if graph[0] is not None:
                row.update(rel_err_decode_graph=graph[0], graph_status="ok" if graph[0] <= tol else "wrong",
                           graph_reason=None if graph[0] <= tol else f"relative error {graph[0]:.3g} > {tol:.3g}")
            elif graph[1] is not None:
                row.update(graph_status="failed", graph_reason=graph[1])
        except Exception as e:  # noqa: BLE001 (a failing provider is a row that says why)
            row.update(status="failed", reason=why(e))
        free_memory(bench.device)
        rows[p] = row
        on_row(row)
    return rows


# -- training ---------------------------------------------------------------------------------------------


def _train_row(bench, model, impl, provider, seq, layout, block, check, base) -> dict:
    import torch

    row = {**base, "case_id": f"{bench.model}/train/S{seq}/B{bench.batch}/{provider}", "kind": "train",
           "provider": provider, "seq_len": seq, "batch": bench.batch,
           "flop_bound": _flop_bound(model.config, layout, block, seq, bench.batch)}
    if check["status"] != "ok":
        return {**row, "status": "skipped", "reason": f"check {check['status']}: {check['reason']}"}
    model.set_attn_implementation(impl)
    model.train()
    g = torch.Generator().manual_seed(seq)
    ids = torch.randint(3, model.config.vocab_size, (bench.batch, seq), generator=g).to(bench.device)

    def step():
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()

    try:
        step()  # warm-up: kernels, plans, compiled code
        times = [elapsed_ms(step, bench.device) for _ in range(bench.reps)]
        peak = peak_memory_gib(step, bench.device)
        row.update(status="ok", step_ms=sorted(times)[len(times) // 2], step_ms_all=times, peak_mem_gib=peak,
                   tokens_per_s=bench.batch * seq / (sorted(times)[len(times) // 2] / 1e3))
    except Exception as e:  # noqa: BLE001
        row.update(status="oom" if "out of memory" in str(e).lower() else "failed", reason=why(e))
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
        free_memory(bench.device)
    return row


def _flop_bound(config, layout, block, seq, batch) -> dict:
    """FLOPs of a forward+backward step (linear layers 6 x params x tokens, attention 4 x 3.5 x pairs x
    head dim per head and layer), dense causal and on the layout, and their ratio."""
    import torch

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    tokens = batch * seq
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * head_dim
    per_layer = hidden * (config.num_attention_heads * head_dim) * 2 + hidden * kv * 2 + 3 * hidden * inter
    linear = 6 * tokens * (layers * per_layer + hidden * config.vocab_size)
    nb = seq // block
    lay = layout[:, :nb, :nb].expand(config.num_attention_heads, nb, nb)
    below = (lay & torch.ones(nb, nb, dtype=torch.bool).tril(-1)).sum().item()
    diag = lay.diagonal(dim1=1, dim2=2).sum().item()
    pairs_sparse = batch * (below * block * block + diag * block * (block + 1) // 2)
    pairs_dense = batch * config.num_attention_heads * seq * (seq + 1) // 2
    attn = lambda pairs: 4 * 3.5 * pairs * head_dim * layers  # noqa: E731
    dense, sparse = linear + attn(pairs_dense), linear + attn(pairs_sparse)
    return {"tflop_dense": dense / 1e12, "tflop_sparse": sparse / 1e12, "ratio": dense / sparse,
            "attention_share_dense": attn(pairs_dense) / dense}


def _ratios(group: list) -> None:
    """Same-run ratios against the sdpa row: speedup (time) and memory."""
    sdpa = next((r for r in group if r["provider"] == "sdpa" and r.get("status") == "ok"), None)
    flex = next((r for r in group if r["provider"] == "flex" and r.get("status") == "ok"), None)
    for r in group:
        if r.get("status") != "ok":
            continue
        if sdpa is not None:
            r["speedup_vs_sdpa"] = sdpa["step_ms"] / r["step_ms"]
            if r.get("peak_mem_gib") and sdpa.get("peak_mem_gib"):
                r["memory_vs_sdpa"] = r["peak_mem_gib"] / sdpa["peak_mem_gib"]
            bound = (r.get("flop_bound") or {}).get("ratio")
            if bound and r["provider"] != "sdpa":  # training: SDPA runs at its dense FLOPs
                r["share_of_bound"] = r["speedup_vs_sdpa"] / bound
        if r.get("byte_bound"):  # decode: the bytes its pattern must read, per second of a step
            gb = r["byte_bound"]["gb_dense" if r["provider"] == "sdpa" else "gb_sparse"]
            r["effective_tb_s"] = gb / r["step_ms"]
        if flex is not None:
            r["speedup_vs_flex"] = flex["step_ms"] / r["step_ms"]


def _transformers_version():
    import transformers

    return transformers.__version__
