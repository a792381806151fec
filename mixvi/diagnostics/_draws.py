"""Shared helpers of the guide-level diagnostics: argument checks and one compiled draw-and-weigh call.

Private to :mod:`mixvi.diagnostics`. On the flattened unconstrained latent z of the guide:
log p(z) = -V(z) (NumPyro's potential energy, log-Jacobian included) and log q(z) of the mixture.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from mixvi.guide import AutoIsotropicMixture


def check_guide(guide: Any, params: dict) -> None:
    """Raise unless ``guide`` is a set-up ``AutoIsotropicMixture`` and ``params`` fit it."""
    if not isinstance(guide, AutoIsotropicMixture):
        raise TypeError(f"expected an AutoIsotropicMixture, got {type(guide).__name__}")
    if guide.prototype_trace is None:
        raise RuntimeError(
            "the guide is not set up yet: call guide.setup(rng_key, *model_args, **model_kwargs) "
            "(or run MixVI / SVI on it) before the diagnostics"
        )
    locs_name, scales_name = f"{guide.prefix}_locs", f"{guide.prefix}_scales"
    missing = [k for k in guide.param_names() if k not in params] if guide.prototype_trace is not None else []
    missing = missing or [k for k in (locs_name, scales_name) if k not in params]
    if missing:
        raise KeyError(f"params lack {missing}; pass the constrained params of a fit (e.g. MixVI.run(...).params)")
    locs, scales = np.shape(params[locs_name]), np.shape(params[scales_name])
    if len(locs) != 2 or locs[1] != guide.latent_dim or scales != locs[:1]:
        raise ValueError(
            f"params do not match the guide: {locs_name} has shape {locs}, {scales_name} {scales}; "
            f"expected (N, {guide.latent_dim}) and (N,)"
        )


def check_num_samples(num_samples: Any, name: str = "num_samples") -> int:
    """``num_samples`` as an int, or ValueError unless it is an integer >= 1."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {num_samples!r}")
    return int(num_samples)


def check_key(rng_key: Any) -> jax.Array:
    """``rng_key``, or TypeError when it is None or a plain integer seed."""
    if rng_key is None or isinstance(rng_key, (int, np.integer)):
        raise TypeError(f"rng_key must be a jax.random key (e.g. jax.random.PRNGKey(0)), got {rng_key!r}")
    return rng_key


def draw_and_weigh(
    guide: AutoIsotropicMixture,
    params: dict,
    args: tuple,
    kwargs: dict,
    rng_key: jax.Array,
    num_samples: int,
    responsibilities: bool = False,
) -> tuple[jax.Array, ...]:
    """z ~ q (S, d), log p(z) = -V(z) and log q(z), each (S,) (and r(z) (S, N) if asked), in one
    compiled call. The model is seeded with one key for all draws, so a subsampled model sees the
    same minibatch at every z."""
    potential = guide.potential_fn(*args, **kwargs)
    names = guide.param_names()

    def run(mixture_params: dict, key: jax.Array) -> tuple[jax.Array, ...]:
        k_draw, k_model = jax.random.split(key)
        q = guide.get_posterior(mixture_params)
        z = q.sample(k_draw, (num_samples,))
        v = jax.vmap(potential, (0, None))(z, k_model)
        out = (z, -v, q.log_prob(z))
        return out + (q.responsibilities(z),) if responsibilities else out

    return jax.jit(run)({k: params[k] for k in names}, rng_key)


def latent_site_names(guide: AutoIsotropicMixture) -> list[str]:
    """Names of the model's latent (unobserved) sample sites."""
    return [n for n, s in guide.prototype_trace.items() if s["type"] == "sample" and not s["is_observed"]]


def model_param_values(guide: AutoIsotropicMixture, params: dict) -> dict:
    """The entries of ``params`` that are the model's own ``numpyro.param`` sites."""
    return {
        k: v for k, v in params.items() if k in guide.prototype_trace and guide.prototype_trace[k]["type"] == "param"
    }
