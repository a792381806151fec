"""Pareto-smoothed importance sampling (PSIS) and the Pareto k-hat diagnostic.

A thin wrapper over :mod:`arviz_stats` (``array_stats.psislw``): it fixes the conventions that matter
for importance weights of a variational approximation q against a target p,

    log w_s = log p(z_s) - log q(z_s),   z_s ~ q iid,   s = 1..S,

and turns the cases arviz-stats cannot fit into defined values:

* **sign and tail**: ``psislw`` follows the leave-one-out convention and smooths the log weights
  ``-ary`` (it is given log-likelihood values); this module passes ``-log_w``, so the right tail of w
  (the large ratios p/q) is the one fitted and smoothed.
* **r_eff = 1**: the draws from q are independent, so the tail length is
  M = floor(3 sqrt(S)) for S > 225 and floor(S / 5) otherwise (:func:`tail_length`).
* **zero weights**: log w = -inf (q puts mass where p is zero) is excluded from the fit (S counts the
  finite log weights only) and stays -inf, i.e. weight zero, in the smoothed weights.
* **constant or bounded weights**: when the finite log weights span at most ``atol`` nats, when the
  M largest are equal, or when the tail takes too few distinct values for a continuous fit, the
  weights are bounded and k-hat is ``-inf`` (never NaN); the smoothed weights are then the raw ones.
* **underflow**: when the tail spans more than ~700 nats its lower part underflows next to the
  maximum; that is an extremely heavy tail and k-hat is ``+inf``.
* **checks**: NaN or +inf log weights and fewer than :data:`MIN_DRAWS` finite ones raise
  ``ValueError``.

Every k-hat of mixvi (``psis_khat``, ``importance_resample``, ``component_summary``) comes from
:func:`psis_log_weights`, so the same weights give the same k-hat everywhere.

The k-hat estimator is the generalized Pareto fit of Zhang and Stephens with the weakly informative
prior of Vehtari et al., as implemented in arviz-stats. 1/k is the tail index of the weights:
E[w^r] is finite for r < 1/k. k-hat < 0.5: good; 0.5-0.7: usable after smoothing; > 0.7: the
importance ratios, and the approximation q they check, are not reliable.

References
----------
Vehtari, Simpson, Gelman, Yao, Gabry, "Pareto smoothed importance sampling", Journal of Machine
Learning Research 25(72), 2024 (arXiv:1507.02646).
Yao, Vehtari, Simpson, Gelman, "Yes, but did it work?: Evaluating variational inference",
ICML 2018 (arXiv:1802.02538).
Zhang, Stephens, "A new and efficient estimation method for the generalized Pareto distribution",
Technometrics 51(3), 2009.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any, NamedTuple

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "MIN_DRAWS",
    "PsisResult",
    "khat_from_log_weights",
    "psis_from_log_densities",
    "psis_log_weights",
    "rounding_tolerance",
    "tail_length",
]


def _array_stats() -> Any:
    """arviz_stats' array layer, imported on first use: with xarray, pandas and scipy.stats it takes about
    0.7 s to import (on a 2-core CPU), which ``import mixvi`` does not pay; :func:`import_in_background`
    lets ``MixVI.run`` pay it while XLA compiles."""
    from arviz_stats.base import array_stats

    return array_stats


_BACKGROUND_IMPORT: list[threading.Thread] = []


def import_in_background() -> None:
    """Start importing arviz_stats on a daemon thread (once per process, and not when it is imported
    already). ``MixVI.run`` calls it before its loop is traced and compiled: XLA's compilation releases the
    GIL, so the import costs the run next to nothing, where its first k-hat would otherwise wait for it. An
    import of the same module from another thread waits for this one (Python's per-module import lock)."""
    if _BACKGROUND_IMPORT or "arviz_stats.base" in sys.modules:
        return
    thread = threading.Thread(target=_array_stats, name="mixvi-import-arviz-stats", daemon=True)
    _BACKGROUND_IMPORT.append(thread)
    try:
        thread.start()
    except RuntimeError:  # no threads here (a sandbox, interpreter shutdown): the first k-hat imports it
        pass

#: Fewest finite log weights a k-hat needs, so that M = floor(S / 5) >= 6 tail draws. (arviz-stats
#: accepts M = 5, but its fit then takes the first quartile of the exceedances as their minimum and
#: never succeeds.)
MIN_DRAWS = 30

# a tail whose quartile lies this many nats below its maximum underflows in exp (float64: ~708)
_UNDERFLOW_NATS = -math.log(np.finfo(np.float64).tiny)


FLAT_ESS = 0.99
"""Relative ESS of the smoothed weights at or above which their k-hat means nothing: the weights are
nearly flat (their relative variance at most 1 %, q = p to a few per cent) and the tail fit sees float32
rounding (used by ``fit_check`` and by ``MixVI.run``'s check). It was 0.9 until 2026-12-04, which let a
banana fit whose sd along the arms was 0.66x the true one pass as good: its weights (ESS / S 0.904) were
not flat, and their k-hat (0.81) was right."""


class PsisResult(NamedTuple):
    """Pareto-smoothed importance weights and their diagnostics.

    Attributes
    ----------
    log_weights : numpy.ndarray
        Smoothed log weights, normalised so that ``exp(log_weights).sum() == 1``; flattened to (S,),
        -inf where the input was -inf.
    khat : float
        Pareto k-hat of the weights' right tail (-inf for bounded weights, +inf for a tail that
        underflows).
    ess : float
        Effective sample size 1 / sum(w^2) of the normalised smoothed weights.
    """

    log_weights: np.ndarray
    khat: float
    ess: float


def tail_length(num_draws: int) -> int:
    """Number M of largest weights the generalized Pareto distribution is fitted to.

    Parameters
    ----------
    num_draws : int
        Number S of independent draws with finite log weight (relative efficiency 1).

    Returns
    -------
    int
        M = floor(3 sqrt(S)) if S > 225, else floor(S / 5): the rule arviz-stats applies.
    """
    s = int(num_draws)
    return math.floor(3.0 * math.sqrt(s)) if s > 225 else s // 5


def rounding_tolerance(log_p: Any, log_q: Any) -> float:
    """Spread of log p - log q that float rounding alone can produce.

    Parameters
    ----------
    log_p, log_q : array_like
        Log target and log proposal densities at the same draws, in the precision they were
        computed in.

    Returns
    -------
    float
        64 eps (max|log p| + max|log q| + 1), with eps the machine epsilon of their dtype (finite
        entries only): log weights spanning less than this are constant up to rounding.
    """
    log_p, log_q = np.asarray(log_p), np.asarray(log_q)
    dtype = np.result_type(log_p.dtype, log_q.dtype)
    eps = float(np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps)

    def largest(a: np.ndarray) -> float:
        a = np.abs(a[np.isfinite(a)].astype(np.float64))
        return float(a.max()) if a.size else 0.0

    return 64.0 * eps * (largest(log_p) + largest(log_q) + 1.0)


def _check_log_weights(log_w: Any) -> np.ndarray:
    lw = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if np.isnan(lw).any():
        raise ValueError("log weights contain NaN (the target or proposal log density is NaN at some draws)")
    if np.isposinf(lw).any():
        raise ValueError("log weights contain +inf (the target density is infinite, or q is zero, at some draws)")
    num_finite = int(np.isfinite(lw).sum())
    if num_finite < MIN_DRAWS:
        raise ValueError(
            f"need at least {MIN_DRAWS} draws with finite log weight to fit the Pareto tail (M = S / 5 >= 6); "
            f"got {lw.size} draws, {num_finite} finite"
        )
    return lw


def psis_log_weights(log_w: Any, *, atol: float = 0.0) -> PsisResult:
    """Pareto-smooth importance log weights and compute their Pareto k-hat.

    The M = :func:`tail_length` (S) largest weights are replaced by the expected order statistics of
    a generalized Pareto fit to their exceedances over the (M+1)-th largest, truncated at the largest
    raw weight; the weights are then normalised. This is ``arviz_stats``' ``psislw(-log_w, r_eff=1)``
    on the finite entries, with the conventions of the module docstring.

    Parameters
    ----------
    log_w : array_like
        Log importance weights log p(z_s) - log q(z_s) at iid draws z_s ~ q, any shape (flattened);
        an additive constant is irrelevant. Entries may be -inf (weight zero).
    atol : float, default 0.0
        Finite log weights whose range max - min is at most ``atol`` are treated as constant: k-hat
        is -inf and the weights are not smoothed. :func:`psis_from_log_densities` sets it to the
        rounding error of log p - log q.

    Returns
    -------
    PsisResult
        Normalised smoothed log weights (S,), k-hat and effective sample size.

    Raises
    ------
    ValueError
        If a log weight is NaN or +inf, or fewer than :data:`MIN_DRAWS` are finite.
    """
    lw = _check_log_weights(log_w)
    finite = np.isfinite(lw)
    x = lw[finite]
    m = tail_length(x.size)
    top = np.sort(x[np.argpartition(x, x.size - m - 1)[x.size - m - 1 :]])  # ascending: cutoff, then M tail values
    tail_max, quartile = top[-1], top[1 + int(m / 4 + 0.5) - 1]
    if tail_max - np.min(x) <= atol or top[1] == tail_max:
        smoothed, khat = x - logsumexp(x), -math.inf  # constant, or bounded with an atom at the maximum
    else:
        with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
            smoothed, k = _array_stats().psislw(-x, r_eff=1.0)
        khat = float(k)
        if math.isnan(khat):  # no fit: the smallest quarter of the exceedances tie (few distinct values, or underflow)
            khat = math.inf if tail_max - quartile > _UNDERFLOW_NATS else -math.inf
    out = np.full(lw.shape, -np.inf)
    out[finite] = smoothed
    return PsisResult(out, khat, float(1.0 / np.sum(np.exp(2.0 * smoothed))))


def khat_from_log_weights(log_w: Any, *, atol: float = 0.0) -> float:
    """Pareto k-hat of importance weights given their logarithms.

    Parameters
    ----------
    log_w : array_like
        Log importance weights, any shape (flattened); -inf entries (weight zero) are allowed.
    atol : float, default 0.0
        Log weights spanning at most ``atol`` nats count as constant (k-hat -inf).

    Returns
    -------
    float
        ``psis_log_weights(log_w, atol=atol).khat``: -inf for constant or bounded weights, +inf for
        a tail spanning more than ~700 nats, else the generalized Pareto shape estimate.

    Raises
    ------
    ValueError
        If a log weight is NaN or +inf, or fewer than :data:`MIN_DRAWS` are finite.
    """
    return psis_log_weights(log_w, atol=atol).khat


def psis_from_log_densities(log_p: Any, log_q: Any) -> PsisResult:
    """PSIS of the ratios p/q at draws from q, given log p and log q there.

    Parameters
    ----------
    log_p : array_like
        Unnormalised log target density at the draws, shape (S,).
    log_q : array_like
        Log proposal density at the same draws, shape (S,).

    Returns
    -------
    PsisResult
        ``psis_log_weights(log_p - log_q, atol=rounding_tolerance(log_p, log_q))``: q = p up to a
        constant, within float rounding, gives k-hat -inf.

    Raises
    ------
    ValueError
        If the log weights are NaN or +inf somewhere, or fewer than :data:`MIN_DRAWS` are finite.
    """
    log_w = np.asarray(log_p, np.float64) - np.asarray(log_q, np.float64)
    return psis_log_weights(log_w, atol=rounding_tolerance(log_p, log_q))
