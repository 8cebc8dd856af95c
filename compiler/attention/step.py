"""The decode-step commands of an attention program: per lane (a channel mask) the QK^T passes
(WR_INP of the query chunks, MACs kt-major over U key blocks, RD_OUTs; or a LOOP over the
request's token count) and the SV passes (one probability tile per token chunk, dim-chunk MACs,
deferred RD_OUTs), lanes interleaved group by group (docs/compiler.md, "Attention on one
module").  Under TCP every channel gets its own tile of a chunk: one WR_INP per channel, or with
``p.wide_inp`` K > 1 one multicast WR_INP (``multi`` = 1) per K channels."""
from __future__ import annotations

import math

from compiler.attention.program import chan_tokens, pad
from spec.isa import HostOp, ModuleParams, host_encode
from spec.params import pack_vec

__all__ = ["build_step"]


def build_step(p: ModuleParams, reqs: list, streams: list, heads: dict, tcp: bool,
               loop: bool) -> tuple[list, dict, int]:
    """(step host words, reads, channel MACs): ``reads[c]`` lists (bank, o, tag) of every
    result beat of channel ``c`` in program order (QK^T ones first: a BARRIER separates the
    phases), tag = (kind, request, head, query, block or dim chunk, channel)."""
    cp, m = p.channel, p.channel.macro
    C, E, G = p.n_ch, m.n_acc, cp.n_gbuf
    NI, NO = m.n_in, m.n_out
    Cs = C if tcp else 1
    K, DB = p.wide_inp, cp.data_bits        # tiles per multicast WR_INP beat, bits per tile
    allmask = (1 << C) - 1
    enc = lambda op, **f: host_encode(p, op, **f)          # noqa: E731

    reads = {c: [] for c in range(C)}       # per channel: (bank, o, tag) in program order
    n_mac = [0]
    gctr = {}
    octr = {}

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
        hd = heads[(ri, h)]
        kt_n, dc_n, kv0, vv0, bank_of = (st["kt_n"], st["dc_n"], st["kv0"], st["vv0"],
                                         st["bank_of"])
        U, per = st["U"], st["per"]
        lane = mask                                 # a lane is its channel mask
        qgroups = qk_lanes.setdefault(lane, [])
        nloc = math.ceil(r.T / Cs)
        kb_live = math.ceil(nloc / NO)
        for qi in range(r.g):
            gs = nxt_g(lane, kt_n)
            os_ = nxt_o(lane, U)
            grp = [enc(HostOp.WR_INP, chmask=mask, g=gs[kt],
                       data=pack_vec(pad(hd["qq"][qi, kt * NI:(kt + 1) * NI], NI), m.x_bits))
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
                tiles = []                  # (mask, tile) of each WR_INP of this chunk
                for c in (range(C) if tcp else [None]):
                    toks = chan_tokens(r.T, c if tcp else 0, C, tcp)[tc * NI:(tc + 1) * NI]
                    cm = (1 << c) if tcp else mask
                    tiles.append((cm, pack_vec(pad(hd["wq"][qi, toks], NI), m.x_bits)))
                if tcp and K > 1:           # multicast: tile k to the k-th masked channel
                    for i in range(0, C, K):
                        part = tiles[i:i + K]
                        if len(part) == 1:  # a lone channel: a plain WR_INP
                            grp.append(enc(HostOp.WR_INP, chmask=part[0][0], g=g,
                                           data=part[0][1]))
                            continue
                        grp.append(enc(HostOp.WR_INP, chmask=sum(cm for cm, _ in part), g=g,
                                       multi=1, data=sum(d << (k * DB) for k, (_, d)
                                                         in enumerate(part))))
                else:
                    grp += [enc(HostOp.WR_INP, chmask=cm, g=g, data=d) for cm, d in tiles]
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

    for c in range(C):
        reads[c] += reads_sv[c]
    return step, reads, n_mac[0]
