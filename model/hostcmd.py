"""Host-command checks and translation of the module golden model (docs/module.md,
"Dispatch"): pure functions of the module's parameters, the page table and one decoded host
command, used by :class:`model.module.ModuleModel` (split out of model/module.py).

Written from the contract only, not from the HDL.  A decoded command is a dict of the
``host_fields`` of the module (``multi`` only with ``wide_inp > 1``) whose ``vp`` and ``o``
already include a loop replay's offsets; the page table is a list of ``(valid, rid, pp)``.
"""
from __future__ import annotations

from spec.isa import (HOST_CHANNEL_OPS, HostOp, ModErr, ModuleParams, Op, cmd_fields,
                      host_fields, host_op_limit, host_op_valid)

__all__ = ["HostCmd"]

_NOP, _WR_INP, _WR_W, _MAC, _RD_OUT = (int(HostOp.NOP), int(HostOp.WR_INP), int(HostOp.WR_W),
                                       int(HostOp.MAC), int(HostOp.RD_OUT))
_MAP, _UNMAP, _SET_TOK, _LOOP = (int(HostOp.MAP), int(HostOp.UNMAP), int(HostOp.SET_TOK),
                                 int(HostOp.LOOP))
_MAC_AB = int(HostOp.MAC_AB)
_SM_CFG, _RD_SM, _WR_PROB, _SM_ABORT = (int(HostOp.SM_CFG), int(HostOp.RD_SM),
                                       int(HostOp.WR_PROB), int(HostOp.SM_ABORT))
_WR_SCALE = int(HostOp.WR_SCALE)
_USES_VP = (_WR_W, _MAC, _RD_OUT, _MAP, _UNMAP)
_USES_RID = (_WR_W, _MAC, _RD_OUT, _MAP, _UNMAP, _SET_TOK, _LOOP, _MAC_AB, _RD_SM, _SM_CFG,
             _WR_SCALE)
_USES_PT = (_WR_W, _MAC, _RD_OUT, _UNMAP, _RD_SM, _WR_SCALE)
_BAD_OPCODE, _BAD_FIELD, _UNMAPPED, _NOT_OWNER, _ALREADY, _NOT_STRIPE = (
    int(ModErr.BAD_OPCODE), int(ModErr.BAD_FIELD), int(ModErr.UNMAPPED), int(ModErr.NOT_OWNER),
    int(ModErr.ALREADY_MAPPED), int(ModErr.NOT_STRIPE))


class HostCmd:
    """Decode, check and translate host commands of module ``p``.

    Attributes
    ----------
    ch_ops : tuple of int
        Host opcodes that become channel commands (MAC_AB too with ``all_bank``).
    limit : int
        Opcodes ``>= limit`` are BAD_OPCODE (:func:`spec.isa.host_op_limit`).
    """

    def __init__(self, p: ModuleParams):
        self.p = p
        cp, m = p.channel, p.channel.macro
        self._hf = {n: (f.offset, (1 << f.width) - 1) for n, f in host_fields(p).items()}
        self._cf = {n: f.offset for n, f in cmd_fields(cp).items()}
        self._S, self._E, self._G, self._NI = m.n_sets, m.n_acc, cp.n_gbuf, m.n_in
        self._V, self._R, self._L, self._NP = p.n_vpages, p.n_req, p.loop_len, p.n_pages
        self._C, self._B = p.n_ch, cp.n_banks
        self._wide = p.wide_inp
        self._tile = (1 << cp.data_bits) - 1
        self._db = cp.data_bits
        self.limit = host_op_limit(p)
        self._valid_ops = frozenset(o for o in range(16) if host_op_valid(p, o))
        self.ch_ops = ((_WR_INP, _WR_W, _MAC, _RD_OUT) + ((_MAC_AB,) if cp.all_bank else ())
                       + ((_RD_SM, _WR_PROB) if p.softmax else ())
                       + ((_WR_SCALE,) if cp.post is not None else ()))
        # WR_SCALE (channel.post): row = the part, < chunks; WR_INP carries xs
        self._chunks = cp.post.chunks if cp.post is not None else 0
        self._post = cp.post is not None
        self._replay_ok = (_NOP,) + self.ch_ops
        if p.softmax:       # SM_CFG: chmask = P consecutive channels, P a power of two
            sp = p.sm_params
            self._sm_n = sp.max_context
            self._sm_masks = {((1 << P) - 1) << c0: (c0, P.bit_length() - 1)
                              for P in (1, 2, 4, 8) if P <= sp.n_part
                              for c0 in range(self._C - P + 1)}

    def fields(self, word: int) -> dict[str, int]:
        """Decode a host command word (``host_fields``)."""
        return {n: (word >> o) & m for n, (o, m) in self._hf.items()}

    def chan_op(self, op: int) -> int:
        """The channel opcode a host channel op ``op`` becomes."""
        if op == _MAC_AB:
            return int(Op.MAC)
        if op == _RD_SM:
            return int(Op.RD_OUT)
        if op == _WR_PROB:
            return int(Op.WR_INP)
        if op == _WR_SCALE:
            return int(Op.WR_W)
        return int(HOST_CHANNEL_OPS[HostOp(op)])

    # --- checks -------------------------------------------------------------------------
    def check(self, f: dict, replay: bool, pt: list, tok=None) -> int:
        """The ModErr code of decoded command ``f`` (0 = passes): checks 1-5 of docs/module.md
        in order, the first failing one wins.  Pure.  ``tok``: the token counters (needed
        for SM_CFG only)."""
        op = f["op"]
        if op not in self._valid_ops:
            return _BAD_OPCODE
        # 2. BAD_FIELD
        if replay and op not in self._replay_ok:
            return _BAD_FIELD
        if op in self.ch_ops:
            cm = f["chmask"]
            if cm == 0 or cm >= (1 << self._C):
                return _BAD_FIELD
            if op == _WR_INP and self._wide > 1 and f["multi"] and cm.bit_count() > self._wide:
                return _BAD_FIELD
        if op in (_WR_INP, _MAC, _MAC_AB, _WR_PROB) and f["g"] >= self._G:
            return _BAD_FIELD
        if op == _WR_W and f["row"] >= self._NI:
            return _BAD_FIELD
        if op in (_MAC, _RD_OUT, _MAC_AB, _RD_SM) and f["o"] >= self._E:
            return _BAD_FIELD
        if op == _WR_SCALE and f["row"] >= self._chunks:
            return _BAD_FIELD
        if op in _USES_VP + (_RD_SM, _WR_SCALE) and f["vp"] >= self._V:
            return _BAD_FIELD
        if op == _MAC_AB and f["vp"] + self._B - 1 >= self._V:
            return _BAD_FIELD
        if op in _USES_RID and f["rid"] >= self._R:
            return _BAD_FIELD
        if op == _MAP and f["pp"] >= self._NP:
            return _BAD_FIELD
        if op == _LOOP and (f["n"] == 0 or f["n"] > self._L):
            return _BAD_FIELD
        if op == _SM_CFG and (f["chmask"] not in self._sm_masks
                              or not 0 < tok[f["rid"]] <= self._sm_n):
            return _BAD_FIELD
        if op in _USES_PT:
            v, rid, _ = pt[f["vp"]]
            if not v:
                return _UNMAPPED
            if rid != f["rid"]:
                return _NOT_OWNER
        elif op == _MAC_AB:
            stripe = pt[f["vp"]:f["vp"] + self._B]
            if not all(e[0] for e in stripe):
                return _UNMAPPED
            if any(e[1] != f["rid"] for e in stripe):
                return _NOT_OWNER
            s = stripe[0][2] % self._S
            if any(e[2] != b * self._S + s for b, e in enumerate(stripe)):
                return _NOT_STRIPE
        if op == _MAP:
            if pt[f["vp"]][0] or any(e[0] and e[2] == f["pp"] for e in pt):
                return _ALREADY
        return 0

    # --- translation ----------------------------------------------------------------------
    def chan_cmds(self, f: dict, pt: list) -> list[int]:
        """The channel command (``cmd_fields``) of checked channel op ``f`` for every channel:
        a list of C words, 0 for a channel outside ``chmask``."""
        op, cf, cm, C = f["op"], self._cf, f["chmask"], self._C
        if op == _WR_INP and self._wide > 1 and f["multi"]:
            out, k, base = [0] * C, 0, int(Op.WR_INP) | f["g"] << cf["g"]
            if self._post:
                base |= f["xs"] << cf["xs"]
            for c in range(C):
                if cm >> c & 1:
                    out[c] = base | ((f["data"] >> (k * self._db)) & self._tile) << cf["data"]
                    k += 1
            return out
        w = self._one(f, pt)
        return [w if cm >> c & 1 else 0 for c in range(C)]

    def _one(self, f: dict, pt: list) -> int:
        op, cf = f["op"], self._cf
        w = self.chan_op(op)
        if op in (_WR_INP, _WR_PROB):      # WR_PROB: ``data`` = the unit's tile (the caller's)
            if self._post:                  # the input tile's block exponent code
                w |= f["xs"] << cf["xs"]
            return w | f["g"] << cf["g"] | (f["data"] & self._tile) << cf["data"]
        pp = pt[f["vp"]][2]
        set_ = pp % self._S
        if op == _MAC_AB:           # bank field 0; the set of the stripe (pp < S: bank 0)
            return (w | set_ << cf["set"] | f["g"] << cf["g"] | f["o"] << cf["o"]
                    | f["acc"] << cf["acc"] | 1 << cf["ab"])
        w |= (pp // self._S) << cf["bank"]
        if op == _WR_SCALE:         # channel WR_W with sc = 1: row = part, fmt, scale words
            return (w | set_ << cf["set"] | f["row"] << cf["row"] | 1 << cf["sc"]
                    | f["fmt"] << cf["fmt"] | (f["data"] & self._tile) << cf["data"])
        if op == _WR_W:
            return (w | set_ << cf["set"] | f["row"] << cf["row"]
                    | (f["data"] & self._tile) << cf["data"])
        if op == _MAC:
            return (w | set_ << cf["set"] | f["g"] << cf["g"] | f["o"] << cf["o"]
                    | f["acc"] << cf["acc"])
        return w | f["o"] << cf["o"]                                  # RD_OUT
