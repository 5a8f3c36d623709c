"""`Sorter`: the DAB paper's 10-sort signum-dense network.

A sequence of L floats from U(0, 1) goes through a tanh MLP 10 → 128 → 128 → 256, a `Sign(margin=0.5)`
bottleneck trained with the chosen estimator, and a dense layer to L·L logits, reshaped to (L, L): row i
scores which input index holds the i-th smallest value. The target is the argsort of the input; the loss is
the cross-entropy of each row, summed over the L rows; "all-or-none" accuracy counts a sequence right only
when its whole permutation is right.

Reference: Ramapuram & Webb, "Improving Discrete Latent Representations With Differentiable Approximation
Bridges", 2019, arXiv:1905.03658 (and its code, apple/ml-dab, which reports 94.2 % all-or-none accuracy
after about 4.3 B training sequences).
"""


import keras
import numpy as np
from keras import ops

import dab_keras as dk
from dab_keras import _validation
from dab_keras.zoo import codes as zoo_codes
from dab_keras.zoo import data as zoo_data
from dab_keras.zoo import metrics as zoo_metrics
from dab_keras.zoo import task as zoo_task
from dab_keras.zoo import weights as zoo_weights

#: Seed of the fixed test set (NumPy's generator; training sequences come from another generator).
TEST_SEED = 20190510
TEST_SIZE = 100_000


@keras.saving.register_keras_serializable(package="dab_keras.zoo", name="sorting_loss")
def sorting_loss(y_true, y_pred):
    r"""Cross-entropy of each of the L rows of logits against the argsort target, summed over the rows.

    $$ \ell(y, s) = -\sum_{i=1}^{L} \log \operatorname{softmax}(s_{i,:})_{y_i}. $$

    Args:
        y_true: int `(B, L)` targets (the argsort of the input).
        y_pred: float `(B, L, L)` logits.

    Returns:
        float `(B,)` losses.

    Examples:
        >>> import numpy as np
        >>> y = np.arange(10)[None]  # an already sorted sequence
        >>> np.asarray(sorting_loss(y, np.zeros((1, 10, 10))), "float64").round(4).tolist()  # 10 log 10
        [23.0259]
    """
    per_row = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    return ops.sum(per_row, axis=-1)


@keras.saving.register_keras_serializable(package="dab_keras.zoo", name="all_or_none_accuracy")
def all_or_none_accuracy(y_true, y_pred):
    """1.0 for each sequence whose predicted permutation (row-wise argmax) equals the target, else 0.0.

    Args:
        y_true: int `(B, L)` targets.
        y_pred: float `(B, L, L)` logits (or scores).

    Returns:
        float32 `(B,)` of 0.0 and 1.0.

    Examples:
        >>> import numpy as np
        >>> y = np.array([[0, 1, 2], [0, 1, 2]])
        >>> logits = np.stack([np.eye(3), np.eye(3)[[0, 2, 1]]])  # right, then two rows swapped
        >>> np.asarray(all_or_none_accuracy(y, logits)).tolist()
        [1.0, 0.0]
    """
    hit = ops.equal(ops.cast(y_true, "int32"), ops.cast(ops.argmax(y_pred, axis=-1), "int32"))
    return ops.cast(ops.all(hit, axis=-1), "float32")


@keras.saving.register_keras_serializable(package="dab_keras.zoo", name="per_position_accuracy")
def per_position_accuracy(y_true, y_pred):
    """Fraction of the L positions of each sequence whose predicted index is right.

    Args:
        y_true: int `(B, L)` targets.
        y_pred: float `(B, L, L)` logits (or scores).

    Returns:
        float32 `(B,)` in [0, 1].

    Examples:
        >>> import numpy as np
        >>> y = np.array([[0, 1, 2, 3]])
        >>> logits = np.eye(4)[[0, 1, 3, 2]][None]  # the last two rows swapped
        >>> np.asarray(per_position_accuracy(y, logits)).tolist()
        [0.5]
    """
    hit = ops.equal(ops.cast(y_true, "int32"), ops.cast(ops.argmax(y_pred, axis=-1), "int32"))
    return ops.mean(ops.cast(hit, "float32"), axis=-1)


def Sorter(
    estimator="dab",
    length=10,
    hidden_units=(128, 128),
    latent_units=256,
    margin=0.5,
    approximator_units=(128,),
    include_top=True,
    weights="pretrained",
    name="sorter",
    dab_residual=False,
):
    """Builds the signum-dense sorter: `(B, L)` floats → `(B, L, L)` logits.

    Args:
        estimator: `"dab"`, `"straight_through"`, `"relaxed"` or an `Estimator` for the `Sign` layer.
            Defaults to `"dab"` (with a dense approximator of `approximator_units` over the code).
        length: Sequence length L >= 2. Defaults to `10`.
        hidden_units: Widths of the tanh layers before the code. Defaults to `(128, 128)`.
        latent_units: Width of the tanh layer binarized by `Sign`. Defaults to `256`.
        margin: `Sign` margin (values within it map to 0). Defaults to `0.5`.
        approximator_units: Hidden widths of the DAB approximator. Defaults to `(128,)`.
        dab_residual: With `estimator="dab"`: `True` builds the residual DAB (the approximator corrects
            the op's straight-through surrogate and starts at zero, so training starts as
            straight-through), `False` the paper's DAB (the approximator alone). Both kinds of DAB weights
            ship: `weights="pretrained"` loads the kind chosen here; weights load only into a model of the
            same choice. Defaults to `False`.
        include_top: If `False`, the model ends at the `(B, latent_units)` code in {-1, 0, 1}.
            Defaults to `True`.
        weights: `"pretrained"` (shipped weights for `estimator`), the name of another estimator whose
            shipped weights to fine-tune (e.g. `"straight_through"`), `None`, or a `.weights.h5` path.
            Defaults to `"pretrained"`.
        name: Model name. Defaults to `"sorter"`.

    Returns:
        A `keras.Model` (uncompiled).

    Raises:
        ValueError: for an invalid argument, an unknown estimator, or weights that do not match (another
            configuration, no shipped weights for the estimator, a damaged file).

    Examples:
        >>> from dab_keras.zoo import Sorter, data
        >>> model = Sorter()  # pretrained DAB weights
        >>> x, y = data.sort_batch(4, seed=0)
        >>> logits = model.predict(x, verbose=0)
        >>> logits.shape
        (4, 10, 10)
    """
    length = _validation.check_int("length", length, 2)
    latent_units = _validation.check_int("latent_units", latent_units, 1)
    hidden_units = tuple(_validation.check_int("hidden_units", u, 1) for u in _as_tuple(hidden_units))
    approximator_units = tuple(
        _validation.check_int("approximator_units", u, 1) for u in _as_tuple(approximator_units)
    )
    key = zoo_weights.estimator_key(estimator)
    dab_residual = zoo_weights.check_dab_residual(dab_residual, estimator)
    inputs = keras.Input((length,), name="sequence")
    h = inputs
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation="tanh", name=f"hidden_{i}")(h)
    h = keras.layers.Dense(latent_units, activation="tanh", name="latent")(h)
    code = dk.layers.Sign(
        margin=margin,
        estimator=zoo_codes.code_estimator(estimator, latent_units, approximator_units, residual=dab_residual),
        name="sign",
    )(h)
    outputs = code
    if include_top:
        scores = keras.layers.Dense(length * length, name="scores")(code)
        outputs = keras.layers.Reshape((length, length), name="logits")(scores)
    model = keras.Model(inputs, outputs, name=name)
    config = {
        "length": length,
        "hidden_units": list(hidden_units),
        "latent_units": latent_units,
        "margin": float(margin),
        "approximator_units": list(approximator_units),
    }
    if dab_residual:  # left out when False, as in the manifests of the paper's DAB
        config["dab_residual"] = True
    if not include_top and weights is not None:
        # Load the full model's weights, then keep the layers up to the code.
        full = Sorter(estimator, include_top=True, weights=weights, name=name, **_args(config))
        return zoo_codes.copy_layer_weights(model, full)
    zoo_weights.load(model, weights, "sorter", key, config)
    return model


def _args(config):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def _as_tuple(units):
    return (units,) if isinstance(units, int) else tuple(units)


def test_set(length=10, size=TEST_SIZE, seed=TEST_SEED):
    """The fixed test set: `size` sequences (NumPy generator seeded with `seed`) and their argsort.

    Args:
        length: Sequence length L. Defaults to `10`.
        size: Number of sequences. Defaults to `TEST_SIZE` (100,000).
        seed: NumPy seed. Defaults to `TEST_SEED`.

    Returns:
        `(x, y)` as `dab_keras.zoo.data.sort_batch` returns them: float32 and int32 `(size, length)`.

    Examples:
        >>> x, y = test_set(size=5)
        >>> x.shape, y.shape
        ((5, 10), (5, 10))
        >>> bool((test_set(size=5)[0] == x).all())  # the same sequences every time
        True
    """
    return zoo_data.sort_batch(size, length, seed=seed)


class SortingSequences(keras.utils.PyDataset):
    """Endless fresh sorting batches for `model.fit` without TensorFlow (e.g. on the JAX backend).

    Batch `i` of epoch `e` is drawn from NumPy's generator seeded with `(seed, e, i)`, so a run is
    reproducible and a resumed run continues with new sequences.

    Args:
        batch_size: Sequences per batch.
        length: Sequence length L.
        steps_per_epoch: Batches per epoch (`len` of the dataset).
        seed: Seed of the sequences. Defaults to `0`.
        initial_epoch: Epoch the first `fit` epoch counts as. Defaults to `0`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, `use_multiprocessing`, ...).

    Examples:
        >>> data = SortingSequences(batch_size=4, length=10, steps_per_epoch=2, seed=0)
        >>> len(data), data[0][0].shape, data[0][1].shape
        (2, (4, 10), (4, 10))
    """

    def __init__(self, batch_size, length, steps_per_epoch, seed=0, initial_epoch=0, **kwargs):
        super().__init__(**kwargs)
        self.batch_size, self.length, self.steps, self.seed = batch_size, length, steps_per_epoch, seed
        self.epoch = initial_epoch

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return zoo_data.sort_batch(self.batch_size, self.length, seed=[self.seed, self.epoch, index])

    def on_epoch_end(self):
        self.epoch += 1


def tf_sorting_dataset(batch_size, length, seed=0, initial_step=0):
    """Endless fresh sorting batches as a `tf.data.Dataset` (stateless random numbers, prefetched).

    Batch `n` is `tf.random.stateless_uniform` with seed `(seed, n)`; targets are its stable argsort.
    Needs TensorFlow (the dataset also feeds `fit` on other backends, but `SortingSequences` avoids
    the dependency).

    Args:
        batch_size: Sequences per batch.
        length: Sequence length L.
        seed: Seed of the sequences. Defaults to `0`.
        initial_step: Index of the first batch (a resumed run starts after the batches it has seen).
            Defaults to `0`.

    Returns:
        An infinite `tf.data.Dataset` of `(x, y)`: float32 and int32 `(batch_size, length)`.

    Examples:
        >>> x, y = next(iter(tf_sorting_dataset(batch_size=4, length=10, seed=0)))
        >>> tuple(x.shape), y.dtype.name
        ((4, 10), 'int32')
    """
    import tensorflow as tf

    def batch(n):
        x = tf.random.stateless_uniform((batch_size, length), seed=tf.stack([tf.cast(seed, tf.int64), n]))
        return x, tf.argsort(x, axis=-1, stable=True)

    options = tf.data.Options()
    # Under MultiWorkerMirroredStrategy each worker takes its share of every batch (there are no files
    # to shard by).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.Dataset.counter(initial_step).map(batch).prefetch(tf.data.AUTOTUNE).with_options(options)


class SorterTask(zoo_task.Task):
    """Training recipe of the sorter: fresh sequences every step, Adam with warm-up and cosine decay.

    Recipe: batch 1024, Adam with linear warm-up over 1,000 steps to 2e-3 and cosine decay to zero over
    400 M sequences (epochs of 1,000 steps), XLA, 50 steps per compiled call. Registered as `"sorter"`.

    Examples:
        >>> task = SorterTask()
        >>> task.name, task.batch_size, task.steps_per_epoch
        ('sorter', 1024, 1000)
        >>> data = task.train_data(batch_size=8, seed=0)
        >>> data.synthetic, data.steps_per_epoch, data.epoch_size
        (True, 1000, 8000)
    """

    name = "sorter"
    constructor = staticmethod(Sorter)
    description = "10-sort signum-dense network (DAB paper): (B, 10) floats -> (B, 10, 10) logits"
    batch_size = 1024
    learning_rate = 2e-3
    warmup_steps = 1000
    samples = 400_000_000
    steps_per_execution = 50
    #: XLA trains the sorter 1.5x faster than graph mode even on a 2-core CPU (benchmarks/RESULTS.md).
    jit_compile = True
    #: Steps that make one (synthetic) epoch.
    steps_per_epoch = 1000

    def build(self, estimator, weights=None, **config):
        return Sorter(estimator=estimator, weights=weights, **config)

    def train_data(self, batch_size, seed, data=None, initial_epoch=0, length=10, steps_per_epoch=None):
        """Returns endless fresh sequences: drawn on the device on JAX, else a prefetched `tf.data` stream.

        - JAX: `device_data.DeviceSortingTrainer` draws step t's batch from the key `(seed, t)` inside the
          compiled train step (`TrainData.trainer`); `fit` only passes empty placeholders.
        - TensorFlow: `tf_sorting_dataset`, starting after the batches a resumed run has seen.
        - Other backends: `SortingSequences` (NumPy).

        Args:
            batch_size: Sequences per batch (global, over all devices and processes).
            seed: Seed of the sequences.
            data: Ignored (the sorter needs no data set). Defaults to `None`.
            initial_epoch: Epoch a resumed run starts at (the stream starts at step
                `initial_epoch * steps_per_epoch`). Defaults to `0`.
            length: Sequence length L. Defaults to `10`.
            steps_per_epoch: Steps of one epoch. Defaults to `None` (the recipe's `steps_per_epoch`).

        Returns:
            A synthetic `TrainData` with epochs of `steps_per_epoch` steps.
        """
        steps = self.steps_per_epoch if steps_per_epoch is None else int(steps_per_epoch)
        trainer = None
        backend = keras.backend.backend()
        if backend == "jax":
            import jax

            from dab_keras.zoo import device_data

            # Each process feeds its share of the (empty) batch; the step draws the global batch.
            x = device_data.Placeholders(batch_size // jax.process_count(), steps)

            def trainer(model):
                return device_data.DeviceSortingTrainer(
                    model.inputs, model.outputs, batch_size=batch_size, seed=seed, name=model.name
                )

        elif backend == "tensorflow":
            x = tf_sorting_dataset(batch_size, length, seed, initial_step=initial_epoch * steps)
        else:
            x = SortingSequences(batch_size, length, steps, seed=seed, initial_epoch=initial_epoch)
        return zoo_task.TrainData(
            x=x,
            steps_per_epoch=steps,
            synthetic=True,
            epoch_size=steps * batch_size,
            description=f"fresh sequences of {length} floats from U(0, 1) every step, seed {seed}",
            trainer=trainer,
        )

    def data_kwargs(self, config):
        return {"length": config.get("length", 10)}

    def loss(self):
        return sorting_loss

    def metrics(self):
        return [
            keras.metrics.MeanMetricWrapper(all_or_none_accuracy, name="all_or_none_accuracy"),
            keras.metrics.MeanMetricWrapper(per_position_accuracy, name="per_position_accuracy"),
        ]

    def evaluate(self, model, data=None, batch_size=None, verbose=0, size=TEST_SIZE):
        """Test metrics on the fixed test set (`test_set`).

        Args:
            model: A sorter (its input length sets L).
            data: Ignored. Defaults to `None`.
            batch_size: Prediction batch size. Defaults to `None` (10,000).
            verbose: Prediction verbosity. Defaults to `0`.
            size: Number of test sequences. Defaults to `TEST_SIZE` (100,000).

        Returns:
            A dict with `all_or_none_accuracy`, `per_position_accuracy`, `loss` (the mean
            `sorting_loss`) and `test_sequences`.
        """
        length = model.input_shape[-1]
        x, y = test_set(length, size)
        logits = model.predict(x, batch_size=batch_size or 10_000, verbose=verbose)
        pred = np.argmax(logits, axis=-1)
        nll = zoo_metrics.sparse_nll(logits, y).sum(-1)
        return {
            "all_or_none_accuracy": float((pred == y).all(-1).mean()),
            "per_position_accuracy": float((pred == y).mean()),
            "loss": float(nll.mean()),
            "test_sequences": int(size),
        }

    def demo_batch(self):
        x, y = zoo_data.sort_batch(3, seed=7)
        return x, y
