"""`dab-zoo`: list, train, evaluate and demo the zoo's models from the command line.

    dab-zoo list
    dab-zoo train sorter --estimator dab --samples 400000000 --batch-size 1024 --lr 2e-3
    dab-zoo train sorter --estimator dab --dab-residual
    dab-zoo evaluate sorter --estimator straight_through
    dab-zoo demo

Run `dab-zoo COMMAND --help` for each command's options. Errors in the arguments print one line and exit
with status 2.
"""

import argparse
import os
import sys

_BACKENDS = ("tensorflow", "jax")
_ESTIMATORS = ("dab", "straight_through", "relaxed")
_DECODER_CODES = ("auto", "hard", "relaxed")  # `dab_keras.zoo.weights.DECODER_CODES` (not imported: no backend yet)


class _Parser(argparse.ArgumentParser):
    # One line per error, without the usage block (`--help` still prints it all).
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text):
    # Text to a number: an int when the value is whole (3e6 -> 3000000), else a float. The rules (positive,
    # whole, finite) are checked in one place, `dab_keras.zoo.training.check_arguments`.
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value.is_integer():
        return int(value) if "e" in text.lower() or "." in text else int(text)
    return value


def _positive_int(text):
    value = _number(text)
    if not isinstance(value, int) or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _weights(text):
    # 'none' (any case) means random initialization, as weights=None does in Python.
    return None if text.lower() == "none" else text


def _common(parser):
    parser.add_argument(
        "--backend", choices=_BACKENDS, help="Keras backend (sets KERAS_BACKEND; default: Keras's own)"
    )
    parser.add_argument(
        "--data",
        default="tfds",
        help="MNIST source for MNIST models: 'tfds' (TensorFlow Datasets, the default) or a path to a .npz "
        "in Keras's mnist.npz layout",
    )


def build_parser():
    """The `dab-zoo` argument parser: the `list`, `train`, `evaluate` and `demo` subcommands.

    Returns:
        An `argparse.ArgumentParser`; `main` runs the command it parses.

    Examples:
        >>> args = build_parser().parse_args(["train", "sorter", "--estimator", "straight_through"])
        >>> args.command, args.model, args.estimator
        ('train', 'sorter', 'straight_through')
    """
    parser = _Parser(
        prog="dab-zoo",
        description="Pretrained dab_keras models: list them, train them, evaluate them, or run a demo.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list the models and their shipped weights")
    p.add_argument("--backend", choices=_BACKENDS, help=argparse.SUPPRESS)

    p = sub.add_parser("train", help="train a model from scratch with its recipe")
    p.add_argument("model", help="model name (see `dab-zoo list`)")
    p.add_argument("--estimator", choices=_ESTIMATORS, help="gradient estimator (default: the model's)")
    p.add_argument(
        "--dab-residual", action="store_true",
        help="with --estimator dab: the residual DAB (the op's straight-through surrogate plus a learned "
        "correction that starts at zero) instead of the paper's (the shipped weights'); default run "
        "folder dab_zoo_runs/MODEL-dab_residual",
    )
    p.add_argument(
        "--sample-gradient", choices=("relaxation", "reinmax"),
        help="discrete VAEs, with straight_through or --dab-residual: the base gradient of the hard sample "
        "(default: relaxation, straight-through Gumbel-Softmax / binary Concrete; reinmax: ReinMax's)",
    )
    p.add_argument(
        "--decoder-codes", choices=_DECODER_CODES,
        help="discrete VAEs: the codes the decoder is fitted to in training (default: auto, the sampling "
        "layer's output; relaxed: the relaxed sample at tau whatever the estimator, while the encoder learns "
        "through the estimator); default run folder dab_zoo_runs/MODEL-ESTIMATOR_CODES_codes",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_number, help="epochs to train")
    length.add_argument(
        "--samples", type=_number, help="training examples to see (e.g. 4e8); default: the recipe's"
    )
    p.add_argument("--batch-size", type=_number, help="global batch size (default: the recipe's)")
    p.add_argument("--lr", type=_number, help="peak learning rate, at most 1 (default: the recipe's)")
    p.add_argument("--seed", type=_number, default=0, help="seed of initialization and data (default: 0)")
    jit = p.add_mutually_exclusive_group()
    jit.add_argument(
        "--jit", dest="jit", action="store_true", default=None,
        help="XLA-compile training (default: the recipe's; else on with JAX or a GPU, off on a TensorFlow CPU)",
    )
    jit.add_argument("--no-jit", dest="jit", action="store_false", help="do not XLA-compile training")
    p.add_argument(
        "--strategy",
        choices=("data_parallel", "mirrored", "multi_worker"),
        help="devices to train on: 'data_parallel' (JAX: keras.distribution over all devices, the default "
        "when several are visible), 'mirrored' (TensorFlow: the visible GPUs, or --cpu-devices), "
        "'multi_worker' (TensorFlow: the machines in TF_CONFIG); see the docs' 'Many devices and machines'",
    )
    p.add_argument(
        "--cpu-devices",
        type=_positive_int,
        help="split the CPU into N logical devices (to run --strategy mirrored without GPUs)",
    )
    p.add_argument(
        "--steps-per-execution", type=_number,
        help="steps per compiled call (lowered to a divisor of the steps of an epoch)",
    )
    p.add_argument(
        "--steps-per-epoch", type=_number, help="steps per epoch of synthetic data (default: the recipe's)"
    )
    p.add_argument(
        "--output", help="run folder (default: dab_zoo_runs/MODEL-ESTIMATOR, or MODEL-dab_residual)"
    )
    p.add_argument(
        "--resume", action="store_true",
        help="continue the run saved in the output folder (with the same arguments; a finished run stays as it is)",
    )
    p.add_argument(
        "--checkpoint-every", type=_number, metavar="N",
        help="also keep the weights after every N-th epoch in OUTPUT/checkpoints/epoch-EEE.weights.h5 "
        "(learning curves); checkpoint.weights.h5 holds only the latest",
    )
    p.add_argument(
        "--tensorboard", action="store_true",
        help="write TensorBoard scalars (loss, metrics, approximation errors, learning rate, temperatures) "
        "to OUTPUT/tensorboard",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _common(p)

    p = sub.add_parser("evaluate", help="evaluate pretrained (or given) weights on the test set")
    p.add_argument("model", help="model name (see `dab-zoo list`)")
    p.add_argument("--estimator", choices=_ESTIMATORS, help="estimator of the weights (default: the model's)")
    p.add_argument(
        "--dab-residual", action="store_true",
        help="with --estimator dab: the residual DAB (its own shipped weights, where they ship)",
    )
    p.add_argument(
        "--sample-gradient", choices=("relaxation", "reinmax"),
        help="discrete VAEs: the base gradient the weights were trained with (default: relaxation)",
    )
    p.add_argument(
        "--decoder-codes", choices=_DECODER_CODES,
        help="discrete VAEs: the codes the weights' decoder was fitted to (default: auto)",
    )
    p.add_argument(
        "--weights", type=_weights, default="pretrained",
        help="'pretrained' (default), a .weights.h5 path, or 'none' (random initialization)",
    )
    _common(p)

    p = sub.add_parser(
        "demo",
        help="evaluate the pretrained sorter, then train DAB (default and paper's) and straight-through sorters briefly",
    )
    p.add_argument(
        "--samples", type=_number, default=3_000_000, help="training sequences per estimator (default: 3e6)"
    )
    p.add_argument("--jit", dest="jit", action="store_true", default=None, help="XLA-compile training")
    p.add_argument("--no-jit", dest="jit", action="store_false", help="do not XLA-compile training")
    p.add_argument("--backend", choices=_BACKENDS, help="Keras backend (sets KERAS_BACKEND)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _table(rows, columns):
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))
    return "\n".join(lines)


def _fmt(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _verbosity(args):
    # Progress bars on a terminal, one line per epoch in a log file.
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _cmd_list(args):
    from dab_keras import zoo

    rows = [
        {**r, "pretrained": ", ".join(r["pretrained"]) or "-"} for r in zoo.registry.describe()
    ]
    print(_table(rows, ["name", "default_estimator", "pretrained", "description"]))


def _cmd_train(args, argv):
    if args.cpu_devices:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices
        )
    from dab_keras import zoo
    from dab_keras.zoo import distribute

    distribute.initialize_cluster()  # a multi-process JAX run (KERAS_DISTRIBUTION_* variables)
    result = zoo.train(
        args.model,
        estimator=args.estimator,
        samples=args.samples,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        jit_compile=args.jit,
        strategy=args.strategy,
        seed=args.seed,
        output_dir=args.output,
        resume=args.resume,
        data=args.data,
        verbose=_verbosity(args),
        steps_per_execution=args.steps_per_execution,
        steps_per_epoch=args.steps_per_epoch,
        command=" ".join(["dab-zoo", *argv]),
        tensorboard=args.tensorboard,
        checkpoint_every=args.checkpoint_every,
        config=_config(args) or None,
    )
    if result["weights"] is None:
        print("this worker is not the chief: the chief writes the weights and manifest")
    else:
        if result["complete"]:
            print(f"The run in {result['weights'].parent} is complete; nothing was trained or changed.")
        print(f"weights: {result['weights']}\nmanifest: {result['manifest']}")
    for k, v in result["metrics"].items():
        print(f"{k}: {_fmt(v)}")


def _config(args):
    """The model's constructor arguments from `--dab-residual`, `--sample-gradient` and `--decoder-codes`."""
    config = {"dab_residual": True} if args.dab_residual else {}
    if args.sample_gradient is not None:
        config["sample_gradient"] = args.sample_gradient
    if args.decoder_codes is not None:
        config["decoder_codes"] = args.decoder_codes
    return config


def _cmd_evaluate(args):
    from dab_keras import zoo

    config = _config(args)
    metrics = zoo.evaluate(args.model, weights=args.weights, estimator=args.estimator, data=args.data, **config)
    for k, v in metrics.items():
        print(f"{k}: {_fmt(v)}")


def _cmd_demo(args):
    from dab_keras.zoo import demo

    demo.run(samples=args.samples, jit_compile=args.jit, verbose=_verbosity(args))


def main(argv=None):
    """Entry point of the `dab-zoo` console script: parses `argv` and runs the command.

    Errors in the arguments or in the run (a bad value, a missing file, no network for `--data tfds`)
    print one line and exit with status 2; a run whose loss becomes NaN or infinite stops with one line
    and status 1 (its last good checkpoint kept); Ctrl-C exits with 130. `--backend` restarts the process with `KERAS_BACKEND` set.

    Args:
        argv: The arguments after `dab-zoo`, a list of strings. Defaults to `None` (`sys.argv[1:]`).

    Returns:
        `0` when the command succeeded (errors exit through `SystemExit` instead).

    Examples:
        >>> import contextlib, io
        >>> with contextlib.redirect_stdout(io.StringIO()) as out:
        ...     status = main(["list"])
        >>> status, "sorter" in out.getvalue()
        (0, True)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend and os.environ.get("KERAS_BACKEND") != args.backend:
        # Keras reads the backend once, when it is first imported: start again with it set.
        os.environ["KERAS_BACKEND"] = args.backend
        os.execv(sys.executable, [sys.executable, "-m", "dab_keras.zoo.cli", *argv])
    try:
        if args.command == "list":
            _cmd_list(args)
        elif args.command == "train":
            _cmd_train(args, argv)
        elif args.command == "evaluate":
            _cmd_evaluate(args)
        elif args.command == "demo":
            _cmd_demo(args)
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError) as e:
        parser.exit(2, f"dab-zoo {args.command}: error: {e}\n")
    except ArithmeticError as e:  # training.NonFiniteLossError: the run diverged
        parser.exit(1, f"dab-zoo {args.command}: error: {e}\n")
    except KeyboardInterrupt:
        parser.exit(130, "dab-zoo: interrupted (a train run continues with --resume)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
