"""One experiment point: a model on a system preset under a policy at one context length.

:func:`run_point` (a plain function of JSON-like arguments, so the grid can cache and ship it to
Dask workers) returns one row: the batch that fits, the PIM time of a decode step from the
timing model (perf/sim.py), host and link time (perf/host.py, CENT's constants), energy per
token (perf/energy.py, static and dynamic), area (perf/area.py), utilisations.

Time of one token (every point alike):

* the ``B`` resident requests (default: the largest batch that fits the rank's memory, after
  ``batch_cap``) are decoded in ``n = min(pp, B)`` micro-batches of ``m = ceil(B / n)`` that
  circulate through the ``pp`` pipeline stages (CENT's throughput = pp / token latency);
* one stage of one rank is simulated for ``m`` requests (the ranks of a stage run symmetric
  programs): ``pim_s = pp x`` its time;
* ``host_s``, ``link_s``: :func:`perf.host.step_time` for the micro-batch (its mean context);
  ``token_s = pim_s + host_s + link_s`` (host work is not overlapped with PIM work);
  ``tokens_per_s = B / token_s`` (every resident request gets a token per ``token_s``).

The hybrid (d) and the DIMC budget system (c) are composed, not compiled onto two channel
kinds at once (the compiler places a step on one kind of channel): the weight GEMVs of every
layer (QKV, O, gate/up, down) are simulated on the DIMC rank, attention (KV append, QK^T, SV)
on the DRAM-PIM rank, and a layer's phases depend on each other in series (QKV -> attention ->
O -> FFN), so the stage time is the sum.  (c)'s attention cannot be faster than its KV crossing
the plain DRAM channels' pins once per step, nor than the macros computing it: its time is the
larger of the two (the DQ stream at the peak burst rate: a lower bound).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from compiler import llm as L
from perf import area as A
from perf import energy as E
from perf.host import CENT_CXL, ModelShape, step_time
from perf.presets import (CH_PER_RANK, DEFAULT_POLICY, DIMC_SET_BYTES, LABEL, SYSTEMS,
                          aim_rank, default_channels, default_split, dimc_rank, policy)
from perf.program import HCmd, Rep
from perf.sim import simulate
from spec.isa import HostOp

__all__ = ["run_point", "resolve", "load_model", "timing_items", "phase_items", "Setup",
           "CLASS"]

_BAR = HCmd(int(HostOp.BARRIER))
#: phases of a layer, in order, each group followed by a BARRIER (compiler/llm/plan.py)
_LAYER = (("qkv",), ("append", "qk"), ("sv",), ("o",), ("gu",), ("down",))
GEMV = ("qkv", "o", "gu", "down")
ATTENTION = ("append", "qk", "sv")
CLASS = {"qwen1.5-7b": "LLM-7B", "llama-3.1-8b": "LLM-7B", "qwen1.5-72b": "LLM-72B",
         "llama-3.1-70b": "LLM-72B"}


def load_model(model) -> L.ModelConfig:
    """A shipped model name, an HF ``config.json`` path (or its directory), or
    ``{"name": ..., "config": {...}}``; ValueError naming the value otherwise."""
    if isinstance(model, dict) and set(model) == {"name", "config"}:
        return L.ModelConfig.from_hf(model["config"], name=str(model["name"]))
    if isinstance(model, str) and model in L.MODELS:
        return L.load_config(model)
    if isinstance(model, str):
        return L.ModelConfig.from_hf(model)
    raise ValueError(f"model={model!r:.80} must be a model name, a config.json path or "
                     "{'name', 'config'}")


def timing_items(plan):
    """The program simulated for a whole step: layer 0 repeated ``layers`` times (HFP rotates
    its units' channels from layer to layer; with a hub port per channel the channels are
    interchangeable except at layer boundaries: within 0.5%, tests/perf/test_perfsim.py)."""
    sp = plan.system.sim
    if plan.layers > 1 and plan.variants and len(plan.variants) > 1 and sp.out_ports >= sp.n_ch:
        st = plan.layer_sets
        return [Rep((tuple(plan.layer),), plan.layers, "layers", set_stride=st,
                    vp_stride=st * sp.n_banks)]
    return plan.step


def phase_items(plan, phases):
    """Layer 0's ``phases`` (of GEMV + ATTENTION) in layer order, a BARRIER after each group,
    repeated over the plan's layers (set stride: the layer slab)."""
    body = []
    for grp in _LAYER:
        its = [it for k in grp if k in phases for it in plan.parts[k]]
        if its:
            body += its + [_BAR]
    if plan.layers == 1:
        return body
    st = plan.layer_sets
    return [Rep((tuple(body),), plan.layers, "layers", set_stride=st,
                vp_stride=st * plan.system.sim.n_banks)]


@dataclass(frozen=True)
class Setup:
    """A validated point: ``cfg``, ``system`` preset, ``pol`` Policy, ``ctx``, total DRAM
    (-PIM) ``channels``, ``tp`` x ``pp`` ranks of ``n_ch`` channels, ``dimc_ch`` DIMC channels
    per rank (dimc, hybrid), ``batch`` (None: the fit), ``batch_cap``, ``seed``, ``dimc_mm2``
    (dimc: the SRAM budget, None: the weights' area), ``out_ports``, ``wide_inp`` (tiles per
    multicast WR_INP host beat of every rank's module), ``dimc_all_bank`` (dimc-whatif: the
    DIMC rank uses all-bank MACs where the policy does, instead of single-bank only)."""
    cfg: L.ModelConfig
    system: str
    pol: object
    ctx: int
    channels: int
    tp: int
    pp: int
    n_ch: int
    dimc_ch: int
    batch: int | None
    batch_cap: int | None
    seed: int
    dimc_mm2: float | None
    out_ports: int | None
    wide_inp: int = 1
    dimc_all_bank: bool = False

    @property
    def ranks(self) -> int:
        return self.tp * self.pp


def _pos(name, v, allow_none=True):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}={v!r} must be an int >= 1")
    return v


def resolve(*, model, system, policy_name=None, context, channels=None, tp=None, pp=None,
            batch=None, batch_cap=None, seed=1, dimc_mm2=None, dimc_channels=None,
            out_ports=None, wide_inp=1, dimc_all_bank=False) -> Setup:
    """Check a point's arguments without slow work; ValueError naming the argument and its
    value (the CLI's exit status 2)."""
    cfg = load_model(model)
    if system not in SYSTEMS:
        raise ValueError(f"system={system!r}: not one of {', '.join(SYSTEMS)}")
    pol = policy(policy_name or DEFAULT_POLICY[system])
    ctx = _pos("context", context, False)
    channels = _pos("channels", channels) or default_channels(cfg)
    for n, v in (("tp", tp), ("pp", pp), ("batch", batch), ("batch_cap", batch_cap),
                 ("dimc_channels", dimc_channels), ("out_ports", out_ports)):
        _pos(n, v)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an int >= 0")
    if tp is None or pp is None:
        ranks = channels // CH_PER_RANK if channels % CH_PER_RANK == 0 else 1
        if tp is None and pp is None:
            tp, pp = default_split(cfg, ranks)
        elif tp is None:
            tp = max(1, ranks // pp)
        else:
            pp = max(1, ranks // tp)
    if channels % (tp * pp):
        raise ValueError(f"channels={channels} is not a multiple of tp x pp = {tp} x {pp} "
                         "(each rank holds channels / (tp pp) channels)")
    if pp > cfg.layers:
        raise ValueError(f"pp={pp} exceeds the {cfg.layers} layers of {cfg.name}")
    if tp > cfg.heads:
        raise ValueError(f"tp={tp} exceeds the {cfg.heads} heads of {cfg.name}")
    try:
        L.check_tp(cfg, tp, "resolve")
    except ValueError as e:
        raise ValueError(str(e).split(": ", 1)[1]) from None
    if dimc_mm2 is not None and (isinstance(dimc_mm2, bool)
                                 or not isinstance(dimc_mm2, (int, float))
                                 or not math.isfinite(dimc_mm2) or dimc_mm2 <= 0):
        raise ValueError(f"dimc_mm2={dimc_mm2!r} must be a number > 0 (mm^2)")
    n_ch = channels // (tp * pp)
    dimc_ch = n_ch
    if dimc_channels is not None:
        if dimc_channels % (tp * pp):
            raise ValueError(f"dimc_channels={dimc_channels} is not a multiple of tp x pp = "
                             f"{tp * pp}")
        dimc_ch = dimc_channels // (tp * pp)
    # the module of every rank the point builds multicasts at most its channels' tiles
    wmax = min(n_ch, dimc_ch) if system in ("dimc", "hybrid") else n_ch
    if isinstance(wide_inp, bool) or not isinstance(wide_inp, int) \
            or not 1 <= wide_inp <= wmax:
        raise ValueError(f"wide_inp={wide_inp!r} must be an int in 1..{wmax} (tiles per "
                         "multicast WR_INP beat: at most the channels of a rank)")
    if not isinstance(dimc_all_bank, bool) or (dimc_all_bank and system != "dimc-whatif"):
        raise ValueError(f"dimc_all_bank={dimc_all_bank!r} must be a bool, True only with "
                         f"system 'dimc-whatif' (system={system!r})")
    return Setup(cfg, system, pol, ctx, channels, tp, pp, n_ch, dimc_ch, batch, batch_cap,
                 seed, dimc_mm2, out_ports, wide_inp, dimc_all_bank)


class _NoFit(Exception):
    pass


def _fit(cfg, sysm, s: Setup) -> tuple[int, int]:
    """(batch fit, batch used) on ``sysm``; _NoFit when nothing (or the asked batch) fits."""
    try:
        fit = L.max_batch(cfg, sysm, s.ctx, seed=s.seed, **s.pol.compile_kw)
    except ValueError as e:
        raise _NoFit(str(e)) from None
    if fit == 0:
        raise _NoFit(f"not one request of {s.ctx} tokens fits ({s.pol.partition}, "
                     f"{s.pol.alloc}) next to the weights")
    if s.batch is not None and s.batch > fit:
        raise _NoFit(f"batch={s.batch} exceeds the {fit} requests that fit")
    b = s.batch or fit
    return fit, min(b, s.batch_cap) if s.batch_cap else b


def _compile(cfg, sysm, contexts, s: Setup, partition=None, alloc=None, strict=True):
    kw = dict(s.pol.compile_kw)
    kw.update({k: v for k, v in (("partition", partition), ("alloc", alloc)) if v})
    try:
        return L.compile_step(cfg, sysm, contexts, max_context=s.ctx, strict=strict, **kw)
    except ValueError as e:
        raise _NoFit(str(e)) from None


def _weight_sets(cfg, sysm, s: Setup) -> int:
    """Sets per bank the weights of one rank take on ``sysm`` (one layer's weight pages x the
    stage's layers / banks, from a batch-1 plan built without the capacity check)."""
    plan = _compile(cfg, sysm, [1], s, "TCP", "dpa", strict=False)
    lps = math.ceil(cfg.layers / s.pp)
    return math.ceil(plan.capacity["w_pages_per_layer"] * lps / sysm.sim.n_banks)


def _sim(sp, items):
    res = simulate(sp, items)
    return res, res.time_s


def _kv_bytes(cfg, contexts, s: Setup, bits: int) -> float:
    """KV bytes one rank reads per step: every live token of its KV heads, its stage's
    layers."""
    lps = math.ceil(cfg.layers / s.pp)
    kvh = max(1, cfg.kv_heads // s.tp)                  # replicated when tp > kv_heads
    return sum(contexts) * lps * 2 * kvh * cfg.head_dim * bits / 8


def _link_bits(shape: ModelShape, m: int, s: Setup, link=CENT_CXL) -> float:
    """Bits over the link for one micro-batch of ``m`` requests (whole flits, as
    perf/host.py times them): embedding, ring all-reduces (2 per layer, every rank sending
    2(T-1) chunks), pipeline transfers and the logits."""
    fb = link.flit_bytes * 8
    vec = m * shape.hidden
    lps = math.ceil(shape.layers / s.pp)
    ar = 0
    if s.tp > 1:
        ar = 2 * lps * s.pp * s.tp * 2 * (s.tp - 1) * link.flits(math.ceil(vec / s.tp)) * fb
    return (link.flits(vec) * fb + ar + (s.pp - 1) * link.flits(vec) * fb
            + link.flits(m * shape.vocab) * fb)


def _scale(d: dict, k: float) -> dict:
    return {n: v * k for n, v in d.items()}


def _add(acc: dict, d: dict) -> dict:
    for n, v in d.items():
        acc[n] = acc.get(n, 0.0) + v
    return acc


def run_point(*, model, system, policy=None, context, channels=None, tp=None, pp=None,
              batch=None, batch_cap=None, seed=1, dimc_mm2=None, dimc_channels=None,
              out_ports=None, wide_inp=1, dimc_all_bank=False) -> dict:
    """One point (see the module docstring); ``status`` "ok" or "does not fit: <why>".
    ValueError naming a bad argument.  Times in s, energy in J per token, area in mm^2."""
    s = resolve(model=model, system=system, policy_name=policy, context=context,
                channels=channels, tp=tp, pp=pp, batch=batch, batch_cap=batch_cap, seed=seed,
                dimc_mm2=dimc_mm2, dimc_channels=dimc_channels, out_ports=out_ports,
                wide_inp=wide_inp, dimc_all_bank=dimc_all_bank)
    cfg, pol = s.cfg, s.pol
    row = dict(system=system, system_label=LABEL[system], model=cfg.name,
               cls=CLASS.get(cfg.name, "LLM-7B" if cfg.n_params < 30e9 else "LLM-72B"),
               ctx=s.ctx, policy=pol.name, policy_label=pol.label, partition=pol.partition,
               dcs=pol.dcs, alloc=pol.alloc, all_bank=pol.all_bank, blocking=pol.blocking,
               seed=s.seed, channels=s.channels, ranks=s.ranks, wide_inp=s.wide_inp,
               dimc_all_bank=s.dimc_all_bank,
               tp=s.tp, pp=s.pp, ch_per_rank=s.n_ch,
               dimc_channels=s.dimc_ch * s.ranks if system in ("dimc", "hybrid") else 0)
    t0 = time.time()
    try:
        out = _COMPUTE[system if system in _COMPUTE else "single"](cfg, s)
    except _NoFit as e:
        row.update(status=f"does not fit: {e}", wall_s=time.time() - t0)
        return row
    row.update(out)
    row["status"] = "ok"
    row["wall_s"] = time.time() - t0
    return row


def _batches(fit_b: tuple, s: Setup, cfg):
    fit, b = fit_b
    n = min(s.pp, b)
    m = math.ceil(b / n)
    contexts = L.request_lengths(s.ctx, b, s.seed)
    return fit, b, n, m, contexts, contexts[:m]


def _finish(cfg, s: Setup, *, fit, b, n, m, cm, stage_pim, dyn_m, static, mac, cap, area,
            phases, extra=None) -> dict:
    """Host/link time, throughput and energy from the simulated stage (``dyn_m``: dynamic J of
    one micro-batch of ``m`` requests through every rank; ``static``: [(label, powers,
    active s per stage run)])."""
    shape = ModelShape(cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.intermediate,
                       cfg.vocab, cfg.layers)
    ht = step_time(shape, context=math.ceil(sum(cm) / m), batch=m, tp=s.tp, pp=s.pp,
                   channels=s.n_ch)
    pim_s = s.pp * stage_pim
    token_s = pim_s + ht["host_s"] + ht["link_s"]
    tps = b / token_s
    _add(dyn_m, E.link_dynamic(_link_bits(shape, m, s)))
    stat = [(lbl, p, n * a) for lbl, p, a in static]
    en = E.token_energy(_scale(dyn_m, b / m), stat, token_s, b)     # b tokens per token_s
    row = dict(batch=b, batch_fit=fit, micro_batch=m, micro_batches=n,
               contexts_mean=sum(cm) / m, contexts_max=max(cm), stage_pim_s=stage_pim,
               pim_s=pim_s, host_s=ht["host_s"], link_s=ht["link_s"], token_s=token_s,
               tokens_per_s=tps, pim_tokens_per_s=b / pim_s, host_ops=ht["ops"],
               mac_utilisation=mac, capacity_utilisation=cap, energy=en,
               energy_j_per_token=en["total_j"], energy_static_j=en["static_j"],
               energy_dynamic_j=en["dynamic_j"], area=area, mm2=area["mm2_sourced"],
               mm2_unsourced=area["mm2_unsourced"], corsair_cards=area["corsair_cards"],
               phases=phases, host_assumptions=ht["assumptions"])
    row.update(extra or {})
    return row


def _single(cfg, s: Setup) -> dict:
    """aim, pimphony, dimc-whatif: the whole step on one kind of channel."""
    dimc = s.system == "dimc-whatif"
    sp = (dimc_rank(cfg, s.n_ch, s.pol, out_ports=s.out_ports, wide_inp=s.wide_inp,
                    all_bank=s.dimc_all_bank) if dimc
          else aim_rank(cfg, s.n_ch, s.pol, s.out_ports, wide_inp=s.wide_inp))
    sysm = L.System(sp, s.ranks, s.tp, s.pp, s.system)
    fit, b, n, m, _, cm = _batches(_fit(cfg, sysm, s), s, cfg)
    tc = time.time()
    plan = _compile(cfg, sysm, cm, s)
    tc = time.time() - tc
    ts = time.time()
    res, t = _sim(sp, timing_items(plan))
    ts = time.time() - ts
    dyn = _scale(E.module_dynamic(sp, res.stats), s.ranks)
    if dimc:
        area = A.dimc_whatif_area(s.ranks, s.n_ch * sp.n_banks * sp.n_sets * sp.page_bytes)
        static = []
    else:
        area = A.aim_area(s.channels)
        static = [("DRAM-PIM channels",
                   E.dram_static_power(s.channels, sp.dram.REFI * sp.dram.tCK_ns * 1e-9,
                                       sp.n_banks), t)]
    return _finish(cfg, s, fit=fit, b=b, n=n, m=m, cm=cm, stage_pim=t, dyn_m=dyn,
                   static=static, mac=res.mac_util, cap=plan.capacity["utilisation"],
                   area=area, phases={"step_s": t},
                   extra=dict(channel_utilisation=res.channel_util, compile_s=tc, sim_s=ts,
                              stage_cycles=res.t_end, n_leaves=plan.n_leaves,
                              sim_stats={k: v for k, v in res.stats.items() if k != "busy_ch"}))


def _busy_util(parts) -> float:
    """MAC utilisation of a composed stage: busy bank-seconds / (stage time x banks) over
    every part (each part's banks idle while the other part computes)."""
    total = sum(t for _, _, t in parts)
    busy = sum(r.stats["busy"] / (sp.clock_ghz * 1e9) for sp, r, _ in parts)
    banks = sum(sp.n_banks * sp.n_ch for sp, _, _ in parts)
    return busy / (total * banks) if total else 0.0


def _composed(cfg, s: Setup) -> dict:
    """dimc (c) and hybrid (d): weight GEMVs on the DIMC rank, attention on the DRAM side."""
    hybrid = s.system == "hybrid"
    probe = dimc_rank(cfg, s.dimc_ch, s.pol, wide_inp=s.wide_inp)
    w_sets = _weight_sets(cfg, L.System(probe, s.ranks, s.tp, s.pp), s)
    set_bytes = s.dimc_ch * probe.n_banks * DIMC_SET_BYTES        # one set in every channel
    aim = aim_rank(cfg, s.n_ch, s.pol, s.out_ports, wide_inp=s.wide_inp)
    refi_s = aim.dram.REFI * aim.dram.tCK_ns * 1e-9
    chan_bytes = aim.n_banks * aim.n_sets * aim.page_bytes         # 512 MiB per channel
    if hybrid:
        wd = _weight_sets(cfg, L.System(aim, s.ranks, s.tp, s.pp), s)
        kv_sys = L.System(aim_rank(cfg, s.n_ch, s.pol, s.out_ports, extra_sets=wd,
                                   wide_inp=s.wide_inp),
                          s.ranks, s.tp, s.pp, "hybrid-dram")
        sram_bytes = w_sets * set_bytes * s.ranks
        area = A.hybrid_area(sram_bytes, s.channels, s.dimc_ch * s.ranks)
        budget_sets = w_sets
    else:
        mm2 = s.dimc_mm2
        if mm2 is None:          # the smallest budget holding the weights (2 sets per macro)
            per_macro = A.TSMC_5NM.bits // (8 * DIMC_SET_BYTES)
            k = math.ceil(w_sets * probe.n_banks / per_macro)
            mm2 = k * s.dimc_ch * s.ranks * A.TSMC_5NM.area_mm2
        try:
            area = A.dimc_budget_area(mm2, s.channels, s.dimc_ch * s.ranks)
        except ValueError as e:                       # not one macro per channel
            raise _NoFit(f"{e} (the weights need {w_sets} weight sets per bank)") from None
        macros = area["modules"][0]["macros"] // (s.dimc_ch * s.ranks)
        budget_sets = macros * (A.TSMC_5NM.bits // (8 * DIMC_SET_BYTES)) // probe.n_banks
        if budget_sets < w_sets:
            raise _NoFit(f"dimc_mm2={mm2:g}: {budget_sets} weight sets per bank, the weights "
                         f"need {w_sets} (weight streaming is not modelled)")
        kv_sets = s.n_ch * chan_bytes // set_bytes
        kv_sys = L.System(probe.with_(n_sets=budget_sets + kv_sets), s.ranks, s.tp, s.pp,
                          "dimc-budget")
    fit, b, n, m, _, cm = _batches(_fit(cfg, kv_sys, s), s, cfg)
    # weights phase on the DIMC rank (its KV areas are not simulated: built without the check)
    spw = probe.with_(n_sets=max(budget_sets, 1))
    wplan = _compile(cfg, L.System(spw, s.ranks, s.tp, s.pp), cm, s, "TCP", "dpa",
                     strict=False)
    rw, tw = _sim(spw, phase_items(wplan, GEMV))
    aplan = _compile(cfg, kv_sys, cm, s)
    ra, ta = _sim(kv_sys.sim, phase_items(aplan, ATTENTION))
    dyn = _add(_scale(E.module_dynamic(spw, rw.stats), s.ranks),
               _scale(E.module_dynamic(kv_sys.sim, ra.stats), s.ranks))
    phases = {"gemv_s": tw, "attention_s": ta}
    parts = [(spw, rw, tw), (kv_sys.sim, ra, ta)]
    if hybrid:
        static = [("DRAM-PIM channels", E.dram_static_power(s.channels, refi_s), ta)]
    else:
        kvb = _kv_bytes(cfg, cm, s, 8)
        d = aim.dram
        bw = s.n_ch * d.burst_bytes / (d.CCDS * d.tCK_ns * 1e-9)    # B/s of the rank's pins
        t_stream = kvb / bw * aim.refresh_factor
        phases.update(attention_macros_s=ta, kv_stream_s=t_stream, kv_bytes_per_rank=kvb)
        ta = max(ta, t_stream)
        phases["attention_s"] = ta
        parts[1] = (kv_sys.sim, ra, ta)
        _add(dyn, _scale(E.kv_stream_dynamic(kvb, aim.page_bytes), s.ranks))
        static = [("DRAM channels (KV)", E.dram_static_power(s.channels, refi_s), t_stream)]
    return _finish(cfg, s, fit=fit, b=b, n=n, m=m, cm=cm, stage_pim=tw + ta, dyn_m=dyn,
                   static=static, mac=_busy_util(parts), cap=aplan.capacity["utilisation"],
                   area=area, phases=phases,
                   extra=dict(weight_sets_per_bank=w_sets, dimc_sets_per_bank=budget_sets))


_COMPUTE = {"single": _single, "dimc": _composed, "hybrid": _composed}
