"""AutoIsotropicMixture: a NumPyro autoguide whose posterior over the flattened unconstrained latent
is q = (1/N) sum_i N(m_i, sigma_i^2 I) (Petit-Talamon, Lambert, Korba, arXiv 2506.13613).

A sibling of NumPyro's AutoDiagonalNormal: the AutoContinuous protocol, params
``{prefix}_locs`` (N, d) and ``{prefix}_scales`` (N,) (sigma_i, positive constraint, stored by
NumPyro as log sigma), constrained values through ``biject_to``.
"""

from __future__ import annotations

import inspect
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import biject_to, constraints
from numpyro.distributions.util import sum_rightmost
from numpyro.infer import util as numpyro_util
from numpyro.infer.autoguide import AutoContinuous, AutoGuide
from numpyro.infer.initialization import init_to_median, init_to_sample, init_to_uniform, init_to_value
from numpyro.infer.util import find_valid_initial_params, initialize_model, potential_energy
from numpyro.primitives import Messenger

from mixvi import draws
from mixvi.family import IsotropicMixture
from mixvi.loop import call_compiled, new_cache, remember, split_operands
from mixvi.lowrank import LowRankMetric, init_lowrank
from mixvi.potential_cost import choose_components
from mixvi.vi import (
    BAD_METRIC,
    DENSE_MAX_DIM,
    DENSE_TOO_BIG,
    METRICS,
    check_rank,
    resolve_metric,
    resolve_rank,
)

# the jitted draws of the component means, per model and structure (AutoIsotropicMixture._compiled_draw)
_DRAWS: OrderedDict[Any, Callable] = new_cache()
# the jitted potential at N points, per model and structure (AutoIsotropicMixture.potential_values)
_VALUES: OrderedDict[Any, Callable] = new_cache()
BAD_COMPONENTS = "n_components must be 'auto' or an integer >= 1, got {!r}"
MAX_INIT_TRIES = 100
"""Draws per component (as NumPyro's find_valid_initial_params) before the set-up gives up on a finite start."""


def _is_random_init(init_loc_fn: Callable) -> bool:
    """Whether every component draws its own initial mean: init_to_sample (NumPyro's ``init_to_sample()`` is
    ``init_to_median(num_samples=1)``), init_to_uniform with a radius > 0, and init_to_value when some sites
    are not given a value (NumPyro starts those as init_to_uniform does)."""
    fn = getattr(init_loc_fn, "func", init_loc_fn)
    kw = getattr(init_loc_fn, "keywords", {}) or {}
    if fn is init_to_sample or (fn is init_to_median and kw.get("num_samples", 15) == 1):
        return True
    if fn is init_to_value:
        return True  # the sites without a value are random; the given ones are fixed (see _given_mask)
    return _uniform_radius(init_loc_fn) is not None


@partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _initial_params(
    locs: jax.Array, prefix: str, metric: str, weights: str, init_scale: float, rank: int | None = None
) -> dict:
    """The initial values of the guide's params (those ``_get_posterior`` registers) given the component means."""
    n, d = locs.shape
    values = {f"{prefix}_locs": locs, f"{prefix}_scales": jnp.full(n, init_scale, locs.dtype)}
    if metric == "lowrank":
        start = init_lowrank(d, resolve_rank(rank, d), locs.dtype)
        values[f"{prefix}_metric"] = jnp.exp(start.log_diag)
        values[f"{prefix}_metric_basis"] = start.basis
        values[f"{prefix}_metric_log_stretch"] = start.log_stretch
    if metric == "diagonal":
        values[f"{prefix}_metric"] = jnp.ones(d, locs.dtype)
    if metric == "dense":
        values[f"{prefix}_metric_tril"] = jnp.eye(d, dtype=locs.dtype)
    if weights == "fisher-rao":
        values[f"{prefix}_weight_logits"] = jnp.zeros(n, locs.dtype)
    return values


def _uniform_draw(key: jax.Array, sizes: tuple, n: int, radius: float, dtype: Any) -> jax.Array:
    """(n, sum of sizes) draws uniform in (-radius, radius) (``sizes``: (name, size) in the latent's
    layout). One draw whose columns are assigned to the sites in the order of their names, so the values
    do not depend on the order in which NumPyro's set-up trace met the sites (it differs under jit); one
    random-number generator, not one per site (each costs XLA compilation time). A concrete threefry key
    draws on the host (:func:`mixvi.draws.host_uniform`: no program to compile), a traced one in JAX."""
    total = sum(size for _, size in sizes)
    host = draws.host_uniform(key, (n, total), dtype, -radius, radius)
    if host is None:
        return _uniform_draw_jit(key, sizes, n, radius, dtype)
    return jax.device_put(_by_site(host, sizes, np.concatenate))


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _uniform_draw_jit(key: jax.Array, sizes: tuple, n: int, radius: float, dtype: Any) -> jax.Array:
    total = sum(size for _, size in sizes)
    return _by_site(draws.uniform(key, (n, total), dtype, -radius, radius), sizes, jnp.concatenate)


def _by_site(draw: Any, sizes: tuple, concatenate: Callable) -> Any:
    """The columns of ``draw`` (laid out by site name) in the latent's layout ``sizes``."""
    offsets, start = {}, 0
    for name, size in sorted(sizes):
        offsets[name] = start
        start += size
    return concatenate([draw[:, offsets[name] : offsets[name] + size] for name, size in sizes], axis=1)


def _uniform_radius(init_loc_fn: Callable) -> float | None:
    """The radius of init_to_uniform (NumPyro's default init strategy) when it is one with a radius > 0,
    else None."""
    fn = getattr(init_loc_fn, "func", init_loc_fn)
    radius = (getattr(init_loc_fn, "keywords", {}) or {}).get("radius", 2)
    return float(radius) if fn is init_to_uniform and radius > 0 else None


DISCRETE_SITE = (
    "latent site {0!r} is discrete and not marked for enumeration; AutoIsotropicMixture covers continuous "
    "latents only. Either sum it out: mark it with infer={{'enumerate': 'parallel'}} (or decorate the model "
    "with numpyro.contrib.funsor.config_enumerate) and train with SVI(model, guide, optim, TraceEnum_ELBO()) "
    "or MixVI; or keep it out of this guide: AutoIsotropicMixture(handlers.block(model, hide=[{0!r}])) inside "
    "an AutoGuideList, next to a guide of your own for {0!r}"
)
ENUM_NEEDS_FUNSOR = (
    "site {!r} is marked for enumeration, and NumPyro sums enumerated sites out with funsor, which is not "
    "installed: pip install funsor (or pip install 'mixvi[enum]')"
)
SUBSAMPLED_LATENT = (
    "latent site {!r} lies inside the subsampled plate {!r} (subsample {} of {}): a global mixture over all "
    "local latents is not defined. Move the latent out of the subsampled plate, drop subsample_size, or give "
    "the local latents their own guide (AutoGuideList with AutoNormal)."
)
INIT_NOT_FINITE = (
    "the model's log density is not finite at the guide's initial point: {}, at the initial values {} that "
    "init_loc_fn={} chose. The initial point caused it: start where the model is defined with another "
    "init_loc_fn (init_to_median, or init_to_value(values={{...}}) with valid values), or give the latent "
    "site(s) a support on which every value is valid (e.g. dist.HalfNormal or dist.LogNormal for a value "
    "that must be positive)."
)
INIT_GRAD_NOT_FINITE = (
    "the gradient of the model's log density is not finite at the guide's initial point: latent site(s) {} "
    "at the initial values {} that init_loc_fn={} chose. The initial point caused it: start elsewhere with "
    "another init_loc_fn (init_to_median, or init_to_value(values={{...}}) away from that point), or give "
    "the latent site(s) a support that excludes it."
)
DRAW_FAILED = (
    "could not draw a finite initial point for every component; check the model's log density or pass a "
    "deterministic init_loc_fn (e.g. init_to_median)"
)
STEINVI_REFUSED = (
    "AutoIsotropicMixture does not train under numpyro.contrib.einstein.SteinVI: SteinVI makes a mixture of "
    "copies of the guide and scores that mixture with every constrained param transformed a second time "
    "(positive scales pass through exp twice), so the component scales collapse (NumPyro's own AutoNormal "
    "collapses there too). AutoIsotropicMixture already is a mixture: raise n_components and train it with "
    "mixvi.MixVI(model, guide), or SVI(model, guide, optax_to_numpyro(mixvi.optim.ibw()), Trace_ELBO())."
)


class _PrngKeys(Messenger):
    """Effect handler that records the keys the model's ``numpyro.prng_key()`` calls receive."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list = []

    def postprocess_message(self, msg: dict) -> None:
        if msg["type"] == "prng_key":
            self.keys.append(msg["value"])


def _max_plate_nesting(trace: dict) -> int:
    dims = [f.dim for s in trace.values() if s["type"] == "sample" for f in s["cond_indep_stack"] if f.dim is not None]
    return -min(dims) if dims else 0


def _is_init_failure(err: Exception) -> bool:
    """NumPyro's eager argument validation at the initial point, or its search for a finite one."""
    text = str(err)
    return (isinstance(err, ValueError) and "distribution got invalid" in text) or (
        isinstance(err, RuntimeError) and "valid initial" in text
    )


def _called_by_steinvi() -> bool:
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("numpyro.contrib.einstein"):
            return True
        frame = frame.f_back
    return False


def _describe(value: Any) -> str:
    value = np.asarray(value, dtype=float)
    if value.size <= 4:
        return str(np.round(value, 4).tolist())
    return f"an array of shape {value.shape}"


def _structure_point(site: dict | None = None):
    """An init strategy for a trace that only fixes the latent's structure: every continuous latent site at
    the image of 0 under its support's bijection (what init_to_uniform draws with radius 0), from an array
    made on the host. NumPyro's init_to_uniform would compile a uniform draw per site shape, op by op
    (0.22 s of eight schools' set-up in a fresh process), for values the structure does not use."""
    if site is None:
        return _structure_point
    if site["type"] == "sample" and not site["is_observed"] and not site["fn"].support.is_discrete:
        if site["value"] is not None:
            return site["value"]
        transform = biject_to(site["fn"].support)
        shape = tuple(site["kwargs"].get("sample_shape") or ()) + tuple(transform.inverse_shape(site["fn"].shape()))
        return transform(jnp.asarray(np.zeros(shape, dtype=jnp.result_type(float))))
    return None


def _model_structure(rng_key: jax.Array, model: Callable, init_strategy: Callable, args: tuple, kwargs: dict):
    """What NumPyro's ``initialize_model(..., dynamic_args=True)`` returns (the prototype's unconstrained
    values, the potential and postprocess builders, the model's trace), from its steps without the search
    for a valid initial point: the prototype is the init strategy's first draw, finite or not.

    Those steps are NumPyro's private helpers (numpyro 0.22): where a NumPyro version lacks them or
    changed their signatures this raises AttributeError or TypeError, and the caller uses
    ``initialize_model`` itself."""
    substituted = handlers.substitute(handlers.seed(model, rng_key), substitute_fn=init_strategy)
    inv_transforms, replay_model, has_enumerate_support, trace = numpyro_util._get_model_transforms(
        substituted, args, kwargs
    )
    for name, site in trace.items():
        if site["type"] == "sample" and isinstance(site["fn"], dist.Delta) and not site["is_observed"]:
            raise ValueError(
                f"Sample site '{name}' has a delta distribution; use `numpyro.deterministic` to add this value "
                "to the trace instead."
            )
    potential_model = numpyro_util._prepare_model_for_potential(model, trace, enum=has_enumerate_support)
    potential_fn_gen, postprocess_fn_gen = numpyro_util.get_potential_fn(
        potential_model,
        inv_transforms,
        replay_model=replay_model,
        enum=has_enumerate_support,
        dynamic_args=True,
        model_args=args,
        model_kwargs=kwargs,
    )
    constrained = {
        k: v["value"]
        for k, v in trace.items()
        if v["type"] == "sample" and not v["is_observed"] and not v["fn"].support.is_discrete
    }
    prototype = numpyro_util.transform_fn(inv_transforms, constrained, invert=True)
    return prototype, potential_fn_gen, postprocess_fn_gen, trace


class _EnumeratedSitesStayWithTheModel(AutoGuide):
    """The set-up of NumPyro's autoguides, except that discrete sites marked for enumeration are left to the
    model (``TraceEnum_ELBO`` sums them out) instead of refused (they are not in the prototype trace), and
    that with init_to_uniform the prototype's point is checked without its gradient."""

    _enumerated: tuple[str, ...] = ()

    def _setup_prototype(self, *args, **kwargs) -> None:
        rng_key = numpyro.prng_key()
        # when several components draw their own uniform starts (checked, and redrawn, by one compiled
        # evaluation of V), the prototype's point only fixes the latent's structure: NumPyro's search for a
        # valid point (V and its gradient evaluated op by op, each primitive compiled anew in a fresh
        # process: about 1 s on eight schools) is skipped there
        uniform = _uniform_radius(self.init_loc_fn) is not None
        structure_only = uniform and getattr(self, "n_components", 1) != 1
        with handlers.block():
            if structure_only:
                try:
                    prototype, self._potential_fn_gen, postprocess_fn_gen, trace = _model_structure(
                        rng_key, self.model, _structure_point, args, kwargs
                    )
                except (AttributeError, TypeError):
                    # NumPyro's private steps differ in this version (or the model itself raised: NumPyro's
                    # set-up below meets the same error and raises it)
                    structure_only = False
            if not structure_only:
                init_params, self._potential_fn_gen, postprocess_fn_gen, trace = initialize_model(
                    rng_key,
                    self.model,
                    init_strategy=self.init_loc_fn,
                    dynamic_args=True,
                    model_args=args,
                    model_kwargs=kwargs,
                    validate_grad=not uniform,
                )
                prototype = init_params[0]
        self._potential_fn = self._potential_fn_gen(*args, **kwargs)
        self._postprocess_fn = handlers.seed(postprocess_fn_gen(*args, **kwargs), rng_seed=0)
        self._init_locs = prototype
        self._max_plate_nesting = _max_plate_nesting(trace)
        self.prototype_trace = OrderedDict((n, s) for n, s in trace.items() if n not in self._enumerated)
        self._prototype_frames = {}
        self._prototype_plate_sizes = {}
        for name, site in self.prototype_trace.items():
            if site["type"] == "sample" and not site["is_observed"]:
                for frame in site["cond_indep_stack"]:
                    self._prototype_frames.setdefault(frame.name, frame)
            elif site["type"] == "plate":
                self._prototype_frame_full_sizes[name] = site["args"][0]


NUM_SAMPLES_READ = (
    "sample_posterior(..., num_samples={0}) is read as sample_shape=({0},): NumPyro's guides take "
    "sample_shape, and would pass num_samples to the model and return one draw"
)
NUM_SAMPLES_AND_SHAPE = "give num_samples={} or sample_shape={}, not both"


def _takes_keyword(fn: Callable, name: str) -> bool:
    """Whether ``fn`` accepts the keyword ``name`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True  # cannot tell: leave the keyword to the model
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class AutoIsotropicMixture(AutoContinuous, _EnumeratedSitesStayWithTheModel):
    """Uniform-weight mixture of isotropic Gaussians over the model's unconstrained latent space.

    ``get_posterior(params)`` returns an :class:`~mixvi.family.IsotropicMixture` with
    ``has_rsample=True``, so ``Trace_ELBO``, ``TraceGraph_ELBO`` and ``RenyiELBO`` use reparametrised
    gradients.

    Parameters
    ----------
    model : callable
        A NumPyro model with continuous latent sites. Discrete sites marked for enumeration
        (``infer={'enumerate': 'parallel'}`` or ``config_enumerate``) stay with the model: ``TraceEnum_ELBO``
        and ``MixVI`` sum them out (NumPyro's enumeration, which needs funsor).
    n_components : int or 'auto', optional
        N, the number of mixture components (>= 1). A step costs N B evaluations of the gradient.
        'auto' (the default) settles N when the guide is set up, from XLA's cost estimate of one
        value-and-gradient of the model's log density: 20 below 3e4 flop equivalents (small models, whose
        run is mostly compilation, and whose curved or hierarchical posteriors gain from the extra
        components), 10 above (data-heavy models, whose step cost doubles with N and whose posteriors are
        nearly Gaussian); :mod:`mixvi.potential_cost`. The attribute ``n_components`` holds the number
        after set-up.
    prefix : str, optional
        Params are named ``{prefix}_locs`` and ``{prefix}_scales``.
    init_loc_fn : callable, optional
        Per-site init strategy, applied per component. ``init_to_uniform(radius=r)`` (r > 0) and
        ``init_to_sample`` (also ``init_to_sample()`` = ``init_to_median(num_samples=1)``): every component's
        mean is an independent draw (uniform in (-r, r) in unconstrained space; a prior draw).
        ``init_to_value(values=...)``: the given sites at their value plus ``init_scale * N(0, I)``, the other
        sites drawn per component as ``init_to_uniform`` does. Any other strategy (``init_to_median``,
        ``init_to_mean``, ``init_to_feasible``): its one point plus ``init_scale * N(0, I)``. With
        ``n_components=1`` the component starts at NumPyro's initial point itself.
    init_scale : float, optional
        Initial sigma_i of every component (> 0).
    create_plates : callable or None, optional
        As in NumPyro's autoguides.
    metric : {'auto', 'isotropic', 'diagonal', 'dense', 'lowrank'}, optional
        'isotropic' (the paper: covariances sigma_i^2 I), 'diagonal' (mixvi's extension:
        sigma_i^2 D with one diagonal D shared by all components, param ``{prefix}_metric`` (d,),
        memory O(N d + d); components are isotropic in whitened coordinates D^(-1/2) x), 'dense'
        (sigma_i^2 L L^T with one lower-triangular L shared by all components, det L = 1, param
        ``{prefix}_metric_tril`` (d, d), memory O(N d + d^2); trained by ``MixVI``), 'lowrank'
        (sigma_i^2 A with A = D^(1/2) P^2 D^(1/2), P = I + Q diag(exp(kappa) - 1) Q^T of rank
        ``metric_rank``, params ``{prefix}_metric`` (d,), ``{prefix}_metric_basis`` Q (d, r) and
        ``{prefix}_metric_log_stretch`` kappa (r,), memory O(N d + d r); trained by ``MixVI``,
        :mod:`mixvi.lowrank`) or 'auto' (the default: 'dense' up to d = 256, 'lowrank' beyond).
    metric_rank : int, optional
        r, the rank of metric='lowrank' (1 <= r < d; by default min(10, d - 1)); ignored by the others.
    weights : {'uniform', 'fisher-rao'}, optional
        'uniform' (the paper) or 'fisher-rao' (learned weights, param ``{prefix}_weight_logits``
        (N,), trained by MixVI's Wasserstein-Fisher-Rao weight step).

    Raises
    ------
    ValueError
        If ``n_components`` is not 'auto' or an integer >= 1, ``init_scale`` is not positive, or ``metric`` /
        ``weights`` is not one of the values above. When the guide is set up on the model's
        arguments: if a latent site is discrete and not marked for enumeration, lies inside a subsampled
        plate, or the log density or its gradient is not finite at the initial point (the message names the
        sites, the initial values and the fix; under ``jax.jit`` / ``jax.vmap`` a random init redraws instead).
    ImportError
        At set-up, if the model has sites marked for enumeration and funsor is not installed.
    TypeError
        At set-up under ``numpyro.contrib.einstein.SteinVI`` (see ``STEINVI_REFUSED``).
    """

    scale_constraint = constraints.positive

    def __init__(
        self,
        model: Callable,
        n_components: int | str = "auto",
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        init_scale: float = 1.0,
        create_plates: Callable | None = None,
        metric: str = "auto",
        weights: str = "uniform",
        metric_rank: int | None = None,
    ):
        check_rank(metric_rank)
        if n_components != "auto" and (
            not isinstance(n_components, (int, jnp.integer)) or isinstance(n_components, bool) or n_components < 1
        ):
            raise ValueError(BAD_COMPONENTS.format(n_components))
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale!r}")
        if metric not in METRICS:
            raise ValueError(BAD_METRIC.format(metric))
        if weights not in ("uniform", "fisher-rao"):
            raise ValueError(f"weights must be 'uniform' or 'fisher-rao', got {weights!r}")
        self._metric_option = metric
        self.metric_rank = metric_rank
        self.weights = weights
        self._components_option = n_components if n_components == "auto" else int(n_components)
        self._components: int | None = None if n_components == "auto" else int(n_components)
        self._init_scale = float(init_scale)
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn, create_plates=create_plates)

    @property
    def n_components(self) -> int | str:
        """N: the ``n_components`` option, with 'auto' settled by the model's cost once the guide is set up
        (:func:`mixvi.potential_cost.choose_components`)."""
        return self._components_option if self._components is None else self._components

    @property
    def metric(self) -> str:
        """The shared metric: the ``metric`` option, with 'auto' resolved by the latent dimension once the
        guide is set up ('dense' up to d = 256, 'lowrank' beyond)."""
        dim = getattr(self, "latent_dim", None)
        return self._metric_option if dim is None else resolve_metric(self._metric_option, dim)

    # --- set-up -------------------------------------------------------------------------------
    def _check_model(self, *args, **kwargs) -> None:
        # the sites' static facts only: any point of their supports does (no draw to compile when the
        # model has to run eagerly below)
        model = handlers.substitute(handlers.seed(self.model, rng_seed=0), substitute_fn=_structure_point)
        sites: dict = {}
        keys = ("type", "is_observed", "fn", "cond_indep_stack", "args", "infer")

        def structure(*a, **kw):
            # only static facts leave the abstract trace (no op-by-op execution of the model)
            with handlers.block(), handlers.trace() as tr:
                model(*a, **kw)
            sites.update({n: {k: s.get(k) for k in keys} for n, s in tr.items()})
            return 0

        try:
            with numpyro.validation_enabled(False):  # an invalid initial point is reported by the set-up
                jax.eval_shape(structure, *args, **kwargs)
        except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError):
            sites.clear()
            with numpyro.validation_enabled(False):
                structure(*args, **kwargs)  # a model with Python control flow on data: run it eagerly
        tr = sites
        enumerated = []
        for name, site in tr.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if site["fn"].support.is_discrete:
                if (site["infer"] or {}).get("enumerate") != "parallel":
                    raise ValueError(DISCRETE_SITE.format(name))
                enumerated.append(name)
                continue  # the model keeps it (and sums it out): a subsampled plate is fine
            for frame in site["cond_indep_stack"]:
                full = tr.get(frame.name, {}).get("args", (frame.size,))[0]
                if frame.size != full:
                    raise ValueError(SUBSAMPLED_LATENT.format(name, frame.name, frame.size, full))
        if enumerated:
            try:
                import funsor  # noqa: F401
            except ImportError as err:
                raise ImportError(ENUM_NEEDS_FUNSOR.format(enumerated[0])) from err
        self._enumerated = tuple(enumerated)

    def _setup_prototype(self, *args, **kwargs) -> None:
        if _called_by_steinvi():
            raise TypeError(STEINVI_REFUSED)
        self._check_model(*args, **kwargs)
        rng_key = numpyro.prng_key()
        keys = _PrngKeys()
        try:
            with keys:
                super()._setup_prototype(*args, **kwargs)
        except (ValueError, RuntimeError) as err:
            if _is_init_failure(err):
                # the first key NumPyro's set-up drew seeds its initial point: the same point is diagnosed
                raise ValueError(self._init_failure(keys.keys[0] if keys.keys else rng_key, args, kwargs)) from err
            raise
        with handlers.block():
            if self._components is None:
                self._components = choose_components(
                    self._structure_key(), self.potential_fn, self.latent_dim, self._init_latent.dtype, args, kwargs
                )
            self._init_component_locs = self._component_inits(rng_key, args, kwargs)

    def _model_for_potential(self, key: jax.Array, max_plate_nesting: int | None = None) -> Callable:
        """The model seeded with ``key``; with its enumerated sites summed out when it has any."""
        model = handlers.seed(self.model, key)
        if not self._enumerated:
            return model
        from numpyro.contrib.funsor import config_enumerate, enum

        nesting = self._max_plate_nesting if max_plate_nesting is None else max_plate_nesting
        return enum(config_enumerate(model), -nesting - 1)

    def _init_failure(self, key: jax.Array, args: tuple, kwargs: dict, gradients: bool = True) -> str | None:
        """The message of a set-up stopped at the initial point: the sites whose log density (or, with
        ``gradients``, the latents whose gradient) is not finite there, and the initial values; None when
        ``gradients`` is False and every site's log density is finite there."""
        key = jax.random.PRNGKey(0) if key is None else key
        model = handlers.substitute(handlers.seed(self.model, key), substitute_fn=self.init_loc_fn)
        with numpyro.validation_enabled(False), handlers.block(), handlers.trace() as tr:
            model(*args, **kwargs)
        latents = {
            n: s
            for n, s in tr.items()
            if s["type"] == "sample" and not s["is_observed"] and not s["fn"].support.is_discrete
        }
        values = ", ".join(f"{n} = {_describe(s['value'])}" for n, s in latents.items())
        strategy = getattr(self.init_loc_fn, "func", self.init_loc_fn).__name__
        bad = []
        for name, site in tr.items():
            if site["type"] != "sample" or name in self._enumerated:
                continue
            fn = site["fn"]
            log_prob = jnp.sum(fn.log_prob(site["value"]))
            if bool(jnp.isfinite(log_prob)):
                continue
            invalid = [
                param
                for param, constraint in fn.arg_constraints.items()
                if not constraints.is_dependent(constraint)
                and param in fn.__dict__
                and not bool(jnp.all(constraint(getattr(fn, param))))
            ]
            cause = f"invalid {', '.join(invalid)}" if invalid else f"log density {float(log_prob)}"
            kind = "observed" if site["is_observed"] else "latent"
            bad.append(f"{kind} site {name!r} ({type(fn).__name__}: {cause})")
        if bad:
            return INIT_NOT_FINITE.format("; ".join(bad), values, strategy)
        if not gradients:
            return None
        unconstrained = {n: biject_to(s["fn"].support).inv(s["value"]) for n, s in latents.items()}
        grads = jax.grad(
            lambda u: potential_energy(
                self._model_for_potential(key, _max_plate_nesting(tr)), args, kwargs, u, enum=bool(self._enumerated)
            )
        )(unconstrained)
        stuck = [repr(n) for n, g in grads.items() if not bool(jnp.all(jnp.isfinite(g)))]
        return INIT_GRAD_NOT_FINITE.format(", ".join(stuck) or "(none found)", values, strategy)

    def _given_mask(self) -> jax.Array:
        """1 on the latent coordinates whose sites init_to_value gives a value, 0 elsewhere."""
        values = (getattr(self.init_loc_fn, "keywords", {}) or {}).get("values", {})
        if getattr(self.init_loc_fn, "func", None) is not init_to_value:
            return jnp.zeros(self.latent_dim)
        parts = [jnp.full(jnp.size(v), float(k in values)) for k, v in self._init_locs.items()]
        return jnp.concatenate(parts)

    def _component_inits(self, rng_key: jax.Array, args: tuple, kwargs: dict) -> jax.Array:
        n, d = self.n_components, self.latent_dim
        if n == 1:
            return self._init_latent[None]
        radius = _uniform_radius(self.init_loc_fn)
        if radius is not None:
            return self._uniform_inits(rng_key, radius, args, kwargs)
        if _is_random_init(self.init_loc_fn):
            keys = jax.random.split(rng_key, n + 1)
            operands, static, rebuild = split_operands(args, kwargs)
            enumerated = bool(self._enumerated)

            def draw(keys: jax.Array, prototype: dict, operands: list):
                model_args, model_kwargs = rebuild(operands)

                def one(key: jax.Array):
                    # the model seeded per component, so init_to_sample draws every component anew
                    k_seed, k_find = jax.random.split(key)
                    return find_valid_initial_params(
                        k_find,
                        self._model_for_potential(k_seed),
                        init_strategy=self.init_loc_fn,
                        enum=enumerated,
                        model_args=model_args,
                        model_kwargs=model_kwargs,
                        prototype_params=prototype,
                    )

                return jax.vmap(one)(keys[1:])

            try:  # one compiled call, reused by every guide of this model and structure
                (params, _, _), valid = self._compiled_draw(draw, static)(keys, self._init_locs, operands)
            except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError):
                (params, _, _), valid = draw(keys, self._init_locs, operands)

            # in the latent's layout: NumPyro ravels the sites in the order of _init_locs
            locs = jnp.concatenate([jnp.reshape(params[k], (n, -1)) for k in self._init_locs], axis=1)
            # init_to_value: the given sites start at their value plus init_scale noise, as a deterministic init
            given = self._given_mask().astype(locs.dtype)
            noise = draws.normal(jax.random.fold_in(keys[0], 1), (n, d), locs.dtype)
            locs = locs + given * self._init_scale * noise
            if isinstance(valid, jax.core.Tracer):
                # set-up under jit / vmap cannot stop on a failed draw: such a component starts at the init
                # point plus noise instead, as with a deterministic init_loc_fn
                noise = draws.normal(keys[0], (n, d), locs.dtype)
                fallback = self._init_latent[None] + self._init_scale * noise
                return jnp.where(jnp.reshape(valid, (n, 1)), locs, fallback)
            if not bool(jnp.all(valid)):
                raise ValueError(DRAW_FAILED)
            return locs
        noise = draws.normal(rng_key, (n, d), jnp.result_type(self._init_latent))
        return self._init_latent[None] + self._init_scale * noise

    def _uniform_inits(self, rng_key: jax.Array, radius: float, args: tuple, kwargs: dict) -> jax.Array:
        """init_to_uniform for all N components at once: every unconstrained coordinate uniform in
        (-radius, radius), as NumPyro draws it site by site, and a component whose start has a non-finite
        potential drawn again (up to MAX_INIT_TRIES times). One compiled evaluation of V at the N points
        (shared with MixVI.init's check) instead of NumPyro's per-point search with gradients."""
        n = self.n_components
        dtype = jnp.result_type(self._init_latent)
        k_draw, k_model = jax.random.split(rng_key)
        sizes = tuple((name, int(jnp.size(value))) for name, value in self._init_locs.items())

        def draw(key: jax.Array) -> jax.Array:
            return _uniform_draw(key, sizes, n, radius, dtype)

        locs = draw(k_draw)
        if isinstance(locs, jax.core.Tracer):
            # set-up under jit / vmap: the same redraws as a traced loop
            potential = jax.vmap(self.potential_fn(*args, **kwargs), (0, None))

            def cond(carry):
                attempt, _, bad = carry
                return (attempt < MAX_INIT_TRIES) & jnp.any(bad)

            def body(carry):
                attempt, points, bad = carry
                points = jnp.where(bad[:, None], draw(jax.random.fold_in(k_draw, attempt)), points)
                return attempt + 1, points, ~jnp.isfinite(potential(points, k_model))

            first = (1, locs, ~jnp.isfinite(potential(locs, k_model)))
            return jax.lax.while_loop(cond, body, first)[1]
        for attempt in range(1, MAX_INIT_TRIES):
            # checked on the host: eager jnp ops would each compile a small program on first use
            bad = ~np.isfinite(np.asarray(self.potential_values(locs, k_model, *args, **kwargs)))
            if not bad.any():
                return locs
            locs = jnp.where(bad[:, None], draw(jax.random.fold_in(k_draw, attempt)), locs)
        # name the site that fails, as the set-up does at a deterministic initial point, where it can
        raise ValueError(self._init_failure(k_draw, args, kwargs, gradients=False) or DRAW_FAILED)

    def potential_values(self, locs: jax.Array, rng_key: jax.Array, *args, **kwargs) -> jax.Array:
        """V (the model's potential energy, :meth:`potential_fn`) at each row of ``locs`` (N, d).

        Compiled once per model, latent structure and static model arguments; the arrays among the
        model's arguments are operands, so new data of the same shapes reuse the program.

        Parameters
        ----------
        locs : jax.Array
            (N, d) points on the flattened unconstrained latent.
        rng_key : jax.Array
            Seeds the model (one key for every point).
        *args, **kwargs
            The model's arguments.

        Returns
        -------
        jax.Array
            (N,) values.
        """

        def values(a: tuple, kw: dict, points: jax.Array, key: jax.Array) -> jax.Array:
            return jax.vmap(self.potential_fn(*a, **kw), (0, None))(points, key)

        return call_compiled(_VALUES, self._structure_key(), values, (locs, rng_key), args, kwargs)

    def _structure_key(self) -> tuple:
        """What a compiled function of the model depends on besides its inputs' shapes and the static
        model arguments: the model, the guide's class and the latent sites (names, shapes, dtypes)."""
        sites = tuple((name, tuple(jnp.shape(v)), str(jnp.result_type(v))) for name, v in self._init_locs.items())
        return (self.model, type(self), sites)

    def _program_key(self) -> tuple:
        """What a compiled program over q's params depends on besides its inputs' shapes and the static model
        arguments: :meth:`_structure_key` and the options that change q's code (N, metric, weights)."""
        return (self._structure_key(), self.n_components, self.metric, self.weights)

    def _compiled_draw(self, draw: Callable, static: Any) -> Callable:
        """``draw`` jitted, kept per (model, guide class, init strategy, N, latent structure, static model
        arguments): everything its trace depends on besides the shapes of its array inputs."""
        if static is None:
            return jax.jit(draw)
        key = (self._structure_key(), self.init_loc_fn, self.n_components, static)
        return remember(_DRAWS, key, _DRAWS[key] if key in _DRAWS else jax.jit(draw))

    def __call__(self, *args, **kwargs) -> dict:
        """Sample the latent sites (NumPyro's AutoContinuous call, with each site inside its model plates).

        The sites are sampled in the plates they have in the model, as AutoNormal does, so that
        ``TraceEnum_ELBO`` can line up their plate dimensions with the model's enumerated sites.

        Parameters
        ----------
        *args, **kwargs
            The model's arguments.

        Returns
        -------
        dict
            Site name to its constrained value.
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        latent = self._sample_latent(*args, **kwargs)
        result = {}
        for name, unconstrained in self._unpack_latent(latent).items():
            site = self.prototype_trace[name]
            transform = biject_to(site["fn"].support)
            value = transform(unconstrained)
            event_dim = site["fn"].event_dim
            log_density = 0.0
            if numpyro.get_mask() is not False:
                log_density = -transform.log_abs_det_jacobian(unconstrained, value)
                log_density = sum_rightmost(log_density, jnp.ndim(log_density) - jnp.ndim(value) + event_dim)
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                result[name] = numpyro.sample(name, dist.Delta(value, log_density=log_density, event_dim=event_dim))
        return result

    # --- the variational family ---------------------------------------------------------------
    def _get_posterior(self) -> IsotropicMixture:
        init = _initial_params(
            self._init_component_locs, self.prefix, self.metric, self.weights, self._init_scale, self.metric_rank
        )
        locs = numpyro.param(f"{self.prefix}_locs", init[f"{self.prefix}_locs"])
        scales = numpyro.param(f"{self.prefix}_scales", init[f"{self.prefix}_scales"], constraint=self.scale_constraint)
        metric = weights = tril = None
        if self.metric == "diagonal":
            metric = numpyro.param(
                f"{self.prefix}_metric", init[f"{self.prefix}_metric"], constraint=constraints.positive
            )
        if self.metric == "dense":
            self._check_dense_size()
            tril = numpyro.param(
                f"{self.prefix}_metric_tril", init[f"{self.prefix}_metric_tril"], constraint=constraints.lower_cholesky
            )
        if self.metric == "lowrank":
            metric = LowRankMetric(
                jnp.log(
                    numpyro.param(
                        f"{self.prefix}_metric", init[f"{self.prefix}_metric"], constraint=constraints.positive
                    )
                ),
                numpyro.param(f"{self.prefix}_metric_basis", init[f"{self.prefix}_metric_basis"]),
                numpyro.param(f"{self.prefix}_metric_log_stretch", init[f"{self.prefix}_metric_log_stretch"]),
            )
        if self.weights == "fisher-rao":
            weights = jax.nn.softmax(
                numpyro.param(f"{self.prefix}_weight_logits", init[f"{self.prefix}_weight_logits"])
            )
        return IsotropicMixture(locs, scales, weights, metric, tril)

    def param_names(self) -> tuple[str, ...]:
        """The guide's param names.

        Returns
        -------
        tuple of str
            ``{prefix}_locs``, ``{prefix}_scales``, and ``{prefix}_metric`` /
            ``{prefix}_metric_tril`` / ``{prefix}_metric_basis`` and ``{prefix}_metric_log_stretch`` /
            ``{prefix}_weight_logits`` when those are learned.
        """
        names = [f"{self.prefix}_locs", f"{self.prefix}_scales"]
        if self.metric in ("diagonal", "lowrank"):
            names.append(f"{self.prefix}_metric")
        if self.metric == "lowrank":
            names += [f"{self.prefix}_metric_basis", f"{self.prefix}_metric_log_stretch"]
        if self.metric == "dense":
            names.append(f"{self.prefix}_metric_tril")
        if self.weights == "fisher-rao":
            names.append(f"{self.prefix}_weight_logits")
        return tuple(names)

    def get_posterior(self, params: dict) -> IsotropicMixture:
        """The fitted mixture over the flattened unconstrained latent.

        Parameters
        ----------
        params : dict
            The guide's constrained params (e.g. ``MixVI.run(...).params``).

        Returns
        -------
        IsotropicMixture
            The mixture q over R^d, d the latent dimension.
        """
        p = self.prefix
        weights = jax.nn.softmax(params[f"{p}_weight_logits"]) if f"{p}_weight_logits" in params else None
        metric = params.get(f"{p}_metric")
        if f"{p}_metric_basis" in params:
            metric = LowRankMetric(jnp.log(metric), params[f"{p}_metric_basis"], params[f"{p}_metric_log_stretch"])
        return IsotropicMixture(
            params[f"{p}_locs"], params[f"{p}_scales"], weights, metric, params.get(f"{p}_metric_tril")
        )

    def get_base_dist(self):
        raise TypeError(
            "AutoIsotropicMixture's posterior is a mixture, not a transform of one base distribution; "
            "use guide.get_posterior(params)"
        )

    def get_transform(self, params: dict):
        raise TypeError(
            "AutoIsotropicMixture's posterior is a mixture, not a transform of one base distribution; "
            "use guide.get_posterior(params)"
        )

    def sample_posterior(self, rng_key: jax.Array, params: dict, *args, sample_shape: tuple = (), **kwargs) -> dict:
        """Draws of the latent sites (and deterministics) from the fitted mixture, NumPyro's way.

        Parameters
        ----------
        rng_key : jax.Array
            Key of the draws.
        params : dict
            The guide's constrained params.
        *args, **kwargs
            The model's arguments.
        sample_shape : tuple
            Leading shape of the draws (NumPyro's convention: ``sample_shape=(1000,)``).

        Returns
        -------
        dict
            Site name to draws of shape ``sample_shape + site shape``.

        Notes
        -----
        ``num_samples=n`` (the keyword of ``Predictive`` and older NumPyro guides) is read as
        ``sample_shape=(n,)`` with a warning, unless the model itself takes a ``num_samples`` argument.
        """
        if "num_samples" in kwargs and not _takes_keyword(self.model, "num_samples"):
            num = kwargs.pop("num_samples")
            if sample_shape != ():
                raise ValueError(NUM_SAMPLES_AND_SHAPE.format(num, sample_shape))
            warnings.warn(NUM_SAMPLES_READ.format(num), UserWarning, stacklevel=2)
            sample_shape = (int(num),)
        return super().sample_posterior(rng_key, params, *args, sample_shape=sample_shape, **kwargs)

    def median(self, params: dict) -> dict:
        """Per-coordinate median of the mixture marginals, constrained per site.

        Parameters
        ----------
        params : dict
            The guide's constrained params.

        Returns
        -------
        dict
            Site name to its median, in the site's constrained space.
        """
        return self._unpack_and_constrain(self.get_posterior(params).marginal_icdf(0.5), params)

    def quantiles(self, params: dict, quantiles: Sequence[float]) -> dict:
        """Per-coordinate quantiles of the mixture marginals (bisection on the exact CDF).

        Parameters
        ----------
        params : dict
            The guide's constrained params.
        quantiles : sequence of float
            Probabilities strictly between 0 and 1.

        Returns
        -------
        dict
            Site name to its quantiles (leading axis: one entry per probability), constrained.

        Raises
        ------
        ValueError
            If a probability is not strictly between 0 and 1.
        """
        q = jnp.asarray(quantiles)
        if jnp.any((q <= 0) | (q >= 1)):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {quantiles}")
        return self._unpack_and_constrain(self.get_posterior(params).marginal_icdf(q), params)

    # --- helpers used by MixVI and the diagnostics ----------------------------------------------
    def potential_fn(self, *args, **kwargs) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """The potential V(z, key) of the model on the flattened unconstrained latent.

        V is NumPyro's potential energy (-log joint, with log-Jacobians) at a flattened unconstrained
        latent z; ``key`` seeds the model (fresh data subsamples).

        Parameters
        ----------
        *args, **kwargs
            The model's arguments.

        Returns
        -------
        callable
            ``potential(z, key) -> jax.Array`` (a scalar).

        Raises
        ------
        RuntimeError
            If the guide has not been set up yet.
        """
        if self.prototype_trace is None:
            raise RuntimeError("the guide is not set up yet: call MixVI.init, SVI.init or the guide first")

        enumerated = bool(self._enumerated)

        def potential(z: jax.Array, key: jax.Array) -> jax.Array:
            # sites marked for enumeration are summed out (NumPyro's enumeration, as in its HMC)
            model = self._model_for_potential(key)
            return potential_energy(model, args, kwargs, self._unpack_latent(z), enum=enumerated)

        return potential

    def setup(self, rng_key: jax.Array, *args, **kwargs) -> dict:
        """Set the guide up on the model's arguments and return its initial params.

        Parameters
        ----------
        rng_key : jax.Array
            PRNG key for the initial component means.
        *args, **kwargs
            The model's arguments.

        Returns
        -------
        dict
            The initial constrained params.
        """
        self._setup_structure(rng_key, *args, **kwargs)
        # the params' initial values (those of _get_posterior) in one small compiled program
        return _initial_params(self._init_component_locs, *self._initial_params_static())

    def _setup_structure(self, rng_key: jax.Array, *args, **kwargs) -> None:
        """What the guide's call would do up to its param sites (the same keys), without unpacking,
        constraining and sampling a latent that is thrown away: the prototype and the component means."""
        with handlers.seed(rng_seed=rng_key):
            if self.prototype_trace is None:
                self._setup_prototype(*args, **kwargs)
        self._check_dense_size()

    def _initial_params_static(self) -> tuple:
        """The static arguments of ``_initial_params`` after the component means."""
        return self.prefix, self.metric, self.weights, self._init_scale, self.metric_rank

    def _check_dense_size(self) -> None:
        if self.metric == "dense" and self.latent_dim > DENSE_MAX_DIM:
            raise ValueError(DENSE_TOO_BIG.format(*(3 * (self.latent_dim,)), DENSE_MAX_DIM))
        if self.metric == "lowrank":
            resolve_rank(self.metric_rank, self.latent_dim)  # raises on a rank >= d or d = 1

    def model_param_names(self) -> list[str]:
        """Names of the ``numpyro.param`` sites in the model (MixVI does not fit them).

        Returns
        -------
        list of str
        """
        return [n for n, s in self.prototype_trace.items() if s["type"] == "param"]

    def unconstrained_samples(self, rng_key: jax.Array, params: dict, num_samples: int) -> jax.Array:
        """Draws from q on the flattened unconstrained latent space.

        Parameters
        ----------
        rng_key : jax.Array
            PRNG key.
        params : dict
            The guide's constrained params.
        num_samples : int
            Number of draws.

        Returns
        -------
        jax.Array
            Shape (num_samples, d).
        """
        return self.get_posterior(params).sample(rng_key, (num_samples,))

    def constrain(self, latent: jax.Array, params: dict) -> dict[str, Any]:
        """Unpack flattened unconstrained latents into constrained sites (and deterministics).

        Parameters
        ----------
        latent : jax.Array
            Unconstrained latents, shape (..., d).
        params : dict
            The guide's constrained params.

        Returns
        -------
        dict
            Site name to its value in constrained space, leading shape (...).
        """
        return self._unpack_and_constrain(latent, params)
