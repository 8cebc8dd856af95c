"""compiler/attention/softmax.py: decode-step attention with the hub's softmax unit on the
golden module model (bit-exact against the unit's functional reference, cosine against float),
and the host traffic per decode step with and without the unit, counted from the command
streams (docs/compiler.md, "Attention with the softmax unit")."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.attention.program import Request
from compiler.attention.softmax import build_program_sm, compare_host_traffic
from compiler.host import pace
from model.module import ModuleModel
from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams

M = MacroParams(n_in=8, n_out=4, w_bits=8, x_bits=8, n_sets=4, n_acc=4, tree_stages=0)
P = ModuleParams(channel=ChannelParams(macro=M, n_banks=2, n_gbuf=2, q_depth=4), n_ch=2,
                 n_vpages=16, n_req=2, fifo_depth=4, loop_len=4, softmax=True, sm_context=32)


def req(seed, T=13, d=8, H=2, g=1):
    rng = np.random.default_rng(seed)
    return Request(rng.standard_normal((H, T, d)), rng.standard_normal((H, T, d)),
                   rng.standard_normal((H, g, d)))


@pytest.mark.parametrize("part,T,g", [("TCP", 13, 2), ("TCP", 32, 1), ("HFP", 5, 1)])
def test_model_bit_exact_and_accurate(part, T, g):
    prog = build_program_sm(P, [req(T, T=T, H=1 if T > 16 else 2, g=g)], part)
    run = ModuleModel(P).run(pace(P, prog.cmds))
    assert run.status == "ok" and not run.errs and not run.sm_errs
    dec = prog.decode(run.outs, [w for _, w in run.sm_res])
    assert all(np.array_equal(a, e) for a, e in zip(dec["acc"], prog.expected_acc))
    assert [(r["qsum"], r["l"]) for r in dec["res"]] == \
        [(e["qsum"], e["l"]) for e in prog.expected_res]
    for o, ref in zip(dec["o"], prog.reference):
        for h in range(o.shape[0]):
            for q in range(o.shape[1]):
                a, b = o[h, q], ref[h, q]
                assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.99


def test_host_traffic_with_and_without_the_unit():
    """Tiny shape (2 channels, T = 13, d = 8, 2 heads): the unit removes the round trip and
    the host-computed probability tiles, and cuts the bytes up (scores stay on the module)."""
    t = compare_host_traffic(P, [req(3)], "TCP")
    w, h = t["with_unit"], t["host_softmax"]
    assert (w["round_trips"], h["round_trips"]) == (0, 1)
    assert (w["host_prob_tiles"], h["host_prob_tiles"]) == (0, 4)
    assert (w["up_bytes"], h["up_bytes"]) == (130, 224)
    assert (w["down_bytes"], h["down_bytes"]) == (550, 506)


def test_bad_arguments():
    with pytest.raises(ValueError, match="softmax=True"):
        build_program_sm(ModuleParams(), [req(0)])
    with pytest.raises(ValueError, match="sm_context"):
        build_program_sm(P, [req(0, T=33)])
    with pytest.raises(ValueError, match="dig"):
        build_program_sm(P, [req(0)], dig=1)
