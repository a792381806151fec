"""``python -m benchmarks.time_to_elbo [--quick]``: how long a user waits for a good ELBO.

Models: the three of :mod:`benchmarks.startup` (eight schools d = 10, hierarchical logistic d = 50, label
switching d = 2) and the breast-cancer logistic regression (d = 30, :func:`benchmarks.targets.make_logreg_breast`).
Methods: ``mixvi`` (``AutoIsotropicMixture`` + ``MixVI`` defaults), ``mixvi-b4`` (``num_samples=4``),
``mixvi-n10`` / ``mixvi-n20`` (``n_components`` fixed at 10 / 20 instead of the default 'auto') and
NumPyro ``SVI`` (``Trace_ELBO()``, optax Adam at ``LEARNING_RATES``) with the ``GUIDES`` at their default
sizes. Each cell runs in ``--repeats`` fresh processes (medians reported); in each, after imports and data:

``setup_s``    building the guide and the engine / ``SVI`` and its ``init``;
``steady_ms``  per step at steady state. mixvi: a second ``run`` with the same arguments (it reuses the
               compiled program) less its warm ``init``; SVI: a jitted ``lax.scan`` of ``svi.update``
               compiled beforehand (``SVI.run`` compiles anew on every call);
``compile_s``  the first ``run`` of ``steps`` steps beyond its steps (less mixvi's warm re-``init``).

The wall clock after t steps is ``setup_s + compile_s + t * steady`` (:func:`wall_at_step`). The running -ELBO
after t steps is the mean of the finite per-step estimates over the trailing window w (what a user watching
the losses sees; mixvi's rejected steps report NaN and are skipped). The final -ELBO is the mean over the last
10 % of the steps, and w is that same 10 % (300 of 3000), so the two means compared carry the same noise (with
w = 100 one estimate of 98.8 among values near 31.7 pushed AutoNormal's running mean out of the band after
step 2600); the window lags the fit by up to w / 2 steps, a fraction of a second here. t* is the first step
from which the running -ELBO *stays* within 0.5 nat of the final value to the end: a first touch rewards noise
and transient dips (the first-touch step is in the JSON too).

time-to-ELBO = ``setup_s + compile_s + t* x steady``. Each method is judged against its own final value,
so the final -ELBO is reported too; all guides fit the same model to the same data, so their -ELBO values
are comparable (lower is better, the gap to -log Z being KL(q || posterior)). "To best" is the same clock
until the running -ELBO stays within 0.5 nat of the lowest final -ELBO of any method for the model (None
when the method's answer is worse than that). mixvi's ``run`` sends scouts during its first half, whose
per-step -ELBO estimates are far above the final value, so its running -ELBO settles only after about
``steps / 2``: its t* grows with the requested ``steps``.

Writes ``docs/benchmarks/time_to_elbo.json`` and the ``time_to_elbo`` section of ``docs/benchmarks.md``.
Entry point: ``main(argv) -> int``.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

from benchmarks.report import (
    fresh_process_cli,
    machine_info,
    measured_line,
    publish,
    repo_path,
    run_child,
    timed,
)

MODELS = ("eight_schools", "hier_logistic_50", "label_switching", "logreg_breast")
DIMS = {"eight_schools": 10, "hier_logistic_50": 50, "label_switching": 2, "logreg_breast": 30}
METHODS = ("mixvi", "mixvi-b4", "mixvi-n10", "mixvi-n20", "autonormal", "automvn", "bnaf", "iaf")
MIXVI_OPTIONS = {"mixvi": {}, "mixvi-b4": {"num_samples": 4}, "mixvi-n10": {}, "mixvi-n20": {}}
GUIDE_OPTIONS = {"mixvi-n10": {"n_components": 10}, "mixvi-n20": {"n_components": 20}}
GUIDES = dict(autonormal="AutoNormal", automvn="AutoMultivariateNormal", bnaf="AutoBNAFNormal", iaf="AutoIAFNormal")
LEARNING_RATES = {"autonormal": 0.01, "automvn": 0.01, "bnaf": 0.01, "iaf": 0.01}
TOLERANCE = 0.5
FINAL_FRACTION = 0.1
CURVE_POINTS = 60
BAD_WINDOW = "window must be a positive integer, got {!r}"
BAD_FRACTION = "fraction must lie in (0, 1], got {!r}"
BAD_RULE = "rule must be 'stays' or 'reaches', got {!r}"
JSON_PATH = "docs/benchmarks/time_to_elbo.json"
HEADING = "## Time to a good ELBO (`python -m benchmarks.time_to_elbo`)"


# --- the pure pieces ------------------------------------------------------------------------------


def running_mean(losses: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of the finite values over the last ``window`` steps.

    Parameters
    ----------
    losses
        Per-step -ELBO estimates, shape (S,); NaN / inf (a rejected step) are skipped.
    window
        Steps in the window (the first ``window - 1`` entries average the steps so far).

    Returns
    -------
    np.ndarray
        Entry t: the mean of the finite ``losses[max(0, t - window + 1) : t + 1]`` (NaN if none).
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(BAD_WINDOW.format(window))
    x = np.asarray(losses, np.float64)
    ok = np.isfinite(x)
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(ok)])
    hi = np.arange(1, x.size + 1)
    lo = np.maximum(hi - window, 0)
    n = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[hi] - sums[lo]) / n, np.nan)


def final_value(losses: np.ndarray, fraction: float = FINAL_FRACTION) -> float:
    """Mean of the finite values among the last ``ceil(fraction * S)`` steps (NaN when there are none)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(BAD_FRACTION.format(fraction))
    x = np.asarray(losses, np.float64)
    tail = x[-window_for(x.size, fraction) :]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else float("nan")


def settle_step(running: np.ndarray, final: float, tolerance: float = TOLERANCE, rule: str = "stays") -> int | None:
    """Steps taken until the running -ELBO is within ``tolerance`` of ``final``.

    Parameters
    ----------
    running, final, tolerance
        The running -ELBO (entry t after t + 1 steps), the value to settle to, the band's half-width.
    rule
        'stays': the first step from which every later entry is in the band; 'reaches': the first entry in
        the band. NaN entries count as outside.

    Returns
    -------
    int or None
        A step count in 1 .. S (entry t gives t + 1), or None when no entry qualifies.
    """
    inside = np.abs(np.asarray(running, np.float64) - final) <= tolerance
    if rule == "reaches":
        hits = np.flatnonzero(inside)
        return int(hits[0]) + 1 if hits.size else None
    if rule != "stays":
        raise ValueError(BAD_RULE.format(rule))
    if inside.size == 0 or not inside[-1]:
        return None
    outside = np.flatnonzero(~inside)
    return int(outside[-1]) + 2 if outside.size else 1


def wall_at_step(setup_s: float, compile_s: float, steady_s: float, steps: int) -> float:
    """Seconds a user has waited after ``steps`` steps: ``setup_s + compile_s + steps * steady_s``."""
    return setup_s + compile_s + steps * steady_s


def window_for(steps: int, fraction: float = FINAL_FRACTION) -> int:
    """The running-mean window: the length of the final stretch, ``ceil(fraction * steps)``."""
    return max(1, int(np.ceil(fraction * steps)))


def summarize(losses: np.ndarray, setup_s: float, compile_s: float, steady_s: float) -> dict:
    """The time-to-ELBO record of one run (module docstring): final -ELBO, t* (stays and reaches), the
    seconds to t*, the spread of the per-step estimates at the end and a thinned running-mean curve."""
    x = np.asarray(losses, np.float64)
    run = running_mean(x, window_for(x.size))
    final = final_value(x)
    stays, reaches = settle_step(run, final), settle_step(run, final, rule="reaches")
    tail, stride = x[-window_for(x.size) :], max(1, x.size // CURVE_POINTS)
    out = {"final_elbo_loss": final, "t_star": stays, "t_reach": reaches}
    for name, step in (("time_to_elbo_s", stays), ("time_to_reach_s", reaches)):
        out[name] = None if step is None else wall_at_step(setup_s, compile_s, steady_s, step)
    out |= {"final_sd": float(np.std(tail[np.isfinite(tail)])), "nonfinite_steps": int(np.sum(~np.isfinite(x)))}
    return out | {"curve_stride": stride, "curve": [round(float(v), 3) for v in run[stride - 1 :: stride]]}


# --- one fresh process ----------------------------------------------------------------------------


def model_and_data(name: str) -> tuple[Any, tuple]:
    """The model function and its arguments (the startup suite's three, and the breast-cancer regression)."""
    if name == "logreg_breast":
        from benchmarks.targets.regression import make_logreg_breast

        target = make_logreg_breast()
        return target.model, target.args
    from benchmarks.startup import model_and_data as startup_model

    return startup_model(name)


def _mixvi_child(model: Any, data: tuple, method: str, steps: int, key: Any) -> dict:
    import mixvi

    t0 = time.perf_counter()
    guide = mixvi.AutoIsotropicMixture(model, **GUIDE_OPTIONS.get(method, {}))
    engine = mixvi.MixVI(model, guide, **MIXVI_OPTIONS[method])
    timed(lambda: engine.init(key, *data))
    setup_s = time.perf_counter() - t0
    result, first_s = timed(lambda: engine.run(key, steps, *data, progress_bar=False))
    warm_init_s = statistics.median(timed(lambda: engine.init(key, *data))[1] for _ in range(3))
    rerun = [timed(lambda: engine.run(key, steps, *data, progress_bar=False).losses)[1] for _ in range(2)]
    steady_s = max(statistics.median(rerun) - warm_init_s, 0.0) / steps
    names = ("method", "step_size", "num_samples", "loss_draws", "shared_noise")
    settings = {"engine": "MixVI", "guide": "AutoIsotropicMixture", "n_components": guide.n_components}
    settings |= {"metric": guide.metric, "weights": guide.weights, "relocate": engine.settings.relocate}
    settings |= {k: getattr(engine, k) for k in names}
    compile_s = first_s - warm_init_s - steps * steady_s
    out = {"setup_s": setup_s, "first_s": first_s, "warm_init_s": warm_init_s, "steady_s": steady_s}
    return out | {"compile_s": compile_s, "losses": result.losses, "settings": settings}


def _svi_child(model: Any, data: tuple, method: str, steps: int, key: Any) -> dict:
    import optax
    from numpyro.infer import SVI, Trace_ELBO, autoguide

    from benchmarks.startup import steady_step

    lr = LEARNING_RATES[method]
    t0 = time.perf_counter()
    guide, loss = getattr(autoguide, GUIDES[method])(model), Trace_ELBO()
    svi = SVI(model, guide, optax.adam(lr), loss)
    state, _ = timed(lambda: svi.init(key, *data))
    setup_s = time.perf_counter() - t0
    result, first_s = timed(lambda: svi.run(key, steps, *data, progress_bar=False, init_state=state))
    steady_s = steady_step(svi.update, state, data, steps)
    settings = {"engine": "SVI", "guide": type(guide).__name__, "optimizer": f"optax.adam({lr})", "lr": lr}
    settings |= {"elbo": type(loss).__name__, "num_particles": loss.num_particles}
    if method in ("bnaf", "iaf"):
        settings["num_flows"] = guide.num_flows
    if method == "bnaf":
        settings["hidden_factors"] = list(guide._hidden_factors)
    if method == "iaf":
        settings["hidden_dims"] = [int(h) for h in guide._hidden_dims or [guide.latent_dim] * 2]
        settings["skip_connections"] = guide._skip_connections
    out = {"setup_s": setup_s, "first_s": first_s, "steady_s": steady_s, "compile_s": first_s - steps * steady_s}
    return out | {"losses": result.losses, "settings": settings}


def child(model_name: str, method: str, steps: int) -> dict:
    """Measure one (model, method) cell in this (fresh) process (module docstring): the timings, the
    method's settings as the run used them, and the per-step losses (NaN as None)."""
    import jax

    model, data = model_and_data(model_name)
    jax.block_until_ready(data)
    fit = (_mixvi_child if method in MIXVI_OPTIONS else _svi_child)(model, data, method, steps, jax.random.PRNGKey(0))
    losses = np.asarray(fit.pop("losses"), np.float64)
    fit["losses"] = [float(v) if np.isfinite(v) else None for v in losses]
    fit["settings"] |= {"steps": steps, "window": window_for(steps), "tolerance": TOLERANCE}
    return fit


def _run_child(model_name: str, method: str, steps: int) -> dict:
    out = run_child("benchmarks.time_to_elbo", model_name, method, steps)
    out["losses"] = np.array([np.nan if v is None else v for v in out["losses"]], np.float64)
    out["steady_ms"] = 1e3 * out["steady_s"]
    out.update(summarize(out["losses"], out["setup_s"], out["compile_s"], out["steady_s"]))
    return out


# --- the suite ------------------------------------------------------------------------------------

FIELDS = "setup_s compile_s steady_ms t_star time_to_elbo_s t_reach time_to_reach_s time_to_best_s process_s".split()


def _median(values: list) -> float | None:
    """Median of the values that are not None (None when all are)."""
    kept = [v for v in values if v is not None]
    return float(statistics.median(kept)) if kept else None


def source_info() -> dict:
    """The commit of the checkout the children ran in and whether its ``mixvi/`` had uncommitted changes
    (None for both outside a git checkout)."""

    def git(*args: str) -> str | None:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=repo_path("."))
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--", "mixvi")
    return {"commit": git("rev-parse", "HEAD"), "mixvi_modified": None if status is None else bool(status)}


def add_ratios(results: list[dict], baseline: str = "autonormal") -> None:
    """Set each row's ``ratio_to_autonormal``: its time-to-ELBO over the baseline's for the same model
    (None where either is missing)."""
    for row in results:
        base = next((r for r in results if r["model"] == row["model"] and r["method"] == baseline), None)
        ok = base is not None and base["time_to_elbo_s"] and row["time_to_elbo_s"] is not None
        row["ratio_to_autonormal"] = row["time_to_elbo_s"] / base["time_to_elbo_s"] if ok else None


def add_time_to_best(rows: list[dict]) -> float:
    """For the rows of one model (each with its ``runs``, losses included): the lowest median final
    -ELBO among them, and every run's seconds until its running -ELBO stays within the tolerance of that
    value (``time_to_best_s``, None when it never does); the losses are dropped afterwards."""
    best = min(r["final_elbo_loss"] for r in rows)
    for run in (run for row in rows for run in row["runs"]):
        losses = run.pop("losses")
        step = settle_step(running_mean(losses, window_for(losses.size)), best)
        wall = None if step is None else wall_at_step(run["setup_s"], run["compile_s"], run["steady_s"], step)
        run |= {"t_best": step, "time_to_best_s": wall}
    return best


def run_benchmark(models: list[str], methods: list[str], steps: int, repeats: int) -> dict:
    """Every (model, method) cell in ``repeats`` fresh processes; medians and every measurement."""
    machine, results, best = machine_info(), [], {}
    for model_name in models:
        rows = []
        for method in methods:
            runs = []
            for _ in range(repeats):
                runs.append(_run_child(model_name, method, steps))
                tte, final = _fmt(runs[-1]["time_to_elbo_s"], "6.2f"), runs[-1]["final_elbo_loss"]
                print(f"  {model_name:17s} {method:10s} to ELBO {tte} s, final {final:.2f}", flush=True)
            rows.append({"model": model_name, "method": method, "settings": runs[0]["settings"], "runs": runs})
            rows[-1]["final_elbo_loss"] = _median([r["final_elbo_loss"] for r in runs])
        best[model_name] = add_time_to_best(rows)
        for row in rows:
            row |= {field: _median([r[field] for r in row["runs"]]) for field in FIELDS}
        results += rows
    add_ratios(results)
    if hasattr(os, "getloadavg"):
        machine["loadavg_end"] = list(os.getloadavg())
    settings = {"steps": steps, "repeats": repeats, "window": window_for(steps), "tolerance_nats": TOLERANCE}
    settings |= {"final_fraction": FINAL_FRACTION, "rule": "stays", "mixvi_options": MIXVI_OPTIONS}
    settings |= {"learning_rates": LEARNING_RATES, "models": {m: DIMS[m] for m in models}}
    out = {"suite": "time_to_elbo", "date": datetime.date.today().isoformat(), "machine": machine}
    out |= {"source": source_info(), "settings": settings, "best_final_elbo_loss": best}
    return out | {"results": results}


def _fmt(value: float | None, spec: str) -> str:
    return "never" if value is None else format(value, spec)


COLUMNS = ("set-up s", "compile s", "steady ms/step", "t* steps", "time-to-ELBO s", "final -ELBO", "ratio", "to best s")


def _cells(r: dict) -> list[str]:
    specs = {"setup_s": ".2f", "compile_s": ".2f", "steady_ms": ".3f", "t_star": ".0f", "time_to_elbo_s": ".2f"}
    specs |= {"final_elbo_loss": ".2f", "ratio_to_autonormal": ".2f", "time_to_best_s": ".2f"}
    return [_fmt(r[k], spec) for k, spec in specs.items()]


def method_label(r: dict) -> str:
    """A row's method, with the N a mixvi row ran with (its settings)."""
    n = (r.get("settings") or {}).get("n_components") if r["method"].startswith("mixvi") else None
    return r["method"] if n is None else f"{r['method']} (N = {n})"


def format_table(report: dict) -> str:
    """The table as text."""
    lines = [f"{'model':17s} {'method':19s} " + " ".join(f"{c:>14s}" for c in COLUMNS)]
    for r in report["results"]:
        lines.append(f"{r['model']:17s} {method_label(r):19s} " + " ".join(f"{c:>14s}" for c in _cells(r)))
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    """The ``time_to_elbo`` section of docs/benchmarks.md."""
    s, n = report["settings"], report["settings"]["repeats"]
    command = "python -m benchmarks.time_to_elbo" + (" --quick" if s["steps"] < 3000 else "")
    detail = f"{n} fresh process{'es' if n > 1 else ''} per cell, medians; {s['steps']} steps"
    src = report.get("source") or {}
    at = f" at commit {src['commit'][:7]}" if src.get("commit") and not src.get("mixvi_modified") else ""
    lrs = ", ".join(f"{k} {v}" for k, v in s["learning_rates"].items())
    out = [
        measured_line(report["machine"]["date"], report["machine"], command, detail) + f"; mixvi{at}.",
        "",
        f"Time-to-ELBO: seconds from the end of the imports until the running -ELBO (trailing mean of the "
        f"per-step estimates over {s['window']} steps) stays within {s['tolerance_nats']} nat of the run's own "
        f"final -ELBO (mean of the last {s['final_fraction']:.0%} of the steps) to the end of the run: set-up + "
        "compile + t* x steady. Set-up: building the guide and `init`; compile: the first run beyond its steps; "
        "steady: per step, from a second, compiled run. mixvi: `AutoIsotropicMixture` + `MixVI` defaults "
        "(`mixvi-b4`: `num_samples=4`; `mixvi-n10` / `mixvi-n20`: `n_components` 10 / 20 instead of 'auto', "
        f"whose choice per model is in the settings of the JSON); SVI: `Trace_ELBO()`, optax Adam (lr: {lrs}), the autoguides' default "
        "sizes. All guides fit the same model to the same data, so final -ELBO values are comparable (lower is "
        "better: closer to -log Z). Ratio: time-to-ELBO over AutoNormal's. To best: the same clock until the "
        "running -ELBO stays within the tolerance of the lowest final -ELBO of any method for that model "
        "(never: the method's own answer is worse than that). Every repeat, with its settings, first-touch "
        "step and a thinned running-mean curve: `docs/benchmarks/time_to_elbo.json`.",
        "",
        "| model (d) | method | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for r in report["results"]:
        out.append(f"| {r['model']} ({s['models'][r['model']]}) | {method_label(r)} | " + " | ".join(_cells(r)) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.time_to_elbo``: measure, print the table, write the JSON (``--out``) and the
    docs section (``--md``; an empty string skips either). Returns 0."""
    args, steps, repeats, models, methods = fresh_process_cli(
        "benchmarks.time_to_elbo",
        __doc__.splitlines()[0],
        MODELS,
        METHODS,
        json_path=JSON_PATH,
        steps=3000,
        quick_steps=600,
        repeats=2,
        argv=argv,
    )
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], steps)))
        return 0
    print(f"benchmarks.time_to_elbo: {steps} steps, {repeats} fresh process(es) per cell")
    report = run_benchmark(models, methods, steps, repeats)
    print("\n" + format_table(report))
    publish(report, args.out, args.md, "time_to_elbo", render_markdown(report), HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
