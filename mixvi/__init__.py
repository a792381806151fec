"""mixvi: variational inference with mixtures of isotropic Gaussians for JAX and NumPyro
(Petit-Talamon, Lambert, Korba, "Variational Inference with Mixtures of Isotropic Gaussians",
NeurIPS 2025, arXiv 2506.13613).

``mixture_vi`` is the functional core over any log-density and pytree; ``AutoIsotropicMixture`` and
``MixVI`` are the NumPyro layer on it; ``optim`` holds the same geometry as optax transforms for SVI.
"""

from mixvi import geometry, optim
from mixvi.diagnostics import component_summary, fit_check, psis_khat, to_datatree
from mixvi.engine import MixVI, MixVIRunResult, MixVIState
from mixvi.family import IsotropicMixture
from mixvi.geometry import AutoStep
from mixvi.guide import AutoIsotropicMixture
from mixvi.importance import ImportanceSample, importance_resample, psis_log_weights
from mixvi.loop import DivergenceError, enable_compilation_cache
from mixvi.refinement import RefineInfo, RefineResult, refine
from mixvi.vi import MixtureVI, MixtureVIInfo, MixtureVIState, mixture_vi

__version__ = "0.1.0"

__all__ = [
    "AutoIsotropicMixture",
    "AutoStep",
    "DivergenceError",
    "ImportanceSample",
    "IsotropicMixture",
    "MixVI",
    "MixVIRunResult",
    "MixVIState",
    "MixtureVI",
    "MixtureVIInfo",
    "MixtureVIState",
    "RefineInfo",
    "RefineResult",
    "component_summary",
    "enable_compilation_cache",
    "fit_check",
    "geometry",
    "importance_resample",
    "mixture_vi",
    "optim",
    "refine",
    "psis_khat",
    "psis_log_weights",
    "to_datatree",
]
