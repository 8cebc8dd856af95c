"""Verilog export (and optional Verilator lint) of cimphony's top-level components.

Usage::

    python -m hdl.export --out build/verilog [--lint] [--config key=val ...]

writes ``<top>.v`` and ``<top>.ports.json`` for every top-level component in :data:`TOPS`: the
macro (top ``dimc_macro``), the PIM channel (top ``pim_channel``, ``ChannelParams(macro=...)``)
and the PIM module (top ``pim_module``, ``ModuleParams(channel=...)``).
``--config`` overrides :class:`spec.params.MacroParams` fields (of the macro and of every bank of
the channel and module), ``--channel`` overrides :class:`spec.isa.ChannelParams` fields (of the
channel and of every channel of the module), ``--module`` overrides
:class:`spec.isa.ModuleParams` fields.  With
``--lint`` each file is checked with ``verilator --lint-only -Wall`` plus only the committed
waiver file ``hdl/waivers.vlt``; the exit status is non-zero if lint fails.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

from spec.isa import (ChannelParams, ModuleParams, cmd_fields, host_fields, mod_out_fields,
                       out_fields)
from spec.params import MacroParams, req_fields, res_fields, wr_fields

from .channel import PimChannel
from .macro import DimcMacro
from .module import PimModule

__all__ = ["generate", "port_map", "generate_channel", "channel_port_map", "lint",
           "generate_module", "module_port_map", "parse_config", "parse_channel",
           "parse_module", "main", "WAIVERS", "TOPS"]

WAIVERS = Path(__file__).resolve().parent / "waivers.vlt"

#: top-level components written by ``main``: top name -> component class
TOPS = {"dimc_macro": DimcMacro, "pim_channel": PimChannel, "pim_module": PimModule}


def generate(params: MacroParams, fault: str | None = None, name: str = "dimc_macro") -> str:
    """Verilog text of the macro for ``params`` (``fault`` as in :class:`DimcMacro`).

    Ports: ``clk``, ``rst`` and the component's signature flattened with ``__``
    (``wr__valid``, ``wr__ready``, ``wr__payload``, ... ``err``, ``busy``).
    """
    dut = DimcMacro(params, fault=fault)
    return verilog.convert(dut, name=name, emit_src=False, strip_internal_attrs=True)


def port_map(params: MacroParams, fault: str | None = None) -> dict:
    """Ports of the macro (name, direction, width, payload fields from spec.params) and params."""
    dut = DimcMacro(params, fault=fault)
    fields = {"wr": wr_fields(params), "req": req_fields(params), "res": res_fields(params)}
    return {
        "params": dataclasses.asdict(params),
        "acc_width": params.acc_width,
        "tag": params.tag,
        "fault": fault,
        "ports": _ports(dut, fields),
    }


def generate_channel(params: ChannelParams, name: str = "pim_channel") -> str:
    """Verilog text of the PIM channel for ``params`` (ports ``clk``, ``rst``, ``cmd__*``,
    ``out__*``, ``idle``, ``busy``, ``err``; one ``<name>.bank<b>`` module per macro)."""
    return verilog.convert(PimChannel(params), name=name, emit_src=False,
                           strip_internal_attrs=True)


def channel_port_map(params: ChannelParams) -> dict:
    """Ports of the channel (name, direction, width, payload fields from spec.isa) and params."""
    dut = PimChannel(params)
    return {
        "params": dataclasses.asdict(params),
        "acc_width": params.macro.acc_width,
        "window": params.window,
        "tag": params.tag,
        "ports": _ports(dut, {"cmd": cmd_fields(params), "out": out_fields(params)}),
    }


def generate_module(params: ModuleParams, name: str = "pim_module") -> str:
    """Verilog text of the PIM module for ``params`` (ports ``clk``, ``rst``, ``host_valid``,
    ``host_cmd``, ``out__*``, ``err``, ``ovf``, ``err_count``, ``idle``, ``busy``)."""
    return verilog.convert(PimModule(params), name=name, emit_src=False,
                           strip_internal_attrs=True)


def module_port_map(params: ModuleParams) -> dict:
    """Ports of the module (name, direction, width, fields of ``host_cmd`` and ``out__payload``
    from spec.isa) and params."""
    dut = PimModule(params)
    return {
        "params": dataclasses.asdict(params),
        "acc_width": params.channel.macro.acc_width,
        "n_pages": params.n_pages,
        "tag": params.tag,
        "ports": _ports(dut, {"host_cmd": host_fields(params), "out": mod_out_fields(params)}),
    }


def _ports(dut, fields) -> list:
    dut._MustUse__silence = True  # only its signature is inspected, it is never elaborated
    ports = [
        {"name": "clk", "direction": "in", "width": 1},
        {"name": "rst", "direction": "in", "width": 1},
    ]
    for path, member, value in dut.signature.flatten(dut):
        pname = "__".join(map(str, path))
        entry = {"name": pname,
                 "direction": "in" if member.flow == wiring.In else "out",
                 "width": len(value.as_value()) if hasattr(value, "as_value") else len(value)}
        if path[-1] == "payload" or (len(path) == 1 and path[0] in fields):
            entry["fields"] = [{"name": f.name, "offset": f.offset, "width": f.width}
                               for f in fields[path[0]].values()]
        ports.append(entry)
    return ports


def lint(path: str | Path, waivers: str | Path = WAIVERS) -> subprocess.CompletedProcess:
    """Run ``verilator --lint-only -Wall <waivers> <path>``; returns the completed process."""
    from tb import vlenv  # imported lazily: Verilator only needed for linting
    env = vlenv.apply(dict(__import__("os").environ))
    cmd = [vlenv.verilator(), "--lint-only", "-Wall", str(waivers), str(path)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def parse_config(items) -> MacroParams:
    """``["n_in=16", "w_bits=4"]`` -> MacroParams (ValueError on unknown keys or bad ints)."""
    names = {f.name for f in dataclasses.fields(MacroParams)}
    kw = {}
    for item in items or ():
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise ValueError(f"--config {item!r}: expected key=int with key in {sorted(names)}")
        kw[key] = int(val, 0)
    return MacroParams(**kw)


def parse_channel(items, macro: MacroParams) -> ChannelParams:
    """``["n_banks=2", "dcs=0"]`` -> ChannelParams(macro=macro, ...) (ValueError on bad keys)."""
    names = {f.name for f in dataclasses.fields(ChannelParams)} - {"macro"}
    kw = {}
    for item in items or ():
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise ValueError(f"--channel {item!r}: expected key=int with key in {sorted(names)}")
        kw[key] = bool(int(val, 0)) if key == "dcs" else int(val, 0)
    return ChannelParams(macro=macro, **kw)


def parse_module(items, channel: ChannelParams) -> ModuleParams:
    """``["n_ch=2", "n_vpages=8"]`` -> ModuleParams(channel=channel, ...) (ValueError on bad
    keys)."""
    names = {f.name for f in dataclasses.fields(ModuleParams)} - {"channel"}
    kw = {}
    for item in items or ():
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise ValueError(f"--module {item!r}: expected key=int with key in {sorted(names)}")
        kw[key] = int(val, 0)
    return ModuleParams(channel=channel, **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hdl.export", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="build/verilog", help="output directory")
    ap.add_argument("--lint", action="store_true", help="verilator --lint-only -Wall each file")
    ap.add_argument("--config", nargs="*", default=[], metavar="KEY=VAL",
                    help="MacroParams overrides, e.g. n_in=16 w_bits=4")
    ap.add_argument("--channel", nargs="*", default=[], metavar="KEY=VAL",
                    help="ChannelParams overrides, e.g. n_banks=2 q_depth=4 dcs=0")
    ap.add_argument("--module", nargs="*", default=[], metavar="KEY=VAL",
                    help="ModuleParams overrides, e.g. n_ch=2 n_vpages=8 fifo_depth=4")
    args = ap.parse_args(argv)
    try:
        params = parse_config(args.config)
        cparams = parse_channel(args.channel, params)
        mparams = parse_module(args.module, cparams)
    except ValueError as e:
        ap.error(str(e))
    export = {
        "dimc_macro": (lambda top: generate(params, name=top), lambda: port_map(params),
                       params.tag),
        "pim_channel": (lambda top: generate_channel(cparams, name=top),
                        lambda: channel_port_map(cparams), cparams.tag),
        "pim_module": (lambda top: generate_module(mparams, name=top),
                       lambda: module_port_map(mparams), mparams.tag),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ok = True
    for top in TOPS:
        t0 = time.monotonic()
        vfile = out / f"{top}.v"
        gen, ports, tag = export[top]
        vfile.write_text(gen(top))
        (out / f"{top}.ports.json").write_text(json.dumps(ports(), indent=2) + "\n")
        print(f"{vfile}: {vfile.stat().st_size} bytes ({tag}, "
              f"{time.monotonic() - t0:.1f} s)")
        if args.lint:
            t0 = time.monotonic()
            r = lint(vfile)
            dt = time.monotonic() - t0
            if r.returncode:
                ok = False
                sys.stdout.write(r.stdout)
                sys.stderr.write(r.stderr)
                print(f"{vfile}: LINT FAILED ({dt:.1f} s)", file=sys.stderr)
            else:
                print(f"{vfile}: lint clean ({dt:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
