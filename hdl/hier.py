"""Hierarchical export: a component's children as Instances of separately converted modules.

A component with children (the channel's banks, the module's channels) builds them in
``__init__``, lists them in its ``children`` dict and adds them in ``elaborate`` with
:func:`place`.  In ``amaranth.sim`` (platform ``None``) a child is an ordinary submodule.  When
:mod:`hdl.export` converts the component with a :class:`Definitions` as its platform, each child
whose :func:`key` it holds becomes an :class:`~amaranth.hdl.Instance` of that Verilog module,
connected to the child's own port signals, so every distinct child is written once.

Two components with equal :func:`key` (class, ``params``, ``fault``) elaborate to the same
design; a class that is placed this way names its Verilog module in ``verilog_name``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Const, Instance, ResetSignal, Value, ValueCastable
from amaranth.lib import wiring

__all__ = ["Definition", "Definitions", "key", "children", "place", "instance",
           "signature_ports", "parse_ports", "check_ports"]


@dataclass(frozen=True)
class Definition:
    """A converted Verilog module: its name and ports ``(name, "i" | "o", width)``, in
    declaration order."""
    name: str
    ports: tuple[tuple[str, str, int], ...]


class Definitions:
    """Elaboration platform of a hierarchical export: ``{key(child): Definition}``."""

    def __init__(self, defs: dict):
        self.defs = dict(defs)


def key(comp) -> tuple:
    """What makes two components the same design: ``(class, params, fault)``."""
    return (type(comp), getattr(comp, "params", None), getattr(comp, "fault", None))


def children(comp) -> dict:
    """``comp.children`` ({submodule name: component}), or ``{}`` for a leaf."""
    return dict(getattr(comp, "children", None) or {})


def signature_ports(comp) -> dict[str, tuple[str, Value]]:
    """Ports of ``comp``'s signature as ``amaranth.back.verilog`` names them:
    ``{"wr__valid": ("i", signal), ...}`` (without ``clk``, ``rst``).  A constant member (the
    ``ready`` of an ``always_ready`` stream) is no port."""
    ports = {}
    for path, member, value in comp.signature.flatten(comp):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        value = Value.cast(value)
        if isinstance(value, Const):
            continue
        ports["__".join(map(str, path))] = ("i" if member.flow == wiring.In else "o", value)
    return ports


def check_ports(comp, d: Definition) -> None:
    """ValueError unless ``d``'s ports are ``clk``, ``rst`` and ``comp``'s signature ports with
    their directions and widths."""
    want = {n: (k, len(v)) for n, (k, v) in signature_ports(comp).items()}
    want.update(clk=("i", 1), rst=("i", 1))
    got = {n: (k, w) for n, k, w in d.ports}
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))
        raise ValueError(f"module {d.name!r}: ports differ from {type(comp).__name__}'s "
                         f"signature (name, (dir, width)): {diff}")


def instance(comp, d: Definition) -> Instance:
    """An Instance of ``d`` connected to ``comp``'s port signals and the ``sync`` clock and
    reset (the ports are checked with :func:`check_ports`)."""
    check_ports(comp, d)
    sig = signature_ports(comp)
    kw = {}
    for name, kind, _ in d.ports:
        if name == "clk":
            kw["i_clk"] = ClockSignal("sync")
        elif name == "rst":
            kw["i_rst"] = ResetSignal("sync")
        else:
            kw[f"{kind}_{name}"] = sig[name][1]
    return Instance(d.name, **kw)


def place(m, name: str, child, platform) -> None:
    """Add ``child`` to module ``m`` as submodule ``name``: as itself, or, if ``platform`` is a
    :class:`Definitions` holding the child's key, as an Instance of that definition."""
    d = platform.defs.get(key(child)) if isinstance(platform, Definitions) else None
    m.submodules[name] = child if d is None else instance(child, d)


_PORT = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                   r"(?:\[(\d+):(\d+)\]\s+)?\\?([A-Za-z_][\w$.]*)\s*;", re.M)


def parse_ports(text: str, name: str) -> Definition:
    """The ports of module ``name`` in Verilog ``text`` (as written by yosys
    ``write_verilog``: one ``input [w-1:0] port;`` declaration per port)."""
    start = re.search(rf"^module\s+\\?{re.escape(name)}\s*\(", text, re.M)
    if start is None:
        raise ValueError(f"parse_ports: no module {name!r} in the Verilog text")
    end = text.find("\nendmodule", start.end())
    body = text[start.end():end if end >= 0 else len(text)]
    ports = []
    for mt in _PORT.finditer(body):
        direction, hi, lo, pname = mt.groups()
        if direction == "inout":
            raise ValueError(f"parse_ports: module {name!r} has an inout port {pname!r}")
        width = 1 if hi is None else abs(int(hi) - int(lo)) + 1
        ports.append((pname, direction[0], width))
    return Definition(name, tuple(ports))
