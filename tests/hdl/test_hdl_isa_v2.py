"""amaranth.sim checks of the ISA v2 options in hdl/channel.py and hdl/module.py, with the
expected values computed here (numpy) and the timing straight from docs/channel.md and
docs/module.md: the all-bank MAC starts every bank in one cycle and its results are readable
X+P+2 cycles later; ``host__ready`` is the FIFO-room register function (independent of
valid) and nothing is dropped; a multi WR_INP gives each masked channel its own tile; every
option off gives the original ports; the hierarchical export and lint of every option."""
from __future__ import annotations

import json

import numpy as np
import pytest
from amaranth.sim import Simulator

from cimphony.compat import silence_unused
from hdl import export as X
from hdl.channel import PimChannel
from hdl.module import PimModule
from spec.isa import (ChannelParams, HostOp, ModuleParams, Op, cmd_fields, encode, host_encode,
                      host_fields, mod_out_fields, out_fields)
from spec.params import MacroParams, pack_vec, unpack, unpack_vec, width

MP = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_sets=2, n_acc=2, tree_stages=1)
X_, P_ = MP.x_bits, MP.tree_stages
A = MP.acc_width


def chan(**kw):
    return ChannelParams(**{"macro": MP, "n_banks": 3, "n_gbuf": 2, "q_depth": 4, **kw})


def mod(**kw):
    ch = kw.pop("channel", chan())
    return ModuleParams(**{"channel": ch, "n_ch": 3, "n_vpages": 8, "n_req": 2,
                           "fifo_depth": 4, "loop_len": 4, **kw})


def rnd(rng, lo_hi, shape):
    return rng.integers(lo_hi[0], lo_hi[1] + 1, size=shape)


# ------------------------------------------------------------------ ports, export
def test_options_off_keep_the_ports():
    c = silence_unused(PimChannel(ChannelParams()))
    assert len(c.cmd.payload.as_value()) == width(cmd_fields(ChannelParams())) == 530
    m = silence_unused(PimModule(ModuleParams()))
    ports = X.port_map(m)["ports"]
    assert "host__ready" not in [q["name"] for q in ports]
    assert [f["name"] for f in ports[2]["fields"]][-1] == "data"
    assert "multi" not in [f["name"] for f in ports[2]["fields"]]


def test_options_ports():
    p = mod(channel=chan(all_bank=True), host_ready=True, wide_inp=2)
    dut = silence_unused(PimModule(p))
    assert len(dut.host.payload.as_value()) == width(host_fields(p))
    pm = X.port_map(dut)
    names = {q["name"]: q for q in pm["ports"]}
    assert names["host__ready"]["direction"] == "out" and names["host__ready"]["width"] == 1
    assert "multi" in [f["name"] for f in names["host__payload"]["fields"]]
    c = silence_unused(PimChannel(chan(all_bank=True)))
    assert len(c.cmd.payload.as_value()) == width(cmd_fields(chan(all_bank=True)))
    with pytest.raises(ValueError, match="fault"):
        PimChannel(chan(), fault="nope")
    with pytest.raises(ValueError, match="fault"):
        PimModule(mod(), fault="nope")


@pytest.mark.verilator
def test_export_and_lint_with_every_option(tmp_path):
    """``cimphony verilog``'s export of a module with every option: hierarchical (one module
    per component, ports checked), a ports.json with ``host__ready`` and ``multi``, lint
    clean with only the committed waivers."""
    p = mod(channel=chan(all_bank=True, dcs=False), host_ready=True, wide_inp=3)
    assert X.export(tmp_path, tops=["pim_channel", "pim_module"], macro=MP, channel=p.channel,
                    module=p, lint=True)
    pm = json.loads((tmp_path / "pim_module.ports.json").read_text())
    assert pm["definitions"] == ["dimc_macro", "pim_channel", "pim_module"]
    assert pm["tag"].endswith("_hr_wi3") and "_ino_ab_" in pm["tag"]
    names = [q["name"] for q in pm["ports"]]
    assert "host__ready" in names


# ------------------------------------------------------------------ channel: all-bank MAC
def test_all_bank_mac_all_banks_in_one_cycle(seed):
    """Weights on every bank, one all-bank MAC: every macro accepts it in the same cycle,
    ``busy`` is all ones for X cycles from the next, each bank's RD_OUT of o issues X+P+2
    cycles after the MAC, and y[b] = x . W[b]."""
    p = chan(all_bank=True)
    B = p.n_banks
    rng = np.random.default_rng(seed)
    W = rnd(rng, MP.w_range, (B, MP.n_in, MP.n_out))
    x = rnd(rng, MP.x_range, MP.n_in)
    cmds = [encode(p, Op.WR_W, bank=b, set=1, row=r, data=pack_vec(W[b][r], MP.w_bits))
            for b in range(B) for r in range(MP.n_in)]
    cmds += [encode(p, Op.WR_INP, g=1, data=pack_vec(x, MP.x_bits)),
             encode(p, Op.MAC, set=1, g=1, o=1, ab=1)]
    cmds += [encode(p, Op.RD_OUT, bank=b, o=1) for b in range(B)]
    dut = PimChannel(p)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    log = {"req": [], "busy": [], "outs": [], "rd": []}

    async def tb(ctx):
        i = 0
        for c in range(400):
            v = i < len(cmds)
            ctx.set(dut.cmd.valid, v)
            ctx.set(dut.cmd.payload.as_value(), cmds[i] if v else 0)
            ctx.set(dut.out.ready, 1)
            for b, mac in enumerate(dut.banks):
                if ctx.get(mac.req.valid) and ctx.get(mac.req.ready):
                    log["req"].append((c, b))
            log["busy"].append(ctx.get(dut.busy))
            if ctx.get(dut.probe["io_go"]) and ctx.get(dut.probe["io_op"]) == Op.RD_OUT:
                log["rd"].append(c)
            if ctx.get(dut.out.valid):
                f = unpack(out_fields(p), ctx.get(dut.out.payload.as_value()))
                log["outs"].append((f["bank"], f["o"], unpack_vec(f["y"], MP.n_out, A)))
            assert ctx.get(dut.err) == 0
            if v and ctx.get(dut.cmd.ready):
                i += 1
            await ctx.tick()

    sim.add_testbench(tb)
    sim.run()
    t = log["req"][0][0]
    assert log["req"] == [(t, b) for b in range(B)]
    full = (1 << B) - 1
    assert log["busy"][t + 1:t + 1 + X_] == [full] * X_ and log["busy"][t] != full
    assert log["rd"][0] == t + X_ + P_ + 2 and log["rd"] == list(range(t + X_ + P_ + 2,
                                                                     t + X_ + P_ + 2 + B))
    assert log["outs"] == [(b, 1, [int(v) for v in x @ W[b]]) for b in range(B)]


# ------------------------------------------------------------------ module
class Host:
    """Cycle driver of a PimModule: offers command i until it transfers (``host_ready``)."""

    def __init__(self, p, cmds, gaps=None):
        self.p, self.cmds = p, cmds
        self.gaps = gaps or [0] * len(cmds)
        self.log = []           # per cycle: (valid, ready, fifo level)
        self.outs, self.errs, self.ovf = [], [], 0

    def run(self, cycles=600):
        dut = PimModule(self.p)
        sim = Simulator(dut)
        sim.add_clock(1e-6)
        of = mod_out_fields(self.p)

        async def tb(ctx):
            i, free = 0, 0
            for c in range(cycles):
                v = i < len(self.cmds) and c >= free + self.gaps[i]
                ctx.set(dut.host.valid, v)
                ctx.set(dut.host.payload.as_value(), self.cmds[i] if v else 0)
                ctx.set(dut.out.ready, 1)
                rdy = ctx.get(dut.host.ready) if self.p.host_ready else 1
                self.log.append((v, rdy, ctx.get(dut.fifo_level)))
                if ctx.get(dut.out.valid):
                    f = unpack(of, ctx.get(dut.out.payload.as_value()))
                    self.outs.append((f["chan"], f["bank"], f["o"],
                                      unpack_vec(f["y"], MP.n_out, A)))
                if ctx.get(dut.err):
                    self.errs.append(ctx.get(dut.err))
                self.ovf += ctx.get(dut.ovf)
                if v and rdy:
                    i, free = i + 1, c + 1
                await ctx.tick()
            self.sent = i
            self.err_count = ctx.get(dut.err_count)

        sim.add_testbench(tb)
        sim.run()
        return self


def test_host_ready_is_fifo_room_nothing_dropped(seed):
    """A BARRIER behind a long MAC fills the FIFO: ``host__ready`` = (level < F) in every
    cycle, whether or not valid is high; the held commands all transfer, none is dropped,
    ``ovf`` and ``err_count`` stay 0; the results are right."""
    p = mod(host_ready=True)
    rng = np.random.default_rng(seed)
    W = rnd(rng, MP.w_range, (MP.n_in, MP.n_out))
    x = rnd(rng, MP.x_range, MP.n_in)
    H = lambda op, **f: host_encode(p, op, **f)          # noqa: E731
    cmds = [H(HostOp.MAP, vp=1, pp=2, rid=0)]
    cmds += [H(HostOp.WR_W, chmask=0b101, rid=0, vp=1, row=r, data=pack_vec(W[r], MP.w_bits))
             for r in range(MP.n_in)]
    cmds += [H(HostOp.WR_INP, chmask=0b101, g=0, data=pack_vec(x, MP.x_bits)),
             *[H(HostOp.MAC, chmask=0b101, rid=0, vp=1, g=0, o=1)] * 4, H(HostOp.BARRIER)]
    gaps = [int(g) for g in rng.integers(0, 3, len(cmds))]        # random valid gaps, then
    cmds += [H(HostOp.NOP)] * 6 + [H(HostOp.RD_OUT, chmask=0b101, rid=0, vp=1, o=1)]
    gaps += [0] * 7                                               # back to back
    h = Host(p, cmds, gaps).run()
    assert h.sent == len(cmds) and h.ovf == 0 and h.err_count == 0 and not h.errs
    assert all(r == int(lvl < p.fifo_depth) for _, r, lvl in h.log)
    assert any(v and not r for v, r, _ in h.log), "the FIFO never held the host back"
    y = [int(v) for v in x @ W]
    assert h.outs == [(0, 1, 1, y), (2, 1, 1, y)]


def test_multi_wr_inp_and_mac_ab(seed):
    """One multi WR_INP to channels 0 and 2 (tiles 0 and 1), one MAC_AB on a stripe: every
    bank b of channel c gives x_c . W_b; a multi WR_INP to 3 channels (wide_inp 2) and a
    MAC_AB on a broken stripe are rejected (BAD_FIELD, NOT_STRIPE)."""
    p = mod(channel=chan(all_bank=True), wide_inp=2, host_ready=True)
    B, S, DB = p.channel.n_banks, MP.n_sets, p.channel.data_bits
    rng = np.random.default_rng(seed)
    W = rnd(rng, MP.w_range, (B, MP.n_in, MP.n_out))
    xs = rnd(rng, MP.x_range, (2, MP.n_in))
    H = lambda op, **f: host_encode(p, op, **f)          # noqa: E731
    cmds = [H(HostOp.MAP, vp=2 + b, pp=b * S + 1, rid=1) for b in range(B)]
    cmds += [H(HostOp.MAP, vp=2 + B, pp=0, rid=1)]          # vp 3 .. 3+B-1: not a stripe
    cmds += [H(HostOp.WR_W, chmask=0b101, rid=1, vp=2 + b, row=r,
               data=pack_vec(W[b][r], MP.w_bits)) for b in range(B) for r in range(MP.n_in)]
    cmds += [H(HostOp.WR_INP, chmask=0b111, g=1, multi=1, data=0),           # 3 > wide_inp
             H(HostOp.WR_INP, chmask=0b101, g=1, multi=1,
               data=pack_vec(xs[0], MP.x_bits) | pack_vec(xs[1], MP.x_bits) << DB),
             H(HostOp.MAC_AB, chmask=0b101, rid=1, vp=3, g=1, o=0),          # NOT_STRIPE
             H(HostOp.MAC_AB, chmask=0b101, rid=1, vp=2, g=1, o=0)]
    cmds += [H(HostOp.RD_OUT, chmask=0b101, rid=1, vp=2 + b, o=0) for b in range(B)]
    h = Host(p, cmds).run(900)
    assert h.sent == len(cmds)
    assert h.errs == [2, 7]                 # BAD_FIELD, then NOT_STRIPE
    got = sorted((c, b, o, list(y)) for c, b, o, y in h.outs)
    want = sorted((c, b, 0, [int(v) for v in xs[k] @ W[b]])
                  for k, c in enumerate((0, 2)) for b in range(B))
    assert got == want
