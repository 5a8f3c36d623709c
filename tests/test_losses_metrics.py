"""Spearman's rank correlation: the exact metric against SciPy, the soft-rank loss, serialization."""

import gradients
import keras
import numpy as np
import pytest

from dab_keras import losses, metrics

stats = pytest.importorskip("scipy.stats")


def spearman_rows(y_true, y_pred):
    out = []
    for t, p in zip(y_true, y_pred):
        rho = stats.spearmanr(t, p).statistic
        out.append(0.0 if np.isnan(rho) else rho)
    return np.asarray(out)


def test_metric_matches_scipy_spearmanr_with_ties(rng):
    y_true = rng.integers(0, 4, size=(20, 9)).astype("float32")
    y_pred = rng.normal(size=(20, 9)).astype("float32")
    y_pred[:5] = np.round(y_pred[:5])  # ties in predictions too
    y_true[0] = 1.0  # no spread: ρ undefined, counted as 0
    metric = metrics.SpearmanCorrelation()
    metric.update_state(y_true[:7], y_pred[:7])
    metric.update_state(y_true[7:], y_pred[7:])
    np.testing.assert_allclose(float(metric.result()), spearman_rows(y_true, y_pred).mean(), rtol=1e-5)


@pytest.mark.parametrize("relaxation", ["neuralsort", "softsort"])
def test_loss_tends_to_one_minus_spearman(rng, relaxation):
    y_true = rng.normal(size=(8, 10)).astype("float32")
    y_pred = rng.normal(size=(8, 10)).astype("float32")
    expected = 1.0 - spearman_rows(y_true, y_pred)
    loss = losses.SpearmanLoss(temperature=1e-4, relaxation=relaxation, reduction=None)
    np.testing.assert_allclose(np.asarray(loss(y_true, y_pred)), expected, atol=1e-4)
    np.testing.assert_allclose(float(losses.SpearmanLoss(1e-4, relaxation)(y_true, y_pred)), expected.mean(),
                               atol=1e-4)


def test_loss_gradient_matches_finite_differences_and_trains(rng):
    y_true = rng.normal(size=(2, 6)).astype("float32")
    loss = losses.SpearmanLoss(temperature=0.5, reduction=None, dtype=gradients.compute_dtype())
    x = rng.normal(size=(2, 6)).astype("float32")
    grad, _ = gradients.check_vjp(lambda v: loss(y_true, v), x)
    assert np.abs(grad).max() > 1e-3

    features = rng.normal(size=(256, 8, 3)).astype("float32")
    w = np.array([1.0, -2.0, 0.5], "float32")
    target = features @ w + 0.1 * rng.normal(size=(256, 8)).astype("float32")
    model = keras.Sequential([keras.Input((8, 3)), keras.layers.Dense(1), keras.layers.Reshape((8,))])
    model.compile(keras.optimizers.Adam(0.05), losses.SpearmanLoss(temperature=0.3),
                  metrics=[metrics.SpearmanCorrelation()], jit_compile=True)
    before = model.evaluate(features, target, verbose=0, return_dict=True)
    model.fit(features, target, epochs=10, batch_size=32, verbose=0)
    after = model.evaluate(features, target, verbose=0, return_dict=True)
    assert after["spearman_correlation"] > 0.85 and after["spearman_correlation"] > before["spearman_correlation"] + 0.3
    assert after["loss"] < before["loss"]


def test_loss_and_metric_serialize(tmp_path):
    loss = losses.SpearmanLoss(temperature=0.2, relaxation="softsort")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, losses.SpearmanLoss) and clone.temperature == 0.2 and clone.relaxation == "softsort"
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(5)])
    model.compile("sgd", loss, metrics=[metrics.SpearmanCorrelation()])
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(reloaded.loss, losses.SpearmanLoss) and reloaded.loss.temperature == 0.2
    with pytest.raises(ValueError, match="temperature"):
        losses.SpearmanLoss(temperature=0.0)
    with pytest.raises(ValueError, match="relaxation"):
        losses.SpearmanLoss(relaxation="sinkhorn")
