"""The measurement scripts: named by what they measure, imported in one direction.

``scripts/`` holds standalone programs run on the GPU machine; this checks their shape on any
machine: every script's imports of its siblings form no cycle (shared pieces live in
``attention_cases.py``), no file, flag or function carries an issue number, and each Python
script at least parses its ``--help`` where it has one.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
ISSUE_NUMBER = re.compile(r"issue[-_ ]?\d+", re.IGNORECASE)


def _sibling_imports(path: Path) -> set[str]:
    names = {p.stem for p in SCRIPTS.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return (found & names) - {path.stem}


def test_scripts_import_each_other_in_one_direction():
    graph = {p.stem: _sibling_imports(p) for p in SCRIPTS.glob("*.py")}

    def visit(node, stack):
        assert node not in stack, f"import cycle among scripts: {' -> '.join(stack + [node])}"
        for nxt in graph[node]:
            visit(nxt, stack + [node])

    for node in graph:
        visit(node, [])
    assert graph["attention_cases"] == set(), "the shared module imports no other script"


def test_no_file_flag_or_function_names_an_issue_number():
    files = [p for d in ("scripts", "benchmarks") for p in (ROOT / d).rglob("*") if p.is_file()]
    assert not [p.name for p in files if ISSUE_NUMBER.search(p.name)]
    for p in SCRIPTS.iterdir():
        text = p.read_text()
        flags = re.findall(r"--[a-z][a-z0-9-]+", text)
        defs = re.findall(r"def (\w+)", text)
        assert not [n for n in flags + defs if ISSUE_NUMBER.search(n)], p.name


@pytest.mark.parametrize("name", ["bench_attention", "bench_features", "tune_tiles", "hopper_check",
                                  "compile_sm90"])
def test_script_help_runs(name):
    proc = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
