"""Importance sampling with a fitted mixture as proposal: Pareto k-hat of q and PSIS resampling.

On the guide's flattened unconstrained latent z, with draws z_s ~ q,

    log w_s = log p(z_s) - log q(z_s) = -V(z_s) - log q(z_s),

V being NumPyro's potential energy (log-Jacobian of z -> x included). The ratio p/q is the same on z
as on the constrained space (the Jacobians cancel). q has a closed-form density, so the weights
correct what the family cannot represent (the mass of a mode quantised to (components in it)/N under
uniform weights, small biases), and their Pareto k-hat says whether q is good enough to be
corrected at all. Smoothing and k-hat come from :mod:`mixvi.diagnostics.psis`.

References
----------
Yao, Vehtari, Simpson, Gelman, "Yes, but did it work?: Evaluating variational inference",
ICML 2018 (arXiv:1802.02538).
Vehtari, Simpson, Gelman, Yao, Gabry, "Pareto smoothed importance sampling", Journal of Machine
Learning Research 25(72), 2024 (arXiv:1507.02646).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mixvi.diagnostics._draws import check_guide, check_key, check_num_samples, draw_and_weigh
from mixvi.diagnostics.psis import MIN_DRAWS, psis_from_log_densities
from mixvi.guide import AutoIsotropicMixture

__all__ = ["KHAT_LIMIT", "ImportanceSample", "importance_resample", "psis_khat"]

#: k-hat above which importance-weighted summaries (and q) are not trusted (Yao et al. 2018).
KHAT_LIMIT = 0.7
# log weights with a standard deviation below this (relative ESS > 0.9999) are never flagged
NEGLIGIBLE_SPREAD = 0.01


def psis_khat(
    guide: AutoIsotropicMixture,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array,
    num_samples: int = 2000,
    **model_kwargs: Any,
) -> float:
    """Pareto k-hat of the importance ratios p/q of a fitted mixture.

    Draws z_s ~ q, s = 1..S, forms log w_s = -V(z_s) - log q(z_s) and returns the k-hat of
    :func:`mixvi.diagnostics.psis.psis_from_log_densities`. k-hat < 0.5: q is close enough for
    importance sampling (and usually for its summaries); 0.5-0.7: usable with PSIS, be careful;
    > 0.7: q misses mass of p (or p has heavier tails), do not trust it. The sd of k-hat is about
    (1 + k) / sqrt(M), M ~ 3 sqrt(S): use S >= 1000.

    Parameters
    ----------
    guide : AutoIsotropicMixture
        A set-up guide.
    params : dict
        Its constrained params (``{prefix}_locs`` (N, d), ``{prefix}_scales`` (N,), and the weight
        logits / metric when learned).
    *model_args
        The model's positional arguments (data).
    rng_key : jax.Array
        Key for the draws and the model's seed; same key, same result.
    num_samples : int, default 2000
        Number S of draws from q, at least 30.
    **model_kwargs
        The model's keyword arguments.

    Returns
    -------
    float
        k-hat; -inf when q = p up to a constant (log weights equal within float rounding).

    Raises
    ------
    ValueError
        If ``num_samples`` < 30, the params do not match the guide, or the log weights are NaN or
        +inf somewhere.
    TypeError
        If ``rng_key`` is not a JAX key or ``guide`` not an ``AutoIsotropicMixture``.
    RuntimeError
        If the guide is not set up.
    KeyError
        If ``params`` lack the guide's locs or scales.
    """
    rng_key = check_key(rng_key)
    num_samples = check_num_samples(num_samples)
    if num_samples < MIN_DRAWS:
        raise ValueError(f"num_samples must be >= {MIN_DRAWS} to fit the Pareto tail, got {num_samples}")
    check_guide(guide, params)
    _, log_p, log_q = draw_and_weigh(guide, params, model_args, model_kwargs, rng_key, num_samples)
    return psis_from_log_densities(log_p, log_q).khat


class ImportanceSample(NamedTuple):
    """Posterior draws resampled from q with Pareto-smoothed importance weights.

    Attributes
    ----------
    samples : dict
        Constrained values of every latent and deterministic site, leading axis ``num_samples``.
    latent : jax.Array
        The resampled draws' flattened unconstrained values, shape (num_samples, d).
    khat : float
        Pareto k-hat of the proposals' weights.
    ess : float
        Effective sample size 1 / sum(w^2) of the smoothed normalised weights.
    num_proposals : int
        Number of draws from q the sample was resampled from.
    """

    samples: dict
    latent: jax.Array
    khat: float
    ess: float
    num_proposals: int


def _check_khat(khat: float, on_bad_khat: str, weight_spread: float) -> None:
    if on_bad_khat not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_bad_khat must be 'warn', 'raise' or 'ignore', got {on_bad_khat!r}")
    # near-constant weights: k-hat only describes the shape of negligible fluctuations
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
    guide: AutoIsotropicMixture,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array,
    num_samples: int = 1000,
    num_proposals: int | None = None,
    on_bad_khat: str = "warn",
    **model_kwargs: Any,
) -> ImportanceSample:
    """Resample draws from q with Pareto-smoothed importance weights p/q.

    Draws ``num_proposals`` points from q, weights them by PSIS-smoothed p/q
    (:func:`mixvi.diagnostics.psis.psis_from_log_densities`, the same k-hat as :func:`psis_khat` on
    the same draws), and resamples ``num_samples`` of them with replacement (multinomial) in
    proportion to the weights. Where k-hat <= 0.7 the result approximates the posterior better than
    q itself. Fits whose log weights are nearly constant (sd < 0.01, relative ESS > 0.9999) are never
    flagged: there k-hat describes only negligible fluctuations.

    Parameters
    ----------
    guide : AutoIsotropicMixture
        A set-up guide.
    params : dict
        Its constrained params.
    *model_args
        The model's positional arguments (data).
    rng_key : jax.Array
        Key for the proposals, the model's seed and the resampling; same key, same draws.
    num_samples : int, default 1000
        Number of resampled draws.
    num_proposals : int, optional
        Number of draws from q (default 4 x ``num_samples``), at least 30.
    on_bad_khat : {'warn', 'raise', 'ignore'}, default 'warn'
        What to do when k-hat > 0.7.
    **model_kwargs
        The model's keyword arguments.

    Returns
    -------
    ImportanceSample
        Resampled constrained and unconstrained draws, k-hat, ESS and ``num_proposals``.

    Raises
    ------
    ValueError
        On invalid counts or ``on_bad_khat``, NaN / +inf log weights, fewer than 30 finite ones,
        or k-hat > 0.7 with ``on_bad_khat='raise'``.
    TypeError
        If ``rng_key`` is not a JAX key or ``guide`` not an ``AutoIsotropicMixture``.

    Warns
    -----
    RuntimeWarning
        When k-hat > 0.7 and ``on_bad_khat='warn'``.
    """
    rng_key = check_key(rng_key)
    num_samples = check_num_samples(num_samples)
    num_proposals = check_num_samples(4 * num_samples if num_proposals is None else num_proposals, "num_proposals")
    if on_bad_khat not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_bad_khat must be 'warn', 'raise' or 'ignore', got {on_bad_khat!r}")
    check_guide(guide, params)
    k_draw, k_pick = jax.random.split(rng_key)
    z, log_p, log_q = draw_and_weigh(guide, params, model_args, model_kwargs, k_draw, num_proposals)
    res = psis_from_log_densities(log_p, log_q)
    log_w = np.asarray(log_p, np.float64) - np.asarray(log_q, np.float64)
    _check_khat(res.khat, on_bad_khat, float(np.std(log_w)) if np.all(np.isfinite(log_w)) else np.inf)
    probs = jnp.asarray(np.exp(res.log_weights))
    idx = jax.random.choice(k_pick, num_proposals, (num_samples,), replace=True, p=probs)
    latent = z[idx]
    return ImportanceSample(guide.constrain(latent, params), latent, res.khat, res.ess, num_proposals)
