"""The README's headline image is what its quick-start command draws, and the README says so.

A reader runs the quick start and compares: a picture made by some other command (another block
size, per-head layouts) tells them their installation is wrong.
"""
import re
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from sparsecli.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
HEADLINE = "docs/bigbird.png"


def _quickstart_command() -> list[str]:
    """The arguments after `sparsecli` of the first `./dev sparsecli layout ... --plot` in the README."""
    m = re.search(r"\./dev sparsecli (layout [^\n#`]*--plot)\b", README)
    assert m, "the README's quick start runs no `./dev sparsecli layout ... --plot`"
    return m.group(1).split()


def test_readme_names_the_command_behind_the_headline_image():
    m = re.search(r"!\[[^\]]*\]\(" + re.escape(HEADLINE) + r"\)\s*\n+(.*?)\n\n", README, re.S)
    assert m, f"{HEADLINE} is not the README's image, or has no caption below it"
    caption = " ".join(m.group(1).split())
    assert "sparsecli " + " ".join(_quickstart_command()) in caption, caption


def test_headline_image_is_what_the_quickstart_command_draws(tmp_path):
    from matplotlib.image import imread

    png = tmp_path / "quickstart.png"
    r = CliRunner().invoke(app, [*_quickstart_command(), "-o", str(png)])
    assert r.exit_code == 0, r.output
    drawn, committed = imread(png), imread(ROOT / HEADLINE)
    assert drawn.shape == committed.shape, f"the quick start draws {drawn.shape}, {HEADLINE} is {committed.shape}"
    # Same picture up to font rendering of another matplotlib/freetype: nearly every pixel equal.
    differs = np.abs(drawn - committed).max(axis=-1) > 0.1
    assert differs.mean() < 0.01, f"{differs.mean():.1%} of the pixels differ"
