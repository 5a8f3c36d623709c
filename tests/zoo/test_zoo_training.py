"""Zoo training: run planning, recipes, and MirroredStrategy on two logical CPU devices."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from dab_keras.zoo import registry, task, training


def test_plan_turns_samples_into_whole_epochs_of_steps():
    sorter = registry.get("sorter")
    assert training.plan(sorter, 1024, samples=400_000_000, steps_per_epoch=1000, synthetic=True) == (391, 1000)
    assert training.plan(sorter, 256, samples=1024, steps_per_epoch=1000, synthetic=True) == (1, 4)
    assert training.plan(sorter, 256, epochs=3, steps_per_epoch=10, synthetic=True) == (3, 10)
    assert training.plan(sorter, 100, samples=120_000, epoch_size=60_000) == (2, None)
    assert training.plan(sorter, 100, samples=170_000, epoch_size=60_000, steps_per_epoch=600) == (3, 600)
    with pytest.raises(ValueError, match="either `samples` or `epochs`"):
        training.plan(sorter, 256, samples=1024, epochs=1, steps_per_epoch=10)
    with pytest.raises(ValueError, match="at least the batch size"):
        training.plan(sorter, 256, samples=100, steps_per_epoch=10, synthetic=True)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        training.plan(sorter, 256, samples=4096, synthetic=True)


def test_check_arguments_keeps_dab_residual_only_when_true():
    sorter = registry.get("sorter")
    assert training.check_arguments(sorter, config={"dab_residual": True})["config"] == {"dab_residual": True}
    # False is the default: the same run (run.json, folder, manifest) as without it.
    assert training.check_arguments(sorter, config={"dab_residual": False, "length": 5})["config"] == {"length": 5}
    with pytest.raises(ValueError, match=r"`dab_residual` must be a bool. Received: dab_residual='yes'"):
        training.check_arguments(sorter, config={"dab_residual": "yes"})
    with pytest.raises(ValueError, match=r"needs estimator='dab'.*Received: estimator='relaxed'"):
        training.check_arguments(sorter, estimator="relaxed", config={"dab_residual": True})


def test_cosine_schedule_warms_up_then_decays_to_zero():
    schedule = task.cosine_schedule(1e-3, total_steps=100, warmup_steps=10)
    lrs = np.array([float(schedule(step)) for step in (0, 5, 10, 55, 100)])
    np.testing.assert_allclose(lrs, [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-9)


def test_train_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="strategy"):
        training.train("sorter", samples=1024, batch_size=256, strategy="tpu", output_dir=tmp_path, verbose=0)
    with pytest.raises(ValueError, match="learning_rate"):
        training.train("sorter", samples=1024, learning_rate=-1.0, output_dir=tmp_path, verbose=0)
    for bad in (0, -8):
        with pytest.raises(ValueError, match="batch_size"):
            training.train("sorter", samples=1024, batch_size=bad, output_dir=tmp_path, verbose=0)


_MIRRORED = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from dab_keras import zoo
    config = {"length": 6, "hidden_units": (32,), "latent_units": 24, "approximator_units": (8,)}
    out = {}
    for strategy in (None, "mirrored"):
        r = zoo.train("sorter", estimator=sys.argv[1], samples=256 * 12, batch_size=256, strategy=strategy,
                      output_dir=sys.argv[2] + f"/{strategy}", verbose=0, steps_per_execution=1, config=config)
        out[str(strategy)] = [keras.ops.convert_to_numpy(w).tolist() for w in r["model"].trainable_weights]
        out[str(strategy) + "_replicas"] = r["model"].distribute_strategy.num_replicas_in_sync
    keras.utils.set_random_seed(0)  # what train does before it builds the model
    out["initial"] = [keras.ops.convert_to_numpy(w).tolist() for w in zoo.Sorter(sys.argv[1], weights=None, **config).trainable_weights]
    json.dump(out, sys.stdout)
    """
)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("estimator", ["dab", "straight_through"])
def test_mirrored_strategy_on_two_cpus_matches_one_device(estimator, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED, estimator, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mirrored_replicas"] == 2 and out["None_replicas"] == 1
    single, mirrored = out["None"], out["mirrored"]
    assert len(single) == len(mirrored)
    moved = 0.0
    for a, b, w0 in zip(single, mirrored, out["initial"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-4, rtol=1e-3)
        moved = max(moved, float(np.abs(np.asarray(a) - np.asarray(w0)).max()))
    assert moved > 1e-2  # both runs trained (12 Adam steps), and they agree far more closely than that


# A small sorter trained for 5 epochs of 3 steps; `interrupt` stops it during epoch 3 with a real signal.
_RESUME = textwrap.dedent(
    """
    import json, os, signal, sys
    import keras
    import numpy as np
    from dab_keras import zoo

    mode, out = sys.argv[1], sys.argv[2]
    # Ctrl-C's KeyboardInterrupt, as in a terminal: a job started in the background by a non-interactive
    # shell (`pytest ... &`) inherits SIGINT ignored, and Python then installs no handler for it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    kwargs = dict(estimator="dab", samples=64 * 15, batch_size=64, steps_per_epoch=3, steps_per_execution=1,
                  verbose=0, evaluate_at_end=False,
                  config={"length": 6, "hidden_units": (32,), "latent_units": 24, "approximator_units": (8,)})

    class Interrupt(keras.callbacks.Callback):
        def __init__(self, sig):
            super().__init__()
            self.sig, self.epoch = sig, 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                # raise_signal delivers to this (the main) thread and runs Python's handler before it returns,
                # so SIGINT's KeyboardInterrupt is raised here; os.kill may hand the signal to any thread.
                signal.raise_signal(self.sig)

    def weights(run):
        return [keras.ops.convert_to_numpy(w).tolist() for w in run["model"].weights]

    if mode == "full":
        result = weights(zoo.train("sorter", output_dir=out + "/full", **kwargs))
    elif mode == "sigint":  # Ctrl-C in the middle of epoch 3, then the same call with resume=True
        try:
            zoo.train("sorter", output_dir=out + "/int", callbacks=[Interrupt(signal.SIGINT)], **kwargs)
            raise SystemExit("not interrupted")
        except KeyboardInterrupt:
            pass
        result = weights(zoo.train("sorter", output_dir=out + "/int", resume=True, **kwargs))
    elif mode == "sigkill":  # the process dies in the middle of epoch 3
        zoo.train("sorter", output_dir=out + "/kill", callbacks=[Interrupt(signal.SIGKILL)], **kwargs)
        raise SystemExit("not killed")
    else:
        result = weights(zoo.train("sorter", output_dir=out + "/kill", resume=True, **kwargs))
    print(json.dumps(result))
    """
)


def _resume_script(mode, folder):
    import keras

    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    return subprocess.run([sys.executable, "-c", _RESUME, mode, str(folder)], capture_output=True, text=True,
                          timeout=300, env=env)


def _last_json(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_stopped_by_sigint_or_sigkill_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    # steps_per_epoch=3 is not the recipe's 1000: the resumed data stream must start at step 3 * epoch.
    full = _last_json(_resume_script("full", tmp_path))
    interrupted = _last_json(_resume_script("sigint", tmp_path))
    killed = _resume_script("sigkill", tmp_path)
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((tmp_path / "kill" / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    resumed = _last_json(_resume_script("resume", tmp_path))
    moved = 0.0
    for a, b, c in zip(full, interrupted, resumed, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=0, atol=1e-6)
        moved = max(moved, float(np.abs(np.asarray(a)).max()))
    assert moved > 0
    for run in ("full", "int", "kill"):
        manifest = json.loads((tmp_path / run / "sorter-dab.json").read_text())
        assert manifest["steps"] == 15 and manifest["samples_seen"] == 64 * 15
        with open(tmp_path / run / "log.csv") as f:
            assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2, 3, 4]


_SMALL = {"length": 6, "hidden_units": (32,), "latent_units": 24, "approximator_units": (8,)}


class _PoisonWeights(keras.callbacks.Callback):
    """Makes the output layer's kernel NaN at the start of epoch 3 (as a diverging learning rate would)."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            sync = getattr(self.model, "jax_state_sync", None)
            if sync is not None:
                sync()
            kernel = self.model.get_layer("scores").kernel
            kernel.assign(kernel * float("nan"))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(training.NonFiniteLossError, match=r"loss=nan in epoch 3; the last good state \(epoch 2\)"):
        training.train("sorter", estimator="straight_through", samples=64 * 15, batch_size=64, steps_per_epoch=3,
                       output_dir=tmp_path, verbose=0, config=_SMALL, callbacks=[_PoisonWeights()])
    assert not (tmp_path / "sorter-straight_through.json").exists()
    assert not (tmp_path / "sorter-straight_through.weights.h5").exists()
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 2  # 2 done
    model = registry.get("sorter").build("straight_through", weights=str(tmp_path / "checkpoint.weights.h5"),
                                         **_SMALL)
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)
    with open(tmp_path / "log.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1]


class _EpochEnds(keras.callbacks.Callback):
    """Records the model's weights at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        self.weights.append([np.array(keras.ops.convert_to_numpy(w)) for w in self.model.weights])


class _StopBefore(keras.callbacks.Callback):
    """Stops the run when epoch `epoch` (0-based) begins, after the previous one is saved."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("stopped")


def test_checkpoint_every_keeps_the_weights_of_every_nth_epoch_and_resume_adds_to_them(tmp_path):
    ends = _EpochEnds()
    kwargs = dict(estimator="straight_through", samples=64 * 15, batch_size=64, steps_per_epoch=3,
                  output_dir=tmp_path, verbose=0, config=_SMALL)  # 5 epochs
    with pytest.raises(RuntimeError, match="stopped"):
        training.train("sorter", checkpoint_every=3, callbacks=[ends, _StopBefore(3)], **kwargs)
    folder = tmp_path / training.CHECKPOINTS_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-003.weights.h5"]
    # Resumed with another period: the kept file stays, the new ones come at the new period's epochs.
    training.train("sorter", checkpoint_every=2, callbacks=[ends], resume=True, **kwargs)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-003.weights.h5", "epoch-004.weights.h5"]
    assert len(ends.weights) == 5
    for epoch in (3, 4):
        model = registry.get("sorter").build(
            "straight_through", weights=str(training.epoch_weights_path(tmp_path, epoch)), **_SMALL)
        for kept, recorded in zip(model.weights, ends.weights[epoch - 1], strict=True):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(kept), recorded)
    assert any(not np.array_equal(a, b) for a, b in zip(ends.weights[2], ends.weights[3]))  # the epochs differ
    with pytest.raises(ValueError, match=r"`checkpoint_every` must be a whole number >= 1. Received: checkpoint_every=0"):
        training.train("sorter", checkpoint_every=0, **{**kwargs, "output_dir": tmp_path / "other"})


def _scalar_tags(log_dir):
    import tensorflow as tf

    tags = set()
    for path in log_dir.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_tensorboard_gets_temperatures_approximation_errors_and_a_schedule_given_in_any_order(tmp_path):
    pytest.importorskip("tensorboard")
    from dab_keras import callbacks as dab_callbacks

    schedule = dab_callbacks.TemperatureSchedule(dab_callbacks.exponential_decay(1.0, 0.5))
    for estimator in ("relaxed", "dab"):
        training.train("sorter", estimator=estimator, samples=64 * 6, batch_size=64, steps_per_epoch=3,
                       output_dir=tmp_path / estimator, verbose=0, config=_SMALL, tensorboard=True,
                       callbacks=[schedule] if estimator == "relaxed" else None, evaluate_at_end=False)
    relaxed = _scalar_tags(tmp_path / "relaxed" / "tensorboard")
    assert {"epoch_loss", "epoch_learning_rate", "epoch_sign_temperature", "epoch_temperature"} <= relaxed
    assert "epoch_sign_approximation_error" in _scalar_tags(tmp_path / "dab" / "tensorboard")
    with open(tmp_path / "relaxed" / "log.csv") as f:
        assert [float(row["sign_temperature"]) for row in csv.DictReader(f)] == [1.0, 0.5]


def test_each_hard_layer_logs_its_temperature_once(tmp_path):
    training.train("sorter", estimator="relaxed", samples=64 * 3, batch_size=64, steps_per_epoch=3,
                   output_dir=tmp_path, verbose=0, config=_SMALL, evaluate_at_end=False)
    with open(tmp_path / "log.csv") as f:
        columns = next(csv.reader(f))
    assert [c for c in columns if c.endswith("temperature") and not c.startswith("val_")] == ["sign_temperature"]


class _SlowFirstEpoch(keras.callbacks.Callback):
    """Adds 2 s to the first epoch, as compilation does."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            time.sleep(2.0)


def test_samples_per_second_is_the_steady_speed_without_the_first_epoch(tmp_path):
    run = training.train("sorter", estimator="straight_through", samples=64 * 12, batch_size=64, steps_per_epoch=3,
                         output_dir=tmp_path, verbose=0, config=_SMALL, callbacks=[_SlowFirstEpoch()],
                         evaluate_at_end=False)
    manifest = json.loads(run["manifest"].read_text())
    epochs = json.loads((tmp_path / "run.json").read_text())["epochs"]
    assert [e["first"] for e in epochs] == [True, False, False, False] and epochs[0]["seconds"] >= 2.0
    later = sum(e["seconds"] for e in epochs[1:])
    assert manifest["samples_per_second"] == round(9 * 64 / later)
    assert manifest["train_seconds"] >= 2.0 and manifest["samples_per_second"] > 3 * 64 * 12 / manifest["train_seconds"]


_VAE_SMALL = {"groups": 3, "categories": 4, "hidden_units": [16]}


def _fake_mnist(path, n_train=200, n_test=20):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 28, 28), dtype="uint8"), y_train=np.zeros(n_train),
             x_test=rng.integers(0, 256, (n_test, 28, 28), dtype="uint8"), y_test=np.zeros(n_test))
    return path


def _values(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


def test_a_vae_run_resumes_its_latent_noise_and_ends_at_the_uninterrupted_runs_weights(tmp_path):
    # The VAE draws its latent noise from a SeedGenerator, whose state no weights file holds: the backup
    # keeps it, so the resumed run draws the noise the uninterrupted one drew.
    data = _fake_mnist(tmp_path / "mnist.npz")
    kwargs = dict(estimator="straight_through", epochs=3, batch_size=50, data=str(data), verbose=0,
                  config=_VAE_SMALL, evaluate_at_end=False)
    full = _values(training.train("discrete_vae", output_dir=tmp_path / "full", **kwargs)["model"])
    for run in ("cut", "lost"):
        with pytest.raises(RuntimeError, match="stopped"):
            training.train("discrete_vae", output_dir=tmp_path / run, callbacks=[_StopBefore(2)], **kwargs)
        assert (tmp_path / run / "backup" / training.SEED_STATES_FILE).is_file()
    resumed = _values(training.train("discrete_vae", output_dir=tmp_path / "cut", resume=True, **kwargs)["model"])
    for a, b in zip(full, resumed, strict=True):
        np.testing.assert_array_equal(b, a)
    # Without the states the resumed run starts its draws over: it says so, and ends elsewhere.
    (tmp_path / "lost" / "backup" / training.SEED_STATES_FILE).unlink()
    with pytest.warns(UserWarning, match="random-seed states .* missing or not those of the backup's epoch 2"):
        lost = _values(training.train("discrete_vae", output_dir=tmp_path / "lost", resume=True, **kwargs)["model"])
    assert any(not np.array_equal(a, b) for a, b in zip(full, lost))
