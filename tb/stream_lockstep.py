"""Shared cocotb lockstep loop for designs with one command input and one output stream.

Used by the channel bench (``tb/chan_lockstep.py``: a valid/ready command stream) and the
module bench (``tb/mod_lockstep.py``: host pushes without ready).  Method as in
``tb/lockstep.py``: one wake per cycle on the falling edge; the wrapper (``tb/probe.py``) has
sampled every output of the cycle that just ended; the model is stepped with the same inputs
and every output compared (the wide ``out`` payload whenever either side changes); the first
mismatch stops the run.  The run ends TAIL cycles after the first cycle in which every command
has been sent (in an earlier cycle), the design is idle and its output register is empty, as
the models' ``run()``.
"""
from __future__ import annotations

import json
import os
import pickle
import time

from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from model.stimulus import TAIL, ready_pattern
from tb.probespec import ProbeSpec, read


def load_job() -> dict:
    with open(os.environ["CIMPHONY_JOB"], "rb") as f:
        return pickle.load(f)


async def run(dut, job: dict, model, spec: ProbeSpec, in_valid: str, *, has_ready: bool,
              err_fields=(), n_busy: int = 1) -> dict:
    """Drive ``job["cmds"]`` [(payload, gap)] into ``in_valid`` and compare every cycle.

    ``has_ready``: the command stream has a ready (channel: a command is offered from
    ``t_free + gap`` until it transfers); else command i is pushed in cycle
    ``t_{i-1} + 1 + gap_i`` regardless (module host port).  ``err_fields``: model outputs
    whose non-zero values are logged as (cycle, field, value).  ``job["reset_at"]`` raises
    ``rst`` in that cycle (DUT) and resets the model after stepping it.
    """
    cmds, seed, thr = job["cmds"], job["seed"], job["ready_threshold"]
    fields = [(n, spec.obs_offset(n), w, n.replace(".", "_")) for n, w in spec.obs]
    cmp_mask = (1 << spec.chg_bit) - 1
    obs_w = spec.obs_width + 1
    b_valid, b_ready = spec.ctl_bit(in_valid), spec.ctl_bit("out.ready")
    ready_attr = in_valid.replace("valid", "ready").replace(".", "_")
    reset_at = job.get("reset_at", -1)
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

    def offered(c, idx, t_free):
        if idx >= len(cmds):
            return 0
        return int(c >= t_free + cmds[idx][1]) if has_ready else int(c == t_free + cmds[idx][1])

    chunk = 1 << 14
    ready = ready_pattern(seed, 0, chunk, thr).tolist()
    idx, t_free = 0, 0
    outs, events = [], []
    busy_cycles = [0] * n_busy
    mismatch, end_cycle, c = None, None, 0
    cv = offered(0, 0, t_free)
    pay = cmds[0][0] if cv else 0
    rr = ready[0]
    ctl = (cv << b_valid) | (rr << b_ready)
    ctl_h.value = ctl
    cmd_h.value = pay
    model_out = dut_out = 0
    t0 = time.perf_counter()
    while True:
        await edge
        obs = read(h_obs, obs_w)
        o = model.step(cv, pay, rr)
        if c == reset_at:
            model.reset()
            dut.rst.value = 0
        exp = 0
        for _, off, _, attr in fields:
            exp |= getattr(o, attr) << off
        if (obs & cmp_mask) != exp:
            for n, off, w, _ in fields:
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
        for f in err_fields:
            if getattr(o, f):
                events.append((c, f, getattr(o, f)))
        if end_cycle is None and idx == len(cmds) and o.idle and not o.out_valid:
            end_cycle = c + TAIL
        b = o.busy
        for i in range(n_busy):
            busy_cycles[i] += (b >> i) & 1
        if cv and (not has_ready or getattr(o, ready_attr)):
            idx += 1
            t_free = c + 1
        if o.out_valid and rr:
            outs.append(dut_out)            # as read from the DUT (equal to the model's)
        if end_cycle is not None and c >= end_cycle:
            break
        c += 1
        if c >= job["max_cycles"]:
            mismatch = dict(cycle=c, signal="timeout", expected=f"done within {c}",
                            actual=f"{idx}/{len(cmds)} commands, {len(outs)} outputs")
            break
        if c % chunk == 0:
            ready = ready_pattern(seed, c, chunk, thr).tolist()
        cv = offered(c, idx, t_free)
        if cv and cmds[idx][0] != pay:
            pay = cmds[idx][0]
            cmd_h.value = pay
        rr = ready[c % chunk]
        if c == reset_at:
            dut.rst.value = 1
        nctl = (cv << b_valid) | (rr << b_ready)
        if nctl != ctl:
            ctl = nctl
            ctl_h.value = ctl
    wall = time.perf_counter() - t0
    if mismatch is not None:
        mismatch["seed"] = seed
        mismatch["in_flight"] = f"{idx}/{len(cmds)} commands sent, {len(outs)} outputs"
    cycles = c + 1
    res = dict(ok=mismatch is None, mismatch=mismatch, cycles=cycles, wall_s=wall,
               cycles_per_s=cycles / wall if wall > 0 else 0.0, outputs=outs, events=events,
               busy_cycles=busy_cycles, seed=seed)
    with open(job["out"], "w") as f:
        json.dump(res, f)
    return res


def assert_ok(res: dict, what: str) -> None:
    m = res["mismatch"]
    assert m is None, (f"{what} lockstep mismatch at cycle {m['cycle']}: {m['signal']} expected "
                       f"{m['expected']} actual {m['actual']} (seed {res['seed']})")
