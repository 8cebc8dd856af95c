"""Model configuration of the LLM step compiler: the shapes of a decoder-only LLM, read from
an HF ``config.json`` (``workloads/configs``); see docs/compiler.md."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spec.params import check_int

__all__ = ["ModelConfig", "MODELS", "CONFIG_DIR", "load_config", "tiny_config"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "workloads" / "configs"
MODELS = ("qwen1.5-7b", "llama-3.1-8b", "qwen1.5-72b", "llama-3.1-70b")

_HF_FIELDS = (("layers", "num_hidden_layers"), ("heads", "num_attention_heads"),
              ("hidden", "hidden_size"), ("intermediate", "intermediate_size"),
              ("vocab", "vocab_size"))


def _pos_int(what: str, name: str, v) -> int:
    return check_int(f"{what}: {name}", v, 1)


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of a decoder-only LLM (one KV cache per layer, SwiGLU FFN, head_dim d)."""
    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    max_position: int = 0
    tied_embeddings: bool = False

    def __post_init__(self):
        for n in ("layers", "heads", "kv_heads", "head_dim", "hidden", "intermediate", "vocab"):
            _pos_int(f"ModelConfig {self.name!r}", n, getattr(self, n))
        check_int(f"ModelConfig {self.name!r}: max_position", self.max_position, 0)
        if not isinstance(self.tied_embeddings, bool):
            raise ValueError(f"ModelConfig {self.name!r}: tied_embeddings="
                             f"{self.tied_embeddings!r} must be a bool")
        if self.heads % self.kv_heads:
            raise ValueError(f"ModelConfig {self.name!r}: kv_heads={self.kv_heads} does not "
                             f"divide heads={self.heads}")

    @classmethod
    def from_hf(cls, src, name: str | None = None) -> "ModelConfig":
        """From an HF ``config.json`` (a dict, a file path, or a directory holding
        config.json).  ValueError naming a missing or bad field."""
        path = None
        if not isinstance(src, (dict, str, Path)):
            raise ValueError(f"from_hf: src={src!r} must be a config dict, a config.json path or "
                             "a model directory")
        if not isinstance(src, dict):
            path = Path(src)
            if path.is_dir():
                path = path / "config.json"
            try:
                src = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"from_hf: cannot read config {str(path)!r}: {e}") from None
            if not isinstance(src, dict):
                raise ValueError(f"from_hf: {str(path)!r} is not a JSON object")
        what = f"from_hf({name or src.get('_name_or_path') or (path and path.stem) or '?'})"
        kw = {}
        for ours, hf in _HF_FIELDS:
            if hf not in src:
                raise ValueError(f"{what}: missing field {hf!r}")
            kw[ours] = _pos_int(what, hf, src[hf])
        kw["kv_heads"] = _pos_int(what, "num_key_value_heads",
                                  src.get("num_key_value_heads", kw["heads"]))
        if "head_dim" in src and src["head_dim"] is not None:
            kw["head_dim"] = _pos_int(what, "head_dim", src["head_dim"])
        else:
            if kw["hidden"] % kw["heads"]:
                raise ValueError(f"{what}: hidden_size={kw['hidden']} is not a multiple of "
                                 f"num_attention_heads={kw['heads']} (give head_dim)")
            kw["head_dim"] = kw["hidden"] // kw["heads"]
        mp = src.get("max_position_embeddings", 0)
        kw["max_position"] = mp if isinstance(mp, int) and mp > 0 else 0
        tied = src.get("tie_word_embeddings", False)
        if not isinstance(tied, bool):
            raise ValueError(f"{what}: tie_word_embeddings={tied!r} must be true or false (a "
                             "JSON boolean)")
        kw["tied_embeddings"] = tied
        nm = name or (path.stem if path is not None and path.name != "config.json" else None) \
            or src.get("_name_or_path") or src.get("model_type") or "model"
        try:
            return cls(name=str(nm), **kw)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None

    # ---- shapes
    @property
    def group(self) -> int:
        """Query heads per KV head (GQA group)."""
        return self.heads // self.kv_heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def weight_params_per_layer(self) -> int:
        """q, k, v, o projections and the three SwiGLU matrices (norms and biases ignored)."""
        h = self.hidden
        return h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h + 3 * h * self.intermediate

    def weight_bytes_per_layer(self, w_bits: int = 16) -> float:
        """Bytes of one layer's weights at ``w_bits`` per weight (bf16: 16; DIMC INT8: 8)."""
        return self.weight_params_per_layer() * w_bits / 8

    def kv_bytes_per_token_per_layer(self, bits: int = 16) -> float:
        """K and V of one token in one layer (all KV heads)."""
        return 2 * self.kv_dim * bits / 8

    def kv_bytes_per_token(self, bits: int = 16) -> float:
        return self.layers * self.kv_bytes_per_token_per_layer(bits)

    @property
    def embedding_params(self) -> int:
        """Token embedding + LM head (one matrix if tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def n_params(self) -> int:
        return self.layers * self.weight_params_per_layer() + self.embedding_params

    def macs_per_token(self, context: int) -> int:
        """Real multiply-accumulates of one decode step of one request whose cache holds
        ``context`` tokens (incl. the new one): projections, FFN, QK^T and SV."""
        return self.layers * (self.weight_params_per_layer()
                              + 2 * self.heads * context * self.head_dim)


def load_config(name: str) -> ModelConfig:
    """One of :data:`MODELS` from ``workloads/configs/<name>.json``."""
    if name not in MODELS:
        raise ValueError(f"load_config: unknown model {name!r}; shipped: {', '.join(MODELS)}")
    return ModelConfig.from_hf(CONFIG_DIR / f"{name}.json", name=name)


def tiny_config(layers: int = 1, heads: int = 2, kv_heads: int = 1, head_dim: int = 32,
                hidden: int = 64, intermediate: int = 128) -> ModelConfig:
    """A toy model whose decode step runs on the golden model in a few thousand cycles."""
    return ModelConfig("tiny", layers, heads, kv_heads, head_dim, hidden, intermediate, 256)
