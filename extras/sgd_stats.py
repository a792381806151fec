"""Constant-step SGD and its Ruppert-Polyak average on streaming Gaussian-design linear regression.

Reproduces the claims of Li, Lou, Schmidt-Hieber, Wu, "Statistical Guarantees for High-Dimensional
Stochastic Gradient Descent" (NeurIPS 2025, arXiv 2510.12013) in their linear-regression example,
on mixvi's gradient machinery: SGD is ``optax.sgd(alpha)``, ASGD is
``extras.rules.polyak_average(optax.sgd(alpha))`` and every run is one ``mixvi.loop.scan_loop``
(the replicates are a leading batch axis of the parameters).

Model: y_k = x_k^T beta* + eps_k, x_k ~ N(0, I_d), eps_k ~ N(0, sigma^2), fresh at every step.

    SGD:   beta_k = beta_{k-1} - alpha (x_k^T beta_{k-1} - y_k) x_k
    ASGD:  betabar_k = (1/k) sum_{i=1..k} beta_i

Exact identities (Gaussian design, q = s = 2; derivations in docs/extras/sgd_stats.md):

* two chains driven by the same (x_k, eps_k): Delta_k = (I - alpha x_k x_k^T) Delta_{k-1}, so
  E||Delta_k||^2 = rho^k ||Delta_0||^2 with rho = 1 - 2 alpha + (d + 2) alpha^2
  (geometric-moment contraction iff alpha < 2/(d + 2));
* E||beta_k - beta*||^2 = rho^k (||beta_0 - beta*||^2 - M) + M, stationary MSE
  M = alpha sigma^2 d / (2 - alpha (d + 2));
* ASGD: k E||betabar_k - beta*||^2 -> sigma^2 d (2 - alpha)/(2 - alpha (d + 2)) (our derivation, the
  paper gives rates, not this constant);
* ell_inf through ell_{s_d}, s_d = 2 min{l : 2 l > log d}: |x|_inf <= |x|_{s_d} <= e |x|_inf.

Run ``python -m extras.sgd_stats [--quick]``; results go to ``docs/extras/``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from extras._output import parse_args, save_outputs
from extras.rules import averaged_params, polyak_average
from mixvi.loop import scan_loop, tree_all_finite

PAPER = "Li, Lou, Schmidt-Hieber, Wu, 'Statistical Guarantees for High-Dimensional Stochastic Gradient Descent', arXiv 2510.12013"


def contraction_factor(alpha: float, d: int) -> float:
    """rho = E||(I - alpha x x^T) u||^2 / ||u||^2 = 1 - 2 alpha + (d + 2) alpha^2 for x ~ N(0, I_d)
    (uses E[(x^T u)^2 ||x||^2] = (d + 2)||u||^2); the GMC(2) constant of arXiv 2510.12013's SGD."""
    return 1.0 - 2.0 * alpha + (d + 2) * alpha**2


def critical_step(d: int) -> float:
    """alpha_crit = 2/(d + 2): rho < 1 iff 0 < alpha < alpha_crit."""
    return 2.0 / (d + 2)


def stationary_mse(alpha: float, d: int, sigma: float) -> float:
    """M = lim E||beta_k - beta*||^2 = alpha sigma^2 d / (2 - alpha (d + 2)) (inf for alpha >= 2/(d+2)):
    the fixed point of E||e_k||^2 = rho E||e_{k-1}||^2 + alpha^2 sigma^2 d."""
    den = 2.0 - alpha * (d + 2)
    return alpha * sigma**2 * d / den if den > 0 else math.inf


def mse_curve(alpha: float, d: int, sigma: float, e0_sq: float, k: np.ndarray) -> np.ndarray:
    """Exact E||beta_k - beta*||^2 = rho^k (||beta_0 - beta*||^2 - M) + M (alpha < alpha_crit)."""
    rho, M = contraction_factor(alpha, d), stationary_mse(alpha, d, sigma)
    return rho ** np.asarray(k, float) * (e0_sq - M) + M


def asgd_constant(alpha: float, d: int, sigma: float) -> float:
    """lim_k k E||betabar_k - beta*||^2 = sigma^2 d (2 - alpha) / (2 - alpha (d + 2)).

    From betabar_n - beta* = (1/n) sum xi_k + (e_0 - e_n)/(alpha n) with the martingale increments
    xi_k = (I - x_k x_k^T) e_{k-1} + eps_k x_k, whose stationary covariance is
    (sigma^2 + (d + 1) M/d) I (docs/extras/sgd_stats.md)."""
    return sigma**2 * d * (2.0 - alpha) / (2.0 - alpha * (d + 2))


def s_d(d: int) -> int:
    """s_d = 2 min{l in N : 2 l > log d}, the even exponent with d^{1/s_d} < e (arXiv 2510.12013)."""
    return 2 * (math.floor(math.log(d) / 2) + 1)


def ls_norm(x: jax.Array, s: float, axis: int = -1) -> jax.Array:
    """|x|_s = (sum_i |x_i|^s)^{1/s}, computed as m (sum (|x_i|/m)^s)^{1/s} with m = |x|_inf."""
    a = jnp.abs(x)
    m = jnp.max(a, axis=axis, keepdims=True)
    safe = jnp.where(m > 0, m, 1.0)
    return jnp.squeeze(m, axis) * jnp.sum((a / safe) ** s, axis=axis) ** (1.0 / s)


class Stream(NamedTuple):
    """Data of one step for R replicates: x (R, d), eps (R,)."""

    x: jax.Array
    eps: jax.Array


def draw(key: jax.Array, num_reps: int, d: int, sigma: float, dtype=None) -> Stream:
    """x ~ N(0, I_d), eps ~ N(0, sigma^2) for each replicate."""
    dtype = dtype or jnp.result_type(float)
    kx, ke = jax.random.split(key)
    return Stream(jax.random.normal(kx, (num_reps, d), dtype), sigma * jax.random.normal(ke, (num_reps,), dtype))


def lsq_grad(beta: jax.Array, data: Stream, beta_star: jax.Array) -> jax.Array:
    """Stochastic gradient (x^T beta - y) x with y = x^T beta* + eps, batched over replicates (R, d)."""
    y = data.x @ beta_star + data.eps
    r = jnp.sum(data.x * beta, axis=-1) - y
    return r[:, None] * data.x


class ChainState(NamedTuple):
    params: jax.Array
    opt_state: optax.OptState
    key: jax.Array


def _always_ok(state, rec):
    return jnp.array(True)


def _finite(state, rec):
    return jnp.all(jnp.isfinite(rec)) & tree_all_finite(state)


def coupled_contraction(
    key: jax.Array, d: int, alpha: float, num_steps: int, num_reps: int = 8, sigma: float = 1.0
) -> np.ndarray:
    """||Delta_k||^2 / ||Delta_0||^2 (k = 1..num_steps, (num_steps, num_reps)) for two SGD chains
    beta_k, beta'_k driven by the same stream, beta_0 = 0 and beta'_0 uniform on the unit sphere.

    E of the ratio is rho^k exactly. The loop never stops on growth (alpha > alpha_crit is an expected
    divergence); in float64 the ratios stay finite for rho^k < 1e300."""
    kb, k0, kstar = jax.random.split(key, 3)
    beta_star = jax.random.normal(kstar, (d,)) / math.sqrt(d)
    b1 = jax.random.normal(k0, (num_reps, d))
    b1 = b1 / jnp.linalg.norm(b1, axis=1, keepdims=True)
    params = {"a": jnp.zeros((num_reps, d), b1.dtype), "b": b1}
    tx = optax.sgd(alpha)

    def step(state: ChainState):
        key, sub = jax.random.split(state.key)
        data = draw(sub, num_reps, d, sigma, b1.dtype)
        grads = {k: lsq_grad(v, data, beta_star) for k, v in state.params.items()}
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ratio = jnp.sum((params["a"] - params["b"]) ** 2, axis=-1)
        return ChainState(params, opt_state, key), ratio

    res = scan_loop(step, ChainState(params, tx.init(params), kb), num_steps, is_ok=_always_ok)
    return np.asarray(res.losses)


class SGDRun(NamedTuple):
    """Per-step records (k = 1..num_steps, replicates on the last axis): ``sq_err`` = ||beta_k - beta*||^2,
    ``avg_l2`` / ``avg_linf`` / ``avg_ls`` = |betabar_k - beta*| in l2 / l_inf / l_{s_d}."""

    sq_err: np.ndarray
    avg_l2: np.ndarray
    avg_linf: np.ndarray
    avg_ls: np.ndarray
    s: int


def run_sgd(
    key: jax.Array,
    d: int,
    alpha: float,
    num_steps: int,
    num_reps: int = 8,
    sigma: float = 1.0,
    beta_star: jax.Array | None = None,
    record_every: int = 1,
    beta0: jax.Array | None = None,
) -> SGDRun:
    """SGD from beta_0 (default 0; shape (d,) or (num_reps, d)) with ``extras.rules.polyak_average(optax.sgd(alpha))`` on the stream
    y = x^T beta* + eps (default beta* = (1, ..., 1)/sqrt(d)), ``num_reps`` independent replicates.
    With ``record_every = m`` the run is ``num_steps // m`` scan steps of m SGD steps each and the
    records are at k = m, 2m, .... Raises ``mixvi.loop.DivergenceError`` on a non-finite value."""
    if beta_star is None:
        beta_star = jnp.ones(d) / math.sqrt(d)
    s = s_d(d)
    dtype = jnp.asarray(beta_star).dtype
    params = jnp.broadcast_to(jnp.zeros((d,), dtype) if beta0 is None else jnp.asarray(beta0, dtype), (num_reps, d))
    tx = polyak_average(optax.sgd(alpha))

    def one(state: ChainState, _=None):
        key, sub = jax.random.split(state.key)
        grads = lsq_grad(state.params, draw(sub, num_reps, d, sigma, params.dtype), beta_star)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return ChainState(optax.apply_updates(state.params, updates), opt_state, key), None

    def step(state: ChainState):
        state, _ = jax.lax.scan(one, state, None, length=record_every)
        e = state.params - beta_star
        eb = averaged_params(state.opt_state) - beta_star
        rec = jnp.stack([jnp.sum(e**2, -1), jnp.linalg.norm(eb, axis=-1), jnp.max(jnp.abs(eb), -1), ls_norm(eb, s)])
        return state, rec

    res = scan_loop(step, ChainState(params, tx.init(params), key), num_steps // record_every, is_ok=_finite)
    rec = np.asarray(res.losses)
    return SGDRun(rec[:, 0], rec[:, 1], rec[:, 2], rec[:, 3], s)


def growth_rate(ratios: np.ndarray) -> float:
    """(1/k) log of the replicate mean of ||Delta_k||^2/||Delta_0||^2 at the last k: estimates log rho."""
    return float(np.log(np.mean(ratios[-1])) / ratios.shape[0])


def _fit_loglog(k: np.ndarray, v: np.ndarray) -> float:
    return float(np.polyfit(np.log(k), np.log(v), 1)[0])


def main(argv: list[str] | None = None) -> dict:
    """``python -m extras.sgd_stats [--quick] [--out DIR]``: contraction vs rho^k, divergence above
    2/(d+2), stationary MSE vs formula, ASGD l2 / l_inf rates at d = 200 (and 1000); JSON + PNG."""
    args = parse_args(main.__doc__, argv, "d = 200 only, shorter runs (< 30 s)")
    t0 = time.time()
    sigma = 1.0
    dims = [200] if args.quick else [200, 1000]
    res: dict = {"paper": PAPER, "quick": args.quick, "sigma": sigma, "dims": {}}
    figs: dict = {}
    with jax.enable_x64(True):
        for d in dims:
            ac = critical_step(d)
            out: dict = {"alpha_crit": ac, "s_d": s_d(d)}
            # (1) contraction of coupled chains vs rho^k, and divergence above alpha_crit
            reps = (8 if args.quick else 16) if d == 200 else 8
            K = 3000 if d == 200 else 12000
            if args.quick:
                K //= 2
            crows = []
            curves = {}
            for f in (0.25, 0.5, 0.9, 1.05, 1.1):
                a = f * ac
                r = coupled_contraction(jax.random.key(10 + int(100 * f)), d, a, K, reps, sigma)
                rho = contraction_factor(a, d)
                meas = growth_rate(r)
                crows.append(
                    {
                        "alpha/alpha_crit": f,
                        "alpha": a,
                        "rho": rho,
                        "log_rho": math.log(rho),
                        "measured_log_rate": meas,
                        "mean_ratio_at_K": float(np.mean(r[-1])),
                        "rho^K": rho**K,
                        "K": K,
                    }
                )
                curves[f] = np.mean(r, axis=1)
            out["contraction"] = crows
            # (2) stationary MSE
            Km = 12000 if d == 200 else 20000
            if args.quick:
                Km //= 2
            mrows = []
            for f in (0.1, 0.25, 0.5, 0.75, 0.9):
                a = f * ac
                M = stationary_mse(a, d, sigma)
                nr = (8 if args.quick else 16) if d == 200 else 4
                k0, k1 = jax.random.split(jax.random.key(100 + int(100 * f)))
                beta_star = jnp.ones(d) / math.sqrt(d)
                # start with E||beta_0 - beta*||^2 = M, so E||beta_k - beta*||^2 = M at every k (exact)
                beta0 = beta_star + math.sqrt(M / d) * jax.random.normal(k0, (nr, d))
                run = run_sgd(k1, d, a, Km, nr, sigma, beta_star, record_every=10, beta0=beta0)
                meas = float(np.mean(run.sq_err))
                se = float(np.std(np.mean(run.sq_err, axis=0)) / math.sqrt(nr))
                mrows.append(
                    {
                        "alpha/alpha_crit": f,
                        "alpha": a,
                        "M_formula": M,
                        "M_measured": meas,
                        "rel_err": meas / M - 1,
                        "rel_se": se / M,
                        "steps": Km,
                        "reps": nr,
                    }
                )
            out["stationary_mse"] = mrows
            # (3) ASGD at alpha = alpha_crit/2
            a = 0.5 * ac
            Ka = (100000 if d == 200 else 50000) // (5 if args.quick else 1)
            run = run_sgd(jax.random.key(7), d, a, Ka, 8 if d == 200 else 4, sigma, record_every=10)
            k = 10 * np.arange(1, run.avg_l2.shape[0] + 1)
            l2 = np.sqrt(np.mean(run.avg_l2**2, axis=1))
            linf = np.mean(run.avg_linf, axis=1)
            lsn = np.mean(run.avg_ls, axis=1)
            tail = k >= Ka // 10
            C = asgd_constant(a, d, sigma)
            zmax = float(np.mean(np.max(np.abs(np.random.default_rng(0).normal(size=(4000, d))), axis=1)))
            out["asgd"] = {
                "alpha": a,
                "K": Ka,
                "slope_l2": _fit_loglog(k[tail], l2[tail]),
                "slope_linf": _fit_loglog(k[tail], linf[tail]),
                "slope_ls": _fit_loglog(k[tail], lsn[tail]),
                "l2_at_K": float(l2[-1]),
                "l2_predicted_at_K": math.sqrt(C / Ka),
                "linf_at_K": float(linf[-1]),
                "linf_predicted_at_K": math.sqrt(C / d / Ka) * zmax,
                "ls_at_K": float(lsn[-1]),
                "linf/l2_at_K": float(linf[-1] / l2[-1]),
                "ls/linf_max": float(np.max(run.avg_ls / run.avg_linf)),
                "ls/linf_min": float(np.min(run.avg_ls / run.avg_linf)),
                "sgd_rms_err_tail": float(np.sqrt(np.mean(run.sq_err[tail]))),
                "sqrt_M": math.sqrt(stationary_mse(a, d, sigma)),
                "asgd_constant": C,
            }
            res["dims"][str(d)] = out
            figs[d] = {
                "curves": curves,
                "K": K,
                "k": k,
                "l2": l2,
                "linf": linf,
                "ls": lsn,
                "sgd": np.sqrt(np.mean(run.sq_err, axis=1)),
                "C": C,
                "zmax": zmax,
                "alpha": a,
            }
            _print(d, out)
    save_outputs("sgd_stats", args.quick, args.out, res, t0, lambda png: _plot(res, figs, png))
    return res


def _print(d: int, out: dict) -> None:
    print(f"\nd = {d}: alpha_crit = 2/(d+2) = {out['alpha_crit']:.5f}, s_d = {out['s_d']}")
    print("  coupled chains: (1/K) log mean ||Delta_K||^2/||Delta_0||^2 vs log rho")
    for r in out["contraction"]:
        print(
            f"    alpha = {r['alpha/alpha_crit']:4.2f} alpha_crit: log rho = {r['log_rho']:+.3e}, "
            f"measured {r['measured_log_rate']:+.3e}  (mean ratio at K={r['K']}: {r['mean_ratio_at_K']:.3e}, rho^K = {r['rho^K']:.3e})"
        )
    print(
        "  stationary MSE E||beta_k - beta*||^2: formula alpha sigma^2 d/(2 - alpha(d+2)) vs time/replicate average (+- s.e.)"
    )
    for r in out["stationary_mse"]:
        print(
            f"    alpha = {r['alpha/alpha_crit']:4.2f} alpha_crit: formula {r['M_formula']:9.4f}  measured {r['M_measured']:9.4f}  ({100 * r['rel_err']:+.1f}% +- {100 * r['rel_se']:.1f}%)"
        )
    a = out["asgd"]
    print(
        f"  ASGD (alpha = alpha_crit/2, K = {a['K']}): fitted slopes of error vs k: l2 {a['slope_l2']:.3f}, "
        f"l_inf {a['slope_linf']:.3f}, l_s {a['slope_ls']:.3f} (claim -1/2)"
    )
    print(
        f"    at K: l2 {a['l2_at_K']:.4f} (predicted {a['l2_predicted_at_K']:.4f}), l_inf {a['linf_at_K']:.4f} "
        f"(predicted {a['linf_predicted_at_K']:.4f}), l_inf/l2 = {a['linf/l2_at_K']:.3f}; "
        f"l_s/l_inf in [{a['ls/linf_min']:.3f}, {a['ls/linf_max']:.3f}] (bound [1, e]); SGD rms error {a['sgd_rms_err_tail']:.3f} (sqrt M = {a['sqrt_M']:.3f})"
    )


def _plot(res: dict, figs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d0 = min(figs)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    f0 = figs[d0]
    for j, (f, c) in enumerate(f0["curves"].items()):
        k = np.arange(1, len(c) + 1)
        a = f * critical_step(d0)
        ax[0].semilogy(k, c, color=f"C{j}", lw=1.2, label=f"α = {f:g}·2/(d+2)")
        ax[0].semilogy(k, contraction_factor(a, d0) ** k, "k:", lw=0.8)
    ax[0].set(xlabel="step k", ylabel="mean ‖Δ_k‖² / ‖Δ₀‖²", title=f"coupled chains, d = {d0} (dotted: ρ^k)")
    ax[0].legend(fontsize=8)
    for j, dd in enumerate(figs):
        rows = res["dims"][str(dd)]["stationary_mse"]
        fr = np.array([r["alpha/alpha_crit"] for r in rows]) + 0.008 * (j - 0.5)
        ax[1].errorbar(
            fr,
            [1 + r["rel_err"] for r in rows],
            yerr=[2 * r["rel_se"] for r in rows],
            fmt="os"[j % 2],
            capsize=3,
            label=f"d = {dd} (±2 s.e.)",
        )
    ax[1].axhline(1.0, color="k", lw=0.8)
    ax[1].set_ylim(0.9, 1.1)
    ax[1].set(xlabel="α / (2/(d+2))", ylabel="measured / (α σ² d/(2 − α(d+2)))", title="stationary MSE vs formula")
    ax[1].legend(fontsize=8)
    for j, (dd, fd) in enumerate(figs.items()):
        k = fd["k"]
        ax[2].loglog(k, fd["l2"], color=f"C{2 * j}", lw=1.2, label=f"ASGD ℓ2, d = {dd}")
        ax[2].loglog(k, fd["linf"], color=f"C{2 * j + 1}", lw=1.2, label=f"ASGD ℓ∞, d = {dd}")
        ax[2].loglog(k, fd["sgd"], color=f"C{2 * j}", lw=0.8, ls="--", label=f"SGD ℓ2 (no averaging), d = {dd}")
        ax[2].loglog(k, np.sqrt(fd["C"] / k), "k:", lw=0.8)
        ax[2].loglog(k, np.sqrt(fd["C"] / dd / k) * fd["zmax"], "k:", lw=0.8)
    ax[2].set(xlabel="step k", ylabel="error", title="ASGD, α = 1/(d+2) (dotted: derived √(C/k) limits)")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
