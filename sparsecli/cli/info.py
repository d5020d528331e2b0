"""``sparsecli info``: what this installation can run (versions, GPU, kernel path per device)."""
from __future__ import annotations

import importlib.util
import json
from typing import Annotated

import typer
from rich.table import Table

from .app import app
from .console import out_console


@app.command()
def info(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """Show versions, the GPU, and which attention path runs on each device."""
    from ..bench.results import capture_env
    from ..kernels._checks import interpreting

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
    env["hopper_path"] = _hopper_path(env.get("capability"))
    env["benchmark"] = "available" if env["gpu"] else "needs a CUDA GPU"
    if as_json:
        out_console.print_json(json.dumps(env))
        return
    t = Table(show_header=False, box=None, title="sparsecli", title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for key in ("sparsecli", "git_sha", "python", "torch", "cuda", "cudnn", "triton", "transformers", "gpu",
                "capability", "gpu_memory_gib", "sm_count", "triton_interpreter", "cpu_path", "hopper_path",
                "benchmark"):
        t.add_row(key, "—" if env.get(key) is None else str(env[key]))
    if env["gpu"]:
        t.add_row("gpu path", path)
    out_console.print(t)


def _hopper_path(capability) -> str:
    """Whether the Hopper (Gluon) kernels can run here, for which calls, and if not, why."""
    from ..kernels import hopper

    cap = tuple(int(x) for x in str(capability).split(".")) if capability else None  # "9.0" -> (9, 0)
    ok, why = hopper.device_support(cap)
    if not ok:
        return f"not available: {why}"
    return (f"available for {hopper.CALLS} (sparsecli.kernels.hopper.attention; "
            "blocksparse_attention still runs the Triton kernels)")


def _version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "installed"
