"""The one mismatch report of every RTL-vs-model check (lockstep, trace compare, bench).

A :class:`Mismatch` is the first difference found: cycle, signal, expected (golden model) and
actual (DUT) value, what was in flight, the stimulus seed, the waveform (if one was written)
and the command that reproduces the run.  ``str(m)`` is the readable report.  Nothing here
imports Amaranth or cocotb: it is used inside the simulator too.

Reproduce commands: under pytest the command is the failing test's node id with the test's
``SEED`` (``tests/conftest.py`` puts it in ``CIMPHONY_REPRODUCE``); elsewhere the caller passes
it (e.g. ``cimphony bench --seed 7``).
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import asdict, dataclass, fields

from spec.params import unpack, unpack_vec

REPRODUCE_ENV = "CIMPHONY_REPRODUCE"
"""Environment variable holding the running test's reproduce command (``tests/conftest.py``)."""


def python_command() -> str:
    """The interpreter as a user would type it: ``.venv/bin/python`` from the project root."""
    exe = sys.executable
    rel = os.path.relpath(exe)
    return rel if not rel.startswith("..") else exe


def reproduce_command(nodeid: str, seed: int | None = None, *, waves: bool = False) -> str:
    """Shell command that re-runs the pytest test ``nodeid`` with ``SEED=seed``.

    Parameters
    ----------
    nodeid : str
        pytest node id relative to the root dir, e.g. ``tests/rtl/test_rtl.py::test_x[a]``.
    seed : int or None
        The test's seed; None: the test draws no random numbers (no ``SEED=``).
    waves : bool
        Prefix ``WAVES=1`` (waveform of the re-run).
    """
    env = ("WAVES=1 " if waves else "") + (f"SEED={seed} " if seed is not None else "")
    return f"{env}{python_command()} -m pytest {shlex.quote(nodeid)}"


def current_test_command() -> str | None:
    """The reproduce command of the pytest test running in this process (or in the process
    that started this simulator), as ``tests/conftest.py`` put it in ``CIMPHONY_REPRODUCE``;
    None outside pytest."""
    return os.environ.get(REPRODUCE_ENV) or None


WAVEFORMS: list[str] = []
"""Waveform files written in this process (``tests/conftest.py`` reports a failing test's)."""


def note_waveform(path) -> None:
    """Record and print that a waveform was written to ``path``."""
    WAVEFORMS.append(str(path))
    print(f"[cimphony] waveform: {path}")


def env_seed() -> int | None:
    """``SEED`` from the environment (a decimal int >= 0), None if unset or empty.

    Raises
    ------
    ValueError
        Naming ``SEED`` and its value, if it is not a non-negative integer.
    """
    text = os.environ.get("SEED", "")
    if not text:
        return None
    try:
        seed = int(text)
    except ValueError:
        raise ValueError(f"SEED={text!r} is not an integer") from None
    if seed < 0:
        raise ValueError(f"SEED={text!r} must be >= 0")
    return seed


def waves_requested() -> bool:
    """``WAVES=1`` in the environment (any value but empty or 0)."""
    return os.environ.get("WAVES", "0") not in ("", "0")


@dataclass
class Mismatch:
    """The first difference between the DUT and the golden model.

    Attributes
    ----------
    cycle : int
        Clock cycle (0 = first cycle after reset release).
    signal : str
        DUT port (``res.payload``, ``err``, ...), trace event kind (``res``, ``wr``, ...),
        ``timeout`` or ``end`` (run length).
    expected, actual :
        Golden model's and DUT's value; None: no such event on that side.
    seed : int or None
        Stimulus seed (ready pattern, random gaps).
    in_flight : str
        What had been sent and received when it happened.
    detail : str
        Decoded difference (e.g. which result columns differ).
    waves : str or None
        Waveform file of this run, if one was written.
    reproduce : str or None
        Command that reproduces the run; None: :func:`current_test_command`.
    """
    cycle: int
    signal: str
    expected: object
    actual: object
    seed: int | None = None
    in_flight: str = ""
    detail: str = ""
    waves: str | None = None
    reproduce: str | None = None

    def _fmt(self, v) -> str:
        if v is None:
            return "<none>"
        if isinstance(v, int) and not isinstance(v, bool) and (
                "payload" in self.signal or self.signal == "res"):
            return hex(v)
        return str(v)

    def __str__(self) -> str:
        lines = [f"first mismatch at cycle {self.cycle}: {self.signal} expected "
                 f"{self._fmt(self.expected)} actual {self._fmt(self.actual)}"]
        if self.detail:
            lines.append(f"  detail: {self.detail}")
        if self.in_flight:
            lines.append(f"  in flight: {self.in_flight}")
        if self.seed is not None:
            lines.append(f"  stimulus seed: {self.seed}")
        lines.append(f"  waveform: {self.waves}" if self.waves
                     else "  waveform: none (re-run with WAVES=1)")
        cmd = self.reproduce or current_test_command()
        if cmd:
            lines.append(f"  reproduce: {cmd}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Mismatch:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def payload_detail(fields: dict, macro, expected: int, actual: int) -> str:
    """Which fields of two result payloads differ, and which ``y`` columns.

    Parameters
    ----------
    fields : dict of spec.params.Field
        The payload layout; ``y`` is ``macro.n_out`` results of ``macro.acc_width`` bits.
    macro : spec.params.MacroParams
    expected, actual : int
        Packed payloads (golden model's, DUT's).
    """
    e, a = unpack(fields, expected), unpack(fields, actual)
    parts = [f"{n} expected {e[n]} actual {a[n]}" for n in fields if n != "y" and e[n] != a[n]]
    ye = unpack_vec(e["y"], macro.n_out, macro.acc_width)
    ya = unpack_vec(a["y"], macro.n_out, macro.acc_width)
    cols = [c for c in range(macro.n_out) if ye[c] != ya[c]]
    s = f"{len(cols)} columns differ"
    if cols:
        s += ": " + ", ".join(f"y[{c}] {ye[c]} vs {ya[c]}" for c in cols[:6])
    return "; ".join(parts + [s])


def describe(m: Mismatch | dict | None, *, waves: str | None = None,
             reproduce: str | None = None) -> str:
    """Readable report of ``m`` (a :class:`Mismatch` or its dict); "no mismatch" for None.
    ``waves`` / ``reproduce`` fill those fields when ``m`` lacks them."""
    if m is None:
        return "no mismatch"
    m = Mismatch.from_dict(m) if isinstance(m, dict) else m
    if waves and not m.waves:
        m.waves = waves
    if reproduce and not m.reproduce:
        m.reproduce = reproduce
    return str(m)
