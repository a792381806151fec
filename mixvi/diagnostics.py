"""Diagnostics for a fitted ``AutoIsotropicMixture``: ArviZ export, Pareto k-hat, per-component table.

All functions work on the flattened unconstrained latent z, where the guide's mixture lives:

    q(z)     = (1/N) sum_i N(z; m_i, sigma_i^2 I)                    (guide.get_posterior(params))
    log p(z) = -V(z) = log p(x(z), y) + log|det J(z)|                 (unnormalised target, NumPyro's
                                                                       potential energy V incl. the
                                                                       log-Jacobian of z -> x)
    log w(z) = log p(z) - log q(z)                                     (importance log ratio)

The ratio p/q is the same whether both densities are written on z or on the constrained x (the
Jacobians cancel), so these log weights are the ones of importance sampling on the model's own space.

References
----------
Yao, Vehtari, Simpson, Gelman (2018), "Yes, but did it work?: Evaluating variational inference", ICML.
Vehtari, Simpson, Gelman, Yao, Gabry (2024), "Pareto smoothed importance sampling", JMLR 25(72).
Zhang, Stephens (2009), "A new and efficient estimation method for the generalized Pareto
distribution", Technometrics 51(3).
See docs/diagnostics.md for the definitions, thresholds and caveats.
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
from scipy.special import logsumexp as _np_logsumexp

from mixvi.guide import AutoIsotropicMixture

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import xarray
    from matplotlib.axes import Axes

__all__ = ["component_summary", "khat_from_log_weights", "plot_components", "psis_khat", "to_datatree"]

# Weakly informative prior of Vehtari et al. (2024): k-hat is shrunk towards 0.5 as if 10 more
# exceedances had k = 0.5; the Zhang-Stephens grid uses 30 + sqrt(M) points and prior scale 3.
_PRIOR_K_WEIGHT = 10.0
_PRIOR_K_CENTRE = 0.5
_ZS_PRIOR_BS = 3.0
_ZS_MIN_GRID = 30
_MIN_TAIL = 5


# --------------------------------------------------------------------------------------------------
# Pareto k-hat
# --------------------------------------------------------------------------------------------------
def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """Zhang & Stephens (2009) empirical-Bayes fit of a generalized Pareto distribution to the
    exceedances ``x`` (sorted ascending, >= 0), with the weakly informative prior on k of
    Vehtari et al. (2024). Returns (k, sigma); k is nan when the sample is degenerate (its first
    quartile is 0: a quarter of the exceedances tie with the threshold or underflow).

    GPD: P(X > x) = (1 + k x / sigma)^(-1/k). With theta = -k / sigma, the profile log-likelihood
    is l(theta) = n [log(-theta / k(theta)) - k(theta) - 1], k(theta) = mean_j log(1 - theta x_j).
    theta_hat is the posterior mean of theta over the grid
        theta_j = 1/x_(n) + (1 - sqrt(m / (j - 1/2))) / (3 x_(n/4)),   j = 1..m,  m = 30 + floor(sqrt n),
    weighted by exp(l(theta_j)); then k_hat = k(theta_hat), sigma_hat = -k_hat / theta_hat and
    k_hat <- (n k_hat + 10 * 0.5) / (n + 10).
    """
    n = x.size
    m = _ZS_MIN_GRID + int(math.sqrt(n))
    xstar = x[int(n / 4 + 0.5) - 1]  # first quartile
    if not xstar > 0.0:
        return math.nan, math.nan
    j = np.arange(1, m + 1, dtype=np.float64)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (_ZS_PRIOR_BS * xstar)
    k_theta = np.mean(np.log1p(-theta[:, None] * x[None, :]), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prof = n * (np.log(-theta / k_theta) - k_theta - 1.0)
    prof = np.where(np.isfinite(prof), prof, -np.inf)
    w = np.exp(prof - _np_logsumexp(prof))
    theta_hat = float(np.sum(theta * w))
    k = float(np.mean(np.log1p(-theta_hat * x)))
    sigma = -k / theta_hat
    k = (n * k + _PRIOR_K_WEIGHT * _PRIOR_K_CENTRE) / (n + _PRIOR_K_WEIGHT)
    return k, sigma


def tail_length(num_draws: int) -> int:
    """M = ceil(min(S / 5, 3 sqrt(S))): the number of largest ratios the GPD is fitted to (S iid draws,
    relative efficiency 1; Vehtari et al. 2024, as in the R package ``loo``)."""
    return int(math.ceil(min(num_draws / 5.0, 3.0 * math.sqrt(num_draws))))


def khat_from_log_weights(log_w: Any) -> float:
    """Pareto k-hat of importance weights given their logarithms ``log_w`` (any shape, flattened).

    Fits a generalized Pareto distribution to the exceedances of the M largest weights over the
    (M+1)-th largest, M = ceil(min(S/5, 3 sqrt(S))):
        x_j = w_(S-M+j) / w_max - w_(S-M) / w_max,   j = 1..M   (scale-free: any constant in log_w cancels)
    with the Zhang-Stephens estimator and the weakly informative prior of Vehtari et al. (2024).

    1/k is the tail index of the weight distribution: E[w^r] is finite for r < 1/k, so k < 1/2 means
    finite variance. Thresholds (Yao et al. 2018): k < 0.5 good, 0.5-0.7 usable with PSIS, > 0.7 the
    importance ratios (and the approximation they check) are not reliable.

    Special values: ``inf`` when some log weight is +inf or the tail spans more than ~700 nats (the
    exceedances underflow; an extremely heavy tail), ``-inf`` when the M+1 largest log weights are all
    equal (bounded, constant tail: importance sampling is exact there), ``nan`` when the tail is
    dominated by tied values so no continuous fit is possible. ``-inf`` entries (zero weight) are allowed.

    :raises ValueError: on NaN entries or fewer than 21 finite draws (M < 5).
    """
    lw = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if np.isnan(lw).any():
        raise ValueError("log weights contain NaN (the target or proposal log density is NaN at some draws)")
    if np.isposinf(lw).any():
        return math.inf
    s = int(np.sum(np.isfinite(lw)))
    m = tail_length(lw.size)
    if m < _MIN_TAIL or s < m + 1:
        raise ValueError(
            f"need at least 21 draws with finite log weight to fit the Pareto tail (M = min(S/5, 3 sqrt S) >= 5); "
            f"got {lw.size} draws, {s} finite"
        )
    top = np.sort(np.partition(lw, lw.size - m - 1)[lw.size - m - 1 :])  # ascending, m + 1 values
    cutoff, tail = top[0], top[1:]
    lw_max = tail[-1]
    if lw_max == cutoff:
        return -math.inf
    # exceedances of w / w_max over the cutoff: exp(cutoff - max) * expm1(tail - cutoff); where
    # expm1 overflows (tail - cutoff > 709) the cutoff term is below exp(-709) and exp(tail - max) is exact
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.exp(cutoff - lw_max) * np.expm1(tail - cutoff)
    x = np.where(np.isfinite(x), x, np.exp(tail - lw_max))
    k, _ = _gpd_fit(x)
    if math.isnan(k):
        if tail[int(m / 4 + 0.5) - 1] - lw_max < math.log(np.finfo(np.float64).tiny):
            return math.inf  # the lower tail values underflowed relative to the maximum
        return math.nan
    return k


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------
def _check_guide(guide: Any, params: dict) -> None:
    if not isinstance(guide, AutoIsotropicMixture):
        raise TypeError(f"expected an AutoIsotropicMixture, got {type(guide).__name__}")
    if guide.prototype_trace is None:
        raise RuntimeError(
            "the guide is not set up yet: call guide.setup(rng_key, *model_args, **model_kwargs) "
            "(or run MixVI / SVI on it) before the diagnostics"
        )
    locs_name, scales_name = f"{guide.prefix}_locs", f"{guide.prefix}_scales"
    missing = [k for k in (locs_name, scales_name) if k not in params]
    if missing:
        raise KeyError(f"params lack {missing}; pass the constrained params of a fit (e.g. MixVI.run(...).params)")
    locs, scales = jnp.shape(params[locs_name]), jnp.shape(params[scales_name])
    if len(locs) != 2 or locs[1] != guide.latent_dim or scales != locs[:1]:
        raise ValueError(
            f"params do not match the guide: {locs_name} has shape {locs}, {scales_name} {scales}; "
            f"expected (N, {guide.latent_dim}) and (N,)"
        )


def _check_num_samples(num_samples: Any, name: str = "num_samples") -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {num_samples!r}")
    return int(num_samples)


def _check_key(rng_key: Any) -> jax.Array:
    if rng_key is None or isinstance(rng_key, (int, np.integer)):
        raise TypeError(f"rng_key must be a jax.random key (e.g. jax.random.PRNGKey(0)), got {rng_key!r}")
    return rng_key


def _draw_and_weigh(
    guide: AutoIsotropicMixture,
    params: dict,
    args: tuple,
    kwargs: dict,
    rng_key: jax.Array,
    num_samples: int,
    responsibilities: bool = False,
) -> tuple[jax.Array, ...]:
    """z ~ q (S, d), log p(z) = -V(z) and log q(z), each (S,) (and r(z) (S, N) if asked), in one
    compiled call. The model is seeded with one key for all draws, so a subsampled model sees the
    same minibatch at every z."""
    potential = guide.potential_fn(*args, **kwargs)
    names = guide.param_names()

    def run(mixture_params: dict, key: jax.Array) -> tuple[jax.Array, ...]:
        k_draw, k_model = jax.random.split(key)
        q = guide.get_posterior(mixture_params)
        z = q.sample(k_draw, (num_samples,))
        v = jax.vmap(potential, (0, None))(z, k_model)
        out = (z, -v, q.log_prob(z))
        return out + (q.responsibilities(z),) if responsibilities else out

    return jax.jit(run)({k: params[k] for k in names}, rng_key)


def _latent_site_names(guide: AutoIsotropicMixture) -> list[str]:
    return [n for n, s in guide.prototype_trace.items() if s["type"] == "sample" and not s["is_observed"]]


def _model_param_values(guide: AutoIsotropicMixture, params: dict) -> dict:
    return {
        k: v for k, v in params.items() if k in guide.prototype_trace and guide.prototype_trace[k]["type"] == "param"
    }


# --------------------------------------------------------------------------------------------------
# ArviZ export
# --------------------------------------------------------------------------------------------------
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

    S = ``num_samples`` iid draws z_s ~ q are reshaped to (chain, draw) = (num_chains, S / num_chains)
    (so "chains" are arbitrary splits of iid draws, not Markov chains). Groups:

    * ``posterior``: every latent sample site, constrained (x = T(z)), and every deterministic site.
    * ``sample_stats``: ``log_p`` = -V(z) (unnormalised log target on the unconstrained space, with
      log-Jacobian), ``log_q`` = log q(z), ``log_weight`` = log_p - log_q (importance log ratio).
    * ``log_likelihood``: log p(y_j | x_s) for every observed site, per element (present when the
      model has observed sites); ``observed_data``: the observed values.

    ``az.summary(dt)`` summarises the posterior group; ESS / R-hat there describe iid draws.
    ``az.loo(dt)`` runs PSIS-LOO on draws from q, i.e. it cross-validates q as if it were the
    posterior; ``az.loo_approximate_posterior(dt, log_p=dt.sample_stats.log_p, log_q=dt.sample_stats.log_q)``
    corrects for q != p (Magnusson et al. 2019). ``psis_khat`` of ``log_weight`` checks q itself.

    :param guide: a set-up ``AutoIsotropicMixture``.
    :param params: its constrained params (``{prefix}_locs`` (N, d), ``{prefix}_scales`` (N,)).
    :param model_args: the model's positional arguments (data).
    :param rng_key: key for the draws (and the model's seed); same key, same result.
    :param num_samples: S >= 1, a multiple of ``num_chains``.
    :param num_chains: number of (chain) blocks the draws are split into.
    :param reweight: None (plain draws from q) or 'psis': the posterior group holds draws resampled
        from 4 x ``num_samples`` proposals with Pareto-smoothed importance weights p/q
        (``mixvi.importance_resample``); k-hat and ESS go to the root attrs, and ``on_bad_khat``
        ('warn', 'raise', 'ignore') decides what happens when k-hat > 0.7.
    :param model_kwargs: the model's keyword arguments.
    """
    from arviz_base import from_dict

    rng_key = _check_key(rng_key)
    num_samples = _check_num_samples(num_samples)
    num_chains = _check_num_samples(num_chains, "num_chains")
    if num_samples % num_chains:
        raise ValueError(f"num_samples ({num_samples}) must be a multiple of num_chains ({num_chains})")
    _check_guide(guide, params)
    if reweight not in (None, "psis"):
        raise ValueError(f"reweight must be None or 'psis', got {reweight!r}")
    k_weigh, k_lik = jax.random.split(rng_key)
    extra_attrs: dict = {}
    if reweight == "psis":
        from mixvi.importance import importance_resample

        res = importance_resample(
            guide, params, *model_args, rng_key=k_weigh, num_samples=num_samples, on_bad_khat=on_bad_khat,
            **model_kwargs,
        )
        z = res.latent
        q = guide.get_posterior(params)
        log_q = q.log_prob(z)
        potential = guide.potential_fn(*model_args, **model_kwargs)
        log_p = -jax.jit(jax.vmap(potential, (0, None)))(z, jax.random.fold_in(k_weigh, 1))
        extra_attrs = {"reweight": "psis", "pareto_khat": res.khat, "psis_ess": res.ess,
                       "num_proposals": res.num_proposals}
    else:
        z, log_p, log_q = _draw_and_weigh(guide, params, model_args, model_kwargs, k_weigh, num_samples)
    shape = (num_chains, num_samples // num_chains)

    def reshape(a: Any) -> np.ndarray:
        a = np.asarray(a)
        return a.reshape(shape + a.shape[1:])

    constrained = guide.constrain(z, params)
    posterior = {name: reshape(v) for name, v in constrained.items()}
    stats = {"log_p": reshape(log_p), "log_q": reshape(log_q), "log_weight": reshape(log_p - log_q)}
    data: dict[str, dict] = {"posterior": posterior, "sample_stats": stats}

    latents = {n: constrained[n] for n in _latent_site_names(guide)}
    model = handlers.substitute(handlers.seed(guide.model, rng_seed=k_lik), data=_model_param_values(guide, params))
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


# --------------------------------------------------------------------------------------------------
# PSIS k-hat of the fitted q
# --------------------------------------------------------------------------------------------------
def psis_khat(
    guide: AutoIsotropicMixture,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array,
    num_samples: int = 2000,
    **model_kwargs: Any,
) -> float:
    """Pareto k-hat of the importance ratios p/q of the fitted mixture (Yao et al. 2018).

    Draws z_s ~ q, s = 1..S, forms log w_s = log p(z_s) - log q(z_s) = -V(z_s) - log q(z_s) and returns
    ``khat_from_log_weights(log w)``: the shape of a generalized Pareto fit to the M = ceil(min(S/5,
    3 sqrt S)) largest ratios. k < 0.5: q is close enough for importance sampling (and usually for its
    summaries); 0.5 <= k < 0.7: usable with PSIS, be careful; k >= 0.7: q misses mass of p (or p has
    heavier tails); do not trust it. k̂ of a small S has sd about (1 + k)/sqrt(M): use S >= 1000.

    If log w is constant to within the floating-point rounding of log p and log q
    (max - min <= 64 eps (max|log p| + max|log q| + 1)), q = p up to a constant and -inf is returned.

    :raises ValueError: num_samples < 21, NaN log densities; TypeError / RuntimeError as ``to_datatree``.
    """
    rng_key = _check_key(rng_key)
    num_samples = _check_num_samples(num_samples)
    if tail_length(num_samples) < _MIN_TAIL:
        raise ValueError(f"num_samples must be >= 21 to fit the Pareto tail (M >= 5), got {num_samples}")
    _check_guide(guide, params)
    _, log_p, log_q = _draw_and_weigh(guide, params, model_args, model_kwargs, rng_key, num_samples)
    return khat_from_log_densities(log_p, log_q)


def khat_from_log_densities(log_p: Any, log_q: Any) -> float:
    """k-hat of the ratios p/q at draws from q, given log p and log q there: -inf when the log
    ratios agree to within float rounding of the log densities (q = p up to a constant), else
    ``khat_from_log_weights(log_p - log_q)``."""
    eps = float(np.finfo(np.result_type(np.asarray(log_p).dtype, np.asarray(log_q).dtype)).eps)
    log_p, log_q = np.asarray(log_p, np.float64), np.asarray(log_q, np.float64)
    log_w = log_p - log_q
    if np.isnan(log_w).any():
        raise ValueError("the log density is NaN at some draws from q; check the model's log density")
    finite = np.isfinite(log_w)
    if finite.all():
        tol = 64 * eps * (np.max(np.abs(log_p)) + np.max(np.abs(log_q)) + 1.0)
        if np.ptp(log_w) <= tol:
            return -math.inf
    return khat_from_log_weights(log_w)


# --------------------------------------------------------------------------------------------------
# per-component table
# --------------------------------------------------------------------------------------------------
def _site_columns(name: str, values: np.ndarray, max_entries: int = 4) -> dict[str, np.ndarray]:
    """Readable columns for one site, values (N, *shape): scalar -> 'loc:name'; up to ``max_entries``
    elements -> 'loc:name[i]' / 'loc:name[i,j]'; larger -> the first 3 elements and 'loc:|name|' (norm)."""
    n = values.shape[0]
    shape = values.shape[1:]
    if not shape:
        return {f"loc:{name}": values}
    flat = values.reshape(n, -1)
    idx = list(np.ndindex(*shape))
    cols = {}
    shown = idx if len(idx) <= max_entries else idx[: max_entries - 1]
    for j, ix in enumerate(shown):
        cols[f"loc:{name}[{','.join(map(str, ix))}]"] = flat[:, j]
    if len(idx) > max_entries:
        cols[f"loc:|{name}|"] = np.linalg.norm(flat, axis=1)
    return cols


def component_summary(
    guide: AutoIsotropicMixture,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array | None = None,
    num_samples: int = 4000,
    **model_kwargs: Any,
) -> pandas.DataFrame | dict[str, np.ndarray]:
    """One row per mixture component: its scale, its centre on the constrained space, and the share of
    posterior mass it carries.

    Columns (index ``component`` = 0..N-1):

    * ``sigma``: sigma_i (unconstrained space).
    * ``weight_uniform``: 1/N, the weight q gives every component.
    * ``mass``: importance-weighted share of the *posterior* mass of component i,
          mass_i = E_p[r_i(z)] ~= sum_s w_s r_i(z_s) / sum_s w_s,   z_s ~ q,  w_s = p(z_s)/q(z_s),
      r_i(z) = N(z; m_i, sigma_i^2 I) / (N q(z)) the responsibility. Under q itself E_q[r_i] = 1/N;
      ``mass`` reweights to p, so a component sitting on a mode with posterior mass 0.7 gets ~0.7.
      The masses sum to 1.
    * ``mass_se``: delta-method Monte-Carlo standard error of the self-normalised estimate,
          se_i = sqrt(sum_s wbar_s^2 (r_i(z_s) - mass_i)^2),   wbar_s = w_s / sum_t w_t
      (trust it only when ``attrs['khat']`` < 0.7).
    * per latent site, T(m_i): the component centre mapped to the constrained space (the image of the
      centre, not the mean of the pushed-forward component). Scalar sites give one column ``loc:name``;
      sites with up to 4 elements ``loc:name[i]``; larger sites the first 3 elements and ``loc:|name|``
      (Euclidean norm). The ``loc:`` prefix keeps a site called ``sigma`` apart from the scale column.

    A ``pandas.DataFrame`` (``attrs``: ``khat``, ``ess`` = 1 / sum wbar_s^2, ``num_samples``), or a
    dict of numpy arrays when pandas is not installed.

    :param rng_key: key for the draws; None means ``jax.random.PRNGKey(0)`` (deterministic).
    """
    rng_key = jax.random.PRNGKey(0) if rng_key is None else _check_key(rng_key)
    num_samples = _check_num_samples(num_samples)
    _check_guide(guide, params)
    z, log_p, log_q, r = _draw_and_weigh(guide, params, model_args, model_kwargs, rng_key, num_samples, True)
    log_w = np.asarray(log_p, np.float64) - np.asarray(log_q, np.float64)
    if np.isnan(log_w).any():
        raise ValueError("the log density is NaN at some draws from q; check the model's log density")
    if not np.isfinite(log_w).any():
        raise ValueError("the target density is zero (or infinite) at every draw from q")
    wbar = np.exp(log_w - _np_logsumexp(log_w))
    q = guide.get_posterior(params)
    r = np.asarray(r, np.float64)  # (S, N) responsibilities r_i(z_s)
    mass = wbar @ r
    mass_se = np.sqrt(np.sum(wbar[:, None] ** 2 * (r - mass) ** 2, axis=0))
    n = int(q.n_components)

    cols: dict[str, np.ndarray] = {
        "component": np.arange(n),
        "sigma": np.asarray(q.scales),
        "weight_uniform": np.full(n, 1.0 / n),
        "mass": mass,
        "mass_se": mass_se,
    }
    centres = guide.constrain(q.locs, params)
    for name in _latent_site_names(guide):
        cols.update(_site_columns(name, np.asarray(centres[name])))

    khat = khat_from_log_weights(log_w) if tail_length(num_samples) >= _MIN_TAIL else math.nan
    if khat > 0.7:
        warnings.warn(
            f"Pareto k-hat of the importance ratios is {khat:.2f} > 0.7: the importance-weighted masses are unreliable",
            RuntimeWarning,
            stacklevel=2,
        )
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas ships with arviz/xarray
        return cols
    df = pd.DataFrame(cols).set_index("component")
    df.attrs.update({"khat": khat, "ess": float(1.0 / np.sum(wbar**2)), "num_samples": num_samples})
    return df


# --------------------------------------------------------------------------------------------------
# plot for 2-D latents
# --------------------------------------------------------------------------------------------------
def plot_components(
    guide: AutoIsotropicMixture,
    params: dict,
    *model_args: Any,
    ax: Axes | None = None,
    show_target: bool = True,
    grid_size: int = 120,
    num_levels: int = 12,
    rng_key: jax.Array | None = None,
    **model_kwargs: Any,
) -> Axes:
    """For a 2-D unconstrained latent: contours of log q (solid) and, with ``show_target``, of the
    unnormalised log target -V (dashed, grey), the component centres m_i and circles of radius sigma_i
    and 2 sigma_i. Axes are the unconstrained coordinates. Returns the Axes; saves nothing.

    :param rng_key: seeds the model when evaluating -V (only matters for subsampled models);
        None means ``jax.random.PRNGKey(0)``.
    """
    from matplotlib.patches import Circle

    _check_guide(guide, params)
    if guide.latent_dim != 2:
        raise ValueError(f"plot_components needs a 2-D unconstrained latent, this model's has {guide.latent_dim}")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    q = guide.get_posterior(params)
    locs, scales = np.asarray(q.locs), np.asarray(q.scales)
    lo = np.min(locs - 3.5 * scales[:, None], axis=0)
    hi = np.max(locs + 3.5 * scales[:, None], axis=0)
    gx, gy = np.linspace(lo[0], hi[0], grid_size), np.linspace(lo[1], hi[1], grid_size)
    xx, yy = np.meshgrid(gx, gy)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), dtype=q.locs.dtype)
    log_q = np.asarray(q.log_prob(pts)).reshape(xx.shape)
    top = np.max(log_q)
    ax.contour(xx, yy, log_q, levels=np.linspace(top - 10.0, top, num_levels), cmap="viridis", linewidths=1.0)
    if show_target:
        key = jax.random.PRNGKey(0) if rng_key is None else _check_key(rng_key)
        log_p = -np.asarray(jax.vmap(guide.potential_fn(*model_args, **model_kwargs), (0, None))(pts, key))
        log_p = log_p.reshape(xx.shape)
        if np.isfinite(log_p).any():
            pmax = np.nanmax(np.where(np.isfinite(log_p), log_p, -np.inf))
            ax.contour(
                xx,
                yy,
                log_p,
                levels=np.linspace(pmax - 10.0, pmax, num_levels),
                colors="0.5",
                linestyles="--",
                linewidths=0.8,
            )
    for i, (m, s) in enumerate(zip(locs, scales, strict=True)):
        for rad, style in ((s, "-"), (2 * s, ":")):
            ax.add_patch(Circle(m, rad, fill=False, color="C3", linestyle=style, linewidth=1.0))
        ax.annotate(str(i), m, textcoords="offset points", xytext=(3, 3), fontsize=8, color="C3")
    ax.plot(locs[:, 0], locs[:, 1], "o", color="C3", markersize=4, label="component centres")
    index = guide._unpack_latent(jnp.arange(2.0))
    labels = ["", ""]
    for name, v in index.items():
        v = np.asarray(v)
        for ix in np.ndindex(*v.shape):
            labels[int(v[ix])] = name if not v.shape else f"{name}[{','.join(map(str, ix))}]"
    ax.set_xlabel(f"{labels[0]} (unconstrained)")
    ax.set_ylabel(f"{labels[1]} (unconstrained)")
    ax.set_aspect("equal", adjustable="datalim")
    return ax
