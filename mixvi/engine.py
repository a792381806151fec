"""MixVI: the NumPyro layer over the functional core :func:`mixvi.mixture_vi`.

``MixVI(model, guide)`` turns the model into the potential V(z, key) = -log p on the guide's flattened
unconstrained latent z (NumPyro's potential energy, log-Jacobians included), keeps the key of the
next step and the step count next to the core's state, and adds what a NumPyro user expects around
the pure step: ``run`` (chunks of one compiled loop, reused across runs, with a divergence guard and
a progress bar; :mod:`mixvi.loop`), constrained params for ``Predictive``, checkpoints and ``resume``, warnings.

One step: ``key, step_key = split(state.rng_key)``, then :func:`mixvi.vi.step` with ``step_key``;
so the same seed gives the same numbers through ``MixVI`` and through ``mixture_vi``.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mixvi import vi
from mixvi.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mixvi.diagnostics._draws import subsampled_plate_sizes
from mixvi.diagnostics.fit import USABLE
from mixvi.diagnostics.psis import FLAT_ESS, import_in_background, psis_log_weights
from mixvi.estimators import draw_points, loss_estimate, potential_values, step_noise
from mixvi.geometry import AutoStep, metric_of
from mixvi.guide import AutoIsotropicMixture, _initial_params
from mixvi.loop import (
    NEEDS_CONSTANTS,
    TRACER_ERRORS,
    DivergenceError,
    blas_limit,
    call_compiled,
    check_blas_threads,
    chunk_compiler_options,
    gc_paused,
    new_cache,
    options_key,
    scan_loop,
    split_operands,
    traced,
    tree_all_finite,
)
from mixvi.lowrank import SHARED_NOISE_NEEDED, LowRankMetric, normalise
from mixvi.potential_cost import choose_loss_draws, model_cost
from mixvi.refinement import RefineInfo, refine

NOT_A_MIXTURE_GUIDE = (
    "MixVI trains an AutoIsotropicMixture, got {}. For an AutoGuideList use numpyro's SVI with "
    "optax_to_numpyro(mixvi.optim.for_mixture(mixvi.optim.ibw(), other=...))"
)
MODEL_PARAMS = (
    "the model has numpyro.param sites {}; MixVI fits latent posteriors only. Use SVI with "
    "optax_to_numpyro(mixvi.optim.for_mixture(mixvi.optim.ibw(), other=optax.adam(1e-2)))"
)
NOT_FINITE_AT_INIT = (
    "the potential energy is not finite at the initial mean of component(s) {}; "
    "check the model's log density or choose another init_loc_fn / init_params"
)
BAD_MESH = "mesh must be a jax.sharding.Mesh, 'auto' or None, got {!r}"
POOR_FIT = (
    "the fit looks poor: k-hat {:.2f} > {} for the importance weights p/q of the last {} steps' draws "
    "(q misses part of the posterior's mass, or the run has not converged). Check it with "
    "mixvi.fit_check(guide, result.params, *model_args, rng_key=...); more steps, more components or "
    "metric='dense' may help, and to_datatree's default resampling corrects what PSIS can"
)
FIT_CHECK_STEPS = 200
"""``run`` pools the importance weights of this many last steps for its k-hat check."""
POOR_KHAT = 1.0
"""``run`` warns when the pooled k-hat exceeds this (calibrated on the benchmark targets: docs/diagnostics.md)."""
POOR_STEIN = USABLE["stein_divergence"]
"""``run`` warns when the Stein moment divergence of its last steps' draws exceeds this (``fit_check``'s
limit of a usable fit)."""
REFINE_STEIN = 0.15
"""``refine='auto'`` also refines, without a warning, when that divergence exceeds this: above the 0.14 that
an exact fit read (the demo's two-mode posterior) and below the 0.19-0.84 of fits whose moments the
refinement improved (posteriordb's Gaussian-process regression on eight seeds, a 10-d Gaussian mixture);
docs/benchmarks.md."""
POOR_SHAPE = (
    "the fit looks poor: the Stein moment divergence of the last {} steps' draws is {:.3g} > {} (q's spread, "
    "centre or shape is off; for a Gaussian posterior about {:.0f} % in variance). Check it with "
    "mixvi.fit_check(guide, result.params, *model_args, rng_key=...); metric='dense' (or 'auto'), more "
    "steps or more components may help"
)

# the jitted loss estimate, per structure (the key as the loop's, mixvi.loop)
_JITTED: OrderedDict[Hashable, Callable] = new_cache()


def _core_state(params: dict, names: tuple, options: tuple, mesh: Mesh | None = None) -> vi.MixtureVIState:
    """The functional core's state from the guide's constrained params (``names``: the locs, scales,
    metric, metric factor and weight logits param names; ``options``: metric, weights, step size, auto
    step, relocate)."""
    locs, scales, metric_name, tril_name, logits_name, basis_name, stretch_name = names
    metric, weights, step_size, auto, relocate, rank = options
    core = vi.init_state(
        params[locs],
        params[scales],
        metric=metric,
        weights=weights,
        step_size=step_size,
        auto=auto,
        mesh=mesh,
        relocate=relocate,
        metric_rank=rank,
    )
    p = core.params
    if basis_name in params:
        # the core keeps det T = 1: the metric's scale goes into the sigmas
        lowrank, shift = normalise(
            LowRankMetric(jnp.log(params[metric_name]), params[basis_name], params[stretch_name])
        )
        p = p._replace(metric_lowrank=lowrank, log_scales=p.log_scales + shift)
    elif metric_name in params:
        p = p._replace(log_metric=jnp.log(params[metric_name]))
    if tril_name in params:
        tril = params[tril_name]
        # the core keeps det L = 1: the factor's scale goes into the sigmas
        shift = jnp.mean(jnp.log(jnp.diag(tril)))
        p = p._replace(metric_tril=tril * jnp.exp(-shift), log_scales=p.log_scales + shift)
    if logits_name in params:
        logits = params[logits_name]
        p = p._replace(logits=logits - jax.scipy.special.logsumexp(logits))
    return core._replace(params=p)


def _exp_of(tree: Any) -> Callable:
    """exp for the leaves of ``tree``: NumPy's on the host for concrete arrays on one device (an eager
    ``jnp.exp`` compiles a program per shape on first use, 0.03-0.04 s each in a fresh process), JAX's
    under a transformation or on a mesh."""
    if traced(tree) or any(len(getattr(leaf, "devices", set)()) > 1 for leaf in jax.tree.leaves(tree)):
        return jnp.exp  # traced, or placed on a mesh (whose placement the result keeps)
    return lambda a: jax.device_put(np.exp(np.asarray(a)))


def _start_state(
    locs: jax.Array, overrides: dict, static: tuple, names: tuple, options: tuple, mesh: Mesh | None = None
) -> tuple[vi.MixtureVIState, jax.Array]:
    """The guide's initial params from the component means (``static``: the rest of ``_initial_params``'
    arguments), with ``overrides`` in place of some, the core's state from them and the step count 0:
    jitted (without a mesh), one small compiled program where three would each compile on their own."""
    params = {**_initial_params(locs, *static), **overrides}
    return _core_state(params, names, options, mesh), jnp.zeros((), jnp.int32)


_start_state_jit = jax.jit(_start_state, static_argnums=(2, 3, 4))


class MixVIState(NamedTuple):
    """State of a MixVI run.

    Attributes
    ----------
    core : mixvi.vi.MixtureVIState
        The functional core's state (params on the flattened unconstrained latent, step size).
    rng_key : jax.Array
        Key of the next step.
    step : jax.Array
        Steps taken.
    """

    core: vi.MixtureVIState
    rng_key: jax.Array
    step: jax.Array


class MixVIRunResult(NamedTuple):
    """As ``SVI.run``: constrained ``params``, the final ``state``, per-step ``losses`` (-ELBO
    estimates; NaN at a rejected step)."""

    params: dict
    state: MixVIState
    losses: jax.Array


def run_khat(info: vi.MixtureVIInfo | None, steps: int = FIT_CHECK_STEPS) -> float | None:
    """k-hat of the importance log weights of the last ``steps`` steps' draws (pooled; None when there
    are fewer than 100 finite ones or the info has none)."""
    if info is None or info.log_weights is None:
        return None
    lw = np.asarray(info.log_weights[-steps:], np.float64).reshape(-1)
    lw = lw[np.isfinite(lw)]
    if lw.size < 100 or np.ptp(lw) == 0.0:
        return None
    res = psis_log_weights(lw - lw.max())
    # nearly flat weights (relative variance <= 1 %): their k-hat is fitted to float32 rounding
    return None if res.ess / lw.size >= FLAT_ESS else float(res.khat)


def run_stein(info: vi.MixtureVIInfo | None, pooled: bool = False) -> float | None:
    """The Stein moment divergence of the run's last steps (None when none computed it): with ``pooled``
    (their sums in the state) the last step's, which is over the pairs of all their draws; else the mean
    of each step's own estimate."""
    if info is None or info.stein_divergence is None:
        return None
    m = np.asarray(info.stein_divergence[-vi.STEIN_STEPS :], np.float64)
    m = m[np.isfinite(m)]
    if not m.size:
        return None
    return float(m[-1] if pooled else np.mean(m))


DEFAULT_TILT = 1.0
"""The tilt of ``tilt='auto'`` with relocation: weights proportional to p / q at most (docs/theory.md)."""
TILT_NEEDS_RELOCATION = (
    "tilt={!r} needs relocate=True (the tilt starts halfway through a run, a schedule kept with the "
    "relocation state); pass tilt=0 or tilt='auto' with relocate=False"
)
BAD_TILT_OPTION = "tilt must be 'auto' or a finite float >= 0, got {!r}"
DEFAULT_FINAL_PHASE = 0.25
"""The final phase of ``final_phase='auto'`` with relocation and the auto step: the last quarter of a run."""
BAD_FINAL_PHASE = "final_phase must be 'auto' or a float in [0, 1), got {!r}"
FINAL_PHASE_NEEDS = (
    "final_phase={!r} needs step_size='auto' and relocate=True (it caps the auto step over the last part "
    "of a run, whose end is kept with the relocation state); pass final_phase=0 or final_phase='auto'"
)


BAD_REFINE = "refine must be 'auto', True or False, got {!r}"
REFINED = (
    " The returned params are refined towards the forward KL(p || q) (mixvi.refine: the run's reverse-KL "
    "fit under-covers p where this check fires); MixVI(..., refine=False) returns the plain fit."
)
REFINE_KEY = 0x5EF1
"""``run``'s refinement draws with ``fold_in(state.rng_key, REFINE_KEY)``: a function of the final state."""


def _resolve_refine(refine: bool | str, relocate: bool) -> bool | str:
    """The refinement's mode for these options (see :class:`MixVI`): 'auto', True or False."""
    if isinstance(refine, str):
        if refine != "auto":
            raise ValueError(BAD_REFINE.format(refine))
        return "auto" if relocate else False
    if not isinstance(refine, (bool, np.bool_)):
        raise ValueError(BAD_REFINE.format(refine))
    return bool(refine)


def _has_subsampled_plates(guide: AutoIsotropicMixture) -> bool:
    """Whether the model has a plate with ``subsample_size`` below its size (its full-data log p is costly)."""
    return bool(subsampled_plate_sizes(guide.prototype_trace))


def _resolve_final_phase(final_phase: float | str, relocate: bool, step_size: float | str) -> float:
    """The final phase's fraction of a run for these options (see :class:`MixVI`)."""
    scheduled = relocate and isinstance(step_size, str)
    if isinstance(final_phase, str):
        if final_phase != "auto":
            raise ValueError(BAD_FINAL_PHASE.format(final_phase))
        return DEFAULT_FINAL_PHASE if scheduled else 0.0
    if isinstance(final_phase, bool) or not isinstance(final_phase, int | float) or not 0.0 <= final_phase < 1.0:
        raise ValueError(BAD_FINAL_PHASE.format(final_phase))
    if final_phase and not scheduled:
        raise ValueError(FINAL_PHASE_NEEDS.format(final_phase))
    return float(final_phase)


def _resolve_tilt(tilt: float | str, relocate: bool) -> float:
    """The tilt's exponent for these options (see :class:`MixVI`)."""
    if isinstance(tilt, str):
        if tilt != "auto":
            raise ValueError(BAD_TILT_OPTION.format(tilt))
        return DEFAULT_TILT if relocate else 0.0
    if not vi.is_tilt(tilt):
        raise ValueError(BAD_TILT_OPTION.format(tilt))
    if tilt and not relocate:
        raise ValueError(TILT_NEEDS_RELOCATION.format(tilt))
    return float(tilt)


class MixVI:
    """Train an ``AutoIsotropicMixture`` with the paper's updates.

    Parameters
    ----------
    model : callable
        The NumPyro model.
    guide : AutoIsotropicMixture
        The guide for ``model``; its ``metric`` and ``weights`` choose the family.
    method : str
        'ibw' (default), 'md', 'ngd' or 'means'.
    step_size : float or 'auto'
        The paper's fixed step gamma, or the scale-free auto step (docs/theory.md).
    num_samples : int
        B, draws per component per step.
    shared_noise : bool
        Share the B noise vectors across components (default, as the reference code).
    auto : AutoStep
        Parameters of the auto step.
    max_rejected : int
        With 'auto', stop with an error after this many consecutive rejected (non-finite) steps.
    sample_batch_size : int, optional
        Evaluate the N B target gradients in chunks of this many points (same result, less memory).
    mesh : jax.sharding.Mesh, 'auto' or None
        Split the components along the mesh's one axis; 'auto' uses all devices when there are
        several and they divide N.
    loss_draws : 'auto', int or None
        The per-step loss uses V at the first ``loss_draws`` draws of every component (an unbiased
        estimate; with 1, V's value is computed at N of the N B points); None uses all draws. 'auto'
        (default) uses all draws with a tilt (the default; see ``tilt``) or when V is cheap (one compiled
        copy of V instead of two: a faster compilation where a run is mostly compilation), and one
        otherwise (:mod:`mixvi.potential_cost`); the choice is ``self.loss_draws`` after :meth:`init`.
    relocate : bool
        Restart components that carry no posterior mass on the best one (:mod:`mixvi.adapt`);
        False (with ``metric='isotropic'``) is the paper's method exactly.
    tilt : float or 'auto'
        The mass-covering refinement (docs/theory.md): from the middle of ``run`` on, the expectations of
        every step weigh a component's draws by (p / q)^tau (tau at most ``tilt``, normalised over its
        draws), which pulls components towards where q under-covers p and widens them; V's value is then
        computed at every draw (before it, only at ``loss_draws``: with ``loss_draws=1`` the step holds
        both evaluations, three copies of V, and skips V's value at the other draws until the tilt
        starts). 'auto' (default) is 1.0 with relocation and 0 without; 0 keeps the paper's KL(q || p)
        steps throughout. A tilt > 0 needs ``relocate=True`` (the run's schedule lives in its state).
    final_phase : float or 'auto'
        A quiet end (docs/theory.md): over this last fraction of a ``run``'s steps the auto step's eta is
        capped at eta_max (1 - p) + eta_min p, p rising from 0 to 1, so that the final iterate does not
        carry the jitter of a large step. 'auto' (default) is 0.25 with relocation and the auto step, 0
        otherwise (the paper's mode and fixed steps are unchanged); 0 turns it off.
    refine : bool or 'auto'
        After ``run``, move the fit's means and scales (and learned weights) towards the forward
        KL(p || q) by population Monte Carlo on its own importance-weighted draws (:func:`mixvi.refine`,
        docs/theory.md): it covers the mass that the reverse KL leaves out of a funnel's neck (the
        horseshoe's largest mean error 0.9 -> 0.26 posterior sds, docs/benchmarks.md) and costs a few
        seconds. 'auto' (default) refines when the run's own check finds the fit off (k-hat above
        ``POOR_KHAT``, on which it also warns, or the Stein moment divergence above ``REFINE_STEIN``,
        below the ``POOR_STEIN`` of its warning), with relocation and on a model
        without subsampled plates (whose full-data log density the weights need); False never (and
        'auto' without relocation, the paper's mode, is False); True after every run. The state returned
        holds the refined params; the draws use ``fold_in(state.rng_key, REFINE_KEY)``.
    blas_threads : int or None
        On the CPU backend, ``run`` and ``resume`` limit the BLAS library that JAX's linear-algebra kernels
        call (SciPy's OpenBLAS) to this many threads while they run, and restore it afterwards (default 1:
        the dense metric's solves are small, and split across threads they contend with XLA's own; a
        step at d = 256 took half the time on a 2-core CPU). None leaves BLAS as it is (a model whose own
        factorisations are large may prefer that). The result does not depend on it. ``update`` and
        ``evaluate`` limit their step too where the metric's step calls BLAS (dense, low-rank), and return
        after it has run.
    """

    def __init__(
        self,
        model: Any,
        guide: AutoIsotropicMixture,
        method: str = "ibw",
        step_size: float | str = "auto",
        num_samples: int = 10,
        *,
        shared_noise: bool = True,
        auto: AutoStep = AutoStep(),
        max_rejected: int = 50,
        sample_batch_size: int | None = None,
        mesh: Mesh | str | None = "auto",
        loss_draws: int | str | None = "auto",
        relocate: bool = True,
        tilt: float | str = "auto",
        blas_threads: int | None = 1,
        final_phase: float | str = "auto",
        refine: bool | str = "auto",
    ):
        if not isinstance(guide, AutoIsotropicMixture):
            raise TypeError(NOT_A_MIXTURE_GUIDE.format(type(guide).__name__))
        self.model = model
        self.guide = guide
        self.method = method
        self.step_size = step_size
        self.num_samples = num_samples
        self.shared_noise = shared_noise
        self.max_rejected = max_rejected
        self.sample_batch_size = sample_batch_size
        self.blas_threads = check_blas_threads(blas_threads)
        self.tilt = _resolve_tilt(tilt, relocate)
        self.final_phase = _resolve_final_phase(final_phase, relocate, step_size)
        self.refine = _resolve_refine(refine, relocate)
        # with n_components='auto' N is known once the guide is set up: the mesh is settled then (_settle)
        self._mesh_option = mesh
        self.mesh = self._resolve_mesh(mesh, guide.n_components)
        self._mesh_settled = not isinstance(guide.n_components, str)
        self.settings = vi.check(
            vi.Settings(
                method,
                step_size,
                num_samples,
                shared_noise,
                auto,
                1 if loss_draws == "auto" else loss_draws,
                sample_batch_size,
                self.mesh,
                relocate=relocate,
                tilt=self.tilt,
                final_phase=self.final_phase,
            )
        )
        # learned weights use every draw for the loss (their step needs f_i from all of them); 'auto' is
        # settled on the model's cost when its arguments are first seen (_settle), and with a tilt is every
        # draw: one draw per component until the tilt starts puts three copies of V in the step (see
        # mixvi.potential_cost), which cost more compilation than they save on 2000-step runs
        self.loss_draws: int | str | None = (
            None
            if guide.weights != "uniform" or (self.tilt and loss_draws == "auto")
            else "auto"
            if loss_draws == "auto"
            else self.settings.loss_draws
        )
        self._is_auto = isinstance(step_size, str)
        self._locs, self._scales = f"{guide.prefix}_locs", f"{guide.prefix}_scales"
        self._metric, self._logits = f"{guide.prefix}_metric", f"{guide.prefix}_weight_logits"
        self._tril = f"{guide.prefix}_metric_tril"
        self._basis, self._stretch = f"{guide.prefix}_metric_basis", f"{guide.prefix}_metric_log_stretch"
        # the k-hat the last run's poor-fit check compared with POOR_KHAT (None: no usable or only flat weights)
        self.last_run_khat: float | None = None
        # the Stein moment divergence it compared with POOR_STEIN and REFINE_STEIN (None: not computed, e.g.
        # relocate=False)
        self.last_run_stein: float | None = None
        # the per-iteration diagnostics of the last run's refinement (None: not refined)
        self.last_run_refine: RefineInfo | None = None
        # (key, target work per step) of the last _chunk_options call
        self._last_step_cost: tuple = (None, None)

    @staticmethod
    def _resolve_mesh(mesh: Mesh | str | None, n_components: int | str) -> Mesh | None:
        """The mesh the components are split along; None (for now) while N is still 'auto'."""
        settled = not isinstance(n_components, str)
        if isinstance(mesh, str):
            if mesh != "auto":
                raise ValueError(BAD_MESH.format(mesh))
            count = jax.device_count()
            if settled and count > 1 and n_components % count == 0:
                return Mesh(np.asarray(jax.devices()), ("components",))
            return None
        if mesh is not None:
            if len(mesh.axis_names) != 1:
                raise ValueError(vi.BAD_MESH_AXES.format(mesh.axis_names))
            if not settled:
                return None
            if n_components % mesh.size:
                raise ValueError(vi.BAD_MESH_SIZE.format(n_components, mesh.size))
        return mesh

    # --- pure pieces ----------------------------------------------------------------------------
    def init(self, rng_key: jax.Array, *args, init_params: dict | None = None, **kwargs) -> MixVIState:
        """Set the guide up and return the initial state.

        Parameters
        ----------
        rng_key : jax.Array
            Seeds the guide's set-up and the run.
        *args, **kwargs
            The model's arguments.
        init_params : dict, optional
            Constrained params to start from (e.g. a previous result's ``params``).

        Raises
        ------
        ValueError
            When the model has ``numpyro.param`` sites or V is not finite at a component's mean.
        """
        # the set-up traces the model and compiles small programs: without the garbage collector's passes
        # over every object of the process (mixvi.loop's module docstring)
        with gc_paused():
            return self._init(rng_key, args, kwargs, init_params)

    def _init(self, rng_key: jax.Array, args: tuple, kwargs: dict, init_params: dict | None) -> MixVIState:
        k_setup, k_run = jax.random.split(rng_key)
        g = self.guide
        g._setup_structure(k_setup, *args, **kwargs)
        self._settle(args, kwargs)
        extra = g.model_param_names()
        if extra:
            raise ValueError(MODEL_PARAMS.format(extra))
        overrides = {}
        if init_params is not None:
            overrides = {k: jnp.asarray(init_params[k]) for k in g.param_names() if k in init_params}
        if g.metric == "lowrank" and not self.shared_noise:
            raise ValueError(SHARED_NOISE_NEEDED)
        options = (g.metric, g.weights, self.step_size, self.settings.auto, self.settings.relocate, g.metric_rank)
        names = (self._locs, self._scales, self._metric, self._tril, self._logits, self._basis, self._stretch)
        start = (g._init_component_locs, overrides, g._initial_params_static(), names, options)
        if self.mesh is None:  # one small compiled program instead of op-by-op dispatch (and its compilations)
            core, step = _start_state_jit(*start)
        else:
            core, step = _start_state(*start, self.mesh)
        p = core.params
        if jnp.issubdtype(k_run.dtype, jax.dtypes.prng_key):
            k_run = jax.random.key_data(k_run)
        v = np.asarray(g.potential_values(p.locs, k_setup, *args, **kwargs))
        if not np.all(np.isfinite(v)):
            raise ValueError(NOT_FINITE_AT_INIT.format([int(i) for i in np.nonzero(~np.isfinite(v))[0]]))
        return MixVIState(core, k_run, step)

    def _settle(self, args: tuple, kwargs: dict) -> None:
        """Once the guide is set up: resolve ``loss_draws='auto'`` from V's cost on these model arguments
        (once), and the mesh by the guide's N (settled by then when it was 'auto')."""
        g = self.guide
        if not self._mesh_settled:
            self.mesh = self._resolve_mesh(self._mesh_option, g.n_components)
            self.settings = self.settings._replace(mesh=self.mesh)
            self._mesh_settled = True
        if self.loss_draws != "auto":
            return
        locs = g._init_component_locs
        self.loss_draws = choose_loss_draws(g._structure_key(), g.potential_fn, g.latent_dim, locs.dtype, args, kwargs)

    def _settings(self) -> vi.Settings:
        if self.loss_draws == "auto":
            raise RuntimeError("MixVI: loss_draws='auto' is settled by init, run or update on the model's arguments")
        return self.settings._replace(loss_draws=self.loss_draws)

    # --- compile once: the cache key and the jitted helpers --------------------------------------
    def _cache_key(self, kind: str, static: Hashable) -> tuple:
        """What a compiled ``kind`` ('run', 'evaluate') depends on besides the shapes of its array inputs
        (see :mod:`mixvi.loop`): the model, the guide's class and latent structure, the step's settings
        and the static model arguments (None: :func:`mixvi.loop.call_compiled` adds them)."""
        g = self.guide
        if g.prototype_trace is None:
            g.potential_fn()  # raises: the guide is not set up
        return (
            kind,
            g._program_key(),
            static,
            self._settings(),
            self._is_auto,
            self.max_rejected,
        )

    def _call_jitted(
        self, kind: str, fn: Callable, state: MixVIState, args: tuple, kwargs: dict, compiler_options: dict | None = None
    ) -> Any:
        """``fn(args, kwargs, state)`` compiled once per :meth:`_cache_key` and XLA options
        (:func:`mixvi.loop.call_compiled`); where the metric's step calls BLAS (:meth:`_limits_blas`) it runs
        under ``blas_threads`` as ``run``'s chunks do, and the call waits for its result inside the limit
        (leaving it at return would restore the threads before the asynchronous step ran)."""
        if compiler_options:
            kind = (kind, options_key(compiler_options))
        key = self._cache_key(kind, None)
        if not self._limits_blas(state):
            return call_compiled(_JITTED, key, fn, (state,), args, kwargs, compiler_options)
        with blas_limit(self.blas_threads):
            return jax.block_until_ready(call_compiled(_JITTED, key, fn, (state,), args, kwargs, compiler_options))

    def _chunk_options(self, args: tuple, kwargs: dict) -> dict:
        """The XLA options of this model's compiled steps: :func:`mixvi.loop.chunk_compiler_options` of the
        target's work per step (N B value-and-gradients of V, from XLA's cost analysis, kept per model
        structure and data shapes). ``run``'s chunk and ``update`` both use them, so that a loop of updates
        takes ``run``'s steps bit for bit."""
        g = self.guide
        operands, static, _ = split_operands(args, kwargs)
        # the last step cost is kept: a Python loop of update calls asks once per step, and the cost's own cache
        # key (the guide's structure key) costs more to build than the shapes (~0.04 ms of a 0.4 ms update)
        shapes = tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in operands)
        memo = None if static is None else (static, shapes, g.n_components, self.settings.num_samples)
        if memo is None or self._last_step_cost[0] != memo:
            dtype = g._init_component_locs.dtype
            with gc_paused():  # lowers V once per model structure and data shapes (a trace of the model)
                cost = model_cost(g._structure_key(), g.potential_fn, g.latent_dim, dtype, args, kwargs)
            self._last_step_cost = (memo, None if cost is None else cost * g.n_components * self.settings.num_samples)
        return chunk_compiler_options(self._last_step_cost[1])

    def _loss(self, args: tuple, kwargs: dict, state: MixVIState) -> jax.Array:
        """The loss the next step reports, from V's values at its draws (same keys as :meth:`_step`)."""
        settings = self._settings()
        p = state.core.params
        locs, _ = vi.flatten_locs(p.locs)
        n, d = locs.shape
        metric = metric_of(p)
        weights = None if p.logits is None else jax.nn.softmax(p.logits)
        z, (k_model, _, _) = self._step_noise(state, settings)
        x = draw_points(locs, p.log_scales, z, metric, p.metric_tril)
        tilt = vi.tilt_now(settings.tilt, state.core.relocation)
        cut = vi.value_draws(settings, weights is not None, tilt)
        read = None
        if cut is not None and tilt is not None:  # values everywhere; the loss reads what the step would
            read, cut = vi.draws_read(tilt, cut, x.shape[1]), None
        rows = (x if cut is None else x[:, :cut]).reshape(-1, d)
        potential = self.guide.potential_fn(*args, **kwargs)
        v = potential_values(potential, rows, k_model, batch_size=settings.sample_batch_size)
        return loss_estimate(
            locs,
            p.log_scales,
            z,
            v.reshape(n, -1),
            weights=weights,
            metric=metric,
            scale_tril=p.metric_tril,
            loss_draws=read,
        )

    @staticmethod
    def _step_noise(state: MixVIState, settings: vi.Settings) -> tuple[jax.Array, list[jax.Array]]:
        """The step's noise, the target's and the moves' keys (as ``vi.step(state.rng_key, ...)`` draws them)
        and the next step's key, from one call of the generator."""
        locs, _ = vi.flatten_locs(state.core.params.locs)
        n, d = locs.shape
        shared = settings.shared_noise
        return step_noise(state.rng_key, n, settings.num_samples, d, shared=shared, dtype=locs.dtype, num_keys=3)

    def _step(self, state: MixVIState, args: tuple, kwargs: dict) -> tuple[MixVIState, vi.MixtureVIInfo]:
        settings = self._settings()
        z, (k_model, k_moves, key) = self._step_noise(state, settings)
        potential = self.guide.potential_fn(*args, **kwargs)
        core, info = vi.step(state.rng_key, state.core, potential, settings, noise=(z, k_model, k_moves))
        # a rejected step reports no loss, so that losses and the divergence guard both see it
        info = info._replace(loss=jnp.where(info.rejected, jnp.nan, info.loss))
        return MixVIState(core, key, state.step + 1), info

    def update(self, state: MixVIState, *args, **kwargs) -> tuple[MixVIState, jax.Array]:
        """One step; returns (new state, loss at the old params). Compiled once per model structure and
        settings, as ``SVI.update`` under ``jax.jit``: a Python loop of ``update`` calls runs the same
        program each time (under an outer ``jax.jit`` it is inlined). Pure: the same state gives the same
        step."""
        self._settle(args, kwargs)
        # compiled as run's chunk is (its XLA options): a loop of updates takes run's steps bit for bit
        options = self._chunk_options(args, kwargs)
        new, info = self._call_jitted("update", self._update_step, state, args, kwargs, options)
        return new, info.loss

    def _limits_blas(self, state: MixVIState) -> bool:
        """Whether a call of the step on ``state`` runs under ``blas_threads``: with a dense or low-rank metric
        (SciPy's OpenBLAS solves every step: at d = 100, N = 20 a loop of updates took 4.5-4.9 ms a step with
        its two threads and 2.1 ms with one, 2-core CPU, 2026-12-06), on the CPU backend, outside another
        transformation (elsewhere the call stays asynchronous)."""
        p = state.core.params
        uses_blas = p.metric_tril is not None or p.metric_lowrank is not None
        limited = uses_blas and self.blas_threads is not None
        return limited and jax.default_backend() == "cpu" and not traced(state)

    def _update_step(self, args: tuple, kwargs: dict, state: MixVIState) -> tuple[MixVIState, vi.MixtureVIInfo]:
        return self._step(state, args, kwargs)

    def evaluate(self, state: MixVIState, *args, **kwargs) -> jax.Array:
        """The -ELBO estimate at ``state``: the loss the next :meth:`update` reports (same estimator,
        draws and key), from V's values alone (no gradients, no update; compiled once per model
        structure). Unlike the step it is not NaN when the step's gradients are not finite."""
        self._settle(args, kwargs)
        return self._call_jitted("evaluate", self._loss, state, args, kwargs)

    def get_params(self, state: MixVIState) -> dict:
        """Constrained params for ``guide.sample_posterior`` and ``Predictive``."""
        p = state.core.params
        exp = _exp_of(p)
        out = {self._locs: p.locs, self._scales: exp(p.log_scales)}
        if p.log_metric is not None:
            out[self._metric] = exp(p.log_metric)
        if p.metric_tril is not None:
            out[self._tril] = p.metric_tril
        if p.metric_lowrank is not None:
            out[self._metric] = exp(p.metric_lowrank.log_diag)
            out[self._basis] = p.metric_lowrank.basis
            out[self._stretch] = p.metric_lowrank.log_stretch
        if p.logits is not None:
            out[self._logits] = p.logits
        return out

    # --- the loop -----------------------------------------------------------------------------
    def _is_ok(self, state: MixVIState, loss: jax.Array) -> jax.Array:
        finite = tree_all_finite(state.core.params)
        if self._is_auto:
            # a rejected step (NaN loss) leaves the params as they were and halves the step: go on
            return finite & (state.core.step_size.num_rejected < self.max_rejected)
        return jnp.isfinite(loss) & finite

    def _failure_advice(self, state: MixVIState, step: int) -> str:
        if self._is_auto:
            return (
                f"{self.max_rejected} consecutive steps had non-finite gradients even at the smallest step; "
                "the model's potential is probably NaN/inf on a region q reaches (check its log density)"
            )
        return f"step_size={self.step_size} is probably too large for this target; try step_size='auto'"

    def run(
        self,
        rng_key: jax.Array,
        num_steps: int,
        *args,
        progress_bar: bool = True,
        init_state: MixVIState | None = None,
        init_params: dict | None = None,
        chunk_size: int | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        callback: Callable[[MixVIState, np.ndarray, int], None] | None = None,
        **kwargs,
    ) -> MixVIRunResult:
        """Run ``num_steps`` steps (in chunks of one compiled program, reused by later runs: :mod:`mixvi.loop`).

        Parameters
        ----------
        rng_key : jax.Array
            Seeds the set-up and the run (unused with ``init_state``).
        num_steps : int
            Steps to take.
        *args, **kwargs
            The model's arguments.
        progress_bar : bool
            Show a tqdm bar.
        init_state : MixVIState, optional
            Continue from a previous ``result.state``.
        init_params : dict, optional
            Constrained params to start from.
        chunk_size : int, optional
            Steps per compiled chunk (the result does not depend on it).
        checkpoint : path, optional
            The full state and the loss history are saved there atomically every
            ``checkpoint_every`` steps (default: every 10 % of the run) and at the end;
            :meth:`resume` continues bit for bit.
        checkpoint_every : int, optional
            Steps between checkpoints.
        callback : callable, optional
            ``callback(state, losses_so_far, steps_done)`` after every chunk.

        Returns
        -------
        MixVIRunResult
            After it, ``self.last_run_khat`` holds the k-hat of the last steps' importance weights and
            ``self.last_run_stein`` the Stein moment divergence of the last steps' draws that the run's
            poor-fit warnings are decided on (None when it had none to give).

        Raises
        ------
        mixvi.DivergenceError
            At the first non-finite step, with the last finite state as ``.state`` (and its
            constrained params as ``.params``). Ctrl-C instead returns the last finished chunk's
            result (saved to ``checkpoint`` if given) with a warning.
        """
        if init_state is None:
            state = self.init(rng_key, *args, init_params=init_params, **kwargs)
            # scouts leave during the first half of a fresh run, so that the second half settles
            state = state._replace(core=vi.explore_until(state.core, num_steps // 2, num_steps))
        else:
            state = init_state
            rel = state.core.relocation
            if rel is not None and rel.end is not None:  # a continued run ends num_steps from here
                state = state._replace(core=vi.explore_until(state.core, rel.scout_until, rel.steps + num_steps))
        return self._run_from(
            state,
            num_steps,
            np.zeros((0,), np.float32),
            args,
            kwargs,
            progress_bar=progress_bar,
            chunk_size=chunk_size,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            callback=callback,
        )

    def resume(
        self,
        path: str | os.PathLike,
        *args,
        num_steps: int | None = None,
        progress_bar: bool = True,
        checkpoint_every: int | None = None,
        callback: Callable[[MixVIState, np.ndarray, int], None] | None = None,
        **kwargs,
    ) -> MixVIRunResult:
        """Continue the run saved in ``path`` up to ``num_steps`` total steps.

        The result (params, state, the full loss history) equals the uninterrupted run's bit for bit.

        Parameters
        ----------
        path : path
            A checkpoint written by :meth:`run`; new checkpoints go to the same file.
        *args, **kwargs
            The model's arguments.
        num_steps : int, optional
            Total steps (default: the total the saved run asked for). A new total also puts the end
            of the scouting phase at half of it, as ``run`` with that total does.
        progress_bar, checkpoint_every, callback
            As in :meth:`run`.

        Raises
        ------
        CheckpointError
            When the file is corrupt or belongs to another model, guide or configuration.
        """
        leaves, losses, meta = load_checkpoint(path)
        template = self.init(jax.random.PRNGKey(0), *args, **kwargs)
        mine = self._checkpoint_meta(template)
        for field in (
            "method",
            "step_size",
            "num_samples",
            "loss_draws",
            "shared_noise",
            "relocate",
            "prefix",
            "metric",
            "weights",
            "n_components",
            "latent_dim",
            "sites",
        ):
            if meta.get(field) != mine[field]:
                raise CheckpointError(
                    f"checkpoint {os.fspath(path)!r} does not match this run: {field} is {meta.get(field)!r} "
                    f"there and {mine[field]!r} here (resume with the same model, guide and MixVI settings)"
                )
        ref_leaves, treedef = jax.tree.flatten(template)
        if len(ref_leaves) != len(leaves) or any(
            np.shape(a) != np.shape(b) or np.asarray(a).dtype != np.asarray(b).dtype for a, b in zip(leaves, ref_leaves)
        ):
            raise CheckpointError(
                f"checkpoint {os.fspath(path)!r} holds a state of other shapes or dtypes than this run's"
            )
        state = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
        if self.mesh is not None:
            state = jax.tree.map(lambda a, b: jax.device_put(a, b.sharding), state, template)
        total = meta["num_steps"] if num_steps is None else num_steps
        if num_steps is not None:
            # scouts leave during the first half of the total, as run(total) would have set
            state = state._replace(core=vi.explore_until(state.core, total // 2, total))
        done = int(meta["done"])
        if total <= done:
            return MixVIRunResult(self.get_params(state), state, jax.device_put(np.asarray(losses)))
        every = checkpoint_every if checkpoint_every is not None else meta.get("checkpoint_every")
        return self._run_from(
            state,
            total - done,
            losses,
            args,
            kwargs,
            progress_bar=progress_bar,
            chunk_size=None,
            checkpoint=path,
            checkpoint_every=every,
            callback=callback,
            total=total,
        )

    def _checkpoint_meta(self, state: MixVIState) -> dict:
        locs = state.core.params.locs
        return {
            "method": self.method,
            "step_size": self.step_size if isinstance(self.step_size, str) else float(self.step_size),
            "num_samples": self.num_samples,
            "loss_draws": self.loss_draws,
            "shared_noise": self.shared_noise,
            "relocate": self.settings.relocate,
            "prefix": self.guide.prefix,
            "metric": self.guide.metric,
            "weights": self.guide.weights,
            "n_components": int(locs.shape[0]),
            "latent_dim": int(locs.shape[1]),
            "sites": {k: list(np.shape(v)) for k, v in self.guide._init_locs.items()},
        }

    def _run_from(
        self,
        state: MixVIState,
        num_steps: int,
        prev_losses: np.ndarray,
        args: tuple,
        kwargs: dict,
        *,
        progress_bar: bool,
        chunk_size: int | None,
        checkpoint: str | os.PathLike | None,
        checkpoint_every: int | None,
        callback: Callable | None,
        total: int | None = None,
    ) -> MixVIRunResult:
        total = num_steps + len(prev_losses) if total is None else total
        self._settle(args, kwargs)
        if checkpoint is not None:
            if checkpoint_every is None:
                checkpoint_every = max(1, total // 10)
            if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
                raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
            chunk_size = checkpoint_every if chunk_size is None else chunk_size
            meta = dict(self._checkpoint_meta(state), num_steps=total, checkpoint_every=checkpoint_every)

        def save(st: MixVIState, losses: np.ndarray) -> None:
            all_losses = np.concatenate([prev_losses, losses])
            save_checkpoint(checkpoint, st, all_losses, dict(meta, done=len(all_losses)))

        def on_chunk(st: MixVIState, losses: np.ndarray, done: int) -> None:
            if checkpoint is not None and (done % checkpoint_every == 0 or done == num_steps):
                save(st, losses)
            if callback is not None:
                callback(st, np.concatenate([prev_losses, losses]), len(prev_losses) + done)

        operands, static, rebuild = split_operands(args, kwargs)
        key = None if static is None else self._cache_key("run", static)
        # the k-hat at the end of the run needs arviz_stats (~0.7 s to import): imported while the loop compiles
        import_in_background()

        def step(s: MixVIState, *ops):
            return self._step(s, *rebuild(list(ops)))

        def step_on_constants(s: MixVIState):
            return self._step(s, args, kwargs)

        loop = dict(
            is_ok=self._is_ok,
            progress_bar=progress_bar,
            chunk_size=chunk_size,
            desc=f"mixvi {self.method}",
            describe_failure=self._failure_advice,
            callback=on_chunk,
            blas_threads=self.blas_threads,
            compiler_options=self._chunk_options(args, kwargs),
        )
        try:
            try:
                if key is not None and key in NEEDS_CONSTANTS:
                    result = scan_loop(step_on_constants, state, num_steps, **loop)
                else:
                    result = scan_loop(step, state, num_steps, operands=operands, cache_key=key, **loop)
            except TRACER_ERRORS:  # raised while tracing, before any step ran
                if key is not None and key in NEEDS_CONSTANTS:
                    raise
                if key is not None:
                    NEEDS_CONSTANTS.add(key)
                result = scan_loop(step_on_constants, state, num_steps, **loop)
        except DivergenceError as err:
            err.params = self.get_params(err.state)
            err.losses = np.concatenate([prev_losses, err.losses])
            raise
        losses = np.concatenate([prev_losses, np.asarray(result.losses)])
        if result.interrupted:
            done = len(losses)
            if checkpoint is not None:
                save(result.state, np.asarray(result.losses))
            warnings.warn(
                f"interrupted: returning the state after {done} of {total} steps"
                + (
                    f" (saved to {os.fspath(checkpoint)!r}; continue with MixVI.resume)"
                    if checkpoint is not None
                    else ""
                ),
                RuntimeWarning,
                stacklevel=3,
            )
        info = result.info
        clipped = 0 if info is None else int(np.sum(info.num_clipped))
        if clipped and not self._is_auto:
            warnings.warn(
                f"{clipped} component updates hit the validity guard (IBW factor or NGD precision ratio below "
                f"its floor) with step_size={self.step_size}; the fixed step is too large there. "
                "Use a smaller step or step_size='auto'.",
                RuntimeWarning,
                stacklevel=3,
            )
        rejected = 0 if info is None else int(np.sum(info.rejected))
        if rejected:
            warnings.warn(
                f"{rejected} steps were rejected for non-finite gradients or loss (their loss is NaN in "
                "`losses`); the step size was halved each time",
                RuntimeWarning,
                stacklevel=3,
            )
        khat = self.last_run_khat = run_khat(info)
        stein = self.last_run_stein = run_stein(info, pooled=result.state.core.stein is not None)
        poor_khat = khat is not None and khat > POOR_KHAT
        poor_shape = stein is not None and stein > POOR_STEIN
        off_shape = poor_shape or (stein is not None and stein > REFINE_STEIN)
        state = result.state
        self.last_run_refine = None
        if self.refine is True or (
            self.refine == "auto" and (poor_khat or off_shape) and not _has_subsampled_plates(self.guide)
        ):
            state = self._refined(state, args, kwargs)
        note = REFINED if self.last_run_refine is not None else ""
        if poor_khat:
            warnings.warn(POOR_FIT.format(khat, POOR_KHAT, FIT_CHECK_STEPS) + note, RuntimeWarning, stacklevel=3)
        if poor_shape:
            warnings.warn(
                POOR_SHAPE.format(vi.STEIN_STEPS, stein, POOR_STEIN, 100 * np.sqrt(stein)) + note,
                RuntimeWarning,
                stacklevel=3,
            )
        return MixVIRunResult(self.get_params(state), state, jax.device_put(np.asarray(losses)))

    def _refined(self, state: MixVIState, args: tuple, kwargs: dict) -> MixVIState:
        """``state`` with its params refined by :func:`mixvi.refine` (key: a function of the state)."""
        key = jax.random.fold_in(state.rng_key, REFINE_KEY)
        refined = refine(self.guide, self.get_params(state), *args, rng_key=key, **kwargs)
        self.last_run_refine = refined.info
        p = refined.params
        # the log on the host: one small program fewer to compile on a first refinement
        log_scales = jnp.asarray(np.log(np.asarray(p[self._scales])))
        core = state.core.params._replace(locs=p[self._locs], log_scales=log_scales)
        if core.logits is not None:
            core = core._replace(logits=jax.nn.log_softmax(p[self._logits]))
        return state._replace(core=state.core._replace(params=core))
