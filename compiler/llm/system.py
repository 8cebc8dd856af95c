"""The system model of the LLM step compiler: identical PIM modules split in tensor-parallel
shards and pipeline stages (docs/compiler.md, "System model"), and its presets.

Tensor parallelism may exceed the model's KV heads: with ``tp = r x kv_heads`` every KV head
is replicated on ``r`` modules (each holding one KV head, its K/V projection and its cache,
next to ``heads / tp`` query heads of its group), so every module works on a layer even at
batch 1; the replicas are counted in capacity (docs/compiler.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from spec.params import check_int
from compiler.llm.config import ModelConfig
from perf.sim import GDDR6_AIM, SimParams

__all__ = ["System", "GB", "aim_system", "dimc_system", "small_system", "splits", "check_tp",
           "kv_replication"]

GB = 1 << 30


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
            check_int(f"System {self.name!r}: {n}", getattr(self, n), 1)
        if self.n_modules != self.tp * self.pp:
            raise ValueError(f"System {self.name!r}: n_modules={self.n_modules} != tp*pp = "
                             f"{self.tp}*{self.pp}")

    def validate(self, cfg: ModelConfig) -> None:
        """ValueError if the split does not fit the model."""
        check_tp(cfg, self.tp, f"System {self.name!r}")
        if self.pp > cfg.layers:
            raise ValueError(f"System {self.name!r}: pp={self.pp} > layers={cfg.layers} of "
                             f"{cfg.name}")

    @property
    def capacity_bytes(self) -> int:
        return self.n_modules * self.sim.capacity_bytes

    def layers_per_stage(self, cfg: ModelConfig) -> int:
        return math.ceil(cfg.layers / self.pp)


def check_tp(cfg: ModelConfig, tp: int, what: str = "check_tp") -> None:
    """ValueError unless ``tp`` splits ``cfg``: tp divides kv_heads (KV heads split), or tp is
    a multiple of kv_heads dividing heads (each KV head replicated tp / kv_heads times)."""
    if cfg.kv_heads % tp == 0:
        return
    if tp % cfg.kv_heads or cfg.heads % tp:
        raise ValueError(f"{what}: tp={tp} neither divides kv_heads={cfg.kv_heads} of "
                         f"{cfg.name} nor is a multiple of it dividing heads={cfg.heads} (KV "
                         "heads replicated)")


def kv_replication(cfg: ModelConfig, tp: int) -> int:
    """Copies of every KV head over the tp modules of a layer (1 unless tp > kv_heads)."""
    return max(1, tp // cfg.kv_heads)


def splits(cfg: ModelConfig, n_modules: int) -> list[tuple[int, int]]:
    """Every (tp, pp) with tp * pp = n_modules that :meth:`System.validate` accepts, tp
    ascending (the largest tp uses every module on every layer; a larger pp replicates no KV
    head, so more requests fit)."""
    check_int("splits: n_modules", n_modules, 1)
    out = []
    for tp in range(1, n_modules + 1):
        if n_modules % tp or n_modules // tp > cfg.layers:
            continue
        try:
            check_tp(cfg, tp)
        except ValueError:
            continue
        out.append((tp, n_modules // tp))
    return out


def _target_capacity(cfg: ModelConfig) -> int:
    """PIMphony's capacities: 128 GB for the 7B-class models, 512 GB for the 72B class."""
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg={cfg!r} must be a ModelConfig")
    return 128 * GB if cfg.n_params < 30e9 else 512 * GB


def _split(cfg: ModelConfig, n_modules: int, tp, pp) -> tuple[int, int]:
    if tp is None and pp is None:
        tp = math.gcd(n_modules, cfg.kv_heads)
    elif tp is None:
        tp = n_modules // check_int("pp", pp, 1)
    if pp is None:
        pp = n_modules // check_int("tp", tp, 1)
    return tp, pp


def aim_system(cfg: ModelConfig, tp: int | None = None, pp: int | None = None,
               all_bank: bool = True) -> System:
    """PIMphony's DRAM-PIM (GDDR6-AiM-like) system for ``cfg``: modules of 16 channels x 16
    banks; a page is one 2 KB DRAM row of bf16 = n_in 128 (dims / inputs) x n_out 8 (tokens /
    outputs); 16384 rows per bank (32 MB/bank, 512 MB/channel, 8 GB/module); GBuf 2 KB = 8
    entries of 128 x bf16; 16 output registers per bank; clock 1/tCK = 2 GHz; all-bank MACs
    (AiM's MAC_ABK) unless ``all_bank`` is False.  16 modules (128 GB) for 7B-class models,
    64 (512 GB) for 72B-class; tp/pp: given (one of them, or both), else tp = gcd(modules,
    kv_heads) and pp the rest (docs/compiler.md; :func:`splits` lists the others)."""
    sp = SimParams(n_ch=16, n_banks=16, n_gbuf=8, q_depth=8, dcs=True, n_in=128, n_out=8,
                   x_bits=16, w_bits=16, tree_stages=1, n_sets=16384, n_acc=16, fifo_depth=16,
                   loop_len=8, backend="dram", dram=GDDR6_AIM,
                   clock_ghz=1.0 / GDDR6_AIM.tCK_ns, all_bank=all_bank)
    n = _target_capacity(cfg) // sp.capacity_bytes
    tp, pp = _split(cfg, n, tp, pp)
    return System(sp, n, tp, pp, f"aim/{cfg.name}")


def dimc_system(cfg: ModelConfig, tp: int | None = None, pp: int | None = None,
                all_bank: bool = True) -> System:
    """The same organisation with our DIMC macros: 16 channels x 16 banks per module, the same
    number of modules (tp, pp) and the same BYTES (8 GB/module, 128 GB / 512 GB in total).
    Macros are 64 x 64 INT8 (w_bits = x_bits = 8: 8 cycles per bit-serial MAC, 1 adder-tree
    stage) at 1 GHz; a page is 4 KB, so n_sets = 8192 pages per bank keep 32 MB per bank.
    Held equal: channels, banks, GBuf entries (8), OBuf entries (16), queue depths, bytes.
    Not equal: INT8 halves the bytes per element, so the same bytes hold twice as many weights
    and KV elements as the bf16 AiM system (the model and its KV cache need half the bytes)."""
    sp = SimParams(n_ch=16, n_banks=16, n_gbuf=8, q_depth=8, dcs=True, n_in=64, n_out=64,
                   x_bits=8, w_bits=8, tree_stages=1, n_sets=8192, n_acc=16, fifo_depth=16,
                   loop_len=8, backend="dimc", clock_ghz=1.0, all_bank=all_bank)
    n = _target_capacity(cfg) // sp.capacity_bytes
    tp, pp = _split(cfg, n, tp, pp)
    return System(sp, n, tp, pp, f"dimc/{cfg.name}")


def small_system(n_ch: int = 4, n_banks: int = 4, n_sets: int = 64, n_acc: int = 8,
                 n_gbuf: int = 8, n_io: int = 16, all_bank: bool = False,
                 dcs: bool = True) -> System:
    """One small DIMC module expressible in the ISA (n_banks x n_sets <= 256 virtual pages):
    16 x 16 INT8 macros.  ``sim.to_module()`` is the golden-model module."""
    sp = SimParams(n_ch=n_ch, n_banks=n_banks, n_gbuf=n_gbuf, q_depth=8, n_in=n_io,
                   n_out=n_io, x_bits=8, w_bits=8, tree_stages=1, n_sets=n_sets, n_acc=n_acc,
                   fifo_depth=16, loop_len=8, backend="dimc", clock_ghz=1.0,
                   all_bank=all_bank, dcs=dcs)
    return System(sp, 1, 1, 1, "small")
