"""PimModule with DRAM-PIM banks (``ChannelParams(bank_kind="dram")``, docs/dram_channel.md)
through the Verilated RTL in lockstep with the golden model (every output, every cycle).

* random and malformed host command streams (``tb.stimgen.random_host_cmds``: WR_Ws of DRAM
  column bursts, bad fields, unmapped / foreign pages, stripes and MAC_ABs, loops, FIFO bursts
  held by the host ready; random host valid gaps, random out backpressure, refresh every
  120 cycles) on 2 channels x 2 DRAM banks: 4 x 2500 = 10^4 commands, two of the runs with a
  reset in mid-stream, zero mismatches;
* the QK^T of ``tb/dram_module.py`` (keys as DRAM pages, queries in GBuf) on 4 GDDR6-AiM banks,
  64 tokens, head_dim 16, in order single-bank, in order all-bank and DCS all-bank: numpy's
  scores bit for bit, and the cycle ordering of the three.
"""
from __future__ import annotations

import numpy as np
import pytest

from model.module import ModuleModel
from spec.dram import SHORT_TIMING
from spec.isa import ChannelParams, HostOp, ModErr, ModuleParams, host_fields
from spec.params import MacroParams, unpack
from tb.build import Target, describe_mismatch, run_module_lockstep
from tb.dram_module import qk_module_params, qk_module_program
from tb.stimgen import random_host_cmds

MACRO = MacroParams(n_in=16, n_out=2, n_sets=4, n_acc=2)
#: 2 channels x 2 DRAM banks of 4 rows x 32 B (C = 4 columns of 8 B), host ready
DRAM_MOD = ModuleParams(ChannelParams(MACRO, n_banks=2, n_gbuf=2, q_depth=4, dcs=True,
                                      all_bank=True, bank_kind="dram", burst_bytes=8,
                                      timing=SHORT_TIMING),
                        n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4, host_ready=True)
N_RUN = 2500
#: (out ready duty, reset cycle or -1) per run: 4 runs, 10^4 commands
RUNS = [(0.6, -1), (0.35, -1), (0.7, 6000), (0.5, 9000)]


def _group(p):
    return pytest.mark.xdist_group(Target("module", p).name)


def qk_params(dcs: bool) -> ModuleParams:
    return qk_module_params(64, head_dim=16, n_banks=4, group=2, dcs=dcs)


@_group(DRAM_MOD)
@pytest.mark.parametrize("k", range(len(RUNS)))
def test_random_malformed_streams_lockstep(k, seed):
    """2500 random host commands per run (10^4 over the four): RTL = golden model every cycle;
    the runs without reset also give the model's own cycles and out beats; every error code
    of the configuration occurs (no QUEUE_FULL: the host is held by ready instead)."""
    p, (ready_p, reset_at) = DRAM_MOD, RUNS[k]
    s = seed + k
    cmds = random_host_cmds(p, s, N_RUN)
    hf = host_fields(p)
    fs = [unpack(hf, w) for w, _ in cmds]
    ncol = MACRO.n_in * MACRO.n_out // p.channel.burst_bytes
    assert sum(1 for f in fs if f["op"] == HostOp.WR_W and f["row"] < ncol) > 50
    assert sum(1 for f in fs if f["op"] == HostOp.MAC_AB) > 50
    res = run_module_lockstep(p, cmds, out_ready_p=ready_p, seed=s, reset_at=reset_at,
                              label=f"dram_mod_rand{k}")
    assert res["ok"], describe_mismatch(res, reproduce=f"SEED={seed} (run {k})")
    assert res["cycles"] > 20 * SHORT_TIMING.tREFI          # many refresh intervals crossed
    if reset_at >= 0:
        assert reset_at < res["cycles"]
        return
    ref = ModuleModel(p).run(cmds, out_ready_p=ready_p, seed=s)
    assert ref.status == "ok" and not ref.chan_errs, (ref.status, ref.chan_errs[:3])
    assert res["outputs"] == list(ref.outs) and res["cycles"] == ref.cycles
    assert len(res["outputs"]) > 20
    assert ref.host_stalls > 50 and not ref.dropped
    codes = {c for _, c in res["errors"]}
    want = set(range(1, 6)) | {int(ModErr.NOT_STRIPE)}
    assert codes == want, f"error codes seen {sorted(codes)}, expected {sorted(want)}"


_QK = {}        # variant -> (cycles, busy bank-cycles, MACs) of the RTL runs


@pytest.mark.parametrize("variant,dcs,all_bank", [
    pytest.param("inorder_sb", False, False, marks=_group(qk_params(False))),
    pytest.param("inorder_ab", False, True, marks=_group(qk_params(False))),
    pytest.param("dcs_ab", True, True, marks=_group(qk_params(True)))])
def test_qk_module_through_rtl(variant, dcs, all_bank, seed):
    """QK^T (64 keys x head_dim 16, two queries) on one channel of 4 DRAM banks: the RTL's out
    beats are numpy's int scores exactly, no error, and equal the golden model's run."""
    p = qk_params(dcs)
    rng = np.random.default_rng(seed)
    K = rng.integers(-128, 128, (64, 16))
    Q = rng.integers(-128, 128, (2, 16))
    prog = qk_module_program(p, K, Q, all_bank=all_bank)
    res = run_module_lockstep(p, prog.cmds, seed=seed, label=f"dram_qk_{variant}")
    assert res["ok"], describe_mismatch(res)
    assert not res["errors"], res["errors"][:5]
    assert np.array_equal(prog.scores(res["outputs"]), prog.expected)
    ref = ModuleModel(p).run(prog.cmds)
    assert res["cycles"] == ref.cycles and res["outputs"] == list(ref.outs)
    _QK[variant] = (res["cycles"], sum(res["busy_cycles"]), prog.n_mac)


def test_qk_module_cycle_ordering(seed):
    """The three QK^T runs' cycles (from the RTL runs above, or the golden model, which the
    RTL equals cycle for cycle, when those ran in another process): in order all-bank is
    strictly faster than in order single-bank (in order, each single-bank MAC waits for the
    previous one's results, so B MACs per query and stripe serialise where one MAC_AB runs the
    B banks in lockstep); DCS all-bank is measured no slower than in order all-bank."""
    cyc = {}
    rng = np.random.default_rng(seed)
    K = rng.integers(-128, 128, (64, 16))
    Q = rng.integers(-128, 128, (2, 16))
    for variant, dcs, ab in (("inorder_sb", False, False), ("inorder_ab", False, True),
                             ("dcs_ab", True, True)):
        if variant in _QK:
            cyc[variant] = _QK[variant][0]
        else:
            p = qk_params(dcs)
            cyc[variant] = ModuleModel(p).run(qk_module_program(p, K, Q, all_bank=ab).cmds).cycles
    assert cyc["inorder_ab"] < cyc["inorder_sb"], cyc
    assert cyc["dcs_ab"] <= cyc["inorder_ab"], cyc
