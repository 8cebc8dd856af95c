"""``cimphony regress`` (verif/regress.py): lockstep runs as Dask tasks.

Small: the 16x4 4-bit macro of tests/rtl/test_rtl.py (its build, and its ``sign_add`` and
coverage builds, are shared with tests/rtl and ``make coverage``), 20..40 requests per run.
"""
from __future__ import annotations

import json
import re
import shlex

import pytest

from cimphony.cli import main
from verif import regress

pytestmark = pytest.mark.xdist_group("regress")   # one cluster at a time


@pytest.mark.parametrize("argv,option", [
    (["--configs", "nope"], "--configs"),
    (["--configs", "macro:nofault"], "--configs"),
    (["--configs", "macro", "macro"], "--configs"),
    (["--seeds", "-1"], "--seeds"),
    (["--seeds", "5-2"], "--seeds"),
    (["--seeds", "1", "0-2"], "--seeds"),
    (["--commands", "0"], "--commands"),
    (["--workers", "0"], "--workers"),
    (["--connect-timeout", "0"], "--connect-timeout"),
    (["--scheduler", "not an address"], "--scheduler"),
    (["--bank-kinds", "sram"], "--bank-kinds"),
    (["--total-commands", "0"], "--total-commands"),
    (["--commands", "5", "--total-commands", "5"], "--total-commands"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_option_exits_2_naming_it(argv, option, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["regress", *argv, "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err, err
    assert not (tmp_path / "out").exists()


def test_bad_environment_default_exits_2_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("SEED", "x")
    with pytest.raises(SystemExit) as e:
        main(["regress"])
    assert e.value.code == 2
    assert "argument --seeds:" in capsys.readouterr().err


def test_unreachable_scheduler_exits_2(free_port, tmp_path, capsys):
    rc = main(["regress", "--configs", "macro", "--scheduler", f"tcp://127.0.0.1:{free_port}",
               "--connect-timeout", "1", "--out", str(tmp_path)])
    assert rc == 2
    assert "argument --scheduler:" in capsys.readouterr().err
    assert not (tmp_path / "regress.json").exists()


def test_registry_covers_the_rtl_configurations():
    kinds = {c.kind for c in regress.CONFIGS.values()}
    assert kinds == {"macro", "channel", "module", "dram_bank"}
    dcs = {c.params.dcs for c in regress.CONFIGS.values() if c.kind == "channel"}
    assert dcs == {True, False}


def test_bank_kinds_select_module_configurations_and_split_the_total():
    """Every configuration has a bank kind; ``--bank-kinds`` adds the module-level ones of
    each kind; ``--total-commands`` is per bank kind, split over configurations x seeds."""
    assert {c.bank_kind for c in regress.CONFIGS.values()} == set(regress.BANK_KINDS)
    for kind, names in regress.BANK_KIND_CONFIGS.items():
        for n in names:
            c = regress.CONFIGS[n]
            assert (c.kind, c.bank_kind) == ("module", kind)
            assert c.params.channel.bank_kind == kind
    dram = [c for c in regress.CONFIGS.values() if c.bank_kind == "dram"]
    assert {c.kind for c in dram} == {"dram_bank", "channel", "module"}
    assert regress.per_run_commands(10**6, 2, 8) == 62_500
    assert regress.per_run_commands(10, 2, 3) * 6 >= 10
    import argparse
    ap = argparse.ArgumentParser()
    regress.add_arguments(ap)
    a = ap.parse_args(["--configs", "macro", "dram_module", "--bank-kinds", "dram", "dimc"])
    assert regress._selected(a) == [("macro", None), ("dram_module", None),
                                    ("dram_module_reset", None), ("module", None),
                                    ("module_reset", None)]
    assert len(regress._selected(ap.parse_args([]))) == len(regress.CONFIGS)


@pytest.mark.verilator
def test_dram_bank_kind_total_commands(seed, tmp_path, capsys):
    """``--bank-kinds dram --total-commands 400``: the two DRAM module configurations (the
    build of tests/rtl/test_rtl_dram_module.py), 200 host commands each, one with a reset
    in mid-stream, no mismatch."""
    out = tmp_path / "r"
    rc = main(["regress", "--bank-kinds", "dram", "--total-commands", "400", "--seeds",
               str(seed), "--workers", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    doc = _json(out)
    assert doc["total_commands_option"] == 400 and doc["mismatches"] == 0
    assert [(r["config"], r["n"], r["ok"]) for r in doc["runs"]] == [
        ("dram_module", 200, True), ("dram_module_reset", 200, True)]
    assert sum(r["commands"] for r in doc["runs"]) >= 400


def _json(out):
    return json.loads((out / "regress.json").read_text())


@pytest.mark.verilator
def test_two_seeds_on_a_local_cluster_with_coverage(seed, tmp_path, capsys):
    """2 seeds x the small macro on a LocalCluster of 2 workers: no mismatch, both runs in
    the JSON, their coverage merged."""
    out = tmp_path / "r"
    rc = main(["regress", "--configs", "macro", "--seeds", f"{seed}-{seed + 1}", "--commands",
               "20", "--workers", "2", "--coverage", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    doc = _json(out)
    assert doc["mismatches"] == 0 and "LocalCluster of 2" in doc["cluster"]
    assert [(r["config"], r["seed"], r["ok"]) for r in doc["runs"]] == [
        ("macro", seed, True), ("macro", seed + 1, True)]
    for r in doc["runs"]:
        assert r["commands"] == r["planned"] > 20 and r["cycles"] > 20 * 4
    s, = doc["summary"]
    assert (s["config"], s["seeds"], s["mismatches"]) == ("macro", 2, 0)
    assert re.search(r"^macro\s+2\s+\d+\s+\d+\s+0\s", text, re.M), text
    cov = json.loads((out / "coverage" / "summary.json").read_text())
    assert cov["components"]["dimc_macro"]["line"]["pct"] > 80, cov["components"]
    assert doc["coverage"]["dimc_macro"]["toggle"]["hit"] > 0


@pytest.mark.verilator
def test_broken_dut_exits_1_with_the_reproduce_command(seed, tmp_path, capsys):
    """A DUT with the ``sign_add`` fault: exit 1, the mismatch report with the command that
    re-runs that run; that command reproduces the same first mismatch."""
    out = tmp_path / "r"
    rc = main(["regress", "--configs", "macro:sign_add", "--seeds", str(seed), "--commands",
               "40", "--workers", "1", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 1
    cmd = (f"cimphony regress --configs macro:sign_add --seeds {seed} --commands 40 "
           f"--workers 1")
    assert f"reproduce: {cmd}" in cap.err and "res.payload expected" in cap.err, cap.err
    r, = _json(out)["runs"]
    assert not r["ok"] and r["reproduce"] == cmd and r["mismatch"]["signal"] == "res.payload"
    again = tmp_path / "again"
    assert main([*shlex.split(cmd)[1:], "--out", str(again)]) == 1
    r2, = _json(again)["runs"]
    assert r2["mismatch"]["cycle"] == r["mismatch"]["cycle"]


@pytest.mark.verilator
def test_on_a_separate_scheduler_and_worker(dask_cluster, seed, tmp_path, capsys):
    """The same run on a ``dask scheduler`` + ``dask worker`` started as separate
    processes: every task ran on that worker."""
    out = tmp_path / "r"
    rc = main(["regress", "--configs", "macro", "--seeds", str(seed), "--commands", "20",
               "--scheduler", dask_cluster.addr, "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = _json(out)
    assert dask_cluster.addr in doc["cluster"]
    r, = doc["runs"]
    assert r["ok"] and r["worker"].startswith("tcp://127.0.0.1:"), r
