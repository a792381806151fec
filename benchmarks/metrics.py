"""Every accuracy metric of the benchmark suites, one definition each: KL by Monte Carlo and in closed
form, -ELBO, the single-Gaussian families' KL floors, sliced Wasserstein distance, MMD, (weighted)
moments and their errors in units of the reference sd, half-space and mode masses, mode coverage, the
regressions' test accuracy and log-likelihood, and the median / spread over seeds. All take plain
arrays; nothing here fits anything."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from scipy.special import ndtr


def kl_monte_carlo(log_q: jax.Array, log_p: jax.Array) -> tuple[float, float]:
    """KL(q || p) ~ mean(log q(z_s) - log p(z_s)) over draws z_s ~ q: (estimate, its standard error).
    ``log_p`` must be normalised; with an unnormalised one this is the -ELBO (minus log Z)."""
    diff = np.asarray(log_q, np.float64) - np.asarray(log_p, np.float64)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))


def neg_elbo(log_q: jax.Array, potential: jax.Array) -> float:
    """-ELBO ~ mean(log q(z_s) + V(z_s)), z_s ~ q, V = -log joint. Equals KL(q || pi) - log Z."""
    return float(np.mean(np.asarray(log_q, np.float64) + np.asarray(potential, np.float64)))


def gaussian_kl(mean_q: Any, cov_q: Any, mean_p: Any, cov_p: Any) -> float:
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)) in closed form, in float64.

    Parameters
    ----------
    mean_q, cov_q
        Mean (d,) and covariance of q: a (d, d) matrix, or (d,) for a diagonal one.
    mean_p, cov_p
        The same for p.

    Returns
    -------
    float
        The KL divergence in nats.
    """
    mq, mp = np.asarray(mean_q, np.float64), np.asarray(mean_p, np.float64)
    cq, cp = np.asarray(cov_q, np.float64), np.asarray(cov_p, np.float64)
    cq = np.diag(cq) if cq.ndim == 1 else cq
    cp = np.diag(cp) if cp.ndim == 1 else cp
    d = mq.size
    lp = np.linalg.cholesky(cp)
    trace = np.trace(np.linalg.solve(lp.T, np.linalg.solve(lp, cq)))
    diff = np.linalg.solve(lp, mp - mq)
    _, logdet_q = np.linalg.slogdet(cq)
    logdet_p = 2 * np.sum(np.log(np.diag(lp)))
    return float(0.5 * (trace + diff @ diff - d + logdet_p - logdet_q))


def family_floor_kl(cov: Any) -> dict[str, float]:
    """The smallest KL(q || p) over single Gaussians q of each family, for p = N(m, cov).

    Isotropic (eps* = d / tr P, P = cov^-1): 0.5 [log det cov + d log(tr P / d)]; diagonal
    (v_k* = 1 / P_kk): 0.5 [log det cov + sum_k log P_kk]. The mean is exact in both.

    Parameters
    ----------
    cov
        Covariance of p, (d, d), or (d,) for a diagonal one.

    Returns
    -------
    dict
        ``{"isotropic": floor, "diagonal": floor}`` in nats.
    """
    c = np.asarray(cov, np.float64)
    c = np.diag(c) if c.ndim == 1 else c
    d = c.shape[0]
    prec = np.linalg.inv(c)
    _, logdet = np.linalg.slogdet(c)
    return {
        "isotropic": float(0.5 * (logdet + d * np.log(np.trace(prec) / d))),
        "diagonal": float(0.5 * (logdet + np.sum(np.log(np.diag(prec))))),
    }


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


def weighted_moments(z: Any, log_w: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and sd of draws, self-normalised by importance weights.

    Parameters
    ----------
    z
        Draws, (S, d).
    log_w
        Log weights (S,), any normaliser; None for uniform weights (the plain sample moments).

    Returns
    -------
    tuple of numpy.ndarray
        The mean (d,) and the sd (d,) (the square root of the weighted second central moment).
    """
    z = np.asarray(z, np.float64)
    if log_w is None:
        w = np.full(z.shape[0], 1.0 / z.shape[0])
    else:
        lw = np.asarray(log_w, np.float64)
        w = np.exp(lw - np.logaddexp.reduce(lw))
    mean = w @ z
    return mean, np.sqrt(w @ (z - mean) ** 2)


def moment_errors(mean: Any, sd: Any, ref_mean: Any, ref_sd: Any) -> dict[str, float]:
    """Errors of per-coordinate means and sds in units of the reference sd.

    Parameters
    ----------
    mean, sd
        Moments of the approximation, (d,) each (closed form, or ``weighted_moments`` of draws).
    ref_mean, ref_sd
        The reference moments, (d,) each.

    Returns
    -------
    dict
        ``mean_err`` and ``sd_err``: averages over coordinates of |mean - ref_mean| / ref_sd and
        |sd - ref_sd| / ref_sd; ``mean_err_max`` and ``sd_err_max``: their maxima.
    """
    ref_sd = np.asarray(ref_sd, np.float64)
    me = np.abs(np.asarray(mean, np.float64) - np.asarray(ref_mean, np.float64)) / ref_sd
    se = np.abs(np.asarray(sd, np.float64) - ref_sd) / ref_sd
    return {
        "mean_err": float(me.mean()),
        "sd_err": float(se.mean()),
        "mean_err_max": float(me.max()),
        "sd_err_max": float(se.max()),
    }


def halfspace_mass(locs: Any, scales: Any, weights: Any = None, metric: Any = None, axis: int = 0) -> float:
    """P_q(x_axis > 0) in closed form for q = sum_i w_i N(m_i, sigma_i^2 D).

    Parameters
    ----------
    locs, scales
        Component means (N, d) and scales sigma_i (N,).
    weights
        Component weights (N,); None for uniform ones.
    metric
        The diagonal D (d,); None for the identity.
    axis
        The coordinate whose sign splits the space.

    Returns
    -------
    float
        sum_i w_i Phi(m_i,axis / (sigma_i sqrt(D_axis))).
    """
    locs = np.asarray(locs, np.float64)
    scales = np.asarray(scales, np.float64)
    w = np.full(locs.shape[0], 1.0 / locs.shape[0]) if weights is None else np.asarray(weights, np.float64)
    root = 1.0 if metric is None else math.sqrt(float(np.asarray(metric, np.float64)[axis]))
    return float(w @ ndtr(locs[:, axis] / (scales * root)))


def weighted_mass(z: Any, log_w: Any = None, axis: int = 0) -> float:
    """Self-normalised estimate of P(x_axis > 0) from draws.

    Parameters
    ----------
    z
        Draws, (S, d).
    log_w
        Log importance weights (S,); None for uniform ones.
    axis
        The coordinate whose sign counts.

    Returns
    -------
    float
        The (weighted) share of draws with x_axis > 0.
    """
    right = (np.asarray(z)[:, axis] > 0).astype(np.float64)
    if log_w is None:
        return float(right.mean())
    lw = np.asarray(log_w, np.float64)
    return float(np.exp(lw - np.logaddexp.reduce(lw)) @ right)


def component_split(locs: Any, weights: Any = None, axis: int = 0) -> dict[str, Any]:
    """Which side of x_axis = 0 each component mean lies on.

    Parameters
    ----------
    locs
        Component means, (N, d).
    weights
        Component weights (N,); None for uniform ones.
    axis
        The coordinate whose sign counts.

    Returns
    -------
    dict
        ``right`` and ``left`` (counts), ``label`` (e.g. ``"3R/1L"``) and ``weight_right`` (the weight of
        the components on the right).
    """
    locs = np.asarray(locs, np.float64)
    w = np.full(locs.shape[0], 1.0 / locs.shape[0]) if weights is None else np.asarray(weights, np.float64)
    right = locs[:, axis] > 0
    n_right, n_left = int(right.sum()), int((~right).sum())
    return {"right": n_right, "left": n_left, "label": f"{n_right}R/{n_left}L", "weight_right": float(w[right].sum())}


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


def summarise(values: Sequence[float | None], *, keep_inf: bool = False) -> dict[str, Any]:
    """Median and spread over seeds.

    Parameters
    ----------
    values
        One value per seed; None and NaN entries are dropped.
    keep_inf
        Keep +-inf entries (a k-hat of -inf, when q equals p up to rounding, is a result, not a
        failure); by default only finite values count.

    Returns
    -------
    dict
        ``median``, ``min``, ``max`` (None when no value is left) and ``n``, the number of values used.
    """
    v = [float(x) for x in values if x is not None and not math.isnan(x) and (keep_inf or math.isfinite(x))]
    if not v:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": float(statistics.median(v)), "min": min(v), "max": max(v), "n": len(v)}


def log_density_grid(log_prob: Callable, lo: float, hi: float, num: int) -> tuple[np.ndarray, float]:
    """(log densities on a num x num grid over [lo, hi]^2, the cell area): for normalisation checks."""
    axis = np.linspace(lo, hi, num)
    g0, g1 = np.meshgrid(axis, axis, indexing="ij")
    pts = jnp.asarray(np.stack([g0.ravel(), g1.ravel()], -1), jnp.float32)
    return np.asarray(log_prob(pts), np.float64), float((axis[1] - axis[0]) ** 2)
