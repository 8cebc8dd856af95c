"""``cimphony perf point``: one point from the command line on a Llama-2-7B config written here
from its published values (no ``head_dim``), its JSON recomputed from the compiler, the timing
model and the host model; channels / tp / pp semantics; bad arguments exit 2 before any slow
work, naming the value; a point that does not fit exits 1."""
from __future__ import annotations

import json

import pytest

from cimphony import cli
from compiler import llm as L
from perf import point as P
from perf.host import ModelShape, step_time
from perf.presets import aim_rank
from perf.sim import simulate

#: Llama-2-7B's config.json (meta-llama/Llama-2-7b-hf): MHA, no head_dim field
LLAMA2_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
             "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
             "num_hidden_layers": 32, "num_key_value_heads": 32, "vocab_size": 32000,
             "max_position_embeddings": 4096, "rms_norm_eps": 1e-05,
             "tie_word_embeddings": False, "torch_dtype": "float16"}


@pytest.fixture
def llama2(tmp_path):
    f = tmp_path / "llama-2-7b" / "config.json"
    f.parent.mkdir()
    f.write_text(json.dumps(LLAMA2_7B))
    return f


def _point(argv, capsys):
    rc = cli.main(["perf", "point", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_point_json_on_a_llama2_config(llama2, capsys):
    rc, out, err = _point(["--config", str(llama2), "--system", "pimphony", "--channels", "256",
                           "--tp", "8", "--pp", "1", "--context", "4096", "--batch", "1",
                           "--json"], capsys)
    assert rc == 0, err
    r = json.loads(out)
    for k in ("pim_s", "token_s", "tokens_per_s", "energy_j_per_token", "mac_utilisation",
              "capacity_utilisation", "batch", "host_s", "link_s"):
        assert k in r, k
    assert (r["status"], r["batch"], r["policy"], r["tp"], r["pp"], r["ch_per_rank"]) == \
        ("ok", 1, "all", 8, 1, 32)
    # end to end = PIM + host + link; one stage; every resident request a token per token_s
    assert r["token_s"] == pytest.approx(r["pim_s"] + r["host_s"] + r["link_s"], rel=1e-12)
    assert r["pim_s"] == pytest.approx(r["stage_pim_s"], rel=1e-12)
    assert r["tokens_per_s"] == pytest.approx(1 / r["token_s"], rel=1e-12)
    assert r["host_s"] > 0 and r["link_s"] > 0                    # tp 8: all-reduces
    cfg = L.ModelConfig.from_hf(llama2)
    assert cfg.head_dim == 128 and cfg.kv_heads == 32             # derived, no head_dim field
    # the stage: one 32-channel rank of 8 x 1, the TCP + DCS + DPA plan, simulated
    pol = L.policy("all")
    sp = aim_rank(cfg, 32, pol)
    assert sp.all_bank and sp.dcs
    plan = L.compile_step(cfg, L.System(sp, 8, 8, 1), [r["contexts_max"]], max_context=4096,
                          **pol.compile_kw)
    assert r["stage_cycles"] == simulate(sp, P.timing_items(plan)).t_end
    assert r["capacity_utilisation"] == pytest.approx(plan.capacity["utilisation"])
    assert 0 < r["mac_utilisation"] <= 1 and 0 < r["capacity_utilisation"] <= 1
    # host and link: perf/host.py for this shape, batch and rank
    ht = step_time(ModelShape(4096, 32, 32, 128, 11008, 32000, 32),
                   context=r["contexts_max"], batch=1, tp=8, pp=1, channels=32)
    assert (r["host_s"], r["link_s"]) == (pytest.approx(ht["host_s"]),
                                          pytest.approx(ht["link_s"]))
    e = r["energy"]
    assert e["total_j"] == pytest.approx(e["static_j"] + e["dynamic_j"])
    assert r["energy_j_per_token"] == e["total_j"] and e["static_j"] > 0
    assert all(c["j"] >= 0 for c in e["components"].values())
    assert "Yufeng98/CENT" in r["constants"]["energy"]["P_ACT"]["source"]
    assert r["constants"]["link"]["bandwidth_per_lane"]["value"] == 8.0
    assert r["mm2"] > 0 and r["mm2_unsourced"]                    # DRAM die area: not sourced


def test_point_table_and_channel_split(capsys):
    s = P.resolve(model="llama-3.1-8b", system="aim", context=4096, channels=64, tp=1, pp=2)
    assert (s.ranks, s.n_ch) == (2, 32)                           # channels / (tp pp)
    s = P.resolve(model="llama-3.1-70b", system="hybrid", context=4096)
    assert (s.channels, s.tp, s.pp, s.n_ch, s.dimc_ch) == (1024, 8, 4, 32, 32)
    s = P.resolve(model="llama-3.1-8b", system="aim", context=4096, channels=32)
    assert (s.tp, s.pp, s.n_ch) == (1, 1, 32)                     # one CENT device
    rc, out, err = _point(["--system", "dimc-whatif", "--channels", "32", "--context", "2048",
                           "--batch", "1"], capsys)
    assert rc == 0, err
    assert "token_s" in out and "dimc-whatif" in out


@pytest.mark.parametrize("argv, expect", [
    (["--tp", "3", "--pp", "1"], ["--channels", "channels=256", "3 x 1"]),
    (["--channels", "384", "--tp", "12", "--pp", "1"], ["--tp", "tp=12", "kv_heads=8"]),
    (["--channels", "1280", "--tp", "8", "--pp", "40"], ["--pp", "pp=40", "32 layers"]),
    (["--dimc-channels", "12", "--system", "hybrid"], ["--dimc-channels", "dimc_channels=12"]),
    (["--context", "0"], ["--context", "'0'"]),
    (["--system", "gpu"], ["--system", "'gpu'"]),
    (["--policy", "fast"], ["--policy", "'fast'"]),
    (["--dimc-mm2", "-1"], ["--dimc-mm2", "'-1'"]),
    (["--config", "no-such-model"], ["--config", "'no-such-model'"]),
    (["--wide-inp", "33", "--system", "dimc-whatif"], ["--wide-inp", "wide_inp=33", "1..32"]),
    (["--wide-inp", "0"], ["--wide-inp", "'0'"]),
    (["--system", "hybrid", "--dimc-channels", "128", "--wide-inp", "20"],
     ["--wide-inp", "wide_inp=20", "1..16"]),
])
def test_bad_arguments_exit_2_naming_the_value(argv, expect, capsys, monkeypatch):
    monkeypatch.setattr(P, "run_point", lambda **k: pytest.fail("the point ran"))
    from perf import point_cli
    monkeypatch.setattr(point_cli, "run_point", lambda **k: pytest.fail("the point ran"))
    try:
        rc = cli.main(["perf", "point", *argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    for s in expect:
        assert s in err, (s, err)
    assert "Traceback" not in err


def test_bad_config_file_names_the_missing_field(tmp_path, capsys):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({k: v for k, v in LLAMA2_7B.items() if k != "hidden_size"}))
    with pytest.raises(SystemExit) as e:
        cli.main(["perf", "point", "--config", str(f)])
    assert e.value.code == 2
    assert "hidden_size" in capsys.readouterr().err


@pytest.mark.parametrize("argv, why", [
    (["--batch", "100000", "--system", "dimc-whatif"], "batch=100000 exceeds"),
    (["--system", "dimc", "--dimc-mm2", "1", "--channels", "32"], "weight sets"),
    (["--system", "dimc", "--dimc-mm2", "0.01", "--channels", "32"], "weight sets"),
])
def test_a_point_that_does_not_fit_exits_1(argv, why, capsys):
    rc, out, err = _point([*argv, "--context", "4096"], capsys)
    assert rc == 1
    assert "does not fit" in err and why in err, err


def test_does_not_fit_json_says_so(capsys):
    rc, out, _ = _point(["--batch", "100000", "--system", "dimc-whatif", "--json"], capsys)
    assert rc == 1
    r = json.loads(out)
    assert r["status"].startswith("does not fit") and "pim_s" not in r
    assert (r["system"], r["ctx"]) == ("dimc-whatif", 4096)


def test_dynamic_energy_per_token_of_a_batch(capsys):
    """Two requests on one DIMC rank (dimc-whatif: no static power is sourced): the MAC energy
    per token is the simulated page-MACs x 64 x 64 MACs x 2 ops x 11 fJ / 2 tokens."""
    rc, out, err = _point(["--system", "dimc-whatif", "--channels", "32", "--context", "1024",
                           "--batch", "2", "--json"], capsys)
    assert rc == 0, err
    r = json.loads(out)
    assert (r["batch"], r["micro_batch"], r["ranks"]) == (2, 2, 1)
    e = r["energy"]["components"]
    mac = r["sim_stats"]["mac"] * 64 * 64 * 2 * 11e-15 / 2
    assert e["MAC (DCIM_OP x 2 x n_in x n_out)"]["j"] == pytest.approx(mac, rel=1e-12)
    assert r["energy"]["static_j"] == 0
    # at least every real MAC of a token of the smaller request: weights + attention
    cfg = L.load_config("llama-3.1-8b")
    assert e["MAC (DCIM_OP x 2 x n_in x n_out)"]["j"] >= \
        cfg.macs_per_token(1) * 2 * 11e-15


def test_wide_inp_point_saves_host_beats_not_work(capsys):
    """``--wide-inp 32`` on one DIMC rank of 32 channels under TCP: the same channel work
    (MACs, per-channel WR_INPs, result beats), fewer host commands (one beat per SV token chunk
    instead of one per channel), no slower; the row and the table name wide_inp."""
    kw = dict(model="llama-3.1-8b", system="dimc-whatif", policy="all", context=8192,
              channels=32, batch=1)
    r1, r32 = P.run_point(**kw), P.run_point(**kw, wide_inp=32)
    assert r1["status"] == r32["status"] == "ok"
    assert (r1["wide_inp"], r32["wide_inp"]) == (1, 32)
    s1, s32 = r1["sim_stats"], r32["sim_stats"]
    for k in ("mac", "wr_inp", "rd_out", "busy", "beats"):
        assert s1[k] == s32[k], k
    assert s32["host_cmds"] < s1["host_cmds"]
    assert r32["stage_cycles"] <= r1["stage_cycles"]
    assert r32["mac_utilisation"] >= r1["mac_utilisation"]
    rc, out, err = _point(["--system", "dimc-whatif", "--channels", "32", "--context", "2048",
                           "--batch", "1", "--wide-inp", "8"], capsys)
    assert rc == 0, err
    assert "wide_inp" in out and " 8 " in out
