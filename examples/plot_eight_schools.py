"""
Eight schools: mixvi against NUTS, summarised with ArviZ
========================================================

The eight-schools model (Rubin 1981; the non-centred form of Gelman et al., "Bayesian Data
Analysis") fitted by mixvi and by NumPyro's NUTS. ``mixvi.to_datatree`` turns a fitted guide into an
ArviZ ``DataTree`` (posterior draws in constrained space with ``chain`` and ``draw`` dimensions), so
``arviz.summary`` reads both fits the same way.

Set ``MIXVI_DOCS_QUICK=1`` to run it with fewer steps and shorter chains (what the documentation
build in CI does).
"""

# %%
# The model
# ---------
import os

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import mixvi

QUICK = os.environ.get("MIXVI_DOCS_QUICK", "0") not in ("", "0")
NUM_STEPS = 400 if QUICK else 3000
NUM_WARMUP, NUM_DRAWS = (300, 300) if QUICK else (1000, 1000)

y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
sigma = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        theta_raw = numpyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_raw)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


key_vi, key_tree, key_nuts = jax.random.split(jax.random.PRNGKey(0), 3)

# %%
# mixvi
# -----
guide = mixvi.AutoIsotropicMixture(eight_schools, n_components=10)
result = mixvi.MixVI(eight_schools, guide).run(key_vi, NUM_STEPS, sigma, y, progress_bar=False)
vi_tree = mixvi.to_datatree(guide, result.params, sigma, y, rng_key=key_tree, num_samples=2000)

# %%
# NUTS
# ----
mcmc = MCMC(
    NUTS(eight_schools), num_warmup=NUM_WARMUP, num_samples=NUM_DRAWS, num_chains=2, chain_method="sequential",
    progress_bar=False,
)
mcmc.run(key_nuts, sigma, y)
nuts_tree = az.from_numpyro(mcmc)

# %%
# Side by side
# ------------
# ``arviz.summary`` of each fit for the population mean ``mu`` and the between-school scale ``tau``.
columns = ["mean", "sd"]
vi_summary = az.summary(vi_tree, var_names=["mu", "tau"], kind="stats")[columns]
nuts_summary = az.summary(nuts_tree, var_names=["mu", "tau"], kind="stats")[columns]
table = vi_summary.add_prefix("mixvi ").join(nuts_summary.add_prefix("NUTS "))
print(table.round(2).to_string())

# %%
# The marginal of tau
# -------------------
# ``tau`` has most of its mass near zero and a long right tail; the histogram shows how much of that
# tail each fit sees.
tau_vi = np.asarray(vi_tree.posterior["tau"]).ravel()
tau_nuts = np.asarray(mcmc.get_samples()["tau"])
fig, ax = plt.subplots(figsize=(7, 3.5))
bins = np.linspace(0.0, 25.0, 60)
ax.hist(tau_vi, bins=bins, density=True, alpha=0.55, label="mixvi (10 components)")
ax.hist(tau_nuts, bins=bins, density=True, alpha=0.55, label="NUTS (2 chains)")
ax.set_xlabel("tau")
ax.set_ylabel("density")
ax.legend()
fig.tight_layout()
