"""Sorting: argsort / sort / permutation matrices against NumPy; NeuralSort and SoftSort relaxations."""

import gradients
import numpy as np
import pytest

from dab_keras import ops as dab_ops

DIRECTIONS = ["ascending", "descending"]


def argsort_reference(x, direction):
    x = np.asarray(x)
    return np.argsort(x if direction == "ascending" else -x, axis=-1, kind="stable")


def sort_reference(x, direction):
    out = np.sort(np.asarray(x), axis=-1)
    return out if direction == "ascending" else out[..., ::-1]


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def neural_sort_reference(x, tau, direction="descending"):
    """Grover et al. 2019, eq. 5: P̂[i, :] = softmax(((n + 1 - 2i) s - A_s 1) / τ), i = 1..n (descending)."""
    s = np.asarray(x, np.float64)
    if direction == "ascending":
        s = -s
    n = s.shape[-1]
    a_one = np.abs(s[..., :, None] - s[..., None, :]).sum(axis=-1)
    i = np.arange(1, n + 1)[:, None]
    return softmax(((n + 1 - 2 * i) * s[..., None, :] - a_one[..., None, :]) / tau)


def soft_sort_reference(x, tau, direction="descending"):
    """Prillo & Eisenschlos 2020: P̂ = softmax(-|sort(s) 1ᵀ - 1 sᵀ| / τ) over rows."""
    x = np.asarray(x, np.float64)
    sorted_x = sort_reference(x, direction)
    return softmax(-np.abs(sorted_x[..., :, None] - x[..., None, :]) / tau)


def distinct(rng, shape, gap=0.2):
    """Entries whose sorted neighbours differ by at least `gap`."""
    n = shape[-1]
    rows = [rng.permutation(n) * gap + rng.uniform(-1, 1) for _ in range(int(np.prod(shape[:-1])))]
    return np.asarray(rows, "float32").reshape(shape)


# --------------------------------------------------------------------------- hard ops


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", [(6,), (3, 5), (2, 3, 4)])
def test_argsort_sort_and_permutation_matrix_match_numpy(rng, direction, shape):
    x = rng.normal(size=shape).astype("float32")
    idx = np.asarray(dab_ops.argsort(x, direction))
    assert idx.dtype == np.int32 and idx.shape == shape
    np.testing.assert_array_equal(idx, argsort_reference(x, direction))
    np.testing.assert_array_equal(np.asarray(dab_ops.sort(x, direction)), sort_reference(x, direction))
    p = np.asarray(dab_ops.permutation_matrix(x, direction))
    assert p.shape == shape + (shape[-1],) and p.dtype == np.float32
    np.testing.assert_array_equal(p.sum(axis=-1), 1.0)
    np.testing.assert_array_equal(p.sum(axis=-2), 1.0)
    assert set(np.unique(p)) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.einsum("...ij,...j->...i", p, x), sort_reference(x, direction))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_sorting_with_ties_is_stable(rng, direction):
    x = rng.integers(0, 3, size=(10, 7)).astype("float32")
    np.testing.assert_array_equal(np.asarray(dab_ops.argsort(x, direction)), argsort_reference(x, direction))
    p = np.asarray(dab_ops.permutation_matrix(x, direction))
    np.testing.assert_array_equal(p.sum(axis=-2), 1.0)
    np.testing.assert_array_equal(np.einsum("...ij,...j->...i", p, x), sort_reference(x, direction))
    ties = np.array([2.0, 1.0, 2.0, 1.0], "float32")
    expected = [1, 3, 0, 2] if direction == "ascending" else [0, 2, 1, 3]
    np.testing.assert_array_equal(np.asarray(dab_ops.argsort(ties, direction)), expected)


def test_every_sort_op_defaults_to_ascending(rng):
    x = distinct(rng, (2, 5))
    ascending = np.asarray(dab_ops.permutation_matrix(x, "ascending"))
    np.testing.assert_array_equal(np.asarray(dab_ops.sort(x)), np.sort(x, axis=-1))
    np.testing.assert_array_equal(np.asarray(dab_ops.argsort(x)), np.argsort(x, axis=-1))
    np.testing.assert_array_equal(np.asarray(dab_ops.permutation_matrix(x)), ascending)
    np.testing.assert_array_equal(np.asarray(dab_ops.rank(x)), np.argsort(np.argsort(x, axis=-1), axis=-1) + 1)
    for fn in (dab_ops.neural_sort, dab_ops.soft_sort):
        np.testing.assert_allclose(np.asarray(fn(x, 1e-3)), ascending, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dab_ops.soft_sort_values(x, 1e-3)), np.sort(x, axis=-1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(dab_ops.soft_rank(x, 1e-3)), np.asarray(dab_ops.rank(x)), atol=1e-4)


@pytest.mark.parametrize("fn", ["argsort", "sort", "permutation_matrix"])
def test_invalid_direction(fn):
    with pytest.raises(ValueError, match="direction"):
        getattr(dab_ops, fn)(np.zeros(3, "float32"), direction="up")
    with pytest.raises(ValueError, match="direction"):
        dab_ops.neural_sort(np.zeros(3, "float32"), 1.0, direction="down")
    with pytest.raises(ValueError, match="direction"):
        dab_ops.soft_sort(np.zeros(3, "float32"), 1.0, direction="Ascending")


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_hard_sorting_flags_slices_holding_nan(direction):
    x = np.array([[0.3, np.nan, -1.0], [0.3, 2.0, -1.0]], "float32")
    values = np.asarray(dab_ops.sort(x, direction))
    assert np.isnan(values[0]).all()
    np.testing.assert_array_equal(values[1], sort_reference(x[1], direction))
    idx = np.asarray(dab_ops.argsort(x, direction))
    np.testing.assert_array_equal(idx[0], -1)
    np.testing.assert_array_equal(idx[1], argsort_reference(x[1], direction))
    p = np.asarray(dab_ops.permutation_matrix(x, direction))
    assert p.shape == (2, 3, 3) and np.isnan(p[0]).all()
    np.testing.assert_array_equal(p[1] @ x[1], sort_reference(x[1], direction))


# --------------------------------------------------------------------------- relaxations


RELAXATIONS = {"neural_sort": neural_sort_reference, "soft_sort": soft_sort_reference}


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_relaxation_matches_the_paper_formula(rng, name, direction):
    x = rng.normal(size=(2, 3, 5)).astype("float32")
    for tau in (0.3, 2.0):
        p = np.asarray(getattr(dab_ops, name)(x, tau, direction))
        assert p.shape == (2, 3, 5, 5)
        np.testing.assert_allclose(p, RELAXATIONS[name](x, tau, direction), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)
        assert np.all(p >= 0)


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_relaxation_tends_to_the_permutation_matrix(rng, name, direction):
    x = distinct(rng, (3, 6))
    hard = np.asarray(dab_ops.permutation_matrix(x, direction))
    fn = getattr(dab_ops, name)
    previous = np.inf
    for tau in (1.0, 0.1, 0.01, 0.001):
        p = np.asarray(fn(x, tau, direction))
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)
        gap = np.abs(p - hard).max()
        assert gap <= previous + 1e-6
        previous = gap
    assert previous < 1e-5
    # The relaxed sorted values P̂ x approach the sorted values.
    values = np.einsum("...ij,...j->...i", np.asarray(fn(x, 0.01, direction)), x)
    np.testing.assert_allclose(values, sort_reference(x, direction), atol=1e-3)


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
def test_relaxation_directions_are_mirror_images(rng, name):
    x = rng.normal(size=(2, 5)).astype("float32")
    fn = getattr(dab_ops, name)
    ascending = np.asarray(fn(x, 0.5, "ascending"))
    # Sorting x ascending is sorting -x descending; it is also the descending matrix with rows reversed.
    np.testing.assert_allclose(ascending, np.asarray(fn(-x, 0.5, "descending")), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ascending, np.asarray(fn(x, 0.5, "descending"))[..., ::-1, :], rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_relaxation_gradient_matches_finite_differences(rng, name, direction):
    fn = getattr(dab_ops, name)
    x = distinct(rng, (2, 4), gap=0.3)
    grad, _ = gradients.check_vjp(lambda v: fn(v, 0.5, direction), x)
    assert np.abs(grad).max() > 1e-2


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
@pytest.mark.parametrize("tau", [0.01, 1.0])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_relaxation_gradients_are_finite(rng, name, tau, scale):
    fn = getattr(dab_ops, name)
    x = (scale * rng.normal(size=(2, 5))).astype("float32")
    x[0, :2] = x[0, 2]  # ties
    upstream = rng.normal(size=(2, 5, 5))
    for direction in DIRECTIONS:
        p = np.asarray(fn(x, tau, direction))
        grad = gradients.vjp(lambda v, d=direction: fn(v, tau, d), x, upstream)
        assert np.all(np.isfinite(p)) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_neural_sort_matches_tfp_soft_sorting_matrix(rng, tau):
    import tensorflow as tf
    import tensorflow_probability as tfp

    x = rng.normal(size=(3, 6)).astype("float32")
    descending = tfp.math.soft_sorting_matrix(tf.constant(x), tf.constant(tau, tf.float32)).numpy()
    ascending = tfp.math.soft_sorting_matrix(tf.constant(-x), tf.constant(tau, tf.float32)).numpy()
    np.testing.assert_allclose(np.asarray(dab_ops.neural_sort(x, tau, "descending")), descending, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(dab_ops.neural_sort(x, tau)), ascending, rtol=1e-5, atol=1e-6)
