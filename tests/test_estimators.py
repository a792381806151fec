"""Stein-form estimators: exact algebra (finite differences with common random numbers) and
unbiasedness against analytic KL gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixvi.estimators import draw_points, mixture_terms, stein_estimate
from mixvi.family import IsotropicMixture

N, B, D = 3, 5, 4
PREC = jnp.array([0.5, 1.0, 2.0, 4.0])
MU = jnp.array([1.0, -1.0, 0.5, 2.0])


def potential(x):
    return 0.5 * jnp.sum(PREC * (x - MU) ** 2, -1)


def _setup(shared, dtype=jnp.float64, n=N, b=B):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(7), 3)
    locs = jax.random.normal(k1, (n, D), dtype)
    u = 0.3 * jax.random.normal(k2, (n,), dtype)
    z = jax.random.normal(k3, (b, D) if shared else (n, b, D), dtype)
    return locs, u, z


@pytest.mark.parametrize("shared", [True, False])
def test_mixture_terms_match_brute_force(shared):
    with jax.enable_x64(True):
        locs, u, z = _setup(shared)
        x = draw_points(locs, u, z)
        q = IsotropicMixture(locs, jnp.exp(u))
        score = jax.vmap(jax.vmap(jax.grad(q.log_prob)))(x)
        log_q, mean_score, stein, *_ = mixture_terms(locs, u, z)
        np.testing.assert_allclose(log_q, q.log_prob(x), rtol=1e-11)
        np.testing.assert_allclose(mean_score, score.mean(1), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(stein, jnp.sum((x - locs[:, None]) * score, -1).mean(1), rtol=1e-10, atol=1e-12)


def test_mixture_terms_stable_at_high_dimension():
    """Responsibilities neither underflow nor lose the O(d) terms at d = 1e5 in float32."""
    d, n = 100_000, 4
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    locs = 0.01 * jax.random.normal(k1, (n, d))
    u = jnp.log(jnp.array([1.0, 1.001, 0.999, 1.0]))
    z = jax.random.normal(k2, (2, d))
    log_q, mean_score, stein, *_ = mixture_terms(locs, u, z)
    assert bool(jnp.all(jnp.isfinite(log_q))) and bool(jnp.all(jnp.isfinite(mean_score)))
    # with near-identical components log q(x) ~ log N(x; m_i, eps_i) = -|z|^2/2 - d/2 log(2 pi) - d u_i
    ref = -0.5 * jnp.sum(z**2, -1)[None] - 0.5 * d * jnp.log(2 * jnp.pi) - d * u[:, None]
    assert float(jnp.max(jnp.abs(log_q - ref))) < 0.05 * d**0.5


@pytest.mark.parametrize("shared", [True, False])
def test_gradients_equal_finite_differences_with_common_random_numbers(shared):
    """With z fixed and q frozen inside log q, the MC objective mean[log q0(x(theta)) + V(x(theta))]
    has gradient (1/N) gbar in m and (eps/N) lambda in u = log sigma: the Stein form exactly."""
    with jax.enable_x64(True):
        locs, u, z = _setup(shared)
        q0 = IsotropicMixture(locs, jnp.exp(u))

        def objective(lo, uu):
            x = draw_points(lo, uu, z)
            return jnp.mean(q0.log_prob(x) + potential(x))

        x = draw_points(locs, u, z)
        gv = jax.vmap(jax.vmap(jax.grad(potential)))(x)
        est = stein_estimate(locs, u, z, potential(x), gv)
        h = 1e-6
        fd_m = np.zeros((N, D))
        for i in range(N):
            for k in range(D):
                e = jnp.zeros((N, D)).at[i, k].set(h)
                fd_m[i, k] = (objective(locs + e, u) - objective(locs - e, u)) / (2 * h)
        fd_u = np.array(
            [
                (objective(locs, u + h * jnp.eye(N)[i]) - objective(locs, u - h * jnp.eye(N)[i])) / (2 * h)
                for i in range(N)
            ]
        )
        np.testing.assert_allclose(est.gbar / N, fd_m, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(jnp.exp(2 * u) * est.lam / N, fd_u, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(est.loss, objective(locs, u), rtol=1e-12)


def test_single_gaussian_matches_analytic_kl_gradient():
    """N = 1, Gaussian target: grad_m KL = P (m - mu), dKL/du = eps tr P - d (u = log sigma)."""
    with jax.enable_x64(True):
        b = 200_000
        locs = jnp.array([[0.3, 0.2, -0.4, 1.0]])
        u = jnp.array([jnp.log(0.8)])
        z = jax.random.normal(jax.random.PRNGKey(3), (b, D), jnp.float64)
        x = draw_points(locs, u, z)
        gv = jax.vmap(jax.vmap(jax.grad(potential)))(x)
        est = stein_estimate(locs, u, z, potential(x), gv)
        eps = 0.64
        np.testing.assert_allclose(est.gbar[0], PREC * (locs[0] - MU), atol=0.02)
        np.testing.assert_allclose(eps * est.lam[0], eps * PREC.sum() - D, atol=0.05)
        # loss estimates KL - log Z with Z the normaliser of exp(-V)
        kl = 0.5 * (eps * PREC.sum() + jnp.sum(PREC * (locs[0] - MU) ** 2) - D - jnp.sum(jnp.log(PREC * eps)))
        log_z = 0.5 * jnp.sum(jnp.log(2 * jnp.pi / PREC))
        np.testing.assert_allclose(est.loss, kl - log_z, atol=0.01)


def test_mixture_gradient_is_unbiased_for_the_true_kl():
    """For N = 3 the stratified Stein estimate (large B) matches central differences of the
    exact-in-expectation KL computed with many common random numbers (score-term noise ~ 1/sqrt(NB))."""
    with jax.enable_x64(True):
        b = 100_000
        locs, u, _ = _setup(True)
        z = jax.random.normal(jax.random.PRNGKey(11), (b, D), jnp.float64)

        def kl(lo, uu):
            x = draw_points(lo, uu, z)
            return jnp.mean(IsotropicMixture(lo, jnp.exp(uu)).log_prob(x) + potential(x))

        x = draw_points(locs, u, z)
        est = stein_estimate(locs, u, z, potential(x), jax.vmap(jax.vmap(jax.grad(potential)))(x))
        g_m, g_u = jax.grad(kl, argnums=(0, 1))(locs, u)
        np.testing.assert_allclose(est.gbar / N, g_m, atol=0.01)
        np.testing.assert_allclose(jnp.exp(2 * u) * est.lam / N, g_u, atol=0.01)


@pytest.mark.parametrize("shared", [True, False])
def test_weighted_metric_estimates_equal_finite_differences(shared):
    """Learned weights and a diagonal metric D: with z fixed and q frozen inside log q,
    F(theta) = sum_i w_i mean_b [log q0 + V](m_i + sigma_i D^(1/2) z_b) has gradients
    w_i gbar_i (m), w_i eps_i lambda_i (u), t_k / 2 (log D_k); f_i is the per-component mean of psi."""
    with jax.enable_x64(True):
        locs, u, z = _setup(shared)
        weights = jnp.array([0.2, 0.5, 0.3])
        log_d = jnp.array([0.4, -0.3, 0.1, -0.6])
        q0 = IsotropicMixture(locs, jnp.exp(u), weights, jnp.exp(log_d))

        def objective(lo, uu, ld):
            x = draw_points(lo, uu, z, jnp.exp(ld))
            return jnp.sum(weights * jnp.mean(q0.log_prob(x) + potential(x), 1))

        x = draw_points(locs, u, z, jnp.exp(log_d))
        gv = jax.vmap(jax.vmap(jax.grad(potential)))(x)
        est = stein_estimate(locs, u, z, potential(x), gv, weights=weights, metric=jnp.exp(log_d), coord=True)
        g_m, g_u, g_d = jax.grad(objective, argnums=(0, 1, 2))(locs, u, log_d)
        np.testing.assert_allclose(weights[:, None] * est.gbar, g_m, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(weights * jnp.exp(2 * u) * est.lam, g_u, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(0.5 * est.t, g_d, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(est.log_q, q0.log_prob(x), rtol=1e-11)
        np.testing.assert_allclose(est.f, jnp.mean(q0.log_prob(x) + potential(x), 1), rtol=1e-11)
        np.testing.assert_allclose(est.loss, objective(locs, u, log_d), rtol=1e-12)
        # the analytic gradient above is jax's own; check one coordinate by central differences too
        h = 1e-6
        e = jnp.zeros(D).at[2].set(h)
        fd = (objective(locs, u, log_d + e) - objective(locs, u, log_d - e)) / (2 * h)
        np.testing.assert_allclose(0.5 * est.t[2], fd, rtol=1e-6)


@pytest.mark.parametrize("shared", [True, False])
def test_gradient_given_in_parts_equals_whole(shared):
    """MixVI passes grad V as (first draw, other draws) parts; the estimate must not depend on it."""
    with jax.enable_x64(True):
        locs, u, z = _setup(shared)
        x = draw_points(locs, u, z)
        gv = jax.vmap(jax.vmap(jax.grad(potential)))(x)
        v = potential(x)
        metric = jnp.array([0.5, 1.0, 2.0, 1.5])
        whole = stein_estimate(locs, u, z, v[:, :1], gv, metric=metric, coord=True)
        parts = stein_estimate(locs, u, z, v[:, :1], (gv[:, :1], gv[:, 1:]), metric=metric, coord=True)
        for a, b in zip(whole, parts):
            if a is None:
                assert b is None
                continue
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shared", [True, False])
def test_dense_metric_estimates_equal_autodiff(shared):
    """A dense metric L L^T: with z fixed and q frozen inside log q, F(m, u, L) = sum_i w_i mean_b psi(m_i +
    sigma_i L z_b) has gradients w_i gbar_i (m), w_i eps_i lambda_i (u) and L^-T S^T (L), S the Stein matrix."""
    with jax.enable_x64(True):
        locs, u, z = _setup(shared)
        weights = jnp.array([0.2, 0.5, 0.3])
        tril = jnp.tril(0.3 * jax.random.normal(jax.random.PRNGKey(3), (D, D), jnp.float64)) + jnp.diag(
            jnp.array([1.2, 0.7, 1.5, 0.9])
        )
        q0 = IsotropicMixture(locs, jnp.exp(u), weights, scale_tril=tril)

        def objective(lo, uu, factor):
            x = draw_points(lo, uu, z, scale_tril=factor)
            return jnp.sum(weights * jnp.mean(q0.log_prob(x) + potential(x), 1))

        x = draw_points(locs, u, z, scale_tril=tril)
        gv = jax.vmap(jax.vmap(jax.grad(potential)))(x)
        est = stein_estimate(locs, u, z, potential(x), gv, weights=weights, scale_tril=tril)
        g_m, g_u, g_l = jax.grad(objective, argnums=(0, 1, 2))(locs, u, tril)
        np.testing.assert_allclose(weights[:, None] * est.gbar, g_m, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(weights * jnp.exp(2 * u) * est.lam, g_u, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(est.t, (tril.T @ g_l).T, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(est.log_q, q0.log_prob(x), rtol=1e-11)
        np.testing.assert_allclose(est.loss, objective(locs, u, tril), rtol=1e-12)


def test_dense_stein_matrix_diagonal_equals_the_diagonal_metric_term():
    """With a diagonal L = D^(1/2), the dense Stein matrix's diagonal is the diagonal metric's term t."""
    with jax.enable_x64(True):
        locs, u, z = _setup(True)
        metric = jnp.array([0.5, 2.0, 1.0, 3.0])
        x = draw_points(locs, u, z, metric)
        gv = jax.vmap(jax.vmap(jax.grad(potential)))(x)
        diag = stein_estimate(locs, u, z, potential(x), gv, metric=metric, coord=True)
        dense = stein_estimate(locs, u, z, potential(x), gv, scale_tril=jnp.diag(jnp.sqrt(metric)))
        np.testing.assert_allclose(jnp.diag(dense.t), diag.t, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dense.gbar, diag.gbar, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dense.lam, diag.lam, rtol=1e-10)


@pytest.mark.parametrize("kind", ["diagonal", "dense", "lowrank"])
def test_metric_weights_take_each_components_stein_term_in_their_proportion(kind):
    """The shared metric's term with weights s is sum_i s_i T_i (T_i: component i's term alone), the
    gradients at the draws of a component with s_i = 0 do not enter it, and s = 1/N is the unweighted term."""
    from mixvi.lowrank import LowRankMetric

    with jax.enable_x64(True):
        locs, u, z = _setup(True)
        metric = tril = None
        if kind == "diagonal":
            metric = jnp.array([0.5, 2.0, 1.0, 3.0])
        elif kind == "dense":
            tril = jnp.tril(0.3 * jax.random.normal(jax.random.PRNGKey(3), (D, D), jnp.float64)) + jnp.eye(D)
        else:
            basis, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(4), (D, 2), jnp.float64))
            metric = LowRankMetric(jnp.array([0.1, -0.2, 0.3, 0.0]), basis, jnp.array([0.7, -0.4]))
        x = draw_points(locs, u, z, metric, tril)
        gv = jax.vmap(jax.vmap(jax.grad(potential)))(x)

        def term(shares, grads=gv):
            est = stein_estimate(
                locs, u, z, potential(x), grads, metric=metric, coord=True, scale_tril=tril, metric_weights=shares
            )
            return est.t[1] if kind == "lowrank" else est.t  # the low-rank term comes as factors (z, R)

        shares = jnp.array([0.25, 0.75, 0.0])
        alone = [term(jnp.eye(N)[i]) for i in range(N)]
        np.testing.assert_allclose(term(shares), 0.25 * alone[0] + 0.75 * alone[1], rtol=1e-10, atol=1e-12)
        garbage = gv.at[2].set(1e6 * jnp.ones_like(gv[2]))
        np.testing.assert_allclose(term(shares, garbage), term(shares), rtol=1e-10, atol=1e-12)
        assert not np.allclose(term(jnp.full(N, 1.0 / N), garbage), term(jnp.full(N, 1.0 / N)))
        np.testing.assert_allclose(term(jnp.full(N, 1.0 / N)), term(None), rtol=1e-10, atol=1e-12)
