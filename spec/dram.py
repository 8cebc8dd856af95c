"""Single source of truth for the DRAM-PIM bank: timing table, parameters, stream layouts, codes.

Imported by the bank HDL (``hdl/dram_bank.py``), its golden model (``model/dram_bank.py``), the
channel that holds DRAM banks, the performance model and the testbenches.  Encodings and
parameters only: the behaviour is specified cycle by cycle in ``docs/dram_bank.md`` and written
twice, independently, in the HDL and the model.  Layouts are little-endian (first field in the
LSBs), built with the :mod:`spec.params` helpers; vectors are packed element 0 first, each
element in two's complement (:func:`spec.params.pack_vec`).

Timing is in cycles of the bank's single clock (the DRAM command clock, ``tCK_ns``).  Every
rule reads "a command X accepted in cycle t allows a command Y from cycle t + N"; the table
of rules is in ``docs/dram_bank.md``.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields as _dc_fields

from spec.params import Field, _layout, check_fields, check_int, index_bits, is_pow2, pack, unpack

__all__ = ["DramTiming", "GDDR6_AIM_TIMING", "SHORT_TIMING", "DramBankParams", "DramOp",
           "DramErr", "cmd_fields", "res_fields", "rd_fields", "encode", "decode", "to_bursts",
           "from_bursts"]

_T_MAX = (1 << 16) - 1          # every timing value is an int in 1.._T_MAX cycles


@dataclass(frozen=True)
class DramTiming:
    """DRAM-PIM bank timing table, every value in clock cycles (ints in 1..65535).

    Bank rules (enforced by the bank, ``docs/dram_bank.md``): tRCDRDMAC, tRCDRD, tRCDWR, tRAS,
    tRP, tRC, tRTP, tWR, tCWL, tBL, tWTR, tRTW, tCCDL, tCL, tREFI, tRFC.  Channel rules (one
    command bus, several banks; enforced by the channel, carried here so there is one table):
    tCCDS, tRRDS, tRRDL, tFAW.  Derived write gaps: :attr:`wr_to_pre`, :attr:`wr_to_rd`.
    """
    tRCDRDMAC: int = 56   # ACT -> first column MAC of that row
    tRCDRD: int = 36      # ACT -> first column RD
    tRCDWR: int = 28      # ACT -> first column WR
    tRAS: int = 54        # ACT -> PRE
    tRP: int = 32         # PRE -> ACT (and -> refresh)
    tRC: int = 89         # ACT -> next ACT of the bank (and -> refresh)
    tRTP: int = 12        # column MAC / RD -> PRE
    tWR: int = 33         # write recovery: end of the write burst -> PRE
    tCWL: int = 6         # WR command -> its write data (write latency)
    tBL: int = 2          # burst length on the data bus
    tWTR: int = 11        # end of a write burst -> column RD / MAC (nWTRL, same bank group)
    tRTW: int = 50        # column RD / MAC -> column WR: nCL + nBL + 3 - nCWL + nWPRE(1)
    tCCDL: int = 2        # column command -> next column command of the bank
    tCL: int = 50         # column RD -> its data on the ``rd`` stream
    tREFI: int = 3333     # refresh interval: one refresh request raised every tREFI cycles
    tRFC: int = 210       # refresh cycle time (all-bank value; per-bank nRFCpb is 105)
    tCCDS: int = 2        # channel: column -> column, different bank groups
    tRRDS: int = 11       # channel: ACT -> ACT, different bank groups
    tRRDL: int = 11       # channel: ACT -> ACT, same bank group
    tFAW: int = 42        # channel: at most four ACTs in any tFAW window
    tCK_ns: float = 0.5   # clock period in ns (2 GHz command clock)

    def __post_init__(self):
        check_fields("DramTiming", self, *((f.name, 1, _T_MAX) for f in _dc_fields(self)
                                           if f.name != "tCK_ns"))
        if not isinstance(self.tCK_ns, (int, float)) or isinstance(self.tCK_ns, bool) \
                or not 0 < self.tCK_ns < 1e3:
            raise ValueError(f"DramTiming: tCK_ns={self.tCK_ns!r} must be a number in (0, 1000)")
        if self.tREFI <= self.tRFC:
            raise ValueError(f"DramTiming: tREFI={self.tREFI} must exceed tRFC={self.tRFC} "
                             "(refresh could never keep up)")

    @property
    def wr_to_pre(self) -> int:
        """Column WR -> PRE gap in cycles: tCWL + tBL + tWR."""
        return self.tCWL + self.tBL + self.tWR

    @property
    def wr_to_rd(self) -> int:
        """Column WR -> column RD / MAC gap in cycles: tCWL + tBL + tWTR."""
        return self.tCWL + self.tBL + self.tWTR

    @property
    def gaps(self) -> dict[str, int]:
        """Every bank rule as ``"X>Y": N`` (X accepted in cycle t -> Y from cycle t + N).
        ``REF`` is the start of a refresh.  docs/dram_bank.md, table "Timing rules"."""
        t = self
        return {
            "ACT>MAC": t.tRCDRDMAC, "ACT>RD": t.tRCDRD, "ACT>WR": t.tRCDWR,
            "ACT>PRE": t.tRAS, "ACT>ACT": t.tRC, "ACT>REF": t.tRC,
            "PRE>ACT": t.tRP, "PRE>REF": t.tRP,
            "MAC>MAC": t.tCCDL, "MAC>RD": t.tCCDL, "MAC>WR": t.tRTW, "MAC>PRE": t.tRTP,
            "RD>MAC": t.tCCDL, "RD>RD": t.tCCDL, "RD>WR": t.tRTW, "RD>PRE": t.tRTP,
            "WR>MAC": t.wr_to_rd, "WR>RD": t.wr_to_rd, "WR>WR": t.tCCDL, "WR>PRE": t.wr_to_pre,
            "REF>ACT": t.tRFC, "REF>REF": t.tRFC,
        }

    @property
    def counter_bits(self) -> int:
        """Width of a bank timing down-counter: holds the largest gap minus one."""
        return max(1, (max(self.gaps.values()) - 1).bit_length())

    @property
    def tag(self) -> str:
        """Short unique name of this table (for build caches)."""
        return "t" + "_".join(str(getattr(self, f.name)) for f in _dc_fields(self)
                              if f.name != "tCK_ns")


# GDDR6-AiM preset (ANCHORS.md): the "GDDR6_AiM" timing preset of the AiM simulator
# (arkhadem/aim_simulator, src/dram/impl/GDDR6.cpp; the simulator CENT is built on), tCK 0.5 ns:
# nBL 2, nCL 50, nRCDRD 36, nRCDWR 28, nRP 32, nRAS 54, nRC 89, nWR 33, nRTP 12, nCWL 6,
# nCCDS 2, nCCDL 2, nRRDS 11, nRRDL 11, nWTRL 11, nFAW 42, nRFC 210, nREFI 3333, nRCDRDMAC 56,
# nWPRE 1.  tRTW is that simulator's read-to-write rule nCL + nBL + 3 - nCWL + nWPRE = 50.
GDDR6_AIM_TIMING = DramTiming()

# A shortened table for tests and small RTL runs: every bank rule distinct where it matters
# (tRC > tRAS + tRP, tRCDRDMAC > tRCDRD > tRCDWR), refresh every 120 cycles.
SHORT_TIMING = DramTiming(tRCDRDMAC=7, tRCDRD=5, tRCDWR=4, tRAS=9, tRP=4, tRC=15, tRTP=3,
                          tWR=3, tCWL=1, tBL=1, tWTR=2, tRTW=6, tCCDL=2, tCL=4, tREFI=120,
                          tRFC=11, tCCDS=1, tRRDS=2, tRRDL=3, tFAW=8, tCK_ns=0.5)


class DramOp(enum.IntEnum):
    """Bank command opcodes (``op`` field, 3 bits); 5..7 are invalid (``DramErr.BAD_OP``)."""
    ACT = 0   # open row ``row``: the whole row is read into the row buffer
    PRE = 1   # close the open row (a PRE of a precharged bank is a no-op)
    MAC = 2   # column MAC: burst ``col`` of the row buffer x ``data`` -> accumulator ``dst``
    RD = 3    # column read: burst ``col`` of the row buffer -> ``rd`` stream, tCL later
    WR = 4    # column write: ``data`` -> burst ``col`` of the row buffer and of the array


class DramErr(enum.IntEnum):
    """Codes on the bank's ``err`` output (3 bits), valid the cycle after the rejected command.
    A rejected command is accepted (``cmd.ready`` = 1), dropped, and changes no state."""
    NONE = 0
    BAD_OP = 1     # op 5..7
    BAD_ROW = 2    # ACT with row >= rows
    BAD_COL = 3    # MAC / RD / WR with col >= n_cols
    NOT_OPEN = 4   # MAC / RD / WR while no row is open
    ROW_OPEN = 5   # ACT while a row is open


@dataclass(frozen=True)
class DramBankParams:
    """Configuration of one DRAM-PIM bank (INT8 weights and inputs, integer accumulators).

    rows         rows of the cell array (2..65536); AiM: 16K
    row_bytes    bytes per row, a multiple of burst_bytes; AiM: 2 KB (1K columns x 2 B)
    burst_bytes  bytes per column access, a power of two in 2..128; AiM: 32 B
    n_out        dot products per column MAC, a power of two dividing burst_bytes: the burst
                 is n_out groups of n_x = burst_bytes / n_out int8 weights, each reduced
                 against the same n_x int8 inputs (AiM: 1, one dot product per bank)
    n_acc        accumulator entries (output registers), a power of two in 1..256
    acc_width    signed accumulator width in bits (16 + log2(n_x) .. 48); default 28, the
                 DIMC macro's default result width (MacroParams().acc_width), which holds a
                 dot product over a whole 2 KB row without wrapping
    ref_max      refresh requests that may be pending at once (postponed), 1..15; JEDEC 8
    timing       DramTiming (GDDR6_AIM_TIMING by default)
    """
    rows: int = 16384
    row_bytes: int = 2048
    burst_bytes: int = 32
    n_out: int = 1
    n_acc: int = 16
    acc_width: int = 28
    ref_max: int = 8
    timing: DramTiming = GDDR6_AIM_TIMING

    def __post_init__(self):
        own = "DramBankParams"
        check_fields(own, self, ("rows", 2, 1 << 16), ("burst_bytes", 2, 128))
        if not is_pow2(self.burst_bytes):
            raise ValueError(f"{own}: burst_bytes={self.burst_bytes} must be a power of two")
        check_fields(own, self, ("row_bytes", self.burst_bytes, 4096 * self.burst_bytes))
        if self.row_bytes % self.burst_bytes:
            raise ValueError(f"{own}: row_bytes={self.row_bytes} must be a multiple of "
                             f"burst_bytes={self.burst_bytes}")
        check_fields(own, self, ("n_out", 1, self.burst_bytes))
        if not is_pow2(self.n_out):
            raise ValueError(f"{own}: n_out={self.n_out} must be a power of two")
        check_fields(own, self, ("n_acc", 1, 256))
        if not is_pow2(self.n_acc):
            raise ValueError(f"{own}: n_acc={self.n_acc} must be a power of two")
        check_fields(own, self, ("acc_width", self.min_acc_width, 48), ("ref_max", 1, 15))
        if not isinstance(self.timing, DramTiming):
            raise ValueError(f"{own}: timing={self.timing!r} must be a DramTiming")

    # --- derived sizes ---------------------------------------------------------------------
    @property
    def n_cols(self) -> int:
        """Column bursts per row: row_bytes / burst_bytes."""
        return self.row_bytes // self.burst_bytes

    @property
    def mac_lanes(self) -> int:
        """INT8 multipliers of the MAC unit: one per byte of a burst."""
        return self.burst_bytes

    @property
    def n_x(self) -> int:
        """Inputs (int8) per column MAC: burst_bytes / n_out."""
        return self.burst_bytes // self.n_out

    @property
    def min_acc_width(self) -> int:
        """Smallest accumulator width in which one column's n_x products never wrap:
        |sum| <= n_x * 2**14 needs 15 + log2(n_x) magnitude bits plus a sign bit."""
        return 16 + int(math.log2(self.n_x))

    @property
    def row_acc_width(self) -> int:
        """Width that holds a dot product over a whole row (n_cols columns) without wrap."""
        return 16 + math.ceil(math.log2(self.n_x * self.n_cols))

    @property
    def burst_bits(self) -> int:
        return 8 * self.burst_bytes

    @property
    def row_bits(self) -> int:
        return index_bits(self.rows)

    @property
    def col_bits(self) -> int:
        return index_bits(self.n_cols)

    @property
    def dst_bits(self) -> int:
        return index_bits(self.n_acc)

    @property
    def ref_bits(self) -> int:
        """Width of the ``ref_pend`` output: holds 0..ref_max."""
        return self.ref_max.bit_length()

    @property
    def tag(self) -> str:
        """Short unique name of this configuration (for build caches and file names)."""
        return (f"r{self.rows}_b{self.row_bytes}_u{self.burst_bytes}_o{self.n_out}"
                f"_a{self.n_acc}_w{self.acc_width}_m{self.ref_max}_{self.timing.tag}")

    @property
    def x_range(self) -> tuple[int, int]:
        """Range of an input and of a weight (signed int8)."""
        return -128, 127


# --- stream payload layouts ----------------------------------------------------------------
def cmd_fields(p: DramBankParams) -> dict[str, Field]:
    """Command beat.  ``data``: WR: the burst (burst_bytes bytes, byte 0 lowest); MAC: the
    n_x int8 inputs in its low 8 * n_x bits.  Fields an opcode does not use are ignored."""
    return _layout(("op", 3), ("row", p.row_bits), ("col", p.col_bits), ("dst", p.dst_bits),
                   ("acc", 1), ("last", 1), ("data", p.burst_bits))


def res_fields(p: DramBankParams) -> dict[str, Field]:
    """Result beat of a MAC with ``last``: the new value of entry ``dst``, n_out signed
    acc_width-bit values (lane 0 lowest)."""
    return _layout(("y", p.n_out * p.acc_width), ("dst", p.dst_bits))


def rd_fields(p: DramBankParams) -> dict[str, Field]:
    """Read beat: one burst (burst_bytes bytes, byte 0 lowest)."""
    return _layout(("data", p.burst_bits))


def encode(p: DramBankParams, op: DramOp, **f: int) -> int:
    """Pack a well-formed command; ValueError names an out-of-range field (e.g. row >= rows).
    Malformed commands for tests are built with :func:`spec.params.pack` directly."""
    if not isinstance(op, DramOp):
        try:
            op = DramOp(op)
        except ValueError:
            raise ValueError(f"encode: op={op!r} is not a DramOp") from None
    limits = {"row": p.rows, "col": p.n_cols, "dst": p.n_acc, "acc": 2, "last": 2,
              "data": 1 << p.burst_bits}
    for k, v in f.items():
        if k not in limits:
            raise ValueError(f"encode {op.name}: unknown field {k}={v!r}")
        f[k] = check_int(f"encode {op.name}: {k}", v, 0, limits[k] - 1)
    return pack(cmd_fields(p), op=int(op), **f)


def decode(p: DramBankParams, word: int) -> dict[str, int]:
    """Unpack a command word into its fields."""
    return unpack(cmd_fields(p), word)


def to_bursts(w, burst_bytes: int) -> list[bytes]:
    """A page's weights ``w[n_in][n_out]`` (int8 values) in the DRAM bank's burst layout
    (docs/dram_channel.md, "Parameters and the page layout"): C = n_in x n_out / burst_bytes
    bursts; byte ``j*K + i`` of burst ``c`` is ``w[c*K + i][j]`` with K = burst_bytes / n_out.
    ValueError if the shape does not tile into bursts or a value is not int8."""
    import numpy as np
    a = np.asarray(w)
    if a.ndim != 2:
        raise ValueError(f"to_bursts: w has shape {a.shape}, not (n_in, n_out)")
    n_in, n_out = a.shape
    check_int("to_bursts: burst_bytes", burst_bytes, 1, 1 << 12)
    if burst_bytes % n_out or (n_in * n_out) % burst_bytes:
        raise ValueError(f"to_bursts: burst_bytes={burst_bytes} must be a multiple of "
                         f"n_out={n_out} and divide n_in x n_out={n_in * n_out}")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError("to_bursts: w has values outside int8")
    k = burst_bytes // n_out
    # (C, K, O) -> (C, O, K): burst c, lane j, element i
    b = a.astype(np.int64).reshape(n_in // k, k, n_out).transpose(0, 2, 1)
    return [bytes((b[c].reshape(-1) & 0xFF).astype(np.uint8)) for c in range(b.shape[0])]


def from_bursts(bursts, n_out: int):
    """Inverse of :func:`to_bursts`: the ``int8[n_in][n_out]`` numpy array of the bursts."""
    import numpy as np
    if not bursts:
        raise ValueError("from_bursts: no bursts")
    u = len(bursts[0])
    if any(len(x) != u for x in bursts) or u % n_out:
        raise ValueError(f"from_bursts: bursts of {u} bytes do not hold n_out={n_out} lanes")
    k = u // n_out
    b = np.frombuffer(b"".join(bursts), dtype=np.int8).reshape(len(bursts), n_out, k)
    return b.transpose(0, 2, 1).reshape(len(bursts) * k, n_out).copy()
