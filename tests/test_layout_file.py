"""Reading layouts from files: what --save writes reads back exactly; bad files are one line."""
import numpy as np
import pytest
import torch

from sparsecli.layouts.files import load_layout, read_layout_file, save_layout, sidecar


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
        (lambda p: torch.save({"weights": torch.zeros(2, 2)}, p / "x.pt"), "holds a dict without a 'layout' entry (keys: weights)"),
        (lambda p: torch.save([torch.zeros(2, 2)], p / "x.pt"), "holds a list, not a tensor"),
        (lambda p: (p / "x.pt").write_bytes(b"not a zip"), "cannot read it as a .pt layout"),
        (lambda p: (p / "x.npy").write_bytes(b"\x93NUMPY garbage"), "cannot read it as a .npy layout"),
        (lambda p: None, "no such file"),
        (lambda p: (p / "x.npy").mkdir(), "is a directory"),
        (lambda p: (p / "x.csv").write_text("0,1"), ".pt, .npy or .npz"),
        (lambda p: (p / "x.npy").write_text("0,1\n1,0\n"), "not a valid .npy file (no NumPy header)"),
        (lambda p: (p / "x.npz").write_text("0,1\n1,0\n"), "not a valid .npz file (not a zip archive)"),
        (lambda p: torch.save({"layout": torch.eye(2), "attention": "causal"}, p / "x.pt"),
         "records attention 'causal'; expected one of unidirectional, bidirectional"),
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


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".npz"])
@pytest.mark.parametrize("attention", ["unidirectional", "bidirectional"])
def test_a_saved_layout_keeps_its_attention_mode(tmp_path, suffix, attention):
    lay, path = _layout(), tmp_path / f"l{suffix}"
    save_layout(path, lay, attention)
    got = read_layout_file(path)
    assert torch.equal(got.layout, lay) and got.attention == attention
    assert sidecar(path).exists() == (suffix == ".npy")


def test_files_without_a_mode_say_none(tmp_path):
    lay = _layout()
    torch.save(lay, tmp_path / "a.pt")
    np.save(tmp_path / "a.npy", lay.numpy())
    np.savez(tmp_path / "a.npz", lay.numpy())
    for name in ("a.pt", "a.npy", "a.npz"):
        got = read_layout_file(tmp_path / name)
        assert torch.equal(got.layout, lay) and got.attention is None


def test_a_broken_sidecar_is_one_line(tmp_path):
    path = tmp_path / "l.npy"
    save_layout(path, _layout(), "unidirectional")
    sidecar(path).write_text("{not json")
    with pytest.raises(ValueError) as info:
        load_layout(path)
    assert str(info.value).startswith(f"{sidecar(path)}: cannot read the layout's attention mode") and "\n" not in str(info.value)
