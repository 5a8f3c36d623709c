"""Layers at the edges: masking values, huge inputs, empty batches, non-finite ranges, unknown shapes."""

import gradients
import keras
import numpy as np
import pytest

from dab_keras import estimators, layers
from dab_keras import ops as dab_ops

ESTIMATORS = ["straight_through", "relaxed", "dab"]


def _value_and_input_gradient(layer, x, upstream):
    """The layer's training output and the gradient of <output, upstream> w.r.t. its input."""
    fn = lambda v: layer(v, training=True)  # noqa: E731
    return np.asarray(fn(x)), gradients.vjp(fn, x, upstream)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_top_k_values_keeps_minus_inf_out_of_its_output(estimator):
    x = np.array([[1.0, -np.inf, 2.0, 0.5], [-np.inf, -np.inf, 3.0, -1.0]], "float32")
    layer = layers.TopK(k=2, output_mode="values", estimator=estimator)
    np.testing.assert_array_equal(np.asarray(layer(x)), [[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, -1.0]])
    if estimator != "dab":  # DAB's approximator sees the -inf itself
        y, grad = _value_and_input_gradient(layer, x, np.ones_like(x))
        assert np.isfinite(y).all() and np.isfinite(grad).all()
        np.testing.assert_array_equal(grad[np.isinf(x)], 0.0)


def test_soft_top_k_ignores_minus_inf_entries():
    x = np.array([[0.3, -np.inf, 2.0, 0.5]], "float32")
    finite = np.asarray(dab_ops.soft_top_k(x[:, [0, 2, 3]], 2, 0.5))
    masked = np.asarray(dab_ops.soft_top_k(x, 2, 0.5))
    np.testing.assert_allclose(masked[:, [0, 2, 3]], finite, rtol=1e-5, atol=1e-6)
    assert masked[0, 1] == 0.0
    grad = gradients.vjp(lambda v: dab_ops.soft_top_k(v, 2, 0.5), x, np.arange(4.0)[None])
    assert np.isfinite(grad).all() and grad[0, 1] == 0.0


@pytest.mark.parametrize("estimator", ["relaxed", "straight_through"])
@pytest.mark.parametrize("layer_factory", [
    lambda e: layers.Sort(estimator=e),
    lambda e: layers.Sort(output_mode="ranks", relaxation="softsort", estimator=e),
    lambda e: layers.Sort(output_mode="permutation", estimator=e),
    lambda e: layers.TopK(k=2, estimator=e),
    lambda e: layers.TopK(k=2, output_mode="values", estimator=e),
], ids=["sort", "sort_ranks", "sort_perm", "topk", "topk_values"])
def test_sort_and_top_k_gradients_are_finite_near_the_float32_limit(layer_factory, estimator, rng):
    x = np.array([[3e38, -3e38, 1e38, 0.0], [1.0, 2.0, -3e38, 3e38]], "float32")
    layer = layer_factory(estimator)
    out = layer(x, training=True)
    y, grad = _value_and_input_gradient(layer, x, rng.normal(size=out.shape).astype("float32"))
    assert np.isfinite(y).all() and np.isfinite(grad).all(), (y, grad)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_vector_quantize_relaxed_is_finite_for_huge_inputs(estimator, rng):
    layer = layers.VectorQuantize(num_codes=4, code_dim=3, estimator=estimator)
    layer.build((None, 3))
    x = np.full((2, 3), 1e30, "float32")
    x[1] = -1e30
    codebook = keras.ops.convert_to_numpy(layer.codebook)
    # ‖t·1 - e‖² = t²D - 2t Σe + ‖e‖²: for huge t the code with the largest (t > 0) or smallest Σe.
    nearest = codebook[[np.argmax(codebook.sum(-1)), np.argmin(codebook.sum(-1))]]
    np.testing.assert_array_equal(np.asarray(layer(x)), nearest)
    if estimator == "relaxed":  # the soft assignment is the nearest code at this scale
        y, grad = _value_and_input_gradient(layer, x, np.ones_like(x))
        np.testing.assert_allclose(y, nearest, rtol=1e-6)
        assert np.isfinite(grad).all()


def test_vector_quantize_ops_agree_with_float64_distances(rng):
    z = rng.normal(size=(50, 3)).astype("float32") * np.float32(1e15)
    codebook = rng.normal(size=(7, 3)).astype("float32") * np.float32(1e15)
    exact = ((z[:, None, :].astype(np.float64) - codebook.astype(np.float64)) ** 2).sum(-1)
    _, idx = dab_ops.vector_quantize(z, codebook)
    np.testing.assert_array_equal(np.asarray(idx), exact.argmin(-1))
    soft = np.asarray(dab_ops.soft_vector_quantize(z, codebook, 1e30))  # τ in squared distance units
    w = np.exp(-(exact - exact.min(-1, keepdims=True)) / 1e30)
    np.testing.assert_allclose(soft, (w / w.sum(-1, keepdims=True)) @ codebook, rtol=1e-4, atol=1e11)
    with pytest.raises(ValueError, match="temperature"):  # finite in float64, inf in float32
        dab_ops.soft_vector_quantize(z, codebook, 1e49)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("output_mode", ["mask", "values"])
def test_top_k_trains_on_an_empty_batch(estimator, output_mode):
    layer = layers.TopK(k=2, output_mode=output_mode, estimator=estimator)
    empty = np.zeros((0, 4), "float32")
    assert np.asarray(layer(empty, training=True)).shape == (0, 4)
    assert gradients.vjp(lambda v: layer(v, training=True), empty, empty).shape == (0, 4)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_sort_ranks_trains_on_an_empty_batch(estimator):
    layer = layers.Sort(output_mode="ranks", estimator=estimator)
    empty = np.zeros((0, 5), "float32")
    assert np.asarray(layer(empty, training=True)).shape == (0, 5)
    assert gradients.vjp(lambda v: layer(v, training=True), empty, empty).shape == (0, 5)


@pytest.mark.parametrize("bounds", [(-np.inf, np.inf), (0.0, np.inf), (-np.inf, 0.0), (np.nan, 1.0)])
def test_quantize_refuses_non_finite_ranges(bounds):
    with pytest.raises(ValueError, match=r"(min_value|max_value).* finite"):
        layers.Quantize(levels=3, min_value=bounds[0], max_value=bounds[1])
    with pytest.raises(ValueError, match=r"(min_value|max_value).* finite"):
        dab_ops.quantize(np.zeros(3, "float32"), 3, *bounds)


def test_dab_layer_on_an_unknown_last_axis_names_the_input_shape():
    layer = layers.DAB(dab_ops.sign)
    with pytest.raises(ValueError, match=r"known size.*Received: input shape \(None, None\)"):
        layer.build((None, None))
    inputs = keras.Input((None,))
    with pytest.raises(ValueError, match=r"input shape \(None, None\)"):
        layer(inputs)
    layers.DAB(dab_ops.sign, approximator=keras.layers.Identity()).build((None, None))  # a custom one is fine


def test_sort_ranks_with_every_estimator_trains_and_reloads(tmp_path, rng):
    x = rng.normal(size=(32, 6)).astype("float32")
    target = np.argsort(np.argsort(x, -1), -1).astype("float32") + 1.0
    for estimator in ("straight_through", estimators.Relaxed(temperature=0.5), "dab"):
        inputs = keras.Input((6,))
        outputs = layers.Sort(output_mode="ranks", estimator=estimator)(keras.layers.Dense(6)(inputs))
        model = keras.Model(inputs, outputs)
        model.compile("adam", "mse", jit_compile=True)
        model.fit(x, target, epochs=2, batch_size=8, verbose=0)
        path = tmp_path / "ranks.keras"
        model.save(path)
        reloaded = keras.models.load_model(path, safe_mode=True)
        np.testing.assert_array_equal(np.asarray(reloaded.predict(x, verbose=0)), np.asarray(model.predict(x, verbose=0)))
