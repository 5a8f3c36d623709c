"""Sorting batches drawn inside the compiled train step (JAX): no host feed, so an accelerator is not
input-bound.

`sorting_batch(seed, step, ...)` draws the sequences of training step `step` from the random key
`(seed, step)` with `keras.random.uniform` and takes their `stable_argsort` (pairwise comparisons in
`keras.ops` for short rows).
`DeviceSortingTrainer` is a functional model over a sorter's own layers whose JAX `train_step` ignores
its (empty) input batch and trains on `sorting_batch(seed, optimizer.iterations)`: the stream is
deterministic given the seed, and a run resumed from a checkpoint (optimizer state included) continues
exactly where the uninterrupted run would be. Under a `keras.distribution` (e.g. `DataParallel`) the
batch is laid out across the devices like a fed batch, and each device draws its own shard.

The only thing that crosses from host to device per step is a `(batch, 0)` placeholder (zero bytes),
which keeps Keras's `fit` loop, callbacks, logs and `steps_per_execution` unchanged.
"""

import keras
import numpy as np
from keras import ops


def sorting_batch(seed, step, batch_size, length=10):
    """The training batch of step `step`: U(0, 1) sequences from the key `(seed, step)` and their argsort.

    JAX backend only (a key tensor as `keras.random` seed); usable inside `jax.jit`, where `step` is a
    traced counter.

    Args:
        seed: Seed of the run, an int in [0, 2**32).
        step: Index of the training step, an int or an integer scalar tensor.
        batch_size: Sequences per batch.
        length: Sequence length L. Defaults to `10`.

    Returns:
        `(x, y)`: float32 `(batch_size, length)` values in [0, 1) and int32 `(batch_size, length)`
        targets, `y[b, i]` the index in `x[b]` of its i-th smallest value.

    Raises:
        ValueError: on a backend other than JAX.

    Examples:
        ```python
        # KERAS_BACKEND=jax
        import numpy as np
        from dab_keras.zoo import device_data

        x, y = device_data.sorting_batch(seed=0, step=3, batch_size=4)
        np.array_equal(np.take_along_axis(x, y, -1), np.sort(x, -1))  # True
        ```
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "Sorting batches drawn on the device need KERAS_BACKEND=jax (other backends feed "
            f"`dab_keras.zoo.sorter.tf_sorting_dataset` or `SortingSequences`). Received: backend="
            f"{keras.backend.backend()!r}"
        )
    key = ops.stack([ops.convert_to_tensor(seed, "uint32"), ops.cast(step, "uint32")])
    x = keras.random.uniform((batch_size, length), dtype="float32", seed=key)
    distribution = keras.distribution.distribution()
    if distribution is not None:
        # Lay the batch out like a fed one; each device then draws only its own shard.
        x = keras.distribution.distribute_tensor(x, distribution.get_data_layout(x.shape))
    return x, stable_argsort(x)


def stable_argsort(x):
    """Ascending stable argsort over the last axis: by pairwise comparisons for short rows, else sorting.

    For rows of up to 32 values, the rank of each value is the number of values below it plus the number
    of equal values before it, and the argsort is the inverse of that permutation: O(L²) comparisons per
    row, which XLA runs 3-4 times faster than its sort on a CPU (`benchmarks/RESULTS.md`). Longer rows
    use `keras.ops.argsort`.

    Args:
        x: Float tensor `(..., L)`.

    Returns:
        int32 tensor of `x`'s shape: `y[..., i]` is the index of the i-th smallest value, equal values in
        their order in `x` (as `numpy.argsort(x, kind="stable")`).

    Examples:
        >>> import numpy as np
        >>> np.asarray(stable_argsort(np.array([[0.5, 0.1, 0.5, 0.0]]))).tolist()
        [[3, 1, 0, 2]]
    """
    x = ops.convert_to_tensor(x)
    length = x.shape[-1]
    if length is None or length > 32:
        return ops.cast(ops.argsort(x, axis=-1), "int32")
    index = ops.arange(length, dtype="int32")
    below = ops.less(ops.expand_dims(x, -2), ops.expand_dims(x, -1))  # [..., i, j]: x_j < x_i
    tie_before = ops.logical_and(
        ops.equal(ops.expand_dims(x, -2), ops.expand_dims(x, -1)), ops.less(index[None, :], index[:, None])
    )
    rank = ops.sum(ops.cast(ops.logical_or(below, tie_before), "int32"), axis=-1)  # [..., i]
    at_rank = ops.cast(ops.equal(ops.expand_dims(rank, -1), index), "int32")  # [..., i, r]: rank_i == r
    return ops.sum(at_rank * index[:, None], axis=-2)


class Placeholders(keras.utils.PyDataset):
    """`steps` empty `(batch_size, 0)` float32 batches: what `fit` feeds a `DeviceSortingTrainer`.

    Args:
        batch_size: Rows of each placeholder: the batch of this process (the global batch divided by
            the number of processes).
        steps: Batches per epoch (`len` of the dataset).

    Examples:
        >>> data = Placeholders(batch_size=8, steps=3)
        >>> len(data), data[0].shape, data[0].nbytes
        (3, (8, 0), 0)
    """

    def __init__(self, batch_size, steps):
        super().__init__()
        self.batch = np.zeros((int(batch_size), 0), "float32")
        self.steps = int(steps)

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.batch


class DeviceSortingTrainer(keras.Model):
    """Trains a sorter's layers on sorting batches drawn inside the compiled train step (JAX).

    Built from the sorter's `inputs` and `outputs`, it shares its layers and weights (and saves weights in
    the same layout); compile it and `fit` it on `Placeholders`. Step `t` (the optimizer's iteration
    count) trains on `sorting_batch(seed, t, batch_size, length)`. Prediction and evaluation take real
    inputs as usual.

    Args:
        inputs: The sorter's `inputs`.
        outputs: The sorter's `outputs`.
        batch_size: Global batch size (sequences per step).
        seed: Seed of the sequences. Defaults to `0`.
        **kwargs: `keras.Model` arguments (`name`).

    Raises:
        ValueError: on a backend other than JAX.

    Examples:
        ```python
        # KERAS_BACKEND=jax
        from dab_keras.zoo import Sorter, device_data, sorter

        model = Sorter("straight_through", weights=None)
        trainer = device_data.DeviceSortingTrainer(model.inputs, model.outputs, batch_size=1024, seed=0)
        trainer.compile("adam", loss=sorter.sorting_loss, jit_compile=True)
        trainer.fit(device_data.Placeholders(1024, steps=100), epochs=1)  # trains `model`'s weights
        ```
    """

    def __init__(self, inputs, outputs, batch_size, seed=0, **kwargs):
        if keras.backend.backend() != "jax":
            raise ValueError(
                "DeviceSortingTrainer draws its batches inside JAX's compiled step and needs "
                f"KERAS_BACKEND=jax. Received: backend={keras.backend.backend()!r}"
            )
        super().__init__(inputs, outputs, **kwargs)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.length = int(self.input_shape[-1])

    def _symbolic_build(self, iterator=None, data_batch=None):
        # `fit` builds the compiled loss and metrics from the shapes of a batch: give it those of the
        # batches drawn in `train_step`, not of the placeholders.
        spec = (
            keras.KerasTensor((self.batch_size, self.length), "float32"),
            keras.KerasTensor((self.batch_size, self.length), "int32"),
        )
        return super()._symbolic_build(data_batch=spec)

    def train_step(self, state, data):
        iterations = self.optimizer.iterations
        index = next(i for i, v in enumerate(self.optimizer.variables) if v is iterations)
        step = state[2][index]
        x, y = sorting_batch(self.seed, step, self.batch_size, self.length)
        return super().train_step(state, (x, y))
