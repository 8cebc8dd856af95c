"""DRAM-PIM bank (one bank of a GDDR6-AiM-like device), implementing ``docs/dram_bank.md``.

Structure (one clock ``clk``, synchronous active-high reset ``rst``; every register resets to 0
except the cell array, which powers up as 0 and keeps its contents through ``rst``):

* cell array ``array[R]``: an ``amaranth.lib.memory.Memory`` of R rows of ``8*U*C`` bits, with
  one write port of burst granularity (``8*U`` bits, C enables) and one synchronous row-wide
  read port, transparent for the write port;
* row buffer: the read port's data register.  It is read (enabled) at the edge of an ACT (the
  new row) and of a WR (the open row, with the written burst merged by transparency), so it
  always equals ``array[row]`` while ACTIVE: the array is written through;
* bank state ``open`` / ``row`` and the six timing down-counters (:mod:`hdl.dram_timing`);
* MAC unit at the row buffer: U int8 x int8 products of burst ``col`` against the K inputs of
  the command, O adder trees of K, accumulate into entry ``dst`` of ``acc[E][O]`` (A bits);
* read delay line: a ``tCL - 1``-bit valid shift register and a small FIFO of burst data
  (RDs are at least tCCDL apart, so at most ``ceil((tCL-1)/tCCDL)`` are in flight);
* refresh: ``ref_timer``, ``ref_pend`` (0..M) and ``c_ref``; the bank starts a refresh by
  itself when IDLE, a request is pending and ``c_act`` is 0.

Datapath registers (accumulators, output payloads) are written with :func:`hdl.logic.load` (reset
folded into one enable), as in :mod:`hdl.macro`, so Verilator evaluates them once per cycle.
The row buffer (a memory read register) is not cleared by ``rst``: its content is a
don't-care while IDLE, and the bank is IDLE after a reset, so this is not observable.

Size: Amaranth emits a memory's initial contents bit by bit (``$meminit``), so converting
the default AiM bank (16K x 2 KB = 32 MB of cells) to Verilog is impractical (about 80 ms
per 2 KB row); exports and RTL runs use a reduced ``rows``.
"""
from __future__ import annotations

import math
import operator

from amaranth.hdl import Cat, Const, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from spec.dram import DramBankParams, DramErr, DramOp, cmd_fields, rd_fields, res_fields

from .dram_timing import down_counter, load_values
from .layouts import struct_layout
from .logic import load, tree

__all__ = ["DramBank", "FAULTS"]

#: Deliberate faults that can be built into the DUT (to prove that checkers catch them):
#: ``"rcdmac_short"`` loads tRCDRDMAC - 2 into ``c_mac`` at an ACT (the first MAC one cycle
#: early).
FAULTS = ("rcdmac_short",)


class DramBank(wiring.Component):
    """DRAM-PIM bank; cycle-exact implementation of the contract in ``docs/dram_bank.md``.

    Parameters
    ----------
    params : DramBankParams
        Sizes, widths and the timing table (cycles), see :class:`spec.dram.DramBankParams`.
    fault : str or None
        ``None`` for the correct design, or one of :data:`FAULTS` (a deliberately wrong DUT).

    Ports
    -----
    cmd : In(stream.Signature(cmd layout))
        Command beat (``spec.dram.cmd_fields``): ``op`` 3, ``row`` row_bits, ``col`` col_bits,
        ``dst`` dst_bits, ``acc`` 1, ``last`` 1, ``data`` 8U.  ``cmd.ready`` depends on the
        registers and ``cmd.payload`` only, never on ``cmd.valid``.
    res : Out(stream.Signature(res layout, always_ready=True))
        MAC result (``res_fields``): ``y`` O x A bits signed (lane 0 lowest), ``dst``; one
        beat in the cycle after a MAC with ``last``.
    rd : Out(stream.Signature(rd layout, always_ready=True))
        Column read data (8U bits, byte 0 lowest), tCL cycles after the RD.
    err : Out(3)
        :class:`spec.dram.DramErr` of the command rejected in the previous cycle, else 0.
    ref_lost : Out(1)
        A refresh request was lost (``ref_pend`` saturated at M) at the previous edge.
    ref_pend : Out(ref_max.bit_length())
        Refresh requests pending (0..M).
    refreshing : Out(1)
        A refresh is in progress (``c_ref != 0``).
    open : Out(1)
        A row is open (ACTIVE).
    open_row : Out(row_bits)
        The last activated row (0 after reset).
    """

    #: name of its Verilog module (``hdl.export``)
    verilog_name = "dram_bank"

    def __init__(self, params: DramBankParams = DramBankParams(), *,
                 fault: str | None = None):
        silence_unused(self)              # not an unused design if the checks below raise
        if not isinstance(params, DramBankParams):
            raise ValueError(f"DramBank: params={params!r} must be a DramBankParams")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"DramBank: fault={fault!r} is not one of {', '.join(FAULTS)}")
        silence_unused(self, False)
        self.params = params
        self.fault = fault
        p, t = params, params.timing
        U, C = p.burst_bytes, p.n_cols
        # cell array: R rows of C bursts; 0 at power-up, no reset
        self._array = Memory(shape=unsigned(8 * U * C), depth=p.rows, init=[])
        self._wport = self._array.write_port(granularity=8 * U)
        self._rport = self._array.read_port(transparent_for=(self._wport,))
        # read delay line data: a FIFO of bursts (a power-of-two depth >= 2)
        need = max(1, math.ceil((t.tCL - 1) / t.tCCDL))
        self._rd_depth = max(2, 1 << (need - 1).bit_length())
        self._rd_fifo = Memory(shape=unsigned(8 * U), depth=self._rd_depth, init=[])
        self._rd_w = self._rd_fifo.write_port()
        self._rd_r = self._rd_fifo.read_port(domain="comb")
        for mem in (self._array, self._rd_fifo):  # elaborated with the bank (or never)
            silence_unused(mem)
        super().__init__({
            "cmd": In(stream.Signature(struct_layout(cmd_fields(p)))),
            "res": Out(stream.Signature(struct_layout(res_fields(p)), always_ready=True)),
            "rd": Out(stream.Signature(struct_layout(rd_fields(p)), always_ready=True)),
            "err": Out(3),
            "ref_lost": Out(1),
            "ref_pend": Out(p.ref_bits),
            "refreshing": Out(1),
            "open": Out(1),
            "open_row": Out(p.row_bits),
        })

    def elaborate(self, platform):
        p, t = self.params, self.params.timing
        R, C, U, O, K, E, A, M = (p.rows, p.n_cols, p.burst_bytes, p.n_out, p.n_x, p.n_acc,
                                  p.acc_width, p.ref_max)
        m = Module()
        m.submodules.array = self._array
        m.submodules.rd_fifo = self._rd_fifo
        rst = ResetSignal()
        cmd = self.cmd.payload
        op, col = cmd.op, cmd.col

        # ---------------- bank state ----------------
        is_open = Signal()                       # 0 = IDLE, 1 = ACTIVE
        row = Signal(p.row_bits)                 # the open (last activated) row
        ref_pend = Signal(p.ref_bits)
        m.d.comb += [self.open.eq(is_open), self.open_row.eq(row),
                     self.ref_pend.eq(ref_pend)]

        # ---------------- decode: rejection code (precedence as in the contract) ----------
        is_act, is_pre = op == DramOp.ACT, op == DramOp.PRE
        is_mac, is_rd, is_wr = op == DramOp.MAC, op == DramOp.RD, op == DramOp.WR
        is_colop = is_mac | is_rd | is_wr
        bad_row = (cmd.row >= R) if (1 << p.row_bits) != R else Const(0)
        bad_col = (col >= C) if (1 << p.col_bits) != C else Const(0)
        code = Signal(3)
        with m.If(op > DramOp.WR):
            m.d.comb += code.eq(DramErr.BAD_OP)
        with m.Elif(is_act & bad_row):
            m.d.comb += code.eq(DramErr.BAD_ROW)
        with m.Elif(is_colop & bad_col):
            m.d.comb += code.eq(DramErr.BAD_COL)
        with m.Elif(is_colop & ~is_open):
            m.d.comb += code.eq(DramErr.NOT_OPEN)
        with m.Elif(is_act & is_open):
            m.d.comb += code.eq(DramErr.ROW_OPEN)

        # ---------------- accept and events (legal, accepted commands) ----------------
        accept = Signal()
        legal = Signal()
        ev = {k: Signal(name=f"ev_{k}") for k in ("act", "pre", "mac", "rd", "wr")}
        start = Signal()                          # a refresh starts in this cycle
        m.d.comb += [
            accept.eq(self.cmd.valid & self.cmd.ready),
            legal.eq(accept & (code == 0)),
            ev["act"].eq(legal & is_act),
            ev["pre"].eq(legal & is_pre & is_open),     # a PRE while IDLE is a no-op
            ev["mac"].eq(legal & is_mac),
            ev["rd"].eq(legal & is_rd),
            ev["wr"].eq(legal & is_wr),
        ]
        cond = {"act": ev["act"], "col": ev["mac"] | ev["rd"], "wr": ev["wr"],
                "pre": ev["pre"], "ref": start}

        # ---------------- timing counters ----------------
        cnt = {}
        for name, loads in load_values(t).items():
            if self.fault == "rcdmac_short" and name == "c_mac":
                loads = [(e, max(0, v - 1) if e == "act" else v) for e, v in loads]
            cnt[name] = down_counter(m, name, t.counter_bits,
                                     [(cond[e], v) for e, v in loads])
        # IDLE, a request pending, tRP / tRC / tRFC elapsed (never with an accepted ACT:
        # an ACT is not ready while ref_pend > 0)
        m.d.comb += start.eq(~is_open & (ref_pend != 0) & (cnt["c_act"] == 0))

        # ---------------- ready: a function of the registers and the payload ----------
        ok = Signal()
        with m.Switch(op):
            with m.Case(DramOp.ACT):
                m.d.comb += ok.eq((cnt["c_act"] == 0) & (ref_pend == 0))
            with m.Case(DramOp.PRE):
                m.d.comb += ok.eq(~is_open | (cnt["c_pre"] == 0))
            with m.Case(DramOp.MAC):
                m.d.comb += ok.eq(cnt["c_mac"] == 0)
            with m.Case(DramOp.RD):
                m.d.comb += ok.eq(cnt["c_rd"] == 0)
            with m.Case(DramOp.WR):
                m.d.comb += ok.eq(cnt["c_wr"] == 0)
            with m.Default():                     # op 5..7: rejected (ready via code)
                m.d.comb += ok.eq(0)
        m.d.comb += [self.cmd.ready.eq((code != 0) | ok),
                     self.refreshing.eq(cnt["c_ref"] != 0)]

        # ---------------- bank state update, err ----------------
        with m.If(ev["act"]):
            m.d.sync += [is_open.eq(1), row.eq(cmd.row)]
        with m.If(ev["pre"]):
            m.d.sync += is_open.eq(0)
        m.d.sync += self.err.eq(Mux(accept, code, 0))

        # ---------------- cell array and row buffer ----------------
        rp, wp = self._rport, self._wport
        m.d.comb += [
            rp.addr.eq(Mux(is_act, cmd.row, row)),
            rp.en.eq((ev["act"] | ev["wr"]) & ~rst),
            wp.addr.eq(row),
            wp.data.eq(Cat(*([cmd.data] * C))),
            wp.en.eq(Mux(ev["wr"] & ~rst, (Const(1, C) << col)[:C], 0)),
        ]
        rowbuf = rp.data                          # 8UC bits, burst c at bits 8Uc..
        burst = Signal(8 * U)
        m.d.comb += burst.eq(rowbuf.word_select(col, 8 * U) if C > 1 else rowbuf)

        # ---------------- MAC unit ----------------
        xs = [cmd.data[8 * i:8 * i + 8].as_signed() for i in range(K)]
        acc = [Signal(O * A, name=f"acc_e{e}", reset_less=True) for e in range(E)]  # load
        dbits = (E - 1).bit_length()
        dsel = cmd.dst[:dbits] if dbits else Const(0, 1)
        old = Signal(O * A)
        m.d.comb += old.eq(Cat(*acc).word_select(dsel, O * A) if E > 1 else acc[0])
        new = []
        for j in range(O):
            ps = Signal(signed(p.min_acc_width), name=f"psum_{j}")
            m.d.comb += ps.eq(tree([burst[8 * (j * K + i):8 * (j * K + i) + 8].as_signed()
                                    * xs[i] for i in range(K)], operator.add))
            nj = Signal(signed(A), name=f"new_{j}")
            prev = old[j * A:(j + 1) * A].as_signed()
            m.d.comb += nj.eq(ps + Mux(cmd.acc, prev, 0))   # truncation = wrap mod 2**A
            new.append(nj)
        new_y = Cat(*new)
        for e in range(E):
            load(m, acc[e], ev["mac"] & (dsel == e), new_y)
        res_pay = Signal(len(self.res.payload.as_value()), name="res_pay", reset_less=True)
        load(m, res_pay, ev["mac"] & cmd.last, Cat(new_y, cmd.dst))
        m.d.comb += self.res.payload.eq(res_pay)
        m.d.sync += self.res.valid.eq(ev["mac"] & cmd.last)

        # ---------------- read delay line (tCL) ----------------
        rd_pay = Signal(8 * U, name="rd_pay", reset_less=True)    # see load
        if t.tCL == 1:
            due, due_data = ev["rd"], burst
        else:
            vpipe = Signal(t.tCL - 1)             # bit k: an RD accepted k + 1 cycles ago
            m.d.sync += vpipe.eq(Cat(ev["rd"], vpipe[:-1]))
            ptr = (self._rd_depth - 1).bit_length()
            w_ptr, r_ptr = Signal(ptr), Signal(ptr)
            with m.If(ev["rd"]):
                m.d.sync += w_ptr.eq(w_ptr + 1)
            due = vpipe[-1]
            with m.If(due):
                m.d.sync += r_ptr.eq(r_ptr + 1)
            m.d.comb += [self._rd_w.addr.eq(w_ptr), self._rd_w.data.eq(burst),
                         self._rd_w.en.eq(ev["rd"] & ~rst), self._rd_r.addr.eq(r_ptr)]
            due_data = self._rd_r.data
        load(m, rd_pay, due, due_data)
        m.d.comb += self.rd.payload.eq(rd_pay)
        m.d.sync += self.rd.valid.eq(due)

        # ---------------- refresh ----------------
        timer = Signal(range(t.tREFI))
        tick = Signal()
        m.d.comb += tick.eq(timer == t.tREFI - 1)
        m.d.sync += timer.eq(Mux(tick, 0, timer + 1))
        n = Signal(p.ref_bits + 1)
        m.d.comb += n.eq(ref_pend - start + tick)
        m.d.sync += [ref_pend.eq(Mux(n > M, M, n)), self.ref_lost.eq(n > M)]
        return m
