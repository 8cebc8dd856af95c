"""The softmax unit (docs/softmax.md): spec, fixed-point arithmetic against float, the
functional reference, the cycle-exact model against it, the partition merge, adversarial
rows, timing, malformed commands and bad Python input.

Expected values come from the contract's formulas or from float math, never from a run."""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest

from model.interface import GoldenModel, state_diff
from model.softmax import SmArith, SoftmaxModel, score_beats, softmax_fixed, softmax_trace
from spec.params import MacroParams, pack, unpack, width
from spec.softmax import (SmErr, SmOp, SmState, SoftmaxParams, cfg_encode, cmd_fields,
                          encode_scale, exp_table, in_fields, prob_fields, res_fields)

SP = SoftmaxParams(score_bits=20, n_lanes=8, tile=16, max_context=256, n_part=4)
DEF = SoftmaxParams()


def _row(rng, T, lo=-4000, hi=4000):
    return rng.integers(lo, hi, T)


def _exp_err(p, table=None) -> float:
    """max |e(d) / 2**EW - 2**(-d / 2**FB)| over every d of XW bits."""
    d = np.arange(1 << p.x_bits)
    return float(np.abs(SmArith(p, table).exp(d) / 2.0 ** p.exp_bits
                        - 2.0 ** (-d / 2.0 ** p.frac_bits)).max())


def _check_vs_float(tr, s, scale, p, parts=1):
    """The contract's accuracy bounds against float softmax of the real logits s * scale."""
    z = np.asarray(s, dtype=np.float64) * scale
    e = np.exp(z - z.max())
    # probability: rounding (1/2) + exp unit + x rounding (|dx| <= 1/2 LSB on both ends)
    bound = 0.5 + p.prob_max * (2 * 2.0 ** -p.exp_bits + math.log(2) * 2.0 ** -p.frac_bits)
    err = np.abs(tr["probs"] - p.prob_max * e).max()
    assert err <= bound, f"probability error {err} > {bound}"
    rel = abs(tr["l"] / 2.0 ** p.exp_bits - e.sum()) / e.sum()
    T, beats = len(s), -(-len(s) // p.n_lanes) + parts
    lbound = (math.log(2) * 2.0 ** -p.frac_bits
              + (1.6 * T + 2 * beats) * 2.0 ** -p.exp_bits / e.sum() + beats * 4e-5)
    assert rel <= lbound, f"l relative error {rel} > {lbound}"


def _drive(p, heads, rng=None, p_valid=1.0, p_ready=1.0, model=None):
    """Run heads [(scores, scale, parts, chan0, digits)] back to back through the cycle model;
    compare every tile and result with softmax_trace."""
    m = model or SoftmaxModel(p)
    cmds, beats, refs = [], [], []
    for s, scale, parts, chan0, dg in heads:
        mul, sh = encode_scale(scale, p)
        cmds.append(cfg_encode(p, mul, sh, parts.bit_length() - 1, chan0, len(s), dg - 1))
        beats += score_beats(s, p, parts, chan0, rng)
        refs.append(softmax_trace(s, p, mul, sh, parts, digits=dg))
    out = m.run(cmds, beats, rng, p_valid, p_ready)
    want = [t for r in refs for t in r["tiles"]]
    assert len(out["tiles"]) == len(want)
    for k, ((j, tc, dg, last, q), (j2, tc2, dg2, q2)) in enumerate(
            zip(out["tiles"], want, strict=True)):
        assert (j, tc, dg) == (j2, tc2, dg2) and np.array_equal(q, q2), f"tile {k}"
    ends = np.cumsum([len(r["tiles"]) for r in refs]) - 1
    assert [k for k, t in enumerate(out["tiles"]) if t[3]] == list(ends)
    for got, r in zip(out["res"], refs, strict=True):
        assert (got["m"], got["l"], got["qsum"], got["qlo"], got["sat"]) == \
            (r["m"], r["l"], r["qsum"], r["qlo"], r["sat"])
    assert out["errs"] == [] and out["in_errs"] == []
    return out, refs


# --- spec ---------------------------------------------------------------------------------
def test_params_derived_and_layouts():
    p = DEF
    assert (p.x_bits, p.l_bits, p.rows) == (18, 16 + 13, 64)
    assert width(cmd_fields(p)) == 2 + 16 + 6 + 2 + 3 + 16 + 1
    assert width(in_fields(p)) == 64 * 28 + 3
    assert width(prob_fields(p)) == 64 * 8 + 3 + 6 + 1 + 1
    q = SoftmaxParams.for_macro(MacroParams(n_in=32, n_out=16))
    assert (q.score_bits, q.n_lanes, q.tile) == (MacroParams(n_in=32, n_out=16).acc_width, 16, 32)
    f = unpack(cmd_fields(p), cfg_encode(p, 5, 7, 1, 2, 300, 1))
    assert f == dict(op=0, mul=5, sh=7, plog2=1, chan0=2, count=300, dig=1)


@pytest.mark.parametrize("kw,name", [
    (dict(score_bits=7), "score_bits"), (dict(score_bits=43), "score_bits"),
    (dict(n_lanes=3), "n_lanes"), (dict(tile=1), "tile"), (dict(tile=48), "tile"),
    (dict(n_part=3), "n_part"), (dict(n_part=16), "n_part"),
    (dict(max_context=4000), "max_context"), (dict(max_context=64 * 3), "max_context"),
    (dict(max_context=128), "max_context"), (dict(mul_bits=7), "mul_bits"),
    (dict(frac_bits=3), "frac_bits"), (dict(table_bits=11), "table_bits"),
    (dict(table_bits=8, frac_bits=6), "table_bits"), (dict(exp_bits=25), "exp_bits"),
    (dict(prob_max=128), "prob_max"), (dict(prob_max=0), "prob_max"),
    (dict(int_bits=3), "int_bits"), (dict(score_bits=42, mul_bits=24), "mul_bits"),
    (dict(n_lanes=2.0), "n_lanes"), (dict(n_part=True), "n_part"), (dict(tile="64"), "tile")])
def test_params_rejected(kw, name):
    with pytest.raises(ValueError, match=rf"SoftmaxParams: {name}="):
        SoftmaxParams(**kw)


def test_exp_table_is_the_formula():
    for p in (DEF, SP, SoftmaxParams(table_bits=4, exp_bits=10, frac_bits=4)):
        t, K, EW = exp_table(p), 1 << p.table_bits, p.exp_bits
        assert len(t) == K + 1 and t[0] == 1 << EW and t[-1] == 1 << (EW - 1)
        real = 2.0 ** (EW - np.arange(K + 1) / K)
        assert np.abs(np.array(t) - real).max() <= 0.5
        assert all(a > b for a, b in zip(t, t[1:]))


def test_encode_scale():
    for scale in (1e-4, 0.003, 0.25, 3.0):
        mul, sh = encode_scale(scale, DEF)
        c = scale * math.log2(math.e) * 2 ** DEF.frac_bits
        assert mul < 1 << 16 and (mul >= 1 << 15 or sh == 63)
        assert abs(mul / 2 ** sh - c) <= 0.5 / 2 ** sh
    for bad in (0, -1.0, float("nan"), float("inf"), "1", True, 1e9, 1e-30):
        with pytest.raises(ValueError, match="encode_scale: scale="):
            encode_scale(bad, DEF)


# --- arithmetic ---------------------------------------------------------------------------
@pytest.mark.parametrize("p", [DEF, SP, SoftmaxParams(table_bits=10, frac_bits=10)])
def test_exp_unit_against_float_exhaustive(p):
    # linear interpolation of 2**-f over 2**-TB, table and interpolation rounding, shift
    bound = (math.log(2) ** 2 / 8 * 4.0 ** -p.table_bits) + 2 * 2.0 ** -p.exp_bits
    assert _exp_err(p) <= bound


def _wrong_table(i: int, factor: float) -> list[int]:
    bad = list(exp_table(SP))
    bad[i] = int(bad[i] * factor)
    return bad


def test_wrong_exp_table_is_caught(seed):
    rng = np.random.default_rng(seed)
    i = int(rng.integers(1, 2 ** SP.table_bits))
    # a ramp over one log2 unit: four scaled scores in every table interval
    scale = 1 / (SP.max_context * math.log2(math.e))
    s = np.arange(SP.max_context)
    mul, sh = encode_scale(scale, SP)
    _check_vs_float(softmax_trace(s, SP, mul, sh), s, _real(SP, scale), SP)
    for factor in (1.01, 0.99):                           # one entry 1 % off:
        bad = _wrong_table(i, factor)
        assert _exp_err(SP, bad) > 2 * _exp_err(SP)       # the exhaustive check sees it,
        with pytest.raises(AssertionError, match="tile"):  # and so does the lockstep
            _drive(SP, [(s, scale, 2, 0, 1)], model=SoftmaxModel(SP, table=bad))
    for factor in (1.05, 0.95):                           # 5 % off: the float check too
        with pytest.raises(AssertionError, match="probability error"):
            _check_vs_float(softmax_trace(s, SP, mul, sh, table=_wrong_table(i, factor)), s,
                            _real(SP, scale), SP)


def test_reference_against_float(seed):
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(30):
        T = int(rng.integers(1, SP.max_context + 1))
        scale = float(10 ** rng.uniform(-4, -1.5))
        amp = int(min((1 << 19) - 1, rng.uniform(1, 80) / scale))     # |logit| up to 80
        s = _row(rng, T, -amp, amp)
        mul, sh = encode_scale(scale, SP)
        real = mul / 2 ** sh / math.log2(math.e) / 2 ** SP.frac_bits     # the encoded scale
        for parts in (1, 4):
            tr = softmax_trace(s, SP, mul, sh, parts)
            if not tr["sat"]:
                _check_vs_float(tr, s, real, SP, parts)
                checked += 1
            assert tr["probs"].max() == SP.prob_max
            assert tr["qsum"] == tr["probs"].sum()
    assert checked >= 40


def test_second_digit_is_the_residual(seed):
    rng = np.random.default_rng(seed)
    s = _row(rng, 250)
    mul, sh = encode_scale(0.003, SP)
    tr = softmax_trace(s, SP, mul, sh, 2, digits=2)
    x = SmArith(SP).scale(s, mul, sh)[0]
    y = SP.prob_max * 2.0 ** ((x - x.max()) / 2 ** SP.frac_bits)
    eff = tr["probs"] + tr["lo"] / 128
    assert np.abs(eff - y).max() <= 0.5 / 128 + SP.prob_max * 2 * 2.0 ** -SP.exp_bits
    assert tr["lo"].min() >= -64 and tr["lo"].max() <= 64
    assert tr["qlo"] == tr["lo"].sum()


# --- partitions: the merge ----------------------------------------------------------------
def test_merge_across_partitions(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        T = int(rng.integers(1, SP.max_context + 1))
        s = _row(rng, T)
        mul, sh = encode_scale(0.003, SP)
        one = softmax_trace(s, SP, mul, sh, 1, digits=2)
        for P in (2, 4):
            tr = softmax_trace(s, SP, mul, sh, P, digits=2)
            for k in ("probs", "lo"):
                assert np.array_equal(tr[k], one[k])      # exact: one global max
            assert (tr["m"], tr["qsum"], tr["qlo"]) == (one["m"], one["qsum"], one["qlo"])
            # each partial state is the single-partition state of its own sub-row
            ar = SmArith(SP)
            for j, (seen, mj, lj) in enumerate(tr["partials"]):
                if j < T:
                    sub = softmax_trace(s[j::P], SP, mul, sh, 1)
                    assert (seen, mj, lj) == (1, sub["m"], sub["l"])
            assert tr["l"] == sum(ar.rescale(lj, tr["m"] - mj)
                                  for sn, mj, lj in tr["partials"] if sn)
            # l: the rescale rounding differs between partitionings (docs/softmax.md bounds:
            # worst case 5T + R1 + RP + 2.4e-5 (R1 + RP) l LSB; tested 2e-4 relative)
            R = 2 * -(-T // SP.n_lanes) + P + 1
            dl = abs(tr["l"] - one["l"])
            assert dl <= 5 * T + R + 2.4e-5 * R * one["l"] and dl <= 2e-4 * one["l"]


# --- cycle model = reference --------------------------------------------------------------
def test_cycle_model_is_a_golden_model():
    assert isinstance(SoftmaxModel(SP), GoldenModel)


@pytest.mark.parametrize("p_valid,p_ready", [(1.0, 1.0), (0.6, 0.5)])
def test_cycle_model_equals_reference(seed, p_valid, p_ready):
    rng = np.random.default_rng(seed)
    heads = []
    for _ in range(6):
        P = int(rng.choice([1, 2, 4]))
        T = int(rng.integers(1, SP.max_context + 1))
        heads.append((_row(rng, T), float(10 ** rng.uniform(-3.5, -2)), P,
                      int(rng.integers(0, 9 - P)), int(rng.integers(1, 3))))
    _drive(SP, heads, rng, p_valid, p_ready)


@pytest.mark.parametrize("P", [1, 4])
def test_long_context_default_params(seed, P):
    rng = np.random.default_rng(seed)
    s = rng.integers(-(1 << 19), 1 << 19, DEF.max_context)
    out, (r,) = _drive(DEF, [(s, 1e-4, P, 0, 1)], rng, 0.9, 0.9)
    _check_vs_float(r, s, _real(DEF, 1e-4), DEF, P)


def _real(p, scale):
    mul, sh = encode_scale(scale, p)
    return mul / 2 ** sh / math.log2(math.e) / 2 ** p.frac_bits


# --- adversarial rows ---------------------------------------------------------------------
def test_adversarial_rows(seed):
    rng = np.random.default_rng(seed)
    p, N, QS, EW = SP, SP.max_context, SP.prob_max, SP.exp_bits
    mul, sh = encode_scale(0.01, p)
    lo, hi = -(1 << (p.score_bits - 1)), (1 << (p.score_bits - 1)) - 1
    # all equal (also at the most negative score, saturating): uniform, exact sums
    for v in (0, 1234, lo):
        for P in (1, 4):
            tr = softmax_trace(np.full(N, v), p, mul, sh, P)
            assert (tr["probs"] == QS).all() and tr["l"] == N << EW and tr["qsum"] == N * QS
            assert tr["sat"] == int(v == lo)
    # one huge: one token gets QS, every other 0, l = 1
    s = rng.integers(-1000, 1000, N)
    s[137] = hi
    tr = softmax_trace(s, p, mul, sh, 4)
    assert tr["probs"][137] == QS and tr["probs"].sum() == QS and tr["l"] == 1 << EW
    assert tr["sat"] == 1
    # very negative (no saturation): the same as the row shifted by an exact x offset
    # (mul / 2**sh = 1/32 and a shift by a multiple of 32)
    s = rng.integers(-20000, 20000, 200)
    a = softmax_trace(s - 480_000, p, 1 << 15, 20, 2)
    b = softmax_trace(s, p, 1 << 15, 20, 2)
    assert np.array_equal(a["probs"], b["probs"]) and a["l"] == b["l"] and not a["sat"]
    # a rising row: the max grows at every beat (a rescale per beat)
    s = np.arange(N) * 37
    mul, sh = encode_scale(0.002, p)
    tr = softmax_trace(s, p, mul, sh, 1)
    assert not tr["sat"]
    _check_vs_float(tr, s, _real(p, 0.002), p)
    _drive(p, [(s, 0.002, 1, 0, 2), (np.full(N, lo), 0.01, 4, 4, 1)], rng)


# --- timing -------------------------------------------------------------------------------
def _idle_inputs(p):
    return [0, 0, 0, 0, 1, 1]


def test_timing_of_one_head_at_full_rate(seed):
    """CFG in cycle 0, B beats in 1..B, MERGE in B+1, tile k valid in B+3+k, the result with
    the last tile, IDLE (next CFG accepted) in B+3+K."""
    rng = np.random.default_rng(seed)
    p, P, T = SP, 4, 101
    s = _row(rng, T)
    beats = score_beats(s, p, P, 0)
    B, K = len(beats), P * -(-(-(-T // P)) // p.tile)
    out = SoftmaxModel(p).run([cfg_encode(p, 1000, 10, 2, 0, T)] * 2, beats + beats)
    o = out["outs"]
    assert o[0].cmd_ready and [c for c in range(B + 2) if o[c].in_ready] == list(range(1, B + 1))
    assert o[B + 1].st == SmState.MERGE and o[B + 2].st == SmState.EMIT
    assert [c for c in range(B + 3 + K) if o[c].prob_valid] == list(range(B + 3, B + 3 + K))
    assert [c for c in range(B + 3 + K) if o[c].res_valid] == [B + 2 + K]
    assert not any(o[c].cmd_ready for c in range(1, B + 3 + K))      # CFG held while busy
    assert o[B + 3 + K].cmd_ready and o[B + 3 + K].st == SmState.IDLE
    assert o[B + 4 + K].in_ready


def test_backpressure_holds_the_tile(seed):
    rng = np.random.default_rng(seed)
    p = SP
    m = SoftmaxModel(p)
    s = _row(rng, 40)
    m.step(1, cfg_encode(p, 3000, 12, 0, 0, 40), 0, 0, 1, 1)
    for b in score_beats(s, p):
        assert m.step(0, 0, 1, b, 1, 1).in_ready
    m.step(0, 0, 0, 0, 0, 0)                              # MERGE
    m.step(0, 0, 0, 0, 0, 0)                              # tile 0 computed
    first = m.step(0, 0, 0, 0, 0, 0)
    for _ in range(5):                                    # not ready: held, stable
        o = m.step(0, 0, 0, 0, 0, 0)
        assert o.prob_valid and o.prob_payload == first.prob_payload
    assert m.state()["k"] == 1


# --- malformed commands and beats ---------------------------------------------------------
def _busy_model(rng, p=SP):
    """A model in INGEST (2 partitions, partition 0 complete, partition 1 missing a beat)."""
    m = SoftmaxModel(p)
    s = _row(rng, 2 * 2 * p.n_lanes)
    m.step(1, cfg_encode(p, 3000, 12, 1, 2, len(s)), 0, 0, 1, 1)
    for b in score_beats(s, p, 2, 2)[:-1]:
        m.step(0, 0, 1, b, 1, 1)
    return m, s


BAD_CMDS = {
    "op2": (lambda p: pack(cmd_fields(p), op=2), SmErr.BAD_OP),
    "op3": (lambda p: pack(cmd_fields(p), op=3, count=5), SmErr.BAD_OP),
    "parts": (lambda p: cfg_encode(p, 1, 0, 3, 0, 10), SmErr.BAD_CFG),    # 8 > n_part 4
    "chan0": (lambda p: cfg_encode(p, 1, 0, 2, 5, 10), SmErr.BAD_CFG),    # 5 + 4 > 8
    "count0": (lambda p: cfg_encode(p, 1, 0, 0, 0, 0), SmErr.BAD_CFG),
    "long": (lambda p: cfg_encode(p, 1, 0, 0, 0, p.max_context + 1), SmErr.TOO_LONG),
}


@pytest.mark.parametrize("busy", [False, True])
@pytest.mark.parametrize("bad", BAD_CMDS)
def test_malformed_command_dropped_state_intact(seed, bad, busy):
    rng = np.random.default_rng(seed)
    m, _ = _busy_model(rng) if busy else (SoftmaxModel(SP), None)
    word, code = BAD_CMDS[bad][0](SP), BAD_CMDS[bad][1]
    before = m.state()
    o = m.step(1, word, 0, 0, 1, 1)
    assert o.cmd_ready == 1                               # rejected at once, even if busy
    o2 = m.step(0, 0, 0, 0, 1, 1)
    assert o2.err == code and o2.err_count == 1 and m.step(*_idle_inputs(SP)).err == 0
    assert state_diff(before, m.state(), ignore=("cycle", "err", "err_count")) == []


def test_malformed_beats(seed):
    rng = np.random.default_rng(seed)
    m, s = _busy_model(rng)
    f = in_fields(SP)
    for chan, code in ((1, SmErr.BAD_PART), (4, SmErr.BAD_PART), (2, SmErr.EXTRA_BEAT)):
        before = m.state()
        m.step(0, 0, 1, pack(f, x=0, chan=chan), 1, 1)
        assert m.step(*_idle_inputs(SP)).in_err == code
        assert state_diff(before, m.state(), ignore=("cycle", "in_err", "err_count")) == []
    last = score_beats(s, SP, 2, 2)[-1]                   # the missing beat completes it
    m.step(0, 0, 1, last, 1, 1)
    assert m.state()["st"] == SmState.MERGE and m.state()["err_count"] == 3


def test_abort_and_reset(seed):
    rng = np.random.default_rng(seed)
    m, s = _busy_model(rng)
    assert m.peek_cmd_ready(pack(cmd_fields(SP), op=int(SmOp.ABORT)))
    m.step(1, pack(cmd_fields(SP), op=int(SmOp.ABORT)), 0, 0, 1, 1)
    assert m.state()["st"] == SmState.IDLE and m.idle
    _drive(SP, [(s, 0.003, 2, 2, 2)], model=m)           # a new head after the abort
    buf = m.state()["buf"]
    assert buf.any()
    m.reset()
    st = m.state()
    assert np.array_equal(st["buf"], buf)                 # rst keeps the score buffer
    assert state_diff(st, SoftmaxModel(SP).state(), ignore=("buf",)) == []
    m.reset(power_up=True)
    assert not m.state()["buf"].any()


# --- bad Python input ---------------------------------------------------------------------
@pytest.mark.parametrize("i,value", [(0, 2), (1, -1), (1, 1 << 46), (2, 0.5), (3, "x"),
                                     (4, None), (5, 1.0)])
def test_step_rejects_bad_input(i, value):
    m = SoftmaxModel(SP)
    m.step(*_idle_inputs(SP))
    ins = _idle_inputs(SP)
    ins[i] = value
    before = m.state()
    with pytest.raises(ValueError, match=m.inputs[i][0]):
        m.step(*ins)
    assert state_diff(before, m.state(), ignore=()) == []


@pytest.mark.parametrize("kw,match", [
    (dict(scores=[1.5, 2.0]), "scores of shape"), (dict(scores=[[1, 2]]), "scores of shape"),
    (dict(scores=[]), "scores of shape"), (dict(scores=np.zeros(257, int)), "scores of shape"),
    (dict(scores=[1 << 19]), r"scores\[0\]=524288"), (dict(mul=1 << 16), "mul=65536"),
    (dict(sh=64), "sh=64"), (dict(parts=3), "parts=3"), (dict(parts=8), "parts=8"),
    (dict(digits=3), "digits=3"), (dict(params="p"), "params='p'")])
def test_reference_rejects_bad_arguments(kw, match):
    args = dict(scores=[1, 2, 3], params=SP, mul=100, sh=4, parts=1, digits=1) | kw
    with pytest.raises(ValueError, match=match):
        softmax_fixed(**args)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="table of shape"):
        SmArith(SP, table=[1, 2, 3])
    with pytest.raises(ValueError, match="table of shape"):
        SmArith(SP, table=[-1] * len(exp_table(SP)))
    with pytest.raises(ValueError, match="params="):
        SoftmaxModel("SP")
    with pytest.raises(ValueError, match="chan0=6"):
        score_beats([1, 2], SP, 4, 6)
    with pytest.raises(ValueError, match="order="):
        score_beats([1, 2], SP, 1, 0, order=3)
    with pytest.raises(ValueError, match="rng="):
        SoftmaxModel(SP).run([], [], p_ready=0.5)
    with pytest.raises(ValueError, match="field count"):
        cfg_encode(SP, 1, 0, 0, 0, 1 << 16)
    with pytest.raises(ValueError, match="macro="):
        SoftmaxParams.for_macro("m")
    with pytest.raises(ValueError, match="exp_table: p="):
        exp_table(None)
    assert len(res_fields(SP)) == 5


# --- the contract document ----------------------------------------------------------------
DOC = Path(__file__).resolve().parents[2] / "docs" / "softmax.md"


def test_doc_parameter_table_and_widths():
    text = DOC.read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.match(r"`(\w+)`", cells[0]) if line.startswith("|") else None
        if m:
            rows.setdefault(m.group(1), cells)
    for f in dataclasses.fields(SoftmaxParams):
        assert rows[f.name][1] == str(f.default), f.name
        m = re.search(r"(\d+)\.\.(\d+)", rows[f.name][2])
        if m:                                      # both bounds accepted, one beyond not
            lo, hi = int(m.group(1)), int(m.group(2))
            SoftmaxParams(**{f.name: lo}), SoftmaxParams(**{f.name: hi})
            for v in (lo - 1, hi + 1):
                with pytest.raises(ValueError, match=f.name):
                    SoftmaxParams(**{f.name: v})
    for name, fn in (("cmd", cmd_fields), ("in", in_fields), ("prob", prob_fields),
                     ("res", res_fields)):
        assert rows[name][-1] == str(width(fn(DEF))), name
        flat = " ".join(text.split())
        for fld, v in fn(DEF).items():
            assert f"{fld} {v.offset}" in flat or v.offset == 0 or fld == "x", (name, fld)


def test_doc_worked_example():
    """docs/softmax.md, "Worked example" (computed by hand from the formulas)."""
    ar, t = SmArith(DEF), exp_table(DEF)
    s = np.array([1000, -500, 2000])
    x, _ = ar.scale(s, 40000, 12)
    assert x.tolist() == [9766, -4883, 19531]
    assert (t[34], t[35], int(ar.efrac(549)), int(ar.exp(9765)), int(ar.exp(24414))) == \
        (45348, 44859, 45195, 88, 0)
    tr = softmax_trace(s, DEF, 40000, 12, digits=2)
    assert (tr["m"], tr["l"], tr["qsum"], tr["qlo"]) == (19531, 65624, 127, 22)
    assert tr["probs"].tolist() == [0, 0, 127] and tr["lo"].tolist() == [22, 0, 0]
    assert ar.update(0, 0, 0, x[:2]) == (9766, 65539) and ar.rescale(65539, 9765) == 88
