"""A tiny smoke run of the paper benchmark (benchmarks.paper): one target, one seed, a few steps."""

import json

import numpy as np
import pytest

from benchmarks import paper
from benchmarks.report import replace_section


@pytest.mark.slow
def test_paper_smoke(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\nhand-written text\n\n<!-- bench core start -->\ncore\n<!-- bench core end -->\n")
    out = tmp_path / "paper.json"
    code = paper.main([
        "--targets", "label-switching", "--seeds", "1", "--steps", "20", "--checkpoints", "2", "--ns", "1,2",
        "--methods", "ibw N=1,ibw N=2,md N=2,AutoNormal,full Bures N=5 γ=0.01,SteinVI,Blackjax,Pathfinder",
        "--eval-samples", "200", "--out", str(out), "--md", str(md), "--figures", str(tmp_path / "fig" / "paper"),
    ])
    assert code == 0
    report = json.loads(out.read_text())
    t = report["targets"]["label-switching"]
    labels = [r["label"] for r in t["methods"]]
    assert labels == ["ibw N=1", "ibw N=2", "md N=2", "AutoNormal", "full Bures N=5 γ=0.01", "SteinVI P=10",
                      "Blackjax MFVI", "Pathfinder"]
    for r in t["methods"]:
        n_curve = 1 if r["kind"] == "pathfinder" else 2
        assert len(r["seeds"]) == 1 and len(r["summary"]["curve_median"]) == n_curve
        assert r["compile_s"] > 0 and r["summary"]["divergence"]["median"] is not None
    assert t["tau"] is not None and "t→τ s" in md.read_text()
    text = md.read_text()
    assert "hand-written text" in text and "<!-- bench core start -->\ncore\n<!-- bench core end -->" in text
    assert paper.MD_START in text and "#### label-switching" in text
    assert (tmp_path / "fig" / "paper_kl_vs_iter.png").exists()
    # a second run replaces the section instead of appending another
    replace_section(md, "paper", "new")
    text = md.read_text()
    assert text.count(paper.MD_START) == 1 and "new" in text and "#### label-switching" not in text
    assert "hand-written text" in text and "<!-- bench core end -->" in text


def test_time_to_tau_reads_the_first_checkpoint_below_the_level():
    def method(label, curves, run_s):
        seeds = [{"curve": c, "run_s": run_s} for c in curves]
        return {"label": label, "seeds": seeds,
                "summary": {"divergence": {"median": float(np.median([c[-1] for c in curves]))}}}

    # 4 checkpoints per run of 2 s: checkpoint i ends at 0.5 (i + 1) s
    fast = method("fast", [[1.0, 0.12, 0.1, 0.1], [1.0, 0.5, 0.1, 0.1]], 2.0)
    slow = method("slow", [[2.0, 1.0, 0.5, 0.14], [2.0, 1.0, 0.5, 0.3]], 2.0)
    t = {"normalised": True, "methods": [fast, slow]}
    paper.add_time_to_target(t)
    assert t["tau"] == pytest.approx(0.15)  # 1.5 x the best final median KL 0.1
    assert fast["summary"]["time_to_tau"]["median"] == pytest.approx(np.median([1.0, 1.5]))
    assert fast["summary"]["reached_tau"] == 2
    assert slow["summary"]["time_to_tau"]["median"] == pytest.approx(2.0) and slow["summary"]["reached_tau"] == 1
    # an unnormalised target: best final -ELBO + 1 nat; a NaN checkpoint never counts as reached
    a = method("a", [[60.0, float("nan"), 50.5, 50.0]], 4.0)
    t = {"normalised": False, "methods": [a]}
    paper.add_time_to_target(t)
    assert t["tau"] == pytest.approx(51.0) and a["summary"]["time_to_tau"]["median"] == pytest.approx(3.0)


def test_regression_claims_compare_with_nuts_and_mean_field():
    def s(ll, lo, hi, acc=0.95):
        return {"test_loglik": {"median": ll, "min": lo, "max": hi}, "test_accuracy": {"median": acc}}

    t = {"reference": {"test_accuracy": 0.96, "test_loglik": -0.10, "test_loglik_se": 0.004}}  # noise: ± 0.008
    rows = {"ibw N=20": s(-0.105, -0.11, -0.10), "md N=20": s(-0.30, -0.31, -0.29),
            "AutoNormal": s(-0.12, -0.13, -0.11), "Blackjax MFVI": s(-0.2, -0.2, -0.2)}
    lines = paper._regression_claims("r", t, rows, (1, 20))
    assert len(lines) == 2
    assert "within noise of NUTS: held" in lines[0] and "(AutoNormal)" in lines[0] and lines[0].endswith("good: held")
    assert "within noise of NUTS: NOT held" in lines[1] and lines[1].endswith("good: NOT held")


def test_cost_claims_quote_the_core_benchmark(tmp_path):
    core = tmp_path / "core.json"
    core.write_text(json.dumps({"date": "D", "results": [
        {"d": 100, "n_components": 10, "ratio_mixvi_floor": 3.0},  # below d = 1000: not part of the claim
        {"d": 1000, "n_components": 10, "ratio_mixvi_floor": 1.10},
        {"d": 1000, "n_components": 100, "ratio_mixvi_floor": 1.20},
    ]}))
    lines = paper.cost_claims(core)
    assert len(lines) == 2
    assert "N = 10" in lines[0] and lines[0].endswith("<= 1.15: held")
    assert "1.20 x" in lines[1] and lines[1].endswith("NOT held")
    assert "run `python -m benchmarks.core`" in paper.cost_claims(tmp_path / "missing.json")[0]
    # the goal comes from the core JSON's settings where recorded
    core.write_text(json.dumps({"date": "D", "settings": {"goal_ratio": 1.25, "goal_min_dim": 100}, "results": [
        {"d": 100, "n_components": 10, "ratio_mixvi_floor": 1.2},
    ]}))
    assert paper.cost_claims(core) == [
        "per-iteration cost at d = 100, N = 10 (`python -m benchmarks.core`, D): 1.20 x the target-gradient floor "
        "— <= 1.25: held"
    ]


def test_cost_claims_default_path_is_the_repository_not_the_working_directory(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # no docs/ here: the default must still find the repository's core.json
    root = Path(paper.__file__).resolve().parents[1]
    lines = paper.cost_claims()
    if (root / "docs/benchmarks/core.json").exists():
        assert lines and "no docs/benchmarks/core.json" not in lines[0]


def test_a_diverged_checkpoint_is_recorded_not_raised():
    from benchmarks.targets import get_target
    from mixvi.guide import AutoIsotropicMixture

    target = get_target("funnel")
    guide = AutoIsotropicMixture(target.model, n_components=2)
    ok = {"auto_locs": np.zeros((2, 2), np.float32), "auto_scales": np.ones(2, np.float32)}
    assert paper._posterior_or_none(guide.get_posterior, ok) is not None
    nan = dict(ok, auto_locs=np.full((2, 2), np.nan, np.float32))
    assert paper._posterior_or_none(guide.get_posterior, nan) is None

    def refuses(params):
        raise ValueError("invalid scales parameter")

    assert paper._posterior_or_none(refuses, ok) is None
    ev = paper.Evaluator.__new__(paper.Evaluator)  # curve / final of a diverged q need no draws
    assert ev.curve([None, None]) == [None, None]
    assert ev.final(None) == {"divergence": None, "diverged": True}
