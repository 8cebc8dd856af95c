"""Tests of the DRAM-PIM bank: spec/dram.py (timing table, parameters, layouts) and the
cycle-exact golden model model/dram_bank.py against the contract docs/dram_bank.md.

Expected cycles are written from the contract's rules (named timing parameters), expected
results from numpy; random tests use the ``seed`` fixture.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest

from model.dram_bank import DramBankModel, DramOut
from model.interface import state_diff
from model.numerics import unpack_signed, wrap
from spec.dram import (GDDR6_AIM_TIMING, SHORT_TIMING, DramBankParams, DramErr, DramOp,
                       DramTiming, cmd_fields, decode, encode, rd_fields, res_fields)
from spec.params import pack, pack_vec

T = replace(SHORT_TIMING, tREFI=5000)            # no refresh inside the rule tests
P = DramBankParams(rows=16, row_bytes=64, burst_bytes=16, n_acc=16, timing=T)
ACT, PRE, MAC, RD, WR = DramOp.ACT, DramOp.PRE, DramOp.MAC, DramOp.RD, DramOp.WR


def rule_table(t: DramTiming) -> dict[str, int]:
    """The contract's table "Timing rules", written out here independently of spec."""
    wrd, wrp = t.tCWL + t.tBL + t.tWTR, t.tCWL + t.tBL + t.tWR
    return {"ACT>MAC": t.tRCDRDMAC, "ACT>RD": t.tRCDRD, "ACT>WR": t.tRCDWR, "ACT>PRE": t.tRAS,
            "ACT>ACT": t.tRC, "ACT>REF": t.tRC, "PRE>ACT": t.tRP, "PRE>REF": t.tRP,
            "MAC>MAC": t.tCCDL, "MAC>RD": t.tCCDL, "MAC>WR": t.tRTW, "MAC>PRE": t.tRTP,
            "RD>MAC": t.tCCDL, "RD>RD": t.tCCDL, "RD>WR": t.tRTW, "RD>PRE": t.tRTP,
            "WR>MAC": wrd, "WR>RD": wrd, "WR>WR": t.tCCDL, "WR>PRE": wrp,
            "REF>ACT": t.tRFC, "REF>REF": t.tRFC}


def cmd(p, op, **f):
    return encode(p, op, **f)


def idle_until(m, cycle):
    while m.cycle < cycle:
        m.step(0, 0)


def accept(m, payload):
    """Hold ``payload`` valid from now; the accept cycle (ready was 0 in every cycle before)."""
    return m.run_until_accepted(payload, limit=100000)[0]


def res_of(p, payload):
    f = res_fields(p)
    return (unpack_signed(payload, p.n_out, p.acc_width),
            (payload >> f["dst"].offset) & ((1 << f["dst"].width) - 1))


# --- spec ----------------------------------------------------------------------------------
def test_gddr6_aim_preset_is_anchors():
    t = GDDR6_AIM_TIMING      # ANCHORS.md, "GDDR6-AiM preset (tCK 0.5 ns), in cycles"
    anchors = dict(tCL=50, tRCDRD=36, tRCDWR=28, tRP=32, tRAS=54, tRC=89, tWR=33, tRTP=12,
                   tCCDS=2, tCCDL=2, tRRDS=11, tRRDL=11, tFAW=42, tRFC=210, tREFI=3333,
                   tRCDRDMAC=56)
    for k, v in anchors.items():
        assert getattr(t, k) == v, k
    assert t.tCK_ns == 0.5 and t.tCWL == 6 and t.tBL == 2 and t.tWTR == 11
    assert t.tRTW == 50 + 2 + 3 - 6 + 1          # nCL + nBL + 3 - nCWL + nWPRE
    assert t.wr_to_pre == 6 + 2 + 33 and t.wr_to_rd == 6 + 2 + 11
    assert DramBankParams().timing == t


@pytest.mark.parametrize("t", [GDDR6_AIM_TIMING, SHORT_TIMING])
def test_gaps_match_contract_table(t):
    assert t.gaps == rule_table(t)
    assert (max(t.gaps.values()) - 1) < (1 << t.counter_bits)


def test_default_params_and_derived():
    p = DramBankParams()
    assert (p.rows, p.row_bytes, p.burst_bytes, p.n_cols, p.mac_lanes, p.n_x) == \
        (16384, 2048, 32, 64, 32, 32)
    assert p.acc_width == 28 and p.row_acc_width == 16 + 11 and p.min_acc_width == 16 + 5
    assert (p.row_bits, p.col_bits, p.dst_bits, p.ref_bits) == (14, 6, 4, 4)
    q = DramBankParams(rows=12, row_bytes=48, burst_bytes=16, n_out=4, n_acc=1,
                       acc_width=18, timing=SHORT_TIMING)
    assert (q.n_cols, q.n_x, q.row_bits, q.col_bits, q.dst_bits) == (3, 4, 4, 2, 1)
    assert q.tag != P.tag


def test_layouts():
    f = cmd_fields(P)     # op 3, row 4, col 2, dst 4, acc 1, last 1, data 128
    assert [(k, v.offset, v.width) for k, v in f.items()] == [
        ("op", 0, 3), ("row", 3, 4), ("col", 7, 2), ("dst", 9, 4), ("acc", 13, 1),
        ("last", 14, 1), ("data", 15, 128)]
    r = res_fields(P)
    assert (r["y"].offset, r["y"].width, r["dst"].offset, r["dst"].width) == (0, 28, 28, 4)
    assert rd_fields(P)["data"].width == 128
    w = encode(P, MAC, col=3, dst=9, acc=1, last=1, data=0xAB)
    assert decode(P, w) == dict(op=2, row=0, col=3, dst=9, acc=1, last=1, data=0xAB)


@pytest.mark.parametrize("name,bad", [
    ("tRCDRDMAC", 0), ("tRP", -1), ("tRAS", True), ("tCCDL", 2.0), ("tCL", 1 << 16),
    ("tRFC", "5")])
def test_timing_bad_values(name, bad):
    with pytest.raises(ValueError, match=f"{name}="):
        DramTiming(**{name: bad})


def test_timing_bad_refresh_and_clock():
    with pytest.raises(ValueError, match="tREFI=210"):
        DramTiming(tREFI=210, tRFC=210)
    for v in (0, -0.5, True, "0.5"):
        with pytest.raises(ValueError, match="tCK_ns="):
            DramTiming(tCK_ns=v)


@pytest.mark.parametrize("kw,name", [
    (dict(rows=1), "rows"), (dict(rows=1 << 17), "rows"), (dict(burst_bytes=24), "burst_bytes"),
    (dict(burst_bytes=1), "burst_bytes"), (dict(row_bytes=40), "row_bytes"),
    (dict(row_bytes=8), "row_bytes"), (dict(n_out=3), "n_out"), (dict(n_out=64), "n_out"),
    (dict(n_acc=0), "n_acc"), (dict(n_acc=12), "n_acc"), (dict(acc_width=19), "acc_width"),
    (dict(acc_width=49), "acc_width"), (dict(ref_max=0), "ref_max"),
    (dict(ref_max=16), "ref_max"), (dict(timing=None), "timing"), (dict(rows=4.0), "rows")])
def test_params_bad_values(kw, name):
    with pytest.raises(ValueError, match=f"{name}="):
        DramBankParams(**{**dict(rows=16, row_bytes=64, burst_bytes=16), **kw})


def test_encode_bad_fields():
    for kw, name in ((dict(col=4), "col"), (dict(dst=16), "dst"), (dict(acc=2), "acc"),
                     (dict(data=1 << 128), "data"), (dict(row=-1), "row"),
                     (dict(bank=0), "bank")):
        with pytest.raises(ValueError, match=f"{name}="):
            encode(P, MAC, **kw)
    with pytest.raises(ValueError, match="row=16"):
        encode(P, ACT, row=16)
    with pytest.raises(ValueError, match="op=5"):
        encode(P, 5)


# --- model: argument checks ------------------------------------------------------------------
def test_model_bad_arguments():
    with pytest.raises(ValueError, match="params="):
        DramBankModel(T)
    with pytest.raises(ValueError, match="late="):
        DramBankModel(P, late=-1)
    m = DramBankModel(P)
    with pytest.raises(ValueError, match="cmd_valid=2"):
        m.step(2, 0)
    with pytest.raises(ValueError, match="rst=2"):
        m.step(0, 0, rst=2)
    with pytest.raises(ValueError, match="cmd_payload=-1"):
        m.step(1, -1)
    with pytest.raises(ValueError, match="cmd_payload="):
        m.step(1, 1 << 143)
    with pytest.raises(ValueError, match="row=16"):
        m.poke_row(16, np.zeros(64, dtype=np.int8))
    with pytest.raises(ValueError, match="shape"):
        m.poke_row(0, np.zeros(63, dtype=np.int8))
    with pytest.raises(ValueError, match="shape"):
        m.poke_row(0, np.full(64, 128))
    assert m.cycle == 0                      # nothing stepped


# --- timing rules --------------------------------------------------------------------------
SCEN = [k for k in rule_table(T) if not k.endswith("REF") and not k.startswith("REF")
        and k not in ("ACT>ACT", "PRE>ACT")]


def _payload(p, op):
    return cmd(p, op, col=1, data=0) if op in (MAC, RD, WR) else cmd(p, op, row=2)


@pytest.mark.parametrize("timing", [T, GDDR6_AIM_TIMING], ids=["short", "aim"])
@pytest.mark.parametrize("rule", SCEN)
def test_rule_held_until_exact_cycle(rule, timing):
    """X accepted at t, Y presented from t+1: held (ready 0) through t+N-1, accepted at t+N."""
    p = replace(P, timing=timing)
    gap = rule_table(timing)[rule]
    x, y = (DramOp[s] for s in rule.split(">"))
    m = DramBankModel(p)
    if x == ACT:
        t = accept(m, _payload(p, ACT))
    else:                                         # X late in an open row: only X>Y binds
        assert accept(m, _payload(p, ACT)) == 0
        t0 = 3 * max(rule_table(timing).values())
        idle_until(m, t0)
        t = accept(m, _payload(p, x))
        assert t == t0
    assert m.ready(_payload(p, y)) == (gap == 1)
    assert accept(m, _payload(p, y)) == t + gap, rule


@pytest.mark.parametrize("timing", [T, GDDR6_AIM_TIMING], ids=["short", "aim"])
def test_act_to_act_trc_and_trp(timing):
    p = replace(P, timing=timing)
    m = DramBankModel(p)
    assert accept(m, cmd(p, ACT, row=1)) == 0
    assert accept(m, cmd(p, PRE)) == timing.tRAS
    # tRC > tRAS + tRP in both tables: the ACT waits for tRC, not for PRE + tRP
    assert timing.tRC > timing.tRAS + timing.tRP
    assert accept(m, cmd(p, ACT, row=2)) == timing.tRC
    late = timing.tRC + 3 * timing.tRC
    idle_until(m, late)
    assert accept(m, cmd(p, PRE)) == late
    assert accept(m, cmd(p, ACT, row=3)) == late + timing.tRP


def test_full_row_pass_consequences():
    """docs: first MAC at a + tRCDRDMAC, MACs tCCDL apart, PRE at last + tRTP (> a + tRAS)."""
    m = DramBankModel(P)
    a = accept(m, cmd(P, ACT, row=5))
    ts = [accept(m, cmd(P, MAC, col=c, last=int(c == P.n_cols - 1))) for c in range(P.n_cols)]
    assert ts == [a + T.tRCDRDMAC + i * T.tCCDL for i in range(P.n_cols)]
    assert accept(m, cmd(P, PRE)) == max(a + T.tRAS, ts[-1] + T.tRTP)


def test_pre_while_idle_is_a_noop():
    m, twin = DramBankModel(P), DramBankModel(P)
    assert accept(m, cmd(P, PRE)) == 0
    twin.step(0, 0)
    assert state_diff(m.state(), twin.state()) == []
    assert m.step(1, cmd(P, ACT, row=0)).cmd_ready == 1      # no tRP from a no-op PRE
    assert m.step(0, 0).err == 0


def test_held_command_changes_nothing():
    m, twin = DramBankModel(P), DramBankModel(P)
    for b in (m, twin):
        accept(b, cmd(P, ACT, row=1))
    for _ in range(4):                      # MAC held (tRCDRDMAC) while valid
        assert m.step(1, cmd(P, MAC, col=0)).cmd_ready == 0
        twin.step(0, 0)
    assert state_diff(m.state(), twin.state()) == []


# --- illegal commands ------------------------------------------------------------------------
def _reject(m, payload, code):
    """The command is accepted in this cycle, err = code next cycle, state as a twin's."""
    twin = copy.deepcopy(m)
    assert m.step(1, payload).cmd_ready == 1
    twin.step(0, 0)
    assert m.step(0, 0).err == code
    twin.step(0, 0)
    assert state_diff(m.state(), twin.state()) == []
    assert m.step(0, 0).err == 0


@pytest.mark.parametrize("op", [MAC, RD, WR])
def test_column_while_idle_not_open(op):
    m = DramBankModel(P)
    _reject(m, cmd(P, op, col=0, data=5), DramErr.NOT_OPEN)
    accept(m, cmd(P, ACT, row=0))
    accept(m, cmd(P, PRE))
    _reject(m, cmd(P, op, col=1), DramErr.NOT_OPEN)       # also while tRP is running


def test_act_while_open_rejected_at_once():
    m = DramBankModel(P)
    accept(m, cmd(P, ACT, row=3))
    assert m._c[0] > 0                                      # c_act running
    _reject(m, cmd(P, ACT, row=4), DramErr.ROW_OPEN)
    assert m.state()["row"] == 3


def test_bad_row_col_op_and_precedence():
    p = DramBankParams(rows=12, row_bytes=48, burst_bytes=16, timing=T)
    m = DramBankModel(p)
    f = cmd_fields(p)
    _reject(m, pack(f, op=0, row=13), DramErr.BAD_ROW)
    _reject(m, pack(f, op=2, col=3), DramErr.BAD_COL)     # BAD_COL before NOT_OPEN
    for op in (5, 6, 7):
        _reject(m, pack(f, op=op, row=13, col=3), DramErr.BAD_OP)
    accept(m, cmd(p, ACT, row=11))
    _reject(m, pack(f, op=0, row=12), DramErr.BAD_ROW)    # BAD_ROW before ROW_OPEN
    _reject(m, pack(f, op=4, col=3), DramErr.BAD_COL)
    assert m.state()["open"] == 1 and m.state()["row"] == 11


# --- MAC numerics ------------------------------------------------------------------------------
def _dot_pass(m, p, row, xs, dst, acc_first=0):
    """ACT row, C column MACs (last on the final one), PRE; returns the res beat's y."""
    accept(m, cmd(p, ACT, row=row))
    y = None
    for c in range(p.n_cols):
        last = int(c == p.n_cols - 1)
        accept(m, cmd(p, MAC, col=c, dst=dst, acc=int(c > 0 or acc_first), last=last,
                      data=pack_vec(xs[c], 8)))
        o = m.step(0, 0)
        assert o.res_valid == last
        if last:
            y, d = res_of(p, o.res_payload)
            assert d == dst
    accept(m, cmd(p, PRE))
    return y


@pytest.mark.parametrize("n_out", [1, 2, 4, 16])
def test_mac_vs_numpy(n_out, seed):
    p = replace(P, n_out=n_out)
    rng = np.random.default_rng(seed)
    m = DramBankModel(p)
    W = rng.integers(-128, 128, (p.rows, p.row_bytes))
    for r in range(p.rows):
        m.poke_row(r, W[r])
    for trial in range(6):
        r, dst = int(rng.integers(p.rows)), int(rng.integers(p.n_acc))
        xs = rng.integers(-128, 128, (p.n_cols, p.n_x))
        want = sum(W[r, c * 16:(c + 1) * 16].reshape(n_out, p.n_x) @ xs[c]
                   for c in range(p.n_cols))
        y = _dot_pass(m, p, r, xs, dst)
        assert np.array_equal(y, want), f"seed={seed} trial={trial}"
        assert np.array_equal(m.state()["acc"][dst], want)


def test_mac_accumulate_dst_and_written_rows(seed):
    rng = np.random.default_rng(seed)
    m = DramBankModel(P)
    W = rng.integers(-128, 128, (2, P.row_bytes))
    for r in range(2):                         # write rows through the WR path
        accept(m, cmd(P, ACT, row=r + 7))
        for c in range(P.n_cols):
            accept(m, cmd(P, WR, col=c, data=pack_vec(W[r, c * 16:(c + 1) * 16], 8)))
        accept(m, cmd(P, PRE))
    xa, xb = rng.integers(-128, 128, (2, P.n_cols, 16))
    ya = _dot_pass(m, P, 7, xa, dst=3)
    yb = _dot_pass(m, P, 8, xb, dst=5)
    yab = _dot_pass(m, P, 8, xb, dst=3, acc_first=1)          # continues entry 3
    da, db = W[0] @ xa.ravel(), W[1] @ xb.ravel()
    assert (ya[0], yb[0], yab[0]) == (da, db, da + db), f"seed={seed}"
    y2 = _dot_pass(m, P, 7, xa, dst=3)                         # acc=0 restarts the entry
    assert y2[0] == da


def test_mac_wraps_at_acc_width():
    p = replace(P, acc_width=P.min_acc_width)                 # 16 + log2(16) = 20 bits
    m = DramBankModel(p)
    m.poke_row(0, np.full(p.row_bytes, -128))
    xs = np.full((p.n_cols, 16), -128)
    accept(m, cmd(p, ACT, row=0))
    accept(m, cmd(p, MAC, col=0, dst=1, last=1, data=pack_vec(xs[0], 8)))
    y1, _ = res_of(p, m.step(0, 0).res_payload)
    assert y1[0] == 16 * 16384                                 # one column never wraps
    for c in range(1, p.n_cols):
        accept(m, cmd(p, MAC, col=c, dst=1, acc=1, last=1, data=pack_vec(xs[c], 8)))
        y, _ = res_of(p, m.step(0, 0).res_payload)
        assert y[0] == wrap((c + 1) * 16 * 16384, 20)
    assert y[0] != 4 * 16 * 16384


# --- RD / WR -----------------------------------------------------------------------------------
def test_rd_data_at_tcl_and_capture_time(seed):
    rng = np.random.default_rng(seed)
    tm = replace(T, tCL=12)                                   # WR can come before the beats
    p = replace(P, timing=tm)
    m = DramBankModel(p)
    row = rng.integers(-128, 128, p.row_bytes)
    m.poke_row(4, row)
    accept(m, cmd(p, ACT, row=4))
    t1 = accept(m, cmd(p, RD, col=2))
    t2 = accept(m, cmd(p, RD, col=3))
    assert t2 == t1 + tm.tCCDL < t1 + tm.tCL                    # two beats in flight
    new = rng.integers(-128, 128, 16)
    tw = accept(m, cmd(p, WR, col=2, data=pack_vec(new, 8)))  # after the RD: old data read
    assert tw == t2 + tm.tRTW < t1 + tm.tCL
    beats = {}
    while m.cycle < tw + tm.tCL + 2:
        c = m.cycle
        o = m.step(0, 0)
        if o.rd_valid:
            beats[c] = o.rd_payload
        elif beats:
            assert o.rd_payload == beats[max(beats)]          # holds the last beat
    assert beats == {t1 + tm.tCL: pack_vec(row[32:48], 8), t2 + tm.tCL: pack_vec(row[48:64], 8)}
    t3 = accept(m, cmd(p, RD, col=2))
    idle_until(m, t3 + tm.tCL)
    o = m.step(0, 0)
    assert o.rd_valid and o.rd_payload == pack_vec(new, 8)


def test_array_kept_through_pre_and_rst_not_power_up():
    m = DramBankModel(P)
    accept(m, cmd(P, ACT, row=9))
    accept(m, cmd(P, WR, col=1, data=pack_vec(range(16), 8)))
    m.reset()
    st = m.state()
    assert st["open"] == 0 and st["cycle"] == 0 and all(st[k] == 0 for k in
                                                         ("c_act", "c_pre", "c_mac", "ref_pend"))
    assert list(st["array"][9, 16:32]) == list(range(16))
    m.reset(power_up=True)
    assert not m.state()["array"].any()


def test_rst_cycle_drops_command_and_rd_in_flight():
    m = DramBankModel(P)
    accept(m, cmd(P, ACT, row=0))
    accept(m, cmd(P, RD, col=0))
    o = m.step(0, 0, rst=1)
    assert o.open == 1                                 # outputs of the rst cycle as usual
    assert m.cycle == 0 and m.state()["open"] == 0
    assert not any(m.step(0, 0).rd_valid for _ in range(T.tCL + 2))
    a = accept(m, cmd(P, ACT, row=0))
    idle_until(m, a + T.tRCDWR)
    o = m.step(1, cmd(P, WR, col=0, data=pack_vec([7] * 16, 8)), rst=1)
    assert o.cmd_ready == 1 and o.open == 1
    assert not m.state()["array"].any()                # the WR of the rst cycle was lost


@pytest.mark.parametrize("late", [0, 1, 3])
def test_late_fault_injection_shifts_beats(late):
    m = DramBankModel(P, late=late)
    accept(m, cmd(P, ACT, row=0))
    t = accept(m, cmd(P, MAC, col=0, last=1))
    res, rd, tr = [], [], None
    while m.cycle < t + 3 * T.tCL + late:
        c = m.cycle
        o = m.step(int(tr is None), cmd(P, RD, col=1))
        if tr is None and o.cmd_ready:
            tr = c
        if o.res_valid:
            res.append(c)
        if o.rd_valid:
            rd.append(c)
    assert res == [t + 1 + late] and rd == [tr + T.tCL + late]


# --- refresh -----------------------------------------------------------------------------------
PR = DramBankParams(rows=16, row_bytes=64, burst_bytes=16, ref_max=2, timing=SHORT_TIMING)
TR = SHORT_TIMING


def test_refresh_idle_bank_exact_cycles():
    m = DramBankModel(PR)
    outs = {}
    idle_until(m, TR.tREFI - 1)
    outs[TR.tREFI - 1] = m.step(1, cmd(PR, ACT, row=0))        # still no request: accepted
    assert outs[TR.tREFI - 1].cmd_ready == 1 and outs[TR.tREFI - 1].ref_pend == 0
    accept(m, cmd(PR, PRE))
    m.reset()                                                  # start again from an idle bank
    while m.cycle < TR.tREFI + TR.tRFC + 1:
        c = m.cycle
        outs[c] = m.step(1 if c >= TR.tREFI else 0, cmd(PR, ACT, row=1))
        if outs[c].cmd_ready and c >= TR.tREFI:
            break
    s = TR.tREFI
    assert outs[s - 1].ref_pend == 0 and outs[s].ref_pend == 1 and outs[s + 1].ref_pend == 0
    assert [outs[c].refreshing for c in range(s - 1, s + TR.tRFC + 1)] == \
        [0, 0] + [1] * (TR.tRFC - 1) + [0]
    assert [c for c in outs if c >= s and outs[c].cmd_ready] == [s + TR.tRFC]


def test_refresh_waits_for_pre_and_trc():
    m = DramBankModel(PR)
    a = TR.tREFI - 3
    idle_until(m, a)
    assert accept(m, cmd(PR, ACT, row=0)) == a
    idle_until(m, TR.tREFI + 1)
    o = m.step(0, 0)
    assert o.ref_pend == 1 and o.refreshing == 0 and o.open == 1   # row open: pending
    assert accept(m, cmd(PR, PRE)) == a + TR.tRAS
    s = max(a + TR.tRAS + TR.tRP, a + TR.tRC)                  # tRC binds here
    assert s == a + TR.tRC
    t = accept(m, cmd(PR, ACT, row=1))
    assert t == s + TR.tRFC


def test_refresh_saturates_lost_then_back_to_back():
    m = DramBankModel(PR)
    accept(m, cmd(PR, ACT, row=0))
    lost, pend = [], {}
    end = (PR.ref_max + 1) * TR.tREFI + 5
    while m.cycle < end:
        c = m.cycle
        o = m.step(0, 0)
        pend[c] = o.ref_pend
        if o.ref_lost:
            lost.append(c)
    for k in range(1, PR.ref_max + 1):
        assert pend[k * TR.tREFI - 1] == k - 1 and pend[k * TR.tREFI] == k
    assert lost == [(PR.ref_max + 1) * TR.tREFI]
    assert pend[end - 1] == PR.ref_max
    p0 = accept(m, cmd(PR, PRE))
    assert p0 == end
    starts, t, prev = [], None, 0
    while t is None:
        c = m.cycle
        o = m.step(1, cmd(PR, ACT, row=2))
        if o.refreshing and not prev:
            starts.append(c - 1)
        prev = o.refreshing
        if o.cmd_ready:
            t = c
    assert starts == [p0 + TR.tRP + i * TR.tRFC for i in range(PR.ref_max)]
    assert t == p0 + TR.tRP + PR.ref_max * TR.tRFC


# --- all-bank lockstep ---------------------------------------------------------------------------
SAME = [k for k in DramOut._fields if k not in ("res_payload", "rd_payload")]


def test_all_bank_lockstep(seed):
    """Four banks, same commands issued only when every bank is ready: identical timing
    outputs every cycle, each bank its own dot product; refresh inside the run."""
    rng = np.random.default_rng(seed)
    banks = [DramBankModel(PR) for _ in range(4)]
    W = rng.integers(-128, 128, (4, PR.rows, PR.row_bytes))
    for b, m in enumerate(banks):
        for r in range(PR.rows):
            m.poke_row(r, W[b, r])
    prog, want = [], []
    for _ in range(12):
        r = int(rng.integers(PR.rows))
        xs = rng.integers(-128, 128, (PR.n_cols, 16))
        prog.append(cmd(PR, ACT, row=r))
        prog += [cmd(PR, MAC, col=c, dst=1, acc=int(c > 0), last=int(c == PR.n_cols - 1),
                     data=pack_vec(xs[c], 8)) for c in range(PR.n_cols)]
        prog.append(cmd(PR, PRE))
        want.append([W[b, r] @ xs.ravel() for b in range(4)])
    got, i, refreshed = [], 0, False
    while i < len(prog) or banks[0].cycle < 20:
        pay = prog[i] if i < len(prog) else 0
        rdy = [m.ready(pay) for m in banks]
        assert len(set(rdy)) == 1
        v = int(i < len(prog) and all(rdy))
        outs = [m.step(v, pay) for m in banks]
        assert len({tuple(getattr(o, k) for k in SAME) for o in outs}) == 1
        refreshed |= outs[0].refreshing
        if outs[0].res_valid:
            got.append([int(res_of(PR, o.res_payload)[0][0]) for o in outs])
        i += v
    for _ in range(2):
        outs = [m.step(0, 0) for m in banks]
        if outs[0].res_valid:
            got.append([int(res_of(PR, o.res_payload)[0][0]) for o in outs])
    assert refreshed and got == [[int(v) for v in w] for w in want], f"seed={seed}"


# --- random command streams: an independent checker of the contract's rules ------------------
_GAP_FROM = {  # Y: the earlier events X whose rule X>Y bounds Y (names of rule_table)
    "ACT": ("ACT", "PRE", "REF"), "REF": ("ACT", "PRE", "REF"),
    "PRE": ("ACT", "MAC", "RD", "WR"), "MAC": ("ACT", "MAC", "RD", "WR"),
    "RD": ("ACT", "MAC", "RD", "WR"), "WR": ("ACT", "MAC", "RD", "WR")}
NEVER = -(1 << 40)


class Checker:
    """The contract re-stated over absolute cycles (no counters): predicts cmd.ready, err,
    res, rd, ref_pend, refresh starts and open/open_row from the inputs alone."""

    def __init__(self, p, array):
        self.p, self.g, self.array = p, rule_table(p.timing), array
        self.reset()

    def reset(self):
        self.open, self.row, self.since = 0, 0, 0
        self.last = dict.fromkeys(("ACT", "PRE", "MAC", "RD", "WR", "REF"), NEVER)
        self.pend, self.err, self.rd, self.res = 0, 0, {}, {}
        self.acc = np.zeros((self.p.n_acc, self.p.n_out), dtype=np.int64)
        self.rowbuf = np.zeros(self.p.row_bytes, dtype=np.int64)

    def bound(self, y):
        return max(self.last[x] + self.g[f"{x}>{y}"] for x in _GAP_FROM[y])

    def code(self, f):
        p, op = self.p, f["op"]
        if op > 4:
            return DramErr.BAD_OP
        if op == 0:
            return DramErr.BAD_ROW if f["row"] >= p.rows else (DramErr.ROW_OPEN * self.open)
        if op == 1:
            return 0
        return DramErr.BAD_COL if f["col"] >= p.n_cols else (DramErr.NOT_OPEN * (1 - self.open))

    def cycle(self, c, v, payload, o):
        p, t = self.p, self.p.timing
        f = decode(p, payload)
        name = DramOp(f["op"]).name if f["op"] <= 4 else None
        code = self.code(f)
        if code or (name == "PRE" and not self.open):
            ready = 1
        else:
            ready = int(c >= self.bound(name) and (name != "ACT" or self.pend == 0))
        start = not self.open and self.pend > 0 and c >= self.bound("REF")
        assert (o.cmd_ready, o.err, o.ref_pend, o.open) == (ready, self.err, self.pend,
                                                            self.open), (c, f, o)
        assert o.res_valid == (c in self.res) and o.rd_valid == (c in self.rd), (c, o)
        if c in self.res:
            assert o.res_payload == self.res.pop(c), c
        if c in self.rd:
            assert o.rd_payload == self.rd.pop(c), c
        assert o.refreshing == int(c < self.last["REF"] + t.tRFC) and (not o.refreshing
                                                                      or not o.open), c
        if self.open:
            assert o.open_row == self.row
        self.err = int(code) if v else 0
        if v and ready and not code:
            U, col = p.burst_bytes, f["col"]
            if name == "ACT":
                self.open, self.row = 1, f["row"]
                self.rowbuf = self.array[self.row].copy()
            elif name == "PRE" and self.open:
                self.open = 0
            elif name == "MAC":
                x = np.array(unpack_signed(f["data"], p.n_x, 8))
                w = self.rowbuf[col * U:(col + 1) * U].reshape(p.n_out, p.n_x)
                new = wrap(w @ x + (self.acc[f["dst"]] if f["acc"] else 0), p.acc_width)
                self.acc[f["dst"]] = new
                if f["last"]:
                    self.res[c + 1] = pack(res_fields(p), y=0, dst=f["dst"]) | \
                        pack_vec(new, p.acc_width)
            elif name == "RD":
                self.rd[c + t.tCL] = pack_vec(self.rowbuf[col * U:(col + 1) * U], 8)
            elif name == "WR":
                self.rowbuf[col * U:(col + 1) * U] = unpack_signed(f["data"], U, 8)
                self.array[self.row] = self.rowbuf
            if name != "PRE" or self.last["ACT"] > self.last["PRE"]:
                self.last[name] = c
        if start:
            self.last["REF"] = c
        self.since += 1
        tick = self.since % t.tREFI == 0
        self.pend = min(self.pend - start + tick, p.ref_max)
        return ready


def test_random_streams_keep_the_contract(seed):
    rng = np.random.default_rng(seed)
    p = DramBankParams(rows=12, row_bytes=48, burst_bytes=16, n_out=2, n_acc=4, ref_max=3,
                       timing=replace(SHORT_TIMING, tREFI=150))
    m = DramBankModel(p)
    W = rng.integers(-128, 128, (p.rows, p.row_bytes))
    for r in range(p.rows):
        m.poke_row(r, W[r])
    ck = Checker(p, W.copy())
    f = cmd_fields(p)
    pay, n_acc_cmd, n_col_idle, n_ref, n_rst = None, 0, 0, 0, 0
    for c in range(12000):
        if pay is None and rng.random() < 0.7:
            op = int(rng.choice(8, p=[.13, .14, .3, .14, .2, .03, .03, .03]))
            pay = pack(f, op=op, row=int(rng.integers(13)), col=int(rng.integers(4)),
                       dst=int(rng.integers(4)), acc=int(rng.integers(2)),
                       last=int(rng.random() < .4), data=int(rng.integers(1 << 62)) << 66
                       | int(rng.integers(1 << 62)))
        v = int(pay is not None)
        if rng.random() < 1 / 3000:                 # rst mid-stream: outputs as usual,
            o = m.step(v, pay or 0, rst=1)          # the command is lost
            ck.cycle(ck.since, 0, pay or 0, o)
            ck.reset()
            pay, n_rst = None, n_rst + 1
            continue
        o = m.step(v, pay or 0)
        was_open = ck.open
        ready = ck.cycle(ck.since, v, pay or 0, o)
        if v and ready:
            op = decode(p, pay)["op"]
            n_acc_cmd += 1
            n_col_idle += op in (2, 3, 4) and not was_open
            pay = None
        n_ref += o.refreshing
    assert n_acc_cmd > 2000 and n_col_idle > 50 and n_ref > 0 and n_rst, (seed, n_acc_cmd)
