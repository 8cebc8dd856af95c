"""SmolLM2-135M on the accelerator: the fast functional path is bit-exact against the
cycle-exact module model, the performance model times the step exactly, and the decoder's
quality and command line.

The real model is loaded once per module; the GEMV codes are quantised once (module-scoped
decoder).
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cimphony.cli import main  # noqa: E402
from compiler.decoder import (ORDER, LayerProgram, LayerShape, ModuleSession,  # noqa: E402
                              StepTrace, act_qmax, attention_step, ci_module, gemv_int,
                              quantise_acts, quantise_kv, smollm2_module, split_digits,
                              step_cycles)
from compiler.decoder.numerics import wrap  # noqa: E402
from spec.isa import ChannelParams, ModuleParams  # noqa: E402
from spec.params import MacroParams  # noqa: E402
from workloads.gguf_model import load_gguf  # noqa: E402
from workloads.smollm2 import FloatDecoder  # noqa: E402
from workloads.smollm2_pim import EVAL_TEXT, PimDecoder, teacher_forced  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return load_gguf()


@pytest.fixture(scope="module")
def pim(model):
    return PimDecoder(model, max_context=512, record_layers=[0])


# ---- numerics ------------------------------------------------------------------------------
def test_digits_roundtrip_and_range(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, 300)) * np.exp(rng.normal(size=(5, 1)) * 3)
    for digits in (1, 2):
        q = quantise_acts(x, digits)
        assert np.abs(q.q).max() == act_qmax(digits)          # the row maximum hits qmax
        d = split_digits(q.q, digits)
        assert d.min() >= -128 and d.max() <= 127 and np.abs(d[0]).max() <= 127
        back = sum(d[j].astype(np.int64) << (8 * (digits - 1 - j)) for j in range(digits))
        assert np.array_equal(back, q.q)
        err = np.abs(q.dequantise() - x).max(axis=1) / np.abs(x).max(axis=1)
        assert np.all(err <= 0.5 / act_qmax(digits) + 1e-12)


def test_gemv_int_wraps_like_the_accumulator(seed):
    """A macro with a 1-tile accumulator guard: a part of 4 chunks can wrap; gemv_int must give
    the per-part wrapped sums, which differ from the exact product here."""
    rng = np.random.default_rng(seed)
    m = MacroParams(n_in=16, n_out=16, w_bits=8, x_bits=8, acc_guard=0)
    W = np.full((8, 128), 127)
    W[:, ::3] = rng.integers(-127, 128, (8, 43))
    x = np.full((1, 128), -32639)                             # two digits, large
    parts = [(0, 64), (64, 128)]
    got = gemv_int(x, W, 2, m, parts)
    from compiler.decoder.numerics import digit_weights
    d = split_digits(x, 2)
    want = sum(pv * sum(wrap(d[j][:, a:b] @ W[:, a:b].T, m.acc_width) for a, b in parts)
               for j, pv in enumerate(digit_weights(2)))
    assert np.array_equal(got, want)
    assert not np.array_equal(got, x @ W.T)


def test_attention_step_matches_float_attention(seed):
    rng = np.random.default_rng(seed)
    H, g, L, d = 2, 3, 40, 64
    k, v = rng.normal(size=(H, L, d)), rng.normal(size=(H, L, d))
    q = rng.normal(size=(H, g, d)) * 2
    kq, ks, vq, vs = quantise_kv(k, v)
    a = attention_step(q, kq, ks, vq, vs)
    assert np.array_equal(a.scores, np.einsum("hgd,hld->hgl", a.qq, kq))
    assert np.array_equal(a.acc, np.einsum("hgl,hld->hgd", a.wq, vq))
    s = np.einsum("hgd,hld->hgl", q, k) / math.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    ref = np.einsum("hgl,hld->hgd", p / p.sum(-1, keepdims=True), v)
    assert np.abs(a.o - ref).max() < 0.05 * np.abs(ref).max()


# ---- compiler variants on a small layer: golden model == fast path, perf model == golden ----
TINY = LayerShape(hidden=128, n_heads=4, n_kv_heads=2, head_dim=64, ffn=192)


def _random_trace(rng, lp, T_hist_codes):
    sh, m = lp.shape, lp.p.channel.macro
    x = {g: quantise_acts(rng.normal(size=(1, sh.dims(g)[1])), lp.digits).q[0] for g in ORDER}
    y = {g: gemv_int(x[g][None], lp.weights[g], lp.digits, m,
                     lp.plans[g].part_ranges(m.n_in))[0] for g in ORDER}
    kn, kns, vn, vns = quantise_kv(rng.normal(size=(sh.n_kv_heads, 1, 64)),
                                   rng.normal(size=(sh.n_kv_heads, 1, 64)))
    kq, ks, vq, vs = T_hist_codes
    cat = lambda a, b: np.concatenate([a, b], 1)  # noqa: E731
    at = attention_step(rng.normal(size=(sh.n_kv_heads, sh.group, 64)), cat(kq, kn),
                        cat(ks, kns), cat(vq, vn), cat(vs, vns))
    hist = (cat(kq, kn), cat(ks, kns), cat(vq, vn), cat(vs, vns))
    return StepTrace(x, y, (kn[:, 0], kns[:, 0], vn[:, 0], vns[:, 0]), at), hist


@pytest.mark.parametrize("partition,alloc,loop,digits,T0", [
    ("TCP", "dpa", False, 2, 127), ("HFP", "dpa", True, 2, 63), ("TCP", "static", True, 1, 5),
    ("HFP", "static", False, 1, 64)])
def test_layer_program_bit_exact_and_timed(seed, partition, alloc, loop, digits, T0):
    """Two steps (crossing a key-block boundary) of a small layer on the CI module: every
    integer the golden model returns equals the fast path's, the KV pages grow, and the
    performance model's step cycles equal the golden model's."""
    rng = np.random.default_rng(seed)
    p = ci_module()
    lp = LayerProgram(p, TINY, partition=partition, alloc=alloc, loop=loop, digits=digits,
                      max_context=160)
    lp.load({g: rng.integers(-127, 128, TINY.dims(g)) for g in ORDER})
    hist = quantise_kv(rng.normal(size=(2, T0, 64)), rng.normal(size=(2, T0, 64)))
    lp.kv.preload(*hist)
    sess = ModuleSession(p)
    sess.run(lp.setup_words())
    used = lp.pages.used
    for _ in range(2):
        tr, hist = _random_trace(rng, lp, hist)
        maps = lp.resident_maps()
        prog = lp.step(tr)
        run = sess.run(prog.words)
        assert lp.check(prog, run.outs, tr) == []
        assert step_cycles(p, maps, prog.words)["cycles"] == run.cycles
    assert (lp.pages.used > used) == (alloc == "dpa")
    # a corrupted beat is caught
    bad = list(run.outs)
    bad[-1] ^= 1
    assert lp.check(prog, bad, tr)


# ---- the real model --------------------------------------------------------------------------
@pytest.mark.slow
def test_layer0_step_on_module_model_equals_fast_path(model):
    """Layer 0 of SmolLM2, one decode step (every GEMV tile, the KV append, QK^T and SV over
    the 5-token context) on the cycle-exact module model (a small module of 64 x 64 macros,
    weights streamed; the module joins with the cached K/V), checked by the decoder against
    the fast path; the performance model times the step exactly."""
    mp = MacroParams(n_in=64, n_out=64, w_bits=8, x_bits=8, n_sets=8, n_acc=8)
    small = ModuleParams(ChannelParams(mp, n_banks=4, n_gbuf=8), n_ch=2, n_vpages=64, n_req=2,
                         fifo_depth=16)
    dec = PimDecoder(model, max_context=64, params=small, golden_layers=[0], golden_from=4,
                     timing_from=4)
    assert dec.mode == "streamed"
    dec.prefill(model.encode("The capital of France is a city")[:5])
    assert [list(r.get("golden", ())) for r in dec.step_log] == [[]] * 4 + [[0]]
    g = dec.step_log[-1]["golden"][0]
    assert dec.mismatches == 0, g["bad"]
    assert g["cycles"] == dec.step_log[-1]["layer_cycles"]
    assert dec.last_traces[0].attn.scores.shape[-1] == 5


def test_decoder_generates_and_agrees_with_float(model, pim):
    g = pim.generate("The capital of France is", 6)
    assert "Paris" in g.text
    log = pim.step_log
    assert len(log) == len(g.prompt_ids) + len(g.token_ids) - 1
    assert all(r["cycles"] == r["layer_cycles"] * model.config.n_layers for r in log)
    # the timing shadow is the step of the default module: equal to its golden model (TCP)
    assert pim.p == smollm2_module() and pim.mode == "resident"


def test_teacher_forced_64_positions(model, pim):
    ref = FloatDecoder(model, max_context=512)
    r = teacher_forced(pim, ref, model.encode(EVAL_TEXT)[:65])
    assert r["positions"] == 64
    assert r["agreement"] >= 0.9
    assert abs(r["ppl_pim"] / r["ppl_ref"] - 1) <= 0.05


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,name", [
    (dict(partition="XYZ"), "partition"), (dict(alloc="lazy"), "alloc"),
    (dict(digits=3), "digits"), (dict(golden_layers=[30]), "golden_layers"),
    (dict(record_layers="0"), "record_layers"), (dict(params="big"), "params")])
def test_bad_decoder_options(model, kw, name):
    with pytest.raises(ValueError, match=name):
        PimDecoder(model, max_context=64, **kw)


def test_bad_layer_program_options():
    with pytest.raises(ValueError, match="mode"):
        LayerProgram(ci_module(), TINY, mode="fast")
    with pytest.raises(ValueError, match="max_context"):
        LayerProgram(ci_module(), TINY, max_context=0)
    with pytest.raises(ValueError, match="does not fit"):
        LayerProgram(ci_module(), TINY, max_context=60000, mode="resident")


@pytest.mark.parametrize("argv,opt", [
    (["--tokens", "0"], "--tokens"), (["--policy", "xfp"], "--policy"),
    (["--digits", "4"], "--digits"), (["--rtl-layers", "-1"], "--rtl-layers"),
    (["--golden-layers", "1", "1"], "--golden-layers"), (["--prompt", "  "], "--prompt")])
def test_generate_bad_options_exit_2(argv, opt, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", *argv])
    assert e.value.code == 2 and opt in capsys.readouterr().err


@pytest.mark.parametrize("argv,opt", [
    (["--rtl-layers", "30"], "--rtl-layers"), (["--tokens", "3000"], "--tokens"),
    (["--eval-positions", "5000"], "--eval-positions")])
def test_generate_options_beyond_the_model_exit_2(model, argv, opt, capsys):
    assert main(["generate", *argv]) == 2
    assert opt in capsys.readouterr().err


@pytest.mark.slow
def test_generate_json(model, capsys):
    import json
    assert main(["generate", "--prompt", "The capital of France is", "--tokens", "4",
                 "--json", "--no-progress"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert "Paris" in r["text"] and r["token_ids"] == r["float_token_ids"]
    assert r["mismatches"] == 0 and r["agreement"] == 1.0 and r["cycles_per_token"] > 0
    assert "performance model" in r["cycles_source"] and r["wall_s"] > 0
