"""Reductions over lists of Amaranth values (one copy for every component)."""
from __future__ import annotations

from functools import reduce

from amaranth.hdl import Const

__all__ = ["any_of", "all_of"]


def any_of(vals):
    """Bitwise OR of ``vals`` (as wide as the widest; ``Const(0, 1)`` if empty)."""
    vals = list(vals)
    return reduce(lambda a, b: a | b, vals) if vals else Const(0, 1)


def all_of(vals):
    """Bitwise AND of 1-bit ``vals`` (``Const(1, 1)`` if empty)."""
    vals = list(vals)
    return reduce(lambda a, b: a & b, vals) if vals else Const(1, 1)
