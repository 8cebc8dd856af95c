"""hdl/channel.py with DRAM banks (hdl/dram_backend.py) against docs/dram_channel.md, in
amaranth.sim on a small channel.

Expected results are numpy integer dot products of the weights the test wrote (as bursts from
``spec.dram.to_bursts``); expected cycles are the contract's formulas written out here for
each scenario (ACT rule, PRE rule, column stream, WR_W close, done visibility), from
``SHORT_TIMING``'s fields.  Nothing comes from model/ or from an earlier run.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from hdl.channel import FAULTS, PimChannel
from hdl.dram_backend import horizon, io_costs
from spec.dram import SHORT_TIMING, DramOp, to_bursts
from spec.isa import ChannelParams, Op, encode, out_fields
from spec.params import MacroParams, pack_vec, unpack, unpack_vec
from tb.amsim import simulate

T = SHORT_TIMING
MP = MacroParams(n_in=16, n_out=2, n_sets=4, n_acc=2)
U = 8                               # burst bytes: K = 4 inputs per column, C = 4 columns
K, C = U // MP.n_out, MP.n_in * MP.n_out // U


def chan(dcs=True, all_bank=True, n_banks=2, timing=T, **kw):
    return ChannelParams(macro=MP, n_banks=n_banks, n_gbuf=2, q_depth=4, dcs=dcs,
                         all_bank=all_bank, bank_kind="dram", timing=timing, burst_bytes=U,
                         **kw)


# SHORT_TIMING with the channel rules binding: tFAW > 4 tRC, wider column-bus slots
T_BUS = dataclasses.replace(T, tFAW=60, tRRDS=3, tCCDS=2)


def wrap(v, bits):
    m = 1 << bits
    return [((int(a) + (m >> 1)) % m) - (m >> 1) for a in v]


class Prog:
    """A command list with ``("until", cycle)`` / ``("idle",)`` markers and the numpy
    expectation of every RD_OUT."""

    def __init__(self, p, seed=0):
        self.p, self.rng = p, np.random.default_rng(seed)
        B, S, E, G = p.n_banks, MP.n_sets, MP.n_acc, p.n_gbuf
        self.W = np.zeros((B, S, MP.n_in, MP.n_out), dtype=np.int64)
        self.g = np.zeros((G, MP.n_in), dtype=np.int64)
        self.obuf = np.zeros((B, E, MP.n_out), dtype=object)
        self.items, self.expect = [], []

    def cmd(self, op, **f):
        self.items.append(("cmd", encode(self.p, op, **f), op))

    def until(self, cycle):
        self.items.append(("until", cycle))

    def idle(self):
        self.items.append(("idle",))

    def reset(self):
        """One cycle of ``rst`` (no command offered): queues and OBuf cleared; the GBuf and
        the banks' cell arrays keep their contents."""
        self.items.append(("rst",))
        self.obuf[:] = 0

    def weights(self, b, s, w=None):
        w = self.rng.integers(-128, 128, size=(MP.n_in, MP.n_out)) if w is None else w
        self.W[b, s] = w
        for c, burst in enumerate(to_bursts(w, U)):
            self.cmd(Op.WR_W, bank=b, set=s, row=c, data=int.from_bytes(burst, "little"))

    def burst(self, b, s, c):
        """Rewrite column burst c of (b, s) with new random weights."""
        self.W[b, s, c * K:(c + 1) * K] = self.rng.integers(-128, 128, size=(K, MP.n_out))
        data = to_bursts(self.W[b, s], U)[c]
        self.cmd(Op.WR_W, bank=b, set=s, row=c, data=int.from_bytes(data, "little"))

    def inp(self, g, x=None):
        x = self.rng.integers(-128, 128, size=MP.n_in) if x is None else np.asarray(x)
        self.g[g] = x
        self.cmd(Op.WR_INP, g=g, data=pack_vec([int(v) for v in x], 8))

    def mac(self, b, s, g, o, acc=0, ab=0):
        for bb in (range(self.p.n_banks) if ab else (b,)):
            y = self.g[g].astype(object) @ self.W[bb, s].astype(object)
            self.obuf[bb, o] = wrap(y + (self.obuf[bb, o] if acc else 0), MP.acc_width)
        f = {"ab": ab} if self.p.all_bank else {}
        self.cmd(Op.MAC, bank=0 if ab else b, set=s, g=g, o=o, acc=acc, **f)

    def rd(self, b, o):
        self.expect.append((list(self.obuf[b, o]), b, o))
        self.cmd(Op.RD_OUT, bank=b, o=o)


def run(p, prog, *, fault=None, limit=3000, check_err=True):
    """Drive the program (each command held valid until accepted, ``out.ready`` = 1) until
    all is accepted and the channel is idle.  Returns a dict of per-cycle traces."""
    dut = PimChannel(p, fault=fault)
    of = out_fields(p)
    tr = {"accept": [], "io_go": [], "cq_go": [], "outs": [], "err": [], "busy": [],
          "idle": [], "refreshing": [], "ref_pend": [], "bank_cmd": []}

    async def bench(ctx, rst):
        items, i, c = prog.items, 0, 0
        ctx.set(dut.out.ready, 1)
        while True:
            it = items[i] if i < len(items) else None
            if it is not None and it[0] == "until" and c >= it[1]:
                i += 1
                continue
            if it is not None and it[0] == "idle" and ctx.get(dut.idle):
                i += 1
                continue
            valid = it is not None and it[0] == "cmd"
            reset = it is not None and it[0] == "rst"
            ctx.set(dut.cmd.payload.as_value(), it[1] if valid else 0)
            ctx.set(dut.cmd.valid, valid)
            ctx.set(rst, reset)
            ready = ctx.get(dut.cmd.ready)
            err = ctx.get(dut.err)
            tr["err"].append(err)
            if check_err:
                assert err == 0, f"cycle {c}: err {err}"
            tr["busy"].append(ctx.get(dut.busy))
            tr["idle"].append(ctx.get(dut.idle))
            tr["refreshing"].append([ctx.get(bk.refreshing) for bk in dut.banks])
            tr["ref_pend"].append([ctx.get(bk.ref_pend) for bk in dut.banks])
            tr["bank_cmd"].append([(ctx.get(bk.cmd.payload.op), ctx.get(bk.cmd.ready))
                                   if ctx.get(bk.cmd.valid) else None for bk in dut.banks])
            if ctx.get(dut.probe["io_go"]):
                tr["io_go"].append((c, ctx.get(dut.probe["io_op"])))
            if ctx.get(dut.probe["cq_go"]):
                tr["cq_go"].append(c)
            if ctx.get(dut.out.valid):
                f = unpack(of, ctx.get(dut.out.payload.as_value()))
                tr["outs"].append((c, unpack_vec(f["y"], MP.n_out, MP.acc_width),
                                   f["bank"], f["o"]))
            if valid and ready:
                tr["accept"].append((c, it[2]))
            await ctx.tick()
            c += 1
            if (valid and ready) or reset:
                i += 1
            if i >= len(items) and ctx.get(dut.idle) and not ctx.get(dut.out.valid):
                break
            assert c < limit, f"timeout after {c} cycles (item {i}/{len(items)})"
        tr["cycles"] = c

    simulate(dut, bench)
    return tr


def results(tr):
    return [(y, b, o) for _, y, b, o in tr["outs"]]


def io_issues(tr, op):
    return [c for c, o in tr["io_go"] if o == op]


# ------------------------------------------------------------------ static checks
def test_params_and_horizon():
    p = chan()
    nI, nW, nR = io_costs(p)
    assert (nI, nW, nR) == (math.ceil(16 / U) * T.tCCDS, T.tCCDS,
                            math.ceil(2 * 2 / U) * T.tCCDS)
    # the horizon covers at least one ACT before the next refresh per bank plus a row's
    # columns and the write recovery
    assert horizon(p) > (p.n_banks + 1) * T.tREFI + T.wr_to_pre + T.tRC
    assert "dram_col_early" in FAULTS
    with pytest.raises(ValueError, match="dram_col_early"):
        PimChannel(ChannelParams(macro=MP, n_banks=2), fault="dram_col_early")


# ------------------------------------------------------------------ one MAC, exact cycles
def test_mac_result_and_cycle():
    """Weights and input written, channel idle after the first refresh (cycle 120, tRFC 11);
    at T0 = 150 a WR_W rewrites one burst of the closed bank, then a MAC and a RD_OUT:

    WR_W issues at t_w = T0+1 (enqueued at T0; every instant in the past): ta_w = t_w+1,
    w = ta_w+tRCDWR, p = max(ta_w+tRAS, w+wr_to_pre), done from p+1 -> the MAC issues at
    t_m = p+1, a miss on a closed bank: ta = max(t_m+1, p+tRP, ta_w+tRC, ta_w+tRRDS),
    f = ta+tRCDRDMAC, l = f+(C-1)tCCDL; result done from l+2 -> RD_OUT issues at l+2
    (ioready and the column bus are free), out.valid from l+3.  busy[0] is 1 in
    t_w+1..p and t_m+1..l."""
    p = chan(all_bank=False)
    pr = Prog(p, seed=1)
    pr.weights(0, 2)
    pr.inp(1)
    pr.idle()
    T0 = 150
    pr.until(T0)
    pr.burst(0, 2, 1)
    pr.mac(0, 2, 1, 1)
    pr.rd(0, 1)
    tr = run(p, pr)
    assert results(tr) == pr.expect
    y = (pr.g[1].astype(object) @ pr.W[0, 2].astype(object))
    assert tr["outs"][0][1] == wrap(y, MP.acc_width)            # numpy W.x
    assert [c for c, op in tr["accept"] if c >= T0] == [T0, T0 + 1, T0 + 2]
    t_w = T0 + 1
    ta_w = t_w + 1
    w = ta_w + T.tRCDWR
    pw = max(ta_w + T.tRAS, w + T.wr_to_pre)
    t_m = pw + 1
    ta = max(t_m + 1, pw + T.tRP, ta_w + T.tRC, ta_w + T.tRRDS)
    f = ta + T.tRCDRDMAC
    last = f + (C - 1) * T.tCCDL
    assert [c for c, op in tr["io_go"] if c >= T0] == [t_w, last + 2]
    assert tr["cq_go"] == [t_m]
    assert tr["outs"][0][0] == last + 3
    busy0 = [c for c in range(T0, tr["cycles"]) if tr["busy"][c] & 1]
    assert busy0 == list(range(t_w + 1, pw + 1)) + list(range(t_m + 1, last + 1))
    assert not any(tr["busy"][c] & 2 for c in range(tr["cycles"]))   # bank 1 untouched
    # idle once the RD_OUT (issued at l+2) is done, nR later
    nR = io_costs(p)[2]
    assert tr["idle"][last + 1 + nR] == 0 and tr["idle"][last + 2 + nR] == 1


def test_wrw_on_open_bank_then_mac():
    """MAC opens row 0 of bank 0 (miss at t1), a WR_W to that row (it waits for the MAC:
    WAR on (0, 0)) precharges first, then a MAC re-reads the row: results before and after
    the rewrite; cycles from the PRE rule max(t+1, A+tRAS, Lc+tRTP) and the WR_W close."""
    p = chan(all_bank=False)
    pr = Prog(p, seed=2)
    pr.weights(0, 0)
    pr.inp(0)
    pr.idle()
    T0 = 150
    pr.until(T0)
    pr.mac(0, 0, 0, 0)                 # enqueued T0, issues T0+1
    pr.burst(0, 0, 3)                  # WR_W (0, 0) col 3: after the MAC is done
    pr.mac(0, 0, 0, 1)                 # after the WR_W is done
    pr.rd(0, 0)
    pr.rd(0, 1)
    tr = run(p, pr)
    assert results(tr) == pr.expect
    t1 = T0 + 1
    a1 = t1 + 1                        # closed bank, all past
    l1 = a1 + T.tRCDRDMAC + (C - 1) * T.tCCDL
    t_w = l1 + 2                       # done of the MAC (the WR_W's dependency)
    p0 = max(t_w + 1, a1 + T.tRAS, l1 + T.tRTP)
    a_w = max(p0 + T.tRP, a1 + T.tRC, a1 + T.tRRDS)
    w = a_w + T.tRCDWR
    pw = max(a_w + T.tRAS, w + T.wr_to_pre)
    t2 = pw + 1
    a2 = max(t2 + 1, pw + T.tRP, a_w + T.tRC, a_w + T.tRRDS)
    l2 = a2 + T.tRCDRDMAC + (C - 1) * T.tCCDL
    assert tr["cq_go"] == [t1, t2]
    wrw = [c for c, op in tr["io_go"] if op == Op.WR_W and c >= T0]
    assert wrw == [t_w]
    assert io_issues(tr, Op.RD_OUT) == [t_w + 1, l2 + 2]   # RD_OUT o0: after the MAC (bus
    #                                                         free: ioready = t_w + nW)


def test_allbank_mac_both_banks():
    """MAC_AB: every bank computes its own W[b][s] x gbuf[g] in lockstep; both results read
    back; cycle: one all-bank ACT at t+1, result done from l+2 for both banks."""
    p = chan()
    pr = Prog(p, seed=3)
    pr.weights(0, 1)
    pr.weights(1, 1)
    pr.inp(0)
    pr.idle()
    T0 = 150
    pr.until(T0)
    pr.mac(0, 1, 0, 0, ab=1)
    pr.rd(0, 0)
    pr.rd(1, 0)
    pr.mac(0, 1, 0, 1, ab=1)           # a row hit on both banks, into o1
    pr.mac(0, 1, 0, 1, acc=1, ab=1)    # accumulate
    pr.rd(1, 1)
    pr.rd(0, 1)
    tr = run(p, pr)
    assert results(tr) == pr.expect
    assert pr.expect[0][0] != pr.expect[1][0]          # the banks hold different weights
    nR = io_costs(p)[2]
    t = T0 + 1
    last = t + 1 + T.tRCDRDMAC + (C - 1) * T.tCCDL       # one all-bank ACT at t+1
    # MAC_AB 2 and 3 are row hits that issue when R[b] = l is reached, their columns
    # back to back on the bus (all-bank: colhi = l + tCCDL)
    t2 = last
    l2 = max(t2 + 1, last + T.tCCDL) + (C - 1) * T.tCCDL
    t3 = l2
    l3 = max(t3 + 1, l2 + T.tCCDL) + (C - 1) * T.tCCDL
    assert tr["cq_go"] == [t, t2, t3]
    both = [c for c in range(T0, tr["cycles"]) if tr["busy"][c] == 3]
    assert both == list(range(t + 1, l3 + 1))
    assert tr["busy"][t] == 0 and tr["busy"][l3 + 1] == 0
    # the RD_OUTs need a column-bus slot: t >= colhi, or nR cycles before a stream that
    # has not started; the hits leave no gap, so the first RD_OUT (done from l+2) waits
    # for colhi = l3 + tCCDL, the others follow nR apart
    rd0 = l3 + T.tCCDL
    assert io_issues(tr, Op.RD_OUT) == [rd0 + i * nR for i in range(4)]


@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
def test_inorder_vs_dcs(dcs):
    """A MAC on bank 0, then a WR_INP of the other GBuf entry and a MAC on bank 1 from it.
    DCS: the WR_INP issues while the first MAC runs (at T0+2); in order it waits until the
    MAC is done (l+2), and the second MAC waits for the WR_INP's bus cost (t + nI)."""
    p = chan(dcs=dcs, all_bank=False)
    pr = Prog(p, seed=4)
    pr.weights(0, 0)
    pr.weights(1, 3)
    pr.inp(0)
    pr.idle()
    T0 = 150
    pr.until(T0)
    pr.mac(0, 0, 0, 0)
    pr.inp(1)
    pr.mac(1, 3, 1, 0)
    pr.rd(0, 0)
    pr.rd(1, 0)
    tr = run(p, pr)
    assert results(tr) == pr.expect
    nI, _, nR = io_costs(p)
    t1 = T0 + 1
    a1 = t1 + 1
    l1 = a1 + T.tRCDRDMAC + (C - 1) * T.tCCDL
    inp = [c for c in io_issues(tr, Op.WR_INP) if c >= T0]
    if dcs:
        assert inp == [T0 + 2]
        t2 = T0 + 2 + nI                           # the MAC depends on the WR_INP
        a2 = max(t2 + 1, a1 + T.tRRDS)
        f2 = max(a2 + T.tRCDRDMAC, l1 + T.tCCDS)   # the column bus after bank 0's stream
    else:
        assert inp == [l1 + 2]
        t2 = l1 + 2 + nI
        f2 = t2 + 1 + T.tRCDRDMAC
    assert tr["cq_go"] == [t1, t2]
    l2 = f2 + (C - 1) * T.tCCDL
    rd = io_issues(tr, Op.RD_OUT)
    if dcs:
        # RD_OUT (0, 0) is done from l1+2, but bank 1's stream is scheduled back to back
        # with bank 0's (no gap of nR before f2): it waits for colhi = l2 + tCCDS
        rd0 = l2 + T.tCCDS
        assert rd == [rd0, max(l2 + 2, rd0 + nR)]
    else:
        assert rd == [l2 + 2, l2 + 2 + nR]


def test_rd_out_and_mac_same_cycle():
    """T_BUS (nR = 2): a RD_OUT and a row-hit MAC on the other bank issue in the same cycle t
    (both wait for the WR_INP's bus cost nI); the MAC's first column is at rdend' = t + nR,
    after the RD_OUT's slot (not t+1), so its RD_OUT issues at t + nR + (C-1)tCCDL + 2."""
    p = chan(timing=T_BUS, all_bank=False)
    nI, _, nR = io_costs(p)
    assert nR == 2
    pr = Prog(p, seed=8)
    pr.weights(0, 0)
    pr.weights(1, 0)
    pr.inp(0)
    pr.idle()
    pr.until(150)                      # after the first refresh (rows closed by it)
    pr.mac(0, 0, 0, 0)
    pr.mac(1, 0, 0, 0)                 # bank 1 row 0 stays open
    pr.idle()
    T0 = 200
    pr.until(T0)
    pr.inp(1)                          # issues T0+1, done from T0+1+nI
    pr.rd(0, 0)                        # ioready: T0+1+nI
    pr.mac(1, 0, 1, 1)                 # depends on the WR_INP: T0+1+nI, a row hit
    pr.rd(1, 1)
    tr = run(p, pr)
    assert results(tr) == pr.expect
    t = T0 + 1 + nI
    assert tr["cq_go"][-1] == t
    f = max(t + 1, t + nR)             # Lc + tCCDL and colhi long past
    last = f + (C - 1) * T_BUS.tCCDL
    assert [c for c in io_issues(tr, Op.RD_OUT) if c >= T0] == [t, last + 2]


def test_reset_mid_wrw():
    """rst one cycle after a WR_W issued on an open bank (its PRE presented, its WR not):
    the burst never lands, the schedule is gone, OBuf is 0, the array keeps the weights
    written before, and the refresh timers restart (first request tREFI after the reset)."""
    p = chan(all_bank=False)
    pr = Prog(p, seed=9)
    pr.weights(0, 0)
    pr.weights(0, 1)
    pr.inp(0)
    pr.idle()
    T0 = 150
    pr.until(T0)
    pr.mac(0, 0, 0, 0)                 # issues T0+1, l = T0+2+tRCDRDMAC+(C-1)tCCDL
    pr.rd(0, 0)                        # at l+2
    lost = to_bursts(np.full((MP.n_in, MP.n_out), 7), U)[0]
    pr.cmd(Op.WR_W, bank=0, set=1, row=0, data=int.from_bytes(lost, "little"))  # lost
    last = T0 + 2 + T.tRCDRDMAC + (C - 1) * T.tCCDL
    t_w = last + 3                     # behind the RD_OUT in the I/O queue (ioready)
    X = t_w + 1
    pr.until(X)
    pr.reset()
    pr.rd(0, 0)                        # 0 after the reset
    pr.mac(0, 1, 0, 1)
    pr.rd(0, 1)
    pr.until(X + T.tREFI + 20)
    tr = run(p, pr)
    assert results(tr) == pr.expect
    assert [c for c, op in tr["io_go"] if op == Op.WR_W and c > T0] == [t_w]
    wr = [c for c, xs in enumerate(tr["bank_cmd"]) for x in xs if x and x[0] == DramOp.WR]
    assert wr and max(wr) < T0         # only phase A's bursts were written
    pend = [c for c in range(tr["cycles"]) if tr["ref_pend"][c][0]]
    assert pend[0] == T.tREFI          # the first interval, before the reset
    assert min(c for c in pend if c > X) == X + 1 + T.tREFI


def check_channel_rules(tr, p):
    """The channel-level rules on what the banks accepted: ACTs (an all-bank ACT, the same
    cycle on every bank, is one) at least tRRDS apart and five within no less than tFAW;
    no column command on any bank in the nR cycles of a RD_OUT's bus slot [t, t + nR);
    no command held by a bank (every scheduled one is accepted in its cycle)."""
    t = p.timing
    nR = io_costs(p)[2]
    acts, cols = [], set()
    for c, cmds in enumerate(tr["bank_cmd"]):
        for x in cmds:
            if x is None:
                continue
            op, ready = x
            assert ready or op == DramOp.PRE, f"cycle {c}: {DramOp(op).name} held"
            if op == DramOp.ACT and (not acts or acts[-1] != c):
                acts.append(c)
            if op in (DramOp.MAC, DramOp.WR):
                cols.add(c)
    assert all(b - a >= t.tRRDS for a, b in zip(acts, acts[1:]))
    assert all(b - a >= t.tFAW for a, b in zip(acts, acts[4:]))
    for c in io_issues(tr, Op.RD_OUT):
        assert not cols & set(range(c, c + nR)), f"RD_OUT at {c} overlaps a column"
    return acts


@pytest.mark.parametrize("timing,dcs", [(T, True), (T_BUS, True), (T, False)],
                         ids=["short", "bus_rules", "inorder"])
def test_refresh_run_no_err(timing, dcs):
    """~1000+ cycles of mixed traffic (WR_W, WR_INP, MAC, MAC_AB, RD_OUT on both banks)
    crossing many refresh intervals (tREFI 120): err = 0 every cycle, every result equals
    numpy's, every bank refreshes once per interval and never has two requests pending, no
    command a bank holds, and the channel rules (tRRDS, tFAW, RD_OUT slots) hold."""
    p = chan(dcs=dcs, timing=timing)
    pr = Prog(p, seed=5)
    rng = np.random.default_rng(7)
    for b in range(2):
        for s in range(MP.n_sets):
            pr.weights(b, s)
    for g in range(2):
        pr.inp(g)
    for i in range(60):
        r = rng.random()
        b, s, g, o = (int(rng.integers(n)) for n in (2, MP.n_sets, 2, MP.n_acc))
        if r < 0.1:
            pr.burst(b, s, int(rng.integers(C)))
        elif r < 0.2:
            pr.inp(g)
        elif r < 0.35:
            pr.mac(0, s, g, o, acc=int(rng.integers(2)), ab=1)
        else:
            pr.mac(b, s, g, o, acc=int(rng.integers(2)))
        if rng.random() < 0.5:
            pr.rd(b, o)
    for b in range(2):
        for o in range(MP.n_acc):
            pr.rd(b, o)
    pr.until(800)
    tr = run(p, pr, limit=6000)
    assert results(tr) == pr.expect
    n = tr["cycles"]
    assert n >= 800 and all(e == 0 for e in tr["err"])
    acts = check_channel_rules(tr, p)
    if timing is T_BUS:           # the tFAW rule did bind at least once
        assert any(b - a == timing.tFAW for a, b in zip(acts, acts[4:]))
    for b in range(2):
        starts = [c - 1 for c in range(1, n) if tr["refreshing"][c][b]
                  and not tr["refreshing"][c - 1][b]]
        assert len(starts) == (n - 2) // timing.tREFI
        for k, s0 in enumerate(starts, 1):          # each served in its own interval
            assert k * timing.tREFI <= s0 < (k + 1) * timing.tREFI
        assert max(rp[b] for rp in tr["ref_pend"]) == 1
        # some refreshes found the row open: the executor's close PRE (while ref_pend > 0)
        assert any(x is not None and x[0] == DramOp.PRE and tr["ref_pend"][c][b]
                   for c, xs in enumerate(tr["bank_cmd"]) for x in xs[b:b + 1])


def test_fault_col_early_detected():
    """dram_col_early: the first column of a MAC after an ACT is presented one cycle before
    tRCDRDMAC has elapsed; the bank holds it, so it is lost: err[0] rises and the result
    differs from numpy's (the correct DUT, same program, gives err = 0 and numpy's result)."""
    p = chan(all_bank=False)
    pr = Prog(p, seed=6)
    pr.weights(1, 0)
    pr.inp(0)
    pr.idle()
    pr.until(150)
    pr.mac(1, 0, 0, 0)
    pr.rd(1, 0)
    good = run(p, pr)
    assert results(good) == pr.expect
    bad = run(p, pr, fault="dram_col_early", check_err=False)
    assert any(e & 1 for e in bad["err"])
    assert results(bad) != pr.expect


def test_verilog_hierarchical_export():
    """The DRAM channel converts hierarchically: one ``dram_bank`` module (instantiated B
    times as bank<b>) and ``pim_channel``, with the channel's ports."""
    from hdl.export import hierarchy
    p = chan()
    h = hierarchy(PimChannel(p))
    assert [d.name for d in h.definitions] == ["dram_bank", "pim_channel"]
    assert sum(1 for ln in h.text.splitlines() if ln.strip().startswith("dram_bank ")) == 2
    ports = {n: (k, w) for n, k, w in h.top.ports}
    assert ports["busy"] == ("o", 2) and ports["err"] == ("o", 2)
    from spec.isa import cmd_fields
    from spec.params import width
    assert ports["cmd__payload"][1] == width(cmd_fields(p))
