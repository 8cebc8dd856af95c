"""Host-side program builder for ONE decode step of attention on ONE PimModule, and its
functional reference (docs/module.md, docs/channel.md, spec/isa.py).

Input: a list of :class:`Request` s, each with its own KV cache ``K``, ``V`` [H, T, d] (H KV heads,
``[T, d]`` means H = 1) and query heads ``q`` [H, g, d] (the GQA group of g query heads sharing
each KV head), float32.  :func:`build_program` returns a :class:`Program`: host commands
``[(host_cmd, gap)]`` for :meth:`model.module.ModuleModel.run`, ``decode(out_payloads)``, the
float reference, capacity numbers and ``useful_macs``.

Numerics (symmetric, ``workloads/quant.py``)
  * K and V are quantised per token (one scale per cached token: an appended token never
    requantises the others); q per query head (x_bits).
  * QK^T: S_int[qi, t] = sum_d qq[qi, d] kq[t, d] exactly (the macro is bit-exact); the host
    computes s = S_int * sq[qi] * sk[t] / sqrt(d) and a numerically stable softmax in float64
    over ALL T tokens of the request (for TCP the channel segments are concatenated first, so
    the log-sum-exp merge of ANCHORS.md is not needed: the softmax is global).
  * SV: the input tile is w[t] = p[t] * sv[t] (probability times V's per-token scale, so V's
    row scales fold into the input), quantised per query head to x_bits (scale sw[qi]); the
    macro returns per-bank partial sums of sum_t qw[t] vq[t, :], which the host adds (over
    banks and, for TCP, over channels) in exact integers, then o = acc * sw[qi].
  * The SV-phase WR_INP data are computed at build time from the *exact* integer QK^T scores:
    they are known in advance because the RTL is proven bit-exact against the golden model by
    lockstep (and the golden model against numpy).  A real host would read the scores
    between the phases; here ``decode`` re-checks that the scores the module returned equal
    the ones the SV inputs were derived from and raises otherwise.  A BARRIER separates the
    two phases.

Mapping on the DIMC macro (page = one n_in x n_out weight set of one bank, same pp in every
channel; ``n_pages = n_banks * n_sets`` per channel)
  * QK^T: K is the stationary weight: page (kb, kt) holds, for n_out tokens (columns) of key
    block kb, the n_in dims (rows) of d-chunk kt.  The kt_n = ceil(d/n_in) pages of one key
    block are on ONE bank (different sets), because the accumulation over d-chunks happens in
    that macro's result entry; consecutive key blocks go to different banks.  q's d-chunks sit
    in kt_n GBuf entries; per key block: kt_n MACs (acc = kt > 0) and one RD_OUT of n_out scores.
    U key blocks (on U banks) are processed per iteration, MACs ordered kt-major so that
    consecutive MACs use different banks (DCS overlaps them); block u uses OBuf entry o_u.
  * SV: V is the weight: page (tc, dc) holds n_in tokens (rows) x n_out dims (columns) of dim
    chunk dc.  Per token chunk: one WR_INP of the probability tile, dc_n MACs (one per dim
    chunk, on different banks).  Each bank accumulates the chunks it holds (acc = 1 after its
    first) into entry o(dc); after all chunks one RD_OUT per (bank, dc) used; the host adds
    the partials.
  * Pages are placed round-robin over banks (a K block's kt_n sets on one bank, V pages one at a
    time), so consecutive MACs alternate banks.

Partitioning
  * HFP: each channel serves whole KV heads: head h of request r runs on channel (h + r) % C
    (chmask = that channel).  Heads of one request on different channels share virtual (hence
    physical) pages: the page table is module-wide, so a physical page owned by a request is
    unusable by other requests in every channel; a request with fewer KV heads than channels
    leaves the other channels' copies of its pages empty (counted in capacity).  Command
    streams of different channels are interleaved group by group so channels run in parallel.
  * TCP: one head's tokens are split evenly over all C channels, token-interleaved (token t on
    channel t % C at local index t // C: balanced within one token and append-friendly).
    WR_W per channel (its own slice); query WR_INP, MAC and RD_OUT multicast (chmask = all).
    The SV probability tiles differ per channel (different tokens), so the SV WR_INPs are per
    channel (chmask = 1 << c, same GBuf entry) and the MACs/RD_OUTs multicast.

Allocation
  * static: at admission, every page for ``max_context`` is MAPped (virtual range too).
  * dpa: pages (and virtual pages) only for the current tokens (rounded up to the loop's
    U-block granularity when ``loop``).
  Capacity utilisation = live KV bytes / reserved bytes (mapped pages x C channels x page
  bytes).  compiler/pages.py's PageAllocator is not used: it places pages in pp order (all sets of
  bank 0 first), one tokens-per-page for the whole request, and one contiguous range per
  request; this mapping needs bank-aware placement (a key block's d-chunks on one bank, banks
  alternating) and separate K and V regions with different tokens per page.

Loops
  * ``loop=True``: ``SET_TOK rid, T`` then, per query head, ``LOOP rid, n=U*(kt_n+1),
    per=log2(U*n_out*C'), vps=U*kt_n, os=0`` over the QK^T body (C' = C for TCP, 1 for HFP):
    the body runs ceil(T / 2**per) times.  The SV phase is unrolled even then: a LOOP replays
    identical WR_INP data and a fixed GBuf index ``g``, but every SV token chunk needs its own
    probability tile.  ``os`` = 0: OBuf indices are fixed per body (range-checked, never wrap).
  * ``loop=False``: everything unrolled by the host.

Program layout: MAPs and the KV-cache WR_Ws (setup, ``n_setup`` commands), then the decode
step: [SET_TOKs], QK^T phase, BARRIER, SV phase.  Gaps are 0; the host FIFO has no ready, so
use :func:`pace` (exact push times from the cycle-exact module model) before running.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from spec.isa import HostOp, ModuleParams, host_encode, mod_out_fields
from workloads.quant import quantise_per_channel, quantise_per_token
from spec.params import pack_vec, unpack_vec

__all__ = ["Request", "Program", "DecodeOut", "build_program", "pace", "run_program",
           "reference_attention", "minilm_decode", "llama_shaped_decode", "request_mix",
           "BENCH_MEANS", "minilm_params", "llama_params"]

# LongBench QMSum, Musique, LV-Eval multifieldqa, Loogle-SD mean context lengths (ANCHORS.md)
BENCH_MEANS = {"qmsum": 13966, "musique": 16362, "multifieldqa": 60780, "loogle_sd": 50693}


# ---------------------------------------------------------------------------------------------
@dataclass
class Request:
    """One request: K, V [H, T, d] (or [T, d]), q [H, g, d] (or [g, d]), float32."""
    K: np.ndarray
    V: np.ndarray
    q: np.ndarray
    max_context: int | None = None     # static reservation (default: T)
    name: str = ""

    def __post_init__(self):
        K, V, q = (np.asarray(a, dtype=np.float32) for a in (self.K, self.V, self.q))
        if K.ndim == 2:
            K, V = K[None], V[None]
        if q.ndim == 2 and K.shape[0] == 1:
            q = q[None]
        if K.ndim != 3 or V.shape != K.shape or q.ndim != 3 or q.shape[0] != K.shape[0] \
                or q.shape[2] != K.shape[2] or K.shape[1] < 1 or q.shape[1] < 1:
            raise ValueError(f"Request {self.name!r}: shapes K {K.shape}, V {V.shape}, q {q.shape}"
                             " must be K, V [H, T, d] and q [H, g, d]")
        if not (np.all(np.isfinite(K)) and np.all(np.isfinite(V)) and np.all(np.isfinite(q))):
            raise ValueError(f"Request {self.name!r}: non-finite values")
        self.K, self.V, self.q = K, V, q
        if self.max_context is None:
            self.max_context = self.T
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
    K, V, q = (np.asarray(a, dtype=np.float64) for a in (K, V, q))
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


# ---------------------------------------------------------------------------------------------
class _Pages:
    """Bank-aware physical page pool (pp = bank * n_sets + set) and a virtual page counter."""

    def __init__(self, p: ModuleParams):
        self.p = p
        self.S, self.B = p.channel.macro.n_sets, p.channel.n_banks
        self.free = [list(range(self.S)) for _ in range(self.B)]
        self.ptr = 0
        self.nvp = 0
        self.table = {}                # vp -> (rid, pp)

    def new_vps(self, n: int, what: str) -> int:
        v0 = self.nvp
        self.nvp += n
        if self.nvp > self.p.n_vpages:
            raise ValueError(f"n_vpages: {what} needs virtual pages up to {self.nvp}, the module "
                             f"has n_vpages={self.p.n_vpages}")
        return v0

    def alloc(self, k: int, what: str) -> list[int]:
        """k pages on one bank (the next bank round-robin with k free sets)."""
        if k > self.S:
            raise ValueError(f"n_sets: {what} needs {k} sets on one bank, n_sets={self.S}")
        for i in range(self.B):
            b = (self.ptr + i) % self.B
            if len(self.free[b]) >= k:
                sets = [self.free[b].pop(0) for _ in range(k)]
                self.ptr = (b + 1) % self.B
                return [b * self.S + s for s in sets]
        used = self.p.n_pages - sum(map(len, self.free))
        raise ValueError(f"n_pages: {what} does not fit: {used} of n_pages={self.p.n_pages} "
                         f"(n_banks x n_sets) physical pages used, {k} more needed on one bank")

    @property
    def used(self) -> int:
        return self.p.n_pages - sum(map(len, self.free))


def _pow2_floor(x: int) -> int:
    return 1 << (max(1, x).bit_length() - 1)


def _pad(v, n):
    out = np.zeros(n, dtype=np.int64)
    out[:len(v)] = v
    return out


def build_program(p: ModuleParams, requests: list, partition: str = "TCP", alloc: str = "dpa",
                  loop: bool = False, max_context: int | None = None) -> Program:
    """Compile one decode step of attention for ``requests`` on module ``p``.

    partition  "HFP" | "TCP";  alloc  "static" | "dpa";  loop  use LOOP over tok[rid] for QK^T.
    max_context  static reservation per request (default: each request's ``max_context``).
    Raises ValueError naming the module limit that does not fit.
    """
    if partition not in ("HFP", "TCP"):
        raise ValueError(f"build_program: partition={partition!r} must be 'HFP' or 'TCP'")
    if alloc not in ("static", "dpa"):
        raise ValueError(f"build_program: alloc={alloc!r} must be 'static' or 'dpa'")
    reqs = [r if isinstance(r, Request) else Request(*r) for r in requests]
    if not reqs:
        raise ValueError("build_program: no requests")
    cp, m = p.channel, p.channel.macro
    C, B, S, E, G, L = p.n_ch, cp.n_banks, m.n_sets, m.n_acc, cp.n_gbuf, p.loop_len
    NI, NO = m.n_in, m.n_out
    if len(reqs) > p.n_req:
        raise ValueError(f"n_req: {len(reqs)} requests, the module has n_req={p.n_req} ids")
    tcp = partition == "TCP"
    Cs = C if tcp else 1                       # channels sharing one head's tokens
    allmask = (1 << C) - 1
    enc = lambda op, **f: host_encode(p, op, **f)          # noqa: E731

    # ---- shapes and per-head constants
    d_all = {r.d for r in reqs}
    for r in reqs:
        if max_context is not None:
            if max_context < r.T:
                raise ValueError(f"max_context={max_context} < T={r.T} of request {r.name!r}")
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
    U_lim = _pow2_floor(min(B, E, (L // (kt_max + 1)) if loop else B))
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
        return min(U_lim, _pow2_floor(kb_need))

    pages = _Pages(p)
    setup_map, setup_w = [], []
    wbytes = m.w_bits / 8
    page_bytes = C * NI * NO * m.w_bits // 8

    # ---- quantisation, exact integers, host softmax, SV inputs
    heads = []     # per (r, h): dict
    ref, exp_scores, exp_o = [], [], []
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
            heads.append(dict(r=ri, h=h, kq=kq.q, vq=vq.q, qq=qq.q, wq=wq.q, wscale=wq.scale))
        exp_scores.append(np.stack(sc))
        exp_o.append(np.stack(oo))

    # ---- placement: streams (VA regions) and pages
    # a stream = (request, slot): HFP slot j = heads j*C .. j*C+C-1 on distinct channels,
    # TCP slot = one head on all channels.
    streams = []
    for ri, r in enumerate(reqs):
        kt_n, dc_n = math.ceil(r.d / NI), math.ceil(r.d / NO)
        ctx = r.T if alloc == "dpa" else (max_context or r.max_context)
        nloc = math.ceil(ctx / Cs)                     # tokens on the fullest channel
        kb_n = math.ceil(nloc / NO)
        U = choose_U(kt_n, kb_n)
        if loop:
            kb_n = math.ceil(kb_n / U) * U             # LOOP touches whole U-block iterations
            per = (U * NO * Cs).bit_length() - 1
            if per > 15:
                raise ValueError(f"LOOP per={per} does not fit its 4-bit field")
        tc_n = math.ceil(nloc / NI)
        if tcp:
            slots = [[(h, None)] for h in range(r.H)]
        else:
            slots = [[(h, (h + ri) % C) for h in range(j * C, min(r.H, (j + 1) * C))]
                     for j in range(math.ceil(r.H / C))]
        for j, hs in enumerate(slots):
            what = f"request {ri} ({r.name or 'r%d' % ri}) slot {j}"
            kv0 = pages.new_vps(kb_n * kt_n, what + " K")
            vv0 = pages.new_vps(tc_n * dc_n, what + " V")
            bank_of = {}
            for kb in range(kb_n):
                pps = pages.alloc(kt_n, what + f" K block {kb}")
                for kt in range(kt_n):
                    vp = kv0 + kb * kt_n + kt
                    bank_of[vp] = pps[kt] // S
                    pages.table[vp] = (ri, pps[kt])
            for tc in range(tc_n):
                for dc in range(dc_n):
                    pp = pages.alloc(1, what + f" V page ({tc},{dc})")[0]
                    vp = vv0 + tc * dc_n + dc
                    bank_of[vp] = pp // S
                    pages.table[vp] = (ri, pp)
            streams.append(dict(r=ri, heads=hs, kv0=kv0, vv0=vv0, kt_n=kt_n, dc_n=dc_n,
                                bank_of=bank_of, U=U, per=per if loop else None))
    for vp, (ri, pp) in sorted(pages.table.items()):
        setup_map.append(enc(HostOp.MAP, vp=vp, pp=pp, rid=ri))

    def head_of(ri, h):
        return next(x for x in heads if x["r"] == ri and x["h"] == h)

    def chan_tokens(T, c):
        """global token of local index j on channel c (TCP interleave), as an array."""
        if not tcp:
            return np.arange(T)
        return np.arange(c, T, C)

    # ---- setup: KV cache rows
    for st in streams:
        r = reqs[st["r"]]
        kt_n, dc_n = st["kt_n"], st["dc_n"]
        for h, ch in st["heads"]:
            hd = head_of(st["r"], h)
            chans = range(C) if tcp else [ch]
            for c in chans:
                toks = chan_tokens(r.T, c)
                for kb in range(math.ceil(len(toks) / NO)):
                    tk = toks[kb * NO:(kb + 1) * NO]
                    for kt in range(kt_n):
                        vp = st["kv0"] + kb * kt_n + kt
                        for row in range(min(NI, r.d - kt * NI)):
                            vals = _pad(hd["kq"][tk, kt * NI + row], NO)
                            setup_w.append(enc(HostOp.WR_W, chmask=1 << c, rid=st["r"], vp=vp,
                                               row=row, data=pack_vec(vals, m.w_bits)))
                for tc in range(math.ceil(len(toks) / NI)):
                    tk = toks[tc * NI:(tc + 1) * NI]
                    for dc in range(dc_n):
                        vp = st["vv0"] + tc * dc_n + dc
                        for row, t in enumerate(tk):
                            vals = _pad(hd["vq"][t, dc * NO:(dc + 1) * NO], NO)
                            setup_w.append(enc(HostOp.WR_W, chmask=1 << c, rid=st["r"], vp=vp,
                                               row=row, data=pack_vec(vals, m.w_bits)))

    # ---- decode step
    reads = {c: [] for c in range(C)}       # per channel: (bank, o, tag) in program order
    n_mac = [0]
    gctr = {}
    octr = {}

    def lane_key(mask):
        return mask

    def nxt_g(lane, k):
        v = gctr.get(lane, 0)
        gctr[lane] = v + k
        return [(v + i) % G for i in range(k)]

    def nxt_o(lane, k):
        v = octr.get(lane, 0)
        octr[lane] = v + k
        return [(v + i) % E for i in range(k)]

    reads_sv = {c: [] for c in range(C)}   # SV reads come after every QK^T read (BARRIER)

    def rd(mask, bank, o, tag):
        for c in range(C):
            if mask >> c & 1:
                (reads if tag[0] == "qk" else reads_sv)[c].append((bank, o, tag + (c,)))

    def mac(mask, **f):
        n_mac[0] += bin(mask).count("1")
        return enc(HostOp.MAC, chmask=mask, **f)

    def units():
        """(stream, head, channel mask) in lane order."""
        for st in streams:
            for h, ch in st["heads"]:
                yield st, h, (allmask if tcp else 1 << ch)

    qk_lanes, sv_lanes = {}, {}
    for st, h, mask in units():
        ri, r = st["r"], reqs[st["r"]]
        hd = head_of(ri, h)
        kt_n, dc_n, kv0, vv0, bank_of = (st["kt_n"], st["dc_n"], st["kv0"], st["vv0"],
                                         st["bank_of"])
        U, per = st["U"], st["per"]
        lane = lane_key(mask)
        qgroups = qk_lanes.setdefault(lane, [])
        nloc = math.ceil(r.T / Cs)
        kb_live = math.ceil(nloc / NO)
        for qi in range(r.g):
            gs = nxt_g(lane, kt_n)
            os_ = nxt_o(lane, U)
            grp = [enc(HostOp.WR_INP, chmask=mask, g=gs[kt],
                       data=pack_vec(_pad(hd["qq"][qi, kt * NI:(kt + 1) * NI], NI), m.x_bits))
                   for kt in range(kt_n)]
            if loop:
                body = []
                for kt in range(kt_n):
                    for u in range(U):
                        body.append(enc(HostOp.MAC, chmask=mask, rid=ri, vp=kv0 + u * kt_n + kt,
                                        g=gs[kt], o=os_[u], acc=int(kt > 0)))
                for u in range(U):
                    body.append(enc(HostOp.RD_OUT, chmask=mask, rid=ri, vp=kv0 + u * kt_n,
                                    o=os_[u]))
                trip = math.ceil(r.T / (1 << per))
                n_mac[0] += trip * U * kt_n * bin(mask).count("1")
                grp.append(enc(HostOp.LOOP, rid=ri, n=len(body), per=per, vps=U * kt_n, os=0))
                grp += body
                for i in range(trip):
                    for u in range(U):
                        kb = i * U + u
                        rd(mask, bank_of[kv0 + kb * kt_n], os_[u], ("qk", ri, h, qi, kb))
                qgroups.append(grp)
            else:
                for i in range(math.ceil(kb_live / U)):
                    blocks = [(u, i * U + u) for u in range(U) if i * U + u < kb_live]
                    for kt in range(kt_n):
                        for u, kb in blocks:
                            grp.append(mac(mask, rid=ri, vp=kv0 + kb * kt_n + kt, g=gs[kt],
                                           o=os_[u], acc=int(kt > 0)))
                    for u, kb in blocks:
                        grp.append(enc(HostOp.RD_OUT, chmask=mask, rid=ri, vp=kv0 + kb * kt_n,
                                       o=os_[u]))
                        rd(mask, bank_of[kv0 + kb * kt_n], os_[u], ("qk", ri, h, qi, kb))
                    qgroups.append(grp)
                    grp = []

        # SV (always unrolled)
        sgroups = sv_lanes.setdefault(lane, [])
        tc_live = math.ceil(nloc / NI)
        late = []
        defer = 2 * dc_n <= E
        for qi in range(r.g):
            os_ = nxt_o(lane, dc_n)
            started = {}
            for tc in range(tc_live):
                g = nxt_g(lane, 1)[0]
                grp = []
                for c in (range(C) if tcp else [None]):
                    toks = chan_tokens(r.T, c if tcp else 0)[tc * NI:(tc + 1) * NI]
                    cm = (1 << c) if tcp else mask
                    grp.append(enc(HostOp.WR_INP, chmask=cm, g=g,
                                   data=pack_vec(_pad(hd["wq"][qi, toks], NI), m.x_bits)))
                for dc in range(dc_n):
                    vp = vv0 + tc * dc_n + dc
                    b = bank_of[vp]
                    key = (b, dc)
                    grp.append(mac(mask, rid=ri, vp=vp, g=g, o=os_[dc], acc=int(key in started)))
                    started.setdefault(key, vp)
                if late:
                    grp += [w for w, _ in late]
                    for _, a in late:
                        rd(*a)
                    late = []
                sgroups.append(grp)
            mine = [(enc(HostOp.RD_OUT, chmask=mask, rid=ri, vp=vp, o=os_[dc]),
                     (mask, b, os_[dc], ("sv", ri, h, qi, dc))) for (b, dc), vp in started.items()]
            if defer and qi + 1 < r.g:
                late = mine
            else:
                sgroups.append([w for w, _ in mine])
                for _, a in mine:
                    rd(*a)
        if late:
            sgroups.append([w for w, _ in late])
            for _, a in late:
                rd(*a)

    def merge(lanes):
        """Round-robin over lanes (different channels in HFP) group by group."""
        out, lists = [], [list(v) for v in lanes.values()]
        while any(lists):
            for lst in lists:
                if lst:
                    out += lst.pop(0)
        return out

    step = []
    if loop:
        step += [enc(HostOp.SET_TOK, rid=ri, count=r.T) for ri, r in enumerate(reqs)]
        if max(r.T for r in reqs) >= 1 << 16:
            raise ValueError("SET_TOK: token count does not fit 16 bits")
    step += merge(qk_lanes)
    step.append(enc(HostOp.BARRIER))
    step += merge(sv_lanes)
    setup = setup_map + setup_w + [enc(HostOp.BARRIER)]      # KV cache resident before the step
    cmds = [(w, 0) for w in setup + step]

    # ---- decode
    fo = mod_out_fields(p)

    def fld(w, n):
        f = fo[n]
        return (w >> f.offset) & ((1 << f.width) - 1)

    for c in range(C):
        reads[c] += reads_sv[c]
    n_reads = sum(len(v) for v in reads.values())

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
            r = reqs[ri]
            if kind == "qk":
                toks = chan_tokens(r.T, c)
                loc = np.arange(k * NO, (k + 1) * NO)
                ok = loc < len(toks)
                scores[ri][h, qi, toks[loc[ok]]] = y[ok]
            else:
                n = min(NO, r.d - k * NO)
                acc[ri][h, qi, k * NO:k * NO + n] += y[:n]
        for ri in range(len(reqs)):
            if not np.array_equal(scores[ri], exp_scores[ri]):
                bad = np.argwhere(scores[ri] != exp_scores[ri])[0]
                raise ValueError(f"decode: QK^T score of request {ri} at (head, q, token) "
                                 f"{tuple(int(x) for x in bad)} differs from the exact integer the"
                                 " SV inputs were computed from")
        o = []
        for ri, r in enumerate(reqs):
            ws = np.stack([head_of(ri, h)["wscale"] for h in range(r.H)])   # [H, g]
            o.append(acc[ri] * ws[:, :, None])
        return DecodeOut(o, scores, acc)

    live = sum(r.H * r.T * r.d * 2 for r in reqs) * wbytes
    reserved = pages.used * page_bytes
    cap = dict(live_bytes=live, reserved_bytes=reserved, mapped_pages=pages.used,
               n_pages=p.n_pages, page_bytes=page_bytes, vpages=pages.nvp,
               utilisation=live / reserved if reserved else 0.0)
    useful = sum(2 * r.H * r.g * r.T * r.d for r in reqs)
    info = dict(U=[st["U"] for st in streams], per=[st["per"] for st in streams],
                kt_n=kt_max, dc_n=dc_max,
                n_cmds=len(cmds), n_step=len(step), tokens=[r.T for r in reqs],
                heads=[r.H for r in reqs], group=[r.g for r in reqs], d=sorted(d_all))
    return Program(p, cmds, decode, ref, exp_scores, exp_o, cap, useful,
                   n_mac[0] * NI * NO, len(setup), n_reads, partition, alloc, loop, info,
                   dict(pages.table))


# ---------------------------------------------------------------------------------------------
def pace(p: ModuleParams, cmds, out_ready_p: float = 1.0, seed: int = 0, drain: bool = True,
         stall_limit: int = 100000):
    """Gaps for ``cmds`` so that no push is dropped: the host FIFO has no ready, so the host
    pushes command i in the first cycle in which the cycle-exact module model's FIFO has room
    (the module is deterministic given ``out.ready``'s seeded pattern, the same as in
    :meth:`ModuleModel.run`).  Returns [(host_cmd, gap)], with ``drain`` one trailing NOP
    (see below)."""
    from model.module import ModuleModel
    from model.stimulus import ready_at, ready_threshold
    mm = ModuleModel(p)
    mm.reset(power_up=True)
    thr = ready_threshold(out_ready_p)
    F = p.fifo_depth
    out, last, c, i = [], -1, 0, 0
    words = [int(w) for w, _ in cmds]
    while i < len(words):
        if len(mm._fifo) < F:          # the push condition of docs/module.md (FIFO not full)
            mm.step(1, words[i], ready_at(seed, c, thr))
            out.append((words[i], c - last - 1))
            last = c
            i += 1
        else:
            mm.step(0, 0, ready_at(seed, c, thr))
        c += 1
    if drain:
        # ModuleModel.run ends when the module is idle and its own out register is empty, but
        # channel out registers may still hold RD_OUT beats then (channel idle ignores
        # out_valid): when the last RD_OUT is multicast to C channels, C-2 beats are lost.
        # A NOP pushed in the cycle where everything has drained keeps the run going (+1 cycle).
        start = c
        while not (mm.idle and not mm._out_valid
                   and not any(ch._out_valid for ch in mm.channels)):
            mm.step(0, 0, ready_at(seed, c, thr))
            c += 1
            if c - start > stall_limit:
                raise RuntimeError("pace: module did not drain (deadlock?)")
        out.append((host_encode(p, HostOp.NOP), c - last - 1))
    return out


def run_program(prog: Program, out_ready_p: float = 1.0, seed: int = 0, paced: bool = True,
                step_metrics: bool = True):
    """Pace (optional) and run ``prog`` on :class:`model.module.ModuleModel`.

    Returns (ModuleRun, DecodeOut or None, metrics).  ``metrics``: whole-program cycles and MAC
    utilisation (busy macro-cycles / (cycles * n_banks * n_ch)) and, with ``step_metrics``, the
    decode step alone: step_cycles = cycles(program) - cycles(setup only, which ends with a
    BARRIER; it has no MACs), step_util = busy / (step_cycles * n_banks * n_ch)."""
    from model.module import ModuleModel
    p = prog.params
    cmds = pace(p, prog.cmds, out_ready_p, seed) if paced else prog.cmds
    run = ModuleModel(p).run(cmds, out_ready_p=out_ready_p, seed=seed)
    dec = prog.decode(run.outs) if len(run.outs) == prog.n_reads else None
    nb = p.n_ch * p.channel.n_banks
    met = dict(cycles=run.cycles, util=run.utilisation, busy=sum(run.busy_cycles),
               mac_ops=prog.mac_ops, useful_macs=prog.useful_macs)
    if step_metrics:
        sc = prog.cmds[:prog.n_setup]
        sc = pace(p, sc, out_ready_p, seed) if paced else sc
        srun = ModuleModel(p).run(sc, out_ready_p=out_ready_p, seed=seed)
        met["setup_cycles"] = srun.cycles
        met["step_cycles"] = run.cycles - srun.cycles
        met["step_util"] = sum(run.busy_cycles) / (met["step_cycles"] * nb)
        # useful MACs per macro-cycle of the step, against the peak n_in*n_out/x_bits per bank
        m = p.channel.macro
        met["step_useful_frac"] = prog.useful_macs / (met["step_cycles"] * nb * m.n_in * m.n_out
                                                      / m.x_bits)
    return run, dec, met


# ---------------------------------------------------------------------------------------------
# Workloads

def minilm_params() -> ModuleParams:
    """A module that holds MiniLM layer 0 (12 heads, head_dim 32) for a short paragraph under
    both HFP and TCP: 32x32 macros, 4 sets, 8 banks, 4 channels (32 pages per channel)."""
    from spec.isa import ChannelParams
    from spec.params import MacroParams
    mp = MacroParams(n_in=32, n_out=32, w_bits=8, x_bits=8, n_sets=4, n_acc=8, tree_stages=1)
    return ModuleParams(ChannelParams(mp, n_banks=8, n_gbuf=8, q_depth=8), n_ch=4,
                        n_vpages=64, n_req=4, fifo_depth=16, loop_len=8)


def llama_params() -> ModuleParams:
    """Default 64x64 macros (head_dim 128 = 2 d-chunks), 2 sets, 8 banks, 4 channels."""
    from spec.isa import ChannelParams
    from spec.params import MacroParams
    return ModuleParams(ChannelParams(MacroParams(), n_banks=8, n_gbuf=8, q_depth=8), n_ch=4,
                        n_vpages=64, n_req=4, fifo_depth=16, loop_len=8)


MINILM_PARAGRAPH = ("Compute-in-memory accelerators keep the weights inside the SRAM arrays, "
                    "so the multiply-accumulate happens where the data already is. For long "
                    "documents the key-value cache dominates decoding time, and the controller "
                    "must keep every bank busy.")


def minilm_decode(paragraph: str = MINILM_PARAGRAPH, max_context: int | None = None) -> list:
    """Real MiniLM (all-MiniLM-L6-v2) layer-0 K, V of every token of ``paragraph`` and the
    query of its last token, 12 heads of head_dim 32 (g = 1): one :class:`Request`."""
    from workloads import minilm
    d = minilm.layer0_qkv(paragraph)
    X = d["X"].astype(np.float32)
    proj = {n: X @ d["W"][n].T + d["b"][n] for n in ("q", "k", "v")}
    H = minilm.config()["num_attention_heads"]
    hd = X.shape[1] // H
    T = X.shape[0]
    K = proj["k"].reshape(T, H, hd).transpose(1, 0, 2)
    V = proj["v"].reshape(T, H, hd).transpose(1, 0, 2)
    q = proj["q"][-1].reshape(H, 1, hd)
    return [Request(K, V, q, max_context, name=f"minilm T={T}")]


def _llama_head(rng, T, d, g):
    ch = np.exp(rng.normal(0.0, 0.5, d))
    k_mean = rng.normal(0.0, 0.5, d) * ch
    K = k_mean[None, :] + rng.normal(0.0, 1.0, (T, d)) * ch
    V = rng.normal(0.0, 1.0, (T, d)) * np.exp(rng.normal(0.0, 0.3, d))
    shared = rng.normal(0.0, 1.0, d)
    q = (0.6 * shared[None, :] + 0.8 * rng.normal(0.0, 1.0, (g, d))) * ch
    return K.astype(np.float32), V.astype(np.float32), q.astype(np.float32)


def llama_shaped_decode(contexts=(200, 120), head_dim: int = 128, group: int = 4,
                        kv_heads: int = 1, seed: int = 0, max_context: int | None = None) -> list:
    """Llama-3.1-8B-shaped decode (head_dim 128, GQA group 4); SYNTHETIC seeded data (no Llama
    weights can be downloaded): keys with per-channel scales and offsets (post-RoPE outlier
    channels), correlated GQA queries.  One request per entry of ``contexts`` with
    ``kv_heads`` KV heads each (Llama-3.1-8B has 8; scaled to what the module holds)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, T in enumerate(contexts):
        hs = [_llama_head(rng, T, head_dim, group) for _ in range(kv_heads)]
        out.append(Request(np.stack([a for a, _, _ in hs]), np.stack([b for _, b, _ in hs]),
                           np.stack([c for _, _, c in hs]), max_context,
                           name=f"llama8b-shaped T={T}"))
    return out


def request_mix(n: int = 3, max_context: int = 256, head_dim: int = 32, group: int = 1,
                kv_heads: int = 1, seed: int = 0) -> list:
    """``n`` requests whose lengths follow the LongBench/LV-Eval means (ANCHORS.md: QMSum
    13,966, Musique 16,362, LV-Eval multifieldqa 60,780, Loogle-SD 50,693) scaled down so the
    longest mean maps to ``max_context``: each request draws a benchmark uniformly, then its
    length = mean/60,780 * max_context * U(0.5, 1.0) (seeded).  Static allocation reserves
    ``max_context`` for every request.  Synthetic Llama-like data."""
    rng = np.random.default_rng(seed)
    means = list(BENCH_MEANS.values())
    top = max(means)
    out = []
    for i in range(n):
        b = int(rng.integers(len(means)))
        T = max(1, min(max_context, int(round(means[b] / top * max_context
                                               * rng.uniform(0.5, 1.0)))))
        hs = [_llama_head(rng, T, head_dim, group) for _ in range(kv_heads)]
        out.append(Request(np.stack([a for a, _, _ in hs]), np.stack([b_ for _, b_, _ in hs]),
                           np.stack([c for _, _, c in hs]), max_context,
                           name=f"{list(BENCH_MEANS)[b]} T={T}"))
    return out
