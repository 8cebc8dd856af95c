"""Golden model of the hub's softmax unit, written from docs/softmax.md (not from the HDL).

* :class:`SmArith` - the fixed-point arithmetic of the contract ("Arithmetic"): scale, exp
  (table + linear interpolation + shift), rescale, probability code.  ``table`` injects a
  (deliberately wrong) exp table.
* :func:`softmax_fixed` / :func:`softmax_trace` - the pure functional, bit-exact reference of
  one head: per partition the beat-wise online (m_j, l_j), the merge, the INT8 probabilities
  in global token order (vectorised numpy; no timing).
* :class:`SoftmaxModel` - the cycle-exact model (``reset`` / ``step`` / ``state``, a
  :class:`model.interface.GoldenModel`) and :meth:`SoftmaxModel.run`, a driver with random
  gaps and backpressure; :func:`score_beats` cuts a score row into the beats of a head.

The cycle model and the reference share only :class:`SmArith`; the control (beat counters,
addresses, merge, tile order) is written twice, so their equality tests it.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from model.interface import check_inputs
from model.numerics import pack_signed, unpack_signed
from spec.params import check_int, is_pow2, pack, unpack, width
from spec.softmax import (CHAN_BITS, SmErr, SmOp, SmState, SoftmaxParams, cmd_fields,
                          exp_table, in_fields, prob_fields, res_fields)

__all__ = ["SmArith", "softmax_fixed", "softmax_trace", "SoftmaxModel", "SmOut", "score_beats"]

SmOut = namedtuple("SmOut", "cmd_ready in_ready prob_valid prob_payload res_valid res_payload "
                            "err in_err err_count idle st")
SmOut.__doc__ = "Outputs of the softmax unit during one cycle (before the clock edge)."
_IDLE, _INGEST, _MERGE, _EMIT, _DONE = (int(s) for s in SmState)
_ERR_MAX = (1 << 16) - 1


class SmArith:
    """The unit's arithmetic for ``params`` (bit-exact, numpy int64 / Python ints).

    table : sequence of 2**TB + 1 ints, optional
        Fault injection: use this exp table instead of :func:`spec.softmax.exp_table`.
    """

    def __init__(self, params: SoftmaxParams, table=None):
        if not isinstance(params, SoftmaxParams):
            raise ValueError(f"SmArith: params={params!r} is not a SoftmaxParams")
        p = self.p = params
        ref = exp_table(p)
        if table is None:
            table = ref
        t = np.asarray(table)
        if t.shape != (len(ref),) or t.dtype.kind not in "iu" or t.min() < 0 \
                or t.max() >= 1 << (p.exp_bits + 1):
            raise ValueError(f"SmArith: table of shape {t.shape} dtype {t.dtype} must be "
                             f"{len(ref)} ints in 0..2**{p.exp_bits + 1}-1")
        self.table = t.astype(np.int64)
        self.R = p.frac_bits - p.table_bits          # interpolated low fraction bits
        self.xlo, self.xhi = -(1 << (p.x_bits - 1)), (1 << (p.x_bits - 1)) - 1

    def scale(self, s, mul: int, sh: int) -> tuple[np.ndarray, np.ndarray]:
        """x = sat_XW(floor((s * mul + floor(2**(sh-1))) / 2**sh)) and the clamped mask."""
        r = (np.asarray(s, dtype=np.int64) * mul + ((1 << sh) >> 1)) >> sh
        x = np.clip(r, self.xlo, self.xhi)
        return x, x != r

    def efrac(self, f) -> np.ndarray:
        """E(f) ~ 2**(EW - f / 2**FB) for FB-bit fractions f: T[i] minus the rounded linear
        interpolation towards T[i+1] on the low R bits."""
        f = np.asarray(f, dtype=np.int64)
        i, r = f >> self.R, f & ((1 << self.R) - 1)
        ti, tn = self.table[i], self.table[i + 1]
        return ti - (((ti - tn) * r + ((1 << self.R) >> 1)) >> self.R)

    def exp(self, d) -> np.ndarray:
        """e(d) = (E(f) + floor(2**(k-1))) >> k for d = k * 2**FB + f >= 0 (0 for k >= EW+2)."""
        d = np.asarray(d, dtype=np.int64)
        k = np.minimum(d >> self.p.frac_bits, self.p.exp_bits + 2)
        e = self.efrac(d & ((1 << self.p.frac_bits) - 1))
        return (e + ((np.int64(1) << k) >> 1)) >> k

    def rescale(self, l: int, d: int) -> int:
        """RS(l, d) = (l * E(f) + 2**(EW+k-1)) >> (EW + k) (Python ints, exact)."""
        FB, EW = self.p.frac_bits, self.p.exp_bits
        k, f = d >> FB, d & ((1 << FB) - 1)
        if k > self.p.l_bits + 1:
            return 0
        s = EW + k
        return (l * int(self.efrac(f)) + (1 << (s - 1))) >> s

    def prob(self, e) -> tuple[np.ndarray, np.ndarray]:
        """(hi, lo): y = e * QS; hi = (y + 2**(EW-1)) >> EW in 0..QS; the residual
        r = y - hi * 2**EW gives lo = (r * 128 + 2**(EW-1)) >> EW in -64..64."""
        EW = self.p.exp_bits
        y = np.asarray(e, dtype=np.int64) * self.p.prob_max
        hi = (y + (1 << (EW - 1))) >> EW
        return hi, (((y - (hi << EW)) << 7) + (1 << (EW - 1))) >> EW

    def update(self, seen: int, m: int, l: int, x: np.ndarray) -> tuple[int, int]:
        """Online update of one partition's (m, l) by one beat's valid scaled scores ``x``."""
        bm = int(x.max())
        m2 = bm if not seen else max(m, bm)
        base = self.rescale(l, m2 - m) if seen else 0
        return m2, base + int(self.exp(m2 - x).sum())


def _check_head(fn, p, scores, mul, sh, parts, digits=1) -> tuple[np.ndarray, int]:
    if not isinstance(p, SoftmaxParams):
        raise ValueError(f"{fn}: params={p!r} is not a SoftmaxParams")
    s = np.asarray(scores)
    if s.ndim != 1 or s.dtype.kind not in "iu" or not 1 <= s.size <= p.max_context:
        raise ValueError(f"{fn}: scores of shape {s.shape} dtype {s.dtype} must be 1-D "
                         f"integers, 1..max_context={p.max_context} of them")
    lo, hi = -(1 << (p.score_bits - 1)), (1 << (p.score_bits - 1)) - 1
    if s.min() < lo or s.max() > hi:
        i = int(np.argmax((s < lo) | (s > hi)))
        raise ValueError(f"{fn}: scores[{i}]={int(s[i])} outside signed {p.score_bits}-bit "
                         f"range")
    check_int(f"{fn}: mul", mul, 0, (1 << p.mul_bits) - 1)
    check_int(f"{fn}: sh", sh, 0, 63)
    parts = check_int(f"{fn}: parts", parts, 1, p.n_part)
    if not is_pow2(parts):
        raise ValueError(f"{fn}: parts={parts} must be a power of two")
    check_int(f"{fn}: digits", digits, 1, 2)
    return s.astype(np.int64), parts


def softmax_trace(scores, params: SoftmaxParams, mul: int, sh: int, parts: int = 1,
                  table=None, digits: int = 1) -> dict:
    """The unit's result for one head, without timing (docs/softmax.md, "Arithmetic").

    scores  int [T], the A-bit QK^T integers in global token order; token t belongs to
            partition t % parts (the TCP interleave), local index t // parts
    mul, sh the CFG scale;  parts  2**plog2;  table  fault injection (see :class:`SmArith`)
    digits  1 or 2 (CFG dig + 1)
    Returns dict(probs int64 [T] (0..QS), lo int64 [T] (-64..64), m, l, qsum, qlo (0 for
    one digit), sat, partials [(seen, m_j, l_j)], tiles [(part, idx, digit, q int64 [NI])]
    in emission order).  ValueError for bad arguments.
    """
    s, P = _check_head("softmax_trace", params, scores, mul, sh, parts, digits)
    p, ar = params, SmArith(params, table)
    T, NO, NI = s.size, p.n_lanes, p.tile
    x, clamped = ar.scale(s, mul, sh)
    partials = []
    for j in range(P):
        xj = x[j::P]
        seen, m, l = 0, 0, 0
        for b in range(0, xj.size, NO):
            m, l = ar.update(seen, m, l, xj[b:b + NO])
            seen = 1
        partials.append((seen, m, l))
    m = max(mj for sj, mj, _ in partials if sj)
    l = sum(ar.rescale(lj, m - mj) for sj, mj, lj in partials if sj)
    probs, lo = ar.prob(ar.exp(m - x))
    n0 = -(-T // P)
    tiles = []
    for tc in range(-(-n0 // NI)):
        for j in range(P):
            g = j + P * np.arange(tc * NI, (tc + 1) * NI)
            for dg, v in enumerate((probs, lo)[:digits]):
                tiles.append((j, tc, dg, np.where(g < T, v[np.minimum(g, T - 1)], 0)))
    return dict(probs=probs, lo=lo, m=m, l=l, qsum=int(probs.sum()),
                qlo=int(lo.sum()) if digits == 2 else 0, sat=int(clamped.any()),
                partials=partials, tiles=tiles)


def softmax_fixed(scores, params: SoftmaxParams, mul: int, sh: int, parts: int = 1,
                  table=None, digits: int = 1) -> tuple[np.ndarray, int, int]:
    """(probs_int8 [T], m, l) of :func:`softmax_trace`: probabilities q_t ~ QS * exp(z_t -
    max z) (0..QS), the max m (XW-bit, log2 units with FB fraction bits) and the sum l (EW
    fraction bits) ~ sum_t exp(z_t - max z)."""
    r = softmax_trace(scores, params, mul, sh, parts, table, digits)
    return r["probs"], r["m"], r["l"]


def score_beats(scores, params: SoftmaxParams, parts: int = 1, chan0: int = 0,
                order=None) -> list[int]:
    """The ``in`` beats (in_fields payloads) of a head: partition j's local tokens in beats
    of NO lanes (padding lanes 0), chan = chan0 + j.  ``order``: None = partition by
    partition; a numpy Generator = a random interleave that keeps each partition's order."""
    s, P = _check_head("score_beats", params, scores, 0, 0, parts)
    check_int("score_beats: chan0", chan0, 0, (1 << CHAN_BITS) - P)
    p, NO = params, params.n_lanes
    off = in_fields(p)["chan"].offset
    per = []
    for j in range(P):
        xj = s[j::P]
        nb = -(-xj.size // NO)
        pad = np.zeros(nb * NO, dtype=np.int64)
        pad[:xj.size] = xj
        per.append([pack_signed(pad[b * NO:(b + 1) * NO], p.score_bits) | (chan0 + j) << off
                    for b in range(nb)])
    if order is None:
        return [w for lst in per for w in lst]
    if not isinstance(order, np.random.Generator):
        raise ValueError(f"score_beats: order={order!r} must be None or a numpy Generator")
    tags = np.concatenate([np.full(len(lst), j) for j, lst in enumerate(per)])
    order.shuffle(tags)
    pos = [0] * P
    out = []
    for j in tags:
        out.append(per[j][pos[j]])
        pos[j] += 1
    return out


class SoftmaxModel:
    """Cycle-exact model of the softmax unit (ports and behaviour as in docs/softmax.md).

    ``inputs``: names and widths (bits) of :meth:`step`'s arguments.  ``table`` injects a
    wrong exp table (see :class:`SmArith`).
    """

    def __init__(self, params: SoftmaxParams, table=None):
        self.ar = SmArith(params, table)
        p = self.params = params
        self._cf = {n: (f.offset, (1 << f.width) - 1) for n, f in cmd_fields(p).items()}
        self._chan_off = in_fields(p)["chan"].offset
        self._pf, self._rf = prob_fields(p), res_fields(p)
        self.inputs = (("cmd_valid", 1), ("cmd_payload", width(cmd_fields(p))),
                       ("in_valid", 1), ("in_payload", width(in_fields(p))),
                       ("prob_ready", 1), ("res_ready", 1))
        self.reset(power_up=True)

    # --- state ----------------------------------------------------------------------------
    def reset(self, power_up: bool = False) -> None:
        """``rst``: every register; the score buffer is kept unless ``power_up``."""
        p = self.params
        if power_up or not hasattr(self, "_buf"):
            self._buf = np.zeros(p.max_context, dtype=np.int64)
        self.cycle = 0
        self._st = _IDLE
        self._cfg = dict(mul=0, sh=0, plog2=0, chan0=0, count=0, dig=0)
        n = p.n_part
        self._seen, self._m, self._l, self._nb = [0] * n, [0] * n, [0] * n, [0] * n
        self._mg = self._lg = self._k = self._qsum = self._qlo = self._sat = 0
        self._prob_valid = self._prob_payload = self._res_valid = self._res_payload = 0
        self._err = self._in_err = self._err_count = 0

    def state(self) -> dict:
        """Snapshot of all architectural state (copies); ``buf`` is the score buffer
        (flat, N scaled scores: partition j's local token t at j * N / P + t); signed
        registers (m, mg, qlo, buf) as signed ints, payloads as unsigned words."""
        return {"cycle": self.cycle, "st": self._st, "cfg": dict(self._cfg),
                "seen": list(self._seen), "m": list(self._m), "l": list(self._l),
                "nb": list(self._nb), "mg": self._mg, "lg": self._lg, "k": self._k,
                "qsum": self._qsum, "qlo": self._qlo, "sat": self._sat,
                "prob_valid": self._prob_valid, "prob_payload": self._prob_payload,
                "res_valid": self._res_valid, "res_payload": self._res_payload,
                "err": self._err, "in_err": self._in_err, "err_count": self._err_count,
                "buf": self._buf.copy()}

    # --- derived from the CFG registers -------------------------------------------------
    def _sizes(self) -> tuple[int, list[int], list[int], int]:
        """P, n_j, beats_j, K (tiles, both digits) of the configured head."""
        c, p = self._cfg, self.params
        P, T = 1 << c["plog2"], c["count"]
        n = [-(-(T - j) // P) if T > j else 0 for j in range(P)]
        return (P, n, [-(-v // p.n_lanes) for v in n],
                (P * -(-n[0] // p.tile)) << c["dig"])

    def _code(self, payload: int) -> tuple[int, int]:
        """(op, rejection code) of a command payload (pure)."""
        f = {k: (payload >> o) & m for k, (o, m) in self._cf.items()}
        op = f["op"]
        if op > int(SmOp.ABORT):
            return op, int(SmErr.BAD_OP)
        if op == int(SmOp.CFG):
            P = 1 << f["plog2"]
            if P > self.params.n_part or f["chan0"] + P > 1 << CHAN_BITS or f["count"] == 0:
                return op, int(SmErr.BAD_CFG)
            if f["count"] > self.params.max_context:
                return op, int(SmErr.TOO_LONG)
        return op, 0

    def peek_cmd_ready(self, payload: int) -> int:
        """``cmd.ready`` of the current cycle for ``payload`` (pure; independent of valid)."""
        op, code = self._code(check_inputs(self.inputs[1:2], (payload,))[0])
        return int(bool(code) or op == int(SmOp.ABORT) or self._st == _IDLE)

    def peek_in_ready(self) -> int:
        return int(self._st == _INGEST)

    @property
    def idle(self) -> int:
        return int(self._st == _IDLE and not self._prob_valid and not self._res_valid)

    # --- one cycle ------------------------------------------------------------------------
    def step(self, cmd_valid, cmd_payload, in_valid, in_payload, prob_ready, res_ready) -> SmOut:
        """Outputs of this cycle for these inputs, then the clock edge ending the cycle.
        Every input is an unsigned int of its width (``inputs``); else a ValueError naming
        it, raised before any register changes."""
        cmd_valid, cmd_payload, in_valid, in_payload, prob_ready, res_ready = check_inputs(
            self.inputs, (cmd_valid, cmd_payload, in_valid, in_payload, prob_ready, res_ready))
        p, ar, st = self.params, self.ar, self._st
        op, code = self._code(cmd_payload)
        cmd_ready = int(bool(code) or op == int(SmOp.ABORT) or st == _IDLE)
        in_ready = int(st == _INGEST)
        out = SmOut(cmd_ready, in_ready, self._prob_valid, self._prob_payload, self._res_valid,
                    self._res_payload, self._err, self._in_err, self._err_count, self.idle, st)
        # ---- clock edge
        P, n, beats, K = self._sizes()
        c = self._cfg
        nxt = st
        in_code = 0
        if in_valid and in_ready:
            j = (in_payload >> self._chan_off) - c["chan0"]
            if not 0 <= j < P:
                in_code = int(SmErr.BAD_PART)
            elif self._nb[j] == beats[j]:
                in_code = int(SmErr.EXTRA_BEAT)
            else:
                self._beat(j, in_payload, n[j], c)
                if all(self._nb[i] == beats[i] for i in range(P)):
                    nxt = _MERGE
        prob_next = 0 if prob_ready else self._prob_valid
        res_next = 0 if res_ready else self._res_valid
        if st == _MERGE:
            seen = [i for i in range(P) if self._seen[i]]
            self._mg = max(self._m[i] for i in seen)
            self._lg = sum(ar.rescale(self._l[i], self._mg - self._m[i]) for i in seen)
            self._k = 0
            nxt = _EMIT
        elif st == _EMIT and (not self._prob_valid or prob_ready):
            kt, dg = self._k >> c["dig"], self._k & c["dig"]
            q = self._tile(P, n, kt, dg)
            tc, j, last = kt >> c["plog2"], kt & (P - 1), int(self._k == K - 1)
            self._prob_payload = pack(self._pf, q=pack_signed(q, 8), part=j, idx=tc,
                                      digit=dg, last=last)
            prob_next = 1
            if dg:
                self._qlo += int(q.sum())
            else:
                self._qsum += int(q.sum())
            self._k += 1
            if last:
                nxt = _DONE
                res_next = 1
                self._res_payload = pack(self._rf, m=self._mg & ((1 << p.x_bits) - 1),
                                         l=self._lg, qsum=self._qsum,
                                         qlo=self._qlo & ((1 << p.qlo_bits) - 1), sat=self._sat)
        elif st == _DONE and self._res_valid and res_ready:
            nxt = _IDLE
        if cmd_valid and cmd_ready and not code:
            if op == int(SmOp.ABORT):
                nxt, prob_next, res_next = _IDLE, 0, 0
            else:                                                # CFG (only in IDLE)
                self._cfg = {k: (cmd_payload >> o) & m for k, (o, m) in self._cf.items()
                             if k != "op"}
                z = [0] * p.n_part
                self._seen, self._m, self._l, self._nb = list(z), list(z), list(z), list(z)
                self._qsum = self._qlo = self._sat = self._k = 0
                nxt = _INGEST
        rej = int(bool(cmd_valid and cmd_ready and code))
        self._err = code if rej else 0
        self._in_err = in_code
        self._err_count = min(_ERR_MAX, self._err_count + rej + int(in_code != 0))
        self._prob_valid, self._res_valid, self._st = prob_next, res_next, nxt
        self.cycle += 1
        return out

    def _beat(self, j: int, payload: int, nj: int, c: dict) -> None:
        """Write one good beat of partition j into the buffer and update (m_j, l_j)."""
        p, ar = self.params, self.ar
        NO, b = p.n_lanes, self._nb[j]
        x, clamped = ar.scale(unpack_signed(payload, NO, p.score_bits), c["mul"], c["sh"])
        base = j * (p.max_context >> c["plog2"]) + b * NO
        self._buf[base:base + NO] = x
        nv = min(NO, nj - b * NO)
        self._m[j], self._l[j] = ar.update(self._seen[j], self._m[j], self._l[j], x[:nv])
        self._seen[j] = 1
        self._sat |= int(clamped[:nv].any())
        self._nb[j] = b + 1

    def _tile(self, P: int, n: list[int], kt: int, digit: int) -> np.ndarray:
        """The codes (``digit``) of tile kt (tc = kt >> plog2, partition kt % P)."""
        p, NI = self.params, self.params.tile
        tc, j = kt >> self._cfg["plog2"], kt & (P - 1)
        a, b = tc * NI, min((tc + 1) * NI, n[j])
        q = np.zeros(NI, dtype=np.int64)
        if b > a:
            base = j * (p.max_context >> self._cfg["plog2"])
            e = self.ar.exp(self._mg - self._buf[base + a:base + b])
            q[:b - a] = self.ar.prob(e)[digit]
        return q

    # --- driver ----------------------------------------------------------------------------
    def run(self, cmds: list[int], beats: list[int], rng=None, p_valid: float = 1.0,
            p_ready: float = 1.0, limit: int = 1 << 22) -> dict:
        """Offer ``cmds`` (in order) and ``beats`` (in order) as fast as the unit takes them,
        each valid with probability ``p_valid`` and ``prob``/``res`` ready with probability
        ``p_ready`` per cycle (``rng``: numpy Generator; needed if either is < 1); run until
        everything was offered and the unit is idle.  Returns dict(tiles [(part, idx, digit,
        last, q int64[NI])], res [dict(m, l, qsum, qlo, sat)] (m, qlo signed), errs
        [(cycle, code)], in_errs, cycles, outs (every cycle's SmOut))."""
        p = self.params
        if (p_valid < 1 or p_ready < 1) and not isinstance(rng, np.random.Generator):
            raise ValueError(f"run: rng={rng!r} must be a numpy Generator when p_valid or "
                             "p_ready < 1")
        draw = (lambda pr: 1 if pr >= 1 else int(rng.random() < pr))   # noqa: E731
        pf, rf = self._pf, self._rf
        ci = bi = 0
        r = dict(tiles=[], res=[], errs=[], in_errs=[], outs=[])
        for _ in range(limit):
            cv = int(ci < len(cmds)) and draw(p_valid)
            iv = int(bi < len(beats)) and draw(p_valid)
            pr, rr = draw(p_ready), draw(p_ready)
            cyc = self.cycle
            o = self.step(cv, cmds[ci] if ci < len(cmds) else 0, iv,
                          beats[bi] if bi < len(beats) else 0, pr, rr)
            r["outs"].append(o)
            ci += cv and o.cmd_ready
            bi += iv and o.in_ready
            if o.prob_valid and pr:
                f = unpack(pf, o.prob_payload)
                r["tiles"].append((f["part"], f["idx"], f["digit"], f["last"],
                                   unpack_signed(f["q"], p.tile, 8)))
            if o.res_valid and rr:
                f = unpack(rf, o.res_payload)
                f["m"] -= (f["m"] >> (p.x_bits - 1)) << p.x_bits
                f["qlo"] -= (f["qlo"] >> (p.qlo_bits - 1)) << p.qlo_bits
                r["res"].append(f)
            if o.err:
                r["errs"].append((cyc, o.err))
            if o.in_err:
                r["in_errs"].append((cyc, o.in_err))
            if ci == len(cmds) and bi == len(beats) and o.idle and self.idle and \
                    not (cv or iv):
                r["cycles"] = self.cycle
                return r
        raise RuntimeError(f"SoftmaxModel.run: not idle after {limit} cycles")
