"""How far apart two seeds of the same fit end: the final iterate's noise, next to its error.

    python -m benchmarks.seed_spread            # 4 seeds, 500 and 2000 steps, three posteriordb posteriors
    python -m benchmarks.seed_spread --quick    # 2 seeds, 300 steps, eight schools only

Per posterior (``benchmarks.targets.posteriordb``: its reference is posteriordb's draws), per method and
number of steps, over the seeds: the **seed spread**, the largest over pairs of seeds and coordinates of
|mean_a - mean_b| / reference sd (what a user sees when rerunning with another seed), and the largest mean
error against the reference (median and worst seed). Methods: ``MixVI`` with its defaults
(``step_size='auto'``), ``MixVI`` with a fixed step, and NumPyro's AutoNormal (SVI, Adam(0.01),
Trace_ELBO). Means come from 20 000 draws of each fit's q, so their own Monte-Carlo error (about 0.007
sd) is far below the spreads measured. A table, JSON (``--out``) and the ``seed-spread`` section of
``--md``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import jax
import numpy as np
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.optim import Adam

import mixvi
from benchmarks import quality_targets as QT
from benchmarks.quality import posterior_q
from benchmarks.report import machine_info, measured_line, publish, repo_path

TARGETS = ("eight_schools_noncentered", "arK", "garch11")
FIXED_STEP = 0.02
ADAM_STEP = 0.01
DRAWS = 20_000


def final_means(target: QT.Target, method: str, steps: int, seed: int) -> tuple[np.ndarray | None, float]:
    """The mean of q (from DRAWS draws) after ``steps`` steps of ``method`` with ``seed``, and the wall time;
    None for the mean when MixVI's run diverged (it stops with ``mixvi.DivergenceError``)."""
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    if method == "AutoNormal":
        guide = AutoNormal(target.model)
        params = SVI(target.model, guide, Adam(ADAM_STEP), Trace_ELBO()).run(
            key, steps, *target.args, progress_bar=False
        ).params
    else:
        guide = mixvi.AutoIsotropicMixture(target.model, n_components=target.info["n_components"])
        step = "auto" if method == "mixvi-auto-step" else FIXED_STEP
        try:
            params = mixvi.MixVI(target.model, guide, step_size=step).run(
                key, steps, *target.args, progress_bar=False
            ).params
        except mixvi.DivergenceError:
            return None, time.perf_counter() - t0
    params = jax.block_until_ready(params)
    wall = time.perf_counter() - t0
    z = np.asarray(posterior_q(guide, params).sample(jax.random.PRNGKey(10_000 + seed), (DRAWS,)), np.float64)
    return z.mean(0), wall


def spread_row(target: QT.Target, method: str, steps: int, seeds: int) -> dict[str, Any]:
    """Every seed of one cell, with the spread and the errors in reference sds."""
    means, walls = zip(*(final_means(target, method, steps, s) for s in range(seeds)), strict=True)
    finished = [m for m in means if m is not None]
    scaled = [m / target.ref_sd for m in finished]
    pairs = list(itertools.combinations(scaled, 2))
    spread = max(float(np.max(np.abs(a - b))) for a, b in pairs) if pairs else float("nan")
    errors = [float(np.max(np.abs(m - target.ref_mean) / target.ref_sd)) for m in finished]
    return {"target": target.name, "method": method, "steps": steps, "seeds": seeds, "spread": spread,
            "err_median": float(np.median(errors)) if errors else float("nan"),
            "err_max": float(np.max(errors)) if errors else float("nan"), "errors": errors,
            "diverged": len(means) - len(finished), "wall_s": list(walls)}


def render(report: dict[str, Any], command: str) -> str:
    lines = [
        measured_line(report["machine"]["date"], report["machine"], command) + ".",
        "",
        "Seed spread: the largest |mean_a - mean_b| / reference sd over pairs of seeds and coordinates; error: "
        "the largest |mean - reference mean| / reference sd (median and worst seed). mixvi: "
        f"`AutoIsotropicMixture` (N = {report.get('settings', {}).get('n_components', '?')}) + `MixVI` defaults, with "
        f"`step_size='auto'` (the default) or the fixed step {FIXED_STEP}; AutoNormal: SVI, Adam({ADAM_STEP}), "
        "Trace_ELBO. A run that diverges stops with `mixvi.DivergenceError`: such seeds are counted, and the "
        "spread and errors are over the others.",
        "",
        "| posterior | method | steps | seed spread (sds) | error, median seed | error, worst seed |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        diverged = f" ({r['diverged']} of {r['seeds']} seeds diverged)" if r.get("diverged") else ""
        spread, med, worst = (_cell(r[k]) for k in ("spread", "err_median", "err_max"))
        lines.append(f"| {r['target']} | {r['method']} | {r['steps']} | {spread}{diverged} | {med} | {worst} |")
    return "\n".join(lines)


def _cell(value: float) -> str:
    """A table cell: three decimals, or a dash where no seed finished (NaN)."""
    return "–" if np.isnan(value) else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 seeds, 300 steps, eight schools only")
    p.add_argument("--targets", type=lambda s: s.split(","), default=None)
    p.add_argument("--steps", type=lambda s: [int(v) for v in s.split(",")], default=None, help="default 500,2000")
    p.add_argument("--seeds", type=int, default=None, help="default 4")
    p.add_argument("--out", default=repo_path("docs/benchmarks/seed_spread.json"), help="JSON report ('' for none)")
    p.add_argument("--md", default=repo_path("docs/benchmarks.md"), help="page to update ('' for none)")
    a = p.parse_args(argv)
    targets = a.targets or (["eight_schools_noncentered"] if a.quick else list(TARGETS))
    steps = a.steps or ([300] if a.quick else [500, 2000])
    seeds = a.seeds or (2 if a.quick else 4)
    rows, components = [], set()
    for name in targets:
        target = QT.BUILDERS[name]()
        components.add(target.info["n_components"])
        for n, method in itertools.product(steps, ("mixvi-auto-step", "mixvi-fixed-step", "AutoNormal")):
            row = spread_row(target, method, n, seeds)
            rows.append(row)
            print(f"{name:26s} {method:17s} {n:5d} steps: spread {row['spread']:.3f}, error {row['err_median']:.3f} "
                  f"(worst {row['err_max']:.3f})", flush=True)
    command = "python -m benchmarks.seed_spread" + (" --quick" if a.quick else "")
    report = {"suite": "seed-spread", "machine": machine_info(), "command": command,
              "settings": {"targets": targets, "steps": steps, "seeds": seeds, "fixed_step": FIXED_STEP,
                           "adam_step": ADAM_STEP, "draws": DRAWS,
                           "n_components": "/".join(str(n) for n in sorted(components))}, "rows": rows}
    heading = ("## Seed-to-seed spread of the final answer (`python -m benchmarks.seed_spread`)" if not a.quick
               else None)
    publish(report, a.out, a.md, "seed-spread", render(report, command), heading)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
