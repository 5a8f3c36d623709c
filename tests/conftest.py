"""Shared pytest setup: quiet TensorFlow logs, fixed seeds, backend markers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend (running {BACKEND})")
    for item in items:
        if "tensorflow_only" in item.keywords and BACKEND != "tensorflow":
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "tensorflow_only: needs the TensorFlow backend (TFP, tf.distribute)")


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    yield
    # Without the full garbage collection `clear_session` runs by default, which costs 0.2-0.4 s per test
    # once TensorFlow and JAX are loaded; Python's own collector still runs as usual.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def fake_mnist(tmp_path):
    """A function writing a small random MNIST `.npz` in Keras's layout and returning its path.

    `make(n_train=200, n_test=20, seed=0)`: uint8 images drawn from `default_rng(seed)` (training images
    first), labels `arange(n) % 10`.
    """

    def make(n_train=200, n_test=20, seed=0):
        rng = np.random.default_rng(seed)
        path = tmp_path / "mnist.npz"
        np.savez(path, x_train=rng.integers(0, 256, (n_train, 28, 28), dtype="uint8"),
                 y_train=np.arange(n_train) % 10, x_test=rng.integers(0, 256, (n_test, 28, 28), dtype="uint8"),
                 y_test=np.arange(n_test) % 10)
        return path

    return make
