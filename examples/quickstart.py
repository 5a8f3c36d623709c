"""Train the same binary-bottleneck classifier with each estimator and print a comparison table.

A teacher network labels 32-dimensional Gaussian inputs with one of 10 classes; the student must pass
its features through a hard `Sign` layer (every unit is ±1 at inference). The three estimators differ
only in how the gradient crosses that layer. Runs on CPU in about a minute:

    python examples/quickstart.py [--epochs 8] [--jit]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import dab_keras  # noqa: E402


def make_data(n, seed):
    rng = np.random.default_rng(seed)
    teacher = np.random.default_rng(1234)
    w1 = teacher.normal(size=(32, 64)) / np.sqrt(32)
    w2 = teacher.normal(size=(64, 10)) / np.sqrt(64)
    x = rng.normal(size=(n, 32)).astype("float32")
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=-1).astype("int32")
    return x, y


def make_model(estimator):
    return keras.Sequential(
        [
            keras.Input((32,)),
            keras.layers.Dense(128, activation="tanh"),
            keras.layers.Dense(64),
            dab_keras.layers.Sign(estimator=estimator, name="binary_code"),
            keras.layers.Dense(10),
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=50_000, help="training set size")
    parser.add_argument("--jit", action="store_true", help="compile train steps with XLA")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()

    x_train, y_train = make_data(args.samples, seed=0)
    x_test, y_test = make_data(10_000, seed=1)
    rows = []
    for name, estimator in [
        ("straight_through", "straight_through"),
        ("straight_through (clip 1)", dab_keras.estimators.StraightThrough(clip_value=1.0)),
        ("relaxed (tanh, τ=1)", "relaxed"),
        ("dab (γ=10)", "dab"),
    ]:
        keras.utils.set_random_seed(0)
        model = make_model(estimator)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=args.jit,
        )
        print(f"\n== {name}")
        start = time.perf_counter()
        model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose)
        seconds = time.perf_counter() - start
        # evaluate() runs the hard Sign (training=False) for every estimator.
        accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0, return_dict=True)["accuracy"]
        rows.append((name, accuracy, seconds))

    print(f"\nTest accuracy with the hard ±1 code at inference ({args.epochs} epochs, {args.samples} samples):")
    print(f"| {'estimator':<26} | test accuracy | train time |")
    print(f"|{'-' * 28}|---------------|------------|")
    for name, accuracy, seconds in rows:
        print(f"| {name:<26} | {accuracy:13.4f} | {seconds:9.1f}s |")


if __name__ == "__main__":
    main()
