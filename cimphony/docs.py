"""WaveDrom timing diagrams of the contract docs: checking, reading cycle by cycle, rendering.

The sources are ``docs/wavedrom/*.json`` (WaveDrom JSON, one clock period = one cycle of
``clk``, period i = cycle i).  A source may carry a ``"cimphony"`` key (ignored by WaveDrom,
dropped before rendering) that says what its lanes mean to the golden model; the test
``tests/cli/test_docs.py`` runs the model on each diagram's input lanes and asserts its output
lanes and its annotated edges.

:func:`render` draws every source as SVG with the ``yowasp-wavedrom`` package (``pip install
cimphony[docs]``); ``cimphony docs`` calls it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["SOURCES", "INSTALL_HINT", "check", "load", "lanes", "nodes", "edges", "render"]

#: the committed diagram sources
SOURCES = Path(__file__).resolve().parent.parent / "docs" / "wavedrom"

#: how to get the renderer (the ``docs`` extra pins it)
INSTALL_HINT = "pip install cimphony[docs]  (or: pip install yowasp-wavedrom==3.5.0.9)"

_LEVEL = {"0": 0, "1": 1, "l": 0, "h": 1, "L": 0, "H": 1}
_CLOCK = set("pPnN")
_DATA = set("=23456789")
_UNKNOWN = set("xz")
_CONT = set(".|")
_WAVE_CHARS = set(_LEVEL) | _CLOCK | _DATA | _UNKNOWN | _CONT
_EDGE = re.compile(r"^([A-Za-z])([-~<>|]+)([A-Za-z])(?:\s+(.*))?$")


def _signals(items, where: str):
    """Flatten WaveDrom ``signal`` entries (groups ``["name", ...]``, spacers ``{}``)."""
    for i, s in enumerate(items):
        if isinstance(s, list):
            if not s or not isinstance(s[0], str):
                raise ValueError(f"{where}: signal[{i}] is a group without a name string")
            yield from _signals(s[1:], f"{where} group {s[0]!r}")
        elif isinstance(s, dict):
            if s:
                yield s
        else:
            raise ValueError(f"{where}: signal[{i}] = {s!r} is not an object or a group")


def _data_labels(s: dict) -> list[str]:
    d = s.get("data", [])
    return d.split() if isinstance(d, str) else list(d)


def check(src: dict, where: str = "source") -> None:
    """Check that ``src`` is a WaveDrom waveform this project can read cycle by cycle.

    A lane is either a waveform (a unique ``name`` and a ``wave``) or an annotation lane (a
    ``node`` string only, no name, no wave).  A wave is made of WaveDrom characters (levels
    ``01lhLH``, clocks ``pPnN``, data ``=2-9``, ``xz``, continuation ``.|``), does not start
    with a continuation, and all waves have the same length (cycles).  A lane's data labels
    match its data characters one for one.  ``node`` strings are no longer than the waves,
    each node is defined once, and every ``edge`` joins two defined nodes.  ValueError names
    ``where``, the lane and the problem.
    """
    if not isinstance(src, dict) or not isinstance(src.get("signal"), list):
        raise ValueError(f"{where}: a WaveDrom waveform is an object with a 'signal' list")
    names, node_names, length = set(), {}, None
    for s in _signals(src["signal"], where):
        name, wave, node = s.get("name"), s.get("wave"), s.get("node", "")
        if not isinstance(node, str):
            raise ValueError(f"{where}: lane {s!r}: node must be a string")
        if wave is None and name is None:
            label = "annotation lane"
            if not node:
                raise ValueError(f"{where}: lane {s!r} has no wave and no node")
        else:
            label = f"lane {name!r}"
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}: lane {s!r} has no name")
            if name in names:
                raise ValueError(f"{where}: lane name {name!r} is used twice")
            names.add(name)
            if not isinstance(wave, str) or not wave:
                raise ValueError(f"{where}: {label} has no wave string")
            bad = sorted(set(wave) - _WAVE_CHARS)
            if bad:
                raise ValueError(f"{where}: {label} wave {wave!r} has characters {bad}")
            if wave[0] in _CONT:
                raise ValueError(f"{where}: {label} wave {wave!r} starts with a continuation")
            if length is not None and len(wave) != length:
                raise ValueError(f"{where}: {label} wave is {len(wave)} cycles long, the "
                                 f"lanes before it {length}")
            length = len(wave)
            n_data, labels = sum(c in _DATA for c in wave), _data_labels(s)
            if n_data != len(labels):
                raise ValueError(f"{where}: {label} has {n_data} data segments but "
                                 f"{len(labels)} labels {labels}")
        for i, c in enumerate(node):
            if c != ".":
                if c in node_names:
                    raise ValueError(f"{where}: node {c!r} is defined twice")
                node_names[c] = (label, i)
    for c, (label, i) in node_names.items():
        if length is not None and i >= length:
            raise ValueError(f"{where}: {label}: node {c!r} at cycle {i} is past the waves' "
                             f"{length} cycles")
    for e in src.get("edge", []):
        m = _EDGE.match(e) if isinstance(e, str) else None
        if m is None:
            raise ValueError(f"{where}: edge {e!r} is not 'a<arrow>b [label]'")
        for c in (m.group(1), m.group(3)):
            if c not in node_names:
                raise ValueError(f"{where}: edge {e!r} names node {c!r}, defined by no lane")


def load(path: str | Path) -> dict:
    """Read and :func:`check` one WaveDrom JSON source; ValueError names the file."""
    path = Path(path)
    try:
        src = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    check(src, str(path))
    return src


def lanes(src: dict) -> dict[str, list]:
    """Per-cycle values of every non-clock lane: ``{name: [value of cycle 0, 1, ...]}``.

    A value is 0 or 1 for a level, the label string for a data segment (held by ``.``) and
    None for ``x``/``z``.
    """
    out = {}
    for s in _signals(src["signal"], "source"):
        wave = s.get("wave")
        if wave is None or wave[0] in _CLOCK:
            continue
        labels, vals, cur = iter(_data_labels(s)), [], None
        for c in wave:
            if c in _LEVEL:
                cur = _LEVEL[c]
            elif c in _DATA:
                cur = next(labels)
            elif c in _UNKNOWN:
                cur = None
            elif c in _CLOCK:
                raise ValueError(f"lane {s['name']!r}: clock character {c!r} in a data lane")
            vals.append(cur)
        out[s["name"]] = vals
    return out


def nodes(src: dict) -> dict[str, int]:
    """``{node: cycle}`` for every node of ``src`` (a node marks the start of its cycle)."""
    return {c: i for s in _signals(src["signal"], "source")
            for i, c in enumerate(s.get("node", "")) if c != "."}


def edges(src: dict) -> list[tuple[str, str, str]]:
    """``[(from node, to node, label)]`` of ``src`` (label "" if none)."""
    return [(m.group(1), m.group(3), m.group(4) or "")
            for m in (_EDGE.match(e) for e in src.get("edge", []))]


def _wavedrom():
    try:
        import yowasp_wavedrom
    except ImportError as e:
        raise ImportError(f"rendering the timing diagrams needs the yowasp-wavedrom package, "
                          f"which is not installed: {INSTALL_HINT}") from e
    return yowasp_wavedrom


def render(src_dir: Path, out_dir: Path) -> list[Path]:
    """Render every ``*.json`` WaveDrom source of ``src_dir`` to ``out_dir/<name>.svg``.

    Parameters
    ----------
    src_dir : Path
        Folder of WaveDrom JSON sources (e.g. :data:`SOURCES`); all are checked (:func:`load`)
        before anything is written.
    out_dir : Path
        Output folder, created if missing (with parents).

    Returns
    -------
    list of Path
        The SVG files written, in source-name order.

    Raises
    ------
    ValueError
        ``src_dir`` is not a folder or holds no ``*.json``; a source is not valid (names the
        file); ``out_dir`` exists and is not a folder.
    ImportError
        ``yowasp-wavedrom`` is not installed (the message says how to install it).
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not src_dir.is_dir():
        raise ValueError(f"render: src_dir={str(src_dir)!r} is not a folder")
    paths = sorted(src_dir.glob("*.json"))
    if not paths:
        raise ValueError(f"render: src_dir={str(src_dir)!r} holds no *.json WaveDrom source")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"render: out_dir={str(out_dir)!r} exists and is not a folder")
    sources = [(p, load(p)) for p in paths]
    wavedrom = _wavedrom()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for p, src in sources:
        svg = wavedrom.render({k: v for k, v in src.items() if k != "cimphony"})
        out = out_dir / f"{p.stem}.svg"
        out.write_text(svg)
        written.append(out)
    return written
