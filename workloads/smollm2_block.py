"""SmolLM2-135M with its weight GEMVs in a block format (issue 13), for ``cimphony generate
--format``.

:class:`BlockPimDecoder` is :class:`workloads.smollm2_pim.PimDecoder` with every weight GEMV
(q, k, v, o, gate, up, down) in ``bfp16``, ``mxint8`` or ``q4_1`` through the golden numerics
of the macro and the block post-processing stage (:func:`workloads.blockquant.linear`:
inputs quantised on the host as the format prescribes, exact integer block dot products,
binary32 accumulation bit-exact to ``hdl/blockfmt.py``); ``q4_1`` executes the file's own
Q4_1 blocks exactly.  Attention stays on the module's INT8 path (INT8 KV cache, exact QK^T
and SV integers, host softmax), host ops in float, as for INT8.

The stage is not yet placed behind the channel's banks (``docs/blockfmt.md`` section 9 is a
proposal), so no module program runs the block GEMVs: their integers and binary32 results
are computed by the golden numerics, and no step timing exists (``timing`` is off).
:meth:`BlockPimDecoder.check` replays the recorded last-step GEMV inputs of chosen layers
through the cycle-exact stage model (``tb.blockfmt_gemv``, every column) or the stage RTL
in amaranth.sim (one tile) and counts mismatches against what the decoder computed.
"""
from __future__ import annotations

import numpy as np

from model import blockfmt as bf
from spec.blockfmt import Fmt
from workloads import blockquant as bq
from workloads.smollm2 import GEMVS
from workloads.smollm2_pim import PimDecoder

__all__ = ["BLOCK_FORMATS", "BlockPimDecoder"]

#: the block formats ``cimphony generate --format`` runs on this decoder
BLOCK_FORMATS = ("bfp16", "mxint8", "q4_1")
_QX = {"bfp16": bf.quantise_bfp16, "mxint8": bf.quantise_mxint8, "q4_1": bf.quantise_mxint8}
_FMT = {"bfp16": Fmt.BFP16, "mxint8": Fmt.MXINT8, "q4_1": Fmt.Q4_1}


class BlockPimDecoder(PimDecoder):
    """PimDecoder with block-format weight GEMVs (module doc).  ``check_layers``: layers
    whose GEMV inputs and outputs of the latest own-stream step are kept for :meth:`check`;
    other keyword arguments go to :class:`PimDecoder` (``timing`` and golden/RTL layers are
    always off: those check INT8 module programs)."""

    def __init__(self, fmt: str, model=None, max_context: int = 2048, *, check_layers=(),
                 **kw):
        if fmt not in BLOCK_FORMATS:
            raise ValueError(f"BlockPimDecoder: fmt={fmt!r} must be one of {BLOCK_FORMATS}")
        self.fmt = fmt
        kw.update(timing=False, golden_layers=(), record_layers=())
        super().__init__(model, max_context, **kw)
        self.check_layers = self._layers("check_layers", check_layers)
        self._prep: dict = self.model.__dict__.setdefault(f"_block_{fmt}", {})
        self.recording = False
        self.seen: dict = {}              # (layer, gemv) -> (x row float32, y row float32)

    def prepared(self, layer: int, gemv: str) -> bq.Prepared:
        """The weight of ``gemv`` of ``layer`` in this format (cached per loaded model)."""
        key = (layer, gemv)
        if key not in self._prep:
            raw = self.model.tensor(f"blk.{layer}.{GEMVS[gemv]}.weight").raw
            self._prep[key] = bq.prepare(self.fmt, self.weight(layer, gemv),
                                         raw if self.fmt == "q4_1" else None)
        return self._prep[key]

    def linear(self, layer: int, gemv: str, x: np.ndarray) -> np.ndarray:
        y = bq.linear(self.prepared(layer, gemv), x)
        if self.recording and layer in self.check_layers:
            self.seen[(layer, gemv)] = (np.array(x[-1], np.float32), np.array(y[-1]))
        return y

    def check(self, layer: int, rtl: bool = False, gemvs=None, tiles=None) -> list[dict]:
        """Replay the recorded last-step GEMVs of ``layer`` (default all seven; with ``rtl``
        the first tile of q) through the stage (``tb.blockfmt_gemv.stage_gemv``): per GEMV
        dict(gemv, columns, cycles, mismatches (columns whose binary32 code differs from the
        decoder's), rtl (None or dict(cycles, compared, mismatch)), wall_s)."""
        from tb.blockfmt_gemv import stage_gemv
        if gemvs is None:
            gemvs = ("q",) if rtl else tuple(GEMVS)
        if rtl and tiles is None:
            tiles = 1
        out = []
        for g in gemvs:
            if (layer, g) not in self.seen:
                raise ValueError(f"check: no recorded step for layer {layer} {g} (is it in "
                                 f"check_layers={self.check_layers}?)")
            x, y = self.seen[(layer, g)]
            pw = self.prepared(layer, g)
            xq, xs = _QX[self.fmt](x[None].astype(np.float64))
            r = stage_gemv(_FMT[self.fmt], xq[0], xs[0], pw.codes, pw.scales, rtl=rtl,
                           tiles=tiles)
            mine = np.asarray(y[:r["columns"]], np.float32).view(np.uint32)
            bad = int(np.sum(r["codes"] != mine)) + int(not r["exact"]) \
                + int(bool(r["rtl"] and r["rtl"]["mismatch"])) + len(r["errs"])
            out.append(dict(gemv=g, columns=r["columns"], of=int(pw.shape[0]),
                            cycles=r["cycles"], mismatches=bad, rtl=r["rtl"],
                            wall_s=r["wall_s"]))
        return out
