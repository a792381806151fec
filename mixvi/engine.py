"""MixVI: the paper-exact training engine for ``AutoIsotropicMixture`` (arXiv 2506.13613).

One step (all components at once, from the same iterate):
    z ~ N(0, I) (B, d) shared or (N, B, d);  x_ib = m_i + sigma_i z_b
    V, grad V at the N B points (one vmapped value_and_grad of NumPyro's potential)
    gbar_i, lambda_i, loss from ``estimators.stein_estimate``
    grads = {locs: gbar/N, scales: eps lambda/N}  (the ELBO gradient NumPyro's SVI would see)
    params <- mixvi.optim.<method>(step_size) update, the same transform the SVI path uses.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mixvi import optim
from mixvi.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
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
    :param loss_draws: the per-step loss (the -ELBO estimate that drives the auto step and is
        reported) uses V at the first ``loss_draws`` draws of every component, evaluated apart from the
        gradients, which then need no value (``jax.grad``): an unbiased estimate at ~1/B of the
        forward cost. None uses all draws (``value_and_grad``); learned weights always use all draws.
    :param sample_batch_size: evaluate the N*B target gradients in chunks of this many points
        (``lax.map``) when they do not fit in memory at once; same result as unchunked.
    :param mesh: a ``jax.sharding.Mesh`` with one axis: components (and their N*B gradient
        evaluations) are split along it. 'auto' (default) uses all devices when there are several and
        they divide N; None keeps everything on the default device.
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
        sample_batch_size: int | None = None,
        mesh: Mesh | str | None = "auto",
        loss_draws: int | None = 1,
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
        if sample_batch_size is not None and (not isinstance(sample_batch_size, int) or sample_batch_size < 1):
            raise ValueError(f"sample_batch_size must be a positive integer or None, got {sample_batch_size!r}")
        self.sample_batch_size = sample_batch_size
        if loss_draws is not None and (not isinstance(loss_draws, int) or not 1 <= loss_draws <= num_samples):
            raise ValueError(f"loss_draws must be None or an integer in [1, num_samples={num_samples}], got {loss_draws!r}")
        self.loss_draws = None if loss_draws == num_samples or guide.weights != "uniform" else loss_draws
        self.mesh = self._resolve_mesh(mesh, guide.n_components)
        self.transform = optim.mixture_step(method, step_size, auto=auto)
        self._is_auto = isinstance(step_size, str)
        self._locs, self._scales = f"{guide.prefix}_locs", f"{guide.prefix}_scales"
        self._metric, self._logits = f"{guide.prefix}_metric", f"{guide.prefix}_weight_logits"

    @staticmethod
    def _resolve_mesh(mesh: Mesh | str | None, n_components: int) -> Mesh | None:
        if isinstance(mesh, str):
            if mesh != "auto":
                raise ValueError(f"mesh must be a jax.sharding.Mesh, 'auto' or None, got {mesh!r}")
            count = jax.device_count()
            if count > 1 and n_components % count == 0:
                return Mesh(np.asarray(jax.devices()), ("components",))
            return None
        if mesh is not None:
            if len(mesh.axis_names) != 1:
                raise ValueError(f"MixVI shards components along one mesh axis, got axes {mesh.axis_names}")
            if n_components % mesh.size:
                raise ValueError(f"n_components={n_components} is not divisible by the mesh size {mesh.size}")
        return mesh

    def _shard(self, x: jax.Array, leading: bool = True) -> jax.Array:
        """Place x's leading (component) axis along the mesh; identity without a mesh."""
        if self.mesh is None:
            return x
        spec = P(self.mesh.axis_names[0], *([None] * (x.ndim - 1))) if leading else P()
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

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
            params = dict(params)
            params.update({k: jnp.asarray(init_params[k]) for k in self.guide.param_names() if k in init_params})
        uparams = {self._locs: params[self._locs], self._scales: jnp.log(params[self._scales])}
        if self._metric in params:
            uparams[self._metric] = jnp.log(params[self._metric])
        if self._logits in params:
            uparams[self._logits] = params[self._logits]
        if self.mesh is not None:
            axis = self.mesh.axis_names[0]
            uparams = {
                k: jax.device_put(v, NamedSharding(self.mesh, P(axis, None) if k == self._locs else P(axis)))
                if k in (self._locs, self._scales)
                else jax.device_put(v, NamedSharding(self.mesh, P()))
                for k, v in uparams.items()
            }
        if jnp.issubdtype(k_run.dtype, jax.dtypes.prng_key):
            k_run = jax.random.key_data(k_run)
        v = jax.jit(jax.vmap(self.guide.potential_fn(*args, **kwargs), (0, None)))(uparams[self._locs], k_setup)
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
        metric = jnp.exp(state.params[self._metric]) if self._metric in state.params else None
        weights = jax.nn.softmax(state.params[self._logits]) if self._logits in state.params else None
        n, d = locs.shape
        z = draw_noise(k_noise, n, self.num_samples, d, shared=self.shared_noise, dtype=locs.dtype)
        # one materialised draw: stops XLA from regenerating z inside every consumer it fuses into
        z = jax.lax.optimization_barrier(z)
        x = self._shard(draw_points(locs, u, z, metric))
        potential = self.guide.potential_fn(*args, **kwargs)
        if self.loss_draws is None:
            v, gv = potential_and_grad(potential, x, k_model, batch_size=self.sample_batch_size)
        else:
            # V's value only where the loss needs it: value_and_grad on the first loss_draws draws of
            # every component, grad alone on the rest
            cut = self.loss_draws
            v, g_head = potential_and_grad(potential, x[:, :cut], k_model, batch_size=self.sample_batch_size)
            _, g_tail = potential_and_grad(
                potential, x[:, cut:], k_model, batch_size=self.sample_batch_size, with_value=False
            )
            gv = (self._shard(g_head), self._shard(g_tail))
        v = self._shard(v)
        if not isinstance(gv, tuple):
            gv = self._shard(gv)
        est = stein_estimate(locs, u, z, v, gv, weights=weights, metric=metric, coord=metric is not None)
        eps = jnp.exp(2 * u)
        w = jnp.full((n,), 1.0 / n, locs.dtype) if weights is None else weights
        grads = {self._locs: w[:, None] * est.gbar, self._scales: w * eps * est.lam}
        if metric is not None:
            grads[self._metric] = 0.5 * est.t
        if weights is not None:
            grads[self._logits] = w * (est.f - jnp.sum(w * est.f))
        updates, opt_state = self.transform.update(
            grads, state.opt_state, state.params, value=est.loss, stratified=True
        )
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
        out = {self._locs: state.params[self._locs], self._scales: jnp.exp(state.params[self._scales])}
        if self._metric in state.params:
            out[self._metric] = jnp.exp(state.params[self._metric])
        if self._logits in state.params:
            out[self._logits] = state.params[self._logits]
        return out

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
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        callback: Callable[[MixVIState, np.ndarray, int], None] | None = None,
        **kwargs,
    ) -> MixVIRunResult:
        """Run ``num_steps`` steps (``lax.scan`` in chunks, compiled once per chunk length).

        :param init_state: continue from a previous ``result.state`` (``rng_key`` is then unused).
        :param init_params: constrained params to start from.
        :param checkpoint: a file path; the full state (params, step-size state, RNG key, step count)
            and the loss history are saved atomically every ``checkpoint_every`` steps (default: every
            10% of the run) and at the end. ``MixVI.resume(path, ...)`` continues bit for bit.
        :param callback: ``callback(state, losses_so_far, steps_done)`` after every chunk.

        Raises ``mixvi.DivergenceError`` at the first non-finite step, with the last finite state
        as ``.state`` (and its constrained params as ``.params``). Ctrl-C returns the last finished
        chunk's result (saved to ``checkpoint`` if given) with a warning instead of losing the work.
        """
        state = init_state if init_state is not None else self.init(rng_key, *args, init_params=init_params, **kwargs)
        return self._run_from(
            state, num_steps, np.zeros((0,), np.float32), args, kwargs, progress_bar=progress_bar,
            chunk_size=chunk_size, checkpoint=checkpoint, checkpoint_every=checkpoint_every, callback=callback,
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
        """Continue the run saved in ``path`` up to ``num_steps`` total steps (default: the total the
        saved run asked for), checkpointing to the same file. The result (params, state, the full loss
        history) equals the uninterrupted run's bit for bit. Raises ``CheckpointError`` when the file is
        corrupt or belongs to another model, guide or configuration."""
        leaves, losses, meta = load_checkpoint(path)
        template = self.init(jax.random.PRNGKey(0), *args, **kwargs)
        mine = self._checkpoint_meta(template)
        for field in (
            "method", "step_size", "num_samples", "loss_draws", "shared_noise", "prefix", "metric", "weights", "n_components",
            "latent_dim", "sites",
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
            raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds a state of other shapes or dtypes than this run's")
        state = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
        if self.mesh is not None:
            state = state._replace(params=jax.tree.map(lambda a, b: jax.device_put(a, b.sharding), state.params, template.params))
        total = meta["num_steps"] if num_steps is None else num_steps
        done = int(meta["done"])
        if total <= done:
            return MixVIRunResult(self.get_params(state), state, jnp.asarray(losses))
        every = checkpoint_every if checkpoint_every is not None else meta.get("checkpoint_every")
        return self._run_from(
            state, total - done, losses, args, kwargs, progress_bar=progress_bar, chunk_size=None,
            checkpoint=path, checkpoint_every=every, callback=callback, total=total,
        )

    def _checkpoint_meta(self, state: MixVIState) -> dict:
        locs = state.params[self._locs]
        return {
            "method": self.method,
            "step_size": self.step_size if isinstance(self.step_size, str) else float(self.step_size),
            "num_samples": self.num_samples,
            "loss_draws": self.loss_draws,
            "shared_noise": self.shared_noise,
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
        start = state.opt_state
        total = num_steps + len(prev_losses) if total is None else total
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

        def step(s: MixVIState):
            return self._step(s, args, kwargs)

        try:
            result = scan_loop(
                step, state, num_steps, is_ok=self._is_ok, progress_bar=progress_bar, chunk_size=chunk_size,
                desc=f"mixvi {self.method}", describe_failure=self._failure_advice, callback=on_chunk,
            )
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
                + (f" (saved to {os.fspath(checkpoint)!r}; continue with MixVI.resume)" if checkpoint is not None else ""),
                RuntimeWarning,
                stacklevel=3,
            )
        final = result.state.opt_state
        clipped = int(final.num_clipped) - int(start.num_clipped)
        if clipped and not self._is_auto:
            warnings.warn(
                f"{clipped} component updates hit the validity guard (IBW factor or NGD precision ratio below "
                f"its floor) with step_size={self.step_size}; the fixed step is too large there. "
                "Use a smaller step or step_size='auto'.",
                RuntimeWarning,
                stacklevel=3,
            )
        rejected = int(np.sum(~np.isfinite(np.asarray(result.losses))))
        if rejected:
            warnings.warn(
                f"{rejected} steps were rejected for non-finite gradients or loss (their loss is NaN in "
                "`losses`); the step size was halved each time",
                RuntimeWarning,
                stacklevel=3,
            )
        return MixVIRunResult(self.get_params(result.state), result.state, jnp.asarray(losses))
