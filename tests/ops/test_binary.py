"""sign / soft_sign: hard forward against NumPy, tanh relaxation gradients, limits and NaN handling."""

import gradients
import numpy as np
import pytest

from dab_keras import ops as dab_ops


def sign_reference(x, margin=0.0):
    x = np.asarray(x)
    if margin == 0.0:
        out = np.where(x >= 0, 1.0, -1.0)
    else:
        out = np.where(x > margin, 1.0, np.where(x < -margin, -1.0, 0.0))
    return np.where(np.isnan(x), np.nan, out).astype(x.dtype)


def soft_sign_reference(x, tau, margin=0.0):
    return 0.5 * (np.tanh((x - margin) / tau) + np.tanh((x + margin) / tau))


@pytest.mark.parametrize("dtype", ["float32", gradients.compute_dtype()])
def test_sign_matches_numpy_without_margin(rng, dtype):
    x = rng.normal(size=(4, 7)).astype(dtype)
    x[0, :4] = [0.0, -0.0, 1e-30, -1e-30]
    y = np.asarray(dab_ops.sign(x))
    assert y.shape == x.shape
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, sign_reference(x))
    assert set(np.unique(y)) <= {-1.0, 1.0}


def test_sign_of_zero_is_plus_one():
    np.testing.assert_array_equal(np.asarray(dab_ops.sign(np.zeros((2, 3), "float32"))), np.ones((2, 3)))
    np.testing.assert_array_equal(np.asarray(dab_ops.sign(np.array([-0.0], "float32"))), [1.0])


@pytest.mark.parametrize("margin", [0.25, 0.3, 1.0])
def test_sign_with_margin_matches_numpy_incl_boundary(rng, margin):
    m = np.float32(margin)
    boundary = np.array([-m, m, np.nextafter(m, np.float32(2)), -np.nextafter(m, np.float32(2)),
                         np.nextafter(m, np.float32(0)), 0.0], dtype="float32")
    x = np.concatenate([boundary, rng.uniform(-2, 2, size=20).astype("float32")]).reshape(2, -1)
    y = np.asarray(dab_ops.sign(x, margin=margin))
    np.testing.assert_array_equal(y, sign_reference(x, m))
    # |x| <= m is the dead zone; just outside it the sign is ±1.
    np.testing.assert_array_equal(y.ravel()[:6], [0.0, 0.0, 1.0, -1.0, 0.0, 0.0])
    assert set(np.unique(y)) <= {-1.0, 0.0, 1.0}


def test_sign_nan_and_inf():
    x = np.array([np.nan, np.inf, -np.inf, 0.0], "float32")
    for margin in (0.0, 0.5):
        y = np.asarray(dab_ops.sign(x, margin=margin))
        assert np.isnan(y[0])
        np.testing.assert_array_equal(y[1:], [1.0, -1.0, 1.0 if margin == 0.0 else 0.0])


@pytest.mark.parametrize("margin", [-0.1, float("nan"), float("inf"), "0.5", True])
def test_sign_rejects_bad_margin(margin):
    with pytest.raises(ValueError, match="margin"):
        dab_ops.sign(np.zeros(3), margin=margin)
    with pytest.raises(ValueError, match="margin"):
        dab_ops.soft_sign(np.zeros(3), 1.0, margin=margin)


@pytest.mark.parametrize("margin", [0.0, 0.4])
def test_soft_sign_value_matches_numpy(rng, margin):
    x = rng.normal(size=(3, 5)).astype("float32")
    y = np.asarray(dab_ops.soft_sign(x, 0.7, margin=margin))
    np.testing.assert_allclose(y, soft_sign_reference(x.astype("float64"), 0.7, margin), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(y) < 1)


@pytest.mark.parametrize("margin", [0.0, 0.4])
@pytest.mark.parametrize("tau", [0.3, 2.0])
def test_soft_sign_gradient_matches_finite_differences(rng, margin, tau):
    x = rng.uniform(-1.5, 1.5, size=(2, 3))
    x[0, :2] = [margin, -margin]
    gradients.check_vjp(lambda v: dab_ops.soft_sign(v, tau, margin=margin), x)
    # Element-wise op: the Jacobian is diagonal.
    jac = gradients.jacobian(lambda v: dab_ops.soft_sign(v, tau, margin=margin), gradients.dyadic(x))
    jac = jac.reshape(x.size, x.size)
    np.testing.assert_array_equal(jac - np.diag(np.diag(jac)), 0.0)


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_soft_sign_tends_to_sign(margin):
    x = np.array([-3.0, -1.0, -0.6, -0.4, -0.1, 0.1, 0.4, 0.6, 1.0, 3.0], "float32")
    if margin == 0.0:
        x = x[np.abs(x) > 0.05]
    previous = np.inf
    for tau in (1.0, 0.1, 0.01, 0.001):
        gap = np.abs(np.asarray(dab_ops.soft_sign(x, tau, margin=margin)) - sign_reference(x, margin)).max()
        assert gap <= previous + 1e-7
        previous = gap
    assert previous < 1e-4


def test_soft_sign_is_odd_and_zero_at_zero(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    for margin in (0.0, 0.3):
        y = np.asarray(dab_ops.soft_sign(x, 0.5, margin=margin))
        np.testing.assert_allclose(np.asarray(dab_ops.soft_sign(-x, 0.5, margin=margin)), -y, atol=1e-6)
        assert float(np.asarray(dab_ops.soft_sign(np.zeros(1, "float32"), 0.5, margin=margin))[0]) == 0.0


@pytest.mark.parametrize("margin", [0.0, 0.5])
@pytest.mark.parametrize("tau", [0.01, 1.0])
def test_soft_sign_gradient_is_finite_for_extreme_inputs(margin, tau):
    x = np.array([[-1e3, -50.0, -0.5, 0.0, 1e-3, 0.5, 50.0, 1e3]], "float32")
    y = np.asarray(dab_ops.soft_sign(x, tau, margin=margin))
    grad = gradients.vjp(lambda v: dab_ops.soft_sign(v, tau, margin=margin), x, np.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad))
    assert np.all(grad >= 0)
    # At a step, (1 - tanh²)/τ: 1/τ at 0 without margin; at x = m, ½(1 + 1 - tanh²(2m/τ))/τ.
    step = 3 if margin == 0.0 else 5
    expected = 1.0 / tau if margin == 0.0 else 0.5 * (2.0 - np.tanh(2 * margin / tau) ** 2) / tau
    np.testing.assert_allclose(grad[0, step], expected, rtol=1e-4)
