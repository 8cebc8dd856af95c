"""4-state X checks on Icarus Verilog (Debian ``iverilog``) with the cocotb 2.1 runner.

Verilator is 2-state; Icarus propagates ``x`` and ``z``.  :func:`run_xcheck` simulates a
Verilog top for some cycles with random values on every input (``verif/xcheck_tb.py``), a
reset at cycle 0 and again in mid-stream, and reports every output that carries an ``x`` or
``z`` bit in any cycle after the first reset.

Two power-up models of the exported Verilog (:func:`component_verilog`):

``init``    as exported: every register has its initial value (Amaranth's ``init``);
``noinit``  every register initialiser removed (an ASIC power-up: all flops ``x``); the reset
            must then define every register it resets, and the state that no reset clears
            (weight SRAM, GBuf data, the datapath registers loaded during reset) may reach
            an output only through a documented read of something never written.  The
            macro's check therefore writes every weight row first (:func:`macro_preload`);
            without that preload the first result reads unwritten SRAM, and ``x`` appears on
            ``res.payload`` only, which the tests show.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from amaranth.hdl import Value
from amaranth.lib import wiring

__all__ = ["ToolMissing", "iverilog", "ports_of", "verilog_ports", "kick_comb", "strip_init",
           "written_memories", "component_verilog", "macro_preload", "channel_preload",
           "dram_channel_params", "softmax_module_params", "run_xcheck", "check_component",
           "STANDARD"]

TB_MODULE = "verif.xcheck_tb"
_REG_INIT = re.compile(r"^(\s*reg\s+(?:signed\s+)?(?:\[[^\]]*\]\s*)?(\\\S+\s|\w+)\s*)=[^;]*;",
                       re.M)


class ToolMissing(RuntimeError):
    """Icarus Verilog is not installed."""


def iverilog() -> str:
    """Path of ``iverilog``; ToolMissing (install: ``apt-get install -y iverilog``)."""
    p = shutil.which("iverilog")
    if p is None or shutil.which("vvp") is None:
        raise ToolMissing("iverilog/vvp not found: apt-get install -y iverilog")
    return p


def ports_of(dut: wiring.Component) -> tuple[list, list]:
    """([(verilog name, width)] of the inputs, of the outputs) of an exported component
    (port path joined with ``__``; ``clk`` and ``rst`` are not listed)."""
    from cimphony.compat import silence_unused
    silence_unused(dut)            # inspected here; elaborated (or not) by the caller
    ins, outs = [], []
    for path, member, value in dut.signature.flatten(dut):
        name = "__".join(str(p) for p in path)
        (ins if member.flow == wiring.In else outs).append((name, len(Value.cast(value))))
    return ins, outs


def verilog_ports(text: str, top: str) -> tuple[list, list]:
    """([(name, width)] of the inputs, of the outputs) of module ``top`` in ``text``, as
    declared (``clk`` and ``rst`` left out; a constant output the export dropped is not
    there)."""
    m = re.search(rf"^module {re.escape(top)}\(.*?^endmodule", text, re.M | re.S)
    if m is None:
        raise ValueError(f"verilog_ports: no module {top!r} in the text")
    ins, outs = [], []
    for d, hi, lo, name in re.findall(r"^\s*(input|output)\s+(?:signed\s+)?"
                                      r"(?:\[(\d+):(\d+)\]\s*)?(\S+)\s*;", m.group(0), re.M):
        if name in ("clk", "rst"):
            continue
        (ins if d == "input" else outs).append((name, int(hi) - int(lo) + 1 if hi else 1))
    return ins, outs


_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*dump_module\$\d+)\s*=\s*0;", re.M)


def kick_comb(text: str) -> str:
    """``text`` with the Verilog backend's ``always @*`` trigger register changed at 1 ns.

    Every combinational block of the backend's output reads that register
    (``if (\\$auto$...dump_module$N ) begin end``) so that it runs once at time zero; Icarus
    does not see a change of a register initialised in its declaration, so blocks fed only
    by registers would not run before the first clock edge and the registers would load
    ``x`` (a simulation artefact, not the hardware).  The trigger, declared without a value
    and set to 0 at 1 ns, runs every block once before the first edge."""
    return _TRIGGER.sub(lambda m: f"{m.group(1)}reg {m.group(2)} ;\n"
                                  f"{m.group(1)}initial #1 {m.group(2)}  = 1'b0;", text)


_MEM_INIT = re.compile(r"^\s*initial begin\n((?:\s*(\\\S+ |\w+)\[\d+\] = [^;]*;\n)+)"
                       r"\s*end\n", re.M)


def written_memories(text: str) -> set:
    """Names of the memories (``reg [..] name [..];``) that some ``always`` block writes
    (``name[addr] <=`` or ``name[addr][bits] <=``): RAMs, as opposed to ROMs (the softmax
    unit's exp table), whose initial contents are the design."""
    mems = set(re.findall(r"^\s*reg\s+(?:\[[^\]]*\]\s*)?(\\\S+ |\w+)\s*\[[^\]]*\];",
                          text, re.M))
    return {m for m in mems if re.search(rf"^\s*{re.escape(m.strip())}\s*\[[^\n]*<=", text,
                                          re.M)}


def strip_init(text: str, memories: bool = True) -> str:
    """``text`` with every ``reg ... = value;`` initialiser removed (the backend's
    ``dump_module`` trigger of ``always @*`` blocks is kept) and, with ``memories``, the
    ``initial`` blocks that fill a written memory (:func:`written_memories`: the DRAM bank's
    cell array and read FIFO; a ROM keeps its contents)."""
    def sub(m):
        return m.group(0) if "dump_module" in m.group(2) else m.group(1).rstrip() + ";"
    out = _REG_INIT.sub(sub, text)
    if memories:
        ram = {m.strip() for m in written_memories(out)}
        out = _MEM_INIT.sub(lambda m: "" if m.group(2).strip() in ram else m.group(0), out)
    return out


def component_verilog(dut: wiring.Component, init: bool = True) -> tuple[str, str]:
    """(Verilog text, top module name) of ``dut`` as ``cimphony verilog`` exports it
    (:func:`hdl.export.hierarchy`), with :func:`kick_comb`, initialisers stripped unless
    ``init``."""
    from hdl import export
    h = export.hierarchy(dut)
    text = kick_comb(h.text)
    return (text if init else strip_init(text)), h.top.name


def macro_preload(params) -> list[dict]:
    """Input cycles that write every row of every weight set of a macro (``wr`` only)."""
    from spec.params import wr_fields
    f = wr_fields(params)
    cycles = []
    for s in range(params.n_sets):
        for r in range(params.n_in):
            cycles.append({"wr__valid": 1, "wr__payload": (r << f["row"].offset)
                           | (s << f["set"].offset), "res__ready": 1})
    return cycles


def channel_preload(params) -> list[dict]:
    """Input cycles that write every GBuf entry (WR_INP) and every weight row of every set
    of every bank (WR_W; a DRAM channel: every column burst of every row) with zeros, then
    every OBuf entry of every bank (a MAC of those zeros, ``acc = 0``), ``out.ready`` high.

    The testbench does not look at ``cmd.ready``, so the cycles come from the golden model
    (:class:`model.channel.ChannelModel`, equal to the RTL in every cycle from reset: the
    lockstep runs): each command is offered until the model takes it; then the cycles until
    the channel is idle, so every write has landed before the random inputs start."""
    from model.channel import ChannelModel
    from spec.isa import Op, encode
    m = params.macro
    rows = (m.n_in * m.n_out // params.burst_bytes if params.bank_kind == "dram"
            else m.n_in)
    words = [encode(params, Op.WR_INP, g=g, data=0) for g in range(params.n_gbuf)]
    words += [encode(params, Op.WR_W, bank=b, set=s, row=r, data=0)
              for b in range(params.n_banks) for s in range(m.n_sets) for r in range(rows)]
    words += [encode(params, Op.MAC, bank=b, set=0, g=0, o=o, acc=0)
              for b in range(params.n_banks) for o in range(m.n_acc)]
    model = ChannelModel(params)
    model.reset()
    cycles, k = [], 0
    while k < len(words) or not model.peek_idle():
        if len(cycles) > 100 * len(words) + 1000:
            raise RuntimeError("channel_preload: the channel does not take the preload")
        v = int(k < len(words))
        w = words[k] if v else 0
        o = model.step(v, w, 1)
        cycles.append({"cmd__valid": v, "cmd__payload": w, "out__ready": 1})
        k += v and o.cmd_ready
    return cycles


def run_xcheck(text: str, top: str, inputs, outputs, out: str | Path, *, cycles: int = 400,
               resets=(), preload=(), seed: int = 1, probe=()) -> dict:
    """Simulate ``text`` (top ``top``) on Icarus in ``out``; returns ``ok``, ``x_outputs``
    {output: {cycle, value}} (first x/z per output), ``x_cycles`` {output: count},
    ``checked_from`` (the first cycle after the first reset) and ``cycles``.

    ``resets``: cycles with ``rst`` high besides cycle 0; ``preload``: input dicts applied one
    per cycle after the first reset (then random inputs); ``probe``: internal signal paths
    whose values are recorded with each output's first x (to trace where it comes from);
    ValueError for a bad argument."""
    if type(cycles) is not int or cycles < 2:
        raise ValueError(f"run_xcheck: cycles={cycles!r} must be an int >= 2")
    if type(seed) is not int or seed < 0:
        raise ValueError(f"run_xcheck: seed={seed!r} must be an int >= 0")
    iverilog()
    from cocotb_tools.runner import get_runner
    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vfile = out / f"{top}.v"
    vfile.write_text(text)
    job = {"inputs": [list(p) for p in inputs], "outputs": [list(p) for p in outputs],
           "cycles": cycles, "resets": sorted(set(int(r) for r in resets)),
           "preload": list(preload), "seed": seed, "probe": list(probe),
           "out": str(out / "result.json")}
    (out / "job.json").write_text(json.dumps(job))
    runner = get_runner("icarus")
    runner.build(sources=[vfile], hdl_toplevel=top, build_dir=out, timescale=("1ns", "1ps"),
                 always=True, log_file=out / "build.log")
    try:
        runner.test(test_module=TB_MODULE, hdl_toplevel=top, build_dir=out, test_dir=out,
                    extra_env={"CIMPHONY_XJOB": str(out / "job.json")},
                    log_file=out / "sim.log", results_xml=str(out / "results.xml"))
    except SystemExit:
        pass
    rf = out / "result.json"
    if not rf.exists():
        log = (out / "sim.log").read_text()[-3000:] if (out / "sim.log").exists() else ""
        raise RuntimeError(f"X check of {top} produced no result; log tail:\n{log}")
    res = json.loads(rf.read_text())
    res["dir"] = str(out)
    return res


def check_component(dut: wiring.Component, out: str | Path, *, init: bool = True,
                    preload=(), cycles: int = 400, seed: int = 1) -> dict:
    """:func:`run_xcheck` of an exported component with a reset at 0 and in mid-stream."""
    text, top = component_verilog(dut, init)
    ins, outs = verilog_ports(text, top)
    res = run_xcheck(text, top, ins, outs, out, cycles=cycles, resets=(cycles // 2,
                                                                       cycles // 2 + 1),
                     preload=preload, seed=seed)
    res.update(top=top, init=init, preload=len(preload))
    return res


def _configs():
    from spec.isa import ChannelParams, ModuleParams
    from spec.params import MacroParams
    mp = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=1)
    cp = ChannelParams(MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2,
                                   tree_stages=0), n_banks=2, n_gbuf=2, q_depth=4)
    return mp, cp, ModuleParams(cp, n_ch=2, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4)


def _macro(init):
    def check(out, cycles=400, seed=1):
        from hdl.macro import DimcMacro
        mp = _configs()[0]
        return check_component(DimcMacro(mp), out, init=init, cycles=cycles, seed=seed,
                               preload=() if init else macro_preload(mp))
    return check


def dram_channel_params():
    """The DRAM-PIM channel of the checks: 2 banks of 4 rows x 4 columns of 8 bytes
    (``tests/rtl/test_rtl_dram_channel.py``'s, SHORT_TIMING: a refresh every 120 cycles)."""
    from spec.dram import SHORT_TIMING
    from spec.isa import ChannelParams
    from spec.params import MacroParams
    return ChannelParams(MacroParams(n_in=16, n_out=2, n_sets=4, n_acc=2), n_banks=2,
                         n_gbuf=2, q_depth=4, dcs=True, all_bank=True, bank_kind="dram",
                         burst_bytes=8, timing=SHORT_TIMING)


def softmax_module_params():
    """The module with the softmax unit of ``tests/rtl/test_rtl_module_softmax.py``."""
    from spec.isa import ChannelParams, ModuleParams
    from spec.params import MacroParams
    m = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=4, n_acc=4, tree_stages=0)
    return ModuleParams(ChannelParams(m, n_banks=2, n_gbuf=2, q_depth=4), n_ch=2,
                        n_vpages=16, n_req=2, fifo_depth=4, loop_len=4, softmax=True,
                        sm_context=32, host_ready=True)


def _channel(out, cycles=400, seed=1):
    from hdl.channel import PimChannel
    return check_component(PimChannel(_configs()[1]), out, cycles=cycles, seed=seed)


def _dram_channel(init, preload=True):
    def check(out, cycles=400, seed=1):
        from hdl.channel import PimChannel
        p = dram_channel_params()
        pre = channel_preload(p) if preload else ()
        return check_component(PimChannel(p), out, init=init, cycles=max(
            cycles, 2 * len(pre) + 400), seed=seed, preload=pre)
    return check


def _module(out, cycles=400, seed=1):
    from hdl.module import PimModule
    return check_component(PimModule(_configs()[2]), out, cycles=cycles, seed=seed)


def _module_sm(out, cycles=400, seed=1):
    from hdl.module import PimModule
    return check_component(PimModule(softmax_module_params()), out, cycles=cycles, seed=seed)


STANDARD = {"macro_init": _macro(True), "macro_noinit": _macro(False),
            "channel_init": _channel, "channel_dram_init": _dram_channel(True, False),
            "channel_dram_noinit": _dram_channel(False), "module_init": _module,
            "module_softmax_init": _module_sm}
"""The checks of ``cimphony verify xcheck``: name -> callable(out, cycles, seed) -> result
(small macro as exported and with no initial values + preload; the DIMC channel, the DRAM
channel, the module and the module with the softmax unit as exported; the DRAM channel with
no initial values, its cell arrays and GBuf written first by :func:`channel_preload`)."""
