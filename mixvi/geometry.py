"""The geometry of mixture VI: the paper's steps on typed parameters, and the auto step.

For q = sum_i w_i N(m_i, eps_i D) (the paper: w_i = 1/N, D = I) the updates of "Variational
Inference with Mixtures of Isotropic Gaussians" (Petit-Talamon, Lambert, Korba, NeurIPS 2025,
arXiv 2506.13613) act on every component at once, from the same iterate, given the Stein-form
expectations gbar_i = E_{N_i}[grad psi] and lambda_i = E_{N_i}[<X - m_i, grad psi(X)>] / eps_i
(psi = log q + V, V = -log target; see :mod:`mixvi.estimators`):

    means      m_i <- m_i - gamma gbar_i
    "ibw"      sigma_i <- (1 - gamma lambda_i / d) sigma_i             (isotropic Bures-Wasserstein)
    "md"       eps_i <- eps_i exp(-gamma lambda_i / d)                  (entropic mirror descent)
    "ngd"      1/eps_i <- 1/eps_i + gamma lambda_i / d, then m_i <- m_i - gamma eps_i(new) gbar_i
    "means"    eps_i unchanged (fixed-variance mixture VI)

mixvi's extensions: a shared diagonal metric D takes a shape-only mirror step
log D <- log D - eta_D (t - mean(t)), t_k = sum_i w_i E_{N_i}[(x_k - m_ik) d_k psi], with mean(log D)
moved into the scales so that q is unchanged by the split; learned weights take the
Wasserstein-Fisher-Rao step w_i <- w_i exp(-gamma (f_i - sum_j w_j f_j)), f_i = E_{N_i}[psi]
("Variational inference via Wasserstein gradient flows", Lambert et al., arXiv 2205.15902); a shared
dense metric A = L L^T (det L = 1) takes the shape-only step of :func:`dense_metric_step` on the Stein
matrix S = sum_i w_i E_{N_i}[(y - mu_i) grad_y psi^T] in whitened coordinates y = L^(-1) x.

A float ``step_size`` is the paper's fixed step gamma; guards keep a too-large fixed step from
producing an invalid variance (IBW's factor and NGD's precision ratio are clipped below at
``min_factor`` and ``min_factor**2``). ``step_size="auto"`` uses gamma_i = eta eps_i (ibw / md /
means) or gamma_i = eta (ngd), so that eta is dimensionless (eta = 1 is a Newton step on a Gaussian
target); every step lies in a Wasserstein trust region (the mean moves at most ``trust`` sigma_i
sqrt(d), sigma_i changes by a factor in [1 - trust, 1 + trust]); eta grows 2 % while a fast running
average of the loss lies below a slow one by more than twice the fast average's own noise, and
shrinks 0.5 % otherwise; a step whose inputs are not finite is rejected (no change) and halves eta.

Everything here is a pure function of JAX arrays: this module depends on JAX only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mixvi import metric_root
from mixvi.lowrank import LowRankMetric, lowrank_metric_step

METHODS = ("ibw", "md", "ngd", "means")
UNKNOWN_METHOD = "unknown method {!r}; choose one of " + ", ".join(repr(m) for m in METHODS)
BAD_STEP_SIZE = "step_size must be a positive float or 'auto', got {!r}"
BAD_TRUST = "AutoStep.trust must lie in (0, 1) so that IBW's factor stays positive, got {!r}"


class MixtureParams(NamedTuple):
    """The variational parameters, unconstrained.

    Attributes
    ----------
    locs : jax.Array
        Component means m_i, shape (N, d).
    log_scales : jax.Array
        u_i = log sigma_i, shape (N,); component i has covariance exp(2 u_i) D.
    log_metric : jax.Array or None
        log D, shape (d,), the shared diagonal metric; None means D = I (the paper).
    logits : jax.Array or None
        Normalised log weights log w_i, shape (N,); None means w_i = 1/N (the paper).
    metric_tril : jax.Array or None
        L, lower triangular (d, d) with a positive diagonal and det L = 1: the dense metric L L^T
        shared by the components (component i has covariance exp(2 u_i) L L^T); None means no
        dense metric. At most one of ``log_metric``, ``metric_tril`` and ``metric_lowrank`` is set.
    metric_lowrank : LowRankMetric or None
        A low-rank-plus-diagonal metric A = D^(1/2) P^2 D^(1/2) (:mod:`mixvi.lowrank`) with det of its
        root 1: component i has covariance exp(2 u_i) A; None means no such metric.
    """

    locs: jax.Array
    log_scales: jax.Array
    log_metric: jax.Array | None = None
    logits: jax.Array | None = None
    metric_tril: jax.Array | None = None
    metric_lowrank: LowRankMetric | None = None


def metric_of(params: MixtureParams) -> Any:
    """The ``metric`` argument of the estimators, steps and moves: D (d,), a LowRankMetric, or None."""
    if params.metric_lowrank is not None:
        return params.metric_lowrank
    return None if params.log_metric is None else jnp.exp(params.log_metric)


class MixtureGradient(NamedTuple):
    """The per-component expectations a step needs (estimated by :func:`mixvi.estimators.stein_estimate`).

    Attributes
    ----------
    mean_grad : jax.Array
        gbar_i = E_{N_i}[grad psi], shape (N, d) (in the coordinates of ``locs``).
    lam : jax.Array
        lambda_i = E_{N_i}[<X - m_i, grad psi(X)>] / eps_i, shape (N,).
    metric_term : jax.Array or None
        With a diagonal metric t_k = sum_i w_i E_{N_i}[(x_k - m_ik) d_k psi], shape (d,); with a dense
        metric the Stein matrix S = sum_i w_i E_{N_i}[(y - mu_i) grad_y psi^T] in whitened coordinates
        y = L^(-1) x, shape (d, d); with a low-rank metric that matrix as its factors (Z, R), S = Z^T R
        (two (B, d) arrays); None with a dense or low-rank metric keeps it fixed.
    weight_excess : jax.Array or None
        f_i - sum_j w_j f_j with f_i = E_{N_i}[psi], shape (N,); needed with learned weights.
    """

    mean_grad: jax.Array
    lam: jax.Array
    metric_term: jax.Array | None = None
    weight_excess: jax.Array | None = None


class AutoStep(NamedTuple):
    """Parameters of ``step_size="auto"``.

    Attributes
    ----------
    eta0, eta_min, eta_max : float
        Initial dimensionless step and its bounds.
    trust : float
        Radius of the Wasserstein trust region, in (0, 1).
    grow, shrink : float
        Factors applied to eta on a downward trend of the loss and on a plateau.
    avg_decay, slow_decay : float
        Decays of the fast and slow running averages of the loss.
    """

    eta0: float = 0.1
    eta_min: float = 0.01
    eta_max: float = 0.5
    trust: float = 0.5
    grow: float = 1.02
    shrink: float = 0.995
    avg_decay: float = 0.9
    slow_decay: float = 0.99


class StepSizeState(NamedTuple):
    """State of the step size.

    Attributes
    ----------
    eta : jax.Array
        The dimensionless step (auto) or the fixed step gamma.
    loss_avg, loss_slow : jax.Array
        Fast and slow running averages of the loss (auto; NaN before the first step).
    loss_var : jax.Array
        Running variance of the loss around ``loss_avg`` (auto).
    num_rejected : jax.Array
        Consecutive rejected (non-finite) steps.
    """

    eta: jax.Array
    loss_avg: jax.Array
    loss_slow: jax.Array
    loss_var: jax.Array
    num_rejected: jax.Array


class StepInfo(NamedTuple):
    """What one geometry step did: the step size it used, the number of components whose step hit
    a guard or the trust region, and whether the step was rejected (inputs not finite)."""

    step_size: jax.Array
    num_clipped: jax.Array
    rejected: jax.Array


def check_settings(method: str, step_size: float | str, auto: AutoStep) -> bool:
    """Validate the settings of a step; return True for ``step_size="auto"``.

    Raises
    ------
    ValueError
        On an unknown method, a step size that is neither positive nor 'auto', or a bad trust radius.
    """
    if method not in METHODS:
        raise ValueError(UNKNOWN_METHOD.format(method))
    if isinstance(step_size, str):
        if step_size != "auto":
            raise ValueError(BAD_STEP_SIZE.format(step_size))
    elif isinstance(step_size, bool) or not float(step_size) > 0:
        raise ValueError(BAD_STEP_SIZE.format(step_size))
    if not 0.0 < auto.trust < 1.0:
        raise ValueError(BAD_TRUST.format(auto.trust))
    return isinstance(step_size, str)


def init_step_size(step_size: float | str, auto: AutoStep = AutoStep(), dtype=jnp.float32) -> StepSizeState:
    """The initial :class:`StepSizeState` (eta = ``auto.eta0`` under 'auto', else the fixed step)."""
    eta = auto.eta0 if isinstance(step_size, str) else float(step_size)
    nan = jnp.asarray(jnp.nan, dtype)
    return StepSizeState(jnp.asarray(eta, dtype), nan, nan, jnp.zeros((), dtype), jnp.zeros((), jnp.int32))


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
    metric_tril: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One paper step for all components at once, from the same iterate.

    Parameters
    ----------
    method : str
        'ibw', 'md', 'ngd' or 'means'.
    locs, log_scales : jax.Array
        m (N, d) and u = log sigma (N,).
    mean_grad, lam : jax.Array
        gbar (N, d) and lambda (N,).
    gamma : jax.Array
        The step, scalar or per component (N,).
    trust : float, optional
        Apply the auto rule's Wasserstein trust region of this radius; otherwise only the guards.
    min_factor : float
        Floor of IBW's factor (1 - gamma lambda / d); NGD's precision ratio is floored at its square.
    metric : jax.Array, optional
        D (d,): the step runs in whitened coordinates y = D^(-1/2) x, so the mean step becomes
        m_i <- m_i - gamma D gbar_i (lambda is the same in both coordinates) and the trust region
        is measured in y.
    metric_tril : jax.Array, optional
        L (d, d) of a dense metric L L^T: as ``metric`` with y = L^(-1) x, the mean step
        m_i <- m_i - gamma L L^T gbar_i. ``metric`` may instead be a
        :class:`~mixvi.lowrank.LowRankMetric` with root T: then y = T^(-1) x and the step is -gamma T T^T gbar_i.

    Returns
    -------
    tuple of jax.Array
        New locs (N, d), new log scales (N,), and which components were clipped (N,) bool.
    """
    if method not in METHODS:
        raise ValueError(UNKNOWN_METHOD.format(method))
    d = locs.shape[-1]
    gamma = jnp.broadcast_to(jnp.asarray(gamma, locs.dtype), log_scales.shape)
    eps = jnp.exp(2.0 * log_scales)
    s = gamma * lam / d
    clipped = jnp.zeros(log_scales.shape, bool)
    lo, hi = (1.0 - trust, 1.0 + trust) if trust is not None else (min_factor, jnp.inf)
    if method == "ibw":
        factor = 1.0 - s
        clipped = (factor < lo) | (factor > hi)
        du = jnp.log(jnp.clip(factor, lo, hi))
    elif method == "md":
        du = -0.5 * s
        if trust is not None:
            clipped = (du < jnp.log(lo)) | (du > jnp.log(hi))
            du = jnp.clip(du, jnp.log(lo), jnp.log(hi))
    elif method == "ngd":
        # precision ratio eps_old / eps_new = 1 + gamma eps lambda / d; sigma ratio = ratio^(-1/2)
        ratio = 1.0 + s * eps
        rlo, rhi = 1.0 / hi**2, 1.0 / lo**2
        clipped = (ratio < rlo) | (ratio > rhi)
        du = -0.5 * jnp.log(jnp.clip(ratio, rlo, rhi))
    else:
        du = jnp.zeros_like(log_scales)
    new_log_scales = log_scales + du
    mean_gamma = gamma * jnp.exp(2.0 * new_log_scales) if method == "ngd" else gamma
    # the step in whitened coordinates y: -gamma E[grad_y psi], mapped back to x below
    dy = -mean_gamma[:, None] * mean_grad
    dy = metric_root.transpose_apply(dy, metric, metric_tril)
    if trust is not None:
        radius = trust * jnp.exp(log_scales) * jnp.sqrt(d)
        norm = jnp.linalg.norm(dy, axis=-1)
        too_far = norm > radius
        clipped = clipped | too_far
        dy = dy * jnp.where(too_far, radius / jnp.maximum(norm, 1e-30), 1.0)[:, None]
    return locs + metric_root.apply(dy, metric, metric_tril), new_log_scales, clipped


def _bounded(delta: jax.Array, auto: AutoStep | None) -> jax.Array:
    if auto is None:
        return delta
    bound = jnp.log1p(auto.trust)
    return jnp.clip(delta, -bound, bound)


def _metric_cap(auto: AutoStep | None) -> jax.Array | float:
    """Largest Frobenius norm of a shared metric's step eta S0: log(1 + trust) under the auto rule, 1/2 under
    a fixed step (the dense and the low-rank metric alike)."""
    return jnp.log1p(auto.trust) if auto is not None else 0.5


def dense_metric_step(tril: jax.Array, stein: jax.Array, eta: jax.Array, auto: AutoStep | None):
    """The shape-only step of a dense metric A = L L^T: A <- L F F^T L^T with F = I + Phi(Delta), where
    Delta = -eta S0, S0 is the trace-free symmetric part of the Stein matrix S, and Phi(Delta) is Delta's
    strictly lower triangle plus half its diagonal (the first-order Cholesky factor of I + Delta); the
    step's Frobenius norm is capped (at log(1 + trust) under the auto rule, at 1/2 under a fixed step)
    so that F's diagonal stays above 3/4. Then det L is reset to 1.

    F F^T = I + Delta + Phi Phi^T agrees with exp(Delta) to first order, as chol(I + Delta) does, and its
    second-order term is positive semi-definite, as exp's is; the new factor L F is lower triangular with a
    positive diagonal by construction, so no Cholesky factorisation is needed (at d = 256 it cost three
    times the rest of this step on a 2-core CPU). On a Gaussian target S0 = (eps L^T Sigma^-1 L - I)_0, so
    the step contracts the error of the shared covariance by (1 - eta) to first order whatever the
    conditioning, and its fixed point, S0 = 0, is the exact one.

    Returns the new L and the shift of log sigma that keeps every covariance sigma_i^2 L L^T what the
    step made it."""
    d = tril.shape[0]
    sym = 0.5 * (stein + stein.T)
    delta = -eta * (sym - jnp.trace(sym) / d * jnp.eye(d, dtype=sym.dtype))
    cap = _metric_cap(auto)
    norm = jnp.linalg.norm(delta)
    delta = delta * jnp.minimum(1.0, cap / jnp.maximum(norm, 1e-30))
    # L F = L + L Phi(Delta): a product of lower-triangular matrices, so lower triangular, with diagonal
    # L_kk (1 + Delta_kk / 2) > 0
    new = tril + tril @ (jnp.tril(delta, -1) + 0.5 * jnp.diag(jnp.diag(delta)))
    shift = jnp.mean(jnp.log(jnp.diag(new)))
    return new * jnp.exp(-shift), shift


def _all_finite(*arrays: Any) -> jax.Array:
    ok = jnp.array(True)
    for a in jax.tree.leaves(arrays):
        ok = ok & jnp.all(jnp.isfinite(a))
    return ok


def _adapt_eta(state: StepSizeState, loss: jax.Array | None, ok: jax.Array, auto: AutoStep) -> StepSizeState:
    """The auto rule's eta update from the loss (see the module docstring)."""
    eta, fast, slow, var = state.eta, state.loss_avg, state.loss_slow, state.loss_var
    if loss is not None:
        v = jnp.asarray(loss, fast.dtype)
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
    return StepSizeState(eta, fast, slow, var, state.num_rejected)


def update(
    params: MixtureParams,
    grad: MixtureGradient,
    state: StepSizeState,
    *,
    method: str = "ibw",
    step_size: float | str = "auto",
    auto: AutoStep = AutoStep(),
    loss: jax.Array | None = None,
    min_factor: float = 0.1,
    metric_step_size: float = 0.1,
    eta_cap: jax.Array | None = None,
) -> tuple[MixtureParams, StepSizeState, StepInfo]:
    """One step of ``method`` on every parameter present in ``params`` (see the module docstring).

    Parameters
    ----------
    params : MixtureParams
        The current parameters, ``locs`` as an (N, d) array.
    grad : MixtureGradient
        The expectations at ``params``.
    state : StepSizeState
        The step size's state.
    method, step_size, auto, min_factor, metric_step_size
        The settings (``metric_step_size`` is the metric's fixed step; under 'auto' it is eta).
    loss : jax.Array, optional
        The loss estimate at ``params``: drives the auto step; a non-finite loss rejects the step.
    eta_cap : jax.Array, optional
        Under 'auto', an upper bound on eta for this step (the run's final phase,
        :func:`mixvi.vi.final_eta_cap`); the step-size state itself is not changed by it.

    Returns
    -------
    tuple
        The new params (the old ones when rejected), the new step-size state and a :class:`StepInfo`.
    """
    is_auto = isinstance(step_size, str)
    rule = auto if is_auto else None
    locs, u = params.locs, params.log_scales
    dtype = locs.dtype
    ok = _all_finite(grad.mean_grad, grad.lam, grad.metric_term, grad.weight_excess, loss)
    eps = jnp.exp(2.0 * u)
    metric = metric_of(params)
    eta = state.eta if eta_cap is None or not is_auto else jnp.minimum(state.eta, eta_cap)
    if is_auto:
        gamma = eta if method == "ngd" else eta * eps
        trust = auto.trust
    else:
        gamma, trust = jnp.asarray(step_size, dtype), None
    new_locs, new_u, clipped = component_step(
        method,
        locs,
        u,
        grad.mean_grad,
        grad.lam,
        gamma.astype(dtype),
        trust=trust,
        min_factor=min_factor,
        metric=metric,
        metric_tril=params.metric_tril,
    )
    new_log_metric = new_logits = new_tril = new_lowrank = None
    eta_d = jnp.asarray(eta if is_auto else metric_step_size, dtype)  # the metric's step, every kind
    if params.metric_lowrank is not None and grad.metric_term is None:
        new_lowrank = params.metric_lowrank  # the SVI path: no Stein matrix, the metric stays
    elif params.metric_lowrank is not None:
        left, right = grad.metric_term
        lowrank, shift = lowrank_metric_step(params.metric_lowrank, left, right, eta_d, _metric_cap(rule))
        new_u = new_u + shift
        new_lowrank = jax.tree.map(lambda a, b: jnp.where(ok, a, b), lowrank, params.metric_lowrank)
    if params.metric_tril is not None and grad.metric_term is None:
        new_tril = params.metric_tril  # no Stein matrix (the SVI path): the dense metric stays as it is
    elif params.metric_tril is not None:
        tril, shift = dense_metric_step(params.metric_tril, grad.metric_term, eta_d, rule)
        new_u = new_u + shift
        new_tril = jnp.where(ok, tril, params.metric_tril)
    if params.log_metric is not None:
        t = grad.metric_term
        log_d = params.log_metric + _bounded(-eta_d * (t - jnp.mean(t)), rule)
        shift = jnp.mean(log_d)
        new_u = new_u + 0.5 * shift
        new_log_metric = jnp.where(ok, log_d - shift, params.log_metric)
    if params.logits is not None:
        eta_w = eta if is_auto else jnp.asarray(step_size, dtype)
        logits = params.logits + _bounded(-eta_w * grad.weight_excess, rule)
        new_logits = jnp.where(ok, logits - jax.scipy.special.logsumexp(logits), params.logits)
    new_params = MixtureParams(
        jnp.where(ok, new_locs, locs), jnp.where(ok, new_u, u), new_log_metric, new_logits, new_tril, new_lowrank
    )
    new_state = _adapt_eta(state, loss, ok, auto) if is_auto else state
    new_state = new_state._replace(num_rejected=jnp.where(ok, 0, state.num_rejected + 1).astype(jnp.int32))
    info = StepInfo(eta, jnp.sum(clipped & ok).astype(jnp.int32), ~ok)
    return new_params, new_state, info
