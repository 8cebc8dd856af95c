"""Formal properties of the DIMC macro (``docs/macro.md``), on its ports only.

:class:`MacroHarness` instantiates :class:`hdl.macro.DimcMacro` with every input free (and
``rst`` free: properties hold across resets in mid-stream) and adds the property groups named
in ``props``:

``ready``    within ``x_bits - 1`` cycles after an accept ``req.ready`` is low (one request per
             ``x_bits`` cycles);
``latency``  assuming ``res.ready = 1``: ``res.valid`` is high exactly ``x_bits + tree_stages
             + 1`` cycles after each accept, ``busy`` exactly in the ``x_bits`` issue cycles,
             and ``req.ready`` is high ``x_bits`` cycles after an accept;
``result``   a reference model of the contract (shadow weights: a write lands unless its row
             is out of range or it hits the set being computed; shadow result file) predicts
             every new ``res`` beat: ``y`` equals the signed dot product of the request's
             inputs with the shadow weights (plus the old entry with ``acc``), modulo
             ``2**acc_width``, ``dst`` equals the request's; and no beat comes without a
             request.  Because the reference is computed when the request is accepted, a
             write to the active set that landed anyway changes the DUT's later bits and is
             caught: no write to the active set ever lands;
``err``      ``err`` is the code of the previous cycle's write beat (WR_HAZARD for a write to
             the computing set, WR_BAD_ROW for a row >= n_in, else 0);
``cover``    ``Cover`` statements: a rejected hazard write, an accumulating result beat,
             back-to-back accepts, a held result (reachability, ``cimphony verify formal``
             runs them in cover mode).

``latency_offset`` shifts the asserted latency (a deliberately broken property for tests).
"""
from __future__ import annotations

from amaranth.hdl import (Array, Assert, Assume, Cat, Cover, Elaboratable, Module, Mux,
                          ResetSignal, Signal, signed)

from cimphony.compat import silence_unused
from hdl.macro import DimcMacro
from spec.params import MacroErr, MacroParams

__all__ = ["PROPS", "MacroHarness"]

PROPS = ("ready", "latency", "result", "err", "cover")


class MacroHarness(Elaboratable):
    """DimcMacro with free inputs and the property groups ``props`` (see module docstring).

    Parameters
    ----------
    params : MacroParams
    props : iterable of str
        Groups of :data:`PROPS`.
    fault : str or None
        Passed to DimcMacro (``"sign_add"``: a broken datapath).
    latency_offset : int
        Added to the asserted latency (0 for the contract).
    reference : str
        How the reference computes the dot product (``horner`` or ``mul``, :meth:`_dot`).
    """

    def __init__(self, params: MacroParams, props=("ready", "result", "err"), *,
                 fault: str | None = None, latency_offset: int = 0,
                 reference: str = "horner"):
        silence_unused(self)              # not an unused design if the checks below raise
        if not isinstance(params, MacroParams):
            raise ValueError(f"MacroHarness: params={params!r} is not a MacroParams")
        props = tuple(props)
        bad = [p for p in props if p not in PROPS]
        if bad or not props:
            raise ValueError(f"MacroHarness: props={props!r}: each must be one of "
                             f"{', '.join(PROPS)}")
        if type(latency_offset) is not int:
            raise ValueError(f"MacroHarness: latency_offset={latency_offset!r} is not an int")
        if reference not in ("horner", "mul"):
            raise ValueError(f"MacroHarness: reference={reference!r} is not 'horner' or "
                             "'mul'")
        silence_unused(self, False)
        self.params, self.props, self.fault = params, props, fault
        self.reference = reference
        self.latency_offset = latency_offset
        self.dut = DimcMacro(params, fault=fault)
        d = self.dut
        self.ports = [Signal.like(v, name=f"in_{n}") for n, v in (
            ("wr_valid", d.wr.valid), ("wr_data", d.wr.payload.data),
            ("wr_row", d.wr.payload.row), ("wr_set", d.wr.payload.set),
            ("req_valid", d.req.valid), ("req_x", d.req.payload.x),
            ("req_set", d.req.payload.set), ("req_acc", d.req.payload.acc),
            ("req_dst", d.req.payload.dst), ("res_ready", d.res.ready))]

    def elaborate(self, platform):
        p, d = self.params, self.dut
        N, C, S, E = p.n_in, p.n_out, p.n_sets, p.n_acc
        X, WB, A, P = p.x_bits, p.w_bits, p.acc_width, p.tree_stages
        L = X + P + 1 + self.latency_offset
        m = Module()
        m.submodules.dut = d
        (wv, wdata, wrow, wset, rv, rx, rset, racc, rdst, rrdy) = self.ports
        m.d.comb += [d.wr.valid.eq(wv), d.wr.payload.data.eq(wdata), d.wr.payload.row.eq(wrow),
                     d.wr.payload.set.eq(wset), d.req.valid.eq(rv), d.req.payload.x.eq(rx),
                     d.req.payload.set.eq(rset), d.req.payload.acc.eq(racc),
                     d.req.payload.dst.eq(rdst), d.res.ready.eq(rrdy)]
        rst = ResetSignal()
        accept = Signal()
        m.d.comb += accept.eq(rv & d.req.ready)

        # ---- history: hist[i] = accepted i+1 cycles ago; since = edges since the last accept
        H = max(L, X) + 1
        hist = Signal(H)
        m.d.sync += hist.eq(Cat(accept, hist[:-1]))
        since = Signal(range(X + 1), init=X)
        with m.If(accept):
            m.d.sync += since.eq(1)
        with m.Elif(since < X):
            m.d.sync += since.eq(since + 1)
        cur_set = Signal(p.set_bits)
        with m.If(accept):
            m.d.sync += cur_set.eq(rset)

        if "ready" in self.props:
            with m.If(since < X):
                m.d.comb += Assert(~d.req.ready, "req.ready high within x_bits-1 cycles "
                                                 "after an accept")
        if "latency" in self.props:
            m.d.comb += Assume(rrdy)
            m.d.comb += [Assert(d.res.valid == hist[L - 1], "res.valid not at accept + "
                                                            "x_bits + tree_stages + 1"),
                         Assert(d.busy == hist[:X].any(), "busy not in the x_bits issue "
                                                          "cycles")]
            with m.If(since >= X):
                m.d.comb += Assert(d.req.ready, "req.ready low x_bits cycles after an accept")

        # ---- reference weights: a write lands unless bad row or hazard (the contract)
        bad_row = Signal()
        hazard = Signal()
        lands = Signal()
        m.d.comb += [bad_row.eq(wrow >= N),
                     hazard.eq(d.busy & (wset == cur_set)),
                     lands.eq(wv & ~bad_row & ~hazard)]
        W = [[Signal(C * WB, name=f"ref_w_s{s}_r{r}", reset_less=True) for r in range(N)]
             for s in range(S)]
        w_next = [[Signal(C * WB, name=f"ref_wn_s{s}_r{r}") for r in range(N)]
                  for s in range(S)]
        for s in range(S):
            for r in range(N):
                hit = lands & (wset == s) & (wrow == r)
                m.d.comb += w_next[s][r].eq(Mux(hit, wdata, W[s][r]))
                m.d.sync += W[s][r].eq(w_next[s][r])

        if "err" in self.props:
            exp_err = Signal(2)
            m.d.sync += exp_err.eq(Mux(wv & bad_row, MacroErr.WR_BAD_ROW,
                                       Mux(wv & hazard, MacroErr.WR_HAZARD, MacroErr.NONE)))
            m.d.comb += Assert(d.err == exp_err, "err is not the code of the previous write")

        # ---- reference results
        # new beat: res.valid now, and the previous beat (if any) was taken or there was none
        pv, pr = Signal(), Signal()
        m.d.sync += [pv.eq(d.res.valid), pr.eq(rrdy)]
        beat = Signal()
        m.d.comb += beat.eq(d.res.valid & (~pv | pr))
        if "result" in self.props or "cover" in self.props:
            self._results(m, accept, beat, w_next, rx, rset, racc, rdst)
        if "cover" in self.props:
            m.d.comb += [Cover(d.err == MacroErr.WR_HAZARD, "hazard write rejected"),
                         Cover(accept & (since == X), "back-to-back accepts"),
                         Cover(d.res.valid & ~rrdy & d.busy, "result held while computing"),
                         Cover(~rst & beat & self._acc_beat, "accumulating result beat")]
        return m

    def _dot(self, xs, ws):
        """Signed dot product of input codes ``xs`` (two's complement, ``x_bits`` each) with
        signed weights ``ws``.  ``reference="horner"``: the contract's formula evaluated in one
        cycle, MSB first, ``acc = -p[X-1]``, then ``acc = 2*acc + p[k]`` with ``p[k]`` the sum
        of the weights whose input has bit k set; ``"mul"``: ``sum(x * w)``, the same number
        (the golden model checks the identity against numpy), whose equivalence with the
        bit-serial datapath the SAT solver does not close in minutes even for 2 x 1."""
        X = self.params.x_bits
        if self.reference == "mul":
            prods = [x.as_signed() * w for x, w in zip(xs, ws)]
            return sum(prods[1:], prods[0])

        def p(k):
            t = [Mux(x[k], w, 0) for x, w in zip(xs, ws)]
            return sum(t[1:], t[0])
        acc = -p(X - 1)
        for k in range(X - 2, -1, -1):
            acc = acc.shift_left(1) + p(k)
        return acc

    def _results(self, m, accept, beat, w_next, rx, rset, racc, rdst):
        """Two-entry FIFO of (dot products, acc, dst) pushed at accept, popped at each new
        beat, whose prediction is asserted; shadow result file y[E]."""
        p, d = self.params, self.dut
        N, C, E, X, WB, A = p.n_in, p.n_out, p.n_acc, p.x_bits, p.w_bits, p.acc_width
        dot = []
        for c in range(C):
            ws = [Array(w_next[s][r] for s in range(p.n_sets))[rset][c * WB:(c + 1) * WB]
                  .as_signed() for r in range(N)]
            t = Signal(signed(A), name=f"ref_dot_c{c}")
            m.d.comb += t.eq(self._dot([rx[r * X:(r + 1) * X] for r in range(N)], ws))
            dot.append(t)
        ent_w = C * A + 1 + p.dst_bits
        new = Signal(ent_w)
        m.d.comb += new.eq(Cat(*dot, racc, rdst))
        q = [Signal(ent_w, name=f"ref_q{i}") for i in range(2)]
        n = Signal(range(3))
        head = q[0]
        h_acc = head[C * A]
        h_dst = head[C * A + 1:]
        y = [Signal(C * A, name=f"ref_y{e}") for e in range(E)]
        old = Array(y)[h_dst]
        exp = Signal(C * A)
        m.d.comb += exp.eq(Cat(*((head[c * A:(c + 1) * A] + Mux(h_acc, old[c * A:(c + 1) * A],
                                                                 0))[:A] for c in range(C))))
        self._acc_beat = Signal()
        m.d.comb += self._acc_beat.eq(h_acc & (n > 0))
        if "result" in self.props:
            with m.If(beat):
                m.d.comb += [Assert(n > 0, "res beat without a request"),
                             Assert(d.res.payload.dst == h_dst, "res.dst is not the request's"),
                             Assert(d.res.payload.y == exp, "res.y is not the reference dot "
                                                            "product")]
            with m.If(accept & (n == 2) & ~beat):
                m.d.comb += Assert(0, "more than two requests in flight")
        with m.If(beat & (n > 0)):
            m.d.sync += Array(y)[h_dst].eq(exp)
        pop = beat & (n > 0)
        with m.If(pop & accept):
            with m.If(n == 1):
                m.d.sync += q[0].eq(new)
            with m.Else():
                m.d.sync += [q[0].eq(q[1]), q[1].eq(new)]
        with m.Elif(pop):
            m.d.sync += [q[0].eq(q[1]), n.eq(n - 1)]
        with m.Elif(accept & (n < 2)):
            m.d.sync += [Array(q)[n].eq(new), n.eq(n + 1)]
