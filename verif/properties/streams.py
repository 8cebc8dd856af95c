"""Generic stream properties of any ``wiring.Component`` (macro, channel, module, softmax, ...).

:class:`StreamHarness` instantiates a component with every input port free (a top-level port
of the harness: the solver picks any value in any cycle), optional assumptions on them, and
asserts, for every **output** stream of the component's signature (an ``amaranth.lib.stream``
member with ``valid``, ``ready`` and ``payload``):

* ``valid`` is held until ``ready``: ``valid & ~ready`` in cycle t (no reset in t) implies
  ``valid`` in t+1, and ``payload`` in t+1 equals ``payload`` in t.

Reset (``rst``) is free as well: ``held`` is reset with the dut, so a cycle with ``rst`` high
starts over (a reset may drop a pending beat).
Because the harness only looks at ports it picks up a new component with no change.
"""
from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal, Value
from amaranth.lib import stream, wiring

__all__ = ["stream_members", "free_inputs", "StreamHarness"]


def stream_members(sig: wiring.Signature, prefix: tuple = ()):
    """[(path, flow, stream.Signature)] of the stream members of ``sig``, nested ones too
    (``flow`` is the member's flow as seen from the component)."""
    out = []
    for name, member in sig.members.items():
        path = prefix + (name,)
        if member.is_signature:
            s = member.signature
            if isinstance(s, stream.Signature):
                out.append((path, member.flow, s))
            else:
                out += [(p, member.flow if f == wiring.Out else f.flip(), ss)
                        for p, f, ss in stream_members(s, path)]
    return out


def _get(obj, path):
    for p in path:
        obj = getattr(obj, p)
    return obj


def free_inputs(dut: wiring.Component) -> list[tuple[Value, Signal]]:
    """[(input port of ``dut``, a new signal to drive it from)]: the new signals are the
    harness's free ports, named after the dut's port path."""
    pairs = []
    for path, member, value in dut.signature.flatten(dut):
        if member.flow == wiring.In:
            v = Value.cast(value)
            pairs.append((v, Signal(v.shape(), name="in_" + "_".join(str(p) for p in path))))
    return pairs


class StreamHarness(Elaboratable):
    """``dut`` with free inputs and the stream-hold assertion on each of its output streams.

    Parameters
    ----------
    dut : wiring.Component
        The component under proof (``fault`` variants included).
    assume : callable (module, dut) -> None, optional
        Adds ``Assume`` statements on the dut's inputs (e.g. well-formed commands).
    """

    def __init__(self, dut: wiring.Component, assume=None):
        if not isinstance(dut, wiring.Component):
            raise ValueError(f"StreamHarness: dut={dut!r} is not a wiring.Component")
        self.dut, self.assume = dut, assume
        self._inputs = free_inputs(dut)
        self.ports: list[Signal] = [s for _, s in self._inputs]
        self.streams = [p for p, f, _ in stream_members(dut.signature) if f == wiring.Out]
        if not self.streams:
            raise ValueError(f"StreamHarness: {type(dut).__name__} has no output stream")

    def elaborate(self, platform):
        from amaranth.hdl import Assert
        m = Module()
        m.submodules.dut = dut = self.dut
        m.d.comb += [v.eq(s) for v, s in self._inputs]
        if self.assume is not None:
            self.assume(m, dut)
        for path in self.streams:
            s = _get(dut, path)
            name = "_".join(path)
            held = Signal(name=f"{name}_held")        # valid & ~ready in the previous cycle
            old = Signal.like(Value.cast(s.payload), name=f"{name}_old")
            m.d.sync += [held.eq(s.valid & ~s.ready), old.eq(s.payload)]
            with m.If(held):
                m.d.comb += [Assert(s.valid, f"{name}.valid dropped before ready"),
                             Assert(Value.cast(s.payload) == old,
                                    f"{name}.payload changed before ready")]
        return m
