"""The ``cimphony`` command (cimphony/cli.py) and ``--set`` parsing (spec/overrides.py).

Bad inputs: exit status 2, the option and the value on stderr, and nothing run: in-process
tests replace every subcommand's work function by one that fails the test, and check that the
working directory stays empty; the subprocess tests also bound the time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cimphony import cli
from spec.isa import ChannelParams, ModuleParams
from spec.overrides import build_params, parse_set
from spec.params import MacroParams



def _subparsers(ap: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in ap._actions if isinstance(a, argparse._SubParsersAction)), None)


def _commands(ap: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    """Every command line a user runs, from the parser: each subcommand, or, where a command
    requires a subcommand of its own (``verify``), each of those (``verify coverage``)."""
    sub = _subparsers(ap)
    if sub is None or not sub.required:
        return [" ".join(path)]
    return [c for name, p in sub.choices.items() for c in _commands(p, (*path, name))]


#: every subcommand of ``cimphony`` (from the parser, so that a new one cannot be missed)
SUBCOMMANDS = tuple(_subparsers(cli.build_parser()).choices)
#: every command that runs something: a subcommand, or each of a group's (``verify ...``)
COMMANDS = _commands(cli.build_parser())


# --- as a new user runs it: the installed script, from another folder, no PYTHONPATH ---------
def _command() -> list[str]:
    exe = shutil.which("cimphony", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "cimphony"]


def _run(args, cwd, env_extra=None, cmd=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SEED", "JOBS")}
    env.update(env_extra or {})
    t0 = time.monotonic()
    r = subprocess.run((cmd or _command()) + list(args), cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    return r, time.monotonic() - t0


def test_help_lists_every_subcommand(tmp_path):
    r, _ = _run(["--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    for name in SUBCOMMANDS:
        assert name in r.stdout, name
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", COMMANDS)
def test_subcommand_help(tmp_path, name):
    r, _ = _run([*name.split(), "--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: cimphony {name}"), r.stdout[:200]
    assert "--out" in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_python_m_cimphony(tmp_path):
    r, _ = _run(["--help"], tmp_path, cmd=[sys.executable, "-m", "cimphony"])
    assert r.returncode == 0, r.stderr
    assert "verilog" in r.stdout and "perf" in r.stdout


def test_no_subcommand_is_a_usage_error(tmp_path):
    r, _ = _run([], tmp_path)
    assert r.returncode == 2
    assert "COMMAND" in r.stderr


@pytest.mark.parametrize("cmd, args, env, expect", [
    (None, ["verilog", "--set", "macro.n_in=abc"], {}, ["--set", "macro.n_in=abc", "'abc'"]),
    (None, ["demo", "--ready-p", "2"], {}, ["--ready-p", "'2'"]),
    (None, ["bench", "--parts", "4"], {}, ["--parts", "'4'"]),
    (None, ["perf"], {"JOBS": "abc"}, ["JOBS", "'abc'", "--jobs"]),
    ([sys.executable, "-m", "tb.demo"], ["--ready-p", "2"], {}, ["--ready-p", "'2'"]),
    ([sys.executable, "-m", "bench.controller"], ["--parts", "4"], {}, ["--parts", "'4'"]),
    ([sys.executable, "-m", "perf.report"], ["--contexts", "0"], {}, ["--contexts", "'0'"]),
])
def test_bad_input_exits_2_fast_as_a_process(tmp_path, cmd, args, env, expect):
    r, dt = _run(args, tmp_path, env_extra=env, cmd=cmd)
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-500:])
    for s in expect:
        assert s in r.stderr, (s, r.stderr)
    assert "Traceback" not in r.stderr
    assert dt < 10, f"took {dt:.1f} s: something was built"
    assert list(tmp_path.iterdir()) == []


def test_python_m_model_macro_runs_no_benchmark(tmp_path):
    r, dt = _run(["--help"], tmp_path, cmd=[sys.executable, "-m", "model.macro"])
    assert "step_us" not in r.stdout and "cycles_per_s" not in r.stdout, r.stdout
    assert dt < 10


# --- in process -------------------------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Every subcommand's work function fails the test; cwd is an empty temp folder."""
    from cimphony import generate
    from perf import report
    from tb import demo

    def ran(*a, **k):
        raise AssertionError("the subcommand ran: the bad input was not rejected")
    for mod, name in ((demo, "run"), (report, "run"), (generate, "run"), (cli, "_run_verilog"),
                      (cli, "_run_docs"), *((m, "run") for m in cli.bench_modules().values())):
        monkeypatch.setattr(mod, name, ran)
    for var in ("SEED", "JOBS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _exit_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


LONG = " ".join(["word"] * 300)

BAD = [
    # verilog --set: conversion by the field's type, keys, merge conflicts, params validation
    (["verilog", "--set", "macro.n_in=abc"], ["--set macro.n_in=abc", "n_in must be an int",
                                               "'abc'"]),
    (["verilog", "--set", "macro.n_in=1.5"], ["macro.n_in=1.5", "'1.5'"]),
    (["verilog", "--set", "macro.n_in=0x10"], ["macro.n_in=0x10", "'0x10'"]),
    (["verilog", "--set", "channel.dcs=2"], ["channel.dcs=2", "dcs", "'2'"]),
    (["verilog", "--set", "channel.dcs=yes"], ["channel.dcs=yes", "'yes'"]),
    (["verilog", "--set", "chip.n_in=16"], ["chip.n_in=16", "'chip'"]),
    (["verilog", "--set", "macro.nin=16"], ["macro.nin=16", "'nin'"]),
    (["verilog", "--set", "channel.macro=1"], ["channel.macro=1", "'macro'"]),
    (["verilog", "--set", "macro.n_in"], ["--set macro.n_in", "KEY=VALUE"]),
    (["verilog", "--set", "n_in=16"], ["--set n_in=16", "COMPONENT"]),
    (["verilog", "--set", "macro.n_in=16", "--set", "macro.n_in=8"],
     ["macro.n_in=8", "macro.n_in=16"]),
    (["verilog", "--set", "macro.n_in=2000"], ["--set macro.n_in=2000", "MacroParams",
                                                "2..1024"]),
    (["verilog", "--set", "macro.w_bits=4", "--set", "module.n_ch=17"],
     ["--set module.n_ch=17", "ModuleParams"]),
    (["verilog", "--top", "dimc"], ["--top", "'dimc'"]),
    # demo
    (["demo", "--ready-p", "2"], ["--ready-p", "'2'"]),
    (["demo", "--ready-p", "0"], ["--ready-p", "'0'"]),
    (["demo", "--ready-p", "nan"], ["--ready-p", "'nan'"]),
    (["demo", "--gap", "-1"], ["--gap", "'-1'"]),
    (["demo", "--seed", "-1"], ["--seed", "'-1'"]),
    (["demo", "--sentence", LONG], ["--sentence", "302 tokens", "128"]),
    (["demo", "--sentence", "  "], ["--sentence", "'  '"]),
    # bench
    (["bench", "--parts", "4"], ["--parts", "'4'"]),
    (["bench", "--parts", "1,4"], ["--parts", "'1,4'"]),
    (["bench", "--parts", ""], ["--parts", "''"]),
    (["bench", "--chunks", "0"], ["--chunks", "'0'"]),
    (["bench", "--chunk-cmds", "-5"], ["--chunk-cmds", "'-5'"]),
    (["bench", "--cycles", "0"], ["--cycles", "'0'"]),
    (["bench", "--lockstep-cycles", "x"], ["--lockstep-cycles", "'x'"]),
    (["bench", "--seed", "-1"], ["--seed", "'-1'"]),
    (["bench", "--only", "perf"], ["--only", "'perf'"]),
    (["bench", "--only", "macro", "macro"], ["--only", "'macro'", "twice"]),
    (["bench", "--numerics-formats", "fp8"], ["--numerics-formats", "'fp8'"]),
    (["bench", "--numerics-layers", "30"], ["--numerics-layers", "'30'"]),
    (["bench", "--softmax-layers", "-1"], ["--softmax-layers", "'-1'"]),
    (["bench", "--softmax-tf-tokens", "x"], ["--softmax-tf-tokens", "'x'"]),
    # generate
    (["generate", "--format", "fp8"], ["--format", "'fp8'"]),
    (["generate", "--format", "int4"], ["--format", "'int4'"]),
    (["generate", "--tokens", "0"], ["--tokens", "'0'"]),
    # perf
    (["perf", "--contexts", "0"], ["--contexts", "'0'"]),
    (["perf", "--contexts", "-4096"], ["--contexts", "'-4096'"]),
    (["perf", "--contexts", "4096", "32768", "4096"], ["--contexts", "4096", "twice"]),
    (["perf", "--batch-cap", "0"], ["--batch-cap", "'0'"]),
    (["perf", "--batch-cap", "-1"], ["--batch-cap", "'-1'"]),
    (["perf", "--seed", "-1"], ["--seed", "'-1'"]),
    (["perf", "--out-ports", "0"], ["--out-ports", "'0'"]),
    (["perf", "--jobs", "0"], ["--jobs", "'0'"]),
    (["perf", "--models", "llama-3.1-8b", "llama-3.1-8b"], ["--models", "'llama-3.1-8b'"]),
    # docs
    (["docs", "--src", "no/such/dir"], ["--src", "'no/such/dir'"]),
]


@pytest.mark.parametrize("argv, expect", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_exits_2_before_any_work(no_work, capsys, argv, expect):
    err = _exit_2(argv, capsys)
    for s in expect:
        assert s in err, (s, err)
    assert list(no_work.iterdir()) == []


@pytest.mark.parametrize("sub", [c for c in COMMANDS if c != "generate"])
def test_out_on_an_existing_file_exits_2(no_work, capsys, sub):
    (no_work / "taken").write_text("")
    for out in ("taken", "taken/sub"):
        err = _exit_2([*sub.split(), "--out", out], capsys)
        assert "--out" in err and f"'{out}'" in err and "not a directory" in err, err
    assert [p.name for p in no_work.iterdir()] == ["taken"]


def test_generate_out_on_a_directory_exits_2(no_work, capsys):
    (no_work / "d").mkdir()
    err = _exit_2(["generate", "--out", "d"], capsys)
    assert "--out" in err and "'d'" in err and "directory" in err, err


@pytest.mark.parametrize("argv, option", [
    (["--format", "mxint8", "--loop"], "--loop"), (["--format", "q4_1", "--digits", "1"],
                                                   "--digits")])
def test_generate_int8_only_options_exit_2_before_the_model(monkeypatch, capsys, argv, option):
    """Options of the module path given with a block format: 2 before the model is read."""
    from workloads import gguf_model
    monkeypatch.setattr(gguf_model, "load_gguf", lambda *a, **k: pytest.fail("model loaded"))
    assert cli.main(["generate", *argv]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "--format int8" in err, err


# --- the bench registry ---------------------------------------------------------------------
#: bad values by argparse type: each bench option of one of these types must reject its value
_BAD_BY_TYPE = {"a positive integer": "0", "an integer >= 0": "-1", "smollm2_layer": "30",
                "_layer": "30", "size": "0x0", "parts_arg": "9", "_tokens": "100"}


def _bench_bad_options():
    """(bench, option, bad value) for every typed or choice option of every registered bench
    (from each module's own ``add_arguments``, so a new bench or option is covered)."""
    out = []
    for name, mod in cli.bench_modules().items():
        ap = argparse.ArgumentParser()
        mod.add_arguments(ap, common=False)
        for act in ap._actions:
            if not act.option_strings or act.option_strings[0] == "-h":
                continue
            opt = act.option_strings[0]
            if act.choices is not None:
                out.append((name, opt, "no-such-choice"))
            elif act.type is not None:
                tname = getattr(act.type, "__name__", "")
                assert tname in _BAD_BY_TYPE, f"bench {name} {opt}: add a bad value for " \
                                              f"type {tname!r} to _BAD_BY_TYPE"
                out.append((name, opt, _BAD_BY_TYPE[tname]))
    return out


def test_every_registered_bench_has_checked_options():
    names = {n for n, _ in [(b, o) for b, o, _ in _bench_bad_options()]}
    assert {"macro", "controller", "hier", "numerics", "softmax", "allbank", "dram"} <= set(cli.bench_modules())
    assert names == set(cli.bench_modules()), names


@pytest.mark.parametrize("name, option, value", _bench_bad_options(),
                         ids=[f"{b} {o} {v}" for b, o, v in _bench_bad_options()])
def test_bench_bad_option_exits_2_before_any_work(no_work, capsys, name, option, value):
    err = _exit_2(["bench", "--only", name, option, value], capsys)
    assert option in err and repr(value) in err, err
    assert list(no_work.iterdir()) == []


def test_bench_registry_never_skips_a_missing_module(monkeypatch):
    assert list(cli.bench_modules()) == [n for n, _, _ in cli.BENCHES]
    monkeypatch.setattr(cli, "BENCHES", (*cli.BENCHES, ("nosuch", "bench.no_such_bench_xyz",
                                                        "not written yet")))
    with pytest.raises(ImportError):
        cli.bench_modules()


@pytest.mark.parametrize("var, argv, option", [
    ("JOBS", ["perf"], "--jobs"), ("SEED", ["perf"], "--seed"), ("SEED", ["demo"], "--seed"),
    ("SEED", ["bench"], "--seed")])
@pytest.mark.parametrize("value", ["abc", "-3", "0x5", " 1.5"])
def test_bad_environment_default_names_the_variable(no_work, capsys, monkeypatch, var, argv,
                                                    option, value):
    monkeypatch.setenv(var, value)
    err = _exit_2(argv, capsys)
    assert f"environment variable {var}" in err and option in err and repr(value) in err, err
    assert list(no_work.iterdir()) == []


def test_empty_environment_variable_is_unset(no_work, monkeypatch):
    from perf import report
    seen = _captured_run(monkeypatch, report, "run")
    monkeypatch.setenv("JOBS", "")
    monkeypatch.setenv("SEED", "")
    assert cli.main(["perf"]) == 0
    assert (seen[-1].jobs, seen[-1].seed) == (2, 1)


def _captured_run(monkeypatch, mod, name):
    seen = []
    monkeypatch.setattr(mod, name, lambda args: seen.append(args) or 0)
    return seen


def test_good_values_reach_the_subcommand(no_work, monkeypatch):
    from perf import report
    from tb import demo
    seen = _captured_run(monkeypatch, demo, "run")
    at_limit = " ".join(["word"] * 126)                # + [CLS], [SEP] = 128 tokens
    assert cli.main(["demo", "--ready-p", "1", "--gap", "0", "--seed", "0",
                     "--sentence", at_limit]) == 0
    a = seen[-1]
    assert (a.ready_p, a.gap, a.seed, a.sentence) == (1.0, 0, 0, at_limit)
    with pytest.raises(SystemExit):
        cli.main(["demo", "--sentence", at_limit + " word"])   # 129 tokens
    seen = _captured_run(monkeypatch, report, "run")
    monkeypatch.setenv("JOBS", "3")
    monkeypatch.setenv("SEED", "5")
    assert cli.main(["perf", "--contexts", "4096", "8192", "--batch-cap", "2"]) == 0
    a = seen[-1]
    assert (a.contexts, a.batch_cap, a.jobs, a.seed, a.out_ports) == ([4096, 8192], 2, 3, 5,
                                                                      None)
    assert cli.main(["perf", "--jobs", "1", "--seed", "0", "--out-ports", "2"]) == 0
    assert (seen[-1].jobs, seen[-1].seed, seen[-1].out_ports) == (1, 0, 2)


def test_bench_only_and_shared_seed(no_work, monkeypatch):
    mods = cli.bench_modules()
    ran = []
    for name, mod in mods.items():
        monkeypatch.setattr(mod, "run", lambda a, name=name: ran.append((name, a.seed)) or 0)
    controller = mods["controller"]
    assert cli.main(["bench", "--only", "controller", "--parts", "2,3"]) == 0
    assert ran == [("controller", controller.DEFAULT_SEED)]
    ran.clear()
    assert cli.main(["bench", "--only", "softmax", "numerics"]) == 0      # registry order
    assert [n for n, _ in ran] == ["numerics", "softmax"]
    ran.clear()
    monkeypatch.setenv("SEED", "11")
    assert cli.main(["bench", "--no-lockstep"]) == 0                    # make bench: all
    assert ran == [(n, 11) for n in mods]
    ran.clear()
    monkeypatch.setattr(controller, "run", lambda a: ran.append(("controller", a.parts)) or 1)
    assert cli.main(["bench", "--only", "controller", "--parts", "1,3"]) == 1
    assert ran == [("controller", frozenset({1, 3}))]


def test_perf_exits_nonzero_when_a_point_failed(tmp_path, monkeypatch, capsys):
    from perf import report
    monkeypatch.chdir(tmp_path)
    rows = [dict(backend="dimc", model="llama-3.1-8b", cls="LLM-7B", ctx=4096, config=c,
                 status="error: boom") for c in ("baseline", "all")]
    monkeypatch.setattr(report, "run_all", lambda *a, **k: [dict(r) for r in rows])
    monkeypatch.setattr(report, "plots", lambda rows, outdir: [])
    rc = cli.main(["perf", "--backends", "dimc", "--models", "llama-3.1-8b", "--contexts",
                   "4096", "--configs", "all", "--jobs", "1", "--out", str(tmp_path / "p")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "error: boom" in err and "2 of 2 points failed" in err
    assert (tmp_path / "p" / "report.md").exists()     # the report is still written


class _Exporter:
    def __init__(self, ok=True):
        self.calls, self.ok = [], ok

    def __call__(self, out, *, tops, macro, channel, module, lint):
        self.calls.append(dict(out=out, tops=tops, macro=macro, channel=channel, module=module,
                               lint=lint))
        for t in tops:
            (out / f"{t}.v").write_text("module x; endmodule\n")
        return self.ok


def test_verilog_passes_merged_params_to_export(monkeypatch, tmp_path, capsys):
    exp = _Exporter()
    monkeypatch.setattr(cli, "_exporter", lambda: exp)
    rc = cli.main(["verilog", "--out", str(tmp_path / "v"), "--top", "pim_module", "dimc_macro",
                   "--set", "macro.n_in=16", "--set", "macro.w_bits=4", "--set",
                   "channel.dcs=0", "--set", "module.n_ch=2", "--lint"])
    assert rc == 0
    assert [c["tops"] for c in exp.calls] == [["pim_module"], ["dimc_macro"]]
    c = exp.calls[0]
    assert c["lint"] is True and c["out"] == tmp_path / "v"
    assert c["macro"] == MacroParams(n_in=16, w_bits=4)
    assert c["channel"] == ChannelParams(macro=MacroParams(n_in=16, w_bits=4), dcs=False)
    assert c["module"] == ModuleParams(channel=c["channel"], n_ch=2)
    out = capsys.readouterr().out
    assert str(tmp_path / "v") in out and "pim_module" in out and "clean" in out


def test_verilog_exits_1_when_a_lint_fails(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "_exporter", lambda: _Exporter(ok=False))
    assert cli.main(["verilog", "--out", str(tmp_path), "--lint", "--top", "dimc_macro"]) == 1


def test_verilog_export_writes_the_overridden_macro(tmp_path):
    """The real export, small and without lint: the --set values reach the port maps."""
    rc = cli.main(["verilog", "--out", str(tmp_path), "--top", "dimc_macro", "pim_channel",
                   "--set", "macro.n_in=8", "--set", "macro.n_out=4", "--set", "macro.w_bits=4",
                   "--set", "channel.n_banks=2"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.glob("*.v")) == ["dimc_macro.v", "pim_channel.v"]
    m = json.loads((tmp_path / "dimc_macro.ports.json").read_text())["params"]
    ch = json.loads((tmp_path / "pim_channel.ports.json").read_text())["params"]
    assert (m["n_in"], m["n_out"], m["w_bits"]) == (8, 4, 4)
    assert ch["n_banks"] == 2 and ch["macro"] == m


def test_docs_calls_render(monkeypatch, tmp_path, capsys):
    import types
    calls = []

    def render(src, out):
        calls.append((src, out))
        out.mkdir(parents=True, exist_ok=True)
        (out / "macro.svg").write_text("<svg/>")
        return [out / "macro.svg"]
    monkeypatch.setitem(sys.modules, "cimphony.docs", types.SimpleNamespace(render=render))
    (tmp_path / "src").mkdir()
    assert cli.main(["docs", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o")]) == 0
    assert calls == [(tmp_path / "src", tmp_path / "o")]
    assert str(tmp_path / "o" / "macro.svg") in capsys.readouterr().out


# --- spec.overrides ---------------------------------------------------------------------------
def test_parse_set_merges_repeated_items_per_component():
    got = parse_set(["macro.n_in=16", "macro.w_bits=4", "channel.dcs=0", "module.n_ch=2",
                     "channel.n_banks=2", "macro.n_in=16"])
    assert got == {"macro": {"n_in": 16, "w_bits": 4}, "channel": {"dcs": False, "n_banks": 2},
                   "module": {"n_ch": 2}}
    assert type(got["channel"]["dcs"]) is bool and type(got["macro"]["n_in"]) is int
    assert parse_set([]) == {"macro": {}, "channel": {}, "module": {}}


@pytest.mark.parametrize("text, value", [("0", False), ("1", True), ("true", True),
                                         ("false", False), ("TRUE", True)])
def test_parse_set_bool(text, value):
    assert parse_set([f"channel.dcs={text}"])["channel"]["dcs"] is value


@pytest.mark.parametrize("items, expect", [
    (["macro.n_in=abc"], "--set macro.n_in=abc: n_in must be an int, got 'abc'"),
    (["macro.n_in="], "got ''"),
    (["macro.n_in=1_0"], "got '1_0'"),
    (["channel.dcs=2"], "--set channel.dcs=2: dcs must be a bool"),
    (["channel.dcs=-1"], "got '-1'"),
    (["core.n_in=1"], "unknown component 'core'"),
    (["module.channel=1"], "unknown key 'channel'"),
    (["macro.n_in"], "--set macro.n_in: expected COMPONENT.KEY=VALUE"),
    (["=3"], "--set =3: expected"),
    (["macro.n_in=8", "macro.n_out=8", "macro.n_in=16"],
     "--set macro.n_in=16: conflicts with --set macro.n_in=8"),
])
def test_parse_set_errors_name_the_item(items, expect):
    with pytest.raises(ValueError) as e:
        parse_set(items)
    assert expect in str(e.value)


@pytest.mark.parametrize("items", ["macro.n_in=16", None, [16]])
def test_parse_set_wants_a_list_of_strings(items):
    with pytest.raises(ValueError, match="parse_set"):
        parse_set(items)


def test_build_params_nests_the_components():
    macro, channel, module = build_params(parse_set(["macro.n_in=16", "channel.n_banks=2",
                                                     "module.n_ch=2"]))
    assert macro == MacroParams(n_in=16)
    assert channel == ChannelParams(macro=macro, n_banks=2)
    assert module == ModuleParams(channel=channel, n_ch=2)
    assert module.channel.macro.n_in == 16                 # every bank of every channel
    assert build_params({}) == (MacroParams(), ChannelParams(), ModuleParams())


@pytest.mark.parametrize("over, expect", [
    ({"macro": {"n_in": 2000}}, "--set macro.n_in=2000: MacroParams: n_in=2000"),
    ({"channel": {"q_depth": 1}}, "--set channel.q_depth=1: ChannelParams: q_depth=1"),
    ({"module": {"n_vpages": 3}}, "--set module.n_vpages=3: ModuleParams: n_vpages=3"),
    ({"chip": {}}, "unknown component"),
])
def test_build_params_errors_name_the_item(over, expect):
    with pytest.raises(ValueError) as e:
        build_params(over)
    assert expect in str(e.value)
