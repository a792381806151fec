"""The model-cost table (benchmarks.model_cost) and the start-up suite's record of the N the guide settled on."""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from benchmarks import model_cost, startup
from mixvi.potential_cost import ALL_DRAWS_MAX_COST, COMPONENTS_MAX_COST


def _regression(rows: int):
    x = jax.random.normal(jax.random.PRNGKey(0), (rows, 10))

    def model(x, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([10]).to_event(1))
        numpyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)

    return model, (x, jnp.zeros(rows))


def test_measure_reads_the_cost_and_both_choices():
    """A 10-row regression is cheap (20 components, loss from every draw); a 5000-row one is not (10, one
    draw); the table lists the cheap one first and states both thresholds."""
    small, big = (model_cost.measure(*_regression(rows)) for rows in (10, 5000))
    assert small["d"] == big["d"] == 10
    assert small["cost"] < ALL_DRAWS_MAX_COST and big["cost"] >= COMPONENTS_MAX_COST
    assert (small["n_components"], small["loss_draws"]) == (20, None)
    assert (big["n_components"], big["loss_draws"]) == (10, 1)
    rows = [{"suite": "t", "model": "big", **big}, {"suite": "t", "model": "small", **small}]
    table = model_cost.format_table(rows).splitlines()
    assert table[2].startswith("| small |") and table[3].startswith("| big |")
    report = {"machine": {"date": "d", "platform": "p", "cpu_count": 2, "jax": "j", "backend": "cpu",
                          "numpyro": "n"}, "rows": rows}
    text = model_cost.render_markdown(report)
    assert f"{COMPONENTS_MAX_COST:.0e}" in text and f"{ALL_DRAWS_MAX_COST:.0e}" in text


def test_startup_labels_mixvi_rows_with_the_settled_n():
    """The start-up suite asks for the default ('auto') except on the paper suite's mixtures, and labels each
    mixvi row with the N its run settled on."""
    assert startup.components("eight_schools") == "auto" and startup.components("gmm_d10") == 20
    row = {"import_s": 0.25, "setup_s": 1.0, "compile_s": 1.0, "steady_ms": 0.1, "e2e_s": 3.25, "first_s": 2.0}
    report = {
        "machine": {"date": "d", "platform": "p", "cpu_count": 2, "jax": "j", "backend": "cpu", "numpyro": "n"},
        "settings": {"steps": 100, "repeats": 1, "svi": "adam", "models": {"hier_logistic_50": 50},
                     "mixvi_components": {"hier_logistic_50": "auto"}},
        "results": [{"model": "hier_logistic_50", "method": "mixvi", "n_components": 10, **row},
                    {"model": "hier_logistic_50", "method": "autonormal", **row}],
    }
    text = startup.render_markdown(report)
    assert "| hier_logistic_50 (50; mixvi N = 10) | mixvi |" in text
    assert "| hier_logistic_50 (50) | autonormal | 0.25 | 1.00 | 1.00 |" in text


def test_startup_runs_the_level0_opt_in_only_when_asked_and_labels_its_rows():
    """The level-0 opt-in is a method of the start-up suite that its default leaves out; its rows, warm ones
    included, say which method they are."""
    from benchmarks.report import fresh_process_cli

    common = dict(json_path="x.json", steps=10, quick_steps=5, repeats=1, default_methods=startup.DEFAULT_METHODS)
    _, _, _, _, methods = fresh_process_cli("m", "d", startup.MODELS, startup.METHODS, argv=[], **common)
    assert "mixvi-level0" not in methods and "mixvi" in methods
    _, _, _, _, methods = fresh_process_cli(
        "m", "d", startup.MODELS, startup.METHODS, argv=["--methods", "mixvi-level0"], **common
    )
    assert methods == ["mixvi-level0"]
    warm = {"second_run": 0.1, "new_num_steps": 0.1, "new_guide_and_engine": 0.1, "resume": 0.1}
    row = {"import_s": 0.25, "setup_s": 1.0, "compile_s": 1.0, "steady_ms": 0.1, "e2e_s": 3.25, "first_s": 2.0}
    report = {
        "machine": {"date": "d", "platform": "p", "cpu_count": 2, "jax": "j", "backend": "cpu", "numpyro": "n"},
        "settings": {"steps": 100, "repeats": 1, "svi": "adam", "models": {"eight_schools": 10},
                     "mixvi_components": {"eight_schools": "auto"}},
        "results": [{"model": "eight_schools", "method": m, "n_components": 20, "warm": warm, **row}
                    for m in ("mixvi", "mixvi-level0")],
    }
    text = startup.render_markdown(report)
    assert "| eight_schools (10; mixvi N = 20) | mixvi-level0 |" in text
    assert "| eight_schools | 0.10 |" in text and "| eight_schools (mixvi-level0) | 0.10 |" in text
