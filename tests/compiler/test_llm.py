"""Decode-step compiler for whole LLMs (compiler/llm): configs, systems, plan invariants,
symbolic semantics of the compressed programs, golden-model runs with data checked against
numpy, scale and bad inputs."""
from __future__ import annotations

import json
import math
import time
from collections import Counter

import numpy as np
import pytest

from compiler import llm as L
from model.module import ModuleModel
from perf.golden import pace_waits
from perf.program import CH_OPS, MAC_AB, WAIT, HCmd, Rep, expand, n_leaves
from spec.isa import HostOp, mod_out_fields
from spec.params import pack_vec, unpack_vec

REAL = {  # hidden, intermediate, layers, heads, kv heads, max_position, vocab
    "qwen1.5-7b": (4096, 11008, 32, 32, 32, 32768, 151936),
    "llama-3.1-8b": (4096, 14336, 32, 32, 8, 131072, 128256),
    "qwen1.5-72b": (8192, 24576, 80, 64, 64, 32768, 152064),
    "llama-3.1-70b": (8192, 28672, 80, 64, 8, 131072, 128256),
}
MAC, RD_OUT, WR_INP, WR_W, MAP = (int(HostOp.MAC), int(HostOp.RD_OUT), int(HostOp.WR_INP),
                                  int(HostOp.WR_W), int(HostOp.MAP))


# ---------------------------------------------------------------------------------------------
# configs and systems

@pytest.mark.parametrize("name", L.MODELS)
def test_configs_have_the_published_values(name):
    cfg = L.load_config(name)
    h, i, n, a, kv, mp, v = REAL[name]
    assert (cfg.hidden, cfg.intermediate, cfg.layers, cfg.heads, cfg.kv_heads, cfg.max_position,
            cfg.vocab) == (h, i, n, a, kv, mp, v)
    assert cfg.head_dim == 128 and cfg.name == name
    raw = json.loads((L.CONFIG_DIR / f"{name}.json").read_text())
    assert raw["torch_dtype"] == "bfloat16" and raw["architectures"] and raw["model_type"]
    assert cfg == L.ModelConfig(name, n, a, kv, 128, h, i, v, mp, tied_embeddings=False)
    tied = L.ModelConfig.from_hf({**raw, "tie_word_embeddings": True}, name=name)
    assert 2 * tied.embedding_params == cfg.embedding_params == 2 * v * h
    # bf16 weights of one layer; INT8 halves them
    assert cfg.weight_bytes_per_layer(8) * 2 == cfg.weight_bytes_per_layer(16)
    assert cfg.kv_bytes_per_token_per_layer(16) == 2 * kv * 128 * 2


def test_from_hf_rejects_missing_and_bad_fields(tmp_path):
    raw = json.loads((L.CONFIG_DIR / "llama-3.1-8b.json").read_text())
    for field in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size"):
        bad = {k: v for k, v in raw.items() if k != field}
        with pytest.raises(ValueError, match=field):
            L.ModelConfig.from_hf(bad)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        L.ModelConfig.from_hf({**raw, "num_hidden_layers": 0})
    with pytest.raises(ValueError, match="kv_heads=5"):
        L.ModelConfig.from_hf({**raw, "num_key_value_heads": 5})
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert L.ModelConfig.from_hf(tmp_path).kv_heads == 8       # a model directory
    with pytest.raises(ValueError, match="nonexistent"):
        L.ModelConfig.from_hf(tmp_path / "nonexistent.json")
    with pytest.raises(ValueError, match="gpt-17"):
        L.load_config("gpt-17")


@pytest.mark.parametrize("name", L.MODELS)
def test_presets_capacity_and_split(name):
    cfg = L.load_config(name)
    big = cfg.layers == 80
    for s in (L.aim_system(cfg), L.dimc_system(cfg)):
        assert s.n_modules == (64 if big else 16)
        assert s.capacity_bytes == (512 if big else 128) * L.GB
        assert s.sim.capacity_bytes == 8 * L.GB
        assert s.tp * s.pp == s.n_modules and cfg.kv_heads % s.tp == 0
        assert s.sim.n_ch == 16 and s.sim.n_banks == 16 and s.sim.n_gbuf == 8
    aim, dimc = L.aim_system(cfg).sim, L.dimc_system(cfg).sim
    assert (aim.backend, aim.n_in, aim.n_out, aim.w_bits, aim.page_bytes, aim.n_sets,
            aim.clock_ghz) == ("dram", 128, 8, 16, 2048, 16384, 2.0)
    assert (dimc.backend, dimc.n_in, dimc.n_out, dimc.w_bits, dimc.page_bytes, dimc.n_sets,
            dimc.clock_ghz) == ("dimc", 64, 64, 8, 4096, 8192, 1.0)
    split = {"qwen1.5-7b": (16, 1), "llama-3.1-8b": (8, 2), "qwen1.5-72b": (64, 1),
             "llama-3.1-70b": (8, 8)}[name]
    assert (L.aim_system(cfg).tp, L.aim_system(cfg).pp) == split


def test_system_validation():
    sp = L.small_system().sim
    with pytest.raises(ValueError, match="n_modules=6"):
        L.System(sp, 6, 2, 2)
    with pytest.raises(ValueError, match="tp=0"):
        L.System(sp, 1, 0, 1)
    with pytest.raises(ValueError, match="tp=4"):           # 1 KV head cannot split 4 ways
        L.compile_step(L.tiny_config(), L.System(sp, 4, 4, 1), [10])
    with pytest.raises(ValueError, match="pp=2"):
        L.compile_step(L.tiny_config(), L.System(sp, 2, 1, 2), [10])


# ---------------------------------------------------------------------------------------------
# plan invariants

def _analytic_macs(cfg, contexts):
    h, d, H, KV, F = cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads, cfg.intermediate
    per = h * H * d + 2 * h * KV * d + H * d * h + 3 * h * F
    return sum(cfg.layers * (per + 2 * H * T * d) for T in contexts)


def _op_counter(items, B=1):
    c = Counter()
    mac_ch = beats = 0
    for x in expand(items):
        if x.op == WAIT:
            continue
        c["MAC_AB" if x.op == MAC_AB else HostOp(x.op).name] += 1
        if x.op == MAC:
            mac_ch += bin(x.chmask).count("1")
        if x.op == MAC_AB:
            mac_ch += bin(x.chmask).count("1") * B
        if x.op == RD_OUT:
            beats += bin(x.chmask).count("1")
    return c, mac_ch, beats


@pytest.mark.parametrize("part", ["TCP", "HFP"])
@pytest.mark.parametrize("kind", ["aim", "dimc"])
def test_plan_counts_and_useful_macs(part, kind):
    cfg = L.load_config("llama-3.1-8b")
    s = (L.aim_system if kind == "aim" else L.dimc_system)(cfg)
    ctx = [700, 2500, 1300]
    plan = L.compile_step(cfg, s, ctx, part, "dpa")
    c, mac_ch, beats = _op_counter(plan.layer, s.sim.n_banks)
    assert c["MAC_AB"] > 0                               # the presets have all-bank MACs
    assert n_leaves(plan.layer) == plan.counts["total"] == sum(c.values())
    assert {k: v for k, v in plan.counts.items() if k in c} == dict(c)
    assert (plan.counts["mac_ch"], plan.counts["out_beats"]) == (mac_ch, beats)
    assert c["BARRIER"] == 6
    assert plan.useful_macs == _analytic_macs(cfg, ctx)
    assert plan.pim_macs == plan.layers * mac_ch * s.sim.n_in * s.sim.n_out
    assert plan.layers == 16 and plan.stages == 2
    # the whole system executes at least the useful MACs (padding only adds)
    assert plan.pim_macs * s.n_modules >= plan.useful_macs
    # KV append: d rows of the K pages and dc_n rows of V per (request, KV head)
    dc_n = math.ceil(128 / s.sim.n_out)
    assert plan.counts["WR_W"] == len(ctx) * 1 * (128 + dc_n)


def test_tcp_uses_every_channel_hfp_does_not_at_batch_1():
    cfg = L.load_config("llama-3.1-8b")          # tp 8: one KV head per module
    for s in (L.aim_system(cfg), L.dimc_system(cfg)):
        masks = {}
        for part in ("TCP", "HFP"):
            plan = L.compile_step(cfg, s, [8192], part, "dpa")
            m = 0
            for x in expand(plan.parts["qk"] + plan.parts["sv"]):
                if x.op in (MAC, MAC_AB):
                    m |= x.chmask
            masks[part] = bin(m).count("1")
        assert masks == {"TCP": 16, "HFP": 1}


def test_dpa_reserves_less_than_static(seed):
    """Single-bank MACs (pages allocated one by one; all-bank: test_all_bank_allocates_stripes)."""
    cfg = L.load_config("llama-3.1-8b")
    ctx = L.request_lengths(8192, 4, seed)
    for s in (L.aim_system(cfg, all_bank=False), L.dimc_system(cfg, all_bank=False)):
        for part in ("TCP", "HFP"):
            st = L.compile_step(cfg, s, ctx, part, "static", max_context=8192).capacity
            dp = L.compile_step(cfg, s, ctx, part, "dpa").capacity
            assert dp["live_kv_bytes"] == st["live_kv_bytes"] > 0
            assert dp["reserved_kv_bytes"] <= st["reserved_kv_bytes"]
            assert 0 < st["utilisation"] < dp["utilisation"] <= 1
            assert st["fits"] and dp["fits"]
        # HFP: 4 requests x 4 layers = 16 units share each page (one per channel), so static
        # reserves exactly what TCP reserves; DPA reserves the longest unit's pages per slot
        tcp = L.compile_step(cfg, s, ctx, "TCP", "static", max_context=8192).capacity
        hfp = L.compile_step(cfg, s, ctx, "HFP", "static", max_context=8192).capacity
        assert hfp["reserved_kv_bytes"] == tcp["reserved_kv_bytes"]
        assert hfp["utilisation"] == tcp["utilisation"] == sum(ctx) / (4 * 8192)
        hfp = L.compile_step(cfg, s, ctx, "HFP", "dpa").capacity
        assert hfp["utilisation"] == pytest.approx(sum(ctx) / (4 * max(ctx)), rel=0.02)
    # static reservation is max_context per request, rounded up to pages
    s = L.aim_system(cfg)
    one = L.compile_step(cfg, s, [100], "TCP", "static", max_context=32768).capacity
    assert one["reserved_kv_bytes"] == cfg.kv_bytes_per_token(16) * 32768


def test_hfp_capacity_counts_a_shared_page_once(seed):
    """HFP: the units of a slot (requests x KV heads x layers of a group, on distinct
    channels) share its pages; reserved = pages MAPped x C channels x page bytes (each page
    once), utilisation = live / reserved."""
    cfg = L.load_config("llama-3.1-8b")                  # 1 KV head per module, 16 layers
    s = L.dimc_system(cfg)
    sp = s.sim
    ctx = L.request_lengths(8192, 3, seed)
    shards = cfg.layers * s.tp
    for alloc in ("static", "dpa"):
        plan = L.compile_step(cfg, s, ctx, "HFP", alloc, max_context=8192)
        cap = plan.capacity
        assert plan.group == cap["layer_group"] == 16        # 48 units fill 3 slots exactly
        kv_maps = [m for m in plan.setup if m.rid != 0]
        assert len({m.vp for m in kv_maps}) == len(kv_maps) == cap["kv_pages_module"]
        assert cap["reserved_kv_bytes"] == \
            len(kv_maps) * sp.n_ch * sp.page_bytes * shards // plan.layers
        assert cap["live_kv_bytes"] == sum(ctx) * cfg.kv_bytes_per_token(8)
        assert cap["utilisation"] == cap["live_kv_bytes"] / cap["reserved_kv_bytes"]
        # 3 slots (each holds all 3 requests' heads of some layers), each reserving its
        # longest unit's key blocks and token chunks (64 tokens, 2 pages each: kt_n = dc_n = 2)
        T = 8192 if alloc == "static" else max(ctx)
        assert cap["kv_pages_module"] == 3 * math.ceil(T / 64) * (2 + 2)
    st = L.compile_step(cfg, s, ctx, "HFP", "static", max_context=8192).capacity
    assert st["utilisation"] == sum(ctx) / (3 * 8192)            # as TCP's (pages full)
    # without layer groups each layer's 3 units fill 3 of a slot's 16 channels
    one = L.compile_step(cfg, s, ctx, "HFP", "static", max_context=8192, group=1)
    assert one.group == 1 and one.capacity["kv_pages_module"] == 16 * 128 * 4
    assert one.capacity["utilisation"] == pytest.approx(st["utilisation"] * 3 / 16)


def test_max_batch(seed):
    cfg = L.load_config("llama-3.1-8b")
    s = L.aim_system(cfg)
    st = L.max_batch(cfg, s, 32768, "static", seed=seed)
    dp = L.max_batch(cfg, s, 32768, "dpa", seed=seed)
    assert 1 <= st < dp
    L.compile_step(cfg, s, L.request_lengths(32768, dp, seed), "TCP", "dpa")
    with pytest.raises(ValueError, match="n_sets"):
        L.compile_step(cfg, s, L.request_lengths(32768, dp + 1, seed), "TCP", "dpa")
    with pytest.raises(ValueError, match="n_sets"):
        L.compile_step(cfg, s, [1000] * (st + 1), "TCP", "static", max_context=32768)
    assert L.max_batch(cfg, s, lambda n: [4096] * n, "dpa") >= dp
    # HFP shares each page among 16 units (requests x layers on distinct channels)
    assert L.max_batch(cfg, s, 32768, "static", "HFP", seed=seed) == st
    assert L.max_batch(cfg, s, 32768, "dpa", "HFP", seed=seed) < dp   # a slot's longest unit


# ---------------------------------------------------------------------------------------------
# semantics of the compressed programs

def _max_rep(items) -> int:
    """Largest trip count of any Rep in the tree."""
    return max([0] + [max(x.n, *(_max_rep(b) for b in x.bodies)) for x in items
                      if isinstance(x, Rep)])


def _check_pages(plan):
    """Every page command: vp = set*B + bank, mapped by setup to (rid, bank*S + set)."""
    B, S = plan.system.sim.n_banks, plan.system.sim.n_sets
    pt = {}
    for m in plan.setup:
        assert m.op == MAP and m.vp not in pt
        pt[m.vp] = (m.rid, m.pp)
    assert len({pp for _, pp in pt.values()}) == len(pt)
    n = 0
    for x in expand(plan.step):
        n += x.op != WAIT
        if x.op == MAC_AB:                  # a stripe: set s of every bank, one owner
            assert x.bank == 0 and x.vp == x.set * B, x
            for b in range(B):
                assert pt.get(x.vp + b) == (x.rid, b * S + x.set), (x, b)
        elif x.op in CH_OPS and x.op != WR_INP:
            assert x.vp == x.set * B + x.bank, x
            assert pt.get(x.vp) == (x.rid, x.bank * S + x.set), x
    assert n == plan.n_leaves


def _meaning(cmds, C, vals=None, n_in=0, n_out=0, B=1):
    """Program-order meaning of the commands ``cmds`` (expanded HCmds, WAITs skipped), per
    channel: which pages each RD_OUT reads and, with ``vals`` (the WR_INP vector / WR_W row of
    each command), the values it returns, computed with numpy (a MAC adds x @ W of its GBuf
    entry and page; a MAC_AB is the MACs of set s of each of the ``B`` banks).  Returns
    Counter((chan, bank, set) -> times read out), the read lists and, per channel, the
    (bank, o, y) of every RD_OUT in order."""
    ob, gb, reads, cover = {}, {}, [], Counter()
    w = {}
    outs = {c: [] for c in range(C)}
    cmds0 = [x for x in cmds if x.op != WAIT]
    cmds, vv = [], vals
    for x in cmds0:
        if x.op == MAC_AB:
            cmds += [x._replace(op=MAC, bank=b, vp=x.vp + b) for b in range(B)]
        else:
            cmds.append(x)
    if vals is not None:
        vv = []
        for x, v in zip(cmds0, vals, strict=True):
            vv += [v] * (B if x.op == MAC_AB else 1)
    vals = vv
    for i, x in enumerate(cmds):
        chans = [c for c in range(C) if x.chmask >> c & 1]
        v = vals[i] if vals is not None else None
        if x.op == WR_INP:
            gb.update(((c, x.g), v) for c in chans)
        elif x.op == WR_W and vals is not None:
            for c in chans:
                w.setdefault((c, x.bank, x.set), np.zeros((n_in, n_out), np.int64))[x.row] = v
        elif x.op == MAC:
            for c in chans:
                assert (c, x.g) in gb, f"MAC reads a GBuf entry never written: {x}"
                k = (c, x.bank, x.o)
                y = None
                if vals is not None:
                    y = gb[(c, x.g)] @ w.get((c, x.bank, x.set), np.zeros((n_in, n_out),
                                                                            np.int64))
                if x.acc:
                    lst, acc = ob[k]
                    ob[k] = (lst + [(x.rid, x.set)], None if y is None else acc + y)
                else:
                    ob[k] = ([(x.rid, x.set)], y)
        elif x.op == RD_OUT:
            for c in chans:
                lst, acc = ob.get((c, x.bank, x.o), (None, None))
                assert lst and all(r == x.rid for r, _ in lst), x
                reads.append(lst)
                cover.update((c, x.bank, s) for _, s in lst)
                if vals is not None:
                    outs[c].append((x.bank, x.o, tuple(int(a) for a in acc)))
    return cover, reads, outs


def _symbolic(plan, part):
    """Which pages each RD_OUT of a part reads (see :func:`_meaning`)."""
    sp = plan.system.sim
    return _meaning(list(expand(plan.parts[part])), sp.n_ch, B=sp.n_banks)[:2]


@pytest.mark.parametrize("part", ["TCP", "HFP", "CENT"])
@pytest.mark.parametrize("kind", ["aim", "dimc"])
def test_programs_read_every_page_the_right_number_of_times(part, kind):
    cfg = L.load_config("llama-3.1-8b")
    s = (L.aim_system if kind == "aim" else L.dimc_system)(cfg)
    sp = s.sim
    ctx = [700, 300, 2000]
    plan = L.compile_step(cfg, s, ctx, part, "dpa")
    if kind == "dimc":              # (aim: 16 layers x longer programs; checked elsewhere)
        _check_pages(plan)
    b, grp, C = len(ctx), cfg.group, sp.n_ch
    for key in ("qkv", "o", "gu", "down"):
        cover, _ = _symbolic(plan, key)
        g = plan.info["gemv"][key]
        assert set(cover.values()) == {b}                      # every weight page, b requests
        assert len(cover) == g["units"] * g["kc"] * g["channels"]
    kt_n, dc_n = math.ceil(128 / sp.n_in), math.ceil(128 / sp.n_out)
    Cs = C if part == "TCP" else 1
    Ck = C if part in ("TCP", "CENT") else 1                 # CENT: K as TCP, V as HFP
    blocks = sum(math.ceil(math.ceil(T / Ck) / sp.n_out) for T in ctx)
    chunks = sum(math.ceil(math.ceil(T / Cs) / sp.n_in) for T in ctx)
    cover, reads = _symbolic(plan, "qk")
    assert set(cover.values()) == {grp} and len(cover) == blocks * kt_n * Ck
    assert {len(r) for r in reads} == {kt_n}                   # one key block per RD_OUT
    cover, reads = _symbolic(plan, "sv")
    assert set(cover.values()) == {grp} and len(cover) == chunks * dc_n * Cs


def test_cent_mapping_on_aim(seed):
    """CENT's mapping on the AiM preset: every GEMV, QK^T round and SV token chunk is one
    all-bank MAC; QK^T is multicast to every channel (token-parallel over banks and
    channels), SV runs each (request, KV head) on one channel (head dims across the 16 banks:
    dc_n = 16 = n_banks); the blocking host waits after every group of reads."""
    cfg = L.load_config("llama-3.1-8b")
    pol = L.policy("baseline")
    s = pol.system(L.aim_system(cfg))
    ctx = L.request_lengths(16384, 3, seed)
    plan = L.compile_step(cfg, s, ctx, max_context=16384, **pol.compile_kw)
    assert plan.info["all_bank"] and plan.info["sv_all_bank"] and plan.info["blocking"]
    allm = (1 << s.sim.n_ch) - 1
    for key in ("qk", "sv", "qkv", "gu"):
        ops = Counter(x.op for x in expand(plan.parts[key]))
        assert ops[MAC_AB] > 0 and ops[MAC] == 0, key
        assert ops[WAIT] > 0, key
    qk = {x.chmask for x in expand(plan.parts["qk"]) if x.op == MAC_AB}
    sv = {x.chmask for x in expand(plan.parts["sv"]) if x.op == MAC_AB}
    assert qk == {allm}
    assert sv and all(m.bit_count() == 1 for m in sv)
    # one WAIT per QK^T round: rounds of 16 banks x 8 tokens per channel, per query head
    kb = [math.ceil(math.ceil(T / s.sim.n_ch) / s.sim.n_out) for T in ctx]
    rounds = sum(math.ceil(k / s.sim.n_banks) for k in kb) * cfg.group
    assert Counter(x.op for x in expand(plan.parts["qk"]))[WAIT] == rounds


def test_all_bank_allocates_stripes(seed):
    """With all-bank MACs every K stream starts on bank 0 and holds whole stripes (DPA
    included): the reservation is the single-bank one rounded up to stripes, every MAC_AB's
    stripe is MAPped to one owner (checked by _check_pages)."""
    cfg = L.load_config("llama-3.1-8b")
    ctx = L.request_lengths(8192, 3, seed)
    for alloc in ("static", "dpa"):
        ab = L.compile_step(cfg, L.aim_system(cfg), ctx, "TCP", alloc, max_context=8192)
        one = L.compile_step(cfg, L.aim_system(cfg, all_bank=False), ctx, "TCP", alloc,
                             max_context=8192)
        _check_pages(ab)
        B = ab.system.sim.n_banks
        assert ab.capacity["reserved_kv_bytes"] >= one.capacity["reserved_kv_bytes"]
        assert ab.capacity["live_kv_bytes"] == one.capacity["live_kv_bytes"]
        stripes = Counter(m.vp // B for m in ab.setup if m.rid != 0)
        assert set(stripes.values()) == {B}      # KV pages (AiM: K and V): whole stripes


def test_layers_are_one_strided_rep():
    cfg = L.load_config("llama-3.1-8b")
    s = L.aim_system(cfg)
    plan = L.compile_step(cfg, s, [3000, 900], "TCP", "static", max_context=4096)
    (rep,) = plan.step
    assert isinstance(rep, Rep) and rep.n == 16 and rep.set_stride == plan.layer_sets
    assert rep.vp_stride == plan.layer_sets * 16
    _check_pages(plan)


# ---------------------------------------------------------------------------------------------
# golden model (cycle-exact module) on a small system

def _run(plan, seed, n_layers=1):
    """Run the first ``n_layers`` (1 or all) on the golden model with random data: after the
    MAPs, WR_Ws of random weights into every fourth row of every page the step MACs (in every
    channel that MACs it; the other rows stay 0); random inputs and KV-append rows.  Every
    result beat must equal the numpy program-order meaning of the same commands.  Returns
    (run, items: the compressed program that ran, for the timing model)."""
    sp = plan.system.sim
    p = sp.to_module(n_vpages=256, n_req=16)
    step = list(plan.layer if n_layers == 1 else plan.step)
    pages = {}
    for x in expand(step):
        if x.op in (MAC, MAC_AB):
            for c in range(sp.n_ch):
                if x.chmask >> c & 1:
                    for b in ([x.bank] if x.op == MAC else range(sp.n_banks)):
                        pages.setdefault((c, b, x.set), (x.rid, x.set * sp.n_banks + b))
    preload = [HCmd(WR_W, 1 << c, rid, vp, row=r, bank=b, set=st)
               for (c, b, st), (rid, vp) in sorted(pages.items()) for r in range(0, sp.n_in, 4)]
    items = plan.setup_layers(n_layers) + preload + step
    cmds = [x for x in expand(items) if x.op != WAIT]
    rng = np.random.default_rng(seed)
    vals = [rng.integers(-8, 8, sp.n_in) if x.op == WR_INP else
            rng.integers(-8, 8, sp.n_out) if x.op == WR_W else None for x in cmds]
    bits = {WR_INP: sp.x_bits, WR_W: sp.w_bits}
    words = pace_waits(p, items, data=lambda i, x: 0 if vals[i] is None
                       else pack_vec(vals[i], bits[x.op]))
    run = ModuleModel(p).run(words)
    assert run.status == "ok"
    assert run.errs == [] and run.dropped == [] and run.chan_errs == []
    _, _, want = _meaning(cmds, sp.n_ch, vals, sp.n_in, sp.n_out, sp.n_banks)
    fo, acc_w = mod_out_fields(p), p.channel.macro.acc_width
    got = {c: [] for c in range(sp.n_ch)}
    for w in run.outs:
        f = {k: (w >> fo[k].offset) & ((1 << fo[k].width) - 1) for k in ("chan", "bank", "o")}
        got[f["chan"]].append((f["bank"], f["o"], tuple(unpack_vec(w, sp.n_out, acc_w))))
    assert got == want
    assert sum(any(y) for v in want.values() for _, _, y in v) > len(run.outs) // 2
    return run, items


@pytest.mark.parametrize("name", ["baseline", "tcp", "dcs", "dpa", "all", "baseline_1bank"])
def test_policies_run_on_the_golden_model_with_data(name, seed):
    """Every policy's layer (all-bank MACs, CENT's mapping, blocking reads) on a small all-bank
    module: every result equals numpy's program-order meaning (timing: test_cent_baseline)."""
    pol = L.policy(name)
    s = pol.system(L.small_system())
    for ctx, mc in (([200, 90], 256), ([430], None)):
        plan = L.compile_step(L.tiny_config(), s, ctx, max_context=mc, **pol.compile_kw)
        _check_pages(plan)
        run, _ = _run(plan, seed)
        assert len(run.outs) == plan.counts["out_beats"]


GOLDEN = [("HFP", "static", [200, 90], 256), ("HFP", "dpa", [200, 90], 256),
          ("TCP", "static", [200, 90], 256), ("TCP", "dpa", [200, 90], 256),
          ("TCP", "dpa", [1000], None), ("HFP", "dpa", [430], None),
          ("HFP", "static", [37, 100, 64], 128)]


@pytest.mark.parametrize("part,alloc,ctx,mc", GOLDEN)
def test_small_plan_runs_on_the_golden_model(part, alloc, ctx, mc, seed):
    cfg, s = L.tiny_config(), L.small_system()
    plan = L.compile_step(cfg, s, ctx, part, alloc, max_context=mc)
    if max(ctx) >= 400:                      # long enough for strided round loops
        assert _max_rep(plan.parts["qk"]) >= 2 and _max_rep(plan.parts["sv"]) >= 2
    _check_pages(plan)
    run, _ = _run(plan, seed)
    assert len(run.outs) == plan.counts["out_beats"]
    assert sum(run.busy_cycles) > 0


def test_two_layers_and_gqa_group_on_the_golden_model(seed):
    cfg = L.tiny_config(layers=2, heads=4, kv_heads=2)
    s = L.small_system()
    for part in ("TCP", "HFP"):
        plan = L.compile_step(cfg, s, [150, 60], part, "dpa")
        assert plan.layers == 2
        run, _ = _run(plan, seed, n_layers=2)
        assert len(run.outs) == 2 * plan.counts["out_beats"]


HFP_GROUPS = [  # layers, contexts, alloc, max_context, layers per group
    (5, [60, 20], "static", 64, 2),          # 2 units / layer: groups of 2, a partial last
    (5, [60, 20], "dpa", None, 2),
    (3, [200], "static", None, 3),           # 1 unit / layer: 3 layers on channels 0, 1, 2
    (4, [37, 100, 64], "dpa", None, 4),      # 12 units of 4 layers in 3 slots of 4 channels
]


@pytest.mark.parametrize("layers,ctx,alloc,mc,k", HFP_GROUPS)
def test_hfp_layers_rotate_channels_and_share_kv_pages(layers, ctx, alloc, mc, k, seed):
    """HFP with fewer units than channels: layer j of a group runs its units on channels
    j*U .. j*U+U-1 and the group's layers share one KV area (each channel holding its own
    unit's data in the same pages).  The step (a Rep over the group's layer variants) runs
    on the golden model and the timing model gives the same cycles."""
    from perf.sim import simulate
    cfg, s = L.tiny_config(layers=layers), L.small_system()
    C = s.sim.n_ch
    plan = L.compile_step(cfg, s, ctx, "HFP", alloc, max_context=mc)
    U = len(ctx)
    assert plan.group == k and len(plan.variants) == k and plan.variants[0] is plan.layer
    (rep,) = plan.step
    assert rep.n == layers and len(rep.bodies) == k
    assert rep.set_stride == plan.layer_sets and rep.vp_stride == plan.layer_sets * 4
    for j, v in enumerate(plan.variants):
        chans = {c for x in expand(v) if x.op == MAC and x.rid != 0
                 for c in range(C) if x.chmask >> c & 1}
        assert chans == {(j * U + u) % C for u in range(U)}
        assert L.plan_counts(v)["total"] == plan.counts["total"]
    # KV pages are MACed on several channels (one unit each); every page MAPped once
    users = {}
    for x in expand(plan.step):
        if x.op == MAC and x.rid != 0:
            users.setdefault((x.bank, x.set), set()).add(x.chmask)
    assert max(len(m) for m in users.values()) == min(C, k * U)
    _check_pages(plan)
    assert sum(m.rid != 0 for m in plan.setup) == plan.capacity["kv_pages_module"]
    for n in range(1, layers):                               # the first n layers' pages
        sub = plan.setup_layers(n)
        assert {m.vp for m in sub} <= {m.vp for m in plan.setup}
        assert len({m.vp for m in sub}) == len(sub)
    assert plan.capacity["sets_used"] <= s.sim.n_sets
    assert plan.capacity["sets_used"] == 1 + max(m.vp // 4 for m in plan.setup)
    run, items = _run(plan, seed, n_layers=layers)
    assert len(run.outs) == layers * plan.counts["out_beats"]
    res = simulate(s.sim, items)
    assert (res.cycles, res.stats["busy"], res.stats["beats"]) == \
        (run.cycles, sum(run.busy_cycles), len(run.outs))


def test_small_module_without_deferral_room(seed):
    """n_acc 2 / n_gbuf 2: no OBuf halves for deferred RD_OUTs; still correct."""
    cfg = L.tiny_config()
    s = L.small_system(n_acc=2, n_gbuf=2)
    for part in ("TCP", "HFP"):
        plan = L.compile_step(cfg, s, [120, 50], part, "dpa")
        for key in plan.parts:
            if key in ("qkv", "o", "gu", "down", "qk", "sv"):
                cover, _ = _symbolic(plan, key)
                assert len(set(cover.values())) == 1
        run, _ = _run(plan, seed)
        assert len(run.outs) == plan.counts["out_beats"]


# ---------------------------------------------------------------------------------------------
# scale

@pytest.mark.parametrize("kind", ["aim", "dimc"])
def test_72b_at_1m_tokens_is_a_small_tree_built_fast(kind):
    cfg = L.load_config("llama-3.1-70b")
    s = (L.aim_system if kind == "aim" else L.dimc_system)(cfg)
    t = time.perf_counter()
    plan = L.compile_step(cfg, s, [1 << 20], "TCP", "dpa")
    dt = time.perf_counter() - t
    assert dt < 1.0
    nodes = L.tree_nodes(plan.step)
    assert nodes < 10_000
    assert plan.n_leaves == n_leaves(plan.step) > 1_000_000
    assert plan.capacity["fits"] and plan.capacity["utilisation"] > 0.99
    assert plan.layers == 10
    # the QK^T loop of one pass: a Rep over (1M / 16 channels / n_out) / 16 banks rounds
    assert _max_rep(plan.parts["qk"]) == (1 << 20) // 16 // s.sim.n_out // 16 - 1


def test_hfp_70b_at_1m_tokens():
    """llama-3.1-70b, 1 request of 1M tokens, HFP static: tp 8 leaves one KV head per module
    and layer; the stage's 10 layers run on channels 0..9 and share one KV area.  DIMC (INT8):
    a head's K+V is 1M x 128 x 2 B = 256 MB of a 512 MB channel: fits.  AiM (bf16): 512 MB,
    a whole channel, which also holds its share of the weights: cannot fit."""
    cfg = L.load_config("llama-3.1-70b")
    s = L.dimc_system(cfg)
    t = time.perf_counter()
    plan = L.compile_step(cfg, s, [1 << 20], "HFP", "static")
    assert time.perf_counter() - t < 1.0
    cap = plan.capacity
    assert plan.group == 10 and cap["fits"] and cap["sets_used"] <= s.sim.n_sets
    # one slot: 2^20 / 64 key blocks x 2 pages + 2^20 / 64 token chunks x 2 pages, 16 banks
    assert cap["kv_pages_module"] == 4 * (1 << 20) // 64
    w_sets = sum(g["sets"] for g in plan.info["gemv"].values())
    assert cap["sets_used"] == plan.layer_sets == 4096 + 10 * w_sets      # [K | V | 10 x W]
    assert cap["utilisation"] == pytest.approx(10 / 16)           # 10 of 16 channels hold a head
    assert L.tree_nodes(plan.step) < 50_000
    assert plan.n_leaves == n_leaves(plan.step) > 1_000_000
    s = L.aim_system(cfg)
    with pytest.raises(ValueError, match="one head's cache alone is 262144 pages = 16384 sets"):
        L.compile_step(cfg, s, [1 << 20], "HFP", "static")
    assert L.compile_step(cfg, s, [1 << 20], "TCP", "static").capacity["fits"]


def test_qwen72b_at_1m_does_not_fit():
    cfg = L.load_config("qwen1.5-72b")               # MHA: 2.6 MB of KV per token
    with pytest.raises(ValueError, match="n_sets"):
        L.compile_step(cfg, L.aim_system(cfg), [1 << 20])
    plan = L.compile_step(cfg, L.dimc_system(cfg), [1 << 20], strict=False)
    assert not plan.capacity["fits"]


# ---------------------------------------------------------------------------------------------
# bad inputs

def test_bad_inputs_raise_naming_the_value():
    cfg, s = L.tiny_config(), L.small_system()
    with pytest.raises(ValueError, match="'XFP'"):
        L.compile_step(cfg, s, [10], "XFP")
    with pytest.raises(ValueError, match="'lazy'"):
        L.compile_step(cfg, s, [10], "TCP", "lazy")
    with pytest.raises(ValueError, match="no requests"):
        L.compile_step(cfg, s, [])
    with pytest.raises(ValueError, match="-3"):
        L.compile_step(cfg, s, [5, -3])
    with pytest.raises(ValueError, match="max_context=8"):
        L.compile_step(cfg, s, [10], max_context=8)
    with pytest.raises(ValueError, match="n_gbuf=1"):      # head_dim 32 = 2 chunks of 16
        L.compile_step(cfg, L.small_system(n_gbuf=1), [10])
    with pytest.raises(ValueError, match="n_acc=1"):       # SV: 2 dim chunks on 1 bank
        L.compile_step(cfg, L.small_system(n_banks=1, n_acc=1), [10])
    with pytest.raises(ValueError, match="n_sets=64"):
        L.compile_step(cfg, s, [5000], "HFP")
    with pytest.raises(ValueError, match="contexts"):
        L.max_batch(cfg, s, "long")
    with pytest.raises(ValueError, match="group=2"):       # 1 layer: groups of 1
        L.compile_step(cfg, s, [10], "HFP", group=2)
    with pytest.raises(ValueError, match="group=2"):
        L.max_batch(cfg, s, 100, partition="TCP", group=2)
