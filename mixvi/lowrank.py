"""A low-rank-plus-diagonal metric shared by the isotropic components.

Component i of the mixture has covariance ``sigma_i^2 A`` with

    A = D^(1/2) P^2 D^(1/2),    P = I + Q diag(exp(kappa) - 1) Q^T,

D > 0 diagonal (d,), Q (d, r) with orthonormal columns and kappa (r,) the log-stretches along them: the
square root T = D^(1/2) P maps the whitened coordinates y = T^(-1) x, where every component is isotropic
(so the paper's steps run there unchanged), to x. Every operation with T is O(d r) and A is never formed,
so memory is O(N d + d r) where a dense metric needs O(d^2). Directions where the posterior is stretched
(or squeezed) relative to D get their own kappa; what a rank-r factor cannot hold goes into D.

The step (:func:`lowrank_metric_step`) follows the dense metric's step A <- T (I - eta S0) T^T of
:func:`mixvi.geometry.dense_metric_step` to first order within the family. With noise shared by all
components the whitened Stein matrix is S = Z^T R, Z (B, d) the noise and R (B, d) the per-draw
terms, so everything the step needs comes from (B, d) x (d, r) products: O(B d r + d r^2) per step.
On a Gaussian whose covariance is of this form the dense step's fixed point (eps T^T Sigma^(-1) T = I)
is in the family and is kept.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

SHARED_NOISE_NEEDED = (
    "metric='lowrank' (what metric='auto' means at large d) needs shared_noise=True, under which its Stein "
    "matrix has rank <= 2B; pass shared_noise=True, or metric='diagonal' to the guide"
)
# smallest factor a step may apply to a diagonal entry of D (keeps A positive definite under noisy steps)
MIN_EIGEN_FACTOR = 0.1
# every coordinate keeps at least this share of its variance in D (see lowrank_metric_step)
MIN_DIAG_SHARE = 1e-4
# every column of the factor keeps at least this log-stretch: a column at exactly zero would get no
# first-order change from the step and could never grow again
MIN_STRETCH = 0.02


class LowRankMetric(NamedTuple):
    """A = D^(1/2) P^2 D^(1/2) with P = I + Q diag(exp(kappa) - 1) Q^T (see the module docstring).

    Attributes
    ----------
    log_diag : jax.Array
        log D, shape (d,).
    basis : jax.Array
        Q, shape (d, r), orthonormal columns.
    log_stretch : jax.Array
        kappa, shape (r,): the square root T stretches by exp(kappa_j) along column j of Q.
    """

    log_diag: jax.Array
    basis: jax.Array
    log_stretch: jax.Array


def init_lowrank(d: int, rank: int, dtype=jnp.float32) -> LowRankMetric:
    """Nearly the identity: D = I, kappa = ``MIN_STRETCH`` along the first r cosine (DCT-II) vectors, which
    are orthonormal and spread over every coordinate (a deterministic start the steps turn away from)."""
    k = jnp.arange(d, dtype=dtype)[:, None]
    j = jnp.arange(1, rank + 1, dtype=dtype)[None, :]
    basis = jnp.cos(jnp.pi * (k + 0.5) * j / d) * jnp.sqrt(2.0 / d)
    metric = LowRankMetric(jnp.zeros((d,), dtype), basis.astype(dtype), jnp.full((rank,), MIN_STRETCH, dtype))
    return normalise(metric)[0]


def row_products(rows: jax.Array, others: jax.Array) -> jax.Array:
    """rows @ others^T for rows (..., d) and a few others (k, d), as k matrix-vector products.

    Every long product of the metric contracts d against a handful of columns. XLA's CPU dot runs such a
    thin (n, d) x (d, k) product 2-3 times slower than k matrix-vector products over the same rows (d = 1e4,
    n = k = 10: 0.32 against 0.12 ms on a 2-core CPU), and these products are most of what the metric adds
    to a step.
    """
    return jnp.stack([rows @ others[j] for j in range(others.shape[0])], -1)


def coordinates(metric: LowRankMetric, v: jax.Array) -> jax.Array:
    """v Q for rows v (..., d): the coordinates of every row on the columns of Q, shape (..., r)."""
    return row_products(v, metric.basis.T)


def _p_power(metric: LowRankMetric, v: jax.Array, power: float) -> jax.Array:
    """P^power v for rows v (..., d): P is symmetric with eigenvalues exp(kappa) on Q and 1 elsewhere."""
    return v + (coordinates(metric, v) * jnp.expm1(power * metric.log_stretch)) @ metric.basis.T


def root_apply(metric: LowRankMetric, z: jax.Array) -> jax.Array:
    """T z = D^(1/2) P z for rows z (..., d)."""
    return jnp.exp(0.5 * metric.log_diag) * _p_power(metric, z, 1.0)


def root_transpose_apply(metric: LowRankMetric, g: jax.Array) -> jax.Array:
    """T^T g = P D^(1/2) g for rows g (..., d) (grad_y of a function of x, from its grad_x)."""
    return _p_power(metric, jnp.exp(0.5 * metric.log_diag) * g, 1.0)


def root_solve(metric: LowRankMetric, x: jax.Array) -> jax.Array:
    """T^(-1) x = P^(-1) D^(-1/2) x for rows x (..., d)."""
    return _p_power(metric, x * jnp.exp(-0.5 * metric.log_diag), -1.0)


def root_transpose_solve(metric: LowRankMetric, s: jax.Array) -> jax.Array:
    """T^(-T) s = D^(-1/2) P^(-1) s for rows s (..., d)."""
    return jnp.exp(-0.5 * metric.log_diag) * _p_power(metric, s, -1.0)


def log_det_root(metric: LowRankMetric) -> jax.Array:
    """log det T = (1/2) sum log D + sum kappa."""
    return 0.5 * jnp.sum(metric.log_diag) + jnp.sum(metric.log_stretch)


def variance(metric: LowRankMetric) -> jax.Array:
    """diag(A), shape (d,)."""
    return jnp.exp(metric.log_diag) * (1.0 + metric.basis**2 @ jnp.expm1(2.0 * metric.log_stretch))


def normalise(metric: LowRankMetric) -> tuple[LowRankMetric, jax.Array]:
    """The metric scaled to det T = 1, and the shift of log sigma that keeps every covariance."""
    shift = log_det_root(metric) / metric.log_diag.shape[0]
    return metric._replace(log_diag=metric.log_diag - 2.0 * shift), shift


def stein_norm(left: jax.Array, right: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The trace and the Frobenius norm of the trace-free symmetric part S0 of S = left^T right
    (both (B, d)), from B x B products only."""
    d = left.shape[-1]
    trace = jnp.sum(left * right)
    cross = row_products(right, left)
    sym_sq = 0.5 * (jnp.sum(cross * cross.T) + jnp.sum(row_products(left, left) * row_products(right, right)))
    return trace, jnp.sqrt(jnp.maximum(sym_sq - trace**2 / d, 0.0))


def principal_directions(factor: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Orthonormal Q (d, r) and squared lengths s (r,), largest first, with factor factor^T = Q diag(s) Q^T.

    From the r x r Gram matrix (an eigendecomposition) and one symmetric re-orthonormalisation that restores
    the orthogonality float32 loses in the short directions: O(d r^2) in matrix products, where XLA's
    Householder QR of a tall (d, r) matrix on a CPU costs several times more (1.4 ms at d = 1e4, r = 10).
    """
    r = factor.shape[1]
    eye = jnp.eye(r, dtype=factor.dtype)
    sq, rot = jnp.linalg.eigh(factor.T @ factor)
    order = jnp.argsort(-sq)
    sq, rot = jnp.maximum(sq[order], 0.0), rot[:, order]
    basis = factor @ (rot / jnp.sqrt(jnp.maximum(sq, 1e-30)))
    # symmetric (Loewdin) re-orthonormalisation, basis (basis^T basis)^(-1/2): another small eigh, which
    # compiles in a third of the time of the r x r inverse a Cholesky pass would need (0.04 s against 0.14 s)
    gram_sq, gram_rot = jnp.linalg.eigh(basis.T @ basis + 1e-6 * eye)
    return basis @ ((gram_rot / jnp.sqrt(gram_sq)) @ gram_rot.T), sq


def lowrank_metric_step(
    metric: LowRankMetric, left: jax.Array, right: jax.Array, eta: jax.Array, cap: jax.Array | float
) -> tuple[LowRankMetric, jax.Array]:
    """One shape-only step of the low-rank metric from the whitened Stein matrix S = left^T right.

    The dense step would make A' = T (I - eta S0) T^T (S0 the trace-free symmetric part of S, its
    Frobenius norm capped at ``cap``): in the D-whitened coordinates K = P^2 = I + U U^T moves by
    Delta = -eta P S0 P, a matrix of rank at most r + 2B plus a multiple of P^2. The factor
    U = Q diag(sqrt(exp(2 kappa) - 1)) takes the part of Delta it can hold to first order,
    U' = U + (1/2) Delta U (I + U^T U)^(-1) (exact along the columns of U, and Oja's rule for the
    directions it does not hold yet: U turns towards the directions Delta stretches most), and D
    takes the rest of Delta's diagonal, so that the marginal variances move as the dense step's. A
    smooth update rather than a truncated eigendecomposition: picking the r largest of a noisy
    matrix's eigenvalues every step would push the spare columns to ever larger values.

    Parameters
    ----------
    metric : LowRankMetric
        The current metric (any normalisation).
    left, right : jax.Array
        The factors of the Stein matrix, (B, d) each.
    eta : jax.Array
        The metric's step.
    cap : float
        Largest Frobenius norm of eta S0.

    Returns
    -------
    tuple
        The new metric with det T = 1 and the shift of log sigma that keeps every covariance what the
        step made it.
    """
    d = metric.log_diag.shape[0]
    dtype = metric.log_diag.dtype
    q, kappa = metric.basis, metric.log_stretch
    trace, norm = stein_norm(left, right)
    eta = eta * jnp.minimum(1.0, cap / jnp.maximum(eta * norm, 1e-30))
    c = trace / d
    stretch = jnp.expm1(kappa)
    length = jnp.sqrt(jnp.expm1(2.0 * kappa))  # column norms of U = Q diag(length)
    u = q * length
    # every product with the (B, d) factors goes through their coordinates on Q once
    lq, rq = coordinates(metric, left), coordinates(metric, right)
    lp, rp = left + (lq * stretch) @ q.T, right + (rq * stretch) @ q.T  # rows P z_b, P r_b
    # Delta U = -eta (P S_sym P U - c P^2 U), S_sym = (Z^T R + R^T Z) / 2, P U = Q diag(e^kappa length)
    grow = jnp.exp(kappa) * length
    s_pu = 0.5 * (right.T @ (lq * grow) + left.T @ (rq * grow))
    p_s_pu = s_pu + q @ (stretch[:, None] * (q.T @ s_pu))
    delta_u = -eta * (p_s_pu - c * q * (jnp.exp(2.0 * kappa) * length))
    new_u = u + 0.5 * delta_u / (1.0 + length**2)  # (I + U^T U)^(-1) = diag(1 / (1 + length^2))
    # diag(Delta) = -eta (diag(P S_sym P) - c diag(P^2)); D takes what U' does not, so that every marginal
    # variance is the dense step's: diag(P^2) + diag(Delta) = factor + |U'_k|^2
    marginal = 1.0 + q**2 @ length**2
    target = marginal - eta * (jnp.sum(lp * rp, 0) - c * marginal)
    # D keeps at least MIN_DIAG_SHARE of every coordinate's variance and loses at most 1 - MIN_EIGEN_FACTOR of
    # itself per step: a column along one axis stands for what D could hold, the split between D and kappa
    # there is free (factor analysis's Heywood case), and without the floor noise walked D to 0 and kappa
    # to infinity (float32 overflowed on a centred hierarchical logit within 400 steps)
    room = target - jnp.maximum(MIN_EIGEN_FACTOR, MIN_DIAG_SHARE * target)
    rows = jnp.sum(new_u**2, 1)
    new_u = new_u * jnp.sqrt(jnp.minimum(1.0, room / jnp.maximum(rows, 1e-30)))[:, None]
    factor = target - jnp.sum(new_u**2, 1)
    scaled = new_u / jnp.sqrt(factor)[:, None]
    basis, sq = principal_directions(scaled)
    sq = jnp.maximum(sq, jnp.expm1(2.0 * MIN_STRETCH))
    new = LowRankMetric(
        (metric.log_diag + jnp.log(factor)).astype(dtype), basis.astype(dtype), (0.5 * jnp.log1p(sq)).astype(dtype)
    )
    return normalise(new)
