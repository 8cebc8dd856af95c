"""The experiment grid of ``cimphony perf``, run as tasks on Dask (perf/sweep.py).

A grid is the product of models x contexts x (system, policy) pairs; every point is one call
of :func:`perf.point.run_point`.  Points are cached on disk by a key of their arguments and of
:func:`code_version` (a hash of the source files behind a point), so a re-run computes only
new points, and a code change recomputes everything.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from perf.point import CLASS, run_point
from perf.presets import POLICIES, SYSTEMS
from perf.sweep import Point, run_sweep
from workloads.mix import BENCH_MEANS

__all__ = ["CONTEXTS", "MIX_CONTEXT", "MODELS", "DEFAULT_MODELS", "DEFAULT_POLICIES", "pairs",
           "points", "code_version", "run_grid", "fmt_ctx"]

#: the longest benchmark mean of the request mixes (LV-Eval multifieldqa, 60780, ANCHORS.md):
#: at this context the drawn lengths are the benchmarks' own (workloads/mix.py scales the
#: longest mean to the context)
MIX_CONTEXT = max(BENCH_MEANS.values())
CONTEXTS = (4096, 32768, MIX_CONTEXT, 131072, 1 << 20)
MODELS = ("llama-3.1-8b", "llama-3.1-70b", "qwen1.5-7b", "qwen1.5-72b")
DEFAULT_MODELS = ("llama-3.1-8b", "llama-3.1-70b")    # LLM-7B and LLM-72B, both with GQA
#: policies of the default grid on the AiM hardware: the CENT baseline, each technique alone
#: and all (the single-bank ablations baseline_1bank / all_1bank on request: they cost the
#: most simulation time of any point)
DEFAULT_POLICIES = ("baseline", "tcp", "dcs", "dpa", "all")
_ROOT = Path(__file__).resolve().parents[1]
_CODE = ("perf", "compiler", "spec", "workloads")
#: presentation modules: they change no point's result, so they are not part of its key
_NOT_CODE = {"grid.py", "report.py", "tables.py", "plots.py", "point_cli.py"}


def fmt_ctx(c: int) -> str:
    """4096 -> "4K", 1048576 -> "1M", the mix context -> "mix 59K"."""
    if c == MIX_CONTEXT:
        return f"mix {c / 1024:.0f}K"
    if c >= 1 << 20 and c % (1 << 20) == 0:
        return f"{c >> 20}M"
    if c % 1024 == 0:
        return f"{c >> 10}K"
    return str(c)


def pairs(systems, policies=None) -> list[tuple[str, str]]:
    """(system, policy) pairs of a grid: ``policies`` (default: all of them) on the AiM
    hardware -- the ``all`` policy there is preset (b), ``pimphony`` -- and ``all`` on each
    other preset of ``systems``.  The AiM baseline is always there: every speedup's reference."""
    pols = list(policies) if policies else list(DEFAULT_POLICIES)
    out = [("aim", "baseline")]
    if "aim" in systems:
        out += [("aim", p) for p in pols if p not in ("baseline", "all")]
    if "pimphony" in systems or ("aim" in systems and "all" in pols):
        out.append(("pimphony", "all"))
    out += [(s, "all") for s in SYSTEMS if s in systems and s not in ("aim", "pimphony")]
    return out


def points(models, contexts, system_policies, *, seed: int, batch_cap=None,
           out_ports=None) -> list[Point]:
    """One :class:`perf.sweep.Point` per (model, context, (system, policy))."""
    for s, p in system_policies:
        if s not in SYSTEMS or p not in POLICIES:
            raise ValueError(f"points: (system, policy)=({s!r}, {p!r}) unknown")
    return [Point(run_point, dict(model=m, system=s, policy=p, context=c, seed=seed,
                                  batch_cap=batch_cap, out_ports=out_ports))
            for m in models for c in contexts for s, p in system_policies]


def code_version() -> str:
    """SHA-256 (16 hex digits) of every .py and .json file under perf/, compiler/, spec/ and
    workloads/ (but perf's presentation modules): a point is recomputed when any code or data
    behind it changes."""
    h = hashlib.sha256()
    for d in _CODE:
        for f in sorted((_ROOT / d).rglob("*")):
            if f.suffix in (".py", ".json") and f.is_file() and "__pycache__" not in f.parts \
                    and not (d == "perf" and f.name in _NOT_CODE):
                h.update(str(f.relative_to(_ROOT)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_grid(pts, *, cache_dir, jobs: int = 2, scheduler=None, progress: bool = True,
             connect_timeout: float = 30.0) -> list[dict]:
    """Run ``pts`` through :func:`perf.sweep.run_sweep`; one row per point in input order: the
    point's result, or for a failed point its arguments with ``status`` "error: ..." (and
    ``traceback``); every row has ``cached`` and ``point_s`` (compute time, s)."""
    recs = run_sweep(pts, cache_dir=cache_dir, code_version=code_version(), n_workers=jobs,
                     scheduler=scheduler, progress=progress, connect_timeout=connect_timeout)
    rows = []
    for p, r in zip(pts, recs, strict=True):
        if r["status"] == "ok":
            row = dict(r["result"])
        else:
            kw = p.kwargs
            row = dict(system=kw["system"], model=kw["model"], cls=CLASS.get(kw["model"], "?"),
                       ctx=kw["context"], policy=kw["policy"], status=f"error: {r['error']}",
                       traceback=r.get("traceback", ""))
        row["cached"] = r.get("cached", False)
        row["point_s"] = r.get("seconds", 0.0)
        rows.append(row)
    return rows
