"""Verilator builds of the lockstep wrapper and the cocotb runs of the one lockstep loop.

Builds live in ``sim_build/lockstep/<kind>_<params.tag>[_<fault>][_hier][_waves][_cov]/``
(:func:`_variant`), cached by ``tb/cache.py`` (key: the wrapper's exact Verilog text, the
flags, the Verilator config files).  The stock cocotb runner builds with ``--public-flat-rw`` (every signal visible to
VPI, ~4x slower); here only the wrapper's ports are public (``tb/public.vlt``), which is all
the lockstep loop (``tb/lockstep.py``) touches.
"""
from __future__ import annotations

import json
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

from cimphony import compat
from model.stimulus import Beat, Stimulus, ready_threshold
from spec.params import MacroParams
from tb import cache, mismatch, vlenv
from tb.designs import DESIGNS

TB_DIR = Path(__file__).resolve().parent
PUBLIC_VLT = TB_DIR / "public.vlt"
TOP = "lockstep_top"
BUILD_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-CFLAGS", "-O1"]
#: added for a ``Target(hierarchical=True)``: each ``hier_block`` module of the exported
#: Verilog (every component but the top, see hdl/export.py) is Verilated and compiled once,
#: not per instance; across the opaque blocks Verilator sees false combinational loops
#: (UNOPTFLAT, a speed warning: it settles them by iterating)
HIER_FLAGS = ["--hierarchical", "-Wno-UNOPTFLAT"]
TEST_MODULE = "tb.lockstep"
#: a directory: builds add COVERAGE_FLAGS (dir suffix ``_cov``) and every run writes its
#: ``coverage.dat`` there (``verif/coverage.py``); unset or empty: no coverage
COVERAGE_ENV = "CIMPHONY_COVERAGE"
#: line (with branch) and toggle coverage; not ``--coverage``, whose expression coverage
#: stops Verilator 5.48 with an internal error on Amaranth's Verilog
COVERAGE_FLAGS = ["--coverage-line", "--coverage-toggle"]

waves_requested = mismatch.waves_requested
#: a module Target's ``fault`` "sm_<f>" builds PimModule(sm_fault=f) (the softmax unit's fault)
SM_FAULT_PREFIX = "sm_"


def fst_available() -> bool:
    """FST traces need lz4.h (Debian liblz4-dev); without it waves are written as VCD."""
    return Path("/usr/include/lz4.h").exists()


class _Runner(compat.Verilator):
    """The cocotb Verilator runner minus ``--public-flat-rw`` (see module docstring)."""

    def edit_build_args(self, argv: list[str]) -> list[str]:
        argv = [a for a in argv if a != "--public-flat-rw"]
        if self.waves and fst_available():
            argv = ["--trace-fst" if a == "--trace" else a for a in argv]
        return argv


@dataclass(frozen=True)
class Target:
    """A design under lockstep test: ``kind`` "macro" (DimcMacro), "channel" (PimChannel) or
    "module" (PimModule), its parameters and a deliberate DUT fault (``FAULTS`` of
    ``hdl/macro.py``, ``hdl/channel.py``, ``hdl/module.py``; for a module with ``softmax``
    also ``"sm_<f>"``: the softmax unit's fault f, ``hdl/softmax.py`` FAULTS, PimModule's
    ``sm_fault``)."""
    kind: str
    params: object            # MacroParams, ChannelParams or ModuleParams
    fault: str | None = None
    hierarchical: bool = False    # Verilator --hierarchical (HIER_FLAGS): large modules

    def __post_init__(self):
        if self.kind not in DESIGNS:
            raise ValueError(f"Target: kind={self.kind!r} is not one of {sorted(DESIGNS)}")

    @property
    def name(self) -> str:
        """The design: ``<kind>_<params.tag>[_<fault>]`` (the build options are not part of
        it, see :func:`_variant`)."""
        return f"{self.kind}_{self.params.tag}" + (f"_{self.fault}" if self.fault else "")

    def spec(self):
        return DESIGNS[self.kind].spec(self.params)

    def dut(self):
        if self.kind == "macro":
            from hdl.macro import DimcMacro
            return DimcMacro(self.params, fault=self.fault)
        if self.kind == "channel":
            from hdl.channel import PimChannel
            return PimChannel(self.params, fault=self.fault)
        if self.kind == "dram_bank":
            from tb.dram_dut import DramBankDut
            return DramBankDut(self.params, fault=self.fault)
        from hdl.module import PimModule
        if self.fault and self.fault.startswith(SM_FAULT_PREFIX):
            return PimModule(self.params, sm_fault=self.fault[len(SM_FAULT_PREFIX):])
        return PimModule(self.params, fault=self.fault)

    def verilog(self) -> str:
        """The exact Verilog text of the wrapped DUT (``tb.probe.probe_verilog``)."""
        from tb.probe import probe_verilog
        return probe_verilog(self.dut(), self.spec())


def coverage_dir() -> Path | None:
    d = os.environ.get(COVERAGE_ENV)
    return Path(d) if d else None


def _variant(t: Target, waves: bool) -> tuple[list[str], Path]:
    """Verilator flags and build directory of ``t``'s lockstep build: ``BUILD_FLAGS`` and
    ``<t.name>``, then each build option in force adds its flags and its directory suffix:
    hierarchical (HIER_FLAGS, ``_hier``), waves (``_waves``), coverage while
    ``CIMPHONY_COVERAGE`` is set (COVERAGE_FLAGS, ``_cov``)."""
    options = ((t.hierarchical, HIER_FLAGS, "_hier"), (waves, [], "_waves"),
               (coverage_dir() is not None, COVERAGE_FLAGS, "_cov"))
    flags = BUILD_FLAGS + [f for on, fl, _ in options if on for f in fl]
    name = t.name + "".join(sfx for on, _, sfx in options if on)
    return flags, vlenv.SIM_BUILD / "lockstep" / name


def build_dir(t: Target, waves: bool = False) -> Path:
    return _variant(t, waves)[1]


def build(t: Target, waves: bool = False, quiet: bool = True) -> Path:
    """Build (or reuse) the Verilated lockstep wrapper of ``t``; returns the build dir."""
    vlenv.apply()
    flags, bdir = _variant(t, waves)

    def run_verilator(bdir: Path, src: str) -> None:
        vfile = bdir / f"{TOP}.v"
        vfile.write_text(src)
        _Runner().build(sources=[vlenv.WAIVERS, PUBLIC_VLT, vfile], hdl_toplevel=TOP,
                        build_dir=bdir, build_args=flags, waves=waves, always=True,
                        log_file=bdir / "build.log" if quiet else None)

    return cache.cached_build(bdir, target=(t, waves), verilog=t.verilog,
                              extra=[repr(flags), f"waves={waves}", vlenv.WAIVERS,
                                     PUBLIC_VLT],
                              build=run_verilator, product=TOP)


def run_job(t: Target, streams: list[list[Beat]], *, seed: int, ready_p: float = 1.0,
            waves: bool | None = None, max_cycles: int = 10_000_000, reset_at: int = -1,
            label: str = "run", **extra) -> dict:
    """Run the lockstep loop (``tb/lockstep.py``) on ``t`` with input ``streams`` (one beat
    list per input stream of the design, see ``tb/designs.py``).

    Parameters
    ----------
    seed : int
        Seeds the output ready pattern (and names the run).
    ready_p : float
        Output ready duty, (0, 1].
    reset_at : int
        Raise ``rst`` in this cycle (-1: never).
    extra :
        Design-specific job keys (``late`` for the macro model, ``note``).

    Returns the loop's result: ``ok``, ``mismatch`` (None or a :class:`tb.mismatch.Mismatch`
    dict), ``cycles``, ``wall_s``, ``cpu_s``, ``cycles_per_s``, ``outputs`` (output payloads in
    order), ``transfers`` per stream, ``events`` [(cycle, output, value)], ``busy_cycles``
    per busy bit, ``seed``, ``side_outputs`` (per side stream of the design, e.g. ``sm_res``:
    its payloads in order); plus ``sim_total_s``, ``build_dir`` and ``waves`` (path or None).
    """
    waves = waves_requested() if waves is None else waves
    bdir = build(t, waves)
    job_dir = bdir / "jobs"
    job_dir.mkdir(exist_ok=True)
    jfile = job_dir / f"{label}_{os.getpid()}_{seed}.pkl"
    out = jfile.with_suffix(".json")
    job = dict(kind=t.kind, params=t.params, streams=[list(s) for s in streams], seed=seed,
               ready_threshold=ready_threshold(ready_p), max_cycles=max_cycles,
               reset_at=reset_at, out=str(out), waves=waves, **extra)
    with open(jfile, "wb") as f:
        pickle.dump(job, f)
    if out.exists():
        out.unlink()
    log = jfile.with_suffix(".log")
    wfile = jfile.with_suffix(".fst" if fst_available() else ".vcd")
    cdir, cov = coverage_dir(), []
    if cdir:
        cdir.mkdir(parents=True, exist_ok=True)
        dat = cdir.resolve() / f"{bdir.name}_{jfile.stem}_{time.time_ns()}.dat"
        cov = [f"+verilator+coverage+file+{dat}"]
    t0 = time.time()
    try:  # under pytest the runner sys.exit()s on a failed cocotb test; the JSON says why
        _Runner().test(test_module=TEST_MODULE, hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                       build_dir=bdir, test_dir=bdir, waves=waves,
                       test_args=["--trace-file", str(wfile)] if waves else [],
                       extra_env={"CIMPHONY_JOB": str(jfile)}, log_file=log,
                       plusargs=cov,
                       results_xml=str(jfile.with_suffix(".xml")))
    except SystemExit:
        pass
    if not out.exists():
        tail = log.read_text()[-4000:] if log.exists() else "(no log)"
        raise RuntimeError(f"lockstep run produced no result (seed {seed}); log tail:\n{tail}")
    res = json.loads(out.read_text())
    res["sim_total_s"] = time.time() - t0
    res["build_dir"] = str(bdir)
    res["waves"] = str(wfile) if waves and wfile.exists() else None
    if res["waves"]:
        mismatch.note_waveform(res["waves"])
        if res["mismatch"]:
            res["mismatch"]["waves"] = res["waves"]
    jfile.unlink()
    return res


def _beats(cmds) -> list[Beat]:
    return [Beat(payload, gap) for payload, gap in cmds]


def run_lockstep(params: MacroParams, stim: Stimulus, *, late: int = 0,
                 fault: str | None = None, waves: bool | None = None,
                 max_cycles: int = 10_000_000, label: str = "run") -> dict:
    """Run ``stim`` through the Verilated macro and the golden model in lockstep
    (:func:`run_job`); ``outputs`` are the result payloads in arrival order, ``transfers``
    the counts of ``wr``, ``req`` and ``res``."""
    return run_job(Target("macro", params, fault), [stim.wr, stim.req], seed=stim.seed,
                   ready_p=stim.ready_p, waves=waves, max_cycles=max_cycles, label=label,
                   late=late, note=stim.note)


def run_channel_lockstep(params, cmds: list[tuple[int, int]], *, out_ready_p: float = 1.0,
                         seed: int = 0, waves: bool | None = None, reset_at: int = -1,
                         fault: str | None = None, late: int = 0,
                         max_cycles: int = 10_000_000, label: str = "chan") -> dict:
    """Run a channel command stream ``cmds`` [(payload, gap)] through the Verilated PimChannel
    and ChannelModel in lockstep (:func:`run_job`); ``reset_at`` a cycle with ``rst`` high
    (-1: none), ``fault`` a DUT fault (hdl/channel.py FAULTS), ``late`` a late model (DRAM
    banks only)."""
    return run_job(Target("channel", params, fault), [_beats(cmds)], seed=seed,
                   ready_p=out_ready_p, waves=waves, max_cycles=max_cycles, reset_at=reset_at,
                   late=late, label=label)


def run_module_lockstep(params, cmds: list[tuple[int, int]], *, out_ready_p: float = 1.0,
                        seed: int = 0, reset_at: int = -1, waves: bool | None = None,
                        max_cycles: int = 10_000_000, label: str = "mod",
                        sm_ready_p: float | None = None, fault: str | None = None,
                        sm_table=None) -> dict:
    """Run host commands ``cmds`` [(host_cmd, gap)] through the Verilated PimModule and
    ModuleModel in lockstep (:func:`run_job`): command i is pushed in cycle
    ``t_{i-1} + 1 + gap_i`` (no ready).  Adds ``errors`` [(cycle, ModErr code)], QUEUE_FULL
    for pushes reported on ``ovf``.

    With ``params.softmax`` the ``sm_res`` stream and ``sm_err`` are compared every cycle too
    (``sm_res.payload`` in every cycle its valid is 1).  ``sm_ready_p``: None drives
    ``sm_res.ready`` with the very pattern of ``out.ready`` (as ``ModuleModel.run`` does, so
    its runs reproduce this one), a duty in (0, 1] an independent pattern of its own
    (seed :func:`tb.designs.side_seed`).  Adds ``sm_res`` (payloads transferred, in order)
    and ``sm_errors`` [(cycle, SmErr code)].  ``fault``: a deliberately wrong DUT
    (:class:`Target`, e.g. ``"sm_exp_entry"``); ``sm_table``: the golden model's unit uses
    this exp table (to show that a fault is the table)."""
    from spec.isa import ModErr
    from tb.designs import side_seed
    extra = {}
    if params.softmax and sm_ready_p is not None:
        extra["side_ready"] = [(side_seed(seed, 0), ready_threshold(sm_ready_p, "sm_ready_p"))]
    if sm_table is not None:
        extra["sm_table"] = list(sm_table)
    res = run_job(Target("module", params, fault), [_beats(cmds)], seed=seed,
                  ready_p=out_ready_p, waves=waves, max_cycles=max_cycles, reset_at=reset_at,
                  label=label, **extra)
    res["errors"] = [(c, v if f == "err" else int(ModErr.QUEUE_FULL))
                     for c, f, v in res["events"] if f in ("err", "ovf")]
    res["sm_errors"] = [(c, v) for c, f, v in res["events"] if f == "sm_err"]
    res["sm_res"] = res.get("side_outputs", {}).get("sm_res", [])
    return res


def describe_mismatch(res: dict, reproduce: str | None = None) -> str:
    """The readable first-mismatch report of a lockstep result (:mod:`tb.mismatch`)."""
    return mismatch.describe(res["mismatch"], waves=res.get("waves"), reproduce=reproduce)
