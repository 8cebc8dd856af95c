"""Real-LLM workloads through the RTL (default macro), in lockstep with the golden model.

MiniLM layer-0 Q/K/V (real weights, real tokenised text, INT8) and a Llama-3.1-8B-shaped
attention-score GEMV: bit-exact against numpy integer matmul, and dequantised against float32
with cosine >= 0.999.  Mild random gaps and backpressure make the schedule irregular.
"""
from __future__ import annotations

import numpy as np
import pytest

from spec.params import MacroParams
from workloads.gemm import llama_attn_scores, minilm_qkv
from tb.build import describe_mismatch, run_lockstep

P = MacroParams()   # the demo's default macro: 64 x 64, 8-bit weights and inputs


def _run_gemm(g, label):
    res = run_lockstep(P, g.plan.stimulus, label=label)
    assert res["ok"], describe_mismatch(res)
    y = g.plan.decode(res["outputs"])
    diff = np.argwhere(y != g.plan.expected)
    assert len(diff) == 0, (f"{label}: RTL result differs from numpy at {diff[:5].tolist()} "
                            f"(seed {res['seed']})")
    return y, res


@pytest.mark.parametrize("proj", ["q", "k", "v"])
def test_minilm_qkv_through_rtl(proj, seed):
    wl = minilm_qkv(p=P, stim_seed=seed, wr_gap=1, req_gap=1, ready_p=0.85)
    g = wl.gemms[proj]
    y, res = _run_gemm(g, f"minilm_{proj}")
    cos = g.cosine(y)
    assert cos >= 0.999, f"MiniLM {proj}: cosine vs float32 {cos:.6f} < 0.999 (seed {seed})"
    # loose invariant: at least the weight-load and compute cycles of the plan
    assert res["cycles"] >= max(g.plan.n_wr, g.plan.n_req * P.x_bits)


def test_llama_attention_scores_through_rtl(seed):
    wl = llama_attn_scores(P, stim_seed=seed, wr_gap=2, req_gap=2, ready_p=0.7)
    g = wl.gemms["scores"]
    y, _ = _run_gemm(g, "llama_scores")
    cos = g.cosine(y)
    assert cos >= 0.999, f"Llama scores: cosine vs float32 {cos:.6f} < 0.999 (seed {seed})"
