"""Five posteriors of posteriordb (Magnusson et al., "posteriordb: testing, benchmarking and developing
Bayesian inference algorithms", arXiv 2407.04967), written as NumPyro models, with posteriordb's
reference draws (Stan, 10 chains x 1000 draws) as the reference:

- ``eight_schools_noncentered`` (d = 10): mu, tau and 8 standardised effects theta_trans.
- ``arK`` (d = 7): an AR(5) regression on 200 simulated points; alpha, beta (5), sigma.
- ``garch11`` (d = 4): a GARCH(1, 1) volatility model on 200 points; mu, alpha0, alpha1, beta1 with flat
  priors on 0 < alpha1 < 1, 0 < beta1 < 1 - alpha1. Written with u = beta1 / (1 - alpha1) ~ Uniform(0, 1)
  and a factor 1 - alpha1 (the Jacobian that keeps Stan's flat density on (alpha1, beta1)): Stan's
  unconstrained coordinate of beta1 is logit(u), so the latent is the same, and no autoguide meets a
  support that moves with another site.
- ``gp_pois_regr`` (d = 13): Poisson regression on a latent Gaussian process at 11 points, f = L f_tilde
  with L the Cholesky factor of alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + jitter; rho ~ Gamma(25, 4),
  alpha ~ HalfNormal(2). The jitter is ``GP_JITTER`` alpha^2 (posteriordb's 1e-10 fails in float32);
  the reference draws of f are mapped to f_tilde with the same jitter in float64.
- ``diamonds`` (d = 26): brms's linear regression of log price on 24 correlated predictors of ggplot2's
  diamonds data (5000 rows); b ~ N(0, 1), Intercept ~ t_3(8, 10), sigma ~ half-t_3(0, 10).

Everything is compared on the flattened unconstrained latent that NumPyro's autoguides and
``AutoIsotropicMixture`` share (sites in the order the model samples them). The data and the reference
moments live in ``benchmarks/data/posteriordb`` (posteriordb is BSD-3-licensed; see the README there).
``python -m benchmarks.targets.posteriordb PATH`` recomputes the moments from a posteriordb checkout.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from benchmarks.targets.base import Target, latent_sites

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "posteriordb"
MOMENTS_FILE = DATA_DIR / "reference_moments.json"
AR_ORDER = 5
GP_JITTER = 1e-5
"""The GP covariance's jitter, relative to alpha^2."""
NAMES = ("eight_schools_noncentered", "arK", "garch11", "gp_pois_regr", "diamonds")
# posteriordb's data set and reference-draws file of each posterior
SOURCES = {
    "eight_schools_noncentered": ("eight_schools", "eight_schools-eight_schools_noncentered"),
    "arK": ("arK", "arK-arK"),
    "garch11": ("garch", "garch-garch11"),
    "gp_pois_regr": ("gp_pois_regr", "gp_pois_regr-gp_pois_regr"),
    "diamonds": ("diamonds", "diamonds-diamonds"),
}


def _read_zipped_json(path: Path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read(z.namelist()[0]))


def load_data(name: str) -> dict:
    """posteriordb's data set ``name`` (as stored there: lists and numbers)."""
    return _read_zipped_json(DATA_DIR / f"{name}.json.zip")


# --- the models ------------------------------------------------------------------------------------


def eight_schools_noncentered(sigma: jax.Array, y: jax.Array | None = None) -> None:
    """mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_trans_j ~ N(0, 1), y_j ~ N(mu + tau theta_trans_j, sigma_j)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", sigma.shape[0]):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu + tau * theta_trans, sigma), obs=y)


def ar_lags(y: jax.Array, order: int = AR_ORDER) -> jax.Array:
    """(T - order, order): row t holds y[t + order - k] for k = 1..order."""
    n = y.shape[0]
    return jnp.stack([y[order - k : n - k] for k in range(1, order + 1)], axis=1)


def ark(y: jax.Array) -> None:
    """y_t ~ N(alpha + sum_k beta_k y_{t-k}, sigma) for t > 5; alpha, beta_k ~ N(0, 10), sigma ~ HalfCauchy(2.5)."""
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    with numpyro.plate("lag", AR_ORDER):
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    with numpyro.plate("time", y.shape[0] - AR_ORDER):
        numpyro.sample("y", dist.Normal(alpha + ar_lags(y) @ beta, sigma), obs=y[AR_ORDER:])


def garch11(y: jax.Array, sigma1: jax.Array) -> None:
    """sigma_t^2 = alpha0 + alpha1 (y_{t-1} - mu)^2 + beta1 sigma_{t-1}^2, y_t ~ N(mu, sigma_t); flat priors
    (beta1 = (1 - alpha1) u, see the module docstring)."""
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    alpha0 = numpyro.sample("alpha0", dist.ImproperUniform(constraints.positive, (), ()))
    alpha1 = numpyro.sample("alpha1", dist.Uniform(0.0, 1.0))
    u = numpyro.sample("beta1_share", dist.Uniform(0.0, 1.0))
    numpyro.factor("flat_beta1", jnp.log1p(-alpha1))
    beta1 = (1.0 - alpha1) * u

    def volatility(prev_sigma, prev_y):
        sigma = jnp.sqrt(alpha0 + alpha1 * (prev_y - mu) ** 2 + beta1 * prev_sigma**2)
        return sigma, sigma

    first = jnp.reshape(sigma1, (1,)).astype(jnp.result_type(y, alpha0, alpha1, mu))
    _, later = jax.lax.scan(volatility, first[0], y[:-1])
    sigma = jnp.concatenate([first, later])
    with numpyro.plate("time", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def gp_cholesky(x, alpha, rho, xp=jnp):
    """Cholesky factor of alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + GP_JITTER alpha^2 I."""
    diff = x[:, None] - x[None, :]
    cov = alpha**2 * (xp.exp(-0.5 * diff**2 / rho**2) + GP_JITTER * xp.eye(x.shape[0]))
    return xp.linalg.cholesky(cov)


def gp_pois_regr(x: jax.Array, k: jax.Array | None = None) -> None:
    """k_i ~ Poisson(exp(f_i)), f = L f_tilde, f_tilde ~ N(0, I); rho ~ Gamma(25, 4), alpha ~ HalfNormal(2)."""
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    with numpyro.plate("point", x.shape[0]):
        f_tilde = numpyro.sample("f_tilde", dist.Normal(0.0, 1.0))
        f = gp_cholesky(x, alpha, rho) @ f_tilde
        numpyro.sample("k", dist.Poisson(jnp.exp(f)), obs=k)


def diamonds(xc: jax.Array, y: jax.Array | None = None) -> None:
    """y ~ N(Intercept + xc b, sigma) with centred predictors xc; b ~ N(0, 1), Intercept ~ t_3(8, 10),
    sigma ~ half-t_3(0, 10) (brms's model)."""
    with numpyro.plate("predictor", xc.shape[1]):
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", dist.FoldedDistribution(dist.StudentT(3.0, 0.0, 10.0)))
    with numpyro.plate("data", xc.shape[0]):
        numpyro.sample("y", dist.Normal(intercept + xc @ b, sigma), obs=y)


def _f32(values) -> jax.Array:
    return jnp.asarray(np.asarray(values, np.float64), jnp.float32)


def model_and_args(name: str) -> tuple:
    """The NumPyro model of posterior ``name`` and its arguments (float32 arrays)."""
    data = load_data(SOURCES[name][0])
    if name == "eight_schools_noncentered":
        return eight_schools_noncentered, (_f32(data["sigma"]), _f32(data["y"]))
    if name == "arK":
        return ark, (_f32(data["y"]),)
    if name == "garch11":
        return garch11, (_f32(data["y"]), _f32(data["sigma1"]))
    if name == "gp_pois_regr":
        return gp_pois_regr, (_f32(data["x"]), _f32(data["k"]))
    if name == "diamonds":
        x = np.asarray(data["X"], np.float64)[:, 1:]  # without the intercept column, centred as brms does
        return diamonds, (_f32(x - x.mean(0)), _f32(data["Y"]))
    raise ValueError(f"unknown posteriordb posterior {name!r}; choose one of {', '.join(NAMES)}")


# --- the reference ---------------------------------------------------------------------------------


def _stack(chains: list[dict], prefix: str) -> np.ndarray:
    """posteriordb's draws of ``prefix`` (a scalar or ``prefix[1]``, ``prefix[2]``, ...) over all chains."""
    def column(key):
        return np.concatenate([np.asarray(c[key], np.float64) for c in chains])

    keys = sorted((k for k in chains[0] if k.startswith(prefix + "[")), key=lambda k: int(k[len(prefix) + 1 : -1]))
    return column(prefix) if prefix in chains[0] else np.stack([column(k) for k in keys], 1)


def site_draws(name: str, chains: list[dict], args: tuple) -> dict[str, np.ndarray]:
    """posteriordb's reference draws of ``name`` as draws of our model's latent sites (constrained)."""
    if name == "eight_schools_noncentered":
        mu, tau = _stack(chains, "mu"), _stack(chains, "tau")
        return {"mu": mu, "tau": tau, "theta_trans": (_stack(chains, "theta") - mu[:, None]) / tau[:, None]}
    if name == "arK":
        return {k: _stack(chains, k) for k in ("alpha", "beta", "sigma")}
    if name == "garch11":
        out = {k: _stack(chains, k) for k in ("mu", "alpha0", "alpha1")}
        out["beta1_share"] = _stack(chains, "beta1") / (1.0 - out["alpha1"])
        return out
    if name == "gp_pois_regr":
        x = np.asarray(args[0], np.float64)
        rho, alpha, f = _stack(chains, "rho"), _stack(chains, "alpha"), _stack(chains, "f")
        f_tilde = np.stack([np.linalg.solve(gp_cholesky(x, a, r, xp=np), v) for a, r, v in zip(alpha, rho, f)])
        return {"rho": rho, "alpha": alpha, "f_tilde": f_tilde}
    if name == "diamonds":
        return {"b": _stack(chains, "b"), "Intercept": _stack(chains, "Intercept"), "sigma": _stack(chains, "sigma")}
    raise ValueError(name)


def write_reference_moments(posteriordb_root: str | Path) -> dict:
    """Means and sds of posteriordb's reference draws on our models' unconstrained latent, from a
    posteriordb checkout (its ``posterior_database`` folder inside ``posteriordb_root``); written to
    ``MOMENTS_FILE``."""
    from benchmarks.quality import unconstrained_draws

    root = Path(posteriordb_root) / "posterior_database" / "reference_posteriors" / "draws" / "draws"
    out = {}
    for name in NAMES:
        target = make_target(name, with_reference=False)
        chains = _read_zipped_json(root / f"{SOURCES[name][1]}.json.zip")
        draws = site_draws(name, chains, target.args)
        z = np.asarray(unconstrained_draws(target, {k: jnp.asarray(v) for k, v in draws.items()}), np.float64)
        out[name] = {"mean": z.mean(0).tolist(), "sd": z.std(0).tolist(), "draws": int(z.shape[0]),
                     "source": f"posteriordb reference_posteriors/draws/{SOURCES[name][1]}.json"}
    MOMENTS_FILE.write_text(json.dumps(out, indent=1) + "\n")
    return out


DESCRIPTIONS = {
    "eight_schools_noncentered": "eight schools, non-centred (mu, log tau, theta_trans)",
    "arK": "AR(5) regression, 200 simulated points (alpha, beta, log sigma)",
    "garch11": "GARCH(1,1), 200 points (mu, log alpha0, logit alpha1, logit beta1/(1-alpha1))",
    "gp_pois_regr": "Poisson GP regression, 11 points (log rho, log alpha, f_tilde)",
    "diamonds": "linear regression on 24 correlated predictors, 5000 rows (b, Intercept, log sigma)",
}


def make_target(name: str, with_reference: bool = True) -> Target:
    """The posterior ``name`` as a quality-suite target, with posteriordb's reference moments."""
    model, args = model_and_args(name)
    dim = sum(int(np.size(site["value"])) for site in latent_sites(model, args).values())
    ref_mean = ref_sd = None
    info = {"n_components": "auto", "main": "mean_err_max", "posteriordb": SOURCES[name][1],
            "description": f"posteriordb {SOURCES[name][1]}: {DESCRIPTIONS[name]}"}
    if with_reference:
        moments = json.loads(MOMENTS_FILE.read_text())[name]
        ref_mean, ref_sd = np.asarray(moments["mean"]), np.asarray(moments["sd"])
        info["reference"] = f"{moments['draws']} draws of {moments['source']}"
    return Target(name=name, family="posteriordb", model=model, dim=dim, args=args, log_prob=None, log_z=None,
                  info=info, ref_mean=ref_mean, ref_sd=ref_sd)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m benchmarks.targets.posteriordb PATH_TO_POSTERIORDB_CHECKOUT")
    for key, value in write_reference_moments(sys.argv[1]).items():
        print(key, value["draws"], "draws, d =", len(value["mean"]))
