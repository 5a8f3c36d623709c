"""Zoo training: run planning, recipes, and MirroredStrategy on two logical CPU devices."""

import json
import subprocess
import sys
import textwrap

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
