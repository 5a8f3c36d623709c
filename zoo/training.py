"""Training and evaluation of zoo models: `train` (what `dab-zoo train` runs) and `evaluate`.

A run writes into its output folder:

- `log.csv` (Keras `CSVLogger`, one row per epoch, appended on `resume`),
- `backup/` (Keras `BackupAndRestore`: model, optimizer and epoch, so `resume=True` continues a stopped run;
  beside them the states of the model's random-seed generators, `seed_states.npz`, so that a resumed run
  draws the random numbers an uninterrupted one would, e.g. a VAE's latent noise),
- `checkpoint.weights.h5` (the latest epoch's weights),
- `<model>-<estimator>.weights.h5` and its manifest `<model>-<estimator>.json` (sha256, test metrics, the
  command, data, seed, samples seen, time) once the run ends. Copy both into `zoo/weights/` to ship them.
"""

import datetime
import importlib.util
import inspect
import json
import math
import numbers
import os
import platform
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from dab_keras import layers as dab_layers
from dab_keras.zoo import data as zoo_data
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


#: Largest peak learning rate `train` accepts: Adam moves each weight by about the learning rate per step,
#: so anything larger destroys a network in one step (the recipes use 1e-3 to 2e-3).
MAX_LEARNING_RATE = 1.0

#: The resolved arguments that define a run, saved in `run.json`: a resumed run must match every one.
#: (`steps_per_execution` may change: it groups steps without changing them.)
RUN_KEYS = (
    "model", "estimator", "backend", "epochs", "steps_per_epoch", "total_steps", "batch_size", "learning_rate",
    "seed", "jit_compile", "strategy", "data", "config",
)

_RUN_FILE = "run.json"
#: Folder of a run that holds the weights kept by `train(checkpoint_every=...)`.
CHECKPOINTS_DIR = "checkpoints"


class NonFiniteLossError(ArithmeticError):
    """Raised by `train` when the training loss becomes NaN or infinite; the last good checkpoint stays.

    Args:
        message: What became non-finite, in which epoch, and what was kept.

    Examples:
        >>> issubclass(NonFiniteLossError, ArithmeticError)
        True
    """

    def __init__(self, message):
        super().__init__(message)


def _whole_number(name, value, minimum):
    # An integer, or a float with an integral value such as 3e6; never a bool, NaN or infinity.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a whole number >= {minimum}. Received: {name}={value!r}")
    if isinstance(value, numbers.Integral):
        result = int(value)
    elif not math.isfinite(value) or not float(value).is_integer():
        raise ValueError(f"`{name}` must be a whole number >= {minimum} (e.g. 3e6). Received: {name}={value!r}")
    else:
        result = int(value)
    if result < minimum:
        raise ValueError(f"`{name}` must be a whole number >= {minimum}. Received: {name}={value!r}")
    return result


def _accepts(function, name):
    return name in inspect.signature(function).parameters


def check_arguments(
    task,
    estimator=None,
    samples=None,
    epochs=None,
    batch_size=None,
    learning_rate=None,
    seed=0,
    jit_compile=None,
    strategy=None,
    data="tfds",
    steps_per_execution=None,
    steps_per_epoch=None,
    config=None,
    tensorboard=False,
    checkpoint_every=None,
):
    """Checks and completes the arguments of a run before any work; what `train` does first.

    Numbers must be finite; counts must be whole numbers (`samples=3e6` is fine, `batch_size=2.5` is
    not); `learning_rate` must be in (0, `MAX_LEARNING_RATE`]. Defaults come from the task's recipe. A
    `data` path must exist (`"tfds"` is checked when MNIST is loaded: offline it falls back to a local
    copy or fails within seconds, see `dab_keras.zoo.data.resolve_mnist`).

    Args:
        task: The model's `Task` (from `dab_keras.zoo.registry.get`).
        estimator: Estimator name or `None` (the task's default). Defaults to `None`.
        samples: Training examples, a whole number >= 1, or `None`. Defaults to `None`.
        epochs: Epochs, a whole number >= 1, or `None`. Defaults to `None`.
        batch_size: Global batch size >= 1, or `None` (the recipe's). Defaults to `None`.
        learning_rate: Peak learning rate, or `None` (the recipe's). Defaults to `None`.
        seed: Seed, a whole number >= 0. Defaults to `0`.
        jit_compile: `None` or a bool. Defaults to `None`.
        strategy: `None`, `"mirrored"` or a `tf.distribute.Strategy`. Defaults to `None`.
        data: `"tfds"` or the path of an MNIST `.npz` (MNIST models). Defaults to `"tfds"`.
        steps_per_execution: Whole number >= 1 or `None`. Defaults to `None`.
        steps_per_epoch: Whole number >= 1 or `None`; synthetic data only. Defaults to `None`.
        config: Dict of extra constructor arguments, or `None` (`dab_residual=True` only with the
            `"dab"` estimator). Defaults to `None`.
        tensorboard: `False`, `True` or a folder path; needs the `tensorboard` package. Defaults to
            `False`.
        checkpoint_every: Whole number >= 1 or `None`. Defaults to `None`.

    Returns:
        A dict with the checked values under the argument names (`estimator` as its registry key,
        `batch_size`, `learning_rate` and `data` completed, `config` a dict).

    Raises:
        ValueError: naming the first argument that breaks its rule (the rule, then `Received:`).
        FileNotFoundError: for a `data` path with no file.

    Examples:
        >>> from dab_keras.zoo import registry
        >>> args = check_arguments(registry.get("sorter"), samples=3e6, learning_rate=1e-3)
        >>> args["samples"], args["batch_size"], args["estimator"]
        (3000000, 1024, 'dab')
        >>> check_arguments(registry.get("sorter"), batch_size=2.5)
        Traceback (most recent call last):
        ...
        ValueError: `batch_size` must be a whole number >= 1 (e.g. 3e6). Received: batch_size=2.5
    """
    estimator = zoo_weights.estimator_key(estimator or task.default_estimator)
    if samples is not None and epochs is not None:
        raise ValueError(f"Give either `samples` or `epochs`, not both. Received: samples={samples}, epochs={epochs}")
    samples = _whole_number("samples", samples, 1)
    epochs = _whole_number("epochs", epochs, 1)
    batch_size = _whole_number("batch_size", batch_size if batch_size is not None else task.batch_size, 1)
    if samples is not None and samples < batch_size:
        raise ValueError(f"`samples` must be at least the batch size ({batch_size}). Received: samples={samples}")
    learning_rate = learning_rate if learning_rate is not None else task.learning_rate
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
        raise ValueError(f"`learning_rate` must be a number. Received: learning_rate={learning_rate!r}")
    learning_rate = float(learning_rate)
    if not (math.isfinite(learning_rate) and 0.0 < learning_rate <= MAX_LEARNING_RATE):
        raise ValueError(
            f"`learning_rate` must be a finite number in (0, {MAX_LEARNING_RATE:g}]. "
            f"Received: learning_rate={learning_rate!r}"
        )
    seed = _whole_number("seed", seed, 0)
    if jit_compile is not None and not isinstance(jit_compile, bool):
        raise ValueError(f"`jit_compile` must be None, True or False. Received: jit_compile={jit_compile!r}")
    strategy = distribute.check_strategy(strategy)
    steps_per_execution = _whole_number("steps_per_execution", steps_per_execution, 1)
    steps_per_epoch = _whole_number("steps_per_epoch", steps_per_epoch, 1)
    checkpoint_every = _whole_number("checkpoint_every", checkpoint_every, 1)
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"`config` must be a dict of constructor arguments. Received: config={config!r}")
    config = dict(config or {})
    if "dab_residual" in config:  # refused before any work, not when the model is built
        if not zoo_weights.check_dab_residual(config["dab_residual"], estimator):
            del config["dab_residual"]  # the default: the same run as without it (run.json, folder, manifest)
    _check_vae_options(task, estimator, config)
    if tensorboard is not False and tensorboard is not True and not isinstance(tensorboard, (str, os.PathLike)):
        raise ValueError(f"`tensorboard` must be a bool or a folder path. Received: tensorboard={tensorboard!r}")
    if tensorboard is not False and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("`tensorboard` needs the tensorboard package (pip install tensorboard).")
    if data != "tfds":
        data = zoo_data.resolve_mnist(data)  # the path must exist
    return {
        "estimator": estimator, "samples": samples, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "seed": seed, "jit_compile": jit_compile, "strategy": strategy,
        "data": data, "steps_per_execution": steps_per_execution, "steps_per_epoch": steps_per_epoch,
        "config": config, "tensorboard": tensorboard, "checkpoint_every": checkpoint_every,
    }


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
    tensorboard=False,
    callbacks=None,
    checkpoint_every=None,
):
    """Trains a zoo model from scratch with its recipe and writes weights, manifest, log and checkpoints.

    The arguments are checked first (`check_arguments`) and saved in `output_dir/run.json`; `resume=True`
    refuses arguments that change the run (`RUN_KEYS`, one line naming each difference) and continues
    from the last finished epoch with the data stream where it stopped, so a stopped and resumed run ends
    with the weights of an uninterrupted one. Resuming a finished run trains nothing and changes nothing.
    A NaN or infinite loss stops the run (`NonFiniteLossError`) before the epoch is saved, so the backup
    and `checkpoint.weights.h5` keep the last good epoch and no manifest is written.

    Args:
        model: Registry name (see `dab_keras.zoo.list_models()`).
        estimator: `"dab"`, `"straight_through"` or `"relaxed"`. Defaults to the model's default.
        samples: Training examples to see (synthetic data: sequences; data sets: rounded to epochs), a
            whole number (`3e6` is fine).
        epochs: Epochs to train instead of `samples`. Defaults to the recipe's length when both are `None`.
        batch_size: Global batch size. Defaults to the recipe's.
        learning_rate: Peak learning rate (Adam, linear warm-up, cosine decay to zero), finite, in
            (0, `MAX_LEARNING_RATE`]. Defaults to the recipe's.
        jit_compile: XLA compilation. Defaults to the recipe's preference (`Task.jit_compile`; not
            with a `strategy`), else `True` on JAX or with a GPU and `False` for TensorFlow on a CPU.
        strategy: Where to train (`dab_keras.zoo.distribute.resolve`): `None` (one device; on JAX,
            `keras.distribution.DataParallel` over all devices when several are visible),
            `"data_parallel"` (JAX), `"mirrored"` (TensorFlow, the visible devices), `"multi_worker"`
            (TensorFlow, `MultiWorkerMirroredStrategy` from `TF_CONFIG`), or a `tf.distribute.Strategy`
            or a `keras.distribution` instance (e.g. `DataParallel(...)`). Only the chief process writes into
            `output_dir`; the others write to temporary folders and return `None` paths.
        seed: Seed of initialization and data.
        output_dir: Folder of the run. Defaults to `dab_zoo_runs/<model>-<estimator>`
            (`<model>-dab_residual` for `config={"dab_residual": True}`).
        resume: Continue the run saved in `output_dir` (same arguments) instead of starting over.
        data: MNIST source for MNIST models: `"tfds"` or an `.npz` path.
        verbose: Keras `fit` verbosity.
        steps_per_execution: Steps per compiled call. Defaults to the recipe's. Lowered to the largest
            divisor of the steps of an epoch, so that it never changes the length of the run.
        steps_per_epoch: Steps of one epoch of synthetic data (logs and checkpoints come once per epoch).
            Defaults to the recipe's.
        command: Command line recorded in the manifest. Defaults to the equivalent `dab-zoo train` call.
        evaluate_at_end: Evaluate on the test set and record the metrics in the manifest.
        config: Extra constructor arguments of the model, e.g. `{"dab_residual": True}` for the residual
            DAB (the op's straight-through surrogate plus a learned correction; the shipped weights use the
            paper's DAB). Recorded in `run.json` and in the manifest's `config`.
        tensorboard: `True` to write TensorBoard scalars to `output_dir/tensorboard` (or a folder path):
            the loss, metrics (with each DAB layer's `<layer>_approximation_error`), the learning rate and
            each layer's temperature `<layer>_temperature`. Defaults to `False`.
        callbacks: More Keras callbacks, run after the layer scalars are added to the logs and before
            the log writers (CSV, TensorBoard), so that what they add to the logs is recorded (e.g. the
            `temperature` of `dab_keras.callbacks.TemperatureSchedule`). Defaults to `None`.
        checkpoint_every: Also keep the model's weights after every N-th epoch (N, N·2, ...) as
            `output_dir/checkpoints/epoch-<epoch>.weights.h5` (epochs counted from 1, three digits or
            more), loadable as the model's weights (e.g. `DiscreteVAE(weights=path)`): learning curves
            and diagnostics at states along a run. `checkpoint.weights.h5` holds only the latest epoch.
            Not part of the run's arguments: a resumed run may change it, and the files already kept
            stay. Defaults to `None` (none kept).

    Returns:
        A dict with `model` (the trained Keras model), `history` (`None` for a finished run resumed),
        `metrics`, `weights` and `manifest` (paths) and `complete` (`True` when the run was finished
        before this call, so nothing was trained).

    Raises:
        ValueError: for an unknown model or estimator, an invalid argument (see `check_arguments`), or a
            `resume` with arguments that differ from the run's.
        FileExistsError: if `output_dir` holds a run already and `resume` is `False`.
        NonFiniteLossError: if the loss becomes NaN or infinite.

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
    args = check_arguments(
        task, estimator=estimator, samples=samples, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, seed=seed, jit_compile=jit_compile, strategy=strategy, data=data,
        steps_per_execution=steps_per_execution, steps_per_epoch=steps_per_epoch, config=config,
        tensorboard=tensorboard, checkpoint_every=checkpoint_every,
    )
    estimator, batch_size, learning_rate = args["estimator"], args["batch_size"], args["learning_rate"]
    seed, data, config, steps_per_epoch = args["seed"], args["data"], args["config"], args["steps_per_epoch"]
    jit_compile = args["jit_compile"]
    placement = distribute.resolve(strategy, batch_size)  # before any other TensorFlow operation
    if jit_compile is None:
        # Under a tf.distribute strategy only the device default applies: XLA over logical CPU devices
        # fails in TensorFlow ("variable on a different device").
        use_recipe = task.jit_compile is not None and placement.strategy is None
        jit_compile = task.jit_compile if use_recipe else default_jit_compile()
    output_dir = Path(output_dir or Path("dab_zoo_runs") / f"{task.name}-{_run_name(estimator, config)}")
    output_dir = placement.output_dir(output_dir, resume)  # a temporary folder on non-chief workers
    backup_dir = output_dir / "backup"
    run_path = output_dir / _RUN_FILE
    if not resume and backup_dir.exists() and any(backup_dir.iterdir()):
        raise FileExistsError(
            f"{output_dir} holds a run already. Pass resume=True (--resume) to continue it, or choose "
            "another output folder."
        )
    saved = _read_run(run_path) if resume else None

    keras.utils.set_random_seed(seed)
    initial_epoch = _backup_epoch(backup_dir) if resume else 0
    data_kwargs = task.data_kwargs(config)
    if steps_per_epoch is not None and _accepts(task.train_data, "steps_per_epoch"):
        data_kwargs["steps_per_epoch"] = steps_per_epoch  # so a resumed stream starts at the right step
    train_data = task.train_data(batch_size, seed, data=data, initial_epoch=initial_epoch, **data_kwargs)
    placement.check_data(train_data, task.name)
    if steps_per_epoch is not None:
        if not train_data.synthetic:
            raise ValueError(f"`steps_per_epoch` applies to synthetic data only; {task.name} trains on a data set.")
        train_data.steps_per_epoch = steps_per_epoch
    n_epochs, planned_steps = plan(
        task, batch_size, args["samples"], args["epochs"], train_data.epoch_size, train_data.steps_per_epoch,
        train_data.synthetic,
    )
    if train_data.synthetic:
        train_data.steps_per_epoch = planned_steps
        if hasattr(train_data.x, "steps"):  # a PyDataset of synthetic batches
            train_data.x.steps = planned_steps
    epoch_steps = train_data.steps_per_epoch or math.ceil(train_data.epoch_size / batch_size)
    total_steps = n_epochs * epoch_steps
    steps_per_execution = largest_divisor(epoch_steps, args["steps_per_execution"] or task.steps_per_execution)

    arguments = {
        "model": task.name, "estimator": estimator, "backend": keras.backend.backend(), "epochs": n_epochs,
        "steps_per_epoch": epoch_steps, "total_steps": total_steps, "batch_size": batch_size,
        "learning_rate": learning_rate, "seed": seed, "jit_compile": bool(jit_compile),
        "strategy": _strategy_name(strategy),
        "data": None if train_data.synthetic else zoo_data.describe_source(data),
        "config": config,
    }
    arguments = json.loads(json.dumps(arguments))  # tuples as lists, as they come back from the file
    weights_path = output_dir / zoo_weights.weights_filename(task.name, estimator)
    if saved is not None:
        _check_resume(saved, arguments, output_dir)
        if saved.get("complete") and weights_path.is_file():
            return {
                "model": task.build(estimator, weights=str(weights_path), **config), "history": None,
                "metrics": zoo_weights.read_manifest(zoo_weights.manifest_path(weights_path)).get("metrics", {}),
                "weights": weights_path, "manifest": zoo_weights.manifest_path(weights_path), "complete": True,
            }
    if command is None:
        command = (
            f"dab-zoo train {task.name} --estimator {estimator} "
            + (f"--samples {total_steps * batch_size} " if train_data.synthetic else f"--epochs {n_epochs} ")
            + f"--batch-size {batch_size} --lr {learning_rate:g} --seed {seed}"
            + (" --jit" if jit_compile else " --no-jit")
            + (" --dab-residual" if config.get("dab_residual") else "")
            + (f" --sample-gradient {config['sample_gradient']}" if config.get("sample_gradient") else "")
            + (f" --decoder-codes {config['decoder_codes']}" if config.get("decoder_codes") else "")
        )
    record = saved if saved is not None else {"arguments": arguments, "command": command, "epochs": []}
    record["complete"] = False
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_path, record)

    with placement.scope():
        net = task.build(estimator, weights=None, **config)
        fit_model = train_data.trainer(net) if train_data.trainer is not None else net
        optimizer = keras.optimizers.Adam(
            zoo_task.cosine_schedule(learning_rate, total_steps, task.warmup_steps)
        )
        steps_per_execution = placement.steps_per_execution(steps_per_execution or task.steps_per_execution)
        task.compile(fit_model, optimizer, jit_compile, steps_per_execution)

    # Order matters: the loss check runs first (a NaN epoch is never saved), the scalars, the recipe's and
    # the user's callbacks fill the logs before the writers read them.
    fit_callbacks = [
        _StopOnNonFiniteLoss(output_dir, learning_rate),
        _LayerScalars(),
        *task.callbacks(net, total_steps),  # the recipe's own (e.g. the VAE's temperature schedule)
        *(callbacks or []),
        keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False),
        _SeedStates(backup_dir, initial_epoch),
        keras.callbacks.CSVLogger(str(output_dir / "log.csv"), append=resume),
        keras.callbacks.ModelCheckpoint(str(output_dir / "checkpoint.weights.h5"), save_weights_only=True),
        *([_EpochWeights(net, output_dir / CHECKPOINTS_DIR, args["checkpoint_every"])]
          if args["checkpoint_every"] else []),
        _RunRecord(run_path, record),
    ]
    if tensorboard is not False:
        log_dir = output_dir / "tensorboard" if tensorboard is True else Path(tensorboard)
        fit_callbacks.append(keras.callbacks.TensorBoard(str(log_dir), write_graph=False))
    fit_kwargs = {}
    if train_data.steps_per_epoch is not None:
        fit_kwargs["steps_per_epoch"] = train_data.steps_per_epoch
    fit_kwargs["shuffle"] = train_data.y is not None  # datasets and PyDatasets bring their own order
    with placement.scope():
        history = fit_model.fit(
            train_data.x,
            train_data.y,
            batch_size=None if train_data.y is None else batch_size,
            epochs=n_epochs,
            callbacks=fit_callbacks,
            validation_data=train_data.validation,
            verbose=verbose,
            **fit_kwargs,
        )

    steps = int(keras.ops.convert_to_numpy(fit_model.optimizer.iterations))
    metrics = task.evaluate(net, data=data) if evaluate_at_end else {}
    export_weights(task, estimator, config, net, weights_path)
    samples_seen = steps * batch_size
    seconds = sum(e["seconds"] for e in record["epochs"])
    manifest = zoo_weights.write_manifest(
        weights_path,
        model=task.name,
        estimator=estimator,
        config={**_model_config(task, net, config), "estimator": estimator},
        metrics=metrics,
        command=record["command"],
        data=train_data.description,
        seed=seed,
        batch_size=batch_size,
        learning_rate=learning_rate,
        epochs=n_epochs,
        steps=steps,
        samples_seen=samples_seen,
        steps_per_execution=steps_per_execution,
        train_seconds=round(seconds, 1),
        samples_per_second=steady_speed(record["epochs"], batch_size),
        backend=keras.backend.backend(),
        jit_compile=bool(jit_compile),
        strategy=placement.name,
        keras_version=keras.__version__,
        machine=platform.machine(),
        date=datetime.date.today().isoformat(),
    )
    record["complete"] = True
    _write_json(run_path, record)
    if not placement.finish(output_dir):  # a non-chief worker's files were temporary
        weights_path = manifest = None
    return {
        "model": net, "history": history, "metrics": metrics, "weights": weights_path, "manifest": manifest,
        "complete": False,
    }


def largest_divisor(steps, at_most):
    """The largest divisor of `steps` that is at most `at_most`: a `steps_per_execution` that fits an epoch.

    Keras runs whole compiled calls of `steps_per_execution` steps, so a value that does not divide the
    steps of an epoch would lengthen the epoch (and the run).

    Args:
        steps: Steps of one epoch, >= 1.
        at_most: The requested steps per execution, >= 1.

    Returns:
        An int in [1, min(steps, at_most)] that divides `steps`.

    Examples:
        >>> largest_divisor(1000, 50), largest_divisor(2, 500), largest_divisor(469, 10)
        (50, 2, 7)
    """
    at_most = min(int(at_most), int(steps))
    return next(d for d in range(at_most, 0, -1) if steps % d == 0)


def steady_speed(epochs, batch_size):
    """Examples per second of a run's epochs, leaving out the first epoch of each session (compilation).

    Args:
        epochs: The `epochs` list of `run.json`: dicts with `steps`, `seconds` and `first` (the first
            epoch after a start or a resume).
        batch_size: Examples per step.

    Returns:
        An int, or `None` when no epoch was timed; with only first epochs, their overall speed.

    Examples:
        >>> steady_speed([{"steps": 10, "seconds": 5.0, "first": True},
        ...               {"steps": 10, "seconds": 1.0, "first": False}], batch_size=100)
        1000
    """
    steady = [e for e in epochs if not e.get("first")] or list(epochs)
    seconds = sum(e["seconds"] for e in steady)
    if not steady or seconds <= 0:
        return None
    return round(sum(e["steps"] for e in steady) * batch_size / seconds)


def _strategy_name(strategy):
    return strategy if isinstance(strategy, str) or strategy is None else type(strategy).__name__


def _read_run(path):
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"The run record {path} is not valid JSON ({e}); it cannot be resumed.") from None
    if not isinstance(record, dict) or not isinstance(record.get("arguments"), dict):
        raise ValueError(f"The run record {path} has no `arguments`; it cannot be resumed.")
    record.setdefault("epochs", [])
    return record


def _write_json(path, value):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # never a half-written record


def _check_resume(saved, arguments, output_dir):
    before = saved["arguments"]
    diffs = [
        f"{key}={arguments.get(key)!r} (the run: {before.get(key)!r})"
        for key in RUN_KEYS
        if arguments.get(key) != before.get(key)
    ]
    if diffs:
        raise ValueError(
            f"resume continues the run in {output_dir} with its own arguments, and these differ: "
            f"{'; '.join(diffs)}. Pass the run's arguments, or start a new run in another folder."
        )


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    # First in the list: it raises before BackupAndRestore or ModelCheckpoint save a NaN epoch.
    def __init__(self, output_dir, learning_rate):
        super().__init__()
        self.output_dir, self.learning_rate = output_dir, learning_rate

    def on_epoch_end(self, epoch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if k.endswith("loss") and _not_finite(v)}
        if bad:
            kept = (
                f"the last good state (epoch {epoch}) is kept in {self.output_dir / 'backup'} and "
                f"{self.output_dir / 'checkpoint.weights.h5'}"
                if epoch
                else "no epoch had finished, so nothing was saved"
            )
            raise NonFiniteLossError(
                f"Training stopped: {', '.join(f'{k}={float(v)}' for k, v in bad.items())} in epoch {epoch + 1}; "
                f"{kept}; no weights or manifest were written. Lower the learning rate "
                f"(learning_rate={self.learning_rate:g}) and start a new run."
            )


def _not_finite(value):
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class _LayerScalars(keras.callbacks.Callback):
    # Adds the learning rate and each layer's temperature τ to the epoch logs (for CSV and TensorBoard).
    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        for layer in self.model._flatten_layers(include_self=False):
            if not isinstance(layer, dab_layers.DiscreteLayer):
                continue  # τ is reported once, by the hard layer (not again by its estimator state)
            temperature = layer.temperature
            if isinstance(temperature, keras.Variable):
                logs[f"{layer.name}_temperature"] = float(keras.ops.convert_to_numpy(temperature))


#: The file in a run's `backup/` that holds its random-seed states (`_SeedStates`).
SEED_STATES_FILE = "seed_states.npz"


class _SeedStates(keras.callbacks.Callback):
    # Beside the backup: the states of the model's `keras.random.SeedGenerator`s (a VAE's latent noise, a
    # stochastic layer's), which neither weight files nor BackupAndRestore hold. Without them a resumed run
    # starts its random draws over and trains other weights than an uninterrupted one.
    def __init__(self, backup_dir, resume_epoch):
        super().__init__()
        self.path = Path(backup_dir) / SEED_STATES_FILE
        self.resume_epoch = resume_epoch

    def _variables(self):
        weights = {id(v) for v in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]

    def on_train_begin(self, logs=None):
        variables = self._variables()
        if not self.resume_epoch or not variables:
            return
        saved = dict(np.load(self.path)) if self.path.is_file() else {}
        paths = [str(p) for p in saved.get("paths", [])]
        if int(saved.get("epoch", -1)) != self.resume_epoch or paths != [v.path for v in variables]:
            warnings.warn(
                f"The run's random-seed states ({self.path}) are missing or not those of the backup's epoch "
                f"{self.resume_epoch}: the resumed run draws other random numbers than an uninterrupted run "
                "would, so its weights will differ from that run's.",
                stacklevel=2,
            )
            return
        for i, variable in enumerate(variables):
            variable.assign(saved[f"state_{i}"])

    def on_epoch_end(self, epoch, logs=None):
        variables = self._variables()
        if not variables:
            return
        states = {f"state_{i}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in enumerate(variables)}
        partial = self.path.with_name("seed_states.partial.npz")
        np.savez(partial, epoch=epoch + 1, paths=np.array([v.path for v in variables]), **states)
        os.replace(partial, self.path)  # never a half-written file


class _RunRecord(keras.callbacks.Callback):
    # After the backup: appends each finished epoch (steps, seconds) to run.json.
    def __init__(self, path, record):
        super().__init__()
        self.path, self.record = path, record
        self._first = True
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        steps = self.params.get("steps") if self.params else None
        self.record["epochs"] = [e for e in self.record["epochs"] if e["epoch"] < epoch]
        self.record["epochs"].append({"epoch": epoch, "steps": steps or 0, "seconds": round(seconds, 3),
                                      "first": self._first})
        self._first = False
        _write_json(self.path, self.record)


class _EpochWeights(keras.callbacks.Callback):
    # Keeps the weights of every N-th epoch (after the loss check: a NaN epoch is never kept).
    def __init__(self, model, folder, every):
        super().__init__()
        self.net, self.folder, self.every = model, Path(folder), every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.net.save_weights(str(epoch_weights_path(self.folder.parent, epoch + 1)))


def epoch_weights_path(output_dir, epoch):
    """The weights `train(checkpoint_every=...)` keeps after `epoch` (counted from 1) of the run in `output_dir`.

    Args:
        output_dir: The run folder.
        epoch: Epoch number, from 1.

    Returns:
        `output_dir/checkpoints/epoch-<epoch, 3 digits or more>.weights.h5`, a `pathlib.Path`.

    Examples:
        >>> epoch_weights_path("runs/vae", 20).as_posix()
        'runs/vae/checkpoints/epoch-020.weights.h5'
    """
    return Path(output_dir) / CHECKPOINTS_DIR / f"epoch-{epoch:03d}.weights.h5"


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


#: The discrete VAEs' training options and each one's check (`zoo.weights`). At its default
#: (`zoo.weights.CONFIG_DEFAULTS`) an option is dropped from a run's config and manifest, which read as they
#: did before the option existed.
_VAE_OPTIONS = {
    "sample_gradient": zoo_weights.check_sample_gradient,
    # the sampler's own codes are the default's run (`canonical_decoder_codes`)
    "decoder_codes": lambda codes, estimator, residual: zoo_weights.canonical_decoder_codes(
        zoo_weights.check_decoder_codes(codes, estimator, residual), estimator),
}


def _check_vae_options(task, estimator, config):
    """Checks the discrete VAEs' options in `config` before any work; drops those at their default."""
    for name, check in _VAE_OPTIONS.items():
        if name not in config:
            continue
        if name not in inspect.signature(task.constructor).parameters:
            raise ValueError(f"`{name}` applies to the discrete VAEs only. Received: model {task.name!r}")
        if check(config[name], estimator, config.get("dab_residual", False)) == zoo_weights.CONFIG_DEFAULTS[name]:
            del config[name]  # the default: the same run as without it


def _model_config(task, net, config):
    # The constructor's defaults merged with the overrides: what the weights need to load again.
    builder = task.constructor
    params = inspect.signature(builder).parameters
    keys = [k for k in params if k not in ("estimator", "weights", "name", "include_top")]
    out = {k: params[k].default for k in keys}
    out.update({k: v for k, v in config.items() if k in out})
    if not out.get("dab_residual", True):
        del out["dab_residual"]  # the paper's DAB: written as its manifests were before the option existed
    for name in _VAE_OPTIONS:
        if name in out and out[name] == zoo_weights.CONFIG_DEFAULTS[name]:
            del out[name]  # the default: written as the manifests were before the option existed
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _run_name(estimator, config):
    # The default run folder's suffix: a residual DAB run does not share the paper's DAB folder, and a run
    # whose decoder trains on other codes does not share the folder of the sampler's own codes.
    key = zoo_weights.weights_key(estimator, config.get("dab_residual", False),
                                  config.get("sample_gradient", "relaxation"))
    codes = config.get("decoder_codes", "auto")
    return key if codes == "auto" else f"{key}_{codes}_codes"


def evaluate(model, weights="pretrained", estimator=None, data="tfds", verbose=0, **config):
    """Evaluates a zoo model on its test set.

    Args:
        model: Registry name.
        weights: `"pretrained"` (the shipped weights of `estimator`), a `.weights.h5` path, or `None`
            (random initialization). Defaults to `"pretrained"`.
        estimator: Estimator the weights were trained with. Defaults to the model's default.
        data: MNIST source for MNIST models (`"tfds"` or an `.npz` path). Defaults to `"tfds"`.
        verbose: Prediction verbosity. Defaults to `0`.
        **config: Constructor arguments. For a weights path with a manifest beside it (as `train` writes
            one), those not given come from the manifest's `config` (e.g. a sorter's `length`, or
            `dab_residual` for the same estimator).

    Returns:
        A dict of test metrics (see each task's `evaluate`), e.g. `all_or_none_accuracy`,
        `per_position_accuracy`, `loss` and `test_sequences` for the sorter.

    Raises:
        ValueError: for an unknown model or estimator, or weights that do not match or cannot be read.
        ConnectionError: for `data="tfds"` offline without a local copy of MNIST.

    Examples:
        ```python
        from dab_keras import zoo

        zoo.evaluate("sorter")  # the shipped DAB weights on the 100,000 test sequences
        zoo.evaluate("mnist_classifier", estimator="relaxed", data="mnist.npz")
        ```
    """
    task = registry.get(model)
    estimator = zoo_weights.estimator_key(estimator or task.default_estimator)
    _check_vae_options(task, estimator, config)
    config = {**_manifest_config(task, weights, estimator), **config}
    net = task.build(estimator, weights=weights, **config)
    return task.evaluate(net, data=data, verbose=verbose)


def _manifest_config(task, weights, estimator):
    # The constructor arguments recorded in the manifest beside a weights path (as `train` writes it), so
    # that the model is rebuilt as it was trained; the estimator's own ones only for the same estimator.
    if weights is None or weights == "pretrained":
        return {}
    if isinstance(weights, str) and weights in zoo_weights.WEIGHT_KEYS:  # a shipped file, by its key
        if weights not in zoo_weights.shipped_keys(task.name):
            return {}  # the constructor names what ships
        weights = zoo_weights.pretrained_path(task.name, weights)
    path = zoo_weights.manifest_path(weights)
    if not path.is_file():
        return {}
    manifest = zoo_weights.read_manifest(path)
    params = inspect.signature(task.constructor).parameters
    skip = {"estimator", "weights", "name", "include_top"}
    if manifest.get("estimator") != estimator:
        skip.update(zoo_weights.ESTIMATOR_CONFIG)
    config = manifest.get("config")
    if not isinstance(config, dict):
        return {}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in params and k not in skip}

