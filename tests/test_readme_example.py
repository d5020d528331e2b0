"""The README's first Python example runs as printed, on a machine without a GPU too, and its two
calls (the function on a layout, DeepSpeed's module) compute the same attention.

They once differed by 0.7-0.8: the module draws its own random layout when it is built, and the
example did not seed it like the layout above it. A reader comparing the two would conclude that
one of them is wrong.
"""
import ast
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def first_python_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert m, "README.md has no ```python example"
    return m.group(1)


def run_recording_outputs(code: str) -> list[tuple[str, torch.Tensor]]:
    """Run ``code`` statement by statement; every tensor bound to a name starting with ``out``, in order."""
    namespace, outputs = {"__name__": "readme_example"}, []
    for stmt in ast.parse(code).body:
        exec(compile(ast.Module([stmt], type_ignores=[]), "README.md", "exec"), namespace)
        targets = stmt.targets if isinstance(stmt, ast.Assign) else []
        for name in (t.id for t in targets if isinstance(t, ast.Name)):
            if name.startswith("out") and isinstance(namespace[name], torch.Tensor):
                outputs.append((name, namespace[name].detach().float().clone()))
    return outputs


def test_readme_example_gives_the_same_output_through_the_function_and_the_module(monkeypatch):
    code = first_python_example()
    assert 'device="cuda"' not in code, "the example must run without a GPU too (a CPU device line)"
    assert "4096" in code
    # As printed, only shorter: 512 tokens instead of 4096 keep the CPU reference's backward
    # (a Python loop over block rows) to seconds on a shared 2-core machine.
    code = code.replace("4096", "512")
    # A new user's CPU runs the PyTorch reference; the Triton interpreter (this suite's CPU
    # default) would take minutes for 4096 tokens.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    outputs = run_recording_outputs(code)
    assert len(outputs) >= 2, f"the example should compute the attention twice, got {[n for n, _ in outputs]}"
    (first, reference), *others = outputs
    assert reference.abs().max() > 0  # a real output, not zeros from an empty layout
    for name, value in others:
        diff = (value - reference).abs().max().item()
        assert diff < 2e-2, f"README: {name} differs from {first} by {diff:.3f} (a different layout?)"
