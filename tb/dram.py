"""The DRAM-PIM bank in the one lockstep loop: probe spec, model adapter, stimulus, QK^T runs.

Simulator side (no Amaranth; the RTL adapter is ``tb/dram_dut.py``).  The design ``dram_bank``
of ``tb/designs.py`` is :class:`hdl.dram_bank.DramBank` seen through ``tb.dram_dut.DramBankDut``:
one input stream ``cmd`` (valid / ready / payload, ``spec.dram.cmd_fields``) and one output
``out`` whose payload is both of the bank's ``always_ready`` outputs (:func:`out_fields`:
``res_valid``, ``rd_valid``, then the ``res`` payload ``y``/``dst``, then the ``rd`` payload
``data``).  Every other output (``cmd.ready``, ``err``, ``ref_lost``, ``ref_pend``,
``refreshing``, ``open``, ``open_row``) and the adapter's observer bits ``busy`` (legal MAC
accepted, refreshing, command held) are compared every cycle as narrow fields.

:class:`DramLockstepModel` puts :class:`model.dram_bank.DramBankModel` behind the loop's model
convention (``step(cmd_valid, cmd_payload, out_ready)``; ``reset``; ``state``).  The loop
resets a model *after* stepping it, which for the bank would let a command presented in the
``rst`` cycle land (a WR would reach the model's array); the contract says it is lost, so the
adapter steps the ``job["reset_at"]`` cycle with ``rst=1`` itself and the loop's ``reset``
call that follows is then a no-op.

Stimulus: :func:`random_dram_cmds` (random and malformed command streams, open loop on a
shadow of the intended bank state), :func:`qk_program` (a K cache written with WRs and the
QK^T column MACs of a GQA group against it).  Runs: :func:`run_dram_lockstep`,
:func:`run_qk`.
"""
from __future__ import annotations

import math
import random
import time
from collections import namedtuple
from dataclasses import dataclass

import numpy as np

from model.dram_bank import DramBankModel
from spec.dram import (GDDR6_AIM_TIMING, SHORT_TIMING, DramBankParams, DramOp,
                       cmd_fields, res_fields)
from spec.params import _layout, unpack_vec, width
from tb.probespec import ProbeSpec

__all__ = ["SMALL_BANK", "qk_params", "out_fields", "out_width", "probe_spec", "DramLockOut", "DramLockstepModel",
           "random_dram_cmds", "QKProgram", "qk_program", "run_dram_lockstep",
           "decode_outputs", "run_qk"]

_MAC = int(DramOp.MAC)

#: the small bank of the random-stream runs (tests and bench): 12 rows x 48 bytes, R and C not
#: powers of two (BAD_ROW / BAD_COL possible), 8-byte bursts of 2 lanes, a 20-bit accumulator
#: (wraps within a row), SHORT_TIMING (refresh every 120 cycles), ref_max 2
SMALL_BANK = DramBankParams(rows=12, row_bytes=48, burst_bytes=8, n_out=2, n_acc=4,
                            acc_width=20, ref_max=2, timing=SHORT_TIMING)


def qk_params(n_tokens: int, head_dim: int = 128) -> DramBankParams:
    """The GDDR6-AiM bank (2 KB rows, 32-byte bursts, one dot product per column, 28-bit
    accumulators, GDDR6-AiM timing) with just the rows a K cache of ``n_tokens`` keys of
    ``head_dim`` INT8 values needs (at least 2)."""
    return DramBankParams(rows=max(2, math.ceil(n_tokens * head_dim / 2048)), row_bytes=2048,
                          burst_bytes=32, n_out=1, n_acc=16, acc_width=28, ref_max=8,
                          timing=GDDR6_AIM_TIMING)


def out_fields(p: DramBankParams) -> dict:
    """Layout of the adapter's ``out.payload``: ``res_valid`` 1, ``rd_valid`` 1, ``y``
    (n_out x acc_width), ``dst`` (the ``res`` payload), ``data`` (the ``rd`` payload)."""
    r = res_fields(p)
    return _layout(("res_valid", 1), ("rd_valid", 1), ("y", r["y"].width),
                   ("dst", r["dst"].width), ("data", p.burst_bits))


def out_width(p: DramBankParams) -> int:
    return width(out_fields(p))


def probe_spec(p: DramBankParams) -> ProbeSpec:
    """What the lockstep wrapper drives and samples for the bank adapter."""
    return ProbeSpec(ctl=("cmd.valid", "out.ready"), wide_in=("cmd.payload",),
                     obs=(("cmd.ready", 1), ("out.valid", 1), ("err", 3), ("ref_lost", 1),
                          ("ref_pend", p.ref_bits), ("refreshing", 1), ("open", 1),
                          ("open_row", p.row_bits), ("busy", 3)),
                     wide_out="out.payload")


DramLockOut = namedtuple("DramLockOut", "cmd_ready out_valid out_payload err ref_lost ref_pend "
                                        "refreshing open open_row busy idle")
DramLockOut.__doc__ = ("Outputs of the bank adapter in one cycle (the probe's names, '.' -> "
                       "'_'); ``idle`` (no RD or MAC beat in flight) is model-only, for the "
                       "loop's end rule.")


class DramLockstepModel:
    """:class:`model.dram_bank.DramBankModel` with the lockstep loop's model interface.

    Parameters
    ----------
    params : DramBankParams
    job : dict
        The lockstep job: ``reset_at`` (cycle with ``rst`` high, -1: none) and ``late``
        (the model's fault injection, ``DramBankModel(late=...)``).
    """

    def __init__(self, params: DramBankParams, job: dict):
        self.bank = DramBankModel(params, late=job.get("late", 0))
        self.inputs = self.bank.inputs + (("out_ready", 1),)
        self._reset_at = job.get("reset_at", -1)
        self._c, self._just_reset = 0, False
        f = cmd_fields(params)
        self._col = (f["col"].offset, (1 << f["col"].width) - 1)
        self._n_cols = params.n_cols
        self._sh_res = 2
        self._sh_rd = 2 + width(res_fields(params))

    def step(self, cmd_valid, cmd_payload, out_ready=1) -> DramLockOut:
        """One cycle (``out_ready`` is ignored: the bank's outputs have no ready)."""
        bank = self.bank
        rst = int(self._c == self._reset_at)
        self._just_reset = bool(rst)
        self._c += 1
        o = bank.step(cmd_valid, cmd_payload, rst=rst)
        pay = (o.res_valid | o.rd_valid << 1 | o.res_payload << self._sh_res
               | o.rd_payload << self._sh_rd)
        mac = int(bool(cmd_valid and o.cmd_ready and o.open and (cmd_payload & 7) == _MAC
                       and (cmd_payload >> self._col[0] & self._col[1]) < self._n_cols))
        idle = int(not bank._rdq and not bank._resq)
        return DramLockOut(o.cmd_ready, o.res_valid | o.rd_valid, pay, o.err, o.ref_lost,
                           o.ref_pend, o.refreshing, o.open, o.open_row,
                           mac | o.refreshing << 1 | (cmd_valid and not o.cmd_ready) << 2,
                           idle)

    def reset(self, power_up: bool = False) -> None:
        """``rst`` (the loop calls it after stepping cycle ``reset_at``, which this adapter
        already stepped with ``rst=1``: then a no-op)."""
        if self._just_reset and not power_up:
            return
        self.bank.reset(power_up)

    def state(self) -> dict:
        return self.bank.state()


# ------------------------------------------------------------------ random command streams
class _Cmd:
    """Fast packer of command words for ``p`` (fields as in ``spec.dram.cmd_fields``)."""

    def __init__(self, p: DramBankParams):
        f = cmd_fields(p)
        self.off = {k: v.offset for k, v in f.items()}
        self.mask = {k: (1 << v.width) - 1 for k, v in f.items()}

    def __call__(self, **v) -> int:
        w = 0
        for k, x in v.items():
            w |= (x & self.mask[k]) << self.off[k]
        return w


def _bytes_word(rng: random.Random, n: int) -> int:
    """``n`` int8 values packed (byte 0 lowest), with extremes: uniform, all -128, all 127,
    sparse, {-128, 127, 0, -1}."""
    k = rng.random()
    if k < 0.55:
        return rng.getrandbits(8 * n)
    if k < 0.65:
        return int.from_bytes(b"\x80" * n, "little")
    if k < 0.75:
        return int.from_bytes(b"\x7f" * n, "little")
    if k < 0.88:
        return int.from_bytes(bytes(rng.getrandbits(8) if rng.random() < 0.2 else 0
                                    for _ in range(n)), "little")
    return int.from_bytes(bytes(rng.choice((0x80, 0x7F, 0, 0xFF)) for _ in range(n)),
                          "little")


def random_dram_cmds(p: DramBankParams, seed: int, n: int, *, gap_p: float = 0.25,
                     max_gap: int = 6, idle_p: float = 0.004, hold_p: float = 0.03,
                     bad_p: float = 0.06, max_run: int = 24,
                     wrap_p: float = 0.01) -> list[tuple[int, int]]:
    """``n`` random bank commands ``[(word, gap)]``: well-formed row passes (ACT, column MAC /
    RD / WR, PRE) mixed with malformed and illegal ones.

    Open loop on a shadow of the intended state (a rejected command changes nothing, so the
    shadow is exact until a reset; after one it reconverges at the next PRE).  Most gaps are 0,
    so every timing rule is hit by a held (not ready) command; ``gap_p``: a gap of
    1..``max_gap``; ``idle_p``: a long idle (20 .. 3 tREFI cycles, refresh starts in it);
    ``hold_p``: a row held open for 150..300 column commands (refresh requests pile up to
    ``ref_max`` and are lost); ``bad_p``: an illegal command (op 5..7, row >= rows, col >=
    n_cols, a column command while IDLE, ACT while ACTIVE, as applicable).  Fields an opcode
    does not use carry random values (the bank ignores them); MAC inputs and WR data include
    all -128 / all 127 bursts, and ``wrap_p`` (per column command) starts a WR of an extreme
    burst followed by 4..24 accumulating MACs of it with extreme inputs into one entry, so
    accumulators wrap (a reset or an ACT from the illegal mix may cut such a run short).
    """
    rng = random.Random(seed)
    pk = _Cmd(p)
    R, C, U = p.rows, p.n_cols, p.burst_bytes
    tREFI = p.timing.tREFI
    r = rng.random
    out: list[tuple[int, int]] = []
    opened, run_left, wrap, wrap_f = False, 0, 0, {}
    bad_kinds = ["op"] + (["row"] if (1 << p.row_bits) != R else []) + (
        ["col"] if (1 << p.col_bits) != C else [])
    while len(out) < n:
        gap = rng.randint(1, max_gap) if r() < gap_p else 0
        if r() < idle_p:
            gap = rng.randint(20, 3 * tREFI)
        f = dict(row=rng.getrandbits(p.row_bits), col=rng.randrange(C),
                 dst=rng.getrandbits(p.dst_bits), acc=int(r() < 0.7), last=int(r() < 0.4),
                 data=rng.getrandbits(p.burst_bits))
        if r() < bad_p:
            kind = rng.choice(bad_kinds + ["state"])
            if kind == "op":
                f["op"] = rng.randint(5, 7)
            elif kind == "row":
                f.update(op=int(DramOp.ACT), row=rng.randrange(R, 1 << p.row_bits))
            elif kind == "col":
                f.update(op=rng.choice((_MAC, int(DramOp.RD), int(DramOp.WR))),
                         col=rng.randrange(C, 1 << p.col_bits))
            elif opened:
                f.update(op=int(DramOp.ACT), row=rng.randrange(R))      # ROW_OPEN
            else:
                f["op"] = rng.choice((_MAC, int(DramOp.RD), int(DramOp.WR)))   # NOT_OPEN
        elif not opened:
            if r() < 0.06:
                f["op"] = int(DramOp.PRE)                  # a no-op
            else:
                f.update(op=int(DramOp.ACT), row=rng.randrange(R))
                opened = True
                run_left = (rng.randint(150, 300) if r() < hold_p
                            else rng.randint(0, max_run))
        elif wrap:
            wrap -= 1                                  # the same extreme burst, accumulated
            f.update(op=_MAC, col=wrap_f["col"], dst=wrap_f["dst"], acc=1,
                     last=int(r() < 0.5), data=wrap_f["x"])
        elif run_left == 0:
            f["op"] = int(DramOp.PRE)
            opened = False
        elif r() < wrap_p:
            v = rng.choice((b"\x80", b"\x7f"))     # WR an extreme burst, then MAC it
            wrap_f = dict(col=f["col"], dst=f["dst"],
                          x=int.from_bytes(rng.choice((b"\x80", b"\x7f")) * U, "little"))
            f.update(op=int(DramOp.WR), data=int.from_bytes(v * U, "little"))
            wrap = rng.randint(4, 24)
        else:
            run_left -= 1
            k = r()
            if k < 0.55:
                f.update(op=_MAC, data=_bytes_word(rng, U))
            elif k < 0.75:
                f["op"] = int(DramOp.RD)
            else:
                f.update(op=int(DramOp.WR), data=_bytes_word(rng, U))
        out.append((pk(**f), gap))
    return out


# ------------------------------------------------------------------ runs
def run_dram_lockstep(p: DramBankParams, cmds, *, seed: int, reset_at: int = -1,
                      late: int = 0, fault: str | None = None, waves: bool | None = None,
                      max_cycles: int = 50_000_000, label: str = "dram") -> dict:
    """Run bank commands ``cmds`` [(word, gap)] through the Verilated bank (in
    :class:`tb.dram_dut.DramBankDut`) and the golden model in lockstep (``tb.build.run_job``).

    Adds to the loop's result: ``res`` [(y lanes, dst)] and ``rd`` [burst word] in arrival
    order, ``errors`` [(cycle, ``spec.dram.DramErr`` code)], ``ref_lost`` (cycles with ``ref_lost``),
    ``mac_cycles`` (legal MACs accepted), ``refresh_cycles`` (cycles with ``refreshing``),
    ``held_cycles`` (cycles with ``cmd.valid`` and not ``cmd.ready``: timing backpressure).
    """
    from model.stimulus import Beat
    from tb.build import Target, run_job
    res = run_job(Target("dram_bank", p, fault), [[Beat(w, g) for w, g in cmds]], seed=seed,
                  ready_p=1.0, waves=waves, max_cycles=max_cycles, reset_at=reset_at,
                  label=label, late=late)
    res["res"], res["rd"] = decode_outputs(p, res["outputs"])
    res["errors"] = [(c, v) for c, n, v in res["events"] if n == "err"]
    res["ref_lost"] = sum(1 for _, n, _ in res["events"] if n == "ref_lost")
    res["mac_cycles"], res["refresh_cycles"], res["held_cycles"] = res["busy_cycles"]
    return res


def decode_outputs(p: DramBankParams, outputs) -> tuple[list, list]:
    """``out.payload`` samples (cycles with ``out.valid``) -> (``res`` beats [(y, dst)],
    ``rd`` beats [data])."""
    f = out_fields(p)
    oy, od, odata = f["y"].offset, f["dst"].offset, f["data"].offset
    my, md = (1 << f["y"].width) - 1, (1 << f["dst"].width) - 1
    res, rd = [], []
    for w in outputs:
        if w & 1:
            res.append((unpack_vec(w >> oy & my, p.n_out, p.acc_width), w >> od & md))
        if w & 2:
            rd.append(w >> odata)
    return res, rd


# ------------------------------------------------------------------ QK^T through the bank
@dataclass
class QKProgram:
    """A K cache written into the bank and the column MACs of its QK^T (see :func:`qk_program`).

    ``cmds`` [(word, gap)]; ``order`` [(query, token)] of the ``res`` beats in arrival order;
    ``rd_expect`` [burst word] of the ``rd`` beats in order; ``expected`` int64 [G, T]
    (numpy ``Qq @ Kq.T``); ``n_write`` / ``n_mac`` commands of each phase; ``rows`` used."""
    cmds: list
    order: list
    rd_expect: list
    expected: np.ndarray
    n_write: int
    n_mac: int
    rows: int

    def scores(self, res) -> np.ndarray:
        """The integer scores [G, T] from the ``res`` beats (y lane 0)."""
        s = np.zeros_like(self.expected)
        if len(res) != len(self.order):
            raise ValueError(f"QKProgram.scores: {len(res)} res beats, expected "
                             f"{len(self.order)}")
        for (g, t), (y, _) in zip(self.order, res, strict=True):
            s[g, t] = y[0]
        return s


def _word(v) -> int:
    return int.from_bytes(np.asarray(v, dtype=np.int64).astype(np.int8).tobytes(), "little")


def qk_program(p: DramBankParams, Kq: np.ndarray, Qq: np.ndarray) -> QKProgram:
    """K rows ``Kq`` [T, D] (int8 values) written into the bank, then ``Qq`` [G, D] against it.

    Layout: a DRAM row holds ``row_bytes // D`` keys, key j of row r is token
    ``r * keys_per_row + j`` at bytes ``j*D .. j*D+D-1`` (columns ``j*D/U ..``).  Phase 1
    (prefill): per row ACT, one WR per column, PRE.  Phase 2 (decode): per row ACT; for each
    query g of the group and each key j, D/U column MACs into entry ``g % n_acc`` (``acc`` 0 on
    the first, ``last`` on the final one: one ``res`` beat per (g, token)) with the query's
    slice for that column in ``data`` (the global-buffer input); one RD of the row's last
    column (read back); PRE.  Every gap is 0: the bank's backpressure issues each command at
    its earliest legal cycle (an in-order controller)."""
    Kq, Qq = np.asarray(Kq), np.asarray(Qq)
    T, D = Kq.shape
    G = Qq.shape[0]
    U = p.burst_bytes
    if p.n_out != 1:
        raise ValueError(f"qk_program: n_out={p.n_out} must be 1 (one dot product per bank)")
    if Qq.shape[1] != D or D % U or p.row_bytes % D:
        raise ValueError(f"qk_program: head_dim {D} must divide row_bytes={p.row_bytes}, be a "
                         f"multiple of burst_bytes={U} and match Qq {Qq.shape}")
    for nm, a in (("Kq", Kq), ("Qq", Qq)):
        if a.size and (a.min() < -128 or a.max() > 127):
            raise ValueError(f"qk_program: {nm} has values outside int8")
    kpr, cpk = p.row_bytes // D, D // U
    rows = math.ceil(T / kpr)
    if rows > p.rows:
        raise ValueError(f"qk_program: {T} keys need {rows} rows, the bank has {p.rows}")
    pk = _Cmd(p)
    ACT, PRE, WR, RD = (int(DramOp.ACT), int(DramOp.PRE), int(DramOp.WR), int(DramOp.RD))
    flat = np.zeros((rows * kpr, D), dtype=np.int64)
    flat[:T] = Kq
    img = flat.reshape(rows, p.row_bytes)
    cmds, rd_expect, order = [], [], []
    for r in range(rows):
        cmds.append((pk(op=ACT, row=r), 0))
        for c in range(p.n_cols):
            cmds.append((pk(op=WR, col=c, data=_word(img[r, c * U:(c + 1) * U])), 0))
        cmds.append((pk(op=PRE), 0))
    n_write = len(cmds)
    xs = [[_word(Qq[g, c * U:(c + 1) * U]) for c in range(cpk)] for g in range(G)]
    n_mac = 0
    for r in range(rows):
        cmds.append((pk(op=ACT, row=r), 0))
        for g in range(G):
            for j in range(min(kpr, T - r * kpr)):
                for c in range(cpk):
                    cmds.append((pk(op=_MAC, col=j * cpk + c, dst=g % p.n_acc, acc=int(c > 0),
                                    last=int(c == cpk - 1), data=xs[g][c]), 0))
                    n_mac += 1
                order.append((g, r * kpr + j))
        cmds.append((pk(op=RD, col=p.n_cols - 1), 0))
        rd_expect.append(_word(img[r, (p.n_cols - 1) * U:]))
        cmds.append((pk(op=PRE), 0))
    exp = Qq.astype(np.int64) @ Kq.astype(np.int64).T
    return QKProgram(cmds, order, rd_expect, exp, n_write, n_mac, rows)


def run_qk(p: DramBankParams, n_tokens: int, *, seed: int = 0, head_dim: int = 128,
           group: int = 4, label: str = "qk") -> dict:
    """The Llama-3.1-8B attention QK^T shape (``head_dim``, GQA ``group`` queries against one
    KV head, ``n_tokens`` cached keys; ``workloads.gemm.llama_attn_scores`` data, INT8 with
    ``workloads.quant``) through the bank RTL in lockstep with the golden model.

    Returns the lockstep result plus ``qk``: build / run times, cycles, cycles/s, MACs and
    MAC utilisation, and the checks ``exact_vs_numpy`` (scores from the RTL == ``Qq @ Kq.T``),
    ``rd_ok`` (read-back), ``cosine`` (dequantised scores vs float)."""
    from spec.params import MacroParams
    from tb.build import Target, build
    from workloads.gemm import cosine, llama_attn_scores
    from workloads.quant import dequantise_matmul, quantise_per_channel, quantise_per_token
    wl = llama_attn_scores(MacroParams(), n_keys=n_tokens,
                           head_dim=head_dim, group=group, seed=seed)
    Q, K = wl.info["Q"], wl.info["K"]
    qq, kq = quantise_per_token(Q, 8), quantise_per_channel(K, 8)
    prog = qk_program(p, kq.q, qq.q)
    t0 = time.perf_counter()
    build(Target("dram_bank", p))
    build_s = time.perf_counter() - t0
    res = run_dram_lockstep(p, prog.cmds, seed=seed, label=label)
    info = dict(tokens=n_tokens, head_dim=head_dim, group=group, rows=prog.rows,
                commands=len(prog.cmds), n_write=prog.n_write, n_mac=prog.n_mac,
                build_or_reuse_s=round(build_s, 2), ok=res["ok"], cycles=res["cycles"],
                wall_s=round(res["wall_s"], 3), cycles_per_s=round(res["cycles_per_s"]),
                process_s=round(res["sim_total_s"], 2), mac_cycles=res["mac_cycles"],
                mac_util=res["mac_cycles"] / res["cycles"],
                refresh_cycles=res["refresh_cycles"], held_cycles=res["held_cycles"],
                errors=len(res["errors"]))
    if res["ok"]:
        s = prog.scores(res["res"])
        info["exact_vs_numpy"] = bool(np.array_equal(s, prog.expected))
        info["rd_ok"] = res["rd"] == prog.rd_expect
        deq = dequantise_matmul(s, qq.scale, kq.scale) / math.sqrt(head_dim)
        ref = Q.astype(np.float64) @ K.astype(np.float64).T / math.sqrt(head_dim)
        info["cosine"] = cosine(deq, ref)
    res["qk"] = info
    return res

