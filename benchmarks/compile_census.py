"""``python -m benchmarks.compile_census [--quick]``: what in MixVI's step costs compilation time.

``MixVI.run`` compiles one chunk of its training loop (:mod:`mixvi.loop`); on a small model that
compilation is most of what a first fit waits for (``benchmarks.startup``). This suite compiles the chunk
of one model under variants that each leave out a part of the default step, in fresh processes, and
reports for each

``compile_s``   XLA's compilation of the chunk (JAX's ``backend_compile_duration`` event for
                ``jit(chunk)``; median over ``--repeats`` processes);
``kernels``     the kernels of the optimised program: XLA fusions in its HLO (from one more process
                with ``--xla_dump_to``), each of which XLA's CPU backend emits and compiles on its own;
``instructions`` the HLO instructions of the optimised program.

The kernel count is exact and does not move with the machine's load, which on a shared 2-core VM moves
the seconds by 20 % between runs; a least-squares line of seconds on kernels over the variants says what
one kernel costs, so a change to the step can be judged by the kernels it adds or removes. Every variant
runs ``MixVI(..., refine=False)`` (the refinement is a program of its own) for ``--steps`` steps.

Variants: the default; ``tilt=0``; a fixed step (0.02); ``metric='isotropic'``; the masses of mass
balancing from the components' own draws alone (``own_draws``: ``Settings.mass_widen=1``); no mass balancing and/or
no scouts (``mixvi.vi.Settings.balance`` / ``explore``, not options of ``MixVI``); ``relocate=False``;
the paper's method (isotropic metric, fixed step, no relocation).

Writes ``docs/benchmarks/compile_census.json`` and the ``compile-census`` section of
``docs/benchmarks.md``. Entry point: ``main(argv) -> int``.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import re
import statistics
import sys
import tempfile
from typing import Any

import numpy as np

from benchmarks.report import fresh_process_cli, machine_info, measured_line, publish, run_child

MODELS = ("eight_schools", "hier_logistic_50", "label_switching", "gmm_d10", "gmm_d100")
FIXED_STEP = 0.02
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "tilt=0": {"engine": {"tilt": 0.0}},
    "fixed_step": {"engine": {"step_size": FIXED_STEP}},
    "isotropic": {"guide": {"metric": "isotropic"}},
    "no_balance": {"settings": {"balance": False}},
    "own_draws": {"settings": {"mass_widen": 1.0}},
    "no_scouts": {"settings": {"explore": False}},
    "no_balance_no_scouts": {"settings": {"balance": False, "explore": False}},
    "relocate=False": {"engine": {"relocate": False}},
    "paper": {"guide": {"metric": "isotropic"}, "engine": {"relocate": False, "step_size": FIXED_STEP}},
}
DUMP_ENV = "MIXVI_CENSUS_DUMP"
"""Set (to a folder) in the one process per variant whose optimised HLO is dumped there and counted."""


def child(model_name: str, variant: str, steps: int) -> dict:
    """Compile and run one variant in this (fresh) process; see the module docstring."""
    import jax
    from jax import monitoring

    import mixvi
    from benchmarks.startup import components, model_and_data

    compiles: list[tuple[str, float]] = []

    def listen(event: str, secs: float, **kwargs: Any) -> None:
        if event.endswith("backend_compile_duration"):
            compiles.append((str(kwargs.get("fun_name", "")), secs))

    monitoring.register_event_duration_secs_listener(listen)
    spec = VARIANTS[variant]
    model, data = model_and_data(model_name)
    guide = mixvi.AutoIsotropicMixture(model, n_components=components(model_name), **spec.get("guide", {}))
    engine = mixvi.MixVI(model, guide, refine=False, **spec.get("engine", {}))
    if spec.get("settings"):
        engine.settings = engine.settings._replace(**spec["settings"])
    engine.run(jax.random.PRNGKey(0), steps, *data, progress_bar=False)
    chunk = [secs for name, secs in compiles if "chunk" in name]
    out: dict[str, Any] = {"compile_s": chunk[-1] if chunk else float("nan")}
    folder = os.environ.get(DUMP_ENV)
    if folder:
        out.update(count_kernels(folder))
    return out


def count_kernels(folder: str) -> dict[str, int]:
    """Fusions and instructions of the optimised chunk dumped in ``folder`` (XLA's text dump)."""
    paths = glob.glob(os.path.join(folder, "*jit_chunk*after_optimizations.txt"))
    if not paths:
        raise RuntimeError(f"no optimised HLO of jit(chunk) dumped under {folder}")
    with open(max(paths, key=os.path.getsize)) as fh:
        text = fh.read()
    return {
        "kernels": len(re.findall(r" fusion\(", text)),
        "instructions": len(re.findall(r"^\s+(?:ROOT )?%\S+ = ", text, flags=re.M)),
    }


def run_benchmark(models: list[str], variants: list[str], steps: int, repeats: int) -> dict:
    """Every (model, variant) cell: ``repeats`` timed processes and one that dumps the program."""
    machine = machine_info()
    rows = []
    for model_name in models:
        for variant in variants:
            times = [run_child("benchmarks.compile_census", model_name, variant, steps)["compile_s"] for _ in range(repeats)]
            with tempfile.TemporaryDirectory() as folder:
                flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={folder} --xla_dump_hlo_as_text".strip()
                counted = run_child(
                    "benchmarks.compile_census", model_name, variant, steps, env={DUMP_ENV: folder, "XLA_FLAGS": flags}
                )
            row = {"model": model_name, "variant": variant, "settings": VARIANTS[variant], "compile_runs": times}
            row["compile_s"] = float(statistics.median(times))
            row["kernels"], row["instructions"] = counted["kernels"], counted["instructions"]
            rows.append(row)
            print(
                f"  {model_name:16s} {variant:22s} compile {row['compile_s']:5.2f} s  kernels {row['kernels']:4d}  "
                f"instructions {row['instructions']:6d}",
                flush=True,
            )
    if hasattr(os, "getloadavg"):
        machine["loadavg_end"] = list(os.getloadavg())
    return {
        "suite": "compile_census",
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "settings": {"steps": steps, "repeats": repeats, "fixed_step": FIXED_STEP, "refine": False},
        "fits": {m: kernel_cost([r for r in rows if r["model"] == m]) for m in models},
        "results": rows,
    }


def kernel_cost(rows: list[dict]) -> dict[str, float] | None:
    """Least-squares line compile_s = base + per_kernel x kernels over a model's variants (None with
    fewer than three)."""
    if len(rows) < 3:
        return None
    k = np.array([r["kernels"] for r in rows], float)
    s = np.array([r["compile_s"] for r in rows], float)
    per_kernel, base = np.polyfit(k, s, 1)
    resid = s - (base + per_kernel * k)
    return {"base_s": float(base), "per_kernel_ms": 1e3 * float(per_kernel), "rms_residual_s": float(np.sqrt(np.mean(resid**2)))}


def format_table(report: dict) -> str:
    lines = [f"{'model':16s} {'variant':22s} {'compile s':>9s} {'kernels':>8s} {'instructions':>12s}"]
    for r in report["results"]:
        lines.append(
            f"{r['model']:16s} {r['variant']:22s} {r['compile_s']:9.2f} {r['kernels']:8d} {r['instructions']:12d}"
        )
    for model, fit in report["fits"].items():
        if fit:
            lines.append(
                f"{model}: compile ~ {fit['base_s']:.2f} s + {fit['per_kernel_ms']:.1f} ms x kernels "
                f"(rms residual {fit['rms_residual_s']:.2f} s)"
            )
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    s = report["settings"]
    out = [
        measured_line(
            report["machine"]["date"],
            report["machine"],
            "python -m benchmarks.compile_census" + (" --quick" if s["steps"] < 200 else ""),
            f"{s['repeats']} timed fresh process(es) per cell, medians",
        )
        + ".",
        "",
        f"The chunk `MixVI.run` compiles, first run of {s['steps']} steps with `refine=False`, each variant in "
        f"{s['repeats']} fresh process(es) (median compile seconds) and one more that dumps the optimised "
        "program (kernels: XLA fusions, each emitted and compiled on its own; instructions: HLO "
        f"instructions). Fixed step: {s['fixed_step']}; no balancing / no scouts: `mixvi.vi.Settings` "
        "fields, not `MixVI` options.",
        "",
        "| model | variant | compile s | kernels | instructions |",
        "|---|---|---:|---:|---:|",
    ]
    for r in report["results"]:
        out.append(f"| {r['model']} | {r['variant']} | {r['compile_s']:.2f} | {r['kernels']} | {r['instructions']} |")
    out.append("")
    for model, fit in report["fits"].items():
        if fit:
            out.append(
                f"- {model}: compile s ~ {fit['base_s']:.2f} + {fit['per_kernel_ms']:.1f} ms x kernels "
                f"(least squares over the variants; rms residual {fit['rms_residual_s']:.2f} s)"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.compile_census``: measure, print the table, write the JSON (``--out``) and the
    docs section (``--md``; an empty string skips either). Returns 0."""
    args, steps, repeats, models, variants = fresh_process_cli(
        "benchmarks.compile_census",
        __doc__.splitlines()[0],
        MODELS,
        tuple(VARIANTS),
        json_path="docs/benchmarks/compile_census.json",
        steps=200,
        quick_steps=50,
        repeats=3,
        argv=argv,
        default_models=("eight_schools",),  # the model the start-up goal is about
    )
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], steps)))
        return 0
    print(f"benchmarks.compile_census: {steps} steps, {repeats} timed process(es) per cell")
    report = run_benchmark(models, variants, steps, repeats)
    print()
    print(format_table(report))
    heading = "## Compilation census: what the step's parts cost to compile (`python -m benchmarks.compile_census`)"
    publish(report, args.out, args.md, "compile-census", render_markdown(report), heading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
