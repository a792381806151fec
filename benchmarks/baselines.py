"""Baselines from other libraries for the paper benchmark (``benchmarks.paper``), wrapped in its contract.

- ``build_steinvi``: NumPyro's ELBO-within-Stein (``numpyro.contrib.einstein.SteinVI``) with an
  ``AutoNormal`` guide and the RBF kernel; q is the uniform mixture of the particles' diagonal Gaussians.
- ``build_blackjax_mfvi``: BlackJAX's mean-field Gaussian VI (``blackjax.meanfield_vi``).
- ``build_pathfinder``: BlackJAX's single-path Pathfinder (one-shot: L-BFGS, then the best Gaussian
  along the path), returned as ``(init, fit, posterior)``.

The iterative builders return ``(init(seed) -> state, step(state) -> (state, loss), get_params(state) ->
pytree, posterior(params) -> q)``; step and get_params are pure, so a ``lax.scan`` of step can be jitted,
and the state carries its own PRNG key. Every q has ``sample(key, (S,)) -> (S, d)`` and ``log_prob(z (S, d))
-> (S,)`` on the flat unconstrained latent of ``Target`` and is a pytree, so it can be passed to a jitted
function. ``init_locs(seed, n) -> (n, d)`` supplies the starting means.

Two upstream defects are worked around by default (``fix_particle_transform`` / ``correct_mean`` = False
run the library as shipped): NumPyro 0.22's SteinVI scores draws under the mixture with the guide's params
constrained twice (AutoNormal's scales collapse), and BlackJAX 1.7's Pathfinder mean steps along
+Sigma grad(-log pi), away from the mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from blackjax.vi.pathfinder import PathfinderState
from numpyro import handlers
from numpyro.contrib.einstein import RBFKernel, SteinVI
from numpyro.infer.autoguide import AutoNormal
from numpyro.optim import Adagrad, optax_to_numpyro

from benchmarks.targets import Target

InitLocs = Callable[[int, int], Any]
"""``init_locs(seed, n) -> (n, d)``: the starting means the benchmark hands each builder."""


def _float_dtype() -> Any:
    # float64 under jax.enable_x64, float32 otherwise: every leaf of a scan carry must keep one dtype
    return jnp.result_type(float)


def _logdensity(target: Target) -> Callable[[jax.Array], jax.Array]:
    """log pi(z) up to log Z for one flat latent z (d,): -V(z), V vectorised over a leading axis."""
    potential = target.potential()

    def logdensity(z: jax.Array) -> jax.Array:
        return -potential(z[None])[0]

    return logdensity


# --- SteinVI (ELBO-within-Stein, AutoNormal guide) -------------------------------------------------


def _identity(params: dict) -> dict:
    return params


def diag_normal_mixture(locs: jax.Array, scales: jax.Array) -> dist.Distribution:
    """(1/P) sum_p N(locs[p], diag(scales[p]^2)) on R^d, as NumPyro's ``MixtureSameFamily`` (a pytree).

    The components are ``MultivariateNormal`` with a diagonal ``scale_tril``, not ``Normal(...).to_event(1)``:
    NumPyro before 0.22 refuses ``Independent`` components in a mixture (their support is not parameter-free
    there), and the O(d^2) cost of the dense factor is nothing at the benchmark's d <= 50."""
    num = locs.shape[0]
    mixing = dist.Categorical(probs=jnp.full((num,), 1.0 / num, dtype=locs.dtype))
    scale_tril = scales[..., :, None] * jnp.eye(locs.shape[-1], dtype=locs.dtype)
    return dist.MixtureSameFamily(mixing, dist.MultivariateNormal(locs, scale_tril=scale_tril))


def build_steinvi(
    target: Target,
    n_particles: int,
    lr: float,
    init_scale: float,
    init_locs: InitLocs,
    num_elbo_particles: int = 10,
    optimizer: str = "adagrad",
    fix_particle_transform: bool = True,
) -> tuple[Callable, Callable, Callable, Callable]:
    """NumPyro ``SteinVI`` with an ``AutoNormal`` guide, ``RBFKernel()`` and ``n_particles`` Stein particles.

    Each particle p is an AutoNormal guide N(loc_p, diag(scale_p^2)) of the target's single latent site;
    SteinVI's q is their uniform mixture. Particle p starts at ``init_locs(seed, n_particles)[p]`` (reshaped
    to the site's shape) with every scale ``init_scale``.

    :param optimizer: 'adagrad' (``numpyro.optim.Adagrad(lr)``, what NumPyro's SteinVI docs recommend) or
        'adam' (``optax.adam(lr)`` through ``optax_to_numpyro``).
    :param num_elbo_particles: draws per particle for the attractive (ELBO) force (SteinVI's default 10).
    :param fix_particle_transform: work around NumPyro 0.22's double constraining of the particles in the
        mixture density (see the comment in the body); False runs SteinVI exactly as shipped.
    :return: ``(init, step, get_params, posterior)``. ``step``'s loss is what ``SteinVI.update`` returns:
        the norm of the Stein force on the particles (not an ELBO; it shrinks towards a fixed point).
        ``get_params`` gives ``{'locs': (P, d), 'scales': (P, d)}`` on the flat latent.
    """
    model, args = target.model, target.args
    site = target.info.get("site", "x")
    site_shape = tuple(target.info.get("site_shape", (target.dim,)))
    guide = AutoNormal(model, init_scale=init_scale)
    if optimizer == "adagrad":
        optim = Adagrad(step_size=lr)
    elif optimizer == "adam":
        optim = optax_to_numpyro(optax.adam(lr))
    else:
        raise ValueError(f"optimizer must be 'adagrad' or 'adam', not {optimizer!r}")
    stein = SteinVI(model, guide, optim, RBFKernel(), num_stein_particles=n_particles,
                    num_elbo_particles=num_elbo_particles)
    # SteinVI.init traces model and guide and registers the param transforms on the object: once, outside jit.
    # Its model trace draws the latent, which a FlatDensity without an exact sampler refuses: give it a value
    with handlers.substitute(data={site: jnp.zeros(site_shape, _float_dtype())}):
        first = stein.init(jax.random.PRNGKey(0), *args)
    if fix_particle_transform:
        # numpyro 0.22 maps the other particles into the mixture density with constrain_fn(particle_transform_fn(u)),
        # and both hold biject_to(constraint): AutoNormal's scales enter log q_mix as softplus(softplus(u)) while
        # the draw uses softplus(u), so the entropy force is lost and the scales collapse. AutoNormal sets no
        # extra ``particle_transform``, so the right particle transform is the identity.
        stein.particle_transform_fn = _identity
    loc_name, scale_name = f"{site}_{guide.prefix}_loc", f"{site}_{guide.prefix}_scale"
    constrained0 = stein.get_params(first)
    if set(constrained0) != {loc_name, scale_name}:
        raise ValueError(f"expected the AutoNormal params {loc_name!r}, {scale_name!r}; got {sorted(constrained0)}")
    dtype = constrained0[loc_name].dtype

    def init(seed: int) -> Any:
        # SteinVI refuses init_to_value, so write the starting particles into a fresh optimiser state:
        # constrained values -> SteinVI's own unconstrain map (softplus^-1 for the scale) -> optim.init
        locs = jnp.asarray(init_locs(seed, n_particles), dtype).reshape((n_particles, *site_shape))
        params = {loc_name: locs, scale_name: jnp.full_like(locs, init_scale)}
        return first._replace(optim_state=stein.optim.init(stein.uconstrain_fn(params)),
                              rng_key=jax.random.fold_in(jax.random.PRNGKey(seed), 2))

    def step(state: Any) -> tuple[Any, jax.Array]:
        return stein.update(state, *args)

    def get_params(state: Any) -> dict[str, jax.Array]:
        # constrained params carry the particle axis first, then the site's shape: flatten row-major
        p = stein.get_params(state)
        return {"locs": p[loc_name].reshape(n_particles, -1), "scales": p[scale_name].reshape(n_particles, -1)}

    def posterior(params: dict[str, jax.Array]) -> dist.Distribution:
        return diag_normal_mixture(params["locs"], params["scales"])

    return init, step, get_params, posterior


# --- BlackJAX mean-field VI ---------------------------------------------------------------------------


def build_blackjax_mfvi(
    target: Target, lr: float, num_samples: int, init_scale: float, init_locs: InitLocs
) -> tuple[Callable, Callable, Callable, Callable]:
    """``blackjax.meanfield_vi(log pi, optax.adam(lr), num_samples)``: q = N(mu, diag(exp(rho)^2)).

    The state is ``(MFVIState, key)``. mu starts at ``init_locs(seed, 1)[0]``, rho at log(init_scale).
    The loss is BlackJAX's ``MFVIInfo.elbo``, which despite its name is the Monte Carlo estimate of
    mean(log q - log pi) = -ELBO (lower is better) at the parameters before the update.
    ``get_params`` gives ``{'mu': (d,), 'rho': (d,)}``; rho is the log standard deviation.
    """
    logdensity = _logdensity(target)
    opt = optax.adam(lr)
    algo = blackjax.meanfield_vi(logdensity, opt, num_samples)

    def init(seed: int) -> tuple[Any, jax.Array]:
        mu = jnp.asarray(init_locs(seed, 1), _float_dtype())[0]
        rho = jnp.full_like(mu, float(np.log(init_scale)))
        # blackjax's own init puts mu at 0 and rho at -2; build the same state at our starting point
        state = blackjax.vi.meanfield_vi.MFVIState(mu, rho, opt.init((mu, rho)))
        return state, jax.random.fold_in(jax.random.PRNGKey(seed), 2)

    def step(state: tuple[Any, jax.Array]) -> tuple[tuple[Any, jax.Array], jax.Array]:
        st, key = state
        key, sub = jax.random.split(key)
        st, info = algo.step(sub, st)
        return (st, key), info.elbo

    def get_params(state: tuple[Any, jax.Array]) -> dict[str, jax.Array]:
        return {"mu": state[0].mu, "rho": state[0].rho}

    def posterior(params: dict[str, jax.Array]) -> dist.Distribution:
        return dist.Normal(params["mu"], jnp.exp(params["rho"])).to_event(1)

    return init, step, get_params, posterior


# --- BlackJAX Pathfinder --------------------------------------------------------------------------------


class PathfinderGaussian(NamedTuple):
    """N(mean, Sigma) with Pathfinder's factored covariance Sigma = diag(alpha) + beta gamma beta^T, kept as
    Sigma = D^(1/2) (I + Q (L L^T - I) Q^T) D^(1/2), D = diag(alpha), Q (d, k) orthonormal, L (k, k)
    lower-triangular (blackjax's ``bfgs_sample`` factorisation), so sampling and log q cost O(d k)."""

    mean: jax.Array
    sqrt_alpha: jax.Array
    q_mat: jax.Array
    chol: jax.Array
    log_det: jax.Array

    @property
    def num_params(self) -> int:
        """Numbers that define the Gaussian: the mean, the diagonal, Q and L (log_det is derived from them)."""
        return int(self.mean.size + self.sqrt_alpha.size + self.q_mat.size + self.chol.size)

    def sample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        """Draws ``sample_shape + (d,)``: mean + D^(1/2) (u + Q (L - I) Q^T u), u ~ N(0, I)."""
        u = jax.random.normal(key, tuple(sample_shape) + self.mean.shape, self.mean.dtype)
        c = u @ self.q_mat
        lc = c @ self.chol.T - c
        return self.mean + self.sqrt_alpha * (u + lc @ self.q_mat.T)

    def log_prob(self, value: jax.Array) -> jax.Array:
        """log N(value; mean, Sigma) over the last axis, with Sigma^-1 by the Woodbury-type identity
        (I + Q (B - I) Q^T)^-1 = I + Q (B^-1 - I) Q^T, B = L L^T."""
        w = (value - self.mean) / self.sqrt_alpha
        c = w @ self.q_mat
        lc = jax.scipy.linalg.solve_triangular(self.chol, c[..., None], lower=True)[..., 0]
        quad = jnp.sum(w * w, -1) - jnp.sum(c * c, -1) + jnp.sum(lc * lc, -1)
        d = self.mean.shape[-1]
        return -0.5 * (quad + self.log_det + d * jnp.log(2.0 * jnp.pi))

    @property
    def covariance(self) -> jax.Array:
        """The dense (d, d) Sigma (for checks)."""
        k = self.chol.shape[0]
        inner = jnp.eye(self.mean.shape[-1]) + self.q_mat @ (self.chol @ self.chol.T - jnp.eye(k)) @ self.q_mat.T
        return self.sqrt_alpha[:, None] * inner * self.sqrt_alpha[None, :]


def pathfinder_gaussian(state: PathfinderState, correct_mean: bool = True) -> PathfinderGaussian:
    """The Gaussian of one Pathfinder iterate (flat position). blackjax stores ``grad_position`` as the gradient
    of -log pi (its L-BFGS objective) and still forms mean = x + Sigma g, which steps away from the mode;
    the paper's mean is x + Sigma grad log pi = x - Sigma g. ``correct_mean=False`` keeps blackjax's."""
    alpha, beta, gamma = state.alpha, state.beta, state.gamma
    sqrt_alpha = jnp.sqrt(alpha)
    q_mat, r = jnp.linalg.qr(beta / sqrt_alpha[:, None], mode="reduced")
    chol = jnp.linalg.cholesky(jnp.eye(r.shape[0], dtype=r.dtype) + r @ gamma @ r.T)
    log_det = jnp.sum(jnp.log(alpha)) + 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    g = state.grad_position
    sigma_g = alpha * g + beta @ (gamma @ (beta.T @ g))
    mean = state.position - sigma_g if correct_mean else state.position + sigma_g
    return PathfinderGaussian(mean, sqrt_alpha, q_mat, chol, log_det)


def build_pathfinder(
    target: Target,
    init_locs: InitLocs,
    maxiter: int = 100,
    num_samples_elbo: int = 200,
    maxcor: int = 10,
    correct_mean: bool = True,
) -> tuple[Callable, Callable, Callable]:
    """BlackJAX single-path Pathfinder (``blackjax.vi.pathfinder.approximate``) from ``init_locs(seed, 1)[0]``.

    Pathfinder is one-shot, so the contract is ``(init(seed) -> state, fit(state) -> params,
    posterior(params) -> q)``, with ``fit`` jittable. ``params`` is a ``PathfinderState`` of the chosen
    iterate (its ``elbo``: the ELBO estimate that chose it); q is its Gaussian (``PathfinderGaussian``).

    :param maxiter: at most this many L-BFGS iterations (blackjax's default is 30; L-BFGS stops earlier on
        ``ftol`` / ``gtol``, but the per-iterate ELBOs are computed for all maxiter + 1 slots, so cost grows).
    :param num_samples_elbo: draws per iterate for the ELBO that picks the iterate.
    :param maxcor: L-BFGS history size (the rank of the covariance update is 2 * maxcor).
    :param correct_mean: use the paper's mean x + Sigma grad log pi and re-pick the best iterate along
        blackjax's path by the ELBO of that corrected Gaussian; False keeps blackjax's own iterate and mean.
    """
    logdensity = _logdensity(target)

    def init(seed: int) -> tuple[jax.Array, jax.Array]:
        x0 = jnp.asarray(init_locs(seed, 1), _float_dtype())[0]
        return jax.random.fold_in(jax.random.PRNGKey(seed), 2), x0

    def fit(state: tuple[jax.Array, jax.Array]) -> PathfinderState:
        key, x0 = state
        k_path, k_pick = jax.random.split(key)
        best, info = blackjax.vi.pathfinder.approximate(
            k_path, logdensity, x0, num_samples_elbo, maxiter=maxiter, maxcor=maxcor)
        if not correct_mean:
            return best
        path = info.path

        def elbo(st: PathfinderState, k: jax.Array) -> jax.Array:
            q = pathfinder_gaussian(st)
            z = q.sample(k, (num_samples_elbo,))
            return jnp.mean(jax.vmap(logdensity)(z) - q.log_prob(z))

        values = jax.vmap(elbo)(path, jax.random.split(k_pick, path.elbo.shape[0]))
        # blackjax marks iterates past L-BFGS's stop (and failed ones) with -inf: keep that mask
        values = jnp.where(jnp.isfinite(path.elbo) & jnp.isfinite(values), values, -jnp.inf)
        i = jnp.argmax(values)
        return jax.tree.map(lambda a: a[i], path)._replace(elbo=values[i])

    def posterior(params: PathfinderState) -> PathfinderGaussian:
        return pathfinder_gaussian(params, correct_mean)

    return init, fit, posterior


__all__ = [
    "PathfinderGaussian",
    "build_blackjax_mfvi",
    "build_pathfinder",
    "build_steinvi",
    "diag_normal_mixture",
    "pathfinder_gaussian",
]
