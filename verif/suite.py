"""The coverage regressions: small lockstep runs per component, run on Verilator with
``--coverage-line --coverage-toggle`` (``tb/build.py``, ``CIMPHONY_COVERAGE``) and, with the
same stimuli, through the golden models for functional coverage (``verif/functional.py``).

Each :class:`Run` mirrors a lockstep regression of ``tests/rtl`` (same configurations, same
stimulus generators), at a size the coverage build finishes in a few minutes.  A new
component adds its runs to :func:`runs` (and, for functional coverage, a sampler).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Run", "runs", "KNOWN", "run_code_coverage", "run_functional"]

#: Verilog module names of the components (``verilog_name``), for the per-component summary
KNOWN = ("dimc_macro", "pim_channel", "pim_module", "dram_bank", "softmax_unit", "softmax",
         "blockfmt_stage")


@dataclass(frozen=True)
class Run:
    """One lockstep run: ``kind`` (macro / channel / module), its params, ``stim(seed)`` ->
    the stimulus (a :class:`model.stimulus.Stimulus` for the macro, a command list
    otherwise) and the run's keyword arguments (``out_ready_p``, ``reset_at``)."""
    name: str
    kind: str
    params: object
    stim: Callable
    kw: dict = field(default_factory=dict)


def _macro(n_in, n_out, w, x, ts, n_sets=2):
    from spec.params import MacroParams
    return MacroParams(n_in=n_in, n_out=n_out, w_bits=w, x_bits=x, tree_stages=ts, n_acc=4,
                       n_sets=n_sets)


def _with_bad_rows(stim):
    """``stim`` plus writes to every row >= n_in of every set, interleaved with the requests
    (the random stimulus only writes rows < n_in)."""
    from model.stimulus import Beat, Stimulus
    from spec.params import pack, wr_fields
    p = stim.params
    wf = wr_fields(p)
    extra, k = [], 0
    for s in range(p.n_sets):
        for r in range(p.n_in, 1 << wf["row"].width):
            extra.append((2 + 3 * k, pack(wf, data=0, row=r, set=s)))
            k += 1
    wr = list(stim.wr)
    for pos, payload in extra:
        wr.insert(min(pos, len(wr)), Beat(payload, 1, 0))
    fixed, a = [], 0
    for b in wr:                       # keep the ``after`` counts monotone
        a = max(a, b.after)
        fixed.append(Beat(b.payload, b.gap, a))
    return Stimulus(p, fixed, list(stim.req), ready_p=stim.ready_p, seed=stim.seed,
                    note=stim.note + " + bad rows")


def runs(scale: float = 1.0) -> list[Run]:
    """The standard runs; ``scale`` multiplies the command counts (``--scale``)."""
    from spec.isa import ChannelParams, ModuleParams
    from spec.params import MacroParams
    from tb.stimgen import random_channel_cmds, random_host_cmds, random_stimulus

    def n(k):
        return max(8, int(k * scale))
    m1 = _macro(16, 4, 4, 4, 0)
    m2 = _macro(16, 4, 8, 8, 2, n_sets=4)
    m3 = MacroParams(n_in=12, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=1)   # bad rows
    tiny = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=0)
    ch = {d: ChannelParams(macro=tiny, n_banks=2, n_gbuf=2, q_depth=4, dcs=d)
          for d in (True, False)}
    mod = ModuleParams(ChannelParams(tiny, n_banks=2, n_gbuf=2, q_depth=4), n_ch=2,
                       n_vpages=8, n_req=2, fifo_depth=4, loop_len=4)
    out = [
        Run("macro_t0", "macro", m1,
            lambda s: random_stimulus(m1, s, n_req=n(120), ready_p=0.6)),
        Run("macro_sets4_t2", "macro", m2,
            lambda s: random_stimulus(m2, s, n_req=n(150), ready_p=0.25, gap_p=0.5)),
        Run("macro_badrow", "macro", m3,
            lambda s: _with_bad_rows(random_stimulus(m3, s, n_req=n(80), ready_p=0.8))),
    ]
    for d, p in ch.items():
        tag = "dcs" if d else "inorder"
        out.append(Run(f"channel_{tag}", "channel", p,
                       lambda s, p=p: random_channel_cmds(p, s, n(2000)),
                       {"out_ready_p": 0.6}))
    out += [
        Run("module_rand", "module", mod, lambda s: random_host_cmds(mod, s, n(3000)),
            {"out_ready_p": 0.5}),
        Run("module_reset", "module", mod, lambda s: random_host_cmds(mod, s + 1, n(1500)),
            {"reset_at": n(1500) * 2}),
    ]
    # ISA v2 options (docs/isa.md): all-bank MAC on the channel, and on the module with host
    # ready/valid and a 2-tile multicast WR_INP
    ch_ab = ChannelParams(macro=tiny, n_banks=2, n_gbuf=2, q_depth=4, dcs=True, all_bank=True)
    mod_v2 = ModuleParams(ch_ab, n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4,
                          host_ready=True, wide_inp=2)
    out += [
        Run("channel_ab", "channel", ch_ab, lambda s: random_channel_cmds(ch_ab, s, n(2000)),
            {"out_ready_p": 0.6}),
        Run("module_v2", "module", mod_v2, lambda s: random_host_cmds(mod_v2, s, n(3000)),
            {"out_ready_p": 0.5}),
    ]
    return out


def _lockstep(r: Run, seed: int) -> dict:
    from tb.build import run_channel_lockstep, run_lockstep, run_module_lockstep
    stim = r.stim(seed)
    if r.kind == "macro":
        return run_lockstep(r.params, stim, label=r.name)
    if r.kind == "channel":
        return run_channel_lockstep(r.params, stim, seed=seed, label=r.name, **r.kw)
    return run_module_lockstep(r.params, stim, seed=seed, label=r.name, **r.kw)


def run_code_coverage(selected: list[Run], out: str | Path, *, seed: int = 1,
                      progress=None) -> dict:
    """Run ``selected`` in lockstep with coverage builds; their ``.dat`` files go to
    ``out/dat/``; returns {run name: {ok, cycles, seconds, mismatch}}.  Every run must pass
    (a mismatch is reported, its coverage still counted)."""
    from tb.build import COVERAGE_ENV, describe_mismatch
    dat = Path(out).resolve() / "dat"
    dat.mkdir(parents=True, exist_ok=True)
    old = os.environ.get(COVERAGE_ENV)
    os.environ[COVERAGE_ENV] = str(dat)
    results = {}
    try:
        for r in selected:
            t0 = time.monotonic()
            res = _lockstep(r, seed)
            results[r.name] = {"ok": res["ok"], "cycles": res["cycles"], "kind": r.kind,
                               "params": r.params.tag,
                               "seconds": round(time.monotonic() - t0, 1),
                               "mismatch": None if res["ok"] else describe_mismatch(res)}
            if progress:
                progress(r.name, results[r.name])
    finally:
        if old is None:
            os.environ.pop(COVERAGE_ENV, None)
        else:
            os.environ[COVERAGE_ENV] = old
    return results


def run_functional(selected: list[Run], *, seed: int = 1, cov=None):
    """Drive the golden models with the stimuli of ``selected`` under the samplers; returns
    the :class:`verif.functional.Coverage` (``cov`` to add to one)."""
    from model.channel import ChannelModel
    from model.macro import MacroModel
    from model.module import ModuleModel
    from verif import functional as F
    cov = cov or F.Coverage()
    for r in selected:
        stim = r.stim(seed)
        if r.kind == "macro":
            m = F.MacroSampler(cov, r.params).attach(MacroModel(r.params))
            m.run(stim)
        elif r.kind == "channel":
            m = F.ChannelSampler(cov, r.params).attach(ChannelModel(r.params))
            m.run(stim, out_ready_p=r.kw.get("out_ready_p", 1.0), seed=seed)
        else:
            m = F.ModuleSampler(cov, r.params).attach(ModuleModel(r.params))
            m.run(stim, out_ready_p=r.kw.get("out_ready_p", 1.0), seed=seed)
    return cov
