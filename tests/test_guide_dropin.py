"""AutoIsotropicMixture used the way NumPyro users use AutoNormal: enumerated discrete sites, errors at the
initial point, the init strategies per component, and SteinVI."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro import handlers
from numpyro.infer import (
    SVI,
    Trace_ELBO,
    TraceEnum_ELBO,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)
from numpyro.optim import Adam, optax_to_numpyro

import mixvi

# --- enumerated discrete sites ---------------------------------------------------------------------------


def gmm(data):
    """Two-component Gaussian mixture; the assignments are marked for enumeration."""
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("components", 2):
        locs = numpyro.sample("locs", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", len(data)):
        assignment = numpyro.sample("assignment", dist.Categorical(weights), infer={"enumerate": "parallel"})
        numpyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


K1, K2 = jax.random.split(jax.random.PRNGKey(0))
DATA = jnp.concatenate([-2.0 + 0.5 * jax.random.normal(K1, (60,)), 3.0 + 0.5 * jax.random.normal(K2, (40,))])
# NUTS with the assignments enumerated (1000 draws after 500 warm-up, seed 3): the sorted component locations
# have posterior means (-1.940, 2.744) and sds (0.073, 0.091); the scale 0.570 +- 0.040
NUTS_LOCS, NUTS_SCALE = np.array([-1.940, 2.744]), 0.570


def sorted_locs(guide, params):
    draws = guide.sample_posterior(jax.random.PRNGKey(2), params, DATA, sample_shape=(2000,))
    assert "assignment" not in draws  # summed out: the guide neither samples nor reports it
    return np.sort(np.asarray(draws["locs"]), axis=1), np.asarray(draws["scale"])


def test_trace_enum_elbo_fits_the_continuous_sites_of_an_enumerated_mixture():
    """SVI + TraceEnum_ELBO: the guide covers weights, scale and locs and leaves the assignments to the ELBO."""
    pytest.importorskip("funsor")
    guide = mixvi.AutoIsotropicMixture(gmm, n_components=2, metric="isotropic")
    svi = SVI(gmm, guide, optax_to_numpyro(mixvi.optim.ibw()), TraceEnum_ELBO())
    # a mixture likelihood has local optima (e.g. both locations between the clusters, -ELBO ~209 against
    # ~166): of two starts keep the one with the lower final loss, as a user would
    runs = [svi.run(jax.random.PRNGKey(seed), 1000, DATA, progress_bar=False) for seed in (1, 2)]
    res = min(runs, key=lambda r: float(jnp.mean(r.losses[-100:])))
    assert bool(jnp.all(jnp.isfinite(res.losses)))
    locs, scale = sorted_locs(guide, res.params)
    np.testing.assert_allclose(locs.mean(0), NUTS_LOCS, atol=0.15)
    assert abs(float(scale.mean()) - NUTS_SCALE) < 0.1
    # the guide's sites sit in the model's plates (TraceEnum_ELBO lines their dims up with the enumerated ones)
    with handlers.trace() as tr, handlers.seed(rng_seed=0), handlers.substitute(data=res.params):
        guide(DATA)
    assert [f.name for f in tr["locs"]["cond_indep_stack"]] == ["components"]


@pytest.mark.slow
def test_mixvi_sums_enumerated_sites_out_and_matches_nuts():
    """MixVI's potential sums the enumerated assignments out (NumPyro's enumeration, as in its HMC)."""
    pytest.importorskip("funsor")
    guide = mixvi.AutoIsotropicMixture(gmm, n_components=4)
    res = mixvi.MixVI(gmm, guide).run(jax.random.PRNGKey(1), 3000, DATA, progress_bar=False)
    locs, scale = sorted_locs(guide, res.params)
    np.testing.assert_allclose(locs.mean(0), NUTS_LOCS, atol=0.05)
    np.testing.assert_allclose(locs.std(0), [0.073, 0.091], rtol=0.3)
    assert abs(float(scale.mean()) - NUTS_SCALE) < 0.03


def test_mixvi_potential_is_the_enumerated_marginal():
    """V(z) of an enumerated model equals -log p(continuous sites, data) with the assignments summed by hand."""
    pytest.importorskip("funsor")
    guide = mixvi.AutoIsotropicMixture(gmm, n_components=2)
    params = guide.setup(jax.random.PRNGKey(0), DATA)
    z = params["auto_locs"][0]
    v = guide.potential_fn(DATA)(z, jax.random.PRNGKey(1))
    site = guide.constrain(z, params)
    w, s, m = site["weights"], site["scale"], site["locs"]
    mix = jax.scipy.special.logsumexp(jnp.log(w) + dist.Normal(m, s).log_prob(DATA[:, None]), axis=1).sum()
    # the priors in unconstrained space: log densities plus log-Jacobians of the latents' transforms
    by_hand = 0.0
    for name, prior in (("weights", dist.Dirichlet(jnp.ones(2))), ("scale", dist.LogNormal(0.0, 1.0))):
        t = dist.biject_to(prior.support)
        u = t.inv(site[name])
        by_hand += prior.log_prob(site[name]) + jnp.sum(t.log_abs_det_jacobian(u, site[name]))
    by_hand += dist.Normal(0.0, 10.0).log_prob(m).sum() + mix
    np.testing.assert_allclose(v, -by_hand, rtol=1e-4)


def test_discrete_site_without_enumeration_names_the_site_and_both_recipes():
    def model(data):
        p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        with numpyro.plate("data", len(data)):
            numpyro.sample("flip", dist.Bernoulli(p))

    with pytest.raises(ValueError) as err:
        mixvi.AutoIsotropicMixture(model).setup(jax.random.PRNGKey(0), DATA)
    text = str(err.value)
    for part in ("'flip'", "infer={'enumerate': 'parallel'}", "config_enumerate", "TraceEnum_ELBO()", "hide=['flip']"):
        assert part in text


def test_enumeration_without_funsor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "funsor", None)  # import funsor now raises ImportError
    with pytest.raises(ImportError, match="'assignment'.*pip install funsor"):
        mixvi.AutoIsotropicMixture(gmm).setup(jax.random.PRNGKey(0), DATA)


# --- errors at the initial point ------------------------------------------------------------------------


def log_model(y):
    x = numpyro.sample("x", dist.Normal(1.0, 1.0))
    numpyro.sample("y", dist.Normal(jnp.log(x), 1.0), obs=y)


def test_invalid_initial_point_names_the_site_the_cause_and_the_fix():
    """NumPyro alone stops with 'Normal distribution got invalid loc parameter' and no site."""
    guide = mixvi.AutoIsotropicMixture(log_model, init_loc_fn=init_to_value(values={"x": -1.0}))
    with pytest.raises(ValueError) as err:
        guide.setup(jax.random.PRNGKey(0), jnp.ones(3))
    text = str(err.value)
    for part in ("observed site 'y'", "invalid loc", "x = -1.0", "init_to_value", "initial point", "init_to_median"):
        assert part in text
    # SVI sets the guide up the same way
    with pytest.raises(ValueError, match="observed site 'y'"):
        SVI(log_model, guide, Adam(0.1), Trace_ELBO()).init(jax.random.PRNGKey(0), jnp.ones(3))


def test_non_finite_gradient_at_the_initial_point_names_the_latent():
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(jnp.sqrt(jnp.abs(x)), 1.0), obs=1.0)

    guide = mixvi.AutoIsotropicMixture(model, init_loc_fn=init_to_value(values={"x": 0.0}))
    with pytest.raises(ValueError, match="gradient.*latent site\\(s\\) 'x'.*x = 0.0"):
        guide.setup(jax.random.PRNGKey(0))


def test_invalid_random_initial_points_are_redrawn_under_jit():
    """Under jit nothing is checked eagerly: the random init redraws until the density is finite."""
    guide = mixvi.AutoIsotropicMixture(log_model, n_components=6)
    params = jax.jit(lambda k: guide.setup(k, jnp.ones(3)))(jax.random.PRNGKey(0))
    assert bool(jnp.all(guide.constrain(params["auto_locs"], params)["x"] > 0))


# --- init strategies per component ----------------------------------------------------------------------


def two_sites():
    numpyro.sample("w", dist.Normal(3.0, 0.1).expand([2]).to_event(1))
    numpyro.sample("sigma", dist.HalfNormal(2.0))


def component_locs(init_loc_fn, n=400, init_scale=0.1):
    guide = mixvi.AutoIsotropicMixture(two_sites, n_components=n, init_loc_fn=init_loc_fn, init_scale=init_scale)
    params = guide.setup(jax.random.PRNGKey(0))
    by_site = guide.constrain(params["auto_locs"], params)
    # unconstrained coordinates per site: w as is, log sigma
    return np.asarray(by_site["w"]), np.log(np.asarray(by_site["sigma"]))


def test_init_to_value_puts_every_component_around_the_value():
    w, log_sigma = component_locs(init_to_value(values={"w": jnp.array([1.0, 2.0]), "sigma": 0.5}))
    np.testing.assert_allclose(w.mean(0), [1.0, 2.0], atol=0.03)
    np.testing.assert_allclose(log_sigma.mean(), np.log(0.5), atol=0.03)
    np.testing.assert_allclose(np.concatenate([w.std(0), [log_sigma.std()]]), 0.1, rtol=0.2)  # init_scale


def test_init_to_value_draws_the_sites_without_a_value_per_component():
    """NumPyro starts the sites init_to_value does not name as init_to_uniform: here every component draws its own."""
    w, log_sigma = component_locs(init_to_value(values={"sigma": 0.5}))
    np.testing.assert_allclose(log_sigma.mean(), np.log(0.5), atol=0.03)
    assert np.all(np.abs(w) < 2.0) and np.all(w.std(0) > 0.9)  # uniform on (-2, 2): sd 1.15
    assert len({tuple(np.round(r, 5)) for r in w}) == len(w)


def test_init_to_median_centres_the_components_on_the_prior_median():
    w, log_sigma = component_locs(init_to_median(num_samples=2000))
    # HalfNormal(2): median 2 * 0.6745
    np.testing.assert_allclose(w.mean(0), 3.0, atol=0.03)
    np.testing.assert_allclose(log_sigma.mean(), np.log(2 * 0.6745), atol=0.05)
    np.testing.assert_allclose(w.std(0), 0.1, rtol=0.2)


def test_init_to_uniform_draws_every_component_within_the_radius():
    w, log_sigma = component_locs(init_to_uniform(radius=0.5))
    coords = np.concatenate([w, log_sigma[:, None]], axis=1)
    assert np.all(np.abs(coords) <= 0.5)
    np.testing.assert_allclose(coords.std(0), 0.5 / np.sqrt(3), rtol=0.15)  # uniform on (-r, r)


@pytest.mark.parametrize("init", [init_to_sample, init_to_sample(), init_to_median(num_samples=1)])
def test_init_to_sample_in_every_spelling_draws_each_component_from_the_prior(init):
    """``init_to_sample()`` is NumPyro's ``init_to_median(num_samples=1)``: a prior draw per component too."""
    w, log_sigma = component_locs(init, init_scale=1e-3)
    np.testing.assert_allclose(w.std(0), 0.1, rtol=0.2)  # the prior's sd, not init_scale
    assert log_sigma.std() > 0.5


# --- SteinVI --------------------------------------------------------------------------------------------


def test_steinvi_is_refused_with_the_reason_and_the_alternatives():
    from numpyro.contrib.einstein import RBFKernel, SteinVI

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    stein = SteinVI(model, mixvi.AutoIsotropicMixture(model, n_components=2), Adam(0.05), RBFKernel())
    with pytest.raises(TypeError, match="SteinVI.*collapse.*mixvi.MixVI"):
        stein.init(jax.random.PRNGKey(0), jnp.ones(5))
    # the same guide trains under SVI
    guide = mixvi.AutoIsotropicMixture(model, n_components=2, metric="isotropic")
    res = SVI(model, guide, optax_to_numpyro(optax.adam(0.05)), Trace_ELBO()).run(
        jax.random.PRNGKey(0), 50, jnp.ones(5), progress_bar=False
    )
    assert bool(jnp.all(jnp.isfinite(res.losses)))
