"""``python -m benchmarks.extensions``: its metric helpers (exact KL, closed-form mode mass, weighted summaries, the
eight-schools evidence and latent layout) and a smoke run of ``main`` at tiny sizes (no timing asserts)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import ndtr
from scipy.stats import multivariate_normal

import mixvi
from benchmarks import extensions as ex
from benchmarks import metrics as M
from benchmarks.extensions import claims, fitting, models, runs, settings
from benchmarks.extensions import report as ext_report


def test_gaussian_kl_closed_form():
    # 1-D: KL(N(m0, s0^2) || N(m1, s1^2)) = log(s1/s0) + (s0^2 + (m0 - m1)^2) / (2 s1^2) - 1/2
    expected = math.log(2.0 / 0.5) + (0.25 + 1.0) / 8.0 - 0.5
    assert M.gaussian_kl([1.0], [0.25], [0.0], [4.0]) == pytest.approx(expected, rel=1e-12)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    cov_q = a @ a.T + np.eye(3)
    mean_q, mean_p, var_p = rng.normal(size=3), rng.normal(size=3), np.array([0.5, 2.0, 3.0])
    assert M.gaussian_kl(mean_p, var_p, mean_p, np.diag(var_p)) == pytest.approx(0.0, abs=1e-12)
    # Monte-Carlo check of the full-covariance q against a diagonal p
    x = rng.multivariate_normal(mean_q, cov_q, size=400_000)
    mc = np.mean(multivariate_normal(mean_q, cov_q).logpdf(x) - multivariate_normal(mean_p, np.diag(var_p)).logpdf(x))
    assert M.gaussian_kl(mean_q, cov_q, mean_p, var_p) == pytest.approx(mc, rel=0.02)


def test_halfspace_mass_matches_sampling():
    locs = jnp.array([[-1.0, 0.5], [2.0, -1.0], [0.3, 0.0]])
    scales = jnp.array([0.7, 1.5, 0.4])
    weights = jnp.array([0.2, 0.5, 0.3])
    metric = jnp.array([2.0, 0.5])
    q = mixvi.IsotropicMixture(locs, scales, weights, metric)
    x = np.asarray(q.sample(jax.random.PRNGKey(0), (200_000,)))
    for axis in (0, 1):
        exact = M.halfspace_mass(locs, scales, weights, metric, axis=axis)
        assert exact == pytest.approx(np.mean(x[:, axis] > 0), abs=5e-3)
    # uniform weights, no metric: the mean of Phi(m_i / sigma_i)
    assert M.halfspace_mass(locs, scales) == pytest.approx(np.mean(ndtr(np.array([-1 / 0.7, 2 / 1.5, 0.3 / 0.4]))))


def test_bimodal_truth_and_model():
    truth = models.bimodal_truth()
    assert truth["mass_right"] == pytest.approx(0.7 * ndtr(3.0) + 0.3 * ndtr(-3.0), rel=1e-12)
    np.testing.assert_allclose(truth["mean"], [1.2, 0.0])
    np.testing.assert_allclose(truth["sd"], [math.sqrt(1 + 9 - 1.44), 1.0])
    # the model's potential is the normalised -log p
    guide = mixvi.AutoIsotropicMixture(models.bimodal_model, n_components=1)
    guide.setup(jax.random.PRNGKey(0))
    v = guide.potential_fn()
    x = jnp.array([0.3, -1.2])
    p = 0.3 * multivariate_normal([-3, 0]).pdf(np.asarray(x)) + 0.7 * multivariate_normal([3, 0]).pdf(np.asarray(x))
    assert float(v(x, jax.random.PRNGKey(0))) == pytest.approx(-math.log(p), rel=1e-5)


def test_family_floor_kl():
    sd = np.logspace(-2, 0, 20)
    floors = M.family_floor_kl(sd**2)
    assert floors["diagonal"] == pytest.approx(0.0, abs=1e-9)
    eps = 20 / np.sum(sd**-2.0)  # the isotropic optimum eps* = d / tr(P)
    assert floors["isotropic"] == pytest.approx(M.gaussian_kl(np.zeros(20), np.full(20, eps), np.zeros(20), sd**2))
    assert M.gaussian_kl(np.zeros(20), np.full(20, 1.1 * eps), np.zeros(20), sd**2) > floors["isotropic"]
    # a correlated target: the diagonal floor is reached at v_k = 1 / P_kk and is positive
    idx = np.arange(5)
    cov = 0.5 ** np.abs(idx[:, None] - idx[None, :])
    v = 1 / np.diag(np.linalg.inv(cov))
    floors = M.family_floor_kl(cov)
    assert (
        floors["diagonal"] == pytest.approx(M.gaussian_kl(np.zeros(5), v, np.zeros(5), cov)) and floors["diagonal"] > 0
    )
    assert M.gaussian_kl(np.zeros(5), 1.05 * v, np.zeros(5), cov) > floors["diagonal"]


def test_weighted_summaries_and_split():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(1000, 3)) * [1.0, 2.0, 3.0] + [0.5, -1.0, 2.0]
    mean, sd = M.weighted_moments(z)
    np.testing.assert_allclose(mean, z.mean(0))
    np.testing.assert_allclose(sd, z.std(0))
    lw = rng.normal(size=1000)
    m1, s1 = M.weighted_moments(z, lw)
    m2, s2 = M.weighted_moments(z, lw + 123.0)  # invariant to the normaliser
    np.testing.assert_allclose(m1, m2)
    np.testing.assert_allclose(s1, s2)
    w = np.exp(lw) / np.exp(lw).sum()
    np.testing.assert_allclose(m1, w @ z)
    assert M.weighted_mass(z, lw, axis=1) == pytest.approx(float(w @ (z[:, 1] > 0)))
    assert M.weighted_mass(z) == pytest.approx(float(np.mean(z[:, 0] > 0)))
    errs = M.moment_errors([1.0, 2.0], [2.0, 3.0], [0.0, 2.0], [2.0, 2.0])
    assert errs == {"mean_err_max": 0.5, "mean_err": 0.25, "sd_err_max": 0.5, "sd_err": 0.25}
    split = M.component_split(np.array([[-3.0, 0], [2.9, 0], [3.1, 1], [-2.0, 0]]), np.array([0.1, 0.3, 0.4, 0.2]))
    assert split["label"] == "2R/2L" and split["weight_right"] == pytest.approx(0.7)
    assert M.component_split(np.array([[1.0, 0.0]]))["weight_right"] == 1.0


def test_compare_change_uses_the_monte_carlo_tolerance():
    assert claims.compare_change(0.10, 0.20) == "helps"  # CHANGE_TOL = 0.01
    assert claims.compare_change(0.205, 0.20) == "same"
    assert claims.compare_change(0.25, 0.20) == "hurts"
    # tolerance 2 / sqrt(ESS) = 0.02 at ESS = 10^4
    assert claims.compare_change(0.10, 0.20, 1e4) == "helps"
    assert claims.compare_change(0.21, 0.20, 1e4) == "same"
    assert claims.compare_change(0.30, 0.20, 1e4) == "hurts"
    assert claims.compare_change(0.30, 0.20, 100.0) == "same"  # 0.2 tolerance at ESS 100
    assert claims.compare_change(float("nan"), 0.2, 1e4) == "hurts"
    s = M.summarise([3.0, 1.0, float("nan"), 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert M.summarise([-math.inf, -math.inf], keep_inf=True)["median"] == -math.inf
    assert M.summarise([-math.inf, 1.0])["n"] == 1  # by default only finite values count


def test_eight_schools_evidence_and_layout():
    # the trapezoid rule on this smooth, fast-decaying integrand has converged long before 801 points
    coarse = models.eight_schools_log_evidence(201, 201)
    fine = models.eight_schools_log_evidence(801, 801)
    assert np.isfinite(fine) and abs(coarse - fine) < 1e-6
    # the flattened reference latent is the centred model's AutoContinuous layout (mu, log tau, theta)
    guide = mixvi.AutoIsotropicMixture(models.eight_schools_centred, n_components=1)
    params = guide.setup(jax.random.PRNGKey(0))
    mu, tau, theta = jnp.array([1.5, -2.0]), jnp.array([0.3, 7.0]), jnp.arange(16.0).reshape(2, 8)
    sites = guide.constrain(models.centred_latent(mu, tau, theta), params)
    np.testing.assert_allclose(sites["mu"], mu, rtol=1e-6)
    np.testing.assert_allclose(sites["tau"], tau, rtol=1e-5)
    np.testing.assert_allclose(sites["theta"], theta, rtol=1e-6)


def test_evaluate_fit_exact_gaussian_has_zero_error():
    model, mean, sd = models.gaussian_target(4)
    target = fitting.make_target("g", model, mean, sd, 0.0, gaussian_cov=sd**2)
    # the target itself as an N = 1 diagonal mixture (eps D = sd^2)
    qp = {
        "locs": jnp.asarray(mean, jnp.float32)[None],
        "scales": jnp.ones(1),
        "weights": None,
        "metric": jnp.asarray(sd**2, jnp.float32),
    }
    ev = fitting.evaluate_fit(target, qp, jax.random.PRNGKey(0), 2000)
    assert ev["closed_form"]["mean_err_max"] < 1e-5 and ev["closed_form"]["sd_err_max"] < 1e-5
    assert abs(ev["kl_exact"]) < 1e-6 and abs(ev["kl_mc"]) < 1e-3
    assert ev["khat"] == -math.inf and ev["ess_fraction"] == pytest.approx(1.0)
    assert set(ev["reweighting"].values()) == {"same"}


def test_fitter_trains_and_varies_the_init_by_seed():
    model, mean, sd = models.gaussian_target(3)
    fitter = fitting.Fitter(settings.Method("mixvi", 1, "diagonal"), model, 300)
    a, b = fitter.fit(0), fitter.fit(1)
    for f in (a, b):
        q = mixvi.IsotropicMixture(**f["qp"])
        np.testing.assert_allclose(q.mean, mean, atol=0.05 * sd.min())
        np.testing.assert_allclose(np.sqrt(q.variance), sd, rtol=0.05)
        assert f["grad_evals"] == 300 * 10 and f["nonfinite_steps"] == 0 and f["params_finite"]
    # different seeds start from different init_to_uniform draws
    inits = [fitter._initial_params(jax.random.PRNGKey(s))["auto_locs"] for s in (0, 1)]
    assert not np.allclose(inits[0], inits[1])


@pytest.mark.slow
def test_bench_extensions_main_smoke(tmp_path, capsys, monkeypatch):
    # a cheap stand-in for the NUTS reference (the real one is exercised by the benchmark itself)
    def fake_reference(num_chains: int = 4, num_samples: int = 5000, num_warmup: int = 1000, seed: int = 0) -> dict:
        return {
            "mean": np.full(10, 1.0),
            "sd": np.full(10, 2.0),
            "ess_min": 100.0,
            "divergences": 0,
            "num_draws": num_chains * num_samples,
            "seconds": 0.0,
            "settings": {"chains": num_chains, "samples": num_samples, "warmup": num_warmup, "target_accept": 0.95},
        }

    class UntrainedFitter(fitting.Fitter):
        """The real set-up and per-seed initialisation, without compiling a training loop (speed)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._run = lambda state: (state, jnp.zeros(self.steps))

    monkeypatch.setattr(runs, "Fitter", UntrainedFitter)
    monkeypatch.setattr(runs, "eight_schools_reference", fake_reference)
    monkeypatch.setattr(runs, "eight_schools_log_z", lambda: -31.0)
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\nintro kept\n\n" + ext_report.MD_START + "\nold\n" + ext_report.MD_END + "\n\n## Other\nkept too\n")
    out = tmp_path / "sub" / "extensions.json"
    argv = ["--quick", "--seeds", "1", "--num-draws", "200", "--dim", "3", "--components", "1", "--no-correlated"]
    fig = tmp_path / "fig.png"
    assert ex.main([*argv, "--out", str(out), "--md", str(md), "--fig", str(fig)]) == 0
    assert fig.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "Claim 1" in printed and "Claim 2" in printed and "Claim 3" in printed

    report = json.loads(out.read_text())
    assert report["benchmark"] == "extensions"
    assert {"date", "machine", "settings", "records", "aggregate", "claims", "reference"} <= set(report)
    assert {"platform", "cpu_count", "jax"} <= set(report["machine"])
    # the settings recorded are the run's own (its Settings, field by field), not a fixed list
    st = report["settings"]
    assert (st["num_draws"], st["gauss_dim"], st["seeds"], st["correlated"]) == (200, 3, 1, False)
    assert st["components"] == [1] and st["quick"] is True
    assert {"method", "step_size", "mvn_lr", "mvn_lr_decay", "init_scale", "bimodal_init_scale"} <= set(st)
    assert st["mvn_steps"] == settings.QUICK.mvn_steps
    methods = {(r["target"], r["method"]) for r in report["records"]}
    assert len(methods) == 3 * 2 + 2  # (iso, diag, MVN) x 2 targets + 2 bimodal
    assert len(report["records"]) == 3 * 2 + 2 * 2  # one seed each, two on the bimodal target
    for r in report["records"]:
        assert "khat" in r and r["num_draws"] == 200 and r["grad_evals"] > 0
        assert set(r["reweighting"]) >= {"mean_err_max", "sd_err_max"}
    bimodal = [r for r in report["records"] if r["target"].startswith("bimodal")]
    assert all("mass_err" in r["psis"] and "split" in r and "resampled" in r for r in bimodal)

    text = md.read_text()
    assert "intro kept" in text and "## Other\nkept too" in text and "\nold\n" not in text
    assert text.count(ext_report.MD_START) == 1 and text.count(ext_report.MD_END) == 1
    assert "Mode mass" in text and "k̂" in text
