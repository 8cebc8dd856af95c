"""Logic helpers shared by the components (one copy for every component): reductions over
lists of Amaranth values and the single-enable register load."""
from __future__ import annotations

from functools import reduce

from amaranth.hdl import Const, Mux, ResetSignal

__all__ = ["any_of", "all_of", "tree", "load"]


def any_of(vals):
    """Bitwise OR of ``vals`` (as wide as the widest; ``Const(0, 1)`` if empty)."""
    vals = list(vals)
    return reduce(lambda a, b: a | b, vals) if vals else Const(0, 1)


def all_of(vals):
    """Bitwise AND of 1-bit ``vals`` (``Const(1, 1)`` if empty)."""
    vals = list(vals)
    return reduce(lambda a, b: a & b, vals) if vals else Const(1, 1)


def tree(terms, op):
    """Balanced reduction of a non-empty list with the binary function ``op`` (pairs
    ``op(terms[2i], terms[2i + 1])``, an odd last term carried to the next level)."""
    while len(terms) > 1:
        nxt = [op(terms[i], terms[i + 1]) for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def load(m, reg, en, value):
    """``reg <= value`` in the cycles where ``en``, ``reg <= 0`` on ``rst``; ``reg`` must be
    ``reset_less`` (this is its reset).

    Same behaviour as a resettable register under ``with m.If(en)``, written as one enable for
    simulation speed.  Amaranth emits the reset of an ordinary register as a second
    ``if (rst) next = 0`` after the enable logic; Verilator then keeps that next-state value as a
    variable of its own in the input-combinational ("ico") region, with the whole datapath
    feeding it (adder trees, accumulators, result file) inlined, and re-evaluates it on every
    ``eval()`` (``rst`` and ``res.ready`` are inputs).  With a single enable it folds the update
    into the clock edge, and the datapath is evaluated once per cycle from the registers.
    (n_in=64, n_out=16: the ico code shrinks from ~15k to ~160 lines, the C++ harness runs 2.6x
    faster; check with ``Vtop___024root___ico_sequent*`` in a Verilator build.)
    """
    rst = ResetSignal()
    with m.If(en | rst):
        m.d.sync += reg.eq(Mux(rst, 0, value))
