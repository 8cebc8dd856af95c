"""Block post-processing stage (block-scaled formats after the DIMC macro), implementing
``docs/blockfmt.md`` from that contract and ``spec/blockfmt.py`` alone.

Structure (one clock ``clk``, synchronous active-high reset ``rst``):

* scale memory ``SC``: an ``amaranth.lib.memory.Memory`` of ``S * C`` rows of ``L * 32`` bits
  (row ``set * C + part``: the L words one scale write carries), one write port and one
  synchronous read port transparent for it; ``FMT[S]`` (2-bit flip-flops).  Both power up as 0
  and are kept through ``rst``;
* accumulators ``ACC``: a Memory of ``E * C`` rows of ``L * 32`` bits (row ``dst * C + k``: the
  binary32 codes of chunk k of entry dst), a synchronous read port transparent for its write
  port, plus one valid bit per entry (``acc_vld``, cleared by ``rst``, set when a beat into the
  entry finishes; a read of an entry whose bit is 0 is +0, so ``rst`` clears ``ACC`` in one
  cycle); ``OVF[E]``;
* beat register: ``busy``, ``k``, ``bovf``, ``cur`` (``cur.y`` is a shift register: the L macro
  results of chunk k are in its low L * A bits), and ``stage``, the results of chunks
  0..C-2 of the beat being processed (the entry's row after the beat: every column is written
  in every beat);
* L lanes, combinational: the term of the chunk's column (``|y|``, or Q4_1's
  ``|y + 8 xsum| * d_sig``, with its sign and the exponent of its LSB) into one
  :func:`hdl.fp32acc.term_add` (``R(a + T1)``) and, when the macro executes Q4_1, a second
  one chained after it (``T2 = xsum * m``; a zero term for the other formats, and
  ``R(r + 0) = r``): both steps of a chunk in its one cycle.  The adders are inlined (the
  stage is one Verilog module);
* output register ``out_valid`` / ``out_payload`` and ``err``.

The read ports are addressed with the next cycle's (set, dst, k), so the chunk of cycle t
reads ``SC`` and ``ACC`` as they are in cycle t (the transparency covers a write at the edge
ending t-1: a scale write in a beat's accept cycle, and C = 1 beats into one entry back to
back).  Only the formats this macro executes (``PostParams.supports``) get datapath: ``FMT``
can never hold another one, since such a write is rejected (BAD_ALIGN / BAD_WIDTH).

Registers not visible at the ports (``cur.y``, ``stage``, the memories' read registers) are
not cleared by ``rst``: ``busy`` is 0 after a reset and they are reloaded before they are read.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from spec.blockfmt import (ERR_BITS, FP_BITS, SCALE_WORD_BITS, Fmt, PostErr, PostParams,
                           post_in_fields, post_out_fields, post_sw_fields)

from .fp32acc import ADD_FAULTS, EXP_BITS, term_add
from .layouts import struct_layout
from .logic import load

__all__ = ["BlockfmtStage", "FAULTS"]

#: Deliberate faults (to prove that the tests catch them): the adder's (``"trunc"``,
#: ``"no_sticky"``, see :data:`hdl.fp32acc.ADD_FAULTS`), ``"no_hazard"``: a scale write to
#: the set of the beat being processed is not rejected, and ``"bias_off"``: every scaled
#: term's exponent is one too high (bias 265 instead of 266; Q4_1 157 instead of 158), so
#: every BFP16 / MXINT8 / Q4_1 result is doubled (visible on any data, unlike the rounding
#: faults, which short real reductions, exact in binary32, do not show).
FAULTS = ADD_FAULTS + ("no_hazard", "bias_off")

_FP16_SIG = 11      # fp16 significand bits (hidden bit + 10 fraction bits)


def _mux_tree(sel, items):
    """``items[sel]`` as a balanced tree of 2:1 muxes on the bits of ``sel`` (an index past
    the end reads the last item)."""
    items = list(items)
    for b in range(len(sel)):
        if len(items) == 1:
            break
        items = [Mux(sel[b], items[i + 1] if i + 1 < len(items) else items[i], items[i])
                 for i in range(0, len(items), 2)]
    return items[0]


class BlockfmtStage(wiring.Component):
    """Block post-processing stage; cycle-exact implementation of ``docs/blockfmt.md``.

    Parameters
    ----------
    params : PostParams
        The macro (``n_out`` columns of ``acc_width`` A bits, ``n_sets`` S, ``n_acc`` E) and
        ``lanes`` L; a beat takes C = n_out / L cycles.
    fault : str or None
        ``None`` for the correct design, or one of :data:`FAULTS`.

    Ports
    -----
    inp : In(stream.Signature(post_in_fields))
        Macro result beat: ``y`` n_out x A signed, ``dst``, ``set``, ``acc`` 1, ``xs`` 8,
        ``xsum`` xsum_bits signed.  ``ready = ~busy | (last & ~stall)`` (depends on
        ``out.ready``, never on ``inp.valid``).
    sw : In(stream.Signature(post_sw_fields))
        Scale write: ``words`` L x 32, ``part`` part_bits, ``set``, ``fmt`` 2; ``ready`` is 1.
    out : Out(stream.Signature(post_out_fields))
        ``v`` n_out binary32 codes of entry ``dst`` after a beat, ``dst``, ``ovf`` 1; valid
        C + 1 cycles after the beat's acceptance (no stalls), held until taken.
    err : Out(3)
        :class:`spec.blockfmt.PostErr` of the scale write accepted in the previous cycle.
    busy : Out(1)
        The stage holds a beat (processing chunks or waiting to emit its last one).
    """

    #: name of its Verilog module (``hdl.export``)
    verilog_name = "blockfmt_stage"

    def __init__(self, params: PostParams = PostParams(), *, fault: str | None = None):
        silence_unused(self)              # not an unused design if the checks below raise
        if not isinstance(params, PostParams):
            raise ValueError(f"BlockfmtStage: params={params!r} must be a PostParams")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"BlockfmtStage: fault={fault!r} is not one of "
                             f"{', '.join(FAULTS)}")
        silence_unused(self, False)
        self.params = params
        self.fault = fault
        p, mp = params, params.macro
        L, C, A = p.lanes, p.chunks, mp.acc_width
        self._supports = {f: p.supports(f) for f in Fmt}
        self._has = {f: self._supports[f] == PostErr.NONE for f in Fmt}
        # term magnitudes (unsigned): |y| (A bits); Q4_1: |y + 8 xsum| * d_sig and |xsum| * m_sig
        self._wq = max(A, p.xsum_bits + 3) + 1            # signed width of y + 8 xsum
        self.term1_bits = self._wq + _FP16_SIG - 1 if self._has[Fmt.Q4_1] else A
        self.term2_bits = p.xsum_bits + _FP16_SIG - 1
        self._sc = Memory(shape=unsigned(L * SCALE_WORD_BITS), depth=mp.n_sets * C, init=[])
        self._sc_w = self._sc.write_port()
        self._sc_r = self._sc.read_port(transparent_for=(self._sc_w,))
        self._acc = Memory(shape=unsigned(L * FP_BITS), depth=mp.n_acc * C, init=[])
        self._acc_w = self._acc.write_port()
        self._acc_r = self._acc.read_port(transparent_for=(self._acc_w,))
        for sub in (self._sc, self._acc):
            silence_unused(sub)           # elaborated with the stage (or never)
        super().__init__({
            "inp": In(stream.Signature(struct_layout(post_in_fields(p)))),
            "sw": In(stream.Signature(struct_layout(post_sw_fields(p)))),
            "out": Out(stream.Signature(struct_layout(post_out_fields(p)))),
            "err": Out(ERR_BITS),
            "busy": Out(1),
        })

    def _row(self, sel, k):
        """Memory row ``sel * C + k`` (``sel``: a set or an entry)."""
        C = self.params.chunks
        if C & (C - 1) == 0:
            return Cat(k[:(C - 1).bit_length()], sel)
        return sel * C + k

    def elaborate(self, platform):
        p, mp = self.params, self.params.macro
        L, C, S, E, A = p.lanes, p.chunks, mp.n_sets, mp.n_acc, mp.acc_width
        has = self._has
        m = Module()
        m.submodules.sc = self._sc
        m.submodules.accmem = self._acc
        ip, sp = self.inp.payload, self.sw.payload

        # ---------------- registers
        busy = Signal()
        k = Signal(range(max(C, 2)))
        bovf = Signal()
        cur_dst = Signal(mp.dst_bits)
        cur_set = Signal(mp.set_bits)
        cur_acc = Signal()
        cur_xs = Signal(8)
        cur_xsum = Signal(p.xsum_bits)
        cur_y = Signal(mp.n_out * A, reset_less=True)           # chunk k in the low L*A bits
        stage = Signal(max(1, (C - 1) * L * FP_BITS), reset_less=True)
        out_valid = Signal()
        out_pl = Signal(len(self.out.payload.as_value()), reset_less=True)   # see load
        err = Signal(ERR_BITS)
        ovf = Signal(E)                  # OVF[E]
        acc_vld = Signal(E)              # ACC[e] holds data written since the last rst
        fmt = [Signal(2, name=f"fmt_s{s}", reset_less=True) for s in range(S)]  # kept by rst

        # ---------------- handshakes
        last = Signal()
        stall = Signal()
        chunk = Signal()
        fin = Signal()
        accept = Signal()
        m.d.comb += [
            last.eq(busy & (k == C - 1)),
            stall.eq(last & out_valid & ~self.out.ready),
            chunk.eq(busy & ~stall),
            fin.eq(chunk & last),
            self.inp.ready.eq(~busy | (last & ~stall)),
            accept.eq(self.inp.valid & self.inp.ready),
            self.sw.ready.eq(1),
            self.out.valid.eq(out_valid),
            self.out.payload.eq(out_pl),
            self.err.eq(err),
            self.busy.eq(busy),
        ]

        # ---------------- scale write: checks (lowest code first), SC / FMT write, err
        words = [sp.words[j * 32:(j + 1) * 32] for j in range(L)]
        fmt_err = Signal(ERR_BITS)
        m.d.comb += fmt_err.eq(_mux_tree(sp.fmt, [Const(self._supports[f], ERR_BITS)
                                                  for f in Fmt]))
        part_err = Signal()
        m.d.comb += part_err.eq(sp.part >= C if C < (1 << p.part_bits) else 0)
        scale_err = Signal()
        rsv_exp = Cat(*[w[8:32].any() for w in words]).any()     # BFP16 / MXINT8
        inf_q4 = Cat(*[(w[10:15] == 31) | (w[26:31] == 31) for w in words]).any()
        m.d.comb += scale_err.eq(_mux_tree(sp.fmt, [sp.words.any(), rsv_exp, rsv_exp,
                                                    inf_q4]))
        hazard = Signal()
        m.d.comb += hazard.eq(0 if self.fault == "no_hazard" else
                              busy & (sp.set == cur_set))
        code = Signal(ERR_BITS)
        m.d.comb += code.eq(Mux(fmt_err != 0, fmt_err,
                            Mux(part_err, PostErr.BAD_PART,
                            Mux(scale_err, PostErr.BAD_SCALE,
                            Mux(hazard, PostErr.HAZARD, PostErr.NONE)))))
        sw_ok = Signal()
        m.d.comb += sw_ok.eq(self.sw.valid & (code == 0))
        m.d.sync += err.eq(Mux(self.sw.valid, code, 0))
        m.d.comb += [self._sc_w.addr.eq(self._row(sp.set, sp.part)),
                     self._sc_w.data.eq(sp.words),
                     self._sc_w.en.eq(sw_ok)]
        for s in range(S):
            with m.If(sw_ok & (sp.set == s)):
                m.d.sync += fmt[s].eq(sp.fmt)

        # ---------------- memory read addresses: next cycle's chunk
        nk = Signal.like(k)
        m.d.comb += nk.eq(Mux(accept, 0, Mux(chunk & ~last, k + 1, k)))
        m.d.comb += [
            self._sc_r.addr.eq(self._row(Mux(accept, ip.set, cur_set), nk)),
            self._acc_r.addr.eq(self._row(Mux(accept, ip.dst, cur_dst), nk)),
        ]

        # ---------------- lanes: chunk k of the current beat
        cfmt = Signal(2)
        m.d.comb += cfmt.eq(_mux_tree(cur_set, fmt))
        is_q = Signal()
        is_mx = Signal()
        is_exp = Signal()          # BFP16 or MXINT8: T1 = y * 2**(xs + e - 266)
        m.d.comb += [is_q.eq((cfmt == Fmt.Q4_1) if has[Fmt.Q4_1] else 0),
                     is_mx.eq((cfmt == Fmt.MXINT8) if has[Fmt.MXINT8] else 0),
                     is_exp.eq(is_mx | ((cfmt == Fmt.BFP16) if has[Fmt.BFP16] else 0))]
        a_on = Signal()
        m.d.comb += a_on.eq(cur_acc & (acc_vld >> cur_dst)[0])
        xs_nan = Signal()
        m.d.comb += xs_nan.eq(cur_xs == 0xFF)
        xsum = cur_xsum.as_signed()
        afault = self.fault if self.fault in ADD_FAULTS else None
        bo = 1 if self.fault == "bias_off" else 0
        results, lane_ovf = [], []
        for j in range(L):
            y = cur_y[j * A:(j + 1) * A].as_signed()
            w = self._sc_r.data[j * 32:(j + 1) * 32]
            a_code = Mux(a_on, self._acc_r.data[j * 32:(j + 1) * 32], 0)
            t1_exp = Signal(signed(EXP_BITS), name=f"l{j}_t1_exp")
            t1_neg = Signal(name=f"l{j}_t1_neg")
            t1_mag = Signal(self.term1_bits, name=f"l{j}_t1_mag")
            t1_nan = Signal(name=f"l{j}_t1_nan")
            m.d.comb += t1_nan.eq((is_mx & (w[0:8] == 0xFF)) | ((is_mx | is_q) & xs_nan))
            if has[Fmt.Q4_1]:
                v1 = Signal(signed(self._wq), name=f"l{j}_v1")   # y, or y + 8 xsum
                m.d.comb += v1.eq(Mux(is_q, y + (xsum << 3), y))
                d_e, m_e = w[10:15], w[26:31]
                d_sig = Cat(w[0:10], d_e != 0)
                m_sig = Cat(w[16:26], m_e != 0)
                m.d.comb += [             # exponent of the LSB: xs - 133 + (max(E, 1) - 25)
                    t1_exp.eq(Mux(is_q, cur_xs + Mux(d_e == 0, 1, d_e) - (158 - bo),
                                  Mux(is_exp, cur_xs + w[0:8] - (266 - bo), 0))),
                    t1_neg.eq((v1 < 0) ^ (is_q & w[15])),
                    t1_mag.eq(abs(v1) * Mux(is_q, d_sig, 1)),
                ]
            else:
                m.d.comb += [t1_exp.eq(Mux(is_exp, cur_xs + w[0:8] - (266 - bo), 0)),
                             t1_neg.eq(y < 0), t1_mag.eq(abs(y))]
            r, o = term_add(m, a_code, t1_neg, t1_mag, t1_exp, t1_nan, fault=afault,
                            prefix=f"l{j}_s1_")
            if has[Fmt.Q4_1]:             # Q4_1's second term; 0 otherwise (R(r + 0) = r)
                t2_exp = Signal(signed(EXP_BITS), name=f"l{j}_t2_exp")
                t2_neg = Signal(name=f"l{j}_t2_neg")
                t2_mag = Signal(self.term2_bits, name=f"l{j}_t2_mag")
                m.d.comb += [t2_neg.eq((xsum < 0) ^ w[31]),
                             t2_mag.eq(Mux(is_q, abs(xsum) * m_sig, 0)),
                             t2_exp.eq(cur_xs + Mux(m_e == 0, 1, m_e) - (158 - bo))]
                # a NaN beat's first step already gave NaN: the second needs no NaN input
                r, o2 = term_add(m, r, t2_neg, t2_mag, t2_exp, Const(0, 1), fault=afault,
                                 prefix=f"l{j}_s2_")
                o = o | o2
            results.append(r)
            lane_ovf.append(o)
        res = Signal(L * FP_BITS)
        any_ovf = Signal()
        m.d.comb += [res.eq(Cat(*results)), any_ovf.eq(Cat(*lane_ovf).any())]

        # ---------------- chunk: ACC write, stage, bovf, OVF, output register
        m.d.comb += [self._acc_w.addr.eq(self._row(cur_dst, k)),
                     self._acc_w.data.eq(res),
                     self._acc_w.en.eq(chunk)]
        new_ovf = Signal()
        m.d.comb += new_ovf.eq(((ovf >> cur_dst)[0] & cur_acc) | bovf | any_ovf)
        if C > 1:
            with m.If(chunk & ~last):
                m.d.sync += stage.eq(Cat(stage[L * FP_BITS:], res))
            v_all = Cat(stage, res)
        else:
            v_all = res
        load(m, out_pl, fin, Cat(v_all, cur_dst, new_ovf))
        with m.If(chunk):
            m.d.sync += bovf.eq(bovf | any_ovf)
            with m.If(last):
                m.d.sync += [busy.eq(0), out_valid.eq(1)]
                for e in range(E):
                    with m.If(cur_dst == e):
                        m.d.sync += [ovf[e].eq(new_ovf), acc_vld[e].eq(1)]
            with m.Else():
                m.d.sync += k.eq(k + 1)
        with m.If(out_valid & self.out.ready & ~fin):
            m.d.sync += out_valid.eq(0)

        # ---------------- accept
        _shift = cur_y >> (L * A)
        with m.If(accept | chunk):
            m.d.sync += cur_y.eq(Mux(accept, ip.y, _shift))
        with m.If(accept):
            m.d.sync += [cur_dst.eq(ip.dst), cur_set.eq(ip.set), cur_acc.eq(ip.acc),
                         cur_xs.eq(ip.xs), cur_xsum.eq(ip.xsum),
                         busy.eq(1), k.eq(0), bovf.eq(0)]
        return m
