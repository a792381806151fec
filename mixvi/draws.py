"""Random draws that compile quickly: one flat draw, reshaped.

With ``jax_threefry_partitionable`` on (JAX's default), a draw of a multi-dimensional shape is generated
from a counter per dimension, and XLA's CPU compiler takes much longer over it: on the 2-core development
CPU ``jax.random.normal(key, (20, 10))`` compiled in 0.24 s and the same 200 numbers drawn flat and
reshaped in 0.09 s (fresh processes, 2026-12-04, jax 0.12). The numbers differ from the shaped draw's,
and are as random: independent standard normals (or uniforms) either way. Every draw of mixvi's compiled
programs goes through here; the key is always an argument.

This module depends on JAX only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def normal(key: jax.Array, shape: tuple, dtype=jnp.float32) -> jax.Array:
    """Standard normals of ``shape``, drawn flat and reshaped."""
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def uniform(key: jax.Array, shape: tuple, dtype=jnp.float32, minval: float = 0.0, maxval: float = 1.0) -> jax.Array:
    """Uniforms in [minval, maxval) of ``shape``, drawn flat and reshaped."""
    return jax.random.uniform(key, (math.prod(shape),), dtype, minval, maxval).reshape(shape)
