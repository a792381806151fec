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
