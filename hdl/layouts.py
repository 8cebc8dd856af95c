"""Stream payload layouts of the DIMC macro, derived from :mod:`spec.params`.

``spec.params`` is the single source of truth for field names, offsets and widths; this module
only converts its :class:`~spec.params.Field` dicts into :class:`amaranth.lib.data.StructLayout`
and checks that the conversion is exact (so that a payload port's packed value is the integer
produced by :func:`spec.params.pack`).
"""
from __future__ import annotations

from amaranth.hdl import unsigned
from amaranth.lib import data

from spec.params import Field, MacroParams, req_fields, res_fields, wr_fields

__all__ = ["struct_layout", "wr_layout", "req_layout", "res_layout"]


def struct_layout(fields: dict[str, Field]) -> data.StructLayout:
    """StructLayout with one ``unsigned(width)`` member per field, in spec order.

    Raises ValueError if the spec fields are not contiguous from bit 0 (a StructLayout cannot
    express gaps or reordering) or if the resulting offsets differ from the spec.
    """
    off = 0
    for f in fields.values():
        if f.offset != off:
            raise ValueError(f"struct_layout: field {f.name!r} at offset {f.offset}, "
                             f"expected {off}")
        off += f.width
    layout = data.StructLayout({f.name: unsigned(f.width) for f in fields.values()})
    for f in fields.values():
        lf = layout[f.name]
        if lf.offset != f.offset or lf.width != f.width:  # pragma: no cover - paranoia
            raise ValueError(f"struct_layout: field {f.name!r} mismatch {lf} vs {f}")
    if layout.size != off:  # pragma: no cover
        raise ValueError("struct_layout: size mismatch")
    return layout


def wr_layout(p: MacroParams) -> data.StructLayout:
    """Weight-write beat: ``data`` (n_out x w_bits), ``row``, ``set``."""
    return struct_layout(wr_fields(p))


def req_layout(p: MacroParams) -> data.StructLayout:
    """Compute request: ``x`` (n_in x x_bits), ``set``, ``acc``, ``dst``."""
    return struct_layout(req_fields(p))


def res_layout(p: MacroParams) -> data.StructLayout:
    """Result beat: ``y`` (n_out x acc_width, signed), ``dst``."""
    return struct_layout(res_fields(p))
