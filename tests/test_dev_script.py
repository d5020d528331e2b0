"""`./dev` shows what it is doing while it builds the environment, on stderr, and the README says
how long the first run takes.

The first run installs torch and the pinned dependencies for about two minutes; with
``pip install -q`` it printed one line and then nothing, so a new user could not tell a slow
download from a hang. The script runs here against a stand-in Python (no network, no real venv).
"""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Stands in for python3: `-m venv DIR` makes DIR/bin/python (this script again), `-c 'import
# torch'` says no torch, the stdin probe prints nothing, and pip prints what a real install
# prints, unless told to be quiet.
FAKE_PYTHON = r"""#!/usr/bin/env bash
case "$1" in
  -m) if [ "$2" = venv ]; then
        dir=${@: -1}; mkdir -p "$dir/bin"; cp "$0" "$dir/bin/python"
        echo "include-system-site-packages = false" > "$dir/pyvenv.cfg"; exit 0
      fi
      shift 2
      for a in "$@"; do [ "$a" = -q ] && exit 0; done
      echo "Collecting torch==2.13.0"
      echo "  Downloading torch-2.13.0-cp311-none-linux_x86_64.whl (190 MB)"
      echo "Requirement already satisfied: filelock in ./x (3.20.0)"
      echo "Installing collected packages: torch, sparsecli"
      echo "Successfully installed sparsecli-0.1.0 torch-2.13.0"
      exit 0 ;;
  -c) exit 1 ;;
  -)  cat > /dev/null; exit 0 ;;
esac
exit 0
"""


@pytest.fixture
def fake_python(tmp_path):
    if shutil.which("bash") is None or sys.platform == "win32":
        pytest.skip("needs bash: ./dev is a bash script (not run on Windows)")
    path = tmp_path / "python3"
    path.write_text(FAKE_PYTHON)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_first_run_shows_progress_on_stderr_and_keeps_stdout_clean(fake_python, tmp_path):
    env = dict(os.environ, PYTHON=str(fake_python), SPARSECLI_VENV=str(tmp_path / "venv"))
    r = subprocess.run([str(ROOT / "dev"), "true"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # `./dev sparsecli ... --format json | jq` reads only the command's output
    err = r.stderr
    assert "about 2 minutes" in err  # the first run says how long it takes
    for step in ("Collecting torch==2.13.0", "Installing collected packages", "Successfully installed"):
        assert step in err, f"./dev hides pip's progress ({step!r}):\n{err}"
    assert "Requirement already satisfied" not in err  # noise, one line per installed package

    # The second run finds the environment built and says nothing at all.
    again = subprocess.run([str(ROOT / "dev"), "true"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""


def test_readme_says_how_long_the_first_run_takes():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "about 2 minutes" in readme
