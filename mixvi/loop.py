"""The compile-once training loop shared by ``MixVI`` and ``extras``: a pure ``step(state, *operands)
-> (state, loss)`` run in chunks of one compiled program, a tqdm bar at the Python edge, and a
divergence guard that stops at the first bad step and keeps the last good state.

One compiled chunk
------------------
A chunk is one jitted ``lax.while_loop`` that runs *up to* ``length`` steps: how many it runs is an
operand (``stop``), so the same program serves every chunk of a run, the short tail included, and every
later run whatever its ``num_steps``; the steps past ``stop`` are not executed at all (a dynamic trip
count, not masked work), so the result is bit for bit that of running exactly ``num_steps`` steps. The
per-step outputs go into a (length, ...) buffer of which the Python side keeps the first ``stop`` rows.
The model's data travel as ``operands`` (jit arguments), not as closure constants, so new data of the
same shapes reuse the program. On CPU a chunk whose steps are cheap is compiled at LLVM optimisation
level 1 (:data:`CPU_COMPILER_OPTIONS`): the same steps, sooner; one whose target work per step reaches
:data:`HEAVY_STEP_COST` keeps XLA's default level, which vectorises a data-heavy likelihood's loops.

The guard
---------
Each step evaluates ``is_ok(new_state, loss)`` and the loop stops at the first False, recording the
global index of that step (``bad_at``, one int32 in the carry; no per-step select over the state). Only
when a chunk fails is it run again from its first state with ``stop`` = the steps before the bad one
(the same program and inputs, so the same bits): that gives the last good state for the error.

Garbage collection
------------------
Tracing a step creates some hundred thousand short-lived Python objects, and in a process that has
imported JAX and NumPyro (about 200 000 tracked objects) each full pass of Python's cyclic garbage
collector costs tens of milliseconds: with the collector paused, tracing the default step of eight
schools took 0.30-0.33 s instead of 0.46 s (fresh processes, 2-core CPU, 2026-12-06). The loop pauses it
(:func:`gc_paused`) while the chunk is traced, lowered and compiled, and restores it after; the garbage
of those seconds is collected at the next pass.

BLAS threads
------------
On the CPU backend JAX's linear-algebra kernels (triangular solves, Cholesky factors) call the OpenBLAS
that SciPy ships, whose worker threads busy-wait and contend with XLA's own. With ``blas_threads`` set,
the chunks run with OpenBLAS limited to that many threads (threadpoolctl), restored afterwards: the
kernels inside a step are small (the dense metric's whitening solves of N right-hand sides) and are
slower split across threads. Measured on a 2-core CPU (2026-12-04): a step with the dense metric at
d = 256 took 0.93 ms with OpenBLAS's two threads and 0.48 ms with one. ``MixVI.update`` and ``evaluate``
apply the same limit per call where the metric's step calls OpenBLAS; the controller of the libraries is
built once per process, so a limit costs ~0.015 ms.

The cache
---------
Without ``cache_key`` the chunk is compiled once per :func:`scan_loop` call (``step`` is usually a new
closure each call). With ``cache_key`` the jitted chunk is kept in a module-level LRU (``CACHE_SIZE``
entries, :func:`clear_cache` empties it) under ``(cache_key, length)``, and the first call's ``step`` and
``is_ok`` serve every later call with an equal key. The caller therefore promises: **two calls with
equal keys run the same function of (state, *operands)**. ``MixVI`` keys on the model function, the
guide's class and latent structure (site names, shapes, dtypes, in order), the guide's N, metric and
weights, the :class:`mixvi.vi.Settings` of its step, the auto-step flag, ``max_rejected`` and the static
(non-array) model arguments with their types; the array arguments are operands and their shapes and
dtypes are the jit's own cache key. So a second ``run``, a new ``num_steps``, ``resume`` and a new
``MixVI`` and guide for the same model and shapes reuse one compiled program. The cache holds a
reference to the first caller's step (for ``MixVI``: the engine, its guide and the prototype trace).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CHUNK = 256
"""Steps per compiled chunk (the size of its output buffer) when neither ``chunk_size`` nor a shorter
uncached run asks for another; a run of any length reuses the one program."""
CACHE_SIZE = 32
"""Compiled chunks kept by the module-level cache (least recently used dropped first)."""
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": "1"}
"""XLA options of a cheap chunk on the CPU backend: LLVM's optimisation level 1 instead of XLA's default 3.
On the 2-core CPU it cuts the first run of a small model by 0.1-0.5 s (compilation of eight schools'
chunk 2.28-2.42 against 2.64-2.69 s; gmm_d10 2.29 / 2.59, label_switching 2.65 / 3.16, 2026-12-06) and
leaves its steps as fast or faster (gmm_d100 1.29 against 1.52 ms); a run is mostly compilation on such
models. Other backends keep their defaults, and so do heavy steps (:data:`HEAVY_STEP_COST`)."""
LEVEL0_COMPILER_OPTIONS = {"xla_backend_optimization_level": "0"}
"""LLVM's optimisation level 0: compiles faster than :data:`CPU_COMPILER_OPTIONS` and leaves the steps
unoptimised, so it pays only for short runs on small models (docs/scaling.md). Not a default; set
``mixvi.loop.CPU_COMPILER_OPTIONS = dict(mixvi.loop.LEVEL0_COMPILER_OPTIONS)`` before the first ``run`` to
opt in (the test suite does)."""
HEAVY_STEP_COST = 1e8
"""Flop equivalents of the target's work in one step (N B value-and-gradients of V, XLA's cost analysis:
:func:`mixvi.potential_cost.model_cost`) from which the chunk keeps XLA's default optimisation level on
CPU. Level 1 leaves LLVM's loop vectoriser off, and a data-heavy likelihood's elementwise loops then run
slower: a logistic regression on 1000 rows, N = 20, B = 10 (2026-12-06, 2-core AMD EPYC VM) took 7.98
against 6.31 ms per step at d = 1000 (8e8 per step; level 1 saved 0.1 s of compilation) and 1.47 against
1.36 ms at d = 100 (8e7 per step, where level 1 saved 0.8 s: 7000 steps to make it up)."""
BAD_NUM_STEPS = "num_steps must be >= 1, got {}"
BAD_BLAS_THREADS = "blas_threads must be a positive integer or None (leave BLAS as it is), got {!r}"
BAD_CHUNK_SIZE = "chunk_size must be a positive integer or None, got {!r}"
DIVERGED = "the run diverged at step {} (non-finite loss or parameters)"
KEPT_STATE = ". The last finite state is kept on this error as .state."

_CACHES: list[OrderedDict] = []


def new_cache() -> OrderedDict:
    """A least-recently-used cache of compiled functions (at most ``CACHE_SIZE`` entries, filled with
    :func:`remember`) that :func:`clear_cache` empties."""
    cache: OrderedDict = OrderedDict()
    _CACHES.append(cache)
    return cache


def remember(cache: OrderedDict, key: Hashable, value: Any) -> Any:
    """Store ``value`` under ``key`` in ``cache`` (dropping the oldest entries past ``CACHE_SIZE``); returns it."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
    return value


_CHUNKS = new_cache()


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
        The per-step losses; exactly the steps run.
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
    """True when every inexact leaf of ``tree`` is finite.

    Read off one sum per leaf, sum(x * 0): 0 when every element is finite and NaN otherwise (NaN * 0 and
    inf * 0 are NaN, and a NaN term makes the sum NaN), so nothing can overflow. On XLA's CPU backend that
    is a float reduction like any other, where ``jnp.all(jnp.isfinite(x))`` is a boolean one that cost the
    guard 5-10 % of a step (logistic regression, d = 1000, N = 20: 5.85 against 5.52 ms per step)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.isfinite(jnp.sum(x * 0)) for x in leaves]))


def default_is_ok(state: Any, loss: jax.Array) -> jax.Array:
    """The default guard: a finite loss and a finite state."""
    return jnp.isfinite(loss) & tree_all_finite(state)


def clear_cache() -> None:
    """Drop every compiled program kept across calls: :func:`scan_loop`'s chunks and MixVI's and the
    guide's set-up and evaluation programs."""
    for cache in _CACHES:
        cache.clear()


def enable_compilation_cache(path: str | os.PathLike | None = None, *, min_compile_time_secs: float = 0.0) -> str:
    """Turn on JAX's persistent compilation cache, so a new process reuses the programs compiled before.

    An opt-in (it writes compiled programs to disk). Call it at the start of a script, before the first
    compilation: JAX reads the setting when it first compiles. The cache is keyed by JAX on the program,
    the JAX and XLA versions and the device, so stale entries are never used.

    Parameters
    ----------
    path : path, optional
        The cache folder (created if needed); default ``$MIXVI_CACHE_DIR``, else ``~/.cache/mixvi/jax``.
    min_compile_time_secs : float
        Cache only programs that took at least this long to compile. The default 0 also keeps the
        many small programs of a model's set-up (NumPyro runs the model op by op there).

    Returns
    -------
    str
        The cache folder.
    """
    if path is None:
        path = os.environ.get("MIXVI_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mixvi", "jax")
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    # on even where the process (or JAX_ENABLE_COMPILATION_CACHE) had turned it off
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def split_operands(args: tuple, kwargs: dict) -> tuple[list, Hashable | None, Callable[[list], tuple]]:
    """Split a function's arguments into array operands and a static description of the rest.

    Parameters
    ----------
    args, kwargs
        The arguments (e.g. a model's).

    Returns
    -------
    tuple
        ``(operands, static_key, rebuild)``: the array leaves (``jax.Array`` / ``np.ndarray``) in order;
        a hashable key of the tree structure and of the other leaves with their types (None when a leaf
        is not hashable); ``rebuild(operands) -> (args, kwargs)`` that puts (possibly traced) operands
        back in place.
    """
    leaves, treedef = jax.tree.flatten((args, kwargs))
    is_array = [isinstance(x, jax.Array | np.ndarray) for x in leaves]
    operands = [x for x, a in zip(leaves, is_array) if a]
    fixed = [None if a else x for x, a in zip(leaves, is_array)]
    static: Hashable | None = (treedef, tuple(is_array), tuple((type(x), x) for x in fixed))
    try:
        hash(static)
    except TypeError:
        static = None

    def rebuild(values: list) -> tuple:
        it = iter(values)
        return jax.tree.unflatten(treedef, [next(it) if a else x for x, a in zip(fixed, is_array)])

    return operands, static, rebuild


TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)
"""What tracing a model that needs concrete data (Python control flow on values) raises."""
NEEDS_CONSTANTS: set = set()
"""Cache keys whose model cannot take its arrays as jit operands: those run with the arguments closed
over, as constants (recompiled per call)."""


def call_compiled(
    cache: OrderedDict,
    key: Hashable | None,
    fn: Callable,
    inputs: tuple,
    args: tuple,
    kwargs: dict,
    compiler_options: dict | None = None,
) -> Any:
    """``fn(args, kwargs, *inputs)`` jitted with the arrays among the model arguments ``args``, ``kwargs``
    as operands, compiled once per ``key`` (plus the static arguments' description) and kept in
    ``cache``; the caller promises that equal keys mean the same ``fn``. A model that needs concrete
    data runs with the arguments as constants instead (and its key is remembered in ``NEEDS_CONSTANTS``);
    ``key=None`` compiles anew. ``compiler_options`` go to ``jax.jit`` (e.g. :func:`chunk_compiler_options`:
    a step compiled as the chunk compiles it gives the chunk's bits)."""
    operands, static, rebuild = split_operands(args, kwargs)
    if compiler_options is not None and traced((operands, inputs)):
        # inside another jit (a scan of update, jax.jit(update)) this one is inlined: options only go to the top
        compiler_options, key = None, None if key is None else (key, "inlined")
    full = None if key is None or static is None else (key, static)
    if full is None or full not in NEEDS_CONSTANTS:
        jitted = cache.get(full) if full is not None else None
        if jitted is None:
            jitted = jax.jit(lambda ops, *xs: fn(*rebuild(list(ops)), *xs), compiler_options=compiler_options)
            if full is not None:
                remember(cache, full, jitted)
        try:
            return jitted(operands, *inputs)
        except TRACER_ERRORS:
            if full is not None:
                NEEDS_CONSTANTS.add(full)
    return jax.jit(lambda *xs: fn(args, kwargs, *xs), compiler_options=compiler_options)(*inputs)


def traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a tracer (the call runs inside another transformation)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _loss_of(out: Any) -> jax.Array:
    """The loss of a step's second output: the output itself, or its ``loss`` field."""
    return out.loss if hasattr(out, "loss") else out


class _Chunk(NamedTuple):
    """A jitted chunk (``run``) and ``layout(state, operands)``, the outputs' layout that
    :func:`_unpack` reads its buffers with."""

    run: Callable
    layout: Callable


def _packable(leaf: Any) -> bool:
    """A scalar output that travels as one uint32 word of the packed row: 32-bit values bit for bit."""
    return leaf.shape == () and (leaf.dtype == jnp.bool_ or jnp.dtype(leaf.dtype).itemsize == 4)


def _to_word(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    return jax.lax.bitcast_convert_type(x, jnp.uint32)


def _make_chunk(step: Callable, is_ok: Callable, length: int, compiler_options: dict | None) -> _Chunk:
    """``run(state, start, stop, operands) -> (state, bad_at, buffers)``, jitted: up to ``stop`` <=
    ``length`` steps, stopping after the first step that ``is_ok`` rejects (its global index
    ``start + k`` in ``bad_at``, else -1); :func:`_unpack` reads the first ``n`` steps' outputs from
    ``buffers`` on the host. The step's scalar outputs are stored as one row of uint32 words per
    step: one buffer update per step instead of one per output (each is a kernel of its own)."""
    # jitted so that the shape probe and the loop body share one trace of the step
    one = jax.jit(lambda state, operands: step(state, *operands))

    def layout(state, operands):
        leaves, treedef = jax.tree.flatten(jax.eval_shape(one, state, operands)[1])
        packed = [i for i, leaf in enumerate(leaves) if _packable(leaf)]
        return leaves, treedef, packed if len(packed) > 1 else []

    def chunk(state, start, stop, operands):
        leaves, _, packed = layout(state, operands)
        rest = [i for i in range(len(leaves)) if i not in packed]
        shapes = [(len(packed),)] if packed else []
        buffers = [jnp.zeros((length,) + s, jnp.uint32) for s in shapes]
        buffers += [jnp.zeros((length,) + leaves[i].shape, leaves[i].dtype) for i in rest]

        def cond(carry):
            _, bad_at, k, _ = carry
            return (k < stop) & (bad_at < 0)

        def body(carry):
            state, bad_at, k, buffers = carry
            new_state, out = one(state, operands)
            bad_at = jnp.where(is_ok(new_state, _loss_of(out)), bad_at, start + k)
            values = jax.tree.leaves(out)
            rows = [jnp.stack([_to_word(values[i]) for i in packed])] if packed else []
            rows += [values[i] for i in rest]
            buffers = [jax.lax.dynamic_update_index_in_dim(b, v, k, 0) for b, v in zip(buffers, rows)]
            return new_state, bad_at, k + 1, buffers

        init = (state, jnp.asarray(-1, jnp.int32), jnp.asarray(0, jnp.int32), buffers)
        state, bad_at, _, buffers = jax.lax.while_loop(cond, body, init)
        return state, bad_at, buffers

    return _Chunk(jax.jit(chunk, compiler_options=compiler_options), layout)


def _unpack(buffers: list, n: int, layout: tuple) -> Any:
    """The first ``n`` steps' outputs, on the host, from a chunk's buffers (the packed scalars' words
    read back as their dtypes, bit for bit)."""
    leaves, treedef, packed = layout
    buffers = [np.asarray(b)[:n] for b in buffers]
    words = buffers.pop(0) if packed else None
    out = []
    for i, leaf in enumerate(leaves):
        if i in packed:
            w = words[:, packed.index(i)]
            out.append(w != 0 if leaf.dtype == jnp.bool_ else w.view(leaf.dtype))
        else:
            out.append(buffers.pop(0))
    return jax.tree.unflatten(treedef, out)


def chunk_compiler_options(step_cost: float | None = None) -> dict:
    """The XLA options a chunk is compiled with on this process's default backend: :data:`CPU_COMPILER_OPTIONS`
    on CPU unless ``step_cost`` (flop equivalents of the target's work per step; None: unknown) reaches
    :data:`HEAVY_STEP_COST`, else none (``{}``: XLA's defaults)."""
    if jax.default_backend() != "cpu" or (step_cost is not None and step_cost >= HEAVY_STEP_COST):
        return {}
    return dict(CPU_COMPILER_OPTIONS)


def options_key(compiler_options: dict) -> tuple:
    """XLA options as a hashable part of a compiled program's cache key."""
    return tuple(sorted(compiler_options.items()))


def _chunk_for(
    step: Callable, is_ok: Callable, length: int, cache_key: Hashable | None, compiler_options: dict
) -> _Chunk:
    if cache_key is None:
        return _make_chunk(step, is_ok, length, compiler_options)
    key = (cache_key, length, options_key(compiler_options))
    chunk = _CHUNKS.get(key)
    return remember(_CHUNKS, key, _make_chunk(step, is_ok, length, compiler_options) if chunk is None else chunk)


def check_blas_threads(threads: Any) -> int | None:
    """``threads`` if it is None or a positive int; ValueError otherwise."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(BAD_BLAS_THREADS.format(threads))
    return threads


_BLAS_CONTROLLER: list = []
"""threadpoolctl's controller of this process's BLAS libraries, built once: finding the libraries takes ~4 ms,
setting a limit with the controller ~0.015 ms (a loop of ``MixVI.update`` calls sets one per call)."""


def _blas_controller() -> Any:
    if not _BLAS_CONTROLLER:
        try:
            import scipy.linalg  # noqa: F401 - loads the OpenBLAS that JAX's CPU kernels call, so the limit finds it
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS_CONTROLLER.append(None)
        else:
            _BLAS_CONTROLLER.append(ThreadpoolController())
    return _BLAS_CONTROLLER[0]


def blas_limit(threads: int | None) -> contextlib.AbstractContextManager:
    """A context in which the BLAS libraries loaded in this process use at most ``threads`` threads (module
    docstring); a no-op for None, off the CPU backend, or without threadpoolctl."""
    if threads is None or jax.default_backend() != "cpu":
        return contextlib.nullcontext()
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=threads, user_api="blas")


@contextlib.contextmanager
def gc_paused():
    """A context in which Python's cyclic garbage collector does not run (module docstring), restored on
    exit (left off if it was off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _index(i: int) -> np.ndarray:
    # a NumPy scalar, not a JAX array: no dispatch of its own before the chunk's call
    return np.asarray(i, np.int32)


def scan_loop(
    step: Callable[..., tuple[Any, Any]],
    state: Any,
    num_steps: int,
    *,
    is_ok: Callable[[Any, jax.Array], jax.Array] = default_is_ok,
    progress_bar: bool = False,
    chunk_size: int | None = None,
    desc: str = "",
    describe_failure: Callable[[Any, int], str] | None = None,
    callback: Callable[[Any, np.ndarray, int], None] | None = None,
    operands: tuple | list = (),
    cache_key: Hashable | None = None,
    blas_threads: int | None = None,
    compiler_options: dict | None = None,
) -> LoopResult:
    """Run ``num_steps`` of ``step`` in chunks of one compiled ``lax.while_loop`` (module docstring).

    Parameters
    ----------
    step : callable
        ``step(state, *operands)`` returns ``(new_state, loss)`` or ``(new_state, info)`` with
        ``info`` a NamedTuple that has a ``loss`` field (then the stacked infos come back as
        ``LoopResult.info``). Pure.
    state : pytree
        The initial state.
    num_steps : int
        Steps to run (>= 1).
    is_ok : callable
        ``is_ok(new_state, loss)``; at the first False the loop stops and raises ``DivergenceError``
        carrying the last good state.
    progress_bar : bool
        Show a tqdm bar (started after compilation, so its rate and ETA are those of the steps).
    chunk_size : int, optional
        Steps between returns to Python (bar updates, ``callback``). The compiled chunk holds
        ``max(chunk_size, CHUNK)`` steps with ``cache_key`` (so any ``chunk_size`` up to ``CHUNK``
        reuses it) and ``min(chunk_size or CHUNK, num_steps)`` without. The result does not depend on
        it or on the progress bar.
    desc : str
        The bar's label.
    describe_failure : callable, optional
        ``describe_failure(state, step)`` adds advice to the divergence message.
    callback : callable, optional
        ``callback(state, losses_so_far, steps_done)`` after every chunk (checkpoints, logging).
    operands : tuple or list
        Arrays passed to every step after the state, as jit arguments (e.g. the model's data): new
        values of the same shapes and dtypes reuse the compiled chunk.
    cache_key : hashable, optional
        Keep the compiled chunk in the module-level cache under ``(cache_key, length)``; every call
        with an equal key must run the same function of ``(state, *operands)`` (module docstring).
    blas_threads : int, optional
        Run the chunks with the BLAS libraries limited to this many threads (module docstring); None
        leaves them as they are.
    compiler_options : dict, optional
        XLA options of the chunk (``{}``: XLA's defaults); None takes :func:`chunk_compiler_options` of an
        unknown step cost.

    Returns
    -------
    LoopResult

    Raises
    ------
    DivergenceError
        At the first step that ``is_ok`` rejects. A KeyboardInterrupt (Ctrl-C, or raised by the
        callback) ends the loop early and returns the last finished state with ``interrupted=True``
        instead of losing the work.
    """
    if num_steps < 1:
        raise ValueError(BAD_NUM_STEPS.format(num_steps))
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(BAD_CHUNK_SIZE.format(chunk_size))
    if cache_key is not None:
        length = CHUNK if chunk_size is None else max(chunk_size, CHUNK)
    else:
        length = min(chunk_size or CHUNK, num_steps)
    per_call = chunk_size or (max(1, num_steps // 20) if progress_bar else length)
    per_call = min(per_call, length)
    check_blas_threads(blas_threads)
    operands = tuple(operands)
    options = chunk_compiler_options() if compiler_options is None else dict(compiler_options)
    chunk = _chunk_for(step, is_ok, length, cache_key, options)
    with gc_paused():  # tracing the step, lowering and compiling it (a no-op when the jit has it)
        layout = chunk.layout(state, operands)
        chunk.run.lower(state, _index(0), _index(0), operands).compile()  # fills the jit's cache
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc=desc or None)
    pieces: list[np.ndarray] = []
    infos: list[Any] = []
    done = 0
    interrupted = False
    with blas_limit(blas_threads):
        try:
            while done < num_steps:
                count = min(per_call, num_steps - done)
                try:
                    new_state, bad_at, outs = chunk.run(state, _index(done), _index(count), operands)
                    bad_at = int(bad_at)
                    outs = _unpack(outs, count if bad_at < 0 else bad_at - done, layout)
                except KeyboardInterrupt:
                    interrupted = True
                    break
                losses = _loss_of(outs)
                if bad_at >= 0:
                    good = np.concatenate(pieces + [losses])
                    if bad_at > done:  # the same program from the chunk's start, stopped before the bad step
                        state = chunk.run(state, _index(done), _index(bad_at - done), operands)[0]
                    msg = DIVERGED.format(bad_at)
                    if describe_failure is not None:
                        msg += "; " + describe_failure(state, bad_at)
                    raise DivergenceError(msg + KEPT_STATE, bad_at, state, good)
                state = new_state
                pieces.append(losses)
                infos.append(outs)
                done += count
                if bar is not None:
                    bar.update(count)
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
        info = jax.tree.map(lambda *parts: np.concatenate(parts), *infos)
    return LoopResult(state, jax.device_put(all_losses), interrupted, info)
