"""General gradient rules as optax ``GradientTransformation``s, and the glue that turns a loss and a
transform into a pure ``step(state) -> (state, loss)`` for :func:`mixvi.loop.scan_loop`.

* :func:`polyak_average` wraps any transform and keeps the Ruppert-Polyak average of the iterates,
  ``xbar_k = (1/k) sum_{i=1..k} x_i`` (Ruppert 1988; Polyak and Juditsky 1992), in its state;
  :func:`averaged_params` reads it back. The updates themselves are unchanged.
* :func:`precondition` applies a parameter-dependent linear map to the updates,
  ``u <- G(x)^{-1} u``, given a function ``solve(params, u)`` (a Riemannian / natural gradient for
  the metric G, e.g. the pullback metric ``G = I + DPsi^T DPsi`` of a reduction mapping).
* :func:`armijo_descent` is steepest descent with a backtracking (Armijo) line search,
  ``x <- x - t g`` with ``f(x - t g) <= f(x) - c t <g, g>`` (Armijo 1966), built from
  ``optax.sgd(1)`` and ``optax.scale_by_backtracking_linesearch``.
* :func:`descent_step` / :func:`run_descent` run a deterministic objective with any transform,
  passing ``value``, ``grad`` and ``value_fn`` so that line-search transforms work unchanged.

Plain constant-step gradient descent ``x <- x - eta g`` is ``optax.sgd(eta)``; with
``optax.inject_hyperparams(optax.sgd)(learning_rate=eta)`` the step lives in the state, so a batch
of runs with different steps can be ``jax.vmap``-ed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mixvi.loop import LoopResult, scan_loop


class PolyakState(NamedTuple):
    """State of :func:`polyak_average`: the wrapped transform's state, the running mean of the
    iterates after ``start`` steps, the number of iterates in that mean, and the step count."""

    inner: Any
    average: Any
    num_averaged: jax.Array
    count: jax.Array


def polyak_average(inner: optax.GradientTransformation, *, start: int = 0) -> optax.GradientTransformationExtraArgs:
    """Ruppert-Polyak averaging of the iterates produced by ``inner``.

    With ``x_{k+1} = x_k + u_k`` (``u_k`` the updates of ``inner``), the state keeps
    ``xbar = (1/m) sum_{i=start+1..k} x_i`` over the iterates after the first ``start`` steps
    (``start=0``: the classical average ``xbar_k = (1/k) sum_{i=1..k} x_i``), updated online by
    ``xbar <- xbar + (x_{k+1} - xbar)/m``. Before the first averaged iterate ``average`` equals the
    current params. ``update`` needs ``params``; the returned updates are those of ``inner``.
    """
    inner = optax.with_extra_args_support(inner)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")

    def init_fn(params: Any) -> PolyakState:
        z = jnp.zeros((), jnp.int32)
        return PolyakState(inner.init(params), jax.tree.map(jnp.asarray, params), z, z)

    def update_fn(updates: Any, state: PolyakState, params: Any = None, **extra: Any):
        if params is None:
            raise ValueError("polyak_average needs params: call update(grads, state, params)")
        updates, inner_state = inner.update(updates, state.inner, params, **extra)
        new_params = optax.apply_updates(params, updates)
        count = state.count + 1
        take = count > start
        m = state.num_averaged + take.astype(jnp.int32)
        w = jnp.where(take, 1.0 / jnp.maximum(m, 1), 0.0)
        average = jax.tree.map(lambda a, x: a + (w * (x - a)).astype(a.dtype), state.average, new_params)
        return updates, PolyakState(inner_state, average, m, count)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def averaged_params(opt_state: Any) -> Any:
    """The Ruppert-Polyak average held by the first :class:`PolyakState` inside ``opt_state``
    (which may be a chain's tuple of states)."""
    if isinstance(opt_state, PolyakState):
        return opt_state.average
    if isinstance(opt_state, tuple):
        for s in opt_state:
            try:
                return averaged_params(s)
            except ValueError:
                continue
    raise ValueError("no PolyakState found in the optimizer state (wrap the transform in polyak_average)")


def precondition(solve: Callable[[Any, Any], Any]) -> optax.GradientTransformationExtraArgs:
    """Precondition the updates by a parameter-dependent metric: ``u <- G(x)^{-1} u``.

    ``solve(params, u)`` must return ``G(params)^{-1} u`` for a symmetric positive definite G;
    chained before ``optax.sgd(eta)`` this is the Riemannian gradient step
    ``x <- x - eta G(x)^{-1} grad f(x)``. ``update`` needs ``params``.
    """

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None, **extra: Any):
        del extra
        if params is None:
            raise ValueError("precondition needs params: call update(grads, state, params)")
        return solve(params, updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def armijo_descent(
    max_step: float = 1.0,
    *,
    slope_rtol: float = 1e-4,
    decrease: float = 0.5,
    increase: float = 2.0,
    max_backtracking: int = 50,
) -> optax.GradientTransformationExtraArgs:
    """Steepest descent with Armijo backtracking: ``x <- x - t d`` with ``d`` the incoming direction
    (the gradient, or a preconditioned gradient when chained after :func:`precondition`) and ``t``
    the first of ``t0, decrease*t0, decrease^2*t0, ...`` with

        f(x - t d) <= f(x) - slope_rtol * t * <d, grad f(x)>,

    where ``t0 = min(increase * t_prev, max_step)`` (``t_prev`` the previous accepted step).
    ``update`` needs ``value=f(x)``, ``grad=grad f(x)`` and ``value_fn=f`` as keyword arguments
    (:func:`descent_step` passes them).
    """
    return optax.chain(
        optax.sgd(1.0),
        optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=max_backtracking,
            slope_rtol=slope_rtol,
            decrease_factor=decrease,
            increase_factor=increase,
            max_learning_rate=max_step,
        ),
    )


class DescentState(NamedTuple):
    """State of :func:`descent_step`: the parameters and the transform's state."""

    params: Any
    opt_state: Any


def descent_step(
    loss_fn: Callable[[Any], jax.Array], tx: optax.GradientTransformation
) -> Callable[[DescentState], tuple[DescentState, jax.Array]]:
    """A pure step for :func:`mixvi.loop.scan_loop`: ``step(DescentState(x, s))`` returns the state
    after ``x <- x + u`` with ``(u, s) = tx.update(grad f(x), s, x, value=f(x), grad=grad f(x),
    value_fn=f)``, and the loss ``f(x)`` *before* the step."""
    tx = optax.with_extra_args_support(tx)
    value_and_grad = jax.value_and_grad(loss_fn)

    def step(state: DescentState) -> tuple[DescentState, jax.Array]:
        value, grad = value_and_grad(state.params)
        updates, opt_state = tx.update(grad, state.opt_state, state.params, value=value, grad=grad, value_fn=loss_fn)
        return DescentState(optax.apply_updates(state.params, updates), opt_state), value

    return step


def run_descent(
    loss_fn: Callable[[Any], jax.Array],
    tx: optax.GradientTransformation,
    params: Any,
    num_steps: int,
    **loop_kwargs: Any,
) -> LoopResult:
    """Run ``num_steps`` of :func:`descent_step` from ``params`` with :func:`mixvi.loop.scan_loop`.
    ``losses[k]`` is ``f(x_k)`` (``x_0 = params``); ``state.params`` is ``x_{num_steps}``."""
    return scan_loop(descent_step(loss_fn, tx), DescentState(params, tx.init(params)), num_steps, **loop_kwargs)


__all__: Sequence[str] = (
    "DescentState",
    "PolyakState",
    "armijo_descent",
    "averaged_params",
    "descent_step",
    "polyak_average",
    "precondition",
    "run_descent",
)
