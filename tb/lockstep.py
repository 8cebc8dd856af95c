"""cocotb lockstep bench: the Verilated macro and the golden model, compared every cycle.

Runs inside the simulator (started by :func:`tb.build.run_lockstep`, which passes the job file
in ``CIMPHONY_JOB``).  Python wakes once per cycle, on the falling clock edge, reads the
wrapper's sampled outputs of the cycle that just ended (``tb/probe.py``), steps the model with
the same inputs, compares every output (the wide result payload is compared whenever either
side's value changes, so every cycle's value is covered), then drives the next cycle's inputs
following the driver rules of ``model/stimulus.py``.  The first mismatch stops the run and is
reported with cycle, signal, expected, actual, what was in flight and the stimulus seed.
"""
from __future__ import annotations

import json
import os
import pickle
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from model.macro import MacroModel
from model.stimulus import TAIL, Source, ready_pattern
from spec.params import MacroErr
from tb.probespec import MACRO

CTL_WR_VALID, CTL_REQ_VALID, CTL_RES_READY = (MACRO.ctl_bit(n) for n in MACRO.ctl)
OBS_WR_READY, OBS_REQ_READY, OBS_RES_VALID, OBS_ERR, OBS_BUSY = (
    MACRO.obs_offset(n) for n, _ in MACRO.obs)
OBS_CHG = MACRO.chg_bit

_FIELDS = tuple((n, MACRO.obs_offset(n), w) for n, w in MACRO.obs)


_CMP_MASK = (1 << OBS_CHG) - 1   # every sampled output except the payload-change flag


def _first_diff(actual: int, expected: int):
    for name, off, w in _FIELDS:
        a, e = (actual >> off) & ((1 << w) - 1), (expected >> off) & ((1 << w) - 1)
        if a != e:
            if name == "err":
                return name, f"{e} ({MacroErr(e).name})", f"{a} ({MacroErr(a).name})"
            return name, e, a
    return None


@cocotb.test()
async def lockstep(dut):
    with open(os.environ["CIMPHONY_JOB"], "rb") as f:
        job = pickle.load(f)
    p, stim = job["params"], job["stim"]
    model = MacroModel(p, late=job["late"])
    # The clock toggles in the simulator (GPI clock), not in a Python coroutine: the default
    # ("py" unless COCOTB_TRUST_INERTIAL_WRITES) wakes Python on both clock edges.
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    h_obs, h_res = dut.obs._handle, dut.obs_out._handle
    ctl_h, wr_h, req_h = dut.ctl, dut.in0, dut.in1     # in0 = wr.payload, in1 = req.payload

    dut.rst.value = 1
    ctl_h.value = 0
    wr_h.value = 0
    req_h.value = 0
    edge = FallingEdge(dut.clk)   # mid-cycle: registers settled, inputs not yet sampled
    for _ in range(3):
        await edge
    dut.rst.value = 0

    wr_src, req_src = Source(stim.wr), Source(stim.req)
    n_req_total = len(stim.req)
    thr, seed = stim.ready_threshold, stim.seed
    chunk = 1 << 14
    ready = ready_pattern(seed, 0, chunk, thr).tolist()
    n_wr = n_req = n_res = 0
    results: list[int] = []
    mismatch = None
    end_cycle = None
    max_cycles = job["max_cycles"]

    # cycle 0 inputs
    wv = wr_src.valid(0, 0)
    rv = req_src.valid(0, 0)
    rr = ready[0]
    ctl = (wv << CTL_WR_VALID) | (rv << CTL_REQ_VALID) | (rr << CTL_RES_READY)
    ctl_h.value = ctl
    wr_pay = wr_src.payload
    req_pay = req_src.payload
    if wr_pay:
        wr_h.value = wr_pay
    if req_pay:
        req_h.value = req_pay
    model_pay = dut_pay = 0
    c = 0
    # Inputs of the next cycle are written straight into the simulator (deposit) from the
    # falling-edge wake-up, instead of through ``handle.value``, which queues them for a
    # ReadWrite callback (a second Python wake-up per cycle) and goes through range checks.
    # Verilator re-evaluates after the callback, long before the rising edge samples them.
    deposit = 0                                   # cocotb's _GPISetAction.DEPOSIT
    set_ctl = ctl_h._handle.set_signal_val_int    # ctl fits 32 bits
    set_wr, set_req = wr_h._handle.set_signal_val_binstr, req_h._handle.set_signal_val_binstr
    wr_fmt, req_fmt = f"0{len(wr_h)}b", f"0{len(req_h)}b"   # wide ports: binary strings
    t0 = time.perf_counter()
    while True:
        await edge
        obs = h_obs.get_signal_val_long()
        o = model.step(wv, wr_pay, rv, req_pay, rr)
        exp = ((o.wr_ready << OBS_WR_READY) | (o.req_ready << OBS_REQ_READY)
               | (o.res_valid << OBS_RES_VALID) | (o.err << OBS_ERR) | (o.busy << OBS_BUSY))
        if (obs & _CMP_MASK) != exp:
            name, e, a = _first_diff(obs, exp)
            mismatch = dict(cycle=c, signal=name, expected=e, actual=a)
            break
        if (obs >> OBS_CHG) & 1 or o.res_payload != model_pay:
            dut_pay = int(h_res.get_signal_val_binstr(), 2)   # the DUT's, kept for results
            model_pay = o.res_payload
            if dut_pay != model_pay:
                mismatch = dict(cycle=c, signal="res.payload", expected=hex(model_pay),
                                actual=hex(dut_pay))
                break
        if wv and o.wr_ready:
            n_wr += 1
            wr_src.transferred(c)
        if rv and o.req_ready:
            n_req += 1
            req_src.transferred(c)
        if o.res_valid and rr:
            n_res += 1
            results.append(dut_pay)         # as read from the DUT (equal to the model's)
        if end_cycle is None and n_res == n_req_total and wr_src.done and req_src.done:
            end_cycle = c + TAIL
        if end_cycle is not None and c >= end_cycle:
            break
        c += 1
        if c >= max_cycles:
            mismatch = dict(cycle=c, signal="timeout", expected=f"done within {max_cycles}",
                            actual=f"{n_wr} writes, {n_req} requests, {n_res} results")
            break
        if c % chunk == 0:
            ready = ready_pattern(seed, c, chunk, thr).tolist()
        # inputs of cycle c
        wv = wr_src.valid(c, n_res)
        rv = req_src.valid(c, n_wr)
        rr = ready[c % chunk]
        nctl = (wv << CTL_WR_VALID) | (rv << CTL_REQ_VALID) | (rr << CTL_RES_READY)
        if nctl != ctl:
            ctl = nctl
            set_ctl(deposit, ctl)
        if wr_src.payload != wr_pay:
            wr_pay = wr_src.payload
            set_wr(deposit, format(wr_pay, wr_fmt))
        if req_src.payload != req_pay:
            req_pay = req_src.payload
            set_req(deposit, format(req_pay, req_fmt))
    wall = time.perf_counter() - t0

    if mismatch is not None:
        mismatch["seed"] = seed
        mismatch["in_flight"] = (f"{n_wr}/{len(stim.wr)} writes and {n_req}/{n_req_total} "
                                 f"requests accepted, {n_res} results received; "
                                 f"model busy={model.state()['busy']}")
    cycles = c + 1
    res = dict(ok=mismatch is None, mismatch=mismatch, cycles=cycles, wall_s=wall,
               cycles_per_s=cycles / wall if wall > 0 else 0.0, results=results,
               transfers=dict(wr=n_wr, req=n_req, res=n_res), seed=seed, note=stim.note)
    with open(job["out"], "w") as f:
        json.dump(res, f)
    assert mismatch is None, (f"lockstep mismatch at cycle {mismatch['cycle']}: "
                              f"{mismatch['signal']} expected {mismatch['expected']} actual "
                              f"{mismatch['actual']} (seed {seed})")

