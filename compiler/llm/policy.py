"""Policies of the LLM step compiler: the partition, controller, allocation, MAC kind and host
of one experiment configuration (docs/compiler.md, "Policies").

``baseline`` is the CENT-faithful PIM-only baseline (CENT, ASPLOS 2025; Yufeng98/CENT
``cent_simulation/TransformerBlock.py``): CENT's mapping (FC row-parallel over all banks and
channels, QK^T token-parallel across banks and channels, SV one head per channel with head dims
across the banks), all-bank MACs (AiM's MAC_ABK), an in-order controller, static allocation,
and a host whose result reads block (CENT's DMA: ``RD_MAC`` is ``AiM_DMA_blocking``, MACs are
not; arkhadem/aim_simulator ``src/base/request.h``).  PIMphony's techniques apply on top of the
same all-bank hardware: ``tcp`` (SV token-partitioned too), ``dcs`` (dynamic command
scheduling; the controller tracks the reads' dependencies, so the host no longer blocks),
``dpa`` (pages on demand), ``all``.  ``baseline_1bank`` / ``all_1bank`` are labelled
ablations with single-bank MACs (the HFP in-order baseline and the TCP+DCS+DPA of before).
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler.llm.system import System

__all__ = ["Policy", "POLICIES", "policy", "PARTITIONS"]

PARTITIONS = ("CENT", "TCP", "HFP")


@dataclass(frozen=True)
class Policy:
    """One configuration.

    partition  "CENT" (K token-parallel over every channel and bank, V head-per-channel),
               "TCP" (K and V token-parallel over every channel), "HFP" (a KV head per channel)
    dcs        dynamic command scheduling (False: the in-order controller)
    alloc      "static" (max_context reserved per request) or "dpa" (pages on demand)
    all_bank   MAC_AB wherever a round covers one set of every bank (False: single-bank MACs)
    blocking   the host waits for every result read before pushing on (perf.program.WAIT)
    """
    name: str
    partition: str
    dcs: bool
    alloc: str
    all_bank: bool
    blocking: bool
    label: str

    def system(self, system: System) -> System:
        """``system`` with this policy's controller (dcs) and MAC kind (all_bank)."""
        if not isinstance(system, System):
            raise ValueError(f"Policy {self.name}: system={system!r} must be a System")
        sp = system.sim.with_(dcs=self.dcs, all_bank=self.all_bank)
        return System(sp, system.n_modules, system.tp, system.pp, system.name)

    @property
    def compile_kw(self) -> dict:
        """Keyword arguments of :func:`compiler.llm.compile_step` / ``max_batch``."""
        return dict(partition=self.partition, alloc=self.alloc, blocking=self.blocking)


POLICIES = {p.name: p for p in (
    Policy("baseline", "CENT", False, "static", True, True,
           "baseline (CENT): all-bank MAC, in-order, blocking reads, static"),
    Policy("tcp", "TCP", False, "static", True, True, "+TCP alone"),
    Policy("dcs", "CENT", True, "static", True, False, "+DCS alone"),
    Policy("dpa", "CENT", False, "dpa", True, True, "+DPA alone"),
    Policy("all", "TCP", True, "dpa", True, False, "all: TCP + DCS + DPA"),
    Policy("baseline_1bank", "HFP", False, "static", False, False,
           "ablation: single-bank MACs, HFP, in-order, static"),
    Policy("all_1bank", "TCP", True, "dpa", False, False,
           "ablation: single-bank MACs, TCP + DCS + DPA"),
)}


def policy(name: str) -> Policy:
    """The :class:`Policy` called ``name``; ValueError naming it otherwise."""
    if name not in POLICIES:
        raise ValueError(f"policy={name!r}: not one of {', '.join(POLICIES)}")
    return POLICIES[name]
