"""Tests of benchmarks.baselines: NumPyro SteinVI, BlackJAX mean-field VI and Pathfinder in the paper
benchmark's contract. Each checks the mathematics of q (log densities against direct evaluations) and that
the method moves towards a known Gaussian target, running the way the benchmark does (jitted scan / fit,
q passed into a jitted function)."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from blackjax.vi.pathfinder import PathfinderState
from scipy import stats
from scipy.special import logsumexp

from benchmarks.baselines import (
    build_blackjax_mfvi,
    build_pathfinder,
    build_steinvi,
    diag_normal_mixture,
    pathfinder_gaussian,
)
from benchmarks.targets.base import Target, flat_model


def _uniform_locs(radius: float, dim: int):
    def init_locs(seed: int, n: int) -> jax.Array:
        return jax.random.uniform(jax.random.PRNGKey(100 + seed), (n, dim), minval=-radius, maxval=radius)

    return init_locs


def _scan(step, length: int):
    return jax.jit(lambda st: jax.lax.scan(lambda s, _: step(s), st, None, length=length))


@jax.jit
def _draws(q, key):
    # q goes in as an argument, as in the benchmark's Evaluator
    z = q.sample(key, (4000,))
    return z, q.log_prob(z)


def _neg_elbo(q, potential, key) -> float:
    z, lq = _draws(q, key)
    return float(jnp.mean(lq + potential(z)))


def _diag_gaussian_target(mean: np.ndarray, sd: np.ndarray) -> Target:
    mean, sd = jnp.asarray(mean), jnp.asarray(sd)

    def log_prob(x):
        return jnp.sum(jax.scipy.stats.norm.logpdf(x, mean, sd), -1)

    return Target("diag-gauss", "gmm", flat_model(log_prob, None, mean.size), mean.size, log_prob=log_prob)


def _mvn_target(mean: np.ndarray, cov: np.ndarray) -> Target:
    mean, cov = jnp.asarray(mean), jnp.asarray(cov)

    def log_prob(x):
        return jax.scipy.stats.multivariate_normal.logpdf(x, mean, cov)

    return Target("mvn", "gmm", flat_model(log_prob, None, mean.size), mean.size, log_prob=log_prob)


# --- SteinVI ---------------------------------------------------------------------------------------


def test_steinvi_mixture_log_prob_is_the_uniform_mixture_of_diagonal_normals():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        locs, scales = rng.normal(size=(4, 3)) * 2, rng.uniform(0.3, 2.0, size=(4, 3))
        q = diag_normal_mixture(jnp.asarray(locs), jnp.asarray(scales))
        z, lq = _draws(q, jax.random.PRNGKey(1))
        z = np.asarray(z)
        comp = stats.norm.logpdf(z[:, None, :], locs[None], scales[None]).sum(-1)  # (S, P)
        np.testing.assert_allclose(np.asarray(lq), logsumexp(comp, -1) - np.log(4), rtol=0, atol=1e-6)
        # and the draws have the mixture's moments: mean of the locs, within-plus-between variance
        var = (scales**2 + locs**2).mean(0) - locs.mean(0) ** 2
        assert np.all(np.abs(z.mean(0) - locs.mean(0)) < 4 * np.sqrt(var / 4000))
        np.testing.assert_allclose(z.var(0), var, rtol=0.1)


@pytest.mark.slow  # a benchmark smoke run (~10-35 s on 2 cores)
def test_steinvi_starts_at_init_locs_and_moves_to_the_target():
    # a 2 x 2 matrix site: the flat latent is its row-major flattening, as for softmax-wine's (13, 3) site
    with jax.enable_x64(True):
        mean = np.array([[1.0, -1.5], [0.5, 2.0]])

        def model():
            numpyro.sample("w", dist.Normal(jnp.asarray(mean), 0.7).to_event(2))

        # the builder reads the site's name and shape from info, as the regressions set them
        target = Target("mat", "regression", model, 4, info={"site": "w", "site_shape": (2, 2)})
        init_locs = _uniform_locs(4.0, 4)
        init, step, get_params, posterior = build_steinvi(target, n_particles=4, lr=0.2, init_scale=1.5,
                                                          init_locs=init_locs, num_elbo_particles=4)
        s0 = init(3)
        p0 = get_params(s0)
        np.testing.assert_array_equal(np.asarray(p0["locs"]), np.asarray(init_locs(3, 4)))
        np.testing.assert_allclose(np.asarray(p0["scales"]), 1.5, rtol=1e-12)
        assert not np.allclose(get_params(init(4))["locs"], p0["locs"])  # the seed reaches the locs

        s1, losses = _scan(step, 300)(s0)
        p1 = get_params(s1)
        assert np.all(np.isfinite(np.asarray(losses)))
        v = target.potential()
        before, after = (_neg_elbo(posterior(p), v, jax.random.PRNGKey(7)) for p in (p0, p1))
        # -ELBO = KL(q || pi) here (log Z = 0): from ~18 down to a mixture of 4 near-copies of the target
        assert before > 10.0 and after < 0.2, (before, after)
        err0 = np.abs(np.asarray(p0["locs"]).mean(0) - mean.ravel()).max()
        err1 = np.abs(np.asarray(p1["locs"]).mean(0) - mean.ravel()).max()
        assert err1 < 0.1 < 0.5 < err0, (err0, err1)  # row-major: the flat latent's order is the site's
        scales = np.asarray(p1["scales"])  # spread-out components, each narrower than the target, none collapsed
        assert np.all((scales > 0.35) & (scales < 0.9)), scales


@pytest.mark.slow  # a benchmark smoke run (~10-35 s on 2 cores)
def test_steinvi_one_particle_is_mean_field_vi_and_shipped_numpyro_collapses_the_scale():
    # with P = 1 the kernel is 1 and the repulsion 0: ELBO-within-Stein is plain (STL) mean-field VI, which is
    # exact on N(mean, diag(sd^2)). NumPyro 0.22 as shipped scores the draw under log q_mix with the scale
    # softplus(s) instead of s (fix_particle_transform=False), so its entropy force is s / softplus(s)^2 and
    # the scale settles where softplus(s) = sd, i.e. at softplus^-1(sd) < sd
    with jax.enable_x64(True):
        mean, sd = np.array([1.0, -2.0]), np.array([1.0, 2.0])
        target = _diag_gaussian_target(mean, sd)
        scales = {}
        for fix in (True, False):
            init, step, get_params, _ = build_steinvi(target, 1, 0.05, 1.0, _uniform_locs(2.0, 2), num_elbo_particles=4,
                                                      optimizer="adam", fix_particle_transform=fix)
            p = get_params(_scan(step, 600)(init(0))[0])
            np.testing.assert_allclose(np.asarray(p["locs"][0]), mean, atol=0.05)
            scales[fix] = np.asarray(p["scales"][0])
        np.testing.assert_allclose(scales[True], sd, rtol=0.03)
        np.testing.assert_allclose(scales[False], np.log(np.expm1(sd)), rtol=0.05)


# --- BlackJAX mean-field VI --------------------------------------------------------------------------


def test_blackjax_mfvi_recovers_a_diagonal_gaussian():
    with jax.enable_x64(True):
        mean, sd = np.array([1.0, -2.0, 0.5, 3.0]), np.array([0.5, 2.0, 1.0, 0.3])
        target = _diag_gaussian_target(mean, sd)
        init_locs = _uniform_locs(3.0, 4)
        init, step, get_params, posterior = build_blackjax_mfvi(target, lr=0.05, num_samples=10, init_scale=2.0,
                                                                init_locs=init_locs)
        s0 = init(0)
        p0 = get_params(s0)
        np.testing.assert_array_equal(np.asarray(p0["mu"]), np.asarray(init_locs(0, 1)[0]))
        np.testing.assert_allclose(np.exp(np.asarray(p0["rho"])), 2.0, rtol=1e-12)

        s1, losses = _scan(step, 800)(s0)
        p1 = get_params(s1)
        # mean-field is exact here: q -> N(mean, diag(sd^2))
        np.testing.assert_allclose(np.asarray(p1["mu"]), mean, atol=0.03)
        np.testing.assert_allclose(np.exp(np.asarray(p1["rho"])), sd, rtol=0.03)
        # the loss is mean(log q - log pi) over blackjax's 10 draws, i.e. the -ELBO (here = KL, log Z = 0):
        # rebuild the first step's draws (key split as in step) and compare exactly
        _, sub = jax.random.split(s0[1])
        z0 = jax.random.normal(sub, (10, 4)) * jnp.exp(p0["rho"]) + p0["mu"]
        loss0 = jnp.mean(posterior(p0).log_prob(z0) + target.potential()(z0))
        losses = np.asarray(losses)
        np.testing.assert_allclose(losses[0], float(loss0), rtol=1e-10)
        assert losses[0] > 1.0 and abs(losses[-20:].mean()) < 0.01
        # q's density is the diagonal normal with sd = exp(rho)
        z, lq = _draws(posterior(p1), jax.random.PRNGKey(4))
        ref = stats.norm.logpdf(np.asarray(z), np.asarray(p1["mu"]), np.exp(np.asarray(p1["rho"]))).sum(-1)
        np.testing.assert_allclose(np.asarray(lq), ref, atol=1e-9)


# --- Pathfinder ----------------------------------------------------------------------------------------

_MEAN = np.array([1.0, -2.0, 0.5, 3.0])
_COV = np.array([[2.0, 0.8, 0.3, 0.1], [0.8, 1.0, -0.2, 0.0], [0.3, -0.2, 0.5, 0.1], [0.1, 0.0, 0.1, 0.4]])


@pytest.mark.slow  # a benchmark smoke run (~10-35 s on 2 cores)
def test_pathfinder_density_matches_dense_gaussian_and_recovers_the_target():
    with jax.enable_x64(True):
        target = _mvn_target(_MEAN, _COV)
        init, fit, posterior = build_pathfinder(target, _uniform_locs(4.0, 4), maxiter=30)
        params = jax.jit(fit)(init(0))
        q = posterior(params)
        z, lq = _draws(q, jax.random.PRNGKey(5))
        # log q against a dense MVN whose covariance is built straight from blackjax's factors
        alpha, beta, gamma = (np.asarray(a) for a in (params.alpha, params.beta, params.gamma))
        cov = np.diag(alpha) + beta @ gamma @ beta.T
        dense = stats.multivariate_normal(np.asarray(q.mean), cov).logpdf(np.asarray(z))
        np.testing.assert_allclose(np.asarray(lq), dense, rtol=0, atol=1e-8)
        np.testing.assert_allclose(np.asarray(q.covariance), cov, atol=1e-10)
        # draws follow N(mean, cov): sample covariance within 4.5 standard errors
        zn = np.asarray(z)
        se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / zn.shape[0])
        assert np.all(np.abs(np.cov(zn.T) - cov) < 4.5 * se)
        # the fit: mean = target mean (Newton step from the end of L-BFGS), covariance close to the target's
        np.testing.assert_allclose(np.asarray(q.mean), _MEAN, atol=1e-3)
        kl = 0.5 * (np.trace(np.linalg.solve(_COV, cov)) - 4 + np.linalg.slogdet(_COV)[1] - np.linalg.slogdet(cov)[1]
                    + (q.mean - _MEAN) @ np.linalg.solve(_COV, q.mean - _MEAN))
        assert kl < 0.05, kl
        assert np.isfinite(float(params.elbo)) and abs(float(params.elbo)) < 0.1  # ELBO ~ log Z = 0


def test_pathfinder_with_blackjax_mean_reproduces_blackjax_sample():
    with jax.enable_x64(True):
        target = _mvn_target(_MEAN, _COV)
        init, fit, posterior = build_pathfinder(target, _uniform_locs(4.0, 4), maxiter=30, correct_mean=False)
        params = jax.jit(fit)(init(1))
        q = posterior(params)
        key = jax.random.PRNGKey(9)
        # same key, same normal draws: the same points and log q as blackjax's own sampler
        z_bj, lq_bj = blackjax.vi.pathfinder.sample(key, params, 4000)
        z, lq = _draws(q, key)
        np.testing.assert_allclose(np.asarray(z), np.asarray(z_bj), atol=1e-10)
        np.testing.assert_allclose(np.asarray(lq), np.asarray(lq_bj), atol=1e-8)


def test_pathfinder_mean_steps_towards_the_mode():
    # Sigma = I on N(m, I) at x: the Newton step gives m; blackjax's own formula gives 2x - m
    with jax.enable_x64(True):
        m, x = jnp.array([1.0, -1.0, 2.0]), jnp.array([3.0, 0.0, -1.0])
        g = x - m  # gradient of -log pi, which blackjax stores as grad_position
        state = PathfinderState(jnp.array(0.0), x, g, jnp.ones(3), jnp.zeros((3, 4)), jnp.zeros((4, 4)))
        np.testing.assert_allclose(np.asarray(pathfinder_gaussian(state).mean), np.asarray(m), atol=1e-12)
        np.testing.assert_allclose(np.asarray(pathfinder_gaussian(state, correct_mean=False).mean),
                                   np.asarray(2 * x - m), atol=1e-12)
        z_bj, _ = blackjax.vi.pathfinder.sample(jax.random.PRNGKey(0), state, 20000)
        np.testing.assert_allclose(np.asarray(z_bj).mean(0), np.asarray(2 * x - m), atol=0.05)
