"""Where the extras' experiments write their JSON and PNG outputs."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parse_args(description: str | None, argv: list[str] | None, quick_help: str) -> argparse.Namespace:
    """The command line every experiment shares: ``--quick`` (what it shrinks: ``quick_help``) and ``--out DIR``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", default=None, help="output folder (default docs/extras)")
    return p.parse_args(argv)


def output_dir(out: str | None) -> Path:
    """``out`` if given, else the repository's docs/extras (or ./docs/extras outside a checkout)."""
    if out is not None:
        return Path(out)
    repo = Path(__file__).resolve().parent.parent / "docs"
    return (repo if repo.is_dir() else Path("docs")) / "extras"


def save_outputs(
    name: str,
    quick: bool,
    out: str | None,
    results: dict,
    t0: float,
    plot: Callable[[Path], None],
    to_json: Callable[[dict], Any] = lambda r: r,
) -> Path:
    """Record the run time in ``results``, draw the figure with ``plot(png_path)``, write
    ``to_json(results)`` as JSON beside it (``{name}.*``, or ``{name}_quick.*`` for a quick run) and
    say where; returns the path stem."""
    results["seconds"] = time.time() - t0
    outdir = output_dir(out)
    outdir.mkdir(parents=True, exist_ok=True)
    stem = outdir / (f"{name}_quick" if quick else name)
    plot(stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(json.dumps(to_json(results), indent=1))
    print(f"\nwrote {stem}.json/.png in {results['seconds']:.1f} s")
    return stem
