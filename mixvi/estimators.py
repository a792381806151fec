"""Stratified, reparametrised Stein-form estimators of the mixture-VI gradients (arXiv 2506.13613).

Draws x_ib = m_i + sigma_i z_b, b = 1..B, from every component; by default the B noise vectors z_b
are shared by all components (as the authors' reference code), optionally independent z_ib.
With psi = log q + V (V = -log target, e.g. NumPyro's potential energy) the estimates are::

    gbar_i   = (1/B) sum_b grad psi(x_ib)                            ~ E_{N_i}[grad psi] = N grad_{m_i} F
    lambda_i = (1/(B eps_i)) sum_b <x_ib - m_i, grad psi(x_ib)>      ~ E_{N_i}[Delta psi] = 2 N dF/d eps_i
    loss     = (1/(N B)) sum_ib [log q(x_ib) + V(x_ib)]              ~ F = -ELBO

Every sample is scored under the whole mixture. With learned weights w_i and a shared diagonal
metric D (mixvi's extensions, docs/theory.md) everything is computed in whitened coordinates
y = D^(-1/2) x, where every component is isotropic, and the estimator also returns
f_i = (1/B) sum_b psi(x_ib) (the weight step) and the per-coordinate Stein term
t_k = sum_i w_i (1/B) sum_b (x_ibk - m_ik) d_k psi(x_ib) (the metric step). With a dense metric L L^T
the draws are x_ib = m_i + sigma_i L z_b, the whitened coordinates y = L^(-1) x, and the metric term is
the Stein matrix S = sum_i w_i (1/B) sum_b (y_ib - mu_i) grad_y psi(y_ib)^T (d, d). With shared noise the mixture part costs
O(N^2 d + N B d + N^2 B): all inner products come from G = M M^T (N, N) and P = Z M^T (B, N), so
neither an (N, B, N, d) tensor nor an (N B) x N x d matrix product is formed. Independent noise
needs Q = z_ib . m_j, one O(N^2 B d) product.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from mixvi import draws, metric_root
from mixvi import lowrank as lr
from mixvi.lowrank import SHARED_NOISE_NEEDED, LowRankMetric

TILT_NEEDS_EVERY_VALUE = "a tilt needs V at every draw (potential of shape (N, B), loss_draws=None), got {}"
TILT_CAP = 6.0
"""Largest weight of a draw under the tilt (the weights have mean 1 over a component's B draws, so with
the default B = 10 one draw carries at most 60 % of a component's step)."""
TILT_CAP_ROUNDS = 4
"""Rounds of capping and rescaling (each caps the draws the previous rescaling lifted past the cap)."""
TILT_SPREAD = 2.0
"""The tilt's exponent is at most this over the sd of a component's log p - log q: its weights vary by a
factor of about e^2 per sd, so a component far from the posterior (log ratios spread over many nats) takes
nearly the paper's step. With (cap, spread) = (3, 1) the funnels stayed under-covered (horseshoe log tau
0.99 posterior sds off against 0.89, see docs/theory.md)."""


class SteinEstimate(NamedTuple):
    """The estimates of one step.

    Attributes
    ----------
    gbar : jax.Array
        E_{N_i}[grad_x psi], shape (N, d).
    lam : jax.Array
        lambda_i, shape (N,).
    loss : jax.Array
        The -ELBO estimate sum_i w_i f_i (scalar).
    log_q : jax.Array
        log q at the draws, shape (N, B).
    f : jax.Array
        Per-component mean of psi, shape (N,).
    t : jax.Array or None
        The per-coordinate Stein term, shape (d,) (None unless asked for).
    bad : jax.Array or None
        With ``quarantine``: the components whose draws hit a non-finite V or grad V, shape (N,) bool.
    """

    gbar: jax.Array
    lam: jax.Array
    loss: jax.Array
    log_q: jax.Array
    f: jax.Array
    t: jax.Array | None = None
    bad: jax.Array | None = None


def draw_noise(key: jax.Array, n: int, b: int, d: int, *, shared: bool = True, dtype=jnp.float32) -> jax.Array:
    """Standard normal noise: (B, d) shared by all components, or (N, B, d) independent."""
    return draws.normal(key, (b, d) if shared else (n, b, d), dtype)


def step_noise(
    key: jax.Array, n: int, b: int, d: int, *, shared: bool = True, dtype=jnp.float32, num_keys: int = 2
) -> tuple[jax.Array, list[jax.Array]]:
    """A step's noise (as :func:`draw_noise`) and its keys (the target's first, then the moves', then any
    the caller wants), from one call of the generator (:func:`mixvi.draws.normal_and_key`)."""
    return draws.normal_and_key(key, (b, d) if shared else (n, b, d), dtype, num_keys)


def draw_points(
    locs: jax.Array,
    log_scales: jax.Array,
    z: jax.Array,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
) -> jax.Array:
    """x_ib = m_i + sigma_i D^(1/2) z_(i)b (diagonal metric D), m_i + sigma_i L z_(i)b (dense metric
    L L^T) or m_i + sigma_i T z_(i)b (a :class:`~mixvi.lowrank.LowRankMetric` with root T), shape (N, B, d)."""
    return locs[:, None, :] + jnp.exp(log_scales)[:, None, None] * metric_root.apply(z, metric, scale_tril)


def whiten(
    locs: jax.Array, metric: jax.Array | None = None, scale_tril: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """The means in the whitened coordinates where every component is isotropic (L^(-1) m_i, or
    D^(-1/2) m_i for a diagonal metric, or m_i), and the log-determinant of the metric's square root
    (log abs(det L), or (1/2) sum log D, else 0) that log q loses there."""
    return metric_root.solve(locs, metric, scale_tril), metric_root.log_det(metric, scale_tril, locs.dtype)


class MixtureTerms(NamedTuple):
    log_q: jax.Array  # (N, B)
    mean_score: jax.Array  # (N, d)
    stein_score: jax.Array  # (N,)
    coord_score: jax.Array | None  # (d,)
    draw_weights: jax.Array | None = None  # (N, B), with a tilt


def _noise_products(locs: jax.Array, z: jax.Array):
    """What the squared distances from draws m_i + s_i z_b to every mean m_j are made of, with centred means
    mc (N, d): |m_i - m_j|^2 (N, 1, N), <z_b, m_j> as q (N, L, N) and <z_b, m_i> as q_self (N, L), and
    |z_b|^2 (N, L), for noise z (L, d) shared by the components or (N, L, d) of their own; then
    |m_i + s_i z_b - m_j|^2 = |m_i - m_j|^2 + 2 s_i (q_self - q) + s_i^2 |z_b|^2."""
    n = locs.shape[0]
    mc = locs - jnp.mean(locs, axis=0)
    gram = mc @ mc.T
    gdiag = jnp.diag(gram)
    if z.ndim == 2:
        p = z @ mc.T  # (B, N): z_b . m_j
        q = jnp.broadcast_to(p[None], (n,) + p.shape)  # (N, B, N)
        q_self = p.T  # (N, B)
        zz = jnp.broadcast_to(jnp.sum(z**2, -1)[None], (n, z.shape[0]))
    else:
        q = jnp.einsum("ibd,jd->ibj", z, mc)
        q_self = jnp.einsum("ibd,id->ib", z, mc)
        zz = jnp.sum(z**2, -1)
    between = gdiag[:, None, None] + gdiag[None, None, :] - 2.0 * gram[:, None, :]
    return mc, between, q, q_self, zz


def mixture_terms(
    locs: jax.Array,
    log_scales: jax.Array,
    z: jax.Array,
    log_weights: jax.Array | None = None,
    *,
    coord: bool = False,
    full: bool = False,
    factor: bool = False,
    score_weights: jax.Array | None = None,
    tilt: tuple[jax.Array, jax.Array | float] | None = None,
) -> MixtureTerms:
    """The log q part of the estimates at x_ib = m_i + sigma_i z, in whitened coordinates.

    Returns log q (N, B); the mean score (1/B) sum_b grad log q(x_ib) (N, d); the Stein score
    (1/B) sum_b <x_ib - m_i, grad log q(x_ib)> (N,); and with ``coord`` the per-coordinate
    sum_i w_i (1/B) sum_b (x_ibk - m_ik) d_k log q(x_ib) (d,), or with ``full`` the whole matrix
    sum_i w_i (1/B) sum_b (x_ib - m_i) grad log q(x_ib)^T (d, d) (the dense metric's Stein term), or with
    ``factor`` (shared noise) the (B, d) right factor R of that matrix, which is z^T R. ``score_weights``
    (N,) replaces w_i in those sums over i (the shared metric's weights, :func:`stein_estimate`);
    ``tilt`` = (V at every draw (N, B), exponent) weighs the draws in every average over b (not in log q)
    by :func:`tilt_weights` of log p - log q there, returned as ``draw_weights``.

    The logits are shifted per (i, b) by ``|z|^2 / 2 + d u_i`` so that the O(d) parts cancel
    analytically::

        L'_ibj = log w_j - c_ibj / (2 eps_j) - (|z|^2 / 2) expm1(2 (u_i - u_j)) - d (u_j - u_i)
        c_ibj  = |m_i - m_j|^2 + 2 sigma_i <z, m_i - m_j>   (= |x_ib - m_j|^2 - eps_i |z|^2)
    """
    n, d = locs.shape
    shared = z.ndim == 2
    sig = jnp.exp(log_scales)
    eps = sig**2
    if log_weights is None:
        log_weights = jnp.full((n,), -jnp.log(n), locs.dtype)
    mc, between, q, q_self, zz = _noise_products(locs, z)
    cross = between + 2.0 * sig[:, None, None] * (q_self[:, :, None] - q)
    du = log_scales[:, None, None] - log_scales[None, None, :]  # u_i - u_j
    logits = log_weights - 0.5 * cross / eps[None, None, :] - 0.5 * zz[:, :, None] * jnp.expm1(2.0 * du) + d * du
    lse = logsumexp(logits, axis=-1)
    log_q = lse - 0.5 * zz - 0.5 * d * jnp.log(2 * jnp.pi) - d * log_scales[:, None]
    r = jnp.exp(logits - lse[..., None])
    w = r / eps[None, None, :]  # (N, B, N)
    draw_weights = None
    if tilt is not None:  # every later use of w and a is an average over the draws b
        # log q here lacks the metric's log-determinant: a constant, which the weights' normalisation removes
        draw_weights = tilt_weights(-(log_q + tilt[0]), tilt[1])
        w = w * draw_weights[:, :, None]
    a = jnp.sum(w, -1)  # (N, B)
    b = z.shape[-2]
    az = a @ z / b if shared else jnp.einsum("ib,ibd->id", a, z) / b
    mean_score = -jnp.mean(a, 1)[:, None] * mc - sig[:, None] * az + jnp.mean(w, 1) @ mc
    inner = -a * (q_self + sig[:, None] * zz) + jnp.sum(w * q, -1)
    stein_score = sig * jnp.mean(inner, 1)
    coord_score = None
    if coord:
        ws = (jnp.exp(log_weights) if score_weights is None else score_weights) * sig
        a2 = a @ z**2 / b if shared else jnp.einsum("ib,ibd->id", a, z**2) / b
        if shared:
            cross_term = jnp.sum(mc * (jnp.einsum("i,ibj->bj", ws, w).T @ z), 0) / b
        else:
            cross_term = jnp.einsum("i,ibk,ibj,jk->k", ws, z, w, mc) / b
        coord_score = -jnp.sum(ws[:, None] * mc * az, 0) - jnp.sum((ws * sig)[:, None] * a2, 0) + cross_term
    if full or factor:
        shares = jnp.exp(log_weights) if score_weights is None else score_weights
        coord_score = _full_score_term(mc, sig, z, shares * sig, a, w, factor)
    return MixtureTerms(log_q, mean_score, stein_score, coord_score, draw_weights)


def _full_score_term(mc, sig, z, ws, a, w, factor: bool = False) -> jax.Array:
    """sum_i ws_i (1/B) sum_b z_(i)b score_ib^T with score_ib = -a_ib (mc_i + sigma_i z_b) + sum_j w_ibj mc_j
    (the score of the mixture at the draw, centred coordinates), without forming the (N, B, d) scores
    when the noise is shared: O(B d^2 + N B d + N^2 B)."""
    b = z.shape[-2]
    if z.ndim == 2:
        pull = (ws[:, None] * a).T @ mc  # (B, d): sum_i ws_i a_ib mc_i
        beta = (ws * sig) @ a  # (B,): sum_i ws_i sigma_i a_ib
        push = jnp.einsum("i,ibj->bj", ws, w) @ mc  # (B, d): sum_i ws_i sum_j w_ibj mc_j
        factor_r = (push - pull - beta[:, None] * z) / b  # the matrix is z^T R
        return factor_r if factor else z.T @ factor_r
    pull = (ws[:, None] * jnp.einsum("ib,ibd->id", a, z)).T @ mc
    square = jnp.einsum("ib,ibk,ibl->kl", ws[:, None] * a * sig[:, None], z, z)
    push = jnp.einsum("i,ibk,ibl->kl", ws, z, jnp.einsum("ibj,jd->ibd", w, mc))
    return (push - pull - square) / b


def _gradient_moments(z: jax.Array, parts: tuple[jax.Array, ...], coord: bool, draw_weights: jax.Array | None = None):
    """From grad V given as parts split along the draws axis b (N, B_p, d): sum_b grad V (N, d),
    <z_b, grad V(x_ib)> (N, B) and, with ``coord``, sum_b z_bk d_k V(x_ib) (N, d); with ``draw_weights``
    (N, B) every draw's term times its weight. Working on the parts avoids concatenating them, and the
    weights enter the products instead of a weighted copy of the gradients (a pass over an (N, B, d)
    array less each)."""
    shared = z.ndim == 2
    total, inner, per_coord, start = 0.0, [], 0.0, 0
    for g in parts:
        width = g.shape[1]
        zp = z[start : start + width] if shared else z[:, start : start + width]
        dots = jnp.einsum("bd,ibd->ib" if shared else "ibd,ibd->ib", zp, g)
        if draw_weights is None:
            total = total + jnp.sum(g, 1)
            inner.append(dots)
            if coord:
                per_coord = per_coord + jnp.sum((zp[None] if shared else zp) * g, axis=1)
        else:
            wp = draw_weights[:, start : start + width]
            total = total + jnp.einsum("ib,ibd->id", wp, g)
            inner.append(dots * wp)
            if coord:
                per_coord = per_coord + jnp.sum(wp[:, :, None] * (zp[None] if shared else zp) * g, axis=1)
        start += width
    return total, jnp.concatenate(inner, axis=1), per_coord if coord else None


def stein_estimate(
    locs: jax.Array,
    log_scales: jax.Array,
    z: jax.Array,
    potential: jax.Array,
    grad_potential: jax.Array | tuple[jax.Array, ...],
    *,
    weights: jax.Array | None = None,
    metric: jax.Array | None = None,
    coord: bool = False,
    scale_tril: jax.Array | None = None,
    quarantine: bool = False,
    metric_weights: jax.Array | None = None,
    tilt: jax.Array | float | None = None,
    loss_draws: jax.Array | None = None,
) -> SteinEstimate:
    """Combine the closed-form mixture terms with V and grad V evaluated at the draws x_ib.

    Parameters
    ----------
    locs, log_scales : jax.Array
        m (N, d) and u = log sigma (N,).
    z : jax.Array
        The standard normal noise, (B, d) shared or (N, B, d).
    potential : jax.Array
        V at the first L <= B draws of every component, (N, L): the loss and f average over those
        (still unbiased, and V's value costs L/B of the draws).
    grad_potential : jax.Array or tuple of jax.Array
        grad V at all draws (N, B, d), or parts of it split along the draws axis.
    weights : jax.Array, optional
        w (N,); uniform by default.
    metric : jax.Array, optional
        The diagonal metric D (d,); the identity by default.
    coord : bool
        Also return the metric's per-coordinate Stein term t.
    scale_tril : jax.Array, optional
        The lower-triangular factor L (d, d) of a dense metric L L^T: the estimates are computed in
        whitened coordinates y = L^(-1) x, ``gbar`` is returned in x coordinates (E[grad_x psi]) and
        ``t`` is the (d, d) Stein matrix sum_i w_i E_{N_i}[(y - L^(-1) m_i) grad_y psi^T].
    metric_weights : jax.Array, optional
        (N,) weights, summing to 1, of the components in the shared metric's Stein term (``t``) in place
        of w: :func:`mixvi.adapt.metric_shares` leaves out components far from the posterior's mass.
    tilt : float or jax.Array, optional
        Given (``potential`` must then hold V at every draw), the expectations gbar, lambda and the
        metric's terms are averages over the draws weighted by :func:`tilt_weights` with this exponent
        (mass-covering; 0 gives weights 1); the loss, f and log q are not weighted. None (the default) is
        the paper's KL(q || p) without the weights' arithmetic.
    loss_draws : jax.Array, optional
        A (traced) count L: only V's values at the first L draws of every component are read (the others
        may be NaN: V was not evaluated there), so the loss and f average over those, and a tilt weighs
        the other draws by their component's mean weight.
    quarantine : bool
        Treat the components whose draws hit a non-finite V or grad V as if V and grad V were 0 there
        (their estimates are then finite, and the others' and the shared terms are untouched), and
        report them in ``bad``; when every component is bad nothing is changed. A non-finite value
        at a draw of component i makes its own per-component sums non-finite, so without a dense metric
        they are read off and zeroed on those (N, d) sums instead of on the (N, B, d) gradients.

    Returns
    -------
    SteinEstimate
    """
    parts = grad_potential if isinstance(grad_potential, tuple) else (grad_potential,)
    read = None
    if loss_draws is not None:
        read = jnp.arange(potential.shape[1]) < loss_draws
        known = jnp.where(read, potential, jnp.nan)  # for the tilt: NaN where V was not evaluated
        potential = jnp.where(read, potential, 0.0)
    spec = None
    if tilt is not None:
        if potential.shape[-1] != z.shape[-2]:
            raise ValueError(TILT_NEEDS_EVERY_VALUE.format(potential.shape))
        spec = (potential if read is None else known, tilt)
    if scale_tril is not None or isinstance(metric, LowRankMetric):
        bad = None
        if quarantine:  # both metrics sum the gradients over the components: a NaN of one would reach all
            bad = _only_some(~jnp.all(jnp.isfinite(potential), 1) | _any_non_finite_rows(parts))
            potential = jnp.where(bad[:, None], 0.0, potential)
        if scale_tril is None:
            estimate = _lowrank_estimate(
                locs, log_scales, z, potential, parts, weights, metric, metric_weights, spec, read, bad
            )
        else:
            estimate = _dense_estimate(
                locs, log_scales, z, potential, parts, weights, scale_tril, metric_weights, spec, read, bad
            )
        return estimate._replace(bad=bad)
    if metric is not None:
        root = jnp.sqrt(metric)
        locs, parts = locs / root, tuple(g * root for g in parts)
    log_w = None if weights is None else jnp.log(weights)
    terms = mixture_terms(locs, log_scales, z, log_w, coord=coord, score_weights=metric_weights, tilt=spec)
    log_q = terms.log_q if metric is None else terms.log_q - 0.5 * jnp.sum(jnp.log(metric))
    sig = jnp.exp(log_scales)
    b = z.shape[-2]
    g_sum, zg, zgk = _gradient_moments(z, parts, coord, terms.draw_weights)
    bad = None
    if quarantine:  # the sums are linear in grad V: zeroing them is zeroing its bad components
        bad = _only_some(
            ~(jnp.all(jnp.isfinite(g_sum), 1) & jnp.all(jnp.isfinite(zg), 1) & jnp.all(jnp.isfinite(potential), 1))
        )
        g_sum, zg, potential = _zero_bad(bad, g_sum, zg, potential)
        zgk = None if zgk is None else _zero_bad(bad, zgk)[0]
    gbar = g_sum / b + terms.mean_score
    if metric is not None:
        gbar = gbar / root
    lam = (sig * jnp.mean(zg, 1) + terms.stein_score) / sig**2
    f = _component_loss(log_q, potential, read)
    w = jnp.full(f.shape, 1.0 / f.shape[0], f.dtype) if weights is None else weights
    loss = jnp.sum(w * f)
    t = None
    if coord:
        shares = w if metric_weights is None else metric_weights
        t = jnp.einsum("i,ik->k", shares * sig, zgk) / b + terms.coord_score
    return SteinEstimate(gbar, lam, loss, log_q, f, t, bad)


def _component_loss(log_q: jax.Array, potential: jax.Array, read: jax.Array | None) -> jax.Array:
    """f_i = mean over the draws b with V's value (the first L, or those where ``read``) of log q + V."""
    total = log_q[:, : potential.shape[1]] + potential
    if read is None:
        return jnp.mean(total, 1)
    return jnp.sum(jnp.where(read, total, 0.0), 1) / jnp.sum(read)


def tilt_weights(
    log_ratio: jax.Array, tilt: jax.Array | float, cap: float = TILT_CAP, spread: float = TILT_SPREAD
) -> jax.Array:
    """Mass-covering weights of the draws: w_ib proportional to (p / q)(x_ib)^tau_i within each component,
    normalised to mean 1 over b with no weight above ``cap`` (cap, rescale the others, repeat), with
    tau_i = min(tilt, spread / sd_b(log p - log q)) so that the weights of a component vary by a factor of
    about exp(spread) per sd at most; a draw whose log p - log q is not finite gets the component's mean weight,
    and a component with no finite one weights 1.

    With these weights the component steps follow the first variation of an alpha-divergence
    (alpha = 1 - tau) instead of KL(q || p): where q is already p the ratio is constant and the weights
    are 1, so the exact fit stays a fixed point; where q under-covers p (the ratio is large in a
    component's outer draws) the component is pulled outwards and widened. Far from the posterior the
    log ratios spread over many nats and tau falls towards 0 (the paper's step), which keeps a few draws
    from carrying a component's whole step."""
    finite = jnp.isfinite(log_ratio)
    count = jnp.maximum(jnp.sum(finite, axis=1, keepdims=True), 1)
    ratio = jnp.where(finite, log_ratio, 0.0)
    mean = jnp.sum(ratio, axis=1, keepdims=True) / count
    sd = jnp.sqrt(jnp.sum(jnp.where(finite, (ratio - mean) ** 2, 0.0), axis=1, keepdims=True) / count)
    tau = jnp.minimum(tilt, spread / jnp.maximum(sd, 1e-12))
    raw = jnp.exp(jnp.clip(tau * (ratio - mean), -30.0, 30.0))
    raw = jnp.where(finite, raw, jnp.sum(jnp.where(finite, raw, 0.0), axis=1, keepdims=True) / count)
    # a component without a single finite ratio (V infinite at all its draws) gets weights 1, not 0 / 0
    none = ~jnp.any(finite, axis=1, keepdims=True)
    w = jnp.where(none, 1.0, raw / jnp.where(none, 1.0, jnp.mean(raw, axis=1, keepdims=True)))
    b = w.shape[1]

    def water_fill(_, w):  # cap, then rescale the others so the mean stays 1
        capped = w >= cap
        free = jnp.sum(jnp.where(capped, 0.0, w), axis=1, keepdims=True)
        room = b - cap * jnp.sum(capped, axis=1, keepdims=True)
        return jnp.where(capped, cap, w * room / jnp.maximum(free, 1e-30))

    # a loop, not unrolled rounds: one round's code to compile instead of TILT_CAP_ROUNDS copies
    return jax.lax.fori_loop(0, TILT_CAP_ROUNDS, water_fill, w)


def _any_non_finite_rows(parts: tuple[jax.Array, ...]) -> jax.Array:
    """(N,) bool: component i has a non-finite entry in one of the (N, B_p, d) parts."""
    return jnp.any(jnp.stack([~jnp.all(jnp.isfinite(g), (1, 2)) for g in parts]), 0)


def _only_some(bad: jax.Array) -> jax.Array:
    """``bad``, or no component when every one is bad (then the step is rejected as a whole)."""
    return bad & ~jnp.all(bad)


def _zero_bad(bad: jax.Array | None, *sums: jax.Array) -> tuple[jax.Array, ...]:
    """Per-component sums (N, ...) with the rows of ``bad`` components set to 0 (their gradients count as 0)."""
    if bad is None:
        return sums
    return tuple(jnp.where(bad.reshape((-1,) + (1,) * (x.ndim - 1)), 0.0, x) for x in sums)


def _draw_shares(ws: jax.Array, draw_weights: jax.Array | None, start: int, width: int) -> jax.Array:
    """ws_i times the weights of draws start..start+width (N, width), or ws_i alone (N, 1)."""
    return ws[:, None] if draw_weights is None else ws[:, None] * draw_weights[:, start : start + width]


def _pooled_gradient(
    parts: tuple[jax.Array, ...], ws: jax.Array, draw_weights: jax.Array | None = None, bad: jax.Array | None = None
) -> jax.Array:
    """sum_i ws_i w_ib grad V(x_ib) (B, d) from gradient parts split along the draws axis (shared noise),
    w the draws' weights (1 by default); components marked ``bad`` count as grad V = 0 (their entries may
    be NaN: a select inside the sum over i, which XLA fuses, rather than a cleaned copy of the gradients)."""
    out, start = [], 0
    for g in parts:
        width = g.shape[1]
        c = _draw_shares(ws, draw_weights, start, width)
        # a product and a sum over the leading axis, which XLA fuses: as a dot with b for batch axis the
        # (N, B, d) gradients were first transposed (a copy of them)
        out.append(jnp.sum(c[:, :, None] * (g if bad is None else jnp.where(bad[:, None, None], 0.0, g)), 0))
        start += width
    return jnp.concatenate(out, axis=0)


def _weighted_outer(
    z: jax.Array,
    parts: tuple[jax.Array, ...],
    ws: jax.Array,
    tril: jax.Array,
    draw_weights: jax.Array | None = None,
    bad: jax.Array | None = None,
) -> jax.Array:
    """sum_i ws_i sum_b w_ib z_ib (L^T g_ib)^T (d, d) from gradient parts split along the draws axis, with
    noise of every component's own (N, B, d), w the draws' weights; ``bad`` components count as g = 0."""
    total, start = 0.0, 0
    for g in parts:
        width = g.shape[1]
        c = jnp.broadcast_to(_draw_shares(ws, draw_weights, start, width), g.shape[:2])
        g = g if bad is None else jnp.where(bad[:, None, None], 0.0, g)
        total = total + jnp.einsum("ib,ibk,ibl->kl", c, z[:, start : start + width], g) @ tril
        start += width
    return total


def _dense_estimate(
    locs, log_scales, z, potential, parts, weights, tril, metric_weights=None, tilt=None, read=None, bad=None
) -> SteinEstimate:
    """:func:`stein_estimate` with a dense metric L L^T: the mixture part in y = L^(-1) x, where every
    component is isotropic; grad_y V = L^T grad_x V enters only through products with L z and L, so
    no (N, B, d) array is transformed."""
    mu, shift = whiten(locs, scale_tril=tril)
    log_w = None if weights is None else jnp.log(weights)
    shared = z.ndim == 2
    # with shared noise S = z^T R for a (B, d) factor R: one (d, B) x (B, d) product forms it
    terms = mixture_terms(
        mu,
        log_scales,
        z,
        log_w,
        full=not shared,
        factor=shared,
        score_weights=metric_weights,
        tilt=tilt,
    )
    log_q = terms.log_q - shift
    sig = jnp.exp(log_scales)
    b = z.shape[-2]
    # <L z_b, grad_x V> = <z_b, grad_y V>
    g_sum, zg = _zero_bad(bad, *_gradient_moments(z @ tril.T, parts, False, terms.draw_weights)[:2])
    gbar_y = (g_sum / b) @ tril + terms.mean_score
    gbar = solve_triangular(tril, gbar_y.T, lower=True, trans="T").T  # E[grad_x psi] = L^-T E[grad_y psi]
    lam = (sig * jnp.mean(zg, 1) + terms.stein_score) / sig**2
    f = _component_loss(log_q, potential, read)
    w = jnp.full(f.shape, 1.0 / f.shape[0], f.dtype) if weights is None else weights
    shares = w if metric_weights is None else metric_weights
    if shared:  # S = z^T R, R = the mixture's factor + (sum_i w_i sigma_i grad_y V(x_ib)) / B
        pooled = _pooled_gradient(parts, shares * sig, terms.draw_weights, bad)
        stein = z.T @ (terms.coord_score + (pooled @ tril) / b)
    else:
        stein = terms.coord_score + _weighted_outer(z, parts, shares * sig, tril, terms.draw_weights, bad) / b
    return SteinEstimate(gbar, lam, jnp.sum(w * f), log_q, f, stein)


def _lowrank_estimate(
    locs,
    log_scales,
    z,
    potential,
    parts,
    weights,
    metric: LowRankMetric,
    metric_weights=None,
    tilt=None,
    read=None,
    bad=None,
) -> SteinEstimate:
    """:func:`stein_estimate` with a low-rank metric (root T = D^(1/2) P): as :func:`_dense_estimate` with
    T for L, and the Stein matrix kept as its factors (z, R), S = z^T R (shared noise only)."""
    if z.ndim != 2:
        raise ValueError(SHARED_NOISE_NEEDED)
    mu, shift = whiten(locs, metric)
    log_w = None if weights is None else jnp.log(weights)
    terms = mixture_terms(mu, log_scales, z, log_w, factor=True, score_weights=metric_weights, tilt=tilt)
    log_q = terms.log_q - shift
    sig = jnp.exp(log_scales)
    b = z.shape[-2]
    # <T z_b, grad_x V>
    g_sum, zg = _zero_bad(bad, *_gradient_moments(lr.root_apply(metric, z), parts, False, terms.draw_weights)[:2])
    # E[grad_x psi] = T^(-T) (T^T g + mean score) = g + T^(-T) mean score: one product with T fewer
    gbar = g_sum / b + lr.root_transpose_solve(metric, terms.mean_score)
    lam = (sig * jnp.mean(zg, 1) + terms.stein_score) / sig**2
    f = _component_loss(log_q, potential, read)
    w = jnp.full(f.shape, 1.0 / f.shape[0], f.dtype) if weights is None else weights
    shares = w if metric_weights is None else metric_weights
    pooled = _pooled_gradient(parts, shares * sig, terms.draw_weights, bad)
    right = terms.coord_score + lr.root_transpose_apply(metric, pooled) / b
    return SteinEstimate(gbar, lam, jnp.sum(w * f), log_q, f, (z, right))


def loss_estimate(
    locs: jax.Array,
    log_scales: jax.Array,
    z: jax.Array,
    potential_values: jax.Array,
    *,
    weights: jax.Array | None = None,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
    loss_draws: jax.Array | None = None,
) -> jax.Array:
    """The -ELBO estimate of :func:`stein_estimate` from V's values alone (no gradients).

    ``sum_i w_i (1/L) sum_(b<L) [log q(x_ib) + V(x_ib)]`` with log q from :func:`mixture_terms` in the
    whitened coordinates, exactly the ``loss`` a step reports for the same draws.

    Parameters
    ----------
    locs, log_scales : jax.Array
        m (N, d) and u = log sigma (N,).
    z : jax.Array
        The standard normal noise, (B, d) shared or (N, B, d).
    potential_values : jax.Array
        V at the first L <= B draws of every component, (N, L).
    weights : jax.Array, optional
        w (N,); uniform by default.
    metric : jax.Array, optional
        The diagonal metric D (d,).
    scale_tril : jax.Array, optional
        The lower-triangular factor L (d, d) of a dense metric L L^T.
    loss_draws : jax.Array, optional
        A (traced) count L: the loss reads V at the first L draws only (as :func:`stein_estimate`).

    Returns
    -------
    jax.Array
        The scalar loss estimate.
    """
    mu, shift = whiten(locs, metric, scale_tril)
    log_w = None if weights is None else jnp.log(weights)
    log_q = mixture_terms(mu, log_scales, z, log_w).log_q - shift
    read = None if loss_draws is None else jnp.arange(potential_values.shape[1]) < loss_draws
    f = _component_loss(log_q, potential_values, read)
    w = jnp.full(f.shape, 1.0 / f.shape[0], f.dtype) if weights is None else weights
    return jnp.sum(w * f)


def potential_values(potential_fn, x: jax.Array, *extra, batch_size: int | None = None) -> jax.Array:
    """V at every row of x (..., d), without its gradient (``batch_size`` rows at a time, as
    :func:`potential_and_grad`)."""
    return _over_rows(potential_fn, x.reshape(-1, x.shape[-1]), extra, batch_size).reshape(x.shape[:-1])


def _over_rows(fn, flat: jax.Array, extra: tuple, batch_size: int | None):
    """``fn(row, *extra)`` at every row of ``flat`` (M, d): vmapped, or ``batch_size`` rows at a time
    (``lax.map``, bounding peak memory)."""
    if batch_size is None or batch_size >= flat.shape[0]:
        return jax.vmap(fn, in_axes=(0,) + (None,) * len(extra))(flat, *extra)
    return jax.lax.map(lambda row: fn(row, *extra), flat, batch_size=batch_size)


def widened_log_ratios(
    locs: jax.Array, log_scales: jax.Array, z: jax.Array, widen: float, log_weights: jax.Array | None = None
) -> jax.Array:
    """log q_i(x) - log g_i(x) - log q(x) at x_ib = m_i + c sigma_i z (whitened coordinates, N(0, I) noise
    z (L, d) shared or (N, L, d)), the draws of the widened component g_i = N(m_i, c^2 sigma_i^2 I), c =
    ``widen`` >= 1. With V added, exp(-V(x) + this) has mean E_{q_i}[p / q] under g_i, as the ratio
    p / q at q_i's own draws has, but lighter tails: a component narrower than its mode along some
    directions (variance below half the mode's there) gives p / q infinite variance under its own draws.

    At the draw q_i / g_i is c^d times a Gaussian factor of z, and the squared distances to every
    component expand as in :func:`mixture_terms` (:func:`_noise_products`)::

        q_i / g_i = c^d exp(-(c^2 - 1) |z|^2 / 2)
        |m_i + c sigma_i z - m_j|^2 = |m_i - m_j|^2 + 2 c sigma_i <z, m_i - m_j> + c^2 sigma_i^2 |z|^2

    Returns (N, L), without the metric's log-determinant (the caller adds it, as for log q)."""
    n, d = locs.shape
    sig = jnp.exp(log_scales)
    if log_weights is None:
        log_weights = jnp.full((n,), -jnp.log(n), locs.dtype)
    _, between, q, q_self, zz = _noise_products(locs, z)
    spread = widen * sig[:, None, None]
    dist = between + 2.0 * spread * (q_self[:, :, None] - q) + spread**2 * zz[:, :, None]
    log_q = logsumexp(log_weights - 0.5 * dist / sig**2 - d * log_scales, -1) - 0.5 * d * jnp.log(2 * jnp.pi)
    return -0.5 * (widen**2 - 1.0) * zz + d * jnp.log(widen) - log_q


def balance_heuristic(own: jax.Array, widened: jax.Array, z: jax.Array, widen: float) -> jax.Array:
    """Both sets of log p - log q importance ratios of each component, at its own draws m_i + sigma_i z
    (``own``, log p - log q) and at the widened ones m_i + c sigma_i z (``widened``, log p - log q +
    log q_i - log g_i, :func:`widened_log_ratios`), reweighted as draws of the even mixture
    (q_i + g_i) / 2 (the balance heuristic of multiple importance sampling, Veach and Guibas, SIGGRAPH
    1995): (N, 2 L), whose exp has mean E_{q_i}[p / q] as each set's has. A draw's weight is bounded by
    twice what either set alone gives it: near the mean the own draws' (where q_i fits the mode), in the
    tails the widened ones' (where g_i is wider than q_i). With l = log g_i - log q_i, for whitened noise
    z (L, d) shared or (N, L, d)::

        l = (1 - 1/c^2) |z|^2 / 2 - d log c        at the own draw
        l = (c^2 - 1) |z|^2 / 2 - d log c          at the widened draw
        own:     log p - log q - log((1 + e^l) / 2)
        widened: log p - log q - log((1 + e^l) / 2) = widened + l - log((1 + e^l) / 2)"""
    n, length = own.shape
    d = z.shape[-1]
    zz = jnp.broadcast_to(jnp.sum(z**2, -1), (n, length))
    log_c = d * jnp.log(widen)
    at_own = 0.5 * (1.0 - widen**-2) * zz - log_c
    at_widened = 0.5 * (widen**2 - 1.0) * zz - log_c
    half = jnp.log(2.0)
    return jnp.concatenate(
        [own - jnp.logaddexp(0.0, at_own) + half, widened - jnp.logaddexp(-at_widened, 0.0) + half], axis=1
    )


def potential_and_grad(potential_fn, x: jax.Array, *extra, batch_size: int | None = None, with_value: bool = True):
    """V and grad V at every row of x (..., d).

    Parameters
    ----------
    potential_fn : callable
        ``V(row, *extra)``.
    x : jax.Array
        The points, (..., d).
    *extra
        Passed to ``potential_fn`` unbatched (e.g. a key).
    batch_size : int, optional
        Process the rows this many at a time (``lax.map``), bounding peak memory.
    with_value : bool
        Also return V (else None, and only gradients are computed).

    Returns
    -------
    tuple
        V (...) or None, and grad V (..., d).
    """
    flat = x.reshape(-1, x.shape[-1])
    if with_value:
        vg = jax.value_and_grad(potential_fn)
    else:
        grad = jax.grad(potential_fn)

        def vg(row, *rest):
            return jnp.zeros((), row.dtype), grad(row, *rest)

    v, g = _over_rows(vg, flat, extra, batch_size)
    return (v.reshape(x.shape[:-1]) if with_value else None), g.reshape(x.shape)
