"""Relocation of massless components (mixvi.adapt): which components die, where they restart, and the
sharp-posterior collapse it cures without touching real modes."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

import mixvi
from mixvi import draws, vi
from mixvi.adapt import (
    BALANCE_QUIET,
    CHAIN_QUIET,
    NEIGHBOUR_REACH,
    STARVED_RATIO,
    RelocationState,
    balance,
    basin_neighbours,
    basins,
    dead_components,
    init_relocation,
    metric_shares,
    noise_rows,
    relocate,
    track,
)
from mixvi.scout import (
    SCOUT_CANDIDATES,
    SCOUT_DEPTH,
    SCOUT_EVERY,
    SCOUT_MARGIN,
    SCOUT_SPREAD,
    SCOUT_STATIONARY,
    descend,
    init_candidates,
    restart_candidates,
    scout,
)


def _state(fast, slow, age, log_mass=None):
    mass = jnp.full((len(fast),), jnp.nan) if log_mass is None else log_mass
    return RelocationState(
        jnp.asarray(fast, jnp.float32),
        jnp.asarray(slow, jnp.float32),
        jnp.asarray(age, jnp.int32),
        jnp.asarray(mass, jnp.float32),
    )


def test_only_stalled_mature_components_far_above_the_best_die():
    """Dead: 1000 nats above the best and stalled. Alive: the best, one 5 nats above, one closing its gap fast, one too young."""
    state = _state([0.0, 5.0, 1000.0, 1000.0, 1000.0], [0.0, 5.0, 1000.0, 3000.0, 1000.0], [200, 200, 200, 200, 10])
    dead, best = dead_components(state, gap=30.0, patience=500, min_age=100)
    assert int(best) == 0
    np.testing.assert_array_equal(dead, [False, False, True, False, False])


def test_a_component_that_cannot_arrive_before_the_run_ends_dies():
    """1000 nats above the best and closing the gap at ~2.2 nats per step: alive with 500 steps of patience,
    dead when the run ends in 100 steps, alive again once past the end (a run continued from the state)."""
    state = _state([0.0, 1000.0], [0.0, 1200.0], [200, 200])

    def dead_at(steps, end):
        s = state._replace(steps=jnp.asarray(steps, jnp.int32), end=jnp.asarray(end, jnp.int32))
        return np.asarray(dead_components(s, gap=30.0, patience=500, min_age=100)[0])

    np.testing.assert_array_equal(dead_components(state, gap=30.0, patience=500, min_age=100)[0], [False, False])
    np.testing.assert_array_equal(dead_at(1900, 0), [False, False])  # end 0: not known
    np.testing.assert_array_equal(dead_at(1000, 2000), [False, False])  # 1000 steps left: patience rules
    np.testing.assert_array_equal(dead_at(1900, 2000), [False, True])
    np.testing.assert_array_equal(dead_at(2100, 2000), [False, False])


def test_the_shared_metric_leaves_out_components_far_above_the_best():
    """Equal shares among the components within the gap of the best (and those not yet measured), 0 beyond."""
    state = _state([3.0, 8.0, 1000.0, jnp.nan], [3.0, 8.0, 1000.0, jnp.nan], [200, 200, 200, 0])
    np.testing.assert_allclose(metric_shares(state, 30.0), [1 / 3, 1 / 3, 0.0, 1 / 3], rtol=1e-6)
    fresh = init_relocation(4)
    np.testing.assert_allclose(metric_shares(fresh, 30.0), [0.25] * 4, rtol=1e-6)


def test_relocated_components_restart_as_draws_from_the_best():
    """A dead component gets the best one's sigma and a mean drawn from it; the others and N are unchanged."""
    locs = jnp.array([[0.0, 0.0], [50.0, 50.0], [1.0, 1.0]])
    log_scales = jnp.log(jnp.array([0.5, 1e-6, 2.0]))
    state = _state([0.0, 1e4, 3.0], [0.0, 1e4, 3.0], [200, 200, 200])
    new_locs, new_u, new_state, moved = relocate(jax.random.key(0), locs, log_scales, state, gap=30.0)
    assert int(moved) == 1
    np.testing.assert_array_equal(new_locs[jnp.array([0, 2])], locs[jnp.array([0, 2])])
    assert float(jnp.linalg.norm(new_locs[1])) < 0.5 * 5  # within five sds of the best component's mean
    np.testing.assert_allclose(jnp.exp(new_u), [0.5, 0.5, 2.0], rtol=1e-6)
    assert int(new_state.age[1]) == 0 and float(new_state.loss_fast[1]) == 0.0


def test_tracking_skips_rejected_steps():
    """Running losses start at the first value and ignore a rejected step."""
    state = track(init_relocation(2), jnp.array([1.0, 2.0]), jnp.array(True))
    np.testing.assert_allclose(state.loss_fast, [1.0, 2.0])
    again = track(state, jnp.array([jnp.nan, 5.0]), jnp.array(True))
    np.testing.assert_array_equal(again.loss_fast, state.loss_fast)
    np.testing.assert_array_equal(again.age, [1, 1])


def _sharp_regression():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(500, 5)), jnp.float32)
    y = x @ jnp.asarray(rng.normal(size=5), jnp.float32) + 0.05 * jnp.asarray(rng.normal(size=500), jnp.float32)

    def model(x, y=None):
        b = numpyro.sample("b", dist.Normal(0, 10).expand([5]).to_event(1))
        numpyro.sample("y", dist.Normal(x @ b, 0.05), obs=y)

    xn = np.asarray(x, float)
    cov = np.linalg.inv(xn.T @ xn / 0.05**2 + np.eye(5) / 100)
    return model, x, y, cov @ xn.T @ np.asarray(y, float) / 0.05**2, cov


def test_sharp_posterior_no_longer_collapses():
    """Linear regression with noise sd 0.05 (posterior sd 0.002): with relocation the draws have the analytic
    means within 0.1 sd and sds within 10 %, no sigma is below 1e-3 of the median; without it components stay far off."""
    model, x, y, mean, cov = _sharp_regression()
    sd = np.sqrt(np.diag(cov))
    errors = {}
    for flag in (True, False):
        guide = mixvi.AutoIsotropicMixture(model, n_components=10)
        r = mixvi.MixVI(model, guide, relocate=flag).run(jax.random.PRNGKey(0), 2000, x, y, progress_bar=False)
        draws = guide.sample_posterior(jax.random.PRNGKey(1), r.params, x, sample_shape=(20_000,))["b"]
        errors[flag] = (np.max(np.abs(draws.mean(0) - mean) / sd), np.max(np.abs(np.log(draws.std(0) / sd))))
        if flag:
            scales = np.asarray(r.params["auto_scales"])
            assert scales.min() > 1e-3 * np.median(scales)
    assert errors[True][0] < 0.1 and errors[True][1] < np.log(1.1), errors
    assert errors[False][0] > 10, errors


def _two_modes(v):
    modes = jnp.array([[-6.0, 0.0], [6.0, 0.0]])
    return logsumexp(jnp.log(jnp.array([0.2, 0.8])) - 0.5 * jnp.sum((v[..., None, :] - modes) ** 2, -1), -1)


def test_a_mature_component_with_next_to_no_mass_restarts_on_the_best():
    """All three within the relocation gap of the best; the third's mass estimate is 1e-5 of the heaviest
    (below STARVED_RATIO): it restarts on the best once it has lived the relocation's min_age steps. Not
    before, not when its mass is not estimated, nor when it carries just above STARVED_RATIO of the
    heaviest's."""
    locs = jnp.array([[0.0, 0.0], [1.0, 1.0], [40.0, 40.0]])
    log_scales = jnp.zeros(3)

    def relocated(light, age=200):
        mass = jnp.log(jnp.array([0.5, 0.4, light]))
        state = _state([0.0, 2.0, 10.0], [0.0, 2.0, 10.0], [200, 200, age], mass)
        return np.asarray(relocate(jax.random.key(0), locs, log_scales, state, gap=30.0)[0][2])

    assert np.linalg.norm(relocated(0.5e-5)) < 5.0  # a draw from the best component, at the origin
    assert np.linalg.norm(relocated(0.5e-5, age=100)) < 5.0
    np.testing.assert_array_equal(relocated(0.5e-5, age=99), locs[2])
    np.testing.assert_array_equal(relocated(jnp.nan), locs[2])
    np.testing.assert_array_equal(relocated(2.0 * STARVED_RATIO * 0.5), locs[2])


def test_relocation_keeps_a_light_real_mode():
    """On two separated modes with masses 0.2 / 0.8, the light mode keeps its components and none dies."""
    algo = mixvi.mixture_vi(_two_modes, n_components=10, init_scale=6.0)
    state = algo.init(jax.random.key(1), jnp.zeros(2))
    keys = jax.random.split(jax.random.key(2), 1500)
    settings = vi.check(vi.Settings(balance=False))
    state, info = jax.jit(
        lambda s: jax.lax.scan(lambda c, k: vi.step(k, c, lambda x, _: -_two_modes(x), settings), s, keys)
    )(state)
    on_light = np.asarray(state.params.locs[:, 0] < 0)
    assert on_light.any() and not on_light.all()
    assert int(info.num_relocated.sum()) == 0


def test_importance_masses_estimate_each_components_share_of_the_target():
    """Components of q at the two modes of p (masses 0.2 / 0.8), q with uniform weights: the running
    importance masses, normalised, are p's mass on each component (E_p[r_i] = E_{q_i}[p/q] / N)."""
    locs = jnp.array([[-6.0, 0.0], [6.0, 0.0]])
    state = init_relocation(2)
    for k in jax.random.split(jax.random.key(0), 400):
        x = locs[:, None] + jax.random.normal(k, (2, 10, 2))
        log_q = logsumexp(-0.5 * jnp.sum((x[:, :, None] - locs) ** 2, -1), -1) - jnp.log(2.0) - jnp.log(2 * jnp.pi)
        log_p = _two_modes(x) - jnp.log(2 * jnp.pi)
        state = track(state, jnp.zeros(2), jnp.array(True), log_p - log_q)
    np.testing.assert_allclose(jax.nn.softmax(state.log_mass), [0.2, 0.8], atol=0.02)


def _balance_case(log_mass, age=300, slow_offset=0.0, locs=None):
    locs = jnp.array([[0.0, 0.0], [0.5, 0.0], [10.0, 0.0]]) if locs is None else locs
    n = locs.shape[0]
    ages = [age] * n if np.ndim(age) == 0 else age
    state = _state([1.0] * n, [1.0 + slow_offset] * n, ages, jnp.log(jnp.asarray(log_mass)))
    return balance(jax.random.key(0), locs, jnp.zeros(n), state)


def test_basins_are_chains_of_neighbours():
    """Four components in a chain (each within reach of the next, the ends 3 apart) form one basin; a
    fifth far away is alone."""
    close = jnp.zeros((5, 5), bool)
    for i in range(3):
        close = close.at[i, i + 1].set(True).at[i + 1, i].set(True)
    same = np.asarray(basins(close))
    np.testing.assert_array_equal(same[:4, :4], np.ones((4, 4), bool))
    np.testing.assert_array_equal(same[4], [False, False, False, False, True])


def test_balance_moves_from_the_basin_with_a_surplus_to_the_one_with_a_deficit():
    """Basin {0, 1} holds 0.4 of the mass (target 1.2 of 3 components, a surplus of 0.8), basin {2} 0.6
    (target 1.8, a deficit of 0.8): the move gains 1.6 > 1 + margin. The least loaded, 1, restarts as a
    draw from 2; the pair splits 2's mass, and 0 takes over 1's share of basin {0, 1}'s mass (its total
    stays 0.4). Where the move would gain less, or the components are too young, unsettled or alone,
    nothing moves."""
    locs, u, state, moved = _balance_case([0.3, 0.1, 0.6])
    assert int(moved) == 1
    assert float(jnp.linalg.norm(locs[1] - jnp.array([10.0, 0.0]))) < 5.0
    np.testing.assert_array_equal(locs[jnp.array([0, 2])], jnp.array([[0.0, 0.0], [10.0, 0.0]]))
    np.testing.assert_allclose(jnp.exp(state.log_mass), [0.4, 0.3, 0.3], rtol=1e-5)
    np.testing.assert_array_equal(state.age, [300, 0, 0])
    assert int(_balance_case([0.3, 0.3, 0.4])[3]) == 0  # counts within margin of the masses
    # basin {0, 1} at 0.45 gains 2 (2 - 3 x 0.45) = 1.3 < 1.5, at 0.38 1.72: the margin decides
    assert int(_balance_case([0.25, 0.2, 0.55])[3]) == 0
    assert int(_balance_case([0.2, 0.18, 0.62])[3]) == 1
    assert int(_balance_case([0.3, 0.1, 0.6], age=50)[3]) == 0  # too young
    assert int(_balance_case([0.3, 0.1, 0.6], slow_offset=5.0)[3]) == 0  # still improving
    alone = jnp.array([[0.0, 0.0], [-20.0, 0.0], [10.0, 0.0]])  # the least loaded is alone in its basin
    assert int(_balance_case([0.3, 0.1, 0.6], locs=alone)[3]) == 0


def test_balance_puts_a_basin_in_deficit_before_a_move_inside_a_chain():
    """Components 0-1-2 in a chain (0 and 2 not neighbours) with masses 0.1 / 0.7 / 0.1 are one basin
    (target 5 x 0.9 / 1.1 = 4.1 of 5, deficit 1.1); {3, 4} holds 0.2 (target 0.9, surplus 1.1). The move
    goes from {3, 4} to the chain's most loaded component, not from 0 or 2 to 1."""
    locs = jnp.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [30.0, 0.0], [30.5, 0.0]])
    new_locs, _, state, moved = _balance_case([0.1, 0.7, 0.1, 0.1, 0.1], locs=locs)
    assert int(moved) == 1
    np.testing.assert_array_equal(new_locs[:3], locs[:3])
    mover = 3 if not np.allclose(new_locs[3], locs[3]) else 4
    assert float(jnp.linalg.norm(new_locs[mover] - locs[1])) < 5.0
    np.testing.assert_allclose(jnp.exp(state.log_mass)[jnp.array([1, mover, 7 - mover])], [0.35, 0.35, 0.2], rtol=1e-5)


def test_inside_a_chain_the_least_loaded_moves_to_the_most_loaded_it_is_not_next_to():
    """One basin, the chain 0-1-2 (0 and 2 not neighbours), masses 0.1 / 0.2 / 0.7: 0 restarts on 2 (ratio
    7 > 1.5), the pair shares 2's mass and 1 takes over 0's part (the basin's total stays 1). Within the
    ratio, nothing moves."""
    locs = jnp.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    new_locs, _, state, moved = _balance_case([0.1, 0.2, 0.7], locs=locs)
    assert int(moved) == 1
    assert float(jnp.linalg.norm(new_locs[0] - locs[2])) < 5.0
    np.testing.assert_array_equal(new_locs[1:], locs[1:])
    np.testing.assert_allclose(jnp.exp(state.log_mass), [0.35, 0.3, 0.35], rtol=1e-5)
    assert int(_balance_case([0.3, 0.3, 0.4], locs=locs)[3]) == 0  # ratio 1.33 < 1.5


def test_repeated_balancing_stops_at_the_masses_without_overshooting():
    """Basins A, B, C hold 0.1 / 0.6 / 0.3 of the mass with 5 / 2 / 3 components, and nothing re-estimates
    the masses between moves (the estimates lag the moves by ~200 steps in a run). Move after move (every
    component kept mature) the counts reach 1 / 6 / 3 and stay: the components left in A take over the
    shares of those that left, so A does not look ever lighter and C, already at its count, gets none."""
    centres = np.array([[-20.0, 0.0], [20.0, 0.0], [0.0, 30.0]])
    home = np.array([0] * 5 + [1] * 2 + [2] * 3)
    locs = jnp.asarray(centres[home] + 0.1 * np.arange(10)[:, None], jnp.float32)
    mass = jnp.log(jnp.asarray([0.02] * 5 + [0.3] * 2 + [0.1] * 3))
    state = _state([1.0] * 10, [1.0] * 10, [300] * 10, mass)
    u = jnp.zeros(10)
    moves = []
    for key in jax.random.split(jax.random.key(0), 12):
        locs, u, state, moved = balance(key, locs, u, state._replace(age=jnp.full((10,), 300, jnp.int32)))
        moves.append(int(moved))
    near = np.argmin(np.sum((np.asarray(locs)[:, None] - centres) ** 2, -1), 1)
    assert np.bincount(near, minlength=3).tolist() == [1, 6, 3]
    assert moves == [1] * 4 + [0] * 8, moves
    np.testing.assert_allclose(jnp.exp(state.log_mass)[near == 0], [0.1], rtol=1e-4)


def test_no_move_between_basins_in_the_last_quarter_of_a_run_with_a_known_end():
    """The case that moves between basins (a surplus of 0.8 against a deficit of 0.8) moves at step 1499 of
    a 2000-step run, not from step 1500 on (the last quarter: the counts are what the run returns), and at
    any step when the end is not known (0). A move inside a chain (components 0-1-2-3 at x0 = 0, 2, 4, 6,
    each a neighbour of the next only, masses 0.7 / 0.1 / 0.1 / 0.05, no other basin: 3 restarts on 0) is
    still made in the last quarter, but not over the last CHAIN_QUIET of the run (from step 1800 of 2000)."""
    locs = jnp.array([[0.0, 0.0], [0.5, 0.0], [10.0, 0.0]])
    base = _state([1.0] * 3, [1.0] * 3, [300] * 3, jnp.log(jnp.asarray([0.3, 0.1, 0.6])))

    def moved(steps, end, locs=locs, state=base):
        state = state._replace(steps=jnp.asarray(steps, jnp.int32), end=jnp.asarray(end, jnp.int32))
        return int(balance(jax.random.key(0), locs, jnp.zeros(locs.shape[0]), state)[3])

    assert moved(1499, 2000) == 1 and moved(1500, 2000) == 0 and moved(1999, 2000) == 0
    assert moved(1800, 0) == 1
    chain = jnp.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [6.0, 0.0]])
    chain_state = _state([1.0] * 4, [1.0] * 4, [300] * 4, jnp.log(jnp.asarray([0.7, 0.1, 0.1, 0.05])))
    close = np.asarray(basin_neighbours(chain, jnp.zeros(4), None, None, NEIGHBOUR_REACH))
    assert close[0, 1] and close[1, 2] and close[2, 3] and not close[0, 2]
    assert CHAIN_QUIET < BALANCE_QUIET
    assert moved(1799, 2000, chain, chain_state) == 1
    assert moved(1800, 2000, chain, chain_state) == 0 and moved(1999, 2000, chain, chain_state) == 0
    assert moved(1999, 0, chain, chain_state) == 1


def test_a_young_component_can_receive_but_not_move():
    """The receiver needs ``receive_age`` (100) steps, the mover ``min_age`` (300): a light mode found late
    grows by a split every ~100 steps while components that just arrived stay where they are."""
    assert int(_balance_case([0.3, 0.1, 0.6], age=[300, 300, 150])[3]) == 1
    assert int(_balance_case([0.3, 0.1, 0.6], age=[150, 150, 300])[3]) == 0
    assert int(_balance_case([0.3, 0.1, 0.6], age=[300, 300, 50])[3]) == 0


def test_balancing_gives_the_light_mode_its_share_of_components():
    """Modes with masses 0.2 / 0.8 and 10 components: from a start that puts a different count on the
    light mode, balancing ends with 2 there (without it the count stays where the start put it)."""
    counts = {}
    for flag in (False, True):
        state = vi.init_state(jnp.array([[-6.0, 0.0]] * 5 + [[6.0, 0.0]] * 5) + 0.3, 1.0)
        settings = vi.check(vi.Settings(balance=flag))
        keys = jax.random.split(jax.random.key(3), 3000)
        state, _ = jax.jit(
            lambda s, st=settings, ks=keys: jax.lax.scan(
                lambda c, k: vi.step(k, c, lambda x, _: -_two_modes(x), st), s, ks
            )
        )(state)
        counts[flag] = int(np.sum(np.asarray(state.params.locs[:, 0]) < 0))
    assert counts == {False: 5, True: 2}, counts


def _three_modes(v):
    modes = jnp.array([[-8.0, 0.0], [8.0, 0.0], [0.0, 12.0]])
    return logsumexp(jnp.log(jnp.array([0.6, 0.3, 0.1])) - 0.5 * jnp.sum((v[..., None, :] - modes) ** 2, -1), -1)


def test_balancing_brings_three_modes_counts_to_their_masses():
    """Modes with masses 0.6 / 0.3 / 0.1 and 10 components started 2 / 3 / 5 (the light mode holding half):
    the counts end at 6 / 3 / 1, moving four components from the light mode to the heavy one without
    emptying it (without balancing they stay 2 / 3 / 5)."""
    counts = {}
    start = jnp.array([[-8.0, 0.0]] * 2 + [[8.0, 0.0]] * 3 + [[0.0, 12.0]] * 5) + 0.3
    for flag in (False, True):
        settings = vi.check(vi.Settings(balance=flag))
        keys = jax.random.split(jax.random.key(5), 3000)
        state, _ = jax.jit(
            lambda s, st=settings, ks=keys: jax.lax.scan(
                lambda c, k: vi.step(k, c, lambda x, _: -_three_modes(x), st), s, ks
            )
        )(vi.init_state(start, 1.0))
        locs = np.asarray(state.params.locs)
        near = np.argmin(np.sum((locs[:, None] - np.array([[-8.0, 0.0], [8.0, 0.0], [0.0, 12.0]])) ** 2, -1), 1)
        counts[flag] = np.bincount(near, minlength=3).tolist()
    assert counts == {False: [2, 3, 5], True: [6, 3, 1]}, counts


def test_scouts_leave_from_a_wide_start_on_schedule_and_only_below_the_ceiling():
    """Due on step 200 (every 50): the least loaded component sharing a basin restarts at the candidate draw
    around the run's start with the lowest V, with the median sigma and a fresh clock; not on other steps,
    nor after scout_until, nor where V is not finite or above the first step's highest V."""
    locs = jnp.array([[0.0, 0.0], [0.1, 0.0], [8.0, 0.0]])
    state = init_relocation(3, locs=jnp.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    state = state._replace(
        age=jnp.array([300, 300, 300]),
        log_mass=jnp.log(jnp.array([0.4, 0.2, 0.4])),
        loss_fast=jnp.zeros(3),
        loss_slow=jnp.zeros(3),
    )
    u = jnp.log(jnp.array([1.0, 2.0, 3.0]))

    def run(steps, until=1000, potential=lambda x: jnp.sum(x**2, -1), ceiling=1e6):
        s = state._replace(steps=jnp.asarray(steps), scout_until=jnp.asarray(until), ceiling=jnp.asarray(ceiling))
        return scout(jax.random.key(0), locs, u, s, potential)

    new_locs, new_u, new_state, sent = run(200)
    assert int(sent) == 1
    np.testing.assert_array_equal(new_locs[jnp.array([0, 2])], locs[jnp.array([0, 2])])
    assert not np.allclose(new_locs[1], locs[1])
    np.testing.assert_allclose(jnp.exp(new_u), [1.0, 2.0, 3.0], rtol=1e-6)  # the median sigma is its own here
    assert int(new_state.age[1]) == 0 and bool(jnp.isnan(new_state.log_mass[1]))
    assert int(run(225)[3]) == 0 and int(run(150)[3]) == 0 and int(run(1200)[3]) == 0
    assert int(run(200, until=100)[3]) == 0
    assert int(run(200, potential=lambda x: jnp.full(x.shape[0], jnp.inf))[3]) == 0
    assert int(run(200, ceiling=-2 * SCOUT_MARGIN)[3]) == 0  # every candidate has V > 0 = this ceiling + margin (d=2)
    # the candidate with the lowest V: the one nearest the origin of the eight draws
    z = jax.random.normal(jax.random.key(0), (SCOUT_CANDIDATES, 2))
    candidates = state.origin_loc + SCOUT_SPREAD * state.origin_scale * z
    nearest = candidates[jnp.argmin(jnp.sum(candidates**2, -1))]
    np.testing.assert_allclose(new_locs[1], nearest, rtol=1e-6)


def _descend_for(points, vg, steps, scale_tril=None):
    """The candidates started at the points after ``steps`` training steps' worth of descent, with the
    V at every step's accepted points."""
    candidates, seen = restart_candidates(points), []
    for _ in range(steps):
        candidates = descend(candidates, *vg(candidates.trial), jnp.asarray(1.0), None, scale_tril)
        seen.append(candidates.values)
    return candidates, jnp.stack(seen)


def test_candidates_descend_to_the_minimum_in_the_metrics_coordinates():
    """From points 20-40 units away, the steps between two scouts bring the candidates to the minimum of a
    stretched quadratic V = (1/2) (x - c)^T A (x - c) (curvatures 4 and 1/4) within 1e-3 with the identity
    metric and with a dense metric L matched to it, V never rising along the way (a step that does not
    lower V is refused) and the values kept being V at the points kept."""
    c = jnp.array([3.0, -2.0])
    a = jnp.diag(jnp.array([4.0, 0.25]))

    def vg(x):
        r = x - c
        return 0.5 * jnp.einsum("ki,ij,kj->k", r, a, r), r @ a

    points = jnp.array([[23.0, -2.0], [3.0, 38.0], [-20.0, 20.0]])
    for tril in (None, jnp.diag(jnp.array([0.5, 2.0]))):
        ends, seen = _descend_for(points, vg, SCOUT_EVERY - 1, tril)
        np.testing.assert_allclose(ends.points, jnp.broadcast_to(c, points.shape), atol=1e-3)
        np.testing.assert_allclose(ends.values, vg(ends.points)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ends.grads, vg(ends.points)[1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(seen[0], vg(points)[0])  # the first step evaluates the start itself
        assert bool(jnp.all(jnp.diff(seen, axis=0) <= 0))
    # a trial where V is not finite is refused and the step shrinks
    start = restart_candidates(points)
    after = descend(start, *vg(points), jnp.asarray(1.0))
    refused = descend(after, jnp.full(3, jnp.nan), jnp.zeros((3, 2)), jnp.asarray(1.0))
    np.testing.assert_array_equal(refused.points, after.points)
    assert bool(jnp.all(refused.eta < after.eta))


def _ready_to_scout(state, candidates):
    """The relocation state of three settled components (masses 0.4 / 0.2 / 0.4) on step 200 of a run
    that scouts until step 1000, with the given candidates' descents ended."""
    return state._replace(
        age=jnp.array([300, 300, 300]),
        log_mass=jnp.log(jnp.array([0.4, 0.2, 0.4])),
        loss_fast=jnp.zeros(3),
        loss_slow=jnp.zeros(3),
        steps=jnp.asarray(200),
        scout_until=jnp.asarray(1000),
        ceiling=jnp.asarray(1e6),
        candidates=candidates,
    )


def test_scouts_go_where_the_candidates_descents_end_far_from_every_component():
    """Two modes at x0 = -8 and 8, every component at the first; the candidates' descents end on either
    mode. The scout starts at an end on the unserved mode (x0 near 8), the lowest-V one of those; with the
    components on both modes every end is served and no scout leaves. Fresh candidates replace the
    descended ones on the scouting steps (every SCOUT_EVERY steps), not between."""

    def v(x):
        modes = jnp.array([[-8.0, 0.0], [8.0, 0.0]])
        return -logsumexp(-0.5 * jnp.sum((x[..., None, :] - modes) ** 2, -1), -1)

    vg = jax.vmap(jax.value_and_grad(v))
    locs = jnp.array([[-8.0, 0.0], [-7.9, 0.1], [-8.1, -0.1]])
    state = init_candidates(init_relocation(3, locs=jnp.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])))
    z = jax.random.normal(jax.random.key(0), (SCOUT_CANDIDATES, 2))
    ends, _ = _descend_for(state.origin_loc + SCOUT_SPREAD * state.origin_scale * z, vg, SCOUT_EVERY - 1)
    on_both = jnp.abs(ends.points[:, 0])
    np.testing.assert_allclose(on_both, 8.0, atol=0.05)
    assert bool(jnp.any(ends.points[:, 0] > 0)) and bool(jnp.any(ends.points[:, 0] < 0))
    state = _ready_to_scout(state, ends)
    u = jnp.zeros(3)
    new_locs, _, new_state, sent = scout(jax.random.key(1), locs, u, state)
    assert int(sent) == 1
    np.testing.assert_allclose(new_locs[1], [8.0, 0.0], atol=0.05)
    assert bool(jnp.all(jnp.isinf(new_state.candidates.values)))  # step 200: fresh draws
    assert not np.allclose(new_state.candidates.points, ends.points)
    served = jnp.array([[-8.0, 0.0], [8.0, 0.0], [-8.1, -0.1]])
    assert int(scout(jax.random.key(1), served, u, state)[3]) == 0
    later = scout(jax.random.key(1), locs, u, state._replace(steps=jnp.asarray(201)))
    assert int(later[3]) == 0
    np.testing.assert_array_equal(later[2].candidates.points, ends.points)


def _scout_to_ends(right_end, right_log_weight=0.0):
    """Every component on the left mode of V = -log(e^-|x - l|^2/2 + e^(w - |x - r|^2/2)) (l = (-8, 0),
    r = (8, 0), w = ``right_log_weight``); half the candidates ended on l, half at ``right_end`` (with V
    and grad V there). The scout step's (new locs, ..., number sent)."""

    def v(x):
        modes = jnp.array([[-8.0, 0.0], [8.0, 0.0]])
        log_w = jnp.array([0.0, right_log_weight])
        return -logsumexp(log_w - 0.5 * jnp.sum((x[..., None, :] - modes) ** 2, -1), -1)

    vg = jax.vmap(jax.value_and_grad(v))
    locs = jnp.array([[-8.0, 0.0], [-7.9, 0.1], [-8.1, -0.1]])
    half = SCOUT_CANDIDATES // 2
    points = jnp.concatenate(
        [jnp.broadcast_to(jnp.array([-8.0, 0.0]), (half, 2)), jnp.broadcast_to(right_end, (half, 2))]
    )
    values, grads = vg(points)
    ends = restart_candidates(points)._replace(values=values, grads=grads)
    state = _ready_to_scout(init_candidates(init_relocation(3, locs=locs)), ends)
    return scout(jax.random.key(1), locs, jnp.zeros(3), state)


def test_scouts_do_not_go_to_an_end_still_on_a_slope():
    """The right-hand candidates ended 3 units down the right mode's slope (sigma |grad V| = 3 >
    SCOUT_STATIONARY): no scout leaves for them; 0.1 units from its bottom (0.1 < SCOUT_STATIONARY) one does."""
    assert SCOUT_STATIONARY < 3.0
    assert int(_scout_to_ends(jnp.array([5.0, 0.0]))[3]) == 0
    new_locs, _, _, sent = _scout_to_ends(jnp.array([7.9, 0.0]))
    assert int(sent) == 1
    np.testing.assert_allclose(new_locs[1], [7.9, 0.0], atol=1e-6)


def test_scouts_do_not_go_to_a_basin_whose_bottom_lies_far_above_the_lowest_end():
    """The right mode's bottom lies 30 nats above the left one's (weight e^-30; the margin is SCOUT_DEPTH d = 4
    nats here): no scout leaves for it; 2 nats above, one does."""
    assert SCOUT_DEPTH * 2 < 30.0
    bottom = jnp.array([8.0, 0.0])
    assert int(_scout_to_ends(bottom, -30.0)[3]) == 0
    assert int(_scout_to_ends(bottom, -2.0)[3]) == 1


def test_scouts_find_a_mode_the_start_missed():
    """Two modes 0.5 / 0.5 at x = -8 and 8, every component starting near -8: without scouts all stay
    there; with them the mode at 8 gets its share (balancing grows the scout's basin)."""

    def two(v):
        modes = jnp.array([[-8.0, 0.0], [8.0, 0.0]])
        return logsumexp(-0.5 * jnp.sum((v[..., None, :] - modes) ** 2, -1), -1)

    counts = {}
    for flag in (False, True):
        start = jnp.array([-8.0, 0.0]) + 3.0 * jax.random.normal(jax.random.key(4), (10, 2))
        state = vi.explore_until(vi.init_state(start, 1.0), 1500)
        settings = vi.check(vi.Settings(explore=flag))
        keys = jax.random.split(jax.random.key(5), 3000)
        state, _ = jax.jit(
            lambda s, st=settings, ks=keys: jax.lax.scan(lambda c, k: vi.step(k, c, lambda x, _: -two(x), st), s, ks)
        )(state)
        counts[flag] = int(np.sum(np.asarray(state.params.locs[:, 0]) > 0))
    assert counts[False] == 0 and 4 <= counts[True] <= 6, counts


def test_a_component_on_a_non_finite_target_restarts_instead_of_stopping_the_run():
    """V is NaN beyond x0 = 5: a component started there would reject every step (the paper's method,
    relocate=False, rejects); with relocation it restarts on the best component and the run fits."""

    def half(v):
        return jnp.where(v[0] < 5.0, -0.5 * jnp.sum(v**2), jnp.nan)

    start = jnp.array([[0.0, 0.0], [0.5, 0.0], [-0.5, 0.3], [9.0, 0.0]])
    for flag in (True, False):
        state = vi.init_state(start, 0.5)
        settings = vi.check(vi.Settings(relocate=flag, step_size=0.05))
        keys = jax.random.split(jax.random.key(0), 300)
        state, info = jax.lax.scan(lambda c, k, st=settings: vi.step(k, c, lambda x, _: -half(x), st), state, keys)
        if flag:
            assert not bool(np.any(info.rejected)) and bool(np.all(np.isfinite(info.loss[1:])))
            assert float(jnp.max(state.params.locs[:, 0])) < 5.0  # every component on the finite side
        else:
            assert bool(np.all(info.rejected))


def test_noise_rows_are_distinct_standard_normal_rows_of_the_step_noise():
    """Rows beyond the noise's own are rolled and sign-flipped copies: distinct from every other row,
    still standard normal per coordinate; too few distinct rows (d = 1) gives None."""
    z = jax.random.normal(jax.random.key(0), (10, 6))
    rows = noise_rows(z, 25)
    assert rows.shape == (25, 6)
    np.testing.assert_array_equal(rows[:10], z)
    np.testing.assert_allclose(rows[10:20], -jnp.roll(z, 1, axis=1))
    gaps = jnp.sum((rows[:, None] - rows[None]) ** 2, -1) + jnp.eye(25)
    assert float(jnp.min(gaps)) > 1e-6
    unshared = jax.random.normal(jax.random.key(1), (4, 3, 6))
    np.testing.assert_array_equal(noise_rows(unshared, 12), unshared.reshape(12, 6))
    assert noise_rows(jnp.ones((10, 1)), 20) is not None and noise_rows(jnp.ones((10, 1)), 21) is None
    big = noise_rows(jax.random.normal(jax.random.key(2), (10, 50)), 400)
    assert abs(float(jnp.mean(big))) < 0.02 and abs(float(jnp.std(big)) - 1.0) < 0.02


def _random_draws(settings, n=20, d=5):
    """The number of random-bit generations in one compiled step of mixture_vi with these settings."""

    def log_density(x):
        return -0.5 * jnp.sum(x**2)

    state = vi.init_state(jax.random.normal(jax.random.key(0), (n, d)), 1.0, relocate=settings.relocate)
    jaxpr = jax.make_jaxpr(lambda k, s: vi.step(k, s, lambda x, key: -log_density(x), settings))(
        jax.random.key(1), state
    )
    text = str(jaxpr)
    # JAX's generators, and the threefry hash written out (mixvi.draws.threefry_bits: its key-schedule
    # parity constant appears once per hash)
    return text.count("random_bits") + text.count("threefry2x32") + text.count(str(draws._PARITY))


def test_moves_draw_no_random_numbers_of_their_own():
    """Relocation, balancing and scouts restart components at rows of the step's own noise: the step
    with every move generates exactly as many random numbers as the paper's step without them (each
    generator costs ~0.2 s of compilation)."""
    plain = vi.check(vi.Settings(relocate=False, balance=False, explore=False))
    moves = vi.check(vi.Settings(relocate=True, balance=True, explore=True))
    assert _random_draws(moves) == _random_draws(plain) > 0
