"""The bridge-dynamics diagnostic (`benchmarks/study/bridge_dynamics.py`): probe statistics, table, runner hook."""

import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dab_keras  # noqa: E402
from benchmarks.study import bridge_dynamics  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the diagnostic's gradients use tf.GradientTape")


def _model(hard_layer, inputs=3, width=4):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(width, name="encoder"), hard_layer,
                              keras.layers.Dense(2, name="head")])
    model(np.zeros((1, inputs), "float32"))
    return model


def _upstream(model, x_op, hard, labels):
    # ∂ mean cross-entropy / ∂ h for a linear head: (softmax(h W + b) - onehot) Wᵀ / N.
    head = model.get_layer("head")
    w, b = np.asarray(head.kernel, "float64"), np.asarray(head.bias, "float64")
    logits = hard @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return (p - np.eye(2)[labels]) @ w.T / len(labels)


def test_probe_statistics_of_a_dab_sign_with_a_linear_correction_match_the_hand_computation():
    kernel = np.random.default_rng(1).normal(0.0, 0.4, (4, 4)).astype("float32")
    correction = keras.layers.Dense(4, use_bias=False, name="approximator")
    correction.build((None, 4))
    correction.kernel.assign(kernel)
    model = _model(dab_keras.layers.Sign(estimator=dab_keras.estimators.DAB(approximator=correction)))
    images = np.random.default_rng(2).normal(size=(8, 3)).astype("float32")
    labels = np.array([0, 1] * 4)
    stats = bridge_dynamics.probe_statistics(model, images, labels)

    encoder = model.get_layer("encoder")
    x = images.astype("float64") @ np.asarray(encoder.kernel, "float64") + np.asarray(encoder.bias, "float64")
    hard = np.sign(x)
    u = _upstream(model, x, hard, labels)
    b = u @ (np.eye(4) + kernel.T.astype("float64"))  # Jᵀu for g = x + x W
    gain = np.linalg.norm(b, axis=1) / np.linalg.norm(u, axis=1)
    cos = np.sum(b * u, 1) / (np.linalg.norm(b, axis=1) * np.linalg.norm(u, axis=1))
    g = x + x @ kernel
    assert stats["gain"] == pytest.approx(gain.mean(), rel=1e-4)
    assert stats["cos"] == pytest.approx(cos.mean(), rel=1e-4)
    assert stats["error"] == pytest.approx(np.mean(np.sum((g - hard) ** 2, 1)), rel=1e-4)
    assert stats["surrogate_error"] == pytest.approx(np.mean(np.sum((x - hard) ** 2, 1)), rel=1e-4)  # identity
    assert stats["h/x"] == pytest.approx(np.sqrt(np.mean(hard**2) / np.mean(x**2)), rel=1e-4)
    assert "own/task" not in stats  # Sign has no loss of its own


def test_probe_statistics_of_straight_through_vector_quantize_compare_the_commitment_gradient():
    layer = dab_keras.layers.VectorQuantize(num_codes=3, code_dim=4, commitment_cost=0.25)
    model = _model(layer)
    images = np.random.default_rng(3).normal(size=(5, 3)).astype("float32")
    labels = np.array([0, 1, 1, 0, 1])
    stats = bridge_dynamics.probe_statistics(model, images, labels)

    encoder = model.get_layer("encoder")
    x = images.astype("float64") @ np.asarray(encoder.kernel, "float64") + np.asarray(encoder.bias, "float64")
    codebook = np.asarray(layer.codebook, "float64")
    hard = codebook[np.argmin(((x[:, None, :] - codebook[None]) ** 2).sum(-1), axis=1)]
    u = _upstream(model, x, hard, labels)  # the identity straight-through sends u back unchanged
    commitment = 2 * 0.25 * (x - hard) / x.size  # ∂ β·mean((x - sg(q))²) / ∂x
    assert stats["gain"] == pytest.approx(1.0, rel=1e-5)
    assert stats["cos"] == pytest.approx(1.0, rel=1e-5)
    assert stats["own/task"] == pytest.approx(np.linalg.norm(commitment) / np.linalg.norm(u), rel=1e-4)
    assert "error" not in stats


def test_probe_statistics_of_straight_through_argmax_measure_the_softmax_surrogate():
    model = _model(dab_keras.layers.ArgMax())  # straight-through: softmax(x / 1)'s Jacobian
    images = np.random.default_rng(4).normal(size=(6, 3)).astype("float32")
    labels = np.array([0, 1, 1, 0, 1, 0])
    stats = bridge_dynamics.probe_statistics(model, images, labels)

    encoder = model.get_layer("encoder")
    x = images.astype("float64") @ np.asarray(encoder.kernel, "float64") + np.asarray(encoder.bias, "float64")
    hard = np.eye(4)[np.argmax(x, 1)]
    s = np.exp(x - x.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    u = _upstream(model, x, hard, labels)
    b = np.stack([(np.diag(si) - np.outer(si, si)) @ ui for si, ui in zip(s, u)])  # softmax's Jacobian is symmetric
    assert stats["surrogate_error"] == pytest.approx(np.mean(np.sum((s - hard) ** 2, 1)), rel=1e-4)
    assert stats["gain"] == pytest.approx(np.mean(np.linalg.norm(b, axis=1) / np.linalg.norm(u, axis=1)), rel=1e-3)


def test_table_reads_the_former_identity_error_as_the_surrogate_error():
    records = [{"estimator": "straight_through", "seed": s, "budgets": {"0": {"accuracy": 0.5, key: value}}}
               for s, (key, value) in enumerate([("identity_error", 2.0), ("surrogate_error", 4.0)])]
    markdown = bridge_dynamics.table(records, ["straight_through"], [0])
    header, _, row = markdown.splitlines()
    column = [c.strip() for c in header.strip("|").split("|")].index("surrogate_error")
    assert [c.strip() for c in row.strip("|").split("|")][column] == "3"


def test_table_pairs_by_seed_against_the_first_estimator():
    def record(estimator, seed, accuracy, gain):
        return {"estimator": estimator, "seed": seed, "budgets": {"100": {"accuracy": accuracy, "gain": gain}}}

    records = [record("straight_through", 0, 0.90, 1.0), record("straight_through", 1, 0.80, 1.0),
               record("dab", 0, 0.88, 0.5), record("dab", 1, 0.79, 0.3)]
    markdown = bridge_dynamics.table(records, ["straight_through", "dab"], [100])
    rows = [line for line in markdown.splitlines() if line.startswith("| dab ")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2].startswith("83.5 ± ")  # mean of 88 and 79
    assert cells[3].startswith("-1.5 ± ")  # paired: -2 and -1
    assert cells[4] == "0.4"  # mean gain


def test_train_run_adds_the_probe_to_each_budgets_metrics():
    from benchmarks.study import runner, tasks

    rng = np.random.default_rng(0)
    data = {"x_train": rng.uniform(size=(64, 784)).astype("float32"), "y_train": rng.integers(0, 10, 64),
            "x_test": rng.uniform(size=(16, 784)).astype("float32"), "y_test": rng.integers(0, 10, 16)}
    seen = []

    def probe(model):
        seen.append(model.optimizer.iterations.numpy().item())
        return {"steps_seen": seen[-1]}

    evaluations, _ = runner.train_run(tasks.TASKS["mnist_mlp_sign"], "straight_through", 0, [0, 2], data, probe=probe)
    assert seen == [0, 2]
    assert evaluations[2][0]["steps_seen"] == 2.0 and "test accuracy" in evaluations[2][0]


def test_bridge_command_names_the_bad_argument(tmp_path, capsys):
    from benchmarks.study.__main__ import main

    code = main(["bridge", "--data", str(tmp_path / "missing.npz"), "--task", "mnist_mlp_nope",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "`--task` must be one of" in err and "mnist_mlp_vq_small_codebook" in err
    assert "`--data` must be an MNIST .npz file" in err
    assert not (tmp_path / "out").exists()
