"""`dab_keras.summary` and `dab_keras.export_inference`: training-only state counted apart and dropped."""

import io
import os

import keras
import numpy as np
import pytest

import dab_keras
from dab_keras import layers

FACTORIES = {
    "sign": (lambda e: layers.Sign(margin=0.1, estimator=e), (6,)),
    "quantize": (lambda e: layers.Quantize(levels=4, estimator=e), (6,)),
    "vq": (lambda e: layers.VectorQuantize(num_codes=5, code_dim=3, estimator=e), (2, 3)),
    "argmax": (lambda e: layers.ArgMax(stochastic=True, seed=1, estimator=e), (6,)),
    "topk": (lambda e: layers.TopK(k=2, estimator=e), (6,)),
    "sort_permutation": (lambda e: layers.Sort(output_mode="permutation", estimator=e), (6,)),
}


@keras.saving.register_keras_serializable(package="dab_keras_tests", name="halve_floor")
def halve_floor(x):
    return keras.ops.floor(x / 2.0)


def model_with(layer_name, estimator):
    factory, shape = FACTORIES[layer_name]
    inputs = keras.Input(shape)
    hidden = keras.layers.Dense(shape[-1], name="before")(inputs)
    hard = factory(estimator)
    flat = keras.layers.Flatten()(hard(hidden))
    bridged = keras.layers.Flatten()(layers.Bridge(halve_floor, gamma=3.0, name="bridge")(hidden))
    outputs = keras.layers.Dense(2, name="after")(keras.layers.Concatenate()([flat, bridged]))
    return keras.Model(inputs, outputs), hard


@pytest.mark.parametrize("estimator", ["straight_through", "relaxed", "dab"])
@pytest.mark.parametrize("layer_name", sorted(FACTORIES))
def test_export_drops_estimator_state_and_keeps_outputs(layer_name, estimator, tmp_path):
    model, hard = model_with(layer_name, estimator)
    x = np.random.default_rng(0).normal(size=(8, *FACTORIES[layer_name][1])).astype("float32")
    exported = dab_keras.export_inference(model)
    paths = [w.path for w in exported.weights]
    assert not [p for p in paths if "approximator" in p or "temperature" in p or "estimator_state" in p], paths
    assert not [v for v in exported.variables if "sums" in v.path]
    info = dab_keras.summary(model, print_fn=lambda text: None)
    assert exported.count_params() == info["inference_params"]
    assert info["training_only_params"] == sum(
        int(np.prod(w.shape)) for layer in (hard, model.get_layer("bridge")) for w in layer.estimator_state.weights
    )
    np.testing.assert_array_equal(exported.predict(x, verbose=0), model.predict(x, verbose=0))
    path = os.path.join(tmp_path, "exported.keras")
    exported.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert reloaded.count_params() == exported.count_params()


def test_summary_lists_estimator_temperature_gamma_and_approximator():
    model, _ = model_with("argmax", dab_keras.estimators.Relaxed(temperature=0.5))
    model(np.zeros((1, 6), "float32"))
    text = io.StringIO()
    info = dab_keras.summary(model, print_fn=text.write)
    rows = {row["op"]: row for row in info["layers"]}
    assert rows["ArgMax"]["estimator"] == "Relaxed" and rows["ArgMax"]["temperature"] == 0.5
    assert rows["ArgMax"]["gamma"] is None and rows["ArgMax"]["approximator"] is None
    bridge = model.get_layer("bridge")
    assert rows["Bridge"]["gamma"] == 3.0 and rows["Bridge"]["approximator"] == "AxisMLP"
    assert rows["Bridge"]["approximator_params"] == bridge.approximator.count_params() > 0
    assert info["training_only_params"] == bridge.approximator.count_params() + 1  # + τ
    assert info["inference_params"] == model.count_params() - info["training_only_params"]
    assert "Relaxed" in text.getvalue() and "0.5" in text.getvalue() and "training only" in text.getvalue()


def test_export_refuses_subclassed_models():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.sign = layers.Sign()

        def call(self, x):
            return self.sign(x)

    with pytest.raises(ValueError, match="functional or Sequential model. Received: model of type Sub"):
        dab_keras.export_inference(Sub())


@pytest.mark.tensorflow_only
def test_exported_model_exports_a_saved_model_without_training_state(tmp_path):
    import tensorflow as tf

    model, _ = model_with("sign", "dab")
    exported = dab_keras.export_inference(model)
    exported.export(os.path.join(tmp_path, "saved"), verbose=False)
    restored = tf.saved_model.load(os.path.join(tmp_path, "saved"))
    names = [v.name for v in restored.variables]
    assert not [n for n in names if "approximator" in n or "sums" in n or "temperature" in n], names
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(restored.serve(x).numpy(), model.predict(x, verbose=0), rtol=1e-6)
