r"""How an estimator's backward through a hard layer evolves in training: the early-budget diagnostic.

Trains one of the study's MNIST MLP tasks (`mnist_mlp_<layer>`) on the first 50,000 training images and, at
each budget, measures on held-out images (the last 10,000 training images; the test set is unused):

- `accuracy` on the 10,000 held-out images;
- on the first `--probe` of them, the task gradient $u = \partial L / \partial h$ at the hard layer's output
  and what the estimator sends back to the op's input, $b$ (for DAB $b = J_g(x)^\top u$ with
  `DAB.approximate`'s $g$; for straight-through $b = J_s(x)^\top u$, e.g. $b = u$ for the identity):
  - `gain` $\lVert b \rVert / \lVert u \rVert$ and `cos` $\cos(b, u)$, per image, averaged;
  - `error` (DAB): $\frac1N \sum_n \lVert g(x_n) - h(x_n) \rVert^2$, beside the surrogate's
    $\lVert s(x) - h(x) \rVert^2$ (`surrogate_error`, what straight-through's implicit $g$ has: $s$ is the
    op's straight-through surrogate at τ = 1, the identity for `Sign`, `Quantize` and `VectorQuantize`, the
    relaxation for `ArgMax`, `Sort` and `TopK`; results written before this column hold the identity's
    error as `identity_error`, the same quantity for the identity-surrogate ops);
  - `own/task` (a layer with its own loss, `VectorQuantize`'s commitment term): the norm of that loss's
    gradient w.r.t. the op's input over the norm of $b$, both for the probe batch's mean losses: which of
    the two drives the encoder;
  - `h/x`: the root-mean-square of the hard output over that of the input (e.g. how small a
    `VectorQuantize` codebook still is against its inputs).

    python -m benchmarks.study bridge --data mnist.npz --task mnist_mlp_vq \
        --estimators straight_through dab --seeds 3 --steps 0 25 50 100 200 400 --out study_runs/bridge_vq

Writes `OUT/results.jsonl` (one line per task, estimator, seed: the statistics at each budget) and
`OUT/table.md` (means over seeds, accuracy with its 95 % t-interval and paired against the first
estimator). Gradients use `tf.GradientTape` (TensorFlow backend).
"""

import json
import os
import sys

import numpy as np


def probe_statistics(model, images, labels):
    """The bridge statistics of the first `dab_keras` op layer of a `keras.Sequential` model on one batch.

    Args:
        model: A built `keras.Sequential` classifier (logits) holding one `dab_keras` op layer.
        images: Model inputs, `(N, ...)`.
        labels: Integer labels, `(N,)`.

    Returns:
        A dict of floats: `gain`, `cos`, `surrogate_error`, `h/x`, and where they apply `error` (DAB) and
        `own/task` (a layer with its own loss).
    """
    import keras
    import tensorflow as tf

    from benchmarks.study import code_gradients
    from dab_keras.estimators import DAB, default_surrogate
    from dab_keras.layers.base import DiscreteLayer

    index = next(i for i, layer in enumerate(model.layers) if isinstance(layer, DiscreteLayer))
    layer = model.layers[index]
    z = tf.convert_to_tensor(np.asarray(images, "float32"))
    for before in model.layers[:index]:
        z = before(z, training=False)
    x = layer.op_inputs(z)
    hard = tf.convert_to_tensor(layer.hard(x))
    with tf.GradientTape() as tape:
        tape.watch(hard)
        y = layer.op_outputs(hard, len(z.shape))
        for after in model.layers[index + 1:]:
            y = after(y, training=False)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, y, from_logits=True))
    upstream = tape.gradient(loss, hard)
    estimator = layer.estimator
    with tf.GradientTape() as tape:
        tape.watch(x)
        if isinstance(estimator, DAB):
            g = estimator.approximate(layer, x, layer.estimator_state)
        else:
            g = estimator(layer, x, hard, layer.estimator_state)
        surrogate = tf.reduce_sum(tf.cast(g, "float32") * tf.stop_gradient(upstream))
    bridged = tape.gradient(surrogate, x)
    count = x.shape[0]
    base = np.asarray(default_surrogate(layer, x, 1.0), "float64").reshape(count, -1)
    u = upstream.numpy().reshape(count, -1).astype("float64")
    b = bridged.numpy().reshape(count, -1).astype("float64")
    h = hard.numpy().reshape(count, -1).astype("float64")
    xs = x.numpy().reshape(count, -1).astype("float64")
    out = {
        **code_gradients.gain_and_cosine(b, u),
        "surrogate_error": float(np.mean(np.sum((base - h) ** 2, axis=-1))),
        "h/x": float(np.sqrt(np.mean(h**2)) / max(np.sqrt(np.mean(xs**2)), 1e-30)),
    }
    if isinstance(estimator, DAB):
        gx = g.numpy().reshape(count, -1).astype("float64")
        out["error"] = float(np.mean(np.sum((gx - h) ** 2, axis=-1)))
    commitment = getattr(layer, "commitment_cost", None)
    if commitment is not None:
        # VectorQuantize's commitment term β · mean((x - sg(q))²): its gradient w.r.t. the op's input.
        own = 2.0 * commitment * (xs - h) / xs.size
        out["own/task"] = float(np.linalg.norm(own) / max(np.linalg.norm(b), 1e-300))
    return out


def run(task_name, estimator, seed, steps, data, probe=1000, log=None):
    """Trains one (task, estimator, seed) to each budget in `steps`; returns `{step: statistics}`.

    Args:
        task_name: A study task (`benchmarks.study.tasks.TASKS`) whose model is a `keras.Sequential`
            classifier with one `dab_keras` op layer (the `mnist_mlp_*` tasks).
        estimator: Estimator name (`benchmarks.study.tasks.ESTIMATOR_CHOICES`).
        seed: The run's seed (weights and data order).
        steps: Budgets (optimizer steps, 0 allowed).
        data: A dict whose `x_train`, `y_train` train and whose `x_test`, `y_test` are the held-out images.
        probe: How many held-out images the gradient statistics use. Defaults to `1000`.
        log: A `logging.Logger`, or `None`.

    Returns:
        `{step: dict}`: `accuracy` (held-out) and `probe_statistics` at each budget.
    """
    from benchmarks.study import runner, tasks

    task = tasks.TASKS[task_name]
    if not task.accepts(estimator):
        raise ValueError(f"Task {task_name!r} does not take estimator {estimator!r}")
    images, labels = data["x_test"][:probe], data["y_test"][:probe]
    evaluations, _ = runner.train_run(
        task, estimator, seed, steps, data, log=log,
        probe=lambda model: probe_statistics(model, images, labels))
    return {step: {"accuracy": metrics[task.metric], **{k: v for k, v in metrics.items() if k != task.metric}}
            for step, (metrics, _) in evaluations.items()}


COLUMNS = ("gain", "cos", "error", "surrogate_error", "own/task", "h/x")
#: Earlier names of columns, read from older results: the identity-surrogate runs' `identity_error`.
_FORMERLY = {"surrogate_error": "identity_error"}


def table(records, estimators, steps):
    """Markdown: per estimator and budget, held-out accuracy (mean ± 95 % t, paired against the first
    estimator) and the means over seeds of the probe statistics.

    Args:
        records: Dicts with `estimator`, `seed` and `budgets` (`{str(step): statistics}`).
        estimators: Row order; the first is the paired reference.
        steps: Budgets, in column order.

    Returns:
        A Markdown string.
    """
    from benchmarks.study import stats

    by = {(r["estimator"], r["seed"]): r["budgets"] for r in records}
    reference = estimators[0]
    lines = [f"| estimator | steps | held-out accuracy (%) | − {reference} (paired) | " + " | ".join(COLUMNS) + " |",
             "|---|---|---|---|" + "---|" * len(COLUMNS)]
    for estimator in estimators:
        seeds = sorted(s for (e, s) in by if e == estimator)
        for step in steps:
            cells = [by[(estimator, s)][str(step)] for s in seeds if str(step) in by[(estimator, s)]]
            if not cells:
                continue
            mean, half, _ = stats.mean_interval([100 * c["accuracy"] for c in cells])
            paired = "–"
            pairs = [s for s in seeds if (reference, s) in by and str(step) in by[(reference, s)]]
            if estimator != reference and len(pairs) > 1:
                d_mean, d_half, _ = stats.mean_interval(
                    [100 * (by[(estimator, s)][str(step)]["accuracy"] - by[(reference, s)][str(step)]["accuracy"])
                     for s in pairs])
                paired = f"{d_mean:+.1f} ± {d_half:.1f}"
            values = []
            for column in COLUMNS:
                present = [c.get(column, c.get(_FORMERLY.get(column))) for c in cells]
                present = [v for v in present if v is not None]
                values.append(f"{np.mean(present):.3g}" if present else "–")
            lines.append(f"| {estimator} | {step} | {mean:.1f} ± {half:.1f} (n={len(cells)}) | {paired} | "
                         + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="MNIST .npz in Keras's layout (its training split is used)")
    parser.add_argument("--task", default="mnist_mlp_vq", help="an mnist_mlp_* task (default: mnist_mlp_vq)")
    parser.add_argument("--estimators", nargs="+", default=["straight_through", "dab"],
                        help="the first is the paired reference (default: straight_through dab)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..n-1")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 25, 50, 100, 200, 400])
    parser.add_argument("--probe", type=int, default=1000, help="held-out images for the gradient statistics")
    parser.add_argument("--out", default="study_runs/bridge")


def main(args, command):
    from benchmarks.study import runner, tasks

    names = sorted(t for t in tasks.TASKS if t.startswith("mnist_mlp_"))
    problems = []
    if args.task not in names:
        problems.append(f"`--task` must be one of {names}. Received: --task {args.task}")
    if min(args.steps) < 0 or args.seeds < 1 or args.probe < 1:
        problems.append("`--steps` must be integers >= 0, `--seeds` and `--probe` >= 1. Received: "
                        f"--steps {args.steps} --seeds {args.seeds} --probe {args.probe}")
    unknown = [e for e in args.estimators if args.task in names and not tasks.TASKS[args.task].accepts(e)]
    if unknown:
        problems.append(f"`--estimators` must be among {sorted(tasks.ESTIMATOR_CHOICES)}. Received: {unknown}")
    if not os.path.isfile(args.data):
        problems.append(f"`--data` must be an MNIST .npz file (Keras's layout). Received: --data {args.data}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.jsonl")
    records = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
    # A run is redone when it lacks one of the budgets asked for (a run records the budgets it reached).
    done = {(r["task"], r["estimator"], r["seed"]) for r in records
            if all(str(step) in r["budgets"] for step in args.steps)}
    records = [r for r in records if (r["task"], r["estimator"], r["seed"]) in done]
    log = runner.study_logger(args.out)
    data = tasks.held_out_split(tasks.TASKS[args.task].data(args.data))
    steps = sorted(set(args.steps))
    for estimator in args.estimators:
        for seed in range(args.seeds):
            if (args.task, estimator, seed) in done:
                continue
            log.info("bridge %s / %s / seed %d to %d steps", args.task, estimator, seed, steps[-1])
            budgets = run(args.task, estimator, seed, steps, data, probe=args.probe)
            record = {"task": args.task, "estimator": estimator, "seed": seed, "command": command,
                      "budgets": {str(k): v for k, v in budgets.items()}}
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
            records.append(record)
    markdown = table([r for r in records if r["task"] == args.task], list(args.estimators), steps)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"`{command}`\n\n{args.task}\n\n{markdown}")
    print(markdown)
    return 0
