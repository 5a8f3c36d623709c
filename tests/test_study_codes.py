"""The classifier code diagnostic (`benchmarks/study/code_gradients.py`): Jacobian statistics, McNemar."""

import math
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dab_keras  # noqa: E402
from benchmarks.study import code_gradients  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the diagnostic's Jacobians use tf.GradientTape")


def _sign_with_linear_correction(kernel, residual=True):
    # A DAB whose approximator is a bias-free Dense layer: g(x) = x + x·W (residual) or x·W.
    correction = keras.layers.Dense(kernel.shape[1], use_bias=False, name="approximator")
    correction.build((None, kernel.shape[0]))
    correction.kernel.assign(kernel)
    layer = dab_keras.layers.Sign(estimator=dab_keras.estimators.DAB(approximator=correction, residual=residual))
    layer(np.zeros((1, kernel.shape[0]), "float32"))
    return layer


def test_bridge_statistics_of_a_linear_correction_match_the_hand_computed_jacobian():
    rng = np.random.default_rng(0)
    kernel = rng.normal(0.0, 0.3, (4, 4)).astype("float32")
    layer = _sign_with_linear_correction(kernel)
    x = rng.normal(size=(6, 4)).astype("float32")
    u = rng.normal(size=(6, 4))
    stats = code_gradients.bridge_statistics(layer, x, u)

    jacobian = np.eye(4) + kernel.T.astype("float64")  # J[o, i] = d g_o / d x_i for g = x + x W
    bridged = u @ jacobian  # J^T u per row
    gain = np.linalg.norm(bridged, axis=1) / np.linalg.norm(u, axis=1)
    cos = np.sum(bridged * u, axis=1) / (np.linalg.norm(bridged, axis=1) * np.linalg.norm(u, axis=1))
    diag = np.diag(jacobian)
    off = np.linalg.norm(jacobian - np.diag(diag)) / np.linalg.norm(diag)
    g = x + x @ kernel
    error = np.mean(np.sum((g - np.sign(x)) ** 2, axis=1))
    assert stats["gain"] == pytest.approx(gain.mean(), rel=1e-5)
    assert stats["cos"] == pytest.approx(cos.mean(), rel=1e-5)
    assert stats["diag"] == pytest.approx(diag.mean(), rel=1e-5)
    assert stats["off_diag"] == pytest.approx(off, rel=1e-5)
    assert stats["error"] == pytest.approx(error, rel=1e-5)


def test_an_unfitted_residual_bridge_is_straight_through():
    layer = _sign_with_linear_correction(np.zeros((3, 3), "float32"))
    x = np.array([[0.5, -0.2, 0.9], [-0.7, 0.1, 0.3]], "float32")
    stats = code_gradients.bridge_statistics(layer, x, np.array([[1.0, -2.0, 0.5], [0.3, 0.3, -1.0]]))
    assert stats["gain"] == pytest.approx(1.0)
    assert stats["cos"] == pytest.approx(1.0)
    assert stats["diag"] == pytest.approx(1.0)
    assert stats["off_diag"] == 0.0
    assert stats["error"] == pytest.approx(np.mean(np.sum((x - np.sign(x)) ** 2, axis=1)), rel=1e-6)


def test_the_paper_dab_bridges_through_the_network_alone():
    kernel = np.diag([2.0, 0.5]).astype("float32")  # g = x·W, diagonal: J = W
    layer = _sign_with_linear_correction(kernel, residual=False)
    stats = code_gradients.bridge_statistics(layer, np.array([[0.3, -0.4]], "float32"), np.array([[1.0, 1.0]]))
    assert stats["diag"] == pytest.approx(1.25)
    assert stats["off_diag"] == 0.0
    assert stats["gain"] == pytest.approx(math.sqrt(4.25 / 2.0), rel=1e-6)


def test_gain_and_cosine_per_row_leave_out_rows_without_a_gradient():
    upstream = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    bridged = np.array([[3.0, 0.0], [2.0, 0.0], [5.0, 5.0]])  # row 0: 3× along u; row 1: same length, turned 90°
    out = code_gradients.gain_and_cosine(bridged, upstream)
    assert out["gain"] == pytest.approx((3.0 + 1.0) / 2)
    assert out["cos"] == pytest.approx((1.0 + 0.0) / 2)
    widened = code_gradients.gain_and_cosine(np.ones((2, 3)), np.array([[0.0, 2.0], [1.0, 0.0]]))
    assert widened == {"gain": pytest.approx(np.sqrt(3) * 0.75)} and "cos" not in widened


def test_discordant_counts_and_mcnemar_z():
    reference = np.array([1, 1, 1, 0, 0, 1], bool)
    other = np.array([1, 0, 0, 1, 0, 1], bool)
    assert code_gradients.discordant(reference, other) == (2, 1)
    assert code_gradients.mcnemar_z(2, 1) == pytest.approx(-1 / math.sqrt(3))
    assert code_gradients.mcnemar_z(0, 0) == 0.0
    with pytest.raises(ValueError, match="same images"):
        code_gradients.discordant(reference, other[:3])


def test_parse_runs_orders_straight_through_first_and_names_bad_arguments():
    runs = code_gradients.parse_runs(["dab=a.h5", "straight_through=b.h5", "dab=c.h5", "straight_through=d.h5"])
    assert list(runs) == ["straight_through", "dab"]
    assert runs["dab"] == ["a.h5", "c.h5"]
    with pytest.raises(ValueError, match="KIND=WEIGHTS"):
        code_gradients.parse_runs(["dab"])
    with pytest.raises(ValueError, match="must be one of"):
        code_gradients.parse_runs(["gumbel=a.h5"])
    with pytest.raises(ValueError, match="as many runs"):
        code_gradients.parse_runs(["straight_through=a.h5", "dab=b.h5", "dab=c.h5"])


def test_report_pools_discordant_pairs_over_seeds():
    def row(correct, **extra):
        return {"accuracy": float(np.mean(correct)), "correct": np.asarray(correct, bool), "identity_error": 1.0,
                **extra}

    measured = {
        "straight_through": [row([1, 1, 0, 1]), row([1, 1, 1, 1])],
        "dab": [row([1, 0, 1, 1], error=0.5, gain=1.1, cos=0.9, diag=1.0, off_diag=0.2),
                row([0, 1, 1, 1], error=0.7, gain=1.3, cos=0.8, diag=1.2, off_diag=0.4)],
    }
    table = code_gradients.report(measured)
    assert "| straight_through | 87.50 (75.00 / 100.00) | – |" in table
    # Seed 0: ST only 1, DAB only 1; seed 1: ST only 1 → pooled 2 / 1.
    assert f"| dab | 75.00 (75.00 / 75.00) | 2 / 1 ({-1 / math.sqrt(3):+.2f}) | 0.60 (1.00) | 1.200 |" in table


def test_command_line_measures_shipped_classifiers(tmp_path, fake_mnist):
    from benchmarks.study.__main__ import main

    data = fake_mnist(3, 12)
    from dab_keras.zoo import weights as zoo_weights

    weights = zoo_weights.WEIGHTS_DIR
    out = tmp_path / "codes.md"
    rc = main(["codes", "--data", str(data), "--jacobian-images", "5", "--output", str(out),
               "--run", f"dab={weights}/mnist_classifier-dab.weights.h5",
               "--run", f"straight_through={weights}/mnist_classifier-straight_through.weights.h5"])
    assert rc == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| straight_through") or
            line.startswith("| dab")]
    assert [r.split("|")[1].strip() for r in rows] == ["straight_through", "dab"]
    cells = rows[1].split("|")
    assert all(float(cells[i]) > 0 for i in (5, 6, 7))  # gain, cos, diag were measured


def test_classifier_screen_splits_the_training_set_and_pairs_differences(tmp_path):
    from benchmarks.study import classifier_screen, stats, tasks

    rng = np.random.default_rng(0)
    n = tasks.HELD_OUT + 5
    source = tmp_path / "mnist.npz"
    x = rng.integers(0, 256, (n, 28, 28), dtype="uint8")
    y = rng.integers(0, 10, n)
    np.savez(source, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    split = np.load(classifier_screen.split_file(str(source), str(tmp_path)))
    assert np.array_equal(split["x_train"], x[:5]) and np.array_equal(split["y_test"], y[5:])

    accuracy = {"straight_through": {0: 0.990, 1: 0.992}, "dab_residual": {0: 0.991, 1: 0.995}}
    table = classifier_screen.table(accuracy, [0, 1])
    mean, half, _ = stats.mean_interval([0.1, 0.3])
    assert "| straight_through | 99.00 / 99.20 | 99.100 | – |" in table
    assert f"| dab_residual | 99.10 / 99.50 | 99.300 | {mean:+.3f} ± {half:.3f} |" in table
