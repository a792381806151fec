"""What one evaluation of a model's potential costs, and the choice it settles: ``loss_draws='auto'``.

A step of :class:`mixvi.MixVI` needs grad V at all N B draws, and V's value only for its loss. Taking the
value at one draw per component (``loss_draws=1``) puts two copies of V in the compiled step
(``value_and_grad`` on those N points, ``grad`` on the rest); taking it everywhere (``loss_draws=None``)
puts one, but every point then pays for V's value as well as its gradient. Which is cheaper depends on V:

* a small model (eight schools: a few hundred flops per point) costs next to nothing per point, its step is
  the mixture's own work, and a run is mostly compilation: with one copy of V the first run compiles
  faster. Measured on eight schools in fresh processes (2-core CPU, 2026-12-03): at N = 20 the first
  200-step run took a median 4.28 s with one loss draw and 3.20 s with all (3 processes each); at
  N = 10, set-up plus a first 500-step run took a median 7.11 s and 6.76 s (5 each; the machine's
  noise spread single runs over 5.5-8.4 s). Each step costs +0.01-0.03 ms;
* a data-heavy model (logistic regression, n = 2000 rows, d = 1000) pays for the value's extra
  transcendentals (the log-sigmoid of every row, which the gradient alone does not need): +10 % per step
  at N = 20 and +23 % at N = 100, for no compile saving worth the name (its V is one matrix product).

``'auto'`` reads V's cost off XLA's cost analysis of one ``value_and_grad`` (lowered, not compiled: tens
of milliseconds, once per model structure and data shapes) and takes every draw below
:data:`ALL_DRAWS_MAX_COST` flop equivalents, one draw above.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp

from mixvi.loop import TRACER_ERRORS, new_cache, remember, split_operands

ALL_DRAWS_MAX_COST = 1e4
"""``loss_draws='auto'`` takes V at every draw when one value-and-gradient of V costs fewer flop
equivalents than this (eight schools: ~400; a logistic regression on 455 rows and 31 features: ~8e4)."""
TRANSCENDENTAL_FLOPS = 10.0
"""Flop equivalents of one transcendental (exp, log, ...) in the cost above."""

_CHOICES: OrderedDict[Hashable, int | None] = new_cache()


def _cost_of(analysis: Any) -> float | None:
    """Flops plus weighted transcendentals from a ``cost_analysis()`` result (a dict, or a list of one
    in older JAX); None when XLA gives no estimate."""
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if not isinstance(analysis, dict) or "flops" not in analysis:
        return None
    cost = float(analysis["flops"]) + TRANSCENDENTAL_FLOPS * float(analysis.get("transcendentals", 0.0))
    return cost if cost >= 0 else None


def value_and_grad_cost(
    potential_of: Callable[..., Callable], dim: int, dtype: Any, args: tuple, kwargs: dict
) -> float | None:
    """Flop equivalents of one ``value_and_grad`` of ``potential_of(*args, **kwargs)`` (a V(z, key) on
    z of shape (dim,)), from XLA's cost analysis of the lowered program; None if XLA has none.

    The array arguments enter as abstract operands, so nothing is compiled or copied; a model that
    needs concrete data is lowered with its arguments as constants instead."""
    point = jax.ShapeDtypeStruct((dim,), dtype)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    operands, _, rebuild = split_operands(args, kwargs)
    abstract = [jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in operands]

    def vg(ops, z, k):
        a, kw = rebuild(list(ops))
        return jax.value_and_grad(potential_of(*a, **kw))(z, k)

    try:
        lowered = jax.jit(vg).lower(abstract, point, key)
    except TRACER_ERRORS:
        lowered = jax.jit(lambda z, k: jax.value_and_grad(potential_of(*args, **kwargs))(z, k)).lower(point, key)
    try:
        return _cost_of(lowered.cost_analysis())
    except Exception:  # noqa: BLE001 - a backend without cost analysis: no estimate
        return None


def choose_loss_draws(
    cache_key: Hashable | None, potential_of: Callable[..., Callable], dim: int, dtype: Any, args: tuple, kwargs: dict
) -> int | None:
    """``loss_draws`` for ``'auto'``: None (every draw) when V is cheap (see the module docstring), else 1;
    1 when XLA gives no cost. Kept per ``cache_key`` and the data's shapes (None: not kept)."""
    operands, static, _ = split_operands(args, kwargs)
    shapes = tuple((tuple(jnp.shape(x)), str(jnp.result_type(x))) for x in operands)
    full = None if cache_key is None or static is None else (cache_key, static, shapes, dim, str(dtype))
    if full is not None and full in _CHOICES:
        return _CHOICES[full]
    cost = value_and_grad_cost(potential_of, dim, dtype, args, kwargs)
    choice = None if cost is not None and cost < ALL_DRAWS_MAX_COST else 1
    if full is not None:
        remember(_CHOICES, full, choice)
    return choice
