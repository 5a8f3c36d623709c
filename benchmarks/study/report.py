"""Writes a study's table (Markdown, mean ± 95 % t-interval over seeds) and learning-curve plots (PNG)."""

import math
import os

import numpy as np

from benchmarks.study import stats, tasks


def _format(values, scale, digits):
    mean, half, n = stats.mean_interval(values)
    if math.isnan(half):
        return f"{mean * scale:.{digits}f} (n={n})"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f} (n={n})"


def _value(record, metric):
    """A record's value of `metric` (`None`: its primary metric); `None` if it does not hold that metric."""
    if metric is None or metric == record.get("metric"):
        return record["value"]
    return record.get("metrics", {}).get(metric)


def cell_values(records, task, estimator, step, seeds=None, metric=None):
    """The per-seed values of one cell, in seed order (`metric`: a test metric's name; `None`: the primary)."""
    found = sorted((r["seed"], _value(r, metric)) for r in records.values()
                   if r["task"] == task and r["estimator"] == estimator and r["steps"] == step
                   and (seeds is None or r["seed"] in seeds) and _value(r, metric) is not None)
    return [value for _, value in found]


def metric_names(records, tasks):
    """The secondary test metrics the tasks' records hold (sorted), besides each record's primary metric."""
    return sorted({name for r in records.values() if r["task"] in tasks
                   for name in r.get("metrics", {}) if name != r.get("metric")})


def metric_unit(records, tasks, metric=None):
    """The unit of a test metric in the tasks' records (`None`: the primary): `"%"` unless a record says."""
    for r in records.values():
        if r["task"] in tasks:
            name = r.get("metric") if metric is None else metric
            if name in r.get("units", {}):
                return r["units"][name]
    return "%"


def table_markdown(records, tasks, estimators, steps, seeds=None, scale=100.0, digits=1, metric="test accuracy (%)",
                   key=None):
    """A Markdown table: one row per (task, estimator), one column per budget.

    Cells read `mean ± h (n=k)`, h the half-width of the two-sided 95 % Student-t interval of the mean over
    the k seeds (no interval for k = 1; "—" for a cell without results).

    Args:
        records: Results keyed by cell (`results.read`).
        tasks, estimators, steps: Rows and columns, in order.
        seeds: Seeds to include (`None`: all found).
        scale: Factor applied to values (100 for accuracies in %). Defaults to `100.0`.
        digits: Decimals shown. Defaults to `1`.
        metric: Name of the metric for the header.
        key: The test metric's name in the records (`None`: each record's primary metric).

    Returns:
        The table as a string (ending in a newline).
    """
    head = "| task | estimator | " + " | ".join(f"{metric} @ {s} steps" for s in steps) + " |"
    lines = [head, "|" + "---|" * (2 + len(steps))]
    for task in tasks:
        for estimator in estimators:
            cells = []
            for step in steps:
                values = cell_values(records, task, estimator, step, seeds, key)
                cells.append(_format(values, scale, digits) if values else "—")
            lines.append(f"| {task} | {estimator} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_differences(records, task, estimator, reference, step, seeds=None, key=None):
    """Per-seed differences `estimator − reference` of one budget, over the seeds both have (seed order)."""
    mine = dict(zip(_seeds(records, task, estimator, step, seeds, key),
                    cell_values(records, task, estimator, step, seeds, key)))
    theirs = dict(zip(_seeds(records, task, reference, step, seeds, key),
                      cell_values(records, task, reference, step, seeds, key)))
    return [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))]


def _signed(values, scale, digits):
    mean, half, n = stats.mean_interval(values)
    if math.isnan(half):
        return f"{mean * scale:+.{digits}f} (n={n})"
    return f"{mean * scale:+.{digits}f} ± {half * scale:.{digits}f} (n={n})"


def _seeds(records, task, estimator, step, seeds, key=None):
    return sorted(r["seed"] for r in records.values()
                  if r["task"] == task and r["estimator"] == estimator and r["steps"] == step
                  and (seeds is None or r["seed"] in seeds) and _value(r, key) is not None)


def paired_markdown(records, tasks, estimators, steps, reference="straight_through", seeds=None, scale=100.0,
                    digits=1, metric="test accuracy (points)", key=None):
    """A Markdown table of paired differences to `reference`: one row per (task, other estimator).

    Runs with the same seed share the initial weights of every layer the estimators do not own and the
    data order, so the per-seed difference removes most of the seed-to-seed spread. Cells read
    `mean ± h (n=k)` of the k per-seed differences (h: half-width of the 95 % Student-t interval);
    an interval that excludes 0 marks a difference the seeds resolve.

    Args:
        records: Results keyed by cell (`results.read`).
        tasks, estimators, steps: Rows and columns, in order (`reference` itself is skipped).
        reference: The estimator subtracted. Defaults to `"straight_through"`.
        seeds: Seeds to include (`None`: all found).
        scale: Factor applied to the differences. Defaults to `100.0`.
        digits: Decimals shown. Defaults to `1`.
        metric: Name of the difference's unit for the header.
        key: The test metric's name in the records (`None`: each record's primary metric).

    Returns:
        The table as a string (ending in a newline), or `""` when `reference` has no results.
    """
    if not any(r["estimator"] == reference for r in records.values()):
        return ""
    head = "| task | estimator | " + " | ".join(f"Δ {metric} @ {s} steps" for s in steps) + " |"
    lines = [head, "|" + "---|" * (2 + len(steps))]
    for task in tasks:
        for estimator in estimators:
            if estimator == reference:
                continue
            cells = []
            for step in steps:
                diffs = paired_differences(records, task, estimator, reference, step, seeds, key)
                cells.append(_signed(diffs, scale, digits) if diffs else "—")
            lines.append(f"| {task} | {estimator} − {reference} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curves(records, task, estimator):
    """Per-seed training curves of the longest recorded run of (task, estimator): `{seed: array (m, 3)}`."""
    best = {}
    for r in records.values():
        if r["task"] == task and r["estimator"] == estimator and r.get("curve"):
            if r["seed"] not in best or r["steps"] > best[r["seed"]]["steps"]:
                best[r["seed"]] = r
    return {seed: np.asarray(r["curve"], dtype="float64") for seed, r in best.items()}


def plot_task(records, task, estimators, steps, path, scale=100.0, metric="test accuracy (%)"):
    """Saves a PNG: training task loss per step (mean over seeds, 95 % band) and the test metric at budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for estimator in estimators:
        per_seed = curves(records, task, estimator)
        if per_seed:
            length = min(len(c) for c in per_seed.values())
            stacked = np.stack([c[:length] for c in per_seed.values()])  # (seeds, points, 3)
            x = stacked[0, :, 0]
            summary = [stats.mean_interval(stacked[:, i, 1]) for i in range(length)]
            mean = np.array([m for m, _, _ in summary])
            half = np.array([h for _, h, _ in summary])
            (line,) = left.plot(x, mean, label=f"{estimator} (n={stacked.shape[0]})")
            if stacked.shape[0] > 1:
                # the band is clipped at the smallest loss seen (log axis); the seeds are drawn faintly
                floor = 0.5 * float(np.min(stacked[:, :, 1]))
                left.fill_between(x, np.maximum(mean - half, floor), mean + half, alpha=0.2,
                                  color=line.get_color())
                for seed_curve in stacked:
                    left.plot(x, seed_curve[:, 1], color=line.get_color(), alpha=0.3, linewidth=0.7)
        xs, means, halves = [], [], []
        for step in steps:
            values = cell_values(records, task, estimator, step)
            if values:
                mean, half, _ = stats.mean_interval(values)
                xs.append(step)
                means.append(mean * scale)
                halves.append(0.0 if math.isnan(half) else half * scale)
        if xs:
            bars = right.errorbar(xs, means, yerr=halves, marker="o", capsize=4, label=estimator)
            for step in xs:
                values = np.asarray(cell_values(records, task, estimator, step)) * scale
                right.scatter(np.full(len(values), step), values, s=10, alpha=0.5,
                              color=bars[0].get_color())
    left.set_xlabel("optimizer step")
    left.set_ylabel("training loss (mean over seeds, 95 % band)")
    left.set_yscale("log")
    left.legend()
    right.set_xlabel("optimizer steps (budget)")
    right.set_xscale("log")
    right.set_ylabel(f"{metric}\nmean ± 95 % t-interval, seeds")
    right.set_ylim(0, 100 if scale == 100.0 else None)
    right.legend()
    figure.suptitle(task)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(records, table, out, estimators, steps, seeds=None, command=None):
    """Writes `out/table.md` and `out/curves_<task>.png`; returns the Markdown text.

    One table of means and one of paired differences per test metric: the tasks' primary metric first,
    then every further metric their records hold (a task whose `evaluate` returns a dict). A metric in
    `"%"` is shown in percent (differences in points), others in their own unit.
    """
    text = [f"## {table.description}\n"]
    if command:
        text.append(f"`{command}`\n")
    held_out = _held_out(records, table.tasks)
    if held_out:
        text.append(f"Held-out split: trained on all but the last {tasks.HELD_OUT:,} training examples and evaluated "
                    "on those (`--split held_out`); the test set unused.\n")
    secondary = metric_names(records, table.tasks)
    for key in (None, *secondary):
        name = _metric_name(records, table.tasks) if key is None else key
        if held_out:
            name = _held_out_name(name)
        unit = metric_unit(records, table.tasks, key)
        scale, diff_unit = (100.0, "points") if unit == "%" else (1.0, unit)
        if secondary:
            text.append(f"### {name} ({unit})\n")
        text.append(table_markdown(records, table.tasks, estimators, steps, seeds, scale=scale,
                                   metric=f"{name} ({unit})", key=key))
        text.append("\nmean ± half-width of the two-sided 95 % Student-t interval over seeds (n seeds per cell).\n")
        paired = paired_markdown(records, table.tasks, estimators, steps, seeds=seeds, scale=scale,
                                 metric=f"{name} ({diff_unit})", key=key)
        if paired:
            text.append("Paired by seed (same initial weights and data order), each estimator minus "
                        "straight-through:\n")
            text.append(paired)
            text.append("\nmean ± 95 % t-interval of the per-seed differences; an interval excluding 0 is a "
                        "difference the seeds resolve.\n")
    markdown = "\n".join(text)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(markdown)
    for task in table.tasks:
        unit = metric_unit(records, (task,))
        name = _metric_name(records, (task,))
        plot_task(records, task, estimators, steps, os.path.join(out, f"curves_{task}.png"),
                  scale=100.0 if unit == "%" else 1.0,
                  metric=f"{_held_out_name(name) if held_out else name} ({unit})")
    return markdown


def _held_out(records, tasks):
    """Whether the tasks' records were evaluated on the held-out split (`run --split held_out`)."""
    return any(r.get("split") == "held_out" for r in records.values() if r["task"] in tasks)


def _held_out_name(name):
    """A metric's name on the held-out split: "test accuracy" becomes "held-out accuracy"."""
    return f"held-out {name[len('test '):]}" if name.startswith("test ") else f"held-out {name}"


def _metric_name(records, tasks):
    """The name of the tasks' test metric: the one their records name, or "test metric" if they differ."""
    names = {r.get("metric") for r in records.values() if r["task"] in tasks} - {None}
    return names.pop() if len(names) == 1 else "test metric"
