"""Cycle-exact golden model of the PIM channel and its DCS controller, from docs/channel.md.

Written from the contract only (not from the HDL).  ``ChannelModel.step`` takes one cycle's
inputs, returns that cycle's outputs (from the registers at the start of the cycle and the
inputs) and then applies the clock edge ending the cycle.  Every bank is one
:class:`model.macro.MacroModel`, stepped once per cycle with ``res.ready = 1``.

``run`` drives the model with a command list under the driver rules of model/stimulus.py
(beat i offered from ``t_free + gap_i`` until it transfers; ``out.ready`` from
:func:`model.stimulus.ready_at`) and returns a :class:`ChannelTrace`.

Representation notes (for comparison with the HDL):

* a queue entry is the tuple ``(op, bank, set, row, g, o, acc, data, seq, deps, ab)`` where
  ``deps`` is three ``(valid, seq)`` slots in the order of the dependency table of
  docs/channel.md (MAC: ``gw[g]``, ``ww[b][s]``, ``orr[b][o]``; an all-bank MAC: ``gw[g]``,
  the youngest pending ``ww[*][s]``, the youngest pending ``orr[*][o]``; the other ops use
  slot 0); an invalid slot is ``(0, 0)``.  Fields an op does not use are those of the payload
  (0 for a well-formed command); ``ab`` is 0 without ``all_bank``.
* a dependency-table slot is ``(valid, seq)``, reset ``(0, 0)``; a slot invalidated because its
  command is done keeps its seq (only ``valid <= 0``): ``(0, seq)``.
* OBuf entries and GBuf entries are raw bit vectors (ints), as in the HDL registers.
"""
from __future__ import annotations

from collections import deque, namedtuple
from dataclasses import dataclass, field

from spec.isa import ChannelParams, Op, cmd_fields, out_fields
from model.blockfmt import PostModel
from model.dram_backend import DramBackend
from model.interface import check_inputs
from model.macro import MacroModel
from spec.params import check_int, check_word, req_fields, unpack_vec, width, wr_fields
from model.stimulus import TAIL, Source, Beat, check_program, ready_at, ready_threshold

__all__ = ["ChannelModel", "ChanOut", "ChannelTrace"]

ChanOut = namedtuple("ChanOut", "cmd_ready out_valid out_payload idle busy err")
ChanOut.__doc__ = "Outputs of the channel during one cycle (before the clock edge)."

_MAC, _WR_INP, _WR_W, _RD_OUT = int(Op.MAC), int(Op.WR_INP), int(Op.WR_W), int(Op.RD_OUT)
_NODEP = (0, 0)


@dataclass
class ChannelTrace:
    """Result of :meth:`ChannelModel.run`.

    events       (cycle, "cmd" | "out" | "err", value): a command transfer (its payload), an
                 out beat transfer (its payload), a non-zero ``err`` output (its code)
    cycles       cycles simulated: first cycle in which every command had transferred in an
                 earlier cycle, ``idle`` = 1 and ``out.valid`` = 0, plus TAIL, plus 1
    busy_cycles  per bank, cycles with that bank's ``busy`` bit set (over ``cycles``)
    outs         out payloads in arrival order
    status       "ok", or "deadlock" (no progress for ``stall_limit`` cycles) / "timeout"
    """
    params: ChannelParams
    events: list = field(repr=False)
    cycles: int
    busy_cycles: list
    outs: list = field(repr=False)
    status: str = "ok"
    n_cmds: int = 0

    @property
    def utilisation(self) -> float:
        """Busy macro-cycles / (cycles * n_banks)."""
        return sum(self.busy_cycles) / (self.cycles * self.params.n_banks)

    def errors(self) -> list:
        return [e for e in self.events if e[1] == "err"]


class ChannelModel:
    """Cycle-exact model of one PIM channel (ports and behaviour as in docs/channel.md).

    With ``params.post`` every bank's results go through a block post-processing stage
    (:class:`model.blockfmt.PostModel`, attribute ``posts``) into OBuf (docs/channel.md,
    "Block post-processing stage"); ``perr`` is that output of the last :meth:`step` (not in
    :class:`ChanOut`, whose fields are unchanged).

    With ``params.bank_kind == "dram"`` the banks are DRAM-PIM banks behind the DRAM
    back-end of docs/dram_channel.md (:class:`model.dram_backend.DramBackend`, attribute
    ``backend``; ``macros`` is empty): same ports, queues, dependency table and issue rules,
    plus the back-end's issue rules, delayed done bits of I/O commands and WR_Ws, and the
    DRAM meanings of ``busy`` and ``err``.

    Dependencies only ever name pending commands (ids are reused mod W):

    * at enqueue a table slot is recorded only if it is valid and ``done[slot.seq] = 0`` at t
      (a done producer needs no wait; this also drops a stale slot whose id is free);
    * at every edge, a queued entry's dependency whose ``done[dep_seq] = 1`` at t is cleared
      (``dep_valid <= 0``), so an id reused later cannot be mistaken for it;
    * at every edge, a dependency-table slot whose ``done[slot.seq] = 1`` at t is invalidated
      (``valid <= 0``) unless the same edge writes it for the command being enqueued (the write
      wins), so a stale slot never names a newer command that reused its id.

    With these, every recorded dependency names a pending command older than the entry, so the
    oldest pending command is never blocked by a dependency (no deadlock), and no command
    waits for an unrelated one (no false dependency).

    The table rule is applied without scanning the table.  A slot holding ``(1, s)`` has
    ``done[s] = 0`` from the edge that writes it until ``done[s]`` is set; at the next edge it is
    invalidated (or rewritten).  So at the edge ending t, the valid slots with ``done[seq] = 1`` at
    t are exactly those holding a seq that became done at the edge ending t - 1.  The model keeps
    ``_holders[s]``, the (at most 3) slots written by the command with id s, and ``_fresh``, the
    ids that became done at the previous edge; each edge invalidates, for each id in ``_fresh``,
    those of its slots that still hold it (3 slots per command, 1 + 2B for an all-bank MAC).
    Cost per cycle: O(slots of the commands done at the previous edge), independent of G, S
    and E.

    ``inputs``: names and widths (bits) of :meth:`step`'s arguments (a
    :class:`model.interface.GoldenModel`).
    """

    def __init__(self, params: ChannelParams, *, late: int = 0):
        if not isinstance(params, ChannelParams):
            raise ValueError(f"ChannelModel: params={params!r} is not a ChannelParams")
        p = self.params = params
        m = p.macro
        # bank_kind "dram": no macros; the DRAM back-end (docs/dram_channel.md) owns the banks
        self.dram = p.bank_kind == "dram"
        # late > 0 (DRAM banks only): a deliberately late model (model.dram_bank ``late``)
        if late and not self.dram:
            raise ValueError(f"ChannelModel: late={late!r} needs bank_kind 'dram'")
        self.backend = DramBackend(p, late=late) if self.dram else None
        self.macros = [] if self.dram else [MacroModel(m) for _ in range(p.n_banks)]
        cf, of, wf, rf = cmd_fields(p), out_fields(p), wr_fields(m), req_fields(m)
        self._cf = [(cf[n].offset, (1 << cf[n].width) - 1)
                    for n in ("bank", "set", "row", "g", "o", "acc", "data")]
        self._ab_off = cf["ab"].offset if p.all_bank else None
        self._xmask = (1 << (m.n_in * m.x_bits)) - 1
        self._wdmask = (1 << (m.n_out * m.w_bits)) - 1
        self._w_row, self._w_set = wf["row"].offset, wf["set"].offset
        self._r_set, self._r_acc, self._r_dst = rf["set"].offset, rf["acc"].offset, rf["dst"].offset
        self._ymask = (1 << (m.n_out * m.acc_width)) - 1
        self._res_dst_off, self._res_dst_mask = m.n_out * m.acc_width, (1 << m.dst_bits) - 1
        self._o_bank, self._o_o = of["bank"].offset, of["o"].offset
        self._W, self._Q = p.window, p.q_depth
        self._cbits = width(cf)
        self.inputs = (("cmd_valid", 1), ("cmd_payload", self._cbits), ("out_ready", 1))
        # a bank / g field can name a missing bank / GBuf entry (not a power of two)
        self._odd = p.n_banks != 1 << cf["bank"].width or p.n_gbuf != 1 << cf["g"].width
        self._gbuf = [0] * p.n_gbuf           # GBuf data: not reset by rst (0 at power-up)
        # block post-processing stage behind every bank (ChannelParams.post; docs/channel.md,
        # "Block post-processing stage"): None without it
        self.posts = None
        if p.post is not None:
            self._post_init()
        self.reset()

    def _post_init(self) -> None:
        """The ``post`` option's constants and its B stages (:class:`model.blockfmt.PostModel`)."""
        from spec.blockfmt import post_in_fields, post_out_fields, post_sw_fields
        p, m = self.params, self.params.macro
        cf = cmd_fields(p)
        self._pcf = [(cf[n].offset, (1 << cf[n].width) - 1) for n in ("sc", "fmt", "xs")]
        self.posts = [PostModel(p.post) for _ in range(p.n_banks)]
        fi, fs, fo, of = post_in_fields(p.post), post_sw_fields(p.post), post_out_fields(p.post), \
            out_fields(p)
        self._pi = {k: fi[k].offset for k in fi}
        self._ps = {k: fs[k].offset for k in fs}
        self._xsum_mask = (1 << p.post.xsum_bits) - 1
        self._sc_mask = (1 << (p.post.lanes * 32)) - 1
        self._part_mask = (1 << p.post.part_bits) - 1
        self._pv_mask = (1 << (m.n_out * 32)) - 1
        self._po_dst, self._po_ovf = fo["dst"].offset, fo["ovf"].offset
        self._o_ovf = of["ovf"].offset
        self._xb, self._xn = m.x_bits, m.n_in
        self.perr = 0

    def _xsum(self, tile: int) -> int:
        """Sum of the input tile's n_in signed x_bits elements (WR_INP, ``post``)."""
        return sum(unpack_vec(tile, self._xn, self._xb))

    # --- state ----------------------------------------------------------------------------
    def reset(self, power_up: bool = False) -> None:
        """``rst``: every register except the macros' weight SRAM and the GBuf data.
        ``power_up`` clears those too."""
        power_up = check_word("reset: power_up", power_up, 1)
        p, m = self.params, self.params.macro
        self.cycle = 0
        for mm in self.macros:
            mm.reset(power_up=power_up)
        if self.dram:
            self.backend.reset(power_up=power_up)
        if power_up:
            self._gbuf = [0] * p.n_gbuf
        if self.posts is not None:          # the stages (their SC / FMT survive rst)
            for pm in self.posts:
                pm.reset(power_up=power_up)
            if power_up or not hasattr(self, "_gxs"):
                self._gxs, self._gxsum = [0] * p.n_gbuf, [0] * p.n_gbuf   # kept like GBuf
            self._pside = [deque() for _ in range(p.n_banks)]   # (set, acc, xs, xsum) per MAC
            self._pq = [deque() for _ in range(p.n_banks)]      # seq of MACs in the stage
            self._obuf_ovf = [[0] * m.n_acc for _ in range(p.n_banks)]
            self.perr = 0
        self._ioq, self._cq = deque(), deque()
        self._nseq = 0
        self._done = [1] * self._W
        self._holders = [()] * self._W     # id -> the slots its command wrote: (table, index)
        self._fresh = []          # ids whose done bit was set at the previous edge
        S, E, B, G = m.n_sets, m.n_acc, p.n_banks, p.n_gbuf
        self._gw, self._gr = [_NODEP] * G, [_NODEP] * G
        self._ww = [[_NODEP] * S for _ in range(B)]
        self._wr = [[_NODEP] * S for _ in range(B)]
        self._ow = [[_NODEP] * E for _ in range(B)]
        self._orr = [[_NODEP] * E for _ in range(B)]
        self._obuf = [[0] * E for _ in range(B)]
        self._macq = [deque() for _ in range(B)]
        self._iss, self._inflight = 0, 0
        self._out_valid, self._out_payload = 0, 0

    def state(self) -> dict:
        """Snapshot of all architectural state (copies).  Queue entries as in the module doc,
        converted to dicts; ``macros`` holds each bank's :meth:`MacroModel.state` (a DRAM
        channel: no ``macros``, ``dram`` = :meth:`model.dram_backend.DramBackend.state`)."""
        names = ("op", "bank", "set", "row", "g", "o", "acc", "data", "seq")
        ab = self.params.all_bank

        def ent(e):
            d = dict(zip(names, e[:9], strict=True))
            d["deps"] = [tuple(x) for x in e[9]]
            if ab:
                d["ab"] = e[10]
            return d
        st = {
            "cycle": self.cycle,
            "ioq": [ent(e) for e in self._ioq], "cq": [ent(e) for e in self._cq],
            "nseq": self._nseq, "done": list(self._done),
            "gw": list(self._gw), "gr": list(self._gr),
            "ww": [list(r) for r in self._ww], "wr": [list(r) for r in self._wr],
            "ow": [list(r) for r in self._ow], "orr": [list(r) for r in self._orr],
            "macq": [list(q) for q in self._macq],
            "iss": self._iss, "inflight": self._inflight,
            "gbuf": list(self._gbuf), "obuf": [list(r) for r in self._obuf],
            "out_valid": self._out_valid, "out_payload": self._out_payload,
            "macros": [mm.state() for mm in self.macros],
        }
        if self.dram:
            del st["macros"]
            st["dram"] = self.backend.state()
        if self.posts is not None:          # ChannelParams.post
            st["post"] = {"stages": [pm.state() for pm in self.posts],
                          "pside": [list(q) for q in self._pside],
                          "pq": [list(q) for q in self._pq], "xs": list(self._gxs),
                          "xsum": list(self._gxsum),
                          "obuf_ovf": [list(r) for r in self._obuf_ovf]}
        return st

    # --- outputs that depend only on the registers (the module's dispatcher needs them
    # before it decides what to drive) ----------------------------------------------------
    def peek_cmd_ready(self, op: int) -> int:
        """``cmd.ready`` this cycle for a command with opcode ``op``."""
        q = self._cq if op == int(Op.MAC) else self._ioq
        return int(len(q) < self.params.q_depth and bool(self._done[self._nseq]))

    def peek_out_valid(self) -> int:
        return int(self._out_valid)

    def peek_idle(self) -> int:
        return int(not self._ioq and not self._cq and not any(self._macq)
                   and not (self.dram and self.backend.n_pending)
                   and not (self.posts is not None and any(self._pq)))

    # --- one cycle ------------------------------------------------------------------------
    def _ready(self, e, out_valid, out_ready):
        """Issue condition of queue head ``e`` in this cycle (dependencies + resource)."""
        done = self._done
        for v, s in e[9]:
            if v and not done[s]:
                return False
        if self.dram:       # in order: quiet = every issued command done
            if not self.params.dcs and (e[8] != self._iss or self.backend.n_pending
                                        or any(self._macq)):
                return False
            if e[0] == _MAC:
                return self.backend.can_mac(e)
            return self.backend.can_io(e, not out_valid or bool(out_ready))
        if not self.params.dcs and (e[8] != self._iss or self._inflight):
            return False
        op = e[0]
        if op == _MAC:
            if e[10]:               # all-bank MAC: every bank accepts it in the same cycle
                return all(mm.peek_req_ready(1) for mm in self.macros)
            return bool(self.macros[e[1]].peek_req_ready(1))
        if op == _RD_OUT:
            return not out_valid or bool(out_ready)
        return True

    def step(self, cmd_valid: int, cmd_payload: int, out_ready: int) -> ChanOut:
        """Outputs of this cycle for these inputs, then the clock edge ending the cycle.

        Every input is an unsigned int of its port's width (``inputs``; valid/ready 0 or 1,
        a bool is fine there).  ValueError naming it otherwise, and also for an offered
        command whose ``bank`` / ``g`` names a bank / GBuf entry the channel does not have (the
        contract does not define it; an all-bank MAC ignores its ``bank``); raised before any
        register changes.  Malformed commands the contract does define (a WR_W row >= n_in:
        WR_BAD_ROW) behave as defined.
        """
        try:        # cheap inline check; check_inputs names the culprit
            ok = (type(cmd_payload) is int
                  and not (cmd_payload >> self._cbits | (cmd_valid | out_ready) >> 1))
        except TypeError:
            ok = False
        if not ok:
            cmd_valid, cmd_payload, out_ready = check_inputs(
                self.inputs, (cmd_valid, cmd_payload, out_ready))
        if cmd_valid and self._odd:
            self._check_cmd(cmd_payload)
        return self._step(cmd_valid, cmd_payload, out_ready)

    def _check_cmd(self, payload: int) -> None:
        """ValueError if command ``payload`` names a bank / GBuf entry that does not exist."""
        p, op = self.params, payload & 3
        (ob, mb), _, _, (og, mg) = self._cf[:4]
        b, g = (payload >> ob) & mb, (payload >> og) & mg
        ab = op == _MAC and self._ab_off is not None and payload >> self._ab_off & 1
        if op != _WR_INP and not ab and b >= p.n_banks:
            raise ValueError(f"step: cmd_payload={payload:#x} is {Op(op).name} bank={b}, "
                             f"n_banks={p.n_banks}")
        if op in (_WR_INP, _MAC) and g >= p.n_gbuf:
            raise ValueError(f"step: cmd_payload={payload:#x} is {Op(op).name} g={g}, "
                             f"n_gbuf={p.n_gbuf}")

    def _step(self, cmd_valid: int, cmd_payload: int, out_ready: int) -> ChanOut:
        """:meth:`step` without the input checks (callers that build valid inputs)."""
        p = self.params
        ioq, cq, done, macq = self._ioq, self._cq, self._done, self._macq
        nseq = self._nseq
        op = cmd_payload & 3
        tq = cq if op == _MAC else ioq
        cmd_ready = 1 if (len(tq) < self._Q and done[nseq]) else 0
        out_valid, out_payload = self._out_valid, self._out_payload
        be = self.backend
        idle = 1 if not ioq and not cq and not any(macq) and not (be and be.n_pending) else 0
        posts = self.posts
        if posts is not None and any(self._pq):
            idle = 0

        # --- issue decisions (state at t)
        io_h = ioq[0] if ioq and self._ready(ioq[0], out_valid, out_ready) else None
        if be is not None and io_h is not None and io_h[0] == _WR_W:
            c_h = None              # no MAC issues in a WR_W's cycle (docs/dram_channel.md)
        else:
            c_h = cq[0] if cq and self._ready(cq[0], out_valid, out_ready) else None

        # --- drive the macros (DRAM: the back-end's banks), collect their outputs (this
        # cycle) and step them
        B = p.n_banks
        busy = err = 0
        results = []
        wr_b = io_h[1] if io_h is not None and io_h[0] == _WR_W else -1
        sw_b = -1
        if posts is not None and wr_b >= 0 and io_h[11][0]:
            sw_b, wr_b = wr_b, -1           # WR_SCALE: the stage's sw, not the macro's wr
        mac_b, mac_all, mac_p = -1, False, 0
        if be is not None:
            busy, err, results = be.cycle(self._gbuf)
            mac_all = c_h is not None and bool(c_h[10])
        elif c_h is not None:
            mac_b, mac_all = c_h[1], bool(c_h[10])
            mac_p = ((self._gbuf[c_h[4]] & self._xmask) | (c_h[2] << self._r_set)
                     | ((0 if posts is not None else c_h[6]) << self._r_acc)
                     | (c_h[5] << self._r_dst))        # post: the stage accumulates
        for b in range(0 if be is not None else B):
            wv = wp = rv = rp = 0
            if b == wr_b:
                wv = 1
                wp = ((io_h[7] & self._wdmask) | (io_h[3] << self._w_row)
                      | (io_h[2] << self._w_set))
            if mac_all or b == mac_b:
                rv, rp = 1, mac_p
            o = self.macros[b]._step(wv, wp, rv, rp, 1)
            if o.busy:
                busy |= 1 << b
            err |= o.err
            if o.res_valid:
                results.append((b, o.res_payload))
        post_outs = None
        if posts is not None:
            post_outs = self._post_cycle(io_h, sw_b, results)
        out = ChanOut(cmd_ready, out_valid, out_payload, idle, busy, err)

        # --- clock edge.  Dependencies satisfied at t are dropped from queued entries
        # (uses done as at t, so before any update below)
        for q in (ioq, cq):
            for e in q:
                for d in e[9]:
                    if d[0] and done[d[1]]:
                        d[0] = 0
        # Dependency-table slots whose command is done at t are invalidated (before the enqueue
        # below, so a slot it writes at this edge keeps the write)
        holders = self._holders
        for s in self._fresh:
            for tab, i in holders[s]:
                if tab[i] == (1, s):
                    tab[i] = (0, s)
            holders[s] = ()
        fresh = self._fresh = []
        # I/O head
        rd_issue = False
        if io_h is not None:
            ioq.popleft()
            hop, seq = io_h[0], io_h[8]
            if be is not None:      # delayed done bit (be.dones below); RD_OUT: rdend first
                be.issue_io(io_h, seq)
            if hop == _WR_INP:
                self._gbuf[io_h[4]] = io_h[7] & self._xmask
                if posts is not None:       # the tile's exponent code and element sum
                    self._gxs[io_h[4]] = io_h[11][2]
                    self._gxsum[io_h[4]] = self._xsum(io_h[7] & self._xmask)
            elif hop == _RD_OUT:
                b, o_ = io_h[1], io_h[5]
                self._out_payload = (self._obuf[b][o_] | (b << self._o_bank)
                                     | (o_ << self._o_o))
                if posts is not None:
                    self._out_payload |= self._obuf_ovf[b][o_] << self._o_ovf
                self._out_valid = 1
                rd_issue = True
            if be is None:
                done[seq] = 1
                fresh.append(seq)
            if not p.dcs:
                self._iss = (self._iss + 1) % self._W
        if not rd_issue and out_valid and out_ready:
            self._out_valid = 0
        # compute head
        if c_h is not None:
            cq.popleft()
            if be is not None:
                be.issue_mac(c_h)
            if mac_all:             # one id in every bank's macq
                for q in macq:
                    q.append(c_h[8])
            else:
                macq[c_h[1]].append(c_h[8])
            if posts is not None:   # what the stage needs of this MAC (GBuf as at t)
                g_ = c_h[4]
                side = (c_h[2], c_h[6], self._gxs[g_], self._gxsum[g_])
                for b in (range(B) if mac_all else (c_h[1],)):
                    self._pside[b].append(side)
            if not p.dcs:
                self._iss = (self._iss + 1) % self._W
                if be is None:
                    self._inflight += B if mac_all else 1
        # results (macro outputs of cycle t); an all-bank MAC's B results come in one cycle
        # and set its done bit B times
        if posts is not None:       # post: a MAC is done when its stage output is in OBuf
            for b, pv in post_outs:
                d_ = (pv >> self._po_dst) & self._res_dst_mask
                self._obuf[b][d_] = pv & self._pv_mask
                self._obuf_ovf[b][d_] = (pv >> self._po_ovf) & 1
                s = self._pq[b].popleft()
                done[s] = 1
                fresh.append(s)
                if not p.dcs:
                    self._inflight -= 1
            for b, rp in results:   # the macro's result entered the stage
                self._pside[b].popleft()
                self._pq[b].append(macq[b].popleft())
            results = ()
        for b, rp in results:
            self._obuf[b][(rp >> self._res_dst_off) & self._res_dst_mask] = rp & self._ymask
            s = macq[b].popleft()
            done[s] = 1
            fresh.append(s)
            if not p.dcs and be is None:
                self._inflight -= 1
        if be is not None:      # delayed done bits of I/O commands and WR_Ws (this edge)
            for s in be.dones():
                done[s] = 1
                fresh.append(s)
        # enqueue (dependency table read at t: no issue/result touches it)
        if cmd_valid and cmd_ready:
            self._enqueue(op, cmd_payload, nseq, tq)
        self.cycle += 1
        return out

    def _enqueue(self, op, payload, seq, tq):
        (ob, mb), (os_, ms), (orow, mrow), (og, mg), (oo, mo), (oa, ma), (od, md) = self._cf
        b, s, row = (payload >> ob) & mb, (payload >> os_) & ms, (payload >> orow) & mrow
        g, o, acc, data = (payload >> og) & mg, (payload >> oo) & mo, (payload >> oa) & ma, \
            (payload >> od) & md
        ab = payload >> self._ab_off & 1 if self._ab_off is not None else 0
        ext = ()
        if self.posts is not None:          # (sc, fmt, xs): entry field 11
            ext = (tuple((payload >> off) & mk for off, mk in self._pcf),)
        done = self._done
        def ent(slot):            # only slots whose command is still pending (done at t)
            return [1, slot[1]] if slot[0] and not done[slot[1]] else [0, 0]
        new = (1, seq)
        if op == _MAC and ab:
            B, W = self.params.n_banks, self._W
            def youngest(cands):  # the pending one with the smallest age (seq - id) mod W
                best = [0, 0]
                for v, i in cands:
                    if v and not done[i] and (not best[0]
                                              or (seq - i) % W < (seq - best[1]) % W):
                        best = [1, i]
                return best
            deps = (ent(self._gw[g]), youngest([self._ww[k][s] for k in range(B)]),
                    youngest([self._orr[k][o] for k in range(B)]))
            slots = (((self._gr, g),) + tuple((self._wr[k], s) for k in range(B))
                     + tuple((self._ow[k], o) for k in range(B)))
        elif op == _WR_INP:
            deps = (ent(self._gr[g]), [0, 0], [0, 0])
            slots = ((self._gw, g),)
        elif op == _WR_W:
            deps = (ent(self._wr[b][s]), [0, 0], [0, 0])
            slots = ((self._ww[b], s),)
        elif op == _MAC:
            deps = (ent(self._gw[g]), ent(self._ww[b][s]), ent(self._orr[b][o]))
            slots = ((self._gr, g), (self._wr[b], s), (self._ow[b], o))
        else:
            deps = (ent(self._ow[b][o]), [0, 0], [0, 0])
            slots = ((self._orr[b], o),)
        for tab, i in slots:
            tab[i] = new
        self._holders[seq] = slots
        tq.append((op, b, s, row, g, o, acc, data, seq, deps, ab) + ext)
        self._done[seq] = 0
        self._nseq = (seq + 1) % self._W

    def _post_cycle(self, io_h, sw_b, results):
        """Step the B stages for this cycle (``post``): bank b's ``inp`` is its macro's result
        (with the MAC's set, acc, xs, xsum from ``_pside[b]``), its ``sw`` the WR_SCALE issuing
        to it, ``out.ready`` 1.  Sets ``perr`` (OR of the stages' ``err``); returns the
        [(bank, out payload)] of the stages' output beats of this cycle."""
        pi, ps = self._pi, self._ps
        res = dict(results)
        outs, perr = [], 0
        for b, pm in enumerate(self.posts):
            iv = ip = sv = sp = 0
            if b in res:
                rp = res[b]
                st, ac, xs, xsum = self._pside[b][0]
                iv = 1
                ip = ((rp & self._ymask) | (((rp >> self._res_dst_off) & self._res_dst_mask)
                                            << pi["dst"])
                      | (st << pi["set"]) | (ac << pi["acc"]) | (xs << pi["xs"])
                      | ((xsum & self._xsum_mask) << pi["xsum"]))
            if b == sw_b:
                sv = 1
                sp = ((io_h[7] & self._sc_mask) | ((io_h[3] & self._part_mask) << ps["part"])
                      | (io_h[2] << ps["set"]) | (io_h[11][1] << ps["fmt"]))
            o = pm.step(iv, ip, sv, sp, 1)
            if iv and not o.inp_ready:       # cannot happen with chunks <= x_bits
                raise RuntimeError(f"ChannelModel: bank {b}'s stage not ready for a result")
            perr |= o.err
            if o.out_valid:
                outs.append((b, o.out_payload))
        self.perr = perr
        return outs

    # --- driver ---------------------------------------------------------------------------
    def run(self, cmds, out_ready_p: float = 1.0, seed: int = 0, *, power_up: bool = True,
            stall_limit: int = 20000, max_cycles: int | None = None,
            probe=None) -> ChannelTrace:
        """Reset (``power_up``: also weights/GBuf), then drive ``cmds`` = [(payload, gap)] under
        the model/stimulus.py driver rules with ``out.ready = ready_at(seed, c, thr)``.
        ``probe(model, cycle, outputs)``, if given, is called after every step (tests).
        ValueError (before the reset) naming a malformed argument or command."""
        cmds = check_program(cmds, self._cbits, "run: cmds")
        thr = ready_threshold(out_ready_p, "run: out_ready_p")
        seed = check_int("run: seed", seed, 0, (1 << 32) - 1)
        stall_limit = check_int("run: stall_limit", stall_limit, 1)
        max_cycles = 10 ** 8 if max_cycles is None else check_int("run: max_cycles",
                                                                   max_cycles, 1)
        if probe is not None and not callable(probe):
            raise ValueError(f"run: probe={probe!r} must be callable or None")
        if self._odd:
            for pl, _ in cmds:
                self._check_cmd(pl)
        self.reset(power_up=power_up)
        src = Source([Beat(pl, gap) for pl, gap in cmds])
        B = self.params.n_banks
        busy_cycles = [0] * B
        events, outs = [], []
        step = self._step                   # inputs checked above
        c, last_prog, status, end = 0, 0, "ok", None
        all_sent_before = False   # every command transferred in a cycle < c
        while True:
            rr = ready_at(seed, c, thr)
            v = src.valid(c, 0)
            o = step(v, src.payload, rr)
            if probe is not None:
                probe(self, c, o)
            bz = o.busy
            if bz:
                for b in range(B):
                    if bz >> b & 1:
                        busy_cycles[b] += 1
            if o.err:
                events.append((c, "err", o.err))
            if v and o.cmd_ready:
                events.append((c, "cmd", src.payload))
                src.transferred(c)
                last_prog = c
            if o.out_valid and rr:
                events.append((c, "out", o.out_payload))
                outs.append(o.out_payload)
                last_prog = c
            if bz:
                last_prog = c
            if end is None and all_sent_before and o.idle and not o.out_valid:
                end = c + TAIL
            if end is not None and c >= end:
                break
            all_sent_before = src.done
            if c - last_prog > stall_limit:
                status = "deadlock"
                break
            if c + 1 >= max_cycles:
                status = "timeout"
                break
            c += 1
        return ChannelTrace(self.params, events, c + 1, busy_cycles, outs, status, len(cmds))
