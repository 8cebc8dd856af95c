"""Performance model: a transaction-level, timing-only simulator of a PIM module.

It executes the same host programs as the RTL and the golden model (``perf/program.py``: host
commands, compressed with :class:`~perf.program.Rep`), under the timing rules of
docs/module.md and docs/channel.md, but without data: a command is a transaction with an
enqueue, an issue and a completion cycle; a bank is its timing (DIMC: accept one MAC per X
cycles, result after X+P+1; DRAM: row activation, tCCD column stream, tRRD/tFAW), not its bits.
The host pushes the next command whenever the FIFO has room (exactly :func:`compiler.attention.pace`)
and is always ready for results.  On every configuration the RTL can run, its cycle counts equal
the golden model's (tests/test_perfsim.py), which equal the RTL's (lockstep).

Speed: a cycle in which nothing can change is skipped to the next timer.  A ``Rep`` is
simulated iteration by iteration until the normalised state at an iteration boundary (every
timer relative to now, every sequence id relative to the next one, every set relative to the
iteration's set offset, the host FIFO's pending commands) repeats; the schedule is then periodic,
and the remaining whole periods are added in closed form (cycles and every counter), which is
exact: the machine is deterministic and each period sees the same commands.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from spec.isa import ChannelParams, HostOp, ModuleParams, seq_window
from perf.program import CH_OPS, Rep
from spec.params import MacroParams
from model.stimulus import TAIL

__all__ = ["SimParams", "DramTiming", "GDDR6_AIM", "PerfSim", "SimResult", "simulate", "STATS"]


@dataclass(frozen=True)
class DramTiming:
    """DRAM-PIM bank timing in DRAM clock cycles (ANCHORS.md, GDDR6-AiM preset, tCK 0.5 ns)."""
    tCK_ns: float = 0.5
    CL: int = 50
    RCDRD: int = 36
    RCDWR: int = 28
    RP: int = 32
    RAS: int = 54
    RC: int = 89
    WR: int = 33
    RTP: int = 12
    CCDS: int = 2
    CCDL: int = 2
    RRDS: int = 11
    RRDL: int = 11
    FAW: int = 42
    RFC: int = 210
    REFI: int = 3333
    RCDRDMAC: int = 56
    burst_bytes: int = 32          # bytes per column access (one MAC column / one I/O burst)


GDDR6_AIM = DramTiming()


@dataclass(frozen=True)
class SimParams:
    """One PIM module as the performance model sees it (no ISA field-width limits, so a
    16-channel x 16-bank module with thousands of pages per bank is expressible).

    n_ch, n_banks      channels per module, banks per channel
    n_gbuf, q_depth    GBuf entries per channel; I/O and compute queue depth per channel
    dcs                dynamic command scheduling (False: in-order baseline)
    n_in, n_out        page = one n_in x n_out weight tile of one bank (rows x columns)
    x_bits, w_bits     input / weight bits (DIMC: X = x_bits cycles per MAC, bit-serial)
    tree_stages        DIMC adder-tree pipeline stages P
    n_sets             pages per bank (DIMC: selectable weight sets; DRAM: rows)
    n_acc              OBuf entries per bank (output registers)
    fifo_depth         host command FIFO; loop_len: LOOP body buffer
    backend            "dimc" (the RTL macro's timing) or "dram" (GDDR6-AiM bank timing)
    dram               DRAM timing (backend "dram")
    clock_ghz          clock of the module (DIMC 1.0; DRAM 1/tCK)
    out_ports          result beats the hub takes per cycle, from the lowest-numbered channels
                       holding one (the RTL module: 1; a hub with one port per channel: n_ch)
    """
    n_ch: int = 4
    n_banks: int = 4
    n_gbuf: int = 4
    q_depth: int = 8
    dcs: bool = True
    n_in: int = 64
    n_out: int = 64
    x_bits: int = 8
    w_bits: int = 8
    tree_stages: int = 1
    n_sets: int = 2
    n_acc: int = 16
    fifo_depth: int = 8
    loop_len: int = 8
    backend: str = "dimc"
    dram: DramTiming = GDDR6_AIM
    clock_ghz: float = 1.0
    out_ports: int = 1

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"SimParams: {name}={getattr(self, name)!r} {why}")
        for name in ("n_ch", "n_banks", "n_gbuf", "n_in", "n_out", "x_bits", "w_bits", "n_sets",
                     "n_acc", "loop_len", "out_ports"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "must be an int >= 1")
        for name in ("q_depth", "fifo_depth"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 2:
                bad(name, "must be an int >= 2")
        if self.tree_stages not in (0, 1, 2):
            bad("tree_stages", "must be 0, 1 or 2")
        if self.backend not in ("dimc", "dram"):
            bad("backend", "must be 'dimc' or 'dram'")
        if not isinstance(self.dcs, bool):
            bad("dcs", "must be a bool")
        if not self.clock_ghz > 0:
            bad("clock_ghz", "must be > 0")

    @classmethod
    def from_module(cls, p: ModuleParams) -> "SimParams":
        """The timing view of an RTL/golden-model module (DIMC back-end)."""
        cp, m = p.channel, p.channel.macro
        return cls(n_ch=p.n_ch, n_banks=cp.n_banks, n_gbuf=cp.n_gbuf, q_depth=cp.q_depth,
                   dcs=cp.dcs, n_in=m.n_in, n_out=m.n_out, x_bits=m.x_bits, w_bits=m.w_bits,
                   tree_stages=m.tree_stages, n_sets=m.n_sets, n_acc=m.n_acc,
                   fifo_depth=p.fifo_depth, loop_len=p.loop_len)

    def to_module(self, n_vpages: int = 256, n_req: int = 16) -> ModuleParams:
        """The RTL/golden-model module with this timing (DIMC only; ValueError when a size is
        beyond what the ISA encodes, e.g. n_ch > 8)."""
        if self.backend != "dimc":
            raise ValueError(f"to_module: backend={self.backend!r} has no RTL (only 'dimc')")
        if self.out_ports != 1:
            raise ValueError(f"to_module: out_ports={self.out_ports} (the RTL hub has 1)")
        m = MacroParams(n_in=self.n_in, n_out=self.n_out, w_bits=self.w_bits,
                        x_bits=self.x_bits, n_sets=self.n_sets, n_acc=self.n_acc,
                        tree_stages=self.tree_stages)
        cp = ChannelParams(m, n_banks=self.n_banks, n_gbuf=self.n_gbuf, q_depth=self.q_depth,
                           dcs=self.dcs)
        return ModuleParams(cp, n_ch=self.n_ch, n_vpages=n_vpages, n_req=n_req,
                            fifo_depth=self.fifo_depth, loop_len=self.loop_len)

    def with_(self, **kw) -> "SimParams":
        return replace(self, **kw)

    @property
    def n_pages(self) -> int:
        """Physical pages per channel (a page is one set of one bank, same pp in every channel)."""
        return self.n_banks * self.n_sets

    @property
    def page_bytes(self) -> int:
        """Bytes of one page in ONE channel: n_in x n_out x w_bits / 8."""
        return self.n_in * self.n_out * self.w_bits // 8

    @property
    def capacity_bytes(self) -> int:
        """Bytes of the module: every page of every bank of every channel."""
        return self.n_ch * self.n_pages * self.page_bytes

    @property
    def refresh_factor(self) -> float:
        """DRAM: all-bank refresh every tREFI makes the banks unavailable for tRFC, after a
        precharge (tRP) and before a re-activation (tRCDRDMAC).  Applied in closed form as a
        stretch of the run: tREFI / (tREFI - tRFC - tRP - tRCDRDMAC).  DIMC (SRAM): 1."""
        if self.backend != "dram":
            return 1.0
        d = self.dram
        return d.REFI / (d.REFI - d.RFC - d.RP - d.RCDRDMAC)

    @property
    def peak_macs_per_cycle(self) -> float:
        """Internal-bandwidth-bound peak of the module: every bank streaming its array (DIMC:
        n_in x n_out MACs per X cycles; DRAM: one 32-byte column per tCCDL per bank)."""
        per_bank = (self.n_in * self.n_out / self.x_bits if self.backend == "dimc"
                    else self.dram.burst_bytes * 8 / self.w_bits / self.dram.CCDL)
        return per_bank * self.n_banks * self.n_ch


# ---------------------------------------------------------------------------------------------
# The simulator
INF = 1 << 62
_NOP, _WR_INP, _WR_W, _MAC, _RD_OUT = (int(HostOp.NOP), int(HostOp.WR_INP), int(HostOp.WR_W),
                                       int(HostOp.MAC), int(HostOp.RD_OUT))
_MAP, _UNMAP, _SET_TOK, _LOOP, _BARRIER = (int(HostOp.MAP), int(HostOp.UNMAP),
                                           int(HostOp.SET_TOK), int(HostOp.LOOP),
                                           int(HostOp.BARRIER))
_NONE, _CAPTURE, _REPLAY = 0, 1, 2
_PAGE_OPS = (_WR_W, _MAC)          # channel ops whose page set matters for timing

# counters (SimResult.stats keys, in this order)
STATS = ("busy", "mac", "wr_inp", "wr_w", "rd_out", "beats", "act", "host_cmds")
_BUSY, _NMAC, _NWI, _NWW, _NRD, _BEATS, _ACT, _HOST = range(len(STATS))


class _Cell:
    """Completion of one channel command: ``t`` = first cycle in which its done bit is visible
    (INF until it issues); ``idx`` = its channel-local sequence number (not taken mod W)."""
    __slots__ = ("t", "idx")

    def __init__(self, t, idx):
        self.t, self.idx = t, idx


class _Chan:
    """Timing state of one channel (docs/channel.md without data)."""

    def __init__(self, sp: SimParams):
        self.ioq, self.cq = deque(), deque()
        self.n = 0                               # next sequence number
        self.W = W = seq_window(sp.q_depth, sp.n_banks, sp.tree_stages)
        self.ring = [_Cell(0, -W + i) for i in range(W)]   # reset: every id done
        self.tab = {}                            # dependency table: key -> _Cell
        B = sp.n_banks
        self.bank_ready = [0] * B                # cycle from which bank b accepts a MAC
        self.last_dv = 0                         # latest completion time of anything issued
        self.iss = 0                             # in-order: next sequence number to issue
        self.out_valid = 0
        self.io_ready = 0                        # DRAM: I/O bus free from this cycle
        self.open_row = [None] * B               # DRAM: open row per bank
        self.t_act = [-INF] * B
        self.last_col = [-INF] * B
        self.acts = deque(maxlen=4)              # DRAM: last four ACT cycles of the channel



@dataclass
class SimResult:
    """Result of :func:`simulate`.

    t_end      first cycle in which the module is idle after the last push (everything done;
               the host pushed the first command in cycle 0)
    cycles     the golden model's convention for the same program (``pace`` adds a trailing NOP
               once drained, ``ModuleModel.run`` ends TAIL cycles after idle, plus 1):
               t_end + 3 + TAIL
    stats      counters over the whole run: busy (bank busy cycles, summed over banks and
               channels), mac / wr_inp / wr_w / rd_out (channel commands, i.e. host commands x
               channels in their mask), beats (results delivered), act (DRAM row activations),
               host_cmds (host commands consumed), busy_ch (busy bank-cycles per channel)
    sim_cycles cycles actually simulated (the rest were added in closed form)
    skipped    (label, iterations, cycles) of every closed-form skip
    """
    params: SimParams
    t_end: int
    cycles: int
    stats: dict
    sim_cycles: int
    skipped: list

    @property
    def time_s(self) -> float:
        """Wall time of the run: t_end cycles at the module clock, DRAM refresh included."""
        p = self.params
        return self.t_end * p.refresh_factor / (p.clock_ghz * 1e9)

    @property
    def mac_util(self) -> float:
        """Busy bank-cycles / (t_end x banks x channels)."""
        p = self.params
        return self.stats["busy"] / max(1, self.t_end * p.n_banks * p.n_ch)

    @property
    def channel_util(self) -> float:
        """Channel balance: mean over channels of busy bank-cycles / the busiest channel's (1: every
        channel does as much MAC work as the busiest; 1/C: one channel does everything)."""
        b = self.stats["busy_ch"]
        return sum(b) / (len(b) * max(b)) if max(b, default=0) else 0.0


class _Frame:
    __slots__ = ("seq", "pos", "rep", "it", "n", "set0", "vp0", "set_off", "vp_off", "snaps")

    def __init__(self, seq, rep, set0, vp0):
        self.seq, self.pos, self.rep, self.it = seq, 0, rep, 0
        self.n = rep.n if rep is not None else 1
        self.set0, self.vp0 = set0, vp0
        self.set_off, self.vp_off = set0, vp0
        self.snaps = {}


class PerfSim:
    """Transaction-level timing simulator of one module (see the module docstring)."""

    def __init__(self, sp: SimParams, *, extrapolate: bool = True, min_rep: int = 4):
        if not isinstance(sp, SimParams):
            raise ValueError(f"PerfSim: params={sp!r} is not a SimParams")
        self.sp = sp
        self.extrapolate = extrapolate
        self.min_rep = min_rep
        d = sp.dram
        self.dram = sp.backend == "dram"
        X, P = sp.x_bits, sp.tree_stages
        if self.dram:
            ncol = max(1, -(-sp.page_bytes // d.burst_bytes))
            self.ncol = ncol
            self.mac_busy = ncol * d.CCDL
            self.io_cost = {_WR_INP: max(1, -(-(sp.n_in * sp.x_bits // 8) // d.burst_bytes))
                            * d.CCDS,
                            _WR_W: max(1, -(-(sp.n_out * sp.w_bits // 8) // d.burst_bytes))
                            * d.CCDS,
                            _RD_OUT: max(1, -(-(sp.n_out * 2) // d.burst_bytes)) * d.CCDS}
        else:
            self.mac_busy = X
            self.mac_lat = X + P + 2          # issue -> done visible
        self.horizon = max(d.RAS, d.RTP, d.FAW, d.RRDS, d.CCDL) + 1

    # --- program walker -------------------------------------------------------------------
    def _fetch(self):
        """Next leaf (with strides applied) and the frame whose iteration it starts (or None)."""
        st = self._stack
        boundary = None
        while st:
            f = st[-1]
            if f.pos < len(f.seq):
                it = f.seq[f.pos]
                f.pos += 1
                if isinstance(it, Rep):
                    if it.n == 0:
                        continue
                    nf = _Frame(it.bodies[0], it, f.set_off, f.vp_off)
                    st.append(nf)
                    boundary = boundary or nf
                    continue
                if (f.set_off or f.vp_off) and it.op in CH_OPS:
                    it = it._replace(set=it.set + f.set_off if it.set >= 0 else it.set,
                                     vp=it.vp + f.vp_off if it.op != _WR_INP else it.vp)
                return it, boundary
            if f.rep is not None and f.it + 1 < f.n:
                f.it += 1
                k = len(f.rep.bodies)
                f.seq, f.pos = f.rep.bodies[f.it % k], 0
                j = f.it // k
                f.set_off = f.set0 + j * f.rep.set_stride
                f.vp_off = f.vp0 + j * f.rep.vp_stride
                boundary = boundary or f
                continue
            st.pop()
        return None, None

    # --- one run --------------------------------------------------------------------------
    def run(self, items, max_cycles: int = 10 ** 12) -> SimResult:
        sp = self.sp
        C, B, S, F, Q = sp.n_ch, sp.n_banks, sp.n_sets, sp.fifo_depth, sp.q_depth
        chans = self._chans = [_Chan(sp) for _ in range(C)]
        dcs, dram = sp.dcs, self.dram
        self._stack = [_Frame(tuple(items), None, 0, 0)]
        stats = self._stats = [0] * (len(STATS) + C)     # + busy cycles per channel
        nst = len(STATS)
        fifo = self._fifo = deque()
        pt = {}
        tok = {}
        mode = _NONE
        lbuf, lp = [], None                     # loop buffer, loop params
        mod_out = 0
        t = 0
        self._tskip = 0
        skipped = []
        sim_cycles = 0
        nxt, bnd = self._fetch()
        resolvable = True                       # extrapolation needs resolved leaves
        mac_busy = self.mac_busy
        d = sp.dram
        allmask = (1 << C) - 1
        ports = sp.out_ports
        livec = set()                           # channels with a queued command or a held beat
        while True:
            # ---------------- start of cycle t
            flen, mode_t = len(fifo), mode
            if nxt is None and not flen and mode == _NONE and not mod_out \
                    and all(not ch.ioq and not ch.cq and not ch.out_valid and t >= ch.last_dv
                            for ch in chans):
                break                           # idle: every command done, every beat out
            if nxt is not None and bnd is not None and flen < F:
                # about to push the first command of an iteration of bnd's Rep
                if self.extrapolate and resolvable and mode == _NONE and bnd.n >= self.min_rep:
                    self._boundary(bnd, t, mod_out, skipped)
                bnd = None
            # dispatch decision
            action = None
            h = None
            if mode == _CAPTURE:
                if fifo:
                    action = "cap"
            else:
                if mode == _REPLAY:
                    h = lbuf[lp["idx"]]
                elif fifo:
                    h = fifo[0]
                if h is not None:
                    op = h.op
                    if op == _BARRIER:
                        if all((not ch.ioq and not ch.cq and t >= ch.last_dv) for ch in chans):
                            action = "exec"
                    elif op in CH_OPS:
                        if op == _WR_INP:
                            bank = set_ = 0
                        elif mode == _REPLAY or h.bank < 0:
                            vp = h.vp + (lp["vp_off"] if mode == _REPLAY else 0)
                            if vp not in pt:
                                raise ValueError(f"simulate: {HostOp(op).name} of unmapped "
                                                 f"vp={vp}")
                            bank, set_ = divmod(pt[vp], S)
                        else:
                            bank, set_ = h.bank, h.set
                        o = h.o + (lp["o_off"] if mode == _REPLAY else 0)
                        cm = h.chmask
                        if cm == 0 or cm > allmask:
                            raise ValueError(f"simulate: chmask={cm:#x} for {C} channels")
                        ok = True
                        for c in range(C):
                            if cm >> c & 1:
                                ch = chans[c]
                                q = ch.cq if op == _MAC else ch.ioq
                                if len(q) >= Q or ch.ring[ch.n % ch.W].t > t:
                                    ok = False
                                    break
                        if ok:
                            action = "exec"
                    else:
                        action = "exec"
            # output merge: the lowest out_ports channels holding a beat are drained (the host
            # is always ready, so the hub's output register drains every cycle)
            takes = 0
            ntake = 0
            live = sorted(livec) if len(livec) > 1 else list(livec)
            for c in live:
                if chans[c].out_valid:
                    takes |= 1 << c
                    ntake += 1
                    if ntake == ports:
                        break
            # channel issue decisions and edge effects
            active = action is not None or ntake or mod_out
            for c in live:
                ch = chans[c]
                rd_issue = False
                if ch.ioq:
                    e = ch.ioq[0]
                    ok = True
                    for dd in e[6]:
                        if dd.t > t:
                            ok = False
                            break
                    if ok and not dcs and (e[5].idx != ch.iss or t < ch.last_dv):
                        ok = False
                    eop = e[0]
                    if ok and eop == _RD_OUT and ch.out_valid and not takes >> c & 1:
                        ok = False
                    if ok and dram and t < ch.io_ready:
                        ok = False
                    if ok and dram and eop == _WR_W and t < ch.bank_ready[e[1]]:
                        ok = False
                    if ok:
                        ch.ioq.popleft()
                        active = True
                        if dram:
                            cost = self.io_cost[eop]
                            ch.io_ready = t + cost
                            if eop == _WR_W:
                                b = e[1]
                                ch.open_row[b] = None
                                done = t + d.RCDWR + cost + d.WR
                                ch.bank_ready[b] = done + d.RP
                                stats[_ACT] += 1
                            elif eop == _RD_OUT:
                                done = t + cost + d.CL
                            else:
                                done = t + cost
                        else:
                            done = t + 1
                        e[5].t = done
                        if done > ch.last_dv:
                            ch.last_dv = done
                        if eop == _RD_OUT:
                            rd_issue = True
                            stats[_NRD] += 1
                        elif eop == _WR_INP:
                            stats[_NWI] += 1
                        else:
                            stats[_NWW] += 1
                        ch.iss += 1
                if ch.cq:
                    e = ch.cq[0]
                    ok = True
                    for dd in e[6]:
                        if dd.t > t:
                            ok = False
                            break
                    b = e[1]
                    if ok and not dcs and (e[5].idx != ch.iss or t < ch.last_dv):
                        ok = False
                    if ok and t < ch.bank_ready[b]:
                        ok = False
                    if ok:
                        ch.cq.popleft()
                        active = True
                        if dram:
                            done = self._dram_mac(ch, b, e[2], t)
                        else:
                            ch.bank_ready[b] = t + mac_busy
                            done = t + self.mac_lat
                        e[5].t = done
                        if done > ch.last_dv:
                            ch.last_dv = done
                        stats[_BUSY] += mac_busy
                        stats[nst + c] += mac_busy
                        stats[_NMAC] += 1
                        ch.iss += 1
                if rd_issue:
                    ch.out_valid = 1
                elif takes >> c & 1:
                    ch.out_valid = 0
                if not ch.ioq and not ch.cq and not ch.out_valid:
                    livec.discard(c)            # nothing queued or held: skipped until enqueue
            # module output register (host always ready: a held beat leaves every cycle)
            stats[_BEATS] += mod_out
            mod_out = ntake
            # dispatch effects
            if action == "cap":
                lbuf.append(fifo.popleft())
                if len(lbuf) == lp["n"]:
                    if lp["trip"] == 0:
                        mode = _NONE
                    else:
                        mode = _REPLAY
                        lp.update(idx=0, iter=0, vp_off=0, o_off=0)
                stats[_HOST] += 1
            elif action == "exec":
                stats[_HOST] += 1
                op = h.op
                if op in CH_OPS:
                    cm = h.chmask
                    g = h.g
                    for c in range(C):
                        if cm >> c & 1:
                            self._enqueue(chans[c], op, bank, set_, g, o)
                            livec.add(c)
                elif op == _MAP:
                    pt[h.vp] = h.pp
                elif op == _UNMAP:
                    pt.pop(h.vp, None)
                elif op == _SET_TOK:
                    tok[h.rid] = h.count
                elif op == _LOOP:
                    if mode == _REPLAY:
                        raise ValueError("simulate: LOOP inside a loop body")
                    resolvable = False
                    trip = (tok.get(h.rid, 0) + (1 << h.per) - 1) >> h.per
                    lp = dict(n=h.n, trip=trip, vps=h.vps, os=h.os, idx=0, iter=0,
                              vp_off=0, o_off=0)
                    lbuf = []
                    mode = _CAPTURE
                if op in CH_OPS and op != _WR_INP and h.bank < 0:
                    resolvable = False
                if mode_t == _REPLAY:
                    lp["idx"] += 1
                    if lp["idx"] == lp["n"]:
                        lp["idx"] = 0
                        lp["iter"] += 1
                        lp["vp_off"] += lp["vps"]
                        lp["o_off"] += lp["os"]
                        if lp["iter"] == lp["trip"]:
                            mode = _NONE
                else:
                    fifo.popleft()
            # host push: decided on the FIFO length at t, appended after this cycle's pop
            if nxt is not None and flen < F:
                fifo.append(nxt)
                nxt, bnd = self._fetch()
                active = True
            t += 1
            sim_cycles += 1
            if not active:
                # nothing changed in cycle t-1: the state is the same until the next timer
                nt = self._next_event(t)
                if nt is None:
                    raise RuntimeError(f"simulate: deadlock at cycle {t} (no command can ever "
                                       "issue)")
                if nt > t:
                    t = nt
            if t > max_cycles:
                raise RuntimeError(f"simulate: more than max_cycles={max_cycles} cycles")
        t_end = t + self._tskip
        st = dict(zip(STATS, stats))
        st["busy_ch"] = stats[nst:]
        return SimResult(sp, t_end, t_end + 3 + TAIL, st, sim_cycles, skipped)

    # --- channel helpers ------------------------------------------------------------------
    def _enqueue(self, ch, op, b, s, g, o):
        """Push a command on channel ``ch`` (edge of its transfer), recording its dependencies
        on the last writer/reader of each resource (satisfied once their done is visible)."""
        tab = ch.tab
        cell = _Cell(INF, ch.n)
        if op == _WR_INP:
            deps = (tab.get((1, g)),)
            tab[(0, g)] = cell
            q = ch.ioq
        elif op == _WR_W:
            deps = (tab.get((3, b, s)),)
            tab[(2, b, s)] = cell
            q = ch.ioq
        elif op == _MAC:
            deps = (tab.get((0, g)), tab.get((2, b, s)), tab.get((5, b, o)))
            tab[(1, g)] = cell
            tab[(3, b, s)] = cell
            tab[(4, b, o)] = cell
            q = ch.cq
        else:
            deps = (tab.get((4, b, o)),)
            tab[(5, b, o)] = cell
            q = ch.ioq
        if op == _WR_INP or op == _RD_OUT:
            s = -1                      # no page set involved (kept out of the state key)
        q.append([op, b, s, g, o, cell, tuple(x for x in deps if x is not None)])
        ch.ring[ch.n % ch.W] = cell
        ch.n += 1

    def _dram_mac(self, ch, b, row, t):
        """Issue a MAC on DRAM bank ``b`` over ``row`` in cycle t: open the row if needed
        (PRE after tRAS/tRTP, ACT after tRP, tRRD and tFAW), then ncol column MACs tCCDL
        apart, starting tRCDRDMAC after the ACT.  Returns the cycle its done is visible."""
        d = self.sp.dram
        if ch.open_row[b] == row:
            first = max(t + 1, ch.last_col[b] + d.CCDL)
        else:
            ta = t + 1
            if ch.open_row[b] is not None:
                ta = max(t + 1, ch.t_act[b] + d.RAS, ch.last_col[b] + d.RTP) + d.RP
            if ch.acts:
                ta = max(ta, ch.acts[-1] + d.RRDS)
                if len(ch.acts) == 4:
                    ta = max(ta, ch.acts[0] + d.FAW)
            ch.acts.append(ta)
            ch.t_act[b] = ta
            ch.open_row[b] = row
            self._stats[_ACT] += 1
            first = ta + d.RCDRDMAC
        last = first + (self.ncol - 1) * d.CCDL
        ch.last_col[b] = last
        ch.bank_ready[b] = last
        return last + d.CCDL + 1

    def _next_event(self, t):
        """Earliest cycle >= t at which a blocked condition can change (None: never)."""
        best = INF
        dcs = self.sp.dcs
        for ch in self._chans:
            cand = []
            r = ch.ring[ch.n % ch.W].t
            if r > t - 1:
                cand.append(r)
            if ch.last_dv >= t:
                cand.append(ch.last_dv)
            for q, isio in ((ch.ioq, True), (ch.cq, False)):
                if not q:
                    continue
                e = q[0]
                lo = t
                for dd in e[6]:
                    if dd.t > lo:
                        lo = dd.t
                if not dcs:
                    lo = max(lo, ch.last_dv)
                if not isio:
                    lo = max(lo, ch.bank_ready[e[1]])
                elif self.dram:
                    lo = max(lo, ch.io_ready)
                    if e[0] == _WR_W:
                        lo = max(lo, ch.bank_ready[e[1]])
                cand.append(lo)
            for x in cand:
                if t <= x < best:
                    best = x
        return None if best >= INF else best

    # --- periodic steady state --------------------------------------------------------------
    def _key(self, f, t, mod_out):
        """Normalised state at an iteration boundary of frame ``f`` (see the module doc)."""
        so = f.set_off
        hz = self.horizon
        out = [mod_out, tuple((h.op, h.chmask, h.bank,
                               h.set - so if h.set >= 0 and h.op in _PAGE_OPS else -1,
                               h.g, h.o, h.acc) for h in self._fifo)]
        for ch in self._chans:
            n = ch.n

            def cell(x):
                return (x.idx - n, x.t - t if x.t < INF else -1)

            def ent(e):
                return (e[0], e[1], e[2] - so if e[2] >= 0 else -1, e[3], e[4], e[5].idx - n,
                        tuple(cell(x) for x in e[6] if x.t > t))
            tab = []
            dead = []
            for k, x in ch.tab.items():
                if x.t > t:
                    kk = (k[0], k[1], k[2] - so) if k[0] in (2, 3) else k
                    tab.append((kk, cell(x)))
                else:
                    dead.append(k)
            for k in dead:              # a finished command blocks nothing: forget it
                del ch.tab[k]
            tab.sort()
            out.append((
                tuple(ent(e) for e in ch.ioq), tuple(ent(e) for e in ch.cq),
                tuple(cell(x) for x in ch.ring if x.t > t),
                tuple(tab), tuple(max(0, x - t) for x in ch.bank_ready),
                max(0, ch.last_dv - t), ch.iss - n, ch.out_valid, max(0, ch.io_ready - t),
                tuple(None if r is None else r - so for r in ch.open_row),
                tuple(max(-hz, x - t) for x in ch.t_act),
                tuple(max(-hz, x - t) for x in ch.last_col),
                tuple(max(-hz, x - t) for x in ch.acts)))
        return (f.it % len(f.rep.bodies), tuple(out))

    def _boundary(self, f, t, mod_out, skipped):
        """At the start of iteration ``f.it`` of a Rep: record the state, or, if it repeats an
        earlier boundary's, add the remaining whole periods in closed form."""
        key = self._key(f, t, mod_out)
        now = t + self._tskip
        prev = f.snaps.get(key)
        if prev is None:
            f.snaps[key] = (f.it, now, list(self._stats))
            return
        i0, t0, s0 = prev
        per = f.it - i0
        m = (f.n - 1 - f.it) // per       # iteration f.it has begun (its first command fetched)
        if m <= 0:
            return
        dt = now - t0
        self._tskip += m * dt
        for j, v in enumerate(self._stats):
            self._stats[j] = v + m * (v - s0[j])
        f.n -= m * per
        f.snaps.clear()
        skipped.append((f.rep.label, m * per, m * dt))


def simulate(sp: SimParams, items, *, extrapolate: bool = True) -> SimResult:
    """Run a host program (items of perf/program.py, or host command words) on the timing
    model of module ``sp``; see :class:`SimResult`."""
    return PerfSim(sp, extrapolate=extrapolate).run(items)
