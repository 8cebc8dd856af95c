"""The page allocator of the module's page table (functional; no timing).

A physical page ``pp = bank * n_sets + set`` is one weight set of one bank in every channel
(docs/module.md).  Programs address pages by virtual page ``vp``; the host MAPs ``vp -> pp``
for a request id.  :class:`PageAllocator` is the project's one allocator; every compiler and
the bench use it or the pure functions below, which give in closed form what it allocates.

Placement (``placement``):

* ``"linear"``: physical pages in pp order (all sets of bank 0 first).
* ``"banks"``: blocks of ``k`` pages on ONE bank (a key block's d-chunks accumulate in one
  macro), consecutive blocks on consecutive banks (round robin over banks with room), so
  consecutive MACs use different banks.  In an empty region block ``i`` of ``k`` pages is
  at :func:`block_address` ``(i, k, n_banks)``; ``n`` blocks use :func:`region_sets` sets.

Request-level policies (:meth:`PageAllocator.admit` / :meth:`grow` / :meth:`release`; each
returns the host command words, ``spec.isa.host_encode``, the host must push, in order):

* ``"static"``: at admission, MAP a physical page for every virtual page of the maximum context
  (reserved bytes = max context, whatever the live context).
* ``"dynamic"`` (DPA): at admission only the virtual range is reserved; physical pages are
  MAPped as the context grows (``grow``) and everything is UNMAPped at ``release``.

A request gets a *contiguous* range of virtual pages, so that a LOOP can stride over its pages
with ``vps``.  Capacity: ``live_bytes`` (tokens held x bytes per token) vs ``reserved_bytes``
(mapped pages x bytes per page); :func:`kv_blocks` / :func:`kv_pages` count the pages of one
KV head under the attention compilers' rules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from spec.isa import HostOp, ModuleParams, host_encode
from spec.params import check_int

__all__ = ["PageAllocator", "AllocError", "Reservation", "kv_blocks", "kv_pages",
           "block_address", "region_sets"]


class AllocError(ValueError):
    """Not enough free physical or virtual pages (admission refused / growth impossible); the
    message starts with the module limit that does not fit (``n_pages``, ``n_vpages``...)."""


# ---- pure rules (what the allocator allocates, in closed form) ------------------------------

def kv_blocks(tokens: int, n_share: int, n_in: int, n_out: int) -> tuple[int, int]:
    """(key blocks, token chunks) of one KV head holding ``tokens`` tokens interleaved over
    ``n_share`` channels (TCP: all n_ch; HFP: 1): the fullest channel holds nloc =
    ceil(tokens / n_share); a key block is n_out tokens (page columns), a token chunk n_in
    tokens (page rows)."""
    tokens = check_int("kv_blocks: tokens", tokens, 0)
    n_share, n_in, n_out = (check_int(f"kv_blocks: {k}", v, 1) for k, v in
                            (("n_share", n_share), ("n_in", n_in), ("n_out", n_out)))
    nloc = -(-tokens // n_share)
    return -(-nloc // n_out), -(-nloc // n_in)


def kv_pages(tokens: int, n_share: int, n_in: int, n_out: int, head_dim: int) -> int:
    """Physical pages one KV head holds (see :func:`kv_blocks`): each key block is
    ceil(head_dim / n_in) pages (d-chunks, on one bank), each token chunk
    ceil(head_dim / n_out) pages (dim chunks)."""
    check_int("kv_pages: head_dim", head_dim, 1)
    kb, tc = kv_blocks(tokens, n_share, n_in, n_out)
    return kb * math.ceil(head_dim / n_in) + tc * math.ceil(head_dim / n_out)


def block_address(i: int, k: int, n_banks: int, set0: int = 0) -> tuple[int, int]:
    """(bank, first set) of the ``i``-th block of ``k`` pages that ``placement="banks"``
    allocates in an empty region whose first set is ``set0`` (its sets are consecutive)."""
    return i % n_banks, set0 + (i // n_banks) * k


def region_sets(n_blocks: int, k: int, n_banks: int) -> int:
    """Sets per bank that ``n_blocks`` blocks of ``k`` pages take (``placement="banks"``)."""
    return -(-n_blocks // n_banks) * k


# ---- the allocator --------------------------------------------------------------------------

@dataclass
class Reservation:
    """A request's virtual range ``[vp0, vp0 + n_vp)`` and the physical pages of its first
    ``len(pages)`` virtual pages."""
    rid: int
    vp0: int
    n_vp: int
    max_tokens: int
    tokens: int = 0
    pages: list = field(default_factory=list)


class PageAllocator:
    """Physical pages, virtual ranges and the page table the module is expected to hold.

    params            the module (n_banks x n_sets physical pages, n_vpages, n_req)
    policy            "static" | "dynamic" (request-level API)
    tokens_per_page   tokens of one request per page (default macro n_out: a page is an
                      n_in x n_out tile whose columns are tokens)
    bytes_per_token   live bytes per token (default page bytes / tokens_per_page)
    placement         "linear" | "banks" (see the module doc)
    """

    def __init__(self, params: ModuleParams, policy: str = "dynamic", *,
                 tokens_per_page: int | None = None, bytes_per_token: int | None = None,
                 placement: str = "linear"):
        if not isinstance(params, ModuleParams):
            raise ValueError(f"PageAllocator: params={params!r} must be a ModuleParams")
        if policy not in ("static", "dynamic"):
            raise ValueError(f"PageAllocator: policy={policy!r} must be 'static' or 'dynamic'")
        if placement not in ("linear", "banks"):
            raise ValueError(f"PageAllocator: placement={placement!r} must be 'linear' or "
                             "'banks'")
        self.params, self.policy, self.placement = params, policy, placement
        m = params.channel.macro
        self.tokens_per_page = m.n_out if tokens_per_page is None else tokens_per_page
        check_int("PageAllocator: tokens_per_page", self.tokens_per_page, 1)
        # one page = an n_in x n_out tile of w_bits in each of the n_ch channels
        self.page_bytes = params.n_ch * m.n_in * m.n_out * m.w_bits // 8
        self.bytes_per_token = (bytes_per_token if bytes_per_token is not None
                                else self.page_bytes // self.tokens_per_page)
        self.S, self.B = m.n_sets, params.channel.n_banks
        self.free = [list(range(self.S)) for _ in range(self.B)]   # free sets per bank
        self._ptr = 0                                   # "banks": next bank to try
        self.vp_used = [None] * params.n_vpages         # rid owning each virtual page
        self.table: dict[int, tuple[int, int]] = {}     # vp -> (rid, pp)
        self.reqs: dict[int, Reservation] = {}
        self.peak_reserved_pages = 0

    # --- low level: virtual ranges, physical pages, the page table ---------------------------
    def reserve_vpages(self, n: int, rid: int, what: str = "") -> int:
        """First virtual page of a free contiguous range of ``n`` pages, now owned by
        ``rid``.  AllocError naming n_vpages if there is none."""
        n = check_int("reserve_vpages: n", n, 0)
        run = 0
        for vp, owner in enumerate(self.vp_used):
            run = run + 1 if owner is None else 0
            if run == n:
                vp0 = vp - n + 1
                self.vp_used[vp0:vp + 1] = [rid] * n
                return vp0
        if n == 0:
            return 0
        free = self.vp_used.count(None)
        raise AllocError(f"n_vpages: {what or f'rid {rid}'} needs {n} contiguous virtual "
                         f"pages, {free} free of n_vpages={self.params.n_vpages}")

    def take(self, k: int, what: str = "") -> list[int]:
        """``k`` free physical pages: the lowest pps ("linear"), or ``k`` sets of one bank,
        the next bank round robin with room ("banks").  AllocError (state unchanged) if they
        do not fit."""
        k = check_int("take: k", k, 1)
        what = what or f"{k} pages"
        if self.placement == "linear":
            if k > self.n_free:
                raise AllocError(f"n_pages: {what} does not fit: {self.used} of n_pages="
                                 f"{self.params.n_pages} physical pages used, {k} more needed")
            out = []
            for b, fr in enumerate(self.free):
                while fr and len(out) < k:
                    out.append(b * self.S + fr.pop(0))
            return out
        if k > self.S:
            raise AllocError(f"n_sets: {what} needs {k} sets on one bank, n_sets={self.S}")
        for i in range(self.B):
            b = (self._ptr + i) % self.B
            if len(self.free[b]) >= k:
                sets = [self.free[b].pop(0) for _ in range(k)]
                self._ptr = (b + 1) % self.B
                return [b * self.S + s for s in sets]
        raise AllocError(f"n_pages: {what} does not fit: {self.used} of n_pages="
                         f"{self.params.n_pages} (n_banks x n_sets) physical pages used, {k} "
                         "more needed on one bank")

    def give_back(self, pps) -> None:
        """Return physical pages to the free pool."""
        for pp in pps:
            self.free[pp // self.S].append(pp % self.S)
        for fr in self.free:
            fr.sort()

    def map(self, vp: int, pp: int, rid: int) -> int:
        """Record ``vp -> (rid, pp)`` in the page table; the MAP host word."""
        self.table[vp] = (rid, pp)
        return host_encode(self.params, HostOp.MAP, vp=vp, pp=pp, rid=rid)

    def map_words(self) -> list[int]:
        """MAP words of the whole page table, in vp order."""
        return [host_encode(self.params, HostOp.MAP, vp=vp, pp=pp, rid=rid)
                for vp, (rid, pp) in sorted(self.table.items())]

    @property
    def n_free(self) -> int:
        return sum(map(len, self.free))

    @property
    def used(self) -> int:
        """Physical pages taken."""
        return self.params.n_pages - self.n_free

    @property
    def vpages_used(self) -> int:
        return self.params.n_vpages - self.vp_used.count(None)

    # --- request level: the host's view -----------------------------------------------------
    def pages_for(self, tokens: int) -> int:
        return -(-tokens // self.tokens_per_page)

    def _req(self, fn: str, rid) -> Reservation:
        if rid not in self.reqs:
            raise ValueError(f"{fn}: rid={rid!r} is not admitted")
        return self.reqs[rid]

    def _map(self, r: Reservation, k: int) -> list[int]:
        cmds = []
        while len(r.pages) < k:
            (pp,) = self.take(1, f"rid {r.rid}")
            vp = r.vp0 + len(r.pages)
            r.pages.append(pp)
            cmds.append(self.map(vp, pp, r.rid))
        self.peak_reserved_pages = max(self.peak_reserved_pages, self.reserved_pages)
        return cmds

    def admit(self, rid: int, max_tokens: int) -> list[int]:
        """Admit request ``rid`` with a maximum context of ``max_tokens``; AllocError if it
        cannot be admitted (no state changes then)."""
        check_int("admit: max_tokens", max_tokens, 0)
        if rid in self.reqs:
            raise ValueError(f"admit: rid={rid!r} already admitted")
        check_int("admit: rid", rid, 0, self.params.n_req - 1)
        n = max(1, self.pages_for(max_tokens))
        if self.policy == "static" and n > self.n_free:
            raise AllocError(f"n_pages: rid {rid} needs {n} pages, {self.n_free} free")
        vp0 = self.reserve_vpages(n, rid)
        r = self.reqs[rid] = Reservation(rid, vp0, n, max_tokens)
        return self._map(r, n) if self.policy == "static" else []

    def grow(self, rid: int, tokens: int, set_tok: bool = True) -> list[int]:
        """The request now holds ``tokens`` tokens: MAP pages it needs (dynamic) and, with
        ``set_tok``, a SET_TOK.  AllocError if out of pages (state unchanged)."""
        r = self._req("grow", rid)
        check_int("grow: tokens", tokens, 0)
        if tokens > r.max_tokens:
            raise AllocError(f"max_tokens: rid {rid}: {tokens} tokens > max context "
                             f"{r.max_tokens}")
        need = self.pages_for(tokens)
        if need - len(r.pages) > self.n_free:
            raise AllocError(f"n_pages: rid {rid}: out of physical pages")
        cmds = self._map(r, need) if self.policy == "dynamic" else []
        r.tokens = tokens
        if set_tok:
            cmds.append(host_encode(self.params, HostOp.SET_TOK, rid=rid, count=tokens))
        return cmds

    def release(self, rid: int) -> list[int]:
        """The request ended: UNMAP all its pages, free its virtual range."""
        r = self._req("release", rid)
        del self.reqs[rid]
        cmds = [host_encode(self.params, HostOp.UNMAP, vp=r.vp0 + i, rid=rid)
                for i in range(len(r.pages))]
        for i in range(len(r.pages)):
            del self.table[r.vp0 + i]
        self.give_back(r.pages)
        for vp in range(r.vp0, r.vp0 + r.n_vp):
            self.vp_used[vp] = None
        return cmds

    # --- accounting --------------------------------------------------------------------------
    def vpages(self, rid: int) -> list[int]:
        r = self._req("vpages", rid)
        return list(range(r.vp0, r.vp0 + len(r.pages)))

    def page_table(self) -> dict[int, tuple[int, int]]:
        """Expected valid page-table entries: vp -> (rid, pp)."""
        return dict(self.table)

    @property
    def reserved_pages(self) -> int:
        return sum(len(r.pages) for r in self.reqs.values())

    @property
    def live_bytes(self) -> int:
        return sum(r.tokens for r in self.reqs.values()) * self.bytes_per_token

    @property
    def reserved_bytes(self) -> int:
        return self.reserved_pages * self.page_bytes

    @property
    def utilisation(self) -> float:
        """Live KV bytes / reserved bytes (1.0 when nothing is reserved)."""
        rb = self.reserved_bytes
        return self.live_bytes / rb if rb else 1.0

    def accounting(self) -> dict:
        return {"policy": self.policy, "requests": len(self.reqs),
                "reserved_pages": self.reserved_pages, "free_pages": self.n_free,
                "peak_reserved_pages": self.peak_reserved_pages,
                "live_bytes": self.live_bytes, "reserved_bytes": self.reserved_bytes,
                "utilisation": self.utilisation}
