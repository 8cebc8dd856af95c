"""``cimphony perf point``: one point from the command line (perf/point.py), as a table or JSON.

Exit status: 0 the point ran; 1 it does not fit (the message says why); 2 a bad argument,
named with its value, before any slow work.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys

from compiler import llm as L
from perf import area as A
from perf import energy as E
from perf.grid import fmt_ctx
from perf.host import CENT_CXL, CENT_HOST
from perf.point import resolve, run_point
from perf.presets import POLICIES, SYSTEMS

__all__ = ["add_arguments", "run", "config_arg", "constants"]

PROG = "cimphony perf point"
_OPT = {"channels": "--channels", "tp": "--tp", "pp": "--pp", "batch": "--batch",
        "context": "--context", "dimc_mm2": "--dimc-mm2", "dimc_channels": "--dimc-channels",
        "seed": "--seed", "system": "--system", "policy": "--policy", "model": "--config",
        "wide_inp": "--wide-inp"}


def config_arg(text: str) -> str:
    """argparse type: a shipped model name or an HF ``config.json`` path (or its directory)
    that parses (Llama-2 configs without ``head_dim`` included)."""
    if text in L.MODELS:
        return text
    try:
        L.ModelConfig.from_hf(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a model of "
                                         f"{', '.join(L.MODELS)} nor a readable HF config: "
                                         f"{e}") from None
    return text


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return v


def add_arguments(ap) -> None:
    """Options of ``cimphony perf point`` (dests prefixed ``pt_``, apart from the grid's)."""
    from cimphony.cli import nonneg_int, positive_int
    ap.add_argument("--config", dest="pt_config", type=config_arg, metavar="PATH_OR_NAME",
                    default="llama-3.1-8b",
                    help=f"HF config.json (or its folder), or one of {', '.join(L.MODELS)}")
    ap.add_argument("--system", dest="pt_system", choices=SYSTEMS, default="aim",
                    help="aim: CENT-class PIM-only (policy default baseline); pimphony: AiM + "
                         "PIMphony's techniques (default all); dimc: DIMC under an SRAM area "
                         "budget, KV in DRAM; hybrid: DIMC weights + DRAM-PIM attention; "
                         "dimc-whatif: 512 MiB computable SRAM per channel")
    ap.add_argument("--channels", dest="pt_channels", type=positive_int, metavar="N",
                    help="16-bank DRAM(-PIM) channels of the whole system (default: 256 for "
                         "LLM-7B, 1024 for LLM-72B, PIMphony's 128/512 GB); dimc and hybrid add "
                         "--dimc-channels DIMC channels")
    ap.add_argument("--tp", dest="pt_tp", type=positive_int, metavar="T",
                    help="tensor-parallel ranks per layer (default: gcd(ranks, KV heads), "
                         "ranks = channels / 32, a CENT device per rank)")
    ap.add_argument("--pp", dest="pt_pp", type=positive_int, metavar="P",
                    help="pipeline stages (default: ranks / tp); each rank holds channels / "
                         "(T P) channels")
    ap.add_argument("--context", dest="pt_context", type=positive_int, metavar="C",
                    default=4096, help="maximum context (tokens); requests drawn from the "
                                       "long-context mixes up to C (workloads/mix.py)")
    ap.add_argument("--batch", dest="pt_batch", type=positive_int, metavar="B",
                    help="resident requests (default: the largest batch that fits)")
    ap.add_argument("--policy", dest="pt_policy", choices=list(POLICIES),
                    help="baseline, each technique alone (tcp, dcs, dpa) or all (default: the "
                         "system's)")
    ap.add_argument("--seed", dest="pt_seed", type=nonneg_int, metavar="N", default=1,
                    help="request-mix seed")
    ap.add_argument("--dimc-mm2", dest="pt_dimc_mm2", type=positive_float, metavar="MM2",
                    help="dimc: SRAM macro area budget of the system (mm^2; default: the area "
                         "of the model's INT8 weights)")
    ap.add_argument("--dimc-channels", dest="pt_dimc_channels", type=positive_int,
                    metavar="N", help="dimc, hybrid: DIMC channels (default: as many as "
                                      "--channels)")
    ap.add_argument("--wide-inp", dest="pt_wide_inp", type=positive_int, metavar="K",
                    default=1, help="tiles per multicast WR_INP host beat of every rank's "
                                    "module (ModuleParams.wide_inp, 1..channels per rank; "
                                    "default 1: one WR_INP per channel tile)")
    ap.add_argument("--json", dest="pt_json", action="store_true",
                    help="print the point as JSON (with every constant and its source)")


def _kwargs(a) -> dict:
    return dict(model=a.pt_config, system=a.pt_system, policy=a.pt_policy,
                context=a.pt_context, channels=a.pt_channels, tp=a.pt_tp, pp=a.pt_pp,
                batch=a.pt_batch, seed=a.pt_seed, dimc_mm2=a.pt_dimc_mm2,
                dimc_channels=a.pt_dimc_channels, wide_inp=a.pt_wide_inp)


def constants() -> dict:
    """Every constant behind a point: {group: {name: {value, unit, source}}}."""
    return {"energy": E.sources(),
            "host": {k: vars(c) for k, c in CENT_HOST.sources().items()},
            "link": {k: vars(c) for k, c in CENT_CXL.sources().items()},
            "area": {k: vars(c) for k, c in A.CONSTANTS.items()}
            | {f"macro {m.name}": {"value": m.bits_per_mm2, "unit": "bit/mm^2",
                                   "source": m.source} for m in (A.TSMC_5NM,)}}


def _bad(msg: str) -> int:
    m = re.match(r"\s*(\w+)=", msg)
    opt = _OPT.get(m.group(1)) if m else None
    where = f"argument {opt}: " if opt else ""
    print(f"{PROG}: error: {where}{msg}", file=sys.stderr)
    return 2


def run(a) -> int:
    """Run one point; print it (table or ``--json``); 0, 1 (does not fit) or 2 (bad
    argument combination)."""
    from cimphony.cli import print_table
    kw = _kwargs(a)
    try:
        resolve(**{("policy_name" if k == "policy" else k): v for k, v in kw.items()})
    except ValueError as e:
        return _bad(str(e))
    row = run_point(**kw)
    fits = row["status"] == "ok"
    if a.pt_json:
        doc = dict(row, constants=constants(), omitted=E.OMITTED)
        print(json.dumps(doc, indent=1, default=float))
    elif fits:
        e = row["energy"]
        print_table(("quantity", "value"), [
            ("model / system / policy", f"{row['model']} / {row['system']} / {row['policy']}"),
            ("context, batch (fit)", f"{fmt_ctx(row['ctx'])}, {row['batch']} "
                                     f"({row['batch_fit']})"),
            ("channels, ranks (tp x pp)", f"{row['channels']}, {row['ranks']} ({row['tp']} x "
                                          f"{row['pp']})"),
            ("wide_inp (tiles per WR_INP beat)", f"{row['wide_inp']}"),
            ("pim_s / host_s / link_s", f"{row['pim_s']:.6g} / {row['host_s']:.6g} / "
                                        f"{row['link_s']:.6g}"),
            ("token_s", f"{row['token_s']:.6g}"),
            ("tokens_per_s (PIM-only)", f"{row['tokens_per_s']:.6g} "
                                        f"({row['pim_tokens_per_s']:.6g})"),
            ("energy J/token (static + dynamic)", f"{e['total_j']:.4g} ({e['static_j']:.4g} + "
                                                  f"{e['dynamic_j']:.4g})"),
            ("MAC / capacity utilisation", f"{row['mac_utilisation']:.4f} / "
                                           f"{row['capacity_utilisation']:.4f}"),
            ("mm^2 sourced (not sourced)", f"{row['mm2']:.1f} "
                                           f"({', '.join(row['mm2_unsourced']) or '-'})"),
            ("Corsair cards", f"{row['corsair_cards']:.3f}")])
    if not fits:
        print(f"{PROG}: {row['status']}", file=sys.stderr)
        return 1
    return 0
