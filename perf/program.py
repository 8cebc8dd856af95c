"""Compressed host programs for the performance model (perf/sim.py).

A host program is a list of *items*; an item is one host command (:class:`HCmd`, the fields of
``spec.isa.host_fields`` without ``data``) or a repetition (:class:`Rep`).  ``Rep(bodies, n,
set_stride, vp_stride)`` stands for ``n`` iterations; iteration ``i`` runs the items of
``bodies[i % k]`` (k = len(bodies)) with ``(i // k) * set_stride`` added to the ``set`` and
``(i // k) * vp_stride`` to the ``vp`` of every channel command inside (nested Reps included):
a loop over a KV cache whose pages cycle through the banks and advance one set per round is a
few bodies and a count, so a 1M-token decode step is a small tree, not 10^9 words.  Expanded,
a program is exactly the host command stream the RTL and the golden model run
(:func:`to_host_words`).

Channel commands may carry their physical ``bank``/``set`` already resolved (the compiler knows
its page table); ``bank = -1`` means "resolve ``vp`` through the page table the MAPs built"
(what the hardware does, and what a program decoded from host words needs).  ``MAC_AB``
(all-bank MAC, docs/module.md) names the stripe ``vp .. vp + n_banks - 1``; its resolved
``bank`` is 0 and ``set`` the stripe's set.

:data:`WAIT` is a host-side item, not a host command: the host pushes nothing after it until
every result beat of the RD_OUTs it pushed before has left the module (a host whose result
reads block, as CENT's DMA blocks on ``RD_MAC``: aim_simulator ``src/base/request.h``,
``AiM_DMA_blocking``).  :func:`to_host_words` drops it; :func:`perf.golden.pace_waits` and
the simulator honour it.  It counts the beats of the RD_OUTs the host pushed: reads replayed by
a LOOP are not pushes, so a WAIT does not wait for them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple, Union

from spec.isa import HostOp, ModuleParams, host_encode, host_fields

__all__ = ["HCmd", "Rep", "expand", "shifted", "n_leaves", "to_host_words", "host_word",
           "from_host_words", "check_items", "CH_OPS", "MAC_AB", "WAIT", "n_waits"]

#: host opcode of the all-bank MAC (spec.isa.HostOp.MAC_AB, valid with channel.all_bank)
MAC_AB = int(HostOp.MAC_AB)
#: the host-side wait for every pushed result (not a host command: beyond the 4-bit opcode)
WAIT = 16
CH_OPS = (int(HostOp.WR_INP), int(HostOp.WR_W), int(HostOp.MAC), int(HostOp.RD_OUT), MAC_AB)
_WR_INP = int(HostOp.WR_INP)
_FIELDS = ("op", "chmask", "rid", "vp", "pp", "row", "g", "o", "acc", "n", "per", "vps", "os",
           "count", "multi")


class HCmd(NamedTuple):
    """One host command without data.  ``bank``/``set``: the physical bank and weight set of a
    channel op's page (-1: resolve ``vp`` through the page table).  ``multi`` = 1: a multicast
    WR_INP (a module with ``wide_inp`` K > 1): one host beat carrying one tile per masked
    channel (at most K of them)."""
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
    multi: int = 0


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
        if not isinstance(self.bodies, tuple) or not self.bodies \
                or not all(isinstance(b, tuple) for b in self.bodies):
            raise ValueError(f"Rep {self.label!r}: bodies must be a non-empty tuple of tuples")
        for b in self.bodies:
            for it in b:
                if not isinstance(it, (HCmd, Rep)):
                    raise ValueError(f"Rep {self.label!r}: body item {it!r:.80} is not an "
                                     "HCmd or a Rep")


Item = Union[HCmd, Rep]


def check_items(fn: str, items) -> list:
    """``items`` as a list if it is a list or tuple of HCmds and Reps (Rep bodies are checked
    when built); ValueError naming ``fn`` and the bad item otherwise."""
    if isinstance(items, (HCmd, Rep)) or not isinstance(items, (list, tuple)):
        raise ValueError(f"{fn}: items={items!r:.80} must be a list of HCmds and Reps (host "
                         "words: perf.program.from_host_words)")
    for i, it in enumerate(items):
        if not isinstance(it, (HCmd, Rep)):
            raise ValueError(f"{fn}: items[{i}]={it!r:.80} is not an HCmd or a Rep")
    return list(items)


def shifted(it: HCmd, set_off: int, vp_off: int) -> HCmd:
    """``it`` inside a Rep iteration whose strides add up to ``set_off`` / ``vp_off``: a
    channel command's resolved ``set`` and its ``vp`` (not a WR_INP's) moved by them."""
    if (set_off or vp_off) and it.op in CH_OPS:
        return it._replace(set=it.set + set_off if it.set >= 0 else it.set,
                           vp=it.vp + vp_off if it.op != _WR_INP else it.vp)
    return it


def expand(items, set_off: int = 0, vp_off: int = 0) -> Iterator[HCmd]:
    """Every host command of the program, in order (fully unrolled, strides applied)."""
    for it in items:
        if isinstance(it, Rep):
            k = len(it.bodies)
            for i in range(it.n):
                j = i // k
                yield from expand(it.bodies[i % k], set_off + j * it.set_stride,
                                  vp_off + j * it.vp_stride)
        else:
            yield shifted(it, set_off, vp_off)


def _count(items, pred) -> int:
    tot = 0
    for it in items:
        if isinstance(it, Rep):
            k = len(it.bodies)
            per = [_count(b, pred) for b in it.bodies]
            full, rest = divmod(it.n, k)
            tot += full * sum(per) + sum(per[:rest])
        elif pred(it):
            tot += 1
    return tot


def n_leaves(items) -> int:
    """Number of host commands of the expanded program (closed form; :data:`WAIT` items are
    not host commands)."""
    return _count(items, lambda c: c.op != WAIT)


def n_waits(items) -> int:
    """Number of :data:`WAIT` items of the expanded program (closed form)."""
    return _count(items, lambda c: c.op == WAIT)


def to_host_words(p: ModuleParams, items, data=None) -> list[tuple[int, int]]:
    """The host command words ``[(word, gap=0)]`` of the expanded program (for
    :func:`compiler.host.pace` / :meth:`model.module.ModuleModel.run` / the RTL).
    ``data(i, cmd)`` gives the data field of command i (default 0: timing does not depend on
    data).  ValueError naming a bad argument."""
    if not isinstance(p, ModuleParams):
        raise ValueError(f"to_host_words: p={p!r} must be a ModuleParams")
    check_items("to_host_words", items)
    return [(host_word(p, c, data, i), 0)
            for i, c in enumerate(x for x in expand(items) if x.op != WAIT)]


def host_word(p: ModuleParams, c: HCmd, data=None, i: int = 0) -> int:
    """The host command word of ``c`` on module ``p``; ``data(i, c)`` gives a channel
    command's data field (default 0)."""
    f = {k: getattr(c, k) for k in _FIELDS[1:] if getattr(c, k)}
    if data is not None and c.op in CH_OPS:
        f["data"] = int(data(i, c))
    return host_encode(p, c.op, **f)


def from_host_words(p: ModuleParams, words) -> list[HCmd]:
    """Decode host command words (ints or (word, gap) pairs) into HCmds (bank = -1: the
    simulator resolves every page through its page table, as the hardware does)."""
    if not isinstance(p, ModuleParams):
        raise ValueError(f"from_host_words: p={p!r} must be a ModuleParams")
    if isinstance(words, (int, str, bytes)) or not hasattr(words, "__iter__"):
        raise ValueError(f"from_host_words: words={words!r:.80} must be a list of host words")
    hf = host_fields(p)
    sl = {k: (hf[k].offset, (1 << hf[k].width) - 1) for k in _FIELDS if k in hf}
    out = []
    for w in words:
        w = int(w[0] if isinstance(w, tuple) else w)
        out.append(HCmd(**{k: (w >> o) & m for k, (o, m) in sl.items()}))
    return out
