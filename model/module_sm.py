"""The module golden model's softmax hub (``ModuleParams.softmax``; docs/module.md, "Softmax
unit"): the unit's cycle model (:class:`model.softmax.SoftmaxModel`), the per-channel
result-destination FIFOs, the routing of channel results into the unit, and the translation
of SM_CFG / SM_ABORT into unit commands.  Written from the contract only, not from the HDL;
used by :class:`model.module.ModuleModel`.
"""
from __future__ import annotations

from collections import deque

from model.softmax import SoftmaxModel
from spec.isa import HostOp, ModuleParams, mod_out_fields
from spec.softmax import SH_BITS, SmOp, cfg_encode, cmd_fields, in_fields, prob_fields

__all__ = ["SmHub"]

_RD_OUT, _RD_SM, _WR_PROB = int(HostOp.RD_OUT), int(HostOp.RD_SM), int(HostOp.WR_PROB)
_SM_CFG, _SM_ABORT = int(HostOp.SM_CFG), int(HostOp.SM_ABORT)


class SmHub:
    """Softmax unit + destination FIFOs of module ``p`` (``p.softmax``).  ``table``: a
    (deliberately wrong) exp table for the unit (:class:`model.softmax.SmArith`)."""

    def __init__(self, p: ModuleParams, table=None):
        self.p = p
        sp = self.sp = p.sm_params
        self.unit = SoftmaxModel(sp, table=table)
        self._C, self._D = p.n_ch, p.sm_tag_depth
        self._mb = sp.mul_bits
        self._abort = int(SmOp.ABORT)          # cmd_fields: op at bit 0
        self._in_chan = in_fields(sp)["chan"].offset
        self._y_mask = (1 << mod_out_fields(p)["y"].width) - 1
        self._q_mask = (1 << prob_fields(sp)["q"].width) - 1
        self._masks = {((1 << P) - 1) << c0: (c0, P.bit_length() - 1)
                       for P in (1, 2, 4, 8) if P <= sp.n_part
                       for c0 in range(self._C - P + 1)}
        assert cmd_fields(sp)["op"].offset == 0
        self.reset(power_up=True)

    def reset(self, power_up: bool = False) -> None:
        self.unit.reset(power_up=power_up)
        self.tags = [deque() for _ in range(self._C)]    # per channel: 1 = to the unit

    @property
    def idle(self) -> bool:
        return bool(self.unit.idle)

    # --- dispatcher ---------------------------------------------------------------------
    def cmd_word(self, f: dict, tok: list) -> int:
        """The unit command of a checked SM_CFG / SM_ABORT ``f``."""
        if f["op"] == _SM_ABORT:
            return self._abort
        c0, plog2 = self._masks[f["chmask"]]
        d, mb = f["data"], self._mb
        return cfg_encode(self.sp, d & ((1 << mb) - 1), (d >> mb) & ((1 << SH_BITS) - 1),
                          plog2, c0, tok[f["rid"]], (d >> (mb + SH_BITS)) & 1)

    def cmd_ready(self, word: int) -> bool:
        return bool(self.unit.peek_cmd_ready(word))

    def may_dispatch(self, op: int, chmask: int) -> bool:
        """Extra dispatch condition of a checked channel op: RD_OUT / RD_SM need room in every
        masked channel's destination FIFO; WR_PROB needs a tile in the unit."""
        if op in (_RD_OUT, _RD_SM):
            return all(len(self.tags[c]) < self._D for c in range(self._C) if chmask >> c & 1)
        if op == _WR_PROB:
            return bool(self.unit._prob_valid)
        return True

    def tile_data(self) -> int:
        """The tile ``q`` of the unit's prob register (an input tile, 8-bit lanes)."""
        return self.unit._prob_payload & self._q_mask

    # --- routing ----------------------------------------------------------------------
    def dest(self, c: int) -> int:
        """Destination of channel c's next result beat (1: the unit); 0 if none pending."""
        t = self.tags[c]
        return t[0] if t else 0

    def in_source(self, chans) -> int:
        """The lowest channel whose out beat is valid and goes to the unit, else -1."""
        for c in range(self._C):
            if self.tags[c] and self.tags[c][0] and chans[c].peek_out_valid():
                return c
        return -1

    def step(self, cmd_valid, cmd_word, src, ch_out, prob_ready, res_ready):
        """One cycle of the unit: ``src`` = :meth:`in_source` (-1: no beat), ``ch_out`` the
        channels' outputs of this cycle.  Returns the unit's :class:`model.softmax.SmOut`."""
        if src >= 0:
            iv, ip = 1, (ch_out[src].out_payload & self._y_mask) | src << self._in_chan
        else:
            iv, ip = 0, 0
        return self.unit.step(int(cmd_valid), cmd_word if cmd_valid else 0, iv, ip,
                              int(prob_ready), int(res_ready))

    def edge(self, pushes: list, pops: list) -> None:
        """Destination FIFOs at the clock edge: ``pops`` channels whose beat transferred,
        ``pushes`` (channel, dest) of the RD_OUT / RD_SM dispatched in this cycle."""
        for c in pops:
            self.tags[c].popleft()
        for c, d in pushes:
            self.tags[c].append(d)
