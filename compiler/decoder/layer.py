"""One decoder layer's decode step compiled to host commands for ONE PimModule.

A layer lives on its own module: its weights (rid ``n_req - 1``) and its KV cache (rid 0).
One step (one token) is, in program order::

    QKV GEMV                      (q, k, v fused: one input, 3 matrices stacked)
    BARRIER                       host: dequantise, RoPE, quantise k, v (per token), q (per head)
    KV append (MAP, WR_W), SET_TOK, QK^T, BARRIER, SV      (compiler.decoder.kv)
    BARRIER                       host: o = acc * scale, quantise for O
    O GEMV, BARRIER               host: residual, RMSNorm, quantise
    gate+up GEMV, BARRIER         host: SwiGLU, quantise
    down GEMV, BARRIER            host: residual -> the next layer's module

The BARRIERs stand for the host round trips (a real host reads the results in between).  The
data of every phase is known when the program is built: it is built from a :class:`StepTrace`,
the integers the fast functional path computed (exact, because the module is bit-exact:
:meth:`LayerProgram.check` verifies every returned integer).  ``trace=None`` builds the same
commands with zero data: the timing of a step does not depend on the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.decoder.gemv import (Counters, gemv_decode, gemv_words, host_encoder, plan_gemv,
                                   setup_words)
from compiler.decoder.kv import LayerKV
from compiler.pages import AllocError, PageAllocator, kv_blocks
from spec.isa import HostOp, ModuleParams, mod_out_fields
from spec.params import check_int, unpack_vec

__all__ = ["GROUPS", "ORDER", "LayerShape", "StepTrace", "StepProgram", "LayerProgram"]

#: fused GEMVs of a layer (one input each) and the FloatDecoder GEMVs they stack
GROUPS = {"qkv": ("q", "k", "v"), "o": ("o",), "gu": ("gate", "up"), "down": ("down",)}
ORDER = ("qkv", "o", "gu", "down")


@dataclass(frozen=True)
class LayerShape:
    """Shapes of one Llama decoder layer."""
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int

    @classmethod
    def from_config(cls, cfg) -> "LayerShape":
        """From a :class:`workloads.gguf_model.LlamaConfig`."""
        return cls(cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn)

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def rows(self, gemv: str) -> int:
        """Output rows of one FloatDecoder GEMV."""
        d = self.head_dim
        return {"q": self.n_heads * d, "k": self.n_kv_heads * d, "v": self.n_kv_heads * d,
                "o": self.hidden, "gate": self.ffn, "up": self.ffn, "down": self.hidden}[gemv]

    def dims(self, grp: str) -> tuple[int, int]:
        """(N, K) of fused GEMV ``grp``."""
        k = {"qkv": self.hidden, "o": self.n_heads * self.head_dim, "gu": self.hidden,
             "down": self.ffn}[grp]
        return sum(self.rows(g) for g in GROUPS[grp]), k


@dataclass
class StepTrace:
    """The integers of one layer's step for one token: ``x[grp]`` input codes [K],
    ``y[grp]`` exact outputs [N] (int64); ``kv`` = (kq [H, d], ks [H], vq, vs) of the new
    token; ``attn`` the :class:`compiler.decoder.numerics.AttnStep` (scores, acc, ...)."""
    x: dict
    y: dict
    kv: tuple
    attn: object


@dataclass
class StepProgram:
    """Host words of one step and the reads each channel's out beats must match, in order:
    reads[c] = [(bank, o, tag)], tag[0] the phase ("qkv", "attn", "o", "gu", "down")."""
    words: list
    reads: dict
    T: int

    @property
    def n_beats(self) -> int:
        return sum(len(v) for v in self.reads.values())

    def split(self, p: ModuleParams, outs) -> dict:
        """The out payloads of a run grouped by phase: {phase: [(channel, tag, y)]}.
        ValueError if a beat is not the one its channel should send next."""
        fo, m = mod_out_fields(p), p.channel.macro
        fld = {n: (fo[n].offset, (1 << fo[n].width) - 1) for n in ("bank", "o", "chan")}
        if len(outs) != self.n_beats:
            raise ValueError(f"decode: {len(outs)} out beats, expected {self.n_beats}")
        pos = {c: 0 for c in self.reads}
        by: dict = {}
        for i, w in enumerate(outs):
            c, bank, o = ((w >> off) & msk for off, msk in (fld["chan"], fld["bank"], fld["o"]))
            if c not in pos or pos[c] >= len(self.reads[c]):
                raise ValueError(f"decode: beat {i} from unexpected channel {c}")
            eb, eo, tag = self.reads[c][pos[c]]
            pos[c] += 1
            if (bank, o) != (eb, eo):
                raise ValueError(f"decode: beat {i} (channel {c}) is OBuf ({bank},{o}), "
                                 f"expected ({eb},{eo}) for {tag}")
            by.setdefault(tag[0], []).append((c, tag, unpack_vec(w, m.n_out, m.acc_width)))
        return by


class LayerProgram:
    """The module program of one layer (placement, KV cache, step builder).

    Parameters
    ----------
    p : ModuleParams
    shape : LayerShape
    partition : {"TCP", "HFP"}
    alloc : {"dpa", "static"}
        KV pages mapped as the context grows, or all at creation.
    max_context : int
        tokens of the KV cache's virtual range.
    digits : {1, 2}
        activation digits (passes) per GEMV input.
    mode : {"auto", "resident", "streamed"}
        weights resident (written once) or streamed every step; auto: resident if the
        weights and a ``max_context`` cache fit.
    loop : bool
        QK^T as a LOOP over the request's token count (SET_TOK).
    """

    def __init__(self, p: ModuleParams, shape: LayerShape, *, partition: str = "TCP",
                 alloc: str = "dpa", max_context: int = 2048, digits: int = 2,
                 mode: str = "auto", loop: bool = False, ring_sets: int = 2):
        if not isinstance(p, ModuleParams):
            raise ValueError(f"LayerProgram: p={p!r} must be a ModuleParams")
        if mode not in ("auto", "resident", "streamed"):
            raise ValueError(f"LayerProgram: mode={mode!r} must be auto, resident or streamed")
        if digits not in (1, 2) or isinstance(digits, bool):
            raise ValueError(f"LayerProgram: digits={digits!r} must be 1 or 2")
        check_int("LayerProgram: max_context", max_context, 1, (1 << 16) - 1)
        check_int("LayerProgram: ring_sets", ring_sets, 2, p.channel.macro.n_sets)
        if p.n_req < 2:
            raise ValueError(f"n_req: a layer needs 2 request ids, n_req={p.n_req}")
        self.p, self.shape, self.digits = p, shape, digits
        self.kw = dict(partition=partition, alloc=alloc, max_context=max_context, loop=loop)
        self.rid_w, self.rid_kv = p.n_req - 1, 0
        err = None
        for m in (("resident", "streamed") if mode == "auto" else (mode,)):
            try:
                self._build(m == "resident", ring_sets)
                self.mode = m
                break
            except AllocError as e:
                err = e
        else:
            raise ValueError(f"LayerProgram: the layer does not fit the module ({err})")
        self.ctr = Counters()
        self.weights: dict = {}

    def _build(self, resident: bool, ring_sets: int) -> None:
        p, sh = self.p, self.shape
        B, S = p.channel.n_banks, p.channel.macro.n_sets
        self.pages = PageAllocator(p, placement="banks")
        ring = None
        if not resident:
            v0 = self.pages.reserve_vpages(B * ring_sets, self.rid_w, "weight rings")
            ring = {}
            for i in range(B):
                pps = self.pages.take(ring_sets, "weight ring")
                b = pps[0] // S
                ring[b] = list(range(v0 + i * ring_sets, v0 + (i + 1) * ring_sets))
                for vp, pp in zip(ring[b], pps, strict=True):
                    self.pages.map(vp, pp, self.rid_w)
        self.plans = {g: plan_gemv(g, *sh.dims(g), p, self.pages, self.rid_w, self.digits,
                                   resident, ring) for g in ORDER}
        self.kv = LayerKV(p, self.pages, sh.n_kv_heads, sh.group, sh.head_dim,
                          rid=self.rid_kv, **self.kw)
        m = p.channel.macro
        kb, tc = kv_blocks(self.kw["max_context"], self.kv.Cs, m.n_in, m.n_out)
        need = len(self.kv.streams) * (kb * self.kv.kt_n + tc * self.kv.dc_n) \
            - sum(st["kb"] * self.kv.kt_n + st["tc"] * self.kv.dc_n for st in self.kv.streams)
        if need > self.pages.n_free:
            raise AllocError(f"n_pages: a {self.kw['max_context']}-token cache needs {need} "
                             f"more pages, {self.pages.n_free} free after the weights")

    # --- programs ---------------------------------------------------------------------------
    def load(self, weights: dict) -> None:
        """Weight codes {group: [N, K]} (int) of this layer (needed to write the weights)."""
        for g in ORDER:
            w = np.asarray(weights[g])
            if w.shape != self.shape.dims(g):
                raise ValueError(f"load: weights[{g!r}] has shape {w.shape}, expected "
                                 f"{self.shape.dims(g)}")
        self.weights = dict(weights)

    def setup_words(self) -> list:
        """MAP of every mapped page, the resident weights (needs :meth:`load`) and the cached
        KV rows: a fresh module's state at this point of the stream."""
        words = self.pages.map_words()
        self.kv._maps = []
        if self.mode == "resident":
            for g in ORDER:
                words += setup_words(self.p, self.plans[g], self.weights[g])
        return words + self.kv.history_words() + [host_encoder(self.p)(HostOp.BARRIER)]

    def resident_maps(self) -> list:
        """MAP words of the pages the module already holds (the page table minus the MAPs the
        next step will push): the prefix :func:`compiler.decoder.step_cycles` needs."""
        pending = set(self.kv._maps)
        return [w for w in self.pages.map_words() if w not in pending]

    def step(self, trace: StepTrace | None = None) -> StepProgram:
        """The step program of one token (appends it to the KV cache).  ``trace=None``: zero
        data, for timing."""
        p, sh, kv = self.p, self.shape, self.kv
        zero = trace is None
        words, reads = [], {c: [] for c in range(p.n_ch)}
        bar = host_encoder(p)(HostOp.BARRIER)

        def add(wr):
            w, r = wr
            words.extend(w)
            for c in reads:
                reads[c] += r[c]

        def gemv(grp):
            x = np.zeros(sh.dims(grp)[1], np.int64) if zero else trace.x[grp]
            W = None if zero or self.mode == "resident" else self.weights[grp]
            add(gemv_words(p, self.plans[grp], x, W, self.ctr, grp))
            words.append(bar)
        gemv("qkv")
        H, g, d = sh.n_kv_heads, sh.group, sh.head_dim
        if zero:
            words.extend(kv.append(np.zeros((H, d), np.int64), np.ones(H),
                                   np.zeros((H, d), np.int64), np.ones(H), zero=True))
            add(kv.attention_words(np.zeros((H, g, d), np.int64),
                                   np.zeros((H, g, kv.T), np.int64)))
        else:
            words.extend(kv.append(*trace.kv))
            add(kv.attention_words(trace.attn.qq, trace.attn.wq))
        words.append(bar)
        for grp in ("o", "gu", "down"):
            gemv(grp)
        return StepProgram(words, reads, kv.T)

    def decode(self, prog: StepProgram, outs) -> dict:
        """{group: int64 [N]} and "attn": (scores, acc) from a run's out payloads (call it
        before the next :meth:`step`)."""
        by = prog.split(self.p, outs)
        res = {g: gemv_decode(self.p, self.plans[g], by.get(g, [])) for g in ORDER}
        res["attn"] = self.kv.decode(by.get("attn", []))
        return res

    def check(self, prog: StepProgram, outs, trace: StepTrace) -> list[str]:
        """Differences between a run's results and the fast path's ``trace`` (empty: equal)."""
        try:
            res = self.decode(prog, outs)
        except ValueError as e:
            return [str(e)]
        bad = []
        for g in ORDER:
            if not np.array_equal(res[g], trace.y[g]):
                i = int(np.argmax(res[g] != trace.y[g]))
                bad.append(f"{g}[{i}]: module {res[g][i]} != fast path {trace.y[g][i]}")
        for name, a, b in (("scores", res["attn"][0], trace.attn.scores),
                           ("sv acc", res["attn"][1], trace.attn.acc)):
            if a.shape != b.shape or not np.array_equal(a, b):
                bad.append(f"attention {name}: module and fast path differ")
        return bad
