"""Compiled LLM decode programs (compiler/llm.py) on the RTL: the same programs the performance
model runs at 72B/1M scale run, at a tiny shape, through the Verilated PimModule in lockstep with
the golden model, and the performance model predicts the RTL's cycle count exactly."""
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
