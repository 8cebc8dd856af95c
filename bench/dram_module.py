"""A PimModule of DRAM-PIM channels (docs/dram_channel.md) in RTL: the QK^T stream in order
single-bank, in order all-bank and DCS all-bank, and the Llama-3.1-8B shape at long contexts.

    python -m bench.dram_module [--module-tokens 2048,8192] [--variant-tokens 2048]
                                [--seed S] [--out DIR]

Writes ``<out>/dram_module.json`` and ``.md`` (default ``build/bench/``).  Every number is
from the Verilated module RTL (``hdl/module.py`` with ``bank_kind="dram"`` channels, exported
Verilog) in lockstep with ``model/module.py`` every output every cycle (``tb/dram_module.py``):
channels of 16 GDDR6-AiM banks (refresh on; one channel up to 4K tokens, more token-centric
ones beyond: the 8-bit page numbers address 256 pages per channel), a page = one 2 KB row of
16 keys x head_dim 128, queries in every channel's GBuf, one MAC_AB (or 16 MACs) per stripe
and query to every channel.  The key-cache write
(one WR_W per 32-byte burst, each an ACT / WR / PRE) is run alone through the same build, so
the QK^T phase = whole run - write phase, both measured in the RTL.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from bench import results

DEFAULT_SEED = 2025
VARIANTS = (("in order, single-bank", False, False), ("in order, all-bank", False, True),
            ("DCS, all-bank", True, True))


def _tokens(text: str) -> list[int]:
    """Contexts: multiples of 256 (16 keys per page x 16 banks)."""
    return results.token_list(text, 256)


def add_arguments(ap, common: bool = True) -> None:
    """Options of ``bench.dram_module``; ``common``: also ``--seed`` and ``--out``."""
    if common:
        results.add_common(ap, DEFAULT_SEED, "data seed")
    ap.add_argument("--module-tokens", type=_tokens, metavar="T,...", default=[2048, 8192],
                    help="contexts of the Llama-3.1-8B QK^T through the module (DCS all-bank)")
    ap.add_argument("--variant-tokens", type=_tokens, metavar="T", default=[2048],
                    help="context of the in-order / all-bank / DCS comparison")


def outputs(args) -> list[Path]:
    return results.outputs(args.out, "dram_module")


def main(argv=None) -> int:
    return results.main(argv, "python -m bench.dram_module", __doc__, add_arguments, run)


def measure(n_tokens: int, seed: int, dcs: bool, all_bank: bool) -> dict:
    """One QK^T run and its write phase alone, both through the RTL."""
    from tb.build import describe_mismatch, run_module_lockstep
    from tb.dram_module import run_qk_module
    t0 = time.perf_counter()
    res = run_qk_module(n_tokens, seed=seed, dcs=dcs, all_bank=all_bank,
                        label=f"bench_dmod{n_tokens}")
    q = dict(res["qk"])
    prog = res["program"]
    w = run_module_lockstep(prog.params, prog.cmds[:prog.n_setup], seed=seed,
                            label=f"bench_dmodw{n_tokens}")
    cp = prog.params.channel
    ncol = cp.macro.n_in * cp.macro.n_out // cp.burst_bytes
    bank_macs = prog.n_mac * (cp.n_banks if all_bank else 1)
    q.update(write_cycles=w["cycles"], write_ok=w["ok"], qk_cycles=q["cycles"] - w["cycles"],
             total_s=round(time.perf_counter() - t0, 2), params=prog.params.tag)
    # bank-cycles of column MACs (one column per tCCDL per bank is the peak)
    q["mac_util"] = bank_macs * ncol * cp.timing.tCCDL / (q["qk_cycles"] * cp.n_banks)
    q["mismatch"] = None if res["ok"] and w["ok"] else describe_mismatch(res if not res["ok"]
                                                                         else w)
    q["pass"] = bool(res["ok"] and w["ok"] and q.get("exact_vs_numpy")
                     and q.get("cosine", 0) >= 0.99)
    return q


def run(args) -> int:
    """Run the bench; 0 if every run matched the model and every check passed."""
    res: dict = {"seed": args.seed, "host": platform.node(), "cpus": os.cpu_count(),
                 "python": platform.python_version(),
                 "source": "RTL (Verilator) in lockstep with model/module.py, every output "
                           "every cycle"}
    res["variants"] = []
    for n in args.variant_tokens:
        for name, dcs, ab in VARIANTS:
            print(f"[bench dram_module] {name}, {n} tokens (a new build takes minutes)",
                  flush=True)
            q = dict(measure(n, args.seed, dcs, ab), variant=name)
            res["variants"].append(q)
            print(f"[bench dram_module]   {'ok' if q['pass'] else 'FAIL'}: QK^T "
                  f"{q['qk_cycles']:,} cycles, MAC util {q['mac_util']:.3f}", flush=True)
    res["long"] = []
    for n in args.module_tokens:
        print(f"[bench dram_module] Llama-3.1-8B QK^T, {n} tokens, DCS all-bank", flush=True)
        q = measure(n, args.seed, True, True)
        res["long"].append(q)
        print(f"[bench dram_module]   {'ok' if q['pass'] else 'FAIL'}: {q['cycles']:,} "
              f"cycles, {q['cycles_per_s']:,} cycles/s, cosine {q.get('cosine', 0):.5f}",
              flush=True)
    jpath, mpath = outputs(args)
    results.write_json(jpath, res)
    results.write_md(mpath, render(res))
    print(f"[bench dram_module] wrote {jpath} and {mpath}")
    return 0 if all(q["pass"] for q in res["variants"] + res["long"]) else 1


def render(r: dict) -> str:
    lines = [f"# DRAM-PIM module in RTL (seed {r['seed']}, {r['cpus']} CPUs)", "",
             "Every number is measured on the Verilated module RTL (channels of 16 GDDR6-AiM "
             "banks, refresh on) compared with model/module.py every output every cycle.", ""]
    if r["variants"]:
        base = r["variants"][0]["qk_cycles"]
        lines += ["## One QK^T stream, three controllers (Llama-3.1-8B head_dim 128, GQA 4)", "",
                  "| variant | tokens | QK^T cycles | speedup | MAC util | write cycles | "
                  "lockstep cycles/s | result |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        for q in r["variants"]:
            lines.append(f"| {q['variant']} | {q['tokens']:,} | {q['qk_cycles']:,} | "
                         f"{base / q['qk_cycles']:.2f}x | {q['mac_util']:.3f} | "
                         f"{q['write_cycles']:,} | {q['cycles_per_s']:,} | "
                         f"{'PASS' if q['pass'] else 'FAIL'} |")
    if r["long"]:
        lines += ["", "## Long contexts through the module RTL (DCS all-bank)", "",
                  "| tokens | channels | rows/bank | commands | cycles (QK^T / write) | "
                  "MAC util | lockstep cycles/s | build s | bit-exact (model, numpy) | "
                  "cosine vs float | result |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"
                  "---:|---|"]
        for q in r["long"]:
            exact = f"{'yes' if q['ok'] else 'NO'}, {'yes' if q.get('exact_vs_numpy') else 'NO'}"
            lines.append(f"| {q['tokens']:,} | {q['channels']} | {q['rows']} | "
                         f"{q['commands']:,} | "
                         f"{q['qk_cycles']:,} / {q['write_cycles']:,} | {q['mac_util']:.3f} | "
                         f"{q['cycles_per_s']:,} | {q['build_or_reuse_s']} | {exact} | "
                         f"{q.get('cosine', 0):.5f} | {'PASS' if q['pass'] else 'FAIL'} |")
    lines += ["", "MAC util = bank-cycles of column MACs (C columns x tCCDL per bank MAC) / "
                  "(QK^T cycles x banks), per channel; 1.0 = every bank streams a column every "
                  "tCCDL. "
                  "Build s = Verilog generation + Verilator for a new size, ~0 when cached."]
    for q in r["variants"] + r["long"]:
        if q["mismatch"]:
            lines += ["", "```", q["mismatch"], "```"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
