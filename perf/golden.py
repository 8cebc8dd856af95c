"""Run a performance-model program on the golden model (model/module.py), for calibration.

:func:`pace_waits` is :func:`compiler.host.pace` for programs with :data:`perf.program.WAIT`
items: the host pushes each command in the first cycle in which the module's FIFO has room,
except that after a WAIT it pushes nothing until every result beat of the RD_OUTs pushed
before has been delivered (the host is always ready: ``out.ready`` = 1).  It returns the
``[(host word, gap)]`` of those pushes plus the draining NOP of ``pace``, so
``ModuleModel.run`` of it reproduces the run, and :func:`golden_run` runs it.
"""
from __future__ import annotations

from perf.program import WAIT, check_items, expand, host_word
from spec.isa import HostOp, ModuleParams

__all__ = ["pace_waits", "golden_run"]

_RD_OUT = int(HostOp.RD_OUT)


def pace_waits(p: ModuleParams, items, data=None,
               stall_limit: int = 100000) -> list[tuple[int, int]]:
    """Host words with gaps for ``items`` (HCmds, Reps and WAITs) on module ``p``, the host
    honouring every WAIT (module docstring); ``data(i, cmd)`` gives the data field of host
    command i (WAITs not counted; default 0), as in :func:`perf.program.to_host_words`.
    ValueError naming a bad argument."""
    from compiler.host import drain_nop, host_push
    from model.module import ModuleModel
    if not isinstance(p, ModuleParams):
        raise ValueError(f"pace_waits: p={p!r} must be a ModuleParams")
    cmds = list(expand(check_items("pace_waits", items)))
    if data is not None and not callable(data):
        raise ValueError(f"pace_waits: data={data!r} must be a function (i, cmd) -> int")
    mm = ModuleModel(p)
    mm.reset(power_up=True)
    out, last, c, i = [], -1, 0, 0
    owed = 0                 # result beats of pushed RD_OUTs not yet delivered
    stall = 0
    k = 0                    # host commands pushed
    word = None              # the word of command i (encoded once)
    while i < len(cmds):
        h = cmds[i]
        if h.op == WAIT and owed == 0:
            i += 1
            continue
        if h.op != WAIT and word is None:
            word = host_word(p, h, data, k)
        push, o = host_push(mm, None if h.op == WAIT else word)
        if o.out_valid:
            owed -= 1
        if push:
            out.append((word, c - last - 1))
            last = c
            i += 1
            k += 1
            stall = 0
            word = None
            if h.op == _RD_OUT:
                owed += h.chmask.bit_count()
        else:
            stall += 1
            if stall > stall_limit:
                raise RuntimeError(f"pace_waits: no push for {stall_limit} cycles at command "
                                   f"{i} (a WAIT for results that never come?)")
        c += 1
    out.append(drain_nop(mm, c, last, stall_limit=stall_limit, who="pace_waits"))
    return out


def golden_run(p: ModuleParams, items, data=None):
    """:class:`model.module.ModuleModel` run of ``items`` paced by :func:`pace_waits`; raises
    AssertionError unless it ends "ok" without errors."""
    from model.module import ModuleModel
    run = ModuleModel(p).run(pace_waits(p, items, data))
    assert run.status == "ok" and not run.errs, (run.status, run.errs[:3])
    return run
