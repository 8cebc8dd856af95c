"""The testbench's build cache (tb/cache.py) and mismatch report (tb/mismatch.py), with a fake
build step: when the cache rebuilds, reuses, or only regenerates the Verilog."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from spec.params import MacroParams, pack, pack_vec, res_fields
from tb import cache
from tb.mismatch import Mismatch, describe, payload_detail, reproduce_command


@dataclass(frozen=True)
class _T:
    name: str


class _Fake:
    """A build step that records its calls and writes the product."""

    def __init__(self, text="module top; endmodule\n", delay=0.0):
        self.text, self.delay, self.builds, self.generated = text, delay, [], 0

    def verilog(self):
        self.generated += 1
        return self.text

    def build(self, bdir, src):
        time.sleep(self.delay)
        self.builds.append(src)
        (bdir / "top.v").write_text(src)
        (bdir / "exe").write_text("built")

    def __call__(self, bdir, target, extra=("-O3",)):
        return cache.cached_build(bdir, target=target, verilog=self.verilog, extra=list(extra),
                                  build=self.build, product="exe")


def test_builds_once_then_reuses_without_generating(tmp_path):
    f, bdir = _Fake(), tmp_path / "b"
    assert f(bdir, _T("a")) == bdir and (bdir / "exe").exists()
    assert (len(f.builds), f.generated) == (1, 1)
    f(bdir, _T("a"))
    assert (len(f.builds), f.generated) == (1, 1)        # quick key: no Verilog generated
    assert cache.build_seconds(bdir) is not None


def test_same_verilog_under_a_new_quick_key_is_reused(tmp_path):
    f, bdir = _Fake(), tmp_path / "b"
    f(bdir, _T("a"))
    f(bdir, _T("renamed"))                               # the quick key differs ...
    assert (len(f.builds), f.generated) == (1, 2)        # ... the Verilog does not
    f(bdir, _T("renamed"))
    assert (len(f.builds), f.generated) == (1, 2)        # the new quick key was stored


def test_changed_verilog_or_flags_rebuild(tmp_path):
    f, bdir = _Fake(), tmp_path / "b"
    f(bdir, _T("a"))
    f.text = "module top; wire w; endmodule\n"
    f(bdir, _T("b"))
    assert f.builds[-1] == f.text and len(f.builds) == 2
    f(bdir, _T("b"), extra=("-O2",))
    assert len(f.builds) == 3


def test_missing_product_is_rebuilt_and_a_failed_build_raises(tmp_path):
    f, bdir = _Fake(), tmp_path / "b"
    f(bdir, _T("a"))
    (bdir / "exe").unlink()
    f(bdir, _T("a"))
    assert len(f.builds) == 2

    def no_product(bdir, src):
        pass
    with pytest.raises(RuntimeError, match="produced no exe"):
        cache.cached_build(tmp_path / "c", target=_T("x"), verilog=f.verilog, extra=[],
                           build=no_product, product="exe")


def test_concurrent_builders_build_once(tmp_path):
    f, bdir = _Fake(delay=0.3), tmp_path / "b"
    threads = [threading.Thread(target=f, args=(bdir, _T("a"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(f.builds) == 1


def test_mismatch_report_is_complete():
    m = Mismatch(17, "res.payload", 0xAB, 0xAC, seed=5, in_flight="wr 3/4 sent",
                 detail="1 columns differ", waves="/w/dump.fst",
                 reproduce="SEED=5 python -m pytest 'x.py::t'")
    text = str(m)
    for part in ("first mismatch at cycle 17: res.payload expected 0xab actual 0xac",
                 "detail: 1 columns differ", "in flight: wr 3/4 sent", "stimulus seed: 5",
                 "waveform: /w/dump.fst", "reproduce: SEED=5 python -m pytest 'x.py::t'"):
        assert part in text, text
    assert Mismatch.from_dict(m.to_dict()) == m
    assert describe(None) == "no mismatch"
    assert "waveform: /x.vcd" in describe(dict(m.to_dict(), waves=None), waves="/x.vcd")
    assert "expected <none> actual 3" in str(Mismatch(2, "err", None, 3))


def test_reproduce_command_quotes_the_node_id():
    cmd = reproduce_command("tests/rtl/test_rtl.py::test_x[a b]", 12, waves=True)
    assert cmd.startswith("WAVES=1 SEED=12 ") and cmd.endswith(
        " -m pytest 'tests/rtl/test_rtl.py::test_x[a b]'"), cmd
    assert "SEED" not in reproduce_command("t.py::t")


def test_payload_detail_names_the_differing_columns_and_fields():
    p = MacroParams(n_in=16, n_out=4, w_bits=4, x_bits=4)
    f = res_fields(p)
    e = pack(f, y=pack_vec([1, -2, 3, 4], p.acc_width), dst=1)
    a = pack(f, y=pack_vec([1, -2, -3, 4], p.acc_width), dst=0)
    assert payload_detail(f, p, e, a) == "dst expected 1 actual 0; 1 columns differ: y[2] 3 vs -3"
    assert payload_detail(f, p, e, e) == "0 columns differ"
