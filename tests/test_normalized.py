"""extras.normalized: group-normalised RMSprop (one running average of the total squared gradient norm)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from extras.normalized import (
    GroupRMSState,
    effective_step,
    group_rmsprop,
    normalized_gd,
    scale_by_group_rms,
    tree_sq_norm,
)
from extras.rules import DescentState, descent_step, run_descent
from mixvi.loop import scan_loop


def _loss(p):
    return jnp.sum(jnp.sin(p["a"]) ** 2) + 0.5 * jnp.sum((p["b"] @ p["b"].T - 1.0) ** 2)


def _reference(params, num_steps, lr, alpha, eps):
    """The reference GroupRMSprop step (Arora et al. 2019 code), written out in numpy float64."""
    x = {k: np.asarray(v, np.float64) for k, v in params.items()}
    grad = jax.grad(_loss)
    v, out = 0.0, []
    for t in range(1, num_steps + 1):
        g = {k: np.asarray(a) for k, a in grad({k: jnp.asarray(a) for k, a in x.items()}).items()}
        v = alpha * v + (1 - alpha) * sum(float(np.sum(a**2)) for a in g.values())
        step = lr / (np.sqrt(v / (1 - alpha**t)) + eps)
        x = {k: x[k] - step * g[k] for k in x}
        out.append(step)
    return x, out


def test_matches_reference_implementation():
    with jax.enable_x64(True):
        params = {"a": jnp.array([0.3, -1.2, 2.0]), "b": jnp.array([[0.5, 0.1], [-0.2, 0.7], [0.0, 0.3]])}
        r = run_descent(_loss, group_rmsprop(0.05, decay=0.9, eps=1e-6), params, 25)
        ref, steps = _reference(params, 25, 0.05, 0.9, 1e-6)
        for k in params:
            np.testing.assert_allclose(np.asarray(r.state.params[k]), ref[k], rtol=1e-12, atol=1e-14)
        assert float(effective_step(r.state.opt_state, 0.05)) == pytest.approx(steps[-1], rel=1e-12)
        assert isinstance(r.state.opt_state[0], GroupRMSState)
        assert int(r.state.opt_state[0].count) == 25


def test_update_is_parallel_to_gradient_with_one_scalar():
    g = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([[3.0]])}
    tx = scale_by_group_rms(decay=0.5, eps=0.0)
    s = tx.init(g)
    u, s = tx.update(g, s)
    # first step with bias correction: vhat = ||g||^2, so u = g / ||g||
    n = float(jnp.sqrt(tree_sq_norm(g)))
    for k in g:
        np.testing.assert_allclose(np.asarray(u[k]), np.asarray(g[k]) / n, rtol=1e-6)
    assert float(s.square_avg) == pytest.approx(0.5 * n**2, rel=1e-6)
    # unlike optax.rmsprop (per coordinate), which changes the direction
    u_rms, _ = optax.scale_by_rms(decay=0.5, eps=0.0).update(g, optax.scale_by_rms(decay=0.5).init(g))
    assert not np.allclose(np.asarray(u_rms["a"]) / np.asarray(u["a"]), float(u_rms["b"][0, 0] / u["b"][0, 0]))


def test_bias_correction_off():
    g = jnp.array([3.0, 4.0])
    tx = scale_by_group_rms(decay=0.99, eps=0.0, bias_correction=False)
    u, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(np.asarray(u), np.asarray(g) / (5.0 * 0.1), rtol=1e-5)


def test_normalized_gd_has_unit_step_length():
    with jax.enable_x64(True):
        x0 = jnp.array([1e-4, -2e-4, 3e-4])
        r = run_descent(lambda x: 0.5 * jnp.sum(x**2) * 1e-6, normalized_gd(1e-5, eps=0.0), x0, 3)
        xs = [x0]
        for _ in range(3):
            xs.append(xs[-1] - 1e-5 * xs[-1] / jnp.linalg.norm(xs[-1]))
        np.testing.assert_allclose(np.asarray(r.state.params), np.asarray(xs[-1]), rtol=1e-12)


def test_invariant_to_scaling_the_loss():
    # with eps = 0 the iterates do not change when the loss is multiplied by a constant
    with jax.enable_x64(True):
        params = {"a": jnp.array([0.3, -1.2, 2.0]), "b": jnp.array([[0.5, 0.1], [-0.2, 0.7]])}
        tx = group_rmsprop(0.02, eps=0.0)
        r1 = run_descent(_loss, tx, params, 40)
        r2 = run_descent(lambda p: 1e-4 * _loss(p), tx, params, 40)
        for k in params:
            np.testing.assert_allclose(np.asarray(r1.state.params[k]), np.asarray(r2.state.params[k]), rtol=1e-10)


def test_escapes_small_initialisation_faster_than_gd():
    # depth-3 scalar factorization f = (x y z - 1)^2 from 1e-3: GD is stuck at the saddle, group RMSprop is not
    def loss(p):
        return (jnp.prod(p) - 1.0) ** 2

    x0 = jnp.full(3, 1e-3)
    gd = run_descent(loss, optax.sgd(0.05), x0, 300)
    grms = run_descent(loss, group_rmsprop(0.05), x0, 300)
    assert float(gd.losses[-1]) > 0.99
    assert float(grms.losses[-1]) < 1e-2


def test_schedule_jit_vmap_and_scan_loop():
    sched = optax.linear_schedule(0.1, 0.01, 10)
    tx = group_rmsprop(sched)
    step = descent_step(lambda x: jnp.sum((x - 1.0) ** 2), tx)
    x0 = jnp.zeros((4, 2))  # 4 independent runs
    state = jax.vmap(lambda x: DescentState(x, tx.init(x)))(x0)
    res = scan_loop(jax.vmap(step), state, 20, is_ok=lambda st, loss: jnp.all(jnp.isfinite(loss)))
    assert res.losses.shape == (20, 4)
    assert np.all(np.isfinite(np.asarray(res.state.params)))
    assert np.all(np.asarray(res.losses[-1]) < np.asarray(res.losses[0]))
    assert effective_step(res.state.opt_state).shape == (4,)


def test_dtype_follows_params_and_errors():
    with jax.enable_x64(True):
        s = scale_by_group_rms().init({"a": jnp.zeros(2, jnp.float64)})
        assert s.square_avg.dtype == jnp.float64
    s = scale_by_group_rms().init({"a": jnp.zeros(2, jnp.float32)})
    assert s.square_avg.dtype == jnp.float32
    with pytest.raises(ValueError):
        scale_by_group_rms(decay=1.0)
    with pytest.raises(ValueError):
        scale_by_group_rms(eps=-1.0)
    with pytest.raises(ValueError):
        effective_step(optax.sgd(1.0).init(jnp.zeros(2)))
