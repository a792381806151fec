"""``python -m benchmarks.shape_limit [--quick]``: how close to the horseshoe posterior can *any* uniform-weight
mixture of N Gaussians get under the reverse KL, whatever shape its components take?

mixvi's family shares one shape (sigma_i^2 L L^T) between its components. Its largest error on the
horseshoe regression of the quality suite (non-centred, d = 42) stays near 0.9 NUTS sds, and the question
is whether giving each component a shape of its own would close that. This suite answers it without
building such a family into mixvi: it fits q = (1/N) sum_i N(m_i, C_i) with C_i

``isotropic``   s_i^2 I (the paper's family, without a shared metric),
``diagonal``    diag(s_i^2) per component,
``full``        L_i L_i^T per component (a Cholesky factor each: N d^2 parameters),

by minimising the reverse KL (the negative ELBO, reparameterised draws, B draws per component per step,
every draw's log q under the whole mixture) with Adam and an exponentially decaying rate, started on the
most favourable ground there is: the means at N draws of the NUTS reference itself, every sd at 0.1. What
such a fit converges to is (up to the optimiser finding it) the family's best answer, and its errors are the
family's own, not mixvi's step's. The mixvi row is ``AutoIsotropicMixture`` + ``MixVI.run`` with their
defaults (2000 steps, uniform start) in the same process, scored by the same draws.

Scores: the largest and median |mean error| in NUTS sds over the 42 unconstrained coordinates, the
median and largest |log sd ratio|, and -ELBO = E_q[log q + V] from ``--draws`` draws (lower is closer to
the posterior in KL; the same V for every row, so the values compare).

Writes ``docs/benchmarks/shape_limit.json`` and the ``shape-limit`` section of ``docs/benchmarks.md``.
Entry point: ``main(argv) -> int``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

import mixvi
from benchmarks import quality_targets as QT
from benchmarks.quality import run_nuts
from benchmarks.report import machine_info, measured_line, publish, repo_path

SHAPES = ("isotropic", "diagonal", "full")
INIT_SD = 0.1
FINAL_RATE_FACTOR = 0.01
"""The Adam rate decays exponentially to this fraction of its start over the run."""


def component_log_densities(x: jax.Array, locs: jax.Array, log_sd: jax.Array, shape: str) -> jax.Array:
    """log N(x; m_i, C_i) for every component, shape (..., N); ``log_sd`` is (N,), (N, d) or, for 'full',
    the unconstrained Cholesky factors (N, d, d) (strict lower part as is, the diagonal's log)."""
    d = locs.shape[-1]
    diff = x[..., None, :] - locs
    if shape == "isotropic":
        z = diff / jnp.exp(log_sd)[:, None]
        log_det = d * log_sd
    elif shape == "diagonal":
        z = diff / jnp.exp(log_sd)
        log_det = jnp.sum(log_sd, -1)
    else:
        tril = cholesky_factors(log_sd)
        flat = jnp.moveaxis(diff.reshape(-1, *locs.shape), 1, 0)  # (N, M, d)
        z = jax.vmap(lambda t, r: jax.scipy.linalg.solve_triangular(t, r.T, lower=True).T)(tril, flat)
        z = jnp.moveaxis(z, 0, 1).reshape(diff.shape)
        log_det = jnp.sum(jnp.diagonal(log_sd, axis1=-2, axis2=-1), -1)
    return -0.5 * jnp.sum(z**2, -1) - log_det - 0.5 * d * jnp.log(2 * jnp.pi)


def cholesky_factors(raw: jax.Array) -> jax.Array:
    """(N, d, d) lower-triangular factors with a positive diagonal from unconstrained (N, d, d)."""
    d = raw.shape[-1]
    return jnp.tril(raw, -1) + jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))[..., None, :] * jnp.eye(d)


def mixture_draws(params: dict, noise: jax.Array, shape: str) -> jax.Array:
    """Component i's draws m_i + C_i^(1/2) z from noise (N, B, d)."""
    locs, log_sd = params["locs"], params["log_sd"]
    if shape == "isotropic":
        return locs[:, None] + jnp.exp(log_sd)[:, None, None] * noise
    if shape == "diagonal":
        return locs[:, None] + jnp.exp(log_sd)[:, None, :] * noise
    return locs[:, None] + jnp.einsum("nij,nbj->nbi", cholesky_factors(log_sd), noise)


def log_q(params: dict, x: jax.Array, shape: str) -> jax.Array:
    """log of the uniform-weight mixture at x (..., d)."""
    n = params["locs"].shape[0]
    return logsumexp(component_log_densities(x, params["locs"], params["log_sd"], shape), -1) - jnp.log(n)


def fit_shape(
    shape: str, potential, start: np.ndarray, steps: int, draws_per_component: int, rate: float, key: jax.Array
) -> tuple[dict, np.ndarray]:
    """Adam on the reverse KL of a uniform-weight mixture of ``shape`` components, means from ``start``
    (N, d): the final params and the per-step -ELBO estimates."""
    n, d = start.shape
    log_sd0 = float(np.log(INIT_SD))
    init_sd = {
        "isotropic": jnp.full((n,), log_sd0),
        "diagonal": jnp.full((n, d), log_sd0),
        "full": jnp.zeros((n, d, d)) + log_sd0 * jnp.eye(d),
    }[shape]
    params = {"locs": jnp.asarray(start, jnp.float32), "log_sd": init_sd}
    optimiser = optax.adam(optax.exponential_decay(rate, steps, FINAL_RATE_FACTOR))
    values = jax.vmap(jax.vmap(potential))

    def loss(p, k):
        x = mixture_draws(p, jax.random.normal(k, (n, draws_per_component, d)), shape)
        return jnp.mean(log_q(p, x, shape) + values(x))

    @jax.jit
    def run(p, k):
        def body(carry, k_step):
            p, s = carry
            value, grad = jax.value_and_grad(loss)(p, k_step)
            update, s = optimiser.update(grad, s, p)
            return (optax.apply_updates(p, update), s), value

        (p, _), trace = jax.lax.scan(body, (p, optimiser.init(p)), jax.random.split(k, steps))
        return p, trace

    params, trace = run(params, key)
    return params, np.asarray(trace)


def scores(z: np.ndarray, lq: np.ndarray, v: np.ndarray, ref_mean: np.ndarray, ref_sd: np.ndarray) -> dict:
    """Moment errors against the reference and -ELBO with its standard error."""
    err = np.abs(z.mean(0) - ref_mean) / ref_sd
    log_ratio = np.abs(np.log(z.std(0) / ref_sd))
    elbo_terms = lq + v
    return {
        "max_mean_err": float(err.max()),
        "worst_coordinate": int(err.argmax()),
        "median_mean_err": float(np.median(err)),
        "median_abs_log_sd_ratio": float(np.median(log_ratio)),
        "max_abs_log_sd_ratio": float(log_ratio.max()),
        "neg_elbo": float(elbo_terms.mean()),
        "neg_elbo_se": float(elbo_terms.std() / np.sqrt(len(elbo_terms))),
    }


def run_benchmark(a: argparse.Namespace) -> dict[str, Any]:
    target = QT.BUILDERS["horseshoe_regression"]()
    t0 = time.perf_counter()
    nuts = run_nuts(target, jax.random.PRNGKey(a.nuts_seed), a.nuts_warmup, a.nuts_samples)
    ref = nuts["z"]
    ref_mean, ref_sd = ref.mean(0), ref.std(0)
    guide = mixvi.AutoIsotropicMixture(target.model, n_components=a.n_components)
    engine = mixvi.MixVI(target.model, guide)
    engine.init(jax.random.PRNGKey(0), *target.args)
    potential = guide.potential_fn(*target.args)
    model_key = jax.random.PRNGKey(0)
    v_of = jax.jit(jax.vmap(lambda z: potential(z, model_key)))
    rows = []
    for seed in range(a.seeds):
        key = jax.random.PRNGKey(seed)
        t = time.perf_counter()
        fit = engine.run(key, a.mixvi_steps, *target.args, progress_bar=False)
        posterior = guide.get_posterior(fit.params)
        z = posterior.sample(jax.random.PRNGKey(10_000 + seed), (a.draws,))
        row = {
            "family": "mixvi default (shared shape)",
            "seed": seed,
            "steps": a.mixvi_steps,
            "wall_s": time.perf_counter() - t,
            **scores(np.asarray(z), np.asarray(posterior.log_prob(z)), np.asarray(v_of(z)), ref_mean, ref_sd),
        }
        rows.append(row)
        print(_line(row), flush=True)
        for shape in a.shapes:
            start = ref[np.random.default_rng(seed).choice(len(ref), a.n_components, replace=False)]
            t = time.perf_counter()
            params, trace = fit_shape(
                shape, lambda x: potential(x, model_key), start, a.steps, a.num_samples, a.rate, key
            )
            k_draw = jax.random.PRNGKey(10_000 + seed)
            per = -(-a.draws // a.n_components)
            z = mixture_draws(params, jax.random.normal(k_draw, (a.n_components, per, ref.shape[1])), shape)
            z = z.reshape(-1, ref.shape[1])
            row = {
                "family": shape,
                "seed": seed,
                "steps": a.steps,
                "wall_s": time.perf_counter() - t,
                "final_loss_trace": float(trace[-max(1, a.steps // 10) :].mean()),
                **scores(np.asarray(z), np.asarray(log_q(params, z, shape)), np.asarray(v_of(z)), ref_mean, ref_sd),
            }
            rows.append(row)
            print(_line(row), flush=True)
    settings = {
        "n_components": a.n_components,
        "draws_per_component": a.num_samples,
        "adam_rate": a.rate,
        "rate_decays_to": a.rate * FINAL_RATE_FACTOR,
        "init_sd": INIT_SD,
        "steps": a.steps,
        "mixvi_steps": a.mixvi_steps,
        "seeds": a.seeds,
        "draws": a.draws,
        "start": "means at N distinct NUTS draws (seed-dependent), sds INIT_SD",
        "mixvi_settings": {
            "guide": "AutoIsotropicMixture defaults",
            "engine": "MixVI defaults",
            "metric": guide.metric,
            "n_components": guide.n_components,
        },
    }
    return {
        "machine": machine_info(),
        "target": target.name,
        "dim": int(ref.shape[1]),
        "sites_order": "tau, sigma, lambda (20), z (20) on the unconstrained latent",
        "reference": {"kind": "NUTS", **nuts["settings"], "diagnostics": nuts["extra"]},
        "settings": settings,
        "rows": rows,
        "total_s": time.perf_counter() - t0,
    }


def _line(row: dict) -> str:
    return (
        f"{row['family']:<30} seed {row['seed']}: max mean err {row['max_mean_err']:.3f} (coord "
        f"{row['worst_coordinate']}), median {row['median_mean_err']:.3f}, med |log sd ratio| "
        f"{row['median_abs_log_sd_ratio']:.3f}, -ELBO {row['neg_elbo']:.2f} ± {row['neg_elbo_se']:.2f}, "
        f"{row['wall_s']:.1f} s"
    )


def render_markdown(report: dict, command: str) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [
        measured_line(m["date"], m, command, f"total {report['total_s']:.0f} s") + ".",
        "",
        f"Target: the quality suite's {report['target']} (d = {report['dim']}; {report['sites_order']}); "
        f"reference: NUTS, {report['reference']['num_chains']} chains x ({report['reference']['num_warmup']} "
        f"warm-up + {report['reference']['num_samples']} draws), {report['reference']['diagnostics']['divergences']}"
        f" divergences. Per-component families: N = {s['n_components']}, uniform weights, Adam from "
        f"{s['adam_rate']} decaying to {s['rate_decays_to']:g} over {s['steps']} steps, B = "
        f"{s['draws_per_component']} draws per component, means started at N NUTS draws, sds at {s['init_sd']}. "
        f"mixvi: its defaults ({s['mixvi_settings']['metric']} metric, N = {s['mixvi_settings']['n_components']}), "
        f"{s['mixvi_steps']} steps from its usual start. Scores from {s['draws']} draws of each q.",
        "",
        "| family | seed | max mean err (sds) | worst coordinate | median mean err | median abs log sd ratio "
        "| max abs log sd ratio | -ELBO (± se) | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['family']} | {r['seed']} | {r['max_mean_err']:.3g} | {r['worst_coordinate']} | "
            f"{r['median_mean_err']:.3g} | {r['median_abs_log_sd_ratio']:.3g} | {r['max_abs_log_sd_ratio']:.3g} | "
            f"{r['neg_elbo']:.2f} ± {r['neg_elbo_se']:.2f} | {r['wall_s']:.1f} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.shape_limit")
    p.add_argument("--quick", action="store_true", help="300 steps, 1 seed, diagonal only, small NUTS run")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, of " + ", ".join(SHAPES))
    p.add_argument("--n-components", type=int, default=20)
    p.add_argument("--num-samples", type=int, default=10, help="draws per component per step")
    p.add_argument("--steps", type=int, default=10_000, help="Adam steps of the per-component families")
    p.add_argument("--mixvi-steps", type=int, default=2000)
    p.add_argument("--rate", type=float, default=0.01, help="Adam's initial rate")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--draws", type=int, default=20_000)
    p.add_argument("--nuts-seed", type=int, default=0)
    p.add_argument("--nuts-warmup", type=int, default=1000)
    p.add_argument("--nuts-samples", type=int, default=1000)
    p.add_argument("--out", default=str(repo_path("docs/benchmarks/shape_limit.json")))
    p.add_argument("--md", default=str(repo_path("docs/benchmarks.md")))
    a = p.parse_args(argv)
    a.shapes = [s for s in a.shapes.split(",") if s]
    unknown = sorted(set(a.shapes) - set(SHAPES))
    if unknown:
        p.error(f"unknown shapes {unknown}; choose from {list(SHAPES)}")
    if a.quick:
        a.steps, a.mixvi_steps, a.seeds, a.shapes = 300, 300, 1, ["diagonal"]
        a.nuts_warmup = a.nuts_samples = 300
        a.draws = 2000
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    report = run_benchmark(a)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m benchmarks.shape_limit", *given])
    publish(
        report,
        a.out,
        a.md,
        "shape-limit",
        render_markdown(report, command),
        heading="## The family's limit on the horseshoe (`python -m benchmarks.shape_limit`)",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
