"""Configuration of the extensions suite: the sizes and choices of one run (``Settings``), the fitted
families (``Method``) and the claim thresholds. The report records the ``Settings`` of the run it comes
from, field by field."""

from __future__ import annotations

from dataclasses import dataclass

# claim thresholds (stated in the report)
WITHIN_RATIO = 1.25  # "within the error of AutoMultivariateNormal": error <= 1.25 x its error ...
WITHIN_ABS = 0.05  # ... or at most 0.05 (sd units / nats) above it
MASS_TOL = 0.05  # mode mass within 0.05 of the truth
CHANGE_TOL = 0.01  # reweighting "helps" / "hurts" a summary when it changes its error by more than this ...
NOISE_FACTOR = 2.0  # ... and, separately reported, by more than 2 / sqrt(ESS) (beyond the weighted estimate's noise)


@dataclass(frozen=True)
class Settings:
    """Sizes and choices of one run (``--quick`` shrinks the sizes).

    Attributes
    ----------
    seeds, bimodal_seeds
        Seeds per configuration of experiment 1, and of experiment 2 (the bimodal target).
    gauss_steps, eight_steps, bimodal_steps
        MixVI steps on the Gaussians, on eight schools and on the bimodal target.
    mvn_steps
        SVI steps of AutoMultivariateNormal.
    num_samples
        B, MixVI's draws per component, and SVI's ELBO particles.
    num_draws
        S, draws of q per evaluation.
    ref_chains, ref_samples, ref_warmup
        The eight-schools NUTS reference.
    gauss_dim
        d of the ill-conditioned Gaussian.
    components
        The N values of experiment 1.
    correlated, rho
        Whether to fit the AR(1)-correlated Gaussian (outside the diagonal family), and its correlation.
    method, step_size
        MixVI's update rule and step size.
    init_scale
        Initial scale of every guide in experiment 1.
    bimodal_components, bimodal_init_scale, bimodal_init_loc
        Experiment 2's N, initial scale and initial mean (every coordinate).
    mvn_lr, mvn_lr_decay
        AutoMultivariateNormal's Adam rate, decayed exponentially to ``mvn_lr * mvn_lr_decay``.
    quick
        Whether this is the ``--quick`` configuration.
    """

    seeds: int = 5
    bimodal_seeds: int = 10
    gauss_steps: int = 2000
    eight_steps: int = 3000
    bimodal_steps: int = 2000
    mvn_steps: int = 5000
    num_samples: int = 10
    num_draws: int = 16000
    ref_chains: int = 4
    ref_samples: int = 5000
    ref_warmup: int = 1000
    gauss_dim: int = 100
    components: tuple[int, ...] = (1, 5)
    correlated: bool = True
    rho: float = 0.5
    method: str = "ibw"
    step_size: str | float = "auto"
    init_scale: float = 0.1
    bimodal_components: int = 4
    bimodal_init_scale: float = 3.0
    bimodal_init_loc: float = 0.0
    mvn_lr: float = 3e-2
    mvn_lr_decay: float = 1e-3
    quick: bool = False


QUICK = Settings(
    seeds=2,
    bimodal_seeds=4,
    correlated=False,
    gauss_steps=1000,
    eight_steps=1500,
    bimodal_steps=1000,
    mvn_steps=2500,
    num_draws=4000,
    ref_chains=2,
    ref_samples=2000,
    ref_warmup=500,
    quick=True,
)


@dataclass(frozen=True)
class Method:
    """One fitted family: MixVI with (metric, weights, N), or AutoMultivariateNormal (``kind='mvn'``)."""

    kind: str  # 'mixvi' or 'mvn'
    n_components: int = 1
    metric: str = "isotropic"
    weights: str = "uniform"

    @property
    def label(self) -> str:
        """Row label of the tables."""
        if self.kind == "mvn":
            return "AutoMultivariateNormal (SVI+Adam)"
        extra = "" if self.weights == "uniform" else f", {self.weights}"
        return f"{self.metric} N={self.n_components}{extra}"


def thresholds() -> dict[str, float]:
    """The claim thresholds, as recorded in the report."""
    return {
        "within_ratio": WITHIN_RATIO,
        "within_abs": WITHIN_ABS,
        "mass_tol": MASS_TOL,
        "change_tol": CHANGE_TOL,
        "noise_factor": NOISE_FACTOR,
    }
