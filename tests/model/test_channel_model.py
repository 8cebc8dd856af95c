"""Channel golden model (model/channel.py) and program builders (compiler/programs.py).

Programs give exact results with and without DCS; DCS is never slower and strictly faster on
the QK stream; the in-order baseline never has more than one command in flight; random
well-formed command streams under random out backpressure match a functional (program-order)
interpretation; reset mid-stream returns to a clean state.
"""
from __future__ import annotations

import numpy as np
import pytest

from model.channel import ChannelModel
from model.interface import state_diff
from spec.isa import ChannelParams, Op, encode
from model.macro import MacroModel
from compiler.programs import decode_out, gemv_program, qk_stream_program
from spec.params import MacroParams, pack_vec, unpack_vec

SMALL = MacroParams(n_in=16, n_out=8, n_sets=4, n_acc=8)
SMALL4 = MacroParams(n_in=12, n_out=4, w_bits=4, x_bits=4, n_sets=2, n_acc=4, tree_stages=0,
                     acc_guard=1)


def _params(macro=SMALL, dcs=True, **kw):
    d = dict(n_banks=2, n_gbuf=2, q_depth=4)
    d.update(kw)
    return ChannelParams(macro=macro, dcs=dcs, **d)


def _rand(rng, shape, bits):
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)


def _run_ok(p, prog, **kw):
    tr = ChannelModel(p).run(prog.cmds, **kw)
    assert tr.status == "ok", tr.status
    assert not tr.errors(), tr.errors()[:3]
    got = prog.decode(tr.outs)
    assert np.array_equal(got, prog.expected), prog.note
    return tr


def _programs(macro, dcs, rng, **kw):
    p = _params(macro, dcs, **kw)
    m = macro
    # gemv: 2 n-tiles (one per bank) x 2 k-tiles (+ partial tiles), and a 3-token GEMM
    N, K = 2 * m.n_out - 1, 2 * m.n_in - 3
    yield "gemv", p, gemv_program(p, _rand(rng, (N, K), m.w_bits), _rand(rng, K, m.x_bits))
    yield "gemm3", p, gemv_program(p, _rand(rng, (N, K), m.w_bits),
                                   _rand(rng, (3, K), m.x_bits))
    # qk: keys fill every (bank, set): n_sets // k_tiles blocks per bank
    hd = m.n_in + 3 if m.n_sets >= 4 else m.n_in
    kt = -(-hd // m.n_in)
    n_keys = p.n_banks * (m.n_sets // kt) * m.n_out - 2
    yield "qk", p, qk_stream_program(p, _rand(rng, (n_keys, hd), m.w_bits),
                                     _rand(rng, (6, hd), m.x_bits))


@pytest.mark.parametrize("macro", [SMALL, SMALL4], ids=["i16o8", "i12o4w4x4"])
def test_programs_exact_and_dcs_faster(macro, seed):
    cyc = {}
    for dcs in (True, False):
        for name, p, prog in _programs(macro, dcs, np.random.default_rng(seed)):
            for rp in (1.0, 0.4):
                cyc[name, dcs, rp] = _run_ok(p, prog, out_ready_p=rp, seed=seed).cycles
    for (name, dcs, rp), c in cyc.items():
        if dcs:
            assert c <= cyc[name, False, rp], (name, rp, c, cyc[name, False, rp])
    assert cyc["qk", True, 1.0] < cyc["qk", False, 1.0]


def test_inorder_one_in_flight(seed):
    rng = np.random.default_rng(seed)
    for name, p, prog in _programs(SMALL, False, rng):
        worst = [0]

        def probe(model, c, o):
            st = model.state()
            n = sum(len(q) for q in st["macq"])
            assert n <= 1 and st["inflight"] == n, (name, c, st["macq"], st["inflight"])
            worst[0] = max(worst[0], n)
        ChannelModel(p).run(prog.cmds, out_ready_p=0.5, seed=seed, probe=probe)
        assert worst[0] == 1


def test_qk_stream_utilisation_default_params(seed):
    """Long decode-attention score stream on the default channel (4 banks of 64x64 8-bit)."""
    rng = np.random.default_rng(seed)
    K, q = _rand(rng, (256, 128), 8), _rand(rng, (64, 128), 8)
    util, cyc = {}, {}
    for dcs in (True, False):
        p = ChannelParams(dcs=dcs)
        prog = qk_stream_program(p, K, q)
        tr = _run_ok(p, prog)
        util[dcs], cyc[dcs] = tr.utilisation, tr.cycles
        print(f"QK 256 keys x hd 128 x 64 queries, dcs={dcs}: {tr.cycles} cycles, "
              f"{len(prog.cmds)} cmds ({prog.n_mac} MAC), busy {tr.busy_cycles}, "
              f"MAC utilisation {tr.utilisation:.3f}")
    assert util[True] > util[False] and cyc[True] < cyc[False]


def test_capacity_errors():
    p = _params()
    m = p.macro
    with pytest.raises(ValueError, match="sets per bank"):
        qk_stream_program(p, np.zeros((p.n_banks * m.n_sets * m.n_out + 1, m.n_in), int),
                          np.zeros(m.n_in, int))
    with pytest.raises(ValueError, match="sets per bank"):
        gemv_program(p, np.zeros((5 * m.n_out, 2 * m.n_in), int), np.zeros(2 * m.n_in, int))
    with pytest.raises(ValueError, match="range"):
        gemv_program(p, np.full((4, 4), 128), np.zeros(4, int))


# --- random command streams vs. a functional interpretation -------------------------------
def _random_stream(p, rng, n):
    m = p.macro
    cmds = []
    for _ in range(n):
        op = Op(rng.choice(4, p=[0.15, 0.3, 0.4, 0.15]))
        b, s = int(rng.integers(p.n_banks)), int(rng.integers(m.n_sets))
        g, o = int(rng.integers(p.n_gbuf)), int(rng.integers(m.n_acc))
        if op == Op.WR_INP:
            w = encode(p, op, g=g, data=pack_vec(_rand(rng, m.n_in, m.x_bits), m.x_bits))
        elif op == Op.WR_W:
            w = encode(p, op, bank=b, set=s, row=int(rng.integers(m.n_in)),
                       data=pack_vec(_rand(rng, m.n_out, m.w_bits), m.w_bits))
        elif op == Op.MAC:
            w = encode(p, op, bank=b, set=s, g=g, o=o, acc=int(rng.integers(2)))
        else:
            w = encode(p, op, bank=b, o=o)
        cmds.append((w, int(rng.choice([0, 0, 0, 1, 3]))))
    return cmds


def _functional(p, cmds):
    """Apply the commands one at a time in program order, exact integer math."""
    from spec.isa import decode
    m = p.macro
    A = m.acc_width
    gbuf = np.zeros((p.n_gbuf, m.n_in), dtype=np.int64)
    W = np.zeros((p.n_banks, m.n_sets, m.n_in, m.n_out), dtype=np.int64)
    obuf = np.zeros((p.n_banks, m.n_acc, m.n_out), dtype=np.int64)
    outs = []
    for w, _ in cmds:
        f = decode(p, w)
        op, b = Op(f["op"]), f["bank"]
        if op == Op.WR_INP:
            gbuf[f["g"]] = unpack_vec(f["data"], m.n_in, m.x_bits)
        elif op == Op.WR_W:
            W[b, f["set"], f["row"]] = unpack_vec(f["data"], m.n_out, m.w_bits)
        elif op == Op.MAC:
            y = gbuf[f["g"]] @ W[b, f["set"]] + (obuf[b, f["o"]] if f["acc"] else 0)
            obuf[b, f["o"]] = ((y + (1 << (A - 1))) % (1 << A)) - (1 << (A - 1))
        else:
            outs.append((b, f["o"], obuf[b, f["o"]].tolist()))
    return outs


@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
@pytest.mark.parametrize("macro", [SMALL, SMALL4], ids=["i16o8", "i12o4w4x4"])
def test_random_streams_match_functional(macro, dcs, seed):
    rng = np.random.default_rng(seed)
    for i in range(10):
        p = _params(macro, dcs, n_banks=int(rng.integers(1, 4)), n_gbuf=int(rng.integers(1, 4)),
                    q_depth=int(rng.integers(2, 6)))
        cmds = _random_stream(p, rng, 400)
        rp = float(rng.choice([1.0, 0.6, 0.2]))
        tr = ChannelModel(p).run(cmds, out_ready_p=rp, seed=seed + i, stall_limit=3000)
        assert tr.status == "ok", (p.tag, rp, tr.status)
        assert not tr.errors(), tr.errors()[:3]
        got = [decode_out(p, w) for w in tr.outs]
        assert got == _functional(p, cmds), (p.tag, rp)


def test_long_stream_reusing_ids_completes(seed):
    """Ids are reused mod W: a stale dependency-table slot must never alias a newer command
    (with every valid slot recorded, an RD_OUT with seq n after a MAC with seq n - W into the
    same OBuf entry would depend on itself and the channel would deadlock)."""
    rng = np.random.default_rng(seed)
    p = _params(SMALL, True)
    prog = qk_stream_program(p, _rand(rng, (30, 30), 8), _rand(rng, (6, 30), 8))
    assert len(prog.cmds) > 2 * p.window
    _run_ok(p, prog)


# --- reset -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
def test_reset_mid_stream(dcs, seed):
    rng = np.random.default_rng(seed)
    p = _params(SMALL, dcs)
    cmds = _random_stream(p, rng, 200)
    m = ChannelModel(p)
    m.reset(power_up=True)
    k = 0
    for c in range(150):          # drive part of the stream, no gaps, out.ready low sometimes
        o = m.step(1, cmds[k][0], c % 3 != 0)
        if o.cmd_ready:
            k += 1
    st = m.state()
    assert st["ioq"] or st["cq"] or any(st["macq"]), "stream should be mid-flight"
    m.reset()
    fresh = ChannelModel(p).state()
    diff = state_diff(m.state(), fresh, ignore=("cycle", "gbuf", "W"))
    assert not diff, diff
    # the kept state is exactly what the contract keeps
    after = m.state()
    assert after["gbuf"] == st["gbuf"]
    for a, b in zip(after["macros"], st["macros"], strict=True):
        assert np.array_equal(a["W"], b["W"])
    # and a program run after a plain reset still gives exact results
    prog = gemv_program(p, _rand(rng, (8, 16), 8), _rand(rng, 16, 8))
    tr = m.run(prog.cmds, power_up=False)
    assert tr.status == "ok" and np.array_equal(prog.decode(tr.outs), prog.expected)


def test_peek_req_ready_matches_step(seed):
    """MacroModel.peek_req_ready (used by the channel) equals step()'s req_ready."""
    rng = np.random.default_rng(seed)
    mp = MacroParams(n_in=8, n_out=4, x_bits=4, tree_stages=2)
    m = MacroModel(mp)
    from spec.params import pack, req_fields
    rf = req_fields(mp)
    for _ in range(400):
        rr = int(rng.random() < 0.5)
        pk = m.peek_req_ready(rr)
        pay = pack(rf, x=int(rng.integers(1 << 32)), set=int(rng.integers(2)),
                   dst=int(rng.integers(mp.n_acc)))
        o = m.step(0, 0, int(rng.random() < 0.7), pay, rr)
        assert pk == o.req_ready


@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
def test_directed_timing(dcs):
    """docs/channel.md 'Consequences': WR_INP at t -> MAC issues at t+1 -> RD_OUT issues at
    MAC issue + X + P + 2 -> out.valid the cycle after; in-order, the next command after a MAC
    issues X + P + 2 cycles after it."""
    p = ChannelParams(dcs=dcs)
    m = p.macro
    x = np.arange(m.n_in) - 32
    w = (np.arange(m.n_out) % 7) - 3
    cmds = [(encode(p, Op.WR_W, bank=1, set=1, row=5, data=pack_vec(w, 8)), 0),
            (encode(p, Op.WR_INP, g=2, data=pack_vec(x, 8)), 0),
            (encode(p, Op.MAC, bank=1, set=1, g=2, o=3), 0),
            (encode(p, Op.RD_OUT, bank=1, o=3), 0),
            (encode(p, Op.WR_INP, g=0, data=0), 0)]
    outv = []

    def probe(model, c, o):
        if o.out_valid:
            outv.append(c)
    model = ChannelModel(p)
    seen = {}

    def probe2(mm, c, o):
        probe(mm, c, o)
        st = mm.state()
        for q in ("ioq", "cq"):
            for e in st[q]:
                seen.setdefault(e["seq"], set()).add(c)
    tr = model.run(cmds, probe=probe2)
    # issue cycle of seq s = last cycle it was in a queue (state after the edge) + 1
    issue = {s: max(cs) + 1 for s, cs in seen.items()}
    X, P = m.x_bits, m.tree_stages
    assert [e[0] for e in tr.events if e[1] == "cmd"] == [0, 1, 2, 3, 4]
    assert issue[1] == 2 and issue[2] == 3            # WR_INP at 2, MAC at 3
    assert issue[3] == issue[2] + X + P + 2           # RD_OUT
    assert outv[0] == issue[3] + 1
    assert issue[4] == issue[3] + 1                   # queued behind the RD_OUT (ioq in order)
    y = decode_out(p, tr.outs[0])[2]
    assert y == (x[5] * w).tolist()


# --- dependency table: finished commands leave it (no false dependency after id reuse) ------
_TINY = ChannelParams(MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=0),
                      n_banks=2, n_gbuf=2, q_depth=4, dcs=True)


def test_stale_table_slot_is_not_a_false_dependency():
    """docs/channel.md (Enqueue): a table slot whose command is done is invalidated at the next
    edge, so after its id is reused by an unrelated command, a reader of the slot does not wait
    for that command.

    cmd 0 = WR_INP g1 (id 0, gw[1] <= (1, 0)); cmds 1 .. W-1 = WR_INP g0 (ids 1 .. W-1);
    cmd W = MAC bank 0 from g0 (id 0 again, reused); cmd W+1 = MAC bank 1 from g1.
    Every command transfers in cycle k = its index (ioq never holds more than one entry, every
    id is free when needed) and each WR_INP issues at k+1 (no dependency).  WR_INP 0 is done
    from cycle 2 on, so gw[1] is invalidated at the edge ending cycle 2.
    MAC0 depends on gw[0] = id W-1 (issued at W, done at W+1): it issues at W+1 on bank 0.
    MAC1 reads gw[1], invalid at W+1: no dependency; it reaches the cq head at W+2 (MAC0 popped
    at the edge ending W+1) and issues there on idle bank 1, i.e. one cycle after MAC0.
    Recording the stale gw[1] = (1, 0) would make it wait for MAC0 (id 0): issue at
    W+1 + X+P+2."""
    p, m = _TINY, _TINY.macro
    W = p.window
    one = pack_vec([1] * m.n_in, m.x_bits)
    cmds = [(encode(p, Op.WR_INP, g=1, data=one), 0)]
    cmds += [(encode(p, Op.WR_INP, g=0, data=one), 0)] * (W - 1)
    cmds += [(encode(p, Op.MAC, bank=0, set=0, g=0, o=0), 0),
             (encode(p, Op.MAC, bank=1, set=0, g=1, o=0), 0)]
    issue, gw1 = {}, {}

    def probe(mm, c, o):                  # state after the edge ending cycle c
        gw1[c] = mm.state()["gw"][1]
        for b, q in enumerate(mm._macq):
            if q and b not in issue:
                issue[b] = c              # pushed on macq at the edge ending its issue cycle
    tr = ChannelModel(p).run(cmds, probe=probe)
    assert tr.status == "ok" and not tr.errors()
    assert [c for c, k, _ in tr.events if k == "cmd"] == list(range(W + 2))
    assert issue[0] == W + 1
    assert issue[1] == W + 2, (issue, W + 1 + m.x_bits + m.tree_stages + 2)
    assert gw1[0] == gw1[1] == (1, 0)     # done[0] = 1 from cycle 2 on
    assert gw1[2][0] == 0                 # invalidated at the edge ending cycle 2


def _table_slots(p, f):
    """Dependency-table slots written by enqueuing the command with fields ``f``."""
    op, b, s, g, o = Op(f["op"]), f["bank"], f["set"], f["g"], f["o"]
    if op == Op.WR_INP:
        return {("gw", g)}
    if op == Op.WR_W:
        return {("ww", b, s)}
    if op == Op.MAC:
        return {("gr", g), ("wr", b, s), ("ow", b, o)}
    return {("orr", b, o)}


def _table(st):
    out = {}
    for k in ("gw", "gr"):
        out.update({(k, i): v for i, v in enumerate(st[k])})
    for k in ("ww", "wr", "ow", "orr"):
        out.update({(k, b, i): v for b, r in enumerate(st[k]) for i, v in enumerate(r)})
    return out


@pytest.mark.parametrize("dcs", [True, False], ids=["dcs", "inorder"])
def test_table_update_rule_every_edge(dcs, seed):
    """Every slot at every edge, against docs/channel.md: the slot the enqueued command writes
    becomes (1, nseq); else a valid slot with done[seq] = 1 at t becomes invalid (seq kept);
    else it is unchanged.  Random streams with a small window so ids are reused often."""
    from spec.isa import decode
    rng = np.random.default_rng(seed)
    n_inv = n_wins = 0
    for i in range(6):
        p = _params(SMALL4, dcs, n_banks=int(rng.integers(1, 4)),
                    n_gbuf=int(rng.integers(1, 4)), q_depth=int(rng.integers(2, 6)))
        cmds = _random_stream(p, rng, 300)
        m = ChannelModel(p)
        m.reset(power_up=True)
        k, prev = 0, m.state()
        for c in range(3000):
            v = int(k < len(cmds) and rng.random() < 0.8)
            pl = cmds[k][0] if k < len(cmds) else 0
            o = m.step(v, pl, int(rng.random() < 0.6))
            st = m.state()
            written = set()
            if v and o.cmd_ready:
                written = _table_slots(p, decode(p, pl))
                k += 1
            before, after = _table(prev), _table(st)
            for key, (val, sq) in before.items():
                if key in written:
                    exp = (1, prev["nseq"])
                    n_wins += bool(val and prev["done"][sq])
                elif val and prev["done"][sq]:
                    exp = (0, sq)
                    n_inv += 1
                else:
                    exp = (val, sq)
                assert after[key] == exp, (p.tag, c, key, (val, sq), after[key])
            # invariant: a valid slot names a pending command, or one done at the last edge
            for key, (val, sq) in after.items():
                assert not val or not st["done"][sq] or not prev["done"][sq], (p.tag, c, key)
            prev = st
        assert k == len(cmds) and not (st["ioq"] or st["cq"] or any(st["macq"])), p.tag
    assert n_inv > 100 and n_wins > 10, (n_inv, n_wins)
