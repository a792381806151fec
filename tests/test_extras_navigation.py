"""Claims of Vastola, Gershman, Rajan, arXiv 2510.26997, at small size (extras.navigation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from extras import navigation as nav


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def test_rate_limits_ratio_three_vs_nine():
    assert nav.optimal_rate(9.0, gamma=0.0) / nav.optimal_rate(1.0, gamma=0.0) == pytest.approx(3.0, rel=1e-14)
    assert nav.optimal_rate(9.0, gamma=1e6) / nav.optimal_rate(1.0, gamma=1e6) == pytest.approx(9.0, rel=1e-4)
    # short horizon: r ~ eta k h / gamma (gradient descent with learning rate eta k / gamma); metric G divides h
    for h, G in ((1.0, 1.0), (4.0, 2.0)):
        r = nav.optimal_rate(h, gamma=1e4, eta=0.5, k=3.0, G=G)
        assert r == pytest.approx(0.5 * 3.0 * h / (G * 1e4), rel=1e-3)
    # r solves r^2 + gamma r = eta k h / G
    r = nav.optimal_rate(2.0, gamma=0.7, eta=1.3, k=0.4, G=1.5)
    assert r**2 + 0.7 * r == pytest.approx(1.3 * 0.4 * 2.0 / 1.5, rel=1e-13)
    # the discrete rate converges to the continuous one as dt -> 0
    for dt in (1e-2, 1e-3):
        assert nav.discrete_rate(3.0, gamma=2.0, dt=dt) == pytest.approx(nav.optimal_rate(3.0, gamma=2.0), rel=20 * dt)


@pytest.mark.parametrize("h,gamma", [(9.0, 0.0), (1.0, 4.0)])
def test_minimised_action_decays_at_the_closed_form_rate(h, gamma):
    r = nav.rate_check(h, gamma, num_steps=600)
    assert r["fitted"] == pytest.approx(r["discrete"], rel=1e-6)  # exact for the discretised action
    assert r["fitted"] == pytest.approx(r["continuous"], rel=0.05)  # O(dt) from the continuous rate


def test_feedback_law_natural_gradient_and_ballistic_limits():
    H = np.array([[3.0, 1.0], [1.0, 2.0]])
    G = np.array([[2.0, -0.5], [-0.5, 1.0]])
    ng = np.linalg.solve(G, H)
    A = nav.feedback_matrix(H, G, gamma=1e5, eta=2.0, k=0.5)
    np.testing.assert_allclose(A * 1e5, ng, rtol=1e-4)
    A0 = nav.feedback_matrix(H, G, gamma=0.0, eta=2.0, k=0.5)
    np.testing.assert_allclose(A0 @ A0, ng, rtol=1e-12)
    # the numerically optimal 2-D path under metric G leaves theta0 with velocity -A theta0
    gamma, dt = 1.0, 0.02
    Hj = jnp.asarray(H)
    path, _, gn = nav.minimise_action(
        jnp.array([1.0, -1.0]),
        lambda th: 0.5 * th @ Hj @ th,
        num_points=300,
        dt=dt,
        gamma=gamma,
        G=jnp.asarray(G),
        num_steps=1000,
    )
    assert gn < 1e-7
    v0 = (path[1] - path[0]) / dt
    np.testing.assert_allclose(v0, -nav.feedback_matrix(H, G, gamma=gamma) @ path[0], rtol=0.03)


def test_double_well_optimal_path_crosses_the_barrier_gradient_flow_does_not():
    dw = nav.double_well_experiment((0.0, 1.0), T=14.0, dt=0.025, num_steps=800)
    assert dw["gradient_flow_end"] == pytest.approx(dw["local_min"], abs=1e-6)
    r0 = dw["runs"]["0"]
    assert r0["optimal"] == "cross" and r0["crosses_barrier"]
    assert r0["end_optimal"] == pytest.approx(dw["global_min"], abs=1e-3)
    assert r0["action_cross"] < 0.5 * r0["action_stay"]
    assert r0["max_abs_energy_first_half"] < 0.01 * dw["L_barrier"]  # E = theta'^2/2 - L conserved at 0
    # a short horizon (gamma = 1) makes staying in the local minimum optimal again
    assert dw["runs"]["1"]["optimal"] == "stay"


def test_default_dynamics_settle_at_closed_form_fixed_points():
    dd = nav.default_dynamics_experiment(T=30.0, dt=0.1, num_steps=400)
    for c in dd["cases"].values():
        assert c["err_dt"] < 1e-5  # exact for the discretised action, up to the turnpike error ~ e^{-kappa T/2}
        assert c["err_continuous"] < 1e-2  # O(dt) from the continuous-time fixed point
        assert c["dist_theta_star"] > 0.3
    np.testing.assert_allclose(dd["cases"]["weight_decay"]["fixed_point"], dd["ridge_solution"], rtol=1e-12)


def test_ballistic_rmsprop_beats_sgd_on_badly_scaled_classification():
    data = nav.classification_data(jax.random.PRNGKey(1), n=500)
    rules = nav.compare_rules(
        data, lrs={"sgd": (1.0, 3.0, 10.0), "rmsprop": (0.03, 0.1, 0.3)}, seeds=(0, 1, 2), num_steps=300
    )
    s = nav.best_lr_summary(rules)
    assert max(s["rmsprop"]["train_per_seed"]) < min(s["sgd"]["train_per_seed"]) - 0.03
    assert s["rmsprop"]["acc_mean"] > s["sgd"]["acc_mean"]


def test_paper_well_minimum_action_path_converges_in_dt():
    pw = nav.paper_well_experiment((20, 40, 80), num_steps=400)
    # the endpoint is the deeper minimum of V near (1, 0): zero gradient, positive definite Hessian
    end = jnp.asarray(pw["end"])
    assert float(jnp.linalg.norm(jax.grad(nav.paper_well)(end))) < 1e-10
    assert np.all(np.linalg.eigvalsh(np.asarray(jax.hessian(nav.paper_well)(end))) > 0)
    assert pw["end"][0] == pytest.approx(1.0, abs=0.1) and pw["V_end"] < pw["V_start"]
    runs = list(pw["runs"].values())
    for r in runs:
        assert r["grad_norm"] < 1e-6
        np.testing.assert_allclose(r["path"][0], pw["start"])
        np.testing.assert_allclose(r["path"][-1], pw["end"])
        assert r["action_mean"] == pytest.approx(r["action"] / pw["T"], rel=1e-12)
    # the left-point rule is O(dt): successive differences shrink by about half, all with the same sign
    d = pw["action_differences"]
    assert np.sign(d[0]) == np.sign(d[1]) and 0.3 < pw["difference_ratios"][0] < 0.7
    assert abs(pw["richardson"][1] - pw["richardson"][0]) < 0.1 * abs(d[1])
    assert pw["path_max_distance_coarse_fine"] < 0.05


def test_fixed_end_path_is_the_straight_line_without_potential():
    # V = 0, gamma = 0: the minimiser of sum |dtheta|^2/(2 dt) is uniform motion, action |end - start|^2/(2T)
    r = nav.fixed_end_path(
        jnp.array([0.0, 0.0]),
        jnp.array([2.0, 1.0]),
        lambda th: 0.0 * th[0],
        T=2.0,
        num_points=10,
        gamma=0.0,
        num_steps=200,
    )
    np.testing.assert_allclose(
        np.array(r["path"]), np.linspace(0.0, 1.0, 11)[:, None] * np.array([2.0, 1.0]), atol=1e-8
    )
    assert r["action"] == pytest.approx(5.0 / 4.0, rel=1e-10)
