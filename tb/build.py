"""Cached Verilator builds of the lockstep wrapper and the cocotb runner that runs them.

Builds live in ``sim_build/lockstep/<params.tag>[_<fault>][_waves]/`` and are reused while the
hash of their sources (HDL, spec, wrapper, flags, Verilator config files) is unchanged.  The stock cocotb runner builds with
``--public-flat-rw`` (every signal visible to VPI, ~4x slower); here only the wrapper's ports
are public (``tb/public.vlt``), which is all the lockstep bench touches.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

from cocotb_tools.runner import Verilator

from model.spec import MacroParams
from model.stimulus import Stimulus
from tb import vlenv
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


def _source_key(params: MacroParams, fault: str | None) -> str:
    """Hash of everything the Verilated wrapper depends on: the HDL sources, the spec, the
    wrapper, the flags and the Verilator config files (cheaper than generating the Verilog,
    which takes seconds for the default macro)."""
    h = hashlib.sha256(repr((params, fault, BUILD_FLAGS)).encode())
    files = sorted((vlenv.REPO / "hdl").glob("*.py")) + [
        vlenv.REPO / "model" / "spec.py", TB_DIR / "probe.py", PUBLIC_VLT, vlenv.WAIVERS]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def build(params: MacroParams, fault: str | None = None, waves: bool = False,
          quiet: bool = True) -> Path:
    """Build (or reuse) the Verilated lockstep wrapper for ``params``; returns the build dir."""
    vlenv.apply()
    name = params.tag + (f"_{fault}" if fault else "") + ("_waves" if waves else "")
    bdir = vlenv.SIM_BUILD / "lockstep" / name
    key = _source_key(params, fault)
    stamp = bdir / "cimphony.stamp"
    if stamp.exists() and stamp.read_text() == key and (bdir / "lockstep_top").exists():
        return bdir
    if bdir.exists():
        shutil.rmtree(bdir)
    bdir.mkdir(parents=True)
    vfile = bdir / "lockstep_top.v"
    vfile.write_text(probe_verilog(params, fault))
    t0 = time.time()
    runner = _Runner()
    log = bdir / "build.log"
    runner.build(sources=[vlenv.WAIVERS, PUBLIC_VLT, vfile], hdl_toplevel="lockstep_top",
                 build_dir=bdir, build_args=BUILD_FLAGS, waves=waves, always=True,
                 log_file=log if quiet else None)
    stamp.write_text(key)
    (bdir / "build_s.txt").write_text(f"{time.time() - t0:.1f}\n")
    return bdir


def run_lockstep(params: MacroParams, stim: Stimulus, *, late: int = 0,
                 fault: str | None = None, waves: bool | None = None,
                 max_cycles: int = 10_000_000, label: str = "run") -> dict:
    """Run ``stim`` through the Verilated macro and the golden model in lockstep.

    Returns the bench's result dict: ``ok``, ``cycles``, ``wall_s``, ``cycles_per_s``,
    ``mismatch`` (None or {cycle, signal, expected, actual, seed, in_flight}), the list of
    result payloads ``results`` (arrival order) and ``transfers`` counts.
    """
    waves = waves_requested() if waves is None else waves
    bdir = build(params, fault, waves)
    job_dir = bdir / "jobs"
    job_dir.mkdir(exist_ok=True)
    job = job_dir / f"{label}_{os.getpid()}_{stim.seed}.pkl"
    out = job.with_suffix(".json")
    with open(job, "wb") as f:
        pickle.dump({"params": params, "stim": stim, "late": late, "max_cycles": max_cycles,
                     "out": str(out), "waves": waves}, f)
    if out.exists():
        out.unlink()
    if str(vlenv.REPO) not in sys.path:   # the runner hands sys.path to the simulator
        sys.path.insert(0, str(vlenv.REPO))
    runner = _Runner()
    log = job.with_suffix(".log")
    t0 = time.time()
    try:  # under pytest the runner sys.exit()s on a failed cocotb test; the JSON says why
        runner.test(test_module="tb.lockstep", hdl_toplevel="lockstep_top", build_dir=bdir,
                    hdl_toplevel_lang="verilog",
                    test_dir=bdir, waves=waves, extra_env={"CIMPHONY_JOB": str(job)},
                    log_file=log, results_xml=str(job.with_suffix(".xml")))
    except SystemExit:
        pass
    if not out.exists():
        tail = log.read_text()[-4000:] if log.exists() else "(no log)"
        raise RuntimeError(f"lockstep run produced no result (seed {stim.seed}); log tail:\n{tail}")
    res = json.loads(out.read_text())
    res["sim_total_s"] = time.time() - t0
    res["build_dir"] = str(bdir)
    if waves:
        wf = [p for p in bdir.glob("dump.*")]
        res["waves"] = str(wf[0]) if wf else None
    job.unlink()
    return res


def describe_mismatch(res: dict) -> str:
    m = res["mismatch"]
    if not m:
        return "no mismatch"
    return (f"first mismatch at cycle {m['cycle']}: signal {m['signal']} expected {m['expected']} "
            f"actual {m['actual']} | in flight: {m['in_flight']} | seed {m['seed']} "
            f"(re-run with WAVES=1 SEED={m['seed']} for a waveform)")
