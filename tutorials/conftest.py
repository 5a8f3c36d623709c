"""Runs the tutorials as tests (`pytest --nbmake tutorials`) in their small, fast setting, offline.

Each notebook reads two environment variables, which the kernels started by nbmake inherit from here:

- `DAB_KERAS_FAST=1`: the small setting (fewer steps, smaller data) that the test suite uses.
- `DAB_KERAS_MNIST`: where MNIST comes from: `"tfds"` (the notebooks' default, which downloads on first
  use) or the path of a Keras-layout `mnist.npz`. Tests never download: they use a local copy of the real
  data set when one sits at `../shared/data/mnist.npz` beside the repository, and otherwise a small
  generated stand-in with MNIST's layout (class-dependent blobs, so the code paths run on learnable data;
  the numbers a notebook prints are then not MNIST's).
"""

import os
import pathlib
import tempfile

import numpy as np

REAL_MNIST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


def synthetic_mnist(path, n_train=2048, n_test=512, seed=0):
    """Writes a small MNIST stand-in in Keras's `mnist.npz` layout (uint8 images, int labels)."""
    rng = np.random.default_rng(seed)
    templates = rng.random((10, 28, 28)) < 0.25

    def split(n):
        labels = rng.integers(0, 10, size=n)
        noise = rng.random((n, 28, 28)) < 0.05
        images = np.logical_xor(templates[labels], noise)
        return (images * 255).astype(np.uint8), labels.astype(np.uint8)

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def pytest_configure(config):
    os.environ["DAB_KERAS_FAST"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "DAB_KERAS_MNIST" not in os.environ:
        if REAL_MNIST.is_file():
            os.environ["DAB_KERAS_MNIST"] = str(REAL_MNIST)
        else:
            path = pathlib.Path(tempfile.mkdtemp(prefix="dab_keras_tutorials_")) / "mnist.npz"
            os.environ["DAB_KERAS_MNIST"] = str(synthetic_mnist(path))
