"""Large stepsizes accelerate gradient descent for regularized logistic regression.

Reproduces Wu, Marion, Bartlett, "Large Stepsizes Accelerate Gradient Descent for Regularized
Logistic Regression" (NeurIPS 2025, arXiv 2506.02336) on mixvi's gradient machinery: GD is
``optax.sgd(eta)`` (step in the state via ``optax.inject_hyperparams`` so a batch of step sizes is
vmapped), each step is ``extras.rules.descent_step`` and the loop is ``mixvi.loop.scan_loop``.

Objective (separable data, ``||x_i|| <= 1``, margin gamma):

    Ltilde(w) = (1/n) sum_i ln(1 + exp(-y_i x_i^T w)) + (lam/2) ||w||^2,
    GD:  w_{t+1} = w_t - eta grad Ltilde(w_t),  w_0 = 0.

Claims checked: the stable step ``eta = 1/L`` needs ~kappa = L/lam steps; a large step
``eta ~ 1/sqrt(lam)`` (loss non-monotone at first) needs ~sqrt(kappa); GD converges locally iff
``eta < 2 / lambda_max(hess Ltilde(w_lam))``, for the one-point 1-D data set (x = y = 1) that is

    eta_crit = 2 / (lam (1 + w (1 - lam w))),  w the root of  lam w = 1/(1 + e^w)

(≈ 2.2/(lam ln(1/lam)) for lam in [1e-5, 1e-2], → 2/(lam ln(1/lam)) as lam → 0).

Run ``python -m extras.large_stepsize [--quick]``; results go to ``docs/extras/``.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from extras._output import parse_args, save_outputs
from extras.rules import DescentState, descent_step
from mixvi.loop import scan_loop, tree_all_finite

PAPER = "Wu, Marion, Bartlett, 'Large Stepsizes Accelerate Gradient Descent for Regularized Logistic Regression', arXiv 2506.02336"


def logistic_objective(w: jax.Array, X: jax.Array, y: jax.Array, lam: float) -> jax.Array:
    """Ltilde(w) = (1/n) sum_i ln(1 + exp(-y_i x_i^T w)) + (lam/2)||w||^2 (eq. (1) of arXiv 2506.02336)."""
    return jnp.mean(jnp.logaddexp(0.0, -y * (X @ w))) + 0.5 * lam * jnp.dot(w, w)


def hard_dataset(gamma: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """Two points in 2-D, both labelled +1: x_1 = (gamma, sqrt(1-gamma^2)), x_2 = (gamma, -sqrt(1-gamma^2)/2).

    Margins of a unit w = (cos t, sin t) are gamma cos t + a sin t and gamma cos t - (a/2) sin t
    (a = sqrt(1 - gamma^2)); any t != 0 lowers one of them, so the max-margin direction is e_1 and
    the margin is exactly gamma; the orthogonal direction carries curvature ~1 (the "hard",
    non-separable direction). Not symmetric, so GD does not stay on the e_1 axis.
    """
    a = math.sqrt(1.0 - gamma**2)
    X = jnp.array([[gamma, a], [gamma, -a / 2.0]])
    return X, jnp.ones(2, X.dtype)


def random_separable_dataset(
    key: jax.Array, n: int = 40, d: int = 10, gamma: float = 0.1, spread: float = 2.0
) -> tuple[jax.Array, jax.Array]:
    """n unit-norm points x_i = (y_i u_i, sqrt(1 - u_i^2) v_i) with labels y_i = +-1 (fair coin),
    u_i ~ Uniform[gamma, spread*gamma] and v_i uniform on the unit sphere of R^{d-1}.

    Separable by w* = e_1 with margin >= gamma (y_i x_i^T e_1 = u_i); like ``hard_dataset`` the
    separating direction is weak and the orthogonal directions carry most of the norm, so a large
    step enters the oscillating (edge-of-stability) phase.
    """
    if not 0 < gamma * spread <= 1:
        raise ValueError("need 0 < gamma * spread <= 1")
    k1, k2, k3 = jax.random.split(key, 3)
    u = jax.random.uniform(k1, (n,), minval=gamma, maxval=spread * gamma)
    y = jnp.where(jax.random.bernoulli(k2, 0.5, (n,)), 1.0, -1.0).astype(u.dtype)
    V = jax.random.normal(k3, (n, d - 1), u.dtype)
    V = V / jnp.linalg.norm(V, axis=1, keepdims=True)
    X = jnp.concatenate([(y * u)[:, None], jnp.sqrt(1.0 - u**2)[:, None] * V], axis=1)
    return X, y


def smoothness(X: jax.Array, lam: float) -> float:
    """L = lambda_max(X^T X / n)/4 + lam, the global smoothness of Ltilde (logistic loss'' <= 1/4)."""
    return float(jnp.linalg.eigvalsh(X.T @ X / X.shape[0])[-1]) / 4.0 + lam


@partial(jax.jit, static_argnames="num_steps")
def newton_minimizer(X: jax.Array, y: jax.Array, lam: float, num_steps: int = 80) -> jax.Array:
    """The reference optimum w_lam = argmin Ltilde by damped Newton from 0 (Armijo backtracking over
    t in {1, 1/2, ..., 2^-39}). Use float64 (``jax.enable_x64``) for a 1e-6 loss-gap criterion."""
    f = partial(logistic_objective, X=X, y=y, lam=lam)
    ts = 0.5 ** jnp.arange(40, dtype=X.dtype)

    def body(_, w):
        g = jax.grad(f)(w)
        d = jnp.linalg.solve(jax.hessian(f)(w), g)
        f0 = f(w)
        vals = jax.vmap(lambda t: f(w - t * d))(ts)
        ok = vals <= f0 - 1e-4 * ts * jnp.dot(g, d)
        t = jnp.where(jnp.any(ok), ts[jnp.argmax(ok)], 0.0)
        return w - t * d

    return jax.lax.fori_loop(0, num_steps, body, jnp.zeros(X.shape[1], X.dtype))


def stability_threshold(X: jax.Array, y: jax.Array, lam: float, w_opt: jax.Array | None = None) -> float:
    """eta_crit = 2 / lambda_max(hess Ltilde(w_lam)): GD is locally stable at w_lam iff eta < eta_crit."""
    if w_opt is None:
        w_opt = newton_minimizer(X, y, lam)
    H = jax.hessian(logistic_objective)(w_opt, X, y, lam)
    return 2.0 / float(jnp.linalg.eigvalsh(H)[-1])


def one_point_minimizer(lam: float) -> float:
    """w_lam for the one-point 1-D data set (x = y = 1): the root of lam w = 1/(1 + e^w) (bisection, float64)."""
    lo, hi = 0.0, 1.0 / lam
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if lam * mid - 1.0 / (1.0 + math.exp(min(mid, 700.0))) > 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def one_point_threshold(lam: float) -> float:
    """eta_crit = 2/Ltilde''(w_lam) = 2/(lam (1 + w (1 - lam w))) for x = y = 1, using
    sigma(-w) = lam w and sigma(w) = 1 - lam w at the optimum (Ltilde'' = sigma(w) sigma(-w) + lam)."""
    w = one_point_minimizer(lam)
    return 2.0 / (lam * (1.0 + w * (1.0 - lam * w)))


class GDRuns(NamedTuple):
    """A batch of GD runs: ``losses[t, j]`` = Ltilde(w_t) and ``dists[t, j]`` = ||w_t - w_lam|| for
    step size ``etas[j]`` (t = 0..num_steps-1), ``final`` the iterates w_T (m, d)."""

    etas: np.ndarray
    losses: np.ndarray
    dists: np.ndarray
    final: np.ndarray


def run_gd(
    X: jax.Array, y: jax.Array, lam: float, etas: np.ndarray, num_steps: int, w_opt: jax.Array | None = None
) -> GDRuns:
    """Constant-step GD w_{t+1} = w_t - eta grad Ltilde(w_t) from w_0 = 0 for every eta in ``etas``
    at once (``optax.inject_hyperparams(optax.sgd)``, vmapped ``extras.rules.descent_step``, one
    ``mixvi.loop.scan_loop``). Raises ``mixvi.loop.DivergenceError`` on a non-finite value."""
    if w_opt is None:
        w_opt = newton_minimizer(X, y, lam)
    etas_j = jnp.asarray(np.asarray(etas, dtype=np.float64), X.dtype)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)
    step1 = descent_step(partial(logistic_objective, X=X, y=y, lam=lam), tx)

    def init_one(eta):
        w0 = jnp.zeros(X.shape[1], X.dtype)
        s = tx.init(w0)
        s = s._replace(hyperparams={**s.hyperparams, "learning_rate": eta})
        return DescentState(w0, s)

    def step(state):
        new, loss = jax.vmap(step1)(state)
        dist = jnp.linalg.norm(state.params - w_opt, axis=-1)
        return new, jnp.stack([loss, dist])

    def is_ok(state, rec):
        return jnp.all(jnp.isfinite(rec)) & tree_all_finite(state)

    res = scan_loop(step, jax.vmap(init_one)(etas_j), num_steps, is_ok=is_ok)
    rec = np.asarray(res.losses)
    return GDRuns(np.asarray(etas), rec[:, 0], rec[:, 1], np.asarray(res.state.params))


def steps_to_gap(losses: np.ndarray, loss_star: float, tol: float = 1e-6) -> np.ndarray:
    """For each column, the first t with Ltilde(w_s) - Ltilde(w_lam) <= tol for all s >= t in the run;
    -1 if the last recorded gap is above tol (not reached / not settled)."""
    gap = np.asarray(losses) - loss_star
    if gap.ndim == 1:
        gap = gap[:, None]
    out = []
    for j in range(gap.shape[1]):
        bad = np.nonzero(gap[:, j] > tol)[0]
        if len(bad) == 0:
            out.append(0)
        elif bad[-1] == gap.shape[0] - 1:
            out.append(-1)
        else:
            out.append(int(bad[-1]) + 1)
    return np.array(out)


def num_increases(losses: np.ndarray, rtol: float = 1e-9) -> int:
    """Number of steps t with Ltilde(w_{t+1}) > Ltilde(w_t) (1 + rtol): > 0 means a non-monotone run."""
    losses = np.asarray(losses)
    return int(np.sum(losses[1:] > losses[:-1] * (1.0 + rtol)))


def compare_stepsizes(
    X: jax.Array,
    y: jax.Array,
    lam: float,
    *,
    large_c: float = 1.0,
    edge: float = 0.95,
    above: float = 1.05,
    tol: float = 1e-6,
    num_steps: int | None = None,
    extra_c: tuple[float, ...] = (),
) -> dict:
    """Steps to an Ltilde gap of ``tol`` for eta = 1/L, eta = large_c/sqrt(lam), eta = edge*eta_crit
    and eta = above*eta_crit (plus eta = c/sqrt(lam) for c in ``extra_c``), all from w_0 = 0.

    Returns a dict with the steps (-1: not reached), the final distance ||w_T - w_lam|| and the number
    of loss increases of each run, kappa = L/lam and the speed-ups over eta = 1/L.
    """
    w_opt = newton_minimizer(X, y, lam)
    loss_star = float(logistic_objective(w_opt, X, y, lam))
    L = smoothness(X, lam)
    thr = stability_threshold(X, y, lam, w_opt)
    names = ["1/L", f"{large_c:g}/sqrt(lam)", f"{edge:g} eta_crit", f"{above:g} eta_crit"]
    names += [f"{c:g}/sqrt(lam)" for c in extra_c]
    etas = np.array([1 / L, large_c / math.sqrt(lam), edge * thr, above * thr] + [c / math.sqrt(lam) for c in extra_c])
    if num_steps is None:
        num_steps = int(0.3 / lam) + 3000
    runs = run_gd(X, y, lam, etas, num_steps, w_opt)
    steps = steps_to_gap(runs.losses, loss_star, tol)
    out = {
        "lam": lam,
        "L": L,
        "kappa": L / lam,
        "eta_crit": thr,
        "norm_w_lam": float(jnp.linalg.norm(w_opt)),
        "loss_star": loss_star,
        "num_steps": num_steps,
        "runs": {},
    }
    for j, name in enumerate(names):
        out["runs"][name] = {
            "eta": float(etas[j]),
            "steps": int(steps[j]),
            "final_dist": float(runs.dists[-1, j]),
            "loss_increases": num_increases(runs.losses[:, j]),
        }
    s0 = out["runs"]["1/L"]["steps"]
    for name in names[1:3] + names[4:]:
        s = out["runs"][name]["steps"]
        out["runs"][name]["speedup"] = (s0 / s) if (s > 0 and s0 > 0) else None
    return out


def _fit_slope(lams: list[float], steps: list[int]) -> float | None:
    pts = [(math.log(1 / lam), math.log(s)) for lam, s in zip(lams, steps) if s > 0]
    if len(pts) < 2:
        return None
    a = np.array(pts)
    return float(np.polyfit(a[:, 0], a[:, 1], 1)[0])


def threshold_check(
    X: jax.Array, y: jax.Array, lam: float, factors: tuple[float, ...] = (0.95, 1.05), num_steps: int = 20000
) -> dict:
    """GD from 0 at eta = f * eta_crit for each factor f: the final distance ||w_T - w_lam|| and the
    largest distance over the last 10% of the run (a run converges iff both are ~0)."""
    w_opt = newton_minimizer(X, y, lam)
    thr = stability_threshold(X, y, lam, w_opt)
    runs = run_gd(X, y, lam, np.array(factors) * thr, num_steps, w_opt)
    tail = runs.dists[-max(1, num_steps // 10) :]
    return {
        "lam": lam,
        "eta_crit": thr,
        "factors": list(factors),
        "final_dist": runs.dists[-1].tolist(),
        "tail_max_dist": tail.max(axis=0).tolist(),
        "dists": runs.dists,
    }


def main(argv: list[str] | None = None) -> dict:
    """``python -m extras.large_stepsize [--quick] [--out DIR]``: the steps-to-1e-6 table for
    both data sets over lam, the eta = c/sqrt(lam) sweep, the threshold checks; JSON + PNG."""
    args = parse_args(main.__doc__, argv, "fewer lam values (< 30 s)")
    t0 = time.time()
    lams = [1e-3, 1e-4, 1e-5] if args.quick else [1e-2, 1e-3, 1e-4, 3e-5, 1e-5]
    results: dict = {"paper": PAPER, "quick": args.quick, "tol": 1e-6, "datasets": {}}
    with jax.enable_x64(True):
        datasets = {
            "hard 2-D (gamma=0.1)": hard_dataset(0.1),
            "random (n=40, d=10, gamma=0.1)": random_separable_dataset(jax.random.key(0), 40, 10, 0.1),
        }
        extra_c = () if args.quick else (0.1, 0.3, 3.0)
        for dname, (X, y) in datasets.items():
            rows = [compare_stepsizes(X, y, lam, extra_c=extra_c) for lam in lams]
            slopes = {
                name: _fit_slope(
                    [r["lam"] for r in rows if r["lam"] <= 1e-3],
                    [r["runs"][name]["steps"] for r in rows if r["lam"] <= 1e-3],
                )
                for name in ("1/L", "1/sqrt(lam)", "0.95 eta_crit")
            }
            results["datasets"][dname] = {"rows": rows, "slope_steps_vs_1_over_lam": slopes}
            print(f"\n{dname}: steps to Ltilde - Ltilde* <= 1e-6 from w0 = 0 (-1: not reached)")
            print(
                f"{'lam':>7} {'kappa':>8} {'eta_crit':>9} | {'1/L':>7} {'1/sqrt':>7} {'.95crit':>7} | "
                f"{'x(1/sqrt)':>9} {'x(.95crit)':>10} | {'dist(1.05crit)':>14} {'incr(1/sqrt)':>12}"
            )
            for r in rows:
                R = r["runs"]
                sp = [R[k]["speedup"] for k in ("1/sqrt(lam)", "0.95 eta_crit")]
                print(
                    f"{r['lam']:7.0e} {r['kappa']:8.0f} {r['eta_crit']:9.1f} | {R['1/L']['steps']:7d} "
                    f"{R['1/sqrt(lam)']['steps']:7d} {R['0.95 eta_crit']['steps']:7d} | "
                    + " ".join(f"{s:9.1f}" if s else f"{'-':>9}" for s in sp)
                    + f"  | {R['1.05 eta_crit']['final_dist']:14.3g} {R['1/sqrt(lam)']['loss_increases']:12d}"
                )
            print(
                "fitted exponent of steps vs 1/lam (lam <= 1e-3):",
                {k: (round(v, 2) if v else v) for k, v in slopes.items()},
            )
            if extra_c:
                r = rows[-1]
                print(
                    f"eta = c/sqrt(lam) at lam = {r['lam']:g}: "
                    + ", ".join(f"c={c:g}: {r['runs'][f'{c:g}/sqrt(lam)']['steps']}" for c in (0.1, 0.3, 1.0, 3.0))
                )
        # threshold: one-point 1-D data set and the hard 2-D data set
        one_X, one_y = jnp.ones((1, 1)), jnp.ones(1)
        thr_rows = []
        for lam in [1e-2, 1e-3, 1e-4] if args.quick else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]:
            exact = one_point_threshold(lam)
            hess = stability_threshold(one_X, one_y, lam)
            thr_rows.append(
                {
                    "lam": lam,
                    "eta_crit": exact,
                    "eta_crit_hessian": hess,
                    "ratio_to_1/(lam ln(1/lam))": exact * lam * math.log(1 / lam),
                }
            )
        results["one_point_threshold"] = thr_rows
        print("\none-point 1-D data (x = y = 1): eta_crit = 2/(lam(1 + w(1 - lam w)))")
        for r in thr_rows:
            print(
                f"  lam={r['lam']:7.0e}  eta_crit={r['eta_crit']:12.2f}  (Hessian: {r['eta_crit_hessian']:12.2f})"
                f"  eta_crit*lam*ln(1/lam) = {r['ratio_to_1/(lam ln(1/lam))']:.3f}"
            )
        checks = {}
        lam_c = 1e-3
        for name, (X, y) in [("one-point 1-D", (one_X, one_y)), ("hard 2-D", datasets["hard 2-D (gamma=0.1)"])]:
            c = threshold_check(X, y, lam_c, factors=(0.95, 0.99, 1.01, 1.05), num_steps=3000 if args.quick else 20000)
            checks[name] = c
            print(
                f"{name}, lam={lam_c:g}: eta/eta_crit -> final ||w_T - w_lam||: "
                + ", ".join(f"{f:g}: {d:.2e}" for f, d in zip(c["factors"], c["final_dist"]))
            )
        results["threshold_checks"] = {k: {kk: vv for kk, vv in v.items() if kk != "dists"} for k, v in checks.items()}
        X, y = datasets["hard 2-D (gamma=0.1)"]
        lam_p = 1e-5
        w_opt = newton_minimizer(X, y, lam_p)
        ls = float(logistic_objective(w_opt, X, y, lam_p))
        etas = [1 / smoothness(X, lam_p), 1 / math.sqrt(lam_p), 0.95 * stability_threshold(X, y, lam_p, w_opt)]
        runs = run_gd(X, y, lam_p, np.array(etas), 12000, w_opt)
        curves = {"etas": etas, "gaps": runs.losses - ls}
    save_outputs("large_stepsize", args.quick, args.out, results, t0, lambda png: _plot(results, curves, checks, lam_c, png))
    return results


def _plot(results: dict, curves: dict, checks: dict, lam_c: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    labels = ["η = 1/L", "η = 1/√λ", "η = 0.95 η_crit"]
    for j, lab in enumerate(labels):
        g = np.maximum(curves["gaps"][:, j], 1e-16)
        ax[0].loglog(np.arange(1, len(g) + 1), g, label=f"{lab} ({curves['etas'][j]:.0f})", lw=1)
    ax[0].axhline(1e-6, color="k", ls=":", lw=0.8)
    ax[0].set(xlabel="step t + 1", ylabel="L̃(w_t) − L̃(w_λ)", title="hard 2-D data, λ = 1e-5, w₀ = 0")
    ax[0].legend(fontsize=8)
    markers = {"1/L": "o-", "1/sqrt(lam)": "s-", "0.95 eta_crit": "^-"}
    names = {"1/L": "1/L", "1/sqrt(lam)": "1/√λ", "0.95 eta_crit": "0.95 η_crit"}
    for k, (dname, d) in enumerate(results["datasets"].items()):
        lams = np.array([r["lam"] for r in d["rows"]])
        for name, m in markers.items():
            s = np.array([r["runs"][name]["steps"] for r in d["rows"]], float)
            s[s <= 0] = np.nan
            ax[1].loglog(
                1 / lams,
                s,
                m,
                color=f"C{list(markers).index(name)}",
                alpha=1.0 if k == 0 else 0.5,
                mfc="none" if k else None,
                label=f"{names[name]}, {dname.split(' ')[0]}",
            )
    x = np.array([1e2, 1e5])
    ax[1].loglog(x, 0.1 * x, "k:", lw=0.8, label="∝ 1/λ")
    ax[1].loglog(x, 2.0 * np.sqrt(x), "k--", lw=0.8, label="∝ 1/√λ")
    ax[1].set(xlabel="1/λ", ylabel="steps to gap 1e-6", title="steps vs regularization")
    ax[1].legend(fontsize=7, ncol=2)
    for name, c in checks.items():
        for j, f in enumerate(c["factors"]):
            ls = "-" if name.startswith("one") else "--"
            t = np.arange(1, c["dists"].shape[0] + 1)
            ax[2].loglog(
                t, np.maximum(c["dists"][:, j], 1e-16), ls, color=f"C{j}", lw=1, label=f"{name}, η = {f:g} η_crit"
            )
    ax[2].set(
        xlabel="step t + 1",
        ylabel="‖w_t − w_λ‖",
        title=f"GD at the stability threshold, λ = {lam_c:g}",
        ylim=(1e-16, 1e3),
    )
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
