"""Training throughput of the zoo's sorter (sequences per second), as `dab-zoo train sorter` runs it.

For each estimator and compilation mode it builds the sorter with its recipe (Adam, batch 1024, fresh
sequences every step: `tf.data` on TensorFlow; on JAX drawn inside the compiled step, or with
`--data host` NumPy batches fed from a `PyDataset`), trains one warm-up epoch (tracing and compilation),
then times `--epochs` further epochs of `--steps` steps each and prints the median sequences/s. Run it
on an otherwise idle machine.

Usage:
    python benchmarks/zoo_sorter.py                      # TensorFlow: graph mode and XLA
    KERAS_BACKEND=jax python benchmarks/zoo_sorter.py    # JAX (always compiled), batches drawn on the device
    KERAS_BACKEND=jax python benchmarks/zoo_sorter.py --data device host   # both feeds, one after the other
    python benchmarks/zoo_sorter.py --estimators dab --batch-size 4096 --steps-per-execution 100
    KERAS_BACKEND=jax python benchmarks/zoo_sorter.py --feed-only --data device host   # the data alone

`--feed-only` times the data source without a model: NumPy batches as the `PyDataset` makes them (one
CPU thread), or JAX drawing `sorting_batch` for `--steps` steps inside one compiled loop (the ceiling of
the device path); it prints sequences/s for each.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--estimators", nargs="+", default=["dab", "straight_through", "relaxed"])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=200, help="steps per timed epoch")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs")
    p.add_argument("--steps-per-execution", type=int, default=None, help="default: the recipe's")
    p.add_argument("--jit", choices=("both", "on", "off"), default="both")
    p.add_argument("--data", nargs="+", choices=("device", "host"), default=["device"],
                   help="JAX: batches drawn inside the compiled step (the recipe's) or fed from NumPy")
    p.add_argument("--feed-only", action="store_true", help="time the data source alone, no model")
    args = p.parse_args(argv)

    import keras

    from dab_keras.zoo import registry
    from dab_keras.zoo import sorter as zoo_sorter
    from dab_keras.zoo import task as zoo_task

    backend = keras.backend.backend()
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.jit]
    feeds = args.data if backend == "jax" else ["tf.data" if backend == "tensorflow" else "host"]
    if backend == "jax":
        modes = (True,)  # JAX always compiles with XLA
    sorter = registry.get("sorter")
    spe = args.steps_per_execution or sorter.steps_per_execution

    if args.feed_only:
        return feed_only(args, feeds)

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    print(f"backend={backend} batch={args.batch_size} steps_per_execution={spe} "
          f"({args.epochs} timed epochs of {args.steps} steps)")
    print(f"{'estimator':<18} {'jit_compile':<12} {'data':<8} {'sequences/s':>12} {'ms/step':>8}")
    for estimator in args.estimators:
        for jit in modes:
            for feed in feeds:
                keras.utils.set_random_seed(0)
                model = sorter.build(estimator, weights=None)
                data = sorter.train_data(args.batch_size, seed=0)
                x = data.x
                if feed == "host":
                    x = zoo_sorter.SortingSequences(args.batch_size, 10, args.steps, seed=0)
                elif data.trainer is not None:
                    model = data.trainer(model)
                opt = keras.optimizers.Adam(zoo_task.cosine_schedule(2e-3, 10**6, 1000))
                sorter.compile(model, opt, jit_compile=jit, steps_per_execution=spe)
                timer = Timer()
                model.fit(x, epochs=args.epochs + 1, steps_per_epoch=args.steps, shuffle=False, verbose=0,
                          callbacks=[timer])
                seconds = statistics.median(timer.times[1:])
                rate = args.steps * args.batch_size / seconds
                print(f"{estimator:<18} {str(jit):<12} {feed:<8} {rate:>12,.0f} {1000 * seconds / args.steps:>8.2f}",
                      flush=True)
                keras.backend.clear_session()


def feed_only(args, feeds):
    """Sequences/s of the data source alone (median of `--epochs` timings of `--steps` batches)."""
    import numpy as np

    from dab_keras.zoo import sorter as zoo_sorter

    print(f"data source alone: batch={args.batch_size}, {args.epochs} timings of {args.steps} batches")
    print(f"{'data':<8} {'sequences/s':>14} {'us/batch':>9}")
    for feed in feeds:
        if feed == "host":
            source = zoo_sorter.SortingSequences(args.batch_size, 10, args.steps, seed=0)

            def run(source=source):
                for i in range(args.steps):
                    source[i]
        elif feed == "device":
            import jax

            from dab_keras.zoo import device_data

            @jax.jit
            def draw(start):
                def body(step, total):
                    x, y = device_data.sorting_batch(0, step, args.batch_size, 10)
                    return total + x[0, 0] + y[0, 0]  # keep the batch alive

                return jax.lax.fori_loop(start, start + args.steps, body, np.float32(0))

            draw(0).block_until_ready()

            def run(draw=draw):
                draw(args.steps).block_until_ready()
        else:
            continue
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        print(f"{feed:<8} {args.steps * args.batch_size / seconds:>14,.0f} {1e6 * seconds / args.steps:>9.1f}")


if __name__ == "__main__":
    main()
