"""quantize / soft_quantize: nearest-level forward against NumPy, staircase relaxation and its limits."""

import gradients
import numpy as np
import pytest

from dab_keras import ops as dab_ops

GRIDS = [(2, -1.0, 1.0), (3, -1.0, 1.0), (5, 0.0, 1.0), (4, -2.0, 3.0), (16, 0.0, 255.0)]


def levels_of(levels, a, b):
    return np.linspace(a, b, levels)


def quantize_reference(x, levels, a, b):
    """Nearest level by exhaustive search (ties are avoided by the callers)."""
    grid = levels_of(levels, a, b)
    x = np.asarray(x, np.float64)
    nearest = grid[np.argmin(np.abs(x[..., None] - grid), axis=-1)]
    return np.where(np.isnan(x), np.nan, nearest)


def away_from_midpoints(x, levels, a, b, gap):
    grid = levels_of(levels, a, b)
    midpoints = 0.5 * (grid[1:] + grid[:-1])
    return np.abs(np.asarray(x, np.float64)[..., None] - midpoints).min(axis=-1) > gap


@pytest.mark.parametrize("levels,a,b", GRIDS)
def test_quantize_matches_nearest_level(rng, levels, a, b):
    width = b - a
    x = rng.uniform(a - 0.5 * width, b + 0.5 * width, size=(6, 50)).astype("float32")
    keep = away_from_midpoints(x, levels, a, b, 1e-4 * width)
    y = np.asarray(dab_ops.quantize(x, levels, a, b))
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y[keep], quantize_reference(x, levels, a, b)[keep], rtol=0, atol=1e-6 * width)
    # Every output is one of the levels.
    grid = levels_of(levels, a, b)
    assert np.abs(y[..., None] - grid).min(axis=-1).max() < 1e-6 * max(width, abs(a), abs(b))


@pytest.mark.parametrize("levels,a,b", GRIDS)
def test_quantize_clips_to_the_range(levels, a, b):
    width = b - a
    x = np.array([a - 10 * width, a - 1e-3, a, b, b + 1e-3, b + 10 * width, -np.inf, np.inf], "float32")
    y = np.asarray(dab_ops.quantize(x, levels, a, b))
    np.testing.assert_allclose(y, [a, a, a, b, b, b, a, b], atol=1e-5 * max(abs(a), abs(b), 1))


def test_quantize_rounds_exact_midpoints_half_to_even():
    # levels=5 on [-1, 1]: spacing 0.5, level indices 0..4; midpoints sit at index + 0.5.
    x = np.array([-0.75, -0.25, 0.25, 0.75], "float32")
    np.testing.assert_array_equal(np.asarray(dab_ops.quantize(x, 5)), [-1.0, 0.0, 0.0, 1.0])


def test_quantize_keeps_nan():
    y = np.asarray(dab_ops.quantize(np.array([[np.nan, 0.3, -2.0]], "float32"), 3))
    assert np.isnan(y[0, 0])
    np.testing.assert_array_equal(y[0, 1:], [0.0, -1.0])


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"levels": 1}, "levels"),
        ({"levels": 2.5}, "levels"),
        ({"levels": True}, "levels"),
        ({"levels": 3, "min_value": 1.0, "max_value": 1.0}, "min_value"),
        ({"levels": 3, "min_value": 2.0, "max_value": 1.0}, "min_value"),
        ({"levels": 3, "min_value": "0"}, "min_value"),
    ],
)
def test_quantize_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        dab_ops.quantize(np.zeros(3, "float32"), **kwargs)
    with pytest.raises(ValueError, match=name):
        dab_ops.soft_quantize(np.zeros(3, "float32"), temperature=0.5, **kwargs)


@pytest.mark.parametrize("levels,a,b", GRIDS[:4])
def test_soft_quantize_tends_to_quantize(rng, levels, a, b):
    width = b - a
    x = rng.uniform(a - 0.3 * width, b + 0.3 * width, size=(4, 40)).astype("float32")
    keep = away_from_midpoints(x, levels, a, b, 0.02 * width / (levels - 1))
    hard = quantize_reference(x, levels, a, b)
    previous = np.inf
    for tau in (0.5, 0.1, 0.02, 0.002):
        soft = np.asarray(dab_ops.soft_quantize(x, levels, tau, a, b))
        assert soft.shape == x.shape
        gap = np.abs(soft - hard)[keep].max()
        assert gap <= previous + 1e-6
        previous = gap
    assert previous < 1e-4 * width


def test_soft_quantize_steps_are_centred_on_midpoints():
    # At the midpoint between two levels the staircase is halfway up that step.
    levels, a, b = 4, -1.0, 2.0
    grid = levels_of(levels, a, b)
    midpoints = 0.5 * (grid[1:] + grid[:-1])
    y = np.asarray(dab_ops.soft_quantize(midpoints.astype("float32"), levels, 0.01, a, b))
    np.testing.assert_allclose(y, midpoints, atol=1e-5)


@pytest.mark.parametrize("tau", [0.05, 1.0, 10.0])
def test_soft_quantize_is_increasing_and_inside_the_range(tau):
    x = np.linspace(-3, 3, 601).astype("float32")
    y = np.asarray(dab_ops.soft_quantize(x, 5, tau))
    assert np.all(np.diff(y) >= 0)
    assert np.all(y >= -1.0) and np.all(y <= 1.0)


@pytest.mark.parametrize("levels,a,b,tau", [(3, -1.0, 1.0, 0.3), (5, 0.0, 2.0, 0.25), (2, -1.0, 1.0, 0.5)])
def test_soft_quantize_gradient_matches_finite_differences(rng, levels, a, b, tau):
    x = rng.uniform(a - 0.2, b + 0.2, size=(2, 4))
    gradients.check_vjp(lambda v: dab_ops.soft_quantize(v, levels, tau, a, b), x)


@pytest.mark.parametrize("tau", [0.01, 1.0])
def test_soft_quantize_gradient_is_finite_for_extreme_inputs(tau):
    x = np.array([[-1e3, -30.0, -1.0, -0.5, 0.0, 0.5, 1.0, 30.0, 1e3]], "float32")
    y = np.asarray(dab_ops.soft_quantize(x, 3, tau))
    grad = gradients.vjp(lambda v: dab_ops.soft_quantize(v, 3, tau), x, np.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad))
    assert np.all(grad >= 0)
    # At a step (x = ±0.5, spacing Δ = 1) the slope is σ'(0)·Δ/(τΔ) = 1/(4τ), plus the other step's tail.
    assert grad[0, 3] == pytest.approx(grad[0, 5])
    assert grad[0, 3] >= 0.25 / tau * (1 - 1e-4)
