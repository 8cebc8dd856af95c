"""Single source of truth for the hub's softmax unit: parameters, stream layouts, codes, table.

Imported by the unit's HDL, its golden model (``model/softmax.py``), the program builders and
the testbenches.  Encodings and constants only; the behaviour (``docs/softmax.md``, the
cycle-by-cycle contract) is written twice, independently.  Layouts are little-endian (first
field in the LSBs), built with :mod:`spec.params` helpers.

Number formats (bits; symbols of ``docs/softmax.md``):

* score ``s``: A-bit signed integer (a QK^T result, A = the macro's ``acc_width``);
* scaled score ``x``: XW = IB + FB bits signed, log2 units with FB fraction bits
  (``x / 2**FB`` ~ ``s * scale * log2(e)``), saturated;
* exponential ``e``: unsigned, EW fraction bits, ``e / 2**EW`` ~ ``2**(-d / 2**FB)`` in [0, 1];
* running sum ``l``: LW = EW + bit_length(N) bits unsigned, EW fraction bits;
* probability ``q``: 0..QS (QS = ``prob_max``, 127), an INT8 input of SV; with two digits
  also ``lo`` in -64..64, the residual in units of 1/128 (p ~ (q + lo / 128) / QS).
"""
from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass

from spec.params import Field, MacroParams, _layout, check_fields, index_bits, is_pow2, pack

__all__ = ["SoftmaxParams", "SmOp", "SmErr", "SmState", "CHAN_BITS", "COUNT_BITS", "SH_BITS",
           "cmd_fields", "in_fields", "prob_fields", "res_fields", "exp_table", "encode_scale",
           "cfg_encode", "PROPOSED_HOST_OPS"]

CHAN_BITS = 3      # channel number of a score beat (the module out beat's ``chan``)
COUNT_BITS = 16    # token count T of a head (the host ``count`` field / tok[rid])
SH_BITS = 6        # scale shift


class SmOp(enum.IntEnum):
    """Softmax-unit command opcodes (2 bits); 2 and 3 are rejected with BAD_OP."""
    CFG = 0      # start a head: mul, sh, plog2, chan0, count, dig
    ABORT = 1    # drop the head in progress (state IDLE, output registers emptied)


class SmErr(enum.IntEnum):
    """Codes on the unit's ``err`` (commands) and ``in_err`` (score beats) outputs, 3 bits."""
    NONE = 0
    BAD_OP = 1       # cmd: opcode 2 or 3
    BAD_CFG = 2      # cmd CFG: 2**plog2 > n_part, chan0 + 2**plog2 > 8, or count == 0
    TOO_LONG = 3     # cmd CFG: count > max_context (the score buffer)
    BAD_PART = 4     # beat: chan - chan0 outside 0 .. 2**plog2 - 1
    EXTRA_BEAT = 5   # beat: its partition already has all its beats


class SmState(enum.IntEnum):
    """The unit's control state ``st`` (3 bits)."""
    IDLE = 0
    INGEST = 1
    MERGE = 2
    EMIT = 3
    DONE = 4


@dataclass(frozen=True)
class SoftmaxParams:
    """Configuration of the hub's streaming softmax unit (``docs/softmax.md``).

    score_bits   A: width of a signed score, the macro's ``acc_width`` (8..42)
    n_lanes      NO: scores per input beat, the macro's ``n_out`` (a power of two, 1..1024)
    tile         NI: probabilities per output tile, the macro's ``n_in`` (power of two, 2..1024)
    max_context  N: score-buffer capacity in scores = the longest head (tokens); a power of
                 two multiple of n_lanes, at least n_part * n_lanes, at most 65536
    n_part       partitions (channels under TCP) of one head: 1, 2, 4 or 8
    mul_bits     MB: width of the unsigned scale multiplier (8..24); A + MB <= 62
    frac_bits    FB: fraction bits of a scaled score (4..16)
    int_bits     IB: integer bits (with sign) of a scaled score (4..16)
    table_bits   TB: the exp table has 2**TB + 1 entries (2..min(10, FB)); linear interpolation on
                 the FB - TB low fraction bits
    exp_bits     EW: fraction bits of an exponential and of the sums (8..24)
    prob_max     QS: the largest probability code, given to the max score (1..127)

    Every field is a Python int; anything else is a ValueError naming it.
    """
    score_bits: int = 28
    n_lanes: int = 64
    tile: int = 64
    max_context: int = 4096
    n_part: int = 4
    mul_bits: int = 16
    frac_bits: int = 10
    int_bits: int = 8
    table_bits: int = 6
    exp_bits: int = 16
    prob_max: int = 127

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"SoftmaxParams: {name}={getattr(self, name)!r} {why}")
        check_fields("SoftmaxParams", self, ("score_bits", 8, 42), ("n_lanes", 1, 1024),
                     ("tile", 2, 1024), ("max_context", 1, 1 << COUNT_BITS), ("n_part", 1, 8),
                     ("mul_bits", 8, 24), ("frac_bits", 4, 16), ("int_bits", 4, 16),
                     ("table_bits", 2, 10), ("exp_bits", 8, 24), ("prob_max", 1, 127))
        for name in ("n_lanes", "tile", "n_part"):
            if not is_pow2(getattr(self, name)):
                bad(name, "must be a power of two")
        if self.table_bits > self.frac_bits:
            bad("table_bits", f"must be <= frac_bits={self.frac_bits}")
        if self.score_bits + self.mul_bits > 62:
            bad("mul_bits", f"+ score_bits={self.score_bits} must be <= 62")
        N, NO = self.max_context, self.n_lanes
        if N % NO or not is_pow2(N // NO):
            bad("max_context", f"must be n_lanes={NO} times a power of two")
        if N < self.n_part * NO:
            bad("max_context", f"must be >= n_part * n_lanes = {self.n_part * NO}")

    @classmethod
    def for_macro(cls, macro: MacroParams, **kw) -> "SoftmaxParams":
        """The unit that takes ``macro``'s results (A = acc_width, NO = n_out) and writes its
        input tiles (NI = n_in); ``kw`` sets the other fields."""
        if not isinstance(macro, MacroParams):
            raise ValueError(f"SoftmaxParams.for_macro: macro={macro!r} must be a MacroParams")
        return cls(score_bits=macro.acc_width, n_lanes=macro.n_out, tile=macro.n_in, **kw)

    # --- derived widths (bits) and sizes ---------------------------------------------------
    @property
    def x_bits(self) -> int:
        """XW: signed scaled score (IB + FB)."""
        return self.int_bits + self.frac_bits

    @property
    def l_bits(self) -> int:
        """LW: unsigned running sum; N * 2**EW < 2**LW."""
        return self.exp_bits + self.max_context.bit_length()

    @property
    def qsum_bits(self) -> int:
        """Unsigned sum of the emitted probability codes (<= N * QS)."""
        return (self.max_context * self.prob_max).bit_length()

    @property
    def qlo_bits(self) -> int:
        """Signed sum of the digit-1 codes (|sum| <= 64 N)."""
        return (64 * self.max_context).bit_length() + 1

    @property
    def rows(self) -> int:
        """D: score-buffer rows of n_lanes scores."""
        return self.max_context // self.n_lanes

    @property
    def plog2_max(self) -> int:
        return self.n_part.bit_length() - 1

    @property
    def idx_bits(self) -> int:
        """Tile index within a partition: < ceil(N / NI)."""
        return index_bits(-(-self.max_context // self.tile))

    @property
    def tag(self) -> str:
        return (f"a{self.score_bits}_o{self.n_lanes}_i{self.tile}_n{self.max_context}"
                f"_p{self.n_part}_m{self.mul_bits}_f{self.frac_bits}_b{self.int_bits}"
                f"_t{self.table_bits}_e{self.exp_bits}_q{self.prob_max}")


# --- stream payload layouts ---------------------------------------------------------------
def cmd_fields(p: SoftmaxParams) -> dict[str, Field]:
    """Command beat: op 2, mul MB, sh 6, plog2 2, chan0 3, count 16, dig 1 (0: one
    probability digit, 1: two); ABORT uses only op."""
    return _layout(("op", 2), ("mul", p.mul_bits), ("sh", SH_BITS), ("plog2", 2),
                   ("chan0", CHAN_BITS), ("count", COUNT_BITS), ("dig", 1))


def in_fields(p: SoftmaxParams) -> dict[str, Field]:
    """Score beat = the module's out beat: x[NO] A-bit signed (lane 0 lowest), chan."""
    return _layout(("x", p.n_lanes * p.score_bits), ("chan", CHAN_BITS))


def prob_fields(p: SoftmaxParams) -> dict[str, Field]:
    """Probability tile: q[NI] 8-bit two's complement (lane 0 lowest: an SV input tile;
    digit 0: 0..QS, digit 1: -64..64), part, idx, digit, last (the head's final tile)."""
    return _layout(("q", p.tile * 8), ("part", CHAN_BITS), ("idx", p.idx_bits), ("digit", 1),
                   ("last", 1))


def res_fields(p: SoftmaxParams) -> dict[str, Field]:
    """Result of a head: m (XW signed), l (LW), qsum (sum of the digit-0 codes), qlo (sum of
    the digit-1 codes, signed), sat (a valid score saturated)."""
    return _layout(("m", p.x_bits), ("l", p.l_bits), ("qsum", p.qsum_bits),
                   ("qlo", p.qlo_bits), ("sat", 1))


# --- the exp table ------------------------------------------------------------------------
def exp_table(p: SoftmaxParams) -> tuple[int, ...]:
    """T[i] = round(2**(EW - i / 2**TB)) for i = 0 .. 2**TB (half rounds up), exact.

    T[0] = 2**EW, T[2**TB] = 2**(EW-1); the rounding is decided in integers:
    n = T[i] iff (2n - 1)**K <= 2**((EW + 1) * K - i) < (2n + 1)**K with K = 2**TB.
    """
    if not isinstance(p, SoftmaxParams):
        raise ValueError(f"exp_table: p={p!r} must be a SoftmaxParams")
    return _exp_table(p.table_bits, p.exp_bits)


@functools.lru_cache(maxsize=32)
def _exp_table(table_bits: int, exp_bits: int) -> tuple[int, ...]:
    K, EW = 1 << table_bits, exp_bits
    out = []
    for i in range(K + 1):
        target = 1 << ((EW + 1) * K - i)
        n = round(2.0 ** (EW - i / K))
        while (2 * n + 1) ** K <= target:
            n += 1
        while (2 * n - 1) ** K > target:
            n -= 1
        out.append(n)
    return tuple(out)


# --- host-side encoders -------------------------------------------------------------------
def encode_scale(scale: float, p: SoftmaxParams) -> tuple[int, int]:
    """(mul, sh) for a score-to-logit factor ``scale`` (> 0, e.g. q_scale * k_scale / sqrt(d)):
    ``mul / 2**sh`` ~ ``scale * log2(e) * 2**FB`` with the largest sh <= 63 such that
    ``mul < 2**MB``.  ValueError if ``scale`` is not a finite positive number or the factor
    does not fit (>= 2**MB, or < 2**-64)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or \
            not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"encode_scale: scale={scale!r} must be a finite number > 0")
    c = float(scale) * math.log2(math.e) * (1 << p.frac_bits)
    top = (1 << p.mul_bits) - 1
    if round(c) > top:
        raise ValueError(f"encode_scale: scale={scale!r} gives a factor {c:.4g} >= 2**"
                         f"{p.mul_bits}: too large for mul_bits={p.mul_bits}")
    sh = 0
    while sh < (1 << SH_BITS) - 1 and round(c * 2.0 ** (sh + 1)) <= top:
        sh += 1
    mul = round(c * 2.0 ** sh)
    if mul == 0:
        raise ValueError(f"encode_scale: scale={scale!r} is too small (factor {c:.4g})")
    return mul, sh


def cfg_encode(p: SoftmaxParams, mul: int, sh: int, plog2: int, chan0: int, count: int,
               dig: int = 0) -> int:
    """A CFG command word.  Only the encodable width is checked (ValueError naming a field
    that is not an unsigned int of its width); range checks are the unit's job (BAD_CFG,
    TOO_LONG)."""
    return pack(cmd_fields(p), op=int(SmOp.CFG), mul=mul, sh=sh, plog2=plog2, chan0=chan0,
                count=count, dig=dig)


PROPOSED_HOST_OPS = {
    11: "SM_CFG chmask, rid, data{mul, sh, dig}: CFG with chan0 = lowest set bit of chmask, "
        "2**plog2 = popcount(chmask) (P consecutive channels, P a power of two, else "
        "BAD_FIELD), count = tok[rid]",
    12: "RD_SM chmask, rid, vp, o: RD_OUT whose beat goes to the unit's ``in`` stream",
    13: "WR_PROB chmask, g: the unit's next probability tile -> GBuf g of the masked channels",
    14: "SM_ABORT: ABORT",
}
"""The module's softmax opcodes (now ``spec.isa.HostOpExt`` 11..14, with
``ModuleParams.softmax``; docs/module.md, "Softmax unit"), kept for reference."""
