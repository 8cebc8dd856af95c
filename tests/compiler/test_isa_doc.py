"""The example program in docs/isa.md runs on the module model and gives what the doc says."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from spec.isa import ModuleParams, mod_out_fields
from model.module import ModuleModel
from spec.params import unpack, unpack_vec

DOC = Path(__file__).resolve().parents[2] / "docs" / "isa.md"


def test_isa_example_program(seed):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
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
