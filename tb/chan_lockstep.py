"""cocotb lockstep bench of the PIM channel: Verilated PimChannel vs ChannelModel, every cycle.

The command stream follows the driver rules of ``model/stimulus.py`` (a beat is offered from
``t_free + gap`` until it transfers); ``out.ready`` is the seeded ``ready_at`` pattern.  The
loop itself is ``tb/stream_lockstep.py``.
"""
from __future__ import annotations

import cocotb

from model.channel import ChannelModel
from tb import stream_lockstep
from tb.probespec import channel


@cocotb.test()
async def chan_lockstep(dut):
    job = stream_lockstep.load_job()
    p = job["params"]
    res = await stream_lockstep.run(dut, job, ChannelModel(p), channel(p.n_banks), "cmd.valid",
                                    has_ready=True, n_busy=p.n_banks)
    stream_lockstep.assert_ok(res, "channel")
