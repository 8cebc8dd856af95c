"""Channel state of the performance model (perf/sim.py): the queues, the dependency table, the
sequence window and the bank timing of one channel, without data (docs/channel.md), and the
DRAM-PIM bank and channel timing rules of its DRAM back-end (docs/perf.md).

DRAM rules (GDDR6-AiM constants, :class:`perf.params.DramTiming`; the timing rules of
arkhadem/aim_simulator ``src/dram/impl/GDDR6.cpp``, the simulator CENT runs on):

* a single-bank MAC streams its page's ``ncol`` columns ``tCCDL`` apart; a row miss
  precharges (``tRAS`` after the bank's ACT, ``tRTP`` after its last column), activates ``tRP``
  later, no sooner than ``tRRD`` after the channel's previous ACT, ``tFAW`` after its fourth
  previous one and ``tRC`` after the bank's previous ACT, and starts its columns ``tRCDRDMAC``
  after the ACT;
* **column bus**: column commands of one channel share its command bus, one per ``tCCDS``
  (GDDR6.cpp: MAC <-> MAC/MAC16/RD commands ``nCCDS`` apart at the channel level): a MAC's
  columns occupy it from its first column to ``tCCDS`` after its last, so single-bank MACs on
  different banks stream one after the other, never at once (exact for tCCDS = tCCDL, the AiM
  values; a bound when tCCDS < tCCDL, where two banks could interleave their columns);
* **all-bank MAC** (MAC_AB, AiM's MAC_ABK = ACT16 + MAC16 columns): every bank on the same
  row in lockstep.  A row miss precharges every open bank (the latest of their tRAS / tRTP),
  then ONE all-bank activation (ACT16) opens the row in every bank: it counts as one ACT in
  the channel's tRRD and tFAW windows (one command on the bus; GDDR6.cpp applies nRRDL between
  ACT16 and any ACT and no nFAW at all: "nFAW (not used)", its FAW rule is commented out) and
  waits tRC after every bank's previous ACT (GDDR6.cpp: ACT16 <-> ACT nRC at the channel
  level).  Then ``ncol`` MAC16 columns ``tCCDL`` apart on all banks at once; the column bus is
  busy until ``tCCDL`` after the last one;
* RD_OUT reads the MAC result registers (``RDMAC16``: nCLREG + nBL, nCLREG = 0): one column
  slot per burst on the column bus (GDDR6.cpp: RDMAC16 <-> MAC16 ``nCCDL``), so it issues
  only in a gap of the column bus; WR_INP/WR_W/RD_OUT share the channel's I/O data bus.
"""
from __future__ import annotations

from collections import deque

from perf.params import SimParams
from spec.isa import HostOp, seq_window

__all__ = ["INF", "Cell", "Chan", "enqueue", "dram_mac", "dram_mac_ab", "dram_wr_act"]

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
        self.t_act = [-INF] * B
        self.last_col = [-INF] * B
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


def _activate(ch: Chan, d, b, t, ta):
    """Earliest ACT cycle >= ta for bank ``b`` (``b`` = -1: ACT16 of every bank) in cycle t:
    tRRD after the channel's previous ACT, tFAW after its fourth previous, tRC after the
    bank's previous ACT."""
    acts = ch.acts
    if acts:
        ta = max(ta, acts[-1] + d.RRDS)
        if len(acts) == 4:
            ta = max(ta, acts[0] + d.FAW)
    ta = max(ta, (ch.t_act[0] if b < 0 and ch.sync else max(ch.t_act) if b < 0
                  else ch.t_act[b]) + d.RC)
    acts.append(ta)
    return ta


def dram_wr_act(sim, ch: Chan, b, t):
    """The row activation of a WR_W on DRAM bank ``b`` in cycle t (tRRD, tFAW, tRC, as a
    MAC's; the bank is precharged: t >= bank_ready); the row is left closed.  Returns the ACT
    cycle."""
    ta = _activate(ch, sim.sp.dram, b, t, t)
    ch.t_act[b] = ta
    ch.open_row[b] = None
    ch.sync = False
    sim._stats[sim.ACT] += 1
    return ta


def dram_mac(sim, ch: Chan, b, row, t):
    """Issue a MAC on DRAM bank ``b`` over ``row`` in cycle t (module docstring); returns the
    cycle its done is visible."""
    d = sim.sp.dram
    if ch.open_row[b] == row:
        first = max(t + 1, ch.last_col[b] + d.CCDL)
    else:
        ta = t + 1
        if ch.open_row[b] is not None:
            ta = max(t + 1, ch.t_act[b] + d.RAS, ch.last_col[b] + d.RTP) + d.RP
        ta = _activate(ch, d, b, t, ta)
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
    return last + d.CCDL + 1


def dram_mac_ab(sim, ch: Chan, row, t):
    """Issue an all-bank MAC over ``row`` in cycle t (module docstring: PRE of the open banks,
    one ACT16, MAC16 columns on all banks); returns the cycle its done is visible."""
    d = sim.sp.dram
    orow = ch.open_row
    B = len(orow)
    sync = ch.sync                  # every bank as bank 0: one bank stands for all
    if (orow[0] == row) if sync else all(r == row for r in orow):
        first = max(t + 1, (ch.last_col[0] if sync else max(ch.last_col)) + d.CCDL)
    else:
        ta = t + 1
        for bb in ((0,) if sync else range(B)):
            if orow[bb] is not None:
                ta = max(ta, max(t + 1, ch.t_act[bb] + d.RAS, ch.last_col[bb] + d.RTP) + d.RP)
        ta = _activate(ch, d, -1, t, ta)
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
    return last + d.CCDL + 1
