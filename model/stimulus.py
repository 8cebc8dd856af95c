"""Stimulus for the macro's three streams, and the driver rules every harness follows.

A :class:`Stimulus` is what a testbench offers the macro: weight-write beats, compute-request
beats (each with an idle gap and a dependency on the other stream), and a seeded pattern for
``res.ready``.  The cocotb lockstep bench (``tb/``), the Verilator C++ trace harness
(``tb/harness.cpp``) and the golden model's trace runner all apply these rules, so a run is
fully determined by (params, stimulus).

Driver rules, per source stream (``wr`` and ``req``), in cycles of ``clk`` starting at 0:

* ``t_free`` is 0 for the first beat and ``t + 1`` after a beat transferred in cycle t.
* beat i is offered (``valid`` high, its payload driven) in every cycle c with
  ``c >= t_free + gap_i`` and ``other_count(c) >= after_i``, until it transfers
  (``valid & ready`` in that cycle).  ``other_count(c)`` counts transfers in cycles < c on the
  stream the beat depends on: for ``wr`` beats the ``res`` stream, for ``req`` beats the ``wr``
  stream.  Outside offered cycles valid is 0 and the payload keeps its last driven value
  (0 before the first beat).
* ``res.ready`` in cycle c is :func:`ready_at` (seed, c, ready_p), independent of valid.

A run ends ``TAIL`` cycles after the cycle in which the last expected result transferred
(all beats sent, ``len(req)`` results received), so late error codes are still seen.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spec.params import MacroParams, check_int, check_word

__all__ = ["TAIL", "Beat", "Stimulus", "Source", "ready_threshold", "ready_at", "ready_pattern",
           "check_program"]

TAIL = 2
_M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Beat:
    """One stream beat: packed ``payload`` (see spec/params.py layouts), ``gap`` idle cycles
    before it may be offered, and ``after``: transfers needed on the other stream first.
    All three are ints >= 0 (ValueError naming the field otherwise)."""
    payload: int
    gap: int = 0
    after: int = 0

    def __post_init__(self):
        for name in ("payload", "gap", "after"):
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                object.__setattr__(self, name, check_int(f"Beat: {name}", v, 0))


@dataclass
class Stimulus:
    params: MacroParams
    wr: list[Beat] = field(default_factory=list)
    req: list[Beat] = field(default_factory=list)
    ready_p: float = 1.0          # probability that res.ready is high in a cycle
    seed: int = 0                 # seeds the res.ready pattern (and names the run)
    note: str = ""                # what this stimulus is (for reports)

    def __post_init__(self):
        if not isinstance(self.params, MacroParams):
            raise ValueError(f"Stimulus: params={self.params!r} is not a MacroParams")
        for name in ("wr", "req"):
            beats = getattr(self, name)
            if not isinstance(beats, (list, tuple)):
                raise ValueError(f"Stimulus: {name}={beats!r} must be a list of Beat")
            for i, b in enumerate(beats):
                if not isinstance(b, Beat):
                    raise ValueError(f"Stimulus: {name}[{i}]={b!r} is not a Beat")
        ready_threshold(self.ready_p, "Stimulus: ready_p")
        self.seed = check_int("Stimulus: seed", self.seed, 0, _M32)

    @property
    def ready_threshold(self) -> int:
        return ready_threshold(self.ready_p)


def ready_threshold(ready_p: float, name: str = "ready_p") -> int:
    """A ready line is high when the 16-bit hash of (seed, cycle) is below this (0..65536).

    ``ready_p``: an int or float in (0, 1]; ValueError naming ``name=ready_p`` otherwise.
    """
    if isinstance(ready_p, bool) or not isinstance(ready_p, (int, float, np.integer,
                                                             np.floating)) \
            or not 0.0 < ready_p <= 1.0:
        raise ValueError(f"{name}={ready_p!r} must be a number in (0, 1]")
    return int(round(ready_p * 65536))


def check_program(cmds, width: int, name: str = "cmds") -> list[tuple[int, int]]:
    """A command program ``[(word, gap)]`` as a list of Python int pairs: each word an
    unsigned ``width``-bit int, each gap an int >= 0.  ValueError naming the first bad entry
    (``cmds[3]``) otherwise."""
    try:
        items = list(cmds)
    except TypeError:
        raise ValueError(f"{name}={cmds!r} must be a list of (word, gap) pairs") from None
    out = []
    for i, c in enumerate(items):
        if not isinstance(c, (tuple, list)) or len(c) != 2:
            raise ValueError(f"{name}[{i}]={c!r} must be a (word, gap) pair")
        w, g = c
        if type(w) is not int or w < 0 or w >> width:
            w = check_word(f"{name}[{i}] word", w, width)
        if type(g) is not int or g < 0:
            g = check_int(f"{name}[{i}] gap", g, 0)
        out.append((w, g))
    return out


def _fmix32(h: int) -> int:
    """murmur3 32-bit finaliser."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def ready_at(seed: int, cycle: int, threshold: int) -> int:
    """res.ready in ``cycle``: 1 iff (fmix32((cycle * 0x9E3779B9 + seed) mod 2**32) >> 16) < threshold.

    Counter-based (no state), so C++ and Python compute it identically and it can be vectorised.
    """
    if threshold >= 65536:
        return 1
    return int((_fmix32((cycle * 0x9E3779B9 + seed) & _M32) >> 16) < threshold)


def ready_pattern(seed: int, start: int, n: int, threshold: int) -> np.ndarray:
    """Vectorised :func:`ready_at` for cycles start .. start+n-1 (uint8 array)."""
    if threshold >= 65536:
        return np.ones(n, dtype=np.uint8)
    c = np.arange(start, start + n, dtype=np.uint64)
    h = (c * np.uint64(0x9E3779B9) + np.uint64(seed)) & np.uint64(_M32)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(_M32)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(_M32)
    h ^= h >> np.uint64(16)
    return ((h >> np.uint64(16)) < np.uint64(threshold)).astype(np.uint8)


class Source:
    """One stream source following the driver rules above (used by every Python harness)."""
    __slots__ = ("beats", "idx", "t_free", "payload")

    def __init__(self, beats: list[Beat]):
        self.beats, self.idx, self.t_free, self.payload = beats, 0, 0, 0

    def valid(self, cycle: int, other_count: int) -> int:
        """Whether a beat is offered in ``cycle``; updates ``payload`` when one is."""
        if self.idx >= len(self.beats):
            return 0
        b = self.beats[self.idx]
        if cycle >= self.t_free + b.gap and other_count >= b.after:
            self.payload = b.payload
            return 1
        return 0

    def transferred(self, cycle: int) -> None:
        self.idx += 1
        self.t_free = cycle + 1

    @property
    def done(self) -> bool:
        return self.idx >= len(self.beats)
