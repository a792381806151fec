"""Mixture VI as a functional algorithm over any log-density and any pytree.

The variational family is q = sum_i w_i N(m_i, sigma_i^2 A) on the flattened position, with one
metric A shared by the components (the paper: w_i = 1/N and A = I; mixvi's extensions: a learned
diagonal A = D or dense A = L L^T, learned weights), trained by the updates of "Variational Inference
with Mixtures of Isotropic Gaussians" (Petit-Talamon, Lambert, Korba, NeurIPS 2025, arXiv 2506.13613).
With ``relocate=True`` (the default) a component that carries no posterior mass restarts on the best
one (:mod:`mixvi.adapt`); ``relocate=False`` with ``metric='isotropic'`` is the paper's method exactly.
One step::

    key -> noise z (B, d) (shared by the components, or (N, B, d))
        -> points x_ib = m_i + sigma_i A^(1/2) z_b
        -> V = -log p and grad V at the N B points (vmapped, optionally chunked / sharded)
        -> Stein-form estimates gbar_i, lambda_i (and t, f_i) (:mod:`mixvi.estimators`); with ``tilt`` > 0
           (the second half of ``MixVI.run``) averages over draws weighted towards where q under-covers
           p (:func:`mixvi.estimators.tilt_weights`)
        -> the geometry step on (m, log sigma, metric, logits) (:mod:`mixvi.geometry`)
        -> relocation of massless components (:mod:`mixvi.adapt`)
        -> new state, and an info with the loss (the -ELBO estimate up to log Z), the step size,
           the clipped component steps and whether the step was rejected.

Examples
--------
>>> algo = mixture_vi(logdensity_fn, n_components=10)
>>> state = algo.init(jax.random.key(0), position)
>>> state, info = jax.jit(algo.step)(jax.random.key(1), state)
>>> draws = algo.sample(jax.random.key(2), state, 1000)

This module depends on JAX (and NumPy, for host-side values) only; the NumPyro layer (:class:`mixvi.MixVI`) is
built on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mixvi import draws
from mixvi.adapt import (
    RelocationState,
    balance,
    basin_structure,
    init_relocation,
    metric_shares,
    noise_rows,
    relocate,
    relocation_gap,
    several_basins,
    track,
)
from mixvi.estimators import (
    SteinEstimate,
    balance_heuristic,
    draw_points,
    potential_and_grad,
    potential_values,
    stein_estimate,
    step_noise,
    whiten,
    widened_log_ratios,
)
from mixvi.geometry import (
    AutoStep,
    MixtureGradient,
    MixtureParams,
    StepSizeState,
    check_settings,
    init_step_size,
    metric_of,
)
from mixvi.geometry import update as geometry_update
from mixvi.loop import traced, tree_all_finite
from mixvi.lowrank import SHARED_NOISE_NEEDED, init_lowrank, root_apply
from mixvi.scout import SCOUT_CANDIDATES, descend, init_candidates, scout, set_ceiling
from mixvi.stein_moment import SteinSums, add_draws, covariance_form, init_sums, stein_moment_divergence

METRICS = ("isotropic", "diagonal", "dense", "lowrank", "auto")
# a dense metric keeps L (d, d) and costs O(d^3) per step: past this dimension it is refused
DENSE_MAX_DIM = 4096
# metric="auto" is dense up to this dimension and low-rank beyond (diagonal with independent noise): on a
# d = 200 logistic regression the dense metric's answer is within 0.07 NUTS sds where the low-rank one is
# 1.0 off (2x the wall time); its O(d^3) step costs 4 ms at d = 256, 15 ms at 512 and 57 ms at 1000,
# against 0.6-0.9 ms low-rank (docs/benchmarks.md)
AUTO_DENSE_MAX_DIM = 256
WEIGHTS = ("uniform", "fisher-rao")
STEIN_STEPS = 50
"""Steps before a run's end on which a step computes the Stein moment divergence of its q
(:func:`final_stein_moment`): over the pairs of all their draws up to ``POOLED_STEIN_MAX_DIM``
(50 B independent noise rows), else ``MixVI.run`` averages the steps' own estimates."""
# the pooled estimate keeps a (d, d) sum in the state and adds an O(N B d^2) product on those steps: at
# d = 512, 1 MiB and ~0.5 s over fifty steps of N B = 200 draws; beyond, each step's own estimate
POOLED_STEIN_MAX_DIM = 512
# N by default: on every model of the quality suite (d = 2..100) 20 components were as close to the
# reference as 10 or closer (banana KL 0.22 -> 0.12, baseball 0.42 -> 0.36, gp_pois_regr 0.17 -> 0.12 sds);
# a step costs up to twice as much, which shows in the time to a good ELBO only on data-heavier models,
# where 10 is the faster setting (docs/benchmarks.md, "Number of components"): the NumPyro guide's
# n_components='auto' picks by the model's cost (mixvi.potential_cost)
DEFAULT_COMPONENTS = 20
BAD_COMPONENTS = "n_components must be an integer >= 1, got {!r}"
BAD_NUM_SAMPLES = "num_samples must be an integer >= 1, got {!r}"
BAD_INIT_SCALE = "init_scale must be a positive float, got {!r}"
BAD_METRIC = "metric must be 'auto', 'isotropic', 'diagonal', 'dense' or 'lowrank', got {!r}"
DENSE_TOO_BIG = (
    "metric='dense' at d={} would keep a {}x{} factor and cost O(d^3) per step (limit d <= {}); "
    "use metric='lowrank' (memory O(d r)) or 'diagonal' for a latent this large"
)
# the rank of metric='lowrank' when none is given (capped at d - 1)
DEFAULT_RANK = 10
BAD_RANK_TYPE = "metric_rank must be None or an integer >= 1, got {!r}"
BAD_RANK = "metric_rank={} must be below the latent dimension d={} (at rank d use metric='dense')"
LOWRANK_ONE_DIM = "metric='lowrank' needs a latent of dimension >= 2, got d=1; use metric='diagonal'"
BAD_WEIGHTS = "weights must be 'uniform' or 'fisher-rao', got {!r}"
BAD_LOSS_DRAWS = "loss_draws must be None or an integer in [1, num_samples={}], got {!r}"
BAD_BATCH = "sample_batch_size must be a positive integer or None, got {!r}"
BAD_TILT = "tilt must be a finite float >= 0 (0: the paper's KL(q || p) steps), got {!r}"
BAD_MESH_AXES = "mixture VI shards components along one mesh axis, got axes {}"
BAD_MESH_SIZE = "n_components={} is not divisible by the mesh size {}"
BAD_LOCS = "locs must have shape (n_components, d) = {}, got {}"


def resolve_metric(metric: str, dim: int, shared_noise: bool = True) -> str:
    """The metric a setting means at latent dimension ``dim``: 'auto' is 'dense' up to
    ``AUTO_DENSE_MAX_DIM`` and 'lowrank' beyond ('diagonal' without shared noise, which the low-rank
    step needs); the others are themselves."""
    if metric not in METRICS:
        raise ValueError(BAD_METRIC.format(metric))
    if metric != "auto":
        return metric
    if dim <= AUTO_DENSE_MAX_DIM:
        return "dense"
    return "lowrank" if shared_noise else "diagonal"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_rank(rank: int | None) -> None:
    """Raise if ``metric_rank`` is neither None nor a positive integer."""
    if rank is not None and not _is_count(rank):
        raise ValueError(BAD_RANK_TYPE.format(rank))


def resolve_rank(rank: int | None, dim: int) -> int:
    """The rank of a low-rank metric at dimension ``dim``: ``rank``, or ``min(DEFAULT_RANK, dim - 1)``."""
    check_rank(rank)
    if dim < 2:
        raise ValueError(LOWRANK_ONE_DIM)
    if rank is None:
        return min(DEFAULT_RANK, dim - 1)
    if rank >= dim:
        raise ValueError(BAD_RANK.format(rank, dim))
    return rank


class MixtureVIState(NamedTuple):
    """State of mixture VI.

    Attributes
    ----------
    params : MixtureParams
        ``locs`` (a pytree like the position, every leaf with a leading axis of N components),
        ``log_scales`` (N,), ``log_metric`` (d,) over the flattened position or None, ``logits`` (N,)
        or None, ``metric_tril`` (d, d) or None, ``metric_lowrank`` (a
        :class:`~mixvi.lowrank.LowRankMetric`) or None.
    step_size : StepSizeState
        The step size's state (:mod:`mixvi.geometry`).
    relocation : RelocationState or None
        Running per-component losses for relocating massless components (:mod:`mixvi.adapt`);
        None when relocation is off or the weights are learned.
    stein : SteinSums or None
        The sums of the run's last steps' draws from which their Stein moment divergence follows
        (:mod:`mixvi.stein_moment`); None without relocation or past ``POOLED_STEIN_MAX_DIM``.
    """

    params: MixtureParams
    step_size: StepSizeState
    relocation: RelocationState | None = None
    stein: SteinSums | None = None


class MixtureVIInfo(NamedTuple):
    """Diagnostics of one step.

    Attributes
    ----------
    loss : jax.Array
        The -ELBO estimate at the params before the step (up to the target's log normaliser).
    step_size : jax.Array
        The step used: eta under 'auto' (component i moved with eta sigma_i^2), else gamma.
    num_clipped : jax.Array
        Components whose step hit a validity guard or the trust region.
    rejected : jax.Array
        True when the step was rejected (non-finite estimates); the params did not change.
    num_relocated : jax.Array
        Components moved by :mod:`mixvi.adapt` (restarted because they carried no mass, split onto
        an under-served one, or sent scouting).
    log_weights : jax.Array
        log p - log q at the draws that have V's value, (N, L): the importance log weights of this
        step's q (``MixVI.run`` takes the k-hat of its last steps' weights as a cheap fit check).
    stein_divergence : jax.Array or None
        The Stein moment divergence M of this step's q from its N B draws (:mod:`mixvi.stein_moment`),
        computed on the last :data:`STEIN_STEPS` steps before the run's end (NaN on the others); None
        without a known end (relocation off) or with learned weights.
    """

    loss: jax.Array
    step_size: jax.Array
    num_clipped: jax.Array
    rejected: jax.Array
    num_relocated: jax.Array
    log_weights: jax.Array | None = None
    stein_divergence: jax.Array | None = None


class MixtureVI(NamedTuple):
    """The algorithm: ``init(rng_key, position)``, ``step(rng_key, state)``, ``sample(rng_key, state, n)``."""

    init: Callable
    step: Callable
    sample: Callable


class Settings(NamedTuple):
    """Every setting of a step (hashable, so a compiled step can be cached on it)."""

    method: str = "ibw"
    step_size: float | str = "auto"
    num_samples: int = 10
    shared_noise: bool = True
    auto: AutoStep = AutoStep()
    loss_draws: int | None = 1
    sample_batch_size: int | None = None
    mesh: Mesh | None = None
    min_factor: float = 0.1
    metric_step_size: float = 0.1
    relocate: bool = True
    relocate_gap: float | None = None
    balance: bool = True
    explore: bool = True
    tilt: float = 0.0
    final_phase: float = 0.0
    # the importance masses of mass balancing also from draws this much wider (1: the own draws alone)
    mass_widen: float = 1.5


BAD_SETTINGS_MASS_WIDEN = "Settings.mass_widen must be a finite float >= 1 (1: the step's own draws), got {!r}"


BAD_SETTINGS_FINAL_PHASE = "Settings.final_phase must be a float in [0, 1) (0: no final phase), got {!r}"


def is_tilt(value: Any) -> bool:
    """Whether ``value`` is a valid tilt exponent: a finite real >= 0 (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0.0 <= value < float("inf")


def check(settings: Settings) -> Settings:
    """Validate ``settings`` and return them with ``loss_draws`` normalised (None = all draws).

    Raises
    ------
    ValueError
        Naming the bad setting and its allowed values.
    """
    check_settings(settings.method, settings.step_size, settings.auto)
    if not _is_count(settings.num_samples):
        raise ValueError(BAD_NUM_SAMPLES.format(settings.num_samples))
    b = settings.num_samples
    if settings.loss_draws is not None and not (_is_count(settings.loss_draws) and settings.loss_draws <= b):
        raise ValueError(BAD_LOSS_DRAWS.format(b, settings.loss_draws))
    if settings.sample_batch_size is not None and not _is_count(settings.sample_batch_size):
        raise ValueError(BAD_BATCH.format(settings.sample_batch_size))
    if settings.mesh is not None and len(settings.mesh.axis_names) != 1:
        raise ValueError(BAD_MESH_AXES.format(settings.mesh.axis_names))
    if not is_tilt(settings.tilt):
        raise ValueError(BAD_TILT.format(settings.tilt))
    if isinstance(settings.final_phase, bool) or not 0.0 <= settings.final_phase < 1.0:
        raise ValueError(BAD_SETTINGS_FINAL_PHASE.format(settings.final_phase))
    widen = settings.mass_widen
    if isinstance(widen, bool) or not isinstance(widen, int | float) or not 1.0 <= widen < float("inf"):
        raise ValueError(BAD_SETTINGS_MASS_WIDEN.format(widen))
    return settings._replace(loss_draws=None if settings.loss_draws == b else settings.loss_draws)


def flatten_locs(locs: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """The component means as an (N, d) array, and the map from (..., d) rows back to the pytree."""
    leaves = jax.tree.leaves(locs)
    if not leaves:
        raise ValueError("the position has no array leaves")
    if len(leaves) == 1 and not isinstance(locs, dict | list | tuple) and jnp.ndim(locs) == 2:
        return locs, lambda rows: rows  # the common case: already flat
    one = jax.tree.map(lambda leaf: leaf[0], locs)
    _, unravel = ravel_pytree(one)
    flat = jax.vmap(lambda tree: ravel_pytree(tree)[0])(locs)

    def unflatten(rows: jax.Array) -> Any:
        batch = rows.shape[:-1]
        out = jax.vmap(unravel)(rows.reshape(-1, rows.shape[-1]))
        return jax.tree.map(lambda leaf: leaf.reshape(batch + leaf.shape[1:]), out)

    return flat, unflatten


def init_state(
    locs: Any,
    scales: jax.Array | float = 1.0,
    *,
    metric: str = "isotropic",
    weights: str = "uniform",
    step_size: float | str = "auto",
    auto: AutoStep = AutoStep(),
    mesh: Mesh | None = None,
    relocate: bool = True,
    metric_rank: int | None = None,
) -> MixtureVIState:
    """The state whose components have the given means and standard deviations.

    Parameters
    ----------
    locs : pytree
        Component means, every leaf with a leading axis of N components.
    scales : jax.Array or float
        sigma_i, shape (N,) or a scalar for all.
    metric : str
        'isotropic' (the paper), 'diagonal' (a learned shared diagonal D), 'dense' (a learned
        shared covariance L L^T), 'lowrank' (a learned low-rank-plus-diagonal metric,
        :mod:`mixvi.lowrank`; all three start at the identity) or 'auto' (dense up to d = 256,
        low-rank beyond).
    weights : str
        'uniform' (the paper) or 'fisher-rao' (learned weights, starting uniform).
    step_size, auto
        The step size (its state starts at eta0 under 'auto').
    mesh : jax.sharding.Mesh, optional
        Place the components along the mesh's one axis.
    relocate : bool
        Keep the running losses that relocation needs (ignored with learned weights).
    metric_rank : int, optional
        The rank r of metric='lowrank' (below d; default ``min(DEFAULT_RANK, d - 1)``); ignored otherwise.
    """
    if weights not in WEIGHTS:
        raise ValueError(BAD_WEIGHTS.format(weights))
    flat, _ = flatten_locs(locs)
    n, d = flat.shape
    metric = resolve_metric(metric, d)
    dtype = flat.dtype
    log_scales = jnp.log(jnp.broadcast_to(jnp.asarray(scales, dtype), (n,)))
    if metric == "dense" and d > DENSE_MAX_DIM:
        raise ValueError(DENSE_TOO_BIG.format(d, d, d, DENSE_MAX_DIM))
    log_metric = jnp.zeros((d,), dtype) if metric == "diagonal" else None
    logits = jnp.full((n,), -jnp.log(n), dtype) if weights == "fisher-rao" else None
    tril = jnp.eye(d, dtype=dtype) if metric == "dense" else None
    check_rank(metric_rank)
    lowrank = init_lowrank(d, resolve_rank(metric_rank, d), dtype) if metric == "lowrank" else None
    params = MixtureParams(locs, log_scales, log_metric, logits, tril, lowrank)
    if mesh is not None:
        if n % mesh.size:
            raise ValueError(BAD_MESH_SIZE.format(n, mesh.size))
        axis = mesh.axis_names[0]
        params = MixtureParams(
            jax.tree.map(lambda leaf: jax.device_put(leaf, NamedSharding(mesh, P(axis))), locs),
            jax.device_put(log_scales, NamedSharding(mesh, P(axis))),
            None if log_metric is None else jax.device_put(log_metric, NamedSharding(mesh, P())),
            None if logits is None else jax.device_put(logits, NamedSharding(mesh, P())),
            None if tril is None else jax.device_put(tril, NamedSharding(mesh, P())),
            None if lowrank is None else jax.device_put(lowrank, NamedSharding(mesh, P())),
        )
    tracking = init_candidates(init_relocation(n, dtype, flat)) if relocate and weights == "uniform" else None
    sums = init_sums(d, dtype) if tracking is not None and d <= POOLED_STEIN_MAX_DIM else None
    return MixtureVIState(params, init_step_size(step_size, auto, dtype), tracking, sums)


def _shard(mesh: Mesh | None, x: jax.Array) -> jax.Array:
    """Place x's leading (component) axis along the mesh; identity without one."""
    if mesh is None:
        return x
    spec = P(mesh.axis_names[0], *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def step(
    rng_key: jax.Array,
    state: MixtureVIState,
    potential_fn: Callable[[jax.Array, jax.Array], jax.Array],
    settings: Settings = Settings(),
    noise: tuple[jax.Array, jax.Array, jax.Array] | None = None,
) -> tuple[MixtureVIState, MixtureVIInfo]:
    """One step of mixture VI (see the module docstring).

    Parameters
    ----------
    rng_key : jax.Array
        Key of this step: one call of the generator on it gives the noise z, the key passed to
        ``potential_fn`` and the key of the components' moves (:func:`mixvi.estimators.step_noise`).
    state : MixtureVIState
        The current state.
    potential_fn : callable
        ``V(x, key)`` = -log target at a flattened position x (d,); ``key`` seeds any randomness of
        the target (e.g. a data subsample) and may be ignored.
    settings : Settings
        The method, step size, draws per component and the rest (validated by :func:`check`).
    noise : tuple, optional
        (z, target key, moves key) as ``step_noise(rng_key, ...)`` gives them, drawn by the caller
        (``MixVI`` draws its next key in the same call).

    Returns
    -------
    tuple
        The new state and a :class:`MixtureVIInfo`.
    """
    params = state.params
    locs, unflatten = flatten_locs(params.locs)
    u = params.log_scales
    metric = metric_of(params)
    weights = None if params.logits is None else jax.nn.softmax(params.logits)
    n, d = locs.shape
    mesh = settings.mesh
    if noise is None:  # the noise, the target's key and the moves' key from one call of the generator
        z, (k_model, k_moves) = step_noise(
            rng_key, n, settings.num_samples, d, shared=settings.shared_noise, dtype=locs.dtype
        )
    else:
        z, k_model, k_moves = noise
    # one materialised draw: stops XLA from regenerating z inside every consumer it fuses into
    z = jax.lax.optimization_barrier(z)
    tril = params.metric_tril
    x = _shard(mesh, draw_points(locs, u, z, metric, tril))
    batch = settings.sample_batch_size
    tracking = state.relocation
    tilt = tilt_now(settings.tilt, tracking)
    cut = value_draws(settings, weights is not None, tilt)
    read = None
    # the scouts' candidates (mixvi.scout.descend) get V and its gradient in the same batch as the draws
    relocating = settings.relocate and tracking is not None
    exploring = relocating and settings.explore and tracking.candidates is not None
    trials = tracking.candidates.trial if exploring else None
    if cut is None:
        v, gv, at_trials = _with_trials(potential_fn, x, trials, k_model, batch, mesh)
        gv = _shard(mesh, gv)
    else:
        # V's value only where the loss (or the tilt, once on) needs it. Without a tilt: V alone at the first
        # `cut` draws of every component, grad V at all of them in one batch. On the tilt's schedule:
        # value_and_grad on the first `cut` draws, the gradient alone on the rest until the tilt starts
        if tilt is None:
            v, gv, at_trials = _values_at_head(potential_fn, x, cut, trials, k_model, batch, mesh)
            gv = _shard(mesh, gv)
        else:
            v, g_head, at_trials = _with_trials(potential_fn, x[:, :cut], trials, k_model, batch, mesh)
            v_tail, g_tail = jax.lax.cond(
                tilt > 0,
                lambda rest: potential_and_grad(potential_fn, rest, k_model, batch_size=batch),
                lambda rest: _gradients_only(potential_fn, rest, k_model, batch),
                x[:, cut:],
            )
            v = jnp.concatenate([v, v_tail], axis=1)
            read = draws_read(tilt, cut, v.shape[1])
            gv = (_shard(mesh, g_head), _shard(mesh, g_tail))
    # learned weights have no relocation; their step needs the quarantine all the same, or one component
    # whose draws reach where V or grad V is not finite rejects every component's step
    quarantine = relocating or weights is not None
    # the shared metric is learned from the components near q's mass (not from scouts still travelling)
    gap = relocation_gap(d, settings.relocate_gap)
    metric_weights = None
    if relocating and (metric is not None or tril is not None):
        metric_weights = metric_shares(tracking, gap)

    est = stein_estimate(
        locs,
        u,
        z,
        _shard(mesh, v),
        gv,
        weights=weights,
        metric=metric,
        coord=metric is not None,
        scale_tril=tril,
        quarantine=quarantine,
        metric_weights=metric_weights,
        tilt=tilt,
        loss_draws=read,
    )
    bad = est.bad
    if weights is not None:
        est = hold_bad_components(est, weights)
    grad = MixtureGradient(
        est.gbar,
        est.lam,
        est.t,
        None if weights is None else est.f - jnp.sum(weights * est.f),
    )
    new, step_state, info = geometry_update(
        params._replace(locs=locs),
        grad,
        state.step_size,
        method=settings.method,
        step_size=settings.step_size,
        auto=settings.auto,
        loss=est.loss,
        min_factor=settings.min_factor,
        metric_step_size=settings.metric_step_size,
        eta_cap=final_eta_cap(settings, tracking),
    )
    moved = jnp.zeros((), jnp.int32)
    # log p - log q at the draws that have V's value: the importance masses of mass balancing, and info
    log_ratios = -(est.log_q[:, : v.shape[1]] + v)
    if quarantine:
        log_ratios = jnp.where(bad[:, None], -jnp.inf, log_ratios)
    mass_ratios = log_ratios
    structure = None
    if relocating and settings.balance and settings.mass_widen > 1.0:
        # the importance masses from draws of the widened components (lighter tails), as many as have V;
        # only while the masses can decide a move between basins (settled components in more than one
        # basin, before the quiet phase); otherwise the step's own ratios serve and V costs nothing more
        width = z.shape[-2] if cut is None else cut
        # the basins of the components the masses are estimated with: balancing decides by them too
        structure = basin_structure(locs, u, metric, tril)
        mass_ratios = jax.lax.cond(
            several_basins(locs, u, tracking, metric=metric, scale_tril=tril, same=structure[1]),
            lambda: _widened_mass_ratios(
                potential_fn, locs, u, weights, z, tril, metric, k_model, settings, log_ratios[:, :width]
            ),
            # the widened draws' columns marked as not evaluated (NaN)
            lambda: jnp.pad(log_ratios[:, :width], ((0, 0), (0, width)), constant_values=jnp.nan),
        )
        if quarantine:
            mass_ratios = jnp.where(bad[:, None], -jnp.inf, mass_ratios)
    if relocating:
        tracking = track(tracking, est.f, ~info.rejected, mass_ratios if settings.balance else None, gap)
        tracking = set_ceiling(tracking, jnp.where(bad[:, None], jnp.nan, v))
        # the moves' key is drawn with the noise and the target's key, so those stay as without relocation
        shape = {"metric": metric_of(new), "scale_tril": new.metric_tril}
        # restarts at rows of this step's noise (no generator of their own in the compiled step: each costs
        # ~0.2 s of compilation): rows 0..N-1 for relocation, N for a split, the rest for scout candidates;
        # keys of their own only where the noise has too few distinct rows
        rows = noise_rows(z, n + 1 + SCOUT_CANDIDATES)
        if rows is None:
            keys, parts = list(jax.random.split(k_moves, 3)), (None, None, None)
        else:
            keys, parts = (None, None, None), (rows[:n], rows[n], rows[n + 1 :])
        # the moves' new locs are materialised between stages: without the barriers XLA fused the geometry
        # step's per-component factors and every stage's selects into one elementwise loop over (N, d),
        # recomputed per element and duplicated into two consumers (two such loops of 0.47 ms each in a
        # 6.5-7.1 ms step at d = 1000, N = 20; the step took 5.4-5.6 ms with the barriers)
        new_locs, new_u = jax.lax.optimization_barrier((new.locs, new.log_scales))
        new_locs, new_u, tracking, moved = relocate(
            keys[0],
            new_locs,
            new_u,
            tracking,
            gap=settings.relocate_gap,
            force=bad,
            noise=parts[0],
            **shape,
        )
        new_locs, new_u = jax.lax.optimization_barrier((new_locs, new_u))
        if settings.balance:
            new_locs, new_u, tracking, split = balance(
                keys[1], new_locs, new_u, tracking, noise=parts[1], structure=structure, **shape
            )
            moved = moved + split
            new_locs, new_u = jax.lax.optimization_barrier((new_locs, new_u))
        if exploring:
            # the candidates descend only while scouts may leave (no work in the run's second half)
            sigma = jnp.exp(jnp.median(new_u))
            candidates = jax.lax.cond(
                tracking.steps <= tracking.scout_until,
                lambda c: descend(c, *at_trials, sigma, **shape),
                lambda c: c,
                tracking.candidates,
            )
            tracking = tracking._replace(candidates=candidates)
            new_locs, new_u, tracking, sent = scout(
                keys[2],
                new_locs,
                new_u,
                tracking,
                noise=parts[2],
                neighbours=None if structure is None else structure[0],
                **shape,
            )
            moved = moved + sent
        new = new._replace(locs=new_locs, log_scales=new_u)
    new = new._replace(locs=unflatten(new.locs))
    stein, sums = None, state.stein
    if weights is None and tracking is not None and tracking.end is not None:
        stein, sums = final_stein_moment(state.relocation, locs, u, metric, tril, x, gv, sums)
    info = MixtureVIInfo(est.loss, info.step_size, info.num_clipped, info.rejected, moved, log_ratios, stein)
    return MixtureVIState(new, step_state, tracking, sums), info


def _widened_mass_ratios(potential_fn, locs, u, weights, z, tril, metric, key, settings: Settings, own):
    """log p - log q at the components' own draws (``own``, (N, L): the step's first L draws) and at as many
    draws of the widened components g_i = N(m_i, c^2 sigma_i^2 R R^T), c = ``settings.mass_widen``, made
    from the same noise (V evaluated there without its gradient), both reweighted as draws of
    (q_i + g_i) / 2: (N, 2 L) (:func:`mixvi.estimators.balance_heuristic`)."""
    width = own.shape[1]
    zw = z[:width] if z.ndim == 2 else z[:, :width]
    c = settings.mass_widen
    x = draw_points(locs, u + jnp.log(c), zw, metric, tril)
    v = potential_values(potential_fn, x, key, batch_size=settings.sample_batch_size)
    mu, shift = whiten(locs, metric, tril)
    log_w = None if weights is None else jnp.log(weights)
    return balance_heuristic(own, shift - v + widened_log_ratios(mu, u, zw, c, log_w), zw, c)


def final_stein_moment(
    tracking: RelocationState,
    locs: jax.Array,
    log_scales: jax.Array,
    metric: Any,
    tril: jax.Array | None,
    x: jax.Array,
    grad_potential: jax.Array | tuple[jax.Array, ...],
    sums: SteinSums | None = None,
) -> tuple[jax.Array, SteinSums | None]:
    """M of q from the draws x (N, B, d) and grad V there, on the last :data:`STEIN_STEPS` steps before
    ``tracking.end`` (NaN before, and when the end is not known): the cheap half of the fit check that
    ``MixVI.run`` reads at its end. The N draws with one noise row b form a group (with the noise shared
    by the components they all use z_b), and M averages over the pairs of draws of different groups,
    which are independent (:mod:`mixvi.stein_moment`). Given ``sums``, this step's draws are added to
    them (when all finite) and M is that over every pair of the last steps' draws so far; else M is
    this step's own estimate (NaN for a step whose gradients are not finite: it adds nothing). Returns
    M and the sums."""
    parts = grad_potential if isinstance(grad_potential, tuple) else (grad_potential,)
    n = locs.shape[0]
    weights = jnp.full((n,), 1.0 / n, locs.dtype)

    def form(h):
        return covariance_form(h, locs, jnp.exp(log_scales), weights, metric, tril)

    def compute(sums):
        g = -jnp.concatenate(parts, axis=1)
        u = x - jnp.mean(locs, 0)  # (N, B, d) as it is: the N draws that share noise row b form group b
        if sums is None:
            return stein_moment_divergence(u, g, form), None
        finite = tree_all_finite((g, u))
        added, value = add_draws(sums, u, g, form)
        # a step with non-finite gradients adds nothing (M: NaN, and run reads the last finite one)
        sums = jax.tree.map(lambda new, old: jnp.where(finite, new, old), added, sums)
        return jnp.where(finite, value, jnp.nan), sums

    def skip(sums):
        return jnp.full((), jnp.nan, locs.dtype), sums

    last = (tracking.end > 0) & (tracking.steps >= tracking.end - STEIN_STEPS)
    return jax.lax.cond(last, compute, skip, sums)


def hold_bad_components(est: SteinEstimate, weights: jax.Array) -> SteinEstimate:
    """Learned weights without relocation: the quarantined components (``est.bad``) stay where they are
    (gbar_i = 0 and lambda_i = 0 leave m_i and sigma_i unchanged under every method) and their weight
    falls: their f_i, unknown where V is not finite (there the target has no mass, f_i = +inf), is set to
    1 nat above the worst finite one's, and the loss is the others' weighted mean."""
    bad = est.bad
    good_f = jnp.where(bad, -jnp.inf, est.f)
    f = jnp.where(bad, jnp.max(good_f) + 1.0, est.f)
    kept = jnp.where(bad, 0.0, weights)
    loss = jnp.where(jnp.any(bad), jnp.sum(kept * f) / jnp.sum(kept), est.loss)
    return est._replace(gbar=jnp.where(bad[:, None], 0.0, est.gbar), lam=jnp.where(bad, 0.0, est.lam), loss=loss, f=f)


def value_draws(settings: Settings, weighted: bool, tilt: jax.Array | float | None) -> int | None:
    """How many leading draws of every component always get V's value in a step (None: all of them): all
    with learned weights (their step needs f_i from every draw) or a tilt on at every step, else
    ``settings.loss_draws``. With a tilt on a schedule the others get it too once the tilt is on
    (:func:`draws_read`)."""
    return None if weighted or isinstance(tilt, float) else settings.loss_draws


def draws_read(tilt: jax.Array, cut: int, num_draws: int) -> jax.Array:
    """The (traced) number of leading draws whose V value the loss reads under a tilt schedule: all
    ``num_draws`` once the tilt is on, the first ``cut`` before."""
    return jnp.where(tilt > 0, num_draws, cut)


def _with_trials(
    potential_fn, x: jax.Array, trials: jax.Array | None, key: jax.Array, batch: int | None, mesh: Mesh | None
) -> tuple[jax.Array, jax.Array, tuple[jax.Array, jax.Array] | None]:
    """V and grad V at the draws x (N, L, d) and, given them, at the scout candidates' trial points (K, d):
    appended to the draws' rows, so that one vmapped gradient of V serves both (a second copy costs a
    second compilation of V's gradient); with components placed on a mesh, in a call of their own."""
    if trials is None or mesh is not None:
        v, g = potential_and_grad(potential_fn, x, key, batch_size=batch)
        return v, g, None if trials is None else potential_and_grad(potential_fn, trials, key, batch_size=batch)
    n, length, d = x.shape
    rows = jnp.concatenate([x.reshape(n * length, d), trials.astype(x.dtype)])
    v, g = potential_and_grad(potential_fn, rows, key, batch_size=batch)
    return v[: n * length].reshape(n, length), g[: n * length].reshape(x.shape), (v[n * length :], g[n * length :])


def _values_at_head(
    potential_fn, x: jax.Array, cut: int, trials: jax.Array | None, key: jax.Array, batch: int | None, mesh: Mesh | None
) -> tuple[jax.Array, jax.Array, tuple[jax.Array, jax.Array] | None]:
    """V at the first ``cut`` draws of every component (N, cut), grad V at all the draws x (N, L, d) and,
    given them, V and grad V at the scout candidates' trial points (K, d). The gradients are one batch of
    N L points (and the trials), the values V alone at N cut points (and the trials): two copies of V in
    the step, as value_and_grad on the first draws and grad on the others would be, but the large batch
    stays whole. Split as (N cut, N (L - cut)) the step took 6.4-7.1 ms, in this layout 5.0-5.3 ms, with V's
    value at every draw 4.6-4.9 ms (logistic regression, d = 1000, 1000 rows, N = 20, L = 10, 2-core Intel
    CPU, 2026-12-07): the small batch's products and the split gradients cost far more than their share."""
    if trials is None or mesh is not None:
        _, g = potential_and_grad(potential_fn, x, key, batch_size=batch, with_value=False)
        v = potential_values(potential_fn, x[:, :cut], key, batch_size=batch)
        return v, g, None if trials is None else potential_and_grad(potential_fn, trials, key, batch_size=batch)
    n, length, d = x.shape
    trials = trials.astype(x.dtype)
    rows = jnp.concatenate([x.reshape(n * length, d), trials])
    _, g = potential_and_grad(potential_fn, rows, key, batch_size=batch, with_value=False)
    heads = jnp.concatenate([x[:, :cut].reshape(n * cut, d), trials])
    v = potential_values(potential_fn, heads, key, batch_size=batch)
    at_trials = (v[n * cut :], g[n * length :])
    return v[: n * cut].reshape(n, cut), g[: n * length].reshape(x.shape), at_trials


def _gradients_only(potential_fn, x: jax.Array, key: jax.Array, batch: int | None) -> tuple[jax.Array, jax.Array]:
    """NaN for V's values (not evaluated) and grad V at the draws x (N, L, d)."""
    _, g = potential_and_grad(potential_fn, x, key, batch_size=batch, with_value=False)
    return jnp.full(x.shape[:-1], jnp.nan, x.dtype), g


def tilt_now(tilt: float, tracking: RelocationState | None) -> jax.Array | float | None:
    """The tilt's exponent at this step: None without a tilt; with the relocation state's schedule, ``tilt``
    from its ``scout_until`` step on (the second half of ``MixVI.run``) and 0 before or when no schedule
    was set (:func:`explore_until`); without relocation, ``tilt`` at every step."""
    if not tilt:
        return None
    if tracking is None or tracking.steps is None or tracking.scout_until is None:
        return float(tilt)
    on = (tracking.scout_until > 0) & (tracking.steps >= tracking.scout_until)
    return jnp.where(on, jnp.asarray(tilt, tracking.loss_fast.dtype), 0.0)


def final_eta_cap(settings: Settings, tracking: RelocationState | None) -> jax.Array | None:
    """The auto step's cap in the run's final phase: over the last ``settings.final_phase`` of the steps up
    to ``tracking.end`` (set by :func:`explore_until`), eta_max (1 - p) + eta_min p with p rising from 0
    to 1, so that the last iterates move by little more than eta_min's jitter; None (no cap) without a
    final phase, a fixed step or a known end. (A geometric decay, eta_max (eta_min / eta_max)^p, left a
    500-step garch11 fit still on its way 0.43 sds off: its caps sum to half the linear ones'.)"""
    if not settings.final_phase or not isinstance(settings.step_size, str) or tracking is None or tracking.end is None:
        return None
    auto = settings.auto
    start = tracking.end - jnp.ceil(settings.final_phase * tracking.end).astype(tracking.end.dtype)
    span = jnp.maximum(tracking.end - start, 1)
    p = jnp.clip((tracking.steps - start) / span, 0.0, 1.0)
    cap = auto.eta_max * (1.0 - p) + auto.eta_min * p
    # end 0: not known (a loop of one's own that set no end)
    return jnp.where(tracking.end > 0, cap, auto.eta_max).astype(tracking.loss_fast.dtype)


def explore_until(state: MixtureVIState, step: int, end: int | None = None) -> MixtureVIState:
    """The state with scouts allowed to leave until ``step`` (counted from the state's first step;
    :func:`mixvi.scout.scout`), and, given ``end``, the step the run ends at: a component that at its
    rate of improvement cannot come within the relocation gap of the best one by then is relocated
    (:func:`mixvi.adapt.relocate`). ``MixVI.run`` uses half its steps and its last step; a loop of one's
    own sends none and sets no end unless it calls this (e.g. ``explore_until(state, n // 2, n)``)."""
    rel = state.relocation
    if rel is None or rel.scout_until is None:
        return state
    # a concrete state (MixVI.run's) is updated on the host, without a program to compile
    concrete = not traced((rel, state.stein, step, end))
    as_int = (lambda x: jax.device_put(np.int32(x))) if concrete else (lambda x: jnp.asarray(x, jnp.int32))
    changes = {"scout_until": as_int(step)}
    sums = state.stein
    if end is not None and rel.end is not None:
        changes["end"] = as_int(end)
        if sums is not None:  # a new end: the sums are for the steps before it (none yet)
            if concrete:
                if int(end) != int(rel.end):
                    sums = jax.tree.map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), sums)
            else:
                moved = changes["end"] != rel.end
                sums = jax.tree.map(lambda a: jnp.where(moved, jnp.zeros_like(a), a), sums)
    return state._replace(relocation=rel._replace(**changes), stein=sums)


def sample(rng_key: jax.Array, state: MixtureVIState, num_samples: int) -> Any:
    """Draws from q: a pytree like the position, every leaf with a leading axis of ``num_samples``."""
    params = state.params
    locs, unflatten = flatten_locs(params.locs)
    k_idx, k_z = jax.random.split(rng_key)
    if params.logits is None:
        idx = jax.random.randint(k_idx, (num_samples,), 0, locs.shape[0])
    else:
        idx = jax.random.categorical(k_idx, params.logits, shape=(num_samples,))
    z = draws.normal(k_z, (num_samples, locs.shape[1]), locs.dtype)
    if params.log_metric is not None:
        z = z * jnp.exp(0.5 * params.log_metric)
    if params.metric_tril is not None:
        z = z @ params.metric_tril.T
    if params.metric_lowrank is not None:
        z = root_apply(params.metric_lowrank, z)
    return unflatten(locs[idx] + jnp.exp(params.log_scales)[idx][:, None] * z)


def mixture_vi(
    logdensity_fn: Callable,
    n_components: int = DEFAULT_COMPONENTS,
    method: str = "ibw",
    step_size: float | str = "auto",
    num_samples: int = 10,
    *,
    init_scale: float = 1.0,
    metric: str = "auto",
    weights: str = "uniform",
    shared_noise: bool = True,
    auto: AutoStep = AutoStep(),
    loss_draws: int | None = 1,
    sample_batch_size: int | None = None,
    mesh: Mesh | None = None,
    min_factor: float = 0.1,
    metric_step_size: float = 0.1,
    logdensity_takes_key: bool = False,
    relocate: bool = True,
    metric_rank: int | None = None,
    tilt: float = 0.0,
    final_phase: float = 0.0,
) -> MixtureVI:
    """Mixture VI for a log-density over any pytree.

    Parameters
    ----------
    logdensity_fn : callable
        ``log p(position)`` (unnormalised), or ``log p(position, key)`` with ``logdensity_takes_key``
        (a fresh key every step, e.g. for a data subsample).
    n_components : int
        N, the number of mixture components (default 20, as ``AutoIsotropicMixture``).
    method : str
        'ibw' (isotropic Bures-Wasserstein, default), 'md' (entropic mirror descent), 'ngd'
        (natural-gradient baseline) or 'means' (means only, variances fixed).
    step_size : float or 'auto'
        The paper's fixed step gamma, or the scale-free auto step.
    num_samples : int
        B, draws per component per step.
    init_scale : float
        ``init`` puts the component means at ``position + init_scale * N(0, I)`` and every sigma_i
        at ``init_scale``.
    metric : str
        'auto' (default: 'dense' up to d = 256, 'lowrank' beyond, 'diagonal' there without
        shared noise), 'isotropic' (the paper),
        'diagonal' (a learned diagonal metric D shared by the components), 'dense' (a learned shared
        covariance L L^T: every component is isotropic in L^(-1) x) or 'lowrank' (a learned
        low-rank-plus-diagonal metric, memory O(d r): :mod:`mixvi.lowrank`).
    weights : str
        'uniform' (the paper) or 'fisher-rao' (learned weights).
    shared_noise : bool
        Share the B noise vectors across components (the authors' reference code) or draw them
        independently.
    auto : AutoStep
        Parameters of the auto step.
    loss_draws : int or None
        The loss uses V at the first ``loss_draws`` draws of every component (an unbiased estimate
        at ~1/B of the forward cost); None uses all. Learned weights always use all.
    sample_batch_size : int or None
        Evaluate the N B target gradients this many points at a time (bounded memory, same result).
    mesh : jax.sharding.Mesh, optional
        Split the components (and their gradient evaluations) along the mesh's one axis.
    min_factor, metric_step_size : float
        The fixed step's validity guard and the metric's fixed step.
    logdensity_takes_key : bool
        Whether ``logdensity_fn`` takes a key as second argument.
    relocate : bool
        Restart components that carry no posterior mass on the best one (:mod:`mixvi.adapt`);
        False is the paper's method exactly.
    metric_rank : int, optional
        The rank r of metric='lowrank' (below d; by default ``min(DEFAULT_RANK, d - 1)``).
    tilt : float
        The mass-covering tilt (:func:`mixvi.estimators.tilt_weights`; ``MixVI``'s default is 1.0): with
        relocation it applies from the step :func:`explore_until` sets on, without it at every step; V is
        then evaluated at every draw. 0 (default here) is the paper's KL(q || p).
    final_phase : float
        With relocation and the auto step, the last fraction of the steps up to the end that
        :func:`explore_until` sets over which eta is capped by a linear decay to eta_min
        (:func:`final_eta_cap`; ``MixVI``'s default is 0.25). 0 (default here): no cap.

    Returns
    -------
    MixtureVI
        ``init(rng_key, position) -> state``; ``step(rng_key, state) -> (state, info)`` (pure,
        jit-able and vmap-able); ``sample(rng_key, state, num_samples) -> draws``.
    """
    if not _is_count(n_components):
        raise ValueError(BAD_COMPONENTS.format(n_components))
    if not (isinstance(init_scale, int | float) and init_scale > 0):
        raise ValueError(BAD_INIT_SCALE.format(init_scale))
    if metric not in METRICS:
        raise ValueError(BAD_METRIC.format(metric))
    if weights not in WEIGHTS:
        raise ValueError(BAD_WEIGHTS.format(weights))
    check_rank(metric_rank)
    if metric == "lowrank" and not shared_noise:
        raise ValueError(SHARED_NOISE_NEEDED)
    settings = check(
        Settings(
            method,
            step_size,
            num_samples,
            shared_noise,
            auto,
            loss_draws,
            sample_batch_size,
            mesh,
            min_factor,
            metric_step_size,
            relocate,
            tilt=tilt,
            final_phase=final_phase,
        )
    )
    if mesh is not None and n_components % mesh.size:
        raise ValueError(BAD_MESH_SIZE.format(n_components, mesh.size))

    def init_fn(rng_key: jax.Array, position: Any) -> MixtureVIState:
        flat, unravel = ravel_pytree(position)
        noise = draws.normal(rng_key, (n_components, flat.shape[0]), flat.dtype)
        locs = jax.vmap(unravel)(flat + init_scale * noise)
        resolved = resolve_metric(metric, flat.shape[0], shared_noise)
        return init_state(
            locs,
            init_scale,
            metric=resolved,
            weights=weights,
            step_size=step_size,
            auto=auto,
            mesh=mesh,
            relocate=relocate,
            metric_rank=metric_rank,
        )

    def step_fn(rng_key: jax.Array, state: MixtureVIState) -> tuple[MixtureVIState, MixtureVIInfo]:
        one = jax.tree.map(lambda leaf: leaf[0], state.params.locs)
        _, unravel = ravel_pytree(one)

        def potential(x: jax.Array, key: jax.Array) -> jax.Array:
            position = unravel(x)
            return -(logdensity_fn(position, key) if logdensity_takes_key else logdensity_fn(position))

        return step(rng_key, state, potential, settings)

    return MixtureVI(init_fn, step_fn, sample)
