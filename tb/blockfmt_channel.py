"""A real block-format GEMV tile through a PIM channel with the block post-processing stage
behind its banks (``ChannelParams.post``; docs/channel.md, "Block post-processing stage").

:func:`gemv_program` builds the channel program of one token's ``y = x . W.T`` on
``n_banks * n_out`` output columns (bank b computes columns ``b*n_out ..``): per block j
(weight set ``j % n_sets``, GBuf entry ``j % n_gbuf``) a WR_INP of the input tile with its
exponent code ``xs``, per bank the WR_SCALEs of the set's scale words and format, the WR_Ws of
the block's weight rows and a MAC (``acc = j > 0``); then one RD_OUT per bank.  Later blocks
reload sets and GBuf entries, so the dependencies on the stage's done are exercised.

:func:`run_lockstep` runs a program on :class:`model.channel.ChannelModel` and, with
``rtl=True``, on :class:`hdl.channel.PimChannel` in amaranth.sim: every output of the channel
(``cmd.ready``, ``out``, ``idle``, ``busy``, ``err``, ``perr``) compared every cycle.

:func:`real_tile` gives real operands offline: MiniLM layer 0's query weights and its first
token's embedding output (BFP16, MXINT8, NONE: quantised here) or SmolLM2's layer-0 ``attn_q``
GGUF Q4_1 rows (native, unchanged) with the same kind of input quantised to MXINT8.
"""
from __future__ import annotations

import numpy as np

from model import blockfmt as bf
from model.channel import ChannelModel
from spec.blockfmt import FORMATS, Fmt, PostParams, fmt_of
from spec.isa import ChannelParams, Op, encode, out_fields
from spec.params import MacroParams, pack_vec, unpack

__all__ = ["post_channel", "real_tile", "gemv_program", "run_lockstep", "expected"]


def post_channel(n_in: int, w_bits: int = 8, *, n_out: int = 8, lanes: int = 2,
                 n_banks: int = 2, n_sets: int = 2) -> ChannelParams:
    """A small DIMC channel (x_bits 8, two GBuf entries, q_depth 4) with the stage."""
    mp = MacroParams(n_in=n_in, n_out=n_out, w_bits=w_bits, x_bits=8, n_sets=n_sets,
                     n_acc=2, tree_stages=0)
    return ChannelParams(macro=mp, n_banks=n_banks, n_gbuf=2, q_depth=4,
                         post=PostParams(mp, lanes=lanes))


def real_tile(fmt, n_cols: int, n_blocks: int) -> dict:
    """Real operands of one GEMV tile: ``xq`` [K] int codes, ``xs`` [nb], ``wq`` [n_cols, K]
    codes the host writes (Q4_1: q in 0..15, the macro stores q - 8), ``words``
    [n_cols, nb] scale words.  NONE: int8 per-channel weights and per-token inputs
    (the integer path), ``xs`` 0 and words 0."""
    fmt = fmt_of(fmt)
    from workloads import minilm
    k = FORMATS[fmt].block if fmt != Fmt.NONE else 64
    K = k * n_blocks
    x = np.asarray(minilm.layer0_qkv(minilm.DEFAULT_SENTENCE)["X"][1], np.float64)
    x = np.resize(x, K)[None]
    if fmt == Fmt.Q4_1:
        from workloads.gguf_model import load_gguf
        raw = load_gguf().tensor("blk.0.attn_q.weight").raw[:n_cols]
        q, words = bf.q4_1_from_gguf(raw)
        xq, xs = bf.quantise_mxint8(x)
        return {"xq": xq[0], "xs": xs[0, :n_blocks], "wq": q[:, :K],
                "words": words[:, :n_blocks].astype(np.uint32)}
    w = np.asarray(minilm.tensors()["encoder.layer.0.attention.self.query.weight"],
                   np.float64)[:n_cols, :K]
    if fmt == Fmt.NONE:
        from workloads import quant
        wq = quant.quantise_per_channel(w, 8).q
        xq = quant.quantise_per_token(x, 8).q
        return {"xq": np.asarray(xq[0], np.int64), "xs": np.zeros(n_blocks, np.int64),
                "wq": np.asarray(wq, np.int64),
                "words": np.zeros((n_cols, n_blocks), np.uint32)}
    qf = bf.quantise_bfp16 if fmt == Fmt.BFP16 else bf.quantise_mxint8
    xq, xs = qf(x)
    wq, e = qf(w)
    return {"xq": xq[0], "xs": xs[0], "wq": wq, "words": e.astype(np.uint32)}


def gemv_program(p: ChannelParams, fmt, tile: dict, *, scale_fmt=None) -> list[int]:
    """The channel commands of the tile (module doc).  ``scale_fmt`` (default ``fmt``) is
    the format the WR_SCALEs select (a different one tests the stage's rejection)."""
    fmt = fmt_of(fmt)
    sfmt = fmt if scale_fmt is None else fmt_of(scale_fmt)
    m, q = p.macro, p.post
    k, B, off = m.n_in, p.n_banks, (FORMATS[fmt].q_offset if fmt != Fmt.NONE else 0)
    xq, xs, wq, words = (np.asarray(tile[n]) for n in ("xq", "xs", "wq", "words"))
    nb = xq.size // k
    cmds = []
    for j in range(nb):
        s, g = j % m.n_sets, j % p.n_gbuf
        cmds.append(encode(p, Op.WR_INP, g=g, xs=int(xs[j]),
                           data=pack_vec([int(v) for v in xq[j * k:(j + 1) * k]], 8)))
        for b in range(B):
            cols = slice(b * m.n_out, (b + 1) * m.n_out)
            wcol = np.asarray(words[cols, j], "<u4")
            for part in range(q.chunks):
                ws = wcol[part * q.lanes:(part + 1) * q.lanes]
                cmds.append(encode(p, Op.WR_W, sc=1, bank=b, set=s, row=part, fmt=int(sfmt),
                                   data=int.from_bytes(ws.tobytes(), "little")))
            for r in range(k):
                cmds.append(encode(p, Op.WR_W, bank=b, set=s, row=r, data=pack_vec(
                    [int(v) - off for v in wq[cols, j * k + r]], m.w_bits)))
            cmds.append(encode(p, Op.MAC, bank=b, set=s, g=g, o=0, acc=int(j > 0)))
    for b in range(B):
        cmds.append(encode(p, Op.RD_OUT, bank=b, o=0))
    return cmds


def expected(fmt, tile: dict, block: int) -> np.ndarray:
    """The golden numerics' binary32 codes of the tile (model/blockfmt.py reduce_blocks)."""
    fmt = fmt_of(fmt)
    xq, xs, wq, words = (np.asarray(tile[n]) for n in ("xq", "xs", "wq", "words"))
    off = FORMATS[fmt].q_offset if fmt != Fmt.NONE else 0
    y = bf.block_dots(xq[None].astype(np.int64), wq.astype(np.int64) - off, block)[:, 0]
    xsum = xq.reshape(-1, block).sum(-1)
    codes, _ = bf.reduce_blocks(fmt, y, xs, xsum, words.T)
    return codes


def _ready(c: int) -> int:
    """out.ready pattern: low two cycles in every seven (back-pressure on RD_OUT)."""
    return int(c % 7 not in (3, 4))


def run_lockstep(p: ChannelParams, cmds, *, rtl: bool = False, fault: str | None = None,
                 limit: int = 200000) -> dict:
    """Drive ``cmds`` back to back (each held until ``cmd.ready``), ``out.ready`` from
    :func:`_ready`; stop when every command transferred, the channel is idle and the outputs
    are taken.  Returns dict(outs [payload], y [bank -> uint32 codes], ovf [bank], perr
    [(cycle, code)], cycles, mismatch (first differing cycle, rtl), compared).  With ``rtl``
    the out beats and ``perr`` recorded are the DUT's (the command flow is the model's)."""
    model = ChannelModel(p)
    model.reset(power_up=True)
    of = out_fields(p)
    res = {"outs": [], "perr": [], "mismatch": None, "compared": 0, "cycles": 0}

    def cycle_io(c, i, hw):
        v = int(i < len(cmds))
        pl = cmds[i] if v else 0
        return v, pl, _ready(c)

    def account(c, i, v, o, _perr, seen=None):
        """Record this cycle (``seen``: the DUT's outputs, whose out beats and perr are
        recorded; the command flow follows the model's ``o``)."""
        seen = o if seen is None else seen
        if seen["perr"]:
            res["perr"].append((c, seen["perr"]))
        if seen["out_valid"] and _ready(c):
            res["outs"].append(seen["out_payload"])
        return i + (1 if v and o["cmd_ready"] else 0)

    names = ("cmd_ready", "out_valid", "out_payload", "idle", "busy", "err")

    def finished(i, o):
        return i >= len(cmds) and o["idle"] and not o["out_valid"]

    if not rtl:
        i, c = 0, 0
        while c < limit:
            v, pl, rr = cycle_io(c, i, None)
            o = model.step(v, pl, rr)._asdict()
            o["perr"] = model.perr
            i = account(c, i, v, o, model.perr)
            c += 1
            if finished(i, o) and c > 1:
                break
        res["cycles"] = c
    else:
        from hdl.channel import PimChannel
        from tb.amsim import simulate
        dut = PimChannel(p, fault=fault)

        async def bench(ctx, _rst):
            i, c = 0, 0
            while c < limit:
                v, pl, rr = cycle_io(c, i, None)
                ctx.set(dut.cmd.valid, v)
                ctx.set(dut.cmd.payload.as_value(), pl)
                ctx.set(dut.out.ready, rr)
                hw = {"cmd_ready": ctx.get(dut.cmd.ready), "out_valid": ctx.get(dut.out.valid),
                      "out_payload": ctx.get(dut.out.payload.as_value()),
                      "idle": ctx.get(dut.idle), "busy": ctx.get(dut.busy),
                      "err": ctx.get(dut.err), "perr": ctx.get(dut.perr)}
                exp = model.step(v, pl, rr)._asdict()
                exp["perr"] = model.perr
                bad = {n: (hw[n], exp[n]) for n in names + ("perr",) if hw[n] != exp[n]}
                if bad and res["mismatch"] is None:
                    res["mismatch"] = f"cycle {c}: (rtl, model) {bad}"
                res["compared"] += 1
                i = account(c, i, v, exp, exp["perr"], hw)
                await ctx.tick()
                c += 1
                if finished(i, exp) and c > 1:
                    break
            res["cycles"] = c

        simulate(dut, bench)
    n = p.macro.n_out
    res["y"], res["ovf"] = {}, {}
    for pl in res["outs"]:
        d = unpack(of, pl)
        res["y"][d["bank"]] = np.frombuffer(d["y"].to_bytes(4 * n, "little"), "<u4").copy()
        res["ovf"][d["bank"]] = d["ovf"]
    return res
