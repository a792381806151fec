"""Tests of importance sampling with a fitted mixture (mixvi.diagnostics.importance, mixvi.importance).

Targets are 1-d with known answers: p = N(1, 0.8^2), and the same normal truncated to x > 0 (log p = -inf
below 0, i.e. zero importance weight). The mixtures are set by hand, wider than p where the weights must be
bounded and much narrower where k-hat must be large.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.initialization import init_to_value
from scipy import stats

import mixvi
from mixvi.diagnostics import _draws, importance_resample, psis_khat, psis_log_weights
from mixvi.diagnostics.psis import psis_from_log_densities

MEAN, SD = 1.0, 0.8


def normal1():
    numpyro.sample("x", dist.Normal(MEAN, SD))


def truncated1():
    x = numpyro.sample("x", dist.Normal(MEAN, SD))
    numpyro.factor("positive", jnp.where(x > 0, 0.0, -jnp.inf))


def _guide(model):
    guide = mixvi.AutoIsotropicMixture(
        model, n_components=2, init_loc_fn=init_to_value(values={"x": MEAN}), metric="isotropic"
    )
    guide.setup(jax.random.PRNGKey(0))
    return guide


@pytest.fixture(scope="module")
def normal_guide():
    return _guide(normal1)


# mismatched but wider than p: bounded weights, k-hat < 0.5
WIDE = {"auto_locs": jnp.array([[-0.5], [1.5]]), "auto_scales": jnp.array([1.2, 1.2])}
# much narrower than p: heavy-tailed weights
NARROW = {"auto_locs": jnp.array([[1.0], [1.0]]), "auto_scales": jnp.array([0.15, 0.15])}


def test_self_normalised_mean_converges():
    """The PSIS self-normalised estimate of E_p[x] under a mismatched q approaches the true mean as S grows."""
    with jax.enable_x64(True):
        q = mixvi.IsotropicMixture(jnp.array([[-0.5], [1.5]]), jnp.array([1.2, 1.2]))
        errors = []
        for s in (1_000, 100_000):
            z = q.sample(jax.random.PRNGKey(1), (s,))
            log_w = stats.norm.logpdf(np.asarray(z[:, 0]), MEAN, SD) - np.asarray(q.log_prob(z))
            res = psis_log_weights(log_w)
            assert res.khat < 0.5
            errors.append(abs(float(np.exp(res.log_weights) @ np.asarray(z[:, 0])) - MEAN))
    # sd of the estimate ~ SD / sqrt(ESS): ~0.03 at S = 1e3, ~0.003 at S = 1e5
    assert errors[1] < 0.015
    assert errors[0] < 0.15


def test_resampled_draws_follow_p(normal_guide):
    """Resampled draws from a mismatched q pass a KS test against p and match its mean and sd."""
    res = importance_resample(
        normal_guide, WIDE, rng_key=jax.random.PRNGKey(2), num_samples=2000, num_proposals=200_000
    )
    x = np.asarray(res.samples["x"], np.float64)
    assert x.shape == (2000,) and res.latent.shape == (2000, 1) and res.num_proposals == 200_000
    assert stats.kstest(x, stats.norm(MEAN, SD).cdf).pvalue > 0.01
    assert abs(x.mean() - MEAN) < 4 * SD / math.sqrt(2000)
    assert abs(x.std() / SD - 1) < 4 / math.sqrt(2 * 2000)
    assert res.khat < 0.5 and 0.5 * 200_000 < res.ess < 200_000
    # q alone is off: its mean is 0.5, its sd about 1.56
    assert abs(float(jnp.mean(WIDE["auto_locs"])) - MEAN) > 0.4


def test_zero_weights_are_never_resampled():
    """Draws where p is zero (log w = -inf) get weight zero: resampled draws follow the truncated target."""
    guide = _guide(truncated1)
    res = importance_resample(guide, WIDE, rng_key=jax.random.PRNGKey(3), num_samples=2000, num_proposals=200_000)
    x = np.asarray(res.samples["x"], np.float64)
    assert np.all(x > 0)
    target = stats.truncnorm(-MEAN / SD, np.inf, loc=MEAN, scale=SD)
    assert stats.kstest(x, target.cdf).pvalue > 0.01
    assert math.isfinite(res.khat) and res.khat < 0.5


def test_same_key_same_draws(normal_guide):
    """The same key gives the same draws, k-hat and ESS; another key gives other draws."""
    a = importance_resample(normal_guide, WIDE, rng_key=jax.random.PRNGKey(4), num_samples=500)
    b = importance_resample(normal_guide, WIDE, rng_key=jax.random.PRNGKey(4), num_samples=500)
    c = importance_resample(normal_guide, WIDE, rng_key=jax.random.PRNGKey(5), num_samples=500)
    np.testing.assert_array_equal(a.latent, b.latent)
    np.testing.assert_array_equal(a.samples["x"], b.samples["x"])
    assert (a.khat, a.ess, a.num_proposals) == (b.khat, b.ess, 2000)
    assert not np.array_equal(a.latent, c.latent)


@pytest.mark.parametrize("params", [WIDE, NARROW], ids=["wide", "narrow"])
def test_khat_is_the_same_everywhere(normal_guide, params):
    """importance_resample, psis_khat and psis_log_weights report one k-hat (and ESS) for the same draws."""
    key = jax.random.PRNGKey(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = importance_resample(normal_guide, params, rng_key=key, num_samples=1000)
    k_draw = jax.random.split(key)[0]  # the proposals' key inside importance_resample
    assert psis_khat(normal_guide, params, rng_key=k_draw, num_samples=res.num_proposals) == res.khat
    draws = _draws.draw_and_weigh(normal_guide, params, (), {}, k_draw, res.num_proposals)
    log_p, log_q = draws.log_p, draws.log_q
    direct = psis_from_log_densities(log_p, log_q)
    assert (direct.khat, direct.ess) == (res.khat, res.ess)
    # the rounding tolerance never applies here, so plain psis_log_weights agrees too
    log_w = np.asarray(log_p, np.float64) - np.asarray(log_q, np.float64)
    assert psis_log_weights(log_w).khat == res.khat


def test_bad_khat_policy(normal_guide):
    """A q much narrower than p gives k-hat > 0.7: 'warn' warns, 'raise' raises, 'ignore' stays silent."""
    key = jax.random.PRNGKey(7)
    with pytest.warns(RuntimeWarning, match="k-hat"):
        res = importance_resample(normal_guide, NARROW, rng_key=key, num_samples=1000)
    assert res.khat > 0.7
    with pytest.raises(ValueError, match="k-hat"):
        importance_resample(normal_guide, NARROW, rng_key=key, num_samples=1000, on_bad_khat="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importance_resample(normal_guide, NARROW, rng_key=key, num_samples=1000, on_bad_khat="ignore")
    with pytest.raises(ValueError, match="on_bad_khat"):
        importance_resample(normal_guide, NARROW, rng_key=key, num_samples=1000, on_bad_khat="loud")


def test_exact_fit_is_not_flagged(normal_guide):
    """q = p (both components on p) gives k-hat -inf, an ESS of all proposals and no warning."""
    exact = {"auto_locs": jnp.array([[MEAN], [MEAN]]), "auto_scales": jnp.array([SD, SD])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = importance_resample(normal_guide, exact, rng_key=jax.random.PRNGKey(8), num_samples=500)
    assert res.khat == -math.inf
    assert res.ess == pytest.approx(2000, rel=1e-3)


def test_argument_checks(normal_guide):
    """Invalid counts, keys and too few proposals raise clear errors."""
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="num_samples"):
        importance_resample(normal_guide, WIDE, rng_key=key, num_samples=0)
    with pytest.raises(ValueError, match="num_proposals"):
        importance_resample(normal_guide, WIDE, rng_key=key, num_proposals=-1)
    with pytest.raises(TypeError, match="rng_key"):
        importance_resample(normal_guide, WIDE, rng_key=0)
    with pytest.raises(ValueError, match="at least 30"):
        importance_resample(normal_guide, WIDE, rng_key=key, num_samples=5, num_proposals=20)


def test_legacy_import_path():
    """mixvi.importance keeps exporting the functions of mixvi.diagnostics."""
    from mixvi import importance

    assert importance.psis_log_weights is psis_log_weights
    assert importance.importance_resample is importance_resample is mixvi.importance_resample
    assert importance.ImportanceSample is mixvi.ImportanceSample
