"""SmolLM2-135M through the module RTL: one decode step of layer 0 (every GEMV tile, the KV
append and the attention over a context of 257 tokens) on the reduced CI module
(``compiler.decoder.ci_module``: 2 channels x 4 banks of 64 x 64 INT8 macros, weights streamed
through the banks every step), in lockstep with the golden model every cycle (random output backpressure), and its results
bit-exact against the fast functional path the whole-model runs use."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from compiler.decoder import ci_module  # noqa: E402
from tb.smollm2_demo import rtl_layer_step  # noqa: E402
from workloads.gguf_model import load_gguf  # noqa: E402
from workloads.smollm2_pim import EVAL_TEXT, PimDecoder  # noqa: E402


@pytest.mark.verilator
@pytest.mark.parametrize("policy", ["TCP", "HFP"])
def test_rtl_smollm2_layer_step(seed, policy):
    m = load_gguf()
    dec = PimDecoder(m, max_context=320, partition=policy, record_layers=[0], timing=False)
    dec.prefill(m.encode(EVAL_TEXT)[:257])
    r = rtl_layer_step(dec, 0, ci_module(), seed=seed, ready_p=0.8, label=f"smollm2_{policy}")
    print(f"\nRTL {policy}: layer 0 step at context {r['context']} on {r['module']}: "
          f"{r['cycles']} cycles in {r['wall_s']} s = {r['cycles_per_s']} cycles/s in lockstep")
    assert r["ok"], r["mismatch"]
    assert r["mismatches"] == 0, r["bad"]
    assert r["context"] == 257 and r["mode"] == "streamed"
