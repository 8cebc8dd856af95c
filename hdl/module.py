"""PIM module (hub): host FIFO, dispatcher, DPA page table, loops over ``n_ch`` channels.

Cycle-exact implementation of ``docs/module.md``; encodings from :mod:`spec.isa`
(``ModuleParams``, ``HostOp``, ``ModErr``, ``host_fields``, ``mod_out_fields``); every channel is
one :class:`hdl.channel.PimChannel` (``docs/channel.md``).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from spec.isa import (HOST_CHANNEL_OPS, SM_HOST_OPS, HostOp, LoopMode, ModErr, ModuleParams, Op,
                       host_fields, host_op_limit, mod_out_fields, sm_res_fields)
from spec.softmax import SH_BITS, SmOp

from .channel import FAULTS as CHANNEL_FAULTS
from .channel import PimChannel
from .fifo import RegFifo
from .hier import place
from .layouts import struct_layout
from .logic import all_of, any_of
from .regfile import select, write
from .softmax import FAULTS as SM_FAULTS
from .softmax import SoftmaxUnit

__all__ = ["PimModule", "FAULTS"]

#: deliberately wrong DUTs (for tests that the lockstep checker reports them):
#: ``"ready_late"``: with ``host_ready``, ``host__ready`` is the FIFO-room function of the
#: previous cycle (one cycle late; a transfer into a full FIFO is lost); the channel faults
#: (:data:`hdl.channel.FAULTS`) are passed to every channel
FAULTS = ("ready_late",) + CHANNEL_FAULTS


def _bits(n: int) -> int:
    """Bits of an index into ``n`` entries (at least 1)."""
    return max(1, (n - 1).bit_length())


class PimModule(wiring.Component):
    """PIM module: C ``PimChannel``s behind one dispatcher with a page table and loops.

    Cycle-exact implementation of ``docs/module.md`` (read it for the full contract).
    Symbols: C = ``n_ch``, V = ``n_vpages``, R = ``n_req``, F = ``fifo_depth``,
    L = ``loop_len``, S = macro ``n_sets``, NP = ``n_pages`` = n_banks x S.

    Ports (clock ``clk``, synchronous reset ``rst``)
    -----
    host : In(stream.Signature(struct_layout(host_fields), always_ready=not host_ready))
        ``host.valid`` pushes ``host.payload`` (a host command word, fields of ``host_fields``)
        into the host FIFO (F registers).  No ready: a push while the FIFO holds F commands at
        t is dropped (``ovf`` = 1 the next cycle); else appended at the edge.  With
        ``host_ready``: ``host.ready`` = FIFO count < F (a function of the count register
        only), a transfer (valid & ready) is appended at the edge, nothing is dropped.
    out : Out(stream.Signature(struct_layout(mod_out_fields)))
        ``y``, ``bank``, ``o``, ``chan``: RD_OUT results of all channels, one output
        register loaded (when ``~out.valid | out.ready``) from the lowest-numbered channel with
        ``out.valid`` (only that channel sees ``out.ready`` = 1).
    err : Out(3)
        ``ModErr`` of the command rejected in the previous cycle, else 0.
    ovf : Out(1)
        A push was dropped in the previous cycle (QUEUE_FULL).
    err_count : Out(16)
        Rejected commands + dropped pushes since reset, saturating at 2**16 - 1.
    idle : Out(1)
        FIFO empty & loop mode NONE & every channel ``idle`` & no channel ``out.valid`` &
        ``~out.valid`` (nothing left to deliver; combinational).
    busy : Out(C * n_banks)
        Bit ``c*n_banks + b`` = channel c's ``busy[b]``.
    perr, perr_ch : Out(3), Out(C)
        ``channel.post`` only: the OR of the channels' ``perr`` (PostErr of a WR_SCALE) and
        bit c = channel c's ``perr`` != 0 (combinational, the channels' timing).

    Rules (one cycle t, decisions from the registers at t and the inputs at t)
    -----
    * At most one command consumed per cycle: mode NONE the FIFO head; CAPTURE copies the head
      to ``lbuf[cap]`` (no execution), at ``cap == n`` -> REPLAY (idx = iter = 0, offsets 0) or
      NONE if ``trip == 0``; REPLAY executes ``lbuf[idx]`` with ``vp + vp_off``, ``o + o_off``
      (full-width sums, 24-bit offsets), at ``idx == n``: idx = 0, iter += 1, offsets += vps/os,
      at ``iter == trip``: NONE.  ``trip = (tok[rid] + 2**per - 1) >> per`` (17 bits).
    * Checks in order, the first failing rejects (``err <= code``, consumed, no effect):
      BAD_OPCODE (op >= 10); BAD_FIELD (chmask 0 or >= 2**C, g >= n_gbuf, row >= n_in,
      o >= n_acc, vp >= V, rid >= R, pp >= NP, LOOP n == 0 or n > L, non-channel op other than
      NOP in REPLAY); UNMAPPED; NOT_OWNER; ALREADY_MAPPED (vp valid or pp mapped by any valid
      entry).
    * Options (each absent from the Verilog when off): MAC_AB (``channel.all_bank``, opcode
      10; stripe checks UNMAPPED / NOT_OWNER / NOT_STRIPE over pt[vp .. vp+B-1], BAD_FIELD if
      vp+B-1 >= V) -> channel MAC with ``ab = 1``, bank 0, set of pt[vp]; multi WR_INP
      (``wide_inp`` = K > 1; BAD_FIELD if popcount(chmask) > K): channel c gets data tile
      popcount(chmask & (2**c - 1)).
    * Channel ops: ``bank = pp >> log2(S)``, ``set = pp & (S-1)`` of ``pt[vp]``; ``cmd.valid``
      to every masked channel only in a cycle in which all of them have ``cmd.ready``; then
      consumed.  BARRIER is consumed only in a cycle in which every channel is ``idle``.
    """

    #: name of its Verilog module (``hdl.export``)
    verilog_name = "pim_module"

    def __init__(self, params: ModuleParams, *, fault: str | None = None,
                 sm_fault: str | None = None):
        silence_unused(self)              # not an unused design if the check below raises
        if not isinstance(params, ModuleParams):
            raise ValueError(f"PimModule: params must be ModuleParams, not {params!r}")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"PimModule: fault={fault!r} is not one of {', '.join(FAULTS)}")
        if sm_fault is not None and (sm_fault not in SM_FAULTS or not params.softmax):
            raise ValueError(f"PimModule: sm_fault={sm_fault!r} needs softmax=True and one of "
                             f"{', '.join(SM_FAULTS)}")
        silence_unused(self, False)
        self.params = params
        self.fault = fault
        self.host_layout = struct_layout(host_fields(params))
        self.out_layout = struct_layout(mod_out_fields(params))
        cp = params.channel
        sm_ports = {}
        if params.softmax:      # the softmax unit's result stream and beat errors
            sm_ports = {"sm_res": Out(stream.Signature(struct_layout(sm_res_fields(params)))),
                        "sm_err": Out(3)}
        if params.post:         # the channels' PostErr: OR, and which channels (bit c)
            sm_ports = {"perr": Out(3), "perr_ch": Out(params.n_ch)}
        super().__init__({
            "host": In(stream.Signature(self.host_layout, always_ready=not params.host_ready)),
            "out": Out(stream.Signature(self.out_layout)),
            "err": Out(3),
            "ovf": Out(1),
            "err_count": Out(16),
            "idle": Out(1),
            "busy": Out(params.n_ch * cp.n_banks),
            **sm_ports,
        })
        #: the softmax unit (submodule ``sm``; with ``softmax`` only)
        self.sm = (silence_unused(SoftmaxUnit(params.sm_params, fault=sm_fault))
                   if params.softmax else None)
        #: the C channels (submodules ``ch<c>``; used iff the module is)
        chf = fault if fault in CHANNEL_FAULTS else None
        self.channels = [silence_unused(PimChannel(cp, fault=chf)) for _ in range(params.n_ch)]
        self._fifo = RegFifo("fifo", self.host_layout, params.fifo_depth)
        #: host FIFO occupancy (0..F; an internal signal for amaranth.sim testbenches)
        self.fifo_level = self._fifo.count

    @property
    def children(self) -> dict:
        """Submodules: ``{"ch<c>": PimChannel}`` (and ``"sm"``: the softmax unit)."""
        d = {f"ch{c}": ch for c, ch in enumerate(self.channels)}
        if self.sm is not None:
            d["sm"] = self.sm
        return d

    def elaborate(self, platform):
        p = self.params
        cp, mp = p.channel, p.channel.macro
        C, V, R, F, L, NP, S = (p.n_ch, p.n_vpages, p.n_req, p.fifo_depth, p.loop_len,
                                p.n_pages, mp.n_sets)
        HL = self.host_layout
        AB, K, B = cp.all_bank, p.wide_inp, cp.n_banks
        MAC_AB = HostOp.MAC_AB
        m = Module()

        chans = self.channels
        for name, ch in self.children.items():
            place(m, name, ch, platform)        # channels (and the softmax unit "sm")
        m.d.comb += self.busy.eq(Cat(*(ch.busy for ch in chans)))
        ch_idle = all_of(ch.idle for ch in chans)

        # ---------------- state ----------------
        fifo = self._fifo
        f_n = fifo.count

        PPB = _bits(NP)
        pte = data.StructLayout({"valid": 1, "rid": _bits(R), "pp": PPB})
        pt = [Signal(pte, name=f"pt{v}") for v in range(V)]
        tok = [Signal(16, name=f"tok{r}") for r in range(R)]

        mode = Signal(2)
        n_lat = Signal(5)
        trip = Signal(17)
        vps = Signal(8)
        os_ = Signal(8, name="os")
        cap = Signal(range(L + 1))
        idx = Signal(_bits(L))           # (at least 1 bit: no zero-width wire for L = 1)
        itr = Signal(17, name="iter")
        vp_off = Signal(24)
        o_off = Signal(24)
        lbuf = [Signal(HL, name=f"lbuf{i}", reset_less=True) for i in range(L)]

        # ---------------- command under the dispatcher ----------------
        f_head = fifo.head
        l_cur = select(m, "lbuf_cur", idx, lbuf, HL)
        none, capture, replay = (mode == LoopMode.NONE, mode == LoopMode.CAPTURE,
                                 mode == LoopMode.REPLAY)
        f_nonempty = f_n != 0
        h = Signal(HL, name="h")
        have = Signal()              # a command is to be executed in this cycle
        m.d.comb += [
            h.eq(Mux(replay, l_cur, f_head)),
            have.eq((none & f_nonempty) | replay),
        ]
        vp_e = Signal(25)
        o_e = Signal(25)
        m.d.comb += [
            vp_e.eq(h.vp + Mux(replay, vp_off, 0)),
            o_e.eq(h.o + Mux(replay, o_off, 0)),
        ]
        op = h.op

        def op_in(*ops):
            return any_of([op == int(o) for o in ops])

        ab_ops = (MAC_AB,) if AB else ()        # MAC_AB (opcode 10) only with all_bank
        SM = p.softmax
        rd_sm = (HostOp.RD_SM,) if SM else ()     # softmax opcodes (11..14) only with softmax
        wr_prob = (HostOp.WR_PROB,) if SM else ()
        sm_cfg = (HostOp.SM_CFG,) if SM else ()
        POST = p.post
        wr_sc = (HostOp.WR_SCALE,) if POST else ()   # opcode 15 only with channel.post
        ch_ops = (*HOST_CHANNEL_OPS, *ab_ops, *rd_sm, *wr_prob, *wr_sc)
        ch_op = op_in(*ch_ops)
        pe = select(m, "pte", vp_e[:_bits(V)], pt, pte)

        bad_opcode = op >= host_op_limit(p)
        if SM and not AB:
            bad_opcode = bad_opcode | (op == MAC_AB)
        if POST:        # 15 valid; 11..14 (softmax) and 10 without all_bank are not
            bad_opcode = bad_opcode | op_in(*SM_HOST_OPS, *(() if AB else (MAC_AB,)))
        extra_bad = []
        if POST:        # WR_SCALE: row = the part (< chunks), vp and rid as WR_W
            extra_bad.append(op_in(HostOp.WR_SCALE)
                             & ((h.row >= cp.post.chunks) | (vp_e >= V) | (h.rid >= R)))
        if AB:          # the stripe vp .. vp+B-1 must lie in the page table
            extra_bad.append(op_in(MAC_AB) & (vp_e + (B - 1) >= V))
        if K > 1:       # a multi WR_INP carries at most K tiles
            extra_bad.append(op_in(HostOp.WR_INP) & h.multi
                             & (sum(h.chmask[i] for i in range(len(h.chmask))) > K))
        if SM:          # SM_CFG: P consecutive channels (P a power of two), 0 < tok[rid] <= N
            sp = p.sm_params
            sm_masks = {((1 << P_) - 1) << c0: (c0, P_.bit_length() - 1)
                        for P_ in (1, 2, 4, 8) if P_ <= sp.n_part for c0 in range(C - P_ + 1)}
            tok_sm = select(m, "tok_sm", h.rid, tok, 16)
            extra_bad.append(op_in(HostOp.SM_CFG)
                             & (~any_of([h.chmask == v for v in sm_masks])
                                | (tok_sm == 0) | (tok_sm > sp.max_context)))
        bad_field = any_of([
            ch_op & ((h.chmask == 0) | (h.chmask >= (1 << C))),
            op_in(HostOp.WR_INP, HostOp.MAC, *ab_ops, *wr_prob) & (h.g >= cp.n_gbuf),
            op_in(HostOp.WR_W) & (h.row >= mp.n_in),
            op_in(HostOp.MAC, HostOp.RD_OUT, *ab_ops, *rd_sm) & (o_e >= mp.n_acc),
            op_in(HostOp.WR_W, HostOp.MAC, HostOp.RD_OUT, HostOp.MAP, HostOp.UNMAP, *rd_sm)
            & (vp_e >= V),
            op_in(HostOp.WR_W, HostOp.MAC, HostOp.RD_OUT, HostOp.MAP, HostOp.UNMAP,
                  HostOp.SET_TOK, HostOp.LOOP, *ab_ops, *rd_sm, *sm_cfg) & (h.rid >= R),
            op_in(HostOp.MAP) & (h.pp >= NP),
            op_in(HostOp.LOOP) & ((h.n == 0) | (h.n > L)),
            replay & ~op_in(HostOp.NOP, *ch_ops),
            *extra_bad,
        ])
        pt_ops = op_in(HostOp.WR_W, HostOp.MAC, HostOp.RD_OUT, HostOp.UNMAP, *rd_sm, *wr_sc)
        unmapped = pt_ops & ~pe.valid
        not_owner = pt_ops & (pe.rid != h.rid)
        pp_taken = any_of([e.valid & (e.pp == h.pp) for e in pt])
        already = op_in(HostOp.MAP) & (pe.valid | pp_taken)
        if AB:
            # MAC_AB: every page of the stripe vp+b (b = 0..B-1) mapped, owned by rid, and
            # mapping pp = b*S + s with s = the set of pt[vp] (checked only if vp+B-1 < V)
            stripe = [pe] + [pte(select(m, f"pte_ab{b}", (vp_e + b)[:_bits(V)], pt, pte))
                             for b in range(1, B)]
            s_ab = pe.pp[:mp.set_bits]
            is_ab = op_in(MAC_AB)
            unmapped = unmapped | (is_ab & ~all_of(e.valid for e in stripe))
            not_owner = not_owner | (is_ab & any_of(e.rid != h.rid for e in stripe))
            not_stripe = is_ab & any_of(e.pp != b * S + s_ab for b, e in enumerate(stripe))

        code = Signal(3)
        with m.If(bad_opcode):
            m.d.comb += code.eq(ModErr.BAD_OPCODE)
        with m.Elif(bad_field):
            m.d.comb += code.eq(ModErr.BAD_FIELD)
        with m.Elif(unmapped):
            m.d.comb += code.eq(ModErr.UNMAPPED)
        with m.Elif(not_owner):
            m.d.comb += code.eq(ModErr.NOT_OWNER)
        with m.Elif(already):
            m.d.comb += code.eq(ModErr.ALREADY_MAPPED)
        if AB:
            with m.Elif(not_stripe):
                m.d.comb += code.eq(ModErr.NOT_STRIPE)
        reject = Signal()
        ok = Signal()                # passes every check (executes or waits)
        m.d.comb += [reject.eq(have & (code != 0)), ok.eq(have & (code == 0))]

        # ---------------- channel command (multicast) ----------------
        mask = h.chmask[:C]
        all_ready = all_of([~mask[c] | ch.cmd.ready for c, ch in enumerate(chans)])
        if SM:
            # per channel: destination FIFO of its pending results (1 = the softmax unit)
            TD = p.sm_tag_depth
            tcnt = [Signal(range(TD + 1), name=f"dst_n{c}") for c in range(C)]
            tbits = [Signal(TD, name=f"dst{c}") for c in range(C)]
            unit = self.sm
            # RD_OUT / RD_SM: room in every masked FIFO; WR_PROB: a tile in the unit
            room = all_of([~mask[c] | (tcnt[c] != TD) for c in range(C)])
            all_ready = all_ready & Mux(op_in(HostOp.RD_OUT, HostOp.RD_SM), room,
                                        Mux(op == HostOp.WR_PROB, unit.prob.valid, 1))
        offer = Signal()
        m.d.comb += offer.eq(ok & ch_op & all_ready)
        cmd = Signal(chans[0].cmd_layout, name="ch_cmd")
        sb = mp.set_bits
        bank = pe.pp[sb:] if PPB > sb else Const(0, 1)
        with m.Switch(op):
            for hop, cop in HOST_CHANNEL_OPS.items():
                with m.Case(int(hop)):
                    m.d.comb += cmd.op.eq(int(cop))
                    if hop in (HostOp.WR_W, HostOp.MAC, HostOp.RD_OUT):
                        m.d.comb += cmd.bank.eq(bank)
                    if hop in (HostOp.WR_W, HostOp.MAC):
                        m.d.comb += cmd.set.eq(pe.pp[:sb])
                    if hop == HostOp.WR_W:
                        m.d.comb += cmd.row.eq(h.row)
                    if hop in (HostOp.WR_INP, HostOp.MAC):
                        m.d.comb += cmd.g.eq(h.g)
                    if hop in (HostOp.MAC, HostOp.RD_OUT):
                        m.d.comb += cmd.o.eq(o_e)
                    if hop == HostOp.MAC:
                        m.d.comb += cmd.acc.eq(h.acc)
                    if hop in (HostOp.WR_INP, HostOp.WR_W):
                        m.d.comb += cmd.data.eq(h.data)
                    if hop == HostOp.WR_INP and POST:     # the tile's block exponent code
                        m.d.comb += cmd.xs.eq(h.xs)
            if AB:      # MAC_AB -> MAC with ab = 1, bank 0, the set of pt[vp]
                with m.Case(int(MAC_AB)):
                    m.d.comb += [cmd.op.eq(int(Op.MAC)), cmd.set.eq(pe.pp[:sb]),
                                 cmd.g.eq(h.g), cmd.o.eq(o_e), cmd.acc.eq(h.acc),
                                 cmd.ab.eq(1)]
            if SM:      # RD_SM -> RD_OUT; WR_PROB -> WR_INP of the unit's tile
                with m.Case(int(HostOp.RD_SM)):
                    m.d.comb += [cmd.op.eq(int(Op.RD_OUT)), cmd.bank.eq(bank), cmd.o.eq(o_e)]
                with m.Case(int(HostOp.WR_PROB)):
                    m.d.comb += [cmd.op.eq(int(Op.WR_INP)), cmd.g.eq(h.g),
                                 cmd.data.eq(unit.prob.payload.q)]
            if POST:    # WR_SCALE -> WR_W with sc = 1: row = part, fmt, the scale words
                with m.Case(int(HostOp.WR_SCALE)):
                    m.d.comb += [cmd.op.eq(int(Op.WR_W)), cmd.bank.eq(bank),
                                 cmd.set.eq(pe.pp[:sb]), cmd.row.eq(h.row), cmd.sc.eq(1),
                                 cmd.fmt.eq(h.fmt), cmd.data.eq(h.data)]
            with m.Default():                 # no channel command (valid is 0)
                m.d.comb += cmd.eq(0)
        DB = cp.data_bits
        for c, ch in enumerate(chans):
            m.d.comb += [ch.cmd.payload.eq(cmd), ch.cmd.valid.eq(offer & mask[c])]
            if K > 1 and c > 0:
                # multi WR_INP: channel c gets tile k = number of masked channels below c
                tiles = [h.data[k * DB:(k + 1) * DB] for k in range(min(c, K - 1) + 1)]
                k_c = Signal(range(c + 1), name=f"tile_ch{c}")
                m.d.comb += k_c.eq(sum(mask[i] for i in range(c)))
                tile = select(m, f"tile_data{c}", k_c, tiles, DB)
                with m.If((op == HostOp.WR_INP) & h.multi):
                    m.d.comb += ch.cmd.payload.data.eq(tile)

        # ---------------- consume ----------------
        consumed = Signal()          # the executed command (NONE or REPLAY) is consumed
        other = Const(1)
        if SM:          # SM_CFG / SM_ABORT: consumed when the unit takes the command
            sm_op = op_in(HostOp.SM_CFG, HostOp.SM_ABORT)
            other = Mux(sm_op, unit.cmd.ready, 1)
            ucmd = unit.cmd.payload
            c0_, pl_ = Signal(3, name="sm_chan0"), Signal(2, name="sm_plog2")
            with m.Switch(h.chmask):
                for v, (c0, pl) in sm_masks.items():
                    with m.Case(v):
                        m.d.comb += [c0_.eq(c0), pl_.eq(pl)]
                with m.Default():         # not a head mask: BAD_FIELD, never offered
                    m.d.comb += [c0_.eq(0), pl_.eq(0)]
            MB = sp.mul_bits
            m.d.comb += [
                unit.cmd.valid.eq(ok & sm_op),
                ucmd.op.eq(Mux(op == HostOp.SM_ABORT, int(SmOp.ABORT), int(SmOp.CFG))),
                ucmd.mul.eq(h.data[:MB]), ucmd.sh.eq(h.data[MB:MB + SH_BITS]),
                ucmd.dig.eq(h.data[MB + SH_BITS]), ucmd.plog2.eq(pl_), ucmd.chan0.eq(c0_),
                ucmd.count.eq(tok_sm),
                unit.prob.ready.eq(offer & (op == HostOp.WR_PROB)),
                self.sm_res.valid.eq(unit.res.valid), self.sm_res.payload.eq(unit.res.payload),
                unit.res.ready.eq(self.sm_res.ready), self.sm_err.eq(unit.in_err),
            ]
        m.d.comb += consumed.eq(reject | (ok & Mux(ch_op, all_ready,
                                                   Mux(op == HostOp.BARRIER, ch_idle, other))))
        pop = Signal()
        m.d.comb += pop.eq((none & consumed) | (capture & f_nonempty))

        # effects of a command that passed every check and is consumed (mode NONE or REPLAY)
        go = ok & consumed
        vpi = vp_e[:_bits(V)]
        with m.If(go & (op == HostOp.MAP)):
            write(m, vpi, pt, Cat(Const(1, 1), h.rid[:_bits(R)], h.pp[:PPB]))
        with m.If(go & (op == HostOp.UNMAP)):
            for v, e in enumerate(pt):
                with m.If(vpi == v):
                    m.d.sync += e.valid.eq(0)
        with m.If(go & (op == HostOp.SET_TOK)):
            write(m, h.rid, tok, h.count)

        tok_r = select(m, "tok_rid", h.rid, tok, 16)
        per_mask = Signal(16)
        with m.Switch(h.per):
            for k in range(16):
                with m.Case(k):
                    m.d.comb += per_mask.eq((1 << k) - 1)
        trip_new = Signal(17)
        m.d.comb += trip_new.eq((tok_r + per_mask) >> h.per)

        # ---------------- loop state machine ----------------
        with m.If(go & (op == HostOp.LOOP)):       # only reachable in mode NONE
            m.d.sync += [mode.eq(LoopMode.CAPTURE), cap.eq(0), n_lat.eq(h.n), vps.eq(h.vps),
                         os_.eq(h.os), trip.eq(trip_new)]
        with m.If(capture & f_nonempty):
            write(m, cap, lbuf, f_head)
            with m.If(cap + 1 == n_lat):
                m.d.sync += [mode.eq(Mux(trip == 0, LoopMode.NONE, LoopMode.REPLAY)),
                             idx.eq(0), itr.eq(0), vp_off.eq(0), o_off.eq(0)]
            with m.Else():
                m.d.sync += cap.eq(cap + 1)
        with m.If(replay & consumed):
            with m.If(idx + 1 == n_lat):
                m.d.sync += [idx.eq(0), itr.eq(itr + 1), vp_off.eq(vp_off + vps),
                             o_off.eq(o_off + os_)]
                with m.If(itr + 1 == trip):
                    m.d.sync += mode.eq(LoopMode.NONE)
            with m.Else():
                m.d.sync += idx.eq(idx + 1)

        # ---------------- host FIFO ----------------
        push = Signal()
        dropped = Signal()
        if not p.host_ready:
            m.d.comb += [push.eq(self.host.valid & (f_n != F)),
                         dropped.eq(self.host.valid & (f_n == F))]
        elif self.fault != "ready_late":
            # host__ready = FIFO room at t (a function of the count register only); a
            # transfer is appended at the edge, nothing is ever dropped
            m.d.comb += [self.host.ready.eq(f_n != F), push.eq(self.host.valid & self.host.ready)]
        else:           # FAULT: ready one cycle late (a transfer into a full FIFO is lost)
            late = Signal(init=1, name="ready_late")
            m.d.sync += late.eq(f_n != F)
            m.d.comb += [self.host.ready.eq(late),
                         push.eq(self.host.valid & late & (f_n != F))]
        fifo.build(m, push, self.host.payload, pop)

        # ---------------- err / ovf / err_count ----------------
        m.d.sync += [self.err.eq(Mux(reject, code, 0)), self.ovf.eq(dropped)]
        cnt = Signal(17)
        m.d.comb += cnt.eq(self.err_count + reject + dropped)
        m.d.sync += self.err_count.eq(Mux(cnt[16], 0xFFFF, cnt[:16]))

        # ---------------- output merge ----------------
        take = ~self.out.valid | self.out.ready
        lower = Const(0, 1)          # a lower-numbered channel has out.valid
        hvalid = [ch.out.valid for ch in chans]          # beats for the host
        if SM:
            hvalid = [ch.out.valid & ~tbits[c][0] for c, ch in enumerate(chans)]
            uvalid = [ch.out.valid & tbits[c][0] for c, ch in enumerate(chans)]
            uin = getattr(unit, "in")
            ulower = Const(0, 1)
            for c in reversed(range(C)):         # lowest-numbered wins (assigned last)
                with m.If(uvalid[c]):
                    m.d.comb += [uin.payload.x.eq(chans[c].out.payload.y),
                                 uin.payload.chan.eq(c)]
            utake = []
            for c in range(C):
                utake.append(uin.ready & uvalid[c] & ~ulower)
                ulower = ulower | uvalid[c]
            m.d.comb += uin.valid.eq(ulower)
        for c, ch in enumerate(chans):
            if SM:
                m.d.comb += ch.out.ready.eq((take & hvalid[c] & ~lower) | utake[c])
            else:
                m.d.comb += ch.out.ready.eq(take & ch.out.valid & ~lower)
            lower = lower | hvalid[c]
        any_out = lower
        y_sel = Signal(len(self.out.payload.y))
        b_sel = Signal(len(self.out.payload.bank))
        o_sel = Signal(len(self.out.payload.o))
        c_sel = Signal(len(self.out.payload.chan))
        for c in reversed(range(C)):             # lowest-numbered wins (assigned last)
            with m.If(hvalid[c]):
                m.d.comb += [y_sel.eq(chans[c].out.payload.y), b_sel.eq(chans[c].out.payload.bank),
                             o_sel.eq(chans[c].out.payload.o), c_sel.eq(c)]
        if POST:        # the stage's ovf flag of the beat, and the channels' PostErr
            v_sel = Signal(name="ovf_sel")
            for c in reversed(range(C)):
                with m.If(hvalid[c]):
                    m.d.comb += v_sel.eq(chans[c].out.payload.ovf)
            with m.If(take & any_out):
                m.d.sync += self.out.payload.ovf.eq(v_sel)
            perr = Const(0, 3)
            for ch in chans:
                perr = perr | ch.perr
            m.d.comb += [self.perr.eq(perr),
                         self.perr_ch.eq(Cat(*(ch.perr != 0 for ch in chans)))]
        with m.If(take & any_out):
            m.d.sync += [self.out.valid.eq(1), self.out.payload.y.eq(y_sel),
                         self.out.payload.bank.eq(b_sel), self.out.payload.o.eq(o_sel),
                         self.out.payload.chan.eq(c_sel)]
        with m.Elif(self.out.ready):
            m.d.sync += self.out.valid.eq(0)

        if SM:
            # destination FIFOs: pop the head on a transfer, append the dispatched RD_OUT /
            # RD_SM (1 = to the unit) after the pop
            for c, ch in enumerate(chans):
                pop_c = ch.out.valid & ch.out.ready
                push_c = offer & mask[c] & op_in(HostOp.RD_OUT, HostOp.RD_SM)
                base = Mux(pop_c, tbits[c] >> 1, tbits[c])
                pos = Signal(range(TD + 1), name=f"dst_pos{c}")
                m.d.comb += pos.eq(tcnt[c] - pop_c)
                d_bit = Signal(TD, name=f"dst_bit{c}")
                m.d.comb += d_bit.eq(Mux(push_c & (op == HostOp.RD_SM), 1, 0) << pos)
                m.d.sync += [tbits[c].eq(base | d_bit), tcnt[c].eq(tcnt[c] + push_c - pop_c)]
            any_all = any_of([ch.out.valid for ch in chans])
            m.d.comb += self.idle.eq((f_n == 0) & none & ch_idle & ~any_all & ~self.out.valid
                                     & unit.idle)
        else:
            m.d.comb += self.idle.eq((f_n == 0) & none & ch_idle & ~any_out & ~self.out.valid)
        return m
