"""The multicast WR_INP (``wide_inp`` K > 1) in the compiler and the performance model.

A multicast WR_INP is one host beat (one dispatcher cycle) carrying one tile per masked channel
(docs/module.md); every masked channel's I/O queue still gets its own WR_INP.  The perf model
must give the golden model's cycles, busy bank-cycles and result beats exactly on programs
whose dispatcher is the bound (so counting K beats, or one beat without the per-channel
WR_INPs, would differ); the compiler must emit one multicast beat per K channels where TCP gives
each channel its own tile, and the same per-channel work."""
from __future__ import annotations

import math

import pytest

from compiler import attention as A
from compiler import llm as L
from model.module import ModuleModel
from perf.program import HCmd, expand, from_host_words, to_host_words
from perf.sim import SimParams, simulate
from spec.isa import HostOp as H
from spec.isa import ModErr, host_encode

_WI = int(H.WR_INP)


def golden(p, words):
    run = ModuleModel(p).run(A.pace(p, words))
    assert run.status == "ok" and not run.errs, (run.status, run.errs[:3])
    return run


def same(run, res):
    return (res.cycles, res.stats["busy"], res.stats["beats"]) == \
        (run.cycles, sum(run.busy_cycles), len(run.outs))


def _system(K, n_ch=4, dcs=True):
    s = L.small_system(n_ch=n_ch)
    return L.System(s.sim.with_(wide_inp=K, dcs=dcs), s.n_modules, s.tp, s.pp, s.name)


def _wr_inps(items):
    return [(c.chmask, c.g, c.multi) for c in expand(items) if c.op == _WI]


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("dcs", [True, False])
def test_compiled_tcp_layer_with_multicast_matches_golden(K, dcs):
    """A compiled TCP decode layer on a 4-channel DIMC module with wide_inp K: perf model ==
    golden model; the SV tiles of every token chunk (K = 1: channels 0..C-1, one WR_INP each)
    become ceil(C / K) WR_INPs over consecutive channels, multicast where they hold > 1."""
    cfg = L.tiny_config()
    one, wide = _system(1, dcs=dcs), _system(K, dcs=dcs)
    p1, pk = (L.compile_step(cfg, s, [1000], "TCP", "dpa") for s in (one, wide))
    C = one.sim.n_ch
    sv1 = _wr_inps(p1.parts["sv"])
    assert sv1 and len(sv1) % C == 0
    exp = []
    for i in range(0, len(sv1), C):
        run = sv1[i:i + C]
        assert [m for m, _, _ in run] == [1 << c for c in range(C)]      # one per channel
        g = run[0][1]
        assert all(x[1] == g for x in run)
        for c0 in range(0, C, K):
            grp = range(c0, min(C, c0 + K))
            exp.append((sum(1 << c for c in grp), g, int(len(grp) > 1)))
    assert _wr_inps(pk.parts["sv"]) == exp
    p = wide.sim.to_module(n_vpages=256, n_req=16)
    assert p.wide_inp == K
    items = pk.setup_layers(1) + pk.layer
    run = golden(p, to_host_words(p, items))
    res = simulate(wide.sim, items)
    assert same(run, res), (res.cycles, run.cycles)
    r1 = simulate(one.sim, p1.setup_layers(1) + p1.layer)
    # the same work on every channel, fewer host beats
    for k in ("mac", "wr_inp", "rd_out", "busy", "beats"):
        assert res.stats[k] == r1.stats[k], k
    assert r1.stats["host_cmds"] - res.stats["host_cmds"] == \
        len(sv1) // C * (C - math.ceil(C / K))
    assert res.cycles < r1.cycles            # this layer's SV is dispatcher-bound


def _chunks(sp, n, multi):
    """n token chunks of a TCP-like SV stream on module ``sp``: a tile per channel (multicast
    over K channels, or one WR_INP each), then one MAC on every channel per bank."""
    C, B, K = sp.n_ch, sp.n_banks, sp.wide_inp
    allm = (1 << C) - 1
    cmds = [HCmd(H.MAP, vp=b, pp=b * sp.n_sets) for b in range(B)]
    for i in range(n):
        g = i % sp.n_gbuf
        if multi:
            cmds += [HCmd(H.WR_INP, sum(1 << c for c in range(c0, min(C, c0 + K))), g=g,
                          multi=1) for c0 in range(0, C, K)]
        else:
            cmds += [HCmd(H.WR_INP, 1 << c, g=g) for c in range(C)]
        cmds += [HCmd(H.MAC, allm, vp=b, g=g, o=b % sp.n_acc, acc=int(i > 0)) for b in range(B)]
    cmds += [HCmd(H.RD_OUT, allm, vp=b, o=b % sp.n_acc) for b in range(B)]
    return cmds


@pytest.mark.parametrize("C,K,B,dcs", [(4, 4, 1, True), (4, 2, 2, True), (3, 2, 1, False),
                                       (4, 3, 1, True)])
def test_hand_written_multicast_stream_equals_golden(C, K, B, dcs):
    """A stream whose dispatcher is the bound (C tile beats per 1 or 2 MAC commands): the perf
    model equals the golden model with and without multicast, and multicast is faster."""
    base = L.small_system(n_ch=C, n_banks=B, n_gbuf=4).sim.with_(dcs=dcs, wide_inp=K)
    p = base.to_module(n_vpages=256, n_req=4)
    data = (lambda i, c: (i * 2654435761 + c.chmask) % (1 << 60))     # any tiles
    out = {}
    for multi in (False, True):
        items = _chunks(base, 24, multi)
        words = to_host_words(p, items, data)
        run = golden(p, words)
        res = simulate(base, items)
        assert same(run, res), (multi, res.cycles, run.cycles)
        assert simulate(base, from_host_words(p, words)).cycles == res.cycles
        out[multi] = res
    assert out[True].stats["wr_inp"] == out[False].stats["wr_inp"] == 24 * C
    assert out[True].stats["host_cmds"] == out[False].stats["host_cmds"] \
        - 24 * (C - math.ceil(C / K))
    assert out[True].cycles < out[False].cycles


def test_multicast_checks_match_the_hardware():
    """popcount(chmask) > K is BAD_FIELD in the golden model and a ValueError in the perf
    model; ``multi`` does not exist with wide_inp 1; SimParams range-checks wide_inp."""
    sp = SimParams(n_ch=4, n_banks=1, wide_inp=2)
    p = sp.to_module(n_vpages=32, n_req=4)
    run = ModuleModel(p).run(A.pace(p, [(host_encode(p, H.WR_INP, chmask=0b111, multi=1), 0)]))
    assert [c for _, c in run.errs] == [int(ModErr.BAD_FIELD)], run.errs
    with pytest.raises(ValueError, match="BAD_FIELD"):
        simulate(sp, [HCmd(H.WR_INP, 0b111, multi=1)])
    with pytest.raises(ValueError, match="wide_inp=1"):
        simulate(sp.with_(wide_inp=1), [HCmd(H.WR_INP, 0b11, multi=1)])
    with pytest.raises(ValueError, match="multi=1 MAC"):
        simulate(sp, [HCmd(H.MAP, vp=0, pp=0), HCmd(H.MAC, 0b1, vp=0, multi=1)])
    assert simulate(sp, [HCmd(H.WR_INP, 0b101, multi=1)]).stats["wr_inp"] == 2
    with pytest.raises(ValueError):                      # no multi field without wide_inp
        to_host_words(sp.with_(wide_inp=1).to_module(), [HCmd(H.WR_INP, 0b11, multi=1)])
    for bad in (0, 5, True, 2.0):
        with pytest.raises(ValueError, match="wide_inp"):
            SimParams(n_ch=4, wide_inp=bad)
    assert SimParams.from_module(p).wide_inp == 2


def test_dispatch_bench_rows_and_bad_wide_inp(tmp_path, monkeypatch, capsys):
    """``cimphony bench --only dispatch``: a wide_inp beyond a rank's channels exits 2 naming
    the option before any point runs; the rows are the points' numbers, the 'after' row has
    the same work in fewer host commands, and the table holds both rows."""
    from bench import dispatch as D
    from cimphony import cli
    from perf import point as P
    rc = cli.main(["bench", "--only", "dispatch", "--dispatch-wide-inp", "33",
                   "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--dispatch-wide-inp" in err and "wide_inp=33" in err, err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(D, "POINTS", (("llama-3.1-8b", "dimc-whatif"),))
    res = D.measure(2048, 32, 1, batch_cap=1)
    before, after, ab = res["rows"]
    assert (before["wide_inp"], after["wide_inp"], ab["wide_inp"]) == (1, 32, 32)
    assert (before["dimc_all_bank"], after["dimc_all_bank"], ab["dimc_all_bank"]) == \
        (False, False, True)
    for r in (before, after, ab):
        pt = P.run_point(model="llama-3.1-8b", system="dimc-whatif", policy="all",
                         context=2048, seed=1, wide_inp=r["wide_inp"], batch_cap=1,
                         dimc_all_bank=r["dimc_all_bank"])
        assert r["mac_utilisation"] == pt["mac_utilisation"]
        assert r["host_cmds"] == pt["sim_stats"]["host_cmds"]
        assert r["stage_cycles"] == pt["stage_cycles"]
        assert r["dispatch_ceiling"] >= r["mac_utilisation"]   # cycles >= host commands
    assert ab["host_cmds"] < after["host_cmds"] < before["host_cmds"]
    md = D.render(res)
    for k, a in ((1, "no"), (32, "no"), (32, "yes")):
        assert f"| llama-3.1-8b | dimc-whatif | {k} | {a} |" in md, md
    with pytest.raises(ValueError, match="dimc_all_bank"):      # only the what-if has it
        P.resolve(model="llama-3.1-8b", system="aim", context=2048, dimc_all_bank=True)
