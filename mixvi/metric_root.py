"""The square root of the shared metric, applied to rows: one place for every kind of metric.

Component i of the mixture has covariance sigma_i^2 A with A = R R^T, where the root R is

* the identity (``metric=None``, ``scale_tril=None``: the paper's isotropic components),
* D^(1/2) for a diagonal metric D (``metric`` an array (d,)),
* L, lower triangular, for a dense metric A = L L^T (``scale_tril`` (d, d)),
* T = D^(1/2) P for a low-rank-plus-diagonal metric (``metric`` a :class:`~mixvi.lowrank.LowRankMetric`).

The paper's steps run in the whitened coordinates y = R^(-1) x, where every component is isotropic; moving
between the two needs R y (draws, steps), R^T g (a gradient in x pulled back to y), R^(-1) x (means and points
whitened) and R^(-T) (a score in y pushed to x). Every function takes rows (..., d) and at most one of ``metric`` and ``scale_tril``.

This module depends on JAX and :mod:`mixvi.lowrank` only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from mixvi import lowrank as lr
from mixvi.lowrank import LowRankMetric

Metric = jax.Array | LowRankMetric | None


def apply(y: jax.Array, metric: Metric = None, scale_tril: jax.Array | None = None) -> jax.Array:
    """R y for rows y (..., d): whitened coordinates (or standard-normal noise) to x's scale."""
    if isinstance(metric, LowRankMetric):
        return lr.root_apply(metric, y)
    if metric is not None:
        return y * jnp.sqrt(metric)
    if scale_tril is not None:
        return y @ scale_tril.T
    return y


def transpose_apply(g: jax.Array, metric: Metric = None, scale_tril: jax.Array | None = None) -> jax.Array:
    """R^T g for rows g (..., d): the gradient in y of a function whose gradient in x is g."""
    if isinstance(metric, LowRankMetric):
        return lr.root_transpose_apply(metric, g)
    if metric is not None:
        return g * jnp.sqrt(metric)
    if scale_tril is not None:
        return g @ scale_tril
    return g


def solve(x: jax.Array, metric: Metric = None, scale_tril: jax.Array | None = None) -> jax.Array:
    """R^(-1) x for rows x (..., d): points in the whitened coordinates."""
    if isinstance(metric, LowRankMetric):
        return lr.root_solve(metric, x)
    if metric is not None:
        return x / jnp.sqrt(metric)
    if scale_tril is not None:
        flat = x.reshape(-1, x.shape[-1])
        return solve_triangular(scale_tril, flat.T, lower=True).T.reshape(x.shape)
    return x


def transpose_solve(s: jax.Array, metric: Metric = None, scale_tril: jax.Array | None = None) -> jax.Array:
    """R^(-T) s for rows s (..., d) (so that A^(-1) s = R^(-T) R^(-1) s)."""
    if isinstance(metric, LowRankMetric):
        return lr.root_transpose_solve(metric, s)
    if metric is not None:
        return s / jnp.sqrt(metric)
    if scale_tril is not None:
        flat = s.reshape(-1, s.shape[-1])
        return solve_triangular(scale_tril, flat.T, lower=True, trans="T").T.reshape(s.shape)
    return s


def log_det(metric: Metric = None, scale_tril: jax.Array | None = None, dtype=jnp.float32) -> jax.Array:
    """log abs(det R): what log q loses in the whitened coordinates."""
    if isinstance(metric, LowRankMetric):
        return lr.log_det_root(metric)
    if metric is not None:
        return 0.5 * jnp.sum(jnp.log(metric))
    if scale_tril is not None:
        return jnp.sum(jnp.log(jnp.abs(jnp.diag(scale_tril))))
    return jnp.zeros((), dtype)
