"""Smoke tests of ``python -m benchmarks.core`` at tiny sizes (no timing assertions) and of its target model."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import potential_energy

from benchmarks import core
from benchmarks.report import markers, replace_section
from benchmarks.targets.logistic import logistic_regression, make_data, potential, potential_grad


def test_logistic_regression_potential_matches_analytic_gradient():
    x, y = make_data(jax.random.PRNGKey(0), 50, 7)
    assert set(np.unique(np.asarray(y))) <= {0.0, 1.0}
    ws = jax.random.normal(jax.random.PRNGKey(3), (3, 7)) * 2.0

    def v_fn(w: jax.Array) -> jax.Array:  # the potential energy MixVI differentiates (guide.potential_fn)
        return potential_energy(logistic_regression, (x, y), {}, {"w": w})

    # NumPyro's potential equals the hand-written one ...
    np.testing.assert_allclose(jax.jit(jax.vmap(v_fn))(ws), jax.vmap(potential, (0, None, None))(ws, x, y), rtol=1e-5)
    # ... and its autodiff gradient equals w + X^T (sigmoid(X w) - y)
    analytic = jax.vmap(potential_grad, (0, None, None))(ws, x, y)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(v_fn)))(ws), analytic, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jax.vmap(jax.grad(potential), (0, None, None))(ws, x, y), analytic, rtol=1e-4, atol=1e-4)
    # a finite-difference check of the analytic formula itself (float32: a coarse step)
    w = jnp.linspace(-1.0, 1.0, 7)
    e = jnp.eye(7)[3] * 1e-2
    fd = (potential(w + e, x, y) - potential(w - e, x, y)) / 2e-2
    np.testing.assert_allclose(fd, potential_grad(w, x, y)[3], rtol=2e-2, atol=2e-2)


def test_run_parts_split_the_call_into_steps_and_its_check():
    # calls of K1 = 50 and K1 + K = 70 steps (K = 20) costing 30 ms of check + 2 ms a step in round one and
    # 10 ms + 3 ms a step in round two: the split recovers both per round (medians over the rounds)
    cfg = core.CoreConfig(d=3, n_components=2, steps=20)
    assert (cfg.run_steps, cfg.loop_steps("run_long"), cfg.loop_steps("mixvi")) == (50, 70, 20)
    short = core.LoopTiming(0.0, 0.0, [(30 + 2 * 50) / 50, (10 + 3 * 50) / 50], 0.0, None)
    long = core.LoopTiming(0.0, 0.0, [(30 + 2 * 70) / 70, (10 + 3 * 70) / 70], 0.0, None)
    per_step, check = core.run_parts(cfg, short, long)
    assert per_step == pytest.approx(2.5) and check == pytest.approx(20.0)
    # a K above the check's window: K1 = K
    assert core.CoreConfig(d=3, n_components=2, steps=80).run_steps == 80


def test_choose_steps_shrinks_with_size():
    small = core.choose_steps(10, 100, 1000, quick=False)
    big = core.choose_steps(1000, 1000, 1000, quick=False)
    assert 10 <= big < small <= 400
    assert core.choose_steps(10, 100, 1000, quick=True) <= 100


@pytest.mark.slow  # a benchmark smoke run (~10-35 s on 2 cores)
def test_bench_core_main_writes_json_and_markdown(tmp_path, capsys):
    md = tmp_path / "benchmarks.md"
    md.write_text(
        "# Benchmarks\n\nintro kept\n\n" + markers("core")[0] + "\nold table\n" + markers("core")[1] + "\n\n## Paper\nkept too\n"
    )
    out = tmp_path / "sub" / "core.json"
    argv = ["--dims", "3", "--components", "2", "--num-samples", "2", "--rows", "20", "--steps", "2"]
    assert core.main([*argv, "--repeats", "2", "--out", str(out), "--md", str(md)]) == 0
    printed = capsys.readouterr().out
    assert "MixVI/floor" in printed

    report = json.loads(out.read_text())
    assert report["benchmark"] == "core"
    assert {"date", "machine", "settings", "results"} <= set(report)
    assert {"platform", "cpu_count", "jax", "backend"} <= set(report["machine"])
    (cell,) = report["results"]
    assert (cell["d"], cell["n_components"], cell["num_samples"], cell["num_points"], cell["steps"]) == (3, 2, 2, 4, 2)
    assert set(cell["timings"]) == set(core.LOOPS)
    for t in cell["timings"].values():
        assert t["ms_median"] > 0 and t["ms_min"] > 0 and len(t["ms_all"]) == 2 and t["compile_s"] > 0
    assert cell["run_steps"] == 50 and cell["run_ms_per_step"] is not None and cell["run_check_ms"] is not None
    for name in ("ratio_mixvi_floor", "ratio_mixvi_floor_vg", "ratio_svi_floor", "ratio_mixvi_floor_paired"):
        assert cell[name] > 0
    assert cell["mixvi_losses_finite"]
    assert cell["nbnd_bytes"] == 4 * 2 * 3 * 4

    text = md.read_text()
    assert "intro kept" in text and "## Paper\nkept too" in text and "old table" not in text
    assert text.count(markers("core")[0]) == 1 and text.count(markers("core")[1]) == 1
    assert "| 3 | 2 | 4 | 2 |" in text


@pytest.mark.slow  # a benchmark smoke run (~10-35 s on 2 cores)
def test_bench_core_fixed_step_goes_to_its_own_section(tmp_path):
    """--step-size 0.01 builds MixVI with that step, records it (and --tilt's exponent), judges d >= 1000
    cells against the fixed-step goal (1.05) and writes a section of its own, leaving the auto-step one alone."""
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n" + markers("core")[0] + "\nauto table\n" + markers("core")[1] + "\n")
    out = tmp_path / "fixed.json"
    argv = ["--dims", "3", "--components", "2", "--num-samples", "2", "--rows", "20", "--steps", "2", "--repeats", "1"]
    fixed = ["--step-size", "0.01", "--tilt", "0", "--section", "core-fixed"]
    assert core.main([*argv, *fixed, "--out", str(out), "--md", str(md)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["mixvi"]["step_size"] == 0.01 and report["settings"]["mixvi"]["tilt"] == 0.0
    text = md.read_text()
    assert "auto table" in text and markers("core-fixed")[0] in text and "--step-size 0.01" in text
    cell = dict(report["results"][0], d=1000, ratio_mixvi_floor=1.10)
    assert "MISSES the <= 1.05 goal" in core.goal_lines([cell], core._goal(0.01))[0]
    assert "meets the <= 1.15 goal" in core.goal_lines([cell], core._goal("auto"))[0]


def test_write_markdown_creates_page(tmp_path):
    md = tmp_path / "docs" / "benchmarks.md"
    replace_section(md, "core", "first")
    replace_section(md, "core", "second")
    text = md.read_text()
    assert text.startswith("# Benchmarks") and "second" in text and "first" not in text
    assert text.count(markers("core")[0]) == 1
