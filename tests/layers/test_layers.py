"""Every layer x every estimator through `run_layer_test`, plus model styles and mixed precision.

A new op is one row of `CASES`: the layer class, its arguments, an input shape and a NumPy reference
of its hard output.
"""

import dataclasses
import functools

import helpers
import keras
import numpy as np
import pytest

from dab_keras import estimators, layers
from dab_keras import ops as dab_ops

# ---------------------------------------------------------------------------- NumPy references


def _along(x, axis):
    return np.moveaxis(np.asarray(x, np.float32), axis, -1)


def sign_reference(x, layer):
    m = layer.margin
    if m == 0.0:
        return np.where(x >= 0, 1.0, -1.0)
    return np.where(x > m, 1.0, np.where(x < -m, -1.0, 0.0))


def quantize_reference(x, layer):
    a, b, levels = np.float32(layer.min_value), np.float32(layer.max_value), layer.levels
    step = (b - a) / np.float32(levels - 1)
    return a + step * np.round(np.clip((np.float32(x) - a) / step, 0, levels - 1))


def vector_quantize_reference(x, layer):
    codebook = np.asarray(keras.ops.convert_to_numpy(layer.codebook), np.float64)
    distances = np.sum((np.asarray(x, np.float64)[..., None, :] - codebook) ** 2, axis=-1)
    indices = np.argmin(distances, axis=-1)
    quantized = codebook[indices]
    return (quantized, indices.astype(np.int32)) if layer.return_indices else quantized


def _gumbel(shape, seed):
    # The layer's first draw: a fresh SeedGenerator with the layer's seed (see ArgMax.call).
    u = keras.random.uniform(shape, minval=1e-20, maxval=1.0, seed=keras.random.SeedGenerator(seed))
    return -np.log(-np.log(np.asarray(keras.ops.convert_to_numpy(u), np.float64)))


def argmax_reference(x, layer):
    xt = _along(x, layer.axis).astype(np.float64)
    if layer.stochastic and layer.sample_at_inference:  # else the mode at inference
        xt = xt + _gumbel(xt.shape, layer.seed)
    return np.moveaxis(np.eye(xt.shape[-1])[np.argmax(xt, axis=-1)], -1, layer.axis)


def top_k_reference(x, layer):
    xt = _along(x, layer.axis)
    mask = np.zeros(xt.shape)
    np.put_along_axis(mask, np.argsort(-xt, axis=-1, kind="stable")[..., : layer.k], 1.0, axis=-1)
    out = mask if layer.output_mode == "mask" else xt * mask
    return np.moveaxis(out, -1, layer.axis)


def sort_reference(x, layer):
    xt = _along(x, layer.axis)
    key = xt if layer.direction == "ascending" else -xt
    order = np.argsort(key, axis=-1, kind="stable")
    if layer.output_mode == "values":
        return np.moveaxis(np.take_along_axis(xt, order, axis=-1), -1, layer.axis)
    if layer.output_mode == "indices":
        return np.moveaxis(order, -1, layer.axis).astype(np.int32)
    if layer.output_mode == "ranks":  # scipy.stats.rankdata(key), ties averaged
        less = (key[..., None, :] < key[..., :, None]).sum(-1)
        equal = (key[..., None, :] == key[..., :, None]).sum(-1)
        return np.moveaxis(less + (equal + 1) / 2.0, -1, layer.axis)
    return np.eye(xt.shape[-1])[order]  # (batch, other axes..., n, n): row i one-hot at argsort_i


def dab_layer_reference(x, layer):
    return np.mod(np.floor(x), 2.0)


# ---------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    layer_cls: type
    kwargs: dict
    input_shape: tuple
    reference: object
    deterministic: bool = True
    trainable: bool = True
    estimators: tuple = ("straight_through", "relaxed", "relaxed_hard", "dab")


CASES = [
    Case("sign", layers.Sign, {}, (4,), sign_reference),
    Case("sign_margin", layers.Sign, {"margin": 0.5}, (4,), sign_reference),
    Case("quantize", layers.Quantize, {"levels": 4, "min_value": -1.0, "max_value": 2.0}, (4,), quantize_reference),
    Case("vq", layers.VectorQuantize, {"num_codes": 5, "code_dim": 4, "commitment_cost": 0.0}, (3, 4),
         vector_quantize_reference),
    Case("vq_indices", layers.VectorQuantize, {"num_codes": 5, "code_dim": 4, "return_indices": True}, (3, 4),
         vector_quantize_reference),
    Case("argmax", layers.ArgMax, {}, (4,), argmax_reference),
    Case("argmax_stochastic", layers.ArgMax, {"stochastic": True, "seed": 3}, (4,), argmax_reference),
    Case("argmax_sampling", layers.ArgMax, {"stochastic": True, "seed": 3, "sample_at_inference": True}, (4,),
         argmax_reference, deterministic=False),
    Case("argmax_axis1", layers.ArgMax, {"axis": 1}, (3, 4), argmax_reference),
    Case("topk_mask", layers.TopK, {"k": 2}, (4,), top_k_reference),
    Case("topk_values", layers.TopK, {"k": 2, "output_mode": "values"}, (4,), top_k_reference),
    Case("topk_axis1", layers.TopK, {"k": 2, "axis": 1}, (3, 4), top_k_reference),
    Case("sort_neuralsort", layers.Sort, {}, (4,), sort_reference),
    Case("sort_softsort_desc", layers.Sort, {"relaxation": "softsort", "direction": "descending"}, (4,),
         sort_reference),
    Case("sort_perm_neuralsort", layers.Sort, {"output_mode": "permutation"}, (4,), sort_reference),
    Case("sort_perm_softsort_desc", layers.Sort,
         {"output_mode": "permutation", "relaxation": "softsort", "direction": "descending"}, (4,), sort_reference),
    Case("sort_indices", layers.Sort, {"output_mode": "indices"}, (4,), sort_reference, trainable=False),
    Case("sort_ranks", layers.Sort, {"output_mode": "ranks"}, (4,), sort_reference),
    Case("sort_ranks_softsort_desc_axis1", layers.Sort,
         {"output_mode": "ranks", "relaxation": "softsort", "direction": "descending", "axis": 1}, (3, 4),
         sort_reference),
    Case("sort_axis1_desc", layers.Sort, {"axis": 1, "direction": "descending"}, (3, 4), sort_reference),
    Case("sort_perm_axis_neg2", layers.Sort, {"axis": -2, "output_mode": "permutation"}, (3, 4), sort_reference),
    Case("dab_layer", layers.Bridge, {"hard_fn": helpers.floor_parity}, (4,), dab_layer_reference,
         estimators=("dab",)),
]

ESTIMATORS = {
    "straight_through": lambda: "straight_through",
    "relaxed": lambda: "relaxed",
    "relaxed_hard": lambda: estimators.Relaxed(hard=True),
    "dab": lambda: "dab",
}


def make_layer(case, estimator=None):
    kwargs = dict(case.kwargs)
    if estimator is not None and case.layer_cls is not layers.Bridge:
        kwargs["estimator"] = ESTIMATORS[estimator]()
    return case.layer_cls(**kwargs)


def _matrix():
    for case in CASES:
        for estimator in case.estimators:
            yield pytest.param(case, estimator, id=f"{case.id}-{estimator}")


@pytest.mark.parametrize(("case", "estimator"), list(_matrix()))
def test_layer(case, estimator, tmp_path):
    layer = helpers.run_layer_test(
        functools.partial(make_layer, case, estimator),
        case.input_shape,
        reference=case.reference,
        deterministic=case.deterministic,
        trainable=case.trainable,
        tmp_path=tmp_path,
    )
    # The reloaded layer keeps its estimator.
    assert layer.estimator.name == {"relaxed_hard": "relaxed"}.get(estimator, estimator)
    if estimator.startswith("relaxed"):
        assert layer.estimator.hard is (estimator == "relaxed_hard")


def test_table_covers_every_layer_and_estimator():
    covered = {case.layer_cls for case in CASES}
    exported = {getattr(layers, name) for name in layers.__all__}
    exported = {c for c in exported if isinstance(c, type) and issubclass(c, layers.DiscreteLayer)}
    assert exported - {layers.DiscreteLayer} <= covered
    for case in CASES:
        if case.layer_cls is not layers.Bridge:
            assert set(case.estimators) == set(ESTIMATORS), case.id


# ---------------------------------------------------------------------------- model styles

STYLE_CASES = {c.id: c for c in CASES if c.id in ("sign_margin", "quantize", "vq", "argmax_axis1", "topk_values",
                                                   "sort_perm_neuralsort", "dab_layer")}


@pytest.mark.parametrize("style", ["sequential", "subclassed"])
@pytest.mark.parametrize("case_id", sorted(STYLE_CASES))
def test_model_styles(case_id, style, tmp_path):
    case = STYLE_CASES[case_id]
    estimator = "dab" if case.layer_cls is layers.Bridge else "straight_through"
    helpers.run_layer_test(
        functools.partial(make_layer, case, estimator),
        case.input_shape,
        reference=case.reference,
        model_style=style,
        jit_compile=(keras.backend.backend() == "jax",),
        tmp_path=tmp_path,
    )


# ---------------------------------------------------------------------------- mixed precision

MIXED_CASES = ("sign_margin", "vq", "argmax_stochastic", "sort_perm_neuralsort")


@pytest.fixture
def dtype_policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("dtype_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
def test_mixed_precision_fit(dtype_policy, estimator):
    """One model with a branch `Dense -> layer` per representative layer, under a global mixed policy:
    outputs in the compute dtype, finite losses and weights, and every Dense moved by finite gradients.

    Under float16 the loss scale starts at 1, so a step is skipped only if a gradient is really
    non-finite (then its Dense would not move).
    """
    compute_dtype = keras.config.dtype_policy().compute_dtype
    cases = [c for c in CASES if c.id in MIXED_CASES]
    rng = np.random.default_rng(0)
    inputs, outputs, pres, ops_layers = [], [], [], []
    for case in cases:
        inp = keras.Input(case.input_shape, name=f"x_{case.id}")
        pre = keras.layers.Dense(case.input_shape[-1], name=f"pre_{case.id}")
        op = make_layer(case, estimator)
        outputs.append(op(pre(inp)))
        assert op.compute_dtype == compute_dtype and op.variable_dtype == "float32"
        assert op.temperature is None or helpers.dtype_name(op.temperature) == "float32"
        inputs.append(inp)
        pres.append(pre)
        ops_layers.append(op)
    model = keras.Model(inputs, outputs)
    data = [rng.normal(size=(16, *c.input_shape)).astype("float32") for c in cases]
    targets = [rng.normal(size=(16, *o.shape[1:])).astype("float32") for o in outputs]

    for out, train_out in zip(outputs, model(data, training=True)):
        assert helpers.dtype_name(out) == helpers.dtype_name(train_out) == compute_dtype
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(train_out, "float32"))))

    optimizer = keras.optimizers.SGD(0.01)
    if compute_dtype == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1.0)
    model.compile(optimizer=optimizer, loss=["mse"] * len(outputs))
    before = [keras.ops.convert_to_numpy(pre.kernel).copy() for pre in pres]
    history = model.fit(data, targets, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"])), history.history
    for w in model.weights:
        assert np.all(np.isfinite(np.asarray(keras.ops.convert_to_numpy(w), np.float64))), w.path
    for case, pre, kernel in zip(cases, pres, before):
        assert not np.array_equal(keras.ops.convert_to_numpy(pre.kernel), kernel), case.id
    if estimator == "dab":
        for op in ops_layers:
            assert np.isfinite(history.history[f"{op.name}_approximation_error"][-1])
    for out in helpers.as_list(model.predict(data, verbose=0)):
        assert str(out.dtype) == compute_dtype


def _relaxed_sort(x, temperature):
    return keras.ops.squeeze(keras.ops.matmul(dab_ops.neural_sort(x, temperature, "ascending"), x[..., None]), -1)


RELAXATION_CASES = {
    # name: (layer class, float32 relaxation, whether the same math in the compute dtype goes wrong)
    "argmax": (layers.ArgMax, dab_ops.tempered_softmax, True),
    "sort": (layers.Sort, _relaxed_sort, True),
    "sign": (layers.Sign, dab_ops.soft_sign, False),
}


@pytest.mark.parametrize("name", sorted(RELAXATION_CASES))
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_relaxation_computed_in_float32(policy, name):
    """At a small temperature the relaxed output is the float32 relaxation of the (compute-dtype) input,
    rounded once to the compute dtype, while the same formula evaluated in the compute dtype is not:
    x / tau overflows float16 in the second row, and bfloat16 rounds x / tau in the first."""
    layer_cls, relaxation, low_precision_differs = RELAXATION_CASES[name]
    tau = 0.01
    # Gaps of one bfloat16 ulp around 1; values whose x / tau exceeds the float16 range.
    x = np.array([[1.0, 1.0078125, 0.9921875, 1.015625], [700.0, 699.5, -3.0, 0.0]], np.float32)
    layer = layer_cls(estimator=estimators.Relaxed(temperature=tau), dtype=policy)
    compute_dtype = layer.compute_dtype
    assert compute_dtype == policy.split("_")[1]
    x_low = keras.ops.cast(x, compute_dtype)
    out = layer(x_low, training=True)
    assert helpers.dtype_name(out) == compute_dtype
    expected = keras.ops.cast(relaxation(keras.ops.cast(x_low, "float32"), tau), compute_dtype)
    expected = keras.ops.convert_to_numpy(expected).astype(np.float32)
    actual = keras.ops.convert_to_numpy(out).astype(np.float32)
    assert np.all(np.isfinite(actual))
    ulp = float(np.finfo(np.float16).eps) if compute_dtype == "float16" else 2.0**-7
    # Within one compute-dtype ulp (the float32 results may differ in their last bits).
    np.testing.assert_allclose(actual, expected, rtol=ulp, atol=ulp)
    if low_precision_differs:
        naive = keras.ops.convert_to_numpy(relaxation(x_low, tau)).astype(np.float32)
        assert not np.allclose(naive, expected, rtol=4 * ulp, atol=4 * ulp, equal_nan=False)


def test_vq_code_indices_match_the_layer_and_flag_nan_vectors(rng):
    layer = layers.VectorQuantize(num_codes=6, code_dim=3, return_indices=True)
    x = rng.normal(size=(5, 3)).astype("float32")
    x[2, 1] = np.nan
    _, returned = layer(x)
    codebook = keras.ops.convert_to_numpy(layer.codebook)
    expected = np.argmin(((x[:, None, :] - codebook[None]) ** 2).sum(-1), axis=-1)
    expected[2] = -1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.code_indices(x)), expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(returned), expected)
