"""Plots of the ``cimphony perf`` report: speedup, throughput and utilisation against context,
and the energy per token split into static and dynamic components.  Panels in a fixed order
(models as given, systems as :data:`perf.presets.SYSTEMS`), context axes labelled 4K, 32K, 1M."""
from __future__ import annotations

from pathlib import Path

from perf.grid import fmt_ctx
from perf.presets import LABEL, POLICIES
from perf.tables import GOAL, ok

__all__ = ["plots", "CATEGORIES", "category"]

#: energy categories, bottom to top (static first, hatched)
CATEGORIES = ("static: DRAM standby", "static: DRAM refresh", "MAC", "ACT/PRE",
              "I/O (DQ pins, array bursts)", "SRAM writes (weights/KV)", "buffers (SRAM)",
              "controller", "link")
_RULES = (("standby", 0), ("refresh", 1), ("column MAC", 2), ("MAC (", 2), ("ACT/PRE", 3),
          ("write", 5), ("GBuf", 6), ("controller", 7), ("link", 8), ("I/O", 4),
          ("bursts", 4))
_SERIES = (("aim", "baseline"), ("aim", "tcp"), ("aim", "dcs"), ("aim", "dpa"),
           ("pimphony", "all"), ("dimc", "all"), ("hybrid", "all"), ("dimc-whatif", "all"),
           ("aim", "baseline_1bank"), ("aim", "all_1bank"))


def category(component: str) -> str:
    """The :data:`CATEGORIES` entry of an energy component name."""
    for word, i in _RULES:
        if word in component:
            return CATEGORIES[i]
    raise ValueError(f"category: component={component!r} has no category")


def _name(s, p):
    return f"{s} ({p})" if s == "aim" else s


def _log_y(ax, suffix=""):
    """Log y axis with plain tick labels (3x, 10x, 300), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{suffix}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _ctx_axis(ax, contexts):
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(contexts))
    ax.set_xticklabels([fmt_ctx(c).replace("mix ", "mix\n") for c in contexts], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("context (tokens)")


def plots(rows, outdir: Path, models=None, contexts=None) -> list[Path]:
    """Write the report's PNGs into ``outdir``; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    good = [r for r in rows if ok(r)]
    models = list(models or dict.fromkeys(r["model"] for r in good))
    contexts = sorted(contexts or {r["ctx"] for r in good})
    if not models or not contexts:
        return []

    def sel(m, s, p):
        return sorted((r for r in good if (r["model"], r["system"], r["policy"]) == (m, s, p)),
                      key=lambda r: r["ctx"])

    def figure(name, nrows, draw, height=3.4, legend_right=False):
        lw = 3.4 if legend_right else 0.0                 # inches kept for the legend
        width = 4.6 * len(models) + lw
        fig, axs = plt.subplots(nrows, len(models), figsize=(width, height * nrows),
                                squeeze=False)
        for i in range(nrows):
            for j, m in enumerate(models):
                draw(axs[i][j], i, m)
        if legend_right:
            h, lab = axs[0][0].get_legend_handles_labels()
            fig.tight_layout(rect=(0, 0, 1 - lw / width, 1))
            fig.legend(h, lab, loc="center left", bbox_to_anchor=(1 - lw / width + 0.01, 0.5),
                       fontsize=7, frameon=False)
        else:
            fig.tight_layout()
        f = outdir / name
        fig.savefig(f, dpi=110)
        plt.close(fig)
        return f

    def speedup(ax, i, m):
        k = ("speedup", "speedup_pim")[i]
        for s, p in _SERIES[1:5]:
            rs = [r for r in sel(m, s, p) if k in r]
            if rs:
                ax.plot([r["ctx"] for r in rs], [r[k] for r in rs], marker="o",
                        label=POLICIES[p].label)
        ax.axhline(GOAL, ls="--", c="gray", lw=0.8, label="PIMphony: up to 11.3x")
        ax.axhline(1.0, ls=":", c="k", lw=0.6)
        _ctx_axis(ax, contexts)
        _log_y(ax, "x")
        ax.set_ylabel(("end-to-end", "PIM-only")[i] + " speedup vs baseline")
        ax.set_title(f"{m}: " + ("end to end (host + link)", "PIM time only")[i], fontsize=9)
        ax.legend(fontsize=6, loc="upper left")

    def throughput(ax, i, m):
        k = ("tokens_per_s", "pim_tokens_per_s")[i]
        for s, p in _SERIES[:1] + _SERIES[4:8]:
            rs = sel(m, s, p)
            if rs:
                ax.plot([r["ctx"] for r in rs], [r[k] for r in rs], marker="o",
                        ls="--" if s == "dimc-whatif" else "-", label=LABEL[s]
                        if s != "aim" else LABEL[s] + ", baseline")
        _ctx_axis(ax, contexts)
        _log_y(ax)
        ax.set_ylabel(("tokens/s, end to end", "tokens/s, PIM time only")[i])
        ax.set_title(m, fontsize=9)

    def utilisation(ax, i, m):
        for (s, p), style in ((("aim", "baseline"), "--"), (("pimphony", "all"), "-")):
            rs = sel(m, s, p)
            for kk, mk, what in (("mac_utilisation", "o", "MAC"),
                                 ("capacity_utilisation", "s", "capacity")):
                if rs:
                    ax.plot([r["ctx"] for r in rs], [r[kk] for r in rs], style, marker=mk,
                            label=f"{p}: {what}")
        ax.axhline(0.147, ls=":", c="gray", lw=0.8, label="PIMphony baseline MAC 14.7%")
        _ctx_axis(ax, contexts)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("utilisation")
        ax.set_title(m, fontsize=9)
        ax.legend(fontsize=6)

    ectx = [c for c in (contexts[0], contexts[-1])]
    ectx = list(dict.fromkeys(ectx))

    def energy(ax, i, m):
        c = ectx[i]
        rs = [(s, p, next((r for r in good if (r["model"], r["ctx"], r["system"], r["policy"])
                           == (m, c, s, p)), None)) for s, p in _SERIES[:8]]
        rs = [(s, p, r) for s, p, r in rs if r is not None]
        x = list(range(len(rs)))
        bottom = [0.0] * len(rs)
        cmap = plt.get_cmap("tab10")
        for ci, cat in enumerate(CATEGORIES):
            v = [sum(e["j"] for n, e in r["energy"]["components"].items()
                     if category(n) == cat) * 1e3 for _, _, r in rs]
            ax.bar(x, v, bottom=bottom, color=cmap(ci), label=cat,
                   hatch="//" if cat.startswith("static") else None, edgecolor="white",
                   linewidth=0.3)
            bottom = [a + b for a, b in zip(bottom, v, strict=True)]
        for xi, (_, _, r) in zip(x, rs, strict=True):      # total and static share on top
            e = r["energy"]
            mj = e["total_j"] * 1e3
            ax.annotate((f"{mj:,.0f}" if mj >= 100 else f"{mj:.3g}")
                        + f"\n{100 * e['static_j'] / e['total_j']:.0f}% st.",
                        (xi, e["total_j"] * 1e3), ha="center", va="bottom", fontsize=6)
        ax.margins(y=0.15)
        ax.set_xticks(x)
        ax.set_xticklabels([_name(s, p) for s, p, _ in rs], rotation=35, ha="right",
                           fontsize=7)
        ax.set_ylabel("mJ per token (hatched: static)")
        ax.set_title(f"{m} @ {fmt_ctx(c)}", fontsize=9)

    return [figure("speedup_vs_context.png", 2, speedup),
            figure("throughput_vs_context.png", 2, throughput, legend_right=True),
            figure("utilisation_vs_context.png", 1, utilisation),
            figure("energy_breakdown.png", len(ectx), energy, height=3.8, legend_right=True)]
