"""System-level performance experiments (``make perf``): PIMphony's techniques on LLM-7B/72B at
4K..1M tokens, on the DIMC back-end and on a GDDR6-AiM DRAM-PIM back-end.

For every (back-end, model, context, configuration) point: the batch that fits the system's
capacity under the configuration's allocation, request lengths drawn from the long-context
benchmark statistics (ANCHORS.md), one decode step compiled (compiler/llm.py) and simulated on the
timing model (perf/sim.py, calibrated exactly against the golden model and the RTL).

Configurations (PIMphony's ablation): baseline = HFP + in-order + static (CENT-like PIM-only);
+TCP, +DCS, +DPA (each alone on the baseline); all = TCP + DCS + DPA.

Writes build/perf/{results.json, report.md, speedup_vs_context.png, utilisation_vs_context.png,
energy_breakdown.png} and prints a summary table.  ``python -m bench.perf --help``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from compiler import llm as L
from perf.energy import CONSTANTS, step_energy
from perf.program import Rep
from perf.sim import simulate

CONTEXTS = (4096, 16384, 32768, 131072, 1 << 20)
MODELS = ("qwen1.5-7b", "llama-3.1-8b", "qwen1.5-72b", "llama-3.1-70b")
DEFAULT_MODELS = ("llama-3.1-8b", "llama-3.1-70b")     # LLM-7B and LLM-72B, both with GQA
BACKENDS = ("aim", "dimc")
CONFIGS = {                      # name: (partition, dcs, alloc)
    "baseline": ("HFP", False, "static"),
    "+TCP": ("TCP", False, "static"),
    "+DCS": ("HFP", True, "static"),
    "+DPA": ("HFP", False, "dpa"),
    "all": ("TCP", True, "dpa"),
}
CLASS = {"qwen1.5-7b": "LLM-7B", "llama-3.1-8b": "LLM-7B", "qwen1.5-72b": "LLM-72B",
         "llama-3.1-70b": "LLM-72B"}
PIMPHONY = {   # published figures (ANCHORS.md); "(secondary)" = seen only in summaries
    "speedup_pim_only_max": 11.3,
    "speedup_1m_pim_only": 46.6,          # (secondary)
    "baseline_mac_util_hd128": 0.147,
    "baseline_util_drop_4k_to_32k": 0.48,
    "baseline_util_1m": 0.02,             # (secondary)
    "capacity_static": 0.362,
    "capacity_dpa": 0.756,                # (secondary)
}


def timing_items(plan):
    """The program simulated for the step's cycles.  HFP rotates its units' channels from layer
    to layer of a group (plan.variants): every variant is layer 0 with the attention phases on
    permuted channels, each phase behind a BARRIER.  With a hub port per channel (out_ports =
    n_ch) the channels are interchangeable except where a layer's first commands meet the
    previous layer's last ones, so the step is simulated as layer 0 repeated (extrapolated
    layer by layer instead of simulating every layer of a group): the only approximation of
    make perf, within 0.5% on the systems tests/test_perfsim.py checks (2 cycles in 2464)."""
    sp = plan.system.sim
    if plan.layers > 1 and plan.variants and len(plan.variants) > 1 and sp.out_ports >= sp.n_ch:
        st = plan.layer_sets
        return [Rep((tuple(plan.layer),), plan.layers, "layers", set_stride=st,
                    vp_stride=st * sp.n_banks)]
    return plan.step


def system_for(backend: str, cfg, dcs: bool, out_ports: int | None):
    s = (L.aim_system if backend == "aim" else L.dimc_system)(cfg)
    sp = s.sim.with_(dcs=dcs, out_ports=out_ports or s.sim.n_ch)
    return L.System(sp, s.n_modules, s.tp, s.pp, s.name)


def run_point(backend: str, model: str, ctx: int, conf: str, seed: int, batch_cap: int,
              out_ports: int | None) -> dict:
    """One experiment point (runs in a worker process)."""
    part, dcs, alloc = CONFIGS[conf]
    cfg = L.load_config(model)
    system = system_for(backend, cfg, dcs, out_ports)
    sp = system.sim
    row = dict(backend=backend, model=model, cls=CLASS[model], ctx=ctx, config=conf,
               partition=part, dcs=dcs, alloc=alloc, seed=seed, n_modules=system.n_modules,
               tp=system.tp, pp=system.pp)
    t0 = time.time()
    fit = L.max_batch(cfg, system, ctx, alloc=alloc, partition=part, seed=seed)
    row["batch_fit"] = fit
    if fit == 0:
        row.update(status="does not fit", sim_s=time.time() - t0)
        return row
    batch = min(fit, batch_cap)
    contexts = L.request_mix(ctx, batch, seed)
    plan = L.compile_step(cfg, system, contexts, part, alloc, max_context=ctx)
    t1 = time.time()
    res = simulate(sp, timing_items(plan))
    t2 = time.time()
    stage_s = res.time_s
    latency = stage_s * plan.stages              # one token passes every pipeline stage
    useful_stage = plan.useful_macs / plan.stages / system.tp     # per module of a stage
    peak = sp.peak_macs_per_cycle * sp.clock_ghz * 1e9             # MAC/s of one module
    energy = step_energy(sp, res.stats, scale=system.n_modules)
    row.update(
        status="ok", batch=batch, contexts_mean=sum(contexts) / batch,
        contexts_max=max(contexts),
        stage_cycles=res.t_end, latency_s=latency, throughput_tok_s=batch / latency,
        mac_util=res.mac_util, channel_util=res.channel_util,
        roofline_frac=useful_stage / (peak * stage_s),
        capacity_util=plan.capacity["utilisation"],
        useful_macs=plan.useful_macs, pim_macs=plan.pim_macs,
        energy_j_per_token={k: v / batch for k, v in energy.items()},
        host_cmds_per_stage=res.stats["host_cmds"], n_leaves=plan.n_leaves,
        compile_s=t1 - t0, sim_s=t2 - t1, sim_cycles=res.sim_cycles,
        closed_form_iterations=sum(n for _, n, _ in res.skipped))
    return row


def run_all(backends, models, contexts, configs, seed, batch_cap, jobs, out_ports):
    pts = [(b, m, c, k) for b in backends for m in models for c in contexts for k in configs]
    rows = []
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(pts), desc="perf points", unit="pt", file=sys.stderr)
    except ImportError:                                      # pragma: no cover
        bar = None
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        futs = {ex.submit(run_point, b, m, c, k, seed, batch_cap, out_ports): (b, m, c, k)
                for b, m, c, k in pts}
        for f in as_completed(futs):
            try:
                rows.append(f.result())
            except Exception as e:                           # a point that cannot be built
                b, m, c, k = futs[f]
                rows.append(dict(backend=b, model=m, cls=CLASS[m], ctx=c, config=k,
                                 status=f"error: {e}"))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    order = {k: i for i, k in enumerate(CONFIGS)}
    rows.sort(key=lambda r: (r["backend"], MODELS.index(r["model"]), r["ctx"],
                             order[r["config"]]))
    return rows


# ---------------------------------------------------------------------------------------------
def _ok(r):
    return r.get("status") == "ok"


def add_speedups(rows):
    base = {(r["backend"], r["model"], r["ctx"]): r for r in rows
            if r["config"] == "baseline" and _ok(r)}
    for r in rows:
        b = base.get((r["backend"], r["model"], r["ctx"]))
        if _ok(r) and b:
            r["speedup_throughput"] = r["throughput_tok_s"] / b["throughput_tok_s"]
            r["speedup_latency"] = b["latency_s"] / r["latency_s"]


def fmt_ctx(c):
    return f"{c >> 20}M" if c >= 1 << 20 else f"{c >> 10}K"


def summary_table(rows) -> str:
    hdr = ("| back-end | model | context | config | batch (fit) | latency ms/token | tokens/s | "
           "speedup (tput) | speedup (lat) | MAC util | roofline | channel util | "
           "capacity util | energy mJ/token | sim s |")
    out = [hdr, "|" + "---|" * 15]
    for r in rows:
        if not _ok(r):
            out.append(f"| {r['backend']} | {r['model']} | {fmt_ctx(r['ctx'])} | {r['config']} "
                       f"| {r.get('status')} |" + " |" * 10)
            continue
        out.append(
            f"| {r['backend']} | {r['model']} | {fmt_ctx(r['ctx'])} | {r['config']} | "
            f"{r['batch']} ({r['batch_fit']}) | {r['latency_s'] * 1e3:.3f} | {r['throughput_tok_s']:.1f} | "
            f"{r.get('speedup_throughput', float('nan')):.2f}x | "
            f"{r.get('speedup_latency', float('nan')):.2f}x | {r['mac_util']:.3f} | "
            f"{r['roofline_frac']:.3f} | {r['channel_util']:.3f} | {r['capacity_util']:.3f} | "
            f"{r['energy_j_per_token']['total'] * 1e3:.2f} | {r['sim_s']:.1f} |")
    return "\n".join(out)


def plots(rows, outdir: Path):
    """Three PNGs, one panel per (back-end, model): speedup and utilisation vs context, and
    the energy breakdown at the longest context."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    combos = sorted({(r["backend"], r["model"]) for r in rows},
                    key=lambda x: (x[0], MODELS.index(x[1])))

    def sel(b, m, conf=None):
        return [r for r in rows if r["backend"] == b and r["model"] == m and _ok(r)
                and conf in (None, r["config"])]

    def figure(name, height, draw):
        n = len(combos)
        fig, axs = plt.subplots(1, n, figsize=(4 * n, height), squeeze=False)
        for ax, (b, m) in zip(axs[0], combos):
            ax.set_title(f"{b}: {m}", fontsize=9)
            draw(ax, b, m)
        fig.tight_layout()
        f = outdir / name
        fig.savefig(f, dpi=110)
        plt.close(fig)
        return f

    def speedup(ax, b, m):
        for conf in list(CONFIGS)[1:]:
            pts = [(r["ctx"], r["speedup_throughput"]) for r in sel(b, m, conf)
                   if "speedup_throughput" in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=conf)
        ax.axhline(PIMPHONY["speedup_pim_only_max"], ls="--", c="gray", lw=0.8,
                   label="PIMphony 11.3x")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("throughput speedup vs baseline")
        ax.legend(fontsize=7)

    def utilisation(ax, b, m):
        for conf, style in (("baseline", "--"), ("all", "-")):
            rs = sel(b, m, conf)
            x = [r["ctx"] for r in rs]
            for key, mk, what in (("mac_util", "o", "MAC"), ("capacity_util", "s", "capacity"),
                                  ("channel_util", "^", "channel")):
                if rs:
                    ax.plot(x, [r[key] for r in rs], style, marker=mk, label=f"{conf} {what}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("utilisation")
        ax.legend(fontsize=6)

    def energy(ax, b, m):
        rs = sel(b, m)
        if not rs:
            return
        ctx = max(r["ctx"] for r in rs)
        rs = [r for r in rs if r["ctx"] == ctx]
        bottom = [0.0] * len(rs)
        for comp in (k for k in rs[0]["energy_j_per_token"] if k != "total"):
            v = [r["energy_j_per_token"].get(comp, 0.0) * 1e3 for r in rs]
            ax.bar([r["config"] for r in rs], v, bottom=bottom, label=comp)
            bottom = [a + c for a, c in zip(bottom, v)]
        ax.set_title(f"{b}: {m} @ {fmt_ctx(ctx)}", fontsize=9)
        ax.set_ylabel("mJ per token")
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=5)

    return [figure("speedup_vs_context.png", 3.6, speedup),
            figure("utilisation_vs_context.png", 3.6, utilisation),
            figure("energy_breakdown.png", 3.8, energy)]


def pimphony_rows(rows) -> list[dict]:
    """Our DRAM-PIM (aim) numbers next to each published PIMphony figure."""
    aim = [r for r in rows if r["backend"] == "aim" and _ok(r)]
    out = []

    def get(model, ctx, conf, key):
        for r in aim:
            if r["model"] == model and r["ctx"] == ctx and r["config"] == conf:
                return r.get(key)
        return None
    sp = [r["speedup_throughput"] for r in aim if r["config"] == "all"
          and "speedup_throughput" in r]
    out.append(dict(metric="max throughput speedup, all vs baseline (PIM-only)",
                    pimphony=PIMPHONY["speedup_pim_only_max"], ours=max(sp) if sp else None))
    for m in sorted({r["model"] for r in aim}, key=MODELS.index):
        u4, u32 = get(m, 4096, "baseline", "mac_util"), get(m, 32768, "baseline", "mac_util")
        out.append(dict(metric=f"{m}: baseline MAC utilisation at 4K (head dim 128)",
                        pimphony=PIMPHONY["baseline_mac_util_hd128"], ours=u4))
        if u4 and u32:
            out.append(dict(metric=f"{m}: baseline MAC utilisation drop 4K -> 32K",
                            pimphony=PIMPHONY["baseline_util_drop_4k_to_32k"],
                            ours=1 - u32 / u4))
        u1m = get(m, 1 << 20, "baseline", "mac_util")
        out.append(dict(metric=f"{m}: baseline MAC utilisation at 1M (secondary)",
                        pimphony=PIMPHONY["baseline_util_1m"], ours=u1m))
        s1m = get(m, 1 << 20, "all", "speedup_throughput")
        out.append(dict(metric=f"{m}: all vs baseline at 1M (secondary)",
                        pimphony=PIMPHONY["speedup_1m_pim_only"], ours=s1m))
        cs = [get(m, c, "baseline", "capacity_util") for c in CONTEXTS]
        cd = [get(m, c, "all", "capacity_util") for c in CONTEXTS]
        cs, cd = [x for x in cs if x], [x for x in cd if x]
        if cs:
            out.append(dict(metric=f"{m}: capacity utilisation, static (mean over contexts)",
                            pimphony=PIMPHONY["capacity_static"], ours=sum(cs) / len(cs)))
        if cd:
            out.append(dict(metric=f"{m}: capacity utilisation, DPA (mean over contexts)",
                            pimphony=PIMPHONY["capacity_dpa"], ours=sum(cd) / len(cd)))
    return out


def report(rows, meta, outdir: Path, files) -> str:
    lines = ["# cimphony performance model: PIMphony techniques at 7B/72B, 4K to 1M tokens", ""]
    lines.append(f"Generated by `make perf` in {meta['wall_s']:.0f} s on {meta['jobs']} "
                 f"worker(s); seed {meta['seed']}; batch capped at {meta['batch_cap']}.")
    lines.append("")
    lines.append("Timing model: perf/sim.py (exact against the golden model and the RTL on "
                 "small configurations, tests/test_perfsim.py). Programs: compiler/llm.py.")
    lines.append("")
    lines.append("## Systems")
    for b in meta["backends"]:
        lines.append(f"* **{b}**: {meta['systems'][b]}")
    lines.append("")
    lines.append("## Energy constants (ANCHORS.md)")
    for k, c in CONSTANTS.items():
        lines.append(f"* `{k}` = {c.value:.3g} {c.unit} ({c.source})")
    lines.append("")
    lines.append("## PIMphony's published figures vs our DRAM-PIM (AiM) back-end")
    lines.append("")
    lines.append("| metric | PIMphony | ours (aim) |")
    lines.append("|---|---:|---:|")
    for p in pimphony_rows(rows):
        ours = "n/a" if p["ours"] is None else f"{p['ours']:.3f}"
        lines.append(f"| {p['metric']} | {p['pimphony']:.3f} | {ours} |")
    lines.append("")
    lines.append("## Goal: all three techniques >= 11.3x over the baseline at the longest contexts")
    lines.append("")
    lines.append("| back-end | model | longest context with a baseline | all vs baseline "
                 "(throughput) | (latency) |")
    lines.append("|---|---|---|---:|---:|")
    for b in meta["backends"]:
        for m in meta["models"]:
            sel = [r for r in rows if r["backend"] == b and r["model"] == m
                   and r["config"] == "all" and "speedup_throughput" in r]
            if sel:
                r = max(sel, key=lambda r: r["ctx"])
                lines.append(f"| {b} | {m} | {fmt_ctx(r['ctx'])} | "
                             f"{r['speedup_throughput']:.2f}x | {r['speedup_latency']:.2f}x |")
    lines.append("")
    lines.append("## All points")
    lines.append("")
    lines.append(summary_table(rows))
    lines.append("")
    lines.append("## Plots")
    for f in files:
        lines.append(f"![{f.stem}]({f.name})")
    lines.append("")
    notes = Path(__file__).with_name("perf_notes.md")
    if notes.exists():
        lines.append(notes.read_text())
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/perf")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=MODELS,
                    help="default: Llama-3.1-8B (LLM-7B) and Llama-3.1-70B (LLM-72B); the Qwen1.5 "
                         "models have no GQA (4-8x the KV cache) and take much longer")
    ap.add_argument("--contexts", nargs="+", type=int, default=list(CONTEXTS))
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "1")))
    ap.add_argument("--batch-cap", type=int, default=4,
                    help="requests simulated per point at most (the fit is reported too)")
    ap.add_argument("--out-ports", type=int, default=None,
                    help="result beats the hub takes per cycle (default: one per channel)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", "2")))
    a = ap.parse_args(argv)
    if "baseline" not in a.configs:
        a.configs = ["baseline"] + a.configs
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows = run_all(a.backends, a.models, a.contexts, a.configs, a.seed, a.batch_cap, a.jobs,
                   a.out_ports)
    add_speedups(rows)
    wall = time.time() - t0
    systems = {}
    for b in a.backends:
        cfg = L.load_config(a.models[0])
        s = system_for(b, cfg, True, a.out_ports)
        sp = s.sim
        systems[b] = (f"{sp.n_ch} channels x {sp.n_banks} banks per module, page {sp.n_in}x"
                      f"{sp.n_out} x {sp.w_bits} bit, {sp.n_sets} pages per bank, "
                      f"{sp.capacity_bytes / 2**30:.0f} GiB per module, {sp.clock_ghz} GHz, "
                      f"GBuf {sp.n_gbuf} entries, OBuf {sp.n_acc} per bank, queues {sp.q_depth}, "
                      f"host FIFO {sp.fifo_depth}, hub out ports {sp.out_ports}; "
                      f"{a.models[0]}: {s.n_modules} modules (tp {s.tp}, pp {s.pp})")
    meta = dict(wall_s=wall, jobs=a.jobs, seed=a.seed, batch_cap=a.batch_cap,
                backends=a.backends, models=a.models, contexts=a.contexts, configs=a.configs,
                systems=systems, constants={k: c.__dict__ for k, c in CONSTANTS.items()})
    files = plots(rows, outdir)
    (outdir / "results.json").write_text(json.dumps(dict(meta=meta, rows=rows,
                                                         pimphony=pimphony_rows(rows)),
                                                    indent=1, default=float))
    (outdir / "report.md").write_text(report(rows, meta, outdir, files))
    # terminal summary: all vs baseline per (back-end, model, context)
    print()
    print(f"{'back-end':8} {'model':14} {'ctx':>5} {'batch b/a':>10} {'speedup':>8} "
          f"{'MACu base':>9} {'MACu all':>9} {'roof all':>8} {'cap b/a':>11} {'mJ/tok all':>10}")
    for b in a.backends:
        for m in a.models:
            for c in a.contexts:
                rb = next((r for r in rows if (r["backend"], r["model"], r["ctx"],
                                               r["config"]) == (b, m, c, "baseline")), None)
                ra = next((r for r in rows if (r["backend"], r["model"], r["ctx"],
                                               r["config"]) == (b, m, c, "all")), None)
                if not ra or not _ok(ra):
                    print(f"{b:8} {m:14} {fmt_ctx(c):>5}  all: {ra and ra.get('status')}")
                    continue
                ok_b = rb is not None and _ok(rb)
                print(f"{b:8} {m:14} {fmt_ctx(c):>5} "
                      f"{(rb['batch'] if ok_b else 0):>4}/{ra['batch']:<5} "
                      f"{ra.get('speedup_throughput', math.nan):>7.2f}x "
                      f"{(rb['mac_util'] if ok_b else math.nan):>9.3f} {ra['mac_util']:>9.3f} "
                      f"{ra['roofline_frac']:>8.3f} "
                      f"{(rb['capacity_util'] if ok_b else math.nan):>5.2f}/"
                      f"{ra['capacity_util']:<5.2f} "
                      f"{ra['energy_j_per_token']['total'] * 1e3:>10.2f}")
    print(f"\nwrote {outdir}/report.md, results.json and {len(files)} plots "
          f"({wall:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
