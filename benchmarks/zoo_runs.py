"""Tabulate finished zoo runs: a test metric per seed, its mean ± 95 % t-interval, paired differences.

Each `--group LABEL=FOLDER[,FOLDER...]` names the run folders of one estimator (as `dab-zoo train
--output FOLDER` writes them), one per seed; the folders' manifests give the test metric and the seed,
and runs are paired across groups by seed. Unfinished runs (no manifest yet) are listed, not counted.

    python benchmarks/zoo_runs.py --metric all_or_none_accuracy --percent --reference straight_through \\
        --group straight_through=runs/sort100m-st-s0,runs/sort100m-st-s1 \\
        --group dab_residual=runs/sort100m-dabr-s0,runs/sort100m-dabr-s1
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.study import stats  # noqa: E402


def read_run(folder, metric):
    """`(seed, value)` of a finished run folder, or `None` while it has no manifest.

    Args:
        folder: A `dab-zoo train` output folder.
        metric: Key of the manifest's `metrics`.

    Returns:
        `(seed, value)` or `None`.

    Raises:
        ValueError: if the folder holds several manifests, or the metric is not in the manifest.
    """
    manifests = [p for p in Path(folder).glob("*.json") if p.name != "run.json"]
    if not manifests:
        return None
    if len(manifests) > 1:
        raise ValueError(f"{folder} holds several manifests: {sorted(p.name for p in manifests)}")
    manifest = json.loads(manifests[0].read_text())
    if metric not in manifest.get("metrics", {}):
        raise ValueError(f"`--metric` {metric!r} is not in {manifests[0]} (it has {sorted(manifest['metrics'])})")
    return manifest["seed"], manifest["metrics"][metric]


def _cell(values, scale, sign=""):
    mean, half, n = stats.mean_interval([scale * v for v in values])
    return f"{mean:{sign}.2f}" if n < 2 else f"{mean:{sign}.2f} ± {half:.2f}"


def table(groups, metric, reference=None, scale=1.0):
    """Markdown rows of `groups` (`{label: [folder, ...]}`) for `metric`; unfinished folders listed after.

    Returns:
        A Markdown string: per label the values by seed, their mean ± 95 % t-interval and, with
        `reference`, the mean ± interval of the differences from the reference's run of the same seed.
    """
    runs, pending = {}, []
    for label, folders in groups.items():
        runs[label] = {}
        for folder in folders:
            result = read_run(folder, metric)
            if result is None:
                pending.append(str(folder))
                continue
            seed, value = result
            if seed in runs[label]:
                raise ValueError(f"Group {label!r} has two runs of seed {seed} (one is {folder})")
            runs[label][seed] = value
    lines = [f"| estimator | {metric} per seed | mean ± 95 % t | − {reference} (paired) |" if reference else
             f"| estimator | {metric} per seed | mean ± 95 % t |",
             "|---|---|---|---|" if reference else "|---|---|---|"]
    for label, by_seed in runs.items():
        if not by_seed:
            continue
        seeds = sorted(by_seed)
        values = " / ".join(f"{scale * by_seed[s]:.2f} (s{s})" for s in seeds)
        row = f"| {label} | {values} | {_cell([by_seed[s] for s in seeds], scale)} |"
        if reference:
            base = runs.get(reference, {})
            shared = [s for s in seeds if s in base]
            row += " – |" if label == reference or not shared else (
                f" {_cell([by_seed[s] - base[s] for s in shared], scale, '+')} (n={len(shared)}) |")
        lines.append(row)
    if pending:
        lines.append("")
        lines.append("Unfinished (no manifest yet): " + ", ".join(pending))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--group", action="append", required=True, metavar="LABEL=FOLDER[,FOLDER...]")
    parser.add_argument("--metric", required=True, help="key of the manifests' metrics, e.g. all_or_none_accuracy")
    parser.add_argument("--reference", default=None, help="label whose runs the others are paired with")
    parser.add_argument("--percent", action="store_true", help="show fractions in percent")
    args = parser.parse_args(argv)
    groups = {}
    for spec in args.group:
        label, sep, folders = spec.partition("=")
        if not sep or not folders:
            parser.error(f"`--group` must be LABEL=FOLDER[,FOLDER...]. Received: --group {spec}")
        groups.setdefault(label, []).extend(f for f in folders.split(",") if f)
    if args.reference is not None and args.reference not in groups:
        parser.error(f"`--reference` must be one of the groups {sorted(groups)}. Received: {args.reference!r}")
    try:
        print(table(groups, args.metric, args.reference, 100.0 if args.percent else 1.0))
    except ValueError as error:
        parser.exit(2, f"{error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
