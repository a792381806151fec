"""Performance benchmarks of mixvi (``mixvi bench <name>``).

``benchmarks.core``: per-iteration cost of ``MixVI`` against the bare cost of its N B target
gradients and against NumPyro's ``SVI`` (``python -m benchmarks.core`` or ``mixvi bench core``).
``benchmarks.targets.logistic``: the benchmark's Bayesian logistic regression model.
"""
