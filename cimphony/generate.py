"""``cimphony generate``: SmolLM2-135M generates text on the accelerator.

    cimphony generate --prompt TEXT --tokens N [--format int8|bfp16|mxint8|q4_1]
                      [--policy tcp|hfp] [--alloc dpa|static] [--digits 1|2] [--loop]
                      [--golden-layers L ...] [--rtl-layers L ...]
                      [--eval-positions N] [--chat] [--json] [--out FILE]

The prompt is prefilled and N tokens are decoded greedily by
:class:`workloads.smollm2_pim.PimDecoder` (every GEMV and the attention on the PIM path's
integers, host ops in float), next to the float decoder's greedy continuation.  Printed (or
written as JSON): the texts and ids, the teacher-forced top-1 agreement over the generated
positions, cycles per token from the performance model (equal to the golden model's counts),
modelled tokens/s, and with ``--golden-layers`` / ``--rtl-layers`` the checks of those layers
against the cycle-exact model / the RTL (``mismatches``).  Malformed options exit 2 before
the model is loaded; a layer number or a length that does not fit the model exits 2 right
after it is read, before any decoding.

``--format`` (default ``int8``) chooses the numerics of the weight GEMVs.  ``int8`` is the
module path above.  ``bfp16`` (BFP16-64), ``mxint8`` (OCP MX v1.0) and ``q4_1`` (the file's
own 4-bit blocks, executed exactly, MXINT8 inputs) run
:class:`workloads.smollm2_block.BlockPimDecoder`: every weight GEMV through the golden
numerics of the macro and the block post-processing stage (bit-exact to
``hdl/blockfmt.py``), attention on the same INT8 module path.  The stage is not yet behind
the channel's banks, so for a block format no module program runs its GEMVs and there is no
step timing: the output says so (``emulated``), gives the macro cycles of the format's
geometry instead, and ``--golden-layers`` / ``--rtl-layers`` replay the last step's GEMVs of
those layers through the cycle-exact stage model (every column of all seven) / the stage
RTL in amaranth.sim (the first 64 columns of q), compared with what the decoder computed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run", "generate_report", "block_report", "DEFAULT_PROMPT",
           "CHAT", "FORMATS"]

DEFAULT_PROMPT = ("The old lighthouse stood at the end of a narrow spit of land, where the "
                  "river")
#: SmolLM2-Instruct's chat template (one user turn)
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
#: ``--format`` choices: the module's INT8 path, then the block formats (issue 13)
FORMATS = ("int8", "bfp16", "mxint8", "q4_1")


def _prompt(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a non-empty text, got {text!r}")
    return text


def _out_file(text: str) -> Path:
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, need a file name")
    return p


def add_arguments(ap) -> None:
    """Options of ``cimphony generate`` (each checked by its argparse type)."""
    from cimphony.cli import Unique, nonneg_int, positive_int
    ap.add_argument("--prompt", type=_prompt, metavar="TEXT", default=DEFAULT_PROMPT,
                    help="text to continue")
    ap.add_argument("--tokens", type=positive_int, metavar="N", default=32,
                    help="tokens to generate (stops early at end-of-sequence)")
    ap.add_argument("--format", type=str.lower, choices=FORMATS, default="int8",
                    help="weight GEMV numerics: int8 (per-channel weights, per-token "
                         "activations, on the module path) or a block format through the "
                         "golden block-stage numerics: bfp16 (BFP16-64), mxint8 (OCP MX), "
                         "q4_1 (the file's own 4-bit blocks, exact; MXINT8 inputs)")
    ap.add_argument("--policy", type=str.lower, choices=("tcp", "hfp"), default="tcp",
                    help="attention partitioning: token-centric or head-first")
    ap.add_argument("--alloc", type=str.lower, choices=("dpa", "static"), default="dpa",
                    help="KV pages mapped as the context grows, or reserved at admission")
    ap.add_argument("--digits", type=int, choices=(1, 2), default=2,
                    help="INT8 digits per GEMV activation (2: 16-bit activations in two "
                         "passes of the bit-serial macro)")
    ap.add_argument("--loop", action="store_true",
                    help="QK^T as a DPA LOOP over the request's token count")
    ap.add_argument("--golden-layers", type=nonneg_int, nargs="+", action=Unique, default=[],
                    metavar="L", help="layers whose every step also runs on the cycle-exact "
                                      "module model and is checked (slow: ~8 s to load a "
                                      "layer's weights, ~1 s per step)")
    ap.add_argument("--rtl-layers", type=nonneg_int, nargs="+", action=Unique, default=[],
                    metavar="L", help="layers whose last step runs through the module RTL in "
                                      "lockstep with the golden model (reduced module)")
    ap.add_argument("--max-context", type=positive_int, metavar="N", default=2048,
                    help="KV cache tokens per layer")
    ap.add_argument("--eval-positions", type=nonneg_int, metavar="N", default=0,
                    help="also measure teacher-forced agreement and perplexities over N "
                         "positions of the built-in text (workloads.smollm2_pim.EVAL_TEXT)")
    ap.add_argument("--chat", action="store_true",
                    help="wrap the prompt in the instruct model's chat template")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--out", type=_out_file, metavar="FILE", help="also write the JSON here")
    ap.set_defaults(func=run)


def _fail(option: str, msg: str) -> int:
    print(f"cimphony generate: error: argument {option}: {msg}", file=sys.stderr)
    return 2


def _bar(total, desc, disable):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="tok", file=sys.stderr, disable=disable)


def _greedy(dec, ids, n, bar, eos) -> list[int]:
    out = []
    nxt = int(dec.prefill(ids)[-1].argmax())
    while True:
        out.append(nxt)
        bar.update(1)
        if len(out) == n or nxt == eos:
            return out
        nxt = int(dec.step(nxt).argmax())


def _float_run(a, model, progress):
    """Load the model (unless given), tokenise the prompt of ``a`` and decode ``a.tokens``
    greedily with the float reference: (model, config, prompt ids, float decoder, float ids,
    load s, float-decode s)."""
    from workloads.gguf_model import load_gguf
    from workloads.smollm2 import FloatDecoder
    t0 = time.time()
    m = load_gguf() if model is None else model
    ids = m.encode(CHAT.format(a.prompt) if a.chat else a.prompt)
    t_load = time.time() - t0
    ref = FloatDecoder(m, max_context=a.max_context)
    with _bar(a.tokens, "float", not progress) as bar:
        t1 = time.time()
        fids = _greedy(ref, ids, a.tokens, bar, m.config.eos_id)
    return m, m.config, ids, ref, fids, t_load, time.time() - t1


def _agreement(dec, ref, ids, fids):
    """Teacher-forced over the generated positions (both read prompt ``ids`` + float ``fids``):
    (top-1 agreement of ``dec`` with the float ids, per-position cosine of the logits)."""
    import numpy as np
    seq = ids + fids
    lg = dec.forward(seq[:-1])[len(ids) - 1:].astype(np.float64)
    flg = ref.forward(seq[:-1])[len(ids) - 1:].astype(np.float64)
    agree = float(np.mean(lg.argmax(axis=1) == np.asarray(fids)))
    cos = np.sum(lg * flg, axis=1) / (np.linalg.norm(lg, axis=1) * np.linalg.norm(flg, axis=1))
    return agree, cos


def generate_report(a, model=None, progress: bool = True) -> dict:
    """Run ``cimphony generate`` for parsed options ``a``; returns the JSON dict."""
    import numpy as np

    from perf.host import ModelShape, step_time
    from workloads.smollm2_pim import EVAL_TEXT, PimDecoder, teacher_forced
    t0 = time.time()
    m, cfg, ids, ref, fids, t_load, t_float = _float_run(a, model, progress)
    pim = PimDecoder(m, a.max_context, partition=a.policy.upper(), alloc=a.alloc,
                     digits=a.digits, loop=a.loop, golden_layers=a.golden_layers,
                     record_layers=a.rtl_layers)
    with _bar(a.tokens, "accelerator", not progress) as bar:
        t1 = time.time()
        pids = _greedy(pim, ids, a.tokens, bar, cfg.eos_id)
        t_pim = time.time() - t1
    log = pim.step_log
    dec_rows = log[len(ids):] or log[-1:]
    cyc = [r["cycles"] for r in dec_rows]
    lc = [r["layer_cycles"] for r in dec_rows]
    busy = [r["layer_busy"] for r in dec_rows]
    banks = pim.p.n_ch * pim.p.channel.n_banks
    t1 = time.time()
    agree, cos = _agreement(pim, ref, ids, fids)
    t_tf = time.time() - t1
    d = cfg.head_dim
    ctx = [r["context"] for r in dec_rows]
    gemv_macs = sum(n * k for n, k in (pim.shape.dims(g) for g in ("qkv", "o", "gu", "down")))
    macs = [cfg.n_layers * (gemv_macs + 2 * cfg.n_heads * c * d) for c in ctx]
    clock = 1e9
    shape = ModelShape(cfg.hidden, cfg.n_heads, cfg.n_kv_heads, d, cfg.ffn, cfg.vocab,
                       cfg.n_layers)
    host = step_time(shape, context=ctx[-1], pp=cfg.n_layers, channels=pim.p.n_ch,
                     kv_quant=True, lm_head="host")
    pim_s = float(np.mean(cyc)) / clock
    rep = dict(
        format="int8", format_name="INT8 per-channel weights, per-token activations "
                                   f"({a.digits} digit(s))",
        runs_on=("every GEMV and the attention on the module path's integers (fast "
                 "functional path, bit-exact to the cycle-exact module model: --golden-layers "
                 "checks it, --rtl-layers runs a layer step through the module RTL); host ops "
                 "in float"),
        emulated=[],
        prompt=a.prompt, chat=a.chat, prompt_ids=ids, text=m.decode(pids), token_ids=pids,
        float_text=m.decode(fids), float_token_ids=fids, same_as_float=pids == fids,
        agreement=agree, agreement_positions=len(fids), cosine_vs_float=float(cos.min()),
        mismatches=0, golden_mismatches=pim.mismatches,
        cycles_per_token=float(np.mean(cyc)),
        cycles_source=("performance model (perf.sim) on every decode step's program, equal to "
                       "the cycle-exact golden model's counts; n_layers x one layer's step, "
                       "each layer on its own module"),
        layer_cycles=dict(min=min(lc), max=max(lc), mean=float(np.mean(lc))),
        prefill_cycles=sum(r["cycles"] for r in log[:len(ids)]),
        cycles=sum(r["cycles"] for r in log), macs=int(sum(macs)),
        mac_utilisation=float(np.sum(busy) / (np.sum(lc) * banks)),
        useful_mac_utilisation=float(np.mean([mc / cfg.n_layers for mc in macs])
                                     / (np.mean(lc) * banks * pim.macro.n_in
                                        * pim.macro.n_out / pim.macro.x_bits)),
        clock_ghz=clock / 1e9, tokens_per_s_pim=1.0 / pim_s,
        tokens_per_s_system=1.0 / (pim_s + host["host_s"] + host["link_s"]),
        host_s_per_token=host["host_s"], link_s_per_token=host["link_s"],
        system=dict(modules=cfg.n_layers, module=pim.p.tag, layer_mode=pim.mode,
                    policy=a.policy.upper(), alloc=a.alloc, digits=a.digits, loop=a.loop),
        golden=[dict(position=r["position"], **{str(k): dict(cycles=v["cycles"],
                                                             perf_cycles=r["layer_cycles"],
                                                             bad=v["bad"])
                                                for k, v in r["golden"].items()})
                for r in log if "golden" in r],
        rtl=[], wall={})
    if a.rtl_layers:
        from tb.smollm2_demo import rtl_layer_step
        for layer in a.rtl_layers:
            r = rtl_layer_step(pim, layer, seed=getattr(a, "seed", 0) or 0)
            rep["rtl"].append(r)
            rep["mismatches"] += r["mismatches"]
    if a.eval_positions:
        t2 = time.time()
        ev = teacher_forced(pim, ref, m.encode(EVAL_TEXT)[:a.eval_positions + 1])
        rep["eval"] = {k: v for k, v in ev.items() if k != "mismatch_positions"}
        rep["wall"]["eval_s"] = round(time.time() - t2, 2)
    rep["wall"].update(load_s=round(t_load, 2), float_s=round(t_float, 2),
                       pim_s=round(t_pim, 2), teacher_forced_s=round(t_tf, 2),
                       pim_timing_s=round(pim.wall.get("timing_s", 0.0), 2),
                       pim_golden_s=round(pim.wall.get("golden_s", 0.0), 2))
    rep["wall_s"] = round(time.time() - t0, 2)
    return rep


def block_report(a, model=None, progress: bool = True) -> dict:
    """``cimphony generate --format bfp16|mxint8|q4_1`` for parsed options ``a``: the block
    decoder next to the float one, stage checks of ``--golden-layers`` / ``--rtl-layers``;
    returns the JSON dict."""
    import numpy as np

    from spec.blockfmt import FORMATS as BF, fmt_of
    from workloads import blockquant as bq
    from workloads.smollm2_block import BlockPimDecoder
    from workloads.smollm2_pim import EVAL_TEXT, teacher_forced
    t0 = time.time()
    m, cfg, ids, ref, fids, t_load, t_float = _float_run(a, model, progress)
    checks = sorted(set(a.golden_layers) | set(a.rtl_layers))
    dec = BlockPimDecoder(a.format, m, a.max_context, partition=a.policy.upper(),
                          alloc=a.alloc, check_layers=checks)
    dec.recording = True
    with _bar(a.tokens, a.format, not progress) as bar:
        t1 = time.time()
        pids = _greedy(dec, ids, a.tokens, bar, cfg.eos_id)
        t_dec = time.time() - t1
    dec.recording = False
    t1 = time.time()
    agree, cos = _agreement(dec, ref, ids, fids)
    t_tf = time.time() - t1
    shapes = [tuple(dec.weight(0, g).shape) for g in ("q", "k", "v", "o", "gate", "up", "down")]
    cost = bq.costs(a.format, shapes)
    f = BF[fmt_of(a.format)]
    t1 = time.time()
    stage = []
    for layer in checks:
        if layer in a.golden_layers:
            stage += [dict(layer=layer, **r) for r in dec.check(layer)]
        if layer in a.rtl_layers:
            stage += [dict(layer=layer, **r) for r in dec.check(layer, rtl=True)]
    t_stage = time.time() - t1
    bad = sum(r["mismatches"] for r in stage)
    rep = dict(
        format=a.format, format_name=f.name if a.format != "q4_1" else "W4(Q4_1)A8",
        runs_on=(f"every weight GEMV in {f.name} through the golden numerics of the macro and "
                 "the block post-processing stage (workloads.blockquant.linear: inputs "
                 "quantised on the host, exact integer block dots, binary32 accumulation "
                 "bit-exact to hdl/blockfmt.py)"
                 + (", the file's own Q4_1 weights executed exactly" if a.format == "q4_1"
                    else "") + "; attention on the module's INT8 path (INT8 KV cache, exact "
                 "QK^T/SV integers, host softmax); host ops in float"),
        emulated=["the block GEMVs run no module program: the stage is not yet behind the "
                  "channel's banks (docs/blockfmt.md section 9 is a proposal), so their "
                  "integers come from the macro's exact numerics and their binary32 results "
                  "from the golden stage numerics, not from a channel/module simulation",
                  "no step timing: cycles are the macro cycles of the format's geometry "
                  f"({f.block}-row tiles, {min(f.macro_w_bits)}-bit weights, one 64-column "
                  "macro), not module cycles",
                  "--golden-layers / --rtl-layers replay the last step's GEMV inputs through "
                  "the cycle-exact stage model (all seven GEMVs) / the stage RTL in "
                  "amaranth.sim in lockstep with it (q, first 64 columns), with the macro's "
                  "integer block dots as the stage's input beats"],
        prompt=a.prompt, chat=a.chat, prompt_ids=ids, text=m.decode(pids), token_ids=pids,
        float_text=m.decode(fids), float_token_ids=fids, same_as_float=pids == fids,
        agreement=agree, agreement_positions=len(fids), cosine_vs_float=float(cos.min()),
        mismatches=bad, golden_mismatches=sum(r["mismatches"] for r in stage
                                              if r["rtl"] is None),
        stage_checks=stage, cost=cost,
        macro_cycles_per_token=int(cost["macro_cycles"] * cfg.n_layers),
        cycles_source=(f"macro cycles of one token's seven weight GEMVs x {cfg.n_layers} "
                       "layers on one macro of the format's geometry "
                       "(workloads.blockquant.costs); no module timing for block formats"),
        system=dict(format=a.format, policy=a.policy.upper(), alloc=a.alloc,
                    attention="module INT8 path (fast functional path)"),
        wall={})
    if a.eval_positions:
        t2 = time.time()
        ev = teacher_forced(dec, ref, m.encode(EVAL_TEXT)[:a.eval_positions + 1])
        rep["eval"] = {k: v for k, v in ev.items() if k != "mismatch_positions"}
        rep["wall"]["eval_s"] = round(time.time() - t2, 2)
    rep["wall"].update(load_s=round(t_load, 2), float_s=round(t_float, 2),
                       block_s=round(t_dec, 2), teacher_forced_s=round(t_tf, 2),
                       stage_checks_s=round(t_stage, 2))
    rep["wall_s"] = round(time.time() - t0, 2)
    return rep


def run(a) -> int:
    """``cimphony generate``: 0 on success, 2 on an option that does not fit the model, 1 if a
    check (golden or RTL) found a mismatch."""
    if a.tokens + 1 > a.max_context:
        return _fail("--tokens", f"{a.tokens} tokens do not fit --max-context {a.max_context}")
    if a.max_context > (1 << 16) - 1:
        return _fail("--max-context", f"{a.max_context} exceeds the 16-bit token counter")
    if a.eval_positions == 1:
        return _fail("--eval-positions", "needs at least 2 positions (or 0: off)")
    fmt = getattr(a, "format", "int8")
    if fmt != "int8":
        if a.loop:
            return _fail("--loop", f"applies to --format int8 only (the {fmt} GEMVs run no "
                                   "module program)")
        if a.digits != 2:
            return _fail("--digits", f"applies to --format int8 only ({fmt} inputs are "
                                     "quantised by the format)")
    from workloads.gguf_model import load_gguf
    m = load_gguf()
    cfg = m.config
    for opt, layers in (("--golden-layers", a.golden_layers), ("--rtl-layers", a.rtl_layers)):
        bad = [i for i in layers if i >= cfg.n_layers]
        if bad:
            return _fail(opt, f"layer {bad[0]} outside 0..{cfg.n_layers - 1}")
    if a.max_context > cfg.context_length:
        return _fail("--max-context", f"{a.max_context} > the model's {cfg.context_length}")
    n_prompt = len(m.encode(CHAT.format(a.prompt) if a.chat else a.prompt))
    if n_prompt + a.tokens > a.max_context:
        return _fail("--prompt", f"{n_prompt} prompt tokens + {a.tokens} do not fit "
                                 f"--max-context {a.max_context}")
    from workloads.smollm2_pim import EVAL_TEXT
    if a.eval_positions and a.eval_positions + 1 > min(len(m.encode(EVAL_TEXT)), a.max_context):
        return _fail("--eval-positions", f"the built-in text has {len(m.encode(EVAL_TEXT)) - 1}"
                                         f" positions (and --max-context {a.max_context})")
    report = generate_report if fmt == "int8" else block_report
    rep = report(a, m, progress=not a.no_progress)
    text = json.dumps(rep, indent=2, default=str)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    if a.json:
        print(text)
    else:
        print(f"prompt: {a.prompt!r}")
        print(f"accelerator: {rep['text']!r}")
        print(f"float:       {rep['float_text']!r}")
        if fmt == "int8":
            print(f"agreement {rep['agreement']:.3f} over {rep['agreement_positions']} "
                  f"positions, mismatches {rep['mismatches']} (golden checks "
                  f"{rep['golden_mismatches']}), {rep['cycles_per_token']:.0f} cycles/token "
                  f"-> {rep['tokens_per_s_pim']:.0f} tok/s PIM, "
                  f"{rep['tokens_per_s_system']:.0f} tok/s with host and link, "
                  f"{rep['wall_s']} s")
        else:
            c = rep["cost"]
            print(f"format {rep['format_name']}: agreement {rep['agreement']:.3f} over "
                  f"{rep['agreement_positions']} positions, mismatches {rep['mismatches']} "
                  f"(stage checks {rep['golden_mismatches']}), {c['w_bits_per_weight']:.3f} "
                  f"bits/weight, {rep['macro_cycles_per_token']:,} macro cycles/token (one "
                  f"{c['macro_n_in']}x64 macro), {rep['wall_s']} s")
            for r in rep["stage_checks"]:
                rtl = r["rtl"]
                print(f"  stage check layer {r['layer']} {r['gemv']}: {r['columns']}/{r['of']} "
                      f"columns, {r['cycles']} stage cycles, "
                      + (f"RTL lockstep {rtl['compared']} cycles, "
                         f"{'mismatch: ' + rtl['mismatch'] if rtl['mismatch'] else 'no mismatch'}, "
                         if rtl else "golden stage model, ")
                      + f"{r['mismatches']} mismatches")
        print(f"runs on: {rep['runs_on']}")
        if rep.get("emulated"):
            print("emulated: " + "; ".join(rep["emulated"]))
        if "eval" in rep:
            e = rep["eval"]
            print(f"teacher-forced over {e['positions']} positions: agreement "
                  f"{e['agreement']:.3f}, perplexity {e['ppl_pim']:.3f} (float "
                  f"{e['ppl_ref']:.3f})")
    return 1 if rep["mismatches"] or rep["golden_mismatches"] else 0
