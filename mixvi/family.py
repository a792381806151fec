"""The uniform-weight isotropic Gaussian mixture q = (1/N) sum_i N(m_i, sigma_i^2 I) as a NumPyro
distribution, with its closed-form score (arXiv 2506.13613, section 2).

    log q(x)      = logsumexp_j [ -|x - m_j|^2 / (2 eps_j) - (d/2) log(2 pi eps_j) ] - log N
    grad log q(x) = -sum_j r_j(x) (x - m_j) / eps_j,   r_j = softmax_j of the bracket above

Squared distances come from matrix products (|x|^2 - 2 x.m + |m|^2 after centring on the mean of
the means), so no (..., N, d) tensor is formed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp, ndtr
from numpyro.distributions import Distribution, constraints


def component_logits(x: jax.Array, locs: jax.Array, scales: jax.Array) -> jax.Array:
    """log N(x; m_j, sigma_j^2 I) for every component: x (..., d) -> (..., N)."""
    d = locs.shape[-1]
    centre = jnp.mean(locs, axis=0)
    xc, mc = x - centre, locs - centre
    sq = jnp.sum(xc**2, -1, keepdims=True) - 2.0 * xc @ mc.T + jnp.sum(mc**2, -1)
    sq = jnp.maximum(sq, 0.0)
    eps = scales**2
    return -0.5 * sq / eps - 0.5 * d * jnp.log(2 * jnp.pi * eps)


def mixture_score(x: jax.Array, locs: jax.Array, scales: jax.Array) -> jax.Array:
    """grad_x log q(x) = -sum_j r_j(x) (x - m_j)/eps_j, for x (..., d)."""
    r = jax.nn.softmax(component_logits(x, locs, scales), axis=-1)
    w = r / scales**2
    return -jnp.sum(w, -1, keepdims=True) * x + w @ locs


class IsotropicMixture(Distribution):
    """q(x) = (1/N) sum_i N(x; locs_i, scales_i^2 I) over R^d, uniform fixed weights.

    ``has_rsample`` is True: a draw picks i uniformly (a distribution that does not depend on the
    parameters) and returns locs_i + scales_i z, z ~ N(0, I), so pathwise gradients are unbiased.
    """

    arg_constraints = {"locs": constraints.real_matrix, "scales": constraints.positive}
    support = constraints.real_vector
    reparametrized_params = ["locs", "scales"]
    pytree_data_fields = ("locs", "scales")

    def __init__(self, locs: jax.Array, scales: jax.Array, *, validate_args: bool | None = None):
        if jnp.ndim(locs) != 2:
            raise ValueError(f"locs must have shape (n_components, d), got {jnp.shape(locs)}")
        if jnp.shape(scales) != jnp.shape(locs)[:1]:
            raise ValueError(f"scales must have shape ({jnp.shape(locs)[0]},), got {jnp.shape(scales)}")
        self.locs = locs
        self.scales = scales
        super().__init__(batch_shape=(), event_shape=jnp.shape(locs)[1:], validate_args=validate_args)

    @property
    def has_rsample(self) -> bool:
        return True

    @property
    def n_components(self) -> int:
        return self.locs.shape[0]

    def sample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        k_idx, k_z = jax.random.split(key)
        idx = jax.random.randint(k_idx, sample_shape, 0, self.n_components)
        z = jax.random.normal(k_z, sample_shape + self.event_shape, dtype=self.locs.dtype)
        return self.locs[idx] + self.scales[idx][..., None] * z

    def rsample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        return self.sample(key, sample_shape)

    def log_prob(self, value: jax.Array) -> jax.Array:
        return logsumexp(component_logits(value, self.locs, self.scales), axis=-1) - jnp.log(self.n_components)

    def responsibilities(self, value: jax.Array) -> jax.Array:
        """r_j(x): posterior probability of component j given x, shape (..., N)."""
        return jax.nn.softmax(component_logits(value, self.locs, self.scales), axis=-1)

    def score(self, value: jax.Array) -> jax.Array:
        """grad_x log q(x) in closed form."""
        return mixture_score(value, self.locs, self.scales)

    @property
    def mean(self) -> jax.Array:
        return jnp.mean(self.locs, axis=0)

    @property
    def variance(self) -> jax.Array:
        second = jnp.mean(self.locs**2 + (self.scales**2)[:, None], axis=0)
        return second - self.mean**2

    def marginal_cdf(self, value: jax.Array) -> jax.Array:
        """Per-coordinate CDF: F_k(x_k) = (1/N) sum_i Phi((x_k - m_ik)/sigma_i), value (..., d)."""
        return jnp.mean(ndtr((value[..., None, :] - self.locs) / self.scales[:, None]), axis=-2)

    def marginal_icdf(self, q: jax.Array, num_iters: int = 64) -> jax.Array:
        """Per-coordinate quantiles by bisection on ``marginal_cdf``: q (...,) -> (..., d)."""
        q = jnp.asarray(q, self.locs.dtype)[..., None]
        lo = jnp.min(self.locs - 12 * self.scales[:, None], axis=0)
        hi = jnp.max(self.locs + 12 * self.scales[:, None], axis=0)
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
