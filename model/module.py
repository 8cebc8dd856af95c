"""Cycle-exact golden model of the PIM module (hub): host FIFO, dispatcher, DPA page table,
loops and output merge, from docs/module.md (written from the contract only, not the HDL).

``ModuleModel.step`` takes one cycle's inputs, returns that cycle's outputs (from the registers
at the start of the cycle, the channels' outputs and the inputs) and applies the clock edge.
It instantiates ``n_ch`` :class:`model.channel.ChannelModel` s and steps each once per cycle.

``run`` drives a host program ``[(host_cmd, gap)]`` by the stream driver rules of
model/stimulus.py: command i is offered (``host_valid = 1``) from cycle ``t_free + gap_i``
(``t_free`` = 0, then the cycle after the previous transfer) until it transfers
(``host_valid & host_ready``).  Without ``host_ready`` the port is always ready: command i is
pushed in cycle ``t_{i-1} + 1 + gap_i`` and one pushed into a full FIFO is dropped (reported on
``ovf``); with ``host_ready`` a command waits while the FIFO is full and is never dropped.
``out.ready`` is :func:`model.stimulus.ready_at` (seed, cycle, threshold).

The checks and the translation of host commands are in :mod:`model.hostcmd`.

Representation notes (for comparison with the HDL), see :meth:`ModuleModel.state`:

* FIFO entries and ``lbuf`` entries are raw host command words (ints); ``lbuf`` resets to 0.
* a page-table entry is ``(valid, rid, pp)``; UNMAP clears only ``valid`` (rid/pp kept).
* ``mode`` is a :class:`spec.isa.LoopMode`; loop registers not in use keep their last values.
"""
from __future__ import annotations

from collections import deque, namedtuple
from dataclasses import dataclass, field

from model.channel import ChannelModel
from model.hostcmd import HostCmd
from model.module_sm import SmHub
from model.interface import check_inputs
from spec.isa import HostOp, LoopMode, ModuleParams, host_fields, mod_out_fields
from spec.params import check_int, check_word, width
from model.stimulus import TAIL, check_program, ready_at, ready_threshold

__all__ = ["ModuleModel", "ModOut", "ModuleRun"]

ModOut = namedtuple("ModOut", "out_valid out_payload err ovf err_count idle busy host_ready "
                              "sm_valid sm_payload sm_err perr perr_ch",
                   defaults=(0, 0, 0, 0, 0))
ModOut.__doc__ = """Outputs of the module during one cycle (before the clock edge).
``host_ready``: the host port's ready (FIFO not full at the start of the cycle) with
``ModuleParams.host_ready``; constant 1 without it (the port has no ready: it always takes a
push, and drops it if the FIFO is full).  ``sm_valid``, ``sm_payload``, ``sm_err``: the
``sm_res`` stream and the ``sm_err`` output (``ModuleParams.softmax``; 0 without it).
``perr``, ``perr_ch``: with ``channel.post``, the OR of the channels' ``perr`` (a WR_SCALE's
PostErr) and the channels whose ``perr`` is non-zero (bit c), in this cycle; 0 without it."""

_NONE, _CAPTURE, _REPLAY = LoopMode.NONE, LoopMode.CAPTURE, LoopMode.REPLAY
_ERR_MAX = (1 << 16) - 1
_OFF_MASK = (1 << 24) - 1        # vp_off / o_off registers (24 bits)
_TRIP_MASK = (1 << 17) - 1

_MAP, _UNMAP, _SET_TOK, _LOOP, _BARRIER = (int(HostOp.MAP), int(HostOp.UNMAP),
                                           int(HostOp.SET_TOK), int(HostOp.LOOP),
                                           int(HostOp.BARRIER))
_SM_CFG, _SM_ABORT, _RD_OUT, _RD_SM, _WR_PROB = (int(HostOp.SM_CFG), int(HostOp.SM_ABORT),
                                                 int(HostOp.RD_OUT), int(HostOp.RD_SM),
                                                 int(HostOp.WR_PROB))


@dataclass
class ModuleRun:
    """Result of :meth:`ModuleModel.run`.

    cycles       cycles simulated: the first cycle c in which every command had been pushed in
                 a cycle < c, ``idle`` = 1 and ``out_valid`` = 0, plus TAIL, plus 1
    outs         module out payloads (``mod_out_fields``) in transfer order
    out_cycles   the cycle of each transfer
    errs         (cycle, code): cycles in which the ``err`` output was non-zero (the rejection
                 happened in cycle - 1)
    ovfs         cycles in which ``ovf`` was 1 (the dropped push was in cycle - 1)
    dropped      indices of commands whose push was dropped (from ``ovf``; always empty with
                 ``host_ready``)
    push_cycles  the cycle each command was pushed in (transferred: valid & ready)
    busy_cycles  per (channel, bank), index c*n_banks + b: cycles with that busy bit set
    chan_errs    (cycle, channel, code): non-zero channel ``err`` outputs (never expected)
    status       "ok", "deadlock" (no progress for stall_limit cycles) or "timeout"
    host_stalls  cycles in which a command was offered and ``host_ready`` was 0
    perrs        (cycle, perr, perr_ch): cycles with a non-zero ``perr`` (channel.post)
    """
    params: ModuleParams
    cycles: int
    outs: list = field(repr=False)
    out_cycles: list = field(repr=False)
    errs: list
    ovfs: list
    dropped: list
    push_cycles: list = field(repr=False)
    busy_cycles: list = field(default_factory=list)
    chan_errs: list = field(default_factory=list)
    status: str = "ok"
    err_count: int = 0
    host_stalls: int = 0
    sm_res: list = field(default_factory=list, repr=False)   # (cycle, payload) of sm_res
    sm_errs: list = field(default_factory=list)               # (cycle, code) of sm_err
    perrs: list = field(default_factory=list)    # (cycle, perr, perr_ch) (channel.post)

    @property
    def utilisation(self) -> float:
        nb = len(self.busy_cycles)
        return sum(self.busy_cycles) / (self.cycles * nb) if nb else 0.0

    def err_codes(self) -> list[int]:
        return [c for _, c in self.errs]


class ModuleModel:
    """Cycle-exact model of one PIM module (ports and behaviour as in docs/module.md).

    ``inputs``: names and widths (bits) of :meth:`step`'s arguments (a
    :class:`model.interface.GoldenModel`; ``sm_ready``, the ``sm_res`` stream's ready, only
    with ``softmax``).  ``sm_table``: a (deliberately wrong) exp table for the softmax unit.
    """

    def __init__(self, params: ModuleParams, sm_table=None):
        if not isinstance(params, ModuleParams):
            raise ValueError(f"ModuleModel: params={params!r} is not a ModuleParams")
        p = self.params = params
        cp = p.channel
        self.channels = [ChannelModel(cp) for _ in range(p.n_ch)]
        self._hc = HostCmd(p)
        self._hbits = width(host_fields(p))
        self.inputs = (("host_valid", 1), ("host_cmd", self._hbits), ("out_ready", 1))
        self._sm = SmHub(p, table=sm_table) if p.softmax else None
        if self._sm is not None:
            self.inputs += (("sm_ready", 1),)
        self._chan_off = mod_out_fields(p)["chan"].offset
        self._V, self._R, self._F, self._L = p.n_vpages, p.n_req, p.fifo_depth, p.loop_len
        self._C, self._B = p.n_ch, cp.n_banks
        self._hr = p.host_ready
        self._post = p.post
        self.reset()

    # --- state ----------------------------------------------------------------------------
    def reset(self, power_up: bool = False) -> None:
        """``rst``: every register (channels: all but weight SRAM and GBuf data).
        ``power_up`` clears those too."""
        power_up = check_word("reset: power_up", power_up, 1)
        self.cycle = 0
        self.consumed = 0             # commands consumed since reset (statistics, not a register)
        for ch in self.channels:
            ch.reset(power_up=power_up)
        if self._sm is not None:
            self._sm.reset(power_up=power_up)
        self._fifo = deque()
        self._pt = [(0, 0, 0)] * self._V
        self._tok = [0] * self._R
        self._mode = _NONE
        self._n = self._trip = self._vps = self._os = 0
        self._cap = self._idx = self._iter = 0
        self._vp_off = self._o_off = 0
        self._lbuf = [0] * self._L
        self._out_valid, self._out_payload = 0, 0
        self._err, self._ovf, self._err_count = 0, 0, 0

    def state(self) -> dict:
        """Snapshot of all architectural state (copies); ``channels`` = each
        :meth:`ChannelModel.state`."""
        return {
            "cycle": self.cycle,
            "fifo": list(self._fifo),
            "pt": list(self._pt),
            "tok": list(self._tok),
            "loop": {"mode": self._mode, "n": self._n, "trip": self._trip, "vps": self._vps,
                     "os": self._os, "cap": self._cap, "idx": self._idx, "iter": self._iter,
                     "vp_off": self._vp_off, "o_off": self._o_off},
            "lbuf": list(self._lbuf),
            "out_valid": self._out_valid, "out_payload": self._out_payload,
            "err": self._err, "ovf": self._ovf, "err_count": self._err_count,
            "channels": [ch.state() for ch in self.channels],
        }

    def fields(self, word: int) -> dict[str, int]:
        """Decode a host command word (``host_fields``)."""
        return self._hc.fields(word)

    @property
    def idle(self) -> int:
        """The ``idle`` output of the current cycle (pure)."""
        return int(not self._fifo and self._mode == _NONE and not self._out_valid
                   and all(ch.peek_idle() and not ch.peek_out_valid() for ch in self.channels)
                   and (self._sm is None or self._sm.idle))

    def check(self, f: dict, replay: bool) -> int:
        """Validation of docs/module.md (checks 1-5) of decoded command ``f`` whose ``vp``/``o``
        are already offset, against the current page table; returns the ModErr code
        (0 = passes).  Pure (:meth:`model.hostcmd.HostCmd.check`)."""
        return self._hc.check(f, replay, self._pt, self._tok)

    # --- one cycle ------------------------------------------------------------------------
    def step(self, host_valid: int, host_cmd: int, out_ready: int, sm_ready: int = 1) -> ModOut:
        """Outputs of this cycle for these inputs, then the clock edge ending the cycle.

        Every input is an unsigned int of its port's width (``inputs``; valid/ready 0 or 1,
        a bool is fine there); anything else is a ValueError naming it, raised before any
        register changes.  Every host word of that width is defined (docs/module.md: bad
        opcodes and fields are rejected with an ``err`` code).  With ``host_ready``, a
        ``host_valid`` in a cycle whose ``host_ready`` output is 0 transfers nothing.
        """
        try:        # cheap inline check; check_inputs names the culprit
            ok = (type(host_cmd) is int
                  and not (host_cmd >> self._hbits | (host_valid | out_ready) >> 1))
        except TypeError:
            ok = False
        if self._sm is not None:
            ok = ok and sm_ready in (0, 1)
        if not ok:
            args = (host_valid, host_cmd, out_ready) + ((sm_ready,) if self._sm else ())
            host_valid, host_cmd, out_ready, *rest = check_inputs(self.inputs, args)
            sm_ready = rest[0] if rest else 1
        return self._step(host_valid, host_cmd, out_ready, sm_ready)

    def _step(self, host_valid: int, host_cmd: int, out_ready: int,
              sm_ready: int = 1) -> ModOut:
        """:meth:`step` without the input check (callers that build valid inputs)."""
        chans, C = self.channels, self._C
        sm = self._sm
        fifo = self._fifo
        mode = self._mode
        out_valid, out_payload = self._out_valid, self._out_payload
        ch_idle = [ch.peek_idle() for ch in chans]
        idle = int(not fifo and mode == _NONE and all(ch_idle) and not out_valid
                   and not any(ch.peek_out_valid() for ch in chans)
                   and (sm is None or sm.idle))
        sm_cmd = None                 # the unit command offered in this cycle

        # ---- dispatch decision (registers at t)
        # action: None (nothing consumed) | "cap" | "rej" | "exec"
        action, code, f, ch_valid, ch_cmds = None, 0, None, 0, None
        hc = self._hc
        if mode == _CAPTURE:
            if fifo:
                action = "cap"
        else:
            if mode == _REPLAY:
                f = hc.fields(self._lbuf[self._idx])
                f["vp"] += self._vp_off
                f["o"] += self._o_off
            elif fifo:
                f = hc.fields(fifo[0])
            if f is not None:
                code = hc.check(f, mode == _REPLAY, self._pt, self._tok)
                op = f["op"]
                if code:
                    action = "rej"
                elif op == _BARRIER:
                    if all(ch_idle):
                        action = "exec"
                elif op in hc.ch_ops:
                    cop = hc.chan_op(op)
                    cm = f["chmask"]
                    if all(chans[c].peek_cmd_ready(cop) for c in range(C) if cm >> c & 1) \
                            and (sm is None or sm.may_dispatch(op, cm)):
                        if op == _WR_PROB:
                            f["data"] = sm.tile_data()
                        action, ch_valid, ch_cmds = "exec", cm, hc.chan_cmds(f, self._pt)
                elif sm is not None and op in (_SM_CFG, _SM_ABORT):
                    sm_cmd = sm.cmd_word(f, self._tok)      # offered; consumed if taken
                    if sm.cmd_ready(sm_cmd):
                        action = "exec"
                else:
                    action = "exec"

        # ---- output merge decision
        take = -1
        if not out_valid or out_ready:
            for c in range(C):
                if chans[c].peek_out_valid() and (sm is None or not sm.dest(c)):
                    take = c
                    break
        src = sm_take = -1            # the channel whose beat goes to the unit (if taken)
        if sm is not None:
            src = sm.in_source(chans)
            if src >= 0 and sm.unit.peek_in_ready():
                sm_take = src

        # ---- step the channels (their outputs of this cycle, then their edge)
        busy, nb = 0, self._B
        ch_out = []
        for c, ch in enumerate(chans):
            v = ch_valid >> c & 1
            o = ch._step(v, ch_cmds[c] if v else 0, int(c == take or c == sm_take))
            busy |= o.busy << (c * nb)
            ch_out.append(o)
            # the peeks must agree with the channel's own outputs
            assert o.idle == ch_idle[c] and (not v or o.cmd_ready) \
                and (c != take or o.out_valid), f"channel {c} peek mismatch at {self.cycle}"
        self.last_chan_outs = ch_out
        perr = perr_ch = 0
        if self._post:              # the channels' PostErr of this cycle (channel.post)
            for c, ch in enumerate(chans):
                perr |= ch.perr
                perr_ch |= int(ch.perr != 0) << c
        room = len(fifo) < self._F            # at t, before this cycle's pop
        host_ready = int(room) if self._hr else 1
        if sm is not None:
            wr_prob = action == "exec" and f["op"] == _WR_PROB
            so = sm.step(sm_cmd is not None, sm_cmd or 0, src, ch_out, wr_prob, sm_ready)
            assert (sm_cmd is None or so.cmd_ready == (action == "exec")) \
                and (src < 0 or so.in_ready == (sm_take >= 0)), "unit peek mismatch"
            out = ModOut(out_valid, out_payload, self._err, self._ovf, self._err_count, idle,
                         busy, host_ready, so.res_valid, so.res_payload, so.in_err)
            # destination FIFOs: beats taken in this cycle, RD_OUT / RD_SM dispatched
            pushes = []
            if ch_valid and f["op"] in (_RD_OUT, _RD_SM):
                d = int(f["op"] == _RD_SM)
                pushes = [(c, d) for c in range(C) if ch_valid >> c & 1]
            sm.edge(pushes, [c for c in (take, sm_take) if c >= 0])
        else:
            out = ModOut(out_valid, out_payload, self._err, self._ovf, self._err_count, idle,
                         busy, host_ready, 0, 0, 0, perr, perr_ch)

        # ---- clock edge
        dropped = 0
        push = bool(host_valid) and room
        if host_valid and not room and not self._hr:
            dropped = 1
        # dispatch effects
        rejected = 0
        if action is not None:
            self.consumed += 1
        if action == "cap":
            self._lbuf[self._cap] = fifo.popleft()
            self._cap += 1
            if self._cap == self._n:
                if self._trip == 0:
                    self._mode = _NONE
                else:
                    self._mode = _REPLAY
                    self._idx = self._iter = 0
                    self._vp_off = self._o_off = 0
        elif action is not None:
            if action == "rej":
                rejected = 1
            else:
                op = f["op"]
                if op == _MAP:
                    self._pt[f["vp"]] = (1, f["rid"], f["pp"])
                elif op == _UNMAP:
                    _, r, pp = self._pt[f["vp"]]
                    self._pt[f["vp"]] = (0, r, pp)
                elif op == _SET_TOK:
                    self._tok[f["rid"]] = f["count"]
                elif op == _LOOP:
                    self._mode = _CAPTURE
                    self._cap = 0
                    self._n, self._vps, self._os = f["n"], f["vps"], f["os"]
                    per = f["per"]
                    self._trip = ((self._tok[f["rid"]] + (1 << per) - 1) >> per) & _TRIP_MASK
            # consumed
            if mode == _REPLAY:
                self._idx += 1
                if self._idx == self._n:
                    self._idx = 0
                    self._iter += 1
                    self._vp_off = (self._vp_off + self._vps) & _OFF_MASK
                    self._o_off = (self._o_off + self._os) & _OFF_MASK
                    if self._iter == self._trip:
                        self._mode = _NONE
            else:
                fifo.popleft()
        self._err = code if rejected else 0
        self._ovf = dropped
        self._err_count = min(_ERR_MAX, self._err_count + rejected + dropped)
        if push:
            fifo.append(host_cmd)
        # output register
        if take >= 0:
            self._out_payload = ch_out[take].out_payload | take << self._chan_off
            self._out_valid = 1
        elif out_ready:
            self._out_valid = 0
        self.cycle += 1
        return out

    # --- driver ---------------------------------------------------------------------------
    def run(self, cmds, out_ready_p: float = 1.0, seed: int = 0, *, power_up: bool = True,
            stall_limit: int = 20000, max_cycles: int | None = None) -> ModuleRun:
        """Reset (``power_up``: also weights/GBuf), then push ``cmds`` = [(host_cmd, gap)]
        (see the module docstring) with ``out.ready = ready_at(seed, c, thr)``.
        ValueError (before the reset) naming a malformed argument or command."""
        cmds = check_program(cmds, self._hbits, "run: cmds")
        thr = ready_threshold(out_ready_p, "run: out_ready_p")
        seed = check_int("run: seed", seed, 0, (1 << 32) - 1)
        stall_limit = check_int("run: stall_limit", stall_limit, 1)
        max_cycles = 10 ** 8 if max_cycles is None else check_int("run: max_cycles",
                                                                   max_cycles, 1)
        self.reset(power_up=power_up)
        nbits = self._C * self._B
        busy_cycles = [0] * nbits
        outs, out_cycles, errs, ovfs, dropped, push_cycles, chan_errs = [], [], [], [], [], [], []
        sm_res, sm_errs, perrs = [], [], []
        n = len(cmds)
        i, t_next = 0, (cmds[0][1] if n else 0)    # command i offered from cycle t_next
        stalls = 0
        c, last_prog, status, end = 0, 0, "ok", None
        last_push = -1
        n_cons = 0
        step = self._step                   # inputs checked above
        while True:
            rr = ready_at(seed, c, thr)
            hv = 0
            if i < n and c >= t_next:
                hv, word = 1, cmds[i][0]
            o = step(hv, word if hv else 0, rr, rr)         # sm_res.ready = out.ready
            if hv and not o.host_ready:         # held (host_ready only): offered again
                hv = 0
                stalls += 1
            if o.err:
                errs.append((c, o.err))
            if o.ovf:
                ovfs.append(c)
                if last_push == c - 1:
                    dropped.append(i - 1)
            if o.out_valid and rr:
                outs.append(o.out_payload)
                out_cycles.append(c)
                last_prog = c
            if o.sm_valid and rr:
                sm_res.append((c, o.sm_payload))
                last_prog = c
            if o.sm_err:
                sm_errs.append((c, o.sm_err))
            if o.perr:
                perrs.append((c, o.perr, o.perr_ch))
            bz = o.busy
            if bz:
                last_prog = c
                for k in range(nbits):
                    if bz >> k & 1:
                        busy_cycles[k] += 1
            for k, co in enumerate(self.last_chan_outs):
                if co.err:
                    chan_errs.append((c, k, co.err))
            if hv:
                push_cycles.append(c)
                last_push = c
                i += 1
                last_prog = c
                if i < n:
                    t_next = c + 1 + cmds[i][1]
            if end is None and i >= n and last_push < c and o.idle and not o.out_valid:
                end = c + TAIL
            if end is not None and c >= end:
                break
            if self.consumed != n_cons:
                n_cons, last_prog = self.consumed, c
            if c - last_prog > stall_limit:
                status = "deadlock"
                break
            if c + 1 >= max_cycles:
                status = "timeout"
                break
            c += 1
        return ModuleRun(self.params, c + 1, outs, out_cycles, errs, ovfs, dropped, push_cycles,
                         busy_cycles, chan_errs, status, self._err_count, stalls, sm_res,
                         sm_errs, perrs)
