"""Request-length mixes from the long-context benchmarks (ANCHORS.md): the one length rule of
the project, used by the LLM step compiler (lengths only) and by the attention compiler's
request mixes (which add synthetic K, V and q data to each length)."""
from __future__ import annotations

import numpy as np

from spec.params import check_int

__all__ = ["BENCH_MEANS", "request_draws", "request_lengths", "check_seed"]

# LongBench QMSum, Musique, LV-Eval multifieldqa, Loogle-SD mean context lengths (ANCHORS.md)
BENCH_MEANS = {"qmsum": 13966, "musique": 16362, "multifieldqa": 60780, "loogle_sd": 50693}


def check_seed(fn: str, seed) -> int:
    """``seed`` as an int >= 0 (numpy's generators take no negative seeds); ValueError naming
    it otherwise."""
    return check_int(f"{fn}: seed", seed, 0)


def request_draws(ctx: int, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` (benchmark, length) draws: each request picks a benchmark uniformly, its length =
    mean / 60,780 * ``ctx`` * U(0.5, 1.0), rounded and clipped to [1, ctx] (QMSum 13,966,
    Musique 16,362, LV-Eval multifieldqa 60,780, Loogle-SD 50,693: the longest mean maps to
    ``ctx``, lengths fall in [~0.11 ctx, ctx]).  Seeded; the first k draws of a longer draw
    with the same seed are the draws for k (prefix-stable).  ``ctx`` is the maximum context
    that static allocation reserves per request."""
    ctx = check_int("request_lengths: ctx", ctx, 1)
    n = check_int("request_lengths: n", n, 0)
    rng = np.random.default_rng(check_seed("request_lengths", seed))
    names, means = list(BENCH_MEANS), list(BENCH_MEANS.values())
    top = max(means)
    out = []
    for _ in range(n):
        b = int(rng.integers(len(means)))
        u = float(rng.uniform(0.5, 1.0))
        out.append((names[b], max(1, min(ctx, int(round(means[b] / top * ctx * u))))))
    return out


def request_lengths(ctx: int, n: int, seed: int = 0) -> list[int]:
    """The lengths of :func:`request_draws` (context lengths in tokens, each in [1, ctx])."""
    return [T for _, T in request_draws(ctx, n, seed)]
