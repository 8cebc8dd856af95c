"""perf/softmax_unit.py: the with/without-softmax-unit costs follow the unit's contract (its
cycles and beat counts equal the golden model's on random heads) and feed the perf report."""
from __future__ import annotations

import numpy as np
import pytest

from model.softmax import SoftmaxModel, score_beats
from perf import report
from perf import softmax_unit as SU
from perf.host import ModelShape
from spec.params import width
from spec.softmax import SoftmaxParams, cfg_encode, res_fields

SHAPE = ModelShape(hidden=4096, n_heads=32, n_kv_heads=8, head_dim=128, ffn=14336,
                   vocab=128256, layers=32)


@pytest.mark.parametrize("T, parts, digits", [(1, 1, 1), (37, 2, 2), (64, 4, 1), (29, 4, 2)])
def test_head_cost_is_the_golden_models_cycles(T, parts, digits, seed):
    sp = SoftmaxParams(score_bits=16, n_lanes=4, tile=8, max_context=64, n_part=4)
    rng = np.random.default_rng(seed)
    s = rng.integers(-2000, 2000, T)
    cmd = cfg_encode(sp, 3000, 12, parts.bit_length() - 1, 0, T, digits - 1)
    beats = score_beats(s, sp, parts)
    r = SoftmaxModel(sp).run([cmd], beats)
    h = SU.head_cost(T, sp, parts, digits)
    assert (h["beats"], h["tiles"]) == (len(beats), len(r["tiles"]))
    assert r["cycles"] == h["unit_cycles"] + 1 and not r["errs"]      # CFG in cycle 0
    assert h["without_up_bits"] == len(beats) * sp.n_lanes * sp.score_bits if digits == 1 \
        else h["without_up_bits"] > 0


def test_head_cost_segments_and_bits():
    sp = SoftmaxParams()                                   # N = 4096, A = 28, NO = NI = 64
    h = SU.head_cost(10000, sp, 4, 1)
    assert h["segments"] == 3
    assert h["without_up_bits"] >= 10000 * 28 and h["without_down_bits"] >= 10000 * 8
    assert h["with_up_bits"] == 3 * width(res_fields(sp)) and h["with_round_trips"] == 0
    with pytest.raises(ValueError, match="parts"):
        SU.head_cost(10, sp, 8)


def test_step_cost_with_is_cheaper_and_scales_with_context():
    a, b = (SU.step_cost(SHAPE, c, batch=2) for c in (4096, 32768))
    for s in (a, b):
        assert s["with_host_bytes"] * 100 < s["without_host_bytes"]
        assert (s["without_round_trips"], s["with_round_trips"]) == (32, 0)
        assert s["with_host_s"] < s["without_host_s"] and s["unit_s"] > 0
    assert b["without_host_bytes"] == pytest.approx(8 * a["without_host_bytes"], rel=0.01)
    assert b["with_host_bytes"] == a["with_host_bytes"]        # one res beat per head


def test_with_without_rows_and_report_section():
    from compiler import llm
    cfg = llm.load_config("llama-3.1-8b")
    row = dict(status="ok", policy="all", system="dimc", model="llama-3.1-8b", ctx=4096,
               batch=4, micro_batch=4, tp=1, pp=1, ch_per_rank=32, contexts_mean=4000.0,
               token_s=0.05, host_ops={"softmax": 0.004})
    w = SU.with_without_rows([row, dict(row, policy="baseline"), dict(row, status="x")],
                             {"llama-3.1-8b": cfg})
    assert len(w) == 1
    w = w[0]
    assert w["with_token_s"] == pytest.approx(0.05 - 0.004 + w["with_host_s"] + w["unit_s"])
    text = "\n".join(report.softmax_section([row], ["llama-3.1-8b"]))
    assert "With vs without the hub's softmax unit" in text and "| dimc | llama-3.1-8b |" in text
    assert report.softmax_section([dict(row, host_ops=None) | {"status": "x"}], []) == []
