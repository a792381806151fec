"""The summary figure of the extensions suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.extensions.settings import MASS_TOL


def plot_summary(report: dict, path: Path) -> None:
    """Figure: per scale target, KL and sd err max of every fit (one dot per seed, log scale); and the
    bimodal mode mass per seed for every summary, with the truth and the +-0.05 band."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    recs = report["records"]
    scale_targets = list(dict.fromkeys(r["target"] for r in recs if not r["target"].startswith("bimodal")))
    methods = list(dict.fromkeys(r["method"] for r in recs if not r["target"].startswith("bimodal")))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (key, title) in zip(axes[:2], (("kl", "KL(q‖p)"), ("sd_err_max", "max |sd/sd_ref - 1|"))):
        for ti, target in enumerate(scale_targets):
            for mi, method in enumerate(methods):
                vals = [
                    r["kl"] if key == "kl" else r["closed_form"][key]
                    for r in recs
                    if r["target"] == target and r["method"] == method
                ]
                x = ti + (mi - (len(methods) - 1) / 2) * 0.14
                ax.scatter(
                    [x] * len(vals),
                    np.clip(np.asarray(vals, float), 1e-7, None),
                    s=14,
                    color=colors(mi),
                    label=method if ti == 0 else None,
                )
        ax.set_yscale("log")
        ax.set_xticks(range(len(scale_targets)), [t.replace(", ", "\n") for t in scale_targets], fontsize=8)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("values below 1e-7 (and MC estimates <= 0) drawn at 1e-7", fontsize=7)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(methods), fontsize=8, frameon=False)
    ax = axes[2]
    truth = report["bimodal_truth"]["mass_right"]
    ax.axhspan(truth - MASS_TOL, truth + MASS_TOL, color="0.9")
    ax.axhline(truth, color="k", lw=1)
    bim = [r for r in recs if r["target"].startswith("bimodal")]
    cols = [
        ("uniform", "closed_form", "uniform, q"),
        ("uniform", "psis", "uniform, PSIS"),
        ("uniform", "resampled", "uniform, resampled"),
        ("fisher-rao", "closed_form", "Fisher-Rao, q"),
        ("fisher-rao", "psis", "Fisher-Rao, PSIS"),
    ]
    for ci, (weights, src, _) in enumerate(cols):
        vals = [r[src]["mass_right"] for r in bim if r["weights"] == weights]
        ax.scatter(ci + np.linspace(-0.15, 0.15, len(vals)), vals, s=16, color=colors(ci))
    ax.set_xticks(range(len(cols)), [c[2].replace(", ", "\n") for c in cols], fontsize=8)
    ax.set_title(f"bimodal: P(x_0 > 0), truth {truth:.3f} ± {MASS_TOL}")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
