"""``sparsecli info``: what this installation can run (versions, GPU, kernel path per device)."""

import importlib.util
import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..plumbing.errors import UserError
from .app import app
from .console import out_console


_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Calls whose path `sparsecli info` shows (label, CallSpec fields besides the device's capability).
_EXAMPLES = (
    ("bf16 D128 block 128 S 8192", dict(dtype="bf16", head_dim=128, block=128, q_len=8192, k_len=8192)),
    ("fp16 D64 block 128 GQA/causal", dict(dtype="fp16", head_dim=64, block=128, q_len=4096, k_len=4096)),
    ("bf16 D128 block 64", dict(dtype="bf16", head_dim=128, block=64, q_len=8192, k_len=8192)),
    ("bf16 D96 block 128", dict(dtype="bf16", head_dim=96, block=128, q_len=8192, k_len=8192)),
    ("bf16 D128 decode (Sq 1)", dict(dtype="bf16", head_dim=128, block=128, q_len=1, k_len=32768)),
    ("bf16 D128 + key_padding_mask", dict(dtype="bf16", head_dim=128, block=128, q_len=8192, k_len=8192,
                                          masks=True)),
    ("bf16 D128 + segment_ids", dict(dtype="bf16", head_dim=128, block=128, q_len=8192, k_len=8192, segments=True)),
    ("fp32 D128 block 128", dict(dtype="fp32", head_dim=128, block=128, q_len=8192, k_len=8192)),
)


@app.command()
def info(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
         block: Annotated[Optional[int], typer.Option(
             help="Describe one call: its layout block (16, 32, 64 or 128).")] = None,
         # The call's options default to None, so that one given without --block is an error, not ignored.
         head_dim: Annotated[Optional[int], typer.Option(
             help="The call's head dim \\[default: 128].", show_default=False)] = None,
         dtype: Annotated[Optional[str], typer.Option(
             help="The call's dtype: bf16, fp16 or fp32 \\[default: bf16].", show_default=False)] = None,
         seq: Annotated[Optional[int], typer.Option(
             help="The call's query length Sq \\[default: 8192].", show_default=False)] = None,
         kv_seq: Annotated[Optional[int], typer.Option(
             help="The call's key length Sk \\[default: Sq].", show_default=False)] = None,
         masks: Annotated[bool, typer.Option("--masks", help="The call has a mask or rpe.")] = False,
         segments: Annotated[bool, typer.Option("--segments", help="The call has segment_ids.")] = False):
    """Show versions, the GPU, and which attention kernels run which calls here, and why.

    With --block (and the other call options) it names the path of that one call on this GPU instead of the examples.
    """
    from ..bench.results import capture_env
    from ..kernels._checks import interpreting

    call = _check_call(block, head_dim, dtype, seq, kv_seq, masks, segments)
    env = capture_env()
    env["transformers"] = _version("transformers")
    env["triton_interpreter"] = interpreting()
    if env["gpu"]:
        path = "Triton kernels on the GPU"
    elif env["triton_interpreter"]:
        path = "Triton kernels through the interpreter (slow; for tests)"
    else:
        path = ("PyTorch reference (block row by block row, O(S*block) memory); set TRITON_INTERPRET=1 to run "
                "the kernels")
    env["cpu_path"] = path if not env["gpu"] else "PyTorch reference for CPU tensors"
    cap = tuple(int(x) for x in str(env["capability"]).split(".")) if env.get("capability") else None  # "9.0"
    env["hopper_path"] = _hopper_path(cap)
    env["backward"] = _backwards(cap)
    env["attention_backend_env"] = _backend_env()
    if cap is None:
        env["attention_calls"] = {"every call": "no GPU: CPU tensors run the PyTorch reference (or the Triton "
                                                "interpreter)"}
    elif call is not None:
        env["attention_calls"] = {"this call": _call_path(cap, call)}
    else:
        env["attention_calls"] = {label: _call_path(cap, call) for label, call in _EXAMPLES}
    env["benchmark"] = "available" if env["gpu"] else "needs a CUDA GPU"
    if as_json:
        out_console.print_json(json.dumps(env))
        return
    t = Table(show_header=False, box=None, title="sparsecli", title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for key in ("sparsecli", "git_sha", "python", "torch", "cuda", "cudnn", "triton", "transformers", "gpu",
                "capability", "gpu_memory_gib", "sm_count", "triton_interpreter", "cpu_path", "hopper_path",
                "attention_backend_env", "benchmark"):
        t.add_row(key, "—" if env.get(key) is None else str(env[key]))
    if env["gpu"]:
        t.add_row("gpu path", path)
    for label, where in env["attention_calls"].items():
        t.add_row(f"call: {label}", where)
    for label, what in env["backward"].items():
        t.add_row(f"backward, {label}", what)
    out_console.print(t)


def _check_call(block, head_dim, dtype, seq, kv_seq, masks, segments) -> dict | None:
    """The call --block and its options describe (None without --block), or a one-line error: a
    value the kernels do not take, or a call option without the --block that makes it a call."""
    from ..kernels.limits import BLOCKS, HEAD_DIM_RULE, takes_head_dim

    given = {"--head-dim": head_dim, "--dtype": dtype, "--seq": seq, "--kv-seq": kv_seq,
             "--masks": masks or None, "--segments": segments or None}
    if block is None:
        named = [flag for flag, value in given.items() if value is not None]
        if named:
            verb, them = ("describes", "it") if len(named) == 1 else ("describe", "them")
            raise UserError(f"{'/'.join(named)} {verb} one call: add its --block "
                            f"({', '.join(map(str, BLOCKS))}), or drop {them} for the example calls")
        return None
    if block not in BLOCKS:
        raise UserError(f"--block {block}: the kernels take blocks of {', '.join(map(str, BLOCKS[:-1]))} "
                        f"or {BLOCKS[-1]}")
    head_dim = 128 if head_dim is None else head_dim
    if not takes_head_dim(head_dim):
        raise UserError(f"--head-dim {head_dim}: the kernels take head dims that are {HEAD_DIM_RULE}")
    dtype = "bf16" if dtype is None else dtype
    if dtype not in _DTYPES:
        raise UserError(f"--dtype {dtype}: use one of {', '.join(_DTYPES)}")
    seq = 8192 if seq is None else seq
    for flag, value in (("--seq", seq), ("--kv-seq", kv_seq)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: a call has at least one token")
    return dict(dtype=dtype, head_dim=head_dim, block=block, q_len=seq, k_len=kv_seq or seq, masks=masks,
                segments=segments)


def _hopper_path(capability) -> str:
    """Whether the Hopper (Gluon) kernels can run on this GPU, for which calls, and if not, why."""
    from ..kernels import hopper

    ok, why = hopper.device_support(capability)
    if not ok:
        return f"not available: {why}"
    return f"available for {hopper.CALLS} (blocksparse_attention's backend='auto' takes it for those calls)"


def _backwards(capability) -> dict:
    """What ``blocksparse_attention``'s backward runs here for each ``deterministic`` value."""
    from ..kernels import hopper
    from ..kernels.fused.backend import backward_kind

    kernels = ["hopper", "triton"] if hopper.device_support(capability)[0] else ["triton"]
    out = {}
    for det in (True, False):
        label = "deterministic=True (default)" if det else "deterministic=False"
        out[label] = "; ".join(f"{b} kernels: {backward_kind(b, det)[1]}" for b in kernels)
    return out


def _backend_env() -> str:
    from ..kernels.fused.backend import ENV, env_choice

    return f"{ENV}={env_choice()}" if env_choice() else f"{ENV} unset (backend='auto' chooses)"


def _call_path(capability, call: dict) -> str:
    """"hopper: why" / "triton: why" for a CUDA call on a GPU of ``capability`` (backend='auto')."""
    import torch

    from ..kernels.fused.backend import CallSpec, choose

    fields = {k: v for k, v in call.items() if k != "dtype"}
    spec = CallSpec(capability, getattr(torch, _DTYPES[call["dtype"]]), **fields)
    try:
        backend, why = choose("auto", spec)
    except ValueError as e:  # a bad SPARSECLI_ATTENTION_BACKEND: say so instead of failing
        return f"error: {e}"
    return f"{backend}: {why}"


def _version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "installed"
