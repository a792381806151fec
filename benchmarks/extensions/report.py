"""The tables, claim lines and markdown section of the extensions suite's report."""

from __future__ import annotations

import numpy as np

from benchmarks.extensions.claims import median_of
from benchmarks.extensions.settings import CHANGE_TOL, MASS_TOL, NOISE_FACTOR, WITHIN_ABS, WITHIN_RATIO
from benchmarks.report import markers

MD_START, MD_END = markers("extensions")
SUMMARY_NAMES = {
    "mean_err_max": "mean err max",
    "mean_err": "mean err avg",
    "sd_err_max": "sd err max",
    "sd_err": "sd err avg",
    "kl": "KL",
}
"""Table and claim-line names of the summaries of claim 1 (``mean_err`` / ``sd_err`` are the averages over
coordinates)."""


def _fmt(s: dict[str, float], digits: int = 3) -> str:
    if not s or np.isnan(median_of(s)):
        return "n/a"
    if not np.isfinite(s["median"]):
        return str(s["median"]) if s["n"] == 1 or s["min"] == s["max"] else f"{s['median']} [{s['min']}, {s['max']}]"
    f = f"{{:.{digits}g}}" if abs(s["median"]) >= 100 else f"{{:.{digits}f}}"
    if s["n"] == 1:
        return f.format(s["median"])
    return f"{f.format(s['median'])} [{f.format(s['min'])}, {f.format(s['max'])}]"


def format_scale_table(rows: list[dict]) -> str:
    """Markdown table of experiment 1: errors of q (closed form), KL, k-hat, time."""
    head = (
        "| target | method | mean err max | mean err avg | sd err max | sd err avg | KL(q‖p) | k̂ | grads "
        "| s (1st seed, compile incl.) / s per later seed |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if r["target"].startswith("bimodal"):
            continue
        c = r["closed_form"]
        kl = _fmt(r["kl"], 3) + ("" if r["kl_is_exact"] else " (MC)")
        lines.append(
            f"| {r['target']} | {r['method']} | {_fmt(c['mean_err_max'])} | {_fmt(c['mean_err'])} "
            f"| {_fmt(c['sd_err_max'])} | {_fmt(c['sd_err'])} | {kl} | {_fmt(r['khat'], 2)} "
            f"| {int(median_of(r['grad_evals'])):,} | {r['seconds_first']:.1f} / {_fmt(r['seconds_rest'], 1)} |"
        )
    return "\n".join(lines)


def format_mass_table(rows: list[dict], records: list[dict], truth: float) -> str:
    """Markdown table of experiment 2: mass on the 0.7 mode per summary, and the per-seed splits."""
    lines = [
        f"| weights | component split per seed (right/left) | q (unweighted) | PSIS-weighted | "
        f"`importance_resample` | k̂ | seeds within {MASS_TOL} (q / PSIS / resampled) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r["target"].startswith("bimodal"):
            continue
        recs = [x for x in records if x["target"] == r["target"] and x["method"] == r["method"]]
        within = [sum(x[src]["mass_err"] <= MASS_TOL for x in recs) for src in ("closed_form", "psis", "resampled")]
        splits = ", ".join(
            f"{x['split']['label']}" + (f" (w_R={x['split']['weight_right']:.2f})" if x["weights"] != "uniform" else "")
            for x in recs
        )
        lines.append(
            f"| {recs[0]['weights']} | {splits} | {_fmt(r['closed_form']['mass_right'])} "
            f"| {_fmt(r['psis']['mass_right'])} | {_fmt(r['resampled']['mass_right'])} | {_fmt(r['khat'], 2)} "
            f"| {within[0]} / {within[1]} / {within[2]} of {len(recs)} |"
        )
    lines.append(f"\nTruth: P(x_0 > 0) = {truth:.4f}.")
    return "\n".join(lines)


def format_reweighting_table(rows: list[dict]) -> str:
    """Markdown table of experiment 3: unweighted vs PSIS-weighted summaries of the same draws."""
    lines = [
        "| target | method | k̂ | ESS/S | sd of log w | mean err max: draws → PSIS | sd err max: draws → PSIS | mass err: draws → PSIS "
        f"| helps / same / hurts (by > {CHANGE_TOL:g}) | helps / hurts beyond {NOISE_FACTOR:g}/√ESS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, p = r["draws"], r["psis"]
        mass = f"{median_of(d['mass_err']):.3f} → {median_of(p['mass_err']):.3f}" if "mass_err" in d else "—"
        tot = {v: sum(c[v] for c in r["reweighting"].values()) for v in ("helps", "same", "hurts")}
        noisy = {v: sum(c[v] for c in r["reweighting_beyond_noise"].values()) for v in ("helps", "hurts")}
        lines.append(
            f"| {r['target']} | {r['method']} | {_fmt(r['khat'], 2)} | {_fmt(r['ess_fraction'], 3)} "
            f"| {median_of(r['log_w_sd']):.3g} "
            f"| {median_of(d['mean_err_max']):.3f} → {median_of(p['mean_err_max']):.3f} "
            f"| {median_of(d['sd_err_max']):.3f} → {median_of(p['sd_err_max']):.3f} | {mass} "
            f"| {tot['helps']} / {tot['same']} / {tot['hurts']} | {noisy['helps']} / {noisy['hurts']} |"
        )
    return "\n".join(lines)


def format_claim_table(claims: list[dict]) -> str:
    """Markdown table of claim 1: medians of every summary for isotropic / diagonal / AutoMultivariateNormal."""
    lines = [
        "| target | N | summary | isotropic | diagonal | AutoMVN | diagonal within? | isotropic within? |",
        "|---|---:|---|---:|---:|---:|:---:|:---:|",
    ]
    for c in claims:
        for key, v in c["checks"].items():
            lines.append(
                f"| {c['target']} | {c['n_components']} | {SUMMARY_NAMES[key]} "
                f"| {v['isotropic']:.3g} | {v['diagonal']:.3g} | {v['mvn']:.3g} "
                f"| {'yes' if v['diagonal_within'] else '**no**'} | {'yes' if v['isotropic_within'] else 'no'} |"
            )
    return "\n".join(lines)


def claim_lines(report: dict) -> list[str]:
    """One line per claim, with the verdict."""
    lines = []
    names = SUMMARY_NAMES
    for c in report["claims"]["scales"]:
        ch = c["checks"]
        diag_out = [names[k] for k, v in ch.items() if not v["diagonal_within"]]
        iso_in = [names[k] for k, v in ch.items() if v["isotropic_within"]]
        verdict = {"holds": "HOLDS", "partly": "holds PARTLY", "fails": "does NOT hold"}[c["verdict"]]
        extra = "" if c["in_scope"] else " (a target beyond the claim's scope)"
        lines.append(
            f"Claim 1, {c['target']}{extra}, N={c['n_components']}: {verdict} — diagonal within AutoMultivariateNormal "
            f"on {len(ch) - len(diag_out)}/{len(ch)} summaries"
            + (f" (not on {', '.join(diag_out)})" if diag_out else "")
            + f"; isotropic within on {len(iso_in)}/{len(ch)}"
            + (f" ({', '.join(iso_in)})" if iso_in else "")
        )
    m = report["claims"]["mass"]
    for w in ("uniform", "fisher-rao"):
        lines.append(
            f"Claim 2, {w} weights: mode mass within {MASS_TOL} of the truth in {m[w + '/closed_form']['within']}/"
            f"{m[w + '/closed_form']['of']} seeds unweighted, {m[w + '/psis']['within']}/{m[w + '/psis']['of']} "
            f"PSIS-weighted, {m[w + '/resampled']['within']}/{m[w + '/resampled']['of']} resampled "
            f"(splits {', '.join(m[w + '/closed_form']['splits'])})"
        )
    rw, rn = report["claims"]["reweighting"]["reweighting"], report["claims"]["reweighting"]["reweighting_beyond_noise"]
    n = sum(rw["counts"].values())
    good = [h for h in rw["hurts"] if h["khat"] <= 0.7]
    verdict = "HOLDS" if not rw["hurts"] else ("holds where k̂ <= 0.7" if not good else "does NOT hold")
    lines.append(
        f"Claim 3 (reweighting never makes a summary worse): {verdict} — of {n} (fit, summary) pairs, PSIS weights "
        f"help (error down by > {CHANGE_TOL:g}) in {rw['counts']['helps']} ({len(rw['helps_with_good_khat'])} with "
        f"k̂ <= 0.7), change it by at most {CHANGE_TOL:g} in {rw['counts']['same']}, hurt in {rw['counts']['hurts']} "
        f"({len(good)} with k̂ <= 0.7); beyond {NOISE_FACTOR:g}/sqrt(ESS): help in {rn['counts']['helps']}, "
        f"hurt in {rn['counts']['hurts']} ({len(rn['hurts_with_good_khat'])} with k̂ <= 0.7)"
    )
    worst: dict[tuple[str, str], list[dict]] = {}
    for h in rw["hurts"]:
        worst.setdefault((h["target"], h["method"]), []).append(h)
    for (target, method), hs in worst.items():
        w = max(hs, key=lambda h: h["psis"] - h["unweighted"])
        lines.append(
            f"  hurt: {target}, {method}: {len(hs)} (seed, summary) pairs, k̂ {min(h['khat'] for h in hs):.2f}"
            f"..{max(h['khat'] for h in hs):.2f}; worst {w['summary']} {w['unweighted']:.3f} → {w['psis']:.3f} "
            f"(seed {w['seed']}, ESS/S {w['ess_fraction']:.4f})"
        )
    return lines


def render_markdown(report: dict) -> str:
    """The generated section of docs/benchmarks.md (between the bench-extensions markers)."""
    m, s = report["machine"], report["settings"]
    ref = report["reference"]
    lines = [
        f"Measured {report['date']} with `python -m benchmarks.extensions{' --quick' if s['quick'] else ''}` "
        f"({s['seeds']} seeds, {s['bimodal_seeds']} on the bimodal target; {report['seconds']:.0f} s) on {m['platform']}, {m['cpu_count']} CPUs, jax {m['jax']} "
        f"({m['backend']}), numpyro {m['numpyro']}, mixvi {m['mixvi']} (sources sha256 {m['mixvi_source_sha256']}). "
        "Cells are median [min, max] over seeds.",
        "",
        f"Settings: MixVI `{s['method']}`, `step_size={s['step_size']!r}`, B = {s['num_samples']}, "
        f"{s['gauss_steps']} steps (Gaussian) / {s['eight_steps']} (eight schools) / {s['bimodal_steps']} (bimodal); "
        f"AutoMultivariateNormal: `Trace_ELBO(num_particles={s['num_samples']})`, Adam {s['mvn_lr']:g} "
        f"decayed exponentially to {s['mvn_lr'] * s['mvn_lr_decay']:g}, {s['mvn_steps']} steps; "
        f"init_scale {s['init_scale']:g} (bimodal: {s['bimodal_init_scale']:g}, means from {s['bimodal_init_loc']:g}). "
        f"Summaries from S = {s['num_draws']} draws of q. Eight-schools reference: NUTS ({ref['settings']['chains']} x "
        f"{ref['settings']['samples']} draws, min ESS {ref['ess_min']:.0f}, {ref['divergences']} divergences, so its "
        f"means carry ~{ref['mc_error_of_ref_mean_in_sd']:.3f} sd of Monte-Carlo error), log Z = {ref['log_z']:.3f}.",
        "",
        "**1. Scales** (errors of q's closed-form means and sds in units of the reference sd, over the "
        "unconstrained coordinates; KL exact when q and p are Gaussian, else MC; "
        f"the AR(1) rho = {s['rho']:g} Gaussian is outside the diagonal family and beyond the claim's scope):",
        "",
        format_scale_table(report["aggregate"]),
        "",
        "Floors of the single-Gaussian families (the smallest KL any N = 1 fit can reach): "
        + "; ".join(
            f"{t}: isotropic {f['isotropic']:.3g}, diagonal {f['diagonal']:.3g}"
            for t, f in ref["family_floor_kl"].items()
        )
        + ".",
        "",
        f'Claim 1 per summary (medians over seeds; "within" = at most {WITHIN_RATIO:g} x AutoMultivariateNormal\'s '
        f"value or {WITHIN_ABS:g} above it):",
        "",
        format_claim_table(report["claims"]["scales"]),
        "",
        f"**2. Mode mass** (N = {s['bimodal_components']}, P(x_0 > 0)):",
        "",
        format_mass_table(report["aggregate"], report["records"], report["bimodal_truth"]["mass_right"]),
        "",
        f"**3. Reweighting** (the same S draws, unweighted → PSIS-weighted; medians over seeds; counts over "
        f"(seed, summary) pairs, summaries = mean/sd err max and avg, and the mass; a change counts when the error "
        f"moves by more than {CHANGE_TOL:g}, and separately by more than {NOISE_FACTOR:g}/√ESS):",
        "",
        format_reweighting_table(report["aggregate"]),
        "",
        "**Claims:**",
        "",
        *[f"- {line}" if not line.startswith("  ") else f"  - {line.strip()}" for line in claim_lines(report)],
    ]
    return "\n".join(lines)
