"""Fits and their evaluation in the extensions suite: a ``Target`` per model (flat-latent potential and
reference moments), the ``Fitter`` that trains MixVI or AutoMultivariateNormal for several seeds with one
compilation, and ``evaluate_fit`` (k-hat, ESS, KL, closed-form / unweighted / PSIS-weighted summaries)."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal
from scipy.special import ndtr

import mixvi
from benchmarks.extensions.claims import compare_change
from benchmarks.extensions.settings import Method
from benchmarks.metrics import gaussian_kl, halfspace_mass, moment_errors, weighted_mass, weighted_moments
from benchmarks.targets import Target


def make_target(
    name: str, model: Callable, ref_mean: Any, ref_sd: Any, log_z: float, *, family: str = "gaussian", **kw: Any
) -> Target:
    """A ``Target`` for ``model`` with known reference moments.

    The flat-latent potential comes from an ``AutoIsotropicMixture`` set up on the model (the same
    ``AutoContinuous`` latent layout as ``AutoMultivariateNormal``).

    Parameters
    ----------
    name, model
        The target's name and NumPyro model (no arguments).
    ref_mean, ref_sd
        Reference mean and sd of the flat latent, (d,) each.
    log_z
        log normaliser of exp(-V).
    family
        The target's family (``Target.family``).
    **kw
        Further ``Target`` fields (``gaussian_cov``, ``mass_right``).

    Returns
    -------
    Target
        The target, with ``flat_potential`` set.
    """
    layout = mixvi.AutoIsotropicMixture(model, n_components=1)
    layout.setup(jax.random.PRNGKey(0))
    pot = layout.potential_fn()
    key = jax.random.PRNGKey(0)
    ref_mean = np.asarray(ref_mean, np.float64)
    return Target(
        name=name,
        family=family,
        model=model,
        dim=int(ref_mean.size),
        log_z=float(log_z),
        flat_potential=lambda z: pot(z, key),
        ref_mean=ref_mean,
        ref_sd=np.asarray(ref_sd, np.float64),
        **kw,
    )


def _proposal(qp: dict) -> dist.Distribution:
    if "scale_tril" in qp:
        return dist.MultivariateNormal(qp["loc"], scale_tril=qp["scale_tril"])
    return mixvi.IsotropicMixture(qp["locs"], qp["scales"], qp.get("weights"), qp.get("metric"))


@functools.lru_cache(maxsize=16)
def _draw_fn(potential: Callable, num_draws: int) -> Callable:
    @jax.jit
    def run(qp: dict, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        q = _proposal(qp)
        z = q.sample(key, (num_draws,))
        return z, -jax.vmap(potential)(z), q.log_prob(z)

    return run


def closed_form(qp: dict) -> dict[str, np.ndarray]:
    """Mean and sd of q (closed form), and its covariance when q is a single Gaussian."""
    if "scale_tril" in qp:
        lt = np.asarray(qp["scale_tril"], np.float64)
        cov = lt @ lt.T
        return {"mean": np.asarray(qp["loc"], np.float64), "sd": np.sqrt(np.diag(cov)), "cov": cov}
    q = _proposal(qp)
    out = {"mean": np.asarray(q.mean, np.float64), "sd": np.sqrt(np.asarray(q.variance, np.float64))}
    if qp["locs"].shape[0] == 1:
        out["cov"] = np.asarray(q.variance, np.float64)  # diagonal: eps D
    return out


def evaluate_fit(target: Target, qp: dict, key: jax.Array, num_draws: int) -> dict[str, Any]:
    """k-hat, ESS, KL and the summaries of q: closed form, its S draws unweighted, and PSIS-weighted."""
    z, log_p, log_q = _draw_fn(target.flat_potential, num_draws)(qp, key)
    eps = float(np.finfo(np.asarray(log_q).dtype).eps)
    z, log_p, log_q = (np.asarray(a, np.float64) for a in (z, log_p, log_q))
    log_w = log_p - log_q
    psis = mixvi.psis_log_weights(log_w)
    khat = psis.khat
    # q = p up to rounding: k-hat is -inf (mixvi.psis_khat's rule; psis_log_weights returns NaN there)
    if np.all(np.isfinite(log_w)) and np.ptp(log_w) <= 64 * eps * (np.max(np.abs(log_p)) + np.max(np.abs(log_q)) + 1):
        khat = -math.inf
    cf = closed_form(qp)
    out: dict[str, Any] = {
        "khat": khat,
        "ess": psis.ess,
        "ess_fraction": psis.ess / num_draws,
        "num_draws": num_draws,
        "log_w_sd": float(np.std(log_w[np.isfinite(log_w)])) if np.isfinite(log_w).any() else math.nan,
    }
    out["closed_form"] = moment_errors(cf["mean"], cf["sd"], target.ref_mean, target.ref_sd)
    if target.ref_mean.size <= 10:  # per-coordinate detail (eight schools, bimodal)
        out["per_coordinate"] = {
            "mean_err": ((cf["mean"] - target.ref_mean) / target.ref_sd).tolist(),
            "sd_ratio": (cf["sd"] / target.ref_sd).tolist(),
        }
    out["draws"] = moment_errors(*weighted_moments(z), target.ref_mean, target.ref_sd)
    out["psis"] = moment_errors(*weighted_moments(z, psis.log_weights), target.ref_mean, target.ref_sd)
    # KL(q || p) = E_q[log q + V] + log Z; closed form when q and p are both Gaussian
    diff = log_q - log_p
    finite = np.isfinite(diff)
    out["kl_mc"] = float(diff[finite].mean() + target.log_z) if finite.any() else math.nan
    out["kl_mc_se"] = float(diff[finite].std() / math.sqrt(finite.sum())) if finite.any() else math.nan
    out["kl_exact"] = None
    if target.gaussian_cov is not None and "cov" in cf:
        out["kl_exact"] = gaussian_kl(cf["mean"], cf["cov"], target.ref_mean, target.gaussian_cov)
    out["kl"] = out["kl_exact"] if out["kl_exact"] is not None else out["kl_mc"]
    if target.mass_right is not None:
        if "scale_tril" in qp:
            cf_mass = float(ndtr(cf["mean"][0] / cf["sd"][0]))
        else:
            cf_mass = halfspace_mass(qp["locs"], qp["scales"], qp.get("weights"), qp.get("metric"))
        out["closed_form"]["mass_right"] = cf_mass
        out["draws"]["mass_right"] = weighted_mass(z)
        out["psis"]["mass_right"] = weighted_mass(z, psis.log_weights)
        for k in ("closed_form", "draws", "psis"):
            out[k]["mass_err"] = abs(out[k]["mass_right"] - target.mass_right)
    verdicts, beyond = {}, {}
    for metric in ("mean_err_max", "sd_err_max", "mean_err", "sd_err", "mass_err"):
        if metric in out["draws"]:
            verdicts[metric] = compare_change(out["psis"][metric], out["draws"][metric])
            beyond[metric] = compare_change(out["psis"][metric], out["draws"][metric], psis.ess)
    out["reweighting"] = verdicts
    out["reweighting_beyond_noise"] = beyond
    return out


class Fitter:
    """Fits one method on one model for several seeds, compiling the training loop once.

    MixVI (update rule ``vi_method``, ``step_size``): one ``MixVI`` whose public ``update`` is scanned for ``steps`` steps under one ``jax.jit``
    (what ``MixVI.run`` does, without its per-call recompilation); every seed gets its own initial
    params from a fresh guide set up with that seed (so ``init_to_uniform`` draws differ), passed as
    ``init_params``. AutoMultivariateNormal: NumPyro ``SVI`` (``Trace_ELBO`` with ``num_samples``
    particles, Adam at ``mvn_lr`` decaying exponentially to ``mvn_lr * mvn_lr_decay``), its ``update``
    scanned the same way.
    """

    def __init__(
        self,
        method: Method,
        model: Callable,
        steps: int,
        *,
        num_samples: int = 10,
        init_scale: float = 0.1,
        init_loc_fn: Callable | None = None,
        vi_method: str = "ibw",
        step_size: str | float = "auto",
        mvn_lr: float = 3e-2,
        mvn_lr_decay: float = 1e-3,
    ):
        self.method, self.model, self.steps, self.num_samples = method, model, steps, num_samples
        if method.kind == "mvn":
            self._guide_kw: dict[str, Any] = {"init_scale": init_scale}
            self.guide = AutoMultivariateNormal(model, **self._guide_kw)
            tx = optax.adam(optax.exponential_decay(mvn_lr, steps, mvn_lr_decay))
            self.svi = SVI(model, self.guide, tx, Trace_ELBO(num_particles=num_samples))
            step = self.svi.update
            self.grad_evals = steps * num_samples
        else:
            self._guide_kw = {
                "n_components": method.n_components,
                "metric": method.metric,
                "weights": method.weights,
                "init_scale": init_scale,
            }
            if init_loc_fn is not None:
                self._guide_kw["init_loc_fn"] = init_loc_fn
            self.guide = mixvi.AutoIsotropicMixture(model, **self._guide_kw)
            self.mixvi = mixvi.MixVI(model, self.guide, method=vi_method, step_size=step_size, num_samples=num_samples)
            step = self.mixvi.update
            self.grad_evals = steps * method.n_components * num_samples

        @jax.jit
        def run(state: Any) -> tuple[Any, jax.Array]:
            return jax.lax.scan(lambda c, _: step(c), state, None, length=steps)

        self._run = run

    def _initial_params(self, key: jax.Array) -> dict:
        if self.method.kind == "mvn":
            guide = AutoMultivariateNormal(self.model, **self._guide_kw)
            with numpyro.handlers.trace() as tr, numpyro.handlers.seed(rng_seed=key):
                guide()
            return {k: v["value"] for k, v in tr.items() if v["type"] == "param"}
        return mixvi.AutoIsotropicMixture(self.model, **self._guide_kw).setup(key)

    def fit(self, seed: int) -> dict[str, Any]:
        """Fit with ``seed``; returns the proposal params ``qp`` (for ``evaluate_fit``), constrained
        ``params``, seconds (the first seed includes the compilation), target-gradient evaluations, the
        mean loss over the last 10% of steps and the number of non-finite (rejected) steps."""
        t0 = time.perf_counter()
        k_init, k_run = jax.random.split(jax.random.PRNGKey(seed))
        init = self._initial_params(k_init)
        if self.method.kind == "mvn":
            state, losses = self._run(self.svi.init(k_run, init_params=init))
            params = self.svi.get_params(state)
            qp = {"loc": params["auto_loc"], "scale_tril": params["auto_scale_tril"]}
        else:
            state, losses = self._run(self.mixvi.init(k_run, init_params=init))
            params = self.mixvi.get_params(state)
            q = self.guide.get_posterior(params)
            qp = {"locs": q.locs, "scales": q.scales, "weights": q.weights, "metric": q.metric}
        jax.block_until_ready(qp)
        losses = np.asarray(losses, np.float64)
        tail = losses[-max(1, len(losses) // 10) :]
        return {
            "qp": qp,
            "params": params,
            "seconds": time.perf_counter() - t0,
            "grad_evals": int(self.grad_evals),
            "final_loss": float(np.nanmean(tail)),
            "nonfinite_steps": int(np.sum(~np.isfinite(losses))),
            "params_finite": bool(all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(qp))),
        }
