"""AutoIsotropicMixture as a NumPyro autoguide: conformance in the spirit of NumPyro's own tests,
and the SVI drop-in path agreeing with MixVI."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI, Predictive, RenyiELBO, Trace_ELBO, TraceGraph_ELBO, init_to_median, init_to_sample
from numpyro.infer.autoguide import AutoGuideList, AutoNormal
from numpyro.optim import optax_to_numpyro
from scipy import stats

import mixvi


def regression(x, y=None):
    w = numpyro.sample("w", dist.Normal(0, 3).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    mean = numpyro.deterministic("mean", x @ w)
    numpyro.sample("y", dist.Normal(mean, sigma), obs=y)


X = jax.random.normal(jax.random.PRNGKey(0), (30, 2))
Y = X @ jnp.array([1.5, -0.5]) + 0.3 * jax.random.normal(jax.random.PRNGKey(1), (30,))


@pytest.fixture(scope="module")
def fitted():
    guide = mixvi.AutoIsotropicMixture(regression, n_components=3)
    svi = SVI(regression, guide, optax_to_numpyro(mixvi.optim.ibw()), Trace_ELBO(num_particles=16))
    # the default metric is dense at d = 3; SVI trains the components and says it keeps that metric fixed
    with pytest.warns(UserWarning, match="SVI keeps a dense or low-rank metric fixed"):
        res = svi.run(jax.random.PRNGKey(2), 1500, X, Y, progress_bar=False)
    np.testing.assert_allclose(res.params["auto_metric_tril"], jnp.eye(3), atol=1e-6)
    return guide, res


def test_svi_fit_constrained_site_and_deterministic(fitted):
    guide, res = fitted
    # metric="auto" is dense at d = 3: a shared factor next to the locs and scales
    assert set(res.params) == {"auto_locs", "auto_scales", "auto_metric_tril"} == set(guide.param_names())
    assert res.params["auto_locs"].shape == (3, 3) and res.params["auto_scales"].shape == (3,)
    s = guide.sample_posterior(jax.random.PRNGKey(3), res.params, X, sample_shape=(500,))
    assert s["w"].shape == (500, 2) and s["sigma"].shape == (500,) and s["mean"].shape == (500, 30)
    assert bool(jnp.all(s["sigma"] > 0))
    np.testing.assert_allclose(s["mean"], jnp.einsum("nd,sd->sn", X, s["w"]), rtol=1e-5, atol=1e-5)
    # least squares answer, posterior sd ~ 0.06
    np.testing.assert_allclose(s["w"].mean(0), jnp.linalg.lstsq(X, Y)[0], atol=0.1)
    assert 0.15 < float(s["sigma"].mean()) < 0.5


def test_predictive_with_guide_and_with_samples(fitted):
    guide, res = fitted
    pred = Predictive(regression, guide=guide, params=res.params, num_samples=50)(jax.random.PRNGKey(4), X)
    assert pred["y"].shape == (50, 30)
    post = guide.sample_posterior(jax.random.PRNGKey(5), res.params, X, sample_shape=(50,))
    pred2 = Predictive(regression, posterior_samples=post)(jax.random.PRNGKey(6), X)
    assert pred2["y"].shape == (50, 30)
    # y ~ N(mean, sigma ~ 0.3): 50 draws average within ~4 standard errors of the posterior mean
    np.testing.assert_allclose(pred2["y"].mean(0), post["mean"].mean(0), atol=0.2)


def test_median_and_quantiles(fitted):
    guide, res = fitted
    med = guide.median(res.params)
    qs = guide.quantiles(res.params, [0.1, 0.5, 0.9])
    assert med["w"].shape == (2,) and qs["w"].shape == (3, 2) and qs["sigma"].shape == (3,)
    np.testing.assert_allclose(qs["w"][1], med["w"], rtol=1e-5)
    assert bool(jnp.all(qs["w"][0] < qs["w"][2])) and bool(jnp.all(qs["sigma"] > 0))
    # one component: exact Normal quantiles in unconstrained space
    g1 = mixvi.AutoIsotropicMixture(regression, n_components=1)
    g1.setup(jax.random.PRNGKey(0), X, Y)
    p = {"auto_locs": jnp.array([[0.5, -1.0, 0.0]]), "auto_scales": jnp.array([2.0])}
    q = g1.quantiles(p, [0.1])
    np.testing.assert_allclose(q["w"][0], jnp.array([0.5, -1.0]) + 2.0 * stats.norm.ppf(0.1), atol=1e-4)
    np.testing.assert_allclose(q["sigma"][0], np.exp(2.0 * stats.norm.ppf(0.1)), rtol=1e-4)
    with pytest.raises(ValueError, match="quantiles"):
        g1.quantiles(p, [1.5])


def test_pickle_roundtrip(fitted):
    guide, res = fitted
    g2 = pickle.loads(pickle.dumps(guide))
    a = guide.sample_posterior(jax.random.PRNGKey(7), res.params, X, sample_shape=(5,))
    b = g2.sample_posterior(jax.random.PRNGKey(7), res.params, X, sample_shape=(5,))
    np.testing.assert_array_equal(a["w"], b["w"])


@pytest.mark.parametrize("elbo", [RenyiELBO(alpha=0.5, num_particles=4), TraceGraph_ELBO(num_particles=4)])
def test_other_elbos_use_reparametrised_gradients(elbo):
    guide = mixvi.AutoIsotropicMixture(regression, n_components=2)
    svi = SVI(regression, guide, optax_to_numpyro(mixvi.optim.md()), elbo)
    res = svi.run(jax.random.PRNGKey(8), 300, X, Y, progress_bar=False)
    assert bool(jnp.all(jnp.isfinite(res.losses)))
    assert float(res.losses[-50:].mean()) < float(res.losses[:50].mean())
    assert guide.get_posterior(res.params).has_rsample


def test_inside_autoguidelist_with_for_mixture():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.LogNormal(0, 1))
        numpyro.sample("y", dist.Normal(mu, tau), obs=y)

    y = 2.0 + jax.random.normal(jax.random.PRNGKey(0), (50,))
    guide = AutoGuideList(model)
    guide.append(mixvi.AutoIsotropicMixture(numpyro.handlers.block(model, hide=["tau"]), n_components=2, prefix="mix"))
    guide.append(AutoNormal(numpyro.handlers.block(model, expose=["tau"])))
    tx = mixvi.optim.for_mixture(mixvi.optim.ibw(), other=optax.adam(0.02))
    res = SVI(model, guide, optax_to_numpyro(tx), Trace_ELBO(num_particles=8)).run(
        jax.random.PRNGKey(1), 1500, y, progress_bar=False
    )
    assert {"mix_locs", "mix_scales"} <= set(res.params)
    s = guide.sample_posterior(jax.random.PRNGKey(2), res.params, y, sample_shape=(400,))
    assert abs(float(s["mu"].mean()) - float(y.mean())) < 0.15
    assert abs(float(s["tau"].mean()) - float(y.std())) < 0.25
    pred = Predictive(model, guide=guide, params=res.params, num_samples=10)(jax.random.PRNGKey(3), None)
    assert pred["y"].shape == (10,)


def test_initialisation_rules_are_seedable():
    g = mixvi.AutoIsotropicMixture(regression, n_components=4)
    p = g.setup(jax.random.PRNGKey(0), X, Y)
    locs = p["auto_locs"]
    # init_to_uniform: independent draws in (-2, 2) in unconstrained space, all distinct
    assert bool(jnp.all(jnp.abs(locs) < 2)) and len({tuple(np.round(r, 6)) for r in np.asarray(locs)}) == 4
    np.testing.assert_array_equal(
        locs, mixvi.AutoIsotropicMixture(regression, n_components=4).setup(jax.random.PRNGKey(0), X, Y)["auto_locs"]
    )
    g2 = mixvi.AutoIsotropicMixture(regression, n_components=500, init_loc_fn=init_to_median, init_scale=0.5)
    locs2 = g2.setup(jax.random.PRNGKey(1), X, Y)["auto_locs"]
    centre = g2._init_latent
    np.testing.assert_allclose(locs2.mean(0), centre, atol=0.1)
    np.testing.assert_allclose(locs2.std(0), 0.5, rtol=0.15)
    np.testing.assert_allclose(g2.setup(jax.random.PRNGKey(1), X, Y)["auto_scales"], 0.5)


def test_svi_path_matches_mixvi_step():
    """One step from the same iterate: SVI + Trace_ELBO + optim.ibw(gamma) equals MixVI's IBW step up
    to Monte-Carlo noise (both estimate the same expected update)."""
    prec = jnp.array([1.0, 4.0])

    def model():
        numpyro.sample("x", dist.Normal(jnp.array([1.0, -1.0]), 1 / jnp.sqrt(prec)).to_event(1))

    with jax.enable_x64(True):
        init = {"auto_locs": jnp.array([[0.0, 0.0], [2.0, 1.0]]), "auto_scales": jnp.array([0.7, 1.3])}
        gamma = 0.2
        g1 = mixvi.AutoIsotropicMixture(model, n_components=2)
        vi = mixvi.MixVI(model, g1, step_size=gamma, num_samples=20_000)
        s1, _ = vi.update(vi.init(jax.random.PRNGKey(0), init_params=init))
        p1 = vi.get_params(s1)

        # Trace_ELBO's gradient carries the score term d/dtheta log q(x) (mean zero, not zero): one
        # 40k-particle step scatters ~2% in sigma across seeds, so average three 100k-particle steps
        steps = []
        for seed in range(3):
            g2 = mixvi.AutoIsotropicMixture(model, n_components=2)
            svi = SVI(model, g2, optax_to_numpyro(mixvi.optim.ibw(gamma)), Trace_ELBO(num_particles=100_000))
            st, _ = svi.update(svi.init(jax.random.PRNGKey(seed + 1), init_params=init))
            steps.append(svi.get_params(st))
        p2 = jax.tree.map(lambda *a: sum(a) / len(a), *steps)
        # exact expected step for N = 2 is not closed form; the two estimators must agree within MC error
        np.testing.assert_allclose(p1["auto_locs"], p2["auto_locs"], atol=0.02)
        np.testing.assert_allclose(p1["auto_scales"], p2["auto_scales"], rtol=0.015)
        # and both moved: the step is not trivially zero
        assert float(jnp.max(jnp.abs(p1["auto_locs"] - init["auto_locs"]))) > 0.1


@pytest.mark.parametrize(
    "options",
    [{}, {"init_loc_fn": init_to_median}, {"metric": "diagonal"}, {"metric": "dense", "weights": "fisher-rao"}],
)
def test_setup_returns_the_params_of_a_guide_call(options):
    """setup's params equal, bit for bit, the param sites of a guide call under the same seed."""
    params = mixvi.AutoIsotropicMixture(regression, n_components=3, **options).setup(jax.random.PRNGKey(7), X, Y)
    guide = mixvi.AutoIsotropicMixture(regression, n_components=3, **options)
    with numpyro.handlers.trace() as tr, numpyro.handlers.seed(rng_seed=jax.random.PRNGKey(7)):
        guide(X, Y)
    called = {name: site["value"] for name, site in tr.items() if site["type"] == "param"}
    assert params.keys() == called.keys()
    for name in params:
        np.testing.assert_array_equal(params[name], called[name])


def test_component_draws_compile_once_per_model_structure():
    """The random initial means of a second guide on the same model and shapes reuse one compiled program:
    the check of the uniform draws (the default init) and NumPyro's search (init_to_sample)."""
    from mixvi import guide as guide_module

    def model(x, y=None):
        regression(x, y)

    for seed in (0, 1):
        mixvi.AutoIsotropicMixture(model, n_components=4).setup(jax.random.PRNGKey(seed), X, Y)
        mixvi.AutoIsotropicMixture(model, n_components=4, init_loc_fn=init_to_sample).setup(
            jax.random.PRNGKey(seed), X, Y
        )
    checks = [fn for key, fn in guide_module._VALUES.items() if key[0][0] is model]
    assert len(checks) == 1 and checks[0]._cache_size() == 1
    draws = [fn for key, fn in guide_module._DRAWS.items() if key[0][0] is model]
    assert len(draws) == 1 and draws[0]._cache_size() == 1


def test_uniform_init_redraws_components_whose_start_is_not_finite():
    """init_to_uniform(radius=2) on a target that is -inf for x > 1: every component starts inside (-2, 1],
    drawn again where the first draw was not finite, and the draws are uniform (both halves are hit)."""

    def half_line():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        numpyro.factor("cut", jnp.where(x[0] > 1.0, -jnp.inf, 0.0))

    params = mixvi.AutoIsotropicMixture(half_line, n_components=40).setup(jax.random.PRNGKey(0))
    locs = np.asarray(params["auto_locs"])[:, 0]
    assert np.all((locs > -2.0) & (locs <= 1.0)), locs
    assert np.sum(locs < -0.5) >= 8 and np.sum(locs > -0.5) >= 8, locs


def test_sample_posterior_reads_num_samples_as_sample_shape(fitted):
    """sample_posterior(num_samples=n) returns n draws with a warning instead of one draw silently."""
    guide, res = fitted
    with pytest.warns(UserWarning, match="read as sample_shape"):
        s = guide.sample_posterior(jax.random.PRNGKey(3), res.params, X, num_samples=7)
    assert s["w"].shape == (7, 2)
    with pytest.raises(ValueError, match="not both"):
        guide.sample_posterior(jax.random.PRNGKey(3), res.params, X, num_samples=7, sample_shape=(7,))


def test_setup_is_pure_under_jit_and_vmap():
    """Guide set-up with the default random init runs under jax.jit and jax.vmap and gives the eager params."""
    guide = mixvi.AutoIsotropicMixture(regression, n_components=4)
    eager = guide.setup(jax.random.PRNGKey(0), X, Y)
    traced = mixvi.AutoIsotropicMixture(regression, n_components=4)
    jitted = jax.jit(lambda k: traced.setup(k, X, Y))(jax.random.PRNGKey(0))
    # NumPyro orders the latent by its set-up trace, which differs under jit: compare site by site
    by_site, by_site_jit = guide.constrain(eager["auto_locs"], eager), traced.constrain(jitted["auto_locs"], jitted)
    for name in ("w", "sigma"):
        np.testing.assert_allclose(by_site_jit[name], by_site[name], rtol=1e-5, atol=1e-6)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batched = jax.vmap(lambda k: mixvi.AutoIsotropicMixture(regression, n_components=4).setup(k, X, Y))(keys)
    assert batched["auto_locs"].shape == (3, 4, eager["auto_locs"].shape[1])
    assert len({tuple(np.round(np.asarray(b).ravel(), 5)) for b in batched["auto_locs"]}) == 3


def test_init_to_sample_draws_every_component_from_the_prior():
    """With init_to_sample every component starts at its own prior draw of every site (distinct components,
    each site's values from that site's prior)."""

    def two_sites():
        numpyro.sample("b", dist.Normal(5.0, 0.01).expand([3]).to_event(1))
        numpyro.sample("a", dist.Normal(-5.0, 0.01))

    guide = mixvi.AutoIsotropicMixture(two_sites, n_components=6, init_loc_fn=init_to_sample)
    params = guide.setup(jax.random.PRNGKey(0))
    draws = guide.constrain(params["auto_locs"], params)
    np.testing.assert_allclose(draws["a"], -5.0, atol=0.05)
    np.testing.assert_allclose(draws["b"], 5.0, atol=0.05)
    assert len({float(a) for a in draws["a"]}) == 6


def test_uniform_starts_skip_numpyros_search_and_keep_its_structure(monkeypatch):
    """With several components drawing uniform starts, the set-up takes the model's structure without
    NumPyro's search for a valid initial point (which evaluates V op by op); the latent layout, V and the
    constraining map are those of NumPyro's own set-up (the one-component guide, which still uses it)."""
    x, y = X, Y
    numpyro_setup = mixvi.guide.initialize_model
    monkeypatch.setattr(mixvi.guide, "initialize_model", lambda *a, **k: pytest.fail("NumPyro's search was run"))
    fast = mixvi.AutoIsotropicMixture(regression, n_components=4)
    fast.setup(jax.random.PRNGKey(0), x, y)
    monkeypatch.setattr(mixvi.guide, "initialize_model", numpyro_setup)
    reference = mixvi.AutoIsotropicMixture(regression, n_components=1)
    reference.setup(jax.random.PRNGKey(0), x, y)

    assert fast.latent_dim == reference.latent_dim
    assert list(fast._init_locs) == list(reference._init_locs)
    assert list(fast.prototype_trace) == list(reference.prototype_trace)
    z = jax.random.normal(jax.random.PRNGKey(1), (5, fast.latent_dim))
    key = jax.random.PRNGKey(2)
    np.testing.assert_allclose(
        jax.vmap(fast.potential_fn(x, y), (0, None))(z, key),
        jax.vmap(reference.potential_fn(x, y), (0, None))(z, key),
        rtol=1e-6,
    )
    for name, value in fast._unpack_latent(z).items():
        np.testing.assert_array_equal(value, reference._unpack_latent(z)[name])


def test_structure_trace_draws_nothing_and_the_starts_stay_uniform(monkeypatch):
    """The structure-only trace puts every latent site at the image of 0 under its support's bijection
    (no uniform draw per site, each of which would compile on its own); the components still start
    uniform in (-2, 2) on the unconstrained latent, all different, and with the same key the same."""
    monkeypatch.setattr(
        mixvi.guide.dist, "Uniform", lambda *a, **k: pytest.fail("the structure trace drew a uniform point")
    )
    guide = mixvi.AutoIsotropicMixture(regression, n_components=4)
    params = guide.setup(jax.random.PRNGKey(0), X, Y)
    np.testing.assert_array_equal(guide._init_locs["w"], np.zeros(2))
    np.testing.assert_allclose(guide._init_locs["sigma"], 0.0, atol=1e-7)  # log of HalfNormal's image of 0
    locs = np.asarray(params["auto_locs"])
    assert np.all(np.abs(locs) < 2.0) and len({tuple(row) for row in locs}) == 4
    again = mixvi.AutoIsotropicMixture(regression, n_components=4).setup(jax.random.PRNGKey(0), X, Y)
    np.testing.assert_array_equal(again["auto_locs"], locs)


def test_set_up_falls_back_to_numpyros_own_when_its_private_steps_differ(monkeypatch):
    """A NumPyro without the private set-up steps the guide uses: it sets up through ``initialize_model``
    and fits the same latent."""
    from types import SimpleNamespace

    monkeypatch.setattr(mixvi.guide, "numpyro_util", SimpleNamespace())
    calls = []
    numpyro_setup = mixvi.guide.initialize_model
    monkeypatch.setattr(mixvi.guide, "initialize_model", lambda *a, **k: calls.append(1) or numpyro_setup(*a, **k))
    guide = mixvi.AutoIsotropicMixture(regression, n_components=3)
    params = guide.setup(jax.random.PRNGKey(0), X, Y)
    assert calls and guide.latent_dim == 3 and params["auto_locs"].shape == (3, 3)
