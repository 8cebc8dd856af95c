"""Lockstep wrapper around the macro, so cocotb wakes once per cycle and reads few handles.

``lockstep_top`` drives the macro from three packed inputs and registers everything the macro
outputs at each clock edge: after the edge that ends cycle c, ``obs`` and ``obs_res`` hold the
macro's outputs *during* cycle c (computed from its state in c and the inputs of c).  This adds
no behaviour to the macro: it only samples.

Inputs:  ``ctl`` [3] = {res_ready, req_valid, wr_valid} (bit 0 = wr_valid),
         ``wr_payload``, ``req_payload`` (model/spec.py layouts).
Outputs: ``obs`` [7] = {pay_chg, busy, err[2], res_valid, req_ready, wr_ready} (bit 0 = wr_ready),
         where pay_chg = the res payload in cycle c differs from the one in cycle c-1;
         ``obs_res`` = the res payload during cycle c.
"""
from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.macro import DimcMacro
from model.spec import MacroParams, req_fields, res_fields, width, wr_fields

from tb.obs import (CTL_REQ_VALID, CTL_RES_READY, CTL_WR_VALID, OBS_BUSY, OBS_CHG, OBS_ERR,
                    OBS_REQ_READY, OBS_RES_VALID, OBS_WR_READY)


class LockstepProbe(wiring.Component):
    def __init__(self, params: MacroParams, fault: str | None = None):
        self.params, self.fault = params, fault
        super().__init__({
            "ctl": In(3),
            "wr_payload": In(width(wr_fields(params))),
            "req_payload": In(width(req_fields(params))),
            "obs": Out(7),
            "obs_res": Out(width(res_fields(params))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = DimcMacro(self.params, fault=self.fault)
        m.d.comb += [
            dut.wr.valid.eq(self.ctl[CTL_WR_VALID]), dut.req.valid.eq(self.ctl[CTL_REQ_VALID]),
            dut.res.ready.eq(self.ctl[CTL_RES_READY]),
            dut.wr.payload.eq(self.wr_payload), dut.req.payload.eq(self.req_payload),
        ]
        res = Signal.like(self.obs_res)
        m.d.comb += res.eq(dut.res.payload)
        obs = {OBS_WR_READY: dut.wr.ready, OBS_REQ_READY: dut.req.ready,
               OBS_RES_VALID: dut.res.valid, OBS_ERR: dut.err, OBS_BUSY: dut.busy,
               OBS_CHG: res != self.obs_res}
        m.d.sync += [
            self.obs.eq(Cat(*(obs[k] for k in sorted(obs)))),
            self.obs_res.eq(res),
        ]
        return m


def probe_verilog(params: MacroParams, fault: str | None = None) -> str:
    top = LockstepProbe(params, fault)
    return verilog.convert(top, name="lockstep_top", emit_src=False)
