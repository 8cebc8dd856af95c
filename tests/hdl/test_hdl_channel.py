"""Fast checks of hdl/channel.py with amaranth.sim on a small configuration, plus Verilator lint.

Expected values are plain numpy integer dot products computed here (not via model/); timing
expectations come straight from docs/channel.md and docs/macro.md.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from hdl.channel import PimChannel
from cimphony.compat import silence_unused
from hdl.export import lint, verilog
from spec.isa import ChannelParams, Op, cmd_fields, encode, out_fields
from spec.params import MacroParams, pack_vec, unpack, unpack_vec, width

MAC_P = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_sets=2, n_acc=2, tree_stages=0)


def chan(dcs=True, **kw):
    return ChannelParams(**{"macro": MAC_P, "n_banks": 2, "n_gbuf": 2, "q_depth": 4,
                            "dcs": dcs, **kw})


def wrap(v, bits):
    m = 1 << bits
    return [((int(a) + (m >> 1)) % m) - (m >> 1) for a in v]


# ------------------------------------------------------------------ program builders
class Prog:
    """Builds a command list and the numpy expectation of every RD_OUT, in program order."""

    def __init__(self, p: ChannelParams, rng):
        self.p, self.m, self.rng = p, p.macro, rng
        self.cmds, self.ops = [], []
        self.W = np.zeros((p.n_banks, self.m.n_sets, self.m.n_in, self.m.n_out), dtype=object)
        self.g = np.zeros((p.n_gbuf, self.m.n_in), dtype=object)
        self.obuf = np.zeros((p.n_banks, self.m.n_acc, self.m.n_out), dtype=object)
        self.expect = []               # (y list, bank, o) per RD_OUT

    def _add(self, op, **f):
        self.cmds.append(encode(self.p, op, **f))
        self.ops.append(op)

    def weights(self, b, s):
        lo, hi = self.m.w_range
        self.W[b, s] = self.rng.integers(lo, hi + 1, size=(self.m.n_in, self.m.n_out))
        for r in range(self.m.n_in):
            self._add(Op.WR_W, bank=b, set=s, row=r,
                      data=pack_vec([int(v) for v in self.W[b, s, r]], self.m.w_bits))

    def inp(self, g, x=None):
        lo, hi = self.m.x_range
        x = self.rng.integers(lo, hi + 1, size=self.m.n_in) if x is None else np.asarray(x)
        self.g[g] = x
        self._add(Op.WR_INP, g=g, data=pack_vec([int(v) for v in x], self.m.x_bits))

    def mac(self, b, s, g, o, acc=0):
        y = self.g[g].astype(object) @ self.W[b, s].astype(object)
        self.obuf[b, o] = wrap(y + (self.obuf[b, o] if acc else 0), self.m.acc_width)
        self._add(Op.MAC, bank=b, set=s, g=g, o=o, acc=acc)

    def rd(self, b, o):
        self.expect.append((list(self.obuf[b, o]), b, o))
        self._add(Op.RD_OUT, bank=b, o=o)


# ------------------------------------------------------------------ cycle driver
class Trace:
    def __init__(self):
        self.cycles = 0
        self.outs = []          # (cycle, y, bank, o) of every out transfer
        self.accepts = []       # cycle of each accepted command
        self.io_issue = []      # (cycle, op, g) of each ioq issue
        self.mac_issue = []     # (cycle, bank)
        self.res = []           # (cycle, bank) macro result beats
        self.stalled = []       # (cycle, op) cmd.valid & ~cmd.ready
        self.samples = []       # per cycle dict of port/probe values


def run(p, cmds, out_ready=lambda c: 1, limit=3000):
    """Drive ``cmds`` back-to-back (each held valid until accepted) until everything is
    accepted, the channel is idle and the output register is empty; returns a Trace."""
    dut = PimChannel(p)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    tr = Trace()
    of = out_fields(p)
    m = p.macro

    async def tb(ctx):
        i, c = 0, 0
        while True:
            valid = i < len(cmds)
            if valid:
                ctx.set(dut.cmd.payload.as_value(), cmds[i])
            ctx.set(dut.cmd.valid, valid)
            rdy = int(out_ready(c))
            ctx.set(dut.out.ready, rdy)
            ready = ctx.get(dut.cmd.ready)
            pr = {k: ctx.get(v) for k, v in dut.probe.items()}
            s = dict(pr, out_valid=ctx.get(dut.out.valid), out_ready=rdy,
                     out_payload=ctx.get(dut.out.payload.as_value()),
                     idle=ctx.get(dut.idle), busy=ctx.get(dut.busy), err=ctx.get(dut.err))
            tr.samples.append(s)
            assert s["err"] == 0, f"cycle {c}: err {s['err']}"
            if valid and ready:
                tr.accepts.append(c)
            if valid and not ready:
                tr.stalled.append((c, cmds[i] & 3))
            if pr["io_go"]:
                tr.io_issue.append((c, pr["io_op"], pr["io_g"]))
            for b, mac in enumerate(dut.banks):
                if ctx.get(mac.req.valid) and ctx.get(mac.req.ready):
                    tr.mac_issue.append((c, b))
                if ctx.get(mac.res.valid):
                    tr.res.append((c, b))
            if s["out_valid"] and rdy:
                f = unpack(of, s["out_payload"])
                tr.outs.append((c, unpack_vec(f["y"], m.n_out, m.acc_width), f["bank"], f["o"]))
            await ctx.tick()
            c += 1
            if valid and ready:
                i += 1
            if i == len(cmds) and ctx.get(dut.idle) and not ctx.get(dut.out.valid):
                break
            assert c < limit, f"timeout after {c} cycles ({i}/{len(cmds)} accepted)"
        tr.cycles = c

    sim.add_testbench(tb)
    sim.run()
    return tr


def check_outputs(prog, tr):
    got = [(y, b, o) for _, y, b, o in tr.outs]
    assert got == prog.expect


def in_flight(tr, t, p):
    """Commands in flight in cycle t: issued at t, or MACs issued before t not yet returned
    (a MAC is in flight from its issue cycle through its result cycle)."""
    n = sum(1 for c, *_ in tr.io_issue if c == t)
    for b in range(p.n_banks):
        issued = [c for c, bb in tr.mac_issue if bb == b]
        returned = [c for c, bb in tr.res if bb == b]
        n += sum(1 for c in issued if c <= t) - sum(1 for c in returned if c < t)
    return n


# ------------------------------------------------------------------ tests
def test_ports_default_params():
    p = ChannelParams()
    dut = silence_unused(PimChannel(p))
    assert len(dut.cmd.payload.as_value()) == width(cmd_fields(p))
    assert len(dut.out.payload.as_value()) == width(out_fields(p))
    assert (len(dut.idle), len(dut.busy), len(dut.err)) == (1, p.n_banks, 2)
    with pytest.raises(ValueError, match="params must be ChannelParams"):
        PimChannel(MAC_P)


@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
def test_dot_products_and_accumulate(dcs):
    """WR_W, WR_INP, MAC, RD_OUT on both banks and both sets; acc=1 sums two MACs into one
    OBuf entry; an untouched entry reads 0 (reset)."""
    p = chan(dcs)
    pr = Prog(p, np.random.default_rng(1))
    pr.rd(1, 1)                                    # reset value 0
    for b in range(2):
        for s in range(2):
            pr.weights(b, s)
    pr.inp(0)
    pr.inp(1, [MAC_P.x_range[0]] * MAC_P.n_in)     # all-minimum inputs
    pr.mac(0, 0, 0, 0)
    pr.mac(1, 1, 1, 0)
    pr.mac(0, 1, 1, 1)
    pr.mac(0, 1, 0, 1, acc=1)                      # accumulate into OBuf (0, 1)
    pr.rd(0, 0)
    pr.rd(1, 0)
    pr.rd(0, 1)
    tr = run(p, pr.cmds)
    check_outputs(pr, tr)
    assert tr.samples[-1]["idle"] == 1


def _overlap_prog(p):
    pr = Prog(p, np.random.default_rng(2))
    pr.weights(0, 0)
    pr.weights(1, 0)
    pr.inp(0)
    pr.mac(0, 0, 0, 0)
    pr.inp(1)                      # another GBuf entry: independent of the MAC in flight
    pr.mac(1, 0, 1, 0)
    pr.inp(1)                      # WAR on g1 (waits for the bank-1 MAC)
    pr.mac(0, 0, 1, 1)
    pr.rd(0, 0)
    pr.rd(1, 0)
    pr.rd(0, 1)
    return pr


def test_dcs_overlaps_and_inorder_serialises():
    X, P = MAC_P.x_bits, MAC_P.tree_stages
    res = {}
    for dcs in (True, False):
        p = chan(dcs)
        pr = _overlap_prog(p)
        tr = run(p, pr.cmds)
        check_outputs(pr, tr)
        res[dcs] = (p, tr)
    (pd, td), (pi, ti) = res[True], res[False]
    assert td.cycles < ti.cycles, (td.cycles, ti.cycles)
    # DCS: the WR_INP of g1 issues while the bank-0 MAC is in flight
    m0, r0 = td.mac_issue[0][0], [c for c, b in td.res if b == 0][0]
    assert any(op == Op.WR_INP and g == 1 and m0 < c < r0 for c, op, g in td.io_issue)
    assert max(in_flight(td, t, pd) for t in range(td.cycles)) >= 2
    # in-order: never two commands in flight, at most one issue per cycle, and every MAC
    # costs X+P+2 cycles (issue to the next issue)
    assert max(in_flight(ti, t, pi) for t in range(ti.cycles)) == 1
    issues = sorted([c for c, *_ in ti.io_issue] + [c for c, _ in ti.mac_issue])
    assert len(issues) == len(set(issues)) == len(_overlap_prog(pi).cmds)
    for c, _ in ti.mac_issue:
        nxt = [i for i in issues if i > c]
        if nxt:
            assert nxt[0] == c + X + P + 2


@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
def test_raw_rd_out_waits_for_mac(dcs):
    """RD_OUT right after its MAC: issues exactly X+P+2 cycles after the MAC (result in OBuf),
    so out.valid rises at MAC issue + X+P+3, with the right payload.  The MAC itself issues the
    cycle after its WR_INP."""
    X, P = MAC_P.x_bits, MAC_P.tree_stages
    p = chan(dcs)
    pr = Prog(p, np.random.default_rng(3))
    pr.weights(1, 1)
    pr.inp(1)
    pr.mac(1, 1, 1, 1)
    pr.rd(1, 1)
    tr = run(p, pr.cmds)
    check_outputs(pr, tr)
    wr_inp = [c for c, op, _ in tr.io_issue if op == Op.WR_INP][0]
    (mac_c, bank), = tr.mac_issue
    assert bank == 1 and mac_c == wr_inp + 1
    rd_c = [c for c, op, _ in tr.io_issue if op == Op.RD_OUT][0]
    assert rd_c == mac_c + X + P + 2
    first_valid = next(c for c, s in enumerate(tr.samples) if s["out_valid"])
    assert first_valid == rd_c + 1 == tr.outs[0][0]


def test_war_gbuf_not_corrupted():
    """WR_INP to the GBuf entry a queued MAC reads waits for that MAC's result; both MACs see
    their own input."""
    p = chan(True)
    pr = Prog(p, np.random.default_rng(4))
    pr.weights(0, 0)
    pr.inp(0)
    pr.mac(0, 0, 0, 0)
    pr.inp(0)
    pr.mac(0, 0, 0, 1)
    pr.rd(0, 0)
    pr.rd(0, 1)
    tr = run(p, pr.cmds)
    check_outputs(pr, tr)
    assert pr.expect[0][0] != pr.expect[1][0]
    second = [c for c, op, _ in tr.io_issue if op == Op.WR_INP][1]
    first_res = [c for c, b in tr.res if b == 0][0]
    assert second == first_res + 1                 # done visible the cycle after the result


def test_out_backpressure_and_queue_full():
    """out.ready low: the payload holds, nothing is lost or reordered, RD_OUTs pile up in the
    ioq until cmd.ready drops (ioq full); MACs fill the cq (one per X cycles per bank) until
    cmd.ready drops for a MAC while I/O commands are still accepted."""
    p = chan(True)
    Q = p.q_depth
    pr = Prog(p, np.random.default_rng(5))
    pr.weights(0, 0)
    pr.weights(0, 1)
    pr.inp(0)
    pr.inp(1)
    for k in range(8):                             # 8 MACs into bank 0: cq fills
        pr.mac(0, k % 2, k % 2, k % 2, acc=int(k >= 2))
    pr.weights(1, 0)                               # I/O accepted while the cq is full
    pr.mac(1, 0, 0, 1)
    for k in range(7):                             # more RD_OUTs than the ioq holds
        pr.rd(k % 2, (k // 2) % 2)
    hold = lambda c: c > 160 and c % 3 == 0        # long block, then sparse ready
    tr = run(p, pr.cmds, out_ready=hold)
    check_outputs(pr, tr)
    # stream rule: payload stable while valid & ~ready
    for a, b in zip(tr.samples, tr.samples[1:]):
        if a["out_valid"] and not a["out_ready"]:
            assert b["out_valid"] and b["out_payload"] == a["out_payload"]
    stalled = {op for _, op in tr.stalled}
    assert stalled == {Op.MAC, Op.RD_OUT}
    for c, op in tr.stalled:
        key = "cq_n" if op == Op.MAC else "ioq_n"
        assert tr.samples[c][key] == Q
    # WR_W accepted in a cycle where the cq was full
    assert any(tr.samples[c]["cq_n"] == Q and (pr.cmds[i] & 3) == Op.WR_W
               for i, c in enumerate(tr.accepts))
    # bank 0 MACs back to back, one per X cycles
    b0 = [c for c, b in tr.mac_issue if b == 0]
    assert np.diff(b0).tolist() == [MAC_P.x_bits] * 7


@pytest.mark.parametrize("p", [
    chan(True),
    ChannelParams(macro=MacroParams(n_in=6, n_out=3, w_bits=8, x_bits=8, n_sets=4, n_acc=4,
                                    tree_stages=2), n_banks=3, n_gbuf=3, q_depth=5, dcs=False),
], ids=lambda p: p.tag)
def test_verilog_ports_and_lint(p, tmp_path):
    text = verilog(PimChannel(p))
    for port, w in (("cmd__payload", width(cmd_fields(p))), ("out__payload", width(out_fields(p))),
                    ("busy", p.n_banks), ("err", 2)):
        assert re.search(rf"\b(input|output)\s+(reg\s+)?\[{w - 1}:0\]\s+{port}\b", text), port
    for port in ("clk", "rst", "cmd__valid", "cmd__ready", "out__valid", "out__ready", "idle"):
        assert re.search(rf"\b(input|output)\s+(reg\s+)?{port}\b", text), port
    f = tmp_path / "pim_channel.v"
    f.write_text(text)
    r = lint(f)
    assert r.returncode == 0, r.stdout + r.stderr


def test_reused_id_does_not_alias_a_finished_dependency():
    """docs/channel.md: a dependency names only a pending command.  A WR_INP waits in the ioq
    (behind an RD_OUT blocked by out.ready) with a dependency on a MAC that has finished; after
    W more commands a MAC reusing that MAC's id depends on the WR_INP.  Without the rule
    (record only pending slots, clear finished dependencies every edge) this deadlocks."""
    p = chan(True)
    W = p.window
    pr = Prog(p, np.random.default_rng(6))
    pr.weights(0, 0)
    pr.weights(1, 0)
    pr.inp(0)
    pr.inp(1)
    s = len(pr.cmds)
    pr.mac(0, 0, 1, 0)                             # id s: reads g1
    pr.rd(0, 0)                                    # issues, fills the output register
    pr.rd(0, 0)                                    # blocked while out.ready is low
    pr.inp(1)                                      # depends on gr[g1] = s (finished)
    k = 0
    while len(pr.cmds) < s + W:                    # fillers: ids up to s + W - 1
        pr.mac(k % 2, 0, 0, 1)
        k += 1
    pr.mac(1, 0, 1, 1)                             # id s again (mod W): depends on the WR_INP
    pr.rd(1, 1)
    assert len(pr.cmds) - 2 == s + W
    tr = run(p, pr.cmds, out_ready=lambda c: c > 200, limit=1000)
    check_outputs(pr, tr)
    assert tr.accepts[s + W] < 200                 # the aliasing MAC was queued while blocked


def test_finished_table_slot_is_invalidated_no_false_dependency():
    """docs/channel.md: at every edge each dependency-table slot whose ``done[slot.seq] = 1``
    is invalidated (unless the edge writes it).  The WR_INP of g1 (id s) finishes long before
    a bank-0 MAC reuses id s (s + W = s mod W); the bank-1 MAC that reads g1, queued right
    behind it, must not depend on that unrelated MAC: it issues the cycle after it (without
    the rule gw[g1] would still hold (1, s) and it would wait X+P+2 cycles for the bank-0
    MAC's result)."""
    X, P = MAC_P.x_bits, MAC_P.tree_stages
    p = chan(True)
    W = p.window
    pr = Prog(p, np.random.default_rng(7))
    pr.weights(0, 0)
    pr.weights(1, 0)
    s = len(pr.cmds)
    pr.inp(1)                                      # id s: gw[g1] <= (1, s)
    while len(pr.cmds) < s + W:                    # fillers (ids s+1 .. s+W-1), never g1
        pr.inp(0)
    n0 = len(pr.cmds)
    pr.mac(0, 0, 0, 0)                             # id s again (mod W), unrelated to g1
    pr.mac(1, 0, 1, 0)                             # reads g1, written more than W cmds ago
    pr.rd(0, 0)
    pr.rd(1, 0)
    assert n0 == s + W
    tr = run(p, pr.cmds)
    check_outputs(pr, tr)
    # every command accepted back to back (cmd i in cycle i); each ioq command issues the
    # cycle after it is accepted, so the last filler (gw[g0]) issues at n0
    assert tr.accepts == list(range(len(pr.cmds)))
    assert [c for c, op, _ in tr.io_issue if op != Op.RD_OUT] == list(range(1, n0 + 1))
    assert tr.mac_issue == [(n0 + 1, 0), (n0 + 2, 1)]      # one cycle apart
    # results at MAC issue + X+P+1, done (and the RD_OUTs issue) one cycle later
    assert tr.res == [(n0 + X + P + 2, 0), (n0 + X + P + 3, 1)]
    rd = [c for c, op, _ in tr.io_issue if op == Op.RD_OUT]
    assert rd == [n0 + X + P + 3, n0 + X + P + 4]
    assert [c for c, *_ in tr.outs] == [n0 + X + P + 4, n0 + X + P + 5]
    assert tr.cycles == n0 + X + P + 6
