"""Tests of the guide-level diagnostics (psis_khat, component_summary, to_datatree, plot_components)
against exact results; the PSIS wrapper on plain log weights is tested in test_psis.py.

Pareto k of Gaussian importance ratios (derivation in docs/diagnostics.md): for p = N(0, I_d) and
q = N(0, s^2 I_d), log w = c + (1/2)(1/s^2 - 1)|z|^2 with |z|^2 / s^2 ~ chi^2_d under q, so
log w - c ~ Gamma(d/2, scale 1 - s^2) for s < 1. The tail index is
k = 1 - s^2 for every d; for d = 2 (chi^2_2 / 2 ~ Exp(1)) w is *exactly* Pareto with shape 1 - s^2,
so every exceedance distribution is exactly a GPD with that shape. For s^2 = 2, d = 2,
w / max w = exp(-|z|^2 / 4) ~ Uniform(0, 1): exactly GPD with k = -1.
"""

from __future__ import annotations

import math
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

# init_to_value: the params are set by hand, and it makes guide.setup cheap (no random search)
from numpyro.infer.initialization import init_to_value
from scipy import integrate, stats

import mixvi
from mixvi import diagnostics as D


def _prior_adjusted(k: float, n: int) -> float:
    """The estimator's target: (M k + 10 * 0.5) / (M + 10) (weakly informative prior, M tail draws)."""
    m = D.tail_length(n)
    return (m * k + 5.0) / (m + 10.0)


# --------------------------------------------------------------------------------------------------
# models and guides (module scope: setting a guide up compiles the model)
# --------------------------------------------------------------------------------------------------
def normal2():
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def bimodal():
    mix = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.array([0.3, 0.7])), dist.Normal(jnp.array([-4.0, 4.0]), 1.0)
    )
    numpyro.sample("x", mix)


def regression(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([6]).to_event(1))
    numpyro.deterministic("sigma2", sigma**2)
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu + beta[0], sigma), obs=y)


Y = np.asarray(1.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(11), (20,)))


@pytest.fixture(scope="module")
def gauss_guide():
    guide = mixvi.AutoIsotropicMixture(
        normal2, n_components=2, init_loc_fn=init_to_value(values={"x": jnp.zeros(2)}), metric="isotropic"
    )
    guide.setup(jax.random.PRNGKey(0))
    return guide


def gauss_params(s: float) -> dict:
    """q = (1/2)(N(0, s^2 I) + N(0, s^2 I)) = N(0, s^2 I) on R^2."""
    return {"auto_locs": jnp.zeros((2, 2)), "auto_scales": jnp.full((2,), s)}


@pytest.fixture(scope="module")
def reg():
    init = init_to_value(values={"mu": 0.0, "sigma": 1.0, "beta": jnp.zeros(6)})
    guide = mixvi.AutoIsotropicMixture(regression, n_components=3, init_loc_fn=init, metric="isotropic")
    guide.setup(jax.random.PRNGKey(0), Y)
    idx = guide._unpack_latent(jnp.arange(guide.latent_dim, dtype=jnp.float32))
    centre = np.zeros(guide.latent_dim, np.float32)
    centre[int(idx["mu"])] = Y.mean()
    centre[int(idx["sigma"])] = np.log(Y.std())
    offsets = 0.3 * np.asarray(jax.random.normal(jax.random.PRNGKey(5), (3, guide.latent_dim)))
    params = {"auto_locs": jnp.asarray(centre + offsets), "auto_scales": jnp.array([0.15, 0.2, 0.25])}
    return guide, params, idx


# --------------------------------------------------------------------------------------------------
# psis_khat through a guide
# --------------------------------------------------------------------------------------------------
def test_psis_khat_gaussian_guide(gauss_guide):
    """psis_khat on a guide recovers k = 1 - s^2, about -1 for a wider q, and -inf for q = p."""
    # one call per case: each call compiles the model once, the draws themselves are cheap
    n = 1_000_000  # M = 3000 tail draws: sd of k-hat ~ (1 + k) / sqrt(M) = 0.03
    key = jax.random.PRNGKey(7)
    k06 = mixvi.psis_khat(gauss_guide, gauss_params(0.6), rng_key=key, num_samples=n)
    assert abs(k06 - _prior_adjusted(0.64, n)) < 3.5 * 1.64 / math.sqrt(D.tail_length(n))
    wide = mixvi.psis_khat(gauss_guide, gauss_params(math.sqrt(2.0)), rng_key=key, num_samples=20_000)
    assert -1.1 < wide < -0.85  # exact k = -1
    # q = p: log w is constant up to float rounding
    assert mixvi.psis_khat(gauss_guide, gauss_params(1.0), rng_key=key) == -math.inf


def test_psis_khat_reproducible_and_checks(gauss_guide):
    """Same key, same k-hat; invalid counts, keys, params and guides raise clear errors."""
    p = gauss_params(0.7)
    k1 = mixvi.psis_khat(gauss_guide, p, rng_key=jax.random.PRNGKey(3))
    assert mixvi.psis_khat(gauss_guide, p, rng_key=jax.random.PRNGKey(3)) == k1
    assert mixvi.psis_khat(gauss_guide, p, rng_key=jax.random.PRNGKey(4)) != k1
    with pytest.raises(ValueError, match=">= 30"):
        mixvi.psis_khat(gauss_guide, p, rng_key=jax.random.PRNGKey(3), num_samples=10)
    with pytest.raises(ValueError, match="integer >= 1"):
        mixvi.psis_khat(gauss_guide, p, rng_key=jax.random.PRNGKey(3), num_samples=0)
    with pytest.raises(TypeError, match="rng_key"):
        mixvi.psis_khat(gauss_guide, p, rng_key=3)
    with pytest.raises(ValueError, match="do not match"):
        mixvi.psis_khat(
            gauss_guide, {"auto_locs": jnp.zeros((2, 3)), "auto_scales": jnp.ones(2)}, rng_key=jax.random.PRNGKey(0)
        )
    with pytest.raises(KeyError, match="auto_scales"):
        mixvi.psis_khat(gauss_guide, {"auto_locs": jnp.zeros((2, 2))}, rng_key=jax.random.PRNGKey(0))
    fresh = mixvi.AutoIsotropicMixture(normal2, n_components=2, metric="isotropic")
    with pytest.raises(RuntimeError, match="not set up"):
        mixvi.psis_khat(fresh, p, rng_key=jax.random.PRNGKey(0))


# --------------------------------------------------------------------------------------------------
# component_summary
# --------------------------------------------------------------------------------------------------
def _exact_masses(locs, scales, weights=(0.5, 0.5)):
    """E_p[r_i] for p = 0.3 N(-4, 1) + 0.7 N(4, 1) by quadrature, r_i = pi_i N_i / sum_j pi_j N_j."""
    p = lambda x: 0.3 * stats.norm.pdf(x, -4, 1) + 0.7 * stats.norm.pdf(x, 4, 1)  # noqa: E731

    def r(x, i):
        dens = np.asarray(weights) * stats.norm.pdf(x, locs, scales)
        return dens[i] / dens.sum()

    return np.array(
        [integrate.quad(lambda x, i=i: p(x) * r(x, i), -30, 30, points=[-4, 0, 4], limit=200)[0] for i in range(2)]
    )


@pytest.mark.parametrize(
    "locs, scales",
    [([-4.0, 4.0], [1.0, 1.0]), ([-3.5, 4.2], [1.3, 0.8])],  # on the modes / off the modes, other widths
)
def test_component_masses_importance_weighted(locs, scales):
    """Importance-weighted masses match the quadrature E_p[r_i] within 4 se; uniform weights show 1/N."""
    guide = _bimodal_guide()
    params = {"auto_locs": jnp.array(locs)[:, None], "auto_scales": jnp.array(scales)}
    table = mixvi.component_summary(guide, params, rng_key=jax.random.PRNGKey(1), num_samples=8000)
    exact = _exact_masses(np.array(locs), np.array(scales))
    # uniform weights say 0.5 / 0.5; the target's mode masses are 0.3 / 0.7
    np.testing.assert_allclose(table["weight"], [0.5, 0.5])
    assert abs(exact[0] - 0.3) < 0.02
    assert np.all(np.abs(table["mass"].to_numpy() - exact) < 4 * table["mass_se"].to_numpy())
    assert np.all(table["mass_se"] < 0.02)
    assert table["mass"].sum() == pytest.approx(1.0, abs=1e-6)  # float32 responsibilities
    np.testing.assert_allclose(table["sigma"], scales, rtol=1e-6)
    np.testing.assert_allclose(table["loc:x"], locs, rtol=1e-6)  # identity transform
    assert list(table.index) == [0, 1] and table.index.name == "component"
    assert table.attrs["khat"] < 0.5 and table.attrs["num_samples"] == 8000


def test_component_summary_learned_weights():
    """With weight logits in the params the weight column shows softmax(logits), and masses use pi_i."""
    guide = mixvi.AutoIsotropicMixture(
        bimodal, n_components=2, weights="fisher-rao", init_loc_fn=init_to_value(values={"x": 0.0}), metric="isotropic"
    )
    guide.setup(jax.random.PRNGKey(0))
    logits = jnp.array([1.0, -1.0])  # weights 0.881 / 0.119
    params = {
        "auto_locs": jnp.array([[-4.0], [4.0]]),
        "auto_scales": jnp.array([1.0, 1.0]),
        "auto_weight_logits": logits,
    }
    table = mixvi.component_summary(guide, params, rng_key=jax.random.PRNGKey(1), num_samples=8000)
    weights = np.asarray(jax.nn.softmax(logits))
    np.testing.assert_allclose(table["weight"], weights, rtol=1e-6)
    np.testing.assert_allclose(table["weight"], [0.881, 0.119], atol=1e-3)
    exact = _exact_masses(np.array([-4.0, 4.0]), np.array([1.0, 1.0]), weights)
    assert abs(exact[1] - 0.7) < 0.02  # the masses are the target's, not the weights
    assert np.all(np.abs(table["mass"].to_numpy() - exact) < 4 * table["mass_se"].to_numpy())
    assert table.attrs["khat"] < 0.7  # w = p/q is bounded (by 0.7 / 0.119)


_BIMODAL: list = []


def _bimodal_guide():
    if not _BIMODAL:
        guide = mixvi.AutoIsotropicMixture(
            bimodal, n_components=2, init_loc_fn=init_to_value(values={"x": 0.0}), metric="isotropic"
        )
        guide.setup(jax.random.PRNGKey(0))
        _BIMODAL.append(guide)
    return _BIMODAL[0]


def test_component_summary_columns_and_transforms(reg):
    """Column names and order, centres mapped to the constrained space, k-hat > 0.7 warned."""
    guide, params, idx = reg
    with pytest.warns(RuntimeWarning, match="k-hat"):  # three isotropic blobs on an 8-D posterior: k-hat > 0.7
        table = mixvi.component_summary(guide, params, Y, rng_key=jax.random.PRNGKey(2), num_samples=500)
    assert table.attrs["khat"] > 0.7
    assert list(table.columns) == [
        "sigma", "weight", "mass", "mass_se",
        "loc:mu", "loc:sigma", "loc:beta[0]", "loc:beta[1]", "loc:beta[2]", "loc:|beta|",
    ]  # fmt: skip
    locs = np.asarray(params["auto_locs"])
    beta = locs[:, np.asarray(idx["beta"]).astype(int)]
    np.testing.assert_allclose(table["loc:sigma"], np.exp(locs[:, int(idx["sigma"])]), rtol=1e-5)  # HalfNormal: exp
    np.testing.assert_allclose(table["loc:mu"], locs[:, int(idx["mu"])], rtol=1e-6)
    np.testing.assert_allclose(table["loc:beta[1]"], beta[:, 1], rtol=1e-6)
    np.testing.assert_allclose(table["loc:|beta|"], np.linalg.norm(beta, axis=1), rtol=1e-5)
    assert table["mass"].sum() == pytest.approx(1.0, abs=1e-6)  # float32 responsibilities


# --------------------------------------------------------------------------------------------------
# to_datatree
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(reg):
    guide, params, _ = reg
    # the draws of q themselves (reweight='none'): these tests check q's log densities at its own draws
    return mixvi.to_datatree(
        guide, params, Y, rng_key=jax.random.PRNGKey(3), num_samples=500, num_chains=2, reweight="none"
    )


def test_datatree_groups_dims_and_constraints(tree):
    """The DataTree has the expected groups, dims and constrained values."""
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(tree.children)
    post = tree.posterior
    assert post["mu"].dims == ("chain", "draw") and post.sizes["chain"] == 2 and post.sizes["draw"] == 250
    assert post["beta"].dims == ("chain", "draw", "beta_dim_0") and post["beta"].shape == (2, 250, 6)
    assert bool((post["sigma"] > 0).all())  # constrained (HalfNormal), not log sigma
    np.testing.assert_allclose(post["sigma2"], post["sigma"] ** 2, rtol=1e-5)  # deterministic site
    assert tree.log_likelihood["y"].dims == ("chain", "draw", "y_dim_0")
    np.testing.assert_allclose(tree.observed_data["y"], Y, rtol=1e-6)
    for v in ("log_p", "log_q", "log_weight"):
        assert tree.sample_stats[v].dims == ("chain", "draw")


def test_datatree_log_densities_exact(tree, reg):
    """log_likelihood, log_p and log_q equal their closed forms at the exported draws."""
    guide, params, idx = reg
    post, st = tree.posterior, tree.sample_stats
    mu, sigma, beta = (np.asarray(post[v], np.float64) for v in ("mu", "sigma", "beta"))
    loglik = stats.norm.logpdf(Y, (mu + beta[..., 0])[..., None], sigma[..., None])
    np.testing.assert_allclose(tree.log_likelihood["y"], loglik, atol=2e-4)
    # log p = log joint + log|d sigma / d u| with sigma = exp(u): the unconstrained-space target
    log_joint = (
        stats.norm.logpdf(mu, 0, 5)
        + stats.halfnorm.logpdf(sigma, scale=2)
        + stats.norm.logpdf(beta).sum(-1)
        + loglik.sum(-1)
    )
    np.testing.assert_allclose(st["log_p"], log_joint + np.log(sigma), atol=2e-3)
    # log q at the unconstrained point z = (beta, mu, log sigma) in the guide's packing order
    z = np.zeros(mu.shape + (guide.latent_dim,))
    z[..., np.asarray(idx["beta"]).astype(int)] = beta
    z[..., int(idx["mu"])] = mu
    z[..., int(idx["sigma"])] = np.log(sigma)
    log_q = guide.get_posterior(params).log_prob(jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(st["log_q"], log_q, atol=2e-3)
    np.testing.assert_allclose(st["log_weight"], st["log_p"] - st["log_q"], atol=1e-5)


def test_datatree_arviz_summary_and_loo(tree):
    """ArviZ's summary, loo and loo_approximate_posterior run on the export."""
    table = az.summary(tree)
    assert {"mu", "sigma", "sigma2", "beta[0]", "beta[5]"} <= set(table.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k warnings: draws come from q, not from p
        loo = az.loo(tree)
        loo_q = az.loo_approximate_posterior(tree, log_p=tree.sample_stats["log_p"], log_q=tree.sample_stats["log_q"])
    assert np.isfinite(loo.elpd) and loo.n_samples == 500 and loo.n_data_points == 20
    assert np.isfinite(loo_q.elpd)


def test_datatree_reproducible_and_checks(reg, tree):
    """Same key, same export; other key, other draws; invalid sizes raise."""
    guide, params, _ = reg
    a = mixvi.to_datatree(guide, params, Y, rng_key=jax.random.PRNGKey(9), num_samples=500, reweight="none")
    b = mixvi.to_datatree(guide, params, Y, rng_key=jax.random.PRNGKey(9), num_samples=500, reweight="none")
    assert a.posterior.sizes["chain"] == 4 and a.posterior.sizes["draw"] == 125  # 4 pseudo-chains by default
    np.testing.assert_array_equal(a.posterior["beta"], b.posterior["beta"])
    np.testing.assert_array_equal(a.sample_stats["log_weight"], b.sample_stats["log_weight"])
    np.testing.assert_array_equal(a.log_likelihood["y"], b.log_likelihood["y"])
    other = tree.sample_stats["log_weight"].to_numpy().reshape(-1)  # key 3 instead of 9
    assert not np.array_equal(a.sample_stats["log_weight"].to_numpy().reshape(-1), other)
    with pytest.raises(ValueError, match="multiple of num_chains.*num_samples=42"):
        mixvi.to_datatree(guide, params, Y, rng_key=jax.random.PRNGKey(0), num_samples=40, num_chains=3)
    with pytest.raises(ValueError, match="num_samples"):
        mixvi.to_datatree(guide, params, Y, rng_key=jax.random.PRNGKey(0), num_samples=0)
    with pytest.raises(ValueError, match="num_chains"):
        mixvi.to_datatree(guide, params, Y, rng_key=jax.random.PRNGKey(0), num_chains=0)


# --------------------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------------------
def test_plot_components(gauss_guide):
    """The plot draws two circles per component, labels the axes, and rejects latents that are not 2-D."""
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    params = {"auto_locs": jnp.array([[-1.0, 0.5], [1.0, -0.5]]), "auto_scales": jnp.array([0.5, 0.8])}
    out = D.plot_components(gauss_guide, params, ax=ax, grid_size=30)
    assert out is ax
    assert len(ax.patches) == 4  # sigma and 2 sigma circles per component
    assert ax.get_xlabel() == "x[0] (unconstrained)" and ax.get_ylabel() == "x[1] (unconstrained)"
    with pytest.raises(ValueError, match="2-D"):
        D.plot_components(_bimodal_guide(), {"auto_locs": jnp.zeros((2, 1)), "auto_scales": jnp.ones(2)}, ax=ax)
