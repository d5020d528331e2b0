"""The wheel maps kernels/ and presets/ into sparsecli and ships the YAML presets."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_built_wheel_layout_and_bundled_presets(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("sparsecli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "kernels" not in tops and "presets" not in tops  # both names are taken on PyPI
    assert "sparsecli/kernels/attention.py" in names or "sparsecli/kernels/lut.py" in names
    assert "sparsecli/presets/fixed.yaml" in names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import sparsecli.preset_loader as p, sparsecli.kernels.lut as lut; "
            "assert p.__file__.startswith(%r), p.__file__; "
            "print(p.bundled_names(), p.load_preset('fixed').sparsity.mode)") % str(target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "'sliding_window'" in out.stdout and out.stdout.strip().endswith("fixed")
