"""Validation screen of the zoo classifier's estimators: train on 50,000 training images, test on the other 10,000.

The zoo recipe (`dab-zoo train mnist_classifier`) unchanged except for its data: the first 50,000 images of
MNIST's training split train, the last 10,000 are the held-out set its final evaluation reads, so variants
are compared without the test set. Variants:

- `straight_through`, `relaxed`, `dab` (the paper's DAB): the zoo's estimators;
- `dab_residual`: the residual DAB with the zoo's dense approximator (`AxisMLP` over the 128-unit code);
- `dab_residual_elementwise`: the residual DAB with `Sign`'s default approximator, an element-wise MLP
  (one small network applied to each unit alone: its Jacobian is diagonal, as `sign`'s is).

    python -m benchmarks.study.classifier_screen --data mnist.npz --variants straight_through dab_residual \\
        dab_residual_elementwise --seeds 0 1 2 --out screen_runs

Each run writes its zoo run folder `OUT/<variant>-s<seed>` (resumable); the table prints the held-out
accuracy per seed, its mean, and each variant's paired difference from straight-through (mean ± 95 % t-interval).
"""

import argparse
import os
import sys

import numpy as np

VARIANTS = ("straight_through", "relaxed", "dab", "dab_residual", "dab_residual_elementwise")


def split_file(data, out):
    """Writes `out/mnist_val.npz`: MNIST's training split as train (first 50,000) and test (last 10,000)."""
    from benchmarks.study import tasks

    path = os.path.join(out, "mnist_val.npz")
    if not os.path.exists(path):
        mnist = np.load(data)
        np.savez(path, **tasks.held_out_split({"x_train": mnist["x_train"], "y_train": mnist["y_train"]}))
    return path


def train_variant(variant, seed, data, out):
    """Trains one variant with the zoo recipe on `data`; returns its held-out accuracy."""
    from benchmarks import zoo_runs
    from dab_keras import estimators as dab_estimators
    from dab_keras.zoo import codes as zoo_codes
    from dab_keras.zoo import training

    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
    estimator = "dab" if variant.startswith("dab") else variant
    config = {"dab_residual": True} if variant.startswith("dab_residual") else None
    original = zoo_codes.code_estimator
    if variant == "dab_residual_elementwise":
        # The layer's default approximator (element-wise) instead of the zoo's dense one.
        zoo_codes.code_estimator = lambda *args, **kwargs: dab_estimators.DAB(residual=True)
    try:
        folder = os.path.join(out, f"{variant}-s{seed}")
        training.train("mnist_classifier", estimator=estimator, seed=seed, data=data, verbose=0,
                       output_dir=folder, config=config, resume=True)
    finally:
        zoo_codes.code_estimator = original
    return zoo_runs.read_run(folder, "accuracy")[1]


def table(accuracy, seeds):
    """Markdown table of `{variant: {seed: accuracy}}`, with paired differences from straight-through."""
    from benchmarks.study import stats

    lines = ["| variant | held-out accuracy per seed (%) | mean | − straight_through (paired) |", "|---|---|---|---|"]
    reference = accuracy.get("straight_through")
    for variant, by_seed in accuracy.items():
        values = [100 * by_seed[s] for s in seeds]
        diff = "–"
        if reference is not None and variant != "straight_through":
            mean, half, _ = stats.mean_interval([100 * (by_seed[s] - reference[s]) for s in seeds])
            diff = f"{mean:+.3f} ± {half:.3f}"
        lines.append(f"| {variant} | {' / '.join(f'{v:.2f}' for v in values)} | {np.mean(values):.3f} | {diff} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="MNIST .npz in Keras's layout (its training split is used)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS[:1] + VARIANTS[3:]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="screen_runs")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data = split_file(args.data, args.out)
    accuracy = {v: {s: train_variant(v, s, data, args.out) for s in args.seeds} for v in args.variants}
    markdown = table(accuracy, args.seeds)
    print(markdown)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
