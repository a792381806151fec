"""Diagnostics for a fitted ``AutoIsotropicMixture``: Pareto k-hat, PSIS, ArviZ export, per-component table.

Modules, each importing only those listed before it:

* :mod:`mixvi.diagnostics.psis`: Pareto-smoothed importance sampling and k-hat of given log weights
  (a wrapper over arviz-stats; NumPy only).
* :mod:`mixvi.diagnostics.importance`: k-hat of a fitted guide (:func:`psis_khat`) and PSIS
  resampling (:func:`importance_resample`).
* :mod:`mixvi.diagnostics.export`: :func:`to_datatree`, draws as an ArviZ ``DataTree``.
* :mod:`mixvi.diagnostics.components`: :func:`component_summary` and :func:`plot_components`.
* :mod:`mixvi.diagnostics.fit`: :func:`fit_check`, a verdict from k-hat and the relative score
  divergence.

All work on the guide's flattened unconstrained latent z, where the mixture lives:
log w(z) = log p(z) - log q(z), with log p(z) = -V(z) the unnormalised target (NumPyro's potential
energy, log-Jacobian of z -> x included) and q the mixture. The ratio p/q is the same on z as on the
constrained space (the Jacobians cancel). See docs/diagnostics.md for definitions and thresholds.

Every function taking a guide also accepts a NumPyro ``AutoGuideList`` with one
``AutoIsotropicMixture`` part (q is then the joint of the parts, log q the sum of their log densities),
and evaluates subsampled plates (``numpyro.plate(..., subsample_size=...)``) on all their data unless
``full_data=False``. :func:`to_datatree` exports PSIS-resampled draws by default.

References
----------
Yao, Vehtari, Simpson, Gelman, "Yes, but did it work?: Evaluating variational inference",
ICML 2018 (arXiv:1802.02538).
Vehtari, Simpson, Gelman, Yao, Gabry, "Pareto smoothed importance sampling", Journal of Machine
Learning Research 25(72), 2024 (arXiv:1507.02646).
"""

from mixvi.diagnostics.components import component_summary, plot_components
from mixvi.diagnostics.export import to_datatree
from mixvi.diagnostics.fit import FitCheck, fit_check
from mixvi.diagnostics.importance import KHAT_LIMIT, ImportanceSample, importance_resample, psis_khat
from mixvi.diagnostics.psis import (
    MIN_DRAWS,
    PsisResult,
    khat_from_log_weights,
    psis_from_log_densities,
    psis_log_weights,
    tail_length,
)

__all__ = [
    "FitCheck",
    "KHAT_LIMIT",
    "MIN_DRAWS",
    "ImportanceSample",
    "PsisResult",
    "component_summary",
    "fit_check",
    "importance_resample",
    "khat_from_log_weights",
    "plot_components",
    "psis_from_log_densities",
    "psis_khat",
    "psis_log_weights",
    "tail_length",
    "to_datatree",
]
