"""Single source of truth for the PIM channel's command set: opcodes, field layouts, parameters.

Imported by the channel HDL (``hdl/channel.py``), the channel golden model
(``model/channel.py``), the program builders and the testbenches.  Encodings only; the
behaviour (``docs/channel.md``) is written twice, independently, in the HDL and the model.
Layouts are little-endian (first field in the LSBs), built with :mod:`spec.params` helpers.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from spec.blockfmt import SCALE_WORD_BITS, XS_BITS, FMT_BITS, PostParams
from spec.dram import GDDR6_AIM_TIMING, DramBankParams, DramTiming
from spec.params import Field, MacroParams, _layout, check_int, index_bits, pack, unpack

__all__ = ["Op", "LoopMode", "IO_OPS", "seq_window", "ChannelParams", "cmd_fields", "out_fields",
           "encode", "decode", "HostOp", "HostOpExt", "HOST_CHANNEL_OPS", "HOST_WIDTHS", "ModErr",
           "ModuleParams", "host_fields", "host_op_limit", "mod_out_fields", "host_encode",
           "OUT_CHAN_BITS", "SM_HOST_OPS", "host_op_valid", "sm_cfg_data", "sm_res_fields"]


# Widths (bits) of the host command's fields (:func:`host_fields`; then ``data``).  Fixed,
# independent of the module's size; they bound ModuleParams and ChannelParams.n_gbuf (and
# MacroParams' n_in, n_sets, n_acc: see its docstring).
HOST_WIDTHS = {"op": 4, "chmask": 16, "rid": 4, "vp": 8, "pp": 8, "row": 10, "g": 6, "o": 8,
               "acc": 1, "n": 5, "per": 4, "vps": 8, "os": 8, "count": 16}

# Width of the module output beat's ``chan`` field (:func:`mod_out_fields`): a channel number
# below the ``chmask`` width (one mask bit per channel), i.e. ceil(log2 16) = 4.  Fixed, like
# the host fields, so the out layout depends on the macro and n_banks only.
OUT_CHAN_BITS = max(1, (HOST_WIDTHS["chmask"] - 1).bit_length())


class Op(enum.IntEnum):
    """Channel command opcodes (2 bits)."""
    WR_INP = 0   # write an input tile (n_in x x_bits) into GBuf entry g            (I/O queue)
    WR_W = 1     # write one weight/KV row (n_out x w_bits) into (bank, set, row)    (I/O queue)
    MAC = 2      # bank runs GBuf[g] against weight set `set` into OBuf (bank, o)    (compute queue)
    RD_OUT = 3   # send OBuf (bank, o) on the `out` stream                           (I/O queue)


IO_OPS = (Op.WR_INP, Op.WR_W, Op.RD_OUT)


def seq_window(q_depth: int, n_banks: int, tree_stages: int) -> int:
    """Sequence-number window W of a channel: the power of two above the commands that can be
    queued (2 queues of q_depth) or in flight (tree_stages + 4 MACs per bank) at once, + 2."""
    bound = 2 * q_depth + n_banks * (tree_stages + 4) + 2
    return 1 << math.ceil(math.log2(bound))


@dataclass(frozen=True)
class ChannelParams:
    """One PIM channel: ``n_banks`` DIMC macros, a GBuf, per-bank OBufs, a DCS controller.

    macro     MacroParams of every bank; OBuf entries per bank = macro.n_acc
    n_banks   macros in the channel (1..16)
    n_gbuf    GBuf entries, each one input tile of macro.n_in x macro.x_bits bits (1..64: the
              host command's 6-bit ``g`` field)
    q_depth   entries of the I/O queue and of the compute queue, each (2..64)
    dcs       True: dynamic command scheduling; False: in-order baseline (same RTL)
    all_bank  True: the command gains a 1-bit ``ab`` field (after ``acc``); a MAC with
              ``ab = 1`` drives every bank in lockstep (AiM's MAC_ABK, docs/channel.md).
              False (default): no ``ab`` field, today's layout bit for bit
    bank_kind "dimc" (default): every bank is a DIMC macro (docs/channel.md); "dram": every
              bank is a DRAM-PIM bank (docs/dram_bank.md) behind the DRAM back-end of
              docs/dram_channel.md (same ISA, same DCS controller).  A page (one set of one
              bank) is one DRAM row of ``n_in x n_out`` bytes; needs w_bits = x_bits = 8
    timing    DramTiming of the DRAM banks and of the channel's DRAM rules (bank_kind "dram";
              GDDR6-AiM by default)
    burst_bytes  bytes of one DRAM column access (bank_kind "dram"), a power of two that
              n_out divides and that divides n_in x n_out (AiM: 32)
    post      None (default): no block post-processing stage, today's channel bit for bit.
              A PostParams (its ``macro`` must be this ``macro``): every bank's results go
              through one block post-processing stage (docs/blockfmt.md) into its OBuf; the
              command gains ``sc``, ``fmt``, ``xs`` (WR_SCALE = WR_W with ``sc = 1``), OBuf
              and the out beat hold binary32 codes and ``ovf`` (docs/channel.md, "Block
              post-processing stage").  DIMC banks only; needs chunks <= x_bits (the stage
              keeps up with its macro), lanes x 32 <= data_bits, part_bits <= row_bits
    """
    macro: MacroParams = MacroParams()
    n_banks: int = 4
    n_gbuf: int = 4
    q_depth: int = 8
    dcs: bool = True
    all_bank: bool = False
    bank_kind: str = "dimc"
    timing: DramTiming = GDDR6_AIM_TIMING
    burst_bytes: int = 32
    post: PostParams | None = None

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"ChannelParams: {name}={getattr(self, name)!r} {why}")
        if not isinstance(self.macro, MacroParams):
            bad("macro", "must be a MacroParams")
        for name, lo, hi in (("n_banks", 1, 16), ("n_gbuf", 1, 1 << HOST_WIDTHS["g"]),
                             ("q_depth", 2, 64)):
            v = getattr(self, name)
            if type(v) is not int or not lo <= v <= hi:
                bad(name, f"must be an int in {lo}..{hi}")
        for name in ("dcs", "all_bank"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be a bool")
        if self.bank_kind not in ("dimc", "dram"):
            bad("bank_kind", "must be 'dimc' or 'dram'")
        if not isinstance(self.timing, DramTiming):
            bad("timing", "must be a DramTiming")
        if self.bank_kind == "dram":
            m = self.macro
            if m.w_bits != 8 or m.x_bits != 8:
                bad("macro", "must have w_bits = x_bits = 8 with bank_kind 'dram'")
            if type(self.burst_bytes) is not int or self.burst_bytes < m.n_out \
                    or (m.n_in * m.n_out) % self.burst_bytes:
                bad("burst_bytes", f"must be an int >= n_out={m.n_out} dividing "
                                   f"n_in x n_out={m.n_in * m.n_out}")
            cols = m.n_in * m.n_out // self.burst_bytes
            if cols & (cols - 1):
                bad("burst_bytes", f"must give a power-of-two column count per row "
                                   f"(n_in x n_out / burst_bytes = {cols})")
            try:
                self.dram_bank
            except ValueError as e:
                raise ValueError(f"ChannelParams: burst_bytes={self.burst_bytes!r} / macro "
                                 f"give no DRAM bank: {e}") from None
        if self.post is not None:
            q, m = self.post, self.macro
            if not isinstance(q, PostParams):
                bad("post", "must be None or a PostParams")
            if q.macro != m:
                bad("post", "must be the stage behind this channel's macro (post.macro == macro)")
            if self.bank_kind != "dimc":
                bad("post", "needs bank_kind 'dimc'")
            if q.chunks > m.x_bits:
                bad("post", f"needs chunks = n_out / lanes = {q.chunks} <= x_bits = {m.x_bits} "
                            "(one result per x_bits cycles per bank)")
            if q.lanes * SCALE_WORD_BITS > self.data_bits:
                bad("post", f"needs lanes x 32 = {q.lanes * SCALE_WORD_BITS} <= data_bits = "
                            f"{self.data_bits} (a WR_SCALE's words)")
            if q.part_bits > m.row_bits:
                bad("post", f"needs part_bits = {q.part_bits} <= row_bits = {m.row_bits}")

    @property
    def dram_bank(self) -> DramBankParams:
        """The DRAM bank of a ``bank_kind="dram"`` channel: ``rows`` = n_sets (one page per
        row), ``row_bytes`` = n_in x n_out, ``n_out`` = the macro's, ``n_acc`` = the macro's,
        ``acc_width`` = the macro's (so results are bit-identical to a DIMC bank's)."""
        m = self.macro
        return DramBankParams(rows=m.n_sets, row_bytes=m.n_in * m.n_out,
                              burst_bytes=self.burst_bytes, n_out=m.n_out, n_acc=m.n_acc,
                              acc_width=m.acc_width, timing=self.timing)

    @property
    def window(self) -> int:
        """Sequence-number window W (a power of two): ids are ``seq mod W``.  W exceeds every
        command that can be queued or in flight at once; reuse of an id is safe because
        dependencies only ever name pending commands (docs/channel.md).  An all-bank MAC holds
        one id and one ``macq`` slot in every bank, so the bound (and W) is the same with
        ``all_bank``."""
        # with ``post``: up to 2 more MACs per bank are in the stage (its beat and its
        # output register) after their macro result
        return seq_window(self.q_depth, self.n_banks,
                          self.macro.tree_stages + (2 if self.post is not None else 0))

    @property
    def seq_bits(self) -> int:
        return int(math.log2(self.window))

    @property
    def bank_bits(self) -> int:
        return index_bits(self.n_banks)

    @property
    def gbuf_bits(self) -> int:
        return index_bits(self.n_gbuf)

    @property
    def data_bits(self) -> int:
        """Width of a command's data field: an input tile or a weight row, whichever is wider."""
        m = self.macro
        wide = 8 * self.burst_bytes if self.bank_kind == "dram" else 0   # a WR_W burst
        return max(m.n_in * m.x_bits, m.n_out * m.w_bits, wide)

    @property
    def mac_fifo_depth(self) -> int:
        """In-flight MACs tracked per bank (the macro holds at most this many at once)."""
        return self.macro.tree_stages + 4

    @property
    def tag(self) -> str:
        return (f"{self.macro.tag}_b{self.n_banks}_g{self.n_gbuf}_q{self.q_depth}"
                f"_{'dcs' if self.dcs else 'ino'}{'_ab' if self.all_bank else ''}"
                + (f"_dram{self.burst_bytes}_{self.timing.tag}" if self.bank_kind == "dram"
                   else "") + (f"_post{self.post.lanes}" if self.post is not None else ""))


def cmd_fields(p: ChannelParams) -> dict[str, Field]:
    """Channel command beat.  Fields an opcode does not use must be 0 (ignored by hardware).
    With ``p.all_bank`` a 1-bit ``ab`` field follows ``acc`` (so ``data`` moves up one bit);
    without it the layout is the original one.  With ``p.post`` three fields follow (before
    ``data``): ``sc`` (1: this WR_W is a WR_SCALE), ``fmt`` (2, WR_SCALE's format), ``xs`` (8,
    WR_INP's input block exponent code)."""
    m = p.macro
    ab = (("ab", 1),) if p.all_bank else ()
    post = ((("sc", 1), ("fmt", FMT_BITS), ("xs", XS_BITS)) if p.post is not None else ())
    return _layout(("op", 2), ("bank", p.bank_bits), ("set", m.set_bits), ("row", m.row_bits),
                   ("g", p.gbuf_bits), ("o", m.dst_bits), ("acc", 1), *ab, *post,
                   ("data", p.data_bits))


def out_fields(p: ChannelParams) -> dict[str, Field]:
    """Output beat of RD_OUT: OBuf (bank, o) = n_out results of acc_width bits each.  With
    ``p.post``: n_out binary32 codes (32 bits each), ``bank``, ``o``, then ``ovf`` (1)."""
    m = p.macro
    if p.post is not None:
        return _layout(("y", m.n_out * 32), ("bank", p.bank_bits), ("o", m.dst_bits),
                       ("ovf", 1))
    return _layout(("y", m.n_out * m.acc_width), ("bank", p.bank_bits), ("o", m.dst_bits))


def encode(p: ChannelParams, op: Op, **f: int) -> int:
    """Pack one command.  ValueError names a field that is not an int or out of range for
    this channel (e.g. bank >= n_banks, row >= n_in, data wider than ``data_bits``, ``ab``
    on a channel without ``all_bank``, an all-bank MAC with bank != 0: its canonical form)."""
    op = check_int("encode: op", op, 0, len(Op) - 1)
    m = p.macro
    limits = {"bank": p.n_banks, "set": m.n_sets, "row": m.n_in, "g": p.n_gbuf,
              "o": m.n_acc}
    for k, v in f.items():
        if k in limits:
            f[k] = check_int(f"encode {Op(op).name}: {k}", v, 0, limits[k] - 1)
    if "ab" in f:
        if not p.all_bank:
            raise ValueError(f"encode {Op(op).name}: ab={f['ab']!r} but the channel has "
                             "all_bank=False (no ab field)")
        ab = f["ab"]
        f["ab"] = check_int(f"encode {Op(op).name}: ab", int(ab) if isinstance(ab, bool)
                            else ab, 0, 1)
        if f["ab"] and (op != Op.MAC or f.get("bank", 0)):
            raise ValueError(f"encode {Op(op).name}: ab=1 is only for MAC, with bank=0 "
                             f"(got bank={f.get('bank', 0)})")
    if f.get("sc") and op != Op.WR_W:
        raise ValueError(f"encode {Op(op).name}: sc=1 is only for WR_W (WR_SCALE)")
    if f.get("sc") and p.post is not None:
        f["row"] = check_int(f"encode WR_SCALE: row (part)", f.get("row", 0), 0,
                             p.post.chunks - 1)
    return pack(cmd_fields(p), op=op, **f)           # acc (a 1-bit flag: bool ok), data


def decode(p: ChannelParams, word: int) -> dict[str, int]:
    """The fields of channel command ``word`` (ValueError if it is not a command word)."""
    return unpack(cmd_fields(p), word)


# ------------------------------------------------------------------------------------------
# Module top (hub): host commands, page table (DPA), loops.  Contract: docs/module.md.

class HostOpExt(enum.IntEnum):
    """Host opcodes that exist only when a module parameter enables them (else, like 11..15,
    rejected with BAD_OPCODE): :func:`host_op_limit`."""
    MAC_AB = 10   # chmask, rid, vp, g, o, acc: all-bank MAC (ModuleParams.channel.all_bank)
    # the hub's softmax unit (ModuleParams.softmax; docs/module.md, "Softmax unit")
    SM_CFG = 11   # chmask, rid, data{mul, sh, dig}: start a head of tok[rid] tokens
    RD_SM = 12    # chmask, rid, vp, o: RD_OUT whose beat goes to the softmax unit
    WR_PROB = 13  # chmask, g: the unit's next probability tile -> GBuf g (WR_INP)
    SM_ABORT = 14  # -: drop the head in progress
    # the block post-processing stage (ModuleParams.channel.post; docs/module.md, "Block
    # formats")
    WR_SCALE = 15  # chmask, rid, vp, row (part), fmt, data: a set's scale words and format


class HostOp(enum.IntEnum):
    """Host command opcodes (4 bits); opcodes >= :func:`host_op_limit` are invalid (rejected
    with BAD_OPCODE): 10..15 by default.

    ``len(HostOp)`` and iteration give the 10 base opcodes only (0..9), as before;
    ``HostOp.MAC_AB`` is :class:`HostOpExt`'s (10), valid only with ``channel.all_bank``.
    """
    NOP = 0
    WR_INP = 1    # chmask, g, data: input tile into GBuf entry g of every masked channel
    WR_W = 2      # chmask, rid, vp, row, data: weight/KV row into the page vp maps to
    MAC = 3       # chmask, rid, vp, g, o, acc: bank/set of page vp, GBuf g -> OBuf o
    RD_OUT = 4    # chmask, rid, vp, o: OBuf o of page vp's bank -> out stream
    MAP = 5       # vp, pp, rid: page table entry vp -> physical page pp, owned by rid
    UNMAP = 6     # vp, rid
    SET_TOK = 7   # rid, count: the request's current token count
    LOOP = 8      # rid, n, per, vps, os: replay the next n commands ceil(tok[rid] / 2**per) times
    BARRIER = 9   # wait until every channel is idle
    MAC_AB = enum.nonmember(HostOpExt.MAC_AB)   # not a member: len(HostOp) stays 10
    SM_CFG = enum.nonmember(HostOpExt.SM_CFG)   # softmax opcodes 11..14 (not members)
    RD_SM = enum.nonmember(HostOpExt.RD_SM)
    WR_PROB = enum.nonmember(HostOpExt.WR_PROB)
    SM_ABORT = enum.nonmember(HostOpExt.SM_ABORT)
    WR_SCALE = enum.nonmember(HostOpExt.WR_SCALE)   # 15, only with channel.post


#: the opcodes ``ModuleParams.softmax`` adds (11..14)
SM_HOST_OPS = (HostOpExt.SM_CFG, HostOpExt.RD_SM, HostOpExt.WR_PROB, HostOpExt.SM_ABORT)


HOST_CHANNEL_OPS = {HostOp.WR_INP: Op.WR_INP, HostOp.WR_W: Op.WR_W, HostOp.MAC: Op.MAC,
                    HostOp.RD_OUT: Op.RD_OUT}


class LoopMode(enum.IntEnum):
    """State of the module's LOOP engine (``docs/module.md``): executing the FIFO head (NONE),
    copying the next ``n`` commands into the loop buffer (CAPTURE), replaying them (REPLAY)."""
    NONE = 0
    CAPTURE = 1
    REPLAY = 2


class ModErr(enum.IntEnum):
    """Codes on the module's ``err`` output (3 bits); QUEUE_FULL is reported on ``ovf``."""
    NONE = 0
    BAD_OPCODE = 1      # opcode 10..15
    BAD_FIELD = 2       # a field out of range for this module (or a non-channel op in a loop body)
    UNMAPPED = 3        # vp has no page table entry
    NOT_OWNER = 4       # vp's entry belongs to another request id
    ALREADY_MAPPED = 5  # MAP of a mapped vp, or of a physical page another vp maps
    QUEUE_FULL = 6      # host push while the command FIFO is full (on ``ovf``, not ``err``;
    #                     never with ModuleParams.host_ready)
    NOT_STRIPE = 7      # MAC_AB: pages vp..vp+n_banks-1 are not one set across banks 0..B-1


@dataclass(frozen=True)
class ModuleParams:
    """A PIM module: ``n_ch`` channels behind one dispatcher with DPA.

    channel     ChannelParams of every channel
    n_ch        channels, 1..16 (the 16-bit ``chmask`` field; ``chan`` of an out beat is
                :data:`OUT_CHAN_BITS` = 4 bits)
    n_vpages    page-table entries (virtual pages), a power of two in 2..256 (8-bit ``vp``)
    n_req       request ids, a power of two in 2..16 (4-bit ``rid``); token counters of 16 bits
    fifo_depth  host command FIFO entries (2..64)
    loop_len    loop body buffer entries (1..16)
    host_ready  True: the host port is a valid/ready stream (``host.ready`` = the FIFO has
                room, a register output); nothing is dropped, QUEUE_FULL never occurs.
                False (default): no ready, a push into a full FIFO is dropped (``ovf``)
    wide_inp    tiles per host beat, 1..n_ch.  > 1: the host word gains a 1-bit ``multi``
                field and its ``data`` field is ``wide_inp x data_bits`` wide; a WR_INP with
                ``multi = 1`` writes tile k into the k-th masked channel (docs/module.md).
                1 (default): today's layout
    softmax     True: the hub has the softmax unit (docs/softmax.md) and the host opcodes
                SM_CFG, RD_SM, WR_PROB, SM_ABORT (11..14), the ``sm_res`` output stream and
                the ``sm_err`` output (docs/module.md, "Softmax unit").  Needs n_ch <= 8
                and 8-bit inputs (macro x_bits = 8).  False (default): the module without it,
                bit for bit
    sm_context  with ``softmax``: the unit's score buffer (max_context, tokens per head);
                ignored without it

    With ``channel.post`` (the block post-processing stage behind every bank): host opcode
    WR_SCALE (15), the host fields ``fmt`` (2) and ``xs`` (8), the wider out beat (binary32
    codes and ``ovf``) and the ``perr`` / ``perr_ch`` outputs (docs/module.md, "Block
    formats").  Not together with ``softmax`` (its unit takes integer scores).

    A physical page ``pp`` is one weight set of one bank in every channel:
    ``bank = pp // n_sets``, ``set = pp % n_sets``; ``n_pages = n_banks * n_sets`` must be
    at most 256, what the 8-bit ``pp`` field addresses.  Bounds come from
    :data:`HOST_WIDTHS`; a parameter outside them is a ValueError naming it.
    """
    channel: ChannelParams = ChannelParams()
    n_ch: int = 4
    n_vpages: int = 32
    n_req: int = 4
    fifo_depth: int = 8
    loop_len: int = 8
    host_ready: bool = False
    wide_inp: int = 1
    softmax: bool = False
    sm_context: int = 4096

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"ModuleParams: {name}={getattr(self, name)!r} {why}")
        if not isinstance(self.channel, ChannelParams):
            bad("channel", "must be a ChannelParams")
        if self.channel.post is not None and self.softmax is True:
            bad("softmax", "cannot be combined with a block post-processing stage "
                           "(channel.post): the unit takes integer scores, not binary32")
        if not isinstance(self.host_ready, bool):
            bad("host_ready", "must be a bool")
        for name, lo, hi in (("n_ch", 1, HOST_WIDTHS["chmask"]), ("fifo_depth", 2, 64),
                             ("loop_len", 1, 16)):
            v = getattr(self, name)
            if type(v) is not int or not lo <= v <= hi:
                bad(name, f"must be an int in {lo}..{hi}")
        for name, lo, hi in (("n_vpages", 2, 1 << HOST_WIDTHS["vp"]),
                             ("n_req", 2, 1 << HOST_WIDTHS["rid"])):
            v = getattr(self, name)
            if type(v) is not int or not lo <= v <= hi or v & (v - 1):
                bad(name, f"must be a power of two in {lo}..{hi}")
        if self.n_pages > 1 << HOST_WIDTHS["pp"]:
            raise ValueError(f"ModuleParams: n_pages = n_banks x n_sets = "
                             f"{self.channel.n_banks} x {self.channel.macro.n_sets} = "
                             f"{self.n_pages} physical pages, more than the "
                             f"{HOST_WIDTHS['pp']}-bit pp field of a host command addresses "
                             f"({1 << HOST_WIDTHS['pp']})")
        if type(self.wide_inp) is not int or not 1 <= self.wide_inp <= self.n_ch:
            bad("wide_inp", f"must be an int in 1..n_ch={self.n_ch}")
        if not isinstance(self.softmax, bool):
            bad("softmax", "must be a bool")
        if self.softmax:
            if self.n_ch > 8:
                bad("softmax", f"needs n_ch <= 8 (the unit's 3-bit chan), not {self.n_ch}")
            if self.channel.macro.x_bits != 8:
                bad("softmax", f"needs 8-bit inputs (macro x_bits = 8), not "
                               f"{self.channel.macro.x_bits}")
            try:
                self.sm_params
            except ValueError as e:
                raise ValueError(f"ModuleParams: sm_context={self.sm_context!r} / macro give "
                                 f"no softmax unit: {e}") from None

    @property
    def n_pages(self) -> int:
        return self.channel.n_banks * self.channel.macro.n_sets

    @property
    def sm_params(self):
        """The hub's :class:`spec.softmax.SoftmaxParams` (with ``softmax``): A, NO, NI from
        the macro, max_context = ``sm_context``, n_part = the largest power of two <= n_ch
        (and <= 8), the other fields at their defaults."""
        from spec.softmax import SoftmaxParams
        return SoftmaxParams.for_macro(self.channel.macro, max_context=self.sm_context,
                                       n_part=1 << (min(self.n_ch, 8).bit_length() - 1))

    @property
    def sm_tag_depth(self) -> int:
        """Entries of each channel's result-destination FIFO (with ``softmax``): q_depth + 2."""
        return self.channel.q_depth + 2

    @property
    def tag(self) -> str:
        return (f"{self.channel.tag}_c{self.n_ch}_v{self.n_vpages}_r{self.n_req}"
                f"_f{self.fifo_depth}_l{self.loop_len}{'_hr' if self.host_ready else ''}"
                f"{f'_wi{self.wide_inp}' if self.wide_inp > 1 else ''}"
                f"{f'_sm{self.sm_context}' if self.softmax else ''}")

    @property
    def post(self) -> bool:
        """The channels have the block post-processing stage (``channel.post``)."""
        return self.channel.post is not None


def host_op_limit(p: ModuleParams) -> int:
    """Opcodes ``>=`` this are BAD_OPCODE: 15 with ``softmax`` (SM_CFG .. SM_ABORT = 11..14
    valid; then MAC_AB = 10 is valid only with ``all_bank``, :func:`host_op_valid`), else 11
    when the channels have ``all_bank`` (MAC_AB = 10 is valid), else 10."""
    if p.softmax:
        return int(HostOpExt.SM_ABORT) + 1
    if p.channel.post is not None:
        return int(HostOpExt.WR_SCALE) + 1
    return int(HostOpExt.MAC_AB) + 1 if p.channel.all_bank else int(HostOpExt.MAC_AB)


def host_op_valid(p: ModuleParams, op: int) -> bool:
    """Whether host opcode ``op`` exists on module ``p`` (else BAD_OPCODE): below
    :func:`host_op_limit`, MAC_AB only with ``all_bank``, SM_CFG .. SM_ABORT only with
    ``softmax`` (WR_SCALE = 15 is below the limit only with ``channel.post``)."""
    return (op < host_op_limit(p) and (op != HostOpExt.MAC_AB or p.channel.all_bank)
            and (p.softmax or op not in SM_HOST_OPS))


def sm_cfg_data(p: ModuleParams, mul: int, sh: int, dig: int = 0) -> int:
    """The ``data`` field of an SM_CFG: ``mul`` (MB bits) at 0, ``sh`` (6) at MB, ``dig`` (1)
    at MB + 6 (ValueError if one does not fit its width)."""
    from spec.softmax import SH_BITS
    mb = p.sm_params.mul_bits
    return pack(_layout(("mul", mb), ("sh", SH_BITS), ("dig", 1)), mul=mul, sh=sh, dig=dig)


def sm_res_fields(p: ModuleParams) -> dict[str, Field]:
    """Payload of the ``sm_res`` output stream (``softmax``): the unit's ``res`` beat."""
    from spec.softmax import res_fields
    return res_fields(p.sm_params)


def host_fields(p: ModuleParams) -> dict[str, Field]:
    """Host command word: fixed field widths (:data:`HOST_WIDTHS`, independent of the
    module's size, so that out-of-range values are encodable and rejected with BAD_FIELD),
    then the data field.  With ``wide_inp > 1``: a 1-bit ``multi`` field before ``data``, and
    ``data`` is ``wide_inp x data_bits`` wide (tile k in bits k*data_bits ..).  With
    ``channel.post``: ``fmt`` (2, WR_SCALE's format) and ``xs`` (8, WR_INP's input block
    exponent code) after the fixed fields (before ``multi``)."""
    post = (("fmt", FMT_BITS), ("xs", XS_BITS)) if p.channel.post is not None else ()
    if p.wide_inp > 1:
        return _layout(*HOST_WIDTHS.items(), *post, ("multi", 1),
                       ("data", p.wide_inp * p.channel.data_bits))
    return _layout(*HOST_WIDTHS.items(), *post, ("data", p.channel.data_bits))


def mod_out_fields(p: ModuleParams) -> dict[str, Field]:
    """Module output beat: a channel's RD_OUT result tagged with its channel.  With
    ``channel.post``: the channel's beat (``out_fields``: n_out binary32 codes, ``bank``,
    ``o``, ``ovf``) then ``chan``."""
    m = p.channel.macro
    if p.channel.post is not None:
        return _layout(*((n, f.width) for n, f in out_fields(p.channel).items()),
                       ("chan", OUT_CHAN_BITS))
    return _layout(("y", m.n_out * m.acc_width), ("bank", p.channel.bank_bits),
                   ("o", m.dst_bits), ("chan", OUT_CHAN_BITS))


def host_encode(p: ModuleParams, op: int, **f: int) -> int:
    """Pack a host command.  Only the encodable width is checked (ValueError naming a field
    that is not an unsigned int of its width); range checks against the module's size are
    the hardware's job (BAD_FIELD), so e.g. opcodes 10..15 are encodable (``multi`` only
    exists with ``wide_inp > 1``)."""
    return pack(host_fields(p), op=op, **f)
