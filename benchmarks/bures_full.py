"""Full-covariance Bures-Wasserstein mixture VI: the O(d^3) baseline of mixvi's isotropic family.

The variational family is q = (1/N) sum_i N(m_i, Sigma_i) with full covariances, the target
pi ∝ exp(-V), and psi = log q + V, so that KL(q || pi) = E_q[psi] + log Z. One step of the
discretised Wasserstein gradient flow (Lambert, Chewi, Bach, Bonnabel, Rigollet, "Variational
inference via Wasserstein gradient flows", NeurIPS 2022, arXiv 2205.15902, section 5; the
full-covariance version of the IBW step of Petit-Talamon, Lambert, Korba, arXiv 2506.13613):

    m_i     <- m_i - gamma E_{N_i}[grad psi]
    Sigma_i <- M_i Sigma_i M_i,    M_i = I - gamma H_i,    H_i = E_{N_i}[hess psi]

H_i comes from the first-order Stein identity E_{N(m, Sigma)}[hess f] = Sigma^{-1} E[(x - m) grad f(x)^T];
with x = m + L xi (Sigma = L L^T, xi ~ N(0, I)) this is E[L^{-T} xi grad f(x)^T], estimated from B draws
and symmetrised, H <- (H + H^T) / 2. The score of the mixture is

    grad log q(x) = -sum_j r_j(x) Sigma_j^{-1} (x - m_j),   r_j(x) = softmax_j(log N(x; m_j, Sigma_j)),

computed in log space from the Cholesky factors. Every component keeps its lower Cholesky factor,
recomputed after each update (L <- chol(sym(M L L^T M))): with the d x d products and the Cholesky this
is the O(N d^3) per-step cost that mixvi's isotropic family (O(N B d + N^2 d)) avoids.

The products above are matrix products (``M @ Sigma @ M``). The paper's reference code writes the
covariance update with element-wise products (``M * Sigma * M``), which keeps only the diagonal of
the update: started from an isotropic Sigma, the covariances then stay diagonal forever and cannot
reach a correlated target. ``tests/test_bures_full.py`` checks that this implementation recovers a
non-diagonal Gaussian target exactly, off-diagonal terms included.

Estimator: B draws per component per step, x_ib = m_i + L_i xi_b with the noise xi (B, d) shared by
all components within a step (as mixvi's shared noise); V and grad V at the N B points from one
reverse pass of the vectorised potential; the reported loss is the Monte-Carlo -ELBO,
(1/(N B)) sum_ib [log q(x_ib) + V(x_ib)], from the same draws.

API (pure functions, Blackjax style): ``init``, ``step``, ``log_prob``, ``grad_log_prob``,
``sample``, ``stein_terms``, the jittable ``FullCovMixture`` and ``build`` (the paper benchmark's
adapter). A diverging step is not trapped: it gives NaN locs/factors and loss (``jnp.linalg.cholesky``
of a non-positive-definite matrix returns NaN rather than raising), which the benchmarks detect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from benchmarks.targets.base import Target


class BuresState(NamedTuple):
    """locs (N, d) means; chols (N, d, d) lower Cholesky factors of the covariances; rng_key for the
    next step; step (int32) steps taken."""

    locs: jax.Array
    chols: jax.Array
    rng_key: jax.Array
    step: jax.Array


class BuresEstimate(NamedTuple):
    """grad_mean (N, d) ~ E_{N_i}[grad psi]; hessian (N, d, d) ~ E_{N_i}[hess psi] (symmetrised Stein
    estimate); loss ~ E_q[log q + V] (the -ELBO)."""

    grad_mean: jax.Array
    hessian: jax.Array
    loss: jax.Array


# --- the mixture density -------------------------------------------------------------------------


def _whiten(locs: jax.Array, chols: jax.Array, z: jax.Array) -> jax.Array:
    """w_js = L_j^{-1} (z_s - m_j), shape (N, S, d), by triangular solves (no inverse is formed)."""
    diff = z[None, :, :] - locs[:, None, :]
    return jax.vmap(lambda c, r: solve_triangular(c, r.T, lower=True).T)(chols, diff)


def _component_log_densities(locs: jax.Array, chols: jax.Array, w: jax.Array) -> jax.Array:
    """log N(z_s; m_j, Sigma_j) from the whitened w (N, S, d): -|w|^2/2 - log det L_j - d/2 log 2 pi, (N, S)."""
    d = locs.shape[-1]
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chols, axis1=-2, axis2=-1)), -1)
    return -0.5 * jnp.sum(w**2, -1) - half_logdet[:, None] - 0.5 * d * math.log(2 * math.pi)


def _log_prob_and_score(locs: jax.Array, chols: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log q(z) (S,) and grad log q(z) (S, d) for z (S, d)."""
    n = locs.shape[0]
    w = _whiten(locs, chols, z)
    logn = _component_log_densities(locs, chols, w)
    log_q = logsumexp(logn, axis=0) - math.log(n)
    resp = jax.nn.softmax(logn, axis=0)  # r_j(z_s), stable in log space
    # sum_j r_j Sigma_j^{-1} (z - m_j) = sum_j L_j^{-T} (r_j w_j): weight first, then one solve per component
    score = jax.vmap(lambda c, rw: solve_triangular(c, rw.T, lower=True, trans="T").T)(chols, resp[..., None] * w)
    return log_q, -jnp.sum(score, 0)


def log_prob(locs: jax.Array, chols: jax.Array, z: jax.Array) -> jax.Array:
    """log q(z) = logsumexp_j log N(z; m_j, L_j L_j^T) - log N for z (..., d); returns (...)."""
    flat = jnp.reshape(z, (-1, z.shape[-1]))
    return _log_prob_and_score(locs, chols, flat)[0].reshape(z.shape[:-1])


def grad_log_prob(locs: jax.Array, chols: jax.Array, z: jax.Array) -> jax.Array:
    """grad log q(z) = -sum_j r_j(z) Sigma_j^{-1} (z - m_j) for z (..., d) (the score used by ``step``)."""
    flat = jnp.reshape(z, (-1, z.shape[-1]))
    return _log_prob_and_score(locs, chols, flat)[1].reshape(z.shape)


def sample(key: jax.Array, locs: jax.Array, chols: jax.Array, num: int) -> jax.Array:
    """num draws (num, d): a uniform component index i, then m_i + L_i xi with xi ~ N(0, I)."""
    n, d = locs.shape
    k_comp, k_noise = jax.random.split(key)
    idx = jax.random.randint(k_comp, (num,), 0, n)
    xi = jax.random.normal(k_noise, (num, d), locs.dtype)
    if n <= d:
        # transform the noise by every factor and pick: (N, num, d) memory instead of (num, d, d)
        every = jnp.einsum("nij,sj->nsi", chols, xi)
        return locs[idx] + every[idx, jnp.arange(num)]
    return locs[idx] + jnp.einsum("sij,sj->si", chols[idx], xi)


@jax.tree_util.register_pytree_node_class
class FullCovMixture:
    """q = (1/N) sum_i N(locs_i, chols_i chols_i^T) as a small distribution-like pytree (jittable, can be
    a ``jax.jit`` argument or ``lax.scan`` output): ``sample(key, sample_shape)`` -> sample_shape + (d,),
    ``log_prob(z)`` -> z.shape[:-1]."""

    def __init__(self, locs: jax.Array, chols: jax.Array):
        self.locs = locs
        self.chols = chols

    def tree_flatten(self) -> tuple[tuple[jax.Array, jax.Array], None]:
        return (self.locs, self.chols), None

    @classmethod
    def tree_unflatten(cls, aux: None, children: tuple[jax.Array, jax.Array]) -> FullCovMixture:
        return cls(*children)

    @property
    def event_shape(self) -> tuple[int]:
        return (self.locs.shape[-1],)

    @property
    def n_components(self) -> int:
        return self.locs.shape[0]

    @property
    def covariances(self) -> jax.Array:
        """Sigma_i = L_i L_i^T, (N, d, d)."""
        return self.chols @ jnp.swapaxes(self.chols, -1, -2)

    @property
    def mean(self) -> jax.Array:
        return jnp.mean(self.locs, 0)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        shape = tuple(sample_shape)
        num = math.prod(shape)
        return sample(key, self.locs, self.chols, num).reshape(shape + self.event_shape)

    def log_prob(self, z: jax.Array) -> jax.Array:
        return log_prob(self.locs, self.chols, z)


# --- the step --------------------------------------------------------------------------------------


def init(locs: jax.Array, scale: float | jax.Array, rng_key: jax.Array) -> BuresState:
    """Initial state: means ``locs`` (N, d), covariances Sigma_i = scale_i^2 I (``scale`` a scalar or (N,))."""
    locs = jnp.asarray(locs)
    if not jnp.issubdtype(locs.dtype, jnp.floating):
        locs = locs.astype(jnp.result_type(float))
    n, d = locs.shape
    scale = jnp.broadcast_to(jnp.asarray(scale, locs.dtype), (n,))
    chols = scale[:, None, None] * jnp.eye(d, dtype=locs.dtype)
    if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        rng_key = jax.random.key_data(rng_key)  # a raw key, as MixVIState, so the state is a plain array pytree
    return BuresState(locs, chols, rng_key, jnp.zeros((), jnp.int32))


def potential_value_and_grad(potential: Callable[[jax.Array], jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """V (S,) and grad V (S, d) of a row-wise potential ``V: (S, d) -> (S,)`` in one reverse pass: the
    rows are independent, so the vector-Jacobian product with ones is the stack of per-row gradients."""
    v, vjp = jax.vjp(potential, x)
    return v, vjp(jnp.ones_like(v))[0]


def stein_terms(
    locs: jax.Array, chols: jax.Array, xi: jax.Array, potential: Callable[[jax.Array], jax.Array]
) -> BuresEstimate:
    """The Monte-Carlo terms of one step from the shared noise xi (B, d):

        x_ib        = m_i + L_i xi_b
        grad_mean_i = (1/B) sum_b grad psi(x_ib)
        hessian_i   = sym(L_i^{-T} (1/B) sum_b xi_b grad psi(x_ib)^T)    (Stein: Sigma^{-1} E[(x - m) grad psi^T])
        loss        = (1/(N B)) sum_ib [log q(x_ib) + V(x_ib)]
    """
    n, d = locs.shape
    b = xi.shape[0]
    x = (locs[:, None, :] + jnp.einsum("nij,bj->nbi", chols, xi)).reshape(n * b, d)
    v, grad_v = potential_value_and_grad(potential, x)
    log_q, score = _log_prob_and_score(locs, chols, x)
    grad_psi = (score + grad_v).reshape(n, b, d)
    grad_mean = jnp.mean(grad_psi, 1)
    cross = jnp.einsum("bk,nbl->nkl", xi, grad_psi) / b  # (1/B) sum_b xi_b grad psi_b^T, per component
    hess = jax.vmap(lambda c, a: solve_triangular(c, a, lower=True, trans="T"))(chols, cross)  # L^{-T} (.)
    hess = 0.5 * (hess + jnp.swapaxes(hess, -1, -2))
    return BuresEstimate(grad_mean, hess, jnp.mean(log_q + v))


def update(
    locs: jax.Array, chols: jax.Array, grad_mean: jax.Array, hessian: jax.Array, step_size: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """m <- m - gamma g;  Sigma <- M Sigma M with M = I - gamma H (matrix products), returned as its
    Cholesky factor: Sigma = (M L)(M L)^T, symmetrised, then re-factorised."""
    d = locs.shape[-1]
    new_locs = locs - step_size * grad_mean
    m = jnp.eye(d, dtype=locs.dtype) - step_size * hessian
    ml = m @ chols
    cov = ml @ jnp.swapaxes(ml, -1, -2)
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))  # exact symmetry for the Cholesky (rounding breaks it)
    return new_locs, jnp.linalg.cholesky(cov)


def step(
    state: BuresState, potential: Callable[[jax.Array], jax.Array], step_size: float | jax.Array, num_samples: int
) -> tuple[BuresState, jax.Array]:
    """One Bures-Wasserstein step of every component (module docstring); returns the new state and
    the -ELBO estimate at the old one. ``potential``: V vectorised over rows, (S, d) -> (S,)."""
    key, k_noise = jax.random.split(state.rng_key)
    xi = jax.random.normal(k_noise, (num_samples, state.locs.shape[-1]), state.locs.dtype)
    est = stein_terms(state.locs, state.chols, xi, potential)
    locs, chols = update(state.locs, state.chols, est.grad_mean, est.hessian, step_size)
    return BuresState(locs, chols, key, state.step + 1), est.loss


# --- the paper benchmark's adapter ----------------------------------------------------------------


def build(
    target: Target,
    n: int,
    step_size: float,
    num_samples: int,
    init_scale: float,
    init_locs: Callable[[int], jax.Array],
) -> tuple[Callable[[int], BuresState], Callable, Callable, Callable]:
    """(init(seed) -> state, step(state) -> (state, loss), get_params(state) -> dict,
    posterior(params) -> FullCovMixture) for ``target`` with N = ``n`` components; ``init_locs(seed)``
    gives the (n, d) starting means, Sigma_i = init_scale^2 I. step / get_params / posterior are pure
    and traceable inside ``jax.jit`` + ``lax.scan``; the state carries its own key (from the seed)."""
    potential = target.potential()

    def init_fn(seed: int) -> BuresState:
        locs = jnp.asarray(init_locs(seed))
        if locs.shape != (n, target.dim):
            raise ValueError(f"init_locs({seed}) has shape {locs.shape}, expected {(n, target.dim)}")
        return init(locs, init_scale, jax.random.fold_in(jax.random.PRNGKey(seed), 2))

    def step_fn(state: BuresState) -> tuple[BuresState, jax.Array]:
        return step(state, potential, step_size, num_samples)

    def get_params(state: BuresState) -> dict[str, jax.Array]:
        return {"locs": state.locs, "chols": state.chols}

    def posterior(params: dict[str, Any]) -> FullCovMixture:
        return FullCovMixture(params["locs"], params["chols"])

    return init_fn, step_fn, get_params, posterior
