"""Symmetric integer quantisation for the DIMC workloads (pure numpy).

* weights: per-output-channel scales (one scale per row of a torch ``Linear`` weight [out, in]);
* activations: per-token scales (one scale per row of X [tokens, features]).

Both are symmetric (no zero point): ``q = clip(rint(v / s), -qmax, qmax)`` with
``s = max|v| / qmax`` and ``qmax = 2**(bits-1) - 1`` (127 for INT8).  ``np.rint`` rounds half
to even.

Why the grid stops at -127 and not -128: with ``s = max|v| / 127`` the value -128 is never the
nearest grid point of any in-range value, so it would only be reached through rounding noise;
clipping to [-127, 127] keeps the grid symmetric, so ``q(-v) == -q(v)`` exactly and negation
of a quantised tensor never overflows (-(-128) is not representable in 8 bits).  It also
bounds every product by 127*127 < 2**14, which the macro's accumulator width budgets for with
room to spare.  The macro itself accepts -128 (see ``MacroParams.x_range``); we simply never
produce it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QTensor", "qmax", "quantise_per_channel", "quantise_per_token", "quantise_rows",
           "dequantise", "dequantise_matmul"]


def qmax(bits: int) -> int:
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ValueError(f"quant: bits={bits!r} must be an int in 2..16")
    return (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class QTensor:
    """A symmetric quantised 2-D tensor: ``values`` (int64) * ``scale`` broadcast along rows.

    ``scale`` has one float64 entry per row (output channel for weights, token for activations).
    """
    q: np.ndarray        # int64 [rows, cols]
    scale: np.ndarray    # float64 [rows]
    bits: int

    def dequantise(self) -> np.ndarray:
        return dequantise(self.q, self.scale)


def _check_2d(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"quant: {name} must be a non-empty 2-D array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"quant: {name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"quant: {name} has a non-finite value at {tuple(int(i) for i in bad)}")
    return a


def quantise_rows(a: np.ndarray, m: int, bits: int) -> QTensor:
    """The symmetric per-row rule on the grid [-m, m] of a finite float64 2-D ``a`` (checked
    by the caller): scale = max|row| / m, codes = clip(rint(a / scale), -m, m); ``bits``
    is the QTensor's width."""
    amax = np.max(np.abs(a), axis=1)
    # an all-zero row gets scale 1.0 (its codes are all 0 whatever the scale)
    scale = np.where(amax > 0, amax / m, 1.0)
    q = np.clip(np.rint(a / scale[:, None]), -m, m).astype(np.int64)
    return QTensor(q, scale, bits)


def _quantise_rows(name: str, a, bits: int) -> QTensor:
    return quantise_rows(_check_2d(name, a), qmax(bits), bits)


def quantise_per_channel(w, bits: int = 8) -> QTensor:
    """Weights ``w`` [out, in] (torch Linear layout): one scale per output channel (row)."""
    return _quantise_rows("weight", w, bits)


def quantise_per_token(x, bits: int = 8) -> QTensor:
    """Activations ``x`` [tokens, features]: one scale per token (row)."""
    return _quantise_rows("activation", x, bits)


def dequantise(q, scale) -> np.ndarray:
    """``q * scale[:, None]`` in float64 (one scale per row)."""
    q, scale = np.asarray(q), np.asarray(scale, dtype=np.float64)
    if q.ndim != 2 or scale.shape != (q.shape[0],):
        raise ValueError(f"dequantise: q {q.shape} needs one scale per row, got {scale.shape}")
    return q.astype(np.float64) * scale[:, None]


def dequantise_matmul(y_int, x_scale, w_scale) -> np.ndarray:
    """Dequantise an integer GEMM result ``Y = Xq @ Wq.T`` [T, N]:
    ``Y * x_scale[t] * w_scale[n]`` in float64."""
    y = np.asarray(y_int)
    xs = np.asarray(x_scale, dtype=np.float64)
    ws = np.asarray(w_scale, dtype=np.float64)
    if y.ndim != 2 or xs.shape != (y.shape[0],) or ws.shape != (y.shape[1],):
        raise ValueError(f"dequantise_matmul: Y {y.shape} needs x_scale [{y.shape[0] if y.ndim == 2 else '?'}]"
                         f" and w_scale [{y.shape[1] if y.ndim == 2 else '?'}], got {xs.shape}, {ws.shape}")
    return y.astype(np.float64) * xs[:, None] * ws[None, :]
