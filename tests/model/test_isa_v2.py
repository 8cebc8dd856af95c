"""ISA v2 options in spec and golden models, against docs/channel.md and docs/module.md:
all-bank MAC (channel ``ab`` and host MAC_AB), host flow control (``host_ready``), wide input
(``wide_inp``), and the defaults unchanged (layouts compared with hand-written tables)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from compiler.host import pace
from compiler.programs import gemv_program, qk_stream_program
from model.channel import ChannelModel
from model.interface import state_diff
from model.module import ModuleModel
from spec.isa import (HOST_CHANNEL_OPS, ChannelParams, HostOp, ModErr, ModuleParams, Op,
                      cmd_fields, encode, host_encode, host_fields, host_op_limit,
                      mod_out_fields, out_fields)
from spec.params import MacroParams, pack_vec, unpack, unpack_vec
from tb.stimgen import random_channel_cmds, random_host_cmds

MP = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_sets=2, n_acc=4, tree_stages=1)
X, PS = MP.x_bits, MP.tree_stages
CP = ChannelParams(macro=MP, n_banks=4, n_gbuf=2, q_depth=4, all_bank=True)
B, S, A = CP.n_banks, MP.n_sets, MP.acc_width


def mparams(**kw):
    kw.setdefault("channel", CP)
    base = dict(n_ch=2, n_vpages=16, n_req=2, fifo_depth=4, loop_len=4)
    base.update(kw)
    return ModuleParams(**base)


def rnd_w(rng):
    return rng.integers(*MP.w_range, endpoint=True, size=(MP.n_in, MP.n_out))


def rnd_x(rng):
    return rng.integers(*MP.x_range, endpoint=True, size=MP.n_in)


def wrap(v):
    return ((np.asarray(v, dtype=np.int64) + (1 << (A - 1))) & ((1 << A) - 1)) - (1 << (A - 1))


def ch_outs(p, outs):
    """{(bank, o): y} of channel out beats (later beats of an entry win)."""
    f = out_fields(p)
    return {(unpack(f, w)["bank"], unpack(f, w)["o"]): unpack_vec(w, MP.n_out, A) for w in outs}


# ---------------------------------------------------------------------------------------------
# defaults unchanged

def test_default_channel_layout_is_the_original():
    want = {"op": (0, 2), "bank": (2, 2), "set": (4, 1), "row": (5, 6), "g": (11, 2),
            "o": (13, 4), "acc": (17, 1), "data": (18, 512)}
    got = {n: (f.offset, f.width) for n, f in cmd_fields(ChannelParams()).items()}
    assert got == want
    ab = {n: (f.offset, f.width) for n, f in cmd_fields(ChannelParams(all_bank=True)).items()}
    assert ab == {**{k: v for k, v in want.items() if k != "data"}, "ab": (18, 1),
                  "data": (19, 512)}
    assert ChannelParams().tag == "i64_o64_w8_x8_s2_a16_t1_g6_b4_g4_q8_dcs"
    assert ChannelParams(all_bank=True).window == ChannelParams().window


def test_default_host_layout_is_the_original():
    # the options off give the one default layout (16-bit chmask: up to 16 channels)
    want = {"op": (0, 4), "chmask": (4, 16), "rid": (20, 4), "vp": (24, 8), "pp": (32, 8),
            "row": (40, 10), "g": (50, 6), "o": (56, 8), "acc": (64, 1), "n": (65, 5),
            "per": (70, 4), "vps": (74, 8), "os": (82, 8), "count": (90, 16),
            "data": (106, 512)}
    for p in (ModuleParams(), ModuleParams(host_ready=True),
              ModuleParams(channel=ChannelParams(all_bank=True))):
        assert {n: (f.offset, f.width) for n, f in host_fields(p).items()} == want
    wide = {n: (f.offset, f.width) for n, f in host_fields(ModuleParams(wide_inp=3)).items()}
    assert wide == {**{k: v for k, v in want.items() if k != "data"}, "multi": (106, 1),
                    "data": (107, 3 * 512)}
    assert ModuleParams().tag == "i64_o64_w8_x8_s2_a16_t1_g6_b4_g4_q8_dcs_c4_v32_r4_f8_l8"
    assert [int(o) for o in HostOp] == list(range(10)) and len(HostOp) == 10
    assert HOST_CHANNEL_OPS == {HostOp.WR_INP: Op.WR_INP, HostOp.WR_W: Op.WR_W,
                                HostOp.MAC: Op.MAC, HostOp.RD_OUT: Op.RD_OUT}
    assert int(HostOp.MAC_AB) == 10 and int(ModErr.NOT_STRIPE) == 7
    assert host_op_limit(ModuleParams()) == 10
    assert host_op_limit(ModuleParams(channel=ChannelParams(all_bank=True))) == 11


@pytest.mark.parametrize("kw", [dict(host_ready=1), dict(wide_inp=0), dict(wide_inp=3),
                                dict(wide_inp=True), dict(wide_inp=2.0)])
def test_bad_module_options(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        mparams(**kw)                              # n_ch = 2: wide_inp 3 is too many


def test_bad_channel_option_and_encodings():
    with pytest.raises(ValueError, match="all_bank"):
        ChannelParams(all_bank=1)
    with pytest.raises(ValueError, match="all_bank=False"):
        encode(ChannelParams(), Op.MAC, ab=1)
    with pytest.raises(ValueError, match="bank=2"):
        encode(CP, Op.MAC, bank=2, ab=1)
    with pytest.raises(ValueError, match="only for MAC"):
        encode(CP, Op.RD_OUT, ab=1)
    with pytest.raises(ValueError, match="ab"):
        encode(CP, Op.MAC, ab=2)
    with pytest.raises(ValueError, match="multi"):
        host_encode(ModuleParams(), HostOp.WR_INP, multi=1)


def _run_host(p, words, out_ready=1):
    """Step ``words`` in (one per cycle while the FIFO has room), then settle; the model."""
    m = ModuleModel(p)
    m.reset(power_up=True)
    errs, i = [], 0
    for _ in range(5000):
        room = len(m._fifo) < p.fifo_depth
        o = m.step(int(i < len(words) and room), words[i] if i < len(words) and room else 0,
                   out_ready)
        if o.err:
            errs.append(o.err)
        if i < len(words) and room:
            i += 1
        elif i >= len(words) and m.idle:
            break
    for _ in range(2):
        o = m.step(0, 0, out_ready)
        if o.err:
            errs.append(o.err)
    return m, errs


@pytest.mark.parametrize("all_bank", [False, True])
def test_opcode_10_without_all_bank_is_bad_opcode_as_before(all_bank):
    """Opcode 10 on a module without all_bank is rejected exactly like opcode 12 (and 11 with
    it): BAD_OPCODE, consumed, nothing else changes."""
    p = mparams(channel=ChannelParams(macro=MP, n_banks=4, n_gbuf=2, all_bank=all_bank))
    setup = [host_encode(p, HostOp.MAP, vp=b, pp=b * S, rid=0) for b in range(B)]
    bad = host_encode(p, 11 if all_bank else 10, chmask=1, rid=0, vp=0, g=0, o=0)
    ref = host_encode(p, 12, chmask=1, rid=0, vp=0, g=0, o=0)
    m1, e1 = _run_host(p, setup + [bad])
    m2, e2 = _run_host(p, setup + [ref])
    assert e1 == e2 == [ModErr.BAD_OPCODE]
    assert state_diff(m1.state(), m2.state()) == []


# ---------------------------------------------------------------------------------------------
# channel: all-bank MAC

def _load(rng, p, ws=None):
    """WR_W commands of random weights in every (bank, set); returns (cmds, W[b][s])."""
    W = ws if ws is not None else [[rnd_w(rng) for _ in range(S)] for _ in range(p.n_banks)]
    cmds = [(encode(p, Op.WR_W, bank=b, set=s, row=r, data=pack_vec(W[b][s][r], MP.w_bits)), 0)
            for b in range(p.n_banks) for s in range(S) for r in range(MP.n_in)]
    return cmds, W


@pytest.mark.parametrize("dcs", [True, False])
def test_all_bank_mac_equals_single_bank_macs(seed, dcs):
    rng = np.random.default_rng(seed)
    p = ChannelParams(macro=MP, n_banks=B, n_gbuf=2, q_depth=4, dcs=dcs, all_bank=True)
    load, W = _load(rng, p)
    xs = [rnd_x(rng) for _ in range(3)]
    prog_ab, prog_sb = list(load), list(load)
    for k, x in enumerate(xs):                     # entry 1: x0 (s0) + x1 (s1) + x2 (s0)
        s, acc, o = k % 2, int(k > 0), 1
        for prog in (prog_ab, prog_sb):
            prog.append((encode(p, Op.WR_INP, g=k % 2, data=pack_vec(x, X)), 0))
        prog_ab.append((encode(p, Op.MAC, set=s, g=k % 2, o=o, acc=acc, ab=1), 0))
        prog_sb += [(encode(p, Op.MAC, bank=b, set=s, g=k % 2, o=o, acc=acc), 0)
                    for b in range(B)]
    rd = [(encode(p, Op.RD_OUT, bank=b, o=1), 0) for b in range(B)]
    ta = ChannelModel(p).run(prog_ab + rd)
    ts = ChannelModel(p).run(prog_sb + rd)
    assert ta.status == ts.status == "ok" and not ta.errors() and not ts.errors()
    want = {(b, 1): list(wrap(xs[0] @ W[b][0] + xs[1] @ W[b][1] + xs[2] @ W[b][0]))
            for b in range(B)}
    assert ch_outs(p, ta.outs) == ch_outs(p, ts.outs) == want
    assert sum(ta.busy_cycles) == sum(ts.busy_cycles) == 3 * B * X


def _probe_run(p, cmds):
    """Run with a probe: per cycle (busy, cmd transfers, ioq seqs, cq seqs, done copy)."""
    log = []

    def probe(m, c, o):
        st = m.state()
        log.append(dict(busy=o.busy, ioq=[e["seq"] for e in st["ioq"]],
                        cq=[(e["seq"], e["deps"]) for e in st["cq"]]))
    tr = ChannelModel(p).run(cmds, probe=probe)
    return tr, log


def test_all_bank_mac_timing_and_rd_out_of_any_bank(seed):
    """The all-bank MAC issues the cycle after its WR_INP (every bank busy X cycles from the
    next cycle) and a RD_OUT of any bank leaves X+P+2 cycles after that issue, exactly as
    after a single-bank MAC on that bank."""
    rng = np.random.default_rng(seed)
    p = ChannelParams(macro=MP, n_banks=B, n_gbuf=2, q_depth=4, all_bank=True)
    x = rnd_x(rng)
    for b in range(B):
        cyc = {}
        for ab in (1, 0):
            mac = encode(p, Op.MAC, bank=0 if ab else b, set=0, g=0, o=2, ab=ab)
            cmds = [(encode(p, Op.WR_INP, g=0, data=pack_vec(x, X)), 0), (mac, 0),
                    (encode(p, Op.RD_OUT, bank=b, o=2), 0)]
            tr, log = _probe_run(p, cmds)
            busy = [c for c, e in enumerate(log) if e["busy"]]
            full = (1 << B) - 1 if ab else 1 << b
            assert all(log[c]["busy"] == full for c in busy)
            issue = busy[0] - 1                     # macro busy from the cycle after issue
            assert busy == list(range(issue + 1, issue + 1 + X))
            assert issue == 2                       # WR_INP enqueued 0, issued 1, MAC at 2
            out_c = [c for c, k, _ in tr.events if k == "out"][0]
            assert out_c == issue + X + PS + 2 + 1  # RD_OUT issues at +X+P+2, beat a cycle later
            cyc[ab] = out_c
        assert cyc[0] == cyc[1]


def test_all_bank_mac_dependencies_youngest_pending(seed):
    """WR_Ws to set 0 of banks 1 and 3 wait in the I/O queue behind a RD_OUT; an all-bank MAC
    on set 0 enqueued after them records the younger WR_W (bank 3) as its ww dependency and
    issues only after it; a WR_W to any bank's set 0 after the all-bank MAC is held until the
    MAC is done (no weight hazard), and the results use the weights before that write."""
    rng = np.random.default_rng(seed)
    p = ChannelParams(macro=MP, n_banks=B, n_gbuf=2, q_depth=8, all_bank=True)
    load, W = _load(rng, p)
    x = rnd_x(rng)
    new1, new3, late = rnd_w(rng)[0], rnd_w(rng)[0], rnd_w(rng)[0]
    cmds = load + [
        (encode(p, Op.WR_INP, g=0, data=pack_vec(x, X)), 0),
        (encode(p, Op.MAC, bank=0, set=1, g=0, o=0), 0),             # seq base+1
        (encode(p, Op.RD_OUT, bank=0, o=0), 0),                      # waits X+P+2
        (encode(p, Op.WR_W, bank=1, set=0, row=0, data=pack_vec(new1, MP.w_bits)), 0),
        (encode(p, Op.WR_W, bank=3, set=0, row=0, data=pack_vec(new3, MP.w_bits)), 0),
        (encode(p, Op.MAC, set=0, g=0, o=1, ab=1), 0),
        (encode(p, Op.WR_W, bank=2, set=0, row=5, data=pack_vec(late, MP.w_bits)), 0),
        *[(encode(p, Op.RD_OUT, bank=b, o=1), 0) for b in range(B)],
    ]
    n0 = len(load)
    W_ = p.window
    seq = {k: (n0 + k) % W_ for k in range(7)}     # 0 WR_INP .. 5 all-bank MAC, 6 WR_W late
    tr, log = _probe_run(p, cmds)
    assert tr.status == "ok" and not tr.errors()
    # the all-bank MAC's deps as enqueued: gw = WR_INP (done by then: invalid) or it,
    # ww = the WR_W of bank 3 (the younger), orr = none pending
    ent = next(e for e in log for s_, d in e["cq"] if s_ == seq[5])
    deps = next(d for s_, d in ent["cq"] if s_ == seq[5])
    assert deps[1] == (1, seq[4]) and deps[2] == (0, 0)
    leave = {s_: max(c for c, e in enumerate(log) if s_ in e["ioq"] or
                     s_ in [q for q, _ in e["cq"]]) + 1 for s_ in seq.values()}
    assert leave[seq[5]] > leave[seq[4]]           # issued after the WR_W it waits for
    ab_issue = leave[seq[5]]
    assert leave[seq[6]] >= ab_issue + X + PS + 2  # the late WR_W waits until done
    want = {}
    for b in range(B):
        w0 = W[b][0].copy()
        if b == 1:
            w0[0] = new1
        if b == 3:
            w0[0] = new3
        want[(b, 1)] = list(wrap(x @ w0))
    want[(0, 0)] = list(wrap(x @ W[0][1]))
    assert ch_outs(p, tr.outs) == want


def test_in_order_all_bank_mac_costs_one_mac(seed):
    """In order, consecutive all-bank MACs issue X+P+2 cycles apart, every bank busy."""
    rng = np.random.default_rng(seed)
    p = ChannelParams(macro=MP, n_banks=B, n_gbuf=2, q_depth=4, dcs=False, all_bank=True)
    cmds = [(encode(p, Op.WR_INP, g=0, data=pack_vec(rnd_x(rng), X)), 0)]
    cmds += [(encode(p, Op.MAC, set=k % 2, g=0, o=k % 4, ab=1), 0) for k in range(4)]
    tr, log = _probe_run(p, cmds)
    rise = [c for c in range(1, len(log)) if log[c]["busy"] and not log[c - 1]["busy"]]
    assert [log[c]["busy"] for c in rise] == [(1 << B) - 1] * 4
    assert np.diff(rise).tolist() == [X + PS + 2] * 3


def test_all_bank_mac_ignores_bank_field(seed):
    """bank != 0 in an all-bank MAC (not encodable; a raw word) behaves as bank 0, also when
    it names a bank the channel does not have."""
    rng = np.random.default_rng(seed)
    p = ChannelParams(macro=MP, n_banks=3, n_gbuf=2, q_depth=4, all_bank=True)
    load, _ = _load(rng, p)
    f = cmd_fields(p)
    mac = encode(p, Op.MAC, set=1, g=0, o=3, ab=1)
    wr = [(encode(p, Op.WR_INP, g=0, data=pack_vec(rnd_x(rng), X)), 0)]
    rd = [(encode(p, Op.RD_OUT, bank=b, o=3), 0) for b in range(3)]
    outs = []
    for bank in (0, 2, 3):
        tr = ChannelModel(p).run(load + wr + [(mac | bank << f["bank"].offset, 0)] + rd)
        assert tr.status == "ok"
        outs.append(tr.outs)
    assert outs[0] == outs[1] == outs[2]


def test_random_all_bank_stream_equals_expanded_stream(seed):
    """A random channel stream with all-bank MACs gives the out beats of the same stream with
    every all-bank MAC expanded into B single-bank MACs (DCS keeps program-order results)."""
    p = ChannelParams(macro=MP, n_banks=B, n_gbuf=2, q_depth=4, all_bank=True)
    cmds = random_channel_cmds(p, seed, 300)
    f = cmd_fields(p)
    exp, n_ab = [], 0
    for w, gap in cmds:
        d = unpack(f, w)
        if d["op"] == Op.MAC and d["ab"]:
            n_ab += 1
            exp += [(encode(p, Op.MAC, bank=b, set=d["set"], g=d["g"], o=d["o"],
                            acc=d["acc"]), gap) for b in range(B)]
        else:
            exp.append((w, gap))
    assert n_ab > 10
    ta, te = ChannelModel(p).run(cmds, out_ready_p=0.7, seed=seed), \
        ChannelModel(p).run(exp, out_ready_p=0.7, seed=seed)
    assert ta.status == te.status == "ok" and not ta.errors() and not te.errors()
    assert ta.outs == te.outs


@pytest.mark.parametrize("dcs", [True, False])
def test_programs_all_bank_gemv_and_qk(seed, dcs):
    """The all-bank GEMV / QK^T builders give numpy's results with fewer MAC commands, and
    in order (the CENT-class baseline) in fewer cycles than single-bank MACs."""
    rng = np.random.default_rng(seed)
    mp = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=8, n_acc=8)
    p = ChannelParams(macro=mp, n_banks=4, n_gbuf=2, q_depth=4, dcs=dcs, all_bank=True)
    Wq, x = rng.integers(-128, 128, (30, 20)), rng.integers(-128, 128, (2, 20))
    K, q = rng.integers(-128, 128, (40, 12)), rng.integers(-128, 128, (2, 12))
    for build, a, b in ((gemv_program, Wq, x), (qk_stream_program, K, q)):
        res = {}
        for ab in (False, True):
            pr = build(p, a, b, all_bank=ab)
            tr = ChannelModel(p).run(pr.cmds)
            assert tr.status == "ok" and np.array_equal(pr.decode(tr.outs), pr.expected)
            res[ab] = (pr.n_mac, tr.cycles)
        assert res[True][0] < res[False][0]
        if not dcs:
            assert res[True][1] < res[False][1]
    with pytest.raises(ValueError, match="all_bank"):
        gemv_program(ChannelParams(macro=mp), Wq, x, all_bank=True)


# ---------------------------------------------------------------------------------------------
# module: MAC_AB

def _stripe(p, vp0, s, rid=0):
    return [host_encode(p, HostOp.MAP, vp=vp0 + b, pp=b * S + s, rid=rid) for b in range(B)]


def _wr_pages(p, rng, vps, chmask=0b11):
    W = {vp: rnd_w(rng) for vp in vps}
    cmds = [host_encode(p, HostOp.WR_W, chmask=chmask, rid=0, vp=vp, row=r,
                        data=pack_vec(W[vp][r], MP.w_bits)) for vp in vps for r in range(MP.n_in)]
    return cmds, W


def _mod_outs(p, outs):
    f = mod_out_fields(p)
    return sorted((unpack(f, w)["chan"], unpack(f, w)["bank"], unpack(f, w)["o"],
                   tuple(unpack_vec(w, MP.n_out, A))) for w in outs)


def test_mac_ab_equals_single_macs_and_loops(seed):
    """MAC_AB on a stripe = B MACs on vp..vp+B-1 (numpy), multicast; and a LOOP over two
    stripes (vps = B) gives the same as the unrolled MAC_ABs."""
    rng = np.random.default_rng(seed)
    p = mparams()
    setup = _stripe(p, 0, 0) + _stripe(p, 4, 1)
    wr, W = _wr_pages(p, rng, range(8))
    x = rnd_x(rng)
    inp = [host_encode(p, HostOp.WR_INP, chmask=0b11, g=1, data=pack_vec(x, X))]
    rd = [host_encode(p, HostOp.RD_OUT, chmask=0b11, rid=0, vp=v, o=3) for v in range(B)]
    ab = [host_encode(p, HostOp.MAC_AB, chmask=0b11, rid=0, vp=v, g=1, o=3, acc=int(v > 0))
          for v in (0, 4)]
    sb = [host_encode(p, HostOp.MAC, chmask=0b11, rid=0, vp=v + b, g=1, o=3, acc=int(v > 0))
          for v in (0, 4) for b in range(B)]
    # o3 <- x @ W[b] (MAC_AB vp 0), then a LOOP of 2 iterations adds stripes vp 0 and vp 4
    loop = [ab[0], host_encode(p, HostOp.SET_TOK, rid=0, count=2),
            host_encode(p, HostOp.LOOP, rid=0, n=1, per=0, vps=B, os=0),
            host_encode(p, HostOp.MAC_AB, chmask=0b11, rid=0, vp=0, g=1, o=3, acc=1)]
    want = sorted((c, b, 3, tuple(wrap(x @ W[b] + x @ W[4 + b]))) for c in range(2)
                  for b in range(B))
    runs = {}
    for name, body in (("ab", ab), ("sb", sb), ("loop", loop)):
        runs[name] = ModuleModel(p).run(pace(p, [(w, 0) for w in setup + wr + inp + body + rd]))
        assert runs[name].status == "ok" and not runs[name].errs, name
    assert _mod_outs(p, runs["ab"].outs) == _mod_outs(p, runs["sb"].outs) == want
    want_loop = sorted((c, b, 3, tuple(wrap(2 * (x @ W[b]) + x @ W[4 + b]))) for c in range(2)
                       for b in range(B))
    assert _mod_outs(p, runs["loop"].outs) == want_loop
    assert sum(runs["ab"].busy_cycles) == sum(runs["sb"].busy_cycles) == 2 * 2 * B * X


@pytest.mark.parametrize("case", ["vp_range", "g", "o", "chmask", "rid", "unmapped",
                                  "not_owner", "not_stripe_bank", "not_stripe_set"])
def test_mac_ab_errors_drop_and_keep_state(case):
    p = mparams()
    setup = _stripe(p, 0, 1)
    f = dict(chmask=0b11, rid=0, vp=0, g=1, o=2, acc=0)
    code = ModErr.BAD_FIELD
    if case == "vp_range":
        f["vp"] = p.n_vpages - B + 1
    elif case == "g":
        f["g"] = CP.n_gbuf
    elif case == "o":
        f["o"] = MP.n_acc
    elif case == "chmask":
        f["chmask"] = 0b100
    elif case == "rid":
        f["rid"] = p.n_req
    elif case == "unmapped":
        setup = setup[:2] + setup[3:]                                   # vp 2 missing
        code = ModErr.UNMAPPED
    elif case == "not_owner":
        setup = setup[:3] + [host_encode(p, HostOp.MAP, vp=3, pp=3 * S + 1, rid=1)]
        code = ModErr.NOT_OWNER
    elif case == "not_stripe_bank":                                     # vp 1 -> bank 2
        setup = [setup[0], host_encode(p, HostOp.MAP, vp=1, pp=2 * S, rid=0)]
        setup += [host_encode(p, HostOp.MAP, vp=2 + k, pp=(2 + k) * S + 1, rid=0)
                  for k in range(2)]
        code = ModErr.NOT_STRIPE
    else:                                                               # vp 3 -> other set
        setup = setup[:3] + [host_encode(p, HostOp.MAP, vp=3, pp=3 * S, rid=0)]
        code = ModErr.NOT_STRIPE
    bad = host_encode(p, HostOp.MAC_AB, **f)
    m1, e1 = _run_host(p, setup + [bad])
    m2, e2 = _run_host(p, setup + [host_encode(p, HostOp.NOP)])
    assert e1 == [code] and e2 == []
    assert state_diff(m1.state(), m2.state(), ignore=("cycle", "err_count")) == []
    assert m1.state()["err_count"] == 1


# ---------------------------------------------------------------------------------------------
# host flow control

def _busy_program(p, rng, n_tail):
    """A MAC, a BARRIER that waits for it, then ``n_tail`` NOPs: the FIFO fills."""
    setup = [host_encode(p, HostOp.MAP, vp=0, pp=0, rid=0)]
    return setup + [host_encode(p, HostOp.WR_INP, chmask=1, g=0, data=pack_vec(rnd_x(rng), X)),
                    host_encode(p, HostOp.MAC, chmask=1, rid=0, vp=0, g=0, o=0),
                    host_encode(p, HostOp.BARRIER)] + [host_encode(p, HostOp.NOP)] * n_tail


def test_host_ready_is_fifo_room_independent_of_valid(seed):
    """host_ready = FIFO count < F at the start of the cycle, the same whether host_valid is
    0 or 1; a full FIFO deasserts it, a command offered meanwhile is held (not dropped, no
    ovf, no err_count) and transfers once ready is back."""
    rng = np.random.default_rng(seed)
    p = mparams(host_ready=True)
    words = _busy_program(p, rng, 10)
    m = ModuleModel(p)
    m.reset(power_up=True)
    i, not_ready = 0, 0
    for _ in range(80):
        n_before = len(m._fifo)
        o_idle = copy.deepcopy(m).step(0, 0, 1)
        o = m.step(int(i < len(words)), words[i] if i < len(words) else 0, 1)
        assert o.host_ready == o_idle.host_ready == int(n_before < p.fifo_depth)
        assert o.ovf == 0
        if i < len(words):
            assert len(m._fifo) - n_before in ((1, 0) if o.host_ready else (0, -1))
            i += o.host_ready
            not_ready += not o.host_ready
    assert i == len(words) and not_ready > 0
    assert m.state()["err_count"] == 0
    assert ModuleModel(mparams()).step(0, 0, 1).host_ready == 1    # old port: constant 1


def test_host_ready_random_stream_nothing_dropped_same_results(seed):
    """A random valid+malformed stream with random valid gaps on the ready port: nothing
    dropped, every command transferred once, the same per-channel out beats and error codes
    as the same stream paced on the old port; with zero gaps the same run cycle for cycle."""
    rng = np.random.default_rng(seed)
    ch = ChannelParams(macro=MP, n_banks=B, n_gbuf=2, q_depth=4)
    old, new = mparams(channel=ch), mparams(channel=ch, host_ready=True)
    cmds = random_host_cmds(old, seed, 250)
    gaps = [(w, int(rng.integers(0, 4)) if rng.random() < 0.4 else 0) for w, _ in cmds]
    r_old = ModuleModel(old).run(pace(old, cmds, out_ready_p=0.8, seed=seed, drain=False),
                                 out_ready_p=0.8, seed=seed)
    r_gap = ModuleModel(new).run(gaps, out_ready_p=0.8, seed=seed)
    r_zero = ModuleModel(new).run([(w, 0) for w, _ in cmds], out_ready_p=0.8, seed=seed)
    for r in (r_old, r_gap, r_zero):
        assert r.status == "ok" and not r.dropped and not r.ovfs and not r.chan_errs
        assert len(r.push_cycles) == len(cmds)
    assert r_gap.host_stalls > 0 and r_zero.host_stalls > 0

    def per_chan(r):
        f = mod_out_fields(old)
        out = {}
        for w in r.outs:
            out.setdefault(unpack(f, w)["chan"], []).append(w)
        return out
    assert per_chan(r_gap) == per_chan(r_old) and r_gap.err_codes() == r_old.err_codes()
    for k in ("outs", "out_cycles", "errs", "push_cycles", "busy_cycles", "cycles"):
        assert getattr(r_zero, k) == getattr(r_old, k), k
    assert r_old.err_count == len(r_old.errs)


def test_pace_same_gaps_in_both_modes(seed):
    rng = np.random.default_rng(seed)
    old, new = mparams(), mparams(host_ready=True)
    words = _busy_program(old, rng, 9)
    assert pace(old, [(w, 0) for w in words]) == pace(new, [(w, 0) for w in words])
    drop = ModuleModel(old).run([(w, 0) for w in words])
    assert drop.dropped                              # the old port unpaced drops
    ok = ModuleModel(new).run([(w, 0) for w in words])
    assert not ok.dropped and not ok.errs and ok.host_stalls > 0


# ---------------------------------------------------------------------------------------------
# wide input

def _sv_like(p, rng, T, multi):
    """Per token chunk: per-channel input tiles into GBuf (tc % 2), then 2 multicast MACs on
    pages 0/1 accumulating; per-channel tiles either as C WR_INPs or ceil(C/K) multi ones."""
    C, K, DB = p.n_ch, p.wide_inp, p.channel.data_bits
    setup = [host_encode(p, HostOp.MAP, vp=v, pp=v * S, rid=0) for v in range(2)]
    wr, W = _wr_pages(p, rng, range(2), chmask=(1 << C) - 1)
    xs = rng.integers(*MP.x_range, endpoint=True, size=(T, C, MP.n_in))
    body = []
    for tc in range(T):
        g = tc % 2
        if multi:
            for c0 in range(0, C, K):
                cs = range(c0, min(C, c0 + K))
                data = sum(pack_vec(xs[tc, c], X) << (k * DB) for k, c in enumerate(cs))
                body.append(host_encode(p, HostOp.WR_INP, chmask=sum(1 << c for c in cs), g=g,
                                        multi=1, data=data))
        else:
            body += [host_encode(p, HostOp.WR_INP, chmask=1 << c, g=g,
                                 data=pack_vec(xs[tc, c], X)) for c in range(C)]
        body += [host_encode(p, HostOp.MAC, chmask=(1 << C) - 1, rid=0, vp=v, g=g, o=1,
                             acc=int(tc > 0)) for v in range(2)]
    rd = [host_encode(p, HostOp.RD_OUT, chmask=(1 << C) - 1, rid=0, vp=v, o=1) for v in range(2)]
    want = sorted((c, v, 1, tuple(wrap(sum(xs[tc, c] @ W[v] for tc in range(T)))))
                  for c in range(C) for v in range(2))
    return setup + wr + [host_encode(p, HostOp.BARRIER)] + body + rd, len(body), want


def test_wide_input_equals_per_channel_wr_inps_and_saves_dispatch(seed):
    rng = np.random.default_rng(seed)
    ch = ChannelParams(macro=MP, n_banks=2, n_gbuf=2, q_depth=8)
    p = mparams(channel=ch, n_ch=4, wide_inp=4, fifo_depth=8)
    res = {}
    for multi in (False, True):
        words, n_body, want = _sv_like(p, np.random.default_rng(seed), 12, multi)
        r = ModuleModel(p).run(pace(p, [(w, 0) for w in words]))
        assert r.status == "ok" and not r.errs and _mod_outs(p, r.outs) == want
        res[multi] = (n_body, r.cycles)
    assert res[False][0] == 12 * (4 + 2) and res[True][0] == 12 * (1 + 2)
    assert res[True][1] < res[False][1] - 12        # the dispatcher was the bound


def test_wide_input_tiles_go_to_masked_channels_in_order(seed):
    """chmask 0b1010: tile 0 -> channel 1, tile 1 -> channel 3; multi = 0 broadcasts tile 0;
    more masked channels than wide_inp is BAD_FIELD with nothing changed."""
    rng = np.random.default_rng(seed)
    p = mparams(n_ch=4, wide_inp=2)
    DB = p.channel.data_bits
    t0, t1 = (rng.integers(*MP.x_range, endpoint=True, size=MP.n_in) for _ in range(2))
    data = pack_vec(t0, X) | pack_vec(t1, X) << DB
    m, e = _run_host(p, [host_encode(p, HostOp.WR_INP, chmask=0b1010, g=1, multi=1, data=data),
                         host_encode(p, HostOp.WR_INP, chmask=0b0101, g=0, data=data)])
    assert e == []
    gb = [c.state()["gbuf"] for c in m.channels]
    assert gb[1][1] == pack_vec(t0, X) and gb[3][1] == pack_vec(t1, X)
    assert gb[0][1] == gb[2][1] == 0
    assert gb[0][0] == gb[2][0] == pack_vec(t0, X) and gb[1][0] == gb[3][0] == 0
    bad = host_encode(p, HostOp.WR_INP, chmask=0b0111, g=1, multi=1, data=data)
    m1, e1 = _run_host(p, [bad])
    m2, e2 = _run_host(p, [host_encode(p, HostOp.NOP)])
    assert e1 == [ModErr.BAD_FIELD] and e2 == []
    assert state_diff(m1.state(), m2.state(), ignore=("cycle", "err_count")) == []


def test_random_streams_with_every_option(seed):
    """Random valid+malformed streams on modules with the options (and in order): no
    deadlock, nothing dropped on the ready port, channels never report an error."""
    for dcs in (True, False):
        ch = ChannelParams(macro=MP, n_banks=B, n_gbuf=2, q_depth=4, dcs=dcs, all_bank=True)
        p = mparams(channel=ch, n_ch=2, wide_inp=2, host_ready=True)
        r = ModuleModel(p).run(random_host_cmds(p, seed, 400), out_ready_p=0.7, seed=seed)
        assert r.status == "ok" and not r.dropped and not r.ovfs and not r.chan_errs
        assert ModErr.QUEUE_FULL not in r.err_codes()
