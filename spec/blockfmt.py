"""Block-scaled number formats and the block post-processing stage: parameters, encodings,
field layouts and error codes (no behaviour; the contract is ``docs/blockfmt.md``).

Formats (one :class:`BlockFormat` record each, validated eagerly):

* ``BFP16_64``: d-Matrix's BFP16 (ANCHORS.md): blocks of 64 elements, 8-bit signed
  significands sharing one 8-bit exponent; weights and inputs.  Element value
  ``m * 2**(E - 127 - 6)``, every exponent code 0..255 is a number (no NaN).
* ``MXINT8``: OCP Microscaling Formats (MX) Specification v1.0: a concrete MX-compliant format
  (section 5, Table 1) of k = 32 elements, shared scale X of type E8M0 (section 5.4: value
  ``2**(code - 127)``, code 0xFF = NaN, Table 7), elements INT8 (section 5.3, Table 6: two's
  complement with an implicit scale 2**-6, i.e. one sign, one integer and six fraction bits).
  Element value ``P * 2**-6 * X``.  Conversion from floats follows section 6.3.
* ``Q4_1``: a 4-bit weight block format with a scale and an offset that executes GGUF's Q4_1
  exactly: per 32-element block ``w = d*q + m``, ``q`` in 0..15, ``d`` and ``m`` IEEE binary16;
  the inputs it multiplies are MXINT8.  The macro stores ``q - 8`` (signed 4 bits).

BFP16-64 and MXINT8 put their significands on the same grid (``m * 2**(e - 6)``, |m| <= 127
when quantised); they differ in block size (64 / 32) and in the meaning of exponent code 255.

All layouts are little-endian (field 0 in the LSBs), built with :func:`spec.params._layout`.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from spec.params import Field, MacroParams, _layout, check_int, index_bits

__all__ = ["Fmt", "BlockFormat", "BFP16_64", "MXINT8", "Q4_1", "FORMATS", "PostErr",
           "PostParams", "post_in_fields", "post_sw_fields", "post_out_fields",
           "scale_fields", "FP32_NAN", "FP32_MAX", "E8M0_NAN", "EXP_BIAS", "FRAC_BITS",
           "SCALE_WORD_BITS", "FP_BITS", "XS_BITS", "FMT_BITS", "ERR_BITS", "fmt_of"]

EXP_BIAS = 127           # shared exponents / E8M0 scales: value 2**(code - 127)
FRAC_BITS = 6            # 8-bit significands are fixed point s1.6: implicit scale 2**-6
E8M0_NAN = 0xFF          # MX v1.0 Table 7: the E8M0 NaN encoding
FP32_NAN = 0x7FC00000    # the one NaN the stage ever produces (quiet, positive)
FP32_MAX = 0x7F7FFFFF    # largest finite binary32, (2 - 2**-23) * 2**127: saturation value
FP_BITS = 32             # accumulator / output element: IEEE 754 binary32 code
SCALE_WORD_BITS = 32     # one weight-scale word per column per weight set
XS_BITS = 8              # input block scale (exponent code) per input tile
FMT_BITS = 2             # format code of a weight set
ERR_BITS = 3             # width of the stage's ``err`` output


class Fmt(enum.IntEnum):
    """Format code of a weight set (2 bits, field ``fmt``).  NONE: plain integers (the term
    of a beat is the macro's dot product itself, scale 1)."""
    NONE = 0
    BFP16 = 1
    MXINT8 = 2
    Q4_1 = 3


class PostErr(enum.IntEnum):
    """Codes on the stage's ``err`` output (3 bits), valid the cycle after a scale-write beat.
    A rejected write changes no state.  Precedence: the lowest non-zero code that applies."""
    NONE = 0
    BAD_ALIGN = 1   # the format's block size != macro n_in: a tile would not be one block
    BAD_WIDTH = 2   # macro x_bits / w_bits are not ones the format executes
    BAD_PART = 3    # part >= chunks (only encodable when chunks is not a power of two)
    BAD_SCALE = 4   # a reserved scale bit is set, or a Q4_1 d/m code is fp16 inf/NaN
    HAZARD = 5      # write to the weight set of the beat the stage is processing


@dataclass(frozen=True)
class BlockFormat:
    """One block-scaled format: block size, element and scale encodings.

    Attributes
    ----------
    fmt : Fmt
        Its 2-bit code.
    block : int
        Elements per block (= macro rows of a tile), a power of two 2..1024.
    w_elem_bits : int
        Stored weight element bits (8, or 4 for Q4_1).
    x_elem_bits : int
        Input element bits (8: s1.6 significands).
    w_scale_bits : int
        Weight scale bits per block (8: an exponent; 32: Q4_1's fp16 d and m).
    x_scale_bits : int
        Input scale bits per block (8: an exponent code).
    exp_nan : int or None
        Exponent code that means NaN (E8M0: 255), None when every code is a number.
    macro_w_bits : tuple of int
        Macro ``w_bits`` that execute it (the weight element must fit, signed).
    q_offset : int
        Stored weight = code - q_offset (Q4_1: 8, so 0..15 becomes signed -8..7).
    """
    fmt: Fmt
    block: int
    w_elem_bits: int
    x_elem_bits: int
    w_scale_bits: int
    x_scale_bits: int
    exp_nan: int | None
    macro_w_bits: tuple[int, ...]
    q_offset: int = 0

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"BlockFormat: {name}={getattr(self, name)!r} {why}")
        if not isinstance(self.fmt, Fmt) or self.fmt == Fmt.NONE:
            bad("fmt", "must be Fmt.BFP16, Fmt.MXINT8 or Fmt.Q4_1")
        b = self.block
        if type(b) is not int or not 2 <= b <= 1024 or b & (b - 1):
            bad("block", "must be a power of two in 2..1024")
        for name, ok in (("w_elem_bits", (4, 8)), ("x_elem_bits", (8,)),
                         ("w_scale_bits", (8, 32)), ("x_scale_bits", (8,))):
            if type(getattr(self, name)) is not int or getattr(self, name) not in ok:
                bad(name, f"must be one of {ok}")
        if self.exp_nan is not None and (type(self.exp_nan) is not int
                                         or not 0 <= self.exp_nan <= 255):
            bad("exp_nan", "must be None or an 8-bit code")
        if (not isinstance(self.macro_w_bits, tuple) or not self.macro_w_bits
                or any(w not in (4, 8) or w < self.w_elem_bits for w in self.macro_w_bits)):
            bad("macro_w_bits", f"must be a non-empty tuple of 4/8 >= w_elem_bits "
                                f"{self.w_elem_bits}")
        if type(self.q_offset) is not int or not 0 <= self.q_offset < (1 << self.w_elem_bits):
            bad("q_offset", f"must be an int in 0..{(1 << self.w_elem_bits) - 1}")
        if (self.fmt == Fmt.Q4_1) != (self.w_scale_bits == 32):
            bad("w_scale_bits", "is 32 (d, m) exactly for Q4_1")

    @property
    def name(self) -> str:
        return {Fmt.BFP16: f"BFP16-{self.block}", Fmt.MXINT8: "MXINT8",
                Fmt.Q4_1: "Q4_1"}[self.fmt]

    @property
    def w_bits_per_elem(self) -> float:
        """Weight storage and traffic, bits per weight (element plus its share of the scale)."""
        return self.w_elem_bits + self.w_scale_bits / self.block

    @property
    def x_bits_per_elem(self) -> float:
        """Input traffic, bits per input element."""
        return self.x_elem_bits + self.x_scale_bits / self.block


BFP16_64 = BlockFormat(Fmt.BFP16, 64, 8, 8, 8, 8, None, (8,))
MXINT8 = BlockFormat(Fmt.MXINT8, 32, 8, 8, 8, 8, E8M0_NAN, (8,))
Q4_1 = BlockFormat(Fmt.Q4_1, 32, 4, 8, 32, 8, E8M0_NAN, (4, 8), q_offset=8)
FORMATS = {f.fmt: f for f in (BFP16_64, MXINT8, Q4_1)}


def fmt_of(value) -> Fmt:
    """``value`` (a Fmt, its int code or its name, case-insensitive) as a Fmt; else ValueError."""
    if isinstance(value, str):
        key = value.upper().replace("-", "_").replace("BFP16_64", "BFP16")
        if key in Fmt.__members__:
            return Fmt[key]
        raise ValueError(f"fmt={value!r} must be one of {[f.name for f in Fmt]}")
    return Fmt(check_int("fmt", value, 0, len(Fmt) - 1))


def scale_fields(fmt) -> dict[str, Field]:
    """Layout of one 32-bit weight-scale word of format ``fmt``: NONE ``rsv``; BFP16 and
    MXINT8 ``e`` (the exponent code) then ``rsv``; Q4_1 ``d`` then ``m`` (fp16 codes, the byte
    order of a GGUF block_q4_1 read as one little-endian word).  ``rsv`` must be 0."""
    fmt = fmt_of(fmt)
    if fmt == Fmt.NONE:
        return _layout(("rsv", 32))
    if fmt == Fmt.Q4_1:
        return _layout(("d", 16), ("m", 16))
    return _layout(("e", 8), ("rsv", 24))


@dataclass(frozen=True)
class PostParams:
    """The block post-processing stage behind one macro (``docs/blockfmt.md``).

    Parameters
    ----------
    macro : MacroParams
        The macro whose results it takes: ``n_out`` columns of ``acc_width`` bits, ``n_sets``
        weight sets (one scale word per column per set), ``n_acc`` accumulator entries.
    lanes : int
        Columns processed per cycle; must divide ``macro.n_out``.  A beat takes
        ``chunks = n_out // lanes`` cycles (8 = X for the default 64-column macro, so the
        stage keeps up with one macro request per X cycles).

    The accumulator is IEEE binary32 per column per entry, updated once per block by a fused
    add rounded to nearest even (see the contract).
    """
    macro: MacroParams = MacroParams()
    lanes: int = 8

    def __post_init__(self):
        if not isinstance(self.macro, MacroParams):
            raise ValueError(f"PostParams: macro={self.macro!r} must be a MacroParams")
        n = self.macro.n_out
        if type(self.lanes) is not int or not 1 <= self.lanes <= n or n % self.lanes:
            raise ValueError(f"PostParams: lanes={self.lanes!r} must be an int in 1..{n} "
                             f"dividing macro.n_out={n}")

    @property
    def chunks(self) -> int:
        """Cycles a beat occupies the stage (C)."""
        return self.macro.n_out // self.lanes

    @property
    def part_bits(self) -> int:
        """Width of a scale write's ``part`` (which chunk of ``lanes`` columns it writes)."""
        return index_bits(self.chunks)

    @property
    def xsum_bits(self) -> int:
        """Signed width of the input tile's element sum: x_bits + clog2(n_in) (13 for 32x8)."""
        return self.macro.x_bits + math.ceil(math.log2(self.macro.n_in))

    def supports(self, fmt) -> PostErr:
        """PostErr.NONE if this macro executes ``fmt`` with tiles of exactly one block, else
        the error a scale write of that format reports (BAD_ALIGN before BAD_WIDTH)."""
        fmt = fmt_of(fmt)
        if fmt == Fmt.NONE:
            return PostErr.NONE
        f, m = FORMATS[fmt], self.macro
        if f.block != m.n_in:
            return PostErr.BAD_ALIGN
        if m.x_bits != f.x_elem_bits or m.w_bits not in f.macro_w_bits:
            return PostErr.BAD_WIDTH
        return PostErr.NONE

    @property
    def tag(self) -> str:
        return f"{self.macro.tag}_l{self.lanes}"


def post_in_fields(p: PostParams) -> dict[str, Field]:
    """Input beat (one macro result plus what the channel knows of the MAC that made it):
    ``y`` n_out x acc_width signed block dot products, ``dst`` entry, ``set`` weight set (its
    scales), ``acc`` (1: add to the entry, 0: start from +0), ``xs`` the input tile's exponent
    code, ``xsum`` the input tile's element sum (signed; used by Q4_1 only)."""
    m = p.macro
    return _layout(("y", m.n_out * m.acc_width), ("dst", m.dst_bits), ("set", m.set_bits),
                   ("acc", 1), ("xs", XS_BITS), ("xsum", p.xsum_bits))


def post_sw_fields(p: PostParams) -> dict[str, Field]:
    """Scale-write beat: ``words`` lanes x 32-bit scale words (:func:`scale_fields`) of columns
    ``part*lanes ..`` (the lowest in the LSBs) of weight set ``set``, and the set's format
    code ``fmt``.  A set takes ``chunks`` beats, parts 0..chunks-1."""
    return _layout(("words", p.lanes * SCALE_WORD_BITS), ("part", p.part_bits),
                   ("set", p.macro.set_bits), ("fmt", FMT_BITS))


def post_out_fields(p: PostParams) -> dict[str, Field]:
    """Output beat: ``v`` the entry's n_out binary32 codes after the beat, ``dst``, ``ovf``
    (the entry saturated since its last non-accumulating beat)."""
    m = p.macro
    return _layout(("v", m.n_out * FP_BITS), ("dst", m.dst_bits), ("ovf", 1))
