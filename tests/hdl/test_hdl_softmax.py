"""Checks of hdl/softmax.py (the hub's softmax unit) with amaranth.sim, plus Verilator lint.

Expected values come from the contract (docs/softmax.md): the arithmetic from its formulas,
written out below in Python integers (``ref_*``) and numpy, the exp table from
``spec.softmax.exp_table``, cycles from "One clock cycle t" and "Timing consequences", the
worked example from its text.  Small configurations (short buffers, few lanes) keep
amaranth.sim fast.  The last tests compare the HDL with the golden model (model.softmax,
used through its public API only) on random streams, every output every cycle.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Signal
from amaranth.sim import Simulator

from cimphony.compat import silence_unused
from hdl import hier
from hdl.softmax import FAULTS, SoftmaxUnit
from hdl.softmax_exp import ExpLanes, table_words
from tb.amsim import simulate
from spec.params import pack, pack_vec, unpack, unpack_vec, width
from spec.softmax import (SmErr, SmOp, SmState, SoftmaxParams, cfg_encode, cmd_fields,
                          exp_table, in_fields, prob_fields, res_fields)

DEF = SoftmaxParams()
# NO = NI, 4 partitions, narrow numbers (XW = 11, LW = 16, EW = 10, R = 3)
P4 = SoftmaxParams(score_bits=12, n_lanes=4, tile=4, max_context=32, n_part=4, mul_bits=8,
                   frac_bits=6, int_bits=5, table_bits=3, exp_bits=10)
# NO < NI with regions of N/P = 8 < NI scores (a tile is part of a buffer row)
PWIDE = SoftmaxParams(score_bits=16, n_lanes=2, tile=16, max_context=32, n_part=4,
                      mul_bits=12, frac_bits=8, int_bits=6, table_bits=4, exp_bits=12,
                      prob_max=100)
# NO > NI, TB = FB (no interpolation), one partition
PTALL = SoftmaxParams(score_bits=20, n_lanes=8, tile=2, max_context=32, n_part=1,
                      mul_bits=10, frac_bits=5, int_bits=7, table_bits=5, exp_bits=14)
# the default numbers with few lanes (worked example in two beats)
PNUM = SoftmaxParams(n_lanes=2, tile=4, max_context=32, n_part=2)
# 8 partitions of 2 tokens, the narrowest numbers, QS = 5
P8 = SoftmaxParams(score_bits=10, n_lanes=2, tile=2, max_context=16, n_part=8, mul_bits=8,
                   frac_bits=4, int_bits=4, table_bits=2, exp_bits=8, prob_max=5)
CONFIGS = {"p4": P4, "wide": PWIDE, "tall": PTALL, "num": PNUM, "p8": P8}


# ------------------------------------------------------------------ contract arithmetic
def ref_E(p, f):
    """E(f) = T[i] - (((T[i] - T[i+1]) * rho + floor(2**(R-1))) >> R)."""
    T, R = exp_table(p), p.frac_bits - p.table_bits
    i, rho = f >> R, f & ((1 << R) - 1)
    return T[i] - (((T[i] - T[i + 1]) * rho + ((1 << R) >> 1)) >> R)


def ref_e(p, d):
    """e(d) = (E(f) + floor(2**(k-1))) >> k."""
    k, f = d >> p.frac_bits, d & ((1 << p.frac_bits) - 1)
    return (ref_E(p, f) + ((1 << k) >> 1)) >> k


def ref_rs(p, l, d):
    """RS(l, d) = (l * E(f) + 2**(EW+k-1)) >> (EW + k)."""
    k, f = d >> p.frac_bits, d & ((1 << p.frac_bits) - 1)
    return (l * ref_E(p, f) + (1 << (p.exp_bits + k - 1))) >> (p.exp_bits + k)


def ref_scale(p, s, mul, sh):
    """(x, clamped): r = (s * mul + floor(2**(sh-1))) >> sh saturated to XW bits."""
    r = (s * mul + ((1 << sh) >> 1)) >> sh
    lo, hi = -(1 << (p.x_bits - 1)), (1 << (p.x_bits - 1)) - 1
    x = min(max(r, lo), hi)
    return x, x != r


def ref_digits(p, e):
    """(hi, lo) of y = e * QS."""
    EW = p.exp_bits
    y = e * p.prob_max
    hi = (y + (1 << (EW - 1))) >> EW
    lo = (((y - (hi << EW)) * 128) + (1 << (EW - 1))) >> EW
    return hi, lo


def ref_head(p, scores, mul, sh, plog2=0, dig=0):
    """The contract's result of one head (scores in global token order): tiles in emission
    order [(q list[NI], part, idx, digit, last)], res dict(m, l, qsum, qlo, sat), and the
    per-partition (m_j, l_j) after the beats."""
    P, T, NO, NI = 1 << plog2, len(scores), p.n_lanes, p.tile
    G = 1 + dig
    xs, parts, sat = {}, [], False
    for j in range(P):
        loc = scores[j::P]
        xj = []
        seen, m, l = False, 0, 0
        for b in range(0, len(loc), NO):
            beat = [ref_scale(p, s, mul, sh) for s in loc[b:b + NO]]
            sat |= any(c for _, c in beat)
            xb = [x for x, _ in beat]
            xj += xb
            bm = max(xb)
            m2 = bm if not seen else max(m, bm)
            l = (ref_rs(p, l, m2 - m) if seen else 0) + sum(ref_e(p, m2 - x) for x in xb)
            m, seen = m2, True
        xs[j] = xj
        parts.append((seen, m, l))
    mg = max(m for s, m, _ in parts if s)
    lg = sum(ref_rs(p, l, mg - m) for s, m, l in parts if s)
    tc_n = -(-len(xs[0]) // NI)
    K = P * tc_n * G
    tiles, qsum, qlo = [], 0, 0
    for k in range(K):
        dg, kt = k % G, k // G
        j, tc = kt % P, kt // P
        q = []
        for u in range(NI):
            t = tc * NI + u
            if t < len(xs[j]):
                hi, lo = ref_digits(p, ref_e(p, mg - xs[j][t]))
                q.append(lo if dg else hi)
            else:
                q.append(0)
        if dg:
            qlo += sum(q)
        else:
            qsum += sum(q)
        tiles.append((q, j, tc, dg, int(k == K - 1)))
    return tiles, dict(m=mg, l=lg, qsum=qsum, qlo=qlo, sat=int(sat)), parts


def head_beats(p, scores, plog2=0, chan0=0, rng=None, pad=None):
    """The in beats of a head: partition j's local tokens in NO-lane beats (padding lanes
    ``pad`` or random garbage), chan = chan0 + j; partition by partition, or a random
    interleave (``rng``) keeping each partition's order."""
    P, NO, A = 1 << plog2, p.n_lanes, p.score_bits
    lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
    g = rng or random.Random(1)
    per = []
    for j in range(P):
        loc = list(scores[j::P])
        bs = []
        for b in range(0, len(loc), NO):
            lanes = loc[b:b + NO]
            lanes += [g.randint(lo, hi) if pad is None else pad
                      for _ in range(NO - len(lanes))]
            bs.append(pack(in_fields(p), x=pack_vec(lanes, A), chan=chan0 + j))
        per.append(bs)
    if rng is None:
        return [b for bs in per for b in bs]
    out, idx = [], [0] * P
    while any(idx[j] < len(per[j]) for j in range(P)):
        j = rng.choice([j for j in range(P) if idx[j] < len(per[j])])
        out.append(per[j][idx[j]])
        idx[j] += 1
    return out


def n_beats(p, T, plog2):
    P = 1 << plog2
    return sum(-(-(-(-(T - j) // P)) // p.n_lanes) for j in range(P) if T > j)


def n_tiles(p, T, plog2, dig):
    P = 1 << plog2
    return P * -(-(-(-T // P)) // p.tile) * (1 + dig)


def tile_fields(p, word):
    f = unpack(prob_fields(p), word)
    return (unpack_vec(f["q"], p.tile, 8), f["part"], f["idx"], f["digit"], f["last"])


def res_dict(p, word):
    f = unpack(res_fields(p), word)
    xw, qw = p.x_bits, p.qlo_bits
    return dict(m=f["m"] - ((f["m"] >> (xw - 1)) << xw), l=f["l"], qsum=f["qsum"],
                qlo=f["qlo"] - ((f["qlo"] >> (qw - 1)) << qw), sat=f["sat"])


def abort_word(p):
    return pack(cmd_fields(p), op=int(SmOp.ABORT))


def rand_scores(rng, p, T, spread=None):
    """T random A-bit scores, by default within +-2**spread."""
    s = spread if spread is not None else p.score_bits - 2
    return [rng.randint(-(1 << s), 1 << s) for _ in range(T)]


def scale_for(p, spread):
    """(mul, sh): scores of +-2**spread span about +-2**(XW-2) scaled."""
    mul = (1 << p.mul_bits) - 1 - 3
    sh = max(0, spread + p.mul_bits - (p.x_bits - 2))
    return mul, min(sh, 63)


# ------------------------------------------------------------------ harness
class Unit:
    """Cycle driver: ``step`` drives every input, samples every output, ticks once."""

    OUTS = ("cmd_ready", "in_ready", "prob_valid", "prob_payload", "res_valid",
            "res_payload", "err", "in_err", "err_count", "idle", "st")

    def __init__(self, ctx, dut, rst, p):
        self.ctx, self.dut, self.rst, self.p = ctx, dut, rst, p
        self.inp = getattr(dut, "in")
        self.cycle = 0
        self.log = []

    def sample(self):
        d, g, i = self.dut, self.ctx.get, self.inp
        return {"cmd_ready": g(d.cmd.ready), "in_ready": g(i.ready),
                "prob_valid": g(d.prob.valid), "prob_payload": g(d.prob.payload.as_value()),
                "res_valid": g(d.res.valid), "res_payload": g(d.res.payload.as_value()),
                "err": g(d.err), "in_err": g(d.in_err), "err_count": g(d.err_count),
                "idle": g(d.idle), "st": g(d.st)}

    async def step(self, cmd=None, beat=None, prob_ready=1, res_ready=1, rst=0,
                   cmd_valid=None, in_valid=None):
        """One cycle; returns (cmd transferred, beat transferred) (never during rst)."""
        ctx, d = self.ctx, self.dut
        cv = int(cmd is not None) if cmd_valid is None else cmd_valid
        iv = int(beat is not None) if in_valid is None else in_valid
        ctx.set(d.cmd.payload.as_value(), cmd or 0)
        ctx.set(d.cmd.valid, cv)
        ctx.set(self.inp.payload.as_value(), beat or 0)
        ctx.set(self.inp.valid, iv)
        ctx.set(d.prob.ready, prob_ready)
        ctx.set(d.res.ready, res_ready)
        ctx.set(self.rst, rst)
        out = self.sample()
        out.update(prob_ready=prob_ready, res_ready=res_ready, rst=rst)
        self.log.append(out)
        await ctx.tick()
        self.cycle += 1
        return (bool(cv and out["cmd_ready"] and not rst),
                bool(iv and out["in_ready"] and not rst))

    def tiles(self):
        """(cycle, tile fields) of every prob transfer in the log."""
        return [(c, tile_fields(self.p, o["prob_payload"])) for c, o in enumerate(self.log)
                if o["prob_valid"] and o["prob_ready"] and not o["rst"]]

    def results(self):
        return [(c, res_dict(self.p, o["res_payload"])) for c, o in enumerate(self.log)
                if o["res_valid"] and o["res_ready"] and not o["rst"]]

    async def head(self, cmd, beats, prob_ready=lambda c: 1, res_ready=lambda c: 1,
                   limit=5000, beat_valid=lambda c: 1):
        """Offer ``cmd`` then ``beats`` (each held until taken; a beat valid in the cycles
        where ``beat_valid``) until the unit is idle again with everything offered.
        ``cmd`` None: the head was configured already.  Returns (cmd accept cycle, [beat
        accept cycles])."""
        c_acc, b_acc, bi = (None if cmd is not None else self.cycle - 2), [], 0
        for _ in range(limit):
            c = self.cycle
            beat = beats[bi] if bi < len(beats) and beat_valid(c) else None
            fc, fb = await self.step(cmd if c_acc is None else None, beat,
                                     prob_ready(c), res_ready(c))
            if fc:
                c_acc = c
            if fb:
                b_acc.append(c)
                bi += 1
            if c_acc is not None and bi == len(beats) and self.log[-1]["idle"] \
                    and c > c_acc + 1:
                return c_acc, b_acc
        raise AssertionError(f"head not finished in {limit} cycles (log tail "
                             f"{self.log[-3:]})")


def run(p, body, fault=None):
    """Simulate ``body(unit)`` on a SoftmaxUnit(p) driven through an explicit sync domain."""
    dut = SoftmaxUnit(p, fault=fault)
    simulate(dut, lambda ctx, rst: body(Unit(ctx, dut, rst, p)))


def check_head(u, p, scores, mul, sh, plog2=0, dig=0, t_from=0, t_to=None):
    """The tiles and the result transferred in cycles ``t_from`` .. ``t_to`` - 1 are the
    contract's."""
    tiles, res, _ = ref_head(p, scores, mul, sh, plog2, dig)
    t_to = u.cycle if t_to is None else t_to
    got = [t for c, t in u.tiles() if t_from <= c < t_to]
    assert len(got) == len(tiles), (len(got), len(tiles))
    for k, (g, e) in enumerate(zip(got, tiles)):
        assert g == e, f"tile {k}: got {g}, expected {e}"
    rs = [r for c, r in u.results() if t_from <= c < t_to]
    assert rs == [res], (rs, res)
    return tiles, res


# ------------------------------------------------------------------ parameters and ports
def test_params_and_fault_validated():
    with pytest.raises(ValueError, match="params=42"):
        SoftmaxUnit(42)
    with pytest.raises(ValueError, match="bogus"):
        SoftmaxUnit(P4, fault="bogus")
    with pytest.raises(ValueError, match="n_exp=0"):
        ExpLanes(P4, 0)
    bad = list(exp_table(P4))
    bad[2] = bad[1] + 1                                   # increasing: not a table
    with pytest.raises(ValueError, match="table="):
        table_words(P4, bad)
    assert SoftmaxUnit.verilog_name == "softmax_unit"


@pytest.mark.parametrize("p", [DEF, P4, PWIDE], ids=["default", "p4", "wide"])
def test_ports_match_spec(p):
    dut = silence_unused(SoftmaxUnit(p))          # inspected, not elaborated
    ports = {n: (k, len(v)) for n, (k, v) in hier.signature_ports(dut).items()}
    assert ports == {
        "cmd__valid": ("i", 1), "cmd__ready": ("o", 1),
        "cmd__payload": ("i", width(cmd_fields(p))),
        "in__valid": ("i", 1), "in__ready": ("o", 1),
        "in__payload": ("i", width(in_fields(p))),
        "prob__valid": ("o", 1), "prob__ready": ("i", 1),
        "prob__payload": ("o", width(prob_fields(p))),
        "res__valid": ("o", 1), "res__ready": ("i", 1),
        "res__payload": ("o", width(res_fields(p))),
        "err": ("o", 3), "in_err": ("o", 3), "err_count": ("o", 16), "idle": ("o", 1),
        "st": ("o", 3)}
    if p == DEF:      # the contract's default widths
        assert [ports[f"{s}__payload"][1] for s in ("cmd", "in", "prob", "res")] == \
            [46, 1795, 523, 87]


# ------------------------------------------------------------------ exp unit
def test_exp_table_contents():
    """Table words from the contract's table: T[0] = 2**EW, T[2**TB] = 2**(EW-1) and the
    default entries the contract lists."""
    T = exp_table(DEF)
    assert (T[0], T[1], T[2], T[32], T[63], T[64]) == (65536, 64830, 64132, 46341, 33125,
                                                        32768)
    words = table_words(DEF)
    EW = DEF.exp_bits
    assert [w & ((1 << (EW + 1)) - 1) for w in words] == list(T[:-1])
    assert [(w >> (EW + 1)) for w in words] == [T[i] - T[i + 1] for i in range(64)]


def _exp_numpy(p, d, table=None):
    """e(d) of the contract, vectorised (int64), for the exhaustive check."""
    T = np.array(exp_table(p) if table is None else table, dtype=np.int64)
    FB, R = p.frac_bits, p.frac_bits - p.table_bits
    k, f = d >> FB, d & ((1 << FB) - 1)
    i, rho = f >> R, f & ((1 << R) - 1)
    E = T[i] - (((T[i] - T[i + 1]) * rho + ((1 << R) >> 1)) >> R)
    ks = np.minimum(k, 62)
    return np.where(k >= 62, 0, (E + ((np.int64(1) << ks) >> 1)) >> ks)


def exp_sweep(p, lanes=32, table=None, stride=1):
    """Every d = 0, stride, .. < 2**XW through ExpLanes(p, lanes); returns (d, e) arrays.
    (The lanes are driven and read as one packed word each: one set and one get per step.)"""
    XW, EW = p.x_bits, p.exp_bits
    ds = np.arange(0, 1 << XW, stride, dtype=np.int64)
    ds = np.concatenate([ds, np.full((-len(ds)) % lanes, (1 << XW) - 1, dtype=np.int64)])
    dut = ExpLanes(p, lanes, table=table)
    top = Module()
    top.submodules.dut = dut
    d_all, e_all = Signal(XW * lanes), Signal((EW + 1) * lanes)
    top.d.comb += [dut.d[i].eq(d_all[i * XW:(i + 1) * XW]) for i in range(lanes)]
    top.d.comb += e_all.eq(Cat(*dut.e))
    out = []
    sim = Simulator(top)

    async def tb(ctx):
        for b in range(0, len(ds), lanes):
            ctx.set(d_all, sum(int(v) << (i * XW) for i, v in enumerate(ds[b:b + lanes])))
            w = ctx.get(e_all)
            out.extend((w >> (i * (EW + 1))) & ((1 << (EW + 1)) - 1) for i in range(lanes))

    sim.add_testbench(tb)
    sim.run()
    return ds, np.array(out, dtype=np.int64)


@pytest.mark.parametrize("name", ["default", "p4", "wide", "tall", "p8"])
def test_exp_unit_whole_range(name):
    """e(d) for every XW-bit d equals the contract's formula; e(0) = 2**EW, e is
    non-increasing, and within the contract's 1.52 LSB of 2**EW * 2**(-d / 2**FB) (the
    bound stated for the defaults)."""
    p = {"default": DEF, **CONFIGS}[name]
    ds, e = exp_sweep(p)
    ref = _exp_numpy(p, ds)
    bad = np.nonzero(e != ref)[0]
    assert not len(bad), f"d={ds[bad[:5]]}: hdl {e[bad[:5]]}, contract {ref[bad[:5]]}"
    # spot-check the vectorised formula against the scalar one
    for d in (0, 1, 549, 9765, 24414, (1 << p.x_bits) - 1):
        d = min(d, (1 << p.x_bits) - 1)
        assert _exp_numpy(p, np.array([d]))[0] == ref_e(p, d)
    EW, FB = p.exp_bits, p.frac_bits
    assert e[0] == 1 << EW and np.all(np.diff(e) <= 0)
    if p == DEF:
        err = np.abs(e - (1 << EW) * np.exp2(-ds / (1 << FB)))
        assert err.max() <= 1.52
        assert ref_e(p, 9765) == 88 and ref_e(p, 24414) == 0   # the worked example


def test_exp_unit_catches_wrong_table():
    """The sweep sees a table entry off by one (T[2**(TB-1)] + 1)."""
    bad = list(exp_table(P4))
    bad[1 << (P4.table_bits - 1)] += 1
    ds, e = exp_sweep(P4, table=bad)
    assert np.any(e != _exp_numpy(P4, ds))
    assert np.all(e == _exp_numpy(P4, ds, table=bad))


@pytest.mark.parametrize("name", ["default", "p4", "wide"])
def test_rescale_units(name, seed):
    """RS(l, d) of the rescale units: the formula on edges and random values; RS(l, 0) = l,
    RS <= l, 0 for k >= LW + 1."""
    p = {"default": DEF, **CONFIGS}[name]
    rng = random.Random(seed)
    LW, XW, FB = p.l_bits, p.x_bits, p.frac_bits
    cases = [(0, 0), ((1 << LW) - 1, 0), ((1 << LW) - 1, (1 << XW) - 1), (65539, 9765),
             ((1 << LW) - 1, (LW << FB) - 1), ((1 << LW) - 1, LW << FB),
             ((1 << LW) - 1, (LW + 1) << FB)]
    cases = [(l % (1 << LW), min(d, (1 << XW) - 1)) for l, d in cases]
    cases += [(rng.randrange(1 << LW), rng.randrange(1 << XW)) for _ in range(200)]
    cases += [(rng.randrange(1 << LW), rng.randrange(1 << min(XW, FB + 4)))
              for _ in range(200)]
    n = 8
    dut = ExpLanes(p, 1, n_rs=n)
    got = []
    sim = Simulator(dut)

    async def tb(ctx):
        for b in range(0, len(cases), n):
            chunk = cases[b:b + n]
            for j, (l, d) in enumerate(chunk):
                ctx.set(dut.rs_l[j], l)
                ctx.set(dut.rs_d[j], d)
            got.extend(ctx.get(dut.rs[j]) for j in range(len(chunk)))

    sim.add_testbench(tb)
    sim.run()
    for (l, d), g in zip(cases, got):
        assert g == ref_rs(p, l, d), (l, d, g)
        assert g <= l
        if d >> FB >= LW + 1:
            assert g == 0
        if d == 0:
            assert g == l
    if p == DEF:
        assert ref_rs(p, 65539, 9765) == 88          # the worked example


# ------------------------------------------------------------------ worked example
def check_worked_example(fault=None):
    """Defaults, one partition, mul 40000, sh 12, scores [1000, -500, 2000] in one beat:
    x, e, l, hi, lo, qsum, qlo as the contract's worked example; and with NO = 2 (the first
    two scores an earlier beat), m = 9766 / l = 65539 after two tokens, l = 65624 again."""
    p = DEF
    x = [ref_scale(p, s, 40000, 12)[0] for s in (1000, -500, 2000)]
    assert x == [9766, -4883, 19531]
    assert ref_E(p, 549) == 45195 and exp_table(p)[34:36] == (45348, 44859)

    async def body(u):
        await u.head(cfg_encode(p, 40000, 12, 0, 0, 3), head_beats(p, [1000, -500, 2000]))
        (_, t), = u.tiles()
        assert t == ([0, 0, 127] + [0] * 61, 0, 0, 0, 1)
        (_, r), = u.results()
        assert r == dict(m=19531, l=65624, qsum=127, qlo=0, sat=0)
        t0 = u.cycle
        await u.head(cfg_encode(p, 40000, 12, 0, 0, 3, dig=1),
                     head_beats(p, [1000, -500, 2000]))
        got = [t for c, t in u.tiles() if c >= t0]
        assert got == [([0, 0, 127] + [0] * 61, 0, 0, 0, 0),
                       ([22, 0, 0] + [0] * 61, 0, 0, 1, 1)]
        assert [r for c, r in u.results() if c >= t0] == \
            [dict(m=19531, l=65624, qsum=127, qlo=22, sat=0)]

    run(p, body, fault)

    q = PNUM                                      # same numbers, two lanes per beat

    async def body2(u):
        await u.head(cfg_encode(q, 40000, 12, 0, 0, 2), head_beats(q, [1000, -500]))
        assert u.results()[-1][1]["m"] == 9766 and u.results()[-1][1]["l"] == 65539
        await u.head(cfg_encode(q, 40000, 12, 0, 0, 3), head_beats(q, [1000, -500, 2000]))
        r = u.results()[-1][1]
        assert (r["m"], r["l"], r["qsum"]) == (19531, 65624, 127)

    run(q, body2, fault)


def test_worked_example():
    check_worked_example()


# ------------------------------------------------------------------ timing
def check_back_to_back(p, plog2, dig, T, fault=None, seed=1):
    """Back-to-back heads with ready consumers: beats accepted t0+1..t0+B, MERGE at
    t0+B+1, tile k valid at t0+B+3+k, res with the last tile at t0+B+2+K, next CFG accepted
    at t0+B+3+K and in.ready again from t0+B+4+K; st every cycle."""
    rng = random.Random(seed)
    B, K = n_beats(p, T, plog2), n_tiles(p, T, plog2, dig)
    heads = []
    for _ in range(2):
        s = rand_scores(rng, p, T, 8)
        heads.append((s, head_beats(p, s, plog2, chan0=1, rng=rng)))
    mul, sh = scale_for(p, 8)
    cmd = cfg_encode(p, mul, sh, plog2, 1, T, dig)

    async def body(u):
        beats = heads[0][1] + heads[1][1]
        acc_c, acc_b, bi, c_heads = [], [], 0, 0
        for _ in range(2 * (B + K + 3) + 6):
            c = u.cycle
            fc, fb = await u.step(cmd if c_heads < 2 else None,
                                  beats[bi] if bi < len(beats) else None)
            if fc:
                acc_c.append(c)
                c_heads += 1
            if fb:
                acc_b.append(c)
                bi += 1
        t0, t1 = acc_c
        assert t1 == t0 + B + 3 + K, (t0, t1, B, K)
        assert acc_b == [t0 + 1 + i for i in range(B)] + [t1 + 1 + i for i in range(B)]
        st = [o["st"] for o in u.log]
        exp_st = ([SmState.INGEST] * B + [SmState.MERGE] + [SmState.EMIT] * K
                  + [SmState.DONE])
        assert st[t0 + 1:t1 + 1] == exp_st + [SmState.IDLE]
        assert st[t1 + 1:t1 + 1 + len(exp_st)] == exp_st
        ready = [o["in_ready"] for o in u.log]
        assert ready[t0 + B + 1:t0 + B + 4 + K] == [0] * (K + 3)
        assert ready[t0 + B + 4 + K] == 1 and ready[t0 + 1] == 1
        tiles = u.tiles()
        assert [c for c, _ in tiles] == [t0 + B + 3 + k for k in range(K)] + \
            [t1 + B + 3 + k for k in range(K)]
        assert [c for c, _ in u.results()] == [t0 + B + 2 + K, t1 + B + 2 + K]
        assert [o["res_valid"] for o in u.log[t0:t1 + 2]].count(1) == 1
        assert [o["cmd_ready"] for o in u.log[t0 + 1:t1]] == [0] * (t1 - t0 - 1)
        assert u.log[t1]["cmd_ready"] == 1
        idle = [o["idle"] for o in u.log]
        assert idle[t0 + 1:t1] == [0] * (t1 - t0 - 1) and idle[t1] == 1
        check_head(u, p, heads[0][0], mul, sh, plog2, dig, t_to=t1 + 1)
        check_head(u, p, heads[1][0], mul, sh, plog2, dig, t_from=t1 + 1)

    run(p, body, fault)


@pytest.mark.parametrize("p,plog2,dig,T", [(P4, 2, 0, 30), (P4, 1, 1, 13), (P4, 0, 0, 1),
                                           (PWIDE, 2, 1, 27), (PTALL, 0, 1, 19)],
                         ids=["p4-4part", "p4-2part-2dig", "p4-one-token", "wide", "tall"])
def test_timing_back_to_back(p, plog2, dig, T):
    check_back_to_back(p, plog2, dig, T)


def check_slow_consumer(p, seed, fault=None):
    """prob.ready and res.ready random, the next head's CFG and beats offered all along: a
    tile waits in the register (payload stable); in every EMIT cycle with the register free
    a tile is computed (valid in the next cycle, so emission resumes in the cycle a tile is
    taken), K of them, then DONE; the result waits with st DONE, the next CFG is accepted
    exactly in the cycle after the res transfer, its beats wait until then; the data are
    the contract's."""
    rng = random.Random(seed)
    plog2, dig, T = 1, 1, 11
    B, K = n_beats(p, T, plog2), n_tiles(p, T, plog2, dig)
    s = rand_scores(rng, p, T, 8)
    mul, sh = scale_for(p, 8)
    cmd = cfg_encode(p, mul, sh, plog2, 0, T, dig)
    beats = head_beats(p, s, plog2, rng=rng)
    pr = [int(rng.random() < 0.4) for _ in range(600)]
    rr = [int(rng.random() < 0.2) for _ in range(600)]

    async def body(u):
        acc_c, acc_b, bi = [], [], 0
        for c in range(600):
            nxt = beats[bi % B] if bi < 2 * B else None
            fc, fb = await u.step(cmd if len(acc_c) < 2 else None, nxt, pr[c], rr[c])
            acc_c += [c] if fc else []
            if fb:
                acc_b.append(c)
                bi += 1
            if len(acc_c) == 2 and c > acc_c[1]:
                break
        t0, t1 = acc_c
        assert acc_b == [t0 + 1 + i for i in range(B)] + [t1 + 1]
        log = u.log
        assert log[t0 + B + 3]["prob_valid"] and log[t0 + B + 2]["st"] == SmState.EMIT
        computed = 0
        for c in range(t0, t1):
            a, b = log[c], log[c + 1]
            if a["prob_valid"] and not a["prob_ready"]:
                assert b["prob_valid"] and b["prob_payload"] == a["prob_payload"], c
            if a["res_valid"] and not a["res_ready"]:
                assert b["res_valid"] and b["res_payload"] == a["res_payload"], c
                assert a["st"] == b["st"] == SmState.DONE
            if a["st"] == SmState.EMIT:
                if not a["prob_valid"] or a["prob_ready"]:
                    computed += 1
                    assert b["prob_valid"], c
                    assert b["st"] == (SmState.DONE if computed == K else SmState.EMIT)
                    assert b["res_valid"] == (computed == K)
                else:
                    assert b["st"] == SmState.EMIT and not b["res_valid"]
            if a["prob_valid"] and a["prob_ready"] and a["st"] == SmState.EMIT:
                assert b["prob_payload"] != a["prob_payload"], c      # the next tile
        assert computed == K
        t_res = u.results()[-1][0]
        assert t1 == t_res + 1 and log[t_res]["st"] == SmState.DONE
        assert log[t1]["st"] == SmState.IDLE
        check_head(u, p, s, mul, sh, plog2, dig, t_to=t1)

    run(p, body, fault)


@pytest.mark.parametrize("name", ["p4", "wide", "p8"])
def test_timing_slow_consumer(name, seed):
    check_slow_consumer(CONFIGS[name], seed)


def test_cfg_held_until_res_taken():
    """A legal CFG offered during the head is not ready until st = IDLE (after the res
    transfer; res.ready held low for the first 4 cycles of DONE), while the next head's beat
    waits (in.ready 0) behind the emission; then a malformed CFG and an ABORT are ready in
    INGEST, a legal CFG is not."""
    p = P4
    s1, s2 = [3, -7, 100, 5, 9], [1, 2, 3, 4, 5, 6]
    c1, c2 = cfg_encode(p, 200, 4, 0, 0, 5), cfg_encode(p, 200, 4, 0, 0, 6)
    bad = cfg_encode(p, 200, 4, 0, 0, 0)

    async def body(u):
        await u.step(c1)
        for b in head_beats(p, s1):
            await u.step(c2, b)
        n_done = 0
        for _ in range(30):
            c = u.cycle
            n_done += u.ctx.get(u.dut.st) == SmState.DONE
            fc, fb = await u.step(c2, head_beats(p, s2)[0], res_ready=int(n_done > 4))
            assert not fb
            if fc:
                break
            assert u.log[-1]["cmd_ready"] == (u.log[-1]["st"] == SmState.IDLE)
        assert fc and u.log[c]["st"] == SmState.IDLE and u.log[c - 1]["st"] == SmState.DONE
        assert n_done == 5 and u.results()[-1][0] == c - 1
        check_head(u, p, s1, 200, 4)
        for w, ready in ((bad, 1), (abort_word(p), 1), (c2, 0)):
            await u.step(w, cmd_valid=0)
            assert u.log[-1]["st"] == SmState.INGEST and u.log[-1]["cmd_ready"] == ready

    run(p, body)


def test_ready_ignores_valid():
    """cmd.ready for a fixed payload is the same whether valid is 0 or 1 (checked every
    state of a head, for a legal CFG, a malformed CFG and an ABORT)."""
    p = P4
    words = [cfg_encode(p, 9, 1, 0, 0, 4), cfg_encode(p, 9, 1, 3, 0, 4),
             abort_word(p), pack(cmd_fields(p), op=3)]
    s = [5, 1, 2, 3]

    async def body(u):
        seen = set()
        await u.step(words[0])
        beats = head_beats(p, s)
        for _ in range(12):
            st = u.ctx.get(u.dut.st)
            seen.add(st)
            for w in words:
                r = []
                for v in (0, 1):
                    u.ctx.set(u.dut.cmd.payload.as_value(), w)
                    u.ctx.set(u.dut.cmd.valid, v)
                    r.append(u.ctx.get(u.dut.cmd.ready))
                assert r[0] == r[1], (st, w)
                assert r[0] == int(w != words[0] or st == SmState.IDLE)
            await u.step(None, beats.pop(0) if beats else None)
        assert seen == set(SmState)

    run(p, body)


# ------------------------------------------------------------------ commands and errors
def _cmd(p, op, **f):
    return pack(cmd_fields(p), op=op, **f)


@pytest.mark.parametrize("word_f,code", [
    (lambda p: _cmd(p, 2, count=0), SmErr.BAD_OP),
    (lambda p: _cmd(p, 3, count=5, plog2=3), SmErr.BAD_OP),
    (lambda p: cfg_encode(p, 7, 1, 3, 0, 5), SmErr.BAD_CFG),           # 8 > n_part
    (lambda p: cfg_encode(p, 7, 1, 2, 5, 5), SmErr.BAD_CFG),           # 5 + 4 > 8
    (lambda p: cfg_encode(p, 7, 1, 0, 0, 0), SmErr.BAD_CFG),           # count 0
    (lambda p: cfg_encode(p, 7, 1, 3, 0, 1000), SmErr.BAD_CFG),        # before TOO_LONG
    (lambda p: cfg_encode(p, 7, 1, 0, 7, 33), SmErr.TOO_LONG),         # count > N = 32
    (lambda p: cfg_encode(p, 7, 1, 2, 4, 65535), SmErr.TOO_LONG),
], ids=["op2", "op3", "plog2", "chan0", "count0", "precedence", "too_long", "too_long_max"])
def test_command_errors(word_f, code):
    """A malformed command is taken in the first cycle (in IDLE, INGEST, EMIT and DONE),
    its code on err in the next cycle (0 otherwise), err_count + 1, and nothing else changes:
    the head in progress finishes with the contract's result."""
    p = P4
    bad = word_f(p)
    s = [100, -3, 50, 7, 7, 8, -90, 1, 2]
    cmd = cfg_encode(p, 100, 5, 1, 2, len(s))

    async def body(u):
        fc, _ = await u.step(bad)                       # IDLE
        assert fc
        assert u.ctx.get(u.dut.err) == code and u.ctx.get(u.dut.err_count) == 1
        assert u.ctx.get(u.dut.st) == SmState.IDLE and u.ctx.get(u.dut.idle) == 1
        await u.step()
        assert u.ctx.get(u.dut.err) == 0
        await u.step(cmd)
        beats = head_beats(p, s, 1, 2)
        n_err = 1
        hit = set()
        while beats or not u.log[-1]["idle"]:
            st = u.ctx.get(u.dut.st)
            offer = st not in hit and st != SmState.IDLE
            fc, fb = await u.step(bad if offer else None, beats[0] if beats else None,
                                  res_ready=int(st == SmState.DONE and st in hit))
            if offer:
                assert fc
                hit.add(st)
                n_err += 1
                assert u.ctx.get(u.dut.err) == code
                assert u.ctx.get(u.dut.st) in (st, st + 1)
            else:
                assert u.ctx.get(u.dut.err) == 0
            assert u.ctx.get(u.dut.err_count) == n_err
            if fb:
                beats.pop(0)
        assert hit == {SmState.INGEST, SmState.MERGE, SmState.EMIT, SmState.DONE}
        check_head(u, p, s, 100, 5, 1, 0)

    run(p, body)


def check_beat_errors(fault=None):
    """BAD_PART (chan below chan0, chan at chan0 + P) and EXTRA_BEAT (a partition with all
    its beats, and one with none: T <= j) are dropped: in_err in the next cycle, err_count,
    nothing else (the head's result is the contract's for the good beats)."""
    p = P4
    s = [5, 9, -2, 40, 3, 3, 7, 1, 8, 0, 11]                   # T = 11, P = 2: 6 + 5 tokens
    cmd = cfg_encode(p, 150, 4, 1, 3, len(s))
    good = head_beats(p, s, 1, 3)                               # partitions 0 0 1 1
    junk = pack(in_fields(p), x=pack_vec([1000] * 4, 12), chan=2)    # chan0 - 1
    junk2 = pack(in_fields(p), x=pack_vec([1000] * 4, 12), chan=5)   # chan0 + P
    extra = pack(in_fields(p), x=pack_vec([1000] * 4, 12), chan=3)   # partition 0 again
    order = [good[0], junk, good[1], extra, junk2, good[2], extra, good[3]]
    codes = [0, SmErr.BAD_PART, 0, SmErr.EXTRA_BEAT, SmErr.BAD_PART, 0, SmErr.EXTRA_BEAT, 0]

    async def body(u):
        await u.step(cmd)
        for b, code in zip(order, codes):
            _, fb = await u.step(None, b)
            assert fb
            assert u.ctx.get(u.dut.in_err) == code, (code, u.ctx.get(u.dut.in_err))
        assert u.ctx.get(u.dut.err_count) == 4 and u.ctx.get(u.dut.err) == 0
        await u.head(None, [])
        check_head(u, p, s, 150, 4, 1, 0)
        # T = 1 of 4 partitions: partitions 1..3 have no beats; a beat to one is EXTRA
        t0 = u.cycle
        await u.step(cfg_encode(p, 150, 4, 2, 0, 1))
        await u.step(None, pack(in_fields(p), x=pack_vec([7] * 4, 12), chan=1))
        assert u.ctx.get(u.dut.in_err) == SmErr.EXTRA_BEAT
        assert u.ctx.get(u.dut.st) == SmState.INGEST
        await u.head(None, head_beats(p, [7], 2, 0))
        check_head(u, p, [7], 150, 4, 2, 0, t_from=t0)
        assert u.ctx.get(u.dut.err_count) == 5

    run(p, body, fault)


def test_beat_errors():
    check_beat_errors()


def test_err_count_saturates():
    """err_count saturates at 65535 (a rejected command and a rejected beat per cycle)."""
    p = SoftmaxParams(score_bits=8, n_lanes=1, tile=2, max_context=2, n_part=1,
                      mul_bits=8, frac_bits=4, int_bits=4, table_bits=2, exp_bits=8)
    bad_cmd = _cmd(p, 2)
    bad_beat = pack(in_fields(p), x=0, chan=1)

    async def body(u):
        await u.step(cfg_encode(p, 1, 0, 0, 0, 2))
        ctx, d = u.ctx, u.dut
        ctx.set(d.cmd.payload.as_value(), bad_cmd)
        ctx.set(d.cmd.valid, 1)
        ctx.set(u.inp.payload.as_value(), bad_beat)
        ctx.set(u.inp.valid, 1)
        for _ in range(32767):
            await ctx.tick()
        assert ctx.get(d.err_count) == 65534
        await ctx.tick()
        assert ctx.get(d.err_count) == 65535
        assert ctx.get(d.err) == SmErr.BAD_OP and ctx.get(d.in_err) == SmErr.BAD_PART
        await ctx.tick()
        assert ctx.get(d.err_count) == 65535 and ctx.get(d.st) == SmState.INGEST

    run(p, body)


def test_abort():
    """ABORT in INGEST (with a good beat in the same cycle: the beat still counts), in
    EMIT (prob_valid 0 next cycle although a tile was computed: its payload is loaded) and
    in DONE (res dropped); then st = IDLE, and the next head is the contract's."""
    p = P4
    s = [10, 20, 30, 40, 50, 60, 70]
    mul, sh = 120, 4
    cmd = cfg_encode(p, mul, sh, 0, 0, len(s))
    tiles, res, _ = ref_head(p, s, mul, sh)

    async def body(u):
        beats = head_beats(p, s)
        # INGEST: abort together with the first beat
        await u.step(cmd)
        fc, fb = await u.step(abort_word(p), beats[0])
        assert fc and fb
        o = u.sample()
        assert o["st"] == SmState.IDLE and o["idle"] == 1 and o["in_err"] == 0
        assert o["err"] == 0 and o["err_count"] == 0
        # EMIT: abort in the cycle tile 0 is computed
        await u.step(cmd)
        for b in beats:
            await u.step(None, b)
        await u.step()                                    # MERGE
        assert u.sample()["st"] == SmState.EMIT
        await u.step(abort_word(p))                       # tile 0 computed, dropped
        o = u.sample()
        assert o["st"] == SmState.IDLE and o["prob_valid"] == 0 and o["idle"] == 1
        assert tile_fields(p, o["prob_payload"]) == tiles[0]
        # DONE: abort while res waits; prob waits too (not ready), both dropped
        await u.step(cmd)
        for b in beats:
            await u.step(None, b)
        for _ in range(20):                               # tiles taken, res not
            if u.sample()["st"] == SmState.DONE:
                break
            await u.step(res_ready=0)
        o = u.sample()
        assert o["res_valid"] and o["prob_valid"]
        assert res_dict(p, o["res_payload"]) == res
        await u.step(abort_word(p), prob_ready=0, res_ready=0)
        o = u.sample()
        assert (o["st"], o["prob_valid"], o["res_valid"], o["idle"]) == (0, 0, 0, 1)
        t0 = u.cycle
        await u.head(cmd, beats)
        check_head(u, p, s, mul, sh, t_from=t0)

    run(p, body)


def test_reset():
    """rst: every register 0 in the next cycle (st IDLE, outputs empty, err_count 0), the
    command and beat offered in the rst cycle are lost; the unit then runs a head."""
    p = P4
    s = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    cmd = cfg_encode(p, 33, 2, 1, 0, len(s))

    async def body(u):
        await u.step(_cmd(p, 3))
        await u.step(cmd)
        beats = head_beats(p, s, 1)
        for b in beats:
            await u.step(None, b)
        await u.step()
        await u.step(prob_ready=0)
        o = u.sample()
        assert o["prob_valid"] and o["err_count"] == 1 and o["st"] == SmState.EMIT
        fc, fb = await u.step(cmd, beats[0], rst=1)
        assert not fc and not fb
        o = u.sample()
        assert o == {"cmd_ready": 1, "in_ready": 0, "prob_valid": 0, "prob_payload": 0,
                     "res_valid": 0, "res_payload": 0, "err": 0, "in_err": 0,
                     "err_count": 0, "idle": 1, "st": SmState.IDLE}
        t0 = u.cycle
        await u.head(cmd, beats)
        check_head(u, p, s, 33, 2, 1, t_from=t0)

    run(p, body)


# ------------------------------------------------------------------ geometry and rows
def check_random_heads(p, seed, n=6, fault=None):
    """Random heads (P, T, dig, chan0, scale, interleave, padding garbage, random gaps and
    backpressure) against the contract's result, tile by tile."""
    rng = random.Random(seed)

    async def body(u):
        for _ in range(n):
            plog2 = rng.randrange(p.plog2_max + 1)
            P = 1 << plog2
            T = rng.choice([1, P, rng.randrange(1, p.max_context + 1), p.max_context])
            dig, chan0 = rng.randrange(2), rng.randrange(9 - P)
            spread = rng.randrange(2, p.score_bits - 1)
            s = rand_scores(rng, p, T, spread)
            mul, sh = scale_for(p, spread)
            mul -= rng.randrange(mul // 2)
            t0 = u.cycle
            pr = [int(rng.random() < 0.7) for _ in range(3000)]
            await u.head(cfg_encode(p, mul, sh, plog2, chan0, T, dig),
                         head_beats(p, s, plog2, chan0, rng=rng),
                         prob_ready=lambda c: pr[c - t0], res_ready=lambda c: pr[c - t0],
                         beat_valid=lambda c: pr[(c - t0) * 7 % 3000])
            check_head(u, p, s, mul, sh, plog2, dig, t_from=t0)

    run(p, body, fault)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_heads(name, seed):
    check_random_heads(CONFIGS[name], seed)


@pytest.mark.parametrize("row", ["all_equal", "one_huge", "very_negative", "saturated",
                                 "two_max"])
def test_adversarial_rows(row):
    """All equal (every code QS, l = T * 2**EW), one huge (QS for it, 0 elsewhere), very
    negative (saturated to the smallest x: all equal again, sat = 1), saturated both ways,
    two maxima in different partitions."""
    p = P4
    A, N, EW, QS = p.score_bits, p.max_context, p.exp_bits, p.prob_max
    lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
    T, plog2 = N, 2
    s = {"all_equal": [17] * T,
         "one_huge": [0] * 13 + [hi] + [0] * (T - 14),
         "very_negative": [lo] * T,
         "saturated": [hi, lo] * (T // 2),
         "two_max": [5] * 5 + [900] + [5] * 4 + [900] + [5] * (T - 11)}[row]
    mul, sh = (255, 1) if row in ("very_negative", "saturated") else (200, 4)

    async def body(u):
        await u.head(cfg_encode(p, mul, sh, plog2, 0, T, 1), head_beats(p, s, plog2))
        tiles, res = check_head(u, p, s, mul, sh, plog2, 1)
        hi_codes = [q for q, _, _, d, _ in tiles if d == 0]
        flat = sorted(v for q in hi_codes for v in q)
        if row in ("all_equal", "very_negative"):
            assert flat == [QS] * T and res["l"] == T << EW and res["qlo"] == 0
            assert res["sat"] == (row == "very_negative")
        if row == "one_huge":
            assert flat == [0] * (T - 1) + [QS] and res["l"] == 1 << EW
        if row == "saturated":
            assert res["sat"] == 1 and res["m"] == (1 << (p.x_bits - 1)) - 1
            assert flat == [0] * (T // 2) + [QS] * (T // 2)
        if row == "two_max":
            assert flat.count(QS) == 2 and res["qsum"] == 2 * QS

    run(p, body)


# ------------------------------------------------------------------ faults are caught
FAULT_CHECKS = {
    "exp_entry": lambda: check_random_heads(P4, 3, n=6, fault="exp_entry"),
    "no_rescale": lambda: check_worked_example(fault="no_rescale"),
    "pad_max": lambda: check_random_heads(P4, 5, n=6, fault="pad_max"),
    "merge2": lambda: check_back_to_back(P4, 1, 0, 9, fault="merge2"),
    "no_extra": lambda: check_beat_errors(fault="no_extra"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_checks_catch_fault(fault):
    """Each deliberately wrong DUT fails the check meant for it."""
    with pytest.raises(AssertionError):
        FAULT_CHECKS[fault]()


# ------------------------------------------------------------------ Verilog
@pytest.mark.verilator
@pytest.mark.parametrize("name", ["p4", "wide", "tall", "p8"])
def test_verilog_lint(name, tmp_path):
    """Converts with amaranth.back.verilog (ports: the signature's), lints clean with
    ``verilator --lint-only -Wall`` and hdl/waivers.vlt only."""
    from hdl.export import lint
    dut = SoftmaxUnit(CONFIGS[name])
    ports = hier.signature_ports(dut)
    text = verilog.convert(dut, name="softmax_unit", ports=[v for _, v in ports.values()],
                           emit_src=False)
    d = hier.parse_ports(text, "softmax_unit")
    hier.check_ports(dut, d)
    path = tmp_path / "softmax_unit.v"
    path.write_text(text)
    r = lint(path)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ differential vs model
def _rand_cmd(rng, p):
    """A random command: mostly a legal CFG of a short head, some malformed, some ABORT."""
    u = rng.random()
    if u < 0.04:
        return _cmd(p, rng.randrange(2, 4), count=rng.randrange(1 << 16),
                    mul=rng.randrange(1 << p.mul_bits))
    if u < 0.14:
        return abort_word(p) | (rng.getrandbits(width(cmd_fields(p)) - 2) << 2)  # ignored
    plog2 = rng.randrange(p.plog2_max + 1) if rng.random() < 0.9 else rng.randrange(4)
    P = 1 << plog2
    chan0 = rng.randrange(9 - P) if rng.random() < 0.9 else rng.randrange(8)
    count = rng.choice([rng.randrange(1, p.max_context + 1)] * 8 + [0, p.max_context + 1])
    spread = rng.randrange(2, p.score_bits - 1)
    mul, sh = scale_for(p, spread)
    return cfg_encode(p, rng.randrange(1, mul + 1), sh, plog2, chan0, count,
                      rng.randrange(2))


def differential(name, seed, n_cycles, fault=None, table=None, configs=None):
    """Lockstep of SoftmaxUnit(configs[name], fault) and model.softmax.SoftmaxModel on a
    random stream (random commands, malformed ones, ABORT, the beats of each head in a
    random interleave with bad and extra beats, random valid gaps and backpressure,
    resets): AssertionError naming the cycle and the outputs at the first difference."""
    from model.softmax import SoftmaxModel
    p = (configs or CONFIGS)[name]
    model = SoftmaxModel(p, table=table)
    rng = random.Random(seed)
    keys = Unit.OUTS
    stats = {"tiles": 0, "res": 0, "err": 0, "in_err": 0, "rst": 0, "heads": 0,
             "abort": 0}

    async def body(u):
        cmd = cmdv = None
        beats, beat, beatv = [], None, 0
        pr_bias = 0.8
        for cyc in range(n_cycles):
            if cmd is None:
                cmd = _rand_cmd(rng, p) if rng.random() < 0.3 else None
                cmdv = 0
            if cmd is not None and not cmdv:
                cmdv = int(rng.random() < 0.5)
            if beat is None and beats:
                beat = beats.pop(0)
            if beat is None and rng.random() < 0.02:                 # a stray beat
                beat = pack(in_fields(p), x=rng.getrandbits(p.n_lanes * p.score_bits),
                            chan=rng.randrange(8))
            if beat is not None and not beatv:
                beatv = int(rng.random() < 0.7)
            if rng.random() < 0.01:
                pr_bias = rng.choice([0.1, 0.5, 0.9, 1.0])
            prr, rsr = int(rng.random() < pr_bias), int(rng.random() < pr_bias)
            rst = int(rng.random() < 0.002)
            w, b = (cmd or 0), (beat or 0)
            fc, fb = await u.step(w, b, prr, rsr, rst, cmd_valid=cmdv, in_valid=beatv)
            hw = u.log[-1]
            if rst:
                out = model.step(0, w, 0, b, prr, rsr)
                model.reset()
            else:
                out = model.step(cmdv, w, beatv, b, prr, rsr)
            exp = dict(zip(out._fields, out))
            diff = {k: (hw[k], exp[k]) for k in keys if hw[k] != exp[k]}
            assert not diff, f"cycle {cyc}: (hdl, model) {diff}"
            if fc:
                f = unpack(cmd_fields(p), w)
                if f["op"] == SmOp.CFG and hw["err"] == 0 and u.ctx.get(u.dut.err) == 0:
                    plog2, T = f["plog2"], f["count"]
                    s = rand_scores(rng, p, T, rng.randrange(2, p.score_bits - 1))
                    if rng.random() < 0.1:
                        s = [rng.choice([-(1 << (p.score_bits - 1)),
                                         (1 << (p.score_bits - 1)) - 1, 0]) for _ in s]
                    hb = head_beats(p, s, plog2, f["chan0"], rng=rng)
                    if rng.random() < 0.1 and len(hb) > 1:           # an extra beat
                        hb.insert(rng.randrange(1, len(hb)), hb[0])
                    if rng.random() < 0.05:                          # cut short (abort)
                        hb = hb[:rng.randrange(len(hb))]
                    beats = hb
                    stats["heads"] += 1
                elif f["op"] == SmOp.ABORT:
                    stats["abort"] += 1
                cmd = None
            if fb:
                beat, beatv = None, 0
            elif beat is not None and not beatv and rng.random() < 0.05:
                beat = None                     # not offered: may change (valid low)
            if rst:
                stats["rst"] += 1
            stats["tiles"] += hw["prob_valid"] and prr and not rst
            stats["res"] += hw["res_valid"] and rsr and not rst
            stats["err"] += hw["err"] != 0
            stats["in_err"] += hw["in_err"] != 0
        stats["cycles"] = n_cycles
        print(f"{name}: {n_cycles} cycles compared, 0 mismatches, {stats}")

    run(p, body, fault)
    return stats


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_differential_vs_model(name, seed):
    """HDL vs the golden model on a random stream: every output, every cycle."""
    stats = differential(name, seed, 4000)
    assert stats["res"] > 10 and stats["tiles"] > 50 and stats["err"] > 5
    assert stats["in_err"] > 2 and stats["abort"] > 2


def test_differential_catches_fault(seed):
    """The same lockstep reports the DUT with a wrong exp table entry (and agrees with a
    model given the same wrong table)."""
    with pytest.raises(AssertionError, match=r"cycle \d+: \(hdl, model\)"):
        differential("p4", seed, 4000, fault="exp_entry")
    bad = list(exp_table(P4))
    bad[1 << (P4.table_bits - 1)] += 1
    differential("p4", seed, 1500, fault="exp_entry", table=bad)


@pytest.mark.slow
def test_differential_default_params(seed):
    """The same lockstep at the default parameters (64 lanes, N = 4096, heads of up to 4096
    tokens), a short stream."""
    CONFIGS_DEF = dict(CONFIGS, default=DEF)
    stats = differential("default", seed, 1500, configs=CONFIGS_DEF)
    assert stats["res"] >= 1 and stats["tiles"] >= 10
