"""The runs of the extensions suite: experiment 1 (scales) and 2 (mode mass), each also feeding
experiment 3 (reweighting), and ``run_benchmark``, which assembles the report with the settings of the run
itself."""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import init_to_value

import mixvi
from benchmarks.extensions.claims import aggregate, mass_claims, reweighting_claims, scale_claims
from benchmarks.extensions.fitting import Fitter, evaluate_fit, make_target
from benchmarks.extensions.models import (
    EIGHT_NAMES,
    bimodal_model,
    bimodal_truth,
    correlated_gaussian_target,
    eight_schools_centred,
    eight_schools_log_z,
    eight_schools_reference,
    gaussian_target,
)
from benchmarks.extensions.settings import Method, Settings, thresholds
from benchmarks.metrics import component_split, family_floor_kl, weighted_mass
from benchmarks.report import machine_info as report_machine_info
from benchmarks.targets import Target


def _scale_methods(components: Sequence[int]) -> list[Method]:
    out = [Method("mixvi", n, metric) for metric in ("isotropic", "diagonal") for n in components]
    return out + [Method("mvn")]


def _fitter_options(st: Settings) -> dict[str, Any]:
    """The ``Fitter`` options every fit of a run shares, taken from its settings."""
    return {
        "num_samples": st.num_samples,
        "vi_method": st.method,
        "step_size": st.step_size,
        "mvn_lr": st.mvn_lr,
        "mvn_lr_decay": st.mvn_lr_decay,
    }


def _record(target: Target, method: Method, seed: int, fitted: dict, ev: dict, steps: int) -> dict[str, Any]:
    rec = {
        "target": target.name,
        "method": method.label,
        "kind": method.kind,
        "n_components": method.n_components,
        "metric": method.metric,
        "weights": method.weights,
        "seed": seed,
        "steps": steps,
    }
    rec.update({k: v for k, v in fitted.items() if k not in ("qp", "params")})
    rec.update(ev)
    return rec


def run_scales(st: Settings, log: Callable[[str], None] | None = print) -> tuple[list[dict], dict]:
    """Experiment 1 (and 3 on its fits): the Gaussians and eight schools, every method and seed. Returns the
    records and the reference information (NUTS, log Z, the N = 1 families' KL floors on the Gaussians)."""
    g_model, g_mean, g_sd = gaussian_target(st.gauss_dim)
    gauss = make_target(f"gaussian d={st.gauss_dim}", g_model, g_mean, g_sd, 0.0, gaussian_cov=g_sd**2)
    c_model, c_mean, c_cov = correlated_gaussian_target(st.gauss_dim, st.rho)
    corr = make_target(
        f"gaussian d={st.gauss_dim}, AR(1) rho={st.rho:g}",
        c_model,
        c_mean,
        np.sqrt(np.diag(c_cov)),
        0.0,
        gaussian_cov=c_cov,
    )
    ref = eight_schools_reference(st.ref_chains, st.ref_samples, st.ref_warmup)
    log_z = eight_schools_log_z()
    if log:
        log(
            f"  eight-schools reference: NUTS {ref['num_draws']} draws, min ESS {ref['ess_min']:.0f}, "
            f"{ref['divergences']} divergences, {ref['seconds']:.0f} s; log Z = {log_z:.4f} (quadrature)"
        )
    eight = make_target(
        "eight schools (centred)", eight_schools_centred, ref["mean"], ref["sd"], log_z, family="eight-schools"
    )
    records = []
    floors = {gauss.name: family_floor_kl(g_sd**2), corr.name: family_floor_kl(c_cov)}
    targets = (
        [(gauss, st.gauss_steps)] + ([(corr, st.gauss_steps)] if st.correlated else []) + [(eight, st.eight_steps)]
    )
    for target, steps in targets:
        for method in _scale_methods(st.components):
            n_steps = st.mvn_steps if method.kind == "mvn" else steps
            fitter = Fitter(method, target.model, n_steps, **_fitter_options(st), init_scale=st.init_scale)
            for seed in range(st.seeds):
                fitted = fitter.fit(seed)
                ev = evaluate_fit(target, fitted["qp"], jax.random.PRNGKey(10_000 + seed), st.num_draws)
                records.append(_record(target, method, seed, fitted, ev, n_steps))
                if log:
                    c = ev["closed_form"]
                    log(
                        f"  {target.name:24s} {method.label:34s} seed {seed}: mean err max {c['mean_err_max']:.3f}, "
                        f"sd err max {c['sd_err_max']:.3f}, KL {ev['kl']:.3g}, k-hat {ev['khat']:.2f} "
                        f"[{fitted['seconds']:.1f} s]"
                    )
    ref_info = {k: v for k, v in ref.items() if k not in ("mean", "sd")}
    ref_info.update(
        {
            "log_z": log_z,
            "coordinates": EIGHT_NAMES,
            "mean": ref["mean"].tolist(),
            "sd": ref["sd"].tolist(),
            "mc_error_of_ref_mean_in_sd": 1.0 / math.sqrt(ref["ess_min"]),
            "family_floor_kl": floors,
        }
    )
    return records, ref_info


def run_bimodal(st: Settings, log: Callable[[str], None] | None = print) -> list[dict]:
    """Experiment 2 (and 3 on its fits): N = ``st.bimodal_components``, uniform vs Fisher-Rao weights,
    unweighted vs PSIS."""
    truth = bimodal_truth()
    target = make_target(
        "bimodal 0.3/0.7",
        bimodal_model,
        truth["mean"],
        truth["sd"],
        0.0,
        family="bimodal",
        mass_right=truth["mass_right"],
    )
    init = init_to_value(values={"x": jnp.full(2, st.bimodal_init_loc)})
    records = []
    for weights in ("uniform", "fisher-rao"):
        method = Method("mixvi", st.bimodal_components, "isotropic", weights)
        fitter = Fitter(
            method,
            bimodal_model,
            st.bimodal_steps,
            **_fitter_options(st),
            init_scale=st.bimodal_init_scale,
            init_loc_fn=init,
        )
        for seed in range(st.bimodal_seeds):
            fitted = fitter.fit(seed)
            ev = evaluate_fit(target, fitted["qp"], jax.random.PRNGKey(10_000 + seed), st.num_draws)
            res = mixvi.importance_resample(
                fitter.guide,
                fitted["params"],
                rng_key=jax.random.PRNGKey(20_000 + seed),
                num_samples=st.num_draws // 4,
                on_bad_khat="ignore",
            )
            mass = weighted_mass(np.asarray(res.latent))
            ev["resampled"] = {
                "mass_right": mass,
                "mass_err": abs(mass - truth["mass_right"]),
                "khat": res.khat,
                "ess": res.ess,
                "num_samples": st.num_draws // 4,
                "num_proposals": res.num_proposals,
            }
            ev["split"] = component_split(fitted["qp"]["locs"], fitted["qp"]["weights"])
            rec = _record(target, method, seed, fitted, ev, st.bimodal_steps)
            records.append(rec)
            if log:
                log(
                    f"  {target.name:24s} {method.label:34s} seed {seed}: split {ev['split']['label']}, "
                    f"mass q {ev['closed_form']['mass_right']:.3f}, PSIS {ev['psis']['mass_right']:.3f}, "
                    f"resampled {mass:.3f} (truth {truth['mass_right']:.3f}), k-hat {ev['khat']:.2f} "
                    f"[{fitted['seconds']:.1f} s]"
                )
    return records


def source_digest() -> str:
    """sha256 (first 12 hex digits) of mixvi's library sources (``mixvi/*.py``, not the benchmarks), so a
    report can be matched to the code that produced it."""
    h = hashlib.sha256()
    for f in sorted(Path(mixvi.__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def machine_info() -> dict[str, Any]:
    """The shared machine record plus a digest of the mixvi sources the numbers came from."""
    return {**report_machine_info(), "mixvi_source_sha256": source_digest()}


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(x).tolist())
    if isinstance(x, (np.floating, float)):  # JSON has no inf / NaN: +-inf as "inf" / "-inf", NaN as null
        return float(x) if np.isfinite(x) else (None if np.isnan(x) else str(float(x)))
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def run_benchmark(st: Settings, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the three experiments; return the report (date, machine, settings, records, aggregate, claims)."""
    t0 = time.perf_counter()
    machine = machine_info()
    scale_records, ref = run_scales(st, log)
    bimodal_records = run_bimodal(st, log)
    records = scale_records + bimodal_records
    rows = aggregate(records)
    if hasattr(os, "getloadavg"):
        machine["loadavg_end"] = list(os.getloadavg())
    settings = {**asdict(st), **thresholds()}  # the run's own settings, field by field
    report = {
        "benchmark": "extensions",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": settings,
        "reference": ref,
        "bimodal_truth": bimodal_truth(),
        "records": records,
        "aggregate": rows,
        "claims": {
            "scales": scale_claims(rows),
            "mass": mass_claims(records),
            "reweighting": reweighting_claims(records),
        },
    }
    report["seconds"] = time.perf_counter() - t0
    return report
