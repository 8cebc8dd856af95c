"""Accuracy of the hub's softmax unit on real attention (docs/softmax.md, "Accuracy").

Per head: the float attention output ``softmax(q K^T / sqrt(d)) V`` against the integer path
the module runs with the unit in the loop:

1. keys quantised per *dimension* channel (INT8, one scale per column of K, KIVI style) with
   that scale folded into the query, the query quantised with one scale: the INT8 scores
   ``S = qq . kq`` then have one token-independent factor ``scale = q_scale / sqrt(d)``, the
   per-head multiplier the unit needs (per-token key scales cannot be folded into it);
2. :func:`model.softmax.softmax_trace` (the unit's bit-exact arithmetic; ``parts`` TCP
   partitions) gives INT8 probabilities (max = QS; with ``digits=2`` also the residual
   digit lo, -64..64, in units of 1/128), m and l;
3. values quantised per dimension channel, SV in integers ``acc = q @ vq`` (and
   ``acc_lo = lo @ vq``: a second SV pass), ``a = acc + acc_lo / 128``;
4. the host normalises: ``o = a * v_scale * 2**EW / (QS * l)`` ("l"), or
   ``/ (qsum + qlo / 128)`` ("qsum").

``host_softmax`` is the same INT8 QK/SV path with a float softmax and per-row INT8
probabilities (what the host does without the unit), to separate the unit's error from the
INT8 KV quantisation.  Real inputs: MiniLM layer 0 (:func:`minilm_heads`) and SmolLM2-135M
(:func:`smollm2_heads`, the real Q/K/V of one layer after RoPE for :data:`SMOLLM2_TEXT`).
"""
from __future__ import annotations

import math

import numpy as np

from model.softmax import softmax_trace
from spec.params import MacroParams, check_int
from spec.softmax import SoftmaxParams, encode_scale
from workloads import quant
from workloads.blockquant import cosine          # 1.0 for two zero vectors
from workloads.smollm2 import FloatDecoder

__all__ = ["SMOLLM2_TEXT", "quantise_head", "attention_fixed", "float_attention", "cosine",
           "minilm_heads", "CaptureDecoder", "smollm2_heads", "head_cosines", "study"]

SMOLLM2_TEXT = (
    "The old lighthouse keeper kept a notebook for every storm. In the first pages he wrote "
    "down the wind, the height of the waves and the hour the lamp was lit; later he added "
    "the ships he saw, their flags and the direction they were heading. When the harbour "
    "was rebuilt, the engineers asked to read the notebooks, because nobody else had "
    "measured the sea so carefully for forty years. They found that the largest waves came "
    "not with the strongest winds but a day after them, when the swell from a distant storm "
    "reached the coast. The keeper had noticed this too, and in a corner of one page he had "
    "drawn a small arrow pointing west with the words: watch the quiet morning. The new "
    "breakwater was designed with his numbers. Its concrete blocks were shaped so that a "
    "wave would climb them, lose its energy and fall back without lifting the boats moored "
    "behind. On the day it opened, the town invited the keeper to cut the ribbon. He "
    "declined, saying that the lamp still had to be lit at six, and that the sea did not "
    "care about ceremonies. So the mayor cut the ribbon alone, and that evening, as the "
    "first swell of the autumn rolled in from the west, the keeper opened a new notebook "
    "and wrote the date, the wind, and the height of the waves against the new wall. Years "
    "later his granddaughter, now an engineer herself, measured the same waves with a radar "
    "mounted on the lamp room, and she found that the quiet mornings still brought the "
    "largest swell, exactly as the old arrow in the corner of the page had said.")


def _f64(name, a, ndim) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != ndim or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} of shape {a.shape} must be a finite non-empty {ndim}-D array")
    return a


def _check_qkv(q, K, V):
    q, K, V = _f64("q", q, 1), _f64("K", K, 2), _f64("V", V, 2)
    if K.shape != V.shape or q.shape[0] != K.shape[1]:
        raise ValueError(f"q {q.shape}, K {K.shape}, V {V.shape} must be [d], [T, d], [T, d]")
    return q, K, V


def _sym(a, axis=None):
    """INT8 symmetric codes and scale(s) of ``a`` (:func:`workloads.quant.quantise_rows`:
    max |a| -> 127, an all-zero slice: 1): one scale per column (``axis=0``) or one for the
    whole vector."""
    if axis is None:
        t = quant.quantise_rows(a.reshape(1, -1), quant.qmax(8), 8)
        return t.q.reshape(a.shape), t.scale[0]
    t = quant.quantise_rows(a.T, quant.qmax(8), 8)
    return t.q.T, t.scale


def quantise_head(q, K, V) -> dict:
    """INT8 codes of one head: kq [T, d] and k_scale [d] (per dimension), qq [d] with
    q_scale (of q * k_scale), vq [T, d] and v_scale [d]; ``scale`` = q_scale / sqrt(d) turns
    an integer score into a logit."""
    q, K, V = _check_qkv(q, K, V)
    kq, ks = _sym(K, axis=0)
    qq, qs = _sym(q * ks)
    vq, vs = _sym(V, axis=0)
    return dict(kq=kq, k_scale=ks, qq=qq, q_scale=float(qs), vq=vq, v_scale=vs,
                scale=float(qs) / math.sqrt(K.shape[1]))


def float_attention(q, K, V) -> np.ndarray:
    """softmax(q K^T / sqrt(d)) V in float64, [d]."""
    q, K, V = _check_qkv(q, K, V)
    z = K @ q / math.sqrt(K.shape[1])
    e = np.exp(z - z.max())
    return e @ V / e.sum()


def attention_fixed(q, K, V, sp: SoftmaxParams, parts: int = 1, table=None,
                    digits: int = 1) -> dict:
    """One head through the INT8 path with the unit (module docstring).  Returns dict(o_l,
    o_qsum, o_host [d] float64, trace (softmax_trace's dict), scores int64 [T], quant)."""
    if not isinstance(sp, SoftmaxParams):
        raise ValueError(f"attention_fixed: sp={sp!r} must be a SoftmaxParams")
    qz = quantise_head(q, K, V)
    S = qz["kq"] @ qz["qq"]                                  # exact INT8 QK^T, [T]
    mul, sh = encode_scale(qz["scale"], sp)
    tr = softmax_trace(S, sp, mul, sh, parts, table, digits)
    acc = tr["probs"] @ qz["vq"]                             # exact SV, [d]
    if digits == 2:
        acc = acc + (tr["lo"] @ qz["vq"]) / 128.0            # second SV pass, host add
    o_l = acc * qz["v_scale"] * 2.0 ** sp.exp_bits / (sp.prob_max * tr["l"])
    o_qsum = acc * qz["v_scale"] / (tr["qsum"] + tr["qlo"] / 128.0)
    z = S * qz["scale"]                                      # host: float softmax, INT8 probs
    e = np.exp(z - z.max())
    pq = np.rint(e * 127.0).astype(np.int64)
    o_host = (pq @ qz["vq"]) * qz["v_scale"] / pq.sum()
    return dict(o_l=o_l, o_qsum=o_qsum, o_host=o_host, trace=tr, scores=S, quant=qz)


def minilm_heads(sentence: str | None = None, all_queries: bool = False) -> list:
    """Real all-MiniLM-L6-v2 layer-0 (q, K, V) per head (12 heads, d = 32) of ``sentence``:
    the query of the last token, or (``all_queries``) of every token, each a separate item
    (layer 0, head, position, q, K, V)."""
    from workloads import minilm
    d = minilm.layer0_qkv(sentence or minilm.DEFAULT_SENTENCE)
    X = d["X"].astype(np.float32)
    pr = {n: X @ d["W"][n].T + d["b"][n] for n in ("q", "k", "v")}
    H = minilm.config()["num_attention_heads"]
    T, hd = X.shape[0], X.shape[1] // H
    out = []
    for h in range(H):
        cols = slice(h * hd, (h + 1) * hd)
        for t in (range(T) if all_queries else [T - 1]):
            out.append((0, h, t, pr["q"][t, cols], pr["k"][:, cols], pr["v"][:, cols]))
    return out


class _Captured(Exception):
    pass


class CaptureDecoder(FloatDecoder):
    """The float SmolLM2 decoder, stopped after the attention of the last wanted layer."""

    def capture(self, ids, layers) -> dict:
        """{layer: (q [H, T, d], k [Hkv, T, d], v [Hkv, T, d])} (q, k after RoPE) for the
        prompt ``ids``; only layers 0..max(layers) are computed."""
        want = sorted({check_int("capture: layer", x, 0, self.cfg.n_layers - 1)
                       for x in layers})
        if not want:
            raise ValueError("capture: layers is empty")
        self._want, self._got = want, {}
        try:
            self.forward(ids)
        except _Captured:
            return self._got
        finally:
            self._want = ()
        raise RuntimeError("capture: layer not reached")       # pragma: no cover

    def _attention(self, i, q, k, v, cache):
        want = getattr(self, "_want", ())
        if i in want:
            self._got[i] = (q, k, v)
            if i == want[-1]:
                raise _Captured()
        return super()._attention(i, q, k, v, cache)


def smollm2_heads(text: str = SMOLLM2_TEXT, layers=(0,), n_tokens: int | None = None,
                  decoder: CaptureDecoder | None = None) -> list:
    """Real SmolLM2-135M (q, K, V) of ``layers`` after RoPE for the tokens of ``text`` (the
    first ``n_tokens``): the last token's query of each of the 9 query heads with its KV
    head (GQA 3:1), items (layer, head, position, q [64], K [T, 64], V [T, 64])."""
    dec = CaptureDecoder() if decoder is None else decoder
    if not isinstance(dec, CaptureDecoder):
        raise ValueError(f"smollm2_heads: decoder={decoder!r} must be a CaptureDecoder")
    ids = dec.model.encode(text)
    if n_tokens is not None:
        ids = ids[:check_int("smollm2_heads: n_tokens", n_tokens, 1)]
    got = dec.capture(ids, layers)
    g, T = dec.cfg.group, len(ids)
    return [(L, h, T - 1, q[h, -1], k[h // g], v[h // g]) for L, (q, k, v) in got.items()
            for h in range(dec.cfg.n_heads)]


def head_cosines(items, sp: SoftmaxParams, parts: int = 1, table=None,
                 digits: int = 1) -> list[dict]:
    """Per item (layer, head, position, q, K, V): dict(layer, head, pos, T, cos_l,
    cos_qsum, cos_host, err_l, err_qsum, err_host) against :func:`float_attention`:
    cosines and relative L2 errors ``|o - ref| / |ref|`` (a cosine cannot see a
    normalisation error, err can)."""
    out = []
    for L, h, t, q, K, V in items:
        ref = float_attention(q, K, V)
        r = attention_fixed(q, K, V, sp, parts, table, digits)
        row = dict(layer=L, head=h, pos=t, T=len(K))
        for k in ("l", "qsum", "host"):
            o = r["o_" + k]
            row["cos_" + k] = cosine(o, ref)
            row["err_" + k] = float(np.linalg.norm(o - ref) / max(np.linalg.norm(ref), 1e-300))
        out.append(row)
    return out


def _worst(rows) -> list[dict]:
    """One row per (layer, head): the minimum cosines and maximum errors over its queries."""
    out = {}
    for r in rows:
        w = out.setdefault((r["layer"], r["head"]), dict(r))
        for k, v in r.items():
            if k.startswith("cos_"):
                w[k] = min(w[k], v)
            elif k.startswith("err_"):
                w[k] = max(w[k], v)
    return list(out.values())


def study(smollm2_layers=tuple(range(30)), parts: int = 4, n_tokens: int | None = None,
          digits=(1, 2), decoder: CaptureDecoder | None = None) -> dict:
    """The accuracy report: {(model, digits): per (layer, head) worst cosines/errors} for
    MiniLM layer 0 (every query position of the default sentence; 32x32 macros) and SmolLM2
    (``smollm2_layers``, the last token of :data:`SMOLLM2_TEXT`; 64x64 macros), the unit
    ``SoftmaxParams.for_macro`` of that macro with ``parts`` TCP partitions."""
    rep = {}
    mini = minilm_heads(all_queries=True)
    smol = smollm2_heads(layers=smollm2_layers, n_tokens=n_tokens, decoder=decoder)
    sp_mini = SoftmaxParams.for_macro(MacroParams(n_in=32, n_out=32, n_acc=8, n_sets=4),
                                      max_context=1024, n_part=4)
    sp_smol = SoftmaxParams.for_macro(MacroParams(), max_context=4096, n_part=4)
    for dg in digits:
        rep[("minilm", dg)] = _worst(head_cosines(mini, sp_mini, parts, digits=dg))
        rep[("smollm2", dg)] = _worst(head_cosines(smol, sp_smol, parts, digits=dg))
    return rep


def report(rep: dict) -> str:
    """A readable summary of :func:`study`: per model and digit count, the worst head and the
    heads below 0.99."""
    lines = []
    for (name, dg), rows in rep.items():
        c = np.array([r["cos_l"] for r in rows])
        e = np.array([r["err_l"] for r in rows])
        h = np.array([r["cos_host"] for r in rows])
        w = rows[int(np.argmin(c))]
        lines.append(f"{name} digits={dg}: {len(rows)} heads (T={rows[0]['T']}), cosine min "
                     f"{c.min():.5f} (layer {w['layer']} head {w['head']}) mean {c.mean():.5f}, "
                     f"{int((c < 0.99).sum())} below 0.99; rel. error max {e.max():.4f} mean "
                     f"{e.mean():.4f}; host float softmax + INT8 probs: min {h.min():.5f}")
    return "\n".join(lines)


if __name__ == "__main__":                              # pragma: no cover
    print(report(study()))
