"""The bench CLI in pipes and against careless input: tables keep their numbers, a gate that
compared nothing fails, inputs are never overwritten, huge sweeps are refused, writes are atomic."""
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sparsecli.plumbing.output_files import write_text_atomic
from sparsecli.layouts import memory as layout_memory
from sparsecli.bench import results as res
from sparsecli.bench.compare import make_baseline
from sparsecli.cli import app

from .conftest import results_doc
from .test_cli_bench import via_main

runner = CliRunner()
BASE = {"sparse": 0.5, "three-op": 1.5, "sdpa-flash": 1.0, "flex": 0.8}
GROUP = "bigbird/fwd+bwd/S16384-B4-H16-D64-bf16"


def write(path, doc):
    return str(write_text_atomic(path, res.to_json(doc)))


def piped(*args):
    """The real entry point in a child whose stdout is a pipe, at 80 columns."""
    env = dict(os.environ, COLUMNS="80", TERM="xterm-256color")
    return subprocess.run([sys.executable, "-c", "from sparsecli.cli import main; main()", *args],
                          capture_output=True, text=True, env=env)


def test_piped_results_and_gate_tables_keep_every_number_and_id(tmp_path):
    doc = results_doc({p: ms * 1.234567 for p, ms in BASE.items()}, group=GROUP)
    path = write(tmp_path / "r.json", doc)
    base = write(tmp_path / "base.json", make_baseline(results_doc(BASE, group=GROUP)))
    r = piped("bench", "--from", path)
    assert r.returncode == 0, r.stderr
    for row in doc["results"]:
        assert f"{row['median_ms']:.3f}" in r.stdout and f"{row['tflops_nnz']:.1f}" in r.stdout
    r = piped("compare", base, path)
    assert r.returncode == 0, r.stderr  # every provider 23% slower: the same ratios
    assert f"{GROUP}/sparse" in r.stdout and f"{GROUP}/three-op" in r.stdout and "…" not in r.stdout


@pytest.mark.parametrize("new_rows", ["empty", "not_run"])
def test_a_gate_that_compared_nothing_fails(tmp_path, monkeypatch, capsys, new_rows):
    base = write(tmp_path / "base.json", make_baseline(results_doc(BASE)))
    other = results_doc(BASE, group="other/fwd/S4096-B1-H16-D64-bf16")  # every baseline case: not_run
    new = res.document([], {"gpu": "Test GPU"}, {}) if new_rows == "empty" else other
    code, out, err = via_main(monkeypatch, capsys, ["compare", base, write(tmp_path / "new.json", new)])
    assert code == 3 and "nothing compared" in out
    assert "gate failed" in err and "none of the baseline's 2 gated cases is in this run" in err
    r = runner.invoke(app, ["compare", base, str(tmp_path / "new.json"), "--format", "json"])
    assert r.exit_code == 3 and json.loads(r.stdout)["passed"] is False
    empty_base = write(tmp_path / "empty.json", make_baseline(res.document([], {"gpu": "Test GPU"}, {})))
    code, out, err = via_main(monkeypatch, capsys, ["compare", empty_base, base])
    assert code == 3 and "the baseline has no gated cases" in err


def test_outputs_never_overwrite_inputs_or_each_other(tmp_path, monkeypatch, capsys):
    base = write(tmp_path / "base.json", make_baseline(results_doc(BASE)))
    new = write(tmp_path / "new.json", results_doc(BASE))
    before = open(base).read()
    for args, fragment in (
        (["compare", base, new, "-o", base], f"-o {base} would overwrite the BASE file"),
        (["compare", base, new, "-o", str(tmp_path / "." / "new.json")], "would overwrite the NEW file"),
        (["bench", "--from", new, "--baseline", base, "-o", base], "would overwrite the --baseline file"),
        (["bench", "--from", new, "-o", new], "would overwrite the --from file"),
        (["bench", "--from", new, "-o", str(tmp_path / "x.png"), "--plot", str(tmp_path / "x.png")],
         "-o and --plot both name"),
    ):
        code, out, err = via_main(monkeypatch, capsys, args)
        assert code == 1 and fragment in err and len(err.strip().splitlines()) == 1, (args, err)
    assert open(base).read() == before


@pytest.mark.parametrize("seq", ["1000000000", "1048576"])
def test_sweeps_whose_layouts_cannot_fit_are_refused_before_building(monkeypatch, capsys, seq):
    monkeypatch.setattr(layout_memory, "available_bytes", lambda: 16 * 2**30)
    code, out, err = via_main(monkeypatch, capsys, ["bench", "--preset", "fixed", "--seq", seq, "--dry-run"])
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"--seq {seq}: the fixed layout (16 heads x" in err and "and 16.0 GiB is available" in err
    assert len(err.strip().splitlines()) == 1


MEASURE = """
import sys, threading
from sparsecli.bench.cases import build_layout, layout_figures
from sparsecli.layouts.presets import load_preset

def anon():  # resident anonymous memory: shared-library pages evicted and faulted back do not count
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

preset = load_preset(sys.argv[1])
block = preset.sparsity.block
layout_figures(build_layout(preset, 4 * block), block, causal=True)  # imports torch & co. before measuring
before, peak, done = anon(), [0], threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon())
        done.wait(0.001)

t = threading.Thread(target=sample)
t.start()
layout_figures(build_layout(preset, 1024 * block), block, causal=True)
done.set()
t.join()
print(max(peak[0], anon()) - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="measures peak RSS through /proc/self/status (Linux only)")
@pytest.mark.parametrize("preset", ["bigbird", "variable"])
def test_layout_memory_estimate_is_an_honest_upper_bound(preset):
    r = subprocess.run([sys.executable, "-c", MEASURE, preset], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    grew = int(r.stdout)  # peak anonymous RSS during the build above what it was before
    # the shared estimator (layout_memory), less its interpreter base: both presets have 16 heads, 1,024 blocks a side
    need = layout_memory.layout_peak_bytes(16, 1024 * 64, 64) - layout_memory.BASE_BYTES
    assert 0.75 * need < grew <= need


@pytest.mark.parametrize("args, fragment", [
    (["--seq", ""], "--seq is empty"),
    (["--seq", " , "], "--seq is empty"),
    (["--providers", ""], "--providers is empty"),
    (["--seq", "4096,4096"], "--seq lists 4096 twice"),
    (["--head-dim", "64,64"], "--head-dim lists 64 twice"),
    (["--providers", "sparse,sparse"], "--providers lists sparse twice"),
    (["--preset", "fixed"], "--preset fixed is given twice"),
    (["--plot", "p.png"], "--dry-run times nothing"),
    (["--baseline", "b.json"], "--dry-run times nothing"),
])
def test_sweep_flags_are_precise(monkeypatch, capsys, args, fragment):
    code, out, err = via_main(monkeypatch, capsys, ["bench", "--preset", "fixed", "--dry-run", *args])
    assert code == 1 and out == "" and fragment in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_dry_run_writes_the_planned_cases_with_o(tiny_preset, tmp_path, suffix):
    out = tmp_path / f"plan{suffix}"
    r = runner.invoke(app, ["bench", "-p", str(tiny_preset), "--dry-run", "-o", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)["planned"]
    if suffix == ".json":
        assert json.loads(out.read_text())["planned"] == printed
    else:
        lines = out.read_text().splitlines()
        assert lines[0].startswith("case_id,") and len(lines) == 1 + len(printed) == 25


def test_a_plot_that_fails_to_write_leaves_no_file(tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    def full_disk(self, name, **kw):
        with open(name, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    new = write(tmp_path / "new.json", results_doc(BASE))
    code, out, err = via_main(monkeypatch, capsys, ["bench", "--from", new, "--plot", str(tmp_path / "p.png")])
    assert code == 1 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json"]
