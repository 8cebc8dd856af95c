"""Cycle-exact trace-compare mode: the Verilated macro in a C++ harness vs the golden model.

The DUT runs in ``tb/harness.cpp`` (no Python in the loop), driven by the rules of
``model/stimulus.py``; it writes every event (wr/req transfers, res transfers with payload,
non-zero err) to a trace file.  The golden model produces the same :class:`model.trace.Trace`
from the same stimulus; :func:`compare` reports the first difference.

Builds are cached (``tb/cache.py``) in ``sim_build/trace/<params.tag>[_<fault>][_waves]/``,
keyed by a hash of the Verilog text, the harness source, the build flags and the waiver file.
A mismatch is a :class:`tb.mismatch.Mismatch` whose ``signal`` is the event kind (``wr``,
``req``, ``res``, ``err``) or ``end`` (run length).

Reset contract (see harness.cpp): ``rst`` is held high for ``RESET_CYCLES`` clock edges with
all stream inputs 0, then released; cycle 0 is the first cycle after release, in which the DUT
is in its reset state, as the model is in its cycle 0.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from spec.params import MacroParams, req_fields, res_fields, width, wr_fields
from model.stimulus import TAIL, Stimulus
from model.trace import Trace
from tb import cache, vlenv
from tb.mismatch import Mismatch, note_waveform, payload_detail

__all__ = ["RESET_CYCLES", "build", "build_seconds", "write_stim", "read_trace", "run_trace",
           "run_model", "compare", "Mismatch", "trace_check", "dump_ready"]

TB_DIR = Path(__file__).resolve().parent
HARNESS = TB_DIR / "harness.cpp"
TOP = "dimc_macro"
EXE = "obj/Vtop"
RESET_CYCLES = 2  # must equal RESET_CYCLES in harness.cpp (checked in build())
# Verilator -O3; the generated C++ at -O2 (-O3 costs build time for ~no speed on this design).
# The C++ optimisation levels are set per file class through OPT_FAST/OPT_SLOW (see build), not
# in CXX_FLAGS: verilated.mk puts CXXFLAGS after OPT_*, so an -O there would also compile the
# large run-once "Slow" files (constructor, initial settle) at -O2.
VL_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert"]
CXX_FLAGS = ["-march=native"]

KIND_RANK = {"wr": 0, "req": 1, "res": 2, "err": 3}


# --------------------------------------------------------------------------------------------
# build
@dataclass(frozen=True)
class _Harness:
    """What one harness build is made from (its repr enters the cache's quick key)."""
    params: MacroParams
    fault: str | None
    waves: bool

    @property
    def name(self) -> str:
        return (self.params.tag + (f"_{self.fault}" if self.fault else "")
                + ("_waves" if self.waves else ""))

    def verilog(self) -> str:
        from hdl.export import generate
        return generate(self.params, fault=self.fault, name=TOP)


def _build_dir(h: _Harness) -> Path:
    return vlenv.SIM_BUILD / "trace" / h.name


def build(params: MacroParams, fault: str | None = None, waves: bool = False,
          quiet: bool = True) -> Path:
    """Build (or reuse) the trace harness for ``params``; returns the path of the executable.

    Cached by ``tb/cache.py``: key = the macro's exact Verilog text, ``tb/harness.cpp``, the
    flags and the waiver file.
    """
    if f"RESET_CYCLES = {RESET_CYCLES};" not in HARNESS.read_text():
        raise RuntimeError("tb/trace.py RESET_CYCLES differs from tb/harness.cpp")
    h = _Harness(params, fault, waves)
    widths = (width(wr_fields(params)), width(req_fields(params)), width(res_fields(params)))
    flags = list(VL_FLAGS) + (["--trace"] if waves else [])
    cflags = list(CXX_FLAGS) + [f"-DWR_BITS={widths[0]}", f"-DREQ_BITS={widths[1]}",
                                f"-DRES_BITS={widths[2]}"] + (["-DWAVES"] if waves else [])
    env = vlenv.apply(dict(os.environ))

    def run_verilator(bdir: Path, src: str) -> None:
        vfile = bdir / f"{TOP}.v"
        vfile.write_text(src)
        cmd = [vlenv.verilator(), "--cc", "--exe", "--build", "-Wall", *flags,
               "--top-module", TOP, "--prefix", "Vtop", "-Mdir", str(bdir / "obj"), "-o", "Vtop",
               "-j", str(os.cpu_count() or 2), "-CFLAGS", " ".join(cflags),
               str(vlenv.WAIVERS), str(vfile), str(HARNESS)]
        # OPT_FAST/OPT_SLOW: the model's own optimisation levels inside verilated.mk
        env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "")
                            + " OPT_FAST=-O2 OPT_SLOW=-O1 OPT_GLOBAL=-O2").strip()
        log = bdir / "build.log"
        with open(log, "w") as lf:
            lf.write(" ".join(cmd) + "\n")
            lf.flush()
            r = subprocess.run(cmd, cwd=bdir, env=env, stdout=lf, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError(f"trace harness build failed ({params.tag}, fault={fault}); "
                               f"log tail:\n{log.read_text()[-4000:]}")
        if not quiet:
            print(log.read_text())

    bdir = cache.cached_build(_build_dir(h), target=h, verilog=h.verilog,
                              extra=[repr(flags), repr(cflags), HARNESS, vlenv.WAIVERS],
                              build=run_verilator, product=EXE)
    return bdir / EXE


def build_seconds(params: MacroParams, fault: str | None = None,
                  waves: bool = False) -> float | None:
    """Wall time (s) of the last full harness build for these arguments, or None."""
    return cache.build_seconds(_build_dir(_Harness(params, fault, waves)))


# --------------------------------------------------------------------------------------------
# stimulus and trace files
def write_stim(stim: Stimulus, path: Path) -> None:
    p = stim.params
    lines = ["cimphony-stim 1",
             f"widths {width(wr_fields(p))} {width(req_fields(p))} {width(res_fields(p))}",
             f"counts {len(stim.wr)} {len(stim.req)}",
             f"ready {stim.seed} {stim.ready_threshold}",
             f"tail {TAIL}"]
    lines += [f"wr {b.gap} {b.after} {b.payload:x}" for b in stim.wr]
    lines += [f"req {b.gap} {b.after} {b.payload:x}" for b in stim.req]
    lines.append("")
    path.write_text("\n".join(lines))


def read_trace(path: Path):
    """Parse a harness trace file -> (events [(cycle, kind, value)], total cycles, status)."""
    events = []
    total, status = None, "truncated"
    with open(path) as f:
        head = f.readline()
        if not head.startswith("cimphony-trace"):
            raise RuntimeError(f"{path}: not a harness trace")
        for line in f:
            a, kind, v = line.split()
            if a == "end":
                total, status = int(kind), v
                break
            c = int(a)
            if kind == "res":
                events.append((c, "res", int(v, 16)))
            elif kind == "err":
                events.append((c, "err", int(v)))
            else:
                events.append((c, kind, 0))
    return events, total, status


def _events(tr: Trace) -> list[tuple]:
    return [tuple(e) for e in tr.events]


# --------------------------------------------------------------------------------------------
# runs
def _job_paths(exe: Path, stim: Stimulus, label: str):
    jdir = exe.parent.parent / "jobs"
    jdir.mkdir(exist_ok=True)
    base = jdir / f"{label}_{os.getpid()}_{stim.seed}"
    return base.with_suffix(".stim"), base.with_suffix(".trace")


def _parse_stats(stderr: str) -> dict:
    for line in stderr.splitlines():
        if line.startswith("harness: cycles"):
            t = line.split()[1:]
            d = dict(zip(t[0::2], t[1::2], strict=True))
            return {"dut_cycles": int(d["cycles"]), "dut_wall_s": float(d["wall_s"]),
                    "dut_load_s": float(d["load_s"]), "dut_status": d["status"]}
    return {}


class _HarnessRun:
    """A started harness subprocess (so the model can run meanwhile)."""

    def __init__(self, params, stim, fault=None, waves=False, label="run", vcd=None,
                 max_cycles=None):
        t0 = time.perf_counter()
        self.exe = build(params, fault, waves)
        self.stats = {"build_check_s": time.perf_counter() - t0}
        self.stim_path, self.out_path = _job_paths(self.exe, stim, label)
        t0 = time.perf_counter()
        write_stim(stim, self.stim_path)
        self.stats["write_stim_s"] = time.perf_counter() - t0
        cmd = [str(self.exe), str(self.stim_path), str(self.out_path)]
        self.vcd = None
        if waves:
            self.vcd = Path(vcd) if vcd else self.out_path.with_suffix(".vcd")
            cmd += ["--vcd", str(self.vcd)]
        if max_cycles:
            cmd += ["--max-cycles", str(max_cycles)]
        self.t_start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)

    def finish(self):
        out, err = self.proc.communicate()
        self.stats["dut_proc_s"] = time.perf_counter() - self.t_start
        if self.proc.returncode not in (0, 3):
            raise RuntimeError(f"harness failed (rc {self.proc.returncode}): {err.strip()}")
        self.stats.update(_parse_stats(err))
        t0 = time.perf_counter()
        events, total, status = read_trace(self.out_path)
        self.stats["parse_s"] = time.perf_counter() - t0
        if status != "ok":
            self.stats["dut_status"] = status
        tr = Trace(events=events, cycles=total, status=status)
        if self.vcd is not None:
            note_waveform(self.vcd)
        if not os.environ.get("CIMPHONY_KEEP_JOBS"):
            self.stim_path.unlink(missing_ok=True)
            self.out_path.unlink(missing_ok=True)
        return tr


def run_trace(params: MacroParams, stim: Stimulus, fault: str | None = None,
              waves: bool = False, vcd: str | None = None, max_cycles: int | None = None):
    """Run ``stim`` on the Verilated macro in the C++ harness -> (Trace, stats dict).

    stats: dut_cycles, dut_wall_s (simulation loop, inside the harness), dut_proc_s (process
    incl. stimulus load and trace write), write_stim_s, parse_s, dut_status ('ok'/'timeout').
    With ``waves`` the harness is built with --trace and writes a VCD (stats['vcd']).
    """
    run = _HarnessRun(params, stim, fault, waves, vcd=vcd, max_cycles=max_cycles)
    tr = run.finish()
    if waves:
        run.stats["vcd"] = str(run.vcd)
    return tr, run.stats


def run_model(params: MacroParams, stim: Stimulus, late: int = 0):
    from model.macro import MacroModel
    if late:
        return MacroModel(params, late=late).run(stim)
    return MacroModel(params).run(stim)


# --------------------------------------------------------------------------------------------
# compare
def compare(dut, ref, seed: int | None = None, params: MacroParams | None = None,
            quiet: bool = False) -> Mismatch | None:
    """First difference between the DUT trace and the reference (model) trace, or None.

    Events are compared in (cycle, kind) order; an event present in one trace only is reported
    with ``None`` on the other side; equal events but different run lengths are reported as
    kind ``end``.  Prints the mismatch (unless ``quiet``).
    """
    de, re_ = _events(dut), _events(ref)
    key = lambda e: (e[0], KIND_RANK.get(e[1], 9))
    de.sort(key=key)
    re_.sort(key=key)
    m = None
    if de != re_:
        n = min(len(de), len(re_))
        i = next((i for i in range(n) if de[i] != re_[i]), n)
        a = de[i] if i < len(de) else None
        e = re_[i] if i < len(re_) else None
        if a is not None and e is not None and a[:2] == e[:2]:
            m = Mismatch(e[0], e[1], e[2], a[2], seed)
            if e[1] == "res" and params is not None:
                m.detail = payload_detail(res_fields(params), params, e[2], a[2])
        elif a is None or (e is not None and key(e) < key(a)):
            # expected event missing in the DUT (at that cycle the DUT had nothing of that kind)
            m = Mismatch(e[0], e[1], e[2], None, seed)
            if a is not None:
                m.detail = f"DUT's next event: cycle {a[0]} {a[1]} {a[2]:#x}"
        else:
            m = Mismatch(a[0], a[1], None, a[2], seed)
            if e is not None:
                m.detail = f"model's next event: cycle {e[0]} {e[1]} {e[2]:#x}"
    elif dut.cycles != ref.cycles:
        m = Mismatch(min(dut.cycles, ref.cycles), "end", ref.cycles, dut.cycles, seed,
                     detail="same events, different run length (total cycles)")
    if m is not None and not quiet:
        print(m, file=sys.stderr)
    return m


# --------------------------------------------------------------------------------------------
# check
def trace_check(params: MacroParams, stim: Stimulus, fault: str | None = None, late: int = 0,
                waves: bool = False, quiet: bool = False):
    """Run the DUT harness (subprocess) and the model (this process) concurrently and compare.

    Returns (mismatch or None, stats).  stats: dut_cycles, dut_wall_s, dut_proc_s,
    model_wall_s, model_cycles, compare_wall_s, total_wall_s, cycles_per_s (DUT cycles over
    the total wall time of the check, excluding the build).
    """
    t_all = time.perf_counter()
    run = _HarnessRun(params, stim, fault, waves, label="check")
    t_all += run.stats["build_check_s"]  # the total excludes the build (cache check)
    t0 = time.perf_counter()
    ref = run_model(params, stim, late)
    model_s = time.perf_counter() - t0
    dut = run.finish()
    stats = dict(run.stats)
    stats["model_wall_s"] = model_s
    stats["model_cycles"] = ref.cycles
    t0 = time.perf_counter()
    m = compare(dut, ref, seed=stim.seed, params=params, quiet=quiet)
    stats["compare_wall_s"] = time.perf_counter() - t0
    stats["total_wall_s"] = time.perf_counter() - t_all
    stats["cycles_per_s"] = (stats.get("dut_cycles") or dut.cycles) / stats["total_wall_s"]
    stats["events"] = len(dut.events)
    if waves:
        stats["vcd"] = str(run.vcd)
        if m is not None:
            m.waves = stats["vcd"]
    return m, stats


def dump_ready(params: MacroParams, seed: int, threshold: int, n: int) -> list[int]:
    """res.ready for cycles 0..n-1 as computed by the C++ harness (for the hash unit check)."""
    exe = build(params)
    out = subprocess.run([str(exe), "--dump-ready", str(seed), str(threshold), str(n)],
                         check=True, capture_output=True, text=True).stdout.strip()
    return [int(ch) for ch in out]
