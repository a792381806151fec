"""What one evaluation of a model's potential costs, and the two choices it settles: ``loss_draws='auto'``
and ``n_components='auto'``.

A step of :class:`mixvi.MixVI` needs grad V at all N B draws, and V's value only for its loss. Taking the
value at one draw per component (``loss_draws=1``) puts two copies of V in the compiled step (V alone at
those N points, ``grad`` at all N B in one batch: split into ``value_and_grad`` on N points and ``grad`` on
the rest, the small batch cost far more than its share on a 2-core Intel CPU, 6.7-7.0 ms a step against
4.9-5.3 at d = 1000, N = 20, 2026-12-07); taking it everywhere (``loss_draws=None``) puts one, but every
point then pays for V's value as well as its gradient. Which is cheaper depends on V:

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

That is the rule without ``MixVI``'s mass-covering tilt. With it (the default) ``MixVI`` takes every draw
whatever V costs: the tilt needs V's value at every draw in the second half of a run, so one draw in the
first half puts three copies of V in the step (``value_and_grad`` on the first draws, and behind a
``lax.cond`` ``value_and_grad`` or ``grad`` alone on the others), whose compilation costs more than the
first half saves on 2000-step runs. Measured in fresh processes (2-core CPU, 2026-12-04, 13:30 UTC,
set-up + a 2000-step run, two processes each, every draw / one draw): diamonds 5.11, 4.74 / 5.58, 5.27 s;
gp_pois_regr 5.42, 4.83 / 6.27, 6.02 s; the breast-cancer logistic regression 4.37, 3.54 / 4.45, 3.54 s;
a logistic regression with d = 1000 on 2000 rows 10.85, 11.91 / 12.52, 10.90 s (the step itself is about
5 % cheaper in the first half with one draw there: 11.95 against 12.50 ms at N = 100).

The number of components N is settled the same way (``AutoIsotropicMixture(n_components='auto')``, the
default): :data:`CHEAP_MODEL_COMPONENTS` = 20 when V costs less than :data:`COMPONENTS_MAX_COST`, else
:data:`HEAVY_MODEL_COMPONENTS` = 10. A step evaluates grad V at N B points, so on a cheap V the step is
mostly the mixture's own work and the run mostly compilation, and 20 components cost little more wall
time than 10; on a data-heavy V the step's cost doubles with N. The posteriors differ too: 20
components were closer to the reference on the quality suite's cheap models (banana, baseball, eight
schools, gp_pois_regr, the rotated Gaussian: V costs 40-2e4 flop equivalents), and no closer on the
data-heavy ones (breast-cancer logistic regression 9e4, diamonds 6e5), whose many observations make
the posterior nearly Gaussian (docs/benchmarks.md, "Number of components").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp

from mixvi.loop import TRACER_ERRORS, new_cache, remember, split_operands
from mixvi.vi import DEFAULT_COMPONENTS

ALL_DRAWS_MAX_COST = 1e4
"""``loss_draws='auto'`` takes V at every draw when one value-and-gradient of V costs fewer flop
equivalents than this (eight schools: ~400; a logistic regression on 455 rows and 31 features: ~8e4)."""
COMPONENTS_MAX_COST = 3e4
"""``n_components='auto'`` takes :data:`CHEAP_MODEL_COMPONENTS` below this cost of one value-and-gradient of
V, :data:`HEAVY_MODEL_COMPONENTS` at or above it (baseball's logit: ~2e4; a hierarchical logistic
regression on 500 rows: ~4e4)."""
CHEAP_MODEL_COMPONENTS = DEFAULT_COMPONENTS  # the functional core's default N (20)
HEAVY_MODEL_COMPONENTS = 10
TRANSCENDENTAL_FLOPS = 10.0
"""Flop equivalents of one transcendental (exp, log, ...) in the cost above."""

_COSTS: OrderedDict[Hashable, float | None] = new_cache()


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


def model_cost(
    cache_key: Hashable | None, potential_of: Callable[..., Callable], dim: int, dtype: Any, args: tuple, kwargs: dict
) -> float | None:
    """:func:`value_and_grad_cost`, kept per ``cache_key`` (None: not kept), the data's shapes and the
    static arguments, so that the guide's and the engine's choices lower V once."""
    operands, static, _ = split_operands(args, kwargs)
    shapes = tuple((tuple(jnp.shape(x)), str(jnp.result_type(x))) for x in operands)
    full = None if cache_key is None or static is None else (cache_key, static, shapes, dim, str(dtype))
    if full is not None and full in _COSTS:
        return _COSTS[full]
    cost = value_and_grad_cost(potential_of, dim, dtype, args, kwargs)
    if full is not None:
        remember(_COSTS, full, cost)
    return cost


def choose_loss_draws(
    cache_key: Hashable | None, potential_of: Callable[..., Callable], dim: int, dtype: Any, args: tuple, kwargs: dict
) -> int | None:
    """``loss_draws`` for ``'auto'``: None (every draw) when V is cheap (see the module docstring), else 1;
    1 when XLA gives no cost."""
    cost = model_cost(cache_key, potential_of, dim, dtype, args, kwargs)
    return None if cost is not None and cost < ALL_DRAWS_MAX_COST else 1


def choose_components(
    cache_key: Hashable | None, potential_of: Callable[..., Callable], dim: int, dtype: Any, args: tuple, kwargs: dict
) -> int:
    """``n_components`` for ``'auto'``: :data:`CHEAP_MODEL_COMPONENTS` when V costs less than
    :data:`COMPONENTS_MAX_COST` (see the module docstring), else :data:`HEAVY_MODEL_COMPONENTS`; the
    larger when XLA gives no cost."""
    cost = model_cost(cache_key, potential_of, dim, dtype, args, kwargs)
    return HEAVY_MODEL_COMPONENTS if cost is not None and cost >= COMPONENTS_MAX_COST else CHEAP_MODEL_COMPONENTS
