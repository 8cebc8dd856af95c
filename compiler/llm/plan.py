"""The step plan: :func:`compile_step` (one decode step on one module), its closed-form
counts, and :func:`max_batch` (docs/compiler.md)."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from compiler.llm.builder import Builder, shift
from compiler.llm.config import ModelConfig
from compiler.llm.layout import build_layout, capacity_of, check_common, check_group
from compiler.llm.system import GB, System
from perf.program import MAC_AB, WAIT, HCmd, Rep, check_items
from spec.isa import HostOp
from spec.params import check_int
from workloads.mix import request_lengths

__all__ = ["StepPlan", "compile_step", "max_batch", "plan_counts", "tree_nodes"]

_MAC, _RD_OUT = int(HostOp.MAC), int(HostOp.RD_OUT)
_BAR = HCmd(int(HostOp.BARRIER))
_OPS = {int(o): o.name for o in HostOp}
_OPS[MAC_AB] = "MAC_AB"
_NOPS = MAC_AB + 1                      # host opcodes counted (WAIT counted apart)


def plan_counts(items, n_banks: int = 1) -> dict:
    """Closed-form counts of an item tree: commands per op name, ``total`` (host commands),
    ``WAIT`` (host waits, not commands), ``mac_ch`` (bank MACs: MACs x channels in their mask,
    a MAC_AB ``n_banks`` per channel) and ``out_beats`` (RD_OUTs x channels)."""
    check_items("plan_counts", items)
    memo = {}

    def cnt(its):
        v = np.zeros(_NOPS + 3, dtype=np.int64)
        for it in its:
            if isinstance(it, Rep):
                key = id(it)
                if key not in memo:
                    per = [cnt(b) for b in it.bodies]
                    full, rest = divmod(it.n, len(per))
                    w = full * sum(per) + (sum(per[:rest]) if rest else 0)
                    memo[key] = (it, w)
                v = v + memo[key][1]
            elif it.op == WAIT:
                v[-3] += 1
            else:
                v[it.op] += 1
                if it.op == _MAC:
                    v[-2] += it.chmask.bit_count()
                elif it.op == MAC_AB:
                    v[-2] += it.chmask.bit_count() * n_banks
                elif it.op == _RD_OUT:
                    v[-1] += it.chmask.bit_count()
        return v
    v = cnt(items)
    out = {name: int(v[op]) for op, name in _OPS.items() if v[op]}
    out["total"] = int(v[:_NOPS].sum())
    if v[-3]:
        out["WAIT"] = int(v[-3])
    out["mac_ch"] = int(v[-2])
    out["out_beats"] = int(v[-1])
    return out


@dataclass
class StepPlan:
    """One decode step on one module (docs/compiler.md).  ``layer``: items of one layer
    (layer 0's pages); ``variants``: the layer programs of the ``group`` layers of a group
    (``variants[0]`` is ``layer``; HFP rotates the channels per layer of a group and gives
    each its own weight region, TCP has one); ``step``: the ``layers`` layers as one strided
    Rep over the variants (stride ``layer_sets``, the sets of one group slab: one layer's
    slab when ``group`` = 1); ``setup``: MAP of every page of every layer (computed on first
    access); ``parts``: the items of each phase of ``layer``; ``counts``: commands per op of
    one layer (plus ``mac_ch``, ``out_beats``; equal for every variant)."""
    cfg: ModelConfig
    system: System
    contexts: list
    partition: str
    alloc: str
    max_context: int
    layer: list
    layers: int
    stages: int
    layer_sets: int
    parts: dict
    useful_macs: int
    pim_macs: int
    capacity: dict
    counts: dict
    info: dict
    variants: list = None
    group: int = 1
    _maps: Callable = field(repr=False, default=None)
    _setup: list = field(repr=False, default=None)

    @property
    def step(self) -> list:
        """The items of the whole step on this module (all its layers)."""
        if self.layers == 1:
            return list(self.layer)
        st = self.layer_sets
        vs = self.variants or [self.layer]
        return [Rep(tuple(tuple(v) for v in vs), self.layers, "layers", set_stride=st,
                    vp_stride=st * self.system.sim.n_banks)]

    @property
    def setup(self) -> list:
        """MAP of every page the step uses (all layers of this module, each page once)."""
        if self._setup is None:
            self._setup = self._maps(self.layers)
        return self._setup

    def setup_layers(self, n: int) -> list:
        """MAPs of the first ``n`` layers' pages only."""
        return self._maps(n)

    @property
    def n_leaves(self) -> int:
        """Host commands of the whole step (all layers of this module)."""
        return self.layers * self.counts["total"]

    @property
    def batch(self) -> int:
        return len(self.contexts)


def compile_step(cfg: ModelConfig, system: System, contexts, partition: str = "TCP",
                 alloc: str = "dpa", max_context: int | None = None,
                 strict: bool = True, group: int | None = None,
                 blocking: bool = False) -> StepPlan:
    """Compile ONE decode step of ``cfg`` for the requests of ``contexts`` (cache lengths
    including the new token) on one module of ``system`` (docs/compiler.md).

    partition "CENT" | "TCP" | "HFP"; alloc "dpa" | "static" (static reserves
    ``max_context``, default max(contexts), per request); all-bank MACs where a round is a
    stripe if ``system.sim.all_bank``; ``blocking``: a WAIT after every group of result reads
    (the host blocks on reads, as CENT's; no read is deferred).  A
    :class:`~compiler.llm.policy.Policy` gives all of these (``policy.system(system)``,
    ``**policy.compile_kw``).  ValueError naming the value for a bad input or a resource that
    does not fit (GBuf/OBuf entries, sets per bank, capacity); ``strict=False`` still builds a
    plan whose pages exceed the module (``capacity['fits']`` False) for what-if timing.
    ``group`` (HFP): layers per group sharing a KV area, 1 .. min(n_ch, layers per stage);
    None chooses it (see :func:`~compiler.llm.layout.build_layout`); a smaller one builds a
    smaller tree (fewer layer variants) at the cost of capacity.
    """
    contexts, max_context = check_common(cfg, system, contexts, partition, alloc, max_context)
    group = check_group(system, cfg, partition, group)
    if not isinstance(blocking, bool):
        raise ValueError(f"blocking={blocking!r} must be a bool")
    sp = system.sim
    lay = build_layout(cfg, system, contexts, partition, alloc, max_context, group)
    if lay.kt_n > sp.n_gbuf:
        raise ValueError(f"n_gbuf={sp.n_gbuf}: head_dim {cfg.head_dim} needs {lay.kt_n} query "
                         f"chunks of n_in={sp.n_in} resident in the GBuf")
    gg = math.gcd(sp.n_banks, lay.dc_n)
    if lay.dc_n // gg > sp.n_acc:
        raise ValueError(f"n_acc={sp.n_acc}: SV needs {lay.dc_n // gg} OBuf entries per bank "
                         f"(head_dim {cfg.head_dim}, n_out={sp.n_out}, n_banks={sp.n_banks})")
    cap = capacity_of(cfg, system, lay, contexts)
    if strict:
        if lay.sets_used > sp.n_sets:
            why = ""
            if lay.part == "HFP":
                un = max((u for st in lay.streams for u in st.units),
                         key=lambda u: u.kb * lay.kt_n + u.tc * lay.dc_n)
                pg = un.kb * lay.kt_n + un.tc * lay.dc_n
                why = (f"; HFP keeps a KV head on one channel: one head's cache alone is {pg} "
                       f"pages = {pg / sp.n_banks:.0f} sets per bank = "
                       f"{pg * sp.page_bytes / 2**20:.4g} MB of the channel's "
                       f"{sp.n_banks * sp.n_sets * sp.page_bytes / 2**20:.4g} MB")
            raise ValueError(
                f"n_sets={sp.n_sets}: the step needs {lay.sets_used} sets per bank "
                f"({lay.n_groups} groups of {lay.group} layers x {lay.group_sets}: weights "
                f"{lay.group} x {lay.w_sets}, K {lay.k_sets}, V {lay.v_sets}) for contexts up "
                f"to {max(contexts)} x {len(contexts)} requests ({partition}, {alloc}){why}")
        if not cap["fits"]:
            raise ValueError(f"capacity: weights {cap['weight_reserved_bytes'] / GB:.1f} GB + "
                             f"KV {cap['reserved_kv_bytes'] / GB:.1f} GB > capacity_bytes="
                             f"{cap['capacity_bytes'] / GB:.1f} GB")
    bld = Builder(lay, blocking)
    b = len(contexts)
    parts, ginfo = {}, {}
    for key in ("qkv", "o", "gu", "down"):
        parts[key], ginfo[key] = bld.gemv(key, b)

    def layer_of(p):
        return (p["qkv"] + [_BAR] + p["append"] + p["qk"] + [_BAR] + p["sv"] + [_BAR]
                + p["o"] + [_BAR] + p["gu"] + [_BAR] + p["down"] + [_BAR])
    variants = []
    for j in range(lay.group):            # layer j of a group: its channels, weight region
        if j == 0:
            pj = parts
        else:
            memo = {}
            pj = {k: shift(parts[k], j * lay.w_sets, sp.n_banks, memo)
                  for k in ("qkv", "o", "gu", "down")}
        pj["append"] = bld.append(j)
        pj["qk"] = bld.attention("qk", j)
        pj["sv"] = bld.attention("sv", j)
        variants.append(layer_of(pj))
    parts = {k: parts[k] for k in ("qkv", "append", "qk", "sv", "o", "gu", "down")}
    layer = variants[0]
    B = sp.n_banks
    pc = {k: plan_counts(v, B) for k, v in parts.items()}
    tot = Counter({"BARRIER": 6, "total": 6})
    for c in pc.values():
        tot.update(c)
    order = [n for n in _OPS.values() if tot.get(n)] + ["total", "mac_ch", "out_beats"] \
        + (["WAIT"] if tot.get("WAIT") else [])
    counts = {k: int(tot.get(k, 0)) for k in order}
    useful = sum(cfg.macs_per_token(T) for T in contexts)
    for v in variants[1:]:            # rotated channels and shifted pages, the same commands
        cv = plan_counts(v, B)
        if (cv["total"], cv["mac_ch"], cv["out_beats"]) != \
                (counts["total"], counts["mac_ch"], counts["out_beats"]):
            raise AssertionError(f"layer variants differ in counts: {cv} != {counts}")
    pim = lay.layers * counts["mac_ch"] * sp.n_in * sp.n_out
    info = dict(tp=system.tp, pp=system.pp, kv_heads_per_module=lay.sh.hkv,
                q_heads_per_module=lay.sh.hq, group=lay.sh.grp, ffn_cols=lay.sh.inter,
                kt_n=lay.kt_n, dc_n=lay.dc_n, gemv=ginfo, parts=pc,
                streams=len(lay.streams), layer_group=lay.group, layer_sets=lay.group_sets,
                sets_used=lay.sets_used, all_bank=lay.ab, sv_all_bank=lay.sv_ab,
                blocking=blocking, kv_replication=cap["kv_replication"],
                tree_nodes=sum(tree_nodes(v) for v in parts.values()) + 6,
                # useful MACs / page-MACs of the whole system (padding, partial tiles)
                useful_frac=useful / (pim * system.n_modules) if pim else 0.0)
    return StepPlan(cfg, system, contexts, partition, alloc, max_context, layer, lay.layers,
                    system.pp, lay.group_sets, parts, useful, pim, cap, counts, info,
                    variants=variants, group=lay.group, _maps=bld.maps)


def tree_nodes(items) -> int:
    """Nodes of an item tree (HCmds and Reps, each body item counted once)."""
    def nodes(its):
        n = 0
        for it in its:
            n += 1
            if isinstance(it, Rep):
                n += sum(nodes(b) for b in it.bodies)
        return n
    return nodes(check_items("tree_nodes", items))


def max_batch(cfg: ModelConfig, system: System, contexts, alloc: str = "dpa",
              partition: str = "TCP", max_context: int | None = None, seed: int = 0,
              limit: int = 1 << 20, group: int | None = None, blocking: bool = False) -> int:
    """How many requests fit in one module's pages after the weights (the same on every module
    of the system) under ``alloc``.  ``contexts``: an int ctx (requests drawn with
    ``workloads.mix.request_lengths(ctx, n, seed)``; static reserves ctx per request) or a
    function n -> n context lengths (a prefix of a longer draw).  ``max_context`` (static)
    defaults to ctx or the longest drawn context.  ``group``: as in :func:`compile_step`;
    ``blocking`` changes no page (accepted so that ``**policy.compile_kw`` can be passed)."""
    group = check_group(system, cfg, partition, group)
    limit = check_int("max_batch: limit", limit, 1)
    if isinstance(contexts, (int, np.integer)) and not isinstance(contexts, bool):
        ctx = int(contexts)
        check_int("max_batch: contexts", ctx, 1)
        fn = lambda n: request_lengths(ctx, n, seed)      # noqa: E731
        mc = max_context or ctx
    elif callable(contexts):
        fn, mc = contexts, max_context
    else:
        raise ValueError(f"max_batch: contexts={contexts!r} must be an int or a function")

    def fits(n):
        cs = fn(n)
        cs2, m = check_common(cfg, system, cs, partition, alloc,
                               mc if mc is not None else max(cs))
        lay = build_layout(cfg, system, cs2, partition, alloc, m, group)
        return capacity_of(cfg, system, lay, cs2)["fits"]
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    if hi > limit:
        return lo if not fits(limit) else limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
