"""`cimphony perf` end to end on a small grid (the AiM baseline and the PIMphony preset at 32K,
one request): files written, rows complete, loose invariants (utilisations in [0, 1], energy
split into named static and dynamic components, all techniques faster than the baseline), and
each row's numbers recomputed from the compiler, the timing model and the host model."""
from __future__ import annotations

import json
import math

import pytest

from cimphony import cli
from compiler import llm as L
from perf.host import ModelShape, step_time
from perf.point import timing_items
from perf.presets import POLICIES, aim_rank
from perf.sim import simulate

CTX = 32768


def test_perf_grid_rows_recomputed(tmp_path, seed):
    rc = cli.main(["perf", "--systems", "aim", "pimphony", "--models", "llama-3.1-8b",
                   "--contexts", str(CTX), "--policies", "baseline", "all", "--batch-cap", "1",
                   "--jobs", "1", "--seed", str(seed), "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    rows = {r["policy"]: r for r in res["rows"]}
    assert set(rows) == {"baseline", "all"}
    cfg = L.load_config("llama-3.1-8b")
    for name, r in rows.items():
        assert r["status"] == "ok", r
        for k in ("mac_utilisation", "channel_utilisation", "capacity_utilisation"):
            assert 0.0 < r[k] <= 1.0, (name, k, r[k])
        e = r["energy"]
        assert e["total_j"] > e["static_j"] > 0 and e["dynamic_j"] > 0
        assert all("(" in k for k in e["components"])          # named by their constants
        # 256 channels: 8 CENT devices of 32 channels, tp = gcd(8, 8 KV heads) = 8, pp = 1
        assert (r["channels"], r["ranks"], r["tp"], r["pp"], r["ch_per_rank"]) == \
            (256, 8, 8, 1, 32)
        pol = POLICIES[name]
        sp = aim_rank(cfg, 32, pol)
        system = L.System(sp, 8, 8, 1)
        assert (r["partition"], r["all_bank"], r["blocking"]) == \
            (pol.partition, pol.all_bank, pol.blocking)
        assert r["batch_fit"] == L.max_batch(cfg, system, CTX, seed=seed,
                                             **pol.compile_kw) >= 1
        ctx = L.request_lengths(CTX, 1, seed)
        assert r["contexts_max"] == max(ctx)
        plan = L.compile_step(cfg, system, ctx, max_context=CTX, **pol.compile_kw)
        sim = simulate(sp, timing_items(plan))
        assert r["stage_cycles"] == sim.t_end
        # DRAM: 2 GHz, refresh stretch tREFI / (tREFI - tRFC - tRP - tRCDRDMAC)
        d = sp.dram
        stretch = d.REFI / (d.REFI - d.RFC - d.RP - d.RCDRDMAC)
        assert r["pim_s"] == pytest.approx(sim.t_end * stretch / 2e9, rel=1e-12)
        ht = step_time(ModelShape(cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim,
                                  cfg.intermediate, cfg.vocab, cfg.layers),
                       context=max(ctx), batch=1, tp=8, pp=1, channels=32)
        assert r["host_s"] == pytest.approx(ht["host_s"]) and \
            r["link_s"] == pytest.approx(ht["link_s"])
        assert r["token_s"] == pytest.approx(r["pim_s"] + ht["host_s"] + ht["link_s"])
        assert r["tokens_per_s"] == pytest.approx(1 / r["token_s"])
        # static energy: 256 channels' standby for the token time (active while computing)
        # and refresh, per token (one request)
        act, pre = 0.26375 * 256, 0.18315 * 256
        refresh = 256 * 16 * 0.0663 * 44.5e-9 / (d.REFI * d.tCK_ns * 1e-9)
        assert e["static_j"] == pytest.approx(act * r["pim_s"] + pre * (r["token_s"] - r["pim_s"])
                                              + refresh * r["token_s"])
    base, best = rows["baseline"], rows["all"]
    assert best["stage_cycles"] < base["stage_cycles"]
    assert best["speedup"] == pytest.approx(best["tokens_per_s"] / base["tokens_per_s"])
    assert best["speedup_pim"] == pytest.approx(base["pim_s"] / best["pim_s"])
    assert best["speedup_pim"] > best["speedup"] > 1.0          # host + link dilute it
    assert best["energy_j_per_token"] < base["energy_j_per_token"]  # faster: less static
    assert not math.isnan(best["mm2"]) and best["mm2"] == base["mm2"]   # same hardware
    md = (tmp_path / "report.md").read_text()
    assert "PIMphony" in md and "P_ACT_STBY" in md and ("| pass |" in md or "| fail |" in md)
