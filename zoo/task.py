"""`Task`: what the zoo's trainer and CLI need to know about one model family.

Each family file (`sorter.py`, `classifier.py`, `vae.py`) defines its Keras model constructor and a `Task`
that says how to build, feed, compile and evaluate it. `dab_keras.zoo.training.train` and the `dab-zoo`
command line work from tasks only, so adding a model means adding one file and registering its task.
"""

import dataclasses

import keras
import numpy as np

from dab_keras import estimators as dab_estimators
from dab_keras import layers as dab_layers

#: Estimators every zoo model trains with, by their registry names.
ESTIMATORS = ("dab", "straight_through", "relaxed")


def estimator_key(estimator):
    """The name (`"dab"`, `"straight_through"`, `"relaxed"`) of an estimator, or `None` for a custom one.

    A string alias resolves to its canonical name (`"ste"` → `"straight_through"`); an estimator object
    counts as custom (its settings may differ from the recipe the shipped weights were trained with).
    """
    if isinstance(estimator, str):
        cls = dab_estimators.ALIASES.get(estimator)
        if cls is None:
            raise ValueError(
                f"Unknown estimator. Expected one of {sorted(dab_estimators.ALIASES)} or an Estimator "
                f"instance. Received: estimator={estimator!r}"
            )
        return {dab_estimators.StraightThrough: "straight_through", dab_estimators.Relaxed: "relaxed",
                dab_estimators.DAB: "dab"}[cls]
    if isinstance(estimator, dab_estimators.Estimator):
        return None
    raise ValueError(
        f"`estimator` must be one of {list(ESTIMATORS)} or an Estimator instance. Received: {estimator!r}"
    )


@dataclasses.dataclass
class TrainData:
    """Training input of `model.fit`: a dataset (or arrays `x`, `y`) and how many steps make an epoch."""

    x: object
    y: object = None
    #: Steps of one epoch (`None`: Keras derives it from the arrays and the batch size).
    steps_per_epoch: int | None = None
    #: Whether the data is generated without end (runs are measured in samples, epochs are arbitrary
    #: chunks of `steps_per_epoch` steps) rather than a finite data set (runs are whole epochs).
    synthetic: bool = False
    #: Number of training examples in one epoch.
    epoch_size: int = 0
    validation: object = None
    #: Text that describes the data in manifests.
    description: str = ""


class Task:
    """Recipe of one zoo model: construction, data, compilation, evaluation and training defaults.

    Subclasses set the class attributes and implement `build`, `train_data` and `evaluate`.
    """

    #: Registry name, e.g. `"sorter"`.
    name = ""
    #: The family's model constructor (e.g. `Sorter`), as a staticmethod.
    constructor = None
    #: One-line description shown by `dab-zoo list`.
    description = ""
    #: Estimator used when none is given.
    default_estimator = "dab"
    #: Training defaults (the recipe of the shipped weights).
    batch_size = 128
    learning_rate = 1e-3
    #: Linear warm-up steps, then cosine decay to zero over the run.
    warmup_steps = 0
    #: Default length of a run: epochs (a data set) or samples (synthetic data), one of them set.
    epochs = None
    samples = None
    steps_per_execution = 1
    #: XLA preference of the recipe (`None`: `training.default_jit_compile()`).
    jit_compile = None
    #: Whether `--data` (an MNIST source) applies.
    uses_mnist = False
    #: The metric reported first in tables (with its direction).
    headline_metric = ""
    higher_is_better = True

    def build(self, estimator, weights=None, **config):
        """Returns the Keras model (the family's constructor)."""
        raise NotImplementedError

    def train_data(self, batch_size, seed, data="tfds", initial_epoch=0):
        """Returns the `TrainData` of a run."""
        raise NotImplementedError

    def data_kwargs(self, config):
        """Keyword arguments of `train_data` taken from the model's constructor arguments `config`."""
        return {}

    def loss(self):
        """The loss passed to `compile`, or `None` when the model computes its own."""
        return None

    def metrics(self):
        """Metrics passed to `compile`."""
        return []

    def compile(self, model, optimizer, jit_compile, steps_per_execution=None):
        """Compiles `model` for training with this task's loss and metrics."""
        model.compile(
            optimizer=optimizer,
            loss=self.loss(),
            metrics=self.metrics() or None,
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution or self.steps_per_execution,
        )

    def evaluate(self, model, data="tfds", batch_size=None, verbose=0):
        """Returns a dict of test metrics of `model` (floats)."""
        raise NotImplementedError

    def demo_batch(self):
        """A few test inputs and a printable description of the model's output on them (for `dab-zoo demo`)."""
        return None


def cosine_schedule(learning_rate, total_steps, warmup_steps=0):
    """Linear warm-up to `learning_rate` over `warmup_steps`, then cosine decay to zero at `total_steps`."""
    warmup_steps = int(min(warmup_steps, max(total_steps - 1, 0)))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=max(int(total_steps) - warmup_steps, 1),
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def code_estimator(estimator, width, approximator_units):
    """The estimator of a `Sign` code of `width` units: `"dab"` by name gets a dense approximator.

    The approximator is a tanh MLP over the whole code (`AxisMLP`, the DAB reference's "batch"
    approximator), much cheaper per example than the default element-wise MLP run on each unit. Other
    names and estimator objects pass through.
    """
    if isinstance(estimator, str) and estimator_key(estimator) == "dab":
        return dab_estimators.DAB(
            approximator=dab_layers.AxisMLP((width,), units=approximator_units, name="approximator")
        )
    return estimator


def copy_layer_weights(target, source):
    """Copies the weights of each layer of `target` from the layer of `source` with the same name."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return target


def sparse_nll(logits, labels):
    """−log softmax(logits)[label] over the last axis (NumPy, float64-safe): shape of `labels`."""
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, np.asarray(labels).astype("int64")[..., None], axis=-1)[..., 0]
