"""The peers on the CPU: Flex (Triton and FLASH backends) through to_block_mask, dense FA4, and
the rows a machine without flash-attn-4 gets."""
import sys
import types

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention, noop_mask

from sparsecli.bench import flex, providers
from sparsecli.kernels.reference import blocksparse_attention_reference

from .test_runner import run

torch.nn.attention.flex_attention._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True


def layout_and_inputs(S=256, block=32, H=2, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    layout = (torch.rand(H, S // block, S // block, generator=g) < 0.4).long()
    layout[:, range(S // block), range(S // block)] = 1
    q, k, v = (torch.randn(1, H, S, D, generator=g, dtype=torch.float64) for _ in range(3))
    return layout, q, k, v


@pytest.fixture
def eager_flex(monkeypatch):
    """The compiled Flex call replaced by eager flex_attention (compiling takes a minute on a CPU)."""
    calls = []

    def call(q, k, v, block_mask, sm_scale, backend):
        calls.append((backend, block_mask))
        return flex_attention(q, k, v, block_mask=block_mask, scale=sm_scale)

    monkeypatch.setattr(flex, "flex_attention_call", call)
    return calls


@pytest.fixture
def fake_fa4(monkeypatch):
    """A stand-in flash_attn.cute: dense attention on (B, S, H, D), returning (out, lse) like 4.0b."""
    seen = []

    def flash_attn_func(q, k, v, softmax_scale=None, causal=False):
        seen.append((q.shape, q.stride(-1)))
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=softmax_scale)
        return out.transpose(1, 2), None

    cute = types.ModuleType("flash_attn.cute")
    cute.flash_attn_func = flash_attn_func
    package = types.ModuleType("flash_attn")
    package.cute = cute
    monkeypatch.setitem(sys.modules, "flash_attn", package)
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    return seen


@pytest.mark.parametrize("provider, backend", [("flex", "TRITON"), ("flex-flash", "FLASH")])
@pytest.mark.parametrize("causal", [False, True])
def test_flex_providers_compute_the_layout_on_their_backend(eager_flex, fake_fa4, provider, backend, causal):
    layout, q, k, v = layout_and_inputs()
    fn = providers.setup(provider, providers.Ctx(layout, 32, causal, 0.25, 256, 16, torch.float64))
    out = fn(q, k, v)
    ref = blocksparse_attention_reference(q, k, v, layout, 32, causal=causal, sm_scale=0.25)
    assert (out - ref).abs().max() < 1e-10
    used_backend, mask = eager_flex[-1]
    assert used_backend == backend and mask.mask_mod is not noop_mask  # pytorch#188322
    assert int(mask.kv_num_blocks.sum() + mask.full_kv_num_blocks.sum()) <= 2 * 2 * 2  # only touched tiles


@pytest.mark.parametrize("causal", [False, True])
def test_fa4_provider_is_dense_attention_on_strided_views(fake_fa4, causal):
    layout, q, k, v = layout_and_inputs()
    fn = providers.setup("fa4", providers.Ctx(layout, 32, causal, 0.25, 256, 16, torch.bfloat16))
    out = fn(q, k, v)
    ref = blocksparse_attention_reference(q, k, v, torch.ones_like(layout[:1]), 32, causal=causal, sm_scale=0.25)
    assert out.shape == q.shape and (out - ref).abs().max() < 1e-10
    assert fake_fa4[-1] == ((1, 256, 2, 16), 1)  # (B, S, H, D) views, unit stride in D: no copies
    assert not providers.uses_layout("fa4") and providers.uses_layout("flex-flash")


@pytest.mark.parametrize("ctx_kw, match", [({"head_dim": 512}, "head dims up to 256"),
                                           ({"dtype": torch.float32}, "fp16 and bf16")])
def test_fa4_shapes_it_cannot_take_are_unsupported(fake_fa4, ctx_kw, match):
    ctx = providers.Ctx(torch.ones(1, 2, 2), 128, False, 0.1, 256, **{"head_dim": 64, "dtype": torch.bfloat16, **ctx_kw})
    with pytest.raises(ValueError, match=match) as e:
        providers.setup("fa4", ctx)
    assert providers.classify(e.value)[0] == "unsupported"


def hide_flash_attn(monkeypatch):
    for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
        monkeypatch.delitem(sys.modules, name)
    import importlib.abc

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "flash_attn" or name.startswith("flash_attn."):
                raise ModuleNotFoundError(f"No module named '{name}'", name=name)
            return None

    monkeypatch.setattr(sys, "meta_path", [Hide(), *sys.meta_path])


@pytest.mark.parametrize("provider", ["fa4", "flex-flash"])
def test_without_flash_attn_4_the_row_says_so(monkeypatch, provider):
    hide_flash_attn(monkeypatch)
    with pytest.raises(providers.Unavailable) as e:
        providers.setup(provider, providers.Ctx(torch.ones(1, 2, 2), 128, False, 0.1, 256, 64, torch.bfloat16))
    assert providers.classify(e.value) == ("unavailable", "flash-attn-4 not installed")


def test_a_sweep_without_flash_attn_4_goes_on(tiny_preset, monkeypatch):
    hide_flash_attn(monkeypatch)
    rows = run(tiny_preset, ("sparse", "fa4", "flex-flash", "sdpa-flash"), passes=("fwd",))
    for provider in ("fa4", "flex-flash"):
        assert rows[("fwd", provider)]["status"] == "unavailable"
        assert rows[("fwd", provider)]["reason"] == "flash-attn-4 not installed"
        assert rows[("fwd", provider)]["median_ms"] is None  # never timed
    assert rows[("fwd", "sparse")]["status"] == rows[("fwd", "sdpa-flash")]["status"] == "ok"


def test_the_legend_says_which_backend_each_flex_row_is(tmp_path):
    import io

    from rich.console import Console

    from sparsecli.bench.plots import results_figure
    from sparsecli.bench.tables import results_table

    from .conftest import results_doc

    doc = results_doc({"sparse": 1.0, "flex": 2.0, "flex-flash": 1.5, "sdpa-flash": 2.5})
    buf = io.StringIO()
    Console(file=buf, width=400).print(results_table(doc["results"], doc["env"]))
    assert "flex = FlexAttention, Triton backend; flex-flash = FlexAttention, FLASH backend" in buf.getvalue()
    labels = results_figure(doc).axes[0].get_legend_handles_labels()[1]
    assert "flex (FlexAttention, Triton backend)" in labels and "sparse" in labels
