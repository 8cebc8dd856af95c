"""Run trace of the macro, produced identically by the golden model (``MacroModel.run``) and the
Verilator C++ harness (``tb/harness.cpp``, text format below), so two runs compare with ``==``.

Events are ``(cycle, kind, value)`` in cycle order, and within one cycle in the order
wr, req, res, err:

* ``wr`` / ``req``: a beat transferred in ``cycle`` (value 0);
* ``res``: a result beat transferred in ``cycle`` (value = packed payload, spec.params.res_fields);
* ``err``: ``err`` output was nonzero in ``cycle`` (value = the code).

``cycles`` is the total number of cycles run (end rule of model/stimulus.py:
the cycle in which all beats were sent and ``len(req)`` results received, + TAIL + 1).

Text format (the harness's)::

    cimphony-trace 1
    <cycle> wr 0 | <cycle> req 0 | <cycle> res HEX | <cycle> err CODE
    end TOTAL_CYCLES STATUS          (STATUS = ok | timeout)
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Trace", "KINDS"]

KINDS = ("wr", "req", "res", "err")


@dataclass
class Trace:
    events: list[tuple[int, str, int]] = field(default_factory=list)
    cycles: int = 0
    status: str = "ok"

    # --- views --------------------------------------------------------------------------
    def of(self, kind: str) -> list[tuple[int, int]]:
        """``(cycle, value)`` of every event of ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"Trace.of: kind={kind!r} not in {KINDS}")
        return [(c, v) for c, k, v in self.events if k == kind]

    def results(self) -> list[int]:
        """Packed payloads of the result beats, in order."""
        return [v for _, k, v in self.events if k == "res"]

    def dumps(self) -> str:
        lines = ["cimphony-trace 1"]
        for c, k, v in self.events:
            lines.append(f"{c} {k} {v:x}" if k == "res" else f"{c} {k} {v}")
        lines.append(f"end {self.cycles} {self.status}")
        return "\n".join(lines) + "\n"

    @classmethod
    def loads(cls, text: str) -> "Trace":
        lines = text.splitlines()
        if not lines or lines[0].strip() != "cimphony-trace 1":
            raise ValueError("Trace.loads: missing 'cimphony-trace 1' header")
        t = cls()
        ended = False
        for n, line in enumerate(lines[1:], start=2):
            parts = line.split()
            if not parts:
                continue
            if ended:
                raise ValueError(f"Trace.loads: line {n} after 'end': {line!r}")
            if parts[0] == "end":
                if len(parts) != 3:
                    raise ValueError(f"Trace.loads: bad end line {n}: {line!r}")
                t.cycles, t.status, ended = int(parts[1]), parts[2], True
                continue
            if len(parts) != 3 or parts[1] not in KINDS:
                raise ValueError(f"Trace.loads: bad event line {n}: {line!r}")
            c, k = int(parts[0]), parts[1]
            t.events.append((c, k, int(parts[2], 16) if k == "res" else int(parts[2])))
        if not ended:
            raise ValueError("Trace.loads: missing 'end' line (truncated trace?)")
        return t

    @classmethod
    def load(cls, path) -> "Trace":
        with open(path) as f:
            return cls.loads(f.read())
