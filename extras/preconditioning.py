"""Nonlinear preconditioning escapes saddles without Lipschitz smoothness.

Reproduces Bodard, Patrinos, "Escaping saddle points without Lipschitz smoothness: the power of
nonlinear preconditioning" (NeurIPS 2025, arXiv 2509.15817) on mixvi's gradient machinery. The
method is nonlinearly preconditioned GD (P-GD)

    x+ = x - gamma grad phi*(lam grad f(x)) = x - gamma m(||lam grad f(x)||) grad f(x)/||grad f(x)||,

with step multipliers m(s) = arcsinh(s) (cosh kernel), ln(1 + s) (exp), s/(1 + s) (soft clip),
min(s, 1) (gradient clipping), s (plain GD with step gamma*lam), all from
``extras.preconditioners.nonlinear_preconditioned_gd``; the perturbed variant wraps it in
``extras.preconditioners.perturbed`` (add xi ~ Uniform(ball(0, r)) when ||grad f|| <= threshold).
Runs are vmapped ``extras.rules.descent_step``s under ``mixvi.loop.scan_loop``.

Problems (both quartic, so ||hess f|| grows like ||x||^2 and no global Lipschitz constant exists):

    phase retrieval          f(x) = (1/4m) sum_i ((a_i^T x)^2 - y_i)^2,   y_i = (a_i^T x*)^2
    symmetric factorization  f(U) = (1/4) ||U U^T - M||_F^2,             M = U* U*^T

Both satisfy (L0, L1)-smoothness ||hess f(x)|| <= L0 + L1 ||grad f(x)||: the ratio
||hess f||/(1 + ||grad f||) stays bounded although ||hess f|| explodes with the scale. Their origin is
a strict saddle (phase retrieval: a local maximum). For the log d experiment the rank-one
factorization f(u) = (1/4)||u u^T - v v^T||_F^2 = (||u||^4 - 2 (u^T v)^2 + ||v||^4)/4 is evaluated in
O(d), so d = 10 ... 10^5 is cheap; u = 0 is an exact strict saddle (hess f(0) = -v v^T).

Run ``python -m extras.preconditioning [--quick]``; results go to ``docs/extras/``.
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
from extras.preconditioners import nonlinear_preconditioned_gd, perturbed
from extras.rules import DescentState, descent_step
from mixvi.loop import scan_loop

PAPER = (
    "Bodard, Patrinos, 'Escaping saddle points without Lipschitz smoothness: the power of nonlinear "
    "preconditioning', arXiv 2509.15817"
)
METHODS = ("gd", "cosh", "exp", "soft_clip", "clip")
LABELS = {"gd": "GD", "cosh": "cosh (arcsinh)", "exp": "exp (ln(1+s))", "soft_clip": "soft clip", "clip": "clipping"}


# ----------------------------------------------------------------------------------------------- problems
def phase_retrieval_problem(key: jax.Array, d: int = 10, m: int = 60) -> dict:
    """Gaussian phase retrieval: a_i ~ N(0, I_d), x* uniform on the unit sphere, y_i = (a_i^T x*)^2."""
    k1, k2 = jax.random.split(key)
    A = jax.random.normal(k1, (m, d))
    x = jax.random.normal(k2, (d,))
    x = x / jnp.linalg.norm(x)
    return {"A": A, "y": (A @ x) ** 2, "x_star": x}


def phase_retrieval_loss(x: jax.Array, A: jax.Array, y: jax.Array) -> jax.Array:
    """f(x) = (1/4m) sum_i ((a_i^T x)^2 - y_i)^2 (phase retrieval, arXiv 2509.15817 Sec. 3)."""
    return 0.25 * jnp.mean(((A @ x) ** 2 - y) ** 2)


def phase_retrieval_error(x: jax.Array, x_star: jax.Array) -> jax.Array:
    """min(||x - x*||, ||x + x*||): the distance to the global minimisers {+-x*}."""
    return jnp.minimum(jnp.linalg.norm(x - x_star, axis=-1), jnp.linalg.norm(x + x_star, axis=-1))


def factorization_problem(key: jax.Array, n: int = 8, r: int = 2) -> dict:
    """M = U* U*^T with U* ~ N(0, 1) (n x r), scaled so that ||M||_2 = 1."""
    U = jax.random.normal(key, (n, r))
    M = U @ U.T
    return {"M": M / jnp.linalg.eigvalsh(M)[-1], "n": n, "r": r}


def factorization_loss(u: jax.Array, M: jax.Array) -> jax.Array:
    """f(U) = (1/4)||U U^T - M||_F^2 for the flattened U (n*r,) (symmetric matrix factorization)."""
    U = u.reshape(M.shape[0], -1)
    return 0.25 * jnp.sum((U @ U.T - M) ** 2)


def factorization_error(u: jax.Array, M: jax.Array) -> jax.Array:
    """||U U^T - M||_F (0 exactly at the global minimisers)."""
    U = u.reshape(u.shape[:-1] + (M.shape[0], -1))
    return jnp.linalg.norm(U @ jnp.swapaxes(U, -1, -2) - M, axis=(-2, -1))


def rank_one_factorization_loss(u: jax.Array, v: jax.Array) -> jax.Array:
    """f(u) = (1/4)||u u^T - v v^T||_F^2 = (||u||^4 - 2 (u^T v)^2 + ||v||^4)/4, in O(d)."""
    uu, uv, vv = jnp.dot(u, u), jnp.dot(u, v), jnp.dot(v, v)
    return 0.25 * (uu**2 - 2.0 * uv**2 + vv**2)


def problem(name: str, key: jax.Array, m: int = 60) -> tuple[Callable, Callable, int]:
    """(loss f(x), error e(x) (0 at global minimisers, vectorised over a leading axis), dimension) for
    ``name`` in {"phase_retrieval", "factorization"} (d = 10 with ``m`` measurements; n = 8, r = 2)."""
    if name == "phase_retrieval":
        p = phase_retrieval_problem(key, m=m)
        return (
            partial(phase_retrieval_loss, A=p["A"], y=p["y"]),
            partial(phase_retrieval_error, x_star=p["x_star"]),
            p["A"].shape[1],
        )
    if name == "factorization":
        p = factorization_problem(key)
        return partial(factorization_loss, M=p["M"]), partial(factorization_error, M=p["M"]), p["n"] * p["r"]
    raise ValueError(f"unknown problem {name!r}")


# ----------------------------------------------------------------------------------------------- smoothness
def smoothness_profile(
    loss: Callable, dim: int, scales: tuple[float, ...], key: jax.Array, num_points: int = 100
) -> list[dict]:
    """At ``num_points`` points x = r z/||z|| (z ~ N(0, I)) for each radius r in ``scales``: the largest
    ||hess f(x)||_2, ||grad f(x)|| and ratio ||hess f(x)||_2 / (1 + ||grad f(x)||), i.e. the smallest c
    with ||hess f|| <= c (1 + ||grad f||) ((L0, L1)-smoothness with L0 = L1 = c) on that sphere."""
    z = jax.random.normal(key, (num_points, dim))
    z = z / jnp.linalg.norm(z, axis=1, keepdims=True)

    @jax.jit
    def stats(x):
        g = jax.grad(loss)(x)
        H = jax.hessian(loss)(x)
        hn = jnp.max(jnp.abs(jnp.linalg.eigvalsh(H)))
        gn = jnp.linalg.norm(g)
        return hn, gn, hn / (1.0 + gn)

    rows = []
    for r in scales:
        hn, gn, ratio = jax.vmap(stats)(r * z)
        rows.append(
            {"scale": r, "max_hess": float(hn.max()), "max_grad": float(gn.max()), "max_ratio": float(ratio.max())}
        )
    return rows


# ----------------------------------------------------------------------------------------------- runs
def method_transform(method: str, gamma: float, lam: float) -> optax.GradientTransformation:
    """P-GD x+ = x - gamma grad phi*(lam grad f) for kernel ``method``; "gd" is x+ = x - gamma lam grad f
    (the step every kernel reduces to near a stationary point)."""
    if method == "gd":
        return optax.sgd(gamma * lam)
    return nonlinear_preconditioned_gd(gamma, method, lam)


def run_batch(
    loss: Callable, error: Callable, tx: optax.GradientTransformation, x0: jax.Array, num_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``tx`` from every row of ``x0`` (B, d) for ``num_steps`` steps (vmapped descent_step, one
    scan_loop that never stops on non-finite values: divergence is an outcome here). Returns the
    errors e(x_k), shape (num_steps + 1, B), non-finite where a run diverged, and the final points (B, d)."""
    step1 = descent_step(loss, tx)

    def step(state):
        new, _ = jax.vmap(step1)(state)
        return new, error(state.params)

    state = jax.vmap(lambda x: DescentState(x, tx.init(x)))(x0)
    res = scan_loop(step, state, num_steps, is_ok=lambda s, v: jnp.array(True))
    last = np.asarray(error(res.state.params))[None]
    return np.concatenate([np.asarray(res.losses), last], axis=0), np.asarray(res.state.params)


def second_order_stationary(loss: Callable, x: np.ndarray, grad_tol: float = 1e-6) -> np.ndarray:
    """For each row of ``x``: ||grad f|| <= grad_tol and lambda_min(hess f) > 0 (a local minimiser, not a
    strict saddle); False for non-finite rows."""

    @jax.jit
    @jax.vmap
    def check(z):
        ok = jnp.all(jnp.isfinite(z))
        z = jnp.where(ok, z, 0.0)
        g = jnp.linalg.norm(jax.grad(loss)(z))
        lmin = jnp.linalg.eigvalsh(jax.hessian(loss)(z))[0]
        return ok & (g <= grad_tol) & (lmin > 0)

    return np.asarray(check(jnp.asarray(x)))


def classify(errors: np.ndarray, tol: float = 1e-6, blowup: float = 1e6, local_min: np.ndarray | None = None) -> dict:
    """Outcome of each run from its error history (steps+1, B): "diverged" (a non-finite or > blowup
    error at some step), "converged" (final error <= tol, a global minimiser) or "stalled"; among the
    stalled, "spurious_min" counts those at a non-global local minimiser (``local_min``, from
    :func:`second_order_stationary`); and the median first step with error <= tol of the converged ones."""
    bad = ~np.isfinite(errors) | (np.nan_to_num(errors, nan=np.inf) > blowup)
    diverged = bad.any(axis=0)
    final = errors[-1]
    converged = ~diverged & (final <= tol)
    first = np.where(converged, np.argmax(errors <= tol, axis=0), -1)
    stalled = ~diverged & ~converged
    spurious = stalled & local_min if local_min is not None else np.zeros_like(stalled)
    return {
        "converged": int(converged.sum()),
        "diverged": int(diverged.sum()),
        "stalled": int(stalled.sum()),
        "spurious_min": int(spurious.sum()),
        "steps_median": float(np.median(first[converged])) if converged.any() else None,
    }


def random_starts(key: jax.Array, dim: int, scale: float, num: int) -> jax.Array:
    """``num`` points x0 = scale z/||z||, z ~ N(0, I_dim)."""
    z = jax.random.normal(key, (num, dim))
    return scale * z / jnp.linalg.norm(z, axis=1, keepdims=True)


def start_scale_experiment(
    name: str,
    scales: tuple[float, ...],
    *,
    num_starts: int = 20,
    num_steps: int = 3000,
    gamma: float = 0.1,
    lam: float = 1.0,
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
    start_seed: int | None = None,
    m: int = 60,
) -> dict:
    """For each start scale and method: counts of converged / diverged / stalled runs over ``num_starts``
    random starts on the sphere of that radius (vmapped), and the median steps to error <= 1e-6.
    Every kernel uses the same (gamma, lam), so all share the local step gamma*lam near minimisers.
    ``seed`` draws the problem, ``start_seed`` (default seed + 1) the starts; ``m`` is the number of
    phase-retrieval measurements (the starts do not depend on it)."""
    loss, error, dim = problem(name, jax.random.PRNGKey(seed), m=m)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1 if start_seed is None else start_seed), len(scales))
    x0 = jnp.concatenate([random_starts(k, dim, s, num_starts) for k, s in zip(keys, scales)])
    out = {
        "problem": name,
        "dim": dim,
        "m": m if name == "phase_retrieval" else None,
        "gamma": gamma,
        "lam": lam,
        "num_steps": num_steps,
        "num_starts": num_starts,
        "scales": list(scales),
        "results": {},
    }
    for method in methods:
        errs, xT = run_batch(loss, error, method_transform(method, gamma, lam), x0, num_steps)
        lm = second_order_stationary(loss, xT)
        sl = [slice(i * num_starts, (i + 1) * num_starts) for i in range(len(scales))]
        out["results"][method] = {f"{s:g}": classify(errs[:, k], local_min=lm[k]) for s, k in zip(scales, sl)}
    return out


# Measurements per instance: the module's m = 60 = 6d, and the usual phase-retrieval setting m = 100 = 10d
# for d = 10 (the paper setting here; we could not read the paper's experimental section to confirm its m);
# both are run on the same instance seeds.
PAPER_M = 100
INSTANCE_SEEDS = (0, 1, 2, 3, 4, 5)


def instance_summary(instances: dict) -> dict:
    """Per number of measurements (keys of ``instances``: m -> seed -> :func:`start_scale_experiment`
    result): for cosh and exp the fraction of all large-start runs that converged, the numbers that
    diverged or stopped at a spurious local minimum, and the instances with a non-converged run."""
    out = {}
    for m_meas, rows in instances.items():
        sm = {}
        for method in ("cosh", "exp"):
            cells = [(sd, c) for sd, r in rows.items() for c in r["results"][method].values()]
            total = sum(c["converged"] + c["diverged"] + c["stalled"] for _, c in cells)
            sm[f"{method}_converged_fraction"] = sum(c["converged"] for _, c in cells) / total
            sm[f"{method}_diverged"] = sum(c["diverged"] for _, c in cells)
            sm[f"{method}_spurious_min"] = sum(c["spurious_min"] for _, c in cells)
            sm[f"{method}_bad_instances"] = sorted({int(sd) for sd, c in cells if c["converged"] < n_runs(c)})
        out[m_meas] = sm
    return out


def n_runs(cell: dict) -> int:
    """Number of runs behind one :func:`classify` cell."""
    return cell["converged"] + cell["diverged"] + cell["stalled"]


# ----------------------------------------------------------------------------------------------- log d escape
def escape_experiment(
    dims: tuple[int, ...],
    *,
    num_seeds: int = 16,
    num_steps: int = 400,
    kernel: str = "cosh",
    gamma: float = 0.1,
    lam: float = 1.0,
    radius: float = 1e-2,
    threshold: float = 1e-3,
    level: float = 0.5,
) -> dict:
    """Perturbed P-GD from the exact strict saddle u = 0 of f(u) = (1/4)||u u^T - v v^T||_F^2 (||v|| = 1,
    f(0) = 1/4, hess f(0) = -v v^T) in dimension d: the first step with f(u_k) <= level * f(0), per seed.

    The perturbation xi ~ Uniform(ball(0, radius)) has a component ~ radius |N(0,1)|/sqrt(d) along v,
    which grows by (1 + gamma lam) per step while small, so the escape time is
    k(d) ~ (ln(1/radius) + (1/2) ln d + O(1)) / ln(1 + gamma lam): logarithmic in d with slope
    1/(2 ln(1 + gamma lam)) in ln d. The unperturbed method (same kernel) is also run: at u = 0 the
    gradient is exactly 0, so it never moves. Returns the escape steps (-1: never) per d and seed.
    """
    out = {
        "kernel": kernel,
        "gamma": gamma,
        "lam": lam,
        "radius": radius,
        "threshold": threshold,
        "level": level,
        "num_steps": num_steps,
        "dims": list(dims),
        "perturbed": {},
        "unperturbed": {},
        "theory_slope": 1.0 / (2.0 * math.log1p(gamma * lam)),
    }
    for d in dims:
        v = jax.random.normal(jax.random.PRNGKey(d), (d,))
        v = v / jnp.linalg.norm(v)
        f = partial(rank_one_factorization_loss, v=v)
        f0 = float(f(jnp.zeros(d)))
        for which in ("perturbed", "unperturbed"):
            base = nonlinear_preconditioned_gd(gamma, kernel, lam)
            # a single perturbation per run (wait > num_steps) so the escape time is that of one kick
            tx = (
                perturbed(base, threshold=threshold, radius=radius, wait=num_steps + 1)
                if which == "perturbed"
                else base
            )
            step1 = descent_step(f, tx)
            n = num_seeds if which == "perturbed" else 1

            def init(key, tx=tx, d=d, which=which):
                s = tx.init(jnp.zeros(d))
                if which == "perturbed":
                    s = s._replace(key=key)
                return DescentState(jnp.zeros(d), s)

            state = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(1000 + d), n))
            res = scan_loop(jax.vmap(step1), state, num_steps, is_ok=lambda s, v: jnp.all(jnp.isfinite(v)))
            fs = np.asarray(res.losses)  # (num_steps, n): f(u_k), k = 0..num_steps-1
            hit = fs <= level * f0
            steps = np.where(hit.any(axis=0), np.argmax(hit, axis=0), -1)
            out[which][str(d)] = {
                "steps": steps.tolist(),
                "final_f": fs[-1].tolist(),
                "max_abs_u": float(np.abs(np.asarray(res.state.params)).max()),
            }
    med = [float(np.median(out["perturbed"][str(d)]["steps"])) for d in dims]
    out["median_steps"] = med
    out["fitted_slope"] = float(np.polyfit(np.log(np.array(dims, float)), med, 1)[0])
    return out


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """``python -m extras.preconditioning [--quick] [--out DIR]``: (L0, L1) profile, large-start and
    tiny-start counts for both problems, the log d escape experiment; JSON + PNG under docs/extras."""
    args = parse_args(main.__doc__, argv, "smaller sizes (< 30 s)")
    t0 = time.time()
    q = args.quick
    res: dict = {"paper": PAPER, "quick": q}
    with jax.enable_x64(True):
        # 1. (L0, L1)-smoothness profile
        prof_scales = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
        res["smoothness"] = {}
        for name in ("phase_retrieval", "factorization"):
            loss, _, dim = problem(name, jax.random.PRNGKey(0))
            res["smoothness"][name] = smoothness_profile(
                loss, dim, prof_scales, jax.random.PRNGKey(5), 50 if q else 200
            )
        print("(L0, L1)-smoothness: max over random points at radius r")
        print(f"{'problem':>16} {'r':>7} | {'max ||H||':>10} {'max ||g||':>10} {'max ||H||/(1+||g||)':>20}")
        for name, rows in res["smoothness"].items():
            for r in rows:
                print(
                    f"{name:>16} {r['scale']:7g} | {r['max_hess']:10.3g} {r['max_grad']:10.3g} {r['max_ratio']:20.3g}"
                )
        # 2. large random starts and 3. tiny starts (saddle avoidance)
        scales = (1.0, 10.0, 1000.0) if q else (1.0, 3.0, 10.0, 100.0, 1000.0)
        n_starts = 20
        res["large_starts"], res["tiny_starts"] = {}, {}
        for name in ("phase_retrieval", "factorization"):
            res["large_starts"][name] = start_scale_experiment(
                name, scales, num_starts=n_starts, num_steps=1500 if q else 3000
            )
            res["tiny_starts"][name] = start_scale_experiment(
                name, (1e-6,), num_starts=n_starts, num_steps=1500 if q else 3000, start_seed=7
            )
        for key, title in (
            ("large_starts", "large random starts"),
            ("tiny_starts", "tiny starts (strict saddle at 0)"),
        ):
            print(f"\n{title}: converged/diverged/stalled out of {n_starts} per scale (gamma = 0.1, lam = 1)")
            for name, r in res[key].items():
                print(f"  {name} (d = {r['dim']}, {r['num_steps']} steps)")
                print(f"  {'method':>14} | " + " ".join(f"{'r=' + format(s, 'g'):>12}" for s in r["scales"]))
                for m in METHODS:
                    cells = [r["results"][m][f"{s:g}"] for s in r["scales"]]
                    print(
                        f"  {LABELS[m]:>14} | "
                        + " ".join(f"{c['converged']:>4}/{c['diverged']:>2}/{c['stalled']:>2}  " for c in cells)
                    )
        # phase-retrieval instances at the module's m = 60 = 6d and at m = 100 = 10d (PAPER_M)
        seeds = (1, 3) if q else INSTANCE_SEEDS
        radii = (100.0,) if q else (10.0, 100.0, 1000.0)
        res["instances"] = {}
        for m_meas in (60, PAPER_M):
            res["instances"][str(m_meas)] = {
                str(sd): start_scale_experiment(
                    "phase_retrieval",
                    radii,
                    num_starts=n_starts,
                    num_steps=1500 if q else 3000,
                    methods=("gd", "cosh", "exp"),
                    seed=sd,
                    m=m_meas,
                )
                for sd in seeds
            }
        res["instance_summary"] = instance_summary(res["instances"])
        print(
            f"\nphase-retrieval instances (d = 10), radii {'/'.join(f'{r:g}' for r in radii)}: "
            "converged/diverged/stalled (of which at a spurious local minimum)"
        )
        for m_meas, rows in res["instances"].items():
            for sd, r in rows.items():
                print(
                    f"  m = {m_meas:>3}, seed {sd}: "
                    + "   ".join(
                        f"{m}: "
                        + " ".join(
                            f"{c['converged']}/{c['diverged']}/{c['stalled']}({c['spurious_min']})"
                            for c in r["results"][m].values()
                        )
                        for m in ("gd", "cosh", "exp")
                    )
                )
        for m_meas, sm in res["instance_summary"].items():
            print(f"  m = {m_meas:>3}: " + ", ".join(f"{k} {v}" for k, v in sm.items()))
        # 4. log d escape
        dims = (10, 100, 1000, 10000) if q else (10, 100, 1000, 10000, 100000)
        res["escape"] = escape_experiment(dims, num_seeds=8 if q else 16)
        e = res["escape"]
        print("\nperturbed P-GD (cosh) from the exact saddle u = 0 of 1/4||uu^T - vv^T||^2: steps to f <= f(0)/2")
        for d in dims:
            st = np.array(e["perturbed"][str(d)]["steps"])
            un = e["unperturbed"][str(d)]
            print(
                f"  d = {d:>6}: median {np.median(st):6.1f}  (min {st.min()}, max {st.max()})   "
                f"unperturbed: steps {un['steps'][0]}, max|u| = {un['max_abs_u']:.1e}"
            )
        print(
            f"  fitted slope of median steps vs ln d: {e['fitted_slope']:.2f} "
            f"(theory 1/(2 ln(1 + gamma lam)) = {e['theory_slope']:.2f})"
        )
    save_outputs("preconditioning", q, args.out, res, t0, lambda png: _plot(res, png))
    return res


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 5, figsize=(23, 4.3))
    for name, rows, mk in [(n, r, m) for (n, r), m in zip(res["smoothness"].items(), ("o", "s"))]:
        s = [r["scale"] for r in rows]
        ax[0].loglog(s, [r["max_hess"] for r in rows], mk + "-", color="C0", label=f"max ‖∇²f‖, {name}")
        ax[0].loglog(s, [r["max_ratio"] for r in rows], mk + "--", color="C3", label=f"max ‖∇²f‖/(1+‖∇f‖), {name}")
    ax[0].set(xlabel="radius ‖x‖", title="(L0, L1)-smoothness: ratio bounded")
    ax[0].legend(fontsize=7)
    for k, name in enumerate(("phase_retrieval", "factorization")):
        r, t = res["large_starts"][name], res["tiny_starts"][name]
        sc = t["scales"] + r["scales"]
        cells = [[{**t["results"][m], **r["results"][m]}[f"{s:g}"] for s in sc] for m in METHODS]
        frac = np.array([[(c["converged"] - c["diverged"]) / r["num_starts"] for c in row] for row in cells])
        ax[1 + k].imshow(frac, cmap="RdYlGn", vmin=-1.6, vmax=1.6, aspect="auto")
        for i, row in enumerate(cells):
            for j, c in enumerate(row):
                ax[1 + k].text(
                    j, i, f"{c['converged']}/{c['diverged']}/{c['stalled']}", ha="center", va="center", fontsize=8
                )
        ax[1 + k].set_xticks(range(len(sc)), [f"{s:g}" for s in sc])
        ax[1 + k].set_yticks(range(len(METHODS)), [LABELS[m] for m in METHODS])
        ax[1 + k].set(
            xlabel="start radius ‖x₀‖",
            title=f"{name.replace('_', ' ')} (d = {r['dim']}): converged/diverged/stalled of {r['num_starts']}",
        )
    e = res["escape"]
    dims = np.array(e["dims"], float)
    for j, d in enumerate(e["dims"]):
        st = np.array(e["perturbed"][str(d)]["steps"], float)
        ax[3].plot(
            np.full(len(st), d) * np.exp(np.linspace(-0.08, 0.08, len(st))),
            st,
            ".",
            color="C0",
            alpha=0.5,
            label="perturbed, per seed" if j == 0 else None,
        )
    ax[3].semilogx(dims, e["median_steps"], "o-", color="C0", label="perturbed, median")
    fit = np.polyfit(np.log(dims), e["median_steps"], 1)
    ax[3].semilogx(dims, np.polyval(fit, np.log(dims)), "k:", label=f"fit: {fit[0]:.2f} ln d + {fit[1]:.0f}")
    top = 1.4 * max(max(e["perturbed"][str(d)]["steps"]) for d in e["dims"])
    ax[3].text(
        dims[0],
        0.93 * top,
        f"unperturbed P-GD: stays at u = 0 for all {e['num_steps']} steps, every d",
        color="C3",
        fontsize=8,
    )
    ax[3].set(
        xlabel="dimension d",
        ylabel="steps to f ≤ f(0)/2",
        ylim=(0, top),
        title=f"perturbed P-GD ({e['kernel']}) from an exact strict saddle",
    )
    ax[3].legend(fontsize=7, loc="lower right")
    for j, (m_meas, rows) in enumerate(res["instances"].items()):
        sds = list(rows)
        frac = [np.mean([c["converged"] / n_runs(c) for c in rows[sd]["results"]["cosh"].values()]) for sd in sds]
        ax[4].bar(np.arange(len(sds)) + (j - 0.5) * 0.4, frac, 0.4, label=f"m = {m_meas}")
        ax[4].set_xticks(np.arange(len(sds)), sds)
    ax[4].set(
        xlabel="instance seed (d = 10)",
        ylabel="fraction of large starts converged (cosh)",
        ylim=(0, 1.05),
        title="phase retrieval: global convergence per instance",
    )
    ax[4].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
