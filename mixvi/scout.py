"""Scouts: components sent to look for the modes that no component started near.

During the first half of a run (``MixVI.run``
sets ``scout_until``; :func:`mixvi.vi.explore_until` does it for a loop of one's own, where it is 0,
no scouts, by default), from step 200 and every 50 steps the least loaded component that has
company in its basin restarts where a descent of V from a wide draw around the run's start ends
(:func:`scout`), if no component is there already. An unserved basin then gets its share from mass
balancing.

A scout's start comes from :data:`SCOUT_CANDIDATES` wide draws, made every :data:`SCOUT_EVERY` steps,
each descending V by one step per training step in the shared metric's coordinates until the next scout
is due (:func:`descend`; the caller evaluates V and its gradient at the candidates' trial points in the
same batch as the step's own draws, so that no second copy of V's gradient is compiled, and the
candidates cost K more rows of that batch): among the end points that no component serves (none
within the basins' reach, :data:`mixvi.adapt.NEIGHBOUR_REACH`), the one with the lowest V, and only
one no worse than where the run itself started (:func:`set_ceiling`; :data:`SCOUT_MARGIN`), at a basin's
bottom (:data:`SCOUT_STATIONARY`) and no higher than the lowest end allows (:data:`SCOUT_DEPTH`). Why
descend first: which basin a wide draw drains into is decided by the basins' shapes, not their masses,
and most drain into basins already served. On the 20-d four-mode benchmark
mixture 9 % of the lowest-V wide draws drained into its heaviest mode (0.4 of the mass), so its sixteen
scouts missed that mode in about one run in five; knowing where each candidate ends, the scout goes
only where it is needed, and it arrives at once instead of travelling there. A relocation state
without candidates (:func:`init_candidates` adds them) takes the wide draw with the lowest V as it is.

This module depends on JAX, :mod:`mixvi.adapt` and :mod:`mixvi.estimators` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mixvi import metric_root
from mixvi.adapt import NEIGHBOUR_REACH, RelocationState, basin_neighbours, standard_normal, within_reach
from mixvi.estimators import whiten

SCOUT_EVERY = 50
"""Steps between two scouts."""
SCOUT_START = 200
"""No scout before this step (the components first settle where they started)."""
SCOUT_MIN_AGE = 100
SCOUT_SPREAD = 4.0
"""Scouts start at a normal draw with this many times the initial means' per-coordinate spread."""
SCOUT_CANDIDATES = 8
"""Draws a scout's start is chosen from (the one with the lowest potential)."""
SCOUT_MARGIN = 20.0
"""A scout's start may have V up to this many nats per dimension above the highest V of the first step's
draws (wide enough for the wide draws that find the 20-d benchmark mixture's modes, whose best of eight
lies ~200 nats above; it keeps out starts with V ~ 1e9 deep in a hierarchical model's tails)."""
SCOUT_STATIONARY = 0.25
"""A candidate's end point is a basin's bottom when the norm of sigma L^T grad V there is at most this
(sigma the median component's, L the shared metric's scale: the distance to the bottom of a basin of q's
own shape, in sigmas); one still on a slope is not sent to (:func:`scout`)."""
SCOUT_DEPTH = 2.0
"""A scout's end point may lie at most this many nats per dimension above the lowest end of the candidates'
descents: a basin whose bottom lies much higher holds next to no mass (on the label-switching model a
local minimum of V 66 nats above the modes, where a scout raised the run's -ELBO by 3 nats); the margin
leaves room for the volume of a mode wider than the lowest one (e^2 times per dimension)."""
FLOW_GROW = 1.5
"""A candidate's step length grows by this factor after a step that lowers V (:func:`descend`) ..."""
FLOW_SHRINK = 0.25
"""... and shrinks by this one after a step that would not (the step is refused)."""


class Candidates(NamedTuple):
    """The scout candidates, each descending V by one step per training step (:func:`descend`): the best
    point so far, V and grad V there (V = inf before a first finite value), the step length factor, and the
    point V is evaluated at next (the trial, evaluated with the step's own draws)."""

    points: jax.Array
    values: jax.Array
    grads: jax.Array
    eta: jax.Array
    trial: jax.Array


def restart_candidates(points: jax.Array) -> Candidates:
    """Candidates starting at the points (K, d): the first evaluation is the start itself (V = inf until
    then, so it is taken when finite)."""
    k = points.shape[0]
    return Candidates(
        points,
        jnp.full((k,), jnp.inf, points.dtype),
        jnp.zeros_like(points),
        jnp.full((k,), 1.0 / FLOW_GROW, points.dtype),
        points,
    )


def wide_draws(state: RelocationState, noise: jax.Array | None, rng_key: jax.Array | None, dtype) -> jax.Array:
    """:data:`SCOUT_CANDIDATES` draws from the normal around where the run started (the initial means' mean,
    :data:`SCOUT_SPREAD` times their per-coordinate spread), from the given noise rows or a fresh draw."""
    z = standard_normal(noise, rng_key, (SCOUT_CANDIDATES,) + state.origin_loc.shape, dtype)
    return state.origin_loc + SCOUT_SPREAD * state.origin_scale * z


def init_candidates(state: RelocationState) -> RelocationState:
    """The relocation state with :data:`SCOUT_CANDIDATES` candidates at the run's start (``state.origin_loc``,
    set by :func:`mixvi.adapt.init_relocation` given the initial means); unchanged without it."""
    if state.origin_loc is None:
        return state
    points = jnp.broadcast_to(state.origin_loc, (SCOUT_CANDIDATES,) + state.origin_loc.shape)
    return state._replace(candidates=restart_candidates(points))


def descend(
    candidates: Candidates,
    trial_values: jax.Array,
    trial_grads: jax.Array,
    sigma: jax.Array,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
) -> Candidates:
    """One descent step of the candidates given V and grad V at their trial points: a trial that lowers V
    (finite, with a finite gradient) is taken and its step length grows by FLOW_GROW, else it is refused and
    the length shrinks by FLOW_SHRINK; the next trial is a step of eta sigma^2 along -grad V in the metric's
    whitened coordinates, x - eta sigma^2 L L^T grad V (with L the metric's scale; the identity, a diagonal or
    a dense or low-rank factor). With eta = 1 it is the Newton step on a basin of q's own shape."""
    c = candidates
    better = jnp.isfinite(trial_values) & (trial_values < c.values) & jnp.all(jnp.isfinite(trial_grads), 1)
    points = jnp.where(better[:, None], c.trial, c.points)
    values = jnp.where(better, trial_values, c.values)
    grads = jnp.where(better[:, None], trial_grads, c.grads)
    eta = jnp.where(better, c.eta * FLOW_GROW, c.eta * FLOW_SHRINK)
    step = metric_root.apply(metric_root.transpose_apply(grads, metric, scale_tril), metric, scale_tril)
    trial = points - (eta * sigma**2)[:, None] * step
    return Candidates(points, values, grads, eta, trial)


def set_ceiling(state: RelocationState, potential: jax.Array) -> RelocationState:
    """On the first step, record the largest finite V at the draws (around the initial means): scouts
    start no worse than where the run itself started (:func:`scout`)."""
    if state.ceiling is None:
        return state
    v = jnp.asarray(potential, state.ceiling.dtype)
    worst = jnp.max(jnp.where(jnp.isfinite(v), v, -jnp.inf))
    return state._replace(ceiling=jnp.where(jnp.isnan(state.ceiling) & jnp.isfinite(worst), worst, state.ceiling))


def scout(
    rng_key: jax.Array,
    locs: jax.Array,
    log_scales: jax.Array,
    state: RelocationState,
    potential_fn: Callable[[jax.Array], jax.Array] | None = None,
    *,
    every: int = SCOUT_EVERY,
    start: int = SCOUT_START,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
    noise: jax.Array | None = None,
    neighbours: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, RelocationState, jax.Array]:
    """Send the least loaded component that shares its basin to a fresh start (see the module docstring).

    Every ``every`` steps from step ``start`` to step ``state.scout_until``, that component restarts with
    the median sigma at one of :data:`SCOUT_CANDIDATES` draws from a normal around where the run started
    (the initial means' mean, :data:`SCOUT_SPREAD` times their per-coordinate spread). With candidates in
    the state (:func:`init_candidates`), the draws made ``every`` steps before have descended V since
    (:func:`descend`) and the scout takes the end point with the lowest V among those that no component
    serves (none leaves when every end is served); fresh draws replace the candidates every ``every``
    steps. Without candidates, the draw with the lowest V as it is. Either way V there must be finite and
    no higher than the highest V met at the draws of the first step plus :data:`SCOUT_MARGIN` nats per dimension
    (``state.ceiling``: a scout starts not much worse than the run itself did, so a start deep in a tail,
    where V can be astronomically large and the scout would take hundreds of steps to come back, is not
    sent). Mass balancing then gives the basin it found its share.

    Parameters
    ----------
    rng_key : jax.Array or None
        Key of the scout's start (unused, and may be None, when ``noise`` gives the candidates).
    locs, log_scales : jax.Array
        m (N, d) and log sigma (N,).
    state : RelocationState
        The running averages, with the step count and the run's start.
    potential_fn : callable, optional
        V at a batch of points (K, d) -> (K,); evaluated at the draws on the steps a scout is due (needed
        only without candidates in the state).
    every, start : int
        The scouting period and first step.
    metric, scale_tril : jax.Array, optional
        The shared metric, for telling which components share a basin.
    neighbours : jax.Array, optional
        (N, N) bool, :func:`mixvi.adapt.basin_neighbours` as the caller has them (:func:`mixvi.vi.step`:
        at the step's start, for balancing too); else computed here on the steps a scout is due.
    noise : jax.Array, optional
        (SCOUT_CANDIDATES, d) standard-normal rows (of the step's noise, :func:`mixvi.adapt.noise_rows`) for the
        candidates instead of a fresh draw.

    Returns
    -------
    tuple
        New locs, new log scales, the new state and the number of scouts sent (0 or 1).
    """
    t = state.steps
    due = (t >= start) & (t <= state.scout_until) & (jnp.mod(t, every) == 0)
    if neighbours is not None:
        shared = jnp.any(neighbours, 1)
    else:
        # which components have company in their basin (O(N^2 d)) only on the steps a scout is due
        shared = jax.lax.cond(
            due,
            lambda _: jnp.any(basin_neighbours(locs, log_scales, metric, scale_tril, NEIGHBOUR_REACH), 1),
            lambda _: jnp.zeros(locs.shape[:1], bool),
            None,
        )
    ready = shared & jnp.isfinite(state.log_mass) & (state.age >= SCOUT_MIN_AGE)
    lo = jnp.argmin(jnp.where(ready, state.log_mass, jnp.inf))
    ceiling = jnp.inf if state.ceiling is None else state.ceiling + SCOUT_MARGIN * locs.shape[1]

    def candidate(_):
        # V only on the steps a scout is due
        if state.candidates is None:
            points = wide_draws(state, noise, rng_key, locs.dtype)
            v = potential_fn(points)
            v = jnp.where(jnp.isfinite(v), v, jnp.inf)
            best = jnp.argmin(v)
            return points[best], v[best] <= ceiling
        points, v = state.candidates.points, state.candidates.values
        # an end point already served (within reach of a component, as basins are told) is no use for a scout
        sigma = jnp.exp(jnp.median(log_scales))
        white, _ = whiten(points, metric, scale_tril)
        comp, _ = whiten(locs, metric, scale_tril)
        ends_sigma = jnp.full(points.shape[:1], sigma)
        served = jnp.any(within_reach(white, ends_sigma, comp, jnp.exp(log_scales), NEIGHBOUR_REACH), 1)
        # an end still on a slope (its descent has not reached a basin's bottom) is no basin found: on eight
        # schools such ends lie in the funnel's neck, and scouts sent there held the run's -ELBO 1-3 nats up
        slope = sigma * jnp.linalg.norm(metric_root.transpose_apply(state.candidates.grads, metric, scale_tril), axis=1)
        lowest = jnp.min(jnp.where(jnp.isfinite(v), v, jnp.inf))
        shallow = ~(v <= lowest + SCOUT_DEPTH * locs.shape[1])
        v = jnp.where(served | shallow | ~(slope <= SCOUT_STATIONARY), jnp.inf, v)
        best = jnp.argmin(v)
        return points[best], v[best] <= ceiling

    fresh, acceptable = jax.lax.cond(due & ready[lo], candidate, lambda _: (locs[0], jnp.array(False)), None)
    go = due & ready[lo] & acceptable
    sent = (jnp.arange(locs.shape[0]) == lo) & go
    new_locs = jnp.where(sent[:, None], fresh, locs)
    new_log_scales = jnp.where(sent, jnp.median(log_scales), log_scales)
    new_state = state._replace(
        loss_fast=jnp.where(sent, jnp.nan, state.loss_fast),
        loss_slow=jnp.where(sent, jnp.nan, state.loss_slow),
        age=jnp.where(sent, 0, state.age),
        log_mass=jnp.where(sent, jnp.nan, state.log_mass),
    )
    if state.candidates is not None:
        # fresh candidates every `every` steps while scouts may leave: they descend until the next one is due
        def fresh(_):
            return restart_candidates(wide_draws(state, noise, rng_key, locs.dtype))

        renew = (jnp.mod(t, every) == 0) & (t < state.scout_until)
        new_state = new_state._replace(candidates=jax.lax.cond(renew, fresh, lambda _: state.candidates, None))
    return new_locs, new_log_scales, new_state, go.astype(jnp.int32)
