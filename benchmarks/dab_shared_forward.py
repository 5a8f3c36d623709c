"""Where DAB's cost above its approximator's own cost goes (TensorFlow only).

DAB sends two different cotangents through its approximator g: the fit loss's to g's weights and the
task's to the input. The library computes g twice (once on `stop_gradient(x)`, once with
`stop_gradient` weights). This script times, for the default approximator of one op, in TF graph mode
and XLA:

- `two forwards`: the library's structure, hand-written (same gradients as the layer's);
- `one forward`: g computed once, the two cotangents pulled back separately from a persistent tape
  (`dW = J_W^T u_fit`, `dx = J_x^T u_task`), which gives the same gradients (checked);
- `own`: g's own step (one cotangent, gradients w.r.t. weights and input);
- `forward`: g's output alone.

Every step also returns its loss, as a training step does (without it XLA may drop the output layer's
forward, whose value the gradient of a linear loss does not need).

Usage:
    python benchmarks/dab_shared_forward.py --op sign
    python benchmarks/dab_shared_forward.py --op sort_perm
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=("sign", "sort_perm"), default="sign")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--n", type=int, default=None, help="default 64 for sign, 32 for sort_perm")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--min-time", type=float, default=0.1)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if keras.backend.backend() != "tensorflow":
        sys.exit("benchmarks/dab_shared_forward.py is TensorFlow-only (it compares TF graph mode and XLA).")
    import tensorflow as tf

    import dab_keras

    n = args.n or (32 if args.op == "sort_perm" else 64)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(args.batch, n)).astype("float32"))
    if args.op == "sort_perm":
        layer = dab_keras.layers.Sort(output_mode="permutation", estimator="dab")
    else:
        layer = dab_keras.layers.Sign(estimator="dab")
    layer.build(x.shape)
    g, gamma, b = layer.approximator, 10.0, args.batch
    weights = g.trainable_variables
    hard = tf.stop_gradient(layer.hard(x))
    r = tf.constant(rng.normal(size=hard.shape).astype("float32"))

    def fit_loss(out):
        return gamma * tf.reduce_mean(tf.reduce_sum(tf.reshape(tf.square(out - hard), (b, -1)), -1))

    def two_forwards(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            fit = fit_loss(g(tf.stop_gradient(x)))
            bridge, _ = g.stateless_call([tf.stop_gradient(v.value) for v in weights], [], x)
            loss = tf.reduce_sum(bridge * r) + fit
        return loss, tape.gradient(loss, [x, *weights])

    def one_forward(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            out = g(x)
            fit = fit_loss(out)
        u_fit = tape.gradient(fit, out)
        d_weights = tape.gradient(out, weights, output_gradients=u_fit)
        d_x = tape.gradient(out, x, output_gradients=r)
        return tf.reduce_sum(out * r) + fit, [d_x, *d_weights]

    def own(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(g(x) * r)
        return loss, tape.gradient(loss, [x, *weights])

    pairs = zip(two_forwards(x)[1], one_forward(x)[1])
    diff = max(float(np.max(np.abs(a.numpy() - c.numpy()))) for a, c in pairs)
    print(f"{args.op}: approximator {type(g).__name__}, input {tuple(x.shape)}; "
          f"max |gradient difference| two vs one forward = {diff:.3g}\n")

    fns = {}
    for mode in ("graph", "xla"):
        for name, f in (("two forwards", two_forwards), ("one forward", one_forward), ("own", own),
                        ("forward", lambda x: (g(x),))):
            fns[(name, mode)] = tf.function(f, jit_compile=(mode == "xla"))
    iters = {}
    for key, f in fns.items():
        for _ in range(3):
            f(x)
        start = time.perf_counter()
        f(x)
        iters[key] = max(3, int(args.min_time / max(time.perf_counter() - start, 1e-6)))
    times = {key: [] for key in fns}
    keys = list(fns)
    for rep in range(args.repeats):
        shift = rep % len(keys)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            for _ in range(iters[key]):
                out = fns[key](x)
            _ = out[0].numpy()
            times[key].append((time.perf_counter() - start) / iters[key])
    print("| mode | step | median ms | min ms | median / own |")
    print("|---|---|---|---|---|")
    for mode in ("graph", "xla"):
        for name in ("two forwards", "one forward", "own", "forward"):
            ts = times[(name, mode)]
            ratio = statistics.median(t / o for t, o in zip(ts, times[("own", mode)]))
            print(f"| {mode} | {name} | {statistics.median(ts) * 1e3:.3f} | {min(ts) * 1e3:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
