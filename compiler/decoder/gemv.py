"""One weight GEMV of a decoder layer as host commands with data, on ONE PimModule.

Placement of W [N, K] (N outputs, K inputs; docs/compiler.md "GEMV" is the same idea for the
performance compiler): output tile ``jt`` (outputs jt*n_out ..) is on channel ``jt % C`` in
slot ``s = jt // C``; the kt input chunks of a slot are cut in ``kp`` bank parts of ``kc``
chunks; unit ``u = s * kp + part`` accumulates its chunks in one OBuf entry of one bank per
activation digit (the host adds parts and digits).  All channels of a slot share its pages
(the same vp in every channel holds that channel's tile), so a slot's MACs and RD_OUTs are
multicast; the input chunks are multicast to every channel used.

``resident``: every (unit, chunk) has its own page, written once (:meth:`GemvPlan.setup`).
Streamed (a module too small for the layer): each bank has a ring of sets; every chunk's page
is written just before its MAC into the next ring set of the unit's bank (the channel's
dependency table orders the WR_W after the MAC that last read the set).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from compiler.decoder.numerics import digit_weights, split_digits
from spec.isa import HostOp, ModuleParams, host_fields
from spec.params import pack, pack_vec

__all__ = ["GemvPlan", "plan_gemv", "Counters", "host_encoder", "pack_rows", "wr_w_words"]


@functools.lru_cache(maxsize=16)
def host_encoder(p: ModuleParams):
    """``enc(op, **fields)``: :func:`spec.isa.host_encode` with the field layout computed
    once (the same words, checked the same way)."""
    fields = host_fields(p)
    return lambda op, **f: pack(fields, op=op, **f)


@dataclass
class Counters:
    """Rotating GBuf / OBuf indices and ring positions of one module's program stream."""
    g: int = 0
    o: int = 0
    ring: dict = field(default_factory=dict)

    def next_g(self, n_gbuf: int) -> int:
        self.g = (self.g + 1) % n_gbuf
        return self.g


@dataclass
class GemvPlan:
    """Placement of one weight matrix (see the module doc)."""
    name: str
    N: int
    K: int
    nt: int
    kt: int
    slots: int
    kp: int
    kc: int
    digits: int
    rid: int
    resident: bool
    unit_bank: list            # bank of unit u
    unit_vps: list             # resident: vp of each of unit u's chunks
    slot_mask: list            # channel mask of each slot
    ring: dict = None          # streamed: bank -> [vp, ...]

    def part_ranges(self, n_in: int) -> list[tuple[int, int]]:
        """Input element ranges accumulated in one macro entry (for the fast path)."""
        return [(pt * self.kc * n_in, min(self.K, (pt + 1) * self.kc * n_in))
                for pt in range(self.kp)]

    @property
    def units(self) -> int:
        return self.slots * self.kp

    def chunks(self, u: int) -> range:
        pt = u % self.kp
        return range(pt * self.kc, min(self.kt, (pt + 1) * self.kc))

    @property
    def mask(self) -> int:
        m = 0
        for x in self.slot_mask:
            m |= x
        return m


def _cost(p: ModuleParams, nt, kt, slots, kp, kc, digits, C) -> float:
    """Cycles bound of one GEMV call: bank time, dispatcher commands, output beats."""
    B, m = p.channel.n_banks, p.channel.macro
    units = slots * kp
    bank = math.ceil(units / B) * kc * digits * m.x_bits
    disp = kt * digits + slots * kt * digits + units * digits
    chans = sum(min(C, nt - s * C) for s in range(slots))
    beats = chans * kp * digits
    return max(bank, disp, beats)


def plan_gemv(name: str, N: int, K: int, p: ModuleParams, pages, rid: int, digits: int,
              resident: bool, ring: dict | None = None) -> GemvPlan:
    """Place W [N, K]; ``pages`` is the layer's :class:`compiler.pages.PageAllocator`
    (resident: pages taken and mapped for ``rid``); ``ring`` (streamed): bank -> ring vps.
    ValueError naming the module limit that does not fit."""
    cp, m = p.channel, p.channel.macro
    C, B, S, E, G = p.n_ch, cp.n_banks, m.n_sets, m.n_acc, cp.n_gbuf
    nt, kt = math.ceil(N / m.n_out), math.ceil(K / m.n_in)
    slots = math.ceil(nt / C)
    best = None
    for kc in range(kt, 0, -1):
        kp = math.ceil(kt / kc)
        if (resident and kc > S) or kp * digits > G // 2 or kc > 2 ** m.acc_guard:
            continue
        if digits > E // 2:
            break
        key = (_cost(p, nt, kt, slots, kp, kc, digits, C), kp)
        if best is None or key < best[0]:
            best = (key, kp, kc)
        if not resident:
            break                      # streamed: WR_W-bound, the fewest parts that fit
    if best is None:
        raise ValueError(f"n_sets/n_acc/n_gbuf/acc_guard: GEMV {name} [{N}x{K}] with {digits} "
                         f"digit(s) does not fit (n_sets={S}, n_acc={E}, n_gbuf={G}, "
                         f"n_banks={B}, acc_guard={m.acc_guard})")
    _, kp, kc = best
    slot_mask = [((1 << min(C, nt - s * C)) - 1) for s in range(slots)]
    plan = GemvPlan(name, N, K, nt, kt, slots, kp, kc, digits, rid, resident, [], [],
                    slot_mask, ring)
    if resident:
        n_vp = sum(len(plan.chunks(u)) for u in range(plan.units))
        v0 = pages.reserve_vpages(n_vp, rid, f"GEMV {name}")
        for u in range(plan.units):
            n = len(plan.chunks(u))
            pps = pages.take(n, f"GEMV {name} unit {u}")
            plan.unit_bank.append(pps[0] // S)
            vps = list(range(v0, v0 + n))
            v0 += n
            for vp, pp in zip(vps, pps, strict=True):
                pages.map(vp, pp, rid)
            plan.unit_vps.append(vps)
    else:
        plan.unit_bank = [u % B for u in range(plan.units)]
    return plan


def pack_rows(rows: np.ndarray, bits: int) -> list[int]:
    """:func:`spec.params.pack_vec` of every row of the int array ``rows`` [R, n] (8-bit
    values through one byte conversion, the same words)."""
    rows = np.asarray(rows, dtype=np.int64)
    if bits == 8:
        lo, hi = int(rows.min(initial=0)), int(rows.max(initial=0))
        if lo < -128 or hi > 127:
            raise ValueError(f"pack_rows: value {lo if lo < -128 else hi} does not fit 8 bits")
        b = rows.astype(np.int8).tobytes()
        n = rows.shape[1]
        return [int.from_bytes(b[i * n:(i + 1) * n], "little") for i in range(rows.shape[0])]
    return [pack_vec(r, bits) for r in rows]


def wr_w_words(p: ModuleParams, chmask: int, rid: int, vp: int, datas, row0: int = 0) -> list:
    """WR_W words of rows ``row0, row0+1, ..`` with data words ``datas`` (the fields are
    disjoint: row and data are added to one encoded word)."""
    hf = host_fields(p)
    base = host_encoder(p)(HostOp.WR_W, chmask=chmask, rid=rid, vp=vp)
    ro, do = hf["row"].offset, hf["data"].offset
    if row0 + len(datas) > 1 << hf["row"].width:
        raise ValueError(f"wr_w_words: rows up to {row0 + len(datas) - 1} do not fit")
    return [base | (row0 + r) << ro | d << do for r, d in enumerate(datas)]


def _rows(W: np.ndarray, jt: int, k: int, m) -> np.ndarray:
    """Weight rows of tile ``jt``, chunk ``k``: row r holds W[jt*n_out + c, k*n_in + r]
    (rows r < K - k*n_in only: the inputs beyond K are zero)."""
    N, K = W.shape
    n = min(m.n_in, K - k * m.n_in)
    blk = np.zeros((n, m.n_out), dtype=np.int64)
    sub = W[jt * m.n_out:(jt + 1) * m.n_out, k * m.n_in:k * m.n_in + n]
    blk[:, :sub.shape[0]] = sub.T
    return blk


def tile_writes(p: ModuleParams, plan: GemvPlan, W: np.ndarray, s: int, k: int, vp: int) -> list:
    """WR_W words of chunk ``k`` of slot ``s`` into page ``vp``, every channel of the slot."""
    m = p.channel.macro
    out = []
    for c in range(p.n_ch):
        if plan.slot_mask[s] >> c & 1:
            out += wr_w_words(p, 1 << c, plan.rid, vp,
                              pack_rows(_rows(W, s * p.n_ch + c, k, m), m.w_bits))
    return out


def setup_words(p: ModuleParams, plan: GemvPlan, W: np.ndarray) -> list:
    """Resident plan: the WR_W words of every page (after the MAPs)."""
    out = []
    for u in range(plan.units):
        s = u // plan.kp
        for vp, k in zip(plan.unit_vps[u], plan.chunks(u), strict=True):
            out += tile_writes(p, plan, W, s, k, vp)
    return out


def _rounds(plan: GemvPlan, cap: int) -> list[list[int]]:
    """Units in rounds whose OBuf entries fit: at most ``cap`` units per bank per round."""
    out, cur, cnt = [], [], {}
    for u in range(plan.units):
        b = plan.unit_bank[u]
        if cnt.get(b, 0) == cap:
            out.append(cur)
            cur, cnt = [], {}
        cur.append(u)
        cnt[b] = cnt.get(b, 0) + 1
    return out + [cur]


def gemv_words(p: ModuleParams, plan: GemvPlan, xq, W, ctr: Counters, phase: str):
    """Host words of one GEMV call on input codes ``xq`` [K] (``plan.digits`` digits) and the
    expected reads: (words, reads) with reads[c] = [(bank, o, (phase, u, digit))].  ``W``
    (weight codes) is needed only when streamed (None: zero data, for timing).

    Units run in rounds whose OBuf entries fit in half the OBuf (the two halves alternate
    between rounds, so a round's MACs do not wait for the previous round's RD_OUTs) and,
    streamed, whose pages of one chunk fit the bank's ring (all of a chunk's WR_Ws precede its
    MACs); each round writes the input chunks its units need."""
    cp, m = p.channel, p.channel.macro
    E, G, NI = m.n_acc, cp.n_gbuf, m.n_in
    xd = split_digits(np.asarray(xq, dtype=np.int64), plan.digits, m.x_bits)   # [digits, K]
    enc = host_encoder(p)
    words, reads = [], {c: [] for c in range(p.n_ch)}
    mask = plan.mask
    cap = (E // 2) // plan.digits
    if not plan.resident:       # a round's chunk pages of one bank must not reuse a ring set
        cap = min(cap, min(len(r) for r in plan.ring.values()))
    for rnd in _rounds(plan, cap):
        local, cnt = {}, {}
        for u in rnd:
            b = plan.unit_bank[u]
            local[u] = cnt.get(b, 0)
            cnt[b] = local[u] + 1
        obase = ctr.o
        ctr.o = (ctr.o + E // 2) % E

        def o_of(u, j):
            return (obase + local[u] * plan.digits + j) % E
        parts = sorted({u % plan.kp for u in rnd})
        for i in range(plan.kc):
            gs = {}
            for j in range(plan.digits):
                for pt in parts:
                    k = pt * plan.kc + i
                    if k >= plan.kt:
                        continue
                    g = ctr.next_g(G)
                    gs[(pt, j)] = g
                    # the chunk's missing tail is zero: pack_vec packs element 0 in the LSBs
                    words.append(enc(HostOp.WR_INP, chmask=mask, g=g,
                                     data=pack_vec(xd[j, k * NI:(k + 1) * NI], m.x_bits)))
            vps = {}
            for u in rnd:
                s, pt = divmod(u, plan.kp)
                k = pt * plan.kc + i
                if k >= plan.kt:
                    continue
                if plan.resident:
                    vps[u] = plan.unit_vps[u][i]
                    continue
                b = plan.unit_bank[u]
                ring = plan.ring[b]
                n = ctr.ring.get(b, 0)
                ctr.ring[b] = n + 1
                vps[u] = vp = ring[n % len(ring)]
                if W is None:
                    for c in range(p.n_ch):
                        if plan.slot_mask[s] >> c & 1:
                            words += wr_w_words(p, 1 << c, plan.rid, vp,
                                                [0] * min(NI, plan.K - k * NI))
                else:
                    words += tile_writes(p, plan, W, s, k, vp)
            # digit-major: consecutive MACs go to different banks (DCS overlaps them)
            for j in range(plan.digits):
                for u, vp in vps.items():
                    s, pt = divmod(u, plan.kp)
                    words.append(enc(HostOp.MAC, chmask=plan.slot_mask[s], rid=plan.rid,
                                     vp=vp, g=gs[(pt, j)], o=o_of(u, j), acc=int(i > 0)))
        for u in rnd:
            s = u // plan.kp
            vp = plan.unit_vps[u][0] if plan.resident else plan.ring[plan.unit_bank[u]][0]
            for j in range(plan.digits):
                words.append(enc(HostOp.RD_OUT, chmask=plan.slot_mask[s], rid=plan.rid, vp=vp,
                                 o=o_of(u, j)))
                for c in range(p.n_ch):
                    if plan.slot_mask[s] >> c & 1:
                        reads[c].append((plan.unit_bank[u], o_of(u, j), (phase, u, j)))
    return words, reads


def gemv_decode(p: ModuleParams, plan: GemvPlan, beats) -> np.ndarray:
    """int64 [N] from ``beats`` = [(channel, (phase, u, digit), y)] of one call."""
    m = p.channel.macro
    NO = m.n_out
    pv = digit_weights(plan.digits, m.x_bits)
    y = np.zeros(plan.nt * NO, dtype=np.int64)
    for c, (_, u, j), vals in beats:
        jt = (u // plan.kp) * p.n_ch + c
        y[jt * NO:(jt + 1) * NO] += np.asarray(vals, dtype=np.int64) * pv[j]
    return y[:plan.N]
