"""Run a plan: per shape, one set of inputs; per provider, set up, check, measure memory, time.

A provider that fails at any step gets rows that say why, and the sweep goes on. Per provider
the sequence is: a throw-away setup and call on a copy of the layout (compiles kernels, so no
compile time leaks into the numbers), a timed setup on a *fresh* layout object (layout caches
are keyed by object, so this measures the layout-to-index build), the correctness check, then
per pass one memory pass and the timing.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import providers as prov
from .cases import FLASH, FLEX, Case, LayoutFigures, Plan, Shape, build_layout, flops, \
    layout_figures, layout_fingerprint, preset_of
from .timing import MAX_REL_ERR, Timing, TimingConfig, do_bench, host_ms, peak_memory_mib, \
    reference, reference_fits, rel_err

TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class RunOptions:
    device: str = "cuda"
    timing: TimingConfig = field(default_factory=TimingConfig)
    seed: int = 0
    check: bool = True
    # Replaceable for tests: (callable) -> Timing. Default: triton.testing.do_bench.
    timer: Callable | None = None


class _Inputs:
    """q, k, v, dout of one shape (seeded from the shape, so every provider and run sees the same)."""

    def __init__(self, shape: Shape, opts: RunOptions, needs_grad: bool):
        digest = hashlib.sha1(f"{opts.seed}/{shape.key}".encode()).digest()
        gen = torch.Generator(device=opts.device).manual_seed(int.from_bytes(digest[:6], "little"))
        dims = (shape.batch, shape.heads, shape.seq_len, shape.head_dim)
        dtype = TORCH_DTYPES[shape.dtype]
        self.q, self.k, self.v, self.dout = (
            torch.randn(dims, generator=gen, device=opts.device, dtype=dtype) for _ in range(4))
        for t in (self.q, self.k, self.v):
            t.requires_grad_(needs_grad)


def _pass_callable(fn, pass_: str, x: _Inputs):
    q, k, v, dout = x.q, x.k, x.v, x.dout
    if pass_ == "fwd":
        def run():
            with torch.no_grad():
                return fn(q, k, v)
        return run
    if pass_ == "bwd":
        out = fn(q, k, v)  # the graph is built once; only the backward is measured
        return lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    return lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), dout)


def base_row(case: Case, fig: LayoutFigures | None, sha: str) -> dict:
    s = case.shape
    return {
        "case_id": case.case_id, "group_id": case.group_id, "preset": s.preset,
        "provider": case.provider, "pass": case.pass_, "dtype": s.dtype, "seq_len": s.seq_len,
        "batch": s.batch, "heads": s.heads, "head_dim": s.head_dim,
        "block": fig.block if fig else None, "causal": s.causal, "layout_sha": sha,
        "nnz_blocks": fig.nnz_blocks if fig else None, "density": fig.density if fig else None,
        "status": "pending", "reason": "", "median_ms": None, "p20_ms": None, "p80_ms": None,
        "tflops_nnz": None, "tflops_dense": None, "speedup_vs_flash": None, "speedup_vs_flex": None,
        "peak_mem_mib": None, "max_rel_err": None, "check": "unchecked", "index_build_ms": None,
        "backward": None,
    }


class Runner:
    def __init__(self, plan: Plan, opts: RunOptions, on_row: Callable[[dict], None] | None = None):
        self.plan, self.opts = plan, opts
        self.on_row = on_row or (lambda row: None)
        self.timer = opts.timer or (lambda f: do_bench(f, opts.timing))

    def run(self) -> list[dict]:
        rows = []
        by_shape: dict[Shape, list[Case]] = {}
        for c in self.plan.cases:
            by_shape.setdefault(c.shape, []).append(c)
        for shape, cases in by_shape.items():
            rows += self._shape(shape, cases)
        add_speedups(rows)
        return rows

    def _emit(self, row, status, reason=""):
        row["status"], row["reason"] = status, reason
        self.on_row(row)

    def _shape(self, shape: Shape, cases: list[Case]) -> list[dict]:
        preset = preset_of(self.plan, shape)
        sha = layout_fingerprint(preset)
        fig, rows = None, {}
        try:
            layout = build_layout(preset, shape.seq_len)
            fig = layout_figures(layout, preset.sparsity.block, shape.causal)
            rows = {c: base_row(c, fig, sha) for c in cases}
            x = _Inputs(shape, self.opts, needs_grad=any(c.pass_ != "fwd" for c in cases))
            layout = layout.to(self.opts.device)
        except Exception as e:  # noqa: BLE001 (inputs too large, bad layout: every row says so)
            rows = rows or {c: base_row(c, fig, sha) for c in cases}
            status, reason = prov.classify(e)
            for row in rows.values():
                self._emit(row, status, reason)
            return list(rows.values())
        refs: dict[bool, object] = {}
        for provider in dict.fromkeys(c.provider for c in cases):
            mine = [c for c in cases if c.provider == provider]
            self._provider(provider, mine, rows, shape, layout, fig, x, refs)
            _release()
        del x, refs
        _release()
        return list(rows.values())

    def _provider(self, provider, cases, rows, shape, layout, fig, x, refs):
        ctx_of = lambda: prov.Ctx(layout.clone(), fig.block, shape.causal,  # noqa: E731
                                  shape.head_dim ** -0.5, shape.seq_len, shape.head_dim,
                                  TORCH_DTYPES[shape.dtype])
        needs_grad = any(c.pass_ != "fwd" for c in cases)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn = prov.setup(provider, ctx_of())  # compile and warm on a throw-away layout copy
                _pass_callable(fn, "fwd", x)()
                if needs_grad:
                    _pass_callable(fn, "fwd+bwd", x)()
                del fn
            fresh, box = ctx_of(), {}

            def setup_and_call():  # a fresh layout object misses every per-layout cache
                box["fn"] = prov.setup(provider, fresh)
                _pass_callable(box["fn"], "fwd", x)()

            first = host_ms(setup_and_call, self.opts.device)
            fn = box["fn"]
            again = host_ms(_pass_callable(fn, "fwd", x), self.opts.device)
            build_ms = max(0.0, first - again) if prov.uses_layout(provider) else None
            errors = self._check(provider, fn, shape, layout, fig, x, refs, needs_grad)
            backward = prov.backward_of(provider, fresh, x.q, x.k, x.v) if needs_grad else None
        except Exception as e:  # noqa: BLE001
            status, reason = prov.classify(e)
            # A backend that is not there often says why in a warning; Unavailable says it itself.
            hint = ""
            if status == "unavailable" and not isinstance(e, prov.Unavailable):
                hint = next((str(w.message) for w in caught), "")
            for c in cases:
                self._emit(rows[c], status, f"{reason} {hint[:160]}".strip())
            return
        for c in cases:
            row = rows[c]
            row["index_build_ms"] = build_ms
            row["backward"] = backward if c.pass_ != "fwd" else None
            self._measure(c, row, fn, x, fig, errors)

    def _check(self, provider, fn, shape, layout, fig, x, refs, needs_grad):
        """{'out': err, 'grads': err} against the reference, or None when unchecked."""
        if not self.opts.check or not reference_fits((shape.heads, shape.seq_len), self.opts.device):
            return None
        sparse = prov.uses_layout(provider)
        if sparse not in refs:
            lay = layout if sparse else torch.ones_like(layout[:1])
            refs[sparse] = reference(x.q, x.k, x.v, x.dout, lay, fig.block, shape.causal,
                                     shape.head_dim ** -0.5, with_grads=needs_grad)
        ref = refs[sparse]
        with torch.set_grad_enabled(needs_grad):
            out = fn(x.q, x.k, x.v)
        errors = {"out": rel_err(out, ref.out)}
        if needs_grad:
            grads = torch.autograd.grad(out, (x.q, x.k, x.v), x.dout)
            errors["grads"] = max(rel_err(g, r) for g, r in zip(grads, ref.grads))
        return errors

    def _measure(self, case: Case, row: dict, fn, x: _Inputs, fig, errors):
        if errors is not None:
            err = {"fwd": errors["out"], "bwd": errors.get("grads"),
                   "fwd+bwd": max(errors["out"], errors.get("grads", 0.0))}[case.pass_]
            row["max_rel_err"] = err
            row["check"] = "passed" if err <= MAX_REL_ERR[case.shape.dtype] else "failed"
        try:
            run = _pass_callable(fn, case.pass_, x)
            row["peak_mem_mib"] = peak_memory_mib(run, self.opts.device)
            t: Timing = self.timer(run)
        except Exception as e:  # noqa: BLE001
            self._emit(row, *prov.classify(e))
            return
        row["median_ms"], row["p20_ms"], row["p80_ms"] = t.median_ms, t.p20_ms, t.p80_ms
        nnz_flops, dense_flops = flops(case, fig)
        row["tflops_nnz"] = nnz_flops / (t.median_ms * 1e9)
        row["tflops_dense"] = dense_flops / (t.median_ms * 1e9)
        if row["check"] == "failed":
            limit = MAX_REL_ERR[case.shape.dtype]
            self._emit(row, "wrong", f"relative error {row['max_rel_err']:.2e} > {limit:.0e} vs the reference")
        else:
            self._emit(row, "ok")


def _release():
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def add_speedups(rows: list[dict]) -> None:
    """speedup_vs_flash / speedup_vs_flex: the reference provider's median over this row's."""
    ref = {}
    for r in rows:
        if r["provider"] in (FLASH, FLEX) and r["status"] == "ok":
            ref[(r["group_id"], r["provider"])] = r["median_ms"]
    for r in rows:
        if r["status"] != "ok":
            continue
        for provider, key in ((FLASH, "speedup_vs_flash"), (FLEX, "speedup_vs_flex")):
            base = ref.get((r["group_id"], provider))
            r[key] = base / r["median_ms"] if base else None
