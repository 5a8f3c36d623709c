"""Binarized MNIST for the discrete VAE: fresh binary training batches every epoch, fixed binary test sets.

A VAE with Bernoulli pixels needs binary images. Training binarizes dynamically: every pixel is a fresh
Bernoulli sample of its intensity every epoch (`DynamicallyBinarizedMNIST`, a `keras.utils.PyDataset`).
The test set is binarized once, dynamically with NumPy's generator seeded with `TEST_SEED` and by
thresholding at 0.5 (`binarized_test_sets`), so every evaluation sees the same images. The images come
from `dab_keras.zoo.data.load_mnist`; the binarization is `dab_keras.zoo.data.binarize`.
"""

import math

import keras
import numpy as np

from dab_keras import _validation
from dab_keras.zoo import data as zoo_data

#: Seed of the one dynamic binarization of the test set (NumPy's generator).
TEST_SEED = 20170101


class DynamicallyBinarizedMNIST(keras.utils.PyDataset):
    """Shuffled batches of MNIST images, each pixel a fresh Bernoulli sample of its intensity every epoch.

    Epoch `e` visits the images in the order of NumPy's generator seeded with `(seed, e)`; batch `i`
    of epoch `e` is binarized with the generator seeded with `(seed, e, i)`. So a run is reproducible, a
    resumed run continues with new samples, and no TensorFlow is needed (JAX backend).

    Args:
        images: float `(N, 28, 28, 1)` intensities in [0, 1].
        batch_size: Images per batch, >= 1 (the last batch of an epoch may be smaller).
        seed: Seed of the order and the binarization. Defaults to `0`.
        initial_epoch: Epoch the first `fit` epoch counts as. Defaults to `0`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, `use_multiprocessing`, ...).

    Examples:
        >>> import numpy as np
        >>> data = DynamicallyBinarizedMNIST(np.full((10, 28, 28, 1), 0.5, "float32"), batch_size=4)
        >>> len(data), data[2].shape, sorted(np.unique(data[0]).tolist())
        (3, (2, 28, 28, 1), [0.0, 1.0])
    """

    def __init__(self, images, batch_size, seed=0, initial_epoch=0, **kwargs):
        super().__init__(**kwargs)
        self.images = np.asarray(images, dtype="float32")
        self.batch_size = _validation.check_int("batch_size", batch_size, 1)
        self.seed = int(seed)
        self.epoch = int(initial_epoch)
        self._order_epoch, self._order = None, None

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def _permutation(self):
        if self._order_epoch != self.epoch:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))
            self._order_epoch = self.epoch
        return self._order

    def __getitem__(self, index):
        if index >= len(self):
            raise IndexError(f"Batch {index} out of range ({len(self)} batches).")
        idx = np.sort(self._permutation()[index * self.batch_size : (index + 1) * self.batch_size])
        return zoo_data.binarize(self.images[idx], "dynamic", seed=[self.seed, self.epoch, index])

    def on_epoch_end(self):
        self.epoch += 1


def binarized_test_sets(data="tfds"):
    """The two fixed binary test sets: `{"dynamic": ..., "threshold": ...}`, `(10000, 28, 28, 1)` each.

    `"dynamic"` is one Bernoulli sample of the test intensities (NumPy's generator seeded with
    `TEST_SEED`); `"threshold"` is 1 where the intensity exceeds 0.5.

    Args:
        data: MNIST source: `"tfds"` or the path of a `.npz` (see `dab_keras.zoo.data.load_mnist`).
            Defaults to `"tfds"`.

    Returns:
        A dict of two float32 arrays with values in {0, 1}, shaped like the test images.

    Examples:
        ```python
        sets = binarized_test_sets()  # TensorFlow Datasets' MNIST test split
        sets["dynamic"].shape  # (10000, 28, 28, 1), the images of the test `neg_elbo`
        ```
    """
    images = zoo_data.load_mnist(data)["x_test"]
    return {
        "dynamic": zoo_data.binarize(images, "dynamic", seed=TEST_SEED),
        "threshold": zoo_data.binarize(images, "threshold"),
    }
