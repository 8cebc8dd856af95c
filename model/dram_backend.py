"""Golden model of the DRAM back-end of a PIM channel with DRAM banks (docs/dram_channel.md).

Written from the contract only (not from the HDL).  :class:`DramBackend` holds the
scheduler state of the contract (per bank the instants ``A``, ``P``, ``Lc``, ``R``, the open
row; per channel the last four ACTs, the column bus ``colhi`` / ``colprev`` / ``collo``,
``rdend`` and ``ioready``), B bank executors (one schedule each: the DRAM commands of the
last issued MAC / WR_W on that bank, each with its cycle) and B
:class:`model.dram_bank.DramBankModel` s.  :class:`model.channel.ChannelModel` with
``bank_kind="dram"`` calls it each cycle, in this order:

1. :meth:`DramBackend.can_io` / :meth:`DramBackend.can_mac`: the issue rules added by the
   contract (registers at t; pure);
2. :meth:`DramBackend.cycle`: the executors present this cycle's commands to the banks, the
   banks are stepped (their outputs of cycle t, then their edge);
3. :meth:`DramBackend.issue_io` / :meth:`DramBackend.issue_mac`: the schedule of a command
   issued in cycle t (every command lands at t+1 or later), I/O head first;
4. :meth:`DramBackend.dones`: the ids whose delayed done bit is set at the edge ending t.

All instants are absolute cycle numbers since the last reset (the channel's ``cycle``);
``NEG`` stands for the contract's "−∞".  Every time is in cycles of the channel clock.
"""
from __future__ import annotations

from collections import deque

from model.dram_bank import DramBankModel
from spec.dram import DramOp, cmd_fields as dram_cmd_fields
from spec.isa import ChannelParams, Op

__all__ = ["DramBackend", "NEG"]

NEG = -(1 << 62)          # "−∞": every rule using it is satisfied
_ACT, _PRE, _MAC, _WR = int(DramOp.ACT), int(DramOp.PRE), int(DramOp.MAC), int(DramOp.WR)
_OP_NAMES = {int(o): o.name for o in DramOp}
_WR_INP, _WR_W, _RD_OUT = int(Op.WR_INP), int(Op.WR_W), int(Op.RD_OUT)


class DramBackend:
    """Scheduler, bank executors and banks of one DRAM channel.

    Parameters
    ----------
    p : ChannelParams
        A channel with ``bank_kind="dram"``; the banks are ``p.dram_bank``.

    Attributes
    ----------
    banks : list of DramBankModel
        The B banks (stepped once per :meth:`cycle`).
    K, C : int
        Inputs per column MAC (U / O) and columns per row (n_in x n_out / U).
    nI, nW, nR : int
        I/O bus cost in cycles of one input tile, one weight burst, one result.
    presented : list of tuple
        Commands presented to the banks in the last :meth:`cycle`: ``(bank, op, payload,
        accepted)`` (tests and mismatch reports).
    last_outs : list of DramOut
        Every bank's outputs of the last :meth:`cycle`.
    violations : list of tuple
        ``(cycle, bank, op name)`` of every scheduled command a bank did not accept in its
        cycle (always empty for a correct back-end; the channel's ``err`` shows the consequence).
    closes : list of int
        Per bank, refresh close PREs accepted since reset (statistics).
    """

    def __init__(self, p: ChannelParams, *, late: int = 0):
        if not isinstance(p, ChannelParams) or p.bank_kind != "dram":
            raise ValueError(f"DramBackend: p={p!r} is not a ChannelParams with bank_kind 'dram'")
        self.p = p
        bp = self.bp = p.dram_bank
        self.B = p.n_banks
        # late > 0: a deliberately wrong model (every bank delivers its beats late), for tests
        # that the lockstep checker reports it
        self.banks = [DramBankModel(bp, late=late) for _ in range(self.B)]
        t = self.t = p.timing
        m, U = p.macro, p.burst_bytes
        self.K, self.C = U // m.n_out, m.n_in * m.n_out // U
        self.nI = -(-m.n_in // U) * t.tCCDS
        self.nW = t.tCCDS
        self.nR = -(-2 * m.n_out // U) * t.tCCDS
        f = dram_cmd_fields(bp)
        self._o_row, self._o_col, self._o_dst = f["row"].offset, f["col"].offset, f["dst"].offset
        self._o_acc, self._o_last, self._o_data = (f["acc"].offset, f["last"].offset,
                                                    f["data"].offset)
        self._xk = (1 << (8 * self.K)) - 1
        self._burst = (1 << (8 * U)) - 1
        self.reset(power_up=True)

    # --- state ------------------------------------------------------------------------------
    def reset(self, power_up: bool = False) -> None:
        """``rst``: every instant −∞, every bank closed, no schedule, no pending done bit;
        every bank reset (its cell array kept unless ``power_up``)."""
        B = self.B
        self.now = 0
        for bank in self.banks:
            bank.reset(power_up=power_up)
        self.open, self.row = [0] * B, [0] * B
        self.A, self.P, self.Lc, self.R = [NEG] * B, [NEG] * B, [NEG] * B, [NEG] * B
        self.acts = deque([NEG] * 4, maxlen=4)      # acts[-1] latest, acts[0] fourth latest
        self.colhi = self.colprev = self.collo = NEG
        self.rdend = self.ioready = NEG
        self.sched = [deque() for _ in range(B)]    # (cycle, payload, g or -1, k)
        self._dones = {}                            # edge cycle -> ids done at that edge
        self.n_pending = 0
        self.presented, self.last_outs, self.violations = [], [], []
        self._held = 0
        self.closes = [0] * B

    def state(self, array: bool = False) -> dict:
        """Snapshot (copies) of the scheduler, the executors and the banks.  Instants are
        absolute cycles since reset, ``None`` for −∞; a schedule entry is ``(cycle, op name,
        payload without the GBuf slice, g, k)``; ``banks`` are :meth:`DramBankModel.state`
        (the cell arrays only with ``array``)."""
        def inst(v):
            return None if v <= NEG // 2 else v
        return {
            "open": list(self.open), "row": [r if o else 0 for o, r in zip(self.open, self.row)],
            "A": [inst(v) for v in self.A], "P": [inst(v) for v in self.P],
            "Lc": [inst(v) for v in self.Lc], "R": [inst(v) for v in self.R],
            "acts": [inst(v) for v in self.acts],
            "colhi": inst(self.colhi), "colprev": inst(self.colprev), "collo": inst(self.collo),
            "rdend": inst(self.rdend), "ioready": inst(self.ioready),
            "sched": [[(c, _OP_NAMES[pl & 7], pl, g, k) for c, pl, g, k in q]
                      for q in self.sched],
            "dones": sorted((c, s) for c, ss in self._dones.items() for s in ss),
            "banks": [bank.state(array=array) for bank in self.banks],
        }

    # --- derived values of the current cycle (pure) ------------------------------------------
    def tnext(self, t: int) -> int:
        """The next refresh request cycle after cycle t: (floor(t / tREFI) + 1) * tREFI."""
        r = self.t.tREFI
        return (t // r + 1) * r

    def gate(self) -> bool:
        """True while the refresh gate is closed: some bank has ``ref_pend > 0`` or is
        ``refreshing`` (its outputs of the current cycle)."""
        return any(b.peek_refresh() != (0, 0) for b in self.banks)

    def busy(self) -> int:
        """``busy`` of the current cycle: bit b = executor b holds a scheduled command for
        this cycle or later."""
        return sum(1 << b for b, q in enumerate(self.sched) if q)

    def _miss(self, banks, t: int):
        """Row miss on ``banks`` issued in cycle t: (list of (bank, PRE cycle), ACT cycle
        ``ta`` by the ACT rule).  Pure."""
        tm = self.t
        pres, ta0 = [], NEG
        for b in banks:
            if self.open[b]:
                pc = max(t + 1, self.A[b] + tm.tRAS, self.Lc[b] + tm.tRTP)
                pres.append((b, pc))
                ta0 = max(ta0, pc + tm.tRP)
            else:
                ta0 = max(ta0, t + 1, self.P[b] + tm.tRP)
        ta = max(ta0, self.acts[-1] + tm.tRRDS, self.acts[0] + tm.tFAW,
                 max(self.A[b] + tm.tRC for b in banks))
        return pres, ta

    def _hit(self, banks, s: int) -> bool:
        return all(self.open[b] and self.row[b] == s for b in banks)

    def _banks(self, e) -> list:
        return list(range(self.B)) if e[10] else [e[1]]

    # --- issue rules (registers at t; pure) --------------------------------------------------
    def can_io(self, e, out_free: bool) -> bool:
        """The DRAM resource condition of I/O queue head ``e`` (a channel queue entry) in the
        current cycle; ``out_free``: the out register can be loaded (``~out_valid |
        out.ready``)."""
        t = self.now
        if t < self.ioready:
            return False
        op = e[0]
        if op == _WR_INP:
            return True
        if op == _RD_OUT:
            return out_free and (t >= self.colhi
                                 or (t >= self.colprev and t + self.nR <= self.collo))
        b = e[1]
        if t < self.R[b] or self.gate():
            return False
        return self._miss([b], t)[1] < self.tnext(t)

    def can_mac(self, e) -> bool:
        """The DRAM resource condition of compute queue head ``e`` (MAC, or MAC_AB if
        ``e[10]``) in the current cycle, given that no WR_W issues in it."""
        t = self.now
        banks = self._banks(e)
        if any(t < self.R[b] for b in banks) or self.gate():
            return False
        return self._hit(banks, e[2]) or self._miss(banks, t)[1] < self.tnext(t)

    # --- one cycle of the executors and banks ------------------------------------------------
    def cycle(self, gbuf) -> tuple[int, int, list]:
        """Present this cycle's commands (scheduled ones; the refresh close PRE) to the banks
        and step them.  ``gbuf``: the channel's GBuf as in this cycle (the column MACs' input
        slices).  Returns (busy, err, results): the ``busy`` and ``err`` outputs of the
        channel and the banks' ``res`` beats as (bank, payload)."""
        t, K, xk = self.now, self.K, self._xk
        busy, err = 0, self._held             # a command held by its bank in cycle t-1
        self._held = 0
        results, presented, outs = [], [], []
        for b, bank in enumerate(self.banks):
            q = self.sched[b]
            valid = pay = 0
            close = False
            if q:
                busy |= 1 << b
                if q[0][0] == t:
                    _, pay, g, k = q.popleft()
                    if g >= 0:
                        pay |= ((gbuf[g] >> (8 * K * k)) & xk) << self._o_data
                    valid = 1
                else:
                    assert q[0][0] > t, f"bank {b}: command of cycle {q[0][0]} missed at {t}"
            elif self.open[b] and bank.peek_refresh()[0]:
                valid, pay, close = 1, _PRE, True
            o = bank.step(valid, pay)
            outs.append(o)
            if valid:
                presented.append((b, pay & 7, pay, o.cmd_ready))
                if close:
                    if o.cmd_ready:
                        self.open[b], self.P[b] = 0, t
                        self.closes[b] += 1
                elif not o.cmd_ready:          # dropped; err[0] in cycle t+1
                    self.violations.append((t, b, _OP_NAMES[pay & 7]))
                    self._held = 1
            if o.err:
                err |= 1
            if o.ref_lost:
                err |= 2
            if o.res_valid:
                results.append((b, o.res_payload))
        self.presented, self.last_outs = presented, outs
        return busy, err, results

    # --- schedules of issued commands ---------------------------------------------------------
    def _done_at(self, edge: int, seq: int) -> None:
        self._dones.setdefault(edge, []).append(seq)
        self.n_pending += 1

    def _act(self, banks, ta: int) -> None:
        self.acts.append(ta)
        for b in banks:
            self.A[b] = ta

    def _col_slot(self, first: int, end: int) -> None:
        self.colprev, self.collo, self.colhi = self.colhi, first, end

    def issue_io(self, e, seq: int) -> None:
        """I/O command ``e`` (id ``seq``) issued in the current cycle t: its bus slot, its
        schedule (WR_W) and its delayed done bit."""
        t, tm = self.now, self.t
        op = e[0]
        if op == _WR_INP:
            self.ioready = t + self.nI
            self._done_at(t + self.nI - 1, seq)             # visible from t + nI
            return
        if op == _RD_OUT:
            self.ioready = self.rdend = t + self.nR
            self._done_at(t + self.nR - 1, seq)             # visible from t + nR
            return
        b, s = e[1], e[2]
        col = e[3] & (self.C - 1)
        self.ioready = t + self.nW
        pres, ta = self._miss([b], t)
        q = self.sched[b]
        for _, pc in pres:
            q.append((pc, _PRE, -1, 0))
        self._act([b], ta)
        q.append((ta, _ACT | s << self._o_row, -1, 0))
        w = max(ta + tm.tRCDWR, self.colhi, self.rdend)
        self._col_slot(w, w + tm.tCCDS)
        q.append((w, _WR | col << self._o_col | (e[7] & self._burst) << self._o_data, -1, 0))
        pc = max(ta + tm.tRAS, w + tm.wr_to_pre)
        q.append((pc, _PRE, -1, 0))
        self.open[b], self.P[b], self.R[b] = 0, pc, pc + 1
        self._done_at(pc, seq)                              # visible from p + 1

    def issue_mac(self, e) -> int:
        """MAC / MAC_AB ``e`` issued in the current cycle t (after any I/O issue of t, so
        ``rdend`` is the contract's rdend'): the schedule of its banks.  Returns ℓ, the
        cycle of its last column (its result beat is in cycle ℓ + 1)."""
        t, tm, C = self.now, self.t, self.C
        banks = self._banks(e)
        s, g, o, acc = e[2], e[4], e[5], e[6]
        if self._hit(banks, s):
            f = max(t + 1, max(self.Lc[b] for b in banks) + tm.tCCDL, self.colhi, self.rdend)
        else:
            pres, ta = self._miss(banks, t)
            for b, pc in pres:
                self.sched[b].append((pc, _PRE, -1, 0))
                self.P[b] = pc
            self._act(banks, ta)
            for b in banks:
                self.sched[b].append((ta, _ACT | s << self._o_row, -1, 0))
                self.open[b], self.row[b] = 1, s
            f = max(ta + tm.tRCDRDMAC, self.colhi, self.rdend)
        last = f + (C - 1) * tm.tCCDL
        base = _MAC | o << self._o_dst
        for k in range(C):
            pl = (base | k << self._o_col | (acc if k == 0 else 1) << self._o_acc
                  | (k == C - 1) << self._o_last)
            for b in banks:
                self.sched[b].append((f + k * tm.tCCDL, pl, g, k))
        for b in banks:
            self.Lc[b] = self.R[b] = last
        self._col_slot(f, last + (tm.tCCDL if e[10] else tm.tCCDS))
        return last

    def dones(self) -> list:
        """The ids whose delayed done bit is set at the edge ending the current cycle; then
        advance to the next cycle."""
        ss = self._dones.pop(self.now, [])
        self.n_pending -= len(ss)
        self.now += 1
        return ss
