"""``python -m benchmarks.core``: per-iteration cost of MixVI against the bare cost of its N B target gradients.

For a Bayesian logistic regression (``benchmarks.targets.logistic``; n rows, d features, N(0, I) prior) and
each d in {10, 100, 1000}, N in {10, 100}, B = 10, four jitted ``lax.scan`` loops of K steps are timed:

``floor``      K evaluations of ``vmap(grad(V))`` on an (N B, d) array, the points moving by a small
               gradient step each iteration so XLA cannot hoist the work out of the loop;
``floor_vg``   the same with ``vmap(value_and_grad(V))`` (the values summed into the carry), which is
               what MixVI needs since its loss uses V;
``mixvi``      ``MixVI.update`` (method 'ibw', step_size 'auto', shared noise): noise, N B points,
               value_and_grad of V, the closed-form mixture terms, the update;
``svi``        NumPyro ``SVI.update`` with ``AutoNormal`` and ``Trace_ELBO(num_particles=N B)`` (the
               same number of gradient evaluations per step), optax Adam;
``overhead``   ``MixVI.update``'s non-potential work alone (V replaced by |x|^2/2, whose gradient is free);
``run``        ``MixVI.run`` of K1 = max(K, ``STEIN_STEPS``) steps from the same state, the call a user makes;
``run_long``   the same call for K1 + K steps. Both end with the run's fit check (the Stein moment divergence of
               the last ``STEIN_STEPS`` steps' draws, work that a loop of ``update`` does not do), so the
               difference of the two, per step, is run()'s cost per step beyond that check, and the short
               call's time less K1 such steps is the check's (plus the call's host work) once per run.

``V`` is NumPyro's potential energy of the model (``guide.potential_fn``), the function MixVI
differentiates. Times are ms per iteration: the median (and minimum) over ``repeats`` calls of the
compiled scan divided by K, after one warm-up call; compile time (trace + lower + compile) is
reported separately. Repeats are interleaved across the five loops so background load hits them
alike. XLA's ``memory_analysis`` gives each compiled loop's temporary bytes: with shared noise the
estimator works from Gram products (``estimators.mixture_terms``) and never forms an (N, B, N, d)
tensor, which the benchmark checks against N B N d x 4 bytes.

Entry point: ``main(argv) -> int`` (``python -m benchmarks.core``, or ``mixvi bench core`` from a clone).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from benchmarks.report import (
    compile_timed,
    int_list,
    machine_info,
    measured_line,
    publish,
    repo_path,
    scan_steps,
)
from benchmarks.targets.logistic import logistic_regression, make_data
from mixvi import vi as vi_core
from mixvi.engine import MixVI, MixVIState
from mixvi.estimators import draw_noise, draw_points
from mixvi.guide import AutoIsotropicMixture

FIXED_GOAL_RATIO = 1.05
"""The goal of MixVI/floor with a fixed step (no loss-driven step-size state)."""
GOAL_RATIO = 1.15
GOAL_MIN_DIM = 1000
LOOPS = ("floor", "floor_vg", "mixvi", "run", "run_long", "svi", "overhead")
PYTHON_LOOPS = ("run", "run_long")
"""Loops timed as the Python calls they are (MixVI.run), not jitted by the benchmark."""
FLOOR_STEP = 1e-4  # points move x <- x - FLOOR_STEP grad V(x) between floor evaluations
TYPICAL_RUN = 2000
"""Steps of the run whose whole cost (the fit check once, the steps) the table compares with the scan's."""


@dataclass(frozen=True)
class CoreConfig:
    """One benchmark cell: d features, N components, B draws per component, n data rows, K steps."""

    d: int
    n_components: int
    num_samples: int = 10
    n_rows: int = 1000
    steps: int = 20
    step_size: float | str = "auto"
    tilt: float | str = "auto"

    @property
    def num_points(self) -> int:
        """N B, the gradient evaluations per step."""
        return self.n_components * self.num_samples

    @property
    def run_steps(self) -> int:
        """K1: the short ``run`` call's steps, enough for its whole end-of-run fit check."""
        return max(self.steps, vi_core.STEIN_STEPS)

    def loop_steps(self, name: str) -> int:
        """Steps of one call of loop ``name``."""
        return {"run": self.run_steps, "run_long": self.run_steps + self.steps}.get(name, self.steps)


@dataclass
class LoopTiming:
    """Timing of one compiled K-step loop: ms per iteration (median, min, every repeat), compile
    seconds, and XLA's temporary-buffer bytes for the compiled loop (None if unavailable)."""

    ms_median: float
    ms_min: float
    ms_all: list[float]
    compile_s: float
    temp_bytes: int | None


def choose_steps(d: int, num_points: int, n_rows: int, *, quick: bool) -> int:
    """K for a cell: aim at ~0.4 s (full) or ~0.1 s (quick) per timed floor call, from a rough cost
    model of one step (4 n d flops per gradient at ~150 GFLOP/s plus ~2 ns per likelihood term and
    20 us per step); clipped to [10, 400] ([5, 100] quick)."""
    step_s = num_points * n_rows * (4.0 * d / 150e9 + 2e-9) + 2e-5
    target = 0.1 if quick else 0.4
    lo, hi = (5, 100) if quick else (10, 400)
    return int(np.clip(round(target / step_s), lo, hi))


# --- the loops ---------------------------------------------------------------------------------


def build_loops(cfg: CoreConfig, key: jax.Array) -> dict[str, tuple[Callable, tuple]]:
    """The five loops of a cell as (function, args): each ``function(*args)`` runs K steps and is
    meant to be jitted; data are passed as arguments (not baked in as constants)."""
    k_data, k_mix, k_svi, k_pts = jax.random.split(key, 4)
    x, y = make_data(k_data, cfg.n_rows, cfg.d)
    model = logistic_regression
    big_k = cfg.steps

    guide = AutoIsotropicMixture(model, n_components=cfg.n_components, metric="isotropic")
    # refine=False: run() is timed as the loop a user waits for; a short run from the start fails its own fit
    # check, and the refinement that then follows (its own cost, docs/benchmarks.md) would be most of the time
    mixvi = MixVI(
        model, guide, method="ibw", step_size=cfg.step_size, num_samples=cfg.num_samples, tilt=cfg.tilt, refine=False
    )
    state = mixvi.init(k_mix, x, y)
    locs_name, scales_name = f"{guide.prefix}_locs", f"{guide.prefix}_scales"

    def run_mixvi(s: MixVIState, x: jax.Array, y: jax.Array):
        return scan_steps(lambda c: mixvi.update(c, x, y), s, big_k)

    params0 = mixvi.get_params(state)  # public: constrained locs and scales
    pts0 = draw_points(
        params0[locs_name],
        jnp.log(params0[scales_name]),
        draw_noise(k_pts, cfg.n_components, cfg.num_samples, cfg.d),
    ).reshape(cfg.num_points, cfg.d)
    k_model = jax.random.PRNGKey(0)

    def run_floor(pts: jax.Array, x: jax.Array, y: jax.Array):
        grad_v = jax.vmap(jax.grad(guide.potential_fn(x, y)), (0, None))

        def step(p):
            g = grad_v(p, k_model)
            return p - FLOOR_STEP * g, g[0, 0]

        return scan_steps(step, pts, big_k)

    def run_floor_vg(pts: jax.Array, x: jax.Array, y: jax.Array):
        vg = jax.vmap(jax.value_and_grad(guide.potential_fn(x, y)), (0, None))

        def step(c):
            p, acc = c
            v, g = vg(p, k_model)
            return (p - FLOOR_STEP * g, acc + jnp.sum(v)), g[0, 0]

        return scan_steps(step, (pts, jnp.zeros((), pts.dtype)), big_k)

    def run_overhead(s: MixVIState):
        def step(st: MixVIState):
            # MixVI's step with V(x) = |x|^2/2, whose gradient costs nothing: all that is left is the
            # noise, the points, the estimator and the geometry
            key, step_key = jax.random.split(st.rng_key)
            core, info = vi_core.step(step_key, st.core, lambda x, _key: 0.5 * jnp.sum(x**2), mixvi.settings)
            return MixVIState(core, key, st.step + 1), info.loss

        return scan_steps(step, s, big_k)

    svi = SVI(
        model,
        AutoNormal(model),
        numpyro.optim.optax_to_numpyro(optax.adam(1e-3)),
        Trace_ELBO(num_particles=cfg.num_points),
    )
    svi_state = svi.init(k_svi, x, y)

    def run_svi(s: Any, x: jax.Array, y: jax.Array):
        return scan_steps(lambda c: svi.update(c, x, y), s, big_k)

    def run_user(s: MixVIState, x: jax.Array, y: jax.Array, num_steps: int):
        # what users call: MixVI.run (its compiled chunk loop, the guard, the per-chunk transfers, the
        # fit check of its info), from the same state; a Python call, not jitted here
        return mixvi.run(k_mix, num_steps, x, y, progress_bar=False, init_state=s).params

    return {
        "floor": (run_floor, (pts0, x, y)),
        "floor_vg": (run_floor_vg, (pts0, x, y)),
        "mixvi": (run_mixvi, (state, x, y)),
        "run": (run_user, (state, x, y, cfg.run_steps)),
        "run_long": (run_user, (state, x, y, cfg.loop_steps("run_long"))),
        "svi": (run_svi, (svi_state, x, y)),
        "overhead": (run_overhead, (state,)),
    }


def time_loops(
    loops: dict[str, tuple[Callable, tuple]], steps_of: Callable[[str], int], repeats: int
) -> tuple[dict[str, LoopTiming], dict[str, Any]]:
    """Compile every loop, warm it up, then time ``repeats`` rounds (interleaved across loops);
    ``steps_of(name)``: the steps of one call of that loop. Returns the timings (ms per step) and the
    outputs of the last call of each loop."""
    compiled, compile_s, temp, outputs = {}, {}, {}, {}
    for name, (fn, args) in loops.items():
        if name in PYTHON_LOOPS:  # its first call compiles (the time beyond the steps goes to compile_s)
            t0 = time.perf_counter()
            outputs[name] = jax.block_until_ready(fn(*args))
            compiled[name], compile_s[name], temp[name] = fn, time.perf_counter() - t0, None
            continue
        compiled[name], compile_s[name], temp[name] = compile_timed(fn, args)
        outputs[name] = jax.block_until_ready(compiled[name](*args))  # warm-up
    ms: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, (_, args) in loops.items():
            t0 = time.perf_counter()
            outputs[name] = jax.block_until_ready(compiled[name](*args))
            ms[name].append(1e3 * (time.perf_counter() - t0) / steps_of(name))
    timings = {name: LoopTiming(statistics.median(v), min(v), v, compile_s[name], temp[name]) for name, v in ms.items()}
    return timings, outputs


def _paired(num: LoopTiming, den: LoopTiming) -> float:
    return statistics.median(a / b for a, b in zip(num.ms_all, den.ms_all, strict=True))


def run_parts(cfg: CoreConfig, short: LoopTiming, long: LoopTiming) -> tuple[float, float]:
    """(ms per step of ``run`` beyond its end-of-run check, ms of that check once per call): the medians
    over rounds of (long call - short call) / K and of short call - K1 x that round's per-step cost."""
    k1, k2 = cfg.run_steps, cfg.loop_steps("run_long")
    per_step = [(b * k2 - a * k1) / (k2 - k1) for a, b in zip(short.ms_all, long.ms_all, strict=True)]
    fixed = [a * k1 - k1 * p for a, p in zip(short.ms_all, per_step, strict=True)]
    return statistics.median(per_step), statistics.median(fixed)


def run_cell(cfg: CoreConfig, repeats: int, key: jax.Array) -> dict[str, Any]:
    """Build, compile and time one cell; returns its JSON record (timings, ratios, memory check)."""
    loops = build_loops(cfg, key)
    timings, outputs = time_loops(loops, cfg.loop_steps, repeats)
    floor, floor_vg = timings["floor"].ms_median, timings["floor_vg"].ms_median
    scan = timings["mixvi"].ms_median
    run_step, run_check = run_parts(cfg, timings["run"], timings["run_long"])
    nbnd_bytes = cfg.num_points * cfg.n_components * cfg.d * 4
    mix_temp, floor_temp = timings["mixvi"].temp_bytes, timings["floor_vg"].temp_bytes
    extra_temp = None if mix_temp is None or floor_temp is None else mix_temp - floor_temp
    mixvi_losses = np.asarray(outputs["mixvi"][1])
    return {
        **asdict(cfg),
        "num_points": cfg.num_points,
        "timings": {name: asdict(t) for name, t in timings.items()},
        "ratio_mixvi_floor": timings["mixvi"].ms_median / floor,
        "run_steps": cfg.run_steps,
        "run_ms_per_step": run_step,
        "run_check_ms": run_check,
        "ratio_run_floor": run_step / floor,
        "ratio_run_scan": run_step / scan,
        "ratio_run_call_scan": timings["run"].ms_median / scan,
        "ratio_run_typical_scan": (run_check + TYPICAL_RUN * run_step) / (TYPICAL_RUN * scan),
        "ratio_mixvi_floor_vg": timings["mixvi"].ms_median / floor_vg,
        "ratio_floor_vg_floor": floor_vg / floor,
        "ratio_svi_floor": timings["svi"].ms_median / floor,
        "ratio_overhead_floor": timings["overhead"].ms_median / floor,
        # paired: the median over rounds of the ratio within a round (the loops of a round run back to
        # back, so slow drifts of the background load cancel); min: ratio of the fastest repeats
        "ratio_mixvi_floor_paired": _paired(timings["mixvi"], timings["floor"]),
        "ratio_mixvi_floor_vg_paired": _paired(timings["mixvi"], timings["floor_vg"]),
        "ratio_svi_floor_paired": _paired(timings["svi"], timings["floor"]),
        "ratio_mixvi_floor_min": timings["mixvi"].ms_min / timings["floor"].ms_min,
        "ratio_mixvi_floor_vg_min": timings["mixvi"].ms_min / timings["floor_vg"].ms_min,
        "ratio_svi_floor_min": timings["svi"].ms_min / timings["floor"].ms_min,
        "nbnd_bytes": nbnd_bytes,
        "mixvi_extra_temp_bytes": extra_temp,
        # the estimator's temporaries beyond the gradient floor's stay well below one (N, B, N, d) tensor
        "nbnd_tensor_absent": None if extra_temp is None else bool(extra_temp < nbnd_bytes / 4),
        "mixvi_losses_finite": bool(np.all(np.isfinite(mixvi_losses))),
    }


# --- reporting ---------------------------------------------------------------------------------


def format_table(results: list[dict[str, Any]]) -> str:
    """Markdown table of the cells (ms/iteration medians, ratios, compile seconds, temp MB)."""
    head = (
        "| d | N | N·B | K | floor grad ms | floor v&g ms | MixVI ms | run() ms | run() check ms | SVI ms "
        "| overhead ms | MixVI/floor | run()/floor | run()/scan | run(2000)/scan | MixVI/floor v&g | SVI/floor "
        "| compile s MixVI / SVI / floor | temp MB MixVI / floor v&g |"
    )
    rows = [head, "|" + "---:|" * 19]
    for r in results:
        t = r["timings"]
        temps = [t[name]["temp_bytes"] for name in ("mixvi", "floor_vg")]
        temp = "n/a" if None in temps else " / ".join(f"{b / 2**20:.1f}" for b in temps)
        rows.append(
            f"| {r['d']} | {r['n_components']} | {r['num_points']} | {r['steps']} "
            f"| {t['floor']['ms_median']:.3f} | {t['floor_vg']['ms_median']:.3f} | {t['mixvi']['ms_median']:.3f} "
            f"| {r['run_ms_per_step']:.3f} | {r['run_check_ms']:.0f} | {t['svi']['ms_median']:.3f} "
            f"| {t['overhead']['ms_median']:.3f} | {r['ratio_mixvi_floor']:.2f} | {r['ratio_run_floor']:.2f} "
            f"| {r['ratio_run_scan']:.2f} | {r['ratio_run_typical_scan']:.2f} "
            f"| {r['ratio_mixvi_floor_vg']:.2f} | {r['ratio_svi_floor']:.2f} "
            f"| {t['mixvi']['compile_s']:.1f} / {t['svi']['compile_s']:.1f} / {t['floor']['compile_s']:.1f} "
            f"| {temp} |"
        )
    return "\n".join(rows)


def goal_lines(results: list[dict[str, Any]], goal: float | None = None) -> list[str]:
    """One line per cell with d >= 1000: MixVI/floor against the goal (1.15 with the auto step, 1.05 with a
    fixed one); plus the memory check."""
    goal = GOAL_RATIO if goal is None else goal
    lines = []
    for r in results:
        if r["d"] >= GOAL_MIN_DIM:
            ok = "meets" if r["ratio_mixvi_floor"] <= goal else "MISSES"
            lines.append(
                f"d={r['d']}, N={r['n_components']}: MixVI/floor = {r['ratio_mixvi_floor']:.2f} "
                f"(v&g floor: {r['ratio_mixvi_floor_vg']:.2f}; paired per round: {r['ratio_mixvi_floor_paired']:.2f} "
                f"and {r['ratio_mixvi_floor_vg_paired']:.2f}) {ok} the <= {goal} goal; through MixVI.run: "
                f"{r['ratio_run_floor']:.2f} x the floor and {r['ratio_run_scan']:.2f} x the jitted scan of the "
                f"step per step, plus {r['run_check_ms']:.0f} ms of fit check per call ({TYPICAL_RUN} steps: "
                f"{r['ratio_run_typical_scan']:.2f} x the scan; one call of {r['run_steps']} steps: "
                f"{r['ratio_run_call_scan']:.2f} x)"
            )
    absent = [r["nbnd_tensor_absent"] for r in results if r["nbnd_tensor_absent"] is not None]
    if absent:
        worst = max(results, key=lambda r: r["nbnd_bytes"])
        extra = worst["mixvi_extra_temp_bytes"]
        over = [f"d={r['d']}, N={r['n_components']}" for r in results if r["nbnd_tensor_absent"] is False]
        verdict = "yes in every cell" if not over else f"NO in {len(over)} of {len(absent)} cells ({'; '.join(over)})"
        lines.append(
            f"no (N, B, N, d) tensor: {verdict} (largest cell: MixVI's temporaries exceed the v&g floor's by "
            f"{extra / 2**20:.1f} MB vs {worst['nbnd_bytes'] / 2**20:.0f} MB for one such tensor)"
        )
    return lines


def _goal(step_size: float | str) -> float:
    return GOAL_RATIO if step_size == "auto" else FIXED_GOAL_RATIO


def render_markdown(report: dict[str, Any]) -> str:
    """The generated section of docs/benchmarks.md (between the bench-core markers)."""
    s = report["settings"]
    step = s["mixvi"]["step_size"]
    command = f"python -m benchmarks.core{' --quick' if s['quick'] else ''}"
    if step != "auto":
        command += f" --dims {','.join(map(str, s['dims']))} --components {','.join(map(str, s['components']))}"
        command += f" --step-size {step}"
    lines = [
        measured_line(report["date"], report["machine"], command, f"repeats = {s['repeats']}") + ".",
        "",
        f"Target: Bayesian logistic regression, n = {s['n_rows']} synthetic rows, prior N(0, I), "
        f"B = {s['num_samples']}, float32. Times are ms per iteration (median over repeats of a "
        "jitted K-step `lax.scan`, compile excluded). run(): `MixVI.run` from the same state, the call a user "
        f"makes, with `refine=False`, after a first call that compiled its loop, timed for K1 = max(K, "
        f"{vi_core.STEIN_STEPS}) and K1 + K steps: run() ms is the difference per step, run() check ms the rest "
        f"of the K1-step call once (the fit check of its last {vi_core.STEIN_STEPS} steps' draws, which a loop "
        "of `update` does not compute, and the call's "
        f"host work); run({TYPICAL_RUN})/scan = (check + {TYPICAL_RUN} run() ms) / ({TYPICAL_RUN} MixVI ms).",
        "",
        format_table(report["results"]),
        "",
        *[f"- {line}" for line in goal_lines(report["results"], _goal(step))],
    ]
    return "\n".join(lines)


# --- entry point -------------------------------------------------------------------------------


def run_benchmark(
    dims: list[int],
    components: list[int],
    *,
    num_samples: int = 10,
    n_rows: int = 1000,
    repeats: int = 7,
    steps: int | None = None,
    quick: bool = False,
    seed: int = 0,
    step_size: float | str = "auto",
    tilt: float | str = "auto",
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run every (d, N) cell and return the report (date, machine, settings, results)."""
    machine = machine_info()
    results = []
    key = jax.random.PRNGKey(seed)
    for d in dims:
        for n in components:
            k = steps or choose_steps(d, n * num_samples, n_rows, quick=quick)
            cfg = CoreConfig(
                d=d, n_components=n, num_samples=num_samples, n_rows=n_rows, steps=k, step_size=step_size, tilt=tilt
            )
            key, sub = jax.random.split(key)
            t0 = time.perf_counter()
            rec = run_cell(cfg, repeats, sub)
            results.append(rec)
            if log:
                log(
                    f"  d={d:5d} N={n:4d} K={k:4d}: floor {rec['timings']['floor']['ms_median']:.3f} ms, "
                    f"MixVI {rec['timings']['mixvi']['ms_median']:.3f} ms ({rec['ratio_mixvi_floor']:.2f}x), "
                    f"SVI {rec['timings']['svi']['ms_median']:.3f} ms ({rec['ratio_svi_floor']:.2f}x) "
                    f"[{time.perf_counter() - t0:.0f} s]"
                )
    if hasattr(os, "getloadavg"):
        machine["loadavg_end"] = list(os.getloadavg())
    return {
        "benchmark": "core",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "dims": dims,
            "components": components,
            "num_samples": num_samples,
            "n_rows": n_rows,
            "repeats": repeats,
            "quick": quick,
            "seed": seed,
            "dtype": "float32",
            "mixvi": {"method": "ibw", "step_size": step_size, "tilt": tilt, "shared_noise": True, "refine": False},
            "svi": {"guide": "AutoNormal", "elbo": "Trace_ELBO(num_particles=N*B)", "optim": "optax.adam(1e-3)"},
            "floor": f"vmap(grad(V)) on (N*B, d), points moved by -{FLOOR_STEP} grad V per step",
            "goal": f"MixVI/floor <= {GOAL_RATIO} at d >= {GOAL_MIN_DIM}",
            "goal_ratio": GOAL_RATIO,
            "goal_min_dim": GOAL_MIN_DIM,
        },
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.core``: time MixVI, the gradient floors and SVI; print the table, write the JSON
    (``--out``) and the docs section (``--md``; an empty string skips either). Returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.core", description="Per-iteration cost of MixVI vs the N*B target gradients and SVI."
    )
    parser.add_argument("--quick", action="store_true", help="short loops and 3 repeats (~1-2 minutes)")
    parser.add_argument(
        "--out", default=repo_path("docs/benchmarks/core.json"),
        help="JSON output (default docs/benchmarks/core.json of the repository; '' to skip)",
    )
    parser.add_argument(
        "--md", default=repo_path("docs/benchmarks.md"),
        help="markdown page to update (default docs/benchmarks.md of the repository; '' to skip)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per loop (default 7, quick 3)")
    parser.add_argument("--dims", type=int_list, default=[10, 100, 1000], help="comma-separated d values")
    parser.add_argument("--components", type=int_list, default=[10, 20, 100], help="comma-separated N values")
    parser.add_argument("--num-samples", type=int, default=10, help="B, draws per component")
    parser.add_argument("--rows", type=int, default=1000, help="n, data rows of the logistic regression")
    parser.add_argument("--steps", type=int, default=None, help="K, steps per timed scan (default: by size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--step-size", type=lambda v: v if v == "auto" else float(v), default="auto",
        help="MixVI's step size: 'auto' (default) or a fixed gamma, e.g. 0.01",
    )
    parser.add_argument(
        "--tilt", type=lambda v: v if v == "auto" else float(v), default="auto",
        help="MixVI's tilt: 'auto' (default; V's value at every draw in a run's second half) or an exponent, e.g. 0",
    )
    parser.add_argument("--section", default="core", help="name of the --md section to rewrite (a new one is appended)")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
    if repeats < 1:
        parser.error("--repeats must be >= 1")

    print(f"benchmarks.core: d in {args.dims}, N in {args.components}, B = {args.num_samples}, n = {args.rows}")
    report = run_benchmark(
        args.dims,
        args.components,
        num_samples=args.num_samples,
        n_rows=args.rows,
        repeats=repeats,
        steps=args.steps,
        quick=args.quick,
        seed=args.seed,
        step_size=args.step_size,
        tilt=args.tilt,
    )
    print()
    print(format_table(report["results"]))
    for line in goal_lines(report["results"], _goal(args.step_size)):
        print(line)
    heading = None if args.section == "core" else f"### {args.section} (MixVI step_size={args.step_size})"
    publish(report, args.out, args.md, args.section, render_markdown(report), heading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
