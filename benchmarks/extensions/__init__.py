"""The extensions suite (``python -m benchmarks.extensions``): evidence for mixvi's extensions beyond the paper.

Three experiments, several seeds each; every fit reports the Pareto k-hat of its importance ratios.

1. **Scales.** A centred eight-schools model (mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau),
   y_j ~ N(theta_j, sigma_j), the classic data) and an axis-aligned ill-conditioned Gaussian
   N(mu, diag(s^2)), d = 100, s log-spaced over 1e-2..1. ``MixVI`` with ``metric="isotropic"`` and
   ``metric="diagonal"`` (N = 1 and 5 components) against NumPyro's ``AutoMultivariateNormal`` fitted by
   ``SVI`` + Adam. Reference: exact for the Gaussian; for eight schools NUTS on the non-centred
   parameterisation, mapped to the centred model's unconstrained coordinates (mu, log tau, theta), and
   log Z by quadrature (theta integrated out analytically). Metrics: |mean - mean_ref| / sd_ref and
   |sd / sd_ref - 1| per unconstrained coordinate (max and average over coordinates) and KL(q || p)
   (closed form when q is Gaussian and p is; otherwise a Monte-Carlo estimate of E_q[log q + V] + log Z).
2. **Mode mass.** p = 0.3 N((-3, 0), I) + 0.7 N((3, 0), I), N = 4 components: uniform weights (mass
   on the right read off q, and PSIS-reweighted) against ``weights="fisher-rao"``. The mass is
   P(x_0 > 0): closed form under q, exact under p (0.7 Phi(3) + 0.3 Phi(-3)).
3. **Reweighting.** For every fit, S draws z_s ~ q, log w_s = -V(z_s) - log q(z_s), Pareto-smoothed with
   ``mixvi.psis_log_weights``; the summaries (mean / sd errors, mode mass) of the same draws unweighted
   and self-normalised-weighted are compared (common random numbers, so the difference is the weights'
   doing, not the Monte-Carlo noise of two samples). ``importance_resample`` (the user-facing path,
   which resamples with these weights) is also run on the bimodal fits.

Modules: ``settings`` (``Settings``, ``Method``, the claim thresholds), ``models`` (targets and their
references), ``fitting`` (``Fitter``, ``evaluate_fit``), ``runs`` (the experiments, ``run_benchmark``),
``claims`` (aggregation and verdicts), ``report`` (tables and the markdown section), ``figures`` and
``cli`` (``main(argv) -> int``). The metrics are ``benchmarks.metrics``'s.
"""

from benchmarks.extensions.cli import main

__all__ = ["main"]
