"""The declared golden-model interface (model/interface.py): the macro, channel and module
models satisfy :class:`GoldenModel`, and :func:`state_diff` finds every kind of difference
with a readable path."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from model.channel import ChannelModel
from model.interface import GoldenModel, check_inputs, state_diff
from model.macro import MacroModel
from model.module import ModuleModel
from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams

MP = MacroParams(n_in=4, n_out=2, w_bits=4, x_bits=4, n_acc=2, tree_stages=0)
CP = ChannelParams(macro=MP, n_banks=2, n_gbuf=2, q_depth=2)
P = ModuleParams(channel=CP, n_ch=2, n_vpages=4, n_req=2, fifo_depth=2, loop_len=2)
MODELS = {"macro": lambda: MacroModel(MP), "channel": lambda: ChannelModel(CP),
          "module": lambda: ModuleModel(P)}


@pytest.mark.parametrize("name", MODELS)
def test_models_satisfy_the_protocol(name):
    m = MODELS[name]()
    assert isinstance(m, GoldenModel)
    sig = inspect.signature(m.reset)
    assert list(sig.parameters) == ["power_up"] and sig.parameters["power_up"].default is False
    # step takes the declared inputs, in order, and returns a namedtuple of outputs; a further
    # parameter is an input of an option that is off here (it has a default: the module's
    # sm_ready without the softmax unit), and it is declared when the option is on
    params = inspect.signature(m.step).parameters
    names = [n for n, _ in m.inputs]
    assert list(params)[:len(names)] == names
    assert all(params[n].default is not inspect.Parameter.empty for n in list(params)[len(names):])
    if name == "module":
        sm = ModuleModel(ModuleParams(channel=ChannelParams(
            macro=MacroParams(n_in=4, n_out=2, n_acc=2, tree_stages=0), n_banks=2, n_gbuf=2,
            q_depth=2), n_ch=2, n_vpages=4, n_req=2, fifo_depth=2, loop_len=2, softmax=True))
        assert [n for n, _ in sm.inputs] == list(params)
    s0 = m.state()
    assert isinstance(s0, dict) and s0["cycle"] == 0
    o = m.step(*[0] * len(m.inputs))
    assert isinstance(o, tuple) and hasattr(o, "_fields") and len(o) == len(o._fields)
    s1 = m.state()
    assert s1["cycle"] == 1 and state_diff(s0, s1) == []        # idle cycle: only cycle moved
    d = state_diff(s0, s1, ignore=())                            # every (nested) cycle count
    assert d[0] == "cycle: 0 != 1" and all(x.split(": ")[0].endswith("cycle") for x in d)
    assert len(d) == {"macro": 1, "channel": 1 + CP.n_banks,
                      "module": 1 + P.n_ch * (1 + CP.n_banks)}[name]
    m.reset()
    assert state_diff(s0, m.state(), ignore=()) == []


def test_not_a_model():
    class Half:
        def reset(self, power_up=False):
            pass

        def state(self):
            return {}
    assert not isinstance(Half(), GoldenModel)                 # no step


def test_state_diff_paths():
    a = {"cycle": 3, "obuf": [[0] * 6 for _ in range(3)], "loop": {"mode": 1, "n": 2},
         "W": np.zeros((2, 3, 4), dtype=np.int64), "pipe": [{"valid": 1, "psum": np.arange(3)}],
         "pt": [(1, 0, 2), (0, 0, 0)]}
    b = {"cycle": 4, "obuf": [[0] * 6 for _ in range(3)], "loop": {"mode": 1, "n": 2},
         "W": np.zeros((2, 3, 4), dtype=np.int64), "pipe": [{"valid": 1, "psum": np.arange(3)}],
         "pt": [(1, 0, 2), (0, 0, 0)]}
    assert state_diff(a, b) == []
    assert state_diff(a, b, ignore=()) == ["cycle: 3 != 4"]
    b["obuf"][2][5] = 17
    b["loop"]["n"] = 3
    b["W"][1, 2, 0] = b["W"][0, 0, 0] = -1
    b["pipe"][0]["psum"] = np.array([0, 1, 5])
    b["pt"][1] = (1, 1, 0)
    assert state_diff(a, b) == [
        "obuf[2][5]: 0 != 17",
        "loop.n: 2 != 3",
        "W[0][0][0]: 0 != -1 (and 1 more elements)",
        "pipe[0].psum[2]: 2 != 5",
        "pt[1][0]: 0 != 1", "pt[1][1]: 0 != 1",
    ]
    # ignore applies at every level; path prefixes every line
    assert state_diff(a, b, ignore=("cycle", "obuf", "n", "W", "pipe", "pt")) == []
    assert state_diff(a["loop"], b["loop"], path="m.loop") == ["m.loop.n: 2 != 3"]


def test_state_diff_shapes_and_missing_keys():
    assert state_diff({"q": [1, 2]}, {"q": [1, 2, 3]}) == ["q: length 2 != 3"]
    assert state_diff({"W": np.zeros((2, 2))}, {"W": np.zeros((2, 3))}) == \
        ["W: shape (2, 2) != (2, 3)"]
    assert state_diff({"a": 1}, {"a": 1, "b": 2}) == ["b: missing on the left"]
    assert state_diff({"a": 1, "c": 0}, {"a": 1}) == ["c: missing on the right"]
    assert state_diff({"a": [1]}, {"a": 1}) == ["a: [1] != 1"]       # kind differs
    assert state_diff({"a": (0, 5)}, {"a": [0, 5]}) == []           # tuple == list element-wise


def test_check_inputs():
    ins = (("v", 1), ("w", 4))
    assert check_inputs(ins, (True, np.int64(15))) == (1, 15)
    with pytest.raises(ValueError, match="w=16"):
        check_inputs(ins, (0, 16))
    with pytest.raises(ValueError):                                 # one value too few
        check_inputs(ins, (0,))
