"""Decode-step attention with the hub's softmax unit (``ModuleParams.softmax``): QK^T ->
softmax -> SV on the module without a host round trip (docs/compiler.md, "Attention with the
softmax unit"; docs/module.md, "Softmax unit").

Per (request, KV head, query) — one *unit head* — the step is: ``SM_CFG`` (the head's channels,
``tok[rid]`` tokens, the scale), the QK^T passes with ``RD_SM`` instead of ``RD_OUT`` (the
scores go to the unit, not the host), then per token chunk one ``WR_PROB`` per channel (the
unit's INT8 probability tiles into the GBuf, in the unit's tile order) and the SV MACs, then
the SV ``RD_OUT`` s.  The host receives the SV partials and one ``sm_res`` beat per unit head
and normalises: ``o_d = acc_d · v_scale_d / qsum``.

Numerics (docs/softmax.md, "Host side"): keys and values are quantised per *dimension*
(one scale per column of K and of V), the key scale folded into the query before it is
quantised (one scale per query), so a score is ``Sint · q_scale / sqrt(d)`` in logits.
:func:`host_traffic` counts host bytes and round trips from a program's command stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compiler.attention.program import (Request, _check, _kv_writes, _place, chan_tokens, pad,
                                        reference_attention)
from model.softmax import softmax_trace
from spec.isa import HostOp, ModuleParams, host_encode, host_fields, mod_out_fields, \
    sm_cfg_data, sm_res_fields
from spec.params import pack_vec, unpack, unpack_vec, width
from spec.softmax import encode_scale, exp_table
from workloads.quant import quantise_per_token, quantise_rows

__all__ = ["SmProgram", "build_program_sm", "host_traffic", "compare_host_traffic",
           "exp_fault_program"]


@dataclass
class SmProgram:
    params: ModuleParams
    cmds: list                              # [(host_cmd, gap)]
    n_setup: int                            # leading MAP / WR_W / BARRIER commands
    reference: list = field(repr=False)     # per request [H, g, d] float64 attention
    expected_o: list = field(repr=False)    # per request [H, g, d]: the exact module output
    expected_acc: list = field(repr=False)  # per request [H, g, d] int64 summed SV partials
    expected_res: list = field(repr=False)  # per unit head: dict(m, l, qsum) (program order)
    units: list = field(repr=False)         # per unit head: (request, head, query)
    reads: dict = field(repr=False)         # channel -> [(bank, o, (request, head, query, dc))]
    n_reads: int = 0
    partition: str = "TCP"
    dig: int = 0
    info: dict = field(default_factory=dict)

    def decode(self, outs: list, sm_res: list) -> dict:
        """Module outputs -> dict(o (per request [H, g, d]), acc, res): checks every beat's
        (channel, bank, entry) against the program and normalises with the unit's qsum."""
        p, reqs = self.params, self._reqs
        m = p.channel.macro
        fo = mod_out_fields(p)
        if len(outs) != self.n_reads or len(sm_res) != len(self.units):
            raise ValueError(f"decode: {len(outs)} out beats / {len(sm_res)} sm_res beats, "
                             f"expected {self.n_reads} / {len(self.units)}")
        acc = [np.zeros((r.H, r.g, r.d), dtype=np.int64) for r in reqs]
        pos = {c: 0 for c in range(p.n_ch)}
        for w in outs:
            f = unpack(fo, w)
            c = f["chan"]
            bank, o, (ri, h, qi, dc) = self.reads[c][pos[c]]
            pos[c] += 1
            if (f["bank"], f["o"]) != (bank, o):
                raise ValueError(f"decode: chan {c} beat is ({f['bank']},{f['o']}), expected "
                                 f"({bank},{o})")
            y = np.array(unpack_vec(f["y"], m.n_out, m.acc_width), dtype=np.int64)
            n = min(m.n_out, reqs[ri].d - dc * m.n_out)
            acc[ri][h, qi, dc * m.n_out:dc * m.n_out + n] += y[:n]
        rf = sm_res_fields(p)
        res = [unpack(rf, w) for w in sm_res]
        o = [np.zeros(a.shape) for a in acc]
        for (ri, h, qi), rr in zip(self.units, res):
            den = rr["qsum"] + (self._qlo(rr) / 128 if self.dig else 0)
            o[ri][h, qi] = acc[ri][h, qi] * self._vscale[(ri, h)] / den
        return dict(o=o, acc=acc, res=res)

    def _qlo(self, rr):
        b = sm_res_fields(self.params)["qlo"].width
        return rr["qlo"] - ((rr["qlo"] >> (b - 1)) << b)


def _numerics(reqs, p, dig):
    """Per-dimension K / V quantisation, per-query q quantisation with the key scale folded in;
    per (request, head): kq, vq [T, d] codes, vscale [d], per query (qq codes, mul, sh)."""
    m, sp = p.channel.macro, p.sm_params
    heads, ref = {}, []
    for ri, r in enumerate(reqs):
        ref.append(np.stack([reference_attention(r.K[h], r.V[h], r.q[h]) for h in range(r.H)]))
        for h in range(r.H):
            kq = quantise_rows(r.K[h].astype(np.float64).T, (1 << (m.w_bits - 1)) - 1,
                               m.w_bits)                         # one scale per dimension
            vq = quantise_rows(r.V[h].astype(np.float64).T, (1 << (m.w_bits - 1)) - 1,
                               m.w_bits)
            qf = r.q[h].astype(np.float64) * kq.scale[None, :]   # key scale folded in
            qq = quantise_per_token(qf, m.x_bits)
            qs = [encode_scale(float(qq.scale[i]) / math.sqrt(r.d), sp) for i in range(r.g)]
            heads[(ri, h)] = dict(kq=kq.q.T, vq=vq.q.T, vscale=vq.scale, qq=qq.q, qs=qs)
    return heads, ref


def build_program_sm(p: ModuleParams, requests: list, partition: str = "TCP",
                     dig: int = 0) -> SmProgram:
    """One decode step of attention for ``requests`` on module ``p`` (``p.softmax``) with the
    softmax unit, unrolled (no LOOP), dynamic page allocation.  ``partition`` "TCP" (every head
    over all channels: needs n_ch a power of two <= the unit's n_part) or "HFP" (each head on
    one channel).  ``dig``: 0 (one probability digit) only.  ValueError naming what does not
    fit."""
    if not isinstance(p, ModuleParams) or not p.softmax:
        raise ValueError(f"build_program_sm: p={p!r} must be a ModuleParams with softmax=True")
    if dig != 0:
        raise ValueError(f"build_program_sm: dig={dig!r}: only one probability digit (0)")
    reqs = _check(p, requests, partition, "dpa", False, None)
    cp, m, sp = p.channel, p.channel.macro, p.sm_params
    C, E, G = p.n_ch, m.n_acc, cp.n_gbuf
    NI, NO = m.n_in, m.n_out
    tcp = partition == "TCP"
    if tcp and (C & (C - 1) or C > sp.n_part):
        raise ValueError(f"build_program_sm: TCP needs n_ch={C} a power of two <= n_part="
                         f"{sp.n_part}")
    if len(reqs) > p.n_req:
        raise ValueError(f"n_req: {len(reqs)} requests, the module has n_req={p.n_req} ids")
    for r in reqs:
        if r.T > sp.max_context:
            raise ValueError(f"sm_context: T={r.T} > the unit's max_context {sp.max_context}")
        if math.ceil(r.d / NI) + 1 > G or math.ceil(r.d / NI) > m.n_sets \
                or math.ceil(r.d / NO) + 1 > E:
            raise ValueError(f"build_program_sm: head_dim {r.d} does not fit n_gbuf={G}, "
                             f"n_sets={m.n_sets}, n_acc={E}")
    heads, ref = _numerics(reqs, p, dig)
    pages, streams = _place(p, reqs, tcp, "dpa", False, None, lambda kt_n, kb: 1)
    setup = pages.map_words() + _kv_writes(p, reqs, streams, heads, tcp) \
        + [host_encode(p, HostOp.BARRIER)]
    enc = lambda op, **f: host_encode(p, op, **f)          # noqa: E731
    step = [enc(HostOp.SET_TOK, rid=ri, count=r.T) for ri, r in enumerate(reqs)]
    reads = {c: [] for c in range(C)}
    units, exp_res = [], []
    exp_acc = [np.zeros((r.H, r.g, r.d), dtype=np.int64) for r in reqs]
    exp_o = [np.zeros((r.H, r.g, r.d)) for r in reqs]
    gc, oc = [0], [0]

    def nxt(ctr, n, k):
        v = ctr[0]
        ctr[0] += k
        return [(v + i) % n for i in range(k)]

    for st in streams:
        ri, r = st["r"], reqs[st["r"]]
        kt_n, dc_n, kv0, vv0, bank_of = (st["kt_n"], st["dc_n"], st["kv0"], st["vv0"],
                                         st["bank_of"])
        for h, ch in st["heads"]:
            hd = heads[(ri, h)]
            chans = list(range(C)) if tcp else [ch]
            mask = sum(1 << c for c in chans)
            P = len(chans)
            ntok = {c: len(chan_tokens(r.T, c, C, tcp)) for c in chans}
            kb_n = -(-max(ntok.values()) // NO)
            tc_n = -(-max(ntok.values()) // NI)
            for qi in range(r.g):
                mul, sh = hd["qs"][qi]
                step.append(enc(HostOp.SM_CFG, chmask=mask, rid=ri,
                                data=sm_cfg_data(p, mul, sh, dig)))
                gs = nxt(gc, G, kt_n)
                step += [enc(HostOp.WR_INP, chmask=mask, g=gs[kt],
                             data=pack_vec(pad(hd["qq"][qi, kt * NI:(kt + 1) * NI], NI),
                                           m.x_bits)) for kt in range(kt_n)]
                for kb in range(kb_n):
                    o = nxt(oc, E, 1)[0]
                    for kt in range(kt_n):
                        step.append(enc(HostOp.MAC, chmask=mask, rid=ri, vp=kv0 + kb * kt_n + kt,
                                        g=gs[kt], o=o, acc=int(kt > 0)))
                    # only the channels that hold key block kb send a beat (the unit counts)
                    rmask = sum(1 << c for c in chans if ntok[c] > kb * NO)
                    step.append(enc(HostOp.RD_SM, chmask=rmask, rid=ri, vp=kv0 + kb * kt_n,
                                    o=o))
                os_ = nxt(oc, E, dc_n)
                started = {}
                for tc in range(tc_n):
                    g = nxt(gc, G, 1)[0]
                    step += [enc(HostOp.WR_PROB, chmask=1 << c, g=g) for c in chans]
                    for dc in range(dc_n):
                        vp = vv0 + tc * dc_n + dc
                        key = (bank_of[vp], dc)
                        step.append(enc(HostOp.MAC, chmask=mask, rid=ri, vp=vp, g=g, o=os_[dc],
                                        acc=int(key in started)))
                        started.setdefault(key, vp)
                for (b, dc), vp in started.items():
                    step.append(enc(HostOp.RD_OUT, chmask=mask, rid=ri, vp=vp, o=os_[dc]))
                    for c in chans:
                        reads[c].append((b, os_[dc], (ri, h, qi, dc)))
                # expected: the unit's probabilities (bit-exact reference), SV, normalisation
                sint = hd["qq"][qi] @ hd["kq"].T
                tr = softmax_trace(sint, sp, mul, sh, parts=P)
                exp_acc[ri][h, qi] = tr["probs"] @ hd["vq"]
                exp_o[ri][h, qi] = exp_acc[ri][h, qi] * hd["vscale"] / tr["qsum"]
                exp_res.append(dict(m=tr["m"], l=tr["l"], qsum=tr["qsum"]))
                units.append((ri, h, qi))
    cmds = [(w, 0) for w in setup + step]
    prog = SmProgram(p, cmds, len(setup), ref, exp_o, exp_acc, exp_res, units, reads,
                     sum(len(v) for v in reads.values()), partition, dig,
                     dict(n_step=len(step), tokens=[r.T for r in reqs]))
    prog._reqs = reqs
    prog._vscale = {k: v["vscale"] for k, v in heads.items()}
    return prog


def host_traffic(p: ModuleParams, step_words: list, n_out_beats: int, n_sm_res: int = 0) -> dict:
    """Host traffic of one decode step, from its command words and its result beats: bytes
    down (host command words, ceil(bits/8) each), bytes up (out beats and sm_res beats), and
    host round trips = the points in the stream where the host must have received results
    before it can build the next command: a WR_INP after a BARRIER that follows RD_OUTs (the
    host-softmax path: the probability tiles depend on the scores read back); the WR_INPs
    from there on are host-computed probability tiles (``host_prob_tiles``, ``n_in`` bytes
    of data each).  A WR_PROB needs no round trip (the unit supplies the tile)."""
    from spec.isa import HostOp as H
    hb = -(-width(host_fields(p)) // 8)
    ob = -(-width(mod_out_fields(p)) // 8)
    rb = -(-width(sm_res_fields(p)) // 8) if p.softmax else 0
    f = host_fields(p)["op"]
    trips, reads_pending, after_barrier, n_prob = 0, False, False, 0
    for w in step_words:
        op = (w >> f.offset) & ((1 << f.width) - 1)
        if op == H.RD_OUT:
            reads_pending, after_barrier = True, False
        elif op == H.BARRIER:
            after_barrier = reads_pending
        elif op == H.WR_INP and after_barrier:
            trips += 1
            reads_pending = after_barrier = False
        if op == H.WR_INP and trips:
            n_prob += 1                 # a host-computed probability tile
    return dict(down_bytes=len(step_words) * hb, up_bytes=n_out_beats * ob + n_sm_res * rb,
                round_trips=trips, n_cmds=len(step_words), host_prob_tiles=n_prob,
                host_prob_bytes=n_prob * p.channel.macro.n_in, host_word_bytes=hb,
                out_beat_bytes=ob, sm_res_bytes=rb)


def compare_host_traffic(p: ModuleParams, requests: list, partition: str = "TCP",
                         run: bool = True) -> dict:
    """Attention of ``requests`` on module ``p`` (``softmax``) with the unit
    (:func:`build_program_sm`) and without it (the host-softmax program of
    :func:`compiler.attention.build_program`, unrolled, DPA): per path the decode step's
    :func:`host_traffic` (from its command words and result beats) and, with ``run``, the
    cycle-exact model's cycles of the whole program and of the step (program minus setup),
    checking that the beats counted are the beats the model delivers."""
    from compiler.attention.program import build_program
    from compiler.host import pace
    from model.module import ModuleModel
    out = {}
    with_u = build_program_sm(p, requests, partition)
    without = build_program(p, requests, partition, "dpa", False)
    for name, prog, n_res in (("with_unit", with_u, len(with_u.units)),
                              ("host_softmax", without, 0)):
        step = [w for w, _ in prog.cmds[prog.n_setup:]]
        tr = host_traffic(p, step, prog.n_reads, n_res)
        if run:
            r = ModuleModel(p).run(pace(p, prog.cmds))
            s = ModuleModel(p).run(pace(p, prog.cmds[:prog.n_setup]))
            if r.status != "ok" or len(r.outs) != prog.n_reads or len(r.sm_res) != n_res:
                raise RuntimeError(f"compare_host_traffic: {name}: {r.status}, "
                                   f"{len(r.outs)} beats")
            tr.update(cycles=r.cycles, step_cycles=r.cycles - s.cycles)
        out[name] = tr
    return out


def exp_fault_program(p: ModuleParams, make_request, n_heads: int, tries: int = 50):
    """(program, wrong table): the first TCP program of ``make_request(seed)``, seed 0, 1, ..,
    one of whose ``n_heads`` unit heads looks up the exp table entry ``T[2**(TB-1)]`` (made one
    too large in the returned table, the unit's ``exp_entry`` fault), so that a test of that
    fault is never vacuous.  AssertionError if none of ``tries`` seeds does."""
    sp = p.sm_params
    bad = list(exp_table(sp))
    bad[1 << (sp.table_bits - 1)] += 1
    for seed in range(tries):
        prog = build_program_sm(p, [make_request(seed)], "TCP")
        heads, _ = _numerics(prog._reqs, p, 0)
        for h in range(n_heads):
            hd = heads[(0, h)]
            mul, sh = hd["qs"][0]
            a, b = (softmax_trace(hd["qq"][0] @ hd["kq"].T, sp, mul, sh, parts=p.n_ch,
                                  table=t) for t in (None, bad))
            if a["l"] != b["l"] or not np.array_equal(a["probs"], b["probs"]):
                return prog, bad
    raise AssertionError("exp_fault_program: no request touches the faulty entry")
