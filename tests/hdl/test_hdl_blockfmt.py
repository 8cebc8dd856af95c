"""Checks of hdl/blockfmt.py (and hdl/fp32acc.py) with amaranth.sim on small configurations,
plus Verilator lint.

Expected values come from the contract (docs/blockfmt.md): the worked examples, the cycle
rules of section 6, and an exact reference of the numerics written here from section 5 --
terms as ``fractions.Fraction``, the rounding ``R`` as exact round-to-nearest-even to 24
significant bits followed by the range checks (:func:`ref_round`).  The last test compares the
HDL with the golden model (``model.blockfmt.PostModel``) on random streams, every output every
cycle.
"""
from __future__ import annotations

import random
from fractions import Fraction

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from cimphony.compat import silence_unused
from hdl import hier
from hdl.blockfmt import FAULTS, BlockfmtStage
from hdl.fp32acc import ADD_FAULTS, Fp32TermAdd
from tb.amsim import simulate
from spec.blockfmt import (FP32_MAX, FP32_NAN, Fmt, PostErr, PostParams, post_in_fields,
                           post_out_fields, post_sw_fields)
from spec.params import MacroParams, pack, pack_vec, unpack, width

# n_in 32, x 8, w 8: MXINT8 and Q4_1 (and NONE); BFP16 is BAD_ALIGN.  C = 2.
P_MX = PostParams(MacroParams(n_in=32, n_out=4, w_bits=8, x_bits=8, n_acc=2), lanes=2)
# n_in 32, w 4: Q4_1 only (MXINT8 is BAD_WIDTH); A = 23.  C = 2.
P_Q4 = PostParams(MacroParams(n_in=32, n_out=4, w_bits=4, x_bits=8, n_acc=2), lanes=2)
# n_in 64: BFP16 only; C = 3 (not a power of two: BAD_PART encodable); A = 22 (guard 0).
P_BF = PostParams(MacroParams(n_in=64, n_out=3, n_acc=2, acc_guard=0), lanes=1)
# the contract's timing example: n_out 8, L 2, C 4
P_T = PostParams(MacroParams(n_in=32, n_out=8, n_acc=2), lanes=2)
# C = 1, four entries, four sets
P_C1 = PostParams(MacroParams(n_in=32, n_out=2, n_sets=4, n_acc=4), lanes=2)
# x_bits 4: every block format BAD_WIDTH or BAD_ALIGN
P_X4 = PostParams(MacroParams(n_in=32, n_out=2, x_bits=4, n_acc=2), lanes=2)

TWO = Fraction(2)
FP32_MAX_V = (2 - TWO ** -23) * TWO ** 127


# ------------------------------------------------------------------ exact reference
def f32(code: int):
    """Value of a binary32 code as a Fraction (None for NaN / infinity)."""
    e, f = (code >> 23) & 0xFF, code & 0x7FFFFF
    s = -1 if code >> 31 else 1
    if e == 0xFF:
        return None
    if e == 0:
        return s * f * TWO ** -149
    return s * (f | 1 << 23) * TWO ** (e - 150)


def ref_round(z: Fraction) -> tuple[int, int]:
    """(code, overflowed) of the exact sum ``z`` per section 5 steps 2-4."""
    if z == 0:
        return 0, 0
    s, az = int(z < 0), abs(z)
    k = az.numerator.bit_length() - az.denominator.bit_length()
    if TWO ** k > az:
        k -= 1
    assert TWO ** k <= az < TWO ** (k + 1)
    sc = az / TWO ** (k - 23)
    q = sc.numerator // sc.denominator
    rem = sc - q
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and q & 1):
        q += 1
    if q == 1 << 24:
        q, k = 1 << 23, k + 1
    r = q * TWO ** (k - 23)
    if r > FP32_MAX_V:
        return s << 31 | FP32_MAX, 1
    if r < TWO ** -126:
        return 0, 0
    return s << 31 | (k + 127) << 23 | (q - (1 << 23)), 0


def ref_add(a: int, t: Fraction, nan: bool) -> tuple[int, int]:
    """``R(a + t)`` (section 5): (code, overflowed)."""
    av = f32(a)
    if nan or av is None:
        return FP32_NAN, 0
    return ref_round(av + t)


def fp16(h: int) -> Fraction:
    """Value of a binary16 code with a finite exponent field (section 5)."""
    s = -1 if h >> 15 & 1 else 1
    e, f = h >> 10 & 31, h & 1023
    return s * (f * TWO ** -24 if e == 0 else (1024 + f) * TWO ** (e - 25))


def ref_terms(fmt: int, y: int, xs: int, xsum: int, w: int) -> tuple[list[Fraction], bool]:
    """The terms of one column and whether the beat is NaN (section 5's table)."""
    if fmt == Fmt.NONE:
        return [Fraction(y)], False
    if fmt in (Fmt.BFP16, Fmt.MXINT8):
        e = w & 0xFF
        return [y * TWO ** (xs + e - 266)], fmt == Fmt.MXINT8 and (xs == 255 or e == 255)
    d, mm = fp16(w & 0xFFFF), fp16(w >> 16)
    return [(y + 8 * xsum) * d * TWO ** (xs - 133), xsum * mm * TWO ** (xs - 133)], xs == 255


def scale_bad(fmt: int, w: int) -> bool:
    if fmt == Fmt.NONE:
        return w != 0
    if fmt in (Fmt.BFP16, Fmt.MXINT8):
        return w >> 8 != 0
    return (w >> 10 & 31) == 31 or (w >> 26 & 31) == 31


class Ref:
    """Beat-level reference of the stage's state (no timing): SC, FMT, ACC, OVF."""

    def __init__(self, p: PostParams):
        self.p = p
        n, S, E = p.macro.n_out, p.macro.n_sets, p.macro.n_acc
        self.sc = [[0] * n for _ in range(S)]
        self.fmt = [0] * S
        self.acc = [[0] * n for _ in range(E)]
        self.ovf = [0] * E

    def write(self, words, part, set_, fmt, busy_set=None) -> int:
        p = self.p
        code = p.supports(fmt)
        if not code and part >= p.chunks:
            code = PostErr.BAD_PART
        if not code and any(scale_bad(fmt, w) for w in words):
            code = PostErr.BAD_SCALE
        if not code and busy_set == set_:
            code = PostErr.HAZARD
        if not code:
            for j, w in enumerate(words):
                self.sc[set_][part * p.lanes + j] = w
            self.fmt[set_] = fmt
        return int(code)

    def reset(self):
        self.acc = [[0] * len(r) for r in self.acc]
        self.ovf = [0] * len(self.ovf)

    def beat(self, y, dst, set_, acc, xs, xsum):
        """(v codes, dst, ovf) of the output beat."""
        f, bovf = self.fmt[set_], 0
        for c in range(self.p.macro.n_out):
            a = self.acc[dst][c] if acc else 0
            terms, nan = ref_terms(f, y[c], xs, xsum, self.sc[set_][c])
            for t in terms:
                a, o = ref_add(a, t, nan)
                bovf |= o
            self.acc[dst][c] = a
        self.ovf[dst] = (self.ovf[dst] if acc else 0) | bovf
        return list(self.acc[dst]), dst, self.ovf[dst]


# ------------------------------------------------------------------ harness
class Stage:
    """Cycle driver: ``step`` drives inp / sw / out.ready / rst, samples every output, ticks."""

    def __init__(self, ctx, dut, rst, p):
        self.ctx, self.dut, self.rst, self.p = ctx, dut, rst, p
        self.cycle = 0
        self.log = []             # per cycle: dict of the outputs
        self.outs = []            # (cycle, (v, dst, ovf)) of every out beat taken

    def sample(self):
        d, g = self.dut, self.ctx.get
        return {"inp_ready": g(d.inp.ready), "sw_ready": g(d.sw.ready),
                "out_valid": g(d.out.valid), "out_payload": g(d.out.payload.as_value()),
                "err": g(d.err), "busy": g(d.busy)}

    async def step(self, inp=None, sw=None, out_ready=1, rst=0):
        """One cycle; returns (inp accepted, sw accepted)."""
        ctx, d = self.ctx, self.dut
        ctx.set(d.inp.valid, inp is not None)
        ctx.set(d.inp.payload.as_value(), inp or 0)
        ctx.set(d.sw.valid, sw is not None)
        ctx.set(d.sw.payload.as_value(), sw or 0)
        ctx.set(d.out.ready, out_ready)
        ctx.set(self.rst, rst)
        o = self.sample()
        self.log.append(o)
        if o["out_valid"] and out_ready:
            self.outs.append((self.cycle, self.decode(o["out_payload"])))
        await ctx.tick()
        self.cycle += 1
        return inp is not None and bool(o["inp_ready"]), sw is not None

    async def idle(self, n=1, out_ready=1):
        for _ in range(n):
            await self.step(out_ready=out_ready)

    async def issue(self, inp, limit=200, out_ready=1):
        """Hold ``inp`` valid until accepted; returns the accept cycle."""
        for _ in range(limit):
            if (await self.step(inp, out_ready=out_ready))[0]:
                return self.cycle - 1
        raise AssertionError("beat not accepted")

    async def drain(self, n_outs, limit=400):
        for _ in range(limit):
            if len(self.outs) >= n_outs:
                return
            await self.step()
        raise AssertionError(f"{len(self.outs)} of {n_outs} outputs")

    # payloads
    def beat(self, y, dst=0, set_=0, acc=0, xs=127, xsum=0):
        p = self.p
        return pack(post_in_fields(p), y=pack_vec(list(y), p.macro.acc_width), dst=dst,
                    set=set_, acc=acc, xs=xs, xsum=xsum & ((1 << p.xsum_bits) - 1))

    def sw(self, words, part=0, set_=0, fmt=Fmt.NONE):
        return sw_word(self.p, words, part, set_, fmt)

    def decode(self, word):
        f = unpack(post_out_fields(self.p), word)
        n = self.p.macro.n_out
        return [(f["v"] >> 32 * c) & 0xFFFFFFFF for c in range(n)], f["dst"], f["ovf"]

    async def write_set(self, words, set_=0, fmt=Fmt.NONE):
        """Write all n_out scale words of ``set_`` (C beats, one per cycle); returns their
        err codes (each seen in the cycle after its beat)."""
        L, c0 = self.p.lanes, self.cycle
        for part in range(self.p.chunks):
            await self.step(sw=self.sw(words[part * L:(part + 1) * L], part, set_, fmt))
        await self.step()
        return [self.log[c0 + 1 + i]["err"] for i in range(self.p.chunks)]


def sw_word(p, words, part=0, set_=0, fmt=Fmt.NONE):
    return pack(post_sw_fields(p), words=sum(w << 32 * j for j, w in enumerate(words)),
                part=part, set=set_, fmt=int(fmt))


def run(p, body, fault=None):
    """Simulate ``body(stage)`` on a BlockfmtStage(p) driven through an explicit sync domain."""
    dut = BlockfmtStage(p, fault=fault)
    return simulate(dut, lambda ctx, rst: body(Stage(ctx, dut, rst, p)))


async def run_ops(st, ref, ops, rng=None, ready_p=1.0):
    """Play ``ops`` (("sw", words, part, set, fmt) / ("inp", y, dst, set, acc, xs, xsum)) in
    order, a scale write only when the stage is idle, with out.ready random (probability
    ``ready_p``); checks every err code and every output beat against ``ref``.  Returns the
    number of output beats checked."""
    expect = []
    for op in ops:
        if op[0] == "sw":
            _, words, part, set_, fmt = op
            while st.sample()["busy"]:
                await st.step(out_ready=int(rng.random() < ready_p) if rng else 1)
            want = ref.write(words, part, set_, fmt)
            await st.step(sw=st.sw(words, part, set_, fmt))
            await st.step(out_ready=int(rng.random() < ready_p) if rng else 1)
            assert st.log[-1]["err"] == want, (op, st.log[-1]["err"], want)
        else:
            _, y, dst, set_, acc, xs, xsum = op
            word = st.beat(y, dst, set_, acc, xs, xsum)
            expect.append(ref.beat(y, dst, set_, acc, xs, xsum))
            while not (await st.step(word, out_ready=int(rng.random() < ready_p)
                                     if rng else 1))[0]:
                pass
    await st.drain(len(expect))
    got = [o for _, o in st.outs]
    assert len(got) == len(expect)
    for i, (g, e) in enumerate(zip(got, expect)):
        assert g == e, (f"beat {i}: got {[hex(v) for v in g[0]]} dst {g[1]} ovf {g[2]}, "
                        f"expected {[hex(v) for v in e[0]]} dst {e[1]} ovf {e[2]}")
    return len(expect)


# ------------------------------------------------------------------ worked examples
def test_worked_examples():
    """Section 5's examples through the stage."""
    async def bf(st):
        await st.write_set([120, 255, 0], 0, Fmt.BFP16)
        await st.write_set([0, 0, 0], 1, Fmt.NONE)
        # BFP16 y = 12345, xs = 130, e = 120: 12345 * 2**-16; y = 2**20, xs = e = 255: saturates
        await st.issue(st.beat([12345, 1 << 20, 7], dst=0, set_=0, xs=130))
        await st.drain(1)
        # column 1: 2**(20 + 130 + 255 - 266) saturates; column 2: 7 * 2**-136 flushes to +0
        assert st.outs[-1][1] == ([0x3E40E400, 0x7F7FFFFF, 0], 0, 1)
        await st.issue(st.beat([0, 1 << 20, 0], dst=1, set_=0, xs=255))
        await st.drain(2)
        v, dst, ovf = st.outs[-1][1]
        assert (v[1], dst, ovf) == (0x7F7FFFFF, 1, 1)
        # a = 1.0 (NONE), then T = 2**-24 (a tie: even) and 2**-24 + 2**-44 (not a tie)
        await st.issue(st.beat([1, 1, 1], dst=0, set_=1))
        await st.write_set([21, 1, 1], 0, Fmt.BFP16)      # xs = 221: 2**-24 and 2**-44 grids
        await st.issue(st.beat([1, (1 << 20) + 1, 0], dst=0, set_=0, acc=1, xs=221))
        await st.drain(4)
        assert st.outs[-1][1] == ([0x3F800000, 0x3F800001, 0x3F800000], 0, 0)
    run(P_BF, bf)

    async def mx(st):
        await st.write_set([0, 0, 0x2E66 | 0xAE66 << 16, 0x2E66 | 0xAE66 << 16], 0, Fmt.Q4_1)
        await st.write_set([0, 0, 0, 0], 1, Fmt.MXINT8)
        # Q4_1 d = 0x2E66, m = 0xAE66, y = -300, xsum = 100, xs = 127: 0x3F1FF600
        await st.issue(st.beat([0, 0, -300, -300], dst=0, set_=0, xs=127, xsum=100))
        # MXINT8 y = 2**20, xs = e = 0 (2**-246): +0
        await st.issue(st.beat([1 << 20, -(1 << 20), 0, 1], dst=1, set_=1, xs=0))
        await st.drain(2)
        assert st.outs[0][1] == ([0, 0, 0x3F1FF600, 0x3F1FF600], 0, 0)
        assert st.outs[1][1] == ([0, 0, 0, 0], 1, 0)
    run(P_MX, mx)


# ------------------------------------------------------------------ parameters and ports
def test_params_and_fault_validated():
    with pytest.raises(ValueError, match="params=42"):
        BlockfmtStage(42)
    with pytest.raises(ValueError, match="bogus"):
        BlockfmtStage(P_MX, fault="bogus")
    with pytest.raises(ValueError, match="term_bits=0"):
        Fp32TermAdd(0)
    with pytest.raises(ValueError, match="fault='no_hazard'"):
        Fp32TermAdd(8, fault="no_hazard")
    assert BlockfmtStage.verilog_name == "blockfmt_stage"
    assert set(ADD_FAULTS) < set(FAULTS)


@pytest.mark.parametrize("p", [P_MX, P_Q4, P_BF, P_C1, PostParams()],
                         ids=["mx", "q4", "bf", "c1", "default"])
def test_ports_match_spec(p):
    dut = silence_unused(BlockfmtStage(p))          # inspected, not elaborated
    ports = {n: (k, len(v)) for n, (k, v) in hier.signature_ports(dut).items()}
    assert ports == {
        "inp__valid": ("i", 1), "inp__ready": ("o", 1),
        "inp__payload": ("i", width(post_in_fields(p))),
        "sw__valid": ("i", 1), "sw__ready": ("o", 1),
        "sw__payload": ("i", width(post_sw_fields(p))),
        "out__valid": ("o", 1), "out__ready": ("i", 1),
        "out__payload": ("o", width(post_out_fields(p))),
        "err": ("o", 3), "busy": ("o", 1)}
    for port, fields in ((dut.inp, post_in_fields(p)), (dut.sw, post_sw_fields(p)),
                         (dut.out, post_out_fields(p))):
        lay = port.payload.shape()
        for f in fields.values():
            assert (lay[f.name].offset, lay[f.name].width) == (f.offset, f.width)
    if p == PostParams():
        assert (width(post_in_fields(p)), width(post_sw_fields(p)),
                width(post_out_fields(p))) == (1820, 262, 2053)


# ------------------------------------------------------------------ the adder alone
def _adder_vectors(W: int) -> list[tuple[int, int, int, int, int]]:
    """Targeted (a, t_neg, t_mag, t_exp, nan) vectors for a W-bit term."""
    one, one_up = 0x3F800000, 0x3F800001
    top = (1 << W) - 1
    v = [
        (one, 0, 1, -24, 0),                    # tie: stays 1.0 (even)
        (one_up, 0, 1, -24, 0),                 # tie: up to 1 + 2 ulp (even)
        (one, 1, 1, -25, 0),                    # 1 - 2**-25: tie below 1.0 -> 1.0
        (one, 1, 1, -24, 0),                    # 1 - 2**-24 exact
        (one_up, 1, 1 << 20, -20, 0),           # (1 + 2**-23) - 1: 2**-23 exactly
        (one, 1, 1 << 20, -20, 0),              # x - x = +0
        (0xBF800000, 0, 1, 0, 0),               # -1 + 1 = +0 (not -0)
        (0, 0, 0, 0, 0), (0, 1, 0, -512, 0),    # 0 + 0 = +0
        (one, 0, 0, 511, 0),                    # zero term with a huge exponent: a
        (0, 0, top, 511, 0), (0, 1, top, 511, 0),   # saturate both signs
        (0, 0, top, -512, 0), (0, 0, top, -200 - W, 0),  # flush to +0
        (FP32_MAX, 0, 1, 103, 0),               # MAX + half ulp: tie, odd -> 2**128: ovf
        (FP32_MAX, 0, 1, 102, 0),               # MAX + quarter ulp: MAX, no ovf
        (FP32_MAX | 1 << 31, 1, 1, 103, 0),     # -MAX - half ulp: -MAX, ovf
        (FP32_MAX, 1, 1, 127, 0),               # MAX - 2**127: ordinary
        (0x00800000, 1, 1, -150, 0),            # 2**-126 - 2**-150: below 2**-126: +0
        (0x00800000, 1, 1, -151, 0),            # tie: 2**-126 stays (even)
        (0x00800001, 1, 1, -149, 0),            # -> 2**-126 - ... = 2**-126 exactly
        (0, 0, 1, -126, 0), (0, 0, 1, -127, 0), (0, 1, 1, 127, 0), (0, 0, 1, 128, 0),
        (0, 0, top, -126 - W + 1, 0),           # rounds up into 2**-125 (W > 24) or exact
        (FP32_NAN, 0, 5, 0, 0), (one, 0, 5, 0, 1), (0, 0, 0, 0, 1),
        (0x7F800000, 0, 1, 0, 0),               # an infinity code is read as NaN
    ]
    if W >= 25:
        v += [
            (one, 0, (1 << (W - 1)) + 1, -24 - (W - 1), 0),     # tie + tiny: 1 + ulp
            (one, 1, (1 << (W - 1)) + 1, -25 - (W - 1), 0),     # 1 - half ulp - tiny
            (one_up, 1, (1 << (W - 1)) + 1, -24 - (W - 1), 0),  # tie - tiny: round down
            (0, 0, (1 << 24) + 1, 0, 0), (0, 0, (1 << 24) + 3, 0, 0),   # ties of the term
            (0, 1, top, 0, 0),                  # all ones: carries to 2**W
            (one, 1, (1 << (W - 1)) - 1, -(W - 1), 0),  # 1 - (1 - 2**-(W-1)): tiny exact
        ]
    return v


def _adder_random(W: int, rng: random.Random, n: int) -> list[tuple[int, int, int, int, int]]:
    out = []
    for _ in range(n):
        r = rng.random()
        a = (0 if r < 0.08 else FP32_NAN if r < 0.11 else
             rng.getrandbits(1) << 31 | rng.randint(1, 254) << 23 | rng.getrandbits(23))
        ea = a >> 23 & 0xFF
        mag = rng.getrandbits(rng.randint(0, W))
        neg = rng.getrandbits(1)
        normal = ea not in (0, 0xFF)
        if normal and rng.random() < 0.6:
            ex = ea - 150 - rng.randint(-30, W + 40)            # overlapping or near
        else:
            ex = rng.randint(-330, 280)
        if normal and rng.random() < 0.25 and W >= 24:           # cancellation
            sh = rng.randint(0, W - 24)
            mag = (((a & 0x7FFFFF) | 1 << 23) << sh) + rng.randint(-3, 3)
            mag = max(0, min(mag, (1 << W) - 1))
            ex, neg = ea - 150 - sh, 1 - (a >> 31)
        out.append((a, neg, mag, max(-512, min(511, ex)), int(rng.random() < 0.03)))
    return out


def adder_mismatches(W, vecs, fault=None):
    """Vectors where Fp32TermAdd(W) differs from ref_add: [(vector, got, expected)]."""
    dut = Fp32TermAdd(W, fault=fault)
    bad = []

    async def tb(ctx):
        for vec in vecs:
            a, neg, mag, ex, nan = vec
            for port, val in zip((dut.a, dut.t_neg, dut.t_mag, dut.t_exp, dut.nan), vec):
                ctx.set(port, val)
            got = ctx.get(dut.r), ctx.get(dut.ovf)
            want = ref_add(a, (-1) ** neg * mag * TWO ** ex, nan)
            if got != want:
                bad.append((vec, got, want))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    return bad


@pytest.mark.parametrize("W", [53, 22])
def test_adder_exact(W, seed):
    """Fp32TermAdd against the exact rounding: targeted ties, sticky, cancellation,
    saturation and flush vectors, then random ones (W = 53: the widest term, Q4_1 with
    A = 42; W = 22: narrower than the 24-bit significand)."""
    rng = random.Random(seed)
    vecs = _adder_vectors(W) + _adder_random(W, rng, 600 if W > 24 else 300)
    bad = adder_mismatches(W, vecs)
    assert not bad, bad[:5]


@pytest.mark.parametrize("fault", ADD_FAULTS)
def test_adder_faults_caught(fault):
    bad = adder_mismatches(53, _adder_vectors(53), fault)
    assert bad, f"fault {fault} not caught"


# ------------------------------------------------------------------ formats, random beats
def rand_fp16(rng):
    """A finite fp16 code (exponent field 0..30), subnormals and zeros included."""
    return rng.getrandbits(1) << 15 | rng.choice([0, 1, 2, 13, 14, 15, 16, 29, 30,
                                                  rng.randint(0, 30)]) << 10 | rng.getrandbits(10)


def rand_word(rng, fmt):
    if fmt == Fmt.NONE:
        return 0
    if fmt == Fmt.Q4_1:
        return rand_fp16(rng) | rand_fp16(rng) << 16
    return rng.choice([rng.randint(110, 140)] * 4 + [0, 1, 127, 254, 255, rng.randint(0, 255)])


def rand_y(rng, A):
    v = rng.getrandbits(rng.randint(0, A - 1))
    return rng.choice([v, -v, -(1 << (A - 1)), (1 << (A - 1)) - 1]
                      if rng.random() < 0.1 else [v, -v])


def rand_ops(rng, p, fmts, rounds):
    """Random rounds: write one set (a random format of ``fmts``, every part), then beats."""
    mp, ops = p.macro, []
    for _ in range(rounds):
        s, f = rng.randrange(mp.n_sets), rng.choice(fmts)
        words = [rand_word(rng, f) for _ in range(mp.n_out)]
        L = p.lanes
        ops += [("sw", words[q * L:(q + 1) * L], q, s, f) for q in range(p.chunks)]
        for _ in range(rng.randint(1, 4)):
            xs = rng.choice([rng.randint(110, 140)] * 4 + [0, 1, 254, 255])
            xsum = rng.randint(-(1 << (p.xsum_bits - 1)), (1 << (p.xsum_bits - 1)) - 1)
            ops.append(("inp", [rand_y(rng, mp.acc_width) for _ in range(mp.n_out)],
                        rng.randrange(mp.n_acc), rng.randrange(mp.n_sets),
                        int(rng.random() < 0.7), xs, xsum))
    return ops


FMT_CASES = {"mx": (P_MX, [Fmt.MXINT8, Fmt.Q4_1, Fmt.NONE]),
             "q4": (P_Q4, [Fmt.Q4_1, Fmt.NONE]),
             "bf": (P_BF, [Fmt.BFP16, Fmt.NONE]),
             "c1": (P_C1, [Fmt.MXINT8, Fmt.Q4_1])}


@pytest.mark.parametrize("case", list(FMT_CASES))
def test_formats_random(case, seed):
    """Random scale writes and beats of each format the macro executes, random out.ready:
    every output beat equals the exact reference (terms as Fractions, RNE once per step)."""
    p, fmts = FMT_CASES[case]
    rng = random.Random(seed)
    ops = rand_ops(rng, p, fmts, 10)

    async def body(st):
        return await run_ops(st, Ref(p), ops, rng, ready_p=0.7)
    assert run(p, body) >= 10


# ------------------------------------------------------------------ numerics corner cases
EXTREME = [0, 1, 126, 127, 128, 253, 254, 255]


@pytest.mark.slow
def test_extreme_exponents():
    """Every (xs, e) pair of extreme codes, BFP16 (all numbers) and MXINT8 (255 = NaN), with
    extreme significands, starting from +0 and accumulating onto a value."""
    def ops_for(p, fmt):
        A, n, ops = p.macro.acc_width, p.macro.n_out, []
        ys = [1, -1, (1 << (A - 1)) - 1, -(1 << (A - 1))]
        for i, e in enumerate(EXTREME):
            words = [e] * n
            L = p.lanes
            ops += [("sw", words[q * L:(q + 1) * L], q, i & 1, fmt) for q in range(p.chunks)]
            for xs in EXTREME:
                ops.append(("inp", [ys[(c + xs) % 4] for c in range(n)], 0, i & 1, 0, xs, 0))
                ops.append(("inp", [ys[(c + xs + 1) % 4] for c in range(n)], 0, i & 1, 1,
                            255 - xs, 0))
        return ops

    async def bf(st):
        return await run_ops(st, Ref(P_BF), ops_for(P_BF, Fmt.BFP16))
    assert run(P_BF, bf) == 2 * len(EXTREME) ** 2

    async def mx(st):
        return await run_ops(st, Ref(P_MX), ops_for(P_MX, Fmt.MXINT8))
    assert run(P_MX, mx) == 2 * len(EXTREME) ** 2


def test_q4_1_extremes():
    """Q4_1 with subnormal, zero, largest and negative d / m, extreme xs and xsum."""
    p = P_Q4
    A, xb = p.macro.acc_width, p.xsum_bits
    codes = [0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0xFBFF, 0x3C00, 0x0400]
    ops = []
    for i in range(0, len(codes), 2):
        for j in range(0, len(codes), 2):
            words = [codes[i] | codes[j] << 16, codes[i + 1] | codes[j + 1] << 16,
                     codes[j] | codes[i] << 16, codes[j + 1] | codes[i + 1] << 16]
            ops += [("sw", words[:2], 0, 0, Fmt.Q4_1), ("sw", words[2:], 1, 0, Fmt.Q4_1)]
            for xs, xsum, acc in ((0, -(1 << (xb - 1)), 0), (254, (1 << (xb - 1)) - 1, 1),
                                  (127, 1, 1), (133, -1, 1), (255, 3, 1)):
                ys = [(1 << (A - 1)) - 1, -(1 << (A - 1)), -8 * xsum, 5]
                ops.append(("inp", ys, 1, 0, acc, xs, xsum))

    async def body(st):
        return await run_ops(st, Ref(p), ops)
    assert run(p, body) == 5 * 16


def test_zero_blocks():
    """Zero blocks start an entry at +0 and leave an accumulating entry unchanged; an exact
    cancellation is +0, never -0."""
    async def body(st):
        ref = Ref(P_MX)
        ops = [("sw", [127, 140], 0, 0, Fmt.MXINT8), ("sw", [0, 255], 1, 0, Fmt.MXINT8),
               ("sw", [0x3C00 | 0x3C00 << 16, 0x8000 | 0xBC00 << 16], 0, 1, Fmt.Q4_1),
               ("sw", [0, 0], 1, 1, Fmt.Q4_1),
               ("inp", [0, 0, 0, 0], 0, 0, 0, 127, 0),            # zero block, acc = 0
               ("inp", [5, -7, 9, 0], 0, 0, 1, 120, 0),
               ("inp", [0, 0, 0, 0], 0, 0, 1, 3, 0),              # zero block: unchanged
               ("inp", [-5, 7, -9, 0], 0, 0, 1, 120, 0),          # cancels: +0
               ("inp", [0, 0, 0, 0], 1, 1, 0, 127, 0),            # Q4_1 zero, xsum 0
               ("inp", [16, -16, 0, 0], 1, 1, 1, 133, -2),        # (y + 8 xsum) = 0
               ("inp", [3, 3, 3, 3], 1, 1, 1, 133, 0)]            # d = -0 / m = +0 words
        n = await run_ops(st, ref, ops)
        vals = [o[0] for _, o in st.outs]
        assert vals[0] == [0, 0, 0, FP32_NAN]                     # e = 255 is NaN
        assert vals[3][:3] == [0, 0, 0]                           # +0 codes
        assert vals[4] == [0, 0, 0, 0]
        assert vals[5] == [0xC0000000, 0x40000000, 0, 0]         # only xsum * m: -2, +2
        return n
    assert run(P_MX, body) == 7


def test_saturation_and_ovf():
    """Saturation to +-FP32_MAX with the sticky OVF of the entry: kept by acc = 1 beats (the
    saturated value is an ordinary number afterwards), cleared by an acc = 0 beat, per entry."""
    async def body(st):
        p = P_BF
        ref = Ref(p)
        big, A = 255, p.macro.acc_width
        ops = [("sw", [big], q, 0, Fmt.BFP16) for q in range(3)]
        ops += [("sw", [127], q, 1, Fmt.BFP16) for q in range(3)]
        ops += [
            ("inp", [1 << 20, -(1 << 20), 1], 0, 0, 0, 255, 0),      # +MAX, -MAX, 2**-10
            ("inp", [1, 1, 1], 1, 1, 0, 127, 0),                     # other entry: no ovf
            ("inp", [0, 0, 0], 0, 1, 1, 127, 0),                     # acc: ovf stays 1
            ("inp", [-(1 << 7), 1 << 7, 0], 0, 0, 1, 131, 0),       # +-2**127: back
            ("inp", [1, 1, 1], 0, 1, 0, 127, 0),                     # acc = 0: ovf 0
            ("inp", [(1 << (A - 1)) - 1] * 3, 1, 0, 1, 255, 0),      # entry 1 saturates
            ("inp", [0, 0, 0], 1, 1, 1, 127, 0),
        ]
        n = await run_ops(st, ref, ops)
        outs = [o for _, o in st.outs]
        assert outs[0][0][:2] == [FP32_MAX, FP32_MAX | 1 << 31] and outs[0][2] == 1
        assert outs[1][2] == 0 and outs[2][2] == 1
        assert outs[3][0][:2] == [0x7EFFFFFE, 0xFEFFFFFE] and outs[3][2] == 1
        assert outs[4][2] == 0 and outs[5][2] == 1 and outs[6][2] == 1
        return n
    assert run(P_BF, body) == 7


def test_nan():
    """MXINT8 NaN scales (e or xs = 255) and Q4_1 xs = 255 give 0x7FC00000; a NaN stays
    through acc = 1 beats (of any format) until an acc = 0 beat."""
    async def body(st):
        ref = Ref(P_MX)
        ops = [("sw", [127, 255], 0, 0, Fmt.MXINT8), ("sw", [127, 127], 1, 0, Fmt.MXINT8),
               ("sw", [0x3C00, 0x3C00], 0, 1, Fmt.Q4_1), ("sw", [0x3C00, 0x3C00], 1, 1,
                                                                 Fmt.Q4_1),
               ("inp", [1, 2, 3, 4], 0, 0, 0, 127, 0),       # column 1 NaN
               ("inp", [1, 2, 3, 4], 0, 0, 1, 255, 0),       # all NaN
               ("inp", [1, 2, 3, 4], 0, 1, 1, 127, 0),       # Q4_1, acc: NaN stays
               ("inp", [1, 2, 3, 4], 0, 1, 0, 127, 0),       # acc = 0: numbers again
               ("inp", [1, 2, 3, 4], 1, 1, 0, 255, 1)]       # Q4_1 xs = 255: NaN
        n = await run_ops(st, ref, ops)
        outs = [o[0] for _, o in st.outs]
        assert outs[0][1] == FP32_NAN and FP32_NAN not in (outs[0][0], outs[0][2])
        assert outs[1] == [FP32_NAN] * 4 and outs[2] == [FP32_NAN] * 4
        assert FP32_NAN not in outs[3] and outs[4] == [FP32_NAN] * 4
        return n
    assert run(P_MX, body) == 5


# ------------------------------------------------------------------ scale-write errors
BAD = [
    # (params, [(words, part, set, fmt, code)]): the lowest code that applies
    (P_BF, [([127], 0, 0, Fmt.MXINT8, PostErr.BAD_ALIGN),
            ([0x3C00], 0, 1, Fmt.Q4_1, PostErr.BAD_ALIGN),
            ([0x100], 3, 0, Fmt.MXINT8, PostErr.BAD_ALIGN),       # before BAD_PART, SCALE
            ([5], 3, 0, Fmt.BFP16, PostErr.BAD_PART),
            ([0x100], 3, 1, Fmt.BFP16, PostErr.BAD_PART),         # before BAD_SCALE
            ([0x100], 0, 0, Fmt.BFP16, PostErr.BAD_SCALE),
            ([1 << 31 | 5], 2, 0, Fmt.BFP16, PostErr.BAD_SCALE),
            ([1], 1, 1, Fmt.NONE, PostErr.BAD_SCALE),
            ([255], 1, 1, Fmt.BFP16, PostErr.NONE)]),             # 255 is a number
    (P_MX, [([127, 127], 0, 0, Fmt.BFP16, PostErr.BAD_ALIGN),
            ([0x7C00, 0x3C00], 1, 0, Fmt.Q4_1, PostErr.BAD_SCALE),    # d = +inf
            ([0x3C00, 0xFE00 << 16], 0, 1, Fmt.Q4_1, PostErr.BAD_SCALE),  # m = NaN
            ([0x7BFF | 0x83FF << 16, 0], 0, 1, Fmt.Q4_1, PostErr.NONE),
            ([255, 1 << 8], 1, 1, Fmt.MXINT8, PostErr.BAD_SCALE),
            ([255, 255], 1, 1, Fmt.MXINT8, PostErr.NONE)]),       # NaN scales are allowed
    (P_Q4, [([127, 127], 0, 0, Fmt.MXINT8, PostErr.BAD_WIDTH),
            ([127, 127], 0, 0, Fmt.BFP16, PostErr.BAD_ALIGN)]),
    (P_X4, [([127, 127], 0, 0, Fmt.MXINT8, PostErr.BAD_WIDTH),
            ([0x3C00, 0], 0, 1, Fmt.Q4_1, PostErr.BAD_WIDTH),
            ([1, 1], 0, 1, Fmt.BFP16, PostErr.BAD_ALIGN)]),
    (P_C1, [([127, 127], 1, 0, Fmt.MXINT8, PostErr.BAD_PART),
            ([127, 127], 1, 3, Fmt.BFP16, PostErr.BAD_ALIGN)]),
]


def _baseline(p):
    """Format and words of every set before the bad writes: the first format p executes."""
    f = next((f for f in (Fmt.MXINT8, Fmt.Q4_1, Fmt.BFP16) if not p.supports(f)), Fmt.NONE)
    w = {Fmt.MXINT8: 125, Fmt.BFP16: 130, Fmt.Q4_1: 0x3C00 | 0xB800 << 16, Fmt.NONE: 0}[f]
    return f, w


@pytest.mark.parametrize("case", range(len(BAD)), ids=["bf", "mx", "q4", "x4", "c1"])
def test_scale_write_errors(case):
    """Each PostErr code, in the cycle after its write only; a rejected write changes
    neither the scales nor the format (beats afterwards use the old ones)."""
    p, writes = BAD[case]

    async def body(st):
        ref = Ref(p)
        f, w = _baseline(p)
        ops = [("sw", [w] * p.lanes, q, s, f) for s in range(p.macro.n_sets)
               for q in range(p.chunks)]
        await run_ops(st, ref, ops)
        for words, part, set_, fmt, code in writes:
            assert ref.write(words, part, set_, fmt) == code
            await st.step(sw=st.sw(words, part, set_, fmt))
            await st.step()
            assert st.log[-1]["err"] == code, (words, part, set_, fmt)
            await st.step()
            assert st.log[-1]["err"] == 0
        rng = random.Random(case)
        n = p.macro.n_out
        beats = [("inp", [rand_y(rng, p.macro.acc_width) for _ in range(n)], s & 1, s, 0, 127,
                  rng.randint(-50, 50)) for s in range(p.macro.n_sets)]
        return await run_ops(st, ref, beats)
    assert run(p, body) == p.macro.n_sets


def _hazard_body(p):
    async def body(st):
        ref = Ref(p)
        n, L = p.macro.n_out, p.lanes
        y = list(range(1, n + 1))
        for s in (0, 1):
            for q in range(p.chunks):
                ref.write([127] * L, q, s, Fmt.MXINT8)
            assert await st.write_set([127] * n, s, Fmt.MXINT8) == [0] * p.chunks
        # a write accepted with the beat of its set is no hazard: it lands before chunk 0
        t = st.cycle
        await st.step(st.beat(y, 0, 0, 0, 127), sw=st.sw([130] * L, 0, 0, Fmt.MXINT8))
        assert ref.write([130] * L, 0, 0, Fmt.MXINT8) == 0
        expect = [ref.beat(y, 0, 0, 0, 127, 0)]
        # chunks in t+1 .. t+4 (t+4 the last): the beat's set is busy
        plan = [(0, PostErr.HAZARD), (1, 0), (0, PostErr.HAZARD), (0, PostErr.HAZARD),
                (0, 0)]                                   # t+5: idle again
        for s, code in plan:
            await st.step(sw=st.sw([131 + st.cycle - t] * L, 1, s, Fmt.MXINT8))
            assert ref.write([131 + st.cycle - 1 - t] * L, 1, s, Fmt.MXINT8,
                             busy_set=0 if st.cycle - 1 - t <= 4 else None) == code
        await st.step()
        errs = [st.log[t + 2 + i]["err"] for i in range(len(plan))]
        assert errs == [c for _, c in plan], errs
        assert st.log[t + 1]["err"] == 0
        # stall: beat B (set 1) waits in its last chunk while A's result is not taken
        await st.issue(st.beat(y, 1, 0, 1, 127), out_ready=0)
        expect.append(ref.beat(y, 1, 0, 1, 127, 0))
        await st.issue(st.beat(y, 0, 1, 1, 127), out_ready=0)
        expect.append(ref.beat(y, 0, 1, 1, 127, 0))
        await st.idle(p.chunks, out_ready=0)
        assert st.log[-1]["busy"] and not st.log[-1]["inp_ready"]     # held last chunk
        await st.step(sw=st.sw([140] * L, 0, 1, Fmt.MXINT8), out_ready=0)
        await st.step(sw=st.sw([141] * L, 0, 0, Fmt.MXINT8), out_ready=0)
        await st.step(out_ready=0)
        assert [st.log[-2]["err"], st.log[-1]["err"]] == [PostErr.HAZARD, 0]
        assert ref.write([140] * L, 0, 1, Fmt.MXINT8, busy_set=1) == PostErr.HAZARD
        assert ref.write([141] * L, 0, 0, Fmt.MXINT8) == 0
        await st.drain(3)
        got = [o for _, o in st.outs]
        assert got == expect
        # the accepted writes are used by later beats, the rejected ones are not
        for s in (0, 1):
            await st.issue(st.beat(y, s, s, 0, 127))
            expect.append(ref.beat(y, s, s, 0, 127, 0))
        await st.drain(5)
        assert [o for _, o in st.outs] == expect
    return body


def test_hazard():
    """HAZARD exactly while a beat of the set is held (chunks, last chunk, stalled last
    chunk); a write in the beat's accept cycle lands before chunk 0."""
    run(P_T, _hazard_body(P_T))


# ------------------------------------------------------------------ timing
def test_stage_timing():
    """The contract's example (n_out 8, L 2, C 4, out.ready low in cycles 0..11, beats A, B, C
    offered back to back): A accepted in 0, chunks 1..4, out.valid from 5; B accepted in 4,
    held in 8..11; in 12 A is taken, B's last chunk runs and C is accepted; B taken in 13;
    C's result valid in 17.  Also inp.ready, busy and a stable payload every cycle."""
    p = P_T

    async def body(st):
        ref = Ref(p)
        assert await st.write_set([127] * 8, 0, Fmt.MXINT8) == [0] * 4
        for q in range(4):
            ref.write([127] * 2, q, 0, Fmt.MXINT8)
        st.cycle, st.log = 0, []
        beats = [[i + 10 * b for i in range(8)] for b in range(3)]
        words = [st.beat(y, b % 2, 0, 0, 127) for b, y in enumerate(beats)]
        expect = [ref.beat(y, b % 2, 0, 0, 127, 0) for b, y in enumerate(beats)]
        acc, i = [], 0
        while st.cycle < 20:
            ok, _ = await st.step(words[i] if i < 3 else None, out_ready=int(st.cycle >= 12))
            if ok:
                acc.append(st.cycle - 1)
                i += 1
        assert acc == [0, 4, 12]
        log = st.log
        ready = [c for c in range(20) if log[c]["inp_ready"]]
        assert ready[:3] == [0, 4, 12] and 16 in ready
        valid = [c for c in range(20) if log[c]["out_valid"]]
        assert valid == list(range(5, 14)) + [17]
        assert [c for c, _ in st.outs] == [12, 13, 17]
        assert [o for _, o in st.outs] == expect
        assert all(log[c]["out_payload"] == log[5]["out_payload"] for c in range(5, 13))
        busy = [c for c in range(20) if log[c]["busy"]]
        assert busy == list(range(1, 13)) + [13, 14, 15, 16]
        assert all(log[c]["sw_ready"] for c in range(20))
    run(p, body)


@pytest.mark.parametrize("p", [P_BF, P_C1], ids=["c3", "c1"])
def test_latency_and_throughput(p):
    """No stalls: out.valid C + 1 cycles after the accept, one beat per C cycles."""
    C = p.chunks

    async def body(st):
        n = p.macro.n_out
        t0 = st.cycle
        acc = []
        for b in range(4):
            acc.append(await st.issue(st.beat([b] * n, b % 2, 0, 0, 127)))
        await st.idle(C + 2)
        assert [a - t0 for a in acc] == [C * b for b in range(4)]
        assert [c for c, _ in st.outs] == [a + C + 1 for a in acc]
        assert [o[0] for _, o in st.outs] == [[ref_round(Fraction(b))[0]] * n
                                              for b in range(4)]
    run(p, body)


# ------------------------------------------------------------------ reset
def test_reset():
    """rst clears ACC, OVF, the beat and the output register, not SC / FMT; a scale write of
    a rst cycle lands (same checks, its err is lost); outputs of a rst cycle are the
    registers' (an out beat transfers); a beat accepted in a rst cycle is lost."""
    p = P_MX

    async def body(st):
        ref = Ref(p)
        await run_ops(st, ref, [("sw", [255, 127], 0, 0, Fmt.MXINT8),
                                ("sw", [254, 127], 1, 0, Fmt.MXINT8)])
        y = [1 << 20, 3, 5, 7]
        await st.issue(st.beat(y, 0, 0, 0, 200))       # entry 0: NaN, 3 * 2**-6, MAX, ...
        first = ref.beat(y, 0, 0, 0, 200, 0)
        assert first[2] == 1
        await st.idle(4, out_ready=0)
        await st.issue(st.beat(y, 1, 0, 0, 127), out_ready=0)      # B: in progress
        n0 = len(st.outs)
        await st.step(sw=st.sw([0x3C00, 0x3C00], 0, 1, Fmt.Q4_1), rst=1)
        o = st.log[-1]
        assert o["out_valid"] and o["busy"]                 # the registers, in the rst cycle
        assert len(st.outs) == n0 + 1 and st.outs[-1][1] == first   # ... and it transferred
        ref.reset()
        assert ref.write([0x3C00, 0x3C00], 0, 1, Fmt.Q4_1) == 0
        await st.step(st.beat(y, 1, 1, 1, 127, xsum=3))   # accepted in the cycle after rst
        o = st.log[-1]
        assert (o["out_valid"], o["busy"], o["err"], o["inp_ready"]) == (0, 0, 0, 1)
        expect = [ref.beat(y, 1, 1, 1, 127, 3)]
        await st.drain(n0 + 2)
        # a hazard write in a rst cycle is dropped (checks with busy / cur.set of that cycle)
        await st.issue(st.beat(y, 0, 0, 1, 127))
        await st.step(sw=st.sw([127, 127], 0, 0, Fmt.MXINT8), rst=1)
        assert ref.write([127, 127], 0, 0, Fmt.MXINT8, busy_set=0) == PostErr.HAZARD
        await st.step(sw=st.sw([1, 1 << 9], 1, 1, Fmt.MXINT8), rst=1)   # BAD_SCALE: lost
        await st.step()
        assert st.log[-2]["err"] == 0 and st.log[-1]["err"] == 0
        # a beat accepted in a rst cycle is lost
        await st.step(st.beat(y, 0, 0, 1, 127), rst=1)
        assert st.log[-1]["inp_ready"]
        await st.idle(5)
        assert len(st.outs) == n0 + 2 and not st.log[-1]["busy"]
        ref.reset()
        await st.issue(st.beat(y, 0, 0, 1, 127))            # entry 0 is +0, ovf 0 again
        expect.append(ref.beat(y, 0, 0, 1, 127, 0))
        await st.drain(n0 + 3)
        got = [o for _, o in st.outs][-2:]
        assert got == expect
        assert got[1][2] == 0 and got[1][0][0] == FP32_NAN  # set 0's scales kept (e = 255)
        assert got[0][0][1] == ref_round(Fraction(3 + 8 * 3, 64))[0]     # from +0, d = 1
    run(p, body)


# ------------------------------------------------------------------ deliberate faults
@pytest.mark.parametrize("fault", FAULTS)
def test_faults_caught(fault):
    """Each deliberately broken stage fails a check that the correct one passes."""
    async def examples(st):                     # a tie plus a term below the window
        await st.write_set([21, 1, 1], 0, Fmt.BFP16)
        await st.write_set([0, 0, 0], 1, Fmt.NONE)
        await st.issue(st.beat([1, 1, 1], dst=0, set_=1))
        await st.issue(st.beat([1, (1 << 20) + 1, 0], dst=0, set_=0, acc=1, xs=221))
        await st.drain(2)
        assert st.outs[-1][1] == ([0x3F800000, 0x3F800001, 0x3F800000], 0, 0)

    p, body = (P_T, _hazard_body(P_T)) if fault == "no_hazard" else (P_BF, examples)
    run(p, body)
    with pytest.raises(AssertionError):
        run(p, body, fault=fault)


# ------------------------------------------------------------------ Verilog
@pytest.mark.verilator
@pytest.mark.parametrize("p", [P_MX, P_BF, P_C1], ids=["mx", "bf", "c1"])
def test_verilog_lint(p, tmp_path):
    """Converts with amaranth.back.verilog (ports: the signature's; one module, the lanes
    inlined), lints clean with ``verilator --lint-only -Wall`` and hdl/waivers.vlt only."""
    from hdl.export import lint
    dut = BlockfmtStage(p)
    ports = hier.signature_ports(dut)
    text = verilog.convert(dut, name="blockfmt_stage", ports=[v for _, v in ports.values()],
                           emit_src=False)
    d = hier.parse_ports(text, "blockfmt_stage")
    hier.check_ports(dut, d)
    path = tmp_path / "blockfmt_stage.v"
    path.write_text(text)
    r = lint(path)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ differential vs model
DIFF = {"mx": (P_MX, 1200), "q4": (P_Q4, 1200), "bf": (P_BF, 1200), "c1": (P_C1, 900)}


def _rand_sw(rng, p):
    """A random scale-write payload: mostly well-formed, sometimes an unsupported format, a
    bad part or a reserved / infinite scale."""
    f = Fmt(rng.choice([0, 1, 2, 3, 3, 2, 1]))
    good = [f2 for f2 in Fmt if not p.supports(f2)]
    if rng.random() < 0.8:
        f = rng.choice(good)
    words = [rand_word(rng, f) for _ in range(p.lanes)]
    if rng.random() < 0.1:
        j = rng.randrange(p.lanes)
        words[j] |= (0x7C00 if f == Fmt.Q4_1 else 1 << rng.randrange(8, 32))
    part = rng.randrange(1 << p.part_bits) if rng.random() < 0.2 else rng.randrange(p.chunks)
    return sw_word(p, words, part, rng.randrange(p.macro.n_sets), f)


def _rand_inp(rng, p, st):
    mp = p.macro
    xs = rng.choice([rng.randint(118, 136)] * 6 + [0, 1, 254, 255])
    xsum = rng.randint(-(1 << (p.xsum_bits - 1)), (1 << (p.xsum_bits - 1)) - 1)
    if rng.random() < 0.5:
        xsum >>= rng.randint(0, p.xsum_bits)
    return st.beat([rand_y(rng, mp.acc_width) for _ in range(mp.n_out)],
                   rng.randrange(mp.n_acc), rng.randrange(mp.n_sets),
                   int(rng.random() < 0.75), xs, xsum)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DIFF))
def test_vs_model(case, seed):
    """HDL vs model.blockfmt.PostModel on a random stream (beats, scale writes of every
    format with errors, random out.ready, a rare rst): every output, every cycle."""
    from model.blockfmt import PostModel
    p, cycles = DIFF[case]
    rng = random.Random(seed)
    model = PostModel(p)
    keys = ("inp_ready", "sw_ready", "out_valid", "out_payload", "err", "busy")

    async def body(st):
        pend, stats = None, {"beats": 0, "errs": 0, "values": 0, "finite": 0}
        for c in range(cycles):
            if pend is None and rng.random() < 0.7:
                pend = _rand_inp(rng, p, st)
            sw = _rand_sw(rng, p) if rng.random() < (0.3 if c < 40 else 0.08) else None
            ready = int(rng.random() < 0.75)
            rst = int(rng.random() < 0.004)
            mo = model.step(int(pend is not None), pend or 0, int(sw is not None), sw or 0,
                            ready)
            if rst:
                model.reset()
            took, _ = await st.step(pend, sw, ready, rst)
            got = st.log[-1]
            for k in keys:
                assert int(got[k]) == int(getattr(mo, k)), (
                    f"cycle {c}: {k} HDL {got[k]:#x} model {int(getattr(mo, k)):#x}")
            if took:
                pend = None
            if got["out_valid"] and ready:
                stats["beats"] += 1
                v = st.decode(got["out_payload"])[0]
                stats["values"] += len(v)
                stats["finite"] += sum(0 < (x & 0x7FFFFFFF) < FP32_MAX for x in v)
            stats["errs"] += got["err"] != 0
        return stats
    stats = run(p, body)
    # the stream exercised the datapath: beats out, errors, ordinary (not 0 / MAX / NaN) values
    assert stats["beats"] > cycles // (3 * p.chunks + 3) and stats["errs"] > 5, stats
    assert stats["finite"] > stats["values"] // 4, stats
