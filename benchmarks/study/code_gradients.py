r"""What a trained DAB bridge does to the gradient of a `Sign` code: the zoo classifier's diagnostic.

The zoo's `mnist_classifier` passes a 128-unit tanh feature vector $x$ through `Sign` to a linear head.
Straight-through sends the head's gradient $u = \partial L / \partial \operatorname{sign}(x)$ back
unchanged ($J = I$); a DAB layer sends $J_g(x)^\top u$, with $g = x + c_\theta(x)$ for the residual DAB
and $g = c_\theta(x)$ for the paper's. For each trained model this measures, on test images:

- `accuracy` on the whole test set, and against the straight-through model of the same seed the images
  only one of the two gets right (McNemar's discordant pairs; their pooled z-score over seeds, each seed's
  pair counted as an independent set of trials, tells whether the test set resolves the difference);
- `error`: the approximation error $\frac1N \sum_n \lVert g(x_n) - \operatorname{sign}(x_n) \rVert^2$
  (summed over units; the identity's error, straight-through's implicit g, beside it);
- `gain` $\lVert J_g^\top u \rVert / \lVert u \rVert$ and `cos` $\cos(J_g^\top u, u)$, per image, averaged:
  how much the bridge scales and turns straight-through's gradient;
- `diag`: the mean diagonal entry of $J_g$ (each unit's own slope), and `off/diag`: the Frobenius norm of
  $J_g$'s off-diagonal part over that of its diagonal, per image, averaged. `sign` acts unit by unit, so
  its ideal surrogate has a diagonal Jacobian: off-diagonal entries are an artefact of a dense
  approximator (one that reads the whole code, as the zoo's `AxisMLP` does), mixing the units' gradients.

    python -m benchmarks.study codes --data mnist.npz \
        --run straight_through=st0.weights.h5 --run straight_through=st1.weights.h5 ... \
        --run dab_residual=dabr0.weights.h5 ... --run dab=dab0.weights.h5 ...

Runs of one estimator are paired with the straight-through runs in the order given (seed 0 with seed 0).
The Jacobians use `tf.GradientTape` (TensorFlow backend).
"""

import math

import numpy as np

#: Kinds of trained classifier the diagnostic loads, and the zoo arguments that rebuild each.
KINDS = {
    "straight_through": {"estimator": "straight_through"},
    "relaxed": {"estimator": "relaxed"},
    "dab": {"estimator": "dab", "dab_residual": False},
    "dab_residual": {"estimator": "dab", "dab_residual": True},
}


def gain_and_cosine(bridged, upstream):
    r"""How much a backward scales and turns the gradient it receives, per row, averaged.

    Args:
        bridged: What the backward sends to the op's input, $b$, `(N, D_in)`.
        upstream: The gradient it received at the op's output, $u$, `(N, D_out)`.

    Returns:
        A dict: `gain`, the mean of $\lVert b_n \rVert / \lVert u_n \rVert$, and where $b$ and $u$ have one
        shape `cos`, the mean of $\cos(b_n, u_n)$. Rows with $u_n = 0$ are left out of both.
    """
    bridged = np.asarray(bridged, "float64")
    upstream = np.asarray(upstream, "float64")
    norm_u = np.linalg.norm(upstream, axis=-1)
    norm_b = np.linalg.norm(bridged, axis=-1)
    keep = norm_u > 0
    out = {"gain": float(np.mean(norm_b[keep] / norm_u[keep]))}
    if bridged.shape == upstream.shape:
        dot = np.sum(bridged * upstream, axis=-1)[keep]
        out["cos"] = float(np.mean(dot / np.maximum(norm_b[keep] * norm_u[keep], 1e-300)))
    return out


def bridge_statistics(layer, x, upstream):
    r"""Gain, turn and Jacobian shape of a DAB layer's backward at inputs `x`.

    Args:
        layer: A built `dab_keras` op layer whose estimator is a `DAB`.
        x: Op inputs, `(N, ...)`, op axis last (for `Sign`, `(N, F)`).
        upstream: Gradients w.r.t. the op's hard output $u$, `(N, ...)`.

    Returns:
        A dict of floats: `error` (mean over inputs of $\lVert g(x) - h(x) \rVert^2$), `gain`
        ($\lVert J_g^\top u \rVert / \lVert u \rVert$, mean), `cos` (mean cosine of $J_g^\top u$ and
        $u$), and for an op whose output is shaped like its input, `diag` (mean diagonal entry of $J_g$)
        and `off_diag` (mean over inputs of
        $\lVert J_g - \operatorname{diag} J_g \rVert_F / \lVert \operatorname{diag} J_g \rVert_F$).
        Per input, the Jacobian is over all its non-batch entries, flattened.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(x, "float32"))
    count = x.shape[0]
    upstream = np.asarray(upstream, "float64").reshape(count, -1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        g = layer.estimator.approximate(layer, x, layer.estimator_state)
    jacobian = tape.batch_jacobian(g, x).numpy().astype("float64").reshape(count, upstream.shape[1], -1)
    hard = np.asarray(layer.hard(x), "float64").reshape(count, -1)
    error = float(np.mean(np.sum((g.numpy().reshape(count, -1) - hard) ** 2, axis=-1)))
    bridged = np.einsum("noi,no->ni", jacobian, upstream)
    out = {"error": error, "cos": float("nan"), **gain_and_cosine(bridged, upstream)}
    if jacobian.shape[1] == jacobian.shape[2]:
        diag = np.einsum("nii->ni", jacobian)
        off = jacobian - np.einsum("ni,ij->nij", diag, np.eye(jacobian.shape[-1]))
        off_ratio = np.linalg.norm(off, axis=(1, 2)) / np.maximum(np.linalg.norm(diag, axis=-1), 1e-300)
        out.update(diag=float(np.mean(diag)), off_diag=float(np.mean(off_ratio)))
    return out


def discordant(reference_correct, correct):
    """McNemar's discordant counts of two classifiers on the same images.

    Args:
        reference_correct: Bool array, the reference's correct images.
        correct: Bool array of the same shape, the other classifier's.

    Returns:
        `(reference_only, other_only)`: the images only the reference gets right, and only the other.
    """
    reference_correct = np.asarray(reference_correct, bool)
    correct = np.asarray(correct, bool)
    if reference_correct.shape != correct.shape:
        raise ValueError(
            "`reference_correct` and `correct` must describe the same images. Received shapes "
            f"{reference_correct.shape} and {correct.shape}"
        )
    return int(np.sum(reference_correct & ~correct)), int(np.sum(~reference_correct & correct))


def mcnemar_z(reference_only, other_only):
    r"""McNemar's z-score $(c - b) / \sqrt{b + c}$ (positive: the other classifier is better); 0 for none."""
    total = reference_only + other_only
    return 0.0 if total == 0 else (other_only - reference_only) / math.sqrt(total)


def measure(kind, weights, images, labels, jacobian_images=2000):
    """Test accuracy, correct images and (for DAB) `bridge_statistics` of one trained classifier.

    Args:
        kind: One of `KINDS`.
        weights: Path of the `.weights.h5` file.
        images: Test images, `(N, 28, 28, 1)` floats in [0, 1].
        labels: Test labels, `(N,)`.
        jacobian_images: How many of the images (the first ones) the Jacobian statistics use.

    Returns:
        A dict with `accuracy`, `correct` (bool array), `identity_error` (the identity's approximation
        error, what straight-through's implicit g has) and, for DAB, the `bridge_statistics`.
    """
    import keras

    from dab_keras import zoo

    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {sorted(KINDS)}. Received: kind={kind!r}")
    model = zoo.MNISTClassifier(weights=weights, **KINDS[kind])
    logits = model.predict(images, batch_size=1000, verbose=0)
    correct = logits.argmax(-1) == labels
    features = keras.Model(model.input, model.get_layer("features").output)
    x = features.predict(images[:jacobian_images], batch_size=1000, verbose=0)
    out = {
        "accuracy": float(correct.mean()),
        "correct": correct,
        "identity_error": float(np.mean(np.sum((x - np.sign(x)) ** 2, axis=-1))),
    }
    if kind.startswith("dab"):
        import tensorflow as tf

        head = model.get_layer("logits")
        code = tf.constant(np.sign(x))
        with tf.GradientTape() as tape:
            tape.watch(code)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                labels[:jacobian_images], head(code), from_logits=True))
        upstream = tape.gradient(loss, code).numpy()
        out.update(bridge_statistics(model.get_layer("sign"), x, upstream))
    return out


def report(measured):
    """The Markdown table of `measured`: `{kind: [measure(...) per seed]}` (straight-through first).

    Returns:
        A Markdown string: per kind, accuracy (mean and per seed), discordant images against
        straight-through (pooled over seeds, with McNemar's z), approximation errors and the bridge's
        gain, cosine, diagonal and off-diagonal share (means over seeds).
    """
    reference = measured.get("straight_through")
    lines = [
        "| estimator | accuracy, mean (per seed) | only ST right / only this right (z) | error (identity's) "
        "| gain | cos | diag | off/diag |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, rows in measured.items():
        acc = [100 * r["accuracy"] for r in rows]
        per_seed = " / ".join(f"{a:.2f}" for a in acc)
        versus = "–"
        if reference is not None and kind != "straight_through":
            pairs = [discordant(ref["correct"], r["correct"]) for ref, r in zip(reference, rows)]
            b, c = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
            versus = f"{b} / {c} ({mcnemar_z(b, c):+.2f})"
        error = f"{_mean(rows, 'error', '.2f')} ({_mean(rows, 'identity_error', '.2f')})"
        lines.append(
            f"| {kind} | {np.mean(acc):.2f} ({per_seed}) | {versus} | {error} | {_mean(rows, 'gain', '.3f')} "
            f"| {_mean(rows, 'cos', '.3f')} | {_mean(rows, 'diag', '.3f')} | {_mean(rows, 'off_diag', '.3f')} |"
        )
    return "\n".join(lines) + "\n"


def _mean(rows, key, fmt):
    # The mean over seeds of a statistic, or a dash where the kind has none (straight-through's bridge).
    values = [r[key] for r in rows if key in r]
    return format(float(np.mean(values)), fmt) if values else "–"


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="MNIST .npz in Keras's layout (its test split is used)")
    parser.add_argument("--run", action="append", required=True, metavar="KIND=WEIGHTS",
                        help=f"a trained classifier, KIND one of {', '.join(KINDS)}; repeat per seed, in "
                             "seed order")
    parser.add_argument("--jacobian-images", type=int, default=2000,
                        help="test images for the Jacobian statistics (the first ones)")
    parser.add_argument("--output", default=None, help="also write the Markdown table to this file")


def parse_runs(specs):
    """`["kind=path", ...]` → `{kind: [path, ...]}`, straight-through first, with clear errors."""
    runs = {}
    for spec in specs:
        kind, sep, path = spec.partition("=")
        if not sep or not path:
            raise ValueError(f"`--run` must be KIND=WEIGHTS. Received: --run {spec}")
        if kind not in KINDS:
            raise ValueError(f"`--run` KIND must be one of {sorted(KINDS)}. Received: --run {spec}")
        runs.setdefault(kind, []).append(path)
    counts = {len(paths) for paths in runs.values()}
    if "straight_through" in runs and len(counts) > 1:
        raise ValueError(f"Every KIND needs as many runs (seeds) as straight_through. Received: "
                         f"{ {k: len(v) for k, v in runs.items()} }")
    return dict(sorted(runs.items(), key=lambda item: item[0] != "straight_through"))


def main(args, command):
    from benchmarks.study import results
    from dab_keras.zoo import data as zoo_data

    try:
        runs = parse_runs(args.run)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    mnist = zoo_data.load_mnist(args.data)
    images, labels = mnist["x_test"], mnist["y_test"]
    measured = {kind: [measure(kind, path, images, labels, args.jacobian_images) for path in paths]
                for kind, paths in runs.items()}
    markdown = f"```\n{command}\n```\n\n" + report(measured)
    results.emit(markdown, args.output)
    return 0
