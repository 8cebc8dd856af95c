"""The hub's softmax unit in the performance model: a decode step with and without it (issue 12).

**Without the unit** (today's ``compiler/attention``): per layer, every query head's T QK^T
scores leave the module (RD_OUT beats of NO scores of A bits), the host computes softmax
(``perf.host`` op ``softmax``: CENT's EXP + VEC per score) and sends the T INT8
probabilities back as WR_INP input tiles (NI codes of 8 bits each); the SV MACs wait for
them, so every layer has one module -> host -> module round trip in the middle of its
attention.

**With the unit** (``docs/softmax.md``, "Host side" and "Hub integration"; the opcodes of
``spec.softmax.PROPOSED_HOST_OPS``): SM_CFG starts a head, RD_SM sends the score beats into
the unit, WR_PROB writes its probability tiles into GBuf; only one ``res`` beat (m, l, qsum,
qlo, sat) per head and query reaches the host, which applies 1/l with the d multiplies of
the SV dequantisation it does anyway: no round trip, no per-token host work.  The unit takes
B + K + 3 cycles per head (contract, "Timing consequences": B score beats, K = P * tc * G
tiles), one head after another; a head longer than N tokens is split into segments of N
(one CFG each, merged on the host: d multiply-adds per segment).

Everything here is closed-form from the contract and the stream layouts (``spec/softmax.py``);
``bench/softmax.py`` checks :func:`head_cost`'s cycles and beat counts against runs of the
golden model and the RTL.  The RD_OUT / RD_SM commands are the same number either way
(B per head); WR_PROB replaces WR_INP one for one but carries no data.
"""
from __future__ import annotations

import math

from perf.host import CENT_HOST, HostParams, ModelShape
from spec.params import MacroParams, check_int, width
from spec.softmax import SH_BITS, SoftmaxParams, res_fields

__all__ = ["head_cost", "step_cost", "with_without_rows", "with_without_table"]


def _geometry(T: int, sp: SoftmaxParams, P: int, G: int) -> tuple[int, int]:
    """(B beats, K tiles) of one head segment of T tokens in P partitions (contract "Head
    geometry")."""
    n = [max(0, -(-(T - j) // P)) for j in range(P)]
    B = sum(-(-nj // sp.n_lanes) for nj in n)
    K = P * -(-n[0] // sp.tile) * G
    return B, K


def head_cost(T: int, sp: SoftmaxParams, parts: int = 1, digits: int = 1) -> dict:
    """One head and query over T tokens: beats, tiles, unit cycles and host bits with and
    without the unit.  Segments of at most ``sp.max_context`` tokens."""
    T = check_int("head_cost: T", T, 1)
    P = check_int("head_cost: parts", parts, 1, sp.n_part)
    G = check_int("head_cost: digits", digits, 1, 2)
    N = sp.max_context
    segs = [N] * (T // N) + ([T % N] if T % N else [])
    B = K = cyc = 0
    for t in segs:
        b, k = _geometry(t, sp, P, G)
        B, K, cyc = B + b, K + k, cyc + b + k + 3
    b1, k1 = zip(*(_geometry(t, sp, P, 1) for t in segs))
    return dict(
        tokens=T, segments=len(segs), beats=B, tiles=K, unit_cycles=cyc,
        # without: every score up (A bits, in NO-lane beats), one probability digit down
        without_up_bits=sum(b1) * sp.n_lanes * sp.score_bits, without_down_bits=sum(k1)
        * sp.tile * 8, without_round_trips=1,
        # with: one res beat per segment up; a CFG per segment (its data: mul, sh, dig) down
        with_up_bits=len(segs) * width(res_fields(sp)),
        with_down_bits=len(segs) * (sp.mul_bits + SH_BITS + 1),
        with_round_trips=0)


def step_cost(shape: ModelShape, context: int, *, batch: int = 1, tp: int = 1, pp: int = 1,
              channels: int = 32, macro: MacroParams = MacroParams(), parts: int = 4,
              digits: int = 2, host: HostParams = CENT_HOST, clock_ghz: float = 1.0) -> dict:
    """One decode step of ``batch`` requests (each attending to ``context`` tokens), the
    busiest pipeline stage x ``pp`` as ``perf.host.step_time`` counts the critical path:
    host bytes both ways, host round trips, host seconds (softmax without; the 1/l
    normalisation with) and unit seconds (one unit per rank, heads in series), with and
    without the unit."""
    check_int("step_cost: context", context, 1)
    b, tp, pp, ch = (check_int(f"step_cost: {n}", v, 1) for n, v in
                     (("batch", batch), ("tp", tp), ("pp", pp), ("channels", channels)))
    sp = SoftmaxParams.for_macro(macro, max_context=65536, n_part=max(parts, 1))
    h = head_cost(context, sp, parts, digits)
    heads = math.ceil(shape.n_heads / tp)
    layers = math.ceil(shape.layers / pp) * pp
    n = b * heads * layers                                    # (head, query) pairs
    a = min(ch, host.ch_per_device)
    # host softmax without the unit: perf.host.step_time's op, CENT's EXP + VEC per score
    sm = (context * heads / (host.score_elems * ch) * (host.exp_cycles(a) + host.vec_cycles(a))
          + heads * (host.sb_rd_cycle + host.rv_sft_cycle))
    # with: 1/l and d multiplies per head, one VEC pass over heads * d values
    norm = heads * shape.head_dim / (host.vector_elems * ch) * host.vec_cycles(a)
    per = lambda c: b * c * layers / host.freq_hz            # noqa: E731
    return dict(
        context=context, batch=b, heads_per_rank=heads, layers_on_path=layers,
        head=h, digits=digits, parts=parts,
        without_host_bytes=n * (h["without_up_bits"] + h["without_down_bits"]) / 8,
        with_host_bytes=n * (h["with_up_bits"] + h["with_down_bits"]) / 8,
        without_round_trips=layers, with_round_trips=0,
        without_host_s=per(sm), with_host_s=per(norm),
        unit_s=n * h["unit_cycles"] / (clock_ghz * 1e9))


def with_without_rows(rows: list[dict], configs: dict) -> list[dict]:
    """Per performance-model point (ok rows of policy ``all``): its token time and the same
    point with the unit: ``token_s - host softmax + normalisation + unit time`` (the unit on
    the critical path, not overlapped: conservative), with host bytes and round trips per
    step.  ``configs``: model name -> ``compiler.llm`` config (hidden, heads, ...)."""
    out = []
    for r in rows:
        if r.get("status") != "ok" or r.get("policy") != "all" or "host_ops" not in r:
            continue
        cfg = configs[r["model"]]
        shape = ModelShape(cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.intermediate,
                           cfg.vocab, cfg.layers)
        m = r.get("micro_batch") or r["batch"]
        ctx = math.ceil(r.get("contexts_mean") or r["ctx"])
        c = step_cost(shape, ctx, batch=m, tp=r.get("tp", 1), pp=r.get("pp", 1),
                      channels=r.get("ch_per_rank", 32))
        sm = r["host_ops"].get("softmax", 0.0)
        with_s = r["token_s"] - sm + c["with_host_s"] + c["unit_s"]
        out.append(dict(system=r["system"], model=r["model"], ctx=r["ctx"], batch=r["batch"],
                        micro_batch=m, context_mean=ctx, token_s=r["token_s"],
                        host_softmax_s=sm, with_token_s=with_s,
                        speedup=r["token_s"] / with_s, **{k: c[k] for k in (
                            "without_host_bytes", "with_host_bytes", "without_round_trips",
                            "with_round_trips", "without_host_s", "with_host_s", "unit_s")}))
    return out


def _b(x: float) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= f:
            return f"{x / f:.2f} {unit}"
    return f"{x:.0f} B"


def with_without_table(wrows: list[dict], fmt_ctx=str) -> str:
    """Markdown table of :func:`with_without_rows`."""
    L = ["| system | model | context | micro-batch | host bytes/step without -> with | host "
         "round trips/step | host softmax ms -> 1/l ms | unit ms | token ms without -> with "
         "| speedup |", "|---|---|---|---:|---|---|---|---:|---|---:|"]
    for w in wrows:
        L.append(f"| {w['system']} | {w['model']} | {fmt_ctx(w['ctx'])} | {w['micro_batch']} | "
                 f"{_b(w['without_host_bytes'])} -> {_b(w['with_host_bytes'])} "
                 f"({w['without_host_bytes'] / max(w['with_host_bytes'], 1):,.0f}x) | "
                 f"{w['without_round_trips']} -> {w['with_round_trips']} | "
                 f"{w['host_softmax_s'] * 1e3:.2f} -> {w['with_host_s'] * 1e3:.3f} | "
                 f"{w['unit_s'] * 1e3:.2f} | {w['token_s'] * 1e3:.2f} -> "
                 f"{w['with_token_s'] * 1e3:.2f} | {w['speedup']:.3f}x |")
    return "\n".join(L)
