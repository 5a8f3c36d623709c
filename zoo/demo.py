"""`dab-zoo demo`: the pretrained sorter, then DAB against straight-through on a short run.

1. Loads the pretrained DAB sorter, evaluates it on the fixed test set of 100,000 sequences and sorts a
   few sequences in front of you.
2. Trains three fresh sorters on the same number of sequences (about half a minute each on two CPU
   cores), with progress bars: `dab_residual`, the library's default DAB (`DAB()`: straight-through's
   surrogate plus a learned correction), `dab`, the paper's DAB (`DAB(residual=False)`, the approximator
   alone, as the zoo's `estimator="dab"` builds it), and `straight_through`.
3. Prints a table: test accuracy and training speed per estimator (steady-state sequences per second:
   the first epoch, which compiles the model, is left out when the run has more than one).

Nothing is downloaded.
"""

import tempfile
import time

import numpy as np

from dab_keras.zoo import registry, training
from dab_keras.zoo import sorter as zoo_sorter
from dab_keras.zoo import weights as zoo_weights


def _show_pretrained(task):
    if not zoo_weights.shipped_manifests("sorter"):
        print("No pretrained sorter weights are installed; skipping that part.")
        return
    model = zoo_sorter.Sorter(estimator="dab", weights="pretrained")
    manifest = zoo_weights.read_manifest(zoo_weights.manifest_path(zoo_weights.pretrained_path("sorter", "dab")))
    start = time.perf_counter()
    metrics = task.evaluate(model)
    seconds = time.perf_counter() - start
    print(
        f"Pretrained DAB sorter ({manifest.get('samples_seen', 0) / 1e6:.0f} M training sequences): "
        f"all-or-none accuracy {metrics['all_or_none_accuracy']:.4f}, per-position "
        f"{metrics['per_position_accuracy']:.4f} on {metrics['test_sequences']:,} fresh sequences "
        f"({seconds:.1f} s)."
    )
    x, y = task.demo_batch()
    order = np.argmax(model.predict(x, verbose=0), axis=-1)
    for row, pred, true in zip(x, order, y):
        ok = "right" if (pred == true).all() else "wrong"
        print(f"  input  {np.array2string(row, precision=2, floatmode='fixed', max_line_width=200)}")
        print(f"  sorted {np.array2string(row[pred], precision=2, floatmode='fixed', max_line_width=200)}  ({ok})")


_DESCRIPTIONS = {
    "dab_residual": "the library's default DAB: straight-through's surrogate plus a learned correction",
    "dab": "the paper's DAB: the approximator network alone",
}


def run(samples=3_000_000, jit_compile=None, verbose="auto", estimators=("dab_residual", "dab", "straight_through")):
    """Runs the demo and returns its table rows (dicts).

    Args:
        samples: Training sequences per estimator, a whole number >= 1024 (the batch size). Defaults
            to 3 million.
        jit_compile: XLA compilation of the short runs. Defaults to `True` when a GPU is present.
        verbose: Keras `fit` verbosity of the short runs.
        estimators: Names of the runs to compare, among `"dab_residual"` (the default `DAB()`), `"dab"`
            (the paper's DAB, the zoo's `estimator="dab"`), `"straight_through"` and `"relaxed"`.
            Defaults to the first three.

    Raises:
        ValueError: for an unknown name in `estimators`, or invalid `samples` or `jit_compile`.
    """
    names = (*zoo_weights.ESTIMATORS, zoo_weights.RESIDUAL_DAB)  # the sorter's runs (no sample to ReinMax)
    unknown = [e for e in estimators if e not in names]
    if unknown or not estimators:
        raise ValueError(
            f"`estimators` must be names among {list(names)}. Received: estimators={estimators!r}"
        )
    task = registry.get("sorter")
    samples = training.check_arguments(task, samples=samples, jit_compile=jit_compile)["samples"]
    _show_pretrained(task)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in estimators:
            residual = name == zoo_weights.RESIDUAL_DAB  # the zoo's key of `estimator="dab", dab_residual=True`
            estimator, config = ("dab", {"dab_residual": True}) if residual else (name, None)
            about = f" ({_DESCRIPTIONS[name]})" if name in _DESCRIPTIONS else ""
            print(f"\nTraining a sorter with {name}{about} on {samples:,} sequences:")
            if estimator == "dab":
                print("(`loss` is the task loss for every estimator; DAB logs the loss that trains its approximator")
                print(" apart, as `dab_loss`.)")
            result = training.train(
                "sorter",
                estimator=estimator,
                samples=samples,
                jit_compile=jit_compile,
                output_dir=f"{tmp}/{name}",
                verbose=verbose,
                config=config,
            )
            manifest = zoo_weights.read_manifest(result["manifest"])
            rows.append(
                {
                    "estimator": name,
                    "sequences": f"{manifest['samples_seen']:,}",
                    "all-or-none": f"{result['metrics']['all_or_none_accuracy']:.4f}",
                    "per-position": f"{result['metrics']['per_position_accuracy']:.4f}",
                    "sequences/s": f"{manifest['samples_per_second'] or 0:,}",
                    "seconds": f"{manifest['train_seconds']:.0f}",
                }
            )
    columns = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in columns]
    print("\nTest accuracy on 100,000 fresh sequences after the same short run:")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(r[c].rjust(w) for c, w in zip(columns, widths)))
    print("One run of each, from one seed: short runs differ by several points between seeds. The zoo's README")
    print("compares the estimators over 3 seeds at 5 M, 20 M and 100 M sequences.")
    return rows
