"""`run_layer_test`: the checks every `dab_keras` layer must pass, after Keras's own
`keras.src.testing.TestCase.run_layer_test`.

One call builds the layer, compares its inference output with an independent reference, checks the
output shape and dtype against `compute_output_shape` and a symbolic call, differentiates its training
output, round-trips its config, trains it inside a model (graph mode and XLA), and saves and reloads
the model in the `.keras` format with `safe_mode=True`.
"""

import json
import os

import keras
import numpy as np

from dab_keras import estimators as estimators_lib

# An exactly representable "annealed" temperature, written into the layer before saving.
ANNEALED_TEMPERATURE = 0.375

MODEL_STYLES = ("functional", "sequential", "subclassed")


@keras.saving.register_keras_serializable(package="dab_keras_tests", name="floor_parity")
def floor_parity(x):
    """A hard function for the generic `DAB` layer: the parity of floor(x), in {0, 1}."""
    return keras.ops.mod(keras.ops.floor(x), 2.0)


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def first(outputs):
    return as_list(outputs)[0]


def to_numpy(outputs):
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in as_list(outputs)]


def as_json(config):
    """`config` as it reads back from JSON (tuples become lists), for comparing saved configs."""
    return json.loads(json.dumps(config))


def dtype_name(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


def assert_outputs_equal(actual, expected, atol=1e-6, what="output"):
    """Compares a (possibly tuple) layer output with a reference, value by value and dtype kind."""
    actual, expected = to_numpy(actual), [np.asarray(e) for e in as_list(expected)]
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, f"{what}[{i}]: shape {a.shape}, expected {e.shape}"
        if np.issubdtype(e.dtype, np.integer):
            assert np.issubdtype(a.dtype, np.integer), f"{what}[{i}]: dtype {a.dtype}, expected integers"
            np.testing.assert_array_equal(a, e, err_msg=f"{what}[{i}]")
        else:
            np.testing.assert_allclose(a.astype(np.float64), e, rtol=1e-6, atol=atol, err_msg=f"{what}[{i}]")


def training_vjp(layer, x, upstream):
    """Output and input VJP of `layer(x, training=True)` (its first output), as NumPy arrays.

    Runs through `stateless_call`, so the DAB loss, the error sums and the seed generator are not
    updated in place (which JAX tracing needs). One forward pass serves both results.
    """
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def fn(t):
        outputs, _ = layer.stateless_call(trainable, non_trainable, t, training=True)
        return first(outputs)

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        y, pullback = jax.vjp(fn, jnp.asarray(x))
        (grad,) = pullback(jnp.asarray(upstream, y.dtype))
        return np.asarray(y), np.asarray(grad)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = fn(xt)
        grad = tape.gradient(y, xt, output_gradients=tf.cast(upstream, y.dtype))
        return y.numpy(), np.zeros_like(np.asarray(x)) if grad is None else grad.numpy()
    raise NotImplementedError(keras.backend.backend())


class SubclassedModel(keras.Model):
    def __init__(self, pre, layer, **kwargs):
        super().__init__(**kwargs)
        self.pre = pre
        self.op = layer

    def call(self, inputs, training=None):
        return self.op(self.pre(inputs), training=training)


def build_model(layer, input_shape, style="functional"):
    """`inputs -> Dense -> layer` in the given model style; returns the model and the Dense layer.

    The Dense layer (identity-initialised, so the op sees the raw inputs at the start) is the weight
    that only the layer's estimator gradient can move.
    """
    pre = keras.layers.Dense(
        input_shape[-1], kernel_initializer="identity", bias_initializer="zeros", name="pre"
    )
    if style == "functional":
        inputs = keras.Input(input_shape, name="x")
        model = keras.Model(inputs, layer(pre(inputs)))
    elif style == "sequential":
        model = keras.Sequential([keras.Input(input_shape), pre, layer])
    elif style == "subclassed":
        model = SubclassedModel(pre, layer)
        model(np.zeros((1, *input_shape), "float32"))
    else:
        raise ValueError(f"Unknown model style {style!r}; expected one of {MODEL_STYLES}")
    return model, pre


def fit_targets(model, x, seed=1):
    """Random float targets shaped like the model's outputs (zeros for integer outputs)."""
    rng = np.random.default_rng(seed)
    targets = []
    for o in to_numpy(model(x)):
        shape = (len(x), *o.shape[1:])
        targets.append(rng.normal(size=shape).astype("float32") if o.dtype.kind == "f" else np.zeros(shape, o.dtype))
    return targets


def fit_checks(model, pre, layer, x, y, *, jit_compile, batch_size, learning_rate=0.01):
    """Compiles and fits `model` for one epoch of a few steps; checks the loss, the weights, that the
    Dense layer before `layer` moved, and the DAB metric. Integer outputs get no loss.

    Returns the `History`.
    """
    losses = ["mse" if t.dtype.kind == "f" else None for t in y]
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=losses if len(losses) > 1 else losses[0],
        jit_compile=jit_compile,
    )
    before = keras.ops.convert_to_numpy(pre.kernel).copy()
    history = model.fit(x, y if len(y) > 1 else y[0], batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    mode = f"jit_compile={jit_compile}"
    loss = np.asarray(history.history["loss"])
    assert np.all(np.isfinite(loss)), f"{mode}: non-finite loss {loss}"
    for w in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(w), np.float64)
        assert np.all(np.isfinite(value)), f"{mode}: non-finite weight {w.path}"
    after = keras.ops.convert_to_numpy(pre.kernel)
    assert not np.array_equal(before, after), f"{mode}: no gradient reached the Dense layer before {layer.name}"
    if isinstance(layer.estimator, estimators_lib.DAB):
        for name in ("approximation_error", f"{layer.name}_approximation_error", "dab_loss"):
            assert name in history.history, f"{mode}: {name} missing from {sorted(history.history)}"
            value = history.history[name][-1]
            assert np.isfinite(value) and value > 0.0, f"{mode}: {name}={value}"
    return history


def run_layer_test(
    layer_factory,
    input_shape,
    *,
    reference=None,
    deterministic=True,
    trainable=True,
    model_style="functional",
    jit_compile=None,
    check_saving=True,
    tmp_path=None,
    batch_size=8,
    steps=2,
    seed=0,
):
    """Runs the standard layer checks.

    Args:
        layer_factory: Zero-argument callable returning a new, unbuilt layer.
        input_shape: Input shape without the batch axis.
        reference: Optional `(x, layer) -> expected` giving the hard (inference) output of `layer` on
            the NumPy array `x` (a tuple for several outputs), computed independently of the layer.
        deterministic: `False` when the inference output is random (a new sample per call); the
            reference is then only compared on the first call of fresh layers.
        trainable: Whether the output can be trained through (fit and gradient checks).
        model_style: `"functional"`, `"sequential"` or `"subclassed"`.
        jit_compile: The `jit_compile` values to fit with, in order. Defaults to `(True, False)` (XLA,
            then graph mode) on TensorFlow and `(True,)` on JAX, where jitted XLA is the graph mode. The
            last one is also used for `predict` (XLA draws other random numbers on TensorFlow).
        check_saving: Save to `.keras` and reload with `safe_mode=True` (functional/sequential only).
        tmp_path: Directory for the saved model.
        batch_size, steps: Fit on `batch_size * steps` examples, one epoch.
        seed: Seed of the random inputs.

    Returns:
        The layer inside the trained (and, if saved, reloaded) model.
    """
    if jit_compile is None:
        jit_compile = (True,) if keras.backend.backend() == "jax" else (True, False)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size * steps, *input_shape)).astype("float32")
    batch_shape = (None, *input_shape)

    # Build on the first eager call; the default call and training=False give the hard output.
    layer = layer_factory()
    assert not layer.built
    out_default = layer(x)
    assert layer.built, "the layer did not build on its first call"
    if isinstance(layer.estimator, estimators_lib.DAB) and getattr(layer, "differentiable", True):
        assert layer.approximator is not None and layer.approximator.built, "DAB approximator not built"
    if reference is not None:
        assert_outputs_equal(out_default, reference(x, layer), what="default call")
    other = layer_factory()
    out_inference = other(x, training=False)
    if reference is not None:
        assert_outputs_equal(out_inference, reference(x, other), what="training=False call")
    if deterministic:
        assert_outputs_equal(layer(x, training=False), to_numpy(out_default), what="repeated call")

    # Shapes and dtypes: eager == compute_output_shape == symbolic call.
    expected_shapes = layer.compute_output_shape(batch_shape)
    expected_shapes = list(expected_shapes) if isinstance(expected_shapes[0], tuple) else [expected_shapes]
    symbolic = as_list(layer_factory()(keras.Input(input_shape)))
    eager = as_list(out_default)
    assert len(symbolic) == len(eager) == len(expected_shapes)
    for s, e, shape in zip(symbolic, eager, expected_shapes):
        assert tuple(s.shape) == tuple(shape), f"symbolic shape {s.shape} != compute_output_shape {shape}"
        assert tuple(e.shape) == (len(x), *shape[1:]), f"eager shape {e.shape} != {shape}"
        assert dtype_name(s) == dtype_name(e), f"symbolic dtype {s.dtype} != eager dtype {e.dtype}"
    first_dtype = dtype_name(eager[0])
    assert first_dtype == (layer.compute_dtype if trainable else "int32"), first_dtype

    # Training output: finite, shaped like the hard output, and a non-zero, finite input gradient.
    if trainable:
        upstream = rng.normal(size=eager[0].shape).astype("float32")
        y_train, grad = training_vjp(layer, x, upstream)
        assert y_train.shape == tuple(eager[0].shape), y_train.shape
        assert np.all(np.isfinite(y_train)), "non-finite training output"
        assert np.all(np.isfinite(grad)), "non-finite input gradient"
        assert np.any(grad != 0.0), "the training output has no gradient w.r.t. the input"

    # Config round trip, directly and through Keras serialization (registration).
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer) and revived.get_config() == config

    # Inside a model: fit under XLA and in graph mode, then compiled inference == reference and the
    # reloaded model predicts the same.
    model_layer = layer_factory()
    model, pre = build_model(model_layer, input_shape, model_style)
    if trainable:
        y = fit_targets(model, x)
        for jit in jit_compile:
            fit_checks(model, pre, model_layer, x, y, jit_compile=jit, batch_size=batch_size)
    loaded = None
    if check_saving and model_style != "subclassed":
        loaded = _save_and_reload(model, model_layer, tmp_path)
    predictions = model.predict(x, verbose=0)
    if deterministic and reference is not None:
        hidden = keras.ops.convert_to_numpy(pre(x))
        assert_outputs_equal(predictions, reference(hidden, model_layer), what="model.predict")
    if loaded is not None:
        loaded_layer = loaded.get_layer(model_layer.name)
        seed_generator = getattr(model_layer, "seed_generator", None)
        if seed_generator is not None:
            # Like keras.layers.Dropout's, the seed state is not saved: predict both from the same one.
            seed_generator.state.assign(keras.ops.convert_to_numpy(loaded_layer.seed_generator.state))
            predictions = model.predict(x, verbose=0)
        for a, b in zip(to_numpy(predictions), to_numpy(loaded(x, training=False))):
            np.testing.assert_array_equal(a, b)
        return loaded_layer
    return model_layer


def _save_and_reload(model, layer, tmp_path):
    """Saves `model` after annealing `layer`'s temperature; checks the reloaded config and weights."""
    if layer.temperature is not None:
        layer.temperature.assign(ANNEALED_TEMPERATURE)
    config = layer.get_config()
    if layer.temperature is not None:
        assert config["estimator"]["config"]["temperature"] == ANNEALED_TEMPERATURE
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    loaded_layer = loaded.get_layer(layer.name)
    assert type(loaded_layer) is type(layer)
    assert as_json(loaded_layer.get_config()) == as_json(config)
    assert len(loaded.weights) == len(model.weights)
    for w, v in zip(model.weights, loaded.weights):
        assert w.name == v.name, (w.path, v.path)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), keras.ops.convert_to_numpy(v), err_msg=w.path)
    if layer.temperature is not None:
        assert float(keras.ops.convert_to_numpy(loaded_layer.temperature)) == ANNEALED_TEMPERATURE
    return loaded
