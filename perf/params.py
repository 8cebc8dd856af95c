"""Parameters of the performance model (perf/sim.py): one PIM module as the timing model sees
it (:class:`SimParams`) and the DRAM-PIM bank timing of its DRAM back-end (:class:`DramTiming`,
the GDDR6-AiM preset :data:`GDDR6_AIM`)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from spec.dram import GDDR6_AIM_TIMING as _AIM, DramBankParams
from spec.dram import DramTiming as _SpecTiming
from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams

__all__ = ["SimParams", "DramTiming", "GDDR6_AIM"]


@dataclass(frozen=True)
class DramTiming:
    """DRAM-PIM bank timing in DRAM clock cycles, as the performance model names it (``X``
    here is ``tX`` of :class:`spec.dram.DramTiming`).  The defaults are the GDDR6-AiM preset,
    taken from its one table, :data:`spec.dram.GDDR6_AIM_TIMING` (ANCHORS.md, tCK 0.5 ns; the
    "GDDR6_AiM_timing" preset of arkhadem/aim_simulator ``src/dram/impl/GDDR6.cpp``, the
    simulator CENT runs on).  Only here: ``CLREG``, the latency of a read of the MAC result
    registers (``RDMAC16`` = nCLREG + nBL there, nCLREG = 0), which RD_OUT is (``CL`` is the
    array's); ``burst_bytes``, the bank's column access (:class:`spec.dram.DramBankParams`).
    :meth:`from_spec` converts a :class:`spec.dram.DramTiming` (a DRAM channel's table)."""
    tCK_ns: float = _AIM.tCK_ns
    CL: int = _AIM.tCL
    RCDRD: int = _AIM.tRCDRD
    RCDWR: int = _AIM.tRCDWR
    RP: int = _AIM.tRP
    RAS: int = _AIM.tRAS
    RC: int = _AIM.tRC
    WR: int = _AIM.tWR
    RTP: int = _AIM.tRTP
    CCDS: int = _AIM.tCCDS
    CCDL: int = _AIM.tCCDL
    RRDS: int = _AIM.tRRDS
    RRDL: int = _AIM.tRRDL
    FAW: int = _AIM.tFAW
    RFC: int = _AIM.tRFC
    REFI: int = _AIM.tREFI
    RCDRDMAC: int = _AIM.tRCDRDMAC
    CWL: int = _AIM.tCWL
    BL: int = _AIM.tBL
    CLREG: int = 0
    burst_bytes: int = DramBankParams.burst_bytes   # one MAC column / one I/O burst, bytes

    @property
    def wr_to_pre(self) -> int:
        """Column WR -> PRE of the bank: tCWL + tBL + tWR (spec.dram.DramTiming.wr_to_pre)."""
        return self.CWL + self.BL + self.WR

    @classmethod
    def from_spec(cls, t: _SpecTiming, burst_bytes: int = DramBankParams.burst_bytes
                  ) -> "DramTiming":
        """The performance model's view of a DRAM channel's table ``t`` (CLREG 0)."""
        return cls(**{f.name: getattr(t, "t" + f.name) for f in fields(cls)
                      if f.name not in ("tCK_ns", "CLREG", "burst_bytes")},
                   tCK_ns=t.tCK_ns, burst_bytes=burst_bytes)


GDDR6_AIM = DramTiming()


@dataclass(frozen=True)
class SimParams:
    """One PIM module as the performance model sees it (no ISA field-width limits, so a
    16-channel x 16-bank module with thousands of pages per bank is expressible).

    n_ch, n_banks      channels per module, banks per channel
    n_gbuf, q_depth    GBuf entries per channel; I/O and compute queue depth per channel
    dcs                dynamic command scheduling (False: in-order baseline)
    n_in, n_out        page = one n_in x n_out weight tile of one bank (rows x columns)
    x_bits, w_bits     input / weight bits (DIMC: X = x_bits cycles per MAC, bit-serial)
    tree_stages        DIMC adder-tree pipeline stages P
    n_sets             pages per bank (DIMC: selectable weight sets; DRAM: rows)
    n_acc              OBuf entries per bank (output registers)
    fifo_depth         host command FIFO; loop_len: LOOP body buffer
    backend            "dimc" (the RTL macro's timing) or "dram" (GDDR6-AiM bank timing)
    dram               DRAM timing (backend "dram")
    clock_ghz          clock of the module (DIMC 1.0; DRAM 1/tCK)
    out_ports          result beats the hub takes per cycle, from the lowest-numbered channels
                       holding one (the RTL module: 1; a hub with one port per channel: n_ch)
    all_bank           channels execute MAC_AB (all-bank MAC, docs/channel.md; AiM's MAC_ABK)
    refresh            DRAM refresh: "stretch" (default; the closed-form stretch
                       :attr:`refresh_factor` of the run's time, for long system runs) or
                       "exact" (docs/dram_channel.md "Refresh": look-ahead, gate, close,
                       simulated cycle by cycle; disables the periodic extrapolation)
    wide_inp           tiles per host beat (``ModuleParams.wide_inp``, 1..n_ch): > 1, a multicast
                       WR_INP (``HCmd.multi``) gives each of up to K masked channels its own
                       tile in one dispatcher cycle
    """
    n_ch: int = 4
    n_banks: int = 4
    n_gbuf: int = 4
    q_depth: int = 8
    dcs: bool = True
    n_in: int = 64
    n_out: int = 64
    x_bits: int = 8
    w_bits: int = 8
    tree_stages: int = 1
    n_sets: int = 2
    n_acc: int = 16
    fifo_depth: int = 8
    loop_len: int = 8
    backend: str = "dimc"
    dram: DramTiming = GDDR6_AIM
    clock_ghz: float = 1.0
    out_ports: int = 1
    all_bank: bool = False
    wide_inp: int = 1
    refresh: str = "stretch"

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"SimParams: {name}={getattr(self, name)!r} {why}")
        for name in ("n_ch", "n_banks", "n_gbuf", "n_in", "n_out", "x_bits", "w_bits", "n_sets",
                     "n_acc", "loop_len", "out_ports"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "must be an int >= 1")
        for name in ("q_depth", "fifo_depth"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 2:
                bad(name, "must be an int >= 2")
        if self.tree_stages not in (0, 1, 2):
            bad("tree_stages", "must be 0, 1 or 2")
        if self.backend not in ("dimc", "dram"):
            bad("backend", "must be 'dimc' or 'dram'")
        for name in ("dcs", "all_bank"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be a bool")
        if not self.clock_ghz > 0:
            bad("clock_ghz", "must be > 0")
        if self.refresh not in ("stretch", "exact"):
            bad("refresh", "must be 'stretch' or 'exact'")
        if type(self.wide_inp) is not int or not 1 <= self.wide_inp <= self.n_ch:
            bad("wide_inp", f"must be an int in 1..n_ch={self.n_ch}")

    @classmethod
    def from_module(cls, p: ModuleParams, refresh: str = "exact") -> "SimParams":
        """The timing view of an RTL/golden-model module: DIMC back-end, or, for a channel with
        ``bank_kind="dram"``, the DRAM back-end with the channel's timing table and burst
        (docs/dram_channel.md) at 1/tCK and the given ``refresh`` rule (default "exact", as
        the RTL refreshes; "stretch" for the closed form)."""
        cp, m = p.channel, p.channel.macro
        kw = {}
        if getattr(cp, "bank_kind", "dimc") == "dram":
            kw = dict(backend="dram", dram=DramTiming.from_spec(cp.timing, cp.burst_bytes),
                      clock_ghz=1.0 / cp.timing.tCK_ns, refresh=refresh)
        return cls(**kw, n_ch=p.n_ch, n_banks=cp.n_banks, n_gbuf=cp.n_gbuf, q_depth=cp.q_depth,
                   dcs=cp.dcs, all_bank=cp.all_bank, n_in=m.n_in, n_out=m.n_out,
                   x_bits=m.x_bits, w_bits=m.w_bits,
                   tree_stages=m.tree_stages, n_sets=m.n_sets, n_acc=m.n_acc,
                   fifo_depth=p.fifo_depth, loop_len=p.loop_len, wide_inp=p.wide_inp)

    def to_module(self, n_vpages: int = 256, n_req: int = 16) -> ModuleParams:
        """The RTL/golden-model module with this timing (DIMC only; ValueError when a size is
        beyond what the ISA encodes, e.g. n_ch > 16)."""
        if self.backend != "dimc":
            raise ValueError(f"to_module: backend={self.backend!r} has no RTL (only 'dimc')")
        if self.out_ports != 1:
            raise ValueError(f"to_module: out_ports={self.out_ports} (the RTL hub has 1)")
        m = MacroParams(n_in=self.n_in, n_out=self.n_out, w_bits=self.w_bits,
                        x_bits=self.x_bits, n_sets=self.n_sets, n_acc=self.n_acc,
                        tree_stages=self.tree_stages)
        cp = ChannelParams(m, n_banks=self.n_banks, n_gbuf=self.n_gbuf, q_depth=self.q_depth,
                           dcs=self.dcs, all_bank=self.all_bank)
        return ModuleParams(cp, n_ch=self.n_ch, n_vpages=n_vpages, n_req=n_req,
                            fifo_depth=self.fifo_depth, loop_len=self.loop_len,
                            wide_inp=self.wide_inp)

    def with_(self, **kw) -> "SimParams":
        return replace(self, **kw)

    @property
    def n_pages(self) -> int:
        """Physical pages per channel (a page is one set of one bank, same pp in every channel)."""
        return self.n_banks * self.n_sets

    @property
    def page_bytes(self) -> int:
        """Bytes of one page in ONE channel: n_in x n_out x w_bits / 8."""
        return self.n_in * self.n_out * self.w_bits // 8

    @property
    def capacity_bytes(self) -> int:
        """Bytes of the module: every page of every bank of every channel."""
        return self.n_ch * self.n_pages * self.page_bytes

    @property
    def refresh_factor(self) -> float:
        """DRAM: all-bank refresh every tREFI makes the banks unavailable for tRFC, after a
        precharge (tRP) and before a re-activation (tRCDRDMAC).  Applied in closed form as a
        stretch of the run: tREFI / (tREFI - tRFC - tRP - tRCDRDMAC).  DIMC (SRAM), and DRAM
        with ``refresh="exact"`` (the cycles include the refreshes): 1."""
        if self.backend != "dram" or self.refresh == "exact":
            return 1.0
        d = self.dram
        return d.REFI / (d.REFI - d.RFC - d.RP - d.RCDRDMAC)

    @property
    def peak_macs_per_cycle(self) -> float:
        """Internal-bandwidth-bound peak of the module: every bank streaming its array (DIMC:
        n_in x n_out MACs per X cycles; DRAM: one 32-byte column per tCCDL per bank)."""
        per_bank = (self.n_in * self.n_out / self.x_bits if self.backend == "dimc"
                    else self.dram.burst_bytes * 8 / self.w_bits / self.dram.CCDL)
        return per_bank * self.n_banks * self.n_ch
