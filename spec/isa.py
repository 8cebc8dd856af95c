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

from spec.params import Field, MacroParams, _layout

__all__ = ["Op", "LoopMode", "IO_OPS", "seq_window", "ChannelParams", "cmd_fields", "out_fields", "encode",
           "decode",
           "HostOp", "HOST_CHANNEL_OPS", "ModErr", "ModuleParams", "host_fields", "mod_out_fields",
           "host_encode"]


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
    n_gbuf    GBuf entries, each one input tile of macro.n_in x macro.x_bits bits (1..64)
    q_depth   entries of the I/O queue and of the compute queue, each (2..64)
    dcs       True: dynamic command scheduling; False: in-order baseline (same RTL)
    """
    macro: MacroParams = MacroParams()
    n_banks: int = 4
    n_gbuf: int = 4
    q_depth: int = 8
    dcs: bool = True

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"ChannelParams: {name}={getattr(self, name)!r} {why}")
        if not isinstance(self.macro, MacroParams):
            bad("macro", "must be a MacroParams")
        for name, lo, hi in (("n_banks", 1, 16), ("n_gbuf", 1, 64), ("q_depth", 2, 64)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                bad(name, f"must be an int in {lo}..{hi}")
        if not isinstance(self.dcs, bool):
            bad("dcs", "must be a bool")

    @property
    def window(self) -> int:
        """Sequence-number window W (a power of two): ids are ``seq mod W``.  W exceeds every
        command that can be queued or in flight at once; reuse of an id is safe because
        dependencies only ever name pending commands (docs/channel.md)."""
        return seq_window(self.q_depth, self.n_banks, self.macro.tree_stages)

    @property
    def seq_bits(self) -> int:
        return int(math.log2(self.window))

    @property
    def bank_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.n_banks)))

    @property
    def gbuf_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.n_gbuf)))

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
                f"_{'dcs' if self.dcs else 'ino'}")


def cmd_fields(p: ChannelParams) -> dict[str, Field]:
    """Channel command beat.  Fields an opcode does not use must be 0 (ignored by hardware)."""
    m = p.macro
    return _layout(("op", 2), ("bank", p.bank_bits), ("set", m.set_bits), ("row", m.row_bits),
                   ("g", p.gbuf_bits), ("o", m.dst_bits), ("acc", 1), ("data", p.data_bits))


def out_fields(p: ChannelParams) -> dict[str, Field]:
    """Output beat of RD_OUT: OBuf (bank, o) = n_out results of acc_width bits each."""
    m = p.macro
    return _layout(("y", m.n_out * m.acc_width), ("bank", p.bank_bits), ("o", m.dst_bits))


def encode(p: ChannelParams, op: Op, **f: int) -> int:
    """Pack one command; ValueError names an out-of-range field (e.g. bank >= n_banks)."""
    from spec.params import pack
    m = p.macro
    limits = {"bank": p.n_banks, "set": m.n_sets, "row": m.n_in, "g": p.n_gbuf,
              "o": m.n_acc, "acc": 2}
    for k, v in f.items():
        if k in limits and not 0 <= v < limits[k]:
            raise ValueError(f"encode {Op(op).name}: {k}={v} out of range 0..{limits[k] - 1}")
    return pack(cmd_fields(p), op=int(op), **f)


def decode(p: ChannelParams, word: int) -> dict[str, int]:
    from spec.params import unpack
    return unpack(cmd_fields(p), word)


# ------------------------------------------------------------------------------------------
# Module top (hub): host commands, page table (DPA), loops.  Contract: docs/module.md.

class HostOp(enum.IntEnum):
    """Host command opcodes (4 bits); 10..15 are invalid (rejected with BAD_OPCODE)."""
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
    QUEUE_FULL = 6      # host push while the command FIFO is full (on ``ovf``, not ``err``)


@dataclass(frozen=True)
class ModuleParams:
    """A PIM module: ``n_ch`` channels behind one dispatcher with DPA.

    channel     ChannelParams of every channel
    n_ch        channels (1..8)
    n_vpages    page-table entries (virtual pages), a power of two in 2..256
    n_req       request ids, a power of two in 2..16; token counters of 16 bits
    fifo_depth  host command FIFO entries (2..64)
    loop_len    loop body buffer entries (1..16)

    A physical page ``pp`` is one weight set of one bank in every channel:
    ``bank = pp // n_sets``, ``set = pp % n_sets``; ``n_pages = n_banks * n_sets``.
    """
    channel: ChannelParams = ChannelParams()
    n_ch: int = 4
    n_vpages: int = 32
    n_req: int = 4
    fifo_depth: int = 8
    loop_len: int = 8

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"ModuleParams: {name}={getattr(self, name)!r} {why}")
        if not isinstance(self.channel, ChannelParams):
            bad("channel", "must be a ChannelParams")
        for name, lo, hi in (("n_ch", 1, 8), ("fifo_depth", 2, 64), ("loop_len", 1, 16)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                bad(name, f"must be an int in {lo}..{hi}")
        for name, lo, hi in (("n_vpages", 2, 256), ("n_req", 2, 16)):
            v = getattr(self, name)
            if not isinstance(v, int) or not lo <= v <= hi or v & (v - 1):
                bad(name, f"must be a power of two in {lo}..{hi}")

    @property
    def n_pages(self) -> int:
        return self.channel.n_banks * self.channel.macro.n_sets

    @property
    def tag(self) -> str:
        return (f"{self.channel.tag}_c{self.n_ch}_v{self.n_vpages}_r{self.n_req}"
                f"_f{self.fifo_depth}_l{self.loop_len}")


def host_fields(p: ModuleParams) -> dict[str, Field]:
    """Host command word: fixed field widths (independent of the module's size, so that
    out-of-range values are encodable and rejected with BAD_FIELD), then the data field."""
    return _layout(("op", 4), ("chmask", 8), ("rid", 4), ("vp", 8), ("pp", 8), ("row", 10),
                   ("g", 6), ("o", 8), ("acc", 1), ("n", 5), ("per", 4), ("vps", 8),
                   ("os", 8), ("count", 16), ("data", p.channel.data_bits))


def mod_out_fields(p: ModuleParams) -> dict[str, Field]:
    """Module output beat: a channel's RD_OUT result tagged with its channel."""
    m = p.channel.macro
    return _layout(("y", m.n_out * m.acc_width), ("bank", p.channel.bank_bits),
                   ("o", m.dst_bits), ("chan", 3))


def host_encode(p: ModuleParams, op: int, **f: int) -> int:
    """Pack a host command.  Only the encodable width is checked (ValueError); range checks
    against the module's size are the hardware's job (BAD_FIELD)."""
    from spec.params import pack
    return pack(host_fields(p), op=int(op), **f)
