"""Benchmark targets: a Bayesian logistic regression on synthetic data.

    w ~ N(0, I_d),   y_i | w ~ Bernoulli(sigmoid(x_i . w)),   i = 1..n

The potential (NumPyro's potential energy, -log joint) and its gradient are

    V(w)      = |w|^2 / 2 + (d/2) log(2 pi) + sum_i [softplus(l_i) - y_i l_i],   l = X w
    grad V(w) = w + X^T (sigmoid(X w) - y)

so one gradient costs two (n, d) matrix-vector products: with n >= d the likelihood dominates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


def logistic_regression(x: jax.Array, y: jax.Array | None = None) -> None:
    """NumPyro model: standard normal prior on the d weights, Bernoulli-logit likelihood on n rows."""
    d = x.shape[1]
    w = numpyro.sample("w", dist.Normal(jnp.zeros(d, x.dtype), 1.0).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def make_data(key: jax.Array, n: int, d: int) -> tuple[jax.Array, jax.Array]:
    """Synthetic data: features x_ij ~ N(0, 1/d) (so the logits have O(1) scale whatever d is),
    true weights w* ~ N(0, I), labels y ~ Bernoulli(sigmoid(x w*)) as float32 0/1."""
    k_x, k_w, k_y = jax.random.split(key, 3)
    x = jax.random.normal(k_x, (n, d)) / jnp.sqrt(d)
    w_true = jax.random.normal(k_w, (d,))
    y = jax.random.bernoulli(k_y, jax.nn.sigmoid(x @ w_true)).astype(x.dtype)
    return x, y


def potential(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Hand-written V(w) = -log p(w, y | x), equal to NumPyro's potential energy of
    ``logistic_regression`` (the latent ``w`` is unconstrained, so there is no Jacobian term)."""
    logits = x @ w
    d = w.shape[-1]
    return 0.5 * jnp.sum(w**2) + 0.5 * d * jnp.log(2 * jnp.pi) + jnp.sum(jax.nn.softplus(logits) - y * logits)


def potential_grad(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Analytic grad V(w) = w + X^T (sigmoid(X w) - y)."""
    return w + x.T @ (jax.nn.sigmoid(x @ w) - y)
