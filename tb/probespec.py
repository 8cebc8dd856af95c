"""What a lockstep wrapper drives and samples (no Amaranth here: imported inside the simulator).

A :class:`ProbeSpec` names the DUT's 1-bit inputs packed into the wrapper's ``ctl`` port, its
wide inputs (``in0``, ``in1``, ...), its narrow outputs packed into ``obs`` (in order, LSB
first, followed by one ``chg`` bit) and the one wide output sampled into ``obs_out``.
``side_out``: the payloads of further output streams (the module's ``sm_res``), each sampled
into its own ``obs_side<i>`` (no change bit: the loop reads one in the cycles in which the
model says its stream is valid); their readies follow the main output's ready in ``ctl``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeSpec:
    ctl: tuple[str, ...]                 # 1-bit DUT inputs, e.g. "wr.valid"
    wide_in: tuple[str, ...]             # wide DUT inputs, e.g. "wr.payload"
    obs: tuple[tuple[str, int], ...]     # (DUT output, width), packed LSB first
    wide_out: str                        # the wide DUT output sampled into obs_out
    side_out: tuple[str, ...] = ()       # further wide outputs, sampled into obs_side<i>

    def ctl_bit(self, name: str) -> int:
        return self.ctl.index(name)

    def obs_offset(self, name: str) -> int:
        off = 0
        for n, w in self.obs:
            if n == name:
                return off
            off += w
        raise KeyError(name)

    @property
    def obs_width(self) -> int:
        """Packed narrow outputs, without the change bit."""
        return sum(w for _, w in self.obs)

    @property
    def chg_bit(self) -> int:
        """Set in the sample of cycle c when the wide output differs from cycle c-1."""
        return self.obs_width


MACRO = ProbeSpec(ctl=("wr.valid", "req.valid", "res.ready"),
                  wide_in=("wr.payload", "req.payload"),
                  obs=(("wr.ready", 1), ("req.ready", 1), ("res.valid", 1), ("err", 2),
                       ("busy", 1)),
                  wide_out="res.payload")


def channel(n_banks: int, post: bool = False) -> ProbeSpec:
    """The channel's probe; with ``post`` (ChannelParams.post) its 3-bit ``perr`` output is
    sampled too.  Without it: the probe as before."""
    return ProbeSpec(ctl=("cmd.valid", "out.ready"), wide_in=("cmd.payload",),
                     obs=(("cmd.ready", 1), ("out.valid", 1), ("idle", 1), ("err", 2),
                          ("busy", n_banks), *((("perr", 3),) if post else ())),
                     wide_out="out.payload")


def module(n_ch: int, n_banks: int, host_ready: bool = False,
           softmax: bool = False) -> ProbeSpec:
    """The module's probe; with ``host_ready`` the port's ``host.ready`` is sampled too; with
    ``softmax`` the ``sm_res`` stream (its ready driven after ``out.ready``, its valid and
    ``sm_err`` sampled, its payload in ``obs_side0``).  Without either: the probe as before."""
    sm = softmax
    return ProbeSpec(ctl=("host.valid", "out.ready", *(("sm_res.ready",) if sm else ())),
                     wide_in=("host.payload",),
                     obs=(("out.valid", 1), ("err", 3), ("ovf", 1), ("idle", 1),
                          ("err_count", 16), ("busy", n_ch * n_banks),
                          *((("host.ready", 1),) if host_ready else ()),
                          *((("sm_res.valid", 1), ("sm_err", 3)) if sm else ())),
                     wide_out="out.payload",
                     side_out=("sm_res.payload",) if sm else ())


def read(handle, width: int) -> int:
    """Value of a wrapper output through its raw GPI handle (32-bit fast path)."""
    if width <= 32:
        return handle.get_signal_val_long()
    return int(handle.get_signal_val_binstr(), 2)
