"""Golden model of the PIM module (model/module.py) against docs/module.md: hand-written host
programs on a small configuration, every error code with a "nothing else changed" state proof,
loops, BARRIER, FIFO overflow, reset, DPA allocation, and a long random valid+malformed stream
checked against an independent program-order functional interpreter (written below from the
doc, not from model/module.py)."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from compiler.pages import AllocError, PageAllocator
from spec.isa import (ChannelParams, HostOp, LoopMode, ModErr, ModuleParams, host_encode,
                      host_fields, mod_out_fields)
from model.interface import state_diff
from model.module import ModuleModel
from spec.params import MacroParams, pack_vec, unpack, unpack_vec

MP = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=0)
CP = ChannelParams(macro=MP, n_banks=2, n_gbuf=2, q_depth=4)
P = ModuleParams(channel=CP, n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4)
S, E, G, NI, NO = MP.n_sets, MP.n_acc, CP.n_gbuf, MP.n_in, MP.n_out
A = MP.acc_width
OF = mod_out_fields(P)
IGN = ("cycle", "err", "err_count")

H = lambda op, **f: host_encode(P, op, **f)   # noqa: E731


def wrow(vals):
    return pack_vec(vals, MP.w_bits)


def xvec(vals):
    return pack_vec(vals, MP.x_bits)


def dec_out(word):
    f = unpack(OF, word)
    return f["chan"], f["bank"], f["o"], tuple(unpack_vec(f["y"], NO, A))


def wrap(v):
    return ((np.asarray(v, dtype=np.int64) + (1 << (A - 1))) & ((1 << A) - 1)) - (1 << (A - 1))


class Sim:
    """Manual driver: push at most one word per cycle, collect outputs/errors."""

    def __init__(self, params=P, out_ready=1):
        self.m = ModuleModel(params)
        self.m.reset(power_up=True)
        self.out_ready = out_ready
        self.outs, self.errs, self.ovfs = [], [], []
        self.last = None

    def step(self, word=None):
        o = self.m.step(0 if word is None else 1, word or 0, self.out_ready)
        c = self.m.cycle - 1
        if o.out_valid and self.out_ready:
            self.outs.append(dec_out(o.out_payload))
        if o.err:
            self.errs.append((c, o.err))
        if o.ovf:
            self.ovfs.append(c)
        for co in self.m.last_chan_outs:
            assert co.err == 0
        self.last = o
        return o

    def push(self, *words):
        for w in words:
            self.step(w)

    def settle(self, limit=2000):
        """Step until idle with an empty output register, then two more cycles (err/ovf)."""
        for _ in range(limit):
            o = self.step()
            if o.idle and not o.out_valid and not self.m._out_valid:
                break
        else:
            raise AssertionError("did not settle")
        self.step()
        self.step()


def setup_pages(sim, W, X):
    """vp0 -> pp0 (bank0 set0) rid0, vp1 -> pp3 (bank1 set1) rid1; weights W[ch][vp] and
    GBuf X[g] in both channels."""
    sim.push(H(HostOp.MAP, vp=0, pp=0, rid=0), H(HostOp.MAP, vp=1, pp=3, rid=1))
    for ch in range(2):
        for vp, rid in ((0, 0), (1, 1)):
            for r in range(NI):
                sim.push(H(HostOp.WR_W, chmask=1 << ch, rid=rid, vp=vp, row=r,
                           data=wrow(W[ch][vp][r])))
    for g in range(G):
        sim.push(H(HostOp.WR_INP, chmask=3, g=g, data=xvec(X[g])))
    sim.settle()


def rand_ops(rng):
    W = rng.integers(-8, 8, size=(2, 2, NI, NO))
    X = rng.integers(-8, 8, size=(G, NI))
    return W, X


# ---- numerics / multicast ---------------------------------------------------------------------

@pytest.mark.parametrize("ready", [1, 0])
def test_multicast_mac_rdout(seed, ready):
    rng = np.random.default_rng(seed)
    W, X = rand_ops(rng)
    sim = Sim()
    setup_pages(sim, W, X)
    # page vp0 (rid 0): MAC g0 -> o0, MAC g1 -> o1, MAC acc g1 -> o0; vp1 (rid1): g0 -> o1
    sim.push(H(HostOp.MAC, chmask=3, rid=0, vp=0, g=0, o=0),
             H(HostOp.MAC, chmask=3, rid=0, vp=0, g=1, o=1),
             H(HostOp.MAC, chmask=3, rid=0, vp=0, g=1, o=0, acc=1),
             H(HostOp.MAC, chmask=3, rid=1, vp=1, g=0, o=1),
             H(HostOp.RD_OUT, chmask=3, rid=0, vp=0, o=0),
             H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=1),
             H(HostOp.RD_OUT, chmask=2, rid=1, vp=1, o=1))
    if not ready:            # hold out.ready low for a while: nothing may be lost
        for _ in range(60):
            sim.step()
        sim.out_ready = 1
    sim.settle()
    exp = []
    for ch in range(2):
        exp.append((ch, 0, 0, tuple(wrap(X[0] @ W[ch][0] + X[1] @ W[ch][0]))))
    exp.append((0, 0, 1, tuple(wrap(X[1] @ W[0][0]))))
    exp.append((1, 1, 1, tuple(wrap(X[0] @ W[1][1]))))
    got = sim.outs
    assert sorted(got) == sorted(exp)
    for ch in range(2):         # per channel, program order
        assert [g for g in got if g[0] == ch] == [e for e in exp if e[0] == ch]
    assert sim.errs == [] and sim.ovfs == []
    assert sim.m.state()["err_count"] == 0


# ---- errors: every code, and nothing else changes ---------------------------------------------

BAD = [
    ("opcode10", H(10), ModErr.BAD_OPCODE),
    ("opcode15", H(15, chmask=1, vp=0), ModErr.BAD_OPCODE),
    ("chmask0", H(HostOp.WR_INP, chmask=0, g=0), ModErr.BAD_FIELD),
    ("chmask4", H(HostOp.MAC, chmask=4, rid=0, vp=0), ModErr.BAD_FIELD),
    ("g", H(HostOp.WR_INP, chmask=1, g=2), ModErr.BAD_FIELD),
    ("g_mac", H(HostOp.MAC, chmask=1, rid=0, vp=0, g=2), ModErr.BAD_FIELD),
    ("row", H(HostOp.WR_W, chmask=1, rid=0, vp=0, row=8), ModErr.BAD_FIELD),
    ("o_mac", H(HostOp.MAC, chmask=1, rid=0, vp=0, o=2), ModErr.BAD_FIELD),
    ("o_rd", H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=2), ModErr.BAD_FIELD),
    ("vp", H(HostOp.RD_OUT, chmask=1, rid=0, vp=8), ModErr.BAD_FIELD),
    ("vp_map", H(HostOp.MAP, vp=8, pp=1, rid=0), ModErr.BAD_FIELD),
    ("rid", H(HostOp.SET_TOK, rid=2, count=3), ModErr.BAD_FIELD),
    ("rid_loop", H(HostOp.LOOP, rid=2, n=1), ModErr.BAD_FIELD),
    ("pp", H(HostOp.MAP, vp=2, pp=4, rid=0), ModErr.BAD_FIELD),
    ("loop_n0", H(HostOp.LOOP, rid=0, n=0), ModErr.BAD_FIELD),
    ("loop_n5", H(HostOp.LOOP, rid=0, n=5), ModErr.BAD_FIELD),
    ("unmapped_mac", H(HostOp.MAC, chmask=1, rid=0, vp=2), ModErr.UNMAPPED),
    ("unmapped_unmap", H(HostOp.UNMAP, rid=0, vp=5), ModErr.UNMAPPED),
    ("unmapped_wrw", H(HostOp.WR_W, chmask=3, rid=0, vp=7, row=1, data=5), ModErr.UNMAPPED),
    ("not_owner_rd", H(HostOp.RD_OUT, chmask=1, rid=0, vp=1), ModErr.NOT_OWNER),
    ("not_owner_unmap", H(HostOp.UNMAP, rid=1, vp=0), ModErr.NOT_OWNER),
    ("mapped_vp", H(HostOp.MAP, vp=0, pp=1, rid=0), ModErr.ALREADY_MAPPED),
    ("mapped_pp", H(HostOp.MAP, vp=2, pp=3, rid=0), ModErr.ALREADY_MAPPED),
]


@pytest.mark.parametrize("name,word,code", BAD, ids=[b[0] for b in BAD])
def test_error_changes_nothing_else(seed, name, word, code):
    rng = np.random.default_rng(seed)
    sim = Sim()
    setup_pages(sim, *rand_ops(rng))
    sim.push(H(HostOp.MAC, chmask=3, rid=0, vp=0, g=0, o=0))
    sim.settle()
    s0 = sim.m.state()
    n0 = len(sim.errs)
    t = sim.m.cycle
    sim.push(word)
    sim.settle()
    s1 = sim.m.state()
    assert sim.errs[n0:] == [(t + 2, int(code))]        # pushed t, consumed t+1, err at t+2
    assert s1["err_count"] == s0["err_count"] + 1
    assert state_diff(s0, s1, ignore=IGN) == []


def test_error_in_replay_equals_nop():
    """A rejected replayed command is consumed like a NOP: lockstep against the same program
    with NOP in its place, every state equal but err/err_count/lbuf, every cycle."""
    body_bad = [H(HostOp.MAC, chmask=1, rid=0, vp=0, g=0, o=0),
                H(HostOp.MAP, vp=3, pp=2, rid=0),                    # non-channel op in loop
                H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=1)]        # o + o_off >= 2 on iter 1
    body_nop = [body_bad[0], H(HostOp.NOP), body_bad[2]]
    pre = [H(HostOp.MAP, vp=0, pp=0, rid=0), H(HostOp.MAP, vp=1, pp=1, rid=0),
           H(HostOp.SET_TOK, rid=0, count=2)]
    loop = H(HostOp.LOOP, rid=0, n=3, per=0, vps=1, os=1)
    a, b = Sim(), Sim()
    prog_a = pre + [loop] + body_bad
    prog_b = pre + [loop] + body_nop
    for i in range(200):
        a.step(prog_a[i] if i < len(prog_a) else None)
        b.step(prog_b[i] if i < len(prog_b) else None)
        d = state_diff(a.m.state(), b.m.state(), ignore=IGN + ("lbuf", "fifo"))
        assert d == [], (i, d)
    assert [c for _, c in a.errs] == [ModErr.BAD_FIELD, ModErr.BAD_FIELD, ModErr.BAD_FIELD]
    assert [c for _, c in b.errs] == [ModErr.BAD_FIELD]          # RD_OUT o=1+1 on iteration 1
    assert a.m.state()["err_count"] == 3


# ---- loops --------------------------------------------------------------------------------------

def test_loop_trip_strides(seed):
    rng = np.random.default_rng(seed)
    W = rng.integers(-8, 8, size=(4, NI, NO))
    x = rng.integers(-8, 8, size=NI)
    sim = Sim()
    for vp in range(4):
        sim.push(H(HostOp.MAP, vp=vp, pp=vp, rid=0))
        for r in range(NI):
            sim.push(H(HostOp.WR_W, chmask=1, rid=0, vp=vp, row=r, data=wrow(W[vp][r])))
    sim.push(H(HostOp.WR_INP, chmask=1, g=1, data=xvec(x)))
    sim.settle()
    # tok 5, per 1 -> trip 3: pages vp 0, 1, 2; o alternates? os=1 would leave o range on
    # iteration 2, so os=0 here
    sim.push(H(HostOp.SET_TOK, rid=0, count=5),
             H(HostOp.LOOP, rid=0, n=2, per=1, vps=1, os=0),
             H(HostOp.MAC, chmask=1, rid=0, vp=0, g=1, o=0),
             H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=0))
    sim.settle()
    pp_bank = lambda vp: vp // S   # noqa: E731
    assert sim.outs == [(0, pp_bank(vp), 0, tuple(wrap(x @ W[vp]))) for vp in range(3)]
    assert sim.errs == []
    # os stride: tok 2, per 0 -> trip 2, o = 0, 1 on page vp 3 (vps 0)
    sim.outs.clear()
    sim.push(H(HostOp.SET_TOK, rid=0, count=2),
             H(HostOp.LOOP, rid=0, n=2, per=0, vps=0, os=1),
             H(HostOp.MAC, chmask=1, rid=0, vp=3, g=1, o=0),
             H(HostOp.RD_OUT, chmask=1, rid=0, vp=3, o=0))
    sim.settle()
    assert sim.outs == [(0, 1, o, tuple(wrap(x @ W[3]))) for o in range(2)]
    # trip 0 (tok 0): the body is captured and dropped; the next command runs normally
    sim.outs.clear()
    c0 = sim.m.consumed
    sim.push(H(HostOp.SET_TOK, rid=1, count=0),
             H(HostOp.LOOP, rid=1, n=2, per=3, vps=1, os=1),
             H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=0),
             H(HostOp.RD_OUT, chmask=1, rid=0, vp=1, o=0),
             H(HostOp.RD_OUT, chmask=1, rid=0, vp=2, o=0))
    sim.settle()
    assert sim.m.consumed - c0 == 5
    # OBuf (bank 1, o 0) last written by the vp 3 MAC of the os loop
    assert sim.outs == [(0, 1, 0, tuple(wrap(x @ W[3])))]
    assert sim.errs == []
    st = sim.m.state()["loop"]
    assert st["mode"] == LoopMode.NONE
    # per: tok 4, per 2 -> trip 1; tok 5, per 2 -> trip 2 (vp 0, 1)
    sim.outs.clear()
    sim.push(H(HostOp.SET_TOK, rid=0, count=5),
             H(HostOp.LOOP, rid=0, n=2, per=2, vps=1),
             H(HostOp.MAC, chmask=1, rid=0, vp=0, g=1, o=1),
             H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=1))
    sim.settle()
    assert [o[1] for o in sim.outs] == [0, 0]        # vp0 -> bank0, vp1 -> bank0
    assert [o[3] for o in sim.outs] == [tuple(wrap(x @ W[0])), tuple(wrap(x @ W[1]))]


def test_loop_modes_and_vp_overflow():
    sim = Sim()
    sim.push(H(HostOp.MAP, vp=6, pp=0, rid=0), H(HostOp.MAP, vp=7, pp=1, rid=0),
             H(HostOp.SET_TOK, rid=0, count=3))
    sim.settle()
    sim.step(H(HostOp.LOOP, rid=0, n=1, vps=1))
    assert sim.m.state()["loop"]["mode"] == LoopMode.NONE              # in FIFO
    sim.step()
    st = sim.m.state()["loop"]
    assert st["mode"] == LoopMode.CAPTURE and st["trip"] == 3
    assert sim.last.idle == 0
    for _ in range(3):                                        # capture waits for the FIFO
        sim.step()
    assert sim.m.state()["loop"]["mode"] == LoopMode.CAPTURE and sim.last.idle == 0
    sim.step(H(HostOp.RD_OUT, chmask=3, rid=0, vp=6, o=0))
    sim.step()
    assert sim.m.state()["loop"]["mode"] == LoopMode.REPLAY
    sim.settle()
    # vp 6, 7 fine; vp 8 >= V on the third iteration -> BAD_FIELD
    assert [c for _, c in sim.errs] == [ModErr.BAD_FIELD]
    assert len(sim.outs) == 4 and sorted(o[0] for o in sim.outs) == [0, 0, 1, 1]
    # LOOP inside a loop body is BAD_FIELD; BARRIER too
    sim.errs.clear()
    sim.push(H(HostOp.SET_TOK, rid=0, count=2), H(HostOp.LOOP, rid=0, n=2),
             H(HostOp.LOOP, rid=0, n=1), H(HostOp.BARRIER))
    sim.settle()
    assert [c for _, c in sim.errs] == [ModErr.BAD_FIELD] * 4


# ---- BARRIER, FIFO, timing ----------------------------------------------------------------------

def test_barrier_waits_for_idle_channels():
    sim = Sim()
    sim.push(H(HostOp.MAP, vp=0, pp=0, rid=0), H(HostOp.MAP, vp=1, pp=2, rid=0))
    sim.settle()
    macs = [H(HostOp.MAC, chmask=3, rid=0, vp=v, g=0, o=0) for v in (0, 1, 0, 1)]
    prog = macs + [H(HostOp.BARRIER), H(HostOp.NOP)]
    c0 = sim.m.consumed
    bar_cycle = None
    for i in range(100):
        w = prog[i] if i < len(prog) else None
        head = sim.m.state()["fifo"][:1]
        idle_ch = all(ch.state()["ioq"] == [] and ch.state()["cq"] == []
                      and not any(ch.state()["macq"]) for ch in sim.m.channels)
        before = sim.m.consumed
        sim.step(w)
        if head == [H(HostOp.BARRIER)]:
            if sim.m.consumed > before:
                assert idle_ch
                bar_cycle = sim.m.cycle - 1
            else:
                assert not idle_ch
    assert bar_cycle is not None and bar_cycle >= 4 + MP.x_bits * 2
    assert sim.m.consumed - c0 == 6


def test_fifo_overflow():
    sim = Sim()
    sim.push(H(HostOp.MAP, vp=0, pp=0, rid=0))
    sim.settle()
    s0 = sim.m.state()
    t0 = sim.m.cycle
    # 4 MACs on one bank keep the channel busy; BARRIER blocks; 6 back-to-back SET_TOKs
    prog = [H(HostOp.MAC, chmask=1, rid=0, vp=0)] * 4 + [H(HostOp.BARRIER)]
    prog += [H(HostOp.SET_TOK, rid=1, count=k + 1) for k in range(6)]
    sim.push(*prog)
    sim.settle()
    # FIFO: MACs drain 1/cycle until the channel's compute queue (4) is full; count the drops
    assert len(sim.ovfs) >= 1
    assert sim.errs == []
    assert sim.m.state()["err_count"] == len(sim.ovfs)
    for c in sim.ovfs:
        assert t0 + 5 < c <= t0 + len(prog)               # pushed in c-1, FIFO full there
    # dropped pushes are the last ones (FIFO stays full until BARRIER passes): tok = last kept
    kept = 6 - len(sim.ovfs)
    assert sim.m.state()["tok"][1] == kept
    s1 = sim.m.state()
    d = state_diff(s0, s1, ignore=IGN + ("ovf", "tok", "channels"))
    assert d == []


def test_push_into_full_fifo_dropped_even_if_popped():
    """Literal reading: fullness is judged at t (before this cycle's pop)."""
    sim = Sim()
    sim.push(H(HostOp.MAP, vp=0, pp=0, rid=0))
    sim.settle()
    sim.push(H(HostOp.MAC, chmask=1, rid=0, vp=0))
    # make the FIFO full behind a waiting BARRIER, then push in the cycle BARRIER pops
    sim.push(H(HostOp.BARRIER), H(HostOp.NOP), H(HostOp.NOP), H(HostOp.NOP))
    assert len(sim.m.state()["fifo"]) == 4
    while True:
        ch_idle = all(not ch.state()["cq"] and not ch.state()["ioq"]
                      and not any(ch.state()["macq"]) for ch in sim.m.channels)
        if ch_idle:
            break
        sim.step()
    n = len(sim.ovfs)
    sim.step(H(HostOp.SET_TOK, rid=0, count=9))           # BARRIER pops this cycle
    assert len(sim.m.state()["fifo"]) == 3
    sim.step()
    assert len(sim.ovfs) == n + 1
    sim.settle()
    assert sim.m.state()["tok"][0] == 0


def test_timing_basics():
    sim = Sim()
    o = sim.step(H(HostOp.NOP))
    assert o.idle == 1                                     # FIFO empty at t
    assert sim.m.state()["fifo"] == [H(HostOp.NOP)]
    o = sim.step()
    assert o.idle == 0 and sim.m.state()["fifo"] == []
    o = sim.step(H(HostOp.SET_TOK, rid=3, count=1))
    o = sim.step()
    assert o.err == 0                                      # rejected in this cycle
    o = sim.step()
    assert o.err == ModErr.BAD_FIELD and o.err_count == 1
    o = sim.step()
    assert o.err == 0 and o.err_count == 1


def test_err_count_saturates():
    sim = Sim()
    sim.m._err_count = (1 << 16) - 2
    sim.push(H(12), H(12), H(12))
    sim.settle()
    assert sim.last.err_count == (1 << 16) - 1


# ---- reset --------------------------------------------------------------------------------------

def test_reset_mid_stream(seed):
    rng = np.random.default_rng(seed)
    sim = Sim()
    setup_pages(sim, *rand_ops(rng))
    prog = [H(HostOp.MAC, chmask=3, rid=0, vp=0, g=0, o=0),
            H(HostOp.SET_TOK, rid=0, count=3), H(HostOp.LOOP, rid=0, n=2),
            H(HostOp.MAC, chmask=3, rid=0, vp=0, g=1, o=1),
            H(HostOp.RD_OUT, chmask=3, rid=0, vp=0, o=1)] + [H(HostOp.NOP)] * 4
    sim.push(*prog)
    st = sim.m.state()
    assert st["fifo"] or st["loop"]["mode"] != LoopMode.NONE or not sim.last.idle
    sim.m.reset()
    fresh = ModuleModel(P).state()
    assert state_diff(sim.m.state(), fresh, ignore=("W", "gbuf")) == []
    # weights / GBuf survive rst: a MAC on the old data still works after re-mapping
    sim.outs.clear()
    sim.push(H(HostOp.MAP, vp=0, pp=0, rid=0), H(HostOp.MAC, chmask=1, rid=0, vp=0, g=0, o=0),
             H(HostOp.RD_OUT, chmask=1, rid=0, vp=0, o=0))
    sim.settle()
    assert len(sim.outs) == 1 and sim.errs == []


# ---- run() driver ---------------------------------------------------------------------------------

def test_run_driver(seed):
    m = ModuleModel(P)
    cmds = [(H(HostOp.MAP, vp=0, pp=1, rid=0), 3), (H(HostOp.MAC, chmask=3, rid=0, vp=0), 0),
            (H(HostOp.RD_OUT, chmask=3, rid=0, vp=0), 2), (H(12), 0)]
    r = m.run(cmds, out_ready_p=0.5, seed=seed)
    assert r.status == "ok"
    assert r.push_cycles == [3, 4, 7, 8]
    assert r.errs == [(10, ModErr.BAD_OPCODE)]
    assert [dec_out(w)[0] for w in r.outs] == [0, 1]
    assert r.busy_cycles == [MP.x_bits, 0, MP.x_bits, 0]   # pp1 = bank 0 set 1
    assert m.idle and r.dropped == [] and r.err_count == 1


# ---- DPA ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["static", "dynamic"])
def test_dpa_allocator_on_model(policy):
    alloc = PageAllocator(P, policy, tokens_per_page=4)
    cmds = []
    cmds += alloc.admit(0, max_tokens=8)          # 2 pages
    cmds += alloc.admit(1, max_tokens=8)
    if policy == "static":
        assert alloc.reserved_pages == 4
        with pytest.raises(AllocError):
            PageAllocator(P, policy, tokens_per_page=4).admit(0, max_tokens=20)
    else:
        assert alloc.reserved_pages == 0
    cmds += alloc.grow(0, 3)
    cmds += alloc.grow(1, 5)
    acc = alloc.accounting()
    assert acc["live_bytes"] == 8 * alloc.bytes_per_token
    assert acc["reserved_pages"] == (4 if policy == "static" else 3)
    m = ModuleModel(P)
    r = m.run([(c, 0) for c in cmds])
    assert r.errs == [] and r.dropped == []
    pt = {vp: (e[1], e[2]) for vp, e in enumerate(m.state()["pt"]) if e[0]}
    assert pt == alloc.page_table()
    assert m.state()["tok"] == [3, 5]
    # a LOOP over rid 1's pages: vp0 + iter, trip = ceil(5/4) = 2
    vp0 = alloc.vpages(1)[0]
    rel = alloc.release(0) + alloc.release(1)
    assert alloc.reserved_pages == 0 and alloc.utilisation == 1.0
    prog = cmds + [H(HostOp.LOOP, rid=1, n=1, per=2, vps=1),
                   H(HostOp.RD_OUT, chmask=1, rid=1, vp=vp0)] + rel
    m = ModuleModel(P)
    r = m.run([(c, 0) for c in prog])
    assert r.errs == [] and len(r.outs) == 2
    assert not any(e[0] for e in m.state()["pt"])


def test_dpa_dynamic_beats_static_capacity():
    st, dy = PageAllocator(P, "static", tokens_per_page=4), PageAllocator(P, "dynamic",
                                                                            tokens_per_page=4)
    st.admit(0, 16)                          # all 4 pages reserved
    with pytest.raises(AllocError):
        st.admit(1, 4)
    dy.admit(0, 16)
    dy.admit(1, 16)                          # only virtual ranges
    dy.grow(0, 6)
    dy.grow(1, 6)
    assert dy.reserved_pages == 4 and dy.utilisation == 12 / 16
    with pytest.raises(AllocError):
        dy.grow(0, 9)
    assert dy.reserved_pages == 4


# ---- random stream vs an independent functional interpreter -------------------------------------

class Checker:
    """Program-order interpretation of docs/module.md (no timing): err codes and, per channel,
    the RD_OUT results (bank, o, y) in order."""

    FIELDS = {  # op: fields validated (other than the page table), from the doc's check 2
        1: ("chmask", "g"),
        2: ("chmask", "row", "vp", "rid"),
        3: ("chmask", "g", "o", "vp", "rid"),
        4: ("chmask", "o", "vp", "rid"),
        5: ("vp", "rid", "pp"),
        6: ("vp", "rid"),
        7: ("rid",),
        8: ("rid", "n"),
    }

    def __init__(self):
        self.pt = {}
        self.tok = [0, 0]
        self.W = np.zeros((2, 2, S, NI, NO), dtype=np.int64)
        self.gb = np.zeros((2, G, NI), dtype=np.int64)
        self.y = np.zeros((2, 2, E, NO), dtype=np.int64)
        self.errs, self.outs = [], [[], []]
        self.hf = host_fields(P)

    def bad_field(self, f, op, replay):
        if replay and op not in (0, 1, 2, 3, 4):
            return True
        lim = {"chmask": 1 << P.n_ch, "g": G, "row": NI, "o": E, "vp": P.n_vpages,
               "rid": P.n_req, "pp": P.n_pages, "n": P.loop_len + 1}
        for k in self.FIELDS.get(op, ()):
            if f[k] >= lim[k] or (k in ("chmask", "n") and f[k] == 0):
                return True
        return False

    def execute(self, word, replay=False, vp_off=0, o_off=0):
        """Returns the LOOP parameters if a LOOP was accepted, else None."""
        f = unpack(self.hf, word)
        f["vp"] += vp_off
        f["o"] += o_off
        op = f["op"]
        code = 0
        if op >= 10:
            code = ModErr.BAD_OPCODE
        elif self.bad_field(f, op, replay):
            code = ModErr.BAD_FIELD
        elif op in (2, 3, 4, 6) and f["vp"] not in self.pt:
            code = ModErr.UNMAPPED
        elif op in (2, 3, 4, 6) and self.pt[f["vp"]][0] != f["rid"]:
            code = ModErr.NOT_OWNER
        elif op == 5 and (f["vp"] in self.pt or f["pp"] in {e[1] for e in self.pt.values()}):
            code = ModErr.ALREADY_MAPPED
        if code:
            self.errs.append(int(code))
            return None
        chans = [c for c in range(P.n_ch) if f["chmask"] >> c & 1]
        if op in (2, 3, 4):
            pp = self.pt[f["vp"]][1]
            b, s = pp // S, pp % S
        if op == 1:
            for c in chans:
                self.gb[c, f["g"]] = unpack_vec(f["data"], NI, MP.x_bits)
        elif op == 2:
            for c in chans:
                self.W[c, b, s, f["row"]] = unpack_vec(f["data"], NO, MP.w_bits)
        elif op == 3:
            for c in chans:
                v = self.gb[c, f["g"]] @ self.W[c, b, s]
                if f["acc"]:
                    v = v + self.y[c, b, f["o"]]
                self.y[c, b, f["o"]] = wrap(v)
        elif op == 4:
            for c in chans:
                self.outs[c].append((c, b, f["o"], tuple(int(v) for v in self.y[c, b, f["o"]])))
        elif op == 5:
            self.pt[f["vp"]] = (f["rid"], f["pp"])
        elif op == 6:
            del self.pt[f["vp"]]
        elif op == 7:
            self.tok[f["rid"]] = f["count"]
        elif op == 8:
            return f["n"], math.ceil(self.tok[f["rid"]] / 2 ** f["per"]), f["vps"], f["os"]
        return None

    def run(self, words):
        i = 0
        while i < len(words):
            lp = self.execute(words[i])
            i += 1
            if lp is not None:
                n, trip, vps, os_ = lp
                body = words[i:i + n]
                i += n
                if len(body) < n:
                    break
                for it in range(trip):
                    for w in body:
                        self.execute(w, True, it * vps, it * os_)


def random_program(rng: random.Random, n: int):
    """Valid commands most of the time (a shadow page table steers vp/rid to mapped pages),
    every kind of malformed command some of the time, loops with in-range and overflowing
    strides."""
    shadow = {}                                     # vp -> (rid, pp): what the program intends

    def r(lo, hi, bad_p=0.05, bad_hi=None):
        if rng.random() < bad_p:
            return rng.randint(hi + 1, bad_hi if bad_hi is not None else hi + 2)
        return rng.randint(lo, hi)

    def page():
        if shadow and rng.random() < 0.85:
            vp = rng.choice(sorted(shadow))
            return dict(vp=vp, rid=shadow[vp][0] if rng.random() < 0.95 else rng.randint(0, 1))
        return dict(vp=r(0, 7, 0.1, 15), rid=r(0, 1, 0.05, 15))

    def chcmd():
        op = rng.choice([1, 2, 2, 3, 3, 3, 4, 4])
        f = dict(chmask=r(1, 3, 0.03, 7), **page())
        if rng.random() < 0.02:
            f["chmask"] = 0
        if op == 1:
            return H(op, chmask=f["chmask"], g=r(0, 1, 0.03, 63), data=rng.getrandbits(32))
        if op == 2:
            return H(op, **f, row=r(0, 7, 0.03, 1023), data=rng.getrandbits(32))
        if op == 3:
            return H(op, **f, g=r(0, 1, 0.03), o=r(0, 1, 0.03), acc=rng.randint(0, 1))
        return H(op, **f, o=r(0, 1, 0.03))

    def other():
        k = rng.random()
        if k < 0.3:
            vp, pp, rid = r(0, 7, 0.05, 255), r(0, 3, 0.05, 255), r(0, 1, 0.05)
            if vp < 8 and pp < 4 and rid < 2 and vp not in shadow and \
                    pp not in {e[1] for e in shadow.values()}:
                shadow[vp] = (rid, pp)
            return H(HostOp.MAP, vp=vp, pp=pp, rid=rid)
        if k < 0.42:
            f = page()
            if f["vp"] in shadow and shadow[f["vp"]][0] == f["rid"]:
                del shadow[f["vp"]]
            return H(HostOp.UNMAP, **f)
        if k < 0.6:
            return H(HostOp.SET_TOK, rid=r(0, 1, 0.05), count=rng.randint(0, 6))
        if k < 0.72:
            return H(HostOp.BARRIER)
        if k < 0.85:
            return H(HostOp.NOP, rid=rng.randint(0, 15))
        return H(rng.randint(10, 15), chmask=1)

    words = []
    while len(words) < n:
        k = rng.random()
        if k < 0.6:
            words.append(chcmd())
        elif k < 0.9:
            words.append(other())
        else:
            ln = r(1, 4, 0.1, 31) if rng.random() > 0.05 else 0
            words.append(H(HostOp.LOOP, rid=r(0, 1, 0.05), n=ln, per=rng.randint(0, 2),
                           vps=rng.randint(0, 2), os=rng.randint(0, 1)))
            for _ in range(min(ln, 4)):
                words.append(chcmd() if rng.random() < 0.85 else other())
    return words


@pytest.mark.parametrize("ready_p", [1.0, 0.6])
def test_random_stream_vs_checker(seed, ready_p):
    rng = random.Random(seed)
    words = random_program(rng, 2000)
    gaps = [rng.choice([0, 0, 1, 2, 3, 6]) for _ in words]
    # a dropped push can leave the last loop body short (CAPTURE then waits for the host):
    # finish with loop_len NOPs pushed slowly enough never to be dropped
    words += [H(HostOp.NOP)] * P.loop_len
    gaps += [40] * P.loop_len
    m = ModuleModel(P)
    r = m.run(list(zip(words, gaps, strict=True)), out_ready_p=ready_p, seed=seed)
    assert r.status == "ok"
    assert r.chan_errs == []
    kept = [w for i, w in enumerate(words) if i not in set(r.dropped)]
    assert len(r.ovfs) == len(r.dropped)
    chk = Checker()
    chk.run(kept)
    assert r.err_codes() == chk.errs
    got = [dec_out(w) for w in r.outs]
    for c in range(P.n_ch):
        assert [g for g in got if g[0] == c] == chk.outs[c]
    assert r.err_count == min(65535, len(chk.errs) + len(r.dropped))
    # every error code occurs, and some outputs: the stream exercises the rules
    assert {1, 2, 3, 4, 5} <= set(chk.errs)
    assert sum(len(o) for o in chk.outs) > 20
    assert m.idle
    assert 0 < len(r.dropped) < len(words) // 4


# ---- up to 16 channels (16-bit chmask, 4-bit chan) ---------------------------------------------

@pytest.mark.parametrize("n_ch", [9, 12, 16])
def test_channels_above_eight_are_addressed_and_tagged(seed, n_ch):
    """Channels 0, 8 and C-1 get their own weights, one multicast MAC and RD_OUT, and their
    beats carry chan 0, 8, C-1; chmask 0 and (below 16 channels) 2**C are BAD_FIELD."""
    cp = ChannelParams(macro=MP, n_banks=1, n_gbuf=2, q_depth=4)
    p = ModuleParams(channel=cp, n_ch=n_ch, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4,
                     host_ready=True)
    assert host_fields(p)["chmask"].width == 16 and mod_out_fields(p)["chan"].width == 4
    rng = np.random.default_rng(seed)
    chans = sorted({0, 8, n_ch - 1})
    W = {c: rng.integers(-8, 8, (NI, NO)) for c in chans}
    x = rng.integers(-8, 8, NI)
    mask = sum(1 << c for c in chans)
    h = lambda op, **f: host_encode(p, op, **f)   # noqa: E731
    prog = [h(HostOp.MAP, vp=1, pp=0, rid=0)]
    prog += [h(HostOp.WR_W, chmask=1 << c, rid=0, vp=1, row=r, data=wrow(W[c][r]))
             for c in chans for r in range(NI)]
    prog += [h(HostOp.WR_INP, chmask=(1 << n_ch) - 1, g=1, data=xvec(x)),
             h(HostOp.WR_INP, chmask=0, g=0),                               # BAD_FIELD
             h(HostOp.MAC, chmask=mask, rid=0, vp=1, g=1, o=1),
             h(HostOp.RD_OUT, chmask=mask, rid=0, vp=1, o=1)]
    bad = [ModErr.BAD_FIELD]
    if n_ch < 16:
        prog.append(h(HostOp.RD_OUT, chmask=1 << n_ch, rid=0, vp=1, o=1))   # BAD_FIELD
        bad.append(ModErr.BAD_FIELD)
    run = ModuleModel(p).run([(w, 0) for w in prog])
    assert run.status == "ok" and not run.dropped
    assert [code for _, code in run.errs] == bad
    got = {}
    for w in run.outs:
        f = unpack(mod_out_fields(p), w)
        got[f["chan"]] = (f["bank"], f["o"], tuple(unpack_vec(f["y"], NO, A)))
    assert got == {c: (0, 1, tuple(wrap(x @ W[c]))) for c in chans}
