"""mixvi: variational inference with uniform-weight mixtures of isotropic Gaussians for NumPyro
(Petit-Talamon, Lambert, Korba, "Variational Inference with Mixtures of Isotropic Gaussians",
NeurIPS 2025, arXiv 2506.13613)."""

from mixvi import optim
from mixvi.diagnostics import component_summary, psis_khat, to_datatree
from mixvi.engine import MixVI, MixVIRunResult, MixVIState
from mixvi.family import IsotropicMixture
from mixvi.guide import AutoIsotropicMixture
from mixvi.importance import ImportanceSample, importance_resample, psis_log_weights
from mixvi.loop import DivergenceError

__version__ = "0.1.0"

__all__ = [
    "AutoIsotropicMixture",
    "DivergenceError",
    "ImportanceSample",
    "IsotropicMixture",
    "MixVI",
    "MixVIRunResult",
    "MixVIState",
    "component_summary",
    "importance_resample",
    "optim",
    "psis_khat",
    "psis_log_weights",
    "to_datatree",
]
