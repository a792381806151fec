"""Long and large runs: chunked gradient evaluation, sharding, data subsampling, checkpoints."""

import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import mixvi
from mixvi.checkpoint import CheckpointError


def logistic(x, y=None, subsample=None):
    w = numpyro.sample("w", dist.Normal(0, 1).expand([x.shape[1]]).to_event(1))
    with numpyro.plate("data", x.shape[0], subsample_size=subsample):
        xb = numpyro.subsample(x, event_dim=1)
        yb = numpyro.subsample(y, event_dim=0) if y is not None else None
        numpyro.sample("y", dist.Bernoulli(logits=xb @ w), obs=yb)


X = jax.random.normal(jax.random.PRNGKey(0), (400, 5))
Y = (X @ jnp.arange(1.0, 6.0) / 3 + jax.random.logistic(jax.random.PRNGKey(1), (400,)) > 0).astype(jnp.float32)


def test_chunked_gradient_evaluation_gives_the_same_update():
    results = []
    for batch in (None, 7):
        guide = mixvi.AutoIsotropicMixture(logistic, n_components=4)
        vi = mixvi.MixVI(logistic, guide, num_samples=5, sample_batch_size=batch)
        results.append(vi.run(jax.random.PRNGKey(2), 20, X, Y, progress_bar=False))
    np.testing.assert_allclose(results[0].params["auto_locs"], results[1].params["auto_locs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0].losses, results[1].losses, rtol=1e-5)


def test_subsampled_likelihood_gradient_is_unbiased():
    guide = mixvi.AutoIsotropicMixture(logistic, n_components=1)
    guide.setup(jax.random.PRNGKey(0), X, Y, 40)
    v_sub = guide.potential_fn(X, Y, 40)
    full = mixvi.AutoIsotropicMixture(logistic, n_components=1)
    full.setup(jax.random.PRNGKey(0), X, Y)
    v_full = full.potential_fn(X, Y)
    z = jnp.array([0.3, -0.2, 0.5, 0.1, -0.4])
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    grads = jax.vmap(jax.grad(v_sub), (None, 0))(z, keys)
    g_full = jax.grad(v_full)(z, keys[0])
    se = grads.std(0) / np.sqrt(len(keys))
    assert bool(jnp.all(jnp.abs(grads.mean(0) - g_full) < 4 * se + 1e-4)), (grads.mean(0), g_full, se)
    # and a single subsample is not the full gradient (the test has teeth)
    assert float(jnp.max(jnp.abs(grads[0] - g_full))) > 10 * float(jnp.max(se))


def test_responsibilities_stay_normalised_at_d_1e5():
    d, n = 100_000, 4
    locs = 30.0 * jax.random.normal(jax.random.PRNGKey(0), (n, d)) / jnp.sqrt(d) * jnp.arange(1, n + 1)[:, None]
    q = mixvi.IsotropicMixture(locs, jnp.array([1.0, 0.5, 2.0, 1.0]))
    x = locs + q.scales[:, None] * jax.random.normal(jax.random.PRNGKey(1), (n, d))
    r = q.responsibilities(x)
    assert bool(jnp.all(jnp.isfinite(r)))
    np.testing.assert_allclose(r.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.diag(r), 1.0, atol=1e-4)
    assert bool(jnp.all(jnp.isfinite(q.log_prob(x))))


def _fresh(method="ibw"):
    guide = mixvi.AutoIsotropicMixture(logistic, n_components=3)
    return mixvi.MixVI(logistic, guide, method=method, num_samples=4)


def test_checkpoint_interrupt_and_resume_equal_the_uninterrupted_run(tmp_path):
    full = _fresh().run(jax.random.PRNGKey(4), 100, X, Y, progress_bar=False)
    path = tmp_path / "run.npz"

    def stop_at_40(state, losses, done):
        if done == 40:
            raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match="interrupted"):
        part = _fresh().run(jax.random.PRNGKey(4), 100, X, Y, progress_bar=False, checkpoint=path,
                            checkpoint_every=20, callback=stop_at_40)
    assert len(part.losses) == 40
    rest = _fresh().resume(path, X, Y, progress_bar=False)
    for k in full.params:
        np.testing.assert_array_equal(full.params[k], rest.params[k])
    np.testing.assert_array_equal(full.losses, rest.losses)
    assert int(rest.state.step) == 100


def test_hard_kill_then_resume(tmp_path):
    """A process killed without cleanup (os._exit) mid-run leaves a valid checkpoint to resume from."""
    path = tmp_path / "killed.npz"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.getcwd()!r})
        import jax
        import tests.conftest  # the suite's compile level, as in the process that compares
        from tests.test_scale import X, Y, _fresh
        def die(state, losses, done):
            if done == 60:
                os._exit(3)
        _fresh().run(jax.random.PRNGKey(4), 100, X, Y, progress_bar=False, checkpoint={str(path)!r},
                     checkpoint_every=30, callback=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    rest = _fresh().resume(path, X, Y, progress_bar=False)
    full = _fresh().run(jax.random.PRNGKey(4), 100, X, Y, progress_bar=False)
    np.testing.assert_array_equal(full.params["auto_locs"], rest.params["auto_locs"])
    np.testing.assert_array_equal(full.losses, rest.losses)


def test_bad_checkpoints_are_refused(tmp_path):
    path = tmp_path / "c.npz"
    _fresh().run(jax.random.PRNGKey(4), 10, X, Y, progress_bar=False, checkpoint=path)
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        _fresh().resume(tmp_path / "trunc.npz", X, Y)
    with pytest.raises(CheckpointError, match="method"):
        _fresh("md").resume(path, X, Y)
    with pytest.raises(CheckpointError, match="latent_dim|sites"):
        _fresh().resume(path, X[:, :3], Y)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _fresh().resume(tmp_path / "missing.npz", X, Y)


SHARDED = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    sys.path.insert(0, os.getcwd())
    import jax, numpy as np
    import mixvi
    from tests.test_scale import X, Y, logistic
    assert jax.device_count() == 4
    out = {}
    for name, mesh in (("sharded", "auto"), ("single", None)):
        guide = mixvi.AutoIsotropicMixture(logistic, n_components=8)
        vi = mixvi.MixVI(logistic, guide, num_samples=4, mesh=mesh)
        r = vi.run(jax.random.PRNGKey(5), 30, X, Y, progress_bar=False)
        out[name] = np.asarray(r.params["auto_locs"]).tolist()
        out[name + "_devices"] = len(r.state.core.params.locs.sharding.device_set)
    # n_components='auto' is settled at set-up, and the mesh with it (init places the state on it)
    guide = mixvi.AutoIsotropicMixture(logistic)
    vi = mixvi.MixVI(logistic, guide, num_samples=4)
    state = vi.init(jax.random.PRNGKey(5), X, Y)
    out["auto_n"] = guide.n_components
    out["auto_devices"] = len(state.core.params.locs.sharding.device_set)
    three = jax.sharding.Mesh(np.asarray(jax.devices()[:3]), ("components",))
    vi = mixvi.MixVI(logistic, mixvi.AutoIsotropicMixture(logistic), num_samples=4, mesh=three)
    try:
        vi.init(jax.random.PRNGKey(5), X, Y)
    except ValueError as err:
        out["three_error"] = str(err)
    print(json.dumps(out))
""")


def test_sharded_run_equals_single_device_run():
    proc = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, timeout=300, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sharded_devices"] == 4 and out["single_devices"] == 1
    assert out["auto_n"] in (10, 20) and out["auto_devices"] == (4 if out["auto_n"] % 4 == 0 else 1)
    assert out["three_error"] == mixvi.vi.BAD_MESH_SIZE.format(out["auto_n"], 3)
    np.testing.assert_allclose(out["sharded"], out["single"], rtol=1e-4, atol=1e-5)


def test_float64_opt_in():
    with jax.enable_x64(True):
        x64, y64 = X.astype(jnp.float64), Y.astype(jnp.float64)
        guide = mixvi.AutoIsotropicMixture(logistic, n_components=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = mixvi.MixVI(logistic, guide, num_samples=4).run(jax.random.PRNGKey(0), 10, x64, y64, progress_bar=False)
        assert r.params["auto_locs"].dtype == jnp.float64
