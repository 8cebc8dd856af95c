"""Step construction: the commands of one layer's GEMVs, KV append and attention passes on a
:class:`~compiler.llm.layout.Layout`, and the MAPs of its pages (docs/compiler.md, "GEMV",
"Attention")."""
from __future__ import annotations

import math

from compiler.llm.gemv import GemvGeom
from compiler.llm.layout import Layout
from compiler.llm.loops import Loop, assemble, interleave, merge, single
from compiler.pages import block_address
from perf.program import MAC_AB, WAIT, HCmd, Rep
from spec.isa import HostOp

__all__ = ["Builder", "shift"]

_WR_INP, _WR_W, _MAC, _RD_OUT, _MAP = (int(HostOp.WR_INP), int(HostOp.WR_W), int(HostOp.MAC),
                                       int(HostOp.RD_OUT), int(HostOp.MAP))
_MAC_AB = MAC_AB
_WAIT = HCmd(WAIT)
_new = tuple.__new__
assert HCmd._fields == ("op", "chmask", "rid", "vp", "pp", "row", "g", "o", "acc", "n", "per",
                        "vps", "os", "count", "bank", "set", "multi")


class Builder:
    """Commands of one layer on layout ``lay``: :meth:`gemv`, :meth:`append` (KV append),
    :meth:`attention` ("qk" / "sv") per layer variant, :meth:`maps` (setup).  ``blocking``:
    every group of result reads is followed by a :data:`perf.program.WAIT` and nothing is
    deferred (a host whose reads block, as CENT's)."""

    def __init__(self, lay: Layout, blocking: bool = False):
        self.lay = lay
        self.blocking = blocking
        sp = lay.sp
        self.sp = sp
        self.C, self.B, self.G, self.E = sp.n_ch, sp.n_banks, sp.n_gbuf, sp.n_acc
        self.all = (1 << self.C) - 1
        self.wait = [_WAIT] if blocking else []

    # ---- commands (positional HCmd fields: op chmask rid vp pp row g o acc n per vps os
    # count bank set)
    def mac(self, mask, rid, bank, s, g, o, acc):
        return _new(HCmd, (_MAC, mask, rid, s * self.B + bank, 0, 0, g, o, acc, 0, 0, 0, 0, 0,
                           bank, s, 0))

    def mac_ab(self, mask, rid, s, g, o, acc):
        """All-bank MAC on the stripe of set ``s`` (vp of bank 0)."""
        return _new(HCmd, (_MAC_AB, mask, rid, s * self.B, 0, 0, g, o, acc, 0, 0, 0, 0, 0,
                           0, s, 0))

    def rd(self, mask, rid, bank, s, o):
        return _new(HCmd, (_RD_OUT, mask, rid, s * self.B + bank, 0, 0, 0, o, 0, 0, 0, 0, 0, 0,
                           bank, s, 0))

    def wi(self, mask, g, multi=0):
        """WR_INP into GBuf entry ``g`` of the channels of ``mask``: the same tile to each
        (``multi`` 0), or one tile per channel in one host beat (``multi`` 1, a module with
        ``wide_inp`` >= popcount(mask))."""
        return _new(HCmd, (_WR_INP, mask, 0, 0, 0, 0, g, 0, 0, 0, 0, 0, 0, 0, -1, -1, multi))

    def tile_masks(self, chans) -> list:
        """(mask, multi) of the WR_INPs giving each channel of ``chans`` its own tile: one
        per channel, or with ``wide_inp`` K > 1 one multicast WR_INP per K channels."""
        K = self.sp.wide_inp
        if K == 1:
            return [(1 << c, 0) for c in chans]
        out = []
        for i in range(0, len(chans), K):
            grp = chans[i:i + K]
            out.append((sum(1 << c for c in grp), int(len(grp) > 1)))
        return out

    def ww(self, mask, rid, bank, s, row):
        return _new(HCmd, (_WR_W, mask, rid, s * self.B + bank, 0, row, 0, 0, 0, 0, 0, 0, 0, 0,
                           bank, s, 0))

    # ---- GEMV
    def gemv(self, key: str, b: int) -> tuple[list, dict]:
        lay, B, G, E = self.lay, self.B, self.G, self.E
        geo: GemvGeom = lay.gemvs[key]
        base = lay.w_base[key]
        ab = geo.stripe
        R, kc, kp = geo.R, geo.kc, geo.kp

        def blocks(cap):            # (rounds, requests) per pass with ``cap`` OBuf entries
            Rb = min(R, cap)
            return Rb, max(1, min(b, G // kp, cap // Rb))
        defer = E >= 2 and not self.blocking
        # DRAM all-bank: a pass's requests share each row activation (row hits), so deferral
        # (half the OBuf) is used only when it costs no request or round of a pass
        if defer and ab and self.sp.backend == "dram" and blocks(E // 2) != blocks(E):
            defer = False
        cap = E // 2 if defer else E
        Rb, rb = blocks(cap)
        rblocks = [rb] * (b // rb) + ([b % rb] if b % rb else [])
        Rblocks = [(p0, min(Rb, R - p0)) for p0 in range(0, R, Rb)]
        gm, cm = geo.gmasks, geo.cmask

        def pass_(nr, p0, nR, ph):
            units = range(p0 * B, min(geo.units, (p0 + nR) * B))
            parts = sorted({u % kp for u in units})
            nw = nr * kp
            obase = ph * cap if defer else 0

            def step(i, acc):
                cmds = [self.wi(m, (i * nw + r * kp + p) % G)
                        for r in range(nr) for p in parts for m in gm]
                for rho in range(p0, p0 + nR):
                    us = [u for u in units if u // B == rho]
                    for r in range(nr):
                        o = obase + (rho - p0) * nr + r
                        if ab:
                            cmds.append(self.mac_ab(cm, 0, base + rho * kc + i,
                                                    (i * nw + r) % G, o, acc))
                            continue
                        cmds += [self.mac(cm, 0, u % B, base + rho * kc + i,
                                          (i * nw + r * kp + u % kp) % G, o, acc) for u in us]
                return cmds
            rds = [self.rd(cm, 0, u % B, base + (u // B) * kc, obase + (u // B - p0) * nr + r)
                   for u in units for r in range(nr)]
            rds.sort(key=lambda c: (c.o, c.bank))
            rds += self.wait
            loop = None
            if kc > 1:
                loop = Loop(lambda i: step(i, 1), 1, kc - 1, 1, G // math.gcd(G, nw),
                             f"{key} steps")
            return (step(0, 0), loop, [], rds)

        keys = []
        for nr in rblocks:
            for p0, nR in Rblocks:
                keys.append((nr, p0, nR, len(keys) % 2))
        K = math.lcm(len(Rblocks), 2)
        items = single(keys, lambda k: pass_(*k), defer, B, (1, 2, K), f"{key} passes")
        info = dict(N=geo.N, K=geo.K, nt=geo.nt, kt=geo.kt, cs=geo.cs, kp=geo.kp, kc=geo.kc,
                    tpc=geo.tpc, units=geo.units, rounds=R, rb=rb, Rb=Rb, sets=geo.sets,
                    channels=bin(cm).count("1"), passes=len(keys), all_bank=ab)
        return items, info

    # ---- attention lanes
    def lanes(self, j: int = 0, phase: str | None = None):
        """(stream, unit, mask, chans) of layer variant ``j``'s units in program order (of the
        streams holding K for ``phase`` "qk", V for "sv")."""
        out = []
        for st in (self.lay.streams if phase is None else self.lay.lanes_of(phase)):
            for u in st.units:
                if u.j != j:
                    continue
                if u.c is None:
                    out.append((st, u, self.all, list(range(self.C))))
                else:
                    out.append((st, u, 1 << u.c, [u.c]))
        return out

    def kslot(self, q, kt):
        """(bank, set) of d-chunk kt of K slot q: block q of kt_n pages of the K area, as the
        bank-interleaved page allocator places it."""
        b, s = block_address(q, self.lay.kt_n, self.B, self.lay.kbase)
        return b, s + kt

    def vpage(self, q):
        """(bank, set) of V page q: block q of one page of the V area."""
        return block_address(q, 1, self.B, self.lay.vbase)

    def append(self, j: int = 0) -> list:
        lay, C, NI, NO = self.lay, self.C, self.sp.n_in, self.sp.n_out
        d = lay.sh.d
        per_lane = []
        for st, un, mask, chans in self.lanes(j):
            t = un.T - 1
            if un.c is None:                # over every channel, token-interleaved
                c, loc = t % C, t // C
            else:
                c, loc = chans[0], t
            cm = 1 << c
            cmds = []
            if "k" in st.kind:
                q = st.Q0 + loc // NO
                for kt in range(lay.kt_n):
                    bank, s = self.kslot(q, kt)
                    cmds += [self.ww(cm, st.rid, bank, s, row)
                             for row in range(min(NI, d - kt * NI))]
            if "v" in st.kind:
                tc, row = divmod(loc, NI)
                for dc in range(lay.dc_n):
                    bank, s = self.vpage(st.P0 + tc * lay.dc_n + dc)
                    cmds.append(self.ww(cm, st.rid, bank, s, row))
            per_lane.append(cmds)
        return interleave(per_lane)

    def qk_pass(self, st, un, mask, ph):
        lay, B, G, E = self.lay, self.B, self.G, self.E
        kt_n = lay.kt_n
        kb = math.ceil(un.nloc / self.sp.n_out)
        nfull, tail = divmod(kb, B)
        dround = E >= 2 and not self.blocking
        dpass = E >= 4 and not self.blocking
        ab = lay.ab
        obase = 2 * ph if dpass else 0
        g0 = ph * kt_n if 2 * kt_n <= G else 0
        rid = st.rid

        def o_of(i):
            return obase + (i % 2 if dround else 0)

        def macs(i, nb):
            if ab:                          # one stripe per d-chunk (Q0 is a stripe)
                return [self.mac_ab(mask, rid, self.kslot(st.Q0 + i * B, kt)[1], g0 + kt,
                                    o_of(i), int(kt > 0)) for kt in range(kt_n)]
            return [self.mac(mask, rid, *self.kslot(st.Q0 + i * B + u, kt), g0 + kt, o_of(i),
                             int(kt > 0)) for kt in range(kt_n) for u in range(nb)]

        def rds(i, nb):
            return [self.rd(mask, rid, *self.kslot(st.Q0 + i * B + u, 0), o_of(i))
                    for u in range(nb)] + self.wait
        pre = [self.wi(mask, g0 + kt) for kt in range(kt_n)]
        rounds = [(i, B) for i in range(nfull)] + ([(nfull, tail)] if tail else [])
        loop, tl = None, []
        lab = f"qk r{un.r}"
        if dround:
            head = pre + macs(*rounds[0])
            if nfull >= 2:
                loop = Loop(lambda i: macs(i, B) + rds(i - 1, B), 1, nfull - 1, kt_n, 2, lab)
            if tail and nfull >= 1:
                tl = macs(nfull, tail) + rds(nfull - 1, B)
            last = rds(*rounds[-1])
        else:
            head = pre + macs(*rounds[0]) + rds(*rounds[0])
            if nfull >= 2:
                loop = Loop(lambda i: macs(i, B) + rds(i, B), 1, nfull - 1, kt_n, 1, lab)
            if tail and nfull >= 1:
                tl = macs(nfull, tail) + rds(nfull, tail)
            last = []
        return head, loop, tl, last

    def sv_pass(self, st, un, mask, chans, ph):
        lay, B, G, E = self.lay, self.B, self.G, self.E
        dc_n = lay.dc_n
        gg = math.gcd(B, dc_n)
        n_oq = dc_n // gg
        Lr = B // gg
        sigma = Lr * dc_n // B
        obase = ph * n_oq if 2 * n_oq <= E else 0
        g0 = ph * (G // 2)
        tc_live = math.ceil(un.nloc / self.sp.n_in)
        nfull, tail = divmod(tc_live, Lr)
        rid = st.rid
        # TCP (one stream over every channel): a probability tile per channel per token chunk
        wmasks = self.tile_masks(chans) if un.c is None else [(mask, 0)]
        ab = lay.sv_ab

        def chunks(t0, t1):
            cmds = []
            for tc in range(t0, t1):
                g = (g0 + tc) % G
                cmds += [self.wi(m, g, mu) for m, mu in wmasks]
                if ab:                      # a token chunk is dc_n / B stripes
                    for jj in range(dc_n // B):
                        s = self.vpage(st.P0 + tc * dc_n + jj * B)[1]
                        cmds.append(self.mac_ab(mask, rid, s, g, obase + jj, int(tc >= Lr)))
                    continue
                for dc in range(dc_n):
                    bank, s = self.vpage(st.P0 + tc * dc_n + dc)
                    cmds.append(self.mac(mask, rid, bank, s, g, obase + dc // gg, int(tc >= Lr)))
            return cmds
        rds = []
        for idx in range(min(tc_live, Lr) * dc_n):
            bank, s = self.vpage(st.P0 + idx)
            rds.append(self.rd(mask, rid, bank, s, obase + (idx % dc_n) // gg))
        rds += self.wait
        head = chunks(0, min(Lr, tc_live))
        loop, tl = None, []
        if nfull >= 2:
            loop = Loop(lambda i: chunks(i * Lr, (i + 1) * Lr), 1, nfull - 1, sigma,
                         G // math.gcd(G, Lr), f"sv r{un.r}")
        if tail and nfull >= 1:
            tl = chunks(nfull * Lr, tc_live)
        return head, loop, tl, rds

    def attention(self, kind: str, j: int = 0) -> list:
        lay, B, E = self.lay, self.B, self.E
        grp = lay.sh.grp
        lanes = self.lanes(j, kind)
        lane_of = {}

        def make(k):
            li, ph = k
            st, un, mask, chans = lane_of[li]
            if kind == "qk":
                return self.qk_pass(st, un, mask, ph)
            return self.sv_pass(st, un, mask, chans, ph)[:4]
        if kind == "qk":
            defer = E >= 4
        else:
            n_oq = lay.dc_n // math.gcd(B, lay.dc_n)
            defer = 2 * n_oq <= E
        defer = defer and not self.blocking
        if all(ln[1].c is None for ln in lanes):          # one stream over every channel
            keys = []
            for li, lane in enumerate(lanes):
                lane_of[li] = lane
                keys += [(li, (len(keys) + qi) % 2) for qi in range(grp)]
            return single(keys, make, defer, B, (1, 2), f"{kind} passes")
        by_ch = {}
        for li, lane in enumerate(lanes):
            lane_of[li] = lane
            by_ch.setdefault(lane[3][0], []).append(li)
        streams = []
        for c in sorted(by_ch):
            memo, passes = {}, []
            for li in by_ch[c]:
                for qi in range(grp):
                    k = (li, len(passes) % 2)
                    if k not in memo:
                        memo[k] = make(k)
                    passes.append(memo[k])
            streams.append([ph for seg in assemble(passes, defer) for ph in seg])
        return merge(streams, B)

    # ---- setup
    def group_pages(self, kk: int) -> list:
        """(bank, set, rid) of every page of a group slab (offset 0) whose first ``kk`` layers
        exist: their weight regions, then the KV pages of the streams their units use."""
        lay, B = self.lay, self.B
        pages = []
        for j in range(kk):
            for key, geo in lay.gemvs.items():
                base = j * lay.w_sets + lay.w_base[key]
                for u in range(geo.mapped_units):
                    for i in range(geo.kc):
                        pages.append((u % B, base + (u // B) * geo.kc + i, 0))
        for st, kb_n, tc_n in lay.stream_use(kk):
            for kb in range(kb_n):
                for kt in range(lay.kt_n):
                    pages.append((*self.kslot(st.Q0 + kb, kt), st.rid))
            for q in range(tc_n * lay.dc_n):
                pages.append((*self.vpage(st.P0 + q), st.rid))
        return pages

    def maps(self, n_layers: int) -> list:
        """MAP of every page of the first ``n_layers`` layers (each page once)."""
        lay, B, S, k = self.lay, self.B, self.sp.n_sets, self.lay.group
        memo, out = {}, []
        for gi in range(math.ceil(n_layers / k)):
            kk = min(k, n_layers - gi * k)
            if kk not in memo:
                memo[kk] = self.group_pages(kk)
            off = gi * lay.group_sets
            out += [HCmd(_MAP, rid=rid, vp=(s + off) * B + b, pp=b * S + s + off)
                    for b, s, rid in memo[kk]]
        return out


def shift(items, ds: int, B: int, memo: dict) -> list:
    """``items`` with ``ds`` added to the set (``ds * B`` to the vp) of every page command
    (a weight region moved by ``ds`` sets); shared bodies stay shared."""
    out = []
    for it in items:
        if isinstance(it, Rep):
            r = memo.get(id(it))
            if r is None:
                bodies = []
                for bd in it.bodies:
                    nb = memo.get(id(bd))
                    if nb is None:
                        nb = memo[id(bd)] = tuple(shift(bd, ds, B, memo))
                    bodies.append(nb)
                r = memo[id(it)] = Rep(tuple(bodies), it.n, it.label, it.set_stride,
                                       it.vp_stride)
            out.append(r)
        elif it.op in (_WR_W, _MAC, _RD_OUT, _MAC_AB) and it.set >= 0:
            out.append(it._replace(set=it.set + ds, vp=it.vp + ds * B))
        else:
            out.append(it)
    return out
