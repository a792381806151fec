"""The jit-once training loop shared by ``MixVI`` and ``extras``: ``lax.scan`` over a pure
``step(state) -> (state, loss)`` in chunks, a tqdm bar at the Python edge, and a divergence guard
that stops at the first bad step and keeps the last good state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class DivergenceError(FloatingPointError):
    """A run produced a non-finite loss or state. ``step`` is the 0-based index of the bad step
    within the run, ``state`` the last good state (after ``step`` steps), ``losses`` the losses of
    the good steps."""

    def __init__(self, message: str, step: int, state: Any, losses: np.ndarray):
        super().__init__(message)
        self.step = step
        self.state = state
        self.losses = losses


class LoopResult(NamedTuple):
    """The outcome of :func:`scan_loop`.

    Attributes
    ----------
    state : Any
        The final state (after a KeyboardInterrupt: the last finished chunk's state).
    losses : jax.Array
        The per-step losses (NaN where ``is_ok`` failed); exactly the steps run.
    interrupted : bool
        Whether a KeyboardInterrupt cut the run short.
    info : Any
        When ``step`` returns an info pytree with a ``loss`` field instead of a bare loss: that
        pytree stacked over the steps run (None otherwise).
    """

    state: Any
    losses: jax.Array
    interrupted: bool = False
    info: Any = None


def tree_all_finite(tree: Any) -> jax.Array:
    """True when every inexact leaf of ``tree`` is finite."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def default_is_ok(state: Any, loss: jax.Array) -> jax.Array:
    return jnp.isfinite(loss) & tree_all_finite(state)


def _loss_of(out: Any) -> jax.Array:
    """The loss of a step's second output: the output itself, or its ``loss`` field."""
    return out.loss if hasattr(out, "loss") else out


def _make_chunk(step: Callable, is_ok: Callable, length: int):
    def body(carry, _):
        state, bad_at, i = carry
        new_state, out = step(state)
        loss = _loss_of(out)
        ok = is_ok(new_state, loss)
        keep = (bad_at < 0) & ok
        state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new_state, state)
        bad_at = jnp.where((bad_at < 0) & ~ok, i, bad_at)
        loss = jnp.where(keep, loss, jnp.nan)
        return (state, bad_at, i + 1), (out._replace(loss=loss) if hasattr(out, "loss") else loss)

    @jax.jit
    def chunk(state, start):
        (state, bad_at, _), losses = jax.lax.scan(body, (state, jnp.asarray(-1, jnp.int32), start), None, length=length)
        return state, bad_at, losses

    return chunk


def scan_loop(
    step: Callable[[Any], tuple[Any, Any]],
    state: Any,
    num_steps: int,
    *,
    is_ok: Callable[[Any, jax.Array], jax.Array] = default_is_ok,
    progress_bar: bool = False,
    chunk_size: int | None = None,
    desc: str = "",
    describe_failure: Callable[[Any, int], str] | None = None,
    callback: Callable[[Any, np.ndarray, int], None] | None = None,
) -> LoopResult:
    """Run ``num_steps`` of ``step`` with ``lax.scan``, compiled once per chunk length.

    ``step(state)`` returns ``(new_state, loss)`` or ``(new_state, info)`` with ``info`` a NamedTuple
    that has a ``loss`` field (then the stacked infos come back as ``LoopResult.info``). The result does not depend on ``chunk_size`` or the progress bar. If ``is_ok(new_state, loss)``
    is False at some step, the loop stops and raises ``DivergenceError`` carrying the last good
    state; ``describe_failure(state, step)`` may add advice to the message. ``callback(state,
    losses_so_far, steps_done)`` runs after every chunk (checkpoints, logging). A KeyboardInterrupt
    (Ctrl-C, or raised by the callback) ends the loop early and returns the last finished state with
    ``interrupted=True`` instead of losing the work.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if chunk_size is None:
        chunk_size = max(1, num_steps // 20) if progress_bar else num_steps
    chunk_size = min(chunk_size, num_steps)
    chunks: dict[int, Callable] = {}
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc=desc or None)
    pieces: list[np.ndarray] = []
    infos: list[Any] = []
    done = 0
    interrupted = False
    try:
        while done < num_steps:
            length = min(chunk_size, num_steps - done)
            if length not in chunks:
                chunks[length] = _make_chunk(step, is_ok, length)
            try:
                new_state, bad_at, outs = chunks[length](state, jnp.asarray(done, jnp.int32))
                losses = np.asarray(_loss_of(outs))
                bad_at = int(bad_at)
            except KeyboardInterrupt:
                interrupted = True
                break
            if bad_at >= 0:
                good = np.concatenate(pieces + [losses[: bad_at - done]])
                msg = f"the run diverged at step {bad_at} (non-finite loss or parameters)"
                if describe_failure is not None:
                    msg += "; " + describe_failure(new_state, bad_at)
                msg += ". The last finite state is kept on this error as .state."
                raise DivergenceError(msg, bad_at, new_state, good)
            state = new_state
            pieces.append(losses)
            infos.append(outs)
            done += length
            if bar is not None:
                bar.update(length)
                bar.set_postfix_str(f"loss {np.mean(losses):.4g}")
            if callback is not None:
                try:
                    callback(state, np.concatenate(pieces), done)
                except KeyboardInterrupt:
                    interrupted = done < num_steps
                    break
    finally:
        if bar is not None:
            bar.close()
    all_losses = np.concatenate(pieces) if pieces else np.zeros((0,), np.float32)
    info = None
    if infos and hasattr(infos[0], "loss"):
        info = jax.tree.map(lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *infos)
    return LoopResult(state, jnp.asarray(all_losses), interrupted, info)
