"""The example programs in docs/isa.md run on the module model and give what the doc says."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from spec.isa import ModuleParams, mod_out_fields
from model.module import ModuleModel
from spec.params import unpack, unpack_vec

DOC = Path(__file__).resolve().parents[2] / "docs" / "isa.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_isa_example_program(seed):
    code = _blocks()[0]
    rng = np.random.default_rng(seed)
    p = ModuleParams()
    W = rng.integers(-128, 128, (64, 64))
    x = rng.integers(-128, 128, 64)
    env = {"p": p, "W": W, "x": x}
    exec(code, env)
    run = ModuleModel(p).run([(c, 0) for c in env["prog"]])
    assert run.status == "ok" and not run.errs
    m = p.channel.macro
    outs = [unpack(mod_out_fields(p), w) for w in run.outs]
    assert sorted(o["chan"] for o in outs) == [0, 1]
    for o in outs:
        assert unpack_vec(o["y"], m.n_out, m.acc_width) == list(x @ W), f"seed {seed}"


def test_isa_options_example_program(seed):
    """The second example: a stripe, one multi WR_INP, one MAC_AB, offered back to back on a
    ready port: eight beats (chan c, bank b, o 2) with x_c @ Wb[b], nothing dropped."""
    code = _blocks()[1]
    rng = np.random.default_rng(seed)
    Wb = rng.integers(-128, 128, (4, 64, 64))
    x0, x1 = rng.integers(-128, 128, (2, 64))
    env = {"Wb": Wb, "x0": x0, "x1": x1}
    exec(code, env)
    p2 = env["p2"]
    assert p2.channel.all_bank and p2.wide_inp == 2 and p2.host_ready
    run = ModuleModel(p2).run([(c, 0) for c in env["prog2"]])
    assert run.status == "ok" and not run.errs and not run.dropped and not run.ovfs
    m = p2.channel.macro
    got = {}
    for w in run.outs:
        o = unpack(mod_out_fields(p2), w)
        got[(o["chan"], o["bank"], o["o"])] = unpack_vec(o["y"], m.n_out, m.acc_width)
    want = {(c, b, 2): list(x @ Wb[b]) for c, x in enumerate((x0, x1)) for b in range(4)}
    assert got == want, f"seed {seed}"
