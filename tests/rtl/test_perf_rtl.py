"""Compiled LLM decode programs (compiler/llm.py) on the RTL: the same programs the performance
model runs at 72B/1M scale run, at a tiny shape, through the Verilated PimModule in lockstep with
the golden model, and the performance model predicts the RTL's cycle count exactly.

DRAM-PIM modules (``bank_kind="dram"``, docs/dram_channel.md): the performance model's DRAM
back-end (``SimParams.from_module(p, refresh="exact")``, as tests/perf/test_perf_dram_rtl.py
calibrates it against the golden model) gives the RTL's cycle count exactly, on QK^T-like
programs over banks {1, 2, 4} x timing {SHORT_TIMING with refresh, GDDR6-AiM} x {in order,
DCS} x {single-bank, all-bank}."""
from __future__ import annotations

import pytest

from compiler import llm as L
from compiler.attention import pace
from perf.program import to_host_words
from perf.sim import simulate
from tb.build import describe_mismatch, run_module_lockstep


@pytest.mark.parametrize("part,alloc,dcs", [("TCP", "dpa", True), ("HFP", "static", True)])
def test_compiled_layer_on_rtl_matches_perf_model(part, alloc, dcs, seed):
    s = L.small_system(n_ch=2, n_banks=2, n_sets=16, n_acc=4, n_gbuf=4)
    s = L.System(s.sim.with_(dcs=dcs), s.n_modules, s.tp, s.pp, s.name)
    cfg = L.tiny_config(hidden=32, intermediate=64, head_dim=16, heads=2, kv_heads=1)
    plan = L.compile_step(cfg, s, [40, 25], part, alloc, max_context=64)
    p = s.sim.to_module(n_vpages=256, n_req=16)
    items = plan.setup_layers(1) + plan.layer
    data = lambda i, c: (i * 0x9E3779B97F4A7C15 + seed) & ((1 << 64) - 1)   # noqa: E731
    cmds = pace(p, to_host_words(p, items, data=data))
    res = run_module_lockstep(p, cmds, seed=seed, label=f"llm_{part}_{alloc}_{dcs}")
    assert res["ok"], describe_mismatch(res)
    assert not res["errors"], res["errors"][:5]
    assert len(res["outputs"]) == plan.counts["out_beats"]
    perf = simulate(s.sim, items)
    assert (perf.cycles, perf.stats["busy"]) == (res["cycles"], sum(res["busy_cycles"]))


def test_cent_baseline_all_bank_on_rtl_matches_perf_and_golden(seed):
    """A CENT-class baseline decode layer (policy ``baseline``: in-order controller, all-bank
    MACs (MAC_AB), blocking result reads, CENT's mapping) at a tiny shape through the Verilated
    all-bank module in lockstep with the golden model: the performance model's cycle count and
    busy bank-cycles equal the golden model's and the RTL's."""
    from model.module import ModuleModel
    from perf.golden import pace_waits
    pol = L.policy("baseline")
    assert pol.all_bank and not pol.dcs and pol.blocking
    s = pol.system(L.small_system(n_ch=2, n_banks=2, n_sets=16, n_acc=4, n_gbuf=4))
    cfg = L.tiny_config(hidden=32, intermediate=64, head_dim=16, heads=2, kv_heads=1)
    plan = L.compile_step(cfg, s, [40, 25], max_context=64, **pol.compile_kw)
    p = s.sim.to_module(n_vpages=256, n_req=16)
    assert p.channel.all_bank and not p.channel.dcs
    items = plan.setup_layers(1) + plan.layer
    data = lambda i, c: (i * 0x9E3779B97F4A7C15 + seed) & ((1 << 64) - 1)   # noqa: E731
    cmds = pace_waits(p, items, data=data)
    n_ab = sum(1 for w, _ in cmds if w & 0xF == 10)
    assert n_ab > 10, n_ab
    gold = ModuleModel(p).run(cmds)
    res = run_module_lockstep(p, cmds, seed=seed, label="cent_baseline")
    assert res["ok"], describe_mismatch(res)
    assert not res["errors"], res["errors"][:5]
    perf = simulate(s.sim, items)
    assert perf.stats["mac_ab"] == n_ab * 2             # per channel (chmask of both)
    assert ((perf.cycles, perf.stats["busy"]) == (gold.cycles, sum(gold.busy_cycles))
            == (res["cycles"], sum(res["busy_cycles"])))


# --- the DRAM back-end: performance model = golden model = RTL ------------------------------
def _dram_module(n_banks, timing, dcs, n_sets=2):
    """The calibration module (``perf.golden.dram_calib_module``), all-bank capable so one
    build runs both MAC kinds."""
    from perf.golden import dram_calib_module
    return dram_calib_module(n_banks, n_sets, timing, dcs, True)


def _dram_qk_items(rng, sp, rounds, all_bank, wait=0.2):
    """``perf.golden.dram_qk_items`` with two column bursts per page and 30% KV appends."""
    from perf.golden import dram_qk_items
    return dram_qk_items(rng, sp, rounds, all_bank, wr_per_page=2, append=0.3, wait=wait)


def _dram_calibrate(p, items, label, seed, data=None):
    """The items paced by the host the performance model assumes (``perf.golden.pace_waits``),
    run on the golden model and on the RTL in lockstep; the performance model
    (``SimParams.from_module(p, refresh="exact")``) on the items.  Returns (perf, golden, RTL)
    cycles and the lockstep result."""
    from model.module import ModuleModel
    from perf.golden import pace_waits
    from perf.params import SimParams
    data = data or (lambda i, c: (i * 0x9E3779B97F4A7C15 + seed) & ((1 << 64) - 1))
    cmds = pace_waits(p, items, data=data)
    gold = ModuleModel(p).run(cmds)
    assert gold.status == "ok" and not gold.errs and not gold.chan_errs, \
        (gold.status, gold.errs[:3], gold.chan_errs[:3])
    res = run_module_lockstep(p, cmds, seed=seed, label=label)
    assert res["ok"], describe_mismatch(res)
    assert not res["errors"], res["errors"][:5]
    assert res["outputs"] == list(gold.outs)
    perf = simulate(SimParams.from_module(p, refresh="exact"), items)
    assert perf.stats["beats"] == len(res["outputs"])
    return (perf.cycles, gold.cycles, res["cycles"]), res


def _dram_qk_params(dcs):
    """tests/rtl/test_rtl_dram_module.py's QK^T module: 1 channel x 4 GDDR6-AiM banks of
    2 rows x 256 B (16 keys x head_dim 16), 32-byte bursts."""
    from tb.dram_module import qk_module_params
    return qk_module_params(64, head_dim=16, n_banks=4, group=2, dcs=dcs)


def _dram_rand_params():
    """tests/rtl/test_rtl_dram_module.py's random-stream module: 2 channels x 2 banks,
    SHORT_TIMING (tREFI 120), DCS, host ready."""
    from spec.dram import SHORT_TIMING
    from spec.isa import ChannelParams, ModuleParams
    from spec.params import MacroParams
    cp = ChannelParams(MacroParams(n_in=16, n_out=2, n_sets=4, n_acc=2), n_banks=2, n_gbuf=2,
                       q_depth=4, dcs=True, all_bank=True, bank_kind="dram", burst_bytes=8,
                       timing=SHORT_TIMING)
    return ModuleParams(cp, n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4,
                        host_ready=True)


def _dram_points():
    """id -> (ModuleParams, all_bank, rounds, refresh crossed): the calibration points, one
    Verilator build per ModuleParams (the last two are tests/rtl/test_rtl_dram_module.py's
    builds)."""
    from spec.dram import GDDR6_AIM_TIMING, SHORT_TIMING
    b1 = _dram_module(1, GDDR6_AIM_TIMING, False)
    b2 = _dram_module(2, SHORT_TIMING, False)
    rnd = _dram_rand_params()
    return {
        "B1-gddr6-inorder-sb": (b1, False, 8, False),
        "B1-gddr6-inorder-ab": (b1, True, 8, False),
        "B2-short-inorder-sb-refresh": (b2, False, 30, True),
        "B2-short-inorder-ab-refresh": (b2, True, 30, True),
        "B2x2ch-short-dcs-sb-refresh": (rnd, False, 30, True),
        "B2x2ch-short-dcs-ab-refresh": (rnd, True, 40, True),
    }


DRAM_POINTS = _dram_points()
DRAM_CAL = {}   # id -> (perf, golden, RTL) cycles of the runs of this process


def _dram_group(p):
    from tb.build import Target
    return pytest.mark.xdist_group(Target("module", p).name)


@pytest.mark.parametrize("point", [pytest.param(k, marks=_dram_group(v[0]))
                                   for k, v in DRAM_POINTS.items()])
def test_dram_module_perf_equals_golden_and_rtl(point, seed):
    """QK^T-like programs on DRAM modules (banks {1, 2}, SHORT_TIMING with refresh every 120
    cycles and GDDR6-AiM, in order and DCS, single-bank and all-bank MACs, 1 and 2 channels,
    host WAITs): the performance model's cycle count equals the golden model's and the RTL's
    exactly; with SHORT_TIMING the run crosses many tREFI (the exact refresh rule)."""
    import random
    from perf.params import SimParams
    p, ab, rounds, refresh = DRAM_POINTS[point]
    items = _dram_qk_items(random.Random(f"{point} {seed}"), SimParams.from_module(p), rounds,
                           ab)
    cyc, res = _dram_calibrate(p, items, f"dram_cal_{point}", seed)
    DRAM_CAL[point] = cyc
    assert cyc[0] == cyc[1] == cyc[2], f"{point}: (perf, golden, RTL) cycles {cyc}"
    if refresh:
        assert cyc[2] > 5 * p.channel.timing.tREFI, cyc


@pytest.mark.parametrize("variant,dcs,ab", [
    pytest.param("inorder_sb", False, False, marks=_dram_group(_dram_qk_params(False))),
    pytest.param("inorder_ab", False, True, marks=_dram_group(_dram_qk_params(False))),
    pytest.param("dcs_ab", True, True, marks=_dram_group(_dram_qk_params(True))),
    pytest.param("dcs_sb", True, False, marks=_dram_group(_dram_qk_params(True)))])
def test_dram_qk_module_perf_equals_golden_and_rtl(variant, dcs, ab, seed):
    """The QK^T stream of tb/dram_module.py (4 GDDR6-AiM banks, 64 keys, head_dim 16, two
    queries) as performance-model items (``perf.program.from_host_words``): perf = golden =
    RTL cycles, and the RTL's scores are numpy's."""
    import numpy as np
    from perf.program import from_host_words
    from spec.isa import host_fields
    from spec.params import unpack
    from tb.dram_module import qk_module_program
    p = _dram_qk_params(dcs)
    rng = np.random.default_rng(seed)
    prog = qk_module_program(p, rng.integers(-128, 128, (64, 16)),
                             rng.integers(-128, 128, (2, 16)), all_bank=ab)
    hf = host_fields(p)
    datas = [unpack(hf, w)["data"] for w, _ in prog.cmds]
    cyc, res = _dram_calibrate(p, from_host_words(p, prog.cmds), f"dram_cal_qk_{variant}",
                               seed, data=lambda i, c: datas[i])
    DRAM_CAL[f"qk-{variant}"] = cyc
    assert cyc[0] == cyc[1] == cyc[2], f"qk {variant}: (perf, golden, RTL) cycles {cyc}"
    assert np.array_equal(prog.scores(res["outputs"]), prog.expected)
