"""DRAM-PIM bank RTL (hdl/dram_bank.py, its exported Verilog) vs model/dram_bank.py in the one
lockstep loop on Verilator: every output every cycle (``tb/dram.py``, design ``dram_bank``).

Small builds: a 12-row x 48-byte bank (R and C not powers of two: BAD_ROW / BAD_COL possible,
SHORT_TIMING, refresh every 120 cycles, ref_max 2) for the random streams and the checker
tests, a 16-row x 2 KB GDDR6-AiM bank for the QK^T test.  The bank's outputs ``res`` and
``rd`` are ``always_ready`` (no backpressure exists on them, docs/dram_bank.md); the
backpressure in these runs is the bank's own ``cmd.ready`` (every timing rule), with random
valid gaps on ``cmd``.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from spec.dram import DramBankParams, DramErr
from tb.build import Target, describe_mismatch
from tb.dram import SMALL_BANK, qk_params, random_dram_cmds, run_dram_lockstep, run_qk

SMALL = SMALL_BANK
QK = qk_params(256)     # the Llama-3.1-8B QK^T shape at 256 tokens: 16 rows of 16 keys
N_CMDS = 8000          # per random run; two runs: >= 10^4 commands per make test


def _group(p: DramBankParams, fault: str | None = None):
    return pytest.mark.xdist_group(Target("dram_bank", p, fault).name)


@_group(SMALL)
@pytest.mark.parametrize("k", [0, 1])
def test_random_malformed_streams_lockstep(k, seed):
    """8000 random commands per run (ACT / MAC / RD / WR / PRE, op 5..7, row >= rows,
    col >= n_cols, column commands while IDLE, ACT while ACTIVE, back-to-back timing
    violations held by cmd.ready, rows held open until refresh requests are lost, long idles
    in which refresh starts), a reset in mid-stream: RTL == model every output every cycle,
    and the stream reached every error code, wrapping accumulators, refresh and ref_lost."""
    s = seed + k
    cmds = random_dram_cmds(SMALL, s, N_CMDS)
    reset_at = random.Random(s).randrange(N_CMDS // 2, 2 * N_CMDS)
    res = run_dram_lockstep(SMALL, cmds, seed=s, reset_at=reset_at, label="rand")
    assert res["ok"], describe_mismatch(res)
    print(f"dram_bank random k={k} seed={s}: {N_CMDS} commands, {res['cycles']} cycles, "
          f"{res['cycles_per_s']:.0f} cycles/s, {len(res['res'])} res, {len(res['rd'])} rd, "
          f"{len(res['errors'])} rejected, {res['held_cycles']} held cycles, "
          f"{res['ref_lost']} ref_lost, reset at {reset_at}")
    assert res["transfers"]["cmd"] == N_CMDS
    assert res["cycles"] > reset_at
    codes = {c for _, c in res["errors"]}
    assert codes == {int(e) for e in DramErr if e}, codes
    assert len(res["res"]) > 300 and len(res["rd"]) > 300, (len(res["res"]), len(res["rd"]))
    assert res["mac_cycles"] > 1000 and res["refresh_cycles"] > 1000 and res["ref_lost"] > 0
    assert res["held_cycles"] > N_CMDS          # commands held by timing rules (cmd.ready 0)
    lim = 1 << (SMALL.acc_width - 1)
    ys = [v for y, _ in res["res"] for v in y]
    assert min(ys) >= -lim and max(ys) < lim
    assert sum(abs(v) > lim // 2 for v in ys) > 10     # near the edges: wraps happen


@_group(SMALL, "rcdmac_short")
def test_checker_catches_rcdmac_short(seed):
    """A DUT whose tRCDRDMAC is one cycle short is reported at its first early MAC: a
    cmd.ready mismatch (expected 0, actual 1) with cycle, in-flight state, seed, reproduce."""
    cmds = random_dram_cmds(SMALL, seed, 2000)
    res = run_dram_lockstep(SMALL, cmds, seed=seed, fault="rcdmac_short", label="fault")
    assert not res["ok"], "lockstep did not notice tRCDRDMAC one cycle short"
    m = res["mismatch"]
    assert (m["signal"], m["expected"], m["actual"], m["seed"]) == ("cmd.ready", 0, 1, seed), m
    report = describe_mismatch(res)
    print(report)
    for part in (f"first mismatch at cycle {m['cycle']}: cmd.ready expected 0 actual 1",
                 "in flight: cmd ", "model after the cycle: open=1", f"stimulus seed: {seed}",
                 f"reproduce: SEED={seed} "):
        assert part in report, report


@_group(SMALL)
def test_checker_catches_late_model(seed):
    """A golden model that delivers every res / rd beat one cycle late is reported at
    out.valid (the DUT's beat arrives first)."""
    cmds = random_dram_cmds(SMALL, seed, 500)
    res = run_dram_lockstep(SMALL, cmds, seed=seed, late=1, label="late")
    assert not res["ok"], "lockstep did not notice one extra cycle of model latency"
    m = res["mismatch"]
    assert (m["signal"], m["expected"], m["actual"]) == ("out.valid", 0, 1), m
    report = describe_mismatch(res)
    assert f"reproduce: SEED={seed} " in report and "out.valid expected 0 actual 1" in report


@_group(QK)
def test_llama_qk_256_tokens_through_bank(seed):
    """Llama-3.1-8B QK^T (head_dim 128, GQA 4 queries, 256 INT8 keys written with WRs into
    16 rows) through the bank RTL: lockstep with the model (bit-exact every cycle), the scores
    equal numpy's Qq @ Kq.T, the read-back is exact, cosine >= 0.99 vs float, and the
    in-order stream keeps the MAC unit busy at least 60% of the MAC phase's ideal."""
    res = run_qk(QK, 256, seed=seed, label="qk256")
    q = res["qk"]
    print(q)
    assert res["ok"], describe_mismatch(res)
    assert q["exact_vs_numpy"] and q["rd_ok"] and q["errors"] == 0, q
    assert q["cosine"] >= 0.99, q
    assert q["mac_cycles"] == q["n_mac"] == 256 * 4 * 4
    assert res["cycles"] < 2 * (q["n_mac"] * QK.timing.tCCDL + 16 * 800), res["cycles"]
    assert np.isfinite(q["cycles_per_s"])


def test_lockstep_dut_is_the_exported_bank():
    """The bank inside the lockstep wrapper is the exported Verilog of DramBank (the adapter
    only wires it and ANDs the observer bit): its module text is in the wrapper verbatim."""
    from hdl import export
    from hdl.dram_bank import DramBank
    bank = export.hierarchy(DramBank(SMALL)).text
    body = bank[bank.index("module dram_bank("):]
    text = Target("dram_bank", SMALL).verilog()
    # as a child it carries the metacomment of verilator --hierarchical (hdl/export.py)
    assert body.rstrip() in text.replace("  /*verilator hier_block*/\n", "", 1)
    assert text.count("module dram_bank(") == 1 and "dram_bank bank (" in text
