"""The WaveDrom timing diagrams (``docs/wavedrom/*.json``) against the golden models, and
``cimphony.docs`` (checking, reading, rendering).

A diagram's ``"cimphony"`` key names its level (macro, channel, module), its parameters and what
its payload labels mean.  Its input lanes are the stimulus (a lane it does not draw is 0, or 1
for a ``ready``); the golden model of its level is stepped once per cycle with them, and every
output lane it draws must equal the model's output in every cycle.  Its edges are timing claims:
each label of the form ``<claim> = N`` / ``<claim> +N`` must span N cycles, join the events the
claim names (a request accepted -> its result valid, a push -> its error, ...) and N must equal
the contract's formula for the diagram's parameters.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import re
import sys
from pathlib import Path

import pytest

from cimphony import docs
from cimphony.compat import silence_unused
from hdl.channel import PimChannel
from hdl.macro import DimcMacro
from hdl.module import PimModule
from model.channel import ChannelModel
from model.macro import MacroModel
from model.module import ModuleModel
from spec.isa import (HOST_WIDTHS, ChannelParams, HostOp, ModErr, ModuleParams, Op, cmd_fields,
                      host_fields, mod_out_fields, out_fields)
from spec.params import (MacroErr, MacroParams, pack, pack_vec, req_fields, res_fields, unpack,
                         unpack_vec, width, wr_fields)

REPO = Path(__file__).resolve().parents[2]
DIAGRAMS = sorted(docs.SOURCES.glob("*.json"))
IDS = [p.stem for p in DIAGRAMS]


def _pinned(package: str) -> bool:
    """The lock file pins ``package`` (then its tests must run, not skip)."""
    lock = (REPO / "requirements.lock").read_text().lower()
    return re.search(rf"^{re.escape(package)}==", lock, re.M) is not None


# ------------------------------------------------------------------ levels
class Level:
    """How a diagram of one level drives its golden model."""

    def __init__(self, meta: dict):
        pr = meta["params"]
        self.macro = MacroParams(**pr.get("macro", {}))
        self.channel = ChannelParams(macro=self.macro, **pr.get("channel", {}))
        self.module = ModuleParams(channel=self.channel, **pr.get("module", {}))
        kind = meta["level"]
        m, c, mod = self.macro, self.channel, self.module
        if kind == "macro":
            self.model, self.dut = MacroModel(m), DimcMacro(m)
            self.fields = {"wr": wr_fields(m), "req": req_fields(m), "res": res_fields(m)}
            self.ops, self.err = None, MacroErr
        elif kind == "channel":
            self.model, self.dut = ChannelModel(c), PimChannel(c)
            self.fields = {"cmd": cmd_fields(c), "out": out_fields(c)}
            self.ops, self.err = Op, MacroErr
        elif kind == "module":
            self.model, self.dut = ModuleModel(mod), PimModule(mod)
            self.fields = {"host": host_fields(mod), "out": mod_out_fields(mod)}
            self.ops, self.err = HostOp, ModErr
        else:
            raise AssertionError(f"unknown level {kind!r}")
        silence_unused(self.dut)
        self.kind, self.payloads = kind, meta.get("payloads", {})
        self.values = meta.get("values", {})
        self.ports = {"clk", "rst"} | {"__".join(map(str, path)) for path, _, _ in
                                       self.dut.signature.flatten(self.dut)}

    @staticmethod
    def model_name(lane: str) -> str:
        """Lane (Verilog port) name -> the model's input / output name."""
        return {"host__payload": "host_cmd"}.get(lane, lane.replace("__", "_"))

    def _payload_fields(self, lane: str, label: str) -> dict:
        table = self.payloads.get(lane, {})
        assert label in table, f"{lane}: label {label!r} has no meaning in the diagram's payloads"
        f = dict(table[label])
        if isinstance(f.get("op"), str):
            f["op"] = int(self.ops[f["op"]])
        return f

    def encode(self, lane: str, label) -> int:
        """The input word of ``lane`` for a label (None, i.e. ``x``: 0)."""
        if label is None:
            return 0
        fields = self.fields[lane.split("__")[0]]
        f = self._payload_fields(lane, label)
        for k, v in f.items():
            if isinstance(v, list):
                f[k] = pack_vec(v, fields[k].width // len(v))
        return pack(fields, **f)

    def matches(self, lane: str, label, word: int) -> bool:
        """An output payload ``word`` has every field the label names."""
        if label is None:
            return True
        fields = self.fields[lane.split("__")[0]]
        got = unpack(fields, word)
        for k, v in self._payload_fields(lane, label).items():
            if isinstance(v, list):
                if unpack_vec(got[k], len(v), fields[k].width // len(v)) != v:
                    return False
            elif got[k] != v:
                return False
        return True

    def scalar(self, lane: str, label: str) -> int:
        """The value of a data label on a scalar output lane (``err``, ``err_count``, ...)."""
        name = self.values.get(lane, {}).get(label)
        return int(self.err[name]) if name is not None else int(label)


def simulate(src: dict):
    """Run the diagram's level model on its input lanes: (level, inputs, outputs), each a
    dict of per-cycle lists keyed by the model's names."""
    lv = Level(src["cimphony"])
    lanes = docs.lanes(src)
    n = len(next(iter(lanes.values())))
    names = [name for name, _ in lv.model.inputs]
    by_model = {lv.model_name(lane): lane for lane in lanes}
    ins = {}
    for name in names:
        lane = by_model.get(name)
        if lane is None:
            ins[name] = [int(name.endswith("ready"))] * n
        elif name.endswith("payload") or name == "host_cmd":
            ins[name] = [lv.encode(lane, v) for v in lanes[lane]]
        else:
            ins[name] = lanes[lane]
    lv.model.reset(power_up=True)
    outs = {}
    for c in range(n):
        o = lv.model.step(*(ins[name][c] for name in names))
        for k, v in o._asdict().items():
            outs.setdefault(k, []).append(int(v))
    return lv, ins, outs


def mismatches(src: dict) -> list[str]:
    """Every way the diagram's output lanes and edges disagree with the golden model."""
    lv, ins, outs = simulate(src)
    lanes, bad = docs.lanes(src), []
    for lane, vals in lanes.items():
        if lane not in lv.ports:
            bad.append(f"{lane}: not a port of the {lv.kind}'s Verilog")
            continue
        name = lv.model_name(lane)
        if name in ins:
            continue
        if name not in outs:
            bad.append(f"{lane}: not an output of the {lv.kind} model")
            continue
        for c, (want, got) in enumerate(zip(vals, outs[name], strict=True)):
            if want is None:
                continue
            if name.endswith("payload"):
                ok = lv.matches(lane, want, got)
            elif isinstance(want, str):
                ok = lv.scalar(lane, want) == got
            else:
                ok = want == got
            if not ok:
                bad.append(f"{lane} cycle {c}: diagram {want!r}, model {got}")
    return bad + edge_mismatches(src, lv, ins, outs)


def _rises(v: list[int]) -> list[int]:
    return [c for c in range(len(v)) if v[c] and (c == 0 or not v[c - 1])]


def edge_mismatches(src: dict, lv: Level, ins: dict, outs: dict) -> list[str]:
    """Check every numeric edge label against the events it names and the contract."""
    node_at, bad = docs.nodes(src), []
    X, P = lv.macro.x_bits, lv.macro.tree_stages
    for a, b, label in docs.edges(src):
        m = re.search(r"(?:= |\+)(\d+)$", label)
        if m is None:
            continue                                  # a plain note, no timing claim
        t0, t1, n = node_at[a], node_at[b], int(m.group(1))
        if t1 - t0 != n:
            bad.append(f"edge {a}->{b} {label!r}: spans {t1 - t0} cycles")
        if lv.kind == "macro" and label.startswith(("X+P+1", "X =")):
            acc = [c for c, (v, r) in enumerate(zip(ins["req_valid"], outs["req_ready"],
                                                    strict=True)) if v and r]
            rv, rr = outs["res_valid"], ins["res_ready"]
            res = [c for c in range(len(rv))
                   if rv[c] and (c == 0 or not rv[c - 1] or rr[c - 1])]   # a new result
            if t0 not in acc:
                bad.append(f"edge {label!r}: no request accepted in cycle {t0}")
                continue
            k = acc.index(t0)
            if label.startswith("X ="):
                ok = n == X and k + 1 < len(acc) and acc[k + 1] == t1
            else:
                stalled = re.match(r"X\+P\+1 \+ (\d+) stalled", label)
                ok = (k < len(res) and res[k] == t1
                      and n == X + P + 1 + (int(stalled.group(1)) if stalled else 0))
            if not ok:
                bad.append(f"edge {label!r} ({t0}->{t1}): not request {k}'s timing")
        elif lv.kind == "channel" and label.startswith("X+P+2"):
            if not (n == X + P + 2 and t0 in _rises(outs["busy"])
                    and t1 in _rises(outs["out_valid"])):
                bad.append(f"edge {label!r}: not busy rising -> out.valid rising, X+P+2")
        elif label.startswith("err +"):
            valid = ins["wr_valid"] if lv.kind == "macro" else ins["host_valid"]
            want = 1 if lv.kind == "macro" else 2
            if not (n == want and valid[t0] and outs["err"][t1]
                    and not any(outs["err"][t0 + 1:t1])):
                bad.append(f"edge {label!r}: not a {'write' if want == 1 else 'push'} in "
                           f"{t0} whose error shows in {t1} = {t0}+{want}")
        elif label.startswith("ovf +"):
            if not (n == 1 and ins["host_valid"][t0] and outs["ovf"][t1]):
                bad.append(f"edge {label!r}: not a dropped push in {t0} -> ovf in {t1}")
        else:
            bad.append(f"edge {label!r}: a timing claim this test does not know")
    return bad


# ------------------------------------------------------------------ the diagrams
def test_there_are_diagrams_for_each_level():
    levels = {json.loads(p.read_text())["cimphony"]["level"] for p in DIAGRAMS}
    assert levels == {"macro", "channel", "module"}


@pytest.mark.parametrize("path", DIAGRAMS, ids=IDS)
def test_diagram_matches_golden_model(path):
    assert mismatches(docs.load(path)) == []


@pytest.mark.parametrize("path", DIAGRAMS, ids=IDS)
def test_diagram_is_referenced_from_a_contract_doc(path):
    text = "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    assert f"wavedrom/{path.name}" in text


def test_docs_reference_only_existing_diagrams():
    for md in (REPO / "docs").glob("*.md"):
        for name in re.findall(r"wavedrom/([\w.-]+\.json)", md.read_text()):
            assert (docs.SOURCES / name).is_file(), f"{md.name} names a missing {name}"


def _load(stem: str) -> dict:
    return docs.load(docs.SOURCES / f"{stem}.json")


def test_macro_latency_edge_is_the_contract():
    src = _load("macro_request")
    lv = Level(src["cimphony"])
    spans = [docs.nodes(src)[b] - docs.nodes(src)[a] for a, b, lab in docs.edges(src)
             if lab.startswith("X+P+1")]
    assert spans and all(s == lv.macro.x_bits + lv.macro.tree_stages + 1 for s in spans)


def test_module_error_is_two_cycles_after_the_push():
    src = _load("module_host")
    _, ins, outs = simulate(src)
    pushes = [c for c, v in enumerate(ins["host_valid"]) if v]
    first_err = next(c for c, e in enumerate(outs["err"]) if e)
    assert first_err == pushes[0] + 2 == 2       # a bad opcode pushed into an empty FIFO
    first_ovf = next(c for c, v in enumerate(outs["ovf"]) if v)
    assert ins["host_valid"][first_ovf - 1]     # ovf: the push of the previous cycle
    (a, b, _), = [e for e in docs.edges(src) if e[2].startswith("err")]
    assert docs.nodes(src)[b] - docs.nodes(src)[a] == 2


def test_loop_body_errors_at_every_replay_and_never_for_zero_trips():
    _, _, outs = simulate(_load("module_loop"))
    codes = [e for e in outs["err"] if e]
    assert codes == [ModErr.UNMAPPED, ModErr.UNMAPPED, ModErr.BAD_FIELD]


def _lane(src: dict, name: str) -> dict:
    """The lane object named ``name`` (in a group or not)."""
    flat = [x for s in src["signal"] for x in (s[1:] if isinstance(s, list) else [s])]
    return next(x for x in flat if x.get("name") == name)


@pytest.mark.parametrize("mutate", ["late_result", "wrong_entry", "short_edge"])
def test_a_wrong_diagram_is_caught(mutate):
    src = copy.deepcopy(_load("macro_request"))
    if mutate == "late_result":                   # first result drawn one cycle late
        lane = _lane(src, "res__valid")
        assert lane["wave"].startswith("0.....10")
        lane["wave"] = "0......1" + lane["wave"][8:]
    elif mutate == "wrong_entry":                 # first result tagged with the wrong entry
        src["cimphony"]["payloads"]["res__payload"]["y0 = A"] = {"dst": 1}
    else:                                         # latency edge one cycle short
        lane = next(x for x in src["signal"] if isinstance(x, dict) and "C" in x.get("node", ""))
        lane["node"] = lane["node"].replace("C.....D", "C....D.")
    docs.check(src)
    assert mismatches(src)


# ------------------------------------------------------------------ documented numbers
def _rows(doc: str) -> dict[str, list[str]]:
    """Table rows of ``docs/<doc>`` (lists of cells) keyed by the first name in backticks in
    their first cell (the first such row wins)."""
    rows: dict[str, list[str]] = {}
    for line in (REPO / "docs" / doc).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.search(r"`(\w+)`", cells[0]) if line.startswith("|") else None
        if m:
            rows.setdefault(m.group(1), cells)
    return rows


def _default(cls, name):
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


@pytest.mark.parametrize("doc, cls, names", [
    ("macro.md", MacroParams, ["n_in", "n_out", "w_bits", "x_bits", "n_sets", "n_acc",
                               "tree_stages", "acc_guard"]),
    ("channel.md", ChannelParams, ["n_banks", "n_gbuf", "q_depth", "dcs"]),
    ("module.md", ModuleParams, ["n_ch", "n_vpages", "n_req", "fifo_depth", "loop_len"]),
])
def test_documented_defaults_and_ranges(doc, cls, names):
    rows = _rows(doc)
    for name in names:
        assert rows[name][1] == str(_default(cls, name)), f"{doc}: default of {name}"
        m = re.search(r"(\d+)\.\.(\d+)", rows[name][2])
        if m:                                     # the bounds are accepted, one beyond is not
            lo, hi = int(m.group(1)), int(m.group(2))
            cls(**{name: lo}), cls(**{name: hi})
            for v in (lo - 1, hi + 1):
                with pytest.raises(ValueError, match=name):
                    cls(**{name: v})


def _text(doc: str) -> str:
    """``docs/<doc>`` with runs of white space as one space."""
    return " ".join((REPO / "docs" / doc).read_text().split())


def test_documented_widths():
    m, c, mod = MacroParams(), ChannelParams(), ModuleParams()
    rows = _rows("macro.md")
    want = {"row": m.row_bits, "set": m.set_bits, "dst": m.dst_bits, "y": m.acc_width,
            "wr__payload": width(wr_fields(m)), "req__payload": width(req_fields(m)),
            "res__payload": width(res_fields(m))}
    for name, v in want.items():
        assert rows[name][-1] == str(v), f"macro.md: width of {name}"
    rows, cf = _rows("channel.md"), cmd_fields(c)
    for name, f in cf.items():
        assert rows[name][-1] == str(f.width), f"channel.md: width of {name}"
    text = _text("channel.md")
    assert rows["cmd__payload"][-1] == str(width(cf))
    assert f"{c.window} for the defaults" in text and f"`seq_bits = log2 W` ({c.seq_bits})" in text
    assert f"{width(out_fields(c))} bits by default" in text
    text, hf = _text("module.md"), host_fields(mod)
    assert f"({hf['data'].offset} bits)" in text and f"{width(hf)} in all" in text
    assert f"{width(mod_out_fields(mod))} bits by default" in text
    assert f"`n_pages = n_banks × n_sets` (NP; {mod.n_pages} by default" in text
    # module.md spells the fixed host widths out; isa.md tabulates them with their offsets
    assert ", ".join(f"`{n}` {w}" for n, w in HOST_WIDTHS.items()) in text
    of, wide = mod_out_fields(mod), host_fields(ModuleParams(wide_inp=2))
    assert f"`chan` ({of['chan'].width} bits," in text
    assert (f"`multi` (1 bit, offset {wide['multi'].offset})" in text
            and f"(offset {wide['data'].offset};" in text
            and f"({width(wide)} for K = 2 by default)" in text)
    rows = _rows("isa.md")
    for name, f in hf.items():
        cells = rows["vps" if name == "os" else name]
        k = 1 if name == "os" else 0
        if name != "data":
            assert cells[1].split(", ")[k] == str(f.width), f"isa.md: width of {name}"
        assert cells[2].split(", ")[k].split(" ")[0] == str(f.offset), f"isa.md: offset of {name}"
    # with the channels' block post-processing stage: fmt and xs before multi / data
    from spec.blockfmt import FMT_BITS, XS_BITS
    assert (rows["fmt"][1], rows["xs"][1]) == (str(FMT_BITS), str(XS_BITS))
    assert (rows["fmt"][2], rows["xs"][2]) == (str(hf["data"].offset),
                                               str(hf["data"].offset + FMT_BITS))
    shift = FMT_BITS + XS_BITS
    mo = wide["multi"].offset
    assert rows["multi"][2] == f"{mo} ({mo + shift} with `post`)"
    assert rows["data"][2] == (f"{hf['data'].offset} ({wide['data'].offset} with `wide_inp` > 1; "
                               f"{hf['data'].offset + shift} / {wide['data'].offset + shift} "
                               f"with `post`)")
    assert f"one word of {hf['data'].offset} bits of fields" in _text("isa.md")
    assert rows["chan"][2].startswith(str(of["chan"].width)), "isa.md: width of chan"


# ------------------------------------------------------------------ cimphony.docs
def test_lanes_reads_levels_labels_and_unknowns():
    src = {"signal": [{"name": "clk", "wave": "p...."}, {"name": "v", "wave": "01.0."},
                      {"name": "d", "wave": "x=.=x", "data": ["a", "b"]}]}
    docs.check(src)
    assert docs.lanes(src) == {"v": [0, 1, 1, 0, 0], "d": [None, "a", "a", "b", None]}


@pytest.mark.parametrize("src, words", [
    ({"signal": [{"name": "a", "wave": "0q"}]}, "characters"),
    ({"signal": [{"name": "a", "wave": ".0"}]}, "continuation"),
    ({"signal": [{"name": "a", "wave": "=="}]}, "2 data segments but 0 labels"),
    ({"signal": [{"name": "a", "wave": "01"}, {"name": "b", "wave": "010"}]}, "3 cycles long"),
    ({"signal": [{"name": "a", "wave": "01"}, {"name": "a", "wave": "10"}]}, "used twice"),
    ({"signal": [{"name": "a", "wave": "01", "node": "A."}], "edge": ["A->B x"]}, "node 'B'"),
    ({"signal": [{"name": "a", "wave": "01"}, {"node": "..A"}]}, "past the waves"),
    ({"signal": [{"wave": "01"}]}, "no name"),
    ({"sig": []}, "'signal' list"),
])
def test_check_rejects_malformed_sources(src, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        docs.check(src, "x.json")


def test_load_names_a_file_that_is_not_json(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        docs.load(bad)


def test_render_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="src_dir=.*nowhere.*not a folder"):
        docs.render(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ValueError, match="holds no"):
        docs.render(tmp_path, tmp_path / "out")
    (tmp_path / "a.json").write_text(json.dumps({"signal": [{"name": "a", "wave": "01"}]}))
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ValueError, match="out_dir=.*file.*not a folder"):
        docs.render(tmp_path, afile)
    (tmp_path / "b.json").write_text(json.dumps({"signal": [{"name": "b", "wave": "0q"}]}))
    with pytest.raises(ValueError, match="b.json"):
        docs.render(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()        # nothing written when a source is bad


def test_render_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yowasp_wavedrom", None)     # import fails
    with pytest.raises(ImportError, match=re.escape("pip install cimphony[docs]")):
        docs.render(docs.SOURCES, tmp_path / "svg")
    assert not (tmp_path / "svg").exists()


def test_render_writes_one_svg_per_diagram(tmp_path):
    if not _pinned("yowasp-wavedrom"):
        pytest.importorskip("yowasp_wavedrom", reason="yowasp-wavedrom not in requirements.lock")
    out = docs.render(docs.SOURCES, tmp_path / "svg")
    assert [p.name for p in out] == [f"{s}.svg" for s in IDS]
    for p, src in zip(out, DIAGRAMS, strict=True):
        svg = p.read_text()
        assert svg.lstrip().startswith("<svg") and svg.rstrip().endswith("</svg>")
        for lane in docs.lanes(docs.load(src)):
            assert f">{lane}<" in svg, f"{p.name}: lane {lane} not drawn"
