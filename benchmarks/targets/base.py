"""The ``Target`` record shared by every benchmark target, and ``FlatDensity``: a NumPyro distribution
over R^d defined by a normalised log density and (optionally) an exact sampler, so that a model with
one ``numpyro.sample("x", FlatDensity(...))`` site has potential energy V = -log pi exactly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.distributions import Distribution, constraints
from numpyro.infer.initialization import init_to_uniform


class FlatDensity(Distribution):
    """A distribution on R^d given by ``log_prob_fn(x) -> (...)`` (normalised) and, where one exists,
    ``sample_fn(key, sample_shape) -> sample_shape + (d,)``."""

    support = constraints.real_vector
    pytree_aux_fields = ("_log_prob_fn", "_sample_fn", "dim")

    def __init__(self, log_prob_fn: Callable, sample_fn: Callable | None, dim: int):
        self._log_prob_fn = log_prob_fn
        self._sample_fn = sample_fn
        self.dim = int(dim)
        super().__init__(batch_shape=(), event_shape=(self.dim,))

    def log_prob(self, value: jax.Array) -> jax.Array:
        return self._log_prob_fn(value)

    def sample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        if self._sample_fn is None:
            raise ValueError("this target has no exact sampler; use its NUTS reference (Target.reference_samples)")
        return self._sample_fn(key, tuple(sample_shape))


def latent_sites(model: Callable, args: tuple) -> dict[str, dict]:
    """The model's latent sample sites (name: trace site), in the order the model samples them: the order of
    the flattened latent of NumPyro's ``AutoContinuous`` guides and ``AutoIsotropicMixture``
    (``initialize_model`` keeps it), so that every guide's q and a reference share coordinates."""
    # substituted: a site without a sampler (ImproperUniform) still gives the trace its structure
    seeded = numpyro.handlers.substitute(numpyro.handlers.seed(model, 0), substitute_fn=init_to_uniform)
    trace = numpyro.handlers.trace(seeded).get_trace(*args)
    return {k: s for k, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}


def flat_model(log_prob_fn: Callable, sample_fn: Callable | None, dim: int) -> Callable[[], None]:
    """A NumPyro model with one latent site ``x`` ~ FlatDensity: its potential is -log pi(x)."""

    def model() -> None:
        numpyro.sample("x", FlatDensity(log_prob_fn, sample_fn, dim))

    return model


@dataclass
class Target:
    """One benchmark target of any suite (the paper suite's and the extensions suite's alike).

    Everything is stated on the flattened unconstrained latent z (d,) that NumPyro's ``AutoContinuous``
    guides and ``AutoIsotropicMixture`` use.

    Attributes
    ----------
    name
        Short identifier (``gmm-d10-full``, ``funnel``, ``logreg-breast``, ``eight schools (centred)``, ...).
    family
        'gmm', 'funnel', 'sinh-arcsinh', 'label-switching', 'regression', 'gaussian', 'eight-schools' or
        'bimodal'.
    model, args
        The NumPyro model and its positional arguments.
    dim
        d.
    log_prob
        The normalised log density log pi(z) (vectorised over leading axes), or None.
    sample
        An exact sampler ``(key, num) -> (num, d)``, or None.
    log_z
        log Z, Z = the integral of exp(-V), so that KL(q || pi) = -ELBO + log Z; 0 where V = -log pi;
        None when unknown (the regressions).
    mode_of, num_modes
        Maps z (..., d) to the index of the target mode it belongs to (mixture targets), and the number
        of modes it can return.
    predict_log_prob, test_labels
        For regressions, ``z (S, d) -> (S, n_test, C)`` class log-probabilities on the test set, and the
        test labels (n_test,).
    reference_fn
        Returns cached reference draws (NUTS) where there is no exact sampler.
    init_radius
        mixvi / autoguide means start uniform in [-r, r]^d.
    info
        The target's settings (for the report); ``site`` and ``site_shape`` name its single latent site.
    flat_potential
        V at one flat latent z (d,), for models whose latent spans several (constrained) sites; None to
        derive V from the single site named in ``info``.
    ref_mean, ref_sd
        Reference moments (d,) where known (exactly, or from a cached reference), else None.
    gaussian_cov
        The covariance ((d, d), or (d,) for a diagonal one) when the target is Gaussian (exact KL).
    mass_right
        The exact P(z_0 > 0), where the suite measures mode mass by the sign of the first coordinate.
    nuts_model
        The same posterior reparameterised for NUTS (its draws keep ``model``'s latent sites, e.g. as
        deterministic sites of a non-centred version), or None to run NUTS on ``model``.
    """

    name: str
    family: str
    model: Callable
    dim: int
    args: tuple = ()
    log_prob: Callable | None = None
    sample: Callable | None = None
    log_z: float | None = 0.0
    mode_of: Callable | None = None
    num_modes: int = 0
    predict_log_prob: Callable | None = None
    test_labels: Any = None
    reference_fn: Callable | None = None
    init_radius: float = 2.0
    info: dict = field(default_factory=dict)
    flat_potential: Callable[[jax.Array], jax.Array] | None = None
    ref_mean: np.ndarray | None = None
    ref_sd: np.ndarray | None = None
    gaussian_cov: np.ndarray | None = None
    mass_right: float | None = None
    nuts_model: Callable | None = None

    def reference_samples(self, key: jax.Array, num: int) -> np.ndarray:
        """Reference draws (num, d): the exact sampler where there is one, else ``reference_fn`` (NUTS)."""
        if self.sample is not None:
            return np.asarray(self.sample(key, num))
        if self.reference_fn is None:
            raise ValueError(f"target {self.name!r} has no reference sampler")
        ref = np.asarray(self.reference_fn())
        idx = np.asarray(jax.random.choice(key, ref.shape[0], (min(num, ref.shape[0]),), replace=False))
        return ref[idx]

    def potential(self) -> Callable[[jax.Array], jax.Array]:
        """V(z) = -log joint at a flat latent (NumPyro's potential energy), vectorised over a leading axis."""
        if self.flat_potential is not None:
            return jax.vmap(self.flat_potential)

        from numpyro.infer.util import potential_energy

        shapes = self.info.get("site_shape", (self.dim,))
        site = self.info.get("site", "x")

        def v(z: jax.Array) -> jax.Array:
            return potential_energy(self.model, self.args, {}, {site: jnp.reshape(z, shapes)})

        return jax.vmap(v)
