"""Geometry of mixture VI as optax ``GradientTransformation``s.

The paper's steps (Petit-Talamon, Lambert, Korba, "Variational Inference with Mixtures of
Isotropic Gaussians", arXiv 2506.13613) act on q = (1/N) sum_i N(m_i, eps_i I). NumPyro stores
``{prefix}_locs`` = m (N, d) and ``{prefix}_scales`` unconstrained as u = log sigma (N,),
sigma = sqrt(eps). The ELBO's Euclidean gradients on these leaves are

    g_m = dL/dm_i = (1/N) E_{N_i}[grad psi]
    g_u = dL/du_i = (1/N) E_{N_i}[<X - m_i, grad psi(X)>] = (eps_i / N) lambda_i

so with gbar_i = N g_m and lambda_i = N g_u / eps_i the paper's updates are

    means      m_i <- m_i - gamma gbar_i
    "ibw"      u_i <- u_i + log(1 - gamma lambda_i / d)          (sigma_i <- (1 - gamma lambda_i/d) sigma_i)
    "md"       u_i <- u_i - gamma lambda_i / (2 d)               (eps_i <- eps_i exp(-gamma lambda_i/d))
    "ngd"      1/eps_i <- 1/eps_i + gamma lambda_i / d, then m_i <- m_i - gamma eps_i(new) gbar_i
    "means"    u_i unchanged (fixed-variance mixture VI)

A float ``step_size`` is the paper's fixed step gamma. Guards keep a too-large fixed step from
producing an invalid variance: IBW's factor (1 - gamma lambda/d) and NGD's precision ratio
(1 + gamma eps lambda/d) are clipped below at ``min_factor`` (0.1) and ``min_factor**2``; each clip
is counted in the state (``num_clipped``) and ``MixVI.run`` warns about it.

``step_size="auto"`` is a scale-free rule (docs/theory.md): the step of component i is
gamma_i = eta eps_i for ibw/md/means and gamma_i = eta for ngd (so eta is dimensionless: eta = 1 is
a Newton step on a Gaussian target), each step lies in a Wasserstein trust region (the mean moves
at most ``trust`` sigma_i sqrt(d), sigma_i changes by a factor in [1 - trust, 1 + trust]), and eta
follows the loss passed as ``value``: it grows 2% while a fast running average of the loss
(decay 0.9) lies below a slow one (decay 0.99) by more than twice the fast average's own noise (a real
downward trend), and shrinks 0.5% otherwise (a plateau: there a smaller step only lowers the
Monte-Carlo jitter), within [eta_min, eta_max]. A step whose gradients or loss are not finite is
rejected (zero update) and halves eta.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mixvi.loop import tree_all_finite

METHODS = ("ibw", "md", "ngd", "means")
LOCS_SUFFIX = "_locs"
SCALES_SUFFIX = "_scales"
METRIC_SUFFIX = "_metric"
WEIGHTS_SUFFIX = "_weight_logits"


class MixtureStepState(NamedTuple):
    """State of a mixture-geometry transform.

    eta: current dimensionless step (auto) or the fixed step gamma; loss_avg, loss_slow: fast and
    slow running averages of the loss, loss_var: running variance of the loss around loss_avg
    (auto); count: steps taken; num_clipped: components whose step hit a guard or the trust region
    so far; num_rejected: consecutive rejected (non-finite) steps.
    """

    eta: jax.Array
    loss_avg: jax.Array
    loss_slow: jax.Array
    loss_var: jax.Array
    count: jax.Array
    num_clipped: jax.Array
    num_rejected: jax.Array


class AutoStep(NamedTuple):
    """Parameters of ``step_size="auto"`` (see module docstring)."""

    eta0: float = 0.1
    eta_min: float = 0.01
    eta_max: float = 0.5
    trust: float = 0.5
    grow: float = 1.02
    shrink: float = 0.995
    avg_decay: float = 0.9
    slow_decay: float = 0.99


def component_step(
    method: str,
    locs: jax.Array,
    log_scales: jax.Array,
    mean_grad: jax.Array,
    lam: jax.Array,
    gamma: jax.Array,
    *,
    trust: float | None = None,
    min_factor: float = 0.1,
    metric: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One paper step for all components at once, from the same iterate.

    locs (N, d), log_scales (N,) = log sigma, mean_grad (N, d) = E_{N_i}[grad psi],
    lam (N,) = E_{N_i}[<X - m_i, grad psi>] / eps_i, gamma scalar or (N,).
    Returns (new_locs, new_log_scales, clipped (N,) bool). With ``trust`` set, the Wasserstein
    trust region of the auto rule is applied; otherwise only the validity guards. With a diagonal
    ``metric`` D the step is taken in whitened coordinates y = D^(-1/2) x: the mean step becomes
    m_i <- m_i - gamma D gbar_i (lambda is the same in both coordinates) and the trust region is
    measured in y.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    d = locs.shape[-1]
    gamma = jnp.broadcast_to(jnp.asarray(gamma, locs.dtype), log_scales.shape)
    eps = jnp.exp(2.0 * log_scales)
    s = gamma * lam / d
    clipped = jnp.zeros(log_scales.shape, bool)
    lo, hi = (1.0 - trust, 1.0 + trust) if trust is not None else (min_factor, jnp.inf)
    if method == "ibw":
        factor = 1.0 - s
        clipped = clipped | (factor < lo) | (factor > hi)
        du = jnp.log(jnp.clip(factor, lo, hi))
    elif method == "md":
        du = -0.5 * s
        if trust is not None:
            clipped = clipped | (du < jnp.log(lo)) | (du > jnp.log(hi))
            du = jnp.clip(du, jnp.log(lo), jnp.log(hi))
    elif method == "ngd":
        # precision ratio eps_old/eps_new = 1 + gamma eps lambda/d; sigma ratio = ratio^(-1/2)
        ratio = 1.0 + s * eps
        rlo, rhi = 1.0 / hi**2, 1.0 / lo**2
        clipped = clipped | (ratio < rlo) | (ratio > rhi)
        du = -0.5 * jnp.log(jnp.clip(ratio, rlo, rhi))
    else:
        du = jnp.zeros_like(log_scales)
    new_log_scales = log_scales + du
    mean_gamma = gamma * jnp.exp(2.0 * new_log_scales) if method == "ngd" else gamma
    dm = -mean_gamma[:, None] * mean_grad
    if metric is not None:
        dm = dm * metric
    if trust is not None:
        radius = trust * jnp.exp(log_scales) * jnp.sqrt(d)
        norm = jnp.linalg.norm(dm if metric is None else dm / jnp.sqrt(metric), axis=-1)
        too_far = norm > radius
        clipped = clipped | too_far
        dm = dm * jnp.where(too_far, radius / jnp.maximum(norm, 1e-30), 1.0)[:, None]
    return locs + dm, new_log_scales, clipped


def mixture_pairs(tree: Any) -> list[str]:
    """Prefixes p such that ``tree`` holds both ``p_locs`` and ``p_scales`` (non-masked); the
    optional ``p_metric`` (log D, diagonal metric) and ``p_weight_logits`` (learned weights) belong
    to the same guide."""
    if not isinstance(tree, dict):
        raise TypeError(
            "mixvi.optim transforms expect the params dict NumPyro's SVI passes "
            f"({{'auto_locs': ..., 'auto_scales': ...}}), got {type(tree).__name__}"
        )
    live = {k for k, v in tree.items() if not isinstance(v, optax.MaskedNode)}
    prefixes = sorted(
        k[: -len(LOCS_SUFFIX)]
        for k in live
        if k.endswith(LOCS_SUFFIX) and k[: -len(LOCS_SUFFIX)] + SCALES_SUFFIX in live
    )
    paired = {p + s for p in prefixes for s in (LOCS_SUFFIX, SCALES_SUFFIX, METRIC_SUFFIX, WEIGHTS_SUFFIX)}
    stray = sorted(live - paired)
    if stray:
        raise ValueError(
            f"mixvi.optim mixture transforms got params {stray} that are not a mixture guide's "
            "'{prefix}_locs'/'{prefix}_scales' pair. Wrap the transform so other params get "
            "their own optimizer: mixvi.optim.for_mixture(mixvi.optim.ibw(...), other=optax.adam(1e-2))"
        )
    if not prefixes:
        raise ValueError("no '{prefix}_locs'/'{prefix}_scales' pair found in the params")
    return prefixes


def mixture_step(
    method: str,
    step_size: float | str = "auto",
    *,
    auto: AutoStep = AutoStep(),
    min_factor: float = 0.1,
    metric_step_size: float = 0.1,
) -> optax.GradientTransformationExtraArgs:
    """The paper's update for ``method`` as an optax transform (see the module docstring).

    ``update(grads, state, params, value=loss)``: ``grads`` and ``params`` are dicts holding one or
    more ``{prefix}_locs`` (N, d) / ``{prefix}_scales`` (N,) pairs, scales unconstrained (log sigma)
    as NumPyro's SVI passes them. ``value`` (the loss, passed by SVI) drives the auto step.

    mixvi's extensions (docs/theory.md), present when the guide has the leaves:
    - ``{prefix}_metric`` = log D (d,), a shared diagonal metric: every step runs in whitened
      coordinates, and D takes a shape-only mirror step log D <- log D - eta_D (t - mean(t)) with
      t_k = 2 dL/dlog D_k = sum_i w_i E_{N_i}[(x_k - m_ik) d_k psi] (eta_D = ``metric_step_size``, or eta
      under 'auto'), then mean(log D) is moved into the scales so that q is unchanged by the split.
    - ``{prefix}_weight_logits`` (N,): the Wasserstein-Fisher-Rao weight step (Lambert et al. 2022,
      arXiv 2205.15902) w_i <- w_i exp(-gamma (f_i - sum_j w_j f_j)), f_i = E_{N_i}[psi], recovered as
      f_i - fbar = (dL/dlogit_i) / w_i. Only MixVI's stratified estimator gives unbiased weight
      gradients, so it passes ``stratified=True``; without it a weights leaf is an error.
    All expectations are recovered from the ELBO gradients with w_i in place of 1/N:
    gbar_i = g_m / w_i, lambda_i = g_u / (w_i eps_i).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    is_auto = isinstance(step_size, str)
    if is_auto and step_size != "auto":
        raise ValueError(f"step_size must be a positive float or 'auto', got {step_size!r}")
    if not is_auto and not (float(step_size) > 0):
        raise ValueError(f"step_size must be a positive float or 'auto', got {step_size!r}")
    if not 0.0 < auto.trust < 1.0:
        raise ValueError(f"AutoStep.trust must lie in (0, 1) so IBW's factor stays positive, got {auto.trust}")

    def init_fn(params: Any) -> MixtureStepState:
        dtype = params[mixture_pairs(params)[0] + LOCS_SUFFIX].dtype
        eta = auto.eta0 if is_auto else float(step_size)
        z = jnp.zeros((), jnp.int32)
        nan = jnp.asarray(jnp.nan, dtype)
        return MixtureStepState(jnp.asarray(eta, dtype), nan, nan, jnp.zeros((), dtype), z, z, z)

    def update_fn(
        grads: Any, state: MixtureStepState, params: Any = None, *, value: Any = None, stratified: bool = False, **extra
    ):
        del extra
        if params is None:
            raise ValueError("mixvi.optim transforms need params: call update(grads, state, params)")
        prefixes = mixture_pairs(grads)
        ok = tree_all_finite(grads)  # masked (optax.MaskedNode) leaves have no arrays
        if value is not None:
            ok = ok & jnp.isfinite(value)
        updates = dict(grads)
        n_clip = jnp.zeros((), jnp.int32)
        for p in prefixes:
            locs, u = params[p + LOCS_SUFFIX], params[p + SCALES_SUFFIX]
            n, d = locs.shape
            eps = jnp.exp(2.0 * u)
            has_w = p + WEIGHTS_SUFFIX in grads and not isinstance(grads[p + WEIGHTS_SUFFIX], optax.MaskedNode)
            has_d = p + METRIC_SUFFIX in grads and not isinstance(grads[p + METRIC_SUFFIX], optax.MaskedNode)
            if has_w and not stratified:
                raise ValueError(
                    f"'{p}{WEIGHTS_SUFFIX}': learned mixture weights need MixVI's stratified per-component "
                    "estimates; SVI's reparametrised ELBO gradient ignores the discrete component choice. "
                    "Train a weights='fisher-rao' guide with mixvi.MixVI, or use weights='uniform' with SVI."
                )
            w = jax.nn.softmax(params[p + WEIGHTS_SUFFIX]) if has_w else jnp.full((n,), 1.0 / n, locs.dtype)
            metric = jnp.exp(params[p + METRIC_SUFFIX]) if has_d else None
            gbar = grads[p + LOCS_SUFFIX] / w[:, None]
            lam = grads[p + SCALES_SUFFIX] / (w * eps)
            if is_auto:
                gamma = state.eta if method == "ngd" else state.eta * eps
                trust = auto.trust
            else:
                gamma, trust = jnp.asarray(step_size, locs.dtype), None
            new_locs, new_u, clipped = component_step(
                method, locs, u, gbar, lam, gamma.astype(locs.dtype), trust=trust, min_factor=min_factor, metric=metric
            )
            n_clip = n_clip + jnp.sum(clipped & ok).astype(jnp.int32)
            if has_d:
                t = 2.0 * grads[p + METRIC_SUFFIX]
                eta_d = state.eta if is_auto else metric_step_size
                dlog = -eta_d * (t - jnp.mean(t))
                if is_auto:
                    bound = jnp.log1p(auto.trust)
                    dlog = jnp.clip(dlog, -bound, bound)
                new_log_d = params[p + METRIC_SUFFIX] + dlog
                shift = jnp.mean(new_log_d)
                new_u = new_u + 0.5 * shift
                updates[p + METRIC_SUFFIX] = jnp.where(ok, new_log_d - shift - params[p + METRIC_SUFFIX], 0.0)
            if has_w:
                excess = grads[p + WEIGHTS_SUFFIX] / w  # f_i - sum_j w_j f_j
                eta_w = state.eta if is_auto else jnp.asarray(step_size, locs.dtype)
                dlogit = -eta_w * excess
                if is_auto:
                    bound = jnp.log1p(auto.trust)
                    dlogit = jnp.clip(dlogit, -bound, bound)
                logits = params[p + WEIGHTS_SUFFIX]
                new_logits = logits + dlogit
                new_logits = new_logits - jax.scipy.special.logsumexp(new_logits)
                updates[p + WEIGHTS_SUFFIX] = jnp.where(ok, new_logits - logits, 0.0)
            updates[p + LOCS_SUFFIX] = jnp.where(ok, new_locs - locs, 0.0)
            updates[p + SCALES_SUFFIX] = jnp.where(ok, new_u - u, 0.0)
        eta, fast, slow, var = state.eta, state.loss_avg, state.loss_slow, state.loss_var
        if is_auto:
            if value is not None:
                v = jnp.asarray(value, fast.dtype)
                first = jnp.isnan(fast)
                a, b = auto.avg_decay, auto.slow_decay
                new_fast = jnp.where(first, v, a * fast + (1 - a) * v)
                new_slow = jnp.where(first, v, b * slow + (1 - b) * v)
                new_var = jnp.where(first, 0.0, a * var + (1 - a) * (v - new_fast) ** 2)
                # sd of an exponential average (decay a) of noise with variance var
                noise = jnp.sqrt(new_var * (1 - a) / (1 + a))
                trending = first | (new_fast < new_slow - 2.0 * noise)
                eta_ok = jnp.where(trending, eta * auto.grow, eta * auto.shrink)
                fast, slow, var = (jnp.where(ok, x, y) for x, y in ((new_fast, fast), (new_slow, slow), (new_var, var)))
            else:
                eta_ok = eta
            eta = jnp.clip(jnp.where(ok, eta_ok, 0.5 * eta), auto.eta_min, auto.eta_max)
        new_state = MixtureStepState(
            eta,
            fast,
            slow,
            var,
            state.count + 1,
            state.num_clipped + n_clip,
            jnp.where(ok, 0, state.num_rejected + 1).astype(jnp.int32),
        )
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ibw(step_size: float | str = "auto", **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """Isotropic Bures-Wasserstein step: m <- m - gamma gbar, sigma <- (1 - gamma lambda/d) sigma."""
    return mixture_step("ibw", step_size, **kwargs)


def md(step_size: float | str = "auto", **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """Entropic mirror-descent step: m <- m - gamma gbar, eps <- eps exp(-gamma lambda/d)."""
    return mixture_step("md", step_size, **kwargs)


def ngd(step_size: float | str = "auto", **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """Natural-gradient baseline: 1/eps <- 1/eps + gamma lambda/d, m <- m - gamma eps_new gbar."""
    return mixture_step("ngd", step_size, **kwargs)


def means_only(step_size: float | str = "auto", **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """Fixed-variance baseline (Huix et al., ICML 2024): m <- m - gamma gbar, variances frozen."""
    return mixture_step("means", step_size, **kwargs)


def mixture_labels(params: dict) -> dict:
    """Label every leaf 'mixture' (a mixture guide's locs/scales/metric/weights) or 'other', for multi_transform."""
    paired = set()
    for k in params:
        if k.endswith(LOCS_SUFFIX) and k[: -len(LOCS_SUFFIX)] + SCALES_SUFFIX in params:
            p = k[: -len(LOCS_SUFFIX)]
            paired |= {p + s for s in (LOCS_SUFFIX, SCALES_SUFFIX, METRIC_SUFFIX, WEIGHTS_SUFFIX)}
    return {k: ("mixture" if k in paired else "other") for k in params}


def for_mixture(
    mixture: optax.GradientTransformation, other: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
    """Route mixture-guide params to ``mixture`` and every other param (e.g. an AutoNormal inside
    an AutoGuideList, or model params) to ``other``: ``optax.multi_transform`` with ``mixture_labels``."""
    return optax.multi_transform({"mixture": mixture, "other": other}, mixture_labels)


__all__: Sequence[str] = (
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
)

