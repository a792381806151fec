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

from mixvi.diagnostics._draws import (
    Draws,
    Fit,
    check_full_data,
    check_key,
    check_num_samples,
    constrained,
    draw_and_weigh,
    resolve,
)
from mixvi.diagnostics.psis import MIN_DRAWS, PsisResult, psis_from_log_densities

__all__ = ["KHAT_LIMIT", "ImportanceSample", "importance_resample", "psis_khat"]

#: k-hat above which importance-weighted summaries (and q) are not trusted (Yao et al. 2018).
KHAT_LIMIT = 0.7
# log weights with a standard deviation below this (relative ESS > 0.9999) are never flagged
NEGLIGIBLE_SPREAD = 0.01

TOO_FEW_DRAWS = "num_samples must be >= {} to fit the Pareto tail, got {}"
BAD_POLICY = "on_bad_khat must be 'warn', 'raise' or 'ignore', got {!r}"
BAD_KHAT = (
    "Pareto k-hat = {:.2f} > {}: the importance weights p/q have too heavy a tail, so the reweighted "
    "summaries are not reliable (Yao et al. 2018). Fit q better (more components, more steps, "
    "metric='diagonal') or use the unweighted draws with caution."
)


def psis_khat(
    guide: Any,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array,
    num_samples: int = 2000,
    full_data: bool = True,
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
    guide : AutoIsotropicMixture or numpyro.infer.autoguide.AutoGuideList
        A set-up guide: the mixture, or a guide list with one ``AutoIsotropicMixture`` part. For a
        list, q is the joint of all parts and log q the sum of the parts' log densities (each part
        needs a density: an ``AutoDelta`` part raises ``ValueError``).
    params : dict
        Its constrained params (``{prefix}_locs`` (N, d), ``{prefix}_scales`` (N,), and the weight
        logits / metric when learned; for a list, every part's params).
    *model_args
        The model's positional arguments (data).
    rng_key : jax.Array
        Key for the draws and the model's seed; same key, same result.
    num_samples : int, default 2000
        Number S of draws from q, at least 30.
    full_data : bool, default True
        Evaluate every subsampled plate (``numpyro.plate(..., subsample_size=...)``) on all its data,
        so that log p is the full-data log density. False: one random minibatch for all draws (k-hat
        then measures minibatch noise as well as q).
    **model_kwargs
        The model's keyword arguments.

    Returns
    -------
    float
        k-hat; -inf when q = p up to a constant (log weights equal within float rounding).

    Raises
    ------
    ValueError
        If ``num_samples`` < 30, the params do not match the guide, a part of a guide list has no
        density, or the log weights are NaN or +inf somewhere.
    TypeError
        If ``rng_key`` is not a JAX key or ``guide`` is neither an ``AutoIsotropicMixture`` nor a
        guide list holding one.
    RuntimeError
        If the guide is not set up.
    KeyError
        If ``params`` lack the guide's locs or scales.
    """
    rng_key = check_key(rng_key)
    num_samples = check_num_samples(num_samples)
    if num_samples < MIN_DRAWS:
        raise ValueError(TOO_FEW_DRAWS.format(MIN_DRAWS, num_samples))
    full_data = check_full_data(full_data)
    fit = resolve(guide, params, model_args, model_kwargs)
    d = draw_and_weigh(fit, params, model_args, model_kwargs, rng_key, num_samples, full_data=full_data)
    return psis_from_log_densities(d.log_p, d.log_q).khat


class ImportanceSample(NamedTuple):
    """Posterior draws resampled from q with Pareto-smoothed importance weights.

    Attributes
    ----------
    samples : dict
        Constrained values of every latent and deterministic site, leading axis ``num_samples``.
    latent : jax.Array
        The resampled draws' flattened unconstrained values of the mixture, shape (num_samples, d).
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


def _check_policy(on_bad_khat: Any) -> str:
    """``on_bad_khat``, or ValueError unless it is 'warn', 'raise' or 'ignore'."""
    if on_bad_khat not in ("warn", "raise", "ignore"):
        raise ValueError(BAD_POLICY.format(on_bad_khat))
    return on_bad_khat


def _khat_is_bad(res: PsisResult, log_p: Any, log_q: Any) -> bool:
    """Whether k-hat > 0.7 matters: never when the log weights are nearly constant (sd < 0.01),
    where k-hat only describes the shape of negligible fluctuations."""
    log_w = np.asarray(log_p, np.float64) - np.asarray(log_q, np.float64)
    spread = float(np.std(log_w)) if np.all(np.isfinite(log_w)) else np.inf
    return spread >= NEGLIGIBLE_SPREAD and not res.khat <= KHAT_LIMIT


def _act_on_khat(khat: float, on_bad_khat: str, stacklevel: int) -> None:
    if on_bad_khat == "raise":
        raise ValueError(BAD_KHAT.format(khat, KHAT_LIMIT))
    if on_bad_khat == "warn":
        warnings.warn(BAD_KHAT.format(khat, KHAT_LIMIT), RuntimeWarning, stacklevel=stacklevel + 1)


class _Proposals(NamedTuple):
    """_Proposals from q, their PSIS weights, and the indices resampled from them."""

    draws: Draws
    psis: PsisResult
    index: jax.Array
    bad: bool


def _propose_and_resample(
    fit: Fit,
    params: dict,
    args: tuple,
    kwargs: dict,
    rng_key: jax.Array,
    num_samples: int,
    num_proposals: int,
    full_data: bool,
) -> _Proposals:
    """Draw ``num_proposals`` from q, PSIS-weight them and resample ``num_samples`` indices
    (multinomial, with replacement) in proportion to the smoothed weights."""
    k_draw, k_pick = jax.random.split(rng_key)
    d = draw_and_weigh(fit, params, args, kwargs, k_draw, num_proposals, full_data=full_data)
    res = psis_from_log_densities(d.log_p, d.log_q)
    probs = jnp.asarray(np.exp(res.log_weights))
    idx = jax.random.choice(k_pick, num_proposals, (num_samples,), replace=True, p=probs)
    return _Proposals(d, res, idx, _khat_is_bad(res, d.log_p, d.log_q))


def importance_resample(
    guide: Any,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array,
    num_samples: int = 1000,
    num_proposals: int | None = None,
    on_bad_khat: str = "warn",
    full_data: bool = True,
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
    guide : AutoIsotropicMixture or numpyro.infer.autoguide.AutoGuideList
        A set-up guide, or a guide list with one mixture part (q is then the joint of the parts).
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
    full_data : bool, default True
        Evaluate subsampled plates on all their data (False: one random minibatch for all draws).
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
        k-hat > 0.7 with ``on_bad_khat='raise'``, or a part of a guide list without a density.
    TypeError
        If ``rng_key`` is not a JAX key or ``guide`` is neither a mixture nor a list holding one.

    Warns
    -----
    RuntimeWarning
        When k-hat > 0.7 and ``on_bad_khat='warn'``.
    """
    rng_key = check_key(rng_key)
    num_samples = check_num_samples(num_samples)
    num_proposals = check_num_samples(4 * num_samples if num_proposals is None else num_proposals, "num_proposals")
    _check_policy(on_bad_khat)
    full_data = check_full_data(full_data)
    fit = resolve(guide, params, model_args, model_kwargs)
    prop = _propose_and_resample(fit, params, model_args, model_kwargs, rng_key, num_samples, num_proposals, full_data)
    if prop.bad:
        _act_on_khat(prop.psis.khat, on_bad_khat, stacklevel=2)
    samples = constrained(fit, prop.draws, params, prop.index)
    return ImportanceSample(samples, prop.draws.latent[prop.index], prop.psis.khat, prop.psis.ess, num_proposals)
