"""Single source of truth for the DIMC macro's parameters, stream field layouts and error codes.

Imported by the HDL (``hdl/macro.py``), the golden model (``model/macro.py``), the
testbenches and the workload builders.  It holds *encodings only*: no behaviour.  The
behaviour is written twice, independently, in the HDL and in the golden model, following the
timing contract in ``docs/macro.md`` (summarised in :class:`MacroParams`).

Bit layouts are little-endian: field 0 occupies the least significant bits.  Vectors of
elements (weights of one row, inputs of one request, results) are packed element 0 first,
each element in two's complement.
"""
from __future__ import annotations

import enum
import math
import operator
from dataclasses import dataclass

__all__ = ["MacroParams", "MacroErr", "Field", "wr_fields", "req_fields", "res_fields",
           "pack", "unpack", "pack_vec", "unpack_vec", "width", "check_int", "check_word",
           "check_fields", "is_pow2", "index_bits"]


# --- argument checks (one place for every level: spec, models, program builders) ----------
def _index(name: str, value, what: str) -> int:
    """``operator.index(value)``; ValueError ``name=value must be <what>`` for a bool or a
    non-integer."""
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be {what}, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name}={value!r} must be {what}") from None


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as a Python int, if it is an integer (int, IntEnum or numpy integer; not a
    bool, float or str) in ``lo..hi`` (either bound may be None).  Else ValueError naming
    ``name=value``."""
    v = _index(name, value, "an int")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"in {lo}..{hi}" if lo is not None and hi is not None else \
            (f">= {lo}" if lo is not None else f"<= {hi}")
        raise ValueError(f"{name}={value!r} must be {rng}")
    return v


def check_word(name: str, value, width: int) -> int:
    """``value`` as a Python int, if it is an unsigned ``width``-bit integer (a bool only when
    ``width`` is 1: a valid/ready bit); else ValueError naming ``name=value``.  Cheap for the
    common case (a Python int in range)."""
    if type(value) is int and 0 <= value and not value >> width:
        return value
    if isinstance(value, bool) and width == 1:
        return int(value)
    v = _index(name, value, f"an unsigned {width}-bit int")
    if v < 0 or v >> width:
        raise ValueError(f"{name}={value!r} must be an unsigned {width}-bit int "
                         f"(0..2**{width}-1)")
    return v


def check_fields(owner: str, obj, *ranges: tuple[str, int, int]) -> None:
    """Check parameter fields: for each ``(name, lo, hi)``, ``getattr(obj, name)`` must be a
    Python int (exactly: not a bool, float, numpy integer or int subclass) in ``lo..hi``.
    Else ValueError ``owner: name=value must be an int`` / ``... must be in lo..hi``."""
    for name, lo, hi in ranges:
        v = getattr(obj, name)
        if type(v) is not int:
            raise ValueError(f"{owner}: {name}={v!r} must be an int")
        if not lo <= v <= hi:
            raise ValueError(f"{owner}: {name}={v!r} must be in {lo}..{hi}")


def is_pow2(v: int) -> bool:
    """True if the int ``v`` is a power of two (1, 2, 4, ...)."""
    return v > 0 and not v & (v - 1)


def index_bits(n: int) -> int:
    """Width of an index field for ``n`` values: ceil(log2 n), at least 1 bit."""
    return max(1, math.ceil(math.log2(n)))


class MacroErr(enum.IntEnum):
    """Codes on the macro's ``err`` output (2 bits), valid the cycle after the write beat."""
    NONE = 0
    WR_HAZARD = 1   # weight write to the set the engine is computing on: write dropped
    WR_BAD_ROW = 2  # weight write with row >= n_in: write dropped


@dataclass(frozen=True)
class Field:
    """One named field of a packed payload: ``width`` bits starting at bit ``offset``."""
    name: str
    offset: int
    width: int


def _layout(*named_widths: tuple[str, int]) -> dict[str, Field]:
    fields, off = {}, 0
    for name, width in named_widths:
        fields[name] = Field(name, off, width)
        off += width
    return fields


@dataclass(frozen=True)
class MacroParams:
    """Configuration of one DIMC SRAM MAC macro.

    n_in        reduction length: rows of the array, inputs per request, 2..1024 (the host
                command's 10-bit ``row`` field)
    n_out       output columns, 1..1024
    w_bits      weight width in bits, 4 or 8; stored as 4-bit slices, top slice signed
    x_bits      input width in bits, 4 or 8; applied bit-serially, MSB (sign) first
    n_sets      weight sets (ping-pong), a power of two in 2..256 (a physical page is one set
                of one bank, and the host command's ``pp`` field is 8 bits)
    n_acc       result/accumulator entries y[n_acc][n_out], a power of two in 2..256 (the host
                command's 8-bit ``o`` field); a request names its entry ``dst``, so several
                tokens can accumulate tiled reductions through one resident weight tile
    tree_stages register stages in the adder tree, 0..2 (adds that many cycles of latency)
    acc_guard   extra accumulator bits for tiled reductions, 0..16: 2**acc_guard tiles never
                wrap (acc_width <= 42 bits, exact in the models' int64 / float64 numerics)

    Every field is a Python int (not a bool); anything else is a ValueError naming it.

    Timing contract (cycles of the single clock ``clk``; no stalls):
      * a request accepted at cycle t issues its x_bits input bits at cycles t+1 .. t+x_bits;
      * its result is valid on ``res`` from cycle t + x_bits + tree_stages + 1;
      * throughput: one request per x_bits cycles (``req.ready`` is high in the last issue cycle).
    """
    n_in: int = 64
    n_out: int = 64
    w_bits: int = 8
    x_bits: int = 8
    n_sets: int = 2
    n_acc: int = 16
    tree_stages: int = 1
    acc_guard: int = 6

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"MacroParams: {name}={getattr(self, name)!r} {why}")
        check_fields("MacroParams", self, ("n_in", 2, 1024), ("n_out", 1, 1024),
                     ("w_bits", 4, 8), ("x_bits", 4, 8), ("n_sets", 2, 256), ("n_acc", 2, 256),
                     ("tree_stages", 0, 2), ("acc_guard", 0, 16))
        if self.w_bits not in (4, 8):
            bad("w_bits", "must be 4 or 8")
        if self.x_bits not in (4, 8):
            bad("x_bits", "must be 4 or 8")
        for name in ("n_sets", "n_acc"):
            if not is_pow2(getattr(self, name)):
                bad(name, "must be a power of two")

    # --- derived widths (bits) -------------------------------------------------------
    @property
    def n_slices(self) -> int:
        """4-bit weight slices per weight."""
        return self.w_bits // 4

    @property
    def acc_width(self) -> int:
        """Signed accumulator / result width: x_bits + w_bits + ceil(log2 n_in) + acc_guard.

        One tile needs x_bits + w_bits - 1 + ceil(log2 n_in) bits plus one for the all-minimum
        case (n_in * 2**(x_bits-1) * 2**(w_bits-1) is positive); acc_guard bits more let
        2**acc_guard accumulated tiles never wrap.  Results wrap modulo 2**acc_width.
        """
        return self.x_bits + self.w_bits + math.ceil(math.log2(self.n_in)) + self.acc_guard

    @property
    def row_bits(self) -> int:
        return index_bits(self.n_in)

    @property
    def set_bits(self) -> int:
        return index_bits(self.n_sets)

    @property
    def dst_bits(self) -> int:
        return index_bits(self.n_acc)

    @property
    def tag(self) -> str:
        """Short unique name of this configuration (used for build caches and file names)."""
        return (f"i{self.n_in}_o{self.n_out}_w{self.w_bits}_x{self.x_bits}"
                f"_s{self.n_sets}_a{self.n_acc}_t{self.tree_stages}_g{self.acc_guard}")

    # --- numeric ranges ----------------------------------------------------------------
    @property
    def w_range(self) -> tuple[int, int]:
        return -(1 << (self.w_bits - 1)), (1 << (self.w_bits - 1)) - 1

    @property
    def x_range(self) -> tuple[int, int]:
        return -(1 << (self.x_bits - 1)), (1 << (self.x_bits - 1)) - 1


# --- stream payload layouts ---------------------------------------------------------------
def wr_fields(p: MacroParams) -> dict[str, Field]:
    """Weight-write beat: one row (one input index) of one set, all n_out columns."""
    return _layout(("data", p.n_out * p.w_bits), ("row", p.row_bits), ("set", p.set_bits))


def req_fields(p: MacroParams) -> dict[str, Field]:
    """Compute request: input vector x[n_in], weight set, accumulate flag, result entry."""
    return _layout(("x", p.n_in * p.x_bits), ("set", p.set_bits), ("acc", 1),
                   ("dst", p.dst_bits))


def res_fields(p: MacroParams) -> dict[str, Field]:
    """Result beat: the new value of entry ``dst``: y[n_out], each acc_width bits signed."""
    return _layout(("y", p.n_out * p.acc_width), ("dst", p.dst_bits))


def width(fields: dict[str, Field]) -> int:
    """Total width in bits of a payload layout."""
    return sum(f.width for f in fields.values())


def pack(fields: dict[str, Field], **values: int) -> int:
    """Pack named unsigned field values into one integer; ValueError on an unknown field or a
    value that is not an unsigned int of the field's width (see :func:`check_word`)."""
    word = 0
    for name, v in values.items():
        if name not in fields:
            raise ValueError(f"pack: unknown field {name!r}")
        f = fields[name]
        word |= check_word(f"pack: field {name}", v, f.width) << f.offset
    return word


def unpack(fields: dict[str, Field], word: int) -> dict[str, int]:
    """Inverse of :func:`pack`: every field of ``word`` (an unsigned int)."""
    word = check_word("unpack: word", word, width(fields))
    return {n: (word >> f.offset) & ((1 << f.width) - 1) for n, f in fields.items()}


def pack_vec(values, bits: int) -> int:
    """Pack signed integers (element 0 in the LSBs) as ``bits``-bit two's complement.

    ``values``: a sequence of ints (or numpy integers), or an integer numpy array.  ValueError
    if an element is not an integer (a float, even 2.0, a bool, a str) or does not fit.
    """
    bits = check_int("pack_vec: bits", bits, 1)
    if hasattr(values, "dtype"):                      # numpy array: check the dtype once
        if values.dtype.kind not in "iu" or values.ndim != 1:
            raise ValueError(f"pack_vec: values dtype {values.dtype} / ndim {values.ndim} must "
                             f"be a 1-D integer array")
        values = values.tolist()
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    word, mask = 0, (1 << bits) - 1
    for i, v in enumerate(values):
        if type(v) is not int:
            v = check_int(f"pack_vec: element {i}", v)
        if not lo <= v <= hi:
            raise ValueError(f"pack_vec: element {i} = {v} outside signed {bits}-bit range")
        word |= (v & mask) << (i * bits)
    return word


def unpack_vec(word: int, n: int, bits: int) -> list[int]:
    """Inverse of :func:`pack_vec`: ``n`` signed ``bits``-bit elements."""
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    out = []
    for i in range(n):
        v = (word >> (i * bits)) & mask
        out.append(v - (1 << bits) if v & sign else v)
    return out
