"""Map a quantised GEMM ``Y[T, N] = Xq[T, K] @ Wq[N, K].T`` onto ONE DIMC macro.

Schedule (weight-stationary, ping-pong weight sets):

    for each n-tile j            (columns n0 = j*n_out .. n0+n_out-1 of Y, i.e. rows of Wq)
      for each token pass        (up to n_acc tokens; dst = token index within the pass)
        for each k-tile kt       (inputs k0 = kt*n_in .. k0+n_in-1)   <- innermost
          load weight tile (kt, j) into a set: row r <- Wq[n0:n0+n_out, k0+r] (zero padded)
          for each token t of the pass:
            request x = Xq[t, k0:k0+n_in] (zero padded), set, acc = (kt > 0), dst = t - pass0

so entry ``dst`` holds the full reduction for (token, n-tile) after the last k-tile, and that
last request's result beat carries it.  Tile loads go round-robin over the ``n_sets`` sets, so
the next tile is written while the current one computes.  Hazard freedom under ANY timing
comes from the stimulus ``after`` dependencies (results arrive in request order, one per
request):

* write beat to set s:  after = 1 + index of the last request (in program order) that used s,
  i.e. every earlier request on s has produced its result, so it is no longer issuing
  (the macro would drop the write with WR_HAZARD otherwise, or the result would be corrupted);
* request beat:         after = number of write beats emitted before it in program order, i.e.
  all writes of its tile (and of every earlier tile) have transferred.

``compact=True`` emits fewer write beats, exactly equivalent numerically:
  * rows of a tile beyond the valid reduction length are not written (x is zero there, so
    whatever the set holds in those rows contributes 0);
  * rows whose data the set already holds (tracked from reset, where W = 0) are not rewritten;
  * if some set already holds a tile's valid rows (e.g. the same tile in the next token pass),
    that set is reused with no writes at all; otherwise the least recently used set is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spec.params import (MacroParams, pack, pack_vec, req_fields, res_fields, unpack, unpack_vec,
                   wr_fields)
from model.stimulus import Beat, Stimulus

__all__ = ["GemmPlan", "plan_gemm"]


@dataclass
class GemmPlan:
    """A GEMM scheduled on one macro: the stimulus plus what is needed to decode its results."""
    params: MacroParams
    stimulus: Stimulus
    T: int
    N: int
    K: int
    expected: np.ndarray            # int64 [T, N] = Xq @ Wq.T (exact)
    tokens_per_pass: int
    k_tiles: int
    n_tiles: int
    compact: bool
    # per request (program order == result arrival order)
    req_token: np.ndarray = field(repr=False)    # token index
    req_ntile: np.ndarray = field(repr=False)    # n-tile index
    req_dst: np.ndarray = field(repr=False)      # dst entry
    req_final: np.ndarray = field(repr=False)    # True on the last k-tile: result is Y's value

    @property
    def useful_macs(self) -> int:
        return self.T * self.N * self.K

    @property
    def issued_macs(self) -> int:
        """MACs the macro performs including zero padding (n_in * n_out per request)."""
        return len(self.stimulus.req) * self.params.n_in * self.params.n_out

    @property
    def n_wr(self) -> int:
        return len(self.stimulus.wr)

    @property
    def n_req(self) -> int:
        return len(self.stimulus.req)

    def summary(self) -> dict:
        return dict(T=self.T, N=self.N, K=self.K, k_tiles=self.k_tiles, n_tiles=self.n_tiles,
                    tokens_per_pass=self.tokens_per_pass, compact=self.compact,
                    wr_beats=self.n_wr, req_beats=self.n_req, res_beats=self.n_req,
                    useful_macs=self.useful_macs, issued_macs=self.issued_macs,
                    padding_efficiency=self.useful_macs / self.issued_macs)

    def decode(self, res_payloads) -> np.ndarray:
        """Result payloads (ints, in arrival order) -> Y int64 [T, N].

        Result i belongs to request i; the final value per (token, n-tile) is taken from the
        request of the last k-tile.  ValueError on a wrong count or a ``dst`` mismatch.
        """
        p = self.params
        res_payloads = list(res_payloads)
        if len(res_payloads) != self.n_req:
            raise ValueError(f"decode: got {len(res_payloads)} result payloads, expected {self.n_req}")
        rf, aw, no = res_fields(p), p.acc_width, p.n_out
        Y = np.zeros((self.T, self.N), dtype=np.int64)
        seen = np.zeros((self.T, self.n_tiles), dtype=bool)
        for i, word in enumerate(res_payloads):
            f = unpack(rf, int(word))
            if f["dst"] != self.req_dst[i]:
                raise ValueError(f"decode: result {i} has dst={f['dst']}, request used dst={self.req_dst[i]}")
            if not self.req_final[i]:
                continue
            t, j = int(self.req_token[i]), int(self.req_ntile[i])
            n0 = j * no
            nw = min(no, self.N - n0)
            Y[t, n0:n0 + nw] = unpack_vec(f["y"], nw, aw)
            seen[t, j] = True
        assert seen.all(), "decode: schedule left a (token, n-tile) without a final result"
        return Y


def _as_int_matrix(name: str, a, lo: int, hi: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"plan_gemm: {name} must be a non-empty 2-D array, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"plan_gemm: {name} has non-finite values")
        if not np.all(a == np.rint(a)):
            raise ValueError(f"plan_gemm: {name} has non-integer values")
    elif not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"plan_gemm: {name} must be an integer array, got dtype {a.dtype}")
    a = a.astype(np.int64)
    bad = np.argwhere((a < lo) | (a > hi))
    if len(bad):
        i = tuple(int(v) for v in bad[0])
        raise ValueError(f"plan_gemm: {name}{list(i)} = {a[i]} outside the macro range [{lo}, {hi}]")
    return a


def plan_gemm(xq, wq, p: MacroParams = MacroParams(), *, compact: bool = False,
              seed: int = 0, wr_gap: int = 0, req_gap: int = 0, ready_p: float = 1.0,
              note: str = "") -> GemmPlan:
    """Schedule ``Xq [T, K] @ Wq [N, K].T`` on one macro ``p``.

    ``wr_gap`` / ``req_gap``: each write / request beat gets a random idle gap of 0..gap cycles
    (numpy ``default_rng(seed)``); ``ready_p`` and ``seed`` set the ``res.ready`` pattern.
    Raises ValueError when a value does not fit the macro (input, weight or any partial sum of
    the tiled reduction versus the signed ``acc_width``-bit accumulator).
    """
    if not isinstance(p, MacroParams):
        raise ValueError(f"plan_gemm: p must be a MacroParams, got {type(p).__name__}")
    xq = _as_int_matrix("Xq", xq, *p.x_range)
    wq = _as_int_matrix("Wq", wq, *p.w_range)
    T, K = xq.shape
    N, K2 = wq.shape
    if K != K2:
        raise ValueError(f"plan_gemm: Xq is [T={T}, K={K}] but Wq is [N={N}, K={K2}]")
    for name, g in (("wr_gap", wr_gap), ("req_gap", req_gap)):
        if not isinstance(g, (int, np.integer)) or g < 0:
            raise ValueError(f"plan_gemm: {name}={g!r} must be an int >= 0")

    ni, no, E, S = p.n_in, p.n_out, p.n_acc, p.n_sets
    kt_n = -(-K // ni)
    nt_n = -(-N // no)

    # --- numeric range: every partial sum the accumulator entry holds must fit -------------
    aw = p.acc_width
    alo, ahi = -(1 << (aw - 1)), (1 << (aw - 1)) - 1
    partial = np.zeros((T, N), dtype=np.int64)
    for kt in range(kt_n):
        k0 = kt * ni
        partial += xq[:, k0:k0 + ni] @ wq[:, k0:k0 + ni].T
        bad = np.argwhere((partial < alo) | (partial > ahi))
        if len(bad):
            t, n = (int(v) for v in bad[0])
            raise ValueError(f"plan_gemm: partial sum Y[{t}, {n}] after k-tile {kt} = "
                             f"{partial[t, n]} does not fit the {aw}-bit accumulator")
    expected = xq @ wq.T

    wrf, rqf = wr_fields(p), req_fields(p)
    rng = np.random.default_rng(seed)
    wr: list[Beat] = []
    req: list[Beat] = []
    r_tok, r_nt, r_dst, r_fin = [], [], [], []

    last_req_on_set = [-1] * S          # program-order index of the last request using set s
    shadow = np.zeros((S, ni, no), dtype=np.int64)   # what each set holds (reset: 0)
    last_use = [-1] * S                 # tile counter of the last use (LRU, compact mode)
    tile_no = 0

    def gap(g):
        return int(rng.integers(0, g + 1)) if g else 0

    for j in range(nt_n):
        n0 = j * no
        nw = min(no, N - n0)
        for t0 in range(0, T, E):
            toks = range(t0, min(T, t0 + E))
            for kt in range(kt_n):
                k0 = kt * ni
                kw = min(ni, K - k0)
                tile = np.zeros((ni, no), dtype=np.int64)
                tile[:kw, :nw] = wq[n0:n0 + nw, k0:k0 + kw].T
                if compact:
                    hit = [s for s in range(S) if np.array_equal(shadow[s, :kw], tile[:kw])]
                    if hit:
                        s = max(hit, key=lambda s_: last_use[s_])   # most recent holder
                    else:
                        s = min(range(S), key=lambda s_: last_use[s_])  # LRU
                    rows = [r for r in range(kw) if not np.array_equal(shadow[s, r], tile[r])]
                else:
                    s = tile_no % S
                    rows = range(ni)
                for r in rows:
                    data = pack_vec(tile[r], p.w_bits)
                    wr.append(Beat(pack(wrf, data=data, row=r, set=s), gap=gap(wr_gap),
                                   after=last_req_on_set[s] + 1))
                    shadow[s, r] = tile[r]
                last_use[s] = tile_no
                for t in toks:
                    x = np.zeros(ni, dtype=np.int64)
                    x[:kw] = xq[t, k0:k0 + kw]
                    dst = t - t0
                    req.append(Beat(pack(rqf, x=pack_vec(x, p.x_bits), set=s, acc=int(kt > 0),
                                         dst=dst), gap=gap(req_gap), after=len(wr)))
                    last_req_on_set[s] = len(req) - 1
                    r_tok.append(t)
                    r_nt.append(j)
                    r_dst.append(dst)
                    r_fin.append(kt == kt_n - 1)
                tile_no += 1

    stim = Stimulus(params=p, wr=wr, req=req, ready_p=ready_p, seed=seed & 0xFFFFFFFF,
                    note=note or f"gemm T={T} N={N} K={K} on {p.tag}"
                                 f"{' compact' if compact else ''}")
    return GemmPlan(params=p, stimulus=stim, T=T, N=N, K=K, expected=expected,
                    tokens_per_pass=min(T, E), k_tiles=kt_n, n_tiles=nt_n, compact=bool(compact),
                    req_token=np.array(r_tok), req_ntile=np.array(r_nt),
                    req_dst=np.array(r_dst), req_final=np.array(r_fin, dtype=bool))
