"""Block formats and the post-processing stage (docs/blockfmt.md): the golden numerics against
an exact rational reference written here from the contract (``fractions.Fraction``, no numpy
float arithmetic), and the cycle model against the numerics, its timing and its errors."""
from __future__ import annotations

import math
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis import seed as hseed

from model import blockfmt as bf
from model.interface import GoldenModel, state_diff
from spec.blockfmt import (FP32_MAX, FP32_NAN, BlockFormat, Fmt, PostErr, PostParams, fmt_of,
                           post_in_fields, post_sw_fields, scale_fields)
from spec.params import MacroParams, pack, pack_vec

FLT_MAX = (2 - F(1, 1 << 23)) * F(2) ** 127
NAN = "nan"


# --- the reference: exact rationals -------------------------------------------------------
def ref_round(z: F) -> tuple[int, bool]:
    """binary32 code of RNE(z) with unbounded exponent, saturating, flushing below 2**-126."""
    if z == 0:
        return 0, False
    sign, a = (1, -z) if z < 0 else (0, z)
    k = a.numerator.bit_length() - a.denominator.bit_length()
    while a >= F(2) ** (k + 1):
        k += 1
    while a < F(2) ** k:
        k -= 1
    q = a / F(2) ** (k - 23)
    n = math.floor(q)
    if q - n > F(1, 2) or (q - n == F(1, 2) and n % 2):
        n += 1
    if n == 1 << 24:
        n, k = 1 << 23, k + 1
    if n * F(2) ** (k - 23) > FLT_MAX:
        return sign << 31 | FP32_MAX, True
    if k < -126:
        return 0, False
    return sign << 31 | (k + 127) << 23 | (n - (1 << 23)), False


def ref_value(bits: int):
    if bits & 0x7FFFFFFF > 0x7F800000:
        return NAN
    e, m = (bits >> 23) & 255, bits & ((1 << 23) - 1)
    assert 0 < e < 255 or (e == 0 and m == 0), "the accumulator never holds these"
    v = 0 if e == 0 else (m + (1 << 23)) * F(2) ** (e - 150)
    return -v if bits >> 31 else F(v)


def ref_fp16(code: int) -> F:
    e, m = (code >> 10) & 31, code & 1023
    v = m * F(2) ** -24 if e == 0 else (m + 1024) * F(2) ** (e - 25)
    return -v if code >> 15 else v


def ref_terms(fmt, y, xs, xsum, word):
    if fmt == Fmt.NONE:
        return [F(y)]
    if fmt == Fmt.Q4_1:
        if xs == 255:
            return NAN
        s = F(2) ** (xs - 133)
        return [(y + 8 * xsum) * ref_fp16(word & 0xFFFF) * s, xsum * ref_fp16(word >> 16) * s]
    e = word & 255
    if fmt == Fmt.MXINT8 and 255 in (xs, e):
        return NAN
    return [y * F(2) ** (xs + e - 266)]


def ref_apply(fmt, base, acc, y, xs, xsum, word) -> tuple[int, bool]:
    bits, ovf = (base if acc else 0), False
    terms = ref_terms(fmt, y, xs, xsum, word)
    if terms == NAN or ref_value(bits) == NAN:
        return FP32_NAN, False
    for t in terms:
        bits, o = ref_round(ref_value(bits) + t)
        ovf |= o
    return bits, ovf


def ref_quantise(v: list[float], emax_code: int) -> tuple[list[int], int]:
    amax = max(abs(F(x)) for x in v)
    if amax == 0:
        shared = -127
    else:
        shared = amax.numerator.bit_length() - amax.denominator.bit_length()
        while F(2) ** shared > amax:
            shared -= 1
        while F(2) ** (shared + 1) <= amax:
            shared += 1
        shared = min(max(shared, -127), emax_code - 127)
    out = []
    for x in v:
        q = F(x) * F(2) ** (6 - shared)
        n = math.floor(q)
        if q - n > F(1, 2) or (q - n == F(1, 2) and n % 2):
            n += 1
        out.append(min(127, max(-127, n)))
    return out, shared + 127


# --- strategies ----------------------------------------------------------------------------
def acc_codes():
    normal = st.builds(lambda s, e, m: s << 31 | e << 23 | m, st.integers(0, 1),
                       st.integers(1, 254), st.integers(0, (1 << 23) - 1))
    return st.one_of(normal, st.sampled_from([0, 0x3F800000, FP32_MAX, 1 << 31 | FP32_MAX,
                                              0x00800000, FP32_NAN]))


def terms():
    return st.builds(lambda i, e: (i, e), st.integers(-(1 << 45), 1 << 45),
                     st.integers(-300, 290))


def _run(seed, n, strategy, check):
    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None)
    @given(strategy)
    def run(case):
        check(case)
    run()


# --- the accumulator primitive ----------------------------------------------------------------
def test_fused_add_matches_rational_reference(seed):
    def check(case):
        a, (i, e) = case
        t = math.ldexp(i, e)
        assert t == F(i) * F(2) ** e              # exact in float64 (< 2**46 significand)
        got, ovf = bf.fused_add(np.uint32(a), t)
        if ref_value(a) == NAN:
            assert int(got) == FP32_NAN and not ovf
        else:
            assert (int(got), bool(ovf)) == ref_round(ref_value(a) + F(i) * F(2) ** e)
    _run(seed, 400, st.tuples(acc_codes(), terms()), check)


@pytest.mark.parametrize("a,t,want", [
    (1.0, 2.0 ** -24, 0x3F800000),                      # tie -> even (down)
    (1.0 + 2.0 ** -23, 2.0 ** -24, 0x3F800002),         # tie -> even (up)
    (1.0, 2.0 ** -24 + 2.0 ** -76, 0x3F800001),         # float64 sum is a tie; exact is above
    (1.0, -(2.0 ** -25 + 2.0 ** -77), 0x3F7FFFFF),      # float64 sum a tie; exact below it
    (1.5, -1.5, 0),                                     # exact zero is +0
    (0.0, -(2.0 ** -127), 0),                           # flushed to +0, no -0
    (0.0, 2.0 ** -126, 0x00800000),                     # smallest normal kept
    (0.0, 2.0 ** 128, FP32_MAX),                        # saturates
])
def test_fused_add_corner_cases(a, t, want):
    code = int(np.array(a, np.float32).view(np.uint32))
    if t in (2.0 ** -24 + 2.0 ** -76, -(2.0 ** -25 + 2.0 ** -77)):
        assert F(a + t) != F(a) + F(t)                          # the float64 sum is inexact
    got, ovf = bf.fused_add(np.uint32(code), t)
    assert int(got) == want == ref_round(ref_value(code) + F(t))[0]
    assert bool(ovf) == (t == 2.0 ** 128)


# --- scale application per format ---------------------------------------------------------------
WORD = {Fmt.NONE: st.just(0), Fmt.BFP16: st.integers(0, 255), Fmt.MXINT8: st.integers(0, 255),
        Fmt.Q4_1: st.builds(lambda d, m: d | m << 16, *[st.integers(0, 0xFFFF).filter(
            lambda c: (c & 0x7C00) != 0x7C00)] * 2)}
EXP = st.one_of(st.integers(0, 255), st.sampled_from([0, 1, 127, 254, 255]))


@pytest.mark.parametrize("fmt", list(Fmt))
def test_apply_beat_matches_rational_reference(fmt, seed):
    y_ = st.one_of(st.integers(-(1 << 27), (1 << 27) - 1), st.sampled_from([0, 1, -1]))

    def check(c):
        base, acc, y, xs, xsum, word = c
        got, ovf = bf.apply_beat(fmt, np.uint32(base), acc, np.int64(y), xs, xsum,
                                 np.uint32(word))
        assert (int(got), bool(ovf)) == ref_apply(fmt, base, acc, y, xs, xsum, word)
    _run(seed, 300, st.tuples(acc_codes(), st.integers(0, 1), y_, EXP,
                              st.integers(-4096, 4095), WORD[fmt]), check)


def test_block_term_is_the_exact_dequantised_dot(seed):
    rng = np.random.default_rng(seed)
    for fmt, quant in ((Fmt.BFP16, bf.quantise_bfp16), (Fmt.MXINT8, bf.quantise_mxint8)):
        x, w = rng.normal(size=(1, 64)) * 2.0 ** rng.integers(-60, 60, 2)[:, None]
        (xq, xs), (wq, ws) = quant(x), quant(w)
        xd, wd = bf.dequantise(fmt, xq, xs), bf.dequantise(fmt, wq, ws)
        y = bf.block_dots(xq[None], wq[None], len(x) // len(xs))[:, 0, 0]
        for k in range(len(xs)):
            blk = slice(k * len(x) // len(xs), (k + 1) * len(x) // len(xs))
            want = sum(F(a) * F(b) for a, b in zip(xd[blk], wd[blk], strict=True))
            assert ref_terms(fmt, int(y[k]), int(xs[k]), 0, int(ws[k])) == [want]
    wf = rng.normal(size=(1, 32)) * 0.05
    q, words = bf.quantise_q4_1(wf)
    xq, xs = bf.quantise_mxint8(rng.normal(size=32))
    y = int(bf.block_dots(xq[None], q.astype(np.int64) - 8, 32)[0, 0, 0])
    t1, t2 = ref_terms(Fmt.Q4_1, y, int(xs[0]), int(xq.astype(int).sum()), int(words[0, 0]))
    wd, xd = bf.dequantise_q4_1(q, words)[0], bf.dequantise(Fmt.MXINT8, xq, xs)
    assert t1 + t2 == sum(F(a) * F(b) for a, b in zip(wd, xd, strict=True))


def test_reduce_blocks_is_the_sequential_reference(seed):
    rng = np.random.default_rng(seed)
    nb, n = 6, 5
    for fmt in Fmt:
        y = rng.integers(-(1 << 20), 1 << 20, (nb, n))
        xs = rng.integers(100, 160, nb)
        xsum = rng.integers(-4096, 4096, nb)
        words = np.asarray(rng.integers(120, 135, (nb, n)), np.uint32)
        if fmt == Fmt.Q4_1:
            words = np.asarray(rng.integers(0x2000, 0x3000, (nb, n))
                               | rng.integers(0xA000, 0xB000, (nb, n)) << 16, np.uint32)
        got, ovf = bf.reduce_blocks(fmt, y, xs, xsum, words)
        for c in range(n):
            bits, o = 0, False
            for k in range(nb):
                bits, ok = ref_apply(fmt, bits, k > 0, int(y[k, c]), int(xs[k]), int(xsum[k]),
                                     int(words[k, c]))
                o |= ok
            assert (int(got[c]), bool(ovf[c])) == (bits, o)


def test_saturation_extreme_exponents_and_zero_blocks():
    top = bf.apply_beat(Fmt.BFP16, 0, 0, np.int64(1 << 20), 255, 0, np.uint32(255))
    assert int(top[0]) == FP32_MAX and top[1]                   # 2**20 * 2**244: saturated
    neg = bf.apply_beat(Fmt.BFP16, 0, 0, np.int64(-(1 << 20)), 255, 0, np.uint32(255))
    assert int(neg[0]) == 1 << 31 | FP32_MAX and neg[1]
    flip = bf.apply_beat(Fmt.BFP16, top[0], 1, np.int64(-(1 << 21)), 255, 0, np.uint32(255))
    assert int(flip[0]) == 1 << 31 | FP32_MAX and flip[1]
    back = bf.apply_beat(Fmt.BFP16, top[0], 1, np.int64(-(1 << 20)), 255, 0, np.uint32(118))
    assert int(back[0]) == ref_round(FLT_MAX - F(2) ** 127)[0] == 0x7EFFFFFE and not back[1]
    tiny = bf.apply_beat(Fmt.MXINT8, 0, 0, np.int64(1 << 20), 0, 0, np.uint32(0))
    assert int(tiny[0]) == 0 and not tiny[1]                    # 2**-246: flushed
    for fmt, xs, w in ((Fmt.MXINT8, 255, 127), (Fmt.MXINT8, 127, 255), (Fmt.Q4_1, 255, 0x3C00)):
        assert int(bf.apply_beat(fmt, 0x3F800000, 1, np.int64(0), xs, 0, np.uint32(w))[0]) \
            == FP32_NAN                                         # E8M0 NaN scale: NaN
    assert int(bf.apply_beat(Fmt.BFP16, 0, 0, np.int64(3), 255, 0, np.uint32(255))[0]) != 0
    z = np.zeros((2, 64))
    for quant, fmt in ((bf.quantise_bfp16, Fmt.BFP16), (bf.quantise_mxint8, Fmt.MXINT8)):
        q, e = quant(z)
        assert not q.any() and not e.any() and not bf.dequantise(fmt, q, e).any()
    assert int(bf.reduce_blocks(Fmt.MXINT8, np.zeros((3, 1), int), [127] * 3, [0] * 3,
                                np.full((3, 1), 127, np.uint32))[0][0]) == 0


@pytest.mark.parametrize("fmt", [Fmt.BFP16, Fmt.MXINT8])
def test_quantisers_match_rational_reference(fmt, seed):
    block = 64 if fmt == Fmt.BFP16 else 32
    quant = bf.quantise_bfp16 if fmt == Fmt.BFP16 else bf.quantise_mxint8
    emax = 255 if fmt == Fmt.BFP16 else 254
    val = st.one_of(st.floats(-1e300, 1e300, allow_nan=False),
                    st.sampled_from([0.0, 5e-324, -1e-45, 2.0 ** -140, 3.4e38, 1.999, -2.0,
                                     1.9921875, 1.0078125]))
    def check(v):
        q, e = quant(np.array(v))
        assert (q.tolist(), int(e[0])) == ref_quantise(v, emax)
    _run(seed, 150, st.lists(val, min_size=block, max_size=block), check)
    scale = st.sampled_from([2.0 ** k for k in (-149, -130, -60, 0, 60, 127)])
    _run(seed + 1, 50, st.tuples(scale, st.lists(st.floats(-2, 2), min_size=block,
                                                 max_size=block)),
         lambda c: check([c[0] * x for x in c[1]]))


def test_q4_1_roundtrip_with_gguf(seed):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize
    w = np.random.default_rng(seed).normal(size=(3, 96)).astype(np.float32) * 0.1
    raw = quantize(w, GGMLQuantizationType.Q4_1)
    q, words = bf.q4_1_from_gguf(raw)
    assert q.max() <= 15 and words.shape == (3, 3)
    exact = bf.dequantise_q4_1(q, words)
    assert np.array_equal(exact.astype(np.float32), dequantize(raw, GGMLQuantizationType.Q4_1))
    assert all(np.array_equal(a, b) for a, b in zip(bf.quantise_q4_1(w), (q, words),
                                                     strict=True))


def test_block_matmul_equals_reduction_of_block_dots(seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(3, 128)), rng.normal(size=(4, 128)) * 0.1
    xq, xs = bf.quantise_mxint8(x)
    q, words = bf.quantise_q4_1(w)
    got, _ = bf.block_matmul(Fmt.Q4_1, xq, xs, q, words)
    for t in range(3):
        for n in range(4):
            bits = 0
            for k in range(4):
                blk = slice(32 * k, 32 * k + 32)
                y = int(np.dot(xq[t, blk].astype(int), q[n, blk].astype(int) - 8))
                bits, _ = ref_apply(Fmt.Q4_1, bits, k > 0, y, int(xs[t, k]),
                                    int(xq[t, blk].astype(int).sum()), int(words[n, k]))
            assert int(got[t, n]) == bits
    ref = bf.dequantise(Fmt.MXINT8, xq, xs) @ bf.dequantise_q4_1(q, words).T
    assert np.allclose(bf.fp32_value(got), ref, rtol=1e-5, atol=1e-6)


# --- the cycle-exact stage ------------------------------------------------------------------
def _params(fmt=Fmt.MXINT8, n_out=8, lanes=2, n_acc=4):
    n_in, wb = {Fmt.BFP16: (64, 8), Fmt.MXINT8: (32, 8), Fmt.Q4_1: (32, 4),
                Fmt.NONE: (16, 8)}[fmt]
    return PostParams(MacroParams(n_in=n_in, n_out=n_out, w_bits=wb, x_bits=8, n_sets=2,
                                  n_acc=n_acc, tree_stages=0), lanes=lanes)


def _beat(p, y, dst, set_, acc, xs, xsum):
    xb = p.xsum_bits
    return pack(post_in_fields(p), y=pack_vec(np.asarray(y, np.int64), p.macro.acc_width),
                dst=dst, set=set_, acc=acc, xs=xs, xsum=xsum & ((1 << xb) - 1))


def _sw(p, set_, part, fmt, words):
    w = int.from_bytes(np.asarray(words, "<u4").tobytes(), "little")
    return pack(post_sw_fields(p), words=w, part=part, set=set_, fmt=int(fmt))


def _load_scales(m, p, set_, fmt, words):
    for part in range(p.chunks):
        out = m.step(0, 0, 1, _sw(p, set_, part, fmt, words[part * p.lanes:(part + 1) * p.lanes]),
                     1)
        assert out.sw_ready == 1
    assert m.step(0, 0, 0, 0, 1).err == PostErr.NONE


def _words(rng, fmt, n):
    if fmt == Fmt.Q4_1:
        return np.asarray(rng.integers(0x1800, 0x2C00, n) | rng.integers(0x9800, 0xAC00, n)
                          << 16, np.uint32)
    return np.asarray(rng.integers(110, 255, n) if fmt != Fmt.NONE else np.zeros(n), np.uint32)


@pytest.mark.parametrize("fmt", list(Fmt))
def test_stage_equals_numerics_under_backpressure(fmt, seed):
    rng = np.random.default_rng(seed)
    p = _params(fmt, n_out=8, lanes=int(rng.choice([1, 2, 4, 8])))
    m = bf.PostModel(p)
    assert isinstance(m, GoldenModel)
    words = {s: _words(rng, fmt, 8) for s in (0, 1)}
    for s in (0, 1):
        _load_scales(m, p, s, fmt, words[s])
    A = p.macro.acc_width
    beats = [dict(y=rng.integers(-(1 << (A - 2)), 1 << (A - 2), 8) >> rng.integers(0, A - 4),
                  dst=int(rng.integers(4)), set_=int(rng.integers(2)), acc=int(rng.random() < .7),
                  xs=int(rng.choice([rng.integers(100, 160), rng.integers(200, 255)])),
                  xsum=int(rng.integers(-4096, 4096)))
             for _ in range(40)]
    acc, ovf, want = np.zeros((4, 8), np.uint32), [0] * 4, []
    for b in beats:
        bits, o = bf.apply_beat(fmt, acc[b["dst"]], b["acc"], b["y"], b["xs"], b["xsum"],
                                words[b["set_"]])
        acc[b["dst"]] = bits
        ovf[b["dst"]] = (ovf[b["dst"]] if b["acc"] else 0) | int(o.any())
        want.append((int.from_bytes(bits.astype("<u4").tobytes(), "little"), b["dst"],
                     ovf[b["dst"]]))
    assert fmt == Fmt.NONE or any(w[2] for w in want)         # saturation is exercised
    got, i, t = [], 0, 0
    while len(got) < len(beats):
        valid = int(i < len(beats) and rng.random() < 0.8)
        payload = _beat(p, **beats[i]) if valid else 0
        ready = int(rng.random() < 0.6)
        o = m.step(valid, payload, 0, 0, ready)
        if o.out_valid and ready:
            got.append(o.out_payload)
        if valid and o.inp_ready:
            i += 1
        t += 1
        assert t < 4000
    f = bf.post_out_fields(p)
    dec = [(g & ((1 << 256) - 1), g >> f["dst"].offset & 3, g >> f["ovf"].offset) for g in got]
    assert dec == want


def test_stage_timing():
    p = _params(Fmt.MXINT8, n_out=8, lanes=2)                   # C = 4
    m = bf.PostModel(p)
    trace = [m.step(1, _beat(p, [1] * 8, 0, 0, 0, 127, 0), 0, 0, 1) for _ in range(12)]
    ready = [o.inp_ready for o in trace]
    valid = [o.out_valid for o in trace]
    assert ready == [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]        # one beat per C cycles
    assert valid.index(1) == 0 + p.chunks + 1                   # accepted at 0 -> out at C+1
    assert [o.busy for o in trace[:6]] == [0, 1, 1, 1, 1, 1]
    m = bf.PostModel(p)                                         # output stall at the last chunk
    beats, i, outs = [_beat(p, [d + 1] * 8, d, 0, 0, 127, 0) for d in range(3)], 0, []
    for t in range(20):
        o = m.step(int(i < 3), beats[i] if i < 3 else 0, 0, 0, int(t >= 12))
        i += int(i < 3 and o.inp_ready)
        outs.append(o)
    taken = [(t, o.out_payload >> 256 & 3) for t, o in enumerate(outs) if o.out_valid and t >= 12]
    assert taken == [(12, 0), (13, 1), (17, 2)]                 # nothing lost, in order
    assert [o.inp_ready for o in outs[:13]] == [1, 0, 0, 0, 1] + [0] * 7 + [1]


def test_scale_write_errors_change_nothing():
    p = _params(Fmt.MXINT8, n_out=6, lanes=2)                   # C = 3: part 3 is encodable
    m = bf.PostModel(p)
    ok = np.full(2, 127, np.uint32)
    cases = [(Fmt.BFP16, 0, ok, PostErr.BAD_ALIGN), (Fmt.Q4_1, 0, ok, PostErr.NONE),
             (Fmt.MXINT8, 3, ok, PostErr.BAD_PART),
             (Fmt.MXINT8, 0, np.array([127, 1 << 8], np.uint32), PostErr.BAD_SCALE),
             (Fmt.NONE, 0, ok, PostErr.BAD_SCALE)]
    for fmt, part, words, code in cases:
        before = m.state()
        m.step(0, 0, 1, _sw(p, 1, part, fmt, words), 1)
        after = m.step(0, 0, 0, 0, 1)
        assert after.err == code, (fmt, part)
        if code != PostErr.NONE:
            assert state_diff(before, m.state(), ignore=("cycle", "err")) == []
    p4 = PostParams(MacroParams(n_in=32, n_out=4, w_bits=4, n_sets=2, n_acc=2), lanes=2)
    m4 = bf.PostModel(p4)
    assert m4.step(0, 0, 1, _sw(p4, 0, 0, Fmt.MXINT8, ok), 1).err == 0
    assert m4.step(0, 0, 0, 0, 1).err == PostErr.BAD_WIDTH
    inf = np.array([0x7C00, 0x3C00 | 0xFC00 << 16], np.uint32)
    m4.step(0, 0, 1, _sw(p4, 0, 0, Fmt.Q4_1, inf), 1)
    assert m4.step(0, 0, 0, 0, 1).err == PostErr.BAD_SCALE
    m4.step(1, _beat(p4, [1] * 4, 0, 1, 0, 127, 0), 0, 0, 1)     # busy on set 1 next cycle
    m4.step(0, 0, 1, _sw(p4, 1, 0, Fmt.Q4_1, [0x3C00] * 2), 1)
    assert m4.step(0, 0, 1, _sw(p4, 0, 0, Fmt.Q4_1, [0x3C00] * 2), 1).err == PostErr.HAZARD
    assert m4.step(0, 0, 0, 0, 1).err == PostErr.NONE            # other set: lands
    assert m4.state()["SC"][1].tolist() == [0] * 4 and m4.state()["SC"][0, 0] == 0x3C00


def test_reset_keeps_scales_clears_accumulators():
    p = _params(Fmt.MXINT8, n_out=4, lanes=4)
    m = bf.PostModel(p)
    m.step(0, 0, 1, _sw(p, 0, 0, Fmt.MXINT8, [127] * 4), 1)
    m.reset()                                                   # write of the rst cycle lands
    m.step(1, _beat(p, [64] * 4, 1, 0, 0, 127, 0), 0, 0, 1)
    m.step(0, 0, 0, 0, 1)
    o = m.step(0, 0, 0, 0, 0)
    assert o.out_valid and o.err == 0
    assert o.out_payload & 0xFFFFFFFF == 0x3C800000             # 64 * 2**(127+127-266)
    m.reset()
    assert not m.state()["ACC"].any() and m.state()["FMT"][0] == Fmt.MXINT8
    m.reset(power_up=True)
    assert m.state()["FMT"] == [0, 0] and not m.state()["SC"].any()


# --- bad Python input ----------------------------------------------------------------------------
@pytest.mark.parametrize("i,value,match", [(0, 2, "inp_valid=2"), (1, -1, "inp_payload=-1"),
                                           (3, 1.5, "sw_payload=1.5"), (4, "1", "out_ready='1'"),
                                           (1, 1 << 3000, "inp_payload=")])
def test_step_rejects_bad_inputs_without_state_change(i, value, match):
    m = bf.PostModel(_params())
    m.step(0, 0, 0, 0, 1)
    before, ins = m.state(), [0, 0, 0, 0, 1]
    ins[i] = value
    with pytest.raises(ValueError, match=match):
        m.step(*ins)
    assert state_diff(before, m.state(), ignore=()) == []


def test_params_and_formats_reject_bad_values():
    with pytest.raises(ValueError, match="lanes=3"):
        PostParams(MacroParams(n_out=8), lanes=3)
    with pytest.raises(ValueError, match="lanes=0"):
        PostParams(MacroParams(n_out=8), lanes=0)
    with pytest.raises(ValueError, match="macro=1"):
        PostParams(macro=1)
    with pytest.raises(ValueError, match="block=48"):
        BlockFormat(Fmt.BFP16, 48, 8, 8, 8, 8, None, (8,))
    with pytest.raises(ValueError, match="fmt="):
        BlockFormat(Fmt.NONE, 32, 8, 8, 8, 8, None, (8,))
    with pytest.raises(ValueError, match="macro_w_bits"):
        BlockFormat(Fmt.BFP16, 64, 8, 8, 8, 8, None, (4,))
    with pytest.raises(ValueError, match="w_scale_bits"):
        BlockFormat(Fmt.MXINT8, 32, 8, 8, 32, 8, 255, (8,))
    with pytest.raises(ValueError, match="fmt='fp8'"):
        fmt_of("fp8")
    with pytest.raises(ValueError, match="fmt=4"):
        scale_fields(4)
    with pytest.raises(ValueError, match="params="):
        bf.PostModel(MacroParams())


@pytest.mark.parametrize("fn,args,match", [
    (bf.quantise_mxint8, (np.ones(33),), "multiple of the block size 32"),
    (bf.quantise_bfp16, (np.array([np.nan] + [0.0] * 63),), "non-finite value nan"),
    (bf.quantise_mxint8, (np.array(["a"] * 32),), "numeric array"),
    (bf.quantise_q4_1, (np.ones(32),), "2-D"),
    (bf.q4_1_from_gguf, (np.zeros((2, 19), np.uint8),), r"\[N, nb\*20\]"),
    (bf.dequantise, ("Q4_1", np.zeros(32), np.zeros(1)), "fmt=Q4_1"),
    (bf.dequantise, ("MXINT8", np.zeros(32), np.zeros(2)), "do not match"),
    (bf.dequantise_q4_1, (np.zeros((1, 32)), np.zeros((1, 2))), "are not"),
    (bf.block_dots, (np.zeros((1, 32)), np.zeros((2, 64)), 32), "must be"),
    (bf.reduce_blocks, (0, np.zeros((2, 3)), [0], [0, 0], np.zeros((2, 3))), "disagree"),
    (bf.apply_beat, (7, 0, 0, 0, 0, 0, 0), "fmt=7"),
])
def test_numerics_reject_bad_arguments(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)
