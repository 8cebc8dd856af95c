"""The one cocotb lockstep loop: a Verilated design and its golden model, compared every cycle.

Runs inside the simulator for every design of ``tb/designs.py`` (macro, channel, module),
started by :func:`tb.build.run_job`, which passes the job file in ``CIMPHONY_JOB``.  Python
wakes once per cycle, on the falling clock edge; each wake runs four stages:

``sample``
    read the wrapper's registered outputs of the cycle that just ended (``tb/probe.py``:
    all narrow outputs packed in ``obs``, the wide payload in ``obs_out``, read only when its
    change bit is set or the model's payload changed);
``step``
    step the golden model with the same inputs (``reset``/``step``/``state`` interface);
``check``
    compare every sampled output; the first mismatch stops the run (cycle, signal, expected,
    actual, in flight, seed: :class:`tb.mismatch.Mismatch`); then count transfers and apply
    the design's end rule;
``drive``
    compute the next cycle's inputs by the driver rules of ``model/stimulus.py`` and write
    them straight into the simulator (raw GPI deposits: ``handle.value`` would queue them
    for a second wake per cycle).  Verilator re-evaluates after the callback, long before
    the rising edge samples them.

A design's side streams (``tb/designs.py`` ``SideStream``: the module's ``sm_res`` with
``softmax``) have their ready driven after the output's (``job["side_ready"][i]``: None =
the output's own pattern, else ``(seed, threshold)``), their valid compared with the narrow
outputs and their payload (``obs_side<i>``) in every cycle the model's valid is 1; the
payloads transferred are in the result's ``side_outputs``.

``job["reset_at"]`` raises ``rst`` in that cycle (DUT) and resets the model after stepping
it (mid-stream reset recovery).  The model is stepped through that cycle with the cycle's
inputs, so a design whose reset also drops the command offered in the reset cycle (the DRAM
bank: a WR under ``rst`` never reaches the array) needs a model wrapper that steps the reset
cycle itself (``tb/dram.py``).
"""
from __future__ import annotations

import json
import os
import pickle
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from cimphony.compat import DEPOSIT, raw_handle
from model.stimulus import TAIL, Source, ready_pattern
from tb.designs import DESIGNS, Design
from tb.mismatch import Mismatch, payload_detail

CHUNK = 1 << 14     # ready pattern computed this many cycles at a time
RESET_EDGES = 3     # falling edges with rst high before cycle 0


class _Port:
    """An input stream as driven: its beat source and where its valid / payload go."""
    __slots__ = ("name", "src", "bit", "set", "fmt", "ready", "after", "driven", "valid",
                 "total")
    # bit: the port's index, also its valid's bit in ctl and its transfer counter


def _reader(handle, width: int):
    """Fast reader of a wrapper output: the raw 32-bit read, or the binary string above."""
    h = raw_handle(handle)
    if width <= 32:
        return h.get_signal_val_long
    return lambda: int(h.get_signal_val_binstr(), 2)


def _packer(fields: list[tuple[int, int]]):
    """``o -> sum(o[i] << off)``: the model's outputs packed as the probe packs the DUT's
    (compiled once per run: the one expression the loop evaluates every cycle)."""
    body = " | ".join(f"(o[{i}] << {off})" for i, off in fields) or "0"
    return eval(f"lambda o: {body}")   # the text holds only ints of the probe spec


class Lockstep:
    """One lockstep run of ``design`` on ``job`` (see :func:`tb.build.run_job` for its keys)."""

    def __init__(self, dut, design: Design, job: dict):
        p = job["params"]
        self.design, self.job, self.dut = design, job, dut
        self.model = design.model(p, job)
        spec = self.spec = design.spec(p)
        fields = design.out_type._fields
        names = [x.name for x in design.inputs] + [design.output]
        n_in = len(design.inputs)
        sides = self.sides = design.sides(p)
        if (len(spec.ctl) != n_in + 1 + len(sides) or len(spec.wide_in) != n_in
                or len(spec.side_out) != len(sides)
                or not spec.ctl[n_in].startswith(design.output)
                or not all(spec.ctl[i].startswith(s.name) and spec.wide_in[i].startswith(s.name)
                           for i, s in enumerate(design.inputs))
                or not all(spec.ctl[n_in + 1 + i].startswith(s.name)
                           and spec.side_out[i].startswith(s.name)
                           for i, s in enumerate(sides))):
            raise ValueError(f"lockstep: probe spec {spec} does not match the streams of "
                             f"{design.kind} {names} (ctl: their valids, then the output's "
                             f"ready, then the side streams' readies "
                             f"{[x.name for x in sides]}; wide_in: their payloads)")
        alias = {f"{x.name}.{k}": getattr(x, k) for x in sides for k in ("valid", "payload")}
        self.ports = []
        for i, (s, beats) in enumerate(zip(design.inputs, job["streams"], strict=True)):
            port = _Port()
            h = getattr(dut, f"in{i}")
            raw = raw_handle(h)
            port.name, port.src, port.bit = s.name, Source(beats), i
            port.fmt = f"0{len(h)}b" if len(h) > 32 else None   # wide: binary string
            port.set = raw.set_signal_val_binstr if port.fmt else raw.set_signal_val_int
            port.ready = None if s.ready is None else fields.index(s.ready)
            port.after = names.index(s.after) if s.after else n_in
            port.driven, port.valid, port.total = 0, 0, len(beats)
            self.ports.append(port)
        self.obs_fields = [(n, fields.index(alias.get(n, n.replace(".", "_"))),
                            spec.obs_offset(n), w) for n, w in spec.obs]
        self.seed = job["seed"]
        self.expect = (None if design.results_of is None
                       else self.ports[names.index(design.results_of)].total)
        self.counts = [0] * (n_in + 1)    # transfers per input stream, then outputs received
        self.outputs, self.events, self.busy_hist = [], [], {}
        self.side_outputs = [[] for _ in sides]     # per side stream: payloads transferred

    # --- the stages -------------------------------------------------------------------------
    def stages(self):
        """The ``drive(c) -> step args``, ``sample() -> obs`` and ``check(c, obs, o) ->
        Mismatch | bool`` functions of this run (closures over its constants and state:
        they run every cycle, so no attribute or dict lookups)."""
        dut, job, spec, design = self.dut, self.job, self.spec, self.design
        fields = design.out_type._fields
        ports, counts, outputs, events = self.ports, self.counts, self.outputs, self.events
        busy_hist = self.busy_hist
        seed, thr = self.seed, job["ready_threshold"]
        rbit, reset_at = len(self.ports), job["reset_at"]
        set_ctl = raw_handle(dut.ctl).set_signal_val_int
        set_rst = raw_handle(dut.rst).set_signal_val_int
        pack = _packer([(i, off) for _, i, off, _ in self.obs_fields])
        mask, chg = (1 << spec.chg_bit) - 1, spec.chg_bit
        get_obs = _reader(dut.obs, spec.obs_width + 1)
        get_out = _reader(dut.obs_out, len(dut.obs_out))
        pay_i = fields.index(spec.wide_out.replace(".", "_"))
        valid_i = fields.index(f"{design.output}_valid")
        idle_i = fields.index("idle") if "idle" in fields else None
        busy_i = fields.index("busy")
        event_i = [(fields.index(n), n) for n in design.events]
        expect = self.expect
        ready = ready_pattern(seed, 0, CHUNK, thr).tolist()
        # side streams (tb/designs.py SideStream): ready bit, model valid / payload fields,
        # the DUT payload reader, the ready pattern (job["side_ready"][i]: None = the
        # output's own pattern, else (seed, threshold) of its own)
        side_cfg = job.get("side_ready") or [None] * len(self.sides)
        sides = [(rbit + 1 + i, fields.index(x.valid), fields.index(x.payload),
                  _reader(getattr(dut, f"obs_side{i}"), len(getattr(dut, f"obs_side{i}"))),
                  side_cfg[i], x.name, self.side_outputs[i])
                 for i, x in enumerate(self.sides)]
        side_ready = [ready if cfg is None else ready_pattern(cfg[0], 0, CHUNK, cfg[1]).tolist()
                      for _, _, _, _, cfg, _, _ in sides]
        side_rr = [0] * len(sides)
        ctl_now = rr = model_out = dut_out = 0
        pending = sum(1 for s in ports if s.total)     # input streams with beats to send
        end = None                                     # last cycle, once the end rule fired

        def drive(c: int) -> list[int]:
            """Write the inputs of cycle ``c`` into the simulator; returns the model's step
            arguments ``v0, p0, v1, p1, ..., out_ready``."""
            nonlocal ready, ctl_now, rr
            args, ctl = [], 0
            for s in ports:
                src = s.src
                v = s.valid = src.valid(c, counts[s.after])
                pay = src.payload
                if pay != s.driven:
                    s.driven = pay
                    s.set(DEPOSIT, format(pay, s.fmt) if s.fmt else pay)
                ctl |= v << s.bit
                args += (v, pay)
            k = c & (CHUNK - 1)
            if not k and c:
                ready = ready_pattern(seed, c, CHUNK, thr).tolist()
            rr = ready[k]
            ctl |= rr << rbit
            args.append(rr)
            for i, (bit, _, _, _, cfg, _, _) in enumerate(sides):
                if not k and c:
                    side_ready[i] = (ready if cfg is None
                                     else ready_pattern(cfg[0], c, CHUNK, cfg[1]).tolist())
                r_ = side_rr[i] = side_ready[i][k]
                ctl |= r_ << bit
                args.append(r_)
            if ctl != ctl_now:
                ctl_now = ctl
                set_ctl(DEPOSIT, ctl)
            if c == reset_at:
                set_rst(DEPOSIT, 1)
            return args

        sample = get_obs   # () -> the packed narrow outputs of the cycle that just ended

        def check(c: int, obs: int, o) -> Mismatch | bool:
            """Compare the DUT's outputs ``obs`` of cycle ``c`` with the model's ``o``, then
            count transfers and apply the end rule.  Returns the first mismatch, True when
            the run is over, else False."""
            nonlocal model_out, dut_out, pending, end
            if (obs & mask) != pack(o):
                return self._field_mismatch(c, obs, pack(o))
            pay = o[pay_i]
            if obs >> chg or pay != model_out:
                dut_out, model_out = get_out(), pay
                if dut_out != pay:
                    m = self._mismatch(c, spec.wide_out, pay, dut_out)
                    m.detail = payload_detail(*design.out_layout(job["params"]), pay, dut_out)
                    return m
            side_valid = 0
            for i, (_, vi, pi, get_side, _, name, got) in enumerate(sides):
                if o[vi]:                          # valid (compared above): the payload too
                    side_valid = 1
                    d = get_side()
                    if d != o[pi]:
                        return self._mismatch(c, f"{name}.payload", o[pi], d)
                    if side_rr[i]:
                        got.append(d)
            if (expect is None and end is None and not pending and o[idle_i]
                    and not o[valid_i] and not side_valid):   # every beat sent earlier
                end = c + TAIL
            for s in ports:
                if s.valid and (s.ready is None or o[s.ready]):
                    s.src.transferred(c)
                    counts[s.bit] += 1
                    if counts[s.bit] == s.total:
                        pending -= 1
            if o[valid_i] and rr:
                counts[-1] += 1
                outputs.append(dut_out)          # as read from the DUT (equal to the model's)
            for i, n in event_i:
                if o[i]:
                    events.append((c, n, o[i]))
            b = o[busy_i]
            busy_hist[b] = busy_hist.get(b, 0) + 1
            if expect is not None and end is None and not pending and counts[-1] == expect:
                end = c + TAIL
            return end is not None and c >= end

        return drive, sample, check

    # --- reports ----------------------------------------------------------------------------
    def _decode(self, name: str, v: int):
        if name == "err":
            try:
                return f"{v} ({self.design.errors(v).name})"
            except ValueError:
                return v
        return v

    def _field_mismatch(self, c: int, obs: int, exp: int) -> Mismatch:
        for n, _, off, w in self.obs_fields:
            a, e = (obs >> off) & ((1 << w) - 1), (exp >> off) & ((1 << w) - 1)
            if a != e:
                return self._mismatch(c, n, self._decode(n, e), self._decode(n, a))
        raise AssertionError("unreachable: packed outputs differ but no field does")

    def in_flight(self) -> str:
        """Transfers so far and a summary of the model's state after the mismatching cycle
        (the model has already stepped it)."""
        parts = [f"{s.name} {n}/{s.total} sent"
                 for s, n in zip(self.ports, self.counts[:-1], strict=True)]
        parts.append(f"{self.design.output} {self.counts[-1]}"
                     + (f"/{self.expect}" if self.expect is not None else "") + " received")
        st = []
        for k, v in self.model.state().items():
            if k == "cycle" or k.endswith("payload"):
                continue
            if isinstance(v, (bool, int)):
                st.append(f"{k}={int(v)}")
            elif isinstance(v, (list, tuple)) and k in ("fifo", "ioq", "cq"):
                st.append(f"{k}: {len(v)} entries")
        return ", ".join(parts) + ("; model after the cycle: " + " ".join(st)[:220] if st else "")

    def _mismatch(self, c, signal, expected, actual) -> Mismatch:
        return Mismatch(c, signal, expected, actual, seed=self.seed,
                        in_flight=self.in_flight())

    # --- the loop ---------------------------------------------------------------------------
    async def run(self) -> dict:
        """Reset, then one wake per cycle: sample, step, check, drive.  Returns the result."""
        dut, job = self.dut, self.job
        # The clock toggles in the simulator (GPI clock), not in a Python coroutine.
        Clock(dut.clk, 10, unit="ns", impl="gpi").start()
        dut.rst.value = 1
        dut.ctl.value = 0
        for i in range(len(self.ports)):
            getattr(dut, f"in{i}").value = 0
        edge = FallingEdge(dut.clk)    # mid-cycle: registers settled, inputs not yet sampled
        for _ in range(RESET_EDGES):
            await edge
        set_rst = raw_handle(dut.rst).set_signal_val_int
        set_rst(DEPOSIT, 0)
        drive, sample, check = self.stages()
        step, reset, reset_at = self.model.step, self.model.reset, job["reset_at"]
        max_cycles = job["max_cycles"]
        c = 0
        args = drive(0)
        t0, cpu0 = time.perf_counter(), time.process_time()
        while True:
            await edge
            obs = sample()
            o = step(*args)
            if c == reset_at:
                reset()
                set_rst(DEPOSIT, 0)
            verdict = check(c, obs, o)
            if verdict:
                break
            c += 1
            if c >= max_cycles:
                verdict = self._mismatch(c, "timeout", f"done within {max_cycles} cycles",
                                         "still running")
                break
            args = drive(c)
        mismatch = verdict if isinstance(verdict, Mismatch) else None
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        cycles = c + 1
        width = dict(self.spec.obs)["busy"]
        busy = [sum(n for b, n in self.busy_hist.items() if (b >> i) & 1) for i in range(width)]
        return dict(ok=mismatch is None,
                    mismatch=None if mismatch is None else mismatch.to_dict(),
                    cycles=cycles, wall_s=wall, cpu_s=cpu,
                    cycles_per_s=cycles / wall if wall > 0 else 0.0,
                    outputs=self.outputs, events=self.events, busy_cycles=busy,
                    transfers={**{s.name: n for s, n in zip(self.ports, self.counts[:-1],
                                                            strict=True)},
                               self.design.output: self.counts[-1],
                               **{x.name: len(v) for x, v in zip(self.sides,
                                                                 self.side_outputs)}},
                    side_outputs={x.name: v for x, v in zip(self.sides, self.side_outputs)},
                    seed=self.seed, note=job.get("note", ""))


@cocotb.test()
async def lockstep(dut):
    """The cocotb test every lockstep build runs: the job in ``CIMPHONY_JOB``, its result
    (JSON) in ``job["out"]``."""
    with open(os.environ["CIMPHONY_JOB"], "rb") as f:
        job = pickle.load(f)
    res = await Lockstep(dut, DESIGNS[job["kind"]], job).run()
    with open(job["out"], "w") as f:
        json.dump(res, f)
    assert res["ok"], str(Mismatch.from_dict(res["mismatch"]))
