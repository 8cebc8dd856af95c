"""Golden model of a PIM channel with DRAM banks (model/channel.py with bank_kind="dram",
model/dram_backend.py) against docs/dram_channel.md.

Every expected cycle below is computed in the test from the contract's formulas (ACT rule,
row hit / miss, column bus, WR_W schedule, RD_OUT slot rule, refresh), never copied from a
run.  Results are checked against the DIMC-kind channel model on the same programs (the DRAM
channel must be bit-identical to a DIMC channel), and refresh over many intervals.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compiler.programs import decode_out
from model.channel import ChannelModel
from model.dram_backend import DramBackend
from model.interface import GoldenModel, state_diff
from model.module import ModuleModel
from spec.dram import GDDR6_AIM_TIMING, SHORT_TIMING, DramOp, to_bursts
from spec.isa import ChannelParams, HostOp, ModuleParams, Op, cmd_fields, encode, host_encode
from spec.params import MacroParams, pack_vec

MP = MacroParams(n_in=16, n_out=2, n_sets=4, n_acc=2)
U = 8                                   # burst_bytes
K, C = U // MP.n_out, MP.n_in * MP.n_out // U      # 4 inputs per column, 4 columns per row
TIMINGS = pytest.mark.parametrize("tm", [SHORT_TIMING, GDDR6_AIM_TIMING], ids=["short", "aim"])


def dparams(tm=SHORT_TIMING, **kw):
    d = dict(macro=MP, n_banks=2, n_gbuf=2, q_depth=4, bank_kind="dram", timing=tm,
             burst_bytes=U)
    d.update(kw)
    return ChannelParams(**d)


def io_costs(tm):
    """nI, nW, nR of docs/dram_channel.md for MP and U."""
    return -(-MP.n_in // U) * tm.tCCDS, tm.tCCDS, -(-2 * MP.n_out // U) * tm.tCCDS


def run_log(p, cmds, **kw):
    """Run ``cmds``; return (trace, model, log of presented bank commands (cycle, bank, op
    name), per-cycle ChanOut list).  Every presented command must be accepted and err 0."""
    ch = ChannelModel(p)
    log, outs = [], []

    def probe(m, c, o):
        outs.append(o)
        assert o.err == 0, (c, o.err)
        for b, op, _, acc in m.backend.presented:
            log.append((c, b, DramOp(op).name))
            assert acc or op == int(DramOp.PRE), (c, b, op)
    tr = ch.run(cmds, probe=probe, **kw)
    assert tr.status == "ok", tr.status
    assert not tr.errors() and not ch.backend.violations, ch.backend.violations[:3]
    return tr, ch, log, outs


def cols(f, b, tm, n=C):
    return [(f + k * tm.tCCDL, b, "MAC") for k in range(n)]


def out_cycles(tr):
    return [c for c, kind, _ in tr.events if kind == "out"]


def mac(p, b, s, g=0, o=0, acc=0, gap=0, **kw):
    return encode(p, Op.MAC, bank=b, set=s, g=g, o=o, acc=acc, **kw), gap


def rd(p, b, o, gap=0):
    return encode(p, Op.RD_OUT, bank=b, o=o), gap


# --- timing ---------------------------------------------------------------------------------
@TIMINGS
def test_single_mac_from_reset(tm):
    """MAC issued in cycle 1 (enqueued in 0) on a closed bank: ACT at t+1 = 2, columns from
    2 + tRCDRDMAC, tCCDL apart; result visible at l+2, so the RD_OUT issues at l+2 and
    out.valid is 1 from l+3; busy[0] exactly in cycles 2..l."""
    p = dparams(tm)
    tr, ch, log, outs = run_log(p, [mac(p, 0, 1), rd(p, 0, 0)])
    f = 2 + tm.tRCDRDMAC
    last = f + (C - 1) * tm.tCCDL
    assert log == [(2, 0, "ACT")] + cols(f, 0, tm)
    assert out_cycles(tr) == [last + 3]
    assert [c for c, o in enumerate(outs) if o.busy] == list(range(2, last + 1))
    assert all(o.busy in (0, 1) for o in outs)


@TIMINGS
def test_mac_after_wr_inp_waits_for_the_input_bus(tm):
    """WR_INP issued in 1 is done from 1 + nI: the dependent MAC issues at 1 + nI; the
    result equals W x."""
    p = dparams(tm)
    nI, _, _ = io_costs(tm)
    rng = np.random.default_rng(1)
    W = rng.integers(-128, 128, (MP.n_in, MP.n_out))
    x = rng.integers(-128, 128, MP.n_in)
    wr = [(encode(p, Op.WR_W, bank=1, set=2, row=c, data=int.from_bytes(bu, "little")), 0)
          for c, bu in enumerate(to_bursts(W, U))]
    ch = ChannelModel(p)
    assert ch.run(wr).status == "ok"                # weights land in bank 1, row 2
    log = []

    def probe(m, c, o):
        log.extend((c, b, DramOp(op).name) for b, op, _, _ in m.backend.presented)
    tr = ch.run([(encode(p, Op.WR_INP, g=1, data=pack_vec(x, 8)), 0), mac(p, 1, 2, g=1, o=1),
                 rd(p, 1, 1)], power_up=False, probe=probe)   # the arrays are kept
    assert tr.status == "ok" and not tr.errors()
    t_mac = 1 + nI
    f = t_mac + 1 + tm.tRCDRDMAC
    assert log == [(t_mac + 1, 1, "ACT")] + cols(f, 1, tm)
    assert [decode_out(p, w) for w in tr.outs] == [(1, 1, (x @ W).tolist())]


@TIMINGS
def test_row_hit_then_miss(tm):
    """Hit: f = max(t+1, Lc + tCCDL, colhi); miss on an open bank: PRE at max(t+1, A + tRAS,
    Lc + tRTP), ACT at max(PRE + tRP, A + tRC), columns at ACT + tRCDRDMAC."""
    p = dparams(tm)
    tr, ch, log, _ = run_log(p, [mac(p, 0, 0), mac(p, 0, 0, o=1), mac(p, 0, 1)])
    a1, f1 = 2, 2 + tm.tRCDRDMAC
    l1 = f1 + (C - 1) * tm.tCCDL
    t2 = l1                                          # R[0] = l1
    f2 = max(t2 + 1, l1 + tm.tCCDL, l1 + tm.tCCDS)
    l2 = f2 + (C - 1) * tm.tCCDL
    t3 = l2
    pre = max(t3 + 1, a1 + tm.tRAS, l2 + tm.tRTP)
    a3 = max(pre + tm.tRP, a1 + tm.tRRDS, a1 + tm.tRC)
    f3 = max(a3 + tm.tRCDRDMAC, l2 + tm.tCCDS)
    assert log == ([(a1, 0, "ACT")] + cols(f1, 0, tm) + cols(f2, 0, tm)
                   + [(pre, 0, "PRE"), (a3, 0, "ACT")] + cols(f3, 0, tm))


@TIMINGS
def test_two_banks_trrd_and_column_bus(tm):
    """Bank 1's ACT waits tRRDS after bank 0's; its columns wait for bank 0's stream
    (colhi = l0 + tCCDS)."""
    p = dparams(tm)
    tr, ch, log, _ = run_log(p, [mac(p, 0, 0), mac(p, 1, 3)])
    a0, f0 = 2, 2 + tm.tRCDRDMAC
    l0 = f0 + (C - 1) * tm.tCCDL
    a1 = max(3, a0 + tm.tRRDS)
    f1 = max(a1 + tm.tRCDRDMAC, l0 + tm.tCCDS)
    assert f1 == l0 + tm.tCCDS or tm is GDDR6_AIM_TIMING     # SHORT: the bus binds
    assert sorted(log) == sorted([(a0, 0, "ACT"), (a1, 1, "ACT")] + cols(f0, 0, tm)
                                 + cols(f1, 1, tm))


def test_five_acts_tfaw():
    """Five MACs on five closed banks, one issued per cycle from 1: ACTs tRRDS apart, the
    fifth at least tFAW after the first."""
    tm = dataclasses.replace(SHORT_TIMING, tFAW=20)
    p = dparams(tm, n_banks=5)
    tr, ch, log, _ = run_log(p, [mac(p, b, 0) for b in range(5)])
    acts = [c for c, b, op in log if op == "ACT"]
    exp = [2]
    for i in range(1, 5):
        exp.append(max(i + 2, exp[-1] + tm.tRRDS, (exp[-4] if i >= 4 else -10 ** 9) + tm.tFAW))
    assert exp[4] == 2 + tm.tFAW > exp[3] + tm.tRRDS      # tFAW binds
    assert acts == exp


def test_mac_ab_lockstep_hit_and_single_bank_after():
    """MAC_AB: one ACT for all banks, columns on every bank in the same cycles; a hit
    MAC_AB at max(t+1, Lc + tCCDL, colhi = l + tCCDL); then a single-bank miss on bank 1 and
    a hit on bank 0 that waits for bank 1's stream."""
    tm = SHORT_TIMING
    p = dparams(tm, all_bank=True)
    tr, ch, log, _ = run_log(p, [mac(p, 0, 0, ab=1), mac(p, 0, 0, o=1, ab=1), mac(p, 1, 1),
                                 mac(p, 0, 0, acc=1)])
    f1 = 2 + tm.tRCDRDMAC
    l1 = f1 + (C - 1) * tm.tCCDL
    f2 = max(l1 + 1, l1 + tm.tCCDL, l1 + tm.tCCDL)
    l2 = f2 + (C - 1) * tm.tCCDL
    t3 = l2
    pre = max(t3 + 1, 2 + tm.tRAS, l2 + tm.tRTP)
    a3 = max(pre + tm.tRP, 2 + tm.tRRDS, 2 + tm.tRC)
    f3 = max(a3 + tm.tRCDRDMAC, l2 + tm.tCCDL)
    l3 = f3 + (C - 1) * tm.tCCDL
    f4 = max(t3 + 2, l2 + tm.tCCDL, l3 + tm.tCCDS)
    exp = ([(2, 0, "ACT"), (2, 1, "ACT")] + sorted(cols(f1, 0, tm) + cols(f1, 1, tm))
           + sorted(cols(f2, 0, tm) + cols(f2, 1, tm))
           + [(pre, 1, "PRE"), (a3, 1, "ACT")] + cols(f3, 1, tm) + cols(f4, 0, tm))
    assert sorted(log) == sorted(exp)
    assert ch.backend.state()["acts"] == [None, None, 2, a3]   # the all-bank ACT: one entry
    # the column bus after an all-bank stream is free from l + tCCDL (not l + tCCDS)
    tr, ch, log, _ = run_log(p, [mac(p, 0, 0, ab=1), rd(p, 1, 1, gap=f1 - 1)])
    assert out_cycles(tr) == [max(f1 + 1, l1 + tm.tCCDL) + 1]
    assert tm.tCCDL > tm.tCCDS


@TIMINGS
def test_wr_w_closed_then_wr_w_beats_mac(tm):
    """WR_W on a closed bank: ACT t+1, WR at ACT + tRCDWR, PRE at max(ACT + tRAS, WR +
    wr_to_pre), done from PRE + 1.  In that cycle a second WR_W (I/O) and the dependent MAC
    are both ready: the WR_W issues, the MAC waits for its R = PRE2 + 1."""
    p = dparams(tm)
    _, nW, _ = io_costs(tm)
    tr, ch, log, _ = run_log(p, [(encode(p, Op.WR_W, bank=0, set=0, row=1, data=5), 0),
                                 mac(p, 0, 0),
                                 (encode(p, Op.WR_W, bank=0, set=1, row=2, data=7), 0)])
    a1 = 2
    w1 = a1 + tm.tRCDWR
    p1 = max(a1 + tm.tRAS, w1 + tm.wr_to_pre)
    t2 = p1 + 1                     # R[0] = p1 + 1 (and ioready = 1 + nW long past)
    assert t2 >= 1 + nW
    a2 = max(t2 + 1, p1 + tm.tRP, a1 + tm.tRRDS, a1 + tm.tRC)
    w2 = max(a2 + tm.tRCDWR, w1 + tm.tCCDS)
    p2 = max(a2 + tm.tRAS, w2 + tm.wr_to_pre)
    t3 = p2 + 1
    a3 = max(t3 + 1, p2 + tm.tRP, a2 + tm.tRRDS, a2 + tm.tRC)
    f3 = a3 + tm.tRCDRDMAC
    assert log == ([(a1, 0, "ACT"), (w1, 0, "WR"), (p1, 0, "PRE"), (a2, 0, "ACT"),
                    (w2, 0, "WR"), (p2, 0, "PRE"), (a3, 0, "ACT")] + cols(f3, 0, tm))
    arr = ch.backend.banks[0].state()["array"]
    assert arr[0, 1 * U] == 5 and arr[1, 2 * U] == 7      # column r of row s


@TIMINGS
def test_wr_w_on_open_bank_precharges_first(tm):
    """A WR_W after a MAC on the same page (its dependency) issues at l+2 and precharges the
    open row: PRE at max(t+1, A + tRAS, Lc + tRTP), ACT at max(PRE + tRP, A + tRC), WR at
    max(ACT + tRCDWR, colhi), close at max(ACT + tRAS, WR + wr_to_pre); the next MAC on the
    page issues at close + 1."""
    p = dparams(tm)
    tr, ch, log, _ = run_log(p, [mac(p, 0, 0),
                                 (encode(p, Op.WR_W, bank=0, set=0, row=0, data=3), 0),
                                 mac(p, 0, 0, o=1)])
    f0 = 2 + tm.tRCDRDMAC
    l0 = f0 + (C - 1) * tm.tCCDL
    t = l0 + 2
    p0 = max(t + 1, 2 + tm.tRAS, l0 + tm.tRTP)
    a = max(p0 + tm.tRP, 2 + tm.tRRDS, 2 + tm.tRC)
    w = max(a + tm.tRCDWR, l0 + tm.tCCDS)
    pc = max(a + tm.tRAS, w + tm.wr_to_pre)
    a2 = max(pc + 2, pc + tm.tRP, a + tm.tRRDS, a + tm.tRC)
    assert log == ([(2, 0, "ACT")] + cols(f0, 0, tm)
                   + [(p0, 0, "PRE"), (a, 0, "ACT"), (w, 0, "WR"), (pc, 0, "PRE"),
                      (a2, 0, "ACT")] + cols(a2 + tm.tRCDRDMAC, 0, tm))


def test_rd_out_gap_rule():
    """RD_OUT slot: it issues in the gap before a stream scheduled but not started (t >=
    colprev and t + nR <= collo), at 2 before the first stream, and waits for colhi when it
    arrives during a running stream."""
    tm = SHORT_TIMING
    nI, _, nR = io_costs(tm)
    p = dparams(tm)
    f0 = 2 + tm.tRCDRDMAC
    l0 = f0 + (C - 1) * tm.tCCDL
    # (a) before / during the first stream (collo = f0, colprev = -inf): a RD_OUT enqueued
    # in cycle e issues in e + 1 if e + 1 + nR <= f0, else at colhi = l0 + tCCDS
    for e in (1, f0 - nR - 1, f0 - nR, f0):
        tr, ch, log, _ = run_log(p, [mac(p, 0, 0), rd(p, 1, 1, gap=e - 1)])
        t_r = e + 1 if e + 1 + nR <= f0 else max(e + 1, l0 + tm.tCCDS)
        assert out_cycles(tr) == [t_r + 1], e
    # (b) in the gap before a scheduled row-miss stream
    tr, ch, log, _ = run_log(p, [mac(p, 0, 0), rd(p, 0, 0), mac(p, 0, 1),
                                 (encode(p, Op.WR_INP, g=1, data=9), 0), rd(p, 1, 0),
                                 rd(p, 0, 0)])
    t_r1 = l0 + 2
    t_b = t_r1 + nR                                  # MAC B waits for RD_OUT 1 (orr)
    pre = max(t_b + 1, 2 + tm.tRAS, l0 + tm.tRTP)
    a_b = max(pre + tm.tRP, 2 + tm.tRRDS, 2 + tm.tRC)
    f_b = max(a_b + tm.tRCDRDMAC, l0 + tm.tCCDS, t_r1 + nR)
    l_b = f_b + (C - 1) * tm.tCCDL
    t_w = t_r1 + nR                                  # ioready after RD_OUT 1
    t_r2 = t_w + nI
    assert t_r2 < l_b + tm.tCCDS and t_r2 >= l0 + tm.tCCDS and t_r2 + nR <= f_b
    assert out_cycles(tr) == [t_r1 + 1, t_r2 + 1, l_b + 2 + 1]


def test_rd_out_same_cycle_delays_mac_columns():
    """A RD_OUT and a row-hit MAC issuing in the same cycle t: the MAC's first column is at
    rdend' = t + nR (nR = 2 with GDDR6-AiM's tCCDS), not t + 1."""
    tm = GDDR6_AIM_TIMING
    nI, _, nR = io_costs(tm)
    assert nR > 1
    p = dparams(tm)
    T = 100
    cmds = [mac(p, 0, 0), (encode(p, Op.WR_INP, g=1, data=1), T - 3), rd(p, 1, 1),
            mac(p, 0, 0, g=1, o=1)]
    tr, ch, log, _ = run_log(p, cmds)
    f0 = 2 + tm.tRCDRDMAC
    l0 = f0 + (C - 1) * tm.tCCDL
    t = T - 1 + nI                   # WR_INP issued in T - 1: ioready and its done bit
    assert t > l0 + tm.tCCDS
    f = max(t + 1, l0 + tm.tCCDL, l0 + tm.tCCDS, t + nR)
    assert f == t + nR
    assert log == [(2, 0, "ACT")] + cols(f0, 0, tm) + cols(f, 0, tm)
    assert out_cycles(tr) == [t + 1]


@TIMINGS
def test_wr_w_takes_a_column_bus_slot(tm):
    """A WR_W on bank 1 issued while bank 0's MAC stream is scheduled: its WR waits for
    colhi = l0 + tCCDS; its row closes at max(ACT + tRAS, WR + wr_to_pre)."""
    p = dparams(tm)
    tr, ch, log, _ = run_log(p, [mac(p, 0, 0),
                                 (encode(p, Op.WR_W, bank=1, set=0, row=3, data=1), 0)])
    f0 = 2 + tm.tRCDRDMAC
    l0 = f0 + (C - 1) * tm.tCCDL
    a1 = max(3, 2 + tm.tRRDS)                # WR_W issued in cycle 2
    w = max(a1 + tm.tRCDWR, l0 + tm.tCCDS)
    assert w == l0 + tm.tCCDS > a1 + tm.tRCDWR
    pc = max(a1 + tm.tRAS, w + tm.wr_to_pre)
    assert sorted(log) == sorted([(2, 0, "ACT"), (a1, 1, "ACT"), (w, 1, "WR"), (pc, 1, "PRE")]
                                 + cols(f0, 0, tm))


@TIMINGS
def test_in_order_waits_for_wr_w_close(tm):
    """In order, the command after a WR_W issues when the WR_W is done, at PRE + 1: a MAC on
    the other bank then activates at PRE + 2."""
    p = dparams(tm, dcs=False)
    tr, ch, log, _ = run_log(p, [(encode(p, Op.WR_W, bank=0, set=0, row=0, data=1), 0),
                                 mac(p, 1, 0)])
    w = 2 + tm.tRCDWR
    pc = max(2 + tm.tRAS, w + tm.wr_to_pre)
    a = max(pc + 2, 2 + tm.tRRDS)
    assert log == [(2, 0, "ACT"), (w, 0, "WR"), (pc, 0, "PRE"), (a, 1, "ACT")] \
        + cols(a + tm.tRCDRDMAC, 1, tm)


@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
def test_in_order_vs_dcs(dcs):
    """In order: each command waits until every issued command is done (WR_INP after nI, a
    MAC at l+2); DCS: the second MAC issues the cycle after the first, the RD_OUT at
    max(l1 + 2, colhi) (no gap before the second stream)."""
    tm = SHORT_TIMING
    nI, _, nR = io_costs(tm)
    p = dparams(tm, dcs=dcs)
    x = (encode(p, Op.WR_INP, g=0, data=3), 0)
    tr, ch, log, _ = run_log(p, [x, mac(p, 0, 0), mac(p, 1, 0, o=1), rd(p, 0, 0)])
    t1 = 1 + nI
    a1 = t1 + 1
    f1 = a1 + tm.tRCDRDMAC
    l1 = f1 + (C - 1) * tm.tCCDL
    t2 = t1 + 1 if dcs else l1 + 2
    a2 = max(t2 + 1, a1 + tm.tRRDS)
    f2 = max(a2 + tm.tRCDRDMAC, l1 + tm.tCCDS)
    l2 = f2 + (C - 1) * tm.tCCDL
    if dcs:
        t_r = l1 + 2
        if not (t_r >= l1 + tm.tCCDS and t_r + nR <= f2):
            t_r = max(t_r, l2 + tm.tCCDS)
    else:
        t_r = l2 + 2
    assert sorted(log) == sorted([(a1, 0, "ACT"), (a2, 1, "ACT")] + cols(f1, 0, tm)
                                 + cols(f2, 1, tm))
    assert out_cycles(tr) == [t_r + 1]


# --- results: DRAM channel == DIMC channel ------------------------------------------------
def _page_program(pd, pm, rng, n):
    """The same random program for a DRAM-kind (pd) and a DIMC-kind (pm) channel: page writes
    (C bursts vs n_in rows), input tiles, MACs (MAC_AB with all_bank), RD_OUTs."""
    dd, dm = [], []
    for _ in range(n):
        op = rng.choice(["page", "inp", "mac", "rd"], p=[0.12, 0.18, 0.45, 0.25])
        b, s = int(rng.integers(pd.n_banks)), int(rng.integers(MP.n_sets))
        g, o = int(rng.integers(pd.n_gbuf)), int(rng.integers(MP.n_acc))
        gap = int(rng.choice([0, 0, 0, 1, 5]))
        if op == "page":
            W = rng.integers(-128, 128, (MP.n_in, MP.n_out))
            dd += [(encode(pd, Op.WR_W, bank=b, set=s, row=c,
                           data=int.from_bytes(bu, "little")), gap)
                   for c, bu in enumerate(to_bursts(W, U))]
            dm += [(encode(pm, Op.WR_W, bank=b, set=s, row=r, data=pack_vec(W[r], 8)), gap)
                   for r in range(MP.n_in)]
            continue
        if op == "inp":
            f = dict(g=g, data=pack_vec(rng.integers(-128, 128, MP.n_in), 8))
            o_ = Op.WR_INP
        elif op == "mac":
            f, o_ = dict(bank=b, set=s, g=g, o=o, acc=int(rng.integers(2))), Op.MAC
            if pd.all_bank and rng.random() < 0.3:
                f.update(bank=0, ab=1)
        else:
            f, o_ = dict(bank=b, o=o), Op.RD_OUT
        dd.append((encode(pd, o_, **f), gap))
        dm.append((encode(pm, o_, **f), gap))
    return dd, dm


@pytest.mark.parametrize("cfg", ["short_dcs", "short_inorder", "short_ab", "aim_dcs"])
def test_random_programs_equal_dimc(cfg, seed):
    rng = np.random.default_rng(seed)
    tm = GDDR6_AIM_TIMING if cfg.startswith("aim") else SHORT_TIMING
    kw = dict(dcs=cfg != "short_inorder", all_bank=cfg == "short_ab")
    for i in range(3 if cfg != "aim_dcs" else 1):
        nb = int(rng.integers(1, 4))
        pd = dparams(tm, n_banks=nb, q_depth=int(rng.integers(2, 6)), **kw)
        pm = dataclasses.replace(pd, bank_kind="dimc")
        dd, dm = _page_program(pd, pm, rng, 60)
        rp = float(rng.choice([1.0, 0.5]))
        ref = ChannelModel(pm).run(dm, out_ready_p=rp, seed=seed + i)
        tr, ch, _, _ = run_log(pd, dd, out_ready_p=rp, seed=seed + i)
        assert ref.status == "ok" and len(ref.outs) > 0
        assert tr.outs == ref.outs, (cfg, i)


def test_refresh_long_stream(seed):
    """SHORT_TIMING (tREFI 120) over many intervals: err 0 in every cycle, every scheduled
    command accepted, results equal the DIMC channel's, every bank starts exactly one
    refresh per interval, within the interval's first cycles (k*tREFI <= start)."""
    tm = SHORT_TIMING
    rng = np.random.default_rng(seed)
    pd = dparams(tm, all_bank=True)
    pm = dataclasses.replace(pd, bank_kind="dimc")
    dd, dm = _page_program(pd, pm, rng, 150)
    ref = ChannelModel(pm).run(dm)
    starts = [[], []]
    prev = [0, 0]

    def count(m, c):
        for b, o in enumerate(m.backend.last_outs):
            if o.refreshing and not prev[b]:
                starts[b].append(c - 1)              # refreshing is 1 from start + 1
            prev[b] = o.refreshing
    ch = ChannelModel(pd)
    seen = []

    def probe(m, c, o):
        assert o.err == 0, (c, o.err)
        count(m, c)
        seen.append(bool(m.backend.gate()))
    tr = ch.run(dd, probe=probe)
    assert tr.status == "ok" and not tr.errors() and not ch.backend.violations
    assert tr.outs == ref.outs
    n_int = tr.cycles // tm.tREFI
    assert n_int >= 6, tr.cycles
    # let the last request be served: idle until the middle of the current interval
    while ch.cycle % tm.tREFI != tm.tREFI // 2:
        c = ch.cycle
        o = ch.step(0, 0, 1)
        assert o.err == 0
        count(ch, c)
    n = ch.cycle // tm.tREFI
    for b in range(2):
        assert len(starts[b]) == n, (b, starts[b])
        for k, s in enumerate(starts[b], 1):
            assert k * tm.tREFI <= s < k * tm.tREFI + tm.tREFI // 2, (b, k, s)
    assert any(seen) and min(ch.backend.closes) > 0      # the close rule was needed


def test_reset_mid_stream_and_protocol(seed):
    """``reset`` mid-stream (schedules pending, banks open) gives the state of a fresh model
    (except the GBuf data and the cell arrays, which rst keeps); a rerun is clean.  The
    model satisfies the GoldenModel protocol."""
    rng = np.random.default_rng(seed)
    pd = dparams(SHORT_TIMING)
    pm = dataclasses.replace(pd, bank_kind="dimc")
    dd, _ = _page_program(pd, pm, rng, 40)
    ch = ChannelModel(pd)
    assert isinstance(ch, GoldenModel)
    first = ch.run(dd)
    ch.reset(power_up=True)
    i, be = 0, ch.backend
    while i < len(dd) and not (i > len(dd) // 2 and (be.busy() or be.n_pending)):
        i += ch.step(1, dd[i][0], 1).cmd_ready
    assert i < len(dd), "no work in flight to abort"
    ch.reset()
    assert state_diff(ch.state(), ChannelModel(pd).state(), ignore=("cycle", "gbuf")) == []
    again = ch.run(dd, power_up=False)      # arrays / GBuf as the aborted run left them
    assert again.status == "ok" and not again.errors() and not ch.backend.violations
    assert len(again.outs) == len(first.outs)
    assert ch.run(dd).outs == first.outs


# --- module with DRAM channels ----------------------------------------------------------------
def test_module_with_dram_channels(seed):
    """A ModuleModel of DRAM channels gives the DIMC module's results: host WR_W of a DRAM
    channel carries one burst (row field = column)."""
    rng = np.random.default_rng(seed)
    W = [rng.integers(-128, 128, (MP.n_in, MP.n_out)) for _ in range(2)]
    x = rng.integers(-128, 128, MP.n_in)
    outs = {}
    for kind in ("dram", "dimc"):
        cp = dparams(SHORT_TIMING, bank_kind=kind)
        mp = ModuleParams(channel=cp, n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4,
                          host_ready=True)
        H = lambda op, **f: (host_encode(mp, int(op), **f), 0)     # noqa: E731
        prog = [H(HostOp.MAP, vp=0, pp=0 * MP.n_sets + 1, rid=0),
                H(HostOp.MAP, vp=1, pp=1 * MP.n_sets + 2, rid=0)]
        for vp in range(2):
            if kind == "dram":
                prog += [H(HostOp.WR_W, chmask=3, rid=0, vp=vp, row=c,
                           data=int.from_bytes(bu, "little"))
                         for c, bu in enumerate(to_bursts(W[vp], U))]
            else:
                prog += [H(HostOp.WR_W, chmask=3, rid=0, vp=vp, row=r, data=pack_vec(W[vp][r], 8))
                         for r in range(MP.n_in)]
        prog += [H(HostOp.WR_INP, chmask=3, g=1, data=pack_vec(x, 8)),
                 H(HostOp.MAC, chmask=3, rid=0, vp=0, g=1, o=0),
                 H(HostOp.MAC, chmask=2, rid=0, vp=1, g=1, o=1),
                 H(HostOp.RD_OUT, chmask=3, rid=0, vp=0, o=0),
                 H(HostOp.RD_OUT, chmask=2, rid=0, vp=1, o=1)]
        r = ModuleModel(mp).run(prog)
        assert r.status == "ok" and not r.errs and not r.chan_errs, (kind, r.errs, r.chan_errs)
        outs[kind] = r.outs
    assert len(outs["dram"]) == 3 and outs["dram"] == outs["dimc"]


# --- bad input --------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="bank_kind='sram'"):
        dparams(bank_kind="sram")
    with pytest.raises(ValueError, match="burst_bytes"):        # 12 x 2 / 8 = 3 columns
        dparams(macro=MacroParams(n_in=12, n_out=2, n_sets=4, n_acc=2))
    with pytest.raises(ValueError, match="macro"):
        dparams(macro=MacroParams(n_in=16, n_out=2, x_bits=4, n_sets=4, n_acc=2))
    with pytest.raises(ValueError, match="bank_kind"):
        DramBackend(ChannelParams(macro=MP))
    p = dparams()
    ch = ChannelModel(p)
    nbits = sum(f.width for f in cmd_fields(p).values())
    assert nbits == ch.inputs[1][1]
    with pytest.raises(ValueError, match="cmd_payload"):
        ch.step(1, 1 << nbits, 1)
    with pytest.raises(ValueError, match="cmd_valid"):
        ch.step(2, 0, 1)
    with pytest.raises(ValueError, match=r"cmds\[1\]"):
        ch.run([mac(p, 0, 0), (-1, 0)])
    assert ch.cycle == 0 and ch.state()["dram"]["sched"] == [[], []]
