"""The estimator-state protocol: per-layer state, portable weights, metrics, rank-1 inputs, old files."""

import os
import warnings

import keras
import numpy as np
import pytest

import dab_keras
from dab_keras import estimators, layers

ESTIMATORS = ("straight_through", "relaxed", "dab")
DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")

# (factory, input shape): every layer type, each with its hard layer named "hard".
LAYERS = {
    "sign": (lambda e: layers.Sign(margin=0.1, estimator=e, name="hard"), (6,)),
    "quantize": (lambda e: layers.Quantize(levels=4, estimator=e, name="hard"), (6,)),
    "vq": (lambda e: layers.VectorQuantize(num_codes=5, code_dim=3, estimator=e, name="hard"), (2, 3)),
    "argmax": (lambda e: layers.ArgMax(estimator=e, name="hard"), (6,)),
    "topk": (lambda e: layers.TopK(k=2, estimator=e, name="hard"), (6,)),
    "sort": (lambda e: layers.Sort(estimator=e, name="hard"), (6,)),
    "sort_permutation": (lambda e: layers.Sort(output_mode="permutation", estimator=e, name="hard"), (6,)),
}


def make_model(layer_name, estimator, seed):
    factory, shape = LAYERS[layer_name]
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    hidden = keras.layers.Dense(shape[-1], name="before")(inputs)
    outputs = keras.layers.Flatten()(factory(estimator)(hidden))
    outputs = keras.layers.Dense(2, name="after")(outputs)
    return keras.Model(inputs, outputs)


def numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def perturb_state(layer):
    """Moves the estimator state away from its initial values, so a fresh start is detectable."""
    for v in layer.estimator_state.weights:
        v.assign(numpy(v) + 0.25)


# ------------------------------------------------------------------------- 1. per-layer state


def test_one_estimator_object_gives_each_layer_its_own_state():
    x = np.ones((2, 4), "float32")
    for shared in (estimators.DAB(gamma=2.0), estimators.DAB(approximator=layers.ElementwiseMLP(units=(4,)))):
        a, b = layers.Sign(estimator=shared), layers.Sign(estimator=shared)
        a(x), b(x)
        assert a.approximator is not b.approximator  # one owner each, not the estimator's template
        assert shared.approximator is None or not shared.approximator.built
        assert not {id(v) for v in a.weights} & {id(v) for v in b.weights}
    relaxed_a, relaxed_b = layers.ArgMax(estimator="relaxed"), layers.ArgMax(estimator="relaxed")
    relaxed_a(x), relaxed_b(x)
    relaxed_a.temperature.assign(0.25)
    assert float(numpy(relaxed_b.temperature)) == 1.0


def test_state_is_a_tracked_sublayer_and_layers_do_not_check_estimator_classes():
    layer = layers.TopK(k=2, estimator="dab")
    layer(np.ones((2, 5), "float32"))
    assert isinstance(layer.estimator_state, estimators.DABState)
    assert layer.estimator_state in layer._layers
    assert {id(v) for v in layer.approximator.weights} <= {id(v) for v in layer.trainable_weights}
    source = "".join(
        open(os.path.join(os.path.dirname(layers.__file__), name)).read()
        for name in os.listdir(os.path.dirname(layers.__file__))
        if name.endswith(".py")
    )
    for name in ("DAB", "Relaxed", "StraightThrough"):
        assert f"estimators_lib.{name})" not in source and f"estimators.{name})" not in source


def documented_learned_temperature():
    """The custom stateful estimator of docs/pages/concepts.md, run from the page itself."""
    page = open(os.path.join(os.path.dirname(DATA), "..", "docs", "pages", "concepts.md"), encoding="utf-8").read()
    blocks = [b.split("```", 1)[0] for b in page.split("```python\n")[1:]]
    (block,) = [b for b in blocks if "class LearnedTemperature" in b]
    code = block.split("@keras.saving")[1]
    assert len(code.strip().splitlines()) < 30  # the estimator itself, decorator included
    namespace = {}
    exec(compile(block, "concepts.md", "exec"), namespace)
    return namespace["LearnedTemperature"]


def test_custom_stateful_estimator_trains_and_round_trips(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.eye(4, dtype="float32")[np.argmax(x[:, ::-1], axis=-1)]
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(4, name="before"),
        layers.ArgMax(estimator=documented_learned_temperature()(0.5), name="hard"),
    ])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    state = model.get_layer("hard").estimator_state
    before = float(numpy(state.log_temperature))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert float(numpy(state.log_temperature)) != before  # the temperature learns
    path = os.path.join(tmp_path, "learned.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        numpy(loaded.get_layer("hard").estimator_state.log_temperature), numpy(state.log_temperature)
    )


def test_temperature_schedule_anneals_the_state_temperature():
    model = keras.Sequential([keras.Input((4,)), layers.ArgMax(estimator="relaxed", name="hard")])
    model.compile(loss="mse")
    schedule = dab_keras.callbacks.TemperatureSchedule(lambda t: 0.5**t)
    model.fit(np.ones((8, 4)), np.ones((8, 4)), epochs=3, callbacks=[schedule], verbose=0)
    assert float(numpy(model.get_layer("hard").estimator_state.temperature)) == 0.25


# ------------------------------------------------------------------------- 2. portable weights


@pytest.mark.parametrize("fmt", ["weights.h5", "keras"])
@pytest.mark.parametrize("layer_name", sorted(LAYERS))
def test_weights_load_across_every_estimator_pair(layer_name, fmt, tmp_path):
    x = np.random.default_rng(1).normal(size=(4, *LAYERS[layer_name][1])).astype("float32")
    for i, source_estimator in enumerate(ESTIMATORS):
        source = make_model(layer_name, source_estimator, seed=i)
        source(x)
        perturb_state(source.get_layer("hard"))
        path = os.path.join(tmp_path, f"{source_estimator}.{fmt}")
        if fmt == "keras":
            source.save(path)
        else:
            source.save_weights(path)
        for target_estimator in ESTIMATORS:
            target = make_model(layer_name, target_estimator, seed=10)
            target(x)
            hard = target.get_layer("hard")
            initial_state = [numpy(v) for v in hard.estimator_state.weights]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                target.load_weights(path)
            messages = [str(w.message) for w in caught]
            pair = f"{source_estimator} -> {target_estimator}"
            # The network's own weights load: Dense layers, and the codebook of VectorQuantize.
            for name in ("before", "after"):
                for a, b in zip(source.get_layer(name).weights, target.get_layer(name).weights):
                    np.testing.assert_array_equal(numpy(a), numpy(b), err_msg=pair)
            np.testing.assert_array_equal(numpy(source(x)), numpy(target(x)), err_msg=pair)
            if hasattr(hard, "codebook"):
                np.testing.assert_array_equal(numpy(source.get_layer("hard").codebook), numpy(hard.codebook))
            state = [numpy(v) for v in hard.estimator_state.weights]
            if source_estimator == target_estimator:
                assert messages == [], pair
                for a, b in zip(source.get_layer("hard").estimator_state.weights, state):
                    np.testing.assert_array_equal(numpy(a), b, err_msg=pair)
            else:
                # One warning naming the layer; the target's state starts fresh (its initial values).
                assert len(messages) == 1, (pair, messages)
                assert "Layer 'hard'" in messages[0] and "started fresh" in messages[0], messages[0]
                for a, b in zip(initial_state, state):
                    np.testing.assert_array_equal(a, b, err_msg=pair)


def test_weights_of_another_network_still_fail_clearly(tmp_path):
    source = make_model("vq", "dab", seed=0)
    source.save_weights(os.path.join(tmp_path, "vq.weights.h5"))
    other = keras.Sequential([keras.Input((2, 3)), layers.VectorQuantize(num_codes=7, code_dim=3, name="hard")])
    with pytest.raises(ValueError):
        other.load_weights(os.path.join(tmp_path, "vq.weights.h5"))


@keras.saving.register_keras_serializable(package="dab_keras_tests", name="legacy_floor_parity")
def legacy_floor_parity(x):
    return keras.ops.mod(keras.ops.floor(x), 2.0)


def test_files_saved_before_the_protocol_still_load():
    """`tests/data/legacy_model.keras` was saved by dab_keras before estimators owned their state
    (`tests/data/make_legacy_model.py`): DAB error sums among the weights, the approximator a direct
    sublayer, and the generic bridge layer registered as `dab_keras>DAB`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.models.load_model(os.path.join(DATA, "legacy_model.keras"), safe_mode=True)
    assert [str(w.message) for w in caught if "Layer '" in str(w.message)] == []
    x = np.load(os.path.join(DATA, "legacy_inputs.npy"))
    np.testing.assert_array_equal(numpy(model(x)), np.load(os.path.join(DATA, "legacy_outputs.npy")))
    saved = np.load(os.path.join(DATA, "legacy_weights.npz"))
    for name in ("pre", "code", "bridge", "quant", "vq"):
        theirs = [saved[k] for k in saved.files if k.startswith(f"{name}/") and "approximation_error" not in k]
        mine = model.get_layer(name).weights
        assert len(mine) == len(theirs), name
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(numpy(a), b, err_msg=a.path)
    assert float(numpy(model.get_layer("quant").temperature)) == 0.375


# ------------------------------------------------------------------------- 3. metrics


def readme_model():
    return keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(32, activation="tanh"),
        layers.Sign(margin=0.1, estimator="dab"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


def test_metric_state_is_not_weights(tmp_path):
    model = readme_model()
    model(np.zeros((2, 16), "float32"), training=True)
    sign = model.layers[1]
    names = [w.path for w in model.weights]
    assert not [n for n in names if "error" in n or "sums" in n or "count" in n], names
    # The residual DAB's state: the correction network and τ (a non-trainable weight, as straight-through's).
    expected = 16 * 32 + 32 + sign.approximator.count_params() + 1 + 32 + 1
    assert model.count_params() == expected
    assert len(model.get_weights()) == len(model.weights)
    path = os.path.join(tmp_path, "m.weights.h5")
    model.save_weights(path)
    import h5py

    with h5py.File(path) as f:
        datasets = []
        f.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
    assert len(datasets) == len(model.weights), datasets


def test_readme_example_twice_in_one_process_and_loss_is_the_task_loss():
    x = np.random.default_rng(0).normal(size=(512, 16)).astype("float32")
    y = (np.sum(x[:, :8], axis=1) > 0).astype("float32")
    for _ in range(2):  # the second model's layers are auto-numbered sign_1, dense_2, ...
        model = readme_model()
        model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=2, batch_size=128, verbose=0, validation_data=(x[:128], y[:128]))
        error = history.history["approximation_error"][-1]
        assert np.isfinite(error) and error > 0
        assert history.history["dab_loss"][-1] == pytest.approx(10.0 * error, rel=1e-5)
    # Validation computes g's error on the validation data (not a constant 0).
    val = history.history["val_approximation_error"]
    assert all(v > 0 for v in val) and val[0] != val[1]
    # `loss` is the task loss alone: evaluate's loss is the binary cross-entropy of the predictions.
    logs = model.evaluate(x[:128], y[:128], verbose=0, return_dict=True, batch_size=128)
    p = np.clip(model.predict(x[:128], verbose=0)[:, 0].astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -np.mean(y[:128] * np.log(p) + (1 - y[:128]) * np.log(1 - p))
    assert logs["loss"] == pytest.approx(bce, rel=1e-4)
    # evaluate's error is g's error on these inputs, recomputed by hand.
    sign, hidden = model.layers[1], numpy(model.layers[0](x[:128]))
    g = hidden.astype(np.float64) + numpy(sign.approximator(hidden))  # g = identity + correction
    h = np.where(hidden > 0.1, 1.0, np.where(hidden < -0.1, -1.0, 0.0))
    assert logs["approximation_error"] == pytest.approx(np.mean(np.sum((g - h) ** 2, axis=-1)), rel=1e-4)


def test_training_metric_values_are_the_mean_over_steps():
    """The epoch's `approximation_error` is the mean of the per-step errors (metric updates reach the
    logs on every backend, including JAX where state flows through `stateless_call`)."""
    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    y = np.zeros((64, 1), "float32")
    model = readme_model()
    model.compile(keras.optimizers.SGD(0.0), "mse")  # nothing moves: each step sees the same g
    history = model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    sign, hidden = model.layers[1], numpy(model.layers[0](x))
    g = hidden.astype(np.float64) + numpy(sign.approximator(hidden))  # g = identity + correction
    h = np.where(hidden > 0.1, 1.0, np.where(hidden < -0.1, -1.0, 0.0))
    per_step = [np.mean(np.sum((g[i : i + 32] - h[i : i + 32]) ** 2, -1)) for i in (0, 32)]
    assert history.history["approximation_error"][0] == pytest.approx(np.mean(per_step), rel=1e-4)


def test_vector_quantize_reports_codebook_usage_and_perplexity():
    codebook = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], "float32")
    layer = layers.VectorQuantize(num_codes=4, code_dim=2, name="vq",
                                  codebook_initializer=keras.initializers.Constant(codebook))
    model = keras.Sequential([keras.Input((3, 2)), layer])
    model.compile(loss="mse")
    # Codes used: 0 four times, 1 twice, 2 never, 3 never (over two examples of 3 vectors).
    x = np.array([[[0.1, 0], [0, 0.2], [9, 1]], [[1, 1], [10, 0.5], [0.5, 0.5]]], "float32")
    logs = model.evaluate(x, x, verbose=0, return_dict=True)
    p = np.array([4, 2]) / 6
    assert logs["codebook_usage"] == pytest.approx(0.5)
    assert logs["codebook_perplexity"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-5)
    assert logs["vq_codebook_perplexity"] == logs["codebook_perplexity"]


# ------------------------------------------------------------------------- 5. rank-1 element-wise inputs


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("factory", [lambda e: layers.Sign(estimator=e), lambda e: layers.Quantize(3, estimator=e)],
                         ids=["sign", "quantize"])
def test_element_wise_layers_take_rank_one_inputs(factory, estimator):
    x = np.array([-2.0, -0.2, 0.3, 1.5], "float32")
    layer = factory(estimator)
    expected = numpy(factory(estimator)(x[:, None]))[:, 0]
    np.testing.assert_array_equal(numpy(layer(x)), expected)
    model = keras.Sequential([keras.Input(()), layer])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    history = model.fit(x, np.zeros_like(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert tuple(model.output_shape) == (None,)


# ------------------------------------------------------------------------- 5. stochastic ArgMax at inference


def test_stochastic_argmax_is_deterministic_at_inference_unless_sampling_is_asked_for():
    logits = np.log(np.array([[0.2, 0.5, 0.3]] * 400, "float32"))
    mode = np.tile([0.0, 1.0, 0.0], (400, 1))
    layer = layers.ArgMax(stochastic=True, seed=0)
    np.testing.assert_array_equal(numpy(layer(logits)), mode)
    np.testing.assert_array_equal(numpy(layer(logits, training=False)), mode)
    for sampled in (numpy(layer(logits, training=True)), numpy(layer(logits, sample=True)),
                    numpy(layers.ArgMax(stochastic=True, seed=0, sample_at_inference=True)(logits))):
        np.testing.assert_allclose(sampled.mean(axis=0), [0.2, 0.5, 0.3], atol=0.08)
    assert layers.ArgMax(stochastic=True, sample_at_inference=True).get_config()["sample_at_inference"] is True
    with pytest.raises(ValueError, match="`sample_at_inference` must be a bool. Received: sample_at_inference=1"):
        layers.ArgMax(stochastic=True, sample_at_inference=1)


def test_the_bridge_layer_keeps_its_former_name():
    assert layers.DAB is layers.Bridge
    assert keras.saving.get_registered_name(layers.Bridge) == "dab_keras>Bridge"
    assert keras.saving.get_registered_object("dab_keras>DAB") is layers.Bridge  # files saved before
