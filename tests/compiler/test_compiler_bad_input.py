"""Bad input to the compilers, the page allocator, the request mixes and the performance model:
each is a ValueError naming the argument and its value (never a silently wrong number, a
TypeError, an AttributeError or a ZeroDivisionError)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.controller import tcp_capacity
from compiler import attention as A
from compiler import llm as L
from compiler.host import pace, run_program
from compiler.pages import PageAllocator, kv_pages
from compiler.programs import gemv_program, qk_stream_program
from perf.energy import module_dynamic
from perf.program import HCmd, Rep, from_host_words, to_host_words
from perf.sim import simulate
from spec.isa import ChannelParams, HostOp, ModuleParams
from spec.params import MacroParams
from workloads.mix import request_lengths

CP = ChannelParams(MacroParams(n_in=16, n_out=16), n_banks=4)
MP = ModuleParams(ChannelParams(MacroParams(n_in=16, n_out=16, n_sets=2), n_banks=4), n_ch=2)
RAW = json.loads((L.CONFIG_DIR / "llama-3.1-8b.json").read_text())


def _req(T=20, d=16, g=2):
    return A.llama_head(np.random.default_rng(0), T, d, g)


def test_gemv_program_rejects_float_weights():
    """A float weight is never truncated (121.6 ran as 121: 64 expected for a true 121.6)."""
    with pytest.raises(ValueError, match=r"Wq\[0, 1\]=121.6"):
        gemv_program(CP, np.array([[0.0, 121.6]]), np.array([1, 1]))
    with pytest.raises(ValueError, match="x has dtype float64"):
        gemv_program(CP, np.array([[1, 2]]), np.array([1.0, 2.0]))
    prog = gemv_program(CP, np.array([[3, -2]]), np.array([5, 4]))
    assert prog.expected.tolist() == [7]


def test_from_hf_tie_word_embeddings_must_be_a_bool():
    with pytest.raises(ValueError, match="tie_word_embeddings='false'"):
        L.ModelConfig.from_hf({**RAW, "tie_word_embeddings": "false"})
    assert L.ModelConfig.from_hf({**RAW, "tie_word_embeddings": True}).tied_embeddings is True
    assert L.ModelConfig.from_hf({**RAW, "tie_word_embeddings": False}).tied_embeddings is False


def test_from_hf_none():
    with pytest.raises(ValueError, match="src=None"):
        L.ModelConfig.from_hf(None)


def test_request_max_context_must_be_an_int():
    with pytest.raises(ValueError, match="max_context=20.5"):
        A.Request(*_req(), max_context=20.5)


def test_request_mix_head_dim_zero():
    with pytest.raises(ValueError, match="head_dim=0"):
        A.request_mix(head_dim=0)


def test_compile_step_contexts_must_be_a_list():
    with pytest.raises(ValueError, match="contexts=100"):
        L.compile_step(L.tiny_config(), L.small_system(), 100)


def test_build_program_params_none():
    with pytest.raises(ValueError, match="p=None"):
        A.build_program(None, [A.Request(*_req())])


def test_qk_stream_program_empty_k():
    with pytest.raises(ValueError, match=r"K \(0, 16\)"):
        qk_stream_program(CP, np.zeros((0, 16), int), np.zeros(16, int))


# similar paths in the public functions (each was a TypeError, AttributeError, ZeroDivisionError,
# IndexError, KeyError, a ValueError naming neither argument nor value, or silently accepted)
CASES = {
    "build_program requests=None": (lambda: A.build_program(MP, None), "requests=None"),
    "build_program loop='yes'": (lambda: A.build_program(MP, [A.Request(*_req())], loop="yes"),
                                 "loop='yes'"),
    "Request K scalar": (lambda: A.Request(1.0, *_req()[1:]), "shapes K"),
    "llama_shaped_decode contexts=5": (lambda: A.llama_shaped_decode(contexts=5), "contexts=5"),
    "request_mix seed=-1": (lambda: A.request_mix(seed=-1), "seed=-1"),
    "reference_attention shapes": (lambda: A.reference_attention(np.ones((4, 8)), np.ones((4, 8)),
                                                                 np.ones((1, 7))), "shapes K"),
    "minilm_decode paragraph=''": (lambda: A.minilm_decode(""), "paragraph=''"),
    "aim_system cfg=None": (lambda: L.aim_system(None), "cfg=None"),
    "max_batch limit=None": (lambda: L.max_batch(L.tiny_config(), L.small_system(), 100,
                                                 limit=None), "limit=None"),
    "plan_counts items=None": (lambda: L.plan_counts(None), "items=None"),
    "tree_nodes items=3": (lambda: L.tree_nodes(3), "items=3"),
    "ModelConfig tied_embeddings='no'": (
        lambda: L.ModelConfig("m", 1, 2, 1, 8, 16, 32, 64, tied_embeddings="no"),
        "tied_embeddings='no'"),
    "gemv_program p=None": (lambda: gemv_program(None, np.ones((1, 1), int), np.ones(1, int)),
                            "p=None"),
    "gemv_program gap=-1": (lambda: gemv_program(CP, np.ones((1, 1), int), np.ones(1, int),
                                                 gap=-1), "gap=-1"),
    "qk_stream_program batch=0": (lambda: qk_stream_program(CP, np.ones((4, 16), int),
                                                            np.ones(16, int), batch=0), "batch=0"),
    "PageAllocator tokens_per_page=0": (lambda: PageAllocator(MP, tokens_per_page=0),
                                        "tokens_per_page=0"),
    "PageAllocator params=None": (lambda: PageAllocator(None), "params=None"),
    "PageAllocator placement": (lambda: PageAllocator(MP, placement="random"),
                                "placement='random'"),
    "PageAllocator.grow unknown rid": (lambda: PageAllocator(MP).grow(3, 4), "rid=3"),
    "PageAllocator.release unknown rid": (lambda: PageAllocator(MP).release(1), "rid=1"),
    "PageAllocator.admit rid=1.5": (lambda: PageAllocator(MP).admit(1.5, 4), "rid=1.5"),
    "PageAllocator.admit max_tokens=2.5": (lambda: PageAllocator(MP).admit(0, 2.5),
                                           "max_tokens=2.5"),
    "kv_pages head_dim=0": (lambda: kv_pages(10, 1, 16, 16, 0), "head_dim=0"),
    "tcp_capacity tokens=[]": (lambda: tcp_capacity([], 64, 2, 16, 16, 8, 16), r"tokens=\[\]"),
    "tcp_capacity chunk_pages=0": (lambda: tcp_capacity([10], 64, 2, 16, 16, 8, 16,
                                                        chunk_pages=0), "chunk_pages=0"),
    "pace cmds=[5]": (lambda: pace(MP, [5]), r"cmds\[0\]=5"),
    "run_program prog=None": (lambda: run_program(None), "prog=None"),
    "simulate items=[5]": (lambda: simulate(L.small_system().sim, [5]), r"items\[0\]=5"),
    "to_host_words p=None": (lambda: to_host_words(None, []), "p=None"),
    "from_host_words words=5": (lambda: from_host_words(MP, 5), "words=5"),
    "Rep body item": (lambda: Rep(((5,),), 2), "body item 5"),
    "module_dynamic stats={}": (lambda: module_dynamic(L.small_system().sim, {}),
                                "stats={}"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_similar_paths_raise_value_error_naming_the_value(name):
    fn, pat = CASES[name]
    with pytest.raises(ValueError, match=pat):
        fn()


def test_good_inputs_still_work():
    """The checks accept what the compilers produce and pass around."""
    mp = ModuleParams(ChannelParams(MacroParams(n_in=16, n_out=16, n_sets=4), n_banks=4), n_ch=2)
    prog = A.build_program(mp, [A.Request(*_req())], "TCP", "dpa")
    paced = pace(mp, prog.cmds)
    assert [w for w, _ in paced[:-1]] == [w for w, _ in prog.cmds]     # + the drain NOP
    assert all(g >= 0 for _, g in paced)
    words = to_host_words(mp, [HCmd(int(HostOp.NOP))])
    assert from_host_words(mp, words) == [HCmd(int(HostOp.NOP))]
    assert request_lengths(np.int64(100), 2) == request_lengths(100, 2)
