"""The mode-discovery ablation (benchmarks.discovery): its variants switch the moves they name, and a
smoke run writes a table and JSON."""

from __future__ import annotations

import json

import pytest

from benchmarks import discovery as D


def test_variants_add_one_move_each():
    def moves(flags):
        return sum(bool(v) and v != 0.0 for v in flags.values())

    flags = list(D.VARIANTS.values())
    assert flags[0] == {"relocate": False, "balance": False, "explore": False, "tilt": 0.0}
    assert flags[-1] == {"relocate": True, "balance": True, "explore": True, "tilt": "auto"}
    assert all(moves(b) == moves(a) + 1 for a, b in zip(flags, flags[1:]))


@pytest.mark.slow
def test_smoke_run_writes_json_and_section(tmp_path):
    out, md = tmp_path / "d.json", tmp_path / "b.md"
    code = D.main(["--quick", "--targets", "banana", "--variants", "paper,+scouts", "--steps", "100",
                   "--draws", "2000", "--out", str(out), "--md", str(md)])
    assert code == 0
    report = json.loads(out.read_text())
    rows = report["targets"]["banana"]["rows"]
    assert [r["variant"] for r in rows] == ["paper", "+scouts"] and all(r["kl"] > 0 for r in rows)
    assert "bench discovery start" in md.read_text()
