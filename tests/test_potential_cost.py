"""loss_draws='auto': V's cost from XLA's cost analysis, and the choice MixVI settles on from it."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import mixvi
from mixvi.potential_cost import ALL_DRAWS_MAX_COST, choose_loss_draws, value_and_grad_cost


def _logistic(rows: int, features: int):
    x = jax.random.normal(jax.random.PRNGKey(0), (rows, features))
    y = (x[:, 0] > 0).astype(jnp.float32)

    def model(x, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([features]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)

    return model, (x, y)


def _small(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.Normal(mu, tau), obs=y)


def _cost(model, args):
    guide = mixvi.AutoIsotropicMixture(model, n_components=2)
    guide.setup(jax.random.PRNGKey(0), *args)
    return value_and_grad_cost(guide.potential_fn, guide.latent_dim, jnp.float32, args, {})


def test_cost_follows_the_work_of_the_potential():
    """The matrix product x @ w of a logistic regression costs 2 n d flops in V and as much again in its
    gradient: the estimate must grow with n d accordingly and stay far below it for a 5-point model."""
    small = _cost(_small, (jnp.arange(5.0),))
    mid = _cost(*_logistic(100, 20))
    big = _cost(*_logistic(1000, 20))
    assert small is not None and mid is not None and big is not None
    assert 4 * 100 * 20 <= mid < 40 * 100 * 20
    assert 8 < big / mid < 12  # ten times the rows, ten times the work
    assert small < ALL_DRAWS_MAX_COST < big


def test_auto_settles_by_cost_and_matches_the_explicit_choice():
    """A small model takes V at every draw, a data-heavy one at one draw per component; either way the
    run is bit for bit the run with that choice given explicitly."""
    cases = [(_small, (jnp.arange(5.0),), None), (*_logistic(1000, 20), 1)]
    for model, args, expected in cases:
        runs = []
        for loss_draws in ("auto", expected):
            guide = mixvi.AutoIsotropicMixture(model, n_components=3)
            engine = mixvi.MixVI(model, guide, loss_draws=loss_draws)
            runs.append(engine.run(jax.random.PRNGKey(3), 30, *args, progress_bar=False))
            assert engine.loss_draws == expected
        np.testing.assert_array_equal(np.asarray(runs[0].losses), np.asarray(runs[1].losses))
        np.testing.assert_array_equal(np.asarray(runs[0].params["auto_locs"]), np.asarray(runs[1].params["auto_locs"]))


def test_auto_with_concrete_data_and_with_learned_weights():
    """A model that needs its data concrete is costed with the data as constants; learned weights always
    use every draw."""

    def concrete(y):
        n = int(np.sum(np.asarray(y) > -1e9))  # concrete data only
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        with numpyro.plate("n", n):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = jnp.arange(4.0)
    guide = mixvi.AutoIsotropicMixture(concrete, n_components=2)
    engine = mixvi.MixVI(concrete, guide)
    engine.init(jax.random.PRNGKey(0), y)
    assert engine.loss_draws is None
    weighted = mixvi.MixVI(_small, mixvi.AutoIsotropicMixture(_small, n_components=2, weights="fisher-rao"))
    assert weighted.loss_draws is None


def test_choice_is_kept_per_model_and_data_shape():
    """A second engine on the same model and data shapes reuses the choice (no second lowering)."""
    model, args = _logistic(1000, 20)
    guide = mixvi.AutoIsotropicMixture(model, n_components=2)
    guide.setup(jax.random.PRNGKey(0), *args)
    key = (guide._structure_key(), 10)
    calls = []

    def counting(*a, **kw):
        calls.append(1)
        return guide.potential_fn(*a, **kw)

    first = choose_loss_draws(key, counting, guide.latent_dim, jnp.float32, args, {})
    second = choose_loss_draws(key, counting, guide.latent_dim, jnp.float32, args, {})
    assert first == second == 1 and len(calls) == 1
