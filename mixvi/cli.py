"""The ``mixvi`` command line (also ``python -m mixvi``).

    mixvi demo [--steps N] [--components N] [--seed S] [--out PATH] [--quick] [--no-compilation-cache]
    mixvi bench SUITE [ARGS ...]      SUITE = core | paper | scale | extensions | dimension | time_to_elbo |
                                      startup | quality | model_cost | seed_spread | discovery |
                                      shape_limit | compile_census;
                                      ARGS go to benchmarks.SUITE.main (from a clone of the repository only)
    mixvi --version | --help

Exit codes: 0 success, 1 a run that failed (or ``mixvi bench`` outside a clone), 2 a usage error.
The heavy imports (JAX, NumPyro, matplotlib, the benchmarks) happen inside the subcommands, so
``mixvi --help`` is instant and ``mixvi demo`` works without the benchmark modules.

The benchmark suites are not part of the installed package: they live in the ``benchmarks/`` folder of
the repository and run from its root as ``python -m benchmarks.SUITE``. ``mixvi bench SUITE`` is a
shortcut for that when mixvi is used from a clone (an editable install), i.e. when a ``benchmarks/``
folder sits next to the ``mixvi`` package source.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

BENCH_SUITES = (
    "core",
    "paper",
    "scale",
    "extensions",
    "dimension",
    "time_to_elbo",
    "startup",
    "quality",
    "model_cost",
    "seed_spread",
    "discovery",
    "shape_limit",
    "compile_census",
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mixvi`` command."""
    from mixvi import __version__

    parser = argparse.ArgumentParser(
        prog="mixvi",
        description="Variational inference with uniform-weight mixtures of isotropic Gaussians for NumPyro "
        "(arXiv 2506.13613).",
        epilog="Run 'mixvi demo' for a one-minute tour; 'mixvi demo --help' for its options.",
    )
    parser.add_argument("--version", action="version", version=f"mixvi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="fit a bimodal posterior with mixvi and with AutoNormal, print the comparison, draw a figure",
        description="Label switching in a two-group Gaussian mixture: the posterior has two mirror-image modes. "
        "Fits mixvi (AutoIsotropicMixture + MixVI) and NumPyro's AutoNormal (SVI + Adam) and prints ArviZ "
        "summaries, Pareto k-hat, mixvi's component table and the mass each method puts on each mode; "
        "writes a figure with the exact posterior for reference.",
    )
    demo.add_argument("--steps", type=_positive_int, default=2000, help="optimisation steps per method (default 2000)")
    demo.add_argument("--components", type=_positive_int, default=10, help="mixvi's mixture components (default 10)")
    demo.add_argument("--seed", type=int, default=0, help="seed of every random draw of the inference (default 0)")
    demo.add_argument(
        "--out", default="docs/figures/demo.png", help="PNG figure to write (default docs/figures/demo.png)"
    )
    demo.add_argument("--no-figure", action="store_true", help="skip the figure")
    demo.add_argument("--quick", action="store_true", help="a fast smoke run: at most 300 steps, fewer draws")
    demo.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="do not keep compiled programs on disk (by default the demo uses JAX's persistent compilation cache "
        "in $MIXVI_CACHE_DIR or ~/.cache/mixvi/jax, so a second demo starts faster)",
    )

    bench = sub.add_parser(
        "bench",
        help="run a benchmark suite from a clone of the repository (mixvi bench core --help for its options)",
        description="Run a benchmark suite of the repository's benchmarks/ folder (same as python -m "
        "benchmarks.SUITE from the repository root); every argument after SUITE goes to that suite's own parser. "
        "Only available when mixvi runs from a clone.",
    )
    bench.add_argument("suite", choices=BENCH_SUITES, metavar="SUITE", help=f"one of {', '.join(BENCH_SUITES)}")
    bench.add_argument("suite_args", nargs=argparse.REMAINDER, metavar="ARGS", help="options for the suite")
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    if not args.no_compilation_cache:
        from mixvi.loop import enable_compilation_cache

        enable_compilation_cache()
    from mixvi.demo import run_demo

    run_demo(
        steps=args.steps,
        components=args.components,
        seed=args.seed,
        out=None if args.no_figure else args.out,
        quick=args.quick,
    )
    return 0


def repository_root() -> Path | None:
    """The root of the clone mixvi runs from, or None for an installed package.

    Returns
    -------
    pathlib.Path or None
        The folder above the ``mixvi`` package source when it holds a ``benchmarks/`` folder (a clone,
        typically with an editable install), otherwise None.
    """
    import mixvi

    root = Path(mixvi.__file__).resolve().parents[1]
    return root if (root / "benchmarks").is_dir() else None


def _run_bench(args: argparse.Namespace) -> int:
    root = repository_root()
    if root is None:
        print(
            "mixvi bench: the benchmark suites are not installed with mixvi; they live in the benchmarks/ folder "
            "of the mixvi repository. Run them from the root of a clone:\n"
            "    git clone <the mixvi repository> mixvi && cd mixvi\n"
            '    pip install -e ".[bench]"\n'
            f"    python -m benchmarks.{args.suite}",
            file=sys.stderr,
        )
        return 1
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module_name = f"benchmarks.{args.suite}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name not in (module_name, "benchmarks"):
            raise  # the suite exists but one of its own imports is missing: show the real error
        print(f"mixvi bench: the '{args.suite}' suite is not available in {root / 'benchmarks'}", file=sys.stderr)
        return 1
    try:
        code = module.main(list(args.suite_args))
    except SystemExit as exc:  # the suite's argparse: --help (0) or a usage error (2)
        return _exit_code(exc)
    return int(code or 0)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mixvi`` and ``python -m mixvi``; returns the exit code (0 ok, 1 failure, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else [str(a) for a in argv])
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return _exit_code(exc)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "demo":
        return _run_demo(args)
    return _run_bench(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
