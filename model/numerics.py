"""Exact integer reference numerics of the DIMC macro (numpy int64, no timing).

* :func:`wrap` - two's complement wrap to ``bits`` bits.
* :func:`bitserial_dot` - ``y = x @ W`` computed the way the macro does (4-bit weight slices with
  a signed top slice, MSB-first input bit planes with the sign plane subtracted, result wrapped
  to ``acc_width``), vectorised over a batch of x vectors.
* :func:`matvec` - plain ``x @ W`` (no wrap) for cross-checking.
* :func:`tiled_matmul` - ``X @ W`` for reductions longer than ``n_in`` (and any number of
  columns), as a sequence of macro requests with accumulate: sum of tiles wrapped to acc_width.
* :func:`pack_signed` / :func:`unpack_signed` - vectorised packed-int <-> signed vector codecs
  (same layout as :func:`spec.params.pack_vec`), fast enough for per-result use.

Every function validates its operands and raises ValueError naming the offending value.
"""
from __future__ import annotations

import numpy as np

from spec.params import MacroParams

__all__ = ["wrap", "bitserial_dot", "matvec", "tiled_matmul", "pack_signed", "unpack_signed",
           "check_range"]


def wrap(v, bits: int):
    """Two's complement wrap of ``v`` (int or integer array) to signed ``bits`` bits."""
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or bits < 1:
        raise ValueError(f"wrap: bits={bits!r} must be a positive int")
    half, mask = 1 << (bits - 1), (1 << bits) - 1
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return ((int(v) + half) & mask) - half
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise ValueError(f"wrap: integer operand required, got dtype {a.dtype}")
    if bits > 62:
        raise ValueError(f"wrap: bits={bits} too wide for int64 arrays (max 62)")
    a = a.astype(np.int64, copy=False)
    return ((a + half) & mask) - half


def _as_int_array(a, name: str) -> np.ndarray:
    """int64 copy of ``a``; ValueError naming a non-integer or too-large element."""
    arr = np.asarray(a)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0 ** 62)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}[{', '.join(map(str, idx))}] = {float(arr[idx])!r} is not an "
                             f"integer operand")
        return arr.astype(np.int64)
    try:
        return np.array(arr.tolist(), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{name}: not an int64 integer array ({e})") from None


def check_range(a: np.ndarray, bits: int, name: str) -> None:
    """ValueError naming the first element of ``a`` outside signed ``bits``-bit range."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if a.size == 0:
        return
    bad = (a < lo) | (a > hi)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{', '.join(map(str, idx))}] = {int(a[idx])} outside signed "
                         f"{bits}-bit range [{lo}, {hi}]")


def _weight_slices(W: np.ndarray, w_bits: int) -> list[np.ndarray]:
    """4-bit slices of signed ``w_bits`` weights: slice s = bits 4s..4s+3, top slice signed."""
    u = W & ((1 << w_bits) - 1)
    n = w_bits // 4
    out = []
    for s in range(n):
        sl = (u >> (4 * s)) & 15
        if s == n - 1:
            sl = sl - ((sl & 8) << 1)   # sign-extend the top slice
        out.append(sl)
    return out


def bitserial_dot(x, W, p: MacroParams) -> np.ndarray:
    """``x @ W`` as the macro computes it, for one x[n_in] or a batch x[B, n_in].

    W is [n_in, n_out] signed ``w_bits``; x signed ``x_bits``.  Returns int64 [n_out] or
    [B, n_out], wrapped to ``p.acc_width`` (a single tile never actually wraps).
    """
    x = _as_int_array(x, "x")
    W = _as_int_array(W, "W")
    if W.shape != (p.n_in, p.n_out):
        raise ValueError(f"bitserial_dot: W shape {W.shape} != (n_in, n_out) = "
                         f"({p.n_in}, {p.n_out})")
    single = x.ndim == 1
    if single:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != p.n_in:
        raise ValueError(f"bitserial_dot: x shape {x.shape if not single else x.shape[1:]} "
                         f"must be (n_in,) or (B, n_in) with n_in={p.n_in}")
    check_range(x[0] if single else x, p.x_bits, "x")
    check_range(W, p.w_bits, "W")
    X, A = p.x_bits, p.acc_width
    slices = _weight_slices(W, p.w_bits)
    xu = x & ((1 << X) - 1)
    acc = np.zeros((x.shape[0], p.n_out), dtype=np.int64)
    for j in range(X):                       # j-th issued bit is bit b = X-1-j (MSB first)
        b = X - 1 - j
        plane = (xu >> b) & 1                # [B, n_in] of 0/1
        psum = np.zeros_like(acc)
        for s, sl in enumerate(slices):      # AND + adder tree per slice, shifted and summed
            psum += (plane @ sl) << (4 * s)
        acc = wrap(-psum if j == 0 else (acc << 1) + psum, A)
    return acc[0] if single else acc


def matvec(x, W) -> np.ndarray:
    """Plain exact ``x @ W`` in int64 (no wrap, no range limits); x is [K] or [B, K]."""
    x = _as_int_array(x, "x")
    W = _as_int_array(W, "W")
    if W.ndim != 2:
        raise ValueError(f"matvec: W must be 2-D, got shape {W.shape}")
    if x.ndim not in (1, 2) or x.shape[-1] != W.shape[0]:
        raise ValueError(f"matvec: x shape {x.shape} does not match W shape {W.shape}")
    return x @ W


def tiled_matmul(X, W, p: MacroParams) -> np.ndarray:
    """``X @ W`` for X[B, K] (or [K]) and W[K, N] with any K, N >= 1, through the macro.

    K is cut into ceil(K / n_in) row tiles (zero padded) and N into column tiles of n_out.
    Per column tile the row tiles are issued as requests to one ``dst`` entry, the first
    without and the rest with accumulate, so the result is the sum of the tile dots, wrapped
    to ``acc_width`` after every tile (exact while the tile count is <= 2**acc_guard).
    """
    X = _as_int_array(X, "X")
    W = _as_int_array(W, "W")
    single = X.ndim == 1
    if single:
        X = X[None, :]
    if W.ndim != 2 or W.shape[0] < 1 or W.shape[1] < 1:
        raise ValueError(f"tiled_matmul: W must be a non-empty 2-D [K, N] array, got shape "
                         f"{W.shape}")
    if X.ndim != 2 or X.shape[1] != W.shape[0]:
        raise ValueError(f"tiled_matmul: X shape {X.shape} does not match W shape {W.shape}")
    check_range(X, p.x_bits, "X")
    check_range(W, p.w_bits, "W")
    K, N = W.shape
    kt, nt = -(-K // p.n_in), -(-N // p.n_out)
    Xp = np.zeros((X.shape[0], kt * p.n_in), dtype=np.int64)
    Xp[:, :K] = X
    Wp = np.zeros((kt * p.n_in, nt * p.n_out), dtype=np.int64)
    Wp[:K, :N] = W
    out = np.zeros((X.shape[0], nt * p.n_out), dtype=np.int64)
    for ct in range(nt):
        cs = slice(ct * p.n_out, (ct + 1) * p.n_out)
        y = np.zeros((X.shape[0], p.n_out), dtype=np.int64)
        for rt in range(kt):
            rs = slice(rt * p.n_in, (rt + 1) * p.n_in)
            y = wrap(y + bitserial_dot(Xp[:, rs], Wp[rs, cs], p), p.acc_width)
        out[:, cs] = y
    out = out[:, :N]
    return out[0] if single else out


# --- packed-int <-> signed vector codecs ---------------------------------------------------
def unpack_signed(word: int, n: int, bits: int) -> np.ndarray:
    """Signed ``bits``-bit elements 0..n-1 of ``word`` (element 0 in the LSBs), int64 [n].

    Bits of ``word`` above ``n * bits`` are ignored.
    """
    if word < 0:
        raise ValueError(f"unpack_signed: word={word} must be non-negative")
    nbits = n * bits
    word &= (1 << nbits) - 1
    if bits == 8:
        return np.frombuffer(word.to_bytes(n, "little"), dtype=np.int8).astype(np.int64)
    if bits == 4:
        b = np.frombuffer(word.to_bytes((n + 1) // 2, "little"), dtype=np.uint8)
        v = np.empty(2 * b.size, dtype=np.int64)
        v[0::2] = b & 15
        v[1::2] = b >> 4
        v = v[:n]
        return v - ((v & 8) << 1)
    if bits > 62:
        raise ValueError(f"unpack_signed: bits={bits} too wide (max 62)")
    by = np.frombuffer(word.to_bytes((nbits + 7) // 8, "little"), dtype=np.uint8)
    bt = np.unpackbits(by, bitorder="little")[:nbits].reshape(n, bits).astype(np.int64)
    v = bt @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    return v - (bt[:, -1] << bits)


def pack_signed(values, bits: int) -> int:
    """Inverse of :func:`unpack_signed` (wraps values to ``bits``; no range check)."""
    v = np.asarray(values, dtype=np.int64).ravel()
    n = v.size
    if bits > 62:
        raise ValueError(f"pack_signed: bits={bits} too wide (max 62)")
    u = (v & ((1 << bits) - 1)).astype("<u8")
    bt = np.unpackbits(u.view(np.uint8).reshape(n, 8), axis=1, bitorder="little")[:, :bits]
    return int.from_bytes(np.packbits(bt.ravel(), bitorder="little").tobytes(), "little")
