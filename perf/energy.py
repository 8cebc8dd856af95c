"""Energy per token from the performance model's event counts and sourced constants.

Every constant is a :class:`Const` of :data:`CONSTANTS` with its source, named in every result
(component names carry the constants they use).  What each part of a system pays:

DRAM-PIM channel (GDDR6-AiM as CENT models it, ``cent_simulation/cent_power_calculator.py``;
ANCHORS.md, "CENT ... Power-model inputs", per channel):
  * column MAC: ``3 P_RD tCCDL`` per all-bank column MAC (MAC16: 16 banks x 32 B), 1/16 of it
    per bank column (CENT charges a single-bank ``MAC`` as ``MAC16 / 16``);
  * activation + precharge: ``P_ACT tRC`` per bank row activation (KV-append WR_W included);
  * bursts read / written at the array: ``P_RD tBL`` / ``P_WR tBL`` per 32-B burst (RD_OUT,
    WR_W; CENT's RD / WR terms); data on the DQ pins: 5.5 pJ/bit for every 256-bit word moved
    (WR_INP, RD_OUT, WR_W: CENT's DQ term);
  * controller: ``TRX`` for one cycle at 2 GHz per channel instruction and ``PHY`` for one
    cycle per DRAM command, per 2 channels (CENT's MEM_CTR term);
  * GBuf/OBuf SRAM: 10 pJ per 64-bit access (8 KB SRAM, ANCHORS.md energy constants);
  * static: ACT_STBY x the time the channel computes (open-page rows), PRE_STBY x the rest
    (CENT's standby terms); refresh: one activation of every bank per REF every tREFI (an
    estimate from the per-activation energy: no refresh current is sourced).
DIMC channel (SRAM macros, INT8):
  * MAC: the measured DCIM ~11 fJ/op (4 nm, 8b x 8b), 2 ops per MAC, over the whole
    n_in x n_out array of the weight set used (padding included: the array does it); the
    measured figure includes reading the set in place;
  * weight/KV writes: 3.2 pJ per 8-bit weight (digital 6T CIM, a 45 nm model);
  * GBuf/OBuf SRAM as above; host I/O at the DQ figure (the same channel interface as the
    DRAM-PIM channels beside it: an assumption); controller TRX per instruction (no DRAM PHY);
  * SRAM leakage: no sourced figure, left out (listed in :data:`OMITTED`).
Plain DRAM feeding DIMC macros (KV streamed in): ``P_RD tBL`` + DQ per 32-B burst,
``P_ACT tRC`` per 2 KB row, 3.2 pJ per byte written into a macro.
Link: 4.4 pJ/bit (CENT's PCIe/CXL figure) for every bit of every flit moved.
"""
from __future__ import annotations

import math
from dataclasses import asdict

from perf.host import Const
from perf.params import SimParams

__all__ = ["Const", "CONSTANTS", "OMITTED", "module_dynamic", "kv_stream_dynamic",
           "link_dynamic", "dram_static_power", "token_energy", "sources"]

_PC = "CENT (Yufeng98/CENT) cent_simulation/cent_power_calculator.py "
_A = "ANCHORS.md, Energy constants: "

CONSTANTS = {
    "P_ACT_STBY": Const(263.75e-3, "W per channel",
                        _PC + "DRAM_POWER ACT_STBY = 527.5 / 2 mW (ANCHORS.md)"),
    "P_PRE_STBY": Const(183.15e-3, "W per channel",
                        _PC + "DRAM_POWER PRE_STBY = 366.3 / 2 mW (ANCHORS.md)"),
    "P_ACT": Const(66.3e-3, "W per channel", _PC + "DRAM_POWER ACT = 132.6 / 2 mW (ANCHORS.md)"),
    "P_RD": Const(438.15e-3, "W per channel", _PC + "DRAM_POWER RD = 876.3 / 2 mW (ANCHORS.md)"),
    "P_WR": Const(553.15e-3, "W per channel",
                  _PC + "DRAM_POWER WR = 1106.3 / 2 mW (ANCHORS.md)"),
    "tRC": Const(44.5e-9, "s", _PC + "tRC = 44.5 ns (ANCHORS.md)"),
    "tBL": Const(1.25e-9, "s", _PC + "tBL = 1.25 ns (ANCHORS.md)"),
    "tCCDL": Const(1.0e-9, "s", _PC + "tCCDL = 1.0 ns (ANCHORS.md)"),
    "DQ": Const(5.5e-12, "J per bit", _PC + "DQ_ENERGY = 5.5 pJ/bit (ANCHORS.md)"),
    "WORD": Const(256, "bit per DQ word / burst", _PC + "WORD_SIZE = 256"),
    "LINK": Const(4.4e-12, "J per bit", _PC + "PCIE_ENERGY = 4.4 pJ/bit (ANCHORS.md)"),
    "P_TRX": Const(267.7082056e-3, "W per controller", _PC + "CTRL_POWER TRX (ANCHORS.md), "
                   "charged for one FREQ cycle per channel instruction (MEM_CTR)"),
    "P_PHY": Const(381.0445262e-3, "W per controller", _PC + "CTRL_POWER PHY (ANCHORS.md), "
                   "charged for one FREQ cycle per DRAM command (MEM_CTR)"),
    "CH_PER_CTRL": Const(2, "channels per controller", _PC + "CH_PER_CTRL = 2"),
    "FREQ": Const(2.0e9, "Hz", _PC + "FREQ = 2 GHz"),
    "DCIM_OP": Const(11e-15, "J per op (2 ops per MAC)",
                     "ANCHORS.md, Energy constants: measured DCIM ~11 fJ/op (4 nm, 8b x 8b)"),
    "SRAM_64B": Const(10e-12, "J per 64-bit access", _A + "SRAM 64-bit access, 8 KB: 10 pJ"),
    "CIM_WRITE_8B": Const(3.2e-12, "J per 8-bit weight written",
                          _A + "digital 6T CIM (45 nm model): writing an 8-bit weight ~3.2 pJ"),
}

#: what is not charged, and why (repeated in every result)
OMITTED = [
    "DIMC SRAM leakage: no sourced figure (left out rather than invented)",
    "host accelerator (CENT's PNM: EXP/VEC/RED units, RISC-V cores, shared/instruction "
    "buffers) energy: CENT's ACCEL_POWER/SRAM_POWER tables do not state their units",
    "DRAM refresh current (IDD5) is not sourced: refresh is estimated as one activation "
    "(P_ACT tRC) of every bank per REF every tREFI",
]


def _v(name: str) -> float:
    return CONSTANTS[name].value


def _e_mac16() -> float:
    """J per all-bank column MAC (16 banks x 32 B): 3 P_RD tCCDL."""
    return 3 * _v("P_RD") * _v("tCCDL")


def _e_act() -> float:
    return _v("P_ACT") * _v("tRC")


def _ctrl(n: float, power: str) -> float:
    """CENT's MEM_CTR: power for one FREQ cycle per command, per CH_PER_CTRL channels."""
    return n * _v(power) / _v("CH_PER_CTRL") / _v("FREQ")


def _check(sp, stats, need):
    if not isinstance(sp, SimParams):
        raise ValueError(f"energy: sp={sp!r} must be a SimParams")
    if not isinstance(stats, dict) or any(k not in stats for k in need):
        raise ValueError(f"energy: stats={stats!r:.80} must be SimResult.stats (counters "
                         f"{', '.join(need)})")


def module_dynamic(sp: SimParams, stats: dict) -> dict:
    """Dynamic energy (J) of one module run, by component, from :class:`perf.sim.SimResult`
    ``stats``: bank MACs ``mac`` (an all-bank MAC counts n_banks) of which ``mac_ab`` all-bank
    MACs per channel, channel commands wr_inp / wr_w / rd_out, bank-row activations ``act``
    (an ACT16 counts n_banks) of which ``act16`` all-bank ones.  Every bank MAC streams
    ``page_bytes / 32`` columns; a single-bank MAC issues one DRAM column command per column,
    an all-bank MAC one MAC16 per column for all its banks (CENT's MAC vs MAC16).  ValueError
    naming a bad argument."""
    need = ("mac", "wr_inp", "wr_w", "rd_out", "act")
    _check(sp, stats, need)
    word = _v("WORD")
    in_bits = sp.n_in * sp.x_bits                        # one GBuf entry
    row_bits = sp.n_out * sp.w_bits                      # one WR_W row
    out_bits = sp.n_out * (16 if sp.backend == "dram" else 32)   # one OBuf entry read out
    bursts = lambda bits: math.ceil(bits / word)         # noqa: E731
    n_io = stats["wr_inp"] * bursts(in_bits) + stats["rd_out"] * bursts(out_bits) \
        + stats["wr_w"] * bursts(row_bits)
    mac_ab, act16 = stats.get("mac_ab", 0), stats.get("act16", 0)
    mac_cmds = stats["mac"] - mac_ab * (sp.n_banks - 1)  # channel MAC instructions
    isr = mac_cmds + stats["wr_inp"] + stats["wr_w"] + stats["rd_out"]
    e = {"GBuf/OBuf (SRAM_64B)": ((stats["wr_inp"] + mac_cmds) * in_bits
                                  + stats["rd_out"] * out_bits) / 64 * _v("SRAM_64B")}
    if sp.backend == "dram":
        cols = max(1, sp.page_bytes // (word // 8))
        col_cmds = mac_cmds * cols                       # MAC or MAC16 column commands
        act_cmds = stats["act"] - act16 * (sp.n_banks - 1)          # ACT or ACT16 commands
        e["column MAC (3 P_RD tCCDL / 16 per bank column)"] = (stats["mac"] * cols
                                                              * _e_mac16() / 16)
        e["ACT/PRE (P_ACT tRC)"] = stats["act"] * _e_act()
        e["array RD/WR bursts (P_RD, P_WR x tBL)"] = (
            stats["rd_out"] * bursts(out_bits) * _v("P_RD")
            + stats["wr_w"] * bursts(row_bits) * _v("P_WR")) * _v("tBL")
        e["DQ I/O (DQ x WORD)"] = n_io * word * _v("DQ")
        dram_cmds = 2 * act_cmds + col_cmds + n_io          # ACT + PRE, columns, bursts
        e["controller (P_TRX, P_PHY)"] = _ctrl(isr, "P_TRX") + _ctrl(dram_cmds, "P_PHY")
    else:
        e["MAC (DCIM_OP x 2 x n_in x n_out)"] = (stats["mac"] * sp.n_in * sp.n_out * 2
                                                 * _v("DCIM_OP"))
        e["weight/KV write (CIM_WRITE_8B)"] = stats["wr_w"] * row_bits / 8 * _v("CIM_WRITE_8B")
        e["host I/O (DQ, assumed)"] = (stats["wr_inp"] * in_bits + stats["rd_out"] * out_bits
                                       + stats["wr_w"] * row_bits) * _v("DQ")
        e["controller (P_TRX)"] = _ctrl(isr, "P_TRX")
    return e


def kv_stream_dynamic(n_bytes, row_bytes: int = 2048, macro_write: bool = True) -> dict:
    """Dynamic energy (J) of streaming ``n_bytes`` from plain DRAM into DIMC macros: per 32-B
    burst ``P_RD tBL`` and 256 DQ bits, per ``row_bytes`` row one activation, and (if
    ``macro_write``) 3.2 pJ per byte written into a macro."""
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, (int, float)) or not n_bytes >= 0:
        raise ValueError(f"kv_stream_dynamic: n_bytes={n_bytes!r} must be a number >= 0")
    word = _v("WORD")
    b = n_bytes * 8 / word
    e = {"KV stream: array RD bursts (P_RD tBL)": b * _v("P_RD") * _v("tBL"),
         "KV stream: DQ I/O (DQ x WORD)": b * word * _v("DQ"),
         "KV stream: ACT/PRE (P_ACT tRC)": n_bytes / row_bytes * _e_act()}
    if macro_write:
        e["KV stream: macro write (CIM_WRITE_8B)"] = n_bytes * _v("CIM_WRITE_8B")
    return e


def link_dynamic(n_bits) -> dict:
    """Link energy (J) of ``n_bits`` moved (whole flits)."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, float)) or not n_bits >= 0:
        raise ValueError(f"link_dynamic: n_bits={n_bits!r} must be a number >= 0")
    return {"link (LINK)": n_bits * _v("LINK")}


def dram_static_power(channels, refresh_interval_s: float, banks: int = 16) -> dict:
    """Static power (W) of ``channels`` DRAM channels: ``P_ACT_STBY`` while computing,
    ``P_PRE_STBY`` otherwise (both per channel; weighted by :func:`token_energy`), and the
    refresh estimate ``banks x P_ACT tRC`` per ``refresh_interval_s`` (tREFI)."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 0:
        raise ValueError(f"dram_static_power: channels={channels!r} must be an int >= 0")
    if not refresh_interval_s > 0:
        raise ValueError(f"dram_static_power: refresh_interval_s={refresh_interval_s!r} must "
                         "be > 0")
    return {"active": channels * _v("P_ACT_STBY"), "precharged": channels * _v("P_PRE_STBY"),
            "refresh": channels * banks * _e_act() / refresh_interval_s}


def token_energy(dynamic_j: dict, static: list, window_s: float, tokens: float) -> dict:
    """Energy per token: ``dynamic_j`` {component: J for ``tokens`` tokens} plus, for each
    (label, power dict of :func:`dram_static_power`, active_s) in ``static``, the standby
    energy over ``window_s`` seconds (active standby for ``active_s`` of it, precharged for the
    rest) and refresh over the window, all divided by ``tokens``.

    Returns ``components`` {name: {"j": J per token, "kind": "dynamic" | "static"}},
    ``dynamic_j``, ``static_j``, ``total_j`` (J per token), ``omitted`` [str]."""
    if not tokens > 0 or not window_s > 0:
        raise ValueError(f"token_energy: tokens={tokens!r} and window_s={window_s!r} must be "
                         "> 0")
    comp = {k: {"j": v / tokens, "kind": "dynamic"} for k, v in dynamic_j.items()}
    for label, p, active_s in static:
        a = min(max(active_s, 0.0), window_s)
        comp[f"{label}: standby (P_ACT_STBY, P_PRE_STBY)"] = {
            "j": (p["active"] * a + p["precharged"] * (window_s - a)) / tokens,
            "kind": "static"}
        comp[f"{label}: refresh (P_ACT tRC per bank per tREFI)"] = {
            "j": p["refresh"] * window_s / tokens, "kind": "static"}
    dyn = sum(c["j"] for c in comp.values() if c["kind"] == "dynamic")
    st = sum(c["j"] for c in comp.values() if c["kind"] == "static")
    return {"components": comp, "dynamic_j": dyn, "static_j": st, "total_j": dyn + st,
            "omitted": list(OMITTED)}


def sources() -> dict:
    """{name: {value, unit, source}} of every constant."""
    return {k: asdict(c) for k, c in CONSTANTS.items()}

