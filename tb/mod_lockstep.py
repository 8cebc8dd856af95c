"""cocotb lockstep bench of the PIM module: Verilated PimModule vs ModuleModel, every cycle.

Same method as ``tb/lockstep.py``.  Host commands have no ready: command i is pushed in cycle
``t_{i-1} + 1 + gap_i`` (the first in cycle ``gap_0``), whether or not the FIFO has room (a
push into a full FIFO is the QUEUE_FULL case).  ``out.ready`` is the seeded ``ready_at``
pattern.  The run ends TAIL cycles after the first cycle in which every command has been pushed
(in an earlier cycle), the module is idle and its output register is empty (as
``ModuleModel.run``).  ``job["reset_at"]`` (optional) raises ``rst`` during that
cycle in the DUT and resets the model after stepping it (mid-stream reset recovery).
"""
from __future__ import annotations

import json
import os
import pickle
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from model.module import ModuleModel
from model.stimulus import TAIL, ready_pattern
from tb.probespec import module as module_spec, read


@cocotb.test()
async def mod_lockstep(dut):
    with open(os.environ["CIMPHONY_JOB"], "rb") as f:
        job = pickle.load(f)
    p, cmds, seed, thr = job["params"], job["cmds"], job["seed"], job["ready_threshold"]
    nb = p.channel.n_banks
    spec = module_spec(p.n_ch, nb)
    fields = [(n, spec.obs_offset(n), w) for n, w in spec.obs]
    cmp_mask = (1 << spec.chg_bit) - 1
    obs_w = spec.obs_width + 1
    b_valid, b_ready = spec.ctl_bit("host_valid"), spec.ctl_bit("out.ready")
    push_at, t = [], -1
    for _, gap in cmds:
        t = t + 1 + gap
        push_at.append(t)
    model = ModuleModel(p)
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
    idx = 0
    outs: list[int] = []
    errors: list[tuple[int, int]] = []
    busy_cycles = [0] * (p.n_ch * nb)
    mismatch, end_cycle = None, None
    c = 0
    hv = int(bool(cmds) and push_at[0] == 0)
    pay = cmds[0][0] if hv else 0
    rr = ready[0]
    ctl = (hv << b_valid) | (rr << b_ready)
    ctl_h.value = ctl
    cmd_h.value = pay
    model_out = 0
    reset_at = job.get("reset_at", -1)
    t0 = time.perf_counter()
    while True:
        await edge
        obs = read(h_obs, obs_w)
        o = model.step(hv, pay, rr)
        if c == reset_at:
            model.reset()
            dut.rst.value = 0
        vals = {"out.valid": o.out_valid, "err": o.err, "ovf": o.ovf, "idle": o.idle,
                "err_count": o.err_count, "busy": o.busy}
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
        if o.err:
            errors.append((c, o.err))
        if o.ovf:
            errors.append((c, 6))
        if end_cycle is None and idx == len(cmds) and o.idle and not o.out_valid:
            end_cycle = c + TAIL     # same end rule as the model's run()
        b = o.busy
        for i in range(len(busy_cycles)):
            busy_cycles[i] += (b >> i) & 1
        if hv:
            idx += 1
        if o.out_valid and rr:
            outs.append(o.out_payload)

        if end_cycle is not None and c >= end_cycle:
            break
        c += 1
        if c >= job["max_cycles"]:
            mismatch = dict(cycle=c, signal="timeout", expected=f"done within {c}",
                            actual=f"{idx}/{len(cmds)} pushed, {len(outs)} outputs")
            break
        if c % chunk == 0:
            ready = ready_pattern(seed, c, chunk, thr).tolist()
        hv = int(idx < len(cmds) and push_at[idx] == c)
        if hv and cmds[idx][0] != pay:
            pay = cmds[idx][0]
            cmd_h.value = pay
        rr = ready[c % chunk]
        if c == reset_at:
            dut.rst.value = 1
        nctl = (hv << b_valid) | (rr << b_ready)
        if nctl != ctl:
            ctl = nctl
            ctl_h.value = ctl
    wall = time.perf_counter() - t0
    if mismatch is not None:
        mismatch["seed"] = seed
        mismatch["in_flight"] = f"{idx}/{len(cmds)} commands pushed, {len(outs)} outputs"
    cycles = c + 1
    res = dict(ok=mismatch is None, mismatch=mismatch, cycles=cycles, wall_s=wall,
               cycles_per_s=cycles / wall if wall > 0 else 0.0, outputs=outs, errors=errors,
               busy_cycles=busy_cycles, seed=seed)
    with open(job["out"], "w") as f:
        json.dump(res, f)
    assert mismatch is None, (f"module lockstep mismatch at cycle {mismatch['cycle']}: "
                              f"{mismatch['signal']} expected {mismatch['expected']} actual "
                              f"{mismatch['actual']} (seed {seed})")
