"""Host-side page allocator for the module's page table (functional; no timing).

A physical page ``pp`` is one weight set of one bank in every channel (docs/module.md); it holds
``tokens_per_page`` tokens of one request's KV cache (default ``macro.n_out``: a page is an
``n_in`` x ``n_out`` weight tile whose columns are tokens).  Programs address pages by virtual
page ``vp``; a request gets a *contiguous* range of virtual pages for its maximum context at
admission, so that a LOOP can stride over its pages with ``vps``.

Policies:

* ``"static"``: at admission, MAP a physical page for every virtual page of the maximum context
  (reserved bytes = max context, whatever the live context).
* ``"dynamic"`` (DPA): at admission only the virtual range is reserved; physical pages are
  MAPped as the context grows (``grow``) and everything is UNMAPped at ``release``.

Every method returns the host command words (``spec.isa.host_encode``) the host must push, in
order; the allocator mirrors the page table it expects the module to hold (``page_table``).
Capacity accounting: ``live_bytes`` (tokens held x bytes per token) vs ``reserved_bytes``
(mapped pages x bytes per page).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from spec.isa import HostOp, ModuleParams, host_encode

__all__ = ["PageAllocator", "AllocError", "Request"]


class AllocError(RuntimeError):
    """Not enough free physical or virtual pages (admission refused / growth impossible)."""


@dataclass
class Request:
    rid: int
    vp0: int               # first virtual page of the request's range
    n_vp: int              # virtual pages reserved (max context)
    max_tokens: int
    tokens: int = 0
    pages: list = field(default_factory=list)   # physical page of vp0 + i (mapped ones)


class PageAllocator:
    def __init__(self, params: ModuleParams, policy: str = "dynamic", *,
                 tokens_per_page: int | None = None, bytes_per_token: int | None = None):
        if policy not in ("static", "dynamic"):
            raise ValueError(f"PageAllocator: policy={policy!r} must be 'static' or 'dynamic'")
        self.params, self.policy = params, policy
        m = params.channel.macro
        self.tokens_per_page = tokens_per_page or m.n_out
        if self.tokens_per_page <= 0:
            raise ValueError(f"PageAllocator: tokens_per_page={tokens_per_page!r} must be > 0")
        # one page = an n_in x n_out tile of w_bits in each of the n_ch channels
        self.page_bytes = params.n_ch * m.n_in * m.n_out * m.w_bits // 8
        self.bytes_per_token = (bytes_per_token if bytes_per_token is not None
                                else self.page_bytes // self.tokens_per_page)
        self.free_pp = list(range(params.n_pages))
        self.vp_used = [None] * params.n_vpages          # rid owning each virtual page
        self.reqs: dict[int, Request] = {}
        self.peak_reserved_pages = 0

    # --- helpers ---------------------------------------------------------------------------
    def pages_for(self, tokens: int) -> int:
        return -(-tokens // self.tokens_per_page)

    def _enc(self, op, **f) -> int:
        return host_encode(self.params, op, **f)

    def _find_vrange(self, n: int) -> int:
        run = 0
        for vp, owner in enumerate(self.vp_used):
            run = run + 1 if owner is None else 0
            if run == n:
                return vp - n + 1
        raise AllocError(f"no {n} contiguous free virtual pages")

    def _map(self, r: Request, k: int) -> list[int]:
        cmds = []
        while len(r.pages) < k:
            if not self.free_pp:
                raise AllocError(f"rid {r.rid}: out of physical pages")
            pp = self.free_pp.pop(0)
            vp = r.vp0 + len(r.pages)
            r.pages.append(pp)
            cmds.append(self._enc(HostOp.MAP, vp=vp, pp=pp, rid=r.rid))
        self.peak_reserved_pages = max(self.peak_reserved_pages, self.reserved_pages)
        return cmds

    # --- the host's view --------------------------------------------------------------------
    def admit(self, rid: int, max_tokens: int) -> list[int]:
        """Admit request ``rid`` with a maximum context of ``max_tokens``; AllocError if it
        cannot be admitted (no state changes then)."""
        if rid in self.reqs:
            raise ValueError(f"admit: rid {rid} already admitted")
        if not 0 <= rid < self.params.n_req:
            raise ValueError(f"admit: rid {rid} out of range")
        n = max(1, self.pages_for(max_tokens))
        if self.policy == "static" and n > len(self.free_pp):
            raise AllocError(f"rid {rid}: needs {n} pages, {len(self.free_pp)} free")
        vp0 = self._find_vrange(n)
        for vp in range(vp0, vp0 + n):
            self.vp_used[vp] = rid
        r = self.reqs[rid] = Request(rid, vp0, n, max_tokens)
        return self._map(r, n) if self.policy == "static" else []

    def grow(self, rid: int, tokens: int, set_tok: bool = True) -> list[int]:
        """The request now holds ``tokens`` tokens: MAP pages it needs (dynamic) and, with
        ``set_tok``, a SET_TOK.  AllocError if out of pages (state unchanged)."""
        r = self.reqs[rid]
        if tokens > r.max_tokens:
            raise AllocError(f"rid {rid}: {tokens} tokens > max context {r.max_tokens}")
        need = self.pages_for(tokens)
        if need - len(r.pages) > len(self.free_pp):
            raise AllocError(f"rid {rid}: out of physical pages")
        cmds = self._map(r, need) if self.policy == "dynamic" else []
        r.tokens = tokens
        if set_tok:
            cmds.append(self._enc(HostOp.SET_TOK, rid=rid, count=tokens))
        return cmds

    def release(self, rid: int) -> list[int]:
        """The request ended: UNMAP all its pages, free its virtual range."""
        r = self.reqs.pop(rid)
        cmds = [self._enc(HostOp.UNMAP, vp=r.vp0 + i, rid=rid) for i in range(len(r.pages))]
        self.free_pp.extend(r.pages)
        self.free_pp.sort()
        for vp in range(r.vp0, r.vp0 + r.n_vp):
            self.vp_used[vp] = None
        return cmds

    # --- accounting --------------------------------------------------------------------------
    def vpages(self, rid: int) -> list[int]:
        r = self.reqs[rid]
        return list(range(r.vp0, r.vp0 + len(r.pages)))

    def page_table(self) -> dict[int, tuple[int, int]]:
        """Expected valid page-table entries: vp -> (rid, pp)."""
        return {r.vp0 + i: (r.rid, pp) for r in self.reqs.values() for i, pp in enumerate(r.pages)}

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
                "reserved_pages": self.reserved_pages, "free_pages": len(self.free_pp),
                "peak_reserved_pages": self.peak_reserved_pages,
                "live_bytes": self.live_bytes, "reserved_bytes": self.reserved_bytes,
                "utilisation": self.utilisation}
