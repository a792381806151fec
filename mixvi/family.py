"""The isotropic Gaussian mixture q = sum_i w_i N(m_i, sigma_i^2 D) as a NumPyro distribution, with
its closed-form score (arXiv 2506.13613, section 2). The paper's family has uniform weights
w_i = 1/N and D = I (the defaults); a shared diagonal metric D and learned weights are mixvi's
extensions (docs/theory.md). With whitened coordinates y = D^(-1/2) x every component is isotropic::

    log q(x)      = logsumexp_j [ log w_j - |y - mu_j|^2 / (2 eps_j) - (d/2) log(2 pi eps_j) ] - (1/2) sum_k log D_k
    grad log q(x) = -D^(-1) sum_j r_j(x) (x - m_j) / eps_j,   r_j = softmax_j of the bracket above

Squared distances come from matrix products (``|x|^2 - 2 x.m + |m|^2`` after centring on the mean of
the means), so no (..., N, d) tensor is formed.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp, ndtr
from numpyro.distributions import Distribution, constraints

from mixvi import draws, metric_root
from mixvi import lowrank as lr
from mixvi.lowrank import LowRankMetric


def component_logits(
    x: jax.Array,
    locs: jax.Array,
    scales: jax.Array,
    weights: jax.Array | None = None,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
) -> jax.Array:
    """Log-density of every weighted component, ``log w_j + log N(x; m_j, sigma_j^2 D)``.

    Parameters
    ----------
    x : jax.Array
        Points, shape (..., d).
    locs : jax.Array
        Component means m_j, shape (N, d).
    scales : jax.Array
        Component standard deviations sigma_j, shape (N,).
    weights : jax.Array or None
        Mixture weights w_j, shape (N,); None for uniform weights 1/N.
    metric : jax.Array or LowRankMetric or None
        Shared diagonal metric D, shape (d,), or a low-rank-plus-diagonal metric
        (:class:`~mixvi.lowrank.LowRankMetric`); None for the identity.
    scale_tril : jax.Array or None
        Lower-triangular factor L (d, d) of a shared dense metric L L^T; None for the identity.

    Returns
    -------
    jax.Array
        The component log-densities, shape (..., N); their logsumexp over the last axis is log q(x).
    """
    d = locs.shape[-1]
    sq = squared_distances(x, locs, metric, scale_tril)
    eps = scales**2
    out = -0.5 * sq / eps - 0.5 * d * jnp.log(2 * jnp.pi * eps)
    if metric is not None or scale_tril is not None:
        out = out - metric_root.log_det(metric, scale_tril, out.dtype)
    if weights is None:
        return out - jnp.log(locs.shape[0])
    return out + jnp.log(weights)


def squared_distances(
    x: jax.Array, locs: jax.Array, metric: jax.Array | None = None, scale_tril: jax.Array | None = None
) -> jax.Array:
    """Squared distances in the shared metric A, ``|A^(-1/2) (x - m_j)|^2``, shape (..., N).

    Computed as ``|x|^2 - 2 x.m + |m|^2`` after centring on the mean of the means (no (..., N, d)
    tensor), clipped at zero. ``metric`` and ``scale_tril`` are as in :func:`component_logits`.
    """
    x, locs = metric_root.solve(x, metric, scale_tril), metric_root.solve(locs, metric, scale_tril)
    centre = jnp.mean(locs, axis=0)
    xc, mc = x - centre, locs - centre
    sq = jnp.sum(xc**2, -1, keepdims=True) - 2.0 * xc @ mc.T + jnp.sum(mc**2, -1)
    return jnp.maximum(sq, 0.0)


def mixture_score(
    x: jax.Array,
    locs: jax.Array,
    scales: jax.Array,
    weights: jax.Array | None = None,
    metric: jax.Array | None = None,
    scale_tril: jax.Array | None = None,
) -> jax.Array:
    """The score of the mixture in closed form, ``grad_x log q(x) = -D^-1 sum_j r_j(x) (x - m_j) / eps_j``.

    Parameters
    ----------
    x : jax.Array
        Points, shape (..., d).
    locs, scales, weights, metric, scale_tril : jax.Array
        As in :func:`component_logits` (all but ``locs`` and ``scales`` may be None).

    Returns
    -------
    jax.Array
        The score at every point, shape (..., d).
    """
    r = jax.nn.softmax(component_logits(x, locs, scales, weights, metric, scale_tril), axis=-1)
    w = r / scales**2
    s = -jnp.sum(w, -1, keepdims=True) * x + w @ locs
    # A^(-1) s = R^(-T) R^(-1) s
    return metric_root.transpose_solve(metric_root.solve(s, metric, scale_tril), metric, scale_tril)


@partial(jax.jit, static_argnums=6)
def _sample(key, locs, scales, weights, metric, scale_tril, sample_shape: tuple) -> jax.Array:
    k_idx, k_z = jax.random.split(key)
    if weights is None:
        idx = jax.random.randint(k_idx, sample_shape, 0, locs.shape[0])
    else:
        idx = jax.random.categorical(k_idx, jnp.log(weights), shape=sample_shape)
    z = draws.normal(k_z, sample_shape + locs.shape[1:], locs.dtype)
    return locs[idx] + scales[idx][..., None] * metric_root.apply(z, metric, scale_tril)


class IsotropicMixture(Distribution):
    """The mixture ``q(x) = sum_i w_i N(x; locs_i, scales_i^2 D)`` over R^d; by default w_i = 1/N and D = I.

    ``has_rsample`` is True: a draw picks i with probability w_i (a choice that does not depend on
    locs, scales or D) and returns locs_i + scales_i D^(1/2) z, z ~ N(0, I), so pathwise gradients with
    respect to locs, scales and metric are unbiased. (Gradients with respect to learned weights are not
    reparametrised; MixVI's stratified estimator computes those.)

    Parameters
    ----------
    locs : jax.Array
        Component means, shape (N, d).
    scales : jax.Array
        Component standard deviations sigma_i, shape (N,), positive.
    weights : jax.Array or None, optional
        Mixture weights, shape (N,), summing to one; None (the default) for uniform weights 1/N.
    metric : jax.Array or LowRankMetric or None, optional
        Shared diagonal metric D, shape (d,), positive, or a low-rank-plus-diagonal metric A
        (:class:`~mixvi.lowrank.LowRankMetric`: component i is N(locs_i, scales_i^2 A)); None (the
        default) for the identity.
    scale_tril : jax.Array or None, optional
        Lower-triangular factor L (d, d) of a shared dense metric: component i is
        N(locs_i, scales_i^2 L L^T). At most one of ``metric`` and ``scale_tril``.
    validate_args : bool or None, optional
        NumPyro's argument validation.

    Raises
    ------
    ValueError
        If ``locs`` is not two-dimensional, or ``scales``, ``weights`` or ``metric`` does not have the
        shape that ``locs`` implies.
    """

    # weights / metric are optional (None = uniform / identity), so NumPyro's validator skips them
    arg_constraints = {"locs": constraints.real_matrix, "scales": constraints.positive}
    support = constraints.real_vector
    reparametrized_params = ["locs", "scales", "metric", "scale_tril"]
    pytree_data_fields = ("locs", "scales", "weights", "metric", "scale_tril")

    def __init__(
        self,
        locs: jax.Array,
        scales: jax.Array,
        weights: jax.Array | None = None,
        metric: jax.Array | None = None,
        scale_tril: jax.Array | None = None,
        *,
        validate_args: bool | None = None,
    ):
        if jnp.ndim(locs) != 2:
            raise ValueError(f"locs must have shape (n_components, d), got {jnp.shape(locs)}")
        if jnp.shape(scales) != jnp.shape(locs)[:1]:
            raise ValueError(f"scales must have shape ({jnp.shape(locs)[0]},), got {jnp.shape(scales)}")
        if weights is not None and jnp.shape(weights) != jnp.shape(locs)[:1]:
            raise ValueError(f"weights must have shape ({jnp.shape(locs)[0]},), got {jnp.shape(weights)}")
        if isinstance(metric, LowRankMetric):
            if jnp.shape(metric.log_diag) != jnp.shape(locs)[1:] or jnp.ndim(metric.basis) != 2:
                raise ValueError(f"a low-rank metric must have log_diag ({jnp.shape(locs)[1]},) and basis (d, r)")
        elif metric is not None and jnp.shape(metric) != jnp.shape(locs)[1:]:
            raise ValueError(f"metric must have shape ({jnp.shape(locs)[1]},), got {jnp.shape(metric)}")
        d = jnp.shape(locs)[1]
        if scale_tril is not None and jnp.shape(scale_tril) != (d, d):
            raise ValueError(f"scale_tril must have shape ({d}, {d}), got {jnp.shape(scale_tril)}")
        if metric is not None and scale_tril is not None:
            raise ValueError("give a diagonal metric or a dense scale_tril, not both")
        self.scale_tril = scale_tril
        self.locs = locs
        self.scales = scales
        self.weights = weights
        self.metric = metric
        super().__init__(batch_shape=(), event_shape=jnp.shape(locs)[1:], validate_args=validate_args)

    @property
    def component_weights(self) -> jax.Array:
        """The mixture weights w, shape (N,) (uniform unless learned)."""
        if self.weights is None:
            return jnp.full(self.locs.shape[:1], 1.0 / self.locs.shape[0], dtype=self.locs.dtype)
        return self.weights

    @property
    def diag_metric(self) -> jax.Array:
        """The diagonal of the shared metric, shape (d,): D, or diag(L L^T) for a dense one (ones unless learned)."""
        if self.scale_tril is not None:
            return jnp.sum(self.scale_tril**2, axis=-1)
        if isinstance(self.metric, LowRankMetric):
            return lr.variance(self.metric)
        return jnp.ones(self.locs.shape[1:], self.locs.dtype) if self.metric is None else self.metric

    @property
    def has_rsample(self) -> bool:
        return True

    @property
    def n_components(self) -> int:
        return self.locs.shape[0]

    def sample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        return _sample(key, self.locs, self.scales, self.weights, self.metric, self.scale_tril, tuple(sample_shape))

    def rsample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        return self.sample(key, sample_shape)

    def _logits(self, value: jax.Array) -> jax.Array:
        return component_logits(value, self.locs, self.scales, self.weights, self.metric, self.scale_tril)

    def log_prob(self, value: jax.Array) -> jax.Array:
        return logsumexp(self._logits(value), axis=-1)

    def responsibilities(self, value: jax.Array) -> jax.Array:
        """Responsibilities r_j(x): the posterior probability of component j given x.

        Parameters
        ----------
        value : jax.Array
            Points, shape (..., d).

        Returns
        -------
        jax.Array
            Shape (..., N); sums to one over the last axis.
        """
        return jax.nn.softmax(self._logits(value), axis=-1)

    def score(self, value: jax.Array) -> jax.Array:
        """The score ``grad_x log q(x)`` in closed form.

        Parameters
        ----------
        value : jax.Array
            Points, shape (..., d).

        Returns
        -------
        jax.Array
            Shape (..., d).
        """
        return mixture_score(value, self.locs, self.scales, self.weights, self.metric, self.scale_tril)

    @property
    def mean(self) -> jax.Array:
        return self.component_weights @ self.locs

    @property
    def variance(self) -> jax.Array:
        w = self.component_weights
        second = w @ self.locs**2 + (w @ self.scales**2) * self.diag_metric
        return second - self.mean**2

    def marginal_cdf(self, value: jax.Array) -> jax.Array:
        """Per-coordinate marginal CDF, ``F_k(x_k) = sum_i w_i Phi((x_k - m_ik) / (sigma_i sqrt(D_k)))``.

        Parameters
        ----------
        value : jax.Array
            Points, shape (..., d).

        Returns
        -------
        jax.Array
            F_k at every coordinate, shape (..., d).
        """
        sd = self.scales[:, None] * jnp.sqrt(self.diag_metric)
        return jnp.einsum("i,...ik->...k", self.component_weights, ndtr((value[..., None, :] - self.locs) / sd))

    def marginal_icdf(self, q: jax.Array, num_iters: int = 64) -> jax.Array:
        """Per-coordinate marginal quantiles, by bisection on :meth:`marginal_cdf`.

        Parameters
        ----------
        q : jax.Array
            Probabilities in (0, 1), shape (...,).
        num_iters : int, optional
            Bisection steps (64 resolves the bracket to float precision).

        Returns
        -------
        jax.Array
            The q-quantile of every coordinate's marginal, shape (..., d).
        """
        q = jnp.asarray(q, self.locs.dtype)[..., None]
        sd = self.scales[:, None] * jnp.sqrt(self.diag_metric)
        lo = jnp.min(self.locs - 12 * sd, axis=0)
        hi = jnp.max(self.locs + 12 * sd, axis=0)
        lo, hi = jnp.broadcast_to(lo, q.shape[:-1] + lo.shape), jnp.broadcast_to(hi, q.shape[:-1] + hi.shape)

        def body(_, bounds):
            a, b = bounds
            mid = 0.5 * (a + b)
            below = self.marginal_cdf(mid) < q
            return jnp.where(below, mid, a), jnp.where(below, b, mid)

        a, b = jax.lax.fori_loop(0, num_iters, body, (lo, hi))
        return 0.5 * (a + b)

    def entropy_estimate(self, key: jax.Array, num_samples: int = 1000) -> jax.Array:
        """Monte-Carlo estimate of the entropy -E_q[log q] (the mixture entropy has no closed form).

        Parameters
        ----------
        key : jax.Array
            PRNG key for the draws.
        num_samples : int, optional
            Number of draws.

        Returns
        -------
        jax.Array
            The estimate, a scalar.
        """
        return -jnp.mean(self.log_prob(self.sample(key, (num_samples,))))
