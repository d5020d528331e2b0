"""Loop-for-loop oracle of the reference spec (§1), written for tests: slow but obviously literal.

The vectorized layouts must match it on randomized configurations, edge cases included.
"""
import random

import torch


def _window(L, h, start, end, uni):
    for row in range(start, end):
        for col in range(start, row + 1 if uni else end):
            L[h, row, col] = 1


def fixed(c, nb):
    L = torch.zeros((c.num_heads, nb, nb), dtype=torch.int64)
    nl, ng, uni = c.num_local_blocks, c.num_global_blocks, c.attention == "unidirectional"
    for h in range(c.num_layout_heads):
        for i in range(0, nb, nl):
            _window(L, h, i, min(i + nl, nb), uni)
        g0 = nl - (1 + h % c.num_different_global_patterns) * ng
        end = nb - nb % nl
        for i in range(g0, end, nl):
            L[h, (i if uni else 0):, i:i + ng] = 1
            if c.horizontal_global_attention:
                L[h, i:i + ng, :] = 1
        if end < nb:
            s = min(end + g0, nb - ng)
            L[h, (s if uni else 0):, s:s + ng] = 1
            if c.horizontal_global_attention:
                L[h, s:s + ng, :] = 1
    return _propagate(c, L)


def _fits(count, nb):
    if nb < count:
        raise ValueError(f"{count} > {nb}")


def _random(c, L, h, nb, causal):
    _fits(c.num_random_blocks, nb)
    for row in range(nb):
        pop = range(0, row + 1) if causal else range(0, nb)
        L[h, row, random.sample(pop, c.num_random_blocks)] = 1


def variable(c, nb):
    L = torch.zeros((c.num_heads, nb, nb), dtype=torch.int64)
    uni = c.attention == "unidirectional"
    for h in range(c.num_layout_heads):
        _random(c, L, h, nb, False)
        start = end = 0
        for w in c.local_window_blocks:
            end = min(end + w, nb)
            _window(L, h, start, end, uni)
            start += w
        for i in range(start, nb, w):
            _window(L, h, i, min(i + w, nb), uni)
        if c.global_block_end_indices is None:
            for idx in c.global_block_indices:
                if idx < nb:
                    if c.horizontal_global_attention:
                        L[h, idx, :] = 1
                    L[h, (idx if uni else 0):, idx] = 1
        else:
            for s, e in zip(c.global_block_indices, c.global_block_end_indices):
                if s < nb:
                    e = min(e, nb)
                    if c.horizontal_global_attention:
                        L[h, s:e, :] = 1
                    L[h, (s if uni else 0):, s:e] = 1
    return _propagate(c, L)


def _slide(L, h, nb, w, uni_end, nsw=None):
    _fits(nsw if nsw is not None else 0, nb)
    for row in range(nb):
        L[h, row, max(0, row - w):(row + 1 if uni_end else min(row + w + 1, nb))] = 1


def bigbird(c, nb):
    L = torch.zeros((c.num_heads, nb, nb), dtype=torch.int64)
    uni = c.attention == "unidirectional"
    for h in range(c.num_layout_heads):
        _random(c, L, h, nb, uni)
        _slide(L, h, nb, c.num_sliding_window_blocks // 2, False, c.num_sliding_window_blocks)
        _fits(c.num_global_blocks, nb)
        L[h, 0:c.num_global_blocks, :] = 1
        L[h, :, 0:c.num_global_blocks] = 1
        if uni:
            L = torch.tril(L)
    return _propagate(c, L)


def bslongformer(c, nb):
    L = torch.zeros((c.num_heads, nb, nb), dtype=torch.int64)
    for h in range(c.num_layout_heads):
        _slide(L, h, nb, c.num_sliding_window_blocks // 2, False, c.num_sliding_window_blocks)
        if c.global_block_end_indices is None:
            for idx in c.global_block_indices:
                if idx < nb:
                    L[h, idx, :] = 1
                    L[h, :, idx] = 1
        else:
            for s, e in zip(c.global_block_indices, c.global_block_end_indices):
                if s < nb:
                    e = min(e, nb)
                    L[h, s:e, :] = 1
                    L[h, :, s:e] = 1
        if c.attention == "unidirectional":
            L = torch.tril(L)
    return _propagate(c, L)


def sliding(c, nb):
    L = torch.zeros((c.num_heads, nb, nb), dtype=torch.int64)
    _slide(L, 0, nb, c.num_sliding_window_blocks // 2, c.attention != "bidirectional", c.num_sliding_window_blocks)
    return _propagate(c, L)


def _propagate(c, L):
    if not c.different_layout_per_head:
        L[1:] = L[0]
    return L


ORACLES = {
    "fixed": fixed,
    "variable": variable,
    "bigbird": bigbird,
    "bslongformer": bslongformer,
    "local_sliding_window": sliding,
}
