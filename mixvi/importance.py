"""Importance sampling with the fitted mixture: kept as an import path, the code lives in :mod:`mixvi.diagnostics`.

``from mixvi.importance import psis_log_weights`` (and the names below) keep working; new code can
import them from :mod:`mixvi.diagnostics`.
"""

from mixvi.diagnostics.importance import KHAT_LIMIT, ImportanceSample, importance_resample, psis_khat
from mixvi.diagnostics.psis import PsisResult, khat_from_log_weights, psis_log_weights

__all__ = [
    "KHAT_LIMIT",
    "ImportanceSample",
    "PsisResult",
    "importance_resample",
    "khat_from_log_weights",
    "psis_khat",
    "psis_log_weights",
]
