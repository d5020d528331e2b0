"""Reading layouts from files: what --save writes reads back exactly; bad files are one line."""
import numpy as np
import pytest
import torch

from sparsecli.layouts.files import load_layout


def _layout():
    return (torch.rand(3, 5, 5) < 0.4).long()


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".npz", ".NPY"])
def test_round_trip(tmp_path, suffix):
    lay = _layout()
    path = tmp_path / f"l{suffix}"
    if suffix == ".pt":
        torch.save(lay, path)
    elif suffix == ".npz":
        np.savez(path, layout=lay.numpy())
    else:
        with open(path, "wb") as f:
            np.save(f, lay.numpy())
    got = load_layout(path)
    assert got.dtype == torch.int64 and torch.equal(got, lay)


def test_two_dimensional_bool_and_float_layouts_are_one_head(tmp_path):
    np.save(tmp_path / "b.npy", np.eye(4, dtype=bool))
    np.save(tmp_path / "f.npy", np.eye(4, dtype=np.float32))
    for name in ("b.npy", "f.npy"):
        got = load_layout(tmp_path / name)
        assert got.shape == (1, 4, 4) and torch.equal(got[0], torch.eye(4, dtype=torch.int64))


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: np.save(p / "x.npy", np.full((2, 3, 3), 2)), "holds 2 at (0, 0, 0); a layout holds only 0 and 1"),
        (lambda p: np.save(p / "x.npy", np.full((3, 3), 0.5)), "holds 0.5"),
        (lambda p: np.save(p / "x.npy", np.array([np.nan, 1.0]).reshape(1, 1, 2)), "square"),
        (lambda p: np.save(p / "x.npy", np.full((2, 2), np.nan)), "not 0 or 1"),
        (lambda p: np.save(p / "x.npy", np.zeros((2, 3, 4))), "3 query blocks and 4 key blocks"),
        (lambda p: np.save(p / "x.npy", np.zeros((1, 2, 3, 3))), "shape (1, 2, 3, 3)"),
        (lambda p: np.save(p / "x.npy", np.zeros(5)), "shape (5,)"),
        (lambda p: np.save(p / "x.npy", np.zeros((0, 3, 3))), "at least one head"),
        (lambda p: np.save(p / "x.npy", np.array(["a", "b"])), "holds <U1 values"),
        (lambda p: np.savez(p / "x.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2))), "holds 2 arrays (a, b)"),
        (lambda p: torch.save({"layout": torch.zeros(2, 2)}, p / "x.pt"), "holds a dict, not a tensor"),
        (lambda p: (p / "x.pt").write_bytes(b"not a zip"), "cannot read it as a .pt layout"),
        (lambda p: (p / "x.npy").write_bytes(b"\x93NUMPY garbage"), "cannot read it as a .npy layout"),
        (lambda p: None, "no such file"),
        (lambda p: (p / "x.npy").mkdir(), "is a directory"),
        (lambda p: (p / "x.csv").write_text("0,1"), ".pt, .npy or .npz"),
    ],
)
def test_bad_files_are_one_line_value_errors(tmp_path, make, fragment):
    make(tmp_path)
    path = next((p for p in tmp_path.iterdir()), tmp_path / "x.npy")
    with pytest.raises(ValueError) as info:
        load_layout(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert fragment in msg
