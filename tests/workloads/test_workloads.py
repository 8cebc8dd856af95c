"""Workloads, quantisation and GEMM tiling, checked in pure numpy (no RTL).

The tiling is checked against a tiny functional interpretation of the macro written here
(independent of model/macro.py and the HDL): writes land in weight sets, a request computes
exact dot products into result entry ``dst`` (accumulating when acc=1), results come back in
request order.  Events are interleaved randomly and adversarially, subject only to the
stimulus ``after`` rules, and every interleaving must be hazard-free and decode to
``plan.expected``.  A static check shows the same for ALL timings.
"""
from __future__ import annotations

import os
from collections import deque

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workloads.quant import (dequantise, dequantise_matmul, quantise_per_channel,  # noqa: E402
                         quantise_per_token)
from spec.params import (MacroParams, req_fields, res_fields, unpack, unpack_vec,  # noqa: E402
                        wr_fields, pack, pack_vec)
from model.stimulus import Beat  # noqa: E402
from workloads.tiling import plan_gemm  # noqa: E402
from workloads import gemm as wl  # noqa: E402

SMALL = MacroParams(n_in=16, n_out=16, n_acc=4)
DEFAULT = MacroParams()


# ---------------------------------------------------------------------------------------------
# functional macro interpretation
# ---------------------------------------------------------------------------------------------
class Hazard(AssertionError):
    pass


def _decode_beats(p, stim):
    wf, rf = wr_fields(p), req_fields(p)
    wrs = []
    for b in stim.wr:
        f = unpack(wf, b.payload)
        wrs.append((f["set"], f["row"], np.array(unpack_vec(f["data"], p.n_out, p.w_bits),
                                                 dtype=np.int64), b.after))
    reqs = []
    for b in stim.req:
        f = unpack(rf, b.payload)
        reqs.append((f["set"], f["acc"], f["dst"],
                     np.array(unpack_vec(f["x"], p.n_in, p.x_bits), dtype=np.int64), b.after))
    return wrs, reqs


def run_functional(plan, rng: np.random.Generator, policy: str = "random", max_inflight=None):
    """Interleave write / request / result events under the ``after`` rules; return payloads.

    Raises Hazard if a write lands on a set with an in-flight request, if a set changes while
    a request that reads it is in flight, or if the schedule deadlocks.
    """
    p = plan.params
    wrs, reqs = _decode_beats(p, plan.stimulus)
    A = p.acc_width
    mod, half = 1 << A, 1 << (A - 1)
    W = np.zeros((p.n_sets, p.n_in, p.n_out), dtype=np.int64)
    Y = np.zeros((p.n_acc, p.n_out), dtype=object)
    rf = res_fields(p)
    nw = nr = nres = 0
    inflight = deque()     # (set, acc, dst, dot, snapshot of W[set])
    out = []
    depth = max_inflight if max_inflight is not None else int(rng.integers(1, 6))
    while nres < len(reqs):
        can_w = nw < len(wrs) and nres >= wrs[nw][3]
        can_r = nr < len(reqs) and nw >= reqs[nr][4] and len(inflight) < depth
        can_f = bool(inflight)
        opts = [e for e, ok in (("w", can_w), ("r", can_r), ("f", can_f)) if ok]
        if not opts:
            raise Hazard(f"deadlock: wr {nw}/{len(wrs)} req {nr}/{len(reqs)} res {nres}")
        if policy == "wr_first":        # writes as early as allowed: stresses write-after-read
            ev = opts[0]
        elif policy == "req_first":     # requests as early as allowed, results as late as possible
            ev = "r" if can_r else ("w" if can_w else "f")
        else:
            ev = opts[int(rng.integers(len(opts)))]
        if ev == "w":
            s, r, data, _ = wrs[nw]
            if any(f[0] == s for f in inflight):
                raise Hazard(f"write {nw} to set {s} while a request on set {s} is in flight")
            if not 0 <= r < p.n_in:
                raise Hazard(f"write {nw}: bad row {r}")
            W[s, r] = data
            nw += 1
        elif ev == "r":
            s, acc, dst, x, _ = reqs[nr]
            dot = x @ W[s]                        # exact, int64 is ample for these widths
            inflight.append((s, acc, dst, dot, W[s].copy()))
            nr += 1
        else:
            s, acc, dst, dot, snap = inflight.popleft()
            if not np.array_equal(W[s], snap):
                raise Hazard(f"set {s} changed while result {nres} was being computed")
            new = [(int(d) + (int(Y[dst, c]) if acc else 0)) for c, d in enumerate(dot)]
            new = [((v + half) % mod) - half for v in new]
            Y[dst] = new
            out.append(pack(rf, y=pack_vec(new, A), dst=dst))
            nres += 1
    assert nw == len(wrs), "writes left over after the last result"
    return out


def static_hazard_check(plan):
    """Timing-independent proof obligations on the ``after`` fields (streams are in order and
    results return in request order):

    1. every write w to set s that a request r on s does not wait for (w >= after_r) itself
       waits for r's result (after_w >= r + 1): nothing can change s under r, whatever the timing;
    2. the set r reads is therefore fully determined: writes < after_r applied, none later;
    3. no deadlock: write w never waits on a request that waits on w or a later write.
    """
    p = plan.params
    wrs, reqs = _decode_beats(p, plan.stimulus)
    wr_sets = np.array([w[0] for w in wrs])
    wr_after = np.array([w[3] for w in wrs])
    for ri, (s, _, _, _, a_r) in enumerate(reqs):
        later = np.nonzero((np.arange(len(wrs)) >= a_r) & (wr_sets == s))[0]
        bad = later[wr_after[later] < ri + 1]
        if len(bad):
            raise Hazard(f"write {bad[0]} to set {s} may land while request {ri} reads it")
    for wi, a_w in enumerate(wr_after):
        if a_w > 0 and reqs[a_w - 1][4] > wi:
            raise Hazard(f"deadlock: write {wi} waits for request {a_w - 1} which waits for it")
    # requests' after fields and writes' after fields are in order along each stream
    assert all(reqs[i][4] <= reqs[i + 1][4] for i in range(len(reqs) - 1))


def _rand_gemm(rng, T, N, K, p):
    xlo, xhi = p.x_range
    wlo, whi = p.w_range
    return (rng.integers(xlo + 1, xhi + 1, (T, K)), rng.integers(wlo + 1, whi + 1, (N, K)))


# ---------------------------------------------------------------------------------------------
# quantisation
# ---------------------------------------------------------------------------------------------
def test_quant_error_bounds_and_range(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (7, 50)) * np.exp(rng.normal(0, 1, (7, 1)))
    a[3] = 0.0
    for qt in (quantise_per_token(a), quantise_per_channel(a), quantise_per_token(a, 4)):
        m = (1 << (qt.bits - 1)) - 1
        assert qt.q.dtype == np.int64 and qt.q.min() >= -m and qt.q.max() <= m
        err = np.abs(qt.dequantise() - a)
        assert np.all(err <= qt.scale[:, None] / 2 + 1e-12)
        nz = np.abs(a).max(1) > 0
        assert np.all(np.abs(qt.q[nz]).max(1) == m)          # each row's max maps to +-qmax
        assert np.all(qt.q[3] == 0) and qt.scale[3] == 1.0
    # symmetric: q(-a) == -q(a); never -128
    assert np.array_equal(quantise_per_token(-a).q, -quantise_per_token(a).q)
    assert quantise_per_token(np.array([[-1.0, 1.0, -0.3]])).q.min() == -127


def test_quant_round_half_even_and_errors():
    q = quantise_per_token(np.array([[127.0, 2.5, 3.5, -2.5, 0.5]])).q
    assert q.tolist() == [[127, 2, 4, -2, 0]]
    with pytest.raises(ValueError):
        quantise_per_token(np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        quantise_per_channel(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        quantise_per_channel(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError):
        quantise_per_token(np.zeros((0, 3)))
    with pytest.raises(ValueError):
        dequantise(np.zeros((2, 3)), np.ones(3))
    with pytest.raises(ValueError):
        dequantise_matmul(np.zeros((2, 3)), np.ones(2), np.ones(2))


# ---------------------------------------------------------------------------------------------
# MiniLM
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    return wl.minilm_qkv(wl.MINILM_SENTENCE, DEFAULT)


def test_minilm_tokens_and_layernorm(minilm):
    from workloads import minilm as mm
    ids, toks = mm.tokenise(wl.MINILM_SENTENCE)
    # [CLS] in - memory computing keeps the weights where the arithmetic happens . [SEP]
    assert len(ids) == 14 and toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    assert "[PAD]" not in toks
    assert minilm.info["T"] == 14
    d = mm.layer0_qkv(wl.MINILM_SENTENCE)
    X = d["X"]
    assert X.shape == (14, 384) and X.dtype == np.float32
    z = (X - d["ln_beta"]) / d["ln_gamma"]            # undo the affine part: unit statistics
    assert np.abs(z.mean(1)).max() < 1e-4
    assert np.abs(z.std(1) - 1).max() < 1e-3
    assert 0.1 < X.std(1).mean() < 3.0
    for n in "qkv":
        assert d["W"][n].shape == (384, 384) and d["b"][n].shape == (384,)
    names = mm.tensor_names()
    assert "encoder.layer.0.attention.self.query.weight" in names


def test_minilm_qkv_quantised_cosine(minilm):
    for n, g in minilm.gemms.items():
        assert g.plan.T == 14 and g.plan.N == 384 and g.plan.K == 384
        assert g.plan.useful_macs == 14 * 384 * 384
        from workloads import minilm as mm
        d = mm.layer0_qkv(wl.MINILM_SENTENCE)
        xq = quantise_per_token(d["X"], 8).q.astype(np.int64)
        wq = quantise_per_channel(d["W"][n], 8).q.astype(np.int64)
        assert np.array_equal(g.plan.expected, xq @ wq.T)      # independent integer matmul
        c = g.cosine()
        assert c >= 0.999, (n, c)


def test_minilm_q_functional_default_params(minilm, seed):
    g = minilm.gemms["q"]
    s = g.plan.summary()
    assert (s["wr_beats"], s["req_beats"]) == (6 * 6 * 64, 6 * 6 * 14)
    static_hazard_check(g.plan)
    res = run_functional(g.plan, np.random.default_rng(seed), policy="random")
    y = g.plan.decode(res)
    assert np.array_equal(y, g.plan.expected)
    assert g.cosine(y) >= 0.999


# ---------------------------------------------------------------------------------------------
# Llama-3.1-8B-shaped attention scores (synthetic)
# ---------------------------------------------------------------------------------------------
def test_llama_scores(seed):
    w = wl.llama_attn_scores(DEFAULT, seed=seed)
    g = w.gemms["scores"]
    assert w.info["synthetic"] is True
    assert (g.plan.T, g.plan.N, g.plan.K) == (4, 256, 128)
    assert g.cosine() >= 0.999
    static_hazard_check(g.plan)
    for pol in ("random", "wr_first", "req_first"):
        res = run_functional(g.plan, np.random.default_rng(seed), policy=pol)
        assert np.array_equal(g.plan.decode(res), g.plan.expected)


# ---------------------------------------------------------------------------------------------
# tiling on small macros: padding, several passes, more sets, 4-bit, compact
# ---------------------------------------------------------------------------------------------
CASES = [
    (SMALL, 10, 40, 37, False),                     # 3 token passes, padding in K and N
    (SMALL, 10, 40, 37, True),
    (SMALL, 4, 16, 16, False),                      # one tile
    (SMALL, 9, 5, 70, True),                        # N < n_out, many k-tiles
    (MacroParams(n_in=16, n_out=8, n_acc=2, n_sets=4, w_bits=4, x_bits=4), 5, 20, 33, False),
    (MacroParams(n_in=16, n_out=8, n_acc=2, n_sets=4, w_bits=4, x_bits=4), 5, 20, 33, True),
    (MacroParams(n_in=8, n_out=4, n_acc=2, tree_stages=0, acc_guard=0), 3, 9, 8, False),
]


@pytest.mark.parametrize("p,T,N,K,compact", CASES)
def test_tiling_functional_any_timing(p, T, N, K, compact, seed):
    rng = np.random.default_rng([seed, T, N, K])
    xq, wq = _rand_gemm(rng, T, N, K, p)
    plan = plan_gemm(xq, wq, p, compact=compact, seed=5, wr_gap=3, req_gap=2, ready_p=0.5)
    assert np.array_equal(plan.expected, xq @ wq.T)
    assert plan.stimulus.ready_p == 0.5
    static_hazard_check(plan)
    for i, pol in enumerate(("random", "random", "random", "wr_first", "req_first")):
        res = run_functional(plan, np.random.default_rng([seed, i]), policy=pol)
        assert np.array_equal(plan.decode(res), plan.expected), pol


def test_compact_elides_writes(seed):
    rng = np.random.default_rng(seed)
    xq, wq = _rand_gemm(rng, 10, 16, 37, SMALL)    # 3 passes over the same 3 k-tiles
    full = plan_gemm(xq, wq, SMALL)
    comp = plan_gemm(xq, wq, SMALL, compact=True)
    assert full.n_wr == 3 * 3 * 16
    assert comp.n_wr < full.n_wr
    assert comp.n_req == full.n_req
    static_hazard_check(comp)
    res = run_functional(comp, np.random.default_rng(seed))
    assert np.array_equal(comp.decode(res), comp.expected)


def _misbehaves(plan, policy, seed) -> bool:
    """True if an interleaving raises Hazard or decodes to a wrong result."""
    try:
        res = run_functional(plan, np.random.default_rng(seed), policy=policy)
    except Hazard:
        return True
    return not np.array_equal(plan.decode(res), plan.expected)


def test_hazard_checks_have_teeth(seed):
    """Dropping either kind of ``after`` dependency must be caught."""
    rng = np.random.default_rng(seed)
    xq, wq = _rand_gemm(rng, 4, 32, 48, SMALL)
    good = plan_gemm(xq, wq, SMALL)
    assert not any(_misbehaves(good, pol, s) for pol in ("random", "wr_first") for s in range(5))
    plan = plan_gemm(xq, wq, SMALL)
    plan.stimulus.wr = [Beat(b.payload, b.gap, 0) for b in plan.stimulus.wr]
    with pytest.raises(Hazard):
        static_hazard_check(plan)
    assert _misbehaves(plan, "wr_first", 0)          # next tiles overwrite sets before use
    assert any(_misbehaves(plan, "random", s) for s in range(40))
    plan = plan_gemm(xq, wq, SMALL)
    plan.stimulus.req = [Beat(b.payload, b.gap, 0) for b in plan.stimulus.req]
    assert _misbehaves(plan, "req_first", 0)         # requests read sets before their tile lands


def test_plan_validation():
    p = SMALL
    with pytest.raises(ValueError, match="Xq"):
        plan_gemm(np.full((2, 4), 128), np.zeros((3, 4), dtype=int), p)
    with pytest.raises(ValueError, match="Wq"):
        plan_gemm(np.zeros((2, 4), dtype=int), np.full((3, 4), -129), p)
    with pytest.raises(ValueError, match="K="):
        plan_gemm(np.zeros((2, 4), dtype=int), np.zeros((3, 5), dtype=int), p)
    with pytest.raises(ValueError, match="non-integer"):
        plan_gemm(np.full((2, 4), 0.5), np.zeros((3, 4), dtype=int), p)
    tiny = MacroParams(n_in=2, n_out=2, acc_guard=0)   # acc_width 17: 2 k-tiles overflow
    with pytest.raises(ValueError, match="partial sum"):
        plan_gemm(np.full((1, 4), -128), np.full((1, 4), -128), tiny)
    plan = plan_gemm(np.ones((2, 4), dtype=int), np.ones((3, 4), dtype=int), p)
    with pytest.raises(ValueError, match="payloads"):
        plan.decode([])


def test_workload_stimulus_options(seed):
    a = wl.llama_attn_scores(SMALL, n_keys=32, head_dim=24, group=3, seed=seed)
    b = wl.llama_attn_scores(SMALL, n_keys=32, head_dim=24, group=3, seed=seed, stim_seed=9,
                             wr_gap=2, req_gap=1, ready_p=0.3)
    ga, gb = a.gemms["scores"], b.gemms["scores"]
    assert np.array_equal(ga.plan.expected, gb.plan.expected)     # same data
    assert gb.plan.stimulus.seed == 9 and gb.plan.stimulus.ready_p == 0.3
    assert any(x.gap for x in gb.plan.stimulus.wr) and not any(x.gap for x in ga.plan.stimulus.wr)
    assert ga.plan.tokens_per_pass == 3 and ga.plan.k_tiles == 2 and ga.plan.n_tiles == 2
    res = run_functional(gb.plan, np.random.default_rng(seed))
    assert np.array_equal(gb.plan.decode(res), gb.plan.expected)
    with pytest.raises(TypeError):
        wl.llama_attn_scores(SMALL, bogus=1)
