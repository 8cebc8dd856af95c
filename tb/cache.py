"""The one Verilator build cache (cocotb lockstep builds and the C++ trace harness).

A build lives in ``sim_build/<area>/<name>/`` and is reused while its **key** is unchanged:
the SHA-256 of the exact Verilog text, the build flags and the harness/config files it is
built with (``cimphony.stamp``).  Generating the Verilog takes seconds for large macros, so a
**quick key** (the target, the flags and the text of every source the Verilog is generated
from) is stored next to it: when the quick key matches, the Verilog is not generated at all;
when only the quick key differs (say, a comment in ``hdl/``), the Verilog is generated and
compared by its key, and an equal key reuses the build.  Concurrent builders (parallel
pytest workers, a bench next to a test run) serialise on ``<name>.lock``.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from tb import vlenv

__all__ = ["generator_sources", "digest", "cached_build", "build_seconds"]

STAMP = "cimphony.stamp"
BUILD_TIME = "build_s.txt"


def generator_sources() -> list[Path]:
    """Every file the Verilog of a DUT (and of its lockstep wrapper) is generated from."""
    r = vlenv.REPO
    return sorted([*(r / "hdl").glob("*.py"), *(r / "spec").glob("*.py"),
                   r / "cimphony" / "compat.py", r / "tb" / "probe.py",
                   r / "tb" / "probespec.py", r / "tb" / "dram.py", r / "tb" / "dram_dut.py"])


def digest(*parts) -> str:
    """SHA-256 hex digest of ``parts``: str, bytes, or Path (its bytes; a missing file hashes
    as its name plus ``<missing>``)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            h.update(str(p.name).encode())
            h.update(p.read_bytes() if p.exists() else b"<missing>")
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def _tools() -> str:
    return " ".join(f"{d} {metadata.version(d)}" for d in ("amaranth", "cocotb", "verilator"))


def cached_build(bdir: Path, *, target: object, verilog: Callable[[], str], extra: Iterable,
                 build: Callable[[Path, str], None], product: str) -> Path:
    """Build (or reuse) ``bdir``; returns it.

    Parameters
    ----------
    bdir : Path
        Build directory (removed and recreated on a rebuild).
    target : object
        What is built (its ``repr`` enters the quick key), e.g. a frozen dataclass.
    verilog : callable () -> str
        Generates the exact Verilog text (only called when the quick key changed).
    extra : iterable of str, bytes or Path
        Everything else the build depends on: flags, harness and Verilator config files.
    build : callable (bdir, verilog_text) -> None
        Runs Verilator in the empty ``bdir``; must produce ``bdir / product``.
    product : str
        Path (relative to ``bdir``) of the built executable.
    """
    extra = list(extra)
    quick = digest(repr(target), _tools(), *generator_sources(), *extra)
    bdir.parent.mkdir(parents=True, exist_ok=True)
    stamp = bdir / STAMP
    with open(bdir.parent / f"{bdir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = _read_stamp(stamp) if (bdir / product).exists() else {}
        if old.get("quick") == quick:
            return bdir
        src = verilog()
        key = digest(src, _tools(), *extra)
        if old.get("key") == key:
            stamp.write_text(json.dumps({"quick": quick, "key": key}))
            return bdir
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir(parents=True)
        t0 = time.time()
        build(bdir, src)
        if not (bdir / product).exists():
            raise RuntimeError(f"Verilator build in {bdir} produced no {product}")
        (bdir / BUILD_TIME).write_text(f"{time.time() - t0:.1f}\n")
        stamp.write_text(json.dumps({"quick": quick, "key": key}))
    return bdir


def _read_stamp(stamp: Path) -> dict:
    try:
        d = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def build_seconds(bdir: Path) -> float | None:
    """Wall time of the last full build in ``bdir`` (s), or None if never built."""
    f = bdir / BUILD_TIME
    return float(f.read_text()) if f.exists() else None
