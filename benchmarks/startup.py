"""``python -m benchmarks.startup [--quick]``: what a fit costs before and around its steps.

For five models (eight schools, non-centred, d = 10; a hierarchical logistic regression with 48 group
intercepts, d = 50, 500 rows; the label-switching model of ``mixvi demo``, d = 2; the paper suite's
Gaussian mixtures with full covariances at d = 10 and d = 100, where mixvi uses N = 20 as there) and three
methods (mixvi: ``AutoIsotropicMixture`` + ``MixVI`` with its defaults; NumPyro ``SVI`` with ``AutoNormal`` and
with ``AutoMultivariateNormal``, optax Adam(0.01), ``Trace_ELBO``), each measured in a fresh Python
process (``--repeats`` processes per cell, medians reported):

``import_s``    the method's imports after JAX's (mixvi: ``import mixvi``, NumPyro with it; SVI: optax
                and NumPyro's ``SVI``, ``Trace_ELBO`` and autoguides), before the model's module;
``setup_s``     ``MixVI.init`` / ``SVI.init`` right after the imports (guide set-up, NumPyro's model
                tracing, the first compilations of the set-up code);
``first_s``     the first ``run`` of ``steps`` steps after that (compilation and the steps);
``steady_ms``   ms per step at steady state: the median of three calls of one jitted ``lax.scan`` of the
                method's ``update`` over ``steps`` steps, compiled beforehand (the same yardstick for
                both libraries; ``SVI.run`` compiles anew on every call; mixvi's with its chunk's XLA
                options for that model);
``compile_s``   ``first_s`` - ``steps`` x ``steady_ms``: what the first run spends besides its steps;
``e2e_s``       ``import_s`` + ``setup_s`` + ``first_s``: a user's wall for one fit of ``steps`` steps
                (JAX's import aside: both methods pay it).

``--methods ...,mixvi-level0`` adds mixvi with its chunk compiled at LLVM optimisation level 0 (the opt-in
of docs/scaling.md; not run by default).

Then, for mixvi, a warm-process table (one process per model, after a first run): the seconds beyond
its steps (wall - steps x steady) of a second ``run`` with the same arguments, a ``run`` with a new
``num_steps``, a new guide and ``MixVI`` for the same model, and ``resume`` of a checkpoint.

Writes ``docs/benchmarks/startup.json`` and the ``startup`` section of ``docs/benchmarks.md``. Entry point:
``main(argv) -> int``.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import statistics
import sys
import tempfile
import warnings
from typing import Any

from benchmarks.report import (
    fresh_process_cli,
    machine_info,
    measured_line,
    publish,
    run_child,
    timed,
)

MODELS = ("eight_schools", "hier_logistic_50", "label_switching", "gmm_d10", "gmm_d100")
DIMS = {"eight_schools": 10, "hier_logistic_50": 50, "label_switching": 2, "gmm_d10": 10, "gmm_d100": 100}
# mixvi's components per model: its default ('auto': 20 or 10 by the model's cost), and N = 20 on the paper
# suite's Gaussian mixtures (as there)
N_COMPONENTS = {"gmm_d10": 20, "gmm_d100": 20}
METHODS = ("mixvi", "autonormal", "automvn", "mixvi-level0")
# mixvi-level0 (not run by default): mixvi with its chunk compiled at LLVM optimisation level 0
# (mixvi.loop.CPU_COMPILER_OPTIONS; docs/scaling.md), the opt-in for short runs on small models
DEFAULT_METHODS = METHODS[:3]
ADAM_LR = 0.01


def components(model_name: str) -> int | str:
    """mixvi's ``n_components`` for a model: the paper suite's 20 on its mixtures, the guide's default
    ('auto') elsewhere."""
    return N_COMPONENTS.get(model_name, "auto")


# --- the models ---------------------------------------------------------------------------------


def eight_schools(sigma, y=None):
    """Eight schools, non-centred: mu, tau and 8 standardised effects (d = 10)."""
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", sigma.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(mu + tau * theta, sigma), obs=y)


def hier_logistic(x, group, y=None):
    """Hierarchical logistic regression: mu, tau and 48 group intercepts (d = 50), one slope-free covariate."""
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("groups", 48):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=mu + tau * a[group] + x), obs=y)


def model_and_data(name: str) -> tuple[Any, tuple]:
    """The model function and its arguments."""
    import jax
    import jax.numpy as jnp

    if name == "eight_schools":
        sigma = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
        y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
        return eight_schools, (sigma, y)
    if name == "hier_logistic_50":
        k = jax.random.split(jax.random.PRNGKey(0), 3)
        group = jax.random.randint(k[0], (500,), 0, 48)
        x = jax.random.normal(k[1], (500,))
        y = (jax.random.uniform(k[2], (500,)) < jax.nn.sigmoid(0.3 + x)).astype(jnp.float32)
        return hier_logistic, (x, group, y)
    if name.startswith("gmm_d"):
        from benchmarks.targets.synthetic import make_gmm

        target = make_gmm(dim=int(name[len("gmm_d") :]), covariance="full")
        return target.model, tuple(target.args)
    from mixvi._demo_model import label_switching_model, make_data

    return label_switching_model, (make_data(),)


# --- one fresh process ----------------------------------------------------------------------------


def child(model_name: str, method: str, steps: int) -> dict:
    """Measure one (model, method) cell in this (fresh) process; see the module docstring."""
    import jax

    # the method's imports first (timed), then the model's module (which may import mixvi itself)
    mixvi_method = method.startswith("mixvi")
    if mixvi_method:
        mixvi, import_s = timed(lambda: importlib.import_module("mixvi"))
        if method == "mixvi-level0":
            mixvi.loop.CPU_COMPILER_OPTIONS = dict(mixvi.loop.LEVEL0_COMPILER_OPTIONS)
    else:

        def imports():
            import optax
            from numpyro.infer import SVI, Trace_ELBO
            from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

            return optax, SVI, Trace_ELBO, AutoMultivariateNormal, AutoNormal

        (optax, SVI, Trace_ELBO, AutoMultivariateNormal, AutoNormal), import_s = timed(imports)
    model, data = model_and_data(model_name)
    key = jax.random.PRNGKey(0)
    if mixvi_method:

        def build():
            return mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=components(model_name)))

        engine = build()
        _, setup_s = timed(lambda: engine.init(key, *data))

        def run(n):
            return engine.run(key, n, *data, progress_bar=False).params

        state, update = engine.init(key, *data), engine.update
        # the XLA options this model's chunk is compiled with (by the target's cost per step)
        options = engine._chunk_options(data, {})
    else:
        guide = (AutoNormal if method == "autonormal" else AutoMultivariateNormal)(model)
        svi = SVI(model, guide, optax.adam(ADAM_LR), Trace_ELBO())
        _, setup_s = timed(lambda: svi.init(key, *data))

        def run(n):
            return svi.run(key, n, *data, progress_bar=False).params

        state, update = svi.init(key, *data), svi.update
        options = None

    _, first_s = timed(lambda: run(steps))
    steady_s = steady_step(update, state, data, steps, options)
    out = {
        "import_s": import_s,
        "setup_s": setup_s,
        "first_s": first_s,
        "steady_ms": 1e3 * steady_s,
        "compile_s": first_s - steps * steady_s,
        "e2e_s": import_s + setup_s + first_s,
    }
    if mixvi_method:
        out["warm"] = warm_table(model, data, build, steps, steady_s)
        out["n_components"] = engine.guide.n_components
    return out


def steady_step(update, state: Any, data: tuple, steps: int, compiler_options: dict | None = None) -> float:
    """Seconds per step of a compiled ``lax.scan`` of ``update(state, *data)`` (median of three calls),
    compiled with ``compiler_options`` (mixvi: its chunk's)."""
    import jax

    loop = jax.jit(
        lambda s, *d: jax.lax.scan(lambda c, _: update(c, *d), s, None, length=steps), compiler_options=compiler_options
    )
    jax.block_until_ready(loop(state, *data))
    return statistics.median(timed(lambda: loop(state, *data))[1] for _ in range(3)) / steps


def warm_table(model: Any, data: tuple, build, steps: int, steady_s: float) -> dict:
    """Seconds beyond the steps of the warm-process cases (module docstring)."""
    import jax

    engine = build()
    key = jax.random.PRNGKey(1)
    engine.run(key, steps, *data, progress_bar=False)
    beyond = {}
    _, wall = timed(lambda: engine.run(key, steps, *data, progress_bar=False).params)
    beyond["second_run"] = wall - steps * steady_s
    other = steps // 2 + 7
    _, wall = timed(lambda: engine.run(key, other, *data, progress_bar=False).params)
    beyond["new_num_steps"] = wall - other * steady_s
    _, wall = timed(lambda: build().run(key, steps, *data, progress_bar=False).params)
    beyond["new_guide_and_engine"] = wall - steps * steady_s
    half = steps // 2
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "run.npz")

        def stop(state, losses, done):
            if done >= half:
                raise KeyboardInterrupt

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            build().run(key, steps, *data, progress_bar=False, checkpoint=path, checkpoint_every=half, callback=stop)
        _, wall = timed(lambda: build().resume(path, *data, progress_bar=False).params)
    beyond["resume"] = wall - (steps - half) * steady_s
    return beyond


# --- the suite ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def run_benchmark(models: list[str], methods: list[str], steps: int, repeats: int) -> dict:
    """Every (model, method) cell in ``repeats`` fresh processes; medians and every measurement."""
    machine = machine_info()
    results = []
    for model_name in models:
        for method in methods:
            runs = []
            for _ in range(repeats):
                runs.append(run_child("benchmarks.startup", model_name, method, steps))
                print(f"  {model_name:18s} {method:11s} e2e {runs[-1]['e2e_s']:6.2f} s", flush=True)
            row = {"model": model_name, "method": method, "runs": runs}
            for field in ("import_s", "setup_s", "first_s", "steady_ms", "compile_s", "e2e_s", "process_s"):
                row[field] = _median([r[field] for r in runs])
            if method.startswith("mixvi"):
                row["warm"] = {k: _median([r["warm"][k] for r in runs]) for k in runs[0]["warm"]}
                row["n_components"] = runs[0].get("n_components")
            results.append(row)
    if hasattr(os, "getloadavg"):
        machine["loadavg_end"] = list(os.getloadavg())
    return {
        "suite": "startup",
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "settings": {
            "steps": steps,
            "repeats": repeats,
            "mixvi": "AutoIsotropicMixture defaults + MixVI defaults",
            "svi": f"optax.adam({ADAM_LR}), Trace_ELBO(num_particles=1)",
            "models": {m: DIMS[m] for m in models},
            "mixvi_components": {m: components(m) for m in models},
        },
        "results": results,
    }


def _warm_label(row: dict) -> str:
    """A warm-table row's model, with the method where it is not plain mixvi."""
    return row["model"] if row["method"] == "mixvi" else f"{row['model']} ({row['method']})"


def format_table(report: dict) -> str:
    """The two tables as text."""
    steps = report["settings"]["steps"]
    lines = [
        f"{'model':18s} {'method':11s} {'imports s':>9s} {'set-up s':>9s} {'compile s':>10s} {'ms/step':>8s} "
        f"{f'e2e {steps} s':>11s}"
    ]
    for r in report["results"]:
        lines.append(
            f"{r['model']:18s} {r['method']:11s} {r['import_s']:9.2f} {r['setup_s']:9.2f} "
            f"{r['compile_s']:10.2f} {r['steady_ms']:8.3f} {r['e2e_s']:11.2f}"
        )
    lines += ["", f"{'mixvi, warm process':30s} {'2nd run':>8s} {'new steps':>10s} {'new guide':>10s} {'resume':>8s}"]
    for r in report["results"]:
        if "warm" in r:
            w = r["warm"]
            lines.append(
                f"{_warm_label(r):30s} {w['second_run']:8.2f} {w['new_num_steps']:10.2f} "
                f"{w['new_guide_and_engine']:10.2f} {w['resume']:8.2f}"
            )
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    """The ``startup`` section of docs/benchmarks.md."""
    s = report["settings"]
    steps = s["steps"]
    head = measured_line(
        report["machine"]["date"],
        report["machine"],
        "python -m benchmarks.startup" + (" --quick" if steps < 2000 else ""),
        f"{s['repeats']} fresh processes per cell, medians",
    )
    out = [
        head + ".",
        "",
        f"Fresh process, {steps} steps. mixvi: `AutoIsotropicMixture` + `MixVI` with their defaults; SVI: "
        f"{s['svi']}. Imports: the method's, after JAX's (`import mixvi`, which imports NumPyro; optax and "
        "NumPyro's SVI and autoguides); set-up: `init` after the imports; compile: the first `run` minus its steps at the "
        "steady rate; e2e: imports + set-up + first run. The first process of a model pays NumPyro's op-by-op set-up "
        "compilations; `mixvi.enable_compilation_cache()` keeps them on disk for the next one "
        "([scaling](scaling.md#start-up-and-compilation)). mixvi's compile time is XLA compiling its step "
        "(N B gradients, the mixture terms, the geometry step; the default `metric='auto'` is dense at these d), "
        "paid once per model structure and process.",
        "",
        f"| model (d) | method | imports s | set-up s | compile s | steady ms/step | e2e s ({steps} steps) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        d = s["models"][r["model"]]
        n = r.get("n_components") or s.get("mixvi_components", {}).get(r["model"], 10)
        label = f"{r['model']} ({d}{f'; mixvi N = {n}' if r['method'].startswith('mixvi') else ''})"
        out.append(
            f"| {label} | {r['method']} | {r['import_s']:.2f} | {r['setup_s']:.2f} | "
            f"{r['compile_s']:.2f} | {r['steady_ms']:.3f} | {r['e2e_s']:.2f} |"
        )
    out += [
        "",
        "mixvi in a warm process (after a first run): seconds beyond the steps (wall - steps x steady); "
        "each reuses the compiled loop (no new compilation), so what is left is the set-up of a new guide, "
        "checkpoint I/O and timing noise (values near 0 can come out negative).",
        "",
        "| model | second run, same args | new num_steps | new guide + MixVI | resume |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        if "warm" in r:
            w = r["warm"]
            out.append(
                f"| {_warm_label(r)} | {w['second_run']:.2f} | {w['new_num_steps']:.2f} | "
                f"{w['new_guide_and_engine']:.2f} | {w['resume']:.2f} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.startup``: measure, print the tables, write the JSON (``--out``) and the docs
    section (``--md``; an empty string skips either). Returns 0."""
    args, steps, repeats, models, methods = fresh_process_cli(
        "benchmarks.startup",
        __doc__.splitlines()[0],
        MODELS,
        METHODS,
        json_path="docs/benchmarks/startup.json",
        steps=2000,
        quick_steps=500,
        repeats=3,
        argv=argv,
        default_methods=DEFAULT_METHODS,
    )
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], steps)))
        return 0
    print(f"benchmarks.startup: {steps} steps, {repeats} fresh process(es) per cell")
    report = run_benchmark(models, methods, steps, repeats)
    print()
    print(format_table(report))
    heading = "## Start-up: set-up, compilation, steady state (`python -m benchmarks.startup`)"
    publish(report, args.out, args.md, "startup", render_markdown(report), heading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
