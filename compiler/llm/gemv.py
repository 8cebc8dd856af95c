"""GEMV geometry: how one weight matrix is cut into pages, channels and bank parts
(docs/compiler.md, "GEMV")."""
from __future__ import annotations

import math
from dataclasses import dataclass

from perf.sim import SimParams

__all__ = ["GemvGeom", "gemv_geom", "t_mac"]


@dataclass(frozen=True)
class GemvGeom:
    """Placement of one weight matrix W [N outputs, K inputs] on a module (docs/compiler.md).
    Unit u = (tile m, part p), u = m * kp + p, is on bank u % B, sets
    ``base + (u // B) * kc + i`` (i < kc); rounds R = ceil(units / B).  ``stripe``: all-bank
    MACs (kp = 1; a round's B pages are one stripe, MAPped whole)."""
    name: str
    N: int
    K: int
    nt: int          # output tiles
    kt: int          # input chunks
    cs: int          # channel groups splitting the input chunks
    kp: int          # bank parts splitting the input chunks
    kc: int          # chunks per part (= steps of a pass)
    tpc: int         # tiles per channel slot
    units: int       # tpc * kp per channel
    R: int           # rounds (units per bank)
    cmask: int       # channels used
    gmasks: tuple    # channel mask of each group
    stripe: bool = False
    n_banks: int = 1

    @property
    def sets(self) -> int:
        return self.R * self.kc

    @property
    def mapped_units(self) -> int:
        """Units whose pages are MAPped: every bank of every round with all-bank MACs."""
        return self.R * self.n_banks if self.stripe else self.units

    @property
    def pages(self) -> int:
        return self.mapped_units * self.kc


def t_mac(sp: SimParams) -> int:
    """Cycles one MAC holds its bank: DRAM page bytes / burst x tCCDL; DIMC x_bits."""
    if sp.backend == "dram":
        return max(1, sp.page_bytes // sp.dram.burst_bytes * sp.dram.CCDL)
    return sp.x_bits


def gemv_geom(name: str, N: int, K: int, sp: SimParams) -> GemvGeom:
    """The (channel groups, bank parts) split of W [N, K] with the least per-request cost:
    the largest of bank time, dispatcher commands and output beats (docs/compiler.md).  With
    ``sp.all_bank``: kp = 1 (every bank of a channel on the same input chunk) and one MAC_AB
    per round; single-bank MACs on DRAM share the channel's column bus (perf/chan.py), so
    their bank time is the channel's units x kc MACs in series."""
    C, B, G = sp.n_ch, sp.n_banks, sp.n_gbuf
    nt, kt = math.ceil(N / sp.n_out), math.ceil(K / sp.n_in)
    tm = t_mac(sp)
    ab = sp.all_bank
    bus = sp.backend == "dram" and not ab
    best = None
    for cs in (x for x in range(1, C + 1) if C % x == 0):
        if cs > 1 and cs > kt:
            break
        Cw = C // cs
        tpc = math.ceil(nt / Cw)
        for kp in range(1, (1 if ab else min(B, G, math.ceil(kt / cs))) + 1):
            kc = math.ceil(kt / (cs * kp))
            units = tpc * kp
            R = math.ceil(units / B)
            # per request: bank time, dispatcher (1 command/cycle: WR_INPs, MACs, RD_OUTs)
            # and the module's output port (1 beat/cycle: RD_OUTs x channels)
            cost = max(kc * (units if bus else R) * tm,
                       kc * ((R if ab else units) + cs * kp) + units,
                       units * cs * min(nt, C // cs))
            key = (cost, R * kc, cs * kp)
            if best is None or key < best[0]:
                best = (key, cs, kp, kc, tpc, units, R)
    _, cs, kp, kc, tpc, units, R = best
    Cw = C // cs
    used = min(nt, Cw)
    gm = tuple(((1 << used) - 1) << (q * Cw) for q in range(cs))
    return GemvGeom(name, N, K, nt, kt, cs, kp, kc, tpc, units, R, sum(gm), gm, ab, B)
