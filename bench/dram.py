"""DRAM-PIM bank RTL in lockstep with its golden model: robustness, speed, long-context QK^T.

    python -m bench.dram [--commands N] [--runs K] [--tokens 2048,8192] [--no-robust]
                         [--no-qk] [--seed S] [--out DIR]

Writes ``<out>/dram.json`` and ``<out>/dram.md`` (default ``build/bench/``) and prints a
table.  Every number is from the Verilated RTL (``hdl/dram_bank.py`` through its exported
Verilog) compared with ``model/dram_bank.py`` every output every cycle by the one lockstep
loop (``tb/lockstep.py``, design ``dram_bank``, ``tb/dram.py``):

* robustness: ``--commands`` random and malformed commands (``tb.dram.random_dram_cmds``) on
  the small bank ``tb.dram.SMALL_BANK``, in ``--runs`` runs, each with a reset in mid-stream
  (refresh every 120 cycles, rows held open until requests are lost); the lockstep speed
  (cycles/s of the loop) is measured on these runs;
* long context: the Llama-3.1-8B attention QK^T shape (head_dim 128, GQA 4) at each
  ``--tokens`` count, K cache written with WRs into a GDDR6-AiM bank of tokens/16 rows, the
  column MACs of the four queries against it (``tb.dram.run_qk``): cycles, cycles/s, build
  time, bit-exact vs model (lockstep) and numpy, cosine vs float.
"""
from __future__ import annotations

import os
import platform
import random
import sys
import time
from pathlib import Path

from bench import results
from spec.dram import DramErr

DEFAULT_SEED = 2024


def _tokens(text: str) -> list[int]:
    return results.token_list(text, 16)


def add_arguments(ap, common: bool = True) -> None:
    """Options of ``bench.dram``; ``common``: also ``--seed`` and ``--out``."""
    from cimphony.cli import positive_int
    if common:
        results.add_common(ap, DEFAULT_SEED, "stimulus seed")
    ap.add_argument("--commands", type=positive_int, metavar="N", default=1_000_000,
                    help="random/malformed commands of the robustness run (total)")
    ap.add_argument("--runs", type=positive_int, metavar="K", default=4,
                    help="robustness runs the commands are split into (one reset each)")
    ap.add_argument("--tokens", type=_tokens, metavar="T,...", default=[2048, 8192],
                    help="QK^T context lengths (multiples of 16)")
    ap.add_argument("--no-robust", action="store_true", help="skip the robustness runs")
    ap.add_argument("--no-qk", action="store_true", help="skip the QK^T runs")


def outputs(args) -> list[Path]:
    """Files :func:`run` writes for ``args``."""
    return results.outputs(args.out, "dram")


def main(argv=None) -> int:
    return results.main(argv, "python -m bench.dram", __doc__, add_arguments, run)


def _reproduce(args, **extra) -> str:
    opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in extra.items())
    return f"python -m bench.dram --seed {args.seed} {opts}".strip()


def robustness(args) -> dict:
    """``args.commands`` random commands in ``args.runs`` lockstep runs on SMALL_BANK."""
    from tb.build import Target, build, describe_mismatch
    from tb.cache import build_seconds
    from tb.dram import SMALL_BANK, random_dram_cmds, run_dram_lockstep
    p = SMALL_BANK
    t0 = time.perf_counter()
    bdir = build(Target("dram_bank", p))
    out = {"params": p.tag, "build_or_reuse_s": round(time.perf_counter() - t0, 2),
           "last_full_build_s": build_seconds(bdir), "runs": []}
    per = -(-args.commands // args.runs)
    left = args.commands
    for i in range(args.runs):
        n = min(per, left)
        if n <= 0:
            break
        left -= n
        seed = args.seed + i
        t0 = time.perf_counter()
        cmds = random_dram_cmds(p, seed, n)
        gen = time.perf_counter() - t0
        reset_at = random.Random(seed).randrange(n // 2, 2 * n)
        print(f"[bench dram] robustness run {i + 1}/{args.runs}: {n:,} commands, seed {seed}, "
              f"reset at cycle {reset_at:,}", flush=True)
        res = run_dram_lockstep(p, cmds, seed=seed, reset_at=reset_at, label=f"bench{i}")
        r = {"seed": seed, "commands": n, "transferred": res["transfers"]["cmd"],
             "reset_at": reset_at, "ok": res["ok"], "cycles": res["cycles"],
             "wall_s": round(res["wall_s"], 2), "cycles_per_s": round(res["cycles_per_s"]),
             "process_s": round(res["sim_total_s"], 2), "gen_s": round(gen, 2),
             "res_beats": len(res["res"]), "rd_beats": len(res["rd"]),
             "rejected": len(res["errors"]),
             "codes": {DramErr(c).name: sum(1 for _, x in res["errors"] if x == c)
                       for c in sorted({c for _, c in res["errors"]})},
             "ref_lost": res["ref_lost"], "mac_cycles": res["mac_cycles"],
             "refresh_cycles": res["refresh_cycles"], "held_cycles": res["held_cycles"],
             "mismatch": None if res["ok"] else describe_mismatch(
                 res, reproduce=_reproduce(args, commands=args.commands, runs=args.runs,
                                           no_qk=""))}
        out["runs"].append(r)
        print(f"[bench dram]   {'ok' if r['ok'] else 'MISMATCH'}: {r['cycles']:,} cycles, "
              f"{r['cycles_per_s']:,} cycles/s", flush=True)
    runs = out["runs"]
    out["commands"] = sum(r["transferred"] for r in runs)
    out["cycles"] = sum(r["cycles"] for r in runs)
    out["wall_s"] = round(sum(r["wall_s"] for r in runs), 2)
    out["cycles_per_s"] = round(out["cycles"] / out["wall_s"]) if out["wall_s"] else 0
    out["mismatches"] = sum(not r["ok"] for r in runs)
    out["ok"] = out["mismatches"] == 0 and out["commands"] == args.commands
    return out


def qk(args) -> list[dict]:
    from tb.build import Target, build_dir, describe_mismatch
    from tb.cache import build_seconds
    from tb.dram import qk_params, run_qk
    rows = []
    for n in args.tokens:
        p = qk_params(n)
        print(f"[bench dram] QK^T {n} tokens: {p.rows} rows x {p.row_bytes} B "
              f"(the first build of a size takes minutes)", flush=True)
        t0 = time.perf_counter()
        res = run_qk(p, n, seed=args.seed, label=f"bench_qk{n}")
        q = dict(res["qk"], total_s=round(time.perf_counter() - t0, 2), params=p.tag,
                 last_full_build_s=build_seconds(build_dir(Target("dram_bank", p))))
        q["mismatch"] = None if res["ok"] else describe_mismatch(
            res, reproduce=_reproduce(args, tokens=n, no_robust=""))
        q["pass"] = bool(res["ok"] and q.get("exact_vs_numpy") and q.get("rd_ok")
                         and q.get("cosine", 0) >= 0.99)
        rows.append(q)
        print(f"[bench dram]   {'ok' if q['pass'] else 'FAIL'}: {q['cycles']:,} cycles, "
              f"{q['cycles_per_s']:,} cycles/s, cosine {q.get('cosine', 0):.5f}", flush=True)
    return rows


def run(args) -> int:
    """Run the bench; returns 0 if every run found no mismatch and every check passed."""
    res: dict = {"seed": args.seed, "host": platform.node(), "cpus": os.cpu_count(),
                 "python": platform.python_version(), "source": "RTL (Verilator) in lockstep "
                 "with model/dram_bank.py, every output every cycle"}
    res["robustness"] = {"skipped": "--no-robust"} if args.no_robust else robustness(args)
    res["qk"] = [] if args.no_qk else qk(args)
    jpath, mpath = outputs(args)
    results.write_json(jpath, res)
    results.write_md(mpath, render(res))
    print(f"[bench dram] wrote {jpath} and {mpath}")
    ok = res["robustness"].get("ok", True) and all(q["pass"] for q in res["qk"])
    return 0 if ok else 1


def render(r: dict) -> str:
    lines = [f"# DRAM-PIM bank: RTL in lockstep with the golden model (seed {r['seed']}, "
             f"{r['cpus']} CPUs)", "",
             "Every number below is measured on the Verilated RTL (hdl/dram_bank.py, exported "
             "Verilog) compared with model/dram_bank.py every output every cycle.", ""]
    rb = r["robustness"]
    if "skipped" in rb:
        lines.append(f"Robustness: skipped ({rb['skipped']}).")
    else:
        lines += [f"## Robustness: random and malformed commands ({rb['params']})", "",
                  "| run | seed | commands | reset at | cycles | cycles/s | res | rd | "
                  "rejected | held cycles | ref_lost | refresh cycles | result |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for i, x in enumerate(rb["runs"]):
            lines.append(f"| {i} | {x['seed']} | {x['transferred']:,} | {x['reset_at']:,} | "
                         f"{x['cycles']:,} | {x['cycles_per_s']:,} | {x['res_beats']:,} | "
                         f"{x['rd_beats']:,} | {x['rejected']:,} | {x['held_cycles']:,} | "
                         f"{x['ref_lost']:,} | "
                         f"{x['refresh_cycles']:,} | "
                         f"{'0 mismatches' if x['ok'] else 'MISMATCH'} |")
        lines += ["", f"Total: {rb['commands']:,} commands, {rb['cycles']:,} cycles, "
                      f"{rb['mismatches']} mismatching runs; **lockstep {rb['cycles_per_s']:,} "
                      f"cycles/s** (loop wall time); build {rb['last_full_build_s']} s (full)."]
        codes: dict = {}
        for x in rb["runs"]:
            for k, v in x["codes"].items():
                codes[k] = codes.get(k, 0) + v
        lines.append("Rejections: " + ", ".join(f"{k} {v:,}" for k, v in codes.items()))
        for x in rb["runs"]:
            if x["mismatch"]:
                lines += ["", "```", x["mismatch"], "```"]
    if r["qk"]:
        lines += ["", "## Llama-3.1-8B attention QK^T (head_dim 128, GQA 4) through the bank "
                      "RTL", "",
                  "| tokens | rows | commands | MACs | cycles | MAC util | lockstep cycles/s | "
                  "build s (this call / last Verilator) | bit-exact (model, numpy) | "
                  "cosine vs float | result |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
        for q in r["qk"]:
            exact = (f"{'yes' if q['ok'] else 'NO'}, "
                     f"{'yes' if q.get('exact_vs_numpy') else 'NO'}")
            lines.append(f"| {q['tokens']:,} | {q['rows']} | {q['commands']:,} | "
                         f"{q['n_mac']:,} | {q['cycles']:,} | {q['mac_util']:.3f} | "
                         f"{q['cycles_per_s']:,} | {q['build_or_reuse_s']} / "
                         f"{q['last_full_build_s']} | {exact} | "
                         f"{q.get('cosine', 0):.5f} | {'PASS' if q['pass'] else 'FAIL'} |")
        lines += ["", "Cycles include the K-cache write phase (one WR per 32-byte column, "
                      "GDDR6-AiM timing, refresh on); MAC util = legal MACs accepted / cycles "
                      "(peak 1/tCCDL = 0.5). Build: this call = Verilog generation (whenever a "
                      "source under hdl/ or spec/ changed: Amaranth writes the cell array's "
                      "initial value bit by bit) + Verilator (when the Verilog changed), about "
                      "0 if nothing changed; last Verilator = the last C++ build alone."]
        for q in r["qk"]:
            if q["mismatch"]:
                lines += ["", "```", q["mismatch"], "```"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
