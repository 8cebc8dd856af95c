"""Indexed read and write of a list of registers, in forms Verilator lints clean."""
from __future__ import annotations

from amaranth.hdl import Signal


def select(m, name, index, items, shape):
    """``items[index]`` as one case statement (0 for an index past the end)."""
    out = Signal(shape, name=name)
    with m.Switch(index):
        for i, it in enumerate(items):
            with m.Case(i):
                m.d.comb += out.eq(it)
        if len(items) < 2 ** len(index):
            with m.Default():                 # explicit (else Verilator CASEINCOMPLETE)
                m.d.comb += out.eq(0)
    return out


def write(m, index, items, value):
    """At the clock edge: ``items[index] <= value`` (no write for an index past the end).

    One ``If`` per entry (a ``Switch`` here becomes a per-register ``case`` without default
    after yosys splits it, which Verilator flags as CASEINCOMPLETE)."""
    for i, it in enumerate(items):
        with m.If(index == i):
            m.d.sync += it.eq(value)
