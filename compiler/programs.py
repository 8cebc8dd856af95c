"""Program builders: command lists for one PIM channel (docs/channel.md, spec/isa.py).

A :class:`Program` holds ``cmds`` = [(payload, gap)] (the input of
:meth:`model.channel.ChannelModel.run` and of the channel testbenches), the exact ``expected``
integers and ``decode(out_payloads)``, which maps the RD_OUT beats (in program order, which is
the order they leave the channel: the I/O queue is in order) back to the result array.

Weights are stationary: every weight tile has its own (bank, set) for the whole program; a
program that needs more than ``n_banks x n_sets`` tiles (n_in x n_out weights each) raises
ValueError.  Like a compiler, a builder loads the tiles of set slot 0 first, then interleaves
the loads of slot s+1 with the compute of slot s, so that a DCS controller can overlap them;
RD_OUTs are emitted one group late, so an RD_OUT waiting for its MAC does not block the I/O
queue head while the next inputs could already be written.

``all_bank=True`` (on a channel with ``ChannelParams.all_bank``) replaces the per-bank MACs of
a group, which share one weight set and one GBuf entry, by one all-bank MAC (AiM's MAC_ABK,
CENT's mapping: output rows spread over the banks, one all-bank MAC per input tile): with
``dcs=False`` this is the CENT-class in-order baseline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from spec.isa import ChannelParams, Op, encode, out_fields
from spec.dram import to_bursts
from spec.params import check_int, pack_vec, unpack_vec

__all__ = ["Program", "gemv_program", "qk_stream_program", "decode_out"]


@dataclass
class Program:
    params: ChannelParams
    cmds: list                       # [(payload, gap)]
    expected: np.ndarray             # int64
    decode: Callable = field(repr=False)
    note: str = ""
    n_mac: int = 0
    n_wr_w: int = 0
    n_wr_inp: int = 0
    n_rd_out: int = 0

    @property
    def payloads(self) -> list[int]:
        return [c for c, _ in self.cmds]


def decode_out(p: ChannelParams, word: int) -> tuple[int, int, list[int]]:
    """(bank, o, y[n_out] signed) of one out beat."""
    f, m = out_fields(p), p.macro
    y = unpack_vec(word, m.n_out, m.acc_width)
    return (word >> f["bank"].offset) & ((1 << f["bank"].width) - 1), \
        (word >> f["o"].offset) & ((1 << f["o"].width) - 1), y


class _Builder:
    """Collects commands; weight loads of the next slot are interleaved with compute."""

    def __init__(self, p: ChannelParams, gap: int):
        self.p, self.gap, self.cmds = p, gap, []
        self.counts = {op: 0 for op in Op}
        self.reads = []      # (bank, o) of each RD_OUT in program order

    def emit(self, op: Op, **f):
        self.cmds.append((encode(self.p, op, **f), self.gap))
        self.counts[op] += 1
        if op == Op.RD_OUT:
            self.reads.append((f["bank"], f["o"]))

    def wr_w(self, bank, set_, row, vals):
        """One WR_W: a weight row ``vals`` (n_out ints), or on a DRAM channel one column
        burst ``row`` = column, ``vals`` = its bytes (:func:`_dram_loads`)."""
        data = (int.from_bytes(vals, "little") if isinstance(vals, bytes)
                else pack_vec(vals, self.p.macro.w_bits))
        self.emit(Op.WR_W, bank=bank, set=set_, row=row, data=data)

    def wr_inp(self, g, vals):
        self.emit(Op.WR_INP, g=g, data=pack_vec(vals, self.p.macro.x_bits))


def _check_range(name, a, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    bad = np.argwhere((a < lo) | (a > hi))
    if bad.size:
        i = tuple(int(x) for x in bad[0])
        raise ValueError(f"{name}[{', '.join(map(str, i))}]={int(a[i])} is outside the signed "
                         f"{bits}-bit range {lo}..{hi}")


def _int_array(fn: str, name: str, a) -> np.ndarray:
    """``a`` as an int64 array if it is an integer array; ValueError naming ``name`` (and the
    first non-integral value) otherwise: a float, even 2.0, is never truncated, as in
    :func:`spec.params.pack_vec` (quantise first, ``workloads/quant.py``)."""
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{fn}: {name}={a!r:.60} is not an array ({e})") from None
    if arr.dtype.kind not in "iuf" or arr.dtype == bool:
        raise ValueError(f"{fn}: {name} must hold integers, got dtype {arr.dtype} "
                         f"({name}={a!r:.60})")
    if arr.dtype.kind == "f":
        bad = np.argwhere(~np.isfinite(arr) | (arr != np.rint(arr)))
        if bad.size:
            i = tuple(int(x) for x in bad[0])
            raise ValueError(f"{fn}: {name}[{', '.join(map(str, i))}]={float(arr[i])!r} is not "
                             "an integer (quantise first: workloads.quant)")
        raise ValueError(f"{fn}: {name} has dtype {arr.dtype}: pass an integer array")
    return arr.astype(np.int64)


def _tile_rows(Wm: np.ndarray, c0: int, k0: int, m) -> list[tuple[int, np.ndarray]]:
    """Rows (reduction index r) of the weight tile whose column c holds Wm[c0 + c, k0 + r]
    (Wm is [N, K]); only rows r < K - k0 (inputs are zero beyond), columns zero padded."""
    N, K = Wm.shape
    rows = []
    for r in range(min(m.n_in, K - k0)):
        v = np.zeros(m.n_out, dtype=np.int64)
        n = min(m.n_out, N - c0)
        v[:n] = Wm[c0:c0 + n, k0 + r]
        rows.append((r, v))
    return rows


def _args(fn: str, p, gap, ratio, batch=None, all_bank=False) -> None:
    """ValueError naming a bad channel, gap, ratio, batch or all_bank argument of a builder."""
    if not isinstance(p, ChannelParams):
        raise ValueError(f"{fn}: p={p!r} must be a ChannelParams")
    if not isinstance(all_bank, bool):
        raise ValueError(f"{fn}: all_bank={all_bank!r} must be a bool")
    if all_bank and not p.all_bank:
        raise ValueError(f"{fn}: all_bank=True needs a channel with all-bank MACs "
                         f"(p.all_bank={p.all_bank})")
    check_int(f"{fn}: gap", gap, 0)
    for name, v in (("ratio", ratio), ("batch", batch)):
        if v is not None:
            check_int(f"{fn}: {name}", v, 1)


def _operands(fn: str, wname: str, W, xname: str, x, m):
    """Integer operands of a program builder: W [N, K] and x [K] or [T, K] (returned as 2-D,
    with ``single`` telling which); ValueError on a shape or range mismatch."""
    W = _int_array(fn, wname, W)
    x = _int_array(fn, xname, x)
    single = x.ndim == 1
    X = x[None, :] if single else x
    if W.ndim != 2 or X.ndim != 2 or X.shape[1] != W.shape[1]:
        raise ValueError(f"{fn}: shapes {wname} {W.shape}, {xname} {x.shape} do not match")
    if W.size == 0 or X.size == 0:
        raise ValueError(f"{fn}: {wname} {W.shape} and {xname} {x.shape} must not be empty")
    _check_range(wname, W, m.w_bits)
    _check_range(xname, X, m.x_bits)
    return W, X, single


def _place(name: str, Wm: np.ndarray, p: ChannelParams) -> tuple[int, int, int, dict]:
    """Place ``Wm`` [N, K] (N outputs, K reduction) on the channel's banks: output block j
    (outputs j*n_out ..) lives on bank j % n_banks, its k-tiles in consecutive sets
    (slot = (j // n_banks) * k_tiles + kt), so the k-tiles accumulate in place.

    Returns (k_tiles, n_blocks, blocks per bank, loads {slot: [(bank, slot, row, values)]});
    ValueError if the weights need more sets than a bank has or would wrap the accumulator.
    """
    m = p.macro
    N, K = Wm.shape
    kt_n, nb_n = math.ceil(K / m.n_in), math.ceil(N / m.n_out)
    per_bank = math.ceil(nb_n / p.n_banks)
    if per_bank * kt_n > m.n_sets:
        raise ValueError(f"{name}: {nb_n} output blocks x {kt_n} k-tiles need "
                         f"{per_bank * kt_n} sets per bank, the channel has {m.n_sets} "
                         f"({m.n_sets} x {m.n_in} x {m.n_out} weights per bank)")
    if kt_n > 2 ** m.acc_guard:
        raise ValueError(f"{name}: {kt_n} k-tiles would wrap the accumulator")
    loads: dict = {}
    for j in range(nb_n):
        b, jl = j % p.n_banks, j // p.n_banks
        for kt in range(kt_n):
            slot = jl * kt_n + kt
            loads.setdefault(slot, [])
            for r, v in _tile_rows(Wm, j * m.n_out, kt * m.n_in, m):
                loads[slot].append((b, slot, r, v))
    return kt_n, nb_n, per_bank, loads


def _dram_loads(p: ChannelParams, rows: list) -> list:
    """The weight rows ``[(bank, set, row, vals)]`` of one slot as DRAM column bursts
    ``[(bank, set, col, bytes)]`` (docs/dram_channel.md, burst layout: every page that has a
    row written is written whole, rows not given are 0, which is what the DIMC program's
    zero inputs beyond them make them anyway)."""
    pages: dict = {}
    for bank, set_, row, vals in rows:
        page = pages.setdefault((bank, set_), np.zeros((p.macro.n_in, p.macro.n_out),
                                                       dtype=np.int64))
        page[row] = vals
    return [(b, s, c, burst) for (b, s), page in pages.items()
            for c, burst in enumerate(to_bursts(page, p.burst_bytes))]


def _schedule(bld: _Builder, loads: dict, groups: list, ratio: int | None = None):
    """Emit the program.

    loads   {slot: [(bank, set, row, vals)]} weight rows of each set slot
    groups  compute groups in order; each is dict(slot=..., pre=[...], macs=[...],
            reads=[...]) of commands as (Op, fields); ``slot`` = the set slot whose weights
            the group's MACs need (None: none new).
    Loads of slot 0 go first; those of slot s+1 are spread over the commands of the groups
    of slot s (first occurrence), the rest flushed before the first group of slot s+1.
    RD_OUTs of a group are emitted after the next group's MACs (one group late).
    """
    if bld.p.bank_kind == "dram":
        loads = {slot: _dram_loads(bld.p, rows) for slot, rows in loads.items()}
    slots = sorted(loads)
    loaded = set()          # slots whose loads are all emitted
    pending, pslot = [], None   # loads of slot ``pslot`` still to interleave

    def emit_slot(slot):
        nonlocal pending, pslot
        if slot == pslot:
            for ld in pending:
                bld.wr_w(*ld)
            pending, pslot = [], None
        elif slot not in loaded:
            for ld in loads[slot]:
                bld.wr_w(*ld)
        loaded.add(slot)

    def n_cmds_of_slot(slot):
        n = 0
        for gr in groups:
            if gr["slot"] is not None and gr["slot"] > slot:
                break
            if gr["slot"] == slot or (gr["slot"] is None and n):
                n += len(gr["pre"]) + len(gr["macs"]) + len(gr["reads"])
        return max(1, n)

    late_reads, r = [], 0
    for gr in groups:
        s = gr["slot"]
        if s is not None and s not in loaded:
            for t in slots:             # this slot and any earlier one not yet loaded
                if t <= s and t not in loaded:
                    emit_slot(t)
            if pslot is not None:       # an unrelated slot still pending: finish it
                emit_slot(pslot)
            nxt = [t for t in slots if t > s and t not in loaded]
            if nxt:
                pending, pslot = list(loads[nxt[0]]), nxt[0]
                r = ratio or math.ceil(len(pending) / n_cmds_of_slot(s))
        for op, f in gr["pre"] + gr["macs"] + late_reads:
            bld.emit(op, **f)
            for _ in range(min(r, len(pending))):
                bld.wr_w(*pending.pop(0))
        late_reads = gr["reads"]
    if pslot is not None:
        emit_slot(pslot)
    for t in slots:
        if t not in loaded:
            emit_slot(t)
    for op, f in late_reads:
        bld.emit(op, **f)


def _finish(bld, p, expected, single, order, note):
    """The Program of ``bld``'s commands.  ``expected`` [rows, cols] (row 0 alone if
    ``single``); ``order`` the (row, output block) of each RD_OUT beat in program order:
    decode puts beat i's n_out values at columns block * n_out .. of its row."""
    reads = list(bld.reads)
    NO = p.macro.n_out
    rows, cols = expected.shape

    def decode(out_payloads):
        if len(out_payloads) != len(reads):
            raise ValueError(f"decode: {len(out_payloads)} out beats, expected {len(reads)}")
        out = np.zeros((rows, cols), dtype=np.int64)
        for i, (w, (b, o), (r, j)) in enumerate(zip(out_payloads, reads, order, strict=True)):
            bb, oo, y = decode_out(p, w)
            if (bb, oo) != (b, o):
                raise ValueError(f"decode: beat {i} is OBuf ({bb},{oo}), expected ({b},{o})")
            n = min(NO, cols - j * NO)
            out[r, j * NO:j * NO + n] = np.array(y, dtype=np.int64)[:n]
        return out[0] if single else out
    c = bld.counts
    return Program(p, bld.cmds, expected[0] if single else expected, decode, note, c[Op.MAC],
                   c[Op.WR_W], c[Op.WR_INP], c[Op.RD_OUT])


def _wr_inp(m, x, kt: int, g: int):
    """WR_INP of input tile ``kt`` of the vector ``x`` into GBuf entry ``g`` (the tile's
    missing tail is zero: pack_vec packs element 0 in the LSBs)."""
    return Op.WR_INP, dict(g=g, data=pack_vec(x[kt * m.n_in:(kt + 1) * m.n_in], m.x_bits))


def gemv_program(p: ChannelParams, Wq, x, *, gap: int = 0, ratio: int | None = None,
                 all_bank: bool = False) -> Program:
    """``Y = Wq @ x`` for ``Wq`` [N, K] and ``x`` [K] (GEMV) or [T, K] (T tokens: Y = x @ Wq.T,
    shape [T, N]).

    Mapping: n-tile j (outputs j*n_out ..) lives on bank j % n_banks; its k-tiles (inputs
    kt*n_in ..) occupy consecutive sets of that bank (slot = (j // n_banks) * k_tiles + kt),
    so the k-tiles accumulate in place in the macro (acc = kt > 0) into OBuf entry
    ``(t * n_local + j // n_banks) % n_acc`` of token t.  Input tiles go round-robin through the
    GBuf.  ``all_bank``: the MACs of the n-tiles j // n_banks = jl of one (k-tile, token) are
    one all-bank MAC (every bank computes set slot on the same input tile; banks holding no
    tile of that round compute into an entry nobody reads).  ValueError if the tiles do not fit
    in n_banks x n_sets, or naming a bad argument (operands must be integer arrays: a float is
    never truncated; ``all_bank`` needs ``p.all_bank``).
    """
    _args("gemv_program", p, gap, ratio, all_bank=all_bank)
    m = p.macro
    Wq, X, single = _operands("gemv_program", "Wq", Wq, "x", x, m)
    N, K = Wq.shape
    T = X.shape[0]
    kt_n, nt_n, n_local, loads = _place("gemv_program", Wq, p)   # n_local: n-tiles per bank
    bld = _Builder(p, gap)
    groups, gnext, order = [], 0, []
    # compute order: per set slot (n-tile-local jl, k-tile kt), every token, every bank
    for jl in range(n_local):
        js = range(jl * p.n_banks, min(nt_n, (jl + 1) * p.n_banks))
        for kt in range(kt_n):
            slot = jl * kt_n + kt
            cmds, reads = [], []
            for t in range(T):
                # each (token, k-tile) input tile is written just before its group's MACs
                g = gnext % p.n_gbuf
                gnext += 1
                cmds.append(_wr_inp(m, X[t], kt, g))
                o = (t * n_local + jl) % m.n_acc
                if all_bank:
                    cmds.append((Op.MAC, dict(bank=0, set=slot, g=g, o=o, acc=int(kt > 0),
                                              ab=1)))
                for j in js:
                    b = j % p.n_banks
                    if not all_bank:
                        cmds.append((Op.MAC, dict(bank=b, set=slot, g=g, o=o,
                                                  acc=int(kt > 0))))
                    if kt == kt_n - 1:
                        reads.append((Op.RD_OUT, dict(bank=b, o=o)))
                        order.append((t, j))
            groups.append(dict(slot=slot, pre=[], macs=cmds, reads=reads))
    _schedule(bld, loads, groups, ratio)
    return _finish(bld, p, X @ Wq.T, single, order,
                   f"gemv N={N} K={K} T={T}{' all-bank' if all_bank else ''}")


def qk_stream_program(p: ChannelParams, K, q, *, gap: int = 0, ratio: int | None = None,
                      batch: int | None = None, all_bank: bool = False) -> Program:
    """Decode attention scores ``K @ q`` as a MAC stream; ``q`` [head_dim] or [n_q, head_dim]
    (several query heads of a GQA group, or decode steps: the stream gets n_q times longer).

    Keys are stationary weights: key block kb (keys kb*n_out ..) lives on bank kb % n_banks,
    its k-tiles (head_dim split in n_in rows) in consecutive sets (slot = (kb // n_banks) *
    k_tiles + kt).  Queries go in batches of ``batch`` (default: a first batch of
    n_acc // (2 * blocks per bank) queries, so that it computes on set slot s while slot s+1
    is loaded, then one query per batch, which keeps RD_OUTs fine-grained); per batch, for
    each set slot, each query: its k-tile is written into the GBuf (round-robin; not
    rewritten while still resident), then one MAC per bank (banks innermost), accumulating
    over k-tiles into one OBuf entry per (query, block); one RD_OUT per key block and query.
    ``all_bank``: the per-bank MACs of one (slot, k-tile, query) are one all-bank MAC (CENT's
    QK^T mapping: one key block per bank, the same query tile in every bank).
    Expected = K @ q (int64, [n_keys] or [n_q, n_keys]).  ValueError naming a bad argument.
    """
    _args("qk_stream_program", p, gap, ratio, batch, all_bank)
    m = p.macro
    K, Qm, single = _operands("qk_stream_program", "K", K, "q", q, m)
    n_keys, hd = K.shape
    n_q = Qm.shape[0]
    kt_n, kb_n, bpb, loads = _place("qk_stream_program", K, p)   # bpb: key blocks per bank
    bld = _Builder(p, gap)
    # queries in batches whose OBuf entries fit in half the result file (the other half is
    # being read out); per batch: key-block slot, k-tile, query, bank (innermost), so the
    # first batch computes on slot s while the next slot is loaded
    first = max(1, min(n_q, m.n_acc // (2 * bpb))) if batch is None else batch
    if first * bpb > m.n_acc:
        raise ValueError(f"qk_stream_program: batch={first} x {bpb} blocks > n_acc={m.n_acc}")
    starts = [0] + list(range(first, n_q, 1 if batch is None else batch))
    groups, order, resident, gnext, ebase = [], [], {}, 0, 0
    for i, q0 in enumerate(starts):
        qs = range(q0, starts[i + 1] if i + 1 < len(starts) else n_q)
        for bl in range(bpb):
            blocks = [kb for kb in range(bl * p.n_banks, min(kb_n, (bl + 1) * p.n_banks))]
            for kt in range(kt_n):
                slot = bl * kt_n + kt
                cmds, reads = [], []
                for qi in qs:
                    o = (ebase + (qi - q0) * bpb + bl) % m.n_acc
                    g = resident.get((qi, kt))
                    if g is None:           # write q's k-tile into the next GBuf entry
                        g = gnext % p.n_gbuf
                        gnext += 1
                        resident = {k: v for k, v in resident.items() if v != g}
                        resident[(qi, kt)] = g
                        cmds.append(_wr_inp(m, Qm[qi], kt, g))
                    if all_bank:
                        cmds.append((Op.MAC, dict(bank=0, set=slot, g=g, o=o, acc=int(kt > 0),
                                                  ab=1)))
                    else:
                        cmds += [(Op.MAC, dict(bank=kb % p.n_banks, set=slot, g=g, o=o,
                                               acc=int(kt > 0))) for kb in blocks]
                    if kt == kt_n - 1:
                        reads += [(Op.RD_OUT, dict(bank=kb % p.n_banks, o=o)) for kb in blocks]
                        order += [(qi, kb) for kb in blocks]
                groups.append(dict(slot=slot, pre=[], macs=cmds, reads=reads))
        ebase += len(qs) * bpb
    _schedule(bld, loads, groups, ratio)
    return _finish(bld, p, Qm @ K.T, single, order,
                   f"qk n_keys={n_keys} hd={hd} n_q={n_q}{' all-bank' if all_bank else ''}")
