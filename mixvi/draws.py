"""Random draws that compile quickly: one flat draw, reshaped.

With ``jax_threefry_partitionable`` on (JAX's default), a draw of a multi-dimensional shape is generated
from a counter per dimension, and XLA's CPU compiler takes much longer over it: on the 2-core development
CPU ``jax.random.normal(key, (20, 10))`` compiled in 0.24 s and the same 200 numbers drawn flat and
reshaped in 0.09 s (fresh processes, 2026-12-04, jax 0.12). The numbers differ from the shaped draw's,
and are as random: independent standard normals (or uniforms) either way. Every draw of mixvi's compiled
programs goes through here; the key is always an argument.

A step needs its noise and a key for the model's own randomness (a data subsample): drawing both from
one call of the generator (:func:`normal_and_key`) instead of splitting the key first puts one
threefry hash in the compiled step instead of two (each is ~250 HLO instructions, about 3 % of a
step's program on a small model).

JAX lowers the threefry hash on CPU as a loop of five rolled rounds, which XLA compiles to about ten
kernels of their own; :func:`threefry_bits` computes the same bits with the rounds written out, which XLA
fuses into one or two. The step's draw (:func:`normal_and_key`) uses it: eleven fewer kernels in the
compiled step of a small model. The set-up's small one-off programs keep JAX's rolled loop, which
compiles sooner there (split and the initial uniform draw: 0.06 and 0.09-0.11 s rolled, 0.06 and 0.13 s
unrolled; 2-core CPU, 2026-12-06).

This module depends on JAX and NumPy only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2,
# 3", SC 2011): the rotation constants of its two alternating groups of four rounds, and the key-schedule
# parity constant
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _rotate_left(x: jax.Array, r: int) -> jax.Array:
    word = x.dtype.type
    return (x << word(r)) | (x >> word(32 - r))


def _threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash of the counter pairs (x0, x1) under the key (k0, k1), all uint32 (JAX or
    NumPy arrays alike): five groups of four mix rounds, the key injected after each group."""
    word = x1.dtype.type
    schedule = (k0, k1, k0 ^ k1 ^ word(_PARITY))
    x0, x1 = x0 + schedule[0], x1 + schedule[1]
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + schedule[(group + 1) % 3]
        x1 = x1 + schedule[(group + 2) % 3] + word(group + 1)
    return x0, x1


def _threefry_words(key: jax.Array) -> jax.Array | None:
    """The key's two words when it is a threefry key under ``jax_threefry_partitionable`` (JAX's
    default), whose bits :func:`_threefry2x32` reproduces; else None."""
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    words = jax.random.key_data(key) if typed else key
    # a raw key of two words is a threefry key (the other implementations' keys have four)
    threefry = str(jax.random.key_impl(key)) == "threefry2x32" if typed else key.shape == (2,)
    if not (threefry and words.shape == (2,) and jax.config.jax_threefry_partitionable):
        return None
    return words


def threefry_bits(key: jax.Array, size: int) -> jax.Array:
    """``jax.random.bits(key, (size,), jnp.uint32)``, bit for bit, with the hash's rounds unrolled.

    Holds for threefry keys (raw uint32 pairs, or typed) under ``jax_threefry_partitionable`` (JAX's
    default), where word i is the hash of the 64-bit counter i, its two halves xor-ed; any other key or
    setting is passed to ``jax.random.bits``.
    """
    words = _threefry_words(key)
    if words is None or size >= 2**32:
        return jax.random.bits(key, (size,), jnp.uint32)
    words = words.astype(jnp.uint32)
    counter = jax.lax.iota(jnp.uint32, size)
    high, low = _threefry2x32(words[0], words[1], jnp.zeros_like(counter), counter)
    return high ^ low


def host_uniform(
    key: jax.Array, shape: tuple, dtype=np.float32, minval: float = 0.0, maxval: float = 1.0
) -> np.ndarray | None:
    """``uniform(key, shape, dtype, minval, maxval)`` computed by NumPy on the host, or None where the key
    is traced or not a threefry key (then the caller draws in JAX). The same bits as JAX's; the floats
    within an ulp of JAX's (XLA may fuse the scale and shift into one multiply-add). For one-off draws
    of the set-up: no program to compile (JAX's compiles in about 0.1 s on the development CPU)."""
    words = None if isinstance(key, jax.core.Tracer) else _threefry_words(key)
    size = math.prod(shape)
    float_type = np.dtype(dtype)
    if words is None or float_type not in (np.float32, np.float64) or size >= 2**32:
        return None
    words = np.asarray(words).astype(np.uint32)
    counter = np.arange(size, dtype=np.uint32)
    high, low = _threefry2x32(words[0], words[1], np.zeros_like(counter), counter)
    if float_type == np.float64:
        bits = (high.astype(np.uint64) << np.uint64(32)) | low.astype(np.uint64)
        one, mantissa = np.uint64(0x3FF0000000000000), 52
    else:
        bits, one, mantissa = high ^ low, np.uint32(0x3F800000), 23
    unit = ((bits >> bits.dtype.type(bits.dtype.itemsize * 8 - mantissa)) | one).view(float_type) - float_type.type(1)
    low_end, high_end = float_type.type(minval), float_type.type(maxval)
    return np.maximum(low_end, unit * (high_end - low_end) + low_end).reshape(shape)


def normal(key: jax.Array, shape: tuple, dtype=jnp.float32) -> jax.Array:
    """Standard normals of ``shape``, drawn flat and reshaped."""
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def uniform(key: jax.Array, shape: tuple, dtype=jnp.float32, minval: float = 0.0, maxval: float = 1.0) -> jax.Array:
    """Uniforms in [minval, maxval) of ``shape``, drawn flat and reshaped."""
    return jax.random.uniform(key, (math.prod(shape),), dtype, minval, maxval).reshape(shape)


def normal_and_key(
    key: jax.Array, shape: tuple, dtype=jnp.float32, num_keys: int = 1
) -> tuple[jax.Array, list[jax.Array]]:
    """Standard normals of ``shape`` and ``num_keys`` new keys, from one call of the generator on ``key``.

    The bits of ``jax.random.bits(key, ...)`` are laid out as [first key][the normals][the other keys]:
    with JAX's counter-based threefry (``jax_threefry_partitionable``, the default) bit i does not depend
    on how many are drawn, so the first key and the normals are the same whatever ``num_keys`` is. The
    keys are raw, or typed like ``key``; the normals come from the bits as ``jax.random.normal`` makes
    them (uniforms in (-1, 1) from the mantissa bits, then sqrt(2) erfinv), two 32-bit words per float64.
    """
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    words = (jax.random.key_data(key) if typed else key).shape[-1]
    size = math.prod(shape)
    wide = jnp.finfo(dtype).bits > 32
    count = (2 if wide else 1) * size
    bits = threefry_bits(key, num_keys * words + count)
    key_words = [bits[:words]] + [bits[words + count + i * words :][:words] for i in range(num_keys - 1)]
    keys = [jax.random.wrap_key_data(w, impl=jax.random.key_impl(key)) if typed else w for w in key_words]
    rest = bits[words : words + count]
    if wide:
        rest = (rest[:size].astype(jnp.uint64) << 32) | rest[size:].astype(jnp.uint64)
        one, mantissa, float_type = jnp.uint64(0x3FF0000000000000), 52, jnp.float64
    else:
        one, mantissa, float_type = jnp.uint32(0x3F800000), 23, jnp.float32
    # [0, 1) from the mantissa bits, then the open interval (-1, 1) as jax.random.normal uses
    unit = jax.lax.bitcast_convert_type((rest >> (rest.dtype.itemsize * 8 - mantissa)) | one, float_type) - 1.0
    low = jnp.nextafter(jnp.asarray(-1.0, float_type), jnp.asarray(0.0, float_type))
    u = jnp.maximum(low, unit * (1.0 - low) + low)
    z = (jnp.sqrt(jnp.asarray(2.0, float_type)) * jax.lax.erf_inv(u)).astype(dtype)
    return z.reshape(shape), keys
