"""The CENT-faithful baseline and the all-bank MAC in the performance model.

Calibration: the timing model's cycle counts, busy bank-cycles and result beats equal the
golden model's (model.module.ModuleModel with ``channel.all_bank``) for random programs mixing
all-bank MACs (MAC_AB), single-bank MACs, reads and host WAITs, and for every policy's
compiled decode layer of a tiny LLM (CENT's mapping with blocking reads included); the
closed-form extrapolation of all-bank loops changes no number.  Then invariants of the policies
on the GDDR6-AiM system, KV-head replication, and bad inputs.
"""
from __future__ import annotations

import math
import random

import pytest

from compiler import llm as L
from perf.golden import golden_run, pace_waits
from perf.program import MAC_AB, WAIT, HCmd, Rep, n_waits
from perf.sim import SimParams, simulate
from spec.isa import HostOp as H


def _same(sp, items, what):
    p = sp.to_module(n_vpages=256, n_req=16)
    run = golden_run(p, items)
    res = simulate(sp, items)
    got = (res.cycles, res.stats["busy"], res.stats["beats"])
    exp = (run.cycles, sum(run.busy_cycles), len(run.outs))
    assert got == exp, f"{what}: perf {got} != golden {exp} [{p.tag}]"
    return res


def _random_program(rng, sp):
    """MAP of every page, then random rounds: WR_INPs, MAC_ABs on stripes and single-bank
    MACs (random GBuf/OBuf entries, accumulate or not), KV row writes, reads of random
    (bank, entry), and host WAITs."""
    B, S, C = sp.n_banks, sp.n_sets, sp.n_ch
    allm = (1 << C) - 1
    prog = [HCmd(H.MAP, vp=s * B + b, pp=b * S + s) for s in range(S) for b in range(B)]
    prog.append(HCmd(H.BARRIER))
    for _ in range(rng.randrange(6, 16)):
        m = rng.randrange(1, allm + 1)
        g, o, s = rng.randrange(sp.n_gbuf), rng.randrange(sp.n_acc), rng.randrange(S)
        prog.append(HCmd(H.WR_INP, m, g=g))
        for _ in range(rng.randrange(1, 4)):
            if rng.random() < 0.6:
                prog.append(HCmd(MAC_AB, m, vp=s * B, g=g, o=o, acc=rng.randrange(2), bank=0,
                                 set=s))
            else:
                b = rng.randrange(B)
                prog.append(HCmd(H.MAC, m, vp=s * B + b, g=g, o=o, acc=rng.randrange(2),
                                 bank=b, set=s))
            s = rng.randrange(S)
        if rng.random() < 0.3:
            b = rng.randrange(B)
            prog.append(HCmd(H.WR_W, m, vp=s * B + b, row=rng.randrange(sp.n_in), bank=b,
                             set=s))
        for b in rng.sample(range(B), rng.randrange(1, B + 1)):
            prog.append(HCmd(H.RD_OUT, m, vp=s * B + b, o=o, bank=b, set=s))
        if rng.random() < 0.5:
            prog.append(HCmd(WAIT))
    return prog


@pytest.mark.parametrize("block", range(3))
def test_all_bank_programs_match_golden(block, seed):
    """Random modules (channels 1-3, banks 1-8, queue 2-8, FIFO 2-16, X 4/8, P 0-2, DCS or in
    order) x random all-bank programs: equal cycles, busy bank-cycles and result beats."""
    rng = random.Random(seed * 3 + block)
    for _ in range(8):
        sp = SimParams(n_ch=rng.choice([1, 2, 3]), n_banks=rng.choice([1, 2, 4, 8]),
                       n_gbuf=rng.choice([2, 4]), q_depth=rng.choice([2, 3, 8]),
                       dcs=rng.random() < 0.5, n_in=16, n_out=16, x_bits=rng.choice([4, 8]),
                       tree_stages=rng.choice([0, 1, 2]), n_sets=rng.choice([4, 8]),
                       n_acc=rng.choice([2, 4]), fifo_depth=rng.choice([2, 4, 16]),
                       all_bank=True)
        prog = _random_program(rng, sp)
        res = _same(sp, prog, f"random all-bank program, dcs={sp.dcs}")
        assert res.stats["mac_ab"] == sum(x.chmask.bit_count() for x in prog
                                          if x.op == MAC_AB)
        assert res.stats["waits"] == n_waits(prog)


@pytest.mark.parametrize("dcs", [True, False])
def test_all_bank_loop_extrapolation_is_exact(dcs):
    """A QK^T-like all-bank loop (per round: MAC_AB on the next stripe, one RD_OUT per bank,
    a WAIT when in order): closed form = full simulation = golden model."""
    sp = SimParams(n_ch=2, n_banks=4, n_gbuf=2, q_depth=4, dcs=dcs, n_in=16, n_out=16,
                   n_sets=64, n_acc=4, fifo_depth=8, all_bank=True)
    B, S = sp.n_banks, sp.n_sets
    setup = [HCmd(H.MAP, vp=s * B + b, pp=b * S + s) for s in range(S) for b in range(B)]
    bodies = tuple((HCmd(MAC_AB, 3, vp=0, g=0, o=j, bank=0, set=0),
                    *(HCmd(H.RD_OUT, 3, vp=b, o=j, bank=b, set=0) for b in range(B)),
                    *(() if dcs else (HCmd(WAIT),))) for j in range(2))
    prog = setup + [HCmd(H.BARRIER), HCmd(H.WR_INP, 3, g=0),
                    Rep(bodies, 60, "qk", set_stride=1, vp_stride=B)]
    fast, slow = simulate(sp, prog), simulate(sp, prog, extrapolate=False)
    assert fast.skipped and fast.sim_cycles < slow.sim_cycles
    assert (fast.t_end, fast.stats) == (slow.t_end, slow.stats)
    _same(sp, prog, "all-bank loop")


POLICY_CASES = [("baseline", [200, 90], 256), ("baseline", [430], None),
                ("tcp", [200, 90], 256), ("dcs", [37, 100, 64], 128), ("dpa", [430], None),
                ("all", [200, 90], 256), ("all", [1000], None),
                ("baseline_1bank", [200, 90], 256), ("all_1bank", [430], None)]


@pytest.mark.parametrize("name,ctx,mc", POLICY_CASES)
def test_policy_layers_match_golden(name, ctx, mc):
    """Every policy's compiled decode layer of a tiny LLM (its MAPs, then QKV, KV append,
    QK^T, SV, O, FFN) on a small all-bank module: the perf model equals the golden model,
    the host's WAITs included (the data are checked against numpy in
    tests/compiler/test_llm.py)."""
    pol = L.policy(name)
    s = pol.system(L.small_system())
    plan = L.compile_step(L.tiny_config(), s, ctx, max_context=mc, **pol.compile_kw)
    items = plan.setup_layers(1) + plan.layer
    res = _same(s.sim, items, name)
    assert res.stats["mac"] == plan.counts["mac_ch"]
    assert (plan.counts.get("MAC_AB", 0) > 0) == pol.all_bank
    assert (plan.counts.get("WAIT", 0) > 0) == pol.blocking == (res.stats["waits"] > 0)


def test_two_layers_gqa_and_cent_mapping_on_the_golden_model():
    """Two layers, GQA group 2, CENT's mapping: the V units rotate over the channels with the
    layers (HFP slots), K stays token-parallel; equal to the golden model."""
    pol = L.policy("baseline")
    s = pol.system(L.small_system())
    cfg = L.tiny_config(layers=2, heads=4, kv_heads=2)
    plan = L.compile_step(cfg, s, [90, 40], max_context=96, **pol.compile_kw)
    _same(s.sim, plan.setup + plan.step, "cent 2 layers")


def test_pace_waits_waits_for_every_beat():
    """The golden-model host of a WAIT pushes the next command only after the read's beats
    (4 channels x 1) have left the module."""
    sp = SimParams(n_ch=4, n_banks=2, n_sets=2, n_in=16, n_out=16, all_bank=True)
    p = sp.to_module(n_vpages=16)
    prog = [HCmd(H.MAP, vp=b, pp=b * 2) for b in range(2)] + \
        [HCmd(H.WR_INP, 15, g=0), HCmd(MAC_AB, 15, vp=0, bank=0, set=0),
         HCmd(H.RD_OUT, 15, vp=1, bank=1, set=0), HCmd(WAIT), HCmd(H.NOP)]
    free = pace_waits(p, [x for x in prog if x.op != WAIT])
    wait = pace_waits(p, prog)
    assert len(wait) == len(free) == len(prog)        # the WAIT is no word; + a drain NOP
    assert wait[-2][1] > free[-2][1]                  # the NOP waited for the 4 beats
    _same(sp, prog, "wait")


# ---- invariants on the GDDR6-AiM system ---------------------------------------------------

def _tokens_per_s(cfg, name, ctx, seed=1):
    """PIM-only tokens/s of a policy at the largest fitting batch, the stages working on
    ceil(B / pp) micro-batches (CENT's throughput = pp / token latency)."""
    pol = L.policy(name)
    s = pol.system(L.aim_system(cfg))
    s = L.System(s.sim.with_(out_ports=s.sim.n_ch), s.n_modules, s.tp, s.pp)
    fit = L.max_batch(cfg, s, ctx, seed=seed, **pol.compile_kw)
    m = math.ceil(fit / min(s.pp, fit))
    plan = L.compile_step(cfg, s, L.request_lengths(ctx, fit, seed)[:m], max_context=ctx,
                          **pol.compile_kw)
    st = plan.layer_sets
    res = simulate(s.sim, [Rep((tuple(plan.layer),), plan.layers, "layers", set_stride=st,
                               vp_stride=st * s.sim.n_banks)])
    return fit / (s.pp * res.time_s), res, plan


def test_baseline_is_slower_than_all_and_utilisations_are_fractions():
    cfg = L.load_config("llama-3.1-70b")
    base, rb, pb = _tokens_per_s(cfg, "baseline", 131072)
    best, ra, pa = _tokens_per_s(cfg, "all", 131072)
    assert best > base
    for r, p in ((rb, pb), (ra, pa)):
        assert 0 < r.mac_util <= 1 and 0 < p.capacity["utilisation"] <= 1
        assert r.stats["mac_ab"] > 0 and r.stats["mac"] == p.counts["mac_ch"] * p.layers
    assert rb.stats["waits"] > 0 and ra.stats["waits"] == 0
    # the single-bank ablation of the baseline is slower than CENT's all-bank baseline
    one, _, _ = _tokens_per_s(cfg, "baseline_1bank", 131072)
    assert one < base


def test_kv_heads_replicated_when_tp_exceeds_them(seed):
    """Llama-3.1-8B (8 KV heads) on 16 modules: tp 16 replicates every KV head twice (each
    module holds one KV head and 2 query heads), counted in capacity: the same requests
    reserve twice the KV bytes of tp 8 x pp 2, so fewer fit."""
    cfg = L.load_config("llama-3.1-8b")
    assert (16, 1) in L.splits(cfg, 16) and (8, 2) in L.splits(cfg, 16)
    assert (3, 5) not in L.splits(cfg, 15)
    rep, split = L.aim_system(cfg, tp=16), L.aim_system(cfg)
    assert (rep.tp, rep.pp, split.tp, split.pp) == (16, 1, 8, 2)
    ctx = L.request_lengths(8192, 3, seed)
    a = L.compile_step(cfg, rep, ctx, "TCP", "static", max_context=8192)
    b = L.compile_step(cfg, split, ctx, "TCP", "static", max_context=8192)
    assert a.info["kv_heads_per_module"] == b.info["kv_heads_per_module"] == 1
    assert (a.info["q_heads_per_module"], b.info["q_heads_per_module"]) == (2, 4)
    assert a.capacity["kv_replication"] == 2 and b.capacity["kv_replication"] == 1
    assert a.capacity["reserved_kv_bytes"] == 2 * b.capacity["reserved_kv_bytes"]
    assert a.capacity["live_kv_bytes"] == 2 * b.capacity["live_kv_bytes"]
    assert a.layers == 32 and b.layers == 16
    assert L.max_batch(cfg, rep, 32768, "static", seed=seed) < \
        L.max_batch(cfg, split, 32768, "static", seed=seed)


def test_bad_inputs_name_the_value():
    cfg = L.tiny_config()
    s = L.small_system()
    with pytest.raises(ValueError, match="policy='cent2'"):
        L.policy("cent2")
    with pytest.raises(ValueError, match="blocking='yes'"):
        L.compile_step(cfg, s, [100], blocking="yes")
    with pytest.raises(ValueError, match="partition='CENTX'"):
        L.compile_step(cfg, s, [100], "CENTX")
    with pytest.raises(ValueError, match="tp=3"):
        L.System(s.sim, 3, 3, 1).validate(L.load_config("llama-3.1-8b"))
    with pytest.raises(ValueError, match="system="):
        L.policy("all").system("aim")
    with pytest.raises(ValueError, match="n_modules=0"):
        L.splits(cfg, 0)
    p = SimParams(all_bank=True).to_module()
    with pytest.raises(ValueError, match="p="):
        pace_waits("p", [])
    with pytest.raises(ValueError, match="data="):
        pace_waits(p, [HCmd(H.NOP)], data=3)
    with pytest.raises(ValueError, match="items="):
        pace_waits(p, HCmd(H.NOP))
