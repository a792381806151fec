"""mixvi.optim: the conversion from NumPyro's Euclidean ELBO gradients to the paper's steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mixvi import optim

N, D = 4, 3


def _state(dtype=jnp.float64):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    locs = jax.random.normal(k1, (N, D), dtype)
    u = 0.2 * jax.random.normal(k2, (N,), dtype)
    gbar = jax.random.normal(k3, (N, D), dtype)
    lam = jax.random.normal(k4, (N,), dtype)
    eps = jnp.exp(2 * u)
    params = {"auto_locs": locs, "auto_scales": u}
    grads = {"auto_locs": gbar / N, "auto_scales": eps * lam / N}
    return params, grads, gbar, lam, eps


@pytest.mark.parametrize("method", ["ibw", "md", "ngd", "means"])
def test_transform_reproduces_the_paper_step(method):
    with jax.enable_x64(True):
        params, grads, gbar, lam, eps = _state()
        gamma = 0.05
        tx = optim.mixture_step(method, gamma)
        updates, state = tx.update(grads, tx.init(params), params)
        new = optax.apply_updates(params, updates)
        new_eps = jnp.exp(2 * new["auto_scales"])
        m = params["auto_locs"]
        if method == "ibw":
            ref_eps, ref_m = (1 - gamma * lam / D) ** 2 * eps, m - gamma * gbar
        elif method == "md":
            ref_eps, ref_m = eps * jnp.exp(-gamma * lam / D), m - gamma * gbar
        elif method == "ngd":
            ref_eps = 1 / (1 / eps + gamma * lam / D)
            ref_m = m - gamma * ref_eps[:, None] * gbar
        else:
            ref_eps, ref_m = eps, m - gamma * gbar
        np.testing.assert_allclose(new_eps, ref_eps, rtol=1e-12)
        np.testing.assert_allclose(new["auto_locs"], ref_m, rtol=1e-12)
        assert int(state.num_clipped) == 0


def test_ibw_guard_clips_a_negative_factor_and_counts_it():
    with jax.enable_x64(True):
        params, grads, gbar, lam, eps = _state()
        grads["auto_scales"] = grads["auto_scales"].at[0].set(eps[0] * 100.0 / N)  # lambda_0 = 100
        tx = optim.ibw(0.5)  # factor 1 - 0.5 * 100 / 3 < 0
        updates, state = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(updates["auto_scales"][0], np.log(0.1))
        assert int(state.num_clipped) == 1


def test_auto_step_stays_in_the_trust_region():
    with jax.enable_x64(True):
        params, grads, *_ = _state()
        grads = jax.tree.map(lambda g: 1e4 * g, grads)
        tx = optim.ibw("auto")
        updates, state = tx.update(grads, tx.init(params), params, value=jnp.asarray(1.0))
        sigma = jnp.exp(params["auto_scales"])
        trust = optim.AutoStep().trust
        assert bool(jnp.all(jnp.linalg.norm(updates["auto_locs"], axis=1) <= trust * sigma * jnp.sqrt(D) * (1 + 1e-9)))
        ratio = jnp.exp(updates["auto_scales"])
        assert bool(jnp.all((ratio >= 1 - trust - 1e-9) & (ratio <= 1 + trust + 1e-9)))
        assert int(state.num_clipped) > 0


def test_auto_step_scale_free():
    """Rescaling the target by c (eps -> c^2 eps, gradients -> gradients / c) rescales the step."""
    with jax.enable_x64(True):
        params, grads, *_ = _state()
        c = 1e-3
        p2 = {"auto_locs": c * params["auto_locs"], "auto_scales": params["auto_scales"] + jnp.log(c)}
        g2 = {"auto_locs": grads["auto_locs"] / c, "auto_scales": grads["auto_scales"]}
        tx = optim.md("auto")
        u1, _ = tx.update(grads, tx.init(params), params, value=jnp.asarray(0.0))
        u2, _ = tx.update(g2, tx.init(p2), p2, value=jnp.asarray(0.0))
        np.testing.assert_allclose(u2["auto_locs"], c * u1["auto_locs"], rtol=1e-9)
        np.testing.assert_allclose(u2["auto_scales"], u1["auto_scales"], rtol=1e-9)


def test_auto_step_rejects_non_finite_and_adapts():
    params, grads, *_ = _state(jnp.float32)
    tx = optim.ibw("auto")
    s0 = tx.init(params)
    bad = dict(grads, auto_locs=grads["auto_locs"].at[0, 0].set(jnp.nan))
    updates, s1 = tx.update(bad, s0, params, value=jnp.asarray(1.0))
    assert all(bool(jnp.all(v == 0)) for v in updates.values())
    np.testing.assert_allclose(s1.eta, 0.5 * s0.eta)
    assert int(s1.num_rejected) == 1
    # a steady downward trend of the loss grows eta; a noisy plateau shrinks it
    step = jax.jit(lambda s, v: tx.update(grads, s, params, value=v)[1])
    s = s0
    for v in np.linspace(10.0, 5.0, 30):
        s = step(s, jnp.asarray(v, jnp.float32))
    grown = float(s.eta)
    assert grown > 1.5 * float(s0.eta)
    # on a plateau the slow average first catches up with the drop (eta may still grow), then eta decays
    peak = grown
    for v in np.random.default_rng(0).normal(5.0, 0.5, 1000):
        s = step(s, jnp.asarray(v, jnp.float32))
        peak = max(peak, float(s.eta))
    assert float(s.eta) < 0.2 * peak


def test_stray_params_get_a_clear_error_and_for_mixture_routes_them():
    params, grads, *_ = _state(jnp.float32)
    params = dict(params, other_loc=jnp.ones(2))
    grads = dict(grads, other_loc=jnp.ones(2))
    tx = optim.ibw(0.1)
    with pytest.raises(ValueError, match="for_mixture"):
        tx.init(params)
    tx = optim.for_mixture(optim.ibw(0.1), other=optax.sgd(0.5))
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["other_loc"], -0.5 * jnp.ones(2))
    ref, _ = optim.ibw(0.1).update(
        {k: grads[k] for k in ("auto_locs", "auto_scales")}, optim.ibw(0.1).init(_state(jnp.float32)[0]), _state(jnp.float32)[0]
    )
    np.testing.assert_allclose(updates["auto_locs"], ref["auto_locs"], rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        optim.mixture_step("adam", 0.1)
    with pytest.raises(ValueError, match="step_size"):
        optim.ibw(-1.0)
    with pytest.raises(ValueError, match="step_size"):
        optim.ibw("fast")
    params, grads, *_ = _state(jnp.float32)
    tx = optim.ibw(0.1)
    with pytest.raises(ValueError, match="params"):
        tx.update(grads, tx.init(params))
