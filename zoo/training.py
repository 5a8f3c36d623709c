"""Training and evaluation of zoo models: `train` (what `dab-zoo train` runs) and `evaluate`.

A run writes into its output folder:

- `log.csv` (Keras `CSVLogger`, one row per epoch, appended on `resume`),
- `backup/` (Keras `BackupAndRestore`: model, optimizer and epoch, so `resume=True` continues a stopped run),
- `checkpoint.weights.h5` (the latest epoch's weights),
- `<model>-<estimator>.weights.h5` and its manifest `<model>-<estimator>.json` (sha256, test metrics, the
  command, data, seed, samples seen, time) once the run ends. Copy both into `zoo/weights/` to ship them.
"""

import datetime
import inspect
import json
import math
import platform
import time
from pathlib import Path

import keras

from dab_keras import _validation
from dab_keras.zoo import distribute, registry
from dab_keras.zoo import task as zoo_task
from dab_keras.zoo import weights as zoo_weights


def default_jit_compile():
    """`True` on JAX (without it JAX runs op by op) and where a GPU is visible; `False` on a TF CPU.

    On a small CPU, TensorFlow's graph mode is often faster than XLA (`benchmarks/zoo_sorter.py`).
    Other backends get `False`.

    Returns:
        A bool, the `jit_compile` of `compile` when neither the caller nor the recipe chooses one.

    Examples:
        >>> isinstance(default_jit_compile(), bool)  # True on JAX; on TensorFlow, whether a GPU is visible
        True
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
    except Exception:  # pragma: no cover - a backend without devices
        return False
    return False


def plan(task, batch_size, samples=None, epochs=None, epoch_size=None, steps_per_epoch=None, synthetic=False):
    """Returns `(epochs, steps_per_epoch)` of a run of `samples` examples or `epochs` epochs.

    Synthetic data: `samples` becomes steps of `batch_size`, grouped in epochs of `steps_per_epoch`
    steps (one shorter epoch when the run is shorter than that). A data set of `epoch_size` examples:
    `samples` rounds to whole epochs and `steps_per_epoch` stays as given. With `epochs`, it is used as
    given and `steps_per_epoch` too.

    Args:
        task: The `Task` (its `samples` or `epochs` apply when both arguments are `None`).
        batch_size: Global batch size.
        samples: Training examples to see, or `None`. Defaults to `None`.
        epochs: Epochs to train, or `None`. Defaults to `None`.
        epoch_size: Examples in one epoch of a data set (not used for synthetic data). Defaults to `None`.
        steps_per_epoch: Steps of one epoch (required for synthetic data with `samples`). Defaults to
            `None`.
        synthetic: Whether the data is generated without end. Defaults to `False`.

    Returns:
        A tuple `(epochs, steps_per_epoch)`; `steps_per_epoch` may be `None` (Keras's own).

    Raises:
        ValueError: if both `samples` and `epochs` are given, `epochs < 1`, `samples < batch_size`, or
            synthetic data has `samples` but no `steps_per_epoch`.

    Examples:
        >>> from dab_keras.zoo import registry
        >>> sorter = registry.get("sorter")
        >>> plan(sorter, 1024, samples=4_096_000, steps_per_epoch=1000, synthetic=True)
        (4, 1000)
        >>> plan(sorter, 1024, samples=102_400, steps_per_epoch=1000, synthetic=True)  # one short epoch
        (1, 100)
        >>> plan(registry.get("mnist_classifier"), 128, samples=150_000, epoch_size=60_000)
        (2, None)
    """
    if samples is not None and epochs is not None:
        raise ValueError("Give either `samples` or `epochs`, not both.")
    if samples is None and epochs is None:
        samples, epochs = task.samples, task.epochs
    if epochs is not None:
        epochs = int(epochs)
        if epochs < 1:
            raise ValueError(f"`epochs` must be >= 1. Received: epochs={epochs}")
        return epochs, steps_per_epoch
    samples = int(samples)
    if samples < batch_size:
        raise ValueError(f"`samples` must be at least the batch size ({batch_size}). Received: samples={samples}")
    if not synthetic:
        return max(1, round(samples / epoch_size)), steps_per_epoch
    if steps_per_epoch is None:
        raise ValueError("Synthetic data trained for `samples` needs `steps_per_epoch` (steps of one epoch).")
    total_steps = math.ceil(samples / batch_size)
    if total_steps < steps_per_epoch:
        return 1, total_steps
    return max(1, round(total_steps / steps_per_epoch)), steps_per_epoch


def train(
    model,
    estimator=None,
    samples=None,
    epochs=None,
    batch_size=None,
    learning_rate=None,
    jit_compile=None,
    strategy=None,
    seed=0,
    output_dir=None,
    resume=False,
    data="tfds",
    verbose="auto",
    steps_per_execution=None,
    steps_per_epoch=None,
    command=None,
    evaluate_at_end=True,
    config=None,
):
    """Trains a zoo model from scratch with its recipe and writes weights, manifest, log and checkpoints.

    Args:
        model: Registry name (see `dab_keras.zoo.list_models()`).
        estimator: `"dab"`, `"straight_through"` or `"relaxed"`. Defaults to the model's default.
        samples: Training examples to see (synthetic data: sequences; data sets: rounded to epochs).
        epochs: Epochs to train instead of `samples`. Defaults to the recipe's length when both are `None`.
        batch_size: Global batch size. Defaults to the recipe's.
        learning_rate: Peak learning rate (Adam, linear warm-up, cosine decay to zero). Defaults to the
            recipe's.
        jit_compile: XLA compilation. Defaults to the recipe's preference (`Task.jit_compile`; not
            with a `strategy`), else `True` on JAX or with a GPU and `False` for TensorFlow on a CPU.
        strategy: Where to train (`dab_keras.zoo.distribute.resolve`): `None` (one device; on JAX,
            `keras.distribution.DataParallel` over all devices when several are visible),
            `"data_parallel"` (JAX), `"mirrored"` (TensorFlow, the visible devices), `"multi_worker"`
            (TensorFlow, `MultiWorkerMirroredStrategy` from `TF_CONFIG`), or a `tf.distribute.Strategy`
            or a `keras.distribution` instance (e.g. `DataParallel(...)`). Only the chief process writes into
            `output_dir`; the others write to temporary folders and return `None` paths.
        seed: Seed of initialization and data.
        output_dir: Folder of the run. Defaults to `dab_zoo_runs/<model>-<estimator>`.
        resume: Continue the run saved in `output_dir/backup` (same arguments) instead of starting over.
        data: MNIST source for MNIST models: `"tfds"` or an `.npz` path.
        verbose: Keras `fit` verbosity.
        steps_per_execution: Steps per compiled call. Defaults to the recipe's.
        steps_per_epoch: Steps of one epoch of synthetic data (logs and checkpoints come once per epoch).
            Defaults to the recipe's.
        command: Command line recorded in the manifest. Defaults to the equivalent `dab-zoo train` call.
        evaluate_at_end: Evaluate on the test set and record the metrics in the manifest.
        config: Extra constructor arguments of the model.

    Returns:
        A dict with `model` (the trained Keras model), `history`, `metrics`, `weights` and `manifest`
        (paths).

    Raises:
        ValueError: for an unknown model or estimator, an invalid length, batch size or learning rate,
            `steps_per_epoch` with a data set, or an unusable `strategy`.
        FileExistsError: if `output_dir` holds a run already and `resume` is `False`.

    Examples:
        ```python
        from dab_keras import zoo

        run = zoo.train("sorter", estimator="straight_through", samples=10_000_000, output_dir="runs/st")
        run["metrics"]["all_or_none_accuracy"]
        model = zoo.Sorter(estimator="straight_through", weights=run["weights"])
        ```

        The same from the command line: `dab-zoo train sorter --estimator straight_through --samples 1e7`.
    """
    task = registry.get(model)
    estimator = zoo_weights.estimator_key(estimator or task.default_estimator)
    batch_size = int(batch_size if batch_size is not None else task.batch_size)
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    learning_rate = float(learning_rate if learning_rate is not None else task.learning_rate)
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={learning_rate}")
    placement = distribute.resolve(strategy, batch_size)  # first: a multi-worker strategy must come first
    if jit_compile is None:
        # Under a tf.distribute strategy only the device default applies: XLA over logical CPU devices
        # fails in TensorFlow ("variable on a different device").
        use_recipe = task.jit_compile is not None and placement.strategy is None
        jit_compile = task.jit_compile if use_recipe else default_jit_compile()
    config = dict(config or {})
    output_dir = Path(output_dir or Path("dab_zoo_runs") / f"{task.name}-{estimator}")
    output_dir = placement.output_dir(output_dir, resume)  # a temporary folder on non-chief workers
    output_dir.mkdir(parents=True, exist_ok=True)
    backup_dir = output_dir / "backup"
    if not resume and backup_dir.exists() and any(backup_dir.iterdir()):
        raise FileExistsError(
            f"{output_dir} holds a run already. Pass resume=True (--resume) to continue it, or choose "
            "another output folder."
        )

    keras.utils.set_random_seed(seed)
    initial_epoch = _backup_epoch(backup_dir) if resume else 0
    train_data = task.train_data(
        batch_size, seed, data=data, initial_epoch=initial_epoch, **task.data_kwargs(config)
    )
    placement.check_data(train_data, task.name)
    if steps_per_epoch is not None:
        if not train_data.synthetic:
            raise ValueError(f"`steps_per_epoch` applies to synthetic data only; {task.name} trains on a data set.")
        train_data.steps_per_epoch = _validation.check_int("steps_per_epoch", steps_per_epoch, 1)
    n_epochs, planned_steps = plan(
        task, batch_size, samples, epochs, train_data.epoch_size, train_data.steps_per_epoch, train_data.synthetic
    )
    if train_data.synthetic:
        train_data.steps_per_epoch = planned_steps
        if hasattr(train_data.x, "steps"):  # a PyDataset of synthetic batches
            train_data.x.steps = planned_steps
    total_steps = n_epochs * (train_data.steps_per_epoch or math.ceil(train_data.epoch_size / batch_size))

    with placement.scope():
        net = task.build(estimator, weights=None, **config)
        fit_model = train_data.trainer(net) if train_data.trainer is not None else net
        optimizer = keras.optimizers.Adam(
            zoo_task.cosine_schedule(learning_rate, total_steps, task.warmup_steps)
        )
        steps_per_execution = placement.steps_per_execution(steps_per_execution or task.steps_per_execution)
        task.compile(fit_model, optimizer, jit_compile, steps_per_execution)

    callbacks = [
        *task.callbacks(net, total_steps),  # the recipe's own (e.g. the VAE's temperature schedule)
        keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False),
        keras.callbacks.CSVLogger(str(output_dir / "log.csv"), append=resume),
        keras.callbacks.ModelCheckpoint(str(output_dir / "checkpoint.weights.h5"), save_weights_only=True),
    ]
    fit_kwargs = {}
    if train_data.steps_per_epoch is not None:
        fit_kwargs["steps_per_epoch"] = train_data.steps_per_epoch
    fit_kwargs["shuffle"] = train_data.y is not None  # datasets and PyDatasets bring their own order
    start = time.perf_counter()
    with placement.scope():
        history = fit_model.fit(
            train_data.x,
            train_data.y,
            batch_size=None if train_data.y is None else batch_size,
            epochs=n_epochs,
            callbacks=callbacks,
            validation_data=train_data.validation,
            verbose=verbose,
            **fit_kwargs,
        )
    seconds = time.perf_counter() - start

    metrics = task.evaluate(net, data=data) if evaluate_at_end else {}
    weights_path = output_dir / zoo_weights.weights_filename(task.name, estimator)
    export_weights(task, estimator, config, net, weights_path)
    samples_seen = total_steps * batch_size
    if command is None:
        command = (
            f"dab-zoo train {task.name} --estimator {estimator} "
            + (f"--samples {samples_seen} " if train_data.synthetic else f"--epochs {n_epochs} ")
            + f"--batch-size {batch_size} --lr {learning_rate:g} --seed {seed}"
            + (" --jit" if jit_compile else " --no-jit")
        )
    manifest = zoo_weights.write_manifest(
        weights_path,
        model=task.name,
        estimator=estimator,
        config={**_model_config(task, net, config), "estimator": estimator},
        metrics=metrics,
        command=command,
        data=train_data.description,
        seed=seed,
        batch_size=batch_size,
        learning_rate=learning_rate,
        epochs=n_epochs,
        steps=total_steps,
        samples_seen=samples_seen,
        train_seconds=round(seconds, 1),
        samples_per_second=round(samples_seen / seconds) if not resume else None,
        backend=keras.backend.backend(),
        jit_compile=bool(jit_compile),
        strategy=placement.name,
        keras_version=keras.__version__,
        machine=platform.machine(),
        date=datetime.date.today().isoformat(),
    )
    if not placement.finish(output_dir):  # a non-chief worker's files were temporary
        weights_path = manifest = None
    return {"model": net, "history": history, "metrics": metrics, "weights": weights_path, "manifest": manifest}


def _backup_epoch(backup_dir):
    # The epoch Keras's BackupAndRestore will resume from (so synthetic data continues, not repeats).
    path = Path(backup_dir) / "training_metadata.json"
    if not path.is_file():
        return 0
    return int(json.loads(path.read_text()).get("epoch", 0))


def export_weights(task, estimator, config, model, path):
    """Saves `model`'s weights without optimizer state (a fresh, uncompiled copy holds them).

    Args:
        task: The model's `Task`.
        estimator: The estimator the model was built with.
        config: The model's constructor arguments.
        model: The trained model.
        path: Destination `.weights.h5` path.

    Returns:
        `path`.

    Examples:
        >>> import os, tempfile
        >>> from dab_keras.zoo import registry
        >>> task = registry.get("sorter")
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "sorter-dab.weights.h5")
        ...     os.path.isfile(export_weights(task, "dab", {}, task.build("dab"), path))
        True
    """
    export = task.build(estimator, weights=None, **config)
    export.set_weights(model.get_weights())
    export.save_weights(path)
    return path


def _model_config(task, net, config):
    # The constructor's defaults merged with the overrides: what the weights need to load again.
    builder = task.constructor
    params = inspect.signature(builder).parameters
    keys = [k for k in params if k not in ("estimator", "weights", "name", "include_top")]
    out = {k: params[k].default for k in keys}
    out.update({k: v for k, v in config.items() if k in out})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def evaluate(model, weights="pretrained", estimator=None, data="tfds", verbose=0, **config):
    """Evaluates a zoo model on its test set.

    Args:
        model: Registry name.
        weights: `"pretrained"` (the shipped weights of `estimator`), a `.weights.h5` path, or `None`
            (random initialization). Defaults to `"pretrained"`.
        estimator: Estimator the weights were trained with. Defaults to the model's default.
        data: MNIST source for MNIST models (`"tfds"` or an `.npz` path). Defaults to `"tfds"`.
        verbose: Prediction verbosity. Defaults to `0`.
        **config: Constructor arguments.

    Returns:
        A dict of test metrics (see each task's `evaluate`), e.g. `all_or_none_accuracy`,
        `per_position_accuracy`, `loss` and `test_sequences` for the sorter.

    Raises:
        ValueError: for an unknown model or estimator, or weights that do not match.

    Examples:
        ```python
        from dab_keras import zoo

        zoo.evaluate("sorter")  # the shipped DAB weights on the 100,000 test sequences
        zoo.evaluate("mnist_classifier", estimator="relaxed", data="mnist.npz")
        ```
    """
    task = registry.get(model)
    estimator = zoo_weights.estimator_key(estimator or task.default_estimator)
    net = task.build(estimator, weights=weights, **config)
    return task.evaluate(net, data=data, verbose=verbose)

