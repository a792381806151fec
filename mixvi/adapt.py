"""Relocation of components that carry no posterior mass.

With uniform weights every component holds 1/N of q's mass wherever it sits. A component that
lands in a region where the target has next to no mass (a far basin it cannot leave, a spurious
local mode, or a collapse on a sharp posterior: its sigma shrinks to the local curvature faster
than the trust region lets its mean travel) keeps its 1/N and biases every expectation.

Its per-component loss f_i = E_{N_i}[log q - log p] tells: for components on real modes the f_i
differ by the log of how over-served their mode is (log(n_k / (N pi_k)), a few nats for any mass
pi_k above ~1e-4), while a component in a massless region sits tens to thousands of nats above the
best one. A component is relocated when

* its running loss exceeds the best component's by more than ``gap`` nats
  (default 20 + sqrt(d): 20 nats is a mass ratio of e^-20; sqrt(d) covers the Monte-Carlo noise
  of the running average, whose sd is about 0.16 sqrt(d) for a Gaussian fit), and
* it is not closing that gap: at its current rate of improvement (the fast running average below
  the slow one) it would need more than ``patience`` steps, or more than are left before the run ends
  (``state.end``, which ``MixVI.run`` sets), and
* both it and the best component have lived ``min_age`` steps since their last relocation.

It then restarts as a draw from the best component (the one whose region q under-serves most):
mean m_best + sigma_best L z, the same sigma.

Mass balancing. Components on real modes end up in proportion to how many started in each basin,
not to the basins' masses. The target mass a component carries has an unbiased importance estimate:
with r_i(x) = q_i(x) / (N q(x)) the share of x that component i holds,

    E_p[r_i] = (1/N) E_{x ~ q_i}[p(x) / q(x)],

an identity that needs neither well-separated components nor a good fit (only the variance of the
estimate depends on the fit). Every step folds (1/L) sum_b p(x_ib) / q(x_ib) over the draws that have
a value of log p into a running average kept in log space (:data:`MASS_DECAY`; the unknown
normalising constant cancels between components). Components share a basin when they are linked by a
chain of neighbours, means within :data:`NEIGHBOUR_REACH` sqrt(d) sigma of each other in the whitened
coordinates (:func:`basins`); a basin's mass is the sum of its components' and, with uniform weights,
it should hold that share of the N components (its target count t_B, in general not a whole number).
Balancing moves one component from the basin with the largest surplus n_B - t_B to the one with the
largest deficit t_B - n_B when the two add up to more than 1 + :data:`BALANCE_MARGIN`, i.e. when the
move lowers sum_B (n_B - t_B)^2 by more than 2 margin: the least loaded component of the giving basin
restarts as a draw from the most loaded one of the receiving basin (a split: the two share its mass).
The counts end within about one component of the masses, and do not overshoot: the components left in
the giving basin take over the moved one's share of its mass estimate, so the basin's total stays as
it was (comparing single components' estimates, as an earlier version did, emptied a basin once its
last components' stale estimates looked light). The moving component must have lived ``min_age``
steps and have company in its basin (the importance estimate of a component alone on a mode it fits
poorly is low for a long time: its weights are heavy-tailed, and taking it away would lose the mode);
the one it restarts on only ``receive_age`` steps, so that a basin found late grows by doubling every
``receive_age`` steps. Both must have settled (a component still travelling to its basin carries little
mass yet). When no such move is due, a basin that is a chain (a curved or stretched mode, whose
components are not all neighbours) can move inside itself: the least loaded component not next to the
most loaded one restarts on it when their estimates differ by more than :data:`CHAIN_RATIO` (the region
q covers least gets another component; a banana's arms). One move per step at most; on a unimodal
target whose components are all neighbours nothing moves. No component moves between basins over the
last quarter of a run whose end is known (:data:`BALANCE_QUIET`; moves inside a chain go on until its
last tenth, :data:`CHAIN_QUIET`): the
estimates drift while the final phase settles the components (on the 20-d mixture a mode's estimate went
from 0.2 to 0.37 of the mass in 400 steps with no move), and a cascade of moves begun there, 75 steps
before the end, left the counts at 6 / 4 / 8 / 2 for masses 0.4 / 0.3 / 0.2 / 0.1 where they had been
8 / 7 / 4 / 1.

What limits the masses: counts are whole (1/N steps of mass with uniform weights), and the estimates of
basins that the shared shape fits badly are biased low (their weights are heavy-tailed), by about a
third for a 20-d mode served by one or two components.

Scouts (:mod:`mixvi.scout`) find the basins that no component started near; balancing then gives
them their share.

A component whose sigma falls below :data:`COLLAPSE_RATIO` of the median, or whose draws hit a
non-finite target, also restarts on the best component (the run goes on for the others), and so does a
mature one whose importance-mass estimate is below :data:`STARVED_RATIO` of the most loaded one's: a
scout sent where no basin was found (on eight schools, 7 to 20 nats of loss above the others, within
the relocation gap, with mass estimates e^-13 to e^-27 of theirs) would otherwise stay there for
hundreds of steps, each such scout raising the run's -ELBO by one to three nats.

The shared metric (diagonal, dense or low-rank) is learned only from the components within the gap of
the best (:func:`metric_shares`): one far away, still travelling, would pull the shape every component
uses towards its own region's.

N, the parameter shapes and the uniform weights never change, so ``get_params``, ``Predictive`` and
checkpoints are unaffected. Learned weights have their own remedy (the weight step sends them to
zero) and are neither relocated nor balanced.

This module depends on JAX and :mod:`mixvi.estimators` only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from mixvi import draws
from mixvi.estimators import draw_points, whiten

FAST_DECAY = 0.9
SLOW_DECAY = 0.99
# lag between the two running averages of a linear trend: 1 / (1 - 0.99) - 1 / (1 - 0.9) steps
TREND_LAG = 1.0 / (1.0 - SLOW_DECAY) - 1.0 / (1.0 - FAST_DECAY)
MIN_GAP = 20.0
COLLAPSE_RATIO = 1e-3
"""A component whose sigma falls below this fraction of the median sigma restarts on the best one."""
STARVED_RATIO = 1e-3
"""A mature component whose importance-mass estimate falls below this fraction of the most loaded one's
restarts on the best one: it sits where the target has next to no mass (a scout that found no basin)."""
LOSS_CEILING_GAPS = 10.0
"""A component's loss enters its running averages at most this many relocation gaps above the best
component's running loss. A start deep in a tail can cost 1e20 nats on its first steps; unclipped, that
stayed in the slow average for thousands of steps (0.99 per step), the trend read as an improvement of
thousands of nats per step, and the component, stuck 40-140 nats above the others, was never relocated
(a Gaussian-process regression of posteriordb, 3 of 4 seeds with the loss from every draw)."""
MASS_DECAY = 0.995
"""Decay of the running importance-mass estimates (an average over about 200 steps)."""
RECEIVE_AGE = 100
"""Steps a component must have lived before balancing may split it to serve its basin (:func:`balance`'s
``receive_age``); also the age from which :func:`several_basins` counts it."""
NEIGHBOUR_REACH = 2.0
"""Two components share a basin when their means are within this many sqrt(d) sigma (whitened)."""
BALANCE_RATIO = 1.1
"""Balancing looks at the basins only on steps where the mass estimates of two mature components differ
by more than this factor."""
CHAIN_RATIO = 1.5
"""Inside one basin made of a chain of neighbours, a move is made when the most loaded component carries
this many times what the least loaded one not next to it carries."""
BALANCE_MARGIN = 0.5
"""A move is made when it lowers the squared error of the basins' component counts by at least twice this
(in components): half a component of hysteresis against the noise of the mass estimates."""
CHAIN_QUIET = 0.1
"""No move inside a chain over this last fraction of a run whose end is known: a component restarted there
has no time to settle (on garch11 two of eight seeds ended 0.11 and 0.16 posterior sds off after a move
126 and 27 steps before the end of 2000, where the others ended within 0.017)."""
BALANCE_QUIET = 0.25
"""No move between basins over this last fraction of a run whose end is known (``state.end``): a component
moved there has no time to settle, nor a wrong move to be undone, before the run returns its counts.
(Moves inside a chain go on: stopping them too took the baseball fit's largest error from 0.27 to 0.22
sds but the Gaussian-process regression's from 0.20 to 0.27, medians of six to eight seeds; docs/theory.md.)"""


class RelocationState(NamedTuple):
    """Per-component running averages of the loss f_i (fast and slow; NaN before the first step), the
    steps since each component's last (re)start, and the log of the running importance-mass estimate
    (NaN until the first step; unnormalised: only differences between components mean anything)."""

    loss_fast: jax.Array
    loss_slow: jax.Array
    age: jax.Array
    log_mass: jax.Array
    steps: jax.Array | None = None
    origin_loc: jax.Array | None = None
    origin_scale: jax.Array | None = None
    scout_until: jax.Array | None = None
    ceiling: jax.Array | None = None
    end: jax.Array | None = None
    # the scouts' candidates descending V (a mixvi.scout.Candidates; typed loosely: scout imports this module)
    candidates: Any = None


def init_relocation(n_components: int, dtype=jnp.float32, locs: jax.Array | None = None) -> RelocationState:
    """The state before the first step; given the initial means ``locs`` (N, d), it also keeps where
    the run started (their mean and per-coordinate spread), where scouts are sent (:func:`mixvi.scout.scout`)."""
    nan = jnp.full((n_components,), jnp.nan, dtype)
    origin = (None, None)
    if locs is not None:
        spread = jnp.std(locs, 0) if locs.shape[0] > 1 else jnp.ones(locs.shape[1:], dtype)
        origin = (jnp.mean(locs, 0), jnp.where(spread > 0, spread, 1.0))
    zero = jnp.zeros((), jnp.int32)
    ceiling = None if locs is None else jnp.full((), jnp.nan, dtype)
    return RelocationState(nan, nan, jnp.zeros((n_components,), jnp.int32), nan, zero, *origin, zero, ceiling, zero)


def noise_rows(noise: jax.Array, count: int) -> jax.Array | None:
    """``count`` distinct rows of standard normals (count, d) taken from a step's noise z ((B, d) shared or
    (N, B, d)), or None when z has too few to give distinct rows (then the caller draws its own).

    The moves below restart components at normal draws. Drawing them anew puts a random-number generator
    in the compiled step for each move (about 0.2 s of XLA compilation apiece on a 2-core CPU); the step's
    own noise, already drawn, serves as well: a restart at m_j + sigma_j L z_b is a draw from component j,
    and which component moves, and when, does not depend on z. Rows beyond the first B are the
    noise rows with their coordinates rolled by r and sign-flipped for odd r (still independent standard
    normals in every coordinate, and different rows)."""
    rows = noise.reshape(-1, noise.shape[-1])
    copies = -(-count // rows.shape[0])
    if copies > (2 if rows.shape[1] == 1 else rows.shape[1]):
        return None  # a roll of a 1-d row is the row itself: not enough distinct rows
    shifted = [jnp.roll(rows, r, axis=1) * (-1.0) ** r for r in range(copies)]
    return jnp.concatenate(shifted, 0)[:count]


def standard_normal(rows: jax.Array | None, rng_key: jax.Array | None, shape: tuple, dtype) -> jax.Array:
    """Standard normals of ``shape``: the given ``rows`` (from :func:`noise_rows`), or a fresh draw."""
    if rows is not None:
        return rows.reshape(shape).astype(dtype)
    if rng_key is None:
        raise ValueError("a move needs either rows of the step's noise or a key for its own draw")
    return draws.normal(rng_key, shape, dtype)


def track(
    state: RelocationState,
    component_loss: jax.Array,
    ok: jax.Array,
    log_ratios: jax.Array | None = None,
    gap: float | None = None,
) -> RelocationState:
    """Fold this step's per-component losses (and, given ``log_ratios`` = log p - log q at draws of
    every component, shape (N, L), NaN where V was not evaluated, the importance masses) into the running averages; a rejected step
    or a non-finite value leaves them as they were. Given the relocation ``gap``, a loss enters the
    averages at most :data:`LOSS_CEILING_GAPS` gaps above the best running loss."""
    f = jnp.asarray(component_loss, state.loss_fast.dtype)
    if gap is not None:
        # the best so far, or on the first step the best of this step's losses
        best = jnp.minimum(
            jnp.min(jnp.where(jnp.isnan(state.loss_fast), jnp.inf, state.loss_fast)),
            jnp.min(jnp.where(jnp.isfinite(f), f, jnp.inf)),
        )
        f = jnp.where(jnp.isfinite(best), jnp.minimum(f, best + LOSS_CEILING_GAPS * gap), f)
    first = jnp.isnan(state.loss_fast)
    fast = jnp.where(first, f, FAST_DECAY * state.loss_fast + (1 - FAST_DECAY) * f)
    slow = jnp.where(first, f, SLOW_DECAY * state.loss_slow + (1 - SLOW_DECAY) * f)
    keep = ok & jnp.all(jnp.isfinite(f))
    log_mass = state.log_mass
    if log_ratios is not None:
        r = jnp.asarray(log_ratios, log_mass.dtype)
        # NaN marks a draw without V's value (not evaluated this step): the mean is over the others
        seen = ~jnp.isnan(r)
        mass = logsumexp(jnp.where(seen, r, -jnp.inf), 1) - jnp.log(jnp.sum(seen, 1))
        # a running mean of the estimates themselves (not of their logs, which would be biased low)
        averaged = jnp.logaddexp(jnp.log(MASS_DECAY) + log_mass, jnp.log1p(-MASS_DECAY) + mass)
        averaged = jnp.where(jnp.isnan(log_mass), mass, averaged)
        log_mass = jnp.where(keep & jnp.all(~jnp.isnan(mass)), averaged, log_mass)
    return state._replace(
        loss_fast=jnp.where(keep, fast, state.loss_fast),
        loss_slow=jnp.where(keep, slow, state.loss_slow),
        age=state.age + keep.astype(jnp.int32),
        log_mass=log_mass,
        steps=None if state.steps is None else state.steps + 1,
    )


def relocation_gap(dim: int, gap: float | None = None) -> float:
    """The relocation gap in nats: ``gap``, or 20 + sqrt(d) by default (see the module docstring)."""
    return MIN_GAP + dim**0.5 if gap is None else gap


def metric_shares(state: RelocationState, gap: float) -> jax.Array:
    """(N,) weights of the components in the shared metric's step: equal among the components whose
    running loss lies within ``gap`` nats of the best one's (or that have none yet), 0 for the others.

    A component that far above the best sits where the target has next to no mass: a scout or a restart
    still travelling, or a start deep in a tail. Its draws see another curvature, with gradients that can
    be orders of magnitude larger, and with its 1/N share of the Stein matrix it would pull the one shape
    that every component uses towards its own region's (on a 26-d regression with correlated predictors,
    scouts kept the others 15-20 nats from the mode after 2000 steps). Whether it moves, and where to, is
    decided by its own step and by :func:`relocate`; the shared shape is learned from where q's mass is."""
    f = state.loss_fast
    best = jnp.min(jnp.where(jnp.isnan(f), jnp.inf, f))
    carries = (jnp.isnan(f) | (f - best <= gap)).astype(f.dtype)
    return carries / jnp.sum(carries)


def dead_components(state: RelocationState, gap: float, patience: int, min_age: int) -> tuple[jax.Array, jax.Array]:
    """Which components to relocate (N,) bool, and the index of the best component."""
    mature = state.age >= min_age
    best = jnp.argmin(jnp.where(mature, state.loss_fast, jnp.inf))
    excess = state.loss_fast - state.loss_fast[best]
    rate = (state.loss_slow - state.loss_fast) / TREND_LAG  # nats per step it is improving by
    stalled = rate * _horizon(state, patience) < excess
    return mature & mature[best] & (excess > gap) & stalled, best


def _horizon(state: RelocationState, patience: int) -> jax.Array | int:
    """The steps a component may take to close its gap: ``patience``, or fewer when the run ends sooner
    (``state.end``, set by :func:`mixvi.vi.explore_until`; 0 = not known). A component still travelling
    when the run ends would end it where it carries no mass and pulls every moment towards itself."""
    if state.end is None or state.steps is None:
        return patience
    left = state.end - state.steps
    # past the end (a run continued from this state): back to patience
    return jnp.where(left > 0, jnp.minimum(left, patience), patience)


def relocate(
    rng_key: jax.Array,
    locs: jax.Array,
    log_scales: jax.Array,
    state: RelocationState,
    *,
    gap: float | None = None,
    patience: int = 500,
    min_age: int = 100,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
    force: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, RelocationState, jax.Array]:
    """Restart every dead component as a draw from the best one (see the module docstring).

    Parameters
    ----------
    rng_key : jax.Array or None
        Key of the restart draws (unused, and may be None, when ``noise`` gives them).
    locs, log_scales : jax.Array
        m (N, d) and log sigma (N,).
    state : RelocationState
        The running averages.
    gap : float, optional
        Nats above the best component's loss past which a stalled component is dead; default
        20 + sqrt(d).
    patience : int
        A component closing its gap within this many steps (at its current rate) is left alone.
    min_age : int
        Steps a component lives before it can be relocated or be the best.
    metric, scale_tril : jax.Array, optional
        The shared diagonal (D) or dense (L) metric: restart draws are m_best + sigma_best D^(1/2) z
        or m_best + sigma_best L z.
    force : jax.Array, optional
        (N,) bool: components to restart whatever their loss (their draws hit a non-finite target);
        the best is then chosen among the others.
    noise : jax.Array, optional
        (N, d) standard-normal rows (of the step's noise, :func:`noise_rows`): component i restarts at
        row i instead of a fresh draw.

    Returns
    -------
    tuple
        New locs, new log scales, the new state and the number of relocated components.
    """
    n, d = locs.shape
    gap = relocation_gap(d, gap)
    # a sigma below COLLAPSE_RATIO of the median is a collapse (a component sliding down a slope with no
    # mode, or shrinking faster than it can travel), not a fit: it restarts too
    forced = log_scales < jnp.median(log_scales) + jnp.log(COLLAPSE_RATIO)
    # a mature component with next to no mass (NaN: not estimated, or no mass tracking: never starved)
    mass = state.log_mass
    heaviest = jnp.max(jnp.where(jnp.isfinite(mass), mass, -jnp.inf))
    forced = forced | ((state.age >= min_age) & (mass < heaviest + jnp.log(STARVED_RATIO)))
    if force is not None:
        forced = forced | force
    # the forced ones cannot be the best (a forced one's running loss may come from this step's garbage)
    state = state._replace(loss_fast=jnp.where(forced, jnp.inf, state.loss_fast))
    dead, best = dead_components(state, gap, patience, min_age)
    dead = dead | forced

    # the restart draws: computed every step, a select rather than a branch (a branch's operands and
    # results cost kernels of their own to compile; the draws are O(N d), beside the step's N B gradients)
    z = standard_normal(noise, rng_key, (n, d), locs.dtype)
    fresh = draw_points(locs[best][None], log_scales[best][None], z[None], metric, scale_tril)[0]
    new_locs, new_log_scales = jnp.where(dead[:, None], fresh, locs), jnp.where(dead, log_scales[best], log_scales)
    new_state = state._replace(
        loss_fast=jnp.where(dead, state.loss_fast[best], state.loss_fast),
        loss_slow=jnp.where(dead, state.loss_slow[best], state.loss_slow),
        age=jnp.where(dead, 0, state.age),
        log_mass=jnp.where(dead, jnp.nan, state.log_mass),  # a restarted component's mass is estimated afresh
    )
    return new_locs, new_log_scales, new_state, jnp.sum(dead).astype(jnp.int32)


def within_reach(white_a, sigma_a, white_b, sigma_b, reach: float) -> jax.Array:
    """(A, B) bool: point a_i lies within reach sqrt(d) max(sigma_a_i, sigma_b_j) of b_j, both given in the
    metric's whitened coordinates ((A, d) and (B, d), with their sigmas (A,) and (B,))."""
    d2 = jnp.sum(white_a**2, 1)[:, None] + jnp.sum(white_b**2, 1)[None, :] - 2 * white_a @ white_b.T
    limit = (reach * jnp.maximum(sigma_a[:, None], sigma_b[None, :])) ** 2 * white_a.shape[1]
    return jnp.maximum(d2, 0.0) < limit


def basin_neighbours(locs, log_scales, metric, scale_tril, reach) -> jax.Array:
    """(N, N) bool: component j's mean lies within reach sqrt(d) max(sigma_i, sigma_j) of component
    i's in the metric's whitened coordinates (the two share a basin); False on the diagonal."""
    white, _ = whiten(locs, metric, scale_tril)
    sig = jnp.exp(log_scales)
    return within_reach(white, sig, white, sig, reach) & ~jnp.eye(locs.shape[0], dtype=bool)


def basins(close: jax.Array) -> jax.Array:
    """(N, N) bool: components i and j lie in one basin, the transitive closure of ``close``
    (:func:`basin_neighbours`) with the diagonal: a chain of neighbours along a curved mode is one basin.
    By repeated squaring, ceil(log2 N) products of (N, N) matrices."""
    n = close.shape[0]
    reach = (close | jnp.eye(n, dtype=bool)).astype(jnp.float32)
    # a loop, not unrolled products: one product's code to compile
    reach = jax.lax.fori_loop(0, max(1, (n - 1).bit_length()), lambda _, r: (r @ r > 0).astype(r.dtype), reach)
    return reach > 0


def basin_structure(locs, log_scales, metric=None, scale_tril=None) -> tuple[jax.Array, jax.Array]:
    """(neighbours, basins): :func:`basin_neighbours` at :data:`NEIGHBOUR_REACH` and their transitive
    closure :func:`basins`, both (N, N) bool."""
    close = basin_neighbours(locs, log_scales, metric, scale_tril, NEIGHBOUR_REACH)
    return close, basins(close)


def several_basins(
    locs: jax.Array,
    log_scales: jax.Array,
    state: RelocationState,
    *,
    min_age: int = RECEIVE_AGE,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
    same: jax.Array | None = None,
) -> jax.Array:
    """True when the components that could take part in a move between basins (at least ``min_age``
    steps old, :func:`balance`'s ``receive_age``, with a mass estimate) lie in more than one basin and
    the run is not in its quiet phase: the steps on which the importance masses can decide a move.
    A scout sent this step or still travelling does not count (it has no say until it has settled).
    ``same``: the basins of (``locs``, ``log_scales``) when the caller has them (:func:`basin_structure`)."""
    able = (state.age >= min_age) & jnp.isfinite(state.log_mass)
    if same is None:
        same = basin_structure(locs, log_scales, metric, scale_tril)[1]
    apart = able[:, None] & able[None, :] & ~same
    return jnp.any(apart) & ~quiet_phase(state)


def quiet_phase(state: RelocationState, fraction: float = BALANCE_QUIET) -> jax.Array:
    """True over the last ``fraction`` (default :data:`BALANCE_QUIET`) of a run whose end is known
    (``state.end`` > 0)."""
    if state.end is None or state.steps is None:
        return jnp.zeros((), bool)
    start = state.end - jnp.ceil(fraction * state.end).astype(state.end.dtype)
    return (state.end > 0) & (state.steps >= start)


def balance(
    rng_key: jax.Array,
    locs: jax.Array,
    log_scales: jax.Array,
    state: RelocationState,
    *,
    ratio: float = BALANCE_RATIO,
    margin: float = BALANCE_MARGIN,
    min_age: int = 300,
    receive_age: int = RECEIVE_AGE,
    patience: int = 500,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
    noise: jax.Array | None = None,
    structure: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array, RelocationState, jax.Array]:
    """Move one component from the most over-served basin to the most under-served one when that brings
    the counts closer to the basins' masses (see the module docstring).

    Parameters
    ----------
    rng_key : jax.Array or None
        Key of the restart draw (unused, and may be None, when ``noise`` gives it).
    locs, log_scales : jax.Array
        m (N, d) and log sigma (N,).
    state : RelocationState
        The running averages, with the importance masses.
    ratio : float
        Mass ratio (> 1) between the most and the least loaded mature component below which nothing is
        looked at (the basins are only computed on steps where a move could happen).
    margin : float
        A move is made when the receiving basin's deficit plus the giving basin's surplus (in components)
        exceeds 1 + ``margin``: it then lowers the squared count error by at least 2 ``margin``.
    min_age : int
        Steps the moving component must have lived since its last (re)start.
    receive_age : int
        Steps the component it restarts on must have lived: fewer, so that a basin found late grows
        by a split every ``receive_age`` steps (a split leaves its basin's mass estimate as it was).
    patience : int
        Both components must have settled: their running loss changing by less than one nat over
        this many steps.
    metric, scale_tril : jax.Array, optional
        The shared diagonal (D) or dense (L) metric, as in :func:`relocate`.
    noise : jax.Array, optional
        One standard-normal row (d,) (of the step's noise, :func:`noise_rows`) for the split's restart
        instead of a fresh draw.
    structure : tuple, optional
        (neighbours, basins) to decide by (:func:`basin_structure`) instead of those of ``locs``: a step of
        :func:`mixvi.vi.step` passes the basins of the components its importance masses were estimated
        with (the step's start), which :func:`several_basins` computed already.

    Returns
    -------
    tuple
        New locs, new log scales, the new state and the number of moved components (0 or 1).
    """
    n = locs.shape[0]
    index = jnp.arange(n)
    mass = state.log_mass
    known = jnp.isfinite(mass)
    # only components that have settled: one still travelling to its basin carries little mass yet
    settled = jnp.abs(state.loss_slow - state.loss_fast) / TREND_LAG * patience < 1.0
    ready = (state.age >= min_age) & known & settled
    takes = (state.age >= receive_age) & known & settled
    spread = jnp.max(jnp.where(takes, mass, -jnp.inf)) - jnp.min(jnp.where(ready, mass, jnp.inf))

    def plan(_):
        close, same = basin_structure(locs, log_scales, metric, scale_tril) if structure is None else structure
        share = jnp.where(known, jnp.exp(mass - jnp.max(jnp.where(known, mass, -jnp.inf))), 0.0)
        basin_mass = same.astype(share.dtype) @ share
        count = jnp.sum(same & known[None, :], 1).astype(share.dtype)
        # the count each basin should have: its share of the estimated mass, in components
        target = jnp.sum(known) * basin_mass / jnp.sum(share)
        receiver = jnp.argmax(jnp.where(takes, target - count, -jnp.inf))
        hi = jnp.argmax(jnp.where(same[receiver] & takes, mass, -jnp.inf))
        # from another basin, where it has company: its basin keeps being served
        give = ready & ~same[hi] & (count >= 2)
        donor = jnp.argmax(jnp.where(give, count - target, -jnp.inf))
        lo = jnp.argmin(jnp.where(same[donor] & give, mass, jnp.inf))
        gain = (target[hi] - count[hi]) + (count[lo] - target[lo])
        # no move between basins in the run's last part (their counts are what the run returns)
        between = takes[hi] & give[lo] & (gain > 1.0 + margin) & ~quiet_phase(state)
        # otherwise, inside one basin that is a chain (a curved or stretched mode): from the least loaded
        # component to the most loaded one that is not its neighbour, the region q covers least
        top = jnp.argmax(jnp.where(ready, mass, -jnp.inf))
        far = ready & same[top] & ~close[top] & (index != top)
        low = jnp.argmin(jnp.where(far, mass, jnp.inf))
        within = ready[top] & far[low] & (mass[top] - mass[low] > jnp.log(CHAIN_RATIO)) & ~quiet_phase(state, CHAIN_QUIET)
        hi, lo = jnp.where(between, hi, top), jnp.where(between, lo, low)
        move = between | within
        # every basin's estimate stays its total: the components left where lo was now share its part too
        # (inside a chain the pair keeps hi's part, so the others share lo's)
        left = same[lo] & (index != lo) & (index != hi) & known
        rest = basin_mass[lo] - jnp.where(same[lo, hi], share[hi], 0.0)
        keep = jnp.log(rest) - jnp.log(rest - share[lo])
        return move, hi.astype(jnp.int32), lo.astype(jnp.int32), jnp.where(left & move, keep, 0.0)

    def idle(_):
        return jnp.zeros((), bool), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros_like(mass)

    # the basins (O(N^2 d) and log2 N products of (N, N) matrices) only where masses differ at all
    worth = jnp.any(takes) & jnp.any(ready)
    move, hi, lo, rescale = jax.lax.cond(worth & (spread > jnp.log(ratio)), plan, idle, None)
    moved = (index == lo) & move
    pair = moved | ((index == hi) & move)

    # the split's restart draw (one row): computed every step, a select rather than a branch (fewer kernels)
    z = standard_normal(noise, rng_key, locs.shape[1:], locs.dtype)
    fresh = draw_points(locs[hi][None], log_scales[hi][None], z[None, None], metric, scale_tril)[0, 0]
    new_locs, new_log_scales = jnp.where(moved[:, None], fresh, locs), jnp.where(moved, log_scales[hi], log_scales)
    new_state = state._replace(
        loss_fast=jnp.where(moved, state.loss_fast[hi], state.loss_fast),
        loss_slow=jnp.where(moved, state.loss_slow[hi], state.loss_slow),
        age=jnp.where(pair, 0, state.age),
        # the two share hi's mass; the basin lo left keeps its total
        log_mass=jnp.where(pair, state.log_mass[hi] - jnp.log(2.0), state.log_mass + rescale),
    )
    return new_locs, new_log_scales, new_state, move.astype(jnp.int32)
