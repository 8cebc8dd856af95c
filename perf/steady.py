"""Periodic steady state of the performance model (perf/sim.py): at each iteration boundary of a
``Rep`` the simulator's state is normalised (every timer relative to now, every sequence id
relative to the next one, every set relative to the iteration's set offset, the host FIFO's
pending commands); when a normalised state repeats, the schedule is periodic and the remaining
whole periods are added in closed form (cycles and every counter).  Exact: the machine is
deterministic and each period sees the same commands."""
from __future__ import annotations

from spec.isa import HostOp

__all__ = ["state_key", "boundary"]

from perf.chan import INF
from perf.program import MAC_AB, Rep

_PAGE_OPS = (int(HostOp.WR_W), int(HostOp.MAC), MAC_AB)   # channel ops whose page set matters


def rep_mask(sim, rep) -> int:
    """Channels any command of ``rep`` (nested Reps included) goes to (memoised per Rep)."""
    memo = sim._rep_masks
    m = memo.get(id(rep))
    if m is None:
        m = 0
        for b in rep.bodies:
            for it in b:
                m |= rep_mask(sim, it) if isinstance(it, Rep) else it.chmask
        memo[id(rep)] = m
    return m


def state_key(sim, f, t, mod_out):
    """Normalised state at an iteration boundary of frame ``f`` (see the module doc).  The open
    rows of a channel no command of the Rep goes to are kept absolute: they cannot change
    while the Rep runs, and no command of it compares a row with them."""
    so = f.set_off
    hz = sim.horizon
    cm = rep_mask(sim, f.rep)
    out = [mod_out, sim._owed, tuple((h.op, h.chmask, h.bank,
                           h.set - so if h.set >= 0 and h.op in _PAGE_OPS else -1,
                           h.g, h.o, h.acc) for h in sim._fifo)]
    for c, ch in enumerate(sim._chans):
        n = ch.n
        ro = so if cm >> c & 1 else 0

        def cell(x):
            return (x.idx - n, x.t - t if x.t < INF else -1)

        def ent(e):
            return (e[0], e[1], e[2] - so if e[2] >= 0 else -1, e[3], e[4], e[5].idx - n,
                    tuple(cell(x) for x in e[6] if x.t > t))
        tab = []
        dead = []
        for k, x in ch.tab.items():
            if x.t > t:
                kk = ((k[0], k[1], k[2] - so) if k[0] in (2, 3) else
                      (k[0], k[1] - so) if k[0] in (6, 8) else k)
                tab.append((kk, cell(x)))
            else:
                dead.append(k)
        for k in dead:              # a finished command blocks nothing: forget it
            del ch.tab[k]
        tab.sort()
        out.append((
            tuple(ent(e) for e in ch.ioq), tuple(ent(e) for e in ch.cq),
            tuple(sorted(cell(x) for x in ch.ring if x.t > t)),
            tuple(tab), tuple(max(0, x - t) for x in ch.bank_ready),
            max(0, ch.last_dv - t), ch.iss - n, ch.out_valid, max(0, ch.io_ready - t),
            tuple(None if r is None else r - ro for r in ch.open_row),
            tuple(max(-hz, x - t) for x in ch.t_act),
            tuple(max(-hz, x - t) for x in ch.t_pre),
            tuple(max(-hz, x - t) for x in ch.last_col),
            tuple(max(-hz, x - t) for x in ch.acts),
            (max(-hz, ch.col_lo - t), max(-hz, ch.col_hi - t), max(-hz, ch.col_prev - t),
             max(-hz, ch.rd_end - t))))
    return (f.it % len(f.rep.bodies), tuple(out))

def boundary(sim, f, t, mod_out, skipped):
    """At the start of iteration ``f.it`` of a Rep: record the state, or, if it repeats an
    earlier boundary's, add the remaining whole periods in closed form."""
    key = state_key(sim, f, t, mod_out)
    now = t + sim._tskip
    prev = f.snaps.get(key)
    if prev is None:
        f.snaps[key] = (f.it, now, list(sim._stats))
        return
    i0, t0, s0 = prev
    per = f.it - i0
    m = (f.n - 1 - f.it) // per       # iteration f.it has begun (its first command fetched)
    if m <= 0:
        return
    dt = now - t0
    sim._tskip += m * dt
    for j, v in enumerate(sim._stats):
        sim._stats[j] = v + m * (v - s0[j])
    f.n -= m * per
    f.snaps.clear()
    skipped.append((f.rep.label, m * per, m * dt))
