"""Output of the posterior-quality suite (``benchmarks.quality``): the per-target tables, a paragraph per
target generated from the numbers, the ``quality`` section of docs/benchmarks.md (or another named by
``--section``; ``fit-check`` is the table of ``mixvi.fit_check``'s verdicts against the fits' quality),
the JSON report and the summary figure. ``python -m benchmarks.quality_report [JSON] [--section S]``
re-renders a section and the figure from a saved report without fitting anything."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.report import display_path, measured_line, publish, replace_section, repo_path
from benchmarks.targets import posteriordb

DEFAULT_JSON = "docs/benchmarks/quality.json"

LABELS = {
    "kl": "KL(q‖p)",
    "log_sd_ratio_median": "med abs log sd ratio",
    "log_sd_ratio_max": "max abs log sd ratio",
    "mean_err_max": "max mean err (sds)",
    "mean_err_median": "median mean err (sds)",
    "modes_found": "modes found (of 4)",
    "mass_error": "max mode-mass err",
    "test_lpd": "test lpd/row",
    "test_lpd_vs_ref": "lpd - NUTS",
    "sigma_min_over_median": "min/median sigma",
}
COLUMNS = {
    "rotated_gaussian_d100": ("kl", "log_sd_ratio_median", "mean_err_max"),
    "mixture20d_4modes": ("modes_found", "mass_error", "kl"),
    "logistic_breast_cancer": ("test_lpd", "test_lpd_vs_ref", "mean_err_max", "log_sd_ratio_median"),
    "sharp_linear_regression": ("mean_err_max", "log_sd_ratio_max", "sigma_min_over_median"),
    "banana": ("kl", "mean_err_max", "log_sd_ratio_median"),
    "factor_gaussian_d300": ("kl", "log_sd_ratio_median", "mean_err_max"),
    "horseshoe_regression": ("mean_err_max", "mean_err_median", "log_sd_ratio_median", "log_sd_ratio_max"),
    "baseball_logit": ("mean_err_max", "mean_err_median", "log_sd_ratio_median", "log_sd_ratio_max"),
    **dict.fromkeys(posteriordb.NAMES, ("mean_err_max", "mean_err_median", "log_sd_ratio_median", "log_sd_ratio_max")),
}
NOTES = {
    "rotated_gaussian_d100": "A dense covariance (AutoMultivariateNormal, mixvi's metric='dense') can represent "
    "this target exactly; isotropic and diagonal families, and mixtures of few of them, cannot match a rotated "
    "covariance whose sds span two decades.",
    "mixture20d_4modes": "Single-Gaussian guides can cover at most one mode; the mode masses are read from "
    "the basins (nearest mode in its own Mahalanobis distance). Every guide starts from init_to_uniform "
    "(means in [-2, 2]^d) and the modes lie 12 from the origin, so a mode is found only when some "
    "component is drawn into its basin.",
    "logistic_breast_cancer": "The reference is NUTS; the NUTS row is an independent NUTS run (another seed) "
    "scored against it, so errors at its level are reference noise.",
    "sharp_linear_regression": "The posterior is Gaussian and exact, with sds near 0.002 (Adam's step, 1e-2, "
    "is about five posterior sds); a collapsed mixture component would show as min/median sigma far below 1.",
    "banana": "No Gaussian family is exact here; a mixture or a flow can bend along the curve.",
    "factor_gaussian_d300": "A diagonal plus five stretched directions: mixvi's metric='lowrank' (rank 10) and "
    "AutoLowRankMultivariateNormal can represent it exactly, and so can a dense covariance; a diagonal one cannot.",
    "horseshoe_regression": "Compared on the unconstrained latent (log tau, log sigma, log lambda, z) against "
    "NUTS's draws mapped there; the NUTS row is an independent run scored against the reference. The posterior "
    "is funnel-like (the null coefficients' spread depends on tau), which Gaussian families under-cover.",
    "baseball_logit": "Compared on the unconstrained latent (mu, log sigma, theta) against NUTS's draws mapped "
    "there; centred, so log sigma and the theta_j form a funnel at small sigma.",
    **dict.fromkeys(
        posteriordb.NAMES,
        "posteriordb's reference posterior (Stan, 10 chains of 1000 draws) mapped to the unconstrained latent "
        "the guides fit; the NUTS row is NumPyro's NUTS scored against it.",
    ),
}


def fmt(v: Any) -> str:
    """A number for a table: integers as such, tiny or huge values in scientific notation, else 3 digits."""
    if v is None:
        return "–"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e4):
        return str(int(v))
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3g}"


def _med(m: dict, key: str) -> float | None:
    s = m["summary"].get(key)
    return None if s is None else s["median"]


def _spread(m: dict, key: str) -> str:
    s = m["summary"].get(key)
    if s is None or s["n"] < 2:
        return "–"
    return f"{fmt(s['min'])}–{fmt(s['max'])}"


def _first_wall(m: dict) -> float | None:
    """The first seed's wall time: the only fit of a method that compiled its programs (later seeds of a
    method reuse them within the suite's process)."""
    return next((r["wall_s"] for r in m["seeds"] if r["status"] == "ok"), None)


def format_table(name: str, t: dict[str, Any]) -> str:
    """The markdown table of one target: method, wall s, ms/step, its metrics (seed medians) and the
    seed-to-seed range of the main metric."""
    cols = COLUMNS[name]
    head = [
        "method",
        "wall s, first seed (incl. compile)",
        "ms/step",
        *[LABELS[c] for c in cols],
        f"{LABELS[t['main']]}: seed range",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in t["methods"]:
        if m["status"] != "ok":
            reason = next((r.get("reason", "") for r in m["seeds"]), "")
            cells = [m["method"], m["status"], *[""] * (len(head) - 2)]
            cells[2] = reason[:60].replace("|", "/")
        else:
            ms = m["ms_per_step"]
            ms_txt = "–" if ms is None else fmt(ms) + (" (per draw)" if m["method"] == "NUTS" else "")
            cells = [m["method"], fmt(_first_wall(m)), ms_txt, *[fmt(_med(m, c)) for c in cols], _spread(m, t["main"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paragraph(name: str, t: dict[str, Any]) -> str:
    """What the numbers of one target show, generated from them (best row, mixvi's rank, wall times)."""
    main, label = t["main"], LABELS[t["main"]]
    ok = [m for m in t["methods"] if m["status"] == "ok" and _med(m, main) is not None]
    if not ok:
        return NOTES[name]
    ranked = sorted(ok, key=lambda m: _med(m, main))
    best = ranked[0]
    out = [NOTES[name], f"Best {label}: {best['method']} ({fmt(_med(best, main))})."]
    mix = [m for m in ranked if m["method"].startswith("mixvi")]
    for m in mix:
        out.append(f"{m['method']}: {fmt(_med(m, main))} (rank {ranked.index(m) + 1} of {len(ranked)}).")
    if mix and not best["method"].startswith("mixvi"):
        ahead = [m["method"] for m in ranked[: ranked.index(mix[0])]]
        out.append(f"mixvi loses here to {', '.join(ahead)}.")
    if name == "mixture20d_4modes":
        out.append("Modes found: " + ", ".join(f"{m['method']} {fmt(_med(m, 'modes_found'))}" for m in ok) + ".")
        first = [(m["method"], next(r for r in m["seeds"] if r["status"] == "ok")["metrics"]["masses"]) for m in mix]
        out.append(
            "Basin masses of the first seed (true 0.4 / 0.3 / 0.2 / 0.1): "
            + "; ".join(f"{n} {' / '.join(f'{v:.2f}' for v in ms)}" for n, ms in first)
            + "."
        )
        single = [m for m in ok if not m["method"].startswith("mixvi") and m["method"] != "NUTS"]
        if single and all(_med(m, "modes_found") == 1 for m in single):
            out.append("Every autoguide puts its mass on one mode.")
    if name == "sharp_linear_regression":
        for m in mix:
            out.append(f"{m['method']} min/median sigma: {fmt(_med(m, 'sigma_min_over_median'))}.")
    if name == "logistic_breast_cancer":
        near = [
            m["method"]
            for m in ok
            if _med(m, "test_lpd_vs_ref") is not None and abs(_med(m, "test_lpd_vs_ref")) < 0.005
        ]
        out.append(f"Test lpd within 0.005 nats/row of NUTS: {', '.join(near) or 'none'}.")
    fits = [m for m in ok if m["method"] != "NUTS"]
    if fits and mix:
        fastest = min(fits, key=_first_wall)
        out.append(
            f"Wall time (first seed): {mix[0]['method']} {fmt(_first_wall(mix[0]))} s, fastest fit "
            f"{fastest['method']} {fmt(_first_wall(fastest))} s."
        )
    return " ".join(out)


def _mixvi_defaults(report: dict[str, Any]) -> str:
    for t in report["targets"].values():
        for m in t["methods"]:
            if m["method"].startswith("mixvi") and m["settings"]:
                st = m["settings"]
                return (
                    f" (method {st['method']}, step_size {st['step_size']!r}, B = {st['num_samples']} draws per "
                    f"component per step, initial sigma {st['init_scale']})"
                )
    return ""


def components_text(t: dict[str, Any]) -> str:
    """The target's N as asked (``info``) and, for the guide's default 'auto', as its mixvi rows settled it."""
    asked = t["info"]["n_components"]
    if asked != "auto":
        return str(asked)
    settled = sorted(
        {
            m["settings"]["n_components"]
            for m in t["methods"]
            if m["method"].startswith("mixvi")
            and "@" not in m["method"]
            and isinstance(m.get("settings"), dict)
            and "n_components" in m["settings"]
        }
    )
    return f"'auto' ({'/'.join(str(n) for n in settled)} on this model)" if settled else "'auto'"


def render_markdown(report: dict[str, Any], command: str) -> str:
    """The ``quality`` section: how it was measured, then per target its description, table and paragraph."""
    s = report["settings"]
    lines = [
        measured_line(
            report["date"],
            report["machine"],
            command,
            f"{s['steps']} steps, {s['seeds']} seed(s), {s['draws']} draws of q per metric, "
            f"total {report.get('total_wall_s', 0):.0f} s",
        )
        + ".",
        "",
        "mixvi rows: `AutoIsotropicMixture(model, n_components=N, metric=M)` trained by `MixVI(model, guide).run` "
        f"with its defaults{_mixvi_defaults(report)}; the autoguides: NumPyro SVI, Adam(1e-2), Trace_ELBO (1 particle), same steps. "
        "Wall time runs from building the guide to having its params, for the first seed (compilation "
        "included: later seeds of a method reuse its compiled programs in the suite's process; the first "
        "method on a target also pays NumPyro's set-up compilations for the model, and the start-up section "
        "below measures every method in fresh processes); ms/step is "
        f"one execution of an ahead-of-time compiled scan of {s['timing_steps']} update steps (first seed; for NUTS, "
        "wall / iterations, compilation included). Cells are medians over seeds; the last column is the "
        "seed-to-seed range of the main metric. Full settings and per-seed numbers: "
        f"`{report.get('json_path', 'docs/benchmarks/quality.json')}`"
        + (f"; figure: `{fig}`" if (fig := report.get("figure_path", "docs/figures/quality_summary.png")) else "")
        + ". The machine is shared "
        "with other processes (load averages above): single wall times and ms/step can move by 2x and more "
        "between seeds and methods; the quality metrics do not depend on load.",
    ]
    for name, t in report["targets"].items():
        ref = t["reference"]
        ref_txt = (
            "exact"
            if ref["kind"] == "exact"
            else ref["source"]
            if ref["kind"] == "draws"
            else (
                f"NUTS, {ref['settings']['num_chains']} chains x ({ref['settings']['num_warmup']} warm-up + "
                f"{ref['settings']['num_samples']} draws), {ref['wall_s']:.0f} s, max R-hat "
                f"{ref['diagnostics']['max_rhat']:.3f}, min ESS {ref['diagnostics']['min_ess']:.0f}, "
                f"{ref['diagnostics']['divergences']} divergences"
            )
        )
        counts = "" if not any("@" in m["method"] for m in t["methods"]) else " (a row `mixvi-M@K`: K components)"
        lines += [
            "",
            f"### {name}",
            "",
            f"{t['info']['description']}; d = {t['dim']}, mixvi N = "
            f"{components_text(t)}{counts}; reference: {ref_txt}.",
            "",
            format_table(name, t),
            "",
            paragraph(name, t),
        ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    """One panel per target: the main metric's seed median per method (bar) with its seed range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["targets"])
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        t = report["targets"][name]
        ok = [m for m in t["methods"] if m["status"] == "ok" and _med(m, t["main"]) is not None]
        vals = [_med(m, t["main"]) for m in ok]
        lo = [_med(m, t["main"]) - m["summary"][t["main"]]["min"] for m in ok]
        hi = [m["summary"][t["main"]]["max"] - _med(m, t["main"]) for m in ok]
        colors = [
            "tab:red" if m["method"].startswith("mixvi") else "tab:gray" if m["method"] == "NUTS" else "tab:blue"
            for m in ok
        ]
        ax.bar(range(len(ok)), vals, yerr=[lo, hi], color=colors, capsize=3)
        ax.set_xticks(
            range(len(ok)), [m["method"].replace("Auto", "") for m in ok], rotation=45, ha="right", fontsize=8
        )
        pos = [v for v in vals if v > 0]
        if pos and max(pos) / min(pos) > 20:
            ax.set_yscale("log")
        ax.set_title(f"{name}\n{LABELS[t['main']]} (lower is better)", fontsize=9)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


HEADING = "## Posterior quality against NumPyro's autoguides and NUTS (`python -m benchmarks.quality`)"
FIT_CHECK = "fit-check"
"""The section that :func:`render_fit_check` fills (the others get :func:`render_markdown`)."""
FIT_CHECK_HEADING = "## Fit verdicts calibrated (`{}`)"
FIT_CHECK_KEY = 1
"""``fit_check``'s key on seed i: ``fold_in(PRNGKey(i), FIT_CHECK_KEY)`` (the fit's own key is ``PRNGKey(i)``)."""


def fit_check_settings() -> dict[str, Any]:
    """The verdict's thresholds and ``run``'s check as this mixvi defines them (stored with a report, so
    a re-render states the thresholds its verdicts were given under)."""
    import inspect

    import mixvi
    from mixvi import engine, vi
    from mixvi.diagnostics import fit

    return {
        "good": dict(fit.GOOD),
        "usable": dict(fit.USABLE),
        "flat_ess": fit.FLAT_ESS,
        "num_samples": inspect.signature(mixvi.fit_check).parameters["num_samples"].default,
        "run_warns_above": engine.POOR_KHAT,
        "run_steps": engine.FIT_CHECK_STEPS,
        "run_stein_warns_above": getattr(engine, "POOR_STEIN", None),
        "run_stein_steps": getattr(vi, "STEIN_STEPS", None),
        "run_stein_pooled_max_dim": getattr(vi, "POOLED_STEIN_MAX_DIM", None),
        "refine_khat": list(getattr(fit, "REFINE_KHAT", ())),
        "refine_factor": getattr(fit, "REFINE_FACTOR", None),
    }


def _refine_text(fc: dict[str, Any]) -> str:
    """How many more draws a borderline k-hat gets (nothing for reports from before that rule)."""
    band, factor = fc.get("refine_khat"), fc.get("refine_factor")
    if not band or not factor:
        return ""
    return f" ({1 + factor} times as many when their k-hat lies in [{band[0]}, {band[1]}]: the draws column)"


def _seed_values(m: dict, key: str) -> list[Any]:
    return [r["metrics"].get(key) for r in m["seeds"] if r["status"] == "ok"]


def fit_check_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (target, mixvi row) with a fit: its main metric, max abs log sd ratio, ``fit_check``'s
    k-hat, M, D, relative ESS (seed medians) and verdicts, and ``run``'s k-hat (median) and warnings (per seed)."""
    rows = []
    for name, t in report["targets"].items():
        for m in t["methods"]:
            if not m["method"].startswith("mixvi") or m["status"] != "ok":
                continue
            rows.append(
                {
                    "target": name,
                    "method": m["method"],
                    "main": t["main"],
                    "main_value": _med(m, t["main"]),
                    "log_sd_ratio_max": _med(m, "log_sd_ratio_max"),
                    "khat": _med(m, "fit_check_khat"),
                    "stein_divergence": _med(m, "fit_check_stein_divergence"),
                    "score_divergence": _med(m, "fit_check_score_divergence"),
                    "relative_ess": _med(m, "fit_check_relative_ess"),
                    "run_khat": _med(m, "run_khat"),
                    "run_stein": _med(m, "run_stein"),
                    "run_warned": _seed_values(m, "run_warned"),
                    "verdicts": _seed_values(m, "fit_check_verdict"),
                    "draws": _seed_values(m, "fit_check_num_samples"),
                }
            )
    return rows


def _per_seed(values: list[Any], show: Any) -> str:
    return " / ".join("–" if v is None else show(v) for v in values) or "–"


def _run_stein_text(fc: dict[str, Any]) -> str:
    """The sentence on ``run``'s Stein check, for reports that stored its settings (older ones did not)."""
    if fc.get("run_stein_warns_above") is None:
        return ""
    pooled = fc.get("run_stein_pooled_max_dim")
    how = (
        f"over the pairs of all their draws up to d = {pooled}, the mean of their per-step estimates beyond"
        if pooled
        else "the mean of their per-step estimates"
    )
    return (
        f"; `run` M is the Stein moment divergence of the draws of the run's last {fc['run_stein_steps']} steps "
        f"({how}), on which it also warns when it exceeds {fc['run_stein_warns_above']}"
    )


def render_fit_check(report: dict[str, Any], command: str) -> str:
    """The ``fit-check`` section: how it was measured, the verdict's thresholds (as stored with the report)
    and one table, a row per (target, mixvi row), of the fit's quality against ``fit_check``'s numbers."""
    s = report["settings"]
    fc = report.get("fit_check") or fit_check_settings()
    good, usable = fc["good"], fc["usable"]
    lines = [
        measured_line(
            report["date"],
            report["machine"],
            command,
            f"{s['steps']} steps, {s['seeds']} seed(s), {s['draws']} draws of q per quality metric, "
            f"total {report.get('total_wall_s', 0):.0f} s",
        )
        + ".",
        "",
        "Each mixvi row of the quality suite (`AutoIsotropicMixture(model, n_components=N, metric=M)` trained by "
        f"`MixVI(model, guide).run` with its defaults{_mixvi_defaults(report)}) is scored twice: by its main "
        "quality metric against the exact answer or the reference (as in the quality sections), and by "
        f"`mixvi.fit_check(guide, params, *model_args, rng_key=fold_in(PRNGKey(seed), {FIT_CHECK_KEY}))` on "
        f"{fc['num_samples']} draws of q{_refine_text(fc)}: the k-hat of p/q, the Stein moment divergence M, the "
        "relative score divergence D (reported, not in the verdict) and the verdict. "
        f"**good**: k-hat ≤ {good['khat']} and M ≤ {good['stein_divergence']}; **usable** (with importance "
        f"correction): k-hat ≤ {usable['khat']} and M ≤ {usable['stein_divergence']}; else **poor**; k-hat does "
        f"not count when the smoothed weights' ESS / S is at least {fc['flat_ess']} (nearly flat weights). "
        f"`run` k-hat is the k-hat of the importance weights of the run's last {fc['run_steps']} steps' draws, "
        f"which `run` computes anyway; it warns, naming `fit_check`, when that exceeds {fc['run_warns_above']} "
        "(– where the run had no usable weights, or nearly flat ones)"
        + _run_stein_text(fc)
        + ". Cells are seed medians; verdicts and "
        "warnings are listed per seed. Full numbers: "
        f"`{report.get('json_path') or 'the JSON report'}`. Whether a fit is good is read from its main "
        "metric; docs/diagnostics.md sets the verdicts against that reading.",
        "",
        "| target | mixvi row | main metric | value | max abs log sd ratio | k-hat | M | D | ESS / S | draws "
        "| `run` k-hat | `run` M | `run` warned | verdict |",
        "|" + "---|" * 14,
    ]
    for r in fit_check_rows(report):
        cells = [
            r["target"],
            r["method"],
            LABELS[r["main"]],
            fmt(r["main_value"]),
            fmt(r["log_sd_ratio_max"]),
            fmt(r["khat"]),
            fmt(r["stein_divergence"]),
            fmt(r["score_divergence"]),
            fmt(r["relative_ess"]),
            _per_seed(r.get("draws") or [], str),
            fmt(r["run_khat"]),
            fmt(r.get("run_stein")),
            _per_seed(r["run_warned"], lambda w: "yes" if w else "no"),
            _per_seed(r["verdicts"], str),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    verdicts = [v for r in fit_check_rows(report) for v in r["verdicts"]]
    warned = sum(bool(w) for r in fit_check_rows(report) for w in r["run_warned"])
    counts = ", ".join(f"{v} {verdicts.count(v)}" for v in ("good", "usable", "poor", "failed") if v in verdicts)
    lines += ["", f"Verdicts over {len(verdicts)} fits: {counts or 'none'}; `run` warned on {warned}."]
    return "\n".join(lines)


def section_markdown(report: dict[str, Any], section: str, command: str) -> str:
    """The markdown of ``section`` from a report: :func:`render_fit_check` for the fit-check section,
    :func:`render_markdown` for every other."""
    return render_fit_check(report, command) if section == FIT_CHECK else render_markdown(report, command)


def section_heading(section: str, command: str) -> str:
    """The heading a new section gets on the page."""
    if section == FIT_CHECK:
        return FIT_CHECK_HEADING.format(command)
    return HEADING if section == "quality" else f"### {section} (`{command}`)"


def write_outputs(report: dict[str, Any], a: argparse.Namespace) -> None:
    """JSON to ``a.out``, the figure to ``a.figure``, the section to ``a.md`` (each skipped when '')."""
    argv = ["--quick"] if a.quick else []
    argv += [
        "--targets",
        ",".join(a.targets),
        "--metrics",
        ",".join(a.metrics),
        "--steps",
        str(a.steps),
        "--seeds",
        str(a.seeds),
    ] + (["--nuts-all"] if a.nuts_all else [])
    if getattr(a, "methods", None):
        argv += ["--methods", ",".join(a.methods)]
    section = getattr(a, "section", "quality")
    if section != "quality":
        argv += ["--section", section]
    command = "python -m benchmarks.quality " + " ".join(argv)
    report["command"] = command
    report["json_path"] = display_path(a.out) if a.out else None
    report["figure_path"] = display_path(a.figure) if a.figure else None
    if a.figure:
        Path(a.figure).parent.mkdir(parents=True, exist_ok=True)
        plot(report, a.figure)
        print(f"wrote {display_path(a.figure)}")
    outputs = [f"--out {report['json_path']}"] if a.out and a.out != repo_path(DEFAULT_JSON) else []
    outputs += [] if a.figure else ["--figure ''"]
    heading = section_heading(section, " ".join([command, *outputs]))
    publish(report, a.out, a.md, section, section_markdown(report, section, command), heading)


def main(argv: list[str] | None = None) -> int:
    """Re-render a section and its figure from a saved JSON report (no fitting)."""
    p = argparse.ArgumentParser(description="re-render a quality section and its figure from its JSON report")
    p.add_argument("json", nargs="?", default=repo_path(DEFAULT_JSON))
    p.add_argument("--md", default=repo_path("docs/benchmarks.md"))
    p.add_argument(
        "--figure",
        default=None,
        help="figure path (default: the one the report was written with, none if it had none; '' for none)",
    )
    p.add_argument(
        "--section", default="quality", help="the --md section the report fills (fit-check: the verdicts' table)"
    )
    a = p.parse_args(argv)
    report = json.loads(Path(a.json).read_text())
    figure = a.figure if a.figure is not None else report.get("figure_path", "docs/figures/quality_summary.png")
    if figure:
        plot(report, repo_path(figure) if not Path(figure).is_absolute() else figure)
    if a.md:
        markdown = section_markdown(report, a.section, report["command"])
        replace_section(a.md, a.section, markdown, heading=section_heading(a.section, report["command"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
