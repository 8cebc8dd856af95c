"""System-level performance experiments (``cimphony perf`` / ``make perf``): the CENT-class
PIM-only baseline, PIMphony's techniques alone and together, a DIMC system under an SRAM area
budget, the DIMC + DRAM-PIM hybrid and the DIMC what-if, on LLM-7B/72B at 4K..1M tokens.

Every point (perf/point.py) runs as a task on Dask (perf/grid.py, perf/sweep.py: a LocalCluster
of ``--jobs`` workers, or ``--scheduler ADDRESS``), cached by point.  Writes
build/perf/{report.md, results.json, *.png} and prints a summary table.
``cimphony perf point ...`` runs one point instead (perf/point_cli.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from perf import energy as E
from perf import softmax_unit as SU
from perf import tables as T
from perf.grid import (CONTEXTS, DEFAULT_MODELS, DEFAULT_POLICIES, MODELS, code_version,
                       fmt_ctx, pairs, points, run_grid)
from perf.plots import plots
from perf.point_cli import constants
from perf.presets import BASELINE_IS_CENT, LABEL, POLICIES, SYSTEMS

__all__ = ["add_arguments", "run", "main", "run_all", "write_report"]


def add_arguments(ap) -> None:
    """Options of ``cimphony perf`` / ``python -m perf.report`` (each checked by its type; a
    value given twice in a list option is an error, not a point run twice), and the ``point``
    sub-command."""
    from cimphony.cli import Unique, env_default, nonneg_int, out_dir, positive_int
    from perf import point_cli
    ap.add_argument("--out", type=out_dir, metavar="DIR", default=Path("build/perf"),
                    help="output directory")
    ap.add_argument("--systems", "--backends", dest="systems", nargs="+", action=Unique,
                    default=list(SYSTEMS), choices=SYSTEMS, metavar="NAME",
                    help=f"presets, of {', '.join(SYSTEMS)} (the AiM baseline always runs)")
    ap.add_argument("--models", nargs="+", action=Unique, default=list(DEFAULT_MODELS),
                    choices=MODELS, metavar="NAME",
                    help=f"of {', '.join(MODELS)}; default: Llama-3.1-8B (LLM-7B) and "
                         "Llama-3.1-70B (LLM-72B); the Qwen1.5 models have no GQA (4-8x the KV "
                         "cache) and take much longer")
    ap.add_argument("--contexts", nargs="+", action=Unique, type=positive_int,
                    default=list(CONTEXTS), metavar="TOKENS",
                    help="context lengths (tokens; 60780 is the request-mix point: the "
                         "benchmarks' own lengths)")
    ap.add_argument("--policies", "--configs", dest="policies", nargs="+", action=Unique,
                    default=list(DEFAULT_POLICIES), choices=list(POLICIES), metavar="NAME",
                    help=f"policies on the AiM hardware, of {', '.join(POLICIES)} (baseline "
                         "always runs; 'all' is the pimphony preset; the *_1bank ablations "
                         "only when named)")
    ap.add_argument("--seed", type=nonneg_int, metavar="N", default=env_default("SEED", 1),
                    help="request-mix seed (default: $SEED, else 1)")
    ap.add_argument("--batch-cap", type=positive_int, metavar="N", default=None,
                    help="resident requests per point at most (default: the largest batch "
                         "that fits)")
    ap.add_argument("--out-ports", type=positive_int, metavar="N", default=None,
                    help="result beats the hub takes per cycle (default: one per channel)")
    ap.add_argument("--jobs", type=positive_int, metavar="N", default=env_default("JOBS", 2),
                    help="LocalCluster worker processes (default: $JOBS, else 2)")
    ap.add_argument("--scheduler", metavar="ADDRESS", type=scheduler_address, default=None,
                    help="run on an existing Dask scheduler (tcp://host:port) instead of a "
                         "LocalCluster")
    ap.add_argument("--connect-timeout", type=positive_int, metavar="S", default=30,
                    help="seconds to wait for --scheduler")
    ap.add_argument("--cache", type=out_dir, metavar="DIR", default=None,
                    help="point cache (default: OUT/cache); a re-run computes only new points")
    sub = ap.add_subparsers(dest="perf_cmd", metavar="{point}", required=False,
                            title="one point instead of the grid")
    p = sub.add_parser("point", help="one point: cimphony perf point --config ... --json",
                       description=point_cli.__doc__.split("\n\n")[0])
    point_cli.add_arguments(p)


def scheduler_address(text: str) -> str:
    """argparse type: ``[tcp://]host:port`` (a Dask scheduler address)."""
    import re
    if not re.fullmatch(r"(tcp|tls|inproc|ucx)://[^\s:/]+:[0-9]+|[^\s:/]+:[0-9]+", text):
        raise argparse.ArgumentTypeError(f"must be a scheduler address tcp://host:port, got "
                                         f"{text!r}")
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.report",
                                 description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run_all(a) -> list[dict]:
    """The grid of ``a`` (parsed options), run on Dask; rows in grid order."""
    pts = points(a.models, a.contexts, pairs(a.systems, a.policies), seed=a.seed,
                 batch_cap=a.batch_cap, out_ports=a.out_ports)
    return run_grid(pts, cache_dir=a.cache or Path(a.out) / "cache", jobs=a.jobs,
                    scheduler=a.scheduler, connect_timeout=getattr(a, "connect_timeout", 30))


def _label(r) -> str:
    return " ".join(str(fmt_ctx(r[k]) if k == "ctx" else r[k])
                    for k in ("system", "backend", "model", "ctx", "policy", "config") if k in r)


_ASSUME = [
    "Host work (softmax, norms, RoPE, residuals, SwiGLU, sampling) runs on CENT's per-device "
    "accelerator with CENT's op costs (perf/host.py); it is not overlapped with PIM work.",
    "Link: CENT's CXL model (latency and bandwidth per hop; ring all-reduce for tensor "
    "parallelism, one transfer per pipeline boundary).",
    "Throughput: the resident requests run as min(pp, B) micro-batches through the pipeline "
    "stages (as CENT counts throughput = pp / token latency); one stage of one rank is "
    "simulated for one micro-batch (the ranks of a stage run symmetric programs).",
    "Capacity utilisation (live KV bytes / reserved KV bytes) is that of the simulated "
    "micro-batch (a prefix of the resident requests' draw; all of them when pp = 1).",
    "The LM head GEMV and the embedding lookup are not timed (for every system alike); their "
    "transfers are.",
    "HFP's per-layer channel rotation is simulated as layer 0 repeated (within 0.5%, "
    "tests/perf/test_perfsim.py).",
    "The hub takes one result beat per channel per cycle (a DRAM-PIM channel has its own data "
    "path); the RTL hub merges all channels into one port.",
    "dimc and hybrid are composed, not compiled onto two channel kinds at once: the weight "
    "GEMVs of every layer on the DIMC rank, attention on the DRAM side, in series (QKV -> "
    "attention -> O -> FFN).  Data between the parts pass through the host at the BARRIERs the "
    "step has anyway.",
    "dimc's attention time is the larger of the DIMC macros computing it (simulated) and every "
    "live KV byte crossing the plain DRAM channels' pins once per step at the peak burst rate "
    "(32 B per tCCDS, refresh stretched): a lower bound that favours dimc over the hybrid, whose "
    "DRAM-PIM attention is simulated with every overhead.",
    "DIMC channels compute INT8 (weights and, in dimc, the KV cache); AiM channels bf16.  A "
    "DIMC bank is one 64 x 64 MAC array time-multiplexed over its weight sets (conservative: a "
    "physical macro array computes in every 0.0133 mm^2 macro); its energy is the measured "
    "macro's per op (the set is read in place).",
    "DIMC channels issue single-bank MACs under every policy (the all-bank MAC is AiM's "
    "DRAM-row mechanism; on SRAM macros it would only pad the layout to 16-bank stripes); the "
    "policy's controller (in-order or DCS), partition and allocation apply.",
    "dimc's default SRAM budget is the TSMC 5 nm macro area that holds the model's INT8 "
    "weights (2 weight sets of 64 x 64 INT8 per macro); --dimc-mm2 states another (weights "
    "that do not fit: the point does not fit; weight streaming is not modelled).",
    "Area: DIMC macro area only (buffers, controllers, I/O of a DIMC channel not sourced) and "
    "CENT's controller die per CXL device; no GDDR6-AiM die area is sourced, so DRAM mm^2 is "
    "listed as not sourced (perf/area.py).",
]


def write_report(rows, meta, outdir: Path, files) -> str:
    """The markdown report (also returned)."""
    models, contexts = meta["models"], meta["contexts"]
    cent = meta["cent_faithful"]
    grows = T.goal_rows(rows, models, contexts)
    cap = meta["batch_cap"]
    batch = "the largest that fits" if cap is None else f"at most {cap}"
    L = ["# cimphony performance model: CENT-class baseline, PIMphony's techniques, DIMC and "
         "the hybrid, LLM-7B/72B at 4K to 1M tokens", "",
         f"Generated by `cimphony perf` in {meta['wall_s']:.0f} s on "
         f"{meta['cluster']}; {meta['computed']} points computed, {meta['cached']} from the "
         f"cache ({meta['cache']}, code version {meta['code_version']}); seed {meta['seed']}; "
         f"batch: {batch}.",
         "", "Timing: perf/sim.py (cycle-exact against the golden model and the RTL on small "
         "configurations).  Host and link: perf/host.py.  Energy: perf/energy.py.  Area: "
         "perf/area.py.  Every constant and its source is listed at the end.", ""]
    if cent:
        L += ["**Baseline.** CENT's policy (compiler/llm/policy.py): CENT's mapping (FC layers "
              "row-parallel over all banks and channels, QK^T token-parallel, SV a head per "
              "channel with head dims across banks), all-bank MAC_ABK, in-order controller, "
              "non-blocking MACs and blocking result reads, static allocation.  Today's "
              "single-bank HFP baseline is the labelled ablation `baseline_1bank`.", ""]
    else:
        L += ["**Baseline.** The baseline policy is today's HFP + in-order + static "
              "allocation with single-bank MACs; the CENT-faithful baseline (all-bank MAC_ABK, "
              "non-blocking MACs, CENT's mapping) is not in the compiler yet, so this baseline "
              "is weaker than CENT and every speedup below overstates the gain over CENT.", ""]
    L += ["## Goal: all three techniques >= 11.3x over the baseline (PIMphony, PIM-only)", "",
          T.goal_table(grows), "", *T.goal_sentences(grows, cent), "",
          "## PIMphony's published figures next to ours (AiM hardware)", "",
          T.pimphony_table(T.pimphony_rows(rows, models)), "",
          "## Each technique alone vs the baseline: end-to-end speedup (PIM-only in "
          "parentheses)", "", T.techniques_table(rows, models, contexts), "",
          "## Every preset: tokens/s, time per token, energy per token, area", "",
          T.presets_table(rows, models, contexts), "",
          *T.hybrid_sentences(rows, models, contexts), "", *softmax_section(rows, models),
          "## Systems", "",
          T.systems_table(rows), ""]
    L += [f"* **{s}**: {LABEL[s]}" for s in SYSTEMS]
    L += ["", "## Plots", ""] + [f"![{f.stem}]({f.name})" for f in files]
    L += ["", "## All points", "", T.points_table(rows), "", "## Assumptions and departures",
          ""] + [f"* {x}" for x in _ASSUME + [f"Energy not charged: {o}." for o in E.OMITTED]]
    c = meta["constants"]
    L += ["", "## Constants and their sources", "", "### Energy (perf/energy.py)", "",
          T.constants_table(c["energy"]), "", "### Host accelerator (perf/host.py)", "",
          T.constants_table(c["host"]), "", "### Link (perf/host.py)", "",
          T.constants_table(c["link"]), "", "### Area (perf/area.py)", "",
          T.constants_table(c["area"]), ""]
    return "\n".join(L)


def _configs(models) -> dict:
    from compiler import llm
    return {m: llm.load_config(m) for m in models}


def softmax_section(rows, models) -> list[str]:
    """Report lines: every ``all``-policy point with and without the hub's softmax unit
    (perf/softmax_unit.py); none if no point has host ops."""
    wr = SU.with_without_rows(rows, _configs(models))
    if not wr:
        return []
    return ["## With vs without the hub's softmax unit", "",
            "Without the unit every layer's scores go to the host and its INT8 probabilities "
            "come back (one round trip per layer); with it (docs/softmax.md, two probability "
            "digits, 4 TCP partitions) only one 87-bit result per head and query reaches the "
            "host, which applies 1/l. Token time with the unit = the point's token time - the "
            "host softmax + the 1/l step + the unit's time (B + K + 3 cycles per head, heads "
            "in series on one unit per rank, not overlapped: conservative). The score and "
            "probability transfers and the round-trip latencies saved are not in either token "
            "time (the host model does not charge them): the speedup is a lower bound. "
            "`make bench` (bench/softmax.py) measures the unit's cycles and accuracy in the "
            "golden model and the RTL.", "", SU.with_without_table(wr, fmt_ctx), ""]


def run(a) -> int:
    """``cimphony perf``: the grid (or ``point``).  Writes the report; 1 if any point failed
    (status neither ``ok`` nor ``does not fit``), listing the failures on stderr."""
    if getattr(a, "perf_cmd", None) == "point":
        from perf import point_cli
        return point_cli.run(a)
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        rows = run_all(a)
    except ValueError as e:
        if "scheduler=" not in str(e):
            raise
        print(f"cimphony perf: error: argument --scheduler: {e}", file=sys.stderr)
        return 2
    T.add_speedups(rows)
    wall = time.time() - t0
    meta = dict(wall_s=wall, jobs=a.jobs, seed=a.seed, batch_cap=a.batch_cap,
                cluster=(f"the Dask scheduler {a.scheduler}" if a.scheduler else
                         f"a Dask LocalCluster of {a.jobs} worker(s)"),
                cache=str(a.cache or outdir / "cache"), code_version=code_version(),
                computed=sum(not r.get("cached") for r in rows),
                cached=sum(bool(r.get("cached")) for r in rows),
                systems=a.systems, models=a.models, contexts=sorted(a.contexts),
                policies=a.policies, cent_faithful=BASELINE_IS_CENT,
                constants=constants())
    files = plots(rows, outdir)
    doc = dict(meta=meta, rows=rows, pimphony=T.pimphony_rows(rows, a.models),
               softmax_unit=SU.with_without_rows(rows, _configs(a.models)),
               goal=[{k: v for k, v in d.items() if k not in ("base", "all")}
                     for d in T.goal_rows(rows, a.models, sorted(a.contexts))])
    (outdir / "results.json").write_text(json.dumps(doc, indent=1, default=float))
    (outdir / "report.md").write_text(write_report(rows, meta, outdir, files))
    _summary(rows, a)
    print(f"\nwrote {outdir}/report.md, results.json and {len(files)} plots ({wall:.0f} s)")
    failed = [r for r in rows if r.get("status") != "ok"
              and not str(r.get("status", "")).startswith("does not fit")]
    for r in failed:
        print(f"perf: point {_label(r)} failed: {r.get('status')}", file=sys.stderr)
    if failed:
        print(f"perf: {len(failed)} of {len(rows)} points failed", file=sys.stderr)
    return 1 if failed else 0


def _summary(rows, a) -> None:
    from cimphony.cli import print_table
    out = []
    for r in sorted(rows, key=T.key):
        if not T.ok(r):
            out.append((r.get("model"), fmt_ctx(r.get("ctx", 0)), r.get("system"),
                        r.get("policy"), str(r.get("status"))[:40], "", "", "", ""))
            continue
        sp = lambda k: f"{r[k]:.2f}x" if k in r else "-"      # noqa: E731
        out.append((r["model"], fmt_ctx(r["ctx"]), r["system"], r["policy"], r["batch"],
                    f"{r['tokens_per_s']:.1f}", sp("speedup"), sp("speedup_pim"),
                    f"{r['energy_j_per_token'] * 1e3:.2f}"))
    print()
    print_table(("model", "ctx", "system", "policy", "batch", "tokens/s", "speedup",
                 "PIM-only", "mJ/token"), out)


if __name__ == "__main__":
    sys.exit(main())
