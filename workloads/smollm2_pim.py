"""SmolLM2-135M decoded on the accelerator: the float decoder with every weight GEMV and the
attention on the PIM path (issue 11).

:class:`PimDecoder` is :class:`workloads.smollm2.FloatDecoder` with

* ``linear``: every weight GEMV (q, k, v, o, gate, up, down) in INT8 weights (per output
  channel) and per-token activations of ``digits`` INT8 digits (``compiler.decoder.numerics``),
  q/k/v and gate/up fused as the module runs them (one input, stacked matrices);
* ``_attention``: K and V quantised per token into an integer KV cache, QK^T and SV in exact
  integers, softmax on the host (the attention compiler's numerics);
* host ops in float32/64 as in the float decoder (RMSNorm, RoPE, softmax, SwiGLU, residual,
  LM head).

All of it runs on the *fast functional path*: numpy integer matmuls with the macro's
accumulator semantics, proven bit-exact against the cycle-exact module model layer by layer
(``golden_layers``: every step of those layers is compiled by ``compiler.decoder`` and run on
a persistent :class:`~compiler.decoder.ModuleSession`, its integers compared; the tests do it
for layer 0).  Cycles per token come from the performance model on each step's program
(``timing``), whose counts equal the golden model's.  Every layer has the same program
structure on its own module, so a token costs ``n_layers`` x one layer's step (batch 1, the
layers' modules run one after the other).

:func:`teacher_forced` measures top-1 agreement and perplexities on a text;
:data:`EVAL_TEXT` is text written for it (no download).
"""
from __future__ import annotations

import time

import numpy as np

from compiler.decoder import (GROUPS, ORDER, LayerProgram, LayerShape, ModuleSession,
                              StepTrace, attention_step, gemv_int, quantise_acts, quantise_kv,
                              smollm2_module, step_cycles)
from spec.isa import ModuleParams
from spec.params import check_int
from workloads import quant
from workloads.gguf_model import GGUFModel
from workloads.smollm2 import FloatDecoder

__all__ = ["PimDecoder", "teacher_forced", "EVAL_TEXT", "GROUP_OF"]

#: FloatDecoder GEMV -> the fused module GEMV it belongs to
GROUP_OF = {g: grp for grp, gs in GROUPS.items() for g in gs}


class _IntKV:
    """Integer KV cache of one stream: codes (exact in float32) and per-token scales,
    [n_layers, n_kv, capacity, d], grown by doubling."""

    def __init__(self, cfg):
        self.cfg, self.n = cfg, 0
        self.kq = self.vq = np.zeros((cfg.n_layers, cfg.n_kv_heads, 0, cfg.head_dim),
                                     np.float32)
        self.ks = self.vs = np.zeros((cfg.n_layers, cfg.n_kv_heads, 0))

    def reserve(self, need: int) -> None:
        if need > self.kq.shape[2]:
            size = max(need, 2 * self.kq.shape[2], 64)
            for a in ("kq", "vq", "ks", "vs"):
                old = getattr(self, a)
                new = np.zeros(old.shape[:2] + (size,) + old.shape[3:], old.dtype)
                new[:, :, :old.shape[2]] = old
                setattr(self, a, new)


class PimDecoder(FloatDecoder):
    """SmolLM2 on the accelerator (see the module doc).

    Parameters
    ----------
    model : GGUFModel, optional
    max_context : int
        KV cache tokens (the module's virtual range per layer).
    params : ModuleParams, optional
        the module of one layer (default :func:`compiler.decoder.smollm2_module`).
    partition : {"TCP", "HFP"}
    alloc : {"dpa", "static"}
    digits : {1, 2}
        INT8 digits per activation (2: two passes of the bit-serial macro).
    loop : bool
        QK^T as a DPA LOOP over the token count.
    golden_layers : iterable of int
        layers whose every step also runs on the cycle-exact module model (checked).
    golden_from : int
        position of the first step checked on the golden model (the module joins the stream
        there: the cached K/V rows are written first).
    record_layers : iterable of int
        layers whose last step's integers are kept in :attr:`last_traces` (golden layers'
        too), e.g. to run that step through the RTL.
    timing : bool
        time every step of the decoder's own stream with the performance model.
    timing_from : int
        position of the first timed step (the timed module joins the stream there).
    """

    def __init__(self, model: GGUFModel | None = None, max_context: int = 2048, *,
                 params: ModuleParams | None = None, partition: str = "TCP",
                 alloc: str = "dpa", digits: int = 2, loop: bool = False,
                 golden_layers=(), golden_from: int = 0, record_layers=(),
                 timing: bool = True, timing_from: int = 0):
        super().__init__(model, max_context)
        cfg = self.cfg
        self.p = smollm2_module() if params is None else params
        if not isinstance(self.p, ModuleParams):
            raise ValueError(f"PimDecoder: params={params!r} must be a ModuleParams")
        self.shape = LayerShape.from_config(cfg)
        self.kw = dict(partition=partition, alloc=alloc, max_context=self.max_context,
                       digits=digits, loop=loop)
        self.digits = digits
        self.macro = self.p.channel.macro
        layout = LayerProgram(self.p, self.shape, **self.kw)      # validates every option
        self.parts = {g: layout.plans[g].part_ranges(self.macro.n_in) for g in ORDER}
        self.mode = layout.mode                 # weights "resident" or "streamed"
        self.golden_layers = self._layers("golden_layers", golden_layers)
        self.record_layers = sorted(set(self._layers("record_layers", record_layers))
                                    | set(self.golden_layers))
        self.golden_from = check_int("PimDecoder: golden_from", golden_from, 0)
        self.timing = bool(timing)
        self.timing_from = check_int("PimDecoder: timing_from", timing_from, 0)
        # quantised codes are shared by every PimDecoder of the same loaded model
        self._codes: dict = self.model.__dict__.setdefault("_pim_codes", {})
        self._stash: dict = {}
        self._traces: dict = {}
        self.reset()

    def _layers(self, name: str, layers) -> list[int]:
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise ValueError(f"PimDecoder: {name}={layers!r} must be a list of layer numbers")
        return sorted({check_int(f"PimDecoder: {name} entry", i, 0, self.cfg.n_layers - 1)
                       for i in layers})

    # -- weights ------------------------------------------------------------------------------
    def codes(self, layer: int, grp: str) -> tuple[np.ndarray, np.ndarray]:
        """INT8 codes (float32) [N, K] and scales [N] of fused GEMV ``grp`` of ``layer``."""
        key = (layer, grp, self.macro.w_bits)
        if key not in self._codes:
            w = np.concatenate([self.weight(layer, g) for g in GROUPS[grp]])
            qt = quant.quantise_per_channel(w, self.macro.w_bits)
            self._codes[key] = (qt.q.astype(np.float32), qt.scale)
        return self._codes[key]

    def layer_weights(self, layer: int) -> dict:
        """{group: int64 codes [N, K]} of ``layer`` (for module programs)."""
        return {g: self.codes(layer, g)[0].astype(np.int64) for g in ORDER}

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty the KV cache; restart the step timing and the golden modules."""
        super().reset()
        if not hasattr(self, "kw"):             # FloatDecoder.__init__ resets before ours ends
            return
        self.step_log: list[dict] = []          # one entry per token of the own stream
        self.wall = {"timing_s": 0.0, "golden_s": 0.0}
        self.mismatches = 0
        self.last_traces: dict = {}
        self._timer = None
        self._golden = {}

    # -- GEMV and attention on the PIM path ---------------------------------------------------
    def linear(self, layer: int, gemv: str, x: np.ndarray) -> np.ndarray:
        grp = GROUP_OF[gemv]
        st = self._stash.get((layer, grp))
        if st is None or st[0] is not x:
            codes, ws = self.codes(layer, grp)
            qx = quantise_acts(x, self.digits, self.macro.x_bits)
            yi = gemv_int(qx.q, codes, self.digits, self.macro, self.parts[grp],
                          quant.qmax(self.macro.w_bits))
            y = quant.dequantise_matmul(yi, qx.scale, ws).astype(np.float32)
            st = self._stash[(layer, grp)] = (x, y)
            for j, tr in enumerate(self._traces.get(layer, ())):
                tr.x[grp], tr.y[grp] = qx.q[j], yi[j]
        off = 0
        for g in GROUPS[grp]:
            if g == gemv:
                break
            off += self.shape.rows(g)
        return st[1][:, off:off + self.shape.rows(gemv)]

    def _attention(self, layer: int, q, k, v, cache) -> np.ndarray:
        cfg = self.cfg
        H, g, d = cfg.n_kv_heads, cfg.group, cfg.head_dim
        t, p0 = q.shape[1], cache.length
        ikv = cache.__dict__.setdefault("_pim", _IntKV(cfg))
        ikv.reserve(p0 + t)
        kq, ks, vq, vs = quantise_kv(k, v, self.macro.w_bits)
        ikv.kq[layer, :, p0:p0 + t], ikv.ks[layer, :, p0:p0 + t] = kq, ks
        ikv.vq[layer, :, p0:p0 + t], ikv.vs[layer, :, p0:p0 + t] = vq, vs
        out = np.empty((cfg.n_heads, t, d), np.float32)
        traces = self._traces.get(layer, ())
        for j in range(t):
            L = p0 + j + 1
            a = attention_step(q[:, j].reshape(H, g, d), ikv.kq[layer, :, :L],
                               ikv.ks[layer, :, :L], ikv.vq[layer, :, :L],
                               ikv.vs[layer, :, :L], self.macro.x_bits)
            out[:, j] = a.o.reshape(cfg.n_heads, d)
            if traces:
                traces[j].kv = (kq[:, j], ks[:, j], vq[:, j], vs[:, j])
                traces[j].attn = a
        return out.transpose(1, 0, 2).reshape(t, -1)

    def _run(self, ids, cache) -> np.ndarray:
        own = cache is self.cache
        self._stash = {}
        self._traces = {i: [StepTrace({}, {}, None, None) for _ in ids]
                        for i in self.record_layers} if own else {}
        p0 = cache.length
        logits = super()._run(ids, cache)
        self._stash = {}
        if own:
            self._account(p0, len(ids))
        return logits

    # -- golden model and timing ----------------------------------------------------------------
    def _golden_layer(self, layer: int, p0: int):
        """(LayerProgram, ModuleSession) of a golden layer, set up at position ``p0``."""
        if layer not in self._golden:
            lp = LayerProgram(self.p, self.shape, **self.kw)
            lp.load(self.layer_weights(layer))
            if p0:
                ikv = self.cache._pim
                lp.kv.preload(ikv.kq[layer, :, :p0].astype(np.int64), ikv.ks[layer, :, :p0],
                              ikv.vq[layer, :, :p0].astype(np.int64), ikv.vs[layer, :, :p0])
            sess = ModuleSession(self.p)
            sess.run(lp.setup_words())
            self._golden[layer] = (lp, sess)
        return self._golden[layer]

    def _joined(self, pos: int) -> LayerProgram:
        """A timing layer program joining the stream at ``pos`` (zero data: timing only)."""
        lp = LayerProgram(self.p, self.shape, **self.kw)
        if pos:
            H, d = self.cfg.n_kv_heads, self.cfg.head_dim
            z = np.zeros((H, pos, d), np.int64)
            lp.kv.preload(z, np.ones((H, pos)), z, np.ones((H, pos)))
        return lp

    def _account(self, p0: int, n: int) -> None:
        traces = self._traces
        self._traces = {}
        for j in range(n):
            row = dict(position=p0 + j, context=p0 + j + 1)
            if self.timing and p0 + j >= self.timing_from:
                t0 = time.perf_counter()
                if self._timer is None:
                    self._timer = self._joined(p0 + j)
                maps = self._timer.resident_maps()
                prog = self._timer.step(None)
                tm = step_cycles(self.p, maps, prog.words)
                row.update(layer_cycles=tm["cycles"], layer_busy=tm["busy"],
                           cycles=tm["cycles"] * self.cfg.n_layers)
                self.wall["timing_s"] += time.perf_counter() - t0
            for layer, trs in traces.items():
                self.last_traces[layer] = trs[j]
                if layer not in self.golden_layers or p0 + j < self.golden_from:
                    continue
                t0 = time.perf_counter()
                lp, sess = self._golden_layer(layer, p0 + j)
                prog = lp.step(trs[j])
                run = sess.run(prog.words)
                bad = lp.check(prog, run.outs, trs[j])
                self.mismatches += len(bad)
                row.setdefault("golden", {})[layer] = dict(cycles=run.cycles, bad=bad)
                self.wall["golden_s"] += time.perf_counter() - t0
            self.step_log.append(row)


def teacher_forced(pim: FloatDecoder, ref: FloatDecoder, ids) -> dict:
    """Top-1 agreement of ``pim``'s next-token prediction with ``ref``'s at every position of
    ``ids`` (teacher forcing: both read the same text), and both perplexities of the text.
    Uses :meth:`FloatDecoder.forward` (a fresh cache: the decoders' own state, step timing
    and golden modules are untouched)."""
    ids = [int(i) for i in ids]
    if len(ids) < 2:
        raise ValueError(f"teacher_forced: ids must hold >= 2 tokens, got {len(ids)}")
    out = {name: dec.forward(ids[:-1]).astype(np.float64)
           for name, dec in (("pim", pim), ("ref", ref))}
    tgt = np.asarray(ids[1:])
    res = {"positions": len(tgt)}
    for name, lg in out.items():
        lp = lg - lg.max(axis=1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(axis=1, keepdims=True))
        res[f"ppl_{name}"] = float(np.exp(-lp[np.arange(len(tgt)), tgt].mean()))
    a, b = out["pim"].argmax(axis=1), out["ref"].argmax(axis=1)
    res["agreement"] = float(np.mean(a == b))
    res["mismatch_positions"] = [int(i) for i in np.nonzero(a != b)[0]]
    return res


#: text written for the quality measurement (818 SmolLM2 tokens; no download)
_PARAGRAPHS = (
    ('The old lighthouse stood at the end of a narrow spit of land, where the river met the '
     'sea. For more than a hundred years its keepers had climbed the spiral stairs every '
     'evening to light the lamp, and every morning they had climbed them again to put it out. '
     'The last keeper, a quiet woman named Margaret, kept a logbook in which she wrote down '
     'the weather, the ships that passed, and the birds that rested on the gallery rail. When '
     'the light was finally automated, she moved to a small house in the village, but she '
     'still walked out to the point each day to watch the tide come in.'),
    ('In the village, people said that Margaret knew the sea better than anyone. Fishermen '
     'asked her whether a storm was coming, and she would look at the sky, at the colour of '
     'the water and at the way the gulls were flying, and give them an answer. She was rarely '
     'wrong. Children liked to visit her because she told stories about shipwrecks, smugglers '
     'and the great flood of the winter when the harbour wall broke.'),
    ('Computers work in a similar way to a very patient clerk. A program is a list of '
     'instructions, and the processor reads them one at a time, fetching numbers from memory, '
     'adding or multiplying them, and writing the results back. Modern processors are fast '
     'because they do many of these steps at once and because they keep the data they need in '
     'small, quick memories called caches. When the data is not in a cache, the processor must'
     ' wait for the main memory, and that wait can be hundreds of times longer than an '
     'addition.'),
    ('This is why engineers have started to build accelerators that compute inside the memory '
     'itself. Instead of moving every weight of a neural network across a bus, the '
     'multiplication happens where the weight is stored. A large language model needs billions'
     ' of such multiplications for every word it produces, so the savings in energy and time '
     'can be large. The difficulty is that memory arrays are simple and regular, while '
     'programs are complicated, so the controller that feeds the arrays must be clever about '
     'scheduling.'),
    ('The recipe for a simple bread needs only flour, water, salt and yeast. Mix the flour and'
     ' the salt in a large bowl, dissolve the yeast in warm water, and pour it in. Stir until '
     'the dough comes together, then knead it on a floured table for about ten minutes, until '
     'it is smooth and elastic. Leave it in a warm place, covered with a cloth, until it has '
     'doubled in size. Shape it into a loaf, let it rise again, and bake it in a hot oven for '
     'forty minutes. The bread is done when it sounds hollow if you tap the bottom.'),
    ('History is full of small decisions that changed large events. A letter that arrived a '
     'day late, a bridge that was left standing, a storm that scattered a fleet: each of these'
     ' has altered the course of a war or the fate of a country. Historians argue about how '
     'much individuals matter compared with the slow forces of economics, geography and '
     'climate. Most agree that both play a part, and that the interesting question is how they'
     ' interact.'),
    ('On a clear night far from the city, you can see a few thousand stars with the naked eye.'
     ' The band of the Milky Way stretches across the sky, made of the light of billions of '
     'stars too faint to see one by one. Some of the points of light are planets, which move '
     'slowly against the background over weeks and months. Astronomers measure the distances '
     'to the nearest stars by watching how they shift as the Earth moves around the Sun, a '
     'method called parallax.'),
    ('Learning a new language as an adult takes patience. At first every sentence is a puzzle,'
     ' and conversations are exhausting. After a few months, common phrases start to come '
     'without effort, and you begin to understand the jokes. The best advice is to practise a '
     'little every day, to read things you enjoy, and not to be afraid of making mistakes, '
     'because mistakes are how the brain learns what works.'),
)
EVAL_TEXT = "\n\n".join(_PARAGRAPHS) + "\n"
