"""RTL vs golden model in lockstep on Verilator (cocotb), over a configuration matrix."""
from __future__ import annotations

import pytest

from spec.params import MacroParams
from tb.build import Target, describe_mismatch, run_lockstep
from tb.stimgen import random_stimulus

# All-pairs over n_in {16,64} x n_out {4,16} x (w_bits, x_bits) x tree_stages {0,1}:
# every pair of values of any two factors appears in some row (8 rows instead of 32).
MATRIX = [
    (16, 4, 4, 4, 0), (16, 16, 4, 8, 1), (16, 4, 8, 4, 1), (16, 16, 8, 8, 0),
    (64, 16, 4, 4, 1), (64, 4, 4, 8, 0), (64, 16, 8, 4, 0), (64, 4, 8, 8, 1),
]
SMALL = MacroParams(n_in=16, n_out=4, w_bits=8, x_bits=8, n_acc=4, tree_stages=2, n_sets=4)


def _params(n_in, n_out, w, x, ts):
    return MacroParams(n_in=n_in, n_out=n_out, w_bits=w, x_bits=x, tree_stages=ts, n_acc=4)


def _group(p: MacroParams, fault: str | None = None):
    """The xdist group of the tests sharing the Verilator build of this macro."""
    return pytest.mark.xdist_group(Target("macro", p, fault).name)


@pytest.mark.parametrize("cfg", [pytest.param(c, marks=_group(_params(*c))) for c in MATRIX],
                         ids=[_params(*c).tag for c in MATRIX])
def test_lockstep_matrix(cfg, seed):
    p = _params(*cfg)
    stim = random_stimulus(p, seed, n_req=120, ready_p=0.6)
    res = run_lockstep(p, stim, label="matrix")
    assert res["ok"], describe_mismatch(res)
    assert res["transfers"] == dict(wr=len(stim.wr), req=len(stim.req), res=len(stim.req))
    # loose invariant: never faster than one request per x_bits cycles
    assert res["cycles"] >= len(stim.req) * p.x_bits


@_group(SMALL)
def test_lockstep_four_sets_two_stage_tree(seed):
    """n_sets=4, tree_stages=2, full backpressure range."""
    for i, ready_p in enumerate((1.0, 0.25)):
        stim = random_stimulus(SMALL, seed + i, n_req=150, ready_p=ready_p, gap_p=0.5)
        res = run_lockstep(SMALL, stim, label="sets4")
        assert res["ok"], describe_mismatch(res)


@_group(_params(16, 4, 4, 4, 0), "sign_add")
def test_checker_catches_sign_fault(seed):
    """A DUT that adds the sign-bit partial sum must be reported, at a res.payload compare."""
    p = _params(16, 4, 4, 4, 0)
    stim = random_stimulus(p, seed, n_req=40)
    res = run_lockstep(p, stim, fault="sign_add", label="fault")
    assert not res["ok"], "lockstep did not notice a DUT with the sign bit added"
    assert res["mismatch"]["signal"] == "res.payload"
    assert res["mismatch"]["seed"] == seed
    report = describe_mismatch(res)
    for part in (f"cycle {res['mismatch']['cycle']}: res.payload expected 0x", "in flight: wr ",
                 f"stimulus seed: {seed}", f"reproduce: SEED={seed} "):
        assert part in report, report


@_group(_params(*MATRIX[0]))      # the build of the first matrix row
def test_checker_catches_late_model(seed):
    """A model with one extra cycle of latency must be reported at res.valid."""
    p = _params(16, 4, 4, 4, 0)
    stim = random_stimulus(p, seed, n_req=10)
    res = run_lockstep(p, stim, late=1, label="late")
    assert not res["ok"], "lockstep did not notice one extra cycle of model latency"
    assert res["mismatch"]["signal"] in ("res.valid", "req.ready")
