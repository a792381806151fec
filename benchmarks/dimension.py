"""``python -m benchmarks.dimension``: time per iteration against the dimension d, mixvi's isotropic IBW step
against the full-covariance Bures-Wasserstein step (``benchmarks.bures_full``).

On the standard Gaussian target V(z) = |z|^2 / (2 sigma^2), sigma = 1 (whose gradient costs O(d), so
the family's own cost shows), for d in {1, 2, 5, ..., 1000} and N in {1, 5}, B = 10 draws per
component, float32, two jitted K-step ``lax.scan`` loops are timed:

``mixvi-ibw``   ``MixVI._step`` of ``MixVI(model, AutoIsotropicMixture(model, n_components=N), "ibw", 0.05,
                num_samples=10)``, the model ``x ~ Normal(0, 1).expand([d]).to_event(1)``: O(N B d + N^2 d)
                per step (arXiv 2506.13613);
``bures-full``  ``bures_full.step`` (step size 0.01): d x d Stein Hessians, M Sigma M products and a
                Cholesky per component, O(N d^3 + N^2 B d^2) per step (arXiv 2205.15902).

Both start from the same means, 0.05 N(0, I) (close to the target, so the B = 10 Hessian estimates of
the full-covariance step, very noisy when d >> B, do not blow the covariances up within K steps; the
values are checked finite, the numbers measured are costs, not accuracy). Each cell: compile time
apart, one warm-up call, then ``repeats`` timed calls (interleaved between the two methods so that
background load hits both alike); ms per step is the median over calls divided by K. K is chosen so a
call takes ~0.25 s (from a cost model, corrected once from the warm-up call if it is off by more than
2x). BLAS / LAPACK (which JAX's Cholesky and triangular solves call on CPU) run on one thread
(``--blas-threads``; ``limit_blas_threads`` says why). The log-log slope of time against d is fitted
over d >= 100 for each method and N: ~1 is linear cost, 3 cubic; a fixed per-step overhead pulls it
below the asymptotic value.

Entry point: ``main(argv) -> int`` (``python -m benchmarks.dimension``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from benchmarks import bures_full
from benchmarks.report import (
    compile_timed,
    display_path,
    int_list,
    limit_blas_threads,
    machine_info,
    measured_line,
    publish,
    repo_path,
    scan_steps,
)
from mixvi.engine import MixVI
from mixvi.guide import AutoIsotropicMixture

DIMS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
QUICK_DIMS = (1, 10, 100, 300, 1000)
COMPONENTS = (1, 5)
METHODS = ("mixvi-ibw", "bures-full")
LABELS = {"mixvi-ibw": "mixvi IBW (isotropic)", "bures-full": "full-covariance Bures"}
MD_HEADING = "## Timing against dimension (`python -m benchmarks.dimension`)"
SIGMA = 1.0
IBW_STEP = 0.05
BURES_STEP = 0.01
INIT_LOC_SCALE = 0.05
SLOPE_FROM = 100
MAX_STEPS = 200_000


# --- the two loops ---------------------------------------------------------------------------------


def gaussian_potential(sigma: float = SIGMA) -> Callable[[jax.Array], jax.Array]:
    """V(z) = |z|^2 / (2 sigma^2) for z (S, d) -> (S,)."""

    def v(z: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum(z**2, -1) / sigma**2

    return v


def gaussian_model(d: int, sigma: float = SIGMA) -> Callable[[], None]:
    """The NumPyro model of the same target: x ~ N(0, sigma^2 I_d), potential |x|^2/(2 sigma^2) + const."""

    def model() -> None:
        numpyro.sample("x", dist.Normal(0.0, sigma).expand([d]).to_event(1))

    return model


def cost_model_s(method: str, d: int, n: int, num_samples: int) -> float:
    """A rough seconds-per-step guess (one 2-core CPU) used to choose K: mixvi ~ N B d, Bures ~ N d^3 +
    N^2 B d^2 (the warm-up call corrects K when the guess is off by more than 2x)."""
    if method == "mixvi-ibw":
        return 3e-6 + 3e-9 * n * num_samples * d
    return 3e-6 + n * (3e-11 * d**3 + 1.2e-10 * num_samples * n * d**2)


def build_loop(
    method: str, d: int, n: int, num_samples: int, key: jax.Array
) -> tuple[Callable[[int], Callable[[Any], tuple[Any, jax.Array]]], Any]:
    """(make(K) -> fn(state) -> (state, losses (K,)), state0) for one method and cell; ``fn`` is meant to
    be jitted. Both methods start from the same means 0.05 N(0, I) and unit scales."""
    locs = INIT_LOC_SCALE * jax.random.normal(jax.random.fold_in(key, 1), (n, d), jnp.float32)
    if method == "mixvi-ibw":
        model = gaussian_model(d)
        mv = MixVI(
            model, AutoIsotropicMixture(model, n_components=n, metric="isotropic"), "ibw", IBW_STEP, num_samples=num_samples
        )
        state = mv.init(key, init_params={"auto_locs": locs, "auto_scales": jnp.ones((n,), jnp.float32)})

        def step(s: Any) -> tuple[Any, jax.Array]:
            return mv.update(s)

    elif method == "bures-full":
        potential = gaussian_potential()
        state = bures_full.init(locs, 1.0, key)

        def step(s: Any) -> tuple[Any, jax.Array]:
            return bures_full.step(s, potential, BURES_STEP, num_samples)

    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")

    def make(steps: int) -> Callable[[Any], tuple[Any, jax.Array]]:
        return lambda s: scan_steps(step, s, steps)

    return make, state


class _Compiled:
    """One method's compiled K-step loop of a cell, with its K, compile seconds and timings."""

    def __init__(self, method: str, make: Callable, state: Any, steps: int):
        self.method, self.make, self.state = method, make, state
        self.compile(steps)
        self.ms: list[float] = []

    def compile(self, steps: int) -> None:
        """(Re)compile the loop for K = ``steps``, timing trace + lower + compile."""
        self.steps = steps
        self.fn, self.compile_s, _ = compile_timed(self.make(steps), (self.state,))

    def call(self) -> float:
        """Run the loop once; returns its seconds and keeps the losses."""
        t0 = time.perf_counter()
        _, losses = jax.block_until_ready(self.fn(self.state))
        elapsed = time.perf_counter() - t0
        self.losses = losses
        return elapsed


def time_cell(
    d: int,
    n: int,
    *,
    num_samples: int,
    repeats: int,
    target_s: float,
    key: jax.Array,
    methods: tuple[str, ...] = METHODS,
) -> list[dict[str, Any]]:
    """Compile, warm up and time every method at (d, N); one record per method."""
    loops = {}
    for method in methods:
        make, state = build_loop(method, d, n, num_samples, key)
        steps = int(np.clip(round(target_s / cost_model_s(method, d, n, num_samples)), 1, MAX_STEPS))
        loops[method] = lp = _Compiled(method, make, state, steps)
        warm = lp.call()
        # the cost model is only a guess: if the call is off by more than 2x, recompile once with a corrected K
        if (warm < target_s / 2 and steps < MAX_STEPS) or (warm > 2 * target_s and steps > 1):
            better = int(np.clip(round(steps * target_s / max(warm, 1e-6)), 1, MAX_STEPS))
            if better != steps:
                lp.compile(better)
                lp.call()
    for _ in range(repeats):
        for lp in loops.values():
            lp.ms.append(1e3 * lp.call() / lp.steps)
    return [
        {
            "method": method,
            "n_components": n,
            "d": d,
            "steps": lp.steps,
            "ms_median": statistics.median(lp.ms),
            "ms_min": min(lp.ms),
            "ms_all": lp.ms,
            "compile_s": lp.compile_s,
            "losses_finite": bool(np.all(np.isfinite(np.asarray(lp.losses)))),
        }
        for method, lp in loops.items()
    ]


# --- slopes and reporting ----------------------------------------------------------------------


def fit_slope(dims: list[int], ms: list[float], slope_from: int = SLOPE_FROM) -> tuple[float, list[int]]:
    """Least-squares slope of log(ms) against log(d) over d >= ``slope_from`` (over every d when fewer
    than two are that large); returns (slope, the dims used)."""
    pairs = sorted(zip(dims, ms))
    used = [(d, t) for d, t in pairs if d >= slope_from]
    if len(used) < 2:
        used = pairs
    if len(used) < 2:
        return float("nan"), [d for d, _ in used]
    x = np.log([d for d, _ in used])
    y = np.log([t for _, t in used])
    return float(np.polyfit(x, y, 1)[0]), [int(d) for d, _ in used]


def compute_slopes(results: list[dict[str, Any]], slope_from: int = SLOPE_FROM) -> list[dict[str, Any]]:
    """One record per (method, N): the fitted slope over d >= ``slope_from`` and the local slope between
    the two largest d."""
    out = []
    keys = sorted({(r["method"], r["n_components"]) for r in results}, key=lambda k: (METHODS.index(k[0]), k[1]))
    for method, n in keys:
        rows = [r for r in results if r["method"] == method and r["n_components"] == n]
        slope, used = fit_slope([r["d"] for r in rows], [r["ms_median"] for r in rows], slope_from)
        # the local slope between the two largest d: closest to the asymptotic exponent
        top = sorted(rows, key=lambda r: r["d"])[-2:]
        last = (
            float(np.log(top[1]["ms_median"] / top[0]["ms_median"]) / np.log(top[1]["d"] / top[0]["d"]))
            if len(top) == 2
            else float("nan")
        )
        out.append(
            {
                "method": method,
                "n_components": n,
                "slope": slope,
                "dims": used,
                "slope_last": last,
                "dims_last": [r["d"] for r in top],
            }
        )
    return out


def _cell(results: list[dict[str, Any]], method: str, n: int, d: int) -> dict[str, Any] | None:
    for r in results:
        if r["method"] == method and r["n_components"] == n and r["d"] == d:
            return r
    return None


def format_table(report: dict[str, Any]) -> str:
    """Markdown table: one row per d, ms per step of each method and N, and the Bures / IBW ratio."""
    results = report["results"]
    dims = sorted({r["d"] for r in results})
    ns = sorted({r["n_components"] for r in results})
    head = "| d | " + " | ".join(f"IBW N={n} ms | Bures N={n} ms | Bures/IBW N={n}" for n in ns) + " |"
    rows = [head, "|" + "---:|" * (1 + 3 * len(ns))]
    for d in dims:
        cells = [str(d)]
        for n in ns:
            a, b = _cell(results, "mixvi-ibw", n, d), _cell(results, "bures-full", n, d)
            cells.append("–" if a is None else f"{a['ms_median']:.4g}")
            cells.append("–" if b is None else f"{b['ms_median']:.4g}" + ("" if b["losses_finite"] else " (non-finite)"))
            cells.append("–" if a is None or b is None else f"{b['ms_median'] / a['ms_median']:.3g}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def slope_lines(report: dict[str, Any]) -> list[str]:
    """One line per (method, N): the fitted log-log slope (and the dims it used), the local end slope."""
    return [
        f"{LABELS[s['method']]}, N = {s['n_components']}: slope {s['slope']:.2f} "
        f"(log-log fit over d = {', '.join(map(str, s['dims']))}); "
        f"{s['slope_last']:.2f} between d = {' and '.join(map(str, s['dims_last']))}"
        for s in report["slopes"]
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """The generated section of docs/benchmarks.md (between the ``bench dimension`` markers)."""
    s = report["settings"]
    lines = [
        measured_line(report["date"], report["machine"], f"python -m benchmarks.dimension{' --quick' if s['quick'] else ''}",
                      f"repeats = {s['repeats']}") + ".",
        "",
        f"Target: N(0, I_d), V(z) = |z|²/2 (its gradient is O(d), so each family's own cost shows); "
        f"B = {s['num_samples']} draws per component, float32. mixvi: `MixVI(..., 'ibw', {s['ibw_step']})`, "
        f"O(N B d + N² d) per step; full-covariance Bures (`benchmarks.bures_full`, step {s['bures_step']}): "
        "Stein Hessians, M Σ M products and a Cholesky per component, O(N d³ + N² B d²). Times are ms per "
        "step (median over repeats of a jitted K-step `lax.scan`, compile excluded).",
        "",
        format_table(report),
        "",
        *[f"- {line}" for line in slope_lines(report)],
    ]
    fig = s.get("figure_md")
    if fig:
        lines += ["", f"![time per step against d]({fig})"]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Log-log figure: ms per step against d, both methods, both N, slope in the legend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    results = report["results"]
    slopes = {(s["method"], s["n_components"]): s["slope"] for s in report["slopes"]}
    colors = {"mixvi-ibw": "tab:blue", "bures-full": "tab:red"}
    styles = ["-", "--", ":", "-."]
    ns = sorted({r["n_components"] for r in results})
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in METHODS:
        for i, n in enumerate(ns):
            rows = sorted((r for r in results if r["method"] == method and r["n_components"] == n), key=lambda r: r["d"])
            if not rows:
                continue
            ax.plot(
                [r["d"] for r in rows],
                [r["ms_median"] for r in rows],
                styles[i % len(styles)],
                marker="o",
                ms=3.5,
                color=colors[method],
                label=f"{LABELS[method]}, N={n} (slope {slopes[(method, n)]:.2f})",
            )
    # faint d and d^3 guides through each method's largest-d point at the smallest N, over d >= slope_from
    for method, power in (("mixvi-ibw", 1), ("bures-full", 3)):
        rows = sorted((r for r in results if r["method"] == method and r["n_components"] == ns[0]), key=lambda r: r["d"])
        lo = max(min(r["d"] for r in rows), report["settings"].get("slope_from", SLOPE_FROM))
        if rows and lo < rows[-1]["d"]:
            hi, t_hi = rows[-1]["d"], rows[-1]["ms_median"]
            ax.plot([lo, hi], [t_hi * (lo / hi) ** power, t_hi], ":", color="0.55", lw=1)
            ax.annotate(f"∝ d{'³' if power == 3 else ''}", (lo, t_hi * (lo / hi) ** power), color="0.4", fontsize=8,
                        textcoords="offset points", xytext=(-22, -2))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("ms per step")
    ax.set_title(f"Time per step against d (B = {report['settings']['num_samples']}, CPU)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- entry point -------------------------------------------------------------------------------


def run_benchmark(
    dims: list[int],
    components: list[int],
    *,
    num_samples: int = 10,
    repeats: int = 5,
    quick: bool = False,
    seed: int = 0,
    slope_from: int = SLOPE_FROM,
    call_s: float | None = None,
    blas_threads: int | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Time every (d, N) cell of both methods; returns the report (date, machine, settings, results, slopes).
    ``call_s``: seconds aimed at per timed call (default 0.25, quick 0.1). ``blas_threads``: the BLAS thread limit the caller set (``limit_blas_threads``), recorded in the settings."""
    machine = machine_info()
    target_s = call_s if call_s is not None else (0.1 if quick else 0.25)
    key = jax.random.PRNGKey(seed)
    results: list[dict[str, Any]] = []
    for n in components:
        for d in dims:
            t0 = time.perf_counter()
            recs = time_cell(
                d, n, num_samples=num_samples, repeats=repeats, target_s=target_s, key=jax.random.fold_in(key, d * 1000 + n)
            )
            results.extend(recs)
            if log:
                a, b = recs
                log(
                    f"  N={n} d={d:5d}: IBW {a['ms_median']:.4g} ms (K={a['steps']}), "
                    f"Bures {b['ms_median']:.4g} ms (K={b['steps']}){'' if b['losses_finite'] else ' non-finite!'} "
                    f"[{time.perf_counter() - t0:.1f} s]"
                )
    if hasattr(os, "getloadavg"):
        machine["loadavg_end"] = list(os.getloadavg())
    return {
        "benchmark": "dimension",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "dims": list(dims),
            "components": list(components),
            "num_samples": num_samples,
            "repeats": repeats,
            "quick": quick,
            "seed": seed,
            "dtype": "float32",
            "target": f"N(0, {SIGMA}^2 I_d), V(z) = |z|^2 / (2 sigma^2)",
            "ibw_step": IBW_STEP,
            "bures_step": BURES_STEP,
            "init": f"means {INIT_LOC_SCALE} N(0, I), unit scales / identity covariances",
            "call_target_s": target_s,
            "slope_from": slope_from,
            "blas_threads": blas_threads,
        },
        "results": results,
        "slopes": compute_slopes(results, slope_from),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.dimension``: time both methods over d, print the table and slopes, write the JSON
    (``--out``), the figure (``--figure``) and the docs section (``--md``); '' skips any of them."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dimension",
        description="Time per step against d: mixvi's isotropic IBW step vs the full-covariance Bures step.",
    )
    parser.add_argument("--quick", action="store_true", help=f"d in {list(QUICK_DIMS)}, shorter calls, 3 repeats")
    parser.add_argument(
        "--out", default=repo_path("docs/benchmarks/dimension.json"),
        help="JSON output (default docs/benchmarks/dimension.json of the repository; '' to skip)",
    )
    parser.add_argument(
        "--md", default=repo_path("docs/benchmarks.md"),
        help="markdown page to update (default docs/benchmarks.md of the repository; '' to skip)",
    )
    parser.add_argument(
        "--figure", default=repo_path("docs/figures/timing_vs_dim.png"),
        help="PNG figure (default docs/figures/timing_vs_dim.png of the repository; '' to skip)",
    )
    parser.add_argument("--dims", type=int_list, default=None, help=f"comma-separated d values (default {list(DIMS)})")
    parser.add_argument("--components", type=int_list, default=list(COMPONENTS), help="comma-separated N values")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per loop (default 5, quick 3)")
    parser.add_argument("--num-samples", type=int, default=10, help="B, draws per component")
    parser.add_argument("--slope-from", type=int, default=SLOPE_FROM, help="fit the slope over d >= this")
    parser.add_argument("--call-seconds", type=float, default=None, help="aim of one timed call (0.25 s, quick 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="BLAS/LAPACK threads (default 1; 0 leaves them as they are)"
    )
    args = parser.parse_args(argv)
    dims = args.dims or list(QUICK_DIMS if args.quick else DIMS)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    if min(dims) < 1 or min(args.components) < 1 or args.num_samples < 1:
        parser.error("--dims, --components and --num-samples must be positive")

    print(f"benchmarks.dimension: d in {dims}, N in {args.components}, B = {args.num_samples}")
    with limit_blas_threads(args.blas_threads):
        report = run_benchmark(
            dims,
            args.components,
            num_samples=args.num_samples,
            repeats=repeats,
            quick=args.quick,
            seed=args.seed,
            slope_from=args.slope_from,
            call_s=args.call_seconds,
            blas_threads=args.blas_threads if args.blas_threads >= 1 else None,
        )
    if args.figure:
        report["settings"]["figure"] = display_path(args.figure)
    if args.figure and args.md:
        # the figure as the markdown page links it
        rel = os.path.relpath(Path(args.figure).resolve(), Path(args.md).resolve().parent)
        report["settings"]["figure_md"] = Path(rel).as_posix()
    print()
    print(format_table(report))
    for line in slope_lines(report):
        print(line)
    if args.figure:
        plot(report, args.figure)
        print(f"wrote {display_path(args.figure)}")
    publish(report, args.out, args.md, "dimension", render_markdown(report), MD_HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
