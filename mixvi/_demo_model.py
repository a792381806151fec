"""The label-switching model of ``mixvi demo``: a two-group Gaussian mixture with unknown means.

    mu ~ N(0, 3^2 I_2),   y_j ~ (1/2) N(mu_1, 1) + (1/2) N(mu_2, 1),   j = 1..60

The likelihood is symmetric under mu_1 <-> mu_2, so the posterior has two mirror-image modes of equal
mass (mode 0: mu_1 < mu_2; mode 1: mu_1 > mu_2). The data are fixed synthetic draws, half from
N(-1.2, 1) and half from N(1.8, 1). The benchmark suite of the repository uses the same model and data
as one of its targets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

PRIOR_SCALE = 3.0
"""Standard deviation of the N(0, PRIOR_SCALE^2) prior on each group mean."""
TRUE_MEANS = (-1.2, 1.8)
"""The group means the data are drawn around."""
DATA_SEED = 20250613
"""Seed of the fixed data set."""


def make_data(num_obs: int = 60) -> jax.Array:
    """The fixed data set.

    Parameters
    ----------
    num_obs
        Number of measurements; the first half is drawn around ``TRUE_MEANS[0]``, the rest around
        ``TRUE_MEANS[1]``, with unit spread and the fixed seed ``DATA_SEED``.

    Returns
    -------
    jax.Array
        The measurements, shape ``(num_obs,)``.
    """
    half = num_obs // 2
    centres = jnp.concatenate([jnp.full(half, TRUE_MEANS[0]), jnp.full(num_obs - half, TRUE_MEANS[1])])
    return centres + jax.random.normal(jax.random.PRNGKey(DATA_SEED), (num_obs,))


def label_switching_model(y: jax.Array) -> None:
    """NumPyro model: two equally likely groups with unknown means ``mu`` (2,) and unit spread.

    Parameters
    ----------
    y
        Observed measurements, shape ``(n,)``.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SCALE).expand([2]).to_event(1))
    groups = dist.MixtureSameFamily(dist.Categorical(probs=jnp.array([0.5, 0.5])), dist.Normal(mu, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", groups, obs=y)


def unnormalised_log_post(mu: jax.Array, y: jax.Array) -> jax.Array:
    """The log joint log p(mu, y) of ``label_switching_model``.

    Parameters
    ----------
    mu
        Group means, shape ``(..., 2)``.
    y
        Measurements, shape ``(n,)``.

    Returns
    -------
    jax.Array
        log p(mu, y), shape ``(...)``.
    """
    prior = jnp.sum(jax.scipy.stats.norm.logpdf(mu, 0.0, PRIOR_SCALE), -1)
    comp = jax.scipy.stats.norm.logpdf(y[:, None], mu[..., None, :], 1.0) + jnp.log(0.5)  # (..., n, 2)
    return prior + jnp.sum(logsumexp(comp, -1), -1)
