"""Mass-covering refinement of a fitted mixture: population Monte Carlo on the forward KL.

The variational steps minimise the reverse KL(q || p), which is mode-seeking: where p has a funnel
(a hierarchical scale against the parameters it scales, as in a horseshoe regression) the fit puts too
little mass in the neck, and more components or richer component shapes do not change that
(docs/benchmarks.md, "The family's limit on the horseshoe"). The refinement keeps the family, the
shared metric A and the number of components, and moves the means, the scales (and learned weights)
towards the minimiser of the forward KL(p || q), which covers p's mass, by EM on importance-weighted
draws from q itself (population Monte Carlo, Cappé, Douc, Guillin, Marin, Robert, "Adaptive importance
sampling in general mixture classes", Statistics and Computing 18, 2008, arXiv:0710.4242). One
iteration, with S draws z_s ~ q::

    log w_s = log p(z_s) - log q(z_s),  truncated at log mean(w) + (1/2) log S, normalised
              (truncated importance sampling, Ionides, J. Comput. Graph. Statist. 17, 2008)
    r_is    = responsibility of component i for z_s (under q)
    n_i     = sum_s w_s r_is
    m_i'    = sum_s w_s r_is z_s / n_i
    eps_i'  = sum_s w_s r_is |A^(-1/2) (z_s - m_i')|^2 / (d n_i)
    w_i'    = n_i                                            (learned weights only)

and the damped step m_i <- (1 - lam) m_i + lam m_i' (eps_i and w_i likewise). A component whose
weighted count n_i is below ``MIN_SHARE`` / N (no draw of the population speaks for it) keeps its
values, and an iteration whose weights have an effective sample size below ``MIN_ESS`` moves nothing
(a few draws would drag the components onto themselves). Draws where log p is not finite get weight zero; if none is finite the iteration changes
nothing. Each iteration is pure and the loop is one ``lax.scan``: same key, same result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from mixvi.diagnostics._draws import check_key, model_param_values, potential, resolve
from mixvi.family import IsotropicMixture, squared_distances
from mixvi.guide import AutoIsotropicMixture
from mixvi.loop import call_compiled, new_cache

__all__ = ["MIN_ESS", "MIN_SHARE", "RefineInfo", "RefineResult", "refine", "refine_mixture", "refine_step"]

#: a component keeps its values when its weighted share of the population is below MIN_SHARE / N
MIN_SHARE = 1e-3
#: an iteration whose weights have a smaller effective sample size moves nothing (they speak for a few draws)
MIN_ESS = 20
#: draws per component and iteration of :func:`refine`'s default
DRAWS_PER_COMPONENT = 1000
#: ... at most this many draw coordinates (S d) per iteration, so that a large d keeps S x d arrays small
DRAW_ELEMENTS = 2**26
#: ... and at least this many draws
MIN_DRAWS = 2000
# draws whose log p is evaluated at once (bounds the memory of a large model's batch)
BLOCK = 4096

# refine's compiled programs, per guide and settings
_COMPILED = new_cache()

BAD_DAMPING = "damping must be a number in (0, 1], got {!r}"
BAD_COUNT = "{} must be an integer >= 1, got {!r}"
NOT_A_MIXTURE = "refine takes an AutoIsotropicMixture (the guide of a MixVI or SVI fit), got {}"


class RefineInfo(NamedTuple):
    """Diagnostics of one refinement iteration (stacked over iterations by :func:`refine_mixture`).

    Attributes
    ----------
    ess : jax.Array
        Effective sample size 1 / sum(w^2) of the truncated, normalised weights of q's draws.
    num_finite : jax.Array
        Number of draws where log p was finite.
    num_updated : jax.Array
        Number of components whose values moved (weighted share >= MIN_SHARE / N).
    """

    ess: jax.Array
    num_finite: jax.Array
    num_updated: jax.Array


def default_draws(guide: AutoIsotropicMixture, params: dict) -> int:
    """Draws per iteration: ``DRAWS_PER_COMPONENT`` N, at most ``DRAW_ELEMENTS`` / d (but ``MIN_DRAWS``)."""
    locs = params.get(f"{guide.prefix}_locs")
    n, d = np.shape(locs) if locs is not None and np.ndim(locs) == 2 else (1, 1)
    return int(min(DRAWS_PER_COMPONENT * n, max(MIN_DRAWS, DRAW_ELEMENTS // max(d, 1))))


def in_blocks(fn: Callable[[jax.Array], jax.Array], z: jax.Array, block: int) -> jax.Array:
    """``vmap(fn)(z)`` over rows, evaluated in equal blocks of at most ``block`` rows (``z`` padded with
    its first rows to a whole number of blocks, so one compiled body serves them all)."""
    num = z.shape[0]
    blocks = -(-num // block)
    size = -(-num // blocks)
    padded = jnp.concatenate([z, z[: blocks * size - num]]) if blocks * size > num else z
    out = jax.lax.map(jax.vmap(fn), padded.reshape(blocks, size, *z.shape[1:]))
    return out.reshape(blocks * size)[:num]


def _check_counts(num_iterations: object, num_draws: object, damping: object) -> None:
    for name, value in (("num_iterations", num_iterations), ("num_draws", num_draws)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(BAD_COUNT.format(name, value))
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not 0 < damping <= 1:
        raise ValueError(BAD_DAMPING.format(damping))


def truncated_log_weights(log_w: jax.Array) -> jax.Array:
    """Normalised log weights truncated at mean(w) sqrt(S) (Ionides 2008); -inf where ``log_w`` is not finite."""
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    num = log_w.shape[0]
    cap = logsumexp(log_w) - jnp.log(num) + 0.5 * jnp.log(num)
    log_w = jnp.minimum(log_w, cap)
    return log_w - logsumexp(log_w)


def refine_step(
    rng_key: jax.Array,
    q: IsotropicMixture,
    log_density_fn: Callable[[jax.Array], jax.Array],
    num_draws: int,
    damping: float = 0.5,
    learn_weights: bool = False,
) -> tuple[IsotropicMixture, RefineInfo]:
    """One population Monte Carlo iteration towards argmin_q KL(p || q) (module docstring).

    Parameters
    ----------
    rng_key : jax.Array
        Key of the draws from q.
    q : IsotropicMixture
        The current mixture; its metric (diagonal, dense or low-rank) is kept.
    log_density_fn : callable
        log p up to a constant on a batch of points, (S, d) -> (S,).
    num_draws : int
        Draws S from q.
    damping : float, default 0.5
        Step lam towards the EM update, in (0, 1].
    learn_weights : bool, default False
        Move the weights too (else they are kept, uniform ones included).

    Returns
    -------
    (IsotropicMixture, RefineInfo)
        The moved mixture and the iteration's diagnostics.
    """
    z = q.sample(rng_key, (num_draws,))
    logits = q._logits(z)  # (S, N): log q and the responsibilities from one evaluation
    log_w = truncated_log_weights(log_density_fn(z) - logsumexp(logits, axis=-1))
    w = jnp.exp(log_w)
    w = jnp.where(jnp.isfinite(w), w, 0.0)  # every draw -inf: logsumexp NaN
    joint = w[:, None] * jax.nn.softmax(logits, axis=-1)  # (S, N)
    share = jnp.sum(joint, 0)
    n_comp, dim = q.locs.shape
    ess = 1.0 / jnp.sum(w**2)
    moves = (share >= MIN_SHARE / n_comp) & (ess >= MIN_ESS)
    safe = jnp.where(moves, share, 1.0)
    new_locs = (joint.T @ z) / safe[:, None]
    sq = squared_distances(z, new_locs, q.metric, q.scale_tril)  # (S, N)
    new_eps = jnp.sum(joint * sq, 0) / (dim * safe)
    eps = q.scales**2
    locs = jnp.where(moves[:, None], (1 - damping) * q.locs + damping * new_locs, q.locs)
    eps = jnp.where(moves & (new_eps > 0), (1 - damping) * eps + damping * new_eps, eps)
    weights = q.weights
    if learn_weights:
        old = q.component_weights
        weights = jnp.where(moves, (1 - damping) * old + damping * share, old)
        weights = weights / jnp.sum(weights)
    out = IsotropicMixture(locs, jnp.sqrt(eps), weights, q.metric, q.scale_tril)
    info = RefineInfo(ess, jnp.sum(jnp.isfinite(log_w)), jnp.sum(moves))
    return out, info


def refine_mixture(
    rng_key: jax.Array,
    q: IsotropicMixture,
    log_density_fn: Callable[[jax.Array], jax.Array],
    num_iterations: int = 10,
    num_draws: int = 20000,
    damping: float = 0.5,
    learn_weights: bool = False,
) -> tuple[IsotropicMixture, RefineInfo]:
    """``num_iterations`` iterations of :func:`refine_step` as one ``lax.scan`` (jit it for speed).

    Parameters
    ----------
    rng_key : jax.Array
        Key of the whole refinement (one subkey per iteration).
    q, log_density_fn, num_draws, damping, learn_weights
        As in :func:`refine_step`.
    num_iterations : int, default 10
        Iterations.

    Returns
    -------
    (IsotropicMixture, RefineInfo)
        The refined mixture and the per-iteration diagnostics (leading axis ``num_iterations``).

    Raises
    ------
    ValueError
        On a count below 1 or a damping outside (0, 1].
    """
    _check_counts(num_iterations, num_draws, damping)

    if learn_weights and q.weights is None:  # the scan's carry keeps one structure
        q = IsotropicMixture(q.locs, q.scales, q.component_weights, q.metric, q.scale_tril)

    def body(current: IsotropicMixture, key: jax.Array) -> tuple[IsotropicMixture, RefineInfo]:
        return refine_step(key, current, log_density_fn, num_draws, damping, learn_weights)

    return jax.lax.scan(body, q, jax.random.split(rng_key, num_iterations))


class RefineResult(NamedTuple):
    """What :func:`refine` returns.

    Attributes
    ----------
    params : dict
        The guide's constrained params with the refined ``{prefix}_locs``, ``{prefix}_scales`` (and
        ``{prefix}_weight_logits`` when the guide learns weights); every other entry as given.
    info : RefineInfo
        Per-iteration diagnostics (leading axis ``num_iterations``).
    """

    params: dict
    info: RefineInfo


def refine(
    guide,
    params: dict,
    *model_args,
    rng_key: jax.Array,
    num_iterations: int = 10,
    num_draws: int | None = None,
    damping: float = 0.5,
    **model_kwargs,
) -> RefineResult:
    """Refine a fitted ``AutoIsotropicMixture`` towards the forward KL(p || q) (module docstring).

    The reverse-KL fit of ``MixVI.run`` is the start; the refinement keeps the guide's metric, its
    number of components and its weight mode (uniform weights stay uniform; learned ones move), so the
    result works wherever the fit's params do (``sample_posterior``, ``Predictive``, the diagnostics).
    It helps where the reverse KL under-covers p (funnels, heavy tails) and q is already close enough
    for importance weights to carry information; check the result with :func:`mixvi.fit_check`.

    Parameters
    ----------
    guide : AutoIsotropicMixture
        The set-up guide of the fit.
    params : dict
        Its constrained params (e.g. ``MixVI.run(...).params``).
    *model_args, **model_kwargs
        The model's arguments (data); subsampled plates are evaluated on all their data.
    rng_key : jax.Array
        Key of the refinement; same key, same result.
    num_iterations : int, default 10
        Population Monte Carlo iterations.
    num_draws : int, optional
        Draws from q per iteration (default 1000 per component, at most 2^26 / d but at least 2000).
    damping : float, default 0.5
        Step towards each iteration's EM update, in (0, 1].

    Returns
    -------
    RefineResult
        The refined params and the per-iteration diagnostics.

    Raises
    ------
    TypeError
        If ``guide`` is not an ``AutoIsotropicMixture`` or ``rng_key`` is not a JAX key.
    ValueError
        On a count below 1, a damping outside (0, 1], or params that do not fit the guide.
    """
    if not isinstance(guide, AutoIsotropicMixture):
        raise TypeError(NOT_A_MIXTURE.format(type(guide).__name__))
    rng_key = check_key(rng_key)
    num_draws = default_draws(guide, params) if num_draws is None else num_draws
    _check_counts(num_iterations, num_draws, damping)
    fit = resolve(guide, params, model_args, model_kwargs)
    prefix = guide.prefix
    learn_weights = f"{prefix}_weight_logits" in params
    mixture_params = {k: params[k] for k in guide.param_names()}

    def run(args: tuple, kwargs: dict, mixture_params: dict, key: jax.Array) -> tuple[dict, RefineInfo]:
        # q is built inside the program: built eagerly, NumPyro's argument checks run as a handful of
        # small programs of their own, each compiled on a first call
        q = guide.get_posterior(mixture_params)
        pot = potential(fit, params, args, kwargs)
        k_model, k_refine = jax.random.split(key)

        def log_density(z: jax.Array) -> jax.Array:
            return -in_blocks(lambda x: pot(x, k_model), z, BLOCK)

        out, info = refine_mixture(k_refine, q, log_density, num_iterations, num_draws, damping, learn_weights)
        new = {f"{prefix}_locs": out.locs, f"{prefix}_scales": out.scales}
        if learn_weights:
            new[f"{prefix}_weight_logits"] = jnp.log(out.weights)
        return new, info

    # compiled once per model structure, guide options and settings, so a new guide of the same model reuses
    # it (the data and q's params are operands; the prefix is in the key because the program returns params
    # under their names); a model with params of its own has them as constants: compiled anew
    settings = (guide._program_key(), guide.prefix, num_iterations, num_draws, float(damping), learn_weights)
    key = None if model_param_values(guide, params) else settings
    refined, info = call_compiled(_COMPILED, key, run, (mixture_params, rng_key), model_args, model_kwargs)
    return RefineResult({**params, **refined}, info)
