"""The metric's root R (identity, diagonal, dense, low-rank) applied to rows, against its dense matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixvi import metric_root
from mixvi.lowrank import LowRankMetric


def _kinds(d: int, rng: np.random.Generator) -> dict:
    """(metric, scale_tril, the dense root R) for every kind of metric."""
    diag = np.exp(rng.normal(size=d))
    tril = np.tril(rng.normal(size=(d, d)), -1) + np.diag(np.exp(rng.normal(size=d)) * np.sign(rng.normal(size=d)))
    q, _ = np.linalg.qr(rng.normal(size=(d, 2)))
    log_diag, kappa = rng.normal(size=d) * 0.5, rng.normal(size=2)
    lowrank = LowRankMetric(jnp.asarray(log_diag), jnp.asarray(q), jnp.asarray(kappa))
    p = np.eye(d) + q @ np.diag(np.expm1(kappa)) @ q.T
    return {
        "identity": (None, None, np.eye(d)),
        "diagonal": (jnp.asarray(diag), None, np.diag(np.sqrt(diag))),
        "dense": (None, jnp.asarray(tril), tril),
        "lowrank": (lowrank, None, np.diag(np.exp(0.5 * log_diag)) @ p),
    }


@pytest.mark.parametrize("kind", ["identity", "diagonal", "dense", "lowrank"])
def test_root_operations_match_the_dense_root(kind):
    """R y, R^T g, R^(-1) x, R^(-T) s on rows of any leading shape, and log abs(det R)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        metric, tril, root = _kinds(5, rng)[kind]
        rows = rng.normal(size=(3, 4, 5))
        flat = rows.reshape(-1, 5)
        cases = [
            (metric_root.apply, flat @ root.T),
            (metric_root.transpose_apply, flat @ root),
            (metric_root.solve, np.linalg.solve(root, flat.T).T),
            (metric_root.transpose_solve, np.linalg.solve(root.T, flat.T).T),
        ]
        for fn, expected in cases:
            out = np.asarray(fn(jnp.asarray(rows), metric, tril))
            assert out.shape == rows.shape
            np.testing.assert_allclose(out.reshape(-1, 5), expected, rtol=1e-9, atol=1e-12, err_msg=fn.__name__)
        np.testing.assert_allclose(
            metric_root.log_det(metric, tril, jnp.float64), np.linalg.slogdet(root)[1], rtol=1e-10, atol=1e-12
        )


def test_the_transpose_is_the_adjoint_of_the_root():
    """<R y, g> = <y, R^T g>: what the scouts' and the steps' pull-backs rely on."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        for metric, tril, _ in _kinds(6, rng).values():
            y, g = jnp.asarray(rng.normal(size=(4, 6))), jnp.asarray(rng.normal(size=(4, 6)))
            left = jnp.sum(metric_root.apply(y, metric, tril) * g)
            right = jnp.sum(y * metric_root.transpose_apply(g, metric, tril))
            np.testing.assert_allclose(left, right, rtol=1e-10)
