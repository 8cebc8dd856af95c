"""Trace-compare mode: Verilated macro in the C++ harness (tb/harness.cpp) vs the golden model.

Small configurations only (each build takes 5-15 s; the default macro is exercised by
``make bench``).  Random tests take the ``seed`` fixture (``SEED=n`` reproduces them).
"""
from __future__ import annotations

import numpy as np
import pytest

from spec.params import MacroErr, MacroParams, pack, pack_vec, req_fields, wr_fields
from model.stimulus import TAIL, Beat, Stimulus, ready_pattern
from model.trace import Trace
from tb import trace
from tb.stimgen import random_stimulus

SMALL = MacroParams(n_in=16, n_out=4, w_bits=4, x_bits=4)
MID = MacroParams(n_in=16, n_out=16, w_bits=8, x_bits=8, tree_stages=2)
ODD = MacroParams(n_in=12, n_out=4, w_bits=4, x_bits=4)   # rows 12..15 addressable: bad rows


@pytest.mark.parametrize("p", [SMALL, MID], ids=lambda p: p.tag)
@pytest.mark.parametrize("ready_p", [1.0, 0.5])
@pytest.mark.parametrize("k", range(3))
def test_random_zero_mismatches(p, ready_p, k, seed):
    rng = np.random.default_rng(seed)
    stim = random_stimulus(p, seed, n_req=int(rng.integers(40, 160)), ready_p=ready_p,
                           gap_p=float(rng.choice([0.0, 0.3, 0.7])),
                           max_gap=int(rng.integers(1, 12)), dep_p=float(rng.choice([0.0, 0.3, 0.6])))
    m, stats = trace.trace_check(p, stim)
    assert stats["dut_status"] == "ok", f"seed {seed}: harness timed out"
    assert m is None, f"seed {seed} ({p.tag}, ready_p={ready_p}): {m}"
    assert stats["dut_cycles"] == stats["model_cycles"]
    assert stats["events"] > len(stim.req)


def _signed_stimulus(p: MacroParams, seed: int) -> Stimulus:
    """Set 0 filled with random weights, then requests whose inputs are all negative."""
    rng = np.random.default_rng(seed)
    wf, rf = wr_fields(p), req_fields(p)
    wlo, whi = p.w_range
    xlo, _ = p.x_range
    wr = [Beat(pack(wf, data=pack_vec(rng.integers(wlo, whi + 1, p.n_out), p.w_bits), row=r, set=0))
          for r in range(p.n_in)]
    req = [Beat(pack(rf, x=pack_vec(rng.integers(xlo, 0, p.n_in), p.x_bits), set=0, acc=0,
                     dst=i % p.n_acc), gap=int(rng.integers(0, 3)), after=p.n_in)
           for i in range(8)]
    return Stimulus(p, wr, req, ready_p=1.0, seed=seed, note="negative inputs")


def test_fault_sign_add_is_caught(seed):
    stim = _signed_stimulus(SMALL, seed)
    m, _ = trace.trace_check(SMALL, stim, quiet=True)
    assert m is None, f"seed {seed}: healthy DUT mismatches: {m}"
    m, _ = trace.trace_check(SMALL, stim, fault="sign_add", quiet=True)
    assert m is not None, f"seed {seed}: fault sign_add not caught"
    assert m.signal == "res" and m.expected is not None and m.actual is not None, str(m)
    assert m.seed == seed and "columns differ" in m.detail


def test_late_model_is_caught(seed):
    stim = random_stimulus(SMALL, seed, n_req=30, ready_p=1.0)
    m, _ = trace.trace_check(SMALL, stim, late=1, quiet=True)
    assert m is not None, f"seed {seed}: model with late=1 not caught"
    assert m.signal == "res", str(m)
    # the DUT delivers the first result one cycle before the (late) model expects it
    assert m.expected is None and m.actual is not None, str(m)


@pytest.mark.parametrize("hseed", [0, 1, 0xDEADBEEF, 0xFFFFFFFF])
@pytest.mark.parametrize("threshold", [0, 1, 32768, 45875, 65535, 65536])
def test_ready_hash_matches_model(hseed, threshold):
    n = 5000
    cpp = np.array(trace.dump_ready(SMALL, hseed, threshold, n), dtype=np.uint8)
    py = ready_pattern(hseed, 0, n, threshold)
    bad = np.nonzero(cpp != py)[0]
    assert bad.size == 0, f"seed {hseed} threshold {threshold}: first differing cycle {bad[:1]}"


def test_empty_stimulus_runs_tail():
    stim = Stimulus(SMALL, seed=3)
    m, stats = trace.trace_check(SMALL, stim)
    assert m is None, str(m)
    assert stats["dut_cycles"] == TAIL + 1


def test_deadlock_times_out_identically():
    """A write waiting for a result that never comes: both sides hit the same cycle bound."""
    wf = wr_fields(SMALL)
    stim = Stimulus(SMALL, wr=[Beat(pack(wf, data=1, row=0, set=0), after=1)], seed=5)
    dut, stats = trace.run_trace(SMALL, stim)
    assert dut.status == "timeout" and stats["dut_status"] == "timeout"
    m, _ = trace.trace_check(SMALL, stim)
    assert m is None, str(m)


def test_bad_row_and_hazard_errors_compare():
    """Both err codes occur (n_in = 12: the 4-bit row field addresses rows 12..15, which are
    bad) in the DUT trace, and every err event matches the model."""
    p = ODD
    wf, rf = wr_fields(p), req_fields(p)
    wr = [Beat(pack(wf, data=5, row=r, set=0)) for r in range(p.n_in)]
    wr += [Beat(pack(wf, data=7, row=r, set=1)) for r in range(p.n_in, 1 << wf["row"].width)]
    req = [Beat(pack(rf, x=pack_vec([-1] * p.n_in, p.x_bits), set=0, acc=0, dst=0),
                after=len(wr))]
    # written while set 0 computes: hazards (the request waits for every write above)
    wr += [Beat(pack(wf, data=3, row=1, set=0)) for _ in range(6)]
    stim = Stimulus(p, wr, req, seed=3)
    m, _ = trace.trace_check(p, stim)
    assert m is None, str(m)
    dut, _ = trace.run_trace(p, stim)
    codes = [v for _, v in dut.of("err")]
    assert codes.count(MacroErr.WR_BAD_ROW) == (1 << wf["row"].width) - p.n_in, codes
    assert MacroErr.WR_HAZARD in codes, codes


def test_compare_reports_first_difference():
    ref = Trace([(1, "wr", 0), (5, "req", 0), (14, "res", 0xAB)], 17)
    same = Trace(list(ref.events), 17)
    assert trace.compare(same, ref, quiet=True) is None
    val = Trace([(1, "wr", 0), (5, "req", 0), (14, "res", 0xAC)], 17)
    m = trace.compare(val, ref, seed=9, quiet=True)
    assert (m.cycle, m.signal, m.expected, m.actual, m.seed) == (14, "res", 0xAB, 0xAC, 9)
    early = Trace([(1, "wr", 0), (5, "req", 0), (13, "res", 0xAB)], 16)
    m = trace.compare(early, ref, quiet=True)
    assert (m.cycle, m.signal, m.expected, m.actual) == (13, "res", None, 0xAB)
    late = Trace([(1, "wr", 0), (5, "req", 0), (15, "res", 0xAB)], 18)
    m = trace.compare(late, ref, quiet=True)
    assert (m.cycle, m.signal, m.expected, m.actual) == (14, "res", 0xAB, None)
    longer = Trace(list(ref.events), 18)
    m = trace.compare(longer, ref, quiet=True)
    assert m.signal == "end" and (m.expected, m.actual) == (17, 18)
    report = str(trace.compare(val, ref, seed=9, quiet=True))
    for part in ("cycle 14", "res expected 0xab actual 0xac", "stimulus seed: 9", "reproduce: "):
        assert part in report, report


def test_waves_vcd(tmp_path, seed):
    stim = random_stimulus(SMALL, seed, n_req=4)
    vcd = tmp_path / "t.vcd"
    tr, stats = trace.run_trace(SMALL, stim, waves=True, vcd=str(vcd))
    assert vcd.exists() and vcd.stat().st_size > 1000, f"seed {seed}: no VCD"
    ref = trace.run_model(SMALL, stim)
    assert trace.compare(tr, ref, seed=seed) is None
