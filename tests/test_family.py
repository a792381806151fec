import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from mixvi.family import IsotropicMixture, component_logits


def _mixture(key, n=4, d=3, dtype=jnp.float64):
    k1, k2 = jax.random.split(key)
    locs = 3.0 * jax.random.normal(k1, (n, d), dtype)
    scales = jnp.exp(0.4 * jax.random.normal(k2, (n,), dtype))
    return IsotropicMixture(locs, scales)


def test_log_prob_matches_scipy(key):
    with jax.enable_x64(True):
        q = _mixture(key)
        x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (7, 3), jnp.float64)) * 3
        dens = np.mean(
            [stats.multivariate_normal(np.asarray(m), float(s) ** 2 * np.eye(3)).pdf(x) for m, s in zip(q.locs, q.scales)],
            axis=0,
        )
        np.testing.assert_allclose(q.log_prob(x), np.log(dens), rtol=1e-10)


def test_logits_far_from_origin_stay_accurate(key):
    with jax.enable_x64(True):
        q = _mixture(key)
        shift = 1e4
        q2 = IsotropicMixture(q.locs + shift, q.scales)
        x = q.locs[0] + 0.3
        np.testing.assert_allclose(component_logits(x + shift, q2.locs, q2.scales), component_logits(x, q.locs, q.scales), rtol=1e-8)


def test_score_is_gradient_of_log_prob(key):
    with jax.enable_x64(True):
        q = _mixture(key)
        x = jax.random.normal(jax.random.PRNGKey(2), (5, 3), jnp.float64) * 2
        np.testing.assert_allclose(q.score(x), jax.vmap(jax.grad(q.log_prob))(x), rtol=1e-9, atol=1e-12)


def test_sample_moments_and_rsample(key):
    with jax.enable_x64(True):
        q = _mixture(key)
        x = q.sample(jax.random.PRNGKey(3), (200_000,))
        assert x.shape == (200_000, 3)
        sd = jnp.sqrt(q.variance)
        # 5 standard errors
        np.testing.assert_array_less(jnp.abs(x.mean(0) - q.mean), 5 * sd / jnp.sqrt(200_000.0))
        np.testing.assert_allclose(x.var(0), q.variance, rtol=0.02)
        assert q.has_rsample
        # pathwise gradient of E[x] w.r.t. locs is 1/N per component
        g = jax.grad(lambda lo: IsotropicMixture(lo, q.scales).rsample(jax.random.PRNGKey(4), (40_000,)).mean())(q.locs)
        np.testing.assert_allclose(g.sum(1), np.full(4, 1 / 4), atol=0.02)


def test_marginal_quantiles_invert_cdf(key):
    with jax.enable_x64(True):
        q = _mixture(key)
        qs = jnp.array([0.05, 0.5, 0.9])
        x = q.marginal_icdf(qs)
        assert x.shape == (3, 3)
        np.testing.assert_allclose(q.marginal_cdf(x), jnp.broadcast_to(qs[:, None], (3, 3)), atol=1e-9)
        one = IsotropicMixture(jnp.zeros((1, 2)), jnp.ones(1))
        np.testing.assert_allclose(one.marginal_icdf(0.9), stats.norm.ppf(0.9), atol=1e-9)


def test_shape_errors():
    import pytest

    with pytest.raises(ValueError, match="locs"):
        IsotropicMixture(jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match="scales"):
        IsotropicMixture(jnp.zeros((3, 2)), jnp.ones(2))


def test_dense_metric_log_prob_score_and_moments_match_scipy(key):
    """With scale_tril L, log_prob equals scipy's mixture of N(m_i, sigma_i^2 L L^T), the score its
    autodiff gradient, and the draws have the mixture's mean and covariance diagonal."""
    with jax.enable_x64(True):
        base = _mixture(key)
        tril = jnp.array([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.4, 2.0]])
        q = IsotropicMixture(base.locs, base.scales, scale_tril=tril)
        x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (7, 3), jnp.float64)) * 3
        cov = np.asarray(tril @ tril.T)
        dens = np.mean(
            [stats.multivariate_normal(np.asarray(m), float(s) ** 2 * cov).pdf(x) for m, s in zip(q.locs, q.scales)],
            axis=0,
        )
        np.testing.assert_allclose(q.log_prob(x), np.log(dens), rtol=1e-10)
        np.testing.assert_allclose(q.score(x), jax.vmap(jax.grad(q.log_prob))(x), rtol=1e-9, atol=1e-12)
        draws = q.sample(jax.random.PRNGKey(2), (200_000,))
        np.testing.assert_allclose(draws.mean(0), q.mean, atol=0.03)
        np.testing.assert_allclose(draws.var(0), q.variance, rtol=0.02)
