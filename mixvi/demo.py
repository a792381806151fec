"""``mixvi demo``: label switching in a two-group mixture, fitted by mixvi and by NumPyro's AutoNormal.

The model: 60 one-dimensional measurements from two equally likely groups with unit spread and
unknown group means,

    mu_1, mu_2 ~ N(0, 3^2),    y_i ~ 1/2 N(mu_1, 1) + 1/2 N(mu_2, 1).

The two labels are exchangeable, so the exact posterior is symmetric under swapping mu_1 and mu_2:
it has two mirror-image modes, each holding exactly half of the mass,

    mode A: mu_1 < mu_2 (near the group means (-1.2, 1.8)),   mode B: mu_1 > mu_2 (near (1.8, -1.2)).

A single Gaussian (AutoNormal) can only sit on one of them; a uniform mixture of isotropic
Gaussians (``AutoIsotropicMixture`` trained by ``MixVI``) puts components on both. The posterior is
2-D, so the exact density is computed on a grid and drawn as the reference.

``run_demo`` prints the comparison (ArviZ summaries, Pareto k-hat, mixvi's component table, the mass
on each mode), writes a figure and returns a ``DemoResult`` for tests to inspect.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer.util import log_density

TRUE_MEANS = (-1.2, 1.8)
"""The group means the synthetic data are drawn from."""
NUM_OBS = 60
PRIOR_SCALE = 3.0
DATA_SEED = 20250613
"""The data set is fixed (``--seed`` changes the inference, not the data)."""
MODES = ("A", "B")


def make_data(num_obs: int = NUM_OBS) -> jax.Array:
    """The fixed synthetic data set: ``num_obs`` points, half from N(-1.2, 1), half from N(1.8, 1)."""
    half = num_obs // 2
    centres = jnp.concatenate([jnp.full(half, TRUE_MEANS[0]), jnp.full(num_obs - half, TRUE_MEANS[1])])
    return centres + jax.random.normal(jax.random.PRNGKey(DATA_SEED), (num_obs,))


def model(y: jax.Array) -> None:
    """Two-group Gaussian mixture with unknown group means ``mu`` (shape (2,)) and known weights and spread."""
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SCALE).expand([2]).to_event(1))
    groups = dist.MixtureSameFamily(dist.Categorical(probs=jnp.array([0.5, 0.5])), dist.Normal(mu, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", groups, obs=y)


def mode_of(mu: np.ndarray) -> np.ndarray:
    """0 for mode A (mu_1 < mu_2), 1 for mode B (mu_1 > mu_2); ``mu`` (..., 2)."""
    return (mu[..., 0] > mu[..., 1]).astype(int)


def mode_fractions(mu: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """Fraction of the draws ``mu`` (S, 2) (optionally weighted) in mode A and in mode B."""
    w = np.full(len(mu), 1.0 / len(mu)) if weights is None else np.asarray(weights) / np.sum(weights)
    b = float(np.sum(w[mode_of(mu) == 1]))
    return 1.0 - b, b


@dataclass(frozen=True)
class Fit:
    """One method's fit. ``samples``: posterior draws of mu (S, 2); ``fraction``: share of the draws
    in modes (A, B); ``mass``: importance-weighted mass on (A, B) (p/q weights, self-normalised);
    ``khat``: Pareto k-hat of those weights; ``elbo``: Monte-Carlo ELBO; ``summary``: ``az.summary``."""

    name: str
    samples: np.ndarray
    fraction: tuple[float, float]
    mass: tuple[float, float]
    khat: float
    elbo: float
    summary: Any
    seconds: float
    params: dict


@dataclass(frozen=True)
class DemoResult:
    """What ``run_demo`` computed: the two fits, mixvi's component table, the exact reference's
    mean/sd, the figure's path (None when not drawn) and the printed report."""

    mixvi: Fit
    autonormal: Fit
    components: Any
    exact_summary: Any
    figure: Path | None
    report: str

    @property
    def verdict(self) -> str:
        """One line: the mass each method puts on each mode."""
        return _verdict(self.mixvi, self.autonormal)


# --- pieces ----------------------------------------------------------------------------------------
def guide_log_weights(guide: Any, params: dict, args: tuple, rng_key: jax.Array, num_samples: int):
    """Draws from any NumPyro guide with log p(x, y) and log q(x) at each (constrained space, the
    terms of Trace_ELBO). Returns (log_p (S,), log_q (S,), latent dict of (S, ...) arrays)."""

    def one(key: jax.Array):
        log_q, trace = log_density(handlers.seed(guide, key), args, {}, params)
        latent = {k: s["value"] for k, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}
        log_p, _ = log_density(model, args, {}, latent)
        return log_p, log_q, latent

    return jax.vmap(one)(jax.random.split(rng_key, num_samples))


def pareto_khat(log_weights: np.ndarray) -> float:
    """Pareto k-hat of PSIS (ArviZ's estimator) for the log importance weights (S,)."""
    from arviz_stats.base.array import array_stats

    return float(array_stats.psislw(np.asarray(log_weights, float))[1])


def exact_grid(y: jax.Array, lo: float, hi: float, num: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact posterior density on a num x num grid over [lo, hi]^2: (axis (num,), density (num, num)),
    normalised to integrate to 1, ``density[i, j]`` at (mu_1 = axis[j], mu_2 = axis[i])."""
    axis = jnp.linspace(lo, hi, num)
    m1, m2 = jnp.meshgrid(axis, axis)
    pts = jnp.stack([m1.ravel(), m2.ravel()], -1)
    logp = jax.jit(jax.vmap(lambda mu: log_density(model, (y,), {}, {"mu": mu})[0]))(pts)
    p = np.exp(np.asarray(logp - jnp.max(logp), float)).reshape(num, num)
    cell = float(axis[1] - axis[0]) ** 2
    return np.asarray(axis), p / (p.sum() * cell)


def exact_samples(axis: np.ndarray, density: np.ndarray, rng_key: jax.Array, num_samples: int) -> np.ndarray:
    """Draws from the gridded exact posterior: a cell by its mass, then uniformly inside it; (S, 2)."""
    k_cell, k_jit = jax.random.split(rng_key)
    flat = density.ravel() / density.sum()
    idx = np.asarray(jax.random.choice(k_cell, flat.size, (num_samples,), p=jnp.asarray(flat)))
    h = axis[1] - axis[0]
    jitter = np.asarray(jax.random.uniform(k_jit, (num_samples, 2), minval=-h / 2, maxval=h / 2))
    return np.stack([axis[idx % axis.size], axis[idx // axis.size]], -1) + jitter


def _summary(tree: Any) -> Any:
    import arviz as az

    return az.summary(tree, kind="stats", round_to=2)


def _samples_tree(samples: np.ndarray) -> Any:
    import arviz as az

    return az.from_dict({"posterior": {"mu": np.asarray(samples)[None]}})


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _verdict(mix: Fit, an: Fit) -> str:
    def where(fit: Fit) -> str:
        a, b = fit.mass
        if min(a, b) >= 0.2:
            return "both modes"
        return f"mode {'A' if a > b else 'B'} only"

    return (
        f"verdict: mixvi covers {where(mix)} (mass A {_pct(mix.mass[0]).strip()}, B {_pct(mix.mass[1]).strip()}); "
        f"AutoNormal covers {where(an)} (A {_pct(an.mass[0]).strip()}, B {_pct(an.mass[1]).strip()}); "
        "exact: 50% / 50%."
    )


def _header(title: str, width: int = 78) -> str:
    return f"\n-- {title} " + "-" * max(0, width - len(title) - 4)


def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line for line in str(text).splitlines())


# --- the demo --------------------------------------------------------------------------------------
def run_demo(
    *,
    steps: int = 2000,
    components: int = 10,
    seed: int = 0,
    out: str | Path | None = "docs/figures/demo.png",
    quick: bool = False,
    stream: TextIO | None = None,
) -> DemoResult:
    """Fit the label-switching model with mixvi and with AutoNormal, print the comparison, draw the figure.

    :param steps: optimisation steps of each method (``quick`` caps them at 300).
    :param components: mixvi's number of mixture components.
    :param seed: seeds every random draw of the inference (same seed, same output).
    :param out: where to write the PNG figure; None to skip it.
    :param quick: a fast run (fewer steps and draws, coarser grid) for tests and smoke checks.
    :param stream: where to print (default ``sys.stdout``).
    """
    import mixvi  # the package's public API, as a user would call it

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    stream = sys.stdout if stream is None else stream
    if quick:
        steps = min(steps, 300)
    num_draws = 1000 if quick else 4000
    grid = 120 if quick else 240
    lines: list[str] = []

    def say(text: str = "") -> None:
        lines.append(text)
        print(text, file=stream, flush=True)

    y = make_data()
    args = (y,)
    keys = jax.random.split(jax.random.PRNGKey(seed), 8)

    say("mixvi demo: label switching in a two-group mixture")
    say(f"  data  : {NUM_OBS} synthetic measurements, half from N({TRUE_MEANS[0]}, 1), half from N({TRUE_MEANS[1]}, 1)")
    say(f"  model : mu_1, mu_2 ~ N(0, {PRIOR_SCALE:g}^2);  y_i ~ 1/2 N(mu_1, 1) + 1/2 N(mu_2, 1)")
    say("  The group labels are exchangeable, so the exact posterior has two mirror-image modes")
    say("  with 50% of the mass each:  mode A = {mu_1 < mu_2},  mode B = {mu_1 > mu_2}.")
    say()

    # mixvi ---------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    guide = mixvi.AutoIsotropicMixture(model, n_components=components)
    engine = mixvi.MixVI(model, guide, method="ibw", step_size="auto", num_samples=10)
    res = engine.run(keys[0], steps, *args, progress_bar=False)
    params = {k: np.asarray(v) for k, v in res.params.items()}
    jax.block_until_ready(res.losses)
    t_mix = time.perf_counter() - t0
    say(f"fitted mixvi       AutoIsotropicMixture({components} components), MixVI ibw, auto step, {steps} steps"
        f"  [{t_mix:.1f} s]")

    # AutoNormal ----------------------------------------------------------------------------------
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    t0 = time.perf_counter()
    an_guide = AutoNormal(model)
    svi = SVI(model, an_guide, numpyro.optim.Adam(0.05), Trace_ELBO())
    an_res = svi.run(keys[1], steps, *args, progress_bar=False)
    an_params = {k: np.asarray(v) for k, v in an_res.params.items()}
    t_an = time.perf_counter() - t0
    say(f"fitted AutoNormal  SVI + Adam(0.05), Trace_ELBO, {steps} steps  [{t_an:.1f} s]")

    # diagnostics ---------------------------------------------------------------------------------
    tree = mixvi.to_datatree(guide, res.params, *args, rng_key=keys[2], num_samples=num_draws)
    mix_samples = np.asarray(tree.posterior["mu"]).reshape(-1, 2)
    khat_mix = mixvi.psis_khat(guide, res.params, *args, rng_key=keys[3], num_samples=num_draws)
    comp = mixvi.component_summary(guide, res.params, *args, rng_key=keys[4], num_samples=num_draws)
    lp, lq, lat = guide_log_weights(guide, res.params, args, keys[5], num_draws)
    lw = np.asarray(lp - lq, float)
    w = np.exp(lw - lw.max())
    mix = Fit(
        "mixvi", mix_samples, mode_fractions(mix_samples), mode_fractions(np.asarray(lat["mu"]), w),
        float(khat_mix), float(np.mean(lw)), _summary(tree), t_mix, params,
    )

    lp, lq, lat = guide_log_weights(an_guide, an_res.params, args, keys[6], num_draws)
    an_samples = np.asarray(lat["mu"])
    lw = np.asarray(lp - lq, float)
    w = np.exp(lw - lw.max())
    an = Fit(
        "AutoNormal", an_samples, mode_fractions(an_samples), mode_fractions(an_samples, w),
        pareto_khat(lw), float(np.mean(lw)), _summary(_samples_tree(an_samples)), t_an, an_params,
    )

    lo, hi = min(TRUE_MEANS) - 2.0, max(TRUE_MEANS) + 2.0
    axis, density = exact_grid(y, lo, hi, grid)
    exact_summary = _summary(_samples_tree(exact_samples(axis, density, keys[7], num_draws)))

    # report --------------------------------------------------------------------------------------
    import pandas as pd

    say(_header("posterior of mu (az.summary; exact = gridded true posterior)"))
    table = pd.concat({"exact": exact_summary, "mixvi": mix.summary, "AutoNormal": an.summary})
    table = table.swaplevel(0, 1).sort_index(level=0, sort_remaining=False)
    table.index.names = ["", ""]
    say(_indent(table.to_string()))

    say(_header(f"mixvi's {components} components (mixvi.component_summary)"))
    comp_show = comp.copy()
    comp_show.insert(0, "mode", [MODES[m] for m in mode_of(params[f"{guide.prefix}_locs"])])
    say(_indent(comp_show.to_string(float_format=lambda v: f"{v:.3f}")))

    say(_header("fit quality"))
    rows = [
        ("share of draws in mode A / B", mix.fraction, an.fraction, "50% / 50%"),
        ("importance-weighted mass A / B", mix.mass, an.mass, "50% / 50%"),
    ]
    say(f"  {'':34s}{'mixvi':>18s}{'AutoNormal':>18s}{'exact':>14s}")
    for label, m, a, ex in rows:
        say(f"  {label:34s}{_pct(m[0]) + ' /' + _pct(m[1]):>18s}{_pct(a[0]) + ' /' + _pct(a[1]):>18s}{ex:>14s}")
    say(f"  {'ELBO (Monte Carlo, higher = better)':34s}{mix.elbo:18.2f}{an.elbo:18.2f}")
    say(f"  {'Pareto k-hat of p/q':34s}{mix.khat:18.2f}{an.khat:18.2f}")
    say()
    say(f"  The mixture's ELBO is higher by {mix.elbo - an.elbo:.2f} nats (log 2 = {math.log(2):.2f} is what covering")
    say("  a second, equal mode is worth). k-hat < 0.7 means q is a usable proposal *where it puts mass*:")
    say("  it cannot see a mode q never visits, which is why AutoNormal's k-hat looks fine too.")
    say()
    say(_verdict(mix, an))

    figure = None
    if out is not None:
        figure = draw_figure(Path(out), axis, density, guide, mix, an, quick=quick)
        say(f"figure: {figure}")

    return DemoResult(mix, an, comp, exact_summary, figure, "\n".join(lines))


# --- the figure ------------------------------------------------------------------------------------
def _levels(p: np.ndarray, fractions: tuple[float, ...] = (0.5, 0.9, 0.99)) -> list[float]:
    """Density levels of the highest-density regions holding ``fractions`` of the gridded mass."""
    flat = np.sort(p.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    lv = sorted({float(flat[min(np.searchsorted(cum, f), flat.size - 1)]) for f in fractions})
    return lv


def draw_figure(out: Path, axis: np.ndarray, exact: np.ndarray, guide: Any, mix: Fit, an: Fit, *, quick: bool) -> Path:
    """Joint posterior (exact, mixvi, AutoNormal, component means) and the marginal of mu_1, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from jax.scipy.stats import norm

    m1, m2 = np.meshgrid(axis, axis)
    pts = jnp.stack([jnp.asarray(m1.ravel()), jnp.asarray(m2.ravel())], -1)
    q = guide.get_posterior({k: jnp.asarray(v) for k, v in mix.params.items()})
    p_mix = np.exp(np.asarray(q.log_prob(pts))).reshape(m1.shape)
    loc, scale = an.params["mu_auto_loc"], an.params["mu_auto_scale"]
    p_an = np.exp(np.asarray(norm.logpdf(pts, loc, scale).sum(-1))).reshape(m1.shape)
    locs, sigmas = mix.params[f"{guide.prefix}_locs"], mix.params[f"{guide.prefix}_scales"]

    blue, orange, grey = "#1f5fbf", "#e07b00", "0.35"
    fig, (ax, axm) = plt.subplots(1, 2, figsize=(11, 4.9), gridspec_kw={"width_ratios": [1.1, 1]})
    ax.contourf(m1, m2, exact, levels=_levels(exact) + [exact.max() * 1.01], cmap="Greys", alpha=0.55)
    ax.contour(m1, m2, p_mix, levels=_levels(p_mix), colors=blue, linewidths=1.2)
    ax.contour(m1, m2, p_an, levels=_levels(p_an), colors=orange, linewidths=1.4, linestyles="--")
    ax.scatter(locs[:, 0], locs[:, 1], marker="x", s=40, color=blue, lw=1.6, zorder=5)
    ax.plot(axis, axis, ls=":", color=grey, lw=1)
    ax.text(axis[-1], axis[-1], r"$\mu_1=\mu_2$  ", ha="right", va="bottom", color=grey, fontsize=9)
    for i, (x, yy) in enumerate([(TRUE_MEANS[0], TRUE_MEANS[1]), (TRUE_MEANS[1], TRUE_MEANS[0])]):
        ax.annotate(
            f"mode {MODES[i]}\nmixvi {100 * mix.mass[i]:.0f}%, AutoNormal {100 * an.mass[i]:.0f}%",
            (x, yy), xytext=(x + (0.9 if i == 0 else -0.9), yy + 0.95), ha="center", fontsize=8.5,
        )
    ax.set_xlabel(r"$\mu_1$")
    ax.set_ylabel(r"$\mu_2$")
    ax.set_aspect("equal")
    ax.set_title("joint posterior (50 / 90 / 99% regions)", fontsize=10)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="0.6", label="exact (grid)"),
            Line2D([], [], color=blue, label=f"mixvi, {len(locs)} components"),
            Line2D([], [], color=blue, marker="x", ls="", label="component means"),
            Line2D([], [], color=orange, ls="--", label="AutoNormal"),
        ],
        loc="lower left", fontsize=8, framealpha=0.9,
    )

    h = axis[1] - axis[0]
    marg = exact.sum(0) * h
    axm.fill_between(axis, marg, color="0.75", label="exact (grid)")
    dens_mix = np.mean(np.exp(np.asarray(norm.logpdf(axis[:, None], locs[None, :, 0], sigmas[None, :]))), axis=1)
    axm.plot(axis, dens_mix, color=blue, lw=1.8, label="mixvi")
    axm.plot(axis, np.exp(np.asarray(norm.logpdf(axis, loc[0], scale[0]))), color=orange, lw=1.6, ls="--",
             label="AutoNormal")
    axm.set_xlabel(r"$\mu_1$")
    axm.set_ylabel("density")
    axm.set_title(r"marginal of $\mu_1$ ($\mu_2$ is its mirror image)", fontsize=10)
    axm.legend(fontsize=8, loc="upper center")
    axm.set_ylim(bottom=0)
    fig.suptitle(
        "Label switching: mixvi covers both modes of the posterior, AutoNormal only one"
        + ("  (quick run)" if quick else ""),
        fontsize=11.5,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70 if quick else 130)
    plt.close(fig)
    return out
