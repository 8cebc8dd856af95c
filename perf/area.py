"""Area and capacity of DIMC, DRAM-PIM and hybrid systems, from sourced densities.

DCIM density (ANCHORS.md, "Digital SRAM compute-in-memory macros"; the arithmetic is in
:class:`DcimMacro` and repeated in every result):

* TSMC 5 nm (ISSCC 2022, 11.6): 64 inputs x 64 outputs x 4-bit weights x 4 weight rows
  = 65,536 bit in 0.0133 mm^2 -> 4.93e6 bit/mm^2 (0.616 MB/mm^2).
* TSMC 4 nm (ISSCC 2023, 7.4): 144 inputs x 16 outputs x 12-bit weights (three 4-bit slices,
  the largest weight it supports) x 2 ping-pong weight sets = 55,296 bit in 0.0172 mm^2
  -> 3.21e6 bit/mm^2.  The anchors state the geometry and the area, not the bit count: the
  bit count is derived from the geometry.

Only macro area is counted for SRAM (buffers, controllers, I/O of a DIMC module are not
sourced): a lower bound.  d-Matrix Corsair: 2 GB SRAM per card (ANCHORS.md), read as 2 GiB.

DRAM-PIM (GDDR6-AiM as CENT simulates it): aim_simulator's ``GDDR6_AiM_org`` preset
(arkhadem/aim_simulator src/dram/impl/GDDR6.cpp: 128 Gb, x16, 32 channels, 4 bank groups x 4
banks, 16K rows, 1K columns) and CENT's defaults (cent_simulation/utils.py: --DRAM-row 16384,
--DRAM-column 1024 bf16, --num-banks 16, --num-channels 32): a row is 1024 x 16 bit = 2 KiB, a
bank 32 MiB, a channel 512 MiB, a device 16 GiB.  No GDDR6-AiM die area is sourced: DRAM area
is reported only when the caller gives ``dram_mm2_per_device`` and is otherwise listed under
``mm2_unsourced``.  Each CXL device has CENT's controller die (cost_model/cost_model.py,
7 nm): PNM 1.02 + DRAM controller 4.5 + DRAM PHY 10.8 + PCIe controller and PHY 2.64
= 18.96 mm^2.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from perf.host import Const
from spec.params import check_int

__all__ = ["DcimMacro", "DramGeometry", "TSMC_5NM", "TSMC_4NM", "AIM_GEOMETRY", "GIB",
           "CONSTANTS", "corsair_cards", "sram_area", "sram_capacity", "dram_capacity",
           "aim_area", "dimc_budget_area", "hybrid_area", "dimc_whatif_area"]

GIB = 1 << 30
_ANCH = "ANCHORS.md, Digital SRAM compute-in-memory macros: "
_CENT_COST = "CENT (Yufeng98/CENT) cost_model/cost_model.py "

CONSTANTS = {
    "corsair_sram_bytes": Const(2 * GIB, "B of SRAM per card",
                                "ANCHORS.md, d-Matrix Corsair: 2 GB SRAM per card (as 2 GiB)"),
    "cent_ctrl_mm2": Const(1.02 + 4.5 + 10.8 + 2.64, "mm^2 per CXL device (7 nm)",
                           _CENT_COST + "CENT_PNM_die_size 1.02 + CENT_DRAM_controller_die_size"
                           " 4.5 + CENT_DRAM_PHY_size 10.8 + CENT_PHIe_controller_PHY_size 2.64"),
}


def _num(what: str, v, lo_open: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or v <= lo_open:
        raise ValueError(f"{what}={v!r} must be a finite number > {lo_open:g}")
    return float(v)


@dataclass(frozen=True)
class DcimMacro:
    """One DCIM macro: ``n_in`` x ``n_out`` x ``w_bits`` x ``n_sets`` bits in ``area_mm2``."""
    name: str
    n_in: int
    n_out: int
    w_bits: int
    n_sets: int
    area_mm2: float
    source: str

    def __post_init__(self):
        for n in ("n_in", "n_out", "w_bits", "n_sets"):
            check_int(f"DcimMacro {self.name!r}: {n}", getattr(self, n), 1)
        _num(f"DcimMacro {self.name!r}: area_mm2", self.area_mm2)

    @property
    def bits(self) -> int:
        return self.n_in * self.n_out * self.w_bits * self.n_sets

    @property
    def bits_per_mm2(self) -> float:
        return self.bits / self.area_mm2

    @property
    def arithmetic(self) -> str:
        return (f"{self.n_in} inputs x {self.n_out} outputs x {self.w_bits} bit x {self.n_sets} "
                f"weight sets = {self.bits} bit in {self.area_mm2} mm^2 = "
                f"{self.bits_per_mm2 / 1e6:.3f} Mbit/mm^2 ({self.bits_per_mm2 / 8e6:.3f} MB/mm^2)")


TSMC_5NM = DcimMacro("tsmc5nm", 64, 64, 4, 4, 0.0133,
                     _ANCH + "TSMC 5 nm (ISSCC 2022, 11.6): 64 x 64, 4-bit weights, 4 weight "
                     "rows, 0.0133 mm^2")
TSMC_4NM = DcimMacro("tsmc4nm", 144, 16, 12, 2, 0.0172,
                     _ANCH + "TSMC 4 nm (ISSCC 2023, 7.4): 144 x 16, weights up to 12 bit (4-bit "
                     "slices), ping-pong weight rows, 0.0172 mm^2; bit count derived from this "
                     "geometry")


@dataclass(frozen=True)
class DramGeometry:
    """DRAM-PIM organisation: ``banks`` x ``rows`` x ``columns`` x ``column_bits`` per channel,
    ``channels_per_device`` channels per device."""
    name: str = "gddr6-aim"
    channels_per_device: int = 32
    banks: int = 16
    rows: int = 1 << 14
    columns: int = 1 << 10
    column_bits: int = 16
    source: str = ("arkhadem/aim_simulator src/dram/impl/GDDR6.cpp org preset GDDR6_AiM_org "
                   "{128 << 10 Mb, DQ 16, {32 Ch, 4 Bg, 4 Ba, 1 << 14 Ro, 1 << 10 Co}}; CENT "
                   "cent_simulation/utils.py --DRAM-row 16384, --DRAM-column 1024, --num-banks "
                   "16, --num-channels 32")

    def __post_init__(self):
        for n in ("channels_per_device", "banks", "rows", "columns", "column_bits"):
            check_int(f"DramGeometry {self.name!r}: {n}", getattr(self, n), 1)

    @property
    def row_bytes(self) -> int:
        return self.columns * self.column_bits // 8

    @property
    def channel_bytes(self) -> int:
        return self.banks * self.rows * self.row_bytes

    @property
    def device_bytes(self) -> int:
        return self.channels_per_device * self.channel_bytes

    @property
    def arithmetic(self) -> str:
        return (f"row {self.columns} x {self.column_bits} bit = {self.row_bytes} B; bank "
                f"{self.rows} rows = {self.rows * self.row_bytes / 2**20:g} MiB; channel "
                f"{self.banks} banks = {self.channel_bytes / 2**20:g} MiB; device "
                f"{self.channels_per_device} channels = {self.device_bytes / GIB:g} GiB")


AIM_GEOMETRY = DramGeometry()


def corsair_cards(n_bytes) -> float:
    """SRAM bytes in d-Matrix Corsair-card equivalents (2 GiB of SRAM per card)."""
    n = check_int("corsair_cards: n_bytes", n_bytes, 0)
    return n / CONSTANTS["corsair_sram_bytes"].value


def _macro(what: str, macro) -> DcimMacro:
    if not isinstance(macro, DcimMacro):
        raise ValueError(f"{what}: macro={macro!r} must be a DcimMacro")
    return macro


def _sram_entry(module: str, count: int, macros_per: int, m: DcimMacro, how: str) -> dict:
    b = count * macros_per * m.bits // 8
    mm2 = count * macros_per * m.area_mm2
    return {"module": module, "kind": "dimc", "count": count, "macros": count * macros_per,
            "capacity_bytes": b, "mm2": mm2, "corsair_cards": corsair_cards(b),
            "arithmetic": f"{how}; {count} x {macros_per} macros x {m.area_mm2} mm^2 = "
                          f"{mm2:.6g} mm^2, {b} B = {b / GIB:.6g} GiB ({m.arithmetic})"}


def sram_area(n_bytes, macro: DcimMacro = TSMC_5NM) -> dict:
    """Macros and mm^2 to hold ``n_bytes`` of computable SRAM: ceil(8 n / macro bits) macros."""
    n = check_int("sram_area: n_bytes", n_bytes, 1)
    m = _macro("sram_area", macro)
    k = math.ceil(n * 8 / m.bits)
    return _sram_entry("sram", 1, k, m, f"{n} B = {8 * n} bit / {m.bits} bit per macro "
                       f"-> {k} macros")


def sram_capacity(area_mm2, macro: DcimMacro = TSMC_5NM) -> dict:
    """Computable SRAM that fits ``area_mm2`` (mm^2) of macros: floor(area / macro area)."""
    a = _num("sram_capacity: area_mm2", area_mm2)
    m = _macro("sram_capacity", macro)
    k = math.floor(a / m.area_mm2 + 1e-9)
    if k < 1:
        raise ValueError(f"sram_capacity: area_mm2={area_mm2!r} holds no {m.name} macro "
                         f"({m.area_mm2} mm^2)")
    return _sram_entry("sram", 1, k, m, f"budget {a:g} mm^2 / {m.area_mm2} mm^2 -> {k} macros")


def dram_capacity(channels, geometry: DramGeometry = AIM_GEOMETRY, kind: str = "dram-pim",
                  dram_mm2_per_device=None) -> dict:
    """Module entries [channels, controller dies] of ``channels`` DRAM channels in
    ceil(channels / channels_per_device) devices: bytes, and mm^2 of the CENT controller die per
    device; the channels' mm^2 is ``devices * dram_mm2_per_device`` if given, else None (no
    sourced GDDR6-AiM die area).  ``kind``: "dram-pim" (computes) or "dram" (storage only)."""
    c = check_int("dram_capacity: channels", channels, 1)
    if not isinstance(geometry, DramGeometry):
        raise ValueError(f"dram_capacity: geometry={geometry!r} must be a DramGeometry")
    if kind not in ("dram-pim", "dram"):
        raise ValueError(f"dram_capacity: kind={kind!r} must be 'dram-pim' or 'dram'")
    if dram_mm2_per_device is not None:
        _num("dram_capacity: dram_mm2_per_device", dram_mm2_per_device)
    g = geometry
    dev = math.ceil(c / g.channels_per_device)
    b = c * g.channel_bytes
    ctrl = CONSTANTS["cent_ctrl_mm2"].value
    return [
        {"module": f"{kind} channels", "kind": kind, "count": c, "devices": dev,
         "capacity_bytes": b,
         "mm2": None if dram_mm2_per_device is None else dev * dram_mm2_per_device,
         "arithmetic": f"{c} channels x {g.channel_bytes} B = {b / GIB:g} GiB in {dev} devices "
                       f"({g.arithmetic})"},
        {"module": "CXL controller dies", "kind": "controller", "count": dev, "capacity_bytes": 0,
         "mm2": dev * ctrl, "arithmetic": f"{dev} devices x {ctrl:g} mm^2"},
    ]


def _system(name: str, modules: list, notes: list) -> dict:
    """A system result: ``modules`` (entries with capacity_bytes, mm2 or None, arithmetic),
    capacity_bytes, sram_bytes, dram_bytes, corsair_cards, ``mm2_sourced`` (sum over modules
    with a sourced area: a lower bound when ``mm2_unsourced`` is not empty), mm2_unsourced,
    notes, constants {name: {value, unit, source}}."""
    sram = sum(m["capacity_bytes"] for m in modules if m["kind"] == "dimc")
    dram = sum(m["capacity_bytes"] for m in modules if m["kind"] in ("dram-pim", "dram"))
    srcs = {k: asdict(c) for k, c in CONSTANTS.items()}
    return {"system": name, "modules": modules, "capacity_bytes": sram + dram,
            "sram_bytes": sram, "dram_bytes": dram, "corsair_cards": corsair_cards(sram),
            "mm2_sourced": sum(m["mm2"] for m in modules if m["mm2"] is not None),
            "mm2_unsourced": [m["module"] for m in modules if m["mm2"] is None],
            "notes": notes, "constants": srcs}


def _add_sources(sysd: dict, macro: DcimMacro | None, geometry: DramGeometry | None) -> dict:
    if macro is not None:
        sysd["constants"][f"macro {macro.name}"] = {"value": macro.bits_per_mm2,
                                                    "unit": "bit/mm^2", "source": macro.source}
    if geometry is not None:
        sysd["constants"][f"geometry {geometry.name}"] = {
            "value": geometry.channel_bytes, "unit": "B per channel", "source": geometry.source}
    return sysd


_MACRO_ONLY = "SRAM area is macro area only (DIMC buffers, controllers, I/O not sourced)"
_NO_DRAM_MM2 = "DRAM die area not sourced: counted only when dram_mm2_per_device is given"


def aim_area(channels, geometry: DramGeometry = AIM_GEOMETRY, dram_mm2_per_device=None) -> dict:
    """Preset (a): a CENT-class AiM system of ``channels`` DRAM-PIM channels (16 banks each):
    capacity, devices, controller mm^2 (and DRAM mm^2 when ``dram_mm2_per_device`` is given)."""
    mods = dram_capacity(channels, geometry, "dram-pim", dram_mm2_per_device)
    return _add_sources(_system("aim", mods, [_NO_DRAM_MM2]), None, geometry)


def dimc_budget_area(area_mm2, kv_channels, dimc_channels=16, macro: DcimMacro = TSMC_5NM,
                     geometry: DramGeometry = AIM_GEOMETRY, dram_mm2_per_device=None) -> dict:
    """Preset (c): DIMC weights bounded by an SRAM area budget of ``area_mm2`` (mm^2, split
    evenly over ``dimc_channels``), KV cache in ``kv_channels`` plain DRAM channels (read into
    the macros to compute)."""
    a = _num("dimc_budget_area: area_mm2", area_mm2)
    ch = check_int("dimc_budget_area: dimc_channels", dimc_channels, 1)
    m = _macro("dimc_budget_area", macro)
    k = math.floor(a / ch / m.area_mm2 + 1e-9)
    if k < 1:
        raise ValueError(f"dimc_budget_area: area_mm2={area_mm2!r} over dimc_channels={ch} "
                         f"leaves no {m.name} macro per channel")
    mods = [_sram_entry("dimc channels", ch, k, m, f"budget {a:g} mm^2 / {ch} channels / "
                        f"{m.area_mm2} mm^2 -> {k} macros per channel")]
    mods += dram_capacity(kv_channels, geometry, "dram", dram_mm2_per_device)
    return _add_sources(_system("dimc-budget", mods, [_MACRO_ONLY, _NO_DRAM_MM2]), m, geometry)


def hybrid_area(sram_bytes, kv_channels, dimc_channels=16, macro: DcimMacro = TSMC_5NM,
                geometry: DramGeometry = AIM_GEOMETRY, dram_mm2_per_device=None) -> dict:
    """Preset (d): ``dimc_channels`` DIMC channels holding ``sram_bytes`` of weights (each
    ceil(8 sram_bytes / dimc_channels / macro bits) macros), stationary, plus ``kv_channels``
    DRAM-PIM channels for attention over the KV cache."""
    n = check_int("hybrid_area: sram_bytes", sram_bytes, 1)
    ch = check_int("hybrid_area: dimc_channels", dimc_channels, 1)
    m = _macro("hybrid_area", macro)
    k = math.ceil(n * 8 / ch / m.bits)
    mods = [_sram_entry("dimc channels", ch, k, m, f"{n} B = {8 * n} bit / {ch} channels / "
                        f"{m.bits} bit per macro -> {k} macros per channel")]
    mods += dram_capacity(kv_channels, geometry, "dram-pim", dram_mm2_per_device)
    return _add_sources(_system("hybrid", mods, [_MACRO_ONLY, _NO_DRAM_MM2]), m, geometry)


def dimc_whatif_area(n_modules, bytes_per_module=8 * GIB, macro: DcimMacro = TSMC_5NM) -> dict:
    """The labelled what-if: ``n_modules`` DIMC modules of ``bytes_per_module`` computable SRAM
    each (today's 8 GiB), priced in macro mm^2 and Corsair cards."""
    nm = check_int("dimc_whatif_area: n_modules", n_modules, 1)
    n = check_int("dimc_whatif_area: bytes_per_module", bytes_per_module, 1)
    m = _macro("dimc_whatif_area", macro)
    k = math.ceil(n * 8 / m.bits)
    mods = [_sram_entry("dimc modules", nm, k, m, f"{n} B = {8 * n} bit / {m.bits} bit per "
                        f"macro -> {k} macros per module")]
    notes = [_MACRO_ONLY, "what-if: the SRAM capacity of an AiM module, not a physical design"]
    return _add_sources(_system("dimc-whatif", mods, notes), m, None)
