"""Cached Verilator builds of the lockstep wrapper and the cocotb runner that runs them.

Builds live in ``sim_build/lockstep/<kind>_<params.tag>[_<fault>][_waves]/`` and are reused
while the hash of their sources (HDL, encodings, wrapper, flags, Verilator config files) is
unchanged.  The stock cocotb runner builds with ``--public-flat-rw`` (every signal visible to VPI, ~4x slower); here only the wrapper's ports
are public (``tb/public.vlt``), which is all the lockstep bench touches.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cocotb_tools.runner import Verilator

from spec.params import MacroParams
from model.stimulus import Stimulus, ready_threshold
from tb import probespec, vlenv
from tb.probe import probe_verilog

TB_DIR = Path(__file__).resolve().parent
PUBLIC_VLT = TB_DIR / "public.vlt"
BUILD_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-CFLAGS", "-O1"]


def waves_requested() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0")


def fst_available() -> bool:
    """FST traces need lz4.h (Debian liblz4-dev); without it waves are written as VCD."""
    return Path("/usr/include/lz4.h").exists()


class _Runner(Verilator):
    """The cocotb Verilator runner minus ``--public-flat-rw`` (see module docstring)."""

    def _build_command(self):
        cmds = super()._build_command()
        cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
        if self.waves and fst_available():
            cmds[0] = ["--trace-fst" if a == "--trace" else a for a in cmds[0]]
        return cmds


@dataclass(frozen=True)
class Target:
    """A design under lockstep test: ``kind`` "macro" (DimcMacro), "channel" (PimChannel) or
    "module" (PimModule)."""
    kind: str
    params: object            # MacroParams or ChannelParams
    fault: str | None = None  # deliberate DUT fault (macro only), see hdl/macro.py

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.params.tag}" + (f"_{self.fault}" if self.fault else "")

    @property
    def test_module(self) -> str:
        return {"macro": "tb.lockstep", "channel": "tb.chan_lockstep",
                "module": "tb.mod_lockstep"}[self.kind]

    def spec(self) -> probespec.ProbeSpec:
        if self.kind == "macro":
            return probespec.MACRO
        if self.kind == "channel":
            return probespec.channel(self.params.n_banks)
        return probespec.module(self.params.n_ch, self.params.channel.n_banks)

    def dut(self):
        if self.kind == "macro":
            from hdl.macro import DimcMacro
            return DimcMacro(self.params, fault=self.fault)
        if self.kind == "channel":
            from hdl.channel import PimChannel
            return PimChannel(self.params)
        from hdl.module import PimModule
        return PimModule(self.params)


def _source_key(t: Target) -> str:
    """Hash of everything a Verilated wrapper depends on: the HDL sources, the encodings, the
    wrapper, the flags and the Verilator config files (cheaper than generating the Verilog,
    which takes seconds for the default macro)."""
    h = hashlib.sha256(repr((t, BUILD_FLAGS)).encode())
    files = sorted((vlenv.REPO / "hdl").glob("*.py")) + [
        vlenv.REPO / "model" / "spec.py", vlenv.REPO / "model" / "isa.py", TB_DIR / "probe.py",
        TB_DIR / "probespec.py", PUBLIC_VLT, vlenv.WAIVERS]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def build(t: Target, waves: bool = False, quiet: bool = True) -> Path:
    """Build (or reuse) the Verilated lockstep wrapper of ``t``; returns the build dir.

    Concurrent callers (parallel pytest, a bench next to a test run) serialise on a lock file.
    """
    vlenv.apply()
    bdir = vlenv.SIM_BUILD / "lockstep" / (t.name + ("_waves" if waves else ""))
    bdir.parent.mkdir(parents=True, exist_ok=True)
    key = _source_key(t)
    stamp = bdir / "cimphony.stamp"
    with open(bdir.parent / f"{bdir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == key and (bdir / "lockstep_top").exists():
            return bdir
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir(parents=True)
        vfile = bdir / "lockstep_top.v"
        vfile.write_text(probe_verilog(t.dut(), t.spec()))
        t0 = time.time()
        runner = _Runner()
        runner.build(sources=[vlenv.WAIVERS, PUBLIC_VLT, vfile], hdl_toplevel="lockstep_top",
                     build_dir=bdir, build_args=BUILD_FLAGS, waves=waves, always=True,
                     log_file=bdir / "build.log" if quiet else None)
        stamp.write_text(key)
        (bdir / "build_s.txt").write_text(f"{time.time() - t0:.1f}\n")
    return bdir


def run_job(t: Target, job: dict, *, seed: int, waves: bool | None = None,
            label: str = "run") -> dict:
    """Run the cocotb lockstep bench of ``t`` on ``job`` (pickled for the simulator); returns
    the result dict the bench wrote (see tb/lockstep.py), plus wall time and build dir."""
    waves = waves_requested() if waves is None else waves
    bdir = build(t, waves)
    job_dir = bdir / "jobs"
    job_dir.mkdir(exist_ok=True)
    jfile = job_dir / f"{label}_{os.getpid()}_{seed}.pkl"
    out = jfile.with_suffix(".json")
    with open(jfile, "wb") as f:
        pickle.dump(dict(job, out=str(out), waves=waves), f)
    if out.exists():
        out.unlink()
    runner = _Runner()
    log = jfile.with_suffix(".log")
    t0 = time.time()
    try:  # under pytest the runner sys.exit()s on a failed cocotb test; the JSON says why
        runner.test(test_module=t.test_module, hdl_toplevel="lockstep_top",
                    hdl_toplevel_lang="verilog", build_dir=bdir, test_dir=bdir, waves=waves,
                    extra_env={"CIMPHONY_JOB": str(jfile)}, log_file=log,
                    results_xml=str(jfile.with_suffix(".xml")))
    except SystemExit:
        pass
    if not out.exists():
        tail = log.read_text()[-4000:] if log.exists() else "(no log)"
        raise RuntimeError(f"lockstep run produced no result (seed {seed}); log tail:\n{tail}")
    res = json.loads(out.read_text())
    res["sim_total_s"] = time.time() - t0
    res["build_dir"] = str(bdir)
    if waves:
        wf = sorted(bdir.glob("dump.*"))
        res["waves"] = str(wf[0]) if wf else None
    jfile.unlink()
    return res


def run_lockstep(params: MacroParams, stim: Stimulus, *, late: int = 0,
                 fault: str | None = None, waves: bool | None = None,
                 max_cycles: int = 10_000_000, label: str = "run") -> dict:
    """Run ``stim`` through the Verilated macro and the golden model in lockstep.

    Returns ``ok``, ``cycles``, ``wall_s``, ``cycles_per_s``, ``mismatch`` (None or {cycle,
    signal, expected, actual, seed, in_flight}), the result payloads ``results`` in arrival
    order and ``transfers`` counts.
    """
    job = {"params": params, "stim": stim, "late": late, "max_cycles": max_cycles}
    return run_job(Target("macro", params, fault), job, seed=stim.seed, waves=waves,
                   label=label)


def run_channel_lockstep(params, cmds: list[tuple[int, int]], *, out_ready_p: float = 1.0,
                         seed: int = 0, waves: bool | None = None,
                         max_cycles: int = 10_000_000, label: str = "chan") -> dict:
    """Run a channel command stream ``cmds`` [(payload, gap)] through the Verilated PimChannel
    and ChannelModel in lockstep (``tb/chan_lockstep.py``).  Returns ``ok``, ``mismatch``,
    ``cycles``, ``outputs`` (out payloads in order), ``busy_cycles`` per bank, speed."""
    job = {"params": params, "cmds": list(cmds), "seed": seed,
           "ready_threshold": ready_threshold(out_ready_p),
           "max_cycles": max_cycles}
    return run_job(Target("channel", params), job, seed=seed, waves=waves, label=label)


def run_module_lockstep(params, cmds: list[tuple[int, int]], *, out_ready_p: float = 1.0,
                        seed: int = 0, reset_at: int = -1, waves: bool | None = None,
                        max_cycles: int = 10_000_000, label: str = "mod") -> dict:
    """Run host commands ``cmds`` [(host_cmd, gap)] through the Verilated PimModule and
    ModuleModel in lockstep (``tb/mod_lockstep.py``).  Returns ``ok``, ``mismatch``,
    ``cycles``, ``outputs``, ``errors`` [(cycle, code)], ``busy_cycles`` per bank, speed.
    ``reset_at``: raise ``rst`` in that cycle (DUT and model), to test mid-stream recovery."""
    job = {"params": params, "cmds": list(cmds), "seed": seed, "reset_at": reset_at,
           "ready_threshold": ready_threshold(out_ready_p), "max_cycles": max_cycles}
    return run_job(Target("module", params), job, seed=seed, waves=waves, label=label)


def describe_mismatch(res: dict) -> str:
    m = res["mismatch"]
    if not m:
        return "no mismatch"
    return (f"first mismatch at cycle {m['cycle']}: signal {m['signal']} expected {m['expected']} "
            f"actual {m['actual']} | in flight: {m['in_flight']} | seed {m['seed']} "
            f"(re-run with WAVES=1 SEED={m['seed']} for a waveform)")
