"""ArviZ export of a fitted mixture: draws from q (or PSIS-resampled draws) as an ``xarray.DataTree``.

The posterior group holds constrained values x = T(z) of draws z ~ q on the guide's unconstrained
space; ``sample_stats`` holds log p(z) = -V(z), log q(z) and their difference, the importance log
ratio, so ArviZ's importance-sampling tools (``loo_approximate_posterior``) can correct for q != p.

References
----------
Magnusson, Andersen, Jonasson, Vehtari, "Bayesian leave-one-out cross-validation for large data",
ICML 2019 (arXiv:1904.10679).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray
from arviz_base import from_dict
from numpyro import handlers
from numpyro.infer.util import log_likelihood as _numpyro_log_likelihood

from mixvi.diagnostics._draws import (
    check_guide,
    check_key,
    check_num_samples,
    draw_and_weigh,
    latent_site_names,
    model_param_values,
)
from mixvi.diagnostics.importance import importance_resample
from mixvi.guide import AutoIsotropicMixture

__all__ = ["to_datatree"]


def to_datatree(
    guide: AutoIsotropicMixture,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array,
    num_samples: int = 1000,
    num_chains: int = 1,
    reweight: str | None = None,
    on_bad_khat: str = "warn",
    **model_kwargs: Any,
) -> xarray.DataTree:
    """Draws from the fitted mixture as an ArviZ 1.x ``xarray.DataTree``.

    S = ``num_samples`` iid draws z_s ~ q are reshaped to (chain, draw) = (num_chains, S / num_chains),
    so "chains" are arbitrary splits of iid draws, not Markov chains. Groups:

    * ``posterior``: every latent sample site, constrained (x = T(z)), and every deterministic site.
    * ``sample_stats``: ``log_p`` = -V(z) (unnormalised log target on the unconstrained space, with
      log-Jacobian), ``log_q`` = log q(z), ``log_weight`` = log_p - log_q (importance log ratio).
    * ``log_likelihood``: log p(y_j | x_s) for every observed site, per element (present when the
      model has observed sites); ``observed_data``: the observed values.

    ``az.summary(dt)`` summarises the posterior group; ESS and R-hat there describe iid draws.
    ``az.loo(dt)`` runs PSIS-LOO on draws from q, i.e. it cross-validates q as if it were the
    posterior; ``az.loo_approximate_posterior(dt, log_p=dt.sample_stats.log_p,
    log_q=dt.sample_stats.log_q)`` corrects for q != p (Magnusson et al. 2019).
    :func:`~mixvi.diagnostics.psis_khat` checks q itself.

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
    num_samples : int, default 1000
        Number S of draws, a multiple of ``num_chains``.
    num_chains : int, default 1
        Number of (chain) blocks the draws are split into.
    reweight : {None, 'psis'}, default None
        None: plain draws from q. 'psis': the posterior group holds draws resampled from
        4 x ``num_samples`` proposals with Pareto-smoothed importance weights
        (:func:`~mixvi.diagnostics.importance_resample`); k-hat (``pareto_khat``), ESS
        (``psis_ess``) and ``num_proposals`` go to the root attrs.
    on_bad_khat : {'warn', 'raise', 'ignore'}, default 'warn'
        With ``reweight='psis'``: what happens when k-hat > 0.7.
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
        If ``num_samples`` or ``num_chains`` is not a positive integer, ``num_samples`` is not a
        multiple of ``num_chains``, ``reweight`` is unknown, or the params do not match the guide.
    TypeError
        If ``rng_key`` is not a JAX key or ``guide`` not an ``AutoIsotropicMixture``.
    RuntimeError
        If the guide is not set up.
    """
    rng_key = check_key(rng_key)
    num_samples = check_num_samples(num_samples)
    num_chains = check_num_samples(num_chains, "num_chains")
    if num_samples % num_chains:
        raise ValueError(f"num_samples ({num_samples}) must be a multiple of num_chains ({num_chains})")
    check_guide(guide, params)
    if reweight not in (None, "psis"):
        raise ValueError(f"reweight must be None or 'psis', got {reweight!r}")
    k_weigh, k_lik = jax.random.split(rng_key)
    extra_attrs: dict = {}
    if reweight == "psis":
        res = importance_resample(
            guide, params, *model_args, rng_key=k_weigh, num_samples=num_samples, on_bad_khat=on_bad_khat,
            **model_kwargs,
        )  # fmt: skip
        z = res.latent
        log_q = guide.get_posterior(params).log_prob(z)
        potential = guide.potential_fn(*model_args, **model_kwargs)
        log_p = -jax.jit(jax.vmap(potential, (0, None)))(z, jax.random.fold_in(k_weigh, 1))
        extra_attrs = {
            "reweight": "psis",
            "pareto_khat": res.khat,
            "psis_ess": res.ess,
            "num_proposals": res.num_proposals,
        }
    else:
        z, log_p, log_q = draw_and_weigh(guide, params, model_args, model_kwargs, k_weigh, num_samples)
    shape = (num_chains, num_samples // num_chains)

    def reshape(a: Any) -> np.ndarray:
        a = np.asarray(a)
        return a.reshape(shape + a.shape[1:])

    constrained = guide.constrain(z, params)
    posterior = {name: reshape(v) for name, v in constrained.items()}
    stats = {"log_p": reshape(log_p), "log_q": reshape(log_q), "log_weight": reshape(log_p - log_q)}
    data: dict[str, dict] = {"posterior": posterior, "sample_stats": stats}

    latents = {n: constrained[n] for n in latent_site_names(guide)}
    model = handlers.substitute(handlers.seed(guide.model, rng_seed=k_lik), data=model_param_values(guide, params))
    loglik = _numpyro_log_likelihood(model, latents, *model_args, parallel=True, **model_kwargs)
    if loglik:
        data["log_likelihood"] = {name: reshape(v) for name, v in loglik.items()}
        # the observed values for *these* model arguments (one trace at the first draw)
        first = {n: v[0] for n, v in latents.items()}
        tr = handlers.trace(handlers.substitute(model, data=first)).get_trace(*model_args, **model_kwargs)
        data["observed_data"] = {n: np.asarray(tr[n]["value"]) for n in loglik}
    attrs = {
        "/": {
            "inference_library": "mixvi",
            "inference_method": "variational (AutoIsotropicMixture)",
            "n_components": int(jnp.shape(params[f"{guide.prefix}_locs"])[0]),
            "note": "draws are iid from the variational mixture q, not from the posterior"
            if reweight is None
            else "draws are resampled from q with Pareto-smoothed importance weights p/q",
            **extra_attrs,
        }
    }
    return from_dict(data, attrs=attrs)
