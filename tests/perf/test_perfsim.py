"""Calibration of the performance model (perf/sim.py) against the golden module model.

The timing simulator must give exactly the golden model's cycle count, busy bank-cycles and
result beats for the same host program, over a matrix of configurations (channels, banks,
GBuf/OBuf entries, queue and FIFO depths, macro timing, scheduling, partitioning, allocation,
hardware loops, context lengths); its closed-form extrapolation of periodic loops must not
change any number.  The RTL equals the golden model by lockstep; test_perf_rtl.py closes the
loop on a subset.  The DRAM back-end's timing rules (docs/dram_channel.md) are checked here
against formulas written from the DramTiming constants, and against the golden model of a DRAM
channel in tests/perf/test_perf_dram_rtl.py.
"""
from __future__ import annotations

import random

import pytest

from compiler import attention as A
from spec.isa import ChannelParams, HostOp as H, ModuleParams
from model.module import ModuleModel
from dataclasses import replace

from perf.program import MAC_AB, WAIT, HCmd, Rep, expand, from_host_words, n_leaves, to_host_words
from perf.sim import GDDR6_AIM, SimParams, simulate
from spec.params import MacroParams


def golden(p: ModuleParams, cmds):
    run = ModuleModel(p).run(A.pace(p, cmds))
    assert run.status == "ok" and not run.errs, (run.status, run.errs[:3])
    return run


def assert_same(p, run, res, what):
    got = (res.cycles, res.stats["busy"], res.stats["beats"])
    exp = (run.cycles, sum(run.busy_cycles), len(run.outs))
    assert got == exp, f"{what}: perf (cycles, busy, beats) {got} != golden {exp} [{p.tag}]"


def random_module(rng: random.Random) -> ModuleParams:
    mp = MacroParams(n_in=rng.choice([16, 32]), n_out=rng.choice([16, 32]), w_bits=8,
                     x_bits=rng.choice([4, 8]), n_sets=rng.choice([4, 8, 16]),
                     n_acc=rng.choice([4, 8]), tree_stages=rng.choice([0, 1, 2]))
    cp = ChannelParams(mp, n_banks=rng.choice([1, 2, 3, 4, 8]), n_gbuf=rng.choice([2, 4, 8]),
                       q_depth=rng.choice([2, 3, 8]), dcs=rng.random() < 0.5)
    return ModuleParams(cp, n_ch=rng.choice([1, 2, 3, 4]), n_vpages=256, n_req=4,
                        fifo_depth=rng.choice([2, 4, 16]), loop_len=8)


@pytest.mark.parametrize("block", range(4))
def test_attention_programs_match_golden(block, seed):
    """Random modules x HFP/TCP x static/DPA x unrolled/LOOP x request mixes: equal cycles,
    busy bank-cycles and result beats (about 20 valid programs per block)."""
    rng = random.Random(seed * 4 + block)
    done = 0
    for _ in range(200):
        p = random_module(rng)
        reqs = A.request_mix(rng.choice([1, 2, 3]), max_context=rng.choice([40, 96, 300, 600]),
                             head_dim=rng.choice([16, 32, 64]), group=rng.choice([1, 2]),
                             seed=rng.randrange(1 << 16))
        try:
            prog = A.build_program(p, reqs, rng.choice(["HFP", "TCP"]),
                                   rng.choice(["static", "dpa"]), loop=rng.random() < 0.3)
        except ValueError:
            continue                       # shape does not fit this random module
        run = golden(p, prog.cmds)
        res = simulate(SimParams.from_module(p), from_host_words(p, prog.cmds))
        assert_same(p, run, res, f"{prog.partition}/{prog.alloc}/loop={prog.loop}")
        done += 1
        if done == 20:
            break
    assert done == 20


def qk_rep_program(sp: SimParams, rounds: int, extra: int = 1):
    """A QK^T-like stream as a Rep: per key block kt_n = 2 MACs on one bank (two sets) and a
    RD_OUT, blocks round-robin over the banks, two sets further each round."""
    B, S = sp.n_banks, sp.n_sets
    allm = (1 << sp.n_ch) - 1
    setup = [HCmd(H.MAP, vp=pp, pp=pp) for pp in range(B * S)]
    bodies = tuple((HCmd(H.MAC, allm, vp=b * S, g=0, o=b % sp.n_acc, acc=0, bank=b, set=0),
                    HCmd(H.MAC, allm, vp=b * S + 1, g=1, o=b % sp.n_acc, acc=1, bank=b, set=1),
                    HCmd(H.RD_OUT, allm, vp=b * S, o=b % sp.n_acc, bank=b, set=0))
                   for b in range(B))
    return setup + [HCmd(H.BARRIER), HCmd(H.WR_INP, allm, g=0), HCmd(H.WR_INP, allm, g=1),
                    Rep(bodies, B * rounds + extra, "qk", set_stride=2, vp_stride=2),
                    HCmd(H.BARRIER), HCmd(H.WR_INP, allm, g=0)]


@pytest.mark.parametrize("dcs", [True, False])
@pytest.mark.parametrize("n_ch,n_banks,q_depth,fifo", [(4, 4, 4, 8), (2, 3, 2, 4), (1, 1, 8, 2),
                                                        (3, 2, 3, 16)])
def test_rep_extrapolation_is_exact(dcs, n_ch, n_banks, q_depth, fifo):
    """A periodic loop computed in closed form gives the golden model's numbers, and the
    closed form was actually used."""
    rounds = max(7, 40 // n_banks)
    sp = SimParams(n_ch=n_ch, n_banks=n_banks, n_gbuf=4, q_depth=q_depth, dcs=dcs, n_in=16,
                   n_out=16, n_sets=1 << (2 * rounds + 1).bit_length(), n_acc=4, fifo_depth=fifo)
    p = sp.to_module(n_vpages=256)
    prog = qk_rep_program(sp, rounds)
    run = golden(p, to_host_words(p, prog))
    fast, slow = simulate(sp, prog), simulate(sp, prog, extrapolate=False)
    assert_same(p, run, fast, "extrapolated")
    assert_same(p, run, slow, "simulated")
    assert fast.skipped and fast.sim_cycles < slow.sim_cycles


def test_nested_reps_and_strides_expand_consistently():
    inner = Rep(((HCmd(H.MAC, 1, bank=0, set=0, vp=0),), (HCmd(H.MAC, 1, bank=1, set=0, vp=4),)),
                3, set_stride=1, vp_stride=1)
    outer = Rep(((inner, HCmd(H.RD_OUT, 1, bank=0, set=0, vp=0)),), 2, set_stride=10,
                vp_stride=20)
    cmds = list(expand([outer]))
    assert n_leaves([outer]) == len(cmds) == 8
    assert [(c.bank, c.set) for c in cmds[:4]] == [(0, 0), (1, 0), (0, 1), (0, 0)]
    assert [(c.bank, c.set, c.vp) for c in cmds[4:7]] == [(0, 10, 20), (1, 10, 24), (0, 11, 21)]


def test_long_periodic_loop_is_fast():
    """10^6 iterations (3 * 10^6 host commands) of a periodic loop: simulated in closed form,
    with the cycle count of a full simulation extrapolated linearly per period."""
    sp = SimParams(n_ch=4, n_banks=4, n_gbuf=4, q_depth=8, n_in=16, n_out=16, n_sets=4096,
                   n_acc=4)
    short = simulate(sp, qk_rep_program(sp, rounds=50, extra=0))
    longp = simulate(sp, qk_rep_program(sp, rounds=50 + 250_000, extra=0))
    assert longp.sim_cycles < 5 * short.sim_cycles + 2000
    # the loop is periodic with period B iterations = (cycles per round) for the extra rounds
    per_round = (simulate(sp, qk_rep_program(sp, rounds=60, extra=0)).cycles - short.cycles) / 10
    assert longp.cycles == short.cycles + 250_000 * per_round


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="n_banks"):
        SimParams(n_banks=0)
    with pytest.raises(ValueError, match="backend"):
        SimParams(backend="hbm")
    with pytest.raises(ValueError, match="chmask"):
        simulate(SimParams(n_ch=2), [HCmd(H.WR_INP, chmask=4)])
    with pytest.raises(ValueError, match="unmapped vp=3"):
        simulate(SimParams(), [HCmd(H.MAC, 1, vp=3)])
    with pytest.raises(ValueError, match="n="):
        Rep(((HCmd(H.NOP),),), -1)
    with pytest.raises(ValueError, match="no RTL"):
        SimParams(backend="dram").to_module()
    with pytest.raises(ValueError, match="all_bank"):
        simulate(SimParams(), [HCmd(MAC_AB, 1, bank=0, set=0)])
    with pytest.raises(ValueError, match="all_bank"):
        SimParams(all_bank=1)
    mapped = [HCmd(H.MAP, vp=b, pp=b * 2) for b in range(4)]
    with pytest.raises(ValueError, match="NOT_STRIPE"):      # vp 1 maps bank 0, not a stripe
        simulate(SimParams(n_banks=4, all_bank=True), mapped + [HCmd(MAC_AB, 1, vp=1)])


# ---- DRAM back-end: each rule against a formula from the GDDR6-AiM constants ------------------

DR = SimParams(n_ch=1, n_banks=8, n_gbuf=4, q_depth=8, n_in=128, n_out=8, x_bits=16, w_bits=16,
               n_sets=64, n_acc=4, backend="dram", clock_ghz=2.0)
NCOL = DR.page_bytes // GDDR6_AIM.burst_bytes          # 2 KB row / 32 B = 64 columns
T = GDDR6_AIM


def _dram(cmds):
    return simulate(DR, [HCmd(H.WR_INP, 1, g=0)] + cmds)


def _mac(bank, row, o=0):
    return HCmd(H.MAC, 1, bank=bank, set=row, g=0, o=o)


def test_dram_single_mac_closed_bank():
    """WR_INP (GBuf bytes / 32 B bursts x tCCDS) -> MAC: ACT at issue + 1, tRCDRDMAC, ncol
    columns tCCDL apart, the result visible two cycles after the last column l
    (docs/dram_channel.md): t_end = l + 2 = issue + 1 + RCDRDMAC + (ncol - 1) * CCDL + 2."""
    wr = (DR.n_in * DR.x_bits // 8) // T.burst_bytes * T.CCDS
    res = _dram([_mac(0, 5)])
    # WR_INP: pushed in cycle 0, dispatched in 1, issued in 2, GBuf entry done at 2 + wr;
    # the MAC depends on it
    issue = 2 + wr
    assert res.t_end == issue + 1 + T.RCDRDMAC + (NCOL - 1) * T.CCDL + 2
    assert res.stats["act"] == 1 and res.stats["busy"] == NCOL * T.CCDL


def test_dram_row_hit_streams_and_row_miss_pays_precharge():
    hit = _dram([_mac(0, 5), _mac(0, 5, o=1)])
    one = _dram([_mac(0, 5)])
    assert hit.t_end - one.t_end == NCOL * T.CCDL           # back-to-back column stream
    miss = _dram([_mac(0, 5), _mac(0, 6, o=1)])
    assert miss.stats["act"] == 2
    # second row: issues at the first MAC's last column l (R[b] = l); PRE after l + tRTP
    # (tRAS long satisfied), ACT after tRP
    last_col = one.t_end - 2                                  # done visible at l + 2
    act2 = last_col + T.RTP + T.RP
    assert miss.t_end == act2 + T.RCDRDMAC + (NCOL - 1) * T.CCDL + 2


def test_dram_faw_and_column_bus():
    """Five MACs on five banks: ACTs tRRD apart, the fifth no earlier than the first + tFAW;
    their column streams share the channel's column bus, one after the other."""
    res = _dram([_mac(b, 1, o=b % 4) for b in range(5)])
    wr = (DR.n_in * DR.x_bits // 8) // T.burst_bytes * T.CCDS
    a0 = 2 + wr + 1                   # first MAC issues when the GBuf entry is done
    acts = [a0 + i * T.RRDS for i in range(4)]
    acts.append(max(acts[-1] + T.RRDS, a0 + T.FAW))
    end = -1
    for a in acts:                    # column bus: a stream starts after the previous one
        first = max(a + T.RCDRDMAC, end)
        last = first + (NCOL - 1) * T.CCDL
        end = last + T.CCDS
    assert res.stats["act"] == 5
    assert res.t_end == last + 2
    assert res.t_end >= a0 + 5 * NCOL * T.CCDL          # bus-bound: 5 streams in series


def _ab(row, o=0, g=0):
    return HCmd(MAC_AB, 1, bank=0, set=row, g=g, o=o)


DRA = DR.with_(all_bank=True)


def test_dram_all_bank_mac_is_one_act16_and_one_column_stream():
    """MAC_AB on closed banks: one ACT16, ncol MAC16 columns tCCDL apart on all 8 banks: the
    time of one single-bank MAC for 8 banks' work; 8 single-bank MACs take 8 streams."""
    wr = (DR.n_in * DR.x_bits // 8) // T.burst_bytes * T.CCDS
    res = simulate(DRA, [HCmd(H.WR_INP, 1, g=0), _ab(5)])
    issue = 2 + wr
    assert res.t_end == issue + 1 + T.RCDRDMAC + (NCOL - 1) * T.CCDL + 2
    assert res.stats["act"] == DR.n_banks and res.stats["act16"] == 1
    assert res.stats["mac_ab"] == 1 and res.stats["mac"] == DR.n_banks
    assert res.stats["busy"] == DR.n_banks * NCOL * T.CCDL
    single = _dram([_mac(b, 5, o=0) for b in range(DR.n_banks)])
    assert single.stats["busy"] == res.stats["busy"]
    assert single.t_end - res.t_end >= (DR.n_banks - 1) * NCOL * T.CCDL


def test_dram_all_bank_row_hit_miss_and_trc():
    one = simulate(DRA, [HCmd(H.WR_INP, 1, g=0), _ab(5)])
    hit = simulate(DRA, [HCmd(H.WR_INP, 1, g=0), _ab(5), _ab(5, o=1)])
    assert hit.t_end - one.t_end == NCOL * T.CCDL and hit.stats["act16"] == 1
    miss = simulate(DRA, [HCmd(H.WR_INP, 1, g=0), _ab(5), _ab(6, o=1)])
    last_col = one.t_end - 2                              # done visible at l + 2
    act1 = last_col - (NCOL - 1) * T.CCDL - T.RCDRDMAC
    act2 = max(last_col + T.RTP, act1 + T.RAS) + T.RP     # PRE of every bank, then ACT16
    assert act2 >= act1 + T.RC                            # (tRC does not bind: AiM values)
    assert miss.t_end == act2 + T.RCDRDMAC + (NCOL - 1) * T.CCDL + 2
    assert miss.stats["act16"] == 2 and miss.stats["act"] == 2 * DR.n_banks
    # a tRC longer than PRE + tRP binds the next ACT16
    slow = DRA.with_(dram=replace(T, RC=400))
    res = simulate(slow, [HCmd(H.WR_INP, 1, g=0), _ab(5), _ab(6, o=1)])
    assert res.t_end == act1 + 400 + T.RCDRDMAC + (NCOL - 1) * T.CCDL + 2


def test_dram_result_read_uses_register_latency_and_column_gaps():
    """RD_OUT reads the MAC registers (tCLREG, not tCL) in a gap of the column bus: while the
    next row is being activated it slips in; behind a row hit it waits for the stream."""
    base = [HCmd(H.WR_INP, 1, g=0), _ab(5), HCmd(H.RD_OUT, 1, bank=0, set=5, o=0)]
    late = DRA.with_(dram=replace(T, CLREG=50))
    war = base + [_ab(5, o=0)]                 # overwrites the entry the RD_OUT reads
    assert simulate(late, war).t_end - simulate(DRA, war).t_end == 50
    mac2 = simulate(DRA, [HCmd(H.WR_INP, 1, g=0), _ab(5), _ab(6, o=1)])
    gap = simulate(DRA, [HCmd(H.WR_INP, 1, g=0), _ab(5), _ab(6, o=1),
                         HCmd(H.RD_OUT, 1, bank=0, set=5, o=0)])
    assert gap.t_end == mac2.t_end and gap.stats["beats"] == 1
    hit2 = simulate(DRA, [HCmd(H.WR_INP, 1, g=0), _ab(5), _ab(5, o=1)])
    nogap = simulate(DRA, [HCmd(H.WR_INP, 1, g=0), _ab(5), _ab(5, o=1),
                           HCmd(H.RD_OUT, 1, bank=0, set=5, o=0)])
    assert nogap.t_end > hit2.t_end


def test_dram_in_order_is_slower_than_dcs():
    prog = [HCmd(H.WR_INP, 1, g=0)] + [_mac(b % 8, b // 8, o=b % 4) for b in range(32)] + \
        [HCmd(H.RD_OUT, 1, bank=b, o=o) for b in range(8) for o in range(4)]
    fast = simulate(DR, prog)
    slow = simulate(DR.with_(dcs=False), prog)
    assert slow.t_end > 1.5 * fast.t_end
    assert fast.t_end >= 32 * NCOL * T.CCDL                 # the column bus bounds both
    assert fast.stats["busy"] == slow.stats["busy"] == 32 * NCOL * T.CCDL


def test_dram_wait_blocks_the_host_until_results_are_back():
    """A host WAIT after a RD_OUT: nothing is pushed until its beat has left the module, so
    the next MAC_AB (a row hit) cannot stream on behind the first one."""
    prog = [HCmd(H.WR_INP, 1, g=0), _ab(5), HCmd(H.RD_OUT, 1, bank=0, set=5, o=0)]
    tail = [_ab(5, o=1)]
    free = simulate(DRA, prog + tail)
    wait = simulate(DRA, prog + [HCmd(WAIT)] + tail)
    assert wait.stats["waits"] == 1 and free.stats["waits"] == 0
    assert wait.t_end > free.t_end
    assert simulate(DRA, [HCmd(WAIT)]).t_end == 0            # nothing to wait for


def test_dram_weight_write_precharges_after_write_recovery():
    """WR_W (docs/dram_channel.md): ACT at t + 1 at the earliest, the WR tRCDWR later in a
    column-bus slot, PRE at max(ACT + tRAS, WR + tCWL + tBL + tWR), done (and the bank free)
    at PRE + 1; a second WR_W to the bank waits for that, then tRP after the PRE."""
    one = simulate(DR, [HCmd(H.WR_W, 1, bank=0, set=5)])
    ta = 2 + 1                                    # issued in cycle 2 (as a WR_INP)
    w = ta + T.RCDWR
    p = max(ta + T.RAS, w + T.CWL + T.BL + T.WR)
    assert one.t_end == p + 1 and one.stats["act"] == 1
    two = simulate(DR, [HCmd(H.WR_W, 1, bank=0, set=5), HCmd(H.WR_W, 1, bank=0, set=5, row=1)])
    ta2 = max(p + 1 + 1, p + T.RP, ta + T.RC)      # issues at R[b] = p + 1
    w2 = ta2 + T.RCDWR
    assert two.t_end == max(ta2 + T.RAS, w2 + T.CWL + T.BL + T.WR) + 1
    # a MAC of the written row: a miss on a closed bank, ACT tRP after the WR_W's PRE
    wr = (DR.n_in * DR.x_bits // 8) // T.burst_bytes * T.CCDS
    res = _dram([HCmd(H.WR_W, 1, bank=0, set=5), _mac(0, 5)])
    ta = 2 + wr + 1                               # behind the WR_INP on the I/O bus
    p = max(ta + T.RAS, ta + T.RCDWR + T.CWL + T.BL + T.WR)
    act = max(p + 1 + 1, p + T.RP, ta + T.RC)     # the MAC issues when the WR_W is done
    assert res.t_end == act + T.RCDRDMAC + (NCOL - 1) * T.CCDL + 2


def _short(**kw):
    from spec.dram import SHORT_TIMING
    from perf.params import DramTiming
    return SimParams(n_ch=1, n_banks=1, n_gbuf=2, n_in=16, n_out=4, n_sets=2, n_acc=4,
                     backend="dram", dram=DramTiming.from_spec(replace(SHORT_TIMING, **kw), 8),
                     clock_ghz=2.0, refresh="exact")


def test_dram_exact_refresh_gate_close_and_look_ahead():
    """SHORT_TIMING (tRCDRDMAC 7, tRAS 9, tRP 4, tRC 15, tRTP 3, tRFC 11, tCCDL 2), C = 64 B /
    8 B = 8 columns, nI = 2: six MACs on bank 0 alternating rows 0 / 1 (every one a miss,
    issued at the previous one's last column l, ACT = l + tRTP + tRP, l' = ACT + 7 + 14).
    Without refresh: ACTs 5, 33, 61, 89, 117, 145, done 168.  tREFI 120: the fifth ACT (117)
    precedes T_1; at 120 bank 0 is closed at max(120, 117 + tRAS, 138 + tRTP) = 141, refreshes
    from max(120, 117 + tRC, 141 + tRP) = 145, the gate opens at 156: the sixth MAC issues
    then, ACT 157, done 157 + 7 + 14 + 2 = 180.  tREFI 115: the fifth ACT (117) would follow
    T_1 = 115, so it is held (look-ahead); at 115 the bank (row 1, ACT 89, last column 110)
    closes at 115, refreshes from 119, the gate opens at 130: ACTs 131 and 159, done 182."""
    prog = [HCmd(H.WR_INP, 1, g=0)] + [_mac(0, i % 2, o=i % 4) for i in range(6)]
    stretch = simulate(_short().with_(refresh="stretch"), prog)
    assert stretch.t_end == 168
    assert stretch.time_s == pytest.approx(168 * stretch.params.refresh_factor / 2e9)
    ex = simulate(_short(), prog)
    assert ex.t_end == 180 and ex.time_s == pytest.approx(180 / 2e9)
    assert simulate(_short(tREFI=115), prog).t_end == 182
    assert simulate(_short(tREFI=10000), prog).t_end == 168      # no request in the run
    with pytest.raises(ValueError, match="refresh"):
        SimParams(refresh="none")


# ---- compiled LLM decode steps (compiler/llm) -------------------------------------------------

COMPILED = [("TCP", "dpa", [1000], None, True), ("TCP", "dpa", [1000], None, False),
            ("HFP", "static", [200, 90], 256, True), ("HFP", "static", [200, 90], 256, False),
            ("TCP", "static", [200, 90], 256, False), ("HFP", "dpa", [430], None, True),
            ("TCP", "dpa", [37, 100, 64], 128, True)]


@pytest.mark.parametrize("part,alloc,ctx,mc,dcs", COMPILED)
def test_compiled_decode_layer_matches_golden(part, alloc, ctx, mc, dcs):
    """A whole compiled decode layer (projections, KV append, QK^T, SV, FFN) of a tiny model on
    a small module: the perf model, with its loops in closed form, equals the golden model."""
    from compiler import llm as L
    cfg, s = L.tiny_config(), L.small_system()
    s = L.System(s.sim.with_(dcs=dcs), s.n_modules, s.tp, s.pp, s.name)
    plan = L.compile_step(cfg, s, ctx, part, alloc, max_context=mc)
    p = s.sim.to_module(n_vpages=256, n_req=16)
    items = plan.setup_layers(1) + plan.layer
    run = golden(p, to_host_words(p, items))
    res = simulate(s.sim, items)
    assert_same(p, run, res, f"{part}/{alloc}/{ctx}/dcs={dcs}")
    assert res.stats["mac"] == plan.counts["mac_ch"]


@pytest.mark.parametrize("layers,ctx,alloc,dcs", [(3, [200], "static", False),
                                                  (4, [37, 100, 64], "dpa", True),
                                                  (5, [120, 60], "dpa", True)])
def test_hfp_layer_rotation_is_timing_symmetric(layers, ctx, alloc, dcs):
    """With one hub port per channel, HFP's per-layer channel rotation changes the cycles only
    at layer boundaries (where the next layer's first commands meet the previous layer's last
    ones on other channels): the step (a Rep over the rotated layer variants) is within 0.5% of
    layer 0 repeated, which perf/report.py simulates because it extrapolates layer by layer.
    The MAC work is identical."""
    from perf.point import timing_items
    from compiler import llm as L
    s = L.small_system(n_sets=128)
    s = L.System(s.sim.with_(dcs=dcs, out_ports=s.sim.n_ch), 1, 1, 1, "small")
    plan = L.compile_step(L.tiny_config(layers=layers), s, ctx, "HFP", alloc)
    assert len(plan.variants) > 1
    full = simulate(s.sim, plan.step)
    fast = simulate(s.sim, timing_items(plan))
    assert (fast.stats["busy"], fast.stats["mac"]) == (full.stats["busy"], full.stats["mac"])
    assert abs(fast.t_end - full.t_end) <= 0.005 * full.t_end, (fast.t_end, full.t_end)
