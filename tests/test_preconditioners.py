"""extras.preconditioners: nonlinear preconditioners x+ = x - gamma grad phi*(lam grad f) and the perturbation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from extras import preconditioners as pc
from extras.rules import DescentState, descent_step
from mixvi.loop import scan_loop

MULT = {
    "cosh": np.arcsinh,
    "exp": np.log1p,
    "soft_clip": lambda s: s / (1 + s),
    "clip": lambda s: np.minimum(s, 1.0),
    "gd": lambda s: s,
}


@pytest.mark.parametrize("kernel", pc.KERNELS)
def test_step_is_multiplier_times_direction(kernel):
    with jax.enable_x64(True):
        g = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([[12.0]])}  # global norm 13
        lam, gamma = 0.7, 0.3
        tx = pc.nonlinear_preconditioned_gd(gamma, kernel, lam)
        u, _ = tx.update(g, tx.init(g))
        s = lam * 13.0
        expect = -gamma * MULT[kernel](s) / 13.0
        np.testing.assert_allclose(u["a"], expect * np.array([3.0, -4.0]), rtol=1e-13)
        np.testing.assert_allclose(u["b"], expect * np.array([[12.0]]), rtol=1e-13)


@pytest.mark.parametrize("kernel", pc.KERNELS)
def test_multiplier_ratio_is_continuous_at_zero(kernel):
    with jax.enable_x64(True):
        s = jnp.array([0.0, 1e-8, 9.99e-5, 1.001e-4, 0.5, 3.0, 1e6])
        r = np.asarray(pc.multiplier_ratio(kernel, s))
        assert r[0] == 1.0
        np.testing.assert_allclose(r[1:], MULT[kernel](np.asarray(s[1:])) / np.asarray(s[1:]), rtol=1e-11)


def test_zero_gradient_gives_zero_step_and_small_gradient_is_gd():
    with jax.enable_x64(True):
        for kernel in pc.KERNELS:
            tx = pc.scale_by_nonlinear_preconditioner(kernel, 2.0)
            u, _ = tx.update(jnp.zeros(3), tx.init(jnp.zeros(3)))
            assert np.all(np.asarray(u) == 0)
            g = jnp.array([1e-9, -2e-9])
            u, _ = tx.update(g, tx.init(g))
            np.testing.assert_allclose(u, 2.0 * g, rtol=1e-8)


def test_clip_kernel_is_gradient_clipping():
    with jax.enable_x64(True):
        lam, gamma = 0.5, 0.1
        for g in (jnp.array([0.3, 0.4]), jnp.array([30.0, -40.0])):
            tx = pc.nonlinear_preconditioned_gd(gamma, "clip", lam)
            ours, _ = tx.update(g, tx.init(g))
            ref_tx = optax.chain(optax.clip_by_global_norm(1 / lam), optax.sgd(gamma * lam))
            ref, _ = ref_tx.update(g, ref_tx.init(g))
            np.testing.assert_allclose(ours, ref, rtol=1e-13)


def test_separable_acts_per_coordinate():
    with jax.enable_x64(True):
        g = jnp.array([2.0, -0.5, 0.0])
        tx = pc.scale_by_nonlinear_preconditioner("cosh", 1.5, separable=True)
        u, _ = tx.update(g, tx.init(g))
        np.testing.assert_allclose(u, np.sign(g) * np.arcsinh(1.5 * np.abs(g)), rtol=1e-13)


def test_bad_arguments():
    with pytest.raises(ValueError):
        pc.scale_by_nonlinear_preconditioner("tanh")
    with pytest.raises(ValueError):
        pc.scale_by_nonlinear_preconditioner("cosh", lam=0.0)
    with pytest.raises(ValueError):
        pc.perturbed(optax.sgd(0.1), threshold=1.0, radius=0.0)


def test_uniform_ball_radius_distribution():
    with jax.enable_x64(True):
        like = {"a": jnp.zeros(2), "b": jnp.zeros((1,))}  # D = 3: P(||xi|| <= t r) = t^3
        keys = jax.random.split(jax.random.PRNGKey(0), 4000)
        xi = jax.vmap(lambda k: pc.uniform_ball(k, like, 2.0))(keys)
        r = np.sqrt(np.sum(np.asarray(xi["a"]) ** 2, 1) + np.asarray(xi["b"])[:, 0] ** 2)
        assert r.max() <= 2.0 + 1e-12
        assert abs(np.mean(r <= 1.0) - 1 / 8) < 0.02
        assert abs(np.mean(r / 2.0) - 3 / 4) < 0.01  # E[U^(1/3)] = 3/4


def test_perturbation_fires_only_at_small_gradients_and_respects_wait():
    with jax.enable_x64(True):
        tx = pc.perturbed(optax.sgd(0.1), threshold=0.5, radius=0.01, wait=3, seed=1)
        x = jnp.zeros(4)
        s = tx.init(x)
        update = jax.jit(tx.update)
        fired = []
        for g in [jnp.zeros(4)] * 5 + [jnp.ones(4)] * 2 + [jnp.zeros(4)]:
            u, s2 = update(g, s, x)
            fired.append(int(s2.num_perturbations - s.num_perturbations))
            plain = -0.1 * np.asarray(g)
            if fired[-1]:
                assert 0 < np.linalg.norm(np.asarray(u) - plain) <= 0.01
            else:
                np.testing.assert_allclose(u, plain)
            s = s2
        # small grads at steps 0..4 -> fires at 0 and 3 (wait 3); large grads at 5, 6; small at 7 (4 since 3)
        assert fired == [1, 0, 0, 1, 0, 0, 0, 1]


def test_perturbation_escapes_an_exact_saddle_that_plain_pgd_never_leaves():
    # f(x, y) = (x^2 - y^2)/2 + y^4/4: strict saddle at 0, minima at y = +-1 (f = -1/4)
    def f(x):
        return 0.5 * (x[0] ** 2 - x[1] ** 2) + 0.25 * x[1] ** 4

    with jax.enable_x64(True):
        x0 = jnp.zeros(2)
        out = {}
        for name, tx in [
            ("plain", pc.nonlinear_preconditioned_gd(0.2, "cosh", 1.0)),
            ("perturbed", pc.perturbed(pc.nonlinear_preconditioned_gd(0.2, "cosh", 1.0), threshold=1e-3,
                                       radius=1e-3, wait=50, seed=0)),
        ]:
            res = scan_loop(descent_step(f, tx), DescentState(x0, tx.init(x0)), 300)
            out[name] = np.asarray(res.losses)
        assert np.all(out["plain"] == 0.0)
        assert out["perturbed"][-1] == pytest.approx(-0.25, abs=1e-9)


def test_pgd_is_vmappable_and_pure():
    def f(x):
        return 0.25 * jnp.sum(x**4)

    tx = pc.perturbed(pc.nonlinear_preconditioned_gd(0.1, "exp"), threshold=1e-8, radius=1e-3, seed=0)
    step = descent_step(f, tx)
    x0 = jnp.stack([jnp.full(3, 10.0), jnp.full(3, -100.0)])
    state = jax.vmap(lambda x: DescentState(x, tx.init(x)))(x0)
    def ok(state, loss):
        return jnp.all(jnp.isfinite(loss))

    res1 = scan_loop(jax.vmap(step), state, 50, is_ok=ok)
    res2 = scan_loop(jax.vmap(step), state, 50, is_ok=ok)
    np.testing.assert_array_equal(res1.state.params, res2.state.params)
    assert np.all(np.abs(np.asarray(res1.state.params)) < np.abs(np.asarray(x0)))
