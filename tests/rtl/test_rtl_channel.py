"""PimChannel RTL vs ChannelModel in lockstep on Verilator (DCS and in-order builds)."""
from __future__ import annotations

import numpy as np
import pytest

from model.channel import ChannelModel
from spec.isa import ChannelParams
from compiler.programs import qk_stream_program
from spec.params import MacroParams
from tb.build import describe_mismatch, run_channel_lockstep
from tb.stimgen import random_channel_cmds

TINY_MACRO = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=0)


def _p(dcs: bool) -> ChannelParams:
    return ChannelParams(macro=TINY_MACRO, n_banks=2, n_gbuf=2, q_depth=4, dcs=dcs)


@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
def test_random_streams_lockstep(dcs, seed):
    """Random well-formed commands with out backpressure: every output, every cycle."""
    p = _p(dcs)
    cmds = random_channel_cmds(p, seed, 2000)
    res = run_channel_lockstep(p, cmds, out_ready_p=0.6, seed=seed, label="rand")
    assert res["ok"], describe_mismatch(res)
    ref = ChannelModel(p).run(cmds, out_ready_p=0.6, seed=seed)
    assert res["cycles"] == ref.cycles and res["outputs"] == list(ref.outs)


def test_qk_stream_dcs_beats_inorder_in_rtl(seed):
    """Attention scores as a MAC stream: exact results from both RTL builds, and DCS takes
    fewer cycles with higher MAC utilisation (busy bank-cycles of the lockstep run, where the
    RTL's busy outputs equal the model's every cycle)."""
    rng = np.random.default_rng(seed)
    K = rng.integers(-7, 8, (16, 8))      # 4 key blocks of 4 keys: every set of both banks
    q = rng.integers(-8, 8, (6, 8))
    got = {}
    for dcs in (True, False):
        p = _p(dcs)
        prog = qk_stream_program(p, K, q)
        res = run_channel_lockstep(p, prog.cmds, seed=seed, label="qk")
        assert res["ok"], describe_mismatch(res)
        assert np.array_equal(prog.decode(res["outputs"]), prog.expected), f"seed {seed}"
        got[dcs] = (res["cycles"], sum(res["busy_cycles"]) / (res["cycles"] * p.n_banks))
    assert got[True][0] < got[False][0], got
    assert got[True][1] > got[False][1], got


def test_timeout_is_reported(seed):
    """A run cut at ``max_cycles`` is a mismatch of signal ``timeout`` at that cycle."""
    p = _p(True)
    cmds = random_channel_cmds(p, seed, 200)
    res = run_channel_lockstep(p, cmds, seed=seed, max_cycles=50, label="timeout")
    assert not res["ok"] and res["cycles"] == 51, res["mismatch"]
    m = res["mismatch"]
    assert (m["signal"], m["cycle"]) == ("timeout", 50), m
    assert "cmd " in m["in_flight"] and "/200 sent" in m["in_flight"], m
