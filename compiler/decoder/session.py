"""Running layer programs: a golden-model module kept across steps, and step timing from the
performance model.

:class:`ModuleSession` keeps one :class:`model.module.ModuleModel` alive (weights, page table,
KV cache) and pushes each program like a host: on the valid/ready port when the module has
``host_ready``, else in the cycles where the FIFO has room (:func:`compiler.host.host_push`,
the rule of :func:`compiler.host.pace`).  :func:`step_cycles` times a step program with the
performance model (``perf.sim``), whose cycle counts equal the golden model's (tested here on
the decode step: tests/workloads/test_smollm2_pim.py).
"""
from __future__ import annotations

from compiler.host import host_push
from model.module import ModuleModel
from perf.params import SimParams
from perf.program import from_host_words
from perf.sim import simulate
from spec.isa import ModuleParams

__all__ = ["ModuleSession", "SessionRun", "step_cycles"]


class SessionRun:
    """One program's run: ``outs`` (out payloads in order), ``cycles`` (first push to the
    first idle cycle after the last push), ``busy`` (bank busy cycles, all banks)."""
    __slots__ = ("outs", "cycles", "busy")

    def __init__(self, outs, cycles, busy):
        self.outs, self.cycles, self.busy = outs, cycles, busy


class ModuleSession:
    """A golden-model module whose state persists from one :meth:`run` to the next."""

    def __init__(self, p: ModuleParams):
        if not isinstance(p, ModuleParams):
            raise ValueError(f"ModuleSession: p={p!r} must be a ModuleParams")
        self.p = p
        self.mm = ModuleModel(p)
        self.mm.reset(power_up=True)
        self.cycles = 0

    def run(self, words, stall_limit: int = 200_000) -> SessionRun:
        """Push ``words`` (host command ints) and run until the module is idle with every
        result out; RuntimeError on a rejected command, a dropped push or a stall."""
        mm = self.mm
        outs, busy = [], 0
        i, n, c, last = 0, len(words), 0, 0
        while True:
            push, o = host_push(mm, words[i] if i < n else None)
            if o.err or o.ovf or any(co.err for co in mm.last_chan_outs):
                raise RuntimeError(f"ModuleSession: err={o.err} ovf={o.ovf} at cycle {c} of "
                                   f"the program (command {i} of {n} next)")
            if o.out_valid:
                outs.append(o.out_payload)
                last = c
            if o.busy:
                busy += bin(o.busy).count("1")
                last = c
            if push:
                i += 1
                last = c
            elif i >= n and o.idle:
                break
            c += 1
            if c - last > stall_limit:
                raise RuntimeError(f"ModuleSession: no progress for {stall_limit} cycles")
        self.cycles += c
        return SessionRun(outs, c, busy)


def step_cycles(p: ModuleParams, map_words: list, words: list) -> dict:
    """Performance-model timing of program ``words`` on a module whose page table holds
    ``map_words`` (MAPs; they run first, one per cycle, and are subtracted).  Returns
    ``cycles`` (first push to idle, as :class:`SessionRun`), ``busy`` and ``macs``
    (channel MAC commands)."""
    sp = SimParams.from_module(p)
    res = simulate(sp, from_host_words(p, list(map_words) + list(words)))
    return dict(cycles=res.t_end - len(map_words), busy=res.stats["busy"],
                macs=res.stats["mac"])
