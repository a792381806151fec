"""Posterior quality and time to get it: mixvi's ``AutoIsotropicMixture`` (trained by ``MixVI`` with its
defaults, from "Variational Inference with Mixtures of Isotropic Gaussians", arXiv 2506.13613) against
NumPyro's AutoNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoBNAFNormal and AutoIAFNormal
(SVI, Adam, Trace_ELBO) and NUTS, on the targets of ``benchmarks.quality_targets``.

    python -m benchmarks.quality --quick           # 300 steps, 1 seed, NUTS 300 + 300, two targets
    python -m benchmarks.quality --metrics isotropic,diagonal --seeds 2 --steps 2000

Per fit: the settings read from the objects built, the wall time from building the guide to having
its params (compilation included, ``jax.block_until_ready``), the steady ms/step (a ``lax.scan`` of
``--timing-steps`` update steps compiled ahead with ``report.compile_timed`` and timed on one execution,
first seed only) and the metrics from ``--draws`` draws of q on the flattened unconstrained latent;
for a mixvi fit also ``mixvi.fit_check``'s verdict, k-hat and score divergence and whether ``run`` warned
(with its own k-hat), which ``--section fit-check`` tabulates.
The reference is exact where the target has one, else NUTS (``--nuts-warmup`` + ``--nuts-samples``,
two chains); NUTS rows are independent runs (other seeds) scored against it. Tables, JSON
(``--out``), the ``quality`` section of ``--md`` and a figure (``--figure``) come out of
``benchmarks.quality_report``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import (
    AutoBNAFNormal,
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from numpyro.infer.util import unconstrain_fn
from numpyro.optim import Adam

import mixvi
from benchmarks import quality_report as R
from benchmarks import quality_targets as QT
from benchmarks.metrics import kl_monte_carlo, predictive_metrics, summarise
from benchmarks.report import compile_timed, machine_info, repo_path, scan_steps
from benchmarks.targets.base import latent_sites

AUTOGUIDES = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoLowRankMultivariateNormal": AutoLowRankMultivariateNormal,
    "AutoBNAFNormal": AutoBNAFNormal,
    "AutoIAFNormal": AutoIAFNormal,
}
ADAM_STEP = 1e-2
QUICK_TARGETS = ("banana", "logistic_breast_cancer")
RUN_WARNING = "fit_check"
"""A warning of ``MixVI.run`` whose text names this is its poor-fit warning (k-hat of its last steps' weights)."""


def flat_draws(samples: dict[str, Any], order: list[str] | None = None) -> np.ndarray:
    """Site draws {name: (S, ...)} -> (S, d), sites in ``order`` (default: sorted)."""
    names = sorted(samples) if order is None else order
    return np.concatenate([np.asarray(samples[k]).reshape(len(samples[k]), -1) for k in names], 1)


def _draws_and_log_q(q: dist.Distribution, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
    # flows have no inverse: score the draws with the intermediates of their own sampling
    if isinstance(q, dist.TransformedDistribution):
        z, inter = q.sample_with_intermediates(key, (num,))
        return z, q.log_prob(z, inter)
    z = q.sample(key, (num,))
    return z, q.log_prob(z)


def posterior_q(guide: Any, params: dict) -> dist.Distribution:
    """q on the flattened unconstrained latent: ``get_posterior`` for mixvi and AutoContinuous guides,
    the product of AutoNormal's per-site normals (sites in the model's order, as the others) for AutoNormal."""
    if isinstance(guide, AutoNormal):
        names = [n for n, s in guide.prototype_trace.items() if s["type"] == "sample" and not s["is_observed"]]
        loc = jnp.concatenate([jnp.ravel(params[f"{n}_{guide.prefix}_loc"]) for n in names])
        scale = jnp.concatenate([jnp.ravel(params[f"{n}_{guide.prefix}_scale"]) for n in names])
        return dist.Normal(loc, scale).to_event(1)
    return guide.get_posterior(params)


def _timed_loop(step: Callable, state: Any, num_steps: int) -> float:
    """ms/step of ``num_steps`` steps of ``step(state) -> (state, loss)`` as one compiled scan (compile
    not counted: ahead-of-time, then one timed execution)."""
    compiled, _, _ = compile_timed(lambda s: scan_steps(step, s, num_steps), (state,))
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state))
    return 1e3 * (time.perf_counter() - t0) / num_steps


def fit_check_metrics(
    guide: Any,
    params: dict,
    args: tuple,
    key: jax.Array,
    run_messages: list[str],
    run_khat: float | None,
    run_stein: float | None = None,
) -> dict[str, Any]:
    """``mixvi.fit_check`` of a fitted mixture and what ``run`` said about it, as per-seed metrics.

    Parameters
    ----------
    guide : mixvi.AutoIsotropicMixture
        The fitted (set-up) guide.
    params : dict
        Its constrained params (``run``'s result).
    args : tuple
        The model's positional arguments.
    key : jax.Array
        The fit's key; ``fit_check`` draws with ``fold_in(key, quality_report.FIT_CHECK_KEY)``, as many
        draws as its default.
    run_messages : list of str
        The texts of the warnings ``run`` emitted.
    run_khat : float or None
        The k-hat ``run`` decided its warning on (``MixVI.last_run_khat``).
    run_stein : float or None
        The Stein moment divergence ``run`` decided its other warning on (``MixVI.last_run_stein``).

    Returns
    -------
    dict
        ``fit_check_verdict`` ('good', 'usable' or 'poor'), ``fit_check_khat``, ``fit_check_stein_divergence``
        (M), ``fit_check_score_divergence`` (D), ``fit_check_relative_ess``, ``fit_check_num_samples`` (when ``fit_check`` raised: verdict 'failed' and ``fit_check_reason``
        instead); ``run_warned`` (whether ``run`` warned, naming ``fit_check``) and
        ``run_khat`` and ``run_stein`` (the k-hat and M ``run`` compared with its thresholds; None when it had
        none to give).
    """
    warned = any(RUN_WARNING in text for text in run_messages)
    out = {
        "run_warned": warned,
        "run_khat": None if run_khat is None else float(run_khat),
        "run_stein": None if run_stein is None else float(run_stein),
    }
    try:
        check = mixvi.fit_check(guide, params, *args, rng_key=jax.random.fold_in(key, R.FIT_CHECK_KEY))
    except Exception as err:  # noqa: BLE001 - the fit's own numbers stay; the failure is recorded
        return {"fit_check_verdict": "failed", "fit_check_reason": f"{type(err).__name__}: {str(err)[:200]}"} | out
    return {
        "fit_check_verdict": check.verdict,
        "fit_check_khat": float(check.khat),
        "fit_check_score_divergence": float(check.score_divergence),
        "fit_check_stein_divergence": float(check.stein_divergence),
        "fit_check_relative_ess": float(check.relative_ess),
        "fit_check_num_samples": int(check.num_samples),
    } | out


def _steady_ms(init: Callable, update: Callable, args: tuple, key: jax.Array, timing_steps: int) -> float | None:
    """ms/step of ``timing_steps`` steps of ``update(state, *args)`` from ``init(key, *args)`` (MixVI's or SVI's
    pair), as :func:`_timed_loop` times them; None when ``timing_steps`` is 0."""
    if not timing_steps:
        return None
    return _timed_loop(lambda st: update(st, *args), init(key, *args), timing_steps)


def fit_mixvi(target: QT.Target, metric: str, steps: int, key: jax.Array, timing_steps: int) -> dict[str, Any]:
    """Build the guide and run ``MixVI`` with its defaults (unavailable when the metric is refused), then
    :func:`fit_check_metrics` of the fit (not in the wall time)."""
    metric, _, refined = metric.partition("+")  # "auto+refine": MixVI(refine=True); "auto+plain": refine=False
    metric, _, count = metric.partition("@")  # "auto@20": the metric with 20 components
    t0 = time.perf_counter()
    try:
        n = int(count) if count else target.info["n_components"]
        guide = mixvi.AutoIsotropicMixture(target.model, n_components=n, metric=metric)
        # "auto+widen1.25": the importance masses also from draws 1.25 times wider (vi.Settings.mass_widen;
        # "auto+widen1" the own draws alone)
        widen = float(refined[len("widen") :]) if refined.startswith("widen") else None
        refined = "" if refined.startswith("widen") else refined
        options = {"refine": {"refine": True, "plain": False}[refined]} if refined else {}
        vi = mixvi.MixVI(target.model, guide, **options)
        if widen is not None:
            vi.settings = vi.settings._replace(mass_widen=widen)
    except ValueError as err:
        return {"status": "unavailable", "reason": str(err)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = vi.run(key, steps, *target.args, progress_bar=False)
        params = jax.block_until_ready(result.params)
    wall = time.perf_counter() - t0
    messages = [str(w.message) for w in caught]
    # after the wall time
    check = fit_check_metrics(guide, params, target.args, key, messages, vi.last_run_khat, vi.last_run_stein)
    s = vi.settings
    settings = {
        "steps": steps,
        "n_components": guide.n_components,
        "metric": guide.metric,
        "weights": guide.weights,
        "init_scale": guide._init_scale,
        "method": vi.method,
        "step_size": vi.step_size,
        "num_samples": vi.num_samples,
        "shared_noise": vi.shared_noise,
        "loss_draws": vi.loss_draws,
        "auto": s.auto._asdict() if hasattr(s.auto, "_asdict") else str(s.auto),
        "mass_widen": s.mass_widen,
    }
    settings["refine"] = vi.refine
    settings["refined"] = vi.last_run_refine is not None
    sig = np.asarray(params[f"{guide.prefix}_scales"], np.float64)
    return {
        "status": "ok",
        "guide": guide,
        "params": params,
        "wall_s": wall,
        "ms_per_step": _steady_ms(vi.init, vi.update, target.args, key, timing_steps),
        "settings": settings,
        "warnings": sorted({text[:200] for text in messages}),
        "extra": {"sigma_min_over_median": float(sig.min() / np.median(sig)), **check},
    }


def fit_svi(target: QT.Target, name: str, steps: int, key: jax.Array, timing_steps: int) -> dict[str, Any]:
    """NumPyro SVI with the autoguide ``name``, Adam(``ADAM_STEP``) and Trace_ELBO."""
    t0 = time.perf_counter()
    guide = AUTOGUIDES[name](target.model)
    optim, elbo = Adam(ADAM_STEP), Trace_ELBO()
    svi = SVI(target.model, guide, optim, elbo)
    result = svi.run(key, steps, *target.args, progress_bar=False)
    params = jax.block_until_ready(result.params)
    wall = time.perf_counter() - t0
    settings = {
        "steps": steps,
        "guide": name,
        "optimizer": "Adam",
        "step_size": ADAM_STEP,
        "elbo": type(elbo).__name__,
        "num_particles": elbo.num_particles,
    }
    for attr in ("_init_scale", "rank", "num_flows", "_hidden_factors", "_hidden_dims", "_skip_connections"):
        if hasattr(guide, attr):
            settings[attr.lstrip("_")] = getattr(guide, attr)
    losses = np.asarray(result.losses)
    return {
        "status": "ok",
        "guide": guide,
        "params": params,
        "wall_s": wall,
        "ms_per_step": _steady_ms(svi.init, svi.update, target.args, key, timing_steps),
        "settings": settings,
        "warnings": [] if np.all(np.isfinite(losses)) else ["non-finite losses"],
        "extra": {},
    }


def unconstrained_draws(target: QT.Target, draws: dict[str, Any]) -> np.ndarray:
    """NUTS's draws of the latent sites (constrained, as ``get_samples`` gives them) mapped to the flattened
    unconstrained latent that the guides' q lives on (NumPyro's ``unconstrain_fn``; sites in the model's
    order, :func:`benchmarks.targets.base.latent_sites`)."""
    order = list(latent_sites(target.model, target.args))
    latent = {k: draws[k] for k in order}
    unconstrained = jax.vmap(lambda site: unconstrain_fn(target.model, target.args, {}, site))(latent)
    return flat_draws(unconstrained, order)


def run_nuts(target: QT.Target, key: jax.Array, warmup: int, samples: int, chains: int = 2) -> dict[str, Any]:
    """NUTS (diagonal mass, NumPyro defaults) with ``chains`` vectorised chains: flat draws and diagnostics."""
    from numpyro.diagnostics import summary

    t0 = time.perf_counter()
    kernel = NUTS(target.model if target.nuts_model is None else target.nuts_model)
    mcmc = MCMC(
        kernel, num_warmup=warmup, num_samples=samples, num_chains=chains, chain_method="vectorized", progress_bar=False
    )
    mcmc.run(key, *target.args, extra_fields=("diverging", "num_steps"))
    draws = jax.block_until_ready(mcmc.get_samples())
    wall = time.perf_counter() - t0
    summ = summary(mcmc.get_samples(group_by_chain=True))
    extra = mcmc.get_extra_fields()
    settings = {
        "num_warmup": mcmc.num_warmup,
        "num_samples": mcmc.num_samples,
        "num_chains": mcmc.num_chains,
        "chain_method": mcmc.chain_method,
        "target_accept_prob": kernel._target_accept_prob,
        "max_tree_depth": kernel._max_tree_depth,
        "dense_mass": kernel._dense_mass,
    }
    diag = {
        "max_rhat": float(max(np.nanmax(v["r_hat"]) for v in summ.values())),
        "min_ess": float(min(np.nanmin(v["n_eff"]) for v in summ.values())),
        "divergences": int(np.sum(extra["diverging"])),
        "mean_leapfrogs": float(np.mean(extra["num_steps"])),
    }
    return {
        "status": "ok",
        "z": unconstrained_draws(target, draws),
        "wall_s": wall,
        "settings": settings,
        "extra": diag,
        "ms_per_step": 1e3 * wall / (chains * (warmup + samples)),
        "warnings": [],
    }


def score(target: QT.Target, z: np.ndarray, log_q: np.ndarray | None, ref: dict[str, Any]) -> dict[str, Any]:
    """The target's metrics from flat draws z (S, d) of q and, where given, log q(z)."""
    out: dict[str, Any] = {}
    if log_q is not None and target.log_prob is not None:
        lp = np.asarray(jax.jit(target.log_prob)(jnp.asarray(z, jnp.float32)))
        out["kl"], out["kl_se"] = kl_monte_carlo(log_q, lp)
    out.update(QT.moment_metrics(z, ref["mean"], ref["sd"]))
    if "modes" in target.info:
        m = target.info["modes"]
        out.update(QT.mode_mass_metrics(QT.basin_labels(z, m["means"], m["covs"]), m["weights"]))
    if target.predict_log_prob is not None:
        lpd = predictive_metrics(target.predict_log_prob(jnp.asarray(z[:4000], jnp.float32)), target.test_labels)
        out["test_lpd"] = lpd["test_loglik"]
        out["test_lpd_vs_ref"] = lpd["test_loglik"] - ref["test_lpd"]
    return out


def reference(target: QT.Target, a: argparse.Namespace) -> dict[str, Any]:
    """Exact moments where known (from exact draws otherwise), the moments of a target's published reference
    draws (posteriordb), else a NUTS run with seed ``a.nuts_seed``."""
    if target.sample is not None:
        z = np.asarray(target.sample(jax.random.PRNGKey(10_000), a.draws))
        mean = target.ref_mean if target.ref_mean is not None else z.mean(0)
        sd = target.ref_sd if target.ref_sd is not None else z.std(0)
        ref = {"kind": "exact", "mean": mean, "sd": sd}
        if target.ref_mean is None:
            ref["moments_from"] = f"{a.draws} exact draws"
        return ref
    if target.ref_mean is not None:  # moments of published reference draws (posteriordb)
        return {"kind": "draws", "mean": target.ref_mean, "sd": target.ref_sd, "source": target.info["reference"]}
    run = run_nuts(target, jax.random.PRNGKey(a.nuts_seed), a.nuts_warmup, a.nuts_samples)
    z = run["z"]
    ref = {
        "kind": "NUTS",
        "mean": z.mean(0),
        "sd": z.std(0),
        "seed": a.nuts_seed,
        "wall_s": run["wall_s"],
        "settings": run["settings"],
        "diagnostics": run["extra"],
    }
    if target.predict_log_prob is not None:
        ref["test_lpd"] = predictive_metrics(target.predict_log_prob(jnp.asarray(z, jnp.float32)), target.test_labels)[
            "test_loglik"
        ]
    return ref


def method_names(a: argparse.Namespace, target: QT.Target) -> list[str]:
    names = [f"mixvi-{m}" for m in a.metrics] + list(AUTOGUIDES)
    if target.sample is None or a.nuts_all:
        names.append("NUTS")
    return [n for n in names if not a.methods or n in a.methods]


def run_method(name: str, target: QT.Target, ref: dict, a: argparse.Namespace, log: Callable) -> dict[str, Any]:
    """Every seed of one method on one target: per-seed results and their summary."""
    rows = []
    for i in range(a.seeds):
        key = jax.random.PRNGKey(i)
        timing = a.timing_steps if i == 0 else 0
        try:
            if name.startswith("mixvi-"):
                fit = fit_mixvi(target, name[6:], a.steps, key, timing)
            elif name == "NUTS":
                fit = run_nuts(target, jax.random.PRNGKey(a.nuts_seed + 1 + i), a.nuts_warmup, a.nuts_samples)
            else:
                fit = fit_svi(target, name, a.steps, key, timing)
        except Exception as err:  # noqa: BLE001 - a failed fit is a result of the benchmark
            fit = {"status": "failed", "reason": f"{type(err).__name__}: {str(err)[:300]}"}
        if fit["status"] != "ok":
            log(f"  {name:24s} seed {i}: {fit['status']} ({fit['reason'][:120]})")
            rows.append({"seed": i, "status": fit["status"], "reason": fit["reason"]})
            if fit["status"] == "unavailable":
                break
            continue
        if "z" in fit:
            z, log_q = fit["z"], None
        else:
            q = posterior_q(fit["guide"], fit["params"])
            z, log_q = (np.asarray(v) for v in _draws_and_log_q(q, jax.random.PRNGKey(777 + i), a.draws))
        metrics = score(target, z, log_q, ref) | fit["extra"]
        rows.append(
            {
                "seed": i,
                "status": "ok",
                "wall_s": fit["wall_s"],
                "ms_per_step": fit["ms_per_step"],
                "settings": fit["settings"],
                "warnings": fit["warnings"],
                "metrics": metrics,
            }
        )
        verdict = f", fit_check {metrics['fit_check_verdict']}" if "fit_check_verdict" in metrics else ""
        log(
            f"  {name:24s} seed {i}: wall {fit['wall_s']:.1f} s, {target.info['main']} "
            f"{metrics.get(target.info['main'], float('nan')):.4g}{verdict}"
        )
    ok = [r for r in rows if r["status"] == "ok"]
    summary = {}
    if ok:
        for k in ok[0]["metrics"]:
            if any(isinstance(r["metrics"].get(k), (int, float)) for r in ok):  # run_khat may be None on a seed
                summary[k] = summarise([r["metrics"].get(k) for r in ok])
        summary["wall_s"] = summarise([r["wall_s"] for r in ok])
    status = "ok" if ok else rows[0]["status"] if rows else "skipped"
    ms = next((r["ms_per_step"] for r in ok if r["ms_per_step"] is not None), None)
    return {
        "method": name,
        "status": status,
        "settings": ok[0]["settings"] if ok else None,
        "ms_per_step": ms,
        "summary": summary,
        "seeds": rows,
    }


def _log(line: str) -> None:
    print(line, flush=True)


def run_benchmark(a: argparse.Namespace, log: Callable = _log) -> dict[str, Any]:
    """Every target and method; returns the report (settings, machine, per-target results)."""
    machine = machine_info()
    report = {
        "suite": "quality",
        "date": machine["date"],
        "machine": machine,
        "settings": {k: v for k, v in vars(a).items() if k not in ("out", "md", "figure")},
        "fit_check": R.fit_check_settings(),
        "targets": {},
    }
    for tname in a.targets:
        target = QT.BUILDERS[tname]()
        log(f"{tname}: {target.info['description']}")
        ref = reference(target, a)
        methods = [run_method(m, target, ref, a, log) for m in method_names(a, target)]
        info = {k: v for k, v in target.info.items() if k != "modes"}
        report["targets"][tname] = {
            "info": info,
            "dim": target.dim,
            "main": target.info["main"],
            "reference": {k: v for k, v in ref.items() if k not in ("mean", "sd")},
            "methods": methods,
        }
        print(R.format_table(tname, report["targets"][tname]), flush=True)
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="300 steps, 1 seed, NUTS 300 + 300, two targets")
    p.add_argument(
        "--targets", type=lambda s: s.split(","), default=None, help=f"comma-separated, of {QT.TARGET_NAMES}"
    )
    p.add_argument(
        "--metrics",
        type=lambda s: s.split(","),
        default=["isotropic", "diagonal"],
        help="mixvi guide metrics; METRIC@N sets N components (default: the target's)",
    )
    p.add_argument(
        "--methods", type=lambda s: s.split(","), default=None, help="only these rows (e.g. mixvi-isotropic,AutoNormal)"
    )
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default 2000; quick 300)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 2; quick 1)")
    p.add_argument("--draws", type=int, default=20_000, help="draws of q per metric evaluation")
    p.add_argument(
        "--timing-steps", type=int, default=None, help="steps of the steady ms/step loop (default min(steps, 200))"
    )
    p.add_argument("--nuts-warmup", type=int, default=None, help="default 1000; quick 300")
    p.add_argument("--nuts-samples", type=int, default=None, help="default 1000; quick 300")
    p.add_argument(
        "--nuts-seed", type=int, default=100, help="seed of the NUTS reference (NUTS rows use the next ones)"
    )
    p.add_argument("--nuts-all", action="store_true", help="NUTS rows on the exact targets too")
    p.add_argument("--out", default=repo_path("docs/benchmarks/quality.json"), help="JSON report ('' for none)")
    p.add_argument(
        "--md", default=repo_path("docs/benchmarks.md"), help="page whose 'quality' section is rewritten ('' for none)"
    )
    p.add_argument(
        "--figure", default=repo_path("docs/figures/quality_summary.png"), help="summary figure ('' for none)"
    )
    p.add_argument(
        "--section",
        default="quality",
        help="name of the --md section to rewrite (a new one is appended; fit-check: the fit_check table)",
    )
    a = p.parse_args(argv)
    a.targets = a.targets or list(QUICK_TARGETS if a.quick else QT.TARGET_NAMES)
    unknown = set(a.targets) - set(QT.TARGET_NAMES)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}; choose from {QT.TARGET_NAMES}")
    a.steps = a.steps or (300 if a.quick else 2000)
    a.seeds = a.seeds or (1 if a.quick else 2)
    a.nuts_warmup = a.nuts_warmup or (300 if a.quick else 1000)
    a.nuts_samples = a.nuts_samples or (300 if a.quick else 1000)
    a.timing_steps = min(a.steps, 200) if a.timing_steps is None else a.timing_steps
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t0 = time.perf_counter()
    report = run_benchmark(a)
    report["total_wall_s"] = time.perf_counter() - t0
    R.write_outputs(report, a)
    print(f"total {report['total_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
