"""
Neal's funnel, centred and reparameterised
==========================================

Neal's funnel in ten dimensions: a log-scale ``v`` and nine coordinates whose spread it sets,

    v ~ N(0, 3²),   x_i | v ~ N(0, exp(v / 2)²),   i = 1..9.

There are no data: the posterior is this prior, so the exact answer is known (``v`` has mean 0 and sd 3; each
``x_i`` has mean 0 and sd ``exp(9/4)`` ≈ 9.49). The **centred** form samples ``x`` directly: the density
narrows by orders of magnitude into the neck of the funnel (``v`` below about -3), which gradient methods do not
reach. The **reparameterised** form, ``numpyro.handlers.reparam`` with ``LocScaleReparam(0)``, samples
``x_decentered ~ N(0, 1)`` and sets ``x = exp(v / 2) x_decentered``: an isotropic Gaussian in ``(v,
x_decentered)``.

Both forms are fitted by mixvi (defaults: 20 components, 2000 steps), NumPyro's ``AutoNormal`` (SVI, Adam
0.01, 2000 steps) and NUTS (1000 warm-up + 1000 draws); the reference of the tables is the exact answer.

**Measured in full mode** (2-core CPU shared with other jobs, 2026-12-03; one run, seed 0). Centred: mixvi gets the
marginal of ``v`` nearly right (mean -0.49, sd 2.97; 19.3 % of its draws in the neck ``v < -3``, exact 15.9 %),
where NUTS (mean 2.2, sd 2.25, no draw below -3, one divergent transition) and ``AutoNormal`` (mean -1.0, sd
0.46) do not; but its spread of ``x`` is far too small (sd 1.2 against 9.5): its components are Gaussians in
the unconstrained space and cannot follow the funnel's width along ``v``. Reparameterised, all three are right
(``v`` within 0.02 exact sds, sd within 1 %). Wall times: mixvi 19 s and 13 s, ``AutoNormal`` 6 s and 2 s, NUTS
5 s and 3 s.

Set ``MIXVI_DOCS_QUICK=1`` for a quick run (300 steps, NUTS 200 + 200: a smoke test, not a comparison).
"""

# %%
# The two forms
# -------------
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist
from _compare import budget, comparison, fit_autonormal, fit_nuts, mixvi_fits, report, warm_up
from numpyro.infer.reparam import LocScaleReparam
from scipy.stats import norm

DIM = 9


def funnel():
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    with numpyro.plate("i", DIM):
        numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2.0)))


reparameterised = numpyro.handlers.reparam(funnel, config={"x": LocScaleReparam(centered=0)})
EXACT = {"v": (0.0, 3.0), "x (all i)": (0.0, float(np.exp(9.0 / 4.0)))}
P_NECK = float(norm.cdf(-1.0))  # exact P(v < -3)

B = budget(vi_steps=2000, nuts_warmup=1000, nuts_samples=1000)
keys = iter(jax.random.split(jax.random.PRNGKey(0), 6))
warm_up(funnel)
warm_up(reparameterised)

# %%
# Three fits of each form
# -----------------------
# Each is timed from the start to draws in memory, JAX compilation included. ``err`` is the error of a posterior
# mean in exact posterior sds, ``sd/ref`` a posterior sd over the exact one. The nine ``x_i`` are exchangeable, so
# their draws are pooled into one row; its sd is still a noisy statistic (the tails of ``x_i`` are heavy: its
# kurtosis is 3 exp(9) ≈ 24 000), so the row of ``v`` and the share of draws in the neck are the ones to read.
all_fits = {}
for label, model in (("centred", funnel), ("reparameterised", reparameterised)):
    fits = [
        fit_nuts(model, rng_key=next(keys), num_warmup=B.nuts_warmup, num_samples=B.nuts_samples),
        *mixvi_fits(model, rng_key=next(keys), num_steps=B.vi_steps, num_draws=B.vi_draws),
        fit_autonormal(model, rng_key=next(keys), num_steps=B.vi_steps, num_draws=B.vi_draws),
    ]
    values = {f.name: {"v": f.draws["v"], "x (all i)": f.draws["x"].reshape(-1)} for f in fits}
    table = comparison(values, reference="exact", exact=EXACT)
    report(table, fits, reference="exact", title=f"Neal's funnel, {label} (reference: the exact answer)")
    neck = ", ".join(f"{f.name} {np.mean(f.draws['v'] < -3.0):.3f}" for f in fits)
    print(f"share of draws with v < -3: {neck}   (exact {P_NECK:.3f})")
    all_fits[label] = fits

# %%
# The marginal of v
# -----------------
# The exact density is N(0, 3²) (black). In the centred form, every method loses the left tail of ``v``, the neck.
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
grid = np.linspace(-10.0, 10.0, 200)
bins = np.linspace(-10.0, 10.0, 61)
for ax, (label, fits) in zip(axes, all_fits.items(), strict=True):
    ax.plot(grid, norm.pdf(grid, 0.0, 3.0), "k", lw=1.5, label="exact")
    for fit in fits:
        ax.hist(fit.draws["v"], bins=bins, density=True, histtype="step", lw=1.5, label=fit.name)
    ax.set_title(label)
    ax.set_xlabel("v")
axes[0].set_ylabel("density")
axes[0].legend(fontsize=8)
fig.tight_layout()
