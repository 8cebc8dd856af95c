"""Accuracy of the softmax unit on real attention (workloads/softmax_accuracy.py): MiniLM
layer 0 and SmolLM2 against float attention, cosine >= 0.99 per head; the one-digit limit
on a sink-plus-long-tail head; bad arguments."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spec.params import MacroParams  # noqa: E402
from spec.softmax import SoftmaxParams  # noqa: E402
from workloads import softmax_accuracy as sa  # noqa: E402

SP32 = SoftmaxParams.for_macro(MacroParams(n_in=32, n_out=32), max_context=1024, n_part=4)
SP64 = SoftmaxParams.for_macro(MacroParams(), max_context=4096, n_part=4)


@pytest.fixture(scope="module")
def dec():
    return sa.CaptureDecoder()


@pytest.mark.parametrize("digits", [1, 2])
def test_minilm_every_head_and_query(digits):
    rows = sa.head_cosines(sa.minilm_heads(all_queries=True), SP32, 4, digits=digits)
    assert len({r["head"] for r in rows}) == 12 and len(rows) == 12 * rows[0]["T"]
    assert min(r["cos_l"] for r in rows) >= 0.99
    assert min(r["cos_qsum"] for r in rows) >= 0.99


def test_smollm2_heads_two_digits(dec):
    items = sa.smollm2_heads(layers=(0, 1), n_tokens=160, decoder=dec)
    assert len(items) == 18 and items[0][4].shape == (160, 64)
    rows = sa.head_cosines(items, SP64, 4, digits=2)
    assert min(r["cos_l"] for r in rows) >= 0.99
    # TCP partitions change nothing but the rescale rounding of l
    for L, h, t, q, K, V in items[:3]:
        a, b = (sa.attention_fixed(q, K, V, SP64, P, digits=2) for P in (1, 4))
        assert np.array_equal(a["o_qsum"], b["o_qsum"])
        assert np.allclose(a["o_l"], b["o_l"], rtol=1e-3)


def test_report_of_a_small_study(dec):
    rep = sa.study(smollm2_layers=(0,), n_tokens=64, decoder=dec)
    assert set(rep) == {("minilm", 1), ("minilm", 2), ("smollm2", 1), ("smollm2", 2)}
    text = sa.report(rep)
    assert text.count("\n") == 3 and "smollm2 digits=2: 9 heads (T=64)" in text


def test_sink_and_long_tail_needs_the_second_digit(seed):
    """One token 6 nats above 3000 others: each tail probability is 127 e**-6 = 0.31 codes
    of the max, rounded to 0 with one digit (71 % of the mass lost); the second digit keeps
    it."""
    rng = np.random.default_rng(seed)
    T, d = 3000, 64
    q = rng.normal(size=d)
    K = rng.normal(size=(T, d)) * 0.01
    K[0] = q / (q @ q) * 6 * math.sqrt(d)                  # logit 6 for the sink
    V = rng.normal(size=(T, d)) + 1.0
    V[0] = -3.0
    ref = sa.float_attention(q, K, V)
    one = sa.attention_fixed(q, K, V, SP64, 4, digits=1)
    two = sa.attention_fixed(q, K, V, SP64, 4, digits=2)
    assert sa.cosine(one["o_l"], ref) < 0.9
    assert sa.cosine(two["o_l"], ref) >= 0.99 and sa.cosine(two["o_qsum"], ref) >= 0.99


def test_bad_arguments(dec):
    q, K, V = np.ones(4), np.ones((3, 4)), np.ones((3, 4))
    with pytest.raises(ValueError, match="sp="):
        sa.attention_fixed(q, K, V, "sp")
    with pytest.raises(ValueError, match="must be"):
        sa.attention_fixed(q, K, V[:2], SP64)
    with pytest.raises(ValueError, match="finite"):
        sa.float_attention(q * np.nan, K, V)
    with pytest.raises(ValueError, match="cosine: shapes"):
        sa.cosine(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="decoder="):
        sa.smollm2_heads(decoder="dec")
    with pytest.raises(ValueError, match="n_tokens=0"):
        sa.smollm2_heads(n_tokens=0, decoder=dec)
    with pytest.raises(ValueError, match="layer=30"):
        sa.smollm2_heads(layers=(30,), decoder=dec)
    with pytest.raises(ValueError, match="layers is empty"):
        dec.capture([1, 2], ())
    with pytest.raises(ValueError, match="digits=3"):
        sa.attention_fixed(q, K, V, SP64, digits=3)
