"""cocotb lockstep bench of the PIM channel: Verilated PimChannel vs ChannelModel, every cycle.

Same method as ``tb/lockstep.py`` (one wake per cycle on the falling edge, outputs sampled by
the wrapper, the wide ``out`` payload compared whenever either side changes).  The command
stream follows the driver rules of ``model/stimulus.py`` (a beat is offered from
``t_free + gap`` until it transfers); ``out.ready`` is the seeded ``ready_at`` pattern.  The
run ends TAIL cycles after the first cycle in which every command has transferred (in an
earlier cycle), the channel is idle and its output register is empty (as ``ChannelModel.run``).
"""
from __future__ import annotations

import json
import os
import pickle
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from model.channel import ChannelModel
from model.stimulus import TAIL, ready_pattern
from tb.probespec import channel as channel_spec, read


@cocotb.test()
async def chan_lockstep(dut):
    with open(os.environ["CIMPHONY_JOB"], "rb") as f:
        job = pickle.load(f)
    p, cmds, seed, thr = job["params"], job["cmds"], job["seed"], job["ready_threshold"]
    spec = channel_spec(p.n_banks)
    fields = [(n, spec.obs_offset(n), w) for n, w in spec.obs]
    cmp_mask = (1 << spec.chg_bit) - 1
    obs_w = spec.obs_width + 1
    b_valid, b_ready = spec.ctl_bit("cmd.valid"), spec.ctl_bit("out.ready")
    model = ChannelModel(p)
    Clock(dut.clk, 10, unit="ns").start()
    h_obs, h_out = dut.obs._handle, dut.obs_out._handle
    ctl_h, cmd_h = dut.ctl, dut.in0
    dut.rst.value = 1
    ctl_h.value = 0
    cmd_h.value = 0
    edge = FallingEdge(dut.clk)
    for _ in range(3):
        await edge
    dut.rst.value = 0

    chunk = 1 << 14
    ready = ready_pattern(seed, 0, chunk, thr).tolist()
    idx, t_free, n_out = 0, 0, 0
    outs: list[int] = []
    mismatch, end_cycle = None, None
    busy_cycles = [0] * p.n_banks
    c = 0
    cv = int(len(cmds) > 0 and cmds[0][1] == 0)
    pay = cmds[0][0] if cv else 0
    rr = ready[0]
    ctl = (cv << b_valid) | (rr << b_ready)
    ctl_h.value = ctl
    cmd_h.value = pay
    model_out = 0
    t0 = time.perf_counter()
    while True:
        await edge
        obs = read(h_obs, obs_w)
        o = model.step(cv, pay, rr)
        vals = {"cmd.ready": o.cmd_ready, "out.valid": o.out_valid, "idle": o.idle,
                "err": o.err, "busy": o.busy}
        exp = 0
        for n, off, _ in fields:
            exp |= vals[n] << off
        if (obs & cmp_mask) != exp:
            for n, off, w in fields:
                a, e = (obs >> off) & ((1 << w) - 1), (exp >> off) & ((1 << w) - 1)
                if a != e:
                    mismatch = dict(cycle=c, signal=n, expected=e, actual=a)
                    break
            break
        if (obs >> spec.chg_bit) & 1 or o.out_payload != model_out:
            dut_out = int(h_out.get_signal_val_binstr(), 2)
            model_out = o.out_payload
            if dut_out != model_out:
                mismatch = dict(cycle=c, signal="out.payload", expected=hex(model_out),
                                actual=hex(dut_out))
                break
        if end_cycle is None and idx == len(cmds) and o.idle and not o.out_valid:
            end_cycle = c + TAIL     # same end rule as the model's run()
        b = o.busy
        for i in range(p.n_banks):
            busy_cycles[i] += (b >> i) & 1
        if cv and o.cmd_ready:
            idx += 1
            t_free = c + 1
        if o.out_valid and rr:
            outs.append(o.out_payload)

        if end_cycle is not None and c >= end_cycle:
            break
        c += 1
        if c >= job["max_cycles"]:
            mismatch = dict(cycle=c, signal="timeout", expected=f"done within {c}",
                            actual=f"{idx}/{len(cmds)} commands, {len(outs)} outputs")
            break
        if c % chunk == 0:
            ready = ready_pattern(seed, c, chunk, thr).tolist()
        cv = int(idx < len(cmds) and c >= t_free + cmds[idx][1])
        if cv and cmds[idx][0] != pay:
            pay = cmds[idx][0]
            cmd_h.value = pay
        rr = ready[c % chunk]
        nctl = (cv << b_valid) | (rr << b_ready)
        if nctl != ctl:
            ctl = nctl
            ctl_h.value = ctl
    wall = time.perf_counter() - t0
    if mismatch is not None:
        mismatch["seed"] = seed
        mismatch["in_flight"] = f"{idx}/{len(cmds)} commands accepted, {len(outs)} outputs"
    cycles = c + 1
    res = dict(ok=mismatch is None, mismatch=mismatch, cycles=cycles, wall_s=wall,
               cycles_per_s=cycles / wall if wall > 0 else 0.0, outputs=outs,
               busy_cycles=busy_cycles, seed=seed)
    with open(job["out"], "w") as f:
        json.dump(res, f)
    assert mismatch is None, (f"channel lockstep mismatch at cycle {mismatch['cycle']}: "
                              f"{mismatch['signal']} expected {mismatch['expected']} actual "
                              f"{mismatch['actual']} (seed {seed})")
