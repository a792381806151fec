"""The isotropic Gaussian mixture q = sum_i w_i N(m_i, sigma_i^2 D) as a NumPyro distribution, with
its closed-form score (arXiv 2506.13613, section 2). The paper's family has uniform weights
w_i = 1/N and D = I (the defaults); a shared diagonal metric D and learned weights are mixvi's
extensions (docs/theory.md). With whitened coordinates y = D^(-1/2) x every component is isotropic:

    log q(x)      = logsumexp_j [ log w_j - |y - mu_j|^2 / (2 eps_j) - (d/2) log(2 pi eps_j) ] - (1/2) sum_k log D_k
    grad log q(x) = -D^(-1) sum_j r_j(x) (x - m_j) / eps_j,   r_j = softmax_j of the bracket above

Squared distances come from matrix products (|x|^2 - 2 x.m + |m|^2 after centring on the mean of
the means), so no (..., N, d) tensor is formed.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp, ndtr
from numpyro.distributions import Distribution, constraints


def component_logits(
    x: jax.Array, locs: jax.Array, scales: jax.Array, weights: jax.Array | None = None, metric: jax.Array | None = None
) -> jax.Array:
    """log w_j + log N(x; m_j, sigma_j^2 D) for every component: x (..., d) -> (..., N)."""
    d = locs.shape[-1]
    if metric is not None:
        root = jnp.sqrt(metric)
        x, locs = x / root, locs / root
    centre = jnp.mean(locs, axis=0)
    xc, mc = x - centre, locs - centre
    sq = jnp.sum(xc**2, -1, keepdims=True) - 2.0 * xc @ mc.T + jnp.sum(mc**2, -1)
    sq = jnp.maximum(sq, 0.0)
    eps = scales**2
    out = -0.5 * sq / eps - 0.5 * d * jnp.log(2 * jnp.pi * eps)
    if metric is not None:
        out = out - 0.5 * jnp.sum(jnp.log(metric))
    if weights is None:
        return out - jnp.log(locs.shape[0])
    return out + jnp.log(weights)


def mixture_score(
    x: jax.Array, locs: jax.Array, scales: jax.Array, weights: jax.Array | None = None, metric: jax.Array | None = None
) -> jax.Array:
    """grad_x log q(x) = -D^-1 sum_j r_j(x) (x - m_j)/eps_j, for x (..., d)."""
    r = jax.nn.softmax(component_logits(x, locs, scales, weights, metric), axis=-1)
    w = r / scales**2
    s = -jnp.sum(w, -1, keepdims=True) * x + w @ locs
    return s if metric is None else s / metric


@partial(jax.jit, static_argnums=5)
def _sample(key, locs, scales, weights, metric, sample_shape: tuple) -> jax.Array:
    k_idx, k_z = jax.random.split(key)
    if weights is None:
        idx = jax.random.randint(k_idx, sample_shape, 0, locs.shape[0])
    else:
        idx = jax.random.categorical(k_idx, jnp.log(weights), shape=sample_shape)
    z = jax.random.normal(k_z, sample_shape + locs.shape[1:], dtype=locs.dtype)
    if metric is not None:
        z = z * jnp.sqrt(metric)
    return locs[idx] + scales[idx][..., None] * z


class IsotropicMixture(Distribution):
    """q(x) = sum_i w_i N(x; locs_i, scales_i^2 D) over R^d; by default w_i = 1/N and D = I.

    ``has_rsample`` is True: a draw picks i with probability w_i (a choice that does not depend on
    locs, scales or D) and returns locs_i + scales_i D^(1/2) z, z ~ N(0, I), so pathwise gradients with
    respect to locs, scales and metric are unbiased. (Gradients with respect to learned weights are not
    reparametrised; MixVI's stratified estimator computes those.)
    """

    # weights / metric are optional (None = uniform / identity), so NumPyro's validator skips them
    arg_constraints = {"locs": constraints.real_matrix, "scales": constraints.positive}
    support = constraints.real_vector
    reparametrized_params = ["locs", "scales", "metric"]
    pytree_data_fields = ("locs", "scales", "weights", "metric")

    def __init__(
        self,
        locs: jax.Array,
        scales: jax.Array,
        weights: jax.Array | None = None,
        metric: jax.Array | None = None,
        *,
        validate_args: bool | None = None,
    ):
        if jnp.ndim(locs) != 2:
            raise ValueError(f"locs must have shape (n_components, d), got {jnp.shape(locs)}")
        if jnp.shape(scales) != jnp.shape(locs)[:1]:
            raise ValueError(f"scales must have shape ({jnp.shape(locs)[0]},), got {jnp.shape(scales)}")
        if weights is not None and jnp.shape(weights) != jnp.shape(locs)[:1]:
            raise ValueError(f"weights must have shape ({jnp.shape(locs)[0]},), got {jnp.shape(weights)}")
        if metric is not None and jnp.shape(metric) != jnp.shape(locs)[1:]:
            raise ValueError(f"metric must have shape ({jnp.shape(locs)[1]},), got {jnp.shape(metric)}")
        self.locs = locs
        self.scales = scales
        self.weights = weights
        self.metric = metric
        super().__init__(batch_shape=(), event_shape=jnp.shape(locs)[1:], validate_args=validate_args)

    @property
    def component_weights(self) -> jax.Array:
        """w (N,): the mixture weights (uniform unless learned)."""
        if self.weights is None:
            return jnp.full(self.locs.shape[:1], 1.0 / self.locs.shape[0], dtype=self.locs.dtype)
        return self.weights

    @property
    def diag_metric(self) -> jax.Array:
        """D (d,): the shared diagonal metric (ones unless learned)."""
        return jnp.ones(self.locs.shape[1:], self.locs.dtype) if self.metric is None else self.metric

    @property
    def has_rsample(self) -> bool:
        return True

    @property
    def n_components(self) -> int:
        return self.locs.shape[0]

    def sample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        return _sample(key, self.locs, self.scales, self.weights, self.metric, tuple(sample_shape))

    def rsample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        return self.sample(key, sample_shape)

    def _logits(self, value: jax.Array) -> jax.Array:
        return component_logits(value, self.locs, self.scales, self.weights, self.metric)

    def log_prob(self, value: jax.Array) -> jax.Array:
        return logsumexp(self._logits(value), axis=-1)

    def responsibilities(self, value: jax.Array) -> jax.Array:
        """r_j(x): posterior probability of component j given x, shape (..., N)."""
        return jax.nn.softmax(self._logits(value), axis=-1)

    def score(self, value: jax.Array) -> jax.Array:
        """grad_x log q(x) in closed form."""
        return mixture_score(value, self.locs, self.scales, self.weights, self.metric)

    @property
    def mean(self) -> jax.Array:
        return self.component_weights @ self.locs

    @property
    def variance(self) -> jax.Array:
        w = self.component_weights
        second = w @ self.locs**2 + (w @ self.scales**2) * self.diag_metric
        return second - self.mean**2

    def marginal_cdf(self, value: jax.Array) -> jax.Array:
        """Per-coordinate CDF: F_k(x_k) = sum_i w_i Phi((x_k - m_ik)/(sigma_i sqrt(D_k))), value (..., d)."""
        sd = self.scales[:, None] * jnp.sqrt(self.diag_metric)
        return jnp.einsum("i,...ik->...k", self.component_weights, ndtr((value[..., None, :] - self.locs) / sd))

    def marginal_icdf(self, q: jax.Array, num_iters: int = 64) -> jax.Array:
        """Per-coordinate quantiles by bisection on ``marginal_cdf``: q (...,) -> (..., d)."""
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
        """Monte-Carlo entropy -E_q[log q] (the mixture entropy has no closed form)."""
        return -jnp.mean(self.log_prob(self.sample(key, (num_samples,))))
