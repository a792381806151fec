"""Claims of Markou, Ajanthan, Gould, arXiv 2506.08428 (reduction mappings) at small size (extras.reduction)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from extras import reduction as rd


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def test_envelope_identity_and_implicit_derivative():
    e = rd.envelope_check(jax.random.key(5), num_points=6)
    assert e["envelope"] < 1e-10  # grad F = grad_{x1} f(x1, Psi(x1))
    assert e["finite_difference"] < 1e-7
    assert e["hessian_schur"] < 1e-10  # hess F = H11 - H12 H22^{-1} H21 along the argmin graph
    assert e["dpsi_implicit"] < 1e-10  # D Psi = -H22^{-1} H21 (custom_root)


def test_argmin_map_is_the_minimiser():
    t, y = rd.two_exponentials_data(jax.random.key(0))
    f = lambda a, b: rd.exp_fit_objective(a, b, t, y)  # noqa: E731
    psi = rd.argmin_map(f, jnp.zeros(2))
    a = jnp.array([0.7, 1.6])
    P = jnp.exp(-t[:, None] * a)
    assert jnp.allclose(psi(a), jnp.linalg.lstsq(P, y)[0], rtol=1e-9, atol=1e-9)
    assert float(jnp.abs(jax.grad(f, argnums=1)(a, psi(a))).max()) < 1e-10


@pytest.mark.parametrize("seed", range(4))
def test_schur_complement_inequalities_random_spd(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n = int(rng.integers(2, 14))
        n1 = int(rng.integers(1, n))
        A = rng.normal(size=(n, n)) * 10.0 ** rng.uniform(-2, 1, size=n)
        H = A @ A.T + 10.0 ** rng.uniform(-5, 0) * np.eye(n)
        tol = 1e-9 * np.linalg.eigvalsh(H)[-1]
        sl = rd.schur_inequalities(H, n1)
        err = sl.pop("S^-1 - (H^-1)_11")
        assert err < 1e-8 * np.linalg.cond(H) * np.abs(np.linalg.inv(H)).max()
        for k, v in sl.items():
            scale = max(1.0, abs(np.linalg.cond(H))) if k.startswith("kappa") else 1.0
            assert v >= -tol * scale, k


def test_schur_strict_gain_with_coupling():
    # with nonzero coupling H12 the Schur complement is strictly below H11: lambda_max(S) < lambda_max(H11)
    rng = np.random.default_rng(7)
    A = rng.normal(size=(6, 6))
    H = A @ A.T + np.eye(6)
    S = np.asarray(rd.schur_complement(jnp.asarray(H), 3))
    assert np.linalg.eigvalsh(H[:3, :3] - S).min() > 1e-8
    assert rd.condition_number(S) < rd.condition_number(H)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_manifold_quadratic_reduction(seed):
    q = rd.quadratic_experiment(jax.random.key(seed))
    assert q["nullity_H"] == 3 and q["nullity_S"] == 3  # the 3-dim minimiser set survives the reduction
    assert q["hessF_minus_S"] < 1e-12  # hess F (through custom_root) is the Schur complement
    assert q["kappa_f"] == pytest.approx(1000.0, rel=1e-6)
    # positive-spectrum condition numbers never get worse, and here drop by > 10x
    assert q["kappa_F"] <= q["kappa_f"] and q["kappa_F_pullback"] <= q["kappa_f"]
    assert q["kappa_ratio"] > 10
    st = q["steps"]
    assert min(st.values()) > 0
    assert st["joint"] > 10 * st["reduced"] and st["joint"] > 10 * st["reduced_pullback"]
    sp = q["spectra"]
    assert sp["S"].min() >= sp["H"].min() * (1 - 1e-8) and sp["S"].max() <= sp["H"].max() * (1 + 1e-8)
    assert sp["G^-1 S"].min() >= sp["H"].min() * (1 - 1e-8) and sp["G^-1 S"].max() <= sp["H"].max() * (1 + 1e-8)


def test_varpro_reduced_armijo_beats_joint():
    vp = rd.varpro_experiment(jax.random.key(0), num_steps=30000, num_steps_reduced=4000, rel_tols=(1e-2, 1e-4))
    assert np.allclose(vp["a_star"], [0.5, 2.0], atol=0.02)
    assert vp["schur_error_at_opt"] < 1e-9
    assert vp["kappa_F_at_opt"] < vp["kappa_f_at_opt"] / 5
    for tol in ("0.01", "0.0001"):
        j, r, g = (vp["steps"][k][tol] for k in ("joint", "reduced", "reduced_pullback"))
        assert j > 0 and r > 0 and g > 0
        assert j > 5 * r  # measured ~11x
        assert r > g  # the pullback metric helps further here (measured ~8x)
    assert np.allclose(vp["final_a"]["reduced"], vp["a_star"], atol=1e-6)
    assert np.allclose(vp["final_a"]["reduced_pullback"], vp["a_star"], atol=1e-6)
    assert np.allclose(vp["final_a"]["joint"], vp["a_star"], atol=1e-2)  # still creeping along the valley
