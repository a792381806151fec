import jax
import numpyro
import pytest

numpyro.set_platform("cpu")


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
