"""Long-context QK^T through a PimModule whose channels hold DRAM-PIM banks.

The Llama-3.1-8B attention shape (head_dim 128, GQA 4: four queries against one KV head) with
the K cache in the DRAM rows of a ``bank_kind="dram"`` module (docs/dram_channel.md): one page
= one DRAM row of ``n_in = head_dim`` x ``n_out`` keys (key j of page vp is token
``vp * n_out + j``), written by host WR_Ws of column bursts (``spec.dram.to_bursts``); the
queries go to GBuf entries 0..G-1; each stripe of B pages (one row in every bank) is scored by
one MAC_AB per query (or B single-bank MACs), and its results leave by one RD_OUT per bank and
query.  :func:`qk_module_program` builds the host stream, :func:`run_qk_module` runs it through
the Verilated module in lockstep with the golden model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from spec.dram import to_bursts
from spec.isa import ChannelParams, HostOp, ModuleParams, host_encode, mod_out_fields
from spec.params import MacroParams, unpack, unpack_vec

__all__ = ["qk_module_params", "qk_module_program", "QKModuleProgram", "run_qk_module"]


def qk_module_params(n_tokens: int, *, head_dim: int = 128, keys_per_page: int = 16,
                     n_banks: int = 16, group: int = 4, dcs: bool = True,
                     timing=None, burst_bytes: int = 32, n_ch: int | None = None) -> ModuleParams:
    """``n_ch`` channels of ``n_banks`` DRAM banks (GDDR6-AiM timing by default) holding
    ``n_tokens`` keys, token-centric: channel c holds the c-th ``n_tokens / n_ch`` keys, in
    ``n_tokens / (n_ch * keys_per_page * n_banks)`` rows per bank, a page of ``head_dim x
    keys_per_page`` bytes (2 KB, AiM's row, for the defaults).  ``n_ch`` None: the fewest
    channels whose pages the 8-bit page numbers address (256 per channel)."""
    from spec.dram import GDDR6_AIM_TIMING
    stripe = keys_per_page * n_banks
    if n_ch is None:
        n_ch = max(1, math.ceil(n_tokens / (stripe * (256 // n_banks))))
    if n_tokens <= 0 or n_tokens % (stripe * n_ch):
        raise ValueError(f"qk_module_params: n_tokens={n_tokens} must be a positive multiple "
                         f"of n_ch x keys_per_page x n_banks = {n_ch * stripe}")
    rows = 1 << max(1, math.ceil(math.log2(n_tokens // (stripe * n_ch))))
    mp = MacroParams(n_in=head_dim, n_out=keys_per_page, n_sets=rows,
                     n_acc=1 << max(1, math.ceil(math.log2(2 * group))))
    cp = ChannelParams(mp, n_banks=n_banks, n_gbuf=max(2, group), q_depth=8, dcs=dcs,
                       all_bank=True, bank_kind="dram", burst_bytes=burst_bytes,
                       timing=timing or GDDR6_AIM_TIMING)
    nv = 1 << max(1, math.ceil(math.log2(n_banks * rows)))
    return ModuleParams(cp, n_ch=n_ch, n_vpages=nv, n_req=2, host_ready=True)


@dataclass
class QKModuleProgram:
    """Host commands [(word, gap)] of a QK^T and how to read its results.

    ``order[c]`` [(query, first token)] of channel c's out beats in arrival order (a beat =
    ``n_out`` consecutive tokens' scores; beats of different channels may interleave, the
    beat's ``chan`` field tells); ``expected`` int64 [G, T] = ``Qq @ Kq.T``; ``n_setup`` the
    leading MAP / WR_W / WR_INP commands; ``n_mac`` MAC or MAC_AB commands (each to every
    channel)."""
    params: ModuleParams
    cmds: list
    order: list
    expected: np.ndarray
    n_setup: int
    n_mac: int

    def scores(self, outs) -> np.ndarray:
        """Integer scores [G, T] from the module's out payloads (arrival order)."""
        p, m = self.params, self.params.channel.macro
        n = sum(len(o) for o in self.order)
        if len(outs) != n:
            raise ValueError(f"QKModuleProgram.scores: {len(outs)} out beats, expected {n}")
        f = mod_out_fields(p)
        s = np.zeros_like(self.expected)
        nxt = [iter(o) for o in self.order]
        for word in outs:
            beat = unpack(f, word)
            g, t0 = next(nxt[beat["chan"]])
            s[g, t0:t0 + m.n_out] = unpack_vec(beat["y"], m.n_out, m.acc_width)
        return s


def qk_module_program(p: ModuleParams, Kq, Qq, *, all_bank: bool = True) -> QKModuleProgram:
    """Keys ``Kq`` [T, D] and queries ``Qq`` [G, D] (int8 values) as a host stream for ``p``
    (:func:`qk_module_params`).  Stripe s = virtual pages ``s*B .. s*B+B-1`` mapped to row s of
    banks 0..B-1 (``pp = b*S + s``, what MAC_AB needs); query g accumulates into OBuf entry
    ``g + G*(s % 2)`` (two stripes in flight)."""
    cp = p.channel
    m, B, S = cp.macro, cp.n_banks, cp.macro.n_sets
    Kq, Qq = np.asarray(Kq, dtype=np.int64), np.asarray(Qq, dtype=np.int64)
    T, D = Kq.shape
    G = Qq.shape[0]
    if cp.bank_kind != "dram" or D != m.n_in or Qq.shape[1] != D:
        raise ValueError(f"qk_module_program: needs a DRAM module with n_in = head_dim = {D}")
    NC = p.n_ch
    Tc = T // NC                                   # keys per channel (token-centric)
    if T % (m.n_out * B * NC) or Tc // (m.n_out * B) > S or G > cp.n_gbuf \
            or 2 * G > m.n_acc:
        raise ValueError(f"qk_module_program: {T} keys x {G} queries do not fit {p}")
    enc = lambda op, **f: (host_encode(p, int(op), **f), 0)     # noqa: E731
    n_stripes = Tc // (m.n_out * B)
    every = (1 << NC) - 1
    cmds = []
    for s in range(n_stripes):
        for b in range(B):
            cmds.append(enc(HostOp.MAP, vp=s * B + b, pp=b * S + s, rid=0))
    # a WR_W activates, writes one burst and precharges (docs/dram_channel.md): column c of
    # every bank of a stripe in turn, so that consecutive ACTs are on different banks (tRRD
    # apart) instead of tRC + write recovery apart on one bank
    for ch in range(NC):
        Kc = Kq[ch * Tc:(ch + 1) * Tc]
        for s in range(n_stripes):
            bursts = [to_bursts(Kc[(s * B + b) * m.n_out:(s * B + b + 1) * m.n_out].T,
                                cp.burst_bytes) for b in range(B)]      # page [D, n_out]
            for c in range(len(bursts[0])):
                for b in range(B):
                    cmds.append(enc(HostOp.WR_W, chmask=1 << ch, rid=0, vp=s * B + b, row=c,
                                    data=int.from_bytes(bursts[b][c], "little")))
    for g in range(G):                             # the queries: into every channel's GBuf
        x = int.from_bytes(Qq[g].astype(np.int8).tobytes(), "little")
        cmds.append(enc(HostOp.WR_INP, chmask=every, g=g, data=x))
    n_setup = len(cmds)
    order, n_mac = [[] for _ in range(NC)], 0
    for s in range(n_stripes):
        for g in range(G):
            o = g + G * (s % 2)
            if all_bank:
                cmds.append(enc(HostOp.MAC_AB, chmask=every, rid=0, vp=s * B, g=g, o=o,
                                acc=0))
                n_mac += 1
            else:
                for b in range(B):
                    cmds.append(enc(HostOp.MAC, chmask=every, rid=0, vp=s * B + b, g=g, o=o,
                                    acc=0))
                    n_mac += 1
        for g in range(G):
            o = g + G * (s % 2)
            for b in range(B):
                cmds.append(enc(HostOp.RD_OUT, chmask=every, rid=0, vp=s * B + b, o=o))
                for ch in range(NC):
                    order[ch].append((g, ch * Tc + (s * B + b) * m.n_out))
    return QKModuleProgram(p, cmds, order, Qq @ Kq.T, n_setup, n_mac)


def run_qk_module(n_tokens: int, *, seed: int = 0, head_dim: int = 128, group: int = 4,
                  all_bank: bool = True, dcs: bool = True, n_banks: int = 16,
                  label: str = "qkmod") -> dict:
    """The Llama-3.1-8B QK^T shape at ``n_tokens`` through the DRAM module RTL in lockstep
    (``workloads.gemm.llama_attn_scores`` data, INT8 per-token queries and per-channel keys).

    Returns the lockstep result plus ``qk``: build time, cycles, cycles/s, and the checks
    ``exact_vs_numpy`` and ``cosine`` (dequantised scores vs float), and ``program`` (the
    :class:`QKModuleProgram`)."""
    from tb.build import Target, build, run_module_lockstep
    from workloads.gemm import cosine, llama_attn_scores
    from workloads.quant import dequantise_matmul, quantise_per_channel, quantise_per_token
    p = qk_module_params(n_tokens, head_dim=head_dim, n_banks=n_banks, group=group, dcs=dcs)
    wl = llama_attn_scores(MacroParams(), n_keys=n_tokens, head_dim=head_dim, group=group,
                           seed=seed)
    Q, K = wl.info["Q"], wl.info["K"]
    qq, kq = quantise_per_token(Q, 8), quantise_per_channel(K, 8)
    prog = qk_module_program(p, kq.q, qq.q, all_bank=all_bank)
    t0 = time.perf_counter()
    build(Target("module", p))
    build_s = time.perf_counter() - t0
    res = run_module_lockstep(p, prog.cmds, seed=seed, label=label)
    info = dict(tokens=n_tokens, head_dim=head_dim, group=group, banks=n_banks, channels=p.n_ch,
                rows=p.channel.macro.n_sets, all_bank=all_bank, dcs=dcs,
                commands=len(prog.cmds), n_setup=prog.n_setup, n_mac=prog.n_mac,
                build_or_reuse_s=round(build_s, 2), ok=res["ok"], cycles=res["cycles"],
                wall_s=round(res["wall_s"], 3), cycles_per_s=round(res["cycles_per_s"]),
                errors=len(res["errors"]))
    if res["ok"]:
        s = prog.scores(res["outputs"])
        info["exact_vs_numpy"] = bool(np.array_equal(s, prog.expected))
        deq = dequantise_matmul(s, qq.scale, kq.scale) / math.sqrt(head_dim)
        ref = Q.astype(np.float64) @ K.astype(np.float64).T / math.sqrt(head_dim)
        info["cosine"] = cosine(deq, ref)
    res["qk"] = info
    res["program"] = prog
    return res
