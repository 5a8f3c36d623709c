"""Ranks and the row-blocked relaxations: `rank` against SciPy, `soft_sort_values` / `soft_rank` against
the dense NeuralSort / SoftSort matrices, finite differences and TFP, at any scale and block size."""

import gradients
import keras
import numpy as np
import pytest

from dab_keras import ops as dab_ops

stats = pytest.importorskip("scipy.stats")

DIRECTIONS = ["ascending", "descending"]
RELAXATIONS = ["neuralsort", "softsort"]
DENSE = {"neuralsort": dab_ops.neural_sort, "softsort": dab_ops.soft_sort}


def rankdata(x, direction, method="average"):
    key = np.asarray(x, np.float64) if direction == "ascending" else -np.asarray(x, np.float64)
    return stats.rankdata(key, method=method, axis=-1)


def dense_values(x, tau, direction, relaxation):
    return keras.ops.einsum("...ij,...j->...i", DENSE[relaxation](x, tau, direction), x)


def dense_ranks(x, tau, direction, relaxation):
    n = x.shape[-1]
    positions = keras.ops.cast(keras.ops.arange(1, n + 1), x.dtype)
    return keras.ops.einsum("...ij,i->...j", DENSE[relaxation](x, tau, direction), positions)


BLOCKED = {"values": (dab_ops.soft_sort_values, dense_values), "ranks": (dab_ops.soft_rank, dense_ranks)}


# --------------------------------------------------------------------------- hard ranks


@pytest.mark.parametrize("method", ["average", "min", "max", "ordinal"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_rank_matches_scipy_rankdata(rng, method, direction):
    x = rng.integers(0, 4, size=(3, 2, 9)).astype("float32")  # many ties
    x[0, 0] = rng.normal(size=9)  # and a slice without
    r = np.asarray(dab_ops.rank(x, direction, ties=method))
    assert r.shape == x.shape and r.dtype == np.float32
    np.testing.assert_array_equal(r, rankdata(x, direction, method))


def test_rank_edge_cases():
    np.testing.assert_array_equal(np.asarray(dab_ops.rank(np.array([[5.0]]))), [[1.0]])
    np.testing.assert_array_equal(np.asarray(dab_ops.rank(np.full((1, 4), 2.0))), [[2.5] * 4])
    r = np.asarray(dab_ops.rank(np.array([[0.3, np.nan, 1.0], [0.3, -np.inf, np.inf]], "float32")))
    assert np.isnan(r[0]).all()
    np.testing.assert_array_equal(r[1], [2.0, 1.0, 3.0])
    assert np.asarray(dab_ops.rank(np.zeros((0, 3), "float32"))).shape == (0, 3)
    with pytest.raises(ValueError, match=r"`ties` must be one of .*Received: ties='dense'"):
        dab_ops.rank(np.zeros((1, 3)), ties="dense")


def test_rank_under_jit(rng):
    x = rng.integers(0, 3, size=(4, 6)).astype("float32")
    if keras.backend.backend() == "jax":
        import jax

        fn = jax.jit(dab_ops.rank)
    else:
        import tensorflow as tf

        fn = tf.function(dab_ops.rank, jit_compile=True)
    np.testing.assert_array_equal(np.asarray(fn(x)), rankdata(x, "ascending"))


# --------------------------------------------------------------------------- blocked = dense


@pytest.mark.parametrize("mode", sorted(BLOCKED))
@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("block_size", [1, 3, 7, 64])  # one row, uneven blocks, n, more than n
def test_blocked_matches_the_dense_matrix_in_value_and_gradient(rng, mode, relaxation, direction, block_size):
    blocked, dense = BLOCKED[mode]
    x = rng.normal(size=(2, 3, 7)).astype("float32")
    ties = x.copy()
    ties[0, 0, :3] = x[0, 0, 3]
    upstream = rng.normal(size=x.shape).astype("float32")
    for tau in (0.1, 1.0):
        fn = lambda v, t=tau: blocked(v, t, direction, relaxation, block_size)  # noqa: E731
        np.testing.assert_allclose(np.asarray(fn(ties)), np.asarray(dense(ties, tau, direction, relaxation)),
                                   rtol=1e-5, atol=1e-5)
        # (At exact ties |x_j - x_k| has a kink: the subgradients chosen may differ.)
        expected = gradients.vjp(lambda v, t=tau: dense(v, t, direction, relaxation), x, upstream)
        np.testing.assert_allclose(gradients.vjp(fn, x, upstream), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mode", sorted(BLOCKED))
@pytest.mark.parametrize("block_size", [16, 64])
def test_neuralsort_bands_match_the_dense_matrix_at_scale(rng, mode, block_size):
    # n = 300 > 128 columns a chunk, and at these τ each block's band of columns is narrower than n: the
    # blocked version visits only the band, and still equals the dense matrix (with ties, uneven blocks).
    blocked, dense = BLOCKED[mode]
    x = rng.normal(size=(2, 300))
    x[0, :20] = x[0, 20]
    upstream = rng.normal(size=x.shape)
    for tau in (0.02, 0.3):
        fn = lambda v, t=tau: blocked(v, t, "ascending", "neuralsort", block_size)  # noqa: E731
        ref = lambda v, t=tau: dense(v, t, "ascending", "neuralsort")  # noqa: E731
        out = np.asarray(fn(x))
        # Float64 on TensorFlow; JAX computes in float32 unless x64 is enabled, where the logits' round-off
        # (|L| up to ~1e4 here) dominates: then compared relative to the largest entry.
        tol = 1e-9 if out.dtype == np.float64 else 2e-2
        for actual, expected in ((out, np.asarray(ref(x))),
                                 (gradients.vjp(fn, x, upstream), gradients.vjp(ref, x, upstream))):
            np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * np.abs(expected).max())


def _clear_kernel_caches():
    from dab_keras.ops import _blocked

    _blocked._compiled_kernels.cache_clear()


@pytest.mark.parametrize("mode", sorted(BLOCKED))
def test_neuralsort_float32_band_cut_adds_no_error_beyond_rounding(rng, mode, monkeypatch):
    # In float32 the band stops at e^-30.9 (n = 2048: the skipped entries weigh under a thousandth of a
    # rounding of the row sum), far inside the underflow limit e^-87.4. Against the exact result (float64
    # dense matrix on the same inputs), values, ranks and gradients are as accurate as with the band cut
    # at the underflow limit; a band cut far too early (e^-4) is not.
    from dab_keras.ops import _blocked

    assert _blocked._band_threshold(2048, "float32") == pytest.approx(np.log(2 * 2048 / 2.0**-23) + np.log(1000))
    assert _blocked._band_threshold(10**40, "float32") == 87.4  # capped at the underflow limit
    blocked, dense = BLOCKED[mode]
    x = rng.normal(size=(2, 2048)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    tau = 0.5
    exact = (np.asarray(dense(x.astype("float64"), tau, "ascending", "neuralsort")),
             gradients.vjp(lambda v: dense(v, tau, "ascending", "neuralsort"), x.astype("float64"),
                           upstream.astype("float64")))
    slack = [16 * np.finfo(np.float32).eps * np.abs(e).max() for e in exact]

    def errors(threshold=None):
        _clear_kernel_caches()
        with monkeypatch.context() as patch:
            if threshold is not None:
                patch.setattr(_blocked, "_band_threshold", lambda n, dtype: threshold)
            fn = lambda v: blocked(v, tau, "ascending", "neuralsort")  # noqa: E731
            result = (np.asarray(fn(x)), gradients.vjp(fn, x, upstream))
        return [np.abs(r - e).max() for r, e in zip(result, exact)]

    try:
        cut, full, early = errors(), errors(87.4), errors(4.0)
    finally:
        _clear_kernel_caches()
    for c, f, h in zip(cut, full, slack):
        assert c <= 1.25 * f + h
    assert early[0] > 3 * (full[0] + slack[0])  # the comparison has power


@pytest.mark.parametrize("mode", sorted(BLOCKED))
@pytest.mark.parametrize("block_size", [5, 64])
def test_softsort_bands_and_rank_one_tiles_match_the_dense_matrix(rng, mode, block_size):
    # Each block visits only the columns tied with its own values (a run of 21 ties across blocks, many
    # short runs in the second slice, none in the third) and sums every other column as an exact rank-one
    # tile: from a τ where the entries beyond the diagonal underflow to one where none does.
    blocked, dense = BLOCKED[mode]
    x = rng.normal(size=(3, 300))
    x[0, 30:51] = x[0, 29]
    x[1] = np.round(x[1] * 4.0)
    upstream = rng.normal(size=x.shape)
    for tau in (1e-3, 0.05, 30.0):
        for direction in DIRECTIONS:
            fn = lambda v, t=tau, d=direction: blocked(v, t, d, "softsort", block_size)  # noqa: E731
            ref = lambda v, t=tau, d=direction: dense(v, t, d, "softsort")  # noqa: E731
            out = np.asarray(fn(x))
            tol = 1e-9 if out.dtype == np.float64 else 1e-3  # JAX: float32 unless x64 is enabled
            # At exact ties |y_i - s_k| has a kink: the blocked gradient takes sign(0) = 0 there, as
            # TensorFlow's autodiff does, while JAX's takes 1; on JAX only the slice without ties compares.
            rows = slice(None) if keras.backend.backend() == "tensorflow" else slice(2, 3)
            for actual, expected in ((out, np.asarray(ref(x))),
                                     (gradients.vjp(fn, x, upstream)[rows], gradients.vjp(ref, x, upstream)[rows])):
                np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * np.abs(expected).max())


@pytest.mark.parametrize("mode", sorted(BLOCKED))
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_blocked_gradient_matches_finite_differences(rng, mode, relaxation):
    blocked, _ = BLOCKED[mode]
    x = rng.permutation(6).reshape(1, 6).astype("float32") * 0.3 + 0.05
    grad, _ = gradients.check_vjp(lambda v: blocked(v, 0.4, "descending", relaxation, 4), x)
    assert np.abs(grad).max() > 1e-2


@pytest.mark.parametrize("mode", sorted(BLOCKED))
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_gradient_reaches_a_tensor_temperature(rng, mode, relaxation):
    blocked, _ = BLOCKED[mode]
    x = rng.normal(size=(2, 5)).astype("float32")
    w = rng.normal(size=(2, 5))
    loss = lambda t: np.sum(w * np.asarray(blocked(x, np.float64(t), relaxation=relaxation, block_size=2)))  # noqa: E731
    eps = 1e-3
    numeric = (loss(0.7 + eps) - loss(0.7 - eps)) / (2 * eps)
    analytic = gradients.vjp(lambda t: blocked(x, t, relaxation=relaxation, block_size=2),
                             np.array(0.7, "float32"), w.astype("float32"))
    np.testing.assert_allclose(float(analytic), numeric, rtol=2e-2, atol=1e-3)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_blocked_neuralsort_matches_tfp_in_value_and_gradient(rng, tau):
    import tensorflow as tf
    import tensorflow_probability as tfp

    x = tf.constant(rng.normal(size=(3, 8)).astype("float32"))
    w = tf.constant(rng.normal(size=(3, 8)).astype("float32"))
    positions = tf.range(1, 9, dtype=tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        p = tfp.math.soft_sorting_matrix(x, tf.constant(tau))  # descending
        references = {"values": tf.einsum("bij,bj->bi", p, x), "ranks": tf.einsum("bij,i->bj", p, positions)}
        ours = {"values": dab_ops.soft_sort_values(x, tau, "descending", block_size=3),
                "ranks": dab_ops.soft_rank(x, tau, "descending", block_size=3)}
        losses = {k: (tf.reduce_sum(w * references[k]), tf.reduce_sum(w * ours[k])) for k in references}
    for mode, (ref_loss, our_loss) in losses.items():
        np.testing.assert_allclose(ours[mode].numpy(), references[mode].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tape.gradient(our_loss, x).numpy(), tape.gradient(ref_loss, x).numpy(),
                                   rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- limits, scale, shapes


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_soft_rank_tends_to_rank_and_ties_to_their_average(rng, relaxation, direction):
    x = rng.integers(0, 5, size=(4, 8)).astype("float32")
    hard = rankdata(x, direction)
    for tau, tol in ((1e-2, 1e-3), (1e-4, 1e-5)):
        np.testing.assert_allclose(np.asarray(dab_ops.soft_rank(x, tau, direction, relaxation)), hard, atol=tol)
        values = np.asarray(dab_ops.soft_sort_values(x, tau, direction, relaxation))
        expected = np.sort(x, -1) if direction == "ascending" else -np.sort(-x, -1)
        np.testing.assert_allclose(values, expected, atol=tol)


@pytest.mark.parametrize("mode", sorted(BLOCKED))
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_scaling_the_input_and_temperature_together_changes_nothing(rng, mode, relaxation):
    blocked, _ = BLOCKED[mode]
    x = rng.normal(size=(2, 6)).astype("float64")
    base = np.asarray(blocked(x, 0.5, relaxation=relaxation))
    for scale in (1e-30, 1e30):
        out = np.asarray(blocked(x * scale, 0.5 * scale, relaxation=relaxation))
        rtol = 1e-9 if out.dtype == np.float64 else 1e-5  # JAX computes in float32 unless x64 is enabled
        np.testing.assert_allclose(out, base * (scale if mode == "values" else 1.0), rtol=rtol)


@pytest.mark.parametrize("fn", ["soft_sort_values", "soft_rank", "neural_sort", "soft_sort"])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("scale", [3e38, 1e30, 1e-38])
def test_extreme_inputs_give_finite_values_and_gradients(rng, fn, relaxation, scale):
    if fn in ("neural_sort", "soft_sort"):
        if relaxation == "softsort":
            pytest.skip("one dense function per relaxation")
        op = getattr(dab_ops, fn)
    else:
        op = lambda v, t: getattr(dab_ops, fn)(v, t, relaxation=relaxation)  # noqa: E731
    x = np.array([[1.0, -1.0, 0.3, 0.0, -0.7]], "float32") * np.float32(scale)
    for tau in (0.01, 1.0):
        y = np.asarray(op(x, tau))
        upstream = rng.normal(size=y.shape).astype("float32")
        grad = gradients.vjp(lambda v, t=tau: op(v, t), x, upstream)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad)), (y, grad)
    if fn == "soft_sort_values" and scale >= 1e30:
        np.testing.assert_array_equal(y, np.sort(x, -1))  # hard at this scale
        if keras.backend.backend() == "tensorflow":
            # Pᵀ g exactly (XLA's fused multiply-adds leave a round-off of β ε here on JAX: finite, not 0).
            np.testing.assert_array_equal(grad, upstream[:, np.argsort(np.argsort(x[0]))])


@pytest.mark.parametrize("mode", sorted(BLOCKED))
@pytest.mark.parametrize("scale", [1.0, 1e30])
def test_ties_at_a_tiny_temperature_give_finite_values_and_gradients(rng, mode, scale):
    # Tied entries' logits are equal only up to round-off, which β = 1 / τ amplifies far beyond the
    # exponential's range: the blocked NeuralSort's logits stay clamped at or below their row's peak.
    blocked, _ = BLOCKED[mode]
    x = np.array([[1.0, -2.0, 1.0, 0.0, 3.0, -2.0, 1.0, 0.0, 2.0]], "float32") * np.float32(0.37 * scale)
    for tau in (1e-10, 0.01, 1.0):
        y = np.asarray(blocked(x, tau))
        grad = gradients.vjp(lambda v, t=tau: blocked(v, t), x, rng.normal(size=x.shape).astype("float32"))
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad)), (tau, y, grad)


@pytest.mark.parametrize("mode", sorted(BLOCKED))
def test_shapes_and_empty_batches(mode):
    blocked, _ = BLOCKED[mode]
    assert np.asarray(blocked(np.zeros((0, 5), "float32"), 1.0)).shape == (0, 5)
    assert np.asarray(blocked(np.zeros((2, 0, 3, 5), "float32"), 1.0)).shape == (2, 0, 3, 5)
    assert np.asarray(blocked(np.ones((5,), "float32"), 1.0)).shape == (5,)
    with pytest.raises(ValueError, match="block_size"):
        blocked(np.zeros((1, 3), "float32"), 1.0, block_size=0)
    with pytest.raises(ValueError, match="relaxation"):
        blocked(np.zeros((1, 3), "float32"), 1.0, relaxation="sinkhorn")


@pytest.mark.parametrize("mode", sorted(BLOCKED))
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_blocked_under_jit_matches_eager(rng, mode, relaxation):
    blocked, _ = BLOCKED[mode]
    x = rng.normal(size=(3, 10)).astype("float32")
    w = rng.normal(size=(3, 10)).astype("float32")
    if keras.backend.backend() == "jax":
        import jax

        step = jax.jit(jax.value_and_grad(lambda v, t: (blocked(v, t, relaxation=relaxation, block_size=4) * w).sum(),
                                          argnums=(0, 1)))
        loss, (gx, gt) = step(x, np.float32(0.5))
    else:
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(v, t):
            with tf.GradientTape() as tape:
                tape.watch([v, t])
                loss = tf.reduce_sum(blocked(v, t, relaxation=relaxation, block_size=4) * w)
            return (loss, tape.gradient(loss, [v, t]))

        loss, (gx, gt) = step(tf.constant(x), tf.constant(np.float32(0.5)))
    eager = np.asarray(blocked(x, 0.5, relaxation=relaxation, block_size=4))
    np.testing.assert_allclose(float(loss), float((eager * w).sum()), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), gradients.vjp(lambda v: blocked(v, 0.5, relaxation=relaxation,
                                                                               block_size=4), x, w),
                               rtol=1e-3, atol=1e-4)
    assert np.isfinite(float(gt))


def _xla_calls(graph):
    """The function calls in `graph` (and the functions it defines) that XLA must compile."""
    calls = []
    graphs = [graph] + [f.graph for f in graph._functions.values() if hasattr(f, "graph")]
    for g in graphs:
        for op in g.get_operations():
            if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
                try:
                    if op.get_attr("_XlaMustCompile"):
                        calls.append(op)
                except ValueError:
                    pass
    return calls


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("mode", sorted(BLOCKED))
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_blocked_kernels_compile_with_xla_in_tensorflow_graph_mode(rng, mode, relaxation):
    # In graph mode (no jit_compile) the forward and the recomputing backward pass each run as one XLA
    # cluster, for any batch size (unknown in the signature), with the eager value and gradient. Only
    # those two: a nested XLA function differentiated inside an enclosing jit_compile=True step (the
    # input preparation used to be one) makes the step recompile for every new batch.
    import tensorflow as tf

    blocked, dense = BLOCKED[mode]

    @tf.function(input_signature=[tf.TensorSpec((None, 10), tf.float32)] * 2)
    def step(v, w):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_sum(blocked(v, 0.5, relaxation=relaxation, block_size=4) * w)
        return loss, tape.gradient(loss, v)

    graph = step.get_concrete_function().graph
    assert len(_xla_calls(graph)) == 2
    for batch in (3, 1):
        x = rng.normal(size=(batch, 10)).astype("float32")
        w = rng.normal(size=(batch, 10)).astype("float32")
        loss, gx = step(tf.constant(x), tf.constant(w))
        eager = np.asarray(blocked(x, 0.5, relaxation=relaxation, block_size=4))
        np.testing.assert_allclose(float(loss), float((eager * w).sum()), rtol=1e-5)
        expected = gradients.vjp(lambda v: dense(v, 0.5, "ascending", relaxation), x, w)
        np.testing.assert_allclose(gx.numpy(), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.tensorflow_only
def test_blocked_runs_under_a_distribution_strategy(rng):
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x = rng.normal(size=(2, 9)).astype("float32")
    w = rng.normal(size=(2, 9)).astype("float32")

    @tf.function
    def step(v):
        def replica(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                loss = tf.reduce_sum(dab_ops.soft_sort_values(v, 0.5, block_size=4) * w)
            return tape.gradient(loss, v)

        return strategy.run(replica, args=(v,))

    with strategy.scope():
        gx = step(tf.constant(x))
    expected = gradients.vjp(lambda v: dense_values(v, 0.5, "ascending", "neuralsort"), x, w)
    np.testing.assert_allclose(gx.numpy(), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("fn", ["soft_sort_values", "soft_rank"])
@pytest.mark.parametrize("relaxation", ["neuralsort", "softsort"])
def test_compiled_kernels_take_no_input_as_a_compile_time_constant(rng, fn, relaxation):
    # XLA makes `tf.slice`'s `begin` a compile-time constant: a kernel that slices at a data-dependent
    # band start would recompile for every new batch (its inputs' values become the cache key). The
    # kernels window with XLA's dynamic slice instead; no Slice op may appear in their graphs or loop bodies.
    import tensorflow as tf

    from dab_keras.ops import _blocked

    op = getattr(dab_ops, fn)

    @tf.function
    def step(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_sum(op(v, 0.5, relaxation=relaxation, block_size=4) * tf.range(1.0, 12.0))
        return tape.gradient(loss, v)

    step(tf.constant(rng.normal(size=(3, 11)).astype("float32")))
    mode = "values" if fn == "soft_sort_values" else "ranks"
    kernels = _blocked._compiled_kernels("tensorflow", relaxation, mode, 11, 4)[:2]
    checked = 0
    for kernel in kernels:
        for concrete in kernel._list_all_concrete_functions():
            graph = concrete.graph.as_graph_def()
            nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
            assert "Slice" not in {n.op for n in nodes}, f"{relaxation} {mode}: a Slice in {concrete.name}"
            checked += 1
    assert checked == 2  # the forward and the backward kernel, each traced once
