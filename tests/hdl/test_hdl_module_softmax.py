"""The module with the hub's softmax unit (``ModuleParams(softmax=True)``, docs/module.md,
"Softmax unit"): hdl/module.py against the golden model (model/module.py) in amaranth.sim,
every module output compared in every cycle, on a whole QK^T -> softmax -> SV decode step of
attention (compiler/attention/softmax.py) on a tiny shape; the results bit-exact against the
unit's functional reference and close to float attention; malformed softmax commands; a
deliberately wrong exp table; the option off gives the module without it."""
from __future__ import annotations

import numpy as np
import pytest

from cimphony.compat import silence_unused
from compiler.attention.program import Request
from compiler.attention.softmax import build_program_sm, host_traffic
from compiler.host import pace
from hdl import export as X
from hdl.module import PimModule
from model.module import ModuleModel
from model.stimulus import ready_at, ready_threshold
from spec.isa import (ChannelParams, HostOp, ModErr, ModuleParams, host_encode, host_op_limit,
                      host_op_valid, sm_cfg_data)
from spec.params import MacroParams
from tb.amsim import simulate

MACRO = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=4, n_acc=4, tree_stages=0)
P = ModuleParams(channel=ChannelParams(macro=MACRO, n_banks=2, n_gbuf=2, q_depth=4), n_ch=2,
                 n_vpages=16, n_req=2, fifo_depth=4, loop_len=4, softmax=True, sm_context=32)
T, D, NH = 13, 8, 2          # tokens, head_dim, KV heads (one query each)
OUTS = ("out_valid", "out_payload", "err", "ovf", "err_count", "idle", "busy", "sm_valid",
        "sm_payload", "sm_err")


def request(seed):
    rng = np.random.default_rng(seed)
    return Request(rng.standard_normal((NH, T, D)), rng.standard_normal((NH, T, D)),
                   rng.standard_normal((NH, 1, D)))


def lockstep(cmds, *, sm_fault=None, model=None, p=P, ready=lambda c: 1, max_cycles=4000):
    """Run ``cmds`` [(word, gap)] on PimModule(p) and on ``model`` (default ModuleModel(p)),
    the same inputs every cycle (command i pushed ``gap`` cycles after the previous push,
    ``out.ready`` = ``sm_res.ready`` = ready(cycle)); returns dict(mismatch (first (cycle,
    output, hdl, model) or None), outs, sm_res, errs (cycle, code), sm_errs, cycles)."""
    dut = PimModule(p, sm_fault=sm_fault)
    mm = model or ModuleModel(p)
    mm.reset(power_up=True)

    async def tb(ctx, rst):
        r = dict(mismatch=None, outs=[], sm_res=[], errs=[], sm_errs=[], ovfs=[])
        i, nxt, quiet = 0, (cmds[0][1] if cmds else 0), 0
        for c in range(max_cycles):
            hv = int(i < len(cmds) and c >= nxt)
            word = cmds[i][0] if hv else 0
            rr = ready(c)
            ctx.set(dut.host.valid, hv)
            ctx.set(dut.host.payload.as_value(), word)
            ctx.set(dut.out.ready, rr)
            ctx.set(dut.sm_res.ready, rr)
            got = dict(out_valid=ctx.get(dut.out.valid),
                       out_payload=ctx.get(dut.out.payload.as_value()),
                       err=ctx.get(dut.err), ovf=ctx.get(dut.ovf),
                       err_count=ctx.get(dut.err_count), idle=ctx.get(dut.idle),
                       busy=ctx.get(dut.busy), sm_valid=ctx.get(dut.sm_res.valid),
                       sm_payload=ctx.get(dut.sm_res.payload.as_value()),
                       sm_err=ctx.get(dut.sm_err))
            o = mm.step(hv, word, rr, rr)
            want = o._asdict()
            for n in OUTS:
                if n in ("out_payload",) and not want["out_valid"]:
                    continue
                if n == "sm_payload" and not want["sm_valid"]:
                    continue
                if got[n] != want[n] and r["mismatch"] is None:
                    r["mismatch"] = (c, n, got[n], want[n])
            if r["mismatch"] is not None:
                r["cycles"] = c
                return r
            if o.out_valid and rr:
                r["outs"].append(o.out_payload)
            if o.sm_valid and rr:
                r["sm_res"].append(o.sm_payload)
            if o.err:
                r["errs"].append((c, o.err))
            if o.sm_err:
                r["sm_errs"].append((c, o.sm_err))
            if o.ovf:
                r["ovfs"].append(c)
            if hv:
                i += 1
                if i < len(cmds):
                    nxt = c + 1 + cmds[i][1]
            quiet = quiet + 1 if (i == len(cmds) and o.idle and not o.out_valid) else 0
            await ctx.tick()
            if quiet >= 4:
                r["cycles"] = c
                return r
        raise AssertionError(f"not idle after {max_cycles} cycles")

    return simulate(dut, tb)


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_results(prog, r):
    dec = prog.decode(r["outs"], r["sm_res"])
    assert all(np.array_equal(a, e) for a, e in zip(dec["acc"], prog.expected_acc))
    for got, want in zip(dec["res"], prog.expected_res):
        assert (got["qsum"], got["l"]) == (want["qsum"], want["l"])
        assert got["m"] == want["m"] & ((1 << P.sm_params.x_bits) - 1)
    for o, e, ref in zip(dec["o"], prog.expected_o, prog.reference):
        assert np.allclose(o, e, rtol=0, atol=1e-12)
        for h in range(o.shape[0]):
            assert cosine(o[h], ref[h]) >= 0.99
    return dec


# ------------------------------------------------------------------ the option
def test_option_off_and_on_ports():
    off = ModuleParams(channel=P.channel, n_ch=2, n_vpages=16, n_req=2, fifo_depth=4,
                       loop_len=4)
    names = [q["name"] for q in X.port_map(silence_unused(PimModule(off)))["ports"]]
    assert not any(n.startswith("sm_") for n in names)
    assert host_op_limit(off) == 10 and not host_op_valid(off, HostOp.SM_CFG)
    names = [q["name"] for q in X.port_map(silence_unused(PimModule(P)))["ports"]]
    assert {"sm_res__valid", "sm_res__ready", "sm_res__payload", "sm_err"} <= set(names)
    assert host_op_limit(P) == 15 and not host_op_valid(P, HostOp.MAC_AB)
    assert all(host_op_valid(P, op) for op in range(11, 15)) and not host_op_valid(P, 15)
    with pytest.raises(ValueError, match="softmax"):
        ModuleParams(channel=ChannelParams(macro=MacroParams(x_bits=4)), softmax=True)
    with pytest.raises(ValueError, match="softmax"):
        ModuleParams(n_ch=9, softmax=True)
    with pytest.raises(ValueError, match="sm_fault"):
        PimModule(off, sm_fault="exp_entry")


# ------------------------------------------------------------------ attention, lockstep
@pytest.mark.parametrize("part", ["TCP", "HFP"])
def test_attention_step_lockstep(part):
    """A whole decode step (SM_CFG, QK^T MACs with RD_SM, WR_PROB, SV MACs, RD_OUT) of two
    heads: HDL = model in every cycle; the SV partials and (m, l, qsum) bit-exact against the
    unit's functional reference; attention cosine >= 0.99 per head against float; no host
    round trip; sm_res with backpressure."""
    prog = build_program_sm(P, [request(3)], part)
    thr = ready_threshold(0.7, "p")
    cmds = pace(P, prog.cmds, 0.7, seed=1)      # gaps exact for this out.ready pattern
    r = lockstep(cmds, ready=lambda c: ready_at(1, c, thr))
    assert r["mismatch"] is None, r["mismatch"]
    assert not r["errs"] and not r["sm_errs"] and not r["ovfs"]
    check_results(prog, r)
    tr = host_traffic(P, [w for w, _ in prog.cmds[prog.n_setup:]], prog.n_reads, len(prog.units))
    assert tr["round_trips"] == 0


# ------------------------------------------------------------------ malformed commands
def test_malformed_softmax_commands_change_nothing():
    """Bad SM_CFG / RD_SM / WR_PROB / opcodes, each rejected with its documented code (in this
    order) and dropped: the step after them gives the same outputs as without them; an
    SM_ABORT on an idle unit is a legal no-op; the HDL agrees in every cycle."""
    prog = build_program_sm(P, [request(5)], "TCP")
    words = [w for w, _ in prog.cmds]
    n = prog.n_setup + 1                     # after the setup and SET_TOK rid 0, T
    H = lambda op, **f: host_encode(P, op, **f)          # noqa: E731
    data = sm_cfg_data(P, 1000, 4)
    bad = [
        (H(HostOp.SM_CFG, chmask=0, rid=0, data=data), ModErr.BAD_FIELD),      # no channel
        (H(HostOp.SM_CFG, chmask=0b100, rid=0, data=data), ModErr.BAD_FIELD),  # channel 2
        (H(HostOp.SM_CFG, chmask=0b11, rid=2, data=data), ModErr.BAD_FIELD),   # rid >= R
        (H(HostOp.SM_CFG, chmask=0b11, rid=1, data=data), ModErr.BAD_FIELD),   # tok[1] = 0
        (H(HostOp.SET_TOK, rid=1, count=33), None),
        (H(HostOp.SM_CFG, chmask=0b11, rid=1, data=data), ModErr.BAD_FIELD),   # 33 > N
        (H(HostOp.RD_SM, chmask=0b11, rid=0, vp=15, o=0), ModErr.UNMAPPED),
        (H(HostOp.RD_SM, chmask=0b11, rid=0, vp=0, o=4), ModErr.BAD_FIELD),    # o >= n_acc
        (H(HostOp.RD_SM, chmask=0, rid=0, vp=0, o=0), ModErr.BAD_FIELD),
        (H(HostOp.RD_SM, chmask=0b11, rid=1, vp=0, o=0), ModErr.NOT_OWNER),
        (H(HostOp.WR_PROB, chmask=0b01, g=2), ModErr.BAD_FIELD),              # g >= n_gbuf
        (H(HostOp.WR_PROB, chmask=0b100, g=0), ModErr.BAD_FIELD),
        (H(HostOp.MAC_AB, chmask=1, rid=0, vp=0, g=0, o=0), ModErr.BAD_OPCODE),  # no all_bank
        (H(15), ModErr.BAD_OPCODE),
        (H(HostOp.LOOP, rid=0, n=1, per=4, vps=0, os=0), None),              # 1 iteration
        (H(HostOp.SM_CFG, chmask=0b11, rid=0, data=data), ModErr.BAD_FIELD),   # in a replay
        (H(HostOp.SM_ABORT), None),                                           # legal, idle
    ]
    cmds = pace(P, [(w, 0) for w in words[:n] + [w for w, _ in bad] + words[n:]])
    r = lockstep(cmds)
    assert r["mismatch"] is None, r["mismatch"]
    assert [c for _, c in r["errs"]] == [int(e) for _, e in bad if e is not None]
    clean = ModuleModel(P).run(pace(P, prog.cmds))
    assert r["outs"] == clean.outs and r["sm_res"] == [w for _, w in clean.sm_res]
    check_results(prog, r)


def test_stray_beat_is_reported():
    """A RD_SM naming a channel outside the head's partitions (HFP: head 0 is on channel 0;
    the stray reads channel 1) is rejected by the unit: BAD_PART on ``sm_err``, the beat
    dropped, no dispatcher error; every result is unchanged; the HDL agrees every cycle."""
    prog = build_program_sm(P, [request(7)], "HFP")        # heads on channel 0 and 1
    words = [w for w, _ in prog.cmds]
    k = next(i for i, w in enumerate(words) if w & 0xF == HostOp.RD_SM)
    f = ModuleModel(P).fields(words[k])
    assert f["chmask"] == 0b01
    stray = host_encode(P, HostOp.RD_SM, chmask=0b10, rid=0, vp=f["vp"], o=f["o"])
    clean = ModuleModel(P).run(pace(P, prog.cmds))
    r = lockstep(pace(P, [(w, 0) for w in words[:k] + [stray] + words[k:]]))
    assert r["mismatch"] is None, r["mismatch"]
    assert r["errs"] == [] and [c for _, c in r["sm_errs"]] == [4]      # SmErr.BAD_PART
    assert r["outs"] == clean.outs and r["sm_res"] == [w for _, w in clean.sm_res]


# ------------------------------------------------------------------ a wrong exp table
def _faulty_request():
    """The first request whose unit heads look up the faulty table entry (T[2**(TB-1)])."""
    from compiler.attention.softmax import exp_fault_program
    return exp_fault_program(P, request, NH)


def test_wrong_exp_table_is_caught():
    """The unit's ``exp_entry`` fault (T[2**(TB-1)] + 1) inside the module: the lockstep
    against the golden model reports a mismatch; against a model given the same wrong table
    it agrees (so the mismatch is the table)."""
    prog, bad = _faulty_request()
    cmds = pace(P, prog.cmds)
    r = lockstep(cmds, sm_fault="exp_entry")
    assert r["mismatch"] is not None and r["mismatch"][1] == "sm_payload", r["mismatch"]
    r2 = lockstep(cmds, sm_fault="exp_entry", model=ModuleModel(P, sm_table=bad))
    assert r2["mismatch"] is None, r2["mismatch"]


@pytest.mark.verilator
def test_lint_with_softmax(tmp_path):
    """The hierarchical Verilog of the module with the unit (softmax_unit its own module) is
    lint clean with the committed waivers."""
    path = tmp_path / "pim_module.v"
    path.write_text(X.verilog(PimModule(P)))
    r = X.lint(path)
    assert r.returncode == 0, r.stdout
