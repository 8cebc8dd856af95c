"""verif/xcheck.py: 4-state runs on Icarus flag x/z outputs, and the macro has none."""
from __future__ import annotations

import re

import pytest

from hdl.macro import DimcMacro
from spec.params import MacroParams
from verif import xcheck as X

try:
    X.iverilog()
    MISSING = None
except X.ToolMissing as e:
    MISSING = str(e)

need_icarus = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
P = MacroParams(n_in=4, n_out=2, w_bits=4, x_bits=4, n_acc=2, tree_stages=1)

# `u` is never assigned (x forever), `z` is driven by nothing but a z constant, `ok` is clean
XGEN_V = """
module xgen(input clk, input rst, input a, output reg y, output z, output reg ok);
  reg u;
  always @(posedge clk) begin
    if (rst) begin y <= 1'b0; ok <= 1'b0; end
    else begin y <= a & u; ok <= a; end
  end
  assign z = 1'bz;
endmodule
"""


@need_icarus
def test_x_producing_module_is_flagged(tmp_path):
    r = X.run_xcheck(XGEN_V, "xgen", [("a", 1)], [("y", 1), ("z", 1), ("ok", 1)], tmp_path,
                     cycles=40, resets=(20,))
    assert not r["ok"]
    assert set(r["x_outputs"]) == {"y", "z"}, r["x_outputs"]


@need_icarus
def test_macro_has_no_x_after_reset(tmp_path):
    r = X.check_component(DimcMacro(P), tmp_path / "init", cycles=200)
    assert r["ok"], r["x_outputs"]
    r = X.check_component(DimcMacro(P), tmp_path / "noinit", init=False, cycles=200,
                          preload=X.macro_preload(P))
    assert r["ok"], r["x_outputs"]


@need_icarus
def test_unwritten_sram_reaches_only_the_result(tmp_path):
    """No initial values and no preload: the first result reads unwritten weight rows; x
    shows on res.payload (a documented read of unwritten SRAM) and nowhere else."""
    r = X.check_component(DimcMacro(P), tmp_path, init=False, cycles=200)
    assert set(r["x_outputs"]) == {"res__payload"}, r["x_outputs"]


def test_strip_init_and_bad_arguments(tmp_path):
    text = ("  reg [3:0] a = 4'h0;\n  reg \\b$1 = 1'h0;\n"
            "  reg \\$auto$verilog_backend.cc:1:dump_module$1  = 0;\n")
    out = X.strip_init(text)
    assert "reg [3:0] a;" in out and "reg \\b$1;" in out and "dump_module$1  = 0;" in out
    with pytest.raises(ValueError, match="cycles=1"):
        X.run_xcheck("", "t", [], [], tmp_path, cycles=1)
    ins, outs = X.ports_of(DimcMacro(P))
    assert ("wr__valid", 1) in ins and ("res__ready", 1) in ins
    assert ("res__valid", 1) in outs and ("req__ready", 1) in outs


def test_noinit_strips_ram_contents_but_keeps_roms_and_preload_is_taken():
    """strip_init removes the initial contents of written memories (the DRAM cell array, the
    read FIFO), not of a ROM; channel_preload's cycles are the ones the channel takes."""
    from hdl.channel import PimChannel
    from hdl.module import PimModule
    from model.channel import ChannelModel
    p = X.dram_channel_params()
    text, _ = X.component_verilog(PimChannel(p), init=True)
    assert {m.strip() for m in X.written_memories(text)} >= {"array", "rd_fifo"}
    bare = X.strip_init(text)
    assert "array[0] =" in text and "array[0] =" not in bare
    sm, _ = X.component_verilog(PimModule(X.softmax_module_params()), init=False)
    rom = [ln for ln in sm.splitlines() if re.match(r"\s*\S+\[0\] = ", ln)]
    assert rom, "the softmax unit's exp table keeps its contents"
    pre = X.channel_preload(p)
    model = ChannelModel(p)
    model.reset()
    taken = sum(model.step(c["cmd__valid"], c["cmd__payload"], 1).cmd_ready and c["cmd__valid"]
                for c in pre)
    m = p.macro
    assert taken == p.n_gbuf + p.n_banks * m.n_sets * 4 + p.n_banks * m.n_acc
    assert model.peek_idle()
