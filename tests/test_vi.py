"""The functional core ``mixvi.mixture_vi``: plain JAX log-densities over pytrees, under jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.flatten_util import ravel_pytree
from jax.scipy.special import logsumexp
from numpyro.infer.util import initialize_model

import mixvi
from mixvi import vi

MU = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
SD = 0.7


def isotropic_gaussian(position):
    """log N(position; MU, SD^2 I) up to a constant, over the pytree {'a': (2,), 'b': ()}."""
    sq = jnp.sum((position["a"] - MU["a"]) ** 2) + (position["b"] - MU["b"]) ** 2
    return -0.5 * sq / SD**2


def bimodal(x):
    """An equal mixture of N((3, 0), I) and N((-3, 0), I) in 2-d."""
    centres = jnp.array([[3.0, 0.0], [-3.0, 0.0]])
    return logsumexp(-0.5 * jnp.sum((x - centres) ** 2, -1))


def origin():
    return {"a": jnp.zeros(2), "b": jnp.zeros(())}


def run(algo, state, num_steps, seed=1):
    keys = jax.random.split(jax.random.key(seed), num_steps)
    return jax.jit(lambda s: jax.lax.scan(lambda c, k: algo.step(k, c), s, keys))(state)


def test_init_spreads_components_around_the_position():
    """init puts N means at position + init_scale N(0, I), as pytrees with a leading N axis, and sigma = init_scale."""
    algo = mixvi.mixture_vi(isotropic_gaussian, n_components=400, init_scale=0.5)
    state = algo.init(jax.random.key(0), {"a": jnp.array([1.0, 2.0]), "b": jnp.array(-1.0)})
    locs = state.params.locs
    assert locs["a"].shape == (400, 2) and locs["b"].shape == (400,)
    np.testing.assert_allclose(locs["a"].mean(0), [1.0, 2.0], atol=0.1)
    np.testing.assert_allclose(locs["b"].std(), 0.5, rtol=0.15)
    np.testing.assert_allclose(jnp.exp(state.params.log_scales), 0.5, rtol=1e-6)


def test_one_component_reaches_the_exact_gaussian():
    """N = 1 on an isotropic Gaussian target over a pytree converges to its exact mean and sd (KL = 0)."""
    with jax.enable_x64(True):
        algo = mixvi.mixture_vi(isotropic_gaussian, n_components=1, step_size=0.1, num_samples=50)
        state, _ = run(algo, algo.init(jax.random.key(0), origin()), 400)
        np.testing.assert_allclose(state.params.locs["a"][0], MU["a"], atol=0.02)
        np.testing.assert_allclose(state.params.locs["b"][0], MU["b"], atol=0.02)
        np.testing.assert_allclose(jnp.exp(state.params.log_scales[0]), SD, rtol=0.02)


def test_loss_converges_to_minus_log_normaliser():
    """At the exact fit the loss (the -ELBO up to log Z) equals -log Z of the unnormalised target."""
    with jax.enable_x64(True):
        algo = mixvi.mixture_vi(isotropic_gaussian, n_components=1, step_size=0.1, num_samples=50, loss_draws=None)
        _, infos = run(algo, algo.init(jax.random.key(0), origin()), 400)
        log_z = 1.5 * np.log(2 * np.pi * SD**2)
        np.testing.assert_allclose(np.mean(infos.loss[-100:]), -log_z, atol=0.02)


def test_bimodal_target_under_jit_covers_both_modes():
    """Ten components on a 2-d two-mode target end on both modes with draws that match each mode's moments."""
    algo = mixvi.mixture_vi(bimodal, n_components=10, init_scale=3.0)
    state, infos = run(algo, algo.init(jax.random.key(3), jnp.zeros(2)), 1500)
    draws = algo.sample(jax.random.key(4), state, 20_000)
    right = draws[:, 0] > 0
    assert 0.3 < float(right.mean()) < 0.7
    np.testing.assert_allclose(draws[right].mean(0), [3.0, 0.0], atol=0.15)
    np.testing.assert_allclose(draws[~right].mean(0), [-3.0, 0.0], atol=0.15)
    np.testing.assert_allclose(draws[right].std(0), 1.0, rtol=0.15)
    assert not bool(jnp.any(infos.rejected))


def test_step_is_vmappable():
    """vmap of step over a batch of keys and states equals the steps taken one by one."""
    algo = mixvi.mixture_vi(bimodal, n_components=4, init_scale=2.0)
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.vmap(algo.init, (0, None))(keys, jnp.zeros(2))
    batched, infos = jax.jit(jax.vmap(algo.step))(keys, states)
    step = jax.jit(algo.step)
    for i in range(3):
        one, info = step(keys[i], jax.tree.map(lambda x, i=i: x[i], states))
        np.testing.assert_allclose(batched.params.locs[i], one.params.locs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(infos.loss[i], info.loss, rtol=1e-5)


def test_same_key_same_result():
    """The same keys give bit-identical states."""
    algo = mixvi.mixture_vi(bimodal, n_components=4)
    s1, _ = run(algo, algo.init(jax.random.key(0), jnp.zeros(2)), 20)
    s2, _ = run(algo, algo.init(jax.random.key(0), jnp.zeros(2)), 20)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)))


def test_sample_is_a_pytree_with_the_mixture_moments():
    """sample returns the position's pytree with a leading axis, with the mixture's mean and variance."""
    algo = mixvi.mixture_vi(isotropic_gaussian, n_components=3)
    state = algo.init(jax.random.key(0), origin())
    draws = algo.sample(jax.random.key(1), state, 100_000)
    assert draws["a"].shape == (100_000, 2) and draws["b"].shape == (100_000,)
    locs, eps = state.params.locs["b"], jnp.exp(2 * state.params.log_scales)
    np.testing.assert_allclose(draws["b"].mean(), locs.mean(), atol=0.02)
    np.testing.assert_allclose(draws["b"].var(), eps.mean() + locs.var(), rtol=0.03)


def test_rejected_step_keeps_the_params_and_halves_the_step():
    """A non-finite log density rejects the step: info.rejected, params unchanged, eta halved."""
    algo = mixvi.mixture_vi(lambda x: jnp.nan * jnp.sum(x), n_components=2)
    state = algo.init(jax.random.key(0), jnp.zeros(3))
    new, info = jax.jit(algo.step)(jax.random.key(1), state)
    assert bool(info.rejected)
    np.testing.assert_array_equal(new.params.locs, state.params.locs)
    np.testing.assert_allclose(new.step_size.eta, 0.5 * state.step_size.eta)


def test_diagonal_metric_fits_a_stretched_gaussian():
    """metric='diagonal' with N = 1 recovers the exact per-coordinate variances of a diagonal Gaussian."""
    sds = jnp.array([0.2, 1.0, 5.0])
    with jax.enable_x64(True):
        algo = mixvi.mixture_vi(lambda x: -0.5 * jnp.sum((x / sds) ** 2), n_components=1, metric="diagonal", num_samples=20)
        state, _ = run(algo, algo.init(jax.random.key(0), jnp.ones(3)), 1500)
        var = jnp.exp(2 * state.params.log_scales[0] + state.params.log_metric)
        np.testing.assert_allclose(jnp.sqrt(var), sds, rtol=0.1)


def test_learned_weights_recover_mode_masses():
    """weights='fisher-rao' moves the weights of two components on two modes to the modes' masses 0.3 / 0.7."""

    def two_modes(x):
        return logsumexp(jnp.log(jnp.array([0.3, 0.7])) - 0.5 * ((x[0] - jnp.array([-4.0, 4.0])) / 0.5) ** 2)

    algo = mixvi.mixture_vi(two_modes, n_components=2, weights="fisher-rao", num_samples=20)
    state = vi.init_state(jnp.array([[-4.0], [4.0]]), 0.5, weights="fisher-rao")
    state, _ = run(algo, state, 600)
    np.testing.assert_allclose(jax.nn.softmax(state.params.logits), [0.3, 0.7], atol=0.05)


@pytest.mark.parametrize("metric", ["isotropic", "dense"])
def test_learned_weights_hold_a_component_on_a_non_finite_target_and_drop_its_weight(metric):
    """Learned weights (no relocation): V is NaN beyond x0 = 5 and one of four components starts there.
    Without the quarantine every step is rejected; with it that component stays put, its weight falls
    towards 0, and the other three fit the standard normal (mixture mean 0, variance 1)."""

    def half(v):
        return jnp.where(v[0] < 5.0, -0.5 * jnp.sum(v**2), jnp.nan)

    start = jnp.array([[0.8, 0.0], [-0.5, 0.5], [0.0, -0.7], [9.0, 0.0]])
    state = vi.init_state(start, 0.7, weights="fisher-rao", metric=metric)
    settings = vi.check(vi.Settings(num_samples=20))
    keys = jax.random.split(jax.random.key(0), 400)
    step = jax.jit(lambda s, k: vi.step(k, s, lambda x, _: -half(x), settings))
    state, info = jax.lax.scan(step, state, keys)
    assert not bool(np.any(info.rejected)) and bool(np.all(np.isfinite(info.loss)))
    np.testing.assert_array_equal(state.params.locs[3], start[3])
    w = jax.nn.softmax(state.params.logits)
    assert float(w[3]) < 1e-3, w
    good, kept = state.params.locs[:3], w[:3] / jnp.sum(w[:3])
    np.testing.assert_allclose(jnp.sum(kept[:, None] * good, 0), [0.0, 0.0], atol=0.25)
    sd = jnp.exp(state.params.log_scales[:3])
    if metric == "isotropic":  # mixture variance of coordinate 0: within-component plus between-component
        var0 = jnp.sum(kept * (sd**2 + good[:, 0] ** 2)) - jnp.sum(kept * good[:, 0]) ** 2
        np.testing.assert_allclose(var0, 1.0, rtol=0.25)


def test_logdensity_with_key_gets_a_fresh_key():
    """With logdensity_takes_key, an unbiased noisy log density (fresh key each step) still finds the mean.

    The noise's gradient moves both coordinates by 0.05 eps per step (eps ~ N(0, 1)), so the last iterate
    of one run has sd ~0.16 around 2: 16 seeds, their mean within 0.15 of 2 (3.8 of its sds) and their
    spread below 0.3. A key reused at every step would fix eps and end each run about eps away (spread ~1).
    """

    def noisy(x, key):
        return -0.5 * jnp.sum((x - 2.0) ** 2) + jax.random.normal(key) * jnp.sum(x)

    algo = mixvi.mixture_vi(noisy, n_components=1, logdensity_takes_key=True, step_size=0.05, num_samples=10)

    def final(seed):
        # 300 steps: the pull towards 2 halves the distance every 14 steps, so the start is long forgotten
        state, _ = run(algo, algo.init(jax.random.key(0), jnp.zeros(2)), 300, seed=seed)
        return state.params.locs[0]

    ends = jax.vmap(final)(jnp.arange(16))
    np.testing.assert_allclose(jnp.mean(ends, 0), [2.0, 2.0], atol=0.15)
    assert float(jnp.max(jnp.std(ends, 0))) < 0.3


def test_mixvi_and_mixture_vi_agree_on_a_numpyro_model():
    """MixVI on a NumPyro model equals mixture_vi on its potential over the site dict, step for step."""

    def model(y):
        loc = numpyro.sample("loc", dist.Normal(0.0, 3.0))
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(loc, scale), obs=y)

    with jax.enable_x64(True):
        y = jnp.array([0.3, 1.9, 1.2, -0.4, 2.2])
        guide = mixvi.AutoIsotropicMixture(model, n_components=4)
        engine = mixvi.MixVI(model, guide, step_size=0.05, num_samples=8)
        state = engine.init(jax.random.PRNGKey(0), y)
        setup = initialize_model(jax.random.PRNGKey(0), model, model_args=(y,))
        _, unravel = ravel_pytree(setup.param_info.z)
        # the same loss draws as the engine settled on for this model (its loss_draws='auto')
        algo = mixvi.mixture_vi(
            lambda p: -setup.potential_fn(p), n_components=4, step_size=0.05, num_samples=8, loss_draws=engine.loss_draws
        )
        core = vi.init_state(
            jax.vmap(unravel)(state.core.params.locs), jnp.exp(state.core.params.log_scales), metric="dense", step_size=0.05
        )
        update, step = jax.jit(engine.update), jax.jit(algo.step)
        for _ in range(30):
            # MixVI's documented key schedule: its step is vi.step with the state's key (its own draw of the
            # next key extends the same call of the generator, which leaves the step's bits as they are)
            step_key = state.rng_key
            state, loss = update(state, y)
            core, info = step(step_key, core)
            np.testing.assert_allclose(info.loss, loss, rtol=1e-9)
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(core.params.locs)
        np.testing.assert_allclose(flat, state.core.params.locs, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(core.params.log_scales, state.core.params.log_scales, rtol=1e-9)
        np.testing.assert_allclose(core.params.metric_tril, state.core.params.metric_tril, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_components": 0}, "n_components"),
        ({"method": "adam"}, "method"),
        ({"step_size": -1.0}, "step_size"),
        ({"num_samples": 0}, "num_samples"),
        ({"metric": "full"}, "metric"),
        ({"weights": "learned"}, "weights"),
        ({"loss_draws": 99}, "loss_draws"),
        ({"init_scale": 0.0}, "init_scale"),
    ],
)
def test_bad_settings_raise_before_any_work(kwargs, match):
    """Every bad setting raises a ValueError naming it when the algorithm is built."""
    with pytest.raises(ValueError, match=match):
        mixvi.mixture_vi(bimodal, **kwargs)


def _quadratic_with_key(x, _key):
    """V(x) = sum_k (k + 1) x_k^2 / 2 - x_0: value and gradient known in closed form."""
    w = jnp.arange(1.0, x.shape[-1] + 1.0)
    return 0.5 * jnp.sum(w * x**2) - x[0]


@pytest.mark.parametrize("with_trials", [False, True])
@pytest.mark.parametrize("batch", [None, 4])
def test_values_at_head_gives_v_at_the_first_draws_and_grad_v_at_all(with_trials, batch):
    """Without a tilt and with loss_draws=cut, the step takes V alone at the first `cut` draws of every
    component, grad V at every draw (one batch), and V and grad V at the scouts' trial points."""
    n, length, d, cut = 3, 5, 4, 2
    x = jax.random.normal(jax.random.PRNGKey(0), (n, length, d))
    trials = jax.random.normal(jax.random.PRNGKey(1), (2, d)) if with_trials else None
    w = jnp.arange(1.0, d + 1.0)
    exact_v = lambda p: 0.5 * jnp.sum(w * p**2, -1) - p[..., 0]  # noqa: E731
    exact_g = lambda p: w * p - jnp.eye(d)[0]  # noqa: E731
    v, g, at_trials = vi._values_at_head(_quadratic_with_key, x, cut, trials, jax.random.PRNGKey(2), batch, None)
    assert v.shape == (n, cut) and g.shape == (n, length, d)
    np.testing.assert_allclose(v, exact_v(x[:, :cut]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g, exact_g(x), rtol=1e-5, atol=1e-5)
    if with_trials:
        np.testing.assert_allclose(at_trials[0], exact_v(trials), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(at_trials[1], exact_g(trials), rtol=1e-5, atol=1e-5)
    else:
        assert at_trials is None


def test_one_loss_draw_without_a_tilt_moves_the_components_as_every_draw_does():
    """loss_draws=1 (no tilt) changes which draws the loss reads, not the step: the same gradients move
    the components to the same place as loss_draws=None, and log p - log q at the first draws (which the
    loss reads) is the same as there."""
    locs = jnp.array([[1.0, 0.0, 0.5], [-1.0, 0.3, 0.0]])
    state = vi.init_state(locs, 0.8, step_size=0.05, relocate=False)
    key = jax.random.PRNGKey(3)
    out = {}
    for draws in (1, None):
        settings = vi.check(vi.Settings(num_samples=6, step_size=0.05, relocate=False, tilt=0.0, loss_draws=draws))
        out[draws] = jax.jit(lambda s, k, settings=settings: vi.step(k, s, _quadratic_with_key, settings))(state, key)
    np.testing.assert_allclose(out[1][0].params.locs, out[None][0].params.locs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1][0].params.log_scales, out[None][0].params.log_scales, rtol=1e-5, atol=1e-6)
    first, every = out[1][1].log_weights, out[None][1].log_weights
    assert first.shape == (2, 1) and every.shape == (2, 6)
    np.testing.assert_allclose(first[:, 0], every[:, 0], rtol=1e-5, atol=1e-5)
