"""The gallery scripts in examples/: each runs in quick mode and prints its comparison; the shared helpers.

Running a script takes 30-60 s on 2 CPU cores even in quick mode (most of it JAX compilation), so those runs are
marked slow (``pytest --runslow``); CI runs the same scripts in quick mode through the documentation build's
gallery (.ci/run). The checks of the helpers and of the gallery's wiring below are fast.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(EXAMPLES.glob("plot_*.py"))
# what each script prints once its comparison is done (the scripts built on _compare print its report's legend)
REPORT_LINE = "err: error of the posterior mean"
OWN_TABLE = {"plot_bimodal_numpyro.py": "P(theta > 0)"}


@pytest.fixture
def compare(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import _compare

    return _compare


def test_gallery_has_the_examples():
    names = {p.stem for p in SCRIPTS}
    expected = {
        "plot_bimodal_numpyro", "plot_eight_schools", "plot_baseball", "plot_lkj_covariance",
        "plot_logistic_subsample", "plot_funnel", "plot_horseshoe", "plot_bayesian_neural_network",
    }
    assert expected <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_has_a_quick_mode_and_a_title(script):
    text = script.read_text()
    assert text.startswith('"""'), "sphinx-gallery needs the docstring first"
    title = text.split("\n")[1:3]
    assert title[0] and set(title[1]) == {"="}, "the docstring opens with a title underlined by ="
    assert "MIXVI_DOCS_QUICK" in text or re.search(r"from _compare import .*\bbudget\b", text)


def test_gallery_skips_the_helper_module():
    conf = (ROOT / "docs" / "conf.py").read_text()
    pattern = re.search(r'"ignore_pattern": r"([^"]+)"', conf).group(1)
    assert re.search(pattern, "_compare.py")
    assert not any(re.search(pattern, p.name) for p in SCRIPTS)


def test_budget_quick_and_full(monkeypatch, compare):
    monkeypatch.setenv("MIXVI_DOCS_QUICK", "1")
    quick = importlib.reload(compare).budget(vi_steps=2000)
    monkeypatch.setenv("MIXVI_DOCS_QUICK", "0")
    full = importlib.reload(compare).budget(vi_steps=2000)
    assert quick.vi_steps == 300 and quick.nuts_samples == 200
    assert full.vi_steps == 2000 and full.nuts_warmup == 1000 and full.nuts_samples == 1000


def test_comparison_errors_in_reference_sds(compare):
    rng = np.random.default_rng(0)
    ref = {"a": rng.normal(1.0, 2.0, 200_000), "b": rng.normal(0.0, 1.0, (200_000, 2))}
    fit = {"a": rng.normal(2.0, 1.0, 200_000), "b": rng.normal(0.0, 3.0, (200_000, 2))}
    table = compare.comparison({"NUTS": ref, "q": fit})
    assert list(table.index) == ["a", "b[0]", "b[1]"]
    assert table.loc["a", ("q", "err")] == pytest.approx(0.5, abs=0.01)
    assert table.loc["a", ("q", "sd/ref")] == pytest.approx(0.5, abs=0.01)
    assert table.loc["b[1]", ("q", "sd/ref")] == pytest.approx(3.0, abs=0.03)
    exact = compare.comparison({"q": fit}, reference="exact", exact={"a": (1.0, 2.0), "b": (0.0, 1.0)})
    assert exact.loc["a", ("exact", "sd")] == 2.0
    assert exact.loc["a", ("q", "err")] == pytest.approx(0.5, abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_runs_in_quick_mode(script):
    env = {**os.environ, "MIXVI_DOCS_QUICK": "1", "MPLBACKEND": "agg"}
    done = subprocess.run(
        [sys.executable, script.name], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert OWN_TABLE.get(script.name, REPORT_LINE) in done.stdout, done.stdout[-3000:]
