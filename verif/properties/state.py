"""Formal properties on the internal state of the DRAM bank, the module and the channel.

The harnesses here elaborate the component themselves (``Fragment.get``), add the fragment as
the submodule ``dut`` and *read* its registers: the registers of a fragment are the signals
its ``sync`` statements assign (:func:`sync_registers`), so every register, also one added
later, is found without a probe and is checked unless it is excluded **by name** with a
reason.  Nothing in ``hdl/`` is changed; inputs and ``rst`` are free (a reset may come in
any cycle), as in :mod:`verif.properties.streams`.

:class:`DramRejectHarness`  a command the bank rejects (``err != 0`` in the next cycle:
                            BAD_OP, BAD_ROW, BAD_COL, NOT_OPEN, ROW_OPEN) changes no register
                            but ``err``, writes no memory, and the free-running parts run as if
                            there were no command (timing counters only count down or take a
                            refresh load, the read delay line shifts in 0, no result beat).
:class:`ModuleRejectHarness`  a host command the module rejects (``err`` = a ModErr) changes
                            no page-table entry, token counter or loop register, reaches no
                            channel (every ``ch.cmd.valid`` is 0), and the host FIFO only pops
                            it (plus an independent push).
:class:`PageTableHarness`   over any host command sequence, no two valid page-table entries
                            map one physical page (so a page has one owner: an entry has one
                            ``rid``), and a valid entry's ``pp`` and ``rid`` are in range.
:class:`ChannelLiveHarness` with ``out.ready`` fair (never low ``fair`` cycles in a row):
                            any accepted command (the solver picks which one with a free
                            ``watch`` input) has its ``done`` bit set within ``bound`` cycles,
                            also while new commands keep arriving; and the channel is ``idle``
                            once no command has been accepted for ``idle_bound`` cycles.
"""
from __future__ import annotations

import fnmatch

from amaranth.hdl import (Assert, Assume, Cat, Const, Elaboratable, Module, Mux, Signal,
                          Value)
from amaranth.hdl._ast import SignalSet
from amaranth.hdl._ir import Fragment
from amaranth.lib import data

from cimphony.compat import silence_unused

from .streams import free_inputs

__all__ = ["sync_registers", "DramRejectHarness", "ModuleRejectHarness", "PageTableHarness",
           "ChannelLiveHarness", "DRAM_EXCLUDED", "MODULE_EXCLUDED"]

#: DRAM-bank registers not compared on a reject, each with the reason (and what is checked
#: instead).  Every other register of the bank (``is_open``, ``row``, the accumulators,
#: ``res_pay``, the read FIFO's write pointer, ...) must keep its value.
DRAM_EXCLUDED = {
    "err": "the rejection report itself",
    "timer": "refresh interval timer, free-running",
    "ref_pend": "pending refreshes: raised by the timer, taken by a refresh start (neither "
                "depends on the command)",
    "ref_lost": "refresh overflow flag, free-running",
    "rd_pay": "data of an earlier RD leaving the delay line (rd.valid, r_ptr and vpipe are "
              "checked: they advance as with no command)",
    # checked against their no-command next value instead of 'unchanged':
    "c_act": "timing counter: checked = max(c-1, 0) or the refresh load (tRFC-1) at a refresh "
             "start", "c_pre": "timing counter: checked = max(c-1, 0)",
    "c_mac": "timing counter: checked = max(c-1, 0)", "c_rd": "timing counter: checked = "
             "max(c-1, 0)", "c_wr": "timing counter: checked = max(c-1, 0)",
    "c_ref": "timing counter: checked = max(c-1, 0) or the refresh load at a refresh start",
    "vpipe": "read delay line: checked = shifted with a 0 entering (no new RD)",
    "r_ptr": "read FIFO read pointer: checked = advances iff an earlier RD is due",
    "rd__valid": "checked = an earlier RD is due (the bit leaving vpipe)",
    "res__valid": "checked = 0 (no result beat from a rejected MAC)",
}

#: Module registers not compared on a reject (see :class:`ModuleRejectHarness`).
MODULE_EXCLUDED = {
    "err": "the rejection report itself", "ovf": "a dropped push (host side, independent)",
    "err_count": "counts the rejection",
    "out__valid": "output merge of earlier channel results, free-running",
    "out__payload": "output merge of earlier channel results, free-running",
    "fifo_rd": "checked: advances by one in mode NONE (the command is consumed)",
    "fifo_n": "checked: -1 in mode NONE, +1 for an independent host push",
    "fifo_wr": "checked: unchanged unless the host pushes",
    "fifo_m*": "host FIFO storage: checked unchanged unless the host pushes",
    "idx": "loop position: checked unchanged in mode NONE; in REPLAY a rejected command is "
           "consumed and the loop advances as for any consumed command",
    "iter": "loop position (as idx)", "vp_off": "loop offset (as idx)",
    "o_off": "loop offset (as idx)", "mode": "checked unchanged in mode NONE (the last "
                                             "REPLAY command ends the loop, rejected or not)",
}


#: loop registers that a rejected command leaves unchanged in mode NONE only
LOOP_REGS = ("idx", "iter", "vp_off", "o_off", "mode")


def sync_registers(frag: Fragment) -> list[tuple[str, Signal]]:
    """[(name, signal)] of the registers of ``frag`` itself (the signals its ``sync``
    statements assign; not its subfragments'), sorted by name."""
    sigs = SignalSet()
    for st in frag.statements.get("sync", []):
        sigs |= st._lhs_signals()
    return sorted(((s.name, s) for s in sigs), key=lambda t: t[0])


def _reg(frag, name):
    hits = [s for n, s in sync_registers(frag) if n == name]
    if len(hits) != 1:
        raise ValueError(f"no single register {name!r} in the elaborated design ({len(hits)})")
    return hits[0]


class _Harness(Elaboratable):
    """``dut`` with every input port a free port of the harness (``ports``)."""

    def __init__(self, dut):
        silence_unused(dut)
        self.dut = dut
        # (an always-ready stream's ready is a constant input: not a port)
        self._inputs = [(v, s) for v, s in free_inputs(dut) if not isinstance(v, Const)]
        self.ports: list[Signal] = [s for _, s in self._inputs]

    def _build(self, platform):
        m = Module()
        frag = Fragment.get(self.dut, platform)
        m.submodules.dut = frag
        m.d.comb += [v.eq(s) for v, s in self._inputs]
        return m, frag

    def _input(self, value):
        """The harness port driving the dut input ``value``."""
        v = Value.cast(value)
        for dv, s in self._inputs:
            if dv is v or repr(dv) == repr(v):
                return s
        raise ValueError(f"{value!r} is not an input of the dut")


def _prev(m, value, name):
    """``value`` of the previous cycle (a reset-less copy: also across a reset)."""
    v = Value.cast(value)
    r = Signal(v.shape(), name=f"prev_{name}", reset_less=True)
    m.d.sync += r.eq(v)
    return r


def _excluded(name, excluded):
    return any(fnmatch.fnmatchcase(name, pat) for pat in excluded)


def _unchanged(m, cond, regs, excluded, what):
    """Assert, in the cycles where ``cond``, that every register not matched by a pattern of
    ``excluded`` equals its previous-cycle value; returns the names checked."""
    checked = []
    for i, (name, sig) in enumerate(regs):
        if _excluded(name, excluded):
            continue
        old = _prev(m, sig, f"{i}_{name}")
        with m.If(cond):
            m.d.comb += Assert(sig == old, f"{what}: register {name} changed")
        checked.append(name)
    return checked


class DramRejectHarness(_Harness):
    """A rejected DRAM-bank command changes no state (see :data:`DRAM_EXCLUDED`).

    ``exclude`` replaces :data:`DRAM_EXCLUDED` (a smaller set is a deliberately broken
    property, e.g. without ``timer``)."""

    def __init__(self, params, exclude=None):
        from hdl.dram_bank import DramBank
        super().__init__(DramBank(params))
        self.params = params
        self.exclude = dict(DRAM_EXCLUDED if exclude is None else exclude)
        self.checked: list[str] = []

    def elaborate(self, platform):
        from hdl.dram_timing import COUNTERS, load_values
        d, t = self.dut, self.params.timing
        m, frag = self._build(platform)
        regs = sync_registers(frag)
        reg = dict(regs)
        rej = Signal()               # the previous cycle's command was rejected
        m.d.comb += rej.eq(d.err != 0)
        self.checked = _unchanged(m, rej, regs, self.exclude, "rejected bank command")
        # memory writes and the row-buffer read of the previous cycle
        mem_en = [d._wport.en, d._rport.en] + ([d._rd_w.en] if t.tCL > 1 else [])
        prev_en = _prev(m, Cat(*mem_en), "mem_en")
        checks = [(prev_en == 0, "a memory port enabled"), (~d.res.valid, "a result beat")]
        # timing counters: as with no command (count down; a refresh start may load)
        if set(COUNTERS) & set(self.exclude):
            p_open, p_pend = _prev(m, d.open, "open"), _prev(m, d.ref_pend, "ref_pend")
            start = ~p_open & (p_pend != 0) & (_prev(m, reg["c_act"], "c_act_start") == 0)
            for name, loads in load_values(t).items():
                c = reg[name]
                pc = _prev(m, c, f"cnt_{name}")
                exp = Signal(len(c), name=f"exp_{name}")
                m.d.comb += exp.eq(Mux(pc != 0, pc - 1, 0))
                for ev, v in loads:
                    if ev == "ref" and v:
                        with m.If(start & (Mux(pc != 0, pc - 1, 0) < v)):
                            m.d.comb += exp.eq(v)
                checks.append((c == exp, f"{name} not as with no command"))
        if "vpipe" in reg:
            vp, rp = reg["vpipe"], reg["r_ptr"]
            pv, prp = _prev(m, vp, "vpipe"), _prev(m, rp, "r_ptr")
            checks += [(vp == Cat(Const(0, 1), pv[:-1]), "vpipe took an RD"),
                       (d.rd.valid == pv[-1], "rd.valid not the due RD"),
                       (rp == (prp + pv[-1])[:len(rp)], "r_ptr not as with no command")]
        with m.If(rej):
            m.d.comb += [Assert(c, f"rejected bank command: {w}") for c, w in checks]
        return m


class ModuleRejectHarness(_Harness):
    """A rejected host command changes no module state (see :data:`MODULE_EXCLUDED`)."""

    def __init__(self, params, exclude=None):
        from hdl.module import PimModule
        super().__init__(PimModule(params))
        self.params = params
        self.exclude = dict(MODULE_EXCLUDED if exclude is None else exclude)
        self.checked: list[str] = []

    def elaborate(self, platform):
        from spec.isa import LoopMode
        d, p = self.dut, self.params
        m, frag = self._build(platform)
        regs = sync_registers(frag)
        reg = dict(regs)
        F = p.fifo_depth
        rej = Signal()
        m.d.comb += rej.eq(d.err != 0)
        self.checked = _unchanged(m, rej, regs, self.exclude, "rejected host command")
        p_none = _prev(m, reg["mode"] == LoopMode.NONE, "mode_none")
        f_n, rd, wr = reg["fifo_n"], reg["fifo_rd"], reg["fifo_wr"]
        p_push = _prev(m, d.host.valid & (f_n != F), "push")
        p_chv = _prev(m, Cat(*(ch.cmd.valid for ch in d.channels)), "ch_cmd_valid")
        # in mode NONE: the loop registers too; without a host push: the FIFO storage
        self.checked += _unchanged(m, rej & p_none, [(n, reg[n]) for n in LOOP_REGS
                                                     if n in reg], (), "rejected host command "
                                   "in mode NONE")
        self.checked += _unchanged(m, rej & ~p_push, [(n, s) for n, s in regs
                                                       if n.startswith("fifo_m") or n == "fifo_wr"],
                                   (), "rejected host command, no push")
        prd, pn = _prev(m, rd, "fifo_rd"), _prev(m, f_n, "fifo_n")
        with m.If(rej):
            m.d.comb += [
                Assert(p_chv == 0, "rejected host command: reached a channel"),
                Assert(rd == Mux(p_none, Mux(prd == F - 1, 0, prd + 1), prd),
                       "rejected host command: FIFO head not popped exactly once"),
                Assert(f_n == (pn + p_push - p_none)[:len(f_n)],
                       "rejected host command: FIFO count"),
            ]
        return m


class PageTableHarness(_Harness):
    """The page table's invariant over any host command sequence (docs/module.md,
    ALREADY_MAPPED): no two valid entries map one physical page; valid entries have
    ``pp < n_pages`` and ``rid < n_req``.  ``broken=True`` also asserts that no requester
    owns two pages (false: a deliberately broken property)."""

    def __init__(self, params, broken: bool = False):
        from hdl.module import PimModule
        super().__init__(PimModule(params))
        self.params, self.broken = params, broken

    def elaborate(self, platform):
        p = self.params
        V, R, NP = p.n_vpages, p.n_req, p.n_pages
        m, frag = self._build(platform)
        bits = lambda n: max(1, (n - 1).bit_length())
        lay = data.StructLayout({"valid": 1, "rid": bits(R), "pp": bits(NP)})
        pt = []
        for v in range(V):
            s = _reg(frag, f"pt{v}")
            if len(s) != lay.size:
                raise ValueError(f"pt{v} has {len(s)} bits, the layout {lay.size}")
            pt.append(data.View(lay, s))
        for v, e in enumerate(pt):
            with m.If(e.valid):
                m.d.comb += [Assert(e.pp < NP, f"pt{v} maps a page >= n_pages"),
                             Assert(e.rid < R, f"pt{v} has a rid >= n_req")]
            for w in range(v + 1, V):
                f = pt[w]
                m.d.comb += Assert(~(e.valid & f.valid & (e.pp == f.pp)),
                                   f"pt{v} and pt{w} map the same physical page")
                if self.broken:
                    m.d.comb += Assert(~(e.valid & f.valid & (e.rid == f.rid)),
                                       f"BROKEN: pt{v} and pt{w} have one owner")
        return m


class ChannelLiveHarness(_Harness):
    """Bounded completion of the channel under fair ``out.ready`` (see module docstring).

    Parameters
    ----------
    params : ChannelParams
    fair : int
        ``out.ready`` is never low for ``fair`` cycles in a row (an assumption).
    bound : int
        A command accepted in cycle t has its done bit set in cycle t + bound at the latest.
    idle_bound : int or None
        ``idle`` once no command was accepted in the last ``idle_bound`` cycles (None: not
        checked).
    """

    def __init__(self, params, fair: int, bound: int, idle_bound: int | None = None):
        from hdl.channel import PimChannel
        silence_unused(self)              # not an unused design if the checks below raise
        for name, v in (("fair", fair), ("bound", bound)):
            if type(v) is not int or v < 1:
                raise ValueError(f"ChannelLiveHarness: {name}={v!r} must be an int >= 1")
        if idle_bound is not None and (type(idle_bound) is not int or idle_bound < 1):
            raise ValueError(f"ChannelLiveHarness: idle_bound={idle_bound!r} must be None or "
                             "an int >= 1")
        silence_unused(self, False)
        super().__init__(PimChannel(params))
        self.params, self.fair, self.bound, self.idle_bound = params, fair, bound, idle_bound
        self.watch = Signal(name="in_watch")
        self.ports.append(self.watch)

    def elaborate(self, platform):
        d, N, K = self.dut, self.fair, self.bound
        m, frag = self._build(platform)
        done, nseq = _reg(frag, "done"), _reg(frag, "nseq")
        ready = self._input(d.out.ready)
        # fairness: out.ready low for at most N cycles in a row
        low = Signal(range(N + 1), name="ready_low")
        m.d.sync += low.eq(Mux(ready, 0, Mux(low == N, N, low + 1)))
        with m.If(low == N):
            m.d.comb += Assume(ready)
        # well-formed commands (docs/channel.md: every field in range for the channel; a MAC
        # to a bank >= n_banks would wait for a macro that does not exist)
        p, mp = self.params, self.params.macro
        c = d.cmd.payload
        with m.If(d.cmd.valid):
            m.d.comb += [Assume(c.bank < p.n_banks), Assume(c.g < p.n_gbuf),
                         Assume(c.set < mp.n_sets), Assume(c.row < mp.n_in),
                         Assume(c.o < mp.n_acc)]
        acc = Signal()
        m.d.comb += acc.eq(d.cmd.valid & d.cmd.ready)
        # the watched command: its seq, pending until its done bit is set; wait = cycles since
        # its accept (1 in the cycle after)
        pend = Signal(name="w_pend")
        wseq = Signal(len(nseq), name="w_seq")
        wait = Signal(range(K + 2), name="w_wait")
        w_done = done.bit_select(wseq, 1)
        with m.If(pend):
            with m.If(w_done):
                m.d.sync += pend.eq(0)
            with m.Elif(wait <= K):
                m.d.sync += wait.eq(wait + 1)
        with m.Else():
            with m.If(acc & self.watch):
                m.d.sync += [pend.eq(1), wseq.eq(nseq), wait.eq(1)]
        with m.If(pend & ~w_done):
            m.d.comb += Assert(wait < K, f"an accepted command not done within {K} cycles")
        if self.idle_bound is not None:
            Q = self.idle_bound
            quiet = Signal(range(Q + 1), name="quiet")
            m.d.sync += quiet.eq(Mux(acc, 0, Mux(quiet == Q, Q, quiet + 1)))
            with m.If(quiet == Q):
                m.d.comb += Assert(d.idle, f"not idle {Q} cycles after the last accept")
        return m
