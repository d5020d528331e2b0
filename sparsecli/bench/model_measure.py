"""What ``bench --model`` measures with: CUDA-event timing, peak memory, a CUDA graph of a step,
a static cache, and the small facts a row needs (relative error, the cache keyword, why a row
failed). Shared by the training rows (``model``) and the decode rows (``model_decode``)."""
from __future__ import annotations

import time


def rel_error(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def elapsed_ms(fn, device) -> float:
    """Milliseconds ``fn`` takes (CUDA events on a GPU)."""
    import torch

    if torch.cuda.is_available() and str(device).startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def peak_memory_gib(step, device) -> float | None:
    import torch

    if not (torch.cuda.is_available() and str(device).startswith("cuda")):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def free_memory(device) -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def cache_keyword(model) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def static_cache(model, batch, length):
    """A StaticCache of ``length`` tokens (allocated by its first update, on the model's device)."""
    from transformers import StaticCache

    return StaticCache(config=model.config, max_cache_len=length)


def capture_graph(step, warm: int):
    """(CUDA graph of ``step``, its output) after ``warm`` eager runs on the capture stream."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warm):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph, out
