"""Softmax unit of the module hub, implementing ``docs/softmax.md`` (written from it alone).

Structure (one clock ``clk``, synchronous active-high reset ``rst``; every register resets to 0
except the score buffer, which powers up as 0 and keeps its contents through ``rst``):

* control: ``st`` (:class:`spec.softmax.SmState`), the CFG registers, per partition
  ``seen`` / ``m`` / ``l`` / ``nb``, the merged ``mg`` / ``lg``, the tile counter ``k``, the
  code sums ``qsum`` / ``qlo`` and ``sat``; the head geometry (n_j, B_j, tc_n, K) is a
  combinational function of ``count``, ``plog2`` and ``dig``;
* scale: NO multipliers (A x MB) with the round-half-up shift and saturation to XW bits;
* exp unit (:class:`hdl.softmax_exp.ExpUnit`, built into this module): ``max(NO, NI)``
  exponential lanes ``e(d)``, shared between INGEST (``m' - x_i``) and EMIT (``mg - x``),
  and ``n_part`` rescale units ``RS(l, d)`` (unit 0 serves the beat in INGEST, all of them
  the merge in MERGE), reading the exp table (a ``Memory`` computed from
  :func:`spec.softmax.exp_table` at construction) through one read port each;
* probability digits: NI lanes of ``y = e * QS``, ``hi`` and ``lo`` by the contract's
  rounding shifts, padding lanes 0, and the code sums for ``qsum`` / ``qlo``;
* score buffer: a ``Memory`` of N / W rows of W = max(NO, NI) scaled scores (XW bits each),
  written NO scores per beat (NO-granular enables), read one row per tile through a
  synchronous read port whose address is that of the *next* tile (the value ``k`` takes at
  the edge), so the row of tile ``k`` is on the port in the cycle the tile is computed.  A
  tile is the NI-score window of the row at the tile's offset (a multiple of min(NO, NI)).

Every output is a register (or, for ``cmd.ready``, ``in.ready`` and ``idle``, a function of
the registers and the ``cmd`` payload), so the unit has no combinational input-to-output
path.  The timing is that of the contract: a beat per cycle, MERGE one cycle, a tile per
cycle while the tile register is free.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from spec.softmax import (CHAN_BITS, COUNT_BITS, SH_BITS, SmErr, SmOp, SmState, SoftmaxParams,
                          cmd_fields, exp_table, in_fields, prob_fields, res_fields)

from .layouts import struct_layout
from .logic import tree
from .softmax_exp import ExpUnit

__all__ = ["SoftmaxUnit", "FAULTS"]

#: Deliberate faults that can be built into the DUT (to prove that the tests catch them):
#: ``"exp_entry"``: exp table entry T[2**(TB-1)] one too large; ``"no_rescale"``: the online
#: update adds to l[j] without rescaling it to the new max; ``"pad_max"``: padding lanes of a
#: partial beat take part in the beat max; ``"merge2"``: MERGE lasts two cycles (every tile
#: one cycle late); ``"no_extra"``: EXTRA_BEAT is never detected.
FAULTS = ("exp_entry", "no_rescale", "pad_max", "merge2", "no_extra")


def _log2(n: int) -> int:
    return n.bit_length() - 1


class SoftmaxUnit(wiring.Component):
    """The hub's softmax unit; cycle-exact implementation of ``docs/softmax.md``.

    Parameters
    ----------
    params : SoftmaxParams
        Widths and sizes (A, NO, NI, N, n_part, MB, FB, IB, TB, EW, QS), see
        :class:`spec.softmax.SoftmaxParams`.
    fault : str or None
        ``None`` for the correct design, or one of :data:`FAULTS` (a deliberately wrong DUT).

    Ports
    -----
    cmd : In(stream.Signature(cmd layout))
        Command (``cmd_fields``, 46 bits by default): ``op`` 2, ``mul`` MB, ``sh`` 6,
        ``plog2`` 2, ``chan0`` 3, ``count`` 16, ``dig`` 1.  ``ready`` depends on the registers
        and the payload only.
    in : In(stream.Signature(in layout))
        Score beat (``in_fields``): ``x`` NO x A bits signed (lane 0 lowest), ``chan`` 3.
        ``ready`` = (st == INGEST).  (A Python keyword: use ``getattr(unit, "in")``.)
    prob : Out(stream.Signature(prob layout))
        Probability tile (``prob_fields``): ``q`` NI x 8 bits, ``part`` 3, ``idx``
        idx_bits, ``digit`` 1, ``last`` 1; registered.
    res : Out(stream.Signature(res layout))
        Head result (``res_fields``): ``m`` XW signed, ``l`` LW, ``qsum``, ``qlo`` signed,
        ``sat`` 1; registered.
    err : Out(3)
        :class:`spec.softmax.SmErr` of the command rejected in the previous cycle, else 0.
    in_err : Out(3)
        SmErr of the beat rejected in the previous cycle, else 0.
    err_count : Out(16)
        Rejected commands + beats since reset, saturating at 65535.
    idle : Out(1)
        st == IDLE and no tile and no result pending.
    st : Out(3)
        The state register (:class:`spec.softmax.SmState`).
    """

    #: name of its Verilog module (``hdl.export``)
    verilog_name = "softmax_unit"

    def __init__(self, params: SoftmaxParams = SoftmaxParams(), *, fault: str | None = None):
        silence_unused(self)              # not an unused design if the checks below raise
        if not isinstance(params, SoftmaxParams):
            raise ValueError(f"SoftmaxUnit: params={params!r} must be a SoftmaxParams")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"SoftmaxUnit: fault={fault!r} is not one of {', '.join(FAULTS)}")
        silence_unused(self, False)
        self.params = params
        self.fault = fault
        p = params
        NO, NI, N, XW = p.n_lanes, p.tile, p.max_context, p.x_bits
        self._W = max(NO, NI)             # scores per buffer row
        # score buffer: N / W rows of W scores; 0 at power-up, no reset
        self._buf = Memory(shape=unsigned(self._W * XW), depth=N // self._W, init=[])
        gran = {"granularity": NO * XW} if self._W > NO else {}
        self._buf_w = self._buf.write_port(**gran)
        self._buf_r = self._buf.read_port()
        silence_unused(self._buf)        # elaborated with the unit (or never)
        # exp lanes (shared by INGEST and EMIT) and rescale units (one per partition)
        table = list(exp_table(p))
        if fault == "exp_entry":
            table[1 << (p.table_bits - 1)] += 1
        self.table = tuple(table)
        self._exp = ExpUnit(p, self._W, p.n_part, table=table)
        super().__init__({
            "cmd": In(stream.Signature(struct_layout(cmd_fields(p)))),
            "in": In(stream.Signature(struct_layout(in_fields(p)))),
            "prob": Out(stream.Signature(struct_layout(prob_fields(p)))),
            "res": Out(stream.Signature(struct_layout(res_fields(p)))),
            "err": Out(3),
            "in_err": Out(3),
            "err_count": Out(16),
            "idle": Out(1),
            "st": Out(3),
        })

    # ---------------------------------------------------------------- the unit
    def elaborate(self, platform):
        p, fault = self.params, self.fault
        A, NO, NI, N, NP = p.score_bits, p.n_lanes, p.tile, p.max_context, p.n_part
        FB, EW, QS, XW, LW = p.frac_bits, p.exp_bits, p.prob_max, p.x_bits, p.l_bits
        W = self._W
        G0 = min(NO, NI)
        lgN, lgNO, lgNI, lgW, lgG0 = map(_log2, (N, NO, NI, W, G0))
        XMAX, XMIN = (1 << (XW - 1)) - 1, -(1 << (XW - 1))
        jbits = _log2(NP)                         # partition index bits (0 for one partition)
        nb_w = p.rows.bit_length()
        k_w = (2 * NP * -(-N // NI)).bit_length()
        m = Module()
        m.submodules.buf = self._buf
        xu = self._exp
        xu.build(m)
        rst = ResetSignal()
        inp = getattr(self, "in")
        cmd = self.cmd.payload

        def jsel(v):                              # the partition-index bits of ``v``
            return v[:jbits] if jbits else Const(0, 1)

        def pick(values, idx):                    # values[idx] (idx < len(values))
            if len(values) == 1:
                return values[0]
            out = Signal.like(values[0])
            with m.Switch(idx):
                for i, v in enumerate(values):
                    with m.Case(i):
                        m.d.comb += out.eq(v)
            return out

        # ---------------- registers ----------------
        st = Signal(3)
        r_mul, r_sh = Signal(p.mul_bits), Signal(SH_BITS)
        r_plog2, r_chan0 = Signal(2), Signal(CHAN_BITS)
        r_count, r_dig = Signal(COUNT_BITS), Signal()
        seen = [Signal(name=f"seen{j}") for j in range(NP)]
        mreg = [Signal(signed(XW), name=f"m{j}") for j in range(NP)]
        lreg = [Signal(LW, name=f"l{j}") for j in range(NP)]
        nb = [Signal(nb_w, name=f"nb{j}") for j in range(NP)]
        mg, lg = Signal(signed(XW)), Signal(LW)
        k = Signal(k_w)
        qsum, qlo, sat = Signal(p.qsum_bits), Signal(signed(p.qlo_bits)), Signal()
        prob_pay = Signal(len(self.prob.payload.as_value()))
        res_pay = Signal(len(self.res.payload.as_value()))
        err_count = Signal(16)
        merge_wait = Signal()                     # fault "merge2" only
        is_idle, is_ingest = st == SmState.IDLE, st == SmState.INGEST
        is_merge, is_emit, is_done = (st == SmState.MERGE, st == SmState.EMIT,
                                      st == SmState.DONE)
        m.d.comb += [
            self.st.eq(st),
            self.prob.payload.eq(prob_pay),
            self.res.payload.eq(res_pay),
            self.err_count.eq(err_count),
            self.idle.eq(is_idle & ~self.prob.valid & ~self.res.valid),
        ]

        # ---------------- head geometry (from the CFG registers) ----------------
        pnum = Signal(4)                          # P = 2**plog2
        m.d.comb += pnum.eq(Const(1, 4) << r_plog2)
        n_j, b_j = [], []
        for j in range(NP):
            nj = Signal(COUNT_BITS + 1, name=f"n{j}")     # ceil((T - j) / P), 0 if j >= P
            bj = Signal(nb_w, name=f"B{j}")               # ceil(n_j / NO)
            m.d.comb += [nj.eq(Mux(j < pnum, (r_count + pnum - 1 - j) >> r_plog2, 0)),
                         bj.eq((nj + NO - 1) >> lgNO)]
            n_j.append(nj)
            b_j.append(bj)
        tc_n = Signal(COUNT_BITS + 1)
        n_tiles = Signal(k_w + 1)                  # K = P * tc_n * G
        m.d.comb += [tc_n.eq((n_j[0] + NI - 1) >> lgNI),
                     n_tiles.eq((tc_n << r_plog2) << r_dig)]

        def tile_of(kv):
            """(partition, chunk, digit) of tile counter value ``kv``."""
            kt = kv >> r_dig
            return (kt & (pnum - 1))[:3], kt >> r_plog2, kv[0] & r_dig

        def region(jv):                            # j * (N >> plog2)
            return (jv << lgN) >> r_plog2

        # ---------------- command decode ----------------
        code = Signal(3)
        p2 = Signal(4)
        m.d.comb += p2.eq(Const(1, 4) << cmd.plog2)
        with m.If(cmd.op >= 2):
            m.d.comb += code.eq(SmErr.BAD_OP)
        with m.Elif((cmd.op == SmOp.CFG) &
                    ((p2 > NP) | (cmd.chan0 + p2 > (1 << CHAN_BITS)) | (cmd.count == 0))):
            m.d.comb += code.eq(SmErr.BAD_CFG)
        with m.Elif((cmd.op == SmOp.CFG) & (cmd.count > N)):
            m.d.comb += code.eq(SmErr.TOO_LONG)
        m.d.comb += self.cmd.ready.eq((code != 0) | (cmd.op == SmOp.ABORT) | is_idle)
        cmd_fire = self.cmd.valid & self.cmd.ready
        cmd_rej = cmd_fire & (code != 0)
        do_cfg = cmd_fire & (code == 0) & (cmd.op == SmOp.CFG)
        do_abort = cmd_fire & (code == 0) & (cmd.op == SmOp.ABORT)

        # ---------------- beat decode ----------------
        m.d.comb += inp.ready.eq(is_ingest)
        in_fire = inp.valid & is_ingest
        jdiff = Signal(signed(CHAN_BITS + 2))
        m.d.comb += jdiff.eq(inp.payload.chan - r_chan0)
        jb = Signal(3)
        m.d.comb += jb.eq(jdiff[:3])
        bad_part = (jdiff < 0) | (jdiff >= pnum)
        nb_sel = pick(nb, jsel(jb))
        extra = (nb_sel == pick(b_j, jsel(jb))) if fault != "no_extra" else Const(0)
        in_code = Signal(3)
        with m.If(bad_part):
            m.d.comb += in_code.eq(SmErr.BAD_PART)
        with m.Elif(extra):
            m.d.comb += in_code.eq(SmErr.EXTRA_BEAT)
        beat_rej = in_fire & (in_code != 0)
        good = in_fire & (in_code == 0)

        # ---------------- scale (NO lanes) ----------------
        xs, clamped = [], []
        for i in range(NO):
            s = inp.payload.x[i * A:(i + 1) * A].as_signed()
            r = Signal(signed(A + p.mul_bits + 3), name=f"r{i}")
            # (s * mul + floor(2**(sh-1))) >> sh == ((2 s mul >> sh) + 1) >> 1
            m.d.comb += r.eq((((s * r_mul) << 1 >> r_sh) + 1) >> 1)
            x = Signal(signed(XW), name=f"x{i}")
            m.d.comb += x.eq(Mux(r > XMAX, XMAX, Mux(r < XMIN, XMIN, r)))
            xs.append(x)
            clamped.append((r > XMAX) | (r < XMIN))
        rem = Signal(signed(COUNT_BITS + 2))      # valid lanes of the beat: i < rem
        m.d.comb += rem.eq(pick(n_j, jsel(jb)) - (nb_sel << lgNO))
        lane_ok = [rem > i for i in range(NO)]
        bm = Signal(signed(XW))
        m.d.comb += bm.eq(tree([x if fault == "pad_max" else Mux(ok, x, XMIN)
                                 for x, ok in zip(xs, lane_ok)],
                                lambda a, b: Mux(a >= b, a, b)))
        seen_o, m_o, l_o = pick(seen, jsel(jb)), pick(mreg, jsel(jb)), pick(lreg, jsel(jb))
        m_new = Signal(signed(XW))
        m.d.comb += m_new.eq(Mux(seen_o & (m_o > bm), m_o, bm))

        # ---------------- merge: max over the seen partitions ----------------
        mg_c = Signal(signed(XW))
        m.d.comb += mg_c.eq(tree([Mux(seen[j], mreg[j], XMIN) for j in range(NP)],
                                  lambda a, b: Mux(a >= b, a, b)))

        # ---------------- rescale units (0: the beat in INGEST; j: partition j in MERGE) ----
        for j in range(NP):
            if j == 0:
                lin = Mux(is_merge, lreg[0], l_o)
                din = Mux(is_merge, mg_c - mreg[0], m_new - m_o)[:XW]
            else:
                lin, din = lreg[j], (mg_c - mreg[j])[:XW]
            m.d.comb += [xu.rs_l[j].eq(lin), xu.rs_d[j].eq(din)]
        rs = list(xu.rs)
        lg_c = Signal(LW)
        m.d.comb += lg_c.eq(tree([Mux(seen[j], rs[j], 0) for j in range(NP)],
                                  lambda a, b: a + b))

        # ---------------- score buffer ----------------
        wp, rp = self._buf_w, self._buf_r
        wa = Signal(lgN + 1)
        m.d.comb += wa.eq(region(jb) + (nb_sel << lgNO))
        m.d.comb += [wp.addr.eq(wa[lgW:lgN]),
                     wp.data.eq(Cat(*(xs * (W // NO))))]
        if W > NO:
            m.d.comb += wp.en.eq(Mux(good & ~rst, Const(1, W // NO) << wa[lgNO:lgW], 0))
        else:
            m.d.comb += wp.en.eq(good & ~rst)
        prob_free = ~self.prob.valid | self.prob.ready
        adv = Signal()                             # a tile is computed in this cycle
        m.d.comb += adv.eq(is_emit & prob_free)
        k_next = Signal(k_w)                       # k after this edge (prefetch address)
        m.d.comb += k_next.eq(Mux(adv, k + 1, Mux(is_merge, 0, k)))
        jn, tcn, _ = tile_of(k_next)
        ra = Signal(lgN + 1)
        m.d.comb += [ra.eq(region(jn) + (tcn << lgNI)), rp.addr.eq(ra[lgW:lgN])]
        jk, tck, dk = tile_of(k)
        ca = Signal(lgN + 1)                       # logical address of tile k's lane 0
        m.d.comb += ca.eq(region(jk) + (tck << lgNI))
        row = [rp.data[i * XW:(i + 1) * XW] for i in range(W)]
        views = [Cat(*[row[(o * G0 + u) % W] for u in range(NI)]) for o in range(W // G0)]
        tile_x = pick(views, ca[lgG0:lgW] if W > G0 else Const(0, 1))
        xb = [tile_x[u * XW:(u + 1) * XW].as_signed() for u in range(NI)]

        # ---------------- exp lanes (shared: INGEST lanes < NO, EMIT lanes < NI) ----------
        for i in range(W):
            d_in = (m_new - xs[i])[:XW] if i < NO else None
            d_em = (mg - xb[i])[:XW] if i < NI else None
            if d_in is None:
                d = d_em
            elif d_em is None:
                d = d_in
            else:
                d = Mux(is_emit, d_em, d_in)
            m.d.comb += xu.d[i].eq(d)
        es = list(xu.e)
        l_base = Mux(seen_o, l_o if fault == "no_rescale" else rs[0], 0)
        l_new = Signal(LW)
        m.d.comb += l_new.eq(l_base + tree([Mux(lane_ok[i], es[i], 0) for i in range(NO)],
                                            lambda a, b: a + b))

        # ---------------- probability tile ----------------
        trem = Signal(signed(COUNT_BITS + 2))      # valid lanes of tile k: u < trem
        m.d.comb += trem.eq(pick(n_j, jsel(jk)) - (tck << lgNI))
        qs = []
        half = 1 << (EW - 1)
        for u in range(NI):
            y = Signal(EW + 8, name=f"y{u}")
            m.d.comb += y.eq(es[u] * QS)
            hi = Signal(8, name=f"hi{u}")
            yr = Signal(EW + 8, name=f"yr{u}")
            m.d.comb += [yr.eq(y + half), hi.eq(yr >> EW)]
            res_ = Signal(signed(EW + 1), name=f"resid{u}")      # y - hi * 2**EW
            m.d.comb += res_.eq(yr[:EW] - half)
            lo = Signal(signed(8), name=f"lo{u}")
            m.d.comb += lo.eq(((res_ << 7) + half) >> EW)
            q = Signal(signed(8), name=f"q{u}")
            m.d.comb += q.eq(Mux(trem > u, Mux(dk, lo, hi), 0))
            qs.append(q)
        qtot = Signal(signed(8 + NI.bit_length()))
        m.d.comb += qtot.eq(tree(list(qs), lambda a, b: a + b))
        qsum_n, qlo_n = Signal.like(qsum), Signal.like(qlo)
        m.d.comb += [qsum_n.eq(Mux(dk, qsum, qsum + qtot)),
                     qlo_n.eq(Mux(dk, qlo + qtot, qlo))]
        last = k == n_tiles - 1
        tile = Cat(*qs, jk, tck[:p.idx_bits], dk, last)
        assert len(tile) == len(prob_pay)

        # ---------------- sequencing ----------------
        nb_next = [Mux(good & (jb == j), nb[j] + 1, nb[j]) for j in range(NP)]
        all_in = tree([(j >= pnum) | (nb_next[j] == b_j[j]) for j in range(NP)],
                       lambda a, b: a & b)
        with m.If(good):
            m.d.sync += sat.eq(sat | tree([c & ok for c, ok in zip(clamped, lane_ok)],
                                           lambda a, b: a | b))
            for j in range(NP):
                with m.If(jb == j):
                    m.d.sync += [seen[j].eq(1), mreg[j].eq(m_new), lreg[j].eq(l_new),
                                 nb[j].eq(nb[j] + 1)]
            with m.If(all_in):
                m.d.sync += st.eq(SmState.MERGE)
        with m.If(is_merge):
            m.d.sync += [mg.eq(mg_c), lg.eq(lg_c), k.eq(0)]
            if fault == "merge2":
                m.d.sync += merge_wait.eq(~merge_wait)
                with m.If(merge_wait):
                    m.d.sync += st.eq(SmState.EMIT)
            else:
                m.d.sync += st.eq(SmState.EMIT)
        with m.If(adv):
            m.d.sync += [prob_pay.eq(tile), qsum.eq(qsum_n), qlo.eq(qlo_n), k.eq(k + 1)]
            with m.If(last):
                m.d.sync += [st.eq(SmState.DONE),
                             res_pay.eq(Cat(mg, lg, qsum_n, qlo_n, sat))]
        with m.If(is_done & self.res.valid & self.res.ready):
            m.d.sync += st.eq(SmState.IDLE)
        # output valid registers (rule 4; ABORT overrides below)
        with m.If(adv):
            m.d.sync += self.prob.valid.eq(1)
        with m.Elif(self.prob.ready):
            m.d.sync += self.prob.valid.eq(0)
        with m.If(adv & last):
            m.d.sync += self.res.valid.eq(1)
        with m.Elif(self.res.ready):
            m.d.sync += self.res.valid.eq(0)
        # commands (rule 6)
        with m.If(do_cfg):
            m.d.sync += [r_mul.eq(cmd.mul), r_sh.eq(cmd.sh), r_plog2.eq(cmd.plog2),
                         r_chan0.eq(cmd.chan0), r_count.eq(cmd.count), r_dig.eq(cmd.dig),
                         qsum.eq(0), qlo.eq(0), sat.eq(0), k.eq(0), st.eq(SmState.INGEST)]
            m.d.sync += [s.eq(0) for s in (*seen, *mreg, *lreg, *nb)]
        with m.If(do_abort):
            m.d.sync += [st.eq(SmState.IDLE), self.prob.valid.eq(0), self.res.valid.eq(0)]
        # errors (rule 7)
        m.d.sync += [self.err.eq(Mux(cmd_rej, code, 0)),
                     self.in_err.eq(Mux(beat_rej, in_code, 0))]
        cnt = Signal(18)
        m.d.comb += cnt.eq(err_count + cmd_rej + beat_rej)
        m.d.sync += err_count.eq(Mux(cnt > 0xFFFF, 0xFFFF, cnt))
        return m
