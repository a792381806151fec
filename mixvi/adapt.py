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
mean m_best + sigma_best L z, the same sigma. N, the parameter shapes and the uniform weights do
not change, so ``get_params``, ``Predictive`` and checkpoints are unaffected. Learned weights have
their own remedy (the weight step sends them to zero) and are not relocated.

This module depends on JAX only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

FAST_DECAY = 0.9
SLOW_DECAY = 0.99
# lag between the two running averages of a linear trend: 1 / (1 - 0.99) - 1 / (1 - 0.9) steps
TREND_LAG = 1.0 / (1.0 - SLOW_DECAY) - 1.0 / (1.0 - FAST_DECAY)
MIN_GAP = 20.0


class RelocationState(NamedTuple):
    """Per-component running averages of the loss f_i (fast and slow; NaN before the first step)
    and the steps since each component's last (re)start."""

    loss_fast: jax.Array
    loss_slow: jax.Array
    age: jax.Array


def init_relocation(n_components: int, dtype=jnp.float32) -> RelocationState:
    """The state before the first step."""
    nan = jnp.full((n_components,), jnp.nan, dtype)
    return RelocationState(nan, nan, jnp.zeros((n_components,), jnp.int32))


def track(state: RelocationState, component_loss: jax.Array, ok: jax.Array) -> RelocationState:
    """Fold this step's per-component losses into the running averages (skipped on a rejected step)."""
    f = jnp.asarray(component_loss, state.loss_fast.dtype)
    first = jnp.isnan(state.loss_fast)
    fast = jnp.where(first, f, FAST_DECAY * state.loss_fast + (1 - FAST_DECAY) * f)
    slow = jnp.where(first, f, SLOW_DECAY * state.loss_slow + (1 - SLOW_DECAY) * f)
    keep = ok & jnp.all(jnp.isfinite(f))
    return RelocationState(
        jnp.where(keep, fast, state.loss_fast), jnp.where(keep, slow, state.loss_slow), state.age + keep.astype(jnp.int32)
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
    z = jax.random.normal(rng_key, (n, d), locs.dtype)
    if metric is not None:
        z = z * jnp.sqrt(metric)
    if scale_tril is not None:
        z = z @ scale_tril.T
    fresh = locs[best] + jnp.exp(log_scales[best]) * z
    new_locs = jnp.where(dead[:, None], fresh, locs)
    new_log_scales = jnp.where(dead, log_scales[best], log_scales)
    new_state = RelocationState(
        jnp.where(dead, state.loss_fast[best], state.loss_fast),
        jnp.where(dead, state.loss_slow[best], state.loss_slow),
        jnp.where(dead, 0, state.age),
    )
    return new_locs, new_log_scales, new_state, jnp.sum(dead).astype(jnp.int32)
