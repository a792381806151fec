"""benchmarks.targets: normalised log densities (2-D grid integration), exact samplers that agree with
them, seedable GMM parameters, and the regressions' models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import potential_energy

from benchmarks.metrics import log_density_grid
from benchmarks.targets import (
    gmm_parameters,
    make_funnel,
    make_gmm,
    make_label_switching,
    make_sinh_arcsinh,
)


def _mass(log_prob, lo, hi, num=801):
    lp, cell = log_density_grid(log_prob, lo, hi, num)
    return float(np.exp(lp).sum() * cell)


@pytest.mark.parametrize("cov", ["diag", "full", "iso"])
def test_gmm_2d_normalised(cov):
    t = make_gmm(2, cov, seed=3)
    assert _mass(t.log_prob, -16, 16) == pytest.approx(1.0, abs=2e-3)


def test_funnel_and_sinh_arcsinh_normalised():
    # the funnel's x1 | x0 ~ N(0, exp(x0)): integrate x0 over +-6 sd, x1 wide enough
    assert _mass(make_funnel().log_prob, -8, 8, 1201) == pytest.approx(1.0, abs=5e-3)
    for name in ("sas-a", "sas-b", "sas-c"):
        assert _mass(make_sinh_arcsinh(name).log_prob, -25, 25, 1201) == pytest.approx(1.0, abs=5e-3), name


def test_label_switching_normalised_and_symmetric():
    t = make_label_switching()
    assert _mass(t.log_prob, -6, 6, 401) == pytest.approx(1.0, abs=1e-3)
    z = jnp.array([[0.3, -1.1]])
    assert float(t.log_prob(z)[0]) == pytest.approx(float(t.log_prob(z[:, ::-1])[0]), abs=1e-4)
    s = t.sample(jax.random.PRNGKey(0), 4000)
    share = float(np.mean(np.asarray(t.mode_of(s))))
    assert share == pytest.approx(0.5, abs=0.04)


def _check_sampler_against_density(t, lo, hi, num=301, n=20000, bins=8):
    """Histogram of exact draws vs the density integrated over the same bins (chi-square-like check)."""
    x = np.asarray(t.sample(jax.random.PRNGKey(1), n))
    edges = np.linspace(lo, hi, bins + 1)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    lp, cell = log_density_grid(t.log_prob, lo, hi, num)
    axis = np.linspace(lo, hi, num)
    dens = np.exp(lp).reshape(num, num) * cell
    idx = np.clip(np.digitize(axis, edges) - 1, 0, bins - 1)
    mass = np.zeros((bins, bins))
    np.add.at(mass, (idx[:, None], idx[None, :]), dens)
    expected = mass * n
    big = expected > 50
    z = (counts[big] - expected[big]) / np.sqrt(expected[big])
    assert np.max(np.abs(z)) < 5.0


@pytest.mark.parametrize("maker", [lambda: make_gmm(2, "full", seed=1), make_funnel, lambda: make_sinh_arcsinh("sas-c")])
def test_exact_samplers_agree_with_log_densities(maker):
    _check_sampler_against_density(maker(), -6, 6)


def test_gmm_is_seedable_and_model_potential_is_minus_log_density():
    a, b, c = gmm_parameters(10, covariance="full", seed=7), gmm_parameters(10, covariance="full", seed=7), gmm_parameters(10, covariance="full", seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[1], c[1])
    w, means, covs = a
    assert w.shape == (5,) and np.isclose(w.sum(), 1) and np.all(np.abs(means) <= 5)
    assert np.all(np.linalg.eigvalsh(covs) > 0) and np.isclose(np.linalg.eigvalsh(covs).max(), 5.0)
    t = make_gmm(10, "diag", seed=2)
    z = jnp.linspace(-1, 1, 10)
    v = potential_energy(t.model, (), {}, {"x": z})
    assert float(v) == pytest.approx(-float(t.log_prob(z)), rel=1e-5)
    labels = np.asarray(t.mode_of(t.sample(jax.random.PRNGKey(0), 5000)))
    assert set(np.unique(labels)) <= set(range(5))


def test_regression_targets():
    pytest.importorskip("sklearn")
    from benchmarks.targets import make_logreg_breast, make_softmax_wine

    lr, sm = make_logreg_breast(), make_softmax_wine()
    assert lr.dim == 30 and lr.args[0].shape == (284, 30) and len(lr.test_labels) == 285
    assert sm.dim == 39 and sm.args[0].shape == (89, 13) and len(sm.test_labels) == 89
    np.testing.assert_allclose(np.asarray(lr.args[0]).mean(0), 0.0, atol=1e-5)
    z = jnp.zeros((2, 30))
    # at w = 0 every test label has probability 1/2; the potential is the prior's plus n log 2
    np.testing.assert_allclose(np.exp(np.asarray(lr.predict_log_prob(z))), 0.5, rtol=1e-6)
    v = lr.potential()(z)
    expected = 0.5 * 30 * np.log(2 * np.pi * 100.0) + 284 * np.log(2.0)
    assert float(v[0]) == pytest.approx(expected, rel=1e-5)
    assert sm.predict_log_prob(jnp.zeros((3, 39))).shape == (3, 89, 3)


def test_nuts_reference_cache_hash(tmp_path):
    import numpyro
    import numpyro.distributions as dist

    from benchmarks.targets.regression import content_hash, nuts_reference

    def model(x):
        numpyro.sample("w", dist.Normal(jnp.zeros(2), 1.0).to_event(1))

    x = np.ones(3, np.float32)
    settings = {"num_chains": 2, "num_warmup": 50, "num_samples": 50, "seed": 0}
    w = nuts_reference("toy", model, (x,), cache=tmp_path, settings=settings)
    assert w.shape == (100, 2) and len(list(tmp_path.glob("nuts_toy_*.npz"))) == 1
    again = nuts_reference("toy", model, (x,), cache=tmp_path, settings=settings)  # from the cache
    np.testing.assert_array_equal(w, again)
    assert content_hash("toy", x, **settings) != content_hash("toy", x + 1, **settings)
