"""Fine-tuning with an l2 pull to the pretrained weights, explained by linearization.

Reproduces, on a small pretrained MLP, the claims of Rahimi Afzal, Esmaeilbeig, Soltanalian,
Ohannessian, "Linearization Explains Fine-Tuning in Large Language Models" (NeurIPS 2025, OpenReview
tdwRIP6NG2, arXiv 2602.08239) on mixvi's gradient machinery: every optimiser is an optax
``GradientTransformation`` (``optax.adam`` for pretraining, ``optax.sgd`` for fine-tuning by gradient
descent, ``optax.lbfgs`` with a backtracking line search for the exact regularised minimisers), each step is
``extras.rules.descent_step`` and the loop is ``mixvi.loop.scan_loop`` (``extras.rules.run_descent``).

Fine-tuning a subset S of the parameters on n points with squared loss:

    min_theta  R(theta) + (lam/2) ||theta_S - theta0_S||^2,     R(theta) = (1/2n) sum_i (f_theta(x_i) - y_i)^2

The linearized model f_lin(theta) = f_theta0 + J (theta - theta0) (J = d f_theta0(X) / d theta_S, n x p)
turns this into kernel ridge regression with the empirical NTK K_S = J J^T:

    theta - theta0 = J^T (K_S + n lam I)^{-1} (y - f0)              (push-through identity)

and gradient descent with step eta from theta0 has the closed form, at every step t,

    theta_t - theta0 = J^T (K_S + n lam I)^{-1} [I - (I - eta (K_S/n + lam I))^t] (y - f0).

For disjoint parameter sets S, T the kernels add, K_{S u T} = K_S + K_T (J is a column block
matrix), so Weyl's inequalities bound the combined spectrum: lam_i(K_S) + lam_min(K_T) <=
lam_i(K_{S u T}) <= lam_i(K_S) + lam_max(K_T) and lam_{i+j-1}(K_S + K_T) <= lam_i(K_S) + lam_j(K_T)
(eigenvalues in decreasing order). The paper's claims checked here: the nonlinear and linearized
fine-tuning solutions approach each other as lam grows (||theta* - theta0|| shrinks like 1/lam at
large lam); the NTK spectrum of the selected layers (its condition number) predicts fine-tuning
performance; the Weyl bounds.

Also provided: the sign-based kernel of sign-GD / early Adam, K^sign(x, x') = <grad f(x), sign grad f(x')>
(Malladi et al., "A Kernel-Based View of Language Model Fine-Tuning", arXiv 2210.05643), and a
LoRA-style adapter W = W0 + (alpha / r) B A (B = 0 at the start) whose NTK at the start is
K_LoRA(x, x') = (alpha / r)^2 tr(G(x) A^T A G(x')^T), G(x) = d f(x) / d W.

Run ``python -m extras.linearized_finetuning [--quick]``; results go to ``docs/extras/``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from extras._output import parse_args, save_outputs
from extras.rules import DescentState, armijo_descent, descent_step, run_descent
from mixvi.loop import scan_loop

PAPER = (
    "Rahimi Afzal, Esmaeilbeig, Soltanalian, Ohannessian, 'Linearization Explains Fine-Tuning in Large "
    "Language Models', NeurIPS 2025, OpenReview tdwRIP6NG2 (arXiv 2602.08239)"
)

Params = dict[str, dict[str, jax.Array]]
Model = Callable[[Any, jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------
# the model and the tasks


def init_mlp(key: jax.Array, sizes: Sequence[int]) -> Params:
    """MLP parameters {"layer0": {"W": (out, in), "b": (out,)}, ...} with N(0, 1/in) weights, zero biases."""
    keys = jax.random.split(key, len(sizes) - 1)
    return {
        f"layer{i}": {
            "W": jax.random.normal(k, (o, n)) / math.sqrt(n),
            "b": jnp.zeros(o),
        }
        for i, (k, n, o) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
    }


def mlp(params: Params, x: jax.Array) -> jax.Array:
    """f_theta(x): tanh hidden layers, a linear scalar output; x (n, d) -> (n,)."""
    names = sorted(params, key=lambda k: int(k.removeprefix("layer")))
    h = x
    for i, name in enumerate(names):
        h = h @ params[name]["W"].T + params[name]["b"]
        if i < len(names) - 1:
            h = jnp.tanh(h)
    return h[:, 0]


class Tasks(NamedTuple):
    """Pretraining data (x_pre, y_pre), the n fine-tuning points (x_ft, y_ft) and a test set
    (x_test, y_test) of the fine-tuning task."""

    x_pre: jax.Array
    y_pre: jax.Array
    x_ft: jax.Array
    y_ft: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def make_tasks(
    key: jax.Array, d: int = 8, n_pre: int = 1024, n_ft: int = 64, n_test: int = 512, shift: float = 0.3
) -> Tasks:
    """Pretraining task y = sin(2 u.x) + 0.5 tanh(2 v.x); the related fine-tuning task
    y = sin(2 u'.x) + (0.5 + shift) tanh(2 v.x) with u' = cos(shift) u + sin(shift) w, w a unit vector
    orthogonal to u (u, v random unit vectors, x ~ N(0, I_d))."""
    ku, kv, kw, k1, k2, k3 = jax.random.split(key, 6)
    u, v, w = (jax.random.normal(k, (d,)) for k in (ku, kv, kw))
    u, v = u / jnp.linalg.norm(u), v / jnp.linalg.norm(v)
    w = w - (w @ u) * u
    w = w / jnp.linalg.norm(w)
    u2 = math.cos(shift) * u + math.sin(shift) * w

    def pre(x):
        return jnp.sin(2 * x @ u) + 0.5 * jnp.tanh(2 * x @ v)

    def ft(x):
        return jnp.sin(2 * x @ u2) + (0.5 + shift) * jnp.tanh(2 * x @ v)

    x_pre, x_ft, x_test = (jax.random.normal(k, (n, d)) for k, n in ((k1, n_pre), (k2, n_ft), (k3, n_test)))
    return Tasks(x_pre, pre(x_pre), x_ft, ft(x_ft), x_test, ft(x_test))


def squared_loss(model: Model, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """R(theta) = (1/2n) sum_i (f_theta(x_i) - y_i)^2."""
    return 0.5 * jnp.mean((model(params, x) - y) ** 2)


def pretrain(key: jax.Array, tasks: Tasks, sizes: Sequence[int] = (8, 64, 64, 64, 1), num_steps: int = 3000,
             learning_rate: float = 3e-3) -> Params:
    """Full-batch Adam (``optax.adam``) on the pretraining task with ``extras.rules.run_descent``."""
    params = init_mlp(key, sizes)
    res = run_descent(lambda p: squared_loss(mlp, p, tasks.x_pre, tasks.y_pre), optax.adam(learning_rate), params,
                      num_steps)
    return res.state.params


# ----------------------------------------------------------------------------------------------
# kernels


def partition(params: Params, subset: Sequence[str]) -> tuple[Params, Params]:
    """Split ``params`` into the trainable layers ``subset`` and the frozen rest."""
    missing = set(subset) - set(params)
    if missing:
        raise ValueError(f"unknown layers {sorted(missing)}; have {sorted(params)}")
    return {k: params[k] for k in subset}, {k: v for k, v in params.items() if k not in subset}


def restrict(model: Model, params: Params, subset: Sequence[str] | None) -> tuple[Model, Params]:
    """The model as a function of the layers in ``subset`` only (the others frozen at ``params``)."""
    if subset is None:
        return model, params
    train, frozen = partition(params, subset)
    return (lambda p, x: model({**frozen, **p}, x)), train


def jacobian(model: Model, params: Any, x: jax.Array) -> jax.Array:
    """J = d f_theta(X) / d theta (n, p), theta flattened with ``ravel_pytree``."""
    flat, unravel = ravel_pytree(params)
    return jax.jit(jax.jacrev(lambda v, xx: model(unravel(v), xx)))(flat, x)


def empirical_ntk(
    model: Model,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    kind: str = "gd",
    subset: Sequence[str] | None = None,
) -> jax.Array:
    """The empirical NTK at ``params`` over the parameters of ``subset`` (all if None).

    ``kind='gd'``: K(x, x') = <grad f(x), grad f(x')> = J1 J2^T, the kernel of gradient descent
    (linearized fine-tuning is kernel (ridge) regression with it, arXiv 2602.08239).
    ``kind='sign'``: K(x, x') = <grad f(x), sign(grad f(x'))> = J1 sign(J2)^T, the kernel of sign-GD /
    the early phase of Adam (Malladi et al., arXiv 2210.05643): one sign-GD step of length eta on the
    single example x' with residual r changes f(x) by -eta sign(r) K(x, x') to first order. Not symmetric.
    """
    f, p = restrict(model, params, subset)
    J1 = jacobian(f, p, x1)
    J2 = J1 if x2 is None else jacobian(f, p, x2)
    if kind == "gd":
        return J1 @ J2.T
    if kind == "sign":
        return J1 @ jnp.sign(J2).T
    raise ValueError(f"kind must be 'gd' or 'sign', got {kind!r}")


def layer_kernels(model: Model, params: Params, x: jax.Array) -> dict[str, jax.Array]:
    """K_l = J_l J_l^T for every layer l (from one Jacobian): K_S = sum_{l in S} K_l."""
    J = jacobian(model, params, x)
    out = {}
    for name in params:
        mask, _ = ravel_pytree({k: jax.tree.map(lambda a, on=(k == name): jnp.full_like(a, on), v)
                                for k, v in params.items()})
        cols = np.nonzero(np.asarray(mask))[0]
        out[name] = J[:, cols] @ J[:, cols].T
    return out


def spectrum(K: jax.Array) -> dict:
    """Eigenvalues of a symmetric PSD kernel (decreasing), lam_max, lam_min, condition number."""
    ev = np.sort(np.linalg.eigvalsh(np.asarray(K, np.float64)))[::-1]
    lo = max(float(ev[-1]), 0.0)
    return {
        "eigvals": ev,
        "lam_max": float(ev[0]),
        "lam_min": lo,
        "cond": float(ev[0] / lo) if lo > 0 else math.inf,
    }


def weyl_bounds(KS: jax.Array, KT: jax.Array) -> dict:
    """Check K = K_S + K_T against Weyl's inequalities (eigenvalues decreasing, 1-based i, j):
    lam_i(K_S) + lam_n(K_T) <= lam_i(K) <= lam_i(K_S) + lam_1(K_T), the same with S and T swapped, and
    lam_{i+j-1}(K) <= lam_i(K_S) + lam_j(K_T). Returns the largest violation of each family (<= 0 when
    they hold, up to rounding) and the implied bound on the condition number of K."""
    a = np.sort(np.linalg.eigvalsh(np.asarray(KS, np.float64)))[::-1]
    b = np.sort(np.linalg.eigvalsh(np.asarray(KT, np.float64)))[::-1]
    c = np.sort(np.linalg.eigvalsh(np.asarray(KS, np.float64) + np.asarray(KT, np.float64)))[::-1]
    n = len(c)
    lower = max(np.max(a + b[-1] - c), np.max(b + a[-1] - c))
    upper = max(np.max(c - a - b[0]), np.max(c - b - a[0]))
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ok = i + j < n
    pair = np.max(np.where(ok, c[np.minimum(i + j, n - 1)] - a[i] - b[j], -np.inf))
    lo = max(a[-1] + b[-1], a[-1], b[-1])
    return {
        "lower_violation": float(lower),
        "upper_violation": float(upper),
        "pairwise_violation": float(pair),
        "lam_max": float(c[0]),
        "lam_min": float(c[-1]),
        "lam_max_bound": float(a[0] + b[0]),
        "lam_min_bound": float(lo),
        "cond": float(c[0] / c[-1]) if c[-1] > 0 else math.inf,
        "cond_bound": float((a[0] + b[0]) / lo) if lo > 0 else math.inf,
    }


# ----------------------------------------------------------------------------------------------
# linearized fine-tuning in closed form


def krr_delta(J: jax.Array, K: jax.Array, residual: jax.Array, lam: float) -> jax.Array:
    """theta* - theta0 = J^T (K + n lam I)^{-1} (y - f0): the minimiser of the linearized objective
    (1/2n)||J d - r||^2 + (lam/2)||d||^2 (kernel ridge regression with the empirical NTK)."""
    n = K.shape[0]
    return J.T @ jnp.linalg.solve(K + n * lam * jnp.eye(n, dtype=K.dtype), residual)


def gd_function_path(K: jax.Array, residual: jax.Array, lam: float, eta: float, t: int | jax.Array) -> jax.Array:
    """J (theta_t - theta0) on the training inputs after t steps of GD with step eta on the linearized
    objective from theta0: K (K + n lam I)^{-1} [I - (I - eta (K/n + lam I))^t] (y - f0)."""
    n = K.shape[0]
    w, U = jnp.linalg.eigh(K)
    h = w / n + lam
    coef = w / (w + n * lam) * (1.0 - (1.0 - eta * h) ** t)
    return U @ (coef * (U.T @ residual))


def linearize(model: Model, params0: Any) -> Model:
    """f_lin(theta, x) = f_theta0(x) + <grad f_theta0(x), theta - theta0> (a forward-mode jvp)."""

    def f_lin(params: Any, x: jax.Array) -> jax.Array:
        delta = jax.tree.map(lambda a, b: a - b, params, params0)
        f0, df = jax.jvp(lambda p: model(p, x), (params0,), (delta,))
        return f0 + df

    return f_lin


def regularized_objective(model: Model, params0: Any, x: jax.Array, y: jax.Array, lam: float) -> Callable:
    """theta -> R(theta) + (lam/2)||theta - theta0||^2 (the paper's explicit pull to the pretrained weights)."""

    def obj(params: Any) -> jax.Array:
        sq = sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params0)))
        return squared_loss(model, params, x, y) + 0.5 * lam * sq

    return obj


def lbfgs(memory_size: int = 10) -> optax.GradientTransformationExtraArgs:
    """``optax.lbfgs`` with a backtracking (Armijo) line search instead of the default zoom search
    (the same minimisers here, and about half the compile time)."""
    return optax.lbfgs(
        memory_size=memory_size,
        linesearch=optax.scale_by_backtracking_linesearch(max_backtracking_steps=20, store_grad=True),
    )


def finetune(
    model: Model,
    params0: Params,
    x: jax.Array,
    y: jax.Array,
    lams: float | Sequence[float],
    *,
    subset: Sequence[str] | None = None,
    linearized: bool = False,
    tx: optax.GradientTransformation | None = None,
    num_steps: int = 200,
) -> tuple[Params, np.ndarray]:
    """Minimise R + (lam/2)||theta_S - theta0_S||^2 over the layers ``subset`` (all if None) of the model
    (``linearized=True``: of its linearization at theta0) with ``tx`` (default :func:`lbfgs`, whose line
    search gets value and gradient from ``extras.rules.descent_step``) for ``num_steps`` steps,
    for every lam at once (vmapped over lam, one ``mixvi.loop.scan_loop``). Returns the fine-tuned full
    parameters (leading axis = lam when ``lams`` is a sequence) and the objective per step (T, L)."""
    single = np.ndim(lams) == 0
    lam_arr = jnp.atleast_1d(jnp.asarray(lams, dtype=jax.tree.leaves(params0)[0].dtype))
    f, p0 = restrict(model, params0, subset)
    if linearized:
        f = linearize(f, p0)
    tx = lbfgs() if tx is None else tx

    def step(carry):
        state, lam = carry
        new, loss = jax.vmap(lambda st, lm: descent_step(regularized_objective(f, p0, x, y, lm), tx)(st))(state, lam)
        return (new, lam), loss

    state0 = jax.vmap(lambda _: DescentState(p0, tx.init(p0)))(lam_arr)
    res = scan_loop(step, (state0, lam_arr), num_steps, is_ok=lambda c, loss: jnp.all(jnp.isfinite(loss)))
    trained = res.state[0].params
    frozen = {k: jax.tree.map(lambda a: jnp.broadcast_to(a, (lam_arr.shape[0], *a.shape)), v)
              for k, v in params0.items() if k not in trained}
    out = {**frozen, **trained}
    if single:
        return jax.tree.map(lambda a: a[0], out), np.asarray(res.losses)[:, 0]
    return out, np.asarray(res.losses)


# ----------------------------------------------------------------------------------------------
# LoRA


def lora_init(key: jax.Array, params: Params, layers: Sequence[str], rank: int) -> Params:
    """Adapters {"layerX": {"A": (r, in) ~ N(0, 1/in), "B": (out, r) = 0}} for the given layers."""
    keys = jax.random.split(key, len(layers))
    out = {}
    for k, name in zip(keys, layers):
        o, n = params[name]["W"].shape
        out[name] = {"A": jax.random.normal(k, (rank, n)) / math.sqrt(n), "B": jnp.zeros((o, rank))}
    return out


def lora_merge(params0: Params, lora: Params, alpha: float = 1.0) -> Params:
    """W = W0 + (alpha / r) B A on the adapted layers (biases and other layers unchanged)."""
    out = dict(params0)
    for name, ad in lora.items():
        r = ad["A"].shape[0]
        out[name] = {**params0[name], "W": params0[name]["W"] + (alpha / r) * ad["B"] @ ad["A"]}
    return out


def lora_model(model: Model, params0: Params, alpha: float = 1.0) -> Model:
    """The model as a function of the adapters: (lora, x) -> f_{merge(theta0, lora)}(x)."""
    return lambda lora, x: model(lora_merge(params0, lora, alpha), x)


# ----------------------------------------------------------------------------------------------
# the experiment


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra = np.argsort(np.argsort(np.asarray(a)))
    rb = np.argsort(np.argsort(np.asarray(b)))
    return float(np.corrcoef(ra, rb)[0, 1])


def lambda_sweep(params0: Params, tasks: Tasks, lams: Sequence[float], num_steps: int = 300) -> list[dict]:
    """Nonlinear fine-tuning of all layers at each lam (the L-BFGS minimiser, ``finetune``) vs the
    linearized one (the closed-form KRR solution ``krr_delta``): relative gap of the functions on the
    test inputs and of the parameter displacements, ||theta - theta0||, losses, and the gradient norm
    of the nonlinear objective at the returned point (convergence check)."""
    x, y = tasks.x_ft, tasks.y_ft
    J = jacobian(mlp, params0, x)
    K = J @ J.T
    r = y - mlp(params0, x)
    flat0, unravel = ravel_pytree(params0)
    f_lin_all = linearize(mlp, params0)
    P_nl, _ = finetune(mlp, params0, x, y, list(lams), num_steps=num_steps)
    rows = []
    for i, lam in enumerate(lams):
        p_nl = jax.tree.map(lambda a, i=i: a[i], P_nl)
        dlin = krr_delta(J, K, r, lam)
        p_lin = unravel(flat0 + dlin)
        f0t = mlp(params0, tasks.x_test)
        fnl, flin = mlp(p_nl, tasks.x_test), f_lin_all(p_lin, tasks.x_test)
        dnl = ravel_pytree(p_nl)[0] - flat0
        g = jax.grad(regularized_objective(mlp, params0, x, y, lam))(p_nl)
        rows.append({
            "lam": lam,
            "rel_function_gap": float(jnp.linalg.norm(fnl - flin) / jnp.linalg.norm(flin - f0t)),
            "rel_param_gap": float(jnp.linalg.norm(dnl - dlin) / jnp.linalg.norm(dlin)),
            "grad_norm_nonlinear": float(ravel_pytree(g)[0] @ ravel_pytree(g)[0]) ** 0.5,
            "dist_nonlinear": float(jnp.linalg.norm(dnl)),
            "dist_linearized": float(jnp.linalg.norm(dlin)),
            "train_loss_nonlinear": float(squared_loss(mlp, p_nl, x, y)),
            "train_loss_linearized": float(squared_loss(f_lin_all, p_lin, x, y)),
            "test_loss_nonlinear": float(squared_loss(mlp, p_nl, tasks.x_test, tasks.y_test)),
            "test_loss_linearized": float(squared_loss(f_lin_all, p_lin, tasks.x_test, tasks.y_test)),
        })
    return rows


def subset_sweep(
    params0: Params, tasks: Tasks, lam: float, num_steps: int, layers: Sequence[str] | None = None
) -> list[dict]:
    """For every non-empty subset S of the layers: the spectrum of K_S = sum_{l in S} K_l on the
    fine-tuning inputs, and nonlinear fine-tuning of S alone by gradient descent
    (``optax.sgd(eta_S)``, eta_S = 1 / (lam_max(K_S)/n + lam), the same normalised step for every S),
    all subsets at once (masked updates, vmapped ``extras.rules.descent_step``, one ``scan_loop``)."""
    x, y = tasks.x_ft, tasks.y_ft
    n = x.shape[0]
    layers = sorted(params0) if layers is None else list(layers)
    Kl = layer_kernels(mlp, params0, x)
    subsets = [c for k in range(1, len(layers) + 1) for c in itertools.combinations(layers, k)]
    specs = [spectrum(sum(Kl[name] for name in S)) for S in subsets]
    etas = jnp.asarray([1.0 / (s["lam_max"] / n + lam) for s in specs])
    masks = [{k: jax.tree.map(lambda a, on=(k in S): jnp.full_like(a, float(on)), v) for k, v in params0.items()}
             for S in subsets]
    masks = jax.tree.map(lambda *m: jnp.stack(m), *masks)
    obj = regularized_objective(mlp, params0, x, y, lam)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)

    def masked_obj(params, mask):
        # only the layers of S move: theta = theta0 + mask * (theta - theta0)
        return obj(jax.tree.map(lambda p, p0, m: p0 + m * (p - p0), params, params0, mask))

    def init(mask, eta):
        s = tx.init(params0)
        return DescentState(params0, s._replace(hyperparams={**s.hyperparams, "learning_rate": eta}))

    def step(carry):
        state, mask = carry
        new, loss = jax.vmap(lambda st, m: descent_step(lambda p: masked_obj(p, m), tx)(st))(state, mask)
        return (new, mask), loss

    state0 = jax.vmap(init)(masks, etas)
    res = scan_loop(step, (state0, masks), num_steps, is_ok=lambda c, loss: jnp.all(jnp.isfinite(loss)))
    final = res.state[0].params
    rows = []
    for i, S in enumerate(subsets):
        p = jax.tree.map(lambda a, i=i: a[i], final)
        rows.append({
            "subset": list(S),
            "num_params": int(sum(ravel_pytree(params0[k])[0].size for k in S)),
            "lam_max": specs[i]["lam_max"],
            "lam_min": specs[i]["lam_min"],
            "cond": specs[i]["cond"],
            "eta": float(etas[i]),
            "train_loss": float(squared_loss(mlp, p, x, y)),
            "test_loss": float(squared_loss(mlp, p, tasks.x_test, tasks.y_test)),
        })
    return rows


def _jsonable(obj: Any) -> Any:
    """numpy scalars -> float, +-inf / nan -> the strings 'inf' / '-inf' / 'nan' (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else str(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def main(argv: list[str] | None = None) -> dict:
    """``python -m extras.linearized_finetuning [--quick] [--out DIR]``: the lam sweep (nonlinear vs
    linearized), the layer-subset sweep (NTK spectrum vs fine-tuning loss), the Weyl checks; JSON + PNG."""
    args = parse_args(main.__doc__, argv, "fewer lam values and steps (< 30 s)")
    t0 = time.time()
    q = args.quick
    with jax.enable_x64(True):
        tasks = make_tasks(jax.random.key(0))
        params0 = pretrain(jax.random.key(1), tasks, num_steps=1000 if q else 3000)
        pre_loss = float(squared_loss(mlp, params0, tasks.x_pre, tasks.y_pre))
        ft0 = float(squared_loss(mlp, params0, tasks.x_ft, tasks.y_ft))
        results: dict = {"paper": PAPER, "quick": q, "pretrain_loss": pre_loss, "ft_loss_at_theta0": ft0}
        print(f"{PAPER}\npretrained MLP 8-64-64-64-1 (tanh): pretraining loss {pre_loss:.2e}; "
              f"fine-tuning loss at theta0 {ft0:.3f} (n = 64)")
        lams = [1e-3, 1e-2, 1e-1, 1.0] if q else [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
        rows = lambda_sweep(params0, tasks, lams, num_steps=100 if q else 200)
        results["lambda_sweep"] = rows
        print("\nnonlinear (L-BFGS minimiser) vs linearized (closed-form KRR) fine-tuning of all layers")
        print(f"{'lam':>7} | {'rel f-gap':>9} {'rel θ-gap':>9} {'|θ-θ0| nl':>9} {'|θ-θ0| lin':>10} | "
              f"{'train nl':>9} {'train lin':>9} {'test nl':>8} {'test lin':>8} | {'|grad| nl':>9}")
        for r in rows:
            print(f"{r['lam']:7.0e} | {r['rel_function_gap']:9.2e} {r['rel_param_gap']:9.2e} {r['dist_nonlinear']:9.3f} "
                  f"{r['dist_linearized']:10.3f} | {r['train_loss_nonlinear']:9.2e} {r['train_loss_linearized']:9.2e} "
                  f"{r['test_loss_nonlinear']:8.4f} {r['test_loss_linearized']:8.4f} | {r['grad_norm_nonlinear']:9.1e}")
        lam_sub = 1e-4
        srows = subset_sweep(params0, tasks, lam_sub, num_steps=100 if q else 300)
        results["subset_sweep"] = {"lam": lam_sub, "rows": srows}
        corr = {
            f"{a} vs {b}": _spearman([math.log(r[a]) if a == "cond" else -math.log(r[a]) for r in srows],
                                     [r[b] for r in srows])
            for a in ("cond", "lam_min") for b in ("train_loss", "test_loss")
        }
        results["subset_sweep"]["spearman"] = corr
        print(f"\nlayer subsets: NTK spectrum on the 64 fine-tuning inputs and GD fine-tuning (lam = {lam_sub:g}, "
              f"eta = 1/(lam_max/n + lam), {100 if q else 300} steps)")
        print(f"{'subset':>14} {'params':>6} | {'lam_max':>9} {'lam_min':>9} {'cond':>9} | {'train':>8} {'test':>8}")
        for r in sorted(srows, key=lambda r: r["cond"]):
            print(f"{','.join(s[-1] for s in r['subset']):>14} {r['num_params']:6d} | {r['lam_max']:9.3g} "
                  f"{r['lam_min']:9.3g} {r['cond']:9.3g} | {r['train_loss']:8.4f} {r['test_loss']:8.4f}")
        print("Spearman rank correlations (log cond, -log lam_min: larger = worse conditioned):",
              {k: round(v, 2) for k, v in corr.items()})
        # Weyl bounds for every pair of disjoint subsets of the layers
        Kl = layer_kernels(mlp, params0, tasks.x_ft)
        layers = sorted(Kl)
        subsets = [c for k in range(1, len(layers)) for c in itertools.combinations(layers, k)]
        worst = {"lower_violation": -math.inf, "upper_violation": -math.inf, "pairwise_violation": -math.inf}
        num_pairs = 0
        for S, T in itertools.combinations(subsets, 2):
            if set(S) & set(T):
                continue
            w = weyl_bounds(sum(Kl[k] for k in S), sum(Kl[k] for k in T))
            num_pairs += 1
            for k in worst:
                worst[k] = max(worst[k], w[k])
        scale = max(float(jnp.linalg.eigvalsh(sum(Kl.values()))[-1]), 1.0)
        results["weyl"] = {"num_pairs": num_pairs, "max_violation": worst, "scale": scale}
        print(f"\nWeyl: {num_pairs} disjoint pairs, largest violations (<= 0 holds; kernel scale {scale:.3g}):",
              {k: f"{v:.2e}" for k, v in worst.items()})
        # LoRA (rank 4) on each layer: kernel spectrum and GD fine-tuning of the adapters
        lora_rows = []
        n = tasks.x_ft.shape[0]
        steps = 100 if q else 300
        for name in layers:
            lora = lora_init(jax.random.key(2), params0, [name], rank=4)
            f = lora_model(mlp, params0)
            sp = spectrum(empirical_ntk(f, lora, tasks.x_ft))
            # the bilinear B A is not safe at the kernel's step 1/(lam_max/n + lam) once B has grown:
            # Armijo backtracking from that step (extras.rules.armijo_descent)
            eta = 1.0 / (sp["lam_max"] / n + lam_sub)
            fitted, _ = finetune(f, lora, tasks.x_ft, tasks.y_ft, lam_sub, tx=armijo_descent(eta), num_steps=steps)
            lora_rows.append({
                "layer": name, "lam_max": sp["lam_max"], "lam_min": sp["lam_min"], "cond": sp["cond"],
                "train_loss": float(squared_loss(f, fitted, tasks.x_ft, tasks.y_ft)),
                "test_loss": float(squared_loss(f, fitted, tasks.x_test, tasks.y_test)),
            })
        results["lora_rank4"] = lora_rows
        print(f"\nLoRA rank 4 on one layer (W = W0 + B A / 4, B = 0 at the start), Armijo GD on (A, B) from eta = 1/(lam_max/n + lam), {steps} steps")
        print(f"{'layer':>7} | {'lam_max':>9} {'lam_min':>9} {'cond':>9} | {'train':>8} {'test':>8}")
        for r in lora_rows:
            print(f"{r['layer']:>7} | {r['lam_max']:9.3g} {r['lam_min']:9.3g} {r['cond']:9.3g} | "
                  f"{r['train_loss']:8.4f} {r['test_loss']:8.4f}")
        # the sign (Adam-like) kernel of the last hidden layer: asymmetric, not PSD
        K_sign = empirical_ntk(mlp, params0, tasks.x_ft, kind="sign", subset=["layer2"])
        ev = np.linalg.eigvalsh(np.asarray(0.5 * (K_sign + K_sign.T)))
        results["sign_kernel_layer2"] = {
            "asymmetry": float(jnp.linalg.norm(K_sign - K_sign.T) / jnp.linalg.norm(K_sign)),
            "sym_eig_min": float(ev[0]),
            "sym_eig_max": float(ev[-1]),
            "num_negative": int(np.sum(ev < 0)),
        }
        sk = results["sign_kernel_layer2"]
        print(f"sign kernel of layer2: ||K - K^T||/||K|| = {sk['asymmetry']:.2f}, symmetric part eigenvalues in "
              f"[{sk['sym_eig_min']:.3g}, {sk['sym_eig_max']:.3g}] ({sk['num_negative']} negative)")
    save_outputs("linearized_finetuning", q, args.out, results, t0, lambda png: _plot(results, png), to_json=_jsonable)
    return results


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    rows = results["lambda_sweep"]
    lams = [r["lam"] for r in rows]
    ax[0].loglog(lams, [r["rel_function_gap"] for r in rows], "o-", label="‖f_nl − f_lin‖ / ‖f_lin − f₀‖ (test inputs)")
    ax[0].loglog(lams, [r["rel_param_gap"] for r in rows], "s-", label="‖θ_nl − θ_lin‖ / ‖θ_lin − θ₀‖")
    ax[0].loglog(lams, [r["dist_nonlinear"] for r in rows], "^--", label="‖θ_nl − θ₀‖")
    ax[0].set(xlabel="λ", title="nonlinear (L-BFGS) vs linearized (KRR) fine-tuning\nall layers, n = 64")
    ax[0].legend(fontsize=7)
    srows = results["subset_sweep"]["rows"]
    cond = [r["cond"] for r in srows]
    ax[1].loglog(cond, [r["train_loss"] for r in srows], "o", label="train loss")
    ax[1].loglog(cond, [r["test_loss"] for r in srows], "s", mfc="none", label="test loss")
    for r in srows:
        ax[1].annotate(",".join(s[-1] for s in r["subset"]), (r["cond"], r["train_loss"]), fontsize=6)
    rho = results["subset_sweep"]["spearman"]
    ax[1].set(xlabel="condition number of K_S", ylabel="loss after GD fine-tuning",
              title=f"15 layer subsets: cond(K_S) vs loss\n(Spearman {rho['cond vs train_loss']:.2f} train, "
                    f"{rho['cond vs test_loss']:.2f} test)")
    ax[1].legend(fontsize=8)
    lmin = [r["lam_min"] for r in srows]
    ax[2].loglog(lmin, [r["train_loss"] for r in srows], "o", label="train loss")
    ax[2].loglog(lmin, [r["test_loss"] for r in srows], "s", mfc="none", label="test loss")
    ax[2].set(xlabel="λ_min(K_S)", title=f"15 layer subsets: λ_min(K_S) vs loss\n(Spearman of −log λ_min: "
              f"{rho['lam_min vs train_loss']:.2f} train, {rho['lam_min vs test_loss']:.2f} test)")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
