"""Zoo runs over several devices and processes: JAX DataParallel on two virtual CPU devices, TensorFlow
MultiWorkerMirroredStrategy with two local workers, and who writes the run's files."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from jax_runs import SMALL, run_jax

from dab_keras.zoo import distribute

BACKEND = keras.backend.backend()

_DATA_PARALLEL = """
    import json, sys
    import jax, keras
    from dab_keras import zoo
    from dab_keras.zoo import distribute
    config = json.loads(sys.argv[1])
    out = {"devices": len(jax.devices())}
    for estimator in ("dab", "straight_through"):
        run = zoo.train("sorter", estimator=estimator, samples=256 * 12, batch_size=256, steps_per_epoch=4,
                        steps_per_execution=2, output_dir=f"{sys.argv[2]}/{estimator}", verbose=0, config=config,
                        evaluate_at_end=False)
        weights = run["model"].trainable_weights
        out[estimator] = [keras.ops.convert_to_numpy(w).tolist() for w in weights]
        out[estimator + "_placed_on"] = len(weights[0].value.sharding.device_set)
        out[estimator + "_strategy"] = json.load(open(run["manifest"]))["strategy"]
    keras.utils.set_random_seed(0)  # what train does before it builds the model
    out["initial"] = [keras.ops.convert_to_numpy(w).tolist()
                      for w in zoo.Sorter("straight_through", weights=None, **config).trainable_weights]
    try:
        distribute.resolve("data_parallel", 255)
    except ValueError as e:
        out["odd_batch"] = str(e)
    json.dump(out, sys.stdout)
"""


def test_data_parallel_on_two_cpu_devices_matches_one_device(tmp_path):
    two = run_jax(_DATA_PARALLEL, json.dumps(SMALL), tmp_path / "two",
                  env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    one = run_jax(_DATA_PARALLEL, json.dumps(SMALL), tmp_path / "one")
    assert two["devices"] == 2 and one["devices"] == 1
    for estimator in ("dab", "straight_through"):
        # Several devices: DataParallel without asking, the weights replicated on both devices.
        assert two[estimator + "_strategy"] == "data_parallel (automatic)" and two[estimator + "_placed_on"] == 2
        assert one[estimator + "_strategy"] is None and one[estimator + "_placed_on"] == 1
        for a, b in zip(one[estimator], two[estimator]):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-4)
    moved = max(float(np.abs(np.asarray(a) - np.asarray(w0)).max())
                for a, w0 in zip(one["straight_through"], one["initial"]))
    assert moved > 1e-2  # 12 Adam steps trained far beyond the tolerance
    assert "multiple of 2" in two["odd_batch"] and "batch_size=255" in two["odd_batch"]
    assert "odd_batch" not in one  # one device divides any batch


def test_resolve_rejects_unknown_strategies_and_other_backends():
    with pytest.raises(ValueError, match=r"one of \['data_parallel', 'mirrored', 'multi_worker'\].*strategy='tpu'"):
        distribute.resolve("tpu", 1024)
    other = {"tensorflow": ("data_parallel", "KERAS_BACKEND=jax"), "jax": ("mirrored", "KERAS_BACKEND=tensorflow")}
    strategy, needs = other[BACKEND]
    with pytest.raises(ValueError, match=needs):
        distribute.resolve(strategy, 1024)


@pytest.mark.tensorflow_only
def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.resolve("multi_worker", 1024)


def test_the_chief_is_the_chief_task_else_worker_zero():
    assert distribute.is_chief_task(None, None)
    assert distribute.is_chief_task("worker", 0) and not distribute.is_chief_task("worker", 1)
    assert distribute.is_chief_task("chief", 0, has_chief_job=True)
    assert not distribute.is_chief_task("worker", 0, has_chief_job=True)
    assert not distribute.is_chief_task("evaluator", 0)


def test_a_non_chief_writes_to_a_temporary_copy_and_removes_it(tmp_path):
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "training_metadata.json").write_text('{"epoch": 3}')
    chief = distribute.Placement(name="multi_worker", strategy=None, distribution=None, is_chief=True)
    worker = distribute.Placement(name="multi_worker", strategy=None, distribution=None, is_chief=False)
    assert chief.output_dir(run, resume=True) == run and chief.finish(run)
    fresh = worker.output_dir(run, resume=False)
    assert fresh != run and not (fresh / "backup").exists()
    resumed = worker.output_dir(run, resume=True)
    assert (resumed / "backup" / "training_metadata.json").read_text() == '{"epoch": 3}'  # the chief's epoch
    assert not worker.finish(resumed) and not resumed.exists()
    worker.finish(fresh)
    assert sorted(p.name for p in run.rglob("*")) == ["backup", "training_metadata.json"]  # untouched


def test_steps_per_execution_cap():
    placement = distribute.Placement(name=None, strategy=None, distribution=None, max_steps_per_execution=1)
    assert placement.steps_per_execution(50) == 1
    assert distribute.Placement(name=None, strategy=None, distribution=None).steps_per_execution(50) == 50


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_two_workers(output, tmp, *argv):
    ports = _free_ports(2)
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "KERAS_BACKEND": "tensorflow",
               "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dab_keras.zoo.cli", "train", "sorter", "--strategy", "multi_worker",
             "--estimator", "straight_through", "--batch-size", "256",
             "--output", str(output), "--quiet", *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp,
        ))
    return procs


def _two_workers(output, tmp, *argv):
    procs = _start_two_workers(output, tmp, *argv)
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-3000:]
            outs.append(out)
    finally:
        for proc in procs:
            proc.kill()
    return outs


def _logged_epochs(output):
    try:
        with open(output / "log.csv") as f:
            return [row["epoch"] for row in csv.DictReader(f)]
    except (FileNotFoundError, KeyError):
        return []


@pytest.mark.tensorflow_only
def test_multi_worker_run_on_two_local_workers_writes_from_the_chief(tmp_path):
    output, tmp = tmp_path / "run", tmp_path / "tmp"
    tmp.mkdir()
    chief, worker = _two_workers(output, tmp, "--epochs", "1", "--steps-per-epoch", "3")
    assert f"manifest: {output}" in chief and "not the chief" in worker and "manifest:" not in worker
    manifest = json.loads((output / "sorter-straight_through.json").read_text())
    assert manifest["strategy"] == "multi_worker" and manifest["steps"] == 3
    assert not any(tmp.iterdir())  # the non-chief's temporary folder is gone


@pytest.mark.tensorflow_only
def test_multi_worker_run_killed_after_an_epoch_resumes_on_both_workers(tmp_path):
    output, tmp = tmp_path / "run", tmp_path / "tmp"
    tmp.mkdir()
    argv = ("--epochs", "3", "--steps-per-epoch", "60")
    procs = _start_two_workers(output, tmp, *argv)
    try:
        deadline = time.monotonic() + 180
        while not _logged_epochs(output) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        for proc in procs:
            proc.kill()  # SIGKILL, as a lost machine would
            proc.communicate()
    done = _logged_epochs(output)
    if not done or len(done) == 3:
        pytest.skip(f"the workers were not stopped between epochs (logged epochs: {done})")
    shutil.rmtree(tmp)  # what the killed non-chief left behind
    tmp.mkdir()
    # Both workers continue from the chief's epoch (a non-chief starting over would leave the chief
    # waiting for it in the collective ops, and the run would time out).
    chief, worker = _two_workers(output, tmp, *argv, "--resume")
    assert _logged_epochs(output)[-1] == "2"
    metrics = [line for line in chief.splitlines() if line.startswith("per_position_accuracy")]
    assert metrics and metrics == [line for line in worker.splitlines() if line.startswith("per_position")]
    manifest = json.loads((output / "sorter-straight_through.json").read_text())
    assert manifest["steps"] == 180
    assert not any(tmp.iterdir())


def _jax_cli(output, env, *argv):
    environ = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    environ.pop("XLA_FLAGS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "dab_keras.zoo.cli", "train", "sorter", "--estimator", "straight_through",
         "--samples", "4096", "--batch-size", "512", "--steps-per-epoch", "4", "--lr", "0.05", "--output", str(output), "--quiet",
         *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ, cwd=output.parent,
    )


def test_data_parallel_over_two_jax_processes_matches_one_process(tmp_path):
    (port,) = _free_ports(1)
    cluster = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"localhost:{port}", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
               "TMPDIR": str(tmp_path)}
    procs = [_jax_cli(tmp_path / "two", {**cluster, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)}) for i in range(2)]
    procs.append(_jax_cli(tmp_path / "one", {}))
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-3000:]
            outs.append(out)
    finally:
        for proc in procs:
            proc.kill()
    assert "manifest:" in outs[0] and "not the chief" in outs[1]
    two = json.loads((tmp_path / "two" / "sorter-straight_through.json").read_text())
    assert two["strategy"] == "data_parallel (automatic)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # the non-chief left nothing behind
    from dab_keras.zoo import Sorter

    one = Sorter("straight_through", weights=str(tmp_path / "one" / "sorter-straight_through.weights.h5"))
    both = Sorter("straight_through", weights=str(tmp_path / "two" / "sorter-straight_through.weights.h5"))
    for a, b in zip(one.get_weights(), both.get_weights()):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)
    losses = {}
    for run in ("one", "two"):
        with open(tmp_path / run / "log.csv") as f:
            losses[run] = [float(row["loss"]) for row in csv.DictReader(f)]
    np.testing.assert_allclose(losses["two"], losses["one"], rtol=1e-5)
    assert len(losses["one"]) == 2 and abs(losses["one"][1] - losses["one"][0]) > 1e-2  # the runs trained
