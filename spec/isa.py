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

from spec.params import Field, MacroParams, _layout, check_int, index_bits, pack, unpack

__all__ = ["Op", "LoopMode", "IO_OPS", "seq_window", "ChannelParams", "cmd_fields", "out_fields",
           "encode", "decode", "HostOp", "HostOpExt", "HOST_CHANNEL_OPS", "HOST_WIDTHS", "ModErr",
           "ModuleParams", "host_fields", "host_op_limit", "mod_out_fields", "host_encode",
           "OUT_CHAN_BITS"]


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
    """
    macro: MacroParams = MacroParams()
    n_banks: int = 4
    n_gbuf: int = 4
    q_depth: int = 8
    dcs: bool = True
    all_bank: bool = False

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

    @property
    def window(self) -> int:
        """Sequence-number window W (a power of two): ids are ``seq mod W``.  W exceeds every
        command that can be queued or in flight at once; reuse of an id is safe because
        dependencies only ever name pending commands (docs/channel.md).  An all-bank MAC holds
        one id and one ``macq`` slot in every bank, so the bound (and W) is the same with
        ``all_bank``."""
        return seq_window(self.q_depth, self.n_banks, self.macro.tree_stages)

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
        return max(m.n_in * m.x_bits, m.n_out * m.w_bits)

    @property
    def mac_fifo_depth(self) -> int:
        """In-flight MACs tracked per bank (the macro holds at most this many at once)."""
        return self.macro.tree_stages + 4

    @property
    def tag(self) -> str:
        return (f"{self.macro.tag}_b{self.n_banks}_g{self.n_gbuf}_q{self.q_depth}"
                f"_{'dcs' if self.dcs else 'ino'}{'_ab' if self.all_bank else ''}")


def cmd_fields(p: ChannelParams) -> dict[str, Field]:
    """Channel command beat.  Fields an opcode does not use must be 0 (ignored by hardware).
    With ``p.all_bank`` a 1-bit ``ab`` field follows ``acc`` (so ``data`` moves up one bit);
    without it the layout is the original one."""
    m = p.macro
    ab = (("ab", 1),) if p.all_bank else ()
    return _layout(("op", 2), ("bank", p.bank_bits), ("set", m.set_bits), ("row", m.row_bits),
                   ("g", p.gbuf_bits), ("o", m.dst_bits), ("acc", 1), *ab,
                   ("data", p.data_bits))


def out_fields(p: ChannelParams) -> dict[str, Field]:
    """Output beat of RD_OUT: OBuf (bank, o) = n_out results of acc_width bits each."""
    m = p.macro
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

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"ModuleParams: {name}={getattr(self, name)!r} {why}")
        if not isinstance(self.channel, ChannelParams):
            bad("channel", "must be a ChannelParams")
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

    @property
    def n_pages(self) -> int:
        return self.channel.n_banks * self.channel.macro.n_sets

    @property
    def tag(self) -> str:
        return (f"{self.channel.tag}_c{self.n_ch}_v{self.n_vpages}_r{self.n_req}"
                f"_f{self.fifo_depth}_l{self.loop_len}{'_hr' if self.host_ready else ''}"
                f"{f'_wi{self.wide_inp}' if self.wide_inp > 1 else ''}")


def host_op_limit(p: ModuleParams) -> int:
    """Opcodes ``>=`` this are BAD_OPCODE: 11 when the channels have ``all_bank`` (MAC_AB = 10
    is valid), else 10."""
    return int(HostOpExt.MAC_AB) + 1 if p.channel.all_bank else int(HostOpExt.MAC_AB)


def host_fields(p: ModuleParams) -> dict[str, Field]:
    """Host command word: fixed field widths (:data:`HOST_WIDTHS`, independent of the
    module's size, so that out-of-range values are encodable and rejected with BAD_FIELD),
    then the data field.  With ``wide_inp > 1``: a 1-bit ``multi`` field before ``data``, and
    ``data`` is ``wide_inp x data_bits`` wide (tile k in bits k*data_bits ..)."""
    if p.wide_inp > 1:
        return _layout(*HOST_WIDTHS.items(), ("multi", 1),
                       ("data", p.wide_inp * p.channel.data_bits))
    return _layout(*HOST_WIDTHS.items(), ("data", p.channel.data_bits))


def mod_out_fields(p: ModuleParams) -> dict[str, Field]:
    """Module output beat: a channel's RD_OUT result tagged with its channel."""
    m = p.channel.macro
    return _layout(("y", m.n_out * m.acc_width), ("bank", p.channel.bank_bits),
                   ("o", m.dst_bits), ("chan", OUT_CHAN_BITS))


def host_encode(p: ModuleParams, op: int, **f: int) -> int:
    """Pack a host command.  Only the encodable width is checked (ValueError naming a field
    that is not an unsigned int of its width); range checks against the module's size are
    the hardware's job (BAD_FIELD), so e.g. opcodes 10..15 are encodable (``multi`` only
    exists with ``wide_inp > 1``)."""
    return pack(host_fields(p), op=op, **f)
