"""`python -m benchmarks.scale`: cost per iteration and memory at large d and N.

Grid: d in {1e3, 1e4, 1e5, 1e6} x N in {10, 100}, B = 10, two targets:

- ``logistic``: Bayesian logistic regression (``benchmarks.targets.logistic``) with n = 100 synthetic rows
  (so the data, n x d floats, stay at 400 MB at d = 1e6); one gradient is two (n, d) mat-vecs.
- ``mixture``: an isotropic Gaussian-mixture target with K = 10 components in R^d,
  V(x) = -logsumexp_k [log pi_k - |x - mu_k|^2 / 2] (+ const); one gradient is O(K d).

For every cell: ms/iteration of ``MixVI._step`` (ibw, auto step, shared noise, loss from one draw
per component) and of the bare target-gradient floor (``vmap(grad(V))`` on the N B points, in the
same jitted ``lax.scan`` style), their ratio, and the peak memory of the compiled MixVI loop
(XLA's temp + argument + output bytes; on a GPU also the device's peak bytes in use). Cells whose
estimated memory exceeds half of the machine's (or device's) memory, or whose single step would not
fit the time budget, are reported as skipped with the reason; the largest (d, N) that ran is listed
per target. MixVI's loop runs with the BLAS library limited as ``MixVI.run`` limits it (one thread by
default, :mod:`mixvi.loop`), which matters for the dense metric's triangular solves.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

from benchmarks.report import machine_info, publish, repo_path
from benchmarks.targets.logistic import logistic_regression, make_data
from mixvi.engine import MixVI, MixVIState
from mixvi.estimators import draw_noise, draw_points
from mixvi.guide import AutoIsotropicMixture
from mixvi.loop import blas_limit
from mixvi.vi import DEFAULT_RANK, DENSE_MAX_DIM

DIMS = (1_000, 10_000, 100_000, 1_000_000)
COMPONENTS = (10, 100)
NUM_SAMPLES = 10
ROWS = 100
TARGET_COMPONENTS = 10
BLAS_THREADS = MixVI.__init__.__kwdefaults__["blas_threads"]
"""MixVI's loops run with the BLAS threads ``MixVI.run`` uses by default."""


def mixture_target(means: jax.Array) -> None:
    """x ~ (1/K) sum_k N(mu_k, I) over R^d (improper flat prior + the log density as a factor)."""
    d = means.shape[1]
    x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real_vector, (), (d,)))
    sq = jnp.sum(means**2, -1) - 2.0 * means @ x + jnp.sum(x**2)
    numpyro.factor("target", logsumexp(-0.5 * sq) - jnp.log(means.shape[0]))


def _target(name: str, d: int, key: jax.Array) -> tuple[Callable, tuple]:
    if name == "logistic":
        return logistic_regression, make_data(key, ROWS, d)
    means = 3.0 * jax.random.normal(key, (TARGET_COMPONENTS, d)) / math.sqrt(d) * 4.0
    return mixture_target, (means,)


def _estimated_bytes(name: str, d: int, n: int, metric: str = "isotropic") -> int:
    points = n * NUM_SAMPLES * d * 4
    data = ROWS * d * 4 if name == "logistic" else TARGET_COMPONENTS * d * 4
    shared = {"dense": 3 * d * d, "lowrank": 4 * d * (DEFAULT_RANK + 2 * NUM_SAMPLES), "diagonal": d}.get(metric, 0)
    # points, their gradients, the reverse-mode residuals of the likelihood (~2 more), noise, params, metric
    return 4 * points + data + 4 * NUM_SAMPLES * d + 8 * n * d + 4 * shared


def _memory_limit() -> int:
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _compiled_bytes(compiled: Any) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - memory_analysis is optional per backend
        return None


def _device_peak() -> int | None:
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _loops(
    name: str, d: int, n: int, key: jax.Array, metric: str = "isotropic"
) -> tuple[Callable, tuple, Callable, tuple]:
    k_data, k_init, k_pts = jax.random.split(key, 3)
    model, args = _target(name, d, k_data)
    guide = AutoIsotropicMixture(model, n_components=n, init_scale=0.5, metric=metric)
    vi = MixVI(model, guide, num_samples=NUM_SAMPLES)
    state = vi.init(k_init, *args)
    params = vi.get_params(state)  # public: constrained locs and scales
    locs, u = params["auto_locs"], jnp.log(params["auto_scales"])
    pts = draw_points(locs, u, draw_noise(k_pts, n, NUM_SAMPLES, d)).reshape(-1, d)
    k_model = jax.random.PRNGKey(0)

    def mixvi_loop(s: MixVIState, steps: int, *a):
        return jax.lax.scan(lambda c, _: vi.update(c, *a), s, None, length=steps)

    def floor_loop(p: jax.Array, steps: int, *a):
        grad_v = jax.vmap(jax.grad(guide.potential_fn(*a)), (0, None))

        def step(c, _):
            g = grad_v(c, k_model)
            return c - 1e-4 * g, g[0, 0]

        return jax.lax.scan(step, p, None, length=steps)

    return mixvi_loop, (state, *args), floor_loop, (pts, *args)


def _time(fn: Callable, args: tuple, steps: int, repeats: int) -> tuple[float, float, int | None]:
    t0 = time.perf_counter()
    compiled = jax.jit(fn, static_argnums=1).lower(args[0], steps, *args[1:]).compile()
    compile_s = time.perf_counter() - t0
    run = lambda: jax.block_until_ready(compiled(args[0], *args[1:]))  # noqa: E731
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - t0) / steps)
    return statistics.median(times), compile_s, _compiled_bytes(compiled)


def run_cell(
    name: str, d: int, n: int, *, repeats: int, budget_s: float, key: jax.Array, metric: str = "isotropic"
) -> dict[str, Any]:
    """Time one cell (or report why it was skipped)."""
    record: dict[str, Any] = {"target": name, "d": d, "N": n, "B": NUM_SAMPLES, "metric": metric}
    need, limit = _estimated_bytes(name, d, n, metric), _memory_limit()
    record["estimated_bytes"] = need
    if metric == "dense" and d > DENSE_MAX_DIM:
        return {**record, "skipped": f"metric='dense' is refused past d = {DENSE_MAX_DIM}"}
    if need > limit // 2:
        return {**record, "skipped": f"estimated {need / 2**30:.1f} GiB > half of {limit / 2**30:.0f} GiB"}
    mixvi_loop, mixvi_args, floor_loop, floor_args = _loops(name, d, n, key, metric)
    t0 = time.perf_counter()
    probe, _, _ = _time(floor_loop, floor_args, 1, 1)
    if (time.perf_counter() - t0) > budget_s / 3 or probe * 1e-3 * (2 + repeats) * 4 > budget_s:
        return {**record, "skipped": f"one gradient floor step takes {probe / 1e3:.1f} s: over the time budget"}
    steps = max(1, min(50, int(1500 / max(probe, 1e-3))))
    floor_ms, floor_compile, floor_bytes = _time(floor_loop, floor_args, steps, repeats)
    with blas_limit(BLAS_THREADS):  # as MixVI.run does (mixvi.loop: BLAS threads)
        mixvi_ms, mixvi_compile, mixvi_bytes = _time(mixvi_loop, mixvi_args, steps, repeats)
    return {
        **record,
        "steps": steps,
        "floor_ms": floor_ms,
        "mixvi_ms": mixvi_ms,
        "ratio": mixvi_ms / floor_ms,
        "compile_s": {"floor": floor_compile, "mixvi": mixvi_compile},
        "mixvi_bytes": mixvi_bytes,
        "floor_bytes": floor_bytes,
        "device_peak_bytes": _device_peak(),
    }


def _fmt_bytes(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.0f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def format_table(cells: list[dict[str, Any]]) -> str:
    head = "| target | d | N | metric | ms/iter MixVI | ms/iter floor | ratio | peak memory (XLA) | device peak |"
    lines = [head, "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for c in cells:
        metric = c.get("metric", "isotropic")
        if "skipped" in c:
            lines.append(f"| {c['target']} | {c['d']:.0e} | {c['N']} | {metric} | skipped: {c['skipped']} | | | | |")
        else:
            lines.append(
                f"| {c['target']} | {c['d']:.0e} | {c['N']} | {metric} | {c['mixvi_ms']:.1f} | {c['floor_ms']:.1f} | "
                f"{c['ratio']:.2f} | {_fmt_bytes(c['mixvi_bytes'])} | {_fmt_bytes(c['device_peak_bytes'])} |"
            )
    return "\n".join(lines)


def largest(cells: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name in sorted({c["target"] for c in cells}):
        ran = [c for c in cells if c["target"] == name and "skipped" not in c]
        if ran:
            best = max(ran, key=lambda c: (c["d"] * c["N"], c["d"]))
            out[name] = {"d": best["d"], "N": best["N"]}
    return out


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    big = ", ".join(f"{t}: d = {v['d']:.0e}, N = {v['N']}" for t, v in report["largest"].items())
    return (
        f"Measured {m['date']} with `python -m benchmarks.scale` on {m['platform']}, {m['cpu_count']} CPUs, "
        f"devices {m['devices']}, jax {m['jax']} ({m['backend']}); load average {m['load_avg_1min']}; "
        f"time budget {report['budget_s']:.0f} s.\n\n"
        f"{format_table(report['cells'])}\n\nLargest (d, N) that ran: {big}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.scale``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=lambda s: [int(float(v)) for v in s.split(",")], default=list(DIMS))
    p.add_argument("--components", type=lambda s: [int(v) for v in s.split(",")], default=list(COMPONENTS))
    p.add_argument("--targets", type=lambda s: s.split(","), default=["logistic", "mixture"])
    p.add_argument("--metrics", type=lambda s: s.split(","), default=["isotropic"],
                   help="shared metrics to time (isotropic, diagonal, dense, lowrank), every cell each")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run (cells past it are skipped)")
    p.add_argument("--out", default=repo_path("docs/benchmarks/scale.json"),
                   help="JSON output (default docs/benchmarks/scale.json of the repository; '' to skip)")
    p.add_argument("--md", default=repo_path("docs/benchmarks.md"),
                   help="markdown page to update (default docs/benchmarks.md of the repository; '' to skip)")
    p.add_argument("--section", default="scale",
                   help="marker name of the page's section to rewrite (scripts/gpu_scale.sh uses 'scale-gpu')")
    a = p.parse_args(argv)
    start = time.perf_counter()
    cells: list[dict[str, Any]] = []
    key = jax.random.PRNGKey(0)
    for name in a.targets:
        for d in sorted(a.dims):
            for n, metric in itertools.product(sorted(a.components), a.metrics):
                left = a.budget - (time.perf_counter() - start)
                if left < 5:
                    cells.append(
                        {"target": name, "d": d, "N": n, "B": NUM_SAMPLES, "metric": metric,
                         "skipped": "run's time budget spent"}
                    )
                    continue
                cell = run_cell(name, d, n, repeats=a.repeats, budget_s=min(left, a.budget / 4), key=key, metric=metric)
                cells.append(cell)
                msg = cell.get("skipped") or f"{cell['mixvi_ms']:.1f} ms vs floor {cell['floor_ms']:.1f} ms ({cell['ratio']:.2f}x)"
                print(f"  {name:8s} d={d:>8d} N={n:>4d} {metric:9s}: {msg}", flush=True)
    report = {
        "machine": machine_info(), "budget_s": a.budget, "metrics": a.metrics, "cells": cells, "largest": largest(cells)
    }
    print(format_table(cells))
    heading = None if a.section == "scale" else f"### `python -m benchmarks.scale` on {report['machine'].get('backend', '?')} ({a.section})"
    publish(report, a.out, a.md, a.section, render_markdown(report), heading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
