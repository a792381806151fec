"""The targets of the extensions suite and their references: the centred eight-schools model (NUTS on
the non-centred one, log Z by quadrature), an axis-aligned ill-conditioned Gaussian and its
AR(1)-correlated twin, and an asymmetric bimodal mixture with exact moments and mode mass."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from jax.scipy.special import logsumexp
from numpyro.infer import MCMC, NUTS
from scipy.special import ndtr

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
