"""The channel with the block post-processing stage (``ChannelParams.post``) in Verilator, in
lockstep with the golden model: every output (``perr`` included, tb/probespec.py ``channel``)
compared in every cycle, a real MXINT8 GEMV tile (MiniLM layer 0, three blocks: a weight set
reloaded behind the stage) under seeded out backpressure, then a WR_SCALE the stage rejects
(a BFP16 scale on a 32-row macro: BAD_ALIGN on ``perr``) that changes nothing."""
from __future__ import annotations

import numpy as np
import pytest

from spec.blockfmt import Fmt, PostErr
from spec.isa import Op, encode, out_fields
from spec.params import unpack
from tb.blockfmt_channel import expected, gemv_program, post_channel, real_tile, run_lockstep
from tb.build import Target, describe_mismatch, run_channel_lockstep

pytestmark = pytest.mark.verilator

P = post_channel(32, 8)          # MXINT8 geometry: 32 rows, 8 columns per bank, 2 banks


@pytest.mark.xdist_group(Target("channel", P).name)
def test_post_channel_real_tile_lockstep(seed):
    tile = real_tile(Fmt.MXINT8, P.n_banks * P.macro.n_out, 3)
    bad = encode(P, Op.WR_W, sc=1, bank=0, set=0, row=0, fmt=int(Fmt.BFP16), data=0x7F7F)
    cmds = gemv_program(P, Fmt.MXINT8, tile) + [bad]
    ref = run_lockstep(P, cmds)                        # the golden model alone
    assert [c for _, c in ref["perr"]] == [PostErr.BAD_ALIGN], ref["perr"]
    res = run_channel_lockstep(P, [(c, 0) for c in cmds], out_ready_p=0.7, seed=seed,
                               label="post")
    assert res["ok"], describe_mismatch(res)
    of, n = out_fields(P), P.macro.n_out
    y = {}
    for pl in res["outputs"]:
        d = unpack(of, pl)
        assert d["ovf"] == 0
        y[d["bank"]] = np.frombuffer(d["y"].to_bytes(4 * n, "little"), "<u4")
    got = np.concatenate([y[b] for b in range(P.n_banks)])
    assert np.array_equal(got, expected(Fmt.MXINT8, tile, P.macro.n_in))
    assert len(set(got.tolist())) > 8
