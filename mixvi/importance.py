"""Importance-corrected summaries of a fitted mixture: Pareto-smoothed importance sampling (PSIS).

q has a closed-form density, so the self-normalised importance weights w_s ∝ p(z_s) / q(z_s),
z_s ~ q, correct what the family cannot represent (e.g. the mass of a mode quantised to
(components in it)/N under uniform weights, or small biases). PSIS (Vehtari, Simpson, Gelman, Yao,
Gabry, "Pareto smoothed importance sampling", JMLR 2024) replaces the M = ceil(min(S/5, 3 sqrt S))
largest raw weights by the expected order statistics of a generalized Pareto fit to them,

    w_(S-M+j) <- w_cut + F^-1((j - 1/2) / M; k, sigma),   F^-1(p) = sigma ((1 - p)^(-k) - 1) / k,

truncated at the largest raw weight; k-hat of that fit is the diagnostic of Yao et al. (2018):
below 0.7 the corrected estimates are reliable, above it they (and q) are not.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mixvi.diagnostics import (
    _check_guide,
    _check_key,
    _check_num_samples,
    _draw_and_weigh,
    _gpd_fit,
    khat_from_log_densities,
    khat_from_log_weights,
    tail_length,
)

KHAT_LIMIT = 0.7
NEGLIGIBLE_SPREAD = 0.01


class PsisResult(NamedTuple):
    """Smoothed, normalised log weights (S,), the Pareto k-hat, and the effective sample size
    1 / sum w^2 of the smoothed weights."""

    log_weights: np.ndarray
    khat: float
    ess: float


def psis_log_weights(log_w: Any) -> PsisResult:
    """Pareto-smooth the log importance weights ``log_w`` (S,) and normalise them to sum to one."""
    lw = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if np.isnan(lw).any():
        raise ValueError("log weights contain NaN (the target or proposal log density is NaN at some draws)")
    s = lw.size
    m = tail_length(s)
    if m < 5:
        raise ValueError(f"PSIS needs at least 21 draws, got {s}")
    lw = lw - np.max(lw)
    khat = khat_from_log_weights(lw)
    order = np.argsort(lw)
    tail_idx = order[s - m :]
    cutoff = lw[order[s - m - 1]]
    if np.isfinite(cutoff) and lw[tail_idx[-1]] > cutoff:
        x = np.exp(lw[tail_idx]) - np.exp(cutoff)
        k, sigma = _gpd_fit(x)
        if np.isfinite(k) and sigma > 0:
            p = (np.arange(1, m + 1) - 0.5) / m
            q = sigma * np.expm1(-k * np.log1p(-p)) / k if abs(k) > 1e-12 else -sigma * np.log1p(-p)
            lw = lw.copy()
            lw[tail_idx] = np.minimum(np.log(np.exp(cutoff) + q), 0.0)
    lw = lw - np.logaddexp.reduce(lw)
    ess = float(1.0 / np.sum(np.exp(2 * lw)))
    return PsisResult(lw, khat, ess)


class ImportanceSample(NamedTuple):
    """Constrained posterior draws resampled with PSIS weights (``samples``), the draws' flattened
    unconstrained values (``latent``), k-hat and ESS of the weights, and the number of proposals."""

    samples: dict
    latent: jax.Array
    khat: float
    ess: float
    num_proposals: int


def _check_khat(khat: float, on_bad_khat: str, weight_spread: float) -> None:
    if on_bad_khat not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_bad_khat must be 'warn', 'raise' or 'ignore', got {on_bad_khat!r}")
    # with near-constant weights (sd of log w below 0.01: relative ESS > 0.9999) k-hat only describes
    # the shape of negligible fluctuations; q is then as good as exact and nothing is flagged
    if weight_spread < NEGLIGIBLE_SPREAD:
        return
    if not khat <= KHAT_LIMIT and on_bad_khat != "ignore":
        msg = (
            f"Pareto k-hat = {khat:.2f} > {KHAT_LIMIT}: the importance weights p/q have too heavy a tail, so the "
            "reweighted summaries are not reliable (Yao et al. 2018). Fit q better (more components, more steps, "
            "metric='diagonal') or use the unweighted draws with caution."
        )
        if on_bad_khat == "raise":
            raise ValueError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def importance_resample(
    guide: Any,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array,
    num_samples: int = 1000,
    num_proposals: int | None = None,
    on_bad_khat: str = "warn",
    **model_kwargs: Any,
) -> ImportanceSample:
    """Draw ``num_proposals`` (default 4 x ``num_samples``) points from q, weight them by PSIS-smoothed
    p/q, and resample ``num_samples`` of them with replacement (multinomial) in proportion to the
    weights. The result approximates the posterior better than q itself where k-hat <= 0.7; when k-hat
    is above, ``on_bad_khat`` decides: 'warn' (default), 'raise' or 'ignore'. Fits whose log weights
    are nearly constant (sd < 0.01, relative ESS > 0.9999) are never flagged: there k-hat describes
    only negligible fluctuations."""
    rng_key = _check_key(rng_key)
    num_samples = _check_num_samples(num_samples)
    num_proposals = _check_num_samples(4 * num_samples if num_proposals is None else num_proposals, "num_proposals")
    _check_guide(guide, params)
    k_draw, k_pick = jax.random.split(rng_key)
    z, log_p, log_q = _draw_and_weigh(guide, params, model_args, model_kwargs, k_draw, num_proposals)
    log_w = np.asarray(log_p, np.float64) - np.asarray(log_q, np.float64)
    res = psis_log_weights(log_w)
    khat = khat_from_log_densities(log_p, log_q)
    _check_khat(khat, on_bad_khat, float(np.std(log_w)) if np.all(np.isfinite(log_w)) else np.inf)
    idx = jax.random.choice(k_pick, num_proposals, (num_samples,), replace=True, p=jnp.asarray(np.exp(res.log_weights)))
    latent = z[idx]
    return ImportanceSample(guide.constrain(latent, params), latent, khat, res.ess, num_proposals)
