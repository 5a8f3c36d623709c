"""Registry of the study's tasks and tables.

A task builds a fresh, compiled Keras model for an estimator and a seed, and names its data. A table is a
list of tasks with default estimators, seeds and budgets: `python -m benchmarks.study run TABLE` runs it.
New domains register with `register_task` and `register_table`; the runner only needs
`build(estimator, seed)`, `data(path)` and `evaluate(model, data)`. Tables: the MNIST MLP with each hard
layer (`everyday`, `layers`), the sort non-linearity classifier (`sortnet`) and permutation learning on
synthetic sequences (`permutation`, no data file), and discrete VAEs (`vae`, in `benchmarks/study/vae.py`).
"""

import dataclasses

import numpy as np

TASKS = {}
TABLES = {}
ESTIMATORS = ("straight_through", "relaxed", "dab")


def _paper_dab():
    from dab_keras import estimators

    return estimators.DAB(residual=False)


def _study_estimator(class_name, **kwargs):
    """A factory of `benchmarks.study.estimators.<class_name>(**kwargs)`, imported when it is called."""

    def factory():
        from benchmarks.study import estimators

        return getattr(estimators, class_name)(**kwargs)

    return factory


# Every estimator a table may name: an alias the layers take, or a factory of a fresh estimator object.
# `dab` is the library's default (a residual approximator); `dab_paper` is g alone, as in the paper;
# `identity` the paper's sort baseline (unpermuted gradient) and `exact` the true gradient of sorted values
# (both for `Sort(output_mode="values")`); `dab_gain`, `dab_shrink`, `dab_smooth<κ>`, `dab_warmup` and `dab_mean` the
# screened variants of the residual DAB (all in `benchmarks/study/estimators.py`).
ESTIMATOR_CHOICES = {
    "straight_through": "straight_through",
    "relaxed": "relaxed",
    "dab": "dab",
    "dab_paper": _paper_dab,
    "identity": _study_estimator("IdentityStraightThrough"),
    "exact": _study_estimator("ExactSortGradient"),
    "dab_gain": _study_estimator("GainMatchedDAB"),
    "dab_shrink": _study_estimator("ShrunkDAB"),
    "dab_smooth0.1": _study_estimator("SmoothedTargetDAB", noise=0.1),
    "dab_smooth0.3": _study_estimator("SmoothedTargetDAB", noise=0.3),
    "dab_smooth1": _study_estimator("SmoothedTargetDAB", noise=1.0),
    "dab_warmup": _study_estimator("WarmupDAB", warmup_steps=1000),
    "dab_mean": _study_estimator("MeanFittedDAB"),
}


def make_estimator(name):
    """The `estimator=` argument for the estimator named `name` in a table (a key of `ESTIMATOR_CHOICES`)."""
    choice = ESTIMATOR_CHOICES[name]
    return choice() if callable(choice) else choice


@dataclasses.dataclass(frozen=True)
class Task:
    """A trainable task of the study.

    Attributes:
        name: Registry name.
        description: One line for the table's header.
        build: `build(estimator, seed) -> keras.Model`, compiled with the task's optimizer and loss.
        data: `data(path) -> dict` with `x_train`, `y_train`, `x_test`, `y_test` (NumPy arrays).
        batch_size: Training batch size.
        metric: Name of the reported test metric (the primary one when `evaluate` returns several).
        evaluate: `evaluate(model, data) -> float`, the test metric (test split only), or a dict
            `{name: value}` of several test metrics that holds `metric`.
        needs_data: Whether `data` reads the file given by `--data` (MNIST); synthetic tasks draw their
            own and ignore it.
        units: `{metric name: unit}` for the report: `"%"` (a fraction shown in percent, the default of a
            metric not named) or another unit shown as it is (e.g. `"nats"`).
        loss_metric: The training metric (Keras `fit` history) drawn as the training curve.
        train_metric: A second training metric recorded in the curve (e.g. `"accuracy"`), or `None`.
        make_batch: `make_batch(data, index, rng) -> (x, y)`, a training batch from the indices `index`
            (`rng`: the run's `numpy.random.Generator`, e.g. for dynamic binarization); `None`: the rows
            `index` of `x_train` and `y_train`.
        callbacks: `callbacks() -> list` of Keras callbacks passed to every `fit` call (e.g. a schedule of
            the optimizer step), or `None`.
        estimators: The estimator names the task's `build` takes itself (e.g. a model-level estimator such
            as REINFORCE), or `None`: layer estimators from `ESTIMATOR_CHOICES`.
        held_out: Whether `run --split held_out` may cut the task's data with `held_out_split` (data of
            plain `x_train`, `y_train`, `x_test`, `y_test` arrays); `False` for a task whose test data
            are prepared apart from its training data (e.g. a VAE's fixed binarized test set).
    """

    name: str
    description: str
    build: object
    data: object
    batch_size: int
    metric: str
    evaluate: object
    needs_data: bool = True
    units: dict = dataclasses.field(default_factory=dict)
    loss_metric: str = "task_loss"
    train_metric: object = "accuracy"
    make_batch: object = None
    callbacks: object = None
    estimators: tuple = None
    held_out: bool = True

    def accepts(self, estimator):
        """Whether `build` takes the estimator named `estimator`."""
        return estimator in (self.estimators if self.estimators is not None else ESTIMATOR_CHOICES)


@dataclasses.dataclass(frozen=True)
class Table:
    """A study table: tasks x estimators x seeds at budgets (optimizer steps)."""

    name: str
    description: str
    tasks: tuple
    estimators: tuple = ESTIMATORS
    seeds: int = 3
    steps: tuple = (100, 400, 2000)


def register_task(task):
    if task.name in TASKS:
        raise ValueError(f"A task named {task.name!r} is already registered.")
    TASKS[task.name] = task
    return task


def register_table(table):
    unknown = [t for t in table.tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"Table {table.name!r} names unknown tasks {unknown}; known: {sorted(TASKS)}")
    TABLES[table.name] = table
    return table


def get_table(name):
    if name not in TABLES:
        raise ValueError(f"`table` must be one of {sorted(TABLES)}. Received: table={name!r}")
    return TABLES[name]


# ----------------------------------------------------------------------------------- MNIST MLP tasks
def _mnist(path):
    from dab_keras.zoo import data as zoo_data

    mnist = zoo_data.load_mnist(path)
    return {
        "x_train": mnist["x_train"].reshape(len(mnist["x_train"]), -1),
        "y_train": mnist["y_train"],
        "x_test": mnist["x_test"].reshape(len(mnist["x_test"]), -1),
        "y_test": mnist["y_test"],
    }


#: Training images held out by the validation screens and diagnostics (the last ones of MNIST's training split).
HELD_OUT = 10_000


def held_out_split(data):
    """`data` with its training split cut in two: train on all but the last `HELD_OUT`, test on those.

    The screens and diagnostics that choose or explain a default evaluate on this split, never on the test set.

    Args:
        data: A dict with `x_train` and `y_train` (any other entries are dropped).

    Returns:
        A dict with `x_train`, `y_train` (the first `len - HELD_OUT` images) and `x_test`, `y_test` (the last
        `HELD_OUT`).
    """
    x, y = data["x_train"], data["y_train"]
    if len(x) <= HELD_OUT:
        raise ValueError(f"`data['x_train']` must hold more than {HELD_OUT} images to hold {HELD_OUT} out. "
                         f"Received {len(x)}")
    return {"x_train": x[:-HELD_OUT], "y_train": y[:-HELD_OUT], "x_test": x[-HELD_OUT:], "y_test": y[-HELD_OUT:]}


def _accuracy(model, data):
    logits = model.predict(data["x_test"], batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == data["y_test"]))


def _hidden_sign(estimator):
    from dab_keras import layers

    return [layers.Sign(estimator=estimator)], "tanh"


def _hidden_quantize(estimator):
    from dab_keras import layers

    return [layers.Quantize(levels=4, estimator=estimator)], "tanh"


def _hidden_argmax(estimator):
    import keras

    from dab_keras import layers

    return [keras.layers.Reshape((8, 8)), layers.ArgMax(estimator=estimator), keras.layers.Flatten()], None


def _hidden_topk(estimator):
    from dab_keras import layers

    return [layers.TopK(k=16, output_mode="values", estimator=estimator)], None


def _hidden_sort(estimator):
    import keras

    from dab_keras import layers

    return [keras.layers.Reshape((8, 8)), layers.Sort(estimator=estimator), keras.layers.Flatten()], None


def _hidden_vq(estimator):
    import keras

    from dab_keras import layers

    return [
        keras.layers.Reshape((8, 8)),
        layers.VectorQuantize(num_codes=32, code_dim=8, estimator=estimator),
        keras.layers.Flatten(),
    ], "tanh"


def _hidden_vq_small_codebook(estimator):
    import keras

    from dab_keras import layers

    return [
        keras.layers.Reshape((8, 8)),
        layers.VectorQuantize(num_codes=32, code_dim=8, estimator=estimator,
                              codebook_initializer=keras.initializers.RandomUniform(-1 / 32, 1 / 32)),
        keras.layers.Flatten(),
    ], "tanh"


def _mlp_builder(hidden):
    def build(estimator, seed):
        import keras

        keras.utils.set_random_seed(seed)
        hard_layers, activation = hidden(make_estimator(estimator))
        model = keras.Sequential(
            [keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
             keras.layers.Dense(64, activation=activation), *hard_layers, keras.layers.Dense(10)]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            # the task loss alone (DAB's logged `loss` also holds gamma * approximation error)
            metrics=[keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="task_loss"),
                     keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        return model

    return build


_MLP_LAYERS = {
    "sign": (_hidden_sign, "64 tanh -> Sign"),
    "quantize": (_hidden_quantize, "64 tanh -> Quantize(levels=4)"),
    "argmax": (_hidden_argmax, "64 -> 8 groups of 8 -> ArgMax (one-hot per group)"),
    "topk": (_hidden_topk, "64 -> TopK(k=16, values)"),
    "sort": (_hidden_sort, "64 -> 8 groups of 8 -> Sort (values, per group)"),
    "vq": (_hidden_vq, "64 tanh -> 8 vectors of 8 -> VectorQuantize(32 codes)"),
}

# Not in the `layers` table: `VectorQuantize` with the layer's earlier codebook initialisation, uniform in
# ±1/K (K = 32), far smaller than the encoder's tanh outputs: the `bridge` diagnostic's comparison.
_MLP_VARIANTS = {
    "vq_small_codebook": (_hidden_vq_small_codebook,
                          "64 tanh -> 8 vectors of 8 -> VectorQuantize(32 codes, codebook uniform in ±1/32)"),
}

for _layer, (_hidden, _text) in {**_MLP_LAYERS, **_MLP_VARIANTS}.items():
    register_task(Task(
        name=f"mnist_mlp_{_layer}",
        description=f"MNIST MLP 784 -> 256 relu -> {_text} -> 10, Adam 1e-3, batch 64, from scratch",
        build=_mlp_builder(_hidden),
        data=_mnist,
        batch_size=64,
        metric="test accuracy",
        evaluate=_accuracy,
    ))

register_table(Table(
    name="everyday",
    description="The everyday case: MNIST MLP with a Sign hidden layer",
    tasks=("mnist_mlp_sign",),
))
register_table(Table(
    name="layers",
    description="The everyday case and its analogues for every hard layer",
    tasks=tuple(f"mnist_mlp_{layer}" for layer in _MLP_LAYERS),
))


# ----------------------------------------------------------------------------------- the sort non-linearity
SORTNET_WIDTH = 256
SORTNET_GROUP = 16


def _sort_block(estimator):
    import keras

    from dab_keras import layers

    return [keras.layers.Reshape((SORTNET_WIDTH // SORTNET_GROUP, SORTNET_GROUP)),
            layers.Sort(output_mode="values", estimator=make_estimator(estimator)), keras.layers.Flatten()]


def _build_sortnet(estimator, seed):
    """MNIST MLP whose only non-linearity is `Sort`: 784 -> 256 -> Sort -> 256 -> Sort -> 10 (linear maps)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(SORTNET_WIDTH), *_sort_block(estimator),
        keras.layers.Dense(SORTNET_WIDTH), *_sort_block(estimator),
        keras.layers.Dense(10),
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="task_loss"),
                 keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


register_task(Task(
    name="mnist_sortnet",
    description=(f"MNIST MLP 784 -> {SORTNET_WIDTH} -> Sort -> {SORTNET_WIDTH} -> Sort -> 10, linear layers, Sort "
                 f"(values) within {SORTNET_WIDTH // SORTNET_GROUP} groups of {SORTNET_GROUP} as the only "
                 "non-linearity, Adam 1e-3, batch 64, from scratch"),
    build=_build_sortnet,
    data=_mnist,
    batch_size=64,
    metric="test accuracy",
    evaluate=_accuracy,
))
register_table(Table(
    name="sortnet",
    description="Classification with the sort non-linearity (the DAB paper's sort classifier)",
    tasks=("mnist_sortnet",),
    estimators=("straight_through", "relaxed", "dab", "dab_paper", "identity", "exact", "dab_gain", "dab_shrink"),
))


# ----------------------------------------------------------------------------------- permutation learning
PERMUTATION_SIZES = (5, 10, 20)  # items per sequence, one task each
PERMUTATION_ITEMS = 10  # the default of `permutation_data`
PERMUTATION_FEATURES = 16
PERMUTATION_NOISE = 0.05
PERMUTATION_TRAIN, PERMUTATION_TEST = 50_000, 5_000
# Seeds of the synthetic data, fixed across training seeds: the feature map, the training and the test set.
PERMUTATION_DATA_SEEDS = {"map": 1905, "train": 3658, "test": 1903}


def permutation_feature_map(seed=PERMUTATION_DATA_SEEDS["map"], features=PERMUTATION_FEATURES):
    """The fixed random map from an item's key v in [0, 1] to its features: `sin(a v + b)`, `(features,)` each.

    Random Fourier features (frequencies a ~ N(0, 4^2), phases b ~ U(0, 2 pi)): no single feature is monotone
    in v, so the scorer must learn to invert the map.
    """
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 4.0, features).astype("float32"), rng.uniform(0.0, 2 * np.pi, features).astype("float32")


def permutation_data(num_sequences, seed, items=PERMUTATION_ITEMS, noise=PERMUTATION_NOISE, feature_map=None):
    """Sequences of `items` items: keys v ~ U(0, 1) and features `sin(a v + b) + noise * N(0, 1)`.

    Args:
        num_sequences: Number of sequences.
        seed: Seed of the keys and the noise (the feature map is fixed separately).
        items: Items per sequence.
        noise: Standard deviation of the Gaussian noise added to each feature.
        feature_map: `(a, b)`, default `permutation_feature_map()`.

    Returns:
        `(features, keys)`: float32 arrays of shapes `(num_sequences, items, features)` and
        `(num_sequences, items)`.
    """
    a, b = feature_map if feature_map is not None else permutation_feature_map()
    rng = np.random.default_rng(seed)
    keys = rng.uniform(0.0, 1.0, (num_sequences, items)).astype("float32")
    features = np.sin(keys[..., None] * a + b) + noise * rng.standard_normal((num_sequences, items, len(a)))
    return features.astype("float32"), keys


def known_map_accuracy(features, keys, grid_points=4001):
    """Exact-permutation accuracy of a scorer that knows the feature map: the best key on a grid per item.

    A reference for the permutation tasks (how far the noise lets any scorer go): each item's key is
    estimated as the grid value whose noiseless features are nearest to its features (the maximum-likelihood
    key under Gaussian noise), and the items are sorted by the estimates.

    Args:
        features: `(num_sequences, n, features)` from `permutation_data` (default feature map).
        keys: `(num_sequences, n)` true keys.
        grid_points: Number of grid values in [0, 1].

    Returns:
        `(exact, per_position)`: the fractions of sequences and of positions sorted right.
    """
    a, b = permutation_feature_map()
    grid = np.linspace(0.0, 1.0, grid_points, dtype="float32")
    table = np.sin(grid[:, None] * a + b)
    flat = features.reshape(-1, features.shape[-1])
    estimates = np.concatenate([
        grid[np.argmin(np.sum((flat[i:i + 2000, None, :] - table[None]) ** 2, axis=-1), axis=-1)]
        for i in range(0, len(flat), 2000)
    ]).reshape(keys.shape)
    right = np.argsort(estimates, axis=-1) == np.argsort(keys, axis=-1)
    return float(np.mean(np.all(right, axis=-1))), float(np.mean(right))


def _permutation_loader(items):
    def data(path):
        del path  # synthetic
        x_train, y_train = permutation_data(PERMUTATION_TRAIN, PERMUTATION_DATA_SEEDS["train"], items)
        x_test, y_test = permutation_data(PERMUTATION_TEST, PERMUTATION_DATA_SEEDS["test"], items)
        return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}

    return data


def _sorting_loss(keys, permutation):
    """Mean squared error between `P @ keys` (the keys reordered by the model's permutation) and the sorted keys."""
    from keras import ops

    keys = ops.cast(keys, permutation.dtype)
    reordered = ops.squeeze(ops.matmul(permutation, ops.expand_dims(keys, -1)), -1)
    return ops.mean(ops.square(reordered - ops.sort(keys, axis=-1)), axis=-1)


def _exact_permutation(keys, permutation):
    """1 where every row of the permutation picks the input holding that sorted position's key, else 0."""
    from keras import ops

    correct = ops.equal(ops.argmax(permutation, axis=-1), ops.argsort(keys, axis=-1))
    return ops.cast(ops.all(correct, axis=-1), "float32")


def permutation_accuracy(permutations, keys):
    """Exact-permutation accuracy: the fraction of sequences whose every position is right (NumPy).

    Args:
        permutations: `(num_sequences, n, n)` permutation matrices, row i the one-hot of the input holding
            the i-th smallest key (`Sort(output_mode="permutation")`).
        keys: `(num_sequences, n)` true keys.

    Returns:
        A float in [0, 1].
    """
    return float(np.mean(np.all(np.argmax(permutations, axis=-1) == np.argsort(keys, axis=-1), axis=-1)))


def _evaluate_permutation(model, data):
    return permutation_accuracy(model.predict(data["x_test"], batch_size=1000, verbose=0), data["y_test"])


def _permutation_builder(items):
    def build(estimator, seed):
        """A shared per-item MLP scorer (features -> 64 relu -> 64 relu -> 1), then a hard permutation matrix."""
        import keras

        from dab_keras import layers

        keras.utils.set_random_seed(seed)
        model = keras.Sequential([
            keras.Input((items, PERMUTATION_FEATURES)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1),
            keras.layers.Reshape((items,)),
            layers.Sort(output_mode="permutation", estimator=make_estimator(estimator)),
        ])
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=_sorting_loss,
            metrics=[keras.metrics.MeanMetricWrapper(_sorting_loss, name="task_loss"),
                     keras.metrics.MeanMetricWrapper(_exact_permutation, name="accuracy")],
        )
        return model

    return build


for _items in PERMUTATION_SIZES:
    register_task(Task(
        name=f"permutation_n{_items}",
        description=(f"Learn to sort {_items} items from noisy random Fourier features of their keys: shared "
                     "per-item MLP scorer -> Sort(permutation) -> MSE(P keys, sorted keys), Adam 1e-3, batch 64; "
                     "metric: all positions right"),
        build=_permutation_builder(_items),
        data=_permutation_loader(_items),
        batch_size=64,
        metric="exact-permutation accuracy",
        evaluate=_evaluate_permutation,
        needs_data=False,
    ))
register_table(Table(
    name="permutation",
    description="Permutation learning through a hard permutation matrix (the DAB paper's sorting problems)",
    tasks=tuple(f"permutation_n{items}" for items in PERMUTATION_SIZES),
    estimators=("straight_through", "relaxed", "dab", "dab_paper"),
))


# ----------------------------------------------------------------------------------- discrete VAEs
from benchmarks.study import vae as _vae  # noqa: E402,F401  (registers the `vae` table)
