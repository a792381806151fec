"""The ``mixvi`` command line and the demo it runs (one quick demo run shared by the module)."""

from __future__ import annotations

import contextlib
import importlib
import io
import subprocess
import sys
import types

import numpy as np
import pytest

import mixvi
import mixvi.demo
import mixvi.loop
from mixvi.cli import BENCH_SUITES, main


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """``mixvi demo --quick`` run in-process through ``main``; returns (exit code, output, figure path,
    the DemoResult that run_demo returned). The demo's persistent compilation cache is recorded, not
    turned on: enabled in this process it would stay on for every later test of the worker, whose
    programs would then be written to and read from a folder shared with other processes."""
    out = tmp_path_factory.mktemp("demo") / "demo.png"
    captured = {"cache_calls": 0}
    real = mixvi.demo.run_demo

    def spy(**kwargs):
        captured["result"] = real(**kwargs)
        return captured["result"]

    def no_cache(*args, **kwargs):
        captured["cache_calls"] += 1

    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setattr(mixvi.demo, "run_demo", spy)
        mp.setattr(mixvi.loop, "enable_compilation_cache", no_cache)
        code = main(["demo", "--quick", "--out", out])
    assert captured["cache_calls"] == 1  # the CLI's demo asks for the cache by default
    return code, buf.getvalue(), out, captured.get("result")


def test_demo_runs_and_writes_the_figure(quick_demo):
    code, text, out, result = quick_demo
    assert code == 0
    assert out.is_file() and out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result is not None and result.figure == out
    for phrase in ("mode A", "mode B", "k-hat", "az.summary", "component_summary", "verdict:"):
        assert phrase in text, phrase
    assert result.report in text


def test_demo_mixvi_covers_both_modes_autonormal_one(quick_demo):
    result = quick_demo[3]
    mix, an = result.mixvi, result.autonormal
    # mixvi's draws land on both mirror-image modes, AutoNormal's on a single one
    assert min(mix.fraction) >= 0.2, mix.fraction
    assert max(an.fraction) >= 0.99, an.fraction
    # the fractions are computed from the returned draws, by the side of the diagonal mu[0] = mu[1]
    a = float(np.mean(mix.samples[:, 0] < mix.samples[:, 1]))
    assert a == pytest.approx(mix.fraction[0], abs=1e-9)
    # reweighted by p/q, mixvi's mass is close to the exact 50 / 50; the covering q has the higher ELBO
    assert abs(mix.mass[0] - 0.5) < 0.15, mix.mass
    assert mix.elbo > an.elbo
    assert "mixvi covers both modes" in result.verdict
    # the component table has one row per component and its masses sum to one
    assert len(result.components) == 10
    assert float(result.components["mass"].sum()) == pytest.approx(1.0, abs=1e-6)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mixvi {mixvi.__version__}"


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["demo", "--steps", "0"], ["demo", "--components", "x"], ["bench"], ["bench", "nope"]],
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage: mixvi" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "bench" in out


def test_bench_forwards_its_arguments(monkeypatch):
    seen = {}

    def fake_main(argv):
        seen["argv"] = argv
        return 0

    monkeypatch.setitem(sys.modules, "benchmarks.core", types.SimpleNamespace(main=fake_main))
    assert main(["bench", "core", "--quick", "--dims", "10,20"]) == 0
    assert seen["argv"] == ["--quick", "--dims", "10,20"]


def test_bench_suite_usage_error_and_missing_suite(monkeypatch, capsys):
    def fake_main(argv):
        raise SystemExit(2)

    monkeypatch.setitem(sys.modules, "benchmarks.core", types.SimpleNamespace(main=fake_main))
    assert main(["bench", "core", "--bogus"]) == 2
    monkeypatch.setitem(sys.modules, "benchmarks.scale", None)  # an import of it fails: a suite file is missing
    assert main(["bench", "scale"]) == 1
    assert "not available" in capsys.readouterr().err


def test_bench_runs_the_suite_of_the_clone():
    # the tests run from a clone: benchmarks/ sits next to the mixvi package source
    from pathlib import Path

    from mixvi import cli

    root = cli.repository_root()
    assert root is not None and root == Path(mixvi.__file__).resolve().parents[1]
    assert main(["bench", "core", "--help"]) == 0


def test_bench_outside_a_clone_says_where_the_benchmarks_live(monkeypatch, capsys):
    from mixvi import cli

    monkeypatch.setattr(cli, "repository_root", lambda: None)
    assert main(["bench", "core", "--quick"]) == 1
    err = capsys.readouterr().err
    assert "git clone" in err and "python -m benchmarks.core" in err


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "mixvi", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"mixvi {mixvi.__version__}"


@pytest.mark.parametrize("suite", BENCH_SUITES)
def test_every_bench_suite_is_a_benchmark_module_with_a_main(suite):
    """`mixvi bench SUITE` reaches benchmarks.SUITE.main for every listed suite (the repository's folder)."""
    module = importlib.import_module(f"benchmarks.{suite}")
    assert callable(module.main)
