"""perf/energy.py: every component recomputed by hand from CENT's power-model inputs and the
DCIM constants (ANCHORS.md), the all-bank vs single-bank command counts, static power x time
(a faster run uses less energy), and bad input."""
from __future__ import annotations

import pytest

from perf import energy as E
from perf.params import SimParams

# a GDDR6-AiM channel (page: one 2 KiB row, 128 x 8 bf16) and a DIMC channel (64 x 64 INT8)
AIM = SimParams(n_ch=1, n_banks=16, n_gbuf=8, n_in=128, n_out=8, x_bits=16, w_bits=16,
                n_sets=16, backend="dram", clock_ghz=2.0)
DIMC = SimParams(n_ch=1, n_banks=16, n_gbuf=8, n_in=64, n_out=64, x_bits=8, w_bits=8,
                 n_sets=16, backend="dimc")
ZERO = dict(mac=0, wr_inp=0, wr_w=0, rd_out=0, act=0, mac_ab=0, act16=0)

# CENT cent_power_calculator.py, per channel: RD 438.15 mW, ACT 66.3 mW, tRC 44.5 ns,
# tCCDL 1 ns, tBL 1.25 ns, DQ 5.5 pJ/bit, 256-bit words, TRX 267.7082056 mW and
# PHY 381.0445262 mW for one 0.5 ns cycle per command, per 2 channels
MAC16 = 3 * 0.43815 * 1e-9                     # J per all-bank column MAC
ACT = 0.0663 * 44.5e-9                         # J per bank activation
TRX = 0.2677082056 * 0.5e-9 / 2
PHY = 0.3810445262 * 0.5e-9 / 2


def stats(**kw):
    return dict(ZERO, **kw)


def test_single_bank_mac_on_dram():
    e = E.module_dynamic(AIM, stats(mac=1, act=1))
    cols = 2048 // 32                                            # a 2 KiB row, 32-B columns
    assert e["column MAC (3 P_RD tCCDL / 16 per bank column)"] == pytest.approx(
        cols * MAC16 / 16)
    assert e["ACT/PRE (P_ACT tRC)"] == pytest.approx(ACT) == pytest.approx(2.95035e-9)
    # one instruction; ACT + PRE + 64 column commands
    assert e["controller (P_TRX, P_PHY)"] == pytest.approx(TRX + (2 + cols) * PHY)
    assert e["DQ I/O (DQ x WORD)"] == 0
    # the GBuf entry (128 x 16 bit) is read once: 32 64-bit accesses of 10 pJ
    assert e["GBuf/OBuf (SRAM_64B)"] == pytest.approx(32 * 10e-12)


def test_all_bank_mac_counts_one_command_per_column():
    """A MAC_AB (16 bank MACs, one ACT16) costs the same array energy as 16 single-bank MACs
    but 1/16 of their column and instruction commands."""
    one = E.module_dynamic(AIM, stats(mac=16, mac_ab=1, act=16, act16=1))
    sixteen = E.module_dynamic(AIM, stats(mac=16, act=16))
    k = "column MAC (3 P_RD tCCDL / 16 per bank column)"
    assert one[k] == sixteen[k] == pytest.approx(64 * MAC16)      # 64 MAC16 columns
    assert one["ACT/PRE (P_ACT tRC)"] == sixteen["ACT/PRE (P_ACT tRC)"] == pytest.approx(16 * ACT)
    assert one["controller (P_TRX, P_PHY)"] == pytest.approx(TRX + (2 + 64) * PHY)
    assert sixteen["controller (P_TRX, P_PHY)"] == pytest.approx(16 * TRX + (32 + 1024) * PHY)


def test_io_commands_on_dram():
    e = E.module_dynamic(AIM, stats(wr_inp=1, rd_out=1, wr_w=1, act=1))
    # WR_INP 128 x 16 bit = 8 words; RD_OUT 8 x 16 bit = 1 word; WR_W 8 x 16 bit = 1 word
    assert e["DQ I/O (DQ x WORD)"] == pytest.approx(10 * 256 * 5.5e-12)
    assert e["array RD/WR bursts (P_RD, P_WR x tBL)"] == pytest.approx(
        (0.43815 + 0.55315) * 1.25e-9)
    assert e["controller (P_TRX, P_PHY)"] == pytest.approx(3 * TRX + (2 + 10) * PHY)


def test_dimc_components():
    e = E.module_dynamic(DIMC, stats(mac=3, wr_w=2, wr_inp=1, rd_out=1))
    assert e["MAC (DCIM_OP x 2 x n_in x n_out)"] == pytest.approx(3 * 64 * 64 * 2 * 11e-15)
    assert e["weight/KV write (CIM_WRITE_8B)"] == pytest.approx(2 * 64 * 3.2e-12)
    # 64 x 8-bit inputs in, 64 x 32-bit results out, two 64 x 8-bit rows in
    assert e["host I/O (DQ, assumed)"] == pytest.approx((512 + 2048 + 2 * 512) * 5.5e-12)
    assert e["controller (P_TRX)"] == pytest.approx(7 * TRX)
    assert not any("P_PHY" in k or "ACT" in k for k in e)         # no DRAM on a DIMC channel


def test_kv_stream_and_link():
    e = E.kv_stream_dynamic(2048)                                # one row: 64 bursts
    assert e["KV stream: array RD bursts (P_RD tBL)"] == pytest.approx(64 * 0.43815 * 1.25e-9)
    assert e["KV stream: DQ I/O (DQ x WORD)"] == pytest.approx(2048 * 8 * 5.5e-12)
    assert e["KV stream: ACT/PRE (P_ACT tRC)"] == pytest.approx(ACT)
    assert e["KV stream: macro write (CIM_WRITE_8B)"] == pytest.approx(2048 * 3.2e-12)
    assert E.link_dynamic(1000)["link (LINK)"] == pytest.approx(1000 * 4.4e-12)


def test_static_power_times_time_so_faster_uses_less():
    p = E.dram_static_power(2, 1.6665e-6)
    assert p["active"] == pytest.approx(2 * 0.26375)
    assert p["precharged"] == pytest.approx(2 * 0.18315)
    assert p["refresh"] == pytest.approx(2 * 16 * ACT / 1.6665e-6)
    dyn = {"x": 1e-3}
    slow = E.token_energy(dyn, [("ch", p, 1e-3)], 2e-3, 4)
    fast = E.token_energy(dyn, [("ch", p, 0.5e-3)], 1e-3, 4)
    assert slow["dynamic_j"] == fast["dynamic_j"] == pytest.approx(1e-3 / 4)
    assert slow["static_j"] == pytest.approx(
        (p["active"] * 1e-3 + p["precharged"] * 1e-3 + p["refresh"] * 2e-3) / 4)
    assert fast["static_j"] == pytest.approx(slow["static_j"] / 2)
    assert fast["total_j"] < slow["total_j"]
    for r in (slow, fast):
        assert r["total_j"] == pytest.approx(r["static_j"] + r["dynamic_j"])
        assert {c["kind"] for c in r["components"].values()} == {"static", "dynamic"}
        assert r["omitted"] and any("leakage" in o for o in r["omitted"])


def test_every_constant_has_a_source():
    src = E.sources()
    assert set(src) == set(E.CONSTANTS)
    for k, c in src.items():
        assert c["source"] and c["unit"] and c["value"] > 0, k
    assert "45 nm" in src["CIM_WRITE_8B"]["source"]
    assert "hbm2" not in " ".join(src).lower()                   # no off-chip figure in-bank


@pytest.mark.parametrize("call, pat", [
    (lambda: E.module_dynamic(AIM, {}), "stats={}"),
    (lambda: E.module_dynamic(None, ZERO), "sp=None"),
    (lambda: E.kv_stream_dynamic(-1), "n_bytes=-1"),
    (lambda: E.link_dynamic("x"), "n_bits='x'"),
    (lambda: E.dram_static_power(-2, 1e-6), "channels=-2"),
    (lambda: E.dram_static_power(2, 0), "refresh_interval_s=0"),
    (lambda: E.token_energy({}, [], 1.0, 0), "tokens=0"),
])
def test_bad_input_names_the_value(call, pat):
    with pytest.raises(ValueError, match=pat):
        call()
