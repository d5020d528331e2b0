"""BertSparseSelfAttention and SparseAttentionUtils on tiny HF BERT/RoBERTa built from configs.

CPU tier: equivalence with the original models (outputs and gradients), the utilities, and the
optional-dependency error. GPU tier (``-m gpu``): the equivalences through the CUDA kernels
(both backends) in fp16 and bf16, held to the error of HF's own model in that dtype.
"""
from __future__ import annotations

import copy
import random
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sparsecli import (BertSparseSelfAttention, BigBirdSparsityConfig, DenseSparsityConfig, FixedSparsityConfig,
                       SparseAttentionUtils)
from sparsecli.kernels import token_mask

transformers = pytest.importorskip("transformers")
from transformers import BertForMaskedLM  # noqa: E402

from tests.hf_models import (HEADS, POSITIONS, assert_runs_match, batch, run, sparse_copy,  # noqa: E402
                             tiny)

U = SparseAttentionUtils


def layout_mask(model, L, pad_keep, dtype=torch.float32):
    """The dense model's equivalent additive (B, H, L, L) mask: the layout's tokens and the padding."""
    attn = model.encoder.layer[0].attention.self.sparse_self_attention
    keep = token_mask(attn.get_layout(L), attn.block, device=pad_keep.device)[None] & pad_keep.bool()[:, None, None, :]
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def sparse_fixed():
    return FixedSparsityConfig(num_heads=HEADS, num_local_blocks=2, different_layout_per_head=True,
                               num_different_global_patterns=2)


# -- equivalence -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("L,pad", [(48, 0), (48, 11), (40, 0), (40, 7)])
def test_dense_config_matches_original(kind, impl, L, pad):
    model = tiny(kind, impl)
    sparse = sparse_copy(model, DenseSparsityConfig(num_heads=HEADS))
    ids, mask = batch(model, L, pad)
    assert_runs_match(run(sparse, ids, mask), run(model, ids, mask))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_sparse_config_matches_dense_model_with_token_mask(kind):
    model = tiny(kind)
    sparse = sparse_copy(model, sparse_fixed())
    ids, mask = batch(model, POSITIONS, pad=8)
    want = run(model, ids, layout_mask(sparse, POSITIONS, mask))
    assert_runs_match(run(sparse, ids, mask), want)
    assert not torch.allclose(want[0], run(model, ids, mask)[0])  # the layout does drop tokens


def test_decoder_stays_causal():
    model = tiny(is_decoder=True)
    sparse = sparse_copy(model, DenseSparsityConfig(num_heads=HEADS))
    assert sparse.encoder.layer[0].attention.self.sparse_self_attention.causal
    ids, mask = batch(model, 48, pad=5)
    for m in (None, mask):
        assert_runs_match(run(sparse, ids, m, use_cache=False), run(model, ids, m, use_cache=False))
    # With a cache (use_cache left on): tests/test_hf_calls.py, for every transformers release.


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_pad_run_unpad_matches_unpadded_original(kind):
    model = tiny(kind)
    sparse = sparse_copy(model, DenseSparsityConfig(num_heads=HEADS))
    ids, mask = batch(model, 40)
    want = model(ids).last_hidden_state
    pad_len, ids_p, mask_p, types_p, pos_p, emb_p = U.pad_to_block_size(
        16, ids, None, None, None, None, model.config.pad_token_id, model.embeddings)
    assert pad_len == 8 and ids_p.shape == (2, 48) and types_p is pos_p is emb_p is None
    got = U.unpad_sequence_output(pad_len, sparse(ids_p, attention_mask=mask_p).last_hidden_state)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_pad_run_unpad_with_embeddings_and_positions():
    model = tiny()
    sparse = sparse_copy(model, DenseSparsityConfig(num_heads=HEADS))
    ids, _ = batch(model, 40)
    embeds = model.embeddings.word_embeddings(ids).detach()
    pos = torch.arange(40).expand(2, 40)
    types = torch.ones(2, 40, dtype=torch.long)
    want = model(inputs_embeds=embeds, position_ids=pos, token_type_ids=types).last_hidden_state
    pad_len, _, mask_p, types_p, pos_p, emb_p = U.pad_to_block_size(16, None, None, types, pos, embeds, 0,
                                                                   model.embeddings)
    assert torch.equal(pos_p[:, 40:], torch.arange(40, 48).expand(2, 8))
    out = sparse(inputs_embeds=emb_p, attention_mask=mask_p, token_type_ids=types_p, position_ids=pos_p)
    torch.testing.assert_close(U.unpad_sequence_output(pad_len, out.last_hidden_state), want, atol=2e-5, rtol=1e-4)


def test_training_steps_lower_the_loss():
    model = tiny(cls=BertForMaskedLM)
    U.extend_position_embedding(model, 256)
    U.replace_model_self_attention_with_sparse_self_attention(model, 256, sparse_fixed())
    model.train()
    ids, _ = batch(model, 256)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_state_dict_round_trip_keeps_per_layer_layouts():
    model = tiny()
    cfg = BigBirdSparsityConfig(num_heads=HEADS, num_random_blocks=2, different_layout_per_head=True)
    random.seed(0)
    a = sparse_copy(model, cfg)
    random.seed(1)
    b = sparse_copy(model, cfg)

    def layouts(m):
        return [layer.attention.self.sparse_self_attention.master_layout for layer in m.encoder.layer]

    assert not torch.equal(layouts(a)[0], layouts(a)[1])  # each layer draws and uses its own layout
    assert not torch.equal(layouts(a)[0], layouts(b)[0])
    ids, mask = batch(model, POSITIONS, pad=8)
    b(ids, attention_mask=mask)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(layouts(a), layouts(b)))
    torch.testing.assert_close(b(ids, attention_mask=mask).last_hidden_state,
                               a(ids, attention_mask=mask).last_hidden_state, atol=0, rtol=0)


# -- BertSparseSelfAttention directly ----------------------------------------------------

def test_self_attention_accepts_every_mask_form_and_legacy_calls():
    model = tiny()
    attn = BertSparseSelfAttention(model.config, DenseSparsityConfig(num_heads=HEADS))
    x = torch.randn(2, 40, 32)
    keep = torch.ones(2, 40, dtype=torch.bool)
    keep[0, 30:] = False
    additive = torch.zeros(2, 1, 1, 40).masked_fill(~keep[:, None, None], torch.finfo(torch.float32).min)
    want, weights = attn(x, keep.long())
    assert weights is None and want.shape == (2, 40, 32)
    for mask in (keep, additive, additive.expand(2, 1, 40, 40), keep[:, None, None].expand(2, 1, 40, 40)):
        torch.testing.assert_close(attn(x, mask)[0], want)
    torch.testing.assert_close(attn(x, additive, None, None, None, None, False)[0], want)  # transformers 4.x order
    with pytest.raises(ValueError, match="cross-attention"):
        attn(x, None, None, x)
    with pytest.raises(ValueError, match="head_mask"):
        attn(x, head_mask=torch.ones(HEADS))


def test_self_attention_config_errors():
    config = tiny().config
    with pytest.raises(ValueError, match="num_heads is 4 but the model has 2"):
        BertSparseSelfAttention(config, FixedSparsityConfig(num_heads=4))
    bad = SimpleNamespace(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match=r"hidden size \(30\)"):
        BertSparseSelfAttention(bad)
    assert BertSparseSelfAttention(config).sparse_self_attention.max_seq_length == 2048


# -- the utilities -------------------------------------------------------------------------

def test_replace_shares_weights_and_handles_heads():
    model = tiny(cls=BertForMaskedLM)
    before = [layer.attention.self for layer in model.bert.encoder.layer]
    assert U.replace_model_self_attention_with_sparse_self_attention(model, 4096) is model
    for old, layer in zip(before, model.bert.encoder.layer):
        new = layer.attention.self
        assert isinstance(new, BertSparseSelfAttention)
        assert new.query is old.query and new.key is old.key and new.value is old.value
        assert new.sparse_self_attention.max_seq_length == 4096
        assert isinstance(new.sparse_self_attention.sparsity_config, FixedSparsityConfig)
    with pytest.raises(ValueError, match='only supports "bert" & "roberta"'):
        U.replace_model_self_attention_with_sparse_self_attention(torch.nn.Linear(2, 2), 4096)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_extend_position_embedding(kind):
    model = tiny(kind)
    offset = 2 if kind == "roberta" else 0
    old = model.embeddings.position_embeddings.weight.detach().clone()
    assert U.extend_position_embedding(model, 300) is model
    emb = model.embeddings
    rows = 300 + offset
    new = emb.position_embeddings.weight.detach()
    assert new.shape == (rows, 32) and emb.position_embeddings.num_embeddings == rows
    assert torch.equal(new[:offset], old[:offset])
    tiled = old[offset:].repeat(3, 1)[:300]
    assert torch.equal(new[offset:], tiled)
    assert torch.equal(emb.position_ids, torch.arange(rows)[None]) and emb.token_type_ids.shape == (1, rows)
    assert model.config.max_position_embeddings == rows
    ids, mask = batch(model, 300, pad=20)
    sparse = sparse_copy(model, sparse_fixed(), max_position=300)
    assert sparse(ids, attention_mask=mask).last_hidden_state.isfinite().all()
    with pytest.raises(ValueError, match="smaller than"):
        U.extend_position_embedding(model, 100)


def test_update_tokenizer_model_max_length():
    tok = SimpleNamespace(model_max_length=512, init_kwargs={})
    assert U.update_tokenizer_model_max_length(tok, 4096) is tok
    assert tok.model_max_length == 4096 and tok.init_kwargs["model_max_length"] == 4096


def test_pad_to_block_size_keeps_mask_conventions():
    ids = torch.arange(2 * 20).reshape(2, 20)
    out = U.pad_to_block_size(16, ids, None, None, None, None, 0, None)
    assert out[0] == 12 and out[2].tolist() == [[1] * 20 + [0] * 12] * 2
    assert out[3] is out[4] is out[5] is None
    keep = torch.ones(2, 1, 1, 20, dtype=torch.bool)
    assert not U.pad_to_block_size(16, ids, keep, None, None, None, 0, None)[2][..., 20:].any()
    additive = torch.zeros(2, 1, 1, 20, dtype=torch.float16)
    padded = U.pad_to_block_size(16, ids, additive, None, None, None, 0, None)[2]
    assert (padded[..., 20:] == torch.finfo(torch.float16).min).all() and padded.dtype == torch.float16
    same = U.pad_to_block_size(4, ids, None, None, None, None, 0, None)
    assert same[0] == 0 and same[1] is ids and same[2] is None
    assert torch.equal(U.unpad_sequence_output(0, ids), ids)
    with pytest.raises(ValueError, match="input_ids or inputs_embeds"):
        U.pad_to_block_size(16)


def test_without_transformers_the_utilities_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise
    for call in (lambda: U.extend_position_embedding(None, 10),
                 lambda: U.update_tokenizer_model_max_length(None, 10),
                 lambda: U.replace_model_self_attention_with_sparse_self_attention(None, 10),
                 lambda: U.replace_self_attention_layer_with_sparse_self_attention_layer(None, [])):
        with pytest.raises(ImportError, match=r"pip install transformers \(or pip install '\.\[hf\]'"):
            call()
    code = ("import sys; sys.modules['transformers'] = None; import sparsecli; "
            "sparsecli.SparseAttentionUtils; sparsecli.BertSparseSelfAttention; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


def test_example_script_runs(monkeypatch, capsys):
    script = Path(__file__).resolve().parents[1] / "examples" / "bert_long_sequence.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--seq-len", "200", "--device", "cpu"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "position table: 4096 rows" in out and "200 tokens (+8 padding)" in out


# -- GPU tier ------------------------------------------------------------------------------

GPU_FLOOR = {torch.float16: 2e-2, torch.bfloat16: 1e-1}


def gpu_case(model, sparse, dtype, L, pad, dense_mask=None):
    """Max errors of (sparse in dtype, HF in dtype) against HF in fp32: outputs, then gradients."""
    ids, mask = batch(model, L, pad, device="cuda")

    def mask_in(dt):
        return mask if dense_mask is None else dense_mask(mask, dt)

    ref = run(model.cuda(), ids, mask_in(torch.float32))
    low = run(copy.deepcopy(model).to(dtype), ids, mask_in(dtype))
    got = run(sparse.to("cuda", dtype), ids, mask)

    def err(a, b):
        # Gradients relative to the largest one: some are ~0 in exact math (the key bias), so a
        # per-parameter ratio would measure rounding noise.
        out = (a[0].float() - b[0].float()).abs().max().item()
        scale = max(g.abs().max().item() for g in b[1].values())
        grads = max((a[1][n].float() - b[1][n].float()).abs().max().item() for n in b[1]) / scale
        return out, grads

    return err(got, ref), err(low, ref)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["fused", "three_op"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("config", ["dense", "sparse"])
def test_gpu_equivalence(backend, dtype, kind, config):
    model = tiny(kind, "eager", hidden=128, heads=HEADS)  # head dim 64
    cfg = DenseSparsityConfig(num_heads=HEADS) if config == "dense" else sparse_fixed()
    sparse = sparse_copy(model, cfg, backend=backend)
    dense_mask = None if config == "dense" else (lambda m, dt: layout_mask(sparse, POSITIONS, m, dt))
    (out, grads), (hf_out, hf_grads) = gpu_case(model, sparse, dtype, POSITIONS, 8, dense_mask)
    floor = GPU_FLOOR[dtype]
    assert out <= max(2 * hf_out, floor), (out, hf_out)
    assert grads <= max(2 * hf_grads, floor), (grads, hf_grads)


def test_mask_reduction_is_memoized_per_tensor_and_version(monkeypatch):
    from sparsecli.modules import bert

    B, L = 2, 8
    keep = torch.ones(B, L, dtype=torch.bool)
    keep[0, 6:] = False
    full = keep[:, None, None].expand(B, 1, L, L).clone()  # materialized: the full compare runs
    calls = []
    real_all = torch.Tensor.all
    monkeypatch.setattr(torch.Tensor, "all", lambda self, *a, **k: calls.append(1) or real_all(self, *a, **k))
    first = bert.hf_mask_to_sparse(full, B, L)
    for _ in range(3):  # the next layers, same tensor: no new reduction
        again = bert.hf_mask_to_sparse(full, B, L)
        assert again[1] is None and torch.equal(again[0], first[0])
    assert len(calls) == 1 and torch.equal(first[0], keep) and first[1] is None
    full[1, 0, 3, 0] = False  # an in-place edit bumps the version: reduced again, now not padding-only
    kpm, rpe = bert.hf_mask_to_sparse(full, B, L)
    assert len(calls) == 2 and kpm is None and rpe.shape == (B, 1, L, L)
    assert bert.hf_mask_to_sparse(full, B, L, causal=True)[1] is not None and len(calls) == 3  # causal: own key
    # Broadcast over queries (stride 0, what HF's expand builds): no L x L compare at all.
    calls.clear()
    kpm, rpe = bert.hf_mask_to_sparse(keep[:, None, None].expand(B, 1, L, L), B, L)
    assert rpe is None and torch.equal(kpm, keep) and not calls
    with torch.inference_mode():  # no version counter: computed every time, still right
        inf = keep[:, None, None].expand(B, 2, L, L).clone()
        assert torch.equal(bert.hf_mask_to_sparse(inf, B, L)[0], keep)
