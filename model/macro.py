"""Cycle-exact golden model of the DIMC macro, written from docs/macro.md (not from the HDL).

``MacroModel.step`` takes one cycle's inputs, returns that cycle's outputs (computed from the
registers at the start of the cycle and the inputs, i.e. before the clock edge) and then
applies the clock edge that ends the cycle.  ``run`` drives the model alone with the driver
rules of model/stimulus.py and returns a :class:`model.trace.Trace` equal to the one the
Verilator harness writes for the RTL.

Speed: a request's input vector is decoded once, when it is accepted, into a bit-plane matrix
planes[X, n_in] (row j = bit X-1-j, MSB first), and all X partial sums psum[X, n_out] =
planes @ W[set] plus the X successive accumulator values are computed right then (two tiny
float64 BLAS products; exact, all magnitudes < 2**53).  This is cycle-exact: the contract
computes the psum of cycle t from W[cur_set] *as it is in cycle t*, but W[cur_set] cannot
change while the request is issuing - a write to the set the issue stage is busy on is a
hazard and is dropped - and a write accepted in the same cycle as the request lands at that
same edge, before the precompute (the edge applies the weight write first).  Pipeline stages
and the accumulator register then just hold references (request, bit index j).
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from model.interface import check_inputs
from model.numerics import pack_signed, unpack_signed
from spec.params import MacroErr, MacroParams, check_int, check_word, req_fields, res_fields, \
    width, wr_fields
from model.stimulus import TAIL, Source, Stimulus, ready_pattern
from model.trace import Trace

__all__ = ["MacroModel", "MacroOut"]

MacroOut = namedtuple("MacroOut", "wr_ready req_ready res_valid res_payload err busy")
MacroOut.__doc__ = "Outputs of the macro during one cycle (before the clock edge)."


class _Req:
    """A latched request: x, set, acc flag, dst, and its precomputed per-bit psum / acc."""
    __slots__ = ("set", "accflag", "dst", "x", "psum")

    def __init__(self, set_, accflag, dst, x, psum):
        self.set, self.accflag, self.dst, self.x, self.psum = set_, accflag, dst, x, psum


class MacroModel:
    """Cycle-exact model of one DIMC macro (ports as in docs/macro.md).

    ``late`` is fault injection: the result path gets ``late`` extra pipeline stages, so
    ``res.valid`` rises ``late`` cycles later than the contract (throughput unchanged).

    ``inputs``: names and widths (bits) of :meth:`step`'s arguments (a
    :class:`model.interface.GoldenModel`).
    """

    def __init__(self, params: MacroParams, *, late: int = 0):
        if not isinstance(params, MacroParams):
            raise ValueError(f"MacroModel: params={params!r} is not a MacroParams")
        self.late = late = check_int("MacroModel: late", late, 0)
        p = self.params = params
        self._X, self._Xm1 = p.x_bits, p.x_bits - 1
        self._depth = p.tree_stages + late          # stages between issue and accumulator
        self._A = p.acc_width
        self._half, self._mask = np.int64(1 << (self._A - 1)), np.int64((1 << self._A) - 1)
        self._dfield = (1 << (p.n_out * p.w_bits)) - 1
        self._dbytes = (p.n_out * p.w_bits + 7) // 8
        wf, rf, of = wr_fields(p), req_fields(p), res_fields(p)
        self._wbits, self._rbits = width(wf), width(rf)
        self.inputs = (("wr_valid", 1), ("wr_payload", self._wbits), ("req_valid", 1),
                       ("req_payload", self._rbits), ("res_ready", 1))
        self._wrow_off, self._wrow_mask = wf["row"].offset, (1 << wf["row"].width) - 1
        self._wset_off, self._wset_mask = wf["set"].offset, (1 << wf["set"].width) - 1
        self._rset_off, self._rset_mask = rf["set"].offset, (1 << rf["set"].width) - 1
        self._racc_off = rf["acc"].offset
        self._rdst_off, self._rdst_mask = rf["dst"].offset, (1 << rf["dst"].width) - 1
        self._odst_off = of["dst"].offset
        X = p.x_bits
        # LUT[code] = the X bits of an X-bit input code, MSB first (column j = issued bit j)
        codes = np.arange(1 << X)
        bits = ((codes[:, None] >> np.arange(X - 1, -1, -1)) & 1).astype(np.float64)
        self._xfield = (1 << (p.n_in * X)) - 1
        self._xbytes = (p.n_in * X + 7) // 8
        # acc after beat j = sum_i L[j, i] * psum[i]:  acc0 = -psum0, acc_j = 2 acc_{j-1} + psum_j
        L = np.zeros((X, X))
        for j in range(X):
            for i in range(j + 1):
                L[j, i] = float(1 << (j - i)) * (-1.0 if i == 0 else 1.0)
        self._L = L
        self._coef = np.ascontiguousarray(L[X - 1])       # final acc = coef @ psum
        # float32 is exact here: psum magnitudes <= n_in * 2**(w_bits-1) <= 2**17 < 2**24
        self._lut = np.ascontiguousarray(bits.astype(np.float32))
        self.reset()

    # --- state ------------------------------------------------------------------------------
    def reset(self, power_up: bool = False) -> None:
        """``rst``: clear every register except the weight SRAM; ``power_up`` zeroes it too."""
        power_up = check_word("reset: power_up", power_up, 1)
        p = self.params
        self.cycle = 0
        if power_up or not hasattr(self, "_W"):   # weight SRAM: 0 at power-up, kept by rst
            self._W = np.zeros((p.n_sets, p.n_in, p.n_out), dtype=np.float32)   # exact ints
        self._y = np.zeros((p.n_acc, p.n_out), dtype=np.int64)
        self._busy, self._k = 0, 0
        self._cur = _Req(0, 0, 0, np.zeros(p.n_in, dtype=np.uint8),
                         np.zeros((self._X, p.n_out), dtype=np.float32))
        self._pipe = [None] * self._depth                    # stage 0 = next to issue stage
        self._accref = None                                  # (req, j) held by acc; None = 0
        self._res_valid, self._res_payload = 0, 0
        self._res_y, self._res_dst = np.zeros(p.n_out, dtype=np.int64), 0
        self._err = 0

    def _wrap(self, v: np.ndarray) -> np.ndarray:
        return ((v + self._half) & self._mask) - self._half

    def _signed_x(self, codes: np.ndarray) -> np.ndarray:
        v = codes.astype(np.int64)
        return v - ((v >> (self._X - 1)) << self._X)

    def state(self) -> dict:
        """Snapshot of all architectural state (copies).

        Don't-care fields are shown as 0, so two snapshots compare exactly with
        :func:`model.interface.state_diff`: ``k`` when not busy, and every field but
        ``valid`` of an invalid pipeline stage.
        """
        p, X = self.params, self._X
        pipe = []
        for b in self._pipe:
            if b is None:
                pipe.append({"valid": 0, "first": 0, "last": 0, "accflag": 0, "dst": 0,
                             "psum": np.zeros(p.n_out, dtype=np.int64)})
            else:
                r, j = b
                pipe.append({"valid": 1, "first": int(j == 0), "last": int(j == X - 1),
                             "accflag": r.accflag, "dst": r.dst,
                             "psum": r.psum[j].astype(np.int64)})
        if self._accref is None:
            acc = np.zeros(p.n_out, dtype=np.int64)
        else:
            r, j = self._accref
            acc = self._wrap((self._L[j] @ r.psum).astype(np.int64))
        c = self._cur
        return {
            "cycle": self.cycle,
            "W": self._W.astype(np.int64),
            "y": self._y.copy(),
            "busy": self._busy, "k": self._k if self._busy else 0,
            "cur_set": c.set, "cur_acc": c.accflag, "cur_dst": c.dst, "cur_x": self._signed_x(c.x),
            "pipe": pipe,
            "acc": acc,
            "res_valid": self._res_valid, "res_payload": self._res_payload,
            "res_y": self._res_y.copy(), "res_dst": self._res_dst,
            "err": self._err,
        }

    # --- one cycle -------------------------------------------------------------------------
    def _accept(self, payload: int) -> _Req:
        p = self.params
        b = np.frombuffer((payload & self._xfield).to_bytes(self._xbytes, "little"), np.uint8)
        if self._X == 4:
            codes = np.empty(2 * b.size, dtype=np.uint8)
            codes[0::2] = b & 15
            codes[1::2] = b >> 4
            codes = codes[:p.n_in]
        else:
            codes = b
        s = (payload >> self._rset_off) & self._rset_mask
        psum = self._lut.take(codes, axis=0).T @ self._W[s]    # planes[X, n_in] @ W[set]
        # x is kept as unsigned codes (state() sign-extends); accumulator values are derived
        # from psum on demand (final value at fin, intermediate ones in state())
        return _Req(s, (payload >> self._racc_off) & 1,
                    (payload >> self._rdst_off) & self._rdst_mask, codes, psum)

    def peek_req_ready(self, res_ready: int) -> int:
        """``req.ready`` of the current cycle without stepping (pure): it depends only on the
        registers and ``res_ready`` (same expression as in :meth:`step`)."""
        if self._depth:
            beat = self._pipe[-1]
        else:
            beat = (self._cur, self._k) if self._busy else None
        fin = beat is not None and beat[1] == self._Xm1
        if fin and self._res_valid and not res_ready:
            return 0
        return 0 if (self._busy and self._k != self._Xm1) else 1

    def step(self, wr_valid, wr_payload, req_valid, req_payload, res_ready) -> MacroOut:
        """Outputs of this cycle for these inputs, then the clock edge ending the cycle.

        Every input is an unsigned int of its port's width (``inputs``; valid/ready 0 or 1,
        a bool is fine there); anything else is a ValueError naming it, raised before any
        register changes.
        """
        try:        # cheap inline check; check_inputs names the culprit
            ok = (type(wr_payload) is int and type(req_payload) is int
                  and not (wr_payload >> self._wbits | req_payload >> self._rbits
                           | (wr_valid | req_valid | res_ready) >> 1))
        except TypeError:
            ok = False
        if not ok:
            wr_valid, wr_payload, req_valid, req_payload, res_ready = check_inputs(
                self.inputs, (wr_valid, wr_payload, req_valid, req_payload, res_ready))
        return self._step(wr_valid, wr_payload, req_valid, req_payload, res_ready)

    def _step(self, wr_valid, wr_payload, req_valid, req_payload, res_ready) -> MacroOut:
        """:meth:`step` without the input check (callers that build valid inputs)."""
        busy, k, cur, Xm1 = self._busy, self._k, self._cur, self._Xm1
        # --- combinational: the beat at the accumulator stage, fin, stall, ready
        if self._depth:
            beat = self._pipe[-1]
        else:
            beat = (cur, k) if busy else None
        fin = beat is not None and beat[1] == Xm1
        res_valid = self._res_valid
        stall = fin and res_valid and not res_ready
        req_ready = 0 if stall or (busy and k != Xm1) else 1
        out = MacroOut(1, req_ready, res_valid, self._res_payload, self._err, busy)

        # --- clock edge.  Weight write first (every wr beat: wr.ready is always 1); hazard
        # check uses busy/cur_set of this cycle.  Applied before a request accept below so a
        # same-cycle write lands before that request's psums are computed.
        if wr_valid:
            row = (wr_payload >> self._wrow_off) & self._wrow_mask
            s = (wr_payload >> self._wset_off) & self._wset_mask
            if row >= self.params.n_in:
                self._err = MacroErr.WR_BAD_ROW.value
            elif busy and s == cur.set:
                self._err = MacroErr.WR_HAZARD.value
            else:
                if self.params.w_bits == 8:      # fast path: the data bytes are int8 weights
                    self._W[s, row] = np.frombuffer(
                        (wr_payload & self._dfield).to_bytes(self._dbytes, "little"), np.int8)
                else:
                    self._W[s, row] = unpack_signed(wr_payload, self.params.n_out, 4)
                self._err = 0
        else:
            self._err = 0

        if not stall:   # (stall implies res_ready == 0: no res handshake either)
            if beat is not None:
                self._accref = beat
                if fin:
                    r = beat[0]
                    # one tile never wraps (acc_width covers n_in * min_x * min_w), so only
                    # the accumulate needs the modulo 2**A wrap
                    new = (self._coef @ r.psum).astype(np.int64)
                    if r.accflag:
                        new = self._wrap(new + self._y[r.dst])
                    self._y[r.dst] = new
                    self._res_y, self._res_dst = new, r.dst
                    self._res_payload = pack_signed(new, self._A) | (r.dst << self._odst_off)
                    self._res_valid = 1
                elif res_valid and res_ready:
                    self._res_valid = 0
            elif res_valid and res_ready:
                self._res_valid = 0
            if self._depth:
                self._pipe.pop()
                self._pipe.insert(0, (cur, k) if busy else None)
            if req_valid and req_ready:
                self._cur = self._accept(req_payload)
                self._busy, self._k = 1, 0
            elif busy:
                self._k = k + 1
                if k == Xm1:
                    self._busy = 0
        self.cycle += 1
        return out

    # --- stand-alone trace run ---------------------------------------------------------------
    def run(self, stim: Stimulus, max_cycles: int | None = None) -> Trace:
        """Reset, then drive the model with ``stim`` under the model/stimulus.py driver rules.

        ``max_cycles`` defaults to the harness's bound (tb/harness.cpp); hitting it ends the
        trace with status "timeout".  ValueError (before the reset) if ``stim`` is not a
        Stimulus of this configuration, a beat's payload is wider than its port, or
        ``max_cycles`` is not a positive int.
        """
        if not isinstance(stim, Stimulus):
            raise ValueError(f"run: stim={stim!r} is not a Stimulus")
        if stim.params != self.params:
            raise ValueError(f"run: stimulus params {stim.params.tag} != model params "
                             f"{self.params.tag}")
        if max_cycles is None:
            g = sum(b.gap for b in stim.wr) + sum(b.gap for b in stim.req)
            thr = stim.ready_threshold
            pr = 1.0 if thr >= 65536 else (thr / 65536.0 if thr else 1e-4)
            max_cycles = g + int((len(stim.wr) + len(stim.req) * 64) / pr) + 100000
        max_cycles = check_int("run: max_cycles", max_cycles, 1)
        for name, beats, w in (("wr", stim.wr, self._wbits), ("req", stim.req, self._rbits)):
            for i, b in enumerate(beats):
                if b.payload >> w:
                    check_word(f"run: stim.{name}[{i}].payload", b.payload, w)
        self.reset(power_up=True)
        wr, rq = Source(stim.wr), Source(stim.req)
        n_req, seed, thr = len(stim.req), stim.seed, stim.ready_threshold
        events = []
        ev = events.append
        step = self._step                   # inputs checked above
        n_wr = n_res = 0
        CH = 4096
        base, ready = 0, ready_pattern(seed, 0, CH, thr).tolist()
        done, end, status, c = False, 0, "ok", 0
        while True:
            if c - base >= CH:
                base = c
                ready = ready_pattern(seed, base, CH, thr).tolist()
            rr = ready[c - base]
            wv = wr.valid(c, n_res)
            rv = rq.valid(c, n_wr)
            o = step(wv, wr.payload, rv, rq.payload, rr)
            if wv and o[0]:
                ev((c, "wr", 0))
                wr.transferred(c)
                n_wr += 1
            if rv and o[1]:
                ev((c, "req", 0))
                rq.transferred(c)
            if rr and o[2]:
                ev((c, "res", o[3]))
                n_res += 1
            if o[4]:
                ev((c, "err", o[4]))
            if not done and wr.done and rq.done and n_res >= n_req:
                done, end = True, c + TAIL
            if done and c >= end:
                break
            if c + 1 >= max_cycles:
                status = "timeout"
                break
            c += 1
        return Trace(events, c + 1, status)
