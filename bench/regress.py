"""10^6 random and malformed host commands per bank kind through the module RTL in lockstep,
spread over Dask (``cimphony regress``, verif/regress.py).

    python -m bench.regress [--regress-commands N] [--regress-workers W] [--seed S] [--out DIR]

Runs :func:`verif.regress.bench_bank_kinds`: for each bank kind ("dimc": DIMC macros, "dram":
DRAM-PIM banks, docs/dram_channel.md) its module-level configurations x 8 seeds, N commands
per kind in total, with random backpressure on every stream, host ready, and resets in
mid-stream; every output every cycle against the golden model.  Writes
``<out>/regress/regress.json`` (every run, the command that reproduces each mismatch) and
``<out>/regress.{json,md}`` (per bank kind: commands, cycles, runs, mismatches, cycles/s).
"""
from __future__ import annotations

import sys
from pathlib import Path

from bench import results

DEFAULT_SEED = 1


def add_arguments(ap, common: bool = True) -> None:
    """Options of ``bench.regress``; ``common``: also ``--seed`` and ``--out``."""
    from cimphony.cli import positive_int
    if common:
        results.add_common(ap, DEFAULT_SEED, "first of the 8 seeds")
    ap.add_argument("--regress-commands", type=positive_int, metavar="N", default=1_000_000,
                    help="host commands per bank kind (default 10^6)")
    ap.add_argument("--regress-workers", type=positive_int, metavar="W", default=2,
                    help="Dask workers of the local cluster (default 2)")


def outputs(args) -> list[Path]:
    return results.outputs(args.out, "regress")


def main(argv=None) -> int:
    return results.main(argv, "python -m bench.regress", __doc__, add_arguments, run)


def render(doc: dict) -> str:
    lines = ["# Lockstep regressions per bank kind (RTL vs golden model, Dask)", "",
             "| bank kind | configurations | runs | commands | cycles | cycles/s | "
             "mismatching runs |", "|---|---|---:|---:|---:|---:|---:|"]
    for k, r in doc["per_kind"].items():
        lines.append(f"| {k} | {', '.join(r['configs'])} | {r['runs']} | {r['commands']:,} | "
                     f"{r['cycles']:,} | {r['cycles_per_s']:,} | {r['mismatches']} |")
    lines += ["", "Every run: random and malformed host commands, random valid gaps and out "
                  "ready, host ready backpressure, some with a reset in mid-stream; the full "
                  "list, with the command reproducing each mismatch, is in "
                  "regress/regress.json."]
    return "\n".join(lines)


def run(args) -> int:
    from verif.regress import bench_bank_kinds
    doc = bench_bank_kinds(args.regress_commands, seeds=range(args.seed, args.seed + 8),
                           workers=args.regress_workers, out=Path(args.out) / "regress")
    res = {"per_kind": doc["per_kind"], "rc": doc["rc"], "seeds": [args.seed, args.seed + 7]}
    jpath, mpath = outputs(args)
    results.write_json(jpath, res)
    results.write_md(mpath, render(res))
    print(f"[bench regress] wrote {jpath} and {mpath}")
    return doc["rc"]


if __name__ == "__main__":
    sys.exit(main())
