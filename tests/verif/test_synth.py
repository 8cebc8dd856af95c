"""verif/synth.py: the area/timing proxy (smallest macros only: a few seconds each)."""
from __future__ import annotations

import json
import shutil

import pytest

from hdl.macro import DimcMacro
from spec.params import MacroParams
from verif import synth as S

try:
    S.tools()
    MISSING = None
except S.ToolMissing as e:
    MISSING = str(e)
NO_STA = None if shutil.which("sta") else "sta (apt-get install -y opensta) is not installed"
needs_synth = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
needs_sta = pytest.mark.skipif(MISSING is not None or NO_STA is not None,
                               reason=str(MISSING or NO_STA))

SMALL = MacroParams(n_in=4, n_out=2, w_bits=4, x_bits=4, n_acc=2, tree_stages=1)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The smallest macro, buffered and unbuffered, and the same with twice the rows."""
    out = tmp_path_factory.mktemp("area")
    sta = NO_STA is None
    d = S.Design("macro", SMALL, ("n_in",))
    wide = S.Design("macro", MacroParams(n_in=8, n_out=2, w_bits=4, x_bits=4, n_acc=2,
                                         tree_stages=1), ("n_in",))
    return {"out": out, "buf": S.run_design(d, out, sta=sta),
            "unbuf": S.run_design(d, out, sta=sta, buffer_inputs=False),
            "wide": S.run_design(wide, out, sta=sta)}


@needs_synth
def test_small_macro_area_json(small):
    r, p = small["buf"], SMALL
    for k in ("generic_cells", "cells", "flops", "area_um2", "buffers", "max_fanout",
              "macs_per_cycle", "macs_per_cycle_per_mm2"):
        assert r[k] > 0, k
    # every weight bit and every result-file bit is a flip-flop
    assert r["flops"] >= p.n_sets * p.n_in * p.n_out * p.w_bits + p.n_acc * p.n_out * p.acc_width
    assert r["macs_per_cycle"] == p.n_in * p.n_out / p.x_bits
    on_disk = json.loads((small["out"] / f"{r['label']}.json").read_text())
    assert on_disk["area_um2"] == r["area_um2"] and on_disk["flow"] == "buffered"


@needs_synth
def test_area_grows_with_n_in(small):
    b, w = small["buf"], small["wide"]
    assert w["area_um2"] > 1.2 * b["area_um2"]
    assert w["cells"] > b["cells"] and w["flops"] > b["flops"]


@needs_synth
def test_flop_outputs_are_buffered(small):
    """The earlier flow left the pipeline's destination / set-select flops driving every
    row unbuffered; the buffered flow caps every net (the ideal clock aside)."""
    b, u = small["buf"], small["unbuf"]
    assert b["max_fanout"] <= S.MAX_FANOUT and b["nets_over"] == 0
    assert u["max_fanout"] > 4 * S.MAX_FANOUT and u["driver"].startswith("DFF")
    assert b["buffers"] > u["buffers"]
    assert abs(b["area_um2"] - u["area_um2"]) < 0.05 * u["area_um2"]


@needs_sta
def test_buffered_path_is_shorter_and_a_logic_path(small):
    b, u = small["buf"], small["unbuf"]
    for r in (b, u):
        assert r["critical_path_ns"] > 0 and r["fmax_mhz"] > 0, r.get("sta_error")
        assert r["path_stages"] > 3 and r["tops_per_mm2"] > 0
    assert b["critical_path_ns"] < 0.85 * u["critical_path_ns"]
    # unbuffered: one flop output is the slowest stage; buffered: no stage dominates
    assert "DFF" in u["worst_stage"] and u["worst_stage_ns"] > 1.0
    assert b["worst_stage_ns"] < 0.25 * b["critical_path_ns"]


@needs_synth
def test_cli_writes_json_table_and_markdown(tmp_path, capsys):
    from cimphony.cli import main
    spec = ",".join(f"{k}={getattr(SMALL, k)}" for k in ("n_in", "n_out", "w_bits", "x_bits",
                                                         "n_acc"))
    argv = ["verify", "synth", "--out", str(tmp_path), "--macro", spec]
    assert main(argv + ([] if NO_STA is None else ["--no-sta"])) == 0
    summ = json.loads((tmp_path / "summary.json").read_text())
    (d,) = summ["designs"]
    assert d["area_um2"] > 0 and (tmp_path / f"{d['label']}.json").exists()
    md = (tmp_path / "area.md").read_text()
    assert "not a claim" in md and "TSMC 5 nm" in md and "ANCHORS.md" in md
    assert d["label"] in capsys.readouterr().out


# --- no tools needed ----------------------------------------------------------------------
def test_published_rows_reproduce_the_anchor():
    """MACs/cycle x 2 x clock / area of the 5 nm macro gives its published 221 TOPS/mm^2:
    the same arithmetic is applied to ours."""
    five, four = S.published_rows()
    assert five["tops_per_mm2"] == pytest.approx(five["published_tops_mm2"], rel=0.01)
    assert five["macs_per_cycle"] == 1024 and four["macs_per_cycle"] == 288
    assert all("ANCHORS.md" in p["source"] for p in S.PUBLISHED)


def test_sweep_covers_every_axis():
    for full in (False, True):
        designs, pair = S.sweep(full)
        axes = {a for d in designs for a in d.axes}
        assert {"n_in", "n_out", "w_bits", "banks"} <= axes
        assert [d.params.n_banks for d in designs if d.kind == "channel"][:3] == [1, 2, 4]
        assert len({d.label for d in designs}) == len(designs) and len(pair) == 1
    assert any(d.label == pair[0].label for d in designs)      # full: the 16x16 w8x8


def test_plots_and_markdown_from_results(tmp_path):
    pytest.importorskip("matplotlib")
    rs = []
    for i, n in enumerate((4, 8, 16)):
        rs.append({"label": f"m{n}", "kind": "macro", "axes": ["n_in"], "n_in": n, "n_out": 8,
                   "w_bits": 4, "x_bits": 4, "n_banks": 1, "generic_cells": 10 * n,
                   "cells": 20 * n, "flops": 5 * n, "area_um2": 1e4 * n, "mm2": 1e-2 * n,
                   "critical_path_ns": 3 + i, "fmax_mhz": 1000 / (3 + i), "max_fanout": 16,
                   "seconds": 1, "macs_per_cycle": 2 * n, "macs_per_cycle_per_mm2": 200,
                   "tops_per_mm2": 0.1})
    assert S.plots(rs, tmp_path) == ["area_vs_n_in.png"]
    assert (tmp_path / "area_vs_n_in.png").stat().st_size > 1000
    md = S.markdown(rs, [])
    assert md.count("| ours: macro") == 3 and "proxy" in md
