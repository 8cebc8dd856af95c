"""The block formats from the host (docs/module.md, "Block formats"): a module whose channels
have the block post-processing stage (``ChannelParams.post``).  A real GEMV tile per format
through the module golden model and the HDL (amaranth.sim) compared every cycle, bit-exact
with the golden numerics; malformed WR_SCALEs rejected with the command dropped and the state
intact; a WR_SCALE the stage rejects surfaced on ``perr`` / ``perr_ch``; the contract's
encodings (host fields, opcodes, out beat) and without ``post`` nothing changes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.module import ModuleModel
from spec.blockfmt import FMT_BITS, XS_BITS, Fmt, PostErr
from spec.isa import (HOST_WIDTHS, HostOp, ModErr, ModuleParams, host_encode, host_fields,
                      host_op_valid, mod_out_fields, out_fields)
from tb.blockfmt_channel import expected, real_tile
from tb.blockfmt_module import decode_y, gemv_program, post_module, run_lockstep

# geometry per format: (n_in, w_bits); Q4_1 on 4-bit macro weights
GEOM = {Fmt.BFP16: (64, 8), Fmt.MXINT8: (32, 8), Fmt.Q4_1: (32, 4), Fmt.NONE: (64, 8)}
NB = 3           # blocks per reduction: sets 0, 1, 0 (a reload behind the stage's done)


def _tile(p, fmt, nb=NB):
    return real_tile(fmt, p.n_ch * p.channel.n_banks * p.channel.macro.n_out, nb)


@pytest.mark.slow           # four module simulations, ~75 s in all
@pytest.mark.parametrize("fmt", list(GEOM), ids=lambda f: f.name)
def test_real_tile_module_rtl_lockstep_every_cycle(fmt):
    n_in, wb = GEOM[fmt]
    p = post_module(n_in, wb)
    tile = _tile(p, fmt)
    r = run_lockstep(p, gemv_program(p, fmt, tile), rtl=True)
    assert r["mismatch"] is None and r["compared"] == r["cycles"] > 0
    assert not r["errs"] and not r["perrs"]
    got, ovf = decode_y(p, r["outs"])
    assert len(r["outs"]) == p.n_ch * p.channel.n_banks and not any(ovf.values())
    assert np.array_equal(got, expected(fmt, tile, n_in))
    assert len(set(got.tolist())) > 8          # a real, non-degenerate tile


def _insert_before_last_macs(p, cmds, extra):
    """``cmds`` with ``extra`` before the last block's MACs (after its WR_SCALEs / WR_Ws)."""
    mac = [i for i, w in enumerate(cmds) if w & 0xF == HostOp.MAC]
    i = mac[-p.channel.n_banks]
    return cmds[:i] + extra + cmds[i:]


def test_malformed_wr_scale_dropped_state_intact():
    """Rejected WR_SCALEs (BAD_FIELD: part >= chunks, vp >= n_vpages, rid >= n_req;
    UNMAPPED; NOT_OWNER; BAD_OPCODE: a softmax opcode) and a WR_SCALE the stage rejects
    (a BFP16 scale on a 32-row macro: BAD_ALIGN on ``perr`` with ``perr_ch`` = channel 1)
    placed on the last block's pages just before its MACs: the module (model and HDL, every
    cycle) reports each, the result is the error-free one, bit for bit."""
    fmt = Fmt.MXINT8
    p = post_module(*GEOM[fmt])
    tile = _tile(p, fmt, 2)       # last block: set 1, pages vp = b * 2 + 1
    q = p.channel.post

    def H(op, **f):
        return host_encode(p, op, **f)

    ok = dict(rid=0, vp=1, row=0, fmt=int(fmt), data=0x7F7F)
    bad = [H(HostOp.WR_SCALE, chmask=1, **{**ok, "row": q.chunks}),        # BAD_FIELD
           H(HostOp.WR_SCALE, chmask=1, **{**ok, "vp": p.n_vpages}),       # BAD_FIELD
           H(HostOp.WR_SCALE, chmask=1, **{**ok, "rid": p.n_req}),         # BAD_FIELD
           H(HostOp.WR_SCALE, chmask=0b100, **ok),                          # BAD_FIELD
           H(HostOp.WR_SCALE, chmask=1, **{**ok, "vp": 7}),                # UNMAPPED
           H(HostOp.MAP, vp=6, pp=0, rid=1),                               # ALREADY_MAPPED
           H(HostOp.SM_CFG, chmask=1, rid=0),                              # BAD_OPCODE
           H(HostOp.WR_SCALE, chmask=0b10, **{**ok, "fmt": int(Fmt.BFP16)})]   # perr
    clean = gemv_program(p, fmt, tile)
    cmds = _insert_before_last_macs(p, clean, bad)
    want = [ModErr.BAD_FIELD] * 4 + [ModErr.UNMAPPED, ModErr.ALREADY_MAPPED, ModErr.BAD_OPCODE]
    r = run_lockstep(p, cmds, rtl=True)
    assert r["mismatch"] is None and r["compared"] == r["cycles"] > 0
    assert [c for _, c in r["errs"]] == want, r["errs"]
    assert [(e, ch) for _, e, ch in r["perrs"]] == [(PostErr.BAD_ALIGN, 0b10)], r["perrs"]
    got, _ = decode_y(p, r["outs"])
    assert np.array_equal(got, expected(fmt, tile, GEOM[fmt][0]))
    ref, _ = decode_y(p, run_lockstep(p, clean)["outs"])
    assert np.array_equal(got, ref)
    # NOT_OWNER: a page of rid 1 (the model; the HDL checks it like WR_W's)
    m = ModuleModel(p)
    m.reset(power_up=True)
    own = [H(HostOp.MAP, vp=0, pp=0, rid=1), H(HostOp.WR_SCALE, chmask=1, **{**ok, "vp": 0})]
    assert m.run([(w, 0) for w in own]).err_codes() == [ModErr.NOT_OWNER]


def test_xs_reaches_the_stage():
    """The host WR_INP's ``xs`` is the tile's exponent code: an E8M0 NaN (255) on an MXINT8
    block gives NaN columns (the golden numerics), and a different code a different
    result; model and HDL agree every cycle."""
    fmt = Fmt.MXINT8
    p = post_module(*GEOM[fmt])
    tile = _tile(p, fmt, 1)
    nan = {**tile, "xs": np.array([255])}
    r = run_lockstep(p, gemv_program(p, fmt, nan), rtl=True)
    assert r["mismatch"] is None and not r["errs"]
    got, _ = decode_y(p, r["outs"])
    assert np.array_equal(got, expected(fmt, nan, 32))
    assert np.all(got == 0x7FC00000)
    up = {**tile, "xs": tile["xs"] + 1}
    g1, _ = decode_y(p, run_lockstep(p, gemv_program(p, fmt, up))["outs"])
    g0, _ = decode_y(p, run_lockstep(p, gemv_program(p, fmt, tile))["outs"])
    assert np.array_equal(g1, expected(fmt, up, 32)) and not np.array_equal(g0, g1)


def test_contract_encodings():
    p = post_module(32, 8)
    cp = p.channel
    hf = host_fields(p)
    assert [n for n in hf][:len(HOST_WIDTHS)] == list(HOST_WIDTHS)
    assert (hf["fmt"].width, hf["xs"].width) == (FMT_BITS, XS_BITS)
    assert hf["data"].offset == sum(HOST_WIDTHS.values()) + FMT_BITS + XS_BITS
    of = mod_out_fields(p)
    assert list(of) == ["y", "bank", "o", "ovf", "chan"]
    assert all(of[n] == f for n, f in out_fields(cp).items())
    assert of["y"].width == cp.macro.n_out * 32
    assert host_op_valid(p, HostOp.WR_SCALE)
    assert not any(host_op_valid(p, o) for o in (10, 11, 12, 13, 14))
    wi = ModuleParams(channel=cp, n_ch=2, n_vpages=8, n_req=2, wide_inp=2)
    assert list(host_fields(wi))[-4:] == ["fmt", "xs", "multi", "data"]
    # without post: no fmt / xs, opcode 15 invalid, the INT8 out beat
    plain = ModuleParams()
    assert "xs" not in host_fields(plain) and not host_op_valid(plain, HostOp.WR_SCALE)
    same = dataclasses.replace(p, channel=dataclasses.replace(cp, post=None))
    assert list(mod_out_fields(same)) == ["y", "bank", "o", "chan"]
    assert mod_out_fields(same)["y"].width == cp.macro.n_out * cp.macro.acc_width
    m = ModuleModel(plain)
    m.reset(power_up=True)
    assert m.run([(host_encode(plain, 15), 0)]).err_codes() == [ModErr.BAD_OPCODE]
    with pytest.raises(ValueError, match="softmax"):
        ModuleParams(channel=cp, n_ch=2, softmax=True)


def test_multi_wr_inp_carries_xs():
    """wide_inp with post: a multi WR_INP gives every masked channel its tile and the one
    ``xs`` (model translation)."""
    from model.hostcmd import HostCmd
    from spec.isa import cmd_fields
    cp = post_module(32, 8).channel
    p = ModuleParams(channel=cp, n_ch=2, n_vpages=8, n_req=2, wide_inp=2)
    hc = HostCmd(p)
    db = cp.data_bits
    f = hc.fields(host_encode(p, HostOp.WR_INP, chmask=3, g=1, xs=131, multi=1,
                              data=5 | 9 << db))
    cf = cmd_fields(cp)
    words = hc.chan_cmds(f, [])
    for c, t in enumerate((5, 9)):
        assert (words[c] >> cf["xs"].offset) & 0xFF == 131
        assert (words[c] >> cf["data"].offset) == t
