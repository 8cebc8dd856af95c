"""PimModule RTL vs ModuleModel in lockstep: malformed streams, reset, real decode attention."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import attention as A
from spec.isa import ChannelParams, ModuleParams
from model.module import ModuleModel
from perf.program import from_host_words
from perf.sim import SimParams, simulate
from spec.params import MacroParams
from workloads.gemm import cosine
from tb.build import Target, describe_mismatch, run_module_lockstep
from tb.stimgen import random_host_cmds

TINY = ModuleParams(ChannelParams(MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2,
                                              tree_stages=0), n_banks=2, n_gbuf=2, q_depth=4),
                    n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4)
# holds two MiniLM heads (head_dim 32 = two 16-row chunks) of a short real sentence
SMALL = ModuleParams(ChannelParams(MacroParams(n_in=16, n_out=16, w_bits=8, x_bits=8, n_acc=4,
                                               tree_stages=1), n_banks=4, n_gbuf=4, q_depth=8),
                     n_ch=2, n_vpages=32, n_req=4, fifo_depth=8, loop_len=8)


def _group(p: ModuleParams):
    """The xdist group of the tests sharing the Verilator build of this module."""
    return pytest.mark.xdist_group(Target("module", p).name)


@_group(TINY)
@pytest.mark.parametrize("k", [0, 1])
def test_random_valid_and_malformed_streams(k, seed):
    """5000 host commands per run (valid and malformed mixed, FIFO bursts, loops), RTL and
    model compared every cycle; every error code occurs."""
    cmds = random_host_cmds(TINY, seed + k, 5000)
    res = run_module_lockstep(TINY, cmds, out_ready_p=(1.0, 0.5)[k], seed=seed + k,
                              label="rand")
    assert res["ok"], describe_mismatch(res)
    codes = {c for _, c in res["errors"]}
    assert codes == set(range(1, 7)), f"error codes seen {sorted(codes)} (seed {seed + k})"
    ref = ModuleModel(TINY).run(cmds, out_ready_p=(1.0, 0.5)[k], seed=seed + k)
    assert res["outputs"] == list(ref.outs)


@_group(TINY)
def test_reset_mid_stream_recovers(seed):
    cmds = random_host_cmds(TINY, seed, 3000)
    res = run_module_lockstep(TINY, cmds, seed=seed, reset_at=4000, label="reset")
    assert res["ok"], describe_mismatch(res)


def _minilm_two_heads():
    req = A.minilm_decode("Memory that computes keeps long contexts close to the arithmetic.")[0]
    return [A.Request(req.K[:2], req.V[:2], req.q[:2], name="minilm 2 heads")]


@_group(SMALL)
@pytest.mark.parametrize("part,alloc,loop", [("HFP", "static", False), ("HFP", "dpa", True),
                                             ("TCP", "static", False), ("TCP", "dpa", True)])
def test_minilm_decode_attention_through_rtl(part, alloc, loop):
    """Real MiniLM layer-0 K/V/q (two heads): QK^T and SV on the RTL, softmax on the host;
    bit-exact against the program's integers and cosine >= 0.99 against float32.  The
    performance model predicts the RTL's cycle count and busy bank-cycles exactly."""
    prog = A.build_program(SMALL, _minilm_two_heads(), part, alloc, loop)
    cmds = A.pace(SMALL, prog.cmds)
    res = run_module_lockstep(SMALL, cmds, label=f"attn_{part}_{alloc}")
    assert res["ok"], describe_mismatch(res)
    perf = simulate(SimParams.from_module(SMALL), from_host_words(SMALL, prog.cmds))
    assert (perf.cycles, perf.stats["busy"]) == (res["cycles"], sum(res["busy_cycles"]))
    assert not res["errors"], res["errors"][:5]
    dec = prog.decode(res["outputs"])
    for o, e, ref in zip(dec.o, prog.expected_o, prog.reference, strict=True):
        np.testing.assert_allclose(o, e, rtol=0, atol=1e-12)
        assert cosine(o, ref) >= 0.99
