"""All-bank MAC from the RTL: one QK^T stream, in-order single-bank vs all-bank vs DCS.

Cycles and MAC utilisation of the same stream in-order single-bank, in-order all-bank and DCS
all-bank (and DCS single-bank, for reference) on a PIM module, every number from a Verilated
``PimModule`` run in lockstep with the golden model.

    python -m bench.allbank [--channels C] [--banks B] [--queries N] [--seed S] [--out DIR]

The stream is :func:`compiler.programs.qk_stream_program` (keys stationary: key block kb on
bank kb % B, its k-tiles in consecutive sets; queries written into the GBuf; one RD_OUT per key
block and query), with ``all_bank=True`` for the all-bank rows (CENT's QK^T mapping: one MAC_AB
per (slot, k-tile, query) instead of B single-bank MACs), lifted to host commands multicast to
every channel of the module: page ``vp = set * B + bank`` maps ``pp = bank * S + set`` (so every
set is a stripe and a MAC_AB addresses ``vp = set * B``).  The module has ``host_ready``: the
host offers every command back to back (gap 0) and the port's ready paces it; only the
trailing NOP (pushed once the module is idle, as :func:`compiler.host.pace` does, so that the
run ends as the performance model counts) is timed by the model.  Scores are checked
bit-exact against ``K @ q`` in every channel, and the performance model (perf/sim.py, on the
same host commands) is reported next to the RTL (equal cycles and busy bank-cycles).

Utilisation = busy bank-cycles / (cycles x C x B) over the whole run, and over the run minus
the cycles of the key load alone (a separate RTL run of only the stream's MAP and WR_W
commands; the stream interleaves them with the MACs, so this isolates the compute phase only
approximately).  The module's one out port (1 beat per cycle) bounds the utilisation at
``x_bits x set slots / (C x n_keys / n_out)`` (0.25 for the defaults, 0.5 with 2 channels).
Builds: two Verilator builds (``dcs`` and in-order, both with ``all_bank`` and
``host_ready``, Verilator ``--hierarchical``), cached in ``sim_build/lockstep/``.  Writes
``<out>/allbank.json`` and ``<out>/allbank.md`` (default ``build/bench/``).
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench import results

DEFAULT_SEED = 9
NAME = "allbank"

#: (label, dcs, all_bank program)
VARIANTS = (("in-order, single-bank", False, False), ("in-order, all-bank", False, True),
            ("DCS, all-bank", True, True), ("DCS, single-bank", True, False))


def module_params(n_ch: int, n_banks: int, dcs: bool):
    """The bench's module: C channels x B banks of 16 x 16 8-bit macros with 4 sets (the key
    blocks and k-tiles of the stream), all-bank MACs and a host ready."""
    from spec.isa import ChannelParams, ModuleParams
    from spec.params import MacroParams
    mp = MacroParams(n_in=16, n_out=16, w_bits=8, x_bits=8, n_sets=4, n_acc=8, tree_stages=1)
    cp = ChannelParams(macro=mp, n_banks=n_banks, n_gbuf=4, q_depth=8, dcs=dcs, all_bank=True)
    pages = n_banks * mp.n_sets                  # vp = set * B + bank: every page mapped
    return ModuleParams(channel=cp, n_ch=n_ch, n_vpages=max(32, 1 << (pages - 1).bit_length()),
                        n_req=2, fifo_depth=8, loop_len=4, host_ready=True)


def host_program(p, prog) -> tuple[list[int], list[int]]:
    """Host words of channel program ``prog`` on every channel of module ``p`` (module
    docstring); returns (words, the load alone: its MAPs and WR_Ws, in order)."""
    from spec.isa import HostOp as H
    from spec.isa import Op, decode, host_encode
    cp = p.channel
    B, S, allm = cp.n_banks, cp.macro.n_sets, (1 << p.n_ch) - 1
    words = [host_encode(p, H.MAP, vp=s * B + b, pp=b * S + s, rid=0)
             for s in range(S) for b in range(B)]
    for w, _ in prog.cmds:
        f = decode(cp, w)
        op = Op(f["op"])
        if op == Op.WR_INP:
            words.append(host_encode(p, H.WR_INP, chmask=allm, g=f["g"], data=f["data"]))
        elif op == Op.WR_W:
            words.append(host_encode(p, H.WR_W, chmask=allm, rid=0, vp=f["set"] * B + f["bank"],
                                     row=f["row"], data=f["data"]))
        elif op == Op.MAC:
            if f.get("ab"):
                words.append(host_encode(p, H.MAC_AB, chmask=allm, rid=0, vp=f["set"] * B,
                                         g=f["g"], o=f["o"], acc=f["acc"]))
            else:
                words.append(host_encode(p, H.MAC, chmask=allm, rid=0,
                                         vp=f["set"] * B + f["bank"], g=f["g"], o=f["o"],
                                         acc=f["acc"]))
        else:
            words.append(host_encode(p, H.RD_OUT, chmask=allm, rid=0, vp=f["bank"], o=f["o"]))
    load = [w for w in words if w & 0xF in (int(H.MAP), int(H.WR_W))]
    return words, load


def _stream(p, words) -> list[tuple[int, int]]:
    """``words`` offered back to back (gap 0: ``host_ready`` holds them), then the draining
    NOP of :func:`compiler.host.pace` (pushed when the module is idle), so that the run's
    cycle count is the one the performance model reports for ``words``."""
    from compiler.host import pace
    paced = pace(p, [(w, 0) for w in words])
    assert [w for w, _ in paced[:-1]] == list(words)
    return [(w, 0) for w in words] + [paced[-1]]


def _run(p, words, seed, label):
    from model.stimulus import Beat
    from tb.build import Target, run_job
    t = Target("module", p, hierarchical=True)
    res = run_job(t, [[Beat(w, g) for w, g in _stream(p, words)]], seed=seed, label=label)
    if not res["ok"]:
        from tb.build import describe_mismatch
        raise RuntimeError(f"bench allbank {label}: RTL != model:\n{describe_mismatch(res)}")
    return res


def _check_scores(p, prog, outs) -> None:
    from spec.isa import mod_out_fields
    off = mod_out_fields(p)["chan"].offset
    per = {c: [] for c in range(p.n_ch)}
    for w in outs:
        per[w >> off].append(w & ((1 << off) - 1))
    for c, ws in per.items():
        if not np.array_equal(prog.decode(ws), prog.expected):
            raise RuntimeError(f"bench allbank: channel {c} scores != K @ q")


def build_times(n_ch: int, n_banks: int) -> dict:
    """Build (or reuse) both lockstep builds; their wall times (s) and last full build times."""
    from tb.build import Target, build, build_dir
    from tb.cache import build_seconds
    out = {}
    for dcs in (False, True):
        t = Target("module", module_params(n_ch, n_banks, dcs), hierarchical=True)
        t0 = time.monotonic()
        build(t)
        out["dcs" if dcs else "in-order"] = {
            "wall_s": round(time.monotonic() - t0, 1),
            "last_full_build_s": build_seconds(build_dir(t)), "dir": str(build_dir(t))}
    return out


def measure(n_ch: int, n_banks: int, n_q: int, head_dim: int, seed: int) -> dict:
    """The bench's results (module docstring)."""
    from compiler.programs import qk_stream_program
    from perf.program import from_host_words
    from perf.sim import SimParams, simulate
    p0 = module_params(n_ch, n_banks, False)
    mp = p0.channel.macro
    kt_n = -(-head_dim // mp.n_in)
    bpb = mp.n_sets // kt_n                      # key blocks per bank: every set holds keys
    rng = np.random.default_rng(seed)
    K = rng.integers(-128, 128, (n_banks * mp.n_out * bpb, head_dim))
    Q = rng.integers(-128, 128, (n_q, head_dim))
    res = {"host": platform.node(), "cpus": os.cpu_count(), "seed": seed, "where": "RTL",
           "module": p0.tag, "n_ch": n_ch, "n_banks": n_banks, "macro": mp.tag,
           "n_keys": int(K.shape[0]), "head_dim": head_dim, "n_q": n_q,
           "inorder_mac_cycles": mp.x_bits + mp.tree_stages + 2,
           # the module's one out port moves 1 beat per cycle: per query C x n_keys / n_out
           # result beats, against x_bits busy cycles per set slot in every bank
           "out_port_util_bound": min(1.0, kt_n * bpb * mp.x_bits
                                      / (n_ch * K.shape[0] / mp.n_out)),
           "builds": build_times(n_ch, n_banks), "rows": []}
    loads = {}
    for label, dcs, ab in VARIANTS:
        p = module_params(n_ch, n_banks, dcs)
        prog = qk_stream_program(p.channel, K, Q, all_bank=ab)
        words, load = host_program(p, prog)
        if dcs not in loads:
            loads[dcs] = _run(p, load, seed, "allbank_load")["cycles"]
        t0 = time.monotonic()
        r = _run(p, words, seed, f"allbank_{'dcs' if dcs else 'ino'}_{'ab' if ab else 'sb'}")
        wall = time.monotonic() - t0
        _check_scores(p, prog, r["outputs"])
        busy, cyc, lc = sum(r["busy_cycles"]), r["cycles"], loads[dcs]
        nb = n_ch * n_banks
        perf = simulate(SimParams.from_module(p), from_host_words(p, words))
        res["rows"].append(dict(
            variant=label, dcs=dcs, all_bank=ab, host_cmds=len(words),
            macs=prog.n_mac, cycles=cyc, load_only_cycles=lc, busy_bank_cycles=busy,
            util=busy / (cyc * nb), util_minus_load=busy / ((cyc - lc) * nb),
            lockstep_cycles_per_s=round(r["cycles_per_s"]), run_s=round(wall, 1),
            perf_model_cycles=perf.cycles, perf_model_busy=perf.stats["busy"],
            perf_equals_rtl=(perf.cycles, perf.stats["busy"]) == (cyc, busy)))
        print(f"[bench allbank] {label}: {cyc} cycles, utilisation {busy / (cyc * nb):.3f} "
              f"({busy / ((cyc - lc) * nb):.3f} without the load)", flush=True)
    base = res["rows"][0]["cycles"]
    for row in res["rows"]:
        row["speedup_vs_inorder_single"] = base / row["cycles"]
    return res


def render(res: dict) -> str:
    lines = [f"# All-bank MAC: one QK^T stream from the RTL ({res['n_ch']} channels x "
             f"{res['n_banks']} banks of {res['macro']}; {res['n_keys']} keys x head_dim "
             f"{res['head_dim']}, {res['n_q']} queries; seed {res['seed']})", "",
             "Every number from the Verilated PimModule in lockstep with the golden model "
             "(scores bit-exact vs K @ q in every channel).  Utilisation = busy bank-cycles / "
             "(cycles x channels x banks); \"w/o load\": minus the cycles of the key load alone.",
             "",
             "| variant | host cmds | channel MACs | cycles (RTL) | util | util w/o load | "
             "speedup | perf model cycles | lockstep cycles/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        pm = r["perf_model_cycles"]
        lines.append(f"| {r['variant']} | {r['host_cmds']} | {r['macs']} | {r['cycles']} | "
                     f"{r['util']:.3f} | {r['util_minus_load']:.3f} | "
                     f"{r['speedup_vs_inorder_single']:.2f}x | "
                     f"{pm}{'' if r['perf_equals_rtl'] else ' (DIFFERS)'} | "
                     f"{r['lockstep_cycles_per_s']} |")
    b = res["builds"]
    lines += ["", "Verilator builds (--hierarchical): " + ", ".join(
        f"{k} {v['last_full_build_s']} s (this run {v['wall_s']} s)" for k, v in b.items())
        + f"; key load alone {res['rows'][0]['load_only_cycles']} cycles.  The module's one "
        f"out port (1 beat/cycle: {res['n_ch']} x {res['n_keys']} / n_out result beats per "
        f"query) bounds the utilisation at {res['out_port_util_bound']:.3f}.  The perf model "
        "column is perf/sim.py on the same host commands (not the RTL; equal cycles and busy "
        "bank-cycles expected)."]
    return "\n".join(lines)


def add_arguments(ap, common: bool = True) -> None:
    """Options of ``bench.allbank``; ``common``: also ``--seed`` and ``--out``."""
    from cimphony.cli import positive_int
    if common:
        results.add_common(ap, DEFAULT_SEED, "keys and queries")
    ap.add_argument("--channels", type=positive_int, default=4, metavar="C",
                    help="channels of the module (default: 4; 4 x 16 builds in about 3 + 2 "
                         "minutes)")
    ap.add_argument("--banks", type=positive_int, default=16, metavar="B",
                    help="banks per channel (default: 16, AiM's and PIMphony's)")
    ap.add_argument("--queries", type=positive_int, default=64, metavar="N",
                    help="queries of the stream (default: 64)")
    ap.add_argument("--head-dim", type=positive_int, default=32, metavar="D",
                    help="head dimension (default: 32 = 2 k-tiles of the 16-row macro)")


def outputs(args) -> list[Path]:
    """Files :func:`run` writes for ``args``."""
    return results.outputs(args.out, NAME)


def run(args) -> int:
    """Run the bench; returns 0, or 1 if the perf model differs from the RTL (a lockstep
    mismatch or a wrong score raises)."""
    try:
        module_params(args.channels, args.banks, True)
    except ValueError as e:
        print(f"bench allbank: {e}", file=sys.stderr)
        return 2
    res = measure(args.channels, args.banks, args.queries, args.head_dim, args.seed)
    jpath, mpath = outputs(args)
    results.write_json(jpath, res)
    results.write_md(mpath, render(res))
    print(f"[bench allbank] wrote {jpath} and {mpath}")
    return 0 if all(r["perf_equals_rtl"] for r in res["rows"]) else 1


def main(argv=None) -> int:
    return results.main(argv, "python -m bench.allbank", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())
