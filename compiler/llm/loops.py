"""Loop compression: per-stream phases (command lists and strided round loops) interleaved and
folded into :class:`~perf.program.Rep` trees (docs/compiler.md, "Compression")."""
from __future__ import annotations

import math

from perf.program import Rep

__all__ = ["Loop", "interleave", "merge", "compress", "assemble", "single"]


class Loop:
    """``count`` rounds ``fn(start) .. fn(start+count-1)``; fn(i + period) equals fn(i) with
    ``period * sigma`` added to every set (and n_banks times that to every vp)."""
    __slots__ = ("fn", "start", "count", "sigma", "period", "label")

    def __init__(self, fn, start, count, sigma, period, label):
        self.fn, self.start, self.count = fn, start, count
        self.sigma, self.period, self.label = sigma, period, label


def interleave(lists: list) -> list:
    """Round robin over the non-empty lists, one element at a time."""
    lists = [x for x in lists if x]
    if len(lists) <= 1:
        return list(lists[0]) if lists else []
    out = []
    n = max(len(x) for x in lists)
    for k in range(n):
        for x in lists:
            if k < len(x):
                out.append(x[k])
    return out


def merge(streams: list, B: int) -> list:
    """Interleave per-stream phase lists (a phase: a list of commands, or a :class:`Loop`)
    into items: instants command by command, loops as Reps over their common rounds."""
    n = len(streams)
    idx = [0] * n
    start = {}
    count = {}
    out = []
    while True:
        inst = []
        for k in range(n):
            cmds = []
            while idx[k] < len(streams[k]) and not isinstance(streams[k][idx[k]], Loop):
                cmds += streams[k][idx[k]]
                idx[k] += 1
            if cmds:
                inst.append(cmds)
        out += interleave(inst)
        act = [k for k in range(n) if idx[k] < len(streams[k])]
        if not act:
            return out
        loops = [streams[k][idx[k]] for k in act]
        for k, lp in zip(act, loops, strict=True):
            if (k, idx[k]) not in start:
                start[(k, idx[k])] = lp.start
                count[(k, idx[k])] = lp.count
        rem = [count[(k, idx[k])] for k in act]
        m = min(rem)
        sig = {lp.sigma for lp in loops}
        if len(sig) != 1:
            raise AssertionError(f"merge: loops with different set strides {sig}")
        sig = sig.pop()
        K = math.lcm(*(lp.period for lp in loops))
        nb = min(K, m)
        bodies = tuple(tuple(interleave([lp.fn(start[(k, idx[k])] + j)
                                          for k, lp in zip(act, loops, strict=True)]))
                       for j in range(nb))
        label = loops[0].label if len(loops) == 1 else f"{loops[0].label} +{len(loops) - 1}"
        st = K * sig if m > K else 0
        out.append(Rep(bodies, m, label, set_stride=st, vp_stride=st * B))
        for k in act:
            key = (k, idx[k])
            start[key] += m
            count[key] -= m
            if count[key] == 0:
                idx[k] += 1


def compress(keys: list, segmap: dict, periods=(1, 2), label: str = "") -> list:
    """Items of the concatenated segments ``segmap[k]`` (tuples of items) for ``k`` in
    ``keys``; runs of a key period K are replaced by ``Rep(bodies, L)`` (no stride)."""
    out = []
    n = len(keys)
    i = 0
    periods = sorted(set(p for p in periods if p >= 1))
    while i < n:
        best = None
        for K in periods:
            j = i + K
            while j < n and keys[j] == keys[j - K]:
                j += 1
            L = j - i
            if L >= 2 * K and (best is None or L > best[1]):
                best = (K, L)
        if best:
            K, L = best
            out.append(Rep(tuple(segmap[k] for k in keys[i:i + K]), L, label))
            i += L
        else:
            out.extend(segmap[keys[i]])
            i += 1
    return out


def assemble(passes: list, defer: bool) -> list:
    """Passes (head, loop | None, tail, rds) -> segments (lists of phases); with ``defer`` a
    pass's RD_OUTs are issued after the next pass's head."""
    segs, prev = [], []
    for head, loop, tail, rds in passes:
        seg = [head + prev] if defer else [head]
        if loop is not None:
            seg.append(loop)
        if tail:
            seg.append(tail)
        if defer:
            prev = rds
        elif rds:
            seg.append(rds)
        segs.append(seg)
    if prev:
        segs.append([prev])
    return segs


def single(keys: list, make, defer: bool, B: int, periods, label: str) -> list:
    """One stream of passes ``make(k)`` for ``k`` in ``keys`` (equal keys: equal passes), as
    compressed items; passes and segments are built once per distinct (previous, key)."""
    passes, segmap, seq = {}, {}, []

    def P(k):
        if k not in passes:
            passes[k] = make(k)
        return passes[k]
    prev = None
    for k in keys:
        sk = (prev if defer else None, k)
        if sk not in segmap:
            head, loop, tail, rds = P(k)
            phases = [head + (P(prev)[3] if defer and prev is not None else [])]
            if loop is not None:
                phases.append(loop)
            if tail:
                phases.append(tail)
            if not defer and rds:
                phases.append(rds)
            segmap[sk] = tuple(merge([phases], B))
        seq.append(sk)
        prev = k
    if defer and prev is not None and P(prev)[3]:
        sk = ("rds", prev)
        segmap[sk] = tuple(P(prev)[3])
        seq.append(sk)
    return compress(seq, segmap, periods, label)
