"""Make a BERT read 4096 tokens with block-sparse attention, then train it for a step.

A tiny BertForMaskedLM is built from a config (nothing is downloaded), its 512 position
embeddings are tiled out to 4096, every self-attention layer is swapped for sparse attention
(Fixed pattern: 4-block local windows plus one global block per window), and a batch of
slightly irregular length is padded to the block size, run, and trained on. On a CPU the plain
PyTorch reference runs: 24 s on an idle 2-core machine, 1 min 47 s (49 s of CPU time) on one
shared with other jobs; the last line prints the training step's own time. On a GPU the Triton
kernels run.

    pip install '.[hf]'        # in a clone of sparsecli (it is not on PyPI)
    python examples/bert_long_sequence.py [--seq-len 4090] [--device cuda]
"""
from __future__ import annotations

import argparse
import time

import torch
from transformers import BertConfig, BertForMaskedLM

from sparsecli import FixedSparsityConfig, SparseAttentionUtils

MAX_POSITION = 4096


def build_model(heads: int) -> BertForMaskedLM:
    config = BertConfig(vocab_size=1000, hidden_size=32 * heads, num_hidden_layers=2, num_attention_heads=heads,
                        intermediate_size=64 * heads, max_position_embeddings=512)
    model = BertForMaskedLM(config)
    SparseAttentionUtils.extend_position_embedding(model, MAX_POSITION)
    sparsity = FixedSparsityConfig(num_heads=heads, block=16, num_local_blocks=4, num_global_blocks=1)
    SparseAttentionUtils.replace_model_self_attention_with_sparse_self_attention(model, MAX_POSITION, sparsity)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=4090, help="tokens per sequence (<= 4096)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model(args.heads).to(args.device).train()
    attn = model.bert.encoder.layer[0].attention.self.sparse_self_attention
    density = attn.master_layout.float().mean().item()
    print(f"position table: {model.bert.embeddings.position_embeddings.num_embeddings} rows; "
          f"layout density at {MAX_POSITION}: {density:.1%}")

    input_ids = torch.randint(5, model.config.vocab_size, (args.batch, args.seq_len), device=args.device)
    block = attn.block
    pad_len, input_ids, attention_mask, _, _, _ = SparseAttentionUtils.pad_to_block_size(
        block, input_ids, None, None, None, None, model.config.pad_token_id, model.bert.embeddings)
    if attention_mask is None:  # the length was already a multiple of the block
        attention_mask = torch.ones_like(input_ids)
    labels = input_ids.masked_fill(attention_mask == 0, -100)  # no loss on the padding

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    loss = model(input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        after = model(input_ids, attention_mask=attention_mask, labels=labels).loss
    print(f"{args.seq_len} tokens (+{pad_len} padding): loss {loss.item():.4f} -> {after.item():.4f} "
          f"after one step ({elapsed:.1f} s on {args.device})")


if __name__ == "__main__":
    main()
