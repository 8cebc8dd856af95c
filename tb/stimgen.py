"""Seeded constrained-random stimulus for the macro (valid gaps, backpressure, hazards, extremes)."""
from __future__ import annotations

import numpy as np

from spec.params import MacroParams, pack, pack_vec, req_fields, wr_fields
from model.stimulus import Beat, Stimulus


def _operands(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
    """Random signed operands with extremes: all-min, all-max, sparse, uniform."""
    kind = rng.integers(0, 6)
    if kind == 0:
        return np.full(n, lo)
    if kind == 1:
        return np.full(n, hi)
    if kind == 2:
        return rng.choice([lo, hi, 0, -1], size=n)
    if kind == 3:
        return rng.integers(lo, hi + 1, n) * (rng.random(n) < 0.2)
    return rng.integers(lo, hi + 1, n)


def random_stimulus(p: MacroParams, seed: int, n_req: int = 64, n_wr: int | None = None,
                    ready_p: float = 0.7, gap_p: float = 0.3, max_gap: int = 4,
                    dep_p: float = 0.3) -> Stimulus:
    """Random writes (to any set, including the one computing: hazards happen) and requests.

    ``gap_p``: probability that a beat waits 1..max_gap idle cycles; ``dep_p``: probability
    that a beat depends on progress of the other stream; ``ready_p``: res.ready duty.
    """
    rng = np.random.default_rng(seed)
    n_wr = n_req * 2 if n_wr is None else n_wr
    wf, rf = wr_fields(p), req_fields(p)
    wlo, whi = p.w_range
    xlo, xhi = p.x_range

    def gap():
        return int(rng.integers(1, max_gap + 1)) if rng.random() < gap_p else 0

    # first fill every set so results are not trivially zero, then mix
    wr = []
    for s in range(p.n_sets):
        for r in range(p.n_in):
            wr.append(Beat(pack(wf, data=pack_vec(_operands(rng, wlo, whi, p.n_out), p.w_bits),
                                row=r, set=s), gap=gap()))
    for _ in range(n_wr):
        after = int(rng.integers(0, n_req + 1)) if rng.random() < dep_p else 0
        wr.append(Beat(pack(wf, data=pack_vec(_operands(rng, wlo, whi, p.n_out), p.w_bits),
                            row=int(rng.integers(0, p.n_in)), set=int(rng.integers(0, p.n_sets))),
                       gap=gap(), after=min(after, n_req)))
    req = []
    for _ in range(n_req):
        after = int(rng.integers(0, len(wr) + 1)) if rng.random() < dep_p else 0
        req.append(Beat(pack(rf, x=pack_vec(_operands(rng, xlo, xhi, p.n_in), p.x_bits),
                             set=int(rng.integers(0, p.n_sets)), acc=int(rng.random() < 0.4),
                             dst=int(rng.integers(0, p.n_acc))), gap=gap(), after=after))
    # wr 'after' counts results; keep writes' dependencies monotone so nothing deadlocks
    wr_sorted, last = [], 0
    for b in wr:
        last = max(last, b.after)
        wr_sorted.append(Beat(b.payload, b.gap, last))
    # request j may wait only for writes that do not themselves wait for result j or later
    wr_afters = np.array([b.after for b in wr_sorted])
    req_sorted, last = [], 0
    for j, b in enumerate(req):
        allowed = int(np.searchsorted(wr_afters, j, side="right"))
        last = min(max(last, b.after), allowed)
        req_sorted.append(Beat(b.payload, b.gap, last))
    return Stimulus(p, wr_sorted, req_sorted, ready_p=ready_p, seed=seed,
                    note=f"random n_req={n_req} ready_p={ready_p}")


def random_channel_cmds(p, seed: int, n: int, gap_p: float = 0.2, max_gap: int = 3):
    """Random well-formed channel commands [(payload, gap)] (spec/isa.py): weight rows,
    input tiles, MACs (accumulating or not) and reads on random banks/entries, so that real
    dependencies between GBuf/OBuf entries and weight sets occur often.  With
    ``p.all_bank``, 30% of the MACs are all-bank MACs (``ab = 1``, ``bank = 0``)."""
    from spec.isa import Op, encode
    rng = np.random.default_rng(seed)
    m = p.macro
    wlo, whi = m.w_range
    xlo, xhi = m.x_range
    ops = [Op.WR_INP, Op.WR_W, Op.MAC, Op.MAC, Op.RD_OUT]
    cmds = []
    for _ in range(n):
        op = ops[int(rng.integers(0, len(ops)))]
        f = {}
        if op == Op.WR_INP:
            f = dict(g=int(rng.integers(0, p.n_gbuf)),
                     data=pack_vec(_operands(rng, xlo, xhi, m.n_in), m.x_bits))
        elif op == Op.WR_W:
            f = dict(bank=int(rng.integers(0, p.n_banks)), set=int(rng.integers(0, m.n_sets)),
                     row=int(rng.integers(0, m.n_in)),
                     data=pack_vec(_operands(rng, wlo, whi, m.n_out), m.w_bits))
        elif op == Op.MAC:
            f = dict(bank=int(rng.integers(0, p.n_banks)), set=int(rng.integers(0, m.n_sets)),
                     g=int(rng.integers(0, p.n_gbuf)), o=int(rng.integers(0, m.n_acc)),
                     acc=int(rng.random() < 0.5))
            if p.all_bank and rng.random() < 0.3:
                f.update(bank=0, ab=1)
        else:
            f = dict(bank=int(rng.integers(0, p.n_banks)), o=int(rng.integers(0, m.n_acc)))
        gap = int(rng.integers(1, max_gap + 1)) if rng.random() < gap_p else 0
        cmds.append((encode(p, op, **f), gap))
    return cmds


def random_host_cmds(p, seed: int, n: int, bad_p: float = 0.15, burst_p: float = 0.3,
                     max_gap: int = 12):
    """Random host commands [(host_cmd, gap)] for a PimModule (docs/module.md), valid and
    malformed mixed: out-of-range fields, bad opcodes, unmapped / foreign / double-mapped pages,
    loops (also with malformed bodies), barriers, and bursts that overflow the FIFO (or, with
    ``p.host_ready``, hold the port's ready low).  With ``p.channel.all_bank``: MAC_ABs and
    stripe MAPs (vp + b -> b * n_sets + s, so that some MAC_ABs pass, others fail on a page of
    the stripe); with ``p.wide_inp > 1``: multi WR_INPs carrying one tile per masked channel.
    The stream for default parameters is the same as before these options existed."""
    from spec.isa import HOST_WIDTHS, HostOp, host_encode
    rng = np.random.default_rng(seed)
    ch, m = p.channel, p.channel.macro
    wlo, whi = m.w_range
    xlo, xhi = m.x_range

    def r(hi, bad_hi=None):
        """In range 0..hi-1, or (with probability bad_p) up to bad_hi-1."""
        if bad_hi is not None and rng.random() < bad_p:
            return int(rng.integers(0, bad_hi))
        return int(rng.integers(0, hi))

    # a bad chmask: 0..255 up to 8 channels (the stream of the 8-bit chmask), 0..2**(n_ch+1)-1
    # above that; 0 (the only bad mask) when n_ch is the chmask width
    bad_mask = 1 << max(8, p.n_ch + 1)

    def chmask():
        if rng.random() < bad_p:
            return int(rng.integers(0, bad_mask)) if p.n_ch < HOST_WIDTHS["chmask"] else 0
        return int(rng.integers(1, 1 << p.n_ch))

    ops = [HostOp.WR_INP, HostOp.WR_W, HostOp.MAC, HostOp.MAC, HostOp.RD_OUT]
    if ch.all_bank:
        ops += [HostOp.MAC_AB, HostOp.MAC_AB]

    def channel_cmd():
        op = ops[int(rng.integers(0, len(ops)))]
        f = dict(chmask=chmask(), rid=r(p.n_req, 16), vp=r(min(8, p.n_vpages), 256))
        if op == HostOp.WR_INP and p.wide_inp > 1 and rng.random() < 0.5:
            tiles = [pack_vec(_operands(rng, xlo, xhi, m.n_in), m.x_bits)
                     for _ in range(p.wide_inp)]
            f.update(g=r(ch.n_gbuf, 64), multi=1,
                     data=sum(t << (k * ch.data_bits) for k, t in enumerate(tiles)))
        elif op == HostOp.WR_INP:
            f.update(g=r(ch.n_gbuf, 64), data=pack_vec(_operands(rng, xlo, xhi, m.n_in), m.x_bits))
        elif op == HostOp.WR_W:
            f.update(row=r(m.n_in, 1024), data=pack_vec(_operands(rng, wlo, whi, m.n_out), m.w_bits))
        elif op in (HostOp.MAC, HostOp.MAC_AB):
            f.update(g=r(ch.n_gbuf, 64), o=r(m.n_acc, 256), acc=int(rng.random() < 0.5))
            if op == HostOp.MAC_AB and stripes and rng.random() < 0.7:
                f.update(zip(("vp", "rid"), stripes[int(rng.integers(0, len(stripes)))],
                             strict=True))
        else:
            f.update(o=r(m.n_acc, 256))
        return host_encode(p, op, **f)

    def gap():
        return 0 if rng.random() < burst_p else int(rng.integers(1, max_gap + 1))

    def stripe_maps():
        """UNMAP an earlier stripe (half the time), then MAP vp0 + b -> b * n_sets + s for
        every bank b (a few pages wrong); vp0 above the single MAPs' range if there is room."""
        out = []
        if stripes and rng.random() < 0.5:
            v0, rd = stripes.pop(int(rng.integers(0, len(stripes))))
            out += [(host_encode(p, HostOp.UNMAP, vp=min(v0 + b, 255), rid=rd), gap())
                    for b in range(ch.n_banks)]
        lo = 8 if p.n_vpages - ch.n_banks >= 8 else 0
        vp0 = lo + r(p.n_vpages - ch.n_banks + 1 - lo)
        s_, rid = r(m.n_sets), r(p.n_req)
        stripes.append((vp0, rid))
        for b in range(ch.n_banks):
            pp = b * m.n_sets + s_
            if rng.random() < bad_p / 2:
                pp = r(p.n_pages)
            out.append((host_encode(p, HostOp.MAP, vp=min(vp0 + b, 255), pp=pp, rid=rid),
                        gap()))
        return out

    stripes = []                # (vp, rid) of the stripes mapped so far
    cmds = []
    while len(cmds) < n:
        k = rng.random()
        if ch.all_bank and k < 0.05:
            cmds += stripe_maps()
        elif k < 0.1:
            cmds.append((host_encode(p, HostOp.MAP, vp=r(min(8, p.n_vpages), 256),
                                     pp=r(p.n_pages, 256), rid=r(p.n_req, 16)), gap()))
        elif k < 0.14:
            cmds.append((host_encode(p, HostOp.UNMAP, vp=r(min(8, p.n_vpages), 256),
                                     rid=r(p.n_req, 16)), gap()))
        elif k < 0.18:
            cmds.append((host_encode(p, HostOp.SET_TOK, rid=r(p.n_req, 16),
                                     count=int(rng.integers(0, 40))), gap()))
        elif k < 0.22:
            body = int(rng.integers(1, p.loop_len + 1))
            if rng.random() < bad_p:
                body = int(rng.integers(0, 32))
            cmds.append((host_encode(p, HostOp.LOOP, rid=r(p.n_req, 16), n=body,
                                     per=int(rng.integers(0, 4) if rng.random() < 0.75
                                             else rng.integers(4, 16)),   # every per_mask arm
                                     vps=int(rng.integers(0, 3)),
                                     os=int(rng.integers(0, 2))), gap()))
        elif k < 0.24:
            cmds.append((host_encode(p, HostOp.BARRIER), gap()))
        elif k < 0.26:
            cmds.append((host_encode(p, int(rng.integers(11 if ch.all_bank else 10, 16))),
                         gap()))
        else:
            cmds.append((channel_cmd(), gap()))
    # NOPs at the end complete any loop body still being captured (else the module waits)
    cmds = cmds[:max(0, n - p.loop_len)]
    return cmds + [(host_encode(p, HostOp.NOP), max_gap)] * (n - len(cmds))
