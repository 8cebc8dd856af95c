"""verif/synth.py: the area/timing proxy of a small macro."""
from __future__ import annotations

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


@pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
def test_small_macro_area_and_path(tmp_path):
    p = MacroParams(n_in=4, n_out=2, w_bits=4, x_bits=4, n_acc=2, tree_stages=1)
    r = S.synth_component(DimcMacro(p), tmp_path)
    assert r["area_um2"] > 0 and r["cells"] > 0 and r["generic_cells"] > 0
    # every weight bit and every result-file bit is a flip-flop
    assert r["flops"] >= p.n_sets * p.n_in * p.n_out * p.w_bits + p.n_acc * p.n_out * p.acc_width
    assert (tmp_path / f"{r['label']}.json").exists()
    if shutil.which("sta"):
        assert r["critical_path_ns"] > 0 and r["fmax_mhz"] > 0, r.get("sta_error")
