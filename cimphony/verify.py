"""``cimphony verify {coverage,formal,xcheck,synth}``: the verification closure (issue 14).

    cimphony verify coverage [--out DIR] [--seed N] [--scale F] [--only RUN ...] [--no-code]
    cimphony verify formal   [--out DIR] [--only PROOF ...] [--timeout S]
    cimphony verify xcheck   [--out DIR] [--only CHECK ...] [--cycles N] [--seed N]
    cimphony verify synth    [--out DIR] [--macro K=V,... ...] [--full] [--no-sta] [--no-plots]

Each writes JSON into its output directory (``build/coverage``, ``build/formal``,
``build/xcheck``, ``build/area``), prints a table and exits 1 when a check fails (a proof
not as expected, an X on an output, a lockstep mismatch, an exclusion that was hit); a tool
that is not installed is exit 1 with the install command.  ``docs/verification.md``
explains the reports.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from cimphony.cli import (Unique, env_default, nonneg_int, out_dir, positive_int,
                          print_table)

__all__ = ["add_arguments", "run"]


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def _env_flag(var: str) -> bool:
    """A boolean default from ``$var`` (set and not ``0``)."""
    return os.environ.get(var, "") not in ("", "0")


def _macro_spec(text: str):
    """argparse type: ``n_in=16,n_out=8,...`` -> MacroParams (ValueError -> exit 2)."""
    from spec.params import MacroParams
    kw = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        k, eq, v = item.partition("=")
        if not eq or not v.strip().lstrip("-").isdigit():
            raise argparse.ArgumentTypeError(f"{item!r} in {text!r} is not KEY=INT")
        kw[k.strip()] = int(v)
    try:
        return MacroParams(**kw)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _names(kind: str) -> list[str]:
    if kind == "coverage":
        from verif.suite import runs
        return [r.name for r in runs()]
    if kind == "formal":
        from verif.formal import PROOFS
        return [p.name for p in PROOFS]
    from verif.xcheck import STANDARD
    return list(STANDARD)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The ``verify`` subcommands."""
    sub = ap.add_subparsers(title="checks", metavar="CHECK", required=True)
    fmt = ap.formatter_class
    c = sub.add_parser("coverage", formatter_class=fmt,
                       help="line/branch/toggle coverage of the lockstep regressions and "
                            "functional coverage; build/coverage/")
    c.add_argument("--out", type=out_dir, metavar="DIR", default=Path("build/coverage"))
    c.add_argument("--seed", type=nonneg_int, metavar="N", default=env_default("SEED", 1))
    c.add_argument("--scale", type=_positive_float, metavar="F", default=1.0,
                   help="multiplies every run's command count")
    c.add_argument("--only", nargs="+", action=Unique, metavar="RUN", choices=_names(
        "coverage"), help="runs to include (default: all)")
    c.add_argument("--no-code", action="store_true",
                   help="functional coverage only (golden models, no Verilator)")
    c.set_defaults(func=_coverage)
    f = sub.add_parser("formal", formatter_class=fmt,
                       help="SymbiYosys proofs of the macro and channel properties; "
                            "build/formal/formal.json")
    f.add_argument("--out", type=out_dir, metavar="DIR", default=Path("build/formal"))
    f.add_argument("--only", nargs="+", action=Unique, metavar="PROOF",
                   choices=_names("formal"), help="proofs to run (default: all)")
    f.add_argument("--timeout", type=positive_int, metavar="S", default=600,
                   help="seconds per proof")
    f.set_defaults(func=_formal)
    x = sub.add_parser("xcheck", formatter_class=fmt,
                       help="4-state runs on Icarus: no x/z on any output after reset; "
                            "build/xcheck/xcheck.json")
    x.add_argument("--out", type=out_dir, metavar="DIR", default=Path("build/xcheck"))
    x.add_argument("--only", nargs="+", action=Unique, metavar="CHECK",
                   choices=_names("xcheck"), help="checks to run (default: all)")
    x.add_argument("--cycles", type=positive_int, metavar="N", default=400)
    x.add_argument("--seed", type=nonneg_int, metavar="N", default=env_default("SEED", 1))
    x.set_defaults(func=_xcheck)
    s = sub.add_parser("synth", formatter_class=fmt,
                       help="area/timing proxy: yosys to OSU 0.18 um cells + OpenSTA; "
                            "build/area/*.json")
    s.add_argument("--out", type=out_dir, metavar="DIR", default=Path("build/area"))
    s.add_argument("--macro", nargs="+", action=Unique, type=_macro_spec, metavar="K=V,...",
                   help="only these macro configurations (MacroParams fields), e.g. "
                        "n_in=16,n_out=16,w_bits=8 (default: the sweep of verif/synth.py)")
    s.add_argument("--full", action="store_true", default=_env_flag("FULL"),
                   help="the larger sweep (to 64 rows/columns, 8 banks, the 16x16 w8x8 macro "
                        "buffered and unbuffered; about 5 min); default: $FULL")
    s.add_argument("--no-sta", action="store_true", help="skip OpenSTA")
    s.add_argument("--no-plots", action="store_true", help="no PNG plots")
    s.set_defaults(func=_synth)


def run(args) -> int:
    """Entry point of ``cimphony verify``."""
    return int(args.func(args) or 0)


def _pct(d):
    return "-" if d.get("pct") is None else f"{d['pct']:.1f}% ({d['hit']}/{d['total']})"


def _coverage(a) -> int:
    from verif import coverage as C
    from verif import suite
    sel = [r for r in suite.runs(a.scale) if not a.only or r.name in a.only]
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    rc = 0
    if not a.no_code:
        t0 = time.monotonic()
        # every run writes a new, uniquely named .dat: count this invocation's only (an
        # earlier run's files in the same directory would otherwise be merged in)
        old = set((out / "dat").glob("*.dat"))
        res = suite.run_code_coverage(sel, out, seed=a.seed, progress=lambda n, r: print(
            f"  {n}: {'ok' if r['ok'] else 'MISMATCH'} {r['cycles']} cycles {r['seconds']} s",
            file=sys.stderr, flush=True))
        dats = sorted(set((out / "dat").glob("*.dat")) - old)
        data = C.merge(dats)
        summ = C.write_reports(data, out, known=suite.KNOWN, meta={
            "runs": res, "seed": a.seed, "scale": a.scale, "dat_files": len(dats),
            "seconds": round(time.monotonic() - t0, 1)})
        rows = [(comp, _pct(k["line"]), _pct(k["branch"]), _pct(k["toggle"]))
                for comp, k in summ["components"].items()]
        print_table(("component", "line", "branch", "toggle"), rows)
        bad = [n for n, r in res.items() if not r["ok"]]
        if bad:
            print(f"lockstep mismatch in {', '.join(bad)}", file=sys.stderr)
            rc = 1
        print(f"wrote {out}/summary.json, {out}/coverage.info"
              + (f", {summ['files']['html']}" if summ["files"]["html"] else
                 " (no HTML: apt-get install -y lcov for genhtml)"))
    rep = suite.run_functional(sel, seed=a.seed).write(out / "functional.json")
    print_table(("cross", "bins hit", "excluded", "missing"), [
        (n, f"{r['hit']}/{r['bins']}", sum(r["excluded"].values()),
         ", ".join(r["missing"][:4]) + (" ..." if len(r["missing"]) > 4 else ""))
        for n, r in rep["crosses"].items()])
    print(f"functional coverage {rep['pct']}% of {rep['bins']} bins; wrote "
          f"{out}/functional.json")
    if rep["excluded_but_hit"]:
        print(f"excluded bins were hit (wrong exclusion): {rep['excluded_but_hit']}",
              file=sys.stderr)
        rc = 1
    return rc


def _formal(a) -> int:
    from verif import formal as F
    try:
        F.tools()
    except F.ToolMissing as e:
        print(f"cimphony verify formal: {e}", file=sys.stderr)
        return 1
    proofs = [p for p in F.PROOFS if not a.only or p.name in a.only]
    res = []
    for p in proofs:
        r = F.run_proof(p, a.out, timeout=a.timeout)
        print(f"  {p.name}: {r['status']} ({r['seconds']} s)", file=sys.stderr, flush=True)
        res.append(r)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "formal.json").write_text(json.dumps(res, indent=1) + "\n")
    print_table(("proof", "mode", "depth", "status", "expected", "ok", "s"), [
        (r["name"], r["mode"], r["depth"], r["status"], r["expect"].upper(),
         "yes" if r["ok"] else "NO", r["seconds"]) for r in res])
    print(f"wrote {a.out}/formal.json")
    return 0 if all(r["ok"] for r in res) else 1


def _xcheck(a) -> int:
    from verif import xcheck as X
    try:
        X.iverilog()
    except X.ToolMissing as e:
        print(f"cimphony verify xcheck: {e}", file=sys.stderr)
        return 1
    res = {}
    for name, fn in X.STANDARD.items():
        if a.only and name not in a.only:
            continue
        res[name] = fn(a.out / name, cycles=a.cycles, seed=a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "xcheck.json").write_text(json.dumps(res, indent=1) + "\n")
    print_table(("check", "top", "power-up", "cycles", "x/z outputs"), [
        (n, r["top"], "init" if r["init"] else "no init", r["cycles"],
         ", ".join(r["x_outputs"]) or "none") for n, r in res.items()])
    print(f"wrote {a.out}/xcheck.json")
    return 0 if all(r["ok"] for r in res.values()) else 1


def _synth(a) -> int:
    from verif import synth as S
    try:
        S.tools(need_sta=not a.no_sta)
    except S.ToolMissing as e:
        hint = "" if a.no_sta else " (--no-sta: area only, no critical path)"
        print(f"cimphony verify synth: {e}{hint}", file=sys.stderr)
        return 1
    if a.macro:
        designs, pair = [S.Design("macro", p, ("given",)) for p in a.macro], []
    else:
        designs, pair = S.sweep(a.full)
    out, sta = a.out, not a.no_sta
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    n = len(designs) + len(pair)

    def one(d, i, **kw):
        r = S.run_design(d, out, sta=sta, **kw)
        print(f"  [{i}/{n}] {r['label']}{'' if kw.get('buffer_inputs', True) else ' (unbuffered)'}"
              f": {r['cells']} cells, {r['area_um2']:.0f} um2, "
              f"{r.get('critical_path_ns', '-')} ns, {r['seconds']} s", file=sys.stderr,
              flush=True)
        return r
    results = [one(d, i) for i, d in enumerate(designs, 1)]
    by_label = {r["label"]: r for r in results}
    pairs = []
    for i, d in enumerate(pair, len(designs) + 1):
        after = by_label.get(d.label) or S.run_design(d, out, sta=sta)
        pairs.append((one(d, i, buffer_inputs=False), after))
    md = S.markdown(results, pairs)
    (out / "area.md").write_text(md)
    files = [] if a.no_plots else S.plots(results, out)
    summary = {"seconds": round(time.monotonic() - t0, 1), "full": a.full,
               "designs": [{k: v for k, v in r.items() if k != "cell_types"} for r in results],
               "fanout_pairs": [{"unbuffered": b["label"], "buffered": f["label"]}
                                for b, f in pairs],
               "published": S.published_rows(), "plots": files}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_table(("design", "cells", "flops", "area um2", "path ns", "fmax MHz",
                 "MAC/cycle/mm2"),
                [(r["label"], r["cells"], r["flops"], f"{r['area_um2']:.0f}",
                  r.get("critical_path_ns", "-"), r.get("fmax_mhz", "-"),
                  f"{r.get('macs_per_cycle_per_mm2', 0):.0f}") for r in results])
    for b, f in pairs:
        print(f"fanout fix on {f['label']}: max fanout {b['max_fanout']} -> "
              f"{f['max_fanout']}, critical path {b.get('critical_path_ns', '-')} -> "
              f"{f.get('critical_path_ns', '-')} ns")
    print(f"wrote {out}/*.json, {out}/summary.json, {out}/area.md"
          + (f", {', '.join(str(out / x) for x in files)}" if files else "")
          + f" in {summary['seconds']} s (OSU 0.18 um proxy: no placement, unloaded wires)")
    return 0
