"""A Llama decoder layer's decode step compiled to PIM module programs (issue 11).

Modules: ``numerics`` (the integer numerics and the fast functional path), ``gemv`` (weight
GEMVs with data), ``kv`` (the growing KV cache and its attention commands), ``layer`` (one
layer's step program, checked against the fast path), ``session`` (a golden-model module
kept across steps; step timing from the performance model).

:func:`smollm2_module` is the default module of one SmolLM2-135M layer (weights resident);
:func:`ci_module` a small one for RTL runs (weights streamed every step).
"""
from compiler.decoder.layer import GROUPS, ORDER, LayerProgram, LayerShape, StepProgram, StepTrace
from compiler.decoder.numerics import (AttnStep, act_qmax, attention_step, gemv_int,
                                       quantise_acts, quantise_kv, split_digits)
from compiler.decoder.session import ModuleSession, SessionRun, step_cycles
from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams

__all__ = ["GROUPS", "ORDER", "LayerProgram", "LayerShape", "StepProgram", "StepTrace",
           "AttnStep", "act_qmax", "attention_step", "gemv_int", "quantise_acts", "quantise_kv",
           "split_digits", "ModuleSession", "SessionRun", "step_cycles", "smollm2_module",
           "ci_module"]


def smollm2_module() -> ModuleParams:
    """One SmolLM2-135M layer per module: 8 channels x 16 banks of 64 x 64 INT8 macros with
    16 sets (256 pages of 4 KB per channel, 8 MB), 32 GBuf entries, 16 OBuf entries; the
    layer's 3.5 M weights (138 pages per channel) stay resident next to its KV cache."""
    mp = MacroParams(n_in=64, n_out=64, w_bits=8, x_bits=8, n_sets=16, n_acc=16,
                     tree_stages=1)
    return ModuleParams(ChannelParams(mp, n_banks=16, n_gbuf=32, q_depth=8), n_ch=8,
                        n_vpages=256, n_req=2, fifo_depth=16, loop_len=8)


def ci_module() -> ModuleParams:
    """A small module for RTL runs: 4 channels x 2 banks of 16 x 16 INT8 macros with 64 sets
    (128 pages of 256 B per channel; small enough to Verilate in minutes).  A layer's
    weights are streamed through a ring of 2 sets per bank every step; the KV cache of a
    few hundred tokens (TCP) is resident."""
    mp = MacroParams(n_in=16, n_out=16, w_bits=8, x_bits=8, n_sets=64, n_acc=8, tree_stages=1)
    return ModuleParams(ChannelParams(mp, n_banks=2, n_gbuf=8, q_depth=8), n_ch=4,
                        n_vpages=256, n_req=2, fifo_depth=16, loop_len=8)
