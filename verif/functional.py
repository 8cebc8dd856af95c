"""Functional coverage: crosses of command, error, dependency, bank kind, loop state and
backpressure bins, sampled from the golden models on the lockstep stimuli.

The lockstep runs hold the RTL equal to the golden model in every output of every cycle, so
the model's state on a stimulus is the RTL's; sampling the model (cheap, in Python) on the
stimuli of the coverage regressions (``verif/suite.py``) measures what those runs exercise.
A sampler wraps the model instance's one-cycle ``_step`` (every ``run`` drives the model
through it), reads the model's public ``state()`` / ``peek_*`` / ``check`` before the step
and the outputs after it.

A :class:`Cross` is a product of named axes; ``exclude`` rules (predicate, reason) remove
bins that cannot occur, each with its reason.  The report counts the remaining bins hit,
lists the missing ones, and lists excluded bins that were hit anyway (an exclusion that is
wrong: a failure).  ``functional.json`` holds one entry per cross.
"""
from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

from spec.isa import HostOp, HostOpExt, LoopMode, ModErr, Op, SM_HOST_OPS, host_op_valid
from spec.params import MacroErr

__all__ = ["Cross", "Coverage", "bank_kind", "MacroSampler", "ChannelSampler",
           "ModuleSampler", "BANK_KINDS"]

BANK_KINDS = ("dimc", "dram")
_DEP_KINDS = {"WR_INP": ("gbuf_war",), "WR_W": ("weight_war",),
              "MAC": ("gbuf_raw", "weight_raw", "obuf_war"), "RD_OUT": ("obuf_raw",)}
DEPS = ("none", "gbuf_raw", "gbuf_war", "weight_raw", "weight_war", "obuf_raw", "obuf_war")


def bank_kind(params) -> str:
    """``dimc`` or ``dram``: the bank kind of a channel's parameters (``bank_kind`` /
    ``kind`` attribute when the channel has one, else DIMC)."""
    for attr in ("bank_kind", "kind", "banks"):
        v = getattr(params, attr, None)
        if isinstance(v, str):
            return "dram" if "dram" in v.lower() else "dimc"
    return "dimc"


_BAD_ROW_RULE = (lambda d, f: d["err"] == "WR_BAD_ROW" and "bad_row" not in f,
                 "n_in is a power of two: the row field addresses exactly n_in rows")


def _bad_row_flag(n_in: int) -> set:
    return {"bad_row"} if n_in & (n_in - 1) else set()


class Cross:
    """Bins ``axes`` (name -> bin names), minus ``exclude`` [(predicate(bin, flags),
    reason)].  ``flags`` is the union over the configurations sampled into the cross of what
    they make reachable (e.g. ``bad_row`` for an n_in that is not a power of two): a bin that
    one configuration can reach is not excluded because another cannot."""

    def __init__(self, name: str, axes: dict, exclude=(), flags=()):
        self.name, self.axes, self.exclude = name, dict(axes), list(exclude)
        self.flags = set(flags)
        self.hits: Counter = Counter()

    def sample(self, **v) -> None:
        key = tuple(v[a] for a in self.axes)
        for a, b in zip(self.axes, key):
            if b not in self.axes[a]:
                raise ValueError(f"cross {self.name}: {a}={b!r} is not a bin "
                                 f"({', '.join(map(str, self.axes[a]))})")
        self.hits[key] += 1

    def _reason(self, key):
        d = dict(zip(self.axes, key))
        for pred, why in self.exclude:
            if pred(d, self.flags):
                return why
        return None

    def report(self) -> dict:
        bins, excluded, wrong, missing = 0, {}, [], []
        hit = 0
        for key in itertools.product(*self.axes.values()):
            why = self._reason(key)
            label = "/".join(map(str, key))
            if why is not None:
                excluded.setdefault(why, []).append(label)
                if self.hits[key]:
                    wrong.append(label)
                continue
            bins += 1
            if self.hits[key]:
                hit += 1
            else:
                missing.append(label)
        return {"axes": list(self.axes), "bins": bins, "hit": hit,
                "pct": round(100.0 * hit / bins, 2) if bins else None, "missing": missing,
                "excluded": {why: len(v) for why, v in excluded.items()},
                "excluded_bins": excluded, "excluded_but_hit": wrong,
                "samples": sum(self.hits.values())}

    def merge(self, other: Cross) -> None:
        self.hits.update(other.hits)
        self.flags |= other.flags


class Coverage:
    """A set of crosses by name; :meth:`report` / :meth:`write` give ``functional.json``."""

    def __init__(self):
        self.crosses: dict[str, Cross] = {}

    def add(self, cross: Cross) -> Cross:
        if cross.name in self.crosses:          # same cross from another run: merge hits
            self.crosses[cross.name].merge(cross)
            return self.crosses[cross.name]
        self.crosses[cross.name] = cross
        return cross

    def report(self) -> dict:
        reps = {n: c.report() for n, c in sorted(self.crosses.items())}
        bins = sum(r["bins"] for r in reps.values())
        hit = sum(r["hit"] for r in reps.values())
        return {"crosses": reps, "bins": bins, "hit": hit,
                "pct": round(100.0 * hit / bins, 2) if bins else None,
                "excluded_but_hit": {n: r["excluded_but_hit"] for n, r in reps.items()
                                     if r["excluded_but_hit"]}}

    def write(self, path: str | Path) -> dict:
        rep = self.report()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(rep, indent=1) + "\n")
        return rep


def _wrap(model, before, after):
    """Replace ``model._step`` by one calling ``before(inputs)`` -> ctx, the step, then
    ``after(ctx, inputs, outputs)``."""
    step = type(model)._step

    def wrapped(*inputs):
        ctx = before(inputs)
        out = step(model, *inputs)
        after(ctx, inputs, out)
        return out
    model._step = wrapped
    return model


# ---- macro -----------------------------------------------------------------------------
class MacroSampler:
    """``macro.write``: target (idle / other_set / active_set) x err; ``macro.request``:
    acc x issue (idle / back_to_back) x res (free / held)."""

    def __init__(self, cov: Coverage, params):
        self.p = params
        errs = tuple(e.name for e in MacroErr)
        ex = [_BAD_ROW_RULE,
              (lambda d, f: d["target"] == "active_set" and d["err"] == "NONE",
               "a write to the set being computed is always rejected (WR_HAZARD)"),
              (lambda d, f: d["target"] != "active_set" and d["err"] == "WR_HAZARD",
               "WR_HAZARD only for the set being computed")]
        self.write = cov.add(Cross("macro.write", {"target": ("idle", "other_set",
                                                              "active_set"), "err": errs}, ex,
                                   _bad_row_flag(params.n_in)))
        self.req = cov.add(Cross("macro.request", {"acc": (0, 1), "issue": (
            "idle", "back_to_back"), "res": ("free", "held")}))
        self._pending = None

    def attach(self, model):
        from spec.params import req_fields, wr_fields
        wf, rf = wr_fields(self.p), req_fields(self.p)
        so, sm = wf["set"].offset, (1 << wf["set"].width) - 1
        ao = rf["acc"].offset

        def before(inp):
            st = model.state()
            return st["busy"], st["cur_set"], st["k"], st["res_valid"]

        def after(ctx, inp, out):
            busy, cur, k, rvalid = ctx
            wv, wp, rv, rp, rr = inp
            if self._pending is not None:
                self.write.sample(target=self._pending, err=MacroErr(out.err).name)
                self._pending = None
            if wv:
                s = (wp >> so) & sm
                self._pending = "idle" if not busy else ("active_set" if s == cur
                                                         else "other_set")
            if rv and out.req_ready:
                self.req.sample(acc=(rp >> ao) & 1, issue="back_to_back" if busy else "idle",
                                res="held" if rvalid and not rr else "free")
        return _wrap(model, before, after)


# ---- channel ---------------------------------------------------------------------------
class ChannelSampler:
    """``channel.command``: op x dependency kind x policy x bank kind (each valid dependency
    slot of an enqueued command, or ``none``); ``channel.wait``: queue x why its head waits
    x policy x bank kind (a DRAM head also waits for the back-end's timing rules,
    ``dram_timing``); ``channel.backpressure``: cmd x out (stalled / free) x bank kind per
    active cycle; ``channel.wr_w``: the MacroErr of each issued WR_W (DIMC banks: a DRAM
    channel's ``err`` reports back-end design errors, no MacroErr)."""

    def __init__(self, cov: Coverage, params):
        self.p = params
        pol = ("dcs", "inorder")
        self.cmd = cov.add(Cross("channel.command", {
            "op": tuple(o.name for o in Op), "dep": DEPS, "policy": pol,
            "bank": BANK_KINDS}, [
            (lambda d, f: d["dep"] != "none" and d["dep"] not in _DEP_KINDS[d["op"]],
             "the dependency table has no such slot for this opcode (docs/channel.md)"),
            (lambda d, f: d["bank"] == "dram" and "dram" not in f,
             "no DRAM channel sampled"),
            (lambda d, f: d["bank"] == "dimc" and "dimc" not in f,
             "no DIMC channel sampled")],
            {bank_kind(params)}))
        self.wait = cov.add(Cross("channel.wait", {
            "queue": ("io", "compute"),
            "why": ("dep", "inorder", "bank_busy", "out_busy", "dram_timing"),
            "policy": pol, "bank": BANK_KINDS}, [
            (lambda d, f: d["bank"] == "dram" and "dram" not in f,
             "no DRAM channel sampled"),
            (lambda d, f: d["bank"] == "dimc" and "dimc" not in f,
             "no DIMC channel sampled"),
            (lambda d, f: d["why"] == "inorder" and d["policy"] == "dcs",
             "DCS issues out of order: no in-order rule"),
            (lambda d, f: d["why"] == "bank_busy" and d["policy"] == "inorder",
             "in order a command issues only when nothing is in flight: the bank is idle"),
            (lambda d, f: d["why"] == "bank_busy" and d["bank"] == "dram",
             "a DRAM bank's readiness is the back-end's timing rules: dram_timing"),
            (lambda d, f: d["why"] == "dram_timing" and d["bank"] == "dimc",
             "DIMC banks have no DRAM timing rules"),
            (lambda d, f: d["queue"] == "io" and d["why"] == "bank_busy",
             "only MACs (compute queue) wait for a bank"),
            (lambda d, f: d["queue"] == "compute" and d["why"] == "out_busy",
             "only RD_OUT (I/O queue) waits for the out register")],
            {bank_kind(params)}))
        self.bp = cov.add(Cross("channel.backpressure", {
            "cmd": ("free", "stalled"), "out": ("free", "stalled"), "bank": BANK_KINDS}, [
            (lambda d, f: d["bank"] not in f, "no channel of this bank kind sampled")],
            {bank_kind(params)}))
        ex = [_BAD_ROW_RULE,
              (lambda d, f: d["err"] == "WR_HAZARD",
               "a WR_W waits (weight WAR dependency; in order: the drain) until the MACs on "
               "its set are done, so it never hits the set being computed")]
        ex.insert(0, (lambda d, f: "dimc" not in f, "only DIMC channels sampled (a DRAM "
                      "channel's err is no MacroErr)"))
        self.wrw = cov.add(Cross("channel.wr_w", {"err": tuple(e.name for e in MacroErr)},
                                 ex, _bad_row_flag(params.macro.n_in) | {bank_kind(params)}))
        self.policy = "dcs" if params.dcs else "inorder"
        self.bank = bank_kind(params)
        self._wrw_pending = 0

    def _why(self, model, e, out_valid, out_ready, done):
        if any(v and not done[s] for v, s in e["deps"]):
            return "dep"
        if self.bank == "dram":
            return self._why_dram(model, e, out_valid, out_ready)
        if not self.p.dcs and (e["seq"] != model.state()["iss"] or model.state()["inflight"]):
            return "inorder"
        if e["op"] == int(Op.MAC):
            banks = range(self.p.n_banks) if e.get("ab") else (e["bank"],)
            if not all(model.macros[b].peek_req_ready(1) for b in banks):
                return "bank_busy"
        if e["op"] == int(Op.RD_OUT) and out_valid and not out_ready:
            return "out_busy"
        return None

    def _why_dram(self, model, e, out_valid, out_ready):
        """The wait reason of a DRAM channel's head (the model's ``_ready`` rules, in its
        order): in order, anything pending; then the back-end's resource rules
        (``out_busy`` when only the out register stops a RD_OUT)."""
        be = model.backend
        if not self.p.dcs and (e["seq"] != model.state()["iss"] or be.n_pending
                               or any(model.state()["macq"])):
            return "inorder"
        raw = next(q[0] for q in (model._ioq, model._cq) if q and q[0][8] == e["seq"])
        if e["op"] == int(Op.MAC):
            return None if be.can_mac(raw) else "dram_timing"
        out_free = not out_valid or bool(out_ready)
        if be.can_io(raw, out_free):
            return None
        if e["op"] == int(Op.RD_OUT) and not out_free and be.can_io(raw, True):
            return "out_busy"
        return "dram_timing"

    def attach(self, model):
        pol = self.policy

        def before(inp):
            cv, cp, rr = inp
            st = model.state()
            for qname, key in (("io", "ioq"), ("compute", "cq")):
                if st[key]:
                    why = self._why(model, st[key][0], st["out_valid"], rr, st["done"])
                    if why:
                        self.wait.sample(queue=qname, why=why, policy=pol, bank=self.bank)
            io = st["ioq"][0] if st["ioq"] else None
            issue_wrw = io is not None and io["op"] == int(Op.WR_W) and \
                self._why(model, io, st["out_valid"], rr, st["done"]) is None
            return st["nseq"], issue_wrw

        def after(ctx, inp, out):
            nseq, issue_wrw = ctx
            cv, cp, rr = inp
            if self._wrw_pending:
                self.wrw.sample(err=MacroErr(out.err).name if out.err else "NONE")
            self._wrw_pending = issue_wrw and self.bank == "dimc"   # DRAM: err is no MacroErr
            if cv or out.out_valid:
                self.bp.sample(cmd="stalled" if cv and not out.cmd_ready else "free",
                               out="stalled" if out.out_valid and not rr else "free",
                               bank=self.bank)
            if cv and out.cmd_ready:
                st = model.state()
                ent = next(e for e in reversed(st["ioq"] + st["cq"]) if e["seq"] == nseq)
                op = Op(ent["op"]).name
                deps = [_DEP_KINDS[op][i] for i, (v, _) in enumerate(ent["deps"]) if v]
                for d in deps or ["none"]:
                    self.cmd.sample(op=op, dep=d, policy=pol, bank=self.bank)
        return _wrap(model, before, after)


# ---- module ----------------------------------------------------------------------------
def _module_rules(p):
    pt_ops = {"WR_W", "MAC", "RD_OUT", "UNMAP", "MAC_AB", "RD_SM"}
    replay_ok = {"NOP", "WR_INP", "WR_W", "MAC", "RD_OUT", "MAC_AB", "RD_SM", "WR_PROB"}
    rules = [
        (lambda d, f: d["loop"] == "CAPTURE" and d["err"] != "NONE",
         "a captured command is copied into the loop buffer unchecked"),
        (lambda d, f: d["op"] == "BAD" and d["err"] != "BAD_OPCODE"
         and d["loop"] != "CAPTURE",
         "check 1 (BAD_OPCODE) rejects an invalid opcode first"),
        (lambda d, f: d["err"] == "BAD_OPCODE" and d["op"] != "BAD",
         "BAD_OPCODE only for opcodes that do not exist (spec.isa.host_op_valid)"),
        (lambda d, f: d["loop"] == "REPLAY" and d["op"] not in replay_ok | {"BAD"}
         and d["err"] != "BAD_FIELD",
         "a non-channel op in a loop body is always BAD_FIELD (check 2)"),
        (lambda d, f: d["err"] in ("UNMAPPED", "NOT_OWNER") and d["op"] not in pt_ops,
         "only ops that read the page table see UNMAPPED / NOT_OWNER"),
        (lambda d, f: d["err"] == "ALREADY_MAPPED" and d["op"] != "MAP", "only MAP"),
        (lambda d, f: d["err"] == "NOT_STRIPE" and d["op"] != "MAC_AB", "only MAC_AB"),
        (lambda d, f: d["err"] == "BAD_FIELD" and d["op"] in ("NOP", "BARRIER", "SM_ABORT")
         and d["loop"] != "REPLAY", "no fields to be out of range"),
        (lambda d, f: d["err"] == "BAD_FIELD" and d["op"] == "NOP", "NOP is legal in a loop body"),
        (lambda d, f: d["err"] == "QUEUE_FULL", "QUEUE_FULL is a dropped push (module.flow)"),
    ]
    rules.insert(0, (lambda d, f: d["op"] == "MAC_AB" and "all_bank" not in f,
                     "MAC_AB needs channel.all_bank"))
    sm_ops = {o.name for o in SM_HOST_OPS}
    rules.insert(0, (lambda d, f: d["op"] in sm_ops and "softmax" not in f,
                     "the softmax opcodes need ModuleParams.softmax"))
    return rules


class ModuleSampler:
    """``module.command``: host op x error x loop state of each consumed command;
    ``module.flow``: per cycle, each backpressure event (out stall, dropped push, held push,
    dispatch wait for a channel, barrier wait); its channels' crosses too."""

    def __init__(self, cov: Coverage, params):
        self.p = params
        sm = getattr(params, "softmax", False)
        # the softmax ops are bins of every module (excluded without softmax), so that runs
        # with and without it merge into one cross
        ops = (tuple(o.name for o in HostOp) + ("MAC_AB",)
               + tuple(o.name for o in SM_HOST_OPS) + ("BAD",))
        feats = ({"all_bank"} if params.channel.all_bank else set()) | ({"softmax"} if sm
                                                                         else set())
        self.cmd = cov.add(Cross("module.command", {
            "op": ops, "err": tuple(e.name for e in ModErr), "loop": tuple(
                m.name for m in LoopMode)}, _module_rules(params), feats))
        ex = [(lambda d, f: d["event"] == "queue_full_drop" and "host_ready" in f
               and "no_host_ready" not in f, "with host_ready nothing is dropped"),
              (lambda d, f: d["event"] == "host_held" and "host_ready" not in f,
               "without host_ready the port has no ready")]
        self.flow = cov.add(Cross("module.flow", {"event": (
            "out_stall", "queue_full_drop", "host_held", "dispatch_wait", "barrier_wait")},
            ex, {"host_ready" if params.host_ready else "no_host_ready"}))
        self.chan = [ChannelSampler(cov, params.channel) for _ in range(params.n_ch)]

    def _op(self, op):
        """The op's bin: "BAD" if it does not exist on this module (``host_op_valid``: e.g.
        10 without all_bank, also with softmax), else its name (HostOpExt above 9)."""
        if not host_op_valid(self.p, op):
            return "BAD"
        return HostOp(op).name if op < len(HostOp) else HostOpExt(op).name

    def attach(self, model):
        for s, ch in zip(self.chan, model.channels):
            s.attach(ch)

        def before(inp):
            st = model.state()
            mode, lp = LoopMode(st["loop"]["mode"]), st["loop"]
            head = None
            if mode == LoopMode.CAPTURE:
                if st["fifo"]:
                    head = (self._op(model.fields(st["fifo"][0])["op"]), "NONE", None)
            else:
                f = None
                if mode == LoopMode.REPLAY:
                    f = model.fields(st["lbuf"][lp["idx"]])
                    f["vp"] += lp["vp_off"]
                    f["o"] += lp["o_off"]
                elif st["fifo"]:
                    f = model.fields(st["fifo"][0])
                if f is not None:
                    code = model.check(f, mode == LoopMode.REPLAY)
                    head = (self._op(f["op"]), ModErr(code).name, f)
            return model.consumed, mode.name, head, st["out_valid"]

        def after(ctx, inp, out):
            consumed, mode, head, ov = ctx
            hv, hc, rr = inp[:3]            # (sm_ready follows with softmax)
            if model.consumed != consumed and head is not None:
                self.cmd.sample(op=head[0], err=head[1], loop=mode)
            elif head is not None and head[1] == "NONE" and mode != "CAPTURE":
                self.flow.sample(event="barrier_wait" if head[0] == "BARRIER"
                                 else "dispatch_wait")
            if ov and not rr:
                self.flow.sample(event="out_stall")
            if out.ovf:
                self.flow.sample(event="queue_full_drop")
            if hv and not out.host_ready:
                self.flow.sample(event="host_held")
        return _wrap(model, before, after)
