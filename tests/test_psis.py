"""Tests of mixvi.diagnostics.psis (PSIS and Pareto k-hat on arviz-stats) on synthetic log weights.

Pareto k of Gaussian importance ratios (derivation in docs/diagnostics.md): for p = N(0, I_d) and
q = N(0, s^2 I_d), log w = c + (1/2)(1/s^2 - 1)|z|^2 with |z|^2 / s^2 ~ chi^2_d under q, so
log w - c ~ Gamma(d/2, scale 1 - s^2) for s < 1. The tail index is
k = 1 - s^2 for every d; for d = 2 (chi^2_2 / 2 ~ Exp(1)) w is *exactly* Pareto with shape 1 - s^2,
so every exceedance distribution is exactly a GPD with that shape. For s^2 = 2, d = 2,
w / max w = exp(-|z|^2 / 4) ~ Uniform(0, 1): exactly GPD with k = -1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mixvi.diagnostics import psis as D


def _prior_adjusted(k: float, n: int) -> float:
    """The estimator's target: (M k + 10 * 0.5) / (M + 10) (weakly informative prior, M tail draws)."""
    m = D.tail_length(n)
    return (m * k + 5.0) / (m + 10.0)


# --------------------------------------------------------------------------------------------------
# the k-hat estimator on synthetic log weights
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0.2, 0.64])
def test_khat_exact_pareto(k):
    """k-hat of exactly Pareto(k) weights averages the prior-shrunk k over replicates."""
    # log w = k * Exp(1) + const is a Pareto(k) weight: exceedances are exactly GPD(k).
    rng = np.random.default_rng(1)
    n, reps = 100_000, 20
    ks = [D.khat_from_log_weights(k * rng.standard_exponential(n) - 50.0) for _ in range(reps)]
    # sd of one estimate ~ (1 + k) / sqrt(M), M = 949: se of the mean (1 + k) / sqrt(M reps) <= 0.012
    se = (1 + k) / math.sqrt(D.tail_length(n) * reps)
    assert abs(np.mean(ks) - _prior_adjusted(k, n)) < 3.5 * se


def test_khat_gaussian_ratios_match_theory():
    """k-hat of Gaussian importance ratios matches the tail index 1 - s^2 (d = 2) and -1 for a wider q."""
    rng = np.random.default_rng(2)
    n, reps = 100_000, 20

    def khats(s: float, d: int, nn: int = n) -> np.ndarray:
        out = []
        for _ in range(reps):
            z = s * rng.standard_normal((nn, d))
            log_w = -0.5 * np.sum(z**2, 1) + 0.5 * np.sum(z**2, 1) / s**2  # log N(z;0,I) - log N(z;0,s^2 I) + c
            out.append(D.khat_from_log_weights(log_w))
        return np.asarray(out)

    m = D.tail_length(n)
    # q narrower than p, d = 2: exact Pareto, k = 1 - s^2 = 0.64 (not 0.53)
    k06 = khats(0.6, 2)
    assert abs(k06.mean() - _prior_adjusted(0.64, n)) < 3.5 * 1.64 / math.sqrt(m * reps)
    # q almost p (s = 0.95): k = 1 - 0.9025 = 0.0975, close to 0
    k095 = khats(0.95, 2)
    assert abs(k095.mean() - _prior_adjusted(0.0975, n)) < 3.5 * 1.1 / math.sqrt(m * reps)
    # q wider than p (s^2 = 2), d = 2: w / max w ~ Uniform(0, 1), exactly GPD with k = -1. The
    # Zhang-Stephens estimator sits at the edge of its regular range there and is biased upwards by
    # ~0.03 (measured: -0.96 at M = 949), so the band is [-1.05, -0.9].
    kw = khats(math.sqrt(2.0), 2)
    assert -1.05 < kw.mean() < -0.9
    assert kw.max() < 0.5
    # d = 1, s = 0.6: same asymptotic k = 0.64, but log w ~ Gamma(1/2) carries a slowly varying
    # (log w)^(-1/2) factor, so moderate samples underestimate k: at S = 2000 one estimate has mean
    # ~0.585 and sd ~0.12 (the "k-hat ~ 0.53" often quoted for this case is one such draw).
    rng1 = np.random.default_rng(5)
    k1 = [D.khat_from_log_weights(0.5 * (1 / 0.36 - 1) * (0.6 * rng1.standard_normal(2000)) ** 2) for _ in range(400)]
    assert 0.55 < np.mean(k1) < 0.62  # se of the mean ~0.006


def test_psis_weights_equal_arviz_stats():
    """On finite log weights the smoothed log weights and k-hat are arviz-stats' psislw(-log_w, r_eff=1)."""
    from arviz_stats.base import array_stats

    rng = np.random.default_rng(3)
    for n in (100, 1000, 10_000):  # M = floor(S / 5) and floor(3 sqrt S)
        for log_w in (0.7 * rng.standard_exponential(n), rng.standard_normal(n), 2.0 * rng.standard_t(3, n)):
            res = D.psis_log_weights(log_w)
            lw_az, k_az = array_stats.psislw(-log_w, r_eff=1)
            np.testing.assert_allclose(res.log_weights, lw_az, rtol=0, atol=1e-12)
            assert res.khat == pytest.approx(float(k_az), abs=1e-12)
            assert np.exp(res.log_weights).sum() == pytest.approx(1.0, abs=1e-12)
            assert res.ess == pytest.approx(1.0 / np.sum(np.exp(2 * lw_az)), rel=1e-12)
            assert D.khat_from_log_weights(log_w) == res.khat


def test_psis_smoothing_keeps_order_and_bounds():
    """Smoothing replaces only the M largest weights, keeps their order and never exceeds the largest raw weight."""
    rng = np.random.default_rng(8)
    log_w = 0.8 * rng.standard_exponential(4000)
    res = D.psis_log_weights(log_w)
    raw = log_w - np.logaddexp.reduce(log_w)
    shift = res.log_weights - raw
    order = np.argsort(log_w)
    m = D.tail_length(4000)
    body = order[:-m]
    np.testing.assert_allclose(shift[body], shift[body][0], atol=1e-12)  # the body is only renormalised
    assert np.all(np.diff(res.log_weights[order[-m:]]) >= -1e-12)  # the tail stays sorted
    assert np.max(res.log_weights - shift[body][0]) <= raw.max() + 1e-12


def test_khat_heavy_and_light_tails():
    """Thresholds on known cases: p = q up to rounding gives -inf, a nearby q k < 0.5, a much narrower q k > 0.7."""
    rng = np.random.default_rng(6)
    z = rng.standard_normal(4000)  # draws from q = N(0, 1)
    log_q = stats.norm.logpdf(z)
    # p = q: the log weights differ only by the rounding of the float32 log densities
    lp32, lq32 = np.float32(log_q + 3.0), np.float32(log_q)
    assert D.psis_from_log_densities(lp32, lq32).khat == -math.inf
    assert D.khat_from_log_weights(np.zeros(100)) == -math.inf  # exactly constant weights
    assert D.khat_from_log_weights(stats.norm.logpdf(z, 0, 1.05) - log_q) < 0.5  # q slightly narrower than p
    # q = N(0, 0.1 I_2) much narrower than p = N(0, I_2): w is exactly Pareto with k = 1 - 0.1 = 0.9
    z2 = math.sqrt(0.1) * rng.standard_normal((40_000, 2))
    assert D.khat_from_log_weights(0.5 * (1 / 0.1 - 1) * np.sum(z2**2, 1)) > 0.7
    assert D.khat_from_log_weights(stats.norm.logpdf(z, 0, 0.7) - log_q) < 0.0  # q wider than p: bounded w


def test_khat_invariances_and_special_values():
    """k-hat ignores the scale and order of w; -inf entries are zero weights; NaN / +inf / too few draws raise."""
    rng = np.random.default_rng(4)
    log_w = 0.5 * rng.standard_exponential(5000)
    k = D.khat_from_log_weights(log_w)
    assert D.khat_from_log_weights(log_w + 123.0) == pytest.approx(k, abs=1e-9)  # scale of w is irrelevant
    assert D.khat_from_log_weights(rng.permutation(log_w)) == k
    assert D.khat_from_log_weights(log_w.reshape(50, 100)) == k  # any shape, flattened
    # zero weights (p = 0 where q > 0) are left out of the fit and stay zero after smoothing
    with_zeros = np.append(log_w, [-np.inf] * 10)
    res = D.psis_log_weights(with_zeros)
    assert res.khat == k
    assert np.all(res.log_weights[-10:] == -np.inf)
    np.testing.assert_array_equal(res.log_weights[:-10], D.psis_log_weights(log_w).log_weights)
    assert D.khat_from_log_weights(np.r_[0.0, 2000.0 * np.arange(1, 40.0)]) == math.inf  # tail spans > 700 nats
    assert D.khat_from_log_weights(np.r_[np.zeros(60), np.ones(40)]) == -math.inf  # two values: bounded
    assert D.khat_from_log_weights(log_w, atol=np.ptp(log_w)) == -math.inf  # constant within atol
    tail_span = log_w.max() - np.sort(log_w)[-D.tail_length(5000) - 1]
    assert D.khat_from_log_weights(log_w, atol=1.01 * tail_span) == k  # atol is compared with the whole range
    with pytest.raises(ValueError, match="NaN"):
        D.khat_from_log_weights(np.append(log_w, np.nan))
    with pytest.raises(ValueError, match=r"\+inf"):
        D.khat_from_log_weights(np.append(log_w, np.inf))
    with pytest.raises(ValueError, match="at least 30"):
        D.khat_from_log_weights(log_w[:29])
    with pytest.raises(ValueError, match="29 finite"):
        D.khat_from_log_weights(np.append(log_w[:29], [-np.inf] * 100))
    assert math.isfinite(D.khat_from_log_weights(log_w[:30]))


# --------------------------------------------------------------------------------------------------
# arviz-stats imported on use
# --------------------------------------------------------------------------------------------------
_FRESH_PROCESS = """
import sys
import jax, numpyro, numpyro.distributions as dist
import mixvi
from mixvi.diagnostics import psis
heavy = ("arviz_stats", "arviz_base", "xarray", "pandas")
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]

def model():
    numpyro.sample("x", dist.Gumbel(0.0, 1.0))  # skewed: the importance weights are not flat

engine = mixvi.MixVI(model, mixvi.AutoIsotropicMixture(model, n_components=2, metric="isotropic"))
engine.run(jax.random.PRNGKey(0), 300, progress_bar=False)
assert len(psis._BACKGROUND_IMPORT) == 1 and "arviz_stats.base" in sys.modules
psis._BACKGROUND_IMPORT[0].join()
psis.import_in_background()
assert len(psis._BACKGROUND_IMPORT) == 1  # once per process
print(engine.last_run_khat)
"""


def test_import_mixvi_leaves_arviz_stats_to_the_first_khat():
    """``import mixvi`` imports neither arviz-stats nor xarray nor pandas (about 0.7 s); ``MixVI.run`` starts
    importing arviz-stats on a thread while XLA compiles, once per process, and its k-hat is computed."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    khat = float(proc.stdout.strip().splitlines()[-1])
    assert math.isfinite(khat) and khat < 0.7  # a one-dimensional target fitted by two components
