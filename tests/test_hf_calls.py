"""How transformers calls BertSparseSelfAttention, release by release.

The installed transformers runs for real through a tiny model; every other release's convention
is reproduced exactly as its ``BertAttention.forward`` calls ``self.self`` (read from its source),
so 4.x and 5.x are both covered whichever is installed.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from sparsecli import BertSparseSelfAttention, DenseSparsityConfig
from sparsecli.modules import bert

transformers = pytest.importorskip("transformers")
from packaging.version import Version  # noqa: E402  (a dependency of transformers)

from tests.hf_models import HEADS, assert_runs_match, batch, run, sparse_copy, tiny  # noqa: E402

INSTALLED = Version(transformers.__version__)
B, L, HIDDEN = 2, 40, 32


def call_4_40(attn, x, mask, cache=None, output_attentions=False):
    """4.40-4.53: everything positional (past_key_value a (key, value) tuple)."""
    return attn(x, mask, None, None, None, cache, output_attentions)


def call_4_57(attn, x, mask, cache=None, output_attentions=False):
    """4.57: keywords, the cache as past_key_values, cache_position None outside generate."""
    return attn(x, attention_mask=mask, head_mask=None, encoder_hidden_states=None, past_key_values=cache,
                output_attentions=output_attentions, cache_position=None)


def call_5_0(attn, x, mask, cache=None, output_attentions=False):
    """5.0-5.23: past_key_values, cache_position always set, TransformersKwargs (position_ids) passed on."""
    extra = {"output_attentions": True} if output_attentions else {}
    return attn(x, encoder_hidden_states=None, attention_mask=mask, past_key_values=cache,
                cache_position=torch.arange(x.shape[1]), position_ids=None, **extra)


def call_5_24(attn, x, mask, cache=None, output_attentions=False):
    """5.24+: the cache renamed to ``cache`` (past_key_values deprecated until 5.40)."""
    extra = {"output_attentions": True} if output_attentions else {}
    return attn(x, encoder_hidden_states=None, attention_mask=mask, cache=cache, position_ids=None, **extra)


CONVENTIONS = [call_4_40, call_4_57, call_5_0, call_5_24]


def a_cache(call):
    """The cache object each release hands a decoding step (4.x before 4.57: a tuple of tensors)."""
    if call is call_4_40:
        return torch.zeros(B, HEADS, 3, HIDDEN // HEADS), torch.zeros(B, HEADS, 3, HIDDEN // HEADS)
    return transformers.DynamicCache()


@pytest.fixture
def attn():
    return BertSparseSelfAttention(tiny().config, DenseSparsityConfig(num_heads=HEADS))


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which arguments already warned, and record every warning."""
    monkeypatch.setattr(bert, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(B, L, dtype=torch.long)
    keep[1, 31:] = 0
    return torch.randn(B, L, HIDDEN, generator=g), keep


@pytest.mark.parametrize("call", CONVENTIONS, ids=lambda c: c.__name__)
def test_every_release_convention_computes_the_plain_call(attn, call, fresh_warnings):
    x, keep = inputs()
    want, _ = attn(x, keep)
    got, weights = call(attn, x, keep)
    assert weights is None
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    warned = sorted(str(w.message).split(":")[0] for w in fresh_warnings)
    assert warned == (["BertSparseSelfAttention ignores cache_position"] if call is call_5_0 else [])


@pytest.mark.parametrize("call", CONVENTIONS, ids=lambda c: c.__name__)
def test_a_cache_is_refused_in_every_convention(attn, call):
    x, keep = inputs()
    with pytest.raises(ValueError, match=r"key/value cache yet .*bottom-right-causal.*use_cache=False"):
        call(attn, x, keep, cache=a_cache(call))


@pytest.mark.parametrize("name", ["cache", "past_key_values", "past_key_value"])
def test_a_cache_is_refused_under_every_keyword(attn, name):
    x, keep = inputs()
    with pytest.raises(ValueError, match="use_cache=False"):
        attn(x, keep, **{name: transformers.DynamicCache()})
    attn(x, keep, **{name: None})  # no cache: fine


@pytest.mark.parametrize("call", CONVENTIONS, ids=lambda c: c.__name__)
def test_output_attentions_is_refused_in_every_convention(attn, call):
    x, keep = inputs()
    with pytest.raises(ValueError, match="output_attentions=False"):
        call(attn, x, keep, output_attentions=True)


@pytest.mark.parametrize("kwargs,match", [
    ({"cu_seq_lens_q": torch.tensor([0, 20, 40])}, "packed sequences"),
    ({"seq_idx": torch.zeros(1, 2 * L, dtype=torch.int32)}, "packed sequences"),
    ({"max_length_k": 20}, "packed sequences"),
    ({"head_mask": torch.ones(HEADS)}, "head_mask"),
    ({"encoder_hidden_states": torch.zeros(B, 5, HIDDEN)}, "cross-attention"),
    ({"is_causal": True}, "causal=True"),  # the layer is bidirectional
    ({"sliding_window": 16}, "does not know the argument 'sliding_window'"),
])
def test_arguments_that_would_change_the_result_raise(attn, kwargs, match):
    x, keep = inputs()
    with pytest.raises(ValueError, match=match):
        attn(x, keep, **kwargs)


def test_arguments_the_layer_honours_pass_without_a_word(attn, fresh_warnings):
    x, keep = inputs()
    want, _ = attn(x, keep)
    for kwargs in ({"is_causal": False}, {"output_attentions": False}, {"sliding_window": None},
                   {"position_ids": None, "cu_seq_lens_q": None}):
        torch.testing.assert_close(attn(x, keep, **kwargs)[0], want, atol=0, rtol=0)
    assert not fresh_warnings
    with pytest.raises(ValueError, match="at most 5 positional"):
        attn(x, keep, None, None, None, None, False, None)
    with pytest.raises(ValueError, match="head_mask both by position and by keyword"):
        attn(x, keep, None, head_mask=None)


def test_harmless_arguments_warn_once_each(attn, fresh_warnings):
    x, keep = inputs()
    want, _ = attn(x, keep)
    harmless = {"position_ids": torch.arange(L)[None] + 3, "cache_position": torch.arange(L),
                "output_hidden_states": True, "num_items_in_batch": torch.tensor(7)}
    for _ in range(3):
        torch.testing.assert_close(attn(x, keep, **harmless)[0], want, atol=0, rtol=0)
    messages = [str(w.message) for w in fresh_warnings]
    assert len(messages) == len(harmless), messages
    for name, message in zip(harmless, messages):
        assert message.startswith(f"BertSparseSelfAttention ignores {name}: ")


# -- the installed transformers, for real ---------------------------------------------------

def test_installed_transformers_decoder_with_a_cache_is_refused():
    model = tiny(is_decoder=True)
    sparse = sparse_copy(model, DenseSparsityConfig(num_heads=HEADS))
    ids, mask = batch(model, 48, pad=5)
    if INSTALLED >= Version("4.57"):  # a cache object exists from the first step on
        with pytest.raises(ValueError, match="use_cache=False"):
            sparse(ids, attention_mask=mask)
    else:  # before 4.57 the first step passes no cache; the second fails inside transformers
        assert sparse(ids, attention_mask=mask).past_key_values is not None
    assert_runs_match(run(sparse, ids, mask, use_cache=False), run(model, ids, mask, use_cache=False))


def test_installed_transformers_output_attentions_is_refused():
    model = tiny()
    sparse = sparse_copy(model, DenseSparsityConfig(num_heads=HEADS))
    ids, mask = batch(model, 40, pad=7)
    with pytest.raises(ValueError, match="output_attentions=False"):
        sparse(ids, attention_mask=mask, output_attentions=True)


def test_installed_transformers_position_ids_act_in_the_embeddings(fresh_warnings):
    model = tiny()
    sparse = sparse_copy(model, DenseSparsityConfig(num_heads=HEADS))
    ids, mask = batch(model, 40, pad=7)
    pos = torch.arange(40).expand(2, 40) + 5  # not the default: the result depends on them
    assert_runs_match(run(sparse, ids, mask, position_ids=pos), run(model, ids, mask, position_ids=pos))
    # 5.x hands position_ids down to self-attention as well (4.x does not): one warning, not one per layer.
    want = ["position_ids"] if INSTALLED.major >= 5 else []
    assert [str(w.message).split(":")[0].split()[-1] for w in fresh_warnings
            if "BertSparseSelfAttention" in str(w.message)] == want
