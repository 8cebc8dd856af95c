"""verif/functional.py: crosses, exclusions, and sampling of the golden models."""
from __future__ import annotations

import pytest

from spec.isa import ChannelParams
from spec.params import MacroParams
from verif import functional as F
from verif import suite


def test_cross_counts_exclusions_and_wrong_exclusions():
    c = F.Cross("t", {"a": ("x", "y"), "b": (0, 1)},
                [(lambda d, f: d["a"] == "y" and d["b"] == 1, "y1 cannot happen")])
    c.sample(a="x", b=0)
    c.sample(a="x", b=0)
    r = c.report()
    assert (r["bins"], r["hit"], r["samples"]) == (3, 1, 2)
    assert r["missing"] == ["x/1", "y/0"] and r["excluded"] == {"y1 cannot happen": 1}
    assert r["excluded_but_hit"] == []
    c.sample(a="y", b=1)                     # the excluded bin happens: reported
    assert c.report()["excluded_but_hit"] == ["y/1"]
    with pytest.raises(ValueError, match="a='z'"):
        c.sample(a="z", b=0)


def test_channel_sampling_sees_dependencies_and_backpressure():
    cp = ChannelParams(macro=MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2,
                                         tree_stages=0), n_banks=2, n_gbuf=2, q_depth=4)
    run = suite.Run("c", "channel", cp, lambda s: __import__(
        "tb.stimgen", fromlist=["x"]).random_channel_cmds(cp, s, 400), {"out_ready_p": 0.5})
    rep = suite.run_functional([run], seed=3).report()
    cmd = rep["crosses"]["channel.command"]
    # every opcode is sampled; a MAC waits on GBuf and weights; RD_OUT on the MAC's result
    assert cmd["samples"] >= 400
    hits = {b for b in ("MAC/gbuf_raw/dcs/dimc", "MAC/weight_raw/dcs/dimc",
                        "RD_OUT/obuf_raw/dcs/dimc") if b not in cmd["missing"]}
    assert len(hits) == 3, cmd["missing"]
    assert rep["crosses"]["channel.backpressure"]["hit"] >= 2
    assert not rep["excluded_but_hit"], rep["excluded_but_hit"]


def test_macro_hazard_is_rejected_in_the_model():
    run = [r for r in suite.runs(0.3) if r.name == "macro_badrow"]
    rep = suite.run_functional(run).report()["crosses"]["macro.write"]
    assert "active_set/WR_HAZARD" not in rep["missing"]
    assert "idle/WR_BAD_ROW" not in rep["missing"] or "other_set/WR_BAD_ROW" not in \
        rep["missing"]
    assert not rep["excluded_but_hit"]


def test_dram_channel_bins_are_a_bank_kind():
    """A DRAM-PIM channel samples its own bins of the bank-kind axis (commands, waits for
    the DRAM timing rules, backpressure), no excluded bin is hit, and DIMC-only bins are
    excluded while no DIMC channel is sampled."""
    run = [r for r in suite.runs(0.2) if r.name == "channel_dram_dcs"]
    rep = suite.run_functional(run, seed=2).report()
    cr = rep["crosses"]
    assert not rep["excluded_but_hit"], rep["excluded_but_hit"]
    assert "MAC/gbuf_raw/dcs/dram" not in cr["channel.command"]["missing"]
    assert "compute/dram_timing/dcs/dram" not in cr["channel.wait"]["missing"]
    assert cr["channel.wr_w"]["bins"] == 0 and cr["channel.backpressure"]["bins"] == 4
    assert all(b.endswith("/dram") for b in cr["channel.command"]["missing"])
