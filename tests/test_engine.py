"""MixVI: fixed points, accuracy growing with N, robustness of the auto step, divergence handling."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.special import logsumexp
from numpyro.infer import init_to_uniform

import mixvi

PREC = jnp.array([0.5, 2.0, 8.0])
MU = jnp.array([1.0, -2.0, 0.5])


def gaussian_model():
    numpyro.sample("x", dist.Normal(MU, 1 / jnp.sqrt(PREC)).to_event(1))


@pytest.mark.parametrize("method", ["ibw", "md"])
def test_fixed_point_single_gaussian(method):
    """N = 1 on N(mu, diag(1/prec)): m -> mu and eps -> d / tr(Sigma^-1) (the paper's fixed point)."""
    with jax.enable_x64(True):
        guide = mixvi.AutoIsotropicMixture(gaussian_model, n_components=1, metric="isotropic")
        # refine=False: the steps' fixed point, not the forward-KL one the refinement moves a misfit to
        svi = mixvi.MixVI(gaussian_model, guide, method=method, step_size=0.1, num_samples=100, tilt=0, refine=False)
        r = svi.run(jax.random.PRNGKey(0), 600, progress_bar=False)
        # smaller step to shrink the Monte-Carlo jitter around the fixed point
        svi = mixvi.MixVI(gaussian_model, guide, method=method, step_size=0.01, num_samples=100, tilt=0, refine=False)
        r = svi.run(jax.random.PRNGKey(1), 600, progress_bar=False, init_params=r.params)
        np.testing.assert_allclose(r.params["auto_locs"][0], MU, atol=0.03)
        np.testing.assert_allclose(r.params["auto_scales"][0] ** 2, 3 / PREC.sum(), rtol=0.02)


def test_the_tilt_moves_the_fixed_point_towards_covering_the_target():
    """With the default tilt the misspecified N = 1 isotropic fit of N(mu, diag(1/prec)) ends wider than the
    reverse-KL fixed point d / tr(Sigma^-1) = 0.286 and no wider than moment matching tr(Sigma) / d = 0.875,
    with the mean still on mu."""
    with jax.enable_x64(True):
        guide = mixvi.AutoIsotropicMixture(gaussian_model, n_components=1, metric="isotropic")
        engine = mixvi.MixVI(gaussian_model, guide, step_size=0.05, num_samples=100, refine=False)
        r = engine.run(jax.random.PRNGKey(0), 1200, progress_bar=False)
        eps = float(r.params["auto_scales"][0] ** 2)
        np.testing.assert_allclose(r.params["auto_locs"][0], MU, atol=0.05)
        assert 1.2 * 3 / float(PREC.sum()) < eps <= float(jnp.mean(1 / PREC))


def _gmm_target(d=2, k=5, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.uniform(-5, 5, (k, d))
    w = rng.integers(1, 2 * k, k).astype(float)
    w /= w.sum()
    var = 0.5
    means, logw = jnp.asarray(means, jnp.float32), jnp.log(jnp.asarray(w, jnp.float32))

    def log_density(x):
        sq = jnp.sum((x[..., None, :] - means) ** 2, -1)
        return logsumexp(logw - 0.5 * sq / var - 0.5 * d * jnp.log(2 * jnp.pi * var), -1)

    def model():
        x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real_vector, (), (d,)))
        numpyro.factor("target", log_density(x))

    return model, log_density


def _kl(guide, params, log_density, key, n=20_000):
    q = guide.get_posterior(params)
    x = q.sample(key, (n,))
    return float(jnp.mean(q.log_prob(x) - log_density(x)))


# MD with --runslow: the same claims as IBW (the paper finds them alike), 14 s more of a quick run
@pytest.mark.parametrize("method", ["ibw", pytest.param("md", marks=pytest.mark.slow)])
def test_kl_falls_as_components_grow(method):
    """The paper's method (no relocation): KL(q||p) falls from one component to several on a 2-d five-mode
    mixture (how far depends on where they start: the paper's masses follow the initial basins). With the
    defaults (mass balancing and scouts) five components find the five modes on most seeds and twenty fit
    well, several times better than the paper's twenty."""
    model, log_density = _gmm_target()

    def kl_after_fit(n, seed, relocate):
        guide = mixvi.AutoIsotropicMixture(
            model, n_components=n, init_loc_fn=init_to_uniform(radius=5), init_scale=2.0, metric="isotropic"
        )
        vi = mixvi.MixVI(model, guide, method=method, relocate=relocate)
        r = vi.run(jax.random.PRNGKey(seed), 1500, progress_bar=False)
        return _kl(guide, r.params, log_density, jax.random.PRNGKey(99))

    def median_kl(n, seeds, relocate):
        return float(np.median([kl_after_fit(n, s, relocate) for s in seeds]))

    # N = 5 in the paper's mode covers anywhere from two to all five modes by seed (KL 0.06-1.4 over
    # seeds 5-16): its median over nine seeds, not three, is what falls below N = 1's KL (1.04-1.06)
    paper = [kl_after_fit(1, 1, False), median_kl(5, range(5, 14), False), median_kl(20, (20, 21, 22), False)]
    assert paper[0] > max(paper[1:]) + 0.5, paper
    defaults = [median_kl(5, (5, 6, 7), True), kl_after_fit(20, 20, True)]
    assert defaults[0] < 0.12 and defaults[1] < 0.03 and defaults[1] < paper[2] / 3, (
        paper,
        defaults,
    )


def funnel():
    x0 = numpyro.sample("x0", dist.Normal(0, jnp.sqrt(1.2)))
    numpyro.sample("x1", dist.Normal(0, jnp.exp(x0 / 2)))


def measurement(y=None):
    x = numpyro.sample("x", dist.Normal(0, 10).expand([4]).to_event(1))
    numpyro.sample("y", dist.Normal(x, 0.1).to_event(1), obs=y)


def test_auto_step_handles_funnel_and_narrow_measurement_model():
    guide = mixvi.AutoIsotropicMixture(funnel, n_components=10)
    r = mixvi.MixVI(funnel, guide).run(jax.random.PRNGKey(0), 2000, progress_bar=False)
    assert bool(jnp.all(jnp.isfinite(r.losses)))
    # funnel is normalised: the loss is KL(q||p) >= 0 up to noise; it must be small at the end
    assert float(jnp.mean(r.losses[-200:])) < 0.15

    y = jnp.array([3.0, -1.0, 0.5, 7.0])
    guide = mixvi.AutoIsotropicMixture(measurement, n_components=3)
    r = mixvi.MixVI(measurement, guide).run(jax.random.PRNGKey(1), 1500, y, progress_bar=False)
    post_var = 1 / (1 / 100 + 1 / 0.01)
    post_mean = post_var * y / 0.01
    # the mixture's moments are the posterior's (its components may spread a little around the mean,
    # with smaller sigmas: the ELBO is flat in that direction)
    q = guide.get_posterior(r.params)
    np.testing.assert_allclose(q.mean, post_mean, atol=0.03)
    np.testing.assert_allclose(q.variance, post_var, rtol=0.2)
    assert float(jnp.max(jnp.abs(r.params["auto_locs"] - post_mean))) < 0.1  # every component on the posterior
    # the paper's fixed step from its experiments is unstable here (gamma * curvature = 10 > 2)
    guide = mixvi.AutoIsotropicMixture(measurement, n_components=3)
    with pytest.raises(mixvi.DivergenceError) as err:
        mixvi.MixVI(measurement, guide, step_size=0.1).run(jax.random.PRNGKey(1), 1500, y, progress_bar=False)
    e = err.value
    assert "step" in str(e) and e.step > 0
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in e.params.values())
    assert len(e.losses) == e.step and bool(jnp.all(jnp.isfinite(e.losses)))


def test_same_seed_same_result_and_chunking_invariance():
    guide = mixvi.AutoIsotropicMixture(funnel, n_components=4)
    vi = mixvi.MixVI(funnel, guide)
    a = vi.run(jax.random.PRNGKey(3), 101, progress_bar=False)
    b = vi.run(jax.random.PRNGKey(3), 101, progress_bar=False, chunk_size=7)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    np.testing.assert_array_equal(a.losses, b.losses)
    c = vi.run(jax.random.PRNGKey(4), 101, progress_bar=False)
    assert not np.array_equal(a.params["auto_locs"], c.params["auto_locs"])


def test_resume_from_state_equals_one_run():
    guide = mixvi.AutoIsotropicMixture(funnel, n_components=4)
    # a continuation keeps the first run's schedule (scouting, then the tilt, from half its length, and the
    # final phase's quiet end): with them the halves' schedule differs from the whole run's, so this checks
    # the steps themselves without them
    vi = mixvi.MixVI(funnel, guide, method="md", tilt=0, final_phase=0)
    full = vi.run(jax.random.PRNGKey(5), 60, progress_bar=False)
    half = vi.run(jax.random.PRNGKey(5), 30, progress_bar=False)
    rest = vi.run(None, 30, progress_bar=False, init_state=half.state)
    np.testing.assert_array_equal(full.params["auto_locs"], rest.params["auto_locs"])
    np.testing.assert_array_equal(full.losses[30:], rest.losses)
    # the run's end (relocation's horizon): where the steps stop, also for the continued run
    assert int(full.state.core.relocation.end) == 60 == int(rest.state.core.relocation.end)
    assert int(half.state.core.relocation.end) == 30


def test_independent_noise_option_and_update_api():
    guide = mixvi.AutoIsotropicMixture(gaussian_model, n_components=2)
    vi = mixvi.MixVI(gaussian_model, guide, method="ngd", shared_noise=False, num_samples=20)
    state = vi.init(jax.random.PRNGKey(0))
    step = jax.jit(vi.update)
    for _ in range(300):
        state, loss = step(state)
    params = vi.get_params(state)
    np.testing.assert_allclose(params["auto_locs"].mean(0), MU, atol=0.15)
    assert np.isfinite(float(vi.evaluate(state)))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="n_components"):
        mixvi.AutoIsotropicMixture(gaussian_model, n_components=0)

    def discrete():
        numpyro.sample("z", dist.Bernoulli(0.3))
        numpyro.sample("x", dist.Normal(0, 1))

    with pytest.raises(ValueError, match="enumerat"):
        mixvi.MixVI(discrete, mixvi.AutoIsotropicMixture(discrete)).init(jax.random.PRNGKey(0))

    def local(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("data", y.shape[0], subsample_size=5):
            z = numpyro.sample("z", dist.Normal(mu, 1))
            numpyro.sample("y", dist.Normal(z, 1), obs=numpyro.subsample(y, event_dim=0))

    with pytest.raises(ValueError, match="subsampled plate"):
        mixvi.MixVI(local, mixvi.AutoIsotropicMixture(local)).init(jax.random.PRNGKey(0), jnp.zeros(20))

    def broken():
        x = numpyro.sample("x", dist.Normal(0, 1))
        numpyro.factor("nan", jnp.nan * x)

    with pytest.raises(ValueError, match="not finite"):
        mixvi.MixVI(broken, mixvi.AutoIsotropicMixture(broken)).init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="method"):
        mixvi.MixVI(gaussian_model, mixvi.AutoIsotropicMixture(gaussian_model), method="adam")
    with pytest.raises(ValueError, match="num_samples"):
        mixvi.MixVI(gaussian_model, mixvi.AutoIsotropicMixture(gaussian_model), num_samples=0)
    with pytest.raises(TypeError, match="AutoIsotropicMixture"):
        mixvi.MixVI(gaussian_model, numpyro.infer.autoguide.AutoNormal(gaussian_model))


def test_fixed_step_guard_warns():
    """A fixed step whose first IBW factor is negative is clipped, counted and warned about."""
    # at sigma = 5: lambda = tr(prec) - d / eps = 10.38, so 1 - 0.3 lambda / 3 = -0.04 < 0.1 (the floor)
    guide = mixvi.AutoIsotropicMixture(gaussian_model, n_components=2, init_scale=5.0, metric="isotropic")
    with pytest.warns(RuntimeWarning, match="validity guard"):
        mixvi.MixVI(gaussian_model, guide, step_size=0.3).run(jax.random.PRNGKey(0), 50, progress_bar=False)


def test_subsampled_data_plate_with_global_latent():
    """Global latents with a subsampled data plate: fresh subsample each step, unbiased scaled likelihood."""
    y = jax.random.normal(jax.random.PRNGKey(0), (200,)) + 3.0

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 10))
        with numpyro.plate("data", y.shape[0], subsample_size=50):
            numpyro.sample("y", dist.Normal(mu, 1), obs=numpyro.subsample(y, event_dim=0))

    guide = mixvi.AutoIsotropicMixture(model, n_components=2)
    r = mixvi.MixVI(model, guide, num_samples=20).run(jax.random.PRNGKey(1), 800, y, progress_bar=False)
    np.testing.assert_allclose(r.params["auto_locs"].mean(), y.mean(), atol=0.1)


# --- compile once, the masked tail, evaluate ---------------------------------------------------------


def _schools_model():
    """A fresh eight-schools model function (a new object, so compiled programs are not shared with other tests)."""

    def model(sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("J", sigma.shape[0]):
            theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
            numpyro.sample("obs", dist.Normal(mu + tau * theta, sigma), obs=y)

    return model


SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])


@pytest.fixture
def step_traces(monkeypatch):
    """Counts the traces of MixVI's step (its Python body runs once per trace)."""
    traces = []
    real = mixvi.MixVI._step

    def counted(self, state, args, kwargs):
        traces.append(1)
        return real(self, state, args, kwargs)

    monkeypatch.setattr(mixvi.MixVI, "_step", counted)
    return traces


def test_repeated_runs_trace_the_step_once(step_traces):
    """A second run, a new num_steps, new data of the same shapes and the progress bar reuse the first trace."""
    model = _schools_model()
    engine = mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=4))
    engine.run(jax.random.PRNGKey(0), 50, SIGMA, Y, progress_bar=False)
    engine.run(jax.random.PRNGKey(0), 50, SIGMA, Y, progress_bar=False)
    engine.run(jax.random.PRNGKey(1), 333, SIGMA, Y, progress_bar=False)
    engine.run(jax.random.PRNGKey(1), 20, SIGMA, Y + 1.0, progress_bar=True)
    assert len(step_traces) == 1


def test_a_loop_of_updates_traces_the_step_once_and_equals_the_run(step_traces):
    """update in a Python loop (as with SVI.update) runs one compiled step: one trace for every call, new
    data of the same shapes included, and the same states as run() takes."""
    model = _schools_model()
    engine = mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=4), relocate=False)
    state = start = engine.init(jax.random.PRNGKey(0), SIGMA, Y)
    losses = []
    for _ in range(6):
        state, loss = engine.update(state, SIGMA, Y)
        losses.append(loss)
    engine.update(state, SIGMA, Y + 1.0)
    assert len(step_traces) == 1
    result = engine.run(None, 6, SIGMA, Y, progress_bar=False, init_state=start)
    np.testing.assert_array_equal(np.asarray(losses), np.asarray(result.losses))
    np.testing.assert_array_equal(state.core.params.locs, result.state.core.params.locs)


def test_new_guide_and_engine_on_the_same_model_reuse_the_trace(step_traces):
    """A new AutoIsotropicMixture and MixVI for the same model, shapes and settings trace nothing new."""
    model = _schools_model()
    for seed in (0, 1):
        engine = mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=4))
        engine.run(jax.random.PRNGKey(seed), 30, SIGMA, Y, progress_bar=False)
    assert len(step_traces) == 1
    other = mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=5))
    other.run(jax.random.PRNGKey(0), 30, SIGMA, Y, progress_bar=False)
    assert len(step_traces) == 2  # another structure (N) is another program


def test_resume_reuses_the_trace_and_equals_the_uninterrupted_run(step_traces, tmp_path):
    """Checkpoint, interrupt and resume across chunk boundaries: one trace and the uninterrupted run's bits."""
    model = _schools_model()

    def fresh():
        return mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=4))

    full = fresh().run(jax.random.PRNGKey(2), 301, SIGMA, Y, progress_bar=False)

    def stop(state, losses, done):
        if done == 200:
            raise KeyboardInterrupt

    path = tmp_path / "run.npz"
    with pytest.warns(RuntimeWarning, match="interrupted"):
        fresh().run(
            jax.random.PRNGKey(2),
            301,
            SIGMA,
            Y,
            progress_bar=False,
            checkpoint=path,
            checkpoint_every=100,
            callback=stop,
        )
    rest = fresh().resume(path, SIGMA, Y, progress_bar=False)
    for k in full.params:
        np.testing.assert_array_equal(full.params[k], rest.params[k])
    np.testing.assert_array_equal(full.losses, rest.losses)
    assert len(step_traces) == 1


@pytest.mark.parametrize("num_steps", [1, 7, 300, 301])
def test_run_equals_a_loop_of_update_calls(num_steps):
    """Same seed, same bits: run(n) equals n calls of MixVI.update in a Python loop, across chunk boundaries.
    update is the step compiled once with the XLA options of run's chunk; that equality is what mixvi
    controls. A hand-written jax.jit(lax.scan(update)) is XLA's own compilation of the step and need not
    agree to the bit (with jax 0.12.1 it differs by an ulp after one step)."""
    model = _schools_model()
    # refine=False: a short run's poor fit would be refined after the loop, which this compares
    engine = mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=4), refine=False)
    result = engine.run(jax.random.PRNGKey(3), num_steps, SIGMA, Y, progress_bar=False)
    state = engine.init(jax.random.PRNGKey(3), SIGMA, Y)
    # the schedule run sets (scouts, then the tilt, from half the run on)
    state = state._replace(core=mixvi.vi.explore_until(state.core, num_steps // 2, num_steps))
    losses = []
    for _ in range(num_steps):
        state, loss = engine.update(state, SIGMA, Y)
        losses.append(loss)
    np.testing.assert_array_equal(result.state.core.params.locs, state.core.params.locs)
    np.testing.assert_array_equal(result.state.core.params.log_scales, state.core.params.log_scales)
    np.testing.assert_array_equal(result.losses, np.asarray(losses))


def test_a_heavy_step_keeps_xla_defaults_and_update_still_matches_run(monkeypatch):
    """A step whose target work reaches HEAVY_STEP_COST is compiled with XLA's default options (level 1
    slows a data-heavy likelihood's loops), by run's chunk and by update alike: the two still agree bit for
    bit, and the options differ from a cheap step's (which take other bits)."""
    model = _schools_model()
    engine = mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=4), refine=False)
    state0 = engine.init(jax.random.PRNGKey(5), SIGMA, Y)
    cheap = engine._chunk_options((SIGMA, Y), {})
    assert cheap == mixvi.loop.chunk_compiler_options()
    # every model counts as heavy: eight schools' N B V evaluations cost ~1e4 flop equivalents
    monkeypatch.setattr(mixvi.loop, "HEAVY_STEP_COST", 1.0)
    assert engine._chunk_options((SIGMA, Y), {}) == {}
    result = engine.run(jax.random.PRNGKey(5), 9, SIGMA, Y, progress_bar=False)
    state = state0._replace(core=mixvi.vi.explore_until(state0.core, 9 // 2, 9))
    losses = []
    for _ in range(9):
        state, loss = engine.update(state, SIGMA, Y)
        losses.append(loss)
    np.testing.assert_array_equal(result.state.core.params.locs, state.core.params.locs)
    np.testing.assert_array_equal(result.losses, np.asarray(losses))
    monkeypatch.undo()
    if jax.default_backend() == "cpu":
        assert cheap != {}
        light = engine.run(jax.random.PRNGKey(5), 9, SIGMA, Y, progress_bar=False)
        # the same steps under other XLA options: equal to float32 rounding, not (necessarily) to the bit
        np.testing.assert_allclose(light.state.core.params.locs, result.state.core.params.locs, rtol=1e-4, atol=1e-5)


def test_masked_tail_does_not_change_the_result():
    """300 steps as a full chunk plus a short tail equal one 300-step chunk and 7-step chunks, bit for bit."""
    model = _schools_model()
    engine = mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=4))
    runs = [
        engine.run(jax.random.PRNGKey(4), 300, SIGMA, Y, progress_bar=False, chunk_size=size) for size in (None, 300, 7)
    ]
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0].params["auto_locs"], other.params["auto_locs"])
        np.testing.assert_array_equal(runs[0].losses, other.losses)


@pytest.mark.parametrize(
    ("metric", "weights", "loss_draws"),
    [
        ("isotropic", "uniform", 1),
        ("isotropic", "uniform", None),
        ("diagonal", "uniform", 1),
        ("dense", "uniform", 1),
        ("isotropic", "fisher-rao", 1),
    ],
)
def test_evaluate_equals_the_next_update_loss(metric, weights, loss_draws):
    """evaluate(state) is the loss the next update reports (same draws and key), for every family."""
    model = _schools_model()
    guide = mixvi.AutoIsotropicMixture(model, n_components=3, metric=metric, weights=weights)
    engine = mixvi.MixVI(model, guide, loss_draws=loss_draws)
    # a state some steps in, from update (one compiled program, which the comparison reuses)
    state = engine.init(jax.random.PRNGKey(5), SIGMA, Y)
    for _ in range(20):
        state, _ = engine.update(state, SIGMA, Y)
    _, loss = engine.update(state, SIGMA, Y)
    np.testing.assert_allclose(float(engine.evaluate(state, SIGMA, Y)), float(loss), rtol=1e-6)


def _openblas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["internal_api"] == "openblas"]


def test_run_limits_blas_threads_while_it_runs_and_restores_them():
    """With the dense metric (triangular solves every step), run() holds OpenBLAS at blas_threads during its
    chunks, restores the setting afterwards, and gives the same bits as a run that leaves BLAS alone."""
    import scipy.linalg  # noqa: F401 - loads the OpenBLAS that JAX's CPU kernels call
    from threadpoolctl import threadpool_limits

    if jax.default_backend() != "cpu" or not _openblas_threads():
        pytest.skip("needs the CPU backend and an OpenBLAS that threadpoolctl sees")
    seen = []
    with threadpool_limits(limits=2, user_api="blas"):
        before = _openblas_threads()
        guide = mixvi.AutoIsotropicMixture(gaussian_model, n_components=2, metric="dense")
        limited = mixvi.MixVI(gaussian_model, guide).run(
            jax.random.PRNGKey(0),
            40,
            progress_bar=False,
            chunk_size=20,
            callback=lambda *_: seen.append(_openblas_threads()),
        )
        after = _openblas_threads()
        guide = mixvi.AutoIsotropicMixture(gaussian_model, n_components=2, metric="dense")
        free = mixvi.MixVI(gaussian_model, guide, blas_threads=None).run(jax.random.PRNGKey(0), 40, progress_bar=False)
    assert seen == [[1] * len(before)] * 2
    assert after == before
    for k in limited.params:
        np.testing.assert_array_equal(limited.params[k], free.params[k])


@pytest.mark.parametrize("metric", ["dense", "lowrank", "isotropic"])
def test_update_and_evaluate_limit_blas_threads_with_a_metric_that_solves(metric, monkeypatch):
    """update and evaluate hold BLAS at blas_threads while their step runs when the metric's step calls
    OpenBLAS (dense, low-rank): the limit is entered once per call and the result is computed before it is
    left; the isotropic step leaves BLAS alone. The bits equal those of an engine that never limits."""
    import mixvi.loop as loop

    if jax.default_backend() != "cpu" or loop._blas_controller() is None:
        pytest.skip("needs the CPU backend and threadpoolctl")
    entered = []
    real = loop._blas_controller()

    class Recording:
        def limit(self, limits, user_api):
            entered.append((limits, user_api))
            return real.limit(limits=limits, user_api=user_api)

    monkeypatch.setattr(loop, "_BLAS_CONTROLLER", [Recording()])
    before = _openblas_threads()
    results = {}
    for threads in (1, None):
        guide = mixvi.AutoIsotropicMixture(gaussian_model, n_components=3, metric=metric)
        engine = mixvi.MixVI(gaussian_model, guide, blas_threads=threads, shared_noise=True)
        state = engine.init(jax.random.PRNGKey(0))
        entered.clear()
        for _ in range(3):
            state, loss = engine.update(state)
            if threads == 1 and metric != "isotropic":
                assert state.core.params.locs.is_ready() and loss.is_ready()
        value = engine.evaluate(state)
        expected = 4 if threads == 1 and metric != "isotropic" else 0
        assert entered == [(1, "blas")] * expected
        results[threads] = (jax.tree.leaves(state), value)
    assert _openblas_threads() == before
    for a, b in zip(results[1][0], results[None][0], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results[1][1], results[None][1])


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "one"])
def test_blas_threads_must_be_a_positive_integer_or_none(threads):
    with pytest.raises(ValueError, match="blas_threads must be a positive integer or None"):
        mixvi.MixVI(gaussian_model, mixvi.AutoIsotropicMixture(gaussian_model), blas_threads=threads)


def test_garbage_collector_paused_while_the_model_is_traced_and_restored_after():
    """Set-up and the loop's tracing run with Python's cyclic collector paused (it is off whenever the
    model is traced), and each call leaves it as it found it: on when it was on, off when it was off."""
    import gc

    seen = []

    def model():
        seen.append(gc.isenabled())
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    assert gc.isenabled()
    engine = mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=2), refine=False)
    engine.run(jax.random.PRNGKey(0), 5, progress_bar=False)
    assert seen and not any(seen)
    assert gc.isenabled()
    gc.disable()
    try:
        engine.run(jax.random.PRNGKey(1), 5, progress_bar=False)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_get_params_on_the_host_and_under_jit_agree():
    """get_params of a concrete state (exp on the host) and of a traced one (under jax.jit) give the same
    constrained params to float32 rounding, with the dense metric's factor unchanged."""
    guide = mixvi.AutoIsotropicMixture(gaussian_model, n_components=3, metric="dense")
    engine = mixvi.MixVI(gaussian_model, guide, refine=False)
    state = engine.run(jax.random.PRNGKey(2), 30, progress_bar=False).state
    host, traced = engine.get_params(state), jax.jit(engine.get_params)(state)
    assert set(host) == set(traced)
    for name in host:
        np.testing.assert_allclose(np.asarray(host[name]), np.asarray(traced[name]), rtol=2e-7, atol=0)
    np.testing.assert_allclose(np.log(np.asarray(host[guide.prefix + "_scales"])), state.core.params.log_scales, rtol=1e-6)
