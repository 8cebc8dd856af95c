"""The block post-processing stage behind a channel's banks (``ChannelParams.post``;
docs/channel.md, "Block post-processing stage"): a real GEMV tile per format through the
channel, the golden model and the HDL (amaranth.sim) compared every cycle, the result equal
to the golden numerics and to an exact rational reference; WR_SCALE errors; a broken stage
is caught; without ``post`` nothing changes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from spec.blockfmt import Fmt, PostErr, PostParams
from spec.isa import ChannelParams, ModuleParams, Op, cmd_fields, encode, out_fields
from spec.params import MacroParams
from tb.blockfmt_channel import expected, gemv_program, post_channel, real_tile, run_lockstep

# geometry per format: (n_in, w_bits); Q4_1 on 4-bit macro weights
GEOM = {Fmt.BFP16: (64, 8), Fmt.MXINT8: (32, 8), Fmt.Q4_1: (32, 4), Fmt.NONE: (64, 8)}
NB = 3           # blocks per reduction: sets 0, 1, 0 (a reload behind the stage's done)


def _ref():
    path = Path(__file__).resolve().parents[1] / "model" / "test_blockfmt_model.py"
    spec = importlib.util.spec_from_file_location("_bf_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rational(fmt, tile, block):
    """Per column: the exact rational reference (tests/model/test_blockfmt_model.py
    ``ref_apply``) of the block sequence, one rounding per term."""
    ref = _ref()
    xq, xs, wq, words = (np.asarray(tile[n]) for n in ("xq", "xs", "wq", "words"))
    off = 8 if fmt == Fmt.Q4_1 else 0
    out = []
    for c in range(wq.shape[0]):
        bits = 0
        for j in range(xq.size // block):
            xb = [int(v) for v in xq[j * block:(j + 1) * block]]
            y = sum(a * (int(w) - off) for a, w in zip(xb, wq[c, j * block:(j + 1) * block]))
            bits, _ = ref.ref_apply(fmt, bits, j > 0, y, int(xs[j]), sum(xb), int(words[c, j]))
        out.append(bits)
    return np.array(out, np.uint32)


def _got(p, r):
    return np.concatenate([r["y"][b] for b in range(p.n_banks)])


@pytest.mark.parametrize("fmt", list(GEOM), ids=lambda f: f.name)
def test_real_tile_rtl_lockstep_every_cycle(fmt):
    n_in, wb = GEOM[fmt]
    p = post_channel(n_in, wb)
    tile = real_tile(fmt, p.n_banks * p.macro.n_out, NB)
    r = run_lockstep(p, gemv_program(p, fmt, tile), rtl=True)
    assert r["mismatch"] is None and r["compared"] == r["cycles"] > 0
    got = _got(p, r)
    assert np.array_equal(got, expected(fmt, tile, n_in))
    assert np.array_equal(got, rational(fmt, tile, n_in))
    assert not r["perr"] and not any(r["ovf"].values())
    assert len(set(got.tolist())) > 8          # a real, non-degenerate tile


@pytest.mark.parametrize("fmt", list(GEOM), ids=lambda f: f.name)
def test_real_tile_model_is_close_to_float(fmt):
    """The block result is the real GEMV (cosine with float64 x . W.T of the dequantised
    operands above 0.999): the tile is not only self-consistent."""
    from model import blockfmt as bf
    n_in, wb = GEOM[fmt]
    p = post_channel(n_in, wb)
    tile = real_tile(fmt, p.n_banks * p.macro.n_out, NB)
    r = run_lockstep(p, gemv_program(p, fmt, tile))
    got = bf.fp32_value(_got(p, r))
    xq, xs, wq, words = (np.asarray(tile[n]) for n in ("xq", "xs", "wq", "words"))
    if fmt == Fmt.NONE:
        ref = wq.astype(np.float64) @ xq.astype(np.float64)
    else:
        x = bf.dequantise(Fmt.MXINT8 if fmt == Fmt.Q4_1 else fmt, xq[None], xs[None])[0]
        w = (bf.dequantise_q4_1(wq, words) if fmt == Fmt.Q4_1
             else bf.dequantise(fmt, wq, words))
        ref = w @ x
    cos = got @ ref / np.linalg.norm(got) / np.linalg.norm(ref)
    assert cos > 0.999999


def test_rejected_scale_writes_are_dropped():
    """On a 32-row 4-bit macro: a WR_SCALE selecting BFP16 (64-element blocks) is BAD_ALIGN,
    MXINT8 (needs 8-bit weights) BAD_WIDTH, a Q4_1 word with an fp16 infinity BAD_SCALE; each
    is reported on ``perr`` the cycle after it issues and changes nothing: the Q4_1 tile
    loaded before still gives its exact result.  RTL and model in lockstep."""
    p = post_channel(32, 4)
    tile = real_tile(Fmt.Q4_1, p.n_banks * p.macro.n_out, 2)
    prog = gemv_program(p, Fmt.Q4_1, tile)
    f = cmd_fields(p)
    bad = [encode(p, Op.WR_W, sc=1, bank=1, set=0, row=0, fmt=int(Fmt.BFP16), data=0x85),
           encode(p, Op.WR_W, sc=1, bank=0, set=1, row=1, fmt=int(Fmt.MXINT8), data=0x7F),
           encode(p, Op.WR_W, sc=1, bank=0, set=1, row=0, fmt=int(Fmt.Q4_1),
                  data=0x7C00 << 32)]
    # after the last MAC into each set (its scale words are in use), before the RD_OUTs
    macs = [i for i, c in enumerate(prog) if c & 3 == Op.MAC and not c >> f["sc"].offset & 1]
    prog = prog[:macs[-1] + 1] + bad + prog[macs[-1] + 1:]
    r = run_lockstep(p, prog, rtl=True)
    assert r["mismatch"] is None
    assert [e for _, e in r["perr"]] == [PostErr.BAD_ALIGN, PostErr.BAD_WIDTH,
                                         PostErr.BAD_SCALE]
    assert np.array_equal(_got(p, r), expected(Fmt.Q4_1, tile, 32))


def test_unsupported_format_everywhere_rejected():
    """A whole program whose WR_SCALEs select a format the macro cannot execute: every one
    is rejected (BAD_ALIGN), FMT stays NONE and the scale words 0, so the MACs run the
    integer path (NONE) on the same integers (model only)."""
    p = post_channel(32, 4)
    tile = real_tile(Fmt.Q4_1, p.n_banks * p.macro.n_out, 2)
    r = run_lockstep(p, gemv_program(p, Fmt.Q4_1, tile, scale_fmt=Fmt.BFP16))
    n_sw = 2 * p.n_banks * p.post.chunks
    assert [e for _, e in r["perr"]] == [PostErr.BAD_ALIGN] * n_sw
    none = dict(tile, xs=np.zeros(2, np.int64), words=np.zeros_like(tile["words"]))
    xq, wq = np.asarray(tile["xq"]), np.asarray(tile["wq"]).astype(np.int64) - 8
    assert np.array_equal(_got(p, r), expected(Fmt.NONE, dict(none, wq=wq), 32))
    assert r["outs"] and xq.size == 64


def test_broken_stage_is_caught():
    """``fault="post_bias_off"``: the banks' stages scale every term by 2 (an exponent bias
    off by one); the lockstep comparison reports it and the result is not the golden one.
    (The rounding faults ``post_trunc`` / ``post_no_sticky`` are invisible here: these short
    real reductions are exact in binary32, every sum fits 24 bits; they are caught by the
    stage's own tests, tests/hdl/test_hdl_blockfmt.py.)"""
    p = post_channel(32, 4)
    tile = real_tile(Fmt.Q4_1, p.n_banks * p.macro.n_out, NB)
    r = run_lockstep(p, gemv_program(p, Fmt.Q4_1, tile), rtl=True, fault="post_bias_off")
    assert r["mismatch"] is not None and "out_payload" in r["mismatch"]
    assert len(r["y"]) == p.n_banks
    assert not np.array_equal(_got(p, r), expected(Fmt.Q4_1, tile, 32))


def test_post_option_validated_and_layouts():
    mp = MacroParams(n_in=32, n_out=8, w_bits=8, x_bits=8, n_sets=2, n_acc=2, tree_stages=0)
    other = MacroParams(n_in=64, n_out=8, w_bits=8, x_bits=8, n_sets=2, n_acc=2,
                        tree_stages=0)
    small = MacroParams(n_in=8, n_out=8, w_bits=4, x_bits=4, n_sets=2, n_acc=2, tree_stages=0)
    for kw, match in (({"post": PostParams(other, lanes=2)}, "post.macro == macro"),
                      ({"macro": small, "post": PostParams(small, lanes=1)}, "chunks"),
                      ({"post": PostParams(mp, lanes=2), "bank_kind": "dram"}, "dimc"),
                      ({"post": 3}, "PostParams")):
        with pytest.raises(ValueError, match=match):
            ChannelParams(**{"macro": mp, **kw})
    p = ChannelParams(macro=mp, n_banks=2, post=PostParams(mp, lanes=2))
    base = ChannelParams(macro=mp, n_banks=2)
    cf, cb = cmd_fields(p), cmd_fields(base)
    assert [k for k in cf if k not in cb] == ["sc", "fmt", "xs"]
    assert cf["data"].offset == cb["data"].offset + 11
    assert out_fields(p)["y"].width == 8 * 32 and "ovf" in out_fields(p)
    assert p.window >= base.window and "_post2" in p.tag
    with pytest.raises(ValueError, match="sc=1 is only for WR_W"):
        encode(p, Op.MAC, sc=1)
    with pytest.raises(ValueError, match="row"):
        encode(p, Op.WR_W, sc=1, row=4)
    with pytest.raises(ValueError, match="post"):     # the module takes it, not with softmax
        ModuleParams(channel=p, n_ch=2, softmax=True)
    from hdl.channel import PimChannel
    with pytest.raises(ValueError, match="post_trunc"):
        PimChannel(base, fault="post_trunc")
    with pytest.raises(ValueError, match="not one of"):
        PimChannel(p, fault="post_bogus")


def test_verilog_ports_and_lint(tmp_path):
    """With ``post``: the ``perr`` port, the wider payloads, one ``blockfmt_stage`` per bank;
    lints clean (Verilator --lint-only)."""
    import re

    from hdl.channel import PimChannel
    from hdl.export import lint, verilog
    from spec.params import width
    p = post_channel(32, 4)
    text = verilog(PimChannel(p))
    for port, w in (("cmd__payload", width(cmd_fields(p))),
                    ("out__payload", width(out_fields(p))), ("perr", 3)):
        assert re.search(rf"\b(input|output)\s+(reg\s+)?\[{w - 1}:0\]\s+{port}\b", text), port
    f = tmp_path / "pim_channel.v"
    f.write_text(text)
    r = lint(f)
    assert r.returncode == 0, r.stdout + r.stderr
