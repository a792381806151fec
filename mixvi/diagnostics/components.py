"""Per-component view of a fitted mixture: a table of scales, weights and posterior masses, and a plot.

With draws z_s ~ q and importance weights w_s = p(z_s) / q(z_s), the share of posterior mass carried
by component i is estimated by self-normalised importance sampling of its responsibility
r_i(z) = pi_i N(z; m_i, sigma_i^2 I) / q(z):

    mass_i = E_p[r_i(z)] ~= sum_s w_s r_i(z_s) / sum_s w_s.

References
----------
Yao, Vehtari, Simpson, Gelman, "Yes, but did it work?: Evaluating variational inference",
ICML 2018 (arXiv:1802.02538).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from mixvi.diagnostics._draws import (
    check_full_data,
    check_key,
    check_num_samples,
    draw_and_weigh,
    latent_site_names,
    potential,
    resolve,
)
from mixvi.diagnostics.importance import KHAT_LIMIT
from mixvi.diagnostics.psis import MIN_DRAWS, psis_from_log_densities

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["component_summary", "plot_components"]

LIST_TARGET = (
    "plot_components cannot draw the target of a guide list's mixture part: it depends on the sites of the "
    "other parts ({}); pass show_target=False to draw q alone"
)


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
    guide: Any,
    params: dict,
    *model_args: Any,
    rng_key: jax.Array | None = None,
    num_samples: int = 4000,
    full_data: bool = True,
    **model_kwargs: Any,
) -> pd.DataFrame:
    """One row per mixture component: its scale, its weight, its centre on the constrained space, and
    the share of posterior mass it carries.

    Columns (index ``component`` = 0..N-1):

    * ``sigma``: sigma_i (unconstrained space).
    * ``weight``: pi_i, the weight q gives component i: the learned weights softmax(logits) when the
      params hold ``{prefix}_weight_logits`` (guides with ``weights="fisher-rao"``), else 1/N.
    * ``mass``: importance-weighted share of the *posterior* mass of component i,
      mass_i = E_p[r_i(z)] ~= sum_s w_s r_i(z_s) / sum_s w_s with z_s ~ q, w_s = p(z_s) / q(z_s) and
      r_i(z) = pi_i N(z; m_i, sigma_i^2 I) / q(z) the responsibility. Under q itself E_q[r_i] = pi_i;
      ``mass`` reweights to p, so a component sitting on a mode with posterior mass 0.7 gets about
      0.7. The masses sum to 1.
    * ``mass_se``: delta-method Monte-Carlo standard error of the self-normalised estimate,
      se_i = sqrt(sum_s wbar_s^2 (r_i(z_s) - mass_i)^2), wbar_s = w_s / sum_t w_t (trust it only
      when ``attrs['khat']`` < 0.7).
    * per latent site, T(m_i): the component centre mapped to the constrained space (the image of the
      centre, not the mean of the pushed-forward component). Scalar sites give one column
      ``loc:name``; sites with up to 4 elements ``loc:name[i]``; larger sites the first 3 elements and
      ``loc:|name|`` (Euclidean norm). The ``loc:`` prefix keeps a site called ``sigma`` apart from the
      scale column.

    For a NumPyro ``AutoGuideList`` the rows are the components of its ``AutoIsotropicMixture``
    part; the importance weights are those of the whole list (log q summed over its parts), and
    ``attrs['other_parts']`` names the other parts.

    Parameters
    ----------
    guide : AutoIsotropicMixture or numpyro.infer.autoguide.AutoGuideList
        A set-up guide, or a guide list with one mixture part.
    params : dict
        Its constrained params.
    *model_args
        The model's positional arguments (data).
    rng_key : jax.Array, optional
        Key for the draws; None means ``jax.random.PRNGKey(0)`` (deterministic).
    num_samples : int, default 4000
        Number S of draws from q.
    full_data : bool, default True
        Evaluate subsampled plates on all their data (False: one random minibatch for all draws).
    **model_kwargs
        The model's keyword arguments.

    Returns
    -------
    pandas.DataFrame
        The table; ``attrs`` holds ``khat`` (Pareto k-hat of the same draws' weights, NaN when fewer
        than 30 are finite), ``ess`` = 1 / sum wbar_s^2, ``num_samples``, ``mixture_prefix`` (the
        mixture's param prefix) and ``other_parts`` (the other parts of a guide list, else empty).

    Raises
    ------
    ValueError
        If the log density is NaN at some draw, the target is zero at every draw, ``num_samples`` is
        not a positive integer, the params do not match the guide, or a part of a guide list has no
        density.
    TypeError
        If ``rng_key`` is not a JAX key or ``guide`` is neither a mixture nor a list holding one.

    Warns
    -----
    RuntimeWarning
        When k-hat > 0.7: the importance-weighted masses are then unreliable.
    """
    rng_key = jax.random.PRNGKey(0) if rng_key is None else check_key(rng_key)
    num_samples = check_num_samples(num_samples)
    full_data = check_full_data(full_data)
    fit = resolve(guide, params, model_args, model_kwargs)
    draws = draw_and_weigh(fit, params, model_args, model_kwargs, rng_key, num_samples, True, full_data)
    log_p, log_q, r = draws.log_p, draws.log_q, draws.resp
    log_w = np.asarray(log_p, np.float64) - np.asarray(log_q, np.float64)
    if np.isnan(log_w).any():
        raise ValueError("the log density is NaN at some draws from q; check the model's log density")
    if not np.isfinite(log_w).any():
        raise ValueError("the target density is zero (or infinite) at every draw from q")
    wbar = np.exp(log_w - logsumexp(log_w))
    q = fit.mixture.get_posterior(params)
    r = np.asarray(r, np.float64)  # (S, N) responsibilities r_i(z_s)
    mass = wbar @ r
    mass_se = np.sqrt(np.sum(wbar[:, None] ** 2 * (r - mass) ** 2, axis=0))

    cols: dict[str, np.ndarray] = {
        "component": np.arange(int(q.n_components)),
        "sigma": np.asarray(q.scales),
        "weight": np.asarray(q.component_weights),
        "mass": mass,
        "mass_se": mass_se,
    }
    centres = fit.mixture.constrain(q.locs, params)
    for name in latent_site_names(fit.mixture):
        cols.update(_site_columns(name, np.asarray(centres[name])))

    enough = np.isfinite(log_w).sum() >= MIN_DRAWS and not np.isposinf(log_w).any()
    khat = psis_from_log_densities(log_p, log_q).khat if enough else math.nan
    if khat > KHAT_LIMIT:
        warnings.warn(
            f"Pareto k-hat of the importance ratios is {khat:.2f} > {KHAT_LIMIT}: "
            "the importance-weighted masses are unreliable",
            RuntimeWarning,
            stacklevel=2,
        )
    import pandas as pd  # imported on use (~0.15 s)

    df = pd.DataFrame(cols).set_index("component")
    df.attrs.update(
        {
            "khat": khat,
            "ess": float(1.0 / np.sum(wbar**2)),
            "num_samples": num_samples,
            "mixture_prefix": fit.mixture.prefix,
            "other_parts": list(fit.others),
        }
    )
    return df


def plot_components(
    guide: Any,
    params: dict,
    *model_args: Any,
    ax: Axes | None = None,
    show_target: bool = True,
    grid_size: int = 120,
    num_levels: int = 12,
    rng_key: jax.Array | None = None,
    **model_kwargs: Any,
) -> Axes:
    """Contours of q and of the target, with the component centres and scales, for a 2-D latent.

    Draws contours of log q (solid) and, with ``show_target``, of the unnormalised log target -V
    (dashed, grey), the component centres m_i and circles of radius sigma_i and 2 sigma_i. Axes are
    the unconstrained coordinates. Saves nothing.

    Parameters
    ----------
    guide : AutoIsotropicMixture or numpyro.infer.autoguide.AutoGuideList
        A set-up guide whose unconstrained latent is 2-D, or a guide list whose mixture part's latent
        is 2-D (then only with ``show_target=False``: the target of the mixture's sites depends on
        the other parts' sites).
    params : dict
        Its constrained params.
    *model_args
        The model's positional arguments (data).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure's when None.
    show_target : bool, default True
        Whether to draw the contours of -V.
    grid_size : int, default 120
        Grid points per axis for the contours.
    num_levels : int, default 12
        Contour levels, spread over the top 10 nats of each density.
    rng_key : jax.Array, optional
        Seeds the model when evaluating -V; None means ``jax.random.PRNGKey(0)``. Subsampled plates
        are evaluated on all their data.
    **model_kwargs
        The model's keyword arguments.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ValueError
        If the unconstrained latent is not 2-D, the params do not match the guide, or a guide list
        is given with ``show_target=True``.
    """
    from matplotlib.patches import Circle  # matplotlib is imported on first use only: it is slow to import

    fit = resolve(guide, params, model_args, model_kwargs)
    if fit.is_list and show_target:
        raise ValueError(LIST_TARGET.format(", ".join(fit.others)))
    guide = fit.mixture
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
        key = jax.random.PRNGKey(0) if rng_key is None else check_key(rng_key)
        log_p = -np.asarray(jax.vmap(potential(fit, params, model_args, model_kwargs), (0, None))(pts, key))
        log_p = log_p.reshape(xx.shape)
        if np.isfinite(log_p).any():
            pmax = np.nanmax(np.where(np.isfinite(log_p), log_p, -np.inf))
            levels = np.linspace(pmax - 10.0, pmax, num_levels)
            ax.contour(xx, yy, log_p, levels=levels, colors="0.5", linestyles="--", linewidths=0.8)
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
