"""The benchmarks' metric functions (benchmarks.metrics) against known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import metrics as M


def test_kl_monte_carlo_between_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    m0, s0 = np.array([0.5, -1.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
    m1, s1 = np.array([0.0, 0.0]), np.array([[2.0, -0.2], [-0.2, 1.0]])
    z = rng.multivariate_normal(m0, s0, 200_000)
    from scipy.stats import multivariate_normal as mvn

    est, se = M.kl_monte_carlo(mvn(m0, s0).logpdf(z), mvn(m1, s1).logpdf(z))
    exact = M.gaussian_kl(m0, s0, m1, s1)
    assert abs(est - exact) < 4 * se + 1e-3
    assert M.gaussian_kl(m0, s0, m0, s0) == pytest.approx(0.0, abs=1e-12)


def test_neg_elbo_is_kl_minus_log_z():
    rng = np.random.default_rng(1)
    z = rng.normal(size=50_000)
    log_q = -0.5 * z**2 - 0.5 * np.log(2 * np.pi)
    log_z = 1.7  # V = -log pi - log Z for pi = N(0, 1): then -ELBO = KL - log Z = -1.7
    assert M.neg_elbo(log_q, -log_q - log_z) == pytest.approx(-log_z, abs=1e-9)


def test_sliced_wasserstein_identical_and_shifted():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 3))
    assert M.sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    shift = np.array([1.0, -2.0, 0.5])
    # for y = x + v the projected distances are |theta.v|, so SW_2 = |v| / sqrt(d)
    sw = M.sliced_wasserstein(x, x + shift, jax.random.PRNGKey(0), num_projections=4000)
    assert sw == pytest.approx(np.linalg.norm(shift) / np.sqrt(3), rel=0.03)
    # 1-D: exactly the shift, also with unequal sample sizes
    a = rng.normal(size=(4000, 1))
    assert M.sliced_wasserstein(a, a + 0.7, num_projections=5) == pytest.approx(0.7, abs=1e-9)
    b = rng.normal(size=(2500, 1)) + 0.7
    assert M.sliced_wasserstein(a, b, num_projections=5) == pytest.approx(0.7, abs=0.08)


def test_mmd_small_for_same_distribution_large_for_shift():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(600, 2)), rng.normal(size=(600, 2))
    assert M.mmd_rbf(x, y) < 0.1
    assert M.mmd_rbf(x, y + 2.0) > 0.5


def test_moment_errors_in_reference_sd_units():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(100_000, 2)) * np.array([1.0, 3.0])
    x = rng.normal(size=(100_000, 2)) * np.array([2.0, 3.0]) + np.array([0.5, 3.0])
    e = M.moment_errors(*M.weighted_moments(x), *M.weighted_moments(ref))
    assert e["mean_err_max"] == pytest.approx(1.0, abs=0.03)  # 3 / 3 on the second coordinate
    assert e["mean_err"] == pytest.approx(0.75, abs=0.03)
    assert e["sd_err"] == pytest.approx(0.5, abs=0.03)  # (1 + 0) / 2


def test_mode_coverage_of_a_known_mixture():
    ref = np.repeat([0, 1, 2], [500, 300, 200])
    q_all = np.repeat([0, 1, 2], [500, 300, 200])
    full = M.mode_coverage(q_all, ref, 3)
    assert full["covered"] == 3 and full["min_coverage"] == pytest.approx(1.0) and full["tv"] == pytest.approx(0.0)
    q_two = np.repeat([0, 1], [700, 300])  # misses mode 2 entirely
    part = M.mode_coverage(q_two, ref, 3)
    assert part["covered"] == 2 and part["coverage"][2] == 0.0 and part["tv"] == pytest.approx(0.2)
    q_half = np.repeat([0, 1, 2], [800, 150, 50])  # half of mode 1's mass, a quarter of mode 2's
    c = M.mode_coverage(q_half, ref, 3)
    assert c["coverage"] == pytest.approx([1.0, 0.5, 0.25]) and c["covered"] == 2


def test_predictive_metrics():
    labels = np.array([0, 1, 1])
    lp = jnp.log(jnp.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]] * 4))  # 4 identical draws
    out = M.predictive_metrics(lp, labels)
    assert out["test_accuracy"] == pytest.approx(2 / 3)
    assert out["test_loglik"] == pytest.approx(np.mean(np.log([0.9, 0.8, 0.4])), rel=1e-5)
    assert out["test_loglik_se"] == pytest.approx(np.std(np.log([0.9, 0.8, 0.4]), ddof=1) / np.sqrt(3), rel=1e-5)


def test_summarise_and_first_reach():
    s = M.summarise([3.0, 1.0, float("nan"), 2.0, None])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert M.first_reach(np.array([5.0, 3.0, 1.0, 0.5]), 1.0) == 2
    assert M.first_reach(np.array([5.0]), 1.0) is None
