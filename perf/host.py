"""Host and link time of one decode step: every operation that is not a PIM GEMV.

The host is CENT's near-memory accelerator block (CENT, ASPLOS 2025; repository
Yufeng98/CENT, ``cent_simulation/``): per CXL device of 32 channels, one accelerator per
channel with 16 SIMD lanes (EXP and VEC units) behind one shared buffer, and 8 RISC-V cores.
The link is CENT's CXL fabric (``cent_simulation/cxl_latency.py``).  Every constant is a field
of :class:`HostParams` / :class:`LinkParams` whose source is listed in :data:`SOURCES` and
returned with every result.

Time per op, as CENT's ``run_sim.py`` ``calculate_acc_latency`` counts it (cycles at ``FREQ``):

* one SIMD op pipelines the accelerators that share one shared buffer (``ACCEL_CYCLE``):
  ``EXP = A*SB_RD + EXP_LANE + SB_WR``, ``VEC = A*2*SB_RD + 1 + SB_WR``, with
  ``A = min(channels, CH_PER_DV)`` (CENT: A = 32, EXP 44 cycles, VEC 66 cycles);
* an op over ``n`` elements issues ``n / (elems_per_op * channels)`` SIMD ops, fractional as in
  CENT: 16 elements per accelerator for softmax scores (``seqlen*n_heads/16/num_channels``),
  16 x 16 for vectors of the hidden state (RMSNorm's ``embedding_size/16/16/num_channels``);
* RMSNorm adds one reduction (``SB_RD + SB_WR + 1``) and ``RV_RMSNorm_CYCLE`` on a RISC-V core;
  softmax adds per head ``SB_RD + RV_SFT_CYCLE_PIPELINE``; RoPE costs 3 cycles per rotated element
  on ``RV_COUNT`` cores (``RV_ROTEmbed_CYCLE = 3/RV_COUNT``, over Q and K elements);
* top-k sampling on the CPU: CENT's ``InOut_latency`` = 0.15 ms per token (``utils.py``).

Ops CENT does not run on its accelerator (CENT adds residuals and applies SiLU in the AiM banks)
are counted with the same units, stated as assumptions in :func:`step_time`'s output: the
residual add one VEC pass over ``hidden``; SwiGLU one EXP (16 elements per accelerator, as
softmax's exp) and three VEC passes (add 1, divide, multiply by the up projection) over the
rank's FFN columns; KV quantisation (``kv_quant``) two VEC passes (absmax, scale) and one
reduction per new K/V head vector.

Link (``cxl_latency.py``): values are 2 B, packed 64 B per message and 3 messages per 256-B PBR
flit; one transfer of ``n`` values costs ``one_hop_round_trip_latency`` (4 x 25 ns CXL port +
2 x 30 ns PCIe + 20 ns switch = 180 ns) plus ``ceil(2n/64/3) * 256 B`` at
``lanes * bandwidth_per_lane`` (GiB/s; 8 per lane, halved under ``MULTICAST``; 144 lanes over
32 devices = 4 lanes per device, ``run_sim.py`` defaults).  Tensor parallelism over T ranks:
ring all-reduce, 2(T-1) steps of n/T values (or CENT's gather + broadcast); pipeline
parallelism: one transfer of the batch's hidden vectors per stage boundary.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from spec.params import check_int

__all__ = ["Const", "HostParams", "LinkParams", "ModelShape", "CENT_HOST", "CENT_CXL",
           "SOURCES", "transfer_s", "allreduce_s", "step_time"]

_RS = "CENT (Yufeng98/CENT) cent_simulation/"
_PC = _RS + "cent_power_calculator.py "
_CX = _RS + "cxl_latency.py "

#: field name -> (unit, source) for every constant of HostParams and LinkParams.
SOURCES = {
    "freq_hz": ("Hz", _PC + "FREQ = 2.00 * GIGA"),
    "ch_per_device": ("channels", _PC + "CH_PER_DV = 32.00 (accelerators sharing one buffer)"),
    "sb_rd_cycle": ("cycles", _PC + "SB_RD_CYCLE = 1.00"),
    "sb_wr_cycle": ("cycles", _PC + "SB_WR_CYCLE = 1.00"),
    "exp_lane_cycle": ("cycles", _PC + "EXP_LANE_CYCLE = 11.00"),
    "rv_count": ("RISC-V cores per device", _PC + "RV_COUNT = 8"),
    "rv_rmsnorm_cycle": ("cycles", _PC + "RV_RMSNorm_CYCLE = 26.00"),
    "rv_rot_cycle": ("cycles per element on one core",
                     _PC + "RV_ROTEmbed_CYCLE = 3.00 / RV_COUNT"),
    "rv_sft_cycle": ("cycles per head", _PC + "RV_SFT_CYCLE_PIPELINE = 16.00 * SB_WR_CYCLE + "
                     "2.00 / RV_COUNT + 1.00 * SB_RD_CYCLE (= 17.25)"),
    "score_elems": ("elements per accelerator per SIMD op",
                    _RS + "run_sim.py calculate_acc_latency: seqlen * n_heads / 16.00 / "
                    "num_channels EXP and ADD ops (16 SIMD lanes)"),
    "vector_elems": ("elements per accelerator per SIMD op",
                     _RS + "run_sim.py calculate_acc_latency: embedding_size / 16.00 / 16.00 / "
                     "num_channels VEC ops (RMSNorm)"),
    "sample_s": ("s per request per step", _RS + "utils.py InOut_latency = 0.15 (ms, "
                 "'Top-K sampling on CPU', added once per token in run_sim.py)"),
    "bandwidth_per_lane": ("GiB/s per lane", _CX + "bandwidth_per_lane = 8 (times 0.5 when "
                           "MULTICAST; CENT converts with 1e9/1024^3, i.e. GiB/s)"),
    "multicast": ("bool", _CX + "MULTICAST = True (halves bandwidth_per_lane)"),
    "lanes": ("PCIe lanes per device", _RS + "run_sim.py defaults --PCIE_lanes 144 // "
              "--num_devices 32 = 4"),
    "cxl_port_ns": ("ns", _CX + "cxl_port_latency = 25"),
    "pcie_ns": ("ns", _CX + "pcie_latency = 5+20+5"),
    "switch_ns": ("ns", _CX + "cxl_switch_latency = 20"),
    "value_bytes": ("B", _CX + "'2B per value'"),
    "message_bytes": ("B", _CX + "'64B per message'"),
    "messages_per_flit": ("messages", _CX + "'3 message per PBR flit'"),
    "flit_bytes": ("B", _CX + "flits * 256 (PBR flit)"),
    "allreduce": ("scheme", "ring: 2(T-1) neighbour steps of n/T values (this model); "
                  "'cent': " + _CX + "llama_latency gather (n/T x (T-1)) + broadcast (n)"),
}


@dataclass(frozen=True)
class Const:
    """A number with its unit and source."""
    value: float
    unit: str
    source: str


def _pos(owner: str, name: str, v, integer: bool = False):
    if integer:
        return check_int(f"{owner}: {name}", v, 1)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{owner}: {name}={v!r} must be a finite number > 0")
    return v


def _sources(obj) -> dict:
    """{field: Const} for a params dataclass; a value that differs from the CENT preset says so."""
    ref = type(obj)()
    out = {}
    for f in fields(obj):
        if f.name == "name":
            continue
        unit, src = SOURCES[f.name]
        v, r = getattr(obj, f.name), getattr(ref, f.name)
        if v != r:
            src = f"set by caller {obj.name!r} (CENT: {r!r}; {src})"
        out[f.name] = Const(v, unit, src)
    return out


@dataclass(frozen=True)
class HostParams:
    """Host accelerator of one CXL device (defaults: CENT, see :data:`SOURCES`).

    Cycles are at ``freq_hz``; ``ch_per_device`` accelerators (one per channel) share one
    shared buffer; ``rv_count`` RISC-V cores per ``ch_per_device`` channels; ``sample_s`` is
    the CPU time of top-k sampling per request (s)."""
    name: str = "cent"
    freq_hz: float = 2.0e9
    ch_per_device: int = 32
    sb_rd_cycle: float = 1.0
    sb_wr_cycle: float = 1.0
    exp_lane_cycle: float = 11.0
    rv_count: int = 8
    rv_rmsnorm_cycle: float = 26.0
    rv_rot_cycle: float = 3.0
    rv_sft_cycle: float = 16.0 * 1.0 + 2.0 / 8 + 1.0 * 1.0
    score_elems: int = 16
    vector_elems: int = 16 * 16
    sample_s: float = 0.15e-3

    def __post_init__(self):
        o = f"HostParams {self.name!r}"
        for f in fields(self):
            if f.name != "name":
                _pos(o, f.name, getattr(self, f.name), f.type == "int")

    def exp_cycles(self, a: int) -> float:
        """Cycles of one EXP op over ``a`` accelerators sharing a buffer (CENT ACCEL_CYCLE)."""
        return a * self.sb_rd_cycle + self.exp_lane_cycle + self.sb_wr_cycle

    def vec_cycles(self, a: int) -> float:
        """Cycles of one VEC op (two operand reads per accelerator; CENT ACCEL_CYCLE)."""
        return a * 2 * self.sb_rd_cycle + 1 + self.sb_wr_cycle

    def sources(self) -> dict:
        return _sources(self)


@dataclass(frozen=True)
class LinkParams:
    """CXL link (defaults: CENT's cxl_latency.py, see :data:`SOURCES`); latencies in ns,
    ``bandwidth_per_lane`` in GiB/s before the multicast halving."""
    name: str = "cent-cxl"
    bandwidth_per_lane: float = 8.0
    multicast: bool = True
    lanes: int = 4
    cxl_port_ns: float = 25.0
    pcie_ns: float = 30.0
    switch_ns: float = 20.0
    value_bytes: int = 2
    message_bytes: int = 64
    messages_per_flit: int = 3
    flit_bytes: int = 256
    allreduce: str = "ring"

    def __post_init__(self):
        o = f"LinkParams {self.name!r}"
        for f in fields(self):
            if f.name in ("name", "multicast", "allreduce"):
                continue
            _pos(o, f.name, getattr(self, f.name), f.type == "int")
        if not isinstance(self.multicast, bool):
            raise ValueError(f"{o}: multicast={self.multicast!r} must be a bool")
        if self.allreduce not in ("ring", "cent"):
            raise ValueError(f"{o}: allreduce={self.allreduce!r} must be 'ring' or 'cent'")

    @property
    def hop_s(self) -> float:
        """One-hop round trip (CENT one_hop_round_trip_latency = 4 port + 2 PCIe + 1 switch;
        computed before the MULTICAST doubling of pcie_latency, as in cxl_latency.py)."""
        return (4 * self.cxl_port_ns + 2 * self.pcie_ns + self.switch_ns) * 1e-9

    @property
    def bytes_per_s(self) -> float:
        """Payload bandwidth of one device's link (B/s)."""
        return self.lanes * self.bandwidth_per_lane * (0.5 if self.multicast else 1.0) * 2**30

    def flits(self, n_values: int) -> int:
        return math.ceil(n_values * self.value_bytes / self.message_bytes
                         / self.messages_per_flit)

    def sources(self) -> dict:
        return _sources(self)


CENT_HOST = HostParams()
CENT_CXL = LinkParams()


@dataclass(frozen=True)
class ModelShape:
    """Shapes of a decoder layer stack (SwiGLU FFN of width ``ffn``, GQA)."""
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    layers: int

    def __post_init__(self):
        for f in fields(self):
            check_int(f"ModelShape: {f.name}", getattr(self, f.name), 1)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"ModelShape: n_kv_heads={self.n_kv_heads} must divide "
                             f"n_heads={self.n_heads}")


def transfer_s(n_values: int, link: LinkParams = CENT_CXL) -> float:
    """Seconds to move ``n_values`` values over one hop (CENT vector_latency)."""
    n = check_int("transfer_s: n_values", n_values, 0)
    if not isinstance(link, LinkParams):
        raise ValueError(f"transfer_s: link={link!r} must be a LinkParams")
    if n == 0:
        return 0.0
    return link.hop_s + link.flits(n) * link.flit_bytes / link.bytes_per_s


def allreduce_s(n_values: int, ranks: int, link: LinkParams = CENT_CXL) -> float:
    """Seconds for an all-reduce of ``n_values`` values over ``ranks`` ranks: ring (2(T-1) steps,
    each one hop of ceil(n/T) values, all ranks sending at once) or CENT's gather + broadcast
    (``link.allreduce``).  0 for one rank."""
    n = check_int("allreduce_s: n_values", n_values, 0)
    t = check_int("allreduce_s: ranks", ranks, 1)
    if not isinstance(link, LinkParams):
        raise ValueError(f"allreduce_s: link={link!r} must be a LinkParams")
    if t == 1 or n == 0:
        return 0.0
    chunk = math.ceil(n / t)
    if link.allreduce == "ring":
        return 2 * (t - 1) * transfer_s(chunk, link)
    gather = link.hop_s + link.flits(chunk) * (t - 1) * link.flit_bytes / link.bytes_per_s
    return gather + transfer_s(n, link)


def step_time(shape: ModelShape, *, context: int, batch: int = 1, tp: int = 1, pp: int = 1,
              channels: int = 32, host: HostParams = CENT_HOST, link: LinkParams = CENT_CXL,
              kv_quant: bool = False, allreduces_per_layer: int = 2,
              lm_head: str = "pim") -> dict:
    """Host and link time of one decode step (one token of every request of the batch).

    Parameters
    ----------
    shape : ModelShape
    context : int
        tokens each request attends to (its KV length including the new token), >= 1.
    batch : int
        requests decoded together; every per-request op is done ``batch`` times, every link
        transfer carries the batch's vectors in one message stream.
    tp, pp : int
        tensor-parallel ranks per layer (heads and FFN columns split, KV heads replicated when
        tp > n_kv_heads) and pipeline stages (ceil(layers / pp) layers each, the busiest).
    channels : int
        PIM channels of one rank: one host accelerator per channel.
    kv_quant : bool
        the new K/V vectors are quantised on the host (INT8 KV cache).
    allreduces_per_layer : int
        all-reduces of ``hidden`` values per layer under tp (2: after the attention output and
        the FFN down projection, both row-split).
    lm_head : {"pim", "host"}
        where the LM head GEMV runs: "pim" (as CENT) sends ``vocab`` logits per request to the
        host for sampling; "host" sends the last hidden state (the host GEMV is not timed).

    Returns
    -------
    dict
        ``ops`` {op: s on the token's critical path}, ``kind`` {op: "host" | "link"},
        ``host_s``, ``link_s`` (sums, s), ``stage`` {"host_s", "link_s"} of one pipeline stage
        (its layers and its outgoing transfer, for micro-batch pipelining; sampling, embedding
        and output transfers happen outside the stages), ``constants``
        {name: {value, unit, source}}, ``assumptions`` [str].
    """
    w = "step_time"
    if not isinstance(shape, ModelShape):
        raise ValueError(f"{w}: shape={shape!r} must be a ModelShape")
    if not isinstance(host, HostParams):
        raise ValueError(f"{w}: host={host!r} must be a HostParams")
    if not isinstance(link, LinkParams):
        raise ValueError(f"{w}: link={link!r} must be a LinkParams")
    ctx = check_int(f"{w}: context", context, 1)
    b = check_int(f"{w}: batch", batch, 1)
    tp = check_int(f"{w}: tp", tp, 1)
    pp = check_int(f"{w}: pp", pp, 1, shape.layers)
    ch = check_int(f"{w}: channels", channels, 1)
    ar = check_int(f"{w}: allreduces_per_layer", allreduces_per_layer, 0)
    if not isinstance(kv_quant, bool):
        raise ValueError(f"{w}: kv_quant={kv_quant!r} must be a bool")
    if lm_head not in ("pim", "host"):
        raise ValueError(f"{w}: lm_head={lm_head!r} must be 'pim' or 'host'")
    if tp > shape.n_heads:
        raise ValueError(f"{w}: tp={tp} exceeds n_heads={shape.n_heads}")

    s = shape
    q_heads = math.ceil(s.n_heads / tp)             # query heads of one rank
    kv_heads = math.ceil(s.n_kv_heads / tp)         # >= 1: replicated when tp > n_kv_heads
    ffn_r = math.ceil(s.ffn / tp)
    a = min(ch, host.ch_per_device)                 # accelerators sharing one shared buffer
    exp_c, vec_c = host.exp_cycles(a), host.vec_cycles(a)
    vec_ops = lambda n: n / (host.vector_elems * ch)        # noqa: E731
    score_ops = lambda n: n / (host.score_elems * ch)       # noqa: E731
    red_c = host.sb_rd_cycle + host.sb_wr_cycle + 1          # CENT "1 RED"
    cores = host.rv_count * ch / host.ch_per_device          # RISC-V cores of the rank

    # cycles per request per layer, one rank (ranks run in parallel)
    cyc = {
        "rmsnorm": 2 * (vec_ops(s.hidden) * vec_c + red_c + host.rv_rmsnorm_cycle),
        "softmax": (score_ops(ctx * q_heads) * (exp_c + vec_c)
                    + q_heads * (host.sb_rd_cycle + host.rv_sft_cycle)),
        "rope": (q_heads + kv_heads) * s.head_dim * host.rv_rot_cycle / cores,
        "residual": 2 * vec_ops(s.hidden) * vec_c,
        "swiglu": score_ops(ffn_r) * exp_c + 3 * vec_ops(ffn_r) * vec_c,
        "kv_quant": (2 * vec_ops(2 * kv_heads * s.head_dim) * vec_c + 2 * kv_heads * red_c
                     if kv_quant else 0.0),
    }
    lps = math.ceil(s.layers / pp)
    layers_path = lps * pp                           # token latency = pp x the busiest stage
    per_layer = {k: b * v / host.freq_hz for k, v in cyc.items()}
    ops = {k: v * layers_path for k, v in per_layer.items()}
    ops["sampling"] = b * host.sample_s
    kind = {k: "host" for k in ops}

    vec = b * s.hidden                               # the batch's hidden vectors
    ar_layer = ar * allreduce_s(vec, tp, link)
    link_ops = {
        "embedding": transfer_s(vec, link),          # rows looked up on the host, sent to stage 0
        "allreduce": ar_layer * layers_path,
        "pipeline": (pp - 1) * transfer_s(vec, link),
        "output": transfer_s(b * (s.vocab if lm_head == "pim" else s.hidden), link),
    }
    ops.update(link_ops)
    kind.update({k: "link" for k in link_ops})
    host_s = sum(v for k, v in ops.items() if kind[k] == "host")
    link_s = sum(v for k, v in ops.items() if kind[k] == "link")
    stage = {"host_s": sum(per_layer.values()) * lps,
             "link_s": ar_layer * lps + transfer_s(vec, link)}
    consts = {k: asdict(c) for k, c in {**host.sources(), **link.sources()}.items()}
    assumptions = [
        "host ops run after the PIM work they depend on (not overlapped); ranks of a stage in "
        "parallel; one host accelerator per PIM channel, CENT's accelerator and RISC-V counts "
        "scaled by channels / ch_per_device",
        "residual add, SwiGLU and KV quantisation are not CENT host ops (CENT uses the AiM "
        "banks); counted with CENT's EXP/VEC op costs as described in perf/host.py",
        "sampling: CENT's per-token CPU time once per request, independent of vocab",
        "embedding: host-memory lookup not timed; its transfer to stage 0 is",
        f"LM head (a GEMV) not timed here; on the {lm_head}: "
        + ("vocab logits" if lm_head == "pim" else "the last hidden state") + " go to the host",
        f"tensor parallel: {ar} all-reduce(s) of hidden per layer, scheme {link.allreduce!r}",
    ]
    return {"ops": ops, "kind": kind, "host_s": host_s, "link_s": link_s, "stage": stage,
            "constants": consts, "assumptions": assumptions}
