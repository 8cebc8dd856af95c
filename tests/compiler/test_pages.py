"""The one page allocator (compiler/pages.py): its closed-form counts and addresses equal what it
allocates, and every compiler and the bench count pages with it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.controller import tcp_capacity
from compiler import attention as A
from compiler import llm as L
from compiler.pages import (AllocError, PageAllocator, block_address, kv_blocks, kv_pages,
                            region_sets)
from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams


def _module(n_banks=4, n_sets=8, n_ch=2, n_in=16, n_out=16, n_vpages=256, n_req=8):
    mp = MacroParams(n_in=n_in, n_out=n_out, w_bits=8, x_bits=8, n_sets=n_sets, n_acc=8,
                     tree_stages=1)
    return ModuleParams(ChannelParams(mp, n_banks=n_banks, n_gbuf=8, q_depth=8), n_ch=n_ch,
                        n_vpages=n_vpages, n_req=n_req, fifo_depth=8, loop_len=8)


@pytest.mark.parametrize("n_banks,n_sets,k", [(4, 8, 1), (4, 8, 2), (3, 8, 3), (1, 4, 4)])
def test_block_address_and_region_sets_are_what_the_allocator_takes(n_banks, n_sets, k):
    p = _module(n_banks=n_banks, n_sets=n_sets)
    al = PageAllocator(p, placement="banks")
    n = n_banks * (n_sets // k)           # blocks that fit (a block never spans banks)
    for i in range(n):
        b, s0 = block_address(i, k, n_banks)
        assert al.take(k) == [b * n_sets + s0 + j for j in range(k)]
        used_sets = max(n_sets - len(fr) for fr in al.free)
        assert used_sets == region_sets(i + 1, k, n_banks)
    with pytest.raises(AllocError, match="n_pages"):
        al.take(k)
    assert al.used == n * k


def test_linear_placement_takes_the_lowest_physical_pages():
    p = _module(n_banks=2, n_sets=4)
    al = PageAllocator(p)
    assert al.take(3) == [0, 1, 2]
    al.give_back([1])
    assert al.take(2) == [1, 3]
    assert al.take(1) == [4]
    assert isinstance(AllocError("x"), ValueError)


def _ctx(rng, n):
    return [int(x) for x in rng.integers(1, 120, n)]


@pytest.mark.parametrize("part", ["TCP", "HFP"])
@pytest.mark.parametrize("alloc", ["dpa", "static"])
def test_kv_pages_equals_what_the_attention_compiler_maps(part, alloc, seed):
    """Pages MAPped by an unrolled attention program = the allocator's count per KV head."""
    rng = np.random.default_rng(seed)
    p = _module(n_banks=4, n_sets=64, n_ch=2)
    m = p.channel.macro
    d, heads = int(rng.choice([16, 32])), int(rng.integers(1, 3))
    ctx = _ctx(rng, 3)
    mc = max(ctx) + int(rng.integers(0, 40))
    reqs = A.llama_shaped_decode(contexts=ctx, head_dim=d, group=2, kv_heads=heads,
                                 seed=seed, max_context=mc)
    prog = A.build_program(p, reqs, part, alloc)
    share = p.n_ch if part == "TCP" else 1
    slots = heads if part == "TCP" else math.ceil(heads / p.n_ch)
    want = sum(slots * kv_pages(T if alloc == "dpa" else mc, share, m.n_in, m.n_out, d)
               for T in ctx)
    assert prog.capacity["mapped_pages"] == len(prog.page_table) == want


def test_bench_capacity_accounting_equals_the_program(seed):
    """bench/controller.py's capacity accounting (the allocator's count) = the pages the
    attention compiler maps, static and DPA."""
    rng = np.random.default_rng(seed)
    p = _module(n_banks=4, n_sets=64, n_ch=4)
    m = p.channel.macro
    ctx, mc = _ctx(rng, 3), 128
    reqs = A.llama_shaped_decode(contexts=ctx, head_dim=16, group=2, kv_heads=1, seed=seed,
                                 max_context=mc)
    acct = tcp_capacity(ctx, mc, p.n_ch, m.n_in, m.n_out, m.w_bits, 16)
    for alloc in ("static", "dpa"):
        cap = A.build_program(p, reqs, "TCP", alloc).capacity
        assert cap["mapped_pages"] == acct[f"{alloc}_pages"]
        assert cap["utilisation"] == pytest.approx(acct[alloc], rel=1e-12)


@pytest.mark.parametrize("alloc", ["dpa", "static"])
def test_llm_layout_counts_equal_its_maps(alloc, seed):
    """TCP: the LLM compiler's KV pages = the allocator's count per (request, KV head), and
    its MAPs are the allocator's bank-interleaved addresses (checked page by page)."""
    rng = np.random.default_rng(seed)
    cfg, s = L.tiny_config(heads=4, kv_heads=2), L.small_system()
    sp = s.sim
    ctx = [int(x) for x in rng.integers(1, 300, 2)]
    mc = max(ctx) + 16
    plan = L.compile_step(cfg, s, ctx, "TCP", alloc, max_context=mc)
    kv = [x for x in plan.setup if x.rid != 0]
    want = sum(cfg.kv_heads * kv_pages(T if alloc == "dpa" else mc, sp.n_ch, sp.n_in, sp.n_out,
                                       cfg.head_dim) for T in ctx)
    assert len(kv) == plan.capacity["kv_pages_module"] == want
    kb_n, tc_n = zip(*(kv_blocks(T if alloc == "dpa" else mc, sp.n_ch, sp.n_in, sp.n_out)
                       for T in ctx for _ in range(cfg.kv_heads)), strict=True)
    kt_n, dc_n = math.ceil(cfg.head_dim / sp.n_in), math.ceil(cfg.head_dim / sp.n_out)
    lay = plan.info
    kbase = min(x.vp // sp.n_banks for x in kv)        # first set of the K area
    expect = set()
    for q in range(sum(kb_n)):
        b, s0 = block_address(q, kt_n, sp.n_banks, kbase)
        expect |= {(b, s0 + kt) for kt in range(kt_n)}
    vbase = kbase + region_sets(sum(kb_n), kt_n, sp.n_banks)
    for q in range(sum(tc_n) * dc_n):
        expect.add(block_address(q, 1, sp.n_banks, vbase))
    got = {(x.pp // sp.n_sets, x.pp % sp.n_sets) for x in kv}
    assert got == expect and lay["sets_used"] == vbase + region_sets(sum(tc_n) * dc_n, 1,
                                                                     sp.n_banks)


def test_request_level_policies_against_their_counts():
    p = _module(n_banks=2, n_sets=4, n_vpages=16)
    al = PageAllocator(p, "dynamic", tokens_per_page=4)
    al.admit(0, 16)
    words = al.grow(0, 9, set_tok=False)
    assert len(words) == al.reserved_pages == 3 == al.pages_for(9)
    assert al.page_table() == {0: (0, 0), 1: (0, 1), 2: (0, 2)}
    assert al.live_bytes == 9 * al.bytes_per_token
    assert len(al.release(0)) == 3 and al.page_table() == {} and al.n_free == p.n_pages
    st = PageAllocator(p, "static", tokens_per_page=4)
    assert len(st.admit(1, 13)) == 4 and st.vpages(1) == [0, 1, 2, 3]
    with pytest.raises(AllocError, match="n_pages"):
        st.admit(2, 20)
    assert st.reserved_pages == 4                   # a refused admission changes nothing
