"""The mass-covering tilt: its weights, the weighted Stein estimates against brute force, its schedule in
``MixVI.run``, that it widens a fit that under-covers and keeps an exact one exact; and the running
averages' ceiling."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import mixvi
from mixvi.adapt import LOSS_CEILING_GAPS, init_relocation, track
from mixvi.estimators import TILT_CAP, TILT_SPREAD, draw_points, stein_estimate, tilt_weights
from mixvi.family import IsotropicMixture
from mixvi.lowrank import LowRankMetric, root_apply

PREC = jnp.array([0.5, 1.0, 2.0, 4.0])
MU = jnp.array([1.0, -1.0, 0.5, 2.0])


def potential(x):
    return 0.5 * jnp.sum(PREC * (x - MU) ** 2, -1)


def test_weights_are_one_where_q_is_p_and_grow_with_the_ratio():
    flat = jnp.full((3, 6), -4.2)
    np.testing.assert_allclose(tilt_weights(flat, 1.0), 1.0, rtol=1e-6)
    ratio = jnp.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    w = tilt_weights(ratio, 1.0)
    np.testing.assert_allclose(jnp.mean(w, 1), 1.0, rtol=1e-6)
    assert bool(jnp.all(jnp.diff(w[0]) > 0))
    # small spread: tau = tilt, so the weights are the normalised ratio^tilt
    np.testing.assert_allclose(w[0], jnp.exp(ratio[0]) / jnp.mean(jnp.exp(ratio[0])), rtol=1e-5)
    np.testing.assert_allclose(tilt_weights(ratio, 0.0), 1.0, rtol=1e-6)


def test_weights_flatten_far_from_the_posterior_and_are_capped():
    """Log ratios spread over hundreds of nats: tau = spread / sd keeps the weights within e^spread per sd;
    one draw far above the others gets the cap and the rest share what is left, mean 1."""
    ratio = jnp.linspace(-300.0, 300.0, 10)[None]
    w = tilt_weights(ratio, 1.0)
    sd = float(jnp.std(ratio))
    np.testing.assert_allclose(w[0, 1] / w[0, 0], np.exp(TILT_SPREAD * (ratio[0, 1] - ratio[0, 0]) / sd), rtol=1e-4)
    big = tilt_weights(jnp.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0]]), 1.0)
    np.testing.assert_allclose(big[0, -1], TILT_CAP, rtol=1e-6)
    np.testing.assert_allclose(big[0, :-1], (10 - TILT_CAP) / 9, rtol=1e-6)
    np.testing.assert_allclose(jnp.mean(big), 1.0, rtol=1e-6)


def test_a_non_finite_ratio_gets_the_mean_weight():
    ratio = jnp.array([[0.0, 0.5, -jnp.inf, 1.0, jnp.nan]])
    w = tilt_weights(ratio, 1.0)
    assert bool(jnp.all(jnp.isfinite(w)))
    finite = w[0, jnp.array([0, 1, 3])]
    np.testing.assert_allclose(w[0, 2], jnp.mean(finite) * 1.0, rtol=0.5)
    np.testing.assert_allclose(jnp.mean(w), 1.0, rtol=1e-6)
    # a component whose every draw hit an infinite V: weights 1 (not 0 / 0), the others unchanged
    both = tilt_weights(jnp.concatenate([ratio, jnp.full((1, 5), -jnp.inf)]), 1.0)
    np.testing.assert_array_equal(both[1], jnp.ones(5))
    np.testing.assert_array_equal(both[0], w[0])


@pytest.mark.parametrize("kind", ["isotropic", "dense", "lowrank"])
def test_a_component_with_infinite_v_everywhere_leaves_the_tilted_step_finite(kind):
    """Quarantine under a tilt: V is +inf at every draw of component 0 (a constraint it crossed); the
    other components' estimates stay finite and equal those of a step without that component's values."""
    n, b, d = 3, 6, 4
    k = jax.random.split(jax.random.key(7), 3)
    locs, u = jax.random.normal(k[0], (n, d)), 0.2 * jax.random.normal(k[1], (n,))
    z = jax.random.normal(k[2], (b, d))
    metric, tril = _metric(kind, d, k[1])
    pts = draw_points(locs, u, z, metric, tril)
    v, g = potential(pts), jax.vmap(jax.vmap(jax.grad(potential)))(pts)
    v = v.at[0].set(jnp.inf)
    g = g.at[0].set(jnp.nan)
    est = stein_estimate(
        locs, u, z, v, g, metric=metric, scale_tril=tril, coord=metric is not None, quarantine=True, tilt=1.0
    )
    assert bool(est.bad[0]) and not bool(jnp.any(est.bad[1:]))
    assert bool(jnp.all(jnp.isfinite(est.gbar))) and bool(jnp.all(jnp.isfinite(est.lam)))
    terms = est.t if isinstance(est.t, tuple) else (est.t,)
    assert all(bool(jnp.all(jnp.isfinite(t))) for t in terms if t is not None)


def _metric(kind, d, key):
    if kind == "dense":
        tril = jnp.tril(0.3 * jax.random.normal(key, (d, d)), -1) + jnp.diag(
            jnp.exp(0.2 * jax.random.normal(key, (d,)))
        )
        return None, tril
    if kind == "diagonal":
        return jnp.exp(0.3 * jax.random.normal(key, (d,))), None
    if kind == "lowrank":
        basis = jnp.linalg.qr(jax.random.normal(key, (d, 2)))[0]
        return LowRankMetric(0.2 * jax.random.normal(key, (d,)), basis, jnp.array([0.4, -0.3])), None
    return None, None


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "dense", "lowrank"])
def test_tilted_estimates_equal_weighted_averages_of_the_exact_gradients(shared, kind):
    """gbar_i = mean_b rho_ib grad psi(x_ib), lambda_i = mean_b rho_ib <x_ib - m_i, grad psi> / eps_i, and
    the dense metric's Stein matrix with the same weights, against autodiff of log q + V."""
    if kind == "lowrank" and not shared:
        pytest.skip("the low-rank metric needs shared noise")
    with jax.enable_x64(True):
        n, b, d = 3, 6, 4
        k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(7), 4)
        locs = jax.random.normal(k1, (n, d))
        u = 0.3 * jax.random.normal(k2, (n,))
        z = jax.random.normal(k3, (b, d) if shared else (n, b, d))
        metric, tril = _metric(kind, d, k4)
        x = draw_points(locs, u, z, metric, tril)
        if isinstance(metric, LowRankMetric):
            root = jax.vmap(lambda e: root_apply(metric, e))(jnp.eye(d)).T
            cov_root = root
        elif metric is not None:
            cov_root = jnp.diag(jnp.sqrt(metric))
        elif tril is not None:
            cov_root = tril
        else:
            cov_root = jnp.eye(d)
        q = IsotropicMixture(jnp.linalg.solve(cov_root, locs.T).T, jnp.exp(u))
        log_det = jnp.linalg.slogdet(cov_root)[1]

        def log_q(y):
            return q.log_prob(jnp.linalg.solve(cov_root, y)) - log_det

        lq, v = jax.vmap(jax.vmap(log_q))(x), potential(x)
        rho = tilt_weights(-(lq + v), 0.7)
        grad_psi = jax.vmap(jax.vmap(jax.grad(lambda y: log_q(y) + potential(y))))(x)
        gbar = jnp.mean(rho[..., None] * grad_psi, 1)
        lam = jnp.mean(rho * jnp.sum((x - locs[:, None]) * grad_psi, -1), 1) / jnp.exp(2 * u)
        gv = jax.vmap(jax.vmap(jax.grad(potential)))(x)
        est = stein_estimate(
            locs, u, z, v, gv, metric=metric, coord=metric is not None, scale_tril=tril, tilt=jnp.asarray(0.7)
        )
        np.testing.assert_allclose(est.gbar, gbar, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(est.lam, lam, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(est.log_q, lq, rtol=1e-10)
        if tril is not None:
            white = jnp.einsum("kd,ibd->ibk", jnp.linalg.inv(tril), x - locs[:, None])
            stein = jnp.einsum("ib,ibk,ibl->kl", rho, white, grad_psi @ tril) / (n * b)
            np.testing.assert_allclose(est.t, stein, rtol=1e-9, atol=1e-11)
        # the loss is the plain -ELBO estimate: the weights do not enter it
        np.testing.assert_allclose(est.loss, jnp.mean(lq + v), rtol=1e-10)


def test_tilt_needs_the_potential_at_every_draw():
    locs, u, z = jnp.zeros((2, 3)), jnp.zeros(2), jnp.ones((4, 3))
    with pytest.raises(ValueError, match="a tilt needs V at every draw"):
        stein_estimate(locs, u, z, jnp.zeros((2, 1)), jnp.zeros((2, 4, 3)), tilt=1.0)


def _banana():
    x0 = numpyro.sample("x0", dist.Normal(0.0, 3.0))
    numpyro.sample("x1", dist.Normal(0.3 * (x0**2 - 9.0), 1.0))


def _gaussian():
    numpyro.sample("x", dist.Normal(MU, 1 / jnp.sqrt(PREC)).to_event(1))


def _fit(model, tilt, steps, n=5, seed=0):
    guide = mixvi.AutoIsotropicMixture(model, n_components=n)
    vi = mixvi.MixVI(model, guide, tilt=tilt)
    result = vi.run(jax.random.PRNGKey(seed), steps, progress_bar=False)
    draws = guide.sample_posterior(jax.random.PRNGKey(1), result.params, sample_shape=(20000,))
    return vi, result, draws


def test_tilt_widens_a_fit_that_under_covers_the_target():
    """A banana with five components: the reverse KL leaves the arms' tails out; the tilted second half
    brings x1's sd closer to the exact one (x1 = 0.3 (x0^2 - 9) + e: sd sqrt(0.09 * 2 * 81 + 1) = 3.94)."""
    exact = np.sqrt(0.09 * 2 * 81 + 1)
    _, _, plain = _fit(_banana, 0.0, 1500)
    vi, _, tilted = _fit(_banana, 1.0, 1500)
    sd_plain, sd_tilted = float(np.std(plain["x1"])), float(np.std(tilted["x1"]))
    assert sd_plain < sd_tilted <= exact * 1.1
    assert abs(np.log(sd_tilted / exact)) < abs(np.log(sd_plain / exact))


def test_tilt_keeps_an_exact_fit_exact():
    """On a Gaussian the family holds the answer: the tilted half keeps every component on it."""
    _, result, draws = _fit(_gaussian, 1.0, 1500, n=3)
    np.testing.assert_allclose(np.mean(draws["x"], 0), MU, atol=0.05)
    np.testing.assert_allclose(np.std(draws["x"], 0), 1 / np.sqrt(PREC), rtol=0.05)


def test_tilt_starts_halfway_through_a_run():
    """The run's state says where the tilt starts (the scouting half's end); a loop of one's own, which
    sets no schedule, takes the paper's steps: its first steps equal those of a run with tilt=0."""
    guide = mixvi.AutoIsotropicMixture(_gaussian, n_components=3)
    vi = mixvi.MixVI(_gaussian, guide)
    assert vi.tilt == 1.0
    result = vi.run(jax.random.PRNGKey(0), 40, progress_bar=False)
    assert int(result.state.core.relocation.scout_until) == 20
    # fresh guides: a guide keeps the start it was first set up with. float64: update is compiled, and the
    # two settings are two programs, whose float32 roundings differ (~1e-7 relative); BLAS on one thread
    with jax.enable_x64(True), mixvi.loop.blas_limit(1):
        tilted = mixvi.MixVI(_gaussian, mixvi.AutoIsotropicMixture(_gaussian, n_components=3))
        plain = mixvi.MixVI(
            _gaussian, mixvi.AutoIsotropicMixture(_gaussian, n_components=3), tilt=0.0, loss_draws=None
        )
        a, b = tilted.init(jax.random.PRNGKey(3)), plain.init(jax.random.PRNGKey(3))
        assert a.core.params.locs.dtype == jnp.float64
        for _ in range(5):
            a, loss_a = tilted.update(a)
            b, loss_b = plain.update(b)
        np.testing.assert_allclose(loss_a, loss_b, rtol=1e-12)
        np.testing.assert_allclose(a.core.params.locs, b.core.params.locs, rtol=1e-12, atol=1e-14)



@pytest.mark.parametrize("metric", ["isotropic", "dense"])
def test_one_loss_draw_until_the_tilt_starts_and_every_draw_after(metric):
    """With ``loss_draws=1`` a tilted step reads V at one draw per component before the schedule starts
    (the same step as without a tilt: loss, means, scales) and at every draw after it (the same step as
    with ``loss_draws=None``)."""
    # float64: the compared steps are different compiled programs, whose float32 roundings differ (~5e-6);
    # BLAS on one thread, as MixVI.run has it (the dense metric's triangular solves call OpenBLAS)
    with jax.enable_x64(True), mixvi.loop.blas_limit(1):
        mu = jnp.asarray(MU, jnp.float64)
        compiled = {}

        def steps(tilt, loss_draws, start):
            settings = mixvi.vi.check(mixvi.vi.Settings(step_size=0.05, loss_draws=loss_draws, tilt=tilt))
            state = mixvi.vi.init_state(jnp.stack([mu + 0.7, mu - 0.4, mu]), 0.5, metric=metric, step_size=0.05)
            state = mixvi.vi.explore_until(state, start, 20)
            # compiled, as run() compiles it (this test's op-by-op steps crashed a test worker twice), once
            # per settings (the schedule's start is in the state)
            step = compiled.setdefault(
                settings, jax.jit(lambda key, s: mixvi.vi.step(key, s, lambda x, _: potential(x), settings))
            )
            out = []
            for i in range(4):
                state, info = step(jax.random.PRNGKey(i), state)
                out.append((info.loss, state.params.locs, state.params.log_scales, info.log_weights))
            return out

        early, plain = steps(1.0, 1, 10), steps(0.0, 1, 10)
        late, every = steps(1.0, 1, 1), steps(1.0, None, 1)
        for a, b in zip(early, plain):
            for x, y in zip(a[:3], b[:3]):
                np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
            # the log weights exist where V was evaluated: one draw per component
            assert np.all(np.isfinite(a[3][:, 0])) and np.all(np.isnan(a[3][:, 1:]))
        # (the schedule's first step is step 1: step 0's loss still reads one draw per component)
        for a, b in zip(late[1:], every[1:]):
            for x, y in zip(a, b):
                np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
        # and the tilt does act once on: the steps differ from the untilted ones
        assert not np.allclose(late[-1][1], steps(0.0, None, 1)[-1][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("tilt", "relocate", "match"),
    [
        ("on", True, "tilt must be 'auto' or a finite float >= 0"),
        (-1.0, True, "tilt must be 'auto' or a finite float >= 0"),
        (float("inf"), True, "tilt must be 'auto' or a finite float >= 0"),
        (True, True, "tilt must be 'auto' or a finite float >= 0"),
        (1.0, False, "needs relocate=True"),
    ],
)
def test_bad_tilt_options_name_the_fix(tilt, relocate, match):
    with pytest.raises(ValueError, match=match):
        mixvi.MixVI(_gaussian, mixvi.AutoIsotropicMixture(_gaussian), tilt=tilt, relocate=relocate)


def test_the_paper_mode_has_no_tilt():
    vi = mixvi.MixVI(_gaussian, mixvi.AutoIsotropicMixture(_gaussian, metric="isotropic"), relocate=False)
    assert vi.tilt == 0.0 and vi.settings.tilt == 0.0


def test_a_huge_first_loss_does_not_hold_the_running_averages():
    """A component starting deep in a tail (1e25 nats) enters the averages at most 10 gaps above the best,
    so its trend soon reads as stalled and relocation can restart it."""
    state = init_relocation(3)
    gap = 25.0
    state = track(state, jnp.array([50.0, 1e25, 60.0]), jnp.array(True), gap=gap)
    assert float(state.loss_fast[1]) == pytest.approx(50.0 + LOSS_CEILING_GAPS * gap)
    assert float(state.loss_slow[1]) == pytest.approx(50.0 + LOSS_CEILING_GAPS * gap)
    unclipped = track(init_relocation(3), jnp.array([50.0, 1e25, 60.0]), jnp.array(True))
    assert float(unclipped.loss_fast[1]) == pytest.approx(1e25)
