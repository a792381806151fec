"""The posterior-quality suite (benchmarks.quality): exact references of its targets, its metrics on
cases with known answers, and a smoke run of the quick mode."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.util import potential_energy

import mixvi.engine
import mixvi.vi
from benchmarks import quality as Q
from benchmarks import quality_targets as QT
from benchmarks.metrics import gaussian_kl
from benchmarks.targets.base import latent_sites


@pytest.fixture(scope="module")
def rotated():
    return QT.make_rotated_gaussian()


@pytest.fixture(scope="module")
def mixture():
    return QT.make_mixture()


def _ref(target):
    return {"mean": target.ref_mean, "sd": target.ref_sd}


def test_sharp_regression_posterior_matches_augmented_least_squares():
    """The conjugate posterior equals the ridge least-squares solution and (R^T R)^-1 of its QR factor."""
    x, y, _ = QT.sharp_regression_data()
    mean, cov = QT.conjugate_posterior(x, y, 0.05, 10.0)
    a = np.concatenate([x / 0.05, np.eye(5) / 10.0])
    b = np.concatenate([y / 0.05, np.zeros(5)])
    r = np.linalg.qr(a, mode="r")
    np.testing.assert_allclose(mean, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-8)
    np.testing.assert_allclose(cov, np.linalg.inv(r.T @ r), rtol=1e-6, atol=1e-14)


def test_sharp_regression_log_prob_is_posterior_of_the_model():
    """The analytic log posterior differs from minus the model's potential by one constant (log evidence)."""
    t = QT.make_sharp_regression()
    z = t.ref_mean + 3 * t.ref_sd * np.random.default_rng(0).normal(size=(5, 5))
    lp = np.asarray(t.log_prob(jnp.asarray(z, jnp.float32)), np.float64)
    v = np.array([float(potential_energy(t.model, t.args, {}, {"beta": jnp.asarray(zi, jnp.float32)})) for zi in z])
    assert np.ptp(lp + v) < 0.05


def test_rotated_gaussian_covariance():
    """The rotated Gaussian's covariance has eigenvalues s^2 with s in [0.5, 50], and ref_sd is its diagonal."""
    g = QT.rotated_gaussian()
    np.testing.assert_allclose(g["rotation"] @ g["rotation"].T, np.eye(100), atol=1e-10)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(g["cov"])), np.sort(g["sds"] ** 2), rtol=1e-8)
    assert 0.5 <= g["sds"].min() < 1.0 and 30.0 < g["sds"].max() <= 50.0
    np.testing.assert_allclose(QT.make_rotated_gaussian().ref_sd, np.sqrt(np.diag(g["cov"])))


def test_rotated_gaussian_log_prob_is_the_model_density(rotated):
    """The rotated Gaussian's normalised log density equals minus the model's potential energy."""
    z = jnp.asarray(rotated.sample(jax.random.PRNGKey(1), 4))
    v = jnp.stack([potential_energy(rotated.model, (), {}, {"x": zi}) for zi in z])
    np.testing.assert_allclose(rotated.log_prob(z), -v, rtol=1e-4)


def test_banana_exact_moments():
    """Exact banana draws have E[x0] = E[x1] = 0, Var[x0] = 100 and Var[x1] = 19 (the reference moments)."""
    t = QT.make_banana()
    z = np.asarray(t.sample(jax.random.PRNGKey(0), 400_000), np.float64)
    np.testing.assert_allclose(z.mean(0), [0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(z.var(0), [100.0, 19.0], rtol=0.02)
    np.testing.assert_allclose(t.ref_sd, [10.0, np.sqrt(19.0)])


def test_banana_log_prob_is_the_model_density():
    """The banana's flat log density (x0, x1) equals minus the model's potential energy."""
    z = np.random.default_rng(1).normal(0, 5, size=(4, 2)).astype(np.float32)
    v = [float(potential_energy(QT.banana_model, (), {}, {"x0": zi[0], "x1": zi[1]})) for zi in z]
    np.testing.assert_allclose(QT.banana_log_prob(jnp.asarray(z)), -np.array(v), rtol=1e-5)


def test_mixture_basin_masses_are_the_weights(mixture):
    """Exact mixture draws put the mode weights 0.4 / 0.3 / 0.2 / 0.1 on the Mahalanobis basins."""
    z = np.asarray(mixture.sample(jax.random.PRNGKey(0), 20_000))
    out = QT.mode_mass_metrics(mixture.mode_of(z), mixture.info["weights"])
    assert out["modes_found"] == 4
    assert out["mass_error"] < 0.015


def test_logistic_split_is_80_20_with_intercept():
    """The breast-cancer split is 80/20, with an intercept column and standardised training features."""
    xtr, ytr, xte, yte = QT.breast_cancer_split()
    assert (len(ytr), len(yte)) == (455, 114) and xtr.shape[1] == 31
    np.testing.assert_allclose(xtr[:, 0], 1.0)
    np.testing.assert_allclose(xtr[:, 1:].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(xtr[:, 1:].std(0), 1.0, atol=1e-4)


def test_kl_of_q_equal_to_p_is_zero(rotated):
    """The suite's KL of q = p (the same Gaussian, built apart) is 0 within its Monte Carlo error."""
    q = dist.MultivariateNormal(
        jnp.asarray(rotated.ref_mean, jnp.float32), jnp.asarray(rotated.gaussian_cov, jnp.float32)
    )
    z, log_q = Q._draws_and_log_q(q, jax.random.PRNGKey(2), 20_000)
    out = Q.score(rotated, np.asarray(z), np.asarray(log_q), _ref(rotated))
    assert abs(out["kl"]) < 4 * out["kl_se"] + 1e-3


def test_kl_of_a_shifted_gaussian_is_the_closed_form(rotated):
    """The suite's KL of p shifted by delta equals the closed form delta^T C^-1 delta / 2."""
    delta = 0.3 * np.sqrt(np.diag(rotated.gaussian_cov))
    q = dist.MultivariateNormal(
        jnp.asarray(rotated.ref_mean + delta, jnp.float32), jnp.asarray(rotated.gaussian_cov, jnp.float32)
    )
    z, log_q = Q._draws_and_log_q(q, jax.random.PRNGKey(3), 20_000)
    out = Q.score(rotated, np.asarray(z), np.asarray(log_q), _ref(rotated))
    exact = gaussian_kl(rotated.ref_mean + delta, rotated.gaussian_cov, rotated.ref_mean, rotated.gaussian_cov)
    assert exact > 1.0
    assert abs(out["kl"] - exact) < 4 * out["kl_se"] + 1e-2 * exact


def test_mode_mass_metric_on_known_composition():
    """Labels in shares 0.5 / 0.3 / 0.19 / 0.01 give 3 modes found and a mass error of 0.1."""
    labels = np.repeat([0, 1, 2, 3], [50, 30, 19, 1])
    out = QT.mode_mass_metrics(labels, [0.4, 0.3, 0.2, 0.1])
    assert out["modes_found"] == 3
    assert out["mass_error"] == pytest.approx(0.1)
    np.testing.assert_allclose(out["masses"], [0.5, 0.3, 0.19, 0.01])


def test_moment_metrics_on_known_draws():
    """Draws with the reference mean and twice its sds give mean error 0 and |log sd ratio| = log 2."""
    base = np.array([[-1.0, 1.0], [1.0, -1.0]])
    ref_mean, ref_sd = np.array([3.0, -2.0]), np.array([0.5, 4.0])
    out = QT.moment_metrics(ref_mean + 2 * ref_sd * base, ref_mean, ref_sd)
    assert out["mean_err_max"] == pytest.approx(0.0)
    assert out["log_sd_ratio_median"] == pytest.approx(np.log(2)) and out["log_sd_ratio_max"] == pytest.approx(
        np.log(2)
    )


def test_autonormal_q_is_the_sites_in_the_models_order():
    """AutoNormal's flat q stacks the per-site locs in the order the model samples the sites (the flat
    latent's order of the AutoContinuous guides), here x0 then x1."""
    from numpyro.infer.autoguide import AutoNormal

    guide = AutoNormal(QT.banana_model)
    handlers.seed(guide, rng_seed=0)()
    params = {
        "x0_auto_loc": jnp.array(1.0),
        "x0_auto_scale": jnp.array(2.0),
        "x1_auto_loc": jnp.array(-3.0),
        "x1_auto_scale": jnp.array(0.5),
    }
    q = Q.posterior_q(guide, params)
    np.testing.assert_allclose(q.mean, [1.0, -3.0])
    np.testing.assert_allclose(q.variance, [4.0, 0.25])


def test_reference_and_every_guide_share_coordinates_when_sites_are_not_sorted():
    """On the horseshoe the model samples tau, sigma, lambda, z (not sorted): reference draws mapped to the
    flat latent unpack, in mixvi's guide (as in every AutoContinuous guide), to the sites they came from,
    and AutoNormal's flat q puts each site's loc in the same coordinates."""
    from numpyro.infer.autoguide import AutoNormal

    import mixvi

    target = QT.BUILDERS["horseshoe_regression"]()
    assert list(latent_sites(target.model, target.args)) == ["tau", "sigma", "lambda", "z"]
    draws = {
        "tau": jnp.array([2.0]),
        "sigma": jnp.array([3.0]),
        "lambda": jnp.full((1, 20), 5.0),
        "z": jnp.full((1, 20), -7.0),
    }
    z = Q.unconstrained_draws(target, draws)
    guide = mixvi.AutoIsotropicMixture(target.model, n_components=2)
    guide.setup(jax.random.PRNGKey(0), *target.args)
    sites = guide._unpack_latent(jnp.asarray(z[0]))
    np.testing.assert_allclose(sites["tau"], np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(sites["sigma"], np.log(3.0), rtol=1e-6)
    np.testing.assert_allclose(sites["lambda"], np.log(5.0), rtol=1e-6)
    np.testing.assert_allclose(sites["z"], -7.0)
    normal = AutoNormal(target.model)
    handlers.seed(normal, rng_seed=0)(*target.args)
    params = {f"{n}_auto_loc": jnp.log(draws[n][0]) if n != "z" else draws[n][0] for n in draws}
    params |= {f"{n}_auto_scale": jnp.ones_like(params[f"{n}_auto_loc"]) for n in draws}
    np.testing.assert_allclose(Q.posterior_q(normal, params).mean, z[0], rtol=1e-6)


@pytest.mark.slow
def test_quick_mode_smoke(tmp_path):
    """The quick mode on the banana with tiny steps writes a JSON report with every method's row."""
    out, md, fig = tmp_path / "q.json", tmp_path / "b.md", tmp_path / "f.png"
    Q.main(
        [
            "--quick",
            "--targets",
            "banana",
            "--steps",
            "20",
            "--draws",
            "2000",
            "--timing-steps",
            "0",
            "--metrics",
            "isotropic,isotropic@3",
            "--out",
            str(out),
            "--md",
            str(md),
            "--figure",
            str(fig),
        ]
    )
    report = json.loads(out.read_text())
    rows = {m["method"]: m for m in report["targets"]["banana"]["methods"]}
    assert {"mixvi-isotropic", "AutoNormal", "AutoMultivariateNormal", "AutoBNAFNormal", "AutoIAFNormal"} <= set(rows)
    assert rows["mixvi-isotropic"]["status"] == "ok"
    # the banana's V is cheap: the guide's default 'auto' settles on 20 components, and the page says so
    assert rows["mixvi-isotropic"]["settings"]["n_components"] == mixvi.potential_cost.CHEAP_MODEL_COMPONENTS
    assert "mixvi N = 'auto' (20 on this model)" in md.read_text()
    assert rows["mixvi-isotropic@3"]["settings"]["n_components"] == 3  # METRIC@N: N components
    assert "<!-- bench quality start -->" in md.read_text() and fig.exists()
    assert "`mixvi-M@K`: K components" in md.read_text()


def test_hierarchical_targets_have_the_guides_latent():
    """The horseshoe (log tau, log sigma, 20 log lambda, 20 z) and baseball (mu, log sigma, 18 theta)
    targets state the dimension of the unconstrained latent that the guides fit."""
    import mixvi

    for target, d in ((QT.BUILDERS["horseshoe_regression"](), 42), (QT.BUILDERS["baseball_logit"](), 20)):
        guide = mixvi.AutoIsotropicMixture(target.model, n_components=2)
        guide.setup(jax.random.PRNGKey(0), *target.args)
        assert target.dim == guide.latent_dim == d
        assert target.sample is None and target.info["main"] == "mean_err_max"


def test_nuts_draws_are_mapped_to_the_unconstrained_latent():
    """Constrained draws {mu, sigma > 0, theta} map to (mu, log sigma, theta) in the model's site order, the
    coordinates of the guides' q."""
    target = QT.BUILDERS["baseball_logit"]()
    draws = {"mu": jnp.array([0.5, -1.0]), "sigma": jnp.array([2.0, 0.25]), "theta": jnp.arange(36.0).reshape(2, 18)}
    z = Q.unconstrained_draws(target, draws)
    assert z.shape == (2, 20)
    np.testing.assert_allclose(z[:, 0], [0.5, -1.0])
    np.testing.assert_allclose(z[:, 1], np.log([2.0, 0.25]), rtol=1e-6)
    np.testing.assert_allclose(z[:, 2:], np.arange(36.0).reshape(2, 18))


@pytest.mark.slow  # a benchmark smoke run (~10-35 s on 2 cores)
def test_posteriordb_targets_state_the_guides_latent_and_a_finite_reference():
    """Each posteriordb target's dimension is the guide's latent dimension, and its model's potential is
    finite at the reference mean (the reference is on the latent the guides fit)."""
    import mixvi
    from benchmarks.targets import posteriordb

    for name in posteriordb.NAMES:
        target = QT.BUILDERS[name]()
        guide = mixvi.AutoIsotropicMixture(target.model, n_components=2)
        guide.setup(jax.random.PRNGKey(0), *target.args)
        assert target.dim == guide.latent_dim == target.ref_mean.shape[0] == target.ref_sd.shape[0], name
        v = guide.potential_fn(*target.args)(jnp.asarray(target.ref_mean, jnp.float32), jax.random.PRNGKey(0))
        assert np.isfinite(float(v)) and np.all(target.ref_sd > 0), name


def test_ark_reference_mean_is_the_least_squares_fit_of_the_lags():
    """With N(0, 10) priors on 195 rows the AR(5) posterior mean of (alpha, beta) is the least-squares fit
    of y_t on (1, y_{t-1}, ..., y_{t-5}): posteriordb's reference agrees with our lag matrix to 0.05 sd."""
    from benchmarks.targets import posteriordb

    target = QT.BUILDERS["arK"]()
    y = np.asarray(target.args[0], np.float64)
    design = np.column_stack([np.ones(len(y) - 5), np.asarray(posteriordb.ar_lags(jnp.asarray(y)))])
    coef = np.linalg.lstsq(design, y[5:], rcond=None)[0]
    err = np.abs(coef - target.ref_mean[:6]) / target.ref_sd[:6]
    assert err.max() < 0.05, err


@pytest.mark.slow
def test_nuts_on_garch11_agrees_with_the_posteriordb_reference():
    """NumPyro's NUTS on our GARCH(1, 1) (beta1 written as (1 - alpha1) u with the flat density kept) lands
    on posteriordb's reference: every mean within 0.25 sd, every sd within 25 %."""
    target = QT.BUILDERS["garch11"]()
    run = Q.run_nuts(target, jax.random.PRNGKey(1), 500, 500, chains=2)
    m = QT.moment_metrics(run["z"], target.ref_mean, target.ref_sd)
    assert m["mean_err_max"] < 0.25 and m["log_sd_ratio_max"] < np.log(1.25), m


def test_fit_check_fields_of_a_tiny_run_and_their_section(tmp_path):
    """A tiny quality run's mixvi row carries fit_check's verdict, k-hat, D and run's k-hat and warning per
    seed, and the fit-check section renders them: a row per (target, mixvi row) with the verdict, and the
    thresholds of mixvi.diagnostics.fit; a re-render from the JSON gives the same section."""
    from benchmarks import quality_report as R
    from mixvi.diagnostics import fit

    out, md, md2 = tmp_path / "fc.json", tmp_path / "b.md", tmp_path / "b2.md"
    argv = "--targets banana --metrics isotropic@3 --methods mixvi-isotropic@3 --steps 30 --seeds 1 --draws 2000"
    argv += " --timing-steps 0 --section fit-check"
    Q.main([*argv.split(), "--out", str(out), "--md", str(md), "--figure", ""])
    report = json.loads(out.read_text())
    (row,) = report["targets"]["banana"]["methods"]
    metrics = row["seeds"][0]["metrics"]
    assert metrics["fit_check_verdict"] in ("good", "usable", "poor")
    assert np.isfinite(metrics["fit_check_khat"]) and metrics["fit_check_score_divergence"] >= 0
    assert np.isfinite(metrics["fit_check_stein_divergence"])
    assert 0 < metrics["fit_check_relative_ess"] <= 1
    assert metrics["fit_check_num_samples"] in (1000, (1 + fit.REFINE_FACTOR) * 1000)  # refined when borderline
    assert isinstance(metrics["run_warned"], bool) and "run_khat" in metrics
    assert metrics["run_khat"] is None or np.isfinite(metrics["run_khat"])
    assert np.isfinite(metrics["run_stein"])  # a run with relocation computes M on its last steps
    assert report["fit_check"]["good"] == fit.GOOD and report["fit_check"]["usable"] == fit.USABLE
    text = md.read_text()
    assert "<!-- bench fit-check start -->" in text and "## Fit verdicts calibrated (`" in text
    assert "--methods mixvi-isotropic@3" in text and "--figure ''" in text
    line = next(x for x in text.splitlines() if x.startswith("| banana | mixvi-isotropic@3 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == R.LABELS["kl"] and cells[-1] == metrics["fit_check_verdict"]
    assert cells[5] == R.fmt(metrics["fit_check_khat"]) and cells[6] == R.fmt(metrics["fit_check_stein_divergence"])
    assert cells[7] == R.fmt(metrics["fit_check_score_divergence"]) and cells[9] == str(metrics["fit_check_num_samples"])
    assert f"k-hat ≤ {fit.GOOD['khat']} and M ≤ {fit.GOOD['stein_divergence']}" in text
    R.main([str(out), "--md", str(md2), "--section", "fit-check"])
    assert "## Fit verdicts calibrated (`" in md2.read_text()
    section = text.split("<!-- bench fit-check start -->")[1]
    assert section == md2.read_text().split("<!-- bench fit-check start -->")[1]


def test_refine_suffixes_choose_the_refinement_and_record_it(tmp_path):
    """'+refine' runs MixVI(refine=True) and '+plain' refine=False; each seed's settings say whether the
    fit was refined."""
    out = tmp_path / "r.json"
    argv = "--targets banana --metrics isotropic@3+refine,isotropic@3+plain"
    argv += " --methods mixvi-isotropic@3+refine,mixvi-isotropic@3+plain --steps 30 --seeds 1 --draws 2000 --timing-steps 0"
    Q.main([*argv.split(), "--out", str(out), "--md", "", "--figure", ""])
    rows = {r["method"]: r for r in json.loads(out.read_text())["targets"]["banana"]["methods"]}
    refined, plain = rows["mixvi-isotropic@3+refine"]["seeds"][0], rows["mixvi-isotropic@3+plain"]["seeds"][0]
    assert refined["settings"]["refine"] is True and refined["settings"]["refined"] is True
    assert plain["settings"]["refine"] is False and plain["settings"]["refined"] is False
    assert refined["metrics"]["kl"] != plain["metrics"]["kl"]  # the same steps, then the refinement
