"""Benchmark targets of the paper suite (arXiv 2506.13613): each a NumPyro model plus,
where it exists, an exact sampler and a normalised log density (``benchmarks.targets.Target``).

- ``make_gmm(dim, covariance, seed)``: K = 5 Gaussian mixtures, d in {2, 10, 50}, 'diag' / 'full' / 'iso'.
- ``make_funnel()``: the 2-D funnel.
- ``make_sinh_arcsinh(name)``: three 2-D skewed, heavy-tailed targets ('sas-a', 'sas-b', 'sas-c').
- ``make_label_switching()``: a two-component mixture model's bimodal posterior (grid-normalised).
- ``make_logreg_breast()`` / ``make_softmax_wine()``: regressions on scikit-learn's data, NUTS reference.

``get_target(name)`` builds any of them by name (``TARGET_NAMES``).
"""

from __future__ import annotations

import os

from benchmarks.targets.base import FlatDensity, Target, flat_model
from benchmarks.targets.mixture_model import make_label_switching
from benchmarks.targets.regression import make_logreg_breast, make_softmax_wine, nuts_reference
from benchmarks.targets.synthetic import (
    GMM_COVARIANCES,
    SAS_SETTINGS,
    funnel_log_prob,
    gmm_parameters,
    make_funnel,
    make_gmm,
    make_sinh_arcsinh,
)

TARGET_NAMES = (
    *[f"gmm-d{d}-{c}" for d in (2, 10, 50) for c in GMM_COVARIANCES],
    "funnel",
    *SAS_SETTINGS,
    "label-switching",
    "logreg-breast",
    "softmax-wine",
)


def get_target(name: str, *, seed: int = 0, cache: str | os.PathLike | None = None) -> Target:
    """Build the target ``name`` (one of ``TARGET_NAMES``); ``seed`` seeds the GMM parameters,
    ``cache`` is where NUTS references are cached (default $MIXVI_CACHE or ~/.cache/mixvi)."""
    if name.startswith("gmm-d"):
        dim, cov = name[5:].split("-")
        return make_gmm(int(dim), cov, seed=seed)
    if name == "funnel":
        return make_funnel()
    if name in SAS_SETTINGS:
        return make_sinh_arcsinh(name)
    if name == "label-switching":
        return make_label_switching()
    if name == "logreg-breast":
        return make_logreg_breast(cache=cache)
    if name == "softmax-wine":
        return make_softmax_wine(cache=cache)
    raise ValueError(f"unknown target {name!r}; choose from {TARGET_NAMES}")


__all__ = [
    "FlatDensity",
    "GMM_COVARIANCES",
    "SAS_SETTINGS",
    "TARGET_NAMES",
    "Target",
    "flat_model",
    "funnel_log_prob",
    "get_target",
    "gmm_parameters",
    "make_funnel",
    "make_gmm",
    "make_label_switching",
    "make_logreg_breast",
    "make_sinh_arcsinh",
    "make_softmax_wine",
    "nuts_reference",
]
