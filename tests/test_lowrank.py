"""The low-rank-plus-diagonal metric: its algebra against dense matrices, its Stein estimate against the
dense metric's, its step's fixed point on a Gaussian of its family, and the NumPyro layer."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import SVI, Trace_ELBO
from numpyro.optim import optax_to_numpyro

import mixvi
from mixvi import lowrank as lr
from mixvi.estimators import draw_points, stein_estimate
from mixvi.lowrank import LowRankMetric


def _metric(d: int, r: int, seed: int = 0) -> LowRankMetric:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, r)))
    return LowRankMetric(jnp.asarray(rng.normal(size=d) * 0.5), jnp.asarray(q), jnp.asarray(rng.normal(size=r)))


def _dense_root(m: LowRankMetric) -> np.ndarray:
    q, kappa = np.asarray(m.basis), np.asarray(m.log_stretch)
    p = np.eye(q.shape[0]) + q @ np.diag(np.expm1(kappa)) @ q.T
    return np.diag(np.exp(0.5 * np.asarray(m.log_diag))) @ p


def test_root_operations_match_the_dense_matrices():
    """T z, T^T g, T^(-1) x, T^(-T) s, log det T and diag(T T^T) equal their dense counterparts."""
    with jax.enable_x64(True):
        m = _metric(7, 3)
        t = _dense_root(m)
        rows = jnp.asarray(np.random.default_rng(1).normal(size=(5, 7)))
        np.testing.assert_allclose(lr.root_apply(m, rows), rows @ t.T, rtol=1e-10)
        np.testing.assert_allclose(lr.root_transpose_apply(m, rows), rows @ t, rtol=1e-10)
        np.testing.assert_allclose(lr.root_solve(m, rows), np.linalg.solve(t, np.asarray(rows).T).T, rtol=1e-9)
        np.testing.assert_allclose(
            lr.root_transpose_solve(m, rows), np.linalg.solve(t.T, np.asarray(rows).T).T, rtol=1e-9
        )
        np.testing.assert_allclose(lr.log_det_root(m), np.linalg.slogdet(t)[1], rtol=1e-10)
        np.testing.assert_allclose(lr.variance(m), np.diag(t @ t.T), rtol=1e-10)
        unit, shift = lr.normalise(m)
        np.testing.assert_allclose(lr.log_det_root(unit), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.exp(2 * shift) * _dense_root(unit) @ _dense_root(unit).T, t @ t.T, rtol=1e-9)


def test_row_products_are_the_matrix_product_for_any_leading_axes():
    """row_products(rows, others) = rows @ others^T, rows (..., d) with any leading axes, others (k, d); and
    coordinates(metric, v) = v Q."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        rows, others = rng.normal(size=(2, 3, 11)), rng.normal(size=(4, 11))
        out = lr.row_products(jnp.asarray(rows), jnp.asarray(others))
        assert out.shape == (2, 3, 4)
        np.testing.assert_allclose(out, rows @ others.T, rtol=1e-12)
        m = _metric(11, 3, seed=6)
        np.testing.assert_allclose(lr.coordinates(m, jnp.asarray(rows)), rows @ np.asarray(m.basis), rtol=1e-12)


def test_stein_norm_matches_the_dense_trace_free_part():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        left, right = rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
        s = left.T @ right
        sym = 0.5 * (s + s.T)
        s0 = sym - np.trace(sym) / 9 * np.eye(9)
        trace, norm = lr.stein_norm(jnp.asarray(left), jnp.asarray(right))
        np.testing.assert_allclose(trace, np.trace(s), rtol=1e-12)
        np.testing.assert_allclose(norm, np.linalg.norm(s0), rtol=1e-10)


def test_stein_estimate_equals_the_dense_metrics_in_rotated_coordinates():
    """With the same points (z' = O z, O = L^(-1) T, L the Cholesky factor of T T^T) the low-rank
    estimate gives the dense one's gbar, lambda and loss, and its Stein matrix z^T R = O^T S_L O."""
    with jax.enable_x64(True):
        d, n, b = 6, 3, 5
        m = _metric(d, 2, seed=3)
        t = _dense_root(m)
        chol = np.linalg.cholesky(t @ t.T)
        rot = np.linalg.solve(chol, t)
        rng = np.random.default_rng(4)
        locs, u = jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.normal(size=n) * 0.2)
        z = jnp.asarray(rng.normal(size=(b, d)))

        def potential(x):
            return 0.5 * jnp.sum(x**2 * jnp.arange(1.0, d + 1)) + jnp.sum(jnp.sin(x))

        x = draw_points(locs, u, z, m)
        np.testing.assert_allclose(x, draw_points(locs, u, z @ rot.T, scale_tril=jnp.asarray(chol)), rtol=1e-10)
        v, g = jax.vmap(jax.vmap(jax.value_and_grad(potential)))(x)
        low = stein_estimate(locs, u, z, v, g, metric=m)
        dense = stein_estimate(locs, u, z @ rot.T, v, g, scale_tril=jnp.asarray(chol))
        for a, c in ((low.gbar, dense.gbar), (low.lam, dense.lam), (low.loss, dense.loss), (low.log_q, dense.log_q)):
            np.testing.assert_allclose(a, c, rtol=1e-8, atol=1e-10)
        left, right = low.t
        np.testing.assert_allclose(np.asarray(left).T @ np.asarray(right), rot.T @ np.asarray(dense.t) @ rot, atol=1e-9)


def test_step_reaches_a_gaussian_of_its_family_exactly():
    """One component on a d = 40 Gaussian with covariance D0^(1/2) (I + three stretches) D0^(1/2)
    (sds 5, 10, 20 times the diagonal's along random directions): the learned metric recovers the
    stretches and the covariance (KL < 0.01); the diagonal metric cannot (KL > 1)."""
    d = 40
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(d, 3)))
    d0 = np.exp(rng.uniform(-1, 1, d))
    cov = np.sqrt(d0)[:, None] * (np.eye(d) + q @ np.diag([400.0, 100.0, 25.0]) @ q.T) * np.sqrt(d0)[None]
    prec = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    mean = jnp.asarray(rng.normal(size=d), jnp.float32)

    def kl(metric: str) -> tuple[float, np.ndarray | None]:
        vi = mixvi.mixture_vi(
            lambda x: -0.5 * (x - mean) @ prec @ (x - mean),
            n_components=1,
            metric=metric,
            metric_rank=3,
            relocate=False,
        )
        state = vi.init(jax.random.PRNGKey(0), jnp.zeros(d))
        state, _ = jax.lax.scan(
            lambda s, k: (vi.step(k, s)[0], None), state, jax.random.split(jax.random.PRNGKey(1), 600)
        )
        p = state.params
        if p.metric_lowrank is not None:
            root = np.asarray(lr.root_apply(p.metric_lowrank, jnp.eye(d))).T
        else:
            root = np.diag(np.exp(0.5 * np.asarray(p.log_metric)))
        a = float(np.exp(2 * p.log_scales[0])) * root @ root.T
        m = np.asarray(p.locs[0]) - np.asarray(mean)
        value = 0.5 * (np.trace(np.linalg.solve(cov, a)) - d + m @ np.linalg.solve(cov, m))
        value += 0.5 * (np.linalg.slogdet(cov)[1] - np.linalg.slogdet(a)[1])
        stretch = None if p.metric_lowrank is None else np.sort(np.asarray(p.metric_lowrank.log_stretch))
        return value, stretch

    value, stretch = kl("lowrank")
    assert value < 0.01
    np.testing.assert_allclose(stretch, 0.5 * np.log([26.0, 101.0, 401.0]), atol=0.03)
    assert kl("diagonal")[0] > 1.0


def test_bad_ranks_and_settings_are_refused():
    with pytest.raises(ValueError, match="below the latent dimension"):
        mixvi.vi.init_state(jnp.zeros((2, 4)), metric="lowrank", metric_rank=4)
    with pytest.raises(ValueError, match="metric='diagonal'"):
        mixvi.vi.init_state(jnp.zeros((2, 1)), metric="lowrank")
    with pytest.raises(ValueError, match="metric_rank must be"):
        mixvi.mixture_vi(lambda x: -jnp.sum(x**2), metric="lowrank", metric_rank=0)
    with pytest.raises(ValueError, match="shared_noise=True"):
        mixvi.mixture_vi(lambda x: -jnp.sum(x**2), metric="lowrank", shared_noise=False)
    with pytest.raises(ValueError, match="metric='lowrank'"):
        mixvi.vi.init_state(jnp.zeros((2, mixvi.vi.DENSE_MAX_DIM + 1)), metric="dense")
    assert mixvi.vi.init_state(jnp.zeros((2, 30)), metric="lowrank").params.metric_lowrank.basis.shape == (30, 10)


STRETCHED_COV = [[4.0, 3.6, 0.0, 0.0], [3.6, 4.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.25]]


def stretched(y=None):
    numpyro.sample("x", dist.MultivariateNormal(jnp.array([1.0, -1.0, 0.0, 2.0]), jnp.asarray(STRETCHED_COV)))


def test_guide_fits_learns_and_serves_every_path():
    """MixVI with metric='lowrank' (rank 1) on a 4-d Gaussian whose covariance is diagonal plus rank one:
    sample_posterior's moments, log_prob against the dense mixture it stands for, and Predictive (a
    checkpointed resume: test_extensions.test_shared_metric_checkpoint_resume_is_bit_exact)."""
    guide = mixvi.AutoIsotropicMixture(stretched, n_components=2, metric="lowrank", metric_rank=1)
    engine = mixvi.MixVI(stretched, guide, num_samples=10)
    r = engine.run(jax.random.PRNGKey(0), 800, progress_bar=False)
    assert set(guide.param_names()) == set(r.params)
    assert r.params["auto_metric_basis"].shape == (4, 1)
    x = guide.sample_posterior(jax.random.PRNGKey(1), r.params, sample_shape=(40_000,))["x"]
    cov = np.asarray(STRETCHED_COV)
    np.testing.assert_allclose(x.mean(0), [1.0, -1.0, 0.0, 2.0], atol=0.06)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), cov, atol=0.15)
    q = guide.get_posterior(r.params)
    pts = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)))
    root = np.asarray(lr.root_apply(q.metric, jnp.eye(4))).T
    comps = [
        dist.MultivariateNormal(q.locs[i], scale_tril=jnp.linalg.cholesky(q.scales[i] ** 2 * root @ root.T)).log_prob(
            pts
        )
        for i in range(2)
    ]
    expected = jax.scipy.special.logsumexp(jnp.stack(comps), 0) - jnp.log(2.0)
    np.testing.assert_allclose(q.log_prob(pts), expected, rtol=2e-4)
    eps = 1e-3
    shifted = pts.at[:, 0].add(eps)
    np.testing.assert_allclose(q.score(pts)[:, 0], (q.log_prob(shifted) - q.log_prob(pts)) / eps, rtol=0.05, atol=0.02)
    pred = numpyro.infer.Predictive(stretched, guide=guide, params=r.params, num_samples=5, return_sites=["x"])
    assert pred(jax.random.PRNGKey(2))["x"].shape == (5, 4)


def test_svi_keeps_a_lowrank_metric_fixed():
    guide = mixvi.AutoIsotropicMixture(stretched, n_components=2, metric="lowrank", metric_rank=2)
    svi = SVI(stretched, guide, optax_to_numpyro(mixvi.optim.ibw()), Trace_ELBO())
    start = guide.setup(jax.random.PRNGKey(0))
    with pytest.warns(UserWarning, match="low-rank metric fixed"):
        res = svi.run(jax.random.PRNGKey(0), 30, progress_bar=False)
    np.testing.assert_allclose(res.params["auto_metric_basis"], start["auto_metric_basis"], atol=1e-6)
    assert float(jnp.max(jnp.abs(res.params["auto_locs"] - start["auto_locs"]))) > 0


def test_auto_is_lowrank_past_the_dense_limit_and_diagonal_without_shared_noise():
    """metric='auto': dense up to AUTO_DENSE_MAX_DIM, low-rank beyond, diagonal there when the noise is not
    shared (the low-rank step needs it); MixVI refuses a low-rank guide with independent noise at init."""
    limit = mixvi.vi.AUTO_DENSE_MAX_DIM
    assert mixvi.vi.resolve_metric("auto", limit) == "dense"
    assert mixvi.vi.resolve_metric("auto", limit + 1) == "lowrank"
    assert mixvi.vi.resolve_metric("auto", limit + 1, shared_noise=False) == "diagonal"
    algo = mixvi.mixture_vi(lambda x: -0.5 * jnp.sum(x**2), n_components=2, shared_noise=False)
    state = algo.init(jax.random.PRNGKey(0), jnp.zeros(limit + 1))
    assert state.params.metric_lowrank is None and state.params.log_metric.shape == (limit + 1,)
    state, info = jax.jit(algo.step)(jax.random.PRNGKey(1), state)
    assert np.isfinite(float(info.loss))
    guide = mixvi.AutoIsotropicMixture(stretched, n_components=2, metric="lowrank", metric_rank=1)
    with pytest.raises(ValueError, match="shared_noise=True"):
        mixvi.MixVI(stretched, guide, shared_noise=False).init(jax.random.PRNGKey(0))


def test_a_column_along_one_axis_cannot_walk_d_to_zero():
    """The centred hierarchical logit (baseball) stretches q along single coordinates, where D and kappa
    trade off freely: the low-rank run once diverged there within 400 steps (D -> 0, kappa -> infinity).
    Every coordinate now keeps at least MIN_DIAG_SHARE of its variance in D, and 700 steps stay finite."""
    from benchmarks.targets.hierarchical import make_baseball

    target = make_baseball()
    guide = mixvi.AutoIsotropicMixture(target.model, n_components=10, metric="lowrank")
    r = mixvi.MixVI(target.model, guide).run(jax.random.PRNGKey(0), 700, *target.args, progress_bar=False)
    assert np.all(np.isfinite(np.asarray(r.losses)))
    q = guide.get_posterior(r.params)
    share = np.exp(np.asarray(q.metric.log_diag)) / np.asarray(lr.variance(q.metric))
    assert share.min() >= 0.99 * lr.MIN_DIAG_SHARE
