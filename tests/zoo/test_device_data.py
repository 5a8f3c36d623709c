"""The sorter's batches drawn inside JAX's compiled train step: the stream, training on it, resuming it.

Each test runs a short script in a JAX subprocess, so it runs under either backend of the suite.
"""

import json

import numpy as np
from jax_runs import SMALL, run_jax

_STREAM = """
    import json, sys
    import numpy as np
    from dab_keras.zoo import device_data
    out = {}
    for seed, step in [(0, 0), (0, 1), (1, 0), (0, 0)]:
        x, y = device_data.sorting_batch(seed, step, batch_size=64, length=7)
        out.setdefault(f"{seed},{step}", []).append([np.asarray(x).tolist(), np.asarray(y).tolist()])
    json.dump(out, sys.stdout)
"""


def test_sorting_batch_is_a_function_of_seed_and_step():
    out = run_jax(_STREAM)
    (x, y), (x_again, _) = [np.asarray(a) for a in out["0,0"][0]], [np.asarray(a) for a in out["0,0"][1]]
    assert x.shape == (64, 7) and y.shape == (64, 7)
    assert ((x >= 0) & (x < 1)).all() and abs(x.mean() - 0.5) < 0.05
    np.testing.assert_array_equal(y, np.argsort(x, -1, kind="stable"))  # NumPy's argsort as the reference
    np.testing.assert_array_equal(x_again, x)  # deterministic
    for other in ("0,1", "1,0"):  # another step, another seed: other sequences
        assert not np.allclose(np.asarray(out[other][0][0]), x)


_STEPS = """
    import json, sys
    import keras
    from keras import ops
    from dab_keras.zoo import Sorter, device_data, sorter
    config = json.loads(sys.argv[1])

    def build():
        keras.utils.set_random_seed(0)
        return Sorter("straight_through", weights=None, **config)

    # Reference: the plain model trained with train_on_batch on the batches of steps 0, 1, 2, 3.
    plain = build()
    plain.compile(keras.optimizers.Adam(1e-2), loss=sorter.sorting_loss, jit_compile=True)
    for step in range(4):
        plain.train_on_batch(*device_data.sorting_batch(11, step, 128, config["length"]))

    out = {"plain": [ops.convert_to_numpy(w).tolist() for w in plain.weights],
           "initial": [ops.convert_to_numpy(w).tolist() for w in build().weights]}
    for spe in (1, 2):
        net = build()
        trainer = device_data.DeviceSortingTrainer(net.inputs, net.outputs, batch_size=128, seed=11)
        trainer.compile(keras.optimizers.Adam(1e-2), loss=sorter.sorting_loss, jit_compile=True,
                        steps_per_execution=spe)
        trainer.fit(device_data.Placeholders(128, steps=2), epochs=2, verbose=0)
        out[f"device_{spe}"] = [ops.convert_to_numpy(w).tolist() for w in net.weights]
    json.dump(out, sys.stdout)
"""


def test_trainer_trains_on_the_batch_of_each_optimizer_step():
    out = run_jax(_STEPS, json.dumps(SMALL))
    for steps_per_execution in (1, 2):
        moved = 0.0
        for a, b, w0 in zip(out["plain"], out[f"device_{steps_per_execution}"], out["initial"]):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-4)
            moved = max(moved, float(np.abs(np.asarray(a) - np.asarray(w0)).max()))
        assert moved > 1e-2  # four Adam steps at 1e-2 moved the weights far more than the tolerance


_RESUME = """
    import json, sys
    import keras
    from dab_keras import zoo
    config = json.loads(sys.argv[1])
    folder, interrupt = sys.argv[2], sys.argv[3] == "interrupt"
    kwargs = dict(estimator="dab", samples=128 * 9, batch_size=128, steps_per_epoch=3, steps_per_execution=2,
                  verbose=0, config=config, evaluate_at_end=False, seed=5)
    if interrupt:
        on_epoch_end = keras.callbacks.CSVLogger.on_epoch_end

        def stop_after_first(self, epoch, logs=None):  # runs after BackupAndRestore saved the epoch
            on_epoch_end(self, epoch, logs)
            if epoch == 0:
                raise KeyboardInterrupt

        keras.callbacks.CSVLogger.on_epoch_end = stop_after_first
        try:
            zoo.train("sorter", output_dir=folder, **kwargs)
        except KeyboardInterrupt:
            pass
        keras.callbacks.CSVLogger.on_epoch_end = on_epoch_end
        keras.backend.clear_session()
        run = zoo.train("sorter", output_dir=folder, resume=True, **kwargs)
    else:
        run = zoo.train("sorter", output_dir=folder, **kwargs)
    rows = open(folder + "/log.csv").read().strip().splitlines()
    checkpoint = zoo.Sorter("dab", weights=None, **config)  # the checkpoint loads into a plain sorter
    checkpoint.load_weights(folder + "/checkpoint.weights.h5")
    json.dump({"weights": [keras.ops.convert_to_numpy(w).tolist() for w in run["model"].weights],
               "checkpoint": [keras.ops.convert_to_numpy(w).tolist() for w in checkpoint.weights],
               "epochs": [int(r.split(",")[0]) for r in rows[1:]]}, sys.stdout)
"""


def test_a_resumed_run_continues_the_stream_of_an_uninterrupted_one(tmp_path):
    whole = run_jax(_RESUME, json.dumps(SMALL), tmp_path / "whole", "whole")
    resumed = run_jax(_RESUME, json.dumps(SMALL), tmp_path / "resumed", "interrupt")
    assert whole["epochs"] == [0, 1, 2] and resumed["epochs"] == [0, 1, 2]
    for a, b, c in zip(whole["weights"], resumed["weights"], resumed["checkpoint"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(c), np.asarray(b))  # the last epoch's checkpoint


def test_stable_argsort_matches_numpy_with_ties_and_long_rows(rng):
    from dab_keras.zoo import device_data

    for shape in [(64, 10), (3, 5, 7), (8, 32), (4, 40)]:  # pairwise comparisons up to 32, sorting beyond
        x = rng.integers(0, 4, size=shape).astype("float32")  # many ties
        if shape == (4, 40):
            x = rng.random(shape).astype("float32")  # the sort branch: ties in `argsort` are backend-defined
        np.testing.assert_array_equal(np.asarray(device_data.stable_argsort(x)), np.argsort(x, -1, kind="stable"))
