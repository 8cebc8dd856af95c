"""Decode-step attention on ONE PimModule: host programs with data and their functional
reference (docs/compiler.md, "Attention on one module").

Modules: ``program`` (:class:`Request`, :func:`build_program`, :class:`Program`), ``step``
(the decode-step commands), ``inputs`` (MiniLM and synthetic requests, request mixes);
:func:`pace` and :func:`run_program` are :mod:`compiler.host`'s.
"""
from compiler.attention.program import (DecodeOut, Program, Request, build_program,
                                        reference_attention)
from compiler.attention.inputs import (MINILM_PARAGRAPH, llama_head, llama_shaped_decode,
                                       minilm_decode, minilm_params, request_mix)
from compiler.host import pace, run_program
from workloads.mix import BENCH_MEANS

__all__ = ["Request", "Program", "DecodeOut", "build_program", "pace", "run_program",
           "reference_attention", "minilm_decode", "llama_shaped_decode", "request_mix",
           "llama_head", "BENCH_MEANS", "MINILM_PARAGRAPH", "minilm_params"]
