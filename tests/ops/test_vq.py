"""Vector quantization: distances and nearest codes against NumPy, soft assignment gradients and limits."""

import gradients
import numpy as np
import pytest

from dab_keras import ops as dab_ops


def distances_reference(z, codebook):
    return np.sum((np.asarray(z, np.float64)[..., None, :] - np.asarray(codebook, np.float64)) ** 2, axis=-1)


def soft_vq_reference(z, codebook, tau):
    logits = -distances_reference(z, codebook) / tau
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    return w @ np.asarray(codebook, np.float64)


def test_squared_distances_match_numpy(rng):
    z = rng.normal(size=(2, 3, 4)).astype("float32")
    codebook = rng.normal(size=(5, 4)).astype("float32")
    d = np.asarray(dab_ops.squared_distances(z, codebook))
    assert d.shape == (2, 3, 5)
    np.testing.assert_allclose(d, distances_reference(z, codebook), rtol=1e-5, atol=1e-5)
    # A vector that is a code is at distance 0 from it (never negative after round-off).
    d_self = np.asarray(dab_ops.squared_distances(codebook * 100, codebook * 100))
    assert np.all(d_self >= 0)
    np.testing.assert_allclose(np.diag(d_self), 0.0, atol=1e-1)


@pytest.mark.parametrize("shape", [(7, 3), (2, 5, 3), (1, 2, 2, 3)])
def test_vector_quantize_picks_the_nearest_code(rng, shape):
    codebook = rng.normal(size=(6, shape[-1])).astype("float32")
    z = rng.normal(size=shape).astype("float32")
    quantized, indices = dab_ops.vector_quantize(z, codebook)
    quantized, indices = np.asarray(quantized), np.asarray(indices)
    d = distances_reference(z, codebook)
    expected = np.argmin(d, axis=-1)
    # Only compare where the nearest code is not nearly tied with the second nearest.
    ordered = np.sort(d, axis=-1)
    clear = ordered[..., 1] - ordered[..., 0] > 1e-4
    assert indices.shape == shape[:-1] and indices.dtype == np.int32
    assert quantized.shape == shape and quantized.dtype == np.float32
    np.testing.assert_array_equal(indices[clear], expected[clear])
    np.testing.assert_array_equal(quantized, codebook[indices])


def test_vector_quantize_ties_go_to_the_lowest_index():
    codebook = np.array([[5.0, 5.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], "float32")
    z = np.array([[0.0, 0.0], [2.0, 0.0], [0.5, 0.5], [-0.5, 0.5]], "float32")
    # [0, 0]: codes 1, 2 and 3 at distance 1; [2, 0]: codes 1 and 4 identical; [0.5, 0.5]: 1 and 3;
    # [-0.5, 0.5]: 2 and 3.
    quantized, indices = dab_ops.vector_quantize(z, codebook)
    np.testing.assert_array_equal(np.asarray(indices), [1, 1, 1, 2])
    np.testing.assert_array_equal(np.asarray(quantized), codebook[[1, 1, 1, 2]])


def test_vector_quantize_single_code():
    codebook = np.array([[0.5, -0.5]], "float32")
    quantized, indices = dab_ops.vector_quantize(np.ones((3, 2), "float32"), codebook)
    np.testing.assert_array_equal(np.asarray(indices), [0, 0, 0])
    np.testing.assert_array_equal(np.asarray(quantized), np.repeat(codebook, 3, axis=0))


def test_vector_quantize_flags_vectors_holding_nan():
    codebook = np.array([[0.0, 0.0], [1.0, 1.0]], "float32")
    z = np.array([[[0.9, np.nan], [0.9, 0.8]], [[0.1, 0.2], [np.nan, np.nan]]], "float32")
    quantized, indices = dab_ops.vector_quantize(z, codebook)
    quantized, indices = np.asarray(quantized), np.asarray(indices)
    np.testing.assert_array_equal(indices, [[-1, 1], [0, -1]])
    assert np.isnan(quantized[0, 0]).all() and np.isnan(quantized[1, 1]).all()
    np.testing.assert_array_equal(quantized[0, 1], [1.0, 1.0])
    np.testing.assert_array_equal(quantized[1, 0], [0.0, 0.0])


def test_soft_vector_quantize_matches_numpy(rng):
    z = rng.normal(size=(3, 4, 2)).astype("float32")
    codebook = rng.normal(size=(5, 2)).astype("float32")
    y = np.asarray(dab_ops.soft_vector_quantize(z, codebook, 0.7))
    assert y.shape == z.shape
    np.testing.assert_allclose(y, soft_vq_reference(z, codebook, 0.7), rtol=1e-4, atol=1e-5)


def test_soft_vector_quantize_limits(rng):
    codebook = rng.normal(size=(6, 3)).astype("float32")
    z = rng.normal(size=(20, 3)).astype("float32")
    d = np.sort(distances_reference(z, codebook), axis=-1)
    clear = d[:, 1] - d[:, 0] > 0.05
    hard = np.asarray(dab_ops.vector_quantize(z, codebook)[0])
    previous = np.inf
    for tau in (1.0, 0.1, 0.01, 0.001):
        gap = np.abs(np.asarray(dab_ops.soft_vector_quantize(z, codebook, tau)) - hard)[clear].max()
        assert gap <= previous + 1e-6
        previous = gap
    assert previous < 1e-4
    # At high temperature the weights are uniform: every vector goes to the mean code.
    far = np.asarray(dab_ops.soft_vector_quantize(z, codebook, 1e6))
    np.testing.assert_allclose(far, np.broadcast_to(codebook.mean(axis=0), z.shape), atol=1e-4)


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_soft_vector_quantize_gradient_wrt_inputs(rng, tau):
    codebook = gradients.dyadic(rng.normal(size=(4, 3)))
    z = rng.normal(size=(2, 3))
    gradients.check_vjp(lambda v: dab_ops.soft_vector_quantize(v, codebook, tau), z)


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_soft_vector_quantize_gradient_wrt_codebook(rng, tau):
    z = gradients.dyadic(rng.normal(size=(3, 2)))
    codebook = rng.normal(size=(4, 2))
    grad, _ = gradients.check_vjp(lambda e: dab_ops.soft_vector_quantize(z, e, tau), codebook)
    assert np.abs(grad).max() > 1e-3


@pytest.mark.parametrize("tau", [0.01, 1.0])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_soft_vector_quantize_gradients_are_finite(rng, tau, scale):
    z = (scale * rng.normal(size=(4, 2))).astype("float32")
    codebook = rng.normal(size=(5, 2)).astype("float32")
    upstream = rng.normal(size=z.shape)
    y = np.asarray(dab_ops.soft_vector_quantize(z, codebook, tau))
    grad_z = gradients.vjp(lambda v: dab_ops.soft_vector_quantize(v, codebook, tau), z, upstream)
    grad_e = gradients.vjp(lambda e: dab_ops.soft_vector_quantize(z, e, tau), codebook, upstream)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad_z)) and np.all(np.isfinite(grad_e))
