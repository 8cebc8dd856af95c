"""ISA v2 in the RTL: the all-bank MAC (``ChannelParams.all_bank``), host flow control
(``ModuleParams.host_ready``) and the multicast wide input (``ModuleParams.wide_inp``), each
Verilated PimChannel / PimModule in lockstep with its golden model (every output, every cycle),
on 2 channels x 2 banks of 8 x 4 macros.  Random valid and malformed streams with random host
valid gaps and out backpressure on every option combination; a directed program (the example
of docs/isa.md); and deliberately broken DUTs (``hdl.channel.FAULTS``, ``hdl.module.FAULTS``)
that the checker must report."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.channel import ChannelModel
from model.module import ModuleModel
from spec.isa import (ChannelParams, HostOp, ModErr, ModuleParams, Op, cmd_fields, host_encode,
                      host_fields, mod_out_fields)
from spec.params import MacroParams, pack_vec, unpack, unpack_vec
from tb.build import (Target, _beats, describe_mismatch, run_channel_lockstep, run_job,
                      run_module_lockstep)
from tb.stimgen import random_channel_cmds, random_host_cmds

MACRO = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=0)


def chan(dcs: bool = True, all_bank: bool = True) -> ChannelParams:
    return ChannelParams(macro=MACRO, n_banks=2, n_gbuf=2, q_depth=4, dcs=dcs,
                         all_bank=all_bank)


def mod(all_bank: bool, host_ready: bool, wide_inp: int) -> ModuleParams:
    """The TINY module of tests/rtl/test_rtl_module.py with the options (all off: the same
    build)."""
    return ModuleParams(chan(all_bank=all_bank), n_ch=2, n_vpages=8, n_req=2, fifo_depth=4,
                        loop_len=4, host_ready=host_ready, wide_inp=wide_inp)


OPTIONS = list(itertools.product((False, True), (False, True), (1, 2)))


def _ids(o):
    ab, hr, wi = o
    return f"{'ab' if ab else 'sb'}-{'hr' if hr else 'nohr'}-wi{wi}"


def _group(kind, p, fault=None):
    return pytest.mark.xdist_group(Target(kind, p, fault).name)


def _n_ab(p: ChannelParams, cmds) -> int:
    f = cmd_fields(p)
    return sum(1 for w, _ in cmds if unpack(f, w)["op"] == Op.MAC and unpack(f, w)["ab"])


# --------------------------------------------------------------------------------- channel
@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
def test_channel_all_bank_random_lockstep(dcs, seed):
    """2000 random well-formed commands (30% of the MACs all-bank) under out backpressure:
    RTL = model every cycle; same cycle count and output beats as the model's own run."""
    p = chan(dcs)
    cmds = random_channel_cmds(p, seed, 2000)
    assert _n_ab(p, cmds) > 100
    res = run_channel_lockstep(p, cmds, out_ready_p=0.6, seed=seed, label="ab_rand")
    assert res["ok"], describe_mismatch(res)
    ref = ChannelModel(p).run(cmds, out_ready_p=0.6, seed=seed)
    assert res["cycles"] == ref.cycles and res["outputs"] == list(ref.outs)


@_group("channel", chan(), "ab_skip_last")
def test_channel_all_bank_fault_is_reported(seed):
    """A DUT whose all-bank MAC skips the last bank is caught (busy, or a wrong/missing
    result), with a single-bank stream first that it passes."""
    p = chan()
    t = Target("channel", p, "ab_skip_last")
    single = [c for c in random_channel_cmds(chan(all_bank=False), seed, 300)]
    # the same stream is valid on the all_bank channel once re-encoded with ab = 0
    from spec.isa import decode, encode
    single = [(encode(p, Op(f.pop("op")), **f), g)
              for f, g in ((decode(chan(all_bank=False), w), g) for w, g in single)]
    ok = run_job(t, [_beats(single)], seed=seed, label="fault_sb")
    assert ok["ok"], describe_mismatch(ok)
    cmds = random_channel_cmds(p, seed, 300)
    res = run_job(t, [_beats(cmds)], seed=seed, label="fault_ab")
    assert not res["ok"], "the all-bank fault was not reported"
    m = res["mismatch"]
    assert m["signal"] in ("busy", "out.payload", "idle", "cmd.ready", "out.valid"), m


# --------------------------------------------------------------------------------- module
@pytest.mark.parametrize("opts", OPTIONS, ids=_ids)
def test_module_options_random_lockstep(opts, seed):
    """1500 random host commands per option combination (valid and malformed mixed, FIFO
    bursts, loops, stripes and MAC_ABs, multi WR_INPs; random host valid gaps; out.ready 0.6):
    RTL = model every cycle, and the same outputs as the model's own run.  Every error code of
    the configuration occurs: NOT_STRIPE only with all_bank, QUEUE_FULL only without
    host_ready (with it, the host was held by ready instead)."""
    ab, hr, wi = opts
    p = mod(ab, hr, wi)
    cmds = random_host_cmds(p, seed, 1500)
    hf = host_fields(p)
    if wi > 1:
        assert sum(1 for w, _ in cmds if unpack(hf, w)["op"] == HostOp.WR_INP
                   and unpack(hf, w)["multi"]) > 30
    res = run_module_lockstep(p, cmds, out_ready_p=0.6, seed=seed, label="v2_rand")
    assert res["ok"], describe_mismatch(res)
    ref = ModuleModel(p).run(cmds, out_ready_p=0.6, seed=seed)
    assert res["outputs"] == list(ref.outs) and res["cycles"] == ref.cycles
    codes = {c for _, c in res["errors"]}
    want = set(range(1, 6)) | ({int(ModErr.NOT_STRIPE)} if ab else set()) \
        | (set() if hr else {int(ModErr.QUEUE_FULL)})
    assert codes == want, f"error codes seen {sorted(codes)}, expected {sorted(want)}"
    if hr:
        assert ref.host_stalls > 50 and not ref.dropped


@_group("module", mod(True, True, 2))
def test_module_all_options_reset_mid_stream(seed):
    p = mod(True, True, 2)
    cmds = random_host_cmds(p, seed, 1500)
    res = run_module_lockstep(p, cmds, out_ready_p=0.7, seed=seed, reset_at=2500,
                              label="v2_reset")
    assert res["ok"], describe_mismatch(res)


@_group("module", mod(True, True, 2))
def test_isa_doc_example_with_options(seed):
    """docs/isa.md's example with the options (scaled to this module): one stripe, weights per
    bank, ONE multi WR_INP for both channels, ONE MAC_AB, a RD_OUT per bank; offered back to
    back (every gap 0, no pacing): nothing dropped, no error, y = x_c . W_b exactly."""
    p = mod(True, True, 2)
    rng = np.random.default_rng(seed)
    S, B, DB, A = MACRO.n_sets, p.channel.n_banks, p.channel.data_bits, MACRO.acc_width
    W = rng.integers(*MACRO.w_range, endpoint=True, size=(B, MACRO.n_in, MACRO.n_out))
    x = rng.integers(*MACRO.x_range, endpoint=True, size=(2, MACRO.n_in))

    def enc(op, **f):
        return host_encode(p, op, **f)
    prog = [enc(HostOp.MAP, vp=4 + b, pp=b * S + 1, rid=1) for b in range(B)]
    prog += [enc(HostOp.WR_W, chmask=0b11, rid=1, vp=4 + b, row=r,
                 data=pack_vec(W[b][r], MACRO.w_bits)) for b in range(B) for r in range(MACRO.n_in)]
    prog += [enc(HostOp.WR_INP, chmask=0b11, g=1, multi=1,
                 data=pack_vec(x[0], MACRO.x_bits) | pack_vec(x[1], MACRO.x_bits) << DB),
             enc(HostOp.MAC_AB, chmask=0b11, rid=1, vp=4, g=1, o=1, acc=0)]
    prog += [enc(HostOp.RD_OUT, chmask=0b11, rid=1, vp=4 + b, o=1) for b in range(B)]
    res = run_module_lockstep(p, [(w, 0) for w in prog], seed=seed, label="v2_doc")
    assert res["ok"], describe_mismatch(res)
    assert not res["errors"], res["errors"]
    of = mod_out_fields(p)
    got = {}
    for w in res["outputs"]:
        f = unpack(of, w)
        got[(f["chan"], f["bank"], f["o"])] = unpack_vec(f["y"], MACRO.n_out, A)
    want = {(c, b, 1): [int(v) for v in x[c] @ W[b]] for c in range(2) for b in range(B)}
    assert {k: [int(v) for v in y] for k, y in got.items()} == want
    assert len(res["outputs"]) == 2 * B


@_group("module", mod(False, True, 1), "ready_late")
def test_module_host_ready_late_fault_is_reported(seed):
    """A DUT whose host__ready is one cycle late is caught (host.ready, or the effect of the
    command it lost)."""
    p = mod(False, True, 1)
    cmds = random_host_cmds(p, seed, 600)
    res = run_job(Target("module", p, "ready_late"), [_beats(cmds)], seed=seed,
                  label="fault_hr")
    assert not res["ok"], "the late host ready was not reported"
    assert res["mismatch"]["signal"] == "host.ready", res["mismatch"]
