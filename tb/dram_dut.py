"""The DRAM-PIM bank as a lockstep design: a thin sampling adapter around ``hdl.dram_bank``.

The one lockstep loop (``tb/lockstep.py``) compares a design with one input stream and one
output stream (``<output>.valid`` / ``.payload`` and a ``ready`` it drives).  The bank has two
output streams, both ``always_ready`` (``res``: MAC results, ``rd``: read data; a DRAM beat
exists in exactly one cycle, docs/dram_bank.md), so :class:`DramBankDut` presents them as one:

* ``out.valid = res.valid | rd.valid``;
* ``out.payload = Cat(res.valid, rd.valid, res.payload, rd.payload)`` (``tb.dram.out_fields``):
  both payload registers, whole, every cycle, plus which of them carries a new beat;
* ``out.ready`` is driven by the loop and goes nowhere (the bank's outputs have no ready);
* ``busy`` = ``Cat(mac, refreshing, held)``: ``mac`` = a legal MAC accepted in this cycle
  (``cmd.valid & cmd.ready``, op MAC, a row open, ``col < n_cols``: MAC utilisation),
  ``refreshing`` the bank's output, ``held`` = ``cmd.valid & ~cmd.ready`` (a command held by
  a timing rule); observers computed from the bank's own ports, for the loop's per-bit
  ``busy_cycles`` counts;
* every other bank output (``cmd.ready``, ``err``, ``ref_lost``, ``ref_pend``, ``refreshing``,
  ``open``, ``open_row``) is passed through unchanged.

The bank inside is placed with :func:`hdl.hier.place`, so in the lockstep wrapper it is an
instance of the bank's exported Verilog module ``dram_bank`` (``hdl.export.hierarchy``), the
text an integrator takes; the adapter adds only wires and the three observer bits.  Amaranth here: not
imported inside the simulator (``tb.dram`` holds the simulator-side half).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl import hier
from hdl.dram_bank import DramBank
from hdl.layouts import struct_layout
from spec.dram import DramBankParams, DramOp, cmd_fields
from tb.dram import out_width

__all__ = ["DramBankDut"]


class DramBankDut(wiring.Component):
    """Lockstep adapter of :class:`hdl.dram_bank.DramBank` (``params``, ``fault``)."""

    verilog_name = "dram_bank_lockstep"

    def __init__(self, params: DramBankParams, *, fault: str | None = None):
        self.params, self.fault = params, fault
        self.bank = DramBank(params, fault=fault)
        super().__init__({
            "cmd": In(stream.Signature(struct_layout(cmd_fields(params)))),
            "out": Out(stream.Signature(out_width(params))),
            "err": Out(3),
            "ref_lost": Out(1),
            "ref_pend": Out(params.ref_bits),
            "refreshing": Out(1),
            "open": Out(1),
            "open_row": Out(params.row_bits),
            "busy": Out(3),
        })

    @property
    def children(self) -> dict:
        return {"bank": self.bank}

    def elaborate(self, platform):
        m = Module()
        b, p = self.bank, self.params
        hier.place(m, "bank", b, platform)
        cmd = self.cmd.payload
        col_ok = (cmd.col < p.n_cols) if (1 << p.col_bits) != p.n_cols else 1
        m.d.comb += [
            b.cmd.valid.eq(self.cmd.valid),
            b.cmd.payload.eq(self.cmd.payload),
            self.cmd.ready.eq(b.cmd.ready),
            self.out.valid.eq(b.res.valid | b.rd.valid),
            self.out.payload.eq(Cat(b.res.valid, b.rd.valid, b.res.payload, b.rd.payload)),
            self.err.eq(b.err),
            self.ref_lost.eq(b.ref_lost),
            self.ref_pend.eq(b.ref_pend),
            self.refreshing.eq(b.refreshing),
            self.open.eq(b.open),
            self.open_row.eq(b.open_row),
            self.busy.eq(Cat(self.cmd.valid & b.cmd.ready & (cmd.op == DramOp.MAC) & b.open
                             & col_ok, b.refreshing, self.cmd.valid & ~b.cmd.ready)),
        ]
        return m
