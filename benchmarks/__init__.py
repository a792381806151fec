"""The benchmark suites of mixvi: a repository folder, not part of the installed package.

Run a suite from the repository root with ``python -m benchmarks.<suite>`` (or ``mixvi bench <suite>``
from a clone); each writes its JSON under ``docs/benchmarks/``, its figures under ``docs/figures/`` and
its section of ``docs/benchmarks.md``, resolved from the repository root.

- ``benchmarks.core``: per-iteration cost of ``MixVI`` against the bare cost of its N B target gradients
  and against NumPyro's ``SVI``.
- ``benchmarks.scale``: cost and memory at large d and N.
- ``benchmarks.dimension``: time per step against d, isotropic IBW against the full-covariance Bures step.
- ``benchmarks.paper``: accuracy of mixvi and the baselines on the targets of ``benchmarks.targets``.
- ``benchmarks.extensions``: the diagonal metric, PSIS reweighting and learned weights.
- ``benchmarks.startup`` and ``benchmarks.compile_census``: what a first fit waits for, and which parts of
  the step its compilation goes to.

Shared pieces: ``benchmarks.report`` (pages, JSON, timing helpers), ``benchmarks.metrics`` (every
accuracy metric), ``benchmarks.targets`` (the target models and their ``Target`` record).
"""
