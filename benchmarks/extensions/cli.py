"""Command line of the extensions suite: ``python -m benchmarks.extensions``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.extensions.figures import plot_summary
from benchmarks.extensions.report import (
    claim_lines,
    format_mass_table,
    format_reweighting_table,
    format_scale_table,
    render_markdown,
)
from benchmarks.extensions.runs import jsonable, run_benchmark
from benchmarks.extensions.settings import QUICK, Settings
from benchmarks.report import display_path, replace_section, repo_path


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.extensions``: run the experiments, print the tables and claim verdicts, write the
    JSON (``--out``) and the docs section (``--md``; an empty string skips either). Returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.extensions",
        description="Evidence for the diagonal metric, PSIS-reweighted summaries and Fisher-Rao weights.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 seeds, shorter runs, no AR(1) Gaussian, smaller reference (~1-2 minutes)",
    )
    parser.add_argument(
        "--out", default=repo_path("docs/benchmarks/extensions.json"),
        help="JSON output (default docs/benchmarks/extensions.json of the repository; '' to skip)",
    )
    parser.add_argument(
        "--md", default=repo_path("docs/benchmarks.md"),
        help="markdown page to update (default docs/benchmarks.md of the repository; '' to skip)",
    )
    parser.add_argument(
        "--fig", default=repo_path("docs/figures/extensions_summary.png"),
        help="figure output (default docs/figures/extensions_summary.png of the repository; '' to skip)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per configuration (default 5, quick 2; the bimodal target gets twice as many)",
    )
    parser.add_argument("--steps-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: shrink every run
    parser.add_argument("--num-draws", type=int, default=None, help="S, draws of q per evaluation (default 16000)")
    parser.add_argument("--dim", type=int, default=None, help="dimension of the ill-conditioned Gaussian (default 100)")
    parser.add_argument("--no-correlated", action="store_true", help="skip the AR(1)-correlated Gaussian")
    parser.add_argument(
        "--components",
        type=lambda t: tuple(int(v) for v in t.split(",")),
        default=None,
        help="comma-separated N values of experiment 1 (default 1,5)",
    )
    args = parser.parse_args(argv)
    st = QUICK if args.quick else Settings()
    changes: dict[str, Any] = {}
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error("--seeds must be >= 1")
        changes["seeds"] = args.seeds
        changes["bimodal_seeds"] = 2 * args.seeds
    if args.num_draws is not None:
        if args.num_draws < 100:
            parser.error("--num-draws must be >= 100")
        changes["num_draws"] = args.num_draws
    if args.dim is not None:
        changes["gauss_dim"] = args.dim
    if args.components is not None:
        changes["components"] = args.components
    if args.no_correlated:
        changes["correlated"] = False
    if args.steps_scale != 1.0:
        f = args.steps_scale
        changes.update(
            {
                k: max(2, int(getattr(st, k) * f))
                for k in ("gauss_steps", "eight_steps", "bimodal_steps", "mvn_steps", "ref_samples", "ref_warmup")
            }
        )
    st = replace(st, **changes)

    print(f"benchmarks.extensions: {st.seeds} seeds{' (quick)' if st.quick else ''}")
    report = run_benchmark(st)
    print()
    print(format_scale_table(report["aggregate"]))
    print()
    print(format_mass_table(report["aggregate"], report["records"], report["bimodal_truth"]["mass_right"]))
    print()
    print(format_reweighting_table(report["aggregate"]))
    print()
    for line in claim_lines(report):
        print(line)
    print(f"total {report['seconds']:.0f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(jsonable(report), indent=1) + "\n")
        print(f"wrote {display_path(out)}")
    if args.fig:
        plot_summary(report, Path(args.fig))
        print(f"wrote {display_path(args.fig)}")
    if args.md:
        replace_section(args.md, "extensions", render_markdown(report))
        print(f"updated {display_path(args.md)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
