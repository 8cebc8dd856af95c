"""PIM channel with a DCS controller (``B`` DIMC macros), implementing ``docs/channel.md``.

Encodings and parameters come from :mod:`spec.isa` (``ChannelParams``, ``Op``, ``cmd_fields``,
``out_fields``); every bank is one :class:`hdl.macro.DimcMacro` (``docs/macro.md``).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from spec.isa import ChannelParams, Op, cmd_fields, out_fields

from .fifo import RegFifo
from .hier import place
from .layouts import struct_layout
from .logic import all_of, any_of, tree
from .macro import DimcMacro
from .regfile import select, write

__all__ = ["PimChannel", "FAULTS"]

#: deliberately wrong DUTs (for tests that the lockstep checker reports them):
#: ``"ab_skip_last"``: an all-bank MAC (``all_bank``) does not drive the last bank's macro
FAULTS = ("ab_skip_last",)


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
        })
        mp, SB = params.macro, params.seq_bits
        #: the B macros (submodules ``bank<b>``; no unused-design warning of their own: they
        #: are used iff the channel is)
        self.banks = [silence_unused(DimcMacro(mp)) for _ in range(params.n_banks)]
        self._slot = slot = data.StructLayout({"v": 1, "seq": SB})
        self._io_lay = data.StructLayout({
            "op": 2, "bank": params.bank_bits, "set": mp.set_bits, "row": mp.row_bits,
            "g": params.gbuf_bits, "o": mp.dst_bits, "data": params.data_bits, "seq": SB,
            "dep": slot})
        ab = {"ab": 1} if params.all_bank else {}          # all-bank MAC flag (all_bank only)
        self._cq_lay = data.StructLayout({
            "bank": params.bank_bits, "set": mp.set_bits, "g": params.gbuf_bits,
            "o": mp.dst_bits, "acc": 1, **ab, "seq": SB, "dep": data.ArrayLayout(slot, 3)})
        self._ioq = RegFifo("ioq", self._io_lay, params.q_depth)
        self._cq = RegFifo("cq", self._cq_lay, params.q_depth)
        self._macq = [RegFifo(f"macq{b}", SB, params.mac_fifo_depth)
                      for b in range(params.n_banks)]
        self._io_go = Signal(name="io_go")
        self._cq_go = Signal(name="cq_go")
        #: internal signals for amaranth.sim testbenches (not ports)
        self.probe = {"io_go": self._io_go, "io_op": self._ioq.head.op,
                      "io_g": self._ioq.head.g, "cq_go": self._cq_go,
                      "ioq_n": self._ioq.count, "cq_n": self._cq.count}

    @property
    def children(self) -> dict:
        """Submodules: ``{"bank<b>": DimcMacro}``."""
        return {f"bank{b}": mac for b, mac in enumerate(self.banks)}

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
        for mac in banks:
            m.d.comb += mac.res.ready.eq(1)
        m.d.comb += [
            self.busy.eq(Cat(*(mac.busy for mac in banks))),
            self.err.eq(any_of(mac.err for mac in banks)),
        ]

        # ---------------- state ----------------
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
        mac_ready = select(m, "mac_ready", cqh.bank, [mac.req.ready for mac in banks], 1)
        if AB:          # an all-bank MAC issues when every macro is ready
            mac_ready = Mux(cqh.ab, all_of(mac.req.ready for mac in banks), mac_ready)
        io_go = self._io_go
        cq_can = Signal()      # everything but the macro's req.ready (which it must not gate)
        cq_go = self._cq_go
        n_res = sum(mac.res.valid for mac in banks)
        if p.dcs:
            io_dep_ok = ~ioh.dep.v | done_bit(ioh.dep.seq)
            cq_dep_ok = all_of(~cqh.dep[k].v | done_bit(cqh.dep[k].seq) for k in range(3))
            m.d.comb += [
                io_go.eq((ioq.count != 0) & io_dep_ok & io_res_ok),
                cq_can.eq((cq.count != 0) & cq_dep_ok),
            ]
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
        x_sel = select(m, "mac_x", cqh.g, gbuf, XW)
        for b, mac in enumerate(banks):
            mine = cqh.bank == b
            if AB and not (self.fault == "ab_skip_last" and b == B - 1):
                # all-bank: offered to bank b once every other bank is ready (so that all B
                # accept in the same cycle; valid does not wait for b's own ready)
                mine = Mux(cqh.ab, all_of(o.req.ready for o in banks if o is not mac), mine)
            m.d.comb += [
                mac.req.valid.eq(cq_can & mine),
                mac.req.payload.x.eq(x_sel),
                mac.req.payload.set.eq(cqh.set),
                mac.req.payload.acc.eq(cqh.acc),
                mac.req.payload.dst.eq(cqh.o),
                # WR_W: drive macro b's wr (wr.ready is always 1)
                mac.wr.valid.eq(io_go & (ioh.op == Op.WR_W) & (ioh.bank == b)),
                mac.wr.payload.data.eq(ioh.data[:WW]),
                mac.wr.payload.row.eq(ioh.row),
                mac.wr.payload.set.eq(ioh.set),
            ]
            macq[b].build(m, mac.req.valid & mac.req.ready, cqh.seq, mac.res.valid)

        # WR_INP
        with m.If(io_go & (ioh.op == Op.WR_INP)):
            write(m, ioh.g, gbuf, ioh.data[:XW])

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
        with m.Elif(out_valid & self.out.ready):
            m.d.sync += out_valid.eq(0)

        # ---------------- results ----------------
        for b, mac in enumerate(banks):
            with m.If(mac.res.valid):
                write(m, mac.res.payload.dst, obuf[b], mac.res.payload.y)

        # ---------------- done[W] ----------------
        for i in range(W):
            setters = [io_go & (ioh.seq == i)]
            setters += [mac.res.valid & (macq[b].head == i) for b, mac in enumerate(banks)]
            m.d.sync += done[i].eq((done[i] & ~(enq & (nseq == i))) | any_of(setters))

        m.d.comb += self.idle.eq((ioq.count == 0) & (cq.count == 0)
                                 & all_of(q.count == 0 for q in macq))
        return m

