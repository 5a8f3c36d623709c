"""Property tests over random shapes, inputs and temperatures: shapes, discrete outputs, sums, finiteness.

Each test runs all of its ops in one `gradients.hard_soft_and_grad` call (one compilation per shape on
JAX) and checks that the gradient of a random projection of every relaxation is finite.
"""

import gradients
import keras
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dab_keras import ops as dab_ops

# On JAX every new shape costs an XLA compilation (~0.3 s on CPU), so fewer examples run there.
PROPERTY_SETTINGS = settings(
    max_examples=25 if keras.backend.backend() == "tensorflow" else 10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

temperatures = st.floats(0.01, 10.0)
directions = st.sampled_from(["ascending", "descending"])


@st.composite
def batches(draw, max_abs=10.0):
    """A float32 array of shape (batch, n), batch in 1..4 and n in 2..8, with ties and zeros allowed."""
    shape = (draw(st.integers(1, 4)), draw(st.integers(2, 8)))
    elements = st.floats(-max_abs, max_abs, width=32, allow_subnormal=False)
    return draw(hnp.arrays(np.float32, shape, elements=elements))


def upstreams_for(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in shapes]


def assert_all_finite(*arrays):
    for a in arrays:
        assert np.all(np.isfinite(a)), a


# --------------------------------------------------------------------------- element-wise


def elementwise_ops(x, tau, margin, levels):
    hard = (dab_ops.sign(x, margin), dab_ops.quantize(x, levels, -2.0, 3.0))
    soft = (dab_ops.soft_sign(x, tau, margin), dab_ops.soft_quantize(x, levels, tau, -2.0, 3.0))
    return hard, soft


@PROPERTY_SETTINGS
@given(x=batches(), tau=temperatures, margin=st.sampled_from([0.0, 0.5, 2.0]), levels=st.integers(2, 6))
def test_elementwise_ops(x, tau, margin, levels):
    (sign, q), (soft_sign, soft_q), (grad,) = gradients.hard_soft_and_grad(
        elementwise_ops, (x,), upstreams_for(x.shape, x.shape), params=(tau,), static=(margin, levels)
    )
    for y in (sign, q, soft_sign, soft_q):
        assert y.shape == x.shape
    assert_all_finite(soft_sign, soft_q, grad)

    allowed = {-1.0, 1.0} if margin == 0.0 else {-1.0, 0.0, 1.0}
    assert set(np.unique(sign)) <= allowed
    np.testing.assert_array_equal(sign == 0, np.abs(x) <= np.float32(margin) if margin else False)
    np.testing.assert_array_equal(sign > 0, x > np.float32(margin) if margin else x >= 0)
    assert np.all(np.abs(soft_sign) <= 1)

    grid = np.linspace(-2.0, 3.0, levels)
    distance_to_grid = np.abs(q[..., None] - grid).min(axis=-1)
    assert distance_to_grid.max() < 1e-5
    # The chosen level is a nearest one to the clipped input (up to round-off at midpoints).
    clipped = np.clip(x, -2.0, 3.0)
    assert np.all(np.abs(q - clipped) <= np.abs(clipped[..., None] - grid).min(axis=-1) + 1e-5)
    assert np.all(soft_q >= -2.0) and np.all(soft_q <= 3.0)


# --------------------------------------------------------------------------- selection


def selection_ops(x, tau, k):
    hard = (dab_ops.one_hot_argmax(x), dab_ops.top_k_mask(x, k))
    soft = (dab_ops.tempered_softmax(x, tau), dab_ops.soft_top_k(x, k, tau))
    return hard, soft


@PROPERTY_SETTINGS
@given(x=batches(), tau=temperatures, data=st.data())
def test_selection_ops(x, tau, data):
    k = data.draw(st.integers(1, x.shape[-1]), label="k")
    (one_hot, mask), (softmax, soft_mask), (grad,) = gradients.hard_soft_and_grad(
        selection_ops, (x,), upstreams_for(x.shape, x.shape), params=(tau,), static=(k,)
    )
    for y in (one_hot, mask, softmax, soft_mask):
        assert y.shape == x.shape
    assert_all_finite(softmax, soft_mask, grad)

    assert set(np.unique(one_hot)) <= {0.0, 1.0}
    np.testing.assert_array_equal(one_hot.sum(axis=-1), 1.0)
    np.testing.assert_array_equal(x[one_hot == 1], x.max(axis=-1))

    assert set(np.unique(mask)) <= {0.0, 1.0}
    np.testing.assert_array_equal(mask.sum(axis=-1), k)
    kept_min = np.where(mask == 1, x, np.inf).min(axis=-1)
    dropped_max = np.where(mask == 0, x, -np.inf).max(axis=-1)
    assert np.all(kept_min >= dropped_max)

    np.testing.assert_allclose(softmax.sum(axis=-1), 1.0, rtol=1e-5)
    assert np.all(soft_mask >= 0) and np.all(soft_mask <= 1)
    np.testing.assert_allclose(soft_mask.sum(axis=-1), k, atol=1e-3)


# --------------------------------------------------------------------------- sorting


def sorting_ops(x, tau, direction):
    hard = (dab_ops.sort(x, direction), dab_ops.permutation_matrix(x, direction), dab_ops.argsort(x, direction))
    soft = (dab_ops.neural_sort(x, tau, direction), dab_ops.soft_sort(x, tau, direction))
    return hard, soft


@PROPERTY_SETTINGS
@given(x=batches(), tau=temperatures, direction=directions)
def test_sorting_ops(x, tau, direction):
    b, n = x.shape
    (values, p, idx), (p_neural, p_soft), (grad,) = gradients.hard_soft_and_grad(
        sorting_ops, (x,), upstreams_for((b, n, n), (b, n, n)), params=(tau,), static=(direction,)
    )
    assert_all_finite(p_neural, p_soft, grad)
    expected = np.sort(x, axis=-1)
    if direction == "descending":
        expected = expected[..., ::-1]
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(np.take_along_axis(x, idx.astype(np.int64), axis=-1), expected)

    assert p.shape == (b, n, n) and set(np.unique(p)) <= {0.0, 1.0}
    np.testing.assert_array_equal(p.sum(axis=-1), 1.0)
    np.testing.assert_array_equal(p.sum(axis=-2), 1.0)
    np.testing.assert_array_equal(np.einsum("bij,bj->bi", p, x), expected)

    for relaxed in (p_neural, p_soft):
        assert relaxed.shape == (b, n, n) and np.all(relaxed >= 0)
        np.testing.assert_allclose(relaxed.sum(axis=-1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- vector quantization


def vq_ops(z, codebook, tau):
    quantized, indices = dab_ops.vector_quantize(z, codebook)
    return (quantized, indices), (dab_ops.soft_vector_quantize(z, codebook, tau),)


@PROPERTY_SETTINGS
@given(z=batches(max_abs=5.0), tau=temperatures, num_codes=st.integers(2, 5), data=st.data())
def test_vector_quantization_ops(z, tau, num_codes, data):
    elements = st.floats(-5, 5, width=32, allow_subnormal=False)
    codebook = data.draw(hnp.arrays(np.float32, (num_codes, z.shape[-1]), elements=elements), label="codebook")
    (quantized, indices), (soft,), (grad_z, grad_codebook) = gradients.hard_soft_and_grad(
        vq_ops, (z, codebook), upstreams_for(z.shape), params=(tau,)
    )
    assert quantized.shape == z.shape and indices.shape == z.shape[:-1] and soft.shape == z.shape
    assert_all_finite(soft, grad_z, grad_codebook)
    assert np.all((indices >= 0) & (indices < num_codes))
    np.testing.assert_array_equal(quantized, codebook[indices])
    d = np.sum((z[:, None, :].astype(np.float64) - codebook) ** 2, axis=-1)
    chosen = np.take_along_axis(d, indices[:, None].astype(np.int64), axis=-1)[:, 0]
    assert np.all(chosen <= d.min(axis=-1) + 1e-3 * (1 + d.min(axis=-1)))
    # A convex combination of codes stays inside their bounding box.
    assert np.all(soft >= codebook.min(axis=0) - 1e-4) and np.all(soft <= codebook.max(axis=0) + 1e-4)
