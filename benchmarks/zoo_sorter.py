"""Training throughput of the zoo's sorter (sequences per second), as `dab-zoo train sorter` runs it.

For each estimator and compilation mode it builds the sorter with its recipe (Adam, batch 1024, fresh
sequences every step: `tf.data` on TensorFlow, a `PyDataset` elsewhere), trains one warm-up epoch
(tracing and compilation), then times `--epochs` further epochs of `--steps` steps each and prints the
median sequences/s. Run it on an otherwise idle machine.

Usage:
    python benchmarks/zoo_sorter.py                      # TensorFlow: graph mode and XLA
    KERAS_BACKEND=jax python benchmarks/zoo_sorter.py    # JAX (always compiled)
    python benchmarks/zoo_sorter.py --estimators dab --batch-size 4096 --steps-per-execution 100
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
    args = p.parse_args(argv)

    import keras

    from dab_keras.zoo import registry
    from dab_keras.zoo import task as zoo_task

    backend = keras.backend.backend()
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.jit]
    if backend == "jax":
        modes = (True,)  # JAX always compiles with XLA
    sorter = registry.get("sorter")
    spe = args.steps_per_execution or sorter.steps_per_execution

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
    print(f"{'estimator':<18} {'jit_compile':<12} {'sequences/s':>12} {'ms/step':>8}")
    for estimator in args.estimators:
        for jit in modes:
            keras.utils.set_random_seed(0)
            model = sorter.build(estimator, weights=None)
            opt = keras.optimizers.Adam(zoo_task.cosine_schedule(2e-3, 10**6, 1000))
            sorter.compile(model, opt, jit_compile=jit, steps_per_execution=spe)
            data = sorter.train_data(args.batch_size, seed=0)
            timer = Timer()
            model.fit(data.x, epochs=args.epochs + 1, steps_per_epoch=args.steps, shuffle=False, verbose=0,
                      callbacks=[timer])
            seconds = statistics.median(timer.times[1:])
            rate = args.steps * args.batch_size / seconds
            print(f"{estimator:<18} {str(jit):<12} {rate:>12,.0f} {1000 * seconds / args.steps:>8.2f}", flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
