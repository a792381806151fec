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
from mixvi import vi
from mixvi.diagnostics.fit import relative_score_divergence, stein_moment_divergence
from mixvi.family import IsotropicMixture
from mixvi.stein_moment import _trace_of_square

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



def _gaussian_stein_exact(q, mean_p, cov_p):
    """M for a Gaussian p from q's exact moments: C = -Sigma_q Sigma_p^-1, h = -Sigma_p^-1 (m_q - m_p)."""
    w, locs = q.component_weights, q.locs
    a = q.scale_tril @ q.scale_tril.T
    cov_q = (w @ q.scales**2) * a + (locs - q.mean).T @ (w[:, None] * (locs - q.mean))
    prec = jnp.linalg.inv(cov_p)
    r = jnp.eye(cov_p.shape[0]) - cov_q @ prec
    h = prec @ (q.mean - mean_p)
    return float((jnp.trace(r @ r) + h @ cov_q @ h) / cov_p.shape[0])


def test_stein_divergence_matches_its_closed_form_for_a_gaussian_target():
    """Against a correlated Gaussian p: a three-component mixture q (dense metric) gives the closed form
    of its moments; a q that is p gives 0; q = N(m_p, rho Sigma_p) gives (1 - rho)^2; a mean shift
    gives its squared Mahalanobis length over d; and the estimate is unbiased at S = 40 draws."""
    with jax.enable_x64(True):
        d = 5
        k = jax.random.split(jax.random.key(4), 6)
        root = jnp.tril(jax.random.normal(k[0], (d, d))) * 0.4 + jnp.diag(jnp.linspace(0.5, 2.0, d))
        cov_p, mean_p = root @ root.T, jax.random.normal(k[1], (d,))
        prec = jnp.linalg.inv(cov_p)

        def m_of(q, key, s):
            z = q.sample(key, (s,))
            return float(stein_moment_divergence(q, z, -(z - mean_p) @ prec))

        mixture = IsotropicMixture(
            mean_p + 0.6 * jax.random.normal(k[2], (3, d)) @ root.T, jnp.array([0.6, 0.9, 1.2]), scale_tril=root
        )
        exact = _gaussian_stein_exact(mixture, mean_p, cov_p)
        assert 0.05 < exact < 1.0, exact
        np.testing.assert_allclose(m_of(mixture, k[3], 200_000), exact, rtol=0.03)
        same = IsotropicMixture(mean_p[None], jnp.array([1.0]), scale_tril=root)
        assert abs(m_of(same, k[4], 200_000)) < 2e-3
        wide = IsotropicMixture(mean_p[None], jnp.array([1.5]), scale_tril=root)
        np.testing.assert_allclose(m_of(wide, k[4], 200_000), (1 - 1.5**2) ** 2, rtol=0.03)
        delta = jnp.array([1.0, 0.0, -0.5, 0.0, 0.0])
        shifted = IsotropicMixture((mean_p + delta)[None], jnp.array([1.0]), scale_tril=root)
        np.testing.assert_allclose(m_of(shifted, k[4], 200_000), float(delta @ prec @ delta) / d, rtol=0.03)
        # unbiased at small S (a plain plug-in estimate is off by about d / S = 0.12 here)
        small = np.mean([m_of(mixture, key, 40) for key in jax.random.split(k[5], 400)])
        np.testing.assert_allclose(small, exact, atol=0.03)


def test_stein_divergence_ignores_how_bumpy_the_mixture_is():
    """q = p = a two-component mixture far apart: the score of q is bumpy, Stein's identity holds all the
    same, so M is 0 where a Gaussian's moments would not fit."""
    with jax.enable_x64(True):
        q = IsotropicMixture(jnp.array([[-3.0, 0.0], [3.0, 0.0]]), jnp.array([1.0, 1.0]))
        z = q.sample(jax.random.key(2), (100_000,))
        assert abs(float(stein_moment_divergence(q, z, q.score(z)))) < 5e-3



def test_stein_divergence_in_float32_with_many_draws():
    """As fit_check computes it after a borderline k-hat (16 000 draws, float32): q = N(0, I) against
    p = N(0, 1.2^2 I) gives (1 - 1 / 1.44)^2 = 0.093."""
    q = IsotropicMixture(jnp.zeros((1, 20)), jnp.array([1.0]))
    z = q.sample(jax.random.key(0), (16_000,))
    np.testing.assert_allclose(float(jax.jit(stein_moment_divergence)(q, z, -z / 1.44)), (1 - 1 / 1.44) ** 2, atol=0.005)

def test_trace_of_square_blocks_equal_the_direct_product():
    """tr((U^T G)^2) through the (d, d) product, the (S, S) one and the (S, S) one in blocks of rows."""
    u, g = jax.random.normal(jax.random.key(0), (2, 300, 40))
    direct = float(jnp.sum((u.T @ g) * (g.T @ u)))
    np.testing.assert_allclose(float(_trace_of_square(u, g)), direct, rtol=1e-5)
    # d > S: through the (S, S) product, in blocks of rows
    u2, g2 = jax.random.normal(jax.random.key(1), (2, 50, 90))
    full = float(jnp.sum((g2 @ u2.T) * (g2 @ u2.T).T))
    np.testing.assert_allclose(float(_trace_of_square(u2, g2, block=16)), full, rtol=1e-5)
    np.testing.assert_allclose(float(_trace_of_square(u2, g2)), full, rtol=1e-5)

def test_verdict_separates_a_good_fit_from_a_bad_one():
    """A stretched Gaussian (sds 0.5 to 4): the diagonal metric fits it exactly ('good', and run stays
    quiet); the paper's isotropic components cannot ('poor': k-hat and D both large), and ``run`` says so
    from the Stein moment divergence of its last steps' draws.

    The k-hat half of ``run``'s warning is not asserted here: q is narrower than p along the wide axes,
    so p/q has a tail of index near 1 (P(w > t) ~ t^-1 up to logs) and the k-hat of the run's pooled
    draws falls on either side of the warning's threshold 1 by seed (0.47-1.36 measured); that warning
    is tested on weights of known tail below."""
    import mixvi.engine as engine

    verdicts, stein = {}, {}
    for metric in ("diagonal", "isotropic"):
        guide = mixvi.AutoIsotropicMixture(stretched, n_components=2, metric=metric)
        vi_ = mixvi.MixVI(stretched, guide)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = vi_.run(jax.random.PRNGKey(0), 1500, progress_bar=False)
        poor = [str(w.message) for w in caught if "fit looks poor" in str(w.message)]
        if metric == "diagonal":
            assert not poor, poor
        else:
            assert any("Stein moment divergence" in m for m in poor), poor
        stein[metric] = vi_.last_run_stein
        verdicts[metric] = mixvi.fit_check(guide, r.params, rng_key=jax.random.PRNGKey(1))
    assert abs(stein["diagonal"]) < 0.1 and stein["isotropic"] > engine.POOR_STEIN, stein
    good, bad = verdicts["diagonal"], verdicts["isotropic"]
    assert good.verdict == "good" and not good.reasons, good
    assert bad.verdict == "poor" and bad.score_divergence > 10 * good.score_divergence and bad.reasons, bad
    assert bad.stein_divergence > 1.0 > 0.1 > abs(good.stein_divergence), (good, bad)


def _info(log_weights):
    n = log_weights.shape[0]
    zeros = jnp.zeros((n,))
    return mixvi.MixtureVIInfo(zeros, zeros, zeros, jnp.zeros((n,), bool), zeros, jnp.asarray(log_weights))


def test_run_khat_reads_the_tail_of_the_pooled_weights():
    """Weights with a Pareto tail of index 1.5 (log w = 1.5 E, E ~ Exp(1)) give k-hat near 1.5; flat
    ones give None (their k-hat would be fitted to rounding); too few finite ones give None."""
    from mixvi.engine import run_khat

    e = np.random.default_rng(0).exponential(size=(200, 4, 10))
    assert abs(run_khat(_info(1.5 * e)) - 1.5) < 0.25
    assert abs(run_khat(_info(0.3 * e)) - 0.3) < 0.15
    assert run_khat(_info(np.zeros((200, 4, 10)))) is None
    few = np.full((200, 4, 10), -np.inf)
    few[:, 0, 0] = 0.0
    assert run_khat(_info(few[:20])) is None


def test_run_warns_when_the_pooled_k_hat_is_past_the_threshold(monkeypatch):
    """``run`` warns, naming k-hat and fit_check, exactly when its pooled k-hat exceeds POOR_KHAT, and keeps
    that k-hat as ``last_run_khat``."""
    import mixvi.engine as engine

    monkeypatch.setattr(engine, "run_stein", lambda info, pooled=False: None)  # the other half of the check: tested below
    for khat, warns in ((engine.POOR_KHAT + 0.5, True), (engine.POOR_KHAT - 0.5, False)):
        monkeypatch.setattr(engine, "run_khat", lambda info, steps=engine.FIT_CHECK_STEPS, k=khat: k)
        guide = mixvi.AutoIsotropicMixture(stretched, n_components=2)
        engine_ = mixvi.MixVI(stretched, guide)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine_.run(jax.random.PRNGKey(0), 20, progress_bar=False)
        poor = [str(w.message) for w in caught if "fit looks poor" in str(w.message)]
        assert bool(poor) == warns, poor
        assert engine_.last_run_khat == khat  # the value the warning was decided on
        if warns:
            assert f"k-hat {khat:.2f}" in poor[0] and "mixvi.fit_check" in poor[0]


def test_run_warns_when_the_last_steps_stein_divergence_is_past_the_threshold(monkeypatch):
    """``run`` warns, naming the Stein moment divergence and fit_check, exactly when that of its last steps
    exceeds POOR_STEIN (fit_check's limit of a usable fit), and keeps it as ``last_run_stein``;
    ``run_stein`` averages the finite per-step values of the last STEIN_STEPS steps, or, when they are
    the running pooled value, takes the last finite one."""
    import mixvi.engine as engine
    from mixvi.diagnostics.fit import USABLE

    assert engine.POOR_STEIN == USABLE["stein_divergence"]
    run_stein = engine.run_stein
    monkeypatch.setattr(engine, "run_khat", lambda info, steps=engine.FIT_CHECK_STEPS: None)
    for value, warns in ((engine.POOR_STEIN + 0.5, True), (engine.POOR_STEIN - 0.5, False)):
        monkeypatch.setattr(engine, "run_stein", lambda info, pooled=False, v=value: v)
        engine_ = mixvi.MixVI(stretched, mixvi.AutoIsotropicMixture(stretched, n_components=2))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine_.run(jax.random.PRNGKey(0), 20, progress_bar=False)
        poor = [str(w.message) for w in caught if "fit looks poor" in str(w.message)]
        assert bool(poor) == warns, poor
        assert engine_.last_run_stein == value
        if warns:
            assert f"{value:.3g} > {engine.POOR_STEIN}" in poor[0] and "mixvi.fit_check" in poor[0]
    per_step = np.full(300, np.nan)
    per_step[-vi.STEIN_STEPS :] = np.linspace(0.0, 2.0, vi.STEIN_STEPS)
    per_step[-1] = np.nan  # a step whose gradients were not finite
    info = _info(np.zeros((300, 2, 3)))._replace(stein_divergence=jnp.asarray(per_step))
    assert abs(run_stein(info) - float(np.mean(per_step[-vi.STEIN_STEPS : -1]))) < 1e-6
    assert abs(run_stein(info, pooled=True) - float(per_step[-2])) < 1e-6
    assert run_stein(_info(np.zeros((300, 2, 3)))) is None


def test_fit_check_refuses_too_few_draws():
    guide = mixvi.AutoIsotropicMixture(stretched, n_components=2)
    params = guide.setup(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="num_samples >= 100"):
        mixvi.fit_check(guide, params, rng_key=jax.random.PRNGKey(1), num_samples=50)


def standard_normal_2d():
    numpyro.sample("x", dist.Normal(0.0, jnp.ones(2)).to_event(1))


def test_borderline_khat_is_judged_on_more_draws():
    """q = N(0, diag(0.35, 1)) against p = N(0, I): p/q has tail index k = 1 - 0.35 = 0.65, near the 0.7
    threshold. A k-hat of S draws inside REFINE_KHAT makes the check draw REFINE_FACTOR S more and report
    the numbers of all of them (the PSIS k-hat of exactly those draws); with refine=False, or when the
    weights are flat (q = p), S draws are all it takes."""
    from mixvi.diagnostics._draws import draw_and_weigh, resolve
    from mixvi.diagnostics.fit import REFINE_FACTOR, REFINE_KHAT
    from mixvi.diagnostics.psis import psis_from_log_densities

    guide = mixvi.AutoIsotropicMixture(standard_normal_2d, n_components=1, metric="diagonal")
    guide.setup(jax.random.PRNGKey(0))
    narrow = {"auto_locs": jnp.zeros((1, 2)), "auto_scales": jnp.ones(1), "auto_metric": jnp.array([0.35, 1.0])}
    key = jax.random.PRNGKey(2)
    first = mixvi.fit_check(guide, narrow, rng_key=key, num_samples=400, refine=False)
    assert first.num_samples == 400 and REFINE_KHAT[0] <= first.khat <= REFINE_KHAT[1], first
    refined = mixvi.fit_check(guide, narrow, rng_key=key, num_samples=400)
    assert refined.num_samples == (1 + REFINE_FACTOR) * 400
    k_draws, _ = jax.random.split(key)
    fit = resolve(guide, narrow, (), {})
    parts = [draw_and_weigh(fit, narrow, (), {}, k, n) for k, n in ((k_draws, 400),
                                                                  (jax.random.fold_in(k_draws, 1), REFINE_FACTOR * 400))]
    log_p, log_q = (jnp.concatenate([getattr(p, f) for p in parts]) for f in ("log_p", "log_q"))
    np.testing.assert_allclose(refined.khat, float(psis_from_log_densities(log_p, log_q).khat), rtol=1e-6)
    exact = dict(narrow, auto_metric=jnp.ones(2))
    assert mixvi.fit_check(guide, exact, rng_key=key, num_samples=400).num_samples == 400


def test_flat_weights_are_those_within_one_percent():
    """k-hat stops counting only when the weights are flat to 1 % in relative variance (ESS / S >= 0.99):
    the banana fit of the calibration (x1's sd 0.66x the true one; k-hat 0.81, D 0.09, ESS / S 0.904) is
    not good, an exact fit whose k-hat is fitted to rounding (ESS / S 0.995) is."""
    from mixvi.diagnostics.fit import _verdict
    from mixvi.diagnostics.psis import FLAT_ESS

    assert FLAT_ESS == 0.99
    assert _verdict(0.81, 0.09, 0.904)[0] == "usable"
    assert _verdict(0.81, 0.09, 0.995) == ("good", ())
