"""Registry of the study's tasks and tables.

A task builds a fresh, compiled Keras model for an estimator and a seed, and names its data. A table is a
list of tasks with default estimators, seeds and budgets: `python -m benchmarks.study run TABLE` runs it.
New domains (VAE, the sort non-linearity classifier, sorting) register with `register_task` and
`register_table`; the runner only needs `build(estimator, seed)`, `data(path)` and `evaluate(model, data)`.
"""

import dataclasses

import numpy as np

TASKS = {}
TABLES = {}
ESTIMATORS = ("straight_through", "relaxed", "dab")


def _paper_dab():
    from dab_keras import estimators

    return estimators.DAB(residual=False)


# Every estimator a table may name: an alias the layers take, or a factory of a fresh estimator object.
# `dab` is the library's default (a residual approximator); `dab_paper` is g alone, as in the paper.
ESTIMATOR_CHOICES = {
    "straight_through": "straight_through",
    "relaxed": "relaxed",
    "dab": "dab",
    "dab_paper": _paper_dab,
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
        metric: Name of the reported test metric.
        evaluate: `evaluate(model, data) -> float`, the test metric (test split only).
    """

    name: str
    description: str
    build: object
    data: object
    batch_size: int
    metric: str
    evaluate: object


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

for _layer, (_hidden, _text) in _MLP_LAYERS.items():
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
