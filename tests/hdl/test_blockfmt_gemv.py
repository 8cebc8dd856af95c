"""tb/blockfmt_gemv.py: a block GEMV played through the stage (cycle-exact model, and the RTL
in amaranth.sim in lockstep with it) gives the golden numerics' binary32 codes exactly."""
from __future__ import annotations

import numpy as np
import pytest

from model import blockfmt as bf
from tb.blockfmt_gemv import stage_gemv


def _operands(fmt, rng, n=16, k=128):
    x = rng.normal(size=(1, k)) * np.exp(rng.normal(size=k))
    w = rng.normal(size=(n, k)) * 0.05
    xq, xs = (bf.quantise_bfp16 if fmt == "bfp16" else bf.quantise_mxint8)(x)
    if fmt == "q4_1":
        wq, words = bf.quantise_q4_1(w)
    else:
        wq, e = (bf.quantise_bfp16 if fmt == "bfp16" else bf.quantise_mxint8)(w)
        words = e.astype(np.uint32)
    return xq[0], xs[0], wq, words


@pytest.mark.parametrize("fmt", ["bfp16", "mxint8", "q4_1"])
def test_model_stage_equals_numerics(fmt, seed):
    r = stage_gemv(fmt, *_operands(fmt, np.random.default_rng(seed)), n_out=8, lanes=2)
    assert r["exact"] and r["columns"] == 16 and r["tiles"] == 2 and not r["errs"]
    assert r["rtl"] is None and r["cycles"] > 0


@pytest.mark.parametrize("fmt", ["bfp16", "q4_1"])
def test_rtl_stage_in_lockstep(fmt, seed):
    r = stage_gemv(fmt, *_operands(fmt, np.random.default_rng(seed)), rtl=True, n_out=8,
                   lanes=2, tiles=1)
    assert r["exact"] and r["columns"] == 8
    assert r["rtl"]["mismatch"] is None and r["rtl"]["compared"] == r["cycles"] > 0


def test_a_wrong_scale_word_is_seen(seed):
    xq, xs, wq, words = _operands("mxint8", np.random.default_rng(seed), n=8)
    want = stage_gemv("mxint8", xq, xs, wq, words, n_out=8, lanes=2)["codes"]
    bad = words.copy()
    bad[3, 1] += 1                        # one block of column 3 scaled by 2
    got = stage_gemv("mxint8", xq, xs, wq, bad, n_out=8, lanes=2)["codes"]
    assert got[3] != want[3] and np.array_equal(np.delete(got, 3), np.delete(want, 3))


def test_bad_shape():
    xq, xs, wq, words = _operands("mxint8", np.random.default_rng(0), n=12)
    with pytest.raises(ValueError, match="multiple of n_out"):
        stage_gemv("mxint8", xq, xs, wq, words, n_out=8)
