"""Guess & Check versus gradient descent in matrix factorization.

Reproduces Alexander, Slutzky, Ran-Milo, Cohen, "Do Neural Networks Need Gradient Descent to
Generalize? A Theoretical Study" (NeurIPS 2025, arXiv 2506.03931) at CPU size. Gradient descent is
the authors' group-normalised RMSprop (``extras.normalized.group_rmsprop``, one running average of
the total squared gradient norm), each step is ``extras.rules.descent_step`` (vmapped over seeds) and
the loop is ``mixvi.loop.scan_loop``.

Matrix sensing (eqs. (1)-(3) of the paper): a rank-r ground truth W* in R^{m x m'}, ||W*||_F = 1,
n measurements y_i = <A_i, W*> with Gaussian A_i normalised to ||A_i||_F = 1, and

    W = W_d sigma(W_{d-1} sigma( ... sigma(W_1)))      W_1 in R^{k x m'}, W_j in R^{k x k}, W_d in R^{m x k}
    L_train = (1/n) sum_i (<A_i, W> - y_i)^2
    L_gen   = (1/|B|) sum_{B in B} (<B, W> - <B, W*>)^2      (B an orthonormal basis of span{A_i}^perp)

Guess & Check (G&C) draws weights from the prior until L_train < eps; statistically it samples the
posterior P(. | L_train < eps). The prior (the authors' code): hidden layers W_1..W_{d-1} with
N(0, 1/k) entries, the last layer with N(0, 1/m') entries, optionally the end-to-end matrix
normalised, W <- W / (||W||_F + 1e-6). We draw ~10^6 weight settings once, vectorised and chunked,
and keep (L_train, L_gen) of every draw, so every eps is one mask over the same draws.

GD has two settings: the authors' published one (``PAPER_GD``: per-layer init 1e-3, lr 1e-4, 10^5
full-batch steps), judged at width 5, depth 2, and the module's own (init (1e-4)^(1/d), lr 1e-2, 2 x 10^4
steps), used for the width and depth sweeps.

Claims checked: (i) G&C generalisation deteriorates with width towards the prior's (as k -> inf the
entries of W become Gaussian), while GD from a small initialisation stays near zero at every width;
(ii) under the normalised prior G&C generalisation improves with depth; (iii) under an isotropic
Gaussian prior on W itself, G&C generalises exactly as the prior: L_train depends on W only
through its projection onto span{A_i} and L_gen only through the orthogonal projection, which are
independent for an isotropic Gaussian, so E[L_gen | L_train < eps] = E[L_gen] = s^2 + ||P_perp W*||^2/|B|.

Run ``python -m extras.guess_and_check [--quick]``; results go to ``docs/extras/``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from extras._output import parse_args, save_outputs
from extras.normalized import group_rmsprop
from extras.rules import DescentState, descent_step
from mixvi.loop import scan_loop, tree_all_finite

PAPER = (
    "Alexander, Slutzky, Ran-Milo, Cohen, 'Do Neural Networks Need Gradient Descent to Generalize? "
    "A Theoretical Study', arXiv 2506.03931"
)
ACTIVATIONS = ("linear", "tanh", "leaky_relu")


class SensingProblem(NamedTuple):
    """A matrix-sensing instance: ground truth ``W_star`` (m, m'), measurements ``A`` (n, m, m') with
    targets ``y`` (n,), and an orthonormal basis ``B`` (m m' - n, m, m') of span{A_i}^perp with
    ``y_B`` = <B_j, W*>."""

    W_star: jax.Array
    A: jax.Array
    y: jax.Array
    B: jax.Array
    y_B: jax.Array


def complement_basis(A: jax.Array) -> jax.Array:
    """An orthonormal basis (as matrices) of the orthogonal complement of span{A_i} in R^{m x m'}
    (the last right-singular vectors of the n x (m m') matrix of flattened A_i)."""
    n, m, m2 = A.shape
    flat = np.asarray(A, np.float64).reshape(n, m * m2)
    _, s, vt = np.linalg.svd(flat, full_matrices=True)
    rank = int(np.sum(s > s[0] * 1e-10))
    return jnp.asarray(vt[rank:].reshape(-1, m, m2), A.dtype)


def make_problem(
    key: jax.Array, m: int = 5, m_prime: int = 5, rank: int = 1, num_measurements: int = 15, norm: float = 1.0
) -> SensingProblem:
    """W* = U V^T / ||U V^T||_F * norm with Gaussian U (m, r), V (m', r); A_i Gaussian with
    ||A_i||_F = 1; y_i = <A_i, W*>; B the orthonormal complement basis (the authors' data generator)."""
    k1, k2, k3 = jax.random.split(key, 3)
    U = jax.random.normal(k1, (m, rank))
    V = jax.random.normal(k2, (m_prime, rank))
    W = U @ V.T
    W = W * (norm / jnp.linalg.norm(W))
    A = jax.random.normal(k3, (num_measurements, m, m_prime))
    A = A / jnp.linalg.norm(A.reshape(num_measurements, -1), axis=1)[:, None, None]
    B = complement_basis(A)
    return SensingProblem(W, A, measure(W, A), B, measure(W, B))


def measure(W: jax.Array, A: jax.Array) -> jax.Array:
    """<A_i, W> for every measurement matrix A_i; W may carry leading batch axes (..., m, m')."""
    return jnp.einsum("...ab,nab->...n", W, A)


def train_loss(W: jax.Array, problem: SensingProblem) -> jax.Array:
    """L_train(W) = (1/n) sum_i (<A_i, W> - y_i)^2 (eq. (2) of arXiv 2506.03931), batched over W's leading axes."""
    return jnp.mean((measure(W, problem.A) - problem.y) ** 2, axis=-1)


def gen_loss(W: jax.Array, problem: SensingProblem) -> jax.Array:
    """L_gen(W) = (1/|B|) sum_{B} (<B, W> - <B, W*>)^2 over the orthonormal complement basis B (eq. (3))."""
    return jnp.mean((measure(W, problem.B) - problem.y_B) ** 2, axis=-1)


def activation_fn(name: str, negative_slope: float = 0.2) -> Callable[[jax.Array], jax.Array]:
    """sigma: 'linear' (identity), 'tanh', or 'leaky_relu' with the given negative slope (0.2 in the paper)."""
    if name == "linear":
        return lambda x: x
    if name == "tanh":
        return jnp.tanh
    if name == "leaky_relu":
        return lambda x: jnp.where(x >= 0, x, negative_slope * x)
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


def end_to_end(weights: Sequence[jax.Array], activation: str = "linear") -> jax.Array:
    """W = W_d sigma(W_{d-1} sigma(... sigma(W_1))) (eq. (4)); ``weights`` = [W_1, ..., W_d] with
    W_1 (..., k, m'), W_j (..., k, k), W_d (..., m, k); leading batch axes broadcast. Depth 1 is W = W_1."""
    act = activation_fn(activation)
    H = weights[0]
    for Wj in weights[1:]:
        H = Wj @ act(H)
    return H


def layer_shapes(m: int, m_prime: int, width: int, depth: int) -> list[tuple[int, int]]:
    """Shapes of W_1, ..., W_d: (k, m'), (k, k) x (d - 2), (m, k); depth 1 is a single (m, m') matrix."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if depth == 1:
        return [(m, m_prime)]
    return [(width, m_prime)] + [(width, width)] * (depth - 2) + [(m, width)]


def sample_prior(
    key: jax.Array, num: int, m: int, m_prime: int, width: int, depth: int, *, scale: float = 1.0
) -> list[jax.Array]:
    """``num`` weight settings from the G&C prior: hidden layers W_1..W_{d-1} with N(0, 1/k) entries and
    the last layer with N(0, 1/m') entries (the authors' code), each multiplied by ``scale``."""
    shapes = layer_shapes(m, m_prime, width, depth)
    keys = jax.random.split(key, len(shapes))
    out = []
    for j, (kj, shp) in enumerate(zip(keys, shapes)):
        std = 1.0 / math.sqrt(m_prime if j == len(shapes) - 1 else width)
        out.append(scale * std * jax.random.normal(kj, (num, *shp)))
    return out


def prior_matrices(
    key: jax.Array,
    num: int,
    m: int = 5,
    m_prime: int = 5,
    *,
    width: int = 5,
    depth: int = 2,
    activation: str = "linear",
    normalize: bool = False,
    softening: float = 1e-6,
    prior: str = "factorized",
    iso_std: float | None = None,
) -> jax.Array:
    """``num`` end-to-end matrices (num, m, m') drawn from the prior. ``prior='factorized'``: W of
    :func:`end_to_end` with weights from :func:`sample_prior`, normalised W / (||W||_F + softening)
    if ``normalize``; ``prior='isotropic'``: W itself with i.i.d. N(0, iso_std^2) entries (default
    iso_std^2 = 1/m', the entry variance of the linear depth-2 factorized prior)."""
    if prior == "isotropic":
        std = iso_std if iso_std is not None else 1.0 / math.sqrt(m_prime)
        W = std * jax.random.normal(key, (num, m, m_prime))
    elif prior == "factorized":
        W = end_to_end(sample_prior(key, num, m, m_prime, width, depth), activation)
    else:
        raise ValueError(f"prior must be 'factorized' or 'isotropic', got {prior!r}")
    if normalize:
        W = W / (jnp.linalg.norm(W.reshape(num, -1), axis=1)[:, None, None] + softening)
    return W


@partial(
    jax.jit,
    static_argnames=("num_chunks", "chunk_size", "width", "depth", "activation", "normalize", "prior", "m", "m_prime"),
)
def _draw_losses(key, problems, num_chunks, chunk_size, width, depth, activation, normalize, prior, m, m_prime):
    def one_chunk(k):
        W = prior_matrices(
            k, chunk_size, m, m_prime, width=width, depth=depth, activation=activation, normalize=normalize, prior=prior
        )
        tr = jax.vmap(lambda p: train_loss(W, p))(problems)
        ge = jax.vmap(lambda p: gen_loss(W, p))(problems)
        return tr, ge

    tr, ge = jax.lax.map(one_chunk, jax.random.split(key, num_chunks))
    # (num_chunks, P, chunk) -> (P, num_draws)
    P = tr.shape[1]
    return tr.transpose(1, 0, 2).reshape(P, -1), ge.transpose(1, 0, 2).reshape(P, -1)


def draw_losses(
    key: jax.Array,
    problems: SensingProblem,
    num_draws: int,
    *,
    width: int = 5,
    depth: int = 2,
    activation: str = "linear",
    normalize: bool = False,
    prior: str = "factorized",
    chunk_size: int = 20000,
) -> tuple[np.ndarray, np.ndarray]:
    """(L_train, L_gen) of ``num_draws`` prior draws (vectorised, ``chunk_size`` per chunk under
    ``lax.map``), evaluated on every problem of a stacked :class:`SensingProblem` (leading axis P;
    a single problem is promoted). The same draws serve every problem and every eps: returns two
    arrays of shape (P, num_draws') with num_draws' = num_draws rounded up to whole chunks."""
    single = problems.A.ndim == 3
    if single:
        problems = jax.tree.map(lambda x: x[None], problems)
    chunk_size = min(chunk_size, num_draws)
    num_chunks = -(-num_draws // chunk_size)
    m, m_prime = problems.W_star.shape[-2:]
    tr, ge = _draw_losses(
        key, problems, num_chunks, chunk_size, width, depth, activation, normalize, prior, int(m), int(m_prime)
    )
    tr, ge = np.asarray(tr), np.asarray(ge)
    return (tr[0], ge[0]) if single else (tr, ge)


class GuessAndCheck(NamedTuple):
    """G&C summary for one problem: the prior's mean L_gen, the posterior (accepted draws') mean L_gen
    with its standard error, the number of accepted draws and the acceptance rate."""

    prior_gen: float
    gnc_gen: float
    gnc_se: float
    num_accepted: int
    acceptance: float


def guess_and_check(train: np.ndarray, gen: np.ndarray, eps: float) -> GuessAndCheck:
    """Guess & Check = rejection sampling: keep the draws with L_train < eps (a sample of the posterior
    P(. | L_train < eps), arXiv 2506.03931 Sec. 2) and average their L_gen. NaN if none is accepted."""
    train, gen = np.asarray(train), np.asarray(gen)
    ok = train < eps
    k = int(ok.sum())
    g = gen[ok]
    return GuessAndCheck(
        float(gen.mean()),
        float(g.mean()) if k else math.nan,
        float(g.std(ddof=1) / math.sqrt(k)) if k > 1 else math.nan,
        k,
        k / train.size,
    )


def eps_for_acceptance(train: np.ndarray, num_accepted: int) -> float:
    """The eps that accepts exactly ``num_accepted`` of the draws (just above the k-th smallest L_train)."""
    t = np.sort(np.asarray(train).ravel())
    return float(np.nextafter(t[num_accepted - 1], np.inf))


def isotropic_prior_gen(problem: SensingProblem, std: float) -> float:
    """E[L_gen] under W ~ N(0, std^2 I): std^2 + (1/|B|) sum_j <B_j, W*>^2 (orthonormal B). Under this
    prior G&C has exactly the same L_gen distribution (independence of the two projections)."""
    return float(std**2 + jnp.mean(problem.y_B**2))


# ----------------------------------------------------------------------------------------------
# gradient descent


class GDResult(NamedTuple):
    """GD runs (one per key): final train / gen losses (S,), the recorded curves (T, S) and the final
    end-to-end matrices (S, m, m')."""

    train: np.ndarray
    gen: np.ndarray
    train_curve: np.ndarray
    gen_curve: np.ndarray
    W: np.ndarray


def init_weights(key: jax.Array, m: int, m_prime: int, width: int, depth: int, init_scale: float) -> list[jax.Array]:
    """A small initialisation: the prior's layers times ``init_scale``. The authors multiply PyTorch's
    default layer initialisation (U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the same 1/sqrt(fan_in) scale as the
    prior) by 1e-3 in their published width configurations (``PAPER_GD``)."""
    return [w[0] for w in sample_prior(key, 1, m, m_prime, width, depth, scale=init_scale)]


def train_gd(
    keys: jax.Array,
    problems: SensingProblem,
    *,
    width: int = 5,
    depth: int = 2,
    activation: str = "linear",
    init_scale: float | None = None,
    learning_rate: float = 1e-2,
    num_steps: int = 20000,
    decay: float = 0.99,
) -> GDResult:
    """Minimise L_train(W_1..W_d) from a small initialisation with the group-normalised RMSprop step
    x <- x - eta g / (sqrt(vhat) + 1e-6), v = decay v + (1 - decay)||g||^2 (``extras.normalized.group_rmsprop``,
    the authors' optimiser): one run per key, on the matching problem of a stacked ``problems`` (or
    the same problem for every key), all at once with a vmapped ``extras.rules.descent_step`` under
    ``mixvi.loop.scan_loop``. ``init_scale`` multiplies the prior's layers; the default
    (1e-4)^(1/d) puts the end-to-end matrix at the same ~1e-4 scale at every depth."""
    S = keys.shape[0]
    if problems.A.ndim == 3:
        problems = jax.tree.map(lambda x: jnp.broadcast_to(x, (S, *x.shape)), problems)
    m, m_prime = problems.W_star.shape[-2:]
    if init_scale is None:
        init_scale = default_init_scale(depth)
    tx = group_rmsprop(learning_rate, decay=decay)

    def init_one(k):
        ws = init_weights(k, m, m_prime, width, depth, init_scale)
        return DescentState(ws, tx.init(ws))

    def step_one(state, problem):
        new, tr = descent_step(lambda ws: train_loss(end_to_end(ws, activation), problem), tx)(state)
        return new, jnp.stack([tr, gen_loss(end_to_end(state.params, activation), problem)])

    def step(carry):
        state, probs = carry
        new, rec = jax.vmap(step_one)(state, probs)
        return (new, probs), rec.T

    def is_ok(carry, rec):
        return jnp.all(jnp.isfinite(rec)) & tree_all_finite(carry[0])

    res = scan_loop(step, (jax.vmap(init_one)(keys), problems), num_steps, is_ok=is_ok)
    rec = np.asarray(res.losses)
    W = jax.vmap(lambda w: end_to_end(w, activation))(res.state[0].params)
    tr = jax.vmap(train_loss)(W, problems)
    ge = jax.vmap(gen_loss)(W, problems)
    return GDResult(np.asarray(tr), np.asarray(ge), rec[:, 0], rec[:, 1], np.asarray(W))


# The GD setting of the authors' published width configurations (public code of arXiv 2506.03931,
# configs/width/*.json: gd_init_scales [1e-3], gd_lrs [1e-4], gd_epochs 100000, full batch, so one epoch is
# one step; their depth configurations use lr 1e-2, 20000 epochs, init 1e-3 up to depth 4).
PAPER_GD = {"init_scale": 1e-3, "learning_rate": 1e-4, "num_steps": 100_000}
MODULE_GD = {"learning_rate": 1e-2, "num_steps": 20_000}  # init (1e-4)^(1/depth), see default_init_scale
RECOVERED = 1e-3  # an L_gen below this counts as recovering W* (the prior's L_gen is ~0.25)


def problem_diagnostics(problem: SensingProblem, W_gd: np.ndarray) -> dict:
    """What makes a sensing problem hard for GD from a small initialisation: ||y||; the fraction
    ||P_A W*||^2 / ||W*||^2 of the ground truth that the measurements see; the alignment
    |u1^T u*| |v1^T v*| of the top singular pair of the gradient at 0, A*(y) = (1/n) sum_i y_i A_i (the
    direction small-initialisation GD grows first), with W*'s; and the singular values of GD's W."""
    A = np.asarray(problem.A, np.float64)
    y = np.asarray(problem.y, np.float64)
    n = A.shape[0]
    visible = np.linalg.pinv(A.reshape(n, -1)) @ y
    u, s, vt = np.linalg.svd(np.einsum("n,nab->ab", y, A) / n)
    us, _, vts = np.linalg.svd(np.asarray(problem.W_star, np.float64))
    return {
        "y_norm": float(np.linalg.norm(y)),
        "visible_fraction": float(visible @ visible / np.sum(np.asarray(problem.W_star, np.float64) ** 2)),
        "alignment_grad_at_0": float(abs(u[:, 0] @ us[:, 0]) * abs(vt[0] @ vts[0])),
        "gd_singular_values": np.linalg.svd(np.asarray(W_gd, np.float64), compute_uv=False).tolist(),
    }


def paper_setting_gd(key: jax.Array, problems: SensingProblem, *, num_steps: int | None = None) -> dict:
    """GD at width 5, depth 2 (linear) in the authors' setting (``PAPER_GD``) and in the module's
    (``MODULE_GD``), one run per problem, with the per-problem L_gen / L_train, the problems not
    recovered (L_gen > ``RECOVERED``) in each, :func:`problem_diagnostics`, and for the worst problem of
    the paper setting four GD seeds at init 1e-3 and at 1e-5 (same learning rate and steps)."""
    P = problems.A.shape[0]
    paper = {**PAPER_GD, **({} if num_steps is None else {"num_steps": num_steps})}
    keys = jax.random.split(key, P)
    out = {"paper_setting": paper, "module_setting": {**MODULE_GD, "init_scale": default_init_scale(2)}}
    runs = {}
    for name, kw in (("paper", paper), ("module", MODULE_GD)):
        r = train_gd(keys, problems, width=5, depth=2, **kw)
        runs[name] = r
        out[name] = {
            "gen_per_problem": r.gen.tolist(),
            "train_per_problem": r.train.tolist(),
            "not_recovered": [int(i) for i in np.flatnonzero(r.gen > RECOVERED)],
            # L_gen along the run: has it settled (interpolation reached) or is it still falling?
            "gen_at_step": {
                str(t): r.gen_curve[t].tolist() for t in (kw["num_steps"] // 10, 3 * kw["num_steps"] // 10)
            },
        }
    probs = [jax.tree.map(lambda x, i=i: x[i], problems) for i in range(P)]
    out["diagnostics"] = [problem_diagnostics(pr, runs["paper"].W[i]) for i, pr in enumerate(probs)]
    worst = int(np.argmax(runs["paper"].gen))
    seeds = jax.random.split(jax.random.fold_in(key, 1), 4)
    out["worst_problem"] = worst
    out["worst_init_scan"] = {
        f"{s:g}": train_gd(seeds, probs[worst], width=5, depth=2, **{**paper, "init_scale": s}).gen.tolist()
        for s in (1e-3, 1e-5)
    }
    return out


def default_init_scale(depth: int) -> float:
    """(1e-4)^(1/d): each layer at this multiple of the prior, the end-to-end matrix at ~1e-4 scale."""
    return 1e-4 ** (1.0 / depth)


# ----------------------------------------------------------------------------------------------
# the experiment


def _stack(problems: list[SensingProblem]) -> SensingProblem:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *problems)


MIN_ACCEPT = 5  # a G&C mean over problems is reported only when every problem accepted this many draws


def _gnc_rows(tr: np.ndarray, ge: np.ndarray, eps: float) -> dict:
    per = [guess_and_check(tr[p], ge[p], eps) for p in range(tr.shape[0])]
    enough = all(r.num_accepted >= MIN_ACCEPT for r in per)
    return {
        "eps": eps,
        "prior_gen": float(np.mean([r.prior_gen for r in per])),
        "gnc_gen": float(np.mean([r.gnc_gen for r in per])) if enough else math.nan,
        "gnc_gen_per_problem": [r.gnc_gen for r in per],
        "gnc_se_per_problem": [r.gnc_se for r in per],
        "num_accepted": [r.num_accepted for r in per],
        "acceptance": float(np.mean([r.acceptance for r in per])),
    }


def _fmt(x: float) -> str:
    return f"{x:7.4f}" if math.isfinite(x) else f"{'-':>7}"


def _gd_summary(gd: GDResult) -> dict:
    return {
        "gd_gen": float(np.mean(gd.gen)),
        "gd_gen_per_problem": gd.gen.tolist(),
        "gd_train": float(np.mean(gd.train)),
    }


def _finite(obj):
    """NaN (no accepted draw) -> None, so the JSON is strict."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> dict:
    """``python -m extras.guess_and_check [--quick] [--out DIR]``: the width sweep (G&C vs GD, three
    activations), the depth sweep under the normalised prior, the isotropic-prior identity; JSON + PNG."""
    args = parse_args(main.__doc__, argv, "fewer draws, problems and steps (< 30 s)")
    t0 = time.time()
    q = args.quick
    num_draws = 100_000 if q else 1_000_000
    num_problems = 2 if q else 4
    eps = EPS_WIDTH
    eps_depth = EPS_DEPTH
    widths = [5, 80] if q else [5, 20, 80]
    depths = [2, 8] if q else [2, 4, 6, 8]
    activations = ["linear"] if q else list(ACTIVATIONS)
    gd_steps = 3000 if q else 20000
    problems = [make_problem(jax.random.key(100 + s)) for s in range(num_problems)]
    stacked = _stack(problems)
    results: dict = {
        "paper": PAPER,
        "quick": q,
        "num_draws": num_draws,
        "num_problems": num_problems,
        "eps_width": eps,
        "eps_depth": eps_depth,
        "gd": {
            "optimizer": "group_rmsprop",
            "lr": MODULE_GD["learning_rate"],
            "decay": 0.99,
            "init_scale": "(1e-4)^(1/depth)",
            "num_steps": gd_steps,
        },
        "width": {},
        "depth": {},
        "trivial_train_loss": [float(jnp.mean(pr.y**2)) for pr in problems],
    }
    key = jax.random.key(0)
    print(f"{PAPER}\nG&C: {num_draws} prior draws per setting, {num_problems} problems (5x5, rank 1, n = 15)")
    pg = paper_setting_gd(jax.random.key(5), stacked)
    results["paper_gd"] = pg
    print("\nGD, width 5, depth 2, linear: L_gen per problem")
    for name in ("paper", "module"):
        st = pg[f"{name}_setting"]
        print(
            f"  {name:>6} setting (init {st['init_scale']:.3g}, lr {st['learning_rate']:g}, {st['num_steps']} steps): "
            + " ".join(f"{g:.2e}" for g in pg[name]["gen_per_problem"])
            + f"   not recovered (L_gen > {RECOVERED:g}): {pg[name]['not_recovered']}"
        )
    for i, dg in enumerate(pg["diagnostics"]):
        print(
            f"  problem {i}: ||y|| {dg['y_norm']:.3f}, visible ||P_A W*||^2 {dg['visible_fraction']:.3f}, "
            f"alignment of A*(y) with W* {dg['alignment_grad_at_0']:.3f}, GD (paper) sigma_2 {dg['gd_singular_values'][1]:.3f}"
        )
    print(f"  worst problem {pg['worst_problem']}, 4 GD seeds by init scale: {pg['worst_init_scan']}")
    t = EPS_WIDTH_TIGHT
    print(
        f"\nwidth sweep, depth 2: mean L_gen over problems (G&C at eps = {eps} and {t}; '-': < {MIN_ACCEPT} accepted)"
    )
    print(
        f"{'activation':>11} {'width':>5} | {'prior':>7} {'G&C':>7} {'G&C':>7} {'GD':>9} | {f'accepted (eps {eps})':>22} "
        f"{f'accepted (eps {t})':>18}"
    )
    for act in activations:
        results["width"][act] = {}
        for w in widths:
            key, k1, k2 = jax.random.split(key, 3)
            n_act = num_draws if act == "linear" else num_draws // 2
            tr, ge = draw_losses(k1, stacked, n_act, width=w, depth=2, activation=act)
            row = _gnc_rows(tr, ge, eps)
            gd = train_gd(
                jax.random.split(k2, num_problems), stacked, width=w, depth=2, activation=act, num_steps=gd_steps
            )
            row.update(_gd_summary(gd))
            row["eps_sweep"] = {f"{e:g}": _gnc_rows(tr, ge, e)["gnc_gen"] for e in EPS_SWEEP}
            row["tight"] = _gnc_rows(tr, ge, EPS_WIDTH_TIGHT)
            row["num_draws"] = n_act
            results["width"][act][w] = row
            print(
                f"{act:>11} {w:5d} | {row['prior_gen']:7.4f} {_fmt(row['gnc_gen'])} {_fmt(row['tight']['gnc_gen'])} "
                f"{row['gd_gen']:9.2e} | {str(row['num_accepted']):>22} {str(row['tight']['num_accepted']):>18}"
            )
    print(f"\ndepth sweep, width 5, linear, normalised prior, eps = {eps_depth}")
    print(f"{'depth':>5} | {'prior':>7} {'G&C':>7} {'GD':>9} | {'accepted':>18}")
    for d in depths:
        key, k1, k2 = jax.random.split(key, 3)
        tr, ge = draw_losses(k1, stacked, num_draws, width=5, depth=d, normalize=True)
        row = _gnc_rows(tr, ge, eps_depth)
        gd = train_gd(jax.random.split(k2, num_problems), stacked, width=5, depth=d, num_steps=gd_steps)
        row.update(_gd_summary(gd))
        row["gd_init_scale"] = default_init_scale(d)
        row["eps_sweep"] = {f"{e:g}": _gnc_rows(tr, ge, e)["gnc_gen"] for e in EPS_SWEEP}
        results["depth"][d] = row
        print(
            f"{d:5d} | {row['prior_gen']:7.4f} {_fmt(row['gnc_gen'])} {row['gd_gen']:9.2e} | {str(row['num_accepted']):>18}"
        )
    # isotropic Gaussian prior on W: G&C = prior exactly
    key, k1 = jax.random.split(key)
    std = 1.0 / math.sqrt(5)
    tr, ge = draw_losses(k1, stacked, num_draws, prior="isotropic")
    iso = _gnc_rows(tr, ge, EPS_ISO)
    iso["theory"] = float(np.mean([isotropic_prior_gen(pr, std) for pr in problems]))
    results["isotropic"] = iso
    print(
        f"\nisotropic N(0, 1/5) prior on W, eps = {EPS_ISO}: prior {iso['prior_gen']:.4f}, G&C {iso['gnc_gen']:.4f}, "
        f"theory {iso['theory']:.4f}, accepted {iso['num_accepted']}"
    )
    save_outputs("guess_and_check", q, args.out, results, t0, lambda png: _plot(results, png), to_json=_finite)
    return results


EPS_WIDTH = 0.05  # accepts >= 50 draws per problem at every width and activation (0.02 also reported)
EPS_WIDTH_TIGHT = 0.02
EPS_DEPTH = 0.01
EPS_ISO = 0.05  # the identity holds at every eps; 0.05 accepts ~2000 of 10^6 isotropic draws
EPS_SWEEP = (0.005, 0.01, 0.02, 0.05, 0.1)


def _se(row: dict) -> float:
    se = [x for x in row["gnc_se_per_problem"] if x == x]
    return float(np.sqrt(np.sum(np.square(se))) / len(se)) if se else math.nan


def _rows(d: dict) -> tuple[list[int], list[dict]]:
    keys = sorted(int(k) for k in d)
    return keys, [d[k] if k in d else d[str(k)] for k in keys]


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(21, 4.4))
    colors = {"linear": "C0", "tanh": "C1", "leaky_relu": "C2"}
    for act, rows in results["width"].items():
        ws, r = _rows(rows)
        c = colors[act]
        ax[0].errorbar(
            ws, [x["gnc_gen"] for x in r], yerr=[_se(x) for x in r], fmt="o-", color=c, capsize=3, label=f"G&C, {act}"
        )
        ax[0].plot(ws, [x["prior_gen"] for x in r], ":", color=c, label=f"prior, {act}")
        ax[0].plot(ws, [x["gd_gen"] for x in r], "s--", color=c, mfc="none", label=f"GD, {act}")
    ax[0].set_xscale("log")
    ax[0].set_xticks([5, 20, 80], ["5", "20", "80"])
    ax[0].minorticks_off()
    ax[0].set(
        xlabel="width k (depth 2)",
        ylabel="generalization loss (mean over problems)",
        ylim=(0, None),
        title=f"width: G&C worsens towards the prior (ε = {results['eps_width']:g})",
    )
    ax[0].legend(fontsize=7, ncol=3, loc="center", bbox_to_anchor=(0.5, 0.2))
    ds, r = _rows(results["depth"])
    ax[1].errorbar(
        ds, [x["gnc_gen"] for x in r], yerr=[_se(x) for x in r], fmt="o-", color="C0", capsize=3, label="G&C"
    )
    ax[1].plot(ds, [x["prior_gen"] for x in r], ":", color="C0", label="prior (normalised)")
    ax[1].plot(ds, [x["gd_gen"] for x in r], "s--", color="C3", mfc="none", label="GD")
    ax[1].set(
        xlabel="depth d (width 5, linear)",
        ylabel="generalization loss",
        ylim=(0, None),
        xticks=ds,
        title=f"depth, normalised prior: G&C improves (ε = {results['eps_depth']:g})",
    )
    ax[1].legend(fontsize=8)
    ws, r = _rows(results["width"]["linear"])
    for w, x in zip(ws, r):
        eps = sorted(float(e) for e in x["eps_sweep"])
        ax[2].plot(eps, [x["eps_sweep"][f"{e:g}"] for e in eps], "o-", label=f"G&C width {w}")
    ax[2].axhline(r[0]["prior_gen"], color="k", ls=":", lw=1, label="prior")
    ds, rd = _rows(results["depth"])
    for d, x in zip(ds, rd):
        if d in (2, max(ds)):
            eps = sorted(float(e) for e in x["eps_sweep"])
            ax[2].plot(eps, [x["eps_sweep"][f"{e:g}"] for e in eps], "^--", label=f"G&C depth {d} (normalised)")
    ax[2].set(
        xscale="log",
        xlabel="ε (acceptance threshold on L_train)",
        ylabel="G&C generalization loss",
        ylim=(0, None),
        title="robustness to ε (linear)",
    )
    ax[2].legend(fontsize=7)
    pg = results["paper_gd"]
    P = len(pg["paper"]["gen_per_problem"])
    x = np.arange(P)
    w5 = _rows(results["width"]["linear"])[1][0]
    bars = (
        ("GD, paper setting", pg["paper"]["gen_per_problem"], "C3"),
        ("GD, module setting", pg["module"]["gen_per_problem"], "C1"),
        (f"G&C (ε = {results['eps_width']:g})", w5["gnc_gen_per_problem"], "C0"),
    )
    for j, (lab, vals, c) in enumerate(bars):
        ax[3].bar(x + (j - 1) * 0.27, vals, 0.27, color=c, label=lab)
    ax[3].axhline(RECOVERED, color="k", ls=":", lw=1, label=f"'recovered' below {RECOVERED:g}")
    ax[3].set(
        yscale="log",
        xticks=x,
        xlabel="problem",
        ylabel="generalization loss",
        title="width 5, depth 2: GD per problem, two settings",
    )
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
