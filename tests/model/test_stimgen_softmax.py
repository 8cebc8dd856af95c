"""The module fuzzer's softmax commands (tb/stimgen.py ``random_host_cmds`` with
``ModuleParams.softmax``) on the golden model: no deadlock, every dispatcher error of the
module and both unit beat errors, heads delivering ``sm_res``; the functional coverage
sampler of the module takes the softmax opcodes (verif/functional.py), also inside LOOP
bodies (captured, and replayed: SM_CFG / SM_ABORT BAD_FIELD, RD_SM / WR_PROB valid in a
head or rejected)."""
from __future__ import annotations

import pytest

from model.module import ModuleModel
from spec.isa import ChannelParams, ModErr, ModuleParams
from spec.params import MacroParams
from spec.softmax import SmErr
from tb.stimgen import random_host_cmds
from verif import functional as F

MACRO = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=4, n_acc=4, tree_stages=0)


def params(host_ready):
    return ModuleParams(channel=ChannelParams(macro=MACRO, n_banks=2, n_gbuf=2, q_depth=4),
                        n_ch=2, n_vpages=16, n_req=2, fifo_depth=4, loop_len=4, softmax=True,
                        sm_context=32, host_ready=host_ready)


@pytest.mark.parametrize("host_ready", [True, False])
def test_softmax_fuzz_runs_to_idle(host_ready, seed):
    p = params(host_ready)
    cmds = random_host_cmds(p, seed, 1500)
    r = ModuleModel(p).run(cmds, out_ready_p=0.6, seed=seed, max_cycles=200_000)
    assert r.status == "ok", (r.status, seed)
    codes = set(r.err_codes())
    assert {int(ModErr.BAD_OPCODE), int(ModErr.BAD_FIELD), int(ModErr.UNMAPPED),
            int(ModErr.NOT_OWNER)} <= codes, sorted(codes)
    if host_ready:          # whole heads: results and both beat errors
        assert len(r.sm_res) >= 5
        assert {c for _, c in r.sm_errs} == {int(SmErr.BAD_PART), int(SmErr.EXTRA_BEAT)}
    else:                   # malformed softmax commands only: the unit never starts
        assert not r.sm_res and not r.sm_errs


def test_functional_sampler_takes_softmax_ops():
    cov = F.Coverage()
    p = params(True)
    m = F.ModuleSampler(cov, p).attach(ModuleModel(p))
    r = m.run(random_host_cmds(p, 1, 1500), out_ready_p=0.7, seed=1)
    assert r.status == "ok"
    rep = cov.report()
    assert not rep["excluded_but_hit"], rep["excluded_but_hit"]
    hits = set(cov.crosses["module.command"].hits)
    for op in ("SM_CFG", "RD_SM", "WR_PROB", "SM_ABORT"):
        assert any(k[0] == op and k[1] == "NONE" for k in hits), op
    assert any(k[0] == "BAD" and k[1] == "BAD_OPCODE" for k in hits)
    assert LOOP_BINS <= hits, sorted(LOOP_BINS - hits)


# the softmax bins of module.command inside a loop: captured (unchecked), replayed
LOOP_BINS = {(op, "NONE", "CAPTURE") for op in ("SM_CFG", "RD_SM", "WR_PROB", "SM_ABORT")} | {
    ("SM_CFG", "BAD_FIELD", "REPLAY"), ("SM_ABORT", "BAD_FIELD", "REPLAY"),
    ("RD_SM", "NONE", "REPLAY"), ("RD_SM", "BAD_FIELD", "REPLAY"),
    ("RD_SM", "UNMAPPED", "REPLAY"), ("RD_SM", "NOT_OWNER", "REPLAY"),
    ("WR_PROB", "NONE", "REPLAY"), ("WR_PROB", "BAD_FIELD", "REPLAY")}
VALID_REPLAY = {("RD_SM", "NONE", "REPLAY"), ("WR_PROB", "NONE", "REPLAY")}


def test_functional_sampler_malformed_softmax_loops():
    """Without host_ready only malformed softmax ops are in loop bodies: captured, and
    rejected at every replay; no RD_SM / WR_PROB is ever dispatched from a replay."""
    cov = F.Coverage()
    p = params(False)
    m = F.ModuleSampler(cov, p).attach(ModuleModel(p))
    r = m.run(random_host_cmds(p, 1, 1500), out_ready_p=0.7, seed=1)
    assert r.status == "ok" and not r.sm_res and not r.sm_errs
    rep = cov.report()
    assert not rep["excluded_but_hit"], rep["excluded_but_hit"]
    hits = set(cov.crosses["module.command"].hits)
    want = {(op, "NONE", "CAPTURE") for op in ("SM_CFG", "RD_SM", "WR_PROB", "SM_ABORT")} | {
        ("SM_CFG", "BAD_FIELD", "REPLAY"), ("SM_ABORT", "BAD_FIELD", "REPLAY"),
        ("RD_SM", "BAD_FIELD", "REPLAY"), ("WR_PROB", "BAD_FIELD", "REPLAY")}
    assert want <= hits, sorted(want - hits)
    assert not VALID_REPLAY & hits
