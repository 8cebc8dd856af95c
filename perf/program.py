"""Compressed host programs for the performance model (perf/sim.py).

A host program is a list of *items*; an item is one host command (:class:`HCmd`, the fields of
``spec.isa.host_fields`` without ``data``) or a repetition (:class:`Rep`).  ``Rep(bodies, n,
set_stride, vp_stride)`` stands for ``n`` iterations; iteration ``i`` runs the items of
``bodies[i % k]`` (k = len(bodies)) with ``(i // k) * set_stride`` added to the ``set`` and
``(i // k) * vp_stride`` to the ``vp`` of every channel command inside (nested Reps included):
a loop over a KV cache whose pages cycle through the banks and advance one set per round is a
few bodies and a count, so a 1M-token decode step is a small tree, not 10^9 words.  Expanded, a program is exactly the
host command stream the RTL and the golden model run (:func:`to_host_words`).

Channel commands may carry their physical ``bank``/``set`` already resolved (the compiler knows
its page table); ``bank = -1`` means "resolve ``vp`` through the page table the MAPs built"
(what the hardware does, and what a program decoded from host words needs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple, Union

from spec.isa import HostOp, ModuleParams, host_encode, host_fields

__all__ = ["HCmd", "Rep", "expand", "n_leaves", "to_host_words", "from_host_words",
           "CH_OPS"]

CH_OPS = (int(HostOp.WR_INP), int(HostOp.WR_W), int(HostOp.MAC), int(HostOp.RD_OUT))
_WR_INP = int(HostOp.WR_INP)
_FIELDS = ("op", "chmask", "rid", "vp", "pp", "row", "g", "o", "acc", "n", "per", "vps", "os",
           "count")


class HCmd(NamedTuple):
    """One host command without data.  ``bank``/``set``: the physical bank and weight set of a
    channel op's page (-1: resolve ``vp`` through the page table)."""
    op: int
    chmask: int = 0
    rid: int = 0
    vp: int = 0
    pp: int = 0
    row: int = 0
    g: int = 0
    o: int = 0
    acc: int = 0
    n: int = 0
    per: int = 0
    vps: int = 0
    os: int = 0
    count: int = 0
    bank: int = -1
    set: int = -1


@dataclass(frozen=True)
class Rep:
    """``n`` iterations; iteration i runs ``bodies[i % len(bodies)]`` (each a tuple of items).
    ``label`` names the loop in reports (e.g. "L0.qk h3")."""
    bodies: tuple
    n: int
    label: str = ""
    set_stride: int = 0
    vp_stride: int = 0

    def __post_init__(self):
        if not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"Rep {self.label!r}: n={self.n!r} must be an int >= 0")
        if not self.bodies or not all(isinstance(b, tuple) for b in self.bodies):
            raise ValueError(f"Rep {self.label!r}: bodies must be a non-empty tuple of tuples")


Item = Union[HCmd, Rep]


def expand(items, set_off: int = 0, vp_off: int = 0) -> Iterator[HCmd]:
    """Every host command of the program, in order (fully unrolled, strides applied)."""
    for it in items:
        if isinstance(it, Rep):
            k = len(it.bodies)
            for i in range(it.n):
                j = i // k
                yield from expand(it.bodies[i % k], set_off + j * it.set_stride,
                                  vp_off + j * it.vp_stride)
        elif (set_off or vp_off) and it.op in CH_OPS:
            yield it._replace(set=it.set + set_off if it.set >= 0 else it.set,
                              vp=it.vp + vp_off if it.op != _WR_INP else it.vp)
        else:
            yield it


def n_leaves(items) -> int:
    """Number of host commands of the expanded program (closed form)."""
    tot = 0
    for it in items:
        if isinstance(it, Rep):
            k = len(it.bodies)
            per = [n_leaves(b) for b in it.bodies]
            full, rest = divmod(it.n, k)
            tot += full * sum(per) + sum(per[:rest])
        else:
            tot += 1
    return tot


def to_host_words(p: ModuleParams, items, data=None) -> list[tuple[int, int]]:
    """The host command words ``[(word, gap=0)]`` of the expanded program (for
    :func:`compiler.attention.pace` / :meth:`model.module.ModuleModel.run` / the RTL).
    ``data(i, cmd)`` gives the data field of command i (default 0: timing does not depend on
    data)."""
    out = []
    for i, c in enumerate(expand(items)):
        f = {k: getattr(c, k) for k in _FIELDS if getattr(c, k)}
        f.pop("op", None)
        if data is not None and c.op in CH_OPS:
            f["data"] = int(data(i, c))
        out.append((host_encode(p, c.op, **f), 0))
    return out


def from_host_words(p: ModuleParams, words) -> list[HCmd]:
    """Decode host command words (ints or (word, gap) pairs) into HCmds (bank = -1: the
    simulator resolves every page through its page table, as the hardware does)."""
    hf = host_fields(p)
    sl = {k: (hf[k].offset, (1 << hf[k].width) - 1) for k in _FIELDS}
    out = []
    for w in words:
        w = int(w[0] if isinstance(w, tuple) else w)
        out.append(HCmd(**{k: (w >> o) & m for k, (o, m) in sl.items()}))
    return out
