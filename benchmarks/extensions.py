"""``mixvi bench extensions``: evidence for mixvi's extensions beyond the paper (issue 4).

Three experiments, several seeds each; every fit reports the Pareto k-hat of its importance ratios.

1. **Scales.** A centred eight-schools model (mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau),
   y_j ~ N(theta_j, sigma_j), the classic data) and an axis-aligned ill-conditioned Gaussian
   N(mu, diag(s^2)), d = 100, s log-spaced over 1e-2..1. ``MixVI`` with ``metric="isotropic"`` and
   ``metric="diagonal"`` (N = 1 and 5 components) against NumPyro's ``AutoMultivariateNormal`` fitted by
   ``SVI`` + Adam. Reference: exact for the Gaussian; for eight schools NUTS on the non-centred
   parameterisation, mapped to the centred model's unconstrained coordinates (mu, log tau, theta), and
   log Z by quadrature (theta integrated out analytically). Metrics: |mean - mean_ref| / sd_ref and
   |sd / sd_ref - 1| per unconstrained coordinate (max and average over coordinates) and KL(q || p)
   (closed form when q is Gaussian and p is; otherwise a Monte-Carlo estimate of E_q[log q + V] + log Z).
2. **Mode mass.** p = 0.3 N((-3, 0), I) + 0.7 N((3, 0), I), N = 4 components: uniform weights (mass
   on the right read off q, and PSIS-reweighted) against ``weights="fisher-rao"``. The mass is
   P(x_0 > 0): closed form under q, exact under p (0.7 Phi(3) + 0.3 Phi(-3)).
3. **Reweighting.** For every fit, S draws z_s ~ q, log w_s = -V(z_s) - log q(z_s), Pareto-smoothed with
   ``mixvi.psis_log_weights``; the summaries (mean / sd errors, mode mass) of the same draws unweighted
   and self-normalised-weighted are compared (common random numbers, so the difference is the weights'
   doing, not the Monte-Carlo noise of two samples). ``importance_resample`` (the user-facing path,
   which resamples with these weights) is also run on the bimodal fits.

Entry point: ``main(argv) -> int`` (``mixvi bench extensions``, ``python -m benchmarks.extensions``).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from jax.flatten_util import ravel_pytree
from jax.scipy.special import logsumexp
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, init_to_value
from numpyro.infer.autoguide import AutoMultivariateNormal
from scipy.special import ndtr

import mixvi
from benchmarks.report import machine_info as report_machine_info
from benchmarks.report import markers, replace_section

MD_START, MD_END = markers("extensions")

# claim thresholds (stated in the report)
WITHIN_RATIO = 1.25  # "within the error of AutoMultivariateNormal": error <= 1.25 x its error ...
WITHIN_ABS = 0.05  # ... or at most 0.05 (sd units / nats) above it
MASS_TOL = 0.05  # mode mass within 0.05 of the truth
CHANGE_TOL = 0.01  # reweighting "helps" / "hurts" a summary when it changes its error by more than this ...
NOISE_FACTOR = 2.0  # ... and, separately reported, by more than 2 / sqrt(ESS) (beyond the weighted estimate's noise)

# --------------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------------
EIGHT_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
EIGHT_NAMES = ["mu", "log tau"] + [f"theta[{j}]" for j in range(8)]


def eight_schools_centred(y: np.ndarray = EIGHT_Y, sigma: np.ndarray = EIGHT_SIGMA) -> None:
    """Centred eight schools: mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau), y_j ~ N(theta_j, sigma_j)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", len(sigma)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, jnp.asarray(sigma)), obs=jnp.asarray(y))


def eight_schools_noncentred(y: np.ndarray = EIGHT_Y, sigma: np.ndarray = EIGHT_SIGMA) -> None:
    """The same posterior, non-centred: theta_j = mu + tau eta_j, eta_j ~ N(0, 1) (for NUTS)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", len(sigma)):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("y", dist.Normal(theta, jnp.asarray(sigma)), obs=jnp.asarray(y))


def centred_latent(mu: Any, tau: Any, theta: Any) -> jax.Array:
    """Flatten (mu, tau, theta) draws into the centred model's unconstrained latent (mu, log tau, theta),
    in the order ``AutoContinuous`` uses (``ravel_pytree`` of the site dict): shape (S, 10)."""

    def one(m: jax.Array, t: jax.Array, th: jax.Array) -> jax.Array:
        return ravel_pytree({"mu": m, "tau": jnp.log(t), "theta": th})[0]

    return jax.vmap(one)(jnp.asarray(mu), jnp.asarray(tau), jnp.asarray(theta))


def eight_schools_log_evidence(num_mu: int = 801, num_log_tau: int = 801) -> float:
    """log Z of eight schools by quadrature: theta integrated out (y_j | mu, tau ~ N(mu, tau^2 + sigma_j^2)),
    then the trapezoid rule over mu in [-40, 50] and t = log tau in [-14, 9] (the integrand is negligible
    outside), with the Jacobian tau of tau = e^t."""
    mu = np.linspace(-40.0, 50.0, num_mu)[:, None, None]
    t = np.linspace(-14.0, 9.0, num_log_tau)[None, :, None]
    var = np.exp(2 * t) + EIGHT_SIGMA**2
    loglik = -0.5 * np.sum(np.log(2 * np.pi * var) + (EIGHT_Y - mu) ** 2 / var, axis=-1)
    mu, t = mu[..., 0], t[..., 0]
    log_prior_mu = -0.5 * np.log(2 * np.pi * 25.0) - mu**2 / 50.0
    log_prior_tau = np.log(2.0 / (np.pi * 5.0)) - np.log1p(np.exp(2 * t) / 25.0) + t  # HalfCauchy(5) dtau, + Jacobian
    log_f = loglik + log_prior_mu + log_prior_tau
    top = log_f.max()
    f = np.exp(log_f - top)
    integral = np.trapezoid(np.trapezoid(f, t[0], axis=1), mu[:, 0])
    return float(top + np.log(integral))


def gaussian_target(dim: int = 100, seed: int = 0) -> tuple[Callable[[], None], np.ndarray, np.ndarray]:
    """An axis-aligned ill-conditioned Gaussian N(m, diag(s^2)): s log-spaced over 1e-2..1, m ~ N(0, I)
    (fixed by ``seed``). Returns (model, m, s); NumPyro's potential is exactly -log p (normalised)."""
    sd = np.logspace(-2.0, 0.0, dim)
    mean = np.asarray(jax.random.normal(jax.random.PRNGKey(1000 + seed), (dim,)), np.float64)
    loc, scale = jnp.asarray(mean, jnp.float32), jnp.asarray(sd, jnp.float32)

    def model() -> None:
        numpyro.sample("x", dist.Normal(loc, scale).to_event(1))

    return model, mean, sd


def correlated_gaussian_target(
    dim: int = 100, rho: float = 0.5, seed: int = 0
) -> tuple[Callable[[], None], np.ndarray, np.ndarray]:
    """The same scales with AR(1) correlation rho between neighbouring coordinates: N(m, S R S), S = diag(s),
    R_kl = rho^|k - l|. Outside the diagonal family (its best diagonal fit has sds s_k sqrt((1 - rho^2) /
    (1 + rho^2)) inside the chain), so it tests what the diagonal metric does beyond axis-aligned targets.
    Returns (model, m, covariance)."""
    _, mean, sd = gaussian_target(dim, seed)
    idx = np.arange(dim)
    cov = sd[:, None] * rho ** np.abs(idx[:, None] - idx[None, :]) * sd[None, :]
    loc, tril = jnp.asarray(mean, jnp.float32), jnp.asarray(np.linalg.cholesky(cov), jnp.float32)

    def model() -> None:
        numpyro.sample("x", dist.MultivariateNormal(loc, scale_tril=tril))

    return model, mean, cov


BIMODAL_CENTRES = np.array([[-3.0, 0.0], [3.0, 0.0]])
BIMODAL_WEIGHTS = np.array([0.3, 0.7])


def bimodal_log_density(x: jax.Array) -> jax.Array:
    """log p(x) of 0.3 N((-3, 0), I) + 0.7 N((3, 0), I) (normalised), x (..., 2)."""
    comps = [
        jnp.log(w) + dist.Normal(jnp.asarray(c, jnp.float32), 1.0).to_event(1).log_prob(x)
        for w, c in zip(BIMODAL_WEIGHTS, BIMODAL_CENTRES)
    ]
    return logsumexp(jnp.stack(comps), axis=0)


def bimodal_model() -> None:
    """The asymmetric bimodal target as a NumPyro model (an improper flat site plus a factor)."""
    x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real_vector, (), (2,)))
    numpyro.factor("target", bimodal_log_density(x))


def bimodal_truth() -> dict[str, np.ndarray | float]:
    """Exact mean, sd and right-hand mass P(x_0 > 0) of the bimodal target."""
    w, c = BIMODAL_WEIGHTS, BIMODAL_CENTRES
    mean = w @ c
    var = w @ (c**2 + 1.0) - mean**2
    mass = float(w @ ndtr(c[:, 0]))
    return {"mean": mean, "sd": np.sqrt(var), "mass_right": mass}


# --------------------------------------------------------------------------------------------------
# metric helpers
# --------------------------------------------------------------------------------------------------
def gaussian_kl(mean_q: Any, cov_q: Any, mean_p: Any, cov_p: Any) -> float:
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)) in closed form (float64). A 1-D ``cov`` is a diagonal."""
    mq, mp = np.asarray(mean_q, np.float64), np.asarray(mean_p, np.float64)
    cq, cp = np.asarray(cov_q, np.float64), np.asarray(cov_p, np.float64)
    cq = np.diag(cq) if cq.ndim == 1 else cq
    cp = np.diag(cp) if cp.ndim == 1 else cp
    d = mq.size
    lp = np.linalg.cholesky(cp)
    sol = np.linalg.solve(lp, cq)
    trace = np.trace(np.linalg.solve(lp.T, sol))
    diff = np.linalg.solve(lp, mp - mq)
    _, logdet_q = np.linalg.slogdet(cq)
    logdet_p = 2 * np.sum(np.log(np.diag(lp)))
    return float(0.5 * (trace + diff @ diff - d + logdet_p - logdet_q))


def family_floor_kl(cov: Any) -> dict[str, float]:
    """The smallest KL(q || p) over single Gaussians q of each family, for p = N(m, cov): isotropic
    (eps* = d / tr P, P = cov^-1) 0.5 [log det cov + d log(tr P / d)]; diagonal (v_k* = 1 / P_kk)
    0.5 [log det cov + sum_k log P_kk]. The mean is exact in both; these are the N = 1 families' floors."""
    c = np.asarray(cov, np.float64)
    c = np.diag(c) if c.ndim == 1 else c
    d = c.shape[0]
    prec = np.linalg.inv(c)
    _, logdet = np.linalg.slogdet(c)
    return {
        "isotropic": float(0.5 * (logdet + d * np.log(np.trace(prec) / d))),
        "diagonal": float(0.5 * (logdet + np.sum(np.log(np.diag(prec))))),
    }


def moment_errors(mean: Any, sd: Any, ref_mean: Any, ref_sd: Any) -> dict[str, float]:
    """Errors in units of the reference sd: |mean - ref_mean| / ref_sd and |sd - ref_sd| / ref_sd, max
    and average over coordinates."""
    ref_sd = np.asarray(ref_sd, np.float64)
    me = np.abs(np.asarray(mean, np.float64) - np.asarray(ref_mean, np.float64)) / ref_sd
    se = np.abs(np.asarray(sd, np.float64) - ref_sd) / ref_sd
    return {
        "mean_err_max": float(me.max()),
        "mean_err_avg": float(me.mean()),
        "sd_err_max": float(se.max()),
        "sd_err_avg": float(se.mean()),
    }


def halfspace_mass(locs: Any, scales: Any, weights: Any = None, metric: Any = None, axis: int = 0) -> float:
    """P_q(x_axis > 0) for q = sum_i w_i N(m_i, sigma_i^2 D) in closed form: sum_i w_i Phi(m_i,axis / (sigma_i sqrt D_axis))."""
    locs = np.asarray(locs, np.float64)
    scales = np.asarray(scales, np.float64)
    w = np.full(locs.shape[0], 1.0 / locs.shape[0]) if weights is None else np.asarray(weights, np.float64)
    root = 1.0 if metric is None else math.sqrt(float(np.asarray(metric, np.float64)[axis]))
    return float(w @ ndtr(locs[:, axis] / (scales * root)))


def weighted_moments(z: Any, log_w: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and sd of draws z (S, d), self-normalised by exp(log_w) (uniform when None)."""
    z = np.asarray(z, np.float64)
    if log_w is None:
        w = np.full(z.shape[0], 1.0 / z.shape[0])
    else:
        lw = np.asarray(log_w, np.float64)
        w = np.exp(lw - np.logaddexp.reduce(lw))
    mean = w @ z
    var = w @ (z - mean) ** 2
    return mean, np.sqrt(var)


def weighted_mass(z: Any, log_w: Any = None, axis: int = 0) -> float:
    """Self-normalised estimate of P(x_axis > 0) from draws z (S, d) and log weights (uniform when None)."""
    z = np.asarray(z)
    right = (z[:, axis] > 0).astype(np.float64)
    if log_w is None:
        return float(right.mean())
    lw = np.asarray(log_w, np.float64)
    return float(np.exp(lw - np.logaddexp.reduce(lw)) @ right)


def component_split(locs: Any, weights: Any = None, axis: int = 0) -> dict[str, Any]:
    """Which side of x_axis = 0 every component's mean lies on: counts (right / left) and the weight
    on each side (1/N each under uniform weights)."""
    locs = np.asarray(locs, np.float64)
    w = np.full(locs.shape[0], 1.0 / locs.shape[0]) if weights is None else np.asarray(weights, np.float64)
    right = locs[:, axis] > 0
    return {
        "right": int(right.sum()),
        "left": int((~right).sum()),
        "label": f"{int(right.sum())}R/{int((~right).sum())}L",
        "weight_right": float(w[right].sum()),
    }


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of the values that are not NaN (NaN when none; +-inf are kept)."""
    vals = [float(v) for v in values if v is not None and not np.isnan(v)]
    if not vals:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": float(statistics.median(vals)), "min": min(vals), "max": max(vals), "n": len(vals)}


def compare_change(weighted_err: float, plain_err: float, ess: float | None = None) -> str:
    """'helps' / 'hurts' when reweighting changes an error by more than CHANGE_TOL (``ess`` None) or by
    more than NOISE_FACTOR / sqrt(ESS) (the Monte-Carlo error of a self-normalised estimate in sd units),
    'same' otherwise."""
    tol = CHANGE_TOL if ess is None else NOISE_FACTOR / math.sqrt(max(ess, 1.0))
    if not np.isfinite(weighted_err):
        return "hurts"
    if weighted_err < plain_err - tol:
        return "helps"
    if weighted_err > plain_err + tol:
        return "hurts"
    return "same"


# --------------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def eight_schools_reference(
    num_chains: int = 4, num_samples: int = 5000, num_warmup: int = 1000, seed: int = 0
) -> dict:
    """NUTS (target_accept 0.95) on the non-centred model; draws mapped to the centred unconstrained
    latent (mu, log tau, theta). Cached in-process. Returns mean, sd, min bulk ESS, divergences, seconds."""
    t0 = time.perf_counter()
    mcmc = MCMC(
        NUTS(eight_schools_noncentred, target_accept_prob=0.95),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging",))
    s = mcmc.get_samples(group_by_chain=True)
    z = centred_latent(s["mu"].reshape(-1), s["tau"].reshape(-1), s["theta"].reshape(-1, 8))
    z = np.asarray(z, np.float64)
    ess = numpyro.diagnostics.effective_sample_size(z.reshape(num_chains, num_samples, -1))
    return {
        "mean": z.mean(0),
        "sd": z.std(0),
        "ess_min": float(np.min(ess)),
        "divergences": int(np.sum(mcmc.get_extra_fields()["diverging"])),
        "num_draws": int(z.shape[0]),
        "seconds": time.perf_counter() - t0,
        "settings": {"chains": num_chains, "samples": num_samples, "warmup": num_warmup, "target_accept": 0.95},
    }


@functools.lru_cache(maxsize=1)
def eight_schools_log_z() -> float:
    """Cached ``eight_schools_log_evidence``."""
    return eight_schools_log_evidence()


# --------------------------------------------------------------------------------------------------
# fits and their evaluation
# --------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """A benchmark target: model, its flat-latent potential, reference moments, and what to measure."""

    name: str
    model: Callable
    potential: Callable[[jax.Array], jax.Array]
    ref_mean: np.ndarray
    ref_sd: np.ndarray
    log_z: float  # log normaliser of exp(-V)
    gaussian_cov: np.ndarray | None = None  # covariance (1-D: diagonal) when p is Gaussian (exact KL)
    mass_right: float | None = None  # exact P(x_0 > 0) (bimodal)


def make_target(name: str, model: Callable, ref_mean: Any, ref_sd: Any, log_z: float, **kw: Any) -> Target:
    """Wrap ``model``: the flat-latent potential comes from an ``AutoIsotropicMixture`` set up on it (the
    same ``AutoContinuous`` latent layout as ``AutoMultivariateNormal``)."""
    layout = mixvi.AutoIsotropicMixture(model, n_components=1)
    layout.setup(jax.random.PRNGKey(0))
    pot = layout.potential_fn()
    key = jax.random.PRNGKey(0)
    return Target(
        name,
        model,
        lambda z: pot(z, key),
        np.asarray(ref_mean, np.float64),
        np.asarray(ref_sd, np.float64),
        float(log_z),
        **kw,
    )


def _proposal(qp: dict) -> dist.Distribution:
    if "scale_tril" in qp:
        return dist.MultivariateNormal(qp["loc"], scale_tril=qp["scale_tril"])
    return mixvi.IsotropicMixture(qp["locs"], qp["scales"], qp.get("weights"), qp.get("metric"))


@functools.lru_cache(maxsize=16)
def _draw_fn(potential: Callable, num_draws: int) -> Callable:
    @jax.jit
    def run(qp: dict, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        q = _proposal(qp)
        z = q.sample(key, (num_draws,))
        return z, -jax.vmap(potential)(z), q.log_prob(z)

    return run


def closed_form(qp: dict) -> dict[str, np.ndarray]:
    """Mean and sd of q (closed form), and its covariance when q is a single Gaussian."""
    if "scale_tril" in qp:
        lt = np.asarray(qp["scale_tril"], np.float64)
        cov = lt @ lt.T
        return {"mean": np.asarray(qp["loc"], np.float64), "sd": np.sqrt(np.diag(cov)), "cov": cov}
    q = _proposal(qp)
    out = {"mean": np.asarray(q.mean, np.float64), "sd": np.sqrt(np.asarray(q.variance, np.float64))}
    if qp["locs"].shape[0] == 1:
        out["cov"] = np.asarray(q.variance, np.float64)  # diagonal: eps D
    return out


def evaluate_fit(target: Target, qp: dict, key: jax.Array, num_draws: int) -> dict[str, Any]:
    """k-hat, ESS, KL and the summaries of q: closed form, its S draws unweighted, and PSIS-weighted."""
    z, log_p, log_q = _draw_fn(target.potential, num_draws)(qp, key)
    eps = float(np.finfo(np.asarray(log_q).dtype).eps)
    z, log_p, log_q = (np.asarray(a, np.float64) for a in (z, log_p, log_q))
    log_w = log_p - log_q
    psis = mixvi.psis_log_weights(log_w)
    khat = psis.khat
    # q = p up to rounding: k-hat is -inf (mixvi.psis_khat's rule; psis_log_weights returns NaN there)
    if np.all(np.isfinite(log_w)) and np.ptp(log_w) <= 64 * eps * (np.max(np.abs(log_p)) + np.max(np.abs(log_q)) + 1):
        khat = -math.inf
    cf = closed_form(qp)
    out: dict[str, Any] = {
        "khat": khat,
        "ess": psis.ess,
        "ess_fraction": psis.ess / num_draws,
        "num_draws": num_draws,
        "log_w_sd": float(np.std(log_w[np.isfinite(log_w)])) if np.isfinite(log_w).any() else math.nan,
    }
    out["closed_form"] = moment_errors(cf["mean"], cf["sd"], target.ref_mean, target.ref_sd)
    if target.ref_mean.size <= 10:  # per-coordinate detail (eight schools, bimodal)
        out["per_coordinate"] = {
            "mean_err": ((cf["mean"] - target.ref_mean) / target.ref_sd).tolist(),
            "sd_ratio": (cf["sd"] / target.ref_sd).tolist(),
        }
    out["draws"] = moment_errors(*weighted_moments(z), target.ref_mean, target.ref_sd)
    out["psis"] = moment_errors(*weighted_moments(z, psis.log_weights), target.ref_mean, target.ref_sd)
    # KL(q || p) = E_q[log q + V] + log Z; closed form when q and p are both Gaussian
    diff = log_q - log_p
    finite = np.isfinite(diff)
    out["kl_mc"] = float(diff[finite].mean() + target.log_z) if finite.any() else math.nan
    out["kl_mc_se"] = float(diff[finite].std() / math.sqrt(finite.sum())) if finite.any() else math.nan
    out["kl_exact"] = None
    if target.gaussian_cov is not None and "cov" in cf:
        out["kl_exact"] = gaussian_kl(cf["mean"], cf["cov"], target.ref_mean, target.gaussian_cov)
    out["kl"] = out["kl_exact"] if out["kl_exact"] is not None else out["kl_mc"]
    if target.mass_right is not None:
        if "scale_tril" in qp:
            cf_mass = float(ndtr(cf["mean"][0] / cf["sd"][0]))
        else:
            cf_mass = halfspace_mass(qp["locs"], qp["scales"], qp.get("weights"), qp.get("metric"))
        out["closed_form"]["mass_right"] = cf_mass
        out["draws"]["mass_right"] = weighted_mass(z)
        out["psis"]["mass_right"] = weighted_mass(z, psis.log_weights)
        for k in ("closed_form", "draws", "psis"):
            out[k]["mass_err"] = abs(out[k]["mass_right"] - target.mass_right)
    verdicts, beyond = {}, {}
    for metric in ("mean_err_max", "sd_err_max", "mean_err_avg", "sd_err_avg", "mass_err"):
        if metric in out["draws"]:
            verdicts[metric] = compare_change(out["psis"][metric], out["draws"][metric])
            beyond[metric] = compare_change(out["psis"][metric], out["draws"][metric], psis.ess)
    out["reweighting"] = verdicts
    out["reweighting_beyond_noise"] = beyond
    return out


@dataclass(frozen=True)
class Method:
    """One fitted family: MixVI with (metric, weights, N), or AutoMultivariateNormal (``kind='mvn'``)."""

    kind: str  # 'mixvi' or 'mvn'
    n_components: int = 1
    metric: str = "isotropic"
    weights: str = "uniform"

    @property
    def label(self) -> str:
        """Row label of the tables."""
        if self.kind == "mvn":
            return "AutoMultivariateNormal (SVI+Adam)"
        extra = "" if self.weights == "uniform" else f", {self.weights}"
        return f"{self.metric} N={self.n_components}{extra}"


class Fitter:
    """Fits one method on one model for several seeds, compiling the training loop once.

    MixVI: one ``MixVI`` whose public ``update`` is scanned for ``steps`` steps under one ``jax.jit``
    (what ``MixVI.run`` does, without its per-call recompilation); every seed gets its own initial
    params from a fresh guide set up with that seed (so ``init_to_uniform`` draws differ), passed as
    ``init_params``. AutoMultivariateNormal: NumPyro ``SVI`` (``Trace_ELBO`` with ``num_samples``
    particles, Adam with an exponentially decaying rate), its ``update`` scanned the same way.
    """

    def __init__(
        self,
        method: Method,
        model: Callable,
        steps: int,
        *,
        num_samples: int = 10,
        init_scale: float = 0.1,
        init_loc_fn: Callable | None = None,
        mvn_lr: float = 3e-2,
    ):
        self.method, self.model, self.steps, self.num_samples = method, model, steps, num_samples
        if method.kind == "mvn":
            self._guide_kw: dict[str, Any] = {"init_scale": init_scale}
            self.guide = AutoMultivariateNormal(model, **self._guide_kw)
            tx = optax.adam(optax.exponential_decay(mvn_lr, steps, 1e-3))
            self.svi = SVI(model, self.guide, tx, Trace_ELBO(num_particles=num_samples))
            step = self.svi.update
            self.grad_evals = steps * num_samples
        else:
            self._guide_kw = {
                "n_components": method.n_components,
                "metric": method.metric,
                "weights": method.weights,
                "init_scale": init_scale,
            }
            if init_loc_fn is not None:
                self._guide_kw["init_loc_fn"] = init_loc_fn
            self.guide = mixvi.AutoIsotropicMixture(model, **self._guide_kw)
            self.mixvi = mixvi.MixVI(model, self.guide, num_samples=num_samples)
            step = self.mixvi.update
            self.grad_evals = steps * method.n_components * num_samples

        @jax.jit
        def run(state: Any) -> tuple[Any, jax.Array]:
            return jax.lax.scan(lambda c, _: step(c), state, None, length=steps)

        self._run = run

    def _initial_params(self, key: jax.Array) -> dict:
        if self.method.kind == "mvn":
            guide = AutoMultivariateNormal(self.model, **self._guide_kw)
            with numpyro.handlers.trace() as tr, numpyro.handlers.seed(rng_seed=key):
                guide()
            return {k: v["value"] for k, v in tr.items() if v["type"] == "param"}
        return mixvi.AutoIsotropicMixture(self.model, **self._guide_kw).setup(key)

    def fit(self, seed: int) -> dict[str, Any]:
        """Fit with ``seed``; returns the proposal params ``qp`` (for ``evaluate_fit``), constrained
        ``params``, seconds (the first seed includes the compilation), target-gradient evaluations, the
        mean loss over the last 10% of steps and the number of non-finite (rejected) steps."""
        t0 = time.perf_counter()
        k_init, k_run = jax.random.split(jax.random.PRNGKey(seed))
        init = self._initial_params(k_init)
        if self.method.kind == "mvn":
            state, losses = self._run(self.svi.init(k_run, init_params=init))
            params = self.svi.get_params(state)
            qp = {"loc": params["auto_loc"], "scale_tril": params["auto_scale_tril"]}
        else:
            state, losses = self._run(self.mixvi.init(k_run, init_params=init))
            params = self.mixvi.get_params(state)
            q = self.guide.get_posterior(params)
            qp = {"locs": q.locs, "scales": q.scales, "weights": q.weights, "metric": q.metric}
        jax.block_until_ready(qp)
        losses = np.asarray(losses, np.float64)
        tail = losses[-max(1, len(losses) // 10) :]
        return {
            "qp": qp,
            "params": params,
            "seconds": time.perf_counter() - t0,
            "grad_evals": int(self.grad_evals),
            "final_loss": float(np.nanmean(tail)),
            "nonfinite_steps": int(np.sum(~np.isfinite(losses))),
            "params_finite": bool(all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(qp))),
        }


# --------------------------------------------------------------------------------------------------
# experiments
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Sizes of one run (``--quick`` shrinks them)."""

    seeds: int = 5
    bimodal_seeds: int = 10
    gauss_steps: int = 2000
    eight_steps: int = 3000
    bimodal_steps: int = 2000
    mvn_steps: int = 5000
    num_samples: int = 10  # B (MixVI) and particles (SVI)
    num_draws: int = 16000  # S, draws of q per evaluation
    ref_chains: int = 4
    ref_samples: int = 5000
    ref_warmup: int = 1000
    gauss_dim: int = 100
    components: tuple[int, ...] = (1, 5)
    correlated: bool = True  # also fit the AR(1)-correlated Gaussian (outside the diagonal family)
    rho: float = 0.5
    quick: bool = False


QUICK = Settings(
    seeds=2,
    bimodal_seeds=4,
    correlated=False,
    gauss_steps=1000,
    eight_steps=1500,
    bimodal_steps=1000,
    mvn_steps=2500,
    num_draws=4000,
    ref_chains=2,
    ref_samples=2000,
    ref_warmup=500,
    quick=True,
)


def _scale_methods(components: Sequence[int]) -> list[Method]:
    out = [Method("mixvi", n, metric) for metric in ("isotropic", "diagonal") for n in components]
    return out + [Method("mvn")]


def _record(target: Target, method: Method, seed: int, fitted: dict, ev: dict, steps: int) -> dict[str, Any]:
    rec = {
        "target": target.name,
        "method": method.label,
        "kind": method.kind,
        "n_components": method.n_components,
        "metric": method.metric,
        "weights": method.weights,
        "seed": seed,
        "steps": steps,
    }
    rec.update({k: v for k, v in fitted.items() if k not in ("qp", "params")})
    rec.update(ev)
    return rec


def run_scales(st: Settings, log: Callable[[str], None] | None = print) -> tuple[list[dict], dict]:
    """Experiment 1 (and 3 on its fits): the Gaussians and eight schools, every method and seed. Returns the
    records and the reference information (NUTS, log Z, the N = 1 families' KL floors on the Gaussians)."""
    g_model, g_mean, g_sd = gaussian_target(st.gauss_dim)
    gauss = make_target(f"gaussian d={st.gauss_dim}", g_model, g_mean, g_sd, 0.0, gaussian_cov=g_sd**2)
    c_model, c_mean, c_cov = correlated_gaussian_target(st.gauss_dim, st.rho)
    corr = make_target(
        f"gaussian d={st.gauss_dim}, AR(1) rho={st.rho:g}",
        c_model,
        c_mean,
        np.sqrt(np.diag(c_cov)),
        0.0,
        gaussian_cov=c_cov,
    )
    ref = eight_schools_reference(st.ref_chains, st.ref_samples, st.ref_warmup)
    log_z = eight_schools_log_z()
    if log:
        log(
            f"  eight-schools reference: NUTS {ref['num_draws']} draws, min ESS {ref['ess_min']:.0f}, "
            f"{ref['divergences']} divergences, {ref['seconds']:.0f} s; log Z = {log_z:.4f} (quadrature)"
        )
    eight = make_target("eight schools (centred)", eight_schools_centred, ref["mean"], ref["sd"], log_z)
    records = []
    floors = {gauss.name: family_floor_kl(g_sd**2), corr.name: family_floor_kl(c_cov)}
    targets = (
        [(gauss, st.gauss_steps)] + ([(corr, st.gauss_steps)] if st.correlated else []) + [(eight, st.eight_steps)]
    )
    for target, steps in targets:
        for method in _scale_methods(st.components):
            n_steps = st.mvn_steps if method.kind == "mvn" else steps
            fitter = Fitter(method, target.model, n_steps, num_samples=st.num_samples)
            for seed in range(st.seeds):
                fitted = fitter.fit(seed)
                ev = evaluate_fit(target, fitted["qp"], jax.random.PRNGKey(10_000 + seed), st.num_draws)
                records.append(_record(target, method, seed, fitted, ev, n_steps))
                if log:
                    c = ev["closed_form"]
                    log(
                        f"  {target.name:24s} {method.label:34s} seed {seed}: mean err max {c['mean_err_max']:.3f}, "
                        f"sd err max {c['sd_err_max']:.3f}, KL {ev['kl']:.3g}, k-hat {ev['khat']:.2f} "
                        f"[{fitted['seconds']:.1f} s]"
                    )
    ref_info = {k: v for k, v in ref.items() if k not in ("mean", "sd")}
    ref_info.update(
        {
            "log_z": log_z,
            "coordinates": EIGHT_NAMES,
            "mean": ref["mean"].tolist(),
            "sd": ref["sd"].tolist(),
            "mc_error_of_ref_mean_in_sd": 1.0 / math.sqrt(ref["ess_min"]),
            "family_floor_kl": floors,
        }
    )
    return records, ref_info


def run_bimodal(st: Settings, log: Callable[[str], None] | None = print) -> list[dict]:
    """Experiment 2 (and 3 on its fits): N = 4, uniform vs Fisher-Rao weights, unweighted vs PSIS."""
    truth = bimodal_truth()
    target = make_target(
        "bimodal 0.3/0.7", bimodal_model, truth["mean"], truth["sd"], 0.0, mass_right=truth["mass_right"]
    )
    init = init_to_value(values={"x": jnp.zeros(2)})
    records = []
    for weights in ("uniform", "fisher-rao"):
        method = Method("mixvi", 4, "isotropic", weights)
        fitter = Fitter(
            method, bimodal_model, st.bimodal_steps, num_samples=st.num_samples, init_scale=3.0, init_loc_fn=init
        )
        for seed in range(st.bimodal_seeds):
            fitted = fitter.fit(seed)
            ev = evaluate_fit(target, fitted["qp"], jax.random.PRNGKey(10_000 + seed), st.num_draws)
            res = mixvi.importance_resample(
                fitter.guide,
                fitted["params"],
                rng_key=jax.random.PRNGKey(20_000 + seed),
                num_samples=st.num_draws // 4,
                on_bad_khat="ignore",
            )
            mass = weighted_mass(np.asarray(res.latent))
            ev["resampled"] = {
                "mass_right": mass,
                "mass_err": abs(mass - truth["mass_right"]),
                "khat": res.khat,
                "ess": res.ess,
                "num_samples": st.num_draws // 4,
                "num_proposals": res.num_proposals,
            }
            ev["split"] = component_split(fitted["qp"]["locs"], fitted["qp"]["weights"])
            rec = _record(target, method, seed, fitted, ev, st.bimodal_steps)
            records.append(rec)
            if log:
                log(
                    f"  {target.name:24s} {method.label:34s} seed {seed}: split {ev['split']['label']}, "
                    f"mass q {ev['closed_form']['mass_right']:.3f}, PSIS {ev['psis']['mass_right']:.3f}, "
                    f"resampled {mass:.3f} (truth {truth['mass_right']:.3f}), k-hat {ev['khat']:.2f} "
                    f"[{fitted['seconds']:.1f} s]"
                )
    return records


# --------------------------------------------------------------------------------------------------
# aggregation, claims, tables
# --------------------------------------------------------------------------------------------------
SCALE_METRICS = ("mean_err_max", "mean_err_avg", "sd_err_max", "sd_err_avg")


def _groups(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        out.setdefault((r["target"], r["method"]), []).append(r)
    return out


def aggregate(records: list[dict]) -> list[dict[str, Any]]:
    """Per (target, method): median / min / max over seeds of every metric."""
    rows = []
    for (target, method), recs in _groups(records).items():
        row: dict[str, Any] = {"target": target, "method": method, "seeds": len(recs)}
        for src in ("closed_form", "draws", "psis"):
            keys = [k for k in recs[0][src]]
            row[src] = {k: summarise([r[src][k] for r in recs]) for k in keys}
        for k in ("kl", "khat", "ess", "ess_fraction", "log_w_sd", "seconds", "grad_evals", "final_loss"):
            row[k] = summarise([r[k] for r in recs])
        first = min(recs, key=lambda r: r["seed"])
        row["seconds_first"] = first["seconds"]  # includes the compilation
        row["seconds_rest"] = summarise([r["seconds"] for r in recs if r is not first])
        row["kl_is_exact"] = all(r["kl_exact"] is not None for r in recs)
        for key in ("reweighting", "reweighting_beyond_noise"):
            row[key] = {
                m: {v: sum(r[key][m] == v for r in recs) for v in ("helps", "same", "hurts")} for m in recs[0][key]
            }
        if "resampled" in recs[0]:
            row["resampled"] = {k: summarise([r["resampled"][k] for r in recs]) for k in ("mass_right", "mass_err")}
            row["splits"] = [r["split"]["label"] for r in recs]
        rows.append(row)
    return rows


def _within(err: float, ref: float) -> bool:
    return err <= WITHIN_RATIO * ref or err <= ref + WITHIN_ABS


CLAIM_METRICS = ("mean_err_max", "mean_err_avg", "sd_err_max", "sd_err_avg", "kl")


def scale_claims(rows: list[dict]) -> list[dict[str, Any]]:
    """Claim 1 per (target, N): on each summary (medians over seeds), is metric='diagonal' within the error
    of AutoMultivariateNormal, and is metric='isotropic' not? 'holds' when diagonal is within on every
    summary and isotropic on none, 'partly' when diagonal is within on every summary and isotropic on
    some but not all, 'fails' otherwise (diagonal outside on any, or nothing tells them apart)."""
    out = []
    by = {(r["target"], r["method"]): r for r in rows}
    for target in dict.fromkeys(r["target"] for r in rows):
        mvn = by.get((target, Method("mvn").label))
        if mvn is None:
            continue
        ns = sorted({int(m.split("N=")[1].split(",")[0]) for (t, m) in by if t == target and "N=" in m})
        for n in ns:
            entry: dict[str, Any] = {"target": target, "n_components": n, "in_issue": "rho" not in target}
            checks: dict[str, dict[str, Any]] = {}
            for key in CLAIM_METRICS:

                def med(row: dict, key: str = key) -> float:
                    return row[key]["median"] if key == "kl" else row["closed_form"][key]["median"]

                iso, diag = (
                    by[(target, Method("mixvi", n, "isotropic").label)],
                    by[(target, Method("mixvi", n, "diagonal").label)],
                )
                checks[key] = {
                    "isotropic": med(iso),
                    "diagonal": med(diag),
                    "mvn": med(mvn),
                    "diagonal_within": bool(_within(med(diag), med(mvn))),
                    "isotropic_within": bool(_within(med(iso), med(mvn))),
                }
            entry["checks"] = checks
            diag_ok = all(c["diagonal_within"] for c in checks.values())
            iso_in = sum(c["isotropic_within"] for c in checks.values())
            entry["verdict"] = (
                "holds" if diag_ok and iso_in == 0 else "partly" if diag_ok and iso_in < len(checks) else "fails"
            )
            out.append(entry)
    return out


def mass_claims(records: list[dict]) -> dict[str, Any]:
    """Claim 2: per seed, is each summary's mode mass within MASS_TOL of the truth?"""
    out: dict[str, Any] = {}
    for weights in ("uniform", "fisher-rao"):
        recs = [r for r in records if r["target"].startswith("bimodal") and r["weights"] == weights]
        for src in ("closed_form", "psis", "resampled"):
            errs = [r[src]["mass_err"] for r in recs]
            out[f"{weights}/{src}"] = {
                "within": sum(e <= MASS_TOL for e in errs),
                "of": len(errs),
                "errors": errs,
                "splits": [r["split"]["label"] for r in recs],
            }
    return out


def reweighting_claims(records: list[dict]) -> dict[str, Any]:
    """Claim 3: over every fit and summary, where PSIS reweighting helps, is neutral, or hurts (by more than
    CHANGE_TOL; and, separately, by more than NOISE_FACTOR / sqrt(ESS)), split by k-hat <= 0.7 or not."""
    out: dict[str, Any] = {}
    for key in ("reweighting", "reweighting_beyond_noise"):
        counts = {"helps": 0, "same": 0, "hurts": 0}
        hurt, helped = [], []
        for r in records:
            for metric, verdict in r[key].items():
                counts[verdict] += 1
                item = {
                    "target": r["target"],
                    "method": r["method"],
                    "seed": r["seed"],
                    "summary": metric,
                    "unweighted": r["draws"][metric],
                    "psis": r["psis"][metric],
                    "khat": r["khat"],
                    "ess_fraction": r["ess_fraction"],
                }
                (hurt if verdict == "hurts" else helped if verdict == "helps" else []).append(item)
        out[key] = {
            "counts": counts,
            "hurts": hurt,
            "helps": helped,
            "hurts_with_good_khat": [h for h in hurt if h["khat"] <= 0.7],
            "helps_with_good_khat": [h for h in helped if h["khat"] <= 0.7],
        }
    return out


def _fmt(s: dict[str, float], digits: int = 3) -> str:
    if not s or np.isnan(s.get("median", math.nan)):
        return "n/a"
    if not np.isfinite(s["median"]):
        return str(s["median"]) if s["n"] == 1 or s["min"] == s["max"] else f"{s['median']} [{s['min']}, {s['max']}]"
    f = f"{{:.{digits}g}}" if abs(s["median"]) >= 100 else f"{{:.{digits}f}}"
    if s["n"] == 1:
        return f.format(s["median"])
    return f"{f.format(s['median'])} [{f.format(s['min'])}, {f.format(s['max'])}]"


def format_scale_table(rows: list[dict]) -> str:
    """Markdown table of experiment 1: errors of q (closed form), KL, k-hat, time."""
    head = (
        "| target | method | mean err max | mean err avg | sd err max | sd err avg | KL(q‖p) | k̂ | grads "
        "| s (1st seed, compile incl.) / s per later seed |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if r["target"].startswith("bimodal"):
            continue
        c = r["closed_form"]
        kl = _fmt(r["kl"], 3) + ("" if r["kl_is_exact"] else " (MC)")
        lines.append(
            f"| {r['target']} | {r['method']} | {_fmt(c['mean_err_max'])} | {_fmt(c['mean_err_avg'])} "
            f"| {_fmt(c['sd_err_max'])} | {_fmt(c['sd_err_avg'])} | {kl} | {_fmt(r['khat'], 2)} "
            f"| {int(r['grad_evals']['median']):,} | {r['seconds_first']:.1f} / {_fmt(r['seconds_rest'], 1)} |"
        )
    return "\n".join(lines)


def format_mass_table(rows: list[dict], records: list[dict], truth: float) -> str:
    """Markdown table of experiment 2: mass on the 0.7 mode per summary, and the per-seed splits."""
    lines = [
        f"| weights | component split per seed (right/left) | q (unweighted) | PSIS-weighted | "
        f"`importance_resample` | k̂ | seeds within {MASS_TOL} (q / PSIS / resampled) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r["target"].startswith("bimodal"):
            continue
        recs = [x for x in records if x["target"] == r["target"] and x["method"] == r["method"]]
        within = [sum(x[src]["mass_err"] <= MASS_TOL for x in recs) for src in ("closed_form", "psis", "resampled")]
        splits = ", ".join(
            f"{x['split']['label']}" + (f" (w_R={x['split']['weight_right']:.2f})" if x["weights"] != "uniform" else "")
            for x in recs
        )
        lines.append(
            f"| {recs[0]['weights']} | {splits} | {_fmt(r['closed_form']['mass_right'])} "
            f"| {_fmt(r['psis']['mass_right'])} | {_fmt(r['resampled']['mass_right'])} | {_fmt(r['khat'], 2)} "
            f"| {within[0]} / {within[1]} / {within[2]} of {len(recs)} |"
        )
    lines.append(f"\nTruth: P(x_0 > 0) = {truth:.4f}.")
    return "\n".join(lines)


def format_reweighting_table(rows: list[dict]) -> str:
    """Markdown table of experiment 3: unweighted vs PSIS-weighted summaries of the same draws."""
    lines = [
        "| target | method | k̂ | ESS/S | sd of log w | mean err max: draws → PSIS | sd err max: draws → PSIS | mass err: draws → PSIS "
        f"| helps / same / hurts (by > {CHANGE_TOL:g}) | helps / hurts beyond {NOISE_FACTOR:g}/√ESS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, p = r["draws"], r["psis"]
        mass = f"{d['mass_err']['median']:.3f} → {p['mass_err']['median']:.3f}" if "mass_err" in d else "—"
        tot = {v: sum(c[v] for c in r["reweighting"].values()) for v in ("helps", "same", "hurts")}
        noisy = {v: sum(c[v] for c in r["reweighting_beyond_noise"].values()) for v in ("helps", "hurts")}
        lines.append(
            f"| {r['target']} | {r['method']} | {_fmt(r['khat'], 2)} | {_fmt(r['ess_fraction'], 3)} "
            f"| {r['log_w_sd']['median']:.3g} "
            f"| {d['mean_err_max']['median']:.3f} → {p['mean_err_max']['median']:.3f} "
            f"| {d['sd_err_max']['median']:.3f} → {p['sd_err_max']['median']:.3f} | {mass} "
            f"| {tot['helps']} / {tot['same']} / {tot['hurts']} | {noisy['helps']} / {noisy['hurts']} |"
        )
    return "\n".join(lines)


def format_claim_table(claims: list[dict]) -> str:
    """Markdown table of claim 1: medians of every summary for isotropic / diagonal / AutoMultivariateNormal."""
    lines = [
        "| target | N | summary | isotropic | diagonal | AutoMVN | diagonal within? | isotropic within? |",
        "|---|---:|---|---:|---:|---:|:---:|:---:|",
    ]
    for c in claims:
        for key, v in c["checks"].items():
            lines.append(
                f"| {c['target']} | {c['n_components']} | {key.replace('_', ' ').replace('kl', 'KL')} "
                f"| {v['isotropic']:.3g} | {v['diagonal']:.3g} | {v['mvn']:.3g} "
                f"| {'yes' if v['diagonal_within'] else '**no**'} | {'yes' if v['isotropic_within'] else 'no'} |"
            )
    return "\n".join(lines)


def claim_lines(report: dict) -> list[str]:
    """One line per claim, with the verdict."""
    lines = []
    names = {
        "mean_err_max": "mean err max",
        "mean_err_avg": "mean err avg",
        "sd_err_max": "sd err max",
        "sd_err_avg": "sd err avg",
        "kl": "KL",
    }
    for c in report["claims"]["scales"]:
        ch = c["checks"]
        diag_out = [names[k] for k, v in ch.items() if not v["diagonal_within"]]
        iso_in = [names[k] for k, v in ch.items() if v["isotropic_within"]]
        verdict = {"holds": "HOLDS", "partly": "holds PARTLY", "fails": "does NOT hold"}[c["verdict"]]
        extra = "" if c["in_issue"] else " (a target beyond the issue's)"
        lines.append(
            f"Claim 1, {c['target']}{extra}, N={c['n_components']}: {verdict} — diagonal within AutoMultivariateNormal "
            f"on {len(ch) - len(diag_out)}/{len(ch)} summaries"
            + (f" (not on {', '.join(diag_out)})" if diag_out else "")
            + f"; isotropic within on {len(iso_in)}/{len(ch)}"
            + (f" ({', '.join(iso_in)})" if iso_in else "")
        )
    m = report["claims"]["mass"]
    for w in ("uniform", "fisher-rao"):
        lines.append(
            f"Claim 2, {w} weights: mode mass within {MASS_TOL} of the truth in {m[w + '/closed_form']['within']}/"
            f"{m[w + '/closed_form']['of']} seeds unweighted, {m[w + '/psis']['within']}/{m[w + '/psis']['of']} "
            f"PSIS-weighted, {m[w + '/resampled']['within']}/{m[w + '/resampled']['of']} resampled "
            f"(splits {', '.join(m[w + '/closed_form']['splits'])})"
        )
    rw, rn = report["claims"]["reweighting"]["reweighting"], report["claims"]["reweighting"]["reweighting_beyond_noise"]
    n = sum(rw["counts"].values())
    good = [h for h in rw["hurts"] if h["khat"] <= 0.7]
    verdict = "HOLDS" if not rw["hurts"] else ("holds where k̂ <= 0.7" if not good else "does NOT hold")
    lines.append(
        f"Claim 3 (reweighting never makes a summary worse): {verdict} — of {n} (fit, summary) pairs, PSIS weights "
        f"help (error down by > {CHANGE_TOL:g}) in {rw['counts']['helps']} ({len(rw['helps_with_good_khat'])} with "
        f"k̂ <= 0.7), change it by at most {CHANGE_TOL:g} in {rw['counts']['same']}, hurt in {rw['counts']['hurts']} "
        f"({len(good)} with k̂ <= 0.7); beyond {NOISE_FACTOR:g}/sqrt(ESS): help in {rn['counts']['helps']}, "
        f"hurt in {rn['counts']['hurts']} ({len(rn['hurts_with_good_khat'])} with k̂ <= 0.7)"
    )
    worst: dict[tuple[str, str], list[dict]] = {}
    for h in rw["hurts"]:
        worst.setdefault((h["target"], h["method"]), []).append(h)
    for (target, method), hs in worst.items():
        w = max(hs, key=lambda h: h["psis"] - h["unweighted"])
        lines.append(
            f"  hurt: {target}, {method}: {len(hs)} (seed, summary) pairs, k̂ {min(h['khat'] for h in hs):.2f}"
            f"..{max(h['khat'] for h in hs):.2f}; worst {w['summary']} {w['unweighted']:.3f} → {w['psis']:.3f} "
            f"(seed {w['seed']}, ESS/S {w['ess_fraction']:.4f})"
        )
    return lines


def render_markdown(report: dict) -> str:
    """The generated section of docs/benchmarks.md (between the bench-extensions markers)."""
    m, s = report["machine"], report["settings"]
    ref = report["reference"]
    lines = [
        f"Measured {report['date']} with `mixvi bench extensions{' --quick' if s['quick'] else ''}` "
        f"({s['seeds']} seeds, {s['bimodal_seeds']} on the bimodal target; {report['seconds']:.0f} s) on {m['platform']}, {m['cpu_count']} CPUs, jax {m['jax']} "
        f"({m['backend']}), numpyro {m['numpyro']}, mixvi {m['mixvi']} (sources sha256 {m['mixvi_source_sha256']}). "
        "Cells are median [min, max] over seeds.",
        "",
        f'Settings: MixVI `ibw`, `step_size="auto"`, B = {s["num_samples"]}, {s["gauss_steps"]} steps '
        f"(Gaussian) / {s['eight_steps']} (eight schools) / {s['bimodal_steps']} (bimodal); "
        f"AutoMultivariateNormal: `Trace_ELBO(num_particles={s['num_samples']})`, Adam {s['mvn_lr']:g} "
        f"decayed exponentially to {s['mvn_lr'] * 1e-3:g}, {s['mvn_steps']} steps; init_scale 0.1. "
        f"Summaries from S = {s['num_draws']} draws of q. Eight-schools reference: NUTS ({ref['settings']['chains']} x "
        f"{ref['settings']['samples']} draws, min ESS {ref['ess_min']:.0f}, {ref['divergences']} divergences, so its "
        f"means carry ~{ref['mc_error_of_ref_mean_in_sd']:.3f} sd of Monte-Carlo error), log Z = {ref['log_z']:.3f}.",
        "",
        "**1. Scales** (errors of q's closed-form means and sds in units of the reference sd, over the "
        "unconstrained coordinates; KL exact when q and p are Gaussian, else MC; "
        f"the AR(1) rho = {s['rho']:g} Gaussian is outside the diagonal family and beyond the issue's claim):",
        "",
        format_scale_table(report["aggregate"]),
        "",
        "Floors of the single-Gaussian families (the smallest KL any N = 1 fit can reach): "
        + "; ".join(
            f"{t}: isotropic {f['isotropic']:.3g}, diagonal {f['diagonal']:.3g}"
            for t, f in ref["family_floor_kl"].items()
        )
        + ".",
        "",
        f'Claim 1 per summary (medians over seeds; "within" = at most {WITHIN_RATIO:g} x AutoMultivariateNormal\'s '
        f"value or {WITHIN_ABS:g} above it):",
        "",
        format_claim_table(report["claims"]["scales"]),
        "",
        "**2. Mode mass** (N = 4, P(x_0 > 0)):",
        "",
        format_mass_table(report["aggregate"], report["records"], report["bimodal_truth"]["mass_right"]),
        "",
        f"**3. Reweighting** (the same S draws, unweighted → PSIS-weighted; medians over seeds; counts over "
        f"(seed, summary) pairs, summaries = mean/sd err max and avg, and the mass; a change counts when the error "
        f"moves by more than {CHANGE_TOL:g}, and separately by more than {NOISE_FACTOR:g}/√ESS):",
        "",
        format_reweighting_table(report["aggregate"]),
        "",
        "**Claims:**",
        "",
        *[f"- {line}" if not line.startswith("  ") else f"  - {line.strip()}" for line in claim_lines(report)],
    ]
    return "\n".join(lines)


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


def source_digest() -> str:
    """sha256 (first 12 hex digits) of mixvi's library sources (``mixvi/*.py``, not the benchmarks), so a
    report can be matched to the code that produced it."""
    h = hashlib.sha256()
    for f in sorted(Path(mixvi.__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def machine_info() -> dict[str, Any]:
    """The shared machine record plus a digest of the mixvi sources the numbers came from."""
    return {**report_machine_info(), "mixvi_source_sha256": source_digest()}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, (np.floating, float)):  # JSON has no inf / NaN: +-inf as "inf" / "-inf", NaN as null
        return float(x) if np.isfinite(x) else (None if np.isnan(x) else str(float(x)))
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def run_benchmark(st: Settings, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the three experiments; return the report (date, machine, settings, records, aggregate, claims)."""
    t0 = time.perf_counter()
    machine = machine_info()
    scale_records, ref = run_scales(st, log)
    bimodal_records = run_bimodal(st, log)
    records = scale_records + bimodal_records
    rows = aggregate(records)
    if hasattr(os, "getloadavg"):
        machine["loadavg_end"] = list(os.getloadavg())
    settings = {k: getattr(st, k) for k in st.__dataclass_fields__}
    settings.update(
        {
            "mvn_lr": 3e-2,
            "method": "ibw",
            "step_size": "auto",
            "init_scale": 0.1,
            "bimodal_init": "init_to_value(0), init_scale 3.0",
            "within_ratio": WITHIN_RATIO,
            "within_abs": WITHIN_ABS,
            "mass_tol": MASS_TOL,
            "change_tol": CHANGE_TOL,
            "noise_factor": NOISE_FACTOR,
        }
    )
    report = {
        "benchmark": "extensions",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": settings,
        "reference": ref,
        "bimodal_truth": bimodal_truth(),
        "records": records,
        "aggregate": rows,
        "claims": {
            "scales": scale_claims(rows),
            "mass": mass_claims(records),
            "reweighting": reweighting_claims(records),
        },
    }
    report["seconds"] = time.perf_counter() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    """``mixvi bench extensions``: run the experiments, print the tables and claim verdicts, write the
    JSON (``--out``) and the docs section (``--md``; an empty string skips either). Returns 0."""
    parser = argparse.ArgumentParser(
        prog="mixvi bench extensions",
        description="Evidence for the diagonal metric, PSIS-reweighted summaries and Fisher-Rao weights (issue 4).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 seeds, shorter runs, no AR(1) Gaussian, smaller reference (~1-2 minutes)",
    )
    parser.add_argument("--out", default="docs/benchmarks/extensions.json", help="JSON output ('' to skip)")
    parser.add_argument("--md", default="docs/benchmarks.md", help="markdown page to update ('' to skip)")
    parser.add_argument("--fig", default="docs/figures/extensions_summary.png", help="figure output ('' to skip)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per configuration (default 5, quick 2; the bimodal target gets twice as many)",
    )
    parser.add_argument("--steps-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: shrink every run
    parser.add_argument("--num-draws", type=int, default=None, help="S, draws of q per evaluation (default 16000)")
    parser.add_argument("--dim", type=int, default=None, help="dimension of the ill-conditioned Gaussian (default 100)")
    parser.add_argument("--no-correlated", action="store_true", help="skip the AR(1)-correlated Gaussian")
    parser.add_argument(
        "--components",
        type=lambda t: tuple(int(v) for v in t.split(",")),
        default=None,
        help="comma-separated N values of experiment 1 (default 1,5)",
    )
    args = parser.parse_args(argv)
    st = QUICK if args.quick else Settings()
    changes: dict[str, Any] = {}
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error("--seeds must be >= 1")
        changes["seeds"] = args.seeds
        changes["bimodal_seeds"] = 2 * args.seeds
    if args.num_draws is not None:
        if args.num_draws < 100:
            parser.error("--num-draws must be >= 100")
        changes["num_draws"] = args.num_draws
    if args.dim is not None:
        changes["gauss_dim"] = args.dim
    if args.components is not None:
        changes["components"] = args.components
    if args.no_correlated:
        changes["correlated"] = False
    if args.steps_scale != 1.0:
        f = args.steps_scale
        changes.update(
            {
                k: max(2, int(getattr(st, k) * f))
                for k in ("gauss_steps", "eight_steps", "bimodal_steps", "mvn_steps", "ref_samples", "ref_warmup")
            }
        )
    st = Settings(**{**{k: getattr(st, k) for k in st.__dataclass_fields__}, **changes})

    print(f"mixvi bench extensions: {st.seeds} seeds{' (quick)' if st.quick else ''}")
    report = run_benchmark(st)
    print()
    print(format_scale_table(report["aggregate"]))
    print()
    print(format_mass_table(report["aggregate"], report["records"], report["bimodal_truth"]["mass_right"]))
    print()
    print(format_reweighting_table(report["aggregate"]))
    print()
    for line in claim_lines(report):
        print(line)
    print(f"total {report['seconds']:.0f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_jsonable(report), indent=1) + "\n")
        print(f"wrote {out}")
    if args.fig:
        plot_summary(report, Path(args.fig))
        print(f"wrote {args.fig}")
    if args.md:
        replace_section(args.md, "extensions", render_markdown(report))
        print(f"updated {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
