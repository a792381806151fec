"""Targets and metrics of the posterior-quality suite (``benchmarks.quality``).

Five NumPyro models whose latents are unconstrained, so the flattened latent z that NumPyro's
``AutoContinuous`` guides and ``mixvi.AutoIsotropicMixture`` work on is the model's own variables
(sites in the order the model samples them, as NumPyro's flattened latent has them):

- ``rotated_gaussian_d100``: N(mu, Q diag(s^2) Q^T), d = 100, s log-uniform on [0.5, 50], Q a random
  rotation; exact.
- ``mixture20d_4modes``: four anisotropic Gaussian modes in d = 20 with weights 0.4 / 0.3 / 0.2 / 0.1,
  at least ten mode sds apart; exact.
- ``logistic_breast_cancer``: logistic regression with intercept on scikit-learn's breast-cancer data
  (standardised features, N(0, 3^2) priors, 80/20 train/test split); the reference is NUTS.
- ``sharp_linear_regression``: 500 rows, 5 predictors, known noise sd 0.05, N(0, 10^2) priors; the
  posterior is Gaussian and computed in closed form.
- ``banana``: x0 ~ N(0, 10^2), x1 | x0 ~ N(0.03 (x0^2 - 100), 1); exact draws and moments.
- ``factor_gaussian_d300``: N(mu, D0^(1/2) (I + W W^T) D0^(1/2)), d = 300, D0's sds log-uniform on
  [0.3, 3], W five random directions with stretches of 5 to 40; exact (the large-d correlated posterior
  the low-rank metric is for).
- ``horseshoe_regression`` and ``baseball_logit``: a non-centred horseshoe regression and a centred
  hierarchical logit (``benchmarks.targets.hierarchical``); the reference is NUTS.
- ``eight_schools_noncentered``, ``arK``, ``garch11``, ``gp_pois_regr``, ``diamonds``: five posteriors of
  posteriordb (``benchmarks.targets.posteriordb``); the reference is posteriordb's reference draws.

Each is a ``benchmarks.targets.Target``; ``info`` carries the suite's extras (``n_components`` of
mixvi, the ``main`` metric, the mode parameters of the mixture). The metric functions below take plain
arrays and fit nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

from benchmarks.metrics import mode_masses
from benchmarks.targets import posteriordb
from benchmarks.targets.base import Target, flat_model
from benchmarks.targets.hierarchical import make_baseball, make_horseshoe

TARGET_NAMES = (
    "rotated_gaussian_d100",
    "mixture20d_4modes",
    "logistic_breast_cancer",
    "sharp_linear_regression",
    "banana",
    "factor_gaussian_d300",
    "horseshoe_regression",
    "baseball_logit",
    *posteriordb.NAMES,
)
MODE_THRESHOLD = 0.02
"""A mode counts as found when q puts at least this much mass on its basin."""


# --- 1. rotated Gaussian ----------------------------------------------------------------------


def rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-random d x d rotation (QR of a Gaussian matrix with the signs of R's diagonal fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def rotated_gaussian(d: int = 100, seed: int = 1) -> dict[str, np.ndarray]:
    """Mean (d,), coordinate sds s (d,) in the rotated frame, rotation Q and covariance Q diag(s^2) Q^T."""
    rng = np.random.default_rng(seed)
    sds = np.exp(rng.uniform(np.log(0.5), np.log(50.0), d))
    q = rotation(rng, d)
    mean = rng.normal(0.0, 3.0, d)
    return {"mean": mean, "sds": sds, "rotation": q, "cov": (q * sds**2) @ q.T}


def gaussian_target(name: str, mean: np.ndarray, cov: np.ndarray, info: dict) -> Target:
    """A Gaussian N(mean, cov) as a model with one site ``x`` ~ MultivariateNormal; exact reference."""
    loc = jnp.asarray(mean, jnp.float32)
    tril = jnp.asarray(np.linalg.cholesky(cov), jnp.float32)
    p = dist.MultivariateNormal(loc, scale_tril=tril)

    def model() -> None:
        numpyro.sample("x", dist.MultivariateNormal(loc, scale_tril=tril))

    return Target(
        name=name, family="gaussian", model=model, dim=len(mean), log_prob=p.log_prob,
        sample=lambda key, n: p.sample(key, (n,)), ref_mean=mean, ref_sd=np.sqrt(np.diag(cov)), gaussian_cov=cov,
        info=info,
    )


def make_rotated_gaussian(d: int = 100, seed: int = 1) -> Target:
    """The rotated Gaussian as a :func:`gaussian_target`."""
    g = rotated_gaussian(d, seed)
    return gaussian_target(
        "rotated_gaussian_d100", g["mean"], g["cov"],
        {"seed": seed, "sd_range": [0.5, 50.0], "n_components": "auto", "main": "kl",
         "description": f"d = {d} Gaussian, random rotation, coordinate sds log-uniform on [0.5, 50]"},
    )


def factor_gaussian(d: int = 300, rank: int = 5, seed: int = 4) -> dict[str, np.ndarray]:
    """Mean, covariance D0^(1/2) (I + W W^T) D0^(1/2) with W (d, rank) of orthogonal columns of norms
    log-spaced on [5, 40]."""
    rng = np.random.default_rng(seed)
    diag_sd = np.exp(rng.uniform(np.log(0.3), np.log(3.0), d))
    directions = rotation(rng, d)[:, :rank]
    w = directions * np.exp(np.linspace(np.log(5.0), np.log(40.0), rank))
    inner = np.eye(d) + w @ w.T
    cov = diag_sd[:, None] * inner * diag_sd[None, :]
    return {"mean": rng.normal(0.0, 3.0, d), "cov": cov}


def make_factor_gaussian(d: int = 300, rank: int = 5, seed: int = 4) -> Target:
    """The factor-structured Gaussian as a :func:`gaussian_target`."""
    g = factor_gaussian(d, rank, seed)
    return gaussian_target(
        "factor_gaussian_d300", g["mean"], g["cov"],
        {"seed": seed, "rank": rank, "n_components": "auto", "main": "kl",
         "description": f"d = {d} Gaussian, diagonal sds log-uniform on [0.3, 3] times (I + W W^T) with "
                        f"{rank} random directions stretched 5 to 40 times"},
    )


# --- 2. four-mode mixture ---------------------------------------------------------------------


def mixture_modes(d: int = 20, seed: int = 2) -> dict[str, np.ndarray]:
    """Weights (4,), means (4, d) on a sphere of radius 12 with pairwise distance >= 10 mode sds,
    covariances (4, d, d) R_k diag(s_k^2) R_k^T with s_k log-uniform on [0.3, 1.2]."""
    rng = np.random.default_rng(seed)
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    covs = []
    for _ in range(4):
        r = rotation(rng, d)
        covs.append((r * np.exp(rng.uniform(np.log(0.3), np.log(1.2), d)) ** 2) @ r.T)
    while True:
        means = rng.normal(size=(4, d))
        means *= 12.0 / np.linalg.norm(means, axis=1, keepdims=True)
        gaps = [np.linalg.norm(means[i] - means[j]) for i in range(4) for j in range(i)]
        if min(gaps) >= 10 * 1.2:
            break
    return {"weights": weights, "means": means, "covs": np.stack(covs)}


def basin_labels(z: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """The basin of each draw: the mode k minimising the Mahalanobis distance (z - m_k)^T C_k^-1 (z - m_k).

    Parameters
    ----------
    z
        Draws (S, d).
    means, covs
        Mode means (K, d) and covariances (K, d, d).

    Returns
    -------
    numpy.ndarray
        Integer labels (S,) in 0..K-1.
    """
    z = np.asarray(z, np.float64)
    dist2 = []
    for m, c in zip(means, covs, strict=True):
        white = np.linalg.solve(np.linalg.cholesky(c), (z - m).T)
        dist2.append(np.sum(white**2, 0))
    return np.argmin(np.stack(dist2, 1), 1)


def mode_mass_metrics(labels: np.ndarray, weights: np.ndarray, threshold: float = MODE_THRESHOLD) -> dict:
    """Modes found and mass errors from basin labels of draws of q.

    Parameters
    ----------
    labels
        Basin label of each draw (S,).
    weights
        The true mode weights (K,).
    threshold
        A mode is found when q's mass on its basin is at least this.

    Returns
    -------
    dict
        ``modes_found`` (count), ``mass_error`` (max over modes of |q mass - weight|) and ``masses`` (K,).
    """
    weights = np.asarray(weights, np.float64)
    masses = mode_masses(labels, len(weights))
    return {"modes_found": int(np.sum(masses >= threshold)), "mass_error": float(np.max(np.abs(masses - weights))),
            "masses": masses.tolist()}


def make_mixture(d: int = 20, seed: int = 2) -> Target:
    """The four-mode mixture as a one-site model (``FlatDensity``), with an exact sampler."""
    m = mixture_modes(d, seed)
    comps = dist.MultivariateNormal(jnp.asarray(m["means"], jnp.float32),
                                    scale_tril=jnp.asarray(np.linalg.cholesky(m["covs"]), jnp.float32))
    log_w = jnp.log(jnp.asarray(m["weights"], jnp.float32))

    def log_prob(z: jax.Array) -> jax.Array:
        return logsumexp(comps.log_prob(z[..., None, :]) + log_w, -1)

    def sample(key: jax.Array, n) -> jax.Array:
        n = int(np.prod(n)) if isinstance(n, tuple) else int(n)
        k1, k2 = jax.random.split(key)
        idx = jax.random.categorical(k1, log_w, shape=(n,))
        return jnp.take_along_axis(comps.sample(k2, (n,)), idx[:, None, None], 1)[:, 0]

    return Target(
        name="mixture20d_4modes", family="gmm", model=flat_model(log_prob, sample, d), dim=d, log_prob=log_prob,
        sample=sample, mode_of=lambda z: basin_labels(z, m["means"], m["covs"]), num_modes=4,
        info={"seed": seed, "weights": m["weights"].tolist(), "modes": m, "n_components": "auto", "main": "mass_error",
              "description": f"d = {d} mixture of 4 anisotropic Gaussians (sds 0.3..1.2), weights 0.4/0.3/0.2/0.1, "
                             "means 12 apart from the origin"},
    )


# --- 3. logistic regression on breast cancer -----------------------------------------------------


def breast_cancer_split(seed: int = 0, train: float = 0.8) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test): features standardised with the training rows' mean and sd,
    a leading column of ones (the intercept), a ``default_rng(seed)`` permutation split 80/20."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x, y = np.asarray(data.data, np.float64), np.asarray(data.target)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_train = int(round(train * len(y)))
    tr, te = perm[:n_train], perm[n_train:]
    mean, sd = x[tr].mean(0), x[tr].std(0)

    def design(rows: np.ndarray) -> np.ndarray:
        return np.concatenate([np.ones((len(rows), 1)), (x[rows] - mean) / sd], 1).astype(np.float32)

    return design(tr), y[tr].astype(np.int32), design(te), y[te].astype(np.int32)


def logistic_model(x: jax.Array, y: jax.Array | None = None, prior_sd: float = 3.0) -> None:
    """w ~ N(0, prior_sd^2 I) (w[0] the intercept); y_i ~ Bernoulli(sigmoid(x_i . w))."""
    w = numpyro.sample("w", dist.Normal(jnp.zeros(x.shape[1]), prior_sd).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def make_logistic(seed: int = 0) -> Target:
    """Breast-cancer logistic regression (d = 31); the reference is NUTS, run by the suite."""
    xtr, ytr, xte, yte = breast_cancer_split(seed)
    x_test = jnp.asarray(xte)

    def predict_log_prob(z: jax.Array) -> jax.Array:
        logits = z @ x_test.T
        return jnp.stack([jax.nn.log_sigmoid(-logits), jax.nn.log_sigmoid(logits)], -1)

    return Target(
        name="logistic_breast_cancer", family="regression", model=logistic_model, dim=xtr.shape[1],
        args=(jnp.asarray(xtr), jnp.asarray(ytr)), log_prob=None, log_z=None, predict_log_prob=predict_log_prob,
        test_labels=yte,
        info={"split_seed": seed, "n_train": len(ytr), "n_test": len(yte), "prior_sd": 3.0, "n_components": "auto",
              "main": "mean_err_max", "description": "logistic regression with intercept on breast cancer "
              f"({len(ytr)} train / {len(yte)} test rows, 30 standardised features), N(0, 3^2) priors"},
    )


# --- 4. sharp linear regression ---------------------------------------------------------------


def sharp_regression_data(n: int = 500, p: int = 5, noise: float = 0.05, seed: int = 3) -> tuple[np.ndarray, ...]:
    """(x (n, p), y (n,), true coefficients (p,)): x ~ N(0, 1), y = x beta + noise * N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    beta = rng.normal(size=p)
    return x, x @ beta + noise * rng.normal(size=n), beta


def conjugate_posterior(x: np.ndarray, y: np.ndarray, noise: float, prior_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian posterior of beta ~ N(0, prior_sd^2 I), y ~ N(x beta, noise^2 I): (mean, covariance),
    precision x^T x / noise^2 + I / prior_sd^2, mean = covariance x^T y / noise^2 (float64)."""
    prec = x.T @ x / noise**2 + np.eye(x.shape[1]) / prior_sd**2
    cov = np.linalg.inv(prec)
    return cov @ x.T @ y / noise**2, cov


def linear_model(x: jax.Array, y: jax.Array | None = None, noise: float = 0.05, prior_sd: float = 10.0) -> None:
    """beta ~ N(0, prior_sd^2 I); y ~ N(x beta, noise^2) with the noise sd known."""
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(x.shape[1]), prior_sd).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(x @ beta, noise), obs=y)


def make_sharp_regression(seed: int = 3) -> Target:
    """The sharp regression (posterior sds ~ 0.002) with its closed-form Gaussian posterior."""
    x, y, beta = sharp_regression_data(seed=seed)
    mean, cov = conjugate_posterior(x, y, 0.05, 10.0)
    p = dist.MultivariateNormal(jnp.asarray(mean, jnp.float32), scale_tril=jnp.asarray(np.linalg.cholesky(cov), jnp.float32))
    return Target(
        name="sharp_linear_regression", family="gaussian", model=linear_model, dim=x.shape[1],
        args=(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)), log_prob=p.log_prob,
        sample=lambda key, n: p.sample(key, (n,)), ref_mean=mean, ref_sd=np.sqrt(np.diag(cov)), gaussian_cov=cov,
        log_z=None,
        info={"seed": seed, "n": len(y), "noise_sd": 0.05, "prior_sd": 10.0, "true_beta": beta, "n_components": "auto",
              "main": "mean_err_max", "description": "500 rows, 5 predictors, known noise sd 0.05, N(0, 10^2) priors "
              f"(posterior sds {np.sqrt(np.diag(cov)).min():.4f}..{np.sqrt(np.diag(cov)).max():.4f})"},
    )


# --- 5. banana --------------------------------------------------------------------------------

BANANA_B = 0.03


def banana_model() -> None:
    """x0 ~ N(0, 10^2); x1 | x0 ~ N(0.03 (x0^2 - 100), 1)."""
    x0 = numpyro.sample("x0", dist.Normal(0.0, 10.0))
    numpyro.sample("x1", dist.Normal(BANANA_B * (x0**2 - 100.0), 1.0))


def banana_log_prob(z: jax.Array) -> jax.Array:
    """The normalised log density at z = (x0, x1) (..., 2)."""
    return dist.Normal(0.0, 10.0).log_prob(z[..., 0]) + dist.Normal(BANANA_B * (z[..., 0] ** 2 - 100.0), 1.0).log_prob(z[..., 1])


def banana_sample(key: jax.Array, n: int) -> jax.Array:
    """Exact draws (n, 2): x0 first, then x1 given x0."""
    k0, k1 = jax.random.split(key)
    x0 = 10.0 * jax.random.normal(k0, (n,))
    return jnp.stack([x0, BANANA_B * (x0**2 - 100.0) + jax.random.normal(k1, (n,))], -1)


def make_banana() -> Target:
    """The banana with its exact moments: means (0, 0), sds (10, sqrt(1 + 2 b^2 10^4)) = (10, sqrt(19))."""
    return Target(
        name="banana", family="banana", model=banana_model, dim=2, log_prob=banana_log_prob, sample=banana_sample,
        ref_mean=np.zeros(2), ref_sd=np.array([10.0, np.sqrt(1.0 + 2 * BANANA_B**2 * 1e4)]),
        info={"n_components": "auto", "main": "kl",
              "description": "x0 ~ N(0, 10^2), x1 | x0 ~ N(0.03 (x0^2 - 100), 1) (sites x0, x1)"},
    )


BUILDERS: dict[str, Callable[[], Target]] = {
    "rotated_gaussian_d100": make_rotated_gaussian,
    "mixture20d_4modes": make_mixture,
    "logistic_breast_cancer": make_logistic,
    "sharp_linear_regression": make_sharp_regression,
    "banana": make_banana,
    "factor_gaussian_d300": make_factor_gaussian,
    "horseshoe_regression": make_horseshoe,
    "baseball_logit": make_baseball,
    **{name: (lambda name=name: posteriordb.make_target(name)) for name in posteriordb.NAMES},
}


# --- metrics ----------------------------------------------------------------------------------


def abs_log_sd_ratio(sd: np.ndarray, ref_sd: np.ndarray) -> np.ndarray:
    """|log(sd / ref_sd)| per coordinate."""
    return np.abs(np.log(np.asarray(sd, np.float64) / np.asarray(ref_sd, np.float64)))


def mean_error_sds(mean: np.ndarray, ref_mean: np.ndarray, ref_sd: np.ndarray) -> np.ndarray:
    """|mean - ref_mean| / ref_sd per coordinate."""
    return np.abs(np.asarray(mean, np.float64) - np.asarray(ref_mean, np.float64)) / np.asarray(ref_sd, np.float64)


def moment_metrics(z: np.ndarray, ref_mean: np.ndarray, ref_sd: np.ndarray) -> dict[str, float]:
    """From draws z (S, d): ``mean_err_max`` and ``mean_err_median`` (max and median |mean error| in
    reference sds), ``log_sd_ratio_median`` and ``log_sd_ratio_max`` (median and max over coordinates of
    |log(sd / ref_sd)|)."""
    z = np.asarray(z, np.float64)
    r = abs_log_sd_ratio(z.std(0), ref_sd)
    err = mean_error_sds(z.mean(0), ref_mean, ref_sd)
    return {"mean_err_max": float(err.max()), "mean_err_median": float(np.median(err)),
            "log_sd_ratio_median": float(np.median(r)), "log_sd_ratio_max": float(r.max())}
