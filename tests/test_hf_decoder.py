"""register_attention: HF decoders (and encoders) on a block layout, against an independent masked reference.

Every comparison is with ``tests/hf_decoder_models.register_reference``: transformers' own
causal/padding/cache-position mask ANDed with the layout as a token mask, float64 softmax.
Prompts are 70 tokens at block 16 (not whole blocks) and decoding runs across block boundaries,
so unaligned prefills and decode steps in the middle of a block row are both exercised.
"""
from __future__ import annotations

import copy

import pytest
import torch

import sparsecli
from sparsecli import (BigBirdSparsityConfig, CausalSlidingWindowSparsityConfig, DenseSparsityConfig,
                       register_attention)

transformers = pytest.importorskip("transformers")
from tests.hf_decoder_models import (LAYERS, cache_kw, generated, prompts, register_reference,  # noqa: E402
                                     tiny_decoder)

BLOCK, MAX_LEN, HEADS, PROMPT = 16, 256, 4, 70


def checkpointing(model):
    """Gradient checkpointing on (renamed activation checkpointing in transformers 5.24)."""
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    assert model.is_gradient_checkpointing


def window():
    return CausalSlidingWindowSparsityConfig(HEADS, block=BLOCK, num_window_blocks=2)


def bigbird():
    """Unidirectional BigBird, random blocks drawn per head."""
    return BigBirdSparsityConfig(HEADS, block=BLOCK, different_layout_per_head=True, num_random_blocks=1,
                                 num_sliding_window_blocks=3, num_global_blocks=1, attention="unidirectional")


LAYOUTS = {"window": window, "bigbird": bigbird}


def pair(kind, layout, name, seed=0):
    """(model on the sparse attention, the same weights on the reference) for ``layout``."""
    torch.manual_seed(seed)
    sparse = register_attention(f"sparse-{name}", layout, max_seq_length=MAX_LEN)
    lay = sparse.layout_for(None).layout
    register_reference(f"ref-{name}", lay, BLOCK)
    model = tiny_decoder(kind)
    model.set_attn_implementation(f"sparse-{name}")
    ref = copy.deepcopy(model)
    ref.set_attn_implementation(f"ref-{name}")
    return model, ref, lay


def test_layouts_are_sparse_and_per_head():
    torch.manual_seed(0)
    lay = register_attention("sparse-probe", bigbird(), max_seq_length=MAX_LEN).layout_for(None).layout
    assert lay.shape == (HEADS, MAX_LEN // BLOCK, MAX_LEN // BLOCK)
    assert not torch.equal(lay[0], lay[1])  # per-head random blocks
    assert lay.float().mean() < 0.5


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_prefill_with_padding_matches_the_reference(kind, layout):
    model, ref, _ = pair(kind, LAYOUTS[layout](), f"prefill-{kind}-{layout}")
    ids, mask = prompts(L=PROMPT, pad=5)
    with torch.no_grad():
        got, want = model(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(got[keep], want[keep], atol=1e-4, rtol=1e-4)
    # the layout matters: full causal attention gives other logits
    with torch.no_grad():
        dense = ref.__class__(ref.config).eval()
        dense.load_state_dict(ref.state_dict())
        dense.set_attn_implementation("sdpa")
        assert (dense(ids, attention_mask=mask).logits[keep] - want[keep]).abs().max() > 1e-3


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_generate_gives_the_references_tokens(layout, cache):
    model, ref, _ = pair("llama", LAYOUTS[layout](), f"gen-{layout}-{cache}")
    ids, mask = prompts(L=PROMPT, pad=5)
    kw = {"cache_implementation": "static"} if cache == "static" else {}
    tokens, logits = generated(model, ids, mask, new=14, **kw)
    ref_tokens, ref_logits = generated(ref, ids, mask, new=14, **kw)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)


def test_dense_layout_generates_what_sdpa_generates():
    model = tiny_decoder("llama")
    register_attention("sparse-dense", DenseSparsityConfig(HEADS, block=BLOCK), max_seq_length=MAX_LEN)
    sdpa = copy.deepcopy(model)
    model.set_attn_implementation("sparse-dense")
    ids, mask = prompts(L=PROMPT, pad=5)
    for kw in ({}, {"cache_implementation": "static"}):
        tokens, logits = generated(model, ids, mask, new=10, **kw)
        want, want_logits = generated(sdpa, ids, mask, new=10, **kw)
        assert torch.equal(tokens, want)
        torch.testing.assert_close(logits, want_logits, atol=1e-4, rtol=1e-4)


def test_decode_steps_follow_absolute_rows():
    """Prefill 33 tokens (one past a block), then single steps and a 5-token chunk, all vs the reference."""
    model, ref, _ = pair("llama", bigbird(), "steps")
    ids = prompts(B=2, L=60)[0]
    kw = cache_kw(model)
    caches = [transformers.DynamicCache(), transformers.DynamicCache()]
    with torch.no_grad():
        for start, end in ((0, 33), (33, 34), (34, 35), (35, 40), (40, 49), (49, 60)):
            got = model(ids[:, start:end], use_cache=True, **{kw: caches[0]}).logits
            want = ref(ids[:, start:end], use_cache=True, **{kw: caches[1]}).logits
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=f"tokens {start}:{end}")


def test_compiled_static_decode_matches_eager():
    """The device path (static cache, one query) traced by torch.compile with no graph break."""
    model, ref, _ = pair("llama", bigbird(), "compiled")
    ids = prompts(B=2, L=37)[0]
    kw = cache_kw(model)
    step = torch.compile(model, backend="eager", fullgraph=True)
    runs = []
    for forward, m in ((model, model), (step, model), (ref, ref)):
        cache = transformers.StaticCache(config=m.config, max_cache_len=64)
        with torch.no_grad():
            out = [m(ids[:, :33], use_cache=True, **{kw: cache}).logits[:, -1]]  # prefill: eager
            for t in range(33, 37):
                out.append(forward(ids[:, t:t + 1], use_cache=True, **{kw: cache}).logits[:, -1])
        runs.append(torch.stack(out, 1))
    torch.testing.assert_close(runs[1], runs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(runs[0], runs[2], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_training_gradients_match_with_checkpointing(layout):
    model, ref, _ = pair("llama", LAYOUTS[layout](), f"train-{layout}")
    ids, mask = prompts(L=PROMPT, pad=5)
    labels = ids.masked_fill(mask == 0, -100)
    grads = []
    for m in (model, ref):
        m.train()
        checkpointing(m)
        m.zero_grad(set_to_none=True)
        m(ids, attention_mask=mask, labels=labels).loss.backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[1].items():
        torch.testing.assert_close(grads[0][name], g, atol=1e-5 * max(1.0, g.abs().max().item()), rtol=1e-4,
                                   msg=name)


def test_bf16_autocast_forward_and_backward():
    """bf16 autocast (CPU): loss and gradients within bf16 error of the reference under the same autocast."""
    model, ref, _ = pair("llama", window(), "bf16")
    ids, mask = prompts(L=PROMPT, pad=5)
    labels = ids.masked_fill(mask == 0, -100)
    out = []
    for m in (model, ref):
        m.train()
        checkpointing(m)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = m(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        out.append((loss.detach().float(), m.model.embed_tokens.weight.grad.float()))
    (loss, grad), (ref_loss, ref_grad) = out
    assert abs(loss - ref_loss) < 2e-2 * abs(ref_loss)
    assert (grad - ref_grad).norm() < 0.05 * ref_grad.norm()


def test_per_layer_layouts():
    torch.manual_seed(0)
    specs = [window(), bigbird()]
    built = {}

    def layer_layout(i):
        built[i] = specs[i].make_layout(MAX_LEN)
        return built[i]

    sparse = register_attention("sparse-layers", layer_layout, block=BLOCK)
    model = tiny_decoder("llama")
    ref = copy.deepcopy(model)
    model.set_attn_implementation("sparse-layers")
    ids, mask = prompts(L=PROMPT, pad=5)
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
    assert sorted(built) == list(range(LAYERS))
    assert torch.equal(sparse.layout_for(1).layout, built[1].bool())
    register_reference("ref-layers", [built[i] for i in range(LAYERS)], BLOCK)
    ref.set_attn_implementation("ref-layers")
    with torch.no_grad():
        want = ref(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=1e-4)


def test_a_block_mask_and_its_file_run_as_the_layout(tmp_path):
    from torch.nn.attention.flex_attention import BlockMask

    torch.manual_seed(3)
    lay = ((torch.rand(HEADS, 2, 2) < 0.5) | torch.eye(2, dtype=torch.bool)).long()
    path = tmp_path / "mask.pt"
    full = sparsecli.to_block_mask(lay, 128)  # 128-blocks, not causal: every tile full or empty
    # torch.save needs a picklable mask_mod: the same tile lists with torch's noop_mask
    torch.save(BlockMask.from_kv_blocks(full.kv_num_blocks, full.kv_indices, full.full_kv_num_blocks,
                                        full.full_kv_indices, BLOCK_SIZE=128, seq_lengths=(256, 256)), path)
    register_attention("sparse-tensor", lay, block=128)
    register_attention("sparse-bm", full)
    register_attention("sparse-bm-file", str(path))
    register_attention("sparse-bm-causal", sparsecli.to_block_mask(lay, 128, causal=True))  # checked diagonal
    model = tiny_decoder("llama")
    ids = prompts(L=200)[0]
    logits = []
    for name in ("sparse-tensor", "sparse-bm", "sparse-bm-file", "sparse-bm-causal"):
        model.set_attn_implementation(name)
        with torch.no_grad():
            logits.append(model(ids).logits)
    for other in logits[1:]:
        assert torch.equal(logits[0], other)


def test_block_masks_with_per_token_tiles_are_refused(tmp_path):
    eye = torch.eye(8, dtype=torch.long)  # 32-blocks in 128-tiles: the diagonal tiles hold 4 of 16 blocks
    with pytest.raises(ValueError, match="partial tile .* not a causal diagonal"):
        register_attention("sparse-partial", sparsecli.to_block_mask(eye, 32))
    with pytest.raises(ValueError, match="partial tiles, which need its mask_mod"):
        register_attention("sparse-partial", sparsecli.to_block_mask(eye.roll(1, 1), 32))
    causal = sparsecli.to_block_mask(torch.ones(2, 2, dtype=torch.long), 128, causal=True)
    lists = (causal.kv_num_blocks, causal.kv_indices, causal.full_kv_num_blocks, causal.full_kv_indices)
    saved = {}
    for mod in (None, causal_mask_mod):  # torch's noop_mask (loaded as it is), a mask_mod of ours (not loaded)
        saved[mod] = tmp_path / f"{getattr(mod, '__name__', 'noop')}.pt"
        torch.save(causal.__class__.from_kv_blocks(*lists, BLOCK_SIZE=128, seq_lengths=(256, 256), mask_mod=mod),
                   saved[mod])
    with pytest.raises(ValueError, match="not a causal diagonal"):
        register_attention("sparse-file", saved[None])
    with pytest.raises(ValueError, match="cannot tell whether they are causal"):
        register_attention("sparse-file", saved[causal_mask_mod])
    layout, block = sparsecli.from_block_mask(sparsecli.modules.flex_mask.load_block_mask(saved[causal_mask_mod]),
                                              causal=True)
    assert block == 128 and torch.equal(layout, torch.ones(1, 2, 2, dtype=torch.long).tril())


def causal_mask_mod(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_encoders_through_the_interface(kind):
    from tests.hf_models import POSITIONS, batch, tiny

    torch.manual_seed(0)
    cfg = BigBirdSparsityConfig(2, block=BLOCK, different_layout_per_head=True, num_sliding_window_blocks=3)
    sparse = register_attention(f"sparse-{kind}", cfg, max_seq_length=POSITIONS)
    register_reference(f"ref-{kind}", sparse.layout_for(None).layout, BLOCK)
    model = tiny(kind, impl=f"sparse-{kind}")
    ref = copy.deepcopy(model)
    ref.set_attn_implementation(f"ref-{kind}")
    ids, mask = batch(model, 100, pad=7)
    outs = []
    for m in (model, ref):
        m.zero_grad(set_to_none=True)
        out = m(ids, attention_mask=mask).last_hidden_state
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        outs.append((out.detach(), m.embeddings.word_embeddings.weight.grad))
    keep = mask.bool()
    torch.testing.assert_close(outs[0][0][keep], outs[1][0][keep], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=1e-4, rtol=1e-3)


def test_what_it_refuses():
    model = tiny_decoder("llama")
    register_attention("sparse-short", window(), max_seq_length=64)
    model.set_attn_implementation("sparse-short")
    ids = prompts(L=80)[0]
    with torch.no_grad(), pytest.raises(ValueError, match="80 keys is longer than the layout's 64 tokens"):
        model(ids)
    with torch.no_grad(), pytest.raises(ValueError, match="static cache holds 96 tokens, longer than the layout's 64"):
        model(ids[:, :8], use_cache=True, **{cache_kw(model): transformers.StaticCache(config=model.config,
                                                                                      max_cache_len=96)})
    with torch.no_grad(), pytest.raises(ValueError, match="4-D mask made elsewhere"):
        model(ids[:, :8], attention_mask=torch.zeros(2, 1, 8, 8))
    packed = torch.arange(16).remainder(8)[None].expand(2, -1)  # two documents per row: packed sequences
    with torch.no_grad(), pytest.raises(ValueError, match="packed sequences"):
        model(ids[:, :16], position_ids=packed, use_cache=False)
    model.train()
    model.config.attention_dropout = 0.1
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.1
    with pytest.raises(ValueError, match="dropout=0.1 in training"):
        model(ids[:, :16])
    sparse = register_attention("sparse-direct", window(), max_seq_length=64)
    attn = model.model.layers[0].self_attn
    q, k = torch.randn(1, HEADS, 8, 16), torch.randn(1, 2, 8, 16)
    for kw in ({"softcap": 30.0}, {"s_aux": torch.zeros(HEADS)}, {"sliding_window": 32}, {"output_attentions": True},
               {"position_bias": torch.zeros(1, HEADS, 8, 8)}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            sparse.attention(attn, q, k, k, None, **kw)
    with pytest.raises(ValueError, match="3 heads; this layer has 4"):
        three = torch.stack([torch.ones(4, 4), torch.eye(4), torch.ones(4, 4).tril()])  # three distinct heads
        register_attention("sparse-heads", three, block=16).attention(attn.eval(), q, k, k, None)


def test_registration_errors():
    with pytest.raises(ValueError, match="needs max_seq_length"):
        register_attention("sparse-x", window())
    with pytest.raises(ValueError, match="needs block="):
        register_attention("sparse-x", torch.ones(4, 4))
    with pytest.raises(ValueError, match="transformers' own"):
        register_attention("sdpa", window(), max_seq_length=64)
    with pytest.raises(ValueError, match="0/1"):
        register_attention("sparse-x", torch.full((4, 4), 2), block=16)
    with pytest.raises(ValueError, match="max_seq_length=128 is longer than the layout's 64"):
        register_attention("sparse-x", torch.ones(4, 4), block=16, max_seq_length=128)
    with pytest.raises(ValueError, match="must be a SparsityConfig"):
        register_attention("sparse-x", 3.5)


def test_training_keeps_one_output_copy():
    """The backward saves the (B, S, H, D) output the model's projection reads, not a second copy."""
    sparse = register_attention("sparse-saved", window(), max_seq_length=MAX_LEN)
    attn = tiny_decoder("llama").model.layers[0].self_attn
    q = torch.randn(2, 40, HEADS, 16).transpose(1, 2).requires_grad_()  # HF's layouts: views of (B, S, H, D)
    k, v = (torch.randn(2, 40, 2, 16).transpose(1, 2).requires_grad_() for _ in range(2))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out, _ = sparse.attention(attn, q, k, v, None)
    assert out.shape == (2, 40, HEADS, 16) and out.is_contiguous()
    same_size = [t for t in saved if t.numel() == out.numel()]
    assert len(same_size) == 2 and any(t.data_ptr() == out.data_ptr() for t in same_size)  # q and out itself
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.abs().sum() > 0
