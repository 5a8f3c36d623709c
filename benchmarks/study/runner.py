"""Runs a study table: every (task, estimator, seed) to its largest missing budget, one results line per cell.

A run evaluates its test metrics only at the table's budgets (test split, no tuning on it) and records a
training curve (the task's loss metric and, where it has one, a training metric such as accuracy, mean over
each `curve_every` steps) on the way. The result after `s` steps of a longer run is the result of an
`s`-step run: the data order, the batches' own randomness and the initial weights depend only on the seed,
Adam has no schedule, and a task's callbacks (e.g. a temperature schedule) depend on the step alone.
"""

import datetime
import logging
import os
import sys
import time

import numpy as np

from benchmarks.study import results as results_lib
from benchmarks.study import tasks as tasks_lib

LOGGER = "benchmarks.study"


def index_stream(num_examples, seed):
    """Yields training indices forever: one fresh permutation of the training set per epoch."""
    rng = np.random.default_rng(seed)
    while True:
        yield from rng.permutation(num_examples)


def _take(stream, count):
    return np.fromiter(stream, dtype="int64", count=count)


def train_run(task, estimator, seed, steps, data, curve_every=25, log=None, probe=None):
    """Trains `task`'s model with `estimator` from `seed` and evaluates it after each budget in `steps`.

    Args:
        task: A `tasks.Task`.
        estimator: Estimator name passed to the task's hard layers.
        seed: Seed of the weights (`keras.utils.set_random_seed`) and of the data order.
        steps: Budgets (optimizer steps) at which the test metric is recorded.
        data: The task's data dict.
        curve_every: Steps per point of the training curve. Defaults to `25`.
        log: A `logging.Logger` for progress lines, or `None`.
        probe: Optional `probe(model) -> {name: float}`, more statistics measured at each budget (after
            the task's evaluation) and added to its metrics. Defaults to `None`.

    Returns:
        `(evaluations, curve)`: `{step: (metrics, train_seconds)}` with `metrics` a dict `{name: value}`
        (the task's `metric` alone when `evaluate` returns a float), and a list of
        `[step, loss, train_metric]` (means over the last `curve_every` steps of the task's `loss_metric`
        and `train_metric`; `None` for a task without a training metric).
    """
    checkpoints = sorted(set(int(s) for s in steps))
    model = task.build(estimator, seed)
    stream = index_stream(len(data["x_train"]), seed)
    batch_rng = np.random.default_rng([seed, 1])  # the batches' own randomness (e.g. binarization)
    callbacks = task.callbacks() if task.callbacks else None
    evaluations, curve = {}, []
    done, seconds = 0, 0.0
    for checkpoint in checkpoints:
        while done < checkpoint:
            chunk = min(curve_every, checkpoint - done)
            index = _take(stream, chunk * task.batch_size)
            if task.make_batch is None:
                x, y = data["x_train"][index], data["y_train"][index]
            else:
                x, y = task.make_batch(data, index, batch_rng)
            start = time.perf_counter()
            history = model.fit(x, y, batch_size=task.batch_size, epochs=1, shuffle=False, verbose=0,
                                callbacks=callbacks)
            seconds += time.perf_counter() - start
            done += chunk
            loss = float(history.history[task.loss_metric][-1])
            train = float(history.history[task.train_metric][-1]) if task.train_metric else None
            curve.append([done, loss, train])
            if not np.isfinite(loss):
                raise FloatingPointError(f"{task.name}/{estimator}/seed {seed}: non-finite loss at step {done}")
            if log:
                log.info("step %d %s %.4f%s (%.1f s)", done, task.loss_metric, loss,
                         f" train_{task.train_metric} {train:.4f}" if task.train_metric else "", seconds)
        metrics = as_metrics(task, task.evaluate(model, data))
        if probe is not None:
            metrics.update({name: float(value) for name, value in probe(model).items()})
        evaluations[checkpoint] = (metrics, seconds)
        if log:
            log.info("step %d %s", checkpoint, ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    return evaluations, curve


def as_metrics(task, result):
    """A task's evaluation as a dict `{name: value}` with its primary `metric` first.

    Args:
        task: A `tasks.Task`.
        result: What `task.evaluate` returned: a float (the primary metric) or a dict holding it.

    Returns:
        A dict of floats.

    Raises:
        ValueError: if a dict lacks the task's primary metric.
    """
    if not isinstance(result, dict):
        return {task.metric: float(result)}
    if task.metric not in result:
        raise ValueError(f"Task {task.name!r}: `evaluate` must return its primary metric {task.metric!r}. "
                         f"Received: metrics {sorted(result)}")
    return {task.metric: float(result[task.metric]),
            **{name: float(value) for name, value in result.items() if name != task.metric}}


def _file_logger(name, path):
    log = logging.getLogger(f"{LOGGER}.{name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return log


def study_logger(out):
    """The study's logger: `out/study.log` and stdout."""
    log = logging.getLogger(LOGGER)
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(os.path.join(out, "study.log"))
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    stream_handler = logging.StreamHandler(sys.stdout)
    stream_handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(file_handler)
    log.addHandler(stream_handler)
    return log


SPLITS = ("test", "held_out")


def run_table(table, out, estimators=None, seeds=None, steps=None, data_path=None, resume=False,
              curve_every=25, train=train_run, command=None, split="test", shard=(0, 1)):
    """Runs the missing cells of a table and returns all its records.

    Args:
        table: A `tasks.Table`.
        out: Output folder (results.jsonl, study.log, logs/, table.md, curves_*.png).
        estimators, seeds, steps: Override the table's defaults (`seeds` is a count: seeds 0..seeds-1).
        data_path: Data passed to each task's `data` loader.
        resume: Skip cells already in `out/results.jsonl`. Without it, an existing non-empty results
            file is refused so that no study is mixed into another by accident.
        curve_every: Steps per training-curve point.
        train: The training function (`train_run`'s signature); tests pass a fake.
        command: The command line recorded with each result.
        split: `"test"` (train on the training split, evaluate on the test split: the tables) or
            `"held_out"` (train on all but the last `tasks.HELD_OUT` training examples and evaluate on
            those: the screens that choose a setting, with the test set unused). Recorded with each
            result; a results file holds one split. Defaults to `"test"`.
        shard: `(i, n)`: run only the cells whose position in the table's (task, estimator, seed) order is
            `i` modulo `n`, so that `n` processes with their own `out` folders share a table (their
            `results.jsonl` files concatenate into the table's). Defaults to `(0, 1)` (every cell).

    Returns:
        The records of `out/results.jsonl` keyed by cell, after the run.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    index, count = shard
    if not (isinstance(count, int) and isinstance(index, int) and 0 <= index < count):
        raise ValueError(f"`shard` must be (i, n) with integers 0 <= i < n. Received: shard={shard!r}")
    estimators = tuple(estimators or table.estimators)
    seeds = tuple(range(seeds if seeds is not None else table.seeds))
    steps = tuple(sorted(set(steps or table.steps)))
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    path = os.path.join(out, "results.jsonl")
    records = results_lib.read(path)
    if records and not resume:
        raise ValueError(f"{path} already holds {len(records)} results: pass --resume to add the missing cells, "
                         "or choose another --out.")
    other = sorted({r.get("split", "test") for r in records.values()} - {split})
    if other:
        raise ValueError(f"{path} holds results on the {other[0]!r} split; this run evaluates on {split!r}. "
                         "Choose another --out.")
    log = study_logger(out)
    log.info("table %s: tasks %s, estimators %s, seeds %s, steps %s", table.name, ", ".join(table.tasks),
             ", ".join(estimators), list(seeds), list(steps))
    loaded = {}
    position = -1
    for task_name in table.tasks:
        task = tasks_lib.TASKS[task_name]
        refused = [e for e in estimators if not task.accepts(e)]
        if refused:
            raise ValueError(f"Task {task.name!r} takes the estimators {task.estimators or tuple(tasks_lib.ESTIMATOR_CHOICES)}. "
                             f"Received: {refused}")
        if split == "held_out" and not task.held_out:
            raise ValueError(f"Task {task.name!r} has no held-out split (its test data are prepared apart from its "
                             "training data): run it with split='test'. Received: split='held_out'")
    for task_name in table.tasks:
        task = tasks_lib.TASKS[task_name]
        for estimator in estimators:
            for seed in seeds:
                position += 1
                if position % count != index:
                    continue
                missing = results_lib.missing_steps(records, task.name, estimator, seed, steps)
                if not missing:
                    log.info("skip %s / %s / seed %d: all budgets done", task.name, estimator, seed)
                    continue
                if task.data not in loaded:
                    loaded[task.data] = task.data(data_path)
                    if split == "held_out":
                        loaded[task.data] = tasks_lib.held_out_split(loaded[task.data])
                data = loaded[task.data]
                run_name = f"{task.name}__{estimator}__seed{seed}"
                run_log = _file_logger(run_name, os.path.join(out, "logs", f"{run_name}.log"))
                log.info("run %s / %s / seed %d to %d steps (budgets %s)", task.name, estimator, seed,
                         missing[-1], missing)
                evaluations, curve = train(task, estimator, seed, missing, data, curve_every=curve_every,
                                           log=run_log)
                for step in missing:
                    metrics, seconds = evaluations[step]
                    metrics = as_metrics(task, metrics)  # a float (the metric alone) or a dict, primary first
                    metric = metrics[task.metric]
                    record = {
                        "task": task.name, "estimator": estimator, "seed": seed, "steps": step, "split": split,
                        "metric": task.metric, "value": metric, "metrics": metrics,
                        "units": {name: task.units.get(name, "%") for name in metrics},
                        "train_seconds": round(seconds, 3),
                        "curve": [point for point in curve if point[0] <= step],
                        "backend": _backend(), "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(
                            timespec="seconds"),
                        "command": command,
                    }
                    results_lib.append(path, record)
                    records[results_lib.cell_key(record)] = record
                    log.info("  %s / %s / seed %d / %d steps: %s %.4f (%.1f s)", task.name, estimator, seed,
                             step, task.metric, metric, seconds)
    return records


def _backend():
    try:
        import keras

        return keras.backend.backend()
    except ImportError:
        return None
