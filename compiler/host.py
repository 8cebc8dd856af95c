"""Host side of a module program: pace the pushes of a command list, run it on the golden model.

By default the module's host port has no ready (docs/module.md, "Pacing the host port"), so a
host must know when it may push: :func:`pace` computes the gaps from the cycle-exact module
model.  With ``ModuleParams.host_ready`` the port has a ready and a host needs no pacing (it
offers each command until ``host.ready``); :func:`pace` then returns the cycles in which those
transfers happen, the same gaps as without ready.  :func:`run_program` paces
and runs a compiled attention :class:`~compiler.attention.Program` and decodes its results.
"""
from __future__ import annotations

from spec.isa import HostOp, ModuleParams, host_encode, host_fields
from spec.params import check_int, width

__all__ = ["pace", "run_program", "host_push", "drain_nop"]


def host_push(mm, word, out_ready: int = 1):
    """One cycle of a host driving :class:`model.module.ModuleModel` ``mm``, offering ``word``
    (None: nothing), under the pacing rule of docs/module.md: with ``host_ready`` the word is
    offered and transferred when the port is ready; without it, pushed only when the FIFO
    has room (a push into a full FIFO would be dropped).  Returns (pushed 0/1, ModOut).

    The only place that reads the model's FIFO (``ModuleModel`` has no public peek of it:
    its ``host_ready`` output is constant 1 without ``ModuleParams.host_ready``)."""
    if word is None:
        return 0, mm.step(0, 0, out_ready)
    if mm.params.host_ready:
        o = mm.step(1, word, out_ready)
        return o.host_ready, o
    if len(mm._fifo) < mm.params.fifo_depth:    # the push condition (FIFO not full)
        return 1, mm.step(1, word, out_ready)
    return 0, mm.step(0, 0, out_ready)


def drain_nop(mm, c: int, last: int, out_ready=lambda c: 1, stall_limit: int = 100000,
              who: str = "pace") -> tuple[int, int]:
    """The trailing NOP of a paced program, (word, gap): ``mm`` is stepped without pushes
    from cycle ``c`` (``out_ready(cycle)``) until it is idle -- ``idle`` covers the module's
    and every channel's out register, so every RD_OUT beat has left -- and the NOP is pushed
    in that cycle (``last``: the cycle of the previous push).  A program ending with it keeps
    :meth:`ModuleModel.run` going until everything has drained (+1 cycle).  RuntimeError
    naming ``who`` after ``stall_limit`` cycles."""
    start = c
    while not mm.idle:
        mm.step(0, 0, out_ready(c))
        c += 1
        if c - start > stall_limit:
            raise RuntimeError(f"{who}: module did not drain (deadlock?)")
    return host_encode(mm.params, HostOp.NOP), c - last - 1


def pace(p: ModuleParams, cmds, out_ready_p: float = 1.0, seed: int = 0, drain: bool = True,
         stall_limit: int = 100000):
    """Gaps for ``cmds`` ([(host_cmd, gap)], gaps ignored) so that no push is dropped: the
    host pushes command i in the first cycle in which the cycle-exact module model's FIFO has
    room (the module is deterministic given ``out.ready``'s seeded pattern, the same as in
    :meth:`ModuleModel.run`).  With ``p.host_ready`` the model is driven as a ready/valid
    stream (command i offered from the cycle after the previous transfer until ``host_ready``)
    and the gaps are those of its transfers: the same cycles (:func:`host_push`).  Returns
    [(host_cmd, gap)], with ``drain`` one trailing NOP (:func:`drain_nop`).  ValueError
    naming a bad argument."""
    from model.module import ModuleModel
    from model.stimulus import check_program, ready_at, ready_threshold
    if not isinstance(p, ModuleParams):
        raise ValueError(f"pace: p={p!r} must be a ModuleParams")
    words = [w for w, _ in check_program(cmds, width(host_fields(p)), "pace: cmds")]
    thr = ready_threshold(out_ready_p, "pace: out_ready_p")
    seed = check_int("pace: seed", seed, 0, (1 << 32) - 1)
    stall_limit = check_int("pace: stall_limit", stall_limit, 1)
    mm = ModuleModel(p)
    mm.reset(power_up=True)
    out, last, c, i = [], -1, 0, 0
    while i < len(words):
        sent, _ = host_push(mm, words[i], ready_at(seed, c, thr))
        if sent:
            out.append((words[i], c - last - 1))
            last = c
            i += 1
        c += 1
    if drain:
        out.append(drain_nop(mm, c, last, lambda c: ready_at(seed, c, thr), stall_limit))
    return out


def run_program(prog, out_ready_p: float = 1.0, seed: int = 0, paced: bool = True,
                step_metrics: bool = True):
    """Pace (optional) and run ``prog`` (a :class:`compiler.attention.Program`) on
    :class:`model.module.ModuleModel`.

    Returns (ModuleRun, DecodeOut or None, metrics).  ``metrics``: whole-program cycles and MAC
    utilisation (busy macro-cycles / (cycles * n_banks * n_ch)) and, with ``step_metrics``, the
    decode step alone: step_cycles = cycles(program) - cycles(setup only, which ends with a
    BARRIER; it has no MACs), step_util = busy / (step_cycles * n_banks * n_ch)."""
    from compiler.attention import Program
    from model.module import ModuleModel
    if not isinstance(prog, Program):
        raise ValueError(f"run_program: prog={prog!r} must be a compiler.attention.Program")
    p = prog.params
    cmds = pace(p, prog.cmds, out_ready_p, seed) if paced else prog.cmds
    run = ModuleModel(p).run(cmds, out_ready_p=out_ready_p, seed=seed)
    dec = prog.decode(run.outs) if len(run.outs) == prog.n_reads else None
    nb = p.n_ch * p.channel.n_banks
    met = dict(cycles=run.cycles, util=run.utilisation, busy=sum(run.busy_cycles),
               mac_ops=prog.mac_ops, useful_macs=prog.useful_macs)
    if step_metrics:
        sc = prog.cmds[:prog.n_setup]
        sc = pace(p, sc, out_ready_p, seed) if paced else sc
        srun = ModuleModel(p).run(sc, out_ready_p=out_ready_p, seed=seed)
        met["setup_cycles"] = srun.cycles
        met["step_cycles"] = run.cycles - srun.cycles
        met["step_util"] = sum(run.busy_cycles) / (met["step_cycles"] * nb)
        # useful MACs per macro-cycle of the step, against the peak n_in*n_out/x_bits per bank
        m = p.channel.macro
        met["step_useful_frac"] = prog.useful_macs / (met["step_cycles"] * nb * m.n_in * m.n_out
                                                      / m.x_bits)
    return run, dec, met
