"""The two choices V's cost settles: loss_draws='auto' (MixVI) and n_components='auto' (the guide)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import SVI, Trace_ELBO
from numpyro.optim import Adam

import mixvi
from mixvi.guide import BAD_COMPONENTS
from mixvi.potential_cost import (
    ALL_DRAWS_MAX_COST,
    CHEAP_MODEL_COMPONENTS,
    COMPONENTS_MAX_COST,
    HEAVY_MODEL_COMPONENTS,
    choose_components,
    choose_loss_draws,
    model_cost,
    value_and_grad_cost,
)


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
    """Without a tilt a small model takes V at every draw, a data-heavy one at one draw per component; with
    the default tilt every model takes every draw; either way the run is bit for bit the run with that
    choice given explicitly."""
    cases = [(_small, (jnp.arange(5.0),), None, 0), (*_logistic(1000, 20), 1, 0), (*_logistic(1000, 20), None, "auto")]
    for model, args, expected, tilt in cases:
        runs = []
        for loss_draws in ("auto", expected):
            guide = mixvi.AutoIsotropicMixture(model, n_components=3)
            engine = mixvi.MixVI(model, guide, loss_draws=loss_draws, tilt=tilt)
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
    key = guide._structure_key()
    calls = []

    def counting(*a, **kw):
        calls.append(1)
        return guide.potential_fn(*a, **kw)

    first = choose_loss_draws(key, counting, guide.latent_dim, jnp.float32, args, {})
    second = choose_loss_draws(key, counting, guide.latent_dim, jnp.float32, args, {})
    assert first == second == 1 and len(calls) == 1


def test_auto_components_follow_the_cost_and_equal_the_explicit_choice():
    """n_components='auto' is 20 for a small model and 10 for a 1000-row regression, settled at set-up; the
    run is bit for bit the run with that N given explicitly."""
    cases = [(_small, (jnp.arange(5.0),), CHEAP_MODEL_COMPONENTS), (*_logistic(1000, 20), HEAVY_MODEL_COMPONENTS)]
    assert _cost(*cases[0][:2]) < COMPONENTS_MAX_COST <= _cost(*cases[1][:2])
    for model, args, expected in cases:
        runs = []
        for n in ("auto", expected):
            guide = mixvi.AutoIsotropicMixture(model, n_components=n)
            assert guide.n_components == n  # 'auto' until set up
            runs.append(mixvi.MixVI(model, guide).run(jax.random.PRNGKey(3), 20, *args, progress_bar=False))
            assert guide.n_components == expected
        assert runs[0].params["auto_locs"].shape[0] == expected
        np.testing.assert_array_equal(np.asarray(runs[0].losses), np.asarray(runs[1].losses))
        np.testing.assert_array_equal(np.asarray(runs[0].params["auto_locs"]), np.asarray(runs[1].params["auto_locs"]))


def test_auto_components_under_svi_and_bad_values():
    """The SVI drop-in settles N at its init as MixVI does; a bad value is refused when the guide is built."""
    model, args = _logistic(1000, 20)
    guide = mixvi.AutoIsotropicMixture(model)
    svi = SVI(model, guide, Adam(0.01), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), *args)
    assert guide.n_components == HEAVY_MODEL_COMPONENTS
    assert svi.get_params(state)["auto_locs"].shape == (HEAVY_MODEL_COMPONENTS, 20)
    for bad in ("many", 0, 2.5, True):
        with pytest.raises(ValueError) as err:
            mixvi.AutoIsotropicMixture(model, n_components=bad)
        assert str(err.value) == BAD_COMPONENTS.format(bad)


def test_guide_and_engine_lower_the_potential_once():
    """The two 'auto' choices (N at set-up, loss_draws at init) read one cost: V is lowered once."""
    model, args = _logistic(500, 7)
    guide = mixvi.AutoIsotropicMixture(model, n_components=2)
    guide.setup(jax.random.PRNGKey(0), *args)
    key, calls = ("once", guide._structure_key()), []

    def counting(*a, **kw):
        calls.append(1)
        return guide.potential_fn(*a, **kw)

    n = choose_components(key, counting, guide.latent_dim, jnp.float32, args, {})
    draws = choose_loss_draws(key, counting, guide.latent_dim, jnp.float32, args, {})
    cost = model_cost(key, counting, guide.latent_dim, jnp.float32, args, {})
    assert len(calls) == 1 and cost is not None
    assert n == (CHEAP_MODEL_COMPONENTS if cost < COMPONENTS_MAX_COST else HEAVY_MODEL_COMPONENTS)
    assert draws == (None if cost < ALL_DRAWS_MAX_COST else 1)
