"""The generic `DAB(hard_fn)` layer: hard forward, the approximator's gradient, its loss and metric,
a user approximator used as given, and safe-mode saving of a registered `hard_fn`."""

import os

import helpers
import keras
import numpy as np
import pytest
from gradients import vjp

from dab_keras import estimators, layers

N = 4


@keras.saving.register_keras_serializable(package="dab_keras_tests", name="staircase")
def staircase(x):
    """A hard keras.ops function: x rounded to multiples of 0.5 and clipped to [-1, 1]."""
    return keras.ops.clip(keras.ops.round(2.0 * x) / 2.0, -1.0, 1.0)


def staircase_reference(x):
    return np.clip(np.round(2.0 * np.asarray(x, np.float64)) / 2.0, -1.0, 1.0)


def make_approximator():
    return keras.Sequential(
        [keras.layers.Dense(8, activation="tanh", name="hidden"), keras.layers.Dense(N, name="head")],
        name="my_approximator",
    )


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(scale=1.5, size=(8, N)).astype("float32")


@pytest.mark.parametrize("custom", [False, True], ids=["default_approximator", "custom_approximator"])
def test_forward_is_hard_fn_and_gradient_is_approximator_vjp(x, custom):
    layer = layers.Bridge(staircase, approximator=make_approximator() if custom else None)
    expected = staircase_reference(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), expected)
    upstream = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    y_train, grad = helpers.training_vjp(layer, x, upstream)
    np.testing.assert_array_equal(y_train, expected)  # the training forward is hard too
    expected_grad = vjp(lambda t: layer.approximator(t), x, upstream)
    assert np.any(expected_grad != 0)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_loss_and_metric(x):
    gamma = 2.5
    layer = layers.Bridge(staircase, gamma=gamma)
    layer(x, training=False)
    assert layer.losses == []  # no DAB loss at inference
    layer(x, training=True)
    g = keras.ops.convert_to_numpy(layer.approximator(x)).astype(np.float64)
    error = np.mean(np.sum((g - staircase_reference(x)) ** 2, axis=-1))
    assert len(layer.losses) == 1
    assert float(keras.ops.convert_to_numpy(layer.losses[0])) == 0.0  # the DAB loss's gradient only
    (metric,) = layer.estimator_state.reported_metrics()
    assert metric in layer.metrics
    results = {k: float(keras.ops.convert_to_numpy(v)) for k, v in metric.result().items()}
    # Two steps recorded: the inference call (g's error, no loss) and the training call, same error.
    np.testing.assert_allclose(results["approximation_error"], error, rtol=1e-5)
    np.testing.assert_allclose(results[f"{layer.name}_approximation_error"], error, rtol=1e-5)
    np.testing.assert_allclose(results["dab_loss"], gamma * error, rtol=1e-5)


def _model(layer):
    inputs = keras.Input((N,))
    pre = keras.layers.Dense(N, kernel_initializer="identity", name="pre")
    return keras.Model(inputs, layer(pre(inputs))), pre


def test_custom_approximator_copied_per_layer_and_trained(x):
    template = make_approximator()
    template.build((None, N))
    layer = layers.Bridge(staircase, approximator=template, gamma=1.0)
    assert layer.approximator is None and layer.estimator.approximator is template
    model, pre = _model(layer)
    approximator = layer.approximator
    assert approximator is not template and approximator.built and approximator.name == template.name
    # A built template's weights are copied: a pretrained approximator keeps its training.
    for a, b in zip(template.weights, approximator.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    before = [keras.ops.convert_to_numpy(w).copy() for w in approximator.weights]
    template_before = [keras.ops.convert_to_numpy(w).copy() for w in template.weights]
    pre_before = keras.ops.convert_to_numpy(pre.kernel).copy()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    history = model.fit(x, np.zeros_like(x), batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert layer.approximator is approximator and layer.estimator.approximator is template
    for b, w in zip(template_before, template.weights):  # the template is configuration, not trained
        np.testing.assert_array_equal(b, keras.ops.convert_to_numpy(w))
    assert all(not np.array_equal(b, keras.ops.convert_to_numpy(w)) for b, w in zip(before, approximator.weights))
    assert not np.array_equal(pre_before, keras.ops.convert_to_numpy(pre.kernel))
    assert np.isfinite(history.history[f"{layer.name}_approximation_error"][0])
    # The approximator's weights are the layer's (tracked once, trainable).
    assert {id(w) for w in approximator.weights} <= {id(w) for w in layer.trainable_weights}


def test_approximator_only_trained_by_dab_loss(x):
    """With gamma = 0 the task loss alone leaves the approximator untouched (gradients to x only)."""
    model, _ = _model(layers.Bridge(staircase, approximator=make_approximator(), gamma=0.0))
    approximator = model.layers[-1].approximator
    before = [keras.ops.convert_to_numpy(w).copy() for w in approximator.weights]
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(x, np.ones_like(x), batch_size=4, epochs=1, verbose=0)
    for b, w in zip(before, approximator.weights):
        np.testing.assert_array_equal(b, keras.ops.convert_to_numpy(w))


@pytest.mark.parametrize("custom", [False, True], ids=["default_approximator", "custom_approximator"])
def test_save_and_reload_in_safe_mode(x, tmp_path, custom):
    layer = layers.Bridge(staircase, approximator=make_approximator() if custom else None, gamma=3.0, name="bridge")
    model, _ = _model(layer)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(x, np.zeros_like(x), batch_size=4, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "dab.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    bridge = loaded.get_layer("bridge")
    assert bridge.hard_fn is staircase
    assert bridge.gamma == 3.0 and isinstance(bridge.estimator, estimators.DAB)
    assert helpers.as_json(bridge.get_config()) == helpers.as_json(layer.get_config())
    if custom:
        assert isinstance(bridge.approximator, keras.Sequential) and bridge.approximator.name == "my_approximator"
    for a, b in zip(layer.approximator.weights, bridge.approximator.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    # The reloaded bridge still trains through its approximator.
    upstream = np.ones_like(x)
    _, grad = helpers.training_vjp(bridge, x, upstream)
    np.testing.assert_allclose(grad, vjp(lambda t: bridge.approximator(t), x, upstream), rtol=1e-5, atol=1e-6)


def test_estimator_argument_is_refused():
    with pytest.raises(ValueError, match="always uses the DAB estimator.*Received: estimator='relaxed'"):
        layers.Bridge(staircase, estimator="relaxed")
