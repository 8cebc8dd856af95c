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
    ``p.all_bank``, 30% of the MACs are all-bank MACs (``ab = 1``, ``bank = 0``).  On a DRAM
    channel (``p.bank_kind == "dram"``) a WR_W writes one column burst (docs/dram_channel.md)."""
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
        elif op == Op.WR_W and p.bank_kind == "dram":     # one column burst of a DRAM row
            ncol = m.n_in * m.n_out // p.burst_bytes
            f = dict(bank=int(rng.integers(0, p.n_banks)), set=int(rng.integers(0, m.n_sets)),
                     row=int(rng.integers(0, ncol)),
                     data=pack_vec(_operands(rng, wlo, whi, p.burst_bytes), 8))
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
    the stripe); with ``p.wide_inp > 1``: multi WR_INPs carrying one tile per masked channel;
    with DRAM banks (``p.channel.bank_kind == "dram"``): a WR_W's data is one column burst
    (8 x ``burst_bytes`` bits) and its row a column (``< C`` valid, up to n_in unused bits);
    with ``p.softmax``: malformed SM_CFG / RD_SM / WR_PROB (every BAD_FIELD arm, UNMAPPED,
    NOT_OWNER) and SM_ABORTs, also as LOOP bodies (every softmax op is BAD_FIELD in a replay
    or rejected on its own), and, with ``p.host_ready`` too, whole softmax heads
    (:func:`_sm_episode`: completed, aborted while ingesting or while emitting tiles, with
    BAD_PART and EXTRA_BEAT score beats, some of their RD_SMs / WR_PROBs replayed by LOOPs).
    The stream for default parameters is the same as before these options existed.

    With ``softmax`` two virtual pages are reserved (V-1: the heads' score page, mapped by
    the stream's first command; V-2: never mapped) and the random MAP / UNMAP / channel
    commands avoid them and the score page's physical page NP-1, so that a head always gets
    its beats.  Valid heads need ``host_ready``: without it a dropped push inside a head could
    leave the dispatcher waiting for ever (a WR_PROB for a tile that never comes).  Not for
    runs with a mid-stream reset."""
    from spec.isa import HOST_WIDTHS, HostOp, host_encode
    rng = np.random.default_rng(seed)
    ch, m = p.channel, p.channel.macro
    wlo, whi = m.w_range
    xlo, xhi = m.x_range
    sm = getattr(p, "softmax", False)
    V = p.n_vpages - (2 if sm else 0)       # pages the random commands use (valid range)
    sm_vp, sm_un, sm_pp = p.n_vpages - 1, p.n_vpages - 2, p.n_pages - 1

    def r(hi, bad_hi=None):
        """In range 0..hi-1, or (with probability bad_p) up to bad_hi-1."""
        if bad_hi is not None and rng.random() < bad_p:
            return int(rng.integers(0, bad_hi))
        return int(rng.integers(0, hi))

    def vp_r():
        """A random command's vp (softmax: never a reserved page)."""
        v = r(min(8, V), 256)
        return v if not sm or v not in (sm_vp, sm_un) else p.n_vpages

    def pp_r():
        """A random MAP's pp (softmax: never the score page's pp; NP is BAD_FIELD)."""
        v = r(p.n_pages, 256)
        return v if not sm or v != sm_pp else p.n_pages

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
        f = dict(chmask=chmask(), rid=r(p.n_req, 16), vp=vp_r())
        if op == HostOp.WR_INP and p.wide_inp > 1 and rng.random() < 0.5:
            tiles = [pack_vec(_operands(rng, xlo, xhi, m.n_in), m.x_bits)
                     for _ in range(p.wide_inp)]
            f.update(g=r(ch.n_gbuf, 64), multi=1,
                     data=sum(t << (k * ch.data_bits) for k, t in enumerate(tiles)))
        elif op == HostOp.WR_INP:
            f.update(g=r(ch.n_gbuf, 64), data=pack_vec(_operands(rng, xlo, xhi, m.n_in), m.x_bits))
        elif op == HostOp.WR_W and ch.bank_kind == "dram":   # one column burst (DRAM row)
            ncol = m.n_in * m.n_out // ch.burst_bytes
            f.update(row=r(ncol, 1024),
                     data=pack_vec(_operands(rng, wlo, whi, ch.burst_bytes), 8))
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
        lo = 8 if V - ch.n_banks >= 8 else 0
        vp0 = lo + r(V - ch.n_banks + 1 - lo)
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
    if sm:                      # the heads' score page (see the docstring)
        cmds.append((host_encode(p, HostOp.MAP, vp=sm_vp, pp=sm_pp, rid=0), 0))
    while len(cmds) < n:
        if sm and rng.random() < 0.08:
            cmds += _sm_episode(p, rng, gap, r, sm_vp, sm_un, sm_pp, valid=p.host_ready)
            continue
        k = rng.random()
        if ch.all_bank and k < 0.05:
            cmds += stripe_maps()
        elif k < 0.1:
            cmds.append((host_encode(p, HostOp.MAP, vp=vp_r(), pp=pp_r(),
                                     rid=r(p.n_req, 16)), gap()))
        elif k < 0.14:
            cmds.append((host_encode(p, HostOp.UNMAP, vp=vp_r(), rid=r(p.n_req, 16)), gap()))
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
    if sm and p.host_ready:     # not cut: a head cut short could wait for ever
        return cmds + [(host_encode(p, HostOp.NOP), max_gap)] * p.loop_len
    cmds = cmds[:max(0, n - p.loop_len)]
    return cmds + [(host_encode(p, HostOp.NOP), max_gap)] * (n - len(cmds))


def _sm_episode(p, rng, gap, r, vp, vp_un, pp, valid: bool) -> list:
    """Softmax commands for :func:`random_host_cmds` (``p.softmax``), contiguous in the
    stream: ``loop_len`` NOPs first (they complete any loop body being captured, so no
    command of the episode is captured by an earlier LOOP), then malformed commands, each rejected
    with a known code and changing nothing (SM_CFG: a mask that is not a head mask, rid >= R,
    tok[rid] = 0, tok[rid] > N; RD_SM: bad chmask / o / vp, UNMAPPED, NOT_OWNER; WR_PROB:
    bad chmask / g), an SM_ABORT of an idle unit, a LOOP whose body holds such commands and
    SM_ABORTs (rejected at every replay: SM_CFG / SM_ABORT are BAD_FIELD in a replay, and every
    body command is also rejected on its own, or harmless, should the LOOP push be dropped),
    and with ``valid`` one head of T random tokens (1..N) on a random head mask on score page
    ``vp`` (rid 0) with a random scale and 1 or 2 digits, which either

    * completes: every beat (one RD_SM per key block, to the partitions that have it) and
      every tile (one WR_PROB each), then maybe an SM_ABORT (which drops an ``sm_res`` not yet
      taken);
    * is aborted while ingesting (some of its beats) or while emitting tiles (all beats, some
      tiles): BARRIER and C NOPs (every beat dispatched has reached the unit), SM_ABORT;

    optionally with a BAD_PART beat (a channel outside the head) or an EXTRA_BEAT (partition 0
    one beat too many while another partition still has beats to send), each followed by a
    BARRIER and C NOPs, so that it reaches the unit while the head is ingesting.  Some runs
    of the head's RD_SMs and WR_PROBs (both valid in a replay) are a LOOP body instead (LOOP
    rid 0: trip ceil(T / 2**per), the body repeating exactly trip times the beats / tiles it
    stands for, vps = os = 0; maybe with a malformed RD_SM / WR_PROB in it), so that a loop
    consumes exactly the beats and tiles it replaces.  A head leaves no beat in flight, so
    the next SM_CFG finds the unit idle once its ``sm_res`` has transferred (or been
    aborted)."""
    from spec.isa import HOST_WIDTHS, HostOp, host_encode, sm_cfg_data
    m, ch, sp = p.channel.macro, p.channel, p.sm_params
    C, R, N, G_ = p.n_ch, p.n_req, sp.max_context, ch.n_gbuf
    NI, NO = m.n_in, m.n_out
    H = lambda op, **f: (host_encode(p, op, **f), gap())          # noqa: E731
    NOP = lambda: (host_encode(p, HostOp.NOP), 0)                  # noqa: E731
    out = [NOP() for _ in range(p.loop_len)]
    wide = C < HOST_WIDTHS["chmask"]
    bad_masks = [0] + ([1 << C] if wide else []) \
        + ([0b101] if C >= 3 else []) + ([0b111] if C >= 3 else []) \
        + ([(1 << (2 * sp.n_part)) - 1] if 2 * sp.n_part <= C else [])
    data = lambda: sm_cfg_data(p, int(rng.integers(0, 1 << sp.mul_bits)),   # noqa: E731
                               int(rng.integers(0, 64)), int(rng.random() < 0.3))

    def bad_cfg():
        k = int(rng.integers(0, 4))
        good = 1
        if k == 0:
            return [H(HostOp.SM_CFG, chmask=bad_masks[int(rng.integers(0, len(bad_masks)))],
                      rid=0, data=data())]
        if k == 1 and R < 16:
            return [H(HostOp.SM_CFG, chmask=good, rid=int(rng.integers(R, 16)), data=data())]
        if k == 2 and R >= 2:
            return [H(HostOp.SET_TOK, rid=1, count=0), H(HostOp.SM_CFG, chmask=good, rid=1,
                                                          data=data())]
        return [H(HostOp.SET_TOK, rid=0, count=N + 1 + int(rng.integers(0, 4))),
                H(HostOp.SM_CFG, chmask=good, rid=0, data=data())]

    def bad_rd():
        o, k = int(rng.integers(0, m.n_acc)), int(rng.integers(0, 5))
        if k == 0:
            return H(HostOp.RD_SM, chmask=[0, *([1 << C] if wide else [])][
                int(rng.integers(0, 2 if wide else 1))], rid=0, vp=vp, o=o)
        if k == 1:
            return H(HostOp.RD_SM, chmask=1, rid=0, vp=vp, o=int(rng.integers(m.n_acc, 256)))
        if k == 2:
            return H(HostOp.RD_SM, chmask=1, rid=0, vp=int(rng.integers(p.n_vpages, 256)), o=o)
        if k == 3 or R < 2:
            return H(HostOp.RD_SM, chmask=1, rid=0, vp=vp_un, o=o)          # UNMAPPED
        return H(HostOp.RD_SM, chmask=1, rid=int(rng.integers(1, R)), vp=vp, o=o)  # NOT_OWNER

    def bad_wp():
        if rng.random() < 0.5:
            return H(HostOp.WR_PROB, chmask=[0, *([1 << C] if wide else [])][
                int(rng.integers(0, 2 if wide else 1))], g=0)
        return H(HostOp.WR_PROB, chmask=1, g=int(rng.integers(G_, 64)))

    def bad_loop():
        """SET_TOK rid 0 (N < tok <= N+8: an SM_CFG of rid 0 stays BAD_FIELD, should its own
        SET_TOK be a dropped push), LOOP rid 0 (trip 1..3), a body rejected at every replay."""
        q = min(15, N.bit_length())
        body = []
        for _ in range(int(rng.integers(1, p.loop_len + 1))):
            k = int(rng.integers(0, 4))
            if k == 0:     # BAD_FIELD alone too: not a head mask, or rid >= R
                bad_rid = R < 16 and rng.random() < 0.5
                body.append(H(HostOp.SM_CFG, rid=int(rng.integers(R, 16)) if bad_rid else 0,
                              chmask=1 if bad_rid else bad_masks[
                                  int(rng.integers(0, len(bad_masks)))], data=data()))
            else:
                body.append(bad_rd() if k == 1 else bad_wp() if k == 2 else H(HostOp.SM_ABORT))
        return [H(HostOp.SET_TOK, rid=0, count=N + 1 + int(rng.integers(0, 8))),
                H(HostOp.LOOP, rid=0, n=len(body), per=int(rng.integers(max(0, q - 2), q + 1)),
                  vps=0, os=int(rng.integers(0, 2)))] + body

    def bad_any():
        k = int(rng.integers(0, 5))
        return bad_cfg() if k == 0 else [bad_rd()] if k == 1 else [bad_wp()] if k == 2 \
            else [H(HostOp.SM_ABORT)] if k == 3 else bad_loop()

    def looped(items, cmd, bad, bad_p):
        """One ``cmd(item)`` per item, in order (each followed by ``bad()`` with probability
        ``bad_p``); some runs of them as a LOOP rid 0 body (tok[0] = T: trip t =
        ceil(T / 2**per)) standing for b·t items that repeat the body's b items t times, the
        body maybe with a ``bad()`` too."""
        res, i = [], 0
        while i < len(items):
            if rng.random() >= 0.25:
                res.append(cmd(items[i]))
                if rng.random() < bad_p:
                    res.append(bad())
                i += 1
                continue
            opts = {}                   # (b, t) -> the pers with that trip count
            for per in range(16):
                t = -(-T // (1 << per))
                for b in range(1, p.loop_len + 1):
                    if i + b * t <= len(items) and items[i:i + b * t] == items[i:i + b] * t:
                        opts.setdefault((b, t), []).append(per)
            b, t = list(opts)[int(rng.integers(0, len(opts)))]
            pers = opts[(b, t)]
            body = [cmd(it) for it in items[i:i + b]]
            if b < p.loop_len and rng.random() < 0.3:
                body.insert(int(rng.integers(0, b + 1)), bad())
            res += [H(HostOp.LOOP, rid=0, n=len(body), per=pers[int(rng.integers(0, len(pers)))],
                      vps=0, os=0)] + body
            i += b * t
        return res

    def drain():       # every beat dispatched so far reaches the unit before what follows
        return [H(HostOp.BARRIER)] + [NOP() for _ in range(C)]

    for _ in range(int(rng.integers(0, 3))):
        out += bad_any()
    if not valid:
        return out
    # one head: MAP the score page again (ALREADY_MAPPED), tokens, the head mask
    out.append(H(HostOp.MAP, vp=vp, pp=pp, rid=0))
    Ps = [q for q in (1, 2, 4, 8) if q <= min(C, sp.n_part)]
    P_ = Ps[int(rng.integers(0, len(Ps)))]
    c0 = int(rng.integers(0, C - P_ + 1))
    mask = ((1 << P_) - 1) << c0
    T = int(rng.integers(1, N + 1))
    d = data()
    G = 1 + ((d >> (sp.mul_bits + 6)) & 1)
    nj = [-(-(T - j) // P_) if T > j else 0 for j in range(P_)]
    B = [-(-n_ // NO) for n_ in nj]
    K = P_ * -(-nj[0] // NI) * G
    out.append(H(HostOp.SET_TOK, rid=0, count=T))
    if rng.random() < 0.3:
        out += bad_cfg() + [H(HostOp.SET_TOK, rid=0, count=T)]
    out.append(H(HostOp.SM_CFG, chmask=mask, rid=0, data=d))
    rd = lambda cm: H(HostOp.RD_SM, chmask=cm, rid=0, vp=vp,        # noqa: E731
                      o=int(rng.integers(0, m.n_acc)))
    if P_ < C and rng.random() < 0.2:                    # BAD_PART: a channel outside
        outside = [c for c in range(C) if not mask >> c & 1]
        out += [rd(1 << outside[int(rng.integers(0, len(outside)))])] + drain()
    sent = [0] * P_
    if P_ >= 2 and B[1] > 0 and rng.random() < 0.3:     # EXTRA_BEAT on partition 0
        out += [rd(1 << c0) for _ in range(B[0] + 1)] + drain()
        sent[0] = B[0]
    order = []                                           # remaining beats, key block order
    for kb in range(max(B)):
        cm = sum(1 << (c0 + j) for j in range(P_) if kb >= sent[j] and kb < B[j])
        if cm:
            order.append(cm)
    kind = rng.random()
    if kind < 0.2:                                       # aborted while ingesting
        cut = int(rng.integers(0, len(order) + 1)) if order else 0
        out += looped(order[:cut], rd, bad_rd, 0.15)
        return out + drain() + [H(HostOp.SM_ABORT)]
    out += looped(order, rd, bad_rd, 0.15)
    n_tiles = K if kind >= 0.35 else int(rng.integers(0, K))
    tiles = [1 << (c0 + (k // G) % P_) if rng.random() < 0.8 else mask for k in range(n_tiles)]
    out += looped(tiles, lambda cm: H(HostOp.WR_PROB, chmask=cm, g=int(rng.integers(0, G_))),
                  bad_wp, 0.1)
    if n_tiles < K:                                      # aborted while emitting tiles
        return out + drain() + [H(HostOp.SM_ABORT)]
    if rng.random() < 0.3:
        out.append(H(HostOp.SM_ABORT))
    return out
