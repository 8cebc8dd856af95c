"""Fast checks of hdl/macro.py with amaranth.sim on small configurations, plus Verilator lint.

The expected values are computed here with plain numpy integer matmul (not via model/), and the
timing expectations come straight from docs/macro.md.
"""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from hdl.export import generate, lint
from hdl.layouts import req_layout, res_layout, wr_layout
from hdl.macro import DimcMacro
from spec.params import (MacroErr, MacroParams, pack, pack_vec, req_fields, res_fields, unpack,
                        unpack_vec, width, wr_fields)

SMALL = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=2, n_acc=2, tree_stages=1)


# ------------------------------------------------------------------ helpers
def wrap(v, bits):
    """Two's complement wrap of an int array to ``bits`` bits."""
    v = np.asarray(v, dtype=object)
    m = 1 << bits
    return np.array([((int(a) + (m >> 1)) % m) - (m >> 1) for a in v.ravel()],
                    dtype=object).reshape(v.shape)


class Harness:
    """Cycle-by-cycle driver: every ``step`` drives inputs, samples handshakes, ticks once."""

    def __init__(self, ctx, dut, p):
        self.ctx, self.dut, self.p = ctx, dut, p
        self.cycle = 0
        self.results = []        # (cycle, y list, dst)
        self.accepts = []        # cycle of each accepted request
        self.errs = []           # (cycle of the write beat, err seen the next cycle)
        self.res_valid_cycles = []

    async def step(self, wr=None, req=None, res_ready=1):
        """One cycle. wr=(set,row,weights) / req=dict(x,set,acc,dst) drive valid for this cycle.

        Returns (wr_fired, req_fired)."""
        ctx, dut, p = self.ctx, self.dut, self.p
        if wr is not None:
            s, r, w = wr
            ctx.set(dut.wr.payload.as_value(),
                    pack(wr_fields(p), data=pack_vec(w, p.w_bits), row=r, set=s))
        ctx.set(dut.wr.valid, wr is not None)
        if req is not None:
            ctx.set(dut.req.payload.as_value(),
                    pack(req_fields(p), x=pack_vec(req["x"], p.x_bits), set=req["set"],
                         acc=int(req["acc"]), dst=req["dst"]))
        ctx.set(dut.req.valid, req is not None)
        ctx.set(dut.res.ready, res_ready)
        wr_fire = wr is not None and ctx.get(dut.wr.ready)
        req_fire = req is not None and ctx.get(dut.req.ready)
        if ctx.get(dut.res.valid):
            self.res_valid_cycles.append(self.cycle)
            if res_ready:
                f = unpack(res_fields(p), ctx.get(dut.res.payload.as_value()))
                self.results.append((self.cycle, unpack_vec(f["y"], p.n_out, p.acc_width),
                                     f["dst"]))
        if req_fire:
            self.accepts.append(self.cycle)
        await ctx.tick()
        self.cycle += 1
        if wr_fire:
            self.errs.append((self.cycle - 1, ctx.get(dut.err)))
        return wr_fire, req_fire

    async def write(self, s, r, w):
        await self.step(wr=(s, r, w))
        return self.errs[-1][1]

    async def request(self, req, **kw):
        """Hold ``req`` valid until accepted."""
        while not (await self.step(req=req, **kw))[1]:
            pass

    async def drain(self, n_results, res_ready=lambda c: 1, limit=500):
        while len(self.results) < n_results and limit:
            await self.step(res_ready=res_ready(self.cycle))
            limit -= 1
        assert len(self.results) >= n_results, "timed out waiting for results"


def run(p, body, fault=None):
    dut = DimcMacro(p, fault=fault)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def tb(ctx):
        await body(Harness(ctx, dut, p))

    sim.add_testbench(tb)
    sim.run()


def rand_w(rng, p):
    lo, hi = p.w_range
    return rng.integers(lo, hi + 1, size=(p.n_sets, p.n_in, p.n_out))


def rand_x(rng, p):
    lo, hi = p.x_range
    return rng.integers(lo, hi + 1, size=p.n_in)


async def load_weights(h, W):
    for s in range(W.shape[0]):
        for r in range(W.shape[1]):
            assert await h.write(s, r, [int(v) for v in W[s, r]]) == MacroErr.NONE


def req(x, s=0, acc=0, dst=0):
    return dict(x=[int(v) for v in x], set=s, acc=acc, dst=dst)


# ------------------------------------------------------------------ layout / port checks
def test_layouts_match_spec():
    p = MacroParams()
    for lay, fields in ((wr_layout(p), wr_fields(p)), (req_layout(p), req_fields(p)),
                        (res_layout(p), res_fields(p))):
        assert lay.size == width(fields)
        for f in fields.values():
            assert (lay[f.name].offset, lay[f.name].width) == (f.offset, f.width)


def test_unknown_fault_rejected():
    with pytest.raises(ValueError, match="bogus"):
        DimcMacro(SMALL, fault="bogus")


# ------------------------------------------------------------------ numerics and latency
@pytest.mark.parametrize("stages", [0, 1, 2])
def test_dot_products_and_latency(stages):
    p = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=2, n_acc=2, tree_stages=stages)
    rng = np.random.default_rng(stages)
    W = rand_w(rng, p)
    xs = [rand_x(rng, p) for _ in range(6)]
    xs[0] = np.full(p.n_in, p.x_range[0])          # all-minimum corner
    Wc = W.copy()
    Wc[0] = p.w_range[0]

    async def body(h):
        await load_weights(h, Wc)
        reqs = [req(x, s=i % 2, dst=i % 2) for i, x in enumerate(xs)]
        for r in reqs:                              # back-to-back, as fast as accepted
            await h.request(r)
        await h.drain(len(reqs))
        X = p.x_bits
        # throughput: one request per x_bits cycles
        assert np.diff(h.accepts).tolist() == [X] * (len(reqs) - 1)
        # latency: accepted at t -> res.valid at t + X + P + 1
        assert [c for c, _, _ in h.results] == [t + X + stages + 1 for t in h.accepts]
        for i, (x, (_, y, dst)) in enumerate(zip(xs, h.results)):
            ref = wrap(x.astype(object) @ Wc[i % 2].astype(object), p.acc_width)
            assert y == list(ref), f"request {i}"
            assert dst == i % 2

    run(p, body)


def test_w4_x4_and_stalls():
    """4-bit weights/inputs; random res.ready back-pressure must not lose or corrupt results."""
    p = MacroParams(n_in=16, n_out=3, w_bits=4, x_bits=4, n_sets=2, n_acc=4, tree_stages=2)
    rng = np.random.default_rng(7)
    W = rand_w(rng, p)
    xs = [rand_x(rng, p) for _ in range(8)]
    pyr = random.Random(3)
    held = {}

    async def body(h):
        await load_weights(h, W)
        for i, x in enumerate(xs):
            r = req(x, s=i % 2, dst=i % 4)
            while True:
                rr = pyr.random() < 0.4
                v_before = h.ctx.get(h.dut.res.valid)
                pay = h.ctx.get(h.dut.res.payload.as_value())
                if "pay" in held and held["valid"] and not held["ready"]:
                    # stream rule: payload stable while valid and not ready
                    assert v_before and pay == held["pay"]
                held.update(pay=pay, valid=v_before, ready=rr)
                if (await h.step(req=r, res_ready=rr))[1]:
                    break
        await h.drain(len(xs), res_ready=lambda c: pyr.random() < 0.5)
        for i, (x, (_, y, dst)) in enumerate(zip(xs, h.results)):
            ref = wrap(x.astype(object) @ W[i % 2].astype(object), p.acc_width)
            assert y == list(ref) and dst == i % 4, f"request {i}"

    run(p, body)


def test_accumulate_two_entries_and_wrap():
    """acc=1 adds to y[dst]; two entries interleaved; acc_guard=0 makes the sum wrap."""
    p = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=2, n_acc=2, tree_stages=1,
                    acc_guard=0)
    rng = np.random.default_rng(11)
    W = rand_w(rng, p)
    W[1] = p.w_range[0]                            # set 1: all -128
    xs = [rand_x(rng, p) for _ in range(4)] + [np.full(p.n_in, p.x_range[0])] * 3
    plan = [(0, 0, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 1, 0), (1, 1, 0), (1, 1, 0)]
    # (set, acc, dst)

    async def body(h):
        await load_weights(h, W)
        for x, (s, a, d) in zip(xs, plan):
            await h.request(req(x, s=s, acc=a, dst=d))
        await h.drain(len(plan))
        y = np.zeros((p.n_acc, p.n_out), dtype=object)
        wrapped = False
        for i, (x, (s, a, d)) in enumerate(zip(xs, plan)):
            raw = x.astype(object) @ W[s].astype(object) + (y[d] if a else 0)
            y[d] = wrap(raw, p.acc_width)
            wrapped |= any(v != w for v, w in zip(raw, y[d]))
            _, got, dst = h.results[i]
            assert got == list(y[d]) and dst == d, f"request {i}"
        assert wrapped, "test should exercise modular wrap"

    run(p, body)


# ------------------------------------------------------------------ write errors
def test_hazard_and_same_cycle_write():
    p = SMALL
    rng = np.random.default_rng(5)
    W = rand_w(rng, p)
    x = rand_x(rng, p)
    new_row = [int(v) for v in rand_w(rng, p)[0, 0]]

    async def body(h):
        await load_weights(h, W)
        # write to set 0 in the same cycle as a request on set 0: not a hazard, lands first
        await h.step(wr=(0, 3, new_row), req=req(x, s=0))
        assert h.errs[-1][1] == MacroErr.NONE and h.accepts == [h.cycle - 1]
        W[0, 3] = new_row
        W_first = W.copy()                          # weights seen by the first request
        assert h.ctx.get(h.dut.busy)
        # while busy on set 0: write to set 0 is dropped with WR_HAZARD, set 1 lands
        assert await h.write(0, 5, [1] * p.n_out) == MacroErr.WR_HAZARD
        assert await h.write(1, 2, [7] * p.n_out) == MacroErr.NONE
        W[1, 2] = 7
        while True:                                 # up to and including the last issue cycle
            last = h.ctx.get(h.dut.req.ready)
            assert await h.write(0, 6, [9] * p.n_out) == MacroErr.WR_HAZARD
            if last:
                break
        assert not h.ctx.get(h.dut.busy)
        assert await h.write(0, 6, [-3] * p.n_out) == MacroErr.NONE   # idle again: lands
        W[0, 6] = -3
        await h.step()                             # no beat: err back to NONE
        assert h.ctx.get(h.dut.err) == MacroErr.NONE
        await h.request(req(x, s=0, dst=1))
        await h.request(req(x, s=1, dst=0))
        await h.drain(3)
        for i, (Wi, s) in enumerate(((W_first, 0), (W, 0), (W, 1))):
            ref = wrap(x.astype(object) @ Wi[s].astype(object), p.acc_width)
            assert h.results[i][1] == list(ref), f"request {i}"

    run(p, body)


def test_back_to_back_write_rule():
    """Literal rule ``busy & set == cur_set`` in the last issue cycle of the previous request:
    a write to the old set is a hazard even if a new request on that set is accepted in the same
    cycle; a write to another set, accepted with a request on that set, lands before its bits."""
    p = SMALL
    rng = np.random.default_rng(21)
    W = rand_w(rng, p)
    x = rand_x(rng, p)
    row = [int(v) for v in rand_w(rng, p)[0, 0]]

    async def body(h):
        await load_weights(h, W)
        await h.request(req(x, s=0, dst=0))
        while not h.ctx.get(h.dut.req.ready):
            await h.step()
        await h.step(wr=(0, 1, row), req=req(x, s=0, dst=1))     # last cycle of request 0
        assert h.errs[-1][1] == MacroErr.WR_HAZARD and len(h.accepts) == 2
        while not h.ctx.get(h.dut.req.ready):
            await h.step()
        await h.step(wr=(1, 4, row), req=req(x, s=1, dst=0))     # last cycle of request 1
        assert h.errs[-1][1] == MacroErr.NONE and len(h.accepts) == 3
        W1 = W.copy()
        W1[1, 4] = row
        await h.drain(3)
        assert np.diff(h.accepts).tolist() == [p.x_bits] * 2
        for i, (Wi, s) in enumerate(((W, 0), (W, 0), (W1, 1))):
            ref = wrap(x.astype(object) @ Wi[s].astype(object), p.acc_width)
            assert h.results[i][1] == list(ref), f"request {i}"

    run(p, body)


def test_bad_row_non_power_of_two():
    p = MacroParams(n_in=6, n_out=3, w_bits=8, x_bits=4, n_sets=2, n_acc=2, tree_stages=0)
    rng = np.random.default_rng(9)
    W = rand_w(rng, p)
    x = rand_x(rng, p)

    async def body(h):
        await load_weights(h, W)
        for row in (6, 7):                          # row >= n_in: dropped, WR_BAD_ROW
            assert await h.write(0, row, [5] * p.n_out) == MacroErr.WR_BAD_ROW
        await h.request(req(x, s=0))
        # bad row takes priority over hazard
        assert await h.write(0, 7, [5] * p.n_out) == MacroErr.WR_BAD_ROW
        await h.drain(1)
        ref = wrap(x.astype(object) @ W[0].astype(object), p.acc_width)
        assert h.results[0][1] == list(ref)

    run(p, body)


# ------------------------------------------------------------------ fault injection
def test_fault_sign_add_is_wrong_for_negative_inputs():
    p = SMALL
    rng = np.random.default_rng(13)
    W = rand_w(rng, p)
    xn = -np.abs(rand_x(rng, p)) - 1                # all negative
    xp = np.abs(rand_x(rng, p)) % 128               # non-negative: sign bit 0, fault invisible
    out = {}

    def make(fault):
        async def body(h):
            await load_weights(h, W)
            await h.request(req(xn))
            await h.request(req(xp, dst=1))
            await h.drain(2)
            out[fault] = [y for _, y, _ in h.results]
        return body

    for fault in (None, "sign_add"):
        run(p, make(fault), fault=fault)
    ref_n = list(wrap(xn.astype(object) @ W[0].astype(object), p.acc_width))
    ref_p = list(wrap(xp.astype(object) @ W[0].astype(object), p.acc_width))
    assert out[None] == [ref_n, ref_p]
    assert out["sign_add"][0] != ref_n
    assert out["sign_add"][1] == ref_p


# ------------------------------------------------------------------ Verilog + lint
@pytest.mark.parametrize("params", [
    MacroParams(n_in=16, n_out=4, w_bits=4, x_bits=4, tree_stages=0),
    MacroParams(n_in=6, n_out=3, w_bits=8, x_bits=8, n_sets=4, n_acc=2, tree_stages=2),
], ids=lambda p: p.tag)
def test_verilog_ports_and_lint(params, tmp_path):
    text = generate(params)
    for port, w in (("wr__payload", width(wr_fields(params))),
                    ("req__payload", width(req_fields(params))),
                    ("res__payload", width(res_fields(params))), ("err", 2)):
        decl = rf"\b(input|output)\s+(reg\s+)?\[{w - 1}:0\]\s+{port}\b"
        assert re.search(decl, text), port
    for port in ("clk", "rst", "wr__valid", "wr__ready", "req__valid", "req__ready",
                 "res__valid", "res__ready", "busy"):
        assert re.search(rf"\b(input|output)\s+(reg\s+)?{port}\b", text), port
    f = tmp_path / "dimc_macro.v"
    f.write_text(text)
    r = lint(f)
    assert r.returncode == 0, r.stdout + r.stderr
