import gc
import os

# The suite compiles at LLVM optimisation level 0 (XLA_FLAGS, for every program; and mixvi's chunk, which
# names level 1 itself): its runs are short, so compilation is most of a test's time, and level 0 compiles
# about a third faster (the suite took 647 s against 822 s on 2 cores, 2026-12-06). The level changes the
# low bits of float results, not what a test checks; MIXVI_TEST_XLA_DEFAULTS=1 runs the suite at the
# library's own options. A subprocess a test compares bits with inherits XLA_FLAGS and must set the
# chunk's level too: it imports this module (``import tests.conftest``) before its first compilation.
FAST_LEVEL = "--xla_backend_optimization_level=0"
FAST_COMPILE = not os.environ.get("MIXVI_TEST_XLA_DEFAULTS")
if FAST_COMPILE and FAST_LEVEL not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_LEVEL}".strip()

import jax  # noqa: E402 - after XLA_FLAGS
import numpyro  # noqa: E402
import pytest  # noqa: E402

import mixvi.loop  # noqa: E402

if FAST_COMPILE:
    mixvi.loop.CPU_COMPILER_OPTIONS = dict(mixvi.loop.LEVEL0_COMPILER_OPTIONS)
numpyro.set_platform("cpu")
# no persistent compilation cache in the test processes, whatever the environment says
# (JAX_COMPILATION_CACHE_DIR): a folder shared with other processes once crashed a worker while reading
# it; enable_compilation_cache is tested in a fresh subprocess (test_loop)
jax.config.update("jax_enable_compilation_cache", False)


def _memory_maps_in_use() -> int | None:
    """This process's memory maps (Linux), or None where /proc does not say."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return None


def _memory_map_limit() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return 65530


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop the compiled programs once a test module ends with the process past a third of its memory-map
    limit: each program keeps maps of its code, and one process running the whole suite otherwise reaches
    Linux's default limit of 65 530 maps and aborts inside XLA (one file, test_engine.py, adds about
    26 000). Below that the programs stay, so later modules reuse the ones they share (dropping them after
    every module made the suite about 8 % slower: 771 s against 713 s on 2 cores, 2026-12-06)."""
    yield
    in_use = _memory_maps_in_use()
    if in_use is None or in_use > _memory_map_limit() // 3:
        mixvi.loop.clear_cache()
        jax.clear_caches()
        gc.collect()


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


def pytest_addoption(parser):
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run the tests marked slow (benchmark smoke runs)"
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long benchmark smoke run; skipped unless --runslow is given")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (bash scripts/test.sh --runslow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
