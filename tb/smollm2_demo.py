"""``make demo``: SmolLM2-135M generates text on the accelerator, one layer step through the RTL.

1. :func:`cimphony.generate.generate_report`: the prompt is prefilled and N tokens decoded by
   :class:`workloads.smollm2_pim.PimDecoder` (every GEMV and the attention on the PIM path),
   next to the float decoder; teacher-forced agreement, cycles per token (performance model,
   equal to the golden model's counts) and the modelled tokens/s of the default system (one
   :func:`compiler.decoder.smollm2_module` per layer, CENT host and link from perf.host).
2. :func:`rtl_layer_step`: the last decode step of one layer (every GEMV tile, the KV append
   and the attention over the whole context) compiled for the reduced module
   :func:`compiler.decoder.ci_module` (weights streamed), run through the Verilated PimModule in
   lockstep with the golden model, its results decoded and compared with the fast path.

Writes ``build/demo/summary.json``.  ``cimphony demo --workload minilm`` runs the MiniLM QKV
demo (``tb/demo.py``) instead.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["rtl_layer_step", "add_arguments", "run", "OUT"]

OUT = Path("build/demo")


def rtl_layer_step(dec, layer: int, params=None, *, seed: int = 0, ready_p: float = 1.0,
                   label: str | None = None, lockstep: bool = True) -> dict:
    """Run ``dec``'s (a PimDecoder with ``layer`` in ``record_layers``) last step of ``layer``
    on a fresh module ``params`` (default :func:`compiler.decoder.ci_module`): setup (MAPs,
    the KV history of the context, resident weights if they fit) and the step, paced
    (:func:`compiler.host.pace`) and run through the RTL in lockstep with the golden model
    (``lockstep=False``: the golden model alone); ``ready_p``, ``seed``: the output port's
    seeded ready pattern (backpressure), the same for pacing and the run.  Returns ``ok``
    (lockstep), ``mismatches`` (lockstep mismatch + results differing from the fast path),
    ``cycles``, ``wall_s``, ``cycles_per_s``, ``context``, ``macs``, ``mac_utilisation``,
    ``bad`` and the module tag."""
    import numpy as np

    from compiler.decoder import LayerProgram, ci_module
    from compiler.host import pace
    if layer not in dec.last_traces:
        raise ValueError(f"rtl_layer_step: layer={layer!r} has no recorded step (record_layers="
                         f"{dec.record_layers})")
    p = ci_module() if params is None else params
    tr = dec.last_traces[layer]
    T = tr.attn.scores.shape[-1]
    kw = dict(dec.kw)
    kw["max_context"] = max(T, 64)
    lp = LayerProgram(p, dec.shape, **kw)
    lp.load(dec.layer_weights(layer))
    ikv = dec.cache._pim
    if T > 1:
        lp.kv.preload(ikv.kq[layer, :, :T - 1].astype(np.int64), ikv.ks[layer, :, :T - 1],
                      ikv.vq[layer, :, :T - 1].astype(np.int64), ikv.vs[layer, :, :T - 1])
    setup = lp.setup_words()
    prog = lp.step(tr)
    t0 = time.time()
    if lockstep:
        from tb.build import describe_mismatch, run_module_lockstep
        cmds = pace(p, [(w, 0) for w in setup + prog.words], out_ready_p=ready_p, seed=seed)
        pace_s = time.time() - t0
        res = run_module_lockstep(p, cmds, out_ready_p=ready_p, seed=seed,
                                  label=label or f"smollm2_l{layer}")
        ok, outs, cycles = res["ok"], res["outputs"], res["cycles"]
        wall, busy = res["wall_s"], sum(res.get("busy_cycles") or [])
        why = None if ok else describe_mismatch(res)
    else:                                   # the golden model alone, one persistent session
        from compiler.decoder import ModuleSession
        sess, pace_s, cmds = ModuleSession(p), 0.0, setup + prog.words
        sess.run(setup)
        run = sess.run(prog.words)
        ok, outs, cycles, wall = True, run.outs, sess.cycles, time.time() - t0
        busy, why = run.busy, None
    bad = lp.check(prog, outs, tr) if ok else ["lockstep mismatch"]
    sh = dec.shape
    macs = sum(n * k for n, k in (sh.dims(g) for g in ("qkv", "o", "gu", "down"))) \
        + 2 * sh.n_heads * T * sh.head_dim
    return dict(layer=layer, context=T, module=p.tag, mode=lp.mode, rtl=lockstep, ok=ok,
                mismatches=int(not ok) + len(bad), bad=bad, mismatch=why,
                commands=len(cmds), setup_commands=len(setup), cycles=cycles,
                wall_s=round(wall, 2), cycles_per_s=round(cycles / wall) if wall else 0,
                pace_s=round(pace_s, 2), macs=macs,
                mac_utilisation=busy / (cycles * p.n_ch * p.channel.n_banks) if cycles else 0.0)


def add_arguments(ap) -> None:
    """Options of the SmolLM2 demo (``cimphony demo``, the default workload)."""
    from cimphony.cli import nonneg_int, positive_int
    from cimphony.generate import DEFAULT_PROMPT, _prompt
    ap.add_argument("--prompt", type=_prompt, metavar="TEXT", default=DEFAULT_PROMPT,
                    help="SmolLM2: text to continue")
    ap.add_argument("--tokens", type=positive_int, metavar="N", default=32,
                    help="SmolLM2: tokens to generate")
    ap.add_argument("--policy", type=str.lower, choices=("tcp", "hfp"), default="tcp",
                    help="SmolLM2: attention partitioning")
    ap.add_argument("--rtl-layer", type=nonneg_int, metavar="L", default=0,
                    help="SmolLM2: the layer whose last step runs through the RTL")


def run(a) -> int:
    """The SmolLM2 demo: 0 if the RTL step has 0 mismatches."""
    from cimphony.generate import generate_report
    from workloads.gguf_model import load_gguf
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    m = load_gguf()
    if a.rtl_layer >= m.config.n_layers:
        print(f"cimphony demo: error: argument --rtl-layer: layer {a.rtl_layer} outside "
              f"0..{m.config.n_layers - 1}")
        return 2
    g = _GenArgs(a)
    print(f"[demo] SmolLM2-135M on the accelerator: {a.prompt!r} + {a.tokens} tokens", flush=True)
    rep = generate_report(g, m)
    rtl = rep["rtl"][0]
    summary = dict(rep)
    summary.update(workload="smollm2", mismatches=rep["mismatches"], cycles=rtl["cycles"],
                   macs=rtl["macs"], mac_utilisation=round(rtl["mac_utilisation"], 4),
                   cycles_per_s=rtl["cycles_per_s"], wall_s=round(time.time() - t0, 2),
                   cycles_note=("cycles, macs, mac_utilisation, cycles_per_s: the RTL lockstep "
                                "run of one layer step on the reduced module; "
                                "cycles_per_token: the default system (performance model)"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print()
    print(f"prompt      {a.prompt!r}")
    print(f"accelerator {rep['text']!r}")
    print(f"float       {rep['float_text']!r}")
    print(f"teacher-forced agreement {rep['agreement']:.3f} over {rep['agreement_positions']} "
          f"positions, logits cosine vs float >= {rep['cosine_vs_float']:.4f}")
    print(f"RTL: layer {rtl['layer']} step at context {rtl['context']} on {rtl['module']} "
          f"({rtl['mode']} weights): {rtl['cycles']} cycles, {rtl['cycles_per_s']} cycles/s "
          f"in lockstep, mismatches {rep['mismatches']}")
    print(f"default system ({rep['system']['modules']} x {rep['system']['module']}): "
          f"{rep['cycles_per_token']:.0f} cycles/token -> {rep['tokens_per_s_pim']:.0f} "
          f"tokens/s PIM, {rep['tokens_per_s_system']:.0f} tokens/s with host and link")
    print(f"{summary['wall_s']} s total -> {out / 'summary.json'}")
    return 0 if rep["mismatches"] == 0 and rtl["ok"] else 1


class _GenArgs:
    """``cimphony generate``'s options for the demo."""

    def __init__(self, a):
        self.prompt, self.tokens, self.policy = a.prompt, a.tokens, a.policy
        self.alloc, self.digits, self.loop, self.chat = "dpa", 2, False, False
        self.golden_layers, self.rtl_layers = [], [a.rtl_layer]
        self.max_context, self.eval_positions = 2048, 0
        self.seed = a.seed
