import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import scale
from benchmarks.report import replace_section


@pytest.mark.slow
def test_scale_bench_runs_and_reports(tmp_path):
    out, md = tmp_path / "scale.json", tmp_path / "bench.md"
    md.write_text("# page\n\nhand-written intro\n")
    assert scale.main(["--dims", "200", "--components", "2", "--repeats", "1", "--budget", "60",
                       "--out", str(out), "--md", str(md)]) == 0
    report = json.loads(out.read_text())
    cells = report["cells"]
    assert {c["target"] for c in cells} == {"logistic", "mixture"}
    for c in cells:
        assert c["mixvi_ms"] > 0 and c["floor_ms"] > 0 and np.isclose(c["ratio"], c["mixvi_ms"] / c["floor_ms"])
    assert report["largest"]["logistic"] == {"d": 200, "N": 2}
    text = md.read_text()
    assert "hand-written intro" in text and "<!-- bench scale start -->" in text
    replace_section(md, "scale", "new table")
    text2 = md.read_text()
    assert "new table" in text2 and "hand-written intro" in text2 and text2.count("bench scale start") == 1
    # the GPU run (scripts/gpu_scale.sh) writes its own section and leaves the CPU one alone
    assert scale.main(["--dims", "200", "--components", "2", "--targets", "logistic", "--repeats", "1",
                       "--budget", "30", "--out", "", "--md", str(md), "--section", "scale-gpu"]) == 0
    text3 = md.read_text()
    assert "new table" in text3 and "<!-- bench scale-gpu start -->" in text3 and "(scale-gpu)" in text3


def test_huge_cell_is_skipped_not_attempted():
    cell = scale.run_cell("logistic", 10**9, 100, repeats=1, budget_s=10, key=jax.random.PRNGKey(0))
    assert "skipped" in cell and "GiB" in cell["skipped"]


def test_mixture_target_density():
    means = jnp.array([[0.0, 0.0], [3.0, 0.0]])
    from numpyro.infer.util import log_density

    x = jnp.array([0.5, -0.2])
    lp, _ = log_density(scale.mixture_target, (means,), {}, {"x": x})
    ref = jnp.log(0.5 * jnp.exp(-0.5 * jnp.sum((x - means[0]) ** 2)) + 0.5 * jnp.exp(-0.5 * jnp.sum((x - means[1]) ** 2)))
    np.testing.assert_allclose(lp, ref, rtol=1e-5)


def test_scale_bench_skips_a_dense_metric_past_its_limit_before_any_work():
    cell = scale.run_cell("logistic", scale.DENSE_MAX_DIM + 1, 2, repeats=1, budget_s=10.0,
                          key=jax.random.PRNGKey(0), metric="dense")
    assert cell["metric"] == "dense" and "refused past d" in cell["skipped"]
    assert "| dense | skipped: metric='dense' is refused" in scale.format_table([cell])
