"""
A small Bayesian neural network
===============================

One hidden layer of 8 tanh units on a 1-D regression toy: 40 noisy points of ``sin(x)`` in two clusters,
``x`` in [-3, -1] and in [1, 3], with nothing in between. Standard normal priors on the weights (the output
weights scaled by 1/√8), a half-normal prior on the noise sd:

    h(x) = tanh(x w1 + b1),   f(x) = h(x) · w2 + b2,   y_i ~ N(f(x_i), sigma²)      (26 parameters).

The weights are not identifiable (swapping two hidden units or flipping the signs of one unit's weights gives
the same function), so the posterior has many equivalent modes and the weights themselves cannot be compared
between fits; the table compares the prediction ``f(x)`` on a grid of inputs, inside the data, in the gap between
the clusters and outside them, and ``sigma``. Fitted by mixvi (defaults: 20 components, 2000 steps), NumPyro's
``AutoNormal`` (SVI, Adam 0.01, 2000 steps) and NUTS (1000 warm-up + 1000 draws).

**Measured in full mode** (2-core CPU shared with other jobs, 2026-12-03; one run, seed 0). Both VI methods lose
to NUTS here. After 2000 steps neither has fitted the data as well as NUTS's draws do: the noise sd comes out at
0.27 (mixvi) and 0.34 (``AutoNormal``) against NUTS's 0.13, and the predictions at the edge of the clusters and
outside them are off by several NUTS sds (largest errors: mixvi 5.9 at x = 3, ``AutoNormal`` 6.7 at x = -3), with
bands 0.6-2.8 (mixvi) and 1.0-4.5 (``AutoNormal``) times NUTS's width. mixvi is the closer of the two on 5 of the
10 rows. Wall times: mixvi 18 s, ``AutoNormal`` 7 s, NUTS 7.5 s. (Earlier the same day, before a change of the
guide's initialisation, mixvi's default run stopped on a non-finite step at step 1345.)

Set ``MIXVI_DOCS_QUICK=1`` for a quick run (300 steps, NUTS 200 + 200: a smoke test, not a comparison).
"""

# %%
# Data and the network
# --------------------
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist
from _compare import budget, comparison, fit_autonormal, fit_nuts, mixvi_fits, pick, predict, report, warm_up

HIDDEN = 8
rng = np.random.default_rng(0)
x_np = np.concatenate([rng.uniform(-3.0, -1.0, 20), rng.uniform(1.0, 3.0, 20)])
y_np = np.sin(x_np) + 0.1 * rng.normal(size=x_np.shape)
x, y = jnp.asarray(x_np, dtype=jnp.float32), jnp.asarray(y_np, dtype=jnp.float32)


def bnn(x, y=None):
    w1 = numpyro.sample("w1", dist.Normal(0.0, 1.0).expand([HIDDEN]).to_event(1))
    b1 = numpyro.sample("b1", dist.Normal(0.0, 1.0).expand([HIDDEN]).to_event(1))
    w2 = numpyro.sample("w2", dist.Normal(0.0, 1.0 / np.sqrt(HIDDEN)).expand([HIDDEN]).to_event(1))
    b2 = numpyro.sample("b2", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    hidden = jnp.tanh(x[:, None] * w1 + b1)
    f = numpyro.deterministic("f", hidden @ w2 + b2)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)


B = budget(vi_steps=2000, nuts_warmup=1000, nuts_samples=1000)
key_nuts, key_mixvi, key_normal = jax.random.split(jax.random.PRNGKey(0), 3)
warm_up(bnn, x, y)

# %%
# Three fits
# ----------
# Each is timed from the start to draws in memory, JAX compilation included.
nuts = fit_nuts(bnn, x, y, rng_key=key_nuts, num_warmup=B.nuts_warmup, num_samples=B.nuts_samples)
vi = mixvi_fits(bnn, x, y, rng_key=key_mixvi, num_steps=B.vi_steps, num_draws=B.vi_draws)
normal = fit_autonormal(bnn, x, y, rng_key=key_normal, num_steps=B.vi_steps, num_draws=B.vi_draws)
fits = [nuts, *vi, normal]

# %%
# The comparison
# --------------
# ``f`` on nine inputs from -4 to 4 (the data cover [-3, -1] and [1, 3]) and ``sigma``. ``err`` is the error of a
# posterior mean in NUTS posterior sds, ``sd/ref`` a posterior sd over NUTS's.
x_table = jnp.linspace(-4.0, 4.0, 9)
values = {f.name: {**predict(f, bnn, ["f"], x_table), **pick(f, ["sigma"])} for f in fits}
table = comparison(values)
table.index = [f"f({float(x_table[int(i[2:-1])]):g})" if i.startswith("f[") else i for i in table.index]
report(table, fits, title="Bayesian neural network: predictions f(x) and the noise sd")

# %%
# The predictions
# ---------------
# Posterior mean and a band of ± two posterior sds of ``f(x)`` for each fit. Between the clusters and outside them
# the data say little, and the width of the band there is what a Bayesian treatment of the weights is for.
x_grid = jnp.linspace(-4.5, 4.5, 121)
fig, axes = plt.subplots(1, len(fits), figsize=(3.7 * len(fits), 3.4), sharey=True)
for ax, fit in zip(axes, fits, strict=True):
    f = predict(fit, bnn, ["f"], x_grid)["f"]
    mean, sd = f.mean(axis=0), f.std(axis=0)
    ax.fill_between(np.asarray(x_grid), mean - 2 * sd, mean + 2 * sd, alpha=0.3)
    ax.plot(x_grid, mean, lw=1.5)
    ax.plot(x_np, y_np, "k.", ms=4)
    ax.set_title(fit.name)
    ax.set_xlabel("x")
    ax.set_ylim(-3.0, 3.0)
axes[0].set_ylabel("f(x)")
fig.tight_layout()
