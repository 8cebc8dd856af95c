"""The module with the hub's softmax unit (``ModuleParams(softmax=True)``) in Verilator, in
lockstep with the golden model: every module output compared in every cycle, the ``sm_res``
stream (valid, payload) and ``sm_err`` included, ``sm_res.ready`` under seeded random
backpressure (tb/designs.py ``SideStream``, tb/lockstep.py).  A whole TCP QK^T -> softmax ->
SV decode step of the compiler (bit-exact, cosine >= 0.99 against float), the constrained-
random host stream with valid and malformed softmax commands (tb/stimgen.py), and a
deliberately wrong exp table that the checker must report."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.attention.program import Request
from compiler.attention.softmax import build_program_sm, host_traffic
from compiler.host import pace
from model.module import ModuleModel
from spec.isa import ChannelParams, ModErr, ModuleParams
from spec.params import MacroParams
from spec.softmax import SmErr
from tb.build import Target, describe_mismatch, run_module_lockstep
from tb.stimgen import random_host_cmds

pytestmark = pytest.mark.verilator

MACRO = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=4, n_acc=4, tree_stages=0)
#: the module of tests/hdl/test_hdl_module_softmax.py with a host port ready (the random
#: stream's whole softmax heads need it: nothing is dropped, see random_host_cmds)
SM = ModuleParams(channel=ChannelParams(macro=MACRO, n_banks=2, n_gbuf=2, q_depth=4), n_ch=2,
                  n_vpages=16, n_req=2, fifo_depth=4, loop_len=4, softmax=True, sm_context=32,
                  host_ready=True)
T, D, NH = 13, 8, 2          # tokens, head_dim, KV heads (one query each)
SM_FAULT = "sm_exp_entry"    # Target fault: PimModule(sm_fault="exp_entry")


def _group(fault=None):
    return pytest.mark.xdist_group(Target("module", SM, fault).name)


def request(seed):
    rng = np.random.default_rng(seed)
    return Request(rng.standard_normal((NH, T, D)), rng.standard_normal((NH, T, D)),
                   rng.standard_normal((NH, 1, D)))


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_results(prog, res):
    dec = prog.decode(res["outputs"], res["sm_res"])
    assert all(np.array_equal(a, e) for a, e in zip(dec["acc"], prog.expected_acc))
    for got, want in zip(dec["res"], prog.expected_res, strict=True):
        assert (got["qsum"], got["l"]) == (want["qsum"], want["l"])
        assert got["m"] == want["m"] & ((1 << SM.sm_params.x_bits) - 1)
    for o, e, ref in zip(dec["o"], prog.expected_o, prog.reference, strict=True):
        np.testing.assert_allclose(o, e, rtol=0, atol=1e-12)
        for h in range(o.shape[0]):
            assert cosine(o[h], ref[h]) >= 0.99
    return dec


@_group()
def test_attention_step_tcp_through_rtl():
    """A whole TCP decode step (SM_CFG, QK^T MACs with RD_SM, WR_PROB, SV MACs, RD_OUT) of two
    heads on the RTL: every output equal to the model's every cycle (out.ready and
    sm_res.ready at 0.7, the pattern ModuleModel.run drives, so the run reproduces); SV
    partials and (m, l, qsum) bit-exact; cosine >= 0.99 per head against float; no errors, no
    host round trip."""
    prog = build_program_sm(SM, [request(3)], "TCP")
    cmds = pace(SM, prog.cmds, 0.7, seed=1)
    res = run_module_lockstep(SM, cmds, out_ready_p=0.7, seed=1, label="sm_tcp")
    assert res["ok"], describe_mismatch(res)
    assert not res["errors"] and not res["sm_errors"]
    assert res["transfers"]["sm_res"] == len(prog.units) == NH
    check_results(prog, res)
    ref = ModuleModel(SM).run(cmds, out_ready_p=0.7, seed=1)
    assert (res["cycles"], res["outputs"], res["sm_res"]) == \
        (ref.cycles, ref.outs, [w for _, w in ref.sm_res])
    tr = host_traffic(SM, [w for w, _ in prog.cmds[prog.n_setup:]], prog.n_reads,
                      len(prog.units))
    assert tr["round_trips"] == 0


@_group()
def test_random_softmax_commands_with_backpressure(seed):
    """2500 random host commands (tb/stimgen.py: valid and malformed channel, page-table and
    loop commands, and softmax heads completed or aborted, malformed SM_CFG / RD_SM / WR_PROB,
    BAD_PART / EXTRA_BEAT score beats), out.ready at 0.6 and an independent sm_res.ready
    pattern at 0.5: no mismatch in any cycle; every dispatcher error code of this module
    and both unit beat errors occur, and heads deliver their sm_res beats."""
    cmds = random_host_cmds(SM, seed, 2500)
    assert len(cmds) >= 2000
    res = run_module_lockstep(SM, cmds, out_ready_p=0.6, sm_ready_p=0.5, seed=seed,
                              label="sm_rand")
    assert res["ok"], describe_mismatch(res)
    codes = {c for _, c in res["errors"]}
    want = {int(e) for e in ModErr} - {0, int(ModErr.QUEUE_FULL), int(ModErr.NOT_STRIPE)}
    assert want <= codes, f"error codes seen {sorted(codes)} (seed {seed})"
    assert {c for _, c in res["sm_errors"]} == {int(SmErr.BAD_PART), int(SmErr.EXTRA_BEAT)}
    assert res["transfers"]["sm_res"] >= 10, res["transfers"]


def _faulty_program():
    """The first request whose unit heads look up the faulty table entry (T[2**(TB-1)])."""
    from compiler.attention.softmax import exp_fault_program
    return exp_fault_program(SM, request, NH)


@_group(SM_FAULT)
def test_wrong_exp_table_is_reported():
    """The unit's ``exp_entry`` fault (exp table entry T[2**(TB-1)] one too large) built into
    the Verilated module: the lockstep checker reports the first wrong output (the sm_res
    payload); against a golden model given the same wrong table the run agrees in every cycle
    (so what was reported is the table)."""
    prog, bad = _faulty_program()
    cmds = pace(SM, prog.cmds)
    res = run_module_lockstep(SM, cmds, fault=SM_FAULT, label="sm_fault")
    assert not res["ok"]
    assert res["mismatch"]["signal"] == "sm_res.payload", describe_mismatch(res)
    res2 = run_module_lockstep(SM, cmds, fault=SM_FAULT, sm_table=bad, label="sm_fault_tab")
    assert res2["ok"], describe_mismatch(res2)
