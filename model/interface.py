"""The interface every cycle-exact golden model declares, and the one state comparison.

A golden model (:class:`model.macro.MacroModel`, :class:`model.channel.ChannelModel`,
:class:`model.module.ModuleModel`) is stepped once per clock cycle, in lockstep with the RTL
or alone:

* ``reset(power_up=False)``: the synchronous reset ``rst`` (``power_up``: a fresh device,
  also clearing the state ``rst`` keeps, such as the weight SRAM);
* ``step(*inputs)``: the outputs of the current cycle (a namedtuple, computed from the
  registers at the start of the cycle and the inputs), then the clock edge ending it;
* ``state()``: a snapshot (copies) of all architectural state as nested dicts, lists,
  tuples, numpy arrays and ints, compared with :func:`state_diff`.

The models also declare ``inputs``: the names and widths (bits) of ``step``'s arguments in
order, which :func:`check_inputs` enforces.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from spec.params import check_word

__all__ = ["GoldenModel", "state_diff", "check_inputs"]


@runtime_checkable
class GoldenModel(Protocol):
    """A cycle-exact model: ``reset``, ``step`` (one cycle), ``state`` (a snapshot)."""

    def reset(self, power_up: bool = False) -> None:
        """``rst`` at the end of the current cycle; ``power_up`` also clears kept state."""

    def step(self, *inputs: Any, **kw: Any) -> tuple:
        """This cycle's outputs (a namedtuple) for these inputs, then the clock edge ending
        the cycle."""

    def state(self) -> dict:
        """All architectural state (copies), for :func:`state_diff`."""


def check_inputs(inputs: tuple[tuple[str, int], ...], values: tuple) -> tuple[int, ...]:
    """``values`` as Python ints, each an unsigned int of the width of its entry in
    ``inputs`` = ((name, bits), ...); ValueError naming the first bad one.  The models call
    it only when their inline fast check fails, so a bad value is reported before any
    register changes."""
    return tuple(check_word(n, v, w) for (n, w), v in zip(inputs, values, strict=True))


def _arr_diff(a, b, path: str) -> list[str]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return [f"{path}: shape {a.shape} != {b.shape}"]
    ne = np.argwhere(a != b)
    if not len(ne):
        return []
    i = tuple(int(k) for k in ne[0])
    more = f" (and {len(ne) - 1} more elements)" if len(ne) > 1 else ""
    return [f"{path}{''.join(f'[{k}]' for k in i)}: {a[i].item()!r} != {b[i].item()!r}{more}"]


def state_diff(a, b, *, ignore=("cycle",), path: str = "") -> list[str]:
    """Differences between two state snapshots (recursive), one readable line each, e.g.
    ``obuf[2][5]: 0 != 17`` or ``macros[1].W[0][3][2]: 5 != -1 (and 3 more elements)``.

    Dicts are compared key by key (a key on one side only is reported as missing), lists and
    tuples element by element (a length difference is reported once), numpy arrays exactly
    (first differing element and the count), everything else with ``==``.  Keys named in
    ``ignore`` are skipped at every level (e.g. "W" skips every macro's weight SRAM, "gbuf"
    every channel's GBuf data: neither is cleared by ``rst``).  ``path`` prefixes every line.
    """
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return _arr_diff(a, b, path or "state")
    da, db = isinstance(a, dict), isinstance(b, dict)
    la, lb = isinstance(a, (list, tuple)), isinstance(b, (list, tuple))
    if (da and db) or (la and lb):
        try:
            if a == b:                      # fast path (C speed); arrays inside raise
                return []
        except (ValueError, TypeError):
            pass
    if da and db:
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            if k in ignore:
                continue
            p = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out.append(f"{p}: missing on the {'left' if k not in a else 'right'}")
            else:
                out += state_diff(a[k], b[k], ignore=ignore, path=p)
        return out
    if la and lb:
        if len(a) != len(b):
            return [f"{path or 'state'}: length {len(a)} != {len(b)}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += state_diff(x, y, ignore=ignore, path=f"{path}[{i}]")
        return out
    if da or db or la or lb or a != b:
        return [f"{path or 'state'}: {a!r} != {b!r}"]
    return []
