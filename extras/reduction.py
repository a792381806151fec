"""Reduction mappings: optimise F(x1) = f(x1, Psi(x1)) instead of f(x1, x2).

Reproduces the claims of Markou, Ajanthan, Gould, "Sharper Convergence Rates for Nonconvex
Optimisation via Reduction Mappings" (NeurIPS 2025, arXiv 2506.08428) on mixvi's gradient
machinery: GD is ``optax.sgd(eta)``, Armijo GD is ``extras.rules.armijo_descent``, the pullback-metric
(Riemannian) step is ``extras.rules.precondition`` and every run is ``extras.rules.run_descent`` on
``mixvi.loop.scan_loop``.

    Psi(x1) = argmin_{x2} f(x1, x2)            (``argmin_map``: Newton + jax.lax.custom_root)
    F(x1)   = f(x1, Psi(x1)),   grad F(x1) = grad_{x1} f(x1, Psi(x1))        (envelope identity)
    D Psi   = -H22^{-1} H21,    hess F(x1) = H11 - H12 H22^{-1} H21 = S    (Schur complement; at every
                                                                        x1 when Psi is the exact argmin)
    G(x1)   = I + D Psi^T D Psi                                          (pullback metric of x1 -> (x1, Psi(x1)))

Because S = H11 - H12 H22^{-1} H21 <= H11 and S^{-1} = (H^{-1})_{11}, lambda_max(S) <= lambda_max(H)
and lambda_min(S) >= lambda_min(H), so kappa(F) <= kappa(f); the eigenvalues of G^{-1} S are Rayleigh
quotients of H on the tangent space of the graph of Psi, so they also lie in [lambda_min(H), lambda_max(H)]
(docs/extras/reduction.md has the derivations, also for the positive spectrum of a singular H).

Run ``python -m extras.reduction [--quick]``; results go to ``docs/extras/``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from extras._output import parse_args, save_outputs
from extras.rules import armijo_descent, precondition, run_descent
from mixvi.loop import LoopResult

PAPER = "Markou, Ajanthan, Gould, 'Sharper Convergence Rates for Nonconvex Optimisation via Reduction Mappings', arXiv 2506.08428"


# ----------------------------------------------------------------------------------------------
# the reduction


def argmin_map(
    f: Callable[[jax.Array, jax.Array], jax.Array], x2_init: jax.Array, num_newton: int = 1
) -> Callable[[jax.Array], jax.Array]:
    """Psi(x1) = argmin_{x2} f(x1, x2), by ``num_newton`` Newton steps on grad_{x2} f = 0 from
    ``x2_init`` (one step is exact when f is quadratic in x2), wrapped in ``jax.lax.custom_root`` so
    that derivatives come from the implicit function theorem, D Psi = -H22^{-1} H21 (arXiv 2506.08428,
    reduction mappings from inner optimisation problems)."""

    def psi(x1: jax.Array) -> jax.Array:
        def optimality(x2):
            return jax.grad(f, argnums=1)(x1, x2)

        def solve(fun, x0):
            def body(_, x):
                return x - jnp.linalg.solve(jax.jacobian(fun)(x), fun(x))

            return jax.lax.fori_loop(0, num_newton, body, x0)

        def tangent_solve(lin, v):
            return jnp.linalg.solve(jax.jacobian(lin)(v), v)

        return jax.lax.custom_root(optimality, jnp.asarray(x2_init), solve, tangent_solve)

    return psi


def reduced_objective(
    f: Callable[[jax.Array, jax.Array], jax.Array], psi: Callable[[jax.Array], jax.Array]
) -> Callable[[jax.Array], jax.Array]:
    """F(x1) = f(x1, Psi(x1)) (the reduced objective of arXiv 2506.08428)."""
    return lambda x1: f(x1, psi(x1))


def pullback_metric(psi: Callable[[jax.Array], jax.Array], x1: jax.Array) -> jax.Array:
    """G(x1) = I + D Psi(x1)^T D Psi(x1): the metric that x1 -> (x1, Psi(x1)) pulls back from the
    Euclidean one (||(v, D Psi v)||^2 = v^T G v)."""
    D = jax.jacobian(psi)(x1)
    return jnp.eye(x1.shape[0], dtype=D.dtype) + D.T @ D


def pullback_solve(psi: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``solve(x1, u) = G(x1)^{-1} u`` for ``extras.rules.precondition`` (the Riemannian gradient step
    x1 <- x1 - eta G^{-1} grad F)."""
    return lambda x1, u: jnp.linalg.solve(pullback_metric(psi, x1), u)


def schur_complement(H: jax.Array, n1: int) -> jax.Array:
    """S = H11 - H12 H22^{-1} H21 for the split x = (x1 in R^{n1}, x2)."""
    H11, H12, H22 = H[:n1, :n1], H[:n1, n1:], H[n1:, n1:]
    return H11 - H12 @ jnp.linalg.solve(H22, H12.T)


def positive_spectrum(M: jax.Array, N: jax.Array | None = None, rtol: float = 1e-8) -> np.ndarray:
    """Eigenvalues of the symmetric M (or of the pencil (M, N), N SPD) above rtol * the largest."""
    M = np.asarray(M, float)
    if N is not None:
        L = np.linalg.cholesky(np.asarray(N, float))
        Li = np.linalg.inv(L)
        M = Li @ M @ Li.T
    e = np.linalg.eigvalsh(0.5 * (M + M.T))
    return e[e > rtol * e.max()]


def condition_number(M: jax.Array, N: jax.Array | None = None, rtol: float = 1e-8) -> float:
    """kappa on the positive spectrum: lambda_max / smallest eigenvalue above rtol * lambda_max
    (for a pencil (M, N): of N^{-1/2} M N^{-1/2})."""
    e = positive_spectrum(M, N, rtol)
    return float(e.max() / e.min())


def schur_inequalities(H: jax.Array, n1: int) -> dict:
    """Slack of every inequality between H (SPD) and S = H11 - H12 H22^{-1} H21 (each >= 0 up to
    rounding): S <= H11 (Loewner), lambda_max(S) <= lambda_max(H11) <= lambda_max(H),
    lambda_min(S) >= lambda_min(H), kappa(S) <= kappa(H), the interlacing
    lambda_i(H) <= mu_i <= lambda_{i+n2}(H) of mu = eig(G^{-1} S), G = I + D^T D, D = -H22^{-1} H21;
    and the identity error ||S^{-1} - (H^{-1})_{11}||."""
    H = np.asarray(H, float)
    n = H.shape[0]
    S = H[:n1, :n1] - H[:n1, n1:] @ np.linalg.solve(H[n1:, n1:], H[n1:, :n1])
    D = -np.linalg.solve(H[n1:, n1:], H[n1:, :n1])
    G = np.eye(n1) + D.T @ D
    lh = np.linalg.eigvalsh(H)
    ls = np.linalg.eigvalsh(S)
    l11 = np.linalg.eigvalsh(H[:n1, :n1])
    mu = np.sort(positive_spectrum(S, G, rtol=0.0))
    return {
        "H11 - S >= 0": float(np.linalg.eigvalsh(H[:n1, :n1] - S).min()),
        "lmax(H11) - lmax(S)": float(l11[-1] - ls[-1]),
        "lmax(H) - lmax(H11)": float(lh[-1] - l11[-1]),
        "lmin(S) - lmin(H)": float(ls[0] - lh[0]),
        "kappa(H) - kappa(S)": float(lh[-1] / lh[0] - ls[-1] / ls[0]),
        "interlacing lower": float(np.min(mu - lh[:n1])),
        "interlacing upper": float(np.min(lh[n - n1 :] - mu)),
        "S^-1 - (H^-1)_11": float(np.abs(np.linalg.inv(S) - np.linalg.inv(H)[:n1, :n1]).max()),
    }


# ----------------------------------------------------------------------------------------------
# (a) a quadratic with a 3-dimensional affine minimiser set


def manifold_quadratic(
    key: jax.Array, n: int = 20, k: int = 3, lo: float = 1e-3, hi: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """H = Q diag(0 (k times), logspace(lo, hi, n - k)) Q^T with Q Haar-random, and a random x*:
    f(x) = (1/2)(x - x*)^T H (x - x*) has the k-dimensional affine minimiser set x* + null(H)."""
    kq, kx = jax.random.split(key)
    Q, _ = jnp.linalg.qr(jax.random.normal(kq, (n, n)))
    lam = jnp.concatenate([jnp.zeros(k), jnp.logspace(math.log10(lo), math.log10(hi), n - k)])
    return (Q * lam) @ Q.T, jax.random.normal(kx, (n,))


def steps_to(values: np.ndarray, target: float) -> int:
    """First index k with values[j] <= target for all j >= k; -1 if the last value is above target."""
    v = np.asarray(values)
    bad = np.nonzero(v > target)[0]
    if len(bad) == 0:
        return 0
    return -1 if bad[-1] == len(v) - 1 else int(bad[-1]) + 1


def quadratic_experiment(
    key: jax.Array,
    n: int = 20,
    k: int = 3,
    n1: int = 8,
    tol: float = 1e-10,
    num_steps: int = 12000,
    num_steps_reduced: int = 2000,
) -> dict:
    """Joint GD on f (eta = 1/lambda_max(H)) from (x1_0, Psi(x1_0)) vs GD on F (eta = 1/lambda_max(S))
    and pullback-metric GD on F (eta = 1/lambda_max(G^{-1} S)) from x1_0: condition numbers on the
    positive spectrum, steps to f - f* <= tol (f* = 0) and the gap curves."""
    H, xs = manifold_quadratic(key, n, k)

    def f(x1, x2):
        e = jnp.concatenate([x1, x2]) - xs
        return 0.5 * e @ H @ e

    psi = argmin_map(f, jnp.zeros(n - n1))
    F = reduced_objective(f, psi)
    x10 = xs[:n1] + jax.random.normal(jax.random.fold_in(key, 1), (n1,))
    S = schur_complement(H, n1)
    G = jax.jit(pullback_metric, static_argnums=0)(psi, x10)
    hF = jax.jit(jax.hessian(F))(x10)
    lmax = {
        "joint": float(jnp.linalg.eigvalsh(H)[-1]),
        "reduced": float(positive_spectrum(S).max()),
        "reduced_pullback": float(positive_spectrum(S, G).max()),
    }
    joint = run_descent(
        lambda x: f(x[:n1], x[n1:]), optax.sgd(1.0 / lmax["joint"]), jnp.concatenate([x10, psi(x10)]), num_steps
    )
    red = run_descent(F, optax.sgd(1.0 / lmax["reduced"]), x10, num_steps_reduced)
    redg = run_descent(
        F,
        optax.chain(precondition(pullback_solve(psi)), optax.sgd(1.0 / lmax["reduced_pullback"])),
        x10,
        num_steps_reduced,
    )
    gaps = {name: np.asarray(r.losses) for name, r in (("joint", joint), ("reduced", red), ("reduced_pullback", redg))}
    out = {
        "n": n,
        "n1": n1,
        "k": k,
        "tol": tol,
        "kappa_f": condition_number(H),
        "kappa_F": condition_number(S),
        "kappa_F_pullback": condition_number(S, G),
        "nullity_H": int(n - len(positive_spectrum(H))),
        "nullity_S": int(n1 - len(positive_spectrum(S))),
        "hessF_minus_S": float(jnp.abs(hF - S).max()),
        "steps": {name: steps_to(g, tol) for name, g in gaps.items()},
        "etas": {name: 1.0 / v for name, v in lmax.items()},
    }
    out["kappa_ratio"] = out["kappa_f"] / out["kappa_F"]
    sj, sr = out["steps"]["joint"], out["steps"]["reduced"]
    out["steps_ratio"] = sj / sr if sj > 0 and sr > 0 else None
    out["gaps"] = gaps
    out["spectra"] = {"H": positive_spectrum(H), "S": positive_spectrum(S), "G^-1 S": positive_spectrum(S, G)}
    return out


# ----------------------------------------------------------------------------------------------
# (b) variable projection for a sum of two exponentials


def two_exponentials_data(
    key: jax.Array,
    a: tuple[float, ...] = (0.5, 2.0),
    b: tuple[float, ...] = (1.0, -0.5),
    m: int = 40,
    t_max: float = 4.0,
    noise: float = 1e-3,
) -> tuple[jax.Array, jax.Array]:
    """t = linspace(0, t_max, m), y(t) = sum_j b_j exp(-a_j t) + noise * N(0, 1)."""
    t = jnp.linspace(0.0, t_max, m)
    y = jnp.exp(-t[:, None] * jnp.asarray(a)) @ jnp.asarray(b) + noise * jax.random.normal(key, (m,))
    return t, y


def exp_fit_objective(a: jax.Array, b: jax.Array, t: jax.Array, y: jax.Array) -> jax.Array:
    """f(a, b) = (1/2) ||Phi(a) b - y||^2 with Phi(a)_{ij} = exp(-a_j t_i) (separable least squares;
    variable projection eliminates the linear b: Psi(a) = Phi(a)^+ y)."""
    r = jnp.exp(-t[:, None] * a) @ b - y
    return 0.5 * r @ r


def reference_fit(t: jax.Array, y: jax.Array, a0: jax.Array) -> tuple[np.ndarray, float]:
    """(a*, f*) by Gauss-Newton on the reduced residual (float64 recommended): the target of the gaps."""
    f = lambda a, b: exp_fit_objective(a, b, t, y)  # noqa: E731
    psi = argmin_map(f, jnp.zeros(a0.shape[0]))
    res = lambda a: jnp.exp(-t[:, None] * a) @ psi(a) - y  # noqa: E731
    scales = 0.5 ** jnp.arange(40, dtype=t.dtype)

    @jax.jit
    def gn_step(a):
        r, J = res(a), jax.jacobian(res)(a)
        step = jnp.linalg.lstsq(J, r)[0]
        vals = jax.vmap(lambda c: 0.5 * jnp.sum(res(a - c * step) ** 2))(scales)
        ok = vals <= 0.5 * r @ r
        return jnp.where(jnp.any(ok), a - scales[jnp.argmax(ok)] * step, a)

    a = jnp.asarray(a0)
    for _ in range(100):
        a = gn_step(a)
    r = res(a)
    return np.asarray(a), float(0.5 * r @ r)


def varpro_experiment(
    key: jax.Array,
    a0: tuple[float, float] = (0.2, 3.0),
    num_steps: int = 45000,
    num_steps_reduced: int = 6000,
    rel_tols: tuple[float, ...] = (1e-2, 1e-4, 1e-6, 1e-8),
    max_step: float = 1e4,
) -> dict:
    """Armijo GD on the joint f(a, b) from (a0, Psi(a0)) vs Armijo GD on F(a) = f(a, Psi(a)) (Euclidean
    and pullback metric) from a0; steps to (f - f*) <= rel_tol * f*, the condition numbers of hess f
    and hess F = S at the optimum, and the gap curves."""
    t, y = two_exponentials_data(key)
    f = lambda a, b: exp_fit_objective(a, b, t, y)  # noqa: E731
    psi = argmin_map(f, jnp.zeros(2))
    F = reduced_objective(f, psi)
    a0 = jnp.asarray(a0, t.dtype)
    a_star, f_star = reference_fit(t, y, a0)
    b0 = jax.jit(psi)(a0)
    runs: dict[str, LoopResult] = {
        "joint": run_descent(lambda p: f(p[:2], p[2:]), armijo_descent(max_step), jnp.concatenate([a0, b0]), num_steps),
        "reduced": run_descent(F, armijo_descent(max_step), a0, num_steps_reduced),
        "reduced_pullback": run_descent(
            F, optax.chain(precondition(pullback_solve(psi)), armijo_descent(max_step)), a0, num_steps_reduced // 4
        ),
    }
    gaps = {k: np.asarray(r.losses) - f_star for k, r in runs.items()}

    @jax.jit
    def at_optimum(a):
        Hf = jax.hessian(lambda p: f(p[:2], p[2:]))(jnp.concatenate([a, psi(a)]))
        return Hf, jax.hessian(F)(a), pullback_metric(psi, a), psi(a)

    Hf, S, G, b_star = at_optimum(jnp.asarray(a_star))
    out = {
        "a0": list(a0.tolist()),
        "a_star": a_star.tolist(),
        "b_star": np.asarray(b_star).tolist(),
        "f_star": f_star,
        "kappa_f_at_opt": condition_number(Hf, rtol=0.0),
        "kappa_F_at_opt": condition_number(S, rtol=0.0),
        "kappa_F_pullback_at_opt": condition_number(S, G, rtol=0.0),
        "schur_error_at_opt": float(jnp.abs(S - schur_complement(Hf, 2)).max()),
        "num_steps": {"joint": num_steps, "reduced": num_steps_reduced, "reduced_pullback": num_steps_reduced // 4},
        "steps": {k: {f"{tol:g}": steps_to(g, tol * f_star) for tol in rel_tols} for k, g in gaps.items()},
        "final_a": {k: np.asarray(r.state.params[:2]).tolist() for k, r in runs.items()},
    }
    out["gaps"] = gaps
    return out


def envelope_check(key: jax.Array, num_points: int = 5) -> dict:
    """At random a: max |grad F(a) - grad_a f(a, Psi(a))| (autodiff through custom_root vs the
    partial gradient), max |grad F - central finite differences| and max |hess F - S(a, Psi(a))|,
    for the two-exponential f."""
    t, y = two_exponentials_data(jax.random.fold_in(key, 0))
    f = lambda a, b: exp_fit_objective(a, b, t, y)  # noqa: E731
    psi = argmin_map(f, jnp.zeros(2))
    F = reduced_objective(f, psi)
    A = jax.random.uniform(jax.random.fold_in(key, 1), (num_points, 2), minval=0.2, maxval=3.0)

    @jax.jit
    def errors(a):
        gF = jax.grad(F)(a)
        g1 = jax.grad(f, argnums=0)(a, psi(a))
        h = 1e-6
        fd = jnp.stack([(F(a + h * e) - F(a - h * e)) / (2 * h) for e in jnp.eye(2, dtype=a.dtype)])
        H = jax.hessian(lambda p: f(p[:2], p[2:]))(jnp.concatenate([a, psi(a)]))
        D = jax.jacobian(psi)(a)
        return jnp.stack(
            [
                jnp.abs(gF - g1).max() / (1 + jnp.abs(g1).max()),
                jnp.abs(gF - fd).max() / (1 + jnp.abs(fd).max()),
                jnp.abs(jax.hessian(F)(a) - schur_complement(H, 2)).max() / (1 + jnp.abs(H).max()),
                jnp.abs(D + jnp.linalg.solve(H[2:, 2:], H[2:, :2])).max() / (1 + jnp.abs(D).max()),
            ]
        )

    keep = jnp.abs(A[:, 0] - A[:, 1]) >= 0.1
    e_env, e_fd, e_hess, e_dpsi = (float(v) for v in jnp.max(jax.vmap(errors)(A[keep]), axis=0))
    return {"envelope": e_env, "finite_difference": e_fd, "hessian_schur": e_hess, "dpsi_implicit": e_dpsi}


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    """``python -m extras.reduction [--quick] [--out DIR]``: (a) the manifold quadratic over seeds,
    (b) variable projection for two exponentials, (c) envelope / Schur checks; JSON + PNG."""
    args = parse_args(main.__doc__, argv, "fewer seeds and a shorter joint run (< 30 s)")
    t0 = time.time()
    res: dict = {"paper": PAPER, "quick": args.quick}
    with jax.enable_x64(True):
        seeds = range(1) if args.quick else range(5)
        qa = [quadratic_experiment(jax.random.key(s)) for s in seeds]
        res["quadratic"] = [{k: v for k, v in q.items() if k not in ("gaps", "spectra")} for q in qa]
        print("(a) quadratic in R^20, minimiser set = 3-dim affine manifold, spectrum logspace(1e-3, 1), x1 in R^8")
        print(
            f"{'seed':>4} {'kappa(f)':>9} {'kappa(F)':>9} {'kappa_G(F)':>10} {'ratio':>6} | {'GD f':>6} {'GD F':>6} "
            f"{'RGD F':>6} {'ratio':>6} | nullity H, S | max|hess F - S|"
        )
        for s, q in zip(seeds, qa):
            st = q["steps"]
            print(
                f"{s:4d} {q['kappa_f']:9.1f} {q['kappa_F']:9.1f} {q['kappa_F_pullback']:10.1f} {q['kappa_ratio']:6.1f} | "
                f"{st['joint']:6d} {st['reduced']:6d} {st['reduced_pullback']:6d} {q['steps_ratio']:6.1f} | "
                f"{q['nullity_H']:2d} {q['nullity_S']:2d}        | {q['hessF_minus_S']:.1e}"
            )
        vp = varpro_experiment(jax.random.key(0), num_steps=35000 if args.quick else 45000)
        res["varpro"] = {k: v for k, v in vp.items() if k != "gaps"}
        print(
            "\n(b) variable projection, y = sum_j b_j exp(-a_j t), 40 points on [0, 4], a = (0.5, 2), b = (1, -0.5), noise 1e-3"
        )
        print(
            f"    a* = {np.round(vp['a_star'], 5)}, b* = {np.round(vp['b_star'], 5)}, f* = {vp['f_star']:.4e}; "
            f"kappa at optimum: f {vp['kappa_f_at_opt']:.3g}, F {vp['kappa_F_at_opt']:.3g}, F pullback {vp['kappa_F_pullback_at_opt']:.3g}"
        )
        print("    Armijo-GD steps to (f - f*) <= tol * f*  from a0 = (0.2, 3.0) (-1: not within the run)")
        tols = list(vp["steps"]["joint"])
        print("    " + f"{'tol':>14}" + "".join(f"{t:>9}" for t in tols))
        for name, st in vp["steps"].items():
            print("    " + f"{name:>14}" + "".join(f"{st[t]:9d}" for t in tols))
        env = envelope_check(jax.random.key(3))
        res["envelope"] = env
        print(
            "\n(c) envelope identity / implicit derivative / Schur Hessian (relative max errors):",
            {k: f"{v:.1e}" for k, v in env.items()},
        )
        worst: dict = {}
        rng = np.random.default_rng(0)
        for _ in range(200 if not args.quick else 50):
            n = int(rng.integers(3, 16))
            n1 = int(rng.integers(1, n))
            A = rng.normal(size=(n, n))
            H = A @ A.T + 10.0 ** rng.uniform(-4, 0) * np.eye(n)
            for k, v in schur_inequalities(jnp.asarray(H), n1).items():
                worst[k] = (
                    min(worst.get(k, np.inf), v)
                    if k != "S^-1 - (H^-1)_11"
                    else max(worst.get(k, 0.0), v / np.linalg.cond(H))
                )
        res["schur_random_spd"] = worst
        print(
            "    random SPD (n in 3..15): smallest slack of each inequality (>= 0 holds):",
            {k: f"{v:.1e}" for k, v in worst.items()},
        )
    save_outputs("reduction", args.quick, args.out, res, t0, lambda png: _plot(qa[0], vp, png))
    return res


def _plot(q: dict, vp: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    lab = {"joint": "GD on f(x₁, x₂)", "reduced": "GD on F(x₁)", "reduced_pullback": "GD on F, pullback metric G"}
    for j, (k, g) in enumerate(q["gaps"].items()):
        ax[0].loglog(
            np.arange(1, len(g) + 1), np.maximum(g, 1e-18), color=f"C{j}", label=f"{lab[k]} ({q['steps'][k]} steps)"
        )
    ax[0].axhline(q["tol"], color="k", ls=":", lw=0.8)
    ax[0].set(
        xlabel="step + 1",
        ylabel="f − f*",
        title=f"(a) quadratic, κ(f) = {q['kappa_f']:.0f} → κ(F) = {q['kappa_F']:.0f}",
        ylim=(1e-14, None),
    )
    ax[0].legend(fontsize=8)
    specs = [
        ("H = hess f", q["spectra"]["H"]),
        ("S = hess F", q["spectra"]["S"]),
        ("G⁻¹S (pullback)", q["spectra"]["G^-1 S"]),
    ]
    for i, (_, e) in enumerate(specs):
        ax[1].semilogx(e, np.full(len(e), i), "o", ms=6, mfc="none", color=f"C{i}")
        ax[1].text(e.max() * 1.3, i, f"κ = {e.max() / e.min():.1f}", va="center", fontsize=8)
    ax[1].set_yticks(range(len(specs)), [s[0] for s in specs])
    ax[1].set_ylim(-0.6, len(specs) - 0.4)
    ax[1].set_xlim(5e-4, 10)
    ax[1].set(xlabel="positive eigenvalues", title="(a) positive spectrum before / after reduction (seed 0)")
    for j, (k, g) in enumerate(vp["gaps"].items()):
        rel = np.maximum(g / vp["f_star"], 1e-14)
        ax[2].loglog(
            np.arange(1, len(rel) + 1),
            rel,
            color=f"C{j}",
            label=lab[k].replace("x₁, x₂", "a, b").replace("x₁", "a").replace("GD", "Armijo GD"),
        )
    ax[2].set(xlabel="step + 1", ylabel="(f − f*) / f*", title="(b) two exponentials, variable projection")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
