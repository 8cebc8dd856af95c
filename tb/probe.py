"""Lockstep wrapper: lets cocotb wake once per cycle and touch few handles.

``lockstep_top`` drives the DUT from a packed ``ctl`` port and wide inputs ``in0..``, and
registers what the DUT outputs at each clock edge: after the edge that ends cycle c, ``obs`` and
``obs_out`` hold the DUT's outputs *during* cycle c (from its state in c and the inputs of c),
and ``obs``'s top bit says whether the wide output changed from cycle c-1.  The wrapper adds
no behaviour: it only samples.  Which ports go where is a :class:`tb.probespec.ProbeSpec`.

The DUT inside the wrapper is an instance of its exported Verilog (:func:`hdl.export.hierarchy`,
the text ``cimphony verilog`` writes), so what the lockstep benches verify is what users take.
"""
from __future__ import annotations

from amaranth import Cat, Module, Signal, Value
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl import export, hier
from tb.probespec import ProbeSpec


def _port(dut, path: str):
    obj = dut
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


class LockstepProbe(wiring.Component):
    def __init__(self, dut: wiring.Component, spec: ProbeSpec):
        self._dut, self._spec = dut, spec
        ports = {"ctl": In(len(spec.ctl)), "obs": Out(spec.obs_width + 1),
                 "obs_out": Out(len(Value.cast(_port(dut, spec.wide_out))))}
        for i, path in enumerate(spec.wide_in):
            ports[f"in{i}"] = In(len(Value.cast(_port(dut, path))))
        for i, path in enumerate(spec.side_out):
            ports[f"obs_side{i}"] = Out(len(Value.cast(_port(dut, path))))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        dut = self._dut
        hier.place(m, "dut", dut, platform)
        spec = self._spec
        m.d.comb += [_port(dut, p).eq(self.ctl[i]) for i, p in enumerate(spec.ctl)]
        m.d.comb += [_port(dut, p).eq(getattr(self, f"in{i}"))
                     for i, p in enumerate(spec.wide_in)]
        out = Signal.like(self.obs_out)
        m.d.comb += out.eq(_port(dut, spec.wide_out))
        # the samples are not reset: the cycle in which rst is high is sampled like any other
        obs = Signal.like(self.obs, reset_less=True)
        obs_out = Signal.like(self.obs_out, reset_less=True)
        m.d.sync += [
            obs.eq(Cat(*(_port(dut, n) for n, _ in spec.obs), out != obs_out)),
            obs_out.eq(out),
        ]
        m.d.comb += [self.obs.eq(obs), self.obs_out.eq(obs_out)]
        for i, path in enumerate(spec.side_out):      # further wide outputs (no change bit)
            side = Signal.like(getattr(self, f"obs_side{i}"), reset_less=True)
            m.d.sync += side.eq(_port(dut, path))
            m.d.comb += getattr(self, f"obs_side{i}").eq(side)
        return m


def probe_verilog(dut: wiring.Component, spec: ProbeSpec) -> str:
    """Verilog of the wrapper ``lockstep_top`` around ``dut``: the exported hierarchical
    Verilog of ``dut`` (unchanged), then the wrapper, which instantiates its top module."""
    h = export.hierarchy(dut)
    wrapper = verilog.convert(LockstepProbe(dut, spec), name="lockstep_top", emit_src=False,
                              platform=hier.Definitions({hier.key(dut): h.top}))
    return h.text + "\n" + wrapper
