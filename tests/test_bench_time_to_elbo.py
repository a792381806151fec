"""The pure pieces of the time-to-ELBO suite (benchmarks.time_to_elbo) against hand-computed answers:
the running mean, the final value, t* by both rules, the wall-clock formula and the ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import time_to_elbo as T

NAN = float("nan")


def test_running_mean_is_trailing_and_averages_the_steps_so_far():
    out = T.running_mean(np.array([1.0, 2.0, 3.0, 4.0, 10.0]), 2)
    np.testing.assert_allclose(out, [1.0, 1.5, 2.5, 3.5, 7.0])
    np.testing.assert_allclose(T.running_mean(np.array([3.0, 6.0, 9.0]), 5), [3.0, 4.5, 6.0])


def test_running_mean_skips_rejected_steps():
    out = T.running_mean(np.array([1.0, NAN, 3.0, NAN, NAN, 8.0]), 2)
    np.testing.assert_allclose(out[[0, 1, 2, 3, 5]], [1.0, 1.0, 3.0, 3.0, 8.0])
    assert math.isnan(out[4])  # both steps of the window rejected
    with pytest.raises(ValueError, match="positive integer"):
        T.running_mean(np.ones(3), 0)


def test_final_value_is_the_mean_of_the_finite_tail():
    losses = np.array([10.0] * 8 + [1.0, NAN])  # fraction 0.3 of 10 steps: the last 3
    assert T.final_value(losses, 0.3) == pytest.approx(5.5)
    assert T.final_value(np.arange(20.0)) == pytest.approx(18.5)  # default 10 %: steps 18 and 19
    assert T.window_for(3000) == 300 and T.window_for(600) == 60 and T.window_for(5) == 1


def test_settle_step_stays_versus_reaches():
    running = np.array([5.0, 1.2, 0.9, 1.7, 1.1, 1.0])  # in the band of 1 +- 0.5: F T T F T T
    assert T.settle_step(running, 1.0, 0.5) == 5  # stays from entry 4 on: after 5 steps
    assert T.settle_step(running, 1.0, 0.5, rule="reaches") == 2
    assert T.settle_step(np.array([1.0, 1.2]), 1.0, 0.5) == 1
    assert T.settle_step(np.array([1.0, 3.0]), 1.0, 0.5) is None  # leaves the band at the end
    assert T.settle_step(np.array([9.0, NAN, 1.0]), 1.0, 0.5) == 3  # NaN counts as outside
    assert T.settle_step(np.array([9.0, 9.0]), 1.0, 0.5, rule="reaches") is None
    with pytest.raises(ValueError, match="stays"):
        T.settle_step(running, 1.0, rule="first")


def test_wall_at_step_and_summary():
    assert T.wall_at_step(2.0, 3.0, 0.001, 500) == pytest.approx(5.5)
    losses = np.array([10.0] * 10 + [0.0] * 10)  # window 2; final 0; entry 10 = 5, entry 11 = 0
    out = T.summarize(losses, setup_s=1.0, compile_s=2.0, steady_s=0.5)
    assert out["final_elbo_loss"] == 0.0 and out["t_star"] == 12 and out["t_reach"] == 12
    assert out["time_to_elbo_s"] == pytest.approx(1.0 + 2.0 + 12 * 0.5)
    assert out["nonfinite_steps"] == 0 and out["final_sd"] == 0.0


def test_ratios_to_autonormal_per_model():
    rows = [
        {"model": "a", "method": "autonormal", "time_to_elbo_s": 4.0},
        {"model": "a", "method": "mixvi", "time_to_elbo_s": 10.0},
        {"model": "b", "method": "mixvi", "time_to_elbo_s": 3.0},
        {"model": "b", "method": "autonormal", "time_to_elbo_s": 6.0},
        {"model": "b", "method": "bnaf", "time_to_elbo_s": None},
    ]
    T.add_ratios(rows)
    assert [r["ratio_to_autonormal"] for r in rows] == [1.0, 2.5, 0.5, 1.0, None]


def test_mixvi_rows_name_their_components():
    """The fixed-N rows pass n_components to the guide (the default row leaves it 'auto'), and every mixvi
    row's label shows the N its run used."""
    assert T.GUIDE_OPTIONS["mixvi-n10"] == {"n_components": 10} and "mixvi" not in T.GUIDE_OPTIONS
    assert set(T.GUIDE_OPTIONS) <= set(T.MIXVI_OPTIONS) <= set(T.METHODS)
    assert T.method_label({"method": "mixvi", "settings": {"n_components": 10}}) == "mixvi (N = 10)"
    assert T.method_label({"method": "autonormal", "settings": {}}) == "autonormal"
