"""Claims of Mu, Klabjan, arXiv 2409.09778 (Rewind-to-Delete), at small size (extras.unlearning)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from extras import unlearning as ul


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def exp():
    with jax.enable_x64(True):
        return ul.experiment(T=30, Ks=(0, 15, 27, 29, 30), num_noise=2)


def test_constants_and_gradient_difference_bound():
    t = np.linspace(-10, 10, 200001)
    s = 1 / (1 + np.exp(-t))
    assert np.abs(s * (1 - s)).max() == pytest.approx(ul.SIGMOID_G, rel=1e-9)  # |sigmoid'| <= 1/4
    assert np.abs(s * (1 - s) * (1 - 2 * s)).max() == pytest.approx(ul.SIGMOID_L, rel=1e-6)  # |sigmoid''| <= 1/(6 sqrt 3)
    data = ul.make_users(jax.random.PRNGKey(3), 10, 20, 8)
    assert np.allclose(np.linalg.norm(np.asarray(data["X"]), axis=-1), 1.0)
    full = jnp.ones((10, 20), bool)
    grad = jax.jit(jax.grad(ul.objective), static_argnums=4)
    for j in range(3):
        theta = 3.0 * jax.random.normal(jax.random.PRNGKey(j), (8,))
        gD = grad(theta, data["X"], data["y"], full, 0.01)
        gR = grad(theta, data["X"], data["y"], full.at[j].set(False), 0.01)
        assert float(jnp.linalg.norm(gD - gR)) <= 2 * 20 * ul.SIGMOID_G / 200


def test_rewinding_all_the_way_is_exact_retraining():
    data = ul.make_users(jax.random.PRNGKey(0), 6, 20, 5)
    X, y = data["X"], data["y"]
    full = jnp.ones((6, 20), bool)
    keep = full.at[2].set(False)
    path = ul.run_gd(jnp.zeros((1, 5)), X, y, full[None], lam=1e-3, eta=1.0, num_steps=25)[:, 0]
    r2d = ul.run_gd(jnp.asarray(path[:1]), X, y, keep[None], lam=1e-3, eta=1.0, num_steps=25)[-1, 0]
    retrain = ul.run_gd(jnp.zeros((1, 5)), X, y, keep[None], lam=1e-3, eta=1.0, num_steps=25)[-1, 0]
    np.testing.assert_array_equal(r2d, retrain)


def test_r2d_approaches_retraining_d2d_moves_away_bound_holds(exp):
    c = exp["curves"]
    r2d, d2d, bound = np.array(c["r2d_mean"]), np.array(c["d2d_mean"]), np.array(c["bound"])
    assert r2d[-1] == 0.0 and bound[-1] == 0.0
    assert np.all(np.diff(r2d) < 0)  # more rewinding, closer to retraining
    assert np.all(np.diff(bound) < 0)
    assert np.all(np.array(c["r2d_max"]) <= bound)  # the sensitivity bound (S) holds for every forgotten user
    assert np.all(np.diff(d2d[5:]) > 0)  # descending from theta_T on D' moves away from the retrained model
    assert d2d[-1] > 2 * r2d[0]


def test_eps_at_fixed_sigma_decreases_with_k_and_vanishes_at_t(exp):
    eps = [r["eps_analytic"] for r in exp["rows"]]
    assert all(a > b for a, b in zip(eps[:-1], eps[1:]))
    assert eps[-1] == 0.0
    for r in exp["rows"][:-1]:
        assert r["sigma_eps1_analytic"] < r["sigma_eps1_classical"]


def test_membership_signal_before_and_gone_after(exp):
    before, after = np.array(exp["auc_before_per_user"]), np.array(exp["auc_retrained_per_user"])
    assert np.mean(before - after) > 0.08
    assert np.mean(before > after) >= 0.8
    last = [r for r in exp["rows"] if r["K"] == exp["T"] - 1][0]
    assert abs(last["auc"] - np.mean(after)) < 0.02


def test_checkpoint_recovery_is_accurate(exp):
    assert exp["recovery"]["max_err"] < 1e-10
    assert exp["recovery"]["norm_theta_0_recovered"] < 1e-10  # theta_0 = 0 recovered from theta_T


@pytest.mark.parametrize("a", [0.05, 0.5, 2.0, 6.0])
@pytest.mark.parametrize("eps", [0.1, 1.0, 3.0])
def test_analytic_delta_is_the_hockey_stick_divergence(a, eps):
    # delta(eps) = int max(0, p(x) - e^eps q(x)) dx, p = N(a, 1), q = N(0, 1) (sigma = 1, Delta = a)
    val, _ = integrate.quad(lambda x: max(0.0, stats.norm.pdf(x, a) - math.exp(eps) * stats.norm.pdf(x)),
                            -20, 30, points=[a / 2 + eps / a], limit=200, epsabs=1e-14)
    assert float(ul.analytic_delta(eps, a)) == pytest.approx(val, abs=1e-11)


def test_mechanism_calibration_round_trip():
    for row in ul.mechanism_table(sens=0.7, delta=1e-6, eps=(0.05, 0.5, 1.0, 4.0)):
        assert row["eps_roundtrip"] == pytest.approx(row["eps"], rel=1e-6)
        assert float(ul.analytic_delta(row["eps"], 0.7 / row["sigma_analytic"])) == pytest.approx(1e-6, rel=1e-6)
        if row["eps"] <= 1.0:
            assert row["sigma_analytic"] < row["sigma_classical"]  # Balle-Wang: strictly less noise
    assert ul.analytic_sigma(1.0, 1e-5, 0.0) == 0.0 and ul.analytic_epsilon(1.0, 1e-5, 0.0) == 0.0
    # sigma scales linearly with the sensitivity
    assert ul.analytic_sigma(0.5, 1e-5, 3.0) == pytest.approx(3 * ul.analytic_sigma(0.5, 1e-5, 1.0), rel=1e-9)


def test_sensitivity_formula():
    G, L = ul.smoothness_constants(0.0)
    T, eta, m, n = 10, 0.5, 5, 100
    # unrolled recursion delta_{t+1} = (1 + eta L) delta_t + eta 2 m G / n for T - K steps, then x (1 + eta L)^K
    for K in range(T + 1):
        dlt = 0.0
        for _ in range(T - K):
            dlt = (1 + eta * L) * dlt + eta * 2 * m * G / n
        dlt *= (1 + eta * L) ** K
        assert float(ul.sensitivity(T, K, eta=eta, L=L, G=G, m=m, n=n)) == pytest.approx(dlt, rel=1e-12, abs=1e-15)
