"""The forward-KL refinement (mixvi.refine): its fixed points against closed forms, its guards, and
the guide-level call."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import mixvi
import mixvi.engine as engine_module
import mixvi.refinement as refine_module
from mixvi.engine import POOR_STEIN, REFINE_KEY, REFINE_STEIN
from mixvi.family import IsotropicMixture
from mixvi.refinement import MIN_ESS, default_draws, in_blocks, refine_mixture, refine_step, truncated_log_weights


def gaussian_log_density(mean, cov):
    prec = jnp.linalg.inv(cov)

    def log_p(z):
        r = z - mean
        return -0.5 * jnp.einsum("si,ij,sj->s", r, prec, r)

    return log_p


def test_one_component_reaches_the_forward_kl_minimiser_not_the_reverse_one():
    # p = N(mu, diag(1, 4)), q one isotropic Gaussian: argmin KL(p||q) has sigma^2 = tr(Sigma)/d = 2.5,
    # argmin KL(q||p) would have d / tr(Sigma^-1) = 1.6
    mean = jnp.array([1.0, -2.0])
    log_p = gaussian_log_density(mean, jnp.diag(jnp.array([1.0, 4.0])))
    q = IsotropicMixture(jnp.array([[0.5, -1.5]]), jnp.array([1.3]))
    out, info = jax.jit(lambda k, q: refine_mixture(k, q, log_p, 30, 20000, 0.5))(jax.random.PRNGKey(0), q)
    np.testing.assert_allclose(out.locs[0], mean, atol=0.05)
    assert abs(float(out.scales[0]) ** 2 - 2.5) < 0.08
    assert info.ess.shape == (30,) and float(info.ess[-1]) > 10000
    assert out.weights is None  # uniform weights stay uniform


def test_dense_metric_is_kept_and_the_target_in_the_family_is_reached():
    # p = N(mu, s^2 L L^T): q with the same L reaches m = mu, sigma = s
    tril = jnp.array([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.4, 2.0]])
    mean, s = jnp.array([0.5, 1.0, -1.0]), 0.7
    log_p = gaussian_log_density(mean, s**2 * tril @ tril.T)
    q = IsotropicMixture(jnp.array([[0.8, 0.7, -0.5]]), jnp.array([0.5]), None, None, tril)
    out, _ = jax.jit(lambda k, q: refine_mixture(k, q, log_p, 30, 20000))(jax.random.PRNGKey(1), q)
    np.testing.assert_array_equal(out.scale_tril, tril)
    np.testing.assert_allclose(out.locs[0], mean, atol=0.05)
    assert abs(float(out.scales[0]) / s - 1) < 0.03


def test_learned_weights_move_to_the_modes_masses():
    # p = 0.7 N(-4, 1) + 0.3 N(4, 1); q's components sit on the modes with equal weights
    def log_p(z):
        return jnp.logaddexp(
            jnp.log(0.7) + dist.Normal(-4.0, 1.0).log_prob(z[:, 0]),
            jnp.log(0.3) + dist.Normal(4.0, 1.0).log_prob(z[:, 0]),
        )

    q = IsotropicMixture(jnp.array([[-4.0], [4.0]]), jnp.ones(2), jnp.array([0.5, 0.5]))
    out, _ = jax.jit(lambda k, q: refine_mixture(k, q, log_p, 20, 20000, 0.5, True))(jax.random.PRNGKey(2), q)
    np.testing.assert_allclose(out.weights, [0.7, 0.3], atol=0.02)
    np.testing.assert_allclose(out.locs[:, 0], [-4.0, 4.0], atol=0.05)
    # uniform weights given and learn_weights: the carry starts from explicit weights
    q0 = IsotropicMixture(q.locs, q.scales)
    out0, _ = refine_mixture(jax.random.PRNGKey(2), q0, log_p, 20, 20000, 0.5, True)
    np.testing.assert_allclose(out0.weights, [0.7, 0.3], atol=0.02)


def test_a_component_no_draw_speaks_for_keeps_its_values():
    log_p = gaussian_log_density(jnp.zeros(2), jnp.eye(2))
    q = IsotropicMixture(jnp.array([[0.2, 0.0], [60.0, 60.0]]), jnp.array([1.0, 0.5]))
    out, info = refine_step(jax.random.PRNGKey(3), q, log_p, 4000)
    assert int(info.num_updated) == 1
    np.testing.assert_array_equal(out.locs[1], q.locs[1])
    assert float(out.scales[1]) == float(q.scales[1])
    assert float(jnp.linalg.norm(out.locs[0])) < 0.2  # the served one moved towards p's mean


def test_draws_where_log_p_is_not_finite_get_no_weight():
    # p: a standard normal cut to x < 0 (log p = -inf, or NaN, on the other side)
    def log_p(z):
        x = z[:, 0]
        return jnp.where(x < 0, -0.5 * x**2, jnp.where(x < 1, -jnp.inf, jnp.nan))

    q = IsotropicMixture(jnp.zeros((1, 1)), jnp.ones(1))
    out, info = refine_mixture(jax.random.PRNGKey(4), q, log_p, 15, 20000)
    assert bool(jnp.all(jnp.isfinite(out.locs))) and bool(jnp.all(jnp.isfinite(out.scales)))
    # the half-normal's mean is -sqrt(2/pi) = -0.80
    assert abs(float(out.locs[0, 0]) + np.sqrt(2 / np.pi)) < 0.05
    assert int(info.num_finite[0]) < 20000
    # no finite draw at all: nothing moves
    same, info = refine_step(jax.random.PRNGKey(5), q, lambda z: jnp.full(z.shape[:1], -jnp.inf), 100)
    np.testing.assert_array_equal(same.locs, q.locs)
    assert int(info.num_updated) == 0


def test_truncation_caps_weights_at_mean_times_root_s():
    # 9999 weights 1 and one 1000: the mean is 1.0999, the cap 109.99, the largest normalised weight
    # 109.99 / (9999 + 109.99) instead of 1000 / 10999
    log_w = jnp.concatenate([jnp.zeros(9999), jnp.array([np.log(1000.0)])])
    w = np.exp(np.asarray(truncated_log_weights(log_w), np.float64))
    cap = 10999 / 10000 * 100
    np.testing.assert_allclose(w.max(), cap / (9999 + cap), rtol=1e-4)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)


def test_a_population_with_too_few_effective_draws_moves_nothing():
    # one draw carries all the weight (ESS ~ 1 < MIN_ESS): the iteration keeps q
    log_p = gaussian_log_density(jnp.full(2, 40.0), 1e-4 * jnp.eye(2))
    q = IsotropicMixture(jnp.zeros((3, 2)), jnp.ones(3))
    out, info = refine_step(jax.random.PRNGKey(6), q, log_p, 1000)
    assert float(info.ess) < MIN_ESS
    np.testing.assert_array_equal(out.locs, q.locs)
    np.testing.assert_array_equal(out.scales, q.scales)
    assert int(info.num_updated) == 0


def normal_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    log_s = numpyro.sample("log_s", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, jnp.exp(log_s)), obs=y)


@pytest.fixture(scope="module")
def normal_fit():
    y = jnp.array([0.3, -0.5, 1.2, 0.8, -0.1])
    guide = mixvi.AutoIsotropicMixture(normal_model, n_components=3)
    result = mixvi.MixVI(normal_model, guide).run(jax.random.PRNGKey(0), 300, y, progress_bar=False)
    return guide, result.params, y


def test_refine_a_guide_keeps_its_params_structure_and_is_reproducible(normal_fit):
    guide, params, y = normal_fit
    one = mixvi.refine(guide, params, y, rng_key=jax.random.PRNGKey(7), num_iterations=3, num_draws=2000)
    two = mixvi.refine(guide, params, y, rng_key=jax.random.PRNGKey(7), num_iterations=3, num_draws=2000)
    assert set(one.params) == set(params)
    for k in params:
        assert one.params[k].shape == params[k].shape
        np.testing.assert_array_equal(one.params[k], two.params[k])
    assert not np.array_equal(one.params[f"{guide.prefix}_locs"], params[f"{guide.prefix}_locs"])
    draws = guide.sample_posterior(jax.random.PRNGKey(1), one.params, sample_shape=(10,))
    assert draws["mu"].shape == (10,)
    assert one.info.ess.shape == (3,)


def test_refine_moves_learned_weights_only(normal_fit):
    _, _, y = normal_fit
    guide = mixvi.AutoIsotropicMixture(normal_model, n_components=3, weights="fisher-rao")
    params = mixvi.MixVI(normal_model, guide).run(jax.random.PRNGKey(0), 100, y, progress_bar=False).params
    out = mixvi.refine(guide, params, y, rng_key=jax.random.PRNGKey(7), num_iterations=2, num_draws=2000).params
    name = f"{guide.prefix}_weight_logits"
    assert name in out and not np.allclose(out[name], params[name])
    np.testing.assert_allclose(float(jax.nn.softmax(out[name]).sum()), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"damping": 0.0}, "damping must be a number in"),
        ({"damping": 1.5}, "damping must be a number in"),
        ({"num_iterations": 0}, "num_iterations must be an integer"),
        ({"num_draws": 2.5}, "num_draws must be an integer"),
    ],
)
def test_bad_settings_are_refused(normal_fit, kwargs, match):
    guide, params, y = normal_fit
    with pytest.raises(ValueError, match=match):
        mixvi.refine(guide, params, y, rng_key=jax.random.PRNGKey(0), **kwargs)


def test_only_a_mixture_guide_and_a_key_are_accepted(normal_fit):
    guide, params, y = normal_fit
    with pytest.raises(TypeError, match="refine takes an AutoIsotropicMixture"):
        mixvi.refine(numpyro.infer.autoguide.AutoNormal(normal_model), params, y, rng_key=jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="rng_key must be a jax.random key"):
        mixvi.refine(guide, params, y, rng_key=0)


def test_run_refines_when_asked_and_returns_a_consistent_state(normal_fit):
    guide, _, y = normal_fit
    plain = mixvi.MixVI(normal_model, guide, refine=False)
    base = plain.run(jax.random.PRNGKey(3), 200, y, progress_bar=False)
    assert plain.last_run_refine is None
    engine = mixvi.MixVI(normal_model, guide, refine=True)
    one = engine.run(jax.random.PRNGKey(3), 200, y, progress_bar=False)
    assert engine.last_run_refine is not None and engine.last_run_refine.ess.shape == (10,)
    two = mixvi.MixVI(normal_model, guide, refine=True).run(jax.random.PRNGKey(3), 200, y, progress_bar=False)
    for k in one.params:
        np.testing.assert_array_equal(one.params[k], two.params[k])  # same seed, same bits
        np.testing.assert_array_equal(one.params[k], engine.get_params(one.state)[k])
    np.testing.assert_array_equal(one.losses, base.losses)  # the steps are the same; only the end moves
    # the refinement is the guide-level call on the plain fit with the run's key
    key = jax.random.fold_in(base.state.rng_key, REFINE_KEY)
    direct = mixvi.refine(guide, base.params, y, rng_key=key)
    np.testing.assert_allclose(one.params[f"{guide.prefix}_locs"], direct.params[f"{guide.prefix}_locs"], rtol=1e-6)


def test_auto_refines_exactly_when_the_runs_check_fires(normal_fit, monkeypatch):
    guide, _, y = normal_fit
    engine = mixvi.MixVI(normal_model, guide)
    assert engine.refine == "auto"
    engine.run(jax.random.PRNGKey(3), 200, y, progress_bar=False)
    assert engine.last_run_stein is not None and engine.last_run_stein < REFINE_STEIN < POOR_STEIN
    assert engine.last_run_refine is None  # a good fit is returned as it is
    # off by more than REFINE_STEIN but not poor: refined without a warning
    monkeypatch.setattr(engine_module, "REFINE_STEIN", -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = engine.run(jax.random.PRNGKey(3), 200, y, progress_bar=False)
    assert engine.last_run_refine is not None
    key = jax.random.fold_in(quiet.state.rng_key, REFINE_KEY)  # the state holds the refined params
    plain = mixvi.MixVI(normal_model, guide, refine=False).run(jax.random.PRNGKey(3), 200, y, progress_bar=False)
    direct = mixvi.refine(guide, plain.params, y, rng_key=key)
    np.testing.assert_allclose(quiet.params[f"{guide.prefix}_locs"], direct.params[f"{guide.prefix}_locs"], rtol=1e-6)
    monkeypatch.setattr(engine_module, "REFINE_STEIN", np.inf)
    monkeypatch.setattr(engine_module, "POOR_STEIN", -np.inf)  # every fit now reads poor: refined and warned
    with pytest.warns(RuntimeWarning, match="refined towards the forward KL"):
        engine.run(jax.random.PRNGKey(3), 200, y, progress_bar=False)
    assert engine.last_run_refine is not None
    paper = mixvi.MixVI(normal_model, guide, relocate=False)  # the paper's mode is never refined by 'auto'
    assert paper.refine is False
    paper.run(jax.random.PRNGKey(3), 200, y, progress_bar=False)
    assert paper.last_run_refine is None


def subsampled_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    with numpyro.plate("rows", y.shape[0], subsample_size=2):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=numpyro.subsample(y, event_dim=0))


def test_auto_leaves_models_with_subsampled_plates_alone(monkeypatch):
    # their full-data log p is what subsampling avoids: 'auto' does not pay it, True still does
    y = jnp.array([0.3, -0.5, 1.2, 0.8, -0.1])
    guide = mixvi.AutoIsotropicMixture(subsampled_model, n_components=2)
    monkeypatch.setattr(engine_module, "POOR_STEIN", -np.inf)
    monkeypatch.setattr(engine_module, "REFINE_STEIN", -np.inf)
    with pytest.warns(RuntimeWarning) as caught:
        mixvi.MixVI(subsampled_model, guide).run(jax.random.PRNGKey(0), 100, y, progress_bar=False)
    assert not any("refined" in str(w.message) for w in caught)
    assert engine_module._has_subsampled_plates(guide)
    assert not engine_module._has_subsampled_plates(mixvi.AutoIsotropicMixture(normal_model, n_components=2))
    engine = mixvi.MixVI(subsampled_model, guide, refine=True)
    with pytest.warns(RuntimeWarning, match="refined towards the forward KL"):
        engine.run(jax.random.PRNGKey(0), 100, y, progress_bar=False)
    assert engine.last_run_refine is not None


@pytest.mark.parametrize("value", ["always", 1, None])
def test_bad_refine_option_is_refused(normal_fit, value):
    guide, _, _ = normal_fit
    with pytest.raises(ValueError, match="refine must be 'auto', True or False"):
        mixvi.MixVI(normal_model, guide, refine=value)


def test_default_draws_scale_with_components_and_shrink_with_dimension(normal_fit):
    guide, params, y = normal_fit
    out = mixvi.refine(guide, params, y, rng_key=jax.random.PRNGKey(0), num_iterations=1)
    assert int(out.info.num_finite[0]) == 3000  # 1000 per component, every log p finite
    name = f"{guide.prefix}_locs"
    assert default_draws(guide, {name: np.zeros((20, 1000))}) == 20000
    assert default_draws(guide, {name: np.zeros((20, 10000))}) == 2**26 // 10000
    assert default_draws(guide, {name: np.zeros((20, 10**6))}) == 2000


def test_in_blocks_equals_one_vmap():
    z = jnp.arange(20.0).reshape(10, 2)
    np.testing.assert_array_equal(in_blocks(lambda x: x @ jnp.array([1.0, 2.0]), z, 4), z @ jnp.array([1.0, 2.0]))


def test_refine_compiles_once_per_model_structure_and_reads_new_data(normal_fit, monkeypatch):
    guide, params, y = normal_fit
    traced = []
    real = refine_module.potential

    def counting(*a, **k):
        traced.append(1)
        return real(*a, **k)

    monkeypatch.setattr(refine_module, "potential", counting)
    options = {"num_iterations": 2, "num_draws": 1500}
    one = mixvi.refine(guide, params, y, rng_key=jax.random.PRNGKey(0), **options)
    again = mixvi.refine(guide, params, y, rng_key=jax.random.PRNGKey(0), **options)
    moved = mixvi.refine(guide, params, y + 0.3, rng_key=jax.random.PRNGKey(0), **options)
    # a new guide of the same model and shapes (a new MixVI run, a resumed one) reuses the program too
    other = mixvi.AutoIsotropicMixture(normal_model, n_components=guide.n_components)
    fresh = mixvi.MixVI(normal_model, other, refine=False).run(jax.random.PRNGKey(1), 50, y, progress_bar=False)
    mixvi.refine(other, fresh.params, y, rng_key=jax.random.PRNGKey(0), **options)
    assert len(traced) == 1  # one trace: the data and q's params are operands of the cached program
    name = f"{guide.prefix}_locs"
    np.testing.assert_array_equal(one.params[name], again.params[name])
    # the shifted data moved mu's posterior: the cached program did not keep the old data as constants
    assert float(jnp.mean(moved.params[name][:, 0])) > float(jnp.mean(one.params[name][:, 0])) + 0.1
