"""perf/area.py: DCIM and DRAM-PIM area and capacity, expected values by hand arithmetic."""
from __future__ import annotations

import math

import pytest

from perf.area import (AIM_GEOMETRY, CONSTANTS, GIB, TSMC_4NM, TSMC_5NM, DcimMacro,
                       DramGeometry, aim_area, corsair_cards, dimc_budget_area,
                       dimc_whatif_area, dram_capacity, hybrid_area, sram_area, sram_capacity)

CTRL = 1.02 + 4.5 + 10.8 + 2.64      # CENT cost_model.py die sizes, mm^2 per device


def test_macro_densities():
    assert TSMC_5NM.bits == 64 * 64 * 4 * 4 == 65536
    assert TSMC_5NM.bits_per_mm2 == pytest.approx(65536 / 0.0133)
    assert TSMC_5NM.bits_per_mm2 / 8e6 == pytest.approx(0.616, abs=1e-3)   # ANCHORS: 0.62 MB
    assert TSMC_4NM.bits == 144 * 16 * 12 * 2
    assert TSMC_4NM.bits_per_mm2 == pytest.approx(55296 / 0.0172)
    assert "65536 bit in 0.0133 mm^2" in TSMC_5NM.arithmetic
    assert "ISSCC 2022" in TSMC_5NM.source and "ISSCC 2023" in TSMC_4NM.source


def test_aim_geometry_matches_the_preset_density():
    g = AIM_GEOMETRY
    assert g.row_bytes == 2048
    assert g.channel_bytes == 16 * 16384 * 2048 == 512 * 2**20
    # GDDR6_AiM_org density 128 << 10 Mb over its 32 channels
    assert g.device_bytes * 8 == (128 << 10) * 2**20
    assert "GDDR6_AiM_org" in g.source and "utils.py" in g.source


def test_sram_area_and_capacity_inverse():
    r = sram_area(2 * GIB)
    assert r["macros"] == 2 * GIB * 8 // 65536 == 262144
    assert r["mm2"] == pytest.approx(262144 * 0.0133)
    assert r["corsair_cards"] == pytest.approx(1.0)
    assert "262144 macros" in r["arithmetic"]
    c = sram_capacity(1.0)
    assert c["macros"] == math.floor(1 / 0.0133) == 75
    assert c["capacity_bytes"] == 75 * 65536 // 8
    assert sram_capacity(3 * 0.0133)["macros"] == 3           # no float floor-down
    for n in (1, 8191, 8192, 8193, 10**9):
        a = sram_area(n, TSMC_4NM)
        back = sram_capacity(a["mm2"], TSMC_4NM)
        assert back["macros"] == a["macros"] and back["capacity_bytes"] >= n
        assert back["capacity_bytes"] - n < TSMC_4NM.bits // 8


def test_corsair_cards():
    assert corsair_cards(0) == 0.0
    assert corsair_cards(3 * GIB) == pytest.approx(1.5)
    assert CONSTANTS["corsair_sram_bytes"].value == 2 * GIB


def test_aim_area_preset():
    r = aim_area(256)
    chans, ctrl = r["modules"]
    assert chans["devices"] == 8 and ctrl["count"] == 8
    assert r["capacity_bytes"] == r["dram_bytes"] == 256 * 512 * 2**20 == 128 * GIB
    assert r["sram_bytes"] == 0 and r["corsair_cards"] == 0
    assert r["mm2_sourced"] == pytest.approx(8 * CTRL)
    assert r["mm2_unsourced"] == ["dram-pim channels"]
    with_die = aim_area(33, dram_mm2_per_device=100.0)
    assert with_die["modules"][0]["devices"] == 2
    assert with_die["mm2_sourced"] == pytest.approx(2 * (100 + CTRL))
    assert with_die["mm2_unsourced"] == []
    assert all(c["source"] for c in r["constants"].values())


def test_dimc_budget_preset():
    r = dimc_budget_area(800, kv_channels=64, dimc_channels=16)
    dimc = r["modules"][0]
    per = math.floor(800 / 16 / 0.0133)                     # 3759 macros per channel
    assert dimc["macros"] == 16 * per
    assert r["sram_bytes"] == 16 * per * 65536 // 8
    assert dimc["mm2"] <= 800 and dimc["mm2"] > 800 - 16 * 0.0133
    assert r["dram_bytes"] == 64 * 512 * 2**20
    assert r["modules"][1]["kind"] == "dram"
    assert r["mm2_sourced"] == pytest.approx(dimc["mm2"] + 2 * CTRL)
    assert "macro tsmc5nm" in r["constants"]


def test_hybrid_preset():
    r = hybrid_area(16 * GIB, kv_channels=64, dimc_channels=16, macro=TSMC_5NM)
    dimc = r["modules"][0]
    assert dimc["macros"] == 16 * (16 * GIB * 8 // 16 // 65536)
    assert r["sram_bytes"] == 16 * GIB and r["corsair_cards"] == pytest.approx(8.0)
    assert r["dram_bytes"] == 32 * GIB and r["modules"][1]["kind"] == "dram-pim"
    assert r["capacity_bytes"] == 48 * GIB
    assert dimc["mm2"] == pytest.approx(16 * GIB * 8 / 65536 * 0.0133)
    # rounding up per channel never loses capacity
    odd = hybrid_area(10**6 + 1, kv_channels=1, dimc_channels=3)
    assert odd["sram_bytes"] >= 10**6 + 1


def test_dimc_whatif_preset():
    r = dimc_whatif_area(16)
    assert r["sram_bytes"] == 16 * 8 * GIB
    assert r["corsair_cards"] == pytest.approx(64.0)
    assert r["mm2_sourced"] == pytest.approx(16 * (8 * GIB * 8 / 65536) * 0.0133)
    assert any("what-if" in n for n in r["notes"])


@pytest.mark.parametrize("call, name", [
    (lambda: sram_area(0), "n_bytes"), (lambda: sram_area(1.5), "n_bytes"),
    (lambda: sram_area(10, macro="tsmc5nm"), "macro"),
    (lambda: sram_capacity(0), "area_mm2"), (lambda: sram_capacity(float("nan")), "area_mm2"),
    (lambda: sram_capacity(0.001), "area_mm2=0.001"),
    (lambda: dram_capacity(0), "channels"), (lambda: dram_capacity(4, kind="sram"), "kind"),
    (lambda: dram_capacity(4, geometry="aim"), "geometry"),
    (lambda: dram_capacity(4, dram_mm2_per_device=-1), "dram_mm2_per_device"),
    (lambda: aim_area(-3), "channels"),
    (lambda: dimc_budget_area(0.01, 4), "area_mm2=0.01"),
    (lambda: dimc_budget_area(10, 4, dimc_channels=0), "dimc_channels"),
    (lambda: dimc_budget_area(10, 0), "channels"),
    (lambda: hybrid_area(0, 4), "sram_bytes"),
    (lambda: hybrid_area(10, 4, dimc_channels=True), "dimc_channels"),
    (lambda: dimc_whatif_area(0), "n_modules"),
    (lambda: dimc_whatif_area(1, bytes_per_module=0), "bytes_per_module"),
    (lambda: corsair_cards(-1), "n_bytes"),
    (lambda: DcimMacro("m", 0, 4, 4, 1, 0.01, "s"), "n_in"),
    (lambda: DcimMacro("m", 4, 4, 4, 1, 0.0, "s"), "area_mm2"),
    (lambda: DramGeometry(banks=0), "banks"),
])
def test_validation(call, name):
    with pytest.raises(ValueError, match=name):
        call()
