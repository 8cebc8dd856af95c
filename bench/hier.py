"""Hierarchical Verilog at scale: export, lint, Verilator build and a lockstep smoke run of
PIM modules of C channels x B banks of the default 64x64 8-bit macro.

    cimphony bench --only hier [--sizes CxB ...] [--smoke N] [--reuse] [--seed S]
    python -m bench.hier [same options] [--out DIR]

For each size: the exported Verilog (``hdl.export.hierarchy``: one module per component) with
its size and export time, the per-module lint (``hdl.export.lint``), a fresh Verilator build
of the lockstep wrapper with ``--hierarchical`` (``tb.build.Target(hierarchical=True)``; wall
time and peak resident memory of the build process tree, from ``/usr/bin/time -v``) and a
short lockstep run of ``N`` random host commands against the golden model.  Writes
``<out>/hier.json`` and ``<out>/hier.md`` (default ``build/bench/``) and prints the table.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import results

DEFAULT_SEED = 15
TIME = Path("/usr/bin/time")


def _params(c: int, b: int):
    from spec.isa import ChannelParams, ModuleParams
    return ModuleParams(channel=ChannelParams(n_banks=b), n_ch=c)


def size(text: str) -> tuple[int, int]:
    """argparse type: ``CxB`` (channels x banks) of a module the spec allows."""
    mt = re.fullmatch(r"\s*([0-9]+)\s*[xX]\s*([0-9]+)\s*", text)
    if not mt:
        raise argparse.ArgumentTypeError(f"expected CxB (channels x banks), got {text!r}")
    c, b = int(mt.group(1)), int(mt.group(2))
    try:
        _params(c, b)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    return c, b


DEFAULT_SIZES = ((4, 4), (16, 16))


def default_sizes() -> list[tuple[int, int]]:
    """4 x 4 (the default module) and PIMphony's 16 x 16 (the spec's 16-bit ``chmask``)."""
    return list(DEFAULT_SIZES)


def add_arguments(ap, common: bool = True) -> None:
    """Options of ``bench.hier``; ``common``: also ``--seed`` and ``--out``."""
    from cimphony.cli import positive_int
    if common:
        results.add_common(ap, DEFAULT_SEED, "smoke-run seed")
    ap.add_argument("--sizes", type=size, nargs="+", metavar="CxB", default=None,
                    help="module sizes, channels x banks (default: 4x4 and 16x16)")
    ap.add_argument("--smoke", type=positive_int, metavar="N", default=200,
                    help="random host commands of the lockstep smoke run (default: 200)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse a cached build (its time is then the last full build's, "
                         "its memory unknown) instead of rebuilding")


def outputs(args) -> list[Path]:
    """Files :func:`run` writes for ``args``."""
    return results.outputs(args.out, "hier")


def main(argv=None) -> int:
    return results.main(argv, "python -m bench.hier", __doc__, add_arguments, run)


_BUILD = """
import sys
from tb.build import Target, build
from bench.hier import _params
build(Target("module", _params({c}, {b}), hierarchical=True))
"""


def _build(c: int, b: int, reuse: bool) -> dict:
    """Verilator build of the hierarchical lockstep wrapper in a child process."""
    from tb import build as B
    from tb.cache import build_seconds
    t = B.Target("module", _params(c, b), hierarchical=True)
    bdir = B.build_dir(t)
    if not reuse and bdir.exists():
        shutil.rmtree(bdir)
    cmd = [sys.executable, "-c", _BUILD.format(c=c, b=b)]
    timed = TIME.exists()
    t0 = time.monotonic()
    r = subprocess.run(([str(TIME), "-v"] if timed else []) + cmd, capture_output=True,
                       text=True)
    wall = time.monotonic() - t0
    if r.returncode:
        return {"ok": False, "error": (r.stdout + r.stderr)[-3000:], "wall_s": round(wall, 1)}
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr) if timed else None
    fresh = build_seconds(bdir)
    return {"ok": True, "wall_s": round(wall, 1), "last_full_build_s": fresh,
            "peak_rss_gib": round(int(rss.group(1)) / 2**20, 2) if rss else None,
            "reused": reuse and wall < 0.5 * (fresh or 0), "dir": str(bdir)}


def _one(c: int, b: int, args, vdir: Path) -> dict:
    from hdl import export as X
    from hdl.module import PimModule
    from model.stimulus import Beat
    from tb import build as B
    from tb.stimgen import random_host_cmds
    p = _params(c, b)
    row: dict = {"size": f"{c}x{b}", "n_ch": c, "n_banks": b, "macros": c * b, "tag": p.tag}
    t0 = time.monotonic()
    h = X.hierarchy(PimModule(p))
    row["export_s"] = round(time.monotonic() - t0, 1)
    vfile = vdir / f"pim_module_{c}x{b}.v"
    vfile.write_text(h.text)
    row.update(bytes=len(h.text), modules=[d.name for d in h.definitions], verilog=str(vfile))
    print(f"[bench hier] {c}x{b}: {vfile} {len(h.text):,} bytes, "
          f"{len(h.definitions)} modules, export {row['export_s']} s", flush=True)
    t0 = time.monotonic()
    r = X.lint(vfile)
    row["lint_s"], row["lint_ok"] = round(time.monotonic() - t0, 1), r.returncode == 0
    if not row["lint_ok"]:
        row["lint_log"] = (r.stdout + r.stderr)[-3000:]
    print(f"[bench hier] {c}x{b}: lint {'clean' if row['lint_ok'] else 'FAILED'} "
          f"({row['lint_s']} s); Verilator build (may take minutes) ...", flush=True)
    row["build"] = _build(c, b, args.reuse)
    print(f"[bench hier] {c}x{b}: build {row['build']}", flush=True)
    if row["build"]["ok"]:
        cmds = random_host_cmds(p, args.seed, args.smoke)
        res = B.run_job(B.Target("module", p, hierarchical=True),
                        [[Beat(w, g) for w, g in cmds]], seed=args.seed, label="bench_hier")
        row["smoke"] = {"ok": res["ok"], "commands": len(cmds), "cycles": res["cycles"],
                        "cycles_per_s": round(res["cycles_per_s"]),
                        "mismatch": res["mismatch"]}
        print(f"[bench hier] {c}x{b}: smoke {row['smoke']}", flush=True)
    return row


def run(args) -> int:
    """Run the bench; returns 0 if every lint, build and smoke run passed."""
    sizes = args.sizes or default_sizes()
    jpath, mpath = outputs(args)
    vdir = jpath.parent / "hier"
    vdir.mkdir(parents=True, exist_ok=True)
    res = {"host": platform.node(), "cpus": os.cpu_count(), "seed": args.seed,
           "smoke_commands": args.smoke, "rows": [_one(c, b, args, vdir) for c, b in sizes]}
    results.write_json(jpath, res)
    results.write_md(mpath, render(res))
    print(f"[bench hier] wrote {jpath} and {mpath} (Verilog in {vdir}/)")
    ok = all(r["lint_ok"] and r["build"]["ok"] and r.get("smoke", {}).get("ok")
             for r in res["rows"])
    return 0 if ok else 1


def render(res: dict) -> str:
    lines = [f"# Hierarchical Verilog at scale ({res['cpus']} CPUs, smoke "
             f"{res['smoke_commands']} host commands, seed {res['seed']})", "",
             "| module | macros | Verilog bytes | modules | export s | lint s | build s | "
             "build peak GiB | smoke cycles | cycles/s | ok |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        b, s = r["build"], r.get("smoke", {})
        ok = r["lint_ok"] and b["ok"] and s.get("ok")
        lines.append(
            f"| {r['size']} | {r['macros']} | {r['bytes']:,} | {len(r['modules'])} | "
            f"{r['export_s']} | {r['lint_s']} | {b.get('wall_s', '-')} | "
            f"{b.get('peak_rss_gib') or '-'} | {s.get('cycles', '-')} | "
            f"{s.get('cycles_per_s', '-')} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
