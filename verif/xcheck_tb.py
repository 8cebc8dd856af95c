"""cocotb test of the 4-state X check (runs inside Icarus; started by :mod:`verif.xcheck`).

The job (JSON in ``CIMPHONY_XJOB``) lists the DUT's input and output ports (name, width), the
number of cycles, the cycles in which ``rst`` is raised, a preload (cycles of fixed input
values applied right after the first reset) and the seed.  Every other cycle each input gets a
random value (valid/ready bits included), driven on the falling clock edge; every output is
sampled just before each falling edge and any ``x`` / ``z`` bit in a cycle after the first
reset is recorded (first cycle, signal, value).  The result goes to ``job["out"]``.
"""
from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer


def _resolvable(v) -> bool:
    s = str(v).lower()
    return "x" not in s and "z" not in s


def _peek(dut, path: str) -> str:
    """The value of an internal signal (``a.b.c`` below the top), or why it is unreadable."""
    h = dut
    try:
        for part in path.split("."):
            h = getattr(h, part)
        return str(h.value)
    except (AttributeError, TypeError, ValueError) as e:
        return f"<{type(e).__name__}>"


@cocotb.test()
async def xcheck(dut):
    job = json.loads(open(os.environ["CIMPHONY_XJOB"]).read())
    rng = random.Random(job["seed"])
    ins = {n: getattr(dut, n) for n, _ in job["inputs"]}
    outs = {n: getattr(dut, n) for n, _ in job["outputs"]}
    widths = dict(job["inputs"])
    resets = set(job["resets"])
    preload = job.get("preload", [])
    # clk low and every input defined before the first edge (a rising edge at time 0 would
    # clock registers before the combinational logic has evaluated: a testbench artefact)
    dut.clk.value = 0
    dut.rst.value = 1
    for n, h in ins.items():
        h.value = 0
    await Timer(2, unit="ns")
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start(start_high=False))
    first: dict[str, dict] = {}
    counts: dict[str, int] = {}
    checked_from = None
    probe_x: dict[str, dict] = {}     # first x of each probe (internal signal)
    pre = 0
    for c in range(job["cycles"]):
        await FallingEdge(dut.clk)             # drive cycle c
        in_rst = c in resets or c == 0
        dut.rst.value = 1 if in_rst else 0
        if not in_rst and checked_from is None:
            checked_from = c
        if checked_from is not None and pre < len(preload) and not in_rst:
            vals = preload[pre]
            pre += 1
            for n, h in ins.items():
                h.value = int(vals.get(n, 0))
        elif not in_rst:
            for n, h in ins.items():
                h.value = rng.getrandbits(widths[n])
        await RisingEdge(dut.clk)
        if checked_from is None or c < checked_from:
            continue
        # the outputs of cycle c: read at the rising edge, before the registers update
        for q in job.get("probe", []):
            if q not in probe_x:
                v = _peek(dut, q)
                if not _resolvable(v):
                    probe_x[q] = {"cycle": c, "value": v}
        for n, h in outs.items():
            v = h.value
            if not _resolvable(v):
                counts[n] = counts.get(n, 0) + 1
                if n not in first:
                    first[n] = {"cycle": c, "value": str(v), "probes": {
                        q: _peek(dut, q) for q in job.get("probe", [])}}
    res = {"ok": not first, "cycles": job["cycles"], "checked_from": checked_from,
           "x_outputs": first, "x_cycles": counts, "probe_first_x": probe_x}
    with open(job["out"], "w") as f:
        json.dump(res, f)
