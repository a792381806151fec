"""A tiny smoke run of the paper benchmark (mixvi.bench.paper): one target, one seed, a few steps."""

import json

from mixvi.bench import paper
from mixvi.bench.report import replace_section


def test_paper_smoke(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\nhand-written text\n\n<!-- bench core start -->\ncore\n<!-- bench core end -->\n")
    out = tmp_path / "paper.json"
    code = paper.main([
        "--targets", "label-switching", "--seeds", "1", "--steps", "20", "--checkpoints", "2", "--ns", "1,2",
        "--eval-samples", "200", "--out", str(out), "--md", str(md), "--figures", str(tmp_path / "fig" / "paper"),
    ])
    assert code == 0
    report = json.loads(out.read_text())
    t = report["targets"]["label-switching"]
    labels = [r["label"] for r in t["methods"]]
    assert {"ibw N=1", "ibw N=2", "md N=2", "ngd N=10", "means N=10", "AutoNormal", "AutoMVN"} <= set(labels)
    for r in t["methods"]:
        assert len(r["seeds"]) == 1 and len(r["summary"]["curve_median"]) == 2
        assert r["compile_s"] > 0 and r["summary"]["divergence"]["median"] is not None
    text = md.read_text()
    assert "hand-written text" in text and "<!-- bench core start -->\ncore\n<!-- bench core end -->" in text
    assert paper.MD_START in text and "#### label-switching" in text
    assert (tmp_path / "fig" / "paper_kl_vs_iter.png").exists()
    # a second run replaces the section instead of appending another
    replace_section(md, "paper", "new")
    text = md.read_text()
    assert text.count(paper.MD_START) == 1 and "new" in text and "#### label-switching" not in text
    assert "hand-written text" in text and "<!-- bench core end -->" in text
