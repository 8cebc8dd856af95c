"""Controller policies measured in the RTL (Verilated PimModule / PimChannel in lockstep with the
golden models, so every number below is also a proof that RTL == model on that run).

    python -m bench.controller [--seed S] [--parts 1,2,3] [--chunks 20] [--chunk-cmds 50000]

1. Policy matrix on one module configuration (CFG below): one decode step of attention for a
   request mix whose lengths follow the LongBench/LV-Eval means (compiler.attention.request_mix),
   for {HFP, TCP} x {in-order, DCS} x {static, DPA}; plus batch 1 (one request, one KV head).
   Capacity (DPA vs static, as PIMphony measures it): (a) RTL: TCP, a 4-request mix whose
   static reservation (max_context) is well above the live lengths; (b) page accounting
   only (no RTL) at benchmark scale: the LongBench/LV-Eval mean lengths vs a 128K static
   reservation, with the page allocator's TCP page count (compiler.pages.kv_pages).
2. Long QK^T stream on one channel (compiler.programs.qk_stream_program), DCS vs in-order,
   steady state; plus a reordered stream (bench-side builder); where the cycles go.
3. Robustness: >= 10^6 random host commands (valid and malformed) on a tiny module, RTL vs
   model in lockstep, in chunks.

Writes ``<out>/controller.json`` and ``<out>/controller.md`` (default ``build/bench/``; ``cimphony
bench --only controller`` takes the same options).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench import results
from compiler import attention as A
from compiler.pages import kv_pages
from model.channel import ChannelModel
from spec.isa import ChannelParams, ModuleParams, Op, encode
from model.module import ModuleModel
from compiler.programs import decode_out, qk_stream_program
from spec.params import MacroParams, check_int, pack_vec
from workloads.mix import BENCH_MEANS


# Module under test: 16x16 8-bit macros, 8 weight sets (pages) per macro, 4 banks, 4 channels.
# n_sets = 8 (not 2): a page holds only 16 tokens x 16 dims, and HFP reserves a request's page
# in every channel (module-wide page table), so with 2 sets no mix of >= 2 requests fits.
MACRO = MacroParams(n_in=16, n_out=16, w_bits=8, x_bits=8, n_sets=8, n_acc=8, tree_stages=1)
CHAN = ChannelParams(MACRO, n_banks=4, n_gbuf=16, q_depth=8, dcs=True)
CFG = ModuleParams(CHAN, n_ch=4, n_vpages=64, n_req=4, fifo_depth=16, loop_len=8)
# workload of part 1 (scaled LongBench/LV-Eval means; Llama-like GQA group of 4 query heads)
MIX = dict(n=2, max_context=128, head_dim=16, group=4, kv_heads=1)
MIX_BIG = dict(n=3, max_context=128, head_dim=16, group=4, kv_heads=1)   # fit check only
# capacity experiment (a), RTL: 4 requests x (4 K + 4 V pages) of static reservation = all 32
# pages of CFG; live lengths are request_mix's scaled benchmark means (<= max_context)
CAP_MIX = dict(n=4, max_context=256, head_dim=16, group=4, kv_heads=1)
# capacity experiment (b), page accounting at benchmark scale (ANCHORS.md)
CAP_MAX_CONTEXT = 128 * 1024
CAP_SCALES = {   # name: (macro n_in, n_out, w_bits, channels, head_dim)
    "bench module (16x16 macro, 4 ch), head_dim 128": (16, 16, 8, 4, 128),
    "PIMphony-size module (64x64 macro, 16 ch), head_dim 128": (64, 64, 8, 16, 128),
}
CAP_CHUNK_BYTES = 1 << 20   # PIMphony allocates in 1 MB chunks (secondary)
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
    exact = all(np.array_equal(o, e) for o, e in zip(dec.o, prog.expected_o, strict=True))
    cos = min(float(np.dot(o.ravel(), r.ravel()) / (np.linalg.norm(o) * np.linalg.norm(r)))
              for o, r in zip(dec.o, prog.reference, strict=True))
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
    # Llama-3.1-8B attention shape (head_dim 128, GQA group of 4 query heads per KV head), TCP
    L8 = dict(T=128, head_dim=128, group=4)
    llama = A.llama_shaped_decode(contexts=(L8["T"],), head_dim=L8["head_dim"],
                                  group=L8["group"], kv_heads=1, seed=seed)
    out["llama8b"] = dict(L8, rows=[])
    for dcs in (False, True):
        try:
            r = run_step(_with_dcs(CFG, dcs), llama, "TCP", "dpa", seed,
                         label=f"ctl_l8_{int(dcs)}")
        except ValueError as e:
            r = dict(fits=False, why=str(e))
        r.update(partition="TCP", sched="DCS" if dcs else "in-order", alloc="dpa")
        out["llama8b"]["rows"].append(r)
    out["capacity_rtl"] = capacity_rtl(seed)
    out["capacity_accounting"] = capacity_accounting()
    return out


# ------------------------------------------------------------------------------------------
# Part 1, capacity: DPA vs static
def tcp_capacity(tokens, max_context: int, C: int, n_in: int, n_out: int, w_bits: int, d: int,
                 chunk_pages: int = 1) -> dict:
    """Capacity utilisation (live KV bytes / reserved bytes) static vs DPA, per KV head (the
    same for every head and layer), with the page allocator's count of one TCP KV head
    (:func:`compiler.pages.kv_pages`: tokens interleaved over C channels, K in key blocks of
    n_out tokens x ceil(d / n_in) d-chunks, V in token chunks of n_in tokens x ceil(d / n_out)
    dim chunks; a page is one n_in x n_out tile in each of the C channels).  static: pages for
    ``max_context``; dpa: pages for the live tokens, rounded up to ``chunk_pages``
    (allocation granularity) per request."""
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__iter__") or not list(tokens):
        raise ValueError(f"tcp_capacity: tokens={tokens!r} must be a non-empty list of lengths")
    tokens = [check_int(f"tcp_capacity: tokens[{i}]", T, 1) for i, T in enumerate(tokens)]
    for name, v in (("max_context", max_context), ("C", C), ("n_in", n_in), ("n_out", n_out),
                    ("w_bits", w_bits), ("d", d), ("chunk_pages", chunk_pages)):
        check_int(f"tcp_capacity: {name}", v, 1)
    page_bytes = C * n_in * n_out * w_bits // 8
    rnd = lambda k: -(-k // chunk_pages) * chunk_pages            # noqa: E731
    live = [2 * T * d * w_bits // 8 for T in tokens]
    st = [rnd(kv_pages(max_context, C, n_in, n_out, d)) for _ in tokens]
    dp = [rnd(kv_pages(T, C, n_in, n_out, d)) for T in tokens]
    res = dict(page_bytes=page_bytes, tokens_per_k_page=n_out * C, chunk_pages=chunk_pages,
               static_pages=sum(st), dpa_pages=sum(dp),
               static=sum(live) / (sum(st) * page_bytes), dpa=sum(live) / (sum(dp) * page_bytes),
               per_request=[dict(T=T, static=lv / (a * page_bytes), dpa=lv / (b * page_bytes),
                                 static_pages=a, dpa_pages=b)
                            for T, lv, a, b in zip(tokens, live, st, dp, strict=True)])
    return res


def capacity_rtl(seed: int) -> dict:
    """(a) On the RTL: TCP, DCS, CAP_MIX under static and DPA (unrolled and LOOP over the
    live token count).  Capacity numbers come from the program's page table (the pages it
    MAPs on the RTL); they are cross-checked against tcp_capacity's accounting."""
    reqs = A.request_mix(seed=seed, **CAP_MIX)
    m = MACRO
    out = dict(config=CFG.tag, mix=CAP_MIX, requests=[r.name for r in reqs],
               tokens=[r.T for r in reqs], rows=[])
    acct = tcp_capacity([r.T for r in reqs], CAP_MIX["max_context"], CFG.n_ch, m.n_in, m.n_out,
                        m.w_bits, CAP_MIX["head_dim"])
    out["accounting"] = acct
    combos = [(alloc, loop) for alloc in ("static", "dpa") for loop in (False, True)]
    for alloc, loop in _tqdm(combos, desc="capacity TCP static vs DPA (RTL)", unit="run"):
        r = run_step(_with_dcs(CFG, True), reqs, "TCP", alloc, seed, loop=loop,
                     label=f"ctl_cap_{alloc}_{int(loop)}")
        r.update(partition="TCP", sched="DCS", alloc=alloc, loop=loop)
        if r["fits"] and not loop:
            want = acct["static" if alloc == "static" else "dpa"]
            if abs(r["cap_util"] - want) > 1e-12 or r["mapped_pages"] != acct[f"{alloc}_pages"]:
                raise RuntimeError(f"capacity accounting {want} / {acct[f'{alloc}_pages']} pages "
                                   f"!= program {r['cap_util']} / {r['mapped_pages']} pages")
        out["rows"].append(r)
    return out


def capacity_accounting() -> dict:
    """(b) Page accounting only (no RTL): one request per benchmark at its mean length
    (ANCHORS.md), static reservation CAP_MAX_CONTEXT, TCP pages (compiler.pages.kv_pages)."""
    toks = list(BENCH_MEANS.values())
    out = dict(benchmarks=list(BENCH_MEANS), tokens=toks, max_context=CAP_MAX_CONTEXT,
               scales=[])
    for name, (ni, no, wb, C, d) in CAP_SCALES.items():
        row = dict(name=name, n_in=ni, n_out=no, w_bits=wb, n_ch=C, head_dim=d,
                   page=tcp_capacity(toks, CAP_MAX_CONTEXT, C, ni, no, wb, d))
        pb = row["page"]["page_bytes"]
        if CAP_CHUNK_BYTES % pb == 0 and CAP_CHUNK_BYTES > pb:
            row["chunk"] = tcp_capacity(toks, CAP_MAX_CONTEXT, C, ni, no, wb, d,
                                        chunk_pages=CAP_CHUNK_BYTES // pb)
        out["scales"].append(row)
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


def cycle_profile(cp: ChannelParams, cmds) -> dict:
    """Where a channel run's bank-cycles go, from the golden model's per-cycle ``busy`` vector
    (the lockstep compares ``busy`` with the RTL's every cycle, so this is the RTL's profile):
    prologue (cycles before the first MAC applies a bit: all banks idle), the window from the
    first to the last busy cycle (idle bank-cycles in it split at the issue of the last WR_W:
    while weights are still being loaded / after), and the epilogue (last busy cycle to the
    end of the run: result latency, OBuf write, RD_OUTs, the driver's TAIL)."""
    mm = ChannelModel(cp)
    B = cp.n_banks
    busy, last_ww = [], [-1]
    inner = mm.step

    def step(*a):
        head = mm._ioq[0] if mm._ioq else None
        o = inner(*a)
        if head is not None and head[0] == int(Op.WR_W) and (not mm._ioq or mm._ioq[0] is not head):
            last_ww[0] = mm.cycle - 1          # the WR_W issued in this cycle
        busy.append(bin(o.busy).count("1"))
        return o
    mm.step = step
    tr = mm.run(cmds)
    nz = [i for i, x in enumerate(busy) if x]
    f, l, w = nz[0], nz[-1], last_ww[0]
    idle_load = sum(B - x for x in busy[f:min(l, w) + 1]) if w >= f else 0
    idle_after = sum(B - x for x in busy[max(f, w + 1):l + 1])
    return dict(cycles=tr.cycles, busy_bank_cycles=sum(busy), first_busy=f, last_busy=l,
                last_wr_w_issue=w, prologue_cycles=f, epilogue_cycles=tr.cycles - l - 1,
                idle_bank_cycles_while_loading=idle_load, idle_bank_cycles_after_load=idle_after,
                util_window=sum(busy) / ((l - f + 1) * B), util_total=sum(busy) / (tr.cycles * B))


def part2(seed: int, n_q=(32, 64), head_dim: int = 128) -> dict:
    from tb.build import run_channel_lockstep
    rng = np.random.default_rng(seed)
    B = CHAN.n_banks
    K = rng.integers(-128, 128, (B * MACRO.n_out, head_dim))
    Qs = {n: rng.integers(-128, 128, (n, head_dim)) for n in n_q}
    out = dict(channel=CHAN.tag, head_dim=head_dim, n_keys=int(K.shape[0]), n_q=list(n_q),
               kt_n=math.ceil(head_dim / MACRO.n_in), inorder_mac_cycles=MACRO.x_bits
               + MACRO.tree_stages + 2, rows=[])

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
    runs, loads, prof = {}, {}, {}
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
        if n == n_q[-1]:
            pf = cycle_profile(cp, cmds)
            if (pf["cycles"], pf["busy_bank_cycles"]) != (r["cycles"], sum(r["busy_cycles"])):
                raise RuntimeError("cycle_profile: model re-run differs from the lockstep run")
            prof[key] = pf
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
                macs_per_query=cnt["mac"] / n2,
                profile=prof[(dcs, name)], lockstep_cps=cps))
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
        l8 = p1.get("llama8b")
        if l8:
            L += ["", f"Llama-3.1-8B attention shape (head_dim {l8['head_dim']}, GQA group "
                      f"{l8['group']}, T={l8['T']}, TCP, DPA; synthetic data):", "",
                  "| scheduler | step cycles | MAC util | channel util | exact | cosine vs float |",
                  "|---|---:|---:|---:|---|---:|"]
            for r in l8["rows"]:
                if not r.get("fits", True):
                    L.append(f"| {r['sched']} | does not fit: {r['why']} | | | | |")
                    continue
                L.append(f"| {r['sched']} | {r['step_cycles']} | {_f(r['mac_util'])} | "
                         f"{_f(r['chan_util'])} | {r['exact']} | {_f(r.get('cosine_vs_float'), 4)} |")
        cr = p1.get("capacity_rtl")
        if cr:
            ac = cr["accounting"]
            L += ["", "### 1b. Capacity, DPA vs static (as PIMphony measures it)", "",
                  f"**(a) RTL** (module `{cr['config']}`, TCP, DCS): mix {cr['mix']} -> "
                  f"requests {cr['requests']}; static reserves max_context="
                  f"{cr['mix']['max_context']} tokens per request, DPA only the live tokens. "
                  "Capacity = live KV bytes / bytes of the pages the program MAPs on the RTL "
                  "(page = one 16x16 8-bit tile in each of the 4 channels, 1 KB: K holds 16 "
                  "tokens x 4 channels). Step cycles = RTL(program) - RTL(setup), lockstep.", "",
                  "| alloc | QK^T | capacity util | mapped pages (of "
                  f"{CFG.n_pages}) | step cycles | MAC util | exact |",
                  "|---|---|---:|---:|---:|---:|---|"]
            for r in cr["rows"]:
                lp = "LOOP over tok[rid]" if r["loop"] else "unrolled"
                if not r["fits"]:
                    L.append(f"| {r['alloc']} | {lp} | does not fit: {r['why']} | | | | |")
                    continue
                L.append(f"| {r['alloc']} | {lp} | {_f(r['cap_util'])} | {r['mapped_pages']} | "
                         f"{r['step_cycles']} | {_f(r['mac_util'])} | {r['exact']} |")
            L += ["", f"Page accounting (`compiler.pages.kv_pages`) of the same mix gives static "
                      f"{_f(ac['static'])} ({ac['static_pages']} pages), DPA {_f(ac['dpa'])} "
                      f"({ac['dpa_pages']} pages): identical to the RTL program's page table "
                      "(checked in the bench), which validates the accounting used in (b). "
                      "Static vs DPA does not change the step: both compute only the live tokens "
                      "(unrolled, or LOOP trip count = ceil(tok / tokens per iteration)); DPA "
                      f"leaves {ac['static_pages'] - ac['dpa_pages']} of the {CFG.n_pages} pages "
                      "free. DPA stays below 1 here because a page holds "
                      f"{ac['tokens_per_k_page']} tokens and these requests only "
                      f"{min(cr['tokens'])}-{max(cr['tokens'])}: each request's last, partly "
                      "filled K and V pages are a large share of its pages; at benchmark scale "
                      "(b) they are not."]
        ca = p1.get("capacity_accounting")
        if ca:
            L += ["", f"**(b) Page accounting only, no RTL** (benchmark scale): one request per "
                      "benchmark at its mean length "
                      f"{dict(zip(ca['benchmarks'], ca['tokens'], strict=True))} "
                      f"(ANCHORS.md); static reserves {ca['max_context']:,} tokens (128K) per "
                      "request; TCP pages as the attention compiler allocates them "
                      "(`compiler.pages.kv_pages`; K: n_out tokens x channels per page, V: "
                      "n_in tokens x channels). Per KV head (the same for every head and layer). "
                      "PIMphony: static 0.362 (0.310-0.405), dynamic 0.756 (secondary).", "",
                      "| scale | page | static util | DPA util | DPA util, 1 MB chunks per KV "
                      "head | per request static / DPA |",
                      "|---|---|---:|---:|---:|---|"]
            for row in ca["scales"]:
                pg, ch = row["page"], row.get("chunk")
                per = "; ".join(f"{b} {_f(x['static'], 2)} / {_f(x['dpa'], 3)}"
                                for b, x in zip(ca["benchmarks"], pg["per_request"], strict=True))
                L.append(f"| {row['name']} | {pg['page_bytes'] // 1024} KB, "
                         f"{pg['tokens_per_k_page']} tokens/K page | {_f(pg['static'])} | "
                         f"{_f(pg['dpa'])} | {_f(ch['dpa']) if ch else '-'} | {per} |")
            L += ["", "Static utilisation is sum(T) / (4 x 128K) whatever the page size (0.270 "
                      "for these means; PIMphony's 0.362 averages its own length "
                      "distributions); DPA only loses the last partly filled page (or chunk) "
                      "of each request."]
    p2 = res.get("part2")
    if p2:
        L += ["", f"## 2. Long QK^T stream on one channel `{p2['channel']}`", "",
              f"head_dim {p2['head_dim']} ({p2['kt_n']} k-tiles), {p2['n_keys']} resident keys, "
              f"n_q {p2['n_q']}. All rows RTL (lockstep). util (marginal) = d busy / (d cycles x "
              "banks) between the two n_q: pure steady state. util (MAC window) = busy / "
              "((last - first busy cycle + 1) x banks) at the larger n_q. util (minus load) = "
              "busy / ((cycles(program) - cycles(load-only)) x banks): it can exceed 1 when "
              "the program overlaps weight loads with compute. PIMphony in-order baseline: "
              "0.147 (head_dim 128).", "",
              "| scheduler | program | cycles | util (marginal) | util (MAC window) | "
              "util (minus load) | cycles/query (ideal) | cmds/query |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in p2["rows"]:
            pf = r.get("profile", {})
            L.append(f"| {r['sched']} | {r['program']} | {r['cycles']} | "
                     f"**{_f(r['util_marginal'])}** | {_f(pf.get('util_window'))} | "
                     f"{_f(r.get('util_minus_load'))} | "
                     f"{_f(r['cycles_per_query'], 1)} ({r['ideal_cycles_per_query']}) | "
                     f"{_f(r.get('cmds_per_query'), 0)} |")
        B = CHAN.n_banks
        L += ["", f"Where the bank-cycles go at n_q={p2['n_q'][-1]} (per-cycle `busy` of the "
                  "run; the lockstep checks it against the RTL every cycle):", "",
              "| scheduler | program | cycles | busy bank-cycles | prologue (no MAC yet) | "
              "idle in MAC window while loading K | idle in window after load | epilogue |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in p2["rows"]:
            pf = r.get("profile")
            if not pf:
                continue
            L.append(f"| {r['sched']} | {r['program']} | {pf['cycles']} | "
                     f"{pf['busy_bank_cycles']} | {pf['prologue_cycles']} cyc | "
                     f"{pf['idle_bank_cycles_while_loading']} bank-cyc | "
                     f"{pf['idle_bank_cycles_after_load']} bank-cyc | "
                     f"{pf['epilogue_cycles']} cyc |")
        ino = next((r for r in p2["rows"] if r["sched"] == "in-order"), None)
        if ino:
            X, mc = MACRO.x_bits, p2["inorder_mac_cycles"]
            macs, io = ino["macs_per_query"], ino["cmds_per_query"] - ino["macs_per_query"]
            L += ["", f"* In-order: each MAC holds the channel for X+P+2 = {mc} cycles (issue to "
                      f"OBuf write) and every I/O command for 1, so a query costs {macs:.0f} x "
                      f"{mc} + {io:.0f} = {macs * mc + io:.0f} cycles in which each bank computes "
                      f"{macs / B:.0f} x {X} = {macs / B * X:.0f}: "
                      f"{macs / B * X / (macs * mc + io):.3f}."]
        dr = [r for r in p2["rows"] if r["sched"] == "DCS" and r.get("profile")]
        for r in dr:
            pf = r["profile"]
            lost = pf["cycles"] * B - pf["busy_bank_cycles"]
            L.append(f"* DCS, {r['program']}: steady state {_f(r['util_marginal'])} "
                     f"({_f(r['cycles_per_query'], 1)} cycles/query = {p2['kt_n']} k-tiles x "
                     f"{MACRO.x_bits} bit cycles per bank; the {r['cmds_per_query'] - r['macs_per_query']:.0f}"
                     f" I/O commands per query issue from the I/O queue in parallel). "
                     f"Of the {lost} idle bank-cycles of the whole run: prologue "
                     f"{pf['prologue_cycles']} x {B} = {pf['prologue_cycles'] * B}, "
                     f"{pf['idle_bank_cycles_while_loading']} while the K tiles are still being "
                     f"written, {pf['idle_bank_cycles_after_load']} after, epilogue "
                     f"{pf['epilogue_cycles']} x {B} = {pf['epilogue_cycles'] * B}.")
        lib = next((r for r in dr if r["program"] == "qk_stream_program"), None)
        reo = next((r for r in dr if r["program"] != "qk_stream_program"), None)
        nww = B * MACRO.n_sets * MACRO.n_in
        if lib and reo:
            pl, pr = lib["profile"], reo["profile"]
            first = max(1, MACRO.n_acc // 2)
            L += [f"* So at DCS the steady state is full; what remains is one-off. The K load is "
                  f"{nww} WR_Ws at one I/O command per cycle. The reordered program writes all of "
                  f"it before its first MAC (prologue {pr['prologue_cycles']} cycles), then its "
                  f"banks idle only {pr['idle_bank_cycles_after_load']} bank-cycles: MACs leave the "
                  f"single compute queue one per cycle, so the {B} banks start (and finish) 0..{B - 1}"
                  f" cycles apart. The library builder starts computing after "
                  f"{pl['prologue_cycles']} cycles and overlaps the rest of the load (until cycle "
                  f"{pl['last_wr_w_issue']}) with its first batch, but that batch is only "
                  f"n_acc/2 = {first} queries (each holds an OBuf entry per bank until its "
                  f"{p2['kt_n']} k-tiles are done), i.e. {first} x {MACRO.x_bits} busy cycles per "
                  f"bank per set slot against ~{B * MACRO.n_in} cycles to load the next slot: "
                  f"{pl['idle_bank_cycles_while_loading']} idle bank-cycles during the load. It "
                  f"still ends first ({pl['cycles']} vs {pr['cycles']} cycles). Whole-run "
                  f"utilisation at n_q={p2['n_q'][-1]}: {_f(pl['util_total'])} (library), "
                  f"{_f(pr['util_total'])} (reordered); it tends to the marginal one as the "
                  "stream grows. Epilogue: the last result P+1 cycles after the last bit, the "
                  "OBuf write, the last RD_OUT and the driver's 2-cycle tail."]
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


DEFAULT_SEED = 7
PARTS = (1, 2, 3)


def parts_arg(text: str) -> frozenset[int]:
    """argparse type of ``--parts``: a comma-separated non-empty subset of 1,2,3."""
    items = [x.strip() for x in text.split(",")]
    if not text.strip() or any(x not in {str(k) for k in PARTS} for x in items):
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of parts "
                                         f"{','.join(map(str, PARTS))}, got {text!r}")
    return frozenset(int(x) for x in items)


def add_arguments(ap, common: bool = True) -> None:
    """Options of ``bench.controller``; ``common``: also ``--seed`` and ``--out`` (which
    ``cimphony bench`` shares between the benches)."""
    from cimphony.cli import positive_int
    if common:
        results.add_common(ap, DEFAULT_SEED, "seed")
    ap.add_argument("--parts", type=parts_arg, metavar="1,2,3", default=frozenset(PARTS),
                    help="parts to run, comma-separated subset of 1,2,3 (default: all)")
    ap.add_argument("--chunks", type=positive_int, metavar="N", default=20,
                    help="part 3: chunks of random host commands")
    ap.add_argument("--chunk-cmds", type=positive_int, metavar="N", default=50_000,
                    help="part 3: host commands per chunk")


def outputs(args) -> list[Path]:
    """Files :func:`run` writes for ``args``."""
    return results.outputs(args.out, "controller")


def main(argv=None) -> int:
    return results.main(argv, "python -m bench.controller", __doc__, add_arguments, run)


def run(args) -> int:
    """Run the selected parts, merge them into ``<out>/controller.json``, render the .md."""
    parts = set(args.parts)
    print(f"[controller] seed {args.seed} (SEED=n to change), parts {sorted(parts)}", flush=True)
    jpath, mpath = outputs(args)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    res = results.read_json(jpath)
    res.update(seed=args.seed, host=platform.node(), cpus=os.cpu_count())
    timings = res.setdefault("timings_s", {})
    for k, fn in ((1, lambda: part1(args.seed)), (2, lambda: part2(args.seed)),
                  (3, lambda: part3(args.seed, args.chunks, args.chunk_cmds))):
        if k in parts:
            t0 = time.perf_counter()
            val = fn()
            # re-read: another invocation (--parts) may have written other parts meanwhile
            res = {**results.read_json(jpath),
                   **{k_: v for k_, v in res.items()
                      if not k_.startswith("part") and k_ != "timings_s"}}
            res[f"part{k}"] = val
            timings = res.setdefault("timings_s", {})
            timings[f"part{k}"] = round(time.perf_counter() - t0, 1)
            results.write_json(jpath, res, indent=1)
    results.write_md(mpath, render(res))
    print(f"[controller] timings (s): {timings}; wrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
