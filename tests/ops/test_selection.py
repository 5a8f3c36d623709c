"""Selection ops: one-hot argmax, softmax, Gumbel sampling, top-k masks and the soft top-k (LML) mask."""

import gradients
import numpy as np
import pytest

from dab_keras import ops as dab_ops

EULER_GAMMA = 0.5772156649015329


def softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def one_hot_argmax_reference(x, axis=-1):
    x = np.moveaxis(np.asarray(x), axis, -1)
    out = np.eye(x.shape[-1])[np.argmax(x, axis=-1)]  # np.argmax returns the first maximum.
    return np.moveaxis(out, -1, axis)


def top_k_reference(x, k, axis=-1):
    x = np.moveaxis(np.asarray(x), axis, -1)
    order = np.argsort(-x, axis=-1, kind="stable")  # ties: the lower index ranks first
    out = np.zeros(x.shape)
    np.put_along_axis(out, order[..., :k], 1.0, axis=-1)
    return np.moveaxis(out, -1, axis)


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return np.abs(cdf_a - cdf_b).max()


def chi_square(counts, probabilities):
    expected = counts.sum() * np.asarray(probabilities)
    return float(np.sum((counts - expected) ** 2 / expected))


# --------------------------------------------------------------------------- one_hot_argmax


@pytest.mark.parametrize("shape,axis", [((5, 7), -1), ((5, 7), 1), ((4, 3, 6), 1), ((4, 3, 6), 0), ((2, 3, 4), -1)])
def test_one_hot_argmax_matches_numpy(rng, shape, axis):
    x = rng.normal(size=shape).astype("float32")
    y = np.asarray(dab_ops.one_hot_argmax(x, axis=axis))
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, one_hot_argmax_reference(x, axis))
    np.testing.assert_array_equal(y.sum(axis=axis), 1.0)


def test_one_hot_argmax_ties_go_to_the_first_maximum(rng):
    x = rng.integers(0, 3, size=(40, 6)).astype("float32")
    x[0] = 2.0
    y = np.asarray(dab_ops.one_hot_argmax(x))
    np.testing.assert_array_equal(y, one_hot_argmax_reference(x))
    np.testing.assert_array_equal(y[0], [1, 0, 0, 0, 0, 0])


def test_one_hot_argmax_nan_rows():
    x = np.array([[0.1, np.nan, 0.3], [0.5, 2.0, -1.0], [np.nan, np.nan, np.nan]], "float32")
    y = np.asarray(dab_ops.one_hot_argmax(x))
    assert np.isnan(y[0]).all() and np.isnan(y[2]).all()
    np.testing.assert_array_equal(y[1], [0, 1, 0])
    # Along axis 0 the slices are columns: only the column holding a NaN becomes NaN.
    y0 = np.asarray(dab_ops.one_hot_argmax(x[:2], axis=0))
    assert np.isnan(y0[:, 1]).all()
    np.testing.assert_array_equal(y0[:, [0, 2]], [[0, 1], [1, 0]])


# --------------------------------------------------------------------------- tempered_softmax


@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_tempered_softmax_matches_numpy(rng, tau):
    x = rng.normal(size=(3, 5)).astype("float32")
    y = np.asarray(dab_ops.tempered_softmax(x, tau))
    np.testing.assert_allclose(y, softmax(x / tau), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-6)
    y0 = np.asarray(dab_ops.tempered_softmax(x, tau, axis=0))
    np.testing.assert_allclose(y0, softmax(x / tau, axis=0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_tempered_softmax_gradient(rng, tau):
    x = rng.normal(size=(2, 4))
    gradients.check_vjp(lambda v: dab_ops.tempered_softmax(v, tau), x)
    gradients.check_vjp(lambda v: dab_ops.tempered_softmax(v, tau, axis=0), x)
    # Hand formula: (diag(p) - p pᵀ)/τ.
    row = gradients.dyadic(x[0])
    p = softmax(row.astype(np.float64) / tau)
    jac = gradients.jacobian(lambda v: dab_ops.tempered_softmax(v, tau), row)
    np.testing.assert_allclose(jac, (np.diag(p) - np.outer(p, p)) / tau, rtol=1e-4, atol=1e-6)


def test_tempered_softmax_tends_to_one_hot(rng):
    x = rng.permutation(8).astype("float32").reshape(2, 4) * 0.1
    hard = one_hot_argmax_reference(x)
    for tau, tol in ((0.05, 0.2), (0.005, 1e-6)):
        np.testing.assert_allclose(np.asarray(dab_ops.tempered_softmax(x, tau)), hard, atol=tol)


# --------------------------------------------------------------------------- Gumbel sampling


def test_gumbel_noise_moments_and_seeding():
    g = np.asarray(dab_ops.gumbel_noise((200_000,), seed=1))
    assert g.dtype == np.float32 and np.all(np.isfinite(g))
    # Gumbel(0, 1): mean = Euler's γ, variance = π²/6; standard errors ≈ 0.003 and 0.01.
    assert abs(g.mean() - EULER_GAMMA) < 0.015
    assert abs(g.var() - np.pi**2 / 6) < 0.05
    # Median = -log(log 2).
    assert abs(np.median(g) + np.log(np.log(2.0))) < 0.015
    np.testing.assert_array_equal(np.asarray(dab_ops.gumbel_noise((5,), seed=3)),
                                  np.asarray(dab_ops.gumbel_noise((5,), seed=3)))
    import keras

    generator = keras.random.SeedGenerator(0)
    a = np.asarray(dab_ops.gumbel_noise((2, 3), seed=generator))
    b = np.asarray(dab_ops.gumbel_noise((2, 3), seed=generator))
    assert a.shape == (2, 3) and not np.array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_gumbel_noise_in_narrow_and_wide_dtypes_is_finite_gumbel(dtype):
    import keras

    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX without x64 has no float64")
    g = dab_ops.gumbel_noise((100_000,), seed=4, dtype=dtype)
    assert keras.backend.standardize_dtype(g.dtype) == dtype
    g = np.asarray(keras.ops.cast(g, "float32"))
    assert np.all(np.isfinite(g))
    assert abs(g.mean() - EULER_GAMMA) < 0.03
    assert abs(g.var() - np.pi**2 / 6) < 0.1


def test_gumbel_noise_rejects_an_integer_dtype():
    with pytest.raises(ValueError, match="dtype"):
        dab_ops.gumbel_noise((3,), seed=0, dtype="int32")


@pytest.mark.parametrize("logits", [[1.0, 0.0, -1.0, 0.5], [3.0, -2.0, 0.0]])
def test_gumbel_max_frequencies_match_softmax(logits):
    n = 20_000
    tiled = np.tile(np.asarray(logits, "float32"), (n, 1))
    samples = np.asarray(dab_ops.gumbel_max(tiled, seed=7))
    assert samples.shape == tiled.shape
    np.testing.assert_array_equal(samples.sum(axis=-1), 1.0)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    # χ² with len(logits) - 1 ≤ 3 degrees of freedom: its 99.99 % quantile is about 21.
    assert chi_square(samples.sum(axis=0), softmax(logits)) < 21.0


def test_gumbel_max_along_axis_zero():
    logits = np.tile(np.array([[2.0], [0.0], [-2.0]], "float32"), (1, 5000))
    samples = np.asarray(dab_ops.gumbel_max(logits, seed=2, axis=0))
    np.testing.assert_array_equal(samples.sum(axis=0), 1.0)
    assert chi_square(samples.sum(axis=1), softmax([2.0, 0.0, -2.0])) < 21.0


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_gumbel_softmax_argmax_is_a_categorical_sample(tau):
    logits = np.array([1.0, 0.0, -1.0, 0.5], "float32")
    n = 20_000
    tiled = np.tile(logits, (n, 1))
    samples = np.asarray(dab_ops.gumbel_softmax(tiled, tau, seed=5))
    np.testing.assert_allclose(samples.sum(axis=-1), 1.0, rtol=1e-5)
    assert np.all(samples >= 0)
    counts = np.bincount(samples.argmax(axis=-1), minlength=logits.size)
    assert chi_square(counts, softmax(logits)) < 21.0
    # The same seed gives the same noise: the relaxed sample's argmax is the Gumbel-max sample.
    hard = np.asarray(dab_ops.gumbel_max(tiled[:200], seed=11))
    soft = np.asarray(dab_ops.gumbel_softmax(tiled[:200], tau, seed=11))
    np.testing.assert_array_equal(soft.argmax(axis=-1), hard.argmax(axis=-1))
    sharp = np.asarray(dab_ops.gumbel_softmax(tiled[:200], 1e-4, seed=11))
    assert np.mean(np.abs(sharp - hard).max(axis=-1) < 1e-3) > 0.95


def test_gumbel_softmax_matches_a_numpy_concrete_sampler():
    logits = np.array([0.5, -0.5, 0.0], "float32")
    tau, n = 0.7, 20_000
    ours = np.asarray(dab_ops.gumbel_softmax(np.tile(logits, (n, 1)), tau, seed=3))
    u = np.random.default_rng(1).uniform(size=(n, logits.size))
    reference = softmax((logits - np.log(-np.log(u))) / tau)
    # Critical value of the two-sample KS test at α = 0.001 is 1.95·sqrt(2/n) ≈ 0.0195.
    for i in range(logits.size):
        assert ks_statistic(ours[:, i], reference[:, i]) < 0.0195


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_gumbel_softmax_matches_tfp_relaxed_one_hot_categorical(tau):
    import tensorflow as tf
    import tensorflow_probability as tfp

    logits = np.array([1.0, -0.5, 0.0, 0.3], "float32")
    n = 20_000
    ours = np.asarray(dab_ops.gumbel_softmax(np.tile(logits, (n, 1)), tau, seed=9))
    dist = tfp.distributions.RelaxedOneHotCategorical(temperature=tau, logits=tf.constant(logits))
    theirs = dist.sample(n, seed=4).numpy()
    assert ours.shape == theirs.shape
    se = np.sqrt((ours.var(axis=0) + theirs.var(axis=0)) / n)
    np.testing.assert_array_less(np.abs(ours.mean(axis=0) - theirs.mean(axis=0)), 5 * se)
    np.testing.assert_allclose(ours.var(axis=0), theirs.var(axis=0), rtol=0.05)
    for i in range(logits.size):
        assert ks_statistic(ours[:, i], theirs[:, i]) < 0.0195
    # The TFP density is finite at our samples (they lie on the open simplex).
    assert np.all(np.isfinite(dist.log_prob(ours[:100].astype("float32")).numpy()))


# --------------------------------------------------------------------------- top_k_mask


@pytest.mark.parametrize("k", [1, 2, 5, 6])
@pytest.mark.parametrize("axis", [-1, 0])
def test_top_k_mask_matches_numpy_with_ties(rng, k, axis):
    x = rng.integers(0, 3, size=(6, 6)).astype("float32")
    x[1] = rng.normal(size=6)
    y = np.asarray(dab_ops.top_k_mask(x, k, axis=axis))
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, top_k_reference(x, k, axis))
    np.testing.assert_array_equal(y.sum(axis=axis), k)


def test_top_k_mask_ties_and_rank_3():
    x = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 2.0, 2.0, 2.0]], "float32")
    np.testing.assert_array_equal(np.asarray(dab_ops.top_k_mask(x, 2)), [[1, 1, 0, 0], [0, 1, 1, 0]])
    x3 = np.random.default_rng(3).normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(dab_ops.top_k_mask(x3, 2, axis=1)), top_k_reference(x3, 2, 1))


def test_top_k_mask_nan_rows():
    x = np.array([[0.3, np.nan, 2.0], [0.3, -1.0, 2.0]], "float32")
    y = np.asarray(dab_ops.top_k_mask(x, 2))
    assert np.isnan(y[0]).all()
    np.testing.assert_array_equal(y[1], [1, 0, 1])


@pytest.mark.parametrize("k", [0, 5, 2.0, True])
def test_top_k_rejects_bad_k(k):
    x = np.zeros((2, 4), "float32")
    with pytest.raises(ValueError, match="k"):
        dab_ops.top_k_mask(x, k)
    with pytest.raises(ValueError, match="k"):
        dab_ops.soft_top_k(x, k, 0.5)


# --------------------------------------------------------------------------- soft_top_k


@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0, 10.0])
def test_soft_top_k_sums_to_k(rng, tau):
    x = (2 * rng.normal(size=(4, 7))).astype("float32")
    x[0, :3] = x[0, 3]  # a tie
    for k in range(1, 7):
        y = np.asarray(dab_ops.soft_top_k(x, k, tau))
        assert y.shape == x.shape
        assert np.all(y >= 0) and np.all(y <= 1)
        np.testing.assert_allclose(y.sum(axis=-1), k, atol=1e-3)


@pytest.mark.parametrize("scale", [1e-3, 1e3])
@pytest.mark.parametrize("tau", [0.01, 1.0])
def test_soft_top_k_sums_to_k_across_input_scales(rng, scale, tau):
    # The bisection bracket depends on the gap between the k-th and (k+1)-th values and on τ, not on
    # the range of x: tiny and huge inputs, with a wide gap at k, must still give a mask summing to k.
    x = (scale * rng.normal(size=(3, 64))).astype("float32")
    x[1, :8] += 50.0 * scale  # a large gap after the 8th value
    for k in (1, 8, 63):
        y = np.asarray(dab_ops.soft_top_k(x, k, tau * scale))
        np.testing.assert_allclose(y.sum(axis=-1), k, atol=1e-3)
        assert np.isfinite(y).all()


def test_soft_top_k_sums_to_k_along_other_axes(rng):
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    y = np.asarray(dab_ops.soft_top_k(x, 2, 0.2, axis=1))
    assert y.shape == x.shape
    np.testing.assert_allclose(y.sum(axis=1), 2.0, atol=1e-3)
    # Moving the axis is the same as selecting along the last axis of the transposed input.
    y_last = np.asarray(dab_ops.soft_top_k(np.moveaxis(x, 1, -1), 2, 0.2))
    np.testing.assert_allclose(np.moveaxis(y_last, -1, 1), y, atol=1e-6)


def test_soft_top_k_all_ones_when_k_equals_n(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    for tau in (0.01, 1.0):
        np.testing.assert_array_equal(np.asarray(dab_ops.soft_top_k(x, 4, tau)), 1.0)
    grad = gradients.vjp(lambda v: dab_ops.soft_top_k(v, 4, 0.5), x, np.ones_like(x))
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_soft_top_k_tends_to_top_k_mask(rng, k):
    x = (0.5 * np.stack([rng.permutation(6) for _ in range(3)])).astype("float32")  # gaps of 0.5
    hard = top_k_reference(x, k)
    previous = np.inf
    for tau in (0.5, 0.1, 0.02, 0.005):
        gap = np.abs(np.asarray(dab_ops.soft_top_k(x, k, tau)) - hard).max()
        assert gap <= previous + 1e-6
        previous = gap
    assert previous < 1e-6


@pytest.mark.parametrize("k,tau", [(2, 0.5), (1, 0.3), (3, 1.0)])
def test_soft_top_k_implicit_gradient_matches_finite_differences_of_bisection(rng, k, tau):
    x = rng.uniform(-1, 1, size=(2, 5))
    rtol = 1e-5 if gradients.compute_dtype() == "float64" else None
    grad, _ = gradients.check_vjp(lambda v: dab_ops.soft_top_k(v, k, tau), x, rtol=rtol)
    assert np.abs(grad).max() > 1e-2


def test_soft_top_k_gradient_along_axis_zero(rng):
    x = rng.uniform(-1, 1, size=(4, 2))
    rtol = 1e-5 if gradients.compute_dtype() == "float64" else None
    gradients.check_vjp(lambda v: dab_ops.soft_top_k(v, 2, 0.5, axis=0), x, rtol=rtol)


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_soft_top_k_jacobian_matches_the_lml_formula(rng, tau):
    x = gradients.dyadic(rng.uniform(-0.3, 0.3, size=5))
    h = np.asarray(dab_ops.soft_top_k(x, 2, tau), np.float64)
    s = h * (1 - h) / tau
    expected = s[:, None] * (np.eye(5) - s[None, :] / s.sum())
    np.testing.assert_allclose(gradients.jacobian(lambda v: dab_ops.soft_top_k(v, 2, tau), x), expected,
                               rtol=1e-4, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("tau", [0.01, 0.5])
def test_soft_top_k_gradients_sum_to_zero_across_the_slice(rng, tau):
    x = rng.normal(size=(3, 6)).astype("float32")
    fn = lambda v: dab_ops.soft_top_k(v, 2, tau)  # noqa: E731
    # The mask's sum is fixed at k: the all-ones cotangent has zero gradient.
    ones = gradients.vjp(fn, x, np.ones_like(x))
    np.testing.assert_allclose(ones, 0.0, atol=1e-5 / tau)
    # Adding a constant to a slice does not change the mask: any cotangent's gradient sums to zero.
    grad = gradients.vjp(fn, x, rng.normal(size=x.shape))
    np.testing.assert_allclose(grad.sum(axis=-1), 0.0, atol=1e-4 / tau)


@pytest.mark.parametrize("tau", [0.01, 1.0])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_soft_top_k_is_finite_for_extreme_inputs(rng, tau, scale):
    x = (scale * rng.normal(size=(3, 6))).astype("float32")
    x[0] = [scale, -scale, scale, -scale, 0.0, scale]  # exact ties at the threshold
    y = np.asarray(dab_ops.soft_top_k(x, 3, tau))
    grad = gradients.vjp(lambda v: dab_ops.soft_top_k(v, 3, tau), x, rng.normal(size=x.shape))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(y.sum(axis=-1), 3.0, atol=1e-3)


@pytest.mark.parametrize("tau", [0.01, 1.0])
def test_tempered_and_gumbel_softmax_are_finite_for_extreme_inputs(rng, tau):
    x = (1e3 * rng.normal(size=(3, 5))).astype("float32")
    upstream = rng.normal(size=x.shape)
    for fn in (lambda v: dab_ops.tempered_softmax(v, tau), lambda v: dab_ops.gumbel_softmax(v, tau, seed=1)):
        y = np.asarray(fn(x))
        grad = gradients.vjp(fn, x, upstream)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
