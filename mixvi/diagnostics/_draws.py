"""Shared helpers of the guide-level diagnostics: argument checks, the guide a diagnostic describes, and
one compiled draw-and-weigh call.

Private to :mod:`mixvi.diagnostics`. On the flattened unconstrained latent z of the guide:
log p(z) = -V(z) (NumPyro's potential energy, log-Jacobian included) and log q(z) of the mixture.

Two kinds of guide are accepted:

* an ``AutoIsotropicMixture``: q is the mixture; draws, log p and log q are computed on its
  flattened latent directly.
* a NumPyro ``AutoGuideList`` with exactly one ``AutoIsotropicMixture`` part: q is the joint of the
  parts, log q the sum of the parts' log densities (read from a trace of the whole list), and log p
  the model's log joint at all latent sites. Both are put on the unconstrained space by adding the
  same log-Jacobian, so log p - log q is the importance log ratio of the joint.

Subsampled plates (``numpyro.plate(..., subsample_size=...)``) are evaluated on the full data by
default (:class:`FullData`): a minibatch estimate of log p would make every k-hat minibatch noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.autoguide import AutoContinuous, AutoDelta, AutoGuide, AutoGuideList, AutoNormal
from numpyro.infer.util import log_density, potential_energy
from numpyro.primitives import Messenger

from mixvi.guide import AutoIsotropicMixture

NOT_A_GUIDE = "expected an AutoIsotropicMixture, or a NumPyro AutoGuideList with one AutoIsotropicMixture part, got {}"
NOT_SET_UP = (
    "the guide is not set up yet: call guide.setup(rng_key, *model_args, **model_kwargs) "
    "(or run MixVI / SVI on it) before the diagnostics"
)
LIST_NOT_SET_UP = (
    "the AutoGuideList is not set up yet: run SVI on it (svi.init(rng_key, *model_args)) before the diagnostics"
)
NO_MIXTURE_PART = (
    "the AutoGuideList has no AutoIsotropicMixture part (its parts: {}); the diagnostics describe a mixture: "
    "append one, e.g. guide.append(mixvi.AutoIsotropicMixture(numpyro.handlers.block(model, expose=[...])))"
)
TWO_MIXTURE_PARTS = (
    "the AutoGuideList has {} AutoIsotropicMixture parts ({}); the diagnostics describe one mixture: "
    "put the sites of all mixture parts into one AutoIsotropicMixture"
)
POINT_MASS_PART = (
    "part {} of the AutoGuideList puts a point mass on {}: a point mass has no density, so the joint "
    "log q of the list and the importance weights p/q are not defined. Give those sites a guide with a "
    "density (e.g. numpyro.infer.autoguide.AutoNormal) or move them into the mixture part"
)
UNCOVERED_SITES = (
    "the model's latent sites {} are in no part of the AutoGuideList, so the list has no density for them; "
    "add a part for them (e.g. AutoNormal(numpyro.handlers.block(model, expose={})))"
)
MISSING_PARAMS = (
    "params lack {}; pass the constrained params of a fit (e.g. MixVI.run(...).params, or "
    "svi.get_params(state) for a guide list)"
)
BAD_SHAPES = "params do not match the guide: {} has shape {}, {} {}; expected (N, {}) and (N,)"
BAD_COUNT = "{} must be an integer >= 1, got {!r}"
BAD_KEY = "rng_key must be a jax.random key (e.g. jax.random.PRNGKey(0)), got {!r}"
BAD_FULL_DATA = "full_data must be True (evaluate subsampled plates on all the data) or False, got {!r}"

# draws x data-elements evaluated at once when the model has subsampled plates (bounds the memory)
_FULL_DATA_BLOCK = 2**22


class FullData(Messenger):
    """Effect handler: every subsampled plate gets the full index range instead of a random minibatch.

    ``numpyro.plate(name, size, subsample_size=m)`` then yields ``jnp.arange(size)`` and scales its
    sites by 1, so the model's log density is the full-data one. Plates whose indices are already
    given (substituted, or without ``subsample_size``) are left alone.
    """

    def process_message(self, msg: dict) -> None:  # noqa: D102
        if msg["type"] == "plate" and msg["value"] is None:
            size = msg["args"][0]
            msg["value"] = jnp.arange(size)
            msg["args"] = (size, size)


class Fit(NamedTuple):
    """The guide a diagnostic describes.

    Attributes
    ----------
    guide : AutoIsotropicMixture or AutoGuideList
        What the caller passed.
    mixture : AutoIsotropicMixture
        The mixture (the guide itself, or the list's mixture part).
    others : tuple of str
        Descriptions of the list's other parts (empty for a plain mixture).
    """

    guide: Any
    mixture: AutoIsotropicMixture
    others: tuple[str, ...]

    @property
    def is_list(self) -> bool:
        """Whether the guide is an ``AutoGuideList``."""
        return bool(isinstance(self.guide, AutoGuideList))


class Draws(NamedTuple):
    """Draws from q with their log densities (leading axis S)."""

    latent: jax.Array  # the mixture's flattened unconstrained z, (S, d)
    log_p: jax.Array  # log p on the unconstrained space, (S,)
    log_q: jax.Array  # log q of the whole guide on the unconstrained space, (S,)
    resp: jax.Array | None  # responsibilities r_i(z), (S, N), when asked
    sites: dict | None  # guide lists: constrained latent and deterministic sites; None for a plain mixture


def check_full_data(full_data: Any) -> bool:
    """``full_data`` as a bool, or ValueError."""
    if not isinstance(full_data, (bool, np.bool_)):
        raise ValueError(BAD_FULL_DATA.format(full_data))
    return bool(full_data)


def _check_mixture(guide: AutoIsotropicMixture, params: dict) -> None:
    if guide.prototype_trace is None:
        raise RuntimeError(NOT_SET_UP)
    locs_name, scales_name = f"{guide.prefix}_locs", f"{guide.prefix}_scales"
    missing = [k for k in guide.param_names() if k not in params]
    if missing:
        raise KeyError(MISSING_PARAMS.format(missing))
    locs, scales = np.shape(params[locs_name]), np.shape(params[scales_name])
    if len(locs) != 2 or locs[1] != guide.latent_dim or scales != locs[:1]:
        raise ValueError(BAD_SHAPES.format(locs_name, locs, scales_name, scales, guide.latent_dim))


def _part_name(i: int, part: Any) -> str:
    kind = type(part).__name__ if isinstance(part, AutoGuide) else getattr(part, "__name__", type(part).__name__)
    prefix = f"prefix={part.prefix!r}, " if isinstance(part, AutoGuide) else ""
    trace = getattr(part, "prototype_trace", None)
    sites = latent_names(trace) if trace else None
    return f"[{i}] {kind}({prefix}sites {sites})" if sites is not None else f"[{i}] {kind}"


def _point_masses(part: Any, params: dict, args: tuple, kwargs: dict) -> list[str]:
    """Latent sites a part gives a point mass (no density)."""
    if isinstance(part, AutoDelta):
        return latent_names(part.prototype_trace) if part.prototype_trace else ["its sites"]
    if isinstance(part, (AutoContinuous, AutoNormal)):
        return []  # a density on the unconstrained latent, pushed forward (the Delta sites carry the Jacobian)
    seeded = handlers.seed(handlers.substitute(FullData(part), data=params), jax.random.PRNGKey(0))
    tr = handlers.trace(seeded).get_trace(*args, **kwargs)
    out = []
    for name, site in tr.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        fn = site["fn"]
        while hasattr(fn, "base_dist"):  # Independent, Masked, Expanded wrap a base distribution
            fn = fn.base_dist
        if isinstance(fn, dist.Delta):
            out.append(name)
    return out


def resolve(guide: Any, params: dict, args: tuple = (), kwargs: dict | None = None) -> Fit:
    """The :class:`Fit` of ``guide``, after checking that it is set up and that ``params`` fit it.

    Raises
    ------
    TypeError
        If ``guide`` is neither an ``AutoIsotropicMixture`` nor an ``AutoGuideList``.
    RuntimeError
        If the guide (or the list) is not set up.
    KeyError, ValueError
        If the params do not fit the mixture, the list has no or several mixture parts, a part has no
        density, or some latent site is in no part.
    """
    if isinstance(guide, AutoIsotropicMixture):
        _check_mixture(guide, params)
        return Fit(guide, guide, ())
    if not isinstance(guide, AutoGuideList):
        raise TypeError(NOT_A_GUIDE.format(type(guide).__name__))
    if guide.prototype_trace is None:
        raise RuntimeError(LIST_NOT_SET_UP)
    parts = list(guide)
    names = [_part_name(i, p) for i, p in enumerate(parts)]
    mixtures = [i for i, p in enumerate(parts) if isinstance(p, AutoIsotropicMixture)]
    if not mixtures:
        raise ValueError(NO_MIXTURE_PART.format(", ".join(names)))
    if len(mixtures) > 1:
        raise ValueError(TWO_MIXTURE_PARTS.format(len(mixtures), ", ".join(names[i] for i in mixtures)))
    mixture = parts[mixtures[0]]
    _check_mixture(mixture, params)
    kwargs = {} if kwargs is None else kwargs
    for i, part in enumerate(parts):
        masses = [] if i == mixtures[0] else _point_masses(part, params, args, kwargs)
        if masses:
            raise ValueError(POINT_MASS_PART.format(names[i], masses))
    # one run of the whole list: its param sites must all be in params, its sample sites cover the model's
    seeded = handlers.seed(handlers.substitute(FullData(guide), data=params), jax.random.PRNGKey(0))
    tr = handlers.trace(seeded).get_trace(*args, **kwargs)
    missing = [n for n, s in tr.items() if s["type"] == "param" and n not in params]
    if missing:
        raise KeyError(MISSING_PARAMS.format(missing))
    covered = {n for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
    uncovered = [n for n in latent_names(guide.prototype_trace) if n not in covered]
    if uncovered:
        raise ValueError(UNCOVERED_SITES.format(uncovered, uncovered))
    return Fit(guide, mixture, tuple(n for i, n in enumerate(names) if i != mixtures[0]))


def check_num_samples(num_samples: Any, name: str = "num_samples") -> int:
    """``num_samples`` as an int, or ValueError unless it is an integer >= 1."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(BAD_COUNT.format(name, num_samples))
    return int(num_samples)


def check_key(rng_key: Any) -> jax.Array:
    """``rng_key``, or TypeError when it is None or a plain integer seed."""
    if rng_key is None or isinstance(rng_key, (int, np.integer)):
        raise TypeError(BAD_KEY.format(rng_key))
    return rng_key


def latent_names(trace: dict) -> list[str]:
    """Names of the latent (unobserved) sample sites of a model trace."""
    return [n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]]


def latent_site_names(guide: Any) -> list[str]:
    """Names of the model's latent (unobserved) sample sites."""
    return latent_names(guide.prototype_trace)


def model_param_values(guide: Any, params: dict) -> dict:
    """The entries of ``params`` that are the model's own ``numpyro.param`` sites."""
    return {
        k: v for k, v in params.items() if k in guide.prototype_trace and guide.prototype_trace[k]["type"] == "param"
    }


def data_model(fit: Fit, params: dict, full_data: bool = True) -> Callable:
    """The model the diagnostics evaluate: the model's own params substituted, subsampled plates on the
    full data when ``full_data``."""
    model = FullData(fit.guide.model) if full_data else fit.guide.model
    return handlers.substitute(model, data=model_param_values(fit.guide, params))


def subsampled_plate_sizes(trace: dict | None) -> list[int]:
    """Full sizes of the plates in a model trace that have a ``subsample_size`` below their size."""
    return [
        s["args"][0]
        for s in (trace or {}).values()
        if s["type"] == "plate" and s["args"][1] is not None and s["args"][1] < s["args"][0]
    ]


def _block_size(fit: Fit, num_samples: int, full_data: bool) -> int:
    """Draws evaluated at once: all, unless full-data plates are large (then about 4M draw-elements)."""
    sizes = subsampled_plate_sizes(fit.guide.prototype_trace)
    if not full_data or not sizes:
        return num_samples
    return int(min(num_samples, max(1, _FULL_DATA_BLOCK // max(sizes))))


def potential(fit: Fit, params: dict, args: tuple, kwargs: dict, full_data: bool = True) -> Callable:
    """V(z, key) of a plain mixture's model on its flattened latent (full data when ``full_data``)."""
    model, guide = data_model(fit, params, full_data), fit.mixture

    def v(z: jax.Array, key: jax.Array) -> jax.Array:
        return potential_energy(handlers.seed(model, key), args, kwargs, guide._unpack_latent(z))

    return v


def _map(fn: Callable, xs: Any, block: int) -> Any:
    return (
        jax.vmap(fn)(xs)
        if block >= jax.tree_util.tree_leaves(xs)[0].shape[0]
        else jax.lax.map(fn, xs, batch_size=block)
    )


def draw_and_weigh(
    fit: Fit | Any,
    params: dict,
    args: tuple,
    kwargs: dict,
    rng_key: jax.Array,
    num_samples: int,
    responsibilities: bool = False,
    full_data: bool = True,
) -> Draws:
    """S draws from q with log p and log q (and the responsibilities r(z) when asked), in one compiled
    call.

    A plain mixture: z ~ q (S, d), log p = -V(z), log q(z); the model is seeded with one key for all
    draws. A guide list: each draw runs the whole list (seeded per draw) and the model at its values.
    With ``full_data`` every subsampled plate covers all the data.
    """
    if not isinstance(fit, Fit):
        fit = resolve(fit, params, args, kwargs)
    mix = fit.mixture
    block = _block_size(fit, num_samples, full_data)
    if not fit.is_list:
        pot = potential(fit, params, args, kwargs, full_data)

        def run(mixture_params: dict, key: jax.Array) -> Draws:
            k_draw, k_model = jax.random.split(key)
            q = mix.get_posterior(mixture_params)
            z = q.sample(k_draw, (num_samples,))
            v = _map(lambda x: pot(x, k_model), z, block)
            return Draws(z, -v, q.log_prob(z), q.responsibilities(z) if responsibilities else None, None)

        return jax.jit(run)({k: params[k] for k in mix.param_names()}, rng_key)

    guide = fit.guide
    model = data_model(fit, params, full_data)
    guide_fn = FullData(guide) if full_data else guide
    names = latent_site_names(guide)
    supports = {n: guide.prototype_trace[n]["fn"].support for n in names}
    aux = f"_{mix.prefix}_latent"

    def one(params: dict, key: jax.Array) -> tuple:
        k_guide, k_model = jax.random.split(key)
        log_q, gtr = log_density(handlers.seed(guide_fn, k_guide), args, kwargs, params)
        values = {n: gtr[n]["value"] for n in names}
        log_p, mtr = log_density(handlers.seed(model, k_model), args, kwargs, values)
        log_jac = 0.0
        for n, x in values.items():
            t = biject_to(supports[n])
            log_jac = log_jac + jnp.sum(t.log_abs_det_jacobian(t.inv(x), x))
        det = {n: s["value"] for n, s in mtr.items() if s["type"] == "deterministic"}
        z = gtr[aux]["value"]
        return z, log_p + log_jac, log_q + log_jac, {**values, **det}

    def run(params: dict, key: jax.Array) -> Draws:
        z, log_p, log_q, sites = _map(lambda k: one(params, k), jax.random.split(key, num_samples), block)
        resp = mix.get_posterior(params).responsibilities(z) if responsibilities else None
        return Draws(z, log_p, log_q, resp, sites)

    return jax.jit(run)(params, rng_key)


def constrained(fit: Fit, draws: Draws, params: dict, index: Any = None) -> dict:
    """Constrained latent and deterministic sites of the draws (rows ``index`` if given)."""
    if draws.sites is not None:
        return {n: v if index is None else v[index] for n, v in draws.sites.items()}
    z = draws.latent if index is None else draws.latent[index]
    return fit.mixture.constrain(z, params)
