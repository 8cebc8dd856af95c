"""Calibration of the performance model's DRAM back-end (perf/chan.py, perf/sim.py) against
the golden model of a channel with DRAM banks (model/channel.py with ``bank_kind="dram"``,
model/dram_backend.py; docs/dram_channel.md), which the RTL equals in lockstep.

The same host program (perf/program.py items: MAPs, WR_Ws, WR_INPs, MACs over pages or
all-bank MACs over stripes, RD_OUTs) runs on both: the golden model through
:func:`perf.golden.pace_waits` (the host the perf model assumes), the perf model with
:meth:`perf.params.SimParams.from_module` of the same ModuleParams.  Cycles are equal exactly,
and so are the DRAM command counts (ACTs, column MACs, WRs) where the perf model counts them.

* matrix: banks {1, 2, 4} x rows {2, 8} x timing {SHORT_TIMING (refresh pushed beyond the
  run), GDDR6_AIM_TIMING} x {in order, DCS} x {single-bank, all-bank} MAC programs;
* refresh: SHORT_TIMING with its tREFI 120, runs of a few thousand cycles, ``refresh="exact"``;
* the closed-form refresh stretch (the default, for long system runs) against the exact rule
  on a long run of the perf model alone.
"""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from perf.golden import dram_calib_module, dram_qk_items, pace_waits
from perf.params import SimParams
from perf.program import MAC_AB, WAIT, HCmd, Rep
from perf.sim import simulate
from spec.dram import GDDR6_AIM_TIMING, SHORT_TIMING
from spec.isa import HostOp as H

#: SHORT_TIMING with no refresh request inside the matrix's runs (the largest tREFI)
SHORT_NOREF = replace(SHORT_TIMING, tREFI=(1 << 16) - 1)
TIMINGS = {"short": SHORT_NOREF, "gddr6": GDDR6_AIM_TIMING}


def _golden(p, prog):
    """(cycles, {DRAM op: accepted commands}, result beats) of the golden model's run."""
    import model.dram_backend as DB
    from model.module import ModuleModel
    cmds = pace_waits(p, prog)
    counts = {"ACT": 0, "PRE": 0, "MAC": 0, "WR": 0, "RD": 0}
    orig = DB.DramBackend.cycle

    def cycle(self, gbuf):
        r = orig(self, gbuf)
        for _, op, _, accepted in self.presented:
            if accepted:
                counts[DB._OP_NAMES[op]] += 1
        return r
    DB.DramBackend.cycle = cycle
    try:
        run = ModuleModel(p).run(cmds)
    finally:
        DB.DramBackend.cycle = orig
    assert run.status == "ok" and not run.errs and not run.chan_errs, \
        (run.status, run.errs[:3], run.chan_errs[:3])
    return run.cycles, counts, len(run.outs)


def _calibrate(p, prog, what):
    """Perf model (refresh "exact") = golden model: cycles, ACTs, column MACs, WRs, beats."""
    cycles, counts, beats = _golden(p, prog)
    sp = SimParams.from_module(p, refresh="exact")
    res = simulate(sp, prog)
    ncol = sp.page_bytes // sp.dram.burst_bytes
    got = (res.cycles, res.stats["act"], res.stats["mac"] * ncol, res.stats["wr_w"],
           res.stats["beats"])
    exp = (cycles, counts["ACT"], counts["MAC"], counts["WR"], beats)
    assert got == exp, f"{what}: perf (cycles, ACT, MAC, WR, beats) {got} != golden {exp}"
    return res


MATRIX = [(B, S, tm, dcs, ab) for B in (1, 2, 4) for S in (2, 8) for tm in TIMINGS
          for dcs in (False, True) for ab in (False, True)]


@pytest.mark.parametrize("B,S,tm,dcs,ab", MATRIX)
def test_dram_channel_matches_golden(B, S, tm, dcs, ab, seed):
    """QK^T-like programs: cycle count and DRAM command counts equal the golden model's; no
    refresh request falls in these runs, so the default stretch has the same cycles."""
    p = dram_calib_module(B, S, TIMINGS[tm], dcs, ab)
    rng = random.Random(f"{B} {S} {tm} {dcs} {ab} {seed}")
    prog = dram_qk_items(rng, SimParams.from_module(p), rounds=3 if S == 8 else 6, all_bank=ab)
    res = _calibrate(p, prog, f"B={B} S={S} {tm} dcs={dcs} all_bank={ab}")
    if res.t_end < p.channel.timing.tREFI:
        assert simulate(SimParams.from_module(p, refresh="stretch"), prog).cycles == res.cycles


@pytest.mark.parametrize("B", [1, 2, 4])
@pytest.mark.parametrize("dcs", [False, True])
@pytest.mark.parametrize("ab", [False, True])
def test_dram_refresh_matches_golden(B, dcs, ab, seed):
    """SHORT_TIMING (tREFI 120, tRFC 11), 2 channels, a few thousand cycles (tens of refresh
    requests): the exact refresh rule (look-ahead, gate, close) equals the golden model."""
    p = dram_calib_module(B, 2, SHORT_TIMING, dcs, ab, n_ch=2)
    rng = random.Random(f"ref {B} {dcs} {ab} {seed}")
    prog = dram_qk_items(rng, SimParams.from_module(p), rounds=40 if ab else 40 // B,
                       all_bank=ab, wait=0.2)
    res = _calibrate(p, prog, f"refresh B={B} dcs={dcs} all_bank={ab}")
    assert res.t_end > 10 * SHORT_TIMING.tREFI, res.t_end


@pytest.mark.parametrize("tm", list(TIMINGS))
@pytest.mark.parametrize("ab", [False, True])
def test_no_mac_in_a_weight_writes_cycle(tm, ab):
    """A MAC (row miss on an open, long-idle bank) and a WR_W (another bank) both ready in the
    same cycle t (the MAC waits for a WR_INP's done at t + nI, the WR_W for the I/O bus at
    t + nI): the WR_W issues, the MAC one cycle later, so its PRE is at t + 2 and, tRP > tRRD,
    its ACT one cycle later than in the same cycle.  Equal to the golden model."""
    p = dram_calib_module(2, 2, TIMINGS[tm], True, ab)
    B = 2
    mac = (lambda s, g, o: HCmd(MAC_AB, 1, vp=s * B, bank=0, set=s, g=g, o=o)) if ab else \
        (lambda s, g, o: HCmd(H.MAC, 1, vp=s * B, bank=0, set=s, g=g, o=o))
    prog = [HCmd(H.MAP, vp=s * B + b, pp=b * 2 + s) for s in range(2) for b in range(B)]
    prog += [HCmd(H.BARRIER), HCmd(H.WR_INP, 1, g=0), mac(0, 0, 0),
             HCmd(H.RD_OUT, 1, vp=0, bank=0, set=0, o=0), HCmd(WAIT),
             HCmd(H.WR_INP, 1, g=1), HCmd(H.WR_W, 1, vp=1 + B, bank=1, set=1, row=3),
             mac(1, 1, 1), HCmd(H.RD_OUT, 1, vp=B, bank=0, set=1, o=1)]
    _calibrate(p, prog, f"WR_W / MAC same cycle {tm} all_bank={ab}")


@pytest.mark.parametrize("dcs", [False, True])
@pytest.mark.parametrize("ab", [False, True])
def test_dram_loop_closed_form_and_exact_refresh(dcs, ab):
    """A QK^T loop (``Rep``: per round a KV append WR_W, the MAC(s) on the next set, the
    RD_OUTs; sets advance with the stride): without refresh in the run the closed-form
    extrapolation equals the full simulation and the golden model; with SHORT_TIMING's
    refresh the exact rule (which simulates in full) equals the golden model."""
    B, S = 2, 16
    for timing, extrap in ((SHORT_NOREF, True), (SHORT_TIMING, False)):
        p = dram_calib_module(B, S, timing, dcs, ab)
        sp = SimParams.from_module(p, refresh="stretch")
        setup = [HCmd(H.MAP, vp=s * B + b, pp=b * S + s) for s in range(S) for b in range(B)]
        if ab:
            macs = (HCmd(MAC_AB, 1, vp=0, bank=0, set=0, g=0, o=0),)
        else:
            macs = tuple(HCmd(H.MAC, 1, vp=b, bank=b, set=0, g=0, o=0) for b in range(B))
        body = (HCmd(H.WR_W, 1, vp=B + 1, bank=1, set=1, row=2), *macs,
                *(HCmd(H.RD_OUT, 1, vp=b, bank=b, set=0, o=0) for b in range(B)))
        prog = setup + [HCmd(H.BARRIER), HCmd(H.WR_INP, 1, g=0),
                        Rep((body,), S - 1, "qk", set_stride=1, vp_stride=B)]
        res = _calibrate(p, prog, f"loop dcs={dcs} all_bank={ab} tREFI={timing.tREFI}")
        fast, slow = simulate(sp, prog), simulate(sp, prog, extrapolate=False)
        if extrap:
            assert fast.skipped and (fast.t_end, fast.stats) == (slow.t_end, slow.stats)
            assert fast.cycles == res.cycles
        else:
            assert res.t_end > 3 * timing.tREFI and not res.skipped


@pytest.mark.slow
def test_refresh_stretch_error_on_a_long_run(capsys):
    """The closed-form stretch tREFI / (tREFI - tRFC - tRP - tRCDRDMAC) against the exact rule
    on a long run (GDDR6-AiM timing, a 16-bank all-bank QK^T stream over ~30 tREFI): their
    times agree within a loose bound (the stretch charges every interval the worst case of a
    precharge and a re-activation; the exact rule only what the schedule loses)."""
    out = []
    for ab, rounds in ((True, 60), (False, 4)):
        # the AiM bank of the system runs: 2 KB rows (128 x 8 bf16), 16 banks, GDDR6-AiM
        sp = SimParams(n_ch=1, n_banks=16, n_gbuf=8, n_in=128, n_out=8, x_bits=16, w_bits=16,
                       n_sets=64, n_acc=16, backend="dram", clock_ghz=2.0, all_bank=ab)
        prog = dram_qk_items(random.Random(7), sp, rounds=rounds, all_bank=ab, wr_per_page=0,
                           append=0.05)
        stretch = simulate(sp, prog, extrapolate=False)
        exact = simulate(sp.with_(refresh="exact"), prog)
        assert exact.t_end > 20 * GDDR6_AIM_TIMING.tREFI
        err = stretch.time_s / exact.time_s - 1
        out.append((ab, stretch.t_end, exact.t_end, sp.refresh_factor, err))
        assert abs(err) < 0.1, out[-1]
    with capsys.disabled():
        for ab, ts, te, f, err in out:
            print(f"\nrefresh stretch vs exact ({'all-bank' if ab else 'single-bank'}): "
                  f"{ts} cycles x {f:.4f} vs {te} cycles exact: error {100 * err:+.2f} %")
