"""Mode discovery and mass balancing, switched on one at a time: what each of ``mixvi.adapt``'s moves
buys on the targets of ``benchmarks.quality_targets`` (MixVI with its defaults otherwise).

    python -m benchmarks.discovery                  # 2000 steps, 4 seeds on the mixture, 2 elsewhere
    python -m benchmarks.discovery --quick          # 400 steps, 1 seed, two targets

Variants (the step's settings, ``mixvi.vi.Settings``):

- ``paper``: ``relocate=False`` (no move at all; the paper's uniform weights, here with the default metric);
- ``relocate``: massless components restart on the best one;
- ``+balance``: and mass balancing by importance masses;
- ``+scouts``: and scouts sent from a wide start during the first half of the run;
- ``+tilt`` (the default): and the mass-covering tilt in the second half (``tilt='auto'``; the rows above
  have ``tilt=0``).

Per fit: the target's main metric from draws of q, the modes found and mass error on the mixture, the
number of moves and the wall time (compilation included). A table, JSON (``--out``) and the
``discovery`` section of ``--md``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import jax
import numpy as np

import mixvi
from benchmarks import quality_targets as QT
from benchmarks.quality import reference, score
from benchmarks.report import machine_info, measured_line, publish, repo_path

VARIANTS = {
    "paper": {"relocate": False, "balance": False, "explore": False, "tilt": 0.0},
    "relocate": {"relocate": True, "balance": False, "explore": False, "tilt": 0.0},
    "+balance": {"relocate": True, "balance": True, "explore": False, "tilt": 0.0},
    "+scouts": {"relocate": True, "balance": True, "explore": True, "tilt": 0.0},
    "+tilt": {"relocate": True, "balance": True, "explore": True, "tilt": "auto"},
}
COLUMNS = ("kl", "mean_err_max", "log_sd_ratio_median", "modes_found", "mass_error", "test_lpd_vs_ref")


def fit(target: QT.Target, variant: str, steps: int, seed: int) -> dict[str, Any]:
    """One MixVI run with the variant's moves; returns its settings, metrics inputs and wall time."""
    t0 = time.perf_counter()
    guide = mixvi.AutoIsotropicMixture(target.model, n_components=target.info["n_components"])
    flags = VARIANTS[variant]
    vi = mixvi.MixVI(target.model, guide, relocate=flags["relocate"], tilt=flags["tilt"])
    vi.settings = vi.settings._replace(balance=flags["balance"], explore=flags["explore"])
    result = vi.run(jax.random.PRNGKey(seed), steps, *target.args, progress_bar=False)
    params = jax.block_until_ready(result.params)
    wall = time.perf_counter() - t0
    return {"guide": guide, "params": params, "wall_s": wall, "settings": {"steps": steps, "seed": seed, **flags,
            "metric": guide.metric, "n_components": guide.n_components, "step_size": vi.step_size}}


def run_benchmark(a: argparse.Namespace) -> dict[str, Any]:
    report = {"suite": "discovery", "machine": machine_info(), "settings": {k: v for k, v in vars(a).items() if k not in ("out", "md")}, "targets": {}}
    for name in a.targets:
        target = QT.BUILDERS[name]()
        ref = reference(target, argparse.Namespace(draws=a.draws, nuts_seed=100, nuts_warmup=a.nuts, nuts_samples=a.nuts))
        seeds = a.mixture_seeds if name == "mixture20d_4modes" else a.seeds
        rows = []
        for variant in a.variants:
            for seed in range(seeds):
                r = fit(target, variant, a.steps, seed)
                q = r["guide"].get_posterior(r["params"])
                z = q.sample(jax.random.PRNGKey(1000 + seed), (a.draws,))
                log_q = np.asarray(q.log_prob(z))
                metrics = score(target, np.asarray(z), log_q, ref)
                row = {"variant": variant, "seed": seed, "wall_s": r["wall_s"], "settings": r["settings"],
                       **{k: metrics[k] for k in COLUMNS if k in metrics}}
                if "masses" in metrics:
                    row["masses"] = metrics["masses"]
                rows.append(row)
                print(name, variant, seed, {k: (round(v, 4) if isinstance(v, float) else v)
                                            for k, v in row.items() if k in COLUMNS or k == "wall_s"}, flush=True)
        report["targets"][name] = {"main": target.info["main"], "reference": ref["kind"], "rows": rows}
    return report


def _median(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return "–"
    lo, med, hi = np.min(vals), np.median(vals), np.max(vals)
    f = (lambda v: f"{v:.3g}") if key != "modes_found" else (lambda v: f"{v:.0f}")
    return f"{f(med)} ({f(lo)}–{f(hi)})" if len(vals) > 1 else f(med)


def render_markdown(report: dict[str, Any], command: str) -> str:
    lines = [measured_line(report["machine"]["date"], report["machine"], command) + "."]
    lines.append("Median (min–max) over seeds of MixVI with `n_components` of the quality suite, 2000 steps "
                 "unless stated; each variant adds one move to the one above.")
    for name, t in report["targets"].items():
        cols = [c for c in COLUMNS if any(c in r for r in t["rows"])]
        lines += ["", f"**{name}** (reference: {t['reference']})", "",
                  "| variant | " + " | ".join(cols) + " | wall s |", "|---" * (len(cols) + 2) + "|"]
        for v in dict.fromkeys(r["variant"] for r in t["rows"]):
            rows = [r for r in t["rows"] if r["variant"] == v]
            lines.append(f"| {v} | " + " | ".join(_median(rows, c) for c in cols) + f" | {_median(rows, 'wall_s')} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="400 steps, 1 seed, two targets")
    p.add_argument("--targets", type=lambda s: s.split(","), default=None)
    p.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 2; quick 1)")
    p.add_argument("--mixture-seeds", type=int, default=None, help="seeds on the four-mode mixture (default 4)")
    p.add_argument("--draws", type=int, default=20_000)
    p.add_argument("--nuts", type=int, default=None, help="NUTS warm-up = draws of the reference where needed")
    p.add_argument("--out", default=repo_path("docs/benchmarks/discovery.json"))
    p.add_argument("--md", default=repo_path("docs/benchmarks.md"))
    a = p.parse_args(argv)
    a.targets = a.targets or (["mixture20d_4modes", "banana"] if a.quick else list(QT.TARGET_NAMES))
    a.steps = a.steps or (400 if a.quick else 2000)
    a.seeds = a.seeds or (1 if a.quick else 2)
    a.mixture_seeds = a.mixture_seeds or (1 if a.quick else 4)
    a.nuts = a.nuts or (300 if a.quick else 1000)
    unknown = set(a.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    report = run_benchmark(a)
    command = "python -m benchmarks.discovery" + (" --quick" if a.quick else "")
    heading = "## Mode discovery and mass balancing (`python -m benchmarks.discovery`)"
    publish(report, a.out, a.md, "discovery", render_markdown(report, command), heading)
    print(render_markdown(report, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
