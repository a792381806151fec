"""Aggregation over seeds and the three claims of the extensions suite: the diagonal metric against
AutoMultivariateNormal (scales), mode mass (uniform against Fisher-Rao weights) and PSIS reweighting."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.extensions.settings import CHANGE_TOL, MASS_TOL, NOISE_FACTOR, WITHIN_ABS, WITHIN_RATIO, Method
from benchmarks.metrics import summarise


def median_of(s: dict[str, Any] | None) -> float:
    """The median of a ``summarise`` record as a float (NaN when it has none)."""
    if not s or s.get("median") is None:
        return math.nan
    return float(s["median"])


def compare_change(weighted_err: float, plain_err: float, ess: float | None = None) -> str:
    """'helps' / 'hurts' when reweighting changes an error by more than CHANGE_TOL (``ess`` None) or by
    more than NOISE_FACTOR / sqrt(ESS) (the Monte-Carlo error of a self-normalised estimate in sd units),
    'same' otherwise."""
    tol = CHANGE_TOL if ess is None else NOISE_FACTOR / math.sqrt(max(ess, 1.0))
    if not np.isfinite(weighted_err):
        return "hurts"
    if weighted_err < plain_err - tol:
        return "helps"
    if weighted_err > plain_err + tol:
        return "hurts"
    return "same"


SCALE_METRICS = ("mean_err_max", "mean_err", "sd_err_max", "sd_err")


def _groups(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        out.setdefault((r["target"], r["method"]), []).append(r)
    return out


def aggregate(records: list[dict]) -> list[dict[str, Any]]:
    """Per (target, method): median / min / max over seeds of every metric."""
    rows = []
    for (target, method), recs in _groups(records).items():
        row: dict[str, Any] = {"target": target, "method": method, "seeds": len(recs)}
        for src in ("closed_form", "draws", "psis"):
            keys = [k for k in recs[0][src]]
            row[src] = {k: summarise([r[src][k] for r in recs], keep_inf=True) for k in keys}
        for k in ("kl", "khat", "ess", "ess_fraction", "log_w_sd", "seconds", "grad_evals", "final_loss"):
            row[k] = summarise([r[k] for r in recs], keep_inf=True)
        first = min(recs, key=lambda r: r["seed"])
        row["seconds_first"] = first["seconds"]  # includes the compilation
        row["seconds_rest"] = summarise([r["seconds"] for r in recs if r is not first], keep_inf=True)
        row["kl_is_exact"] = all(r["kl_exact"] is not None for r in recs)
        for key in ("reweighting", "reweighting_beyond_noise"):
            row[key] = {
                m: {v: sum(r[key][m] == v for r in recs) for v in ("helps", "same", "hurts")} for m in recs[0][key]
            }
        if "resampled" in recs[0]:
            row["resampled"] = {k: summarise([r["resampled"][k] for r in recs], keep_inf=True) for k in ("mass_right", "mass_err")}
            row["splits"] = [r["split"]["label"] for r in recs]
        rows.append(row)
    return rows


def _within(err: float, ref: float) -> bool:
    return err <= WITHIN_RATIO * ref or err <= ref + WITHIN_ABS


CLAIM_METRICS = ("mean_err_max", "mean_err", "sd_err_max", "sd_err", "kl")


def scale_claims(rows: list[dict]) -> list[dict[str, Any]]:
    """Claim 1 per (target, N): on each summary (medians over seeds), is metric='diagonal' within the error
    of AutoMultivariateNormal, and is metric='isotropic' not? 'holds' when diagonal is within on every
    summary and isotropic on none, 'partly' when diagonal is within on every summary and isotropic on
    some but not all, 'fails' otherwise (diagonal outside on any, or nothing tells them apart)."""
    out = []
    by = {(r["target"], r["method"]): r for r in rows}
    for target in dict.fromkeys(r["target"] for r in rows):
        mvn = by.get((target, Method("mvn").label))
        if mvn is None:
            continue
        ns = sorted({int(m.split("N=")[1].split(",")[0]) for (t, m) in by if t == target and "N=" in m})
        for n in ns:
            entry: dict[str, Any] = {"target": target, "n_components": n, "in_scope": "rho" not in target}
            checks: dict[str, dict[str, Any]] = {}
            for key in CLAIM_METRICS:

                def med(row: dict, key: str = key) -> float:
                    return median_of(row[key] if key == "kl" else row["closed_form"][key])

                iso, diag = (
                    by[(target, Method("mixvi", n, "isotropic").label)],
                    by[(target, Method("mixvi", n, "diagonal").label)],
                )
                checks[key] = {
                    "isotropic": med(iso),
                    "diagonal": med(diag),
                    "mvn": med(mvn),
                    "diagonal_within": bool(_within(med(diag), med(mvn))),
                    "isotropic_within": bool(_within(med(iso), med(mvn))),
                }
            entry["checks"] = checks
            diag_ok = all(c["diagonal_within"] for c in checks.values())
            iso_in = sum(c["isotropic_within"] for c in checks.values())
            entry["verdict"] = (
                "holds" if diag_ok and iso_in == 0 else "partly" if diag_ok and iso_in < len(checks) else "fails"
            )
            out.append(entry)
    return out


def mass_claims(records: list[dict]) -> dict[str, Any]:
    """Claim 2: per seed, is each summary's mode mass within MASS_TOL of the truth?"""
    out: dict[str, Any] = {}
    for weights in ("uniform", "fisher-rao"):
        recs = [r for r in records if r["target"].startswith("bimodal") and r["weights"] == weights]
        for src in ("closed_form", "psis", "resampled"):
            errs = [r[src]["mass_err"] for r in recs]
            out[f"{weights}/{src}"] = {
                "within": sum(e <= MASS_TOL for e in errs),
                "of": len(errs),
                "errors": errs,
                "splits": [r["split"]["label"] for r in recs],
            }
    return out


def reweighting_claims(records: list[dict]) -> dict[str, Any]:
    """Claim 3: over every fit and summary, where PSIS reweighting helps, is neutral, or hurts (by more than
    CHANGE_TOL; and, separately, by more than NOISE_FACTOR / sqrt(ESS)), split by k-hat <= 0.7 or not."""
    out: dict[str, Any] = {}
    for key in ("reweighting", "reweighting_beyond_noise"):
        counts = {"helps": 0, "same": 0, "hurts": 0}
        hurt, helped = [], []
        for r in records:
            for metric, verdict in r[key].items():
                counts[verdict] += 1
                item = {
                    "target": r["target"],
                    "method": r["method"],
                    "seed": r["seed"],
                    "summary": metric,
                    "unweighted": r["draws"][metric],
                    "psis": r["psis"][metric],
                    "khat": r["khat"],
                    "ess_fraction": r["ess_fraction"],
                }
                (hurt if verdict == "hurts" else helped if verdict == "helps" else []).append(item)
        out[key] = {
            "counts": counts,
            "hurts": hurt,
            "helps": helped,
            "hurts_with_good_khat": [h for h in hurt if h["khat"] <= 0.7],
            "helps_with_good_khat": [h for h in helped if h["khat"] <= 0.7],
        }
    return out
