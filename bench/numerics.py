"""Block-format numerics on real weights (issue 13): accuracy against float and cost per format.

    cimphony bench --only numerics [--numerics-formats F ...] [--numerics-layers L ...]
                   [--numerics-tokens N] [--numerics-no-e2e] [--numerics-rtl-tiles N]
                   [--numerics-area]
    python -m bench.numerics [same options] [--seed S] [--out DIR]

The study is :mod:`workloads.blockquant` (INT8 per channel, BFP16-64, MXINT8, native
W4(Q4_1)A8): per format the GEMV-output cosines against float64 on MiniLM layer 0 and on
SmolLM2 GEMVs (``--numerics-layers``), SmolLM2 teacher-forced top-1 agreement with float,
logit cosine and perplexity over ``workloads.blockquant.TEXT`` with every weight GEMV of all
30 layers in the format, and the costs: bits (bytes) per weight stored and moved, bits per
input, macro geometry and cycles, the stage's adds per block.

What runs where: every GEMV is the golden numerics of the macro (exact integer block dots)
and the block post-processing stage (:mod:`model.blockfmt`, bit-exact to
``hdl/blockfmt.py``); ``--numerics-rtl-tiles`` tiles (64 columns each) of one real SmolLM2
GEMV per block format also run through the stage RTL in amaranth.sim in lockstep with the
cycle-exact model (``tb/blockfmt_gemv.py``), their results compared with the golden
numerics.  Area: the stage synthesised with the repository's synthesis proxy
(``verif/synth.py``: Yosys + OSU 0.18 um cells) when ``--numerics-area`` is given (minutes)
or a result of it is in ``build/area/``; otherwise "not measured".

Writes ``<out>/numerics.json`` and ``<out>/numerics.md`` (default ``build/bench/``).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench import results

DEFAULT_SEED = 0          # the study is deterministic; the seed is only recorded
AREA_DIR = Path("build/area")
#: the stages synthesised for the area column: one per macro geometry the formats need
#: (a 32-row 8-bit macro executes MXINT8 and Q4_1, a 64-row one BFP16-64)
AREA_N_IN = {"bfp16": 64, "mxint8": 32, "q4_1": 32}


SMOLLM2_LAYERS = 30


def smollm2_layer(text: str) -> int:
    """argparse type: a SmolLM2-135M layer number, 0..29."""
    import argparse
    from cimphony.cli import nonneg_int
    i = nonneg_int(text)
    if i >= SMOLLM2_LAYERS:
        raise argparse.ArgumentTypeError(f"must be a layer in 0..{SMOLLM2_LAYERS - 1}, got "
                                         f"{text!r}")
    return i


def _formats():
    from workloads.blockquant import FORMATS_STUDIED
    return FORMATS_STUDIED


def add_arguments(ap, common: bool = True) -> None:
    """Options of ``bench.numerics``; ``common``: also ``--seed`` and ``--out``."""
    from cimphony.cli import Unique, nonneg_int, positive_int
    if common:
        results.add_common(ap, DEFAULT_SEED, "seed (recorded only: the study is deterministic)")
    ap.add_argument("--numerics-formats", nargs="+", action=Unique, choices=_formats(),
                    metavar="FMT", default=list(_formats()),
                    help=f"formats, of {', '.join(_formats())} (default: all)")
    ap.add_argument("--numerics-layers", nargs="+", action=Unique, type=smollm2_layer,
                    metavar="L", default=[0, 15, 29],
                    help="SmolLM2 layers whose seven GEMVs are measured (0..29)")
    ap.add_argument("--numerics-tokens", type=positive_int, metavar="N", default=128,
                    help="tokens of the text for the SmolLM2 GEMVs and teacher forcing (the "
                         "text has 103)")
    ap.add_argument("--numerics-no-e2e", action="store_true",
                    help="skip the SmolLM2 teacher-forced run (about 2 minutes)")
    ap.add_argument("--numerics-rtl-tiles", type=nonneg_int, metavar="N", default=1,
                    help="64-column tiles of SmolLM2 layer 0's q GEMV per block format "
                         "through the stage RTL (amaranth.sim, ~15 s each; 0: none)")
    ap.add_argument("--numerics-area", action="store_true",
                    help="synthesise the stage (Yosys, minutes) for the area column; "
                         "otherwise a result in build/area/ is used if there is one")


def outputs(args) -> list[Path]:
    """Files :func:`run` writes for ``args``."""
    return results.outputs(args.out, "numerics")


def main(argv=None) -> int:
    return results.main(argv, "python -m bench.numerics", __doc__, add_arguments, run)


def area_params(fmt: str):
    """The PostParams synthesised for ``fmt``'s area: a 64-column macro of the format's block
    rows, 8-bit weights (so the 32-row stage has both the MXINT8 and the Q4_1 datapath), two
    weight sets, four accumulator entries, eight lanes."""
    from spec.blockfmt import PostParams
    from spec.params import MacroParams
    return PostParams(MacroParams(n_in=AREA_N_IN[fmt], n_out=64, w_bits=8, x_bits=8,
                                  n_sets=2, n_acc=4), lanes=8)


def stage_area(fmt: str, synth: bool) -> dict | None:
    """The synthesis-proxy area of ``fmt``'s stage: synthesised now (``synth``) or read from
    ``build/area/blockfmt_stage_<tag>.json``; None if neither."""
    p = area_params(fmt)
    label = f"blockfmt_stage_{p.tag}"
    path = AREA_DIR / f"{label}.json"
    if synth:
        from hdl.blockfmt import BlockfmtStage
        from verif import synth as S
        try:
            S.tools()
        except S.ToolMissing as e:
            return {"error": str(e)}
        r = S.synth_component(BlockfmtStage(p), AREA_DIR, sta=False, label=label)
    elif path.exists():
        r = json.loads(path.read_text())
    else:
        return None
    return {"label": label, "area_um2": r.get("area_um2"), "cells": r.get("cells"),
            "flops": r.get("flops"), "source": str(path),
            "proxy": "Yosys + OSU 0.18 um standard cells (verif/synth.py), no placement; "
                     "memories as flip-flops"}


def rtl_check(fmt: str, gemvs: dict, tiles: int) -> dict:
    """``tiles`` tiles of SmolLM2 layer 0's q GEMV (the last token) through the stage RTL in
    lockstep with the cycle-exact model, compared with the golden numerics."""
    from model import blockfmt as bf
    from tb.blockfmt_gemv import stage_gemv
    from workloads import blockquant as bq
    x, w, raw = gemvs[(0, "q")]
    pw = bq.prepare(fmt, w, raw if fmt == "q4_1" else None)
    quant = bf.quantise_bfp16 if fmt == "bfp16" else bf.quantise_mxint8
    xq, xs = quant(x[-1:].astype(np.float64))
    r = stage_gemv(fmt, xq[0], xs[0], pw.codes, pw.scales, rtl=True, tiles=tiles)
    return {"gemv": "L0.q (last token)", "columns": r["columns"], "of": int(w.shape[0]),
            "stage_cycles": r["cycles"], "lockstep_cycles": r["rtl"]["compared"],
            "rtl_mismatch": r["rtl"]["mismatch"], "bit_exact_vs_numerics": r["exact"],
            "wall_s": r["wall_s"]}


def run(args) -> int:
    """Run the study; returns 0 if every RTL check is bit-exact (1 otherwise)."""
    from spec.blockfmt import FORMATS, fmt_of
    from workloads import blockquant as bq
    fmts = list(args.numerics_formats)
    layers = tuple(sorted(args.numerics_layers))
    print(f"[numerics] formats {fmts}, SmolLM2 layers {list(layers)}, {args.numerics_tokens} "
          "tokens", flush=True)
    t = {}
    t0 = time.perf_counter()
    mini = bq.gemv_study(bq.minilm_gemvs(), fmts)
    t["minilm_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    smol_g = bq.smollm2_gemvs(layers, max_tokens=args.numerics_tokens)
    smol = bq.gemv_study({f"L{i}.{g}": v for (i, g), v in smol_g.items()}, fmts)
    t["smollm2_gemvs_s"] = round(time.perf_counter() - t0, 1)
    shapes = [tuple(v[1].shape) for (i, _), v in smol_g.items() if i == layers[0]]
    res = {"host": platform.node(), "cpus": os.cpu_count(), "seed": args.seed,
           "formats": fmts, "smollm2_layers": list(layers), "tokens": args.numerics_tokens,
           "minilm_layer0": mini, "smollm2_gemvs": smol,
           "costs": {f: bq.costs(f, shapes) for f in fmts}, "timings_s": t}
    for f in fmts:
        if f != "int8":
            bf_ = FORMATS[fmt_of(f)]
            res["costs"][f].update(stage_cycles_per_block=8, stage_latency_cycles=8 + 1,
                                   scale_bits_per_column_per_set=bf_.w_scale_bits)
    if not args.numerics_no_e2e:
        t0 = time.perf_counter()
        res["smollm2_teacher_forced"] = bq.teacher_forced(formats=fmts,
                                                          max_tokens=args.numerics_tokens)
        t["teacher_forced_s"] = round(time.perf_counter() - t0, 1)
    ok = True
    if args.numerics_rtl_tiles and 0 not in layers:
        smol_g |= bq.smollm2_gemvs((0,), max_tokens=args.numerics_tokens)
    res["rtl"] = {}
    for f in fmts:
        if f != "int8" and args.numerics_rtl_tiles:
            t0 = time.perf_counter()
            print(f"[numerics] {f}: {args.numerics_rtl_tiles} tile(s) of L0.q through the "
                  "stage RTL (amaranth.sim) ...", flush=True)
            r = res["rtl"][f] = rtl_check(f, smol_g, args.numerics_rtl_tiles)
            ok = ok and r["rtl_mismatch"] is None and r["bit_exact_vs_numerics"]
            t[f"rtl_{f}_s"] = round(time.perf_counter() - t0, 1)
    res["area"] = {f: stage_area(f, args.numerics_area) for f in fmts if f != "int8"}
    jpath, mpath = outputs(args)
    results.write_json(jpath, res)
    results.write_md(mpath, render(res))
    print(f"[numerics] timings (s): {t}; wrote {jpath} and {mpath}")
    return 0 if ok else 1


_NAME = {"int8": "INT8 per-channel", "bfp16": "BFP16-64", "mxint8": "MXINT8",
         "q4_1": "W4(Q4_1)A8"}


def _mm(rows, f):
    c = [r["cosine"] for r in rows if r["fmt"] == f]
    return f"{min(c):.5f} / {np.mean(c):.5f}" if c else "-"


def render(r: dict) -> str:
    """The Markdown table of a :func:`run` result."""
    tf = r.get("smollm2_teacher_forced", {})
    n = tf.get("tokens", 0) - 1
    lines = ["# Block-format numerics on real weights (MiniLM layer 0, SmolLM2-135M)", "",
             f"SmolLM2 GEMVs: layers {r['smollm2_layers']}, all seven GEMVs, first "
             f"{r['tokens']} tokens of workloads.blockquant.TEXT; teacher-forced: every weight "
             "GEMV of all 30 layers in the format"
             + (f", {n} predictions" if tf else " (skipped)") + ".", "",
             "| format | bits/weight | bytes/weight | bits/input | macro n_in x w_bits | "
             "macro cycles/layer-token | cycles/kMAC (same SRAM) | stage adds/block | "
             "stage area um^2 | MiniLM L0 cos min / mean | SmolLM2 cos min / mean | top-1 "
             "agree | logit cos | ppl |",
             "|---|---:|---:|---:|---|---:|---|---:|---:|---|---|---:|---:|---:|"]
    if tf:
        lines.append(f"| float | 32 | 4 | 32 | | | | | | 1 | 1 | 1 | 1 | "
                     f"{tf['float']['ppl']:.3f} |")
    for f in r["formats"]:
        c = r["costs"][f]
        e = tf.get(f, {})
        a = (r.get("area") or {}).get(f)
        area = f"{a['area_um2']:,.0f}" if a and a.get("area_um2") else \
            ("n/a (INT8: no stage)" if f == "int8" else "not measured")
        agree = f"{e['top1_agree']:.3f} ({round(e['top1_agree'] * n)}/{n})" if e else "-"
        lines.append(
            f"| {_NAME[f]} | {c['w_bits_per_weight']:.3f} | {c['w_bits_per_weight'] / 8:.4f} "
            f"| {c['x_bits_per_input']:.3f} | {c['macro_n_in']} x {c['macro_w_bits']} | "
            f"{c['macro_cycles']:,} | {c['cycles_per_kmac']} ({c['cycles_per_kmac_same_sram']})"
            f" | {c['post_adds_per_block']} | {area} | {_mm(r['minilm_layer0'], f)} | "
            f"{_mm(r['smollm2_gemvs'], f)} | {agree} | "
            + (f"{e['logit_cosine']:.5f} | {e['ppl']:.3f} |" if e else "- | - |"))
    lines += ["", "Cosines: GEMV outputs against float64 x @ W.T with float weights (SmolLM2: "
              "the file's dequantised weights). Macro cycles: one token's seven GEMVs of a "
              "layer on one 64-column macro of the format's geometry (8 cycles per request = "
              "per block); in brackets per kMAC scaled to the SRAM bits of a 64-row 8-bit "
              "macro. The stage takes a beat in 8 cycles (64 columns, 8 lanes: it keeps up "
              "with one request per 8 cycles) and adds 9 cycles of latency per MAC."]
    rtl = r.get("rtl") or {}
    if rtl:
        lines += ["", "## Stage RTL on a real GEMV (amaranth.sim, lockstep with the cycle-exact "
                  "model)", "", "| format | GEMV | columns | stage cycles | lockstep cycles | "
                  "RTL vs model | result vs golden numerics |", "|---|---|---:|---:|---:|---|---|"]
        for f, x in rtl.items():
            lines.append(f"| {_NAME[f]} | {x['gemv']} | {x['columns']} of {x['of']} | "
                         f"{x['stage_cycles']} | {x['lockstep_cycles']} | "
                         f"{x['rtl_mismatch'] or '0 mismatches'} | "
                         f"{'bit-exact' if x['bit_exact_vs_numerics'] else 'DIFFERS'} |")
    areas = [a for a in (r.get("area") or {}).values() if a and a.get("area_um2")]
    lines += ["", "What is emulated: every GEMV of the table is the golden numerics of the "
              "macro and the stage (model/blockfmt.py), bit-exact to the stage RTL "
              "(tests/hdl/test_hdl_blockfmt.py, and the lockstep rows above); the stage is "
              "not yet behind the channel's banks, so no module program runs a block GEMV. "
              "INT8 per channel dequantises on the host (float64). Host ops (norms, RoPE, "
              "softmax, SwiGLU, LM head) are float32."]
    if areas:
        lines.append(f"Area: {areas[0]['proxy']}.")
    else:
        lines.append("Area of the stage: not measured (run with --numerics-area, or "
                     "`cimphony verify synth` results in build/area/).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
