"""ArviZ export of a fitted mixture: PSIS-resampled draws (or draws from q) as an ``xarray.DataTree``.

By default the posterior group holds draws resampled from q with Pareto-smoothed importance weights
p/q, so that they approximate the posterior and ``az.loo`` / ``az.summary`` on the tree describe p,
not q; when the weights' Pareto k-hat exceeds 0.7 the draws of q itself are exported with a warning.
``sample_stats`` holds log p(z) = -V(z), log q(z) and their difference, the importance log ratio.
The independent draws are split into 4 pseudo-chains, so ArviZ's R-hat (about 1) and ESS are defined.

References
----------
Magnusson, Andersen, Jonasson, Vehtari, "Bayesian leave-one-out cross-validation for large data",
ICML 2019 (arXiv:1904.10679).
Vehtari, Simpson, Gelman, Yao, Gabry, "Pareto smoothed importance sampling", Journal of Machine
Learning Research 25(72), 2024 (arXiv:1507.02646).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer.util import log_likelihood as _numpyro_log_likelihood

from mixvi.diagnostics._draws import (
    check_full_data,
    check_key,
    check_num_samples,
    constrained,
    data_model,
    draw_and_weigh,
    latent_site_names,
    resolve,
)
from mixvi.diagnostics.importance import KHAT_LIMIT, _act_on_khat, _check_policy, _propose_and_resample
from mixvi.diagnostics.psis import MIN_DRAWS, psis_from_log_densities

if TYPE_CHECKING:  # pragma: no cover
    import xarray

__all__ = ["REWEIGHTS", "to_datatree"]

#: Values of ``to_datatree(..., reweight=...)``.
REWEIGHTS = ("auto", "psis", "none")

BAD_REWEIGHT = (
    "reweight must be 'auto' (PSIS-resampled draws when k-hat <= 0.7, else the draws of q with a warning), "
    "'psis' (always resampled) or 'none' (the draws of q), got {!r}"
)
NOT_A_MULTIPLE = (
    "num_samples ({}) must be a multiple of num_chains ({}): the independent draws are split into num_chains "
    "equal pseudo-chains; pass num_samples={} or another num_chains"
)
ONE_CHAIN = (
    "num_chains=1: ArviZ's R-hat needs at least 2 chains and is NaN for this tree; the default num_chains=4 "
    "splits the independent draws into 4 pseudo-chains (R-hat about 1, ESS defined)"
)
AUTO_FELL_BACK = (
    "Pareto k-hat = {:.2f} > {} for the importance weights p/q: the PSIS-resampled draws would not approximate "
    "the posterior, so to_datatree exports the draws of q itself, and ArviZ's loo and summary on this tree "
    "describe q, not the posterior. Fit q better, or pass reweight='psis' to resample anyway or "
    "reweight='none' (with on_bad_khat='ignore') to ask for the draws of q without this warning."
)
AUTO_BAD_KHAT = (
    "Pareto k-hat = {:.2f} > {} for the importance weights p/q (on_bad_khat='raise'): PSIS-resampled draws "
    "would not approximate the posterior. Fit q better, or pass reweight='none' for the draws of q."
)


def to_datatree(
    guide: Any,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array,
    num_samples: int = 1000,
    num_chains: int = 4,
    reweight: str | None = "auto",
    on_bad_khat: str = "warn",
    num_proposals: int | None = None,
    full_data: bool = True,
    **model_kwargs: Any,
) -> xarray.DataTree:
    """Posterior draws of a fitted mixture as an ArviZ 1.x ``xarray.DataTree``.

    By default (``reweight='auto'``) the posterior group holds S = ``num_samples`` draws resampled
    with Pareto-smoothed importance weights p/q from ``num_proposals`` draws of q
    (:func:`~mixvi.diagnostics.importance_resample`): they approximate the posterior p, so
    ``az.loo(dt)`` and ``az.summary(dt)`` describe p, not q. When the weights' Pareto k-hat exceeds
    0.7 resampling cannot be trusted: the tree then holds S draws of q itself, with a
    ``RuntimeWarning`` naming ``reweight`` and k-hat, and ``attrs['reweight'] == 'none'``.

    The S independent draws are split, in their random order, into ``num_chains`` pseudo-chains of
    S / ``num_chains`` draws each (dims ``(chain, draw)``). They are not Markov chains: ArviZ's R-hat
    compares blocks of independent draws and is about 1 by construction (it says nothing about q's
    quality), and its ESS is that of independent draws (for resampled draws, repeated proposals
    make the information smaller: ``attrs['psis_ess']`` bounds it).

    Groups:

    * ``posterior``: every latent sample site, constrained (x = T(z)), and every deterministic site.
    * ``sample_stats``: ``log_p`` = -V(z) (unnormalised log target on the unconstrained space, with
      log-Jacobian), ``log_q`` = log q(z), ``log_weight`` = log_p - log_q (importance log ratio), at
      the exported draws.
    * ``log_likelihood``: log p(y_j | x_s) for every observed site, per element (present when the
      model has observed sites); ``observed_data``: the observed values.

    Root attrs: ``reweight`` ('psis' when the draws are resampled, 'none' when they come from q),
    ``pareto_khat`` (k-hat of the weights of the draws of q used), ``psis_ess`` and
    ``num_proposals`` (resampled trees), ``mixture_prefix``, ``other_parts`` (guide lists) and
    ``note``. On a tree of raw draws (``reweight='none'``),
    ``az.loo_approximate_posterior(dt, log_p=dt.sample_stats.log_p, log_q=dt.sample_stats.log_q)``
    corrects for q != p (Magnusson et al. 2019); on a resampled tree use plain ``az.loo``, since its
    draws are already corrected.

    Models with subsampled plates (``numpyro.plate(..., subsample_size=...)``) are evaluated on all
    their data (``full_data=True``): log p, the weights and ``log_likelihood`` are full-data
    quantities, one element per data point.

    Parameters
    ----------
    guide : AutoIsotropicMixture or numpyro.infer.autoguide.AutoGuideList
        A set-up guide, or a guide list with one mixture part: q is then the joint of the parts (log q
        summed over them), the posterior group holds the sites of every part, and
        ``attrs['other_parts']`` names the parts other than the mixture.
    params : dict
        Its constrained params (``{prefix}_locs`` (N, d), ``{prefix}_scales`` (N,), and the weight
        logits / metric when learned; for a list, every part's params).
    *model_args
        The model's positional arguments (data).
    rng_key : jax.Array
        Key for the draws and the model's seed; same key, same result.
    num_samples : int, default 1000
        Number S of exported draws, a multiple of ``num_chains``.
    num_chains : int, default 4
        Number of pseudo-chains the independent draws are split into (1 leaves ArviZ's R-hat NaN
        and warns).
    reweight : {'auto', 'psis', 'none'}, default 'auto'
        'auto': resampled draws when k-hat <= 0.7 (or the log weights are nearly constant), else the
        draws of q with a warning (``on_bad_khat='raise'`` raises instead, 'ignore' stays silent).
        'psis': always resampled; ``on_bad_khat`` says what happens when k-hat > 0.7. 'none' (or
        None): the plain draws of q, without importance correction.
    on_bad_khat : {'warn', 'raise', 'ignore'}, default 'warn'
        What happens when k-hat > 0.7 (not used with ``reweight='none'``).
    num_proposals : int, optional
        Draws of q the resampling starts from (default 4 x ``num_samples``), at least 30.
    full_data : bool, default True
        Evaluate subsampled plates on all their data (False: one random minibatch for all draws).
    **model_kwargs
        The model's keyword arguments.

    Returns
    -------
    xarray.DataTree
        Groups ``posterior``, ``sample_stats`` and, for models with observed sites,
        ``log_likelihood`` and ``observed_data``.

    Raises
    ------
    ValueError
        If ``num_samples``, ``num_chains`` or ``num_proposals`` is not a positive integer,
        ``num_samples`` is not a multiple of ``num_chains``, ``reweight`` or ``on_bad_khat`` is
        unknown, the params do not match the guide, a part of a guide list has no density, or
        k-hat > 0.7 with ``on_bad_khat='raise'``.
    TypeError
        If ``rng_key`` is not a JAX key or ``guide`` is neither a mixture nor a list holding one.
    RuntimeError
        If the guide is not set up.

    Warns
    -----
    RuntimeWarning
        When k-hat > 0.7 and ``on_bad_khat='warn'``: with 'auto' the tree holds the draws of q.
    UserWarning
        When ``num_chains=1`` (ArviZ's R-hat is then NaN).
    """
    rng_key = check_key(rng_key)
    num_samples = check_num_samples(num_samples)
    num_chains = check_num_samples(num_chains, "num_chains")
    if num_samples % num_chains:
        raise ValueError(NOT_A_MULTIPLE.format(num_samples, num_chains, num_chains * -(-num_samples // num_chains)))
    reweight = "none" if reweight is None else reweight
    if reweight not in REWEIGHTS:
        raise ValueError(BAD_REWEIGHT.format(reweight))
    _check_policy(on_bad_khat)
    full_data = check_full_data(full_data)
    if num_proposals is None:
        num_proposals = 4 * num_samples
    num_proposals = check_num_samples(num_proposals, "num_proposals")
    fit = resolve(guide, params, model_args, model_kwargs)
    if num_chains == 1:
        warnings.warn(ONE_CHAIN, UserWarning, stacklevel=2)
    k_weigh, k_lik = jax.random.split(rng_key)
    attrs: dict = {}
    if reweight == "none":
        draws = draw_and_weigh(fit, params, model_args, model_kwargs, k_weigh, num_samples, full_data=full_data)
        idx = jnp.arange(num_samples)
        log_w = np.asarray(draws.log_p, np.float64) - np.asarray(draws.log_q, np.float64)
        enough = np.isfinite(log_w).sum() >= MIN_DRAWS and not (np.isnan(log_w).any() or np.isposinf(log_w).any())
        attrs["pareto_khat"] = psis_from_log_densities(draws.log_p, draws.log_q).khat if enough else math.nan
        used = "none"
    else:
        prop = _propose_and_resample(
            fit, params, model_args, model_kwargs, k_weigh, num_samples, num_proposals, full_data
        )
        draws, khat = prop.draws, prop.psis.khat
        attrs.update({"pareto_khat": khat, "psis_ess": prop.psis.ess, "num_proposals": num_proposals})
        used = "psis"
        if prop.bad and reweight == "psis":
            _act_on_khat(khat, on_bad_khat, stacklevel=2)
        if prop.bad and reweight == "auto":
            if on_bad_khat == "raise":
                raise ValueError(AUTO_BAD_KHAT.format(khat, KHAT_LIMIT))
            if on_bad_khat == "warn":
                warnings.warn(AUTO_FELL_BACK.format(khat, KHAT_LIMIT), RuntimeWarning, stacklevel=2)
            used = "none"
            for k in ("psis_ess", "num_proposals"):
                del attrs[k]
        idx = prop.index if used == "psis" else jnp.arange(num_samples)  # the first proposals: iid from q
    shape = (num_chains, num_samples // num_chains)

    def reshape(a: Any) -> np.ndarray:
        a = np.asarray(a)
        return a.reshape(shape + a.shape[1:])

    sites = constrained(fit, draws, params, idx)
    log_p, log_q = draws.log_p[idx], draws.log_q[idx]
    posterior = {name: reshape(v) for name, v in sites.items()}
    stats = {"log_p": reshape(log_p), "log_q": reshape(log_q), "log_weight": reshape(log_p - log_q)}
    data: dict[str, dict] = {"posterior": posterior, "sample_stats": stats}

    latents = {n: sites[n] for n in latent_site_names(fit.guide)}
    model = handlers.seed(data_model(fit, params, full_data), rng_seed=k_lik)
    loglik = _numpyro_log_likelihood(model, latents, *model_args, parallel=True, **model_kwargs)
    if loglik:
        data["log_likelihood"] = {name: reshape(v) for name, v in loglik.items()}
        # the observed values for *these* model arguments (one trace at the first draw)
        first = {n: v[0] for n, v in latents.items()}
        tr = handlers.trace(handlers.substitute(model, data=first)).get_trace(*model_args, **model_kwargs)
        data["observed_data"] = {n: np.asarray(tr[n]["value"]) for n in loglik}
    kind = "AutoGuideList with an AutoIsotropicMixture part" if fit.is_list else "AutoIsotropicMixture"
    root = {
        "inference_library": "mixvi",
        "inference_method": f"variational ({kind})",
        "n_components": int(jnp.shape(params[f"{fit.mixture.prefix}_locs"])[0]),
        "reweight": used,
        "note": (
            "draws are resampled from q with Pareto-smoothed importance weights p/q; chains are pseudo-chains "
            "(blocks of independent draws)"
            if used == "psis"
            else "draws are independent draws from the variational q, not from the posterior; chains are "
            "pseudo-chains (blocks of independent draws)"
        ),
        "mixture_prefix": fit.mixture.prefix,
        **attrs,
    }
    if fit.is_list:
        root["other_parts"] = "; ".join(fit.others)
    from arviz_base import from_dict  # imported on use: xarray and ArviZ cost ~0.3 s to import

    return from_dict(data, attrs={"/": root})
