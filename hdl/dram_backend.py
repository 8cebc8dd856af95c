"""DRAM back-end of a PIM channel with DRAM banks (``docs/dram_channel.md``).

Built into :class:`hdl.channel.PimChannel`'s module when ``params.bank_kind == "dram"``
(like :class:`hdl.fifo.RegFifo`, it is no Verilog module of its own): a **scheduler** that
fixes, in the cycle a command issues, the cycles of every DRAM command it causes, and B
**executors** that present those commands to the B :class:`hdl.dram_bank.DramBank` s in
exactly those cycles.

Instants are kept as *relative* saturating down-counters: a register ``r`` for the absolute
instant X holds ``max(0, X - t)`` in cycle t (0 = "now or in the past"); every edge does
``r <= max(r - 1, 0)`` unless it loads a new instant X' (decided in cycle t, ``x = X' - t``),
then ``r <= max(x - 1, 0)``.  Tests like ``t >= X`` become ``r == 0``, ``max(t+1, X)`` is
``t + max(1, r)``; both exact.  Rules that add a gap to a past instant (``A[b] + tRC``) keep
the sum (the instant the rule allows), not the instant itself.

Width (:func:`horizon`): every instant is at most H cycles after the current one, with
``H = (B+1)·S + tail``, ``S = tREFI + max(tRCDRDMAC, tRCDWR) + C·max(tCCDL, tCCDS) +
max(tCCDL, tCCDS) + nR + nI`` (one command's own span: its ACT is before the next refresh
request, < tREFI ahead, by the look-ahead rule; its columns follow; the column bus chains at
most one pending stream per bank) and ``tail = wr_to_pre + tRAS + tRP + tRC + tRTP + tFAW +
tRRDS + tCCDL`` (the gaps added to the last instant).  The registers are
``bit_length(H)`` bits; the arithmetic is 2 bits wider.

Scheduler registers (all cycles, relative as above; reset: 0 = −∞, every bank closed):

* per bank b: ``open``/``row``; ``rc`` = A+tRC, ``ras`` = A+tRAS, ``rp`` = P+tRP,
  ``ccd`` = Lc+tCCDL, ``rtp`` = Lc+tRTP, ``rdy`` = R;
* channel: ``rrd`` = acts[-1]+tRRDS, ``faw[k]`` = acts[-1-k]+tFAW (k = 0..3), ``colhi``,
  ``colprev``, ``collo``, ``rdend``, ``ioready``; ``phase`` = t mod tREFI (``Tnext - t =
  tREFI - phase``); ``iod`` the one pending delayed done of a WR_INP / RD_OUT (I/O commands
  issue at least their bus cost apart, so one suffices).

Executor b (one schedule at a time, since ``R[b]`` orders a bank's schedules): flags and
relative counters of four phases ``pre0`` (PRE before the ACT), ``act``, ``col`` (C column
MACs ``tCCDL`` apart, or one WR), ``pre1`` (the PRE that closes a WR_W's row, whose cycle sets
the WR_W's done bit).  A scheduled command is presented only in its cycle; if the bank does
not accept it there (held by its timing: a wrong schedule) it is dropped and ``err[0]`` is 1
in the next cycle.  With no schedule left, an open row and a refresh pending, the executor
presents the refresh-close PRE until the bank accepts it.
"""
from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal

from spec.dram import DramOp
from spec.isa import ChannelParams, Op

from .logic import all_of, any_of, tree
from .regfile import select

__all__ = ["DramBackend", "horizon", "io_costs"]


def io_costs(p: ChannelParams) -> tuple[int, int, int]:
    """``(nI, nW, nR)``: I/O bus cycles of a WR_INP tile, a WR_W burst, a RD_OUT result."""
    t, m, U = p.timing, p.macro, p.burst_bytes
    return (math.ceil(m.n_in / U) * t.tCCDS, t.tCCDS,
            math.ceil(2 * m.n_out / U) * t.tCCDS)


def horizon(p: ChannelParams) -> int:
    """H: the largest ``X - t`` of any instant the scheduler holds in cycle t (cycles)."""
    t, C = p.timing, p.dram_bank.n_cols
    nI, _, nR = io_costs(p)
    cc = max(t.tCCDL, t.tCCDS)
    span = t.tREFI + max(t.tRCDRDMAC, t.tRCDWR) + C * cc + cc + nR + nI
    tail = t.wr_to_pre + t.tRAS + t.tRP + t.tRC + t.tRTP + t.tFAW + t.tRRDS + t.tCCDL
    return (p.n_banks + 1) * span + tail


def _max(vals):
    return tree(list(vals), lambda a, b: Mux(a > b, a, b))


class DramBackend:
    """Scheduler and executors of a DRAM channel; :meth:`build` adds them to a module.

    Parameters
    ----------
    params : ChannelParams
        ``bank_kind == "dram"``; ``timing``, ``burst_bytes`` and the macro give the sizes.
    banks : list of DramBank
        The B banks (their ports are driven here: ``cmd``; read: ``ref_pend``,
        ``refreshing``, ``err``, ``ref_lost``).
    fault : str or None
        ``"dram_col_early"``: the first column MAC of every MAC one cycle early;
        ``"ab_skip_last"``: an all-bank MAC is not scheduled on the last bank.

    Attributes set by :meth:`build` (combinational, cycle t)
    ----------
    io_ok : 1 bit   the I/O head's DRAM rules hold (ioready; WR_W: R, look-ahead, gate;
                    RD_OUT: a column-bus slot); the channel adds dependencies and out reg
    cq_ok : 1 bit   the compute head's DRAM rules hold (no WR_W now, gate, R, look-ahead)
    mac_push : B x 1 bit   the issuing MAC goes to bank b (push its seq on ``macq[b]``)
    done_set : list of (1-bit, seq) pairs   ids whose done bit is set at this edge
               (delayed WR_INP / RD_OUT, WR_W at its closing PRE; not the MAC results)
    busy : B bits   executor b has a scheduled command not yet presented
    err : 2 bits    [0] a bank's ``err`` or a missed executor command (previous cycle);
                    [1] a bank's ``ref_lost``
    """

    def __init__(self, params: ChannelParams, banks, *, fault: str | None = None):
        if params.bank_kind != "dram":
            raise ValueError("DramBackend: params.bank_kind must be 'dram'")
        self.params, self.banks, self.fault = params, list(banks), fault
        self.H = horizon(params)
        self.HB = self.H.bit_length()           # register width
        self.CW = self.HB + 2                   # arithmetic width
        self.busy = Signal(params.n_banks, name="be_busy")
        self.err = Signal(2, name="be_err")
        self.io_ok = Signal(name="be_io_ok")
        self.cq_ok = Signal(name="be_cq_ok")
        self.mac_push = [Signal(name=f"be_push{b}") for b in range(params.n_banks)]
        self.done_set: list = []

    def build(self, m: Module, *, gbuf, io, cq, io_go, cq_go) -> None:
        """Add the back-end to ``m``.

        gbuf   list of G GBuf registers (n_in x 8 bits each), read in the column cycles
        io     the I/O queue head (``op, bank, set, row, data, seq``)
        cq     the compute queue head (``bank, set, g, o, acc[, ab], seq``)
        io_go, cq_go   1-bit: the heads issue in this cycle (the channel's decision, which
               includes :attr:`io_ok` / :attr:`cq_ok`)
        """
        p, t = self.params, self.params.timing
        bp = p.dram_bank
        B, C, K, U = p.n_banks, bp.n_cols, bp.n_x, p.burst_bytes
        HB, CW = self.HB, self.CW
        nI, nW, nR = io_costs(p)
        AB = p.all_bank
        banks = self.banks

        def k(v):
            return Const(v, CW)

        def rel(name, shape=None):
            return Signal(HB if shape is None else shape, name=name)

        def dec(r):          # the register's value in the next cycle, nothing loaded
            return Mux(r == 0, 0, r - 1)

        def at(v):           # an instant v cycles after t, as the next cycle's register
            return Mux(v == 0, 0, v - 1)[:HB]

        def wire(name, v, shape=CW):
            s = Signal(shape, name=name)
            m.d.comb += s.eq(v)
            return s

        # ---------------- scheduler state ----------------
        is_open = [Signal(name=f"s_open{b}") for b in range(B)]
        row = [Signal(bp.row_bits, name=f"s_row{b}") for b in range(B)]
        rc, ras, rp, ccd, rtp, rdy = ([rel(f"s_{n}{b}") for b in range(B)]
                                      for n in ("rc", "ras", "rp", "ccd", "rtp", "rdy"))
        rrd = rel("s_rrd")
        faw = [rel(f"s_faw{i}") for i in range(4)]
        colhi, colprev, collo = rel("s_colhi"), rel("s_colprev"), rel("s_collo")
        rdend, ioready = rel("s_rdend"), rel("s_ioready")
        phase = Signal(range(t.tREFI), name="s_phase")
        m.d.sync += phase.eq(Mux(phase == t.tREFI - 1, 0, phase + 1))
        tnext = wire("s_tnext", k(t.tREFI) - phase)          # Tnext(t) - t, 1..tREFI
        gate = wire("s_gate", ~any_of((bk.ref_pend != 0) | bk.refreshing for bk in banks), 1)

        # per bank, independent of the command: PRE cycle if open, ACT wanted-from cycle
        pb = [wire(f"s_p{b}", _max([k(1), ras[b], rtp[b]])) for b in range(B)]
        ta0 = [wire(f"s_ta0_{b}", Mux(is_open[b], pb[b] + t.tRP, _max([k(1), rp[b]])))
               for b in range(B)]
        actc = wire("s_actc", _max([rrd, faw[3]]))            # tRRDS / tFAW part

        # ---------------- I/O head: WR_W, RD_OUT, WR_INP ----------------
        bw = io.bank

        def sel(name, idx, items, shape=CW):
            return select(m, name, idx, items, shape)

        ta_w = wire("s_ta_w", _max([sel("s_w_ta0", bw, ta0), actc, sel("s_w_rc", bw, rc)]))
        w_col = wire("s_w", _max([ta_w + t.tRCDWR, colhi, rdend]))
        p_w = wire("s_p_w", _max([ta_w + t.tRAS, w_col + t.wr_to_pre]))
        wr_ok = (sel("s_w_rdy", bw, rdy, HB) == 0) & (ta_w < tnext) & gate
        rd_ok = (colhi == 0) | ((colprev == 0) & (collo >= nR))
        io_rule = Signal(name="s_io_rule")
        with m.Switch(io.op):
            with m.Case(Op.WR_W):
                m.d.comb += io_rule.eq(wr_ok)
            with m.Case(Op.RD_OUT):
                m.d.comb += io_rule.eq(rd_ok)
            with m.Default():
                m.d.comb += io_rule.eq(1)
        m.d.comb += self.io_ok.eq((ioready == 0) & io_rule)
        wr_go = wire("s_wr_go", io_go & (io.op == Op.WR_W), 1)
        rd_go = wire("s_rd_go", io_go & (io.op == Op.RD_OUT), 1)
        inp_go = io_go & (io.op == Op.WR_INP)

        # ---------------- compute head: MAC, MAC_AB ----------------
        bm, s = cq.bank, cq.set
        ab = cq.ab if AB else Const(0, 1)
        hit1 = sel("s_m_open", bm, is_open, 1) & (sel("s_m_row", bm, row, bp.row_bits) == s)
        ccd_x = sel("s_m_ccd", bm, ccd)
        ta0_x = sel("s_m_ta0", bm, ta0)
        rc_x = sel("s_m_rc", bm, rc)
        rdy_ok = sel("s_m_rdy", bm, rdy, HB) == 0
        if AB:
            hit1 = Mux(ab, all_of(is_open[b] & (row[b] == s) for b in range(B)), hit1)
            ccd_x = Mux(ab, _max(ccd), ccd_x)
            ta0_x = Mux(ab, _max(ta0), ta0_x)
            rc_x = Mux(ab, _max(rc), rc_x)
            rdy_ok = Mux(ab, all_of(r == 0 for r in rdy), rdy_ok)
        hit = wire("s_hit", hit1, 1)
        ta_m = wire("s_ta_m", _max([ta0_x, actc, rc_x]))
        rdend_n = wire("s_rdend_n", Mux(rd_go, k(nR), rdend))     # rdend'
        f = wire("s_f", Mux(hit, _max([k(1), ccd_x, colhi, rdend_n]),
                            _max([ta_m + t.tRCDRDMAC, colhi, rdend_n])))
        last = wire("s_last", f + (C - 1) * t.tCCDL)
        m.d.comb += self.cq_ok.eq(rdy_ok & gate & ~wr_go & (hit | (ta_m < tnext)))

        # ---------------- scheduler updates ----------------
        act_go = wire("s_act_go", (cq_go & ~hit) | wr_go, 1)
        ta = Mux(wr_go, ta_w, ta_m)
        for r in (rrd, *faw, colhi, colprev, collo, rdend, ioready):
            m.d.sync += r.eq(dec(r))
        with m.If(act_go):
            m.d.sync += [rrd.eq(at(ta + t.tRRDS)), faw[0].eq(at(ta + t.tFAW))]
            m.d.sync += [faw[i].eq(dec(faw[i - 1])) for i in range(1, 4)]
        with m.If(cq_go | wr_go):
            colend = Mux(wr_go, w_col + t.tCCDS,
                         Mux(ab, last + t.tCCDL, last + t.tCCDS))
            m.d.sync += [colprev.eq(dec(colhi)), collo.eq(at(Mux(wr_go, w_col, f))),
                     colhi.eq(at(colend))]
        with m.If(rd_go):
            m.d.sync += rdend.eq(nR - 1)
        with m.If(io_go):
            m.d.sync += ioready.eq(at(Mux(io.op == Op.WR_INP, k(nI),
                                      Mux(io.op == Op.WR_W, k(nW), k(nR)))))

        # delayed done of WR_INP / RD_OUT (visible from t + nI / t + nR)
        iod_v, iod_c = Signal(name="s_iod_v"), rel("s_iod_c")
        iod_seq = Signal(p.seq_bits, name="s_iod_seq")
        iod_fire = wire("s_iod_fire", iod_v & (iod_c == 0), 1)
        m.d.sync += iod_c.eq(dec(iod_c))
        with m.If(iod_fire):
            m.d.sync += iod_v.eq(0)
        self.done_set.append((iod_fire, iod_seq))
        now_set = []
        for go, n in ((inp_go, nI), (rd_go, nR)):
            if n == 1:
                now_set.append(go)
            else:
                with m.If(go):
                    m.d.sync += [iod_v.eq(1), iod_c.eq(n - 2), iod_seq.eq(io.seq)]
        if (1 << p.bank_bits) != B:     # a WR_W to no bank (bank >= B, not encodable):
            now_set.append(wr_go & (bw >= B))     # done at its issue edge, as with DIMC
        if now_set:
            self.done_set.append((any_of(now_set), io.seq))

        # ---------------- executors ----------------
        err0 = []
        busy = []
        xw = 8 * K
        cb = (C - 1).bit_length()          # WR_W column r mod C (C a power of two)
        for b, bk in enumerate(banks):
            c = bk.cmd.payload
            pre0_v, act_v, col_v, pre1_v = (Signal(name=f"e{b}_{n}_v")
                                            for n in ("pre0", "act", "col", "pre1"))
            pre0_c, act_c, col_c, pre1_c = (rel(f"e{b}_{n}_c")
                                            for n in ("pre0", "act", "col", "pre1"))
            act_row = Signal(bp.row_bits, name=f"e{b}_row")
            kk = Signal(bp.col_bits, name=f"e{b}_k")                # column index
            is_wr = Signal(name=f"e{b}_wr")
            g = Signal(p.gbuf_bits, name=f"e{b}_g")
            dst = Signal(bp.dst_bits, name=f"e{b}_dst")
            accf = Signal(name=f"e{b}_acc")
            wcol = Signal(bp.col_bits, name=f"e{b}_wcol")
            wdata = Signal(8 * U, name=f"e{b}_wdata")
            wseq = Signal(p.seq_bits, name=f"e{b}_seq")
            n_pre0, n_act, n_col, n_pre1 = (wire(f"e{b}_now_{n}", v & (cnt == 0), 1)
                                            for n, v, cnt in (("pre0", pre0_v, pre0_c),
                                                              ("act", act_v, act_c),
                                                              ("col", col_v, col_c),
                                                              ("pre1", pre1_v, pre1_c)))
            pending = wire(f"e{b}_pending", pre0_v | act_v | col_v | pre1_v, 1)
            close = wire(f"e{b}_close", ~pending & is_open[b] & (bk.ref_pend != 0), 1)
            sched = wire(f"e{b}_sched", n_pre0 | n_act | n_col | n_pre1, 1)
            busy.append(pending)
            x = select(m, f"e{b}_x", g, gbuf, len(gbuf[0]))
            xk = x.word_select(kk, xw) if C > 1 else x[:xw]
            m.d.comb += [
                bk.cmd.valid.eq(sched | close),
                c.op.eq(Mux(n_act, DramOp.ACT,
                            Mux(n_col, Mux(is_wr, DramOp.WR, DramOp.MAC), DramOp.PRE))),
                c.row.eq(act_row),
                c.col.eq(Mux(is_wr, wcol, kk)),
                c.dst.eq(dst),
                c.acc.eq(Mux(kk == 0, accf, 1)),
                c.last.eq(~is_wr & (kk == C - 1)),
                c.data.eq(Mux(is_wr, wdata, xk)),
            ]
            miss = Signal(name=f"e{b}_miss")        # a scheduled command not accepted
            m.d.sync += miss.eq(sched & ~bk.cmd.ready)
            err0.append((bk.err != 0) | miss)
            self.done_set.append((n_pre1, wseq))

            # counters and phase flags
            for cnt in (pre0_c, act_c, col_c, pre1_c):
                m.d.sync += cnt.eq(dec(cnt))
            with m.If(n_pre0):
                m.d.sync += pre0_v.eq(0)
            with m.If(n_act):
                m.d.sync += act_v.eq(0)
            with m.If(n_pre1):
                m.d.sync += pre1_v.eq(0)
            with m.If(n_col):
                with m.If(is_wr | (kk == C - 1)):
                    m.d.sync += col_v.eq(0)
                with m.Else():
                    step = t.tCCDL - 1
                    if self.fault == "dram_col_early":
                        step = Mux(kk == 0, t.tCCDL, t.tCCDL - 1)
                    m.d.sync += [kk.eq(kk + 1), col_c.eq(step)]

            # per-bank scheduler registers
            for r in (rc[b], ras[b], rp[b], ccd[b], rtp[b], rdy[b]):
                m.d.sync += r.eq(dec(r))
            with m.If(close & bk.cmd.ready):       # refresh-close PRE accepted: P[b] = t
                m.d.sync += [is_open[b].eq(0), rp[b].eq(t.tRP - 1)]
            mine = bm == b
            if AB and not (self.fault == "ab_skip_last" and b == B - 1):
                mine = ab | mine
            ld_m = wire(f"e{b}_ld_mac", cq_go & mine, 1)
            m.d.comb += self.mac_push[b].eq(ld_m)
            ld_w = wire(f"e{b}_ld_wrw", wr_go & (bw == b), 1)
            f_ld = at(f)
            if self.fault == "dram_col_early":
                f_ld = Mux(f > 1, f - 2, 0)[:HB]
            with m.If(ld_m):
                m.d.sync += [rdy[b].eq(at(last)), ccd[b].eq(at(last + t.tCCDL)),
                         rtp[b].eq(at(last + t.tRTP)),
                         pre0_v.eq(~hit & is_open[b]), pre0_c.eq(at(pb[b])),
                         act_v.eq(~hit), act_c.eq(at(ta_m)), act_row.eq(s),
                         col_v.eq(1), col_c.eq(f_ld), kk.eq(0), is_wr.eq(0),
                         g.eq(cq.g), dst.eq(cq.o), accf.eq(cq.acc), pre1_v.eq(0)]
                with m.If(~hit):
                    m.d.sync += [rc[b].eq(at(ta_m + t.tRC)), ras[b].eq(at(ta_m + t.tRAS)),
                             is_open[b].eq(1), row[b].eq(s)]
                    with m.If(is_open[b]):
                        m.d.sync += rp[b].eq(at(pb[b] + t.tRP))
            with m.If(ld_w):
                m.d.sync += [rc[b].eq(at(ta_w + t.tRC)), ras[b].eq(at(ta_w + t.tRAS)),
                         rp[b].eq(at(p_w + t.tRP)), rdy[b].eq(p_w[:HB]),
                         is_open[b].eq(0),
                         pre0_v.eq(is_open[b]), pre0_c.eq(at(pb[b])),
                         act_v.eq(1), act_c.eq(at(ta_w)), act_row.eq(io.set),
                         col_v.eq(1), col_c.eq(at(w_col)), is_wr.eq(1), kk.eq(0),
                         wcol.eq(io.row[:cb] if cb else 0), wdata.eq(io.data[:8 * U]),
                         pre1_v.eq(1), pre1_c.eq(at(p_w)), wseq.eq(io.seq)]

        m.d.comb += [self.busy.eq(Cat(*busy)),
                 self.err.eq(Cat(any_of(err0), any_of(bk.ref_lost for bk in banks)))]
