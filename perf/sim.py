"""Performance model: a transaction-level, timing-only simulator of a PIM module.

It executes the same host programs as the RTL and the golden model (``perf/program.py``: host
commands, compressed with :class:`~perf.program.Rep`), under the timing rules of
docs/module.md and docs/channel.md, but without data: a command is a transaction with an
enqueue, an issue and a completion cycle; a bank is its timing (DIMC: accept one MAC per X
cycles, result after X+P+1; DRAM: row activation, tCCD column stream, tRRD/tFAW, the channel's
column bus: perf/chan.py), not its bits.  MAC_AB drives every bank of a channel at once.
The host pushes the next command whenever the FIFO has room (exactly :func:`compiler.host.pace`,
or a module with ``host_ready``), except after a :data:`perf.program.WAIT` (it then waits for
every result it asked for), and is always ready for results.  On every configuration the RTL
can run, its cycle counts equal the golden model's (tests/perf/test_perfsim.py), which equal
the RTL's (lockstep).

Speed: a cycle in which nothing can change is skipped to the next timer.  A ``Rep`` is
simulated iteration by iteration until its normalised state at an iteration boundary repeats;
the remaining whole periods are then added in closed form (perf/steady.py), which is exact.
Parameters (:class:`SimParams`, :class:`DramTiming`) are perf/params.py's; channel state
perf/chan.py's; the result perf/result.py's.
"""
from __future__ import annotations

from collections import deque

from model.stimulus import TAIL
from perf.chan import INF, Chan, dram_mac, dram_mac_ab, dram_refresh, dram_wr_w, enqueue
from perf.params import GDDR6_AIM, DramTiming, SimParams
from perf.program import CH_OPS, WAIT, Rep, check_items, shifted
from perf.program import MAC_AB as _MAC_AB
from perf.result import STATS, SimResult
from perf.steady import boundary
from spec.isa import HostOp, LoopMode

__all__ = ["SimParams", "DramTiming", "GDDR6_AIM", "PerfSim", "SimResult", "simulate", "STATS"]

_WR_INP, _WR_W, _MAC, _RD_OUT = (int(HostOp.WR_INP), int(HostOp.WR_W), int(HostOp.MAC),
                                 int(HostOp.RD_OUT))
_MAP, _UNMAP, _SET_TOK, _LOOP, _BARRIER = (int(HostOp.MAP), int(HostOp.UNMAP),
                                           int(HostOp.SET_TOK), int(HostOp.LOOP),
                                           int(HostOp.BARRIER))
# the LOOP engine's modes as plain ints (compared every simulated cycle)
_NONE, _CAPTURE, _REPLAY = int(LoopMode.NONE), int(LoopMode.CAPTURE), int(LoopMode.REPLAY)
(_BUSY, _NMAC, _NWI, _NWW, _NRD, _BEATS, _ACT, _HOST, _NAB, _ACT16,
 _WAITS) = range(len(STATS))


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
    ACT, ACT16 = _ACT, _ACT16   # indices of the activation counters (perf/chan.py)

    def __init__(self, sp: SimParams, *, extrapolate: bool = True, min_rep: int = 4):
        if not isinstance(sp, SimParams):
            raise ValueError(f"PerfSim: params={sp!r} is not a SimParams")
        self.sp = sp
        # the exact refresh rule is not periodic in a Rep's period: simulated in full
        self.refresh = sp.backend == "dram" and sp.refresh == "exact"
        self.extrapolate = extrapolate and not self.refresh
        self.min_rep = min_rep
        d = sp.dram
        self.dram = sp.backend == "dram"
        X, P = sp.x_bits, sp.tree_stages
        if self.dram:
            def bursts(n_bytes):            # column accesses of n_bytes (at least one)
                return max(1, -(-n_bytes // d.burst_bytes))
            self.ncol = bursts(sp.page_bytes)
            self.mac_busy = self.ncol * d.CCDL
            # docs/dram_channel.md: nI = ceil(n_in / U) tCCDS, nW = tCCDS per burst (a WR_W
            # writes n_out x w_bits: one burst when that fits in U), nR = ceil(2 O / U) tCCDS
            self.wr_bursts = bursts(sp.n_out * sp.w_bits // 8)
            self.io_cost = {_WR_INP: bursts(sp.n_in * sp.x_bits // 8) * d.CCDS,
                            _WR_W: self.wr_bursts * d.CCDS,
                            _RD_OUT: bursts(sp.n_out * 2) * d.CCDS}
        else:
            self.mac_busy = X
            self.mac_lat = X + P + 2          # issue -> done visible
        self._rep_masks = {}
        self.horizon = max(d.RAS, d.RTP, d.FAW, d.RRDS, d.CCDL, d.RC, d.RP) + 1

    # --- program walker -------------------------------------------------------------------
    def _fetch(self):
        """Next leaf (with strides applied) and the frame whose iteration it starts (or None)."""
        st = self._stack
        bnd = None
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
                    bnd = bnd or nf
                    continue
                return shifted(it, f.set_off, f.vp_off), bnd
            if f.rep is not None and f.it + 1 < f.n:
                f.it += 1
                k = len(f.rep.bodies)
                f.seq, f.pos = f.rep.bodies[f.it % k], 0
                j = f.it // k
                f.set_off = f.set0 + j * f.rep.set_stride
                f.vp_off = f.vp0 + j * f.rep.vp_stride
                bnd = bnd or f
                continue
            st.pop()
        return None, None

    def _resolve(self, h, op, pt, lp, mode):
        """(bank, set, o) of channel command ``h`` (bank -1: MAC_AB, every bank)."""
        S, B = self.sp.n_sets, self.sp.n_banks
        o = h.o + (lp["o_off"] if mode == _REPLAY else 0)
        if op == _WR_INP:
            return 0, 0, o
        if mode == _REPLAY or h.bank < 0:
            vp = h.vp + (lp["vp_off"] if mode == _REPLAY else 0)
            if vp not in pt:
                raise ValueError(f"simulate: {HostOp(op).name if op < 10 else 'MAC_AB'} of "
                                 f"unmapped vp={vp}")
            bank, set_ = divmod(pt[vp], S)
            if op == _MAC_AB and (bank != 0 or any(pt.get(vp + b) != b * S + set_
                                                   for b in range(1, B))):
                raise ValueError(f"simulate: MAC_AB vp={vp}: pages vp..vp+{B - 1} are not one "
                                 "set of banks 0..n_banks-1 (NOT_STRIPE)")
        else:
            bank, set_ = h.bank, h.set
        return (-1 if op == _MAC_AB else bank), set_, o

    # --- one run --------------------------------------------------------------------------
    def run(self, items, max_cycles: int = 10 ** 12) -> SimResult:
        """Simulate ``items`` (HCmds and Reps, :mod:`perf.program`); ValueError naming a
        bad item."""
        items = check_items("simulate", items)
        sp = self.sp
        C, B, F, Q = sp.n_ch, sp.n_banks, sp.fifo_depth, sp.q_depth
        chans = self._chans = [Chan(sp) for _ in range(C)]
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
        self._owed = 0                          # result beats pushed and not yet delivered
        t = 0
        self._tskip = 0
        skipped = []
        sim_cycles = 0
        nxt, bnd = self._fetch()
        resolvable = True                       # extrapolation needs resolved leaves
        mac_busy = self.mac_busy
        d = sp.dram
        io_cost = self.io_cost if dram else None
        refresh = self.refresh
        self.next_ref = d.REFI if refresh else INF   # next refresh request T_k (module-wide)
        allmask = (1 << C) - 1
        ports = sp.out_ports
        livec = set()                           # channels with a queued command or a held beat
        while True:
            # ---------------- start of cycle t
            while nxt is not None and nxt.op == WAIT and not self._owed:
                stats[_WAITS] += 1              # every result is back: pass the WAIT
                nxt, b2 = self._fetch()
                bnd = bnd or b2
            flen, mode_t = len(fifo), mode
            if nxt is None and not flen and mode == _NONE and not mod_out \
                    and all(not ch.ioq and not ch.cq and not ch.out_valid and t >= ch.last_dv
                            for ch in chans):
                break                           # idle: every command done, every beat out
            pushing = nxt is not None and nxt.op != WAIT and flen < F
            if pushing and bnd is not None:
                # about to push the first command of an iteration of bnd's Rep
                # (a period is a whole number of body cycles: only phase-0 boundaries are
                # compared, and only while a whole body cycle remains to be skipped)
                k = len(bnd.rep.bodies)
                if self.extrapolate and resolvable and mode == _NONE and bnd.n >= self.min_rep \
                        and bnd.it % k == 0 and bnd.n - bnd.it > k:
                    boundary(self, bnd, t, mod_out, skipped)
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
                        if op == _MAC_AB and not sp.all_bank:
                            raise ValueError("simulate: MAC_AB on a module without all_bank "
                                             "(the hardware rejects it: BAD_OPCODE)")
                        bank, set_, o = self._resolve(h, op, pt, lp, mode)
                        cm = h.chmask
                        if cm == 0 or cm > allmask:
                            raise ValueError(f"simulate: chmask={cm:#x} for {C} channels")
                        if h.multi and (op != _WR_INP or cm.bit_count() > sp.wide_inp):
                            # a multicast beat: one dispatcher cycle, a tile per masked
                            # channel (each channel's I/O queue gets its own WR_INP below)
                            name = HostOp(op).name if op < 10 else "MAC_AB"
                            raise ValueError(f"simulate: multi=1 {name} chmask={cm:#x} on a "
                                             f"module with wide_inp="
                                             f"{sp.wide_inp} (BAD_FIELD: a multicast WR_INP "
                                             "carries at most wide_inp tiles)")
                        ok = True
                        for c in range(C):
                            if cm >> c & 1:
                                ch = chans[c]
                                q = ch.cq if op == _MAC or op == _MAC_AB else ch.ioq
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
            # DRAM refresh ("exact"): requests up to t are applied before any issue in t
            while t >= self.next_ref:
                for ch in chans:
                    dram_refresh(ch, d, self.next_ref)
                self.next_ref += d.REFI
            nref = self.next_ref                # Tnext(t): no ACT at or after it issues now
            # channel issue decisions and edge effects
            active = action is not None or ntake or mod_out
            for c in live:
                ch = chans[c]
                rd_issue = False
                wr_issue = False                # DRAM: no MAC issues in a WR_W's cycle
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
                    if ok and dram:
                        if t < ch.io_ready:
                            ok = False
                        elif eop == _WR_W:
                            ok = t >= ch.bank_ready[e[1]] and t >= ch.gate_open
                            if ok:                  # schedules it, unless the look-ahead
                                wdone = dram_wr_w(self, ch, e[1], t, self.wr_bursts, nref)
                                ok = wdone is not None
                        elif eop == _RD_OUT:        # a gap of the column bus
                            ok = t >= ch.col_hi or (t >= ch.col_prev and t + io_cost[eop]
                                                    <= ch.col_lo)
                    if ok:
                        ch.ioq.popleft()
                        active = True
                        if dram:
                            cost = io_cost[eop]
                            ch.io_ready = t + cost
                            if eop == _WR_W:
                                done = wdone            # scheduled above (dram_wr_w)
                                wr_issue = True
                            elif eop == _RD_OUT:
                                ch.rd_end = t + cost
                                done = t + cost + d.CLREG
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
                    if ok and t < (ch.bank_ready[b] if b >= 0 else ch.rmax):
                        ok = False
                    if ok and dram:
                        if wr_issue or t < ch.gate_open:
                            ok = False
                        else:                       # schedules it, unless the look-ahead
                            done = (dram_mac(self, ch, b, e[2], t, nref) if b >= 0
                                    else dram_mac_ab(self, ch, e[2], t, nref))
                            ok = done is not None
                    if ok:
                        ch.cq.popleft()
                        active = True
                        if b >= 0:
                            if not dram:
                                ch.bank_ready[b] = t + mac_busy
                                ch.rmax = max(ch.rmax, t + mac_busy)
                                done = t + self.mac_lat
                            stats[_BUSY] += mac_busy
                            stats[nst + c] += mac_busy
                            stats[_NMAC] += 1
                        else:
                            if not dram:
                                ch.bank_ready = [t + mac_busy] * B
                                ch.rmax = t + mac_busy
                                done = t + self.mac_lat
                            stats[_BUSY] += mac_busy * B
                            stats[nst + c] += mac_busy * B
                            stats[_NMAC] += B
                            stats[_NAB] += 1
                        e[5].t = done
                        if done > ch.last_dv:
                            ch.last_dv = done
                        ch.iss += 1
                if rd_issue:
                    ch.out_valid = 1
                elif takes >> c & 1:
                    ch.out_valid = 0
                if not ch.ioq and not ch.cq and not ch.out_valid:
                    livec.discard(c)            # nothing queued or held: skipped until enqueue
            # module output register (host always ready: a held beat leaves every cycle)
            stats[_BEATS] += mod_out
            if mod_out and self._owed:
                self._owed = max(0, self._owed - mod_out)
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
                            enqueue(chans[c], op, bank, set_, g, o, t, B)
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
            if pushing:
                fifo.append(nxt)
                if nxt.op == _RD_OUT:
                    self._owed += nxt.chmask.bit_count()
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
        st = dict(zip(STATS, stats[:nst], strict=True))
        st["busy_ch"] = stats[nst:]
        return SimResult(sp, t_end, t_end + 3 + TAIL, st, sim_cycles, skipped)

    # --- timers ---------------------------------------------------------------------------
    def _next_event(self, t):
        """Earliest cycle >= t at which a blocked condition can change (None: never)."""
        best = INF
        dcs, dram = self.sp.dcs, self.dram
        rd_cost = self.io_cost[_RD_OUT] if dram else 0
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
                    lo = max(lo, ch.bank_ready[e[1]] if e[1] >= 0 else ch.rmax)
                    if dram:            # refresh gate (0 unless refresh "exact"); a head
                        lo = max(lo, ch.gate_open)  # held by the look-ahead steps to T_k
                elif dram:
                    lo = max(lo, ch.io_ready)
                    if e[0] == _WR_W:
                        lo = max(lo, ch.bank_ready[e[1]], ch.gate_open)
                    elif e[0] == _RD_OUT and lo < ch.col_hi and not (
                            lo >= ch.col_prev and lo + rd_cost <= ch.col_lo):
                        lo = ch.col_prev if lo < ch.col_prev and ch.col_prev + rd_cost \
                            <= ch.col_lo else ch.col_hi
                cand.append(lo)
            for x in cand:
                if t <= x < best:
                    best = x
        return None if best >= INF else best


def simulate(sp: SimParams, items, *, extrapolate: bool = True) -> SimResult:
    """Run a host program (HCmds and Reps of perf/program.py; host command words decoded
    with :func:`perf.program.from_host_words`) on the timing model of module ``sp``; see
    :class:`SimResult`."""
    return PerfSim(sp, extrapolate=extrapolate).run(items)
