"""SmolLM2-135M through the module RTL: one decode step of layer 0 (every GEMV tile, the KV
append and the attention over a context of 257 tokens) on the reduced CI module
(``compiler.decoder.ci_module``: 4 channels x 2 banks of 16 x 16 INT8 macros, weights
streamed through the banks every step), in lockstep with the golden model every cycle (random
output backpressure), and its results bit-exact against the fast functional path the
whole-model runs use."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from compiler.decoder import ci_module  # noqa: E402
from tb.smollm2_demo import rtl_layer_step  # noqa: E402
from workloads.gguf_model import load_gguf  # noqa: E402
from workloads.smollm2_pim import EVAL_TEXT, PimDecoder  # noqa: E402


@pytest.mark.verilator
def test_rtl_smollm2_layer_step(seed):
    """TCP (HFP's commands differ only in their channel masks and pages; both policies are
    checked on the golden model in tests/workloads/test_smollm2_pim.py)."""
    m = load_gguf()
    dec = PimDecoder(m, max_context=320, partition="TCP", record_layers=[0], timing=False)
    dec.prefill(m.encode(EVAL_TEXT)[:257])
    r = rtl_layer_step(dec, 0, ci_module(), seed=seed, ready_p=0.8, label="smollm2_tcp")
    print(f"\nRTL TCP: layer 0 step at context {r['context']} on {r['module']}: "
          f"{r['cycles']} cycles in {r['wall_s']} s = {r['cycles_per_s']} cycles/s in lockstep")
    assert r["ok"], r["mismatch"]
    assert r["mismatches"] == 0, r["bad"]
    assert r["context"] == 257 and r["mode"] == "streamed"
