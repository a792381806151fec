"""The Stein moment divergence from a step's grouped draws: unbiased against its closed form for a
Gaussian target, and computed only on a run's last steps."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import mixvi
from mixvi import vi
from mixvi.adapt import init_relocation
from mixvi.estimators import draw_points
from mixvi.stein_moment import covariance_form, init_sums, pooled_divergence, stein_moment_divergence


def _problem(d=4, n=3):
    k = jax.random.split(jax.random.key(7), 5)
    root = jnp.tril(jax.random.normal(k[0], (d, d))) * 0.3 + jnp.diag(jnp.linspace(0.6, 1.8, d))
    cov_p, mean_p = root @ root.T, jax.random.normal(k[1], (d,))
    locs = mean_p + 0.8 * jax.random.normal(k[2], (n, d))
    log_scales = jnp.log(jnp.linspace(0.5, 0.9, n))
    tril = jnp.tril(jax.random.normal(k[3], (d, d))) * 0.2 + jnp.eye(d)
    return cov_p, mean_p, locs, log_scales, tril


def _exact(cov_p, mean_p, locs, log_scales, tril):
    """M for a Gaussian p (its score is linear): C = -Sigma_q Sigma_p^-1, h = -Sigma_p^-1 (m_q - m_p)."""
    n, d = locs.shape
    w = jnp.full((n,), 1.0 / n)
    centre = w @ locs
    cov_q = (w @ jnp.exp(2 * log_scales)) * tril @ tril.T + (locs - centre).T @ (w[:, None] * (locs - centre))
    prec = jnp.linalg.inv(cov_p)
    r = jnp.eye(d) - cov_q @ prec
    h = prec @ (centre - mean_p)
    return float((jnp.trace(r @ r) + h @ cov_q @ h) / d)


def test_grouped_estimate_of_a_step_is_unbiased_for_a_gaussian_target():
    """A mixture of three components (dense metric) against a correlated Gaussian p, draws as in a step
    with shared noise (every component uses the same B = 4 rows z_b): the mean of the estimate over
    4000 steps' noise is the closed form (within 4 standard errors); the estimate that wrongly treats
    every draw as independent (pairs of one z_b included) is not."""
    with jax.enable_x64(True):
        cov_p, mean_p, locs, u, tril = _problem()
        prec = jnp.linalg.inv(cov_p)
        n, d = locs.shape
        weights = jnp.full((n,), 1.0 / n)

        def form(h):
            return covariance_form(h, locs, jnp.exp(u), weights, None, tril)

        def estimates(key):
            z = jax.random.normal(key, (4, d), jnp.float64)
            x = draw_points(locs, u, z, None, tril)  # (N, B, d)
            g = -(x - mean_p) @ prec
            grouped = stein_moment_divergence(x - weights @ locs, g, form)  # group b: the draws of row z_b
            flat = stein_moment_divergence((x - weights @ locs).reshape(1, -1, d), g.reshape(1, -1, d), form)
            return grouped, flat

        grouped, flat = jax.jit(jax.vmap(estimates))(jax.random.split(jax.random.key(0), 4000))
        exact = _exact(cov_p, mean_p, locs, u, tril)
        assert exact > 0.05
        se = float(jnp.std(grouped)) / np.sqrt(grouped.shape[0])
        assert abs(float(jnp.mean(grouped)) - exact) < 4 * se, (float(jnp.mean(grouped)), exact, se)
        se_flat = float(jnp.std(flat)) / np.sqrt(flat.shape[0])
        assert abs(float(jnp.mean(flat)) - exact) > 8 * se_flat


def test_a_step_computes_it_only_on_the_last_steps_before_the_end():
    """final_stein_moment: NaN while more than STEIN_STEPS steps remain and when no end is set (0), the
    grouped estimate on the last STEIN_STEPS steps; and 0 in expectation when q is p."""
    with jax.enable_x64(True):
        d, n = 3, 2
        locs, u = jnp.zeros((n, d)), jnp.zeros((n,))  # q = p = N(0, I)
        z = jax.random.normal(jax.random.key(1), (10, d), jnp.float64)
        x = draw_points(locs, u, z)
        tracking = init_relocation(n, jnp.float64)

        def at(steps, end, grad=x):
            state = tracking._replace(steps=jnp.asarray(steps, jnp.int32), end=jnp.asarray(end, jnp.int32))
            return float(vi.final_stein_moment(state, locs, u, None, None, x, grad)[0])

        end = 1000
        assert np.isnan(at(end - vi.STEIN_STEPS - 1, end)) and np.isnan(at(5, 0))
        on = at(end - vi.STEIN_STEPS, end)
        assert np.isfinite(on) and on == at(end - 1, end)
        # grad V at x given in two parts along the draws (as the step splits them) is the same estimate. The
        # parts join to the same bits as x, but XLA may fuse the join into the sums and add in another order
        # (1 ulp apart with jax 0.12.1, equal with 0.12.0.1; M itself moved 40 ulps between the two versions):
        # rtol 1e-13 (~600 ulps) is that rounding. Parts joined in the wrong order change M by 10x its size.
        np.testing.assert_allclose(at(end - 1, end, (x[:, :4], x[:, 4:])), on, rtol=1e-13, atol=0)
        keys = jax.random.split(jax.random.key(2), 2000)
        state = tracking._replace(steps=jnp.asarray(end - 1, jnp.int32), end=jnp.asarray(end, jnp.int32))

        def one(key):
            xs = draw_points(locs, u, jax.random.normal(key, (10, d), jnp.float64))
            return vi.final_stein_moment(state, locs, u, None, None, xs, xs)[0]

        values = jax.jit(jax.vmap(one))(keys)
        assert abs(float(jnp.mean(values))) < 4 * float(jnp.std(values)) / np.sqrt(keys.shape[0])


def test_sums_over_steps_give_the_estimate_over_all_their_groups():
    """Adding three steps' draws to the sums (final_stein_moment on the last steps) gives exactly the
    estimate over the groups of all three (pairs across steps included), as does pooled_divergence of the
    sums; a step whose gradients are not finite leaves the sums as they were (its M: NaN); before the
    last steps nothing is added."""
    with jax.enable_x64(True):
        cov_p, mean_p, locs, u, tril = _problem()
        prec = jnp.linalg.inv(cov_p)
        n, d = locs.shape
        end = 100
        tracking = init_relocation(n, jnp.float64)._replace(end=jnp.asarray(end, jnp.int32))
        sums = init_sums(d, jnp.float64)
        xs, gs = [], []
        for i, key in enumerate(jax.random.split(jax.random.key(3), 3)):
            x = draw_points(locs, u, jax.random.normal(key, (4, d), jnp.float64), None, tril)
            xs.append(x)
            gs.append(-(x - mean_p) @ prec)
            at = tracking._replace(steps=jnp.asarray(end - 3 + i, jnp.int32))
            value, sums = vi.final_stein_moment(at, locs, u, None, tril, x, (x - mean_p) @ prec, sums)
        weights = jnp.full((n,), 1.0 / n)

        def form(h):
            return covariance_form(h, locs, jnp.exp(u), weights, None, tril)

        centre = jnp.mean(locs, 0)
        whole = stein_moment_divergence(jnp.concatenate(xs, 1) - centre, jnp.concatenate(gs, 1), form)
        np.testing.assert_allclose(float(value), float(whole), rtol=1e-10)
        np.testing.assert_allclose(float(pooled_divergence(sums, form)), float(whole), rtol=1e-10)
        assert float(sums.num_draws) == 3 * 4 * n and float(sums.group_size) == n
        # one draw of the last step's with a NaN gradient: the sums stay, and that step's M is NaN
        bad = xs[-1].at[0, 0, 0].set(jnp.nan)
        at = tracking._replace(steps=jnp.asarray(end - 1, jnp.int32))
        again, kept = vi.final_stein_moment(at, locs, u, None, tril, bad, (bad - mean_p) @ prec, sums)
        assert all(bool(jnp.all(a == b)) for a, b in zip(kept, sums)) and np.isnan(float(again))
        early = tracking._replace(steps=jnp.asarray(end - vi.STEIN_STEPS - 1, jnp.int32))
        none, same = vi.final_stein_moment(early, locs, u, None, tril, xs[0], (xs[0] - mean_p) @ prec, sums)
        assert np.isnan(float(none)) and all(bool(jnp.all(a == b)) for a, b in zip(same, sums))
        assert np.isnan(float(pooled_divergence(init_sums(d, jnp.float64), form)))


def test_run_reads_the_sums_of_its_last_steps_and_a_new_end_empties_them():
    """MixVI.run on a 3-d Gaussian: the state's sums hold the draws of exactly the last STEIN_STEPS steps
    and ``last_run_stein`` is their M (small: the fit is good); explore_until with a new end empties the
    sums, with the same end keeps them; past POOLED_STEIN_MAX_DIM (or with learned weights) the state has
    none."""

    def model():
        numpyro.sample("x", dist.Normal(jnp.array([1.0, -2.0, 0.5]), jnp.array([1.0, 2.0, 0.5])).to_event(1))

    guide = mixvi.AutoIsotropicMixture(model, n_components=4, metric="diagonal")
    engine = mixvi.MixVI(model, guide, num_samples=5)
    result = engine.run(jax.random.PRNGKey(0), 400, progress_bar=False)
    sums = result.state.core.stein
    assert float(sums.num_draws) == vi.STEIN_STEPS * 5 * 4
    assert engine.last_run_stein is not None and abs(engine.last_run_stein) < 0.2
    core = result.state.core
    same = vi.explore_until(core, core.relocation.scout_until, core.relocation.end)
    assert float(same.stein.num_draws) == float(sums.num_draws)
    later = vi.explore_until(core, core.relocation.scout_until, core.relocation.end + 100)
    assert float(later.stein.num_draws) == 0 and not bool(jnp.any(later.stein.cross))
    wide = vi.init_state(jnp.zeros((2, vi.POOLED_STEIN_MAX_DIM + 1)), 1.0)
    learned = vi.init_state(jnp.zeros((2, 3)), 1.0, weights="fisher-rao")
    assert wide.stein is None and learned.stein is None and vi.init_state(jnp.zeros((2, 3)), 1.0).stein is not None
