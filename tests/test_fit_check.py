"""mixvi.fit_check: the relative score divergence against its closed form, and verdicts that separate
a good fit from a bad one of the same model."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import mixvi
from mixvi.diagnostics.fit import relative_score_divergence
from mixvi.family import IsotropicMixture

SDS = jnp.array([0.5, 1.0, 2.0, 4.0])


def stretched():
    numpyro.sample("x", dist.Normal(0.0, SDS).to_event(1))


def test_score_divergence_of_a_gaussian_is_the_mean_squared_variance_error():
    """q = N(0, s^2 I) against p = N(0, diag(sds^2)): D = (1/d) sum_k (1 - s^2 / sds_k^2)^2, and with a
    diagonal metric equal to p's variances (s = 1) D = 0."""
    with jax.enable_x64(True):
        sds = SDS.astype(jnp.float64)
        q = IsotropicMixture(jnp.zeros((1, 4)), jnp.array([1.3]))
        z = q.sample(jax.random.key(0), (200_000,))
        d = float(relative_score_divergence(q, z, -z / sds**2))
        np.testing.assert_allclose(d, float(jnp.mean((1 - 1.3**2 / sds**2) ** 2)), rtol=0.02)
        exact = IsotropicMixture(jnp.zeros((1, 4)), jnp.array([1.0]), metric=sds**2)
        z = exact.sample(jax.random.key(1), (1000,))
        assert float(relative_score_divergence(exact, z, -z / sds**2)) < 1e-12


def test_verdict_separates_a_good_fit_from_a_bad_one():
    """A stretched Gaussian (sds 0.5 to 4): the diagonal metric fits it exactly ('good', and run stays
    quiet); the paper's isotropic components cannot ('poor': k-hat and D both large; run warns)."""
    verdicts = {}
    for metric in ("diagonal", "isotropic"):
        guide = mixvi.AutoIsotropicMixture(stretched, n_components=2, metric=metric)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = mixvi.MixVI(stretched, guide).run(jax.random.PRNGKey(0), 1500, progress_bar=False)
        warned = any("fit looks poor" in str(w.message) for w in caught)
        assert warned == (metric == "isotropic"), [str(w.message) for w in caught]
        verdicts[metric] = mixvi.fit_check(guide, r.params, rng_key=jax.random.PRNGKey(1))
    good, bad = verdicts["diagonal"], verdicts["isotropic"]
    assert good.verdict == "good" and not good.reasons, good
    assert bad.verdict == "poor" and bad.score_divergence > 10 * good.score_divergence and bad.reasons, bad


def test_fit_check_refuses_too_few_draws():
    guide = mixvi.AutoIsotropicMixture(stretched, n_components=2)
    params = guide.setup(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="num_samples >= 100"):
        mixvi.fit_check(guide, params, rng_key=jax.random.PRNGKey(1), num_samples=50)
