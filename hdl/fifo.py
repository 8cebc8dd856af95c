"""Register FIFO: the channel's I/O, compute and per-bank MAC queues and the hub's host FIFO."""
from __future__ import annotations

from amaranth.hdl import Mux, Signal, Value

from .regfile import select, write

__all__ = ["RegFifo"]


class RegFifo:
    """FIFO of ``depth`` registers of ``shape``, with read/write pointers and a count.

    Its signals are created here; :meth:`build` adds its logic to the user's module, so that
    the user may also edit the stored entries (the channel clears dependency bits of queued
    commands in place) and the FIFO is no Verilog module of its own.

    Parameters
    ----------
    name : str
        Prefix of the signal names (``<name>_m<i>`` storage, ``<name>_rd``, ``<name>_wr``,
        ``<name>_n``, ``<name>_head``).
    shape : ShapeLike or Layout
        One entry.
    depth : int
        Entries (>= 1).

    Attributes
    ----------
    mem : list of Signal
        Storage, entry ``i`` is ``mem[i]``; not reset (only ``count`` is observable).
    rd, wr : Signal(range(depth))
        Index of the oldest entry / of the next free entry.
    count : Signal(range(depth + 1))
        Entries held (0 after reset).
    head : Signal(shape)
        ``mem[rd]``, the oldest entry (meaningless when ``count == 0``).
    """

    def __init__(self, name: str, shape, depth: int):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"RegFifo: depth must be an int >= 1, not {depth!r}")
        self.name, self.depth = name, depth
        self.mem = [Signal(shape, name=f"{name}_m{i}", reset_less=True) for i in range(depth)]
        self.rd = Signal(range(depth), name=f"{name}_rd")
        self.wr = Signal(range(depth), name=f"{name}_wr")
        self.count = Signal(range(depth + 1), name=f"{name}_n")
        self.head = Signal(shape, name=f"{name}_head")

    def build(self, m, push, value, pop) -> None:
        """Add the FIFO's logic to module ``m``: at the edge, ``push`` appends ``value`` and
        ``pop`` drops the head (both in one cycle: count unchanged).  The caller guarantees no
        push when full and no pop when empty."""
        d = self.depth
        m.d.comb += self.head.eq(select(m, f"{self.name}_rdata", self.rd, self.mem,
                                        len(Value.cast(self.head))))
        with m.If(push):
            write(m, self.wr, self.mem, value)
            m.d.sync += self.wr.eq(Mux(self.wr == d - 1, 0, self.wr + 1))
        with m.If(pop):
            m.d.sync += self.rd.eq(Mux(self.rd == d - 1, 0, self.rd + 1))
        with m.If(push & ~pop):
            m.d.sync += self.count.eq(self.count + 1)
        with m.Elif(pop & ~push):
            m.d.sync += self.count.eq(self.count - 1)
