"""DIMC SRAM MAC macro (digital compute-in-memory), implementing ``docs/macro.md``.

Structure (one clock ``clk``, synchronous active-high reset ``rst``; every register resets to 0
except the weight SRAM, which powers up as 0 and keeps its contents through ``rst``):

* weight array ``W[n_sets][n_in]``: one flip-flop row of ``n_out * w_bits`` bits per (set, row),
  all rows read in parallel every cycle (a RAM macro cannot do this, so no ``Memory``);
* issue stage: latches ``x``/``set``/``acc``/``dst`` of an accepted request and applies input bit
  ``x_bits-1-k`` (MSB first) of every row during ``k = 0 .. x_bits-1``;
* per column and 4-bit weight slice: AND of the input bit with the slice, balanced adder tree over
  the ``n_in`` rows (top slice signed, lower slices unsigned), slices combined by shift-add into
  a signed ``psum`` per column of ``w_bits + ceil(log2 n_in)`` bits (exact, cannot overflow);
* ``tree_stages`` register stages: 1 = after the tree, 2 = mid-tree (after ``depth // 2`` adder
  levels) + after the tree;
* accumulator ``acc[n_out]`` (``acc_width`` bits, two's complement, wraps): first bit
  ``acc = -psum`` (sign bit subtracted), then ``acc = 2*acc + psum``;
* result file ``y[n_acc][n_out]`` (``acc_width`` bits each) and output register on ``res``.

The datapath registers (pipeline stages, ``acc``, ``y``, output payload) are written with
:func:`hdl.logic.load` (reset folded into the enable) so that Verilator simulates the datapath once per cycle.

Latency: a request accepted at cycle t gives ``res.valid`` at cycle
``t + x_bits + tree_stages + 1`` (no stalls).  Throughput: one request per ``x_bits`` cycles
(``req.ready`` is high in the last issue cycle).  Peak ``n_in * n_out`` MACs per ``x_bits`` cycles.
"""
from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from spec.params import MacroErr, MacroParams

from .layouts import req_layout, res_layout, wr_layout
from .logic import load

__all__ = ["DimcMacro", "FAULTS"]

#: Deliberate faults that can be built into the DUT (to prove that checkers catch them).
FAULTS = ("sign_add",)


def _mux_tree(sel, items):
    """Select ``items[sel]`` with a balanced binary tree of 2:1 muxes (len(items) a power of 2)."""
    level, b = list(items), 0
    while len(level) > 1:
        level = [Mux(sel[b], level[i + 1], level[i]) for i in range(0, len(level), 2)]
        b += 1
    return level[0]


def _add_levels(terms, levels):
    """Apply ``levels`` levels of a balanced pairwise adder tree (odd element passes through)."""
    for _ in range(levels):
        if len(terms) == 1:
            break
        nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms


class DimcMacro(wiring.Component):
    """DIMC SRAM MAC macro; cycle-exact implementation of the contract in ``docs/macro.md``.

    Parameters
    ----------
    params : MacroParams
        Configuration (sizes and widths in bits, see :class:`spec.params.MacroParams`).
    fault : str or None
        ``None`` for the correct design; ``"sign_add"`` builds a deliberately wrong DUT that adds
        the sign-bit partial sum instead of subtracting it.  Anything else: ``ValueError``.

    Ports
    -----
    wr : In(stream.Signature(wr_layout))
        Weight-row write; ``data`` (n_out x w_bits), ``row``, ``set``.  ``wr.ready`` is always 1.
    req : In(stream.Signature(req_layout))
        Compute request; ``x`` (n_in x x_bits), ``set``, ``acc``, ``dst``.
    res : Out(stream.Signature(res_layout))
        Result beat; ``y`` (n_out x acc_width, signed), ``dst``.
    err : Out(2)
        :class:`spec.params.MacroErr` of the write beat accepted in the previous cycle, else 0.
    busy : Out(1)
        The issue stage applies an input bit this cycle.

    Latency ``x_bits + tree_stages + 1`` cycles from request accept to ``res.valid``;
    throughput one request per ``x_bits`` cycles.
    """

    #: name of its Verilog module (``hdl.export``)
    verilog_name = "dimc_macro"

    def __init__(self, params: MacroParams, *, fault: str | None = None):
        silence_unused(self)              # not an unused design if the checks below raise
        if not isinstance(params, MacroParams):
            raise ValueError(f"DimcMacro: params must be MacroParams, not {params!r}")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"DimcMacro: unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        silence_unused(self, False)
        self.params = params
        self.fault = fault
        super().__init__({
            "wr": In(stream.Signature(wr_layout(params))),
            "req": In(stream.Signature(req_layout(params))),
            "res": Out(stream.Signature(res_layout(params))),
            "err": Out(2),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        p = self.params
        N, C, S, E = p.n_in, p.n_out, p.n_sets, p.n_acc
        X, WB, A, P = p.x_bits, p.w_bits, p.acc_width, p.tree_stages
        NS = p.n_slices
        m = Module()

        # ---------------- weight array W[S][N], one C*WB-bit flop row each ----------------
        # SRAM rows: 0 at power-up, not cleared by rst (no reset mux on 64k flops)
        W = [[Signal(C * WB, name=f"w_s{s}_r{r}", reset_less=True) for r in range(N)]
             for s in range(S)]

        # ---------------- issue stage ----------------
        busy = Signal()
        k = Signal(range(X))                  # bits issued so far (0 .. X-1)
        cur_set = Signal(p.set_bits)
        cur_acc = Signal()
        cur_dst = Signal(p.dst_bits)
        cur_x = Signal(N * X)
        i_first = Signal()
        i_last = Signal()
        m.d.comb += [
            i_first.eq(k == 0),
            i_last.eq(k == X - 1),
            self.busy.eq(busy),
        ]

        stall = Signal()
        m.d.comb += [
            self.req.ready.eq(~stall & (~busy | i_last)),
            self.wr.ready.eq(1),
        ]

        # ---------------- AND stage: per row, weights of cur_set gated by the input bit -------
        masked = []
        for r in range(N):
            # bit X-1-k of x[r] (MSB first), as a k-indexed mux tree (X is a power of 2)
            xbit = Signal(name=f"xbit_r{r}")
            m.d.comb += xbit.eq(_mux_tree(k, [cur_x[r * X + X - 1 - i] for i in range(X)]))
            wrow = _mux_tree(cur_set, [W[s][r] for s in range(S)])
            mr = Signal(C * WB, name=f"and_r{r}")
            m.d.comb += mr.eq(wrow & xbit.replicate(C * WB))
            masked.append(mr)

        def slice_terms(c, s):
            lo = c * WB + 4 * s
            top = s == NS - 1
            return [masked[r][lo:lo + 4].as_signed() if top else masked[r][lo:lo + 4]
                    for r in range(N)]

        # ---------------- adder trees + pipeline stages ----------------
        # Control travelling with the data: (valid, first, last, accflag, dst).
        ctrl = [busy, i_first, i_last, cur_acc, cur_dst]
        ctrl_names = ["v", "first", "last", "acc", "dst"]

        def register(prefix, values, names):
            """One pipeline stage: registers that hold their value while ``stall`` (``load``)."""
            regs = [Signal(v.shape(), name=f"{prefix}_{n}", reset_less=True)  # see load
                    for v, n in zip(values, names)]
            for r, v in zip(regs, values):
                load(m, r, ~stall, v)
            return regs

        depth = max(1, math.ceil(math.log2(N)))
        mid = depth // 2
        # partial sums: parts[c][s] = list of partial sums of column c, slice s
        parts = [[slice_terms(c, s) for s in range(NS)] for c in range(C)]
        if P == 2:
            parts = [[_add_levels(parts[c][s], mid) for s in range(NS)] for c in range(C)]
            flat = [t for c in range(C) for s in range(NS) for t in parts[c][s]]
            fnames = [f"c{c}_s{s}_{i}" for c in range(C) for s in range(NS)
                      for i in range(len(parts[c][s]))]
            regs = register("mid", ctrl + flat, ctrl_names + fnames)
            ctrl, it = regs[:5], iter(regs[5:])
            parts = [[[next(it) for _ in parts[c][s]] for s in range(NS)] for c in range(C)]
        # |psum| <= n_in * 2**(w_bits-1) <= 2**(w_bits-1+depth): w_bits + depth bits signed
        psum = []
        for c in range(C):
            ssum = [_add_levels(parts[c][s], depth)[0] for s in range(NS)]
            tot = ssum[0]
            for s in range(1, NS):
                tot = tot + ssum[s].shift_left(4 * s)
            ps = Signal(signed(WB + depth), name=f"psum_c{c}")
            m.d.comb += ps.eq(tot)
            psum.append(ps)
        if P >= 1:
            regs = register("pipe", ctrl + psum, ctrl_names + [f"psum_c{c}" for c in range(C)])
            ctrl, psum = regs[:5], regs[5:]
        a_v, a_first, a_last, a_acc, a_dst = ctrl

        # ---------------- accumulator stage ----------------
        fin = Signal()
        m.d.comb += [
            fin.eq(a_v & a_last),
            stall.eq(fin & self.res.valid & ~self.res.ready),
        ]

        acc = [Signal(signed(A), name=f"acc_c{c}", reset_less=True) for c in range(C)]  # load
        nxt = [Signal(signed(A), name=f"accnxt_c{c}") for c in range(C)]
        for c in range(C):
            start = psum[c] if self.fault == "sign_add" else -psum[c]
            m.d.comb += nxt[c].eq(Mux(a_first, start, acc[c].shift_left(1) + psum[c]))
        for c in range(C):
            load(m, acc[c], ~stall & a_v, nxt[c])

        # ---------------- result file y[E] and output register ----------------
        y = [Signal(C * A, name=f"y_e{e}", reset_less=True) for e in range(E)]  # see load
        y_rd = Signal(C * A)
        m.d.comb += y_rd.eq(_mux_tree(a_dst, y))
        new = [Signal(signed(A), name=f"new_c{c}") for c in range(C)]
        for c in range(C):
            old = y_rd[c * A:(c + 1) * A].as_signed()
            m.d.comb += new[c].eq(nxt[c] + Mux(a_acc, old, 0))
        new_y = Cat(*new)
        done = Signal()   # the finishing beat finishes: y[dst] and the output register load
        m.d.comb += done.eq(fin & ~stall)
        for e in range(E):
            load(m, y[e], done & (a_dst == e), new_y)
        # output payload register (reset_less, see load), driving res.payload
        out_pay = Signal(res_layout(p), name="res_pay", reset_less=True)
        load(m, out_pay, done, Cat(new_y, a_dst))    # the layout's fields, LSB first
        m.d.comb += self.res.payload.eq(out_pay)
        with m.If(done):
            m.d.sync += self.res.valid.eq(1)
        with m.Elif(self.res.valid & self.res.ready & ~fin):
            m.d.sync += self.res.valid.eq(0)

        # ---------------- issue stage update ----------------
        with m.If(~stall):
            with m.If(self.req.valid & self.req.ready):
                m.d.sync += [
                    busy.eq(1),
                    k.eq(0),
                    cur_x.eq(self.req.payload.x),
                    cur_set.eq(self.req.payload.set),
                    cur_acc.eq(self.req.payload.acc),
                    cur_dst.eq(self.req.payload.dst),
                ]
            with m.Elif(busy):
                m.d.sync += k.eq(k + 1)
                with m.If(i_last):
                    m.d.sync += busy.eq(0)

        # ---------------- weight writes (every wr beat, stall or not) ----------------
        w_row = self.wr.payload.row
        w_set = self.wr.payload.set
        bad_row = Signal()
        hazard = Signal()
        wen = Signal()
        m.d.comb += [
            bad_row.eq((w_row >= N) if N & (N - 1) else Const(0)),
            hazard.eq(busy & (w_set == cur_set)),
            wen.eq(self.wr.valid & ~bad_row & ~hazard),
        ]
        with m.If(self.wr.valid & bad_row):
            m.d.sync += self.err.eq(MacroErr.WR_BAD_ROW)
        with m.Elif(self.wr.valid & hazard):
            m.d.sync += self.err.eq(MacroErr.WR_HAZARD)
        with m.Else():
            m.d.sync += self.err.eq(MacroErr.NONE)
        set_hit = [Signal(name=f"wsel_s{s}") for s in range(S)]
        m.d.comb += [set_hit[s].eq(wen & (w_set == s)) for s in range(S)]
        for s in range(S):
            for r in range(N):
                with m.If(set_hit[s] & (w_row == r)):
                    m.d.sync += W[s][r].eq(self.wr.payload.data)

        return m
