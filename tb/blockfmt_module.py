"""A real block-format GEMV tile through a PIM module whose channels have the block
post-processing stage (``ModuleParams(channel=ChannelParams(post=...))``; docs/module.md,
"Block formats").

:func:`post_module` wraps :func:`tb.blockfmt_channel.post_channel` in a small module (two
channels, ``host_ready`` so that nothing is dropped).  :func:`gemv_program` builds the host
program of one token's ``y = x . W.T`` on ``n_ch * n_banks * n_out`` columns (channel c, bank
b computes columns ``(c*n_banks + b) * n_out ..``): MAP of every page (vp = pp, rid 0), then
per block j (set ``j % n_sets``, GBuf ``j % n_gbuf``) one multicast WR_INP with ``xs``, per
channel and bank the WR_SCALEs (one per part) and WR_Ws of its columns, one multicast MAC per
bank (``acc = j > 0``); then one multicast RD_OUT per bank.

:func:`run_lockstep` runs a host program on :class:`model.module.ModuleModel` and, with
``rtl=True``, on :class:`hdl.module.PimModule` in amaranth.sim: every output compared every
cycle (``host.ready``, ``out``, ``err``, ``ovf``, ``err_count``, ``idle``, ``busy``,
``perr``, ``perr_ch``).
"""
from __future__ import annotations

import numpy as np

from model.module import ModuleModel
from spec.blockfmt import FORMATS, Fmt, fmt_of
from spec.isa import HostOp, ModuleParams, host_encode, mod_out_fields
from spec.params import pack_vec, unpack
from tb.blockfmt_channel import post_channel

__all__ = ["post_module", "gemv_program", "run_lockstep", "decode_y"]


def post_module(n_in: int, w_bits: int = 8, *, n_ch: int = 2) -> ModuleParams:
    """A small module (``n_ch`` channels, 8 virtual pages, 2 request ids, FIFO 4, host_ready)
    of :func:`tb.blockfmt_channel.post_channel` channels."""
    return ModuleParams(channel=post_channel(n_in, w_bits), n_ch=n_ch, n_vpages=8, n_req=2,
                        fifo_depth=4, loop_len=2, host_ready=True)


def gemv_program(p: ModuleParams, fmt, tile: dict, *, scale_fmt=None) -> list[int]:
    """The host commands of the tile (module doc); ``scale_fmt`` (default ``fmt``) is the
    format the WR_SCALEs select."""
    fmt = fmt_of(fmt)
    sfmt = fmt if scale_fmt is None else fmt_of(scale_fmt)
    cp = p.channel
    m, q = cp.macro, cp.post
    k, B, S, C = m.n_in, cp.n_banks, m.n_sets, p.n_ch
    off = FORMATS[fmt].q_offset if fmt != Fmt.NONE else 0
    xq, xs, wq, words = (np.asarray(tile[n]) for n in ("xq", "xs", "wq", "words"))
    nb = xq.size // k
    allc = (1 << C) - 1

    def H(op, **f):
        return host_encode(p, op, **f)

    cmds = [H(HostOp.MAP, vp=pp, pp=pp, rid=0) for pp in range(p.n_pages)]
    for j in range(nb):
        s, g = j % S, j % cp.n_gbuf
        cmds.append(H(HostOp.WR_INP, chmask=allc, g=g, xs=int(xs[j]),
                      data=pack_vec([int(v) for v in xq[j * k:(j + 1) * k]], 8)))
        for c in range(C):
            for b in range(B):
                vp = b * S + s
                cols = slice((c * B + b) * m.n_out, (c * B + b + 1) * m.n_out)
                wcol = np.asarray(words[cols, j], "<u4")
                for part in range(q.chunks):
                    ws = wcol[part * q.lanes:(part + 1) * q.lanes]
                    cmds.append(H(HostOp.WR_SCALE, chmask=1 << c, rid=0, vp=vp, row=part,
                                  fmt=int(sfmt), data=int.from_bytes(ws.tobytes(), "little")))
                for r in range(k):
                    cmds.append(H(HostOp.WR_W, chmask=1 << c, rid=0, vp=vp, row=r,
                                  data=pack_vec([int(v) - off for v in wq[cols, j * k + r]],
                                                m.w_bits)))
        for b in range(B):
            cmds.append(H(HostOp.MAC, chmask=allc, rid=0, vp=b * S + s, g=g, o=0,
                          acc=int(j > 0)))
    for b in range(B):
        cmds.append(H(HostOp.RD_OUT, chmask=allc, rid=0, vp=b * S, o=0))
    return cmds


def decode_y(p: ModuleParams, outs) -> tuple[np.ndarray, dict]:
    """The columns' binary32 codes (channel-major, then bank) of the out beats ``outs`` of one
    RD_OUT per (channel, bank), and ``ovf`` per (chan, bank)."""
    of, n, B = mod_out_fields(p), p.channel.macro.n_out, p.channel.n_banks
    y, ovf = {}, {}
    for pl in outs:
        d = unpack(of, pl)
        key = d["chan"] * B + d["bank"]
        y[key] = np.frombuffer(d["y"].to_bytes(4 * n, "little"), "<u4").copy()
        ovf[(d["chan"], d["bank"])] = d["ovf"]
    return np.concatenate([y[i] for i in sorted(y)]), ovf


_NAMES = ("host_ready", "out_valid", "out_payload", "err", "ovf", "err_count", "idle", "busy",
          "perr", "perr_ch")


def _ready(c: int) -> int:
    """out.ready pattern: low two cycles in every seven (back-pressure on the out stream)."""
    return int(c % 7 not in (3, 4))


def run_lockstep(p: ModuleParams, cmds, *, rtl: bool = False, limit: int = 200000,
                 fault: str | None = None) -> dict:
    """Drive ``cmds`` back to back (each offered until it transfers; ``p.host_ready``),
    ``out.ready`` from :func:`_ready`; stop when every command transferred, the module is idle
    and its output register empty.  Returns dict(outs, errs [(cycle, code)], perrs [(cycle,
    perr, perr_ch)], cycles, compared, mismatch (first differing cycle, rtl)).  With ``rtl``
    the recorded outputs are the DUT's (the host flow is the model's)."""
    assert p.host_ready, "run_lockstep drives a module with host_ready"
    model = ModuleModel(p)
    model.reset(power_up=True)
    res = {"outs": [], "errs": [], "perrs": [], "mismatch": None, "compared": 0, "cycles": 0}

    def account(c, i, v, o, seen):
        if seen["out_valid"] and _ready(c):
            res["outs"].append(seen["out_payload"])
        if seen["err"]:
            res["errs"].append((c, seen["err"]))
        if seen["perr"]:
            res["perrs"].append((c, seen["perr"], seen["perr_ch"]))
        return i + (1 if v and o["host_ready"] else 0)

    def finished(i, o):
        return i >= len(cmds) and o["idle"] and not o["out_valid"]

    if not rtl:
        i = c = 0
        while c < limit:
            v = int(i < len(cmds))
            o = model.step(v, cmds[i] if v else 0, _ready(c))._asdict()
            i = account(c, i, v, o, o)
            c += 1
            if finished(i, o) and c > 1:
                break
        res["cycles"] = c
        return res

    from hdl.module import PimModule
    from tb.amsim import simulate
    dut = PimModule(p, fault=fault)
    ports = {"host_ready": dut.host.ready, "out_valid": dut.out.valid,
             "out_payload": dut.out.payload.as_value(), "err": dut.err, "ovf": dut.ovf,
             "err_count": dut.err_count, "idle": dut.idle, "busy": dut.busy, "perr": dut.perr,
             "perr_ch": dut.perr_ch}

    async def bench(ctx, _rst):
        i = c = 0
        while c < limit:
            v = int(i < len(cmds))
            pl, rr = (cmds[i] if v else 0), _ready(c)
            ctx.set(dut.host.valid, v)
            ctx.set(dut.host.payload.as_value(), pl)
            ctx.set(dut.out.ready, rr)
            hw = {n: ctx.get(s) for n, s in ports.items()}
            exp = model.step(v, pl, rr)._asdict()
            bad = {n: (hw[n], exp[n]) for n in _NAMES if hw[n] != exp[n]}
            if bad and res["mismatch"] is None:
                res["mismatch"] = f"cycle {c}: (rtl, model) {bad}"
            res["compared"] += 1
            i = account(c, i, v, exp, hw)
            await ctx.tick()
            c += 1
            if finished(i, exp) and c > 1:
                break
        res["cycles"] = c

    simulate(dut, bench)
    return res
