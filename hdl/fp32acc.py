"""binary32 accumulate step of the block post-processing stage (``docs/blockfmt.md`` section 5).

:func:`term_add` builds the rounding ``R(a + T)`` of the contract into a module (the stage
inlines one or two per lane); :class:`Fp32TermAdd` wraps one as a component (for tests).
Combinational: ``a`` is an
accumulator code (+0, a normal binary32 number or NaN), ``T = (-1)**t_neg * t_mag * 2**t_exp``
an exact term (an unsigned integer magnitude of ``term_bits`` bits times a power of two).  The
exact sum is rounded once to 24 significant bits, to nearest, ties to even, with an unbounded
exponent, then saturated to +-FP32_MAX (``ovf``) or flushed to +0 below 2**-126; a zero sum is
+0; a NaN operand (``a``'s exponent field 255, or ``nan``) gives ``0x7FC00000``.

Datapath (P = max(24, term_bits) significand bits, P' = max(P, 25), window N = P' + 3 bits):

1. the term is normalised (leading-zero count, left shift) to a P-bit significand; ``a``'s
   24-bit significand is placed in the top of P bits;
2. the operand with the larger top exponent is X, the other Y (a zero operand is always Y);
   in the N-bit window X's top bit is at position P'+1 (position P'+2 takes the carry) and Y
   is shifted right by ``d = ex - ey`` (clamped to P'+2); every bit shifted below position 1
   is ORed into a sticky bit at position 0;
3. add or subtract (magnitude, sign of the larger), leading-zero count and left shift of the
   N-bit sum, round to nearest even at 24 bits, exponent and range checks.

Why the sticky bit is exact: X's bits are at positions >= 2 and Y's kept bits at >= 1, so Y
and its sticky form lie in the same open interval between two multiples of 2 and so do the
two sums.  Bits are lost only when d >= 2, and then the sum's leading one is at position >= P'
(an effective subtraction loses at most one position), so its guard bit is at position
>= P' - 24 >= 1: every rounding breakpoint and binade boundary is a multiple of 2, outside the
interval, and both sums round to the same value (and neither is 0).  With d <= 1 nothing is
shifted out and the sum is exact.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from spec.blockfmt import FP32_MAX, FP32_NAN

__all__ = ["Fp32TermAdd", "term_add", "ADD_FAULTS", "EXP_BITS", "lzc"]

#: Deliberate faults of the adder (to prove that the tests catch them): ``"trunc"`` rounds
#: toward zero instead of to nearest even; ``"no_sticky"`` drops the bits shifted out of the
#: window (no sticky bit).
ADD_FAULTS = ("trunc", "no_sticky")

#: Signed width of ``t_exp`` (the exponent of the term's LSB; the stage's terms span -266..244).
EXP_BITS = 10

_XB = 12            # internal signed exponent width (|exponent| < 2**11 for every input)


def lzc(m, v, name):
    """Leading-zero count of the unsigned value ``v`` (balanced tree of 2:1 muxes).

    Returns a Signal of ``ceil(log2 len(v))`` bits (at least 1); its value is only meaningful
    when ``v != 0`` (the caller handles zero).  ``v`` is padded with zeros below its LSB to a
    power of two, which does not change the count of a non-zero value.
    """
    n = len(v)
    size = 2
    while size < n:
        size *= 2
    x = Cat(Const(0, size - n), v) if size > n else v

    def rec(bits):
        if len(bits) == 2:
            return ~(bits[0] | bits[1]), ~bits[1]
        half = len(bits) // 2
        zh, ch = rec(bits[half:])
        zl, cl = rec(bits[:half])
        return zh & zl, Cat(Mux(zh, cl, ch), zh)

    _, cnt = rec(x)
    out = Signal(len(cnt), name=name)
    m.d.comb += out.eq(cnt)
    return out


class Fp32TermAdd(wiring.Component):
    """``r = R(a + T)``: one binary32 accumulation step with an exact integer-times-2**e term.

    Parameters
    ----------
    term_bits : int
        Width W of the term magnitude ``t_mag`` (1..64 bits).
    fault : str or None
        ``None`` for the correct adder, or one of :data:`ADD_FAULTS`.

    Ports (all combinational)
    -------------------------
    a : In(32)
        Accumulator code: +0, a normal binary32 number or NaN (exponent field 0 is read as
        +0, 255 as NaN).
    t_neg : In(1)
        Sign of the term (1: negative).
    t_mag : In(W)
        Term magnitude, unsigned integer.
    t_exp : In(signed(EXP_BITS))
        Exponent of the magnitude's LSB: ``T = +-t_mag * 2**t_exp``.
    nan : In(1)
        The term is NaN (the result is NaN).
    r : Out(32)
        Result code: +0, a normal number, +-FP32_MAX on overflow, or FP32_NAN.
    ovf : Out(1)
        The rounded sum exceeded FP32_MAX in magnitude (``r`` saturated); 0 for a NaN result.
    """

    def __init__(self, term_bits: int, *, fault: str | None = None):
        silence_unused(self)
        if type(term_bits) is not int or not 1 <= term_bits <= 64:
            raise ValueError(f"Fp32TermAdd: term_bits={term_bits!r} must be an int in 1..64")
        if fault is not None and fault not in ADD_FAULTS:
            raise ValueError(f"Fp32TermAdd: fault={fault!r} is not one of "
                             f"{', '.join(ADD_FAULTS)}")
        silence_unused(self, False)
        self.term_bits = term_bits
        self.fault = fault
        super().__init__({
            "a": In(32),
            "t_neg": In(1),
            "t_mag": In(term_bits),
            "t_exp": In(signed(EXP_BITS)),
            "nan": In(1),
            "r": Out(32),
            "ovf": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        r, ovf = term_add(m, self.a, self.t_neg, self.t_mag, self.t_exp, self.nan,
                          fault=self.fault)
        m.d.comb += [self.r.eq(r), self.ovf.eq(ovf)]
        return m


def term_add(m, a, t_neg, t_mag, t_exp, nan, *, fault=None, prefix=""):
    """Build ``R(a + T)`` into module ``m`` (combinational; see :class:`Fp32TermAdd` for the
    operands); returns the result code (32-bit Signal) and the overflow flag (1-bit Signal).
    Internal signals are named ``prefix`` + their name, so that several steps share a module
    (the stage inlines its lanes: one Verilog module)."""
    if fault is not None and fault not in ADD_FAULTS:
        raise ValueError(f"term_add: fault={fault!r} is not one of {', '.join(ADD_FAULTS)}")
    W = len(t_mag)
    P = max(24, W)                  # significand width of both operands
    Pp = max(P, 25)                 # so that the guard bit is above the sticky position
    D = Pp + 2                      # largest useful alignment shift
    N = Pp + 3                      # window: carry, X (top at Pp+1), ..., sticky at 0

    def sig(shape, name):
        return Signal(shape, name=prefix + name)

    # ---- a: sign, 24-bit significand (top of P bits), top exponent
    a_e, a_s = a[23:31], a[31]
    a_nan, a_zero = sig(1, "a_nan"), sig(1, "a_zero")
    a_sig, a_top = sig(P, "a_sig"), sig(signed(_XB), "a_top")
    m.d.comb += [a_nan.eq(a_e == 0xFF), a_zero.eq(a_e == 0),
                 a_sig.eq(Mux(a_zero, 0, Cat(a[0:23], Const(1, 1))) << (P - 24)),
                 a_top.eq(a_e - 127)]

    # ---- term: normalise the magnitude to P bits
    t_zero = sig(1, "t_zero")
    m.d.comb += t_zero.eq(t_mag == 0)
    if W == 1:
        t_norm, t_top_off = t_mag, Const(0, 1)
    else:
        lz1 = lzc(m, t_mag, prefix + "lz_t")
        t_norm, t_top_off = (t_mag << lz1)[:W], (W - 1) - lz1
    t_sig, t_top = sig(P, "t_sig"), sig(signed(_XB), "t_top")
    m.d.comb += [t_sig.eq(t_norm << (P - W)), t_top.eq(t_exp + t_top_off)]

    # ---- order: X has the larger top exponent; a zero operand is Y
    a_big = sig(1, "a_big")
    m.d.comb += a_big.eq(~a_zero & (t_zero | (a_top >= t_top)))
    mx, my, sx, sy = sig(P, "mx"), sig(P, "my"), sig(1, "sx"), sig(1, "sy")
    ex, dd = sig(signed(_XB), "ex"), sig(signed(_XB + 1), "d")
    m.d.comb += [
        mx.eq(Mux(a_big, a_sig, t_sig)), my.eq(Mux(a_big, t_sig, a_sig)),
        sx.eq(Mux(a_big, a_s, t_neg)), sy.eq(Mux(a_big, t_neg, a_s)),
        ex.eq(Mux(a_big, a_top, t_top)),
        dd.eq(Mux(a_big, a_top - t_top, t_top - a_top)),
    ]
    dsh = sig(range(D + 1), "dsh")  # d < 0 only when Y is zero: any shift will do
    m.d.comb += dsh.eq(Mux((dd < 0) | (dd > D), D, dd))

    # ---- align Y in the window (positions 0..Pp+1, sticky at 0)
    low = Pp - P + 2                # position of a significand's LSB in the window
    z = sig(D + Pp + 2, "y_sh")
    m.d.comb += z.eq(Cat(Const(0, D + low), my) >> dsh)
    sticky = sig(1, "sticky")
    m.d.comb += sticky.eq(0 if fault == "no_sticky" else z[:D + 1].any())
    y_al, x_al = sig(Pp + 2, "y_al"), sig(Pp + 2, "x_al")
    m.d.comb += [y_al.eq(Cat(sticky, z[D + 1:D + Pp + 2])), x_al.eq(Cat(Const(0, low), mx))]

    # ---- add / subtract
    sub, sgn = sig(1, "sub"), sig(1, "sgn")
    diff, s = sig(signed(N + 1), "diff"), sig(N, "sum")
    m.d.comb += [
        sub.eq(sx ^ sy),
        diff.eq(x_al - y_al),
        s.eq(Mux(sub, Mux(diff < 0, -diff, diff), x_al + y_al)),
        sgn.eq(sx ^ (sub & (diff < 0))),
    ]

    # ---- normalise, round to nearest even at 24 bits
    lz2 = lzc(m, s, prefix + "lz_s")
    sn = sig(N, "norm")
    m.d.comb += sn.eq((s << lz2)[:N])
    sig24, g, st = sn[N - 24:N], sn[N - 25], sn[:N - 25].any()
    inc, sig25 = sig(1, "inc"), sig(25, "rnd")
    top = sig(signed(_XB), "top")   # exponent of the rounded result's leading bit
    m.d.comb += [inc.eq(0 if fault == "trunc" else g & (st | sig24[0])),
                 sig25.eq(sig24 + inc),
                 top.eq(ex + 1 - lz2 + sig25[24])]
    mant = Mux(sig25[24], 0, sig25[:23])

    # ---- range checks and result
    r, ovf = sig(32, "r"), sig(1, "ovf")
    m.d.comb += [
        r.eq(Mux(a_nan | nan, FP32_NAN,
             Mux((s == 0) | (top < -126), 0,
             Mux(top > 127, Cat(Const(FP32_MAX, 31), sgn),
                 Cat(mant, (top + 127)[:8], sgn))))),
        ovf.eq(~(a_nan | nan) & (s != 0) & (top > 127)),
    ]
    return r, ovf
