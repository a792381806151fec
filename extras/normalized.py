"""Group-normalised steps: RMSprop with ONE running average of the total squared gradient norm.

The "group RMSprop" of the deep matrix factorization literature (Arora, Cohen, Hu, Luo,
"Implicit Regularization in Deep Matrix Factorization", NeurIPS 2019, arXiv 1905.13655; used by
Alexander, Slutzky, Ran-Milo, Cohen, "Do Neural Networks Need Gradient Descent to Generalize? A
Theoretical Study", arXiv 2506.03931, for their gradient-descent runs) keeps a single scalar for
the whole parameter tree instead of one per coordinate:

    v_t   = beta v_{t-1} + (1 - beta) ||g_t||^2          (||g||^2 = sum over every leaf and entry)
    vhat  = v_t / (1 - beta^t)                            (bias correction; v_0 = 0)
    x_{t+1} = x_t - eta g_t / (sqrt(vhat) + eps)

so every step is a gradient-descent step, in the exact gradient direction, whose length adapts to
the recent gradient scale: a tiny gradient (a small initialisation near the saddle at 0, the flat
phase of a cross-entropy fit) no longer means a tiny step. With ``beta = 0`` it is normalised GD,
``x <- x - eta g / (||g|| + eps)``. Unlike ``optax.rmsprop`` (one average per coordinate, which
changes the direction and therefore the implicit bias), the direction is that of GD.

:func:`scale_by_group_rms` is the normalisation alone; :func:`group_rmsprop` chains it with the
learning rate (a float or an optax schedule), as ``optax.rmsprop`` does for the per-coordinate rule.
:func:`effective_step` reads back eta / (sqrt(vhat) + eps) of the last update.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class GroupRMSState(NamedTuple):
    """State of :func:`scale_by_group_rms`: the number of updates, the running average
    v = beta v + (1 - beta) ||g||^2 of the total squared gradient norm (a scalar), and the factor
    1 / (sqrt(vhat) + eps) applied by the last update (1 before the first)."""

    count: jax.Array
    square_avg: jax.Array
    scale: jax.Array


def _tree_dtype(tree: Any) -> Any:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.result_type(*leaves) if leaves else jnp.float32


def tree_sq_norm(tree: Any) -> jax.Array:
    """||g||^2 = sum of the squares of every entry of every leaf of ``tree``."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros(())
    return sum(jnp.sum(jnp.square(x)) for x in leaves)


def scale_by_group_rms(
    decay: float = 0.99, eps: float = 1e-6, *, bias_correction: bool = True
) -> optax.GradientTransformation:
    """u_t = g_t / (sqrt(v_t / (1 - decay^t)) + eps) with v_t = decay v_{t-1} + (1 - decay) ||g_t||^2.

    One scalar v for the whole tree (not per coordinate), so the update is parallel to the gradient.
    ``bias_correction=False`` uses v_t itself (then the first steps are longer by 1/sqrt(1 - decay^t)).
    ``decay=0`` gives the normalised gradient g / (||g|| + eps). Pure ``init``/``update``; ``params``
    is not needed.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must lie in [0, 1), got {decay}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    def init_fn(params: Any) -> GroupRMSState:
        dtype = _tree_dtype(params)
        return GroupRMSState(jnp.zeros((), jnp.int32), jnp.zeros((), dtype), jnp.ones((), dtype))

    def update_fn(updates: Any, state: GroupRMSState, params: Any = None) -> tuple[Any, GroupRMSState]:
        del params
        count = state.count + 1
        sq = tree_sq_norm(updates).astype(state.square_avg.dtype)
        v = decay * state.square_avg + (1.0 - decay) * sq
        vhat = v / (1.0 - decay ** count.astype(v.dtype)) if bias_correction else v
        scale = 1.0 / (jnp.sqrt(vhat) + eps)
        new_updates = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
        return new_updates, GroupRMSState(count, v, scale)

    return optax.GradientTransformation(init_fn, update_fn)


def group_rmsprop(
    learning_rate: optax.ScalarOrSchedule,
    decay: float = 0.99,
    eps: float = 1e-6,
    *,
    bias_correction: bool = True,
) -> optax.GradientTransformation:
    """Group-normalised RMSprop: x <- x - eta_t g_t / (sqrt(vhat_t) + eps) (see the module docstring).

    ``learning_rate`` is eta (a float or an optax schedule of the step count). The defaults
    (decay 0.99, eps 1e-6, bias correction) are those of the reference implementation of Arora et al.
    (arXiv 1905.13655) used by Alexander et al. (arXiv 2506.03931).
    """
    return optax.chain(
        scale_by_group_rms(decay, eps, bias_correction=bias_correction),
        optax.scale_by_learning_rate(learning_rate),
    )


def normalized_gd(learning_rate: optax.ScalarOrSchedule, eps: float = 1e-12) -> optax.GradientTransformation:
    """Normalised gradient descent x <- x - eta g / (||g|| + eps): :func:`group_rmsprop` with decay 0."""
    return group_rmsprop(learning_rate, decay=0.0, eps=eps)


def effective_step(opt_state: Any, learning_rate: float = 1.0) -> jax.Array:
    """The step length eta / (sqrt(vhat) + eps) of the last update (``learning_rate`` = eta), read
    from the first :class:`GroupRMSState` in ``opt_state`` (a chain's tuple of states is searched)."""
    state = _find_state(opt_state)
    if state is None:
        raise ValueError("no GroupRMSState found in the optimizer state")
    return learning_rate * state.scale


def _find_state(opt_state: Any) -> GroupRMSState | None:
    if isinstance(opt_state, GroupRMSState):
        return opt_state
    if isinstance(opt_state, tuple):
        for s in opt_state:
            found = _find_state(s)
            if found is not None:
                return found
    return None


__all__: Sequence[str] = (
    "GroupRMSState",
    "effective_step",
    "group_rmsprop",
    "normalized_gd",
    "scale_by_group_rms",
    "tree_sq_norm",
)
