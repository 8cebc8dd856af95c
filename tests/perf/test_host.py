"""perf/host.py: host and link time per decode step, against CENT's formulas worked by hand."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from perf.host import (CENT_CXL, CENT_HOST, SOURCES, HostParams, LinkParams, ModelShape,
                       allreduce_s, step_time, transfer_s)

# Llama-2-7B (CENT's Llama2-7B: embedding 4096, 32 heads, ffn 11008, 32 blocks, GQA 1)
L7 = ModelShape(hidden=4096, n_heads=32, n_kv_heads=32, head_dim=128, ffn=11008, vocab=32000,
                layers=32)
# CENT constants written out (cent_power_calculator.py), so the expected values below are
# hand arithmetic, not a run of the code under test.
F = 2e9
EXP = 32 * 1 + 11 + 1            # ACCEL_CYCLE["EXP"] = 44
VEC = 32 * 2 * 1 + 1 + 1         # ACCEL_CYCLE["VEC"] = 66
RV_SFT = 16 + 2 / 8 + 1          # RV_SFT_CYCLE_PIPELINE = 17.25
HOP = (25 * 4 + 30 * 2 + 20) * 1e-9          # one_hop_round_trip_latency = 180 ns
BW = 4 * 8 * 0.5 * 2**30                      # 4 lanes x 8 GiB/s x 0.5 (MULTICAST)


def test_cent_calculate_acc_latency_llama2_7b_4k():
    """run_sim.py calculate_acc_latency for Llama2-7B, 32 channels, seqlen 4096, per block."""
    r = step_time(L7, context=4096, channels=32)
    softmax = (4096 * 32 / 16 / 32 * EXP + 4096 * 32 / 16 / 32 * VEC + 32 * 1 + 32 * RV_SFT) / F
    rmsnorm = 2 * (4096 / 16 / 16 / 32 * VEC + 1 + 1 + 1 + 26) / F
    rope = (1 + 1 / 1) * 4096 * (3 / 8) / F
    assert r["ops"]["softmax"] == pytest.approx(32 * softmax, rel=1e-12)
    assert softmax == pytest.approx(28744 / F)                 # 256 x 110 + 32 + 552 cycles
    assert r["ops"]["rmsnorm"] == pytest.approx(32 * rmsnorm, rel=1e-12)
    assert r["ops"]["rope"] == pytest.approx(32 * rope, rel=1e-12)
    assert r["ops"]["sampling"] == pytest.approx(0.15e-3)     # InOut_latency, ms


def test_cent_vector_latency():
    """cxl_latency.py vector_latency(4096, 4 lanes): ceil(4096*2/64/3) = 43 flits of 256 B."""
    assert transfer_s(4096) == pytest.approx(HOP + 43 * 256 / BW, rel=1e-12)
    assert transfer_s(0) == 0.0
    assert CENT_CXL.hop_s == pytest.approx(180e-9)


def test_allreduce_ring_and_cent():
    n, t = 8192, 4
    chunk_flits = math.ceil(2048 * 2 / 64 / 3)                # 22
    ring = 2 * (t - 1) * (HOP + chunk_flits * 256 / BW)
    assert allreduce_s(n, t) == pytest.approx(ring, rel=1e-12)
    cent = LinkParams(allreduce="cent")
    gather = HOP + chunk_flits * (t - 1) * 256 / BW            # llama_latency gather
    bcast = HOP + math.ceil(8192 * 2 / 64 / 3) * 256 / BW      # llama_latency broadcast
    assert allreduce_s(n, t, cent) == pytest.approx(gather + bcast, rel=1e-12)
    assert allreduce_s(n, 1) == 0.0


def test_sums_kinds_and_stage():
    r = step_time(L7, context=1000, batch=3, tp=4, pp=2, channels=8, kv_quant=True)
    host = sum(v for k, v in r["ops"].items() if r["kind"][k] == "host")
    link = sum(v for k, v in r["ops"].items() if r["kind"][k] == "link")
    assert r["host_s"] == pytest.approx(host) and r["link_s"] == pytest.approx(link)
    assert {k for k, v in r["kind"].items() if v == "link"} == {"embedding", "allreduce",
                                                                "pipeline", "output"}
    for op in ("rmsnorm", "softmax", "rope", "residual", "swiglu", "kv_quant", "sampling"):
        assert r["kind"][op] == "host" and r["ops"][op] > 0
    # one stage = 16 of the 32 layers on the path, without sampling
    per_layer = sum(v for k, v in r["ops"].items() if r["kind"][k] == "host"
                    and k != "sampling") / 32
    assert r["stage"]["host_s"] == pytest.approx(16 * per_layer)
    vec = 3 * 4096
    assert r["stage"]["link_s"] == pytest.approx(2 * 16 * allreduce_s(vec, 4) + transfer_s(vec))


def test_softmax_linear_in_context_and_batch():
    ops = [step_time(L7, context=c)["ops"]["softmax"] for c in (1000, 2000, 3000)]
    assert ops[2] - ops[1] == pytest.approx(ops[1] - ops[0])
    # slope: 32 heads x 1000 tokens / 16 / 32 channels x (EXP + VEC) cycles, 32 layers
    assert ops[1] - ops[0] == pytest.approx(32 * 1000 * 32 / 16 / 32 * (EXP + VEC) / F)
    a = step_time(L7, context=512, batch=1)
    b = step_time(L7, context=512, batch=5)
    assert b["host_s"] == pytest.approx(5 * a["host_s"])   # every host op is per request
    assert b["link_s"] < 5 * a["link_s"]                   # the batch shares each hop latency


def test_pipeline_layers_and_transfers():
    r = step_time(L7, context=64, pp=3)                    # ceil(32/3) = 11 layers x 3 stages
    one = step_time(L7, context=64, pp=1)
    assert r["ops"]["rmsnorm"] == pytest.approx(one["ops"]["rmsnorm"] * 33 / 32)
    assert r["ops"]["pipeline"] == pytest.approx(2 * transfer_s(4096))
    assert one["ops"]["pipeline"] == 0.0 and one["ops"]["allreduce"] == 0.0


def test_tensor_parallel_split_and_kv_replication():
    s = ModelShape(hidden=8192, n_heads=64, n_kv_heads=8, head_dim=128, ffn=28672,
                   vocab=128256, layers=80)
    r = step_time(s, context=128, tp=16, channels=32)
    # rank: 4 query heads, 1 replicated KV head; RoPE on 8 cores (32 channels): 3 cycles/elem
    assert r["ops"]["rope"] == pytest.approx(80 * (4 + 1) * 128 * 3 / 8 / F)
    # SwiGLU over 28672 / 16 = 1792 columns: EXP per 16 x 32, three VEC per 256 x 32
    assert r["ops"]["swiglu"] == pytest.approx(
        80 * (1792 / 512 * EXP + 3 * 1792 / 8192 * VEC) / F)
    assert r["ops"]["allreduce"] == pytest.approx(80 * 2 * allreduce_s(8192, 16))


def test_kv_quant_and_lm_head():
    r = step_time(L7, context=10, kv_quant=True)
    # 2 VEC passes over 2 x 32 x 128 elements (256 x 32 per op) + 64 reductions of 3 cycles
    assert r["ops"]["kv_quant"] == pytest.approx(32 * (2 * 8192 / 8192 * VEC + 64 * 3) / F)
    assert step_time(L7, context=10)["ops"]["kv_quant"] == 0.0
    assert r["ops"]["output"] == pytest.approx(transfer_s(32000))
    assert step_time(L7, context=10, lm_head="host")["ops"]["output"] == \
        pytest.approx(transfer_s(4096))


def test_fewer_channels_share_a_shorter_pipeline():
    # 8 channels: 8 accelerators behind the buffer (EXP 8 + 11 + 1 = 20), 8 x 16 per op
    r = step_time(L7, context=2048, channels=8)
    sm = (2048 * 32 / 16 / 8 * (20 + 18) + 32 * (1 + RV_SFT)) / F
    assert r["ops"]["softmax"] == pytest.approx(32 * sm)


def test_constants_carry_sources():
    r = step_time(L7, context=8)
    assert set(r["constants"]) == set(SOURCES)
    for name, c in r["constants"].items():
        assert c["source"] and c["unit"], name
    assert "cent_power_calculator.py" in r["constants"]["exp_lane_cycle"]["source"]
    assert "cxl_latency.py" in r["constants"]["cxl_port_ns"]["source"]
    mine = replace(CENT_HOST, name="fast", freq_hz=4e9)
    src = step_time(L7, context=8, host=mine)["constants"]["freq_hz"]
    assert src["value"] == 4e9 and "set by caller 'fast'" in src["source"]
    assert r["assumptions"]


@pytest.mark.parametrize("kw, name", [
    (dict(freq_hz=0), "freq_hz"), (dict(rv_count=1.5), "rv_count"),
    (dict(sample_s=float("nan")), "sample_s"), (dict(score_elems=True), "score_elems"),
])
def test_host_params_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        HostParams(**kw)


@pytest.mark.parametrize("kw, name", [
    (dict(allreduce="tree"), "allreduce"), (dict(multicast=1), "multicast"),
    (dict(lanes=0), "lanes"), (dict(cxl_port_ns=-1.0), "cxl_port_ns"),
])
def test_link_params_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        LinkParams(**kw)


@pytest.mark.parametrize("kw, name", [
    (dict(hidden=0), "hidden"), (dict(n_kv_heads=5), "n_kv_heads"), (dict(layers=2.0), "layers"),
])
def test_model_shape_validation(kw, name):
    base = dict(hidden=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn=128, vocab=100, layers=2)
    with pytest.raises(ValueError, match=name):
        ModelShape(**{**base, **kw})


@pytest.mark.parametrize("kw, name", [
    (dict(context=0), "context"), (dict(batch=0), "batch"), (dict(tp=0), "tp"),
    (dict(tp=33), "tp=33"), (dict(pp=33), "pp"), (dict(channels=0), "channels"),
    (dict(kv_quant="yes"), "kv_quant"), (dict(lm_head="cpu"), "lm_head"),
    (dict(allreduces_per_layer=-1), "allreduces_per_layer"), (dict(shape="7b"), "shape"),
    (dict(host=CENT_CXL), "host"), (dict(link=CENT_HOST), "link"),
])
def test_step_time_validation(kw, name):
    args = dict(shape=L7, context=16)
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        step_time(**args)


@pytest.mark.parametrize("call, name", [
    (lambda: transfer_s(-1), "n_values"), (lambda: transfer_s(10, CENT_HOST), "link"),
    (lambda: allreduce_s(10, 0), "ranks"), (lambda: allreduce_s(1.5, 2), "n_values"),
    (lambda: allreduce_s(10, 2, "ring"), "link"),
])
def test_link_function_validation(call, name):
    with pytest.raises(ValueError, match=name):
        call()
