"""The block-format accuracy study (workloads/blockquant.py): its GEMVs are the stage's
numerics, the costs follow from the formats' definitions, and on real weights (MiniLM layer 0,
SmolLM2) every format stays close to float."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from model import blockfmt as bf  # noqa: E402
from workloads import blockquant as bq  # noqa: E402


@pytest.fixture(scope="module")
def minilm_rows():
    return bq.gemv_study(bq.minilm_gemvs())


@pytest.mark.parametrize("fmt", ["bfp16", "mxint8", "q4_1"])
def test_linear_is_the_stage_within_its_rounding_bound(fmt, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 192)) * np.exp(rng.normal(size=192))     # uneven channels
    w = rng.normal(size=(5, 192)) * 0.05
    pw = bq.prepare(fmt, w)
    y = bq.linear(pw, x).astype(np.float64)
    block = 64 if fmt == "bfp16" else 32
    xq, xs = (bf.quantise_bfp16 if fmt == "bfp16" else bf.quantise_mxint8)(x)
    xd = bf.dequantise("BFP16" if fmt == "bfp16" else "MXINT8", xq, xs)
    wd = bf.dequantise_q4_1(pw.codes, pw.scales) if fmt == "q4_1" else \
        bf.dequantise(fmt.upper(), pw.codes, pw.scales.astype(np.uint8))
    exact = xd @ wd.T
    wabs = np.abs(wd)
    if fmt == "q4_1":                                              # |d| q + |m|: both terms
        d, m = (np.abs(bf.dequantise_q4_1(np.full_like(pw.codes, c), pw.scales)) for c in (1, 0))
        wabs = np.abs(d - m) * pw.codes + m
    steps = (192 // block) * (2 if fmt == "q4_1" else 1)           # one rounding per add
    bound = 1.01 * steps * 2.0 ** -24 * (np.abs(xd) @ wabs.T)
    assert np.all(np.abs(y - exact) <= bound)
    codes, _ = bf.block_matmul(fmt, xq, xs, pw.codes, pw.scales)
    assert np.array_equal(y, bf.fp32_value(codes))


def test_int8_linear_is_exact_integer_gemm(seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(2, 96)), rng.normal(size=(4, 96))
    pw = bq.prepare("int8", w)
    qx = np.clip(np.rint(x / (np.abs(x).max(1, keepdims=True) / 127)), -127, 127)
    want = (qx @ pw.codes.T) * (np.abs(x).max(1, keepdims=True) / 127) * pw.scales
    assert np.allclose(bq.linear(pw, x), want, rtol=1e-6)


def test_costs_follow_the_format_definitions():
    shapes = [(1536, 576), (576, 1536)]
    for fmt, block, wbits, elem, scale in (("bfp16", 64, 8, 8, 8), ("mxint8", 32, 8, 8, 8),
                                           ("q4_1", 32, 4, 4, 32)):
        c = bq.costs(fmt, shapes)
        assert c["w_bits_per_weight"] == elem + scale / block
        assert c["x_bits_per_input"] == 8 + 8 / block
        assert (c["macro_n_in"], c["macro_w_bits"]) == (block, wbits)
        assert c["macro_cycles"] == sum(math.ceil(k / block) * math.ceil(n / 64) * 8
                                        for n, k in shapes)
        assert c["macs_per_cycle"] == block * 64 // 8
    c = bq.costs("int8", [(576, 576)])
    assert c["w_bits_per_weight"] == round(8 + 32 / 576, 4) and c["post_adds_per_block"] == 0
    assert bq.costs("q4_1")["post_adds_per_block"] == 2


def test_minilm_layer0_accuracy(minilm_rows):
    assert {r["gemv"] for r in minilm_rows} == {"q", "k", "v", "o", "ffn1", "ffn2"}
    cos = {f: [r["cosine"] for r in minilm_rows if r["fmt"] == f] for f in bq.FORMATS_STUDIED}
    for f in ("int8", "bfp16", "mxint8"):
        assert min(cos[f]) > 0.999, f
    assert min(cos["q4_1"]) > 0.995                   # 4-bit weights: the coarsest
    assert np.mean(cos["mxint8"]) > np.mean(cos["bfp16"])     # finer blocks, finer scales
    assert max(cos["q4_1"]) < min(cos["mxint8"])


@pytest.mark.slow
def test_smollm2_gemvs_native_q4_1_and_teacher_forced():
    g = bq.smollm2_gemvs(layers=(0,), max_tokens=6)
    assert set(g) == {(0, n) for n in ("q", "k", "v", "o", "gate", "up", "down")}
    x, w, raw = g[(0, "up")]
    pw = bq.prepare("q4_1", w, raw)
    assert np.array_equal(bf.dequantise_q4_1(pw.codes, pw.scales).astype(np.float32), w)
    rows = bq.gemv_study({k: g[k] for k in ((0, "up"), (0, "v"))})
    assert all(r["cosine"] > 0.998 for r in rows), rows
    assert all(r["cosine"] > 0.9995 for r in rows if r["fmt"] == "q4_1")   # inputs only
    r = bq.teacher_forced("The capital of France is Paris, and", formats=("q4_1",),
                          max_tokens=6, n_layers=4)
    assert (r["tokens"], r["layers"]) == (6, 4) and r["q4_1"]["top1_agree"] >= 0.6
    assert abs(math.log(r["q4_1"]["ppl"]) - math.log(r["float"]["ppl"])) < 0.3
    res = {"costs": {f: bq.costs(f) for f in bq.FORMATS_STUDIED},
           "minilm_layer0": [{"fmt": f, "cosine": 1.0} for f in bq.FORMATS_STUDIED],
           "smollm2_gemvs": [{"fmt": f, "cosine": 1.0} for f in bq.FORMATS_STUDIED],
           "smollm2_teacher_forced": r}
    table = bq.to_markdown(res)
    assert "| q4_1 | 5.000 |" in table and f"{r['q4_1']['ppl']:.3f}" in table


@pytest.mark.parametrize("fn,args,match", [
    (bq.prepare, ("fp8", np.ones((2, 32))), "fmt='fp8'"),
    (bq.prepare, ("int8", np.ones(32)), "2-D"),
    (bq.prepare, ("q4_1", np.ones((1, 64)), np.zeros((1, 20), np.uint8)), "holds"),
    (bq.prepare, ("mxint8", np.ones((2, 48))), "multiple of the block size 32"),
    (bq.linear, (bq.prepare("mxint8", np.ones((2, 32))), np.ones((1, 64))), "does not match"),
    (bq.cosine, (np.ones(3), np.ones(4)), "shapes"),
    (bq.costs, ("int4",), "fmt='int4'"),
    (bq.BlockDecoder, ("bf16",), "fmt='bf16'"),
    (bq.smollm2_gemvs, ((30,),), "layers=\\(30,\\)"),
    (bq.teacher_forced, ("Hello there", (), None, 8, 0), "n_layers=0"),
])
def test_bad_arguments(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_teacher_forced_needs_two_tokens():
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        bq.teacher_forced("Hello", formats=(), max_tokens=1)
