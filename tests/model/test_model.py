"""Tests of the golden model: numerics (model/numerics.py), the cycle-exact macro model
(model/macro.py) against the timing contract in docs/macro.md, and the trace type.

Every random test takes the ``seed`` fixture (tests/conftest.py): ``SEED=n`` reproduces it.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, seed as hypothesis_seed, settings, strategies as st

from model.interface import state_diff
from model.macro import MacroModel, MacroOut
from model.numerics import (bitserial_dot, matvec, pack_signed, tiled_matmul, unpack_signed,
                            wrap)
from spec.params import (MacroErr, MacroParams, pack, pack_vec, req_fields, res_fields,
                        unpack_vec, wr_fields)
from model.stimulus import TAIL, Beat, Stimulus
from model.trace import Trace

COMBOS = [(w, x) for w in (4, 8) for x in (4, 8)]
N_INS = (2, 16, 64, 144)


# --- helpers -------------------------------------------------------------------------------
def rand_ops(rng, p, batch):
    wlo, whi = p.w_range
    xlo, xhi = p.x_range
    return (rng.integers(xlo, xhi + 1, (batch, p.n_in)),
            rng.integers(wlo, whi + 1, (p.n_in, p.n_out)))


def wr_beat(p, W_row, row, set_):
    return pack(wr_fields(p), data=pack_vec(W_row, p.w_bits), row=row, set=set_)


def req_beat(p, x, set_=0, acc=0, dst=0):
    return pack(req_fields(p), x=pack_vec(x, p.x_bits), set=set_, acc=acc, dst=dst)


def res_unpack(p, payload):
    f = res_fields(p)
    return (unpack_signed(payload, p.n_out, p.acc_width),
            (payload >> f["dst"].offset) & ((1 << f["dst"].width) - 1))


def idle(m, n=1, res_ready=1):
    outs = []
    for _ in range(n):
        outs.append(m.step(0, 0, 0, 0, res_ready))
    return outs


def load(m, p, W, set_=0):
    for r in range(p.n_in):
        o = m.step(1, wr_beat(p, W[r], r, set_), 0, 0, 1)
        assert o.wr_ready == 1
    idle(m)            # err of the last write


# --- numerics ------------------------------------------------------------------------------
@pytest.mark.parametrize("w_bits,x_bits", COMBOS)
@pytest.mark.parametrize("n_in", N_INS)
def test_bitserial_random(w_bits, x_bits, n_in, seed):
    p = MacroParams(n_in=n_in, n_out=24, w_bits=w_bits, x_bits=x_bits)
    rng = np.random.default_rng([seed, n_in, w_bits, x_bits])
    x, W = rand_ops(rng, p, 16)
    got = bitserial_dot(x, W, p)
    assert np.array_equal(got, x @ W), f"{p.tag}"
    assert np.array_equal(bitserial_dot(x[3], W, p), x[3] @ W), f"{p.tag} 1-D"
    assert np.array_equal(matvec(x, W), x @ W)


@pytest.mark.parametrize("w_bits,x_bits", COMBOS)
@pytest.mark.parametrize("n_in", N_INS)
def test_bitserial_extreme(w_bits, x_bits, n_in):
    p = MacroParams(n_in=n_in, n_out=6, w_bits=w_bits, x_bits=x_bits)
    (wlo, whi), (xlo, xhi) = p.w_range, p.x_range
    cases = {
        "all-min": (xlo, wlo), "all-max": (xhi, whi),
        "xmin-wmax": (xlo, whi), "xmax-wmin": (xhi, wlo),
        "x-1-wmin": (-1, wlo), "zero": (0, wlo),
    }
    for name, (xv, wv) in cases.items():
        x = np.full((1, n_in), xv)
        W = np.full((n_in, p.n_out), wv)
        got = bitserial_dot(x, W, p)
        assert np.array_equal(got, x @ W), f"{name} {p.tag}: {got[0, :3]} vs {(x @ W)[0, :3]}"
    # mixed: alternating extremes in x rows and W columns
    x = np.where(np.arange(n_in) % 2, xlo, xhi)[None, :]
    W = np.where((np.arange(n_in)[:, None] + np.arange(p.n_out)) % 3 == 0, wlo, whi)
    assert np.array_equal(bitserial_dot(x, W, p), x @ W), f"mixed {p.tag}"
    # the all-minimum product is the largest positive single-tile value and must not wrap
    assert (n_in * xlo * wlo) < (1 << (p.acc_width - 1))


def test_bitserial_hypothesis(seed):
    """Hypothesis search seeded by ``seed`` (no example database, so the seed replays it)."""
    @hypothesis_seed(seed)
    @settings(max_examples=60, deadline=None, database=None)
    @given(st.sampled_from(COMBOS), st.integers(2, 40), st.integers(1, 9), st.data())
    def check(combo, n_in, n_out, data):
        p = MacroParams(n_in=n_in, n_out=n_out, w_bits=combo[0], x_bits=combo[1])
        (wlo, whi), (xlo, xhi) = p.w_range, p.x_range
        x = data.draw(st.lists(st.integers(xlo, xhi), min_size=n_in, max_size=n_in))
        W = data.draw(st.lists(st.lists(st.integers(wlo, whi), min_size=n_out, max_size=n_out),
                               min_size=n_in, max_size=n_in))
        x, W = np.array(x), np.array(W)
        assert np.array_equal(bitserial_dot(x, W, p), x @ W), p.tag
    check()


def test_tiled_matmul(seed):
    rng = np.random.default_rng([seed, 1])
    for w_bits, x_bits in COMBOS:
        p = MacroParams(n_in=16, n_out=8, w_bits=w_bits, x_bits=x_bits)
        for K, N in ((17, 8), (100, 20), (16 * 64, 3)):
            (xlo, xhi), (wlo, whi) = p.x_range, p.w_range
            X = rng.integers(xlo, xhi + 1, (5, K))
            W = rng.integers(wlo, whi + 1, (K, N))
            assert np.array_equal(tiled_matmul(X, W, p), X @ W), f"{p.tag} K={K}"
        # extreme operands over 2**acc_guard tiles: still exact
        K = p.n_in << p.acc_guard
        X = np.full((1, K), xlo)
        W = np.full((K, 2), wlo)
        assert np.array_equal(tiled_matmul(X, W, p), X @ W), p.tag
    # without guard bits, many extreme tiles wrap modulo 2**acc_width
    p = MacroParams(n_in=4, n_out=2, w_bits=4, x_bits=4, acc_guard=0)
    X = np.full(4 * 8, -8)
    W = np.full((4 * 8, 2), -8)
    assert np.array_equal(tiled_matmul(X, W, p), wrap(X @ W, p.acc_width))
    assert not np.array_equal(wrap(X @ W, p.acc_width), X @ W)


def test_wrap_and_codecs(seed):
    assert wrap(127, 8) == 127 and wrap(128, 8) == -128 and wrap(-129, 8) == 127
    assert np.array_equal(wrap(np.array([255, 256, -1]), 8), [-1, 0, -1])
    rng = np.random.default_rng([seed, 2])
    for bits in (4, 8, 13, 28, 42):
        v = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), 37)
        word = pack_signed(v, bits)
        assert word == pack_vec(v.tolist(), bits), bits
        assert np.array_equal(unpack_signed(word, 37, bits), v), bits
        assert unpack_vec(word, 37, bits) == v.tolist()


def test_numerics_value_errors():
    p = MacroParams(n_in=4, n_out=3, w_bits=4, x_bits=4)
    W = np.zeros((4, 3), int)
    with pytest.raises(ValueError, match=r"x\[0, 2\] = 8 outside"):
        bitserial_dot(np.array([[0, 0, 8, 0]]), W, p)
    with pytest.raises(ValueError, match=r"W\[1, 0\] = -9"):
        bitserial_dot(np.zeros(4, int), np.array([[0] * 3, [-9, 0, 0], [0] * 3, [0] * 3]), p)
    with pytest.raises(ValueError, match=r"W shape \(3, 3\)"):
        bitserial_dot(np.zeros(4, int), np.zeros((3, 3), int), p)
    with pytest.raises(ValueError, match=r"x shape"):
        bitserial_dot(np.zeros(5, int), W, p)
    with pytest.raises(ValueError, match=r"x\[1\] = 0.5"):
        bitserial_dot(np.array([0, 0.5, 0, 0]), W, p)
    with pytest.raises(ValueError, match=r"bits=0"):
        wrap(3, 0)
    with pytest.raises(ValueError, match=r"does not match"):
        tiled_matmul(np.zeros((2, 5), int), np.zeros((6, 3), int), p)
    with pytest.raises(ValueError, match=r"X\[0, 1\] = -9"):
        tiled_matmul(np.array([[0, -9, 0, 0, 0]]), np.zeros((5, 3), int), p)
    with pytest.raises(ValueError, match=r"does not match"):
        matvec(np.zeros(3, int), np.zeros((4, 2), int))


# --- macro model: timing contract ----------------------------------------------------------
def expected_latency(p: MacroParams) -> int:
    # docs/macro.md: accepted in cycle t -> res_valid from cycle t + x_bits + tree_stages + 1
    return p.x_bits + p.tree_stages + 1


@pytest.mark.parametrize("tree_stages", (0, 1, 2))
@pytest.mark.parametrize("x_bits", (4, 8))
def test_single_request_latency(tree_stages, x_bits, seed):
    p = MacroParams(n_in=8, n_out=5, x_bits=x_bits, tree_stages=tree_stages)
    rng = np.random.default_rng([seed, 3, tree_stages, x_bits])
    x, W = rand_ops(rng, p, 1)
    m = MacroModel(p)
    load(m, p, W, set_=1)
    t = m.cycle
    o = m.step(0, 0, 1, req_beat(p, x[0], set_=1, dst=2), 1)
    assert o.req_ready == 1 and o.busy == 0
    seen = None
    for _ in range(40):
        c = m.cycle
        o = m.step(0, 0, 0, 0, 1)
        assert o.busy == int(t + 1 <= c <= t + x_bits), f"busy in cycle {c - t} after accept"
        if o.res_valid:
            seen = c
            break
    assert seen == t + expected_latency(p), f"latency {seen - t} != {expected_latency(p)}"
    y, dst = res_unpack(p, o.res_payload)
    assert dst == 2 and np.array_equal(y, x[0] @ W)
    o = m.step(0, 0, 0, 0, 1)
    assert o.res_valid == 0                   # transferred in the previous cycle
    assert np.array_equal(m.state()["y"][2], x[0] @ W)


@pytest.mark.parametrize("tree_stages", (0, 2))
@pytest.mark.parametrize("x_bits", (4, 8))
def test_back_to_back_throughput(tree_stages, x_bits, seed):
    p = MacroParams(n_in=8, n_out=4, x_bits=x_bits, tree_stages=tree_stages)
    rng = np.random.default_rng([seed, 4])
    xs, W = rand_ops(rng, p, 6)
    m = MacroModel(p)
    load(m, p, W)
    t0 = m.cycle
    accepts, results, i = [], [], 0
    while len(results) < len(xs):
        c = m.cycle
        v = int(i < len(xs))
        o = m.step(0, 0, v, req_beat(p, xs[i], dst=i) if v else 0, 1)
        if v and o.req_ready:
            accepts.append(c)
            i += 1
        if o.res_valid:
            results.append((c, o.res_payload))
        assert c < t0 + 200
    X = p.x_bits
    assert accepts == [t0 + k * X for k in range(len(xs))], (accepts, t0)
    assert [c for c, _ in results] == [a + expected_latency(p) for a in accepts]
    for k, (_, pay) in enumerate(results):
        y, dst = res_unpack(p, pay)
        assert dst == k and np.array_equal(y, xs[k] @ W), k


@pytest.mark.parametrize("tree_stages", (0, 1, 2))
def test_stall_holds_results(tree_stages, seed):
    p = MacroParams(n_in=8, n_out=4, x_bits=4, tree_stages=tree_stages)
    rng = np.random.default_rng([seed, 5, tree_stages])
    xs, W = rand_ops(rng, p, 5)
    m = MacroModel(p)
    load(m, p, W)
    t0 = m.cycle
    # res.ready low for 40 cycles, then high; requests offered back to back all the time
    got, prev, i = [], None, 0
    for _ in range(120):
        c = m.cycle
        rr = int(c >= t0 + 40)
        v = int(i < len(xs))
        s0 = m.state()
        o = m.step(0, 0, v, req_beat(p, xs[i], dst=i, acc=0) if v else 0, rr)
        if v and o.req_ready:
            i += 1
        if prev is not None and prev.res_valid and not prev_rr:
            # payload stable and valid held while not ready
            assert o.res_valid == 1 and o.res_payload == prev.res_payload, c
        if o.res_valid and rr:
            got.append(o.res_payload)
        if not rr and o.res_valid:
            # while stalled nothing is accepted and the pipeline holds
            s1 = m.state()
            if s0["pipe"] and s0["pipe"][-1]["valid"] and s0["pipe"][-1]["last"] or \
                    (not s0["pipe"] and s0["busy"] and s0["k"] == p.x_bits - 1):
                assert o.req_ready == 0
                assert state_diff(s0, s1) == [], state_diff(s0, s1)
                assert s1["busy"] == s0["busy"] and s1["k"] == s0["k"]
        prev, prev_rr = o, rr
    assert len(got) == len(xs), f"lost results: {len(got)}"
    for k, pay in enumerate(got):
        y, dst = res_unpack(p, pay)
        assert dst == k and np.array_equal(y, xs[k] @ W), k


def test_hazard_write_dropped(seed):
    p = MacroParams(n_in=8, n_out=4)
    rng = np.random.default_rng([seed, 6])
    xs, W = rand_ops(rng, p, 1)
    m = MacroModel(p)
    load(m, p, W, set_=0)
    m.step(0, 0, 1, req_beat(p, xs[0], set_=0), 1)
    idle(m, 2)
    before = m.state()
    assert before["busy"] == 1
    new_row = np.full(p.n_out, 5)
    o = m.step(1, wr_beat(p, new_row, 3, 0), 0, 0, 1)        # write to the busy set
    assert o.wr_ready == 1 and o.err == 0
    mid = m.state()
    assert mid["err"] == MacroErr.WR_HAZARD and np.array_equal(mid["W"], before["W"])
    o = m.step(0, 0, 0, 0, 1)
    assert o.err == MacroErr.WR_HAZARD
    after = m.state()
    assert np.array_equal(after["W"], before["W"]), "hazard write must be dropped"
    o = m.step(0, 0, 0, 0, 1)
    assert o.err == 0                                         # one cycle only
    # a write to the other set while busy lands
    m.step(1, wr_beat(p, new_row, 3, 1), 0, 0, 1)
    o = m.step(0, 0, 0, 0, 1)
    assert o.err == 0 and np.array_equal(m.state()["W"][1, 3], new_row)
    # the result used the original weights
    while not o.res_valid:
        o = m.step(0, 0, 0, 0, 1)
    assert np.array_equal(res_unpack(p, o.res_payload)[0], xs[0] @ W)
    # not busy: a write in the same cycle as a request for that set lands before its first bit
    idle(m, 3)
    assert m.state()["busy"] == 0
    W2 = W.copy()
    W2[0] = -7
    o = m.step(1, wr_beat(p, W2[0], 0, 0), 1, req_beat(p, xs[0], set_=0, dst=1), 1)
    assert o.req_ready == 1
    o = m.step(0, 0, 0, 0, 1)
    assert o.err == 0
    while not o.res_valid:
        o = m.step(0, 0, 0, 0, 1)
    assert np.array_equal(res_unpack(p, o.res_payload)[0], xs[0] @ W2)


def test_bad_row_write():
    p = MacroParams(n_in=6, n_out=3)
    m = MacroModel(p)
    W = np.arange(18).reshape(6, 3) - 9
    load(m, p, W)
    before = m.state()
    o = m.step(1, wr_beat(p, np.full(3, 1), 7, 0), 0, 0, 1)
    assert o.err == 0
    assert state_diff(before, m.state()) == ["err: 0 != 2"]      # only err changed
    o = m.step(0, 0, 0, 0, 1)
    assert o.err == MacroErr.WR_BAD_ROW
    assert m.step(0, 0, 0, 0, 1).err == 0
    assert state_diff(before, m.state()) == []


def test_accumulate_two_entries(seed):
    p = MacroParams(n_in=8, n_out=4)
    rng = np.random.default_rng([seed, 7])
    xs, W = rand_ops(rng, p, 6)
    m = MacroModel(p)
    load(m, p, W)
    plan = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 1), (1, 0)]    # (dst, acc)
    ref = np.zeros((2, p.n_out), dtype=np.int64)
    expect = []
    for (dst, acc), x in zip(plan, xs, strict=True):
        ref[dst] = wrap((ref[dst] if acc else 0) + x @ W, p.acc_width)
        expect.append((ref[dst].copy(), dst))
    got, i = [], 0
    while len(got) < len(plan):
        v = int(i < len(plan))
        o = m.step(0, 0, v, req_beat(p, xs[i], dst=plan[i][0], acc=plan[i][1]) if v else 0,
                   m.cycle % 3 != 0)                    # some backpressure too
        if v and o.req_ready:
            i += 1
        if o.res_valid and (m.cycle - 1) % 3 != 0:
            got.append(res_unpack(p, o.res_payload))
    for k, ((y, d), (ey, ed)) in enumerate(zip(got, expect, strict=True)):
        assert d == ed and np.array_equal(y, ey), k
    assert np.array_equal(m.state()["y"][:2], ref)


def test_late_fault_changes_timing(seed):
    p = MacroParams(n_in=4, n_out=2, x_bits=4, tree_stages=1)
    lat = {}
    for late in (0, 1, 3):
        m = MacroModel(p, late=late)
        load(m, p, np.ones((4, 2), int))
        t = m.cycle
        m.step(0, 0, 1, req_beat(p, [1, 2, 3, 4]), 1)
        while not m.step(0, 0, 0, 0, 1).res_valid:
            pass
        lat[late] = m.cycle - 1 - t
    assert lat == {0: expected_latency(p), 1: expected_latency(p) + 1,
                   3: expected_latency(p) + 3}
    stim = random_stimulus(p, np.random.default_rng([seed, 8]), 10, 6, 1.0, 1)
    assert MacroModel(p).run(stim) != MacroModel(p, late=1).run(stim)


def test_model_value_errors():
    with pytest.raises(ValueError, match="late=-1"):
        MacroModel(MacroParams(), late=-1)
    with pytest.raises(ValueError, match="params"):
        MacroModel(None)
    p = MacroParams(n_in=4, n_out=2)
    with pytest.raises(ValueError, match="stimulus params"):
        MacroModel(p).run(Stimulus(MacroParams(n_in=8, n_out=2)))
    with pytest.raises(ValueError, match="header"):
        Trace.loads("nope\n")
    with pytest.raises(ValueError, match="end"):
        Trace.loads("cimphony-trace 1\n3 wr 0\n")


def test_reset_and_state():
    p = MacroParams(n_in=4, n_out=2, n_sets=4, n_acc=4, tree_stages=2)
    m = MacroModel(p)
    s0 = m.state()
    assert s0["W"].shape == (4, 4, 2) and s0["y"].shape == (4, 2)
    assert len(s0["pipe"]) == 2 and s0["busy"] == 0 and s0["err"] == 0
    load(m, p, np.full((4, 2), 3), set_=2)
    m.step(0, 0, 1, req_beat(p, [1, -1, 2, -2], set_=2, dst=3), 1)
    idle(m, 4)
    s = m.state()
    assert s["cur_set"] == 2 and s["cur_dst"] == 3 and list(s["cur_x"]) == [1, -1, 2, -2]
    assert s["pipe"][0]["valid"] and s["pipe"][1]["valid"]
    m.reset()                      # rst: registers cleared, the weight SRAM kept
    s1 = m.state()
    assert m.cycle == 0 and state_diff(s0, s1, ignore=("cycle", "W")) == []
    # only set 2 of W differs: its n_in x n_out = 8 weights, first W[2][0][0]
    assert state_diff(s0, s1) == ["W[2][0][0]: 0 != 3 (and 7 more elements)"]
    assert (s1["W"][2] == 3).all() and (s1["W"][[0, 1, 3]] == 0).all()
    m.reset(power_up=True)         # a fresh device: weights zero too
    assert state_diff(s0, m.state()) == []


# --- random stimulus vs numerics -----------------------------------------------------------
def random_stimulus(p, rng, n_wr, n_req, ready_p, sd, bad_rows=True) -> Stimulus:
    """Random weight writes (random rows/sets, some bad rows, hazards by chance) and requests.

    Dependencies are deadlock-free: req ``after`` (writes needed) is nondecreasing, and wr
    beat i waits for at most as many results as there are requests that need <= i writes.
    """
    (wlo, whi), (xlo, xhi) = p.w_range, p.x_range
    row_hi = (1 << p.row_bits) if bad_rows else p.n_in
    b = np.sort(rng.integers(0, n_wr + 1, n_req))
    wr, a_prev = [], 0
    for i in range(n_wr):
        cnt = int(np.searchsorted(b, i, side="right"))      # requests needing <= i writes
        a = int(rng.integers(a_prev, cnt + 1)) if rng.random() < 0.3 else a_prev
        a_prev = a
        row = int(rng.integers(0, row_hi))
        vals = rng.integers(wlo, whi + 1, p.n_out)
        if rng.random() < 0.1:
            vals[:] = wlo
        wr.append(Beat(wr_beat(p, vals, row, int(rng.integers(0, p.n_sets))),
                       gap=int(rng.integers(0, 4)) if rng.random() < 0.5 else 0, after=a))
    req = []
    for j in range(n_req):
        x = rng.integers(xlo, xhi + 1, p.n_in)
        if rng.random() < 0.1:
            x[:] = xlo
        req.append(Beat(req_beat(p, x, set_=int(rng.integers(0, p.n_sets)),
                                 acc=int(rng.random() < 0.4),
                                 dst=int(rng.integers(0, min(p.n_acc, 4)))),
                        gap=int(rng.integers(0, 12)) if rng.random() < 0.3 else 0,
                        after=int(b[j])))
    return Stimulus(p, wr, req, ready_p=ready_p, seed=sd)


def check_trace(p, stim, tr, tag):
    """Independent transaction-level check of a trace against numerics.bitserial_dot."""
    assert tr.status == "ok", tag
    wf, rf = wr_fields(p), req_fields(p)
    wrs, reqs, ress = tr.of("wr"), tr.of("req"), tr.of("res")
    errs = dict(tr.of("err"))
    assert len(wrs) == len(stim.wr) and len(reqs) == len(stim.req) == len(ress), tag
    W = np.zeros((p.n_sets, p.n_in, p.n_out), dtype=np.int64)
    y = np.zeros((p.n_acc, p.n_out), dtype=np.int64)
    no_stall = stim.ready_p >= 1.0
    # writes that err; every err must be exactly one cycle after a write beat
    wr_cycles = {c for c, _ in wrs}
    assert all(c - 1 in wr_cycles for c in errs), f"{tag}: err without a write beat"
    busy = []                                   # (first, last) issue cycles per request
    for j, (t, _) in enumerate(reqs):
        busy.append((t + 1, t + p.x_bits))
    wi = 0
    expect = []
    for j, (t, _) in enumerate(reqs):
        while wi < len(wrs) and wrs[wi][0] <= t:
            c = wrs[wi][0]
            f = {k: (stim.wr[wi].payload >> fl.offset) & ((1 << fl.width) - 1)
                 for k, fl in wf.items()}
            code = errs.get(c + 1, 0)
            if f["row"] >= p.n_in:
                assert code == MacroErr.WR_BAD_ROW, f"{tag}: wr {wi} bad row not flagged"
            elif no_stall:
                # independent hazard predicate: set of the request issuing in cycle c
                hz = any(a <= c <= bb and
                         ((stim.req[jj].payload >> rf["set"].offset) & ((1 << rf["set"].width) - 1))
                         == f["set"] for jj, (a, bb) in enumerate(busy))
                assert code == (MacroErr.WR_HAZARD if hz else 0), f"{tag}: wr {wi} at {c}"
            if code == 0:
                W[f["set"], f["row"]] = unpack_signed(f["data"], p.n_out, p.w_bits)
            wi += 1
        pay = stim.req[j].payload
        f = {k: (pay >> fl.offset) & ((1 << fl.width) - 1) for k, fl in rf.items()}
        x = unpack_signed(f["x"], p.n_in, p.x_bits)
        new = wrap(bitserial_dot(x, W[f["set"]], p) + (y[f["dst"]] if f["acc"] else 0),
                   p.acc_width)
        y[f["dst"]] = new
        expect.append(pack_signed(new, p.acc_width) | (f["dst"] << res_fields(p)["dst"].offset))
        if no_stall:
            assert ress[j][0] == t + expected_latency(p), f"{tag}: result {j} timing"
    for j, ((c, got), exp) in enumerate(zip(ress, expect, strict=True)):
        assert got == exp, f"{tag}: result {j} (cycle {c}) mismatch"
    # end rule (model/trace.py): the cycle in which every beat was sent and every result
    # received, + TAIL + 1 (a write may transfer after the last result)
    assert tr.cycles == max(c for c, _ in wrs + reqs + ress) + TAIL + 1, tag


CONFIGS = [
    MacroParams(),
    MacroParams(n_in=6, n_out=5, w_bits=4, x_bits=4, tree_stages=0, n_acc=4),
    MacroParams(n_in=20, n_out=7, w_bits=8, x_bits=4, tree_stages=2, n_sets=4),
    MacroParams(n_in=3, n_out=9, w_bits=4, x_bits=8, tree_stages=1, acc_guard=0),
]


@pytest.mark.parametrize("ready_p", (1.0, 0.4))
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_random_stimulus_vs_numerics(cfg, ready_p, seed):
    p = CONFIGS[cfg]
    sd = (seed + cfg) % (1 << 32)
    rng = np.random.default_rng([sd, int(ready_p * 10)])
    stim = random_stimulus(p, rng, n_wr=3 * p.n_in + 20, n_req=40, ready_p=ready_p, sd=sd)
    tr = MacroModel(p).run(stim)
    check_trace(p, stim, tr, f"seed={sd} ready_p={ready_p} {p.tag}")
    assert tr.of("err"), "stimulus should exercise error codes"
    # trace text round trip
    assert Trace.loads(tr.dumps()) == tr


def test_run_end_rule_and_empty():
    p = MacroParams(n_in=4, n_out=2)
    tr = MacroModel(p).run(Stimulus(p))
    assert tr.events == [] and tr.cycles == TAIL + 1
    stim = Stimulus(p, wr=[Beat(wr_beat(p, [1, 1], 5 % 4, 0), gap=3)])
    tr = MacroModel(p).run(stim)
    assert tr.events == [(3, "wr", 0)] and tr.cycles == 3 + TAIL + 1
    # a write that waits for a result that never comes: timeout
    stim = Stimulus(p, wr=[Beat(0, after=1)])
    tr = MacroModel(p).run(stim, max_cycles=50)
    assert tr.status == "timeout" and tr.cycles == 50


def test_macroout_fields():
    m = MacroModel(MacroParams(n_in=4, n_out=2))
    o = m.step(0, 0, 0, 0, 1)
    assert isinstance(o, MacroOut)
    assert o == MacroOut(wr_ready=1, req_ready=1, res_valid=0, res_payload=0, err=0, busy=0)
    assert m.cycle == 1


@pytest.mark.parametrize("tree_stages", (0, 1, 2))
def test_accumulator_and_pipeline_state(tree_stages, seed):
    """acc after the j-th beat equals (x >> (X-1-j)) @ W (arithmetic shift): the MSB-first
    partial product; pipeline stage i holds the psum of bit X-1-j of beat j."""
    p = MacroParams(n_in=8, n_out=3, x_bits=8, tree_stages=tree_stages)
    rng = np.random.default_rng([seed, 9, tree_stages])
    xs, W = rand_ops(rng, p, 1)
    x, X, P = xs[0], p.x_bits, tree_stages
    m = MacroModel(p)
    load(m, p, W)
    t = m.cycle
    m.step(0, 0, 1, req_beat(p, x), 1)                  # edge ending cycle t: accept
    for c in range(t + 1, t + X + P + 1):
        m.step(0, 0, 0, 0, 1)                           # edge ending cycle c
        s = m.state()
        j = c - (t + 1) - P                             # beat the acc stage took at this edge
        if j >= 0:
            assert np.array_equal(s["acc"], (x >> (X - 1 - j)) @ W), (c - t, j)
        for i, stg in enumerate(s["pipe"]):             # stage i holds beat c-(t+1)-i
            jb = c - (t + 1) - i
            assert stg["valid"] == int(0 <= jb < X), (c - t, i)
            if stg["valid"]:
                assert stg["first"] == int(jb == 0) and stg["last"] == int(jb == X - 1)
                assert np.array_equal(stg["psum"], ((x >> (X - 1 - jb)) & 1) @ W), (c - t, i)
