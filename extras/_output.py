"""Where the extras' experiments write their JSON and PNG outputs."""

from __future__ import annotations

from pathlib import Path


def output_dir(out: str | None) -> Path:
    """``out`` if given, else the repository's docs/extras (or ./docs/extras outside a checkout)."""
    if out is not None:
        return Path(out)
    repo = Path(__file__).resolve().parent.parent / "docs"
    return (repo if repo.is_dir() else Path("docs")) / "extras"
