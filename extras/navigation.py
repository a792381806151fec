"""Learning rules as optimal navigation of the loss landscape.

Reproduces Vastola, Gershman, Rajan, "Gradient Descent as Loss Landscape Navigation: a Normative
Framework for Deriving Learning Rules" (NeurIPS 2025, arXiv 2510.26997) on mixvi's gradient
machinery. A learning rule is the minimiser of the discounted path action

    S[theta] = int_0^inf e^{-gamma t} [ |theta' - f(theta)|_G^2 / (2 eta) + k L(theta) ] dt,   theta(0) = theta0,

with f the default (uncontrolled) dynamics, G a metric, eta the "control budget", k the weight of
the loss and 1/gamma the planning horizon. With u = theta' - f(theta) the Euler-Lagrange equation is

    G u' - gamma G u + Df^T G u = eta k grad L(theta).                                   (EL)

Derivations implemented here (docs/extras/navigation.md has them in full):

* Quadratic loss L = theta^T H theta / 2, f = 0: theta(t) = sum_i c_i v_i e^{-r_i t} with
  H v_i = mu_i G v_i and r_i = sqrt(gamma^2/4 + eta k mu_i) - gamma/2 (the decaying root of
  r^2 + gamma r = eta k mu). Large gamma: r_i ~ eta k mu_i / gamma, the feedback law is
  theta' = -(eta k / gamma) G^{-1} H theta (natural gradient descent, rate prop. to curvature);
  gamma = 0: r_i = sqrt(eta k mu_i) ("ballistic", rate prop. to sqrt(curvature)).
* Discretisation t_n = n dt, S_dt = sum_n e^{-gamma t_n} dt [ |(theta_{n+1} - theta_n)/dt - f(theta_n)|_G^2/(2 eta)
  + k L(theta_n) ]: the interior stationarity conditions give theta_n = rho^n with
  rho^2 - rho (1 + e^{gamma dt} + eta k mu dt^2) + e^{gamma dt} = 0 (the smaller root), so
  r_dt = -ln(rho)/dt -> r as dt -> 0.
* Linear default dynamics f(theta) = F theta and L = (theta - theta*)^T H (theta - theta*)/2: the
  optimal path settles (turnpike) at the fixed point of (EL) with u = -F theta,
  [eta k H - (gamma G - F^T G) F] theta = eta k H theta*; weight decay F = -alpha I gives the ridge
  solution with penalty alpha (alpha + gamma)/(eta k); a rotation F = Omega (antisymmetric) gives
  [eta k H - gamma Omega + Omega^T Omega] theta = eta k H theta*. For the discretised action gamma is
  replaced by gamma_dt = (e^{gamma dt} - 1)/dt.
* gamma = 0 in 1-D: (EL) conserves E = G theta'^2/(2 eta) - k L(theta), and a finite action forces
  E = 0 and L -> 0: the optimal path runs at speed sqrt(2 eta k L/G) to a *global* minimiser (L = 0),
  over any barrier, whereas gradient flow stops in the first local minimum.

* The paper's 2-D example (the paper setting): V(x, y) = (x^2 - 1)^2 + y^2 - 0.5 x from (-0.6, 0.55) to the
  deeper minimum near (1, 0) (computed), fixed endpoint, T = 4, gamma = 0.1: the minimum-action path, S_dt
  and S_dt / T (the action averaged over the path's points) at three dt, and their convergence in dt.

Numerical minimisation of S_dt uses ``optax.lbfgs`` through ``extras.rules.run_descent``; gradient
flow is ``optax.sgd(dt)``; the classification comparison uses ``optax.sgd`` and ``optax.rmsprop`` (the
ballistic rule with the diagonal Fisher as curvature estimate, see ``compare_rules``), vmapped over
seeds and learning rates under ``mixvi.loop.scan_loop``.

Run ``python -m extras.navigation [--quick]``; results go to ``docs/extras/``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from extras._output import parse_args, save_outputs
from extras.rules import DescentState, descent_step, run_descent
from mixvi.loop import scan_loop

PAPER = (
    "Vastola, Gershman, Rajan, 'Gradient Descent as Loss Landscape Navigation: a Normative Framework "
    "for Deriving Learning Rules', arXiv 2510.26997"
)


# ----------------------------------------------------------------------------------------------- closed forms
def optimal_rate(
    h: float | np.ndarray, *, gamma: float, eta: float = 1.0, k: float = 1.0, G: float = 1.0
) -> np.ndarray:
    """r = sqrt(gamma^2/4 + eta k h/G) - gamma/2: the decay rate of an eigen-direction with curvature h
    (metric G) on the optimal path of the discounted action (arXiv 2510.26997)."""
    h = np.asarray(h, float)
    return np.sqrt(gamma**2 / 4.0 + eta * k * h / G) - gamma / 2.0


def discrete_rate(
    h: float | np.ndarray, *, gamma: float, dt: float, eta: float = 1.0, k: float = 1.0, G: float = 1.0
) -> np.ndarray:
    """r_dt = -ln(rho)/dt with rho the smaller root of rho^2 - rho (1 + e^{gamma dt} + eta k h dt^2/G)
    + e^{gamma dt} = 0: the exact decay rate of the stationary path of the discretised action."""
    h = np.asarray(h, float)
    a = math.exp(gamma * dt)
    b = 1.0 + a + eta * k * h * dt**2 / G
    rho = 2.0 * a / (b + np.sqrt(b * b - 4.0 * a))  # = (b - sqrt(b^2 - 4a))/2 without cancellation
    return -np.log(rho) / dt


def feedback_matrix(H: np.ndarray, G: np.ndarray, *, gamma: float, eta: float = 1.0, k: float = 1.0) -> np.ndarray:
    """A with theta' = -A theta on the optimal path for L = theta^T H theta/2, metric G, f = 0:
    A = V diag(r_i) V^{-1}, H V = G V diag(mu), r_i = sqrt(gamma^2/4 + eta k mu_i) - gamma/2.
    gamma -> inf: A ~ (eta k/gamma) G^{-1} H (natural gradient); gamma = 0: A = (eta k G^{-1} H)^{1/2}."""
    Gi = np.linalg.inv(np.asarray(G, float))
    mu, V = np.linalg.eig(Gi @ np.asarray(H, float))
    mu, V = mu.real, V.real
    r = np.sqrt(gamma**2 / 4.0 + eta * k * mu) - gamma / 2.0
    return V @ np.diag(r) @ np.linalg.inv(V)


def discrete_discount(gamma: float, dt: float) -> float:
    """gamma_dt = (e^{gamma dt} - 1)/dt: the discount rate that the discretised action's fixed point sees."""
    return math.expm1(gamma * dt) / dt if dt > 0 else gamma


def fixed_point(
    H: np.ndarray,
    theta_star: np.ndarray,
    F: np.ndarray,
    *,
    gamma: float,
    eta: float = 1.0,
    k: float = 1.0,
    G: np.ndarray | None = None,
) -> np.ndarray:
    """The steady state of (EL) for f(theta) = F theta and L = (theta - theta*)^T H (theta - theta*)/2:
    [eta k H - (gamma G - F^T G) F] theta = eta k H theta*. Weight decay F = -alpha I: ridge with
    penalty alpha (alpha + gamma)/(eta k); rotation F = Omega: [eta k H - gamma Omega + Omega^T Omega]."""
    H, F = np.asarray(H, float), np.asarray(F, float)
    G = np.eye(H.shape[0]) if G is None else np.asarray(G, float)
    lhs = eta * k * H - (gamma * G - F.T @ G) @ F
    return np.linalg.solve(lhs, eta * k * H @ np.asarray(theta_star, float))


# ----------------------------------------------------------------------------------------------- the action
def action(
    path: jax.Array,
    theta0: jax.Array,
    *,
    dt: float,
    loss: Callable[[jax.Array], jax.Array],
    gamma: float,
    eta: float = 1.0,
    k: float = 1.0,
    G: jax.Array | None = None,
    drift: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """S_dt = sum_{n=0}^{N-1} e^{-gamma n dt} dt [ |(theta_{n+1} - theta_n)/dt - f(theta_n)|_G^2/(2 eta)
    + k L(theta_n) ] for ``path`` = (theta_1, ..., theta_N) of shape (N, d) and fixed theta_0."""
    full = jnp.concatenate([jnp.asarray(theta0)[None], path], axis=0)
    x = full[:-1]
    u = (full[1:] - x) / dt
    if drift is not None:
        u = u - jax.vmap(drift)(x)
    kin = jnp.sum(u * u, axis=1) if G is None else jnp.einsum("ni,ij,nj->n", u, G, u)
    w = jnp.exp(-gamma * dt * jnp.arange(x.shape[0], dtype=x.dtype))
    return jnp.sum(w * dt * (kin / (2.0 * eta) + k * jax.vmap(loss)(x)))


def minimise_action(
    theta0: jax.Array,
    loss: Callable[[jax.Array], jax.Array],
    *,
    num_points: int,
    dt: float,
    gamma: float,
    eta: float = 1.0,
    k: float = 1.0,
    G: jax.Array | None = None,
    drift: Callable[[jax.Array], jax.Array] | None = None,
    init: jax.Array | None = None,
    num_steps: int = 1500,
) -> tuple[np.ndarray, float, float]:
    """Minimise S_dt over (theta_1..theta_N) with L-BFGS (``optax.lbfgs`` via ``extras.rules.run_descent``)
    from ``init`` (default: the constant path theta_n = theta0). Returns the full path (N + 1, d)
    including theta0, the action and the norm of the gradient in the optimised variables.

    The optimiser works on phi_n = e^{-gamma t_n / 2} theta_n (t_n = n dt), which removes the discount
    from the scale of the problem (for a quadratic loss S becomes the undiscounted action of phi with
    velocity phi' + gamma phi/2): without it, path points at late times carry weights e^{-gamma t}
    below float64 resolution and L-BFGS leaves them unconverged. The minimiser is the same."""
    theta0 = jnp.atleast_1d(jnp.asarray(theta0))
    S = partial(action, theta0=theta0, dt=dt, loss=loss, gamma=gamma, eta=eta, k=k, G=G, drift=drift)
    scale = jnp.exp(0.5 * gamma * dt * jnp.arange(1, num_points + 1, dtype=theta0.dtype))[:, None]

    def S_phi(phi):
        return S(scale * phi)

    p0 = jnp.tile(theta0, (num_points, 1)) if init is None else jnp.asarray(init).reshape(num_points, -1)
    res = run_descent(S_phi, optax.lbfgs(), p0 / scale, num_steps)
    phi = res.state.params
    gn = float(jnp.linalg.norm(jax.grad(S_phi)(phi)))
    p = scale * phi
    return np.concatenate([np.asarray(theta0)[None], np.asarray(p)]), float(S(p)), gn


def fit_rate(x: np.ndarray, dt: float) -> float:
    """-slope of ln|x_n| against t_n = n dt (least squares): the decay rate of a path component."""
    t = dt * np.arange(len(x))
    return float(-np.polyfit(t, np.log(np.abs(x)), 1)[0])


def rate_check(
    h: float, gamma: float, *, eta: float = 1.0, k: float = 1.0, G: float = 1.0, num_steps: int = 1500
) -> dict:
    """Minimise the discretised action for L = h theta^2/2 from theta0 = 1 and fit the decay rate on a
    window far from the free end (its influence decays like e^{-2 kappa (T - t)}, kappa =
    sqrt(gamma^2/4 + eta k h/G)). Returns the fitted, discrete closed-form and continuous rates."""
    r = float(optimal_rate(h, gamma=gamma, eta=eta, k=k, G=G))
    kappa = math.sqrt(gamma**2 / 4 + eta * k * h / G)
    dt = min(0.02, 0.1 / max(gamma, 1e-12), 0.1 / math.sqrt(eta * k * h / G))
    t_fit = min(2.0 / r, 15.0 / max(gamma, 1e-12))
    T = t_fit + 10.0 / kappa
    n = int(round(T / dt))
    path, S, gn = minimise_action(
        jnp.ones(1),
        lambda th: 0.5 * h * th[0] ** 2,
        num_points=n,
        dt=dt,
        gamma=gamma,
        eta=eta,
        k=k,
        G=None if G == 1.0 else jnp.eye(1) * G,
        num_steps=num_steps,
    )
    n_fit = int(round(t_fit / dt))
    return {
        "h": h,
        "gamma": gamma,
        "dt": dt,
        "num_points": n,
        "fitted": fit_rate(path[: n_fit + 1, 0], dt),
        "discrete": float(discrete_rate(h, gamma=gamma, dt=dt, eta=eta, k=k, G=G)),
        "continuous": r,
        "gd_limit": eta * k * h / (G * gamma) if gamma > 0 else None,
        "grad_norm": gn,
    }


# ----------------------------------------------------------------------------------------------- double well
def double_well(theta: jax.Array, b: float = 0.15) -> jax.Array:
    """L(theta) = (theta^2 - 1)^2/4 + b theta - L_min: global minimum (L = 0) near -1, local minimum near +1,
    barrier near b (for 0 < b < 2/(3 sqrt 3))."""
    th = theta[0] if jnp.ndim(theta) else theta
    return (th**2 - 1.0) ** 2 / 4.0 + b * th - _double_well_min(b)


def _double_well_critical(b: float) -> np.ndarray:
    return np.sort(np.roots([1.0, 0.0, -1.0, b]).real)  # theta^3 - theta + b = 0: global min, barrier, local min


def _double_well_min(b: float) -> float:
    g = _double_well_critical(b)[0]
    return (g**2 - 1.0) ** 2 / 4.0 + b * g


def gradient_flow(loss: Callable, theta0: jax.Array, *, dt: float, num_steps: int) -> np.ndarray:
    """Euler-discretised gradient flow theta' = -grad L (``optax.sgd(dt)`` via ``extras.rules.run_descent``);
    returns the path (num_steps + 1, d)."""
    tx = optax.sgd(dt)
    step1 = descent_step(loss, tx)

    def step(state):
        new, _ = step1(state)
        return new, new.params

    theta0 = jnp.atleast_1d(jnp.asarray(theta0))
    res = scan_loop(step, DescentState(theta0, tx.init(theta0)), num_steps, is_ok=lambda s, v: jnp.all(jnp.isfinite(v)))
    return np.concatenate([np.asarray(theta0)[None], np.asarray(res.losses)])


def double_well_experiment(
    gammas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0),
    *,
    b: float = 0.15,
    theta0: float = 1.5,
    T: float = 20.0,
    dt: float = 0.02,
    eta: float = 1.0,
    k: float = 1.0,
    num_steps: int = 2000,
) -> dict:
    """Gradient flow vs the optimal path on the double well from theta0 (right of the local minimum).

    For each gamma the discretised action is minimised from two initial paths: the gradient-flow path
    (ends in the local minimum) and a path that moves linearly to the global minimum in T/4 and stays;
    the lower action is the optimal path. At gamma = 0 the optimal path must cross the barrier (any
    path ending at L > 0 costs ~ k L T) and conserve E = theta'^2/(2 eta) - k L ~ 0."""
    crit = _double_well_critical(b)
    L = partial(double_well, b=b)
    n = int(round(T / dt))
    gf = gradient_flow(L, jnp.array([theta0]), dt=dt, num_steps=n)
    tt = dt * np.arange(1, n + 1)
    cross_init = np.where(tt < T / 4, theta0 + (crit[0] - theta0) * tt / (T / 4), crit[0])[:, None]
    out = {
        "b": b,
        "theta0": theta0,
        "T": T,
        "dt": dt,
        "global_min": float(crit[0]),
        "barrier": float(crit[1]),
        "local_min": float(crit[2]),
        "L_local": float(L(jnp.array([crit[2]]))),
        "L_barrier": float(L(jnp.array([crit[1]]))),
        "gradient_flow_end": float(gf[-1, 0]),
        "runs": {},
        "paths": {"t": (dt * np.arange(n + 1)).tolist(), "gradient_flow": gf[:, 0].tolist()},
    }
    for g in gammas:
        res = {}
        for name, init in (("stay", gf[1:]), ("cross", cross_init)):
            path, S, gn = minimise_action(
                jnp.array([theta0]),
                L,
                num_points=n,
                dt=dt,
                gamma=g,
                eta=eta,
                k=k,
                init=jnp.asarray(init),
                num_steps=num_steps,
            )
            res[name] = {"action": S, "end": float(path[-1, 0]), "grad_norm": gn, "path": path[:, 0]}
        best = min(res, key=lambda m: res[m]["action"])
        p = res[best]["path"]
        v = np.diff(p) / dt
        Lp = np.asarray(jax.vmap(L)(jnp.asarray(p[:, None])))
        E = v**2 / (2 * eta) - k * 0.5 * (Lp[:-1] + Lp[1:])  # midpoint rule: O(dt^2) from the conserved E
        out["runs"][f"{g:g}"] = {
            "optimal": best,
            "action_stay": res["stay"]["action"],
            "action_cross": res["cross"]["action"],
            "end_optimal": float(p[-1]),
            "crosses_barrier": bool(p.min() < crit[1]),
            "max_abs_energy_first_half": float(np.abs(E[: n // 2]).max()),
            "grad_norm": max(res["stay"]["grad_norm"], res["cross"]["grad_norm"]),
        }
        out["paths"][f"{g:g}"] = p.tolist()
    return out


# ----------------------------------------------------------------------------------------------- the paper's 2-D well
# The paper's double-well example (arXiv 2510.26997): V(x, y) = (x^2 - 1)^2 + y^2 - 0.5 x, start (-0.6, 0.55),
# fixed endpoint, horizon T = 4, discount gamma = 0.1, eta = k = 1. The endpoint is not stated in what we could
# read; we use the well's other minimum, near (1, 0), computed numerically (paper_well_minima).
PAPER_WELL = {"start": (-0.6, 0.55), "T": 4.0, "gamma": 0.1, "eta": 1.0, "k": 1.0}


def paper_well(theta: jax.Array) -> jax.Array:
    """V(x, y) = (x^2 - 1)^2 + y^2 - 0.5 x: a tilted 2-D double well, deeper minimum near (1.06, 0)."""
    x, y = theta[0], theta[1]
    return (x**2 - 1.0) ** 2 + y**2 - 0.5 * x


def paper_well_minima() -> np.ndarray:
    """The minima (x, 0) of :func:`paper_well`, sorted by x: the real roots of 4x(x^2 - 1) = 0.5 with
    V_xx = 12 x^2 - 4 > 0 (the middle root is the saddle)."""
    r = np.sort(np.roots([4.0, 0.0, -4.0, -0.5]).real)
    return np.array([[x, 0.0] for x in r if 12 * x * x - 4 > 0])


def _padded_action(p, dt, n_used, *, start, end, loss, gamma, eta, k):
    """S_dt of the path start, p_1..p_{N-1}, end with N = ``n_used`` <= M stored in ``p`` (M - 1, d):
    points from index N on are the endpoint and their terms are masked out, so one compiled program
    serves every N <= M (and every dt)."""
    M = p.shape[0] + 1
    idx = jnp.arange(1, M)[:, None]
    inner = jnp.where(idx >= n_used, end, p)
    full = jnp.concatenate([start[None], inner, end[None]], axis=0)
    x = full[:-1]
    u = (full[1:] - x) / dt
    n = jnp.arange(M)
    w = jnp.where(n < n_used, jnp.exp(-gamma * dt * n), 0.0)
    return jnp.sum(w * dt * (jnp.sum(u * u, axis=1) / (2.0 * eta) + k * jax.vmap(loss)(x)))


def fixed_end_path(
    start: jax.Array,
    end: jax.Array,
    loss: Callable,
    *,
    T: float,
    num_points: int,
    gamma: float,
    eta: float = 1.0,
    k: float = 1.0,
    init: jax.Array | None = None,
    num_steps: int = 3000,
    max_points: int | None = None,
) -> dict:
    """Minimise the discretised action S_dt (the rule of :func:`action`: left-point, dt = T/N, t_n = n dt,
    metric I, no drift) over the interior points theta_1..theta_{N-1} with theta_0 = ``start`` and
    theta_N = ``end`` fixed (``optax.lbfgs`` steps, ``extras.rules.descent_step`` under
    ``mixvi.loop.scan_loop``; default initial path: the straight line). The path is stored padded to
    ``max_points`` (default N) with dt and N as loop operands, so calls with the same ``max_points`` share
    one compiled loop. Returns the path (N + 1, d), S_dt, S_dt / T (the action averaged over the path's
    points, (1/N) sum_n of the bracket) and the norm of the gradient in the interior points."""
    start, end = jnp.asarray(start), jnp.asarray(end)
    N = num_points
    M = N if max_points is None else max_points
    dt = T / N
    S = partial(_padded_action, start=start, end=end, loss=loss, gamma=gamma, eta=eta, k=k)
    s = jnp.linspace(0.0, 1.0, N + 1)[1:-1, None]
    p0 = start + s * (end - start) if init is None else jnp.asarray(init).reshape(N - 1, -1)
    p0 = jnp.concatenate([p0, jnp.broadcast_to(end, (M - N, end.shape[0]))], axis=0)
    tx = optax.lbfgs()

    def step(state, dt_, n_):
        return descent_step(lambda p: S(p, dt_, n_), tx)(state)

    key = ("fixed_end_path", loss, M, gamma, eta, k, tuple(np.asarray(start)), tuple(np.asarray(end)))
    ops = (jnp.asarray(dt, p0.dtype), jnp.asarray(N))
    res = scan_loop(step, DescentState(p0, tx.init(p0)), num_steps, operands=ops, cache_key=key)
    p = res.state.params
    val = float(S(p, *ops))
    gn = float(jnp.linalg.norm(jax.grad(S)(p, *ops)[: N - 1]))
    full = np.concatenate([np.asarray(start)[None], np.asarray(p[: N - 1]), np.asarray(end)[None]])
    return {"path": full, "action": val, "action_mean": val / T, "dt": dt, "num_points": N, "grad_norm": gn}


def paper_well_experiment(
    num_points: tuple[int, ...] = (40, 80, 160), *, num_steps: int = 3000, bends: tuple[float, ...] = (0.0, 0.5, -0.5)
) -> dict:
    """The paper's 2-D example (``PAPER_WELL``) at N = T/dt points for each entry of ``num_points``: the
    minimum-action path from (-0.6, 0.55) to the deeper minimum near (1, 0), its action and the action's
    convergence in dt (differences between successive dt, their ratio, and a Richardson extrapolation
    2 S(dt/2) - S(dt) of the O(dt) left-point rule). Each N starts from the straight line and from the
    straight line bent by each of ``bends`` in y at mid-path; the lowest action is kept."""
    cfg = PAPER_WELL
    mins = paper_well_minima()
    end = mins[-1]
    start = np.array(cfg["start"])
    out = {
        **cfg,
        "end": end.tolist(),
        "minima": mins.tolist(),
        "V_end": float(paper_well(jnp.asarray(end))),
        "V_start": float(paper_well(jnp.asarray(start))),
        "runs": {},
    }
    for N in num_points:
        s = np.linspace(0.0, 1.0, N + 1)[1:-1, None]
        line = start + s * (end - start)
        best = None
        for bend in bends:
            init = line + bend * np.sin(np.pi * s) * np.array([0.0, 1.0])
            r = fixed_end_path(
                start,
                end,
                paper_well,
                T=cfg["T"],
                num_points=N,
                gamma=cfg["gamma"],
                eta=cfg["eta"],
                k=cfg["k"],
                init=jnp.asarray(init),
                num_steps=num_steps,
                max_points=max(num_points),
            )
            if best is None or r["action"] < best["action"] - 1e-12:
                best = r
        best["path"] = best["path"].tolist()
        best["max_abs_y"] = float(np.max(np.abs(np.array(best["path"])[:, 1])))
        out["runs"][str(N)] = best
    S = [out["runs"][str(N)]["action"] for N in num_points]
    d = np.diff(S)
    out["action_differences"] = d.tolist()
    out["difference_ratios"] = (d[1:] / d[:-1]).tolist()
    out["richardson"] = [2 * b - a for a, b in zip(S[:-1], S[1:])]
    # distance between the paths on the coarsest grid's times
    coarse = np.array(out["runs"][str(num_points[0])]["path"])
    fine = np.array(out["runs"][str(num_points[-1])]["path"])
    out["path_max_distance_coarse_fine"] = float(np.abs(fine[:: num_points[-1] // num_points[0]] - coarse).max())
    return out


# ----------------------------------------------------------------------------------------------- default dynamics
def default_dynamics_experiment(
    *,
    alpha: float = 0.5,
    omega: float = 0.7,
    gamma: float = 0.5,
    eta: float = 1.0,
    k: float = 1.0,
    T: float = 30.0,
    dt: float = 0.05,
    num_steps: int = 2000,
) -> dict:
    """Minimise the discretised action with weight-decay (F = -alpha I) and rotation (F = omega J, J the
    90-degree rotation) default dynamics for L = (theta - theta*)^T H (theta - theta*)/2 in 2-D; compare
    the path at t = T/2 (turnpike) with the closed-form fixed points for gamma_dt (exact for the
    discretised action) and gamma (continuous time), and with theta* (the plain minimiser)."""
    H = np.array([[2.0, 0.6], [0.6, 1.0]])
    theta_star = np.array([1.0, -0.5])
    J = np.array([[0.0, -1.0], [1.0, 0.0]])
    n = int(round(T / dt))
    out = {
        "H": H.tolist(),
        "theta_star": theta_star.tolist(),
        "alpha": alpha,
        "omega": omega,
        "gamma": gamma,
        "T": T,
        "dt": dt,
        "cases": {},
    }
    Hj, ts = jnp.asarray(H), jnp.asarray(theta_star)

    def L(th):
        d = th - ts
        return 0.5 * d @ Hj @ d

    for name, F in (("weight_decay", -alpha * np.eye(2)), ("rotation", omega * J)):
        Fj = jnp.asarray(F)
        path, S, gn = minimise_action(
            jnp.zeros(2),
            L,
            num_points=n,
            dt=dt,
            gamma=gamma,
            eta=eta,
            k=k,
            drift=lambda th, Fj=Fj: Fj @ th,
            num_steps=num_steps,
        )
        mid = path[n // 2]
        fp_dt = fixed_point(H, theta_star, F, gamma=discrete_discount(gamma, dt), eta=eta, k=k)
        fp = fixed_point(H, theta_star, F, gamma=gamma, eta=eta, k=k)
        out["cases"][name] = {
            "path_mid": mid.tolist(),
            "fixed_point_dt": fp_dt.tolist(),
            "fixed_point": fp.tolist(),
            "err_dt": float(np.linalg.norm(mid - fp_dt)),
            "err_continuous": float(np.linalg.norm(mid - fp)),
            "dist_theta_star": float(np.linalg.norm(mid - theta_star)),
            "grad_norm": gn,
            "path": path.tolist(),
        }
    lam_ridge = alpha * (alpha + gamma) / (eta * k)
    out["ridge_penalty"] = lam_ridge
    out["ridge_solution"] = np.linalg.solve(H + lam_ridge * np.eye(2), H @ theta_star).tolist()
    return out


# ----------------------------------------------------------------------------------------------- classification
def classification_data(key: jax.Array, n: int = 1000, d: int = 20, spread: float = 100.0) -> dict:
    """Logistic teacher with badly scaled features: x_j ~ N(0, s_j^2), s_j log-spaced from 1 to 1/spread,
    w*_j = z_j / (s_j sqrt(d)) (every feature carries the same signal), y ~ Bernoulli(sigmoid(3 x^T w*)).
    Curvatures of the logistic loss along the coordinates span a factor spread^2."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    s = jnp.logspace(0.0, -math.log10(spread), d)
    w = jax.random.normal(k1, (d,)) / (s * math.sqrt(d))
    X = jax.random.normal(k2, (2 * n, d)) * s
    y = jax.random.bernoulli(k3, jax.nn.sigmoid(3.0 * X @ w)).astype(X.dtype)
    perm = jax.random.permutation(k4, 2 * n)
    X, y = X[perm], y[perm]
    return {"X": X[:n], "y": y[:n], "X_test": X[n:], "y_test": y[n:]}


def logistic_loss(params: dict, X: jax.Array, y: jax.Array) -> jax.Array:
    """Mean binary cross-entropy of the logistic model sigmoid(x^T w + c)."""
    z = X @ params["w"] + params["c"]
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z)


def compare_rules(
    data: dict,
    *,
    lrs: dict[str, tuple[float, ...]],
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    num_steps: int = 500,
    batch: int = 32,
) -> dict:
    """Minibatch training of the logistic model with the "GD-limit" rule ``optax.sgd(lr)`` and the
    "ballistic" rule ``optax.rmsprop(lr)``: per coordinate the gamma = 0 rule moves at rate
    sqrt(eta k h_i), i.e. theta_i' = -sqrt(eta k) g_i / sqrt(h_i), and with the diagonal Fisher
    h_i ~ E[g_i^2] estimated by an EMA of squared minibatch gradients this is RMSprop.
    All (lr, seed) runs of a rule are vmapped in one ``scan_loop``; returns per rule and lr the final
    training/test loss and test accuracy per seed (seeds drive the minibatches and the init)."""
    X, y = data["X"], data["y"]
    n, d = X.shape
    out = {}
    for rule, grid in lrs.items():
        base = {"sgd": optax.sgd, "rmsprop": optax.rmsprop}[rule]
        tx = optax.inject_hyperparams(base)(learning_rate=1.0)

        def init(lr, seed, tx=tx):
            p = {"w": 0.01 * jax.random.normal(jax.random.PRNGKey(seed), (d,), X.dtype), "c": jnp.zeros((), X.dtype)}
            s = tx.init(p)
            s.hyperparams["learning_rate"] = jnp.asarray(lr, X.dtype)
            return (p, s, jax.random.PRNGKey(seed + 12345))

        def step1(state, tx=tx):
            p, s, key = state
            key, sub = jax.random.split(key)
            idx = jax.random.randint(sub, (batch,), 0, n)
            g = jax.grad(logistic_loss)(p, X[idx], y[idx])
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s, key), logistic_loss(p, X, y)

        LR, SD = np.meshgrid(np.asarray(grid, float), np.asarray(seeds), indexing="ij")
        state = jax.vmap(init)(jnp.asarray(LR.ravel()), jnp.asarray(SD.ravel()))
        res = scan_loop(jax.vmap(step1), state, num_steps, is_ok=lambda s, v: jnp.array(True))
        p = res.state[0]
        train = np.asarray(jax.vmap(logistic_loss, (0, None, None))(p, X, y)).reshape(LR.shape)
        test = np.asarray(jax.vmap(logistic_loss, (0, None, None))(p, data["X_test"], data["y_test"])).reshape(LR.shape)
        acc = np.asarray(
            jax.vmap(lambda q: jnp.mean(((data["X_test"] @ q["w"] + q["c"]) > 0) == (data["y_test"] > 0.5)))(p)
        )
        curves = np.asarray(res.losses).reshape(num_steps, *LR.shape)
        out[rule] = {
            "lrs": list(grid),
            "train_loss": np.nan_to_num(train, nan=np.inf).tolist(),
            "test_loss": np.nan_to_num(test, nan=np.inf).tolist(),
            "test_acc": acc.reshape(LR.shape).tolist(),
            "curves": curves,
        }
    return out


def best_lr_summary(rules: dict) -> dict:
    """For each rule: the learning rate with the lowest mean final training loss over seeds, and the mean/sd
    over seeds of the final training loss, test loss and test accuracy at that rate."""
    out = {}
    for rule, r in rules.items():
        train = np.array(r["train_loss"])
        j = int(np.argmin(train.mean(axis=1)))
        test, acc = np.array(r["test_loss"])[j], np.array(r["test_acc"])[j]
        out[rule] = {
            "lr": r["lrs"][j],
            "train_mean": float(train[j].mean()),
            "train_sd": float(train[j].std()),
            "test_mean": float(test.mean()),
            "test_sd": float(test.std()),
            "acc_mean": float(acc.mean()),
            "acc_sd": float(acc.std()),
            "train_per_seed": train[j].tolist(),
        }
    return out


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """``python -m extras.navigation [--quick] [--out DIR]``: rates vs numerical action minimisation, the
    3-vs-9 ratio, the 1-D double well, the paper's 2-D well (fixed endpoint, convergence in dt), the
    default-dynamics fixed points, RMSprop vs SGD; JSON + PNG."""
    args = parse_args(main.__doc__, argv, "smaller sizes (< 30 s)")
    q = args.quick
    t0 = time.time()
    res: dict = {"paper": PAPER, "quick": q}
    with jax.enable_x64(True):
        gammas = (0.0, 4.0) if q else (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
        rows = [rate_check(h, g, num_steps=600 if q else 800) for g in gammas for h in (1.0, 9.0)]
        res["rates"] = rows
        print("decay rates of L = h theta^2/2 (eta = k = G = 1): numerical minimiser of S_dt vs closed forms")
        print(
            f"{'gamma':>6} {'h':>4} | {'fitted':>10} {'discrete':>10} {'continuous':>10} {'eta k h/gamma':>13} | {'dt':>6}"
        )
        for r in rows:
            gl = f"{r['gd_limit']:13.4f}" if r["gd_limit"] is not None else f"{'-':>13}"
            print(
                f"{r['gamma']:6g} {r['h']:4g} | {r['fitted']:10.6f} {r['discrete']:10.6f} {r['continuous']:10.6f} {gl} | {r['dt']:6.4f}"
            )
        big = (0.0, 1.0, 10.0, 100.0, 1e4)
        res["ratio_9_vs_1"] = {f"{g:g}": float(optimal_rate(9.0, gamma=g) / optimal_rate(1.0, gamma=g)) for g in big}
        res["ratio_9_vs_1_fitted"] = {
            f"{g:g}": next(r["fitted"] for r in rows if r["gamma"] == g and r["h"] == 9.0)
            / next(r["fitted"] for r in rows if r["gamma"] == g and r["h"] == 1.0)
            for g in gammas
        }
        print("rate ratio r(h=9)/r(h=1), closed form:", {k: round(v, 3) for k, v in res["ratio_9_vs_1"].items()})
        print("                          fitted:    ", {k: round(v, 3) for k, v in res["ratio_9_vs_1_fitted"].items()})
        # natural gradient / ballistic limits of the feedback law with a metric
        H = np.array([[3.0, 1.0], [1.0, 2.0]])
        G = np.array([[2.0, -0.5], [-0.5, 1.0]])
        A_big = feedback_matrix(H, G, gamma=1e4)
        ng = np.linalg.solve(G, H) / 1e4
        A0 = feedback_matrix(H, G, gamma=0.0)
        res["metric_limits"] = {
            "rel_err_natural_gradient_gamma_1e4": float(np.abs(A_big - ng).max() / np.abs(ng).max()),
            "A0_squared_minus_Ginv_H": float(np.abs(A0 @ A0 - np.linalg.solve(G, H)).max()),
        }
        print("feedback law with metric G:", res["metric_limits"])
        # double well
        if q:
            dw = double_well_experiment((0.0,), T=14.0, dt=0.025, num_steps=800)
        else:
            dw = double_well_experiment((0.0, 0.1, 0.3, 0.6, 1.0), num_steps=2000)
        res["double_well"] = dw
        print(
            f"\ndouble well b = {dw['b']}: global min {dw['global_min']:.3f}, barrier {dw['barrier']:.3f} "
            f"(L = {dw['L_barrier']:.3f}), local min {dw['local_min']:.3f} (L = {dw['L_local']:.3f}); theta0 = {dw['theta0']}"
        )
        print(f"  gradient flow ends at {dw['gradient_flow_end']:.4f} (local minimum)")
        for g, r in dw["runs"].items():
            print(
                f"  gamma = {g:>4}: S(stay) = {r['action_stay']:.4f}, S(cross) = {r['action_cross']:.4f} -> optimal: "
                f"{r['optimal']:5s}, ends at {r['end_optimal']:+.4f}, max|E| first half = {r['max_abs_energy_first_half']:.2e}"
            )
        # the paper's 2-D double well: minimum-action path with a fixed endpoint, convergence in dt
        if q:
            pw = paper_well_experiment((20, 40, 80), num_steps=300, bends=(0.0,))
        else:
            pw = paper_well_experiment((40, 80, 160), num_steps=1000)
        res["paper_well"] = pw
        print(
            f"\npaper's 2-D well V = (x^2-1)^2 + y^2 - 0.5x, start {pw['start']}, end {np.round(pw['end'], 6)} "
            f"(the deeper minimum, V = {pw['V_end']:.4f}), T = {pw['T']}, gamma = {pw['gamma']}"
        )
        for N, r in pw["runs"].items():
            print(
                f"  N = {N:>4} (dt = {r['dt']:.4f}): S_dt = {r['action']:.6f}, mean over points S_dt/T = "
                f"{r['action_mean']:.6f}, |grad| = {r['grad_norm']:.1e}"
            )
        print(
            f"  successive differences {np.round(pw['action_differences'], 6)}, ratio {np.round(pw['difference_ratios'], 3)}, "
            f"Richardson 2S(dt/2) - S(dt) = {np.round(pw['richardson'], 5)}; coarse vs fine path max distance "
            f"{pw['path_max_distance_coarse_fine']:.1e}"
        )
        # default dynamics
        dd = default_dynamics_experiment(num_steps=500 if q else 1500)
        res["default_dynamics"] = dd
        print(f"\ndefault dynamics (gamma = {dd['gamma']}, dt = {dd['dt']}): path at T/2 vs closed-form fixed point")
        for name, c in dd["cases"].items():
            print(
                f"  {name:>12}: path {np.round(c['path_mid'], 5)}  fixed pt (gamma_dt) {np.round(c['fixed_point_dt'], 5)} "
                f" |diff| = {c['err_dt']:.1e};  continuous fp {np.round(c['fixed_point'], 4)} (|diff| {c['err_continuous']:.1e}); "
                f"|path - theta*| = {c['dist_theta_star']:.3f}"
            )
        print(
            f"  weight decay = ridge with penalty alpha(alpha+gamma)/(eta k) = {dd['ridge_penalty']}: {np.round(dd['ridge_solution'], 5)}"
        )
        # classification
        data = classification_data(jax.random.PRNGKey(0))
        seeds = (0, 1, 2) if q else (0, 1, 2, 3, 4)
        if q:
            lrs = {"sgd": (1.0, 3.0, 10.0), "rmsprop": (0.03, 0.1, 0.3)}
        else:
            lrs = {"sgd": (0.3, 1.0, 3.0, 10.0, 30.0), "rmsprop": (0.01, 0.03, 0.1, 0.3, 1.0)}
        rules = compare_rules(data, lrs=lrs, seeds=seeds, num_steps=300 if q else 1000)
        summ = best_lr_summary(rules)
        res["classification"] = {
            "summary": summ,
            "seeds": list(seeds),
            "num_steps": 300 if q else 1000,
            "grid": {r: {"lrs": v["lrs"], "train_loss": v["train_loss"]} for r, v in rules.items()},
        }
        print(
            f"\nlogistic regression, features scaled over 100x (curvature 1e4x), batch 32, {len(seeds)} seeds, best lr each:"
        )
        for rule, s in summ.items():
            print(
                f"  {rule:>8} (lr {s['lr']:g}): train {s['train_mean']:.4f} +- {s['train_sd']:.4f}, "
                f"test {s['test_mean']:.4f} +- {s['test_sd']:.4f}, acc {s['acc_mean']:.3f} +- {s['acc_sd']:.3f}"
            )

    def prune(r: dict) -> dict:
        for name in r["default_dynamics"]["cases"]:
            r["default_dynamics"]["cases"][name].pop("path")
        r["double_well"].pop("paths")
        return r

    save_outputs("navigation", q, args.out, res, t0, lambda png: _plot(res, rules, png), to_json=prune)
    return res


def _plot(res: dict, rules: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 5, figsize=(25, 4.4))
    gs = np.logspace(-2, 3, 200)
    for j, h in enumerate((1.0, 9.0)):
        ax[0].loglog(gs, optimal_rate(h, gamma=gs), color=f"C{j}", label=f"r(γ), h = {h:g}")
        ax[0].loglog(gs, h / gs, ":", color=f"C{j}", lw=0.8, label=f"ηkh/γ (GD limit), h = {h:g}")
        ax[0].axhline(math.sqrt(h), color=f"C{j}", ls="--", lw=0.8, label=f"√(ηkh) (ballistic), h = {h:g}")
        pts = [(r["gamma"], r["fitted"]) for r in res["rates"] if r["h"] == h and r["gamma"] > 0]
        ax[0].loglog(*zip(*pts), "o", color=f"C{j}", mfc="none")
    ax[0].set(
        xlabel="discount γ (1/horizon)",
        ylabel="decay rate r",
        ylim=(1e-3, 10),
        title="rates: closed form (lines) vs minimised action (o)",
    )
    ax[0].legend(fontsize=6)
    dw = res["double_well"]
    t = np.array(dw["paths"]["t"])
    ax[1].plot(t, dw["paths"]["gradient_flow"], "k", lw=1.5, label="gradient flow")
    for j, g in enumerate(dw["runs"]):
        ax[1].plot(t, dw["paths"][g], color=f"C{j}", lw=1, label=f"optimal path, γ = {g} ({dw['runs'][g]['optimal']})")
    for y, name in ((dw["global_min"], "global min"), (dw["barrier"], "barrier"), (dw["local_min"], "local min")):
        ax[1].axhline(y, color="gray", ls=":", lw=0.8)
        ax[1].text(0.49 * t[-1], y, name, fontsize=7, ha="right", va="bottom")
    ax[1].set(xlabel="t", ylabel="θ(t)", title="double well: optimal path vs gradient flow", xlim=(0, t[-1] / 2))
    ax[1].legend(fontsize=6, loc="lower right", bbox_to_anchor=(1.0, 0.12))
    dd = res["default_dynamics"]
    for j, (name, c) in enumerate(dd["cases"].items()):
        p = np.array(c["path"])
        ax[2].plot(p[:, 0], p[:, 1], color=f"C{j}", lw=1, label=f"optimal path, {name.replace('_', ' ')}")
        ax[2].plot(
            *c["fixed_point"],
            "x",
            color=f"C{j}",
            ms=10,
            mew=2,
            label=f"closed-form fixed point, {name.replace('_', ' ')}",
        )
    ax[2].plot(*dd["theta_star"], "k*", ms=10, label="θ* (minimiser of L)")
    ax[2].plot(0, 0, "ko", ms=4)
    ax[2].set(
        xlabel="θ₁",
        ylabel="θ₂",
        title=f"default dynamics (γ = {dd['gamma']}): paths settle at fixed points",
        xlim=(-0.05, 1.9),
    )
    ax[2].legend(fontsize=6, loc="center right")
    summ = res["classification"]["summary"]
    for j, (rule, r) in enumerate(rules.items()):
        jbest = r["lrs"].index(summ[rule]["lr"])
        c = r["curves"][:, jbest, :]
        lab = "SGD (GD limit)" if rule == "sgd" else "RMSprop (ballistic, Fisher curvature)"
        ax[3].semilogy(c.mean(axis=1), color=f"C{j}", label=f"{lab}, lr {summ[rule]['lr']:g}")
        ax[3].fill_between(np.arange(c.shape[0]), c.min(axis=1), c.max(axis=1), color=f"C{j}", alpha=0.25)
    ax[3].set(
        xlabel="step",
        ylabel="full training loss",
        title=f"logistic regression, scaled features ({len(res['classification']['seeds'])} seeds)",
    )
    ax[3].legend(fontsize=7)
    pw = res["paper_well"]
    xs, ys = np.meshgrid(np.linspace(-1.5, 1.5, 200), np.linspace(-1.0, 1.0, 150))
    V = (xs**2 - 1) ** 2 + ys**2 - 0.5 * xs
    ax[4].contour(xs, ys, V, levels=np.linspace(-0.5, 2.0, 21), colors="gray", linewidths=0.6)
    for j, r in enumerate(pw["runs"].values()):
        p = np.array(r["path"])
        ax[4].plot(
            p[:, 0],
            p[:, 1],
            "o-" if j == 0 else "-",
            ms=3,
            color=f"C{j}",
            label=f"dt = {r['dt']:g}: S = {r['action']:.4f}",
        )
    ax[4].plot(*pw["start"], "k^", ms=8, label="start")
    ax[4].plot(*pw["end"], "k*", ms=10, label="end (deeper minimum)")
    ax[4].set(
        xlabel="x", ylabel="y", title=f"paper's 2-D well, T = {pw['T']:g}, γ = {pw['gamma']:g}: minimum-action paths"
    )
    ax[4].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
