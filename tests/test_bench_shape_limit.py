"""The shape-limit benchmark's mixtures with per-component shapes: their density against NumPyro's, their
draws against their density, and the reverse-KL fit against an exact Gaussian answer."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from benchmarks import shape_limit as S

D, N = 3, 2


def _params(shape: str, key: jax.Array) -> dict:
    k1, k2 = jax.random.split(key)
    locs = jax.random.normal(k1, (N, D))
    raw = {
        "isotropic": jnp.array([-0.3, 0.4]),
        "diagonal": 0.3 * jax.random.normal(k2, (N, D)),
        "full": 0.3 * jax.random.normal(k2, (N, D, D)),
    }[shape]
    return {"locs": locs, "log_sd": raw}


def _covariances(params: dict, shape: str) -> jax.Array:
    raw = params["log_sd"]
    if shape == "isotropic":
        return jnp.exp(2 * raw)[:, None, None] * jnp.eye(D)
    if shape == "diagonal":
        return jax.vmap(jnp.diag)(jnp.exp(2 * raw))
    tril = S.cholesky_factors(raw)
    return tril @ jnp.swapaxes(tril, -1, -2)


@pytest.mark.parametrize("shape", S.SHAPES)
def test_log_q_is_the_uniform_mixture_of_the_components_covariances(shape):
    """log q at random points equals NumPyro's MixtureSameFamily of MultivariateNormals with the covariances
    the parameters stand for (s^2 I, diag(s^2), L L^T with L's diagonal exp of the raw one)."""
    params = _params(shape, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (7, D)) * 2
    reference = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.full((N,), 1.0 / N)),
        dist.MultivariateNormal(params["locs"], covariance_matrix=_covariances(params, shape)),
    ).log_prob(x)
    np.testing.assert_allclose(S.log_q(params, x, shape), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", S.SHAPES)
def test_draws_whiten_back_to_their_noise(shape):
    """Component i's draw from noise z has log N(x; m_i, C_i) = -|z|^2/2 - log|C_i|^(1/2) - (d/2) log 2 pi:
    draws and density use one square root of C_i."""
    params = _params(shape, jax.random.PRNGKey(2))
    noise = jax.random.normal(jax.random.PRNGKey(3), (N, 4, D))
    x = S.mixture_draws(params, noise, shape)
    own = jnp.stack([S.component_log_densities(x[i], params["locs"], params["log_sd"], shape)[:, i] for i in range(N)])
    half_log_det = 0.5 * jnp.linalg.slogdet(_covariances(params, shape))[1]
    expected = -0.5 * jnp.sum(noise**2, -1) - half_log_det[:, None] - 0.5 * D * jnp.log(2 * jnp.pi)
    np.testing.assert_allclose(own, expected, rtol=1e-5, atol=1e-4)


def test_fit_recovers_a_gaussian_target_exactly_representable_by_the_family():
    """On V = -log N(mu, diag(s^2)) (normalised: log Z = 0) the diagonal family holds the target, so the
    reverse KL's optimum is 0. The two components need not coincide (two narrower ones side by side along a
    wide axis are as good, nearly), so the mixture is checked: its mean within 0.1 sd, its sds (within-
    component variance plus the spread of the means) within 10 %, and the final -ELBO estimate near 0."""
    mu = jnp.array([1.0, -2.0, 0.5])
    sd = jnp.array([0.5, 2.0, 1.0])
    target = dist.Normal(mu, sd).to_event(1)
    start = np.array([[0.0, 0.0, 0.0], [2.0, -1.0, 1.0]])
    params, trace = S.fit_shape("diagonal", lambda x: -target.log_prob(x), start, 1500, 10, 0.05, jax.random.PRNGKey(0))
    locs, sds = np.asarray(params["locs"]), np.exp(np.asarray(params["log_sd"]))
    mean = locs.mean(0)
    mixture_sd = np.sqrt((sds**2).mean(0) + locs.var(0))
    np.testing.assert_array_less(np.abs(mean - np.asarray(mu)) / np.asarray(sd), 0.1)
    np.testing.assert_allclose(mixture_sd, sd, rtol=0.1)
    assert abs(float(trace[-150:].mean())) < 0.02
