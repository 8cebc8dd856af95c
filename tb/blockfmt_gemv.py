"""One real block-format GEMV through the block post-processing stage, cycle by cycle.

:func:`stage_gemv` plays the output columns of ``x @ W.T`` for one token, in tiles of
``n_out`` columns, as the channel would (``docs/blockfmt.md``, section 9): per tile, per
block ``b`` (one macro tile = one block), the weight set ``b % 2`` gets the block's scale
words (``chunks`` scale-write beats), then the macro's integer dot products of the block
(exact, :func:`model.blockfmt.block_dots` of the stored codes) enter the stage as one ``inp``
beat with ``acc = b > 0``, the input tile's exponent code ``xs`` and element sum ``xsum``.
The stage's last output beat of the tile is the tile's binary32 result.

It runs on :class:`model.blockfmt.PostModel` (cycle-exact golden model) and, with
``rtl=True``, on :class:`hdl.blockfmt.BlockfmtStage` in amaranth.sim in lockstep with it:
every output compared every cycle.  The result is compared with the golden numerics
(:func:`model.blockfmt.block_matmul`, what the decoders use).  Not the channel: the stage
is not yet placed behind the channel's banks (``docs/blockfmt.md``, section 9 is a
proposal), so the MACs' integers come from the macro's exact numerics here.
"""
from __future__ import annotations

import time

import numpy as np

from model import blockfmt as bf
from spec.blockfmt import FORMATS, PostParams, fmt_of, post_in_fields, post_out_fields, \
    post_sw_fields
from spec.params import MacroParams, pack, pack_vec, unpack

__all__ = ["stage_params", "stage_ops", "stage_gemv"]


def stage_params(fmt, n_out: int = 64, lanes: int = 8) -> PostParams:
    """The stage behind a macro of ``fmt``'s geometry: n_in = block, w_bits the smallest
    that executes it, x_bits 8, two weight sets, two accumulator entries."""
    f = FORMATS[fmt_of(fmt)]
    return PostParams(MacroParams(n_in=f.block, n_out=n_out, w_bits=min(f.macro_w_bits),
                                  x_bits=8, n_sets=2, n_acc=2, tree_stages=0), lanes=lanes)


def stage_ops(p: PostParams, fmt, xq, xs, wq, words) -> list[tuple[str, int]]:
    """The stage's input sequence for one tile: ("sw", payload) scale writes and ("inp",
    payload) beats.  ``xq`` [K] int codes, ``xs`` [nb] exponent codes, ``wq`` [n_out, K]
    weight codes (Q4_1: 0..15), ``words`` [n_out, nb]."""
    fmt = fmt_of(fmt)
    f = FORMATS[fmt]
    m = p.macro
    xq = np.asarray(xq, np.int64)
    nb = xq.size // f.block
    y = bf.block_dots(xq[None], np.asarray(wq, np.int64) - f.q_offset, f.block)[:, 0]
    xsum = xq.reshape(nb, f.block).sum(-1)
    fin, fsw, mask = post_in_fields(p), post_sw_fields(p), (1 << p.xsum_bits) - 1
    ops = []
    for b in range(nb):
        s = b % m.n_sets
        w = np.asarray(words[:, b], "<u4")
        for part in range(p.chunks):
            chunk = w[part * p.lanes:(part + 1) * p.lanes]
            ops.append(("sw", pack(fsw, words=int.from_bytes(chunk.tobytes(), "little"),
                                   part=part, set=s, fmt=int(fmt))))
        ops.append(("inp", pack(fin, y=pack_vec(y[b], m.acc_width), dst=0, set=s,
                                acc=int(b > 0), xs=int(xs[b]), xsum=int(xsum[b]) & mask)))
    return ops


def _driver(ops, limit: int):
    """Generator of the stage's inputs for ``ops``: yields (inp_valid, inp, sw_valid, sw,
    out_ready) per cycle and is sent that cycle's outputs (a dict); a scale write waits
    while the stage is busy (no HAZARD), a beat is held until taken, out.ready is 1;
    done when every beat's output was taken.  Returns (output payloads, cycles, scale-write err codes)."""
    outs, errs, i, cyc, pending, busy = [], [], 0, 0, False, False
    n_beats = sum(k == "inp" for k, _ in ops)
    while True:
        kind, word = ops[i] if i < len(ops) else (None, 0)
        wait = kind == "sw" and busy
        if wait or kind is None:
            o = yield (0, 0, 0, 0, 1)
        elif kind == "sw":
            o = yield (0, 0, 1, word, 1)
        else:
            o = yield (1, word, 0, 0, 1)
        cyc += 1
        busy = bool(o["busy"])
        if pending:
            errs.append(int(o["err"]))
            pending = False
        if o["out_valid"]:
            outs.append(int(o["out_payload"]))
        if kind == "inp" and o["inp_ready"]:
            i += 1
        elif kind == "sw" and not wait:
            i += 1
            pending = True
        if i >= len(ops) and len(outs) == n_beats and not pending:
            return outs, cyc, errs
        if cyc > limit:
            raise RuntimeError(f"stage_gemv: stage not idle after {cyc} cycles")


def _model_run(p: PostParams, ops) -> dict:
    m = bf.PostModel(p)
    g = _driver(ops, 100 * len(ops) + 100)
    x = next(g)
    try:
        while True:
            x = g.send(m.step(*x)._asdict())
    except StopIteration as e:
        outs, cyc, errs = e.value
    return {"outs": outs, "cycles": cyc, "errs": errs}


_OUTS = ("inp_ready", "sw_ready", "out_valid", "out_payload", "err", "busy")


def _rtl_run(p: PostParams, ops) -> dict:
    """``ops`` through BlockfmtStage (amaranth.sim) in lockstep with PostModel: every output
    compared every cycle; the first difference is reported in ``mismatch``."""
    from hdl.blockfmt import BlockfmtStage
    from tb.amsim import simulate
    dut = BlockfmtStage(p)
    model = bf.PostModel(p)
    res = {"mismatch": None, "compared": 0}

    async def bench(ctx, _rst):
        g = _driver(ops, 100 * len(ops) + 100)
        x = next(g)
        while True:
            iv, ip, sv, sp, rdy = x
            ctx.set(dut.inp.valid, iv)
            ctx.set(dut.inp.payload.as_value(), ip)
            ctx.set(dut.sw.valid, sv)
            ctx.set(dut.sw.payload.as_value(), sp)
            ctx.set(dut.out.ready, rdy)
            hw = {"inp_ready": ctx.get(dut.inp.ready), "sw_ready": ctx.get(dut.sw.ready),
                  "out_valid": ctx.get(dut.out.valid),
                  "out_payload": ctx.get(dut.out.payload.as_value()),
                  "err": ctx.get(dut.err), "busy": ctx.get(dut.busy)}
            cyc = model.cycle
            exp = model.step(*x)._asdict()
            bad = {k: (hw[k], exp[k]) for k in _OUTS if hw[k] != exp[k]}
            if bad and res["mismatch"] is None:
                res["mismatch"] = f"cycle {cyc}: (rtl, model) {bad}"
            res["compared"] += 1
            await ctx.tick()
            try:
                x = g.send(hw)
            except StopIteration as e:
                res["outs"], res["cycles"], res["errs"] = e.value
                return

    simulate(dut, bench)
    return res


def stage_gemv(fmt, xq, xs, wq, words, *, rtl: bool = False, n_out: int = 64,
               lanes: int = 8, tiles: int | None = None) -> dict:
    """One token's GEMV ``[N] = x . W.T`` in ``fmt`` through the stage (module doc).

    ``xq`` [K] codes, ``xs`` [nb], ``wq`` [N, K], ``words`` [N, nb]; N is played in tiles of
    ``n_out`` columns (the first ``tiles`` of them, default all; N a multiple of n_out).
    Returns dict(codes uint32 [columns played], want (block_matmul's codes), exact (equal),
    cycles (stage cycles, all tiles), tiles, columns, errs (non-zero scale-write codes),
    rtl: None or dict(cycles, compared, mismatch), wall_s)."""
    fmt = fmt_of(fmt)
    wq, words = np.asarray(wq), np.asarray(words)
    N = wq.shape[0]
    if N % n_out:
        raise ValueError(f"stage_gemv: N={N} is not a multiple of n_out={n_out}")
    n_t = N // n_out if tiles is None else min(int(tiles), N // n_out)
    p = stage_params(fmt, n_out, lanes)
    fo = post_out_fields(p)
    t0 = time.perf_counter()
    got, cycles, errs, rtl_res = [], 0, [], None
    for t in range(n_t):
        cols = slice(t * n_out, (t + 1) * n_out)
        ops = stage_ops(p, fmt, xq, xs, wq[cols], words[cols])
        r = _rtl_run(p, ops) if rtl else _model_run(p, ops)
        outs, c, e = r["outs"], r["cycles"], r["errs"]
        if rtl:
            rtl_res = rtl_res or {"cycles": 0, "compared": 0, "mismatch": None}
            rtl_res["cycles"] += c
            rtl_res["compared"] += r["compared"]
            rtl_res["mismatch"] = rtl_res["mismatch"] or r["mismatch"]
        cycles += c
        errs += [x for x in e if x]
        v = unpack(fo, outs[-1])["v"]
        got.append(np.frombuffer(v.to_bytes(4 * n_out, "little"), "<u4"))
    codes = np.concatenate(got).astype(np.uint32)
    want, _ = bf.block_matmul(fmt, np.asarray(xq)[None], np.asarray(xs)[None],
                              wq[:n_t * n_out], words[:n_t * n_out])
    return {"fmt": fmt.name, "codes": codes, "want": want[0], "exact":
            bool(np.array_equal(codes, want[0])), "cycles": cycles, "tiles": n_t,
            "columns": n_t * n_out, "errs": errs, "rtl": rtl_res,
            "wall_s": round(time.perf_counter() - t0, 2)}
