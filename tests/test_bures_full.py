"""The full-covariance Bures-Wasserstein baseline (``benchmarks.bures_full``) and the timing-vs-dimension
benchmark (``benchmarks.dimension``)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from benchmarks import bures_full as bf
from benchmarks.targets import get_target

MU = np.array([1.0, -2.0, 0.5])
SIGMA_STAR = np.array([[1.0, 0.6, -0.3], [0.6, 1.5, 0.4], [-0.3, 0.4, 0.8]])  # correlated, eigenvalues in [0.4, 2]


def gaussian_potential(mu: np.ndarray, cov: np.ndarray):
    """V(z) = (z - mu)^T cov^{-1} (z - mu) / 2, rows of z (S, d) -> (S,)."""
    prec = jnp.asarray(np.linalg.inv(cov))
    mu = jnp.asarray(mu)
    return lambda z: 0.5 * jnp.einsum("si,ij,sj->s", z - mu, prec, z - mu)


def random_mixture(seed: int, n: int, d: int) -> tuple[jax.Array, jax.Array]:
    """n random means and lower factors with positive diagonals (float64 inside enable_x64)."""
    rng = np.random.default_rng(seed)
    locs = rng.normal(size=(n, d))
    chols = np.tril(0.4 * rng.normal(size=(n, d, d)), -1) + np.eye(d) * rng.uniform(0.5, 1.5, (n, 1, d))
    return jnp.asarray(locs), jnp.asarray(chols)


def covariance(chol: jax.Array) -> np.ndarray:
    c = np.asarray(chol)
    return c @ c.T


def test_single_component_recovers_a_correlated_gaussian_and_an_elementwise_update_cannot():
    with jax.enable_x64(True):
        v = gaussian_potential(MU, SIGMA_STAR)
        state = bf.init(jnp.zeros((1, 3)), 1.0, jax.random.PRNGKey(0))

        # one step from Sigma = I already correlates the coordinates (a diagonal update could not)
        one, _ = bf.step(state, v, 0.2, 20)
        assert abs(covariance(one.chols[0])[0, 1]) > 1e-2

        run = jax.jit(lambda s: jax.lax.scan(lambda c, _: bf.step(c, v, 0.2, 20), s, None, length=300))
        final, losses = run(state)
        # psi = log q + V vanishes identically at q = pi, so the Monte-Carlo noise vanishes there too:
        # the iteration converges exactly, off-diagonal covariance entries included
        np.testing.assert_allclose(final.locs[0], MU, atol=1e-8)
        np.testing.assert_allclose(covariance(final.chols[0]), SIGMA_STAR, atol=1e-8)
        log_z = 0.5 * np.linalg.slogdet(2 * np.pi * SIGMA_STAR)[1]
        np.testing.assert_allclose(losses[-1], -log_z, atol=1e-8)  # -ELBO = -log Z when KL = 0

        # the reference code's element-wise products M * Sigma * M: from Sigma = I the covariance stays diagonal
        def elementwise_step(s: bf.BuresState, _):
            key, k = jax.random.split(s.rng_key)
            xi = jax.random.normal(k, (20, 3))
            est = bf.stein_terms(s.locs, s.chols, xi, v)
            m = jnp.eye(3) - 0.2 * est.hessian
            cov = m * (s.chols @ jnp.swapaxes(s.chols, -1, -2)) * m
            return bf.BuresState(s.locs - 0.2 * est.grad_mean, jnp.linalg.cholesky(cov), key, s.step + 1), est.loss

        wrong, _ = jax.jit(lambda s: jax.lax.scan(elementwise_step, s, None, length=300))(state)
        wrong_cov = covariance(wrong.chols[0])
        assert np.all(wrong_cov[~np.eye(3, dtype=bool)] == 0.0)
        assert np.abs(wrong_cov - SIGMA_STAR).max() > 0.2


def test_stein_terms_estimate_the_exact_gradient_and_hessian_and_the_target_is_a_fixed_point():
    with jax.enable_x64(True):
        v = gaussian_potential(MU, SIGMA_STAR)
        prec = np.linalg.inv(SIGMA_STAR)
        sigma = np.array([[0.7, 0.2, 0.0], [0.2, 1.2, -0.1], [0.0, -0.1, 0.9]])
        m = MU + np.array([0.1, -0.05, 0.08])
        chol = jnp.linalg.cholesky(jnp.asarray(sigma))[None]
        xi = jax.random.normal(jax.random.PRNGKey(1), (400_000, 3))
        est = bf.stein_terms(jnp.asarray(m)[None], chol, xi, v)
        # q = N(m, Sigma): E[hess psi] = Sigma*^{-1} - Sigma^{-1}, E[grad psi] = Sigma*^{-1} (m - mu)
        np.testing.assert_allclose(est.hessian[0], prec - np.linalg.inv(sigma), atol=0.02)
        np.testing.assert_allclose(est.hessian[0], est.hessian[0].T, atol=1e-14)
        np.testing.assert_allclose(est.grad_mean[0], prec @ (m - MU), atol=0.01)

        # at q = pi every draw has grad psi = 0: a step with B = 5 leaves the state where it is
        at = bf.init(jnp.asarray(MU)[None], 1.0, jax.random.PRNGKey(2))
        at = at._replace(chols=jnp.linalg.cholesky(jnp.asarray(SIGMA_STAR))[None])
        after, _ = bf.step(at, v, 0.3, 5)
        np.testing.assert_allclose(after.locs, at.locs, atol=1e-12)
        np.testing.assert_allclose(after.chols, at.chols, atol=1e-12)


def test_log_prob_matches_scipy():
    with jax.enable_x64(True):
        locs, chols = random_mixture(0, 3, 4)
        z = jnp.asarray(np.random.default_rng(1).normal(size=(20, 4)) * 2.0)
        comps = np.stack([multivariate_normal(np.asarray(locs[j]), covariance(chols[j])).logpdf(np.asarray(z)) for j in range(3)])
        expected = logsumexp(comps, axis=0) - np.log(3)
        np.testing.assert_allclose(bf.log_prob(locs, chols, z), expected, rtol=0, atol=1e-10)
        q = bf.FullCovMixture(locs, chols)
        np.testing.assert_allclose(jax.jit(lambda q, z: q.log_prob(z))(q, z), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n, d", [(1, 3), (4, 2)])  # both branches of sample: N <= d and N > d
def test_sample_moments(n, d):
    with jax.enable_x64(True):
        locs, chols = random_mixture(3, n, d)
        q = bf.FullCovMixture(locs, chols)
        z = np.asarray(jax.jit(lambda q, k: q.sample(k, (200_000,)))(q, jax.random.PRNGKey(4)))
        assert z.shape == (200_000, d)
        covs = np.stack([covariance(c) for c in chols])
        locs_np = np.asarray(locs)
        mean = locs_np.mean(0)
        # mixture covariance: mean of the covariances + covariance of the means (uniform weights)
        cov = covs.mean(0) + (locs_np - mean).T @ (locs_np - mean) / n
        np.testing.assert_allclose(z.mean(0), mean, atol=0.02)
        np.testing.assert_allclose(np.cov(z.T), cov, atol=0.04)
        np.testing.assert_allclose(q.covariances, covs, atol=1e-12)


def test_score_matches_autodiff_of_log_prob():
    with jax.enable_x64(True):
        locs, chols = random_mixture(5, 3, 4)
        z = jnp.asarray(np.random.default_rng(6).normal(size=(15, 4)) * 1.5)
        auto = jax.vmap(jax.grad(lambda x: bf.log_prob(locs, chols, x[None])[0]))(z)
        np.testing.assert_allclose(bf.grad_log_prob(locs, chols, z), auto, rtol=1e-10, atol=1e-12)


def test_build_runs_inside_jit_scan_on_a_real_target_and_lowers_the_loss():
    target = get_target("gmm-d2-full")

    def init_locs(seed: int) -> jax.Array:
        return jax.random.uniform(jax.random.PRNGKey(seed), (4, target.dim), minval=-2.0, maxval=2.0)

    init, step, get_params, posterior = bf.build(target, 4, 0.05, 10, 1.0, init_locs)
    state0 = init(0)
    assert state0.locs.shape == (4, 2) and state0.chols.shape == (4, 2, 2)

    def outer(st, _):  # the paper benchmark's runner: K steps, then the params at a checkpoint
        st, losses = jax.lax.scan(lambda c, _: step(c), st, None, length=100)
        return st, (get_params(st), losses)

    final, (checkpoints, losses) = jax.jit(lambda s: jax.lax.scan(outer, s, None, length=4))(state0)
    losses = np.asarray(losses).ravel()
    assert np.all(np.isfinite(losses)) and int(final.step) == 400
    assert losses[-100:].mean() < losses[:20].mean() - 0.5

    # the posterior of a checkpoint is a jit argument: sample and score it, estimate KL(q || pi) (log Z = 0)
    q = posterior(jax.tree.map(lambda a: a[-1], checkpoints))

    @jax.jit
    def kl(q: bf.FullCovMixture) -> jax.Array:
        z = q.sample(jax.random.PRNGKey(1), (4000,))
        return jnp.mean(q.log_prob(z) + target.potential()(z))

    q0 = posterior(get_params(state0))
    assert float(kl(q)) < float(kl(q0)) - 0.5
    assert float(kl(q)) > -0.1  # KL >= 0 up to Monte-Carlo error

    # another seed starts elsewhere, with its own key
    other = init(1)
    assert not np.allclose(other.locs, state0.locs) and not np.array_equal(other.rng_key, state0.rng_key)


@pytest.mark.slow
def test_dimension_benchmark_smoke(tmp_path):
    from benchmarks import dimension
    from mixvi.cli import main

    out, md, fig = tmp_path / "dim.json", tmp_path / "bench.md", tmp_path / "fig.png"
    md.write_text("# Benchmarks\n\nhand-written text\n")
    argv = ["--dims", "2,8", "--components", "1", "--repeats", "1", "--call-seconds", "0.02"]
    code = main(["bench", "dimension", *argv, "--out", str(out), "--md", str(md), "--figure", str(fig)])
    assert code == 0
    report = json.loads(out.read_text())
    assert {r["method"] for r in report["results"]} == set(dimension.METHODS)
    assert all(r["ms_median"] > 0 and r["losses_finite"] for r in report["results"])
    assert len(report["slopes"]) == 2 and all(np.isfinite(s["slope"]) for s in report["slopes"])
    assert report["machine"]["cpu_count"] >= 1 and report["date"]
    text = md.read_text()
    assert "hand-written text" in text and dimension.MD_HEADING in text
    assert "<!-- bench dimension start -->" in text and "<!-- bench dimension end -->" in text
    assert "IBW N=1 ms" in text and "fig.png" in text
    assert fig.stat().st_size > 0
