"""Scouts: components sent to look for the modes that no component started near.

During the first half of a run (``MixVI.run``
sets ``scout_until``; :func:`mixvi.vi.explore_until` does it for a loop of one's own, where it is 0,
no scouts, by default), from step 200 and every 50 steps the least loaded component that has
company in its basin restarts at a wide draw around where the run started (:func:`scout`). It
drains into some basin; an unserved one then gets its share from mass balancing, and a served one
gives it back.

A scout's start is the best of :data:`SCOUT_CANDIDATES` wide draws, and only one no worse than where the
run itself started (:func:`set_ceiling` records that on the first step; :data:`SCOUT_MARGIN`).

This module depends on JAX and :mod:`mixvi.adapt` only.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mixvi.adapt import NEIGHBOUR_REACH, RelocationState, basin_neighbours, standard_normal

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
    potential_fn: Callable[[jax.Array], jax.Array],
    *,
    every: int = SCOUT_EVERY,
    start: int = SCOUT_START,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, RelocationState, jax.Array]:
    """Send the least loaded component that shares its basin to a fresh start (see the module docstring).

    Every ``every`` steps from step ``start`` to step ``state.scout_until``, that component restarts at
    the best of :data:`SCOUT_CANDIDATES` draws from a normal around where the run started (the initial
    means' mean, :data:`SCOUT_SPREAD` times their per-coordinate spread) with the median sigma: the draw
    with the lowest potential V, and only if V there is finite and no higher than the highest V met at
    the draws of the first step plus :data:`SCOUT_MARGIN` nats per dimension (``state.ceiling``: a scout
    starts not much worse than the run itself did, so a wide draw deep in a tail, where V can be
    astronomically large and the scout would take hundreds of steps to come back, is not sent). It finds whichever basin that start drains into; if that basin
    was unserved, mass balancing then gives it its share, and otherwise balancing takes the scout back.

    Parameters
    ----------
    rng_key : jax.Array or None
        Key of the scout's start (unused, and may be None, when ``noise`` gives the candidates).
    locs, log_scales : jax.Array
        m (N, d) and log sigma (N,).
    state : RelocationState
        The running averages, with the step count and the run's start.
    potential_fn : callable
        V at a batch of points (K, d) -> (K,); evaluated at the candidates on the steps a scout is due.
    every, start : int
        The scouting period and first step.
    metric, scale_tril : jax.Array, optional
        The shared metric, for telling which components share a basin.
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
        z = standard_normal(noise, rng_key, (SCOUT_CANDIDATES,) + locs.shape[1:], locs.dtype)
        points = state.origin_loc + SCOUT_SPREAD * state.origin_scale * z
        v = potential_fn(points)
        v = jnp.where(jnp.isfinite(v), v, jnp.inf)
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
    return new_locs, new_log_scales, new_state, go.astype(jnp.int32)
