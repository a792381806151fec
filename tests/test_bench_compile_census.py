"""The compilation census's kernel count (from XLA's text dump), its cost line and its page section, on
hand-built inputs and on one small compiled program."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import compile_census

DUMP = """HloModule jit_chunk, is_scheduled=true

%fused_computation (param_0: f32[4]) -> f32[4] {
  %param_0 = f32[4]{0} parameter(0)
  ROOT %exponential.1 = f32[4]{0} exponential(%param_0)
}

ENTRY %main (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  %exp_fusion = f32[4]{0} fusion(%p), kind=kLoop, calls=%fused_computation
  ROOT %neg_fusion = f32[4]{0} fusion(%exp_fusion), kind=kLoop, calls=%fused_computation
}
"""


def test_count_kernels_reads_the_largest_optimised_chunk_dump(tmp_path):
    (tmp_path / "module_0001.jit_chunk.cpu_after_optimizations.txt").write_text(DUMP)
    (tmp_path / "module_0001.jit_chunk.before_optimizations.txt").write_text(DUMP * 3)  # not counted
    (tmp_path / "module_0002.jit_other.cpu_after_optimizations.txt").write_text(DUMP * 5)  # another program
    assert compile_census.count_kernels(str(tmp_path)) == {"kernels": 2, "instructions": 5}


def test_count_kernels_names_a_missing_dump(tmp_path):
    with pytest.raises(RuntimeError, match="jit\\(chunk\\)"):
        compile_census.count_kernels(str(tmp_path))


def test_kernel_cost_recovers_an_exact_line_and_needs_three_variants():
    rows = [{"kernels": k, "compile_s": 0.25 + 0.008 * k} for k in (60, 100, 250, 300)]
    fit = compile_census.kernel_cost(rows)
    assert fit["base_s"] == pytest.approx(0.25, abs=1e-9)
    assert fit["per_kernel_ms"] == pytest.approx(8.0, rel=1e-9)
    assert fit["rms_residual_s"] == pytest.approx(0.0, abs=1e-9)
    assert compile_census.kernel_cost(rows[:2]) is None


def test_count_kernels_on_a_real_dump_counts_xla_fusions(tmp_path, monkeypatch):
    """A jitted chunk dumped by XLA in a subprocess-free way: lower and compile here, write its optimised
    text where the census looks, and count; the count equals the fusion instructions XLA reports."""

    def chunk(x):
        return jnp.sum(jnp.exp(x) * 2.0), jnp.cumsum(jnp.sin(x))

    compiled = jax.jit(chunk).lower(jnp.ones(8)).compile()
    text = compiled.as_text()
    (tmp_path / "module_0003.jit_chunk.cpu_after_optimizations.txt").write_text(text)
    counted = compile_census.count_kernels(str(tmp_path))
    assert counted["kernels"] == text.count(" fusion(") and counted["kernels"] >= 1
    assert counted["instructions"] > counted["kernels"]


def test_render_markdown_lists_every_variant_and_the_fit():
    machine = {"date": "2026-12-06T00:00:00+00:00", "platform": "Linux", "cpu_count": 2, "jax": "0", "backend": "cpu",
               "numpyro": "0"}
    rows = [
        {"model": "eight_schools", "variant": v, "compile_s": 0.1 * (i + 1), "kernels": 50 * (i + 1),
         "instructions": 900 * (i + 1)}
        for i, v in enumerate(("default", "relocate=False", "paper"))
    ]
    report = {"machine": machine, "settings": {"steps": 200, "repeats": 3, "fixed_step": 0.02},
              "fits": {"eight_schools": compile_census.kernel_cost(rows)}, "results": rows}
    text = compile_census.render_markdown(report)
    for v in ("default", "relocate=False", "paper"):
        assert f"| eight_schools | {v} |" in text
    assert "compile s ~ 0.00 + 2.0 ms x kernels" in text


def test_the_suites_command_line_defaults_to_its_own_models_and_checks_the_others():
    """Without --models a suite gets its ``default_models`` (the census: eight schools), all of ``models``
    without one, and any listed model when asked; an unknown model is an error."""
    from benchmarks.report import fresh_process_cli

    def chosen(argv, default=None):
        return fresh_process_cli(
            "m", "d", ("a", "b"), ("x",), json_path="x.json", steps=1, quick_steps=1, repeats=1, argv=argv,
            default_models=default,
        )[3]

    assert chosen([], ("a",)) == ["a"] and chosen([]) == ["a", "b"]
    assert chosen(["--models", "a,b"], ("a",)) == ["a", "b"]
    with pytest.raises(SystemExit):
        chosen(["--models", "c"], ("a",))
