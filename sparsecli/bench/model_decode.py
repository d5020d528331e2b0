"""``bench --model``'s decode rows: tokens/s of greedy decoding at a context (eager with a
DynamicCache or a StaticCache, or the static-cache step replayed from a CUDA graph), the check of
the decode path against the reference, and the bytes a step must read (the bound)."""
from __future__ import annotations

from .model_measure import cache_keyword, capture_graph, elapsed_ms, free_memory, rel_error, static_cache, why


def decode_check(bench, model, ids, ref) -> dict:
    """Relative errors of decode steps at the input's last 4 positions: 2 eager static-cache steps,
    then 2 replays of the step captured in a CUDA graph (eager steps on a CPU)."""
    import torch

    S = ids.shape[1]
    cache = static_cache(model, 1, S + 8)
    kw = cache_keyword(model)
    model(ids[:, :S - 4], use_cache=True, logits_to_keep=1, **{kw: cache})
    buf = ids[:, S - 4:S - 3].clone()

    def step():
        return model(buf, use_cache=True, **{kw: cache}).logits[:, -1].float()

    got = []
    for t in (S - 4, S - 3):
        buf.copy_(ids[:, t:t + 1])
        got.append(step())
    errs = {"decode_eager_static": rel_error(torch.stack(got, 1), ref[:, S - 4:S - 2])}
    if torch.cuda.is_available() and str(bench.device).startswith("cuda"):
        try:
            graph, out = capture_graph(step, warm=0)
            replays = []
            for t in (S - 2, S - 1):
                buf.copy_(ids[:, t:t + 1])
                graph.replay()
                replays.append(out.clone())
            errs["decode_graph"] = rel_error(torch.stack(replays, 1), ref[:, S - 2:])
        except Exception as e:  # noqa: BLE001 (only the CUDA-graph rows depend on it)
            errs["graph_error"] = why(e)
    return errs


def decode_row(bench, model, impl, provider, mode, layout, block, check, base) -> dict:
    import torch

    B, C = bench.decode_batch, bench.context
    row = {**base, "case_id": f"{bench.model}/decode-{mode}/C{C}/B{B}/{provider}", "kind": "decode",
           "provider": provider, "mode": mode, "seq_len": C, "batch": B,
           "byte_bound": byte_bound(model, layout, block, C, B)}
    if check["status"] != "ok":
        return {**row, "status": "skipped", "reason": f"check {check['status']}: {check['reason']}"}
    if provider == "flex":
        return {**row, "status": "unsupported", "reason": "to_block_mask builds S x S masks; a decode step needs a "
                                                          "1 x Sk BlockMask per position"}
    on_gpu = torch.cuda.is_available() and str(bench.device).startswith("cuda")
    if mode == "graph-static" and not on_gpu:
        return {**row, "status": "unsupported", "reason": "CUDA graphs need a GPU"}
    if mode == "graph-static" and check.get("graph_status") != "ok":
        return {**row, "status": "skipped", "reason": f"graph check {check.get('graph_status')}: "
                                                     f"{check.get('graph_reason')}"}
    model.set_attn_implementation(impl)
    g = torch.Generator().manual_seed(C)
    ids = torch.randint(3, model.config.vocab_size, (B, C), generator=g).to(bench.device)
    kw = cache_keyword(model)
    try:
        with torch.no_grad():
            if mode == "eager-dynamic":
                from transformers import DynamicCache

                cache = DynamicCache()
            else:
                cache = static_cache(model, B, C + bench.decode_steps + 8)
            model(ids, use_cache=True, logits_to_keep=1, **{kw: cache})
            buf = ids[:, -1:].clone()
            free_memory(bench.device)
            if on_gpu:
                torch.cuda.reset_peak_memory_stats()  # the decode steps' peak: weights, cache, one step

            def step():
                logits = model(buf, use_cache=True, **{kw: cache}).logits
                buf.copy_(logits[:, -1].argmax(-1, keepdim=True))

            if mode == "graph-static":
                graph, _ = capture_graph(step, warm=2)
                run_steps = graph.replay
            else:
                for _ in range(2):
                    step()
                run_steps = step
            n = bench.decode_steps - 4
            ms = elapsed_ms(lambda: [run_steps() for _ in range(n)], bench.device) / n
        row.update(status="ok", step_ms=ms, tokens_per_s=B * 1e3 / ms,
                   peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None)
    except Exception as e:  # noqa: BLE001
        row.update(status="oom" if "out of memory" in str(e).lower() else "failed", reason=why(e))
    finally:
        cache = None
        free_memory(bench.device)
    return row


def byte_bound(model, layout, block, context, batch) -> dict:
    """Bytes one decode step reads: the weights, plus the keys and values of every layer (all of the
    context dense; on the layout, the blocks of the row at ``context``), and their ratio."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_key = 2 * config.num_key_value_heads * head_dim * 2 * config.num_hidden_layers * batch  # k and v, bf16
    row = context // block
    keys = int(layout[:, row, :row + 1].sum(-1).max().item()) * block
    dense, sparse = weights + per_key * (context + 1), weights + per_key * min(keys, context + 1)
    return {"gb_dense": dense / 1e9, "gb_sparse": sparse / 1e9, "ratio": dense / sparse}
