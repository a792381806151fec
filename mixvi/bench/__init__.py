"""Performance benchmarks of mixvi (``mixvi bench <name>``).

``mixvi.bench.core``: per-iteration cost of ``MixVI`` against the bare cost of its N B target
gradients and against NumPyro's ``SVI`` (``python -m mixvi.bench.core`` or ``mixvi bench core``).
``mixvi.bench.targets``: the benchmark's Bayesian logistic regression model.
"""
