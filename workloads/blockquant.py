"""Accuracy and cost of the block formats on real weights (issue 13): INT8 per-channel vs
BFP16-64 vs MXINT8 vs native W4(Q4_1)A8, every GEMV through the golden numerics of the macro
and the post-processing stage (:mod:`model.blockfmt`, contract ``docs/blockfmt.md``).

* :func:`prepare` / :func:`linear`: one weight matrix in a format, and ``x @ W.T`` with the
  inputs quantised on the host as that format prescribes (INT8: per token, symmetric;
  BFP16-64: BFP16-64; MXINT8 and Q4_1: MXINT8, OCP MX v1.0 section 6.3).  INT8 results are
  dequantised on the host (float64); the block formats return the stage's binary32 values.
* :func:`minilm_gemvs`: MiniLM layer 0's Q/K/V, attention output and FFN GEMVs with real
  activations; :func:`smollm2_gemvs`: SmolLM2 GEMV inputs captured from the float decoder.
* :func:`gemv_study`: output cosine against float per GEMV and format.
* :class:`BlockDecoder`: SmolLM2 with every weight GEMV in one format;
  :func:`teacher_forced`: top-1 agreement with float and perplexity over a text.
* :func:`costs`: bits per weight stored / moved, bits per input moved, macro cycles.
* :func:`study`, :func:`to_markdown`: the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from model import blockfmt as bf
from spec.blockfmt import FORMATS, Fmt
from spec.params import MacroParams
from workloads import quant
from workloads.smollm2 import GEMVS, FloatDecoder

__all__ = ["FORMATS_STUDIED", "Prepared", "prepare", "linear", "cosine", "costs",
           "minilm_gemvs", "smollm2_gemvs", "gemv_study", "BlockDecoder", "teacher_forced",
           "study", "to_markdown", "TEXT"]

FORMATS_STUDIED = ("int8", "bfp16", "mxint8", "q4_1")
_BLOCK_FMT = {"bfp16": Fmt.BFP16, "mxint8": Fmt.MXINT8, "q4_1": Fmt.Q4_1}
_QUANT_X = {Fmt.BFP16: bf.quantise_bfp16, Fmt.MXINT8: bf.quantise_mxint8,
            Fmt.Q4_1: bf.quantise_mxint8}
TEXT = ("The old lighthouse keeper climbed the stairs every evening to light the lamp. "
        "From the top he could see the whole bay: the fishing boats coming home, the gulls "
        "circling over the harbour and the long line of the coast fading into the mist. "
        "He had done this for forty years, and in all that time the light had never failed. "
        "When the storm came that winter, the wind broke the windows and the rain poured in, "
        "but he kept the flame burning until morning, and every boat found its way back.")


def _fmt_name(fmt) -> str:
    if fmt not in FORMATS_STUDIED:
        raise ValueError(f"fmt={fmt!r} must be one of {FORMATS_STUDIED}")
    return fmt


@dataclass(frozen=True)
class Prepared:
    """A weight matrix [N, K] in format ``fmt``: ``codes`` (int8: int64 codes; block formats:
    the codes the macro holds before Q4_1's -8 offset) and ``scales`` (int8: float64 per row;
    block formats: uint32 scale words [N, K/block])."""
    fmt: str
    codes: np.ndarray
    scales: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape


def prepare(fmt: str, w, q4_raw=None) -> Prepared:
    """Quantise float weights ``w`` [N, K] (torch Linear layout) to ``fmt``.  For ``q4_1``,
    ``q4_raw`` (raw GGUF Q4_1 rows) is used as is when given: the native weights, exactly."""
    fmt = _fmt_name(fmt)
    w = np.asarray(w)
    if w.ndim != 2 or not w.size:
        raise ValueError(f"prepare: w must be a non-empty 2-D [N, K] array, got shape {w.shape}")
    if fmt == "int8":
        qt = quant.quantise_per_channel(w, 8)
        return Prepared(fmt, qt.q, qt.scale)
    if fmt == "q4_1":
        q, words = bf.q4_1_from_gguf(q4_raw) if q4_raw is not None else bf.quantise_q4_1(w)
        if q.shape != w.shape:
            raise ValueError(f"prepare: q4_raw holds {q.shape}, weights are {w.shape}")
        return Prepared(fmt, q, words)
    codes, exps = _QUANT_X[_BLOCK_FMT[fmt]](w)
    return Prepared(fmt, codes, exps.astype(np.uint32))


def linear(pw: Prepared, x) -> np.ndarray:
    """``x @ W.T`` for x [T, K] through format ``pw.fmt`` -> float32 [T, N]."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != pw.shape[1]:
        raise ValueError(f"linear: x shape {x.shape} does not match weights {pw.shape}")
    if pw.fmt == "int8":
        qx = quant.quantise_per_token(x, 8)
        y = bf.block_dots(qx.q, pw.codes, pw.shape[1])[0]          # exact integer GEMM
        return quant.dequantise_matmul(y, qx.scale, pw.scales).astype(np.float32)
    fmt = _BLOCK_FMT[pw.fmt]
    xq, xs = _QUANT_X[fmt](x)
    codes, _ = bf.block_matmul(fmt, xq, xs, pw.codes, pw.scales)
    return bf.fp32_value(codes).astype(np.float32)


def cosine(a, b) -> float:
    """Cosine similarity of two arrays (flattened, float64)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape or not a.size:
        raise ValueError(f"cosine: shapes {a.shape} and {b.shape} must be equal and non-empty")
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den else float(np.array_equal(a, b))


def costs(fmt: str, shapes=((576, 576),), n_out: int = 64, x_bits: int = 8) -> dict:
    """What a format costs for GEMVs of ``shapes`` [(N, K), ...] on macros of ``n_out`` columns.

    Bits per weight stored (= moved when loading) include the scales (INT8: one FP32 per
    output row); bits per input element moved include the input scales (INT8: one FP32 per
    token).  The macro has ``n_in`` = the block size (INT8: 64) and ``w_bits`` 8 (Q4_1: 4);
    it takes ``x_bits`` cycles per request, one block of n_in rows x n_out columns.
    ``macro_cycles`` is the sum over the GEMVs of ceil(K/n_in) * ceil(N/n_out) * x_bits for
    one token on one macro; ``cycles_per_kmac_same_sram`` scales it to the SRAM bits of a
    64-row 8-bit macro (several small macros in the area of one big one);
    ``post_adds_per_block`` the stage's fused adds per block per column.
    """
    fmt = _fmt_name(fmt)
    ks = [k for _, k in shapes]
    if fmt == "int8":
        n_in, w_bits, wbpe = 64, 8, float(np.mean([8 + 32 / k for k in ks]))
        xbpe, adds = wbpe, 0
    else:
        f = FORMATS[_BLOCK_FMT[fmt]]
        n_in, w_bits = f.block, f.macro_w_bits[0]
        wbpe, xbpe, adds = f.w_bits_per_elem, f.x_bits_per_elem, 2 if fmt == "q4_1" else 1
    m = MacroParams(n_in=n_in, n_out=n_out, w_bits=w_bits, x_bits=x_bits)
    cyc = sum(math.ceil(k / n_in) * math.ceil(n / n_out) * x_bits for n, k in shapes)
    macs = sum(n * k for n, k in shapes)
    area = n_in * n_out * w_bits / (64 * n_out * 8)          # SRAM bits vs a 64-row 8-bit macro
    return {"fmt": fmt, "w_bits_per_weight": round(wbpe, 4), "x_bits_per_input": round(xbpe, 4),
            "macro_n_in": n_in, "macro_w_bits": w_bits, "cycles_per_block": x_bits,
            "macs_per_cycle": n_in * n_out // x_bits, "macro_cycles": cyc,
            "macro_sram_bits": n_in * n_out * w_bits, "macro_acc_width": m.acc_width,
            "cycles_per_kmac": round(1000 * cyc / macs, 3),
            "cycles_per_kmac_same_sram": round(1000 * cyc / macs * area, 3),
            "post_adds_per_block": adds}


# --- real GEMVs -----------------------------------------------------------------------------
def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def minilm_gemvs(sentence: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MiniLM layer 0 in float32: gemv name -> (input x [T, K], weight W [N, K]) for q, k, v,
    the attention output (o), FFN up (ffn1, after attention + LayerNorm) and FFN down (ffn2,
    after GELU)."""
    from workloads import minilm
    d = minilm.layer0_qkv(sentence or minilm.DEFAULT_SENTENCE)
    t, cfg = minilm.tensors(), minilm.config()
    pre = "encoder.layer.0."
    X, W, b = d["X"].astype(np.float64), d["W"], d["b"]
    heads = cfg["num_attention_heads"]
    proj = {n: (X @ W[n].T.astype(np.float64) + b[n]) for n in "qkv"}
    sh = lambda a: a.reshape(len(X), heads, -1).transpose(1, 0, 2)   # noqa: E731
    s = sh(proj["q"]) @ sh(proj["k"]).transpose(0, 2, 1) / math.sqrt(X.shape[1] / heads)
    p = np.exp(s - s.max(-1, keepdims=True))
    ctx = ((p / p.sum(-1, keepdims=True)) @ sh(proj["v"])).transpose(1, 0, 2).reshape(len(X), -1)
    wo, w1, w2 = (t[pre + n + ".weight"] for n in ("attention.output.dense",
                                                    "intermediate.dense", "output.dense"))
    a = ctx @ wo.T + t[pre + "attention.output.dense.bias"]
    h1 = minilm.layer_norm(a + X, t[pre + "attention.output.LayerNorm.weight"],
                           t[pre + "attention.output.LayerNorm.bias"], cfg["layer_norm_eps"])
    inter = _gelu(h1.astype(np.float64) @ w1.T + t[pre + "intermediate.dense.bias"])
    out = {n: (X, W[n]) for n in "qkv"}
    out |= {"o": (ctx, wo), "ffn1": (h1, w1), "ffn2": (inter, w2)}
    return {n: (np.asarray(x, np.float32), np.asarray(w, np.float32)) for n, (x, w) in out.items()}


class _Stop(Exception):
    pass


def smollm2_gemvs(layers=(0, 15, 29), text: str = TEXT, model=None, max_tokens: int = 32):
    """SmolLM2 GEMV inputs from the float decoder over ``text`` (first ``max_tokens`` tokens):
    (layer, gemv) -> (x [T, K] float32, float weight [N, K], raw Q4_1 rows).  The forward pass
    stops after the last layer asked for."""
    layers = tuple(sorted(set(layers)))

    class _Capture(FloatDecoder):
        def linear(self, layer, gemv, x):
            if layer in layers:
                seen[(layer, gemv)] = np.array(x, np.float32)
            y = super().linear(layer, gemv, x)
            if (layer, gemv) == (layers[-1], "down"):
                raise _Stop
            return y

    seen: dict = {}
    dec = _Capture(model)
    bad = [i for i in layers if not 0 <= i < dec.cfg.n_layers]
    if not layers or bad:
        raise ValueError(f"smollm2_gemvs: layers={layers!r} must be in 0..{dec.cfg.n_layers - 1}")
    try:
        dec.forward(dec.model.encode(text)[:max_tokens])
    except _Stop:
        pass
    raw = lambda i, g: dec.model.tensor(f"blk.{i}.{GEMVS[g]}.weight").raw   # noqa: E731
    return {k: (x, dec.weight(*k), raw(*k)) for k, x in seen.items()}


def gemv_study(gemvs: dict, formats=FORMATS_STUDIED) -> list[dict]:
    """Output cosine vs float per GEMV and format: gemvs maps a name to (x, W) or (x, W, raw)."""
    rows = []
    for name, val in gemvs.items():
        x, w = val[0], val[1]
        ref = x.astype(np.float64) @ w.astype(np.float64).T
        for fmt in formats:
            raw = val[2] if len(val) > 2 and fmt == "q4_1" else None
            y = linear(prepare(fmt, w, raw), x)
            rows.append({"gemv": name, "fmt": fmt, "shape": list(w.shape),
                         "cosine": cosine(y, ref),
                         "rel_err": float(np.linalg.norm(y - ref) / np.linalg.norm(ref))})
    return rows


# --- SmolLM2 end to end -----------------------------------------------------------------------
class BlockDecoder(FloatDecoder):
    """SmolLM2 with every weight GEMV in format ``fmt`` (``q4_1``: the file's own Q4_1 blocks,
    executed exactly); host ops (norms, RoPE, softmax, SwiGLU, LM head) stay float32."""

    def __init__(self, fmt: str, model=None, max_context: int | None = None):
        self.fmt = _fmt_name(fmt)
        super().__init__(model, max_context)
        self._prep: dict = {}

    def prepared(self, layer: int, gemv: str) -> Prepared:
        """The weight of ``gemv`` in ``layer`` in this decoder's format (cached)."""
        key = (layer, gemv)
        if key not in self._prep:
            raw = self.model.tensor(f"blk.{layer}.{GEMVS[gemv]}.weight").raw
            self._prep[key] = prepare(self.fmt, self.weight(layer, gemv),
                                      raw if self.fmt == "q4_1" else None)
        return self._prep[key]

    def linear(self, layer: int, gemv: str, x: np.ndarray) -> np.ndarray:
        return linear(self.prepared(layer, gemv), x)


def _nll(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    z = logits[:-1].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1))
    return lse - z[np.arange(len(ids) - 1), ids[1:]]


def teacher_forced(text: str = TEXT, formats=FORMATS_STUDIED, model=None,
                   max_tokens: int = 64, n_layers: int | None = None) -> dict:
    """Teacher-forced pass over ``text`` (first ``max_tokens`` tokens): per format the top-1
    agreement of its next-token argmax with float's, the perplexity and the logit cosine;
    also float's perplexity.  ``n_layers`` truncates the network to its first layers (output
    norm and LM head kept) for quick checks; default all."""
    fdec = FloatDecoder(model)
    full = fdec.cfg.n_layers
    if n_layers is not None and (isinstance(n_layers, bool) or not isinstance(n_layers, int)
                                 or not 1 <= n_layers <= full):
        raise ValueError(f"teacher_forced: n_layers={n_layers!r} must be an int in 1..{full}")
    cfg = replace(fdec.cfg, n_layers=n_layers or full)
    ids = np.asarray(fdec.model.encode(text)[:max_tokens])
    if len(ids) < 2:
        raise ValueError(f"teacher_forced: text={text!r} has fewer than 2 tokens")
    fdec.cfg = cfg
    ref = fdec.forward(ids)
    out = {"tokens": int(len(ids)), "layers": cfg.n_layers,
           "float": {"ppl": float(np.exp(_nll(ref, ids).mean()))}}
    top = ref[:-1].argmax(-1)
    for fmt in formats:
        dec = BlockDecoder(fmt, fdec.model)
        dec.cfg = cfg
        lg = dec.forward(ids)
        out[fmt] = {"ppl": float(np.exp(_nll(lg, ids).mean())),
                    "top1_agree": float(np.mean(lg[:-1].argmax(-1) == top)),
                    "logit_cosine": cosine(lg, ref)}
    return out


# --- the table --------------------------------------------------------------------------------
def study(smollm2_layers=(0, 15, 29), end_to_end: bool = True, max_tokens: int = 128) -> dict:
    """Every measurement: MiniLM layer 0 and SmolLM2 GEMV cosines, costs, and (if
    ``end_to_end``) SmolLM2 teacher-forced agreement and perplexity."""
    mini = gemv_study(minilm_gemvs())
    smol_g = smollm2_gemvs(smollm2_layers, max_tokens=max_tokens)
    smol = gemv_study({f"L{i}.{g}": v for (i, g), v in smol_g.items()})
    shapes = [tuple(v[1].shape) for (i, _), v in smol_g.items() if i == smollm2_layers[0]]
    res = {"minilm_layer0": mini, "smollm2_gemvs": smol,
           "costs": {f: costs(f, shapes) for f in FORMATS_STUDIED}}
    if end_to_end:
        res["smollm2_teacher_forced"] = teacher_forced(max_tokens=max_tokens)
    return res


def to_markdown(res: dict) -> str:
    """A readable table of :func:`study`'s result."""
    lines = ["| format | bits/weight | bits/input | macro n_in x w_bits | cycles/kMAC "
             "(same SRAM) | MiniLM L0 min / mean cos | SmolLM2 min / mean cos | top-1 agree "
             "| ppl |", "|---|---|---|---|---|---|---|---|---|"]
    tf = res.get("smollm2_teacher_forced", {})
    for f in FORMATS_STUDIED:
        c = res["costs"][f]
        cm = [r["cosine"] for r in res["minilm_layer0"] if r["fmt"] == f]
        cs = [r["cosine"] for r in res["smollm2_gemvs"] if r["fmt"] == f]
        e2e = tf.get(f, {})
        lines.append(f"| {f} | {c['w_bits_per_weight']:.3f} | {c['x_bits_per_input']:.3f} | "
                     f"{c['macro_n_in']} x {c['macro_w_bits']} | {c['cycles_per_kmac']} "
                     f"({c['cycles_per_kmac_same_sram']}) | "
                     f"{min(cm):.5f} / {np.mean(cm):.5f} | {min(cs):.5f} / {np.mean(cs):.5f} | "
                     f"{e2e.get('top1_agree', float('nan')):.3f} | "
                     f"{e2e.get('ppl', float('nan')):.3f} |")
    if tf:
        lines.append(f"\nfloat perplexity {tf['float']['ppl']:.3f} over {tf['tokens']} tokens")
    return "\n".join(lines)
