"""Exp unit of the softmax unit (``docs/softmax.md``, "Arithmetic"): exponential lanes and
rescale units sharing one exp table.

* exp table: an ``amaranth.lib.memory.Memory`` of 2**TB words
  ``T[i] | (T[i] - T[i+1]) << (EW+1)`` (see :func:`table_words`), computed at construction
  from :func:`spec.softmax.exp_table`; one combinational read port per lane and unit;
* fraction exponential ``E(f) = T[i] - ((dT_i * rho + floor(2**(R-1))) >> R)``;
* exponential ``e(d) = (E(f) + floor(2**(k-1))) >> k``, k saturated at EW + 2 (e = 0 there);
* rescale ``RS(l, d) = (l * E(f) + 2**(EW+k-1)) >> (EW + k)``, k saturated at LW + 1 (0).

Rounding shifts use ``(v + floor(2**(s-1))) >> s == ((2v >> s) + 1) >> 1`` (exact for s >= 0),
so no shifted rounding constant is built.  Purely combinational.  :class:`ExpUnit` builds
the logic into its user's module (the softmax unit has no sub-module in Verilog);
:class:`ExpLanes` is a stand-alone component of it for tests.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from spec.softmax import SoftmaxParams, exp_table

__all__ = ["ExpUnit", "ExpLanes", "table_words"]


def table_words(params: SoftmaxParams, table=None) -> list[int]:
    """Exp-table memory contents: word i = ``T[i] | (T[i] - T[i+1]) << (EW + 1)`` for
    i = 0 .. 2**TB - 1 (``table``: the 2**TB + 1 entries T, default :func:`exp_table`)."""
    t = list(exp_table(params) if table is None else table)
    EW = params.exp_bits
    if len(t) != (1 << params.table_bits) + 1 or any(type(v) is not int for v in t) or \
            any(not 0 <= t[i + 1] <= t[i] < 1 << (EW + 1) for i in range(len(t) - 1)):
        raise ValueError(f"table_words: table={t!r} must be {(1 << params.table_bits) + 1} "
                         f"non-increasing ints in 0..2**{EW + 1}-1")
    return [t[i] | ((t[i] - t[i + 1]) << (EW + 1)) for i in range(len(t) - 1)]


class ExpUnit:
    """``n_exp`` exponential lanes and ``n_rs`` rescale units (combinational), built into the
    module of their user by :meth:`build` (no Verilog module of their own).

    Parameters
    ----------
    params : SoftmaxParams
        Widths FB, TB, EW, XW, LW.
    n_exp, n_rs : int
        Number of exponential lanes (>= 1) and of rescale units (>= 0).
    table : sequence of int, optional
        The 2**TB + 1 table entries (default :func:`spec.softmax.exp_table`; another table
        is a deliberately wrong DUT).

    Attributes (the interface signals)
    ----------------------------------
    d : list of Signal(XW)
        Exponent d >= 0 of each lane (log2 units, FB fraction bits, unsigned).
    e : list of Signal(EW+1)
        e(d), EW fraction bits (0 .. 2**EW).
    rs_l : list of Signal(LW)
        Sum l to rescale (EW fraction bits).
    rs_d : list of Signal(XW)
        Rescale exponent d >= 0.
    rs : list of Signal(LW)
        RS(l, d) <= l.
    """

    def __init__(self, params: SoftmaxParams, n_exp: int, n_rs: int, table=None):
        if not isinstance(params, SoftmaxParams):
            raise ValueError(f"ExpUnit: params={params!r} must be a SoftmaxParams")
        if type(n_exp) is not int or n_exp < 1:
            raise ValueError(f"ExpUnit: n_exp={n_exp!r} must be an int >= 1")
        if type(n_rs) is not int or n_rs < 0:
            raise ValueError(f"ExpUnit: n_rs={n_rs!r} must be an int >= 0")
        words = table_words(params, table)
        self.params, self.n_exp, self.n_rs = params, n_exp, n_rs
        self.table = tuple(exp_table(params) if table is None else table)
        EW, XW, LW = params.exp_bits, params.x_bits, params.l_bits
        self._dbits = max(1, max(w >> (EW + 1) for w in words).bit_length())
        self.memory = Memory(shape=unsigned(EW + 1 + self._dbits), depth=len(words),
                             init=words)
        silence_unused(self.memory)
        self._ports = [self.memory.read_port(domain="comb") for _ in range(n_exp + n_rs)]
        self.d = [Signal(XW, name=f"exp{i}_d") for i in range(n_exp)]
        self.e = [Signal(EW + 1, name=f"exp{i}_e") for i in range(n_exp)]
        self.rs_l = [Signal(LW, name=f"rs{j}_l") for j in range(n_rs)]
        self.rs_d = [Signal(XW, name=f"rs{j}_d") for j in range(n_rs)]
        self.rs = [Signal(LW, name=f"rs{j}_rs") for j in range(n_rs)]

    def _efrac(self, m, port, f, name):
        """E(f) (EW+1 bits) of the FB-bit fraction ``f``, reading the table through ``port``."""
        p = self.params
        EW, R = p.exp_bits, p.frac_bits - p.table_bits
        m.d.comb += port.addr.eq(f[R:])
        ti, di = port.data[:EW + 1], port.data[EW + 1:]
        e = Signal(EW + 1, name=f"{name}_E")
        if R == 0:
            m.d.comb += e.eq(ti)
        else:
            m.d.comb += e.eq(ti - ((di * f[:R] + (1 << (R - 1))) >> R))
        return e

    def build(self, m: Module, name: str = "exp_table") -> None:
        """Add the table (submodule ``name``) and the lanes' logic to the module ``m``."""
        p = self.params
        EW, FB, LW = p.exp_bits, p.frac_bits, p.l_bits
        m.submodules[name] = self.memory
        for i in range(self.n_exp):
            d = self.d[i]
            E = self._efrac(m, self._ports[i], d[:FB], f"exp{i}")
            kk = Signal(range(EW + 3), name=f"exp{i}_k")
            m.d.comb += [kk.eq(Mux(d[FB:] > EW + 2, EW + 2, d[FB:])),
                         self.e[i].eq(((Cat(Const(0, 1), E) >> kk) + 1) >> 1)]
        for j in range(self.n_rs):
            d = self.rs_d[j]
            E = self._efrac(m, self._ports[self.n_exp + j], d[:FB], f"rs{j}")
            ks = Signal(range(LW + 2), name=f"rs{j}_k")
            prod = Signal(LW + EW + 1, name=f"rs{j}_prod")
            m.d.comb += [ks.eq(Mux(d[FB:] > LW + 1, LW + 1, d[FB:])),
                         prod.eq(self.rs_l[j] * E),
                         # 2 l E >> (EW + k) == (l E >> (EW - 1)) >> k
                         self.rs[j].eq((((prod >> (EW - 1)) >> ks) + 1) >> 1)]


class ExpLanes(wiring.Component):
    """A stand-alone :class:`ExpUnit` (for tests): ports ``d`` In(XW) x n_exp, ``e``
    Out(EW+1) x n_exp, and with ``n_rs`` > 0 ``rs_l`` In(LW), ``rs_d`` In(XW), ``rs`` Out(LW),
    each x n_rs (parameters as :class:`ExpUnit`)."""

    def __init__(self, params: SoftmaxParams, n_exp: int, n_rs: int = 0, table=None):
        silence_unused(self)
        self._xu = ExpUnit(params, n_exp, n_rs, table)
        silence_unused(self, False)
        self.params = params
        XW, LW, EW = params.x_bits, params.l_bits, params.exp_bits
        sig = {"d": In(XW).array(n_exp), "e": Out(EW + 1).array(n_exp)}
        if n_rs:
            sig.update({"rs_l": In(LW).array(n_rs), "rs_d": In(XW).array(n_rs),
                        "rs": Out(LW).array(n_rs)})
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        xu = self._xu
        xu.build(m)
        m.d.comb += [a.eq(b) for a, b in zip(xu.d, self.d)]
        m.d.comb += [a.eq(b) for a, b in zip(self.e, xu.e)]
        if xu.n_rs:
            m.d.comb += [a.eq(b) for a, b in zip(xu.rs_l, self.rs_l)]
            m.d.comb += [a.eq(b) for a, b in zip(xu.rs_d, self.rs_d)]
            m.d.comb += [a.eq(b) for a, b in zip(self.rs, xu.rs)]
        return m
