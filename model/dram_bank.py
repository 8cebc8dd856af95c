"""Cycle-exact golden model of one DRAM-PIM bank, written from docs/dram_bank.md (not the HDL).

``DramBankModel.step`` takes one cycle's inputs (``cmd`` valid and payload), returns that
cycle's outputs (from the registers at the start of the cycle and the inputs, i.e. before the
clock edge) and then applies the clock edge that ends the cycle.  ``ready`` gives the same
cycle's ``cmd.ready`` for any payload without stepping (pure), as a channel issuing an
all-bank command needs.  ``step(..., rst=1)`` is a cycle with ``rst`` high: its outputs are
the normal ones, its edge only resets (``reset``); ``cycle`` counts cycles since the last reset.

State is kept as the contract's registers: the six timing down-counters, the refresh timer and
pending count, the row buffer, the accumulators, and two delivery queues (``rd`` beats due
tCL after their RD, ``res`` beats due one cycle after their MAC).  The cell array is numpy
``int8[rows, row_bytes]``; a MAC is a tiny int64 matrix-vector product (exact).
"""
from __future__ import annotations

from collections import deque, namedtuple

import numpy as np

from model.interface import check_inputs
from model.numerics import pack_signed
from spec.dram import DramBankParams, DramErr, DramOp, cmd_fields, res_fields
from spec.params import check_int, check_word, width

__all__ = ["DramBankModel", "DramOut"]

DramOut = namedtuple("DramOut", "cmd_ready res_valid res_payload rd_valid rd_payload err "
                                "ref_lost ref_pend refreshing open open_row")
DramOut.__doc__ = "Outputs of the bank during one cycle (before the clock edge)."

_ACT, _PRE, _MAC, _RD, _WR = (int(DramOp.ACT), int(DramOp.PRE), int(DramOp.MAC),
                              int(DramOp.RD), int(DramOp.WR))
_CACT, _CPRE, _CMAC, _CRD, _CWR, _CREF = range(6)
_CNAMES = ("c_act", "c_pre", "c_mac", "c_rd", "c_wr", "c_ref")


class DramBankModel:
    """Cycle-exact model of one DRAM-PIM bank (ports as in docs/dram_bank.md).

    Parameters
    ----------
    params : DramBankParams
        Geometry, accumulator and timing table of the bank.
    late : int, optional
        Fault injection: every ``res`` and ``rd`` beat is delivered ``late`` cycles after the
        contract's cycle (0: exact).  For checking that a lockstep checker sees it.

    ``inputs``: names and widths (bits) of :meth:`step`'s positional arguments (a
    :class:`model.interface.GoldenModel`).
    """

    def __init__(self, params: DramBankParams, *, late: int = 0):
        if not isinstance(params, DramBankParams):
            raise ValueError(f"DramBankModel: params={params!r} is not a DramBankParams")
        self.late = check_int("DramBankModel: late", late, 0)
        p = self.params = params
        t = p.timing
        f = cmd_fields(p)
        self._shift = {k: (v.offset, (1 << v.width) - 1) for k, v in f.items()}
        self._cmd_bits = width(f)
        self.inputs = (("cmd_valid", 1), ("cmd_payload", self._cmd_bits))
        self._dst_off = res_fields(p)["dst"].offset
        self._U, self._K, self._O, self._A = p.burst_bytes, p.n_x, p.n_out, p.acc_width
        self._half, self._amask = np.int64(1 << (self._A - 1)), np.int64((1 << self._A) - 1)
        # loads (gap - 1) of every event, per counter (None: the event does not load it)
        self._ld_act = (t.tRC - 1, t.tRAS - 1, t.tRCDRDMAC - 1, t.tRCDRD - 1, t.tRCDWR - 1)
        self._ld_col = (t.tRTP - 1, t.tCCDL - 1, t.tCCDL - 1, t.tRTW - 1)       # pre mac rd wr
        self._ld_wr = (t.wr_to_pre - 1, t.wr_to_rd - 1, t.wr_to_rd - 1, t.tCCDL - 1)
        self._ld_pre, self._ld_ref = t.tRP - 1, t.tRFC - 1
        self._tCL, self._tREFI = t.tCL, t.tREFI
        self.reset(power_up=True)

    # --- state ------------------------------------------------------------------------------
    def reset(self, power_up: bool = False) -> None:
        """``rst``: clear every register and the read delay line; keep the cell array unless
        ``power_up`` (then it is zeroed too, as at power-up)."""
        p = self.params
        if power_up or not hasattr(self, "_array"):
            self._array = np.zeros((p.rows, p.row_bytes), dtype=np.int8)
        self.cycle = 0
        self._open, self._row = 0, 0
        self._rowbuf = np.zeros(p.row_bytes, dtype=np.int8)
        self._acc = np.zeros((p.n_acc, p.n_out), dtype=np.int64)
        self._c = [0] * 6
        self._ref_timer, self._ref_pend = 0, 0
        self._rdq = deque()          # (due cycle, data) of RD beats in flight, in order
        self._resq = deque()         # (due cycle, payload) of res beats not yet delivered
        self._rd_last, self._res_last = 0, 0
        self._err, self._ref_lost = 0, 0

    def poke_row(self, row: int, data) -> None:
        """Back door (tests, preloading a memory image): set array row ``row`` to ``data``
        (row_bytes signed int8 values).  Does not touch the row buffer."""
        p = self.params
        row = check_int("poke_row: row", row, 0, p.rows - 1)
        a = np.asarray(data)
        if a.shape != (p.row_bytes,) or a.dtype.kind not in "iu" or a.size and (
                a.min() < -128 or a.max() > 127):
            raise ValueError(f"poke_row: data of shape {a.shape} dtype {a.dtype} must be "
                             f"{p.row_bytes} int8 values")
        self._array[row] = a.astype(np.int8)

    def state(self, array: bool = True) -> dict:
        """Snapshot of all architectural state (copies).  ``row`` and ``rowbuf`` are
        don't-cares while ``open`` is 0 and are shown as 0 then, so two snapshots compare
        exactly with :func:`model.interface.state_diff`; ``rd_pipe`` lists the RD beats in
        flight as (cycles until delivery, data)."""
        if self._open:
            row, rowbuf = self._row, self._rowbuf.astype(np.int64)
        else:
            row, rowbuf = 0, np.zeros(self.params.row_bytes, dtype=np.int64)
        s = {"cycle": self.cycle, "open": self._open, "row": row,
             "rowbuf": rowbuf, "acc": self._acc.copy(),
             "ref_timer": self._ref_timer, "ref_pend": self._ref_pend,
             "rd_pipe": [(d - self.cycle, v) for d, v in self._rdq],
             "res_pending": [(d - self.cycle, v) for d, v in self._resq],
             "rd_payload": self._rd_last, "res_payload": self._res_last,
             "err": self._err, "ref_lost": self._ref_lost}
        for name, v in zip(_CNAMES, self._c, strict=True):
            s[name] = v
        if array:
            s["array"] = self._array.astype(np.int64)
        return s

    # --- one cycle -------------------------------------------------------------------------
    def _code(self, op: int, row: int, col: int) -> int:
        """Rejection code of a command in the current state (0: legal)."""
        if op > _WR:
            return int(DramErr.BAD_OP)
        if op == _ACT:
            if row >= self.params.rows:
                return int(DramErr.BAD_ROW)
            return int(DramErr.ROW_OPEN) if self._open else 0
        if op == _PRE:
            return 0
        if col >= self.params.n_cols:
            return int(DramErr.BAD_COL)
        return 0 if self._open else int(DramErr.NOT_OPEN)

    def _decode(self, payload: int) -> tuple[int, int, int]:
        sh = self._shift
        return (payload & 7, (payload >> sh["row"][0]) & sh["row"][1],
                (payload >> sh["col"][0]) & sh["col"][1])

    def _ready(self, op: int, code: int) -> int:
        if code:
            return 1
        c = self._c
        if op == _ACT:
            return int(c[_CACT] == 0 and self._ref_pend == 0)
        if op == _PRE:
            return int(not self._open or c[_CPRE] == 0)
        return int(c[(_CMAC, _CRD, _CWR)[op - _MAC]] == 0)

    def ready(self, cmd_payload: int) -> int:
        """``cmd.ready`` of the current cycle for this payload (pure; independent of valid)."""
        payload = check_word("cmd_payload", cmd_payload, self._cmd_bits)
        op, row, col = self._decode(payload)
        return self._ready(op, self._code(op, row, col))

    def peek_refresh(self) -> tuple[int, int]:
        """(``ref_pend``, ``refreshing``) outputs of the current cycle (pure: registers only),
        for a channel that decides before stepping the bank."""
        return self._ref_pend, int(self._c[_CREF] != 0)

    def _load(self, idx, vals) -> None:
        c = self._c
        for i, v in zip(idx, vals, strict=True):
            if v > c[i]:
                c[i] = v

    def _mac(self, payload: int, col: int) -> None:
        sh = self._shift
        U, K = self._U, self._K
        dst = (payload >> sh["dst"][0]) & sh["dst"][1]
        accf = (payload >> sh["acc"][0]) & 1
        last = (payload >> sh["last"][0]) & 1
        data = (payload >> sh["data"][0]) & sh["data"][1]
        x = np.frombuffer(data.to_bytes(U, "little"), dtype=np.int8)[:K].astype(np.int64)
        w = self._rowbuf[col * U:(col + 1) * U].astype(np.int64).reshape(self._O, K)
        new = w @ x
        if accf:
            new = new + self._acc[dst]
        new = ((new + self._half) & self._amask) - self._half
        self._acc[dst] = new
        if last:
            self._resq.append((self.cycle + 1 + self.late,
                               pack_signed(new, self._A) | (dst << self._dst_off)))

    def step(self, cmd_valid, cmd_payload, rst=0) -> DramOut:
        """Outputs of this cycle for these inputs, then the clock edge ending the cycle (with
        ``rst`` = 1: the reset edge; a command presented in this cycle is lost).

        Every input is an unsigned int of its port's width (``inputs``; ``rst`` 1 bit;
        valid and rst 0 or 1, a bool is fine there); anything else is a ValueError naming it,
        raised before any register changes."""
        try:        # cheap inline check; check_inputs names the culprit
            ok = (type(cmd_payload) is int
                  and not (cmd_payload >> self._cmd_bits | (cmd_valid | rst) >> 1))
        except TypeError:
            ok = False
        if not ok:
            cmd_valid, cmd_payload = check_inputs(self.inputs, (cmd_valid, cmd_payload))
            rst = check_word("rst", rst, 1)
        payload = cmd_payload
        cyc, c = self.cycle, self._c
        op, row, col = self._decode(payload)
        code = self._code(op, row, col)
        ready = self._ready(op, code)
        start = (not self._open) and self._ref_pend > 0 and c[_CACT] == 0
        # --- outputs (registers at t)
        rdq, resq = self._rdq, self._resq
        rd_v = 1 if rdq and rdq[0][0] == cyc else 0
        rd_pay = rdq[0][1] if rd_v else self._rd_last
        res_v = 1 if resq and resq[0][0] == cyc else 0
        res_pay = resq[0][1] if res_v else self._res_last
        out = DramOut(ready, res_v, res_pay, rd_v, rd_pay, self._err, self._ref_lost,
                      self._ref_pend, int(c[_CREF] != 0), self._open, self._row)
        if rst:
            self.reset()
            return out
        # --- clock edge
        if rd_v:
            self._rd_last = rdq.popleft()[1]
        if res_v:
            self._res_last = resq.popleft()[1]
        for i in range(6):
            if c[i]:
                c[i] -= 1
        accept = cmd_valid and ready
        self._err = code if accept else 0
        if accept and not code:
            if op == _ACT:
                self._open, self._row = 1, row
                self._rowbuf = self._array[row].copy()
                self._load((_CACT, _CPRE, _CMAC, _CRD, _CWR), self._ld_act)
            elif op == _PRE:
                if self._open:
                    self._open = 0
                    self._load((_CACT,), (self._ld_pre,))
            elif op == _WR:
                U = self._U
                data = (payload >> self._shift["data"][0]) & self._shift["data"][1]
                b = np.frombuffer(data.to_bytes(U, "little"), dtype=np.int8)
                self._rowbuf[col * U:(col + 1) * U] = b
                self._array[self._row, col * U:(col + 1) * U] = b
                self._load((_CPRE, _CMAC, _CRD, _CWR), self._ld_wr)
            else:
                if op == _MAC:
                    self._mac(payload, col)
                else:
                    U = self._U
                    data = int.from_bytes(self._rowbuf[col * U:(col + 1) * U].tobytes(),
                                          "little")
                    rdq.append((cyc + self._tCL + self.late, data))
                self._load((_CPRE, _CMAC, _CRD, _CWR), self._ld_col)
        if start:
            self._load((_CACT, _CREF), (self._ld_ref, self._ld_ref))
        tick = self._ref_timer == self._tREFI - 1
        self._ref_timer = 0 if tick else self._ref_timer + 1
        n = self._ref_pend - start + tick
        self._ref_lost = int(n > self.params.ref_max)
        self._ref_pend = min(n, self.params.ref_max)
        self.cycle = cyc + 1
        return out

    # --- convenience ---------------------------------------------------------------------------
    def run_until_accepted(self, payload: int, limit: int = 1 << 20) -> tuple[int, DramOut]:
        """Hold ``payload`` valid from this cycle until it is accepted; return the accept
        cycle and that cycle's outputs.  RuntimeError after ``limit`` cycles."""
        for _ in range(limit):
            cyc = self.cycle
            o = self.step(1, payload)
            if o.cmd_ready:
                return cyc, o
        raise RuntimeError(f"run_until_accepted: not accepted within {limit} cycles")

