"""One amaranth.sim harness for the components' Python-level tests and benches: the DUT in a
top module with an explicit ``sync`` domain, so that a testbench can drive ``rst``."""
from __future__ import annotations

__all__ = ["simulate"]


def simulate(dut, testbench):
    """Run the async ``testbench(ctx, rst)`` on ``dut`` (clock period 1 µs, domain ``sync``,
    ``rst`` its reset signal) until it returns; returns what it returns."""
    from amaranth.hdl import ClockDomain, Module
    from amaranth.sim import Simulator

    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-6, domain="sync")
    result = {}

    async def tb(ctx):
        result["v"] = await testbench(ctx, cd.rst)

    sim.add_testbench(tb)
    sim.run()
    return result.get("v")
