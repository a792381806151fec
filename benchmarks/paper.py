"""The paper benchmark (arXiv 2506.13613, section 5): mixvi's MixVI (ibw / md / ngd / means at
several N) side by side with NumPyro's Gaussian autoguides on the ``benchmarks.targets`` suite.

    python -m benchmarks.paper            # quick mode (default): a subset, ~5 minutes on 2 CPU cores
    python -m benchmarks.paper --full     # every target, more seeds and steps, the fixed-step grid
    python -m benchmarks.paper --quick --targets funnel --seeds 1 --steps 200 --out '' --md ''

Every run (one method, one target, one seed) is a jitted ``lax.scan`` of K steps, compiled once per
method and target (compile time reported apart) and then run once per seed from a seed-specific
initialisation. The state is recorded at ``--checkpoints`` evenly spaced steps; at each, KL(q || pi)
(normalised targets) or the -ELBO (regressions) is estimated from ``--eval-samples`` draws of q. At the
end: the sliced-Wasserstein distance to reference draws (exact sampler, grid sampler or cached NUTS),
mean and sd errors in reference-sd units, mode coverage, PSIS k-hat and, for the regressions, test
accuracy and log-likelihood. Medians and (min, max) over seeds go to JSON and to the markdown section
of docs/benchmarks.md between ``<!-- bench paper start -->`` and ``<!-- bench paper end -->``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDiagonalNormal, AutoLowRankMultivariateNormal, AutoMultivariateNormal

from benchmarks import metrics as M
from benchmarks.core import GOAL_MIN_DIM, GOAL_RATIO
from benchmarks.report import (
    compile_timed,
    display_path,
    limit_blas_threads,
    machine_info,
    markers,
    measured_line,
    publish,
    repo_path,
    scan_steps,
)
from benchmarks.targets import Target, get_target
from mixvi.engine import MixVI
from mixvi.guide import AutoIsotropicMixture
from mixvi.importance import psis_log_weights
from mixvi.loop import tree_all_finite

MD_START, MD_END = markers("paper")
MD_HEADING = "## Paper suite (`python -m benchmarks.paper`)"
FULL_SECTION, FULL_HEADING = "paper-full", "### Full run (`python -m benchmarks.paper --full`)"
"""The --full run has its own section, JSON and figures, so it does not overwrite the quick run's."""
MIXVI_METHODS = ("ibw", "md", "ngd", "means")
AUTOGUIDES = {
    "AutoNormal": AutoDiagonalNormal,  # the mean-field family of AutoNormal, on the flat latent
    "AutoMVN": AutoMultivariateNormal,
    "AutoLowRankMVN": AutoLowRankMultivariateNormal,
}
QUICK_TARGETS = ("gmm-d2-diag", "gmm-d10-full", "funnel", "label-switching", "logreg-breast", "softmax-wine")
FULL_TARGETS = (
    "gmm-d2-diag", "gmm-d2-full", "gmm-d10-diag", "gmm-d10-full", "gmm-d50-diag", "gmm-d50-full", "funnel",
    "sas-a", "sas-b", "sas-c", "label-switching", "logreg-breast", "softmax-wine",
)
GAUSSIAN_BASELINES = (*AUTOGUIDES, "Blackjax MFVI", "Pathfinder")
"""The single-Gaussian methods that the claim 'mixvi with N >= 10 beats every Gaussian autoguide' is checked against."""
MEAN_FIELD = ("AutoNormal", "Blackjax MFVI")
STEP_GRID = (1e-3, 1e-2, 1e-1)
"""The fixed-step grid of the paper-style runs: the best (lowest median final KL / -ELBO) is reported."""


@dataclass(frozen=True)
class Method:
    """One column of the comparison. ``kind``: 'mixvi' (``method``, ``n``, ``step``, ``metric``), 'svi' (a NumPyro
    autoguide, ``guide``), 'bures' (the full-covariance Bures mixture, ``n``, ``step``), 'steinvi' (NumPyro SteinVI
    with ``n`` AutoNormal particles), 'bj-mfvi' (Blackjax mean-field VI) or 'pathfinder' (Blackjax Pathfinder)."""

    label: str
    kind: str
    method: str = ""
    n: int = 1
    step: float | str = "auto"
    guide: str = ""
    metric: str = "isotropic"


@dataclass
class Settings:
    """The run's settings (quick or full)."""

    quick: bool
    targets: tuple[str, ...]
    seeds: int
    steps: int
    regression_steps: int
    checkpoints: int
    eval_samples: int
    num_samples: int
    ns: tuple[int, ...]
    extra_n: int
    step_grid: tuple[float, ...]
    grid_n: int
    adam_lr: float
    svi_particles: int
    init_scale: float
    cache: str | None
    bures_ns: tuple[int, ...] = (5,)
    bures_grid: tuple[float, ...] = STEP_GRID
    blas_threads: int = 1
    stein_particles: int = 10
    stein_lr: float = 0.5
    pathfinder_maxiter: int = 100
    baselines: bool = True
    only: tuple[str, ...] = ()


def _has_blackjax() -> bool:
    """Whether the ``[bench]`` extra's blackjax is importable (its two baselines are skipped otherwise)."""
    return importlib.util.find_spec("blackjax") is not None


def method_list(s: Settings, target: Target | None = None) -> list[Method]:
    """ibw and md at every N (auto step); ngd and means at ``extra_n``; ibw / md at ``grid_n`` with each
    fixed step of the grid; ibw with mixvi's shared diagonal metric on the regressions; the three Gaussian
    autoguides; and (``s.baselines``) the full-covariance Bures mixture, SteinVI, Blackjax MFVI and Pathfinder
    (the last two only where blackjax is installed).
    ``s.only`` keeps the methods whose label starts with one of its entries."""
    out = [Method(f"{m} N={n}", "mixvi", m, n) for m in ("ibw", "md") for n in s.ns]
    out += [Method(f"{m} N={s.extra_n}", "mixvi", m, s.extra_n) for m in ("ngd", "means")]
    out += [Method(f"{m} N={s.grid_n} γ={g:g}", "mixvi", m, s.grid_n, g) for m in ("ibw", "md") for g in s.step_grid]
    if target is not None and target.family == "regression":
        out.append(Method(f"ibw+diag N={s.extra_n}", "mixvi", "ibw", s.extra_n, metric="diagonal"))
    out += [Method(name, "svi", guide=name) for name in AUTOGUIDES]
    if s.baselines:
        # no adaptive rule exists for it: the paper's way, every step of the grid (stable steps shrink with d)
        out += [Method(f"full Bures N={n} γ={g:g}", "bures", n=n, step=g) for n in s.bures_ns for g in s.bures_grid]
        out.append(Method(f"SteinVI P={s.stein_particles}", "steinvi", n=s.stein_particles))
        if _has_blackjax():
            out += [Method("Blackjax MFVI", "bj-mfvi"), Method("Pathfinder", "pathfinder")]
    if target is not None and target.dim <= 2:
        # in 2-D a rank-1-plus-diagonal covariance is already nearly full
        out = [m for m in out if m.guide != "AutoLowRankMVN"]
    if s.only:
        out = [m for m in out if m.label.startswith(s.only)]
    return out


# --- one method on one target ------------------------------------------------------------------


def _init_locs(key: jax.Array, n: int, target: Target) -> jax.Array:
    return jax.random.uniform(key, (n, target.dim), minval=-target.init_radius, maxval=target.init_radius)


def _seed_locs(target: Target) -> Callable[[int, int], jax.Array]:
    """(seed, n) -> the (n, d) starting means of that seed: every method of a seed starts from the same draws."""
    return lambda seed, n: _init_locs(jax.random.fold_in(jax.random.PRNGKey(seed), 1), n, target)


def _build(method: Method, target: Target, s: Settings) -> tuple[Callable, Callable, Callable, Any]:
    """(init(seed) -> state, step(state) -> (state, loss), params(state) -> dict, q(params) -> dist)."""
    model, args = target.model, target.args
    locs_of = _seed_locs(target)
    if method.kind == "bures":
        from benchmarks import bures_full

        return bures_full.build(target, method.n, float(method.step), s.num_samples, s.init_scale,
                                lambda seed: locs_of(seed, method.n))
    if method.kind == "steinvi":
        from benchmarks import baselines

        return baselines.build_steinvi(target, method.n, s.stein_lr, s.init_scale, locs_of)
    if method.kind == "bj-mfvi":
        from benchmarks import baselines

        return baselines.build_blackjax_mfvi(target, s.adam_lr, s.svi_particles, s.init_scale, locs_of)
    if method.kind == "mixvi":
        guide = AutoIsotropicMixture(model, n_components=method.n, init_scale=s.init_scale, metric=method.metric)
        mv = MixVI(model, guide, method.method, method.step, num_samples=s.num_samples, mesh=None)

        def init(seed: int):
            # MixVI.init (public) from this seed's means, every scale at init_scale, with this seed's key
            k = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
            start = {"auto_locs": locs_of(seed, method.n), "auto_scales": jnp.full(method.n, s.init_scale)}
            return mv.init(k, *args, init_params=start)

        return init, (lambda st: mv.update(st, *args)), mv.get_params, guide.get_posterior
    guide = AUTOGUIDES[method.guide](model, init_scale=s.init_scale)
    svi = SVI(model, guide, optax.adam(s.adam_lr), Trace_ELBO(num_particles=s.svi_particles))

    svi.init(jax.random.PRNGKey(0), *args)  # sets the guide up outside jit
    init_jit = jax.jit(lambda k, loc: svi.init(k, *args, init_params={"auto_loc": loc}))

    def init_svi(seed: int):
        return init_jit(jax.random.PRNGKey(seed), locs_of(seed, 1)[0])

    def posterior(params: dict) -> Any:
        q = guide.get_posterior(params)
        return q.to_event(1) if q.event_shape == () else q  # AutoDiagonalNormal's is batched

    return init_svi, (lambda st: svi.update(st, *args)), svi.get_params, posterior


def _runner(step: Callable, get_params: Callable, steps: int, checkpoints: int) -> Callable:
    per = steps // checkpoints

    def outer(st, _):
        st, losses = scan_steps(step, st, per)
        return st, (get_params(st), losses)

    return lambda st: jax.lax.scan(outer, st, None, length=checkpoints)


class Evaluator:
    """Metrics of a fitted q on one target, with the target's jitted potential and reference draws."""

    def __init__(self, target: Target, s: Settings):
        self.target, self.s = target, s
        self.v = jax.jit(target.potential())
        self.key = jax.random.PRNGKey(12345)
        self.ref = np.asarray(target.reference_samples(jax.random.PRNGKey(777), 4000), np.float64)
        self.directions = M.random_directions(jax.random.PRNGKey(99), target.dim, 200)
        self.ref_modes = None if target.mode_of is None else np.asarray(target.mode_of(self.ref))
        self._draws = jax.jit(self._draws_impl)

    def _draws_impl(self, q: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        z = q.sample(self.key, (self.s.eval_samples,))
        return z, q.log_prob(z), self.target.potential()(z)

    def draws(self, q: Any) -> tuple[jax.Array, np.ndarray, np.ndarray]:
        """z ~ q (eval_samples, d), log q(z), V(z): one jitted call (compiled once per q's family and shape)."""
        z, lq, v = self._draws(q)
        return z, np.asarray(lq, np.float64), np.asarray(v, np.float64)

    def divergence(self, log_q: np.ndarray, v: np.ndarray) -> float:
        """KL(q || pi) where log Z is known, else the -ELBO."""
        ne = M.neg_elbo(log_q, v)
        return ne + self.target.log_z if self.target.log_z is not None else ne

    def curve(self, qs: list[Any]) -> list[float | None]:
        out = []
        for q in qs:
            if q is None:
                out.append(None)
                continue
            _, lq, v = self.draws(q)
            out.append(self.divergence(lq, v))
        return out

    def final(self, q: Any) -> dict[str, Any]:
        if q is None:
            return {"divergence": None, "diverged": True}
        z, lq, v = self.draws(q)
        zn = np.asarray(z, np.float64)
        res: dict[str, Any] = {"divergence": self.divergence(lq, v)}
        if not (np.all(np.isfinite(zn)) and np.isfinite(res["divergence"])):
            return {"divergence": None, "diverged": True}
        res["sw"] = M.sliced_wasserstein(zn, self.ref, directions=self.directions)
        res.update(M.moment_errors(*M.weighted_moments(zn), *M.weighted_moments(self.ref)))
        lw = -v - lq
        res["khat"] = float(psis_log_weights(lw).khat) if np.all(np.isfinite(lw)) else None
        if self.target.mode_of is not None:
            cov = M.mode_coverage(np.asarray(self.target.mode_of(z)), self.ref_modes, self.target.num_modes)
            res.update(covered=cov["covered"], min_coverage=cov["min_coverage"], mode_tv=cov["tv"])
        if self.target.predict_log_prob is not None:
            res.update(M.predictive_metrics(self.target.predict_log_prob(z[:1000]), self.target.test_labels))
        return res

    def reference_row(self) -> dict[str, Any]:
        """The reference sampler against itself: the noise floor of SW and of the moment errors."""
        other = np.asarray(self.target.reference_samples(jax.random.PRNGKey(778), self.s.eval_samples), np.float64)
        res: dict[str, Any] = {"sw": M.sliced_wasserstein(other, self.ref, directions=self.directions)}
        res.update(M.moment_errors(*M.weighted_moments(other), *M.weighted_moments(self.ref)))
        if self.target.log_prob is not None:
            res["divergence"] = 0.0
        if self.target.mode_of is not None:
            cov = M.mode_coverage(np.asarray(self.target.mode_of(other)), self.ref_modes, self.target.num_modes)
            res.update(covered=cov["covered"], min_coverage=cov["min_coverage"], mode_tv=cov["tv"])
        if self.target.predict_log_prob is not None:
            res.update(M.predictive_metrics(self.target.predict_log_prob(jnp.asarray(self.ref[:1000], jnp.float32)),
                                            self.target.test_labels))
        return res


def _posterior_or_none(posterior: Callable, params: Any) -> Any:
    """q at a checkpoint, or None where the run diverged there: non-finite params, or params the
    distribution's own validation refuses (a scale that underflowed to 0)."""
    if not bool(tree_all_finite(params)):
        return None
    try:
        return posterior(params)
    except ValueError:
        return None


def run_method(method: Method, target: Target, ev: Evaluator, s: Settings) -> dict[str, Any]:
    """All seeds of one method on one target: per-seed curves, final metrics and timings."""
    if method.kind == "pathfinder":
        return _run_oneshot(method, target, ev, s)
    init, step, get_params, posterior = _build(method, target, s)
    steps = s.regression_steps if target.family == "regression" else s.steps
    state0 = init(0)
    compiled, compile_s, temp = compile_timed(_runner(step, get_params, steps, s.checkpoints), (state0,))
    per = steps // s.checkpoints
    seeds = []
    for seed in range(s.seeds):
        st = state0 if seed == 0 else init(seed)
        t0 = time.perf_counter()
        _, (ck, losses) = compiled(st)
        jax.block_until_ready((ck, losses))
        run_s = time.perf_counter() - t0
        qs = [_posterior_or_none(posterior, jax.tree.map(lambda a, i=i: a[i], ck)) for i in range(s.checkpoints)]
        curve = ev.curve(qs)
        fin = ev.final(qs[-1])
        fin.update(run_s=run_s, ms_per_step=1e3 * run_s / (per * s.checkpoints), curve=curve)
        seeds.append(fin)
    n_params = int(sum(np.size(a) for a in jax.tree.leaves(get_params(state0))))
    return {"label": method.label, "kind": method.kind, "method": method.method or method.guide or method.kind, "n": method.n,
            "step": method.step, "compile_s": compile_s, "temp_bytes": temp, "num_params": n_params,
            "curve_steps": [per * (i + 1) for i in range(s.checkpoints)], "seeds": seeds}


def _run_oneshot(method: Method, target: Target, ev: Evaluator, s: Settings) -> dict[str, Any]:
    """Pathfinder: one jitted fit per seed (its L-BFGS path is the whole run), evaluated once at the end."""
    from benchmarks import baselines

    init, fit, posterior = baselines.build_pathfinder(target, _seed_locs(target), s.pathfinder_maxiter)
    state0 = init(0)
    compiled, compile_s, temp = compile_timed(fit, (state0,))
    seeds, num_params = [], None
    for seed in range(s.seeds):
        st = state0 if seed == 0 else init(seed)
        t0 = time.perf_counter()
        params = jax.block_until_ready(compiled(st))
        run_s = time.perf_counter() - t0
        q = posterior(params)
        num_params = q.num_params
        fin = ev.final(q)
        fin.update(run_s=run_s, curve=[fin["divergence"]])
        seeds.append(fin)
    return {"label": method.label, "kind": method.kind, "method": method.kind, "n": 1, "step": "L-BFGS",
            "compile_s": compile_s, "temp_bytes": temp, "num_params": num_params,
            "curve_steps": [s.pathfinder_maxiter], "seeds": seeds}


def add_time_to_target(t: dict[str, Any]) -> None:
    """Time to reach a target-wide level tau: per seed, the wall time (compile excluded) of the first
    checkpoint whose KL / -ELBO is <= tau; tau = max(1.5 x best final median KL, 0.05) where the target is
    normalised, best final median -ELBO + 1 nat otherwise. Stored as ``t['tau']`` and each summary's
    ``time_to_tau`` (median over the seeds that reached it) and ``reached_tau`` (how many did)."""
    finals = [r["summary"]["divergence"]["median"] for r in t["methods"]
              if r["summary"].get("divergence", {}).get("median") is not None]
    if not finals:
        t["tau"] = None
        return
    best = min(finals)
    tau = max(1.5 * best, 0.05) if t["normalised"] else best + 1.0
    t["tau"] = tau
    for r in t["methods"]:
        times = []
        for sd in r["seeds"]:
            curve, run_s = sd.get("curve"), sd.get("run_s")
            if not curve or run_s is None:
                continue
            per_ck = run_s / len(curve)
            hit = M.first_reach(np.asarray([np.nan if c is None else c for c in curve], float), tau)  # NaN never reaches
            if hit is not None:
                times.append((hit + 1) * per_ck)
        r["summary"]["time_to_tau"] = M.summarise(times) if times else None
        r["summary"]["reached_tau"] = len(times)


def summarise_method(r: dict[str, Any]) -> dict[str, Any]:
    """Median and (min, max) over seeds of every scalar metric of a method's runs."""
    keys = sorted({k for sd in r["seeds"] for k, v in sd.items() if isinstance(v, (int, float)) and k != "diverged"})
    out = {k: M.summarise([sd.get(k) for sd in r["seeds"]]) for k in keys}
    out["diverged"] = int(sum(bool(sd.get("diverged")) for sd in r["seeds"]))
    curves = np.asarray([[np.nan if c is None else c for c in sd["curve"]] for sd in r["seeds"] if "curve" in sd])
    with warnings.catch_warnings():  # a checkpoint where every seed diverged has a NaN median, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        out["curve_median"] = np.nanmedian(curves, 0).tolist() if curves.size else []
    return out


# --- claims ------------------------------------------------------------------------------------


def _med(summary: dict, key: str) -> float | None:
    v = summary.get(key)
    return None if v is None else v.get("median")


def check_claims(report: dict[str, Any]) -> list[str]:
    """The paper's claims, checked on the medians of this run (each line says held / not held)."""
    lines = []
    ns = report["settings"]["ns"]
    for tname, t in report["targets"].items():
        rows = {r["label"]: r["summary"] for r in t["methods"]}
        what = "KL" if t["normalised"] else "-ELBO"
        for m in ("ibw", "md"):
            vals = [_med(rows.get(f"{m} N={n}", {}), "divergence") for n in ns]
            if None in vals:
                continue
            mono = all(b <= a + 0.02 * abs(a) + 0.01 for a, b in zip(vals, vals[1:]))
            ok = vals[-1] < vals[0] and mono
            lines.append(f"{tname}: {what} of {m} at N = {list(ns)}: " + ", ".join(f"{v:.3g}" for v in vals)
                         + f" — falls with N: {'held' if ok else 'NOT held' if vals[-1] >= vals[0] else 'falls overall, not monotone'}")
        gaps = []
        for n in ns:
            a, b = _med(rows.get(f"ibw N={n}", {}), "divergence"), _med(rows.get(f"md N={n}", {}), "divergence")
            if a is not None and b is not None:
                gaps.append(abs(a - b))
        if gaps:
            scale = max(abs(_med(rows.get(f"ibw N={ns[0]}", {}), "divergence") or 1.0), 1e-3)
            lines.append(f"{tname}: |ibw - md| {what} gap, largest over N: {max(gaps):.3g} "
                         f"({'≈ equal' if max(gaps) <= 0.1 * scale + 0.05 else 'differ'})")
        if t["family"] in ("gmm", "funnel", "label-switching"):
            ag = {k: _med(rows[k], "sw") for k in GAUSSIAN_BASELINES if k in rows}
            best_ag = min((v for v in ag.values() if v is not None), default=None)
            for m in ("ibw", "md"):
                for n in [n for n in ns if n >= 10]:
                    r = rows.get(f"{m} N={n}")
                    if r is None or best_ag is None or _med(r, "sw") is None:
                        continue
                    beats = _med(r, "sw") < best_ag
                    cov = ""
                    if "covered" in r:
                        nm = t["num_modes"]
                        cov = f"; modes covered (min over seeds) {r['covered']['min']:.0f}/{nm}"
                    lines.append(f"{tname}: {m} N={n} SW {_med(r, 'sw'):.3g} vs best Gaussian autoguide {best_ag:.3g}: "
                                 f"{'beats' if beats else 'does NOT beat'}{cov}")
        if t["family"] == "regression":
            lines += _regression_claims(tname, t, rows, ns)
    return lines + cost_claims()


def cost_claims(path: str | os.PathLike | None = None) -> list[str]:
    """The per-iteration cost claim, quoted from the latest JSON of ``python -m benchmarks.core``.

    The claim (MixVI within ``GOAL_RATIO`` x the target-gradient floor at d >= ``GOAL_MIN_DIM``) is
    measured by the core suite; it is quoted here so that every claim of the paper is in one list. The
    goal is read from the JSON's settings where recorded, else from ``benchmarks.core``'s constants.

    Parameters
    ----------
    path
        The core suite's JSON; default ``docs/benchmarks/core.json`` of the repository.

    Returns
    -------
    list of str
        One line per measured cell at d >= the goal's dimension (or one line saying the JSON is missing).
    """
    path = repo_path("docs/benchmarks/core.json") if path is None else path
    try:
        core = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return [f"per-iteration cost: no {display_path(path)} (run `python -m benchmarks.core`)"]
    settings = core.get("settings", {})
    goal_ratio = float(settings.get("goal_ratio", GOAL_RATIO))
    goal_min_dim = int(settings.get("goal_min_dim", GOAL_MIN_DIM))
    out = []
    for c in core.get("results", []):
        if c.get("d", 0) >= goal_min_dim and c.get("ratio_mixvi_floor") is not None:
            ratio = c["ratio_mixvi_floor"]
            out.append(f"per-iteration cost at d = {c['d']}, N = {c['n_components']} (`python -m benchmarks.core`, "
                       f"{core['date']}): {ratio:.2f} x the target-gradient floor — <= {goal_ratio:g}: "
                       f"{'held' if ratio <= goal_ratio else 'NOT held'}")
    return out


def _regression_claims(tname: str, t: dict, rows: dict, ns: tuple) -> list[str]:
    """Test accuracy / log-likelihood of mixvi against NUTS and against the best mean-field VI. 'Within noise'
    = within two standard errors of NUTS's mean test log-likelihood over the test points (another test set of
    the same size would move it that much), or half the spread over seeds if that is larger."""
    ref = t["reference"]
    nuts_acc, nuts_ll = ref.get("test_accuracy", float("nan")), ref.get("test_loglik", float("nan"))
    se = ref.get("test_loglik_se")
    noise = 2 * se if se is not None and np.isfinite(se) else 0.01
    mf = {k: rows[k] for k in MEAN_FIELD if k in rows and _med(rows[k], "test_loglik") is not None}
    best_mf = max(mf, key=lambda k: _med(mf[k], "test_loglik")) if mf else None
    lines = []
    for label in [f"ibw N={ns[-1]}", f"md N={ns[-1]}", *[k for k in rows if k.startswith("ibw+diag")]]:
        r = rows.get(label)
        if r is None or _med(r, "test_loglik") is None:
            continue
        ll, acc = r["test_loglik"], _med(r, "test_accuracy")
        tol = max(noise, (ll["max"] - ll["min"]) / 2)
        near = abs(ll["median"] - nuts_ll) <= tol
        line = (f"{tname}: {label} test acc {acc:.3f} / loglik {ll['median']:.4f}; NUTS {nuts_acc:.3f} / {nuts_ll:.4f} "
                f"(± {tol:.3f}) — loglik within noise of NUTS: {'held' if near else 'NOT held'}")
        if best_mf is not None:
            mll = _med(mf[best_mf], "test_loglik")
            line += (f"; best mean-field ({best_mf}) {_med(mf[best_mf], 'test_accuracy'):.3f} / {mll:.4f} — at least as "
                     f"good: {'held' if ll['median'] >= mll - tol else 'NOT held'}")
        lines.append(line)
    return lines


# --- report --------------------------------------------------------------------------------------


def _fmt(s: dict | None, digits: int = 3, spread: bool = True) -> str:
    if not s or s.get("median") is None:
        return "–"
    med = f"{s['median']:.{digits}g}"
    if spread and s["n"] > 1:
        return f"{med} [{s['min']:.{digits}g}, {s['max']:.{digits}g}]"
    return med


def target_table(t: dict[str, Any]) -> str:
    """Markdown table of one target: one row per method, median [min, max] over seeds."""
    what = "KL" if t["normalised"] else "−ELBO"
    cols = [what, "SW", "mean err", "sd err", "k̂"]
    has_modes = t["num_modes"] > 0
    reg = t["family"] == "regression"
    if has_modes:
        cols += ["modes covered", "min coverage"]
    if reg:
        cols += ["test acc", "test loglik"]
    cols += ["t→τ s", "ms/step", "compile s", "temp MB", "params"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    ref = t["reference"]
    cells = [("0" if t["normalised"] else "–"), f"{ref['sw']:.3g}", f"{ref['mean_err']:.3g}", f"{ref['sd_err']:.3g}", "–"]
    if has_modes:
        cells += [f"{ref['covered']}/{t['num_modes']}", f"{ref['min_coverage']:.2f}"]
    if reg:
        cells += [f"{ref['test_accuracy']:.3f}", f"{ref['test_loglik']:.4f}"]
    cells += ["–", "–", "–", "–", "–"]
    lines.append(f"| {t['reference_name']} | " + " | ".join(cells) + " |")
    for r in t["methods"]:
        s = r["summary"]
        cells = [_fmt(s.get("divergence")), _fmt(s.get("sw"), spread=False), _fmt(s.get("mean_err"), 2, False),
                 _fmt(s.get("sd_err"), 2, False), _fmt(s.get("khat"), 2, False)]
        if has_modes:
            cov = s.get("covered")
            cells += [("–" if not cov or cov["median"] is None else f"{cov['median']:.0f}/{t['num_modes']} (min {cov['min']:.0f})"),
                      _fmt(s.get("min_coverage"), 2, False)]
        if reg:
            cells += [_fmt(s.get("test_accuracy"), 3, False), _fmt(s.get("test_loglik"), 4)]
        ms, tt = s.get("ms_per_step"), s.get("time_to_tau")
        reached = f"{_fmt(tt, 2, False)}" + ("" if s.get("reached_tau") == len(r["seeds"]) else f" ({s.get('reached_tau', 0)}/{len(r['seeds'])})")
        mem = "–" if r.get("temp_bytes") is None else f"{r['temp_bytes'] / 2**20:.2g}"
        cells += [reached if tt else "not reached", _fmt(ms, 2, False), f"{r['compile_s']:.1f}", mem, str(r["num_params"])]
        label = r["label"] + (f" ({s['diverged']} diverged)" if s.get("diverged") else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any], figures: list[str]) -> str:
    """The generated section of docs/benchmarks.md (between the bench-paper markers)."""
    s = report["settings"]
    mode = "--quick" if s["quick"] else "--full"
    lines = [
        measured_line(report["date"], report["machine"], f"python -m benchmarks.paper {mode}")
        + f"; total wall time {report['wall_s']:.0f} s.",
        "",
    ]
    rerun = report.get("rerun_targets")
    if rerun:
        lines += [f"{' and '.join(rerun['targets'])} were rerun at {rerun['date']} with the same settings ({rerun['why']}).", ""]
    lines += [
        f"Settings: {s['seeds']} seeds, {s['steps']} steps ({s['regression_steps']} on the regressions), B = {s['num_samples']} draws per component per step "
        f"(autoguides: Trace_ELBO with {s['svi_particles']} particles, Adam lr {s['adam_lr']}), all q started at "
        f"means uniform in [-r, r]^d (r = 5 for the GMMs, 2 otherwise), scale {s['init_scale']}; metrics from "
        f"{s['eval_samples']} draws of q; fixed-step grid {list(s['step_grid'])} at N = {s['grid_n']}. Cells: median "
        "[min, max] over seeds (a single number: the median). SW = sliced 2-Wasserstein (200 directions) to 4000 "
        "reference draws; mean / sd err in reference-sd units (mean over coordinates); k̂ = PSIS Pareto k of π/q; "
        "ms/step = run time of one seed / steps (compile excluded; the whole K-step scan); temp MB = XLA's "
        "temporary buffers of the compiled run (`memory_analysis().temp_size_in_bytes`, the peak working memory "
        "beyond params and state); t→τ s = median wall time "
        "(compile excluded) to the first checkpoint at or below the target's level τ (τ = max(1.5 × best final KL, "
        "0.05), or best final −ELBO + 1 nat; '(k/n)': only k of n seeds got there). First row: the reference "
        "sampler against an independent draw of itself (the noise floor).",
        "",
        f"Baselines beside NumPyro's autoguides: full Bures = the full-covariance Bures–Wasserstein mixture "
        f"(`benchmarks.bures_full`, real matrix products, B = {s['num_samples']}, every fixed γ of "
        f"{list(s.get('bures_grid', ()))}: no adaptive rule exists for it); SteinVI = NumPyro's "
        f"`SteinVI` with {s.get('stein_particles')} AutoNormal particles (RBF kernel, Adagrad lr {s.get('stein_lr')}; mixvi fixes the double softplus of the particle scales in NumPyro 0.22's mixture density, see below); "
        f"Blackjax MFVI = `blackjax.meanfield_vi` (Adam lr {s['adam_lr']}, {s['svi_particles']} draws); Pathfinder "
        f"= `blackjax.vi.pathfinder` (one L-BFGS path, maxiter {s.get('pathfinder_maxiter')}, no curve); ibw+diag = "
        "mixvi's `metric=\"diagonal\"` extension (regressions only). BLAS / LAPACK (AutoMVN's and full Bures' "
        f"Cholesky factors) on {s.get('blas_threads')} thread(s): see `python -m benchmarks.dimension`.",
        "",
    ]
    for tname, t in report["targets"].items():
        what = "KL" if t["normalised"] else "−ELBO"
        tau = "" if t.get("tau") is None else f" τ = {t['tau']:.3g} ({what})."
        lines += [f"#### {tname}", "", t["description"] + tau, "", target_table(t), ""]
    lines += ["#### Claims of the paper, checked on these medians", ""]
    lines += [f"- {c}" for c in report["claims"]]
    if figures:
        lines += [""] + [f"![{Path(f).stem}](figures/{Path(f).name})" for f in figures]
    return "\n".join(lines)


def _best_fixed_step(methods: list[dict], kind: str) -> set[str]:
    """Labels of the fixed-step runs of ``kind`` with the lowest median final KL / -ELBO, one per N."""
    best: dict[int, tuple[float, str]] = {}
    for r in methods:
        v = r["summary"].get("divergence", {}).get("median") if r["kind"] == kind else None
        if v is not None and (r["n"] not in best or v < best[r["n"]][0]):
            best[r["n"]] = (v, r["label"])
    return {label for _, label in best.values()}


def draw_figures(report: dict[str, Any], stem: Path) -> list[str]:
    """KL (or -ELBO) against iteration and against wall time, one panel per target (medians over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["targets"])
    files = []
    for axis_kind in ("iter", "time"):
        cols = min(4, len(names))
        rows = (len(names) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
        for ax, tname in zip(axes.ravel(), names):
            t = report["targets"][tname]
            best_bures = _best_fixed_step(t["methods"], "bures")
            for r in t["methods"]:
                if r["kind"] == "pathfinder" or (r["kind"] == "mixvi" and (
                        r["step"] != "auto" or r["method"] in ("ngd", "means") or r["label"].startswith("ibw+diag"))):
                    continue
                if r["kind"] == "bures" and r["label"] not in best_bures:
                    continue
                curve = np.asarray(r["summary"]["curve_median"], float)
                if curve.size == 0:
                    continue
                x = np.asarray(r["curve_steps"], float)
                if axis_kind == "time":
                    ms = r["summary"].get("ms_per_step", {}).get("median") or 0.0
                    x = x * ms / 1e3
                style = {"ibw": "-", "md": "--", "AutoNormal": ":", "AutoMVN": "-.", "AutoLowRankMVN": ":",
                         "bures": (0, (5, 1, 1, 1)), "steinvi": (0, (1, 1)), "bj-mfvi": (0, (3, 2))}.get(r["method"], "-")
                color = {"AutoNormal": "black", "AutoMVN": "dimgray", "AutoLowRankMVN": "darkgray", "bures": "tab:brown",
                         "steinvi": "tab:olive", "bj-mfvi": "tab:gray"}.get(r["method"])
                ax.plot(x, curve, linestyle=style, color=color, label=r["label"], lw=1.2)
            ax.set_title(tname, fontsize=9)
            ax.set_xlabel("iteration" if axis_kind == "iter" else "wall time, s (compile excluded)", fontsize=8)
            if axis_kind == "time":
                ax.set_xscale("log")  # per-step costs span three decades (mixvi ~0.01 ms, SteinVI ~10 ms)
            ax.set_ylabel("KL(q‖π)" if t["normalised"] else "−ELBO", fontsize=8)
            vals = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in ax.get_lines()] or [np.zeros(0)])
            vals = vals[np.isfinite(vals)]
            if t["normalised"]:
                ax.set_yscale("log")
                vals = vals[vals > 0]
                if vals.size:  # a run that blew up must not squash the others into one line
                    ax.set_ylim(0.7 * vals.min(), 1.5 * min(vals.max(), np.percentile(vals, 90)))
            else:
                if vals.size:
                    lo, hi = np.percentile(vals, [0, 70])
                    ax.set_ylim(lo - 0.05 * (hi - lo), hi)
            ax.tick_params(labelsize=7)
        for ax in axes.ravel()[len(names):]:
            ax.axis("off")
        legend: dict[str, Any] = {}  # every label of every panel, once (the best full-Bures step differs by target)
        for ax in axes.ravel():
            for h, lab in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(lab, h)
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(7, len(legend)), fontsize=7)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        path = stem.parent / f"{stem.name}_kl_vs_{axis_kind}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(display_path(path))
    return files


def describe(target: Target) -> str:
    """One line on the target for the report."""
    i = target.info
    if target.family == "gmm":
        return f"Gaussian mixture, K = {i['K']}, d = {target.dim}, covariance '{i['covariance']}', scale {i['scale']}, seed {i['seed']}."
    if target.family == "funnel":
        return "2-D funnel: x0 ~ N(0, 1.2), x1 | x0 ~ N(0, exp(x0)) (variances)."
    if target.family == "sinh-arcsinh":
        return f"2-D sinh-arcsinh, tail {np.round(i['tail'], 3).tolist()}, skew {i['skew']}."
    if target.family == "label-switching":
        return (f"Label switching: two-group Gaussian mixture model, {i['num_obs']} points, posterior over the two means "
                f"has two mirror modes; normaliser and reference draws from a {i['normaliser']}.")
    return (f"{target.name}: d = {target.dim}, {i['n_train']} train / {i['n_test']} test rows, prior variance "
            f"{i['prior_var']}; reference = NumPyro NUTS (4 chains x 1000 draws after 1000 warm-up, cached).")


def run_benchmark(s: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every method on every target of ``s``; returns the JSON-ready report."""
    t_start = time.perf_counter()
    report: dict[str, Any] = {"date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                              "machine": machine_info(), "settings": dict(s.__dict__), "targets": {}}
    if s.baselines and not _has_blackjax():
        log("blackjax is not installed (pip install 'mixvi[bench]'): skipping Blackjax MFVI and Pathfinder")
    for tname in s.targets:
        t0 = time.perf_counter()
        target = get_target(tname, cache=s.cache)
        ev = Evaluator(target, s)
        ref = ev.reference_row()
        rows = []
        for m in method_list(s, target):
            try:
                r = run_method(m, target, ev, s)
            except Exception as err:  # noqa: BLE001 - one failed method must not lose the suite
                log(f"  {tname} / {m.label}: FAILED {type(err).__name__}: {err}")
                continue
            r["summary"] = summarise_method(r)
            rows.append(r)
        tdict = {
            "family": target.family, "dim": target.dim, "normalised": target.log_z is not None,
            "num_modes": target.num_modes, "description": describe(target), "reference": ref,
            "reference_name": "NUTS (reference)" if target.family == "regression" else "exact sampler (reference)",
            "methods": rows, "wall_s": time.perf_counter() - t0,
        }
        add_time_to_target(tdict)
        report["targets"][tname] = tdict
        log(f"{tname}: {len(rows)} methods in {time.perf_counter() - t0:.0f} s")
    report["claims"] = check_claims(report)
    report["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["wall_s"] = time.perf_counter() - t_start
    return report


def settings_from_args(a: argparse.Namespace) -> Settings:
    """Quick / full defaults, overridden by the explicit options."""
    quick = not a.full
    s = Settings(
        quick=quick, targets=QUICK_TARGETS if quick else FULL_TARGETS, seeds=3 if quick else 5,
        steps=400 if quick else 3000, regression_steps=1500 if quick else 6000, checkpoints=10 if quick else 30, eval_samples=2000 if quick else 4000,
        num_samples=10, ns=(1, 5, 10, 20), extra_n=10, step_grid=() if quick else STEP_GRID, grid_n=10,
        adam_lr=0.05, svi_particles=10, init_scale=1.0, cache=a.cache, bures_ns=(5,) if quick else (5, 10),
    )
    for field in ("seeds", "steps", "regression_steps", "checkpoints", "eval_samples"):
        if getattr(a, field) is not None:
            setattr(s, field, getattr(a, field))
    if a.targets:
        s.targets = tuple(a.targets.split(","))
    if a.methods:
        s.only = tuple(a.methods.split(","))
    s.baselines = not a.no_baselines
    if a.ns:
        s.ns = tuple(int(x) for x in a.ns.split(","))
    if a.step_grid is not None:
        s.step_grid = tuple(float(x) for x in a.step_grid.split(",") if x)
    s.steps = max(s.checkpoints, s.steps // s.checkpoints * s.checkpoints)
    s.regression_steps = max(s.checkpoints, s.regression_steps // s.checkpoints * s.checkpoints)
    return s


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.paper``: run the suite, write JSON, the markdown section and the figures."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.paper", description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="the quick subset (default)")
    g.add_argument("--full", action="store_true", help="every target, 5 seeds, 3000 steps, the fixed-step grid")
    p.add_argument("--targets", help="comma-separated target names (benchmarks.targets.TARGET_NAMES)")
    p.add_argument("--seeds", type=int)
    p.add_argument("--steps", type=int, help="steps per run (synthetic targets)")
    p.add_argument("--regression-steps", dest="regression_steps", type=int, help="steps per run on the regressions")
    p.add_argument("--checkpoints", type=int, help="evaluations of the KL curve per run")
    p.add_argument("--eval-samples", dest="eval_samples", type=int, help="draws of q per evaluation")
    p.add_argument("--ns", help="comma-separated N for ibw / md (default 1,5,10,20)")
    p.add_argument("--step-grid", dest="step_grid", help="comma-separated fixed steps ('' for none)")
    p.add_argument("--methods", help="comma-separated label prefixes to keep (e.g. 'ibw N=1,AutoNormal,Pathfinder')")
    p.add_argument("--no-baselines", dest="no_baselines", action="store_true",
                   help="skip the full Bures, SteinVI and Blackjax baselines")
    p.add_argument("--cache", help="NUTS reference cache dir (default $MIXVI_CACHE or ~/.cache/mixvi)")
    p.add_argument("--out", help="JSON output ('' for none; default docs/benchmarks/paper.json of the repository, "
                   "paper_full.json with --full)")
    p.add_argument("--md", default=repo_path("docs/benchmarks.md"),
                   help="markdown page to update (default docs/benchmarks.md of the repository; '' for none)")
    p.add_argument("--figures", help="figure path stem ('' for none; default docs/figures/paper of the repository, "
                   "paper_full with --full)")
    a = p.parse_args(argv)
    suffix = "_full" if a.full else ""
    a.out = repo_path(f"docs/benchmarks/paper{suffix}.json") if a.out is None else a.out
    a.figures = repo_path(f"docs/figures/paper{suffix}") if a.figures is None else a.figures
    s = settings_from_args(a)
    with limit_blas_threads(s.blas_threads):
        report = run_benchmark(s, log=lambda line: print(line, file=sys.stderr, flush=True))
    figures = draw_figures(report, Path(a.figures)) if a.figures else []
    report["figures"] = figures
    for line in report["claims"]:
        print(line)
    name, heading = (FULL_SECTION, FULL_HEADING) if a.full else ("paper", MD_HEADING)
    publish(report, a.out, a.md, name, render_markdown(report, figures), heading)
    print(f"paper benchmark: {len(report['targets'])} targets in {report['wall_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
