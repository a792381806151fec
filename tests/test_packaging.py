"""The layout of the distribution: the wheel holds the library only, and the library imports without the
benchmark-only dependencies (blackjax, scikit-learn) and without the repository folders benchmarks/ and
extras/."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"build", "dist", "node_modules"}


def include_patterns() -> list[str]:
    """The ``include`` list of ``[tool.setuptools.packages.find]`` in pyproject.toml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["setuptools"]["packages"]["find"]["include"])


def discover(include: list[str]) -> list[str]:
    """What setuptools' ``packages.find`` discovers from the repository root with ``include``.

    ``[tool.setuptools.packages.find]`` looks for namespace packages too (its default), so every folder
    whose name is an identifier is a candidate, with or without ``__init__.py``; a candidate is kept
    when its dotted name matches an ``include`` pattern (fnmatch, as setuptools does). Uses setuptools
    itself where it is installed.
    """
    if importlib.util.find_spec("setuptools") is not None:
        from setuptools import find_namespace_packages

        return sorted(find_namespace_packages(where=str(ROOT), include=include))
    found = []
    for folder, dirs, _ in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT)
        dirs[:] = [d for d in dirs if d.isidentifier() and not d.startswith(".") and d not in SKIP_DIRS]
        if rel == Path("."):
            continue
        name = ".".join(rel.parts)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
            found.append(name)
    return sorted(found)


def test_the_package_discovery_finds_the_library_only():
    include = include_patterns()
    packages = [p for p in discover(include) if not p.endswith("__pycache__")]
    assert "mixvi" in packages
    assert all(p == "mixvi" or p.startswith("mixvi.") for p in packages), packages
    for unwanted in ("mixvi.bench", "mixvi.targets", "extras", "benchmarks"):
        assert not any(p == unwanted or p.startswith(unwanted + ".") for p in packages), (unwanted, packages)
    # the check has teeth: the former include list would ship the extras
    assert "extras" in discover(["mixvi*", "extras*"])


def test_the_repository_folders_sit_next_to_the_library():
    assert (ROOT / "benchmarks" / "__init__.py").is_file() and (ROOT / "extras" / "__init__.py").is_file()
    assert not (ROOT / "mixvi" / "bench").exists() and not (ROOT / "mixvi" / "targets").exists()
    for suite in ("core", "paper", "scale", "extensions", "dimension"):
        assert importlib.util.find_spec(f"benchmarks.{suite}") is not None


CHECK_IMPORTS = textwrap.dedent(
    """
    import importlib
    import pkgutil
    import sys

    # the benchmark-only dependencies and the repository folders are unavailable
    for name in ("blackjax", "sklearn", "benchmarks", "extras"):
        sys.modules[name] = None

    import mixvi

    names = ["mixvi"] + [
        m.name for m in pkgutil.walk_packages(mixvi.__path__, "mixvi.") if m.name != "mixvi.__main__"
    ]
    for name in names:
        importlib.import_module(name)
    print(len(names), "modules")
    """
)


def test_every_library_module_imports_without_the_benchmark_dependencies(tmp_path):
    # from an empty folder, so that the repository root is not on sys.path by accident
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[0]) >= 10

