"""cocotb lockstep bench of the PIM module: Verilated PimModule vs ModuleModel, every cycle.

Host commands have no ready: command i is pushed in cycle ``t_{i-1} + 1 + gap_i`` (the first
in cycle ``gap_0``), whether or not the FIFO has room (a push into a full FIFO is the
QUEUE_FULL case).  ``out.ready`` is the seeded ``ready_at`` pattern; ``job["reset_at"]``
raises ``rst`` in that cycle (mid-stream reset recovery).  The loop is
``tb/stream_lockstep.py``; rejected commands are logged as (cycle, ModErr code), QUEUE_FULL
for pushes reported on ``ovf``.
"""
from __future__ import annotations

import json

import cocotb

from spec.isa import ModErr
from model.module import ModuleModel
from tb import stream_lockstep
from tb.probespec import module


@cocotb.test()
async def mod_lockstep(dut):
    job = stream_lockstep.load_job()
    p = job["params"]
    res = await stream_lockstep.run(dut, job, ModuleModel(p),
                                    module(p.n_ch, p.channel.n_banks), "host_valid",
                                    has_ready=False, err_fields=("err", "ovf"),
                                    n_busy=p.n_ch * p.channel.n_banks)
    res["errors"] = [(c, v if f == "err" else int(ModErr.QUEUE_FULL))
                     for c, f, v in res.pop("events")]
    with open(job["out"], "w") as f:
        json.dump(res, f)
    stream_lockstep.assert_ok(res, "module")
