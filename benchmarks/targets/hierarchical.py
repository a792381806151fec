"""Two hierarchical models users fit every day, with NUTS as the reference (the quality suite runs it):

- ``horseshoe_regression``: sparse linear regression with a horseshoe prior, written non-centred
  (beta_k = tau lambda_k z_k; tau, lambda_k ~ HalfCauchy(1), z_k ~ N(0, 1), sigma ~ HalfNormal(2)) on 60
  synthetic rows and 20 predictors of which three are non-zero (2.5, -2, 1.5; noise sd 1). d = 42 on
  the unconstrained latent (log tau, log sigma, log lambda (20), z (20)). Its posterior is funnel-like:
  the spread of the null z_k and log lambda_k depends on log tau.
- ``baseball_logit``: the hierarchical logit of Efron and Morris's 18 batters (hits in their first 45
  at-bats, 1970; "Data analysis using Stein's estimator and its generalizations", JASA 70, 1975, Table 1):
  mu ~ N(-1, 1), sigma ~ HalfNormal(1), theta_j ~ N(mu, sigma), hits_j ~ Binomial(45, logit^-1 theta_j).
  d = 20 (mu, log sigma, theta (18)), centred. NUTS, the reference, samples the same posterior written
  non-centred (its centred funnel left NUTS with dozens of divergences and an ESS near 50) and the draws of
  theta are mapped back.

Both are stated on the flattened unconstrained latent that NumPyro's autoguides and
``AutoIsotropicMixture`` share (sites in the order the model samples them), where the suite compares means
and sds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer.reparam import LocScaleReparam

from benchmarks.targets.base import Target

HORSESHOE_SIGNALS = (2.5, -2.0, 1.5)
# hits of the 18 players in their first 45 at-bats (Efron and Morris 1975, Table 1, in its order)
BASEBALL_HITS = (18, 17, 16, 15, 14, 14, 13, 12, 11, 11, 10, 10, 10, 10, 10, 9, 8, 7)
AT_BATS = 45.0


def horseshoe_data(rows: int = 60, predictors: int = 20, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """x (rows, predictors) ~ N(0, 1) and y = x beta + N(0, 1) with the first three coefficients non-zero."""
    beta = np.zeros(predictors)
    beta[: len(HORSESHOE_SIGNALS)] = HORSESHOE_SIGNALS
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, predictors))
    return x.astype(np.float32), (x @ beta + rng.normal(size=rows)).astype(np.float32)


def horseshoe_model(x: jax.Array, y: jax.Array | None = None) -> None:
    """Non-centred horseshoe regression (see the module docstring)."""
    tau = numpyro.sample("tau", dist.HalfCauchy(1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("predictor", x.shape[1]):
        lam = numpyro.sample("lambda", dist.HalfCauchy(1.0))
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(x @ (tau * lam * z), sigma), obs=y)


def make_horseshoe() -> Target:
    """The horseshoe regression; NUTS reference (run by the suite)."""
    x, y = horseshoe_data()
    return Target(
        name="horseshoe_regression", family="regression", model=horseshoe_model, dim=2 + 2 * x.shape[1],
        args=(jnp.asarray(x), jnp.asarray(y)), log_prob=None, log_z=None,
        info={"n_components": "auto", "main": "mean_err_max", "rows": x.shape[0], "predictors": x.shape[1],
              "description": f"horseshoe regression, non-centred, {x.shape[0]} rows, {x.shape[1]} predictors "
                             "(3 non-zero); sites tau, sigma, lambda, z on the unconstrained latent"},
    )


def baseball_model(at_bats: jax.Array, hits: jax.Array | None = None) -> None:
    """Hierarchical logit of the batters' chance of a hit (see the module docstring)."""
    mu = numpyro.sample("mu", dist.Normal(-1.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("player", at_bats.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(mu, sigma))
        numpyro.sample("hits", dist.Binomial(at_bats, logits=theta), obs=hits)


def baseball_noncentred(at_bats: jax.Array, hits: jax.Array | None = None) -> None:
    """The baseball model with theta non-centred (theta = mu + sigma theta_decentered, kept as a deterministic
    site): the same posterior, without the centred funnel that leaves NUTS with divergences and a small ESS."""
    reparam = numpyro.handlers.reparam(baseball_model, config={"theta": LocScaleReparam(centered=0.0)})
    reparam(at_bats, hits)


def make_baseball() -> Target:
    """The baseball hierarchical logit; NUTS reference (run by the suite)."""
    hits = jnp.asarray(BASEBALL_HITS, jnp.float32)
    return Target(
        name="baseball_logit", family="regression", model=baseball_model, dim=2 + len(BASEBALL_HITS),
        args=(jnp.full(hits.shape, AT_BATS), hits), log_prob=None, log_z=None, nuts_model=baseball_noncentred,
        info={"n_components": "auto", "main": "mean_err_max", "players": len(BASEBALL_HITS),
              "description": f"hierarchical logit of {len(BASEBALL_HITS)} batters' hits in 45 at-bats (Efron and "
                             "Morris 1975), centred; sites mu, sigma, theta"},
    )
