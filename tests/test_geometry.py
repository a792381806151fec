"""mixvi.geometry: the paper's updates on typed parameters, the auto step, and the settings check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixvi import geometry
from mixvi.geometry import AutoStep, MixtureGradient, MixtureParams, dense_metric_step, init_step_size, update

N, D = 4, 3
METHODS = ["ibw", "md", "ngd", "means"]


def _problem(dtype=jnp.float64, grad_scale=1.0):
    """Random parameters and expectations small enough that no guard fires at gamma = 0.05."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(1), 4)
    locs = jax.random.normal(k1, (N, D), dtype)
    u = 0.2 * jax.random.normal(k2, (N,), dtype)
    gbar = grad_scale * jax.random.normal(k3, (N, D), dtype)
    lam = grad_scale * jax.random.normal(k4, (N,), dtype)
    return MixtureParams(locs, u), MixtureGradient(gbar, lam)


def _paper_step(method, m, eps, gbar, lam, gamma):
    """The updates as written in the paper, in (m, eps) coordinates."""
    d = m.shape[-1]
    if method == "ibw":
        return m - gamma * gbar, (1 - gamma * lam / d) ** 2 * eps
    if method == "md":
        return m - gamma * gbar, eps * jnp.exp(-gamma * lam / d)
    if method == "ngd":
        new_eps = 1 / (1 / eps + gamma * lam / d)
        return m - gamma * new_eps[:, None] * gbar, new_eps
    return m - gamma * gbar, eps


@pytest.mark.parametrize("method", METHODS)
def test_fixed_step_reproduces_the_paper_update(method):
    """A float step_size applies the paper's update for every component from the same iterate."""
    with jax.enable_x64(True):
        params, grad = _problem()
        gamma = 0.05
        state = geometry.init_step_size(gamma, dtype=jnp.float64)
        new, new_state, info = geometry.update(params, grad, state, method=method, step_size=gamma)
        ref_m, ref_eps = _paper_step(
            method, params.locs, jnp.exp(2 * params.log_scales), grad.mean_grad, grad.lam, gamma
        )
        np.testing.assert_allclose(new.locs, ref_m, rtol=1e-13)
        np.testing.assert_allclose(jnp.exp(2 * new.log_scales), ref_eps, rtol=1e-13)
        assert new.log_metric is None and new.logits is None
        assert float(info.step_size) == gamma
        assert int(info.num_clipped) == 0 and not bool(info.rejected)
        assert float(new_state.eta) == gamma


@pytest.mark.parametrize("method", ["ibw", "md", "ngd"])
def test_fixed_step_converges_to_the_gaussian_target(method):
    """With the exact expectations of N = 1 on N(mu, s^2 I), the fixed-step iteration reaches m = mu, eps = s^2."""
    with jax.enable_x64(True):
        mu = jnp.array([1.0, -2.0, 0.5])
        s2 = 1.5**2
        d = mu.shape[0]
        gamma = 0.5

        def step(_, params):
            eps = jnp.exp(2 * params.log_scales)
            grad = MixtureGradient((params.locs - mu) / s2, d * (1 / s2 - 1 / eps))
            state = geometry.init_step_size(gamma, dtype=jnp.float64)
            return geometry.update(params, grad, state, method=method, step_size=gamma)[0]

        start = MixtureParams(jnp.array([[4.0, 3.0, -1.0]]), jnp.array([jnp.log(0.3)]))
        final = jax.lax.fori_loop(0, 400, step, start)
        np.testing.assert_allclose(final.locs[0], mu, rtol=1e-12)
        np.testing.assert_allclose(jnp.exp(2 * final.log_scales[0]), s2, rtol=1e-12)


def test_exact_fixed_point_is_left_unchanged():
    """At m = mu, eps = s^2 the exact expectations vanish and every method leaves the parameters as they are."""
    with jax.enable_x64(True):
        mu, s2 = jnp.array([[0.3, -0.7]]), 0.8
        params = MixtureParams(mu, jnp.array([0.5 * jnp.log(s2)]))
        grad = MixtureGradient(jnp.zeros((1, 2)), 2 * (1 / s2 - 1 / jnp.exp(2 * params.log_scales)))
        for method in METHODS:
            new = geometry.update(
                params, grad, geometry.init_step_size(0.7, dtype=jnp.float64), method=method, step_size=0.7
            )[0]
            np.testing.assert_allclose(new.locs, params.locs, rtol=0, atol=1e-15)
            np.testing.assert_allclose(new.log_scales, params.log_scales, rtol=0, atol=1e-15)


def _with_extras(params, grad):
    params = params._replace(log_metric=jnp.array([0.2, -0.1, 0.3]), logits=jnp.log(jnp.full((N,), 1.0 / N)))
    grad = grad._replace(metric_term=jnp.array([0.5, -1.0, 0.25]), weight_excess=jnp.array([0.1, -0.2, 0.3, -0.2]))
    return params, grad


@pytest.mark.parametrize("bad", ["mean_grad", "lam", "metric_term", "weight_excess", "loss"])
def test_non_finite_input_rejects_the_step_and_halves_eta(bad):
    """A NaN in any expectation or in the loss leaves every parameter unchanged, halves eta and counts the rejection."""
    params, grad = _with_extras(*_problem(jnp.float32))
    loss = jnp.float32(1.0)
    if bad == "loss":
        loss = jnp.float32(jnp.nan)
    else:
        field = getattr(grad, bad)
        grad = grad._replace(**{bad: field.at[0].set(jnp.nan)})
    auto = AutoStep(eta0=0.1, eta_min=0.01)
    state = geometry.init_step_size("auto", auto)
    new, new_state, info = geometry.update(params, grad, state, method="ibw", step_size="auto", auto=auto, loss=loss)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert bool(info.rejected)
    assert int(info.num_clipped) == 0
    np.testing.assert_allclose(new_state.eta, 0.05, rtol=1e-6)
    assert int(new_state.num_rejected) == 1
    assert bool(jnp.isnan(new_state.loss_avg)) and bool(jnp.isnan(new_state.loss_slow))


def test_consecutive_rejections_count_clip_eta_and_reset_after_a_good_step():
    """Each rejected step halves eta down to eta_min and increments num_rejected; a good step resets the count."""
    params, grad = _problem(jnp.float32)
    bad = grad._replace(mean_grad=grad.mean_grad.at[1, 2].set(jnp.inf))
    auto = AutoStep(eta0=0.1, eta_min=0.01)
    state = geometry.init_step_size("auto", auto)
    expected = [0.05, 0.025, 0.0125, 0.01, 0.01]
    for k, eta in enumerate(expected, start=1):
        new, state, info = geometry.update(params, bad, state, step_size="auto", auto=auto, loss=jnp.float32(1.0))
        assert bool(info.rejected)
        np.testing.assert_allclose(state.eta, eta, rtol=1e-6)
        assert int(state.num_rejected) == k
        np.testing.assert_array_equal(new.locs, params.locs)
    new, state, info = geometry.update(params, grad, state, step_size="auto", auto=auto, loss=jnp.float32(1.0))
    assert not bool(info.rejected)
    assert int(state.num_rejected) == 0
    assert not np.array_equal(new.locs, params.locs)


def test_fixed_step_rejection_keeps_the_step_and_counts():
    """Under a fixed step a rejected step keeps gamma as it is and still counts consecutive rejections."""
    params, grad = _problem(jnp.float32)
    bad = grad._replace(lam=grad.lam.at[3].set(jnp.nan))
    state = geometry.init_step_size(0.05)
    for k in (1, 2):
        new, state, info = geometry.update(params, bad, state, step_size=0.05)
        assert bool(info.rejected) and int(state.num_rejected) == k
        np.testing.assert_allclose(state.eta, 0.05)
        np.testing.assert_array_equal(new.log_scales, params.log_scales)
    _, state, _ = geometry.update(params, grad, state, step_size=0.05)
    assert int(state.num_rejected) == 0


@pytest.mark.parametrize("method", METHODS)
def test_auto_step_stays_in_the_trust_region_and_counts_clipped(method):
    """Under 'auto' with huge gradients each mean moves at most trust sigma_i sqrt(d), each sigma ratio lies in [1-trust, 1+trust]."""
    with jax.enable_x64(True):
        params, grad = _problem()
        # components 0 and 1 get huge expectations (of both signs for lambda), 2 and 3 tiny ones
        scale = jnp.array([1e6, 1e6, 1e-4, 1e-4])
        lam_sign = jnp.array([1.0, -1.0, 1.0, -1.0])
        grad = MixtureGradient(grad.mean_grad * scale[:, None], jnp.abs(grad.lam) * lam_sign * scale)
        auto = AutoStep(trust=0.3)
        state = geometry.init_step_size("auto", auto, dtype=jnp.float64)
        new, _, info = geometry.update(params, grad, state, method=method, step_size="auto", auto=auto)
        sigma = jnp.exp(params.log_scales)
        move = jnp.linalg.norm(new.locs - params.locs, axis=-1)
        radius = auto.trust * sigma * jnp.sqrt(D)
        assert bool(jnp.all(move <= radius * (1 + 1e-12)))
        np.testing.assert_allclose(move[:2], radius[:2], rtol=1e-12)  # the huge steps are cut to the boundary
        ratio = jnp.exp(new.log_scales - params.log_scales)
        assert bool(jnp.all(ratio >= 1 - auto.trust - 1e-12)) and bool(jnp.all(ratio <= 1 + auto.trust + 1e-12))
        if method != "means":
            # lambda_0 > 0 shrinks sigma_0 to the lower edge, lambda_1 < 0 grows sigma_1 to the upper edge
            np.testing.assert_allclose(ratio[:2], [1 - auto.trust, 1 + auto.trust], rtol=1e-12)
        assert int(info.num_clipped) == 2


@pytest.mark.parametrize("method", METHODS)
def test_auto_step_is_scale_free(method):
    """Rescaling x -> c x (locs c m, log_scales u + log c, gbar / c, lambda / c^2) rescales the auto step exactly."""
    with jax.enable_x64(True):
        params, grad = _problem()
        scale = jnp.array([20.0, 20.0, 0.1, 0.1])  # components 0 and 1 hit the trust region, 2 and 3 do not
        grad = MixtureGradient(grad.mean_grad * scale[:, None], grad.lam * scale)
        c = 3.7
        scaled_params = MixtureParams(c * params.locs, params.log_scales + jnp.log(c))
        scaled_grad = MixtureGradient(grad.mean_grad / c, grad.lam / c**2)
        auto = AutoStep(eta0=0.3, trust=0.4)
        state = geometry.init_step_size("auto", auto, dtype=jnp.float64)
        loss = jnp.float64(2.5)
        new, new_state, info = geometry.update(
            params, grad, state, method=method, step_size="auto", auto=auto, loss=loss
        )
        snew, snew_state, sinfo = geometry.update(
            scaled_params, scaled_grad, state, method=method, step_size="auto", auto=auto, loss=loss
        )
        np.testing.assert_allclose(snew.locs, c * new.locs, rtol=1e-12)
        np.testing.assert_allclose(snew.log_scales, new.log_scales + jnp.log(c), rtol=1e-12)
        assert int(sinfo.num_clipped) == int(info.num_clipped)
        assert float(snew_state.eta) == float(new_state.eta)
        if method != "means":
            assert int(info.num_clipped) == 2  # the comparison covers clipped and free components


@pytest.mark.parametrize("method", METHODS)
def test_metric_step_is_shape_only(method):
    """The metric step keeps mean(log D) = 0 and moves its mean into the scales without changing sigma_i^2 D."""
    with jax.enable_x64(True):
        params, grad = _problem()
        log_metric = jnp.array([0.4, -0.1, 0.6])  # mean 0.3: the shift is not trivial
        t = jnp.array([0.5, -1.0, 0.25])
        params = params._replace(log_metric=log_metric)
        grad = grad._replace(metric_term=t)
        gamma, eta_d = 0.05, 0.2
        state = geometry.init_step_size(gamma, dtype=jnp.float64)
        new, _, _ = geometry.update(params, grad, state, method=method, step_size=gamma, metric_step_size=eta_d)
        np.testing.assert_allclose(jnp.mean(new.log_metric), 0.0, atol=1e-15)
        # before the split: log D + dlog and the paper's step, whose mean step is m - gamma_mean D gbar
        log_d = log_metric - eta_d * (t - jnp.mean(t))
        metric = jnp.exp(log_metric)
        m_ref, eps_ref = _paper_step(
            method, params.locs, jnp.exp(2 * params.log_scales), grad.mean_grad * metric, grad.lam, gamma
        )
        cov = jnp.exp(2 * new.log_scales)[:, None] * jnp.exp(new.log_metric)[None, :]
        np.testing.assert_allclose(cov, eps_ref[:, None] * jnp.exp(log_d)[None, :], rtol=1e-13)
        np.testing.assert_allclose(new.locs, m_ref, rtol=1e-13)


def test_metric_step_at_zero_term_only_normalises():
    """With t constant across coordinates the metric's shape does not change: only its mean moves into the scales."""
    with jax.enable_x64(True):
        params, grad = _problem()
        params = params._replace(log_metric=jnp.array([1.0, 0.0, 2.0]))
        grad = grad._replace(metric_term=jnp.full((D,), 7.0))
        state = geometry.init_step_size(0.05, dtype=jnp.float64)
        new, _, _ = geometry.update(params, grad, state, method="means", step_size=0.05)
        np.testing.assert_allclose(new.log_metric, [0.0, -1.0, 1.0], atol=1e-15)
        np.testing.assert_allclose(new.log_scales, params.log_scales + 0.5, rtol=1e-15)


def test_learned_weights_take_the_normalised_fisher_rao_step():
    """Logits become log w - gamma (f - sum_j w_j f_j), renormalised, so logsumexp stays 0."""
    with jax.enable_x64(True):
        params, grad = _problem()
        w = jnp.array([0.1, 0.2, 0.3, 0.4])
        f = jnp.array([1.0, -0.5, 2.0, 0.25])
        excess = f - jnp.sum(w * f)
        params = params._replace(logits=jnp.log(w))
        grad = grad._replace(weight_excess=excess)
        gamma = 0.3
        state = geometry.init_step_size(gamma, dtype=jnp.float64)
        logits = params.logits
        for _ in range(3):
            new, _, _ = geometry.update(params._replace(logits=logits), grad, state, method="md", step_size=gamma)
            ref = logits - gamma * excess
            ref = ref - jax.scipy.special.logsumexp(ref)
            np.testing.assert_allclose(new.logits, ref, rtol=1e-13)
            np.testing.assert_allclose(jax.scipy.special.logsumexp(new.logits), 0.0, atol=1e-15)
            logits = new.logits
        # the weights are w_i exp(-gamma k excess_i) / Z after k steps with a fixed excess
        ref_w = w * jnp.exp(-3 * gamma * excess)
        np.testing.assert_allclose(jnp.exp(logits), ref_w / jnp.sum(ref_w), rtol=1e-13)


def test_auto_eta_grows_on_a_falling_loss_and_shrinks_on_a_flat_one():
    """Under 'auto' eta is multiplied by grow on a steady downward trend and by shrink on a flat loss."""
    with jax.enable_x64(True):
        params, grad = _problem(grad_scale=1e-3)
        auto = AutoStep(eta0=0.1, eta_max=10.0)
        state = geometry.init_step_size("auto", auto, dtype=jnp.float64)
        _, first, _ = geometry.update(params, grad, state, step_size="auto", auto=auto, loss=jnp.float64(100.0))
        np.testing.assert_allclose(first.eta, 0.1 * auto.grow, rtol=1e-14)  # the first loss counts as a trend
        falling = state
        for k in range(200):
            previous = falling.eta
            _, falling, _ = geometry.update(
                params, grad, falling, step_size="auto", auto=auto, loss=jnp.float64(100.0 - k)
            )
        np.testing.assert_allclose(falling.eta, previous * auto.grow, rtol=1e-14)
        flat = first
        for _ in range(5):
            previous = flat.eta
            _, flat, _ = geometry.update(params, grad, flat, step_size="auto", auto=auto, loss=jnp.float64(100.0))
            np.testing.assert_allclose(flat.eta, previous * auto.shrink, rtol=1e-14)


def test_auto_eta_stays_within_its_bounds():
    """eta never leaves [eta_min, eta_max]: growth stops at eta_max."""
    params, grad = _problem(jnp.float32, grad_scale=1e-3)
    auto = AutoStep(eta0=0.5, eta_max=0.5)
    state = geometry.init_step_size("auto", auto)
    _, state, _ = geometry.update(params, grad, state, step_size="auto", auto=auto, loss=jnp.float32(1.0))
    np.testing.assert_allclose(state.eta, 0.5)


def test_init_step_size_starts_from_eta0_or_the_fixed_step():
    """The initial state holds eta0 under 'auto' (or the fixed step), NaN running averages and no rejections."""
    auto = AutoStep(eta0=0.25)
    s = geometry.init_step_size("auto", auto)
    assert float(s.eta) == 0.25 and s.eta.dtype == jnp.float32
    assert bool(jnp.isnan(s.loss_avg)) and bool(jnp.isnan(s.loss_slow))
    assert float(s.loss_var) == 0.0 and int(s.num_rejected) == 0 and s.num_rejected.dtype == jnp.int32
    assert float(geometry.init_step_size(0.125, auto).eta) == 0.125


def test_check_settings_accepts_valid_settings():
    """check_settings returns True for 'auto' and False for a positive float."""
    assert geometry.check_settings("ibw", "auto", AutoStep()) is True
    assert geometry.check_settings("ngd", 0.1, AutoStep()) is False
    assert geometry.check_settings("means", 3, AutoStep(trust=0.99)) is False


@pytest.mark.parametrize(
    ("method", "step_size", "trust", "match"),
    [
        ("bw", "auto", 0.5, "unknown method 'bw'"),
        ("ibw", 0.0, 0.5, "step_size must be a positive float or 'auto', got 0.0"),
        ("ibw", -0.1, 0.5, "got -0.1"),
        ("ibw", float("nan"), 0.5, "got nan"),
        ("ibw", "fast", 0.5, "got 'fast'"),
        ("ibw", True, 0.5, "got True"),
        ("ibw", "auto", 0.0, "trust must lie in \\(0, 1\\)"),
        ("ibw", "auto", 1.0, "got 1.0"),
        ("md", 0.1, -0.2, "trust must lie"),
    ],
)
def test_check_settings_names_the_problem(method, step_size, trust, match):
    """An unknown method, a step that is not positive or 'auto', or a trust outside (0, 1) raises ValueError."""
    with pytest.raises(ValueError, match=match):
        geometry.check_settings(method, step_size, AutoStep(trust=trust))


def test_component_step_rejects_an_unknown_method():
    """component_step raises ValueError for a method it does not know."""
    params, grad = _problem(jnp.float32)
    with pytest.raises(ValueError, match="choose one of 'ibw', 'md', 'ngd', 'means'"):
        geometry.component_step("adam", params.locs, params.log_scales, grad.mean_grad, grad.lam, 0.1)


def test_dense_metric_reaches_a_correlated_gaussian_exactly():
    """With the exact expectations of N = 1 on N(mu, Sigma), fixed steps drive m to mu and sigma^2 L L^T to Sigma."""
    with jax.enable_x64(True):
        d = 4
        rng = np.random.default_rng(1)
        root = rng.normal(size=(d, d))
        sigma = jnp.asarray(root @ root.T + 0.5 * np.eye(d))
        prec = jnp.linalg.inv(sigma)
        mu = jnp.asarray(rng.normal(size=d))
        params = MixtureParams(jnp.zeros((1, d)), jnp.zeros(1), metric_tril=jnp.eye(d))
        state = init_step_size(0.5, dtype=jnp.float64)
        for _ in range(300):
            tril, eps = params.metric_tril, jnp.exp(2 * params.log_scales[0])
            whitened = tril.T @ prec @ tril
            grad = MixtureGradient(
                ((params.locs[0] - mu) @ prec)[None],  # E[grad_x psi] = P (m - mu)
                jnp.array([(eps * jnp.trace(whitened) - d) / eps]),
                eps * whitened - jnp.eye(d),  # S = E[sigma z grad_y psi^T]
            )
            params, state, info = update(params, grad, state, method="ibw", step_size=0.5, metric_step_size=0.5)
        cov = jnp.exp(2 * params.log_scales[0]) * params.metric_tril @ params.metric_tril.T
        np.testing.assert_allclose(cov, sigma, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(params.locs[0], mu, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(jnp.prod(jnp.diag(params.metric_tril)), 1.0, rtol=1e-12)
        assert not bool(info.rejected)


def test_dense_metric_step_keeps_a_lower_triangular_unit_determinant_factor():
    """Any Stein matrix gives a new L that is lower triangular with a positive diagonal and det L = 1."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        tril = jnp.asarray(np.tril(rng.normal(size=(5, 5))) + 3 * np.eye(5))
        tril = tril / jnp.prod(jnp.diag(tril)) ** (1 / 5)
        new, shift = dense_metric_step(tril, jnp.asarray(50 * rng.normal(size=(5, 5))), jnp.asarray(0.3), None)
        np.testing.assert_allclose(new, jnp.tril(new))
        assert bool(jnp.all(jnp.diag(new) > 0))
        np.testing.assert_allclose(jnp.prod(jnp.diag(new)), 1.0, rtol=1e-12)
        assert bool(jnp.isfinite(shift))
