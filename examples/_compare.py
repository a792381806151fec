"""Helpers shared by the gallery scripts: one NumPyro model fitted three ways, and a table comparing the fits.

Not an example itself (sphinx-gallery skips files whose name starts with an underscore); the scripts next to it
import it. Three fits, each timed from the start of the fit to draws in memory, compilation included:

* ``fit_mixvi``: ``mixvi.AutoIsotropicMixture(model)`` trained by ``mixvi.MixVI(model, guide)``, every option
  at its default (20 components on these small models, 10 on a data-heavy one: `n_components="auto"` reads the
  model's cost; IBW step, automatic step size, 10 draws per component and step);
  ``mixvi_fits`` adds a second run with ``relocate=False`` when the default one diverges;
* ``fit_autonormal``: NumPyro's ``AutoNormal`` trained by ``SVI`` with ``Adam(0.01)`` and ``Trace_ELBO()``;
* ``fit_nuts``: NumPyro's ``NUTS`` (one chain unless told otherwise).

``warm_up`` runs NumPyro's model set-up once before the timed fits: JAX compiles the small operations of that
set-up on first use and keeps them for the process, so without it the first fit would pay for all three.

``MIXVI_DOCS_QUICK=1`` (what the documentation build in CI sets) selects a quick mode: few optimisation steps
and a short chain, to check that a script runs, not to compare the methods.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import jax
import numpy as np
import numpyro
import pandas as pd
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.util import initialize_model

import mixvi

QUICK = os.environ.get("MIXVI_DOCS_QUICK", "0") not in ("", "0")


@dataclass(frozen=True)
class Budget:
    """Steps of each VI method, NUTS warm-up and draws, and draws taken from each VI fit."""

    vi_steps: int
    nuts_warmup: int
    nuts_samples: int
    vi_draws: int


def budget(vi_steps: int = 2000, nuts_warmup: int = 1000, nuts_samples: int = 1000, vi_draws: int = 4000) -> Budget:
    """The full-mode budget given, or the quick one (300 steps, NUTS 200 + 200, 1000 draws) under MIXVI_DOCS_QUICK."""
    if QUICK:
        return Budget(vi_steps=min(vi_steps, 300), nuts_warmup=200, nuts_samples=200, vi_draws=1000)
    return Budget(vi_steps, nuts_warmup, nuts_samples, vi_draws)


@dataclass
class Fit:
    """Draws of the latent sites (constrained, leading axis = draw) and the wall time of the fit, in seconds."""

    name: str
    draws: dict
    seconds: float
    note: str = ""
    extra: dict = field(default_factory=dict)


def _numpy(tree: dict) -> dict:
    return {k: np.asarray(v) for k, v in jax.block_until_ready(tree).items()}


def warm_up(model, *args, **kwargs) -> float:
    """Run NumPyro's model set-up once (untimed in the comparison); returns its wall time."""
    start = time.perf_counter()
    initialize_model(jax.random.PRNGKey(0), model, model_args=args, model_kwargs=kwargs)
    return time.perf_counter() - start


def fit_mixvi(model, *args, rng_key, num_steps: int, num_draws: int, options=None, name="mixvi", **kwargs) -> Fit:
    """mixvi with its defaults (or with the ``MixVI`` options given).

    A run that stops on a non-finite step (``mixvi.DivergenceError``) is not hidden: the draws come from the last
    finite state the error carries, and the note says at which step the run stopped.
    """
    key_fit, key_draws = jax.random.split(rng_key)
    start = time.perf_counter()
    guide = mixvi.AutoIsotropicMixture(model)
    note = ""
    try:
        engine = mixvi.MixVI(model, guide, **(options or {}))
        result = engine.run(key_fit, num_steps, *args, progress_bar=False, **kwargs)
        params, losses = result.params, result.losses
    except mixvi.DivergenceError as err:
        params, losses = err.params, err.losses
        note = f"DIVERGED at step {err.step} of {num_steps}: draws from the last finite state"
    draws = guide.sample_posterior(key_draws, params, *args, sample_shape=(num_draws,), **kwargs)
    draws = _numpy(draws)
    seconds = time.perf_counter() - start
    return Fit(name, draws, seconds, note=note, extra={"guide": guide, "params": params, "losses": losses})


def mixvi_fits(model, *args, rng_key, num_steps: int, num_draws: int, **kwargs) -> list[Fit]:
    """``fit_mixvi`` with the defaults and, only if that run diverged, once more with ``relocate=False``.

    On 2026-12-03, before a change of the guide's initialisation, the default runs of the LKJ, horseshoe and
    neural-network examples stopped on non-finite steps while runs with ``relocate=False`` (no restarts of
    massless components) did not; should a default run diverge again, the second fit shows the method without
    the restarts.
    """
    fits = [fit_mixvi(model, *args, rng_key=rng_key, num_steps=num_steps, num_draws=num_draws, **kwargs)]
    if fits[0].note:
        fits.append(
            fit_mixvi(
                model, *args, rng_key=rng_key, num_steps=num_steps, num_draws=num_draws,
                options={"relocate": False}, name="mixvi relocate=False", **kwargs,
            )
        )
    return fits


def fit_autonormal(model, *args, rng_key, num_steps: int, num_draws: int, step_size: float = 0.01, **kwargs) -> Fit:
    """NumPyro's AutoNormal, SVI with Adam and Trace_ELBO (one particle)."""
    key_fit, key_draws = jax.random.split(rng_key)
    start = time.perf_counter()
    guide = AutoNormal(model)
    svi = SVI(model, guide, numpyro.optim.Adam(step_size), Trace_ELBO())
    result = svi.run(key_fit, num_steps, *args, progress_bar=False, **kwargs)
    draws = guide.sample_posterior(key_draws, result.params, *args, sample_shape=(num_draws,), **kwargs)
    draws = _numpy(draws)
    seconds = time.perf_counter() - start
    return Fit("AutoNormal", draws, seconds, extra={"guide": guide, "params": result.params, "losses": result.losses})


def fit_nuts(model, *args, rng_key, num_warmup: int, num_samples: int, num_chains: int = 1, name="NUTS", **kwargs):
    """NumPyro's NUTS; the note counts the divergent transitions after warm-up."""
    start = time.perf_counter()
    mcmc = MCMC(
        NUTS(model), num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
        chain_method="sequential", progress_bar=False,
    )
    mcmc.run(rng_key, *args, extra_fields=("diverging",), **kwargs)
    draws = _numpy(mcmc.get_samples())
    seconds = time.perf_counter() - start
    divergent = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    note = f"{num_chains} x ({num_warmup} warm-up + {num_samples} draws), {divergent} divergent"
    return Fit(name, draws, seconds, note=note, extra={"mcmc": mcmc})


def latent_names(model, *args, **kwargs) -> list[str]:
    """The model's latent sample sites (after any reparameterisation inside it)."""
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(*args, **kwargs)
    return [n for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]]


def pick(fit: Fit, sites) -> dict:
    """The draws of the sites named (latent or deterministic: each fit's draws hold both), in that order."""
    return {name: fit.draws[name] for name in sites}


def predict(fit: Fit, model, sites, *args, rng_key=None, **kwargs) -> dict:
    """The sites named under each draw of ``fit``, the model run on other arguments (a grid of inputs, say)."""
    latent = set(latent_names(model, *args, **kwargs))
    given = {k: v for k, v in fit.draws.items() if k in latent}
    rng_key = jax.random.PRNGKey(0) if rng_key is None else rng_key
    predictive = Predictive(model, posterior_samples=given, return_sites=list(sites), parallel=True)
    out = _numpy(predictive(rng_key, *args, **kwargs))
    return {name: out[name] for name in sites}


def _columns(values: dict) -> dict[str, np.ndarray]:
    """Flatten each site to scalar columns: ``theta`` of shape (draws, 8) gives ``theta[0]`` ... ``theta[7]``."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v)
        if v.ndim == 1:
            out[name] = v
            continue
        for index in np.ndindex(*v.shape[1:]):
            out[f"{name}[{','.join(map(str, index))}]"] = v[(slice(None), *index)]
    return out


def comparison(values: dict[str, dict], reference: str = "NUTS", exact: dict | None = None) -> pd.DataFrame:
    """One row per scalar quantity; mean and sd of each fit, and for every other fit its error against the reference.

    ``values`` maps a fit's name to a dict of draws (``pick``'s or ``predict``'s output); the columns are
    (fit, statistic). ``err`` is |mean - reference mean| / reference sd (the error of the posterior mean in
    reference posterior sds), ``sd/ref`` is sd / reference sd (1 is right; below 1 the fit is too narrow).
    With ``exact`` (a site name -> (mean, sd) of each of its elements, known in closed form) the reference is
    that, named ``reference``, and every fit in ``values`` is compared to it.
    """
    cols = {name: _columns(v) for name, v in values.items()}
    rows = {}
    for q in next(iter(cols.values())):
        if exact is not None:
            r_mean, r_sd = (float(t) for t in exact[q.split("[")[0]])
        else:
            r_mean, r_sd = float(np.mean(cols[reference][q])), float(np.std(cols[reference][q]))
        row = {(reference, "mean"): r_mean, (reference, "sd"): r_sd}
        for name, c in cols.items():
            if name == reference:
                continue
            mean, sd = float(np.mean(c[q])), float(np.std(c[q]))
            row.update({(name, "mean"): mean, (name, "sd"): sd})
            row.update({(name, "err"): abs(mean - r_mean) / r_sd, (name, "sd/ref"): sd / r_sd})
        rows[q] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def report(table: pd.DataFrame, fits: list[Fit], reference: str = "NUTS", title: str = "") -> None:
    """Print the table, then one line per fit: wall time, largest error and range of sd ratios over the rows."""
    if title:
        print(f"-- {title} " + "-" * max(0, 100 - len(title)))
    width = pd.get_option("display.width")
    pd.set_option("display.width", 250)
    try:
        print(table.to_string(float_format=lambda x: f"{x:.3g}"))
    finally:
        pd.set_option("display.width", width)
    print(f"err: error of the posterior mean in {reference} posterior sds; sd/ref: posterior sd / {reference}'s")
    for fit in fits:
        line = f"{fit.name:>14s}: {fit.seconds:6.1f} s"
        if (fit.name, "err") in table:
            err, ratio = table[(fit.name, "err")], table[(fit.name, "sd/ref")]
            line += f"   max err {err.max():5.2f}   sd/ref {ratio.min():.2f}-{ratio.max():.2f}"
        if fit.note:
            line += f"   ({fit.note})"
        print(line)
