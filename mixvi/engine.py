"""MixVI: the paper-exact training engine for ``AutoIsotropicMixture`` (arXiv 2506.13613).

One step (all components at once, from the same iterate):
    z ~ N(0, I) (B, d) shared or (N, B, d);  x_ib = m_i + sigma_i z_b
    V, grad V at the N B points (one vmapped value_and_grad of NumPyro's potential)
    gbar_i, lambda_i, loss from ``estimators.stein_estimate``
    grads = {locs: gbar/N, scales: eps lambda/N}  (the ELBO gradient NumPyro's SVI would see)
    params <- mixvi.optim.<method>(step_size) update, the same transform the SVI path uses.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mixvi import optim
from mixvi.estimators import draw_noise, draw_points, potential_and_grad, stein_estimate
from mixvi.guide import AutoIsotropicMixture
from mixvi.loop import DivergenceError, scan_loop, tree_all_finite


class MixVIState(NamedTuple):
    """params: unconstrained ({prefix}_locs, {prefix}_scales = log sigma); opt_state: the transform's
    state; rng_key: key for the next step; step: steps taken."""

    params: dict
    opt_state: Any
    rng_key: jax.Array
    step: jax.Array


class MixVIRunResult(NamedTuple):
    """As ``SVI.run``: constrained ``params``, final ``state``, per-step ``losses`` (-ELBO estimates)."""

    params: dict
    state: MixVIState
    losses: jax.Array


class MixVI:
    """Train an ``AutoIsotropicMixture`` with the paper's updates.

    :param model: the NumPyro model.
    :param guide: an ``AutoIsotropicMixture`` for ``model``.
    :param method: 'ibw' (default), 'md', 'ngd' or 'means'.
    :param step_size: a positive float (the paper's fixed gamma) or 'auto' (docs/theory.md).
    :param num_samples: B, draws per component per step.
    :param shared_noise: share the B noise vectors across components (default, as the reference code).
    :param auto: parameters of the auto step (``mixvi.optim.AutoStep``).
    :param max_rejected: with 'auto', stop with an error after this many consecutive rejected
        (non-finite) steps.
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
        auto: optim.AutoStep = optim.AutoStep(),
        max_rejected: int = 50,
    ):
        if not isinstance(guide, AutoIsotropicMixture):
            raise TypeError(
                f"MixVI trains an AutoIsotropicMixture, got {type(guide).__name__}. For an AutoGuideList "
                "use numpyro's SVI with optax_to_numpyro(mixvi.optim.for_mixture(mixvi.optim.ibw(), other=...))"
            )
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
        self.model = model
        self.guide = guide
        self.method = method
        self.step_size = step_size
        self.num_samples = num_samples
        self.shared_noise = shared_noise
        self.max_rejected = max_rejected
        self.transform = optim.mixture_step(method, step_size, auto=auto)
        self._is_auto = isinstance(step_size, str)
        self._locs, self._scales = f"{guide.prefix}_locs", f"{guide.prefix}_scales"

    # --- pure pieces ----------------------------------------------------------------------------
    def init(self, rng_key: jax.Array, *args, init_params: dict | None = None, **kwargs) -> MixVIState:
        """Set the guide up and return the initial state. ``init_params``: constrained params to
        start from (e.g. a previous result's ``params``)."""
        k_setup, k_run = jax.random.split(rng_key)
        params = self.guide.setup(k_setup, *args, **kwargs)
        extra = self.guide.model_param_names()
        if extra:
            raise ValueError(
                f"the model has numpyro.param sites {extra}; MixVI fits latent posteriors only. Use SVI with "
                "optax_to_numpyro(mixvi.optim.for_mixture(mixvi.optim.ibw(), other=optax.adam(1e-2)))"
            )
        if init_params is not None:
            params = {k: jnp.asarray(init_params[k]) for k in (self._locs, self._scales)}
        uparams = {self._locs: params[self._locs], self._scales: jnp.log(params[self._scales])}
        v = jax.vmap(self.guide.potential_fn(*args, **kwargs), (0, None))(uparams[self._locs], k_setup)
        if not bool(jnp.all(jnp.isfinite(v))):
            bad = [int(i) for i in jnp.nonzero(~jnp.isfinite(v))[0]]
            raise ValueError(
                f"the potential energy is not finite at the initial mean of component(s) {bad}; "
                "check the model's log density or choose another init_loc_fn / init_params"
            )
        return MixVIState(uparams, self.transform.init(uparams), k_run, jnp.zeros((), jnp.int32))

    def _step(self, state: MixVIState, args: tuple, kwargs: dict) -> tuple[MixVIState, jax.Array]:
        key, k_noise, k_model = jax.random.split(state.rng_key, 3)
        locs, u = state.params[self._locs], state.params[self._scales]
        n, d = locs.shape
        z = draw_noise(k_noise, n, self.num_samples, d, shared=self.shared_noise, dtype=locs.dtype)
        x = draw_points(locs, u, z)
        v, gv = potential_and_grad(self.guide.potential_fn(*args, **kwargs), x, k_model)
        est = stein_estimate(locs, u, z, v, gv)
        grads = {self._locs: est.gbar / n, self._scales: jnp.exp(2 * u) * est.lam / n}
        updates, opt_state = self.transform.update(grads, state.opt_state, state.params, value=est.loss)
        params = optax.apply_updates(state.params, updates)
        return MixVIState(params, opt_state, key, state.step + 1), est.loss

    def update(self, state: MixVIState, *args, **kwargs) -> tuple[MixVIState, jax.Array]:
        """One step; returns (new state, loss at the old params). Pure: jit it if called in a loop."""
        return self._step(state, args, kwargs)

    def evaluate(self, state: MixVIState, *args, **kwargs) -> jax.Array:
        """The -ELBO estimate at ``state`` (same estimator and key as the next step; no update)."""
        return self._step(state, args, kwargs)[1]

    def get_params(self, state: MixVIState) -> dict:
        """Constrained params for ``guide.sample_posterior`` and ``Predictive``."""
        return {self._locs: state.params[self._locs], self._scales: jnp.exp(state.params[self._scales])}

    # --- the loop -----------------------------------------------------------------------------
    def _is_ok(self, state: MixVIState, loss: jax.Array) -> jax.Array:
        if self._is_auto:
            return tree_all_finite(state.params) & (state.opt_state.num_rejected < self.max_rejected)
        return jnp.isfinite(loss) & tree_all_finite(state.params)

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
        **kwargs,
    ) -> MixVIRunResult:
        """Run ``num_steps`` steps (``lax.scan`` in chunks, compiled once per chunk length).

        Raises ``mixvi.DivergenceError`` at the first non-finite step, with the last finite state
        as ``.state`` (and its constrained params as ``.params``).
        """
        state = init_state if init_state is not None else self.init(rng_key, *args, init_params=init_params, **kwargs)
        start = state.opt_state

        def step(s: MixVIState):
            return self._step(s, args, kwargs)

        try:
            result = scan_loop(
                step, state, num_steps, is_ok=self._is_ok, progress_bar=progress_bar, chunk_size=chunk_size,
                desc=f"mixvi {self.method}", describe_failure=self._failure_advice,
            )
        except DivergenceError as err:
            err.params = self.get_params(err.state)
            raise
        final = result.state.opt_state
        clipped = int(final.num_clipped) - int(start.num_clipped)
        if clipped and not self._is_auto:
            warnings.warn(
                f"{clipped} component updates hit the validity guard (IBW factor or NGD precision ratio below "
                f"its floor) with step_size={self.step_size}; the fixed step is too large there. "
                "Use a smaller step or step_size='auto'.",
                RuntimeWarning,
                stacklevel=2,
            )
        rejected = int(jnp.sum(~jnp.isfinite(result.losses)))
        if rejected:
            warnings.warn(
                f"{rejected} steps were rejected for non-finite gradients or loss (their loss is NaN in "
                "`losses`); the step size was halved each time",
                RuntimeWarning,
                stacklevel=2,
            )
        return MixVIRunResult(self.get_params(result.state), result.state, result.losses)
