"""``make demo``: a real LLM workload through the Verilated macro, in lockstep with the model.

Runs the layer-0 Q, K and V projections of all-MiniLM-L6-v2 (real weights, a real tokenised
sentence, INT8) and a Llama-3.1-8B-shaped attention-score GEMV on the default macro
(n_in = n_out = 64, 8-bit weights and inputs) under cocotb, comparing RTL and golden model every
cycle; then checks the decoded integers against exact numpy and the dequantised result against
float32.  Writes ``build/demo/summary.json`` and prints a short table.

Usage::

    cimphony demo [--sentence TEXT] [--ready-p P] [--gap G] [--seed N] [--out DIR]

(``python -m tb.demo`` takes the same options.)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spec.params import MacroParams
from workloads.gemm import MINILM_SENTENCE, llama_attn_scores, minilm_qkv
from tb.build import Target, build, describe_mismatch, run_lockstep

OUT = Path("build/demo")


def run_workload_rtl(params: MacroParams, workloads, progress=True) -> tuple[list[dict], dict]:
    """Run every GEMM of ``workloads`` through the RTL; returns per-GEMM rows and totals."""
    jobs = [(w, name, g) for w in workloads for name, g in w.gemms.items()]
    rows = []
    for w, name, g in tqdm(jobs, desc="RTL lockstep", unit="gemm", disable=not progress):
        res = run_lockstep(params, g.plan.stimulus, label=f"demo_{w.name}_{name}")
        row = dict(workload=w.name, gemm=name, ok=res["ok"], cycles=res["cycles"],
                   wall_s=round(res["wall_s"], 3), cycles_per_s=round(res["cycles_per_s"]),
                   useful_macs=g.plan.useful_macs, seed=res["seed"])
        if res["ok"]:
            y = g.plan.decode(res["outputs"])
            row["bit_exact_vs_numpy"] = bool(np.array_equal(y, g.plan.expected))
            row["cosine_vs_float"] = round(g.cosine(y), 6)
        else:
            row["mismatch"] = describe_mismatch(res)
            row["bit_exact_vs_numpy"] = False
            row["cosine_vs_float"] = None
        rows.append(row)
    return rows


def sentence_arg(text: str) -> str:
    """argparse type of ``--sentence``: non-empty, and no longer than the MiniLM tokeniser's
    ``max_length`` (128 tokens, [CLS] and [SEP] included), which would otherwise cut it."""
    from tokenizers import Tokenizer

    from workloads.minilm import tokenizer
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a non-empty sentence, got {text!r}")
    tok = tokenizer()
    limit = (tok.truncation or {}).get("max_length")
    full = Tokenizer.from_str(tok.to_str())
    full.no_truncation()
    n = len(full.encode(text).ids)
    if limit is not None and n > limit:
        short = text if len(text) <= 60 else text[:57] + "..."
        raise argparse.ArgumentTypeError(f"{short!r} is {n} tokens, more than the {limit} "
                                         "the MiniLM tokeniser supports")
    return text


def add_arguments(ap) -> None:
    """Options of ``cimphony demo`` / ``python -m tb.demo`` (each checked by its type)."""
    from cimphony.cli import add_seed_and_out, nonneg_int, probability
    ap.add_argument("--sentence", type=sentence_arg, metavar="TEXT", default=MINILM_SENTENCE,
                    help="text whose MiniLM tokens are the Q/K/V inputs (at most 128 tokens)")
    ap.add_argument("--ready-p", type=probability, metavar="P", default=1.0,
                    help="res.ready duty in (0, 1] (backpressure)")
    ap.add_argument("--gap", type=nonneg_int, metavar="N", default=0,
                    help="max random idle gap per beat")
    add_seed_and_out(ap, seed=1, out=OUT, what="seed of gaps and ready pattern")
    ap.add_argument("--workload", choices=("smollm2", "minilm"), default="smollm2",
                    help="smollm2: text generated on the accelerator (tb/smollm2_demo.py); "
                         "minilm: MiniLM layer-0 QKV through the Verilated macro")
    from tb import smollm2_demo
    smollm2_demo.add_arguments(ap)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tb.demo", description=__doc__.split("\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(a) -> int:
    """Build (cached), run every GEMM in lockstep, write ``<out>/summary.json``; 0 if all is
    bit exact and the MiniLM cosine is >= 0.999."""
    if getattr(a, "workload", "minilm") == "smollm2":
        from tb import smollm2_demo
        return smollm2_demo.run(a)
    out = Path(a.out)
    p = MacroParams()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"[demo] macro {p.tag}: building the Verilated lockstep wrapper (cached)...", flush=True)
    tb0 = time.time()
    build(Target("macro", p))
    build_s = time.time() - tb0
    kw = dict(stim_seed=a.seed, wr_gap=a.gap, req_gap=a.gap, ready_p=a.ready_p)
    wls = [minilm_qkv(a.sentence, p, **kw), llama_attn_scores(p, **kw)]
    rows = run_workload_rtl(p, wls)
    wall = time.time() - t0
    cycles = sum(r["cycles"] for r in rows)
    macs = sum(r["useful_macs"] for r in rows)
    sim_wall = sum(r["wall_s"] for r in rows)
    peak_per_cycle = p.n_in * p.n_out / p.x_bits
    minilm_cos = [r["cosine_vs_float"] for r in rows if r["workload"] == "minilm_qkv"]
    summary = dict(
        macro=p.tag, params=p.__dict__, sentence=a.sentence, tokens=wls[0].info["tokens"],
        mismatches=sum(not r["ok"] for r in rows),
        bit_exact=all(r["bit_exact_vs_numpy"] for r in rows),
        cycles=cycles, macs=macs,
        mac_utilisation=round(macs / (peak_per_cycle * cycles), 4),
        cosine_vs_float=min(c for c in minilm_cos) if None not in minilm_cos else None,
        wall_s=round(wall, 2), build_s=round(build_s, 1),
        cycles_per_s=round(cycles / sim_wall) if sim_wall else 0,
        seed=a.seed, ready_p=a.ready_p, gap=a.gap, runs=rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print()
    print(f"{'workload':<18}{'gemm':<8}{'cycles':>8}{'MACs':>11}{'util':>7}{'cyc/s':>8}"
          f"{'exact':>7}{'cosine':>10}")
    for r in rows:
        util = r["useful_macs"] / (peak_per_cycle * r["cycles"])
        print(f"{r['workload']:<18}{r['gemm']:<8}{r['cycles']:>8}{r['useful_macs']:>11}"
              f"{util:>7.3f}{r['cycles_per_s']:>8}{str(r['bit_exact_vs_numpy']):>7}"
              f"{r['cosine_vs_float'] if r['cosine_vs_float'] is not None else '-':>10}")
        if not r["ok"]:
            print("   ", r["mismatch"])
    print(f"\nmismatches {summary['mismatches']}, cycles {cycles}, MAC utilisation "
          f"{summary['mac_utilisation']}, MiniLM QKV cosine vs float32 {summary['cosine_vs_float']}, "
          f"{summary['cycles_per_s']} cycles/s in lockstep, {wall:.1f} s total "
          f"-> {out / 'summary.json'}")
    ok = summary["mismatches"] == 0 and summary["bit_exact"] and \
        (summary["cosine_vs_float"] or 0) >= 0.999
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
