"""Decode-step compiler for whole LLMs on a system of PIM modules (performance-model programs).

One call of :func:`compile_step` compiles ONE decode step (one new token for every request of
the batch) of a real model (:class:`ModelConfig`, HF ``config.json`` shapes, ``workloads/configs``)
onto ONE module of a :class:`System`: the busiest tensor-parallel shard of one pipeline stage
(the modules of a stage run symmetric programs in parallel, so one module's cycles are the
stage's).  The result is a :class:`StepPlan` whose programs are compressed
(:mod:`perf.program`: host commands without data plus :class:`~perf.program.Rep` loops with
set/vp strides), so a 72B model at 1M tokens is a small tree although it expands to ~10^9 host
commands.  Every channel command carries its resolved physical ``bank``/``set`` and a consistent
``vp``/``rid``; ``StepPlan.setup`` MAPs every page, so ``setup + step`` expanded with
:func:`perf.program.to_host_words` is a valid program for :class:`model.module.ModuleModel` on
systems small enough for the ISA (see :func:`small_system`).

System model
  * ``tp`` modules share one layer (Megatron-style, as PIMphony and CENT assume): query and KV
    heads and the FFN columns are split over them; QKV and gate/up are column-split (no
    reduction), O and down are row-split (the host all-reduces the partial sums at the
    following BARRIER).  ``pp`` pipeline stages hold ``ceil(layers / pp)`` layers each.
  * :func:`aim_system` / :func:`dimc_system`: ``tp`` = gcd(n_modules, kv_heads) (as many
    modules per layer as there are KV heads, never splitting a KV head), the rest pipeline
    stages: Qwen1.5-7B tp 16 pp 1, Llama-3.1-8B tp 8 pp 2, Qwen1.5-72B tp 64 pp 1,
    Llama-3.1-70B tp 8 pp 8.

Memory layout of one module (pages = one set of one bank, the same (bank, set) in every
channel; the page table is module-wide, but a page index may hold different data in different
channels: WR_W is per channel)
  * ``vp = set * n_banks + bank`` for every page (so a Rep's vp stride is always
    ``n_banks x`` its set stride) and ``pp = bank * n_sets + set``; weight pages are owned by
    rid 0; TCP: request i's KV pages by rid i + 1; HFP: slot s's pages by rid s + 1 (a slot
    is shared by up to C units of different requests / layers, see below).
  * KV *streams*: TCP one per (request, KV head), on all channels; HFP one per *slot*: the
    units (layer of a group, request, KV head) are numbered g = j * U + u (layer j of the
    group, u = r * H + h, U = batch x H units per layer), unit g runs on channel g % C and
    is in slot g // C, so a slot's <= C units are on distinct channels and use the SAME
    pages, each channel holding its own unit's K/V there.  A slot reserves, per page, the
    most any of its units needs.
  * Layers are grouped by ``group`` = k (TCP: 1; HFP: the k <= min(C, layers) with the fewest
    slot rows ceil(layers / k) * ceil(k * U / C), see :func:`_layout`): with 1 KV head per
    module (U = 1 at batch 1) the stage's layers run on channels 0, 1, 2, ... and share one
    KV area.  Each group owns a slab of ``layer_sets`` consecutive sets of every bank; the
    step is ``Rep(bodies=(variant 0, .., variant k-1), layers, set_stride=layer_sets)``
    where variant j is the program of the j-th layer of a group (its channels, its weight
    region).  TCP slab: [weights | K area | V area]; HFP slab: [K area | V area | k x
    weights] (a last, partial group then ends after its own layers' weights).
    Weights: one set-aligned region per matrix (QKV, O, gate+up, down).  K area: rows of
    ``kt_n`` sets; a key block (n_out tokens x the head's d dims) is a *K slot* of kt_n pages
    on ONE bank (its d-chunks accumulate in one OBuf entry, as in ``compiler/attention.py``);
    consecutive K slots of a stream are on consecutive banks, K slots of all streams packed
    (a stream starts mid-row).  V area: rows of one set; page (token chunk tc, dim chunk dc)
    is page ``tc * dc_n + dc`` of its stream, consecutive pages on consecutive banks.

GEMV (QKV, O, gate+up, down; weights stationary, batch b = len(contexts))
  W [N, K] is cut in nt = ceil(N/n_out) output tiles and kt = ceil(K/n_in) input chunks.
  Output tiles are spread over channels (tile j on channel slot j % Cw); when tiles are few,
  the input chunks are split in ``cs`` channel groups (per-group WR_INPs into the same GBuf
  entry, multicast MACs) and ``kp`` bank parts (different GBuf entries), each part's ``kc``
  chunks on one bank accumulating in one OBuf entry; the host adds the partials.  (cs, kp) are
  chosen to minimise the largest of, per request, the bank time ``kc * rounds * t_mac``
  (t_mac = x_bits cycles for DIMC, page_bytes / burst * tCCD for DRAM), the dispatcher's
  commands (one per cycle) and the module output port's beats (RD_OUTs x channels, one per
  cycle).  Each step writes every request's input chunk
  (WR_INP multicast) and issues, per request, one MAC per (bank, round) multicast to all
  channels: a resident page serves b requests.  Requests are processed in blocks that fit the
  OBuf (half of it, the other half is being read out) and GBuf; RD_OUTs of a pass are
  deferred after the first step of the next pass.

Attention (exactly the mapping of ``compiler/attention.py``)
  * QK^T, per (request, KV head, query head of its GQA group) a pass: WR_INP of q's kt_n
    chunks, then rounds of n_banks key blocks (one per bank), MACs kt-major (consecutive MACs
    on different banks), one RD_OUT per block; OBuf entries alternate per round (and per pass)
    so a round's RD_OUTs are issued after the next round's MACs.
  * SV, per pass: per n_in-token chunk one WR_INP of the probability tile (TCP: one per
    channel, same entry) and dc_n MACs; each bank accumulates the chunks it holds; RD_OUT of
    the per-bank partials after the pass (deferred after the next pass's first round).
  * HFP: unit g (above) on channel g % C (layer 0 of a group: KV head h of request r on
    channel (r * H + h) % C, H = KV heads per module); the channels' command streams are
    interleaved command by command so they run in parallel.  TCP: every head's tokens on all
    C channels, token-interleaved; MACs and RD_OUTs multicast.
  * KV append: the new token's K is written into d rows of its key block's pages (a WR_W writes
    a whole n_out-token row), its V into one row of each of the dc_n pages of its token chunk.

Per layer (the BARRIER after QKV is a true dependence too: q, k and v come back through the
host): QKV GEMV, BARRIER (host: RoPE, quantise q/k/v), KV append + QK^T, BARRIER (host
softmax), SV, BARRIER, O GEMV, BARRIER (all-reduce, residual, norm), gate+up GEMV, BARRIER
(SwiGLU), down GEMV, BARRIER.  Embedding lookup and the LM head are not compiled (host side;
their bytes are reported in ``capacity['other_weight_bytes']`` and not placed).

Allocation: static reserves ``max_context`` tokens (default max(contexts)) per request, rounded
up to whole pages (key blocks / token chunks); DPA only the pages the current tokens need (HFP:
a slot's page is reserved for all its units at once, so a slot reserves its longest unit's).
Capacity utilisation = live KV bytes / reserved KV bytes (pages MAPped x channels x page
bytes, a page shared by the C units of an HFP slot counted once).  ``StepPlan.setup`` MAPs
exactly these pages (a partial last group only its layers' weights and the slots they use).
A plan that does not fit raises ValueError (``strict=False``: built anyway, ``fits`` False).

Compression: a pass's rounds (QK^T: n_banks key blocks; SV: n_banks / gcd(n_banks, dc_n) token
chunks; GEMV: one input-chunk step) form a Rep whose bodies are one period of the GBuf/OBuf
rotation and whose set stride is the rounds' (so round addresses are affine in the iteration
index); equal consecutive passes (query heads of a GQA group, GEMV request blocks) form Reps of
passes; the layers form one Rep (over the ``group`` layer variants; variant j's GEMVs are
variant 0's moved to its weight region).  HFP channel streams are merged into Reps over the
rounds all active channels share.  The tree grows with the batch (one head/loop/tail per
request and KV head, and the KV-append WR_Ws, whose rows differ) and with the HFP group (one
layer program per variant), not with the context length.  (A timing simulation cannot skip
repeated layers inside a group: its layers differ in their channels.)

HFP capacity limit: a KV head lives on one channel, so one head's cache must fit in one
channel next to that channel's share of the weights.  Llama-3.1-70B at 1M tokens: a head's
K + V is 2^20 x 128 x 2 values = 512 MB in bf16 (AiM) = a whole 512 MB channel, so HFP cannot
hold it there (TCP can: it spreads the head over 16 channels); in INT8 (DIMC) 256 MB: fits.

Deferred RD_OUTs need OBuf room: QK^T uses 4 entries per bank (2 per pass, alternating per
round) when n_acc >= 4, 2 (no deferral across passes) when n_acc >= 2; SV/GEMV use halves
of the OBuf when they fit, else no deferral.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from compiler.attention import BENCH_MEANS
from spec.isa import HostOp
from perf.program import HCmd, Rep
from perf.sim import GDDR6_AIM, SimParams

__all__ = ["ModelConfig", "System", "StepPlan", "GemvGeom", "MODELS", "CONFIG_DIR",
           "load_config", "aim_system", "dimc_system", "small_system", "tiny_config",
           "request_mix", "compile_step", "max_batch", "plan_counts", "tree_nodes", "GB"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "workloads" / "configs"
MODELS = ("qwen1.5-7b", "llama-3.1-8b", "qwen1.5-72b", "llama-3.1-70b")
GB = 1 << 30

_NOP, _WR_INP, _WR_W, _MAC, _RD_OUT, _MAP, _BARRIER = (
    int(HostOp.NOP), int(HostOp.WR_INP), int(HostOp.WR_W), int(HostOp.MAC), int(HostOp.RD_OUT),
    int(HostOp.MAP), int(HostOp.BARRIER))
_BAR = HCmd(_BARRIER)
_new = tuple.__new__
assert HCmd._fields == ("op", "chmask", "rid", "vp", "pp", "row", "g", "o", "acc", "n", "per",
                        "vps", "os", "count", "bank", "set")


# =============================================================================================
# Model configuration

_HF_FIELDS = (("layers", "num_hidden_layers"), ("heads", "num_attention_heads"),
              ("hidden", "hidden_size"), ("intermediate", "intermediate_size"),
              ("vocab", "vocab_size"))


def _pos_int(what: str, name: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{what}: {name}={v!r} must be an int >= 1")
    return v


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
        if self.heads % self.kv_heads:
            raise ValueError(f"ModelConfig {self.name!r}: kv_heads={self.kv_heads} does not "
                             f"divide heads={self.heads}")

    @classmethod
    def from_hf(cls, src, name: str | None = None) -> "ModelConfig":
        """From an HF ``config.json`` (a dict, a file path, or a directory holding
        config.json).  ValueError naming a missing or bad field."""
        path = None
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
        kw["tied_embeddings"] = bool(src.get("tie_word_embeddings", False))
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


# =============================================================================================
# System

@dataclass(frozen=True)
class System:
    """``n_modules`` identical PIM modules (``sim``): ``tp`` modules share a layer (heads and
    FFN columns split), ``pp`` pipeline stages (layers split, ceil for the busiest stage)."""
    sim: SimParams
    n_modules: int = 1
    tp: int = 1
    pp: int = 1
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.sim, SimParams):
            raise ValueError(f"System {self.name!r}: sim={self.sim!r} must be a SimParams")
        for n in ("n_modules", "tp", "pp"):
            _pos_int(f"System {self.name!r}", n, getattr(self, n))
        if self.n_modules != self.tp * self.pp:
            raise ValueError(f"System {self.name!r}: n_modules={self.n_modules} != tp*pp = "
                             f"{self.tp}*{self.pp}")

    def validate(self, cfg: ModelConfig) -> None:
        """ValueError if the split does not fit the model."""
        if cfg.kv_heads % self.tp:
            raise ValueError(f"System {self.name!r}: tp={self.tp} does not divide "
                             f"kv_heads={cfg.kv_heads} of {cfg.name}")
        if self.pp > cfg.layers:
            raise ValueError(f"System {self.name!r}: pp={self.pp} > layers={cfg.layers} of "
                             f"{cfg.name}")

    @property
    def capacity_bytes(self) -> int:
        return self.n_modules * self.sim.capacity_bytes

    def layers_per_stage(self, cfg: ModelConfig) -> int:
        return math.ceil(cfg.layers / self.pp)


def _target_capacity(cfg: ModelConfig) -> int:
    """PIMphony's capacities: 128 GB for the 7B-class models, 512 GB for the 72B class."""
    return 128 * GB if cfg.n_params < 30e9 else 512 * GB


def _split(cfg: ModelConfig, n_modules: int) -> tuple[int, int]:
    tp = math.gcd(n_modules, cfg.kv_heads)
    return tp, n_modules // tp


def aim_system(cfg: ModelConfig) -> System:
    """PIMphony's DRAM-PIM (GDDR6-AiM-like) system for ``cfg``: modules of 16 channels x 16
    banks; a page is one 2 KB DRAM row of bf16 = n_in 128 (dims / inputs) x n_out 8 (tokens /
    outputs); 16384 rows per bank (32 MB/bank, 512 MB/channel, 8 GB/module); GBuf 2 KB = 8
    entries of 128 x bf16; 16 output registers per bank; clock 1/tCK = 2 GHz.  16 modules
    (128 GB) for 7B-class models, 64 (512 GB) for 72B-class; tp/pp as in the module doc."""
    sp = SimParams(n_ch=16, n_banks=16, n_gbuf=8, q_depth=8, dcs=True, n_in=128, n_out=8,
                   x_bits=16, w_bits=16, tree_stages=1, n_sets=16384, n_acc=16, fifo_depth=16,
                   loop_len=8, backend="dram", dram=GDDR6_AIM,
                   clock_ghz=1.0 / GDDR6_AIM.tCK_ns)
    n = _target_capacity(cfg) // sp.capacity_bytes
    tp, pp = _split(cfg, n)
    return System(sp, n, tp, pp, f"aim/{cfg.name}")


def dimc_system(cfg: ModelConfig) -> System:
    """The same organisation with our DIMC macros: 16 channels x 16 banks per module, the same
    number of modules (tp, pp) and the same BYTES (8 GB/module, 128 GB / 512 GB in total).
    Macros are 64 x 64 INT8 (w_bits = x_bits = 8: 8 cycles per bit-serial MAC, 1 adder-tree
    stage) at 1 GHz; a page is 4 KB, so n_sets = 8192 pages per bank keep 32 MB per bank.
    Held equal: channels, banks, GBuf entries (8), OBuf entries (16), queue depths, bytes.
    Not equal: INT8 halves the bytes per element, so the same bytes hold twice as many weights
    and KV elements as the bf16 AiM system (the model and its KV cache need half the bytes)."""
    sp = SimParams(n_ch=16, n_banks=16, n_gbuf=8, q_depth=8, dcs=True, n_in=64, n_out=64,
                   x_bits=8, w_bits=8, tree_stages=1, n_sets=8192, n_acc=16, fifo_depth=16,
                   loop_len=8, backend="dimc", clock_ghz=1.0)
    n = _target_capacity(cfg) // sp.capacity_bytes
    tp, pp = _split(cfg, n)
    return System(sp, n, tp, pp, f"dimc/{cfg.name}")


def small_system(n_ch: int = 4, n_banks: int = 4, n_sets: int = 64, n_acc: int = 8,
                 n_gbuf: int = 8, n_io: int = 16) -> System:
    """One small DIMC module expressible in the ISA (n_banks x n_sets <= 256 virtual pages):
    16 x 16 INT8 macros.  ``sim.to_module()`` is the golden-model module."""
    sp = SimParams(n_ch=n_ch, n_banks=n_banks, n_gbuf=n_gbuf, q_depth=8, n_in=n_io,
                   n_out=n_io, x_bits=8, w_bits=8, tree_stages=1, n_sets=n_sets, n_acc=n_acc,
                   fifo_depth=16, loop_len=8, backend="dimc", clock_ghz=1.0)
    return System(sp, 1, 1, 1, "small")


# =============================================================================================
# Requests

def request_mix(ctx: int, n: int, seed: int = 0) -> list[int]:
    """``n`` context lengths following the LongBench/LV-Eval means (ANCHORS.md: QMSum 13,966,
    Musique 16,362, LV-Eval multifieldqa 60,780, Loogle-SD 50,693), scaled so the longest mean
    maps to ``ctx``: each request draws a benchmark uniformly, length = mean / 60,780 * ctx *
    U(0.5, 1.0) (seeded; a prefix of a longer draw with the same seed), in [~0.11 ctx, ctx].
    ``ctx`` is the maximum context that static allocation reserves per request."""
    _pos_int("request_mix", "ctx", ctx)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"request_mix: n={n!r} must be an int >= 0")
    rng = np.random.default_rng(seed)
    means = list(BENCH_MEANS.values())
    top = max(means)
    out = []
    for _ in range(n):
        b = int(rng.integers(len(means)))
        u = float(rng.uniform(0.5, 1.0))
        out.append(max(1, min(ctx, int(round(means[b] / top * ctx * u)))))
    return out


# =============================================================================================
# Geometry

@dataclass(frozen=True)
class GemvGeom:
    """Placement of one weight matrix W [N outputs, K inputs] on a module (see module doc).
    Unit u = (tile m, part p), u = m * kp + p, is on bank u % B, sets
    ``base + (u // B) * kc + i`` (i < kc); rounds R = ceil(units / B)."""
    name: str
    N: int
    K: int
    nt: int          # output tiles
    kt: int          # input chunks
    cs: int          # channel groups splitting the input chunks
    kp: int          # bank parts splitting the input chunks
    kc: int          # chunks per part (= steps of a pass)
    tpc: int         # tiles per channel slot
    units: int       # tpc * kp per channel
    R: int           # rounds (units per bank)
    cmask: int       # channels used
    gmasks: tuple    # channel mask of each group

    @property
    def sets(self) -> int:
        return self.R * self.kc

    @property
    def pages(self) -> int:
        return self.units * self.kc


def _t_mac(sp: SimParams) -> int:
    if sp.backend == "dram":
        return max(1, sp.page_bytes // sp.dram.burst_bytes * sp.dram.CCDL)
    return sp.x_bits


def _gemv_geom(name: str, N: int, K: int, sp: SimParams) -> GemvGeom:
    C, B, G = sp.n_ch, sp.n_banks, sp.n_gbuf
    nt, kt = math.ceil(N / sp.n_out), math.ceil(K / sp.n_in)
    t_mac = _t_mac(sp)
    best = None
    for cs in (x for x in range(1, C + 1) if C % x == 0):
        if cs > 1 and cs > kt:
            break
        Cw = C // cs
        tpc = math.ceil(nt / Cw)
        for kp in range(1, min(B, G, math.ceil(kt / cs)) + 1):
            kc = math.ceil(kt / (cs * kp))
            units = tpc * kp
            R = math.ceil(units / B)
            # per request: bank time, dispatcher (1 command/cycle: WR_INPs, MACs, RD_OUTs)
            # and the module's output port (1 beat/cycle: RD_OUTs x channels)
            cost = max(kc * R * t_mac, kc * (units + cs * kp) + units,
                       units * cs * min(nt, C // cs))
            key = (cost, R * kc, cs * kp)
            if best is None or key < best[0]:
                best = (key, cs, kp, kc, tpc, units, R)
    _, cs, kp, kc, tpc, units, R = best
    Cw = C // cs
    used = min(nt, Cw)
    gm = tuple(((1 << used) - 1) << (q * Cw) for q in range(cs))
    return GemvGeom(name, N, K, nt, kt, cs, kp, kc, tpc, units, R, sum(gm), gm)


@dataclass
class _Shard:
    hq: int          # query heads per module
    hkv: int         # KV heads per module
    grp: int         # GQA group
    d: int
    hidden: int
    inter: int       # FFN columns per module


def _shard(cfg: ModelConfig, system: System) -> _Shard:
    return _Shard(cfg.heads // system.tp, cfg.kv_heads // system.tp, cfg.group, cfg.head_dim,
                  cfg.hidden, math.ceil(cfg.intermediate / system.tp))


@dataclass
class _Unit:
    """One (layer j of a group, request r, KV head h) attention unit: its channel ``c`` (HFP)
    or None (TCP: all channels); ``nloc`` live tokens on its fullest channel; ``kb``/``tc``
    key blocks / token chunks it reserves."""
    j: int
    r: int
    h: int
    c: int | None
    T: int
    nloc: int
    kb: int
    tc: int


@dataclass
class _Stream:
    """KV region of one TCP (request, head) or one HFP slot (up to C units on distinct
    channels sharing the same pages, each channel holding its own unit's data): K slots
    [Q0, Q0+kb_alloc), V pages [P0, P0+tc_alloc*dc_n); owned by ``rid``."""
    rid: int
    units: list
    kb_alloc: int
    tc_alloc: int
    Q0: int = 0
    P0: int = 0


@dataclass
class _Layout:
    sp: SimParams
    sh: _Shard
    tcp: bool
    kt_n: int
    dc_n: int
    gemvs: dict
    streams: list
    w_sets: int          # one layer's weight region
    k_sets: int          # the group's shared K area
    v_sets: int          # the group's shared V area
    w_base: dict         # first set of each matrix in variant 0's weight region
    kbase: int
    vbase: int
    wbase: int           # variant 0's weight region (variant j's: wbase + j * w_sets)
    group_sets: int      # slab of one group of ``group`` layers (the layer Rep's set stride)
    group: int           # layers per group (layer variants)
    layers: int
    w_pages: int         # one layer's weight pages
    kv_pages_module: int = 0      # KV pages of all the module's layers (each page counted once)
    sets_used: int = 0

    @property
    def n_groups(self) -> int:
        return math.ceil(self.layers / self.group)

    def stream_use(self, kk: int) -> list:
        """(stream, key blocks, token chunks) of the streams that units of variants < kk use
        (a group whose first kk layers exist), each allocation the max over those units."""
        out = []
        for st in self.streams:
            us = [u for u in st.units if u.j < kk]
            if us:
                out.append((st, max(u.kb for u in us), max(u.tc for u in us)))
        return out

    def group_pages(self, kk: int) -> int:
        return sum(kb * self.kt_n + tc * self.dc_n for _, kb, tc in self.stream_use(kk))

    def group_extent(self, kk: int) -> int:
        """Sets of a group slab that a group of kk layers touches (weights of its variants,
        its K and V pages)."""
        B, e = self.sp.n_banks, self.wbase + kk * self.w_sets
        for st, kb, tc in self.stream_use(kk):
            e = max(e, self.kbase + ((st.Q0 + kb - 1) // B + 1) * self.kt_n,
                    self.vbase + (st.P0 + tc * self.dc_n - 1) // B + 1)
        return e


def _check_common(cfg, system, contexts, partition, alloc, max_context):
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg={cfg!r} must be a ModelConfig")
    if not isinstance(system, System):
        raise ValueError(f"system={system!r} must be a System")
    system.validate(cfg)
    if partition not in ("HFP", "TCP"):
        raise ValueError(f"partition={partition!r} must be 'HFP' or 'TCP'")
    if alloc not in ("static", "dpa"):
        raise ValueError(f"alloc={alloc!r} must be 'static' or 'dpa'")
    contexts = list(contexts)
    if not contexts:
        raise ValueError("contexts=[]: no requests")
    for T in contexts:
        if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
            raise ValueError(f"contexts: length {T!r} must be an int >= 1")
    contexts = [int(T) for T in contexts]
    if max_context is None:
        max_context = max(contexts)
    if not isinstance(max_context, (int, np.integer)) or max_context < max(contexts):
        raise ValueError(f"max_context={max_context!r} < the longest context "
                         f"{max(contexts)}")
    return contexts, int(max_context)


def _check_group(system, cfg, partition, group):
    if group is None:
        return None
    hi = 1 if partition == "TCP" else min(system.sim.n_ch, system.layers_per_stage(cfg))
    if not isinstance(group, (int, np.integer)) or isinstance(group, bool) \
            or not 1 <= group <= hi:
        raise ValueError(f"group={group!r} must be an int in 1..{hi} ({partition})")
    return int(group)


def _hfp_streams(units: list, k: int, C: int) -> list:
    """HFP slots of a group of ``k`` layers: unit g = j * U + u (unit u = r * H + h of layer j
    of the group, U units per layer) is on channel g % C in slot g // C (rid slot + 1), so
    the C units of a slot are on distinct channels and share its pages."""
    U = len(units)
    streams = []
    for g in range(k * U):
        j, u = divmod(g, U)
        s, c = divmod(g, C)
        r, h, T, nloc, kb, tc = units[u]
        if s == len(streams):
            streams.append(_Stream(s + 1, [], kb, tc))
        st = streams[s]
        st.units.append(_Unit(j, r, h, c, T, nloc, kb, tc))
        st.kb_alloc = max(st.kb_alloc, kb)
        st.tc_alloc = max(st.tc_alloc, tc)
    return streams


def _layout(cfg, system, contexts, partition, alloc, max_context, group=None) -> _Layout:
    """The module's layout.  HFP: the group size k (layers sharing one KV area, k <= C and
    <= the stage's layers) with the fewest slot rows ceil(L / k) * ceil(k * U / C) (U units
    per layer), the smallest such k (at most 3 tried, the one needing the fewest sets wins;
    ``group`` forces one).  E.g. U = 1: k = min(L, C); U | C: k = C / U; U >= C: 1 or the k
    that fills the last slot."""
    sp = system.sim
    sh = _shard(cfg, system)
    C, B, NI, NO = sp.n_ch, sp.n_banks, sp.n_in, sp.n_out
    tcp = partition == "TCP"
    kt_n, dc_n = math.ceil(sh.d / NI), math.ceil(sh.d / NO)
    gemvs = {
        "qkv": _gemv_geom("qkv", (sh.hq + 2 * sh.hkv) * sh.d, sh.hidden, sp),
        "o": _gemv_geom("o", sh.hidden, sh.hq * sh.d, sp),
        "gu": _gemv_geom("gu", 2 * sh.inter, sh.hidden, sp),
        "down": _gemv_geom("down", sh.hidden, sh.inter, sp),
    }
    w_off, s = {}, 0
    for key, g in gemvs.items():
        w_off[key] = s
        s += g.sets
    w_sets = s
    w_pages = sum(g.pages for g in gemvs.values())
    L = system.layers_per_stage(cfg)
    Cs = C if tcp else 1
    units = []                              # (r, h, T, nloc, kb, tc) of one layer, r-major
    for r, T in enumerate(contexts):
        na = math.ceil((T if alloc == "dpa" else max_context) / Cs)
        for h in range(sh.hkv):
            units.append((r, h, T, math.ceil(T / Cs), math.ceil(na / NO), math.ceil(na / NI)))
    U = len(units)
    if group is not None:
        cands = [group]
    elif tcp:
        cands = [1]
    else:                       # fewest slot rows: groups x slots per group
        score = {k: math.ceil(L / k) * math.ceil(k * U / C) for k in range(1, min(L, C) + 1)}
        best = min(score.values())
        cands = [k for k in sorted(score) if score[k] == best][:3]

    def build(k):
        if tcp:
            streams = [_Stream(r + 1, [_Unit(0, r, h, None, T, nl, kb, tc)], kb, tc)
                       for r, h, T, nl, kb, tc in units]
        else:
            streams = _hfp_streams(units, k, C)
        Q = P = 0
        for st in streams:
            st.Q0, st.P0 = Q, P
            Q += st.kb_alloc
            P += st.tc_alloc * dc_n
        k_sets, v_sets = math.ceil(Q / B) * kt_n, math.ceil(P / B)
        # TCP slab [weights | K | V]; HFP group slab [K | V | k x weights] (a last, partial
        # group then ends after its own layers' weights: no hole)
        kbase = w_sets if tcp else 0
        wbase = 0 if tcp else k_sets + v_sets
        lay = _Layout(sp, sh, tcp, kt_n, dc_n, gemvs, streams, w_sets, k_sets, v_sets,
                      {key: wbase + o for key, o in w_off.items()}, kbase, kbase + k_sets,
                      wbase, k_sets + v_sets + k * w_sets, k, L, w_pages)
        full, last = divmod(L, k)
        lay.kv_pages_module = full * lay.group_pages(k) + (lay.group_pages(last) if last else 0)
        lay.sets_used = (lay.n_groups - 1) * lay.group_sets + lay.group_extent(last or k)
        return lay
    return min((build(k) for k in cands),
               key=lambda x: (x.sets_used, x.kv_pages_module, x.group))


def _capacity(cfg, system, lay: _Layout, contexts) -> dict:
    sp = system.sim
    pbytes = sp.n_ch * sp.page_bytes                       # one page in every channel
    shards = cfg.layers * system.tp                        # (layer, tp shard) pairs
    live = sum(contexts) * cfg.kv_bytes_per_token(sp.w_bits)
    # a page is counted once although (HFP) up to C units of different requests / layers
    # hold their data in its C channels; the module's pages per layer x every (layer, shard)
    reserved = round(lay.kv_pages_module * pbytes * shards / lay.layers)
    w_res = lay.w_pages * pbytes * shards
    cap = system.capacity_bytes
    fits_sets = lay.sets_used <= sp.n_sets
    return dict(
        live_kv_bytes=float(live), reserved_kv_bytes=int(reserved),
        weight_bytes=float(cfg.layers * cfg.weight_bytes_per_layer(sp.w_bits)),
        weight_reserved_bytes=int(w_res),
        other_weight_bytes=float(cfg.embedding_params * sp.w_bits / 8),
        capacity_bytes=int(cap), module_bytes=int(sp.capacity_bytes),
        utilisation=(live / reserved) if reserved else 0.0,
        sets_used=lay.sets_used, n_sets=sp.n_sets, layer_sets=lay.group_sets,
        layer_group=lay.group, kv_pages_module=lay.kv_pages_module,
        kv_pages_per_layer=lay.kv_pages_module / lay.layers, w_pages_per_layer=lay.w_pages,
        free_bytes=int(cap - w_res - reserved),
        fits=bool(fits_sets and w_res + reserved <= cap))


# =============================================================================================
# Program construction helpers

class _Loop:
    """``count`` rounds ``fn(start) .. fn(start+count-1)``; fn(i + period) equals fn(i) with
    ``period * sigma`` added to every set (and n_banks times that to every vp)."""
    __slots__ = ("fn", "start", "count", "sigma", "period", "label")

    def __init__(self, fn, start, count, sigma, period, label):
        self.fn, self.start, self.count = fn, start, count
        self.sigma, self.period, self.label = sigma, period, label


def _interleave(lists: list) -> list:
    lists = [x for x in lists if x]
    if len(lists) <= 1:
        return list(lists[0]) if lists else []
    out = []
    n = max(len(x) for x in lists)
    for k in range(n):
        for x in lists:
            if k < len(x):
                out.append(x[k])
    return out


def _merge(streams: list, B: int) -> list:
    """Interleave per-stream phase lists (a phase: a list of commands, or a :class:`_Loop`)
    into items: instants command by command, loops as Reps over their common rounds."""
    n = len(streams)
    idx = [0] * n
    start = {}
    count = {}
    out = []
    while True:
        inst = []
        for k in range(n):
            cmds = []
            while idx[k] < len(streams[k]) and not isinstance(streams[k][idx[k]], _Loop):
                cmds += streams[k][idx[k]]
                idx[k] += 1
            if cmds:
                inst.append(cmds)
        out += _interleave(inst)
        act = [k for k in range(n) if idx[k] < len(streams[k])]
        if not act:
            return out
        loops = [streams[k][idx[k]] for k in act]
        for k, lp in zip(act, loops):
            if (k, idx[k]) not in start:
                start[(k, idx[k])] = lp.start
                count[(k, idx[k])] = lp.count
        rem = [count[(k, idx[k])] for k in act]
        m = min(rem)
        sig = {lp.sigma for lp in loops}
        if len(sig) != 1:
            raise AssertionError(f"_merge: loops with different set strides {sig}")
        sig = sig.pop()
        K = math.lcm(*(lp.period for lp in loops))
        nb = min(K, m)
        bodies = tuple(tuple(_interleave([lp.fn(start[(k, idx[k])] + j)
                                          for k, lp in zip(act, loops)]))
                       for j in range(nb))
        label = loops[0].label if len(loops) == 1 else f"{loops[0].label} +{len(loops) - 1}"
        st = K * sig if m > K else 0
        out.append(Rep(bodies, m, label, set_stride=st, vp_stride=st * B))
        for k in act:
            key = (k, idx[k])
            start[key] += m
            count[key] -= m
            if count[key] == 0:
                idx[k] += 1


def _compress(keys: list, segmap: dict, periods=(1, 2), label: str = "") -> list:
    """Items of the concatenated segments ``segmap[k]`` (tuples of items) for ``k`` in
    ``keys``; runs of a key period K are replaced by ``Rep(bodies, L)`` (no stride)."""
    out = []
    n = len(keys)
    i = 0
    periods = sorted(set(p for p in periods if p >= 1))
    while i < n:
        best = None
        for K in periods:
            j = i + K
            while j < n and keys[j] == keys[j - K]:
                j += 1
            L = j - i
            if L >= 2 * K and (best is None or L > best[1]):
                best = (K, L)
        if best:
            K, L = best
            out.append(Rep(tuple(segmap[k] for k in keys[i:i + K]), L, label))
            i += L
        else:
            out.extend(segmap[keys[i]])
            i += 1
    return out


def _assemble(passes: list, defer: bool) -> list:
    """Passes (head, loop | None, tail, rds) -> segments (lists of phases); with ``defer`` a
    pass's RD_OUTs are issued after the next pass's head."""
    segs, prev = [], []
    for head, loop, tail, rds in passes:
        seg = [head + prev] if defer else [head]
        if loop is not None:
            seg.append(loop)
        if tail:
            seg.append(tail)
        if defer:
            prev = rds
        elif rds:
            seg.append(rds)
        segs.append(seg)
    if prev:
        segs.append([prev])
    return segs


def _single(keys: list, make, defer: bool, B: int, periods, label: str) -> list:
    """One stream of passes ``make(k)`` for ``k`` in ``keys`` (equal keys: equal passes), as
    compressed items; passes and segments are built once per distinct (previous, key)."""
    passes, segmap, seq = {}, {}, []

    def P(k):
        if k not in passes:
            passes[k] = make(k)
        return passes[k]
    prev = None
    for k in keys:
        sk = (prev if defer else None, k)
        if sk not in segmap:
            head, loop, tail, rds = P(k)
            phases = [head + (P(prev)[3] if defer and prev is not None else [])]
            if loop is not None:
                phases.append(loop)
            if tail:
                phases.append(tail)
            if not defer and rds:
                phases.append(rds)
            segmap[sk] = tuple(_merge([phases], B))
        seq.append(sk)
        prev = k
    if defer and prev is not None and P(prev)[3]:
        sk = ("rds", prev)
        segmap[sk] = tuple(P(prev)[3])
        seq.append(sk)
    return _compress(seq, segmap, periods, label)


# =============================================================================================
# Step construction

class _Builder:
    def __init__(self, lay: _Layout):
        self.lay = lay
        sp = lay.sp
        self.sp = sp
        self.C, self.B, self.G, self.E = sp.n_ch, sp.n_banks, sp.n_gbuf, sp.n_acc
        self.all = (1 << self.C) - 1

    # ---- commands (positional HCmd fields: op chmask rid vp pp row g o acc n per vps os
    # count bank set)
    def mac(self, mask, rid, bank, s, g, o, acc):
        return _new(HCmd, (_MAC, mask, rid, s * self.B + bank, 0, 0, g, o, acc, 0, 0, 0, 0, 0,
                           bank, s))

    def rd(self, mask, rid, bank, s, o):
        return _new(HCmd, (_RD_OUT, mask, rid, s * self.B + bank, 0, 0, 0, o, 0, 0, 0, 0, 0, 0,
                           bank, s))

    def wi(self, mask, g):
        return _new(HCmd, (_WR_INP, mask, 0, 0, 0, 0, g, 0, 0, 0, 0, 0, 0, 0, -1, -1))

    def ww(self, mask, rid, bank, s, row):
        return _new(HCmd, (_WR_W, mask, rid, s * self.B + bank, 0, row, 0, 0, 0, 0, 0, 0, 0, 0,
                           bank, s))

    # ---- GEMV
    def gemv(self, key: str, b: int) -> tuple[list, dict]:
        lay, B, G, E = self.lay, self.B, self.G, self.E
        geo: GemvGeom = lay.gemvs[key]
        base = lay.w_base[key]
        defer = E >= 2
        cap = E // 2 if defer else E
        R, kc, kp = geo.R, geo.kc, geo.kp
        Rb = min(R, cap)
        rb = max(1, min(b, G // kp, cap // Rb))
        rblocks = [rb] * (b // rb) + ([b % rb] if b % rb else [])
        Rblocks = [(p0, min(Rb, R - p0)) for p0 in range(0, R, Rb)]
        gm, cm = geo.gmasks, geo.cmask

        def pass_(nr, p0, nR, ph):
            units = range(p0 * B, min(geo.units, (p0 + nR) * B))
            parts = sorted({u % kp for u in units})
            nw = nr * kp
            obase = ph * cap if defer else 0

            def step(i, acc):
                cmds = [self.wi(m, (i * nw + r * kp + p) % G)
                        for r in range(nr) for p in parts for m in gm]
                for rho in range(p0, p0 + nR):
                    us = [u for u in units if u // B == rho]
                    for r in range(nr):
                        o = obase + (rho - p0) * nr + r
                        cmds += [self.mac(cm, 0, u % B, base + rho * kc + i,
                                          (i * nw + r * kp + u % kp) % G, o, acc) for u in us]
                return cmds
            rds = [self.rd(cm, 0, u % B, base + (u // B) * kc, obase + (u // B - p0) * nr + r)
                   for u in units for r in range(nr)]
            rds.sort(key=lambda c: (c.o, c.bank))
            loop = None
            if kc > 1:
                loop = _Loop(lambda i: step(i, 1), 1, kc - 1, 1, G // math.gcd(G, nw),
                             f"{key} steps")
            return (step(0, 0), loop, [], rds)

        keys = []
        for nr in rblocks:
            for p0, nR in Rblocks:
                keys.append((nr, p0, nR, len(keys) % 2))
        K = math.lcm(len(Rblocks), 2)
        items = _single(keys, lambda k: pass_(*k), defer, B, (1, 2, K), f"{key} passes")
        info = dict(N=geo.N, K=geo.K, nt=geo.nt, kt=geo.kt, cs=geo.cs, kp=geo.kp, kc=geo.kc,
                    tpc=geo.tpc, units=geo.units, rounds=R, rb=rb, Rb=Rb, sets=geo.sets,
                    channels=bin(cm).count("1"), passes=len(keys))
        return items, info

    # ---- attention lanes
    def lanes(self, j: int = 0):
        """(stream, unit, mask, chans) of layer variant ``j``'s units in program order."""
        out = []
        for st in self.lay.streams:
            for u in st.units:
                if u.j != j:
                    continue
                if u.c is None:
                    out.append((st, u, self.all, list(range(self.C))))
                else:
                    out.append((st, u, 1 << u.c, [u.c]))
        return out

    def kslot(self, q, kt):
        """(bank, set) of d-chunk kt of K slot q."""
        return q % self.B, self.lay.kbase + (q // self.B) * self.lay.kt_n + kt

    def vpage(self, q):
        return q % self.B, self.lay.vbase + q // self.B

    def append(self, j: int = 0) -> list:
        lay, C, NI, NO = self.lay, self.C, self.sp.n_in, self.sp.n_out
        d = lay.sh.d
        per_lane = []
        for st, un, mask, chans in self.lanes(j):
            t = un.T - 1
            if lay.tcp:
                c, loc = t % C, t // C
            else:
                c, loc = chans[0], t
            cm = 1 << c
            cmds = []
            q = st.Q0 + loc // NO
            for kt in range(lay.kt_n):
                bank, s = self.kslot(q, kt)
                cmds += [self.ww(cm, st.rid, bank, s, row) for row in range(min(NI, d - kt * NI))]
            tc, row = divmod(loc, NI)
            for dc in range(lay.dc_n):
                bank, s = self.vpage(st.P0 + tc * lay.dc_n + dc)
                cmds.append(self.ww(cm, st.rid, bank, s, row))
            per_lane.append(cmds)
        return _interleave(per_lane)

    def qk_pass(self, st, un, mask, ph):
        lay, B, G, E = self.lay, self.B, self.G, self.E
        kt_n = lay.kt_n
        kb = math.ceil(un.nloc / self.sp.n_out)
        nfull, tail = divmod(kb, B)
        dround = E >= 2
        dpass = E >= 4
        obase = 2 * ph if dpass else 0
        g0 = ph * kt_n if 2 * kt_n <= G else 0
        rid = st.rid

        def o_of(i):
            return obase + (i % 2 if dround else 0)

        def macs(i, nb):
            return [self.mac(mask, rid, *self.kslot(st.Q0 + i * B + u, kt), g0 + kt, o_of(i),
                             int(kt > 0)) for kt in range(kt_n) for u in range(nb)]

        def rds(i, nb):
            return [self.rd(mask, rid, *self.kslot(st.Q0 + i * B + u, 0), o_of(i))
                    for u in range(nb)]
        pre = [self.wi(mask, g0 + kt) for kt in range(kt_n)]
        rounds = [(i, B) for i in range(nfull)] + ([(nfull, tail)] if tail else [])
        loop, tl = None, []
        lab = f"qk r{un.r}"
        if dround:
            head = pre + macs(*rounds[0])
            if nfull >= 2:
                loop = _Loop(lambda i: macs(i, B) + rds(i - 1, B), 1, nfull - 1, kt_n, 2, lab)
            if tail and nfull >= 1:
                tl = macs(nfull, tail) + rds(nfull - 1, B)
            last = rds(*rounds[-1])
        else:
            head = pre + macs(*rounds[0]) + rds(*rounds[0])
            if nfull >= 2:
                loop = _Loop(lambda i: macs(i, B) + rds(i, B), 1, nfull - 1, kt_n, 1, lab)
            if tail and nfull >= 1:
                tl = macs(nfull, tail) + rds(nfull, tail)
            last = []
        return head, loop, tl, last

    def sv_pass(self, st, un, mask, chans, ph):
        lay, B, G, E = self.lay, self.B, self.G, self.E
        dc_n = lay.dc_n
        gg = math.gcd(B, dc_n)
        n_oq = dc_n // gg
        Lr = B // gg
        sigma = Lr * dc_n // B
        obase = ph * n_oq if 2 * n_oq <= E else 0
        g0 = ph * (G // 2)
        tc_live = math.ceil(un.nloc / self.sp.n_in)
        nfull, tail = divmod(tc_live, Lr)
        rid = st.rid
        wmasks = [1 << c for c in chans] if lay.tcp else [mask]

        def chunks(t0, t1):
            cmds = []
            for tc in range(t0, t1):
                g = (g0 + tc) % G
                cmds += [self.wi(m, g) for m in wmasks]
                for dc in range(dc_n):
                    bank, s = self.vpage(st.P0 + tc * dc_n + dc)
                    cmds.append(self.mac(mask, rid, bank, s, g, obase + dc // gg, int(tc >= Lr)))
            return cmds
        rds = []
        for idx in range(min(tc_live, Lr) * dc_n):
            bank, s = self.vpage(st.P0 + idx)
            rds.append(self.rd(mask, rid, bank, s, obase + (idx % dc_n) // gg))
        head = chunks(0, min(Lr, tc_live))
        loop, tl = None, []
        if nfull >= 2:
            loop = _Loop(lambda i: chunks(i * Lr, (i + 1) * Lr), 1, nfull - 1, sigma,
                         G // math.gcd(G, Lr), f"sv r{un.r}")
        if tail and nfull >= 1:
            tl = chunks(nfull * Lr, tc_live)
        return head, loop, tl, rds

    def attention(self, kind: str, j: int = 0) -> list:
        lay, B, E = self.lay, self.B, self.E
        grp = lay.sh.grp
        lanes = self.lanes(j)
        lane_of = {}

        def make(k):
            li, ph = k
            st, un, mask, chans = lane_of[li]
            if kind == "qk":
                return self.qk_pass(st, un, mask, ph)
            return self.sv_pass(st, un, mask, chans, ph)[:4]
        if kind == "qk":
            defer = E >= 4
        else:
            n_oq = lay.dc_n // math.gcd(B, lay.dc_n)
            defer = 2 * n_oq <= E
        if lay.tcp:
            keys = []
            for li, lane in enumerate(lanes):
                lane_of[li] = lane
                keys += [(li, (len(keys) + qi) % 2) for qi in range(grp)]
            return _single(keys, make, defer, B, (1, 2), f"{kind} passes")
        by_ch = {}
        for li, lane in enumerate(lanes):
            lane_of[li] = lane
            by_ch.setdefault(lane[3][0], []).append(li)
        streams = []
        for c in sorted(by_ch):
            memo, passes = {}, []
            for li in by_ch[c]:
                for qi in range(grp):
                    k = (li, len(passes) % 2)
                    if k not in memo:
                        memo[k] = make(k)
                    passes.append(memo[k])
            streams.append([ph for seg in _assemble(passes, defer) for ph in seg])
        return _merge(streams, B)

    # ---- setup
    def group_pages(self, kk: int) -> list:
        """(bank, set, rid) of every page of a group slab (offset 0) whose first ``kk`` layers
        exist: their weight regions, then the KV pages of the streams their units use."""
        lay, B = self.lay, self.B
        pages = []
        for j in range(kk):
            for key, geo in lay.gemvs.items():
                base = j * lay.w_sets + lay.w_base[key]
                for u in range(geo.units):
                    for i in range(geo.kc):
                        pages.append((u % B, base + (u // B) * geo.kc + i, 0))
        for st, kb_n, tc_n in lay.stream_use(kk):
            for kb in range(kb_n):
                for kt in range(lay.kt_n):
                    pages.append((*self.kslot(st.Q0 + kb, kt), st.rid))
            for q in range(tc_n * lay.dc_n):
                pages.append((*self.vpage(st.P0 + q), st.rid))
        return pages

    def maps(self, n_layers: int) -> list:
        """MAP of every page of the first ``n_layers`` layers (each page once)."""
        lay, B, S, k = self.lay, self.B, self.sp.n_sets, self.lay.group
        memo, out = {}, []
        for gi in range(math.ceil(n_layers / k)):
            kk = min(k, n_layers - gi * k)
            if kk not in memo:
                memo[kk] = self.group_pages(kk)
            off = gi * lay.group_sets
            out += [HCmd(_MAP, rid=rid, vp=(s + off) * B + b, pp=b * S + s + off)
                    for b, s, rid in memo[kk]]
        return out


def _shift(items, ds: int, B: int, memo: dict) -> list:
    """``items`` with ``ds`` added to the set (``ds * B`` to the vp) of every page command
    (a weight region moved by ``ds`` sets); shared bodies stay shared."""
    out = []
    for it in items:
        if isinstance(it, Rep):
            r = memo.get(id(it))
            if r is None:
                bodies = []
                for bd in it.bodies:
                    nb = memo.get(id(bd))
                    if nb is None:
                        nb = memo[id(bd)] = tuple(_shift(bd, ds, B, memo))
                    bodies.append(nb)
                r = memo[id(it)] = Rep(tuple(bodies), it.n, it.label, it.set_stride,
                                       it.vp_stride)
            out.append(r)
        elif it.op in (_WR_W, _MAC, _RD_OUT) and it.set >= 0:
            out.append(it._replace(set=it.set + ds, vp=it.vp + ds * B))
        else:
            out.append(it)
    return out


# =============================================================================================
# Plan

_OPS = {int(o): o.name for o in HostOp}


def plan_counts(items) -> dict:
    """Closed-form counts of an item tree: commands per op name, ``total``, ``mac_ch`` (MACs x
    channels in their mask) and ``out_beats`` (RD_OUTs x channels)."""
    memo = {}

    def cnt(its):
        v = np.zeros(len(_OPS) + 2, dtype=np.int64)
        for it in its:
            if isinstance(it, Rep):
                key = id(it)
                if key not in memo:
                    per = [cnt(b) for b in it.bodies]
                    full, rest = divmod(it.n, len(per))
                    w = full * sum(per) + (sum(per[:rest]) if rest else 0)
                    memo[key] = (it, w)
                v = v + memo[key][1]
            else:
                v[it.op] += 1
                if it.op == _MAC:
                    v[-2] += it.chmask.bit_count()
                elif it.op == _RD_OUT:
                    v[-1] += it.chmask.bit_count()
        return v
    v = cnt(items)
    out = {name: int(v[op]) for op, name in _OPS.items() if v[op]}
    out["total"] = int(v[:len(_OPS)].sum())
    out["mac_ch"] = int(v[-2])
    out["out_beats"] = int(v[-1])
    return out


@dataclass
class StepPlan:
    """One decode step on one module (see the module doc).  ``layer``: items of one layer
    (layer 0's pages); ``variants``: the layer programs of the ``group`` layers of a group
    (``variants[0]`` is ``layer``; HFP rotates the channels per layer of a group and gives
    each its own weight region, TCP has one); ``step``: the ``layers`` layers as one strided
    Rep over the variants (stride ``layer_sets``, the sets of one group slab: one layer's
    slab when ``group`` = 1); ``setup``: MAP of every page of every layer (computed on first
    access); ``parts``: the items of each phase of ``layer``; ``counts``: commands per op of
    one layer (plus ``mac_ch``, ``out_beats``; equal for every variant)."""
    cfg: ModelConfig
    system: System
    contexts: list
    partition: str
    alloc: str
    max_context: int
    layer: list
    layers: int
    stages: int
    layer_sets: int
    parts: dict
    useful_macs: int
    pim_macs: int
    capacity: dict
    counts: dict
    info: dict
    variants: list = None
    group: int = 1
    _maps: Callable = field(repr=False, default=None)
    _setup: list = field(repr=False, default=None)

    @property
    def step(self) -> list:
        """The items of the whole step on this module (all its layers)."""
        if self.layers == 1:
            return list(self.layer)
        st = self.layer_sets
        vs = self.variants or [self.layer]
        return [Rep(tuple(tuple(v) for v in vs), self.layers, "layers", set_stride=st,
                    vp_stride=st * self.system.sim.n_banks)]

    @property
    def setup(self) -> list:
        """MAP of every page the step uses (all layers of this module, each page once)."""
        if self._setup is None:
            self._setup = self._maps(self.layers)
        return self._setup

    def setup_layers(self, n: int) -> list:
        """MAPs of the first ``n`` layers' pages only."""
        return self._maps(n)

    @property
    def n_leaves(self) -> int:
        """Host commands of the whole step (all layers of this module)."""
        return self.layers * self.counts["total"]

    @property
    def batch(self) -> int:
        return len(self.contexts)


def compile_step(cfg: ModelConfig, system: System, contexts, partition: str = "TCP",
                 alloc: str = "dpa", max_context: int | None = None,
                 strict: bool = True, group: int | None = None) -> StepPlan:
    """Compile ONE decode step of ``cfg`` for the requests of ``contexts`` (cache lengths
    including the new token) on one module of ``system`` (see the module doc).

    partition "TCP" | "HFP"; alloc "dpa" | "static" (static reserves ``max_context``, default
    max(contexts), per request).  ValueError naming the value for a bad input or a resource that
    does not fit (GBuf/OBuf entries, sets per bank, capacity); ``strict=False`` still builds a
    plan whose pages exceed the module (``capacity['fits']`` False) for what-if timing.
    ``group`` (HFP): layers per group sharing a KV area, 1 .. min(n_ch, layers per stage);
    None chooses it (see :func:`_layout`); a smaller one builds a smaller tree (fewer layer
    variants) at the cost of capacity.
    """
    contexts, max_context = _check_common(cfg, system, contexts, partition, alloc, max_context)
    group = _check_group(system, cfg, partition, group)
    sp = system.sim
    lay = _layout(cfg, system, contexts, partition, alloc, max_context, group)
    if lay.kt_n > sp.n_gbuf:
        raise ValueError(f"n_gbuf={sp.n_gbuf}: head_dim {cfg.head_dim} needs {lay.kt_n} query "
                         f"chunks of n_in={sp.n_in} resident in the GBuf")
    gg = math.gcd(sp.n_banks, lay.dc_n)
    if lay.dc_n // gg > sp.n_acc:
        raise ValueError(f"n_acc={sp.n_acc}: SV needs {lay.dc_n // gg} OBuf entries per bank "
                         f"(head_dim {cfg.head_dim}, n_out={sp.n_out}, n_banks={sp.n_banks})")
    cap = _capacity(cfg, system, lay, contexts)
    if strict:
        if lay.sets_used > sp.n_sets:
            why = ""
            if not lay.tcp:
                un = max((u for st in lay.streams for u in st.units),
                         key=lambda u: u.kb * lay.kt_n + u.tc * lay.dc_n)
                pg = un.kb * lay.kt_n + un.tc * lay.dc_n
                why = (f"; HFP keeps a KV head on one channel: one head's cache alone is {pg} "
                       f"pages = {pg / sp.n_banks:.0f} sets per bank = "
                       f"{pg * sp.page_bytes / 2**20:.4g} MB of the channel's "
                       f"{sp.n_banks * sp.n_sets * sp.page_bytes / 2**20:.4g} MB")
            raise ValueError(
                f"n_sets={sp.n_sets}: the step needs {lay.sets_used} sets per bank "
                f"({lay.n_groups} groups of {lay.group} layers x {lay.group_sets}: weights "
                f"{lay.group} x {lay.w_sets}, K {lay.k_sets}, V {lay.v_sets}) for contexts up "
                f"to {max(contexts)} x {len(contexts)} requests ({partition}, {alloc}){why}")
        if not cap["fits"]:
            raise ValueError(f"capacity: weights {cap['weight_reserved_bytes'] / GB:.1f} GB + "
                             f"KV {cap['reserved_kv_bytes'] / GB:.1f} GB > capacity_bytes="
                             f"{cap['capacity_bytes'] / GB:.1f} GB")
    bld = _Builder(lay)
    b = len(contexts)
    parts, ginfo = {}, {}
    for key in ("qkv", "o", "gu", "down"):
        parts[key], ginfo[key] = bld.gemv(key, b)

    def layer_of(p):
        return (p["qkv"] + [_BAR] + p["append"] + p["qk"] + [_BAR] + p["sv"] + [_BAR]
                + p["o"] + [_BAR] + p["gu"] + [_BAR] + p["down"] + [_BAR])
    variants = []
    for j in range(lay.group):            # layer j of a group: its channels, weight region
        if j == 0:
            pj = parts
        else:
            memo = {}
            pj = {k: _shift(parts[k], j * lay.w_sets, sp.n_banks, memo)
                  for k in ("qkv", "o", "gu", "down")}
        pj["append"] = bld.append(j)
        pj["qk"] = bld.attention("qk", j)
        pj["sv"] = bld.attention("sv", j)
        variants.append(layer_of(pj))
    parts = {k: parts[k] for k in ("qkv", "append", "qk", "sv", "o", "gu", "down")}
    layer = variants[0]
    pc = {k: plan_counts(v) for k, v in parts.items()}
    tot = Counter({"BARRIER": 6, "total": 6})
    for c in pc.values():
        tot.update(c)
    order = [n for n in _OPS.values() if tot.get(n)] + ["total", "mac_ch", "out_beats"]
    counts = {k: int(tot.get(k, 0)) for k in order}
    useful = sum(cfg.macs_per_token(T) for T in contexts)
    for v in variants[1:]:            # rotated channels and shifted pages, the same commands
        cv = plan_counts(v)
        if (cv["total"], cv["mac_ch"], cv["out_beats"]) != \
                (counts["total"], counts["mac_ch"], counts["out_beats"]):
            raise AssertionError(f"layer variants differ in counts: {cv} != {counts}")
    pim = lay.layers * counts["mac_ch"] * sp.n_in * sp.n_out
    info = dict(tp=system.tp, pp=system.pp, kv_heads_per_module=lay.sh.hkv,
                q_heads_per_module=lay.sh.hq, group=lay.sh.grp, ffn_cols=lay.sh.inter,
                kt_n=lay.kt_n, dc_n=lay.dc_n, gemv=ginfo, parts=pc,
                streams=len(lay.streams), layer_group=lay.group, layer_sets=lay.group_sets,
                sets_used=lay.sets_used,
                tree_nodes=sum(tree_nodes(v) for v in parts.values()) + 6,
                # useful MACs / page-MACs of the whole system (padding, partial tiles)
                useful_frac=useful / (pim * system.n_modules) if pim else 0.0)
    return StepPlan(cfg, system, contexts, partition, alloc, max_context, layer, lay.layers,
                    system.pp, lay.group_sets, parts, useful, pim, cap, counts, info,
                    variants=variants, group=lay.group, _maps=bld.maps)


def tree_nodes(items) -> int:
    """Nodes of an item tree (HCmds and Reps, each body item counted once)."""
    n = 0
    for it in items:
        n += 1
        if isinstance(it, Rep):
            n += sum(tree_nodes(b) for b in it.bodies)
    return n


def max_batch(cfg: ModelConfig, system: System, contexts, alloc: str = "dpa",
              partition: str = "TCP", max_context: int | None = None, seed: int = 0,
              limit: int = 1 << 20, group: int | None = None) -> int:
    """How many requests fit in one module's pages after the weights (the same on every module
    of the system) under ``alloc``.  ``contexts``: an int ctx (requests drawn with
    ``request_mix(ctx, n, seed)``; static reserves ctx per request) or a function n -> n
    context lengths (a prefix of a longer draw).  ``max_context`` (static) defaults to ctx or
    the longest drawn context.  ``group``: as in :func:`compile_step`."""
    group = _check_group(system, cfg, partition, group)
    if isinstance(contexts, (int, np.integer)) and not isinstance(contexts, bool):
        ctx = int(contexts)
        _pos_int("max_batch", "contexts", ctx)
        fn = lambda n: request_mix(ctx, n, seed)      # noqa: E731
        mc = max_context or ctx
    elif callable(contexts):
        fn, mc = contexts, max_context
    else:
        raise ValueError(f"max_batch: contexts={contexts!r} must be an int or a function")

    def fits(n):
        cs = fn(n)
        cs2, m = _check_common(cfg, system, cs, partition, alloc,
                               mc if mc is not None else max(cs))
        lay = _layout(cfg, system, cs2, partition, alloc, m, group)
        return _capacity(cfg, system, lay, cs2)["fits"]
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    if hi > limit:
        return lo if not fits(limit) else limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
