"""Memory layout of one module: shards, attention units, KV streams, the group slab of weights
and KV areas, and its capacity accounting (docs/compiler.md, "Memory layout", "Allocation")."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from compiler.llm.config import ModelConfig
from compiler.llm.gemv import gemv_geom
from compiler.llm.system import System, kv_replication
from compiler.pages import kv_blocks, region_sets
from perf.sim import SimParams
from spec.params import check_int

__all__ = ["Layout", "check_common", "check_group", "build_layout", "capacity_of"]


@dataclass
class _Shard:
    hq: int          # query heads per module
    hkv: int         # KV heads per module
    grp: int         # GQA group
    d: int
    hidden: int
    inter: int       # FFN columns per module


def _shard(cfg: ModelConfig, system: System) -> _Shard:
    """Heads and FFN columns of one module; tp > kv_heads: one (replicated) KV head and
    heads / tp query heads of its group."""
    hq = cfg.heads // system.tp
    hkv = max(1, cfg.kv_heads // system.tp)
    return _Shard(hq, hkv, hq // hkv, cfg.head_dim, cfg.hidden,
                  math.ceil(cfg.intermediate / system.tp))


@dataclass
class _Unit:
    """One (layer j of a group, request r, KV head h) attention unit: its channel ``c`` (HFP)
    or None (TCP: all channels); ``nloc`` live tokens on its fullest channel; ``kb``/``tc``
    key blocks / token chunks it reserves."""
    j: int
    r: int
    h: int
    c: int | None
    T: int
    nloc: int
    kb: int
    tc: int


@dataclass
class _Stream:
    """KV region of one TCP (request, head) or one HFP slot (up to C units on distinct
    channels sharing the same pages, each channel holding its own unit's data): K slots
    [Q0, Q0+kb_alloc), V pages [P0, P0+tc_alloc*dc_n); owned by ``rid``.  ``kind``: "kv"
    (TCP, HFP), "k" or "v" (CENT: K streams TCP-like, V slots HFP-like)."""
    rid: int
    units: list
    kb_alloc: int
    tc_alloc: int
    Q0: int = 0
    P0: int = 0
    kind: str = "kv"


@dataclass
class Layout:
    sp: SimParams
    sh: _Shard
    tcp: bool
    kt_n: int
    dc_n: int
    gemvs: dict
    streams: list
    w_sets: int          # one layer's weight region
    k_sets: int          # the group's shared K area
    v_sets: int          # the group's shared V area
    w_base: dict         # first set of each matrix in variant 0's weight region
    kbase: int
    vbase: int
    wbase: int           # variant 0's weight region (variant j's: wbase + j * w_sets)
    group_sets: int      # slab of one group of ``group`` layers (the layer Rep's set stride)
    group: int           # layers per group (layer variants)
    layers: int
    w_pages: int         # one layer's weight pages
    kv_pages_module: int = 0      # KV pages of all the module's layers (each page counted once)
    sets_used: int = 0
    part: str = "TCP"             # partition: "TCP", "HFP" or "CENT"
    ab: bool = False              # all-bank MACs (stripes: K slots aligned to n_banks)
    sv_ab: bool = False           # SV rounds are stripes (dc_n a multiple of n_banks)

    def lanes_of(self, phase: str) -> list:
        """Streams holding K ("qk") or V ("sv")."""
        want = "k" if phase == "qk" else "v"
        return [st for st in self.streams if want in st.kind]

    @property
    def n_groups(self) -> int:
        return math.ceil(self.layers / self.group)

    def stream_use(self, kk: int) -> list:
        """(stream, key blocks, token chunks) of the streams that units of variants < kk use
        (a group whose first kk layers exist), each allocation the max over those units."""
        out = []
        for st in self.streams:
            us = [u for u in st.units if u.j < kk]
            if us:
                out.append((st, max(u.kb for u in us), max(u.tc for u in us)))
        return out

    def group_pages(self, kk: int) -> int:
        return sum(kb * self.kt_n + tc * self.dc_n for _, kb, tc in self.stream_use(kk))

    def group_extent(self, kk: int) -> int:
        """Sets of a group slab that a group of kk layers touches (weights of its variants,
        its K and V pages)."""
        B, e = self.sp.n_banks, self.wbase + kk * self.w_sets
        for st, kb, tc in self.stream_use(kk):
            e = max(e, self.kbase + region_sets(st.Q0 + kb, self.kt_n, B),
                    self.vbase + region_sets(st.P0 + tc * self.dc_n, 1, B))
        return e


def check_common(cfg, system, contexts, partition, alloc, max_context):
    """Validated (contexts as a list of ints, max_context); ValueError naming a bad one."""
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg={cfg!r} must be a ModelConfig")
    if not isinstance(system, System):
        raise ValueError(f"system={system!r} must be a System")
    system.validate(cfg)
    if partition not in ("HFP", "TCP", "CENT"):
        raise ValueError(f"partition={partition!r} must be 'CENT', 'TCP' or 'HFP'")
    if alloc not in ("static", "dpa"):
        raise ValueError(f"alloc={alloc!r} must be 'static' or 'dpa'")
    if not isinstance(contexts, Iterable) or isinstance(contexts, (str, bytes, dict)):
        raise ValueError(f"contexts={contexts!r} must be a list of context lengths (one per "
                         "request)")
    contexts = list(contexts)
    if not contexts:
        raise ValueError("contexts=[]: no requests")
    contexts = [check_int(f"contexts[{i}]", T, 1) for i, T in enumerate(contexts)]
    if max_context is None:
        max_context = max(contexts)
    max_context = check_int("max_context", max_context)
    if max_context < max(contexts):
        raise ValueError(f"max_context={max_context!r} < the longest context "
                         f"{max(contexts)}")
    return contexts, int(max_context)


def check_group(system, cfg, partition, group):
    """``group`` (None or an int in 1..min(n_ch, layers per stage) for HFP, 1 for TCP)."""
    if group is None:
        return None
    hi = 1 if partition == "TCP" else min(system.sim.n_ch, system.layers_per_stage(cfg))
    return check_int("group", group, 1, hi)


def _hfp_streams(units: list, k: int, C: int, kind: str = "kv") -> list:
    """HFP slots of a group of ``k`` layers: unit g = j * U + u (unit u = r * H + h of layer j
    of the group, U units per layer) is on channel g % C in slot g // C (rid slot + 1), so
    the C units of a slot are on distinct channels and share its pages."""
    U = len(units)
    streams = []
    for g in range(k * U):
        j, u = divmod(g, U)
        s, c = divmod(g, C)
        r, h, T, nloc, kb, tc = units[u]
        if s == len(streams):
            streams.append(_Stream(s + 1, [], kb, tc, kind=kind))
        st = streams[s]
        st.units.append(_Unit(j, r, h, c, T, nloc, kb, tc))
        st.kb_alloc = max(st.kb_alloc, kb)
        st.tc_alloc = max(st.tc_alloc, tc)
    return streams


def build_layout(cfg, system, contexts, partition, alloc, max_context, group=None) -> Layout:
    """The module's layout.  HFP: the group size k (layers sharing one KV area, k <= C and
    <= the stage's layers) with the fewest slot rows ceil(L / k) * ceil(k * U / C) (U units
    per layer), the smallest such k (at most 3 tried, the one needing the fewest sets wins;
    ``group`` forces one).  E.g. U = 1: k = min(L, C); U | C: k = C / U; U >= C: 1 or the k
    that fills the last slot.  CENT: K as TCP (one stream per request and KV head over every
    channel, per layer of the group), V as HFP (slots, the same group rule).  With all-bank
    MACs (``sim.all_bank``) every stream's key blocks are a whole number of stripes (n_banks
    blocks), so a round of n_banks key blocks is one set of every bank."""
    sp = system.sim
    sh = _shard(cfg, system)
    C, B, NI, NO = sp.n_ch, sp.n_banks, sp.n_in, sp.n_out
    tcp = partition == "TCP"
    cent = partition == "CENT"
    ab = sp.all_bank
    kt_n, dc_n = math.ceil(sh.d / NI), math.ceil(sh.d / NO)
    gemvs = {
        "qkv": gemv_geom("qkv", (sh.hq + 2 * sh.hkv) * sh.d, sh.hidden, sp),
        "o": gemv_geom("o", sh.hidden, sh.hq * sh.d, sp),
        "gu": gemv_geom("gu", 2 * sh.inter, sh.hidden, sp),
        "down": gemv_geom("down", sh.hidden, sh.inter, sp),
    }
    w_off, s = {}, 0
    for key, g in gemvs.items():
        w_off[key] = s
        s += g.sets
    w_sets = s
    w_pages = sum(g.pages for g in gemvs.values())
    L = system.layers_per_stage(cfg)

    def units_of(Cs):                       # (r, h, T, nloc, kb, tc) of one layer, r-major
        out = []
        for r, T in enumerate(contexts):
            kb, tc = kv_blocks(T if alloc == "dpa" else max_context, Cs, NI, NO)
            if ab:
                kb = -(-kb // B) * B        # whole stripes
            for h in range(sh.hkv):
                out.append((r, h, T, math.ceil(T / Cs), kb, tc))
        return out
    units = units_of(C if tcp else 1)
    kunits = units_of(C) if cent else None
    U = len(units)
    if group is not None:
        cands = [group]
    elif tcp:
        cands = [1]
    else:                       # fewest slot rows: groups x slots per group
        score = {k: math.ceil(L / k) * math.ceil(k * U / C) for k in range(1, min(L, C) + 1)}
        best = min(score.values())
        cands = [k for k in sorted(score) if score[k] == best][:3]

    def build(k):
        if tcp:
            streams = [_Stream(r + 1, [_Unit(0, r, h, None, T, nl, kb, tc)], kb, tc)
                       for r, h, T, nl, kb, tc in units]
        elif cent:
            streams = [_Stream(r + 1, [_Unit(j, r, h, None, T, nl, kb, 0)], kb, 0, kind="k")
                       for j in range(k) for r, h, T, nl, kb, tc in kunits]
            streams += _hfp_streams([(r, h, T, nl, 0, tc) for r, h, T, nl, kb, tc in units],
                                    k, C, "v")
        else:
            streams = _hfp_streams(units, k, C)
        Q = P = 0
        for st in streams:
            st.Q0, st.P0 = Q, P
            Q += st.kb_alloc
            P += st.tc_alloc * dc_n
        k_sets, v_sets = region_sets(Q, kt_n, B), region_sets(P, 1, B)
        # TCP slab [weights | K | V]; HFP/CENT group slab [K | V | k x weights] (a last,
        # partial group then ends after its own layers' weights: no hole)
        kbase = w_sets if tcp else 0
        wbase = 0 if tcp else k_sets + v_sets
        lay = Layout(sp, sh, tcp, kt_n, dc_n, gemvs, streams, w_sets, k_sets, v_sets,
                     {key: wbase + o for key, o in w_off.items()}, kbase, kbase + k_sets,
                     wbase, k_sets + v_sets + k * w_sets, k, L, w_pages,
                     part=partition, ab=ab, sv_ab=ab and dc_n % B == 0)
        full, last = divmod(L, k)
        lay.kv_pages_module = full * lay.group_pages(k) + (lay.group_pages(last) if last else 0)
        lay.sets_used = (lay.n_groups - 1) * lay.group_sets + lay.group_extent(last or k)
        return lay
    return min((build(k) for k in cands),
               key=lambda x: (x.sets_used, x.kv_pages_module, x.group))


def capacity_of(cfg, system, lay: Layout, contexts) -> dict:
    """Capacity accounting of a layout over the whole system (bytes; see docs/compiler.md,
    "Allocation"): live and reserved KV, weights, ``fits``."""
    sp = system.sim
    pbytes = sp.n_ch * sp.page_bytes                       # one page in every channel
    shards = cfg.layers * system.tp                        # (layer, tp shard) pairs
    repl = kv_replication(cfg, system.tp)
    live = sum(contexts) * cfg.kv_bytes_per_token(sp.w_bits) * repl
    # a page is counted once although (HFP) up to C units of different requests / layers
    # hold their data in its C channels; the module's pages per layer x every (layer, shard)
    reserved = round(lay.kv_pages_module * pbytes * shards / lay.layers)
    w_res = lay.w_pages * pbytes * shards
    cap = system.capacity_bytes
    fits_sets = lay.sets_used <= sp.n_sets
    return dict(
        live_kv_bytes=float(live), reserved_kv_bytes=int(reserved),
        weight_bytes=float(cfg.layers * cfg.weight_bytes_per_layer(sp.w_bits)),
        weight_reserved_bytes=int(w_res),
        other_weight_bytes=float(cfg.embedding_params * sp.w_bits / 8),
        capacity_bytes=int(cap), module_bytes=int(sp.capacity_bytes),
        utilisation=(live / reserved) if reserved else 0.0, kv_replication=repl,
        sets_used=lay.sets_used, n_sets=sp.n_sets, layer_sets=lay.group_sets,
        layer_group=lay.group, kv_pages_module=lay.kv_pages_module,
        kv_pages_per_layer=lay.kv_pages_module / lay.layers, w_pages_per_layer=lay.w_pages,
        free_bytes=int(cap - w_res - reserved),
        fits=bool(fits_sets and w_res + reserved <= cap))
