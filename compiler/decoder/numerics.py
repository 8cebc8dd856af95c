"""Integer numerics of a decoder layer on the DIMC module, and the fast functional path.

Everything the module computes is an exact integer (the macro is bit-exact); this module
computes the same integers with numpy, so that whole-model runs need no cycle simulation.
tests/workloads/test_smollm2_pim.py proves it bit-exact against :class:`model.module.ModuleModel`
on one layer's GEMVs and attention.

GEMV inputs (activations) are quantised per token, symmetric (``workloads.quant``'s rule), to
``digits`` base-2**x_bits digits: ``x = sum_j d_j * 2**(x_bits * (digits-1-j))``, the top digit
in [-(2**(b-1)-1), 2**(b-1)-1], the others in [-2**(b-1), 2**(b-1)-1], so every digit is a
valid x_bits macro input.  Each digit is one pass through the macro (its own OBuf entry); the
host combines the passes.  ``digits=1`` is plain INT8 (``quant.quantise_per_token``).
Weights: INT8 per output channel (``quant.quantise_per_channel``).

Attention (docs/compiler.md, "Numerics"): K and V per token, q per query head; the host
softmax in float64; SV inputs ``p * v_scale`` per query head.
"""
from __future__ import annotations

import math

import numpy as np

from model.numerics import wrap
from workloads import quant
from workloads.smollm2 import exact_int_matmul_t

__all__ = ["act_qmax", "quantise_acts", "split_digits", "wrap", "gemv_int", "digit_weights",
           "AttnStep", "attention_step", "quantise_kv"]


def act_qmax(digits: int, bits: int = 8) -> int:
    """Largest |code| of a ``digits``-digit activation: (2**(b-1)-1) * (1 + 2**b + ...)."""
    if isinstance(digits, bool) or not isinstance(digits, (int, np.integer)) \
            or not 1 <= digits <= 2:
        raise ValueError(f"act_qmax: digits={digits!r} must be 1 or 2")
    top = quant.qmax(bits)
    return sum(top << (bits * j) for j in range(digits))


def quantise_acts(x, digits: int = 1, bits: int = 8) -> quant.QTensor:
    """Per-token symmetric quantisation of ``x`` [T, K] to ``digits`` digits of ``bits``;
    ``q`` holds the whole code, ``bits`` the total (digits * bits)."""
    if digits == 1:
        return quant.quantise_per_token(x, bits)
    m = act_qmax(digits, bits)
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"quantise_acts: x must be a finite non-empty 2-D array, got shape "
                         f"{a.shape}")
    return quant.quantise_rows(a, m, digits * bits)


def split_digits(codes, digits: int, bits: int = 8) -> np.ndarray:
    """[digits, ...] int64: the digits of ``codes``, most significant first (lower digits in
    [-2**(b-1), 2**(b-1)-1])."""
    c = np.asarray(codes, dtype=np.int64)
    out = np.empty((digits,) + c.shape, dtype=np.int64)
    half, base = 1 << (bits - 1), 1 << bits
    for j in range(digits - 1, 0, -1):
        lo = ((c + half) % base) - half
        out[j] = lo
        c = (c - lo) >> bits
    out[0] = c
    return out


def digit_weights(digits: int, bits: int = 8) -> list[int]:
    """Place value of each digit, most significant first."""
    return [1 << (bits * (digits - 1 - j)) for j in range(digits)]


def gemv_int(xq: np.ndarray, wq: np.ndarray, digits: int, macro, parts,
             w_bound: int | None = None) -> np.ndarray:
    """The module's integer GEMV result ``[T, N]`` for codes ``xq`` [T, K] (``digits`` digits)
    and weights ``wq`` [N, K] (codes held exactly in float32 or int).

    Hardware semantics: per digit and per bank part (``parts`` = list of (k0, k1) input
    ranges accumulated in one macro entry), the macro's sum wraps at ``acc_width``; the host
    adds the parts and digits in int64.  When no part can wrap (checked from the operands'
    magnitudes; ``w_bound`` bounds |wq| without scanning it) the result is the exact product,
    computed with float32 BLAS in exact chunks.
    """
    xq = np.asarray(xq)
    xd = split_digits(xq, digits, macro.x_bits)                  # [digits, T, K]
    wmax = float(np.max(np.abs(wq)) if w_bound is None else w_bound) if wq.size else 0.0
    xmax = float(np.max(np.abs(xd))) if xd.size else 0.0
    rows = max(k1 - k0 for k0, k1 in parts)
    if xmax * wmax * rows < 2.0 ** (macro.acc_width - 1):
        lead = max(xmax, wmax, 1.0)
        flat = xd.reshape(-1, xd.shape[-1]).astype(np.float32)
        y = exact_int_matmul_t(flat, wq, int(lead)).reshape(digits, xq.shape[0], -1)
    else:                                                        # wrapping parts: exact ints
        w64 = np.asarray(wq, dtype=np.int64)
        y = np.zeros((digits, xq.shape[0], w64.shape[0]), np.int64)
        for k0, k1 in parts:
            y += wrap(np.einsum("dtk,nk->dtn", xd[..., k0:k1], w64[:, k0:k1]),
                      macro.acc_width)
        y = y.astype(np.float64)
    out = np.zeros(y.shape[1:], np.int64)
    for j, pv in enumerate(digit_weights(digits, macro.x_bits)):
        out += np.rint(y[j]).astype(np.int64) * pv
    return out


def quantise_kv(k, v, w_bits: int = 8):
    """Per-token codes and scales of new keys/values ``k``, ``v`` [H, t, d]:
    (kq [H, t, d], ks [H, t], vq, vs)."""
    H, t, d = k.shape
    kq = quant.quantise_per_channel(k.reshape(H * t, d), w_bits)
    vq = quant.quantise_per_channel(v.reshape(H * t, d), w_bits)
    return (kq.q.reshape(H, t, d), kq.scale.reshape(H, t), vq.q.reshape(H, t, d),
            vq.scale.reshape(H, t))


class AttnStep:
    """The integers and host values of one query position's attention over L cached tokens:
    ``qq`` [H, g, d] query codes, ``qs`` [H, g]; ``scores`` [H, g, L] (exact QK^T);
    ``wq`` [H, g, L] SV input codes, ``ws`` [H, g]; ``acc`` [H, g, d] (exact SV);
    ``o`` [H, g, d] float64 output."""
    __slots__ = ("qq", "qs", "scores", "wq", "ws", "acc", "o")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


def attention_step(q, kq, ks, vq, vs, x_bits: int = 8) -> AttnStep:
    """One decode position, all KV heads at once: ``q`` [H, g, d] float (after RoPE), the
    cache codes ``kq``, ``vq`` [H, L, d] with per-token scales ``ks``, ``vs`` [H, L]."""
    H, g, d = q.shape
    L = kq.shape[1]
    qt = quant.quantise_per_token(q.reshape(H * g, d), x_bits)
    qq, qs = qt.q.reshape(H, g, d), qt.scale.reshape(H, g)
    qm = max(1 << (x_bits - 1), 128)    # bounds every code (x_bits inputs, <= 8-bit KV)
    kf = np.asarray(kq, dtype=np.float32)
    sc = np.stack([np.rint(exact_int_matmul_t(qq[h].astype(np.float32), kf[h], qm))
                   .astype(np.int64) for h in range(H)])        # [H, g, L]
    s = sc * qs[:, :, None] * ks[:, None, :] / math.sqrt(d)
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    prob = e / e.sum(axis=-1, keepdims=True)
    wt = quant.quantise_per_token((prob * vs[:, None, :]).reshape(H * g, L), x_bits)
    wq, ws = wt.q.reshape(H, g, L), wt.scale.reshape(H, g)
    vf = np.asarray(vq, dtype=np.float32)
    acc = np.stack([np.rint(exact_int_matmul_t(wq[h].astype(np.float32), vf[h].T, qm))
                    .astype(np.int64) for h in range(H)])       # [H, g, d]
    return AttnStep(qq=qq, qs=qs, scores=sc, wq=wq, ws=ws, acc=acc, o=acc * ws[:, :, None])
