"""One layer's KV cache on ONE PimModule, grown token by token, and its attention commands.

The mapping is the attention compiler's (docs/compiler.md, "Attention on one module"): a
key block (n_out tokens x n_in dims) per page, its d-chunks on one bank; V pages of n_in
tokens x n_out dims; TCP interleaves each head's tokens over all channels (token t on channel
t % C), HFP keeps a KV head on one channel (a slot of up to C heads shares its pages).  The
QK^T / SV commands come from :func:`compiler.attention.step.build_step`; what is new here is
that the cache lives across steps:

* each stream reserves a contiguous virtual range for ``max_context`` tokens at creation;
  physical pages are taken from the layer's :class:`compiler.pages.PageAllocator` and MAPped
  when the context first needs them (DPA; ``alloc="static"`` maps them all at creation);
* every step appends the new token: its K column is written into the d rows of its key
  block's pages (a WR_W writes a whole n_out-token row, so the host keeps the block's codes),
  its V row into one row of each dim-chunk page; then ``SET_TOK rid, T``.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from compiler.attention.program import chan_tokens, pad, place_beat, pow2_floor
from compiler.attention.step import build_step
from compiler.decoder.gemv import host_encoder, pack_rows, wr_w_words
from compiler.pages import PageAllocator, kv_blocks
from spec.isa import HostOp, ModuleParams
from spec.params import pack_vec

__all__ = ["LayerKV"]


class LayerKV:
    """KV cache of ``n_kv`` heads of ``d`` dims (GQA group ``g``) for request ``rid``.

    ``pages`` is shared with the layer's weights.  ValueError naming the module limit that
    does not fit (virtual pages, sets, GBuf / OBuf entries, loop fields)."""

    def __init__(self, p: ModuleParams, pages: PageAllocator, n_kv: int, g: int, d: int,
                 partition: str = "TCP", alloc: str = "dpa", max_context: int = 2048,
                 rid: int = 0, loop: bool = False):
        if partition not in ("TCP", "HFP"):
            raise ValueError(f"LayerKV: partition={partition!r} must be 'TCP' or 'HFP'")
        if alloc not in ("dpa", "static"):
            raise ValueError(f"LayerKV: alloc={alloc!r} must be 'dpa' or 'static'")
        cp, m = p.channel, p.channel.macro
        self.p, self.pages, self.rid, self.loop = p, pages, rid, loop
        self.n_kv, self.g, self.d, self.max_context = n_kv, g, d, max_context
        self.tcp, self.partition, self.alloc = partition == "TCP", partition, alloc
        C, NI, NO = p.n_ch, m.n_in, m.n_out
        self.Cs = C if self.tcp else 1
        self.kt_n, self.dc_n = math.ceil(d / NI), math.ceil(d / NO)
        if self.kt_n > cp.n_gbuf or self.kt_n > m.n_sets or self.dc_n > m.n_acc:
            raise ValueError(f"n_gbuf/n_sets/n_acc: head_dim {d} needs {self.kt_n} GBuf "
                             f"entries and sets and {self.dc_n} OBuf entries")
        if m.n_sets > 2 ** m.acc_guard:
            raise ValueError(f"acc_guard: up to n_sets={m.n_sets} SV chunks per bank would wrap")
        U = 1 if loop else pow2_floor(min(cp.n_banks, m.n_acc))
        per = None
        if loop:
            if (NO * self.Cs) & (NO * self.Cs - 1):
                raise ValueError(f"LOOP per: n_out*C'={NO * self.Cs} is not a power of two")
            per = (NO * self.Cs).bit_length() - 1
            if per > 15 or self.kt_n + 1 > p.loop_len:
                raise ValueError(f"loop_len/per: the QK^T loop needs per={per} <= 15 and "
                                 f"{self.kt_n + 1} <= loop_len={p.loop_len}")
        kb_max, tc_max = kv_blocks(max_context, self.Cs, NI, NO)
        if self.tcp:
            slots = [[(h, None)] for h in range(n_kv)]
        else:
            slots = [[(h, h % C) for h in range(j * C, min(n_kv, (j + 1) * C))]
                     for j in range(math.ceil(n_kv / C))]
        self.streams = []
        for j, hs in enumerate(slots):
            kv0 = pages.reserve_vpages(kb_max * self.kt_n, rid, f"KV stream {j} K")
            vv0 = pages.reserve_vpages(tc_max * self.dc_n, rid, f"KV stream {j} V")
            self.streams.append(dict(r=0, heads=hs, kv0=kv0, vv0=vv0, kt_n=self.kt_n,
                                     dc_n=self.dc_n, bank_of={}, U=U, per=per, kb=0, tc=0))
        self.kq = np.zeros((n_kv, max_context, d), np.int64)
        self.vq = np.zeros((n_kv, max_context, d), np.int64)
        self.ks = np.zeros((n_kv, max_context))
        self.vs = np.zeros((n_kv, max_context))
        self.T = 0
        self._maps = self._grow(max_context) if alloc == "static" else []

    # --- pages ------------------------------------------------------------------------------
    def _grow(self, T: int) -> list:
        """MAP words of the pages ``T`` tokens need and are not mapped yet."""
        m = self.p.channel.macro
        kb_n, tc_n = kv_blocks(T, self.Cs, m.n_in, m.n_out)
        out = []
        for j, st in enumerate(self.streams):
            while st["kb"] < kb_n:
                pps = self.pages.take(self.kt_n, f"KV stream {j} key block {st['kb']}")
                for kt, pp in enumerate(pps):
                    vp = st["kv0"] + st["kb"] * self.kt_n + kt
                    out.append(self.pages.map(vp, pp, self.rid))
                    st["bank_of"][vp] = pp // m.n_sets
                st["kb"] += 1
            while st["tc"] < tc_n:
                for dc in range(self.dc_n):
                    pp = self.pages.take(1, f"KV stream {j} V page ({st['tc']},{dc})")[0]
                    vp = st["vv0"] + st["tc"] * self.dc_n + dc
                    out.append(self.pages.map(vp, pp, self.rid))
                    st["bank_of"][vp] = pp // m.n_sets
                st["tc"] += 1
        return out

    # --- rows -------------------------------------------------------------------------------
    def _chan(self, t: int, ch) -> tuple[int, int]:
        """(channel, local index) of token t of a head whose HFP channel is ``ch``."""
        return (t % self.p.n_ch, t // self.p.n_ch) if self.tcp else (ch, t)

    def _key_block(self, st, h, c: int, kb: int, toks) -> list:
        """WR_W words of every d row of key block ``kb`` of head ``h`` on channel ``c``: row r
        of d-chunk kt holds dim kt*n_in + r of the block's tokens ``toks`` (the rest 0)."""
        p, m = self.p, self.p.channel.macro
        NI, NO = m.n_in, m.n_out
        out = []
        for kt in range(self.kt_n):
            n = min(NI, self.d - kt * NI)
            blk = np.zeros((n, NO), np.int64)
            blk[:, :len(toks)] = self.kq[h][np.ix_(toks, range(kt * NI, kt * NI + n))].T
            out += wr_w_words(p, 1 << c, self.rid, st["kv0"] + kb * self.kt_n + kt,
                              pack_rows(blk, m.w_bits))
        return out

    def _token_rows(self, st, h, ch, t: int, T: int, zero: bool) -> list:
        """WR_W words that write token t (of T held) of head h: its key block's d rows, its
        V row."""
        p, m = self.p, self.p.channel.macro
        NI, NO = m.n_in, m.n_out
        c, j = self._chan(t, ch)
        kb, tc = j // NO, j // NI
        toks = chan_tokens(T, c, p.n_ch, self.tcp)[kb * NO:(kb + 1) * NO]
        out = self._key_block(st, h, c, kb, toks[:0] if zero else toks)   # zero: no data
        for dc in range(self.dc_n):
            vp = st["vv0"] + tc * self.dc_n + dc
            data = 0 if zero else pack_vec(pad(self.vq[h, t, dc * NO:(dc + 1) * NO], NO),
                                           m.w_bits)
            out += wr_w_words(p, 1 << c, self.rid, vp, [data], row0=j % NI)
        return out

    def append(self, kq, ks, vq, vs, zero: bool = False) -> list:
        """Append one token (codes ``kq``, ``vq`` [n_kv, d], scales [n_kv]): MAPs of new pages,
        its WR_W rows, ``SET_TOK rid, T``.  ``zero``: data fields 0 (timing only)."""
        if self.T >= self.max_context:
            raise ValueError(f"max_context: the KV cache holds {self.max_context} tokens")
        t = self.T
        self.kq[:, t], self.ks[:, t], self.vq[:, t], self.vs[:, t] = kq, ks, vq, vs
        self.T = t + 1
        words = self._maps + self._grow(self.T)
        self._maps = []
        for st in self.streams:
            for h, ch in st["heads"]:
                words += self._token_rows(st, h, ch, t, self.T, zero)
        words.append(host_encoder(self.p)(HostOp.SET_TOK, rid=self.rid, count=self.T))
        return words

    def history_words(self) -> list:
        """WR_W words of every cached row (a session joining mid-stream, after the MAPs of
        the whole page table, :meth:`compiler.pages.PageAllocator.map_words`):
        each key-block row once with all its tokens, each V row once."""
        p, m = self.p, self.p.channel.macro
        NI, NO = m.n_in, m.n_out
        out = []
        for st in self.streams:
            for h, ch in st["heads"]:
                for c in (range(p.n_ch) if self.tcp else [ch]):
                    toks = chan_tokens(self.T, c, p.n_ch, self.tcp)
                    for kb in range(math.ceil(len(toks) / NO)):
                        out += self._key_block(st, h, c, kb, toks[kb * NO:(kb + 1) * NO])
                    for dc in range(self.dc_n):
                        for tc in range(math.ceil(len(toks) / NI)):
                            tk = toks[tc * NI:(tc + 1) * NI]
                            blk = np.zeros((len(tk), NO), np.int64)
                            seg = self.vq[h][tk, dc * NO:(dc + 1) * NO]
                            blk[:, :seg.shape[1]] = seg
                            out += wr_w_words(p, 1 << c, self.rid,
                                              st["vv0"] + tc * self.dc_n + dc,
                                              pack_rows(blk, m.w_bits))
        return out

    def preload(self, kq, ks, vq, vs) -> None:
        """Put ``T`` cached tokens (codes [n_kv, T, d], scales [n_kv, T]) in the host copy and
        the page table (no words: a module joining here is set up with the page table's MAPs,
        then :meth:`history_words`)."""
        T = np.asarray(kq).shape[1]
        if self.T or T > self.max_context:
            raise ValueError(f"preload: the cache holds {self.T} tokens; T={T} of "
                             f"max_context={self.max_context}")
        self.kq[:, :T], self.ks[:, :T], self.vq[:, :T], self.vs[:, :T] = kq, ks, vq, vs
        self.T = T
        self._grow(T)                   # in the page table: the joining setup MAPs them

    # --- attention ----------------------------------------------------------------------------
    def attention_words(self, qq, wq) -> tuple[list, dict]:
        """QK^T, BARRIER, SV words over the T cached tokens for query codes ``qq`` [n_kv, g, d]
        and SV input codes ``wq`` [n_kv, g, T] (known in advance: the QK^T integers are exact),
        and reads[c] = [(bank, o, ("attn", tag))]."""
        req = SimpleNamespace(T=self.T, g=self.g, d=self.d, H=self.n_kv)
        heads = {(0, h): dict(qq=np.asarray(qq[h]), wq=np.asarray(wq[h]))
                 for h in range(self.n_kv)}
        words, reads, _ = build_step(self.p, [req], self.streams, heads, self.tcp, self.loop)
        return words, {c: [(b, o, ("attn",) + tuple(tag)) for b, o, tag in v]
                       for c, v in reads.items()}

    def decode(self, beats) -> tuple[np.ndarray, np.ndarray]:
        """(scores [n_kv, g, T], acc [n_kv, g, d]) int64 from ``beats`` = [(channel, tag, y)]."""
        m = self.p.channel.macro
        NO, T = m.n_out, self.T
        scores = np.zeros((self.n_kv, self.g, T), np.int64)
        acc = np.zeros((self.n_kv, self.g, self.d), np.int64)
        for c, tag, y in beats:
            _, kind, _, h, qi, k, _c = tag
            place_beat(scores[h], acc[h], kind, qi, k, np.asarray(y, dtype=np.int64), T, c,
                       self.p.n_ch, self.tcp, NO)
        return scores, acc

