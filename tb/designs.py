"""What differs between the designs under lockstep test, declared once per design.

The one lockstep loop (``tb/lockstep.py``) drives each input stream of a :class:`Design` by
the driver rules of ``model/stimulus.py`` (a beat is offered from ``t_free + gap`` once the
stream it depends on has had ``after`` transfers, until it transfers), drives the output
stream's ``ready`` from the seeded ready pattern, and compares every output the
:class:`tb.probespec.ProbeSpec` samples.  A stream without ``ready`` (the module's host port)
transfers in the first cycle it is offered.

Probe convention: ``spec.ctl[i]`` / ``spec.wide_in[i]`` are input stream i's valid and
payload, ``spec.ctl[n_in]`` the output stream's ready, then the readies of the design's side
streams (:class:`SideStream`, e.g. the module's ``sm_res``; ``spec.side_out[i]`` their
payloads).  Model convention (the golden-model
interface ``reset`` / ``step`` / ``state``): ``step(v0, p0, v1, p1, ..., out_ready,
side_ready_0, ...)`` returns
a namedtuple with one field per sampled output, named as the probe's with ``.`` -> ``_``.

No Amaranth here: this module is imported inside the simulator.
"""
from __future__ import annotations

import enum
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass

from model.channel import ChannelModel, ChanOut
from model.macro import MacroModel, MacroOut
from model.module import ModOut, ModuleModel
from spec.isa import ModErr, mod_out_fields, out_fields
from spec.params import MacroErr, res_fields
from spec.dram import DramErr
from tb import dram, probespec


@dataclass(frozen=True)
class InStream:
    """An input stream of a design.

    Attributes
    ----------
    name : str
        Stream name (``wr``, ``req``, ``cmd``, ``host``), the prefix of its probe ports.
    ready : str or None
        Model output that is this stream's ready; None: no ready (a beat is pushed).
    after : str or None
        Stream whose transfers a beat's ``after`` counts (another input or the output).
    """
    name: str
    ready: str | None
    after: str | None = None


@dataclass(frozen=True)
class SideStream:
    """A further output stream of a design (beyond ``Design.output``): its ready is driven
    after the output's in ``ctl`` (and passed to ``step`` after ``out_ready``), its payload
    sampled into the probe's ``obs_side<i>`` and compared in every cycle in which the model's
    ``valid`` is 1.

    Attributes
    ----------
    name : str
        Stream name, the prefix of its probe ports (``sm_res``).
    valid, payload : str
        The model outputs that are its valid and payload (the probe's ``<name>.valid`` is
        compared with ``valid``).
    """
    name: str
    valid: str
    payload: str


def side_seed(seed: int, i: int) -> int:
    """Seed of side stream i's own ready pattern (``sm_ready_p`` given): not a small cycle
    shift of the output's pattern (``ready_at`` hashes cycle * golden + seed)."""
    return (seed ^ (0x5BD1E995 * (i + 1))) & 0xFFFFFFFF


@dataclass(frozen=True)
class Design:
    """One design under lockstep test.

    Attributes
    ----------
    kind : str
        ``macro``, ``channel`` or ``module``.
    inputs : tuple of InStream
        Input streams, in probe and ``step`` argument order.
    output : str
        Output stream: model outputs ``<output>_valid`` and ``<output>_payload``.
    results_of : str or None
        End rule.  A stream name: the run ends ``TAIL`` cycles after the cycle in which every
        beat was sent and one output per beat of that stream was received.  None: ``TAIL``
        cycles after the first cycle in which every beat has been sent (in an earlier cycle),
        the model is ``idle`` and its output register is empty.
    errors : enum.IntEnum
        Decodes the ``err`` output in reports.
    events : tuple of str
        Model outputs logged as (cycle, name, value) whenever non-zero.
    out_type : type
        The model's output namedtuple.
    spec : callable params -> ProbeSpec
    model : callable (params, job) -> golden model
    out_layout : callable params -> (fields, MacroParams)
        The output payload's layout and the macro whose ``y`` results it carries.
    sides : callable params -> tuple of SideStream
        Further output streams (the module's ``sm_res`` with ``softmax``); none by default.
    """
    kind: str
    inputs: tuple[InStream, ...]
    output: str
    results_of: str | None
    errors: type[enum.IntEnum]
    events: tuple[str, ...]
    out_type: type
    spec: Callable
    model: Callable
    out_layout: Callable
    sides: Callable = lambda p: ()


_SM_RES = SideStream("sm_res", "sm_valid", "sm_payload")


ChanLockOut = namedtuple("ChanLockOut", ChanOut._fields + ("perr",), defaults=(0,))
ChanLockOut.__doc__ = """The channel's outputs in lockstep: :class:`ChanOut` then ``perr``
(ChannelParams.post; the model's ``perr`` of the cycle, 0 without the stage)."""


class _PostChannelModel:
    """ChannelModel of a channel with ``post`` whose ``step`` returns :class:`ChanLockOut`
    (its ``perr`` too); everything else is the model's."""

    def __init__(self, p, job):
        self._m = ChannelModel(p, late=job.get("late", 0))

    def __getattr__(self, name):
        return getattr(self._m, name)

    def step(self, *args):
        return ChanLockOut(*self._m.step(*args), self._m.perr)


def _channel_model(p, job):
    """ChannelModel; with ``post`` wrapped so that ``perr`` is an output too."""
    if p.post is not None:
        return _PostChannelModel(p, job)
    return ChannelModel(p, late=job.get("late", 0))


def _module_model(p, job):
    """ModuleModel; ``job["sm_table"]``: a (deliberately wrong) exp table for its unit."""
    return ModuleModel(p, sm_table=job.get("sm_table"))


DESIGNS = {
    "macro": Design(
        "macro", (InStream("wr", "wr_ready", after="res"), InStream("req", "req_ready",
                                                                     after="wr")),
        output="res", results_of="req", errors=MacroErr, events=("err",), out_type=MacroOut,
        spec=lambda p: probespec.MACRO,
        model=lambda p, job: MacroModel(p, late=job.get("late", 0)),
        out_layout=lambda p: (res_fields(p), p)),
    "channel": Design(
        "channel", (InStream("cmd", "cmd_ready"),), output="out", results_of=None,
        # with post: perr sampled too (ChanLockOut extends ChanOut; ChannelModel without it)
        errors=MacroErr, events=("err",), out_type=ChanLockOut,
        spec=lambda p: probespec.channel(p.n_banks, p.post is not None),
        model=_channel_model,
        out_layout=lambda p: (out_fields(p), p.macro)),
    "module": Design(
        # host_ready: the model's host_ready output, constant 1 without ModuleParams.host_ready
        # (a push transfers in the first cycle it is offered, as on a port without ready)
        # with softmax: the sm_res stream (SideStream) and sm_err (an event; 0 without it)
        "module", (InStream("host", "host_ready"),), output="out", results_of=None,
        errors=ModErr, events=("err", "ovf", "sm_err"), out_type=ModOut,
        spec=lambda p: probespec.module(p.n_ch, p.channel.n_banks, p.host_ready, p.softmax),
        model=_module_model,
        out_layout=lambda p: (mod_out_fields(p), p.channel.macro),
        sides=lambda p: (_SM_RES,) if p.softmax else ()),
    # the DRAM-PIM bank (hdl/dram_bank.py) through its lockstep adapter (tb/dram.py)
    "dram_bank": Design(
        "dram_bank", (InStream("cmd", "cmd_ready"),), output="out", results_of=None,
        errors=DramErr, events=("err", "ref_lost"), out_type=dram.DramLockOut,
        spec=dram.probe_spec, model=dram.DramLockstepModel,
        out_layout=lambda p: (dram.out_fields(p), p)),
}
"""Every design the lockstep loop runs, by kind."""
