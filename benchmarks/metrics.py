"""Metrics of the paper benchmark (``mixvi bench paper``): KL by Monte Carlo, -ELBO, sliced
Wasserstein distance, MMD, moment errors in units of the reference sd, mode coverage, and the
regressions' test accuracy and log-likelihood. All take plain arrays; nothing here fits anything."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp


def kl_monte_carlo(log_q: jax.Array, log_p: jax.Array) -> tuple[float, float]:
    """KL(q || p) ~ mean(log q(z_s) - log p(z_s)) over draws z_s ~ q: (estimate, its standard error).
    ``log_p`` must be normalised; with an unnormalised one this is the -ELBO (minus log Z)."""
    diff = np.asarray(log_q, np.float64) - np.asarray(log_p, np.float64)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))


def neg_elbo(log_q: jax.Array, potential: jax.Array) -> float:
    """-ELBO ~ mean(log q(z_s) + V(z_s)), z_s ~ q, V = -log joint. Equals KL(q || pi) - log Z."""
    return float(np.mean(np.asarray(log_q, np.float64) + np.asarray(potential, np.float64)))


def gaussian_kl(m0: np.ndarray, s0: np.ndarray, m1: np.ndarray, s1: np.ndarray) -> float:
    """Closed-form KL(N(m0, S0) || N(m1, S1)) (for tests)."""
    m0, s0, m1, s1 = (np.asarray(a, np.float64) for a in (m0, s0, m1, s1))
    d = m0.size
    inv1 = np.linalg.inv(s1)
    diff = m1 - m0
    return float(
        0.5 * (np.trace(inv1 @ s0) + diff @ inv1 @ diff - d + np.linalg.slogdet(s1)[1] - np.linalg.slogdet(s0)[1])
    )


def random_directions(key: jax.Array, dim: int, num: int) -> np.ndarray:
    """``num`` directions uniform on the unit sphere of R^dim, (num, dim)."""
    u = np.asarray(jax.random.normal(key, (num, dim)), np.float64)
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def _sorted_quantiles(a: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles at ``levels`` of every column of the column-sorted ``a`` (n, P), by linear
    interpolation between order statistics at positions level * n - 1/2 (fast, vectorised)."""
    n = a.shape[0]
    pos = np.clip(levels * n - 0.5, 0.0, n - 1.0)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo)[:, None]
    return a[lo] * (1 - w) + a[hi] * w


def sliced_wasserstein(
    x: np.ndarray, y: np.ndarray, key: jax.Array | None = None, num_projections: int = 200, p: int = 2,
    directions: np.ndarray | None = None,
) -> float:
    """Sliced p-Wasserstein distance (E_theta W_p^p(theta.x, theta.y))^(1/p), theta uniform on the
    sphere, between the empirical distributions of x (n, d) and y (m, d). Each 1-D distance compares
    max(n, m) matched quantiles. For y = x + v, SW_2 = |v| / sqrt(d) (E (theta.v)^2 = |v|^2 / d)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if directions is None:
        directions = random_directions(jax.random.PRNGKey(0) if key is None else key, x.shape[1], num_projections)
    qx, qy = np.sort(x @ directions.T, 0), np.sort(y @ directions.T, 0)
    if qx.shape[0] != qy.shape[0]:
        levels = (np.arange(max(len(qx), len(qy))) + 0.5) / max(len(qx), len(qy))
        qx, qy = _sorted_quantiles(qx, levels), _sorted_quantiles(qy, levels)
    return float(np.mean(np.abs(qx - qy) ** p) ** (1.0 / p))


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with the Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 h^2)); h defaults to the
    median pairwise distance of the pooled samples (median heuristic). Returns sqrt(max(MMD^2, 0))."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum(np.sum(a**2, 1)[:, None] - 2 * a @ b.T + np.sum(b**2, 1)[None], 0.0)

    if bandwidth is None:
        z = np.concatenate([x, y])[:1000]
        bandwidth = float(np.sqrt(np.median(sq(z, z)[np.triu_indices(len(z), 1)]) / 1.0))
    g = 1.0 / (2 * bandwidth**2)
    kxx, kyy, kxy = np.exp(-g * sq(x, x)), np.exp(-g * sq(y, y)), np.exp(-g * sq(x, y))
    n, m = len(x), len(y)
    val = (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    return float(np.sqrt(max(val, 0.0)))


def moment_errors(x: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Errors of the per-coordinate means and sds of x against the reference ``ref``, in units of the
    reference sd: mean over coordinates of |mean - mean_ref| / sd_ref and of |sd - sd_ref| / sd_ref
    (``mean_err``, ``sd_err``) and their maxima (``mean_err_max``, ``sd_err_max``)."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    sd_ref = ref.std(0)
    me = np.abs(x.mean(0) - ref.mean(0)) / sd_ref
    se = np.abs(x.std(0) - sd_ref) / sd_ref
    return {"mean_err": float(me.mean()), "sd_err": float(se.mean()), "mean_err_max": float(me.max()),
            "sd_err_max": float(se.max())}


def mode_masses(modes: np.ndarray, num_modes: int) -> np.ndarray:
    """Share of the draws in each mode: ``modes`` (S,) integer labels -> (num_modes,)."""
    return np.bincount(np.asarray(modes).reshape(-1), minlength=num_modes)[:num_modes] / np.asarray(modes).size


def mode_coverage(q_modes: np.ndarray, ref_modes: np.ndarray, num_modes: int, threshold: float = 0.5) -> dict:
    """Share of each target mode's mass that q recovers: coverage_k = min(1, m_k(q) / m_k(pi)), where
    m_k is the share of draws that the target assigns to mode k (labels from the target's
    ``mode_of``: the component of highest responsibility for a mixture). A mode counts as covered
    when coverage_k >= ``threshold``. Returns per-mode ``coverage``, ``min_coverage``, ``covered``
    (count), ``num_modes`` and ``tv`` (total-variation distance between the mode-mass vectors)."""
    mq, mp = mode_masses(q_modes, num_modes), mode_masses(ref_modes, num_modes)
    cov = np.where(mp > 0, np.minimum(1.0, mq / np.where(mp > 0, mp, 1.0)), 1.0)
    return {"coverage": cov.tolist(), "min_coverage": float(cov.min()), "covered": int(np.sum(cov >= threshold)),
            "num_modes": int(num_modes), "tv": float(0.5 * np.abs(mq - mp).sum())}


def predictive_metrics(log_probs: jax.Array, labels: np.ndarray) -> dict[str, float]:
    """Test metrics of the posterior predictive p(y | x) = E_q p(y | x, w) from per-draw class
    log-probabilities ``log_probs`` (S, n, C): accuracy of argmax_y p(y | x) and the mean over test
    points of log p(y_i | x_i) (log-mean-exp over draws), with its standard error over the test points
    (sd / sqrt(n): how much the mean would move with another test set of the same size)."""
    lp = jnp.asarray(log_probs)
    pred = logsumexp(lp, 0) - jnp.log(lp.shape[0])  # (n, C)
    labels = np.asarray(labels)
    acc = float(np.mean(np.asarray(jnp.argmax(pred, -1)) == labels))
    per_point = np.asarray(pred, np.float64)[np.arange(len(labels)), labels]
    se = float(np.std(per_point, ddof=1) / np.sqrt(len(labels))) if len(labels) > 1 else float("nan")
    return {"test_accuracy": acc, "test_loglik": float(np.mean(per_point)), "test_loglik_se": se}


def first_reach(curve: np.ndarray, threshold: float) -> int | None:
    """Index of the first entry of ``curve`` at or below ``threshold`` (None if never)."""
    hit = np.nonzero(np.asarray(curve) <= threshold)[0]
    return int(hit[0]) if hit.size else None


def summarise(values: list[float]) -> dict[str, float | None]:
    """Median and spread (min, max) over seeds, ignoring non-finite entries."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def log_density_grid(log_prob: Callable, lo: float, hi: float, num: int) -> tuple[np.ndarray, float]:
    """(log densities on a num x num grid over [lo, hi]^2, the cell area): for normalisation checks."""
    axis = np.linspace(lo, hi, num)
    g0, g1 = np.meshgrid(axis, axis, indexing="ij")
    pts = jnp.asarray(np.stack([g0.ravel(), g1.ravel()], -1), jnp.float32)
    return np.asarray(log_prob(pts), np.float64), float((axis[1] - axis[0]) ** 2)
