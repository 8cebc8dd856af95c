"""Decode-step compiler for whole LLMs on a system of PIM modules (performance-model programs).

:func:`compile_step` compiles one decode step of a :class:`ModelConfig` onto one module of a
:class:`System` into a :class:`StepPlan` of compressed programs (:mod:`perf.program`).  The
system model, memory layout, GEMV and attention mappings, allocation and compression rules are
described in docs/compiler.md.  Modules: ``config`` (model shapes), ``system`` (modules, tp,
pp, presets), ``gemv`` (GEMV geometry), ``layout`` (memory layout, capacity), ``loops`` (loop
compression), ``builder`` (step construction), ``plan`` (the plan, ``compile_step``,
``max_batch``), ``policy`` (the experiment policies: CENT baseline, PIMphony's techniques).
"""
from compiler.llm.config import CONFIG_DIR, MODELS, ModelConfig, load_config, tiny_config
from compiler.llm.gemv import GemvGeom
from compiler.llm.plan import StepPlan, compile_step, max_batch, plan_counts, tree_nodes
from compiler.llm.policy import PARTITIONS, POLICIES, Policy, policy
from compiler.llm.system import (GB, System, aim_system, check_tp, dimc_system, kv_replication,
                                 small_system, splits)
from workloads.mix import request_lengths

__all__ = ["ModelConfig", "System", "StepPlan", "GemvGeom", "MODELS", "CONFIG_DIR",
           "load_config", "aim_system", "dimc_system", "small_system", "tiny_config",
           "request_lengths", "compile_step", "max_batch", "plan_counts", "tree_nodes", "GB",
           "Policy", "POLICIES", "PARTITIONS", "policy", "splits", "check_tp", "kv_replication"]
