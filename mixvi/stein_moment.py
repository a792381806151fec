"""The Stein moment divergence of a mixture, from draws and the target's score at them.

    M = (1/d) [ tr((I + C)^2) + h^T Sigma_q h ],   C = E_q[(z - m_q) grad log p(z)^T],   h = E_q[grad log p(z)],

with m_q and Sigma_q the mixture's mean and covariance. Stein's identity (E_p[grad log p] = 0 and
E_p[(z - m) grad log p^T] = -I for any constant m) makes both terms 0 when q = p; for a Gaussian p the
first is sum_k (1 - rho_k)^2 over the variance ratios rho_k of q to p along p's axes, the second the
squared length of q's mean error in posterior sds (see :mod:`mixvi.diagnostics.fit`, which reports it
as a fit verdict, and docs/diagnostics.md for the thresholds).

Both terms are squares of expectations, estimated without bias by averaging products over pairs of
*independent* draws. The draws come in groups, (K, G, d) with G groups of K draws: draws of one group
may depend on each other, draws of different groups are independent. ``fit_check``'s i.i.d. draws are
S groups of one; a step of mixture VI with shared noise draws x_ib = m_i + sigma_i L z_b, whose N draws
with the same z_b form group b ((N, B, d) as it is) and whose pairs across groups are independent draws
of q_i and q_j: with uniform weights, the average over all of them is the product of two expectations
under q.

A step's B groups are about B independent draws' worth, too few for a stable estimate where the scores
are heavy-tailed; :class:`SteinSums` keeps the sums the estimate is made of, so that the draws of many
steps give one estimate over all their pairs (:func:`add_draws`, :func:`pooled_divergence`).

This module depends on JAX only (and :mod:`mixvi.lowrank` for the low-rank metric's root).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mixvi import metric_root
from mixvi.lowrank import LowRankMetric


def covariance_form(
    h: jax.Array,
    locs: jax.Array,
    scales: jax.Array,
    weights: jax.Array,
    metric: jax.Array | LowRankMetric | None = None,
    scale_tril: jax.Array | None = None,
) -> jax.Array:
    """h_r^T Sigma_q h_r for every row of h (R, d), with Sigma_q = sum_i w_i (sigma_i^2 A + (m_i - m)(m_i - m)^T)
    the covariance of q = sum_i w_i N(m_i, sigma_i^2 A) (A = L L^T, the diagonal D, the low-rank metric or I)."""
    ah = jnp.sum(metric_root.transpose_apply(h, metric, scale_tril) ** 2, -1)
    centre = weights @ locs
    spread = (h @ (locs - centre).T) ** 2 @ weights
    return (weights @ scales**2) * ah + spread


def _trace_of_square(u: jax.Array, g: jax.Array, block: int = 1024) -> jax.Array:
    """tr((U^T G)^2) = sum_(s,t) (g_s . u_t)(g_t . u_s) for (S, d) U and G, through the smaller of the
    (d, d) and (S, S) products; the latter in blocks of rows when S is large."""
    s, d = u.shape
    if d <= s:
        m = u.T @ g
        return jnp.sum(m * m.T)
    if s <= 2 * block:
        p = g @ u.T
        return jnp.sum(p * p.T)
    pad = -s % block
    ub, gb = (jnp.pad(a, ((0, pad), (0, 0))).reshape(-1, block, d) for a in (u, g))
    return jnp.sum(jax.lax.map(lambda rows: jnp.sum((rows[1] @ u.T) * (rows[0] @ g.T)), (ub, gb)))


def stein_moment_divergence(u: jax.Array, g: jax.Array, sigma_form) -> jax.Array:
    """M (module docstring) from the pairs of draws in different groups.

    Parameters
    ----------
    u : jax.Array
        z - m_q at the draws, (K, G, d): G groups (the second axis) of K draws each, independent across
        groups (a step's (N, B, d) draws as they are: the N draws of noise row b form group b).
    g : jax.Array
        grad log p at the same draws, (K, G, d).
    sigma_form : callable
        h (R, d) -> h_r^T Sigma_q h_r (R,), e.g. :func:`covariance_form` with q's parameters.

    Returns
    -------
    jax.Array
        The scalar estimate (near 0 for an exact fit; it can come out slightly negative).
    """
    k, groups, d = u.shape
    s = groups * k
    inside, own, sums = _group_terms(u, g)
    # h^T Sigma_q h over the same pairs: (sum_s g_s)^T Sigma_q (sum_s g_s) - sum_groups (its sum)^T Sigma_q (its sum)
    forms = sigma_form(jnp.concatenate([jnp.sum(sums, 0, keepdims=True), sums]))
    trace = _trace_of_square(u.reshape(s, d), g.reshape(s, d))
    return _divergence(trace, inside, own, forms[0], jnp.sum(forms[1:]), float(s), float(k), d)


def _group_terms(u: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """For draws (K, G, d): sum over groups of sum_(k, l in the group) (g_k . u_l)(g_l . u_k), the sum of
    g_s . u_s, and each group's sum of g (G, d)."""
    within = jnp.einsum("kgd,lgd->gkl", g, u)  # g_k . u_l inside each group
    inside = jnp.sum(within * jnp.swapaxes(within, 1, 2))
    return inside, jnp.sum(u * g), jnp.sum(g, 0)


def _divergence(trace, inside, own, total_form, group_forms, num_draws, group_size, d: int) -> jax.Array:
    """M from sums over S draws in groups of K: trace = tr((U^T G)^2) over all pairs, inside (the same
    over the pairs inside a group), own = sum_s g_s . u_s, total_form = (sum_s g_s)^T Sigma_q (sum_s g_s)
    and group_forms = sum over groups of the same form of the group's sum."""
    # over ordered pairs (s, t) of different groups: tr(a_s a_t) with a_s = u_s g_s^T + I is
    # (g_s . u_t)(g_t . u_s) + g_s . u_s + g_t . u_t + d; every draw has S - K partners
    count = num_draws * num_draws - num_draws * group_size  # floats: S^2 d overflows int32 at large S
    pairs = trace - inside + 2.0 * (num_draws - group_size) * own + count * d
    return (pairs + total_form - group_forms) / (count * d)


class SteinSums(NamedTuple):
    """Sums over the draws of several steps (groups of K draws each) from which M over all their pairs
    in different groups follows (:func:`pooled_divergence`): pairs across steps count too, so the
    estimate from T steps is that of T B independent groups rather than the mean of T estimates from B
    groups each, whose heavy tails (a few steps whose draws reach the target's steep parts) it averages
    poorly. The (d, d) sum limits it to moderate d (:data:`mixvi.vi.POOLED_STEIN_MAX_DIM`).

    Attributes
    ----------
    cross : jax.Array
        sum_s u_s g_s^T (d, d).
    inside, own, group_forms : jax.Array
        The sums of :func:`_divergence` over the groups and draws added so far.
    grad_sum : jax.Array
        sum_s g_s (d,).
    num_draws, group_size : jax.Array
        S so far, and K (0 before the first draws).
    """

    cross: jax.Array
    inside: jax.Array
    own: jax.Array
    group_forms: jax.Array
    grad_sum: jax.Array
    num_draws: jax.Array
    group_size: jax.Array


def init_sums(d: int, dtype=jnp.float32) -> SteinSums:
    """Empty sums for a d-dimensional target."""
    zero = jnp.zeros((), dtype)
    return SteinSums(jnp.zeros((d, d), dtype), zero, zero, zero, jnp.zeros((d,), dtype), zero, zero)


def add_draws(sums: SteinSums, u: jax.Array, g: jax.Array, sigma_form) -> tuple[SteinSums, jax.Array]:
    """The sums with the draws u = z - m_q and g = grad log p (K, G, d) added (G more groups of K), and
    M over every pair of all the sums' draws in different groups (``sigma_form`` as in
    :func:`stein_moment_divergence`, for the q of these draws: the one the estimate describes)."""
    k, groups, d = u.shape
    inside, own, sums_g = _group_terms(u, g)
    flat_u, flat_g = u.reshape(-1, d), g.reshape(-1, d)
    grad_sum = sums.grad_sum + jnp.sum(sums_g, 0)
    forms = sigma_form(jnp.concatenate([grad_sum[None], sums_g]))  # one form for the total and the groups
    new = SteinSums(
        sums.cross + flat_u.T @ flat_g,
        sums.inside + inside,
        sums.own + own,
        sums.group_forms + jnp.sum(forms[1:]),
        grad_sum,
        sums.num_draws + groups * k,
        jnp.full_like(sums.group_size, k),
    )
    return new, _pooled(new, forms[0])


def pooled_divergence(sums: SteinSums, sigma_form) -> jax.Array:
    """M over every pair of the added draws in different groups (NaN before any were added), with
    ``sigma_form`` for the q of the last draws."""
    return _pooled(sums, sigma_form(sums.grad_sum[None])[0])


def _pooled(sums: SteinSums, total_form: jax.Array) -> jax.Array:
    cross = sums.cross
    value = _divergence(
        jnp.sum(cross * cross.T),
        sums.inside,
        sums.own,
        total_form,
        sums.group_forms,
        sums.num_draws,
        sums.group_size,
        cross.shape[0],
    )
    return jnp.where(sums.num_draws > sums.group_size, value, jnp.nan)
