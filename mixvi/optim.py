"""The mixture geometry as optax transforms, for NumPyro's ``SVI``.

NumPyro's ``SVI`` hands an optax transform the Euclidean ELBO gradients of the guide's params:
``{prefix}_locs`` = m (N, d), ``{prefix}_scales`` stored unconstrained as u = log sigma (N,), and,
when learned, ``{prefix}_metric`` = log D (d,) and ``{prefix}_weight_logits`` (N,). With weights w_i
these gradients are

    dL/dm_i = w_i gbar_i,   dL/du_i = w_i eps_i lambda_i,   dL/dlog D_k = t_k / 2,
    dL/dlogit_i = w_i (f_i - sum_j w_j f_j)

(gbar, lambda, t, f as in :mod:`mixvi.geometry`), so each transform recovers the paper's quantities
from them and applies :func:`mixvi.geometry.update`, the same step the functional core
(:func:`mixvi.mixture_vi`) and ``MixVI`` take. The transform's state counts the clipped component
steps and the consecutive rejected steps, since ``SVI`` has no other channel for them.

Learned weights need MixVI's stratified per-component estimates (the reparametrised ELBO gradient
ignores the discrete component choice), so a weights leaf is refused unless ``stratified=True``.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from mixvi.geometry import (
    AutoStep,
    MixtureGradient,
    MixtureParams,
    StepSizeState,
    check_settings,
    component_step,
    init_step_size,
    update,
)
from mixvi.lowrank import LowRankMetric

LOCS_SUFFIX = "_locs"
SCALES_SUFFIX = "_scales"
METRIC_SUFFIX = "_metric"
WEIGHTS_SUFFIX = "_weight_logits"
METRIC_TRIL_SUFFIX = "_metric_tril"
METRIC_BASIS_SUFFIX = "_metric_basis"
METRIC_STRETCH_SUFFIX = "_metric_log_stretch"
# in the order of MixtureParams' fields
SUFFIXES = (LOCS_SUFFIX, SCALES_SUFFIX, METRIC_SUFFIX, WEIGHTS_SUFFIX, METRIC_TRIL_SUFFIX)
# a low-rank metric's params: they stay as they are on this path (no Stein matrix), like a dense one's
LOWRANK_SUFFIXES = (METRIC_SUFFIX, METRIC_BASIS_SUFFIX, METRIC_STRETCH_SUFFIX)

NOT_A_DICT = (
    "mixvi.optim transforms expect the params dict NumPyro's SVI passes "
    "({{'auto_locs': ..., 'auto_scales': ...}}), got {}"
)
STRAY_PARAMS = (
    "mixvi.optim mixture transforms got params {} that are not a mixture guide's "
    "'{{prefix}}_locs'/'{{prefix}}_scales' pair. Wrap the transform so other params get "
    "their own optimizer: mixvi.optim.for_mixture(mixvi.optim.ibw(...), other=optax.adam(1e-2))"
)
NO_PAIR = "no '{prefix}_locs'/'{prefix}_scales' pair found in the params"
NEEDS_PARAMS = "mixvi.optim transforms need params: call update(grads, state, params)"
DENSE_FIXED_IN_SVI = (
    "'{}': SVI keeps a dense or low-rank metric fixed at its current value (the identity for a new guide) and trains the "
    "components in it: the shared covariance's step needs the Stein matrix, which SVI's gradients do not carry. "
    "Train with mixvi.MixVI to learn it, or build the guide with metric='isotropic' or 'diagonal' for SVI."
)
UNSTRATIFIED_WEIGHTS = (
    "'{}': learned mixture weights need MixVI's stratified per-component estimates; SVI's "
    "reparametrised ELBO gradient ignores the discrete component choice. Train a weights='fisher-rao' "
    "guide with mixvi.MixVI, or use weights='uniform' with SVI."
)


class MixtureStepState(NamedTuple):
    """State of a mixture transform.

    Attributes
    ----------
    step_size : StepSizeState
        The step size (eta, loss averages, consecutive rejections).
    count : jax.Array
        Steps taken.
    num_clipped : jax.Array
        Component steps that hit a guard or the trust region so far.
    """

    step_size: StepSizeState
    count: jax.Array
    num_clipped: jax.Array

    @property
    def eta(self) -> jax.Array:
        """The current dimensionless step (auto) or the fixed step."""
        return self.step_size.eta

    @property
    def num_rejected(self) -> jax.Array:
        """Consecutive rejected (non-finite) steps."""
        return self.step_size.num_rejected


def _live(tree: dict) -> set[str]:
    return {k for k, v in tree.items() if not isinstance(v, optax.MaskedNode)}


def mixture_pairs(tree: Any) -> list[str]:
    """The prefixes p for which ``tree`` holds both ``p_locs`` and ``p_scales``.

    Raises
    ------
    TypeError
        When ``tree`` is not a dict.
    ValueError
        When it holds no pair, or params that belong to no pair (route those with :func:`for_mixture`).
    """
    if not isinstance(tree, dict):
        raise TypeError(NOT_A_DICT.format(type(tree).__name__))
    live = _live(tree)
    prefixes = sorted(
        k[: -len(LOCS_SUFFIX)]
        for k in live
        if k.endswith(LOCS_SUFFIX) and k[: -len(LOCS_SUFFIX)] + SCALES_SUFFIX in live
    )
    stray = sorted(live - {p + s for p in prefixes for s in SUFFIXES + LOWRANK_SUFFIXES})
    if stray:
        raise ValueError(STRAY_PARAMS.format(stray))
    if not prefixes:
        raise ValueError(NO_PAIR)
    return prefixes


def _typed(params: dict, grads: dict, prefix: str, stratified: bool) -> tuple[MixtureParams, MixtureGradient]:
    """The params of one guide and the paper's quantities recovered from its ELBO gradients."""
    live = _live(grads)
    tril = None
    if prefix + METRIC_TRIL_SUFFIX in live:  # SVI hands over the unconstrained vector of the Cholesky factor
        tril = biject_to(constraints.lower_cholesky)(params[prefix + METRIC_TRIL_SUFFIX])
    locs, u = params[prefix + LOCS_SUFFIX], params[prefix + SCALES_SUFFIX]
    n = locs.shape[0]
    lowrank = None
    if prefix + METRIC_BASIS_SUFFIX in live:  # unconstrained: log D, Q, kappa
        lowrank = LowRankMetric(*(params[prefix + suffix] for suffix in LOWRANK_SUFFIXES))
    log_metric = params[prefix + METRIC_SUFFIX] if prefix + METRIC_SUFFIX in live and lowrank is None else None
    logits = params[prefix + WEIGHTS_SUFFIX] if prefix + WEIGHTS_SUFFIX in live else None
    if logits is not None and not stratified:
        raise ValueError(UNSTRATIFIED_WEIGHTS.format(prefix + WEIGHTS_SUFFIX))
    w = jnp.full((n,), 1.0 / n, locs.dtype) if logits is None else jax.nn.softmax(logits)
    grad = MixtureGradient(
        grads[prefix + LOCS_SUFFIX] / w[:, None],
        grads[prefix + SCALES_SUFFIX] / (w * jnp.exp(2.0 * u)),
        None if log_metric is None else 2.0 * grads[prefix + METRIC_SUFFIX],
        None if logits is None else grads[prefix + WEIGHTS_SUFFIX] / w,
    )
    return MixtureParams(locs, u, log_metric, logits, tril, lowrank), grad


def mixture_step(
    method: str,
    step_size: float | str = "auto",
    *,
    auto: AutoStep = AutoStep(),
    min_factor: float = 0.1,
    metric_step_size: float = 0.1,
) -> optax.GradientTransformationExtraArgs:
    """The paper's update for ``method`` as an optax transform.

    Parameters
    ----------
    method : str
        'ibw', 'md', 'ngd' or 'means'.
    step_size : float or 'auto'
        The paper's fixed step gamma, or the auto step (:mod:`mixvi.geometry`).
    auto : AutoStep
        Parameters of the auto step.
    min_factor : float
        Floor of IBW's factor under a fixed step.
    metric_step_size : float
        Fixed step of a learned diagonal metric.

    Returns
    -------
    optax.GradientTransformationExtraArgs
        ``update(grads, state, params, value=loss)``; ``value`` (the loss SVI passes) drives the
        auto step, and a non-finite gradient or loss gives a zero update.
    """
    check_settings(method, step_size, auto)
    settings = dict(
        method=method, step_size=step_size, auto=auto, min_factor=min_factor, metric_step_size=metric_step_size
    )

    def init_fn(params: Any) -> MixtureStepState:
        prefixes = mixture_pairs(params)
        for p in prefixes:
            for suffix in (METRIC_TRIL_SUFFIX, METRIC_BASIS_SUFFIX):
                if p + suffix in _live(params):
                    warnings.warn(DENSE_FIXED_IN_SVI.format(p + suffix), UserWarning, stacklevel=2)
        dtype = params[prefixes[0] + LOCS_SUFFIX].dtype
        zero = jnp.zeros((), jnp.int32)
        return MixtureStepState(init_step_size(step_size, auto, dtype), zero, zero)

    def update_fn(
        grads: Any, state: MixtureStepState, params: Any = None, *, value: Any = None, stratified: bool = False, **extra
    ):
        del extra
        if params is None:
            raise ValueError(NEEDS_PARAMS)
        updates = dict(grads)
        step_state, clipped = state.step_size, state.num_clipped
        new_step_state = step_state
        for p in mixture_pairs(grads):
            typed, grad = _typed(params, grads, p, stratified)
            new, new_step_state, info = update(typed, grad, step_state, loss=value, **settings)
            clipped = clipped + info.num_clipped
            for suffix, old_leaf, new_leaf in zip(SUFFIXES, typed, new):
                if old_leaf is not None and suffix != METRIC_TRIL_SUFFIX:
                    updates[p + suffix] = new_leaf - old_leaf
            if typed.metric_tril is not None:  # the dense metric stays fixed
                updates[p + METRIC_TRIL_SUFFIX] = jnp.zeros_like(grads[p + METRIC_TRIL_SUFFIX])
            if typed.metric_lowrank is not None:  # so does a low-rank one
                for suffix in LOWRANK_SUFFIXES:
                    updates[p + suffix] = jnp.zeros_like(grads[p + suffix])
        return updates, MixtureStepState(new_step_state, state.count + 1, clipped)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ibw(step_size: float | str = "auto", **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """Isotropic Bures-Wasserstein step: m <- m - gamma gbar, sigma <- (1 - gamma lambda / d) sigma."""
    return mixture_step("ibw", step_size, **kwargs)


def md(step_size: float | str = "auto", **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """Entropic mirror-descent step: m <- m - gamma gbar, eps <- eps exp(-gamma lambda / d)."""
    return mixture_step("md", step_size, **kwargs)


def ngd(step_size: float | str = "auto", **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """Natural-gradient baseline: 1/eps <- 1/eps + gamma lambda / d, m <- m - gamma eps_new gbar."""
    return mixture_step("ngd", step_size, **kwargs)


def means_only(step_size: float | str = "auto", **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """Fixed-variance baseline (Huix et al., ICML 2024): m <- m - gamma gbar, variances frozen."""
    return mixture_step("means", step_size, **kwargs)


def mixture_labels(params: dict) -> dict:
    """Label every leaf 'mixture' (a mixture guide's locs / scales / metric / weights) or 'other'."""
    paired = set()
    for k in params:
        if k.endswith(LOCS_SUFFIX) and k[: -len(LOCS_SUFFIX)] + SCALES_SUFFIX in params:
            paired |= {k[: -len(LOCS_SUFFIX)] + s for s in SUFFIXES}
    return {k: ("mixture" if k in paired else "other") for k in params}


def for_mixture(
    mixture: optax.GradientTransformation, other: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
    """Route mixture-guide params to ``mixture`` and every other param (e.g. an AutoNormal inside an
    AutoGuideList, or model params) to ``other``: ``optax.multi_transform`` with :func:`mixture_labels`."""
    return optax.multi_transform({"mixture": mixture, "other": other}, mixture_labels)


__all__ = [
    "AutoStep",
    "MixtureStepState",
    "component_step",
    "for_mixture",
    "ibw",
    "md",
    "means_only",
    "mixture_labels",
    "mixture_pairs",
    "mixture_step",
    "ngd",
]
