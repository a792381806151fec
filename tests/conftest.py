import gc

import jax
import numpyro
import pytest

import mixvi.loop

numpyro.set_platform("cpu")
# no persistent compilation cache in the test processes, whatever the environment says
# (JAX_COMPILATION_CACHE_DIR): a folder shared with other processes once crashed a worker while reading
# it; enable_compilation_cache is tested in a fresh subprocess (test_loop)
jax.config.update("jax_enable_compilation_cache", False)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop the compiled programs of a test module once it is done: each keeps memory maps of its code, and
    one process running the whole suite otherwise reaches Linux's default limit of 65 530 maps and aborts
    inside XLA (one file, test_engine.py, adds about 26 000)."""
    yield
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
