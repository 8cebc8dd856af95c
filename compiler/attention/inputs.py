"""Inputs of attention programs: real MiniLM layer-0 K, V, q of a paragraph, and synthetic
Llama-shaped requests (single shapes, or a request mix whose lengths follow the long-context
benchmarks, :mod:`workloads.mix`), plus the module that holds MiniLM."""
from __future__ import annotations

import numpy as np

from compiler.attention.program import Request
from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams, check_int
from workloads.mix import check_seed, request_draws

__all__ = ["minilm_params", "MINILM_PARAGRAPH", "minilm_decode", "llama_head",
           "llama_shaped_decode", "request_mix"]


def minilm_params() -> ModuleParams:
    """A module that holds MiniLM layer 0 (12 heads, head_dim 32) for a short paragraph under
    both HFP and TCP: 32x32 macros, 4 sets, 8 banks, 4 channels (32 pages per channel)."""
    mp = MacroParams(n_in=32, n_out=32, w_bits=8, x_bits=8, n_sets=4, n_acc=8, tree_stages=1)
    return ModuleParams(ChannelParams(mp, n_banks=8, n_gbuf=8, q_depth=8), n_ch=4,
                        n_vpages=64, n_req=4, fifo_depth=16, loop_len=8)


MINILM_PARAGRAPH = ("Compute-in-memory accelerators keep the weights inside the SRAM arrays, "
                    "so the multiply-accumulate happens where the data already is. For long "
                    "documents the key-value cache dominates decoding time, and the controller "
                    "must keep every bank busy.")


def minilm_decode(paragraph: str = MINILM_PARAGRAPH, max_context: int | None = None) -> list:
    """Real MiniLM (all-MiniLM-L6-v2) layer-0 K, V of every token of ``paragraph`` and the
    query of its last token, 12 heads of head_dim 32 (g = 1): one :class:`Request`."""
    from workloads import minilm
    if not isinstance(paragraph, str) or not paragraph.strip():
        raise ValueError(f"minilm_decode: paragraph={paragraph!r} must be a non-empty string")
    d = minilm.layer0_qkv(paragraph)
    X = d["X"].astype(np.float32)
    proj = {n: X @ d["W"][n].T + d["b"][n] for n in ("q", "k", "v")}
    H = minilm.config()["num_attention_heads"]
    hd = X.shape[1] // H
    T = X.shape[0]
    K = proj["k"].reshape(T, H, hd).transpose(1, 0, 2)
    V = proj["v"].reshape(T, H, hd).transpose(1, 0, 2)
    q = proj["q"][-1].reshape(H, 1, hd)
    return [Request(K, V, q, max_context, name=f"minilm T={T}")]


def llama_head(rng, T: int, d: int, g: int):
    """Synthetic K, V [T, d] and q [g, d] (float32) of one KV head: keys with per-channel
    scales and offsets (post-RoPE outlier channels), GQA queries correlated with each other."""
    ch = np.exp(rng.normal(0.0, 0.5, d))
    k_mean = rng.normal(0.0, 0.5, d) * ch
    K = k_mean[None, :] + rng.normal(0.0, 1.0, (T, d)) * ch
    V = rng.normal(0.0, 1.0, (T, d)) * np.exp(rng.normal(0.0, 0.3, d))
    shared = rng.normal(0.0, 1.0, d)
    q = (0.6 * shared[None, :] + 0.8 * rng.normal(0.0, 1.0, (g, d))) * ch
    return K.astype(np.float32), V.astype(np.float32), q.astype(np.float32)


def _shape(fn: str, head_dim, group, kv_heads) -> tuple[int, int, int]:
    return (check_int(f"{fn}: head_dim", head_dim, 1), check_int(f"{fn}: group", group, 1),
            check_int(f"{fn}: kv_heads", kv_heads, 1))


def _request(rng, T, head_dim, group, kv_heads, max_context, name) -> Request:
    hs = [llama_head(rng, T, head_dim, group) for _ in range(kv_heads)]
    return Request(np.stack([a for a, _, _ in hs]), np.stack([b for _, b, _ in hs]),
                   np.stack([c for _, _, c in hs]), max_context, name=name)


def llama_shaped_decode(contexts=(200, 120), head_dim: int = 128, group: int = 4,
                        kv_heads: int = 1, seed: int = 0, max_context: int | None = None) -> list:
    """Llama-3.1-8B-shaped decode (head_dim 128, GQA group 4); SYNTHETIC seeded data (no Llama
    weights can be downloaded): :func:`llama_head` per KV head.  One request per entry of
    ``contexts`` (tokens) with ``kv_heads`` KV heads each (Llama-3.1-8B has 8; scaled to what
    the module holds)."""
    fn = "llama_shaped_decode"
    head_dim, group, kv_heads = _shape(fn, head_dim, group, kv_heads)
    if isinstance(contexts, (str, bytes)) or not hasattr(contexts, "__iter__"):
        raise ValueError(f"{fn}: contexts={contexts!r} must be a list of context lengths")
    contexts = [check_int(f"{fn}: contexts[{i}]", T, 1) for i, T in enumerate(contexts)]
    rng = np.random.default_rng(check_seed(fn, seed))
    return [_request(rng, T, head_dim, group, kv_heads, max_context, f"llama8b-shaped T={T}")
            for T in contexts]


def request_mix(n: int = 3, max_context: int = 256, head_dim: int = 32, group: int = 1,
                kv_heads: int = 1, seed: int = 0) -> list:
    """``n`` synthetic Llama-like requests whose lengths are
    ``workloads.mix.request_draws(max_context, n, seed)`` (the LongBench/LV-Eval length rule,
    the same as the LLM step compiler's), each named by its benchmark; the K, V, q data come
    from a second generator seeded with (seed, 1), so the first k requests of a longer mix are
    the mix of k.  Static allocation reserves ``max_context`` for every request."""
    head_dim, group, kv_heads = _shape("request_mix", head_dim, group, kv_heads)
    draws = request_draws(max_context, n, seed)
    rng = np.random.default_rng([check_seed("request_mix", seed), 1])
    return [_request(rng, T, head_dim, group, kv_heads, max_context, f"{b} T={T}")
            for b, T in draws]
