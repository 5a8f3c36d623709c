"""Command line of the study harness.

    python -m benchmarks.study list
    python -m benchmarks.study run everyday --data /path/mnist.npz --seeds 3 --steps 100 400 --out study/everyday
    python -m benchmarks.study run everyday ... --resume      # adds only the missing cells
    python -m benchmarks.study run permutation --out study/permutation   # synthetic data: no --data
    python -m benchmarks.study report everyday --out study/everyday   # table and plots from results.jsonl
    python -m benchmarks.study gradients --samples 2000        # gradient-quality diagnostic
    python -m benchmarks.study codes --data mnist.npz --run straight_through=W.h5 --run dab_residual=W.h5
    python -m benchmarks.study bridge --data mnist.npz --task mnist_mlp_vq --out study/bridge_vq   # early budgets
    python -m benchmarks.study vae-gradients --data mnist.npz --state "GS=relaxed:W.h5@0.3"   # at trained states
"""

import argparse
import os
import shlex
import sys


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _shard(text):
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N with integers 0 <= I < N, received {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected I/N with integers 0 <= I < N, received {text!r}")
    return index, count


def _parser():
    from benchmarks.study import (
        bridge_dynamics,
        code_gradients,
        gradient_quality,
        runner,
        tasks,
        vae_gradients,
        vae_recipe,
    )

    parser = argparse.ArgumentParser(prog="python -m benchmarks.study", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the tables and tasks")
    for name, help_text in (("run", "run a table's missing cells, then write its table and plots"),
                            ("report", "write a table and plots from the results file only")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("table", help="table name (see `list`)")
        sub.add_argument("--out", default=None, help="output folder (default: study_runs/<table>)")
        sub.add_argument("--estimators", nargs="+", default=None, help="default: the table's")
        sub.add_argument("--seeds", type=_positive_int, default=None, help="number of seeds, 0..n-1")
        sub.add_argument("--steps", type=_positive_int, nargs="+", default=None, help="budgets (optimizer steps)")
        if name == "run":
            sub.add_argument("--data", default=None,
                             help="MNIST .npz in Keras's layout, or 'tfds' (TensorFlow Datasets, online); "
                                  "needed by the MNIST tables, not by synthetic ones (e.g. permutation)")
            sub.add_argument("--resume", action="store_true", help="skip cells already in results.jsonl")
            sub.add_argument("--curve-every", type=_positive_int, default=25,
                             help="steps per training-curve point")
            sub.add_argument("--split", choices=runner.SPLITS, default="test",
                             help="evaluate on the test split (the tables; default) or train on all but the last "
                                  f"{tasks.HELD_OUT:,} training examples and evaluate on those (screens: the test "
                                  "set unused)")
            sub.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                             help="run only every N-th cell from the I-th (0-based), for N parallel processes "
                                  "with their own --out; concatenate their results.jsonl, then `report`")
    gradient_quality.add_arguments(commands.add_parser("gradients", help="gradient-quality diagnostic"))
    code_gradients.add_arguments(commands.add_parser(
        "codes", help="what trained DAB bridges do to the zoo classifier's code gradient"))
    bridge_dynamics.add_arguments(commands.add_parser(
        "bridge", help="an estimator's backward through a hard layer over training (held-out split)"))
    vae_gradients.add_arguments(commands.add_parser(
        "vae-gradients", help="estimators' encoder-gradient bias and variance at saved zoo VAE states"))
    vae_recipe.add_arguments(commands.add_parser(
        "vae-recipe", help="the zoo's categorical VAE recipe with a study estimator as its residual DAB"))
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    command = "python -m benchmarks.study " + shlex.join(argv)
    if args.command == "gradients":
        from benchmarks.study import gradient_quality

        return gradient_quality.main(args, command)
    if args.command == "codes":
        from benchmarks.study import code_gradients

        return code_gradients.main(args, command)
    if args.command == "vae-gradients":
        from benchmarks.study import vae_gradients

        return vae_gradients.main(args, command)
    if args.command == "vae-recipe":
        from benchmarks.study import vae_recipe

        return vae_recipe.main(args, command)
    if args.command == "bridge":
        from benchmarks.study import bridge_dynamics

        return bridge_dynamics.main(args, command)

    from benchmarks.study import report, results, runner, tasks

    if args.command == "list":
        for table in tasks.TABLES.values():
            print(f"{table.name}: {table.description}; tasks {', '.join(table.tasks)}; "
                  f"estimators {', '.join(table.estimators)}; {table.seeds} seeds; steps {list(table.steps)}")
        for task in tasks.TASKS.values():
            print(f"  {task.name}: {task.description}")
        return 0
    try:
        table = tasks.get_table(args.table)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    out = args.out or os.path.join("study_runs", table.name)
    estimators = tuple(args.estimators or table.estimators)
    table_tasks = [tasks.TASKS[name] for name in table.tasks]
    unknown = [e for e in estimators if not all(task.accepts(e) for task in table_tasks)]
    if unknown:
        known = [e for e in dict.fromkeys(n for task in table_tasks for n in (task.estimators or tasks.ESTIMATOR_CHOICES))
                 if all(task.accepts(e) for task in table_tasks)]
        print(f"`--estimators` must be among {tuple(known)} for table {table.name!r}. Received: {unknown}",
              file=sys.stderr)
        return 2
    steps = tuple(sorted(set(args.steps or table.steps)))
    seeds = args.seeds if args.seeds is not None else table.seeds
    if args.command == "run":
        needs_data = any(tasks.TASKS[name].needs_data for name in table.tasks)
        if needs_data and args.data is None:
            print(f"Table {table.name!r} trains on MNIST: `--data` must be an MNIST .npz file (Keras's layout) "
                  "or 'tfds'. Received: no --data", file=sys.stderr)
            return 2
        if args.data is not None and args.data != "tfds" and not os.path.isfile(args.data):
            print(f"`--data` must be an MNIST .npz file (Keras's layout) or 'tfds'. Received: --data {args.data}",
                  file=sys.stderr)
            return 2
        try:
            records = runner.run_table(table, out, estimators, seeds, steps, data_path=args.data,
                                       resume=args.resume, curve_every=args.curve_every, command=command,
                                       split=args.split, shard=args.shard)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
    else:
        records = results.read(os.path.join(out, "results.jsonl"))
        if not records:
            print(f"No results in {out}/results.jsonl", file=sys.stderr)
            return 2
    markdown = report.write_report(records, table, out, estimators, steps, seeds=set(range(seeds)), command=command)
    print(markdown)
    print(f"wrote {out}/table.md and {out}/curves_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
