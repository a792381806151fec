"""Claims of Rahimi Afzal et al., 'Linearization Explains Fine-Tuning in LLMs' (OpenReview tdwRIP6NG2),
at small size (extras.linearized_finetuning): exact identities in float64 on a 4-16-16-16-1 MLP, the
lambda trend and the condition-number ranking on a briefly pretrained 8-32-32-32-1 MLP."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from extras import linearized_finetuning as lf
from extras.rules import DescentState, descent_step
from mixvi.loop import scan_loop


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture
def small():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = lf.init_mlp(k1, (4, 16, 16, 16, 1))
    x = jax.random.normal(k2, (16, 4))
    y = jnp.sin(x @ jnp.arange(1.0, 5.0) / 4) + 0.1 * jax.random.normal(k3, (16,))
    return params, x, y


def test_kernels_add_over_disjoint_layer_sets(small):
    params, x, _ = small
    Kl = lf.layer_kernels(lf.mlp, params, x)
    full = lf.empirical_ntk(lf.mlp, params, x)
    np.testing.assert_allclose(sum(Kl.values()), full, rtol=1e-12, atol=1e-12)
    for S, T in [(["layer1", "layer3"], ["layer0"])]:
        KS = lf.empirical_ntk(lf.mlp, params, x, subset=S)
        KT = lf.empirical_ntk(lf.mlp, params, x, subset=T)
        np.testing.assert_allclose(lf.empirical_ntk(lf.mlp, params, x, subset=S + T), KS + KT, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(KS, sum(Kl[k] for k in S), rtol=1e-12, atol=1e-12)
    # cross kernel K(x1, x2) = J1 J2^T
    K12 = lf.empirical_ntk(lf.mlp, params, x[:5], x[5:])
    np.testing.assert_allclose(K12, full[:5, 5:], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        lf.empirical_ntk(lf.mlp, params, x, kind="adam")
    with pytest.raises(ValueError):
        lf.partition(params, ["layer9"])


def test_weyl_bounds_hold(small):
    params, x, _ = small
    Kl = lf.layer_kernels(lf.mlp, params, x)
    names = sorted(Kl)
    subsets = [c for k in range(1, 4) for c in itertools.combinations(names, k)]
    scale = float(jnp.linalg.eigvalsh(sum(Kl.values()))[-1])
    n = 0
    for S, T in itertools.combinations(subsets, 2):
        if set(S) & set(T):
            continue
        w = lf.weyl_bounds(sum(Kl[k] for k in S), sum(Kl[k] for k in T))
        n += 1
        for k in ("lower_violation", "upper_violation", "pairwise_violation"):
            assert w[k] <= 1e-10 * scale
        assert w["lam_max"] <= w["lam_max_bound"] * (1 + 1e-12)
        assert w["lam_min"] >= w["lam_min_bound"] * (1 - 1e-9) - 1e-12 * scale
    assert n == 25
    # the bounds are tight for commuting (diagonal) kernels
    w = lf.weyl_bounds(jnp.diag(jnp.array([3.0, 2.0, 1.0])), jnp.diag(jnp.array([1.0, 2.0, 3.0])))
    assert w["lam_max"] == pytest.approx(4.0) and w["lam_min"] == pytest.approx(4.0)


def test_closed_form_krr_is_the_linearized_minimizer(small):
    params, x, y = small
    for lam, subset in [(0.3, ["layer1", "layer3"])]:
        f, p0 = lf.restrict(lf.mlp, params, subset)
        J = lf.jacobian(f, p0, x)
        K = J @ J.T
        r = y - lf.mlp(params, x)
        delta = lf.krr_delta(J, K, r, lam)
        flat0, unravel = ravel_pytree(p0)
        obj = lf.regularized_objective(lf.linearize(f, p0), p0, x, y, lam)
        g = ravel_pytree(jax.grad(obj)(unravel(flat0 + delta)))[0]
        assert float(jnp.linalg.norm(g)) < 1e-12
        # the objective is strictly convex, so this is the minimiser: any perturbation increases it
        v = unravel(flat0 + delta + 1e-3 * jax.random.normal(jax.random.key(2), flat0.shape))
        assert float(obj(v)) > float(obj(unravel(flat0 + delta)))


def test_gd_on_linearized_model_follows_the_closed_form_path(small):
    params, x, y = small
    lam = 0.05
    J = lf.jacobian(lf.mlp, params, x)
    K = J @ J.T
    n = x.shape[0]
    eta = 1.0 / (float(jnp.linalg.eigvalsh(K)[-1]) / n + lam)
    r = y - lf.mlp(params, x)
    obj = lf.regularized_objective(lf.linearize(lf.mlp, params), params, x, y, lam)
    flat0 = ravel_pytree(params)[0]
    step = descent_step(obj, optax.sgd(eta))

    def record(state):  # J (theta_t - theta0) after every step
        new, _ = step(state)
        return new, J @ (ravel_pytree(new.params)[0] - flat0)

    tx = optax.sgd(eta)
    res = scan_loop(record, DescentState(params, tx.init(params)), 60, is_ok=lambda s, v: jnp.all(jnp.isfinite(v)))
    path = np.asarray(res.losses)
    for t in (1, 7, 60):
        np.testing.assert_allclose(path[t - 1], lf.gd_function_path(K, r, lam, eta, t), rtol=1e-9, atol=1e-12)
    # and converges to the KRR solution
    np.testing.assert_allclose(lf.gd_function_path(K, r, lam, eta, 10**6), J @ lf.krr_delta(J, K, r, lam), rtol=1e-9)


def test_sign_kernel_is_the_first_order_sign_gd_change(small):
    params, x, y = small
    K = lf.empirical_ntk(lf.mlp, params, x, kind="sign")
    flat0, unravel = ravel_pytree(params)
    i, eta = 3, 1e-6
    g = jax.grad(lambda v: 0.5 * (lf.mlp(unravel(v), x[i : i + 1])[0] - y[i]) ** 2)(flat0)
    res_i = lf.mlp(params, x[i : i + 1])[0] - y[i]
    df = lf.mlp(unravel(flat0 - eta * jnp.sign(g)), x) - lf.mlp(params, x)
    np.testing.assert_allclose(df, -eta * jnp.sign(res_i) * K[:, i], rtol=1e-3, atol=1e-12)
    assert not np.allclose(K, K.T)


def test_lora_adapter(small):
    params, x, _ = small
    lora = lf.lora_init(jax.random.key(1), params, ["layer1", "layer2"], rank=3)
    f = lf.lora_model(lf.mlp, params, alpha=2.0)
    np.testing.assert_allclose(f(lora, x), lf.mlp(params, x), rtol=1e-14)
    K = lf.empirical_ntk(f, lora, x)
    # at B = 0 only B moves f: K = (alpha/r)^2 sum_l tr(G_l(x) A_l^T A_l G_l(x')^T), G_l = df/dW_l
    expect = 0.0
    for name in ("layer1", "layer2"):
        G = jax.jacrev(lambda W, name=name: lf.mlp({**params, name: {**params[name], "W": W}}, x))(params[name]["W"])
        A = lora[name]["A"]
        GA = jnp.einsum("noi,ri->nor", G, A) * (2.0 / 3)
        expect = expect + jnp.einsum("nor,mor->nm", GA, GA)
    np.testing.assert_allclose(K, expect, rtol=1e-10, atol=1e-12)
    merged = lf.lora_merge(params, jax.tree.map(lambda a: a + 0.1, lora), alpha=2.0)
    assert not np.allclose(merged["layer1"]["W"], params["layer1"]["W"])
    assert np.allclose(merged["layer0"]["W"], params["layer0"]["W"])


@pytest.fixture(scope="module")
def pretrained():
    with jax.enable_x64(True):
        tasks = lf.make_tasks(jax.random.key(0), n_pre=256, n_ft=32, n_test=256)
        params0 = lf.pretrain(jax.random.key(1), tasks, sizes=(8, 32, 32, 32, 1), num_steps=800, learning_rate=5e-3)
        return tasks, params0


def test_nonlinear_approaches_linearized_as_lambda_grows(pretrained):
    tasks, params0 = pretrained
    rows = lf.lambda_sweep(params0, tasks, [1e-3, 1e-1, 10.0], num_steps=150)
    gaps = [r["rel_function_gap"] for r in rows]
    dists = [r["dist_nonlinear"] for r in rows]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.3 * gaps[0]  # measured ~0.1 at full size
    assert dists[0] > dists[1] > dists[2]
    for r in rows:
        assert r["grad_norm_nonlinear"] < 1e-3


def test_condition_number_ranks_finetuning_loss(pretrained):
    tasks, params0 = pretrained
    rows = lf.subset_sweep(params0, tasks, 1e-4, num_steps=200)
    assert len(rows) == 15
    rho = lf._spearman([np.log(r["cond"]) for r in rows], [r["train_loss"] for r in rows])
    assert rho > 0.6  # measured 0.94 at full size
    # the output layer alone is the worst conditioned and fits worst
    worst = max(rows, key=lambda r: r["cond"])
    assert worst["subset"] == ["layer3"]
    assert worst["train_loss"] == max(r["train_loss"] for r in rows)
