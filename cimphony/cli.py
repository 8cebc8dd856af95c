"""The ``cimphony`` command: one parser tree over the project's entry points.

    cimphony verilog --out DIR [--lint] [--top NAME ...] [--set component.key=value ...]
    cimphony demo    [--sentence TEXT] [--ready-p P] [--gap G] [--seed N] [--out DIR]
    cimphony bench   [--only NAME ...] [--seed N] [--out DIR] [bench options]
                     (NAME of BENCHES: macro, controller, hier, numerics, softmax, ...)
    cimphony perf    [--systems NAME ...] [--contexts N ...] [--jobs N | --scheduler ADDR]
                     ... [--out DIR]                        (the grid, on Dask)
    cimphony perf point --config PATH_OR_NAME --system NAME --channels N --tp T --pp P
                     --context C [--batch B] [--policy NAME] [--json]   (one point)
    cimphony docs    [--src DIR] [--out DIR]
    cimphony regress [--configs NAME[:FAULT] ...] [--seeds S|A-B ...] [--commands N]
                     [--workers N | --scheduler ADDR] [--coverage] [--out DIR]
                     (lockstep runs, seeds x configurations, on Dask: verif/regress.py)

Every option is checked by its argparse type (or action) while the command line is parsed, so
a bad value exits with status 2 and a message naming the option and the value before any slow
work (elaboration, a Verilator build, a worker pool).  Defaults read from the environment
(``SEED``, ``JOBS``; empty means unset) are checked the same way and the message names the
variable.  A value given twice in a list option (``perf --contexts 4096 4096``) is an error,
not a point run twice.  Each subcommand prints where it wrote its outputs and ends with a
summary table.

This module also holds the argparse types the subcommands' modules share (``positive_int``,
``nonneg_int``, ``probability``, ``out_dir``, ``in_dir``, ``env_default``, ``Unique``), their
``--seed`` / ``--out`` pair (:func:`add_seed_and_out`) and :func:`print_table`.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser", "positive_int", "nonneg_int", "probability", "out_dir",
           "in_dir", "env_default", "EnvDefault", "Unique", "add_seed_and_out", "print_table",
           "TOPS", "BENCHES", "bench_modules"]

REPO = Path(__file__).resolve().parents[1]
#: exportable top-level components (``cimphony verilog --top``), in export order
TOPS = ("dimc_macro", "pim_channel", "pim_module")


# --- argparse types shared by the subcommands --------------------------------------------------
class EnvDefault(str):
    """A string default taken from the environment variable ``env`` (None: the built-in
    fallback).  argparse converts string defaults with the option's ``type``, which then names
    the variable in its error (``JOBS=abc`` -> ``argument --jobs: ... 'abc' (from JOBS)``)."""
    env: str | None = None


def env_default(var: str, fallback) -> EnvDefault | None:
    """Default of an option: ``$var`` if set and not empty, else ``fallback`` (None stays
    None)."""
    value = os.environ.get(var)
    if not value:
        return None if fallback is None else EnvDefault(str(fallback))
    s = EnvDefault(value)
    s.env = var
    return s


def _source(text: str) -> str:
    env = getattr(text, "env", None)
    return f"{str(text)!r} (from the environment variable {env})" if env else repr(str(text))


def _int_type(lo: int, what: str):
    def conv(text: str) -> int:
        if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text) or int(text) < lo:
            raise argparse.ArgumentTypeError(f"must be {what}, got {_source(text)}")
        return int(text)
    conv.__name__ = what
    return conv


#: argparse type: a decimal integer >= 1
positive_int = _int_type(1, "a positive integer")
#: argparse type: a decimal integer >= 0
nonneg_int = _int_type(0, "an integer >= 0")


def probability(text: str) -> float:
    """argparse type: a float in (0, 1]."""
    try:
        p = float(text)
    except ValueError:
        p = float("nan")
    if not 0.0 < p <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {_source(text)}")
    return p


def out_dir(text: str) -> Path:
    """argparse type: an output directory (created later); not an existing file, and not
    below one."""
    p = Path(text)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "" if q == p else f" ({q} is a file)"
                raise argparse.ArgumentTypeError(f"{text!r} is not a directory{where}")
            break
    return p


def in_dir(text: str) -> Path:
    """argparse type: an existing directory (an input)."""
    p = Path(text)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return p


class Unique(argparse.Action):
    """``nargs="+"`` list option in which a value given twice is an error (it would run
    twice)."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen: list = []
        for v in values:
            if v in seen:
                raise argparse.ArgumentError(self, f"{v!r} given twice (each value runs once; "
                                                   "drop the duplicate)")
            seen.append(v)
        setattr(namespace, self.dest, seen)


def add_seed_and_out(ap, *, seed: int, out: Path, what: str) -> None:
    """``--seed N`` (``what`` it seeds; default ``$SEED``, else ``seed``) and ``--out DIR``
    (default ``out``)."""
    ap.add_argument("--seed", type=nonneg_int, metavar="N", default=env_default("SEED", seed),
                    help=f"{what} (default: $SEED, else {seed})")
    ap.add_argument("--out", type=out_dir, metavar="DIR", default=out, help="output directory")


def print_table(headers, rows, file=None) -> None:
    """Print ``rows`` (sequences of cells, like ``headers``) as an aligned text table."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r]
                                           for r in rows]
    for r in cells:
        if len(r) != len(headers):
            raise ValueError(f"print_table: row {r} has {len(r)} cells, expected {len(headers)}")
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "  ".join("-" * n for n in w)
    out = [line, "  ".join(c.ljust(n) for c, n in zip(cells[0], w, strict=True)), line]
    out += ["  ".join(c.ljust(n) for c, n in zip(r, w, strict=True)) for r in cells[1:]]
    print("\n".join(out + [line]), file=file or sys.stdout, flush=True)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` unless the help already says it or there is nothing to say."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if "default" in text or d is None or d is False or d == [] or d == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def _progress(it, **kw):
    from tqdm import tqdm
    return tqdm(it, file=sys.stderr, **kw)


# --- verilog ------------------------------------------------------------------------------------
class _SetAction(argparse.Action):
    """Repeatable ``--set``: after each item, every item so far is merged (spec.overrides) and
    the params are built, so a bad key, value, conflict or params constraint exits 2 here."""

    def __call__(self, parser, namespace, value, option_string=None):
        from spec.overrides import build_params, parse_set
        items = [*(getattr(namespace, self.dest) or []), value]
        try:
            params = build_params(parse_set(items))
        except ValueError as e:
            parser.error(str(e))
        setattr(namespace, self.dest, items)
        namespace.params = params


def _add_verilog(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", type=out_dir, metavar="DIR", default=Path("build/verilog"),
                    help="output directory")
    ap.add_argument("--lint", action="store_true",
                    help="lint each file with verilator --lint-only -Wall (hdl/waivers.vlt); "
                         "the exit status is 1 if a lint fails")
    ap.add_argument("--top", nargs="+", action="extend", choices=TOPS, metavar="NAME",
                    help=f"top(s) to export, of {', '.join(TOPS)} (default: all)")
    ap.add_argument("--set", action=_SetAction, default=[], metavar="COMPONENT.KEY=VALUE",
                    help="parameter override, repeatable, merged per component: "
                         "macro.* (MacroParams: the macro top and every bank), channel.* "
                         "(ChannelParams: the channel top and every channel of the module), "
                         "module.* (ModuleParams); e.g. --set macro.n_in=16 --set "
                         "macro.w_bits=4 --set channel.dcs=0 --set module.n_ch=2; bools are "
                         "0/1/true/false")
    ap.set_defaults(params=None, func=_run_verilog)


def _exporter():
    """``hdl.export.export`` (imported here: elaboration code is only loaded to export)."""
    from hdl.export import export
    return export


def _run_verilog(args) -> int:
    from spec.overrides import build_params, parse_set
    macro, channel, module = args.params or build_params(parse_set([]))
    tags = {"dimc_macro": macro.tag, "pim_channel": channel.tag, "pim_module": module.tag}
    tops = list(dict.fromkeys(args.top or TOPS))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    export = _exporter()
    rows, ok = [], True
    for top in _progress(tops, desc="verilog", unit="top"):
        t0 = time.monotonic()
        top_ok = export(out, tops=[top], macro=macro, channel=channel, module=module,
                        lint=args.lint)
        ok = ok and top_ok
        v = out / f"{top}.v"
        rows.append((top, tags[top], v, v.stat().st_size if v.exists() else None,
                     ("clean" if top_ok else "FAILED") if args.lint else "not run",
                     f"{time.monotonic() - t0:.1f}"))
    print()
    print_table(("top", "params", "file", "bytes", "lint", "s"), rows)
    print(f"wrote {len(tops)} top(s) (<top>.v, <top>.ports.json) to {out}/"
          + ("" if ok else "; LINT FAILED"))
    return 0 if ok else 1


# --- bench ----------------------------------------------------------------------------------
#: ``cimphony bench`` registry, in run order: (name, module, what it measures).  One line per
#: bench (a missing module is an ImportError, never skipped).  Each module has
#: ``DEFAULT_SEED``, ``add_arguments(ap, common)``, ``outputs(args)``, ``run(args)``.
BENCHES = (
    ("macro", "bench.macro", "simulation speed"),
    ("controller", "bench.controller", "controller policies, in the RTL"),
    ("hier", "bench.hier", "hierarchical export, lint and Verilator build of large modules"),
    ("numerics", "bench.numerics", "block formats: accuracy vs float and cost"),
    ("softmax", "bench.softmax", "softmax unit: accuracy and host traffic, with vs without"),
    ("allbank", "bench.allbank", "all-bank MAC: one QK^T stream single-bank, all-bank, DCS"),
    ("dram", "bench.dram", "DRAM-PIM bank: lockstep speed, 10^6 fuzzed commands, 2K/8K QK^T"),
    ("dram_module", "bench.dram_module", "DRAM-PIM module in RTL: QK^T in order / all-bank / "
                                         "DCS, Llama-3.1-8B 2K/8K"),
    ("dispatch", "bench.dispatch", "dispatcher-bound point: multicast WR_INP (wide_inp), "
                                   "perf model"),
    ("regress", "bench.regress", "10^6 fuzzed host commands per bank kind, module RTL on Dask"),
)


def bench_modules() -> dict:
    """{name: module} of every registered bench, in run order."""
    import importlib
    return {name: importlib.import_module(modname) for name, modname, _ in BENCHES}


def _add_bench(ap: argparse.ArgumentParser) -> None:
    from bench import results
    mods = bench_modules()
    what = {n: w for n, _, w in BENCHES}
    seeds = ", ".join(f"{getattr(m, 'DEFAULT_SEED', 0)} for {n}" for n, m in mods.items())
    ap.add_argument("--only", nargs="+", action=Unique, choices=tuple(mods), metavar="NAME",
                    help=f"run only these benches, of {', '.join(mods)} (default: all, in "
                         "that order)")
    ap.add_argument("--seed", type=nonneg_int, metavar="N", default=env_default("SEED", None),
                    help=f"seed of every bench (default: $SEED, else {seeds})")
    ap.add_argument("--out", type=out_dir, metavar="DIR", default=results.RESULTS_DIR,
                    help="output directory of every bench")
    for name, mod in mods.items():
        mod.add_arguments(ap.add_argument_group(f"bench {name} ({what[name]})"), common=False)
    ap.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    import copy
    rows, rc = [], 0
    for name, mod in bench_modules().items():
        if args.only and name not in args.only:
            continue
        a = copy.copy(args)
        a.seed = getattr(mod, "DEFAULT_SEED", 0) if args.seed is None else args.seed
        t0 = time.monotonic()
        r = mod.run(a)
        rc = rc or r
        rows.append((name, "ok" if r == 0 else f"FAILED ({r})", a.seed,
                     f"{time.monotonic() - t0:.0f}", ", ".join(map(str, mod.outputs(a)))))
    print()
    print_table(("bench", "status", "seed", "s", "outputs"), rows)
    return rc


# --- docs ---------------------------------------------------------------------------------
def _add_docs(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--src", type=in_dir, metavar="DIR", default=REPO / "docs" / "wavedrom",
                    help="WaveDrom JSON sources (default: the repository's docs/wavedrom)")
    ap.add_argument("--out", type=out_dir, metavar="DIR", default=Path("build/docs"),
                    help="output directory of the SVGs (default: %(default)s)")
    ap.set_defaults(func=_run_docs)


def _run_docs(args) -> int:
    if not args.src.is_dir():
        print(f"cimphony docs: error: argument --src: '{args.src}' is not a directory",
              file=sys.stderr)
        return 2
    try:
        from cimphony.docs import render
    except ImportError as e:
        print(f"cimphony docs: cannot import cimphony.docs.render: {e}", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    try:
        files = render(args.src, args.out)
    except (ImportError, RuntimeError, ValueError, OSError, subprocess.SubprocessError) as e:
        print(f"cimphony docs: {e}", file=sys.stderr)
        return 1
    print_table(("diagram", "file", "bytes"),
                [(Path(f).stem, f, Path(f).stat().st_size) for f in files])
    print(f"wrote {len(files)} SVG(s) to {args.out}/ ({time.monotonic() - t0:.1f} s)")
    return 0


# --- the tree ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``cimphony`` parser: one subparser per subcommand, each with ``func(args) -> int``."""
    from perf import report
    from tb import demo
    from cimphony import generate
    from cimphony import verify
    from verif import regress
    ap = argparse.ArgumentParser(prog="cimphony", description=(
        "cimphony: DIMC / DRAM-PIM accelerator for LLM inference (RTL, golden models, "
        "lockstep benches, performance model)."),
        epilog="`cimphony COMMAND --help` shows a command's options.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(title="commands", metavar="COMMAND", required=True)
    fmt = _HelpFormatter
    for name, add, help_ in (
            ("verilog", _add_verilog, "export the RTL tops to Verilog (+ port maps), optionally "
                                      "linted"),
            ("demo", demo.add_arguments, "MiniLM layer-0 QKV through the Verilated macro in "
                                         "lockstep with the golden model"),
            ("bench", _add_bench, "measurements: simulation speed, controller policies, large "
                                  "modules, block-format numerics, softmax unit"),
            ("perf", report.add_arguments, "system performance model, 4K..1M tokens, on "
                                           "Dask; build/perf/report.md ('perf point': one "
                                           "point)"),
            ("docs", _add_docs, "render the WaveDrom timing diagrams to SVG"),
            ("generate", generate.add_arguments, "SmolLM2-135M generates text on the accelerator"),
            ("verify", verify.add_arguments, "coverage, formal proofs, X checks, area proxy"),
            ("regress", regress.add_arguments, "lockstep regressions (seeds x configurations) "
                                               "on Dask; build/regress/regress.json")):
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=fmt)
        add(p)
        if name == "demo":
            p.set_defaults(func=demo.run)
        elif name == "perf":
            p.set_defaults(func=report.run)
    return ap


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("cimphony")
    except PackageNotFoundError:                                     # pragma: no cover
        return "(not installed)"


def main(argv=None) -> int:
    """Entry point of the ``cimphony`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("cimphony: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
