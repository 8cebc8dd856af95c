"""Energy per decode step from the performance model's event counts and sourced constants.

Every constant is from ../shared/ANCHORS.md ("Energy constants" and the DCIM macro figures) and
is named in the output.  Counts come from :class:`perf.sim.SimResult` (MAC, WR_INP, WR_W,
RD_OUT commands executed by channels, DRAM row activations).  What each back-end pays:

DIMC (SRAM banks, INT8):
  * MAC: every page-MAC multiplies n_in x n_out 8-bit pairs; measured DCIM ~11 fJ/op at 4 nm,
    8b x 8b, 2 ops per MAC  -> 22 fJ per MAC (padding MACs included: the array does them).
  * GBuf: the input tile is written once (WR_INP) and read by each MAC: SRAM 10 pJ per 64-bit
    access (8 KB array).  OBuf read by RD_OUT: the same constant.
  * WR_W (KV append, weight rows): 3.2 pJ per 8-bit weight written (digital 6T CIM, 45 nm).
  * host I/O (WR_INP data in, RD_OUT data out, WR_W data in): HBM2 interface 3.97 pJ/bit.

DRAM-PIM (GDDR6-AiM-like, bf16):
  * MAC: 0.23 pJ per MAC (8-bit MAC, 45 nm: the only sourced MAC constant; it understates a
    bf16 MAC, so the DRAM figure is a lower bound on compute energy).
  * bank reads by MAC columns: every bit of the row streamed into the MAC units at the lowest
    sourced DRAM access energy, HBM2 3.97 pJ/bit (an in-bank access avoids the I/O part, so this
    overstates it; the published 20-40 pJ/bit DRAM figure would be 5-10x higher still).
  * row activations: not separately sourced; included in the per-bit access energy.
  * GBuf/OBuf SRAM and host I/O as for DIMC.
"""
from __future__ import annotations

from dataclasses import dataclass

from perf.sim import SimParams

__all__ = ["CONSTANTS", "step_energy"]


@dataclass(frozen=True)
class Const:
    value: float     # joules per unit
    unit: str
    source: str


CONSTANTS = {
    "dcim_mac_8b": Const(2 * 11e-15, "J per 8b x 8b MAC",
                         "measured DCIM ~11 fJ/op (4 nm, 8b x 8b), 2 ops per MAC"),
    "mac_8b_45nm": Const(0.23e-12, "J per MAC", "8-bit MAC (45 nm): 0.23 pJ"),
    "sram_64b_8kb": Const(10e-12, "J per 64-bit access", "SRAM 64-bit access, 8 KB: 10 pJ"),
    "cim_weight_write_8b": Const(3.2e-12, "J per 8-bit weight written",
                                 "digital 6T CIM: writing an 8-bit weight ~3.2 pJ"),
    "hbm2_bit": Const(3.97e-12, "J per bit", "HBM2: 3.97 pJ/bit"),
}


def step_energy(sp: SimParams, stats: dict, scale: float = 1.0) -> dict:
    """Energy (J) of one run by component, from SimResult.stats; ``scale`` multiplies every count
    (e.g. layers x modules).  Returns {component: joules} plus "total"."""
    K = CONSTANTS
    macs = stats["mac"] * sp.n_in * sp.n_out
    in_bits = sp.n_in * sp.x_bits                 # one GBuf entry
    row_bits = sp.n_out * sp.w_bits               # one WR_W row
    out_bits = sp.n_out * (16 if sp.backend == "dram" else 32)   # one OBuf entry read out
    e = {}
    if sp.backend == "dimc":
        e["mac (dcim_mac_8b)"] = macs * K["dcim_mac_8b"].value
        e["weight/KV write (cim_weight_write_8b)"] = (stats["wr_w"] * row_bits / 8
                                                      * K["cim_weight_write_8b"].value)
    else:
        e["mac (mac_8b_45nm)"] = macs * K["mac_8b_45nm"].value
        e["bank read (hbm2_bit)"] = (stats["mac"] * sp.page_bytes * 8 * K["hbm2_bit"].value)
        e["weight/KV write (hbm2_bit)"] = stats["wr_w"] * row_bits * K["hbm2_bit"].value
    e["GBuf/OBuf (sram_64b_8kb)"] = ((stats["wr_inp"] + stats["mac"]) * in_bits / 64
                                     + stats["rd_out"] * out_bits / 64) * K["sram_64b_8kb"].value
    e["host I/O (hbm2_bit)"] = ((stats["wr_inp"] * in_bits + stats["rd_out"] * out_bits
                                 + stats["wr_w"] * row_bits) * K["hbm2_bit"].value)
    e = {k: v * scale for k, v in e.items()}
    e["total"] = sum(e.values())
    return e
