"""Malformed Python-level input to the golden models and to spec/ is a ValueError naming the
value, raised before any state changes; malformed *hardware* commands keep the behaviour the
contract defines (docs/module.md error codes, WR_BAD_ROW)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from model.channel import ChannelModel
from model.interface import state_diff
from model.macro import MacroModel
from model.module import ModuleModel
from model.stimulus import Beat, Stimulus, check_program
from spec.isa import (ChannelParams, HostOp, ModErr, ModuleParams, Op, cmd_fields, encode,
                      host_encode, host_fields)
from spec.params import (MacroErr, MacroParams, check_int, check_word, pack, pack_vec, unpack,
                         width, wr_fields)

MP = MacroParams(n_in=4, n_out=2, w_bits=4, x_bits=4, n_acc=2, tree_stages=0)
CP = ChannelParams(macro=MP, n_banks=2, n_gbuf=2, q_depth=2)
P = ModuleParams(channel=CP, n_ch=2, n_vpages=4, n_req=2, fifo_depth=2, loop_len=2)
NOP = host_encode(P, HostOp.NOP)


def _models():
    """(name, model, the inputs of an idle cycle, index of the command word input)."""
    return [("macro", MacroModel(MP), [0, 0, 0, 0, 1], 1),
            ("channel", ChannelModel(CP), [0, 0, 1], 1),
            ("module", ModuleModel(P), [0, 0, 1], 1)]


def _unchanged(m, fn, match):
    """``fn()`` raises ValueError matching ``match`` and leaves every state bit (and the cycle
    count) as it was."""
    before = m.state()
    with pytest.raises(ValueError, match=match):
        fn()
    assert state_diff(before, m.state(), ignore=()) == []


# --- command words on step() -------------------------------------------------------------
BAD_WORDS = {"negative": (-1, r"=-1 "), "float": (1.7, r"=1\.7 "), "string": ("5", r"='5' "),
             "bool": (True, r"=True "), "none": (None, r"=None "), "float_int": (2.0, r"=2\.0 ")}


@pytest.mark.parametrize("bad", BAD_WORDS)
@pytest.mark.parametrize("which", ["macro", "channel", "module"])
def test_step_rejects_malformed_word(which, bad):
    name, m, idle, k = next(x for x in _models() if x[0] == which)
    m.step(*idle)                                         # not at cycle 0
    value, match = BAD_WORDS[bad]
    for valid in (0, 1):                                  # payload checked even when not valid
        ins = list(idle)
        ins[k], ins[k - 1] = value, valid
        _unchanged(m, lambda: m.step(*ins), m.inputs[k][0] + match)


@pytest.mark.parametrize("which", ["macro", "channel", "module"])
def test_step_rejects_word_wider_than_the_port(which):
    name, m, idle, k = next(x for x in _models() if x[0] == which)
    w = m.inputs[k][1]
    assert w == {"macro": width(wr_fields(MP)), "channel": width(cmd_fields(CP)),
                 "module": width(host_fields(P))}[which]
    ins = list(idle)
    ins[k] = 1 << w
    _unchanged(m, lambda: m.step(*ins), rf"{m.inputs[k][0]}={1 << w} .*{w}-bit")
    ins[k] = (1 << w) - 1                                 # the widest word is fine
    ins[k - 1] = 0
    m.step(*ins)


@pytest.mark.parametrize("bad", [2, -1, 0.5, 1.0, "1", None])
@pytest.mark.parametrize("which", ["macro", "channel", "module"])
def test_step_valid_and_ready_must_be_bits(which, bad):
    name, m, idle, _ = next(x for x in _models() if x[0] == which)
    for i, (port, w) in enumerate(m.inputs):
        if w != 1:
            continue
        ins = list(idle)
        ins[i] = bad
        _unchanged(m, lambda: m.step(*ins), re.escape(f"{port}={bad!r}"))


@pytest.mark.parametrize("which", ["macro", "channel", "module"])
def test_step_bool_and_numpy_bits_are_fine(which):
    """valid/ready as bools or numpy ints, a word as a numpy int: same as Python ints."""
    _, a, idle, k = next(x for x in _models() if x[0] == which)
    b = type(a)(a.params)
    word = NOP if which == "module" else 0
    ins = list(idle)
    ins[k - 1], ins[k] = 1, word
    alt = [bool(v) if w == 1 else np.int64(v) for v, (_, w) in zip(ins, a.inputs, strict=True)]
    assert a.step(*ins) == b.step(*alt)
    assert state_diff(a.state(), b.state(), ignore=()) == []


def test_host_valid_2():
    m = ModuleModel(P)
    _unchanged(m, lambda: m.step(2, NOP, 1), "host_valid=2")


def test_reset_power_up_must_be_a_flag():
    for _, m, _, _ in _models():
        _unchanged(m, lambda: m.reset(power_up="no"), "power_up='no'")


# --- hardware-level malformed commands keep their defined behaviour ----------------------
def test_bad_host_commands_are_error_codes_not_exceptions():
    m = ModuleModel(P)
    r = m.run([(host_encode(P, 12), 0), (host_encode(P, HostOp.MAP, vp=4, pp=0, rid=0), 0)])
    assert r.status == "ok" and r.err_codes() == [ModErr.BAD_OPCODE, ModErr.BAD_FIELD]


def test_bad_row_write_is_an_error_code():
    p = MacroParams(n_in=3, n_out=2, w_bits=4, x_bits=4)
    m = MacroModel(p)
    m.step(1, pack(wr_fields(p), row=3, set=0), 0, 0, 1)
    assert m.step(0, 0, 0, 0, 1).err == MacroErr.WR_BAD_ROW


def test_channel_command_naming_a_missing_bank_or_gbuf_entry():
    """bank / g fields wider than n_banks / n_gbuf: not defined by docs/channel.md."""
    p = ChannelParams(macro=MP, n_banks=3, n_gbuf=3, q_depth=2)
    cf = cmd_fields(p)
    mac = pack(cf, op=int(Op.MAC), bank=3)
    wr_inp = pack(cf, op=int(Op.WR_INP), g=3)
    m = ChannelModel(p)
    _unchanged(m, lambda: m.step(1, mac, 1), "MAC bank=3, n_banks=3")
    _unchanged(m, lambda: m.step(1, wr_inp, 1), "WR_INP g=3, n_gbuf=3")
    _unchanged(m, lambda: m.run([(encode(p, Op.MAC, bank=2), 0), (mac, 0)]), r"bank=3")
    m.step(0, mac, 1)                                   # not offered: a don't-care payload
    m.step(1, pack(cf, op=int(Op.WR_INP), bank=3), 1)   # WR_INP ignores bank


# --- run() programs and stimuli ----------------------------------------------------------
@pytest.mark.parametrize("cmds,match", [
    ([5], r"cmds\[0\]=5 must be a \(word, gap\) pair"),
    ([(0,)], r"cmds\[0\]=\(0,\) must be a \(word, gap\) pair"),
    ([(0, 0), (0, 1, 2)], r"cmds\[1\]="),
    (5, r"cmds=5 must be a list"),
    ([(0, -1)], r"cmds\[0\] gap=-1"),
    ([(0, 1.5)], r"cmds\[0\] gap=1\.5"),
    ([(-1, 0)], r"cmds\[0\] word=-1"),
    ([(1.7, 0)], r"cmds\[0\] word=1\.7"),
    ([("5", 0)], r"cmds\[0\] word='5'"),
])
@pytest.mark.parametrize("which", ["channel", "module"])
def test_run_rejects_malformed_program(which, cmds, match):
    m = ChannelModel(CP) if which == "channel" else ModuleModel(P)
    m.step(0, 0, 1)
    _unchanged(m, lambda: m.run(cmds), match)


@pytest.mark.parametrize("which", ["channel", "module"])
def test_run_negative_gap_was_deadlock_or_ok(which):
    m = ChannelModel(CP) if which == "channel" else ModuleModel(P)
    word = encode(CP, Op.WR_INP, g=0) if which == "channel" else NOP
    with pytest.raises(ValueError, match="gap=-4"):
        m.run([(word, 0), (word, -4)])


@pytest.mark.parametrize("kw,match", [
    (dict(out_ready_p=0), "out_ready_p=0"), (dict(out_ready_p="0.5"), "out_ready_p='0.5'"),
    (dict(seed=-1), "seed=-1"), (dict(seed=1.5), "seed=1.5"), (dict(stall_limit=0),
                                                               "stall_limit=0"),
    (dict(max_cycles=0), "max_cycles=0"), (dict(power_up="yes"), "power_up='yes'")])
@pytest.mark.parametrize("which", ["channel", "module"])
def test_run_rejects_bad_arguments(which, kw, match):
    m = ChannelModel(CP) if which == "channel" else ModuleModel(P)
    m.step(0, 0, 1)
    _unchanged(m, lambda: m.run([], **kw), match)


def test_run_program_word_wider_than_port():
    for m, w in ((ChannelModel(CP), width(cmd_fields(CP))), (ModuleModel(P), width(host_fields(P)))):
        _unchanged(m, lambda: m.run([(1 << w, 0)]), rf"word={1 << w} .*{w}-bit")


def test_check_program_normalises():
    assert check_program([(np.int64(3), np.int64(2)), [1, 0]], 4) == [(3, 2), (1, 0)]
    assert all(type(v) is int for c in check_program([(np.uint8(3), 0)], 4) for v in c)


@pytest.mark.parametrize("args,kw,match", [
    ((-1,), {}, "payload=-1"), ((0,), dict(gap=-4), "gap=-4"), ((0,), dict(after=-1), "after=-1"),
    ((1.5,), {}, "payload=1.5"), (("5",), {}, "payload='5'"), ((0,), dict(gap=0.5), "gap=0.5")])
def test_beat_rejects(args, kw, match):
    with pytest.raises(ValueError, match=match):
        Beat(*args, **kw)


def test_beat_accepts_numpy_ints():
    b = Beat(np.int64(7), gap=np.uint8(2))
    assert b == Beat(7, 2) and type(b.payload) is int and type(b.gap) is int


def test_stimulus_and_macro_run_reject():
    with pytest.raises(ValueError, match="seed=1.5"):
        Stimulus(MP, seed=1.5)
    with pytest.raises(ValueError, match=r"wr\[0\]=5 is not a Beat"):
        Stimulus(MP, wr=[5])
    with pytest.raises(ValueError, match="ready_p='1'"):
        Stimulus(MP, ready_p="1")
    m = MacroModel(MP)
    m.step(0, 0, 0, 0, 1)
    w = width(wr_fields(MP))
    _unchanged(m, lambda: m.run(Stimulus(MP, wr=[Beat(1 << w)])), rf"wr\[0\].payload={1 << w}")
    _unchanged(m, lambda: m.run("stim"), "stim='stim'")
    _unchanged(m, lambda: m.run(Stimulus(MP), max_cycles=0), "max_cycles=0")


# --- spec: pack_vec, pack/unpack, encode, host_encode, parameters -------------------------
@pytest.mark.parametrize("values,match", [
    ([1.7], r"element 0=1\.7"), ([0, 2.0], r"element 1=2\.0"), ([True], r"element 0=True"),
    (["1"], r"element 0='1'"), (np.array([1.7]), "dtype float64"),
    (np.array([[1, 2]]), "ndim 2"), ([8], "element 0 = 8 outside")])
def test_pack_vec_rejects(values, match):
    with pytest.raises(ValueError, match=match):
        pack_vec(values, 4)


def test_pack_vec_accepts_ints_and_integer_arrays():
    want = (1 & 15) | ((-2 & 15) << 4) | (7 << 8)
    assert pack_vec([1, -2, 7], 4) == want
    assert pack_vec(np.array([1, -2, 7], dtype=np.int8), 4) == want
    assert pack_vec([np.int64(1), np.int16(-2), 7], 4) == want
    assert type(pack_vec(np.array([1, -2, 7]), 4)) is int


def test_pack_and_unpack_reject():
    f = wr_fields(MP)
    with pytest.raises(ValueError, match=r"row=1\.5"):
        pack(f, row=1.5)
    with pytest.raises(ValueError, match=r"row=4 .*2-bit"):
        pack(f, row=4)
    with pytest.raises(ValueError, match=r"row=True"):
        pack(f, row=True)
    with pytest.raises(ValueError, match=r"word=-1"):
        unpack(f, -1)
    assert type(pack(f, row=np.int64(3))) is int


@pytest.mark.parametrize("kw,match", [
    (dict(bank=1.5), r"bank=1\.5"), (dict(bank=2), r"bank=2 must be in 0\.\.1"),
    (dict(bank=-1), "bank=-1"), (dict(g="0"), "g='0'"), (dict(o=True), "o=True"),
    (dict(acc=2), "acc=2"), (dict(data=1 << CP.data_bits), "data="),
    (dict(data=0.5), r"data=0\.5"), (dict(nope=1), "unknown field 'nope'")])
def test_encode_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        encode(CP, Op.MAC, **kw)


def test_encode_rejects_bad_op_and_accepts_flags():
    for op in (4, -1, 1.5, "MAC"):
        with pytest.raises(ValueError, match=re.escape(f"op={op!r}")):
            encode(CP, op)
    assert encode(CP, Op.MAC, acc=True) == encode(CP, Op.MAC, acc=1)
    assert encode(CP, Op.MAC, bank=np.int64(1)) == encode(CP, Op.MAC, bank=1)


@pytest.mark.parametrize("op,kw,match", [
    (HostOp.MAP, dict(vp=256), r"vp=256 .*8-bit"), (HostOp.MAP, dict(pp=1.5), r"pp=1\.5"),
    (HostOp.SET_TOK, dict(count=1 << 16), "count=65536"), (HostOp.MAP, dict(rid=-1), "rid=-1"),
    (16, {}, "op=16"), (1.5, {}, r"op=1\.5"), (HostOp.NOP, dict(chmask="1"), "chmask='1'")])
def test_host_encode_rejects(op, kw, match):
    with pytest.raises(ValueError, match=match):
        host_encode(P, op, **kw)


def test_host_encode_keeps_hardware_errors_encodable():
    """Out of range for this module but within the field width: encodable (BAD_FIELD)."""
    hf = host_fields(P)
    w = host_encode(P, 15, vp=255, pp=255, rid=15)
    assert unpack(hf, w)["op"] == 15 and unpack(hf, w)["vp"] == 255


@pytest.mark.parametrize("kw,match", [
    (dict(n_sets=1 << 20), "n_sets=1048576"), (dict(n_sets=512), "n_sets=512"),
    (dict(n_sets=12), "n_sets=12 must be a power of two"), (dict(n_acc=512), "n_acc=512"),
    (dict(n_in=1025), "n_in=1025"), (dict(n_out=1025), "n_out=1025"),
    (dict(n_in=16.0), "n_in=16.0"), (dict(n_in=True), "n_in=True"),
    (dict(acc_guard=17), "acc_guard=17"), (dict(w_bits=6), "w_bits=6")])
def test_macro_params_bounds(kw, match):
    with pytest.raises(ValueError, match=match):
        MacroParams(**kw)


def test_macro_params_bounds_inclusive():
    p = MacroParams(n_in=1024, n_out=1024, n_sets=256, n_acc=256, acc_guard=16)
    assert p.row_bits == 10 and p.set_bits == 8 and p.dst_bits == 8


def test_module_params_pp_field_bounds_the_pages():
    ok = ChannelParams(macro=MacroParams(n_sets=64), n_banks=4)           # 256 pages: pp 0..255
    assert ModuleParams(channel=ok).n_pages == 256
    big = ChannelParams(macro=MacroParams(n_sets=64), n_banks=5)          # 320 pages
    with pytest.raises(ValueError, match=r"n_pages = n_banks x n_sets = 5 x 64 = 320 .*pp"):
        ModuleParams(channel=big)
    assert ModuleParams(n_ch=16).n_ch == 16                             # the 16-bit chmask
    for kw, match in ((dict(n_ch=17), "n_ch=17"), (dict(n_vpages=512), "n_vpages=512"),
                      (dict(n_req=32), "n_req=32"), (dict(n_req=True), "n_req=True"),
                      (dict(loop_len=2.0), "loop_len=2.0")):
        with pytest.raises(ValueError, match=match):
            ModuleParams(**kw)
    with pytest.raises(ValueError, match="n_gbuf=65"):
        ChannelParams(n_gbuf=65)


def test_check_helpers():
    assert check_int("x", np.int32(-3), -3, 3) == -3
    assert check_word("v", True, 1) == 1 and check_word("w", np.uint16(9), 4) == 9
    for bad in (True, 1.0, "1", None, [1]):
        with pytest.raises(ValueError, match=re.escape(f"x={bad!r}")):
            check_int("x", bad)
    with pytest.raises(ValueError, match="x=5 must be in 0..4"):
        check_int("x", 5, 0, 4)
    with pytest.raises(ValueError, match="x=-1 must be >= 0"):
        check_int("x", -1, 0)
    with pytest.raises(ValueError, match="w=True"):
        check_word("w", True, 4)
