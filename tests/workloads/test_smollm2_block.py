"""workloads/smollm2_block.py and ``cimphony generate --format``: SmolLM2 with block-format
weight GEMVs generates like float, and the recorded GEMVs replay exactly through the stage
(cycle-exact model and RTL)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workloads.gguf_model import load_gguf  # noqa: E402
from workloads.smollm2_block import BlockPimDecoder  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return load_gguf()


@pytest.mark.slow
def test_block_decoder_checks(model):
    dec = BlockPimDecoder("bfp16", model, 64, check_layers=(1,))
    dec.recording = True
    ids = model.encode("The capital of France is")
    nxt = int(dec.prefill(ids)[-1].argmax())
    assert model.decode([nxt]).strip() == "Paris"
    dec.step(nxt)
    (g,) = dec.check(1, gemvs=("k",))
    assert (g["columns"], g["of"], g["mismatches"], g["rtl"]) == (192, 192, 0, None)
    (r,) = dec.check(1, rtl=True)
    assert r["gemv"] == "q" and r["columns"] == 64 and r["mismatches"] == 0
    assert r["rtl"]["mismatch"] is None
    with pytest.raises(ValueError, match="no recorded step"):
        dec.check(0)
    with pytest.raises(ValueError, match="fmt='int4'"):
        BlockPimDecoder("int4", model)


@pytest.mark.slow
def test_generate_format_q4_1(model, monkeypatch, capsys):
    import json

    from cimphony.cli import main
    from workloads import gguf_model
    monkeypatch.setattr(gguf_model, "load_gguf", lambda *a, **k: model)
    assert main(["generate", "--format", "q4_1", "--prompt", "The capital of France is",
                 "--tokens", "2", "--json", "--no-progress", "--max-context", "64"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["format"] == "q4_1" and "Paris" in r["text"] and r["mismatches"] == 0
    assert any("no module program" in e for e in r["emulated"])
    assert r["cost"]["w_bits_per_weight"] == 5.0 and r["macro_cycles_per_token"] > 0
