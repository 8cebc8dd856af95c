"""The one request-length rule (workloads/mix.py) and both of its users: the LLM step compiler
(lengths only) and the attention compiler's request mixes (lengths plus synthetic data)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import attention as A
from compiler import llm as L
from workloads.mix import BENCH_MEANS, request_draws, request_lengths


def test_lengths_follow_the_benchmark_means(seed):
    ctx = 65536
    a = request_lengths(ctx, 400, seed)
    assert a == request_lengths(ctx, 400, seed)                   # deterministic for a seed
    assert a[:50] == request_lengths(ctx, 50, seed)               # prefix-stable (max_batch)
    assert a != request_lengths(ctx, 400, seed + 1)
    top = max(BENCH_MEANS.values())
    for (b, T) in request_draws(ctx, 400, seed):
        lo, hi = BENCH_MEANS[b] / top * ctx * 0.5, BENCH_MEANS[b] / top * ctx
        assert lo - 1 <= T <= hi + 1, (b, T)
    # each benchmark drawn about a quarter of the time; lengths span [0.11 ctx, ctx]
    names = [b for b, _ in request_draws(ctx, 400, seed)]
    assert all(60 <= names.count(b) <= 140 for b in BENCH_MEANS)
    assert min(a) < 0.2 * ctx and max(a) > 0.8 * ctx and min(a) >= 0.1 * ctx


def test_short_contexts_are_clipped_to_one_token(seed):
    assert set(request_lengths(1, 20, seed)) == {1}
    assert all(1 <= T <= 3 for T in request_lengths(3, 50, seed))


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="ctx=0"):
        request_lengths(0, 3)
    with pytest.raises(ValueError, match="n=-1"):
        request_lengths(10, -1)
    with pytest.raises(ValueError, match="seed=-2"):
        request_lengths(10, 3, seed=-2)


def test_both_compilers_use_the_one_rule(seed):
    """The LLM compiler's lengths and the attention request mix's lengths are the same draw;
    the attention mix adds data from its own stream (prefix-stable too)."""
    assert L.request_lengths is request_lengths
    reqs = A.request_mix(5, max_context=300, head_dim=8, group=2, kv_heads=2, seed=seed)
    draws = request_draws(300, 5, seed)
    assert [r.T for r in reqs] == [T for _, T in draws]
    assert [r.name for r in reqs] == [f"{b} T={T}" for b, T in draws]
    assert all(r.max_context == 300 and r.H == 2 and r.g == 2 and r.d == 8 for r in reqs)
    short = A.request_mix(2, max_context=300, head_dim=8, group=2, kv_heads=2, seed=seed)
    for a, b in zip(short, reqs[:2], strict=True):
        np.testing.assert_array_equal(a.K, b.K)
        np.testing.assert_array_equal(a.q, b.q)
    other = A.request_mix(5, max_context=300, head_dim=8, group=2, kv_heads=2, seed=seed + 1)
    assert not np.array_equal(other[0].K[:, :1], reqs[0].K[:, :1])
