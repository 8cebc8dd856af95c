"""``cimphony perf`` (perf/report.py, grid.py, tables.py, plots.py): a tiny grid on a Dask
LocalCluster, cached by point (a re-run computes nothing, a new context only its points); the
same grid against a separately started ``dask scheduler`` + ``dask worker``; a failed point
exits non-zero; the tables' arithmetic and the plots' labels."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perf import report, tables as T
from perf.grid import MIX_CONTEXT, fmt_ctx, pairs
from perf.plots import CATEGORIES, category

TINY = ["--systems", "dimc-whatif", "--models", "llama-3.1-8b", "--policies", "baseline",
        "--batch-cap", "1", "--jobs", "1"]


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_code_version_follows_the_sources(tmp_path, monkeypatch):
    from perf import grid
    for d in grid._CODE:
        (tmp_path / d).mkdir()
    (tmp_path / "perf" / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(grid, "_ROOT", tmp_path)
    v1 = grid.code_version()
    assert v1 == grid.code_version() and len(v1) == 16
    (tmp_path / "workloads" / "c.json").write_text("{}")
    v2 = grid.code_version()
    (tmp_path / "perf" / "a.py").write_text("x = 2\n")
    v3 = grid.code_version()
    assert len({v1, v2, v3}) == 3
    (tmp_path / "perf" / "report.py").write_text("# presentation only\n")
    assert grid.code_version() == v3


def test_tiny_grid_report_and_cache(tmp_path, monkeypatch):
    # other sessions may edit the sources meanwhile: hold the code version for this test
    from perf import grid
    v = grid.code_version()
    monkeypatch.setattr(grid, "code_version", lambda: v)
    monkeypatch.setattr(report, "code_version", lambda: v)
    out = tmp_path / "p"
    assert report.main([*TINY, "--contexts", "2048", "--out", str(out)]) == 0
    for f in ("report.md", "results.json", "speedup_vs_context.png",
              "throughput_vs_context.png", "utilisation_vs_context.png",
              "energy_breakdown.png"):
        assert (out / f).stat().st_size > 0, f
    res = _results(out)
    rows = {(r["system"], r["policy"]): r for r in res["rows"]}
    assert set(rows) == {("aim", "baseline"), ("dimc-whatif", "all")}   # baseline always
    assert res["meta"]["computed"] == 2 and res["meta"]["cached"] == 0
    base, w = rows["aim", "baseline"], rows["dimc-whatif", "all"]
    for r in (base, w):
        assert r["status"] == "ok" and r["batch"] == 1 and not r["cached"]
        assert r["token_s"] == pytest.approx(r["pim_s"] + r["host_s"] + r["link_s"])
        assert r["tokens_per_s"] == pytest.approx(r["batch"] / r["token_s"])
        assert r["energy"]["total_j"] == pytest.approx(r["energy"]["static_j"]
                                                       + r["energy"]["dynamic_j"])
    assert base["speedup"] == 1.0 and base["speedup_pim"] == 1.0
    assert w["speedup"] == pytest.approx(w["tokens_per_s"] / base["tokens_per_s"])
    assert w["speedup_pim"] == pytest.approx(base["pim_s"] / w["pim_s"])   # batch 1 both
    assert w["energy"]["static_j"] == 0                 # no sourced SRAM leakage: left out
    assert base["energy"]["static_j"] > 0
    md = (out / "report.md").read_text()
    for s in ("11.3x", "P_ACT_STBY", "Yufeng98/CENT", "bandwidth_per_lane", "tsmc5nm",
              "SRAM leakage", "not sourced", "**Baseline.** CENT's", "![energy_breakdown]"):
        assert s in md, s
    # a re-run computes nothing; a new context computes only its two points
    assert report.main([*TINY, "--contexts", "2048", "--out", str(out)]) == 0
    again = _results(out)
    assert (again["meta"]["computed"], again["meta"]["cached"]) == (0, 2)
    assert [r["tokens_per_s"] for r in again["rows"]] == [r["tokens_per_s"] for r in res["rows"]]
    assert report.main([*TINY, "--contexts", "2048", "1024", "--out", str(out)]) == 0
    more = _results(out)
    assert (more["meta"]["computed"], more["meta"]["cached"]) == (2, 2)


def test_a_failed_point_exits_nonzero(tmp_path, monkeypatch, capsys):
    """A point that raises in its worker (here: context 0) is an error row; the report is
    still written and the run exits 1 naming the point."""
    from perf import grid
    real = grid.points

    def bad_points(*a, **k):
        pts = real(*a, **k)
        return pts[:1] + [type(pts[0])(pts[0].fn, dict(pts[0].kwargs, context=0))]
    monkeypatch.setattr(report, "points", bad_points)
    out = tmp_path / "p"
    assert report.main([*TINY, "--contexts", "1024", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "context=0" in err and "1 of 2 points failed" in err
    rows = _results(out)["rows"]
    assert [r["status"] for r in rows][0] == "ok" and rows[1]["status"].startswith("error")
    assert (out / "report.md").exists()


def test_grid_on_a_separate_scheduler_and_worker(tmp_path, dask_cluster):
    addr, env = dask_cluster.addr, dask_cluster.env
    t0 = time.monotonic()
    out = tmp_path / "p"
    rc = subprocess.run([sys.executable, "-m", "perf.report", *TINY, "--contexts", "1024",
                         "--scheduler", addr, "--out", str(out)], capture_output=True,
                        text=True, timeout=300, env=env)
    assert rc.returncode == 0, rc.stderr[-2000:]
    res = _results(out)
    assert [r["status"] for r in res["rows"]] == ["ok", "ok"]
    assert addr in res["meta"]["cluster"]
    assert time.monotonic() - t0 < 300


def test_unreachable_scheduler_exits_2_naming_it(tmp_path, capsys, free_port):
    addr = f"tcp://127.0.0.1:{free_port}"
    assert report.main([*TINY, "--contexts", "1024", "--scheduler", addr,
                        "--connect-timeout", "2", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "--scheduler" in err and addr in err


@pytest.mark.parametrize("value", ["", "tcp://", "no port", "tcp://host:x"])
def test_malformed_scheduler_address_exits_2(value, capsys):
    with pytest.raises(SystemExit) as e:
        report.main([*TINY, "--scheduler", value])
    assert e.value.code == 2 and "--scheduler" in capsys.readouterr().err


# --- tables and plots, on synthetic rows (hand arithmetic) -----------------------------------
def _row(system, policy, ctx, tps, pim_tps, batch=2, token_s=0.01, host=0.001, link=0.001):
    return dict(status="ok", system=system, policy=policy, model="m", cls="LLM-7B", ctx=ctx,
                tokens_per_s=tps, pim_tokens_per_s=pim_tps, batch=batch, token_s=token_s,
                host_s=host, link_s=link)


def test_speedups_goal_and_sentences():
    rows = [dict(_row("aim", "baseline", 4096, 10.0, 20.0, batch=2, token_s=0.2),
                 mac_utilisation=0.5),
            _row("pimphony", "all", 4096, 150.0, 240.0, batch=6, token_s=0.04),
            _row("aim", "baseline", 32768, 10.0, 20.0),
            dict(status="does not fit: x", system="pimphony", policy="all", model="m",
                 ctx=32768)]
    T.add_speedups(rows)
    assert rows[1]["speedup"] == 15.0 and rows[1]["speedup_pim"] == 12.0
    g = T.goal_rows(rows, ["m"], [4096, 32768])
    assert g[0]["batch_ratio"] == 3.0 and g[0]["step_ratio"] == pytest.approx(5.0)
    assert "speedup" not in g[1]
    tab = T.goal_table(g)
    assert "| 15.00x | 12.00x | pass |" in tab and "all: does not fit" in tab
    s = T.goal_sentences(g, cent_faithful=True)[0]
    assert "at or above 11.3x at 4K" in s and "3.00x the resident requests" in s
    assert "0.20x the baseline's token time" in s and "50% of the bank-cycles" in s
    rows[1]["speedup_pim"] = 11.2
    assert "fail" in T.goal_table(T.goal_rows(rows, ["m"], [4096]))
    assert "below 11.3x" in T.goal_sentences(T.goal_rows(rows, ["m"], [4096]), False)[0]


def test_pairs_always_hold_the_baseline():
    assert pairs(["hybrid"], ["all"]) == [("aim", "baseline"), ("hybrid", "all")]
    p = pairs(["aim", "pimphony", "dimc"])
    assert p[0] == ("aim", "baseline") and ("pimphony", "all") in p and ("dimc", "all") in p
    assert ("aim", "tcp") in p and ("aim", "all") not in p        # aim + all = pimphony
    assert len(set(p)) == len(p)


def test_context_labels_and_energy_categories():
    assert [fmt_ctx(c) for c in (4096, 32768, 131072, 1 << 20, MIX_CONTEXT, 1000)] == \
        ["4K", "32K", "128K", "1M", "mix 59K", "1000"]
    names = ["GBuf/OBuf (SRAM_64B)", "column MAC (3 P_RD tCCDL / 16 per bank column)",
             "ACT/PRE (P_ACT tRC)", "array RD/WR bursts (P_RD, P_WR x tBL)",
             "DQ I/O (DQ x WORD)", "controller (P_TRX, P_PHY)",
             "MAC (DCIM_OP x 2 x n_in x n_out)", "weight/KV write (CIM_WRITE_8B)",
             "host I/O (DQ, assumed)", "controller (P_TRX)", "link (LINK)",
             "KV stream: array RD bursts (P_RD tBL)", "KV stream: DQ I/O (DQ x WORD)",
             "KV stream: ACT/PRE (P_ACT tRC)", "KV stream: macro write (CIM_WRITE_8B)",
             "x: standby (P_ACT_STBY, P_PRE_STBY)", "x: refresh (P_ACT tRC per bank per tREFI)"]
    cats = [category(n) for n in names]
    assert cats[-2:] == ["static: DRAM standby", "static: DRAM refresh"]
    assert set(cats) <= set(CATEGORIES) and len(set(cats)) == len(CATEGORIES)
    with pytest.raises(ValueError, match="component='?zzz"):
        category("zzz")
