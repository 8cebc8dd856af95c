"""``cimphony regress``: lockstep regressions (seeds x configurations) as tasks on Dask.

    cimphony regress [--configs NAME[:FAULT] ...] [--bank-kinds dimc|dram ...]
                     [--seeds S|A-B ...] [--commands N | --total-commands N]
                     [--workers N | --scheduler ADDRESS] [--coverage] [--out DIR]

Every task is one lockstep run (``tb.build.run_job``: the Verilated design and its golden
model compared every cycle) of one configuration of :data:`CONFIGS` on one seed, with the
stimulus generator of the ``tests/rtl`` test the configuration mirrors.  The client first
builds (or finds cached, ``tb/cache.py``) the one Verilator build of every configuration, one
after the other, so the workers never build; then the tasks fan out over a Dask
``LocalCluster`` of ``--workers`` processes (one thread each; the default) or an existing
cluster (``--scheduler tcp://host:port``), with a tqdm progress bar.  The workers run in the
client's sandbox: they read the builds under ``sim_build/`` (the same machine or a shared file
system; a worker that finds no build builds it itself, serialised by the cache's lock).

Bank kinds: every configuration has the ``bank_kind`` of its banks (``dimc``: the DIMC macro,
``dram``: DRAM-PIM banks, docs/dram_channel.md).  ``--bank-kinds K ...`` adds the module-level
configurations of each kind (:data:`BANK_KIND_CONFIGS`: random and malformed host streams,
with and without a reset in mid-stream); ``--total-commands N`` splits N commands *per bank
kind* evenly over that kind's selected configurations and the seeds (each run gets
ceil(N / (configurations x seeds)) commands), which is how ``make bench`` runs 10^6 commands
per bank kind (:func:`bench_bank_kinds`)::

    cimphony regress --bank-kinds dimc dram --total-commands 1000000 --seeds 1-8

Every mismatch is printed as it arrives, with the report of ``tb/mismatch.py`` and the
command that re-runs exactly that run (``cimphony regress --configs X --seeds N --commands
C``).  The end is a table (per configuration: seeds, commands, cycles, mismatches, wall) and
``OUT/regress.json``; the exit status is 1 if any run mismatched or failed, 2 for a bad
option (each checked by its argparse type, before any cluster or build) or an unreachable
scheduler.

``--coverage`` uses the coverage builds (``_cov``, ``CIMPHONY_COVERAGE``): every task
returns the counts of its ``coverage.dat`` files (so the workers need no shared output
directory), the client merges them (``verif/coverage.py``) into ``OUT/coverage/summary.json``,
``coverage.info`` and, with lcov's ``genhtml``, ``html/``.

A task sets ``CIMPHONY_COVERAGE`` for its run under a per-process lock, so runs of one worker
process are serialised (workers have one thread by default), and drops the
``MALLOC_TRIM_THRESHOLD_`` the Dask nanny gives its workers from the simulator's environment
(with it the simulator runs about 2x slower).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cimphony.cli import (env_default, out_dir, positive_int, print_table)

__all__ = ["Config", "CONFIGS", "BANK_KINDS", "BANK_KIND_CONFIGS", "config_spec", "seed_spec",
           "add_arguments", "run", "run_task", "reproduce_command", "per_run_commands",
           "bench_bank_kinds"]


# --- the configurations ---------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """One regression configuration: a design ``kind`` of ``tb/designs.py`` with ``params``;
    ``streams(seed, n)`` -> (input streams [[Beat]], run keyword arguments of ``run_job``,
    commands); ``n`` is ``default_n`` unless ``--commands`` is given; ``mirrors`` names the
    ``tests/rtl`` test whose configuration and stimulus generator it reuses; ``bank_kind``
    the kind of its banks ("dimc" or "dram")."""
    name: str
    kind: str
    params: object
    default_n: int
    streams: Callable
    unit: str
    mirrors: str
    bank_kind: str = "dimc"


def _macro(p, ready_p, gap_p=0.3):
    def streams(seed, n):
        from tb.stimgen import random_stimulus
        s = random_stimulus(p, seed, n_req=n, ready_p=ready_p, gap_p=gap_p)
        return [s.wr, s.req], dict(ready_p=s.ready_p, note=s.note), len(s.wr) + len(s.req)
    return streams


def _beats(cmds):
    from model.stimulus import Beat
    return [Beat(w, g) for w, g in cmds]


def _channel(p, reset=False):
    def streams(seed, n):
        from tb.stimgen import random_channel_cmds
        kw = dict(ready_p=0.6)
        if reset:
            kw["reset_at"] = 7 * n // 5     # tests/rtl: 5000 commands, reset at 7000
        return [_beats(random_channel_cmds(p, seed, n))], kw, n
    return streams


def _module(p, ready_p, reset=False, reset_per_cmd=4 / 3):
    def streams(seed, n):
        from tb.stimgen import random_host_cmds
        kw = dict(ready_p=ready_p)
        if reset:       # tests/rtl: 3000 commands, reset at 4000 (DIMC); 2500 at 6000 (DRAM)
            kw["reset_at"] = int(reset_per_cmd * n)
        return [_beats(random_host_cmds(p, seed, n))], kw, n
    return streams


def _dram(p):
    def streams(seed, n):
        import random
        from tb.dram import random_dram_cmds
        return ([_beats(random_dram_cmds(p, seed, n))],
                dict(ready_p=1.0, reset_at=random.Random(seed).randrange(n // 2, 2 * n)), n)
    return streams


def _configs() -> dict[str, Config]:
    from spec.dram import SHORT_TIMING
    from spec.isa import ChannelParams, ModuleParams
    from spec.params import MacroParams
    from tb.dram import SMALL_BANK

    def macro(n_in, n_out, w, x, ts, n_sets=2):
        return MacroParams(n_in=n_in, n_out=n_out, w_bits=w, x_bits=x, tree_stages=ts,
                           n_acc=4, n_sets=n_sets)
    tiny = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=0)

    def chan(dcs, all_bank=False):
        return ChannelParams(macro=tiny, n_banks=2, n_gbuf=2, q_depth=4, dcs=dcs,
                             all_bank=all_bank)
    mod = ModuleParams(chan(True), n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4)
    # DRAM-PIM banks (docs/dram_channel.md): 16 x 2 INT8 pages in 8-byte bursts (C = 4
    # columns), SHORT_TIMING (refresh every 120 cycles): tests/rtl/test_rtl_dram_channel.py's
    # channel and tests/rtl/test_rtl_dram_module.py's module (2 x 2 banks, host ready)
    dsmall = MacroParams(n_in=16, n_out=2, n_sets=4, n_acc=2)

    def dchan(dcs):
        return ChannelParams(dsmall, n_banks=2, n_gbuf=2, q_depth=4, dcs=dcs, all_bank=True,
                             bank_kind="dram", burst_bytes=8, timing=SHORT_TIMING)
    dmod = ModuleParams(dchan(True), n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4,
                        host_ready=True)
    m1, m4 = macro(16, 4, 4, 4, 0), macro(16, 4, 8, 8, 2, n_sets=4)
    rtl = "tests/rtl/"
    out = [
        Config("macro", "macro", m1, 120, _macro(m1, 0.6), "requests",
               rtl + "test_rtl.py::test_lockstep_matrix[i16_o4_w4_x4...t0]"),
        Config("macro_sets4", "macro", m4, 150, _macro(m4, 0.25, gap_p=0.5), "requests",
               rtl + "test_rtl.py::test_lockstep_four_sets_two_stage_tree"),
        Config("channel_dcs", "channel", chan(True), 2000, _channel(chan(True)), "commands",
               rtl + "test_rtl_channel.py::test_random_streams_lockstep[dcs]"),
        Config("channel_inorder", "channel", chan(False), 2000, _channel(chan(False)),
               "commands", rtl + "test_rtl_channel.py::test_random_streams_lockstep[inorder]"),
        Config("channel_ab", "channel", chan(True, True), 2000, _channel(chan(True, True)),
               "commands", rtl + "test_rtl_isa_v2.py::test_channel_all_bank_random_lockstep"),
        Config("module", "module", mod, 5000, _module(mod, 0.5), "host commands",
               rtl + "test_rtl_module.py::test_random_valid_and_malformed_streams"),
        Config("module_reset", "module", mod, 3000, _module(mod, 1.0, reset=True),
               "host commands", rtl + "test_rtl_module.py::test_reset_mid_stream_recovers"),
        Config("dram_bank", "dram_bank", SMALL_BANK, 8000, _dram(SMALL_BANK), "commands",
               rtl + "test_rtl_dram_bank.py::test_random_malformed_streams_lockstep",
               bank_kind="dram"),
        Config("dram_channel_dcs", "channel", dchan(True), 5000, _channel(dchan(True), True),
               "commands", rtl + "test_rtl_dram_channel.py::test_random_streams_lockstep[dcs]",
               bank_kind="dram"),
        Config("dram_channel_inorder", "channel", dchan(False), 5000,
               _channel(dchan(False), True), "commands",
               rtl + "test_rtl_dram_channel.py::test_random_streams_lockstep[inorder]",
               bank_kind="dram"),
        Config("dram_module", "module", dmod, 2500, _module(dmod, 0.6), "host commands",
               rtl + "test_rtl_dram_module.py::test_random_malformed_streams_lockstep[0]",
               bank_kind="dram"),
        Config("dram_module_reset", "module", dmod, 2500,
               _module(dmod, 0.7, reset=True, reset_per_cmd=6000 / 2500), "host commands",
               rtl + "test_rtl_dram_module.py::test_random_malformed_streams_lockstep[2]",
               bank_kind="dram"),
    ]
    return {c.name: c for c in out}


#: the fixed registry of configurations, by name
CONFIGS: dict[str, Config] = _configs()
#: the bank kinds of the configurations
BANK_KINDS = ("dimc", "dram")
#: ``--bank-kinds K``: the module-level configurations of bank kind K (random and malformed
#: host streams through the whole module, without and with a reset in mid-stream)
BANK_KIND_CONFIGS: dict[str, tuple[str, ...]] = {
    "dimc": ("module", "module_reset"),
    "dram": ("dram_module", "dram_module_reset"),
}


def per_run_commands(total: int, n_configs: int, n_seeds: int) -> int:
    """Commands per run when ``total`` commands are split over ``n_configs`` configurations
    x ``n_seeds`` seeds (rounded up: the runs together give at least ``total``)."""
    return -(-total // (n_configs * n_seeds))


def faults(kind: str) -> tuple[str, ...]:
    """The deliberate DUT faults (``FAULTS`` of the design's HDL module) of ``kind``."""
    import importlib
    mod = {"macro": "hdl.macro", "channel": "hdl.channel", "module": "hdl.module",
           "dram_bank": "hdl.dram_bank"}[kind]
    return tuple(importlib.import_module(mod).FAULTS)


# --- argparse types -------------------------------------------------------------------------
def config_spec(text: str) -> tuple[str, str | None]:
    """argparse type: ``NAME`` or ``NAME:FAULT`` (a configuration of :data:`CONFIGS`, and
    one of its design's ``FAULTS``: a deliberately broken DUT) -> (name, fault)."""
    name, _, fault = text.partition(":")
    if name not in CONFIGS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown configuration {name!r} (known: {', '.join(CONFIGS)})")
    if not _:
        return name, None
    known = faults(CONFIGS[name].kind)
    if fault not in known:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {fault!r} is not a fault of {name} (a {CONFIGS[name].kind}; faults: "
            f"{', '.join(known) or 'none'})")
    return name, fault


def seed_spec(text: str) -> list[int]:
    """argparse type: a seed ``S`` or an inclusive range ``A-B`` of seeds (integers >= 0,
    A <= B) -> the list of seeds."""
    import re
    src = getattr(text, "env", None)
    where = f"{str(text)!r}" + (f" (from the environment variable {src})" if src else "")
    m = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"must be a seed >= 0 or a range A-B of seeds, got "
                                         f"{where}")
    a = int(m.group(1))
    b = a if m.group(2) is None else int(m.group(2))
    if b < a:
        raise argparse.ArgumentTypeError(f"range {where} is empty (A-B needs A <= B)")
    if b - a >= 1_000_000:
        raise argparse.ArgumentTypeError(f"range {where} has more than 10^6 seeds")
    return list(range(a, b + 1))


class _Seeds(argparse.Action):
    """``--seeds S|A-B ...``: the seeds in order; a seed given twice is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        out: list[int] = []
        for v in values:
            for s in v:
                if s in out:
                    raise argparse.ArgumentError(self, f"seed {s} given twice (each seed "
                                                       "runs once; drop the duplicate)")
                out.append(s)
        setattr(namespace, self.dest, out)


class _Configs(argparse.Action):
    """``--configs NAME[:FAULT] ...``: a configuration given twice is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = []
        for v in values:
            if v in seen:
                txt = v[0] + (f":{v[1]}" if v[1] else "")
                raise argparse.ArgumentError(self, f"{txt!r} given twice (each configuration "
                                                   "runs once; drop the duplicate)")
            seen.append(v)
        setattr(namespace, self.dest, seen)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``cimphony regress``."""
    from perf.report import scheduler_address
    names = ", ".join(f"{c.name} ({c.default_n} {c.unit})" for c in CONFIGS.values())
    ap.add_argument("--configs", nargs="+", action=_Configs, type=config_spec,
                    metavar="NAME[:FAULT]", default=None,
                    help=f"configurations, of {names}; NAME:FAULT builds the DUT with a "
                         "deliberate fault (hdl FAULTS, e.g. macro:sign_add) (default: all)")
    ap.add_argument("--seeds", nargs="+", action=_Seeds, type=seed_spec, metavar="S|A-B",
                    default=env_default("SEED", "1-4"),
                    help="seeds (each >= 0) or inclusive ranges of them; every configuration "
                         "runs every seed (default: $SEED, else 1-4)")
    ap.add_argument("--bank-kinds", nargs="+", choices=BANK_KINDS, metavar="KIND",
                    default=None,
                    help="add the module-level configurations of these bank kinds, of "
                         + "; ".join(f"{k}: {' '.join(v)}" for k, v in BANK_KIND_CONFIGS.items()))
    cmd = ap.add_mutually_exclusive_group()
    cmd.add_argument("--commands", type=positive_int, metavar="N", default=None,
                     help="commands per run (requests for the macro configurations) instead "
                          "of each configuration's default")
    cmd.add_argument("--total-commands", type=positive_int, metavar="N", default=None,
                     help="N commands per bank kind, split evenly over that kind's selected "
                          "configurations and the seeds (e.g. 1000000 with --bank-kinds dimc "
                          "dram: 10^6 per kind)")
    ap.add_argument("--workers", type=positive_int, metavar="N",
                    default=env_default("JOBS", 2),
                    help="LocalCluster worker processes, one thread each; ignored with "
                         "--scheduler (default: $JOBS, "
                         "else 2)")
    ap.add_argument("--scheduler", type=scheduler_address, metavar="ADDRESS", default=None,
                    help="run on an existing Dask scheduler (tcp://host:port) instead of a "
                         "LocalCluster")
    ap.add_argument("--connect-timeout", type=positive_int, metavar="S", default=30,
                    help="seconds to wait for --scheduler")
    ap.add_argument("--coverage", action="store_true",
                    help="coverage builds; merge line/branch/toggle coverage into "
                         "OUT/coverage/ (summary.json, coverage.info, html/ with genhtml)")
    ap.add_argument("--out", type=out_dir, metavar="DIR", default=Path("build/regress"),
                    help="output directory (regress.json, coverage/)")
    ap.set_defaults(func=run)


# --- one task -------------------------------------------------------------------------------
def _cfg_text(name: str, fault: str | None) -> str:
    return name + (f":{fault}" if fault else "")


def reproduce_command(name: str, fault: str | None, seed: int, n: int) -> str:
    """The command that re-runs exactly one run (one worker, one task)."""
    return (f"cimphony regress --configs {shlex.quote(_cfg_text(name, fault))} --seeds {seed} "
            f"--commands {n} --workers 1")


_LOCK = threading.Lock()    # a run sets CIMPHONY_COVERAGE in this process's environment
#: set by the Dask nanny for its workers (``distributed.nanny.pre-spawn-environ``) and
#: inherited by the simulator process of a run: ``MALLOC_TRIM_THRESHOLD_=65536`` makes the
#: simulator (embedded Python, many big ints) about 2x slower, so runs drop it
_DASK_ENV = ("MALLOC_TRIM_THRESHOLD_",)


@contextlib.contextmanager
def _environ(changes: dict):
    """``os.environ`` with ``changes`` (a value None: unset) inside the block."""
    old = {k: os.environ.get(k) for k in changes}
    try:
        for k, v in changes.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _target(name: str, fault: str | None):
    from tb.build import Target
    c = CONFIGS[name]
    return Target(c.kind, c.params, fault)


def run_task(name: str, fault: str | None, seed: int, n: int, *, cov_dir: str | None = None,
             waves: bool = False) -> dict:
    """One lockstep run (on a worker): configuration ``name`` (with DUT ``fault``), ``seed``,
    ``n`` commands.  Returns a JSON-able record (``ok``, ``cycles``, ``commands``, ``wall_s``,
    ``mismatch`` dict and ``report`` text, ``reproduce``, ``worker``) and, with ``cov_dir``
    (an absolute directory for this run's ``.dat`` files), ``coverage``: {key: count}."""
    from tb import mismatch as M
    from tb.build import COVERAGE_ENV, run_job
    t0 = time.perf_counter()
    c = CONFIGS[name]
    streams, kw, commands = c.streams(seed, n)
    rep = reproduce_command(name, fault, seed, n)
    env = {COVERAGE_ENV: None, **{k: None for k in _DASK_ENV}}
    if cov_dir:
        d = Path(cov_dir)
        d.mkdir(parents=True, exist_ok=True)
        for f in d.glob("*.dat"):
            f.unlink()
        env[COVERAGE_ENV] = str(d)
    with _LOCK, _environ(env):
        res = run_job(_target(name, fault), streams, seed=seed, waves=waves, label="regress",
                      **kw)
    from tb.designs import DESIGNS
    sent = sum(res["transfers"].get(i.name, 0) for i in DESIGNS[c.kind].inputs)
    out = dict(config=name, fault=fault, seed=seed, n=n, commands=sent, planned=commands,
               ok=res["ok"],
               cycles=res["cycles"], sim_s=round(res["sim_total_s"], 3),
               cycles_per_s=round(res["cycles_per_s"]), transfers=res["transfers"],
               reproduce=rep, mismatch=None, report=None, waves=res.get("waves"),
               worker=_worker())
    if not res["ok"]:
        m = dict(res["mismatch"], reproduce=rep)
        out["mismatch"] = m
        out["report"] = M.describe(m, waves=res.get("waves"))
    if cov_dir:
        from verif.coverage import merge
        out["coverage"] = merge(sorted(Path(cov_dir).glob("*.dat")))
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    return out


def _worker() -> str:
    try:
        from dask.distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


# --- the client -----------------------------------------------------------------------------
class _Unreachable(Exception):
    pass


def _client(scheduler: str | None, workers: int, timeout: int):
    """A Dask client: on ``scheduler``, or on a fresh LocalCluster (as ``perf/sweep.py``)."""
    from dask.distributed import Client, LocalCluster

    @contextlib.contextmanager
    def cm():
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout=f"{timeout}s")
            except (OSError, TimeoutError) as e:
                raise _Unreachable(f"{scheduler!r} is not reachable: {e}") from None
            with client:
                yield client, f"the Dask scheduler {scheduler}"
            return
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None,
                          scheduler_kwargs={"dashboard_address": ":0"}) as cluster, \
                Client(cluster) as client:
            yield client, f"a Dask LocalCluster of {workers} worker(s)"
    return cm()


def _err_record(name, fault, seed, n, e: BaseException, tb_text: str) -> dict:
    return dict(config=name, fault=fault, seed=seed, n=n, commands=0, ok=False, cycles=0,
                wall_s=0.0, error=f"{type(e).__name__}: {e}", traceback=tb_text,
                reproduce=reproduce_command(name, fault, seed, n), mismatch=None,
                report=None, worker=None)


def _selected(a) -> list[tuple[str, str | None]]:
    """The (configuration, fault) pairs of ``--configs`` and ``--bank-kinds`` (in that order,
    each once); all configurations if neither is given."""
    kinds = getattr(a, "bank_kinds", None) or []
    if not a.configs and not kinds:
        return [(n, None) for n in CONFIGS]
    out = list(a.configs or [])
    for k in kinds:
        out += [(n, None) for n in BANK_KIND_CONFIGS[k] if (n, None) not in out]
    return out


def bench_bank_kinds(total: int = 1_000_000, kinds=BANK_KINDS, seeds=range(1, 9), *,
                     workers: int = 2, out: Path | str = Path("build/bench/regress"),
                     scheduler: str | None = None, connect_timeout: int = 30) -> dict:
    """``total`` random and malformed host commands per bank kind of ``kinds`` through the
    module-level configurations (:data:`BANK_KIND_CONFIGS`) in lockstep, as ``cimphony
    regress --bank-kinds KINDS --total-commands TOTAL --seeds SEEDS`` (what ``make bench``
    runs).  Returns ``OUT/regress.json`` plus ``rc`` (0: no mismatch) and ``per_kind``
    {kind: {commands, cycles, runs, mismatches, wall_s, cycles_per_s}}."""
    ns = argparse.Namespace(configs=None, bank_kinds=list(kinds), seeds=list(seeds),
                            commands=None, total_commands=total, workers=workers,
                            scheduler=scheduler, connect_timeout=connect_timeout,
                            coverage=False, out=Path(out))
    rc = run(ns)
    doc = json.loads((Path(out) / "regress.json").read_text())
    per = {}
    for k in kinds:
        rs = [r for r in doc["runs"] if CONFIGS[r["config"]].bank_kind == k]
        wall = sum(r["wall_s"] for r in rs)
        per[k] = dict(configs=list(BANK_KIND_CONFIGS[k]), runs=len(rs),
                      commands=sum(r["commands"] for r in rs),
                      cycles=sum(r["cycles"] for r in rs),
                      mismatches=sum(1 for r in rs if not r["ok"]), wall_s=round(wall, 1),
                      cycles_per_s=round(sum(r["cycles"] for r in rs) / wall) if wall else 0)
    doc["rc"], doc["per_kind"] = rc, per
    return doc


def run(a) -> int:
    """Entry point of ``cimphony regress`` (parsed options ``a``)."""
    import traceback
    from tqdm import tqdm
    from tb import mismatch as M
    from tb.build import COVERAGE_ENV, build
    selected = _selected(a)
    seeds = list(a.seeds)
    out = Path(a.out)
    waves = M.waves_requested()
    cov_root = (out / "coverage").resolve() if a.coverage else None
    per_kind = {}
    if getattr(a, "total_commands", None):
        for k in BANK_KINDS:
            n_k = sum(1 for name, _ in selected if CONFIGS[name].bank_kind == k)
            if n_k:
                per_kind[k] = per_run_commands(a.total_commands, n_k, len(seeds))
    tasks = [(name, fault, s, a.commands or per_kind.get(CONFIGS[name].bank_kind)
              or CONFIGS[name].default_n)
             for name, fault in selected for s in seeds]
    t_start = time.monotonic()
    try:
        ctx = _client(a.scheduler, a.workers, a.connect_timeout)
        client, cluster = ctx.__enter__()
    except _Unreachable as e:
        print(f"cimphony regress: error: argument --scheduler: {e}", file=sys.stderr)
        return 2
    records, builds = [], {}
    try:
        # one build per configuration, here, before the tasks fan out
        with _environ({COVERAGE_ENV: str(cov_root / "dat") if cov_root else None}):
            for name, fault in tqdm(selected, desc="build", unit="cfg", file=sys.stderr):
                t0 = time.monotonic()
                try:
                    bdir = build(_target(name, fault), waves)
                    builds[_cfg_text(name, fault)] = dict(dir=str(bdir), ok=True,
                                                          s=round(time.monotonic() - t0, 1))
                except Exception as e:           # noqa: BLE001 -- reported, runs skipped
                    builds[_cfg_text(name, fault)] = dict(ok=False, error=f"{e}"[-2000:])
                    print(f"cimphony regress: build of {_cfg_text(name, fault)} failed: {e}",
                          file=sys.stderr)
        t_runs = time.monotonic()
        from dask.distributed import as_completed
        futs = {}
        for name, fault, s, n in tasks:
            if not builds[_cfg_text(name, fault)]["ok"]:
                records.append(_err_record(name, fault, s, n, RuntimeError("build failed"),
                                           builds[_cfg_text(name, fault)]["error"]))
                continue
            cdir = (str(cov_root / "dat" / f"{_cfg_text(name, fault).replace(':', '_')}_s{s}")
                    if cov_root else None)
            f = client.submit(run_task, name, fault, s, n, cov_dir=cdir, waves=waves,
                              pure=False, key=f"regress-{name}-s{s}-{uuid.uuid4().hex[:8]}")
            futs[f] = (name, fault, s, n)
        coverage: dict[str, int] = {}
        bad = sum(1 for r in records if not r["ok"])
        with tqdm(total=len(tasks), initial=len(records), desc="regress", unit="run",
                  file=sys.stderr) as bar:
            for f in as_completed(futs):
                name, fault, s, n = futs[f]
                try:
                    r = f.result()
                except Exception as e:           # noqa: BLE001 -- a task raised / worker died
                    r = _err_record(name, fault, s, n, e, traceback.format_exc())
                for k, v in (r.pop("coverage", None) or {}).items():
                    coverage[k] = coverage.get(k, 0) + v
                records.append(r)
                if not r["ok"]:
                    bad += 1
                    what = r["report"] or f"error: {r.get('error')}\n  reproduce: {r['reproduce']}"
                    bar.write(f"MISMATCH {_cfg_text(name, fault)} seed {s}:\n{what}",
                              file=sys.stderr)
                bar.set_postfix(mismatches=bad)
                bar.update(1)
        t_end = time.monotonic()
    finally:
        ctx.__exit__(*sys.exc_info())
    order = {t: i for i, t in enumerate(tasks)}
    records.sort(key=lambda r: order[r["config"], r["fault"], r["seed"], r["n"]])
    return _report(a, out, records, builds, coverage if cov_root else None, cluster,
                   seeds, wall=t_end - t_start, runs_wall=t_end - t_runs)


def _report(a, out: Path, records, builds, coverage, cluster, seeds, *, wall, runs_wall) -> int:
    rows, summary = [], []
    for key in dict.fromkeys(_cfg_text(r["config"], r["fault"]) for r in records):
        rs = [r for r in records if _cfg_text(r["config"], r["fault"]) == key]
        s = dict(config=key, seeds=len(rs), commands=sum(r["commands"] for r in rs),
                 cycles=sum(r["cycles"] for r in rs),
                 mismatches=sum(1 for r in rs if r["mismatch"]),
                 errors=sum(1 for r in rs if r.get("error")),
                 wall_s=round(sum(r["wall_s"] for r in rs), 1))
        summary.append(s)
        rows.append((key, s["seeds"], s["commands"], s["cycles"],
                     s["mismatches"] + s["errors"], s["wall_s"]))
    tot_cmd = sum(r["commands"] for r in records)
    tot_cyc = sum(r["cycles"] for r in records)
    n_bad = sum(1 for r in records if not r["ok"])
    rows.append(("total", len(records), tot_cmd, tot_cyc, n_bad, f"{wall:.1f} (elapsed)"))
    print()
    print_table(("config", "seeds", "commands", "cycles", "mismatches", "wall s"), rows)
    doc = dict(cluster=cluster, seeds=seeds, commands_option=a.commands,
               total_commands_option=getattr(a, "total_commands", None),
               wall_s=round(wall, 2), runs_wall_s=round(runs_wall, 2),
               commands=tot_cmd, cycles=tot_cyc,
               commands_per_s=round(tot_cmd / runs_wall, 1) if runs_wall > 0 else None,
               cycles_per_s=round(tot_cyc / runs_wall, 1) if runs_wall > 0 else None,
               mismatches=n_bad, builds=builds, summary=summary, runs=records)
    out.mkdir(parents=True, exist_ok=True)
    if coverage is not None:
        from verif import coverage as C
        from verif.suite import KNOWN
        summ = C.write_reports(coverage, out / "coverage", known=KNOWN, meta=dict(
            source="cimphony regress", runs=len(records), seeds=seeds))
        doc["coverage"] = {c: {k: v[k] for k in C.KINDS} for c, v in
                           summ["components"].items()}

        def pct(d):
            return "-" if d.get("pct") is None else f"{d['pct']:.1f}% ({d['hit']}/{d['total']})"
        print_table(("component", "line", "branch", "toggle"),
                    [(c, pct(k["line"]), pct(k["branch"]), pct(k["toggle"]))
                     for c, k in summ["components"].items()])
        print(f"coverage of {len(records)} run(s) merged into {out}/coverage/summary.json, "
              f"coverage.info" + (f", {summ['files']['html']}" if summ["files"]["html"] else
                                  " (no HTML: apt-get install -y lcov for genhtml)"))
    (out / "regress.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(records)} run(s) on {cluster}: {tot_cmd} commands, {tot_cyc} cycles in "
          f"{runs_wall:.1f} s ({doc['commands_per_s']} commands/s); wrote {out}/regress.json")
    if n_bad:
        print(f"{n_bad} run(s) mismatched or failed; reproduce each with:", file=sys.stderr)
        for r in records:
            if not r["ok"]:
                print(f"  {r['reproduce']}", file=sys.stderr)
    return 1 if n_bad else 0
