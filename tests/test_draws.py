"""mixvi.draws: flat draws reshaped are the documented numbers, with the right laws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mixvi import draws


@pytest.mark.parametrize("shape", [(7,), (20, 10), (3, 4, 5)])
def test_normal_is_the_flat_draw_reshaped(shape):
    key = jax.random.PRNGKey(4)
    got = draws.normal(key, shape, jnp.float32)
    assert got.shape == shape and got.dtype == jnp.float32
    flat = jax.random.normal(key, (int(np.prod(shape)),), jnp.float32)
    np.testing.assert_array_equal(np.asarray(got).ravel(), np.asarray(flat))


def test_normal_is_standard_normal_in_every_coordinate():
    z = np.asarray(draws.normal(jax.random.PRNGKey(0), (20_000, 3), jnp.float32), np.float64)
    for j in range(3):  # columns of the reshaped draw: each a standard normal, uncorrelated with the others
        assert stats.kstest(z[:, j], "norm").pvalue > 1e-3
    corr = np.corrcoef(z.T)[np.triu_indices(3, 1)]
    assert np.all(np.abs(corr) < 4 / np.sqrt(len(z)))


def test_uniform_range_law_and_keys():
    key = jax.random.PRNGKey(1)
    u = np.asarray(draws.uniform(key, (5_000, 2), jnp.float32, -2.0, 2.0), np.float64)
    assert u.shape == (5_000, 2) and u.min() >= -2.0 and u.max() < 2.0
    assert stats.kstest(u.ravel(), stats.uniform(-2.0, 4.0).cdf).pvalue > 1e-3
    np.testing.assert_array_equal(u, np.asarray(draws.uniform(key, (5_000, 2), jnp.float32, -2.0, 2.0)))
    other = np.asarray(draws.uniform(jax.random.PRNGKey(2), (5_000, 2), jnp.float32, -2.0, 2.0))
    assert not np.array_equal(u, other)


@pytest.mark.parametrize("x64", [False, True])
def test_normal_and_key_is_standard_normal_with_a_fresh_key_from_one_draw(x64):
    """One generator call gives both: normals (float32, or float64 from two words each) with the standard
    normal law in every coordinate, and a key equal to the first words of the same call's bits (raw or
    typed like the input), different from the input; the same key gives the same bits, and asking for
    more keys leaves the normals and the first key as they were."""
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        key = jax.random.PRNGKey(3)
        z, (new,) = draws.normal_and_key(key, (20_000, 3), dtype)
        assert z.shape == (20_000, 3) and z.dtype == dtype
        zs = np.asarray(z, np.float64)
        for j in range(3):
            assert stats.kstest(zs[:, j], "norm").pvalue > 1e-3
        corr = np.corrcoef(zs.T)[np.triu_indices(3, 1)]
        assert np.all(np.abs(corr) < 4 / np.sqrt(len(zs)))
        np.testing.assert_array_equal(np.asarray(new), np.asarray(jax.random.bits(key, (2,), jnp.uint32)))
        assert not np.array_equal(np.asarray(new), np.asarray(key))
        # more keys: drawn after the normals, so the first key and the normals stay the same
        again, (same, second, third) = draws.normal_and_key(key, (20_000, 3), dtype, num_keys=3)
        np.testing.assert_array_equal(np.asarray(again), zs.astype(np.asarray(again).dtype))
        np.testing.assert_array_equal(np.asarray(same), np.asarray(new))
        assert len({tuple(np.asarray(k).tolist()) for k in (new, second, third)}) == 3
        typed, (typed_new,) = draws.normal_and_key(jax.random.key(3), (4,), dtype)
        assert jnp.issubdtype(typed_new.dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(np.asarray(jax.random.key_data(typed_new)), np.asarray(new))
        # the extreme bits map inside the open interval: finite normals
        assert np.all(np.isfinite(zs))


@pytest.mark.parametrize("size", [1, 2, 3, 106, 4097])
def test_unrolled_threefry_is_jax_random_bits_bit_for_bit(size):
    """threefry_bits (the hash's rounds written out) gives jax.random.bits' uint32 words exactly, for raw
    and typed keys, eagerly and under jit; a key of another implementation goes to jax.random.bits."""
    keys = [jax.random.PRNGKey(0), jax.random.PRNGKey(2**31 + 12345), jax.random.split(jax.random.PRNGKey(5))[1]]
    keys.append(jax.random.key(9))
    unrolled = jax.jit(draws.threefry_bits, static_argnums=1)
    for key in keys:
        expected = np.asarray(jax.random.bits(key, (size,), jnp.uint32))
        np.testing.assert_array_equal(np.asarray(draws.threefry_bits(key, size)), expected)
        np.testing.assert_array_equal(np.asarray(unrolled(key, size)), expected)
    other = jax.random.key(9, impl="rbg")
    np.testing.assert_array_equal(
        np.asarray(draws.threefry_bits(other, size)), np.asarray(jax.random.bits(other, (size,), jnp.uint32))
    )


def test_unrolled_threefry_compiles_to_fewer_kernels_than_the_rolled_loop():
    """The point of writing the rounds out: no while loop in the optimised CPU program (JAX's CPU
    lowering of the hash is a five-trip loop, each trip's rounds kernels of their own)."""
    key = jax.random.PRNGKey(1)
    ours = jax.jit(draws.threefry_bits, static_argnums=1).lower(key, 106).compile().as_text()
    theirs = jax.jit(lambda k: jax.random.bits(k, (106,), jnp.uint32)).lower(key).compile().as_text()
    if jax.default_backend() == "cpu":
        assert " while(" in theirs
    assert " while(" not in ours


@pytest.mark.parametrize("x64", [False, True])
def test_host_uniform_is_jax_uniform_to_one_rounding(x64):
    """The host draw (NumPy's threefry) gives JAX's uniforms: the same bits, so the floats differ at most
    by the one rounding of a fused multiply-add (an ulp of the range's end), in float32 and float64; a
    traced key or one of another implementation gives None (the caller draws in JAX)."""
    with jax.enable_x64(x64):
        for dtype in [np.float32] + ([np.float64] if x64 else []):
            for key in (jax.random.PRNGKey(0), jax.random.PRNGKey(2**31 + 7), jax.random.key(5)):
                host = draws.host_uniform(key, (500, 3), dtype, -2.0, 3.0)
                ref = np.asarray(jax.jit(lambda k, dt=dtype: jax.random.uniform(k, (1500,), dt, -2.0, 3.0))(key))
                assert host.shape == (500, 3) and host.dtype == dtype
                assert np.max(np.abs(host.ravel() - ref)) <= np.spacing(dtype(3.0))
                assert np.all((host >= -2.0) & (host < 3.0))
    assert draws.host_uniform(jax.random.key(1, impl="rbg"), (4,)) is None
    seen = []
    jax.jit(lambda k: seen.append(draws.host_uniform(k, (4,))) or k)(jax.random.PRNGKey(0))
    assert seen == [None]
