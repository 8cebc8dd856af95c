"""Hierarchical Verilog export (hdl/export.py, hdl/hier.py): one definition per distinct
component, instantiated; port checks; per-module lint; the export entry point and its errors."""
from __future__ import annotations

import json
import re

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cimphony.compat import silence_unused
from hdl import export as X
from hdl import hier
from hdl.channel import PimChannel
from hdl.fifo import RegFifo
from hdl.macro import DimcMacro
from hdl.module import PimModule
from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams
from tb import probespec
from tb.probe import probe_verilog

MP = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2, tree_stages=0)


def mod_params(n_ch, n_banks):
    return ModuleParams(channel=ChannelParams(macro=MP, n_banks=n_banks, n_gbuf=2, q_depth=4),
                        n_ch=n_ch, n_vpages=8, n_req=2, fifo_depth=4, loop_len=4)


def modules(text: str) -> dict[str, str]:
    """{name: text} of every ``module ... endmodule`` definition, asserting none repeats."""
    names = re.findall(r"^module\s+(\w+)\s*\(", text, re.M)
    assert len(names) == len(set(names)), f"repeated definitions: {names}"
    return {mt.group(1): mt.group(0)
            for mt in re.finditer(r"^module\s+(\w+)\s*\(.*?^endmodule\n", text, re.M | re.S)}


def instances(body: str, of: str) -> list[str]:
    return re.findall(rf"^\s*{of}\s+(\w+)\s*\(", body, re.M)


@pytest.fixture(scope="module")
def texts():
    return {cb: X.verilog(PimModule(mod_params(*cb))) for cb in ((2, 2), (3, 2), (2, 3))}


def test_module_defines_each_component_once(texts):
    for (c, b), text in texts.items():
        mods = modules(text)
        assert list(mods) == ["dimc_macro", "pim_channel", "pim_module"]
        assert instances(mods["pim_channel"], "dimc_macro") == [f"bank{i}" for i in range(b)]
        assert instances(mods["pim_module"], "pim_channel") == [f"ch{i}" for i in range(c)]
        assert instances(mods["pim_module"], "dimc_macro") == []


def test_more_channels_or_banks_add_instances_not_copies(texts):
    """A child's definition is byte-identical when its parent gets more of it, and the parent
    grows by far less than the copy a flat export adds (one channel with its macros)."""
    m22, m32, m23 = (modules(texts[k]) for k in ((2, 2), (3, 2), (2, 3)))
    assert m22["dimc_macro"] == m32["dimc_macro"] == m23["dimc_macro"]
    assert m22["pim_channel"] == m32["pim_channel"]
    flat_channel = len(m22["pim_channel"]) + 2 * len(m22["dimc_macro"])
    grow_ch = len(texts[(3, 2)]) - len(texts[(2, 2)])
    assert 0 < grow_ch < flat_channel / 10
    # one more bank: the channel's own per-bank state grows (OBuf, tables), no macro copy
    grow_b = len(m23["pim_channel"]) - len(m22["pim_channel"])
    assert len(texts[(2, 3)]) - len(texts[(2, 2)]) == grow_b + (
        len(m23["pim_module"]) - len(m22["pim_module"]))


def test_channel_and_macro_tops():
    cp = mod_params(2, 3).channel
    ch = modules(X.verilog(PimChannel(cp)))
    assert list(ch) == ["dimc_macro", "pim_channel"]
    assert len(instances(ch["pim_channel"], "dimc_macro")) == 3
    assert list(modules(X.generate(MP))) == ["dimc_macro"]
    assert list(modules(X.verilog(DimcMacro(MP), "my_macro"))) == ["my_macro"]


class _TwoMacros(wiring.Component):
    """Two banks of different configurations (what a mixed bank kind looks like)."""
    verilog_name = "two_macros"

    def __init__(self, p0, p1):
        super().__init__({"busy": Out(2), "go": In(1)})
        self.params = (p0, p1)
        self.a, self.b = DimcMacro(p0), DimcMacro(p1)

    @property
    def children(self):
        return {"a": self.a, "b": self.b}

    def elaborate(self, platform):
        m = Module()
        for name, c in self.children.items():
            hier.place(m, name, c, platform)
        for c in (self.a, self.b):
            m.d.comb += [c.req.valid.eq(self.go), c.res.ready.eq(1)]
        m.d.comb += self.busy.eq(self.a.busy | (self.b.busy << 1))
        return m


def test_two_configurations_get_suffixed_names():
    p1 = MacroParams(n_in=4, n_out=2, w_bits=4, x_bits=4, n_acc=2, tree_stages=1)
    mods = modules(X.verilog(_TwoMacros(MP, p1)))
    assert list(mods) == [f"dimc_macro_{MP.tag}", f"dimc_macro_{p1.tag}", "two_macros"]
    assert instances(mods["two_macros"], f"dimc_macro_{MP.tag}") == ["a"]
    assert instances(mods["two_macros"], f"dimc_macro_{p1.tag}") == ["b"]


def test_port_check_rejects_a_wrong_definition():
    mac = DimcMacro(MP)
    d = X.hierarchy(mac).top
    assert {n for n, _, _ in d.ports} >= {"clk", "rst", "wr__payload", "res__valid", "err"}
    hier.check_ports(mac, d)
    wrong = [(n, k, w + 1 if n == "err" else w) for n, k, w in d.ports]
    with pytest.raises(ValueError, match="err"):
        hier.check_ports(mac, hier.Definition(d.name, tuple(wrong)))
    with pytest.raises(ValueError, match="wr__valid"):
        hier.instance(mac, hier.Definition(d.name, tuple(p for p in d.ports
                                                          if p[0] != "wr__valid")))
    other = silence_unused(DimcMacro(MacroParams(n_in=4, n_out=2, w_bits=4, x_bits=4, n_acc=2)))
    with pytest.raises(ValueError, match="ports differ"):
        hier.check_ports(other, d)


def test_parse_ports_needs_the_module():
    with pytest.raises(ValueError, match="nope"):
        hier.parse_ports(X.generate(MP), "nope")


def test_host_port_is_a_stream_without_ready():
    p = mod_params(2, 2)
    dut = PimModule(p)
    ports = {e["name"]: e for e in X.port_map(dut)["ports"]}
    assert {"host__valid", "host__payload"} <= set(ports) and "host__ready" not in ports
    assert [f["name"] for f in ports["host__payload"]["fields"]][:2] == ["op", "chmask"]
    text = modules(X.verilog(dut))["pim_module"]
    assert re.search(r"^\s*input\s+host__valid;", text, re.M)
    assert "host__ready" not in text


def test_probe_wraps_the_exported_verilog_verbatim():
    p = mod_params(2, 2)
    text = probe_verilog(PimModule(p), probespec.module(p.n_ch, p.channel.n_banks))
    exported = X.verilog(PimModule(p))
    assert text.startswith(exported)
    mods = modules(text)
    assert list(mods) == ["dimc_macro", "pim_channel", "pim_module", "lockstep_top"]
    assert instances(mods["lockstep_top"], "pim_module") == ["dut"]


def test_export_writes_every_top(tmp_path, capsys):
    p = mod_params(2, 2)
    assert X.export(tmp_path, macro=MP, channel=p.channel, module=p)
    printed = capsys.readouterr().out
    for top, n_defs in (("dimc_macro", 1), ("pim_channel", 2), ("pim_module", 3)):
        v = tmp_path / f"{top}.v"
        assert f"{v}: {v.stat().st_size} bytes" in printed
        assert len(modules(v.read_text())) == n_defs
        pm = json.loads((tmp_path / f"{top}.ports.json").read_text())
        assert pm["module"] == top and pm["definitions"][-1] == top
        assert {"clk", "rst"} <= {e["name"] for e in pm["ports"]}
    assert X.export(tmp_path / "one", tops=["pim_channel"], macro=MP, channel=p.channel,
                    module=p)
    assert sorted(f.name for f in (tmp_path / "one").iterdir()) == [
        "pim_channel.ports.json", "pim_channel.v"]


@pytest.mark.parametrize("kw,match", [
    (dict(tops=["pim_bogus"]), "pim_bogus"),
    (dict(tops=[]), r"tops=\[\]"),
    (dict(macro=ChannelParams()), "macro must be a MacroParams"),
    (dict(module=None), "module must be a ModuleParams"),
])
def test_export_bad_arguments(tmp_path, kw, match):
    p = mod_params(1, 1)
    args = {"macro": MP, "channel": p.channel, "module": p, **kw}
    with pytest.raises(ValueError, match=match):
        X.export(tmp_path, **args)
    assert list(tmp_path.iterdir()) == []            # checked before any work


def test_export_out_is_a_file(tmp_path):
    f = tmp_path / "f.v"
    f.write_text("")
    p = mod_params(1, 1)
    with pytest.raises(ValueError, match="f.v"):
        X.export(f, macro=MP, channel=p.channel, module=p)


@pytest.mark.parametrize("bad", [
    lambda: X.design("pim_bogus", macro=MP, channel=None, module=None),
    lambda: DimcMacro(ChannelParams()),
    lambda: PimChannel(MP),
    lambda: PimModule(ChannelParams()),
    lambda: RegFifo("q", 4, 0),
    lambda: X.verilog(DimcMacro(MP), "1bad name"),
])
def test_bad_component_arguments(bad):
    with pytest.raises(ValueError):
        bad()


@pytest.mark.verilator
def test_per_module_lint_catches_errors_in_children(tmp_path):
    p = mod_params(2, 2)
    text = X.verilog(PimModule(p))
    good = tmp_path / "pim_module.v"
    good.write_text(text)
    r = X.lint(good)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [u for u in re.findall(r"// lint unit (\w+)", r.stdout)] == [
        "dimc_macro", "pim_channel", "pim_module"]
    assert X.lint(good, per_module=False).returncode == 0
    # an undriven wire deep in the macro, a port the channel connects that does not exist
    mac_end = text.index("endmodule", text.index("module dimc_macro"))
    bad1 = text[:mac_end] + "  wire never_driven;\n  wire [1:0] sink = {never_driven, busy};\n" \
        + text[mac_end:]
    bad2 = re.sub(r"(^\s*dimc_macro bank0 \(\n\s*\.)busy\(", r"\1busy_x(", text, count=1,
                  flags=re.M)
    assert bad2 != text
    for name, bad, finding in (("dimc_macro", bad1, "never_driven"),
                               ("pim_channel", bad2, "busy_x")):
        f = tmp_path / "bad" / name / "pim_module.v"
        f.parent.mkdir(parents=True)
        f.write_text(bad)
        r = X.lint(f)
        assert r.returncode != 0 and finding in r.stdout + r.stderr
        assert X.lint(f, per_module=False).returncode != 0      # the whole file agrees


@pytest.mark.parametrize("bad", ["4by4", "0x4", "17x1", "1x17", "x"])
def test_bench_hier_sizes_are_checked_before_work(bad, capsys):
    from bench import hier as H
    with pytest.raises(SystemExit) as e:
        H.main(["--sizes", bad, "--out", "/nonexistent/never/written"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--sizes" in err and repr(bad) in err
    assert H.size("2x3") == (2, 3)
    assert H.default_sizes() == [(4, 4), (16, 16)] and H.size("16x16") == (16, 16)
