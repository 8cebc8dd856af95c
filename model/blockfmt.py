"""Golden numerics of the block formats and a cycle-exact model of the block post-processing
stage, written from ``docs/blockfmt.md`` (encodings: :mod:`spec.blockfmt`).

Numerics (numpy, vectorised, bit-exact to the contract):

* :func:`quantise_bfp16`, :func:`quantise_mxint8`: floats -> significands + exponent codes
  (OCP MX v1.0 section 6.3 conversion; BFP16-64 the same with 64-element blocks);
  :func:`quantise_q4_1` (GGUF's own quantiser), :func:`q4_1_from_gguf` (raw GGUF blocks);
  :func:`dequantise`, :func:`dequantise_q4_1`.
* :func:`block_dots`: the macro's integer block dot products (a tile is one block).
* :func:`beat_terms`: the exact scaled term(s) of one block per column.
* :func:`fused_add`: ``R(acc + T)``, binary32 round-to-nearest-even of the exact sum,
  saturating, flushing results below 2**-126 to +0, NaN sticky.
* :func:`apply_beat`, :func:`reduce_blocks`, :func:`block_matmul`: scales applied and blocks
  accumulated in order, as the stage does.

:class:`PostModel` is the cycle-exact stage (``reset``/``step``/``state``, the
:class:`model.interface.GoldenModel` protocol).
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from model.interface import check_inputs
from model.numerics import unpack_signed
from spec.blockfmt import (E8M0_NAN, EXP_BIAS, FORMATS, FP32_MAX, FP32_NAN, FRAC_BITS, Fmt,
                           PostErr, PostParams, fmt_of, post_in_fields, post_out_fields,
                           post_sw_fields)
from spec.params import check_word, width

__all__ = ["quantise_bfp16", "quantise_mxint8", "quantise_q4_1", "q4_1_from_gguf",
           "dequantise", "dequantise_q4_1", "block_dots", "beat_terms", "fused_add",
           "apply_beat", "reduce_blocks", "block_matmul", "fp32_value", "scale_word_error",
           "PostModel", "PostOut"]

_FLT_MAX = float(np.array(FP32_MAX, np.uint32).view(np.float32))
_FLT_MIN = 2.0 ** -126
_OFF = EXP_BIAS + FRAC_BITS          # 133: code e of an s1.6 significand scales by 2**(e-133)


# --- quantisation --------------------------------------------------------------------------
def _blocks(name: str, v, block: int) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype.kind not in "fiu" or a.ndim < 1 or a.shape[-1] == 0:
        raise ValueError(f"{name}: values must be a non-empty numeric array, got dtype "
                         f"{a.dtype} shape {a.shape}")
    if a.shape[-1] % block:
        raise ValueError(f"{name}: last dimension {a.shape[-1]} is not a multiple of the "
                         f"block size {block}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ValueError(f"{name}: non-finite value {float(a[bad])!r} at {bad}")
    return a.reshape(a.shape[:-1] + (a.shape[-1] // block, block))


def _quantise_shared(name, v, block, emax_code):
    b = _blocks(name, v, block)
    amax = np.abs(b).max(axis=-1)
    _, ex = np.frexp(amax)                                 # amax = f * 2**ex, f in [0.5, 1)
    shared = np.where(amax > 0, ex - 1, -EXP_BIAS)         # floor(log2 amax); zero block: min
    shared = np.clip(shared, -EXP_BIAS, emax_code - EXP_BIAS)
    q = np.rint(np.ldexp(b, (FRAC_BITS - shared)[..., None]))   # exact scaling, ties to even
    q = np.clip(q, -127, 127).astype(np.int8)              # saturate to the max normal
    return q.reshape(np.shape(v)), (shared + EXP_BIAS).astype(np.uint8)


def quantise_mxint8(v):
    """MXINT8 (OCP MX v1.0 section 6.3, emax_elem = 0 for INT8) along the last axis.

    ``shared = floor(log2(max|V|))`` clamped to -127..127 (an all-zero block gets -127);
    ``P = clip(rint(V / 2**shared * 64), -127, 127)`` (ties to even; -128 is never produced).
    Returns (int8 codes of v's shape, uint8 E8M0 codes [..., K/32]).  ValueError on a
    non-finite value or a length that is not a multiple of 32.
    """
    return _quantise_shared("quantise_mxint8", v, FORMATS[Fmt.MXINT8].block, 254)


def quantise_bfp16(v):
    """BFP16-64 along the last axis: as :func:`quantise_mxint8` with 64-element blocks and an
    8-bit exponent whose codes 0..255 are all numbers (shared clamped to -127..128)."""
    return _quantise_shared("quantise_bfp16", v, FORMATS[Fmt.BFP16].block, 255)


def dequantise(fmt, codes, exps) -> np.ndarray:
    """float64 values ``codes * 2**(e - 133)`` of BFP16 / MXINT8 (an E8M0 NaN code gives NaN)."""
    fmt = fmt_of(fmt)
    if fmt not in (Fmt.BFP16, Fmt.MXINT8):
        raise ValueError(f"dequantise: fmt={fmt.name} must be BFP16 or MXINT8")
    f = FORMATS[fmt]
    c = np.asarray(codes, np.float64)
    e = np.asarray(exps).astype(np.int64)
    if c.shape[:-1] + (c.shape[-1] // f.block,) != e.shape or c.shape[-1] % f.block:
        raise ValueError(f"dequantise: codes shape {c.shape} and exps shape {e.shape} do not "
                         f"match blocks of {f.block}")
    v = np.ldexp(c.reshape(e.shape + (f.block,)), (e - _OFF)[..., None])
    if f.exp_nan is not None:
        v = np.where((e == f.exp_nan)[..., None], np.nan, v)
    return v.reshape(c.shape)


def q4_1_from_gguf(raw) -> tuple[np.ndarray, np.ndarray]:
    """Raw GGUF Q4_1 rows (uint8 [N, nb*20]: per block fp16 d, fp16 m, 16 bytes of nibbles,
    element j in the low nibble of byte j, element j+16 in the high one) -> (q uint8 [N, 32nb]
    in 0..15, scale words uint32 [N, nb] = d | m << 16)."""
    r = np.asarray(raw)
    if r.dtype != np.uint8 or r.ndim != 2 or r.shape[1] % 20 or not r.size:
        raise ValueError(f"q4_1_from_gguf: raw must be uint8 [N, nb*20], got {r.dtype} "
                         f"{r.shape}")
    b = r.reshape(r.shape[0], -1, 20)
    words = b[..., :4].copy().view("<u4")[..., 0].astype(np.uint32)
    qs = b[..., 4:]
    q = np.concatenate([qs & 15, qs >> 4], axis=-1).reshape(r.shape[0], -1)
    return q.astype(np.uint8), words


def quantise_q4_1(w) -> tuple[np.ndarray, np.ndarray]:
    """Float weights [N, K] -> Q4_1 (q, words) with GGUF's reference quantiser."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize
    b = _blocks("quantise_q4_1", w, 32)
    if b.ndim != 3:
        raise ValueError(f"quantise_q4_1: weights must be 2-D [N, K], got shape {np.shape(w)}")
    raw = quantize(np.asarray(w, np.float32), GGMLQuantizationType.Q4_1)
    return q4_1_from_gguf(raw.reshape(b.shape[0], -1))


def _fp16(words, shift) -> np.ndarray:
    return ((np.asarray(words, np.uint32) >> shift) & 0xFFFF).astype(np.uint16) \
        .view(np.float16).astype(np.float64)


def dequantise_q4_1(q, words) -> np.ndarray:
    """float64 weights ``d * q + m`` (exact: the products of the fp16 values and 0..15)."""
    q = np.asarray(q, np.float64)
    w = np.asarray(words, np.uint32)
    if q.ndim != 2 or w.shape != (q.shape[0], q.shape[1] // 32) or q.shape[1] % 32:
        raise ValueError(f"dequantise_q4_1: q {q.shape} / words {w.shape} are not [N, 32nb] "
                         f"/ [N, nb]")
    qb = q.reshape(w.shape + (32,))
    return (_fp16(w, 0)[..., None] * qb + _fp16(w, 16)[..., None]).reshape(q.shape)


# --- the macro's block dot products ---------------------------------------------------------
def block_dots(xq, wq, block: int) -> np.ndarray:
    """Exact integer dot products per block: ``xq`` [T, K], ``wq`` [N, K] (the codes the macro
    holds) -> int64 [nb, T, N], nb = K / block.  BLAS in float32 when every partial sum is
    below 2**24, else float64 (exact below 2**53)."""
    x, w = np.asarray(xq), np.asarray(wq)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1] or x.shape[1] % block:
        raise ValueError(f"block_dots: xq {x.shape} and wq {w.shape} must be [T, K] and "
                         f"[N, K] with K a multiple of {block}")
    nb = x.shape[1] // block
    bound = block * float(np.abs(x).max(initial=0)) * float(np.abs(w).max(initial=0))
    dt = np.float32 if bound < 2 ** 24 else np.float64       # exact either way
    xb = np.ascontiguousarray(x.astype(dt).reshape(x.shape[0], nb, block).transpose(1, 0, 2))
    wb = np.ascontiguousarray(w.astype(dt).reshape(w.shape[0], nb, block).transpose(1, 2, 0))
    return np.matmul(xb, wb).astype(np.int64)


# --- scale application and the binary32 accumulator ---------------------------------------
def fp32_value(bits) -> np.ndarray:
    """float64 values of binary32 codes."""
    return np.asarray(bits, np.uint32).view(np.float32).astype(np.float64)


def beat_terms(fmt, y, xs, xsum, words) -> tuple[list[np.ndarray], np.ndarray]:
    """The exact term(s) of one block, per column, and the NaN mask (all broadcast together).

    NONE ``[y]``; BFP16 / MXINT8 ``[y * 2**(xs + e - 266)]`` (MXINT8: NaN where xs or e is
    0xFF); Q4_1 ``[(y + 8 xsum) * d * 2**(xs-133), xsum * m * 2**(xs-133)]`` (NaN where xs is
    0xFF), with ``y`` the dot of the stored ``q - 8``.  Every term is an exact float64.
    """
    y = np.asarray(y, np.int64)
    xs = np.asarray(xs, np.int64)
    words = np.asarray(words, np.uint32)
    fmt = fmt_of(fmt)
    if fmt == Fmt.NONE:
        return [y.astype(np.float64)], np.zeros(y.shape, bool)
    if fmt == Fmt.Q4_1:
        xsum = np.asarray(xsum, np.int64)
        e = xs - _OFF
        t1 = np.ldexp((y + 8 * xsum).astype(np.float64) * _fp16(words, 0), e)
        t2 = np.ldexp(xsum.astype(np.float64) * _fp16(words, 16), e)
        nan = np.broadcast_to(xs == E8M0_NAN, np.broadcast(t1, t2).shape)
        return [t1, t2], nan
    ew = (words & 0xFF).astype(np.int64)
    t = np.ldexp(y.astype(np.float64), xs + ew - 2 * _OFF)
    if fmt == Fmt.BFP16:
        return [t], np.zeros(t.shape, bool)
    return [t], np.broadcast_to((xs == E8M0_NAN) | (ew == E8M0_NAN), t.shape)


def fused_add(acc, t, nan=False) -> tuple[np.ndarray, np.ndarray]:
    """``R(acc + t)`` per element: ``acc`` binary32 codes (uint32), ``t`` exact float64 terms.

    The exact sum is rounded to 24 significant bits, ties to even, with an unbounded
    exponent; then a magnitude above FP32_MAX saturates to +-FP32_MAX (``ovf``), one below
    2**-126 becomes +0, and an exact zero is +0.  A NaN accumulator or ``nan`` gives FP32_NAN
    (``ovf`` 0).  Returns (uint32 codes, bool ovf).
    """
    acc = np.asarray(acc, np.uint32)
    t = np.asarray(t, np.float64)
    a = fp32_value(acc)
    with np.errstate(invalid="ignore", over="ignore"):
        s = a + t                                      # TwoSum: s + e == a + t exactly
        bp = s - a
        e = (a - (s - bp)) + (t - bp)
        mag, sg = np.abs(s), np.where(s < 0, -1.0, 1.0)
        f, ex = np.frexp(mag)
        g = np.ldexp(f, 24)                            # in [2**23, 2**24): exact
        fl = np.floor(g)
        frac = g - fl
        es = e * sg                                    # > 0: the exact magnitude is above |s|
        up = (frac > 0.5) | ((frac == 0.5) & ((es > 0) | ((es == 0) & (fl % 2 == 1))))
        r = np.ldexp(fl + up, ex - 24)                 # RNE to 24 bits, exponent unbounded
        ovf = r > _FLT_MAX
        r = np.where(ovf, _FLT_MAX, np.where(r < _FLT_MIN, 0.0, r))
        out = (sg * r).astype(np.float32).view(np.uint32)
    out = np.where(r == 0, np.uint32(0), out)
    isnan = ((acc & 0x7FFFFFFF) > 0x7F800000) | np.asarray(nan, bool) | np.isnan(s)
    return np.where(isnan, np.uint32(FP32_NAN), out).astype(np.uint32), ovf & ~isnan


def apply_beat(fmt, base, acc, y, xs, xsum, words) -> tuple[np.ndarray, np.ndarray]:
    """One beat per column: start from ``base`` codes (``acc`` 1) or +0 (``acc`` 0) and add the
    block's term(s) in order, each with one rounding.  Returns (codes, ovf of any step)."""
    terms, nan = beat_terms(fmt, y, xs, xsum, words)
    shape = np.broadcast(terms[0], np.asarray(base)).shape
    bits = np.broadcast_to(np.asarray(base, np.uint32) if acc else np.uint32(0), shape)
    ovf = np.zeros(shape, bool)
    for t in terms:
        bits, o = fused_add(bits, t, nan)
        ovf |= o
    return bits, ovf


def reduce_blocks(fmt, y, xs, xsum, words) -> tuple[np.ndarray, np.ndarray]:
    """A whole reduction as the stage runs it: block 0 with ``acc`` 0, then blocks 1.. in
    order with ``acc`` 1.  ``y`` [nb, ..., N] block dots; ``xs``, ``xsum`` [nb, ...] per input
    block; ``words`` [nb, N] weight scales.  Returns (codes [..., N], ovf [..., N])."""
    y = np.asarray(y, np.int64)
    xs, xsum, words = (np.asarray(a) for a in (xs, xsum, words))
    nb = y.shape[0]
    if xs.shape[:1] != (nb,) or xsum.shape[:1] != (nb,) or words.shape != (nb, y.shape[-1]):
        raise ValueError(f"reduce_blocks: y {y.shape}, xs {xs.shape}, xsum {xsum.shape}, "
                         f"words {words.shape} disagree on blocks / columns")
    bits, ovf = np.uint32(0), np.zeros(y.shape[1:], bool)
    for k in range(nb):
        bits, o = apply_beat(fmt, bits, k > 0, y[k], xs[k][..., None], xsum[k][..., None],
                             words[k])
        ovf |= o
    return bits, ovf


def block_matmul(fmt, xq, xs, wq, words) -> tuple[np.ndarray, np.ndarray]:
    """``x @ w.T`` through macro and stage: ``xq`` [T, K] int8 codes, ``xs`` [T, nb] exponent
    codes, ``wq`` [N, K] weight codes (Q4_1: q in 0..15), ``words`` [N, nb] scale words.
    Returns (binary32 codes [T, N], ovf [T, N])."""
    fmt = fmt_of(fmt)
    f = FORMATS[fmt]
    xq = np.asarray(xq, np.int64)
    y = block_dots(xq, np.asarray(wq, np.int64) - f.q_offset, f.block)
    xsum = xq.reshape(xq.shape[0], -1, f.block).sum(-1)
    return reduce_blocks(fmt, y, np.asarray(xs).T, xsum.T, np.asarray(words).T)


def scale_word_error(fmt, words) -> np.ndarray:
    """Per word: True where a scale word of ``fmt`` is BAD_SCALE (reserved bits set, or a
    Q4_1 d / m that is fp16 inf or NaN)."""
    w = np.asarray(words, np.uint32)
    fmt = fmt_of(fmt)
    if fmt == Fmt.NONE:
        return w != 0
    if fmt == Fmt.Q4_1:
        return ((w & 0x7C00) == 0x7C00) | (((w >> 16) & 0x7C00) == 0x7C00)
    return (w >> 8) != 0


# --- the cycle-exact stage -------------------------------------------------------------------
PostOut = namedtuple("PostOut", "inp_ready sw_ready out_valid out_payload err busy")
PostOut.__doc__ = "Outputs of the post-processing stage during one cycle (before the edge)."


class PostModel:
    """Cycle-exact model of the block post-processing stage (ports in ``docs/blockfmt.md``).

    ``inputs``: names and widths (bits) of :meth:`step`'s arguments.  A cycle with ``rst``
    high is ``step(...)`` then ``reset()`` (a scale write of that cycle lands; its ``err`` is
    lost).  The scale memory (``SC``, ``FMT``) is cleared only by ``reset(power_up=True)``.
    """

    def __init__(self, params: PostParams):
        if not isinstance(params, PostParams):
            raise ValueError(f"PostModel: params={params!r} is not a PostParams")
        p = self.params = params
        m = p.macro
        self._fin, self._fsw, self._fout = post_in_fields(p), post_sw_fields(p), post_out_fields(p)
        self.inputs = (("inp_valid", 1), ("inp_payload", width(self._fin)), ("sw_valid", 1),
                       ("sw_payload", width(self._fsw)), ("out_ready", 1))
        self._A, self._n, self._L, self._C = m.acc_width, m.n_out, p.lanes, p.chunks
        self.reset(power_up=True)

    def reset(self, power_up: bool = False) -> None:
        """``rst``: clear every register but the scale memory; ``power_up`` clears it too."""
        power_up = check_word("reset: power_up", power_up, 1)
        m = self.params.macro
        if power_up:
            self._SC = np.zeros((m.n_sets, m.n_out), np.uint32)
            self._FMT = [0] * m.n_sets
        self._ACC = np.zeros((m.n_acc, m.n_out), np.uint32)
        self._OVF = [0] * m.n_acc
        self._busy, self._k, self._bovf = 0, 0, 0
        self._cur = {"y": np.zeros(m.n_out, np.int64), "dst": 0, "set": 0, "acc": 0, "xs": 0,
                     "xsum": 0}
        self._out_valid, self._out_payload, self._err = 0, 0, 0
        self.cycle = 0

    def state(self) -> dict:
        """All architectural state (copies), for :func:`model.interface.state_diff`."""
        return {"SC": self._SC.copy(), "FMT": list(self._FMT), "ACC": self._ACC.copy(),
                "OVF": list(self._OVF), "busy": self._busy, "k": self._k, "bovf": self._bovf,
                "cur": {k: (v.copy() if isinstance(v, np.ndarray) else v)
                        for k, v in self._cur.items()},
                "out_valid": self._out_valid, "out_payload": self._out_payload,
                "err": self._err, "cycle": self.cycle}

    def _field(self, fields, word, name):
        f = fields[name]
        return (word >> f.offset) & ((1 << f.width) - 1)

    def step(self, inp_valid, inp_payload, sw_valid, sw_payload, out_ready) -> PostOut:
        """This cycle's outputs for these inputs (unsigned ints of the ``inputs`` widths; a
        bad one is a ValueError naming it, before any state changes), then the clock edge."""
        inp_valid, inp_payload, sw_valid, sw_payload, out_ready = check_inputs(
            self.inputs, (inp_valid, inp_payload, sw_valid, sw_payload, out_ready))
        last = self._busy and self._k == self._C - 1
        stall = last and self._out_valid and not out_ready
        inp_ready = int(not self._busy or (last and not stall))
        out = PostOut(inp_ready, 1, self._out_valid, self._out_payload, self._err, self._busy)

        # --- the clock edge.  Scale write (sw.ready is always 1), checked against cycle t.
        err = PostErr.NONE
        pending = None
        if sw_valid:
            s = self._field(self._fsw, sw_payload, "set")
            part = self._field(self._fsw, sw_payload, "part")
            fmt = self._field(self._fsw, sw_payload, "fmt")
            words = np.frombuffer(self._field(self._fsw, sw_payload, "words").to_bytes(
                4 * self._L, "little"), "<u4").astype(np.uint32)
            err = self.params.supports(fmt)
            for bad, code in ((part >= self._C, PostErr.BAD_PART),
                              (bool(scale_word_error(fmt, words).any()), PostErr.BAD_SCALE),
                              (self._busy and s == self._cur["set"], PostErr.HAZARD)):
                if err == PostErr.NONE and bad:
                    err = code
            if err == PostErr.NONE:
                pending = (s, part, fmt, words)

        fin = False
        if self._busy and not stall:               # one chunk of lanes columns, as in cycle t
            c = self._cur
            cols = slice(self._k * self._L, (self._k + 1) * self._L)
            bits, ovf = apply_beat(self._FMT[c["set"]], self._ACC[c["dst"], cols], c["acc"],
                                   c["y"][cols], c["xs"], c["xsum"], self._SC[c["set"], cols])
            self._ACC[c["dst"], cols] = bits
            self._bovf |= int(ovf.any())
            if last:
                fin = True
                d = c["dst"]
                self._OVF[d] = (self._OVF[d] if c["acc"] else 0) | self._bovf
                v = int.from_bytes(self._ACC[d].astype("<u4").tobytes(), "little")
                fo = self._fout
                self._out_payload = (v | d << fo["dst"].offset
                                     | self._OVF[d] << fo["ovf"].offset)
                self._busy = 0
            else:
                self._k += 1
        if fin:
            self._out_valid = 1
        elif self._out_valid and out_ready:
            self._out_valid = 0
        if pending is not None:
            s, part, fmt, words = pending
            self._SC[s, part * self._L:(part + 1) * self._L], self._FMT[s] = words, fmt
        if inp_valid and inp_ready:
            fi = self._fin
            ys = self._field(fi, inp_payload, "y")
            xb = self.params.xsum_bits
            xsum = self._field(fi, inp_payload, "xsum")
            self._cur = {"y": unpack_signed(ys, self._n, self._A),
                         "dst": self._field(fi, inp_payload, "dst"),
                         "set": self._field(fi, inp_payload, "set"),
                         "acc": self._field(fi, inp_payload, "acc"),
                         "xs": self._field(fi, inp_payload, "xs"),
                         "xsum": xsum - ((xsum >> (xb - 1)) << xb)}
            self._busy, self._k, self._bovf = 1, 0, 0
        self._err = int(err)
        self.cycle += 1
        return out
