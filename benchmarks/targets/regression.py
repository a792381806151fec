"""Bayesian regressions on scikit-learn's bundled data sets (no download at run time) and their NUTS
reference posteriors, cached on disk under a content hash.

- ``logreg-breast``: logistic regression on the breast-cancer data (569 x 30), features standardised
  with the training split's mean and sd, no intercept, prior w ~ N(0, 100 I), 50/50 train/test split.
- ``softmax-wine``: softmax regression on the wine data (178 x 13, 3 classes), W (13, 3) = 39
  parameters, standardised features, no intercept, prior W ~ N(0, 10 I) (variance 10), 50/50 split.

scikit-learn (the ``[bench]`` extra) is imported only when one of these targets is built.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from benchmarks.targets.base import Target

SPLIT_SEED = 0
"""Seed of the 50/50 train/test split (numpy default_rng permutation)."""
NUTS_SETTINGS = {"num_chains": 4, "num_warmup": 1000, "num_samples": 1000, "seed": 0}


def _split(x: np.ndarray, y: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, ...]:
    perm = np.random.default_rng(seed).permutation(len(y))
    n_train = len(y) // 2
    tr, te = perm[:n_train], perm[n_train:]
    mean, sd = x[tr].mean(0), x[tr].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return (x[tr] - mean) / sd, y[tr], (x[te] - mean) / sd, y[te]


def load_dataset(name: str) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test) as float32 / int32 numpy arrays, standardised, 50/50 split."""
    try:
        from sklearn import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the regression targets need scikit-learn: pip install 'mixvi[bench]'") from err
    loader = {"breast": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]
    data = loader()
    xtr, ytr, xte, yte = _split(np.asarray(data.data, float), np.asarray(data.target))
    return xtr.astype(np.float32), ytr.astype(np.int32), xte.astype(np.float32), yte.astype(np.int32)


def logistic_model(x: jax.Array, y: jax.Array | None = None, prior_var: float = 100.0) -> None:
    """w ~ N(0, prior_var I_p); y_i ~ Bernoulli(sigmoid(x_i . w)); no intercept."""
    w = numpyro.sample("w", dist.Normal(jnp.zeros(x.shape[1]), jnp.sqrt(prior_var)).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def softmax_model(x: jax.Array, y: jax.Array | None = None, num_classes: int = 3, prior_var: float = 10.0) -> None:
    """W ~ N(0, prior_var I) of shape (p, C); y_i ~ Categorical(softmax(x_i W)); no intercept."""
    w = numpyro.sample("w", dist.Normal(jnp.zeros((x.shape[1], num_classes)), jnp.sqrt(prior_var)).to_event(2))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=x @ w), obs=y)


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where reference posteriors are cached: ``path``, else $MIXVI_CACHE, else ~/.cache/mixvi."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("MIXVI_CACHE", Path.home() / ".cache" / "mixvi"))


def content_hash(name: str, *arrays: np.ndarray, **settings) -> str:
    """sha256 over the target name, the data bytes and shapes, the settings and the numpyro version."""
    h = hashlib.sha256(name.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    h.update(repr(sorted(settings.items())).encode())
    h.update(numpyro.__version__.encode())
    return h.hexdigest()[:16]


def nuts_reference(
    name: str, model, args: tuple, *, cache: str | os.PathLike | None = None, settings: dict | None = None
) -> np.ndarray:
    """Flattened posterior draws of site ``w`` from NumPyro NUTS (4 chains, 1000 warm-up + 1000 draws
    each by default), cached as ``{cache}/nuts_{name}_{hash}.npz``; the hash covers the data, the
    settings and the numpyro version, so a change to any of them reruns NUTS."""
    settings = dict(NUTS_SETTINGS if settings is None else settings)
    key = content_hash(name, *[np.asarray(a) for a in args], **settings)
    path = cache_dir(cache) / f"nuts_{name}_{key}.npz"
    if path.exists():
        with np.load(path) as f:
            return f["w"]
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(
        NUTS(model), num_warmup=settings["num_warmup"], num_samples=settings["num_samples"],
        num_chains=settings["num_chains"], chain_method="vectorized", progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(settings["seed"]), *args)
    w = np.asarray(mcmc.get_samples()["w"]).reshape(settings["num_chains"] * settings["num_samples"], -1)
    from numpyro.diagnostics import summary

    rhat = float(np.nanmax(summary(mcmc.get_samples(group_by_chain=True))["w"]["r_hat"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, w=w, max_rhat=rhat)
    os.replace(tmp, path)
    return w


def make_logreg_breast(*, cache: str | os.PathLike | None = None, nuts: dict | None = None) -> Target:
    """Logistic regression on breast cancer (d = 30), with a NUTS reference (lazy, cached)."""
    xtr, ytr, xte, yte = load_dataset("breast")
    args = (jnp.asarray(xtr), jnp.asarray(ytr))
    x_test = jnp.asarray(xte)

    def predict_log_prob(z: jax.Array) -> jax.Array:
        logits = z @ x_test.T  # (S, n)
        return jnp.stack([jax.nn.log_sigmoid(-logits), jax.nn.log_sigmoid(logits)], -1)

    return Target(
        name="logreg-breast", family="regression", model=logistic_model, dim=30, args=args, log_z=None,
        predict_log_prob=predict_log_prob, test_labels=yte,
        reference_fn=lambda: nuts_reference("logreg-breast", logistic_model, args, cache=cache, settings=nuts),
        info={"site": "w", "site_shape": (30,), "n_train": len(ytr), "n_test": len(yte), "prior_var": 100.0},
    )


def make_softmax_wine(*, cache: str | os.PathLike | None = None, nuts: dict | None = None) -> Target:
    """Softmax regression on wine (13 x 3 = 39 parameters), with a NUTS reference (lazy, cached)."""
    xtr, ytr, xte, yte = load_dataset("wine")
    args = (jnp.asarray(xtr), jnp.asarray(ytr))
    x_test = jnp.asarray(xte)

    def predict_log_prob(z: jax.Array) -> jax.Array:
        w = jnp.reshape(z, z.shape[:-1] + (13, 3))
        return jax.nn.log_softmax(jnp.einsum("nj,sjc->snc", x_test, w), -1)

    return Target(
        name="softmax-wine", family="regression", model=softmax_model, dim=39, args=args, log_z=None,
        predict_log_prob=predict_log_prob, test_labels=yte,
        reference_fn=lambda: nuts_reference("softmax-wine", softmax_model, args, cache=cache, settings=nuts),
        info={"site": "w", "site_shape": (13, 3), "n_train": len(ytr), "n_test": len(yte), "prior_var": 10.0},
    )
