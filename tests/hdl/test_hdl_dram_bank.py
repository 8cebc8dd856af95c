"""Checks of hdl/dram_bank.py with amaranth.sim on small configurations, plus Verilator lint.

Expected values come from the contract (docs/dram_bank.md): accept cycles from the timing
table (``DramTiming.gaps``, every rule "X at t -> Y at t+N" held pairwise), refresh cycles
from the refresh rules, MAC results from numpy integer dot products wrapped to acc_width
bits, RD data from what the test wrote.  The last test compares the HDL with the golden model
(model.dram_bank) on a random stream, every output every cycle.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.back import verilog

from cimphony.compat import silence_unused
from hdl import hier
from hdl.dram_bank import FAULTS, DramBank
from tb.amsim import simulate
from spec.dram import (GDDR6_AIM_TIMING, SHORT_TIMING, DramBankParams, DramErr, DramOp,
                       DramTiming, cmd_fields, encode, rd_fields, res_fields)
from spec.params import pack, pack_vec, unpack, unpack_vec, width

# 16 rows x 64 bytes, 16-byte bursts (C = 4), 2 lanes of K = 8, 4 entries, minimal acc width
P = DramBankParams(rows=16, row_bytes=64, burst_bytes=16, n_out=2, n_acc=4, acc_width=19,
                   ref_max=2, timing=SHORT_TIMING)
# R and C not powers of two (BAD_ROW / BAD_COL possible): 12 rows x 3 bursts
P_ODD = DramBankParams(rows=12, row_bytes=48, burst_bytes=16, n_out=1, n_acc=2, acc_width=24,
                       ref_max=3, timing=SHORT_TIMING)
T = SHORT_TIMING
OPS = ("ACT", "PRE", "MAC", "RD", "WR")


# ------------------------------------------------------------------ harness
class Bank:
    """Cycle driver: ``step`` drives cmd/rst, samples ready and every output, ticks once."""

    OUTS = ("res_valid", "res_payload", "rd_valid", "rd_payload", "err", "ref_lost",
            "ref_pend", "refreshing", "open", "open_row")

    def __init__(self, ctx, dut, rst, p):
        self.ctx, self.dut, self.rst, self.p = ctx, dut, rst, p
        self.cycle = 0
        self.log = []               # per cycle: dict of the outputs and "ready"

    def sample(self):
        d, g = self.dut, self.ctx.get
        return {"res_valid": g(d.res.valid), "res_payload": g(d.res.payload.as_value()),
                "rd_valid": g(d.rd.valid), "rd_payload": g(d.rd.payload.as_value()),
                "err": g(d.err), "ref_lost": g(d.ref_lost), "ref_pend": g(d.ref_pend),
                "refreshing": g(d.refreshing), "open": g(d.open), "open_row": g(d.open_row)}

    async def step(self, word=None, valid=None, rst=0):
        """One cycle with payload ``word`` (valid unless told); returns whether it fired."""
        ctx, d = self.ctx, self.dut
        valid = word is not None if valid is None else valid
        ctx.set(d.cmd.payload.as_value(), word or 0)
        ctx.set(d.cmd.valid, valid)
        ctx.set(self.rst, rst)
        out = self.sample()
        out["ready"] = ctx.get(d.cmd.ready)
        self.log.append(out)
        await ctx.tick()
        self.cycle += 1
        return bool(valid and out["ready"])

    async def idle(self, n=1):
        for _ in range(n):
            await self.step()

    async def until(self, cycle):
        while self.cycle < cycle:
            await self.step()

    async def issue(self, word, limit=2000):
        """Hold ``word`` valid until accepted; returns the accept cycle."""
        for _ in range(limit):
            if await self.step(word):
                return self.cycle - 1
        raise AssertionError(f"command {word:#x} not accepted in {limit} cycles")

    def cmd(self, op, **f):
        return encode(self.p, DramOp[op], **f)

    def res(self, cycle):
        """(y lanes, dst) of the res payload sampled in ``cycle``."""
        f = unpack(res_fields(self.p), self.log[cycle]["res_payload"])
        return unpack_vec(f["y"], self.p.n_out, self.p.acc_width), f["dst"]


def run(p, body, fault=None):
    """Simulate ``body(bank)`` on a DramBank(p) driven through an explicit sync domain."""
    dut = DramBank(p, fault=fault)
    simulate(dut, lambda ctx, rst: body(Bank(ctx, dut, rst, p)))


def wrap(v, bits):
    """Two's complement wrap of an int to ``bits`` bits."""
    m = 1 << bits
    return ((int(v) + (m >> 1)) % m) - (m >> 1)


def burst_word(vals):
    """Pack int8 values (byte 0 lowest) into a burst word."""
    return pack_vec([int(v) for v in vals], 8)


# ------------------------------------------------------------------ reference earliest cycle
def earliest(t: DramTiming, hist, op: str, present: int, skip=None) -> int:
    """First cycle >= present at which ``op`` may be accepted after the accepted commands
    ``hist`` = [(op, cycle), ...] from reset (no refresh involved): every rule "X>op" of the
    contract's table, pairwise over the history (a PRE while IDLE is no event); ``skip`` =
    index into hist whose rule is left out."""
    g = t.gaps
    c = present
    opened = False
    for i, (x, tx) in enumerate(hist):
        noop = x == "PRE" and not opened               # PRE while IDLE: nothing at all
        opened = {"ACT": True, "PRE": False}.get(x, opened)
        if i != skip and not noop and f"{x}>{op}" in g:
            c = max(c, tx + g[f"{x}>{op}"])
    return c


# ------------------------------------------------------------------ parameters and ports
def test_params_and_fault_validated():
    with pytest.raises(ValueError, match="params=42"):
        DramBank(42)
    with pytest.raises(ValueError, match="bogus"):
        DramBank(P, fault="bogus")


@pytest.mark.parametrize("p", [P, P_ODD, DramBankParams()], ids=["small", "odd", "aim"])
def test_ports_match_spec(p):
    dut = silence_unused(DramBank(p))          # inspected, not elaborated
    ports = {n: (k, len(v)) for n, (k, v) in hier.signature_ports(dut).items()}
    assert ports == {
        "cmd__valid": ("i", 1), "cmd__ready": ("o", 1),
        "cmd__payload": ("i", width(cmd_fields(p))),
        "res__valid": ("o", 1), "res__payload": ("o", width(res_fields(p))),
        "rd__valid": ("o", 1), "rd__payload": ("o", width(rd_fields(p))),
        "err": ("o", 3), "ref_lost": ("o", 1), "ref_pend": ("o", p.ref_max.bit_length()),
        "refreshing": ("o", 1), "open": ("o", 1), "open_row": ("o", p.row_bits)}
    assert width(rd_fields(p)) == 8 * p.burst_bytes
    lay = dut.cmd.payload.shape()
    for f in cmd_fields(p).values():
        assert (lay[f.name].offset, lay[f.name].width) == (f.offset, f.width)


# ------------------------------------------------------------------ timing rules
# rule -> (commands as (op, cycles after the previous accept it is presented), index of X).
# The last command is Y; each scenario is built so that rule X>Y is the one that binds
# (checked below against the table with that rule left out).
SCENARIOS = {
    "ACT>MAC": ([("ACT", 0), ("MAC", 1)], 0),
    "ACT>RD": ([("ACT", 0), ("RD", 1)], 0),
    "ACT>WR": ([("ACT", 0), ("WR", 1)], 0),
    "ACT>PRE": ([("ACT", 0), ("PRE", 1)], 0),
    "ACT>ACT": ([("ACT", 0), ("PRE", 1), ("ACT", 1)], 0),
    "PRE>ACT": ([("ACT", 0), ("PRE", 20), ("ACT", 1)], 1),
    "MAC>MAC": ([("ACT", 0), ("MAC", 1), ("MAC", 1)], 1),
    "MAC>RD": ([("ACT", 0), ("MAC", 1), ("RD", 1)], 1),
    "MAC>WR": ([("ACT", 0), ("MAC", 1), ("WR", 1)], 1),
    "MAC>PRE": ([("ACT", 0), ("MAC", 1), ("PRE", 1)], 1),
    "RD>MAC": ([("ACT", 0), ("RD", 10), ("MAC", 1)], 1),
    "RD>RD": ([("ACT", 0), ("RD", 1), ("RD", 1)], 1),
    "RD>WR": ([("ACT", 0), ("RD", 1), ("WR", 1)], 1),
    "RD>PRE": ([("ACT", 0), ("RD", 10), ("PRE", 1)], 1),
    "WR>MAC": ([("ACT", 0), ("WR", 1), ("MAC", 1)], 1),
    "WR>RD": ([("ACT", 0), ("WR", 1), ("RD", 1)], 1),
    "WR>WR": ([("ACT", 0), ("WR", 1), ("WR", 1)], 1),
    "WR>PRE": ([("ACT", 0), ("WR", 10), ("PRE", 1)], 1),
    # the counters keep the larger value: a later, smaller load does not shorten a rule
    # (the RD's tRTP - 1 into c_pre; ACT>ACT above: the PRE's tRP - 1 into c_act)
    "ACT>PRE/RD": ([("ACT", 0), ("RD", 1), ("PRE", 1)], 0),
    # a PRE of a precharged bank is a no-op: ready at once, no tRP load
    "ACT>ACT/PRE-noop": ([("ACT", 0), ("PRE", 1), ("PRE", 4), ("ACT", 1)], 0),
}


def _scenario_cmd(b, op, i):
    f = {"ACT": dict(row=3), "PRE": {}, "MAC": dict(col=i % P.n_cols, dst=1, last=1),
         "RD": dict(col=i % P.n_cols), "WR": dict(col=i % P.n_cols, data=i + 1)}[op]
    return b.cmd(op, **f)


def check_scenario(rule, fault=None):
    """Run SCENARIOS[rule]: every command is accepted at the table's earliest cycle, and Y is
    held (ready 0) in every cycle before X + N."""
    cmds, ix = SCENARIOS[rule]
    n = T.gaps[rule.split("/")[0]]

    async def body(b):
        hist, prev = [], 0
        for i, (op, delay) in enumerate(cmds):
            present = prev + delay if i else 0
            await b.until(present)
            want = earliest(T, hist, op, present)
            got = await b.issue(_scenario_cmd(b, op, i))
            assert got == want, f"{rule}: {op} #{i} accepted in {got}, contract: {want}"
            # held in every cycle from present to want - 1, ready in want
            assert [b.log[c]["ready"] for c in range(present, got + 1)] == \
                [0] * (got - present) + [1]
            hist.append((op, got))
            prev = got
        tx, ty = hist[ix][1], hist[-1][1]
        assert ty == tx + n
        assert earliest(T, hist[:-1], cmds[-1][0], present, skip=ix) < ty, \
            f"{rule} does not bind in its scenario"
        assert b.log[ty - 1]["ready"] == 0            # one cycle early: held

    run(P, body, fault)


@pytest.mark.parametrize("rule", sorted(SCENARIOS))
def test_timing_rule(rule):
    check_scenario(rule)


def test_fault_is_caught():
    """A DUT whose c_mac load at ACT is one short lets the first MAC in one cycle early."""
    assert "rcdmac_short" in FAULTS
    with pytest.raises(AssertionError, match="ACT>MAC: MAC #1 accepted in 6"):
        check_scenario("ACT>MAC", fault="rcdmac_short")
    check_scenario("RD>RD", fault="rcdmac_short")      # other rules unaffected


def test_aim_timing_row_pass():
    """GDDR6-AiM preset: ACT, C back-to-back MACs, PRE, ACT at the cycles of the contract's
    'Consequences' (first MAC a + tRCDRDMAC, MACs tCCDL apart, PRE at max(a + tRAS, last
    + tRTP), next ACT at max(PRE + tRP, a + tRC))."""
    t = GDDR6_AIM_TIMING
    p = DramBankParams(rows=4, row_bytes=128, burst_bytes=32, n_out=1, n_acc=2, acc_width=24,
                       timing=t)

    async def body(b):
        a = await b.issue(b.cmd("ACT", row=1))
        macs = [await b.issue(b.cmd("MAC", col=c, last=int(c == p.n_cols - 1)))
                for c in range(p.n_cols)]
        pre = await b.issue(b.cmd("PRE"))
        a2 = await b.issue(b.cmd("ACT", row=2))
        assert a == 0
        assert macs == [a + t.tRCDRDMAC + i * t.tCCDL for i in range(p.n_cols)]
        assert pre == max(a + t.tRAS, macs[-1] + t.tRTP)
        assert a2 == max(pre + t.tRP, a + t.tRC)
        assert b.log[macs[-1] + 1]["res_valid"] == 1

    run(p, body)


# ------------------------------------------------------------------ refresh
def _starts(b):
    """Cycles s in which a refresh started: refreshing is 1 in s+1 .. s+tRFC-1."""
    r = [e["refreshing"] for e in b.log]
    return [c - 1 for c in range(1, len(r)) if r[c] and not r[c - 1]]


def test_refresh_from_reset_and_ref_act():
    """Idle from reset: a request at the edge ending tREFI-1 (ref_pend 1 in cycle tREFI), the
    refresh starts in cycle tREFI, refreshing in tREFI+1 .. tREFI+tRFC-1; an ACT held from
    tREFI is accepted in tREFI + tRFC (rule REF>ACT)."""
    async def body(b):
        await b.until(T.tREFI)
        a = await b.issue(b.cmd("ACT", row=2))
        await b.idle(2)
        s = T.tREFI
        assert a == s + T.tRFC
        assert [e["ref_pend"] for e in b.log[s - 1:s + 2]] == [0, 1, 0]
        assert _starts(b) == [s]
        assert [c for c, e in enumerate(b.log) if e["refreshing"]] == \
            list(range(s + 1, s + T.tRFC))
        assert all(not e["ready"] for e in b.log[s:a])        # ACT held while refreshing
        assert not any(e["ref_lost"] for e in b.log)

    run(P, body)


@pytest.mark.parametrize("rule", ["ACT>REF", "PRE>REF"])
def test_refresh_waits_for_act_and_pre(rule):
    """A pending refresh starts tRC after the last ACT (ACT at tREFI-10, PRE at its tRAS)
    or tRP after the last PRE (PRE presented late), whichever is later."""
    async def body(b):
        a0 = T.tREFI - 10 if rule == "ACT>REF" else T.tREFI - 20
        await b.until(a0)
        a = await b.issue(b.cmd("ACT", row=1))
        await b.until(a + (1 if rule == "ACT>REF" else 25))
        pre = await b.issue(b.cmd("PRE"))
        await b.until(T.tREFI + 40)
        s = max(T.tREFI, a + T.tRC, pre + T.tRP)
        binding = a + T.tRC if rule == "ACT>REF" else pre + T.tRP
        assert s == binding > max(T.tREFI, (pre + T.tRP) if rule == "ACT>REF" else a + T.tRC)
        assert _starts(b) == [s]
        assert b.log[s]["ref_pend"] == 1 and b.log[s + 1]["ref_pend"] == 0

    run(P, body)


def test_refresh_postponed_saturates_and_back_to_back():
    """With a row open, requests stay pending (1, 2 = M), the third is lost (ref_lost for one
    cycle, the count stays M); after the PRE they are served tRFC apart (rule REF>REF) and the
    held ACT is accepted tRFC after the last start."""
    M = P.ref_max
    async def body(b):
        assert await b.issue(b.cmd("ACT", row=4)) == 0
        await b.until((M + 1) * T.tREFI + 10)
        pre = await b.issue(b.cmd("PRE"))
        a = await b.issue(b.cmd("ACT", row=5))
        await b.idle(2)
        pend = [e["ref_pend"] for e in b.log]
        for k in range(1, M + 1):                      # one more per tREFI, up to M
            assert pend[k * T.tREFI - 1] == k - 1 and pend[k * T.tREFI] == k
        assert pend[(M + 1) * T.tREFI] == M
        assert [c for c, e in enumerate(b.log) if e["ref_lost"]] == [(M + 1) * T.tREFI]
        s0 = pre + T.tRP
        assert _starts(b) == [s0 + i * T.tRFC for i in range(M)]
        assert a == s0 + M * T.tRFC
        assert pend[s0] == M and pend[s0 + 1] == M - 1 and pend[a] == 0

    run(P, body)


# ------------------------------------------------------------------ illegal commands
def test_illegal_commands_rejected():
    """Each code with its precedence; ready 1 even while timing holds, err in t+1 only, the
    command dropped (state, counters, array, accumulators intact)."""
    p = P_ODD
    raw = lambda **f: pack(cmd_fields(p), **f)                 # noqa: E731
    ones = pack_vec([1] * p.n_x, 8)

    async def body(b):
        errs = {}                                              # cycle -> expected err

        async def reject(word, code):
            c = await b.issue(word, limit=1)                   # accepted in its first cycle
            errs[c + 1] = code
            return c

        # IDLE: BAD_OP beats everything, BAD_COL beats NOT_OPEN, BAD_ROW
        await reject(raw(op=5, row=15, col=3), DramErr.BAD_OP)
        await reject(raw(op=7), DramErr.BAD_OP)
        await reject(raw(op=6), DramErr.BAD_OP)
        await reject(raw(op=DramOp.MAC, col=3), DramErr.BAD_COL)
        await reject(raw(op=DramOp.RD, col=1), DramErr.NOT_OPEN)
        await reject(raw(op=DramOp.WR, col=0, data=0x55), DramErr.NOT_OPEN)
        await reject(raw(op=DramOp.MAC, col=0, data=ones, last=1), DramErr.NOT_OPEN)
        await reject(raw(op=DramOp.ACT, row=12), DramErr.BAD_ROW)
        await b.idle()
        assert not b.log[-1]["open"]
        # open row 7, write a marker (bytes 0x34, 0x12), MAC it into acc[0]: 0x34 + 0x12
        await b.issue(b.cmd("ACT", row=7))
        await b.issue(b.cmd("WR", col=0, data=0x1234))
        m = await b.issue(b.cmd("MAC", col=0, data=ones, last=1))
        await b.issue(b.cmd("PRE"))
        a = await b.issue(b.cmd("ACT", row=9))
        # every counter busy after this ACT: rejections are still ready at once and load
        # nothing (a rejected RD in a + 4 would otherwise delay the RD of a + tRCDRD)
        assert await reject(raw(op=DramOp.ACT, row=12), DramErr.BAD_ROW) == a + 1  # 2 over 3
        await reject(raw(op=DramOp.ACT, row=3), DramErr.ROW_OPEN)
        await reject(raw(op=DramOp.MAC, col=3, data=ones, last=1), DramErr.BAD_COL)
        assert await reject(raw(op=DramOp.RD, col=3), DramErr.BAD_COL) == a + 4
        r = await b.issue(b.cmd("RD", col=0))
        assert r == a + T.tRCDRD
        assert await reject(raw(op=4, col=3, data=1), DramErr.BAD_COL) == r + 1
        assert b.log[-1]["open"] == 1 and b.log[-1]["open_row"] == 9
        # acc[0] intact (the rejected MACs wrote nothing): row 9 is zeros, acc=1 adds 0
        m2 = await b.issue(b.cmd("MAC", col=1, data=ones, acc=1, last=1))
        pre = await b.issue(b.cmd("PRE"))
        assert pre == max(a + T.tRAS, m2 + T.tRTP)        # the rejected ACTs loaded nothing
        await b.until(r + T.tCL + 1)
        assert b.log[r + T.tCL]["rd_valid"] == 1 and b.log[r + T.tCL]["rd_payload"] == 0
        assert b.res(m + 1) == ([0x34 + 0x12], 0) and b.res(m2 + 1) == ([0x34 + 0x12], 0)
        # back to row 7: the marker is there, the rejected NOT_OPEN WR (0x55) never landed
        await b.issue(b.cmd("ACT", row=7))
        r = await b.issue(b.cmd("RD", col=0))
        await b.until(r + T.tCL + 1)
        assert b.log[r + T.tCL]["rd_payload"] == 0x1234
        # res beats only after the two legal MACs; err = the code in the cycle after each
        # rejection (also back to back), 0 in every other cycle
        assert [c for c, e in enumerate(b.log) if e["res_valid"]] == [m + 1, m2 + 1]
        assert [e["err"] for e in b.log] == [errs.get(c, 0) for c in range(len(b.log))]

    run(p, body)


# ------------------------------------------------------------------ MAC unit
async def write_row(b, r, row_bytes):
    """ACT r, one WR per burst (bytes of ``row_bytes``, int8), PRE."""
    p = b.p
    await b.issue(b.cmd("ACT", row=r))
    for c in range(p.n_cols):
        seg = row_bytes[c * p.burst_bytes:(c + 1) * p.burst_bytes]
        await b.issue(b.cmd("WR", col=c, data=burst_word(seg)))
    await b.issue(b.cmd("PRE"))


def test_mac_vs_numpy():
    """Row passes (ACT, C column MACs tCCDL apart, the first with acc=0 or into an entry, the
    last with last=1, PRE) against numpy: y[j] = wrap_A(sum over the row's bursts of
    w[c][j*K:(j+1)*K] . x[c]) (+ the entry when accumulating); the all -128 row wraps."""
    p = P
    U, K, O, C, A = p.burst_bytes, p.n_x, p.n_out, p.n_cols, p.acc_width
    rng = np.random.default_rng(1)
    W = rng.integers(-128, 128, size=(p.rows, p.row_bytes))
    W[5] = -128                                       # extreme: psum 2**17 per burst
    # passes: (row, dst, acc flag of the first MAC); x per pass and burst
    plan = [(0, 0, 0), (3, 1, 0), (5, 2, 0), (5, 2, 1), (3, 0, 1), (9, 3, 0), (5, 1, 1)]
    X = rng.integers(-128, 128, size=(len(plan), C, K))
    X[2:4] = -128
    junk = 0xAB << (8 * K)                            # bits above 8K are ignored by MAC

    async def body(b):
        for r in (0, 3, 5, 9):
            await write_row(b, r, W[r])
        beats, macs = [], []
        for k, (r, dst, acc0) in enumerate(plan):
            await b.issue(b.cmd("ACT", row=r))
            for c in range(C):
                x = pack_vec([int(v) for v in X[k, c]], 8) | (junk if K < U else 0)
                t = await b.issue(b.cmd("MAC", col=c, dst=dst, acc=int(c > 0 or acc0),
                                        last=int(c == C - 1), data=x))
                macs.append(t)
            beats.append(macs[-1] + 1)
            await b.issue(b.cmd("PRE"))
        await b.idle(2)
        # timing: MACs of a row tCCDL apart; one beat per pass, exactly one cycle after last
        for k in range(len(plan)):
            row = macs[k * C:(k + 1) * C]
            assert np.diff(row).tolist() == [T.tCCDL] * (C - 1)
        assert [c for c, e in enumerate(b.log) if e["res_valid"]] == beats
        acc = np.zeros((p.n_acc, O), dtype=object)
        wrapped = False
        for k, (r, dst, acc0) in enumerate(plan):
            w = W[r].reshape(C, O, K).astype(object)
            exact = sum(w[c] @ X[k, c].astype(object) for c in range(C)) + \
                (acc[dst] if acc0 else 0)
            acc[dst] = [wrap(v, A) for v in exact]
            wrapped |= any(int(e) != int(v) for e, v in zip(exact, acc[dst]))
            y, d = b.res(beats[k])
            assert (y, d) == ([int(v) for v in acc[dst]], dst), f"pass {k}"
            # the payload holds the beat until the next one
            nxt = beats[k + 1] if k + 1 < len(beats) else len(b.log)
            assert all(e["res_payload"] == b.log[beats[k]]["res_payload"]
                       for e in b.log[beats[k]:nxt])
        assert wrapped, "the test should exercise the A-bit wrap"

    run(p, body)


# ------------------------------------------------------------------ RD / WR data
@pytest.mark.parametrize("tcl,tccdl", [(4, 2), (1, 1), (9, 1)], ids=["short", "cl1", "cl9"])
def test_rd_wr_data(tcl, tccdl):
    """A beat in exactly t + tCL with the burst as in cycle t (a WR or an ACT of another row
    after the RD does not change it), one beat per RD, RDs back to back every tCCDL, the
    payload held between beats; a WR is visible to the next RD of the row and in the array."""
    t = DramTiming(**{**{f: getattr(T, f) for f in T.__dataclass_fields__},
                      "tCL": tcl, "tCCDL": tccdl})
    p = DramBankParams(rows=8, row_bytes=64, burst_bytes=16, n_out=2, n_acc=2,
                       acc_width=20, ref_max=2, timing=t)
    U, C = p.burst_bytes, p.n_cols
    rng = np.random.default_rng(tcl)
    W = rng.integers(-128, 128, size=(p.rows, p.row_bytes))
    new = rng.integers(-128, 128, size=U)

    async def body(b):
        for r in (2, 6):
            await write_row(b, r, W[r])
        await b.issue(b.cmd("ACT", row=2))
        rds = [(await b.issue(b.cmd("RD", col=c)), 2, c) for c in (0, 1, 2, 3, 1, 1)]
        wr = await b.issue(b.cmd("WR", col=1, data=burst_word(new)))       # after RDs of 1
        rds.append((await b.issue(b.cmd("RD", col=1)), 2, 1))
        await b.issue(b.cmd("PRE"))
        await b.issue(b.cmd("ACT", row=6))
        rds.append((await b.issue(b.cmd("RD", col=3)), 6, 3))
        await b.issue(b.cmd("PRE"))
        await b.issue(b.cmd("ACT", row=2))                                  # array kept
        rds.append((await b.issue(b.cmd("RD", col=1)), 2, 1))
        await b.until(rds[-1][0] + tcl + 3)
        assert [c for c, _, _ in rds[:6]] == [rds[0][0] + i * tccdl for i in range(6)]
        assert [c for c, e in enumerate(b.log) if e["rd_valid"]] == [c + tcl for c, _, _ in rds]
        for i, (c, r, col) in enumerate(rds):
            img = W[r].copy()
            if i >= 6 and r == 2:                      # after the WR (cycle wr)
                img[U:2 * U] = new
            want = burst_word(img[col * U:(col + 1) * U])
            assert b.log[c + tcl]["rd_payload"] == want, f"RD {i} (row {r}, col {col})"
            nxt = rds[i + 1][0] + tcl if i + 1 < len(rds) else len(b.log)
            assert all(e["rd_payload"] == want for e in b.log[c + tcl:nxt])
        assert wr < rds[6][0]

    run(p, body)


# ------------------------------------------------------------------ reset
def test_reset_mid_stream():
    """rst in cycle t: every output 0 in t+1 (a res beat, an rd payload, err, ref_pend, open,
    open_row were set), the RD in flight and the MAC, WR and ACT presented (and ready) in rst
    cycles lost, the array kept, the accumulators 0, the counters 0 (ACT in cycle 0), and the
    refresh timer restarted (a request tREFI after cycle 0)."""
    p = P
    ones = pack_vec([1] * p.n_x, 8)

    async def body(b):
        a = await b.issue(b.cmd("ACT", row=5))
        await b.issue(b.cmd("WR", col=2, data=0x0302))
        m = await b.issue(b.cmd("MAC", col=2, dst=3, data=ones, last=1))   # y = 5, dst 3
        r = await b.issue(b.cmd("RD", col=2))
        await b.until(T.tREFI + 2)                     # a request pending (row open)
        x = await b.issue(b.cmd("RD", col=2))          # in flight at the reset
        await b.step(b.cmd("ACT", row=1))              # rejected (ROW_OPEN): err next cycle
        before = b.log[-1]
        assert b.res(m + 1) == ([5, 0], 3)
        assert before["res_payload"] and before["rd_payload"] == 0x0302 and before["open"]
        assert before["ref_pend"] == 1 and before["open_row"] == 5 and before["ready"]
        # cycle x + 2: rst with a MAC presented and ready (tCCDL after the RD): lost
        assert await b.step(b.cmd("MAC", col=2, dst=3, acc=1, data=ones, last=1), rst=1)
        zero = dict.fromkeys(Bank.OUTS, 0)
        assert {k: b.log[-1][k] for k in Bank.OUTS} != zero and b.log[-1]["err"]
        # a second rst cycle with an illegal WR (NOT_OPEN after the first): no err either
        assert await b.step(b.cmd("WR", col=2, data=0x7777), rst=1)
        c0 = b.cycle                                   # cycle 0 of every rule
        assert c0 == x + 4 and x + T.tCL >= c0 and a == 0
        assert b.sample() == zero
        assert await b.issue(b.cmd("ACT", row=5)) == c0           # counters 0: at once
        m2 = await b.issue(b.cmd("MAC", col=2, dst=3, acc=1, data=ones, last=1))
        w = await b.issue(b.cmd("WR", col=2, data=0x7777), limit=100)
        assert w == c0 + T.tRCDRDMAC + T.tRTW             # c_wr: the MAC's tRTW binds
        await b.idle(T.tCCDL - 1)
        # a third reset with a legal, ready WR: it does not reach the array
        assert await b.step(b.cmd("WR", col=2, data=0x5555), rst=1)
        c1 = b.cycle
        await b.issue(b.cmd("ACT", row=5))
        r2 = await b.issue(b.cmd("RD", col=2))
        await b.until(c1 + T.tREFI + 1)
        # acc[3] was reset (5 + 0 would be 10 otherwise), the MAC in the rst cycle was lost
        assert [c for c, e in enumerate(b.log) if e["res_valid"]] == [m + 1, m2 + 1]
        assert b.res(m2 + 1) == ([5, 0], 3)
        assert b.log[r2 + T.tCL]["rd_payload"] == 0x7777   # kept; the WR in rst lost
        # no beat from the RDs in flight at the resets
        assert [c for c, e in enumerate(b.log) if e["rd_valid"]] == [r + T.tCL, r2 + T.tCL]
        # refresh: timer restarted in c1; with the row open the request stays pending
        pend = [e["ref_pend"] for e in b.log]
        assert pend[c1 + T.tREFI - 1] == 0 and pend[c1 + T.tREFI] == 1

    run(p, body)


def test_reset_refresh_and_act_from_idle():
    """After a reset with the bank idle, a refresh starts in cycle tREFI of the new count and
    an ACT held from then is accepted in tREFI + tRFC."""
    async def body(b):
        await b.until(50)
        await b.step(rst=1)
        c0 = b.cycle
        await b.until(c0 + T.tREFI)
        a = await b.issue(b.cmd("ACT", row=0))
        assert _starts(b) == [c0 + T.tREFI] and a == c0 + T.tREFI + T.tRFC

    run(P, body)


def test_ready_ignores_valid():
    """cmd.ready is a function of the registers and the payload only: the same with valid
    0 and 1, for every opcode, while timing holds and when it allows."""
    async def body(b):
        d, ctx = b.dut, b.ctx
        words = [b.cmd(op, **({"row": 1} if op == "ACT" else {})) for op in OPS] + \
            [pack(cmd_fields(P), op=6)]

        async def probe():
            got = []
            for w in words:
                ctx.set(d.cmd.payload.as_value(), w)
                r = set()
                for v in (0, 1, 0):
                    ctx.set(d.cmd.valid, v)
                    r.add(ctx.get(d.cmd.ready))
                assert len(r) == 1, f"ready depends on valid for {w:#x}"
                got.append(r.pop())
            ctx.set(d.cmd.valid, 0)
            return got

        assert await probe() == [1, 1, 1, 1, 1, 1]     # IDLE: ACT ready, the rest rejected
        await b.issue(b.cmd("ACT", row=1))
        held = await probe()                           # ACT just accepted: all held but
        assert held == [1, 0, 0, 0, 0, 1]              # ACT (ROW_OPEN) and op 6 (BAD_OP)
        await b.idle(max(T.tRAS, T.tRCDRDMAC, T.tRCDRD, T.tRCDWR) - 1)
        assert await probe() == [1, 1, 1, 1, 1, 1]

    run(P, body)


# ------------------------------------------------------------------ Verilog
@pytest.mark.verilator
@pytest.mark.parametrize("p", [P, P_ODD], ids=["small", "odd"])
def test_verilog_lint(p, tmp_path):
    """Converts with amaranth.back.verilog (ports: the signature's), lints clean with
    ``verilator --lint-only -Wall`` and hdl/waivers.vlt only."""
    from hdl.export import lint
    dut = DramBank(p)
    ports = hier.signature_ports(dut)
    text = verilog.convert(dut, name="dram_bank", ports=[v for _, v in ports.values()],
                           emit_src=False)
    d = hier.parse_ports(text, "dram_bank")
    hier.check_ports(dut, d)
    path = tmp_path / "dram_bank.v"
    path.write_text(text)
    r = lint(path)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ differential vs model
DIFF_T = DramTiming(**{**{f: getattr(T, f) for f in T.__dataclass_fields__}, "tREFI": 45})
DIFF_T1 = DramTiming(**{**{f: getattr(T, f) for f in T.__dataclass_fields__},
                        "tREFI": 40, "tCL": 1, "tCCDL": 1, "tRFC": 6})
DIFF_T2 = DramTiming(**{**{f: getattr(T, f) for f in T.__dataclass_fields__},
                        "tREFI": 30, "tCL": 2, "tCCDL": 3})
DIFF = {
    # C = 1, K = 1 (one lane per byte), one entry, two rows, tCCDL > tCL
    "tiny": DramBankParams(rows=2, row_bytes=8, burst_bytes=8, n_out=8, n_acc=1,
                           acc_width=16, ref_max=1, timing=DIFF_T2),
    "small": DramBankParams(rows=16, row_bytes=64, burst_bytes=16, n_out=2, n_acc=4,
                            acc_width=19, ref_max=2, timing=DIFF_T),
    "odd_cl1": DramBankParams(rows=12, row_bytes=48, burst_bytes=16, n_out=4, n_acc=2,
                              acc_width=18, ref_max=1, timing=DIFF_T1),
}


def _rand_cmd(rng, p, opened, pend, hold_open):
    """A random command word, mostly legal for the bank state, some illegal ones."""
    u = rng.random()
    col = rng.randrange(1 << p.col_bits) if rng.random() < 0.1 else rng.randrange(p.n_cols)
    f = dict(row=rng.randrange(1 << p.row_bits), col=col,
             dst=rng.randrange(p.n_acc), acc=rng.randrange(2),   # n_acc = 1: dst 1 unspecified
             last=int(rng.random() < 0.3), data=rng.getrandbits(p.burst_bits))
    if u < 0.04:
        op = rng.randrange(5, 8)
    elif not opened:
        op = DramOp.ACT if u < 0.9 else rng.choice([DramOp.PRE, DramOp.MAC, DramOp.RD,
                                                      DramOp.WR])
    else:
        pre = 0.0 if hold_open else (0.3 if pend else 0.08)
        op = DramOp.PRE if u < 0.04 + pre else rng.choice(
            [DramOp.MAC] * 4 + [DramOp.RD] * 2 + [DramOp.WR] * 2 + [DramOp.ACT])
    return pack(cmd_fields(p), op=int(op), **f)


def differential(name, seed, n_cycles, fault=None):
    """Lockstep of DramBank(DIFF[name], fault) and model.dram_bank.DramBankModel on a random
    stream: AssertionError naming the cycle and the outputs at the first difference."""
    from model.dram_bank import DramBankModel
    p = DIFF[name]
    model = DramBankModel(p)
    rng = random.Random(seed)
    keys = ("cmd_ready",) + Bank.OUTS
    stats = {"fired": 0, "rst": 0, "res": 0, "rd": 0, "err": 0, "lost": 0, "refresh": 0}

    async def body(b):
        word, valid, hold, fired = 0, 0, 0, 0
        for cyc in range(n_cycles):
            d, ctx = b.dut, b.ctx
            if fired or not (valid and rng.random() < 0.9):    # else keep the beat held
                opened = b.log[-1]["open"] if b.log else 0
                pend = b.log[-1]["ref_pend"] if b.log else 0
                if rng.random() < 0.01:                         # keep a row open until
                    hold = (p.ref_max + 1) * p.timing.tREFI + 20  # a request is lost
                word = _rand_cmd(rng, p, opened, pend, hold > 0)
                valid = int(rng.random() < 0.8)
            hold = max(0, hold - 1)
            rst = int(rng.random() < 0.004)
            ctx.set(d.cmd.payload.as_value(), word)
            ctx.set(d.cmd.valid, 1 - valid)
            other = ctx.get(d.cmd.ready)
            mready = model.ready(word)
            fired = await b.step(word, valid=valid, rst=rst)
            hw = b.log[-1]
            hw["cmd_ready"] = hw["ready"]
            out = model.step(valid, word, rst=rst)
            exp = dict(zip(out._fields, out))
            diff = {k: (hw[k], exp[k]) for k in keys if hw[k] != exp[k]}
            assert not diff, f"cycle {cyc}: (hdl, model) {diff}"
            assert other == hw["ready"] == mready, f"cycle {cyc}: ready depends on valid"
            stats["fired"] += fired and not rst
            stats["rst"] += rst
            stats["res"] += hw["res_valid"]
            stats["rd"] += hw["rd_valid"]
            stats["err"] += hw["err"] != 0
            stats["lost"] += hw["ref_lost"]
            stats["refresh"] += hw["refreshing"]
        print(f"{name}: {n_cycles} cycles compared, 0 mismatches, {stats}")

    run(p, body, fault)
    return stats


@pytest.mark.parametrize("name", sorted(DIFF))
def test_differential_vs_model(name, seed):
    """HDL vs the golden model on a random stream (random valid, payloads held or changed
    while not ready, illegal commands, rows held open past M refresh requests, resets):
    every output and cmd.ready, every cycle."""
    stats = differential(name, seed, 3000)
    # the stream reached the interesting cases
    assert stats["res"] > 20 and stats["rd"] > 20 and stats["err"] > 20
    assert stats["rst"] > 2 and stats["lost"] > 0 and stats["refresh"] > 100


def test_differential_catches_fault(seed):
    """The same lockstep reports the deliberately wrong DUT (first MAC one cycle early)."""
    with pytest.raises(AssertionError, match=r"cycle \d+: \(hdl, model\) \{'cmd_ready'"):
        differential("small", seed, 3000, fault="rcdmac_short")
