"""Out-of-context reasoning (OCR) in a one-layer attention-only transformer.

Reproduces the synthetic part of Huang, Zhu, Guo, Jiao, Sojoudi, Jordan, Russell, Mei,
"Generalization or Hallucination? Understanding Out-of-Context Reasoning in Transformers"
(NeurIPS 2025, arXiv 2506.10887) on mixvi's gradient machinery: the optimiser is an optax
``GradientTransformation`` (plain full-batch gradient descent ``optax.sgd`` by default), each step is
``extras.rules.descent_step`` (vmapped over seeds) and the loop is ``mixvi.loop.scan_loop``.

Task (symbolic factual recall). Subjects s_1..s_N, relations r_1 ("lives in") and r_2 (the
implication, e.g. "keeps as pet"), 20 cities b_j, 20 animals c_j, noise tokens z and an end token.
Subject i lives in city b_{i mod 20}; city j implies animal c_j. Training: the fact (s, r_1) -> b(s)
for every subject, the implication (s, r_2) -> c(s) only for the training subjects (one per city).
Test: the implications of the held-out subjects, which can only be inferred by associating the
fact b(s) with the implication that other subjects of the same city carry ("out-of-context").

Model. One-hot embeddings x_t = e_{tok_t}, sequence (s, r, z, <end>), one single-head attention
layer read at the end token, logits over the vocabulary:

    f(X) = W_OV X^T softmax(X W_KQ x_T)          W_OV = W_O W_V (factorized, W_V in R^{d x V},
                                                               W_O in R^{V x d}) or one W_OV (combined)

Because the tokens are one-hot, x_t^T W_KQ x_T = W_KQ[tok_t, <end>]: the attention scores depend on
W_KQ only through its <end> column a = W_KQ[:, <end>], so the model is exactly

    f(X) = sum_t alpha_t W_OV[:, tok_t],      alpha = softmax(a_{tok_1}, ..., a_{tok_T})

(:func:`logits` uses this; :func:`full_token_logits` is the full V x V model and the tests check that
both, and their gradients, agree). The paper proves that gradient descent on the factorized model is
biased towards small nuclear norm ||W_OV||_* (max-margin with the nuclear norm), which ties the
implication c_j to the fact b_j across subjects, while the combined model is biased towards small
Frobenius norm, which leaves the held-out implications at chance.

Run ``python -m extras.ocr [--quick]``; results go to ``docs/extras/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from extras._output import parse_args, save_outputs
from extras.rules import DescentState, descent_step
from mixvi.loop import scan_loop, tree_all_finite

LEARNING_RATE = 4.0
PAPER = (
    "Huang, Zhu, Guo, Jiao, Sojoudi, Jordan, Russell, Mei, 'Generalization or Hallucination? "
    "Understanding Out-of-Context Reasoning in Transformers', arXiv 2506.10887"
)


class Vocab(NamedTuple):
    """Token ids: subjects [0, N), r_1 = N, r_2 = N + 1, cities, animals, noise tokens, end token."""

    num_subjects: int
    num_cities: int
    num_noise: int

    @property
    def r1(self) -> int:
        return self.num_subjects

    @property
    def r2(self) -> int:
        return self.num_subjects + 1

    def city(self, j: Any) -> Any:
        return self.num_subjects + 2 + j

    def animal(self, j: Any) -> Any:
        return self.num_subjects + 2 + self.num_cities + j

    def noise(self, j: Any) -> Any:
        return self.num_subjects + 2 + 2 * self.num_cities + j

    @property
    def end(self) -> int:
        return self.num_subjects + 2 + 2 * self.num_cities + self.num_noise

    @property
    def size(self) -> int:
        return self.end + 1


class Dataset(NamedTuple):
    """Token sequences (n, 4) = (subject, relation, noise, <end>) and target token ids (n,) for the
    training set (all facts, then the training implications) and the test set (the held-out
    implications), and the training / held-out subject ids."""

    vocab: Vocab
    train_x: jax.Array
    train_y: jax.Array
    test_x: jax.Array
    test_y: jax.Array
    train_subjects: np.ndarray
    test_subjects: np.ndarray


def make_dataset(key: jax.Array, subjects_per_city: int = 5, num_cities: int = 20, num_noise: int = 10) -> Dataset:
    """The OCR task: N = subjects_per_city * num_cities subjects, subject i -> city i mod num_cities,
    city j -> animal j. Training subjects: one per city (a random one); the rest are held out. Each
    sequence is (s, r, z, <end>) with a random noise token z."""
    N = subjects_per_city * num_cities
    voc = Vocab(N, num_cities, num_noise)
    subj = np.arange(N)
    city = subj % num_cities
    k1, k2, k3 = jax.random.split(key, 3)
    pick = np.asarray(jax.random.randint(k1, (num_cities,), 0, subjects_per_city))
    train_subj = np.array([j + num_cities * pick[j] for j in range(num_cities)])
    test_subj = np.setdiff1d(subj, train_subj)

    def seqs(k, s, rel):
        z = np.asarray(jax.random.randint(k, (len(s),), 0, num_noise))
        return np.stack([s, np.full(len(s), rel), voc.noise(z), np.full(len(s), voc.end)], axis=1)

    facts_x = seqs(k2, subj, voc.r1)
    facts_y = voc.city(city)
    impl_x = seqs(k3, train_subj, voc.r2)
    impl_y = voc.animal(city[train_subj])
    test_x = seqs(jax.random.fold_in(k3, 1), test_subj, voc.r2)
    test_y = voc.animal(city[test_subj])
    return Dataset(
        voc,
        jnp.asarray(np.concatenate([facts_x, impl_x]), jnp.int32),
        jnp.asarray(np.concatenate([facts_y, impl_y]), jnp.int32),
        jnp.asarray(test_x, jnp.int32),
        jnp.asarray(test_y, jnp.int32),
        train_subj,
        test_subj,
    )


# ----------------------------------------------------------------------------------------------
# the model


def init_params(
    key: jax.Array, vocab_size: int, *, factorized: bool = True, rank: int | None = None, init_scale: float = 1e-2
) -> dict:
    """Small random initialisation: ``W_O`` (V, d) and ``W_V`` (d, V) with N(0, init_scale^2) entries
    (d = ``rank``, default V), or a combined ``W_OV`` (V, V) with N(0, init_scale^2) entries; the
    attention column ``a`` = W_KQ[:, <end>] starts at 0 (uniform attention)."""
    V = vocab_size
    d = V if rank is None else rank
    k1, k2 = jax.random.split(key)
    if factorized:
        return {
            "W_O": init_scale * jax.random.normal(k1, (V, d)),
            "W_V": init_scale * jax.random.normal(k2, (d, V)),
            "a": jnp.zeros(V),
        }
    return {"W_OV": init_scale * jax.random.normal(k1, (V, V)), "a": jnp.zeros(V)}


def combined_ov(params: dict) -> jax.Array:
    """W_OV = W_O W_V for a factorized model, or the combined matrix itself."""
    return params["W_O"] @ params["W_V"] if "W_O" in params else params["W_OV"]


def attention_weights(params: dict, x: jax.Array) -> jax.Array:
    """alpha = softmax over the sequence of a_{tok_t}, a = W_KQ[:, <end>] (n, T)."""
    return jax.nn.softmax(params["a"][x], axis=-1)


def logits(params: dict, x: jax.Array) -> jax.Array:
    """f(X) = sum_t alpha_t W_OV[:, tok_t] (n, V): the exact one-hot shortcut of the attention layer
    (arXiv 2506.10887, Sec. 4; the output is read at the end token)."""
    alpha = attention_weights(params, x)
    if "W_O" in params:
        h = jnp.einsum("nt,dnt->nd", alpha, params["W_V"][:, x])
        return h @ params["W_O"].T
    return jnp.einsum("nt,vnt->nv", alpha, params["W_OV"][:, x])


def full_token_logits(params: dict, W_KQ: jax.Array, x: jax.Array) -> jax.Array:
    """The full one-layer model with one-hot embeddings X (n, T, V) and a full key-query matrix
    W_KQ (V, V): scores X W_KQ x_T, attention softmax over the sequence, output W_OV X^T attention.
    Equal to :func:`logits` with a = W_KQ[:, <end>] (the end token is the last one)."""
    V = W_KQ.shape[0]
    X = jax.nn.one_hot(x, V)
    scores = jnp.einsum("ntv,vw,nw->nt", X, W_KQ, X[:, -1])
    att = jax.nn.softmax(scores, axis=-1)
    h = jnp.einsum("ntv,nt->nv", X, att)
    return h @ combined_ov(params).T


def cross_entropy(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy of the next token, -(1/n) sum_i log softmax(f(X_i))_{y_i}."""
    lg = logits(params, x)
    return jnp.mean(jax.nn.logsumexp(lg, axis=-1) - jnp.take_along_axis(lg, y[:, None], axis=-1)[:, 0])


def accuracy(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of sequences whose argmax over the whole vocabulary is the target."""
    return jnp.mean(jnp.argmax(logits(params, x), axis=-1) == y)


def margins(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """gamma_i = f(X_i)_{y_i} - max_{v != y_i} f(X_i)_v (positive iff X_i is classified correctly)."""
    lg = logits(params, x)
    true = jnp.take_along_axis(lg, y[:, None], axis=-1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(y, lg.shape[-1], dtype=bool), -jnp.inf, lg), axis=-1)
    return true - other


def norms(params: dict, x: jax.Array, y: jax.Array) -> dict:
    """||W_OV||_* and ||W_OV||_F, raw and divided by the smallest training margin (the scale-free
    quantities of the max-margin problems: nuclear norm for the factorized model, Frobenius for the
    combined one), and the stable rank ||W||_F^2 / ||W||_2^2."""
    W = combined_ov(params)
    s = jnp.linalg.svd(W, compute_uv=False)
    gamma = jnp.min(margins(params, x, y))
    nuc, fro = jnp.sum(s), jnp.sqrt(jnp.sum(s**2))
    return {
        "nuclear": float(nuc),
        "frobenius": float(fro),
        "min_margin": float(gamma),
        "nuclear_over_margin": float(nuc / gamma),
        "frobenius_over_margin": float(fro / gamma),
        "stable_rank": float(jnp.sum(s**2) / s[0] ** 2),
    }


def animal_accuracy(params: dict, x: jax.Array, y: jax.Array, vocab: Vocab) -> jax.Array:
    """Accuracy of the argmax over the animals only (targets y are animals): whether the right
    implication beats the other animals, ignoring a city or subject that may top the full vocabulary."""
    a0 = vocab.animal(0)
    return jnp.mean(jnp.argmax(logits(params, x)[:, a0 : a0 + vocab.num_cities], axis=-1) == y - a0)


# ----------------------------------------------------------------------------------------------
# training


class TrainResult(NamedTuple):
    """Trained parameters (leading axis = seeds) and per-step records (T, S): training loss, train
    accuracy, test (held-out implication) accuracy."""

    params: dict
    loss: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray


def train(
    keys: jax.Array,
    data: Dataset,
    *,
    factorized: bool = True,
    rank: int | None = None,
    init_scale: float = 1e-2,
    num_steps: int = 2000,
    tx: optax.GradientTransformation | None = None,
    train_attention: bool = True,
    batch_size: int | None = None,
) -> TrainResult:
    """Training of the cross-entropy on the training set, one run per key (vmapped
    ``extras.rules.descent_step`` under ``mixvi.loop.scan_loop``). ``tx`` defaults to plain gradient
    descent ``optax.sgd(4.0)`` (the module's setting, the setting of the paper's implicit-bias result).
    ``batch_size=None`` is full batch; otherwise every step draws ``batch_size`` training sequences
    without replacement (a fresh draw per step and run, from the run's key), as in :func:`paper_tx`'s
    minibatch AdamW. ``train_attention=False`` keeps the attention uniform (a = 0)."""
    if tx is None:
        tx = optax.sgd(LEARNING_RATE)
    V = data.vocab.size
    n = data.train_x.shape[0]

    def loss_fn(p, idx):
        if not train_attention:
            p = {**p, "a": jax.lax.stop_gradient(p["a"])}
        x, y = (data.train_x, data.train_y) if idx is None else (data.train_x[idx], data.train_y[idx])
        return cross_entropy(p, x, y)

    def init_one(k):
        p = init_params(k, V, factorized=factorized, rank=rank, init_scale=init_scale)
        return DescentState(p, tx.init(p)), jax.random.fold_in(k, 1)

    def step_one(carry):
        state, k = carry
        k, sub = jax.random.split(k)
        idx = None if batch_size is None else jax.random.choice(sub, n, (batch_size,), replace=False)
        new, loss = descent_step(lambda p: loss_fn(p, idx), tx)(state)
        return (new, k), loss

    def step(carry):
        new, loss = jax.vmap(step_one)(carry)
        params = carry[0].params
        tr = jax.vmap(lambda p: accuracy(p, data.train_x, data.train_y))(params)
        te = jax.vmap(lambda p: accuracy(p, data.test_x, data.test_y))(params)
        return new, jnp.stack([loss, tr, te])

    def is_ok(carry, rec):
        return jnp.all(jnp.isfinite(rec)) & tree_all_finite(carry[0])

    res = scan_loop(step, jax.vmap(init_one)(keys), num_steps, is_ok=is_ok)
    rec = np.asarray(res.losses)
    return TrainResult(res.state[0].params, rec[:, 0], rec[:, 1], rec[:, 2])


# The paper setting: the authors' public code trains the attention model with AdamW on minibatches;
# we use its learning rate and weight decay (our batch size, steps and initialisation are stated in
# PAPER_SETTING and on the page).
PAPER_SETTING = {"optimizer": "optax.adamw", "learning_rate": 5e-3, "weight_decay": 0.03, "batch_size": 32}


def paper_tx() -> optax.GradientTransformation:
    """AdamW with the paper setting's learning rate and decoupled weight decay (``PAPER_SETTING``)."""
    return optax.adamw(PAPER_SETTING["learning_rate"], weight_decay=PAPER_SETTING["weight_decay"])


def train_paper(keys: jax.Array, data: Dataset, *, num_steps: int = 2000, **kw: Any) -> TrainResult:
    """:func:`train` in the paper setting: minibatch AdamW (``PAPER_SETTING``)."""
    return train(keys, data, tx=paper_tx(), batch_size=PAPER_SETTING["batch_size"], num_steps=num_steps, **kw)


def _unstack(params: dict, i: int) -> dict:
    return jax.tree.map(lambda x: x[i], params)


def summarize(result: TrainResult, data: Dataset) -> dict:
    """Final train / test accuracy and the norms of :func:`norms` for every seed, with their means."""
    S = result.loss.shape[1]
    per = []
    for i in range(S):
        p = _unstack(result.params, i)
        row = {
            "train_acc": float(accuracy(p, data.train_x, data.train_y)),
            "test_acc": float(accuracy(p, data.test_x, data.test_y)),
            "test_animal_acc": float(animal_accuracy(p, data.test_x, data.test_y, data.vocab)),
            "loss": float(cross_entropy(p, data.train_x, data.train_y)),
        }
        row.update(norms(p, data.train_x, data.train_y))
        per.append(row)
    out = {k: float(np.mean([r[k] for r in per])) for k in per[0]}
    out["per_seed"] = per
    return out


# ----------------------------------------------------------------------------------------------
# the experiment


def main(argv: list[str] | None = None) -> dict:
    """``python -m extras.ocr [--quick] [--out DIR]``: factorized vs combined in the paper setting
    (minibatch AdamW) and with full-batch GD (accuracy, norms), the GD rank sweep, uniform vs trained
    attention; JSON + PNG."""
    args = parse_args(main.__doc__, argv, "fewer seeds, ranks and steps (< 30 s)")
    t0 = time.time()
    q = args.quick
    num_seeds = 2 if q else 5
    num_steps = 1000 if q else 2000
    ranks = [10, None] if q else [1, 2, 3, 5, 10, 20, 40, None]
    data = make_dataset(jax.random.key(0))
    V = data.vocab.size
    keys = jax.random.split(jax.random.key(1), num_seeds)
    results: dict = {
        "paper": PAPER,
        "quick": q,
        "vocab_size": V,
        "num_train": int(data.train_x.shape[0]),
        "num_test": int(data.test_x.shape[0]),
        "chance": 1.0 / data.vocab.num_cities,
        "num_seeds": num_seeds,
        "num_steps": num_steps,
        "optimizer": f"optax.sgd({LEARNING_RATE:g})",
        "init_scale": 1e-2,
        "paper_setting": {**PAPER_SETTING, "num_steps": num_steps, "init_scale": 1e-2},
    }
    print(f"{PAPER}\nV = {V}, {results['num_train']} training sequences, {results['num_test']} held-out implications")
    curves = {}
    print(
        f"\npaper setting: AdamW(lr {PAPER_SETTING['learning_rate']:g}, weight decay {PAPER_SETTING['weight_decay']:g}), "
        f"batch {PAPER_SETTING['batch_size']}, {num_steps} steps, {num_seeds} seeds"
    )
    print(f"{'model':>26} | {'train acc':>9} {'test acc':>8} {'animal acc':>10} | {'||W||_*/γ':>10} {'||W||_F/γ':>10}")
    results["paper_runs"] = {}
    for name, fac in (("factorized", True), ("combined", False)):
        r = train_paper(keys, data, factorized=fac, num_steps=num_steps)
        s = summarize(r, data)
        results["paper_runs"][name] = s
        curves[f"paper {name}"] = (r.train_acc.mean(1), r.test_acc.mean(1))
        print(
            f"{name:>26} | {s['train_acc']:9.3f} {s['test_acc']:8.3f} {s['test_animal_acc']:10.3f} | "
            f"{s['nuclear_over_margin']:10.2f} {s['frobenius_over_margin']:10.2f}"
        )
    print(f"\nablation: full-batch gradient descent optax.sgd({LEARNING_RATE:g}) (the module's setting)")
    configs = {
        "factorized": dict(factorized=True),
        "combined": dict(factorized=False),
    }
    if not q:
        configs["factorized, uniform attn"] = dict(factorized=True, train_attention=False)
        configs["combined, uniform attn"] = dict(factorized=False, train_attention=False)
    print(
        f"\n{'model':>26} | {'train acc':>9} {'test acc':>8} {'animal acc':>10} | {'||W||_*/γ':>10} "
        f"{'||W||_F/γ':>10} {'st. rank':>8}"
    )
    for name, kw in configs.items():
        r = train(keys, data, num_steps=num_steps, **kw)
        s = summarize(r, data)
        results[name] = s
        curves[name] = (r.train_acc.mean(1), r.test_acc.mean(1))
        print(
            f"{name:>26} | {s['train_acc']:9.3f} {s['test_acc']:8.3f} {s['test_animal_acc']:10.3f} | "
            f"{s['nuclear_over_margin']:10.2f} "
            f"{s['frobenius_over_margin']:10.2f} {s['stable_rank']:8.2f}"
        )
    print(f"\nrank sweep (factorized, d = rank of W_O W_V; full = {V})")
    print(f"{'rank':>5} | {'train acc':>9} {'test acc':>8} {'animal acc':>10}")
    results["rank_sweep"] = {}
    for rk in ranks:
        s = results["factorized"] if rk is None else summarize(train(keys, data, rank=rk, num_steps=num_steps), data)
        name = str(rk if rk is not None else V)
        results["rank_sweep"][name] = {
            k: s[k] for k in ("train_acc", "test_acc", "test_animal_acc", "nuclear_over_margin")
        }
        results["rank_sweep"][name]["test_acc_per_seed"] = [x["test_acc"] for x in s["per_seed"]]
        print(f"{name:>5} | {s['train_acc']:9.3f} {s['test_acc']:8.3f} {s['test_animal_acc']:10.3f}")
    save_outputs("ocr", q, args.out, results, t0, lambda png: _plot(results, curves, png))
    return results


def _plot(results: dict, curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, color in (("factorized", "C0"), ("combined", "C3")):
        tr, te = curves[f"paper {name}"]
        ax[0].plot(tr, color=color, ls="--", label=f"AdamW (paper), {name}: train")
        ax[0].plot(te, color=color, label=f"AdamW (paper), {name}: held-out")
        ax[0].plot(curves[name][1], color=color, ls=":", alpha=0.7, label=f"GD (ablation), {name}: held-out")
    ax[0].axhline(results["chance"], color="k", ls=":", lw=0.8, label="chance (1/20)")
    ax[0].set(xlabel="step", ylabel="accuracy", title="OCR: factorized W_O W_V vs combined W_OV", ylim=(-0.02, 1.02))
    ax[0].legend(fontsize=7)
    rs = results["rank_sweep"]
    names = list(rs)
    xs = np.arange(len(names))
    ax[1].plot(xs, [rs[n]["train_acc"] for n in names], "s--", label="train")
    ax[1].plot(xs, [rs[n]["test_acc"] for n in names], "o-", label="held-out implications")
    ax[1].axhline(results["chance"], color="k", ls=":", lw=0.8)
    ax[1].set_xticks(xs, names)
    ax[1].set(
        xlabel="rank d of the factorization",
        ylabel="accuracy",
        title="accuracy vs rank (GD ablation)",
        ylim=(-0.02, 1.02),
    )
    ax[1].legend(fontsize=8)
    runs = [(f"GD\n{m}", results[m]) for m in ("factorized", "combined")]
    runs += [(f"AdamW\n{m}", results["paper_runs"][m]) for m in ("factorized", "combined")]
    xs2 = np.arange(len(runs))
    w = 0.35
    ax[2].bar(xs2 - w / 2, [r["nuclear_over_margin"] for _, r in runs], w, label="||W_OV||_* / min margin")
    ax[2].bar(xs2 + w / 2, [r["frobenius_over_margin"] for _, r in runs], w, label="||W_OV||_F / min margin")
    ax[2].set_xticks(xs2, [n for n, _ in runs])
    ax[2].set(title="normalised norms of W_OV (GD ablation and paper setting)", yscale="log")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
