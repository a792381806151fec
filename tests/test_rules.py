"""extras.rules: Polyak-Ruppert averaging, metric preconditioning, Armijo descent, descent steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from extras.rules import (
    DescentState,
    PolyakState,
    armijo_descent,
    averaged_params,
    descent_step,
    polyak_average,
    precondition,
    run_descent,
)
from mixvi.loop import DivergenceError

A = jnp.array([1.0, 10.0, 100.0])


def quad(x):
    return 0.5 * jnp.sum(A * x**2)


def test_run_descent_matches_manual_gd():
    x0 = jnp.array([1.0, -1.0, 0.5])
    r = run_descent(quad, optax.sgd(0.015), x0, 5)
    x, losses = x0, []
    for _ in range(5):
        losses.append(quad(x))
        x = x - 0.015 * A * x
    assert np.allclose(r.losses, losses, rtol=1e-6)
    assert np.allclose(r.state.params, x, rtol=1e-6)


def test_polyak_average_is_the_mean_of_iterates():
    x0 = jnp.array([1.0, -2.0, 0.5])
    tx = polyak_average(optax.sgd(0.005))
    r = run_descent(quad, tx, x0, 7)
    xs, x = [], x0
    for _ in range(7):
        x = x - 0.005 * A * x
        xs.append(x)
    assert np.allclose(averaged_params(r.state.opt_state), np.mean(xs, axis=0), rtol=1e-5)
    assert np.allclose(r.state.params, xs[-1], rtol=1e-5)  # the updates are those of the inner transform
    assert int(r.state.opt_state.num_averaged) == 7 and int(r.state.opt_state.count) == 7
    # tail averaging, and inside a chain
    r2 = run_descent(quad, optax.chain(optax.identity(), polyak_average(optax.sgd(0.005), start=3)), x0, 7)
    assert np.allclose(averaged_params(r2.state.opt_state), np.mean(xs[3:], axis=0), rtol=1e-5)


def test_polyak_average_pytree_and_errors():
    params = {"a": jnp.ones(2), "b": jnp.zeros((2, 2))}
    tx = polyak_average(optax.sgd(1.0))
    s = tx.init(params)
    assert isinstance(s, PolyakState)
    g = jax.tree.map(jnp.ones_like, params)
    u, s = tx.update(g, s, params)
    new = optax.apply_updates(params, u)
    assert all(np.allclose(averaged_params(s)[k], new[k]) for k in params)
    with pytest.raises(ValueError):
        tx.update(g, s)
    with pytest.raises(ValueError):
        averaged_params(optax.sgd(1.0).init(params))
    with pytest.raises(ValueError):
        polyak_average(optax.sgd(1.0), start=-1)


def test_polyak_average_reduces_sgd_noise():
    # constant-step SGD on noisy gradients of a quadratic: the average is much closer to the optimum
    def step(state):
        params, opt_state, key = state
        key, sub = jax.random.split(key)
        g = A * params + jax.random.normal(sub, params.shape)
        u, opt_state = tx.update(g, opt_state, params)
        return (optax.apply_updates(params, u), opt_state, key), jnp.sum(params**2)

    from mixvi.loop import scan_loop

    tx = polyak_average(optax.sgd(0.01), start=500)
    x0 = jnp.zeros(3)
    r = scan_loop(step, (x0, tx.init(x0), jax.random.key(0)), 20000)
    last = float(jnp.sum(r.state[0] ** 2))
    avg = float(jnp.sum(averaged_params(r.state[1]) ** 2))
    assert avg < 0.05 * last


def test_precondition_is_a_metric_step():
    G = jnp.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 4.0]])
    tx = optax.chain(precondition(lambda p, u: jnp.linalg.solve(G, u)), optax.sgd(0.1))
    x0 = jnp.array([1.0, 1.0, 1.0])
    u, _ = tx.update(A * x0, tx.init(x0), x0)
    assert np.allclose(u, -0.1 * jnp.linalg.solve(G, A * x0), rtol=1e-6)
    with pytest.raises(ValueError):
        precondition(lambda p, u: u).update(x0, optax.EmptyState())
    # with G = hess f the preconditioned step is Newton's: one unit step solves the quadratic
    newton = optax.chain(precondition(lambda p, u: u / A), optax.sgd(1.0))
    r = run_descent(quad, newton, x0, 2)
    assert float(r.losses[1]) < 1e-12


def test_armijo_descent_sufficient_decrease_and_convergence():
    x0 = jnp.array([1.0, 1.0, 1.0])
    r = run_descent(quad, armijo_descent(10.0), x0, 400)
    losses = np.asarray(r.losses)
    assert np.all(np.diff(losses) <= 1e-12)  # monotone (Armijo)
    assert losses[-1] < 1e-6 * losses[0]
    # one step checks the Armijo inequality with slope_rtol = 1e-4
    tx = armijo_descent(10.0)
    step = descent_step(quad, tx)
    s1, f0 = step(DescentState(x0, tx.init(x0)))
    g = A * x0
    t = float(s1.opt_state[1].learning_rate)
    assert float(quad(s1.params)) <= float(f0) - 1e-4 * t * float(g @ g) + 1e-12
    assert np.allclose(s1.params, x0 - t * g, rtol=1e-6)


def test_descent_step_vmaps_over_step_sizes():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)
    etas = jnp.array([0.001, 0.01, 0.019])

    def init(eta):
        s = tx.init(jnp.ones(3))
        return DescentState(jnp.ones(3), s._replace(hyperparams={**s.hyperparams, "learning_rate": eta}))

    state = jax.vmap(init)(etas)
    step = jax.vmap(descent_step(quad, tx))
    for _ in range(3):
        state, _ = step(state)
    expect = jnp.stack([(1 - e * A) ** 3 for e in etas])
    assert np.allclose(state.params, expect, rtol=1e-5)


def test_run_descent_raises_on_divergence():
    with pytest.raises(DivergenceError) as e:
        run_descent(quad, optax.sgd(0.05), jnp.ones(3), 2000)  # 0.05 > 2/100
    assert 0 < e.value.step < 2000
