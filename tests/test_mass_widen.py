"""Importance masses from widened draws (``Settings.mass_widen``): the log ratios against the densities they
stand for, the estimator's tails on a mode wider than its component, when a step uses them, and bad values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from mixvi import adapt, vi
from mixvi.estimators import balance_heuristic, widened_log_ratios


def _log_normal(x, mean, cov):
    """log N(x; mean, cov) for rows x (..., d), in float64."""
    diff = x - mean
    chol = np.linalg.cholesky(cov)
    y = np.linalg.solve(chol, np.moveaxis(diff, -1, 0).reshape(diff.shape[-1], -1)).T.reshape(diff.shape)
    d = x.shape[-1]
    return -0.5 * np.sum(y**2, -1) - np.sum(np.log(np.diag(chol))) - 0.5 * d * np.log(2 * np.pi)


@pytest.mark.parametrize("shared", [True, False])
def test_widened_log_ratios_equal_the_densities_they_stand_for(shared):
    """log q_i - log g_i - log q at x_ib = m_i + c sigma_i z_b, against the Gaussian densities themselves."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        n, length, d, c = 4, 5, 3, 1.3
        locs = rng.normal(size=(n, d)) * 2.0
        log_scales = rng.normal(size=n) * 0.3
        weights = rng.dirichlet(np.ones(n))
        z = rng.normal(size=(length, d) if shared else (n, length, d))
        got = widened_log_ratios(jnp.asarray(locs), jnp.asarray(log_scales), jnp.asarray(z), c, jnp.log(weights))
        sig = np.exp(log_scales)
        x = locs[:, None, :] + c * sig[:, None, None] * (z[None] if shared else z)
        comps = np.stack([_log_normal(x, locs[j], sig[j] ** 2 * np.eye(d)) for j in range(n)], -1)
        log_q = np.asarray(logsumexp(comps + np.log(weights), -1))
        own = np.stack([comps[i, :, i] for i in range(n)])
        widened = np.stack([_log_normal(x[i], locs[i], (c * sig[i]) ** 2 * np.eye(d)) for i in range(n)])
        np.testing.assert_allclose(np.asarray(got), own - widened - log_q, rtol=1e-10, atol=1e-10)


def test_the_steps_mass_ratios_with_a_dense_metric_weigh_both_draws_by_their_even_mixture():
    """Through the step's helper, with a dense metric: at the own draws x = m_i + sigma_i L z and the widened
    ones m_i + c sigma_i L z, -V - log q + log q_i - log((q_i + g_i) / 2), every density with its covariance
    (c sigma_i)^2 L L^T (the metric's log-determinant included)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        n, b, d, c = 3, 4, 2, 1.25
        locs = rng.normal(size=(n, d)) * 2.0
        u = rng.normal(size=n) * 0.2
        tril = np.tril(rng.normal(size=(d, d)) * 0.3) + np.diag([1.5, 0.7])
        z = rng.normal(size=(b, d))
        target = np.array([[1.0, 0.3], [0.3, 2.0]])

        def potential(x, _key):
            return 0.5 * x @ jnp.linalg.solve(jnp.asarray(target), x)

        sig = np.exp(u)
        cov = tril @ tril.T

        def expected(scale):
            x = locs[:, None, :] + scale * sig[:, None, None] * (z[:3] @ tril.T)[None]
            comps = np.stack([_log_normal(x, locs[j], sig[j] ** 2 * cov) for j in range(n)], -1)
            log_q = np.asarray(logsumexp(comps, -1)) - np.log(n)
            own = np.stack([comps[i, :, i] for i in range(n)])
            widened = np.stack([_log_normal(x[i], locs[i], (c * sig[i]) ** 2 * cov) for i in range(n)])
            v = 0.5 * np.einsum("ibk,kl,ibl->ib", x, np.linalg.inv(target), x)
            return -v - log_q, own - np.logaddexp(own, widened) + np.log(2.0)

        log_ratio_own, mix_own = expected(1.0)
        log_ratio_wide, mix_wide = expected(c)
        settings = vi.check(vi.Settings(mass_widen=c))
        got = vi._widened_mass_ratios(
            potential,
            jnp.asarray(locs),
            jnp.asarray(u),
            None,
            jnp.asarray(z),
            jnp.asarray(tril),
            None,
            jax.random.PRNGKey(0),
            settings,
            jnp.asarray(log_ratio_own),
        )
        want = np.concatenate([log_ratio_own + mix_own, log_ratio_wide + mix_wide], 1)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shared", [True, False])
def test_the_balance_heuristic_weighs_each_draw_by_the_even_mixture_of_both(shared):
    """balance_heuristic against the densities: each draw's ratio times 2 q_i / (q_i + g_i) at the own draws,
    2 g_i / (q_i + g_i) at the widened ones (isotropic components, shared or per-component noise)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        n, length, d, c = 3, 6, 4, 1.5
        locs = rng.normal(size=(n, d))
        sig = np.exp(rng.normal(size=n) * 0.3)
        z = rng.normal(size=(length, d) if shared else (n, length, d))
        own, widened = rng.normal(size=(n, length)), rng.normal(size=(n, length))
        got = np.asarray(balance_heuristic(jnp.asarray(own), jnp.asarray(widened), jnp.asarray(z), c))
        zn = np.broadcast_to(z[None] if shared else z, (n, length, d))
        want = []
        for ratios, scale in ((own, 1.0), (widened, c)):
            x = locs[:, None, :] + scale * sig[:, None, None] * zn
            log_qi = np.stack([_log_normal(x[i], locs[i], sig[i] ** 2 * np.eye(d)) for i in range(n)])
            log_gi = np.stack([_log_normal(x[i], locs[i], (c * sig[i]) ** 2 * np.eye(d)) for i in range(n)])
            mine = log_qi if scale == 1.0 else log_gi
            want.append(ratios + mine - np.logaddexp(log_qi, log_gi) + np.log(2.0))
        np.testing.assert_allclose(got, np.concatenate(want, 1), rtol=1e-10, atol=1e-10)


MODE_SD = 2.0
"""The second mode's sd: four times its component's variance, so that p / q has infinite variance under
that component's own draws (it would be finite below twice)."""


def _log_p(x):
    """p = 0.7 N(-4, 1) + 0.3 N(4, MODE_SD^2) at rows x (..., 1)."""
    return jnp.logaddexp(
        jnp.log(0.7) - 0.5 * (x + 4.0) ** 2 - 0.5 * jnp.log(2 * jnp.pi),
        jnp.log(0.3) - 0.5 * ((x - 4.0) / MODE_SD) ** 2 - jnp.log(MODE_SD) - 0.5 * jnp.log(2 * jnp.pi),
    )[..., 0]


def _shares(widen: float, repeats: int, draws: int, mixed: bool = False) -> np.ndarray:
    """Estimates of each component's share of p, E_p[r_i] = E_{q_i}[p / q] / 2 with q = N(-4, 1) / 2 +
    N(4, 1) / 2, from ``draws`` draws of the widened components (``mixed``: and as many own draws, weighed
    by the balance heuristic), ``repeats`` times."""
    locs, log_scales = jnp.array([[-4.0], [4.0]]), jnp.zeros(2)
    out = []
    for key in jax.random.split(jax.random.PRNGKey(0), repeats):
        z = jax.random.normal(key, (draws, 1))

        def ratios(scale, z=z):
            x = locs[:, None, :] + scale * jnp.exp(log_scales)[:, None, None] * z[None]
            return _log_p(x) + widened_log_ratios(locs, log_scales, z, scale)

        both = balance_heuristic(ratios(1.0), ratios(widen), z, widen) if mixed else ratios(widen)
        out.append(np.exp(np.asarray(logsumexp(both, 1))) / both.shape[1] / 2)
    return np.array(out)


def test_widened_draws_estimate_a_wide_modes_share_without_the_heavy_tail():
    """Each component's share of p from 2000 draws, 40 times, against the share by quadrature: from the
    component's own draws the wide mode's estimate is heavy-tailed (its median and mean over the 40 both
    more than 0.005 low); from draws 1.8 times wider (variance 3.24: p / q has finite variance), alone or
    with as many own draws under the balance heuristic, both are within 0.002 and the rms error is less
    than half."""
    grid = np.linspace(-30.0, 30.0, 600_001)
    log_q = np.logaddexp(-0.5 * (grid + 4.0) ** 2, -0.5 * (grid - 4.0) ** 2)
    share = np.exp(
        np.asarray(_log_p(jnp.asarray(grid[:, None], jnp.float32)), np.float64) - 0.5 * (grid - 4.0) ** 2 - log_q
    )
    truth = float(np.sum(share) * (grid[1] - grid[0]))
    own = _shares(1.0, 40, 2000)[:, 1]
    assert np.median(own) < truth - 0.005 and np.mean(own) < truth - 0.005
    for wide in (_shares(1.8, 40, 2000)[:, 1], _shares(1.8, 40, 1000, mixed=True)[:, 1]):
        assert abs(np.median(wide) - truth) < 0.002 and abs(np.mean(wide) - truth) < 0.002
        assert np.sqrt(np.mean((wide - truth) ** 2)) < 0.5 * np.sqrt(np.mean((own - truth) ** 2))


@pytest.mark.parametrize("bad", [0.5, 0.0, True, float("inf"), float("nan"), "wide"])
def test_a_bad_mass_widen_is_refused(bad):
    with pytest.raises(ValueError) as err:
        vi.check(vi.Settings(mass_widen=bad))
    assert str(err.value) == vi.BAD_SETTINGS_MASS_WIDEN.format(bad)


def _state(n, age, log_mass, end=0, steps=0):
    state = adapt.init_relocation(n)
    return state._replace(
        age=jnp.full((n,), age, jnp.int32),
        log_mass=jnp.full((n,), log_mass),
        end=jnp.asarray(end, jnp.int32),
        steps=jnp.asarray(steps, jnp.int32),
    )


def test_several_basins_counts_settled_components_before_the_quiet_phase():
    """Two pairs of components 10 sigma sqrt(d) apart lie in two basins; not when they are neighbours, when
    one pair is younger than 100 steps or has no mass estimate yet, or in the run's quiet phase."""
    locs = jnp.array([[0.0, 0.0], [0.5, 0.0], [14.0, 0.0], [14.5, 0.0]])
    u = jnp.zeros(4)
    assert bool(adapt.several_basins(locs, u, _state(4, 100, 0.0)))
    assert not bool(adapt.several_basins(locs * 0.1, u, _state(4, 100, 0.0)))
    young = _state(4, 100, 0.0)._replace(age=jnp.array([100, 100, 99, 99]))
    assert not bool(adapt.several_basins(locs, u, young))
    unknown = _state(4, 100, 0.0)._replace(log_mass=jnp.array([0.0, 0.0, jnp.nan, jnp.nan]))
    assert not bool(adapt.several_basins(locs, u, unknown))
    assert not bool(adapt.several_basins(locs, u, _state(4, 100, 0.0, end=1000, steps=950)))
    assert bool(adapt.several_basins(locs, u, _state(4, 100, 0.0, end=1000, steps=500)))


def test_in_a_run_the_setting_changes_the_mass_estimates_only_once_settled_basins_differ():
    """With two modes, steps with widened mass draws are the same steps (means, scales, losses bit for bit)
    over the 150 steps before any move between basins can be made; the importance masses are the own draws'
    while no component is 100 steps old, and other, finite ones once settled components in both modes
    read them."""
    modes = jnp.array([[-6.0, 0.0], [6.0, 0.0]])

    def potential(x, _key):
        return -logsumexp(jnp.log(jnp.array([0.2, 0.8])) - 0.5 * jnp.sum((x - modes) ** 2, -1))

    algo = vi.mixture_vi(lambda x: -potential(x, None), n_components=6, init_scale=6.0)
    start = algo.init(jax.random.key(1), jnp.zeros(2))
    keys = jax.random.split(jax.random.key(2), 150)
    out = []
    for widen in (1.0, 1.3):
        settings = vi.check(vi.Settings(mass_widen=widen))
        run = jax.jit(lambda s, ks, st=settings: jax.lax.scan(lambda c, k: vi.step(k, c, potential, st), s, ks))
        early, _ = run(start, keys[:99])
        late, info = run(early, keys[99:])
        out.append((early, late, info))
    (early_a, a, info_a), (early_b, b, info_b) = out
    np.testing.assert_array_equal(np.asarray(info_a.loss), np.asarray(info_b.loss))
    np.testing.assert_array_equal(np.asarray(a.params.locs), np.asarray(b.params.locs))
    np.testing.assert_array_equal(np.asarray(a.params.log_scales), np.asarray(b.params.log_scales))
    assert bool(adapt.several_basins(a.params.locs, a.params.log_scales, a.relocation))
    np.testing.assert_allclose(
        np.asarray(early_a.relocation.log_mass), np.asarray(early_b.relocation.log_mass), rtol=1e-6
    )
    mass_a, mass_b = np.asarray(a.relocation.log_mass), np.asarray(b.relocation.log_mass)
    assert np.all(np.isfinite(mass_b)) and not np.allclose(mass_a, mass_b, rtol=1e-3)
