"""Seeded constrained-random stimulus for the macro (valid gaps, backpressure, hazards, extremes)."""
from __future__ import annotations

import numpy as np

from model.spec import MacroParams, pack, pack_vec, req_fields, wr_fields
from model.stimulus import Beat, Stimulus


def _operands(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
    """Random signed operands with extremes: all-min, all-max, sparse, uniform."""
    kind = rng.integers(0, 6)
    if kind == 0:
        return np.full(n, lo)
    if kind == 1:
        return np.full(n, hi)
    if kind == 2:
        return rng.choice([lo, hi, 0, -1], size=n)
    if kind == 3:
        return rng.integers(lo, hi + 1, n) * (rng.random(n) < 0.2)
    return rng.integers(lo, hi + 1, n)


def random_stimulus(p: MacroParams, seed: int, n_req: int = 64, n_wr: int | None = None,
                    ready_p: float = 0.7, gap_p: float = 0.3, max_gap: int = 4,
                    dep_p: float = 0.3) -> Stimulus:
    """Random writes (to any set, including the one computing: hazards happen) and requests.

    ``gap_p``: probability that a beat waits 1..max_gap idle cycles; ``dep_p``: probability
    that a beat depends on progress of the other stream; ``ready_p``: res.ready duty.
    """
    rng = np.random.default_rng(seed)
    n_wr = n_req * 2 if n_wr is None else n_wr
    wf, rf = wr_fields(p), req_fields(p)
    wlo, whi = p.w_range
    xlo, xhi = p.x_range

    def gap():
        return int(rng.integers(1, max_gap + 1)) if rng.random() < gap_p else 0

    # first fill every set so results are not trivially zero, then mix
    wr = []
    for s in range(p.n_sets):
        for r in range(p.n_in):
            wr.append(Beat(pack(wf, data=pack_vec(_operands(rng, wlo, whi, p.n_out), p.w_bits),
                                row=r, set=s), gap=gap()))
    for _ in range(n_wr):
        after = int(rng.integers(0, n_req + 1)) if rng.random() < dep_p else 0
        wr.append(Beat(pack(wf, data=pack_vec(_operands(rng, wlo, whi, p.n_out), p.w_bits),
                            row=int(rng.integers(0, p.n_in)), set=int(rng.integers(0, p.n_sets))),
                       gap=gap(), after=min(after, n_req)))
    req = []
    for _ in range(n_req):
        after = int(rng.integers(0, len(wr) + 1)) if rng.random() < dep_p else 0
        req.append(Beat(pack(rf, x=pack_vec(_operands(rng, xlo, xhi, p.n_in), p.x_bits),
                             set=int(rng.integers(0, p.n_sets)), acc=int(rng.random() < 0.4),
                             dst=int(rng.integers(0, p.n_acc))), gap=gap(), after=after))
    # wr 'after' counts results; keep writes' dependencies monotone so nothing deadlocks
    wr_sorted, last = [], 0
    for b in wr:
        last = max(last, b.after)
        wr_sorted.append(Beat(b.payload, b.gap, last))
    # request j may wait only for writes that do not themselves wait for result j or later
    wr_afters = np.array([b.after for b in wr_sorted])
    req_sorted, last = [], 0
    for j, b in enumerate(req):
        allowed = int(np.searchsorted(wr_afters, j, side="right"))
        last = min(max(last, b.after), allowed)
        req_sorted.append(Beat(b.payload, b.gap, last))
    return Stimulus(p, wr_sorted, req_sorted, ready_p=ready_p, seed=seed,
                    note=f"random n_req={n_req} ready_p={ready_p}")
