"""Controller policies measured in the RTL (Verilated PimModule / PimChannel in lockstep with the
golden models, so every number below is also a proof that RTL == model on that run).

    python -m bench.controller [--seed S] [--parts 1,2,3] [--chunks 20] [--chunk-cmds 50000]

1. Policy matrix on one module configuration (CFG below): one decode step of attention for a
   request mix whose lengths follow the LongBench/LV-Eval means (model.attention.request_mix),
   for {HFP, TCP} x {in-order, DCS} x {static, DPA}; plus batch 1 (one request, one KV head).
2. Long QK^T stream on one channel (model.programs.qk_stream_program), DCS vs in-order,
   steady state; plus a reordered stream (bench-side builder) and a model-only what-if.
3. Robustness: >= 10^6 random host commands (valid and malformed) on a tiny module, RTL vs
   model in lockstep, in chunks.

Writes ``bench/results/controller.json`` and ``bench/results/controller.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from model import attention as A
from model.channel import ChannelModel
from model.isa import ChannelParams, ModuleParams, Op, encode
from model.module import ModuleModel
from model.programs import decode_out, qk_stream_program
from model.spec import MacroParams, pack_vec

RESULTS = Path(__file__).resolve().parent / "results"

# Module under test: 16x16 8-bit macros, 8 weight sets (pages) per macro, 4 banks, 4 channels.
# n_sets = 8 (not 2): a page holds only 16 tokens x 16 dims, and HFP reserves a request's page
# in every channel (module-wide page table), so with 2 sets no mix of >= 2 requests fits.
MACRO = MacroParams(n_in=16, n_out=16, w_bits=8, x_bits=8, n_sets=8, n_acc=4, tree_stages=1)
CHAN = ChannelParams(MACRO, n_banks=4, n_gbuf=16, q_depth=8, dcs=True)
CFG = ModuleParams(CHAN, n_ch=4, n_vpages=64, n_req=4, fifo_depth=16, loop_len=8)
# workload of part 1 (scaled LongBench/LV-Eval means; Llama-like GQA group of 4 query heads)
MIX = dict(n=2, max_context=128, head_dim=16, group=4, kv_heads=1)
MIX_BIG = dict(n=3, max_context=128, head_dim=16, group=4, kv_heads=1)   # fit check only
# tiny module of part 3 (same as tests/test_rtl_module.py TINY)
TINY = ModuleParams(ChannelParams(MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2,
                                              tree_stages=0), n_banks=2, n_gbuf=2, q_depth=4),
                    n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4)


def _tqdm(*a, **k):
    try:
        from tqdm import tqdm
    except ImportError:            # pragma: no cover
        return a[0] if a else None
    return tqdm(*a, **k)


def _with_dcs(p, dcs: bool):
    if isinstance(p, ModuleParams):
        return dataclasses.replace(p, channel=dataclasses.replace(p.channel, dcs=dcs))
    return dataclasses.replace(p, dcs=dcs)


def _check(res, what):
    from tb.build import describe_mismatch
    if not res["ok"]:
        raise RuntimeError(f"{what}: RTL != model: {describe_mismatch(res)}")


# ------------------------------------------------------------------------------------------
# Part 1
def _model_chan_busy(p: ModuleParams, cmds, seed):
    """Per channel: cycles with >= 1 busy bank, from the golden model (the lockstep compares
    the module's ``busy`` vector with the RTL's every cycle, so this equals the RTL's)."""
    mm = ModuleModel(p)
    C, B = p.n_ch, p.channel.n_banks
    cnt = [0] * C
    masks = [((1 << B) - 1) << (c * B) for c in range(C)]
    inner = mm.step

    def step(*a):
        o = inner(*a)
        if o.busy:
            for c in range(C):
                if o.busy & masks[c]:
                    cnt[c] += 1
        return o
    mm.step = step
    run = mm.run(cmds, seed=seed)
    return cnt, run


def run_step(p: ModuleParams, reqs, part, alloc, seed, loop=False, label="ctl"):
    """One decode step on the RTL: (program) and (setup only), both in lockstep."""
    from tb.build import run_module_lockstep
    try:
        prog = A.build_program(p, reqs, part, alloc, loop)
    except ValueError as e:
        return dict(fits=False, why=str(e))
    full = A.pace(p, prog.cmds, seed=seed)
    setup = A.pace(p, prog.cmds[:prog.n_setup], seed=seed)
    rf = run_module_lockstep(p, full, seed=seed, label=label)
    _check(rf, f"{part}/{alloc}/{'dcs' if p.channel.dcs else 'ino'} program")
    rs = run_module_lockstep(p, setup, seed=seed, label=label + "_setup")
    _check(rs, f"{part}/{alloc} setup")
    dec = prog.decode(rf["outputs"])          # raises if the RTL's scores are not exact
    exact = all(np.array_equal(o, e) for o, e in zip(dec.o, prog.expected_o))
    cos = min(float(np.dot(o.ravel(), r.ravel()) / (np.linalg.norm(o) * np.linalg.norm(r)))
              for o, r in zip(dec.o, prog.reference))
    C, B = p.n_ch, p.channel.n_banks
    step = rf["cycles"] - rs["cycles"]
    busy = rf["busy_cycles"]
    chan_busy, mrun = _model_chan_busy(p, full, seed)
    if mrun.cycles != rf["cycles"] or list(mrun.busy_cycles) != list(busy):
        raise RuntimeError("model re-run differs from the lockstep run")
    assert sum(rs["busy_cycles"]) == 0, "setup has no MACs"
    return dict(fits=True, step_cycles=step, program_cycles=rf["cycles"],
                setup_cycles=rs["cycles"], busy_macro_cycles=sum(busy),
                mac_util=sum(busy) / (step * B * C),
                chan_util=sum(chan_busy) / (step * C),
                chan_util_per_channel=[x / step for x in chan_busy],
                mac_util_per_channel=[sum(busy[c * B:(c + 1) * B]) / (step * B)
                                      for c in range(C)],
                cap_util=prog.capacity["utilisation"], live_bytes=prog.capacity["live_bytes"],
                reserved_bytes=prog.capacity["reserved_bytes"],
                mapped_pages=prog.capacity["mapped_pages"], n_cmds=len(prog.cmds),
                n_step_cmds=prog.info["n_step"], useful_macs=prog.useful_macs,
                exact=exact, cosine_vs_float=cos, rtl_errors=len(rf["errors"]),
                lockstep_s=rf["wall_s"] + rs["wall_s"],
                lockstep_cps=rf["cycles_per_s"])


def part1(seed: int) -> dict:
    reqs = A.request_mix(seed=seed, **MIX)
    out = dict(config=CFG.tag, mix=MIX, requests=[r.name for r in reqs],
               tokens=[r.T for r in reqs], rows=[])
    combos = [(part, dcs, alloc) for part in ("HFP", "TCP") for dcs in (False, True)
              for alloc in ("static", "dpa")]
    for part, dcs, alloc in _tqdm(combos, desc="policy matrix (RTL)", unit="run"):
        p = _with_dcs(CFG, dcs)
        r = run_step(p, reqs, part, alloc, seed, label=f"ctl_{part}_{alloc}")
        r.update(partition=part, sched="DCS" if dcs else "in-order", alloc=alloc)
        out["rows"].append(r)
    base = next(r for r in out["rows"] if (r["partition"], r["sched"], r["alloc"])
                == ("HFP", "in-order", "static"))
    for r in out["rows"]:
        if r["fits"] and base["fits"]:
            r["speedup"] = base["step_cycles"] / r["step_cycles"]
    # a bigger mix: which combinations do not fit, and why (no RTL run needed)
    big = A.request_mix(seed=seed, **MIX_BIG)
    out["bigger_mix"] = dict(mix=MIX_BIG, tokens=[r.T for r in big], fit={})
    for part in ("HFP", "TCP"):
        for alloc in ("static", "dpa"):
            try:
                A.build_program(CFG, big, part, alloc)
                out["bigger_mix"]["fit"][f"{part}/{alloc}"] = "fits"
            except ValueError as e:
                out["bigger_mix"]["fit"][f"{part}/{alloc}"] = f"does not fit: {e}"
    # batch 1: one request, one KV head
    one = A.llama_shaped_decode(contexts=(128,), head_dim=16, group=4, kv_heads=1, seed=seed)
    out["batch1"] = dict(T=128, head_dim=16, group=4, rows=[])
    for part in ("HFP", "TCP"):
        p = _with_dcs(CFG, True)
        r = run_step(p, one, part, "dpa", seed, label=f"ctl_b1_{part}")
        r.update(partition=part, sched="DCS", alloc="dpa")
        out["batch1"]["rows"].append(r)
    return out


# ------------------------------------------------------------------------------------------
# Part 2
def reordered_qk_stream(p: ChannelParams, K, Q):
    """Bench-side variant of qk_stream_program (keys resident, 1 key block per bank): all
    WR_W first; per query: its kt_n WR_INPs (double-buffered GBuf halves) *before* its MACs
    (kt-major, banks inner), the previous query's RD_OUTs after its first k-tile group.
    Same commands per MAC as the library builder; only the order differs.
    Returns (cmds, n_load, expected [n_q, n_keys], decode)."""
    m, B = p.macro, p.n_banks
    n_keys, hd = K.shape
    kt_n = math.ceil(hd / m.n_in)
    if n_keys != B * m.n_out or kt_n > m.n_sets or 2 * kt_n > p.n_gbuf:
        raise ValueError("reordered_qk_stream: needs n_keys = n_banks*n_out, kt_n <= n_sets, "
                         "2*kt_n <= n_gbuf")
    cmds = []
    for b in range(B):
        for kt in range(kt_n):
            for r in range(m.n_in):
                cmds.append((encode(p, Op.WR_W, bank=b, set=kt, row=r, data=pack_vec(
                    K[b * m.n_out:(b + 1) * m.n_out, kt * m.n_in + r], m.w_bits)), 0))
    n_load = len(cmds)
    pend, order = [], []
    for qi in range(Q.shape[0]):
        gb, o = (qi % 2) * kt_n, qi % m.n_acc
        body = [(encode(p, Op.WR_INP, g=gb + kt, data=pack_vec(
            Q[qi, kt * m.n_in:(kt + 1) * m.n_in], m.x_bits)), 0) for kt in range(kt_n)]
        for kt in range(kt_n):
            body += [(encode(p, Op.MAC, bank=b, set=kt, g=gb + kt, o=o, acc=int(kt > 0)), 0)
                     for b in range(B)]
            if kt == 0:
                body += pend
        pend = [(encode(p, Op.RD_OUT, bank=b, o=o), 0) for b in range(B)]
        order += [(qi, b) for b in range(B)]
        cmds += body
    cmds += pend
    S = Q @ K.T

    def decode(outs):
        Y = np.zeros_like(S)
        for w, (qi, b) in zip(outs, order, strict=True):
            Y[qi, b * m.n_out:(b + 1) * m.n_out] = decode_out(p, w)[2]
        return Y
    return cmds, n_load, S, decode


class _FreshTableModel(ChannelModel):
    """WHAT-IF (model only, not the RTL): dependency-table slots whose command is done are
    invalidated at every edge, so a slot never aliases a newer command that reuses its id."""

    def step(self, *a):
        o = super().step(*a)
        d = self._done
        for tab in (self._gw, self._gr):
            for i, s in enumerate(tab):
                if s[0] and d[s[1]]:
                    tab[i] = (0, 0)
        for tab in (self._ww, self._wr, self._ow, self._orr):
            for row in tab:
                for i, s in enumerate(row):
                    if s[0] and d[s[1]]:
                        row[i] = (0, 0)
        return o


def part2(seed: int, n_q=(32, 64), head_dim: int = 128) -> dict:
    from tb.build import run_channel_lockstep
    rng = np.random.default_rng(seed)
    B = CHAN.n_banks
    K = rng.integers(-128, 128, (B * MACRO.n_out, head_dim))
    Qs = {n: rng.integers(-128, 128, (n, head_dim)) for n in n_q}
    out = dict(channel=CHAN.tag, head_dim=head_dim, n_keys=int(K.shape[0]), n_q=list(n_q),
               kt_n=math.ceil(head_dim / MACRO.n_in), rows=[])

    def programs(cp):
        for name in ("qk_stream_program", "reordered (bench)"):
            for n in n_q:
                if name == "qk_stream_program":
                    pr = qk_stream_program(cp, K, Qs[n])
                    cmds, exp, dec = pr.cmds, pr.expected, pr.decode
                    load = [c for c in cmds if c[0] & 3 == int(Op.WR_W)]
                    counts = dict(mac=pr.n_mac, wr_inp=pr.n_wr_inp, rd_out=pr.n_rd_out)
                else:
                    cmds, nl, exp, dec = reordered_qk_stream(cp, K, Qs[n])
                    load = cmds[:nl]
                    ops = [c & 3 for c, _ in cmds]
                    counts = dict(mac=ops.count(int(Op.MAC)), wr_inp=ops.count(int(Op.WR_INP)),
                                  rd_out=ops.count(int(Op.RD_OUT)))
                yield name, n, cmds, load, exp, dec, counts

    jobs = [(dcs, *pg) for dcs in (False, True) for pg in programs(_with_dcs(CHAN, dcs))]
    runs = {}
    loads = {}
    for dcs, name, n, cmds, load, exp, dec, counts in _tqdm(jobs, desc="QK^T stream (RTL)",
                                                            unit="run"):
        cp = _with_dcs(CHAN, dcs)
        r = run_channel_lockstep(cp, cmds, seed=seed, label="ctl_qk")
        _check(r, f"qk stream {name} n_q={n}")
        if not np.array_equal(dec(r["outputs"]), exp):
            raise RuntimeError(f"qk stream {name}: RTL scores != K @ q")
        key = (dcs, name)
        if key not in loads:
            rl = run_channel_lockstep(cp, load, seed=seed, label="ctl_qk_load")
            _check(rl, "load-only")
            loads[key] = rl["cycles"]
        runs[(dcs, name, n)] = (r["cycles"], sum(r["busy_cycles"]), counts, r["cycles_per_s"])
    for dcs in (False, True):
        for name in ("qk_stream_program", "reordered (bench)"):
            n1, n2 = n_q
            (c1, b1, _, _), (c2, b2, cnt, cps) = runs[(dcs, name, n1)], runs[(dcs, name, n2)]
            lc = loads[(dcs, name)]
            out["rows"].append(dict(
                sched="DCS" if dcs else "in-order", program=name, where="RTL",
                cycles=c2, load_only_cycles=lc, busy_macro_cycles=b2,
                util_minus_load=b2 / ((c2 - lc) * B),
                util_marginal=(b2 - b1) / ((c2 - c1) * B),
                cycles_per_query=(c2 - c1) / (n2 - n1),
                ideal_cycles_per_query=out["kt_n"] * MACRO.x_bits,
                cmds_per_query=(cnt["mac"] + cnt["wr_inp"] + cnt["rd_out"]) / n2,
                macs_per_query=cnt["mac"] / n2, lockstep_cps=cps))
    # what-if in the model only: stale dependency-table slots cleared
    for name in ("qk_stream_program", "reordered (bench)"):
        res = {}
        for n in n_q:
            if name == "qk_stream_program":
                cmds = qk_stream_program(CHAN, K, Qs[n]).cmds
            else:
                cmds = reordered_qk_stream(CHAN, K, Qs[n])[0]
            tr = _FreshTableModel(CHAN).run(cmds)
            res[n] = (tr.cycles, sum(tr.busy_cycles))
        (c1, b1), (c2, b2) = res[n_q[0]], res[n_q[1]]
        out["rows"].append(dict(sched="DCS", program=name,
                                where="model what-if: stale table slots cleared",
                                cycles=c2, util_marginal=(b2 - b1) / ((c2 - c1) * B),
                                cycles_per_query=(c2 - c1) / (n_q[1] - n_q[0]),
                                ideal_cycles_per_query=out["kt_n"] * MACRO.x_bits))
    out["alias_example"] = alias_example()
    return out


def alias_example(rtl: bool = True) -> dict:
    """Minimal reproducer of a false dependency from a stale dependency-table slot.  Both the
    model and the RTL follow docs/channel.md, which records a table slot as a dependency if
    its id is pending *now*, even when that id has since been reused by an unrelated command.
    Tiny channel (2 banks, 2 GBuf entries).  Returns the issue cycle of a bank-1 MAC whose
    input was written long ago: with ``W - 1`` fillers its GBuf slot's stale id 0 has been
    reused by a bank-0 MAC (false dependency), with ``W - 2`` fillers it has not (control)."""
    from tb.build import run_channel_lockstep
    cp = ChannelParams(MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=0),
                       n_banks=2, n_gbuf=2, q_depth=4, dcs=True)
    W, m = cp.window, cp.macro
    z = pack_vec([1] * m.n_in, m.x_bits)
    out = dict(params=cp.tag, window=W)
    for case, nfill in (("aliased", W - 1), ("control", W - 2)):
        cmds = [(encode(cp, Op.WR_INP, g=1, data=z), 0)]             # id 0: gw[1] = (1, 0)
        cmds += [(encode(cp, Op.WR_INP, g=0, data=z), 0)] * nfill     # ids 1 .. nfill
        cmds.append((encode(cp, Op.MAC, bank=0, set=0, g=0, o=0, acc=0), 0))  # id nfill+1 mod W
        cmds.append((encode(cp, Op.MAC, bank=1, set=0, g=1, o=0, acc=0), 0))
        issue = {}

        def probe(mm, c, o, issue=issue):
            for b, q in enumerate(mm._macq):
                if q and b not in issue:
                    issue[b] = c          # first cycle after the issue edge
        tr = ChannelModel(cp).run(cmds, probe=probe)
        d = dict(bank0_mac_issued=issue[0] - 1, bank1_mac_issued=issue[1] - 1,
                 cycles_model=tr.cycles)
        if rtl:
            r = run_channel_lockstep(cp, cmds, seed=0, label="ctl_alias")
            _check(r, "alias reproducer")
            d["cycles_rtl"] = r["cycles"]
        out[case] = d
    return out


# ------------------------------------------------------------------------------------------
# Part 3
def part3(seed: int, chunks: int, chunk_cmds: int) -> dict:
    from tb.build import run_module_lockstep
    from tb.stimgen import random_host_cmds
    out = dict(config=TINY.tag, chunks=chunks, chunk_cmds=chunk_cmds, seeds=[], runs=[])
    t0 = time.perf_counter()
    tot_cmds = tot_cyc = tot_err = 0
    codes = set()
    bar = _tqdm(total=chunks * chunk_cmds, desc="random host cmds (RTL vs model)", unit="cmd",
                unit_scale=True)
    for k in range(chunks):
        s = seed + 1000 + k
        cmds = random_host_cmds(TINY, s, chunk_cmds)
        rr = (1.0, 0.5)[k % 2]
        r = run_module_lockstep(TINY, cmds, out_ready_p=rr, seed=s, label="ctl_rand")
        _check(r, f"random chunk {k} (seed {s})")
        tot_cmds += len(cmds)
        tot_cyc += r["cycles"]
        tot_err += len(r["errors"])
        codes |= {c for _, c in r["errors"]}
        out["seeds"].append(s)
        out["runs"].append(dict(seed=s, out_ready_p=rr, cycles=r["cycles"],
                                errors=len(r["errors"]), outputs=len(r["outputs"]),
                                wall_s=r["wall_s"], cycles_per_s=r["cycles_per_s"]))
        bar.update(len(cmds))
    bar.close()
    wall = time.perf_counter() - t0
    out.update(total_cmds=tot_cmds, total_cycles=tot_cyc, mismatches=0, errors_reported=tot_err,
               error_codes_seen=sorted(codes), wall_s=wall, cmds_per_s=tot_cmds / wall,
               cycles_per_s=tot_cyc / wall,
               sim_cycles_per_s=tot_cyc / sum(x["wall_s"] for x in out["runs"]))
    return out


# ------------------------------------------------------------------------------------------
def _f(x, n=3):
    return "-" if x is None else f"{x:.{n}f}"


def render(res: dict) -> str:
    L = [f"# Controller policies measured in the RTL (seed {res['seed']})", ""]
    p1 = res.get("part1")
    if p1:
        L += [f"## 1. Policy matrix: one decode step, module `{p1['config']}`", "",
              f"16x16 8-bit macros, 8 sets, 4 banks x 4 channels; mix "
              f"{p1['mix']} -> requests {p1['requests']} (tokens {p1['tokens']}). "
              "Cycles = RTL(program) - RTL(setup only); every run in lockstep with the model.",
              "",
              "| partition | scheduler | alloc | step cycles | speedup | MAC util | channel util"
              " | capacity util | pages | exact |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in p1["rows"]:
            if not r["fits"]:
                L.append(f"| {r['partition']} | {r['sched']} | {r['alloc']} | does not fit: "
                         f"{r['why']} | | | | | | |")
                continue
            L.append(f"| {r['partition']} | {r['sched']} | {r['alloc']} | {r['step_cycles']} | "
                     f"{_f(r.get('speedup'), 2)}x | {_f(r['mac_util'])} | {_f(r['chan_util'])} | "
                     f"{_f(r['cap_util'])} | {r['mapped_pages']} | {r['exact']} |")
        L += ["", f"Bigger mix {p1['bigger_mix']['mix']} (tokens {p1['bigger_mix']['tokens']}):"]
        L += [f"* {k}: {v}" for k, v in p1["bigger_mix"]["fit"].items()]
        b1 = p1["batch1"]
        L += ["", f"Batch 1 (one request, one KV head, T={b1['T']}, g={b1['group']}, DCS, DPA):",
              "", "| partition | step cycles | MAC util | channel util per channel |",
              "|---|---:|---:|---|"]
        for r in b1["rows"]:
            L.append(f"| {r['partition']} | {r['step_cycles']} | {_f(r['mac_util'])} | "
                     + ", ".join(_f(x, 2) for x in r["chan_util_per_channel"]) + " |")
    p2 = res.get("part2")
    if p2:
        L += ["", f"## 2. Long QK^T stream on one channel `{p2['channel']}`", "",
              f"head_dim {p2['head_dim']} ({p2['kt_n']} k-tiles), {p2['n_keys']} resident keys, "
              f"n_q {p2['n_q']}. util(minus load) = busy / ((cycles(program) - cycles(load-only))"
              " x banks); util(marginal) = d busy / (d cycles x banks) between the two n_q "
              "(pure steady state). PIMphony in-order baseline: 0.147 (head_dim 128).", "",
              "| where | scheduler | program | cycles | util (minus load) | util (marginal) |"
              " cycles/query (ideal) | cmds/query |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in p2["rows"]:
            L.append(f"| {r['where']} | {r['sched']} | {r['program']} | {r['cycles']} | "
                     f"{_f(r.get('util_minus_load'))} | {_f(r['util_marginal'])} | "
                     f"{_f(r['cycles_per_query'], 1)} ({r['ideal_cycles_per_query']}) | "
                     f"{_f(r.get('cmds_per_query'), 0)} |")
        a = p2["alias_example"]
        L += ["", f"False-dependency reproducer (`{a['params']}`, W={a['window']}): the "
                  "bank-1 MAC (input written long ago) issues at cycle "
                  f"{a['aliased']['bank1_mac_issued']} when its stale GBuf slot id was reused by "
                  f"the bank-0 MAC issued at {a['aliased']['bank0_mac_issued']}, vs "
                  f"{a['control']['bank1_mac_issued']} (bank-0 at "
                  f"{a['control']['bank0_mac_issued']}) when it was not; run cycles RTL "
                  f"{a['aliased'].get('cycles_rtl')} vs {a['control'].get('cycles_rtl')}."]
    p3 = res.get("part3")
    if p3:
        L += ["", f"## 3. Robustness: random host commands, module `{p3['config']}`", "",
              f"{p3['total_cmds']:,} commands ({p3['chunks']} x {p3['chunk_cmds']:,}, seeds "
              f"{p3['seeds'][0]}..{p3['seeds'][-1]}, out.ready 1.0/0.5 alternating), "
              f"{p3['total_cycles']:,} cycles, **{p3['mismatches']} mismatches**; "
              f"{p3['errors_reported']:,} error events (rejections incl. replayed loop bodies, "
              f"FIFO drops; codes "
              f"{p3['error_codes_seen']}); {p3['cmds_per_s']:,.0f} commands/s, "
              f"{p3['cycles_per_s']:,.0f} cycles/s overall ({p3['sim_cycles_per_s']:,.0f} in "
              f"the lockstep loop), {p3['wall_s']:.0f} s."]
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "7")))
    ap.add_argument("--parts", default="1,2,3")
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--chunk-cmds", type=int, default=50_000)
    args = ap.parse_args(argv)
    parts = {int(x) for x in args.parts.split(",") if x}
    print(f"[controller] seed {args.seed} (SEED=n to change), parts {sorted(parts)}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "controller.json"
    res = json.loads(jpath.read_text()) if jpath.exists() else {}
    res.update(seed=args.seed, host=platform.node(), cpus=os.cpu_count())
    timings = res.setdefault("timings_s", {})
    for k, fn in ((1, lambda: part1(args.seed)), (2, lambda: part2(args.seed)),
                  (3, lambda: part3(args.seed, args.chunks, args.chunk_cmds))):
        if k in parts:
            t0 = time.perf_counter()
            val = fn()
            # re-read: another invocation (--parts) may have written other parts meanwhile
            res = {**(json.loads(jpath.read_text()) if jpath.exists() else {}),
                   **{k_: v for k_, v in res.items()
                      if not k_.startswith("part") and k_ != "timings_s"}}
            res[f"part{k}"] = val
            timings = res.setdefault("timings_s", {})
            timings[f"part{k}"] = round(time.perf_counter() - t0, 1)
            jpath.write_text(json.dumps(res, indent=1, default=str) + "\n")
    md = render(res)
    (RESULTS / "controller.md").write_text(md + "\n")
    print(md)
    print(f"[controller] timings (s): {timings}; wrote {jpath} and controller.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
