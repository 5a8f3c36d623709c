"""Relaxed sorting at scale: time and memory of the row-blocked soft sort / soft rank against dense ones.

Times forward + backward of `sum(w * f(x))` for

- `tfp_dense`: `tfp.math.soft_sorting_matrix(x, τ) @ x` (TensorFlow only; NeuralSort, dense);
- `dense`: `dab_keras.ops.neural_sort(x, τ) @ x` (the (batch, n, n) matrix, autodiff backward);
- `values`/`ranks` (`neuralsort`, `softsort`): `dab_keras.ops.soft_sort_values` / `soft_rank`, computed in
  row blocks with a recomputing custom gradient;

in TensorFlow graph mode (`tf.function`), TensorFlow XLA (`jit_compile=True`) and JAX (`jax.jit`),
whichever backend `KERAS_BACKEND` selects. Then, each in a fresh process, the peak resident memory above
the process's baseline for one forward + backward at batch 1, n = 16,384.

    python benchmarks/sort_scale.py                       # TensorFlow: graph + XLA, and memory
    KERAS_BACKEND=jax python benchmarks/sort_scale.py     # JAX
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from dab_keras import ops as dab_ops  # noqa: E402

TAU = 1.0


def make_fn(name, block_size):
    if name == "tfp_dense":
        import tensorflow as tf
        import tensorflow_probability as tfp

        def fn(x):  # ascending, as ours: the descending matrix of -x
            p = tfp.math.soft_sorting_matrix(-x, tf.constant(TAU, x.dtype))
            return tf.einsum("bij,bj->bi", p, x)

        return fn
    if name == "dense":
        return lambda x: ops.einsum("bij,bj->bi", dab_ops.neural_sort(x, TAU), x)
    mode, relaxation = name.split(":")
    op = dab_ops.soft_sort_values if mode == "values" else dab_ops.soft_rank
    return lambda x: op(x, TAU, relaxation=relaxation, block_size=block_size)


def step_fn(name, mode, block_size):
    """A compiled `x, w -> (loss, dloss/dx)`."""
    fn = make_fn(name, block_size)
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(jax.value_and_grad(lambda x, w: (fn(x) * w).sum()))
    import tensorflow as tf

    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * w)
        return loss, tape.gradient(loss, x)

    return tf.function(step, jit_compile=(mode == "xla"))


def block(out):
    for t in out:
        np.asarray(t)


def time_step(step, inputs, repeats, min_time):
    """Median seconds per call of `step(x, w)`, cycling through `inputs`, a list of distinct `(x, w)`.

    Every call gets other values than the one before, as in training: a step whose compilation depends
    on its inputs' values (not only their shapes) pays for it here instead of hitting a cache.
    """
    position = [0]

    def call():
        x, w = inputs[position[0] % len(inputs)]
        position[0] += 1
        block(step(x, w))

    call()  # compile
    call()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        if time.perf_counter() - start >= min_time or calls >= 64:
            break
        calls *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter() - start) / calls)
    return float(np.median(samples))


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(name, mode, n, block_size):
    """Runs in a fresh process: prints the peak RSS during one step at batch 1, above the RSS before it.

    The step first runs at n = 8 (so the baseline holds the runtime and its kernels); a thread samples the
    resident size every millisecond during the call at n, which includes tracing it for that shape.
    """
    rng = np.random.default_rng(0)
    step = step_fn(name, mode, block_size)
    block(step(*(rng.normal(size=(2, 1, 8)).astype("float32"))))  # the runtime, kernels, a first trace
    x = rng.normal(size=(1, n)).astype("float32")
    w = rng.normal(size=(1, n)).astype("float32")
    base = rss_mb()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    block(step(x, w))
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss_mb())
    print(json.dumps({"baseline_mb": base, "peak_mb": peak[0]}))


def measure_memory(name, mode, n, block_size):
    cmd = [sys.executable, __file__, "--memory-child", name, "--mode", mode, "--n", str(n),
           "--block-size", str(block_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--memory-n", type=int, default=16384)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.3)
    parser.add_argument("--inputs", type=int, default=8,
                        help="distinct input batches the timed calls cycle through (1: the same batch each call)")
    parser.add_argument("--cases", default=None, help="comma-separated subset of the cases")
    parser.add_argument("--modes", default=None, help="comma-separated subset of graph,xla (TensorFlow)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--dense-memory-n", type=int, default=4096,
                        help="n for the dense versions' memory (0: skip; 16384 needs several GB)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="graph", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.mode, args.n, args.block_size)
        return

    backend = keras.backend.backend()
    blocked = ["values:neuralsort", "values:softsort", "ranks:neuralsort", "ranks:softsort"]
    dense = (["tfp_dense"] if backend == "tensorflow" else []) + ["dense"]
    cases = dense + blocked if args.cases is None else args.cases.split(",")
    modes = ["graph", "xla"] if backend == "tensorflow" else ["jit"]
    if args.modes is not None and backend == "tensorflow":
        modes = args.modes.split(",")
    rng = np.random.default_rng(0)
    inputs = [tuple(rng.normal(size=(args.batch, args.n)).astype("float32") for _ in range(2))
              for _ in range(args.inputs)]

    print(f"backend {backend}, batch {args.batch}, n {args.n}, block_size {args.block_size}, τ = {TAU}; "
          f"forward + backward, median of repeats, cycling through {args.inputs} distinct input batches\n")
    print("| case | mode | ms / step | speed-up vs " + ("tfp_dense" if backend == "tensorflow" else "dense") + " |")
    print("|---|---|---|---|")
    for mode in modes:
        times = {}
        for name in cases:
            times[name] = time_step(step_fn(name, mode, args.block_size), inputs, args.repeats, args.min_time)
            ref = times.get("tfp_dense", times.get("dense"))
            ratio = f"{ref / times[name]:.2f}x" if ref else "-"
            print(f"| {name} | {mode} | {1e3 * times[name]:.1f} | {ratio} |", flush=True)

    if args.no_memory:
        return
    print("\npeak resident memory during one forward + backward above the resident memory before it, "
          "batch 1 (fresh process each, first call at that n, tracing included)\n")
    mem_cases = [(name, args.memory_n) for name in blocked]
    mem_cases += [(name, args.dense_memory_n) for name in dense if args.dense_memory_n]
    print("| case | n | mode | baseline MB | above baseline MB |")
    print("|---|---|---|---|---|")
    for name, n in mem_cases:
        mode = modes[0]
        m = measure_memory(name, mode, n, args.block_size)
        print(f"| {name} | {n} | {mode} | {m['baseline_mb']:.0f} | {m['peak_mb'] - m['baseline_mb']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
