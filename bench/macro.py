"""Simulation speed of the default macro: trace-compare mode, harness alone, cocotb lockstep.

    cimphony bench --only macro [--cycles N] [--lockstep-cycles N] [--seed S] [--no-lockstep]
    python -m bench.macro [same options] [--out DIR]

Writes ``<out>/macro.json`` and ``<out>/macro.md`` (default ``build/bench/``) and prints a
table.  Targets: trace-compare >= 100k cycles/s, lockstep >= 20k cycles/s.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bench import results
from spec.params import MacroParams
from model.stimulus import Stimulus
from tb import trace
from tb.stimgen import random_stimulus

DEFAULT_SEED = 2024
TARGET_TRACE = 100_000
TARGET_LOCKSTEP = 20_000


def long_stimulus(p: MacroParams, cycles: int, seed: int):
    """Random stimulus (gaps, dependencies, hazards, backpressure) of at least ~``cycles``."""
    # about x_bits cycles per request at full rate; ready_p and gaps stretch it a bit
    n_req = max(16, cycles // p.x_bits + 1)
    return random_stimulus(p, seed, n_req=n_req, n_wr=n_req // 4, ready_p=0.9, gap_p=0.1,
                           max_gap=4, dep_p=0.05)


def add_arguments(ap, common: bool = True) -> None:
    """Options of ``bench.macro``; ``common``: also ``--seed`` and ``--out`` (which
    ``cimphony bench`` shares between the benches)."""
    from cimphony.cli import positive_int
    if common:
        results.add_common(ap, DEFAULT_SEED, "stimulus seed")
    ap.add_argument("--cycles", type=positive_int, metavar="N", default=250_000,
                    help="trace-compare stimulus length (cycles)")
    ap.add_argument("--lockstep-cycles", type=positive_int, metavar="N", default=40_000,
                    help="cocotb lockstep stimulus length (cycles)")
    ap.add_argument("--no-lockstep", action="store_true", help="skip the cocotb lockstep run")


def outputs(args) -> list[Path]:
    """Files :func:`run` writes for ``args``."""
    return results.outputs(args.out, "macro")


def main(argv=None) -> int:
    return results.main(argv, "python -m bench.macro", __doc__, add_arguments, run)


def run(args) -> int:
    """Run the bench; returns 0 if trace-compare and lockstep found no mismatch."""
    p = MacroParams()
    res: dict = {"params": p.tag, "seed": args.seed, "host": platform.node(),
                 "cpus": os.cpu_count(), "python": platform.python_version(),
                 "targets": {"trace_compare_cps": TARGET_TRACE, "lockstep_cps": TARGET_LOCKSTEP}}

    bar = tqdm(total=4 if args.no_lockstep else 5, desc="bench macro", unit="stage",
               file=sys.stderr)
    bar.set_postfix_str("trace harness build")
    print(f"[bench] default macro {p.tag}: building trace harness (cached if unchanged) ...",
          flush=True)
    t0 = time.perf_counter()
    trace.build(p)
    res["trace_build"] = {"this_call_s": round(time.perf_counter() - t0, 2),
                          "last_full_build_s": trace.build_seconds(p)}
    bar.update()
    bar.set_postfix_str("stimulus")

    t0 = time.perf_counter()
    stim = long_stimulus(p, args.cycles, args.seed)
    res["stimulus"] = {"gen_s": round(time.perf_counter() - t0, 2), "n_wr": len(stim.wr),
                       "n_req": len(stim.req), "ready_p": stim.ready_p}
    print(f"[bench] stimulus: {len(stim.wr)} wr, {len(stim.req)} req "
          f"({res['stimulus']['gen_s']} s to generate)", flush=True)
    bar.update()
    bar.set_postfix_str("trace-compare")

    # (a) trace-compare: harness subprocess || model in this process, then compare
    m, st = trace.trace_check(p, stim)
    cyc = st["dut_cycles"]
    res["trace_compare"] = {
        "ok": m is None, "mismatch": None if m is None else str(m), "cycles": cyc,
        "total_wall_s": st["total_wall_s"], "cycles_per_s": st["cycles_per_s"],
        "breakdown_s": {"write_stim": st["write_stim_s"], "dut_process": st["dut_proc_s"],
                        "dut_sim_loop": st["dut_wall_s"], "model": st["model_wall_s"],
                        "parse_dut_trace": st["parse_s"], "compare": st["compare_wall_s"]},
        "model_cycles_per_s": cyc / st["model_wall_s"], "events": st["events"],
    }
    bar.update()
    bar.set_postfix_str("harness and model alone")
    # (b) the harness alone (no Python in the loop)
    _, hs = trace.run_trace(p, stim)
    res["harness_alone"] = {"cycles": hs["dut_cycles"], "sim_loop_s": hs["dut_wall_s"],
                            "sim_loop_cycles_per_s": hs["dut_cycles"] / hs["dut_wall_s"],
                            "process_s": hs["dut_proc_s"],
                            "process_cycles_per_s": hs["dut_cycles"] / hs["dut_proc_s"],
                            "stim_load_s": hs["dut_load_s"]}
    # model alone (same stimulus, nothing else running)
    t0 = time.perf_counter()
    ref = trace.run_model(p, stim)
    ms = time.perf_counter() - t0
    res["model_alone"] = {"cycles": ref.cycles, "wall_s": ms, "cycles_per_s": ref.cycles / ms}
    bar.update()

    # (c) lockstep cocotb
    if args.no_lockstep:
        res["lockstep"] = {"skipped": "--no-lockstep"}
    else:
        from tb.build import run_lockstep
        bar.set_postfix_str("cocotb lockstep")
        lstim = long_stimulus(p, args.lockstep_cycles, args.seed + 1)
        print(f"[bench] lockstep: {len(lstim.req)} requests (the build may take minutes)",
              flush=True)
        t0 = time.perf_counter()
        run_lockstep(p, Stimulus(p, seed=1), label="bench_warm")   # build + simulator start
        warm = time.perf_counter() - t0
        ls = run_lockstep(p, lstim, label="bench")
        res["lockstep"] = {"via": "tb.build.run_lockstep", "ok": ls["ok"],
                           "cycles": ls["cycles"], "wall_s": ls["wall_s"],
                           "cycles_per_s": ls["cycles"] / ls["wall_s"],
                           "process_s": ls.get("sim_total_s"),
                           "build_and_warmup_s": round(warm, 2), "mismatch": ls["mismatch"]}
        bar.update()
    bar.close()

    jpath, mpath = outputs(args)
    results.write_json(jpath, res)
    results.write_md(mpath, render(res))
    print(f"[bench] wrote {jpath} and {mpath}")
    ok = res["trace_compare"]["ok"] and res["lockstep"].get("ok", True) is not False
    return 0 if ok else 1


def _k(x):
    return f"{x / 1000:,.1f}k"


def render(r: dict) -> str:
    tc, ha, mo, ls = r["trace_compare"], r["harness_alone"], r["model_alone"], r["lockstep"]
    b = tc["breakdown_s"]
    lines = [f"# Simulation speed, default macro {r['params']} (seed {r['seed']}, {r['cpus']} CPUs)",
             "",
             "| mode | cycles | wall s | cycles/s | target | verdict |",
             "|---|---:|---:|---:|---:|---|"]

    def row(name, cyc, wall, target=None):
        cps = cyc / wall if wall else 0
        verdict = "" if target is None else ("PASS" if cps >= target else "MISS")
        lines.append(f"| {name} | {cyc:,} | {wall:.3f} | {_k(cps)} | "
                     f"{_k(target) if target else '-'} | {verdict} |")

    row("trace-compare (harness ‖ model, compare)", tc["cycles"], tc["total_wall_s"], TARGET_TRACE)
    row("harness alone: sim loop", ha["cycles"], ha["sim_loop_s"])
    row("harness alone: process (load+sim+write)", ha["cycles"], ha["process_s"])
    row("golden model alone (MacroModel.run)", mo["cycles"], mo["wall_s"])
    if "skipped" in ls:
        lines.append(f"| lockstep cocotb | - | - | - | {_k(TARGET_LOCKSTEP)} | skipped: {ls['skipped'][:80]} |")
    else:
        row("lockstep cocotb (" + ls["via"] + ")", ls["cycles"], ls["wall_s"], TARGET_LOCKSTEP)
    lines += ["",
              f"trace-compare: {'0 mismatches' if tc['ok'] else tc['mismatch']}; "
              f"{tc['events']:,} events",
              "breakdown (s): " + ", ".join(f"{k} {v:.3f}" for k, v in b.items())
              + "  (dut_process runs concurrently with model)",
              f"critical path: {'model' if b['model'] > b['dut_process'] else 'DUT harness'} "
              f"(model {b['model']:.2f} s vs harness process {b['dut_process']:.2f} s)",
              f"trace harness build: {r['trace_build']['last_full_build_s']} s (full), "
              f"{r['trace_build']['this_call_s']} s this call"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
