"""Certified unlearning of nonconvex models by rewinding (Rewind-to-Delete, R2D).

Reproduces Mu, Klabjan, "Rewind-to-Delete: certified machine unlearning for nonconvex functions"
(NeurIPS 2025, arXiv 2409.09778) on mixvi's gradient machinery (GD is ``optax.sgd(eta)``, steps are
``extras.rules.descent_step``, loops ``mixvi.loop.scan_loop``).

Learning: full-batch GD theta_{t+1} = theta_t - eta grad f_D(theta_t), t < T, from a fixed theta_0,
keeping the checkpoint theta_{T-K}. Unlearning the set F (|F| = m of n points): restart from
theta_{T-K}, run K GD steps on f_{D'} (D' = D minus F), release theta~ = theta'_K + N(0, sigma^2 I).
The reference is retraining, T GD steps on f_{D'} from theta_0, plus the same noise.

Sensitivity (derived in docs/extras/unlearning.md): if every per-point loss is G-Lipschitz and f_D,
f_{D'} are L-smooth, then ||grad f_D - grad f_{D'}|| <= 2 m G / n, each GD map is (1 + eta L)-Lipschitz,
and the distance between the R2D output and the retrained model is at most

    Delta_K = (2 m G / (n L)) ((1 + eta L)^T - (1 + eta L)^K),                                   (S)

which is 0 at K = T (rewinding to theta_0 is retraining). A Gaussian mechanism with sensitivity
Delta_K then makes the two output distributions (eps, delta)-indistinguishable: classical
calibration sigma = Delta sqrt(2 ln(1.25/delta))/eps (eps < 1), or the analytic Gaussian mechanism
(Balle and Wang, ICML 2018, arXiv 1805.06530): the smallest sigma with

    Phi(Delta/(2 sigma) - eps sigma/Delta) - e^eps Phi(-Delta/(2 sigma) - eps sigma/Delta) <= delta.

Checkpoint recovery (no checkpoint kept): theta_t = argmin_z { -f_D(z) + ||z - theta_{t+1}||^2/(2 eta) }
(its stationarity condition is theta_{t+1} = z - eta grad f_D(z), the forward step), strongly convex
for eta L < 1; GD with step eta on it is the contraction z <- theta_{t+1} + eta grad f_D(z).

Model: linear scores with the nonconvex sigmoid loss l(theta; x, y) = sigmoid(-y x^T theta) plus
(lam/2)||theta||^2, ||x|| = 1: G = 1/4 (the regulariser cancels in grad f_D - grad f_{D'}) and
L = 1/(6 sqrt 3) + lam (max |sigmoid''| = 1/(6 sqrt 3)).

Run ``python -m extras.unlearning [--quick]``; results go to ``docs/extras/``.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import log_ndtr, ndtr

from extras._output import parse_args, save_outputs
from extras.rules import DescentState, descent_step
from mixvi.loop import scan_loop

PAPER = "Mu, Klabjan, 'Rewind-to-Delete: Certified Machine Unlearning for Nonconvex Functions', arXiv 2409.09778"
SIGMOID_G = 0.25
SIGMOID_L = 1.0 / (6.0 * math.sqrt(3.0))


# ----------------------------------------------------------------------------------------------- data and loss
def make_users(key: jax.Array, num_users: int = 20, per_user: int = 50, d: int = 20, *, tau: float = 1.0,
               cluster: float = 2.0, flip: float = 0.1, num_heldout: int = 10, per_user_test: int = 50) -> dict:
    """User-level data. User u has a teacher w_u = w* + tau xi_u and a feature centre mu_u (w*, xi_u ~ N(0, I_d),
    mu_u uniform on the unit sphere); its points are x = (cluster mu_u + z/sqrt(d))/||.|| (z ~ N(0, I_d), so
    ||x|| = 1) with labels y = sign(x^T w_u) flipped with probability ``flip``. Returns training points
    X (U, P, d), y (U, P), fresh test points of the same users X_test, y_test, and points of
    ``num_heldout`` users never trained on, X_out, y_out (the non-members of the membership attack)."""
    k0, k1, k2, k3, k4 = jax.random.split(key, 5)
    U = num_users + num_heldout
    P = per_user + per_user_test
    w = jax.random.normal(k0, (d,))[None] + tau * jax.random.normal(k1, (U, d))
    mu = jax.random.normal(k2, (U, d))
    mu = mu / jnp.linalg.norm(mu, axis=-1, keepdims=True)
    X = cluster * mu[:, None, :] + jax.random.normal(k3, (U, P, d)) / math.sqrt(d)
    X = X / jnp.linalg.norm(X, axis=-1, keepdims=True)
    y = jnp.sign(jnp.einsum("upd,ud->up", X, w))
    y = jnp.where(jax.random.bernoulli(k4, flip, y.shape), -y, y)
    tr, out = slice(0, num_users), slice(num_users, U)
    return {"X": X[tr, :per_user], "y": y[tr, :per_user], "X_test": X[tr, per_user:], "y_test": y[tr, per_user:],
            "X_out": X[out, :per_user], "y_out": y[out, :per_user]}


def point_losses(theta: jax.Array, X: jax.Array, y: jax.Array) -> jax.Array:
    """l(theta; x, y) = sigmoid(-y x^T theta) for every point (any leading shape)."""
    return jax.nn.sigmoid(-y * (X @ theta))


def objective(theta: jax.Array, X: jax.Array, y: jax.Array, mask: jax.Array, lam: float) -> jax.Array:
    """f(theta) = (1/|S|) sum_{i in S} sigmoid(-y_i x_i^T theta) + (lam/2)||theta||^2 over the points with
    ``mask`` = True (the data set D, or D' = D minus F)."""
    m = mask.astype(theta.dtype)
    return jnp.sum(m * point_losses(theta, X, y)) / jnp.sum(m) + 0.5 * lam * jnp.dot(theta, theta)


def smoothness_constants(lam: float) -> tuple[float, float]:
    """(G, L) for the sigmoid loss with ||x|| <= 1: G = 1/4, L = 1/(6 sqrt 3) + lam."""
    return SIGMOID_G, SIGMOID_L + lam


# ----------------------------------------------------------------------------------------------- GD runs
def run_gd(theta0: jax.Array, X: jax.Array, y: jax.Array, masks: jax.Array, *, lam: float, eta: float,
           num_steps: int) -> np.ndarray:
    """Full-batch GD theta_{t+1} = theta_t - eta grad f_S(theta_t) (``optax.sgd(eta)``, ``extras.rules.descent_step``)
    for a batch of starts ``theta0`` (B, d) and data sets ``masks`` (B, U, P), all in one vmapped
    ``mixvi.loop.scan_loop``. Returns the iterates theta_0 .. theta_{num_steps}, shape (num_steps + 1, B, d)."""
    tx = optax.sgd(eta)
    theta0 = jnp.asarray(theta0)

    def one(state, mask):
        return descent_step(partial(objective, X=X, y=y, mask=mask, lam=lam), tx)(state)

    def step(states):
        new, _ = jax.vmap(one)(states, masks)
        return new, new.params

    init = jax.vmap(lambda th: DescentState(th, tx.init(th)))(theta0)
    res = scan_loop(step, init, num_steps, is_ok=lambda s, v: jnp.all(jnp.isfinite(v)))
    return np.concatenate([np.asarray(theta0)[None], np.asarray(res.losses)])


def rewind_all(train_path: np.ndarray, X: jax.Array, y: jax.Array, retain: jax.Array, *, lam: float,
               eta: float) -> np.ndarray:
    """GD on each retained set D'_j (``retain`` (J, U, P)) from every checkpoint theta_t (t = 0..T) of the
    training path, T steps each, in one batch: out[s, t, j] is s steps from theta_t on D'_j, so
    R2D with K rewound steps is out[K, T - K, j], D2D with K steps is out[K, T, j] and retraining is
    out[T, 0, j] (= R2D with K = T). Shape (T + 1, T + 1, J, d)."""
    T1, d = train_path.shape
    J = retain.shape[0]
    starts = np.repeat(train_path[:, None, :], J, axis=1).reshape(T1 * J, d)
    masks = jnp.tile(retain, (T1, 1, 1))
    out = run_gd(jnp.asarray(starts), X, y, masks, lam=lam, eta=eta, num_steps=T1 - 1)
    return out.reshape(T1, T1, J, d)


# ----------------------------------------------------------------------------------------------- sensitivity and mechanisms
def sensitivity(T: int, K: int | np.ndarray, *, eta: float, L: float, G: float, m: int, n: int) -> np.ndarray:
    """Delta_K = (2 m G/(n L)) ((1 + eta L)^T - (1 + eta L)^K): bound (S) on ||R2D output - retrained model||
    after rewinding K of T GD steps (arXiv 2409.09778; derivation in docs/extras/unlearning.md)."""
    K = np.asarray(K, float)
    a = 1.0 + eta * L
    return 2.0 * m * G / (n * L) * (a**T - a**K)


def classical_sigma(eps: float | np.ndarray, delta: float, sens: float | np.ndarray) -> np.ndarray:
    """sigma = Delta sqrt(2 ln(1.25/delta))/eps: the classical Gaussian mechanism (valid for eps < 1)."""
    return np.asarray(sens) * math.sqrt(2.0 * math.log(1.25 / delta)) / np.asarray(eps)


def classical_epsilon(sigma: float | np.ndarray, delta: float, sens: float | np.ndarray) -> np.ndarray:
    """eps = Delta sqrt(2 ln(1.25/delta))/sigma, the inverse of :func:`classical_sigma` (a guarantee only if < 1)."""
    return np.asarray(sens) * math.sqrt(2.0 * math.log(1.25 / delta)) / np.asarray(sigma)


def analytic_delta(eps: jax.Array, ratio: jax.Array) -> jax.Array:
    """delta(eps) = Phi(a/2 - eps/a) - e^eps Phi(-a/2 - eps/a), a = Delta/sigma: the exact (tight) delta of
    the Gaussian mechanism at eps (Balle and Wang 2018, Theorem 8)."""
    eps, a = jnp.asarray(eps, jnp.float64), jnp.asarray(ratio, jnp.float64)
    a = jnp.maximum(a, 1e-300)
    return ndtr(a / 2 - eps / a) - jnp.exp(eps + log_ndtr(-a / 2 - eps / a))


@jax.jit
def _largest_ratio(eps: jax.Array, delta: jax.Array) -> jax.Array:
    # largest a = Delta/sigma in [1e-8, 1e4] with analytic_delta(eps, a) <= delta (increasing in a): log bisection
    def body(_, lohi):
        lo, hi = lohi
        mid = jnp.sqrt(lo * hi)
        bad = analytic_delta(eps, mid) > delta
        return jnp.where(bad, lo, mid), jnp.where(bad, mid, hi)

    return jax.lax.fori_loop(0, 200, body, (jnp.asarray(1e-8, jnp.float64), jnp.asarray(1e4, jnp.float64)))[0]


@jax.jit
def _smallest_eps(ratio: jax.Array, delta: jax.Array) -> jax.Array:
    # smallest eps in [0, 1e8] with analytic_delta(eps, a) <= delta (decreasing in eps): bisection
    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        bad = analytic_delta(mid, ratio) > delta
        return jnp.where(bad, mid, lo), jnp.where(bad, hi, mid)

    return jax.lax.fori_loop(0, 200, body, (jnp.asarray(0.0, jnp.float64), jnp.asarray(1e8, jnp.float64)))[1]


def analytic_sigma(eps: float, delta: float, sens: float) -> float:
    """The smallest sigma with analytic_delta(eps, Delta/sigma) <= delta (Balle and Wang 2018, Algorithm 1
    replaced by a bisection on a = Delta/sigma, since delta(eps) increases with a). 0 if Delta = 0."""
    if sens == 0:
        return 0.0
    with jax.enable_x64(True):
        return float(sens / _largest_ratio(jnp.float64(eps), jnp.float64(delta)))


def analytic_epsilon(sigma: float, delta: float, sens: float) -> float:
    """The smallest eps with analytic_delta(eps, Delta/sigma) <= delta: the inverse of :func:`analytic_sigma`
    (delta(eps) decreases with eps). 0 if Delta = 0; inf if even eps = 1e8 does not reach delta."""
    if sens == 0:
        return 0.0
    with jax.enable_x64(True):
        a = jnp.float64(sens / sigma)
        if float(analytic_delta(1e8, a)) > delta:
            return math.inf
        if float(analytic_delta(0.0, a)) <= delta:
            return 0.0
        return float(_smallest_eps(a, jnp.float64(delta)))


# ----------------------------------------------------------------------------------------------- checkpoint recovery
def recover_checkpoints(theta_T: jax.Array, K: int, X: jax.Array, y: jax.Array, mask: jax.Array, *, lam: float,
                        eta: float, inner_steps: int = 60) -> np.ndarray:
    """theta_T, theta_{T-1}, ..., theta_{T-K} by K backward GD steps
    theta_t = argmin_z { -f_D(z) + ||z - theta_{t+1}||^2/(2 eta) }, each solved by ``inner_steps`` GD steps
    with step eta (``optax.sgd(eta)`` via ``extras.rules.descent_step``; a contraction with factor eta L),
    the outer loop under ``mixvi.loop.scan_loop``. Returns (K + 1, d)."""
    f = partial(objective, X=X, y=y, mask=mask, lam=lam)
    tx = optax.sgd(eta)

    def backward(theta_next):
        def prox_obj(z):
            return -f(z) + jnp.sum((z - theta_next) ** 2) / (2.0 * eta)

        inner = descent_step(prox_obj, tx)
        st = jax.lax.fori_loop(0, inner_steps, lambda _, s: inner(s)[0], DescentState(theta_next, tx.init(theta_next)))
        return st.params

    def step(theta):
        prev = backward(theta)
        return prev, prev

    res = scan_loop(step, theta_T, K, is_ok=lambda s, v: jnp.all(jnp.isfinite(v)))
    return np.concatenate([np.asarray(theta_T)[None], np.asarray(res.losses)])


# ----------------------------------------------------------------------------------------------- attack
def auc(pos: jax.Array, neg: jax.Array) -> jax.Array:
    """P(score(pos) > score(neg)) + P(=)/2 (Mann-Whitney AUC) over all pairs."""
    diff = pos[:, None] - neg[None, :]
    return jnp.mean((diff > 0) + 0.5 * (diff == 0))


def membership_auc(theta: jax.Array, X_forget: jax.Array, y_forget: jax.Array, X_out: jax.Array,
                   y_out: jax.Array) -> jax.Array:
    """Loss-threshold membership inference: AUC of score = -loss separating the forgotten user's points
    from held-out users' points (0.5: indistinguishable from non-members)."""
    return auc(-point_losses(theta, X_forget, y_forget).ravel(), -point_losses(theta, X_out, y_out).ravel())


# ----------------------------------------------------------------------------------------------- experiment
def experiment(*, T: int = 60, eta: float = 1.0, lam: float = 1e-3, Ks: tuple[int, ...] | None = None,
               sigma: float = 0.05, delta: float = 1e-5, num_noise: int = 8, seed: int = 0, tau: float = 1.0,
               cluster: float = 2.0, num_users: int = 20, per_user: int = 50, d: int = 20,
               sigma_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)) -> dict:
    """The user-level deletion experiment (arXiv 2409.09778 at CPU size).

    Train T GD steps on all users from theta_0 = 0; for every user j in turn (vmapped) forget all of j's
    points: R2D for every K = 0..T, D2D (K GD steps on D' from theta_T) and retraining. Reports per K the
    distance to the retrained model against the bound (S), eps(K) of the analytic and classical Gaussian
    mechanisms at fixed ``sigma`` and the sigma that eps = 1 would need, test accuracy on the retained
    users' fresh points with either noise, the loss-threshold membership AUC of the forgotten user
    (vs ``X_out``) before and after, and the error of checkpoint recovery from theta_T; and for K = T - 1
    the privacy/utility trade-off over ``sigma_grid`` (eps(sigma) and accuracy)."""
    data = make_users(jax.random.PRNGKey(seed), num_users, per_user, d, tau=tau, cluster=cluster)
    X, y = data["X"], data["y"]
    U, P = y.shape
    n, m = U * P, P
    G, L = smoothness_constants(lam)
    if Ks is None:
        Ks = tuple(sorted({0, T // 4, T // 2, 3 * T // 4, T - T // 10, T - T // 20, T - 1, T}))
    full = jnp.ones((U, P), bool)
    retain = jnp.stack([full.at[j].set(False) for j in range(U)])  # (U, U, P): forget user j
    train_path = run_gd(jnp.zeros((1, d)), X, y, full[None], lam=lam, eta=eta, num_steps=T)[:, 0]  # (T+1, d)
    traj = rewind_all(train_path, X, y, retain, lam=lam, eta=eta)  # (s, t, j, d)
    retrained = traj[T, 0]  # (U, d)
    r2d = np.stack([traj[K, T - K] for K in range(T + 1)])  # (T+1, U, d)
    d2d = np.stack([traj[K, T] for K in range(T + 1)])
    theta_T = train_path[-1]

    def retained_acc(theta, j):  # accuracy on fresh points of every user but j
        correct = jnp.sign(data["X_test"] @ theta) == data["y_test"]  # (U, Pt)
        w = jnp.ones(U).at[j].set(0.0)
        return jnp.sum(w[:, None] * correct) / (jnp.sum(w) * correct.shape[1])

    def mia(thetas):  # (U, d) -> AUC per forgotten user j
        return np.asarray(jax.vmap(lambda th, j: membership_auc(th, X[j], y[j], data["X_out"], data["y_out"]))(
            jnp.asarray(thetas), jnp.arange(U)))

    accs = jax.jit(jax.vmap(jax.vmap(retained_acc, (0, 0)), (0, None)))  # (B, U, d) -> (B, U)
    js = jnp.arange(U)
    noise = jax.random.normal(jax.random.PRNGKey(seed + 99), (num_noise, U, d))
    dist = np.linalg.norm(r2d - retrained[None], axis=-1)  # (T+1, U)
    dist_d2d = np.linalg.norm(d2d - retrained[None], axis=-1)
    bounds = sensitivity(T, np.arange(T + 1), eta=eta, L=L, G=G, m=m, n=n)
    rows = []
    for K in Ks:
        sens = float(bounds[K])
        s1 = analytic_sigma(1.0, delta, sens)
        noisy = jnp.asarray(r2d[K])[None] + sigma * noise
        cert = jnp.asarray(r2d[K])[None] + s1 * noise
        rows.append({
            "K": K, "dist_mean": float(dist[K].mean()), "dist_max": float(dist[K].max()),
            "dist_d2d_mean": float(dist_d2d[K].mean()), "bound": sens,
            "bound_over_dist": float(sens / dist[K].max()) if dist[K].max() > 0 else None,
            "eps_analytic": _finite(analytic_epsilon(sigma, delta, sens)),
            "eps_classical": float(classical_epsilon(sigma, delta, sens)),
            "sigma_eps1_analytic": s1, "sigma_eps1_classical": float(classical_sigma(1.0, delta, sens)),
            "acc": float(np.asarray(accs(jnp.asarray(r2d[K])[None], js)).mean()),
            "acc_noisy": float(np.asarray(accs(noisy, js)).mean()),
            "acc_certified_eps1": float(np.asarray(accs(cert, js)).mean()),
            "auc": float(mia(r2d[K]).mean()),
            "auc_noisy": float(np.mean([mia(noisy[i]) for i in range(min(num_noise, 4))])),
        })
    sweep = []
    for sg in sigma_grid:
        noisy = jnp.asarray(r2d[T - 1])[None] + sg * noise
        sweep.append({"sigma": sg, "eps_analytic": _finite(analytic_epsilon(sg, delta, float(bounds[T - 1]))),
                      "acc_noisy": float(np.asarray(accs(noisy, js)).mean()),
                      "auc_noisy": float(np.mean([mia(noisy[i]) for i in range(min(num_noise, 4))]))})
    rec = recover_checkpoints(jnp.asarray(theta_T), T, X, y, full, lam=lam, eta=eta)
    rec_err = np.linalg.norm(rec - train_path[::-1], axis=1)
    return {
        "T": T, "eta": eta, "lam": lam, "G": G, "L": L, "n": n, "m": m, "d": d, "sigma": sigma, "delta": delta,
        "num_users": U, "per_user": P, "tau": tau, "cluster": cluster, "eta_L": eta * L, "growth": (1 + eta * L) ** T,
        "acc_trained": float(np.asarray(accs(jnp.asarray(np.broadcast_to(theta_T, (1, U, d))), js)).mean()),
        "auc_before": float(mia(np.broadcast_to(theta_T, (U, d))).mean()),
        "auc_before_per_user": mia(np.broadcast_to(theta_T, (U, d))).tolist(),
        "auc_retrained_per_user": mia(retrained).tolist(),
        "rows": rows,
        "sigma_sweep_K": T - 1,
        "sigma_sweep": sweep,
        "curves": {"K": list(range(T + 1)), "r2d_mean": dist.mean(1).tolist(), "r2d_max": dist.max(1).tolist(),
                   "d2d_mean": dist_d2d.mean(1).tolist(), "bound": bounds.tolist()},
        "recovery": {"max_err": float(rec_err.max()), "err_per_step": rec_err.tolist(), "contraction": eta * L,
                     "norm_theta_T": float(np.linalg.norm(theta_T)), "norm_theta_0_recovered": float(np.linalg.norm(rec[-1]))},
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def mechanism_table(sens: float = 1.0, delta: float = 1e-5, eps: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)) -> list[dict]:
    """sigma(eps, delta, Delta) of the classical and analytic Gaussian mechanisms and the round trip
    eps(sigma_analytic) (the inverse)."""
    return [{"eps": e, "sigma_classical": float(classical_sigma(e, delta, sens)),
             "sigma_analytic": analytic_sigma(e, delta, sens),
             "eps_roundtrip": analytic_epsilon(analytic_sigma(e, delta, sens), delta, sens)} for e in eps]


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """``python -m extras.unlearning [--quick] [--out DIR]``: the user-level deletion table (R2D vs D2D vs
    retraining, bound, eps(K), utility, membership AUC), checkpoint recovery, mechanism table; JSON + PNG."""
    args = parse_args(main.__doc__, argv, "smaller sizes (< 30 s)")
    q = args.quick
    t0 = time.time()
    res: dict = {"paper": PAPER, "quick": q}
    with jax.enable_x64(True):
        res["mechanisms"] = mechanism_table()
        print("Gaussian mechanism, Delta = 1, delta = 1e-5: sigma(eps)")
        for r in res["mechanisms"]:
            print(f"  eps = {r['eps']:5g}: classical {r['sigma_classical']:8.4f} (valid for eps < 1)  analytic "
                  f"{r['sigma_analytic']:8.4f}  eps(sigma_analytic) = {r['eps_roundtrip']:.6f}")
        e = experiment(T=40 if q else 60, num_noise=4 if q else 8)
        res["experiment"] = e
        print(f"\nuser-level deletion: {e['num_users']} users x {e['per_user']} points, d = {e['d']}, sigmoid loss, "
              f"GD eta = {e['eta']}, T = {e['T']}, lam = {e['lam']}; G = {e['G']}, L = {e['L']:.4f}, "
              f"(1 + eta L)^T = {e['growth']:.1f}; forget each user in turn (means over the {e['num_users']} choices)")
        print(f"trained model: retained-user test accuracy {e['acc_trained']:.3f}, membership AUC of the forgotten "
              f"user {e['auc_before']:.3f}; retrained: AUC {np.mean(e['auc_retrained_per_user']):.3f}")
        print(f"{'K':>3} | {'R2D dist':>9} {'D2D dist':>9} {'bound':>9} | {'eps_an':>9} {'eps_cl':>9} {'sig(eps=1)':>10} "
              f"| {'acc':>6} {'acc+sig':>7} {'acc cert':>8} | {'AUC':>6} {'AUC+sig':>7}")
        for r in e["rows"]:
            print(f"{r['K']:3d} | {r['dist_mean']:9.2e} {r['dist_d2d_mean']:9.2e} {r['bound']:9.3g} | "
                  f"{r['eps_analytic'] if r['eps_analytic'] is not None else math.inf:9.3g} {r['eps_classical']:9.3g} {r['sigma_eps1_analytic']:10.3g} | "
                  f"{r['acc']:6.3f} {r['acc_noisy']:7.3f} {r['acc_certified_eps1']:8.3f} | {r['auc']:6.3f} {r['auc_noisy']:7.3f}")
        print(f"(sigma = {e['sigma']}, delta = {e['delta']}; 'acc cert': noise with the analytic sigma for eps = 1)")
        print(f"\nprivacy/utility at K = T - 1 = {e['sigma_sweep_K']} (bound {e['rows'][-2]['bound']:.3g}): sigma -> eps, accuracy, AUC")
        for r in e["sigma_sweep"]:
            ep = r["eps_analytic"] if r["eps_analytic"] is not None else math.inf
            print(f"  sigma = {r['sigma']:6g}: eps = {ep:9.3g}, acc = {r['acc_noisy']:.3f}, AUC = {r['auc_noisy']:.3f}")
        if not q:
            res["seeds"] = []
            for sd in (1, 2):
                es = experiment(T=60, num_noise=2, seed=sd, Ks=(0, 30, 59, 60), sigma_grid=())
                res["seeds"].append({"seed": sd, "auc_before": es["auc_before"],
                                     "auc_retrained": float(np.mean(es["auc_retrained_per_user"])),
                                     "rows": es["rows"], "recovery_max_err": es["recovery"]["max_err"]})
            print("\nother data seeds: AUC before -> retrained; R2D / D2D distance at K = 0, 30, 59, 60")
            for r in res["seeds"]:
                print(f"  seed {r['seed']}: AUC {r['auc_before']:.3f} -> {r['auc_retrained']:.3f}; R2D "
                      + " ".join(f"{x['dist_mean']:.3g}" for x in r["rows"]) + "; D2D "
                      + " ".join(f"{x['dist_d2d_mean']:.3g}" for x in r["rows"]) + f"; recovery {r['recovery_max_err']:.1e}")
        rec = e["recovery"]
        print(f"\ncheckpoint recovery theta_T -> theta_0 by {e['T']} backward steps (contraction eta L = "
              f"{rec['contraction']:.3f}): max error {rec['max_err']:.2e} (||theta_T|| = {rec['norm_theta_T']:.3f})")
    save_outputs("unlearning", q, args.out, res, t0, lambda png: _plot(res, png))
    return res


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = res["experiment"]
    c = e["curves"]
    K = np.array(c["K"])
    fig, ax = plt.subplots(1, 4, figsize=(20, 4.3))
    ax[0].plot(K, c["r2d_mean"], "C0-", label="R2D: rewind K steps, K steps on D'")
    ax[0].plot(K, c["r2d_max"], "C0:", label="R2D, worst forgotten user")
    ax[0].plot(K, c["d2d_mean"], "C3-", label="D2D: K steps on D' from θ_T")
    ax[0].set(xlabel="K (unlearning GD steps)", ylabel="‖θ − θ_retrain‖", title="distance to the retrained model")
    ax[0].legend(fontsize=7)
    b = np.array(c["bound"])
    rm = np.array(c["r2d_max"])
    ax[1].semilogy(K[:-1], b[:-1], "k-", label="bound (S): 2mG/(nL)((1+ηL)^T − (1+ηL)^K)")
    ax[1].semilogy(K[:-1], rm[:-1], "C0:", label="R2D, worst forgotten user")
    ax[1].set(xlabel="K", ylabel="distance", title=f"sensitivity bound vs measured (T = {e['T']}, (1+ηL)^T = {e['growth']:.0f})")
    ax[1].legend(fontsize=7)
    rows = e["rows"]
    Ks = [r["K"] for r in rows if r["K"] < e["T"]]
    eps = [np.nan if r["eps_analytic"] is None else r["eps_analytic"] for r in rows if r["K"] < e["T"]]
    ax[2].semilogy(Ks, eps, "o-", label=f"analytic Gaussian, σ = {e['sigma']}")
    ax[2].semilogy(Ks, [r["eps_classical"] for r in rows if r["K"] < e["T"]], "s--", label="classical (formula; a guarantee only if < 1)")
    ax[2].axhline(1.0, color="gray", ls=":")
    ax[2].set(xlabel="K", ylabel=f"ε at δ = {e['delta']:g}", title="certified ε(K) at fixed σ (ε = 0 at K = T)")
    ax[2].legend(fontsize=7)
    bef, aft = np.array(e["auc_before_per_user"]), np.array(e["auc_retrained_per_user"])
    last = [r for r in rows if r["K"] == e["T"] - 1][0]
    ax[3].plot(aft, bef, "o", color="C3", label=f"trained on all: mean {bef.mean():.3f}")
    ax[3].plot(aft, aft, "o", color="C0", mfc="none", label=f"R2D K = T (= retrained): mean {aft.mean():.3f}")
    lo, hi = min(bef.min(), aft.min()) - 0.03, max(bef.max(), aft.max()) + 0.03
    ax[3].plot([lo, hi], [lo, hi], "k:", lw=0.8)
    ax[3].set(xlabel="AUC of the retrained model (reference)", ylabel="membership AUC of the forgotten user",
              title=f"loss-threshold attack, one point per forgotten user\n(R2D K = T−1: mean {last['auc']:.3f})")
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
