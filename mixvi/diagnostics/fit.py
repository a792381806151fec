"""One call that says whether a fitted mixture can be trusted: :func:`fit_check`.

Measurements from the same S draws z_s ~ q, each catching what the other misses:

* **k-hat** of the importance ratios p/q (PSIS; :mod:`mixvi.diagnostics.psis`): large when q puts
  too little mass where p has it (too narrow, a missing tail, a mode q sees only part of);
* the **Stein moment divergence** (the verdict's second number),

      M = (1/d) [ tr((I + C)^2) + h^T Sigma_q h ],   C = E_q[(z - m_q) grad log p(z)^T],  h = E_q[grad log p(z)],

  with m_q and Sigma_q the mixture's mean and covariance. Stein's identity (E_p[grad log p] = 0,
  E_p[(z - m) grad log p^T] = -I for any constant m) makes both terms 0 when q = p. For a Gaussian p,
  C = -Sigma_q Sigma_p^(-1), whose eigenvalues are the variance ratios rho_k of q to p along p's axes, so
  tr((I + C)^2) = sum_k (1 - rho_k)^2 (M = 0.1: variances about 30 % off), and h^T Sigma_q h is the
  squared length of q's mean error in posterior sds (times rho). It reads only p's score, never q's, so
  several components on one smooth mode (a bumpy log q) do not count against a fit; both terms are
  unbiased U-statistics over pairs of distinct draws, so M is near 0 for an exact fit at any S;
* the **relative score divergence**, reported but no longer in the verdict,

      D = (1/d) E_q[ || sigma(z) L^T (grad log p(z) - grad log q(z)) ||^2 ],

  with L the shared metric's factor and sigma(z)^2 = sum_i r_i(z) sigma_i^2 the responsibility-weighted
  component variance at z: a Fisher divergence (the objective of score-matching VI: "Batch and match",
  Cai et al., ICML 2024, arXiv 2402.14758) made scale-free, equal to M's first term for Gaussians. It
  compares the scores themselves, so a mixture whose components sit apart on one smooth mode shows D of
  0.3 to 2 on a fit whose moments are right (eight schools with isotropic components: D = 1.7 with every
  mean within 0.03 sd); M is 0.2 there (docs/diagnostics.md).

k-hat describes the tail of weights that vary: when they hardly do (q = p up to a few per cent; the
relative effective sample size of the smoothed weights at least :data:`FLAT_ESS`) the estimate is
fitted to float32 rounding and means nothing, so it does not count against the fit.

k-hat from S draws is itself noisy (on the benchmark fits, three keys at S = 1000 spread over 0.3-0.6):
when it lands in :data:`REFINE_KHAT` (near the threshold 0.7) the check draws :data:`REFINE_FACTOR` S
more points and computes every number from all of them, so that a borderline fit is judged on the
sharper estimate (baseball's centred logit, too narrow in log sigma: 0.50-0.63 at S = 1000, 0.76-0.97
at 16000).

None can see a mode that no component reached (the draws never go there): mode discovery is the
fit's job (:mod:`mixvi.adapt`). The thresholds :data:`GOOD` and :data:`USABLE` are calibrated on the
benchmark targets (docs/diagnostics.md lists the fits and their values).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mixvi import metric_root, stein_moment
from mixvi.diagnostics._draws import check_full_data, check_key, check_num_samples, draw_and_weigh, potential, resolve
from mixvi.diagnostics.psis import FLAT_ESS, psis_from_log_densities

GOOD = {"khat": 0.7, "stein_divergence": 0.1}
"""Below both: the fit's means, sds and masses can be used as they are."""
USABLE = {"khat": 1.0, "stein_divergence": 1.0}
"""Below both (but not good): usable with importance correction (``to_datatree``'s default resampling)."""
REFINE_KHAT = (0.5, 0.8)
"""A k-hat from the first S draws in this closed band is recomputed from (1 + REFINE_FACTOR) S draws."""
REFINE_FACTOR = 15
MIN_DRAWS = 100
TOO_FEW = "fit_check needs num_samples >= {}, got {}: k-hat needs a tail of at least a few dozen draws"
LIST_SCORE = (
    "the score divergence of an AutoGuideList is not computed (its parts have no joint score); only k-hat is reported"
)


class FitCheck(NamedTuple):
    """The verdict of :func:`fit_check`.

    Attributes
    ----------
    verdict : str
        'good', 'usable' (with importance correction) or 'poor'.
    khat : float
        Pareto k-hat of p/q.
    score_divergence : float
        The relative score divergence D (NaN for a guide list; reported, not in the verdict).
    reasons : tuple of str
        Why the verdict is not 'good' (empty when it is).
    relative_ess : float
        ESS / S of the PSIS weights (near 1: the weights are nearly flat and k-hat does not count).
    num_samples : int
        The draws both numbers come from: S, or (1 + REFINE_FACTOR) S when the first k-hat was
        borderline (:data:`REFINE_KHAT`).
    stein_divergence : float
        The Stein moment divergence M (NaN for a guide list).
    """

    verdict: str
    khat: float
    score_divergence: float
    reasons: tuple[str, ...]
    relative_ess: float = float("nan")
    num_samples: int = 0
    stein_divergence: float = float("nan")


def relative_score_divergence(q: Any, z: jax.Array, grad_log_p: jax.Array) -> jax.Array:
    """D of the module docstring from draws ``z`` (S, d) of the mixture ``q`` and grad log p at them."""
    g = grad_log_p - q.score(z)
    sigma2 = q.responsibilities(z) @ (q.scales**2)
    g = metric_root.transpose_apply(g, q.metric, q.scale_tril)  # R^T g for every row
    return jnp.mean(sigma2 * jnp.sum(g**2, -1)) / z.shape[-1]


def stein_moment_divergence(q: Any, z: jax.Array, grad_log_p: jax.Array) -> jax.Array:
    """M of the module docstring from i.i.d. draws ``z`` (S, d) of the mixture ``q`` and grad log p at them.

    With u = z - E_q[z] and g = grad log p(z): M = (1/d) [tr((I + C)^2) + h^T Sigma_q h], C = E_q[u g^T],
    h = E_q[g]. Stein's identity makes C = -I and h = 0 under q = p; both terms are estimated without
    bias from the S draws (U-statistics over pairs of distinct draws, :mod:`mixvi.stein_moment`), so M is
    near 0 for an exact fit whatever S (and can come out slightly negative).
    """
    u = (z - q.mean)[None]  # S groups of one draw
    return stein_moment.stein_moment_divergence(u, grad_log_p[None], lambda h: _covariance_form(q, h))


def _covariance_form(q: Any, h: jax.Array) -> jax.Array:
    """h_r^T Sigma_q h_r for every row of h (R, d): q's covariance (:func:`mixvi.stein_moment.covariance_form`)."""
    return stein_moment.covariance_form(h, q.locs, q.scales, q.component_weights, q.metric, q.scale_tril)


def _verdict(khat: float, divergence: float, relative_ess: float = 0.0) -> tuple[str, tuple[str, ...]]:
    if relative_ess >= FLAT_ESS:
        khat = -np.inf  # nearly flat weights: their k-hat is fitted to rounding
    reasons = []
    if not khat <= GOOD["khat"]:
        reasons.append(f"k-hat {khat:.2f} > {GOOD['khat']}: q misses part of p's mass or its tails")
    if not (np.isnan(divergence) or divergence <= GOOD["stein_divergence"]):
        reasons.append(
            f"Stein moment divergence {divergence:.3g} > {GOOD['stein_divergence']}: q's spread, centre or shape "
            f"is off (for a Gaussian posterior, about {100 * np.sqrt(divergence):.0f} % in variance)"
        )
    if not reasons:
        return "good", ()
    usable = khat <= USABLE["khat"] and (np.isnan(divergence) or divergence <= USABLE["stein_divergence"])
    return ("usable" if usable else "poor"), tuple(reasons)


def fit_check(
    guide: Any,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array,
    num_samples: int = 1000,
    full_data: bool = True,
    refine: bool = True,
    **model_kwargs: Any,
) -> FitCheck:
    """Whether a fitted mixture can be trusted: k-hat, the Stein moment divergence M and the relative score
    divergence D (see the module docstring), and a verdict from k-hat and M.

    Parameters
    ----------
    guide : AutoIsotropicMixture or numpyro.infer.autoguide.AutoGuideList
        A set-up guide (for a guide list only k-hat is computed).
    params : dict
        Its constrained params.
    *model_args
        The model's positional arguments (data).
    rng_key : jax.Array
        Key of the draws.
    num_samples : int, default 1000
        Draws S from q (at least 100).
    full_data : bool, default True
        Subsampled plates on all their data (as :func:`mixvi.psis_khat`).
    refine : bool, default True
        When the k-hat of the S draws is borderline (in :data:`REFINE_KHAT`), draw REFINE_FACTOR S more
        and judge on all of them.
    **model_kwargs
        The model's keyword arguments.

    Returns
    -------
    FitCheck
        ``verdict`` 'good' (k-hat <= 0.7 and M <= 0.1), 'usable' (k-hat <= 1 and M <= 1: use
        importance-corrected summaries, check against a reference where you can) or 'poor', with
        k-hat, D and M, the reasons and the number of draws they come from.
    """
    rng_key = check_key(rng_key)
    num_samples = check_num_samples(num_samples)
    if num_samples < MIN_DRAWS:
        raise ValueError(TOO_FEW.format(MIN_DRAWS, num_samples))
    full_data = check_full_data(full_data)
    fit = resolve(guide, params, model_args, model_kwargs)
    k_draws, k_model = jax.random.split(rng_key)
    draws = draw_and_weigh(fit, params, model_args, model_kwargs, k_draws, num_samples, full_data=full_data)
    psis = psis_from_log_densities(draws.log_p, draws.log_q)
    khat, relative_ess = float(psis.khat), float(psis.ess) / num_samples
    if refine and relative_ess < FLAT_ESS and REFINE_KHAT[0] <= khat <= REFINE_KHAT[1]:
        more = draw_and_weigh(
            fit,
            params,
            model_args,
            model_kwargs,
            jax.random.fold_in(k_draws, 1),
            REFINE_FACTOR * num_samples,
            full_data=full_data,
        )
        draws = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), draws, more)
        num_samples = (1 + REFINE_FACTOR) * num_samples
        psis = psis_from_log_densities(draws.log_p, draws.log_q)
        khat, relative_ess = float(psis.khat), float(psis.ess) / num_samples
    divergence = stein = float("nan")
    if not fit.is_list:
        pot = potential(fit, params, model_args, model_kwargs, full_data)
        mix_params = {k: params[k] for k in fit.mixture.param_names()}

        def divergences(p: dict, z: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
            grads = -jax.vmap(jax.grad(pot), (0, None))(z, key)
            q = fit.mixture.get_posterior(p)
            return relative_score_divergence(q, z, grads), stein_moment_divergence(q, z, grads)

        divergence, stein = (float(v) for v in jax.jit(divergences)(mix_params, draws.latent, k_model))
    verdict, reasons = _verdict(khat, stein, relative_ess)
    return FitCheck(verdict, khat, divergence, reasons, relative_ess, num_samples, stein)
