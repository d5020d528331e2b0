"""The wheel maps kernels/ and presets/ into sparsecli and ships exactly the sources, presets and model configs."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"sparsecli": "sparsecli", "kernels": "sparsecli/kernels", "presets": "sparsecli/presets"}


def _copy_sources(dest: Path) -> set[str]:
    """Copy what the wheel is built from (no build/ or egg-info leftovers); return the expected files."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    expected = set()
    for src, installed in MAPPED.items():
        shutil.copytree(ROOT / src, dest / src, ignore=skip)
        for f in (dest / src).rglob("*"):
            if f.suffix in (".py", ".yaml", ".json"):
                expected.add(f"{installed}/{f.relative_to(dest / src).as_posix()}")
    return expected


def test_built_wheel_layout_and_bundled_presets(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    expected = _copy_sources(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("sparsecli-*.whl"))
    names = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith((".py", ".yaml", ".json"))}
    assert names == expected  # nothing missing, nothing stale, no top-level kernels/ or presets/

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import sparsecli.layouts.presets as p, sparsecli.kernels.lut as lut; "
            "assert p.__file__.startswith(%r), p.__file__; "
            "print(p.bundled_names(), p.load_preset('fixed').sparsity.mode)") % str(target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "'sliding_window'" in out.stdout and out.stdout.strip().endswith("fixed")
