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

__all__ = ["pace_waits", "golden_run", "dram_calib_module", "dram_qk_items"]

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


def dram_calib_module(n_banks, n_sets, timing, dcs, all_bank, n_ch=1, burst=16):
    """The DRAM module of the calibration tests (tests/perf/test_perf_dram_rtl.py against the
    golden model, tests/rtl/test_perf_rtl.py against the RTL): 32 x 4 INT8 pages (C = 32 x 4 /
    16 = 8 columns of K = 4 inputs)."""
    from spec.isa import ChannelParams
    from spec.params import MacroParams
    m = MacroParams(n_in=32, n_out=4, w_bits=8, x_bits=8, n_sets=n_sets, n_acc=4)
    cp = ChannelParams(m, n_banks=n_banks, n_gbuf=2, q_depth=4, dcs=dcs, all_bank=all_bank,
                       bank_kind="dram", timing=timing, burst_bytes=burst)
    return ModuleParams(cp, n_ch=n_ch, n_vpages=max(16, n_banks * n_sets), n_req=4,
                        fifo_depth=8, loop_len=8)


def dram_qk_items(rng, sp, rounds, all_bank, wr_per_page=2, append=0.3, wait=0.0):
    """QK^T-like: MAP every page; write ``wr_per_page`` column bursts of every page (WR_W,
    random columns); then ``rounds`` rounds of: WR_INP of the query into GBuf g, one MAC per
    page (or one MAC_AB per stripe) into OBuf entry o, the RD_OUTs of every bank's entry, with
    probability ``append`` a WR_W appending a KV column to a random page and with probability
    ``wait`` a host WAIT (blocking reads).  ``sp``: the module's SimParams."""
    from perf.program import MAC_AB, HCmd
    H = HostOp
    B, S, C = sp.n_banks, sp.n_sets, sp.n_ch
    ncol = sp.page_bytes // sp.dram.burst_bytes
    allm = (1 << C) - 1
    prog = [HCmd(H.MAP, vp=s * B + b, pp=b * S + s) for s in range(S) for b in range(B)]
    prog.append(HCmd(H.BARRIER))

    def wr_w(b, s):
        return HCmd(H.WR_W, allm, vp=s * B + b, bank=b, set=s, row=rng.randrange(ncol))
    for s in range(S):
        for b in range(B):
            prog += [wr_w(b, s) for _ in range(wr_per_page)]
    o = 0
    for r in range(rounds):
        g = r % sp.n_gbuf
        prog.append(HCmd(H.WR_INP, allm, g=g))
        for s in rng.sample(range(S), S):
            o = (o + 1) % sp.n_acc
            acc = rng.randrange(2)
            if all_bank:
                prog.append(HCmd(MAC_AB, allm, vp=s * B, bank=0, set=s, g=g, o=o, acc=acc))
            else:
                prog += [HCmd(H.MAC, allm, vp=s * B + b, bank=b, set=s, g=g, o=o, acc=acc)
                         for b in range(B)]
            prog += [HCmd(H.RD_OUT, allm, vp=s * B + b, bank=b, set=s, o=o) for b in range(B)]
            if rng.random() < append:
                prog.append(wr_w(rng.randrange(B), rng.randrange(S)))
            if rng.random() < wait:
                prog.append(HCmd(WAIT))
    return prog
