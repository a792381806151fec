"""mixvi.loop: the chunked lax.scan loop, its divergence guard, interrupts and stacked infos."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixvi.loop import DivergenceError, LoopResult, scan_loop, split_operands, tree_all_finite


def _affine(x):
    """x <- 0.9 x + 1, loss = the state before the step; from x0 = 0, x_k = 10 (1 - 0.9^k)."""
    return 0.9 * x + 1.0, x


def _counter(nan_at):
    """A state (i, x) with x <- x + 1 and loss x_new, except that step nan_at makes x NaN."""

    def step(state):
        i, x = state
        x = jnp.where(i == nan_at, jnp.nan, x + 1.0)
        return (i + 1, x), x

    return step


def _start():
    return (jnp.asarray(0, jnp.int32), jnp.asarray(0.0, jnp.float32))


class Info(NamedTuple):
    loss: jnp.ndarray
    index: jnp.ndarray


@pytest.mark.parametrize(
    ("chunk_size", "progress_bar"), [(1, False), (7, False), (None, False), (None, True), (64, False)]
)
def test_result_does_not_depend_on_chunk_size(chunk_size, progress_bar):
    """Chunk sizes 1, 7, None (and the progress bar) give bit-identical states and losses to a single scan."""
    reference = scan_loop(_affine, jnp.float32(0.0), 20)
    res = scan_loop(_affine, jnp.float32(0.0), 20, chunk_size=chunk_size, progress_bar=progress_bar)
    assert isinstance(res, LoopResult) and not res.interrupted and res.info is None
    assert res.losses.shape == (20,)
    np.testing.assert_array_equal(np.asarray(res.losses), np.asarray(reference.losses))
    np.testing.assert_array_equal(np.asarray(res.state), np.asarray(reference.state))


def test_losses_follow_the_recursion():
    """The losses are the iterates before each step and the state is the iterate after the last one."""
    res = scan_loop(_affine, jnp.float32(0.0), 20, chunk_size=7)
    k = np.arange(20)
    np.testing.assert_allclose(np.asarray(res.losses), 10 * (1 - 0.9**k), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(res.state), 10 * (1 - 0.9**20), rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 4, None])
def test_non_finite_step_raises_with_the_last_good_state(chunk_size):
    """A step that goes non-finite at step k raises DivergenceError with step k, the state after k steps and k losses."""
    k = 6
    with pytest.raises(DivergenceError, match="diverged at step 6") as err:
        scan_loop(_counter(k), _start(), 10, chunk_size=chunk_size)
    e = err.value
    assert e.step == k
    i, x = e.state
    assert int(i) == k and float(x) == float(k)
    np.testing.assert_array_equal(e.losses, np.arange(1, k + 1, dtype=np.float32))
    assert isinstance(e, FloatingPointError)


def test_divergence_at_the_first_step_keeps_the_initial_state():
    """A bad first step raises with step 0, the initial state and no losses."""
    with pytest.raises(DivergenceError) as err:
        scan_loop(_counter(0), _start(), 5, chunk_size=2)
    assert err.value.step == 0
    assert int(err.value.state[0]) == 0 and float(err.value.state[1]) == 0.0
    assert err.value.losses.shape == (0,)


def test_non_finite_state_with_finite_loss_is_caught():
    """The default guard also checks the state: a NaN in a state leaf stops the run even if the loss is finite."""

    def step(state):
        i, x = state
        x = jnp.where(i == 3, jnp.nan, x + 1.0)
        return (i + 1, x), jnp.float32(1.0)

    with pytest.raises(DivergenceError) as err:
        scan_loop(step, _start(), 8, chunk_size=5)
    assert err.value.step == 3 and float(err.value.state[1]) == 3.0


def test_is_ok_false_stops_the_run():
    """A custom is_ok returning False at step k stops there as a divergence would."""

    def is_ok(state, loss):
        return loss < 5.0

    with pytest.raises(DivergenceError) as err:
        scan_loop(_counter(-1), _start(), 10, is_ok=is_ok, chunk_size=3)
    assert err.value.step == 4
    assert float(err.value.state[1]) == 4.0
    np.testing.assert_array_equal(err.value.losses, [1.0, 2.0, 3.0, 4.0])


def test_describe_failure_adds_to_the_message():
    """describe_failure(state, step) is called with the last good state and its text joins the message."""
    seen = []

    def describe(state, step):
        seen.append((int(state[0]), step))
        return "try a smaller step"

    with pytest.raises(
        DivergenceError,
        match=r"diverged at step 2 \(non-finite loss or parameters\); try a smaller step\. The last finite state",
    ):
        scan_loop(_counter(2), _start(), 5, describe_failure=describe)
    assert seen == [(2, 2)]


@pytest.mark.parametrize("chunk_size", [3, None])
def test_named_tuple_info_is_stacked_over_the_steps(chunk_size):
    """A step returning an info NamedTuple with a loss field gives LoopResult.info stacked over the steps."""

    def step(state):
        i, x = state
        x = x + 2.0
        return (i + 1, x), Info(loss=x, index=i)

    res = scan_loop(step, _start(), 8, chunk_size=chunk_size)
    assert isinstance(res.info, Info)
    np.testing.assert_array_equal(res.info.index, np.arange(8))
    np.testing.assert_array_equal(res.info.loss, 2.0 * np.arange(1, 9))
    np.testing.assert_array_equal(np.asarray(res.losses), res.info.loss)


class MixedInfo(NamedTuple):
    loss: jnp.ndarray
    count: jnp.ndarray
    flag: jnp.ndarray
    word: jnp.ndarray
    gap: jnp.ndarray
    vector: jnp.ndarray
    wide: jnp.ndarray


@pytest.mark.parametrize("chunk_size", [3, None])
def test_scalar_outputs_of_every_dtype_come_back_bit_for_bit(chunk_size):
    """The scalar outputs stored as one packed row per step read back with their dtypes and exact values
    (negative ints, uint32 past 2^31, signed zeros, NaN, infs, bools), beside the non-scalar outputs."""

    def step(state):
        i, x = state
        info = MixedInfo(
            loss=jnp.where(i % 3 == 0, -0.0, x * 0.5),
            count=-7 * i - 2_000_000_000 * (i % 2),
            flag=i % 2 == 1,
            word=jnp.uint32(4_000_000_000) + i.astype(jnp.uint32),
            gap=jnp.where(i == 4, jnp.nan, jnp.where(i == 6, -jnp.inf, x)),
            vector=jnp.stack([x, -x]),
            wide=jnp.asarray(i, jnp.int16),
        )
        return (i + 1, x + 1.0), info

    def reference(k):
        return (-0.0 if k % 3 == 0 else 0.5 * k, -7 * k - 2_000_000_000 * (k % 2), k % 2 == 1)

    res = scan_loop(step, _start(), 8, chunk_size=chunk_size)
    expected = [reference(k) for k in range(8)]
    assert res.info.loss.dtype == np.float32 and res.info.count.dtype == np.int32
    assert res.info.flag.dtype == np.bool_ and res.info.word.dtype == np.uint32 and res.info.wide.dtype == np.int16
    np.testing.assert_array_equal(res.info.loss.view(np.uint32), np.array([e[0] for e in expected], np.float32).view(np.uint32))
    np.testing.assert_array_equal(res.info.count, np.array([e[1] for e in expected], np.int32))
    np.testing.assert_array_equal(res.info.flag, np.array([e[2] for e in expected]))
    np.testing.assert_array_equal(res.info.word, np.uint32(4_000_000_000) + np.arange(8, dtype=np.uint32))
    np.testing.assert_array_equal(res.info.gap, np.array([0, 1, 2, 3, np.nan, 5, -np.inf, 7], np.float32))
    np.testing.assert_array_equal(res.info.vector, np.stack([np.arange(8), -np.arange(8)], axis=1).astype(np.float32))
    np.testing.assert_array_equal(res.info.wide, np.arange(8, dtype=np.int16))


def test_named_tuple_info_divergence_reports_good_losses():
    """With an info NamedTuple the divergence guard reads its loss field: a NaN loss at step k raises with k losses."""

    def step(state):
        i, x = state
        loss = jnp.where(i == 5, jnp.nan, x)
        return (i + 1, x + 1.0), Info(loss=loss, index=i)

    with pytest.raises(DivergenceError) as err:
        scan_loop(step, _start(), 9, chunk_size=4)
    assert err.value.step == 5
    np.testing.assert_array_equal(err.value.losses, np.arange(5, dtype=np.float32))


def test_keyboard_interrupt_in_the_callback_returns_the_finished_chunks():
    """A KeyboardInterrupt raised by the callback ends the run with interrupted=True and the state after the finished chunks."""
    calls = []

    def callback(state, losses, done):
        calls.append((done, losses.shape[0], int(state[0])))
        if done == 14:
            raise KeyboardInterrupt

    res = scan_loop(_counter(-1), _start(), 28, chunk_size=7, callback=callback)
    assert res.interrupted
    assert calls == [(7, 7, 7), (14, 14, 14)]
    assert int(res.state[0]) == 14 and float(res.state[1]) == 14.0
    np.testing.assert_array_equal(np.asarray(res.losses), np.arange(1, 15, dtype=np.float32))


def test_keyboard_interrupt_after_the_last_chunk_is_not_an_interruption():
    """An interrupt raised by the callback after the final chunk leaves interrupted=False: every step ran."""

    def callback(state, losses, done):
        raise KeyboardInterrupt

    res = scan_loop(_counter(-1), _start(), 5, callback=callback)
    assert not res.interrupted
    assert int(res.state[0]) == 5 and res.losses.shape == (5,)


def test_interrupt_info_covers_only_the_finished_chunks():
    """After an interrupt the stacked info covers exactly the steps whose losses come back."""

    def step(state):
        i, x = state
        return (i + 1, x + 1.0), Info(loss=x, index=i)

    def callback(state, losses, done):
        if done >= 6:
            raise KeyboardInterrupt

    res = scan_loop(step, _start(), 12, chunk_size=3, callback=callback)
    assert res.interrupted
    np.testing.assert_array_equal(res.info.index, np.arange(6))
    np.testing.assert_array_equal(np.asarray(res.losses), res.info.loss)


@pytest.mark.parametrize("num_steps", [0, -3])
def test_num_steps_below_one_raises(num_steps):
    """num_steps < 1 raises ValueError naming the value."""
    with pytest.raises(ValueError, match=f"num_steps must be >= 1, got {num_steps}"):
        scan_loop(_affine, jnp.float32(0.0), num_steps)


def test_tree_all_finite_on_nested_trees_with_int_leaves():
    """tree_all_finite is True on a finite nested tree with int and bool leaves, False on any NaN or inf."""
    tree = {
        "a": [jnp.arange(3, dtype=jnp.int32), (jnp.ones(2), np.int64(7))],
        "b": {"c": jnp.zeros((2, 2), jnp.float32), "d": jnp.array([True, False])},
        "e": 1.5,
    }
    assert bool(tree_all_finite(tree))
    bad_nan = {**tree, "b": {**tree["b"], "c": jnp.zeros((2, 2)).at[1, 0].set(jnp.nan)}}
    assert not bool(tree_all_finite(bad_nan))
    bad_inf = {**tree, "a": [tree["a"][0], (jnp.array([1.0, -jnp.inf]), np.int64(7))]}
    assert not bool(tree_all_finite(bad_inf))
    assert not bool(tree_all_finite({"x": float("nan")}))


def test_tree_all_finite_is_exact_at_the_float_limits_eager_and_jitted():
    """Finite values whose sum overflows are finite; one inf (either sign) or NaN anywhere is not, in float32,
    bfloat16, float16 and complex leaves, eagerly and compiled (where XLA simplifies the reduction)."""
    jitted = jax.jit(tree_all_finite)
    big = np.finfo(np.float32).max
    for check in (tree_all_finite, jitted):
        assert bool(check({"x": jnp.full((1000,), big, jnp.float32), "y": jnp.full((3,), -big, jnp.float32)}))
        assert bool(check(jnp.full((64,), 6.0e4, jnp.float16)))
        assert bool(check(jnp.full((64,), 3.0e38, jnp.bfloat16)))
        for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
            for bad in (np.inf, -np.inf, np.nan):
                x = jnp.zeros((5, 7), dtype).at[3, 2].set(bad)
                assert not bool(check({"ok": jnp.ones(4), "bad": x})), (dtype, bad)
        for bad in (complex(np.inf, 0.0), complex(0.0, np.nan)):
            assert not bool(check(jnp.zeros(3, jnp.complex64).at[1].set(bad)))
        assert bool(check(jnp.full(3, complex(big, -big), jnp.complex64)))


def test_chunk_options_follow_the_step_cost():
    """On CPU a cheap or unknown step gets LLVM level 1, one at HEAVY_STEP_COST or above XLA's defaults ({});
    every call returns a dict of its own."""
    from mixvi import loop

    if jax.default_backend() != "cpu":
        assert loop.chunk_compiler_options() == {}
        return
    light = loop.chunk_compiler_options()
    assert light == loop.CPU_COMPILER_OPTIONS and light is not loop.CPU_COMPILER_OPTIONS
    assert loop.chunk_compiler_options(loop.HEAVY_STEP_COST / 2) == loop.CPU_COMPILER_OPTIONS
    assert loop.chunk_compiler_options(loop.HEAVY_STEP_COST) == {}
    assert loop.chunk_compiler_options(1e12) == {}


def test_tree_all_finite_without_float_leaves_is_true():
    """A tree with only integer leaves, or no leaves at all, counts as finite."""
    assert bool(tree_all_finite({"i": jnp.arange(4), "j": [np.uint32(3)]}))
    assert bool(tree_all_finite({}))
    assert bool(tree_all_finite(None))


# --- compile once: the cached chunk, operands, the tail, the bar -------------------------------------


def _counting_affine(counter):
    """x <- 0.9 x + a with a an operand; counts how often its Python body runs (= traces)."""

    def step(x, a):
        counter.append(1)
        return 0.9 * x + a, x

    return step


def test_cached_chunk_is_traced_once_for_any_num_steps_and_operand_values():
    """With a cache_key, runs of 5, 300 and 7 steps and new operand values reuse one trace of the step."""
    traces, key = [], object()
    step = _counting_affine(traces)
    for num_steps, a in ((5, 1.0), (300, 2.0), (7, 3.0)):
        res = scan_loop(step, jnp.float32(0.0), num_steps, operands=(jnp.float32(a),), cache_key=key)
        assert res.losses.shape == (num_steps,)
    assert len(traces) == 1


def test_operands_are_arguments_not_frozen_constants():
    """A cached chunk called with new operand values computes with those values."""
    step, key = _counting_affine([]), object()
    scan_loop(step, jnp.float32(0.0), 4, operands=(jnp.float32(1.0),), cache_key=key)
    res = scan_loop(step, jnp.float32(0.0), 4, operands=(jnp.float32(2.0),), cache_key=key)
    k = np.arange(4)
    np.testing.assert_allclose(np.asarray(res.losses), 20 * (1 - 0.9**k), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_steps", [1, 7, 256, 257, 300])
def test_short_tail_chunk_equals_exact_steps(num_steps):
    """A run whose last chunk stops early is bit-identical to one chunk of exactly num_steps steps."""
    step = _counting_affine([])
    cached = scan_loop(step, jnp.float32(0.5), num_steps, operands=(jnp.float32(1.0),), cache_key=object())
    exact = scan_loop(step, jnp.float32(0.5), num_steps, operands=(jnp.float32(1.0),), chunk_size=num_steps)
    np.testing.assert_array_equal(np.asarray(cached.losses), np.asarray(exact.losses))
    np.testing.assert_array_equal(np.asarray(cached.state), np.asarray(exact.state))


def test_divergence_in_a_later_cached_chunk_keeps_the_last_good_state():
    """With a cached chunk a bad step past the first chunk raises with the state after the good steps."""
    with pytest.raises(DivergenceError) as err:
        scan_loop(lambda s: _counter(300)(s), _start(), 400, cache_key=object())
    assert err.value.step == 300
    assert int(err.value.state[0]) == 300 and float(err.value.state[1]) == 300.0
    np.testing.assert_array_equal(err.value.losses, np.arange(1, 301, dtype=np.float32))


def test_progress_bar_starts_after_compilation(monkeypatch):
    """The chunk is traced and compiled before the tqdm bar is created."""
    import tqdm.auto

    traces, seen = [], []
    real = tqdm.auto.tqdm

    def spy(*args, **kwargs):
        seen.append(len(traces))
        return real(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", spy)
    scan_loop(_counting_affine(traces), jnp.float32(0.0), 10, operands=(jnp.float32(1.0),), progress_bar=True)
    assert seen == [1] and len(traces) == 1


def test_split_operands_separates_arrays_from_typed_static_leaves():
    """Arrays become operands; other leaves form a key that tells 1 from 1.0; rebuild restores the call."""
    x = jnp.ones(3)
    operands, static, rebuild = split_operands((x, 1), {"n": None, "scale": 2.0})
    assert len(operands) == 1 and operands[0] is x
    args, kwargs = rebuild(operands)
    assert args[1] == 1 and kwargs == {"n": None, "scale": 2.0}
    assert static == split_operands((jnp.zeros(3), 1), {"n": None, "scale": 2.0})[1]
    assert static != split_operands((x, 1.0), {"n": None, "scale": 2.0})[1]
    assert split_operands(({"a": 1},), {"f": [1, 2]})[1] is not None


def test_split_operands_with_an_unhashable_leaf_has_no_key():
    """An unhashable non-array leaf leaves the static key None (no cross-call cache)."""

    class Unhashable:
        __hash__ = None

    assert split_operands((Unhashable(),), {})[1] is None


def test_enable_compilation_cache_writes_compiled_programs(tmp_path):
    """enable_compilation_cache(path) makes JAX keep a compiled program in that folder (fresh process),
    also where the cache had been turned off."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import jax, jax.numpy as jnp
        import mixvi
        jax.config.update("jax_enable_compilation_cache", False)  # off as the test processes have it
        path = mixvi.enable_compilation_cache({str(tmp_path / "cache")!r})
        assert jax.config.jax_compilation_cache_dir == path
        jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.ones(3)).block_until_ready()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any((tmp_path / "cache").iterdir())
