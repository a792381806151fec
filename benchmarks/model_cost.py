"""`python -m benchmarks.model_cost`: what the guide's and the engine's 'auto' choices read on each benchmark model.

For every model of the quality, start-up and time-to-ELBO suites: its latent dimension d, XLA's cost estimate of
one value-and-gradient of V (flops + 10 x transcendentals, :func:`mixvi.potential_cost.value_and_grad_cost`; the
program is lowered, not compiled), and what ``AutoIsotropicMixture(n_components='auto')`` and
``MixVI(loss_draws='auto')`` settle on from it. Nothing is timed: the table shows where the thresholds
:data:`mixvi.potential_cost.COMPONENTS_MAX_COST` and :data:`mixvi.potential_cost.ALL_DRAWS_MAX_COST` fall among
real models, next to the quality suite's N = 10 / N = 20 comparison (docs/benchmarks.md, "Number of components").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import jax

from benchmarks.report import machine_info, measured_line, publish, repo_path

SUITES = ("quality", "startup", "time_to_elbo")


def _models(suites: list[str]) -> list[tuple[str, str, Callable, tuple]]:
    """(suite, name, model, args) of the suites' models (the quality suite's low-rank d = 300 target aside:
    it is fitted with explicit metrics only)."""
    out = []
    if "quality" in suites:
        from benchmarks import quality_targets

        for name, build in quality_targets.BUILDERS.items():
            if name == "factor_gaussian_d300":
                continue
            target = build()
            out.append(("quality", name, target.model, tuple(target.args)))
    if "startup" in suites:
        from benchmarks import startup

        for name in startup.MODELS:
            model, args = startup.model_and_data(name)
            out.append(("startup", name, model, tuple(args)))
    if "time_to_elbo" in suites:
        from benchmarks import time_to_elbo

        model, args = time_to_elbo.model_and_data("logreg_breast")
        out.append(("time_to_elbo", "logreg_breast", model, tuple(args)))
    return out


def measure(model: Callable, args: tuple) -> dict[str, Any]:
    """d, V's cost and the two 'auto' choices for one model (the guide is set up, nothing is run)."""
    import mixvi
    from mixvi.potential_cost import choose_loss_draws, model_cost

    guide = mixvi.AutoIsotropicMixture(model)
    guide.setup(jax.random.PRNGKey(0), *args)
    dtype = guide._init_component_locs.dtype
    key = guide._structure_key()
    cost = model_cost(key, guide.potential_fn, guide.latent_dim, dtype, args, {})
    draws = choose_loss_draws(key, guide.potential_fn, guide.latent_dim, dtype, args, {})
    return {"d": guide.latent_dim, "cost": cost, "n_components": guide.n_components, "loss_draws": draws}


def format_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table, cheapest model first."""
    lines = [
        "| model | suite | d | V cost (flop eq.) | n_components='auto' | loss_draws='auto' |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["cost"] is None, r["cost"] or 0.0)):
        cost = "-" if r["cost"] is None else f"{r['cost']:.3g}"
        draws = "every draw" if r["loss_draws"] is None else f"{r['loss_draws']} per component"
        lines.append(f"| {r['model']} | {r['suite']} | {r['d']} | {cost} | {r['n_components']} | {draws} |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """The page section."""
    from mixvi.potential_cost import ALL_DRAWS_MAX_COST, COMPONENTS_MAX_COST

    m = report["machine"]
    return (
        measured_line(m["date"], m, "python -m benchmarks.model_cost")
        + f"\n\nThresholds: N = 20 below {COMPONENTS_MAX_COST:.0e} flop equivalents, 10 at or above; the loss from"
        f" every draw below {ALL_DRAWS_MAX_COST:.0e}, from one draw per component above.\n\n"
        + format_table(report["rows"])
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.model_cost``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.model_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--suites", type=lambda s: s.split(","), default=list(SUITES))
    p.add_argument("--out", default=repo_path("docs/benchmarks/model_cost.json"), help="JSON output ('' to skip)")
    p.add_argument("--md", default=repo_path("docs/benchmarks.md"), help="markdown page to update ('' to skip)")
    a = p.parse_args(argv)
    unknown = sorted(set(a.suites) - set(SUITES))
    if unknown:
        p.error(f"unknown suites {unknown}: choose from {', '.join(SUITES)}")
    rows = []
    for suite, name, model, args in _models(a.suites):
        row = {"suite": suite, "model": name, **measure(model, args)}
        rows.append(row)
        print(f"  {suite:13s} {name:26s} d={row['d']:<4d} cost={row['cost']} N={row['n_components']}", flush=True)
    report = {"machine": machine_info(), "suites": a.suites, "rows": rows}
    print(format_table(rows))
    publish(report, a.out, a.md, "model-cost", render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
