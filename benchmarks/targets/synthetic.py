"""Synthetic targets with exact normalised densities and exact samplers (arXiv 2506.13613, section 5):
Gaussian mixtures, the 2-D funnel and 2-D sinh-arcsinh distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

from benchmarks.targets.base import Target, flat_model

GMM_COVARIANCES = ("diag", "full", "iso")


def gmm_parameters(
    dim: int, num_modes: int = 5, covariance: str = "diag", scale: float = 5.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights (K,), means (K, d), covariances (K, d, d)) of the paper's Gaussian-mixture target.

    means ~ U[-5, 5]^d; weights = integers drawn from [1, 2K), normalised; covariances:
    'diag': entries U(1, 10) divided by their maximum, times ``scale``;
    'full': A A^T + 0.1 d I with A ~ N(0, 1)^{d x d}, divided by its largest eigenvalue, times ``scale``
    (the 0.1 d I keeps the condition number <= ~ 10 d, so d = 50 stays a fair target);
    'iso': ``scale`` I times a factor U(0.5, 1). Seeded by ``seed`` (numpy's default_rng)."""
    if covariance not in GMM_COVARIANCES:
        raise ValueError(f"covariance must be one of {GMM_COVARIANCES}, got {covariance!r}")
    rng = np.random.default_rng(seed)
    means = rng.uniform(-5.0, 5.0, (num_modes, dim))
    w = rng.integers(1, 2 * num_modes, num_modes).astype(float)
    weights = w / w.sum()
    covs = np.empty((num_modes, dim, dim))
    for k in range(num_modes):
        if covariance == "diag":
            u = rng.uniform(1.0, 10.0, dim)
            covs[k] = np.diag(u / u.max() * scale)
        elif covariance == "full":
            a = rng.normal(size=(dim, dim))
            s = a @ a.T + 0.1 * dim * np.eye(dim)
            covs[k] = s / np.linalg.eigvalsh(s).max() * scale
        else:
            covs[k] = np.eye(dim) * scale * rng.uniform(0.5, 1.0)
    return weights, means, covs


def gmm_log_prob_fn(weights: np.ndarray, means: np.ndarray, covs: np.ndarray):
    """log pi(x) = logsumexp_k [log w_k + log N(x; m_k, S_k)] (Cholesky), x (..., d) -> (...)."""
    chol_np = np.linalg.cholesky(covs)
    inv_chol = jnp.asarray(np.linalg.inv(chol_np))
    chol = jnp.asarray(chol_np)
    logw, mu = jnp.log(jnp.asarray(weights)), jnp.asarray(means)
    d = means.shape[1]
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)

    def comp(x: jax.Array) -> jax.Array:  # (..., d) -> (..., K)
        diff = x[..., None, :] - mu  # (..., K, d)
        sol = jnp.einsum("kij,...kj->...ki", inv_chol, diff)
        return logw - 0.5 * jnp.sum(sol**2, -1) - half_logdet - 0.5 * d * jnp.log(2 * jnp.pi)

    return (lambda x: logsumexp(comp(x), -1)), comp


def make_gmm(dim: int = 2, covariance: str = "diag", seed: int = 0, num_modes: int = 5, scale: float = 5.0) -> Target:
    """The K-mode Gaussian-mixture target in d dimensions (``gmm_parameters``), seedable."""
    weights, means, covs = gmm_parameters(dim, num_modes, covariance, scale, seed)
    log_prob, comp = gmm_log_prob_fn(weights, means, covs)
    chol = jnp.asarray(np.linalg.cholesky(covs))
    logw, mu = jnp.log(jnp.asarray(weights)), jnp.asarray(means)

    def sample(key: jax.Array, shape) -> jax.Array:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        k1, k2 = jax.random.split(key)
        idx = jax.random.categorical(k1, logw, shape=shape)
        z = jax.random.normal(k2, shape + (dim,))
        return mu[idx] + jnp.einsum("...ij,...j->...i", chol[idx], z)

    def mode_of(x: jax.Array) -> jax.Array:
        return jnp.argmax(comp(jnp.asarray(x)), -1)

    return Target(
        name=f"gmm-d{dim}-{covariance}", family="gmm", model=flat_model(log_prob, sample, dim), dim=dim,
        log_prob=log_prob, sample=sample, mode_of=mode_of, num_modes=num_modes, init_radius=5.0,
        info={"K": num_modes, "covariance": covariance, "scale": scale, "seed": seed, "weights": weights.tolist()},
    )


FUNNEL_VAR0 = 1.2


def funnel_log_prob(x: jax.Array) -> jax.Array:
    """x0 ~ N(0, 1.2) (variance), x1 | x0 ~ N(0, exp(x0)) (variance)."""
    return norm.logpdf(x[..., 0], 0.0, jnp.sqrt(FUNNEL_VAR0)) + norm.logpdf(x[..., 1], 0.0, jnp.exp(0.5 * x[..., 0]))


def make_funnel() -> Target:
    """The 2-D funnel (normalised, exact sampler)."""

    def sample(key: jax.Array, shape) -> jax.Array:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        z = jax.random.normal(key, shape + (2,))
        x0 = jnp.sqrt(FUNNEL_VAR0) * z[..., 0]
        return jnp.stack([x0, jnp.exp(0.5 * x0) * z[..., 1]], -1)

    return Target(
        name="funnel", family="funnel", model=flat_model(funnel_log_prob, sample, 2), dim=2, log_prob=funnel_log_prob,
        sample=sample, info={"var_x0": FUNNEL_VAR0},
    )


SAS_BASE_COV = np.array([[1.0, 0.4], [0.4, 1.0]])
SAS_SETTINGS = {
    "sas-a": (1.0 / np.array([1.2, 1.2]), -np.array([0.2, 0.2])),
    "sas-b": (1.0 / np.array([1.2, 1.4]), -np.array([0.2, 0.2])),
    "sas-c": (1.0 / np.array([1.2, 1.4]), -np.array([0.2, 0.5])),
}


def make_sinh_arcsinh(name: str = "sas-a") -> Target:
    """2-D sinh-arcsinh target: Z ~ N(0, S), S = [[1, .4], [.4, 1]], X_i = sinh((asinh(Z_i) + s_i) / t_i)
    with tail parameter t (t < 1: heavier tails than Gaussian, |X| ~ |Z|^(1/t)) and skew s.
    Inverse Z_i = sinh(t_i asinh(X_i) - s_i); log pi(x) = log N(z; 0, S) + sum_i [log t_i +
    log cosh(t_i asinh x_i - s_i) - log(1 + x_i^2)/2]. The three settings ``SAS_SETTINGS`` follow these
    (t, s) pairs: (1/[1.2, 1.2], -[.2, .2]), (1/[1.2, 1.4], -[.2, .2]), (1/[1.2, 1.4], -[.2, .5])."""
    tail, skew = (jnp.asarray(a) for a in SAS_SETTINGS[name])
    chol = jnp.asarray(np.linalg.cholesky(SAS_BASE_COV))
    prec = jnp.asarray(np.linalg.inv(SAS_BASE_COV))
    logdet = float(np.linalg.slogdet(SAS_BASE_COV)[1])

    def log_prob(x: jax.Array) -> jax.Array:
        a = tail * jnp.arcsinh(x) - skew
        z = jnp.sinh(a)
        base = -0.5 * jnp.einsum("...i,ij,...j->...", z, prec, z) - 0.5 * logdet - jnp.log(2 * jnp.pi)
        log_cosh = jnp.logaddexp(a, -a) - jnp.log(2.0)
        jac = jnp.log(tail) + log_cosh - 0.5 * jnp.log1p(x**2)
        return base + jnp.sum(jac, -1)

    def sample(key: jax.Array, shape) -> jax.Array:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        z = jax.random.normal(key, shape + (2,)) @ chol.T
        return jnp.sinh((jnp.arcsinh(z) + skew) / tail)

    return Target(
        name=name, family="sinh-arcsinh", model=flat_model(log_prob, sample, 2), dim=2, log_prob=log_prob,
        sample=sample, info={"tail": np.asarray(tail).tolist(), "skew": np.asarray(skew).tolist()},
    )
