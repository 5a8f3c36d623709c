"""Where a zoo run trains: one device, several devices of one machine, or several machines.

`resolve(strategy, batch_size)` turns the `strategy` argument of `dab_keras.zoo.train` (and
`dab-zoo train --strategy`) into a `Placement`: the scope that builds and fits the model, whether this
process is the chief (the one that writes the run's files), and the name recorded in the manifest.

| `strategy` | backend | what it does |
|---|---|---|
| `None` | JAX | `keras.distribution.DataParallel` over all devices when several are visible (a multi-GPU machine, or several processes after `keras.distribution.initialize`), else one device |
| `None` | TensorFlow | one device |
| `"data_parallel"` | JAX | `keras.distribution.DataParallel` over all devices (several processes: all of theirs) |
| `"mirrored"` | TensorFlow | `tf.distribute.MirroredStrategy` over the visible GPUs (or logical CPUs) |
| `"multi_worker"` | TensorFlow | `tf.distribute.MultiWorkerMirroredStrategy` from `TF_CONFIG` |

A `tf.distribute.Strategy` or a `keras.distribution` (`DataParallel`, `ModelParallel`) instance is used
as given. Non-chief processes write their files (checkpoints, logs, weights, manifest) to a temporary folder
that is removed at the end of the run; on `resume` they start from a copy of the chief's backup, so the
output folder must be on a file system that every machine sees under the same path (as for
TensorFlow's own `BackupAndRestore`).
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import keras

#: Values of `strategy` given by name.
STRATEGIES = ("data_parallel", "mirrored", "multi_worker")


@dataclasses.dataclass
class Placement:
    """The devices and processes of a run, as `resolve` returns them.

    Args:
        name: Name recorded in the manifest (`None`: one device).
        strategy: The `tf.distribute.Strategy`, or `None`.
        distribution: The `keras.distribution` distribution (e.g. `DataParallel`), or `None`.
        is_chief: Whether this process writes the run's files. Defaults to `True`.
        num_processes: Number of processes (workers, hosts) that train together. Defaults to `1`.
        replicas: Number of devices a batch is split over. Defaults to `1`.
        max_steps_per_execution: Most steps per compiled call this placement runs, or `None` (no
            limit). Defaults to `None`.

    Examples:
        >>> placement = Placement(name=None, strategy=None, distribution=None)
        >>> placement.is_chief, placement.replicas
        (True, 1)
        >>> with placement.scope():  # one device: nothing to enter
        ...     pass
    """

    name: str | None
    strategy: object
    distribution: object
    is_chief: bool = True
    num_processes: int = 1
    replicas: int = 1
    max_steps_per_execution: int | None = None

    @contextlib.contextmanager
    def scope(self):
        """Context of building, compiling and fitting the model (may be entered several times).

        Returns:
            A context manager: the strategy's or distribution's scope, or nothing for one device.
        """
        if self.strategy is not None:
            with self.strategy.scope():
                yield
        elif self.distribution is not None:
            with self.distribution.scope():
                yield
        else:
            yield

    def steps_per_execution(self, steps):
        """`steps` per compiled call, capped at `max_steps_per_execution`.

        Args:
            steps: The steps per call the recipe or the caller asks for.

        Returns:
            An int.
        """
        cap = self.max_steps_per_execution
        return int(steps) if cap is None else min(int(steps), cap)

    def check_data(self, train_data, task_name):
        """Raises unless every process can feed its own share of `train_data` (several JAX processes).

        Args:
            train_data: The run's `TrainData`.
            task_name: The model's registry name, for the message.

        Raises:
            ValueError: for a JAX run over several processes on data fed from the host: only data drawn
                on the devices (the sorter's) is split between processes.
        """
        if self.distribution is not None and self.num_processes > 1 and train_data.trainer is None:
            raise ValueError(
                f"A JAX run over several processes trains on data drawn on the devices (the sorter); "
                f"{task_name} reads a data set: train it on one machine, or with TensorFlow's "
                f"strategy='multi_worker'. Received: {self.num_processes} processes"
            )

    def output_dir(self, output_dir, resume=False):
        """The folder this process writes into: `output_dir` on the chief, a temporary folder elsewhere.

        Args:
            output_dir: The run's folder (`pathlib.Path`).
            resume: Whether the run continues from `output_dir/backup`: a non-chief then starts from a
                copy of it. Defaults to `False`.

        Returns:
            A `pathlib.Path`.
        """
        if self.is_chief:
            return Path(output_dir)
        folder = Path(tempfile.mkdtemp(prefix="dab_zoo_worker_"))
        backup = Path(output_dir) / "backup"
        if resume and backup.is_dir():
            shutil.copytree(backup, folder / "backup")
            run_record = Path(output_dir) / "run.json"  # so the resumed arguments are checked here too
            if run_record.is_file():
                shutil.copy2(run_record, folder / "run.json")
        return folder

    def finish(self, output_dir):
        """Removes a non-chief's temporary folder at the end of the run.

        Args:
            output_dir: The folder `output_dir()` returned.

        Returns:
            `True` on the chief (its files are the run's), `False` elsewhere.
        """
        if self.is_chief:
            return True
        shutil.rmtree(output_dir, ignore_errors=True)
        return False


def check_strategy(strategy):
    """Checks a strategy name and its backend, creating nothing (`resolve` creates the placement).

    Args:
        strategy: `None`, one of `STRATEGIES`, or a strategy / distribution instance (returned as is).

    Returns:
        `strategy`.

    Raises:
        ValueError: for an unknown name, or a name that needs another backend.

    Examples:
        >>> check_strategy(None) is None
        True
    """
    if strategy is None or not isinstance(strategy, str):
        return strategy
    if strategy not in STRATEGIES:
        raise ValueError(
            f"`strategy` must be None, one of {list(STRATEGIES)}, a tf.distribute.Strategy or a "
            f"keras.distribution DataParallel or ModelParallel. Received: strategy={strategy!r}"
        )
    backend = keras.backend.backend()
    if strategy == "data_parallel" and backend != "jax":
        raise ValueError(
            "strategy='data_parallel' uses keras.distribution and needs KERAS_BACKEND=jax (the backend "
            f"is {backend!r}); on TensorFlow use 'mirrored' or 'multi_worker'."
        )
    if strategy != "data_parallel" and backend != "tensorflow":
        raise ValueError(
            f"strategy={strategy!r} uses tf.distribute and needs KERAS_BACKEND=tensorflow (the backend is "
            f"{backend!r}); on JAX use 'data_parallel' (or no strategy: automatic over several devices)."
        )
    return strategy


def resolve(strategy, batch_size):
    """The `Placement` of a run: `strategy` by name or instance, or automatic (`None`).

    `"multi_worker"` creates `tf.distribute.MultiWorkerMirroredStrategy()`, which TensorFlow wants before
    any other TensorFlow operation: call `resolve` (or create the strategy) first thing in the process.

    Args:
        strategy: `None`, one of `STRATEGIES`, a `tf.distribute.Strategy` or a
            `keras.distribution.DataParallel` (or `ModelParallel`).
        batch_size: The global batch size; a data-parallel run splits it evenly over the devices.

    Returns:
        A `Placement`.

    Raises:
        ValueError: for an unknown strategy, one of another backend, or a batch size that the devices
            do not divide.

    Examples:
        >>> print(resolve(None, 1024).name)  # one device
        None
        >>> resolve("tpu", 1024)
        Traceback (most recent call last):
        ...
        ValueError: `strategy` must be None, one of ['data_parallel', 'mirrored', 'multi_worker'], a tf.distribute.Strategy or a keras.distribution DataParallel or ModelParallel. Received: strategy='tpu'
    """
    backend = keras.backend.backend()
    if hasattr(strategy, "get_data_layout") and hasattr(strategy, "device_mesh"):  # a keras.distribution
        return _data_parallel(strategy, type(strategy).__name__, batch_size)
    if hasattr(strategy, "scope") and hasattr(strategy, "num_replicas_in_sync"):
        return _tf_placement(strategy, type(strategy).__name__)
    check_strategy(strategy)
    if strategy is None:
        if backend == "jax" and keras.distribution.distribution() is None:
            if len(keras.distribution.list_devices()) > 1:
                return _data_parallel(_new_data_parallel(), "data_parallel (automatic)", batch_size)
        return Placement(name=None, strategy=None, distribution=None)
    if strategy == "data_parallel":
        return _data_parallel(_new_data_parallel(), strategy, batch_size)
    import tensorflow as tf

    if strategy == "mirrored":
        return _tf_placement(tf.distribute.MirroredStrategy(), strategy)
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "strategy='multi_worker' reads the cluster from the TF_CONFIG environment variable, which is "
            "not set (see the 'Many devices and machines' page of the documentation)."
        )
    return _tf_placement(tf.distribute.MultiWorkerMirroredStrategy(), strategy)


def _tf_placement(strategy, name):
    resolver = getattr(strategy, "cluster_resolver", None)
    workers, chief = 1, True
    if resolver is not None and resolver.task_type is not None:
        spec = resolver.cluster_spec().as_dict()
        workers = sum(len(spec.get(job, ())) for job in ("chief", "worker"))
        chief = is_chief_task(resolver.task_type, resolver.task_id, has_chief_job="chief" in spec)
    if workers > 1 and not getattr(strategy, "_dab_reduces_nests", False):
        _reduce_nests(strategy)
    return Placement(
        name=name,
        strategy=strategy,
        distribution=None,
        is_chief=chief,
        num_processes=workers,
        replicas=strategy.num_replicas_in_sync,
        # Keras's multi-step loop (a `while` over `cond`s around the step) fails across workers ("You
        # must feed a value for placeholder tensor"): one step per call.
        max_steps_per_execution=1 if workers > 1 else None,
    )


def _reduce_nests(strategy):
    # Two places where Keras's `fit` (3.15, TensorFlow) calls `strategy.reduce` in a way that fails with
    # MultiWorkerMirroredStrategy over several workers: it builds the model from
    # `reduce("MEAN", (x, y))`, a tuple, where `Strategy.reduce` takes one value; and it averages the
    # scalar logs with `reduce("MEAN", loss, axis=0)`, an axis scalars do not have. Reduce each value of
    # a nest in turn, and scalars over the replicas only (on this strategy object only).
    reduce = strategy.reduce

    def reduce_each(reduce_op, value, axis=None):
        if isinstance(value, (tuple, list)):
            return type(value)(reduce_each(reduce_op, v, axis) for v in value)
        if isinstance(value, dict):
            return {k: reduce_each(reduce_op, v, axis) for k, v in value.items()}
        if axis is not None and strategy.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return reduce(reduce_op, value, axis=axis)

    strategy.reduce = reduce_each
    strategy._dab_reduces_nests = True


def _new_data_parallel():
    # Over several processes each one feeds its own share of the batch (the sorter: empty placeholders
    # for the batch it draws on the devices), not a `tf.data.Dataset` for Keras to shard.
    import jax

    return keras.distribution.DataParallel(auto_shard_dataset=jax.process_count() == 1)


def _data_parallel(distribution, name, batch_size):
    import jax

    mesh = distribution.device_mesh
    replicas = int(mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)])
    if batch_size % replicas:
        raise ValueError(
            f"A data-parallel run splits each batch evenly over its {replicas} devices: `batch_size` must be "
            f"a multiple of {replicas}. Received: batch_size={batch_size}"
        )
    return Placement(
        name=name,
        strategy=None,
        distribution=distribution,
        is_chief=jax.process_index() == 0,
        num_processes=jax.process_count(),
        replicas=replicas,
    )


def is_chief_task(task_type, task_id, has_chief_job=False):
    """Whether a `TF_CONFIG` task writes the run's files: the `"chief"`, else worker 0.

    Args:
        task_type: The task's type (`"chief"`, `"worker"`, ...), or `None` outside a cluster.
        task_id: The task's index within its type.
        has_chief_job: Whether the cluster has a `"chief"` job. Defaults to `False`.

    Returns:
        A bool.

    Examples:
        >>> is_chief_task("worker", 0), is_chief_task("worker", 1), is_chief_task(None, None)
        (True, False, True)
        >>> is_chief_task("worker", 0, has_chief_job=True), is_chief_task("chief", 0, has_chief_job=True)
        (False, True)
    """
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and int(task_id) == 0 and not has_chief_job


def initialize_cluster():
    """Joins a multi-process JAX run described by Keras's environment variables (a no-op otherwise).

    On the JAX backend with `KERAS_DISTRIBUTION_JOB_ADDRESSES` set (the coordinator's `host:port`,
    with `KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`), calls
    `keras.distribution.initialize()`, which calls `jax.distributed.initialize`. `dab-zoo train` calls it
    first thing; in a script of your own, call `keras.distribution.initialize` yourself before anything
    else.

    Returns:
        `True` if it initialized a cluster, else `False`.

    Examples:
        >>> initialize_cluster()  # no KERAS_DISTRIBUTION_* variables set
        False
    """
    if keras.backend.backend() != "jax" or not os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        return False
    keras.distribution.initialize()
    return True
