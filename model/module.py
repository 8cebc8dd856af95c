"""Cycle-exact golden model of the PIM module (hub): host FIFO, dispatcher, DPA page table,
loops and output merge, from docs/module.md (written from the contract only, not the HDL).

``ModuleModel.step`` takes one cycle's inputs, returns that cycle's outputs (from the registers
at the start of the cycle, the channels' outputs and the inputs) and applies the clock edge.
It instantiates ``n_ch`` :class:`model.channel.ChannelModel` s and steps each once per cycle.

``run`` drives a host program ``[(host_cmd, gap)]``: command i is pushed (``host_valid = 1``
for one cycle) at cycle ``t_{i-1} + 1 + gap_i`` (the first at cycle ``gap_0``); a push has no
ready, so one into a full FIFO is dropped (as in hardware, reported on ``ovf``).
``out.ready`` is :func:`model.stimulus.ready_at` (seed, cycle, threshold).

Representation notes (for comparison with the HDL), see :meth:`ModuleModel.state`:

* FIFO entries and ``lbuf`` entries are raw host command words (ints); ``lbuf`` resets to 0.
* a page-table entry is ``(valid, rid, pp)``; UNMAP clears only ``valid`` (rid/pp kept).
* ``mode`` is 0 NONE, 1 CAPTURE, 2 REPLAY; loop registers not in use keep their last values.
"""
from __future__ import annotations

from collections import deque, namedtuple
from dataclasses import dataclass, field

import numpy as np

from model.channel import ChannelModel
from spec.isa import (HOST_CHANNEL_OPS, HostOp, ModErr, ModuleParams, Op, cmd_fields,
                  host_fields, mod_out_fields)
from model.stimulus import TAIL, ready_at, ready_threshold

__all__ = ["ModuleModel", "ModOut", "ModuleRun", "module_state_diff", "NONE", "CAPTURE",
           "REPLAY"]

ModOut = namedtuple("ModOut", "out_valid out_payload err ovf err_count idle busy")
ModOut.__doc__ = "Outputs of the module during one cycle (before the clock edge)."

NONE, CAPTURE, REPLAY = 0, 1, 2
_ERR_MAX = (1 << 16) - 1
_OFF_MASK = (1 << 24) - 1        # vp_off / o_off registers (24 bits)
_TRIP_MASK = (1 << 17) - 1

_NOP, _WR_INP, _WR_W, _MAC, _RD_OUT = (int(HostOp.NOP), int(HostOp.WR_INP), int(HostOp.WR_W),
                                       int(HostOp.MAC), int(HostOp.RD_OUT))
_MAP, _UNMAP, _SET_TOK, _LOOP, _BARRIER = (int(HostOp.MAP), int(HostOp.UNMAP),
                                           int(HostOp.SET_TOK), int(HostOp.LOOP),
                                           int(HostOp.BARRIER))
_CH_OPS = (_WR_INP, _WR_W, _MAC, _RD_OUT)
_REPLAY_OK = (_NOP, _WR_INP, _WR_W, _MAC, _RD_OUT)
_USES_VP = (_WR_W, _MAC, _RD_OUT, _MAP, _UNMAP)
_USES_RID = (_WR_W, _MAC, _RD_OUT, _MAP, _UNMAP, _SET_TOK, _LOOP)
_USES_PT = (_WR_W, _MAC, _RD_OUT, _UNMAP)


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
    dropped      indices of commands whose push was dropped (from ``ovf``)
    push_cycles  the cycle each command was pushed in
    busy_cycles  per (channel, bank), index c*n_banks + b: cycles with that busy bit set
    chan_errs    (cycle, channel, code): non-zero channel ``err`` outputs (never expected)
    status       "ok", "deadlock" (no progress for stall_limit cycles) or "timeout"
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

    @property
    def utilisation(self) -> float:
        nb = len(self.busy_cycles)
        return sum(self.busy_cycles) / (self.cycles * nb) if nb else 0.0

    def err_codes(self) -> list[int]:
        return [c for _, c in self.errs]


class ModuleModel:
    """Cycle-exact model of one PIM module (ports and behaviour as in docs/module.md)."""

    def __init__(self, params: ModuleParams):
        if not isinstance(params, ModuleParams):
            raise ValueError(f"ModuleModel: params={params!r} is not a ModuleParams")
        p = self.params = params
        cp, m = p.channel, p.channel.macro
        self.channels = [ChannelModel(cp) for _ in range(p.n_ch)]
        hf = host_fields(p)
        self._hf = {n: (f.offset, (1 << f.width) - 1) for n, f in hf.items()}
        cf = cmd_fields(cp)
        self._cf = {n: f.offset for n, f in cf.items()}
        self._chan_off = mod_out_fields(p)["chan"].offset
        self._S, self._E, self._G, self._NI = m.n_sets, m.n_acc, cp.n_gbuf, m.n_in
        self._V, self._R, self._F, self._L = p.n_vpages, p.n_req, p.fifo_depth, p.loop_len
        self._NP, self._C, self._B = p.n_pages, p.n_ch, cp.n_banks
        self.reset()

    # --- state ----------------------------------------------------------------------------
    def reset(self, power_up: bool = False) -> None:
        """``rst``: every register (channels: all but weight SRAM and GBuf data).
        ``power_up`` clears those too."""
        self.cycle = 0
        self.consumed = 0             # commands consumed since reset (statistics, not a register)
        for ch in self.channels:
            ch.reset(power_up=power_up)
        self._fifo = deque()
        self._pt = [(0, 0, 0)] * self._V
        self._tok = [0] * self._R
        self._mode = NONE
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
        return {n: (word >> o) & m for n, (o, m) in self._hf.items()}

    @property
    def idle(self) -> int:
        """The ``idle`` output of the current cycle (pure)."""
        return int(not self._fifo and self._mode == NONE and not self._out_valid
                   and all(ch.peek_idle() and not ch.peek_out_valid() for ch in self.channels))

    # --- checks ---------------------------------------------------------------------------
    def check(self, f: dict, replay: bool) -> int:
        """Validation of docs/module.md (checks 1-5) of decoded command ``f`` whose ``vp``/``o``
        are already offset; returns the ModErr code (0 = passes).  Pure."""
        op = f["op"]
        if op >= 10:
            return int(ModErr.BAD_OPCODE)
        # 2. BAD_FIELD
        if replay and op not in _REPLAY_OK:
            return int(ModErr.BAD_FIELD)
        if op in _CH_OPS:
            cm = f["chmask"]
            if cm == 0 or cm >= (1 << self._C):
                return int(ModErr.BAD_FIELD)
        if op in (_WR_INP, _MAC) and f["g"] >= self._G:
            return int(ModErr.BAD_FIELD)
        if op == _WR_W and f["row"] >= self._NI:
            return int(ModErr.BAD_FIELD)
        if op in (_MAC, _RD_OUT) and f["o"] >= self._E:
            return int(ModErr.BAD_FIELD)
        if op in _USES_VP and f["vp"] >= self._V:
            return int(ModErr.BAD_FIELD)
        if op in _USES_RID and f["rid"] >= self._R:
            return int(ModErr.BAD_FIELD)
        if op == _MAP and f["pp"] >= self._NP:
            return int(ModErr.BAD_FIELD)
        if op == _LOOP and (f["n"] == 0 or f["n"] > self._L):
            return int(ModErr.BAD_FIELD)
        if op in _USES_PT:
            v, rid, _ = self._pt[f["vp"]]
            if not v:
                return int(ModErr.UNMAPPED)
            if rid != f["rid"]:
                return int(ModErr.NOT_OWNER)
        if op == _MAP:
            if self._pt[f["vp"]][0] or any(e[0] and e[2] == f["pp"] for e in self._pt):
                return int(ModErr.ALREADY_MAPPED)
        return 0

    def _chan_cmd(self, f: dict) -> int:
        """The channel command (cmd_fields) of a checked channel op."""
        op, cf = f["op"], self._cf
        w = int(HOST_CHANNEL_OPS[HostOp(op)])
        if op == _WR_INP:
            return w | f["g"] << cf["g"] | f["data"] << cf["data"]
        pp = self._pt[f["vp"]][2]
        bank, set_ = pp // self._S, pp % self._S
        w |= bank << cf["bank"]
        if op == _WR_W:
            return w | set_ << cf["set"] | f["row"] << cf["row"] | f["data"] << cf["data"]
        if op == _MAC:
            return (w | set_ << cf["set"] | f["g"] << cf["g"] | f["o"] << cf["o"]
                    | f["acc"] << cf["acc"])
        return w | f["o"] << cf["o"]                                  # RD_OUT

    # --- one cycle ------------------------------------------------------------------------
    def step(self, host_valid: int, host_cmd: int, out_ready: int) -> ModOut:
        """Outputs of this cycle for these inputs, then the clock edge ending the cycle."""
        chans, C = self.channels, self._C
        fifo = self._fifo
        mode = self._mode
        out_valid, out_payload = self._out_valid, self._out_payload
        ch_idle = [ch.peek_idle() for ch in chans]
        idle = int(not fifo and mode == NONE and all(ch_idle) and not out_valid
                   and not any(ch.peek_out_valid() for ch in chans))

        # ---- dispatch decision (registers at t)
        # action: None (nothing consumed) | "cap" | "rej" | "exec"
        action, code, f, ch_valid, ch_cmd = None, 0, None, 0, 0
        if mode == CAPTURE:
            if fifo:
                action = "cap"
        else:
            if mode == REPLAY:
                f = self.fields(self._lbuf[self._idx])
                f["vp"] += self._vp_off
                f["o"] += self._o_off
            elif fifo:
                f = self.fields(fifo[0])
            if f is not None:
                code = self.check(f, mode == REPLAY)
                op = f["op"]
                if code:
                    action = "rej"
                elif op == _BARRIER:
                    if all(ch_idle):
                        action = "exec"
                elif op in _CH_OPS:
                    cop = int(HOST_CHANNEL_OPS[HostOp(op)])
                    cm = f["chmask"]
                    if all(chans[c].peek_cmd_ready(cop) for c in range(C) if cm >> c & 1):
                        action, ch_valid, ch_cmd = "exec", cm, self._chan_cmd(f)
                else:
                    action = "exec"

        # ---- output merge decision
        take = -1
        if not out_valid or out_ready:
            for c in range(C):
                if chans[c].peek_out_valid():
                    take = c
                    break

        # ---- step the channels (their outputs of this cycle, then their edge)
        busy, nb = 0, self._B
        ch_out = []
        for c, ch in enumerate(chans):
            o = ch.step(ch_valid >> c & 1, ch_cmd if ch_valid >> c & 1 else 0, int(c == take))
            busy |= o.busy << (c * nb)
            ch_out.append(o)
            # the peeks must agree with the channel's own outputs
            assert o.idle == ch_idle[c] and (not ch_valid >> c & 1 or o.cmd_ready) \
                and (c != take or o.out_valid), f"channel {c} peek mismatch at {self.cycle}"
        self.last_chan_outs = ch_out
        out = ModOut(out_valid, out_payload, self._err, self._ovf, self._err_count, idle, busy)

        # ---- clock edge
        dropped = 0
        push = bool(host_valid)
        if push and len(fifo) >= self._F:
            push, dropped = False, 1
        # dispatch effects
        rejected = 0
        if action is not None:
            self.consumed += 1
        if action == "cap":
            self._lbuf[self._cap] = fifo.popleft()
            self._cap += 1
            if self._cap == self._n:
                if self._trip == 0:
                    self._mode = NONE
                else:
                    self._mode = REPLAY
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
                    self._mode = CAPTURE
                    self._cap = 0
                    self._n, self._vps, self._os = f["n"], f["vps"], f["os"]
                    per = f["per"]
                    self._trip = ((self._tok[f["rid"]] + (1 << per) - 1) >> per) & _TRIP_MASK
            # consumed
            if mode == REPLAY:
                self._idx += 1
                if self._idx == self._n:
                    self._idx = 0
                    self._iter += 1
                    self._vp_off = (self._vp_off + self._vps) & _OFF_MASK
                    self._o_off = (self._o_off + self._os) & _OFF_MASK
                    if self._iter == self._trip:
                        self._mode = NONE
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
        (see the module docstring) with ``out.ready = ready_at(seed, c, thr)``."""
        thr = ready_threshold(out_ready_p)
        self.reset(power_up=power_up)
        if max_cycles is None:
            max_cycles = 10 ** 8
        nbits = self._C * self._B
        busy_cycles = [0] * nbits
        outs, out_cycles, errs, ovfs, dropped, push_cycles, chan_errs = [], [], [], [], [], [], []
        n = len(cmds)
        i, t_next = 0, (int(cmds[0][1]) if n else 0)
        c, last_prog, status, end = 0, 0, "ok", None
        last_push = -1
        n_cons = 0
        step = self.step
        while True:
            rr = ready_at(seed, c, thr)
            hv = 0
            if i < n and c == t_next:
                hv, word = 1, int(cmds[i][0])
            o = step(hv, word if hv else 0, rr)
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
                    t_next = c + 1 + int(cmds[i][1])
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
                         busy_cycles, chan_errs, status, self._err_count)


def module_state_diff(a, b, *, ignore=("cycle",), path="") -> list[str]:
    """Differences between two :meth:`ModuleModel.state` snapshots (recursive; numpy arrays
    compared exactly).  Keys named in ``ignore`` are skipped at every level; "W" skips the
    macros' weight SRAM and "gbuf" the channels' GBuf data (neither is reset by ``rst``)."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a.keys() | b.keys():
            if k in ignore:
                continue
            if k not in a or k not in b:
                out.append(f"{path}{k}: missing")
                continue
            out += module_state_diff(a[k], b[k], ignore=ignore, path=f"{path}{k}.")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path[:-1]}: len {len(a)} != {len(b)}"]
        for j, (x, y) in enumerate(zip(a, b)):
            out += module_state_diff(x, y, ignore=ignore, path=f"{path}{j}.")
        return out
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            out.append(f"{path[:-1]}: arrays differ")
        return out
    if a != b:
        out.append(f"{path[:-1]}: {a!r} != {b!r}")
    return out
