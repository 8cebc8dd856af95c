"""`make perf` end to end on a two-point grid (perf/report.py): files written, rows complete,
and the loose invariants every point must satisfy (utilisations in [0, 1], positive energy with
every component named, the all-techniques configuration faster than the baseline)."""
from __future__ import annotations

import json

from perf import report as perf


def test_perf_two_points(tmp_path):
    perf.main(["--backends", "dimc", "--models", "llama-3.1-8b", "--contexts", "32768",
               "--configs", "baseline", "all", "--batch-cap", "1", "--jobs", "1",
               "--out", str(tmp_path)])
    for f in ("report.md", "results.json", "speedup_vs_context.png",
              "utilisation_vs_context.png", "energy_breakdown.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    res = json.loads((tmp_path / "results.json").read_text())
    rows = {r["config"]: r for r in res["rows"]}
    assert set(rows) == {"baseline", "all"}
    for r in rows.values():
        assert r["status"] == "ok", r
        for k in ("mac_util", "roofline_frac", "channel_util", "capacity_util"):
            assert 0.0 < r[k] <= 1.0, (r["config"], k, r[k])
        e = r["energy_j_per_token"]
        assert e["total"] > 0 and all(v >= 0 for v in e.values())
        assert any("(" in k for k in e)                 # components name their constant
    assert rows["all"]["speedup_throughput"] > 1.0
    assert rows["baseline"]["speedup_throughput"] == 1.0
    report = (tmp_path / "report.md").read_text()
    assert "PIMphony" in report and "dcim_mac_8b" in report
