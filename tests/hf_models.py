"""Tiny HF BERT/RoBERTa models built from configs, and runs of them, shared by the HF tests.

Import it after ``pytest.importorskip("transformers")``.
"""
from __future__ import annotations

import copy

import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

from sparsecli import SparseAttentionUtils

HEADS, VOCAB, POSITIONS = 2, 64, 128


def tiny(kind="bert", impl="sdpa", cls=None, hidden=32, heads=HEADS, seed=0, **kw):
    """A two-layer model from a config, without dropout, in eval mode."""
    roberta = kind == "roberta"
    config = (RobertaConfig if roberta else BertConfig)(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=POSITIONS + (2 if roberta else 0),
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation=impl,
        pad_token_id=1 if roberta else 0, **kw)
    torch.manual_seed(seed)
    return (cls or (RobertaModel if roberta else BertModel))(config).eval()


def sparse_copy(model, sparsity_config, max_position=POSITIONS, **kw):
    """A copy of ``model`` whose every layer runs BertSparseSelfAttention."""
    replace = SparseAttentionUtils.replace_model_self_attention_with_sparse_self_attention
    return replace(copy.deepcopy(model), max_position, sparsity_config, **kw)


def batch(model, L, pad=0, B=2, seed=1, device="cpu"):
    """Token ids avoiding the special ids, and a (B, L) mask padding the last ``pad`` tokens of row 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    if pad:
        ids[1, L - pad:] = model.config.pad_token_id
        mask[1, L - pad:] = 0
    return ids.to(device), mask.to(device)


def run(model, ids, mask=None, seed=2, **kw):
    """(last hidden state, {param name: grad}) of a fixed random projection of the output."""
    model.zero_grad(set_to_none=True)
    out = model(ids, attention_mask=mask, **kw).last_hidden_state
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device, out.dtype)
    (out.float() * w.float()).sum().backward()
    return out.detach(), {n: p.grad.detach() for n, p in model.named_parameters() if p.grad is not None}


def assert_runs_match(a, b, atol=2e-5):
    (out_a, grads_a), (out_b, grads_b) = a, b
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=1e-4)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        # atol relative to the parameter's largest gradient: a sum over every token (the token-type
        # embedding's, ~700) rounds differently with each release's summation order.
        scale = max(1.0, grads_b[name].abs().max().item())
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol * scale, rtol=1e-3, msg=name)
