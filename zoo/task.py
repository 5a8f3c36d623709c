"""`Task`: what the zoo's trainer and CLI need to know about one model family.

Each family file (`sorter.py`, `classifier.py`, `vae.py`) defines its Keras model constructor and a `Task`
that says how to build, feed, compile and evaluate it. `dab_keras.zoo.training.train` and the `dab-zoo`
command line work from tasks only, so adding a model means adding one file and registering its task.
"""

import dataclasses

import keras


@dataclasses.dataclass
class TrainData:
    """Training input of `model.fit`: a dataset (or arrays `x`, `y`) and how many steps make an epoch.

    Returned by `Task.train_data`; `dab_keras.zoo.train` passes `x`, `y`, `steps_per_epoch` and
    `validation` to `fit` and records `description` in the manifest.

    Args:
        x: Training inputs: an array, a `tf.data.Dataset` or a `keras.utils.PyDataset` (datasets yield
            `(x, y)` batches themselves).
        y: Targets for array inputs, or `None`. Defaults to `None`.
        steps_per_epoch: Steps of one epoch (`None`: Keras derives it from the arrays and the batch
            size). Defaults to `None`.
        synthetic: Whether the data is generated without end (runs are measured in samples, epochs are
            arbitrary chunks of `steps_per_epoch` steps) rather than a finite data set (runs are whole
            epochs). Defaults to `False`.
        epoch_size: Number of training examples in one epoch. Defaults to `0`.
        validation: `validation_data` of `fit`, or `None`. Defaults to `None`.
        description: Text that describes the data in manifests. Defaults to `""`.
        trainer: A function of the built model that returns the model `fit` trains instead (sharing
            its weights), e.g. one that draws its batches on the device; `None` fits the model itself.
            Defaults to `None`.

    Examples:
        >>> import numpy as np
        >>> data = TrainData(x=np.zeros((60, 2)), y=np.zeros(60), epoch_size=60, description="toy")
        >>> data.steps_per_epoch, data.synthetic
        (None, False)
    """

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
    #: Function of the built model returning the model to `fit` instead (same weights), or `None`.
    trainer: object = None


class Task:
    """Recipe of one zoo model: construction, data, compilation, evaluation and training defaults.

    Subclasses set the class attributes and implement `build`, `train_data` and `evaluate` (and
    override `loss`, `metrics`, `data_kwargs`, `callbacks`, `demo_batch` where needed);
    `registry.register` makes an instance known to `dab_keras.zoo.train`, `evaluate` and the `dab-zoo`
    command. The class
    attributes are documented where they are defined: `name`, `constructor`, `description`,
    `default_estimator`, the recipe's `batch_size`, `learning_rate`, `warmup_steps`, `epochs` or
    `samples`, `steps_per_execution` and `jit_compile`.

    Examples:
        >>> from dab_keras.zoo import registry
        >>> task = registry.get("sorter")
        >>> isinstance(task, Task), task.samples, task.learning_rate
        (True, 400000000, 0.002)
        >>> model = task.build("dab")  # weights=None: random initialization
        >>> task.compile(model, "adam", jit_compile=False)
        >>> model.output_shape
        (None, 10, 10)
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

    def build(self, estimator, weights=None, **config):
        """Returns the Keras model (the family's constructor).

        Args:
            estimator: Estimator name (`"dab"`, `"straight_through"`, `"relaxed"`) or `Estimator`.
            weights: `"pretrained"`, `None` (random initialization) or a `.weights.h5` path. Defaults
                to `None`.
            **config: Further constructor arguments.

        Returns:
            The model, uncompiled.
        """
        raise NotImplementedError

    def train_data(self, batch_size, seed, data="tfds", initial_epoch=0):
        """Returns the `TrainData` of a run.

        Args:
            batch_size: Global batch size.
            seed: Seed of the data's order, augmentation or generation.
            data: MNIST source (`"tfds"` or an `.npz` path) for MNIST tasks; ignored by others.
                Defaults to `"tfds"`.
            initial_epoch: Epoch a resumed run starts at, so its data continues rather than repeats.
                Defaults to `0`.

        Returns:
            A `TrainData`.
        """
        raise NotImplementedError

    def data_kwargs(self, config):
        """Keyword arguments of `train_data` taken from the model's constructor arguments `config`.

        Args:
            config: The constructor arguments of the run (`dab_keras.zoo.train(config=...)`).

        Returns:
            A dict of extra `train_data` arguments (empty in the base class).
        """
        return {}

    def loss(self):
        """The loss passed to `compile`, or `None` when the model computes its own.

        Returns:
            A Keras loss (function or object), or `None` (the base class's).
        """
        return None

    def metrics(self):
        """Metrics passed to `compile`.

        Returns:
            A list of Keras metrics (empty in the base class).
        """
        return []

    def compile(self, model, optimizer, jit_compile, steps_per_execution=None):
        """Compiles `model` for training with this task's loss and metrics.

        Args:
            model: The Keras model from `build`.
            optimizer: A Keras optimizer (or its name).
            jit_compile: Whether to XLA-compile the train step (`True`, `False` or `"auto"`).
            steps_per_execution: Steps per compiled call. Defaults to `None` (the task's
                `steps_per_execution`).
        """
        model.compile(
            optimizer=optimizer,
            loss=self.loss(),
            metrics=self.metrics() or None,
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution or self.steps_per_execution,
        )

    def evaluate(self, model, data="tfds", batch_size=None, verbose=0):
        """Returns a dict of test metrics of `model` (floats).

        Args:
            model: A model of this task (from `build`).
            data: MNIST source for MNIST tasks (`"tfds"` or an `.npz` path). Defaults to `"tfds"`.
            batch_size: Prediction batch size. Defaults to `None` (the task's own).
            verbose: Prediction verbosity. Defaults to `0`.

        Returns:
            A dict of metric name to value: floats, and ints for the sizes of the test sets.
        """
        raise NotImplementedError

    def callbacks(self, model, total_steps):
        """Callbacks the recipe adds to `fit` (e.g. a temperature schedule), before the trainer's own.

        They come first, so what they add to the epoch logs (such as `temperature`) reaches the
        trainer's loggers.

        Args:
            model: The compiled model of the run (from `build`).
            total_steps: Optimizer steps of the whole run.

        Returns:
            A list of `keras.callbacks.Callback` (empty in the base class).
        """
        return []

    def demo_batch(self):
        """A few test inputs and their targets, for `dab-zoo demo`.

        Returns:
            A tuple `(x, y)`, or `None` (the base class's) when the task has no demo.
        """
        return None


def cosine_schedule(learning_rate, total_steps, warmup_steps=0):
    r"""Linear warm-up to `learning_rate` over `warmup_steps`, then cosine decay to zero at `total_steps`.

    $$ \eta(t) = \eta_{\max} \frac{t}{W} \ (t < W), \qquad
    \eta(t) = \frac{\eta_{\max}}{2}\left(1 + \cos\frac{\pi (t - W)}{T - W}\right) \ (W \le t \le T), $$

    and 0 after T, with W the warm-up and T the total steps (Loshchilov & Hutter, "SGDR: Stochastic
    Gradient Descent with Warm Restarts", 2017, arXiv:1608.03983, without restarts). W is capped at
    `T - 1`.

    Args:
        learning_rate: Peak learning rate η_max.
        total_steps: Length T of the run in optimizer steps.
        warmup_steps: Warm-up steps W. Defaults to `0` (decay from the first step).

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Examples:
        >>> schedule = cosine_schedule(1e-3, total_steps=100, warmup_steps=10)
        >>> [round(float(schedule(step)), 6) for step in (0, 5, 10, 55, 100)]
        [0.0, 0.0005, 0.001, 0.0005, 0.0]
    """
    warmup_steps = int(min(warmup_steps, max(total_steps - 1, 0)))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=max(int(total_steps) - warmup_steps, 1),
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
