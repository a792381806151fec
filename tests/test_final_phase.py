"""The run's final phase: the auto step's cap over the last part of a run (its schedule, the capped step
against the step at the capped eta, the options) and where it acts in ``MixVI.run``."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import mixvi
from mixvi import geometry
from mixvi.geometry import AutoStep, MixtureGradient, MixtureParams
from mixvi.vi import Settings, explore_until, final_eta_cap, init_state

MU = jnp.array([1.0, -1.0, 0.5])


def _gaussian():
    numpyro.sample("x", dist.Normal(MU, jnp.array([0.5, 1.0, 2.0])).to_event(1))


def _tracking_at(step: int, end: int = 100):
    state = explore_until(init_state(jnp.zeros((3, 2))), end // 2, end)
    rel = state.relocation
    return rel._replace(steps=jnp.asarray(step, rel.steps.dtype))


def test_the_cap_falls_linearly_from_eta_max_to_eta_min_over_the_final_phase():
    auto = AutoStep()
    settings = Settings(final_phase=0.25)
    # a run of 100 steps: uncapped (eta_max) until step 75, then eta_max (1 - p) + eta_min p, p = (t - 75) / 25
    for step in (0, 40, 75):
        np.testing.assert_allclose(final_eta_cap(settings, _tracking_at(step)), auto.eta_max, rtol=1e-6)
    for step in (80, 87, 95, 100):
        p = (step - 75) / 25
        expected = auto.eta_max * (1 - p) + auto.eta_min * p
        np.testing.assert_allclose(final_eta_cap(settings, _tracking_at(step)), expected, rtol=1e-5)
    # past the end (a run continued from its final state without a new end): eta_min
    np.testing.assert_allclose(final_eta_cap(settings, _tracking_at(130)), auto.eta_min, rtol=1e-6)
    # the phase rounds up to whole steps: 0.25 of a 10-step run is its last 3 steps
    np.testing.assert_allclose(final_eta_cap(settings, _tracking_at(7, 10)), auto.eta_max, rtol=1e-6)
    assert float(final_eta_cap(settings, _tracking_at(8, 10))) < auto.eta_max


def test_no_cap_without_a_final_phase_a_fixed_step_a_schedule_or_a_known_end():
    tracking = _tracking_at(99)
    assert final_eta_cap(Settings(final_phase=0.0), tracking) is None
    assert final_eta_cap(Settings(final_phase=0.25, step_size=0.05), tracking) is None
    # a fixed step given as an integer is a fixed step too
    assert final_eta_cap(Settings(final_phase=0.25, step_size=1), tracking) is None
    assert final_eta_cap(Settings(final_phase=0.25), None) is None
    # a loop of one's own that set no end (end 0): eta_max, i.e. no cap
    unset = init_state(jnp.zeros((3, 2))).relocation._replace(steps=jnp.asarray(99, jnp.int32))
    np.testing.assert_allclose(final_eta_cap(Settings(final_phase=0.25), unset), AutoStep().eta_max, rtol=1e-6)


@pytest.mark.parametrize("method", ["ibw", "md", "ngd", "means"])
def test_a_capped_step_is_the_step_at_the_capped_eta_and_leaves_the_rule_alone(method):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(1), 4)
    params = MixtureParams(jax.random.normal(k1, (4, 3)), 0.2 * jax.random.normal(k2, (4,)))
    grad = MixtureGradient(0.3 * jax.random.normal(k3, (4, 3)), 0.3 * jax.random.normal(k4, (4,)))
    auto = AutoStep(eta0=0.4)
    state = geometry.init_step_size("auto", auto)
    loss = jnp.float32(3.0)
    capped, capped_state, info = geometry.update(
        params, grad, state, method=method, auto=auto, loss=loss, eta_cap=jnp.float32(0.05)
    )
    at_cap, _, _ = geometry.update(params, grad, state._replace(eta=jnp.float32(0.05)), method=method, auto=auto, loss=loss)
    free, free_state, _ = geometry.update(params, grad, state, method=method, auto=auto, loss=loss)
    for a, b in zip(jax.tree.leaves(capped), jax.tree.leaves(at_cap), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(capped.locs, free.locs)
    # the rule's own eta evolves as without the cap; the info reports the eta the step used
    np.testing.assert_array_equal(capped_state.eta, free_state.eta)
    np.testing.assert_allclose(info.step_size, 0.05, rtol=1e-6)
    # under a fixed step the cap is ignored: the step and the reported step size are the fixed step's
    fixed_state = geometry.init_step_size(0.05)
    fixed, _, fixed_info = geometry.update(
        params, grad, fixed_state, method=method, step_size=0.05, loss=loss, eta_cap=jnp.float32(0.01)
    )
    plain, _, plain_info = geometry.update(params, grad, fixed_state, method=method, step_size=0.05, loss=loss)
    np.testing.assert_array_equal(fixed.locs, plain.locs)
    np.testing.assert_array_equal(fixed_info.step_size, plain_info.step_size)
    # a cap above eta changes nothing
    loose, _, _ = geometry.update(params, grad, state, method=method, auto=auto, loss=loss, eta_cap=jnp.float32(0.45))
    np.testing.assert_array_equal(loose.locs, free.locs)


def test_the_final_phase_acts_on_the_last_quarter_of_a_run_only():
    """Two runs that differ only in the final phase take the same steps (bit for bit) until 75 % of the
    run, and different ones after."""
    seen = {}

    def record(label):
        def callback(state, losses, done):
            seen.setdefault(label, {})[done] = np.asarray(state.core.params.locs)

        return callback

    for label, phase in (("on", 0.25), ("off", 0.0)):
        vi = mixvi.MixVI(_gaussian, mixvi.AutoIsotropicMixture(_gaussian, n_components=3), final_phase=phase)
        vi.run(jax.random.PRNGKey(0), 40, progress_bar=False, chunk_size=10, callback=record(label))
    np.testing.assert_array_equal(seen["on"][30], seen["off"][30])
    assert not np.array_equal(seen["on"][40], seen["off"][40])


def test_final_phase_defaults_and_bad_options_name_the_fix():
    guide = mixvi.AutoIsotropicMixture(_gaussian)
    assert mixvi.MixVI(_gaussian, guide).final_phase == 0.25
    # the paper's mode and a fixed step keep the paper's steps
    assert mixvi.MixVI(_gaussian, guide, relocate=False).settings.final_phase == 0.0
    assert mixvi.MixVI(_gaussian, guide, step_size=0.05).settings.final_phase == 0.0
    for bad in ("on", -0.1, 1.0, True, float("nan")):
        with pytest.raises(ValueError, match="final_phase must be 'auto' or a float in"):
            mixvi.MixVI(_gaussian, guide, final_phase=bad)
    for kw in ({"step_size": 0.05}, {"relocate": False}):
        with pytest.raises(ValueError, match="needs step_size='auto' and relocate=True"):
            mixvi.MixVI(_gaussian, guide, final_phase=0.25, **kw)


@pytest.mark.parametrize("bad", [-0.5, 1.0, True])
def test_the_core_settings_refuse_a_bad_final_phase(bad):
    with pytest.raises(ValueError, match=r"Settings.final_phase must be a float in \[0, 1\)"):
        mixvi.vi.check(Settings(final_phase=bad))


def _student():
    numpyro.sample("x", dist.StudentT(3.0, 0.0, jnp.array([0.5, 1.0, 2.0, 4.0, 1.0, 1.0])).to_event(1))


def test_the_final_phase_quiets_the_last_iterate_where_the_auto_step_stays_large():
    """A heavy-tailed target keeps the loss noisy, so the trend test holds eta near eta_max to the end; the
    final phase's small last steps leave the mixture's mean (0 by symmetry) closer to it: over four seeds
    of 400 steps the median largest error (in the target's scales) falls to well under two thirds."""
    scales = np.array([0.5, 1.0, 2.0, 4.0, 1.0, 1.0])

    def errors(phase):
        out, etas = [], []
        for seed in range(4):
            vi = mixvi.MixVI(_student, mixvi.AutoIsotropicMixture(_student, n_components=3), final_phase=phase)
            state = vi.run(jax.random.PRNGKey(seed), 400, progress_bar=False).state
            out.append(np.max(np.abs(np.asarray(state.core.params.locs).mean(0)) / scales))
            etas.append(float(state.core.step_size.eta))
        return np.median(out), np.min(etas)

    quiet, quiet_eta = errors(0.25)
    loud, loud_eta = errors(0.0)
    # the rule's own eta stayed large in both (the cap does not change it)
    assert quiet_eta > 0.3 and loud_eta > 0.3
    assert quiet < 0.6 * loud, (quiet, loud)


def test_explore_until_on_the_host_equals_the_traced_update():
    """explore_until on a concrete state (computed on the host, as MixVI.run calls it) gives the leaves,
    dtypes and values it gives under jit: the schedule and end set, the Stein sums emptied for a new end
    and kept for the same one."""
    state = init_state(jnp.zeros((3, 2)))
    state = state._replace(stein=jax.tree.map(lambda a: jnp.ones_like(a), state.stein))
    traced = jax.jit(explore_until, static_argnums=(1, 2))
    for step, end in ((50, 100), (20, 100), (300, 600)):
        host, jitted = explore_until(state, step, end), traced(state, step, end)
        assert jax.tree.structure(host) == jax.tree.structure(jitted)
        for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(jitted)):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert int(host.relocation.scout_until) == step and int(host.relocation.end) == end
        state = host
    again = explore_until(state, 300, 600)
    assert all(np.all(np.asarray(a) == 0) for a in jax.tree.leaves(state.stein))  # emptied by the new end
    state = state._replace(stein=jax.tree.map(lambda a: jnp.ones_like(a), state.stein))
    kept = explore_until(state, 300, 600)
    assert all(np.all(np.asarray(a) == 1) for a in jax.tree.leaves(kept.stein))
    assert jax.tree.structure(again) == jax.tree.structure(kept)
