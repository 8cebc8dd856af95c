"""The dispatcher-bound point before and after the multicast WR_INP (``wide_inp``), from the
performance model.

    python -m bench.dispatch [--dispatch-context C] [--dispatch-wide-inp K] [--seed S] [--out DIR]

The module's dispatcher takes one host command per cycle; token-centric partitioning (TCP)
gives every channel its own probability tile per SV token chunk, so with ``wide_inp`` = 1 a
chunk costs one WR_INP per channel (32 on a CENT-sized rank) and DIMC TCP+DCS+DPA at 1M
tokens is dispatcher-bound.  With ``wide_inp`` K > 1 (``ModuleParams.wide_inp``, docs/isa.md)
one multicast WR_INP host beat carries the tiles of K channels.  Rows: each model on the
``dimc-whatif`` system (the macros hold the KV cache) and Llama-3.1-8B on the ``dimc`` budget
system (c), policy ``all``, at wide_inp 1 and K (perf/point.py :func:`~perf.point.run_point`;
every number from the performance model, none from the RTL; the perf model equals the golden
model on small wide_inp programs: tests/perf/test_perfsim.py).

Columns: MAC utilisation, tokens/s (with host and link time; PIM-only in brackets), the
stage's cycles and host commands, and the dispatcher ceiling busy bank-cycles / (host commands
x banks): the utilisation if the stage took one cycle per host command.  With single-bank
MACs one command keeps one bank busy X = x_bits cycles, so X / banks (0.5 on 16 banks of 8-bit
inputs) bounds the utilisation however few WR_INPs there are.  Writes ``<out>/dispatch.json``
and ``<out>/dispatch.md`` (default ``build/bench/``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from bench import results

DEFAULT_SEED = 1
NAME = "dispatch"
#: (model, system) of the rows, each at wide_inp 1 and K
POINTS = (("llama-3.1-8b", "dimc-whatif"), ("llama-3.1-70b", "dimc-whatif"),
          ("llama-3.1-8b", "dimc"))


def _kw(model, system, context, seed, wide, batch_cap=None, all_bank=False):
    return dict(model=model, system=system, policy="all", context=context, seed=seed,
                wide_inp=wide, batch_cap=batch_cap, dimc_all_bank=all_bank)


def check(context: int, wide: int, seed: int) -> None:
    """ValueError naming the bad argument (``wide_inp``, ``context``) before any slow work."""
    from perf.point import resolve
    for model, system in POINTS:
        kw = _kw(model, system, context, seed, wide)
        kw["policy_name"] = kw.pop("policy")
        resolve(**kw)


def row_of(pt: dict) -> dict:
    """The bench's columns of one :func:`perf.point.run_point` row."""
    out = {k: pt.get(k) for k in ("model", "system", "policy", "ctx", "wide_inp",
                                  "dimc_all_bank", "batch",
                                  "status", "mac_utilisation", "tokens_per_s",
                                  "pim_tokens_per_s", "stage_cycles", "phases", "wall_s")}
    st = pt.get("sim_stats")
    if st:                          # one kind of channel: the stage is one simulated program
        # utilisation = busy / (cycles x banks): the same busy over one cycle per host command
        out["host_cmds"] = st["host_cmds"]
        out["dispatch_share"] = st["host_cmds"] / pt["stage_cycles"]
        out["dispatch_ceiling"] = min(1.0, pt["mac_utilisation"] * pt["stage_cycles"]
                                      / st["host_cmds"])
    return out


def measure(context: int, wide: int, seed: int, batch_cap: int | None = None) -> dict:
    """Every row (module docstring); ``batch_cap`` caps each point's batch (None: the fit)."""
    from perf.point import run_point
    res = dict(context=context, wide_inp=wide, seed=seed, where="performance model",
               rows=[])
    for model, system in POINTS:
        # before, after (multicast), and after with all-bank MACs on the DIMC rank as well
        runs = [(1, False), (wide, False)] + ([(wide, True)] if system == "dimc-whatif" else [])
        for k, ab in runs:
            t0 = time.monotonic()
            r = row_of(run_point(**_kw(model, system, context, seed, k, batch_cap, ab)))
            res["rows"].append(r)
            print(f"[bench dispatch] {model} {system} wide_inp={k}{' all-bank' if ab else ''}"
                  f": MAC utilisation {r['mac_utilisation']:.4f} "
                  f"({time.monotonic() - t0:.1f} s)", flush=True)
    return res


def render(res: dict) -> str:
    lines = [f"# The dispatcher-bound point: DIMC TCP+DCS+DPA at {res['context']} tokens, "
             f"wide_inp 1 vs {res['wide_inp']} (performance model; seed {res['seed']})", "",
             "| model | system | wide_inp | all-bank | batch | MAC util | tokens/s (PIM-only) | "
             "stage cycles | host cmds | host cmds / cycle | dispatcher ceiling |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['system']} | {r['wide_inp']} | "
                         f"{'yes' if r.get('dimc_all_bank') else 'no'} | - | "
                         f"{r['status']} | | | | | |")
            continue
        hc = r.get("host_cmds")
        extra = (f"{hc} | {r['dispatch_share']:.3f} | {r['dispatch_ceiling']:.3f}" if hc
                 else "- | - | -")
        lines.append(f"| {r['model']} | {r['system']} | {r['wide_inp']} | "
                     f"{'yes' if r.get('dimc_all_bank') else 'no'} | {r['batch']} | "
                     f"{r['mac_utilisation']:.4f} | {r['tokens_per_s']:.1f} "
                     f"({r['pim_tokens_per_s']:.0f}) | {r['stage_cycles'] or '-'} | {extra} |")
    lines += ["", "dimc-whatif: the whole step on DIMC channels holding the KV cache; dimc (c): "
              "weight GEMVs on the DIMC rank, attention max(macros, KV stream over the plain "
              "DRAM pins), so wide_inp cannot move it.  Dispatcher ceiling = busy bank-cycles / "
              "(host commands x banks); single-bank MACs (X = 8 cycles, 16 banks) cap it at "
              "0.5 however few WR_INPs there are, so the last row also lets the DIMC rank "
              "use the policy's all-bank MACs (one command, 16 banks; it pads the weight "
              "layout to 16-bank stripes, which the what-if's capacity absorbs)."]
    return "\n".join(lines)


def add_arguments(ap, common: bool = True) -> None:
    """Options of ``bench.dispatch``; ``common``: also ``--seed`` and ``--out``."""
    from cimphony.cli import positive_int
    if common:
        results.add_common(ap, DEFAULT_SEED, "the request mix")
    ap.add_argument("--dispatch-context", type=positive_int, default=1 << 20, metavar="C",
                    help="maximum context of the points (default: 1048576 = 1M tokens)")
    ap.add_argument("--dispatch-wide-inp", type=positive_int, default=32, metavar="K",
                    help="tiles per multicast WR_INP beat of the 'after' rows (1..channels "
                         "per rank; default 32, every channel of a CENT-sized rank)")


def outputs(args) -> list[Path]:
    """Files :func:`run` writes for ``args``."""
    return results.outputs(args.out, NAME)


def run(args) -> int:
    """Run the bench; 0, or 2 for a wide_inp or context the points cannot take."""
    opt = {"wide_inp": "--dispatch-wide-inp", "context": "--dispatch-context"}
    try:
        check(args.dispatch_context, args.dispatch_wide_inp, args.seed)
    except ValueError as e:
        name = str(e).split("=", 1)[0].strip()
        where = f"argument {opt[name]}: " if name in opt else ""
        print(f"bench dispatch: error: {where}{e}", file=sys.stderr)
        return 2
    res = measure(args.dispatch_context, args.dispatch_wide_inp, args.seed)
    jpath, mpath = outputs(args)
    results.write_json(jpath, res)
    results.write_md(mpath, render(res))
    print(f"[bench dispatch] wrote {jpath} and {mpath}")
    return 0


def main(argv=None) -> int:
    return results.main(argv, "python -m bench.dispatch", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())
