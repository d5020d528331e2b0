"""--format markdown: GitHub tables for $GITHUB_STEP_SUMMARY, the gate's verdict first."""
from typer.testing import CliRunner

from sparsecli.bench import results as res
from sparsecli.bench.compare import make_baseline
from sparsecli.cli import app
from sparsecli.plumbing.output_files import write_text_atomic

from .conftest import results_doc

runner = CliRunner()
BASE = {"sparse": 0.5, "three-op": 1.5, "sdpa-flash": 1.0, "flex": 0.8, "fa4": "unavailable"}


def files(tmp_path, new_times):
    base = write_text_atomic(tmp_path / "base.json", res.to_json(make_baseline(results_doc(BASE))))
    new = results_doc(new_times)
    new["results"][-1]["reason"] = "flash-attn-4 not installed | pip install flash-attn-4"
    return str(base), str(write_text_atomic(tmp_path / "new.json", res.to_json(new)))


def table_rows(text, first_cell):
    return [line for line in text.splitlines() if line.startswith(f"| {first_cell}")]


def test_bench_markdown_puts_the_failing_gate_first(tmp_path):
    base, new = files(tmp_path, dict(BASE, **{"three-op": 1.8}))
    r = runner.invoke(app, ["bench", "--from", new, "--baseline", base, "--format", "markdown"])
    assert r.exit_code == 3
    lines = r.stdout.splitlines()
    assert lines[0] == "### Gate ❌ FAILED" and "1 pass, 1 regression" in r.stdout
    gate_header = lines.index("| case_id | verdict | base ratio | new ratio | change | tolerance | base ms | new ms | note |")
    assert lines[gate_header + 1] == "|---|---|---:|---:|---:|---:|---:|---:|---|"
    assert "three-op` | **regression** | 1.500 | 1.800 | +20.0% |" in lines[gate_header + 2]  # failing first
    assert "sparse` | pass |" in lines[gate_header + 3]
    assert r.stdout.index("### Gate") < r.stdout.index("### sparsecli bench · Test GPU")
    assert "**p fwd S=4096 B=None H=None D=64 bf16, density 25.0%**" in r.stdout
    assert table_rows(r.stdout, "sparse |")[0].startswith("| sparse | 0.500 | 0.497–0.502 | 200.0 |")
    fa4 = table_rows(r.stdout, "fa4 |")[0]
    assert fa4.endswith("| unavailable: flash-attn-4 not installed \\| pip install flash-attn-4 |")
    assert all(line.count("|") - line.count("\\|") == 11 for line in r.stdout.splitlines()
               if line.startswith("| ") and "case_id" not in line and "verdict" not in line
               and not line.startswith("| `"))  # every results row has its 10 cells
    assert "Providers: flex = FlexAttention, Triton backend; fa4 = FlashAttention-4, dense." in r.stdout


def test_compare_markdown_and_a_passing_gate(tmp_path):
    base, new = files(tmp_path, BASE)
    r = runner.invoke(app, ["compare", base, new, "--format", "markdown"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("### Gate ✅ passed\n") and f"baseline `{base}`" in r.stdout
    assert len(table_rows(r.stdout, "`p/fwd")) == 2


def test_dry_run_markdown_lists_the_plan(tiny_preset):
    r = runner.invoke(app, ["bench", "-p", str(tiny_preset), "--dry-run", "--format", "markdown"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("### 24 planned cases (dry run: nothing timed)")
    assert len(table_rows(r.stdout, "`tiny/")) == 24
