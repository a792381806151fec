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
  the slow one) it would need more than ``patience`` steps, and
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
normalising constant cancels between components). With uniform weights each component should carry
1/N; when the most loaded component carries more than :data:`BALANCE_RATIO` times the least loaded
one, the least loaded restarts as a draw from the most loaded (a split: the two then share that
basin's mass). Both must have lived ``min_age`` steps and settled (a component still travelling to
its basin carries little mass yet), and the least loaded one must share its basin with another
component (its mean within :data:`NEIGHBOUR_REACH` sqrt(d) sigma of another's in the whitened
coordinates): the importance estimate of a component alone on a mode it fits poorly is low for a long
time (its weights are heavy-tailed), and taking it away would lose the mode. One move per step at most. This moves components from over-served
to under-served modes until the counts follow the masses to within the ratio; on a unimodal target
the estimates agree to within the ratio and nothing moves.

N, the parameter shapes and the uniform weights never change, so ``get_params``, ``Predictive`` and
checkpoints are unaffected. Learned weights have their own remedy (the weight step sends them to
zero) and are neither relocated nor balanced.

This module depends on JAX only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

FAST_DECAY = 0.9
SLOW_DECAY = 0.99
# lag between the two running averages of a linear trend: 1 / (1 - 0.99) - 1 / (1 - 0.9) steps
TREND_LAG = 1.0 / (1.0 - SLOW_DECAY) - 1.0 / (1.0 - FAST_DECAY)
MIN_GAP = 20.0
MASS_DECAY = 0.995
"""Decay of the running importance-mass estimates (an average over about 200 steps)."""
NEIGHBOUR_REACH = 2.0
"""Two components share a basin when their means are within this many sqrt(d) sigma (whitened)."""
BALANCE_RATIO = 1.5
"""A split moves the least loaded component onto the most loaded one when their mass estimates differ
by more than this factor (1.5 does not oscillate between two basins served by three or more components)."""


class RelocationState(NamedTuple):
    """Per-component running averages of the loss f_i (fast and slow; NaN before the first step), the
    steps since each component's last (re)start, and the log of the running importance-mass estimate
    (NaN until the first step; unnormalised: only differences between components mean anything)."""

    loss_fast: jax.Array
    loss_slow: jax.Array
    age: jax.Array
    log_mass: jax.Array


def init_relocation(n_components: int, dtype=jnp.float32) -> RelocationState:
    """The state before the first step."""
    nan = jnp.full((n_components,), jnp.nan, dtype)
    return RelocationState(nan, nan, jnp.zeros((n_components,), jnp.int32), nan)


def track(
    state: RelocationState, component_loss: jax.Array, ok: jax.Array, log_ratios: jax.Array | None = None
) -> RelocationState:
    """Fold this step's per-component losses (and, given ``log_ratios`` = log p - log q at draws of
    every component, shape (N, L), the importance masses) into the running averages; a rejected step
    or a non-finite value leaves them as they were."""
    f = jnp.asarray(component_loss, state.loss_fast.dtype)
    first = jnp.isnan(state.loss_fast)
    fast = jnp.where(first, f, FAST_DECAY * state.loss_fast + (1 - FAST_DECAY) * f)
    slow = jnp.where(first, f, SLOW_DECAY * state.loss_slow + (1 - SLOW_DECAY) * f)
    keep = ok & jnp.all(jnp.isfinite(f))
    log_mass = state.log_mass
    if log_ratios is not None:
        r = jnp.asarray(log_ratios, log_mass.dtype)
        mass = logsumexp(r, 1) - jnp.log(r.shape[1])
        # a running mean of the estimates themselves (not of their logs, which would be biased low)
        averaged = jnp.logaddexp(jnp.log(MASS_DECAY) + log_mass, jnp.log1p(-MASS_DECAY) + mass)
        averaged = jnp.where(jnp.isnan(log_mass), mass, averaged)
        log_mass = jnp.where(keep & jnp.all(~jnp.isnan(mass)), averaged, log_mass)
    return RelocationState(
        jnp.where(keep, fast, state.loss_fast),
        jnp.where(keep, slow, state.loss_slow),
        state.age + keep.astype(jnp.int32),
        log_mass,
    )


def dead_components(state: RelocationState, gap: float, patience: int, min_age: int) -> tuple[jax.Array, jax.Array]:
    """Which components to relocate (N,) bool, and the index of the best component."""
    mature = state.age >= min_age
    best = jnp.argmin(jnp.where(mature, state.loss_fast, jnp.inf))
    excess = state.loss_fast - state.loss_fast[best]
    rate = (state.loss_slow - state.loss_fast) / TREND_LAG  # nats per step it is improving by
    stalled = rate * patience < excess
    return mature & mature[best] & (excess > gap) & stalled, best


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
) -> tuple[jax.Array, jax.Array, RelocationState, jax.Array]:
    """Restart every dead component as a draw from the best one (see the module docstring).

    Parameters
    ----------
    rng_key : jax.Array
        Key of the restart draws.
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

    Returns
    -------
    tuple
        New locs, new log scales, the new state and the number of relocated components.
    """
    n, d = locs.shape
    gap = MIN_GAP + d**0.5 if gap is None else gap
    dead, best = dead_components(state, gap, patience, min_age)
    z = _metric_noise(rng_key, (n, d), locs.dtype, metric, scale_tril)
    fresh = locs[best] + jnp.exp(log_scales[best]) * z
    new_locs = jnp.where(dead[:, None], fresh, locs)
    new_log_scales = jnp.where(dead, log_scales[best], log_scales)
    new_state = RelocationState(
        jnp.where(dead, state.loss_fast[best], state.loss_fast),
        jnp.where(dead, state.loss_slow[best], state.loss_slow),
        jnp.where(dead, 0, state.age),
        jnp.where(dead, jnp.nan, state.log_mass),  # a restarted component's mass is estimated afresh
    )
    return new_locs, new_log_scales, new_state, jnp.sum(dead).astype(jnp.int32)


def _metric_noise(rng_key, shape, dtype, metric, scale_tril) -> jax.Array:
    """Standard normal draws shaped by the shared metric: D^(1/2) z or L z."""
    z = jax.random.normal(rng_key, shape, dtype)
    if metric is not None:
        z = z * jnp.sqrt(metric)
    if scale_tril is not None:
        z = z @ scale_tril.T
    return z


def _has_neighbour(locs, log_scales, metric, scale_tril, reach) -> jax.Array:
    """(N,) bool: another component's mean lies within reach sqrt(d) max(sigma_i, sigma_j) in the
    metric's whitened coordinates (the two share a basin; a component alone in its basin is never
    taken away from it)."""
    white = locs
    if metric is not None:
        white = locs / jnp.sqrt(metric)
    if scale_tril is not None:
        white = jax.scipy.linalg.solve_triangular(scale_tril, locs.T, lower=True).T
    sq = jnp.sum(white**2, 1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * white @ white.T, 0.0)
    sig = jnp.exp(log_scales)
    limit = (reach * jnp.maximum(sig[:, None], sig[None, :])) ** 2 * locs.shape[1]
    close = (d2 < limit) & ~jnp.eye(locs.shape[0], dtype=bool)
    return jnp.any(close, 1)


def balance(
    rng_key: jax.Array,
    locs: jax.Array,
    log_scales: jax.Array,
    state: RelocationState,
    *,
    ratio: float = BALANCE_RATIO,
    min_age: int = 300,
    patience: int = 500,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, RelocationState, jax.Array]:
    """Split the most loaded component onto the least loaded one when their masses differ by more
    than ``ratio`` (see the module docstring).

    Parameters
    ----------
    rng_key : jax.Array
        Key of the restart draw.
    locs, log_scales : jax.Array
        m (N, d) and log sigma (N,).
    state : RelocationState
        The running averages, with the importance masses.
    ratio : float
        Mass ratio (> 1) between the most and the least loaded mature component that triggers a split.
    min_age : int
        Steps both components must have lived since their last (re)start.
    patience : int
        Both components must have settled: their running loss changing by less than one nat over
        this many steps.
    metric, scale_tril : jax.Array, optional
        The shared diagonal (D) or dense (L) metric, as in :func:`relocate`.

    Returns
    -------
    tuple
        New locs, new log scales, the new state and the number of moved components (0 or 1).
    """
    mass = state.log_mass
    # only components that have settled: one still travelling to its basin carries little mass yet
    settled = jnp.abs(state.loss_slow - state.loss_fast) / TREND_LAG * patience < 1.0
    ready = (state.age >= min_age) & jnp.isfinite(mass) & settled
    hi = jnp.argmax(jnp.where(ready, mass, -jnp.inf))
    shared = _has_neighbour(locs, log_scales, metric, scale_tril, NEIGHBOUR_REACH)
    lo = jnp.argmin(jnp.where(ready & shared, mass, jnp.inf))
    move = ready[hi] & ready[lo] & shared[lo] & (mass[hi] - mass[lo] > jnp.log(ratio))
    z = _metric_noise(rng_key, locs.shape[1:], locs.dtype, metric, scale_tril)
    moved = (jnp.arange(locs.shape[0]) == lo) & move
    pair = moved | ((jnp.arange(locs.shape[0]) == hi) & move)
    new_locs = jnp.where(moved[:, None], locs[hi] + jnp.exp(log_scales[hi]) * z, locs)
    new_log_scales = jnp.where(moved, log_scales[hi], log_scales)
    new_state = RelocationState(
        jnp.where(moved, state.loss_fast[hi], state.loss_fast),
        jnp.where(moved, state.loss_slow[hi], state.loss_slow),
        jnp.where(pair, 0, state.age),
        jnp.where(pair, state.log_mass[hi] - jnp.log(2.0), state.log_mass),  # the two share what one carried
    )
    return new_locs, new_log_scales, new_state, move.astype(jnp.int32)
