"""amaranth.sim checks of hdl/module.py (PimModule) on a small configuration.

Expected values are computed here with plain numpy (no model/ golden model); the rules come
straight from docs/module.md: page table translation, multicast, error codes and their order,
"a rejected command has no effect", loops with strides, BARRIER, ovf and err_count.
"""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from hdl.module import PimModule
from spec.isa import ChannelParams, HostOp, ModErr, ModuleParams, host_encode, mod_out_fields
from spec.params import MacroParams, pack_vec, unpack, unpack_vec

MACRO = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_sets=2, n_acc=2, tree_stages=0)
P = ModuleParams(channel=ChannelParams(macro=MACRO, n_banks=2, n_gbuf=2, q_depth=4), n_ch=2,
                 n_vpages=8, n_req=2, fifo_depth=4, loop_len=4)
F = P.fifo_depth
A = MACRO.acc_width


def H(op, **f) -> int:
    return host_encode(P, op, **f)


def wrow(w) -> int:
    return pack_vec([int(v) for v in w], MACRO.w_bits)


def xvec(x) -> int:
    return pack_vec([int(v) for v in x], MACRO.x_bits)


def rand_w(rng):
    return rng.integers(-8, 8, size=(MACRO.n_in, MACRO.n_out))


def rand_x(rng):
    return rng.integers(-8, 8, size=MACRO.n_in)


def write_page(chmask, rid, vp, W):
    return [H(HostOp.WR_W, chmask=chmask, rid=rid, vp=vp, row=r, data=wrow(W[r]))
            for r in range(MACRO.n_in)]


class Bench:
    """Cycle driver: one host push per ``step`` at most, ``out.ready`` = 1, records outputs."""

    def __init__(self, ctx, dut, params=P):
        self.ctx, self.dut, self.params = ctx, dut, params
        self.cycle = 0
        self.outs = []      # (chan, bank, o, y list) in order
        self.errs = []      # (cycle of the rejection, code)
        self.ovfs = []      # cycle of the dropped push
        self.trace = []     # per cycle: (fifo level, every channel idle, module idle)

    async def step(self, cmd=None, out_ready=1):
        ctx, dut = self.ctx, self.dut
        ctx.set(dut.host.valid, cmd is not None)
        ctx.set(dut.host.payload.as_value(), cmd if cmd is not None else 0)
        ctx.set(dut.out.ready, out_ready)
        if ctx.get(dut.out.valid) and out_ready:
            f = unpack(mod_out_fields(self.params), ctx.get(dut.out.payload.as_value()))
            self.outs.append((f["chan"], f["bank"], f["o"], unpack_vec(f["y"], MACRO.n_out, A)))
        if ctx.get(dut.err):
            self.errs.append((self.cycle - 1, ctx.get(dut.err)))
        if ctx.get(dut.ovf):
            self.ovfs.append(self.cycle - 1)
        self.trace.append((ctx.get(dut.fifo_level),
                           all(ctx.get(ch.idle) for ch in dut.channels), ctx.get(dut.idle)))
        await ctx.tick()
        self.cycle += 1

    async def send(self, cmds):
        """Push each command as soon as the FIFO has room (never drops)."""
        for c in cmds:
            for _ in range(500):
                if self.ctx.get(self.dut.fifo_level) < self.params.fifo_depth:
                    break
                await self.step()
            else:
                raise AssertionError("FIFO never drained")
            await self.step(c)

    async def drain(self, limit=2000):
        """Step until the module is idle, no output is pending and err/ovf are settled."""
        quiet = 0
        for _ in range(limit):
            await self.step()
            quiet = quiet + 1 if (self.ctx.get(self.dut.idle)
                                  and not self.ctx.get(self.dut.out.valid)) else 0
            if quiet >= 3:
                return
        raise AssertionError("module never became idle")

    def codes(self):
        return [c for _, c in self.errs]


def run(program, params=P):
    """Simulate ``program(bench)`` on a fresh PimModule(params); returns the Bench."""
    dut = PimModule(params)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    box = {}

    async def tb(ctx):
        b = Bench(ctx, dut, params)
        box["b"] = b
        await b.step()
        await program(b)
        await b.drain()
        assert ctx.get(dut.idle) == 1
        box["err_count"] = ctx.get(dut.err_count)

    sim.add_testbench(tb)
    sim.run()
    b = box["b"]
    b.err_count = box["err_count"]
    return b


def y(x, W):
    return [int(v) for v in np.asarray(x, dtype=np.int64) @ np.asarray(W, dtype=np.int64)]


# ------------------------------------------------------------------ tests
def test_multicast_mac(seed):
    rng = np.random.default_rng(seed)
    W0, W1, W2 = rand_w(rng), rand_w(rng), rand_w(rng)
    X, X2 = rand_x(rng), rand_x(rng)

    async def prog(b):
        await b.send([H(HostOp.MAP, vp=3, pp=1, rid=1),       # bank 0, set 1
                      H(HostOp.MAP, vp=0, pp=2, rid=0)])      # bank 1, set 0
        await b.send(write_page(1, 1, 3, W0) + write_page(2, 1, 3, W1)   # per channel
                     + write_page(3, 0, 0, W2))                           # multicast
        await b.send([H(HostOp.WR_INP, chmask=3, g=1, data=xvec(X)),
                      H(HostOp.WR_INP, chmask=3, g=0, data=xvec(X2)),
                      H(HostOp.MAC, chmask=3, rid=1, vp=3, g=1, o=1, acc=0),
                      H(HostOp.RD_OUT, chmask=3, rid=1, vp=3, o=1)])
        await b.drain()
        await b.send([H(HostOp.MAC, chmask=3, rid=0, vp=0, g=1, o=0, acc=0),
                      H(HostOp.MAC, chmask=3, rid=0, vp=0, g=0, o=0, acc=1),
                      H(HostOp.RD_OUT, chmask=2, rid=0, vp=0, o=0),
                      H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=0)])

    b = run(prog)
    acc = [a + c for a, c in zip(y(X, W2), y(X2, W2))]
    assert b.outs == [(0, 0, 1, y(X, W0)), (1, 0, 1, y(X, W1)),    # lowest channel first
                      (0, 1, 0, acc), (1, 1, 0, acc)]    # same cycle: channel 0 first
    assert b.errs == [] and b.ovfs == [] and b.err_count == 0


def test_errors_have_no_effect(seed):
    rng = np.random.default_rng(seed)
    W, G = rand_w(rng), rand_w(rng)
    X = rand_x(rng)
    E = ModErr
    bad = [  # (command, expected code)
        *[(op, E.BAD_OPCODE) for op in range(10, 16)],
        (H(HostOp.WR_W, chmask=0, rid=0, vp=1, row=0, data=wrow(G[0])), E.BAD_FIELD),
        (H(HostOp.WR_W, chmask=4, rid=0, vp=1, row=0, data=wrow(G[0])), E.BAD_FIELD),
        (H(HostOp.WR_INP, chmask=7, g=0, data=xvec(-X)), E.BAD_FIELD),       # chmask >= 2**C
        (H(HostOp.WR_INP, chmask=3, g=2, data=xvec(-X)), E.BAD_FIELD),       # g >= n_gbuf
        (H(HostOp.MAC, chmask=3, rid=0, vp=1, g=2, o=0), E.BAD_FIELD),
        (H(HostOp.WR_W, chmask=3, rid=0, vp=1, row=8, data=wrow(G[0])), E.BAD_FIELD),
        (H(HostOp.MAC, chmask=3, rid=0, vp=1, g=0, o=2), E.BAD_FIELD),       # o >= n_acc
        (H(HostOp.RD_OUT, chmask=3, rid=0, vp=8, o=0), E.BAD_FIELD),         # vp >= V
        (H(HostOp.RD_OUT, chmask=3, rid=3, vp=5, o=0), E.BAD_FIELD),         # before UNMAPPED
        (H(HostOp.WR_W, chmask=3, rid=2, vp=1, row=0, data=wrow(G[0])), E.BAD_FIELD),
        (H(HostOp.MAP, vp=2, pp=4, rid=0), E.BAD_FIELD),                     # pp >= NP
        (H(HostOp.MAP, vp=1, pp=9, rid=0), E.BAD_FIELD),                     # before ALREADY
        (H(HostOp.MAP, vp=9, pp=1, rid=0), E.BAD_FIELD),
        (H(HostOp.UNMAP, vp=1, rid=2), E.BAD_FIELD),
        (H(HostOp.SET_TOK, rid=3, count=5), E.BAD_FIELD),
        (H(HostOp.LOOP, rid=0, n=0, per=0), E.BAD_FIELD),
        (H(HostOp.LOOP, rid=0, n=5, per=0), E.BAD_FIELD),                    # n > L
        (H(HostOp.LOOP, rid=2, n=1, per=0), E.BAD_FIELD),
        (H(HostOp.WR_W, chmask=3, rid=0, vp=5, row=0, data=wrow(G[0])), E.UNMAPPED),
        (H(HostOp.UNMAP, vp=5, rid=0), E.UNMAPPED),
        (H(HostOp.MAC, chmask=3, rid=1, vp=1, g=0, o=0), E.NOT_OWNER),
        (H(HostOp.WR_W, chmask=3, rid=1, vp=1, row=0, data=wrow(G[0])), E.NOT_OWNER),
        (H(HostOp.UNMAP, vp=1, rid=1), E.NOT_OWNER),
        (H(HostOp.MAP, vp=1, pp=3, rid=0), E.ALREADY_MAPPED),                # vp mapped
        (H(HostOp.MAP, vp=2, pp=0, rid=1), E.ALREADY_MAPPED),                # pp mapped
        (H(HostOp.WR_W, chmask=3, rid=1, vp=2, row=0, data=wrow(G[0])), E.UNMAPPED),
    ]

    async def prog(b):
        await b.send([H(HostOp.MAP, vp=1, pp=0, rid=0)] + write_page(3, 0, 1, W)
                     + [H(HostOp.WR_INP, chmask=3, g=0, data=xvec(X))])
        await b.drain()
        assert b.errs == []
        await b.send([c for c, _ in bad])
        await b.drain()
        # the table, weights and GBuf are unchanged: the original page still computes W
        await b.send([H(HostOp.MAC, chmask=3, rid=0, vp=1, g=0, o=0, acc=0),
                      H(HostOp.RD_OUT, chmask=3, rid=0, vp=1, o=0)])
        await b.drain()
        # UNMAP frees vp 1 and pp 0: vp 1 is now unmapped, pp 0 can be mapped again by rid 1
        await b.send([H(HostOp.UNMAP, vp=1, rid=0),
                      H(HostOp.RD_OUT, chmask=1, rid=0, vp=1, o=0),
                      H(HostOp.MAP, vp=2, pp=0, rid=1),
                      H(HostOp.RD_OUT, chmask=2, rid=1, vp=2, o=0)])

    b = run(prog)
    expect = [c for _, c in bad] + [E.UNMAPPED]
    assert b.codes() == expect
    assert len({c for c, _ in b.errs}) == len(b.errs)          # one report per rejection
    assert b.outs == [(0, 0, 0, y(X, W)), (1, 0, 0, y(X, W)), (1, 0, 0, y(X, W))]
    assert b.ovfs == [] and b.err_count == len(expect)


def test_queue_full_ovf(seed):
    rng = np.random.default_rng(seed)
    W, X = rand_w(rng), rand_x(rng)

    async def prog(b):
        await b.send([H(HostOp.MAP, vp=0, pp=0, rid=0)] + write_page(1, 0, 0, W)
                     + [H(HostOp.WR_INP, chmask=1, g=0, data=xvec(X))])
        await b.drain()
        await b.send([H(HostOp.MAC, chmask=1, rid=0, vp=0, g=0, o=0),
                      H(HostOp.BARRIER)])
        for _ in range(F + 2):                  # the BARRIER holds the FIFO: fill it
            if b.ctx.get(b.dut.fifo_level) == F:
                break
            await b.step(H(HostOp.NOP))
        assert b.ctx.get(b.dut.fifo_level) == F
        assert not b.ctx.get(b.dut.channels[0].idle)
        c0 = b.cycle
        await b.step(H(HostOp.MAP, vp=4, pp=1, rid=0))     # dropped
        await b.step(H(HostOp.MAP, vp=4, pp=1, rid=0))     # dropped
        assert b.ovfs == [c0]                              # ovf the cycle after the drop
        await b.drain()
        assert b.ovfs == [c0, c0 + 1]
        await b.send([H(HostOp.RD_OUT, chmask=1, rid=0, vp=4, o=0),     # never mapped
                      H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=0)])

    b = run(prog)
    assert b.codes() == [ModErr.UNMAPPED]
    assert b.outs == [(0, 0, 0, y(X, W))]
    assert b.err_count == 3


def test_barrier_waits_for_idle(seed):
    rng = np.random.default_rng(seed)
    W, X = rand_w(rng), rand_x(rng)

    async def prog(b):
        await b.send([H(HostOp.MAP, vp=0, pp=3, rid=1)] + write_page(3, 1, 0, W)
                     + [H(HostOp.WR_INP, chmask=3, g=1, data=xvec(X))])
        await b.drain()
        await b.send([H(HostOp.MAC, chmask=2, rid=1, vp=0, g=1, o=1)])
        await b.send([H(HostOp.BARRIER)])     # MAC consumed in this cycle, BARRIER pushed
        start = len(b.trace)
        for _ in range(40):
            await b.step()
        tr = b.trace[start:]
        # BARRIER at the head from the first traced cycle; popped after the first idle cycle
        first_idle = next(i for i, (_, ci, _) in enumerate(tr) if ci)
        assert first_idle >= MACRO.x_bits                 # it really waited for the MAC
        assert all(lvl == 1 for lvl, _, _ in tr[:first_idle + 1])
        assert tr[first_idle + 1][0] == 0
        assert all(not idle for _, _, idle in tr[:first_idle + 1])
        assert tr[first_idle + 1][2] == 1
        await b.send([H(HostOp.RD_OUT, chmask=2, rid=1, vp=0, o=1)])

    b = run(prog)
    assert b.errs == []
    assert b.outs == [(1, 1, 1, y(X, W))]


def test_idle_waits_for_outputs(seed):
    """idle also needs every channel's out.valid and the module's out.valid low."""
    rng = np.random.default_rng(seed)
    W, X = rand_w(rng), rand_x(rng)

    async def prog(b):
        await b.send([H(HostOp.MAP, vp=0, pp=0, rid=0)] + write_page(3, 0, 0, W)
                     + [H(HostOp.WR_INP, chmask=3, g=0, data=xvec(X)),
                        H(HostOp.MAC, chmask=3, rid=0, vp=0, g=0, o=0),
                        H(HostOp.RD_OUT, chmask=3, rid=0, vp=0, o=0)])
        ctx, dut = b.ctx, b.dut
        for _ in range(30):                         # out.ready = 0: results pile up
            await b.step(out_ready=0)
        assert ctx.get(dut.out.valid) and ctx.get(dut.channels[1].out.valid)
        assert all(ctx.get(ch.idle) for ch in dut.channels) and ctx.get(dut.fifo_level) == 0
        assert ctx.get(dut.idle) == 0
        await b.step()                              # module takes chan 0's, loads chan 1's
        assert ctx.get(dut.idle) == 0 and ctx.get(dut.out.valid)
        await b.step()                              # chan 1's beat delivered
        assert ctx.get(dut.idle) == 1 and not ctx.get(dut.out.valid)
        # out.ready = 1: idle stays 0 until the last beat has been taken (including the cycle
        # in which a channel's out.valid is up while the module's register is still empty)
        await b.send([H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=0)])
        start = len(b.trace)
        while len(b.outs) < 3:
            await b.step()
        assert not any(idle for _, _, idle in b.trace[start:])
        assert ctx.get(dut.idle) == 1

    b = run(prog)
    assert b.outs == [(0, 0, 0, y(X, W)), (1, 0, 0, y(X, W)), (0, 0, 0, y(X, W))]


def test_loops(seed):
    rng = np.random.default_rng(seed)
    Ws = [rand_w(rng) for _ in range(4)]
    X = rand_x(rng)

    def body_mac_rd(vp, o):
        return [H(HostOp.MAC, chmask=1, rid=0, vp=vp, g=0, o=o, acc=0),
                H(HostOp.RD_OUT, chmask=1, rid=0, vp=vp, o=o)]

    async def prog(b):
        setup = []
        for p_ in range(4):                       # vp p -> pp p: bank p // 2, set p % 2
            setup += [H(HostOp.MAP, vp=p_, pp=p_, rid=0)] + write_page(1, 0, p_, Ws[p_])
        await b.send(setup + [H(HostOp.WR_INP, chmask=1, g=0, data=xvec(X))])
        await b.drain()
        assert b.errs == [] and b.outs == []
        # A: tok 4, per 1 -> trip 2; vp += 2, o += 1 per iteration
        await b.send([H(HostOp.SET_TOK, rid=0, count=4),
                      H(HostOp.LOOP, rid=0, n=2, per=1, vps=2, os=1)] + body_mac_rd(0, 0))
        await b.drain()
        # B: tok 5, per 1 -> trip ceil(5/2) = 3; vp += 1
        await b.send([H(HostOp.SET_TOK, rid=0, count=5),
                      H(HostOp.LOOP, rid=0, n=2, per=1, vps=1, os=0)] + body_mac_rd(0, 0))
        await b.drain()
        n_ab = len(b.outs)
        # C: tok 0 -> trip 0: the body is captured and skipped
        await b.send([H(HostOp.SET_TOK, rid=0, count=0),
                      H(HostOp.LOOP, rid=0, n=2, per=0, vps=1, os=0)] + body_mac_rd(0, 0)
                     + [H(HostOp.NOP)])
        await b.drain()
        assert len(b.outs) == n_ab and b.errs == []
        # D: tok 3, per 0 -> trip 3; BARRIER in the body is BAD_FIELD, vp 5 is unmapped
        await b.send([H(HostOp.SET_TOK, rid=0, count=3),
                      H(HostOp.LOOP, rid=0, n=2, per=0, vps=2, os=0),
                      H(HostOp.BARRIER),
                      H(HostOp.RD_OUT, chmask=1, rid=0, vp=1, o=1)])
        await b.drain()
        # E: o stride out of range: o = 0, 1, then 2 >= n_acc (BAD_FIELD); 2**per = 8 > tok
        await b.send([H(HostOp.SET_TOK, rid=0, count=17),
                      H(HostOp.LOOP, rid=0, n=1, per=3, vps=0, os=1),
                      H(HostOp.RD_OUT, chmask=1, rid=0, vp=3, o=0)])

    b = run(prog)
    yw = [y(X, W) for W in Ws]
    zero = [0] * MACRO.n_out
    # OBuf state per (bank, o) after A and B: A writes (0,0)=W0, (1,1)=W2; B (0,0)=W0, W1; (1,0)=W2
    assert b.outs == [
        (0, 0, 0, yw[0]), (0, 1, 1, yw[2]),                       # A
        (0, 0, 0, yw[0]), (0, 0, 0, yw[1]), (0, 1, 0, yw[2]),     # B
        (0, 0, 1, zero), (0, 1, 1, yw[2]),                        # D (vp 1, vp 3; vp 5 rejected)
        (0, 1, 0, yw[2]), (0, 1, 1, yw[2]),                       # E (vp 3 = bank 1)
    ]
    E = ModErr
    assert b.codes() == [E.BAD_FIELD, E.BAD_FIELD, E.BAD_FIELD, E.UNMAPPED, E.BAD_FIELD]
    assert b.err_count == 5


def test_err_count_saturates():
    counts = []

    async def prog(b):
        # a replayed bad opcode is rejected every cycle while the FIFO (not popped during a
        # replay) is full and drops every push: +2 per cycle
        await b.send([H(HostOp.SET_TOK, rid=1, count=40), H(HostOp.LOOP, rid=1, n=1, per=0),
                      H(12)])
        b.ctx.set(b.dut.err_count, 0xFFFF - 9)
        for _ in range(20):
            await b.step(H(13))
            counts.append(b.ctx.get(b.dut.err_count))

    b = run(prog)
    assert len(b.ovfs) >= 2 and len(b.errs) >= 2
    assert any(c >= 2 for c in (sum(1 for e in b.errs if e[0] == t) + b.ovfs.count(t)
                                for t in range(b.cycle)))          # a +2 cycle happened
    assert counts == sorted(counts) and b.err_count == 0xFFFF
    assert b.codes() == [ModErr.BAD_OPCODE] * (40 + F)


def test_ports_and_lint(tmp_path):
    from cimphony.compat import silence_unused
    from hdl.export import lint, verilog
    from spec.isa import host_fields
    dut = silence_unused(PimModule(P))
    assert len(dut.host.payload.as_value()) == sum(f.width for f in host_fields(P).values())
    assert len(dut.busy) == P.n_ch * P.channel.n_banks
    assert (len(dut.err), len(dut.ovf), len(dut.err_count), len(dut.idle)) == (3, 1, 16, 1)
    v = tmp_path / "pim_module.v"
    v.write_text(verilog(PimModule(P)))
    r = lint(v)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sixteen_channels_chmask_and_chan(seed):
    """16 channels (the 16-bit chmask): channels 0, 8 and 15 get their own weights, one
    multicast MAC and RD_OUT; their beats carry the 4-bit chan 0, 8, 15; chmask 0 is
    BAD_FIELD (every other 16-bit mask names existing channels)."""
    p = ModuleParams(channel=ChannelParams(macro=MACRO, n_banks=1, n_gbuf=2, q_depth=4),
                     n_ch=16, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4)
    rng = np.random.default_rng(seed)
    chans = (0, 8, 15)
    W = {c: rand_w(rng) for c in chans}
    X = rand_x(rng)
    mask = sum(1 << c for c in chans)

    def h(op, **f):
        return host_encode(p, op, **f)

    async def program(b):
        await b.send([h(HostOp.MAP, vp=2, pp=1, rid=1)])
        for c in chans:
            await b.send([h(HostOp.WR_W, chmask=1 << c, rid=1, vp=2, row=r, data=wrow(W[c][r]))
                          for r in range(MACRO.n_in)])
        await b.send([h(HostOp.WR_INP, chmask=0xFFFF, g=1, data=xvec(X)),
                      h(HostOp.WR_INP, chmask=0, g=0, data=xvec(X)),
                      h(HostOp.MAC, chmask=mask, rid=1, vp=2, g=1, o=1),
                      h(HostOp.RD_OUT, chmask=mask, rid=1, vp=2, o=1)])

    b = run(program, p)
    assert b.codes() == [ModErr.BAD_FIELD] and b.ovfs == []
    assert sorted(b.outs) == [(c, 0, 1, y(X, W[c])) for c in chans]
