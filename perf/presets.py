"""System presets of the performance experiments and the policies they run.

Systems (``--system``); a *rank* is one module of the compiler (``compiler.llm.System``), one
CENT CXL device by default (32 channels of 16 banks):

* ``aim`` (a): CENT-class PIM-only system: GDDR6-AiM DRAM-PIM channels (16 banks, 512 MiB
  each), weights and KV cache in the banks; default policy ``baseline``.
* ``pimphony`` (b): the same hardware with PIMphony's techniques; default policy ``all``.
* ``dimc`` (c): DIMC channels (our SRAM macros, INT8) whose SRAM is bounded by an area
  budget (``perf.area.dimc_budget_area``; default: the macro area of the model's weights), the
  KV cache in as many plain DRAM channels (no PIM) as ``aim`` has; attention streams the KV
  through the macros.
* ``hybrid`` (d): DIMC channels for the weight GEMVs (weights stationary, INT8) and DRAM-PIM
  channels (as ``aim``, holding only the KV cache) for attention.
* ``dimc-whatif``: today's DIMC what-if (labelled): the AiM organisation and bytes (512 MiB of
  computable SRAM per channel) with SRAM-macro timing; not a physical design.

Policies (``--policy``): the compiler's (compiler/llm/policy.py): partition (CENT/TCP/HFP),
controller (in-order/DCS), allocation (static/DPA), MAC kind (all-bank/single-bank) and
whether the host blocks on result reads; ``baseline`` is CENT's, each technique alone on it,
``all``, and the single-bank ablations ``baseline_1bank``, ``all_1bank``.
"""
from __future__ import annotations

import math
from compiler import llm as L

__all__ = ["SYSTEMS", "DEFAULT_POLICY", "LABEL", "Policy", "POLICIES", "CH_PER_RANK", "policy",
           "BASELINE_IS_CENT", "default_channels", "default_split", "aim_rank", "dimc_rank",
           "DIMC_SET_BYTES"]

SYSTEMS = ("aim", "pimphony", "dimc", "hybrid", "dimc-whatif")
DEFAULT_POLICY = {"aim": "baseline", "pimphony": "all", "dimc": "all", "hybrid": "all",
                  "dimc-whatif": "all"}
LABEL = {"aim": "(a) CENT-class AiM, PIM-only", "pimphony": "(b) AiM + PIMphony techniques",
         "dimc": "(c) DIMC (area budget) + KV in DRAM", "hybrid": "(d) hybrid DIMC + DRAM-PIM",
         "dimc-whatif": "what-if: 512 MiB computable SRAM per channel"}
#: channels of one rank by default: one CENT CXL device (CENT, ANCHORS.md: 32 GDDR6-AiM
#: channels per CXL device)
CH_PER_RANK = 32
DIMC_SET_BYTES = 64 * 64          # one INT8 weight set of the DIMC macro (n_in x n_out x 8 bit)
#: whether the ``baseline`` policy is CENT's (all-bank MAC_ABK, non-blocking MACs, blocking
#: result reads, CENT's mapping)
BASELINE_IS_CENT = L.POLICIES["baseline"].partition == "CENT"


#: the compiler's policies (compiler/llm/policy.py): ``baseline`` is CENT's (all-bank MAC_ABK,
#: in-order, blocking result reads, static allocation, CENT's mapping), each technique alone on
#: the same all-bank hardware, ``all``, and the single-bank ablations
Policy, POLICIES, policy = L.Policy, L.POLICIES, L.policy


def default_channels(cfg: L.ModelConfig) -> int:
    """PIMphony's capacities (ANCHORS.md): 128 GB for LLM-7B, 512 GB for LLM-72B, i.e. 256 /
    1024 channels of 512 MiB (8 / 32 CENT devices)."""
    return 256 if cfg.n_params < 30e9 else 1024


def default_split(cfg: L.ModelConfig, ranks: int) -> tuple[int, int]:
    """(tp, pp) of ``ranks`` ranks: tp = gcd(ranks, KV heads) (never splitting a KV head, as
    the compiler requires today), the rest pipeline stages (at most the layers)."""
    tp = math.gcd(ranks, cfg.kv_heads)
    return tp, ranks // tp


def aim_rank(cfg: L.ModelConfig, n_ch: int, pol, out_ports: int | None = None,
             extra_sets: int = 0, wide_inp: int = 1):
    """One GDDR6-AiM rank of ``n_ch`` channels: the compiler's AiM module
    (``compiler.llm.aim_system``) with ``n_ch`` channels, the policy's controller and MAC
    kind (``pol``: a Policy), one hub port per channel
    (or ``out_ports``) and ``extra_sets`` more rows per bank (capacity the caller accounts
    for, e.g. the hybrid's weights living elsewhere); ``wide_inp`` tiles per multicast
    WR_INP host beat (1..n_ch; 1: one WR_INP per channel tile)."""
    sp = L.aim_system(cfg).sim
    return sp.with_(n_ch=n_ch, dcs=pol.dcs, all_bank=pol.all_bank, out_ports=out_ports or n_ch,
                    n_sets=sp.n_sets + extra_sets, wide_inp=wide_inp)


def dimc_rank(cfg: L.ModelConfig, n_ch: int, pol, n_sets: int | None = None,
              out_ports: int | None = None, wide_inp: int = 1, all_bank: bool = False):
    """One DIMC rank of ``n_ch`` channels (``compiler.llm.dimc_system``'s module: 16 banks of
    64 x 64 INT8 macros at 1 GHz) with ``n_sets`` weight sets per bank (default: the what-if's
    8192 = 32 MiB per bank, 512 MiB per channel), the policy's controller (``pol.dcs``) and
    single-bank MACs whatever the policy: an all-bank MAC is AiM's DRAM-row mechanism (one
    ACT16 for 16 banks); on SRAM macros it only pads the layout to 16-bank stripes (3.2x the
    weight pages of Llama-3.1-8B on 32 channels x 8 ranks).  ``wide_inp``: tiles per
    multicast WR_INP host beat (1..n_ch; ``ModuleParams.wide_inp``).  ``all_bank``: use the
    policy's all-bank MACs anyway (the what-if of bench/dispatch.py: the padding is paid for
    the dispatcher's sake)."""
    sp = L.dimc_system(cfg).sim
    return sp.with_(n_ch=n_ch, dcs=pol.dcs, all_bank=all_bank and pol.all_bank,
                    out_ports=out_ports or n_ch,
                    n_sets=n_sets or sp.n_sets, wide_inp=wide_inp)
