"""A real multimodal posterior: label switching in a two-component Gaussian mixture model.

    mu ~ N(0, 3^2 I_2),   y_j ~ (1/2) N(mu_1, 1) + (1/2) N(mu_2, 1),   j = 1..60

The likelihood is symmetric under mu_1 <-> mu_2, so the posterior has two mirror-image modes of equal
mass (mode 0: mu_1 < mu_2; mode 1: mu_1 > mu_2). The data are fixed synthetic draws (half from
N(-1.2, 1), half from N(1.8, 1)). The model and data are those of ``mixvi demo`` (``mixvi._demo_model``);
d = 2, so the normaliser and an exact sampler come from a fine grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from benchmarks.targets.base import Target
from mixvi._demo_model import (
    DATA_SEED,
    PRIOR_SCALE,
    TRUE_MEANS,
    label_switching_model,
    make_data,
    unnormalised_log_post,
)

__all__ = [
    "DATA_SEED",
    "GRID",
    "PRIOR_SCALE",
    "TRUE_MEANS",
    "label_switching_model",
    "make_data",
    "make_label_switching",
    "unnormalised_log_post",
]

GRID = (-6.0, 6.0, 401)


def make_label_switching(num_obs: int = 60) -> Target:
    """The label-switching posterior with its grid-normalised log density and a grid sampler."""
    y = make_data(num_obs)
    lo, hi, num = GRID
    axis = np.linspace(lo, hi, num)
    h = axis[1] - axis[0]
    m1, m2 = np.meshgrid(axis, axis, indexing="ij")
    pts = jnp.asarray(np.stack([m1.ravel(), m2.ravel()], -1))
    lp = np.asarray(jax.jit(jax.vmap(lambda m: unnormalised_log_post(m, y)))(pts), float)
    log_z = float(logsumexp(lp) + 2 * np.log(h))
    cdf = np.cumsum(np.exp(lp - lp.max()))
    cdf /= cdf[-1]
    grid = np.asarray(pts)

    def log_prob(mu: jax.Array) -> jax.Array:
        return unnormalised_log_post(mu, y) - log_z

    def sample(key: jax.Array, n: int) -> jax.Array:
        u = np.asarray(jax.random.uniform(key, (n, 3)), float)
        idx = np.minimum(np.searchsorted(cdf, u[:, 0]), cdf.size - 1)
        return jnp.asarray(grid[idx] + (u[:, 1:] - 0.5) * h, jnp.float32)

    def mode_of(mu: jax.Array) -> jax.Array:
        mu = jnp.asarray(mu)
        return (mu[..., 0] > mu[..., 1]).astype(jnp.int32)

    return Target(
        name="label-switching", family="label-switching", model=label_switching_model, dim=2, args=(y,),
        log_prob=log_prob, sample=sample, log_z=log_z, mode_of=mode_of, num_modes=2,
        info={"site": "mu", "site_shape": (2,), "num_obs": num_obs, "prior_scale": PRIOR_SCALE,
              "grid": list(GRID), "normaliser": "grid (401 x 401 on [-6, 6]^2)"},
    )
