"""Timing down-counters of the DRAM-PIM bank (``docs/dram_bank.md``, "Counters").

Each bank rule "X accepted in cycle t -> Y from cycle t + N" is a down-counter loaded with
N - 1 at the edge ending t; Y is allowed when the counter is 0.  At every edge a counter does
``c <= max(c - 1 if c > 0 else 0, L)``, L the largest load of that edge (0 if none).
:data:`LOADS` is the contract's load table; :func:`down_counter` builds one counter.
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal

from spec.dram import DramTiming

__all__ = ["COUNTERS", "EVENTS", "LOADS", "load_values", "down_counter"]

#: counter names, in the contract's order
COUNTERS = ("c_act", "c_pre", "c_mac", "c_rd", "c_wr", "c_ref")

#: events that load counters: an accepted legal ACT, a column MAC or RD, a WR, a PRE of an
#: open row, a refresh start
EVENTS = ("act", "col", "wr", "pre", "ref")

#: {event: {counter: attribute of DramTiming (a gap in cycles; N - 1 is loaded)}}
LOADS = {
    "act": {"c_act": "tRC", "c_pre": "tRAS", "c_mac": "tRCDRDMAC", "c_rd": "tRCDRD",
            "c_wr": "tRCDWR"},
    "col": {"c_pre": "tRTP", "c_mac": "tCCDL", "c_rd": "tCCDL", "c_wr": "tRTW"},
    "wr": {"c_pre": "wr_to_pre", "c_mac": "wr_to_rd", "c_rd": "wr_to_rd", "c_wr": "tCCDL"},
    "pre": {"c_act": "tRP"},
    "ref": {"c_act": "tRFC", "c_ref": "tRFC"},
}


def load_values(t: DramTiming) -> dict[str, list[tuple[str, int]]]:
    """``{counter: [(event, N - 1), ...]}`` for the timing table ``t`` (values in cycles)."""
    if not isinstance(t, DramTiming):
        raise ValueError(f"load_values: timing={t!r} must be a DramTiming")
    out: dict[str, list[tuple[str, int]]] = {c: [] for c in COUNTERS}
    for ev, row in LOADS.items():
        for cnt, attr in row.items():
            out[cnt].append((ev, getattr(t, attr) - 1))
    return out


def down_counter(m: Module, name: str, width: int, loads) -> Signal:
    """A ``width``-bit saturating down-counter with loads, reset to 0.

    Parameters
    ----------
    m : Module
        Module the ``sync`` update is added to.
    name : str
        Signal name.
    width : int
        Counter width in bits (``DramTiming.counter_bits``).
    loads : list of (Value, int)
        ``(condition, value)``: at an edge where ``condition`` is 1, ``value`` (cycles, fits
        ``width`` bits) is a load; the counter becomes the largest of its decremented value
        and the active loads.

    Returns
    -------
    Signal
        The counter register (``width`` bits).
    """
    c = Signal(width, name=name)
    nxt = Signal(width, name=f"{name}_dec")
    m.d.comb += nxt.eq(Mux(c != 0, c - 1, 0))
    cur = nxt
    for i, (cond, value) in enumerate(loads):
        if not 0 <= value < 1 << width:
            raise ValueError(f"down_counter {name}: load {value} does not fit {width} bits")
        if value == 0:
            continue                       # max(x, 0) == x
        step = Signal(width, name=f"{name}_l{i}")
        v = Const(value, width)
        m.d.comb += step.eq(Mux(cond & (v > cur), v, cur))
        cur = step
    m.d.sync += c.eq(cur)
    return c
