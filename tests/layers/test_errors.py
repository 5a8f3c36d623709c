"""Invalid arguments and inputs fail early with errors that name the argument and what was received."""

import os
import re
import warnings

import keras
import numpy as np
import pytest

from dab_keras import estimators, layers

X2 = np.random.default_rng(0).normal(size=(2, 5)).astype("float32")
X3 = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")

LAYER_FACTORIES = {
    "sign": lambda: layers.Sign(),
    "quantize": lambda: layers.Quantize(levels=3),
    "vq": lambda: layers.VectorQuantize(num_codes=4, code_dim=5),
    "argmax": lambda: layers.ArgMax(),
    "topk": lambda: layers.TopK(k=2),
    "sort": lambda: layers.Sort(),
    "sort_indices": lambda: layers.Sort(output_mode="indices"),
    "dab": lambda: layers.Bridge(keras.ops.round),
}
AXIS_FACTORIES = {
    "argmax": lambda axis: layers.ArgMax(axis=axis),
    "topk": lambda axis: layers.TopK(k=1, axis=axis),
    "sort": lambda axis: layers.Sort(axis=axis),
}


# ---------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("name", sorted(set(LAYER_FACTORIES) - {"sign", "quantize"}))
def test_rank_one_input(name):
    with pytest.raises(ValueError, match=re.escape("expects inputs of rank >= 2") + ".*input_shape=\\(5,\\)"):
        LAYER_FACTORIES[name]()(np.ones((5,), "float32"))
    with pytest.raises(ValueError, match="rank >= 2"):
        LAYER_FACTORIES[name]()(keras.Input(batch_shape=(5,)))


@pytest.mark.parametrize("name", sorted(LAYER_FACTORIES))
def test_integer_inputs(name):
    for inputs in (np.ones((2, 5), "int32"), keras.Input((5,), dtype="int32")):
        with pytest.raises(TypeError, match=r"expects floating-point inputs.*inputs\.dtype=int32"):
            LAYER_FACTORIES[name]()(inputs)


@pytest.mark.parametrize("name", sorted(AXIS_FACTORIES))
@pytest.mark.parametrize("axis", [3, -4])
def test_axis_out_of_range(name, axis):
    with pytest.raises(ValueError, match=re.escape(f"`axis` must be in [-3, 3) for inputs of rank 3. Received: axis={axis}")):
        AXIS_FACTORIES[name](axis)(X3)


@pytest.mark.parametrize("name", sorted(AXIS_FACTORIES))
@pytest.mark.parametrize("axis", [0, -3])
def test_axis_is_batch_axis(name, axis):
    with pytest.raises(ValueError, match=r"`axis` must not be the batch axis 0"):
        AXIS_FACTORIES[name](axis)(X3)


@pytest.mark.parametrize("name", sorted(AXIS_FACTORIES))
def test_axis_not_an_integer(name):
    with pytest.raises(ValueError, match=r"`axis` must be an integer\. Received: axis=1\.0"):
        AXIS_FACTORIES[name](1.0)


@pytest.mark.parametrize("name", sorted(AXIS_FACTORIES))
def test_unknown_size_along_axis(name):
    with pytest.raises(ValueError, match=r"needs a known size along `axis`.*input_shape=\(None, None, 3\), axis=1"):
        AXIS_FACTORIES[name](1)(keras.Input((None, 3)))
    # Unknown sizes elsewhere are fine.
    assert tuple(AXIS_FACTORIES[name](-1)(keras.Input((None, 3))).shape)[-1] == 3


def test_vector_quantize_wrong_last_dim():
    with pytest.raises(ValueError, match=r"size `code_dim` \(3\).*input_shape=\(2, 5\)"):
        layers.VectorQuantize(num_codes=4, code_dim=3)(X2)
    with pytest.raises(ValueError, match=r"`code_dim` \(3\)"):
        layers.VectorQuantize(num_codes=4, code_dim=3)(keras.Input((7, 5)))


# ---------------------------------------------------------------------------- layer arguments


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_top_k_k_invalid(k):
    with pytest.raises(ValueError, match=re.escape(f"`k` must be an integer >= 1. Received: k={k!r}")):
        layers.TopK(k=k)


def test_top_k_k_larger_than_axis():
    with pytest.raises(ValueError, match=r"`k` must be at most the size of `axis` \(5\)\. Received: k=6"):
        layers.TopK(k=6)(X2)
    with pytest.raises(ValueError, match=r"`k` must be at most the size of `axis` \(3\)\. Received: k=4"):
        layers.TopK(k=4, axis=-1)(keras.Input((5, 3)))
    assert layers.TopK(k=5)(X2).shape == X2.shape  # k == n is allowed


@pytest.mark.parametrize("levels", [1, 0, 2.0])
def test_quantize_levels_invalid(levels):
    with pytest.raises(ValueError, match=re.escape(f"`levels` must be an integer >= 2. Received: levels={levels!r}")):
        layers.Quantize(levels=levels)


@pytest.mark.parametrize(("min_value", "max_value"), [(1.0, 1.0), (2.0, -1.0)])
def test_quantize_min_not_below_max(min_value, max_value):
    message = f"`min_value` must be smaller than `max_value`. Received: min_value={min_value}, max_value={max_value}"
    with pytest.raises(ValueError, match=re.escape(message)):
        layers.Quantize(levels=3, min_value=min_value, max_value=max_value)


@pytest.mark.parametrize(
    ("factory", "argument", "value", "allowed"),
    [
        (lambda v: layers.Sort(relaxation=v), "relaxation", "sinkhorn", "'neuralsort', 'softsort'"),
        (lambda v: layers.Sort(output_mode=v), "output_mode", "rank", "'values', 'ranks', 'permutation', 'indices'"),
        (lambda v: layers.Sort(direction=v), "direction", "up", "'ascending', 'descending'"),
        (lambda v: layers.TopK(k=1, output_mode=v), "output_mode", "indices", "'mask', 'values'"),
    ],
    ids=["sort-relaxation", "sort-output_mode", "sort-direction", "topk-output_mode"],
)
def test_unknown_option(factory, argument, value, allowed):
    message = f"`{argument}` must be one of {allowed}. Received: {argument}={value!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        factory(value)


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (lambda: layers.ArgMax(stochastic=1), "stochastic"),
        (lambda: layers.VectorQuantize(4, 3, return_indices="yes"), "return_indices"),
        (lambda: layers.Sign(margin=-0.1), "margin"),
        (lambda: layers.VectorQuantize(4, 3, commitment_cost=-1.0), "commitment_cost"),
        (lambda: layers.VectorQuantize(0, 3), "num_codes"),
        (lambda: layers.VectorQuantize(4, 0), "code_dim"),
    ],
    ids=["stochastic", "return_indices", "margin", "commitment_cost", "num_codes", "code_dim"],
)
def test_other_invalid_arguments(factory, argument):
    with pytest.raises(ValueError, match=f"`{argument}` must .*Received: {argument}="):
        factory()


# ---------------------------------------------------------------------------- estimators


@pytest.mark.parametrize("estimator", ["gumbel", "STE", 3, None])
def test_unknown_estimator_lists_valid_names(estimator):
    message = (
        "`estimator` must be one of 'straight_through', 'ste', 'relaxed', 'dab' or a "
        f"dab_keras.estimators.Estimator instance. Received: estimator={estimator!r}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        layers.Sign(estimator=estimator)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan")])
@pytest.mark.parametrize("estimator_cls", [estimators.Relaxed, estimators.StraightThrough])
def test_non_positive_temperature(estimator_cls, temperature):
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number > 0\. Received: temperature="):
        layers.ArgMax(estimator=estimator_cls(temperature=temperature))


@pytest.mark.parametrize("name", ["sort", "argmax", "topk"])
def test_identity_surrogate_on_op_without_one(name):
    factory = {"sort": layers.Sort, "argmax": layers.ArgMax, "topk": lambda **kw: layers.TopK(k=2, **kw)}[name]
    layer = factory(estimator=estimators.StraightThrough(surrogate="identity"))
    assert layer(X2).shape == X2.shape  # inference does not use the surrogate
    with pytest.raises(ValueError, match=r"has no identity surrogate.*Received: surrogate='identity'"):
        layer(X2, training=True)
    clipped = factory(estimator=estimators.StraightThrough(clip_value=1.0))
    with pytest.raises(ValueError, match=r"`clip_value` applies to the identity surrogate only.*clip_value=1\.0"):
        clipped(X2, training=True)


def test_identity_surrogate_error_raised_by_fit():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, layers.Sort(estimator=estimators.StraightThrough(surrogate="identity"))(
        keras.layers.Dense(5)(inputs)))
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="surrogate='identity'"):
        model.fit(X2, X2, verbose=0)


# ---------------------------------------------------------------------------- DAB layer


@pytest.mark.parametrize("hard_fn", [3, "no_such_function", None])
def test_dab_layer_hard_fn_not_callable(hard_fn):
    with pytest.raises(ValueError, match=re.escape(f"`hard_fn` must be a callable. Received: hard_fn={hard_fn!r}")):
        layers.Bridge(hard_fn)


def test_dab_layer_approximator_not_a_layer():
    with pytest.raises(ValueError, match=r"`approximator` must be a Keras layer or model.*Received: approximator="):
        layers.Bridge(keras.ops.round, approximator=lambda x: x)


def test_dab_layer_default_approximator_needs_leading_axes_kept():
    layer = layers.Bridge(lambda x: keras.ops.max(keras.ops.round(x), axis=-1))
    with pytest.raises(ValueError, match=r"pass `approximator=` for this function.*input shape \(None, 5\)"):
        layer(keras.Input((5,)))


def _save_dab_model(hard_fn, path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, layers.Bridge(hard_fn)(inputs))
    model.save(path)
    return model


def test_dab_layer_lambda_refused_in_safe_mode(tmp_path):
    path = os.path.join(tmp_path, "lambda.keras")
    with pytest.warns(UserWarning, match="lambda"):
        _save_dab_model(lambda x: x // 1.0, path)
    with pytest.raises((TypeError, ValueError), match=r"(?s)'Bridge'.*deserialization of a Python lambda.*safe_mode=False"):
        keras.models.load_model(path, safe_mode=True)


@keras.saving.register_keras_serializable(package="dab_keras_tests", name="rounded")
def rounded(x):
    return keras.ops.round(x)


def test_dab_layer_registered_function_reloads_in_safe_mode(tmp_path):
    path = os.path.join(tmp_path, "registered.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # saved without the lambda warning
        model = _save_dab_model(rounded, path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.layers[-1].hard_fn is rounded
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(X2)), keras.ops.convert_to_numpy(model(X2)))
