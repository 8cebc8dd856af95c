"""PIM channel with a DCS controller (``B`` DIMC macros), implementing ``docs/channel.md``.

Encodings and parameters come from :mod:`spec.isa` (``ChannelParams``, ``Op``, ``cmd_fields``,
``out_fields``); every bank is one :class:`hdl.macro.DimcMacro` (``docs/macro.md``).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from spec.isa import ChannelParams, Op, cmd_fields, out_fields

from .blockfmt import FAULTS as POST_FAULTS
from .blockfmt import BlockfmtStage
from .dram_backend import DramBackend
from .dram_bank import DramBank
from .fifo import RegFifo
from .hier import place
from .layouts import struct_layout
from .logic import all_of, any_of, tree
from .macro import DimcMacro
from .regfile import select, write

__all__ = ["PimChannel", "FAULTS"]

#: deliberately wrong DUTs (for tests that the lockstep checker reports them):
#: ``"ab_skip_last"``: an all-bank MAC (``all_bank``) does not drive the last bank's macro
#: (with DRAM banks: is not scheduled on the last bank);
#: ``"dram_col_early"`` (``bank_kind="dram"`` only): the first column MAC of every MAC is
#: presented one cycle before its scheduled cycle (the bank holds it when it comes too early
#: after the ACT: dropped, ``err[0]``, a wrong result; else the result is one cycle early);
#: ``"post_<f>"`` (``post`` only): every bank's block post-processing stage has fault f of
#: :data:`hdl.blockfmt.FAULTS` (e.g. ``"post_bias_off"``: every scaled term doubled)
FAULTS = ("ab_skip_last", "dram_col_early") + tuple(f"post_{f}" for f in POST_FAULTS)


class PimChannel(wiring.Component):
    """One PIM channel: B DIMC macros, GBuf, OBuf, I/O + compute queues, DCS controller.

    Cycle-exact implementation of ``docs/channel.md`` (read it for the full contract).

    Parameters
    ----------
    params : ChannelParams
        ``n_banks`` = B, ``n_gbuf`` = G, ``q_depth`` = Q, ``window`` = W, ``macro.n_acc`` = E,
        ``dcs`` (elaboration-time) selects the DCS issue rule (True) or the in-order baseline.

    Ports (clock ``clk``, synchronous reset ``rst``)
    -----
    cmd : In(stream.Signature(struct_layout(cmd_fields)))
        ``op, bank, set, row, g, o, acc, data`` (LSB first).  ``cmd.ready`` = target queue
        (``cq`` for MAC, else ``ioq``) holds < Q entries ``& done[nseq]``; it depends
        combinationally on ``cmd.payload.op``.
    out : Out(stream.Signature(struct_layout(out_fields)))
        ``y`` (n_out x acc_width), ``bank``, ``o``: the output register, loaded by RD_OUT.
    idle : Out(1)
        Both queues empty and no MAC awaiting its result (ignores ``out.valid``).
    busy : Out(B)
        Bit b = macro b's ``busy``.
    err : Out(2)
        OR of the macros' ``err``.

    Rules (one cycle t; all decisions from the registers at t and the inputs at t)
    -----
    * Enqueue: the beat is pushed with ``seq = nseq`` and its dependencies read from the table
      (WR_INP: gr[g]; WR_W: wr[b][s]; MAC: gw[g], ww[b][s], orr[b][o]; RD_OUT: ow[b][o]), each
      recorded only if the slot is valid and ``done[slot.seq] = 0``; the table slots are
      written with (1, seq), ``done[nseq] <= 0``, ``nseq += 1 (mod W)``.  Every edge clears
      each queued dependency and invalidates each table slot whose ``done[seq] = 1`` (ids are
      reused mod W; a table write at the same edge wins).
    * Issue, DCS: the ``ioq`` and ``cq`` heads issue independently when every valid dependency
      is done and the resource is free (RD_OUT: ``~out_valid | out.ready``; MAC: macro
      ``req.ready``).  In-order: a head issues only if ``seq == iss`` and ``inflight == 0``.
    * Effects: WR_INP ``gbuf[g] <= data``; WR_W drives macro b's ``wr`` in cycle t; RD_OUT
      loads the output register; these three set ``done[seq]`` at the edge.  MAC drives macro
      b's ``req`` with ``x = gbuf[g]`` in cycle t and pushes ``seq`` on ``macq[b]``.
    * Results (``res.ready`` = 1): ``obuf[b][dst] <= y``, ``done[macq[b] head] <= 1``, pop.

    * All-bank MAC (``all_bank``, MAC with ``ab = 1``; docs/channel.md, "All-bank MAC"):
      dependencies gw[g] and the youngest pending of ww[0..B-1][set] and of orr[0..B-1][o];
      recorded in gr[g] and in wr[b][set], ow[b][o] of every bank; issues when every macro
      is ready (bank b's req.valid waits for the other banks' ready only), pushes its seq on
      every macq; in order, ``inflight += B``.  Without ``all_bank`` none of this logic (or
      the ``ab`` field) exists: the Verilog is the original one.

    * DRAM banks (``bank_kind="dram"``, docs/dram_channel.md): every bank is a
      :class:`hdl.dram_bank.DramBank` behind :class:`hdl.dram_backend.DramBackend` (the
      scheduler fixes every DRAM command's cycle at issue; executors present them).  The
      heads also need the DRAM rules (``ioready``, ``R[b]``, refresh look-ahead and gate,
      RD_OUT column-bus slot; no MAC in a WR_W's cycle); WR_INP / RD_OUT are done after
      their bus cost, WR_W at its closing PRE, a MAC with its bank's ``res`` beat; in order,
      ``quiet`` = done[iss - 1].  ``busy[b]`` = executor b holds a command not yet
      presented; ``err`` = (a bank's ``err`` or a scheduled command not accepted, a bank's
      ``ref_lost``); ``idle`` = queues empty and every done bit set.  With ``"dimc"`` none
      of this exists (the Verilog is the DIMC channel's).

    Latency: a command enqueued at t issues at t+1 at the earliest; a MAC issued at t has its
    result in OBuf (done) from t + x_bits + tree_stages + 2; RD_OUT issued at t gives
    ``out.valid`` at t+1.  Reset: everything except the macros' weight SRAM, the GBuf data and
    the queue/macq storage (unobservable: only valid entries are ever read).
    """

    #: name of its Verilog module (``hdl.export``)
    verilog_name = "pim_channel"

    def __init__(self, params: ChannelParams, *, fault: str | None = None):
        silence_unused(self)              # not an unused design if the check below raises
        if not isinstance(params, ChannelParams):
            raise ValueError(f"PimChannel: params must be ChannelParams, not {params!r}")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"PimChannel: fault={fault!r} is not one of {', '.join(FAULTS)}")
        if fault == "dram_col_early" and params.bank_kind != "dram":
            raise ValueError("PimChannel: fault='dram_col_early' needs bank_kind='dram'")
        if fault is not None and fault.startswith("post_") and params.post is None:
            raise ValueError(f"PimChannel: fault={fault!r} needs post")
        silence_unused(self, False)
        self.params = params
        self.fault = fault
        self.cmd_layout = struct_layout(cmd_fields(params))
        self.out_layout = struct_layout(out_fields(params))
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "out": Out(stream.Signature(self.out_layout)),
            "idle": Out(1),
            "busy": Out(params.n_banks),
            "err": Out(2),
            # PostErr of a WR_SCALE (post only), OR over the banks' stages
            **({"perr": Out(3)} if params.post is not None else {}),
        })
        mp, SB = params.macro, params.seq_bits
        #: the B macros (submodules ``bank<b>``; no unused-design warning of their own: they
        #: are used iff the channel is)
        self.dram = params.bank_kind == "dram"
        if self.dram:        # DRAM-PIM banks behind the DRAM back-end (docs/dram_channel.md)
            self.banks = [silence_unused(DramBank(params.dram_bank))
                          for _ in range(params.n_banks)]
        else:
            self.banks = [silence_unused(DimcMacro(mp)) for _ in range(params.n_banks)]
        self._slot = slot = data.StructLayout({"v": 1, "seq": SB})
        self._io_lay = data.StructLayout({
            "op": 2, "bank": params.bank_bits, "set": mp.set_bits, "row": mp.row_bits,
            "g": params.gbuf_bits, "o": mp.dst_bits, "data": params.data_bits, "seq": SB,
            "dep": slot,
            **({"sc": 1, "fmt": 2, "xs": 8} if params.post is not None else {})})
        ab = {"ab": 1} if params.all_bank else {}          # all-bank MAC flag (all_bank only)
        self._cq_lay = data.StructLayout({
            "bank": params.bank_bits, "set": mp.set_bits, "g": params.gbuf_bits,
            "o": mp.dst_bits, "acc": 1, **ab, "seq": SB, "dep": data.ArrayLayout(slot, 3)})
        self._ioq = RegFifo("ioq", self._io_lay, params.q_depth)
        self._cq = RegFifo("cq", self._cq_lay, params.q_depth)
        # (DRAM: at most two MACs per bank await their result: the one whose last column is
        # in cycle R[b] and the one that issues then)
        self._macq = [RegFifo(f"macq{b}", SB, 2 if self.dram else params.mac_fifo_depth)
                      for b in range(params.n_banks)]
        #: block post-processing stage behind every bank (``post``; docs/channel.md, "Block
        #: post-processing stage"): the stages, the per-MAC (set, acc, xs, xsum) FIFO filled at
        #: issue and read by the macro's result, the seq FIFO of the MACs in the stage
        self.posts = None
        if params.post is not None:
            q = params.post
            sf = fault[5:] if fault is not None and fault.startswith("post_") else None
            self.posts = [silence_unused(BlockfmtStage(q, fault=sf))
                          for _ in range(params.n_banks)]
            self._side_lay = data.StructLayout({"set": mp.set_bits, "acc": 1, "xs": 8,
                                                "xsum": q.xsum_bits})
            self._pside = [RegFifo(f"pside{b}", self._side_lay, params.mac_fifo_depth)
                           for b in range(params.n_banks)]
            self._pq = [RegFifo(f"pq{b}", SB, 3) for b in range(params.n_banks)]
        self._io_go = Signal(name="io_go")
        self._cq_go = Signal(name="cq_go")
        #: internal signals for amaranth.sim testbenches (not ports)
        self.probe = {"io_go": self._io_go, "io_op": self._ioq.head.op,
                      "io_g": self._ioq.head.g, "cq_go": self._cq_go,
                      "ioq_n": self._ioq.count, "cq_n": self._cq.count}

    @property
    def children(self) -> dict:
        """Submodules: ``{"bank<b>": DimcMacro}`` (``DramBank`` with ``bank_kind="dram"``),
        and ``{"post<b>": BlockfmtStage}`` with ``post``."""
        ch = {f"bank{b}": mac for b, mac in enumerate(self.banks)}
        for b, st in enumerate(self.posts or ()):
            ch[f"post{b}"] = st
        return ch

    def elaborate(self, platform):
        p, mp = self.params, self.params.macro
        B, G, Q, W, E = p.n_banks, p.n_gbuf, p.q_depth, p.window, mp.n_acc
        AB = p.all_bank
        SB, D = p.seq_bits, p.mac_fifo_depth
        XW, WW, YW = mp.n_in * mp.x_bits, mp.n_out * mp.w_bits, mp.n_out * mp.acc_width
        m = Module()

        banks = self.banks
        for name, mac in self.children.items():
            place(m, name, mac, platform)
        dram = self.dram
        if dram:
            be = DramBackend(p, banks, fault=self.fault)
            m.d.comb += [self.busy.eq(be.busy), self.err.eq(be.err)]
        elif self.posts is not None:    # the macro's result waits for its stage
            for mac, st in zip(banks, self.posts):
                m.d.comb += mac.res.ready.eq(st.inp.ready)
            m.d.comb += [
                self.busy.eq(Cat(*(mac.busy for mac in banks))),
                self.err.eq(any_of(mac.err for mac in banks)),
                self.perr.eq(tree([st.err for st in self.posts], lambda a, b: a | b)),
            ]
        else:
            for mac in banks:
                m.d.comb += mac.res.ready.eq(1)
            m.d.comb += [
                self.busy.eq(Cat(*(mac.busy for mac in banks))),
                self.err.eq(any_of(mac.err for mac in banks)),
            ]

        # ---------------- state ----------------
        posts = self.posts
        if posts is not None:           # OBuf holds the stage's binary32 codes and ovf
            YW = mp.n_out * 32
            obuf_ovf = [Signal(E, name=f"obuf_ovf_b{b}") for b in range(B)]
            gxs = [Signal(8, name=f"gbuf_xs{g}", reset_less=True) for g in range(G)]
            gxsum = [Signal(p.post.xsum_bits, name=f"gbuf_xsum{g}", reset_less=True)
                     for g in range(G)]
        gbuf = [Signal(XW, name=f"gbuf{g}", reset_less=True) for g in range(G)]
        obuf = [[Signal(YW, name=f"obuf_b{b}_e{e}") for e in range(E)] for b in range(B)]
        done = Signal(W, init=(1 << W) - 1)
        nseq = Signal(SB)
        slot = self._slot

        def table(name, n):
            return [Signal(slot, name=f"{name}{i}") for i in range(n)]

        gw, gr = table("gw", G), table("gr", G)
        S = mp.n_sets
        ww, wr = table("ww", B * S), table("wr", B * S)        # index b*S + s
        ow, orr = table("ow", B * E), table("orr", B * E)      # index b*E + o

        ioq, cq, macq = self._ioq, self._cq, self._macq

        def done_bit(seq):
            return done.bit_select(seq, 1)

        # ---------------- enqueue ----------------
        c = self.cmd.payload
        is_mac = Signal()
        enq = Signal()
        m.d.comb += [
            is_mac.eq(c.op == Op.MAC),
            self.cmd.ready.eq(Mux(is_mac, cq.count < Q, ioq.count < Q) & done_bit(nseq)),
            enq.eq(self.cmd.valid & self.cmd.ready),
        ]
        i_bs = Cat(c.set, c.bank)
        i_bo = Cat(c.o, c.bank)
        d_gw = slot(select(m, "d_gw", c.g, gw, slot.size))
        d_gr = slot(select(m, "d_gr", c.g, gr, slot.size))
        d_ww = slot(select(m, "d_ww", i_bs, ww, slot.size))
        d_wr = slot(select(m, "d_wr", i_bs, wr, slot.size))
        d_ow = slot(select(m, "d_ow", i_bo, ow, slot.size))
        d_or = slot(select(m, "d_orr", i_bo, orr, slot.size))

        def pending(name, d):
            """The slot as a dependency: valid only if it names a command still pending."""
            dep = Signal(slot, name=name)
            m.d.comb += [dep.v.eq(d.v & ~done_bit(d.seq)), dep.seq.eq(d.seq)]
            return dep

        # (a MAC beat never enters the ioq)
        io_dep = pending("io_dep", slot(Mux(c.op == Op.WR_INP, d_gr,
                                            Mux(c.op == Op.WR_W, d_wr, d_ow))))
        io_in = Signal(self._io_lay)
        cq_in = Signal(self._cq_lay)
        m.d.comb += [
            io_in.op.eq(c.op), io_in.bank.eq(c.bank), io_in.set.eq(c.set), io_in.row.eq(c.row),
            io_in.g.eq(c.g), io_in.o.eq(c.o), io_in.data.eq(c.data), io_in.seq.eq(nseq),
            io_in.dep.eq(io_dep),
            cq_in.bank.eq(c.bank), cq_in.set.eq(c.set), cq_in.g.eq(c.g), cq_in.o.eq(c.o),
            *((io_in.sc.eq(c.sc), io_in.fmt.eq(c.fmt), io_in.xs.eq(c.xs))
              if p.post is not None else ()),
            cq_in.acc.eq(c.acc), cq_in.seq.eq(nseq),
            cq_in.dep[0].eq(pending("cq_dep0", d_gw)),
            *((cq_in.dep[1].eq(pending("cq_dep1", d_ww)),
               cq_in.dep[2].eq(pending("cq_dep2", d_or))) if not AB else ()),
        ]
        if AB:
            # all-bank MAC (docs/channel.md, "All-bank MAC"): of the B slots ww[b][set]
            # (orr[b][o]) the youngest pending one, i.e. the smallest (nseq - seq) mod W among
            # those valid with done = 0
            def youngest(name, slots):
                cands = [pending(f"{name}_c{b}", s) for b, s in enumerate(slots)]

                def pick(a, b):
                    age_a, age_b = Signal(SB), Signal(SB)
                    out = Signal(slot)
                    m.d.comb += [age_a.eq(nseq - a.seq), age_b.eq(nseq - b.seq),
                                 out.eq(Mux(a.v & (~b.v | (age_a < age_b)), a, b))]
                    return out
                return tree(cands, pick)

            ab_ww = youngest("ab_ww", [slot(select(m, f"ab_ww{b}", c.set, ww[b * S:(b + 1) * S],
                                                   slot.size)) for b in range(B)])
            ab_or = youngest("ab_or", [slot(select(m, f"ab_or{b}", c.o, orr[b * E:(b + 1) * E],
                                                   slot.size)) for b in range(B)])
            m.d.comb += [
                cq_in.ab.eq(c.ab),
                cq_in.dep[1].eq(Mux(c.ab, ab_ww, pending("cq_dep1", d_ww))),
                cq_in.dep[2].eq(Mux(c.ab, ab_or, pending("cq_dep2", d_or))),
            ]
        new_slot = Cat(Const(1, 1), nseq)
        # every edge: a table slot naming a done command is invalidated (ids are reused mod W);
        # the enqueue writes below come later, so a write to the same slot wins
        for s in gw + gr + ww + wr + ow + orr:
            with m.If(done_bit(s.seq)):
                m.d.sync += s.v.eq(0)
        with m.If(enq):
            m.d.sync += nseq.eq(nseq + 1)
            with m.If(c.op == Op.WR_INP):
                write(m, c.g, gw, new_slot)
            with m.If(c.op == Op.WR_W):
                write(m, i_bs, ww, new_slot)
            with m.If(c.op == Op.MAC):
                write(m, c.g, gr, new_slot)
                if not AB:
                    write(m, i_bs, wr, new_slot)
                    write(m, i_bo, ow, new_slot)
                else:
                    with m.If(c.ab):             # the last reader/writer of every bank's set/o
                        for b in range(B):
                            write(m, c.set, wr[b * S:(b + 1) * S], new_slot)
                            write(m, c.o, ow[b * E:(b + 1) * E], new_slot)
                    with m.Else():
                        write(m, i_bs, wr, new_slot)
                        write(m, i_bo, ow, new_slot)
            with m.If(c.op == Op.RD_OUT):
                write(m, i_bo, orr, new_slot)

        # ---------------- issue ----------------
        ioh, cqh = ioq.head, cq.head
        out_valid = self.out.valid
        io_res_ok = (ioh.op != Op.RD_OUT) | ~out_valid | self.out.ready
        if dram:        # + the DRAM rules (ioready, WR_W / RD_OUT slots; MAC: R, refresh)
            io_res_ok = io_res_ok & be.io_ok
            mac_ready = be.cq_ok
        else:
            mac_ready = select(m, "mac_ready", cqh.bank, [mac.req.ready for mac in banks], 1)
        if AB and not dram:          # an all-bank MAC issues when every macro is ready
            mac_ready = Mux(cqh.ab, all_of(mac.req.ready for mac in banks), mac_ready)
        io_go = self._io_go
        cq_can = Signal()      # everything but the macro's req.ready (which it must not gate)
        cq_go = self._cq_go
        n_res = 0 if dram else sum(mac.res.valid for mac in banks)
        if posts is not None:           # a MAC is done when its stage output is in OBuf
            n_res = sum(st.out.valid for st in posts)
        if p.dcs:
            io_dep_ok = ~ioh.dep.v | done_bit(ioh.dep.seq)
            cq_dep_ok = all_of(~cqh.dep[k].v | done_bit(cqh.dep[k].seq) for k in range(3))
            m.d.comb += [
                io_go.eq((ioq.count != 0) & io_dep_ok & io_res_ok),
                cq_can.eq((cq.count != 0) & cq_dep_ok),
            ]
        elif dram:
            # in order with DRAM banks: quiet = the previous command (iss - 1) is done (at
            # most one issued command is pending, so no other id can alias it)
            iss = Signal(SB)
            quiet = done_bit((iss - 1)[:SB])
            m.d.comb += [
                io_go.eq((ioq.count != 0) & (ioh.seq == iss) & quiet & io_res_ok),
                cq_can.eq((cq.count != 0) & (cqh.seq == iss) & quiet),
            ]
            with m.If(io_go | cq_go):
                m.d.sync += iss.eq(iss + 1)
        else:
            iss = Signal(SB)
            inflight = Signal(range(B * D + 1))
            quiet = inflight == 0
            m.d.comb += [
                io_go.eq((ioq.count != 0) & (ioh.seq == iss) & quiet & io_res_ok),
                cq_can.eq((cq.count != 0) & (cqh.seq == iss) & quiet),
            ]
            with m.If(io_go | cq_go):
                m.d.sync += iss.eq(iss + 1)
            if not AB:
                m.d.sync += inflight.eq(inflight + cq_go - n_res)
            else:       # an all-bank MAC: B macro requests in flight
                m.d.sync += inflight.eq(inflight + Mux(cq_go, Mux(cqh.ab, B, 1), 0) - n_res)
        m.d.comb += cq_go.eq(cq_can & mac_ready)
        # every edge: a queued dependency that is done is cleared, so a dependency always names
        # a pending command even when its id is reused (mod W); a push below overrides this
        for e in ioq.mem:
            with m.If(done_bit(e.dep.seq)):
                m.d.sync += e.dep.v.eq(0)
        for e in cq.mem:
            for k in range(3):
                with m.If(done_bit(e.dep[k].seq)):
                    m.d.sync += e.dep[k].v.eq(0)
        ioq.build(m, enq & ~is_mac, io_in, io_go)
        cq.build(m, enq & is_mac, cq_in, cq_go)

        # MAC: drive macro b's req; x from one GBuf mux shared by all banks
        if dram:        # the scheduler and the executors drive the banks
            be.build(m, gbuf=gbuf, io=ioh, cq=cqh, io_go=io_go, cq_go=cq_go)
            for b, bk in enumerate(banks):
                macq[b].build(m, be.mac_push[b], cqh.seq, bk.res.valid)
        x_sel = select(m, "mac_x", cqh.g, gbuf, XW) if not dram else None
        for b, mac in enumerate(banks if not dram else ()):
            mine = cqh.bank == b
            if AB and not (self.fault == "ab_skip_last" and b == B - 1):
                # all-bank: offered to bank b once every other bank is ready (so that all B
                # accept in the same cycle; valid does not wait for b's own ready)
                mine = Mux(cqh.ab, all_of(o.req.ready for o in banks if o is not mac), mine)
            is_wr = io_go & (ioh.op == Op.WR_W) & (ioh.bank == b)
            m.d.comb += [
                mac.req.valid.eq(cq_can & mine),
                mac.req.payload.x.eq(x_sel),
                mac.req.payload.set.eq(cqh.set),
                # with post the stage accumulates: the macro always starts from 0
                mac.req.payload.acc.eq(cqh.acc if posts is None else 0),
                mac.req.payload.dst.eq(cqh.o),
                # WR_W: drive macro b's wr (wr.ready is always 1); not a WR_SCALE (post)
                mac.wr.valid.eq(is_wr if posts is None else is_wr & ~ioh.sc),
                mac.wr.payload.data.eq(ioh.data[:WW]),
                mac.wr.payload.row.eq(ioh.row),
                mac.wr.payload.set.eq(ioh.set),
            ]
            macq[b].build(m, mac.req.valid & mac.req.ready, cqh.seq, mac.res.valid)
            if posts is not None:
                self._post_bank(m, b, mac, is_wr, gxs, gxsum, cqh, ioh)

        # WR_INP
        with m.If(io_go & (ioh.op == Op.WR_INP)):
            write(m, ioh.g, gbuf, ioh.data[:XW])
            if posts is not None:       # the tile's exponent code and element sum
                write(m, ioh.g, gxs, ioh.xs)
                write(m, ioh.g, gxsum, self._xsum(m, ioh.data[:XW]))

        # RD_OUT and the output register: one mux over the B*E OBuf entries
        y_sel = select(m, "obuf_rd", Cat(ioh.o, ioh.bank),
                        [obuf[b][e] for b in range(B) for e in range(E)], YW)
        with m.If(io_go & (ioh.op == Op.RD_OUT)):
            m.d.sync += [
                self.out.payload.y.eq(y_sel),
                self.out.payload.bank.eq(ioh.bank),
                self.out.payload.o.eq(ioh.o),
                out_valid.eq(1),
            ]
            if posts is not None:
                m.d.sync += self.out.payload.ovf.eq(
                    select(m, "obuf_ovf_rd", Cat(ioh.o, ioh.bank),
                           [obuf_ovf[b][e] for b in range(B) for e in range(E)], 1))
        with m.Elif(out_valid & self.out.ready):
            m.d.sync += out_valid.eq(0)

        # ---------------- results ----------------
        for b, mac in enumerate(banks if posts is None else ()):
            with m.If(mac.res.valid):
                write(m, mac.res.payload.dst, obuf[b], mac.res.payload.y)
        for b, st in enumerate(posts or ()):      # post: the stage's output beat (ready = 1)
            with m.If(st.out.valid):
                write(m, st.out.payload.dst, obuf[b], st.out.payload.v)
                for e in range(E):
                    with m.If(st.out.payload.dst == e):
                        m.d.sync += obuf_ovf[b][e].eq(st.out.payload.ovf)

        # ---------------- done[W] ----------------
        for i in range(W):
            if dram:    # I/O commands are done after their bus cost, WR_W at its PRE
                setters = [v & (sq == i) for v, sq in be.done_set]
            else:
                setters = [io_go & (ioh.seq == i)]
            if posts is None:
                setters += [mac.res.valid & (macq[b].head == i) for b, mac in enumerate(banks)]
            else:
                setters += [st.out.valid & (self._pq[b].head == i) for b, st in enumerate(posts)]
            m.d.sync += done[i].eq((done[i] & ~(enq & (nseq == i))) | any_of(setters))

        if dram:        # every issued command done (refresh activity not counted)
            m.d.comb += self.idle.eq((ioq.count == 0) & (cq.count == 0) & done.all())
        else:
            m.d.comb += self.idle.eq((ioq.count == 0) & (cq.count == 0)
                                     & all_of(q.count == 0 for q in macq + (self._pq if posts
                                                                            else [])))
        return m

    def _xsum(self, m, tile):
        """Signed sum of the n_in x_bits elements of ``tile`` (post: WR_INP), an adder tree."""
        mp = self.params.macro
        xb = mp.x_bits
        els = [tile[i * xb:(i + 1) * xb].as_signed() for i in range(mp.n_in)]
        out = Signal(signed(self.params.post.xsum_bits), name="wr_inp_xsum")
        m.d.comb += out.eq(tree(els, lambda a, b: a + b))
        return out

    def _post_bank(self, m, b, mac, is_wr, gxs, gxsum, cqh, ioh):
        """Bank b's stage (``post``): ``inp`` = the macro's result with its MAC's (set, acc,
        xs, xsum) from ``pside[b]`` (pushed at issue with GBuf g's scale and sum), ``sw`` = a
        WR_SCALE issuing to b, ``out.ready`` = 1 (into OBuf); ``pq[b]`` = seq of the MACs in
        the stage (pushed when the result enters it, popped with its output beat)."""
        st, side, pq = self.posts[b], self._pside[b], self._pq[b]
        q = self.params.post
        sv = Signal(self._side_lay, name=f"pside_in{b}")
        m.d.comb += [
            sv.set.eq(cqh.set), sv.acc.eq(cqh.acc),
            sv.xs.eq(select(m, f"mac_xs{b}", cqh.g, gxs, 8)),
            sv.xsum.eq(select(m, f"mac_xsum{b}", cqh.g, gxsum, q.xsum_bits)),
        ]
        take = mac.res.valid & st.inp.ready
        side.build(m, mac.req.valid & mac.req.ready, sv, take)
        pq.build(m, take, self._macq[b].head, st.out.valid)
        hd = side.head
        m.d.comb += [
            st.inp.valid.eq(mac.res.valid),
            st.inp.payload.y.eq(mac.res.payload.y),
            st.inp.payload.dst.eq(mac.res.payload.dst),
            st.inp.payload.set.eq(hd.set),
            st.inp.payload.acc.eq(hd.acc),
            st.inp.payload.xs.eq(hd.xs),
            st.inp.payload.xsum.eq(hd.xsum),
            st.sw.valid.eq(is_wr & ioh.sc),
            st.sw.payload.words.eq(ioh.data[:q.lanes * 32]),
            st.sw.payload.part.eq(ioh.row[:q.part_bits]),
            st.sw.payload.set.eq(ioh.set),
            st.sw.payload.fmt.eq(ioh.fmt),
            st.out.ready.eq(1),
        ]

