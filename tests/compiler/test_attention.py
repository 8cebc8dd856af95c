"""Decode-step attention programs (compiler/attention) on the cycle-exact module model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from compiler import attention as A
from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams
from workloads.gemm import cosine

SMALL = ModuleParams(
    ChannelParams(MacroParams(n_in=16, n_out=16, w_bits=8, x_bits=8, n_acc=4, tree_stages=1,
                              n_sets=2), n_banks=4, n_gbuf=4, q_depth=8),
    n_ch=2, n_vpages=32, n_req=4, fifo_depth=8, loop_len=8)

COMBOS = [(part, alloc, loop) for part in ("HFP", "TCP") for alloc in ("static", "dpa")
          for loop in (False, True)]


def _reqs(kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "d16x2":      # two requests, head_dim 16 (one d-chunk), GQA group 2
        out = []
        for T in (20, 29):
            K, V, q = A.llama_head(rng, T, 16, 2)
            out.append(A.Request(K, V, q, max_context=32))
        return out
    # one request, head_dim 32: two d-chunks accumulated in one bank, two SV dim chunks
    K, V, q = A.llama_head(rng, 30, 32, 2)
    return [A.Request(K, V, q, max_context=32)]


def _check(prog, run, dec):
    assert run.status == "ok"
    assert run.errs == [] and run.dropped == [] and run.chan_errs == []
    assert dec is not None, f"{len(run.outs)} out beats, expected {prog.n_reads}"
    for o, e, ref in zip(dec.o, prog.expected_o, prog.reference, strict=True):
        np.testing.assert_allclose(o, e, rtol=0, atol=1e-12)    # bit-exact integers
        assert cosine(o, ref) >= 0.99


@pytest.mark.parametrize("kind", ["d16x2", "d32"])
@pytest.mark.parametrize("part,alloc,loop", COMBOS)
def test_decode_matches_reference(kind, part, alloc, loop, seed):
    prog = A.build_program(SMALL, _reqs(kind, seed), part, alloc, loop)
    run, dec, met = A.run_program(prog, step_metrics=False)
    _check(prog, run, dec)
    assert prog.capacity["mapped_pages"] <= SMALL.n_pages
    assert 0 < run.utilisation < 1


def test_backpressure_and_loop_counts(seed):
    """out.ready low half the time: paced program still loses nothing; LOOP replays match."""
    prog = A.build_program(SMALL, _reqs("d32", seed), "TCP", "dpa", True)
    run, dec, _ = A.run_program(prog, out_ready_p=0.5, seed=seed, step_metrics=False)
    _check(prog, run, dec)


def test_dpa_capacity_beats_static(seed):
    reqs = A.request_mix(2, max_context=64, head_dim=16, group=2, seed=seed)
    caps = {}
    for alloc in ("static", "dpa"):
        prog = A.build_program(SMALL, reqs, "TCP", alloc, True)
        run, dec, _ = A.run_program(prog, step_metrics=False)
        _check(prog, run, dec)
        caps[alloc] = prog.capacity
    live = sum(2 * r.H * r.T * r.d for r in reqs)
    assert caps["static"]["live_bytes"] == caps["dpa"]["live_bytes"] == live
    assert caps["dpa"]["utilisation"] > caps["static"]["utilisation"]
    assert caps["dpa"]["mapped_pages"] < caps["static"]["mapped_pages"]


def test_limits_raise(seed):
    reqs = _reqs("d16x2", seed)
    with pytest.raises(ValueError, match="n_req"):
        A.build_program(SMALL, reqs * 3, "TCP", "dpa")
    with pytest.raises(ValueError, match="n_pages"):
        A.build_program(SMALL, reqs, "HFP", "static", max_context=64)
    K, V, q = A.llama_head(np.random.default_rng(seed), 8, 128, 1)   # 8 d-chunks > n_gbuf
    with pytest.raises(ValueError, match="n_gbuf"):
        A.build_program(SMALL, [A.Request(K, V, q)], "TCP", "dpa")


def test_minilm_real_text():
    p = A.minilm_params()
    reqs = A.minilm_decode()
    assert reqs[0].H == 12 and reqs[0].d == 32
    for part in ("HFP", "TCP"):
        prog = A.build_program(p, reqs, part, "dpa", part == "TCP")
        run, dec, _ = A.run_program(prog, step_metrics=False)
        _check(prog, run, dec)


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("loop", [False, True])
def test_tcp_multicast_wr_inp_is_bit_exact_and_saves_host_beats(K, loop, seed):
    """wide_inp K on a 4-channel module: each SV token chunk's 4 per-channel probability tiles
    become ceil(4 / K) WR_INPs (multicast over up to K channels: tile k to the k-th masked
    channel), the decode stays bit-exact (a tile in the wrong channel would not be), and the
    performance model equals the golden model on the program."""
    from dataclasses import replace
    from perf.program import from_host_words
    from perf.sim import SimParams, simulate
    from spec.isa import HostOp, host_fields
    base = replace(SMALL, n_ch=4, n_vpages=64)
    wide = replace(base, wide_inp=K)
    reqs = _reqs("d32", seed)
    progs = {p.wide_inp: A.build_program(p, reqs, "TCP", "dpa", loop) for p in (base, wide)}
    for p in (base, wide):
        run, dec, _ = A.run_program(progs[p.wide_inp], step_metrics=False)
        _check(progs[p.wide_inp], run, dec)
        res = simulate(SimParams.from_module(p), from_host_words(p, progs[p.wide_inp].cmds))
        assert (res.cycles, res.stats["busy"]) == (run.cycles, sum(run.busy_cycles))
    hf = host_fields(wide)

    def f(w, k):
        return (w >> hf[k].offset) & ((1 << hf[k].width) - 1)
    wi = [w for w, _ in progs[K].cmds if f(w, "op") == int(HostOp.WR_INP)]
    multi = [w for w in wi if f(w, "multi")]
    n1 = sum(1 for w, _ in progs[1].cmds if w & 0xF == int(HostOp.WR_INP)
             and ((w >> hf["chmask"].offset) & 0xF).bit_count() == 1)
    chunks = n1 // 4
    assert chunks >= 1
    assert len(multi) == chunks * (4 // K)                    # full groups of K channels
    assert {f(w, "chmask") for w in multi} == {((1 << K) - 1) << c0
                                               for c0 in range(0, 4 - K + 1, K)}
    assert len(progs[1].cmds) - len(progs[K].cmds) == chunks * (4 - math.ceil(4 / K))
