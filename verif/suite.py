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
    """One lockstep run: ``kind`` (macro / channel / module / dram: the DRAM bank alone), its
    params, ``stim(seed)`` -> the stimulus (a :class:`model.stimulus.Stimulus` for the
    macro, a command list otherwise) and the run's keyword arguments (``out_ready_p``,
    ``reset_at``, ``sm_ready_p``; a callable value is called with the seed)."""
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


def push_cycles(cmds) -> list[int]:
    """The cycle each host command of ``cmds`` [(word, gap)] is pushed in, without
    ``host_ready`` (no push waits): command 0 in cycle ``gap_0``, command i in
    ``t_{i-1} + 1 + gap_i`` (``ModuleModel.run``)."""
    out, t = [], -1
    for i, (_, gap) in enumerate(cmds):
        t = gap if i == 0 else t + 1 + gap
        out.append(t)
    return out


#: the idle gap after the long loop of :func:`wide_field_cmds` (its replay takes 65,535
#: cycles, one rejected command each); the mid-stream reset falls in it
LONG_LOOP_GAP = 70_000


def wide_field_cmds(p, seed: int, n: int) -> tuple[list[tuple[int, int]], int]:
    """(host commands, reset cycle) of the module run that toggles the wide host fields and
    counters which :func:`tb.stimgen.random_host_cmds` keeps in range (their high bits are
    otherwise the module's toggle holes):

    1. ``n // 2`` commands of ``random_host_cmds``;
    2. 240 commands with every field random over its full width (opcodes LOOP and SET_TOK
       moved to 15, BAD_OPCODE: no unbounded loop), interleaved with SET_TOKs of random
       16-bit counts for each requester and 4-command LOOPs (trip 1..3) that capture
       random words (a captured command is copied unchecked: every ``lbuf`` bit);
    3. the long loop: SET_TOK 0xFFFF, LOOP n=1 per=0 vps=os=0xFF around one MAC, replayed
       65,535 times (offsets up to 0xFEFF01: every bit of ``vp_off`` / ``o_off`` /
       ``iter`` / ``trip`` below bit 16; every replay past the first is BAD_FIELD, so
       ``err_count`` saturates), then :data:`LONG_LOOP_GAP` idle cycles with the reset in
       the middle (every saturated bit falls);
    4. ``n // 2`` more commands of ``random_host_cmds`` (another seed).
    For a module without ``host_ready`` (pushes are never held, so the reset cycle is
    exact)."""
    import random

    from spec.isa import HostOp, host_encode, host_fields
    from tb.stimgen import random_host_cmds
    if p.host_ready or p.softmax:
        raise ValueError("wide_field_cmds: for a module without host_ready / softmax")
    rng = random.Random(seed)
    hf = host_fields(p)
    width = sum(f.width for f in hf.values())
    op_f = hf["op"]
    cmds = list(random_host_cmds(p, seed, n // 2))
    R = p.n_req

    def garbage():
        w = rng.getrandbits(width)
        op = (w >> op_f.offset) & ((1 << op_f.width) - 1)
        if op in (int(HostOp.LOOP), int(HostOp.SET_TOK)):
            w |= ((1 << op_f.width) - 1) << op_f.offset          # -> 15: BAD_OPCODE
        return w
    for k in range(240):
        cmds.append((garbage(), rng.choice((0, 0, 1, 3))))
        if k % 16 == 0:
            for r in range(R):
                cmds.append((host_encode(p, int(HostOp.SET_TOK), rid=r,
                                         count=rng.getrandbits(16)), 0))
        if k % 40 == 20:
            r = rng.randrange(R)
            cmds.append((host_encode(p, int(HostOp.SET_TOK), rid=r,
                                     count=rng.randint(1, 3)), 0))
            cmds.append((host_encode(p, int(HostOp.LOOP), rid=r, n=p.loop_len, per=0,
                                     vps=rng.getrandbits(8), os=rng.getrandbits(8)), 0))
            cmds += [(rng.getrandbits(width), 0) for _ in range(p.loop_len)]
            cmds.append((host_encode(p, int(HostOp.NOP)), 40))   # the replay drains
    cmds.append((host_encode(p, int(HostOp.SET_TOK), rid=0, count=0xFFFF), 30))
    cmds.append((host_encode(p, int(HostOp.LOOP), rid=0, n=1, per=0, vps=0xFF, os=0xFF), 0))
    cmds.append((host_encode(p, int(HostOp.MAC), chmask=1, rid=0, vp=0, g=0, o=0), 0))
    reset = push_cycles(cmds)[-1] + LONG_LOOP_GAP // 2 + 65_535 // 2
    tail = random_host_cmds(p, seed + 7, max(8, n // 2))
    cmds.append((tail[0][0], LONG_LOOP_GAP + tail[0][1]))
    cmds += tail[1:]
    return cmds, reset


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
    # the module's wide host fields and counters (toggle holes of the runs above): same build
    # as module_rand
    out.append(Run("module_fields", "module", mod,
                   lambda s: wide_field_cmds(mod, s, n(1500))[0],
                   {"out_ready_p": 0.5, "reset_at": lambda s: wide_field_cmds(mod, s,
                                                                              n(1500))[1]}))
    # the new RTL of this round: the DRAM-PIM bank alone, the DRAM-PIM channel (both
    # policies), the module with the softmax unit, a module of DRAM channels
    from spec.dram import SHORT_TIMING
    from tb.dram import SMALL_BANK, random_dram_cmds
    out.append(Run("dram_bank", "dram", SMALL_BANK,
                   lambda s: random_dram_cmds(SMALL_BANK, s, n(6000)),
                   {"reset_at": n(6000) * 2}))
    dm = MacroParams(n_in=16, n_out=2, n_sets=4, n_acc=2)
    for d in (True, False):
        p = ChannelParams(dm, n_banks=2, n_gbuf=2, q_depth=4, dcs=d, all_bank=True,
                          bank_kind="dram", burst_bytes=8, timing=SHORT_TIMING)
        tag = "dcs" if d else "inorder"
        out.append(Run(f"channel_dram_{tag}", "channel", p,
                       lambda s, p=p: random_channel_cmds(p, s, n(2500)),
                       {"out_ready_p": 0.6, "reset_at": n(2500) * 3}))
    smm = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=4, n_acc=4, tree_stages=0)
    mod_sm = ModuleParams(ChannelParams(smm, n_banks=2, n_gbuf=2, q_depth=4), n_ch=2,
                          n_vpages=16, n_req=2, fifo_depth=4, loop_len=4, softmax=True,
                          sm_context=32, host_ready=True)
    out.append(Run("module_softmax", "module", mod_sm,
                   lambda s: random_host_cmds(mod_sm, s, n(3000)),
                   {"out_ready_p": 0.6, "sm_ready_p": 0.5}))
    mod_dram = ModuleParams(ChannelParams(dm, n_banks=2, n_gbuf=2, q_depth=4, dcs=True,
                                          all_bank=True, bank_kind="dram", burst_bytes=8,
                                          timing=SHORT_TIMING),
                            n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4,
                            host_ready=True)
    out.append(Run("module_dram", "module", mod_dram,
                   lambda s: random_host_cmds(mod_dram, s, n(2500)),
                   {"out_ready_p": 0.5, "reset_at": n(2500) * 4}))
    return out


def _kw(r: Run, seed: int) -> dict:
    """The run's keyword arguments, a callable value evaluated for ``seed``."""
    return {k: (v(seed) if callable(v) else v) for k, v in r.kw.items()}


def _lockstep(r: Run, seed: int) -> dict:
    from tb.build import run_channel_lockstep, run_lockstep, run_module_lockstep
    from tb.dram import run_dram_lockstep
    stim = r.stim(seed)
    kw = _kw(r, seed)
    if r.kind == "macro":
        return run_lockstep(r.params, stim, label=r.name)
    if r.kind == "dram":
        return run_dram_lockstep(r.params, stim, seed=seed, label=r.name, **kw)
    if r.kind == "channel":
        return run_channel_lockstep(r.params, stim, seed=seed, label=r.name, **kw)
    return run_module_lockstep(r.params, stim, seed=seed, label=r.name, **kw)


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
        if r.kind == "dram":         # the bank alone: its commands are no channel's
            continue
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
