"""The diagnostics used the way NumPyro users use them, against exact answers.

* ``az.loo(mixvi.to_datatree(...))`` with no options: the default tree holds PSIS-resampled draws, so
  its LOO is the posterior's (checked against the closed-form LOO of a conjugate normal model), or,
  when k-hat > 0.7, the draws of q with a warning that names ``reweight`` and k-hat. The draws are
  split into 4 pseudo-chains, so ArviZ's R-hat is defined.
* Models with ``numpyro.plate(..., subsample_size=...)``: log p is the full-data log density (checked
  against the closed-form logistic-regression log joint), so k-hat is small for a good fit.
* A NumPyro ``AutoGuideList`` holding the mixture: log q is the sum of its parts' log densities
  (checked in closed form), the other parts are named, and parts without a density are refused.

Conjugate model: y_i ~ N(mu, 1), mu ~ N(0, 10^2). The posterior given any subset of n' points is
N(v sum y, v) with v = 1 / (1/100 + n'), so the exact LOO predictive of y_i is N(m_-i, 1 + v_-i).
"""

from __future__ import annotations

import math
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.autoguide import AutoDelta, AutoGuideList, AutoNormal
from numpyro.infer.initialization import init_to_value
from scipy import stats

import mixvi
from mixvi import diagnostics as D

PRIOR_SD = 10.0
Y = np.round(np.random.default_rng(3).normal(0.7, 1.0, 20), 3).astype(np.float32)


def conjugate(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _posterior(y: np.ndarray) -> tuple[float, float]:
    v = 1.0 / (1.0 / PRIOR_SD**2 + len(y))
    return v * float(np.sum(y, dtype=np.float64)), v


def exact_loo(y: np.ndarray) -> float:
    """sum_i log p(y_i | y_-i), in closed form."""
    y = np.asarray(y, np.float64)
    v = 1.0 / (1.0 / PRIOR_SD**2 + len(y) - 1)
    m = v * (y.sum() - y)
    return float(stats.norm.logpdf(y, m, np.sqrt(1.0 + v)).sum())


@pytest.fixture(scope="module")
def conj_guide():
    guide = mixvi.AutoIsotropicMixture(
        conjugate, n_components=2, metric="isotropic", init_loc_fn=init_to_value(values={"mu": 0.0})
    )
    guide.setup(jax.random.PRNGKey(0), Y)
    return guide


def _wide_tail_params() -> dict:
    """q = (1/2) N(m, v) + (1/2) N(m, 100 v): the posterior plus a component 10 times wider. p/q <= 2,
    so k-hat is small, but half of q's draws lie in a tail the posterior does not have."""
    m, v = _posterior(Y)
    s = math.sqrt(v)
    return {"auto_locs": jnp.array([[m], [m]], jnp.float32), "auto_scales": jnp.array([s, 10 * s], jnp.float32)}


# --------------------------------------------------------------------------------------------------
# to_datatree: importance-corrected by default, pseudo-chains
# --------------------------------------------------------------------------------------------------
def test_default_tree_loo_is_the_posterior_loo(conj_guide):
    """az.loo on the default export matches the closed-form LOO within 0.15 nats; the draws of q are
    far off (the wide component), which is what the default no longer exports."""
    params = _wide_tail_params()
    exact = exact_loo(Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # k-hat is small: no fallback warning
        dt = mixvi.to_datatree(conj_guide, params, Y, rng_key=jax.random.PRNGKey(1), num_samples=2000)
    loo = az.loo(dt)
    assert abs(loo.elpd - exact) < 0.15, (loo.elpd, exact)
    assert dt.attrs["reweight"] == "psis" and dt.attrs["pareto_khat"] < 0.5
    assert dt.attrs["num_proposals"] == 8000
    raw = mixvi.to_datatree(conj_guide, params, Y, rng_key=jax.random.PRNGKey(1), num_samples=2000, reweight="none")
    assert raw.attrs["reweight"] == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's Pareto-k warnings on the tail draws
        assert az.loo(raw).elpd < exact - 1.0
    # the resampled draws follow the posterior N(m, v)
    m, v = _posterior(Y)
    mu = dt.posterior["mu"].to_numpy().reshape(-1)
    assert abs(mu.mean() - m) < 4 * math.sqrt(v / 2000) and abs(mu.std() / math.sqrt(v) - 1) < 0.1


def test_default_tree_has_rhat_and_ess(conj_guide):
    """The draws come in 4 pseudo-chains: ArviZ's R-hat is about 1 and ESS is finite; one chain warns."""
    dt = mixvi.to_datatree(conj_guide, _wide_tail_params(), Y, rng_key=jax.random.PRNGKey(2), num_samples=1000)
    assert dt.posterior.sizes["chain"] == 4 and dt.posterior.sizes["draw"] == 250
    table = az.summary(dt)
    assert np.isfinite(table.loc["mu", "r_hat"]) and abs(table.loc["mu", "r_hat"] - 1) < 0.03
    assert np.isfinite(table.loc["mu", "ess_bulk"]) and table.loc["mu", "ess_bulk"] > 300
    with pytest.warns(UserWarning, match="R-hat"):
        one = mixvi.to_datatree(
            conj_guide, _wide_tail_params(), Y, rng_key=jax.random.PRNGKey(2), num_samples=1000, num_chains=1
        )
    assert one.posterior.sizes["chain"] == 1


def test_bad_khat_exports_q_and_names_reweight(conj_guide):
    """k-hat > 0.7: the default tree holds the draws of q and warns with `reweight` and k-hat; 'raise'
    raises; reweight='none' is quiet and still reports k-hat; unknown options name the argument."""
    m, v = _posterior(Y)
    # two narrow components 2 sd either side of the posterior mode: q misses the mode, p/q is heavy-tailed
    s = math.sqrt(v)
    narrow = {"auto_locs": jnp.array([[m - 2 * s], [m + 2 * s]], jnp.float32), "auto_scales": jnp.full((2,), 0.3 * s)}
    key = jax.random.PRNGKey(1)  # k-hat 1.18 (0.74-1.18 over keys 0-5)
    with pytest.warns(RuntimeWarning, match=r"k-hat = \d\.\d\d > 0.7.*reweight='psis'.*reweight='none'") as rec:
        dt = mixvi.to_datatree(conj_guide, narrow, Y, rng_key=key, num_samples=400)
    assert dt.attrs["reweight"] == "none" and dt.attrs["pareto_khat"] > 0.7
    assert f"{dt.attrs['pareto_khat']:.2f}" in str(rec[0].message)
    assert "num_proposals" not in dt.attrs
    with pytest.raises(ValueError, match="reweight='none'"):
        mixvi.to_datatree(conj_guide, narrow, Y, rng_key=key, num_samples=400, on_bad_khat="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = mixvi.to_datatree(conj_guide, narrow, Y, rng_key=key, num_samples=400, reweight="none")
        legacy = mixvi.to_datatree(conj_guide, narrow, Y, rng_key=key, num_samples=400, reweight=None)
    assert quiet.attrs["pareto_khat"] > 0.7
    np.testing.assert_array_equal(quiet.posterior["mu"], legacy.posterior["mu"])
    with pytest.warns(RuntimeWarning, match="k-hat"):
        forced = mixvi.to_datatree(conj_guide, narrow, Y, rng_key=key, num_samples=400, reweight="psis")
    assert forced.attrs["reweight"] == "psis"
    with pytest.raises(ValueError, match="reweight must be 'auto'"):
        mixvi.to_datatree(conj_guide, narrow, Y, rng_key=key, reweight="is")
    with pytest.raises(ValueError, match="on_bad_khat"):
        mixvi.to_datatree(conj_guide, narrow, Y, rng_key=key, on_bad_khat="loud")
    with pytest.raises(ValueError, match="full_data"):
        mixvi.psis_khat(conj_guide, narrow, Y, rng_key=key, full_data="yes")


SCHOOL_Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOL_SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
# az.loo of NUTS on this model: 4 runs of 20000 draws gave -30.70, -30.73, -30.73, -30.71 (se of elpd 1.46)
NUTS_LOO = -30.72


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        theta_raw = numpyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_raw)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


@pytest.mark.slow
def test_eight_schools_default_loo_matches_nuts():
    """Eight schools (non-centred), 10 isotropic components, 3000 steps: az.loo of the default export is
    within 0.3 nats of NUTS for every key, while the draws of q can be off by far more (a single tail
    draw of q decides the LOO of some school; -218 for key 2 when this test was written)."""
    guide = mixvi.AutoIsotropicMixture(eight_schools, n_components=10, metric="isotropic")
    result = mixvi.MixVI(eight_schools, guide).run(
        jax.random.PRNGKey(0), 3000, SCHOOL_SIGMA, SCHOOL_Y, progress_bar=False
    )
    raw = []
    for k in range(3):
        key = jax.random.PRNGKey(k)
        dt = mixvi.to_datatree(guide, result.params, SCHOOL_SIGMA, SCHOOL_Y, rng_key=key, num_samples=2000)
        assert dt.attrs["reweight"] == "psis"
        assert abs(az.loo(dt).elpd - NUTS_LOO) < 0.3
        table = az.summary(dt, var_names=["mu", "tau"])
        assert np.all(np.abs(table["r_hat"] - 1) < 0.03)
        q_tree = mixvi.to_datatree(
            guide, result.params, SCHOOL_SIGMA, SCHOOL_Y, rng_key=key, num_samples=2000, reweight="none"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw.append(az.loo(q_tree).elpd)
    assert max(abs(r - NUTS_LOO) for r in raw) > 1.0  # what the default guards against


# --------------------------------------------------------------------------------------------------
# subsampled models: full data by default
# --------------------------------------------------------------------------------------------------
N_DATA, DIM, BATCH = 1000, 3, 50
_rng = np.random.default_rng(0)
X_LR = _rng.normal(size=(N_DATA, DIM)).astype(np.float32)
Y_LR = (_rng.uniform(size=N_DATA) < 1 / (1 + np.exp(-X_LR @ np.array([1.0, -0.5, 0.25])))).astype(np.float32)


def logreg(x, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, 5.0).expand([DIM]).to_event(1))
    with numpyro.plate("data", x.shape[0], subsample_size=BATCH) as idx:
        numpyro.sample("y", dist.Bernoulli(logits=x[idx] @ beta), obs=y[idx])


def _laplace() -> tuple[np.ndarray, np.ndarray]:
    """Mode and inverse Hessian of the full-data log posterior (Newton's method, float64)."""
    x, y = X_LR.astype(np.float64), Y_LR.astype(np.float64)
    b = np.zeros(DIM)
    for _ in range(25):
        p = 1 / (1 + np.exp(-x @ b))
        h = (x * (p * (1 - p))[:, None]).T @ x + np.eye(DIM) / 25
        b = b + np.linalg.solve(h, x.T @ (y - p) - b / 25)
    return b, np.linalg.inv(h)


def _logreg_log_joint(beta: np.ndarray) -> np.ndarray:
    """Full-data log joint at draws beta (S, D), in closed form."""
    logits = np.asarray(beta, np.float64) @ X_LR.T.astype(np.float64)
    loglik = Y_LR * logits - np.logaddexp(0.0, logits)
    return stats.norm.logpdf(beta, 0, 5).sum(-1) + loglik.sum(-1)


def test_subsampled_model_uses_full_data():
    """A Laplace-fitted q (one component, dense metric = the Laplace covariance) of a logistic regression
    whose plate subsamples 50 of 1000 points: log p is the full-data log joint, k-hat is small, and the
    export's log-likelihood has one column per data point. One minibatch gives another log p."""
    mode, cov = _laplace()
    sig = np.linalg.det(cov) ** (1 / (2 * DIM))
    params = {
        "auto_locs": jnp.asarray(mode[None], jnp.float32),
        "auto_scales": jnp.array([sig], jnp.float32),
        "auto_metric_tril": jnp.asarray(np.linalg.cholesky(cov) / sig, jnp.float32),
    }
    guide = mixvi.AutoIsotropicMixture(
        logreg, n_components=1, metric="dense", init_loc_fn=init_to_value(values={"beta": jnp.zeros(DIM)})
    )
    x, y = jnp.asarray(X_LR), jnp.asarray(Y_LR)
    guide.setup(jax.random.PRNGKey(0), x, y)
    key = jax.random.PRNGKey(0)
    khat = mixvi.psis_khat(guide, params, x, y, rng_key=key)
    assert khat < 0.5  # a good fit on the full data (one minibatch gives k-hat 4.7 with this key)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        dt = mixvi.to_datatree(guide, params, x, y, rng_key=key, num_samples=400, reweight="none")
    beta = dt.posterior["beta"].to_numpy().reshape(-1, DIM)
    np.testing.assert_allclose(dt.sample_stats["log_p"].to_numpy().reshape(-1), _logreg_log_joint(beta), rtol=2e-5)
    assert dt.log_likelihood["y"].shape == (4, 100, N_DATA)
    np.testing.assert_allclose(dt.observed_data["y"], Y_LR)
    assert dt.attrs["pareto_khat"] < 0.7
    mini = mixvi.to_datatree(guide, params, x, y, rng_key=key, num_samples=400, reweight="none", full_data=False)
    assert mini.log_likelihood["y"].shape == (4, 100, BATCH)
    beta = mini.posterior["beta"].to_numpy().reshape(-1, DIM)
    assert np.max(np.abs(mini.sample_stats["log_p"].to_numpy().reshape(-1) - _logreg_log_joint(beta))) > 1.0


# --------------------------------------------------------------------------------------------------
# AutoGuideList with a mixture part
# --------------------------------------------------------------------------------------------------
def two_blocks():
    numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("s", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))


def _mixture_part(model):
    return mixvi.AutoIsotropicMixture(
        handlers.block(model, expose=["mu"]),
        n_components=2,
        metric="isotropic",
        init_loc_fn=init_to_value(values={"mu": jnp.zeros(2)}),
    )


def _guide_list(second) -> AutoGuideList:
    guide = AutoGuideList(two_blocks)
    guide.append(_mixture_part(two_blocks))
    if second is not None:
        guide.append(second(handlers.block(two_blocks, expose=["s"])))
    handlers.seed(guide, jax.random.PRNGKey(0))()  # what SVI.init does: set the parts up
    return guide


@pytest.fixture(scope="module")
def guide_list():
    return _guide_list(AutoNormal)


def _list_params(s_scale: float) -> dict:
    """Mixture part: both components N(0, I) (= the prior of mu); AutoNormal part: log s ~ N(0, s_scale^2)."""
    return {
        "auto_locs": jnp.zeros((2, 2)),
        "auto_scales": jnp.ones(2),
        "s_auto_loc": jnp.zeros(2),
        "s_auto_scale": jnp.full(2, s_scale),
    }


def test_guide_list_log_q_is_the_sum_of_parts(guide_list):
    """log q of a guide list = log q(mixture) + log q(AutoNormal), log p the model's, both on the
    unconstrained space (closed forms); the other part is named in the attrs."""
    params = _list_params(0.6)
    dt = mixvi.to_datatree(guide_list, params, rng_key=jax.random.PRNGKey(4), num_samples=400, reweight="none")
    mu = dt.posterior["mu"].to_numpy().reshape(-1, 2).astype(np.float64)
    u = np.log(dt.posterior["s"].to_numpy().reshape(-1, 2).astype(np.float64))  # unconstrained log s
    log_q = stats.norm.logpdf(mu).sum(-1) + stats.norm.logpdf(u, 0, 0.6).sum(-1)
    log_p = stats.norm.logpdf(mu).sum(-1) + stats.norm.logpdf(u).sum(-1)  # LogNormal(0, 1) with Jacobian s
    np.testing.assert_allclose(dt.sample_stats["log_q"].to_numpy().reshape(-1), log_q, atol=1e-4)
    np.testing.assert_allclose(dt.sample_stats["log_p"].to_numpy().reshape(-1), log_p, atol=1e-4)
    assert dt.attrs["other_parts"] == "[1] AutoNormal(prefix='auto', sites ['s'])"
    assert dt.attrs["mixture_prefix"] == "auto" and "AutoGuideList" in dt.attrs["inference_method"]
    assert dt.attrs["pareto_khat"] > 0.3


def test_guide_list_khat_is_the_joint_khat(guide_list):
    """q = p in every part gives k-hat -inf; an AutoNormal part with sd 0.6 on a 2-D N(0, I) block gives
    exactly Pareto weights with k = 1 - 0.6^2 = 0.64 (the mixture part is exact)."""
    key = jax.random.PRNGKey(5)
    assert mixvi.psis_khat(guide_list, _list_params(1.0), rng_key=key) == -math.inf
    n = 40_000
    khat = mixvi.psis_khat(guide_list, _list_params(0.6), rng_key=key, num_samples=n)
    m = D.tail_length(n)
    assert abs(khat - (m * 0.64 + 5) / (m + 10)) < 3.5 * 1.64 / math.sqrt(m)


def test_guide_list_component_summary_and_resample(guide_list):
    """component_summary describes the mixture part (weights of the whole list) and names the others;
    importance_resample returns every part's sites; plot_components draws q of the mixture part only."""
    params = _list_params(1.0) | {"auto_locs": jnp.array([[-1.0, 0.0], [1.0, 0.0]])}
    table = mixvi.component_summary(guide_list, params, num_samples=4000)
    assert list(table.index) == [0, 1] and table.attrs["other_parts"] == ["[1] AutoNormal(prefix='auto', sites ['s'])"]
    # p(mu) = N(0, I) is symmetric between the two components: exact masses 1/2
    assert np.all(np.abs(table["mass"].to_numpy() - 0.5) < 4 * table["mass_se"].to_numpy())
    res = mixvi.importance_resample(guide_list, params, rng_key=jax.random.PRNGKey(6), num_samples=200)
    assert res.samples["mu"].shape == (200, 2) and res.samples["s"].shape == (200, 2) and res.latent.shape == (200, 2)
    assert bool(jnp.all(res.samples["s"] > 0))
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    D.plot_components(guide_list, params, ax=ax, show_target=False, grid_size=20)
    assert len(ax.patches) == 4
    with pytest.raises(ValueError, match="show_target=False"):
        D.plot_components(guide_list, params, ax=ax, grid_size=20)


def test_guide_list_errors_name_the_part():
    """A point-mass part, a list without (or with two) mixture parts, a site in no part, missing params and
    a list not set up each raise an error that names the problem."""
    params = _list_params(1.0)
    with pytest.raises(ValueError, match=r"part \[1\] AutoDelta.*point mass on \['s'\].*AutoNormal"):
        mixvi.psis_khat(_guide_list(AutoDelta), params | {"s_auto_loc": jnp.ones(2)}, rng_key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"sites \['s'\] are in no part"):
        mixvi.to_datatree(_guide_list(None), params, rng_key=jax.random.PRNGKey(0))
    only_normal = AutoGuideList(two_blocks)
    only_normal.append(AutoNormal(two_blocks))
    handlers.seed(only_normal, jax.random.PRNGKey(0))()
    with pytest.raises(ValueError, match="no AutoIsotropicMixture part.*AutoNormal"):
        mixvi.component_summary(only_normal, params)
    with pytest.raises(KeyError, match="s_auto_scale"):
        mixvi.psis_khat(_guide_list(AutoNormal), {k: v for k, v in params.items() if k != "s_auto_scale"},
                        rng_key=jax.random.PRNGKey(0))  # fmt: skip
    fresh = AutoGuideList(two_blocks)
    fresh.append(_mixture_part(two_blocks))
    with pytest.raises(RuntimeError, match="svi.init"):
        mixvi.psis_khat(fresh, params, rng_key=jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="AutoGuideList"):
        mixvi.psis_khat(AutoNormal(two_blocks), params, rng_key=jax.random.PRNGKey(0))
