"""Host-side program builder for ONE decode step of attention on ONE PimModule, and its
functional reference.

Input: a list of :class:`Request` s, each with its own KV cache ``K``, ``V`` [H, T, d] and query
heads ``q`` [H, g, d], float32.  :func:`build_program` returns a :class:`Program`: host commands
``[(host_cmd, gap)]`` for :meth:`model.module.ModuleModel.run`, ``decode(out_payloads)``, the
float reference, capacity numbers and ``useful_macs``.  Numerics, the mapping on the DIMC
macro, partitioning, allocation, loops and the program layout: docs/compiler.md ("Attention
on one module").  The decode-step commands are built by :mod:`compiler.attention.step`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from compiler.pages import PageAllocator, kv_blocks
from spec.isa import HostOp, ModuleParams, host_encode, mod_out_fields
from spec.params import check_int, pack_vec, unpack_vec
from workloads.quant import quantise_per_channel, quantise_per_token

__all__ = ["Request", "Program", "DecodeOut", "build_program", "reference_attention",
           "chan_tokens", "pad", "pow2_floor", "place_beat"]


@dataclass
class Request:
    """One request: K, V [H, T, d] (or [T, d]), q [H, g, d] (or [g, d]), float32;
    ``max_context`` (tokens, an int >= T; default T) is its static reservation."""
    K: np.ndarray
    V: np.ndarray
    q: np.ndarray
    max_context: int | None = None
    name: str = ""

    def __post_init__(self):
        try:
            K, V, q = (np.asarray(a, dtype=np.float32) for a in (self.K, self.V, self.q))
        except (TypeError, ValueError) as e:
            raise ValueError(f"Request {self.name!r}: K, V, q must be float arrays ({e})") \
                from None
        if K.ndim == 2:
            K, V = K[None], V[None]
        if q.ndim == 2 and K.ndim == 3 and K.shape[0] == 1:
            q = q[None]
        if K.ndim != 3 or V.shape != K.shape or q.ndim != 3 or q.shape[0] != K.shape[0] \
                or q.shape[2] != K.shape[2] or K.shape[1] < 1 or q.shape[1] < 1 \
                or K.shape[2] < 1:
            raise ValueError(f"Request {self.name!r}: shapes K {K.shape}, V {V.shape}, q {q.shape}"
                             " must be K, V [H, T, d] and q [H, g, d]")
        if not (np.all(np.isfinite(K)) and np.all(np.isfinite(V)) and np.all(np.isfinite(q))):
            raise ValueError(f"Request {self.name!r}: non-finite values")
        self.K, self.V, self.q = K, V, q
        if self.max_context is None:
            self.max_context = self.T
        self.max_context = check_int(f"Request {self.name!r}: max_context", self.max_context)
        if self.max_context < self.T:
            raise ValueError(f"Request {self.name!r}: max_context={self.max_context} < T={self.T}")

    @property
    def H(self): return self.K.shape[0]

    @property
    def T(self): return self.K.shape[1]

    @property
    def d(self): return self.K.shape[2]

    @property
    def g(self): return self.q.shape[1]


def reference_attention(K, V, q) -> np.ndarray:
    """softmax(q K^T / sqrt(d)) V for one KV head: K, V [T, d], q [g, d]; float32 inputs,
    computed in float64."""
    try:
        K, V, q = (np.asarray(a, dtype=np.float64) for a in (K, V, q))
    except (TypeError, ValueError) as e:
        raise ValueError(f"reference_attention: K, V, q must be float arrays ({e})") from None
    if K.ndim != 2 or V.shape != K.shape or q.ndim != 2 or q.shape[1] != K.shape[1] \
            or K.size == 0 or q.size == 0:
        raise ValueError(f"reference_attention: shapes K {K.shape}, V {V.shape}, q {q.shape} "
                         "must be K, V [T, d] and q [g, d]")
    s = q @ K.T / math.sqrt(K.shape[1])
    s -= s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return (e / e.sum(axis=1, keepdims=True)) @ V


@dataclass
class DecodeOut:
    o: list            # per request [H, g, d] float64 (dequantised module output)
    scores: list       # per request [H, g, T] int64 (the module's QK^T integers)
    acc: list          # per request [H, g, d] int64 (summed SV partials)


@dataclass
class Program:
    params: ModuleParams
    cmds: list                         # [(host_cmd, gap)]
    decode: Callable = field(repr=False)
    reference: list = field(repr=False)   # per request [H, g, d] float64 (float32 inputs)
    expected_scores: list = field(repr=False)   # per request [H, g, T] int64
    expected_o: list = field(repr=False)        # per request [H, g, d]: exact module output
    capacity: dict = field(default_factory=dict)
    useful_macs: int = 0               # real multiply-accumulates: 2 * sum H g T d
    mac_ops: int = 0                   # MACs executed by macros (cmds x channels) x n_in x n_out
    n_setup: int = 0                   # leading MAP/WR_W commands (KV cache load)
    n_reads: int = 0                   # out beats expected
    partition: str = "TCP"
    alloc: str = "dpa"
    loop: bool = False
    info: dict = field(default_factory=dict)
    page_table: dict = field(default_factory=dict, repr=False)   # vp -> (rid, pp)


def pow2_floor(x: int) -> int:
    """The largest power of two <= max(1, x)."""
    return 1 << (max(1, x).bit_length() - 1)


def pad(v, n):
    """``v`` zero-padded to ``n`` int64 values."""
    out = np.zeros(n, dtype=np.int64)
    out[:len(v)] = v
    return out


def chan_tokens(T: int, c: int, C: int, tcp: bool) -> np.ndarray:
    """Global token of local index j on channel ``c`` (TCP interleave), as an array."""
    return np.arange(c, T, C) if tcp else np.arange(T)


def place_beat(scores, acc, kind: str, qi: int, k: int, y, T: int, c: int, C: int,
               tcp: bool, NO: int) -> None:
    """Put result beat ``y`` of one head (query ``qi``) where it belongs: a QK^T beat of key
    block ``k`` of channel ``c`` into ``scores`` [g, T] at the tokens it holds, an SV beat of
    dim chunk ``k`` added into ``acc`` [g, d]."""
    if kind == "qk":
        toks = chan_tokens(T, c, C, tcp)
        loc = np.arange(k * NO, (k + 1) * NO)
        ok = loc < len(toks)
        scores[qi, toks[loc[ok]]] = y[ok]
    else:
        n = min(NO, acc.shape[1] - k * NO)
        acc[qi, k * NO:k * NO + n] += y[:n]


def _check(p, requests, partition, alloc, loop, max_context) -> list:
    if not isinstance(p, ModuleParams):
        raise ValueError(f"build_program: p={p!r} must be a ModuleParams")
    if partition not in ("HFP", "TCP"):
        raise ValueError(f"build_program: partition={partition!r} must be 'HFP' or 'TCP'")
    if alloc not in ("static", "dpa"):
        raise ValueError(f"build_program: alloc={alloc!r} must be 'static' or 'dpa'")
    if not isinstance(loop, bool):
        raise ValueError(f"build_program: loop={loop!r} must be a bool")
    if isinstance(requests, (Request, str, bytes)) or not isinstance(requests, (list, tuple)):
        raise ValueError(f"build_program: requests={requests!r} must be a list of Requests")
    reqs = []
    for i, r in enumerate(requests):
        if isinstance(r, Request):
            reqs.append(r)
        elif isinstance(r, (list, tuple)) and 3 <= len(r) <= 5:
            reqs.append(Request(*r))
        else:
            raise ValueError(f"build_program: requests[{i}]={r!r} must be a Request or "
                             "(K, V, q)")
    if not reqs:
        raise ValueError("build_program: no requests")
    if max_context is not None:
        check_int("build_program: max_context", max_context, 1)
        for r in reqs:
            if max_context < r.T:
                raise ValueError(f"max_context={max_context} < T={r.T} of request {r.name!r}")
    return reqs


def _numerics(reqs, m):
    """Quantisation, exact integers, host softmax, SV inputs (docs/compiler.md, Numerics):
    per (request, head) dict(kq, vq, qq, wq, wscale); float reference, exact scores and
    outputs per request."""
    heads, ref, exp_scores, exp_o = {}, [], [], []
    for ri, r in enumerate(reqs):
        ref.append(np.stack([reference_attention(r.K[h], r.V[h], r.q[h]) for h in range(r.H)]))
        sc, oo = [], []
        for h in range(r.H):
            kq = quantise_per_channel(r.K[h], m.w_bits)       # one scale per token
            vq = quantise_per_channel(r.V[h], m.w_bits)       # one scale per token
            qq = quantise_per_token(r.q[h], m.x_bits)         # one scale per query head
            Sint = qq.q @ kq.q.T                              # [g, T] exact
            s = Sint * qq.scale[:, None] * kq.scale[None, :] / math.sqrt(r.d)
            s = s - s.max(axis=1, keepdims=True)
            e = np.exp(s)
            prob = e / e.sum(axis=1, keepdims=True)
            wq = quantise_per_token(prob * vq.scale[None, :], m.x_bits)   # per query head
            acc = wq.q @ vq.q                                 # [g, d] exact
            sc.append(Sint)
            oo.append(acc * wq.scale[:, None])
            heads[(ri, h)] = dict(kq=kq.q, vq=vq.q, qq=qq.q, wq=wq.q, wscale=wq.scale)
        exp_scores.append(np.stack(sc))
        exp_o.append(np.stack(oo))
    return heads, ref, exp_scores, exp_o


def _place(p, reqs, tcp, alloc, loop, max_context, choose_U):
    """Streams (virtual regions) and their physical pages.  A stream = (request, slot): HFP
    slot j = heads j*C .. j*C+C-1 on distinct channels, TCP slot = one head on all channels."""
    m, C = p.channel.macro, p.n_ch
    NI, NO, S = m.n_in, m.n_out, m.n_sets
    Cs = C if tcp else 1
    pages = PageAllocator(p, placement="banks")
    streams = []
    for ri, r in enumerate(reqs):
        kt_n, dc_n = math.ceil(r.d / NI), math.ceil(r.d / NO)
        ctx = r.T if alloc == "dpa" else (max_context or r.max_context)
        kb_n, tc_n = kv_blocks(ctx, Cs, NI, NO)        # key blocks, token chunks
        U = choose_U(kt_n, kb_n)
        per = None
        if loop:
            kb_n = math.ceil(kb_n / U) * U             # LOOP touches whole U-block iterations
            per = (U * NO * Cs).bit_length() - 1
            if per > 15:
                raise ValueError(f"LOOP per={per} does not fit its 4-bit field")
        if tcp:
            slots = [[(h, None)] for h in range(r.H)]
        else:
            slots = [[(h, (h + ri) % C) for h in range(j * C, min(r.H, (j + 1) * C))]
                     for j in range(math.ceil(r.H / C))]
        for j, hs in enumerate(slots):
            what = f"request {ri} ({r.name or 'r%d' % ri}) slot {j}"
            kv0 = pages.reserve_vpages(kb_n * kt_n, ri, what + " K")
            vv0 = pages.reserve_vpages(tc_n * dc_n, ri, what + " V")
            bank_of = {}
            for kb in range(kb_n):
                pps = pages.take(kt_n, what + f" K block {kb}")
                for kt in range(kt_n):
                    vp = kv0 + kb * kt_n + kt
                    bank_of[vp] = pps[kt] // S
                    pages.map(vp, pps[kt], ri)
            for tc in range(tc_n):
                for dc in range(dc_n):
                    pp = pages.take(1, what + f" V page ({tc},{dc})")[0]
                    vp = vv0 + tc * dc_n + dc
                    bank_of[vp] = pp // S
                    pages.map(vp, pp, ri)
            streams.append(dict(r=ri, heads=hs, kv0=kv0, vv0=vv0, kt_n=kt_n, dc_n=dc_n,
                                bank_of=bank_of, U=U, per=per))
    return pages, streams


def _kv_writes(p, reqs, streams, heads, tcp) -> list:
    """WR_W words of every resident KV-cache row (the setup after the MAPs)."""
    m, C = p.channel.macro, p.n_ch
    NI, NO = m.n_in, m.n_out
    out = []
    for st in streams:
        r = reqs[st["r"]]
        kt_n, dc_n = st["kt_n"], st["dc_n"]
        for h, ch in st["heads"]:
            hd = heads[(st["r"], h)]
            for c in (range(C) if tcp else [ch]):
                toks = chan_tokens(r.T, c, C, tcp)
                for kb in range(math.ceil(len(toks) / NO)):
                    tk = toks[kb * NO:(kb + 1) * NO]
                    for kt in range(kt_n):
                        vp = st["kv0"] + kb * kt_n + kt
                        for row in range(min(NI, r.d - kt * NI)):
                            vals = pad(hd["kq"][tk, kt * NI + row], NO)
                            out.append(host_encode(p, HostOp.WR_W, chmask=1 << c, rid=st["r"],
                                                   vp=vp, row=row,
                                                   data=pack_vec(vals, m.w_bits)))
                for tc in range(math.ceil(len(toks) / NI)):
                    tk = toks[tc * NI:(tc + 1) * NI]
                    for dc in range(dc_n):
                        vp = st["vv0"] + tc * dc_n + dc
                        for row, t in enumerate(tk):
                            vals = pad(hd["vq"][t, dc * NO:(dc + 1) * NO], NO)
                            out.append(host_encode(p, HostOp.WR_W, chmask=1 << c, rid=st["r"],
                                                   vp=vp, row=row,
                                                   data=pack_vec(vals, m.w_bits)))
    return out


def _decoder(p, reqs, reads, heads, exp_scores, tcp):
    """``decode(out_payloads) -> DecodeOut``: checks every beat's (channel, bank, entry)
    against ``reads`` (per channel, program order) and that the QK^T scores equal the exact
    integers the SV inputs were derived from."""
    m, C = p.channel.macro, p.n_ch
    NO = m.n_out
    fo = mod_out_fields(p)
    n_reads = sum(len(v) for v in reads.values())

    def fld(w, n):
        f = fo[n]
        return (w >> f.offset) & ((1 << f.width) - 1)

    def decode(out_payloads) -> DecodeOut:
        if len(out_payloads) != n_reads:
            raise ValueError(f"decode: {len(out_payloads)} out beats, expected {n_reads}")
        scores = [np.zeros((r.H, r.g, r.T), dtype=np.int64) for r in reqs]
        acc = [np.zeros((r.H, r.g, r.d), dtype=np.int64) for r in reqs]
        pos = {c: 0 for c in range(C)}
        for i, w in enumerate(out_payloads):
            c = fld(w, "chan")
            if c not in pos or pos[c] >= len(reads[c]):
                raise ValueError(f"decode: beat {i} from unexpected channel {c}")
            bank, o, tag = reads[c][pos[c]]
            pos[c] += 1
            if (fld(w, "bank"), fld(w, "o")) != (bank, o):
                raise ValueError(f"decode: beat {i} (chan {c}) is OBuf ({fld(w, 'bank')},"
                                 f"{fld(w, 'o')}), expected ({bank},{o}) for {tag}")
            y = np.array(unpack_vec(w, NO, m.acc_width), dtype=np.int64)
            kind, ri, h, qi, k, _ = tag
            place_beat(scores[ri][h], acc[ri][h], kind, qi, k, y, reqs[ri].T, c, C, tcp, NO)
        for ri in range(len(reqs)):
            if not np.array_equal(scores[ri], exp_scores[ri]):
                bad = np.argwhere(scores[ri] != exp_scores[ri])[0]
                raise ValueError(f"decode: QK^T score of request {ri} at (head, q, token) "
                                 f"{tuple(int(x) for x in bad)} differs from the exact integer the"
                                 " SV inputs were computed from")
        o = []
        for ri, r in enumerate(reqs):
            ws = np.stack([heads[(ri, h)]["wscale"] for h in range(r.H)])   # [H, g]
            o.append(acc[ri] * ws[:, :, None])
        return DecodeOut(o, scores, acc)
    return decode, n_reads


def build_program(p: ModuleParams, requests: list, partition: str = "TCP", alloc: str = "dpa",
                  loop: bool = False, max_context: int | None = None) -> Program:
    """Compile one decode step of attention for ``requests`` on module ``p``.

    partition  "HFP" | "TCP";  alloc  "static" | "dpa";  loop  use LOOP over tok[rid] for QK^T.
    max_context  static reservation per request (default: each request's ``max_context``).
    Raises ValueError naming a bad argument or the module limit that does not fit.
    """
    from compiler.attention.step import build_step
    reqs = _check(p, requests, partition, alloc, loop, max_context)
    cp, m = p.channel, p.channel.macro
    C, B, S, E, G, L = p.n_ch, cp.n_banks, m.n_sets, m.n_acc, cp.n_gbuf, p.loop_len
    NI, NO = m.n_in, m.n_out
    if len(reqs) > p.n_req:
        raise ValueError(f"n_req: {len(reqs)} requests, the module has n_req={p.n_req} ids")
    tcp = partition == "TCP"
    Cs = C if tcp else 1                       # channels sharing one head's tokens
    d_all = {r.d for r in reqs}
    kt_max = max(math.ceil(r.d / NI) for r in reqs)
    dc_max = max(math.ceil(r.d / NO) for r in reqs)
    if kt_max > G:
        raise ValueError(f"n_gbuf: head_dim {max(d_all)} needs {kt_max} query chunks resident in "
                         f"the GBuf, n_gbuf={G}")
    if kt_max > S:
        raise ValueError(f"n_sets: head_dim {max(d_all)} needs {kt_max} d-chunks accumulated in "
                         f"one bank, n_sets={S}")
    if kt_max > 2 ** m.acc_guard:
        raise ValueError(f"acc_guard: {kt_max} d-chunks would wrap the accumulator")
    if dc_max > E:
        raise ValueError(f"n_acc: head_dim {max(d_all)} needs {dc_max} OBuf entries per bank "
                         f"for SV (one per n_out-dim chunk), n_acc={E}")
    if S > 2 ** m.acc_guard:
        raise ValueError(f"acc_guard: up to n_sets={S} SV chunks accumulate per bank; more than "
                         f"2**acc_guard would wrap")
    # key blocks per QK iteration: U banks, a power of two (the LOOP's tokens per iteration)
    U_lim = pow2_floor(min(B, E, (L // (kt_max + 1)) if loop else B))
    if loop and kt_max + 1 > L:
        raise ValueError(f"loop_len: the QK^T loop body needs {kt_max + 1} commands, "
                         f"loop_len={L}")
    if loop and (NO * Cs) & (NO * Cs - 1):
        raise ValueError(f"LOOP per: tokens per iteration U*n_out*C'={NO * Cs}*U is not a power "
                         "of two (n_out and, for TCP, n_ch must be powers of two)")

    def choose_U(kt_n, kb_need):
        """Key blocks per iteration.  Unrolled: U_lim (grouping only).  LOOP: the loop touches
        whole iterations, so U is also the allocation granularity: U = 1 when kt_n = 1
        (consecutive iterations already alternate banks), else the largest power of two
        <= U_lim that does not exceed the blocks needed."""
        if not loop:
            return U_lim
        if kt_n == 1:
            return 1
        return min(U_lim, pow2_floor(kb_need))

    heads, ref, exp_scores, exp_o = _numerics(reqs, m)
    pages, streams = _place(p, reqs, tcp, alloc, loop, max_context, choose_U)
    setup_map = pages.map_words()
    setup_w = _kv_writes(p, reqs, streams, heads, tcp)
    step, reads, n_mac = build_step(p, reqs, streams, heads, tcp, loop)
    setup = setup_map + setup_w + [host_encode(p, HostOp.BARRIER)]   # KV cache resident first
    cmds = [(w, 0) for w in setup + step]
    decode, n_reads = _decoder(p, reqs, reads, heads, exp_scores, tcp)

    live = sum(r.H * r.T * r.d * 2 for r in reqs) * m.w_bits / 8
    reserved = pages.used * pages.page_bytes
    cap = dict(live_bytes=live, reserved_bytes=reserved, mapped_pages=pages.used,
               n_pages=p.n_pages, page_bytes=pages.page_bytes, vpages=pages.vpages_used,
               utilisation=live / reserved if reserved else 0.0)
    useful = sum(2 * r.H * r.g * r.T * r.d for r in reqs)
    info = dict(U=[st["U"] for st in streams], per=[st["per"] for st in streams],
                kt_n=kt_max, dc_n=dc_max,
                n_cmds=len(cmds), n_step=len(step), tokens=[r.T for r in reqs],
                heads=[r.H for r in reqs], group=[r.g for r in reqs], d=sorted(d_all))
    return Program(p, cmds, decode, ref, exp_scores, exp_o, cap, useful,
                   n_mac * NI * NO, len(setup), n_reads, partition, alloc, loop, info,
                   pages.page_table())
