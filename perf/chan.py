"""Channel state of the performance model (perf/sim.py): the queues, the dependency table, the
sequence window and the bank timing of one channel, without data (docs/channel.md), and the
DRAM-PIM bank and channel timing rules of its DRAM back-end (docs/perf.md).

DRAM rules: the scheduler of docs/dram_channel.md, cycle for cycle (every DRAM command's cycle
is fixed when its channel command issues; the channel-level rules after the AiM simulator CENT
runs on, arkhadem/aim_simulator ``src/dram/impl/GDDR6.cpp``; constants
:class:`perf.params.DramTiming`):

* a single-bank MAC streams its row's ``ncol`` = C columns ``tCCDL`` apart; a row miss
  precharges an open bank (``tRAS`` after its ACT, ``tRTP`` after its last column) and
  activates ``tRP`` after its PRE (``t + 1`` at the earliest), by the **ACT rule**: no sooner
  than ``tRRD`` after the channel's previous ACT, ``tFAW`` after its fourth previous one (an
  all-bank ACT counts once) and ``tRC`` after the bank's previous ACT; its columns start
  ``tRCDRDMAC`` after the ACT; the result is visible two cycles after the last column;
* **column bus**: column commands of one channel share its command bus: a MAC's columns
  occupy it from its first column to ``tCCDS`` after its last (an all-bank MAC's to ``tCCDL``
  after), a WR_W's WR one ``tCCDS`` slot, a RD_OUT ``nR`` cycles (``rd_end``), so streams on
  different banks run one after the other (GDDR6.cpp: MAC <-> MAC/MAC16/RD ``nCCDS``);
* **all-bank MAC** (MAC_AB, AiM's MAC_ABK = ACT16 + MAC16 columns): every bank on the same
  row in lockstep; a miss precharges every open bank and ONE all-bank ACT opens the row in
  every bank (one entry of the tRRD / tFAW window, tRC after every bank's previous ACT);
* **WR_W** (one column burst): PRE if open, ACT, the WR in a column-bus slot ``tRCDWR`` after
  the ACT, PRE at ``max(ACT + tRAS, WR + tCWL + tBL + tWR)``; done (and the bank free) the
  cycle after that PRE;
* RD_OUT reads the MAC result registers (``RDMAC16``: nCLREG + nBL, nCLREG = 0): it issues
  only in a gap of the column bus; WR_INP / WR_W / RD_OUT share the channel's I/O data bus;
* refresh (``SimParams.refresh = "exact"``): :func:`dram_refresh` and the look-ahead / gate
  of perf/sim.py (docs/dram_channel.md "Refresh").
"""
from __future__ import annotations

from collections import deque

from perf.params import SimParams
from spec.isa import HostOp, seq_window

__all__ = ["INF", "Cell", "Chan", "enqueue", "dram_mac", "dram_mac_ab", "dram_wr_w",
           "dram_refresh"]

INF = 1 << 62
_WR_INP, _WR_W, _MAC, _RD_OUT = (int(HostOp.WR_INP), int(HostOp.WR_W), int(HostOp.MAC),
                                 int(HostOp.RD_OUT))


class Cell:
    """Completion of one channel command: ``t`` = first cycle in which its done bit is visible
    (INF until it issues); ``idx`` = its channel-local sequence number (not taken mod W)."""
    __slots__ = ("t", "idx")

    def __init__(self, t, idx):
        self.t, self.idx = t, idx


class Chan:
    """Timing state of one channel (docs/channel.md without data)."""

    def __init__(self, sp: SimParams):
        self.ioq, self.cq = deque(), deque()
        self.n = 0                               # next sequence number
        self.W = W = seq_window(sp.q_depth, sp.n_banks, sp.tree_stages)
        self.ring = [Cell(0, -W + i) for i in range(W)]   # reset: every id done
        self.tab = {}                            # dependency table: key -> Cell
        B = sp.n_banks
        self.bank_ready = [0] * B                # cycle from which bank b accepts a MAC
        self.last_dv = 0                         # latest completion time of anything issued
        self.iss = 0                             # in-order: next sequence number to issue
        self.out_valid = 0
        self.io_ready = 0                        # DRAM: I/O data bus free from this cycle
        self.open_row = [None] * B               # DRAM: open row per bank
        self.t_act = [-INF] * B                  # DRAM: A[b], the bank's last ACT
        self.t_pre = [-INF] * B                  # DRAM: P[b], the bank's last PRE
        self.last_col = [-INF] * B               # DRAM: Lc[b], its last column MAC
        self.ref_start = [-INF] * B              # DRAM: the bank's last refresh start
        self.gate_open = 0                       # DRAM (refresh "exact"): the refresh gate
        #                                          is closed from a request until this cycle
        self.acts = deque(maxlen=4)              # DRAM: last four ACT cycles of the channel
        self.col_lo = -INF                       # DRAM column bus: latest MAC stream's first
        self.col_hi = -INF                       # column, its end (next column from here),
        self.col_prev = -INF                     # the previous stream's end,
        self.rd_end = -INF                       # and the latest RD_OUT's end
        self.rmax = 0                            # max(bank_ready) (bank_ready only grows)
        self.sync = False                        # DRAM: every bank in the state of the last
        #                                          all-bank MAC (same row, ACT, last column)


def _younger(x, y):
    """The younger (later-enqueued) of two table cells (either may be None)."""
    if x is None:
        return y
    if y is None or x.idx > y.idx:
        return x
    return y


def enqueue(ch: Chan, op, b, s, g, o, t, B):
    """Push a command on channel ``ch`` in cycle ``t`` (edge of its transfer), recording its
    dependencies on the last writer/reader of each resource that is not done at ``t``
    (satisfied once their done is visible).  MAC_AB (``b`` = -1): GBuf ``g``, set ``s`` and
    OBuf entry ``o`` of every one of the ``B`` banks.

    Table keys: (0, g) last WR_INP, (1, g) last MAC reading g; (2, b, s) last WR_W, (3, b, s)
    last single-bank MAC reading (b, s); (4, b, o) last single-bank MAC writing (b, o), (5, b,
    o) last RD_OUT of (b, o); for the all-bank MAC, instead of B entries each: (6, s) last
    MAC_AB reading set s, (7, o) last MAC_AB writing entry o, (8, s) last WR_W to set s of any
    bank, (9, o) last RD_OUT of entry o of any bank.  One entry per kind is exact because
    MACs complete in issue order (one compute queue, in-order issue, completion a fixed time
    after the last column or after issue), and so do WR_Ws and RD_OUTs (one I/O queue, fixed
    latencies after issue): waiting for the youngest of several is waiting for all of them
    (docs/channel.md's all-bank rule)."""
    tab = ch.tab
    cell = Cell(INF, ch.n)
    get = tab.get
    if op == _MAC:
        deps = (get((0, g)), get((2, b, s)), get((5, b, o)))
        tab[(1, g)] = cell
        tab[(3, b, s)] = cell
        tab[(4, b, o)] = cell
        q = ch.cq
    elif op == _RD_OUT:
        deps = (_younger(get((4, b, o)), get((7, o))),)
        tab[(5, b, o)] = cell
        tab[(9, o)] = cell
        q = ch.ioq
        s = -1                      # no page set involved (kept out of the state key)
    elif op == _WR_INP:
        deps = (get((1, g)),)
        tab[(0, g)] = cell
        q = ch.ioq
        s = -1
    elif op == _WR_W:
        deps = (_younger(get((3, b, s)), get((6, s))),)
        tab[(2, b, s)] = cell
        tab[(8, s)] = cell
        q = ch.ioq
    else:                           # MAC_AB
        deps = (get((0, g)), get((8, s)), get((9, o)))
        tab[(1, g)] = cell
        tab[(6, s)] = cell
        tab[(7, o)] = cell
        q = ch.cq
    q.append([op, b, s, g, o, cell, tuple(x for x in deps if x is not None and x.t > t)])
    ch.ring[ch.n % ch.W] = cell
    ch.n += 1


def _act_at(ch: Chan, d, b, ta):
    """The ACT rule (docs/dram_channel.md): the ACT of bank ``b`` (``b`` = -1: the all-bank
    ACT of every bank) wanted from cycle ``ta`` is placed at the latest of ``ta``, tRRD after
    the channel's previous ACT, tFAW after its fourth previous and tRC after the bank's (every
    bank's) previous ACT.  No side effect (the caller appends it to ``acts`` and sets ``t_act``)."""
    acts = ch.acts
    if acts:
        ta = max(ta, acts[-1] + d.RRDS)
        if len(acts) == 4:
            ta = max(ta, acts[0] + d.FAW)
    return max(ta, (ch.t_act[0] if b < 0 and ch.sync else max(ch.t_act) if b < 0
                    else ch.t_act[b]) + d.RC)


def _miss_pre(ch: Chan, d, b, t):
    """Row miss of bank ``b`` at issue cycle t: (PRE cycle or None if the bank is closed, the
    earliest cycle of the ACT that follows)."""
    if ch.open_row[b] is not None:
        p = max(t + 1, ch.t_act[b] + d.RAS, ch.last_col[b] + d.RTP)
        return p, p + d.RP
    return None, max(t + 1, ch.t_pre[b] + d.RP)


def dram_wr_w(sim, ch: Chan, b, t, nb=1, tlim=INF):
    """Issue a WR_W of ``nb`` column bursts on DRAM bank ``b`` in cycle t (docs/dram_channel.md,
    one burst; ``nb`` > 1 bursts tCCDL apart): PRE if open, ACT (ACT rule), the WRs in a slot
    of the column bus, PRE after tRAS and the write recovery; the row is left closed.  Returns
    the cycle its done is visible (p + 1), or None without any effect if the ACT would be at
    or after ``tlim`` (the refresh look-ahead)."""
    d = sim.sp.dram
    _, ta = _miss_pre(ch, d, b, t)         # the PRE of an open row: P[b] is set to p below
    ta = _act_at(ch, d, b, ta)
    if ta >= tlim:
        return None
    ch.acts.append(ta)
    ch.t_act[b] = ta
    w = max(ta + d.RCDWR, ch.col_hi, ch.rd_end)
    wl = w + (nb - 1) * d.CCDL
    ch.col_prev, ch.col_lo, ch.col_hi = ch.col_hi, w, wl + d.CCDS
    p = max(ta + d.RAS, wl + d.wr_to_pre)
    ch.open_row[b] = None
    ch.t_pre[b] = p
    ch.bank_ready[b] = p + 1
    if p + 1 > ch.rmax:
        ch.rmax = p + 1
    ch.sync = False
    sim._stats[sim.ACT] += 1
    return p + 1


def dram_mac(sim, ch: Chan, b, row, t, tlim=INF):
    """Issue a MAC on DRAM bank ``b`` over ``row`` in cycle t (docs/dram_channel.md); returns
    the cycle its done is visible (l + 2), or None without any effect if its ACT (a row miss)
    would be at or after ``tlim`` (the refresh look-ahead)."""
    d = sim.sp.dram
    if ch.open_row[b] == row:
        first = max(t + 1, ch.last_col[b] + d.CCDL)
    else:
        p, ta = _miss_pre(ch, d, b, t)
        ta = _act_at(ch, d, b, ta)
        if ta >= tlim:
            return None
        if p is not None:
            ch.t_pre[b] = p
        ch.acts.append(ta)
        ch.t_act[b] = ta
        ch.open_row[b] = row
        sim._stats[sim.ACT] += 1
        first = ta + d.RCDRDMAC
    first = max(first, ch.col_hi, ch.rd_end)
    last = first + (sim.ncol - 1) * d.CCDL
    ch.col_prev, ch.col_lo, ch.col_hi = ch.col_hi, first, last + d.CCDS
    ch.last_col[b] = last
    ch.bank_ready[b] = last
    if last > ch.rmax:
        ch.rmax = last
    ch.sync = False
    return last + 2


def dram_mac_ab(sim, ch: Chan, row, t, tlim=INF):
    """Issue an all-bank MAC over ``row`` in cycle t (docs/dram_channel.md: PRE of the open
    banks, one all-bank ACT, the columns on all banks); returns the cycle its done is visible
    (l + 2), or None without any effect if its ACT would be at or after ``tlim``."""
    d = sim.sp.dram
    orow = ch.open_row
    B = len(orow)
    sync = ch.sync                  # every bank as bank 0: one bank stands for all
    if (orow[0] == row) if sync else all(r == row for r in orow):
        first = max(t + 1, (ch.last_col[0] if sync else max(ch.last_col)) + d.CCDL)
    else:
        ta = t + 1
        pres = []
        for bb in ((0,) if sync else range(B)):
            p, a = _miss_pre(ch, d, bb, t)
            if a > ta:
                ta = a
            if p is not None:
                pres.append((bb, p))
        ta = _act_at(ch, d, -1, ta)
        if ta >= tlim:
            return None
        if sync:
            if pres:
                ch.t_pre = [pres[0][1]] * B
        else:
            for bb, p in pres:
                ch.t_pre[bb] = p
        ch.acts.append(ta)
        ch.t_act = [ta] * B
        ch.open_row = [row] * B
        sim._stats[sim.ACT] += B
        sim._stats[sim.ACT16] += 1
        first = ta + d.RCDRDMAC
    first = max(first, ch.col_hi, ch.rd_end)
    last = first + (sim.ncol - 1) * d.CCDL
    ch.col_prev, ch.col_lo, ch.col_hi = ch.col_hi, first, last + d.CCDL
    ch.last_col = [last] * B
    ch.bank_ready = [last] * B
    ch.rmax = last
    ch.sync = True
    return last + 2


def dram_refresh(ch: Chan, d, T):
    """The refresh request of cycle ``T`` = k tREFI (docs/dram_channel.md "Refresh"), applied
    when the simulation reaches T (no MAC / MAC_AB / WR_W issues from T until the gate opens,
    so every bank's schedule is final): each open bank is precharged at the first cycle >= T
    its tRAS / tRTP allow after its last column, each bank starts its refresh when its
    ``c_act`` is 0 (tRC after its ACT, tRP after its PRE, tRFC after its previous refresh
    start, and >= T), and the gate opens tRFC after the latest start."""
    g = T
    for b in range(len(ch.open_row)):
        if ch.open_row[b] is not None:
            ch.t_pre[b] = max(T, ch.t_act[b] + d.RAS, ch.last_col[b] + d.RTP)
            ch.open_row[b] = None
        s = max(T, ch.t_act[b] + d.RC, ch.t_pre[b] + d.RP, ch.ref_start[b] + d.RFC)
        ch.ref_start[b] = s
        if s + d.RFC > g:
            g = s + d.RFC
    ch.gate_open = g
    ch.sync = False
