"""The seed-spread benchmark's arithmetic, on fits replaced by known means (no fitting)."""

import numpy as np

from benchmarks import seed_spread as S
from benchmarks.report import machine_info
from benchmarks.targets.base import Target


def test_spread_is_the_largest_pairwise_gap_and_errors_are_against_the_reference(monkeypatch):
    """Seeds ending at means (0, 0), (0.3, 0), (0, -1) with reference sds (1, 2) and reference mean 0: the
    pairwise gaps in sds are 0.3, 0.5 and max(0.3, 0.5), so the spread is 0.5; the seeds' errors are 0,
    0.3 and 0.5 (median 0.3, worst 0.5)."""
    means = {0: np.array([0.0, 0.0]), 1: np.array([0.3, 0.0]), 2: np.array([0.0, -1.0])}
    monkeypatch.setattr(S, "final_means", lambda target, method, steps, seed: (means[seed], 1.0))
    target = Target(name="t", family="test", model=None, dim=2, ref_mean=np.zeros(2), ref_sd=np.array([1.0, 2.0]))
    row = S.spread_row(target, "mixvi-auto-step", 10, 3)
    assert np.isclose(row["spread"], 0.5)
    np.testing.assert_allclose(row["errors"], [0.0, 0.3, 0.5])
    assert np.isclose(row["err_median"], 0.3) and np.isclose(row["err_max"], 0.5)
    table = S.render({"machine": machine_info(), "rows": [row]}, "python -m benchmarks.seed_spread")
    assert "| t | mixvi-auto-step | 10 | 0.500 | 0.300 | 0.500 |" in table


def test_a_diverged_seed_is_counted_and_left_out_of_the_spread(monkeypatch):
    """Seed 1's run diverges (final_means gives None): the row says so, and the spread and errors come
    from seeds 0 and 2 alone (gap 0.5 sds)."""
    means = {0: np.array([0.0, 0.0]), 1: None, 2: np.array([0.0, -1.0])}
    monkeypatch.setattr(S, "final_means", lambda target, method, steps, seed: (means[seed], 1.0))
    target = Target(name="t", family="test", model=None, dim=2, ref_mean=np.zeros(2), ref_sd=np.array([1.0, 2.0]))
    row = S.spread_row(target, "mixvi-fixed-step", 10, 3)
    assert row["diverged"] == 1 and np.isclose(row["spread"], 0.5)
    np.testing.assert_allclose(row["errors"], [0.0, 0.5])
    table = S.render({"machine": machine_info(), "rows": [row]}, "python -m benchmarks.seed_spread")
    assert "| t | mixvi-fixed-step | 10 | 0.500 (1 of 3 seeds diverged) | 0.250 | 0.500 |" in table
